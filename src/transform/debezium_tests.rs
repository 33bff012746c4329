//! `op = "debezium"` on batches decoded by inlet's own JSON and Avro
//! decoders from Debezium-shaped messages (Postgres connector).

use std::sync::Arc;

use arrow::array::{AsArray as _, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use serde_json::json;

use super::super::{json_input, TransformPlan, Transformed};
use crate::config::TransformSpec;
use crate::decode::avro_enc::Datum;
use crate::decode::{AvroDecoder, JsonDecoder};
use crate::record::Rejections;

const AVRO: &str = include_str!("../../tests/support/debezium_customers.avsc");

fn spec(value: serde_json::Value) -> TransformSpec {
    serde_json::from_value(value).unwrap()
}

fn debezium(options: serde_json::Value) -> TransformSpec {
    let mut v = json!({"op": "debezium"});
    v.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    spec(v)
}

/// The table of the tests: the row's fields and what the entry adds.
fn table() -> Schema {
    crate::schema::parse_ddl(
        "id INT, first_name STRING, last_name STRING, email STRING, __op STRING, \
         __source_lsn BIGINT, __source_table STRING, __ts_ms BIGINT, __txn_id STRING, \
         __txn_total_order BIGINT, __txn_data_collection_order BIGINT",
    )
    .unwrap()
}

fn all_options() -> serde_json::Value {
    json!({"source_fields": ["lsn", "table"], "ts_ms_column": "__ts_ms", "transaction": true})
}

/// A Debezium Postgres connector event, as its JsonConverter writes it
/// (`wrapped`: with `schemas.enable`, i.e. `schema` and `payload`).
fn pg_json(op: &str, before: Option<i32>, after: Option<i32>, lsn: i64, wrapped: bool) -> String {
    let row = |id: Option<i32>| match id {
        None => json!(null),
        Some(id) => json!({
            "id": id, "first_name": format!("Anne{id}"), "last_name": "Kretchmar",
            "email": format!("annek{id}@noanswer.org")
        }),
    };
    let payload = json!({
        "before": row(before),
        "after": row(after),
        "source": {
            "version": "2.7.3.Final", "connector": "postgresql", "name": "dbserver1",
            "ts_ms": 1_700_000_000_000_i64 + lsn, "snapshot": if op == "r" { "true" } else { "false" },
            "db": "postgres", "sequence": format!("[\"{}\",\"{lsn}\"]", lsn - 8),
            "schema": "inventory", "table": "customers", "txId": 770 + lsn / 100,
            "lsn": lsn, "xmin": null
        },
        "op": op,
        "ts_ms": 1_700_000_000_100_i64 + lsn,
        "transaction": if op == "r" { json!(null) } else { json!({
            "id": format!("{}:{lsn}", 770 + lsn / 100), "total_order": lsn % 7 + 1,
            "data_collection_order": lsn % 5 + 1
        }) }
    });
    if !wrapped {
        return payload.to_string();
    }
    let field = |name: &str, ty: &str| json!({"type": ty, "optional": true, "field": name});
    json!({
        "schema": {
            "type": "struct", "optional": false, "name": "dbserver1.inventory.customers.Envelope",
            "version": 1,
            "fields": [
                {"type": "struct", "optional": true, "field": "before",
                 "name": "dbserver1.inventory.customers.Value",
                 "fields": [field("id", "int32"), field("first_name", "string"),
                            field("last_name", "string"), field("email", "string")]},
                {"type": "struct", "optional": true, "field": "after",
                 "name": "dbserver1.inventory.customers.Value",
                 "fields": [field("id", "int32"), field("first_name", "string"),
                            field("last_name", "string"), field("email", "string")]},
                {"type": "struct", "optional": false, "field": "source",
                 "name": "io.debezium.connector.postgresql.Source",
                 "fields": [field("lsn", "int64"), field("txId", "int64")]},
                field("op", "string"), field("ts_ms", "int64")
            ]
        },
        "payload": payload
    })
    .to_string()
}

/// `values` decoded by the JSON decoder with `input`; every one must decode.
fn json_batch(input: Schema, values: &[String]) -> RecordBatch {
    let mut decoder = JsonDecoder::new(Arc::new(input)).unwrap();
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_bytes())).collect();
    let (mut good, mut rejected) = (Vec::new(), Rejections::new());
    let batch = decoder.decode(&values, &mut good, &mut rejected).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    batch
}

