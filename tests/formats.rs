//! Schema Registry formats end to end: Confluent Avro and JSON Schema topics
//! with several writer versions, schema evolution policies, the bytes and
//! string formats, and transforms into a partitioned table. Every table is
//! also read with DuckDB.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::assertions::{assert_exactly_once, wait_rows_at};
use crate::common::avro::{framed_json, Datum};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{inlet, run_available_now, wait_output, Running};
use crate::common::producing::{produce, produce_records, produce_values, Landed, Record};
use crate::common::registry::MockRegistry;
use crate::common::required;
use crate::common::tables::{
    duckdb_read, read_quarantine, read_table, table_batches, Location, QuarantineRow, TableContents,
};

/// A config with one source `events` of `format` feeding table `events`.
struct Setup<'a> {
    bootstrap: &'a str,
    registry: Option<&'a str>,
    topic: &'a str,
    format: &'a str,
    schema: &'a str,
    /// Extra keys of `[tables.events]`.
    table_extra: &'a str,
    /// TOML appended at the end (e.g. `[[tables.events.transforms]]`).
    tail: &'a str,
}

impl<'a> Setup<'a> {
    /// An Avro source into [`AVRO_TABLE`].
    fn new(bootstrap: &'a str, registry: Option<&'a str>, topic: &'a str) -> Self {
        Setup {
            bootstrap,
            registry,
            topic,
            format: "avro",
            schema: AVRO_TABLE,
            table_extra: "",
            tail: "",
        }
    }
}

/// A mock broker with `topic` (of `partitions`), beside `registry`.
fn servers(topic: &str, partitions: i32, registry: MockRegistry) -> (MockBroker, MockRegistry) {
    let mut broker = MockBroker::start();
    broker.create_topic(topic, partitions);
    (broker, registry)
}

/// A fresh directory with the config of `s` in it.
fn configure(s: &Setup<'_>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), s);
    (dir, config)
}

/// The table's and the quarantine's contents, after checking that every
/// offset in `landed` is in exactly one of them.
fn split(dir: &Path, landed: &[Landed]) -> (TableContents, Vec<QuarantineRow>) {
    let table = read_table(&dir.join("events"));
    let quarantine = read_quarantine(&dir.join("events_quarantine"));
    let mut all = table.coordinates.clone();
    all.extend(quarantine.iter().map(|q| (q.partition, q.offset)));
    assert_exactly_once(&all, landed);
    (table, quarantine)
}

fn write_config(dir: &Path, s: &Setup<'_>) -> PathBuf {
    let registry = s.registry.map_or(String::new(), |url| {
        format!("[schema_registry]\nurl = \"{url}\"\nretry_backoff = \"100ms\"\nmax_backoff = \"1s\"\ntimeout = \"2s\"\nunknown_id_grace = \"500ms\"\n")
    });
    let toml = format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "formats"

{registry}
[sources.events]
topics = ["{topic}"]
table = "events"
format = "{format}"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
{schema}
{table_extra}

[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"
key = "_key"

[flush]
max_rows = 100000
max_age = "300ms"
{tail}
"#,
        bootstrap = s.bootstrap,
        topic = s.topic,
        format = s.format,
        table = dir.join("events").display(),
        quarantine = dir.join("events_quarantine").display(),
        schema = if s.schema.is_empty() {
            String::new()
        } else {
            format!("schema = \"{}\"", s.schema)
        },
        table_extra = s.table_extra,
        tail = s.tail,
    );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run_ok(config: &Path) -> String {
    let out = run_available_now(config);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "inlet failed:\n{log}");
    log
}

/// DuckDB's answer to `sql` over the table (`t`), or `None` without DuckDB.
fn duck(table: &Path, sql: &str) -> Option<Vec<Vec<serde_json::Value>>> {
    let v = duckdb_read(table, &[], Some(sql))?;
    Some(
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect(),
    )
}

fn require_duck<T>(v: Option<T>) -> Option<T> {
    if v.is_none() {
        assert!(!required(), "DuckDB is required in CI");
    }
    v
}

