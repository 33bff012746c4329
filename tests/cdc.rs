//! Change data capture: `upsert` and `changelog` tables from keyed topics.
//! The end state is compared with a reference computed from the changes
//! produced, read with delta-rs and with DuckDB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};

use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{run_available_now, Running};
use crate::common::producing::{produce_records, Landed};
use crate::common::tables::{
    duckdb_read, read_quarantine, read_quarantine_at, table_batches, table_batches_at, Location,
};
use crate::common::workspace::Workspace;

/// A change as produced: Kafka key, and the value (`None`: a tombstone).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// What the table holds for one key: (v, seq, offset of the change).
pub(crate) type Row = (String, i64, i64);

/// A small deterministic generator (no seed plumbing needed).
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The upsert table's TOML: value columns `id, v, seq, __op`, keyed by
/// `id`, ordered by `seq`, `__op = 'd'` deletes.
pub(crate) fn upsert_toml(
    ws: &Workspace,
    bootstrap: &str,
    topic: &str,
    group: &str,
    max_rows: usize,
) -> String {
    upsert_toml_on(ws, "", bootstrap, topic, group, max_rows)
}

/// [`upsert_toml`] with the tables' `storage_options` (`storage`: TOML
/// lines; empty on local disk).
fn upsert_toml_on(
    ws: &Workspace,
    storage: &str,
    bootstrap: &str,
    topic: &str,
    group: &str,
    max_rows: usize,
) -> String {
    format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "id BIGINT, v STRING, seq BIGINT, __op STRING"
mode = "upsert"
keys = ["id"]
sequence_by = "seq"
delete_when = "__op = 'd'"

[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"

[tables.events.storage_options]
{storage}

[flush]
max_rows = {max_rows}
max_age = "300ms"

[commit]
retry_backoff = "20ms"
max_backoff = "500ms"
max_attempts = 200
"#,
        table = ws.table_location().uri,
        quarantine = ws.quarantine_location().uri,
    )
}