fn run(specs: &[TransformSpec], batch: &RecordBatch) -> Transformed {
    let plan = TransformPlan::compile(specs, batch.schema()).unwrap();
    let out = plan.apply(batch).unwrap();
    assert_eq!(out.batch.schema(), *plan.output_schema());
    assert_eq!(out.batch.num_rows(), out.rows.len());
    for (row, _) in &out.rejected {
        assert!(
            out.rows.binary_search(row).is_err(),
            "row {row} kept and rejected"
        );
    }
    assert!(out.rows.len() + out.rejected.len() <= batch.num_rows());
    out
}

/// A column as text (null as `None`).
fn text(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()));
    let column = cast(column, &DataType::Utf8).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

fn names(schema: &SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

#[test]
fn json_with_and_without_schema_payload_unwraps_into_the_row_and_its_op() {
    let entry = debezium(all_options());
    let input = json_input(std::slice::from_ref(&entry), &table());
    let values = vec![
        pg_json("r", None, Some(1), 100, false),
        pg_json("c", None, Some(2), 208, true),
        pg_json("u", Some(2), Some(2), 316, false),
        pg_json("d", Some(1), None, 424, true),
        pg_json("c", None, Some(3), 532, false),
    ];
    let batch = json_batch(input, &values);
    let out = run(&[entry], &batch);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.rows, [0, 1, 2, 3, 4]);
    assert_eq!(names(out.batch.schema_ref()), names(&Arc::new(table())));
    let b = &out.batch;
    assert_eq!(text(b, "id"), some(&["1", "2", "2", "1", "3"]));
    assert_eq!(text(b, "first_name")[3].as_deref(), Some("Anne1"));
    assert_eq!(text(b, "__op"), some(&["r", "c", "u", "d", "c"]));
    assert_eq!(
        text(b, "__source_lsn"),
        some(&["100", "208", "316", "424", "532"])
    );
    assert_eq!(text(b, "__source_table"), some(&["customers"; 5]));
    assert_eq!(text(b, "__ts_ms")[1].as_deref(), Some("1700000000308"));
    assert_eq!(
        text(b, "__txn_id")[0],
        None,
        "a snapshot read has no transaction"
    );
    assert_eq!(text(b, "__txn_id")[2].as_deref(), Some("773:316"));
    assert_eq!(text(b, "__txn_total_order")[2].as_deref(), Some("2"));
    assert_eq!(
        text(b, "__txn_data_collection_order")[2].as_deref(),
        Some("2")
    );
}