const AVRO_V1: &str = r#"{"type":"record","name":"Event","namespace":"inlet.test","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":"string"},
  {"name":"amount","type":["null","double"],"default":null},
  {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["CLICK","VIEW"]}},
  {"name":"uid","type":{"type":"string","logicalType":"uuid"}},
  {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
  {"name":"day","type":{"type":"int","logicalType":"date"}},
  {"name":"address","type":{"type":"record","name":"Address","fields":[
     {"name":"city","type":"string"},{"name":"zip","type":["null","string"],"default":null}]}},
  {"name":"score","type":"int"}
]}"#;

const AVRO_TABLE: &str = "id BIGINT, user STRING, amount DOUBLE, ts TIMESTAMP, kind STRING, \
    uid STRING, price DECIMAL(10,2), day DATE, address STRUCT<city: STRING, zip: STRING>, score BIGINT";

/// v2 adds a nullable `country` at the end.
fn avro_v2() -> String {
    AVRO_V1.replace(
        r#"{"name":"score","type":"int"}"#,
        r#"{"name":"score","type":"int"},{"name":"country","type":["null","string"],"default":null}"#,
    )
}

/// v3 turns `score` into a string: not a safe widening of BIGINT.
fn avro_v3() -> String {
    AVRO_V1.replace(
        r#"{"name":"score","type":"int"}"#,
        r#"{"name":"score","type":"string"}"#,
    )
}

fn v1_datum(id: i64) -> Vec<Datum> {
    vec![
        Datum::Long(id),
        Datum::Str(format!("user{id}")),
        if id % 2 == 0 {
            Datum::Union(1, Box::new(Datum::Double(id as f64 / 4.0)))
        } else {
            Datum::Union(0, Box::new(Datum::Null))
        },
        Datum::Long(1_700_000_000_000 + id),
        Datum::Enum((id % 2) as usize),
        Datum::Str(format!("00000000-0000-4000-8000-{id:012}")),
        Datum::Bytes((12_345 + id).to_be_bytes().to_vec()),
        Datum::Int(19_000 + id as i32),
        Datum::Record(vec![
            Datum::Str("Lyon".into()),
            Datum::Union(1, Box::new(Datum::Str(format!("69{id:03}")))),
        ]),
        Datum::Int(id as i32 * 10),
    ]
}

#[test]
fn avro_writer_versions_map_onto_one_table_and_a_new_field_adds_a_column() {
    let topic = "avro-events";
    let (broker, registry) = servers(topic, 2, MockRegistry::start());
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "AVRO", AVRO_V1, &[]);
    let v2 = registry.register(&subject, "AVRO", &avro_v2(), &[]);
    let v3 = registry.register(&subject, "AVRO", &avro_v3(), &[]);
    assert!(v1 != v2 && v2 != v3);
    let mut values: Vec<Vec<u8>> = Vec::new();
    for id in 0..90i64 {
        let mut fields = v1_datum(id);
        let bytes = match id % 3 {
            0 => Datum::Record(fields).framed(v1),
            1 => {
                fields.push(Datum::Union(1, Box::new(Datum::Str(format!("FR{id}")))));
                Datum::Record(fields).framed(v2)
            }
            _ => {
                fields[9] = Datum::Str("high".into());
                Datum::Record(fields).framed(v3)
            }
        };
        values.push(bytes);
    }
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    let log = run_ok(&config);
    let (table, quarantine) = split(dir.path(), &landed);
    assert_eq!(table.coordinates.len(), 60, "v1 and v2 rows land");
    assert_eq!(quarantine.len(), 30, "v3 rows are quarantined");
    assert!(
        quarantine.iter().all(|q| q.stage == "schema"),
        "{quarantine:?}"
    );
    assert!(
        quarantine[0].error.contains("score"),
        "{}",
        quarantine[0].error
    );
    // Each writer schema was fetched once, however many messages carried it.
    assert_eq!(registry.requests("/schemas/ids/"), 3, "{log}");
    assert!(log.contains("new columns"), "{log}");
    // The column came in the commit that first held rows carrying it: one
    // commit has both the widened schema and data files, and no commit
    // changes the schema alone.
    let mut widening = Vec::new();
    for e in std::fs::read_dir(dir.path().join("events/_delta_log")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let actions: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let widens = actions.iter().any(|a| {
            a.get("metaData")
                .is_some_and(|m| m["schemaString"].as_str().unwrap_or("").contains("country"))
        });
        let is_create = actions.iter().any(|a| a.get("protocol").is_some());
        if widens && !is_create {
            widening.push(actions.iter().filter(|a| a.get("add").is_some()).count());
        }
    }
    assert_eq!(widening.len(), 1, "one commit widens the schema");
    assert!(widening[0] > 0, "and it carries data files");

    let Some(rows) = require_duck(duck(
        &dir.path().join("events"),
        "SELECT id, user, amount, CAST(ts AS VARCHAR), kind, uid, CAST(price AS VARCHAR), \
         CAST(day AS VARCHAR), address.city, address.zip, score, country FROM t ORDER BY id",
    )) else {
        return;
    };
    assert_eq!(rows.len(), 60);
    let r0 = &rows[0];
    assert_eq!(r0[0], 0);
    assert_eq!(r0[1], "user0");
    assert_eq!(r0[2], 0.0);
    assert!(
        r0[3].as_str().unwrap().starts_with("2023-11-14 22:13:20"),
        "{r0:?}"
    );
    assert_eq!(r0[4], "CLICK");
    assert_eq!(r0[5], "00000000-0000-4000-8000-000000000000");
    assert_eq!(r0[6], "123.45");
    assert_eq!(r0[7], "2022-01-08");
    assert_eq!(
        (r0[8].as_str(), r0[9].as_str()),
        (Some("Lyon"), Some("69000"))
    );
    assert_eq!(r0[10], 0);
    assert!(r0[11].is_null(), "v1 rows read null in the new column");
    let r1 = &rows[1];
    assert_eq!(r1[0], 1);
    assert!(r1[2].is_null());
    assert_eq!(r1[4], "VIEW");
    assert_eq!(r1[11], "FR1", "v2 rows carry the new column");
}

