//! `op = "debezium"` end to end: a Debezium Postgres change stream (snapshot
//! reads, inserts, updates, deletes each followed by its tombstone) as
//! JSON without schemas, JSON with `schema`/`payload`, and Avro through the
//! Schema Registry, into `append` tables holding the unwrapped rows and the
//! op column, with a catalogue of events that are not row changes. Every
//! offset is in the table or the quarantine exactly once, and DuckDB reads
//! the tables. The same streams into `upsert` and `changelog` tables end in
//! the state computed from the produced changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::AsArray as _;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use serde_json::json;

use crate::common::assertions::assert_exactly_once;
use crate::common::avro::Datum;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::run_available_now;
use crate::common::producing::{produce_records, Landed, Record};
use crate::common::registry::MockRegistry;
use crate::common::required;
use crate::common::tables::{duckdb_read, read_quarantine, table_batches, QuarantineRow};

/// Debezium's Avro envelope of the `inventory.customers` table of the
/// Postgres connector (as its AvroConverter registers it).
const AVRO: &str = include_str!("support/debezium_customers.avsc");

/// The row of `inventory.customers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Customer {
    pub id: i32,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
}

/// One change Debezium captured.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// `r`, `c`, `u` or `d`.
    pub op: &'static str,
    pub before: Option<Customer>,
    pub after: Option<Customer>,
    /// `source.lsn`: increasing along the stream.
    pub lsn: i64,
    /// `source.txId`.
    pub tx: i64,
}

impl Change {
    /// The row's key.
    pub(crate) fn id(&self) -> i32 {
        self.after.as_ref().or(self.before.as_ref()).unwrap().id
    }
}

/// A small linear congruential generator: the same stream every run.
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

/// A database's history as Debezium emits it: a snapshot of `keys` rows,
/// then `changes` changes (about 70% updates, 20% inserts, 10% deletes) in
/// transactions of up to three changes.
pub(crate) fn history(keys: i32, changes: usize, seed: u64) -> Vec<Change> {
    let mut rng = Lcg(seed);
    let mut live: BTreeMap<i32, Customer> = BTreeMap::new();
    let customer = |id: i32, version: u64| Customer {
        id,
        first_name: format!("Anne{id}"),
        last_name: format!("Kretchmar v{version}"),
        email: (version % 3 != 0).then(|| format!("annek{id}.{version}@noanswer.org")),
    };
    let mut out = Vec::new();
    let mut lsn = 33_816_400;
    for id in 1..=keys {
        let row = customer(id, 1);
        live.insert(id, row.clone());
        lsn += 8;
        out.push(Change {
            op: "r",
            before: None,
            after: Some(row),
            lsn,
            tx: 760,
        });
    }
    let mut next_id = keys + 1;
    let mut tx = 770;
    for i in 0..changes {
        if i % 3 == 0 {
            tx += 1;
        }
        lsn += 8 + rng.next(40) as i64;
        let roll = rng.next(10);
        let existing = live
            .keys()
            .copied()
            .nth(rng.next(live.len() as u64) as usize);
        let change = match (roll, existing) {
            (0, Some(id)) => Change {
                op: "d",
                before: live.remove(&id),
                after: None,
                lsn,
                tx,
            },
            (1..=7, Some(id)) => {
                let row = customer(id, 2 + rng.next(1000));
                Change {
                    op: "u",
                    before: live.insert(id, row.clone()),
                    after: Some(row),
                    lsn,
                    tx,
                }
            }
            _ => {
                let row = customer(next_id, 1);
                next_id += 1;
                live.insert(row.id, row.clone());
                Change {
                    op: "c",
                    before: None,
                    after: Some(row),
                    lsn,
                    tx,
                }
            }
        };
        out.push(change);
    }
    out
}

/// The rows left after applying `changes` in order: the reference end state
/// of an `upsert` table.
#[allow(dead_code)] // the table-mode tests use it
pub(crate) fn end_state(changes: &[Change]) -> BTreeMap<i32, Customer> {
    let mut state = BTreeMap::new();
    for c in changes {
        match &c.after {
            Some(row) if c.op != "d" => {
                state.insert(row.id, row.clone());
            }
            _ => {
                state.remove(&c.id());
            }
        }
    }
    state
}

fn source_json(lsn: i64, tx: i64, snapshot: bool) -> serde_json::Value {
    json!({
        "version": "2.7.3.Final", "connector": "postgresql", "name": "dbserver1",
        "ts_ms": 1_700_000_000_000_i64 + lsn / 8, "snapshot": if snapshot { "true" } else { "false" },
        "db": "postgres", "sequence": format!("[\"{}\",\"{lsn}\"]", lsn - 8),
        "schema": "inventory", "table": "customers", "txId": tx, "lsn": lsn, "xmin": null
    })
}

fn row_json(row: &Option<Customer>) -> serde_json::Value {
    match row {
        None => json!(null),
        Some(c) => json!({
            "id": c.id, "first_name": c.first_name, "last_name": c.last_name, "email": c.email
        }),
    }
}