#[test]
fn events_that_are_not_row_changes_are_rejected_with_the_reason() {
    let entry = debezium(json!({}));
    let input = json_input(std::slice::from_ref(&entry), &table());
    let values = vec![
        pg_json("c", None, Some(1), 100, false),
        pg_json("t", None, None, 108, false),
        pg_json("m", None, None, 116, true),
        pg_json("x", None, Some(1), 124, false),
        // A heartbeat and a schema change message: no `op`.
        r#"{"ts_ms":1700000000000}"#.to_string(),
        r#"{"schema":{"type":"struct"},"payload":{"source":{"db":"postgres"},"ts_ms":1,"databaseName":"postgres","ddl":"ALTER TABLE customers ADD COLUMN x INT"}}"#.to_string(),
        pg_json("c", None, None, 132, false),
        pg_json("u", Some(1), None, 140, true),
        pg_json("d", None, Some(1), 148, false),
        pg_json("d", Some(1), None, 156, false),
    ];
    let batch = json_batch(input, &values);
    let out = run(&[entry], &batch);
    assert_eq!(out.rows, [0, 9]);
    assert_eq!(text(&out.batch, "__op"), some(&["c", "d"]));
    assert_eq!(text(&out.batch, "id"), some(&["1", "1"]));
    let reasons: Vec<(usize, &str)> = out
        .rejected
        .iter()
        .map(|(r, why)| (*r, why.as_str()))
        .collect();
    let expect = [
        (
            1,
            "truncate event (op `t`): not applied, the table keeps its rows",
        ),
        (2, "logical decoding message (op `m`)"),
        (3, "unknown Debezium op `x`; expected c, u, d or r"),
        (4, "not a Debezium change event: no `op`"),
        (5, "not a Debezium change event: no `op`"),
        (6, "envelope with neither `before` nor `after`"),
        (7, "Debezium `u` event without `after`"),
        (8, "Debezium `d` event without `before`"),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
    for ((row, why), (want_row, want)) in reasons.iter().zip(expect) {
        assert_eq!(*row, want_row);
        assert!(why.starts_with("transforms[0] (debezium): "), "{why}");
        assert!(why.contains(want), "row {row}: {why}");
    }
}

fn pg_source(lsn: i64) -> Datum {
    let null = || Datum::Union(0, Box::new(Datum::Null));
    let long = |v: i64| Datum::Union(1, Box::new(Datum::Long(v)));
    Datum::Record(vec![
        Datum::Str("2.7.3.Final".into()),
        Datum::Str("postgresql".into()),
        Datum::Str("dbserver1".into()),
        Datum::Long(1_700_000_000_000 + lsn),
        // ["string", "null"]: the string branch first.
        Datum::Union(0, Box::new(Datum::Str("false".into()))),
        Datum::Str("postgres".into()),
        Datum::Union(1, Box::new(Datum::Str(format!("[null,\"{lsn}\"]")))),
        Datum::Str("inventory".into()),
        Datum::Str("customers".into()),
        long(771),
        long(lsn),
        null(),
    ])
}

fn pg_row(id: i32, email: Option<&str>) -> Datum {
    Datum::Record(vec![
        Datum::Int(id),
        Datum::Str(format!("Anne{id}")),
        Datum::Str("Kretchmar".into()),
        match email {
            None => Datum::Union(0, Box::new(Datum::Null)),
            Some(e) => Datum::Union(1, Box::new(Datum::Str(e.into()))),
        },
    ])
}

/// A Debezium Postgres envelope in Avro (tests/support/debezium_customers.avsc).
fn pg_avro(op: &str, before: Option<Datum>, after: Option<Datum>, lsn: i64, txn: bool) -> Datum {
    let image = |d: Option<Datum>| match d {
        None => Datum::Union(0, Box::new(Datum::Null)),
        Some(d) => Datum::Union(1, Box::new(d)),
    };
    Datum::Record(vec![
        image(before),
        image(after),
        pg_source(lsn),
        Datum::Str(op.into()),
        Datum::Union(1, Box::new(Datum::Long(1_700_000_000_500 + lsn))),
        if txn {
            Datum::Union(
                1,
                Box::new(Datum::Record(vec![
                    Datum::Str(format!("771:{lsn}")),
                    Datum::Long(lsn / 10),
                    Datum::Long(1),
                ])),
            )
        } else {
            Datum::Union(0, Box::new(Datum::Null))
        },
    ])
}

#[test]
fn avro_envelopes_of_the_postgres_connector_unwrap() {
    let mut decoder = AvroDecoder::new();
    decoder.add_schema(7, AVRO).unwrap();
    let data = [
        pg_avro("r", None, Some(pg_row(1, None)), 10, false),
        pg_avro(
            "u",
            Some(pg_row(1, None)),
            Some(pg_row(1, Some("a@b.c"))),
            20,
            true,
        ),
        pg_avro("d", Some(pg_row(1, Some("a@b.c"))), None, 30, true),
        pg_avro("t", None, None, 40, true),
        pg_avro("c", None, Some(pg_row(2, None)), 50, true),
    ];
    let framed: Vec<Vec<u8>> = data.iter().map(|d| d.framed(7)).collect();
    let messages: Vec<(usize, &[u8])> = framed
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.as_slice()))
        .collect();
    let (mut good, mut rejected) = (Vec::new(), Rejections::new());
    let batch = decoder
        .decode(7, &messages, &mut good, &mut rejected)
        .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let mut options = all_options();
    options["source_column"] = json!("__source");
    let out = run(&[debezium(options)], &batch);
    assert_eq!(out.rows, [0, 1, 2, 4]);
    assert_eq!(out.rejected.len(), 1);
    assert!(out.rejected[0].1.contains("truncate"), "{:?}", out.rejected);
    let b = &out.batch;
    assert_eq!(
        names(b.schema_ref())[..6],
        [
            "id",
            "first_name",
            "last_name",
            "email",
            "__op",
            "__source_lsn"
        ]
    );
    assert_eq!(text(b, "id"), some(&["1", "1", "1", "2"]));
    assert_eq!(text(b, "__op"), some(&["r", "u", "d", "c"]));
    // The delete carries the before image.
    assert_eq!(
        text(b, "email"),
        vec![None, Some("a@b.c".into()), Some("a@b.c".into()), None]
    );
    assert_eq!(text(b, "__source_lsn"), some(&["10", "20", "30", "50"]));
    assert_eq!(text(b, "__ts_ms")[3].as_deref(), Some("1700000000550"));
    assert_eq!(
        text(b, "__txn_id"),
        vec![
            None,
            Some("771:20".into()),
            Some("771:30".into()),
            Some("771:50".into())
        ]
    );
    let source = b.column_by_name("__source").unwrap().as_struct();
    assert_eq!(
        text(&RecordBatch::from(source.clone()), "connector"),
        some(&["postgresql"; 4])
    );
    assert!(matches!(
        b.schema().field_with_name("__source").unwrap().data_type(),
        DataType::Struct(f) if f.len() == 12
    ));
}