const JSON_V1: &str = r#"{"type":"object","properties":{
  "id":{"type":"integer"},"user":{"type":"string"},
  "ts":{"type":"string","format":"date-time"}}}"#;

const JSON_V2: &str = r#"{"type":"object","properties":{
  "id":{"type":"integer"},"user":{"type":"string"},
  "ts":{"type":"string","format":"date-time"},
  "tags":{"type":"array","items":{"type":"string"}}}}"#;

#[test]
fn json_schema_versions_and_an_added_array_column() {
    let topic = "js-events";
    let (broker, registry) = servers(topic, 1, MockRegistry::start());
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "JSON", JSON_V1, &[]);
    let v2 = registry.register(&subject, "JSON", JSON_V2, &[]);
    let mut values = Vec::new();
    for id in 0..40 {
        values.push(if id < 20 {
            framed_json(
                v1,
                &format!(r#"{{"id":{id},"user":"u{id}","ts":"2024-05-01T10:00:{id:02}Z"}}"#),
            )
        } else {
            framed_json(
                v2,
                &format!(
                    r#"{{"id":{id},"user":"u{id}","ts":"2024-05-01T10:00:{id:02}Z","tags":["a","t{id}"]}}"#
                ),
            )
        });
    }
    // A body that is not JSON, under a known id.
    values.push(framed_json(v1, "{not json"));
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        format: "json_schema",
        schema: "id BIGINT, user STRING, ts TIMESTAMP",
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    run_ok(&config);
    let (_, quarantine) = split(dir.path(), &landed);
    assert_eq!(quarantine.len(), 1);
    assert_eq!(quarantine[0].stage, "decode");
    let Some(rows) = require_duck(duck(
        &dir.path().join("events"),
        "SELECT id, CAST(ts AS VARCHAR), tags FROM t ORDER BY id",
    )) else {
        return;
    };
    assert_eq!(rows.len(), 40);
    assert!(rows[0][2].is_null());
    assert!(rows[0][1]
        .as_str()
        .unwrap()
        .starts_with("2024-05-01 10:00:00"));
    assert_eq!(rows[25][2], serde_json::json!(["a", "t25"]));
}

