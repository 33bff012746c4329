//! Confluent-framed Protobuf end to end. Values and keys are encoded by
//! Google's protobuf runtime (tests/support/protobuf_encode.py, protoc from
//! grpcio-tools), not by inlet: nested messages, an import resolved through
//! a registry reference, the well-known Timestamp and wrappers, maps, oneofs,
//! enums and repeated fields; two schema versions, the second adding a
//! column; a poison-pill catalogue; non-default subject name strategies
//! (Protobuf `topic_record_name`, Avro `record_name`).
//! DuckDB reads every table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::assertions::assert_exactly_once;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::run_available_now;
use crate::common::producing::{produce, produce_records, Record};
use crate::common::registry::MockRegistry;
use crate::common::required;
use crate::common::tables::{duckdb_read, read_quarantine, read_table};

const COMMON: &str = r#"syntax = "proto3";
package acme.common;
message Address { string city = 1; string zip = 2; }
"#;

const ORDER_V1: &str = r#"syntax = "proto3";
package acme;
import "acme/common.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Status { UNKNOWN = 0; PAID = 1; SHIPPED = 2; }

message Order {
  int64 id = 1;
  string customer = 2;
  optional double discount = 3;
  acme.common.Address ship_to = 4;
  repeated string tags = 5;
  map<string, int64> counts = 6;
  oneof payment { string card = 7; string iban = 8; }
  Status status = 9;
  google.protobuf.Timestamp created = 10;
  google.protobuf.Int64Value parent = 11;
  google.protobuf.StringValue note = 12;
  repeated Line lines = 13;
  uint32 small = 14;
  message Line { string sku = 1; int32 qty = 2; }
}
"#;

const KEY: &str = r#"syntax = "proto3";
package acme;
message OrderKey { int64 id = 1; string region = 2; }
"#;

/// v2 adds `channel`.
fn order_v2() -> String {
    ORDER_V1.replace(
        "  uint32 small = 14;\n",
        "  uint32 small = 14;\n  string channel = 15;\n",
    )
}

/// The .proto files, as the producers have them.
fn protos(dir: &Path) -> PathBuf {
    let p = dir.join("protos");
    std::fs::create_dir_all(p.join("acme")).unwrap();
    std::fs::write(p.join("acme/common.proto"), COMMON).unwrap();
    std::fs::write(p.join("order_v1.proto"), ORDER_V1).unwrap();
    std::fs::write(p.join("order_v2.proto"), order_v2()).unwrap();
    std::fs::write(p.join("key.proto"), KEY).unwrap();
    p
}

