//! Change data capture into partitioned tables: `upsert` and `history`
//! tables partitioned by a column, with the partition column among the
//! keys (pruned) or not (a key moves partitions when its row's value
//! changes). The end state is compared with a reference computed from the
//! changes produced, read with delta-rs (partition values from the log) and
//! with DuckDB. Also two writers on disjoint table partitions: their merges
//! do not conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;

use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{run_available_now, Running};
use crate::common::producing::{produce_records, Landed};
use crate::common::tables::{duckdb_read, Location};
use crate::common::workspace::Workspace;

/// A change as produced: Kafka key and value (JSON).
#[derive(Debug, Clone)]
struct Change {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The TOML of a table `schema = id, v, seq, region, __op` partitioned by
/// `region`, in `mode` with `keys`.
fn toml(ws: &Workspace, bootstrap: &str, topic: &str, mode: &str, keys: &str) -> String {
    format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "parts"

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
schema = "id BIGINT, v STRING, seq BIGINT, region STRING, __op STRING"
partition_by = ["region"]
mode = "{mode}"
keys = {keys}
sequence_by = "seq"
delete_when = "__op = 'd'"

[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"

[flush]
max_rows = 40
max_age = "300ms"

[commit]
retry_backoff = "20ms"
max_backoff = "500ms"
max_attempts = 200
"#,
        table = ws.table_location().uri,
    )
}

fn write_config(ws: &Workspace, toml: &str) -> std::path::PathBuf {
    let path = ws.dir.path().join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn produce(bootstrap: &str, topic: &str, changes: &[Change]) -> Vec<Landed> {
    let records: Vec<crate::common::producing::Record<'_>> = changes
        .iter()
        .map(|c| (Some(c.key.as_slice()), Some(c.value.as_slice())))
        .collect();
    produce_records(bootstrap, topic, &records)
}

/// A parsed change: (id, v, seq, region, delete).
type Parsed = (i64, String, i64, String, bool);

fn parse(c: &Change) -> Parsed {
    let j: serde_json::Value = serde_json::from_slice(&c.value).unwrap();
    (
        j["id"].as_i64().unwrap(),
        j["v"].as_str().unwrap().to_string(),
        j["seq"].as_i64().unwrap(),
        j["region"].as_str().unwrap().to_string(),
        j["__op"] == "d",
    )
}

/// How [`changes`] draws them.
#[derive(Clone, Copy)]
struct Draw {
    /// A change's region is drawn anew (else it is the id's own).
    moving: bool,
    /// Some changes are older than their key's newest.
    late: bool,
    /// The table's key is (region, id) (else id).
    keyed_by_region: bool,
}

/// `count` changes of `keys` ids in `regions` regions (see [`Draw`]).
/// Every 7th deletes; a late change is never older than a delete of its
/// key (no tombstones are kept).
fn changes(count: u64, keys: u64, regions: u64, d: Draw) -> Vec<Change> {
    let Draw {
        moving,
        late,
        keyed_by_region,
    } = d;
    let mut rng = Lcg(11);
    let mut newest: BTreeMap<(u64, u64), (i64, bool)> = BTreeMap::new();
    let mut seq = 100i64;
    (0..count)
        .map(|n| {
            let id = rng.next(keys);
            let region = if moving {
                rng.next(regions)
            } else {
                id % regions
            };
            seq += 1 + rng.next(3) as i64;
            let (mut s, delete) = (seq, n % 7 == 3);
            let k = (id, if keyed_by_region { region } else { 0 });
            if let (true, Some(&(top, false))) = (late && n % 5 == 1, newest.get(&k)) {
                s = top - 1 - rng.next(10) as i64;
            }
            let e = newest.entry(k).or_insert((s, delete));
            if s >= e.0 {
                *e = (s, delete);
            }
            let op = if delete { "d" } else { "u" };
            // A key's changes stay in one Kafka partition, in order: keyed by
            // id when the region moves, else by region (a region's changes
            // then have one writer, in the two-writer test).
            let key = if moving {
                format!("{id}")
            } else {
                format!("r{region}")
            };
            Change {
                key: key.into_bytes(),
                value: format!(
                    r#"{{"id":{id},"v":"v{n}","seq":{s},"region":"r{region}","__op":"{op}"}}"#
                )
                .into_bytes(),
            }
        })
        .collect()
}

/// The batches of every active file, with the partition columns from the
/// log's partition values (data files do not hold them).
fn batches(loc: &Location) -> Vec<RecordBatch> {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
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
        table.load().await.unwrap();
        let store = table.log_store().object_store(None);
        let files: Vec<(String, Option<String>)> = table
            .snapshot()
            .unwrap()
            .log_data()
            .into_iter()
            .map(|f| {
                let region = f.partition_values_map().remove("region").flatten();
                (f.path().to_string(), region)
            })
            .collect();
        let mut out = Vec::new();
        for (p, region) in files {
            let path = deltalake::Path::parse(&p).unwrap();
            assert!(p.starts_with("region="), "a partitioned file: {p}");
            let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            for b in reader {
                let b = b.unwrap();
                let n = b.num_rows();
                let region = arrow::array::StringArray::from(vec![region.clone(); n]);
                let mut fields: Vec<arrow::datatypes::Field> = b
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.push(arrow::datatypes::Field::new(
                    "region",
                    arrow::datatypes::DataType::Utf8,
                    true,
                ));
                let mut cols = b.columns().to_vec();
                cols.push(std::sync::Arc::new(region));
                out.push(
                    RecordBatch::try_new(
                        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                        cols,
                    )
                    .unwrap(),
                );
            }
        }
        out
    })
}