/// Two `inlet run` processes of one group, one partition each, meet the
/// same new field at about the same time: both widen the table, and the
/// table ends with the column once, every offset once, and the new field's
/// values in its rows.
#[test]
fn two_processes_evolving_one_table_concurrently_lose_nothing() {
    let topic = "evolving-two";
    let (broker, registry) = servers(topic, 2, MockRegistry::start());
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "AVRO", AVRO_V1, &[]);
    let v2 = registry.register(&subject, "AVRO", &avro_v2(), &[]);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup::new(&bootstrap, Some(&registry.url()), topic));
    let mut a = Running::start(&config);
    assert!(a.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let mut b = Running::start(&config);
    assert!(
        b.wait_for("partitions assigned", 1, Duration::from_secs(60)),
        "{:#?}",
        b.log()
    );
    assert!(a.wait_for("partitions assigned", 2, Duration::from_secs(60)));
    let values: Vec<Vec<u8>> = (0..40i64)
        .map(|id| {
            let mut fields = v1_datum(id);
            if id < 10 {
                Datum::Record(fields).framed(v1)
            } else {
                fields.push(Datum::Union(1, Box::new(Datum::Str(format!("C{id}")))));
                Datum::Record(fields).framed(v2)
            }
        })
        .collect();
    let landed = produce(&bootstrap, topic, &values);
    let partitions: std::collections::BTreeSet<i32> = landed.iter().map(|l| l.partition).collect();
    assert_eq!(partitions.len(), 2, "both processes get rows");
    let table = dir.path().join("events");
    wait_rows_at(
        &Location::local(&table),
        &[&a, &b],
        landed.len(),
        Duration::from_secs(90),
    );
    for p in [&mut a, &mut b] {
        p.signal("TERM");
        assert_eq!(p.wait(Duration::from_secs(60)), Some(0), "{:#?}", p.log());
    }
    for p in [&a, &b] {
        assert!(
            p.log().iter().any(|l| l.contains("country")),
            "each process met the new field: {:#?}",
            p.log()
        );
    }
    let (_, quarantine) = split(dir.path(), &landed);
    assert!(quarantine.is_empty(), "{quarantine:?}");
    let (_, _, batches) = table_batches(&table);
    let mut seen = 0;
    for batch in &batches {
        let ids = batch["id"]
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let country = batch["country"]
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            if id < 10 {
                assert!(arrow::array::Array::is_null(country, i), "v1 row {id}");
            } else {
                assert_eq!(country.value(i), format!("C{id}"), "v2 row {id}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, landed.len());
    if let Some(rows) = require_duck(duck(&table, "SELECT count(country) FROM t")) {
        assert_eq!(rows[0][0], 30);
    }
}

fn evolution_run(policy: &str) -> (std::process::Output, tempfile::TempDir, Vec<Landed>) {
    let topic = "evolving";
    let (broker, registry) = servers(topic, 1, MockRegistry::start());
    let subject = format!("{topic}-value");
    let v1 = registry.register(&subject, "AVRO", AVRO_V1, &[]);
    let v2 = registry.register(&subject, "AVRO", &avro_v2(), &[]);
    let mut values = Vec::new();
    for id in 0..20i64 {
        let mut fields = v1_datum(id);
        values.push(if id < 10 {
            Datum::Record(fields).framed(v1)
        } else {
            fields.push(Datum::Union(1, Box::new(Datum::Str("DE".into()))));
            Datum::Record(fields).framed(v2)
        });
    }
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        table_extra: &format!("evolution = \"{policy}\""),
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    (run_available_now(&config), dir, landed)
}

#[test]
fn evolution_fail_stops_with_the_new_fields_named() {
    let (out, dir, _) = evolution_run("fail");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("country"), "{log}");
    assert!(log.contains("add_columns"), "the fix is named: {log}");
    // Nothing of the new version landed, and the schema is unchanged.
    let (_, _, batches) = table_batches(&dir.path().join("events"));
    for b in &batches {
        assert!(b.schema().field_with_name("country").is_err());
    }
    assert!(read_quarantine(&dir.path().join("events_quarantine")).is_empty());
}

#[test]
fn evolution_ignore_drops_the_new_fields() {
    let (out, dir, landed) = evolution_run("ignore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = read_table(&dir.path().join("events"));
    assert_exactly_once(&table.coordinates, &landed);
    let (_, _, batches) = table_batches(&dir.path().join("events"));
    assert!(batches
        .iter()
        .all(|b| b.schema().field_with_name("country").is_err()));
    if let Some(rows) = require_duck(duck(&dir.path().join("events"), "SELECT count(*) FROM t")) {
        assert_eq!(rows[0][0], landed.len());
    }
}

#[test]
fn bytes_and_string_formats_keep_the_value_as_it_is() {
    let mut broker = MockBroker::start();
    let topic = "raw";
    broker.create_topic(topic, 1);
    let values: Vec<Option<&[u8]>> = vec![
        Some(b"plain text"),
        Some(&[0xff, 0x00, 0xfe]),
        None,
        Some(b""),
    ];
    let landed = produce_values(&broker.bootstrap(), topic, &values);
    for (format, ddl, rows, quarantined, key_format) in [
        ("bytes", "value BINARY", 3, 1, ""),
        ("string", "value STRING", 2, 2, "key_format = \"string\""),
    ] {
        let bootstrap = broker.bootstrap();
        let (dir, config) = configure(&Setup {
            format,
            schema: ddl,
            table_extra: key_format,
            ..Setup::new(&bootstrap, None, topic)
        });
        run_ok(&config);
        let (_, _, batches) = table_batches(&dir.path().join("events"));
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        let q = read_quarantine(&dir.path().join("events_quarantine"));
        assert_eq!((n, q.len()), (rows, quarantined), "{format}: {q:?}");
        let mut all: Vec<(i32, i64)> = q.iter().map(|q| (q.partition, q.offset)).collect();
        for b in &batches {
            let o = b
                .column_by_name("_offset")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            all.extend(o.values().iter().map(|o| (0, *o)));
        }
        assert_exactly_once(&all, &landed);
        if let Some(rows) = require_duck(duck(
            &dir.path().join("events"),
            "SELECT hex(CAST(value AS BLOB)) FROM t ORDER BY _offset",
        )) {
            let hex: Vec<String> = rows
                .iter()
                .map(|r| r[0].as_str().unwrap().to_string())
                .collect();
            if format == "bytes" {
                assert_eq!(hex, vec!["706C61696E2074657874", "FF00FE", ""]);
            } else {
                assert_eq!(hex, vec!["706C61696E2074657874", ""]);
                let keys = duck(
                    &dir.path().join("events"),
                    "SELECT _key FROM t ORDER BY _offset",
                )
                .unwrap();
                assert_eq!(
                    keys,
                    vec![vec![serde_json::json!("k0")], vec![serde_json::json!("k3")]]
                );
            }
        }
    }
}

#[test]
fn transforms_normalise_json_into_a_table_partitioned_by_a_derived_date() {
    let mut broker = MockBroker::start();
    let topic = "clicks";
    broker.create_topic(topic, 2);
    let mut values: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            format!(
                r#"{{"id":{i},"userName":"Ada Lovelace{i}","eventTime":"2024-03-0{d}T12:00:00Z","amountCents":{a},"email":"ada{i}@example.com","action":"click"}}"#,
                d = 1 + i % 3,
                a = if i == 7 { -5 } else { i * 100 },
            )
            .into_bytes()
        })
        .collect();
    // An unparseable time: a transform failure, quarantined.
    values.push(
        br#"{"id":99,"userName":"x","eventTime":"yesterday","amountCents":1,"email":"x@y","action":"view"}"#
            .to_vec(),
    );
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
            format: "json",
            schema: "id BIGINT, user_name STRING, first_name STRING, event_time TIMESTAMP, \
                     amount_cents BIGINT, email STRING, action STRING, action_upper STRING, event_date DATE",
            table_extra: r#"partition_by = ["event_date"]
input_schema = "id BIGINT, userName STRING, eventTime STRING, amountCents BIGINT, email STRING, action STRING""#,
            tail: r#"
[[tables.events.transforms]]
op = "snake_case"

[[tables.events.transforms]]
op = "timestamp"
column = "event_time"
from = "string"

[[tables.events.transforms]]
op = "derive"
column = "event_date"
expr = "CAST(event_time AS DATE)"

[[tables.events.transforms]]
op = "sql"
query = "SELECT *, upper(action) AS action_upper, split_part(user_name, ' ', 1) AS first_name FROM input WHERE amount_cents >= 0"

[[tables.events.transforms]]
op = "hash"
columns = ["email"]
salt = "pepper"
"#,
            ..Setup::new(&bootstrap, None, topic)
        });
    run_ok(&config);
    let table = read_table(&dir.path().join("events"));
    let quarantine = read_quarantine(&dir.path().join("events_quarantine"));
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(quarantine[0].stage, "transform");
    assert!(quarantine[0].error.contains("yesterday"), "{quarantine:?}");
    // Row 7 (negative amount) is filtered out: in neither table.
    assert_eq!(table.coordinates.len(), 29);
    let mut all = table.coordinates.clone();
    all.extend(quarantine.iter().map(|q| (q.partition, q.offset)));
    let expected: Vec<Landed> = landed
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 7)
        .map(|(_, l)| *l)
        .collect();
    assert_exactly_once(&all, &expected);
    // Files are laid out by the derived partition column.
    let parts: std::collections::BTreeSet<String> = walk(&dir.path().join("events"))
        .into_iter()
        .filter_map(|p| {
            p.components().find_map(|c| {
                c.as_os_str()
                    .to_str()
                    .filter(|s| s.starts_with("event_date="))
                    .map(String::from)
            })
        })
        .collect();
    assert_eq!(
        parts.into_iter().collect::<Vec<_>>(),
        vec![
            "event_date=2024-03-01",
            "event_date=2024-03-02",
            "event_date=2024-03-03"
        ]
    );
    let Some(rows) = require_duck(duck(
        &dir.path().join("events"),
        "SELECT id, user_name, first_name, action_upper, CAST(event_date AS VARCHAR), email FROM t ORDER BY id",
    )) else {
        return;
    };
    assert_eq!(rows.len(), 29);
    assert_eq!(rows[1][1], "Ada Lovelace1");
    assert_eq!(rows[1][2], "Ada");
    assert_eq!(rows[1][3], "CLICK");
    assert_eq!(rows[1][4], "2024-03-02");
    let email = rows[1][5].as_str().unwrap();
    assert_eq!(email.len(), 64, "SHA-256 hex: {email}");
    assert!(!email.contains('@'));
}