/// The connector's JsonConverter output of `c`: the bare envelope, or with
/// `schemas.enable` its `schema` and `payload`.
fn change_json(c: &Change, wrapped: bool) -> Vec<u8> {
    let payload = json!({
        "before": row_json(&c.before),
        "after": row_json(&c.after),
        "source": source_json(c.lsn, c.tx, c.op == "r"),
        "op": c.op,
        "ts_ms": 1_700_000_000_500_i64 + c.lsn / 8,
        "transaction": if c.op == "r" { json!(null) } else {
            json!({"id": format!("{}:{}", c.tx, c.lsn), "total_order": 1, "data_collection_order": 1})
        }
    });
    wrap(payload, wrapped)
}

fn wrap(payload: serde_json::Value, wrapped: bool) -> Vec<u8> {
    if !wrapped {
        return payload.to_string().into_bytes();
    }
    let value = |field: &str| {
        json!({"type": "struct", "optional": true, "field": field,
               "name": "dbserver1.inventory.customers.Value", "fields": [
            {"type": "int32", "optional": false, "default": 0, "field": "id"},
            {"type": "string", "optional": false, "field": "first_name"},
            {"type": "string", "optional": false, "field": "last_name"},
            {"type": "string", "optional": true, "field": "email"}]})
    };
    json!({
        "schema": {"type": "struct", "optional": false, "version": 2,
                   "name": "dbserver1.inventory.customers.Envelope", "fields": [
            value("before"), value("after"),
            {"type": "struct", "optional": false, "field": "source",
             "name": "io.debezium.connector.postgresql.Source", "fields": [
                {"type": "string", "optional": false, "field": "version"},
                {"type": "int64", "optional": true, "field": "lsn"}]},
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"}]},
        "payload": payload
    })
    .to_string()
    .into_bytes()
}

/// The Debezium key of row `id` (JSON, as the JsonConverter writes it).
fn key(id: i32) -> Vec<u8> {
    format!(r#"{{"id":{id}}}"#).into_bytes()
}

/// What a produced message is.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    /// Change `i` of the history.
    Change(usize),
    /// The tombstone after a delete.
    Tombstone,
    /// A catalogue entry: quarantined with this stage and error text.
    Pill(&'static str, &'static str),
}

/// A message to produce: key, value (`None`: a tombstone), what it is.
type Message = (Vec<u8>, Option<Vec<u8>>, Sent);

/// The messages of `changes` (each delete followed by its tombstone) with
/// the `pills` spread among them; `encode` writes a change's value.
fn messages(
    changes: &[Change],
    pills: &[(Vec<u8>, &'static str, &'static str)],
    encode: &dyn Fn(&Change) -> Vec<u8>,
) -> Vec<Message> {
    messages_keyed(changes, pills, encode, &key)
}

/// [`messages`], with the keys written by `key`.
fn messages_keyed(
    changes: &[Change],
    pills: &[(Vec<u8>, &'static str, &'static str)],
    encode: &dyn Fn(&Change) -> Vec<u8>,
    key: &dyn Fn(i32) -> Vec<u8>,
) -> Vec<Message> {
    let mut out = Vec::new();
    let every = (changes.len() / (pills.len() + 1)).max(1);
    let mut pills = pills.iter();
    for (i, c) in changes.iter().enumerate() {
        out.push((key(c.id()), Some(encode(c)), Sent::Change(i)));
        if c.op == "d" {
            out.push((key(c.id()), None, Sent::Tombstone));
        }
        if i % every == every - 1 {
            if let Some((value, stage, error)) = pills.next() {
                out.push((key(1), Some(value.clone()), Sent::Pill(stage, error)));
            }
        }
    }
    for (value, stage, error) in pills {
        out.push((key(1), Some(value.clone()), Sent::Pill(stage, error)));
    }
    out
}

/// The JSON catalogue: what is not a row change, and why it is quarantined.
fn json_pills(wrapped: bool) -> Vec<(Vec<u8>, &'static str, &'static str)> {
    let source = source_json(40_000_000, 900, false);
    vec![
        (
            wrap(
                json!({"before": null, "after": null, "source": source, "op": "t", "ts_ms": 1}),
                wrapped,
            ),
            "transform",
            "Debezium truncate event (op `t`): not applied, the table keeps its rows",
        ),
        (
            wrap(
                json!({"source": source, "op": "m", "ts_ms": 1,
                       "message": {"prefix": "audit", "content": "aGVsbG8="}}),
                wrapped,
            ),
            "transform",
            "Debezium logical decoding message (op `m`)",
        ),
        (
            wrap(
                json!({"before": null, "after": {"id": 1, "first_name": "x", "last_name": "y"},
                       "source": source, "op": "upsert", "ts_ms": 1}),
                wrapped,
            ),
            "transform",
            "unknown Debezium op `upsert`; expected c, u, d or r",
        ),
        (
            br#"{"ts_ms":1700000000000}"#.to_vec(),
            "transform",
            "not a Debezium change event: no `op`",
        ),
        (
            wrap(
                json!({"before": null, "after": null, "source": source, "op": "u", "ts_ms": 1}),
                wrapped,
            ),
            "transform",
            "Debezium envelope with neither `before` nor `after`",
        ),
        (
            wrap(
                json!({"before": null, "after": null, "source": source, "op": "d", "ts_ms": 1}),
                wrapped,
            )[..40]
                .to_vec(),
            "decode",
            "",
        ),
    ]
}

/// A config with source `cdc` of `format` into table `customers`.
fn config(
    dir: &Path,
    bootstrap: &str,
    registry: Option<&str>,
    format: &str,
    table: &str,
) -> PathBuf {
    config_flushing(dir, bootstrap, registry, format, table, 100_000)
}

/// [`config`], flushing every `max_rows` rows.
fn config_flushing(
    dir: &Path,
    bootstrap: &str,
    registry: Option<&str>,
    format: &str,
    table: &str,
    max_rows: usize,
) -> PathBuf {
    let registry = registry.map_or(String::new(), |url| {
        format!("[schema_registry]\nurl = \"{url}\"\nretry_backoff = \"100ms\"\nmax_backoff = \"1s\"\ntimeout = \"2s\"\n")
    });
    let toml = format!(
        r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "debezium"

{registry}
[sources.cdc]
topics = ["dbserver1.inventory.customers"]
table = "customers"
format = "{format}"

[tables.customers]
uri = "{uri}"
quarantine_uri = "{quarantine}"
{table}

[tables.customers.metadata_columns]
partition = "_partition"
offset = "_offset"
key = "_key"

[flush]
max_rows = {max_rows}
max_age = "300ms"
"#,
        uri = dir.join("customers").display(),
        quarantine = dir.join("quarantine").display(),
    );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

const TOPIC: &str = "dbserver1.inventory.customers";

/// The transform of the append tests, and the columns it makes.
const APPEND_TABLE: &str = r#"schema = "id INT, first_name STRING, last_name STRING, email STRING, __op STRING, __source_lsn BIGINT, __source_ts_ms BIGINT, __ts_ms BIGINT, __txn_id STRING"

[[tables.customers.transforms]]
op = "debezium"
source_fields = ["lsn", "ts_ms"]
ts_ms_column = "__ts_ms"
transaction = true

[[tables.customers.transforms]]
op = "drop"
columns = ["__txn_total_order", "__txn_data_collection_order"]
"#;

/// One table row of the append tests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AppendRow {
    partition: i32,
    offset: i64,
    id: i32,
    op: String,
    lsn: i64,
    last_name: String,
    email: Option<String>,
    txn: Option<String>,
}

fn text(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    cast(column, &DataType::Utf8)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn append_rows(table: &Path) -> Vec<AppendRow> {
    let (_, _, batches) = table_batches(table);
    let mut out = Vec::new();
    for b in &batches {
        let column = |n: &str| text(b, n);
        let (p, o, id, op, lsn) = (
            column("_partition"),
            column("_offset"),
            column("id"),
            column("__op"),
            column("__source_lsn"),
        );
        let (last, email, txn) = (column("last_name"), column("email"), column("__txn_id"));
        for i in 0..b.num_rows() {
            let num = |v: &Option<String>| v.as_deref().unwrap().parse::<i64>().unwrap();
            out.push(AppendRow {
                partition: num(&p[i]) as i32,
                offset: num(&o[i]),
                id: num(&id[i]) as i32,
                op: op[i].clone().unwrap(),
                lsn: num(&lsn[i]),
                last_name: last[i].clone().unwrap(),
                email: email[i].clone(),
                txn: txn[i].clone(),
            });
        }
    }
    out.sort();
    out
}

/// Checks an append run: each change is a row with its row image (the
/// before image for a delete), each tombstone and pill is quarantined with
/// its stage and reason, every offset once; DuckDB reads the same.
fn check_append(dir: &Path, changes: &[Change], sent: &[Message], landed: &[Landed]) {
    let rows = append_rows(&dir.join("customers"));
    let quarantine = read_quarantine(&dir.join("quarantine"));
    let mut all: Vec<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    all.extend(quarantine.iter().map(|q| (q.partition, q.offset)));
    assert_exactly_once(&all, landed);
    let by_offset: BTreeMap<(i32, i64), &Sent> = landed
        .iter()
        .zip(sent)
        .map(|(l, s)| ((l.partition, l.offset), &s.2))
        .collect();
    for r in &rows {
        let Sent::Change(i) = by_offset[&(r.partition, r.offset)] else {
            panic!("row {r:?} is not a change")
        };
        let c = &changes[*i];
        let image = c.after.as_ref().or(c.before.as_ref()).unwrap();
        assert_eq!(
            (r.id, r.op.as_str(), r.lsn, &r.last_name, &r.email),
            (image.id, c.op, c.lsn, &image.last_name, &image.email),
            "{r:?}"
        );
        assert_eq!(r.txn.is_some(), c.op != "r", "{r:?}");
    }
    assert_eq!(
        rows.len(),
        sent.iter()
            .filter(|s| matches!(s.2, Sent::Change(_)))
            .count()
    );
    check_quarantine(&quarantine, &by_offset);
    let Some(duck) = duckdb_read(
        &dir.join("customers"),
        &[],
        Some("SELECT __op, count(*), count(DISTINCT __source_lsn), min(id) > 0 FROM t GROUP BY __op ORDER BY __op"),
    ) else {
        assert!(!required(), "DuckDB is required in CI");
        return;
    };
    let mut want: BTreeMap<&str, i64> = BTreeMap::new();
    for c in changes {
        *want.entry(c.op).or_default() += 1;
    }
    let want: Vec<serde_json::Value> = want.iter().map(|(op, n)| json!([op, n, n, true])).collect();
    assert_eq!(duck["result"], json!(want), "{duck}");
}

fn check_quarantine(quarantine: &[QuarantineRow], by_offset: &BTreeMap<(i32, i64), &Sent>) {
    for q in quarantine {
        match by_offset[&(q.partition, q.offset)] {
            Sent::Tombstone => {
                assert_eq!(
                    (q.stage.as_str(), q.value.as_ref()),
                    ("decode", None),
                    "{q:?}"
                );
                assert!(q.error.contains("tombstone"), "{q:?}");
            }
            Sent::Pill(stage, error) => {
                assert_eq!(q.stage, *stage, "{q:?}");
                assert!(q.error.contains(error), "{q:?}");
            }
            Sent::Change(i) => panic!("change {i} quarantined: {q:?}"),
        }
    }
}

fn produce_all(bootstrap: &str, sent: &[Message]) -> Vec<Landed> {
    let records: Vec<Record<'_>> = sent
        .iter()
        .map(|(k, v, _)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    produce_records(bootstrap, TOPIC, &records)
}

fn run_ok(config: &Path) -> String {
    let out = run_available_now(config);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "inlet failed:\n{log}");
    log
}

fn json_into_append(wrapped: bool) {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let changes = history(20, 120, 7);
    let pills = json_pills(wrapped);
    let sent = messages(&changes, &pills, &|c| change_json(c, wrapped));
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker.bootstrap(), None, "json", APPEND_TABLE);
    run_ok(&config);
    check_append(dir.path(), &changes, &sent, &landed);
}

#[test]
fn json_changes_without_schemas_append_as_rows_with_their_op() {
    json_into_append(false);
}

#[test]
fn json_changes_with_schema_and_payload_append_as_rows_with_their_op() {
    json_into_append(true);
}

fn source_avro(lsn: i64, tx: i64, snapshot: bool) -> Datum {
    let long = |v: i64| Datum::Union(1, Box::new(Datum::Long(v)));
    Datum::Record(vec![
        Datum::Str("2.7.3.Final".into()),
        Datum::Str("postgresql".into()),
        Datum::Str("dbserver1".into()),
        Datum::Long(1_700_000_000_000 + lsn / 8),
        Datum::Union(
            0,
            Box::new(Datum::Str(if snapshot { "true" } else { "false" }.into())),
        ),
        Datum::Str("postgres".into()),
        Datum::Union(
            1,
            Box::new(Datum::Str(format!("[\"{}\",\"{lsn}\"]", lsn - 8))),
        ),
        Datum::Str("inventory".into()),
        Datum::Str("customers".into()),
        long(tx),
        long(lsn),
        Datum::Union(0, Box::new(Datum::Null)),
    ])
}

/// A row of the `Value` record; `phone`: of the second version, which has
/// the column `phone` (`None`: the first version).
fn row_avro(row: &Option<Customer>, phone: Option<&Option<String>>) -> Datum {
    let optional = |v: &Option<String>| match v {
        None => Datum::Union(0, Box::new(Datum::Null)),
        Some(e) => Datum::Union(1, Box::new(Datum::Str(e.clone()))),
    };
    match row {
        None => Datum::Union(0, Box::new(Datum::Null)),
        Some(c) => {
            let mut fields = vec![
                Datum::Int(c.id),
                Datum::Str(c.first_name.clone()),
                Datum::Str(c.last_name.clone()),
                optional(&c.email),
            ];
            fields.extend(phone.map(optional));
            Datum::Union(1, Box::new(Datum::Record(fields)))
        }
    }
}

/// A Debezium Postgres envelope under the registry's schema `id`.
fn envelope_avro(
    id: u32,
    op: &str,
    before: &Option<Customer>,
    after: &Option<Customer>,
    lsn: i64,
    tx: i64,
) -> Vec<u8> {
    envelope_datum(op, row_avro(before, None), row_avro(after, None), lsn, tx).framed(id)
}

fn envelope_datum(op: &str, before: Datum, after: Datum, lsn: i64, tx: i64) -> Datum {
    Datum::Record(vec![
        before,
        after,
        source_avro(lsn, tx, op == "r"),
        Datum::Str(op.into()),
        Datum::Union(1, Box::new(Datum::Long(1_700_000_000_500 + lsn / 8))),
        if op == "r" {
            Datum::Union(0, Box::new(Datum::Null))
        } else {
            Datum::Union(
                1,
                Box::new(Datum::Record(vec![
                    Datum::Str(format!("{tx}:{lsn}")),
                    Datum::Long(1),
                    Datum::Long(1),
                ])),
            )
        },
    ])
}

/// Debezium's heartbeat value (of the `__debezium-heartbeat.<prefix>` topic).
const HEARTBEAT: &str = r#"{"type":"record","name":"Heartbeat","namespace":"io.debezium.connector.common","fields":[{"name":"ts_ms","type":"long"}],"connect.name":"io.debezium.connector.common.Heartbeat"}"#;

/// The Avro catalogue; `heartbeat`: the registry id of [`HEARTBEAT`], a
/// writer schema the transform does not fit (all its messages are refused).
fn avro_pills(id: u32, heartbeat: u32) -> Vec<(Vec<u8>, &'static str, &'static str)> {
    let someone = Some(Customer {
        id: 1,
        first_name: "x".into(),
        last_name: "y".into(),
        email: None,
    });
    vec![
        (
            envelope_avro(id, "t", &None, &None, 40_000_000, 900),
            "transform",
            "Debezium truncate event (op `t`)",
        ),
        (
            envelope_avro(id, "x", &None, &someone, 40_000_008, 900),
            "transform",
            "unknown Debezium op `x`",
        ),
        (
            envelope_avro(id, "c", &None, &None, 40_000_016, 900),
            "transform",
            "Debezium envelope with neither `before` nor `after`",
        ),
        (
            envelope_avro(id, "d", &None, &someone, 40_000_024, 900),
            "transform",
            "Debezium `d` event without `before`",
        ),
        (
            Datum::Record(vec![Datum::Long(1_700_000_000_000)]).framed(heartbeat),
            "transform",
            "not a Debezium envelope: no `op` column nor `payload.op`; columns are: ts_ms",
        ),
    ]
}

/// Registers the heartbeat schema (under its own topic's subject).
fn register_heartbeat(registry: &MockRegistry) -> u32 {
    registry.register(
        "__debezium-heartbeat.dbserver1-value",
        "AVRO",
        HEARTBEAT,
        &[],
    )
}

/// The table is created from the registry's envelope, through the
/// transform: the row's fields, the op and the kept source fields.
#[test]
fn avro_changes_through_the_registry_append_as_rows_with_their_op() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let registry = MockRegistry::start();
    let id = registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO, &[]);
    let changes = history(20, 120, 11);
    let sent = messages(
        &changes,
        &avro_pills(id, register_heartbeat(&registry)),
        &|c| envelope_avro(id, c.op, &c.before, &c.after, c.lsn, c.tx),
    );
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let table = APPEND_TABLE.split_once('\n').unwrap().1;
    let config = config(
        dir.path(),
        &broker.bootstrap(),
        Some(&registry.url()),
        "avro",
        table,
    );
    let log = run_ok(&config);
    assert!(
        log.contains("creating the table from the registry"),
        "{log}"
    );
    check_append(dir.path(), &changes, &sent, &landed);
    let (_, _, batches) = table_batches(&dir.path().join("customers"));
    let schema = batches[0].schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        columns,
        [
            "id",
            "first_name",
            "last_name",
            "email",
            "__op",
            "__source_lsn",
            "__source_ts_ms",
            "__ts_ms",
            "__txn_id",
            "_partition",
            "_offset",
            "_key"
        ]
    );
}