/// Framed values of `message` (from `file` under `protos`) with schema `id`,
/// one per proto3 JSON line, encoded by Google's runtime; `None` without
/// the test Python.
fn encode(
    protos: &Path,
    file: &str,
    message: &str,
    id: u32,
    json: &[String],
) -> Option<Vec<Vec<u8>>> {
    let Some(python) = std::env::var_os("INLET_TEST_PYTHON") else {
        assert!(!required(), "INLET_TEST_PYTHON is required in CI");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/protobuf_encode.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(protos)
        .arg(file)
        .arg(message)
        .arg(id.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run protobuf_encode.py");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for line in json {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "protobuf_encode.py failed (is grpcio-tools installed? scripts/install-test-deps.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| hex::decode(l).unwrap())
        .collect();
    assert_eq!(values.len(), json.len());
    Some(values)
}

fn order_json(i: i64, v2: bool) -> String {
    let mut o = serde_json::json!({
        "id": i.to_string(),
        "customer": format!("c{i}"),
        "shipTo": {"city": format!("city{i}")},
        "tags": ["a", format!("t{i}")],
        "counts": {"k": (i * 10).to_string()},
        "status": if i % 2 == 0 { "PAID" } else { "SHIPPED" },
        "created": format!("2023-11-14T22:13:{:02}.123456Z", i % 60),
        "lines": [{"sku": format!("s{i}"), "qty": 2}],
        "small": 4_000_000_000u32 + i as u32,
    });
    if i % 2 == 0 {
        o["discount"] = serde_json::json!(0.0);
        o["card"] = serde_json::json!(format!("card{i}"));
        o["parent"] = serde_json::json!("0");
    } else {
        o["iban"] = serde_json::json!(format!("FR{i}"));
        o["note"] = serde_json::json!(format!("note{i}"));
    }
    if v2 {
        o["channel"] = serde_json::json!("web");
    }
    o.to_string()
}

fn write_config(
    dir: &Path,
    bootstrap: &str,
    registry: &str,
    topic: &str,
    source_extra: &str,
    table_extra: &str,
) -> PathBuf {
    let toml = format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "protobuf"

[schema_registry]
url = "{registry}"
retry_backoff = "100ms"
max_backoff = "1s"
timeout = "2s"
unknown_id_grace = "500ms"

[sources.events]
topics = ["{topic}"]
table = "events"
format = "protobuf"
{source_extra}

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
{table_extra}

[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"
key = "_key"

[flush]
max_rows = 100000
max_age = "300ms"
"#,
        table = dir.join("events").display(),
        quarantine = dir.join("events_quarantine").display(),
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

fn duck(table: &Path, sql: &str) -> Option<Vec<serde_json::Value>> {
    let v = duckdb_read(table, &[], Some(sql));
    if v.is_none() {
        assert!(!required(), "DuckDB is required in CI");
    }
    Some(v?["result"].as_array().unwrap().clone())
}

/// Replaces the message-index array (one byte, `[0]`) of a framed value.
fn with_index(value: &[u8], index: &[u8]) -> Vec<u8> {
    assert_eq!(value[5], 0, "a value of the first message");
    let mut v = value[..5].to_vec();
    v.extend_from_slice(index);
    v.extend_from_slice(&value[6..]);
    v
}

#[test]
fn protobuf_values_and_keys_land_typed_and_a_new_version_adds_a_column() {
    let topic = "pb-orders";
    let mut broker = MockBroker::start();
    broker.create_topic(topic, 2);
    let registry = MockRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let protos = protos(dir.path());
    registry.register("acme-common", "PROTOBUF", COMMON, &[]);
    let refs = [("acme/common.proto", "acme-common", 1)];
    let v1 = registry.register(&format!("{topic}-value"), "PROTOBUF", ORDER_V1, &refs);
    let key_id = registry.register(&format!("{topic}-key"), "PROTOBUF", KEY, &[]);
    let json: Vec<String> = (0..20).map(|i| order_json(i, false)).collect();
    let Some(values) = encode(&protos, "order_v1.proto", "acme.Order", v1, &json) else {
        return;
    };
    let key_json: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id":"{i}","region":"r{}"}}"#, i % 3))
        .collect();
    let keys = encode(&protos, "key.proto", "acme.OrderKey", key_id, &key_json).unwrap();
    // The poison-pill catalogue, beside good values.
    let good = &values[1];
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let bad_index = with_index(good, &[2, 10]);
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&9999u32.to_be_bytes());
    // `customer` (field 2, a string) sent as a varint.
    let mut wrong_wire = good[..6].to_vec();
    wrong_wire.extend_from_slice(&[0x10, 0x01]);
    let poison = [truncated, bad_index, unknown_id, wrong_wire];
    let mut records: Vec<Record<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
        .collect();
    records.extend(poison.iter().map(|p| (None, Some(p.as_slice()))));
    let mut landed = produce_records(&broker.bootstrap(), topic, &records);
    let config = write_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        topic,
        "",
        "key_format = \"protobuf\"\nkey_schema = \"id BIGINT, region STRING\"",
    );
    let log = run_ok(&config);
    assert!(
        log.contains("creating the table from the registry"),
        "{log}"
    );

    // Version 2 adds `channel`: a new column, null for the older rows.
    let v2 = registry.register(&format!("{topic}-value"), "PROTOBUF", &order_v2(), &refs);
    let json: Vec<String> = (20..30).map(|i| order_json(i, true)).collect();
    let values2 = encode(&protos, "order_v2.proto", "acme.Order", v2, &json).unwrap();
    let unkeyed: Vec<Record<'_>> = values2.iter().map(|v| (None, Some(v.as_slice()))).collect();
    landed.extend(produce_records(&broker.bootstrap(), topic, &unkeyed));
    run_ok(&config);

    let table = read_table(&dir.path().join("events"));
    let quarantine = read_quarantine(&dir.path().join("events_quarantine"));
    let mut all = table.coordinates.clone();
    all.extend(quarantine.iter().map(|q| (q.partition, q.offset)));
    assert_exactly_once(&all, &landed);
    assert_eq!(table.coordinates.len(), 30, "{quarantine:?}");
    let mut stages: Vec<(String, String)> = quarantine
        .iter()
        .map(|q| (q.stage.clone(), q.error.clone()))
        .collect();
    stages.sort();
    assert_eq!(stages.len(), 4, "{stages:?}");
    let decode: Vec<&str> = stages
        .iter()
        .filter(|(s, _)| s == "decode")
        .map(|(_, e)| e.as_str())
        .collect();
    assert_eq!(decode.len(), 3, "{stages:?}");
    assert!(
        decode.iter().any(|e| e.contains("bad message index")),
        "{decode:?}"
    );
    assert!(
        decode
            .iter()
            .any(|e| e.contains("truncated") || e.contains("runs past the end")),
        "{decode:?}"
    );
    assert!(
        decode.iter().any(|e| e.contains("wire type 0")),
        "{decode:?}"
    );
    // An unknown schema id is refused where the framed formats refuse it.
    assert!(
        stages
            .iter()
            .any(|(s, e)| s == "schema" && e.contains("9999")),
        "{stages:?}"
    );

    let Some(rows) = duck(
        &dir.path().join("events"),
        "SELECT id, customer, discount, ship_to.city, tags, counts['k'], card, iban, status, \
         CAST(created AS VARCHAR), parent, note, lines[1].sku, lines[1].qty, small, channel, \
         _key.id, _key.region FROM t ORDER BY id",
    ) else {
        return;
    };
    assert_eq!(rows.len(), 30);
    let r0 = &rows[0];
    assert_eq!(r0[0], 0);
    assert_eq!(r0[1], "c0");
    assert_eq!(r0[2], 0.0, "optional set to its default stays a value");
    assert_eq!(r0[3], "city0");
    assert_eq!(r0[4], serde_json::json!(["a", "t0"]));
    let count = if r0[5].is_array() {
        r0[5][0].clone()
    } else {
        r0[5].clone()
    };
    assert_eq!(count, 0);
    assert_eq!(r0[6], "card0");
    assert!(r0[7].is_null(), "the other oneof member is null");
    assert_eq!(r0[8], "PAID");
    assert!(
        r0[9]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14 22:13:00.123456"),
        "{r0:?}"
    );
    assert_eq!(r0[10], 0, "a wrapper holding 0 is 0");
    assert!(r0[11].is_null(), "an absent wrapper is null");
    assert_eq!(r0[12], "s0");
    assert_eq!(r0[13], 2);
    assert_eq!(
        r0[14], 4_000_000_000u64,
        "uint32 beyond i32 fits its BIGINT column"
    );
    assert!(r0[15].is_null(), "rows of v1 have no channel");
    assert_eq!(
        (r0[16].clone(), r0[17].clone()),
        (serde_json::json!(0), serde_json::json!("r0"))
    );
    let r1 = &rows[1];
    assert!(r1[2].is_null(), "optional unset is null");
    assert_eq!(
        (r1[7].clone(), r1[8].clone(), r1[11].clone()),
        (
            serde_json::json!("FR1"),
            serde_json::json!("SHIPPED"),
            serde_json::json!("note1")
        )
    );
    assert!(r1[6].is_null() && r1[10].is_null());
    let r25 = &rows[25];
    assert_eq!(r25[15], "web");
    assert!(r25[16].is_null(), "no key: a null key");
}

/// `topic_record_name`: the table is created from subject
/// `<topic>-<record_name>`, shaped by that message (not the file's first).
#[test]
fn a_table_is_created_from_the_subject_of_its_naming_strategy() {
    let topic = "pb-ship";
    let mut broker = MockBroker::start();
    broker.create_topic(topic, 1);
    let registry = MockRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("protos");
    std::fs::create_dir_all(&protos).unwrap();
    let text = r#"syntax = "proto3";
package acme;
message Meta { string source = 1; }
message Shipment { int64 id = 1; Meta meta = 2; repeated int32 parcels = 3; }
"#;
    std::fs::write(protos.join("ship.proto"), text).unwrap();
    // A decoy under the default subject: the strategy must not read it.
    registry.register(
        &format!("{topic}-value"),
        "PROTOBUF",
        "syntax = \"proto3\"; message Decoy { string d = 1; }",
        &[],
    );
    let id = registry.register(&format!("{topic}-acme.Shipment"), "PROTOBUF", text, &[]);
    let json: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id":"{i}","meta":{{"source":"m{i}"}},"parcels":[1,{i}]}}"#))
        .collect();
    let Some(values) = encode(&protos, "ship.proto", "acme.Shipment", id, &json) else {
        return;
    };
    assert_eq!(values[0][5..7], [2, 2], "the second message: index [1]");
    let landed = produce(&broker.bootstrap(), topic, &values);
    let config = write_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        topic,
        "subject_name_strategy = \"topic_record_name\"\nrecord_name = \"acme.Shipment\"",
        "",
    );
    run_ok(&config);
    assert_exactly_once(&read_table(&dir.path().join("events")).coordinates, &landed);
    let Some(rows) = duck(
        &dir.path().join("events"),
        "SELECT id, meta.source, parcels FROM t ORDER BY id",
    ) else {
        return;
    };
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[3], serde_json::json!([3, "m3", [1, 3]]));
}