/// Debezium-like envelopes: `coalesce(after.id, before.id)` (which needs
/// DataFusion's simplifier) lands every row. A `derive` that DataFusion
/// cannot execute on these rows (`digest` with a per-row algorithm, in a
/// branch only real rows reach, so the start-time check cannot see it) is
/// not the messages' fault: the run stops non-zero naming the transform,
/// nothing is quarantined or written, and the run without it ingests every
/// message once.
#[test]
fn a_transform_failing_for_inlets_reasons_stops_instead_of_quarantining() {
    let mut broker = MockBroker::start();
    let topic = "cdc";
    broker.create_topic(topic, 1);
    let values: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let row = format!(r#"{{"id":{i},"name":"n{i}","algo":"sha256"}}"#);
            match i % 3 {
                0 => format!(r#"{{"op":"c","before":null,"after":{row}}}"#),
                1 => format!(r#"{{"op":"u","before":{row},"after":{row}}}"#),
                _ => format!(r#"{{"op":"d","before":{row},"after":null}}"#),
            }
            .into_bytes()
        })
        .collect();
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let envelope = "STRUCT<id: BIGINT, name: STRING, algo: STRING>";
    let table_extra = format!(r#"input_schema = "op STRING, before {envelope}, after {envelope}""#);
    let tail = |h: &str| {
        format!(
            r#"
[[tables.events.transforms]]
op = "derive"
column = "id"
expr = "coalesce(after.id, before.id)"

[[tables.events.transforms]]
op = "derive"
column = "name"
expr = "nvl(after.name, before.name)"

[[tables.events.transforms]]
op = "derive"
column = "h"
expr = "{h}"

[[tables.events.transforms]]
op = "drop"
columns = ["before", "after"]
"#
        )
    };
    let unrunnable =
        "CASE WHEN id >= 0 THEN digest(name, after.algo) WHEN id < 0 THEN digest(name, 'md5') END";
    let (bad, good) = (tail(unrunnable), tail("digest(name, 'sha256')"));
    let dir = tempfile::tempdir().unwrap();
    let setup = |tail| Setup {
        format: "json",
        schema: "op STRING, id BIGINT, name STRING, h BINARY",
        table_extra: &table_extra,
        tail,
        ..Setup::new(&bootstrap, None, topic)
    };
    let config = write_config(dir.path(), &setup(&bad));
    let out = run_available_now(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("internal error") && log.contains("tables.events.transforms[2] (derive)"),
        "{log}"
    );
    assert!(read_quarantine(&dir.path().join("events_quarantine")).is_empty());
    assert!(read_table(&dir.path().join("events"))
        .coordinates
        .is_empty());

    // Without it, every message lands once, keyed from either image.
    let config = write_config(dir.path(), &setup(&good));
    run_ok(&config);
    let table = read_table(&dir.path().join("events"));
    assert!(read_quarantine(&dir.path().join("events_quarantine")).is_empty());
    assert_exactly_once(&table.coordinates, &landed);
    let mut ids = table.ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<i64>>());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn keys_are_decoded_into_string_and_struct_columns() {
    let topic = "keyed";
    let (broker, registry) = servers(topic, 2, MockRegistry::start());
    let key_schema = r#"{"type":"record","name":"Key","fields":[
        {"name":"tenant","type":"string"},{"name":"n","type":"int"}]}"#;
    let key_id = registry.register(&format!("{topic}-key"), "AVRO", key_schema, &[]);
    let value_id = registry.register(&format!("{topic}-value"), "AVRO", AVRO_V1, &[]);
    let keys: Vec<Option<Vec<u8>>> = (0..20i64)
        .map(|i| match i {
            5 => None,                       // no key: a null key
            7 => Some(vec![0, 0, 0, 0, 99]), // a key of an unknown schema: quarantined
            _ => Some(
                Datum::Record(vec![
                    Datum::Str(format!("t{}", i % 3)),
                    Datum::Int(i as i32),
                ])
                .framed(key_id),
            ),
        })
        .collect();
    let values: Vec<Vec<u8>> = (0..20)
        .map(|i| Datum::Record(v1_datum(i)).framed(value_id))
        .collect();
    let records: Vec<Record<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_deref(), Some(v.as_slice())))
        .collect();
    let landed = produce_records(&broker.bootstrap(), topic, &records);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        table_extra: r#"key_format = "avro"