/// What an upsert table holds for a key: (v, seq, region).
type Row = (String, i64, String);

/// The upsert table's rows by `key` of (id, region); panics on a key twice.
fn read_upsert(
    loc: &Location,
    key: impl Fn(i64, &str) -> (i64, String),
) -> BTreeMap<(i64, String), Row> {
    let mut out = BTreeMap::new();
    for b in batches(loc) {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        let seq = b.column_by_name("seq").unwrap().as_primitive::<Int64Type>();
        let region = b.column_by_name("region").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let k = key(id.value(i), region.value(i));
            let row = (
                v.value(i).to_string(),
                seq.value(i),
                region.value(i).to_string(),
            );
            if let Some(old) = out.insert(k.clone(), row) {
                panic!("key {k:?} twice in the table (also {old:?})");
            }
        }
    }
    out
}

/// The upsert reference: per key the change of greatest (seq, offset); a
/// delete leaves nothing.
fn upsert_reference(
    changes: &[Change],
    landed: &[Landed],
    key: impl Fn(i64, &str) -> (i64, String),
) -> BTreeMap<(i64, String), Row> {
    let mut best: BTreeMap<(i64, String), (i64, i64, Parsed)> = BTreeMap::new();
    for (c, l) in changes.iter().zip(landed) {
        let p = parse(c);
        let k = key(p.0, &p.3);
        let e = best.entry(k).or_insert((p.2, l.offset, p.clone()));
        if (p.2, l.offset) >= (e.0, e.1) {
            *e = (p.2, l.offset, p);
        }
    }
    best.into_iter()
        .filter(|(_, (_, _, p))| !p.4)
        .map(|(k, (_, _, p))| (k, (p.1, p.2, p.3)))
        .collect()
}