/// `ALTER TABLE customers ADD COLUMN phone`: the connector registers a second
/// envelope version whose `Value` has `phone`; the table gains the column
/// (evolution `add_columns`), the earlier rows read null there.
#[test]
fn a_column_added_to_the_source_table_becomes_a_table_column() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 1);
    let registry = MockRegistry::start();
    let subject = format!("{TOPIC}-value");
    let v1 = registry.register(&subject, "AVRO", AVRO, &[]);
    let v2 = registry.register(
        &subject,
        "AVRO",
        &AVRO.replace(
            r#"{"name":"email","type":["null","string"],"default":null}"#,
            r#"{"name":"email","type":["null","string"],"default":null},
   {"name":"phone","type":["null","string"],"default":null}"#,
        ),
        &[],
    );
    let changes = history(6, 12, 3);
    let phone = |c: &Change| Some(format!("+33 6 {:08}", c.lsn % 100_000_000));
    let sent: Vec<Message> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let value = if i < 9 {
                envelope_avro(v1, c.op, &c.before, &c.after, c.lsn, c.tx)
            } else {
                let p = phone(c);
                envelope_datum(
                    c.op,
                    row_avro(&c.before, Some(&p)),
                    row_avro(&c.after, Some(&p)),
                    c.lsn,
                    c.tx,
                )
                .framed(v2)
            };
            (key(c.id()), Some(value), Sent::Change(i))
        })
        .collect();
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let table = APPEND_TABLE.split_once('\n').unwrap().1;
    let config = config(
        dir.path(),
        &broker.bootstrap(),
        Some(&registry.url()),
        "avro",
        table,
    );
    run_ok(&config);
    check_append(dir.path(), &changes, &sent, &landed);
    let (_, _, batches) = table_batches(&dir.path().join("customers"));
    let mut phones: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for b in &batches {
        for (lsn, p) in text(b, "__source_lsn").into_iter().zip(text(b, "phone")) {
            phones.insert(lsn.unwrap().parse().unwrap(), p);
        }
    }
    let want: BTreeMap<i64, Option<String>> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.lsn, (i >= 9).then(|| phone(c)).flatten()))
        .collect();
    assert_eq!(phones, want);
}