key_schema = "tenant STRING, n INT""#,
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    run_ok(&config);
    let (_, quarantine) = split(dir.path(), &landed);
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert!(quarantine[0].error.starts_with("key: "), "{quarantine:?}");
    let Some(rows) = require_duck(duck(
        &dir.path().join("events"),
        "SELECT id, _key.tenant, _key.n FROM t ORDER BY id",
    )) else {
        return;
    };
    assert_eq!(rows.len(), 19);
    let row = |i: usize| serde_json::Value::Array(rows[i].clone());
    assert_eq!(row(0), serde_json::json!([0, "t0", 0]));
    assert_eq!(row(4), serde_json::json!([4, "t1", 4]));
    assert_eq!(row(5), serde_json::json!([5, null, null]), "no key: null");
}

const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"inlet.test","fields":[
  {"name":"city","type":"string"},{"name":"zip","type":["null","string"],"default":null}]}"#;

const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"inlet.test","fields":[
  {"name":"id","type":"long"},
  {"name":"home","type":"inlet.test.Address"},
  {"name":"work","type":["null","inlet.test.Address"],"default":null},
  {"name":"since","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

#[test]
fn a_table_without_schema_is_created_from_the_registry_resolving_references() {
    let topic = "customers";
    let (broker, registry) = servers(topic, 1, MockRegistry::start());
    registry.register("address", "AVRO", ADDRESS, &[]);
    let id = registry.register(
        &format!("{topic}-value"),
        "AVRO",
        CUSTOMER,
        &[("inlet.test.Address", "address", 1)],
    );
    let address = |city: &str| {
        Datum::Record(vec![
            Datum::Str(city.into()),
            Datum::Union(0, Box::new(Datum::Null)),
        ])
    };
    let values: Vec<Vec<u8>> = (0..10i64)
        .map(|i| {
            Datum::Record(vec![
                Datum::Long(i),
                address(&format!("home{i}")),
                if i % 2 == 0 {
                    Datum::Union(1, Box::new(address("office")))
                } else {
                    Datum::Union(0, Box::new(Datum::Null))
                },
                Datum::Long(1_700_000_000_000_000),
            ])
            .framed(id)
        })
        .collect();
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        schema: "",
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    let log = run_ok(&config);
    assert!(
        log.contains("creating the table from the registry"),
        "{log}"
    );
    assert_exactly_once(&read_table(&dir.path().join("events")).coordinates, &landed);
    let Some(rows) = require_duck(duck(
        &dir.path().join("events"),
        "SELECT id, home.city, work.city, CAST(since AS VARCHAR) FROM t ORDER BY id",
    )) else {
        return;
    };
    assert_eq!(rows.len(), 10);
    let row = |i: usize| serde_json::Value::Array(rows[i].clone());
    assert_eq!(row(0)[1], "home0");
    assert_eq!(row(0)[2], "office");
    assert!(row(1)[2].is_null());
    assert!(row(0)[3]
        .as_str()
        .unwrap()
        .starts_with("2023-11-14 22:13:20"));
}

#[test]
fn registry_credentials_are_used_and_never_shown() {
    let mut broker = MockBroker::start();
    let password = "s3cr3t-Registry-pw";
    let registry = MockRegistry::start_with_basic_auth("inlet", password);
    let topic = "authed";
    broker.create_topic(topic, 1);
    let id = registry.register(&format!("{topic}-value"), "AVRO", AVRO_V1, &[]);
    let values: Vec<Vec<u8>> = (0..5)
        .map(|i| Datum::Record(v1_datum(i)).framed(id))
        .collect();
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let (dir, config) = configure(&Setup {
        ..Setup::new(&bootstrap, Some(&registry.url()), topic)
    });
    // Credentials from the environment, as a deployment would pass them.
    let run = |pw: &str, args: &[&str]| {
        let child = inlet()
            .args(args)
            .arg("-c")
            .arg(&config)
            .env("INLET_SCHEMA_REGISTRY__USERNAME", "inlet")
            .env("INLET_SCHEMA_REGISTRY__PASSWORD", pw)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, std::time::Duration::from_secs(120));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let wrong = "wr0ng-Password";
    let (code, text) = run(wrong, &["run", "--available-now"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("username") && text.contains("password"),
        "the fix is named: {text}"
    );
    assert!(!text.contains(wrong), "{text}");
    assert!(
        read_quarantine(&dir.path().join("events_quarantine")).is_empty(),
        "not the messages' fault"
    );

    let (code, text) = run(password, &["run", "--available-now"]);
    assert_eq!(code, Some(0), "{text}");
    assert_exactly_once(&read_table(&dir.path().join("events")).coordinates, &landed);
    for args in [&["status"][..], &["status", "--json"], &["check"]] {
        let (code, text) = run(password, args);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        assert!(
            !text.contains(password),
            "{args:?} shows the password: {text}"
        );
    }
    let (_, text) = run(password, &["run", "--available-now"]);
    assert!(!text.contains(password), "{text}");
}

#[test]
fn registry_over_https_with_a_private_ca() {
    let mut broker = MockBroker::start();
    let registry = MockRegistry::start_tls();
    let topic = "tls";
    broker.create_topic(topic, 1);
    let id = registry.register(&format!("{topic}-value"), "AVRO", AVRO_V1, &[]);
    let values: Vec<Vec<u8>> = (0..5)
        .map(|i| Datum::Record(v1_datum(i)).framed(id))
        .collect();
    let landed = produce(&broker.bootstrap(), topic, &values);
    let bootstrap = broker.bootstrap();
    let url = registry.url();
    let (dir, config) = configure(&Setup::new(&bootstrap, Some(&url), topic));
    let child = inlet()
        .args(["run", "--available-now", "-c"])
        .arg(&config)
        .env(
            "INLET_SCHEMA_REGISTRY__CA_LOCATION",
            common::registry::test_ca(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, std::time::Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&read_table(&dir.path().join("events")).coordinates, &landed);
    // Without the CA: stops, naming the key to set, and quarantines nothing.
    let (dir, config) = configure(&Setup::new(&bootstrap, Some(&url), topic));
    let out = run_available_now(&config);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("schema_registry.ca_location"), "{log}");
    assert!(read_quarantine(&dir.path().join("events_quarantine")).is_empty());
}