/// DuckDB reads the same rows (ids with their v, seq and region).
fn assert_duckdb_reads(ws: &Workspace, expected: &BTreeSet<(i64, String, i64, String)>) {
    let Some(duck) = duckdb_read(
        &ws.table(),
        &[],
        Some("SELECT id, v, seq, region FROM t ORDER BY id, region"),
    ) else {
        return;
    };
    let rows: BTreeSet<(i64, String, i64, String)> = duck["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_i64().unwrap(),
                r[3].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(&rows, expected, "DuckDB reads the reference state");
}

fn run(ws: &Workspace, toml: &str) {
    let config = write_config(ws, toml);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keyed by `id` alone, partitioned by `region`, which changes with the
/// key's changes: a key's newest row is in its newest region, and its rows
/// in other regions are gone (the merge searches every partition). Late
/// changes and deletes as in the unpartitioned tests.
#[test]
fn upsert_into_a_partitioned_table_where_keys_move_partitions() {
    let mut broker = MockBroker::start();
    let topic = "moving";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let changes = changes(
        900,
        50,
        4,
        Draw {
            moving: true,
            late: true,
            keyed_by_region: false,
        },
    );
    let landed = produce(&bootstrap, topic, &changes);
    run(&ws, &toml(&ws, &bootstrap, topic, "upsert", r#"["id"]"#));
    let by_id = |id: i64, _: &str| (id, String::new());
    let expected = upsert_reference(&changes, &landed, by_id);
    assert!(expected.len() > 20, "a reference worth checking");
    let moved =
        changes
            .iter()
            .map(parse)
            .fold(BTreeMap::<i64, BTreeSet<String>>::new(), |mut m, p| {
                m.entry(p.0).or_default().insert(p.3);
                m
            });
    assert!(moved.values().any(|r| r.len() > 1), "keys changed region");
    assert_eq!(read_upsert(&ws.table_location(), by_id), expected);
    let flat = expected
        .iter()
        .map(|((id, _), (v, s, r))| (*id, v.clone(), *s, r.clone()))
        .collect();
    assert_duckdb_reads(&ws, &flat);
}

/// Keyed by (`region`, `id`), partitioned by `region`: the merge reads only
/// the partitions of its keys; the end state is exact.
#[test]
fn upsert_into_a_partitioned_table_keyed_by_its_partition_column() {
    let mut broker = MockBroker::start();
    let topic = "keyed";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // The same id in several regions: distinct keys.
    let changes = changes(
        900,
        50,
        4,
        Draw {
            moving: true,
            late: true,
            keyed_by_region: true,
        },
    );
    let landed = produce(&bootstrap, topic, &changes);
    run(
        &ws,
        &toml(&ws, &bootstrap, topic, "upsert", r#"["region", "id"]"#),
    );
    let by_both = |id: i64, r: &str| (id, r.to_string());
    let expected = upsert_reference(&changes, &landed, by_both);
    assert!(expected.len() > 50, "a reference worth checking");
    assert_eq!(read_upsert(&ws.table_location(), by_both), expected);
    let flat = expected
        .iter()
        .map(|((id, _), (v, s, r))| (*id, v.clone(), *s, r.clone()))
        .collect();
    assert_duckdb_reads(&ws, &flat);
}

/// A history version: (id, v, region, start, end, current).
type Version = (i64, String, String, i64, Option<i64>, bool);

/// The history reference of changes with distinct sequences: per key, in
/// sequence order, an upsert opens a version (closing the open one at its
/// start), a delete closes the open one.
fn history_reference(changes: &[Change]) -> BTreeSet<Version> {
    let mut by_key: BTreeMap<i64, Vec<Parsed>> = BTreeMap::new();
    for c in changes {
        let p = parse(c);
        by_key.entry(p.0).or_default().push(p);
    }
    let mut out = BTreeSet::new();
    for (id, mut events) in by_key {
        events.sort_by_key(|p| p.2);
        let mut open: Option<(String, String, i64)> = None;
        for (_, v, seq, region, delete) in events {
            if let Some((ov, or, start)) = open.take() {
                out.insert((id, ov, or, start, Some(seq), false));
            }
            if !delete {
                open = Some((v, region, seq));
            }
        }
        if let Some((v, r, start)) = open {
            out.insert((id, v, r, start, None, true));
        }
    }
    out
}

fn read_history(loc: &Location) -> BTreeSet<Version> {
    let mut out = BTreeSet::new();
    for b in batches(loc) {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        let region = b.column_by_name("region").unwrap().as_string::<i32>();
        let start = b
            .column_by_name("__start_at")
            .unwrap()
            .as_primitive::<Int64Type>();
        let end = b
            .column_by_name("__end_at")
            .unwrap()
            .as_primitive::<Int64Type>();
        let cur = b.column_by_name("__is_current").unwrap().as_boolean();
        for i in 0..b.num_rows() {
            let version = (
                id.value(i),
                v.value(i).to_string(),
                region.value(i).to_string(),
                start.value(i),
                end.is_valid(i).then(|| end.value(i)),
                cur.value(i),
            );
            assert!(out.insert(version.clone()), "{version:?} twice");
        }
    }
    out
}

/// `history` mode, partitioned by `region`, keyed by `id`: a key's
/// versions sit in the regions their rows name, a change in another
/// region closes the version stored in the old one; the end state is the
/// reference and DuckDB reads it.
#[test]
fn history_into_a_partitioned_table_where_keys_move_partitions() {
    let mut broker = MockBroker::start();
    let topic = "history";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // 20 regions: a batch of 40 changes misses some, where keys' stored
    // versions sit (a merge pruning by region would not find them).
    let changes = changes(
        600,
        40,
        20,
        Draw {
            moving: true,
            late: false,
            keyed_by_region: false,
        },
    );
    produce(&bootstrap, topic, &changes);
    run(&ws, &toml(&ws, &bootstrap, topic, "history", r#"["id"]"#));
    let expected = history_reference(&changes);
    assert!(
        expected.iter().any(|v| !v.5) && expected.len() > 200,
        "a reference worth checking"
    );
    assert_eq!(read_history(&ws.table_location()), expected);
    let Some(duck) = duckdb_read(
        &ws.table(),
        &[],
        Some("SELECT id, v, region, __start_at, __end_at, __is_current FROM t"),
    ) else {
        return;
    };
    let rows: BTreeSet<Version> = duck["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_str().unwrap().to_string(),
                r[3].as_i64().unwrap(),
                r[4].as_i64(),
                r[5].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, expected, "DuckDB reads the reference state");
}

/// Two `inlet run` processes in one group on an upsert table partitioned
/// and keyed by `region`, whose changes are keyed (in Kafka) by region: each
/// writer's merges touch only its own regions, so a commit of the other
/// writer never conflicts with them (it lands on the next version without
/// planning again). The end state is exact.
#[test]
fn two_writers_on_disjoint_partitions_do_not_conflict() {
    let mut broker = MockBroker::start();
    let topic = "pair";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = write_config(
        &ws,
        &toml(&ws, &bootstrap, topic, "upsert", r#"["region", "id"]"#),
    );
    let all = changes(
        1500,
        200,
        8,
        Draw {
            moving: false,
            late: true,
            keyed_by_region: true,
        },
    );
    let mut rounds = all.chunks(150);
    let mut landed = Vec::new();
    // A first process creates the table with rows of every region.
    landed.extend(produce(&bootstrap, topic, rounds.next().unwrap()));
    assert!(run_available_now(&config).status.success());
    let mut a = Running::start(&config);
    assert!(a.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let mut b = Running::start(&config);
    assert!(b.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    for round in rounds {
        landed.extend(produce(&bootstrap, topic, round));
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = crate::common::assertions::last_offsets(&landed);
    let ids: Vec<String> = last.keys().map(|p| format!("test:{topic}:{p}")).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored = crate::common::tables::txn_versions(&ws.table(), &ids);
        if last
            .iter()
            .all(|(p, off)| stored[&format!("test:{topic}:{p}")] == Some(*off))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all committed");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(a.count("batch committed") > 0 && b.count("batch committed") > 0);
    a.signal("TERM");
    b.signal("TERM");
    assert_eq!(a.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(b.wait(Duration::from_secs(60)), Some(0));
    let by_both = |id: i64, r: &str| (id, r.to_string());
    assert_eq!(
        read_upsert(&ws.table_location(), by_both),
        upsert_reference(&all, &landed, by_both)
    );
    let replanned: usize = [&a, &b]
        .iter()
        .map(|r| r.count("commit attempt failed"))
        .sum();
    eprintln!("merges planned again: {replanned}");
    assert_eq!(replanned, 0, "disjoint partitions never conflict");
}