/// A transform that does not fit the table stops `inlet check` (and `run`)
/// before anything is fetched, naming the key, the transform and the fix.
#[test]
fn a_debezium_transform_that_does_not_fit_stops_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let check = |table: &str| {
        let config = config(dir.path(), "127.0.0.1:9", None, "json", table);
        crate::common::process::inlet()
            .args(["check", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let ok = check(APPEND_TABLE);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // `binlog` is no field of the Postgres/MySQL source, and the table has
    // no `__source_binlog` column to type it.
    let bad = check(&APPEND_TABLE.replace(r#"["lsn", "ts_ms"]"#, r#"["lsn", "binlog"]"#));
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{e}");
    assert!(
        e.contains("tables.customers.transforms")
            && e.contains("transforms[0] (debezium)")
            && e.contains("source field `binlog` not found"),
        "{e}"
    );
}

/// The row columns of a table read back, by id, with the op of the change
/// that wrote it; rows without an id (a changelog's tombstones) are left out.
fn rows_by_id(table: &Path) -> BTreeMap<i32, (Customer, String)> {
    let (_, _, batches) = table_batches(table);
    let mut out = BTreeMap::new();
    for b in &batches {
        let (id, first, last, email, op) = (
            text(b, "id"),
            text(b, "first_name"),
            text(b, "last_name"),
            text(b, "email"),
            text(b, "__op"),
        );
        for i in 0..b.num_rows() {
            let Some(key) = id[i].as_deref() else {
                continue;
            };
            let c = Customer {
                id: key.parse().unwrap(),
                first_name: first[i].clone().unwrap(),
                last_name: last[i].clone().unwrap(),
                email: email[i].clone(),
            };
            let previous = out.insert(c.id, (c, op[i].clone().unwrap()));
            assert!(previous.is_none(), "two rows of id {key}");
        }
    }
    out
}

/// The reference end state of an `upsert` table: each live row with the op
/// of its last change.
fn upsert_reference(changes: &[Change]) -> BTreeMap<i32, (Customer, String)> {
    let mut ops: BTreeMap<i32, &str> = BTreeMap::new();
    for c in changes {
        ops.insert(c.id(), c.op);
    }
    end_state(changes)
        .into_iter()
        .map(|(id, row)| (id, (row, ops[&id].to_string())))
        .collect()
}

/// DuckDB's answer to `sql` (over `t`) equals `want`'s rows as
/// `[id, last_name, email, op]`.
fn duckdb_agrees(table: &Path, sql: &str, want: &BTreeMap<i32, (Customer, String)>) {
    let Some(duck) = duckdb_read(table, &[], Some(sql)) else {
        assert!(!required(), "DuckDB is required in CI");
        return;
    };
    let want: Vec<serde_json::Value> = want
        .values()
        .map(|(c, op)| json!([c.id, c.last_name, c.email, op]))
        .collect();
    assert_eq!(duck["result"], json!(want), "{sql}");
}

/// A connector restart: Debezium delivers at least once, so after a
/// restart it sends again every change from its last committed source
/// offset on, `changes[from..]`, after the others.
fn with_restart(changes: &[Change], from: usize) -> Vec<Change> {
    let mut out = changes.to_vec();
    out.extend_from_slice(&changes[from..]);
    out
}

/// Every quarantined message is a tombstone or a pill, with its stage;
/// `tombstones`: whether the tombstones are among them.
fn check_quarantine_of(dir: &Path, sent: &[Message], landed: &[Landed], tombstones: bool) {
    let quarantine = read_quarantine(&dir.join("quarantine"));
    let by_offset: BTreeMap<(i32, i64), &Sent> = landed
        .iter()
        .zip(sent)
        .map(|(l, s)| ((l.partition, l.offset), &s.2))
        .collect();
    check_quarantine(&quarantine, &by_offset);
    let want = sent
        .iter()
        .filter(|s| match s.2 {
            Sent::Pill(..) => true,
            Sent::Tombstone => tombstones,
            Sent::Change(_) => false,
        })
        .count();
    assert_eq!(quarantine.len(), want, "{quarantine:?}");
}

/// An `upsert` table of the Debezium rows, keyed by `keys`, ordered by
/// `source.lsn`, deleting on `__op = 'd'`.
fn upsert_table(keys: &str) -> String {
    format!(
        r#"schema = "id INT, first_name STRING, last_name STRING, email STRING, __op STRING, __source_lsn BIGINT"
mode = "upsert"
keys = [{keys}]
sequence_by = "__source_lsn"
delete_when = "__op = 'd'"
key_format = "json"
key_schema = "id INT"

[[tables.customers.transforms]]
op = "debezium"
source_fields = ["lsn"]
"#
    )
}

const LIVE_ROWS: &str = "SELECT id, last_name, email, __op FROM t ORDER BY id";

/// Debezium JSON (both shapes in one topic) into `upsert` keyed by the
/// Kafka key and ordered by the Kafka offset (no `sequence_by`: a tombstone
/// has no LSN, and a change without its `sequence_by` is quarantined), in
/// batches of 40: the end state is the one computed from the changes, also
/// after a connector restart sent a suffix of them again (the suffix ends
/// with each key's latest change); tombstones delete (again), pills are
/// quarantined. DuckDB reads the same.
#[test]
fn json_changes_into_upsert_end_in_the_reference_state() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let changes = history(30, 300, 5);
    let sent = messages(&with_restart(&changes, 200), &json_pills(false), &|c| {
        change_json(c, c.lsn % 3 == 0)
    });
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let table = upsert_table(r#""_key""#).replace("sequence_by = \"__source_lsn\"\n", "");
    let config = config_flushing(dir.path(), &broker.bootstrap(), None, "json", &table, 40);
    run_ok(&config);
    let want = upsert_reference(&changes);
    assert!(want.len() > 20 && want.len() < 90, "{}", want.len());
    assert_eq!(rows_by_id(&dir.path().join("customers")), want);
    duckdb_agrees(&dir.path().join("customers"), LIVE_ROWS, &want);
    check_quarantine_of(dir.path(), &sent, &landed, false);
}

/// Debezium Avro through the registry into `upsert` keyed by the row's
/// `id` (a value column) and ordered by `source.lsn`: the same end state,
/// also after a restart sent a suffix again (older changes arriving after
/// newer ones in a later batch are dropped); tombstones, which carry no
/// `id`, are quarantined.
#[test]
fn avro_changes_into_upsert_end_in_the_reference_state() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let registry = MockRegistry::start();
    let id = registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO, &[]);
    let changes = history(30, 300, 9);
    let sent = messages(
        &with_restart(&changes, 150),
        &avro_pills(id, register_heartbeat(&registry)),
        &|c| envelope_avro(id, c.op, &c.before, &c.after, c.lsn, c.tx),
    );
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let table = upsert_table(r#""id""#);
    let config = config_flushing(
        dir.path(),
        &broker.bootstrap(),
        Some(&registry.url()),
        "avro",
        &table,
        40,
    );
    run_ok(&config);
    let want = upsert_reference(&changes);
    assert_eq!(rows_by_id(&dir.path().join("customers")), want);
    duckdb_agrees(&dir.path().join("customers"), LIVE_ROWS, &want);
    check_quarantine_of(dir.path(), &sent, &landed, true);
}

/// A `changelog` table of the Debezium rows, keyed by the Kafka key.
fn changelog_table(key_format: &str) -> String {
    upsert_table(r#""_key""#)
        .replace(r#"mode = "upsert""#, r#"mode = "changelog""#)
        .replace(
            r#"key_format = "json""#,
            &format!("key_format = \"{key_format}\""),
        )
        .replace(
            "sequence_by = \"__source_lsn\"\ndelete_when = \"__op = 'd'\"\n",
            "",
        )
}

/// Debezium JSON with `schema`/`payload` into `changelog`: every change is a
/// row with its op and LSN, every tombstone a row without value columns;
/// the latest state DuckDB computes from the changelog (last change per id
/// by LSN, unless a delete) is the one computed from the produced changes.
#[test]
fn json_changes_into_changelog_hold_every_change() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let changes = history(20, 200, 13);
    let sent = messages(&changes, &json_pills(true), &|c| change_json(c, true));
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let config = config_flushing(
        dir.path(),
        &broker.bootstrap(),
        None,
        "json",
        &changelog_table("json"),
        50,
    );
    run_ok(&config);
    check_changelog(dir.path(), &changes, &sent, &landed);
}

/// Debezium Avro values and keys through the registry into `changelog`:
/// the same.
#[test]
fn avro_changes_into_changelog_hold_every_change() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let registry = MockRegistry::start();
    let id = registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO, &[]);
    let key_id = registry.register(
        &format!("{TOPIC}-key"),
        "AVRO",
        r#"{"type":"record","name":"Key","namespace":"dbserver1.inventory.customers","fields":[{"name":"id","type":"int"}],"connect.name":"dbserver1.inventory.customers.Key"}"#,
        &[],
    );
    let changes = history(20, 200, 17);
    let pills = avro_pills(id, register_heartbeat(&registry));
    let sent = messages_keyed(
        &changes,
        &pills,
        &|c| envelope_avro(id, c.op, &c.before, &c.after, c.lsn, c.tx),
        &|k| Datum::Record(vec![Datum::Int(k)]).framed(key_id),
    );
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let config = config_flushing(
        dir.path(),
        &broker.bootstrap(),
        Some(&registry.url()),
        "avro",
        &changelog_table("avro"),
        50,
    );
    run_ok(&config);
    check_changelog(dir.path(), &changes, &sent, &landed);
}

/// A changelog run: one row per change (its op and LSN) and per tombstone
/// (no value columns), pills quarantined, and DuckDB's latest state over
/// the changelog equal to the reference.
fn check_changelog(dir: &Path, changes: &[Change], sent: &[Message], landed: &[Landed]) {
    let (_, _, batches) = table_batches(&dir.join("customers"));
    let mut rows: Vec<(i32, i64, Option<String>, Option<String>)> = Vec::new();
    for b in &batches {
        let (p, o, op, lsn) = (
            text(b, "_partition"),
            text(b, "_offset"),
            text(b, "__op"),
            text(b, "__source_lsn"),
        );
        for i in 0..b.num_rows() {
            let num = |v: &Option<String>| v.as_deref().unwrap().parse::<i64>().unwrap();
            rows.push((num(&p[i]) as i32, num(&o[i]), op[i].clone(), lsn[i].clone()));
        }
    }
    let mut want: Vec<(i32, i64, Option<String>, Option<String>)> = landed
        .iter()
        .zip(sent)
        .filter_map(|(l, s)| match s.2 {
            Sent::Change(i) => Some((
                l.partition,
                l.offset,
                Some(changes[i].op.to_string()),
                Some(changes[i].lsn.to_string()),
            )),
            Sent::Tombstone => Some((l.partition, l.offset, None, None)),
            Sent::Pill(..) => None,
        })
        .collect();
    rows.sort();
    want.sort();
    assert_eq!(rows, want);
    check_quarantine_of(dir, sent, landed, false);
    let latest = "SELECT id, last_name, email, __op FROM ( \
        SELECT *, row_number() OVER (PARTITION BY id ORDER BY __source_lsn DESC) AS n \
        FROM t WHERE __op IS NOT NULL) WHERE n = 1 AND __op <> 'd' ORDER BY id";
    duckdb_agrees(&dir.join("customers"), latest, &upsert_reference(changes));
}

/// A version of a Debezium row in a `history` table: id, last name, email,
/// op, start, end, current.
type DbzVersion = (i32, String, Option<String>, String, i64, Option<i64>, bool);

/// The reference history of `changes`: per id in `source.lsn` order, each
/// c/u/r opens a version (its `after`) that the next change closes at its
/// LSN; a `d` closes and opens nothing.
fn history_reference(changes: &[Change]) -> Vec<DbzVersion> {
    let mut by_id: BTreeMap<i32, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_id.entry(c.id()).or_default().push(c);
    }
    let mut out = Vec::new();
    for (id, mut cs) in by_id {
        cs.sort_by_key(|c| c.lsn);
        let mut open: Option<(&Change, i64)> = None;
        let version = |c: &Change, end: Option<i64>| -> DbzVersion {
            let row = c.after.as_ref().unwrap();
            let (last, email) = (row.last_name.clone(), row.email.clone());
            (id, last, email, c.op.to_string(), c.lsn, end, end.is_none())
        };
        for c in cs {
            if let Some((o, _)) = open.take().filter(|(_, start)| *start != c.lsn) {
                out.push(version(o, Some(c.lsn)));
            }
            open = (c.op != "d").then_some((c, c.lsn));
        }
        if let Some((o, _)) = open {
            out.push(version(o, None));
        }
    }
    out.sort();
    out
}

/// Every version in a history table, sorted.
fn history_rows(table: &Path) -> Vec<DbzVersion> {
    let (_, _, batches) = table_batches(table);
    let mut out = Vec::new();
    for b in &batches {
        let cols = [
            "id",
            "last_name",
            "email",
            "__op",
            "__start_at",
            "__end_at",
            "__is_current",
        ]
        .map(|c| text(b, c));
        let cell = |c: usize, i: usize| cols[c][i].clone();
        for i in 0..b.num_rows() {
            let at = |c: usize| cell(c, i);
            out.push((
                at(0).unwrap().parse().unwrap(),
                at(1).unwrap(),
                at(2),
                at(3).unwrap(),
                at(4).unwrap().parse().unwrap(),
                at(5).map(|e| e.parse().unwrap()),
                at(6).unwrap() == "true",
            ));
        }
    }
    out.sort();
    out
}

/// DuckDB reads the same versions.
fn duckdb_reads_history(table: &Path, want: &[DbzVersion]) {
    let sql = "SELECT id, last_name, email, __op, __start_at, __end_at, __is_current FROM t \
               ORDER BY id, __start_at";
    let Some(duck) = duckdb_read(table, &[], Some(sql)) else {
        assert!(!required(), "DuckDB is required in CI");
        return;
    };
    let mut want = want.to_vec();
    want.sort_by_key(|v| (v.0, v.4));
    let want: Vec<serde_json::Value> = want.iter().map(|v| json!(v)).collect();
    assert_eq!(duck["result"], json!(want), "{sql}");
}

/// A `history` table of the Debezium rows keyed by the row's `id`,
/// ordered by `source.lsn`.
fn history_table() -> String {
    upsert_table(r#""id""#).replace(r#"mode = "upsert""#, r#"mode = "history""#)
}

/// Debezium JSON (both shapes) into `history`, in batches of 40: every
/// version of every row with its start and end LSN, the current one
/// flagged, as computed from the changes; a connector restart's re-sent
/// suffix changes nothing (a change at a version's own LSN replaces it);
/// tombstones (no `id`) and pills are quarantined. DuckDB reads the same.
#[test]
fn json_changes_into_history_keep_every_version() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let changes = history(30, 300, 5);
    let sent = messages(&with_restart(&changes, 200), &json_pills(false), &|c| {
        change_json(c, c.lsn % 3 == 0)
    });
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let config = config_flushing(
        dir.path(),
        &broker.bootstrap(),
        None,
        "json",
        &history_table(),
        40,
    );
    run_ok(&config);
    let want = history_reference(&changes);
    assert!(want.len() > 250, "{}", want.len());
    assert_eq!(history_rows(&dir.path().join("customers")), want);
    duckdb_reads_history(&dir.path().join("customers"), &want);
    check_quarantine_of(dir.path(), &sent, &landed, true);
}

/// Debezium Avro through the registry into `history`: the same.
#[test]
fn avro_changes_into_history_keep_every_version() {
    let mut broker = MockBroker::start();
    broker.create_topic(TOPIC, 2);
    let registry = MockRegistry::start();
    let id = registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO, &[]);
    let changes = history(30, 300, 9);
    let sent = messages(
        &with_restart(&changes, 150),
        &avro_pills(id, register_heartbeat(&registry)),
        &|c| envelope_avro(id, c.op, &c.before, &c.after, c.lsn, c.tx),
    );
    let landed = produce_all(&broker.bootstrap(), &sent);
    let dir = tempfile::tempdir().unwrap();
    let config = config_flushing(
        dir.path(),
        &broker.bootstrap(),
        Some(&registry.url()),
        "avro",
        &history_table(),
        40,
    );
    run_ok(&config);
    let want = history_reference(&changes);
    assert_eq!(history_rows(&dir.path().join("customers")), want);
    duckdb_reads_history(&dir.path().join("customers"), &want);
    check_quarantine_of(dir.path(), &sent, &landed, true);
}