#[test]
fn later_transforms_see_the_unwrapped_columns_and_rows_map_back() {
    let entry = debezium(json!({"op_column": "change"}));
    let table = crate::schema::parse_ddl("id INT, first_name STRING, change STRING").unwrap();
    let input = json_input(std::slice::from_ref(&entry), &table);
    let values = vec![
        pg_json("r", None, Some(1), 100, false),
        pg_json("t", None, None, 108, false),
        pg_json("c", None, Some(2), 116, false),
        pg_json("d", Some(2), None, 124, true),
    ];
    let batch = json_batch(input, &values);
    let specs = [
        entry,
        spec(json!({"op": "filter", "expr": "change <> 'r'"})),
        spec(json!({"op": "rename", "columns": {"first_name": "name"}})),
    ];
    let out = run(&specs, &batch);
    // Row 0 is filtered out, row 1 (a truncate) rejected.
    assert_eq!(out.rows, [2, 3]);
    assert_eq!(out.rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [1]);
    assert_eq!(text(&out.batch, "name"), some(&["Anne2", "Anne2"]));
    assert_eq!(text(&out.batch, "change"), some(&["c", "d"]));
}

#[test]
fn the_json_input_is_the_envelope_of_the_table_less_the_added_columns() {
    let entry = debezium(all_options());
    let input = json_input(std::slice::from_ref(&entry), &table());
    let top = names(&Arc::new(input.clone()));
    assert_eq!(
        top,
        [
            "before",
            "after",
            "source",
            "op",
            "ts_ms",
            "transaction",
            "payload"
        ]
    );
    let DataType::Struct(after) = input.field_with_name("after").unwrap().data_type() else {
        panic!("after is a struct")
    };
    let after: Vec<&str> = after.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(after, ["id", "first_name", "last_name", "email"]);
    // Without a debezium entry first, the input is the table.
    assert_eq!(json_input(&[], &table()), table());
    // A source field outside the Postgres/MySQL list takes its column's type;
    // a source column declared as a STRUCT is the source's shape.
    let entry = debezium(json!({"source_fields": ["change_lsn"], "source_column": "src"}));
    let table = crate::schema::parse_ddl(
        "id INT, __op STRING, __source_change_lsn STRING, src STRUCT<commit_lsn: STRING>",
    )
    .unwrap();
    let input = json_input(std::slice::from_ref(&entry), &table);
    let source = input
        .field_with_name("source")
        .unwrap()
        .data_type()
        .to_string();
    assert!(
        source.contains("commit_lsn") && source.contains("change_lsn"),
        "{source}"
    );
    let plan = TransformPlan::compile(&[entry], Arc::new(input)).unwrap();
    assert_eq!(
        names(plan.output_schema()),
        ["id", "__op", "__source_change_lsn", "src"]
    );
}

