//! The decoders' panic boundary end to end: flipped bits in Avro string
//! bodies (arrow-avro refused the whole chunk for the invalid UTF-8 and
//! inlet stopped with an internal error, again on every restart) and a
//! message that makes the decoder panic (the debug builds' test marker)
//! are quarantined at the decode stage; everything else lands, each offset
//! exactly once in the table or the quarantine.

use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::common::assertions::assert_exactly_once;
use crate::common::avro::long;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::run_available_now;
use crate::common::producing::produce;
use crate::common::registry::MockRegistry;
use crate::common::required;
use crate::common::tables::{duckdb_read, read_quarantine, read_table};

const SCHEMA: &str = r#"{"type":"record","name":"Flip","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":"string"},
  {"name":"action","type":"string"},
  {"name":"note","type":["null","string"]}]}"#;

fn config(dir: &Path, bootstrap: &str, registry: &str) -> std::path::PathBuf {
    let table = |name: &str| dir.join(name).display().to_string();
    let toml = format!(
        r#"
app_id = "test"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "flips"

[schema_registry]
url = "{registry}"

[sources.flips]
topics = ["flips"]
table = "flips"
format = "avro"

[tables.flips]
uri = "{t}"
quarantine_uri = "{q}"
schema = "id BIGINT NOT NULL, user STRING, action STRING, note STRING"
[tables.flips.metadata_columns]
topic = "_topic"
partition = "_partition"
offset = "_offset"

[flush]
max_age = "500ms"
"#,
        t = table("flips"),
        q = table("flips_quarantine"),
    );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A record framed with schema `id`, with a few bits flipped in its string
/// bodies when `flip` (lengths intact: still one whole Avro record). Returns
/// the bytes and whether its strings are still valid UTF-8.
fn record(id: u32, n: i64, rng: &mut rand::rngs::StdRng, flip: bool) -> (Vec<u8>, bool) {
    let strings = [
        format!("user-{}-é", n % 17),
        format!("action-{}", n % 5),
        format!("note ✓ {n}"),
    ];
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    long(&mut v, n);
    let mut bodies = Vec::new();
    for (k, s) in strings.iter().enumerate() {
        if k == 2 {
            long(&mut v, 1); // union branch: string
        }
        long(&mut v, s.len() as i64);
        bodies.push(v.len()..v.len() + s.len());
        v.extend_from_slice(s.as_bytes());
    }
    if flip {
        for _ in 0..rng.random_range(1..=3) {
            let body = &bodies[rng.random_range(0..bodies.len())];
            let at = rng.random_range(body.clone());
            v[at] ^= 1 << rng.random_range(0..8);
        }
    }
    let valid = bodies
        .iter()
        .all(|b| std::str::from_utf8(&v[b.clone()]).is_ok());
    (v, valid)
}

#[test]
fn flipped_bits_in_avro_strings_are_quarantined_and_the_rest_lands() {
    let mut broker = MockBroker::start();
    broker.create_topic("flips", 3);
    let registry = MockRegistry::start();
    let id = registry.register("flips-value", "AVRO", SCHEMA, &[]);
    // Three seeds, as many records each; about 30% with flipped bits.
    let (mut values, mut valid) = (Vec::new(), Vec::new());
    for seed in 0..3u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for i in 0..1000 {
            let n = seed as i64 * 1000 + i;
            let flip = rng.random_bool(0.3);
            let (v, ok) = record(id, n, &mut rng, flip);
            values.push(v);
            valid.push(ok);
        }
    }
    // Two messages the decoder panics on (debug builds, as the tests are
    // built: the marker does not exist in release builds).
    #[cfg(debug_assertions)]
    for n in [7usize, 2993] {
        values[n].extend_from_slice(inlet::decode::TEST_PANIC_MARKER);
        valid[n] = false;
    }
    let panics = if cfg!(debug_assertions) { 2 } else { 0 };
    let bad = valid.iter().filter(|ok| !**ok).count();
    assert!(bad > 150, "enough poison to matter: {bad}");
    let landed = produce(&broker.bootstrap(), "flips", &values);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker.bootstrap(), &registry.url());
    let out = run_available_now(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");

    let table = read_table(&dir.path().join("flips"));
    let quarantine = read_quarantine(&dir.path().join("flips_quarantine"));
    let mut all = table.coordinates.clone();
    all.extend(quarantine.iter().map(|q| (q.partition, q.offset)));
    assert_exactly_once(&all, &landed);
    // Exactly the records with invalid UTF-8 (or the marker) are quarantined,
    // at the decode stage with the decoder's error.
    let mut expected_ids: Vec<i64> = (0..values.len() as i64)
        .filter(|&n| valid[n as usize])
        .collect();
    let mut ids = table.ids.clone();
    ids.sort();
    expected_ids.sort();
    assert_eq!(ids, expected_ids, "exactly the valid records land");
    assert_eq!(quarantine.len(), bad);
    for q in &quarantine {
        assert_eq!(q.stage, "decode", "{q:?}");
        assert!(
            q.error.contains("UTF-8") || q.error.contains("decoder panicked"),
            "{q:?}"
        );
    }
    let panicked: Vec<&str> = quarantine
        .iter()
        .filter(|q| q.error.contains("decoder panicked: test panic marker"))
        .map(|q| q.error.as_str())
        .collect();
    assert_eq!(panicked.len(), panics, "{panicked:?}");
    // The raw value is kept for a replay from quarantine.
    assert!(quarantine.iter().all(|q| q.value.is_some()));
    if let Some(d) = duckdb_read(&dir.path().join("flips"), &[], None) {
        assert_eq!(d["rows"], table.ids.len(), "DuckDB sees the same rows");
    } else {
        assert!(!required(), "DuckDB is required in CI");
    }
}