/// `record_name` for an Avro topic: the table comes from subject
/// `<record_name>`, not `<topic>-value` (the strategies are format-agnostic).
#[test]
fn an_avro_table_is_created_from_its_record_name_subject() {
    use crate::common::avro::Datum;
    let topic = "avro-customers";
    let mut broker = MockBroker::start();
    broker.create_topic(topic, 1);
    let registry = MockRegistry::start();
    // A decoy under the default subject, whose `id` the records' cannot fill.
    let decoy = r#"{"type":"record","name":"Decoy","fields":[{"name":"id","type":"string"}]}"#;
    registry.register(&format!("{topic}-value"), "AVRO", decoy, &[]);
    let schema = r#"{"type":"record","name":"Customer","namespace":"inlet.test","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
    let id = registry.register("inlet.test.Customer", "AVRO", schema, &[]);
    let values: Vec<Vec<u8>> = (0..4i64)
        .map(|i| Datum::Record(vec![Datum::Long(i), Datum::Str(format!("n{i}"))]).framed(id))
        .collect();
    let landed = produce(&broker.bootstrap(), topic, &values);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &broker.bootstrap(),
        &registry.url(),
        topic,
        "subject_name_strategy = \"record_name\"\nrecord_name = \"inlet.test.Customer\"",
        "",
    );
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        toml.replace("format = \"protobuf\"", "format = \"avro\""),
    )
    .unwrap();
    run_ok(&config);
    assert_exactly_once(&read_table(&dir.path().join("events")).coordinates, &landed);
    let Some(rows) = duck(
        &dir.path().join("events"),
        "SELECT id, name FROM t ORDER BY id",
    ) else {
        return;
    };
    assert_eq!(rows[2], serde_json::json!([2, "n2"]));
}