#[test]
fn envelopes_that_do_not_fit_are_configuration_errors() {
    let err = |entry: serde_json::Value, ddl: &str| {
        let input = Arc::new(crate::schema::parse_ddl(ddl).unwrap());
        TransformPlan::compile(&[debezium(entry)], input)
            .unwrap_err()
            .to_string()
    };
    let row = "STRUCT<id: INT, name: STRING>";
    let e = err(json!({}), "id INT, name STRING");
    assert!(
        e.starts_with("transforms[0] (debezium): not a Debezium envelope: no `op`")
            && e.contains("columns are: id, name"),
        "{e}"
    );
    let e = err(
        json!({}),
        &format!("before STRUCT<id: BIGINT>, after {row}, op STRING"),
    );
    assert!(e.contains("`before`") && e.contains("differ"), "{e}");
    let e = err(json!({}), &format!("after {row}, op STRING"));
    assert!(e.contains("needs `before` and `after`"), "{e}");
    let e = err(json!({}), &format!("before {row}, after {row}, op INT"));
    assert!(e.contains("`op` is Int32, not a string"), "{e}");
    let envelope = format!("before {row}, after {row}, op STRING, source STRUCT<lsn: BIGINT>");
    let e = err(json!({"source_fields": ["LSN"]}), &envelope);
    assert!(
        e.contains("source field `LSN` not found (did you mean `lsn`?)"),
        "{e}"
    );
    let e = err(json!({"ts_ms_column": "ts"}), &envelope);
    assert!(e.contains("no `ts_ms`"), "{e}");
    // The op column may not take a row field's name.
    let e = err(json!({"op_column": "name"}), &envelope);
    assert!(e.contains("name"), "{e}");
    // Without transaction metadata in the schema, its columns are null.
    let input = Arc::new(crate::schema::parse_ddl(&envelope).unwrap());
    let plan = TransformPlan::compile(&[debezium(json!({"transaction": true}))], input).unwrap();
    assert_eq!(
        names(plan.output_schema()),
        [
            "id",
            "name",
            "__op",
            "__txn_id",
            "__txn_total_order",
            "__txn_data_collection_order"
        ]
    );
}

#[test]
fn mysql_source_fields_come_from_the_default_json_envelope() {
    let entry = debezium(json!({"source_fields": ["file", "pos", "gtid", "server_id", "row"]}));
    let table = crate::schema::parse_ddl(
        "id INT, first_name STRING, __op STRING, __source_file STRING, __source_pos BIGINT, \
         __source_gtid STRING, __source_server_id BIGINT, __source_row INT",
    )
    .unwrap();
    let input = json_input(std::slice::from_ref(&entry), &table);
    let event = |op: &str, pos: i64, before: serde_json::Value, after: serde_json::Value| {
        json!({
            "before": before, "after": after,
            "source": {
                "version": "2.7.3.Final", "connector": "mysql", "name": "mysql-server-1",
                "ts_ms": 1_465_581_029_100_i64, "snapshot": "false", "db": "inventory",
                "table": "customers", "server_id": 223_344,
                "gtid": "c7a5e2f1-3e4c-11ef-9b0c-0242ac120002:23", "file": "mysql-bin.000003",
                "pos": pos, "row": 0, "thread": 7, "query": null
            },
            "op": op, "ts_ms": 1_465_581_029_523_i64, "transaction": null
        })
        .to_string()
    };
    let row = |id: i32| json!({"id": id, "first_name": "Anne", "last_name": "Kretchmar"});
    let values = vec![
        event("c", 484, json!(null), row(1004)),
        event("d", 805, row(1004), json!(null)),
    ];
    let out = run(&[entry], &json_batch(input, &values));
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let b = &out.batch;
    assert_eq!(text(b, "id"), some(&["1004", "1004"]));
    assert_eq!(text(b, "__op"), some(&["c", "d"]));
    assert_eq!(text(b, "__source_file"), some(&["mysql-bin.000003"; 2]));
    assert_eq!(text(b, "__source_pos"), some(&["484", "805"]));
    assert_eq!(text(b, "__source_server_id"), some(&["223344"; 2]));
    assert_eq!(text(b, "__source_row"), some(&["0", "0"]));
    assert_eq!(
        b.schema()
            .field_with_name("__source_row")
            .unwrap()
            .data_type(),
        &DataType::Int32
    );
}