pub(crate) fn write_config(ws: &Workspace, toml: &str) -> std::path::PathBuf {
    let path = ws.dir.path().join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `count` changes of `keys` ids: updates and deletes (every 7th), some
/// late (older than the key's newest change, never after a delete: a
/// table without `tombstone_retention` keeps no deletes, see the README),
/// some ties (the key's newest sequence again), every 23rd without an id
/// (quarantined), every 29th not JSON (quarantined).
pub(crate) fn value_changes(count: u64, keys: u64, seed: u64) -> Vec<Change> {
    value_changes_with(count, keys, seed, false)
}

/// [`value_changes`], where with `after_deletes` late changes and ties
/// also follow a delete of their key (only a table that keeps deletes ends
/// in the reference state then).
pub(crate) fn value_changes_with(
    count: u64,
    keys: u64,
    seed: u64,
    after_deletes: bool,
) -> Vec<Change> {
    let mut rng = Lcg(seed);
    let mut newest: BTreeMap<u64, (i64, bool)> = BTreeMap::new();
    let mut seq = 1000i64;
    (0..count)
        .map(|n| {
            let id = rng.next(keys);
            let key = Some(format!("{id}").into_bytes());
            if n % 29 == 28 {
                return Change {
                    key,
                    value: Some(b"{\"id\": 1, ".to_vec()),
                };
            }
            if n % 23 == 22 {
                return Change {
                    key,
                    value: Some(format!(r#"{{"v":"nokey{n}","seq":{seq}}}"#).into_bytes()),
                };
            }
            seq += 1 + rng.next(3) as i64;
            let (mut s, delete) = (seq, n % 7 == 3);
            match newest.get(&id) {
                Some(&(top, d)) if n % 5 == 1 && (after_deletes || !d) => {
                    s = top - 1 - rng.next(20) as i64; // late
                }
                Some(&(top, d)) if n % 11 == 4 && (after_deletes || !d) => s = top, // a tie
                _ => {}
            }
            let entry = newest.entry(id).or_insert((s, delete));
            if s >= entry.0 {
                *entry = (s, delete);
            }
            let op = if delete { "d" } else { "u" };
            Change {
                key,
                value: Some(
                    format!(r#"{{"id":{id},"v":"v{n}","seq":{s},"__op":"{op}"}}"#).into_bytes(),
                ),
            }
        })
        .collect()
}

/// Whether a change is poison (no id, or not JSON): it goes to quarantine.
fn is_poison(c: &Change) -> bool {
    let Some(v) = &c.value else { return false };
    serde_json::from_slice::<serde_json::Value>(v)
        .ok()
        .and_then(|j| j.get("id").and_then(|i| i.as_i64()))
        .is_none()
}

/// The upsert end state of value changes: per id the change with the
/// greatest (seq, offset); a delete leaves nothing.
pub(crate) fn value_reference(changes: &[Change], landed: &[Landed]) -> BTreeMap<i64, Row> {
    let mut best: BTreeMap<i64, (i64, i64, String, bool)> = BTreeMap::new();
    for (c, l) in changes.iter().zip(landed) {
        if is_poison(c) {
            continue;
        }
        let j: serde_json::Value = serde_json::from_slice(c.value.as_ref().unwrap()).unwrap();
        let id = j["id"].as_i64().unwrap();
        let seq = j["seq"].as_i64().unwrap();
        let v = j["v"].as_str().unwrap().to_string();
        let delete = j["__op"] == "d";
        let e = best.entry(id).or_insert((seq, l.offset, v.clone(), delete));
        if (seq, l.offset) >= (e.0, e.1) {
            *e = (seq, l.offset, v, delete);
        }
    }
    best.into_iter()
        .filter(|(_, (_, _, _, d))| !d)
        .map(|(id, (seq, off, v, _))| (id, (v, seq, off)))
        .collect()
}

/// The upsert table's rows by id, read with delta-rs and the parquet
/// crate; panics on a duplicate id.
fn read_upsert(path: &Path) -> BTreeMap<i64, Row> {
    read_upsert_at(&Location::local(path))
}

/// [`read_upsert`] at any location.
fn read_upsert_at(loc: &Location) -> BTreeMap<i64, Row> {
    let (_, _, batches) = table_batches_at(loc).expect("a table");
    let mut out = BTreeMap::new();
    for b in &batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
        let off = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let row = (v.value(i).to_string(), seq.value(i), off.value(i));
            if let Some(old) = out.insert(id.value(i), row) {
                panic!("id {} twice in the table (also {old:?})", id.value(i));
            }
        }
    }
    out
}

/// DuckDB reads the same rows.
pub(crate) fn assert_duckdb_agrees(path: &Path, expected: &BTreeMap<i64, Row>) {
    let Some(duck) = duckdb_read(
        path,
        &[],
        Some("SELECT id, v, seq, _offset FROM t ORDER BY id"),
    ) else {
        return;
    };
    let rows: BTreeMap<i64, Row> = duck["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                (
                    r[1].as_str().unwrap().to_string(),
                    r[2].as_i64().unwrap(),
                    r[3].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(&rows, expected, "DuckDB reads the reference state");
}

pub(crate) fn produce_changes(bootstrap: &str, topic: &str, changes: &[Change]) -> Vec<Landed> {
    let records: Vec<crate::common::producing::Record<'_>> = changes
        .iter()
        .map(|c| (c.key.as_deref(), c.value.as_deref()))
        .collect();
    produce_records(bootstrap, topic, &records)
}

/// Quarantined offsets, each once.
pub(crate) fn quarantined(ws: &Workspace) -> BTreeSet<(i32, i64)> {
    let rows = read_quarantine(&ws.quarantine());
    let set: BTreeSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(set.len(), rows.len(), "a quarantined offset twice");
    set
}

pub(crate) fn poison_offsets(changes: &[Change], landed: &[Landed]) -> BTreeSet<(i32, i64)> {
    changes
        .iter()
        .zip(landed)
        .filter(|(c, _)| is_poison(c))
        .map(|(_, l)| (l.partition, l.offset))
        .collect()
}

/// Updates, deletes, late changes and ties over many small batches: the
/// end state is the reference, quarantine holds the changes without a key
/// or not JSON, and a second run changes nothing.
#[test]
fn upsert_applies_the_newest_change_per_key() {
    let mut broker = MockBroker::start();
    let topic = "changes";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = write_config(&ws, &upsert_toml(&ws, &bootstrap, topic, "cdc-1", 40));
    let changes = value_changes(1200, 60, 7);
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = value_reference(&changes, &landed);
    assert!(expected.len() > 20, "a reference worth checking");
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    assert_duckdb_agrees(&ws.table(), &expected);
    let again = run_available_now(&config);
    assert!(again.status.success());
    assert_eq!(
        read_upsert(&ws.table()),
        expected,
        "a re-run applies nothing"
    );
}

/// Ties of `sequence_by` go to the later change: in one batch, and against
/// the row in the table; an older change loses both ways.
#[test]
fn upsert_sequence_ties_go_to_the_later_change() {
    let mut broker = MockBroker::start();
    let topic = "ties";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = write_config(&ws, &upsert_toml(&ws, &bootstrap, topic, "cdc-ties", 1000));
    let change = |id: u64, v: &str, seq: i64| Change {
        key: Some(format!("{id}").into_bytes()),
        value: Some(format!(r#"{{"id":{id},"v":"{v}","seq":{seq},"__op":"u"}}"#).into_bytes()),
    };
    // One batch: a tie after the first change, then an older one.
    let first: Vec<Change> = (0..20)
        .flat_map(|k| [change(k, "a", 5), change(k, "b", 5), change(k, "c", 4)])
        .collect();
    let mut landed = produce_changes(&bootstrap, topic, &first);
    assert!(run_available_now(&config).status.success());
    // A second batch against the table: a tie for even keys, older for odd.
    let second: Vec<Change> = (0..20)
        .map(|k| {
            if k % 2 == 0 {
                change(k, "d", 5)
            } else {
                change(k, "e", 4)
            }
        })
        .collect();
    landed.extend(produce_changes(&bootstrap, topic, &second));
    assert!(run_available_now(&config).status.success());
    let got: BTreeMap<i64, String> = read_upsert(&ws.table())
        .into_iter()
        .map(|(id, (v, _, _))| (id, v))
        .collect();
    let expected: BTreeMap<i64, String> = (0..20)
        .map(|k| (k, if k % 2 == 0 { "d" } else { "b" }.to_string()))
        .collect();
    assert_eq!(got, expected);
    let all: Vec<Change> = first.into_iter().chain(second).collect();
    assert_eq!(read_upsert(&ws.table()), value_reference(&all, &landed));
}

/// With `tombstone_retention`, changes older than a delete of their key
/// that arrive in a later run are dropped (for a key the table held and
/// for one it never did); newer ones apply. DuckDB reads the table, whose
/// directory also holds the kept deletes.
#[test]
fn upsert_keeps_deletes_against_late_changes() {
    let mut broker = MockBroker::start();
    let topic = "late";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = upsert_toml(&ws, &bootstrap, topic, "cdc-late", 1000).replace(
        "delete_when = \"__op = 'd'\"\n",
        "delete_when = \"__op = 'd'\"\ntombstone_retention = \"1h\"\n",
    );
    assert!(toml.contains("tombstone_retention"));
    let config = write_config(&ws, &toml);
    let change = |id: u64, v: &str, seq: i64, op: &str| Change {
        key: Some(format!("{id}").into_bytes()),
        value: Some(format!(r#"{{"id":{id},"v":"{v}","seq":{seq},"__op":"{op}"}}"#).into_bytes()),
    };
    // Keys 0..10 inserted; then even keys and keys 10..15 (never held) deleted.
    let first: Vec<Change> = (0..10).map(|k| change(k, "a", 1, "c")).collect();
    produce_changes(&bootstrap, topic, &first);
    assert!(run_available_now(&config).status.success());
    let deletes: Vec<Change> = (0..15)
        .filter(|k| k % 2 == 0 || *k >= 10)
        .map(|k| change(k, "", 5, "d"))
        .collect();
    produce_changes(&bootstrap, topic, &deletes);
    assert!(run_available_now(&config).status.success());
    // Late changes older than the deletes, and newer ones for 0 and 11.
    let mut late: Vec<Change> = (0..15).map(|k| change(k, "late", 3, "u")).collect();
    late.push(change(0, "new", 6, "u"));
    late.push(change(11, "new", 6, "u"));
    produce_changes(&bootstrap, topic, &late);
    assert!(run_available_now(&config).status.success());
    let got: BTreeMap<i64, String> = read_upsert(&ws.table())
        .into_iter()
        .map(|(id, (v, _, _))| (id, v))
        .collect();
    let mut expected: BTreeMap<i64, String> = (0..10)
        .filter(|k| k % 2 == 1)
        .map(|k| (k, "late".to_string()))
        .collect();
    expected.insert(0, "new".into());
    expected.insert(11, "new".into());
    assert_eq!(got, expected);
    assert!(ws.table().join("_inlet_tombstones").is_dir());
    if let Some(duck) = duckdb_read(&ws.table(), &[], Some("SELECT id, v FROM t ORDER BY id")) {
        let rows: Vec<(i64, String)> = duck["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(rows, expected.into_iter().collect::<Vec<_>>());
    }
}

/// Keyed by the decoded Kafka key, ordered by offset: tombstones delete,
/// a message without a key or with an undecodable key is quarantined.
#[test]
fn upsert_by_kafka_key_with_tombstones() {
    let mut broker = MockBroker::start();
    let topic = "keyed";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "cdc-2"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "v STRING NOT NULL, n BIGINT"
key_format = "json"
key_schema = "id BIGINT"
mode = "upsert"
keys = ["_key"]

[tables.events.metadata_columns]
key = "_key"
offset = "_offset"

[flush]
max_rows = 25
max_age = "300ms"
"#,
        table = ws.table().display(),
        quarantine = ws.quarantine().display(),
    );
    let config = write_config(&ws, &toml);
    let mut rng = Lcg(11);
    let changes: Vec<Change> = (0..600u64)
        .map(|n| {
            let id = rng.next(40);
            let key = match n % 31 {
                30 => None,                             // no key
                17 => Some(b"{\"id\": \"x\"".to_vec()), // not a key
                _ => Some(format!(r#"{{"id":{id}}}"#).into_bytes()),
            };
            let value = (n % 6 != 5).then(|| format!(r#"{{"v":"v{n}","n":{n}}}"#).into_bytes());
            Change { key, value }
        })
        .collect();
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reference: per key, the change with the greatest offset; a tombstone
    // deletes.
    let mut best: BTreeMap<i64, (i64, Option<String>)> = BTreeMap::new();
    let mut poison = BTreeSet::new();
    for (c, l) in changes.iter().zip(&landed) {
        let id = c
            .key
            .as_ref()
            .and_then(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
            .and_then(|k| k["id"].as_i64());
        let Some(id) = id else {
            poison.insert((l.partition, l.offset));
            continue;
        };
        let v = c.value.as_ref().map(|v| {
            let j: serde_json::Value = serde_json::from_slice(v).unwrap();
            j["v"].as_str().unwrap().to_string()
        });
        let e = best.entry(id).or_insert((l.offset, v.clone()));
        if l.offset >= e.0 {
            *e = (l.offset, v);
        }
    }
    let expected: BTreeMap<i64, (String, i64)> = best
        .into_iter()
        .filter_map(|(id, (off, v))| v.map(|v| (id, (v, off))))
        .collect();
    let (_, _, batches) = table_batches(&ws.table());
    let mut got = BTreeMap::new();
    for b in &batches {
        let key = b.column_by_name("_key").unwrap().as_struct();
        let id = key.column(0).as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        let off = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(
                got.insert(id.value(i), (v.value(i).to_string(), off.value(i)))
                    .is_none(),
                "a key twice"
            );
        }
    }
    assert_eq!(got, expected);
    assert_eq!(quarantined(&ws), poison);
    if let Some(duck) = duckdb_read(&ws.table(), &[], Some("SELECT count(*) FROM t")) {
        assert_eq!(duck["result"][0][0], expected.len());
    }
}

/// `changelog`: every change appended, tombstones as rows with null values.
#[test]
fn changelog_appends_every_change_and_tombstones() {
    let mut broker = MockBroker::start();
    let topic = "log";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "cdc-3"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "v STRING, n BIGINT"
key_format = "string"
mode = "changelog"
keys = ["_key"]

[tables.events.metadata_columns]
key = "_key"
offset = "_offset"

[flush]
max_rows = 30
max_age = "300ms"
"#,
        table = ws.table().display(),
        quarantine = ws.quarantine().display(),
    );
    let config = write_config(&ws, &toml);
    let changes: Vec<Change> = (0..100u64)
        .map(|n| Change {
            key: (n % 17 != 16).then(|| format!("k{}", n % 9).into_bytes()),
            value: (n % 5 != 4).then(|| format!(r#"{{"v":"v{n}","n":{n}}}"#).into_bytes()),
        })
        .collect();
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, batches) = table_batches(&ws.table());
    let mut got = BTreeMap::new();
    for b in &batches {
        let off = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            got.insert(
                off.value(i),
                (!v.is_null(i)).then(|| v.value(i).to_string()),
            );
        }
    }
    let expected: BTreeMap<i64, Option<String>> = changes
        .iter()
        .zip(&landed)
        .filter(|(c, _)| c.key.is_some())
        .map(|(c, l)| {
            let v = c.value.as_ref().map(|v| {
                let j: serde_json::Value = serde_json::from_slice(v).unwrap();
                j["v"].as_str().unwrap().to_string()
            });
            (l.offset, v)
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        quarantined(&ws).len(),
        changes.iter().filter(|c| c.key.is_none()).count(),
        "changes without a key"
    );
}

/// An `upsert` table opened on a table with row tracking is refused
/// before anything is fetched, naming the feature (deletion vectors are
/// merged into: tests/dv.rs).
#[test]
fn upsert_refuses_tables_with_features_it_cannot_merge() {
    let ws = Workspace::new();
    let log = ws.table().join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(
        log.join(format!("{:020}.json", 0)),
        r#"{"commitInfo":{"timestamp":1,"operation":"CREATE"}}
{"protocol":{"minReaderVersion":1,"minWriterVersion":7,"writerFeatures":["rowTracking","domainMetadata"]}}
{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}},{\"name\":\"v\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}},{\"name\":\"seq\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}},{\"name\":\"__op\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}},{\"name\":\"_partition\",\"type\":\"integer\",\"nullable\":true,\"metadata\":{}},{\"name\":\"_offset\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}","partitionColumns":[],"configuration":{"delta.enableRowTracking":"true"},"createdTime":1}}"#,
    )
    .unwrap();
    let mut broker = MockBroker::start();
    broker.create_topic("t", 1);
    let config = write_config(
        &ws,
        &upsert_toml(&ws, &broker.bootstrap(), "t", "cdc-4", 10),
    );
    let out = run_available_now(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rowTracking"), "{err}");
}

/// Changes of `keys` ids produced in rounds, for the crash loop and the
/// two writers. Many keys make most changes the last of their key, so a
/// change lost shows in the end state.
pub(crate) fn rounds(n: u64, keys: u64) -> Vec<Vec<Change>> {
    rounds_of(value_changes(n * 150, keys, 99))
}

/// `changes` in rounds of 150.
fn rounds_of(changes: Vec<Change>) -> Vec<Vec<Change>> {
    changes.chunks(150).map(<[Change]>::to_vec).collect()
}

/// The upsert table's TOML with `tombstone_retention = "1h"`.
fn keeping_deletes(toml: String) -> String {
    let kept = toml.replace(
        "delete_when = \"__op = 'd'\"\n",
        "delete_when = \"__op = 'd'\"\ntombstone_retention = \"1h\"\n",
    );
    assert!(kept.contains("tombstone_retention"));
    kept
}

/// Changes for the kept-deletes variants: few keys, so that keys see many
/// changes, and late changes and ties after deletes.
fn rounds_after_deletes(n: u64) -> Vec<Vec<Change>> {
    rounds_of(value_changes_with(n * 150, 150, 41, true))
}

/// How many changes of `changes` are older than a delete of their key
/// produced before them: what a table that keeps no deletes gets wrong.
fn late_after_deletes(changes: &[Change]) -> usize {
    let mut deleted: BTreeMap<i64, i64> = BTreeMap::new();
    let mut late = 0;
    for c in changes.iter().filter(|c| !is_poison(c)) {
        let j: serde_json::Value = serde_json::from_slice(c.value.as_ref().unwrap()).unwrap();
        let (id, seq) = (j["id"].as_i64().unwrap(), j["seq"].as_i64().unwrap());
        if deleted.get(&id).is_some_and(|d| seq < *d) {
            late += 1;
        }
        if j["__op"] == "d" {
            let d = deleted.entry(id).or_insert(seq);
            *d = (*d).max(seq);
        }
    }
    late
}

/// The checks after a run over `changes`: the table is the reference,
/// every offset is covered once (table ∪ quarantine, and every partition's
/// stored offset is its last).
fn assert_end_state(ws: &Workspace, changes: &[Change], landed: &[Landed]) {
    assert_eq!(read_upsert(&ws.table()), value_reference(changes, landed));
    assert_eq!(quarantined(ws), poison_offsets(changes, landed));
    let last = crate::common::assertions::last_offsets(landed);
    let ids: Vec<String> = last.keys().map(|p| format!("test:crash:{p}")).collect();
    let stored = crate::common::tables::txn_versions(&ws.table(), &ids);
    for (p, off) in &last {
        assert_eq!(
            stored[&format!("test:crash:{p}")],
            Some(*off),
            "partition {p}"
        );
    }
    assert_duckdb_agrees(&ws.table(), &value_reference(changes, landed));
}

/// The end state at any location (S3): the table is the reference and
/// quarantine holds the poison offsets.
fn assert_end_state_at(ws: &Workspace, changes: &[Change], landed: &[Landed]) {
    assert_eq!(
        read_upsert_at(&ws.table_location()),
        value_reference(changes, landed)
    );
    let q: BTreeSet<(i32, i64)> = read_quarantine_at(&ws.quarantine_location())
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(q, poison_offsets(changes, landed));
}

/// SIGKILL at random moments while changes are produced, restart, 20
/// times; a last run drains the topic. The end state is exact.
#[test]
fn upsert_crash_loop_is_exact() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str, group: &str| upsert_toml(&ws, bootstrap, "crash", group, 20);
    let (changes, landed) = crash_loop(&ws, &toml, rounds(20, 1000));
    assert_end_state(&ws, &changes, &landed);
}

/// The crash loop on a table that keeps deletes, with late changes and
/// ties after deletes: a kill between a segment's write and its commit
/// leaves a file no listing names, a replayed batch writes its deletes
/// again; no late change brings a deleted key back, none is lost.
#[test]
fn upsert_keeping_deletes_crash_loop_is_exact() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str, group: &str| {
        keeping_deletes(upsert_toml(&ws, bootstrap, "crash", group, 20))
    };
    let rounds = rounds_after_deletes(20);
    let late = late_after_deletes(&rounds.concat());
    assert!(late > 30, "late changes after deletes: {late}");
    let (changes, landed) = crash_loop(&ws, &toml, rounds);
    assert_end_state(&ws, &changes, &landed);
    assert!(ws.table().join("_inlet_tombstones").is_dir());
}

/// Runs `rounds` of changes through one process per round, killed at a
/// random moment (the config `toml` gives for a bootstrap address and group),
/// then one that drains the topic. The changes produced and where they
/// landed.
fn crash_loop(
    ws: &Workspace,
    toml: &dyn Fn(&str, &str) -> String,
    rounds: Vec<Vec<Change>>,
) -> (Vec<Change>, Vec<Landed>) {
    let mut broker = MockBroker::start();
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let mut changes = Vec::new();
    let mut landed = Vec::new();
    let mut rng = Lcg(5);
    let mut after_commit = 0;
    for (i, round) in rounds.iter().enumerate() {
        // A fresh group per process: see `assertions::crash_loop` (the mock
        // stalls on killed members); progress lives in the table.
        let config = write_config(ws, &toml(&bootstrap, &format!("crash-{i}")));
        let inlet = Running::start(&config);
        // The round is produced while the process runs, in slices.
        let (b, r) = (bootstrap.clone(), round.clone());
        let producer = std::thread::spawn(move || {
            let mut landed = Vec::new();
            for slice in r.chunks(15) {
                landed.extend(produce_changes(&b, topic, slice));
                std::thread::sleep(Duration::from_millis(100));
            }
            landed
        });
        if i % 2 == 0 {
            inlet.wait_for("batch committed", 1, Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_millis(200 + rng.next(1500)));
        if inlet.count("batch committed") > 0 {
            after_commit += 1;
        }
        drop(inlet); // SIGKILL
        landed.extend(producer.join().unwrap());
        changes.extend(round.iter().cloned());
    }
    let config = write_config(ws, &toml(&bootstrap, "crash-last"));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        after_commit >= 4,
        "too few kills after a commit: {after_commit}"
    );
    (changes, landed)
}

/// Two `inlet run` processes in one group on one upsert table: their
/// merges rewrite the same files and race; the losers plan again; the end
/// state is exact.
#[test]
fn two_writers_on_one_upsert_table() {
    let ws = Workspace::new();
    let (changes, landed) = two_writers(&ws, "");
    assert_end_state(&ws, &changes, &landed);
}

/// The same on S3 (SeaweedFS): its conditional put decides the races.
#[test]
fn two_writers_on_one_upsert_table_on_s3() {
    let Some(s3) = crate::common::s3::SeaweedS3::start() else {
        assert!(!crate::common::required(), "SeaweedFS is required in CI");
        return;
    };
    let ws = Workspace::on_s3(&s3, "upsert");
    let (changes, landed) = two_writers(&ws, &s3.storage_options_toml());
    assert_end_state_at(&ws, &changes, &landed);
}

/// Two processes on one table that keeps deletes, with late changes after
/// deletes: both rewrite the listing, a merge that lost its version to a
/// listing change plans again on it; the end state is exact.
#[test]
fn two_writers_on_one_upsert_table_keeping_deletes() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str| keeping_deletes(upsert_toml(&ws, bootstrap, "crash", "pair", 10));
    let (changes, landed) = two_writers_with(&ws, &toml, rounds_after_deletes(10));
    assert_end_state(&ws, &changes, &landed);
}

/// The same on S3 (SeaweedFS).
#[test]
fn two_writers_on_one_upsert_table_keeping_deletes_on_s3() {
    let Some(s3) = crate::common::s3::SeaweedS3::start() else {
        assert!(!crate::common::required(), "SeaweedFS is required in CI");
        return;
    };
    let ws = Workspace::on_s3(&s3, "kept");
    let storage = s3.storage_options_toml();
    let toml = |bootstrap: &str| {
        keeping_deletes(upsert_toml_on(
            &ws, &storage, bootstrap, "crash", "pair", 10,
        ))
    };
    let (changes, landed) = two_writers_with(&ws, &toml, rounds_after_deletes(10));
    assert_end_state_at(&ws, &changes, &landed);
}

/// Runs two processes of one group on the workspace's upsert table while
/// changes are produced, until every partition stores its last offset;
/// both stop with SIGTERM. The changes produced and where they landed.
fn two_writers(ws: &Workspace, storage: &str) -> (Vec<Change>, Vec<Landed>) {
    let toml = |bootstrap: &str| upsert_toml_on(ws, storage, bootstrap, "crash", "pair", 10);
    two_writers_with(ws, &toml, rounds(10, 1000))
}

/// [`two_writers`] with the config `toml` gives for a bootstrap address,
/// over `rounds` of changes.
pub(crate) fn two_writers_with(
    ws: &Workspace,
    toml: &dyn Fn(&str) -> String,
    rounds: Vec<Vec<Change>>,
) -> (Vec<Change>, Vec<Landed>) {
    let mut broker = MockBroker::start();
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let config = write_config(ws, &toml(&bootstrap));
    let mut rounds = rounds.into_iter();
    let mut changes = Vec::new();
    let mut landed = Vec::new();
    // First one process merges a third of the changes of every partition:
    // files then hold keys of both writers' partitions, and their merges
    // rewrite the same files.
    for round in rounds.by_ref().take(3) {
        landed.extend(produce_changes(&bootstrap, topic, &round));
        changes.extend(round);
    }
    assert!(run_available_now(&config).status.success());
    // As in `two_writers.rs`: a join on S3 next to other tests has taken
    // over a minute on the CI machine.
    let mut a = Running::start(&config);
    assert!(
        a.wait_for("partitions assigned", 1, Duration::from_secs(120)),
        "{:#?}",
        a.log()
    );
    let mut b = Running::start(&config);
    assert!(
        b.wait_for("partitions assigned", 1, Duration::from_secs(120)),
        "second writer: {:#?}\nfirst writer: {:#?}",
        b.log(),
        a.log()
    );
    for round in rounds {
        landed.extend(produce_changes(&bootstrap, topic, &round));
        changes.extend(round);
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = crate::common::assertions::last_offsets(&landed);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !last.iter().all(|(p, off)| {
        stored_offset(&ws.table_location(), &format!("test:crash:{p}")) == Some(*off)
    }) {
        assert!(Instant::now() < deadline, "not all committed");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(a.count("batch committed") > 0 && b.count("batch committed") > 0);
    a.signal("TERM");
    b.signal("TERM");
    assert_eq!(a.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(b.wait(Duration::from_secs(60)), Some(0));
    let raced: usize = [&a, &b]
        .iter()
        .map(|r| r.count("commit attempt failed"))
        .sum();
    eprintln!("merges that lost a race and were planned again: {raced}");
    // Both writers' partitions are in the table.
    let (_, _, batches) = table_batches_at(&ws.table_location()).unwrap();
    let parts: BTreeSet<i32> = batches
        .iter()
        .flat_map(|b| {
            let p = b
                .column_by_name("_partition")
                .unwrap()
                .as_primitive::<Int32Type>();
            (0..p.len()).map(|i| p.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert!(parts.len() >= 2);
    (changes, landed)
}

/// The offset the table stores for `app_id` (delta-rs reads the log).
fn stored_offset(loc: &Location, app_id: &str) -> Option<i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = deltalake::ensure_table_uri(&loc.uri).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(loc.options.clone())
            .build()
            .unwrap();
        table.load().await.ok()?;
        table
            .snapshot()
            .ok()?
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .ok()
            .flatten()
    })
}

// ---- `mode = "history"` (SCD type 2) ----

/// A version as the history table holds it: (id, v, start, end, current).
pub(crate) type Version = (i64, String, i64, Option<i64>, bool);

/// The history table's TOML: [`upsert_toml`]'s table in `history` mode,
/// ordered by `seq` or (`sequence_by = false`) by the Kafka offset.
pub(crate) fn history_toml(
    ws: &Workspace,
    bootstrap: &str,
    topic: &str,
    group: &str,
    max_rows: usize,
    sequence_by: bool,
) -> String {
    let toml = upsert_toml(ws, bootstrap, topic, group, max_rows)
        .replace("mode = \"upsert\"", "mode = \"history\"");
    if sequence_by {
        toml
    } else {
        toml.replace("sequence_by = \"seq\"\n", "")
    }
}

/// `count` changes of `keys` ids for a history table: updates, deletes
/// (every 7th, of a key whose newest change is not a delete), late ones
/// (older than the key's newest change, but newer than its last delete: a
/// delete that closed nothing leaves no trace, see the README), ties (the
/// key's newest sequence again), every 23rd without an id, every 29th not
/// JSON (both quarantined).
pub(crate) fn history_changes(count: u64, keys: u64, seed: u64) -> Vec<Change> {
    history_changes_with(count, keys, seed, false)
}

/// [`history_changes`], where with `after_deletes` deletes also come for
/// deleted keys and late changes also go before a key's last delete (only
/// a table that keeps deletes ends in the reference then).
fn history_changes_with(count: u64, keys: u64, seed: u64, after_deletes: bool) -> Vec<Change> {
    let mut rng = Lcg(seed);
    // id -> (newest seq, newest is a delete, last delete's seq)
    let mut newest: BTreeMap<u64, (i64, bool, i64)> = BTreeMap::new();
    let mut seq = 1000i64;
    (0..count)
        .map(|n| {
            let id = rng.next(keys);
            let key = Some(format!("{id}").into_bytes());
            if n % 29 == 28 {
                return Change {
                    key,
                    value: Some(b"{\"id\": 1, ".to_vec()),
                };
            }
            if n % 23 == 22 {
                return Change {
                    key,
                    value: Some(format!(r#"{{"v":"nokey{n}","seq":{seq}}}"#).into_bytes()),
                };
            }
            seq += 1 + rng.next(3) as i64;
            let state = newest.get(&id).copied();
            let live = matches!(state, Some((_, false, _)));
            let delete = n % 7 == 3 && (live || after_deletes);
            let mut s = seq;
            match (state, delete) {
                (Some((top, deleted, last_delete)), false) if after_deletes || !deleted => {
                    let floor = if after_deletes {
                        i64::MIN
                    } else {
                        last_delete + 1
                    };
                    if n % 5 == 1 {
                        s = (top - 1 - rng.next(20) as i64).max(floor); // late
                    } else if n % 11 == 4 {
                        s = top; // a tie
                    }
                }
                _ => {}
            }
            let e = newest.entry(id).or_insert((s, delete, i64::MIN / 2));
            if s >= e.0 {
                e.0 = s;
                e.1 = delete;
            }
            if delete {
                e.2 = s;
            }
            let op = if delete { "d" } else { "u" };
            Change {
                key,
                value: Some(
                    format!(r#"{{"id":{id},"v":"v{n}","seq":{s},"__op":"{op}"}}"#).into_bytes(),
                ),
            }
        })
        .collect()
}

/// The history of the changes, computed from all of them at once: per id
/// the changes in (sequence, offset) order; each upsert opens a version,
/// which the next change of its id closes at that change's sequence.
/// `sequence_by = false`: the offset is the sequence.
pub(crate) fn history_reference(
    changes: &[Change],
    landed: &[Landed],
    sequence_by: bool,
) -> Vec<Version> {
    let mut by_id: BTreeMap<i64, Vec<(i64, i64, String, bool)>> = BTreeMap::new();
    for (c, l) in changes.iter().zip(landed) {
        if is_poison(c) {
            continue;
        }
        let j: serde_json::Value = serde_json::from_slice(c.value.as_ref().unwrap()).unwrap();
        let seq = if sequence_by {
            j["seq"].as_i64().unwrap()
        } else {
            l.offset
        };
        by_id.entry(j["id"].as_i64().unwrap()).or_default().push((
            seq,
            l.offset,
            j["v"].as_str().unwrap().to_string(),
            j["__op"] == "d",
        ));
    }
    let mut out = Vec::new();
    for (id, mut events) in by_id {
        events.sort();
        let mut open: Option<(String, i64)> = None;
        for (seq, _, v, delete) in events {
            // A change at a version's own start replaces it.
            if let Some((ov, start)) = open.take().filter(|o| o.1 != seq) {
                out.push((id, ov, start, Some(seq), false));
            }
            if !delete {
                open = Some((v, seq));
            }
        }
        if let Some((ov, start)) = open {
            out.push((id, ov, start, None, true));
        }
    }
    out.sort();
    out
}

/// The crash loop on a history table that keeps deletes, with deletes of
/// deleted keys and late changes before deletes: each such change becomes
/// a version its delete closes, never the current one.
#[test]
fn history_keeping_deletes_crash_loop_is_exact() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str, group: &str| {
        keeping_deletes(history_toml(&ws, bootstrap, "crash", group, 20, true))
    };
    let rounds = rounds_of(history_changes_with(12 * 150, 150, 43, true));
    let late = late_after_deletes(&rounds.concat());
    assert!(late > 30, "late changes after deletes: {late}");
    let (changes, landed) = crash_loop(&ws, &toml, rounds);
    let expected = history_reference(&changes, &landed, true);
    assert_eq!(read_history(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    assert_duckdb_reads_history(&ws.table(), &expected);
    assert!(ws.table().join("_inlet_tombstones").is_dir());
}

/// Every version in the history table, sorted.
fn read_history(path: &Path) -> Vec<Version> {
    let (_, _, batches) = table_batches(path);
    let mut out = Vec::new();
    for b in &batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        let start = b
            .column_by_name("__start_at")
            .unwrap()
            .as_primitive::<Int64Type>();
        let end = b
            .column_by_name("__end_at")
            .unwrap()
            .as_primitive::<Int64Type>();
        let current = b.column_by_name("__is_current").unwrap().as_boolean();
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                v.value(i).to_string(),
                start.value(i),
                end.is_valid(i).then(|| end.value(i)),
                current.value(i),
            ));
        }
    }
    out.sort();
    out
}

/// DuckDB reads the same versions.
pub(crate) fn assert_duckdb_reads_history(path: &Path, expected: &[Version]) {
    let Some(duck) = duckdb_read(
        path,
        &[],
        Some("SELECT id, v, __start_at, __end_at, __is_current FROM t"),
    ) else {
        return;
    };
    let mut rows: Vec<Version> = duck["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_i64().unwrap(),
                r[3].as_i64(),
                r[4].as_bool().unwrap(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(rows, expected, "DuckDB reads the reference history");
}

/// Updates, deletes, late changes and ties over many small batches: the
/// table holds every version, with its start, end and current flag, as
/// computed from all the changes at once; quarantine holds the changes
/// without a key or not JSON; a second run adds nothing.
#[test]
fn history_keeps_every_version() {
    let mut broker = MockBroker::start();
    let topic = "history";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = history_toml(&ws, &bootstrap, topic, "history-1", 40, true);
    let config = write_config(&ws, &toml);
    let changes = history_changes(1200, 60, 7);
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = history_reference(&changes, &landed, true);
    let closed = expected.iter().filter(|v| !v.4).count();
    let current = expected.iter().filter(|v| v.4).count();
    assert!(
        closed > 500 && current > 20 && current < 60,
        "a reference worth checking: {closed} closed, {current} current"
    );
    assert_eq!(read_history(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    assert_duckdb_reads_history(&ws.table(), &expected);
    let again = run_available_now(&config);
    assert!(again.status.success());
    assert_eq!(read_history(&ws.table()), expected, "a re-run adds nothing");
}

/// Without `sequence_by` a version starts at its change's Kafka offset:
/// the offset orders, so nothing is late.
#[test]
fn history_by_offset_without_sequence_by() {
    let mut broker = MockBroker::start();
    let topic = "history-offsets";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = history_toml(&ws, &bootstrap, topic, "history-2", 25, false);
    let config = write_config(&ws, &toml);
    let changes = history_changes(400, 20, 3);
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = history_reference(&changes, &landed, false);
    assert_eq!(read_history(&ws.table()), expected);
}

/// Sequence ties in one batch and across batches: the later change
/// replaces the version of the same sequence (no empty versions), also a
/// delete; an older change arriving late goes in between, closed.
#[test]
fn history_ties_and_late_changes() {
    let mut broker = MockBroker::start();
    let topic = "history-ties";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = history_toml(&ws, &bootstrap, topic, "history-ties", 1000, true);
    let config = write_config(&ws, &toml);
    let change = |id: i64, v: &str, seq: i64, op: &str| Change {
        key: Some(format!("{id}").into_bytes()),
        value: Some(format!(r#"{{"id":{id},"v":"{v}","seq":{seq},"__op":"{op}"}}"#).into_bytes()),
    };
    let first = vec![
        change(1, "a", 10, "u"),
        change(1, "b", 10, "u"), // a tie in the batch
        change(2, "x", 10, "u"),
        change(2, "y", 30, "u"),
        change(3, "p", 5, "u"),
        change(3, "-", 8, "d"),
        change(4, "m", 3, "u"),
        change(4, "n", 4, "u"),
        change(4, "-", 4, "d"), // a delete tying the current version
    ];
    let mut landed = produce_changes(&bootstrap, topic, &first);
    assert!(run_available_now(&config).status.success());
    let second = vec![
        change(1, "c", 10, "u"),    // a tie with the stored current version
        change(2, "late", 20, "u"), // late: between x and y
        change(3, "late", 6, "u"),  // late: before the delete, so closed by it
    ];
    landed.extend(produce_changes(&bootstrap, topic, &second));
    assert!(run_available_now(&config).status.success());
    let all: Vec<Change> = first.into_iter().chain(second).collect();
    let expected = history_reference(&all, &landed, true);
    let v = |id: i64, s: &str, start: i64, end: Option<i64>, cur: bool| -> Version {
        (id, s.to_string(), start, end, cur)
    };
    let mut spelled = vec![
        v(1, "c", 10, None, true),
        v(2, "x", 10, Some(20), false),
        v(2, "late", 20, Some(30), false),
        v(2, "y", 30, None, true),
        v(3, "p", 5, Some(6), false),
        v(3, "late", 6, Some(8), false),
        v(4, "m", 3, Some(4), false),
    ];
    spelled.sort();
    assert_eq!(expected, spelled, "the reference says what the test means");
    assert_eq!(read_history(&ws.table()), expected);
    assert_duckdb_reads_history(&ws.table(), &expected);
}

/// SIGKILL at random moments while changes are produced, restart, five
/// times; a last run drains the topic. Every version is there once.
#[test]
fn history_crash_loop_is_exact() {
    let mut broker = MockBroker::start();
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let all = history_changes(5 * 150, 300, 41);
    let mut changes = Vec::new();
    let mut landed = Vec::new();
    let mut rng = Lcg(17);
    let mut after_commit = 0;
    for (i, round) in all.chunks(150).enumerate() {
        let toml = history_toml(&ws, &bootstrap, topic, &format!("hcrash-{i}"), 20, true);
        let inlet = Running::start(&write_config(&ws, &toml));
        let (b, r) = (bootstrap.clone(), round.to_vec());
        let producer = std::thread::spawn(move || {
            let mut landed = Vec::new();
            for slice in r.chunks(15) {
                landed.extend(produce_changes(&b, topic, slice));
                std::thread::sleep(Duration::from_millis(100));
            }
            landed
        });
        inlet.wait_for("batch committed", 1, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100 + rng.next(1200)));
        if inlet.count("batch committed") > 0 {
            after_commit += 1;
        }
        drop(inlet); // SIGKILL
        landed.extend(producer.join().unwrap());
        changes.extend(round.iter().cloned());
    }
    let toml = history_toml(&ws, &bootstrap, topic, "hcrash-last", 20, true);
    let out = run_available_now(&write_config(&ws, &toml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        after_commit >= 3,
        "too few kills after a commit: {after_commit}"
    );
    let expected = history_reference(&changes, &landed, true);
    assert_eq!(read_history(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    let last = crate::common::assertions::last_offsets(&landed);
    let ids: Vec<String> = last.keys().map(|p| format!("test:crash:{p}")).collect();
    let stored = crate::common::tables::txn_versions(&ws.table(), &ids);
    for (p, off) in &last {
        assert_eq!(
            stored[&format!("test:crash:{p}")],
            Some(*off),
            "partition {p}"
        );
    }
    assert_duckdb_reads_history(&ws.table(), &expected);
}

/// Two `inlet run` processes in one group on one history table: their
/// merges rewrite the same files and race; the losers plan again on the
/// new snapshot; every version is there once.
#[test]
fn two_writers_on_one_history_table() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str| history_toml(&ws, bootstrap, "crash", "pair", 10, true);
    let all = history_changes(10 * 150, 1000, 99);
    let rounds = all.chunks(150).map(<[Change]>::to_vec).collect();
    let (changes, landed) = two_writers_with(&ws, &toml, rounds);
    assert_eq!(
        read_history(&ws.table()),
        history_reference(&changes, &landed, true)
    );
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
}
