use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray as _, BinaryArray, BooleanArray, Date32Array, Float64Array,
    Int32Array, Int64Array, ListArray, StringArray, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Fields, Int32Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use arrow::record_batch::RecordBatch;
use serde_json::json;

use super::*;
use crate::fault::{Classify as _, Fault};

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn strs(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn spec(value: serde_json::Value) -> TransformSpec {
    serde_json::from_value(value).unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Compiles and applies, checking the invariants every result must hold.
fn run(specs: &[TransformSpec], input: &RecordBatch) -> Transformed {
    let plan = TransformPlan::compile(specs, input.schema()).unwrap();
    let out = plan.apply(input).unwrap();
    check(&plan, input, &out);
    out
}

fn check(plan: &TransformPlan, input: &RecordBatch, out: &Transformed) {
    assert_eq!(out.batch.schema(), *plan.output_schema());
    assert_eq!(out.batch.num_rows(), out.rows.len());
    assert!(out.rows.windows(2).all(|w| w[0] < w[1]), "rows ascending");
    assert!(
        out.rejected.windows(2).all(|w| w[0].0 < w[1].0),
        "rejected ascending, once each"
    );
    for (row, _) in &out.rejected {
        assert!(*row < input.num_rows());
        assert!(
            out.rows.binary_search(row).is_err(),
            "row {row} both kept and rejected"
        );
    }
    assert!(out.rows.iter().all(|r| *r < input.num_rows()));
}

fn compile_err(specs: &[TransformSpec], input: &RecordBatch) -> String {
    TransformPlan::compile(specs, input.schema())
        .unwrap_err()
        .to_string()
}

/// A column as strings (Arrow's display of each value).
fn text(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let column = cast(column, &DataType::Utf8).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn owned(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

fn micros(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect()
}

fn names(schema: &Schema) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

fn rejected_rows(out: &Transformed) -> Vec<usize> {
    out.rejected.iter().map(|r| r.0).collect()
}

// ---------------------------------------------------------------- config

#[test]
fn specs_parse_from_toml_with_defaults() {
    #[derive(serde::Deserialize)]
    struct Table {
        transforms: Vec<TransformSpec>,
    }
    let toml = r#"
        [[transforms]]
        op = "rename"
        columns = { userId = "user_id", "payload.ts" = "event_ts" }

        [[transforms]]
        op = "snake_case"

        [[transforms]]
        op = "cast"
        columns = { amount = "DECIMAL(10,2)" }

        [[transforms]]
        op = "timestamp"
        column = "ts"

        [[transforms]]
        op = "flatten"

        [[transforms]]
        op = "drop"
        columns = ["x"]

        [[transforms]]
        op = "mask"
        columns = ["card"]

        [[transforms]]
        op = "hash"
        columns = ["email"]
        salt_env = "SALT"

        [[transforms]]
        op = "derive"
        column = "d"
        expr = "to_date(ts)"

        [[transforms]]
        op = "sql"
        query = "SELECT * FROM input"

        [[transforms]]
        op = "filter"
        expr = "a > 1"
    "#;
    use figment::providers::Format as _;
    let table: Table = figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .unwrap();
    let t = table.transforms;
    assert_eq!(t.len(), 11);
    assert_eq!(t[1], TransformSpec::SnakeCase { nested: true });
    assert_eq!(
        t[3],
        TransformSpec::Timestamp {
            column: "ts".into(),
            from: TimestampFrom::String,
            format: None,
            into: None
        }
    );
    assert_eq!(
        t[4],
        TransformSpec::Flatten {
            separator: "_".into(),
            columns: None
        }
    );
    let ops: Vec<&str> = t.iter().map(|s| s.op()).collect();
    assert_eq!(
        ops,
        [
            "rename",
            "snake_case",
            "cast",
            "timestamp",
            "flatten",
            "drop",
            "mask",
            "hash",
            "derive",
            "sql",
            "filter"
        ]
    );

    let unknown = serde_json::from_value::<TransformSpec>(
        json!({"op": "drop", "columns": ["x"], "colums": ["y"]}),
    );
    assert!(unknown.unwrap_err().to_string().contains("colums"));
    let bad_op = serde_json::from_value::<TransformSpec>(json!({"op": "explode", "columns": []}));
    assert!(bad_op.unwrap_err().to_string().contains("explode"));
    let epoch = spec(json!({"op": "timestamp", "column": "t", "from": "epoch_millis"}));
    assert!(matches!(
        epoch,
        TransformSpec::Timestamp {
            from: TimestampFrom::EpochMillis,
            ..
        }
    ));
}

#[test]
fn no_transforms_pass_batches_through() {
    let input = batch(vec![(
        "a",
        Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
    )]);
    let plan = TransformPlan::compile(&[], input.schema()).unwrap();
    assert!(plan.is_empty());
    let out = plan.apply(&input).unwrap();
    assert_eq!(out.batch, input);
    assert_eq!(out.rows, [0, 1]);
    assert!(out.rejected.is_empty());
}

#[test]
fn a_batch_of_another_schema_is_an_error() {
    let input = batch(vec![("a", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]);
    let plan =
        TransformPlan::compile(&[TransformSpec::Drop { columns: vec![] }], input.schema()).unwrap();
    let other = batch(vec![("a", strs(&[Some("x")]))]);
    let err = plan.apply(&other).unwrap_err();
    assert!(matches!(err, TransformError::Eval { .. }), "{err}");
}

// ---------------------------------------------------------------- names

#[test]
fn snake_case_names() {
    for (from, to) in [
        ("userName", "user_name"),
        ("HTTPStatus", "http_status"),
        ("Event Time", "event_time"),
        ("already_snake", "already_snake"),
        ("field2Name", "field2_name"),
        ("v2", "v2"),
        ("ABC", "abc"),
        ("getHTTPResponseCode", "get_http_response_code"),
        ("_id", "_id"),
        ("__meta", "__meta"),
        ("a--b", "a_b"),
        ("trailing ", "trailing"),
        ("kebab-case-name", "kebab_case_name"),
        ("Straße", "straße"),
        ("IDs", "i_ds"),
    ] {
        assert_eq!(names::to_snake_case(from), to, "{from}");
    }
}

fn nested_batch() -> RecordBatch {
    // payload: struct<userId: int, Geo: struct<lat: double, lonDeg: double>>, with a null payload.
    let geo_fields = Fields::from(vec![
        Field::new("lat", DataType::Float64, true),
        Field::new("lonDeg", DataType::Float64, true),
    ]);
    let geo = StructArray::new(
        geo_fields.clone(),
        vec![
            Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), None])) as ArrayRef,
            Arc::new(Float64Array::from(vec![Some(10.0), Some(20.0), Some(30.0)])),
        ],
        Some(NullBuffer::from(vec![true, true, false])),
    );
    let payload_fields = Fields::from(vec![
        Field::new("userId", DataType::Int32, true),
        Field::new("Geo", DataType::Struct(geo_fields), true),
    ]);
    let payload = StructArray::new(
        payload_fields,
        vec![
            Arc::new(Int32Array::from(vec![Some(7), Some(8), Some(9)])) as ArrayRef,
            Arc::new(geo),
        ],
        Some(NullBuffer::from(vec![true, false, true])),
    );
    // tags: list<struct<tagName: string>>
    let tag_fields = Fields::from(vec![Field::new("tagName", DataType::Utf8, true)]);
    let tag_values = StructArray::new(
        tag_fields.clone(),
        vec![strs(&[Some("a"), Some("b"), Some("c")])],
        None,
    );
    let tags = ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(tag_fields), true)),
        arrow::buffer::OffsetBuffer::from_lengths([2, 0, 1]),
        Arc::new(tag_values),
        Some(NullBuffer::from(vec![true, false, true])),
    );
    batch(vec![
        (
            "eventId",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ),
        ("payload", Arc::new(payload)),
        ("tags", Arc::new(tags)),
    ])
}

#[test]
fn rename_top_level_nested_and_swapped() {
    let input = batch(vec![
        ("a", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        ("b", strs(&[Some("x"), None])),
    ]);
    let out = run(
        &[TransformSpec::Rename {
            columns: map(&[("a", "b"), ("b", "a")]),
        }],
        &input,
    );
    assert_eq!(names(&out.batch.schema()), ["b", "a"]);
    assert_eq!(out.batch.column(0).data_type(), &DataType::Int32);
    assert!(
        Arc::ptr_eq(out.batch.column(0), input.column(0)),
        "not copied"
    );

    let input = nested_batch();
    let out = run(
        &[TransformSpec::Rename {
            columns: map(&[
                ("eventId", "event_id"),
                ("payload.userId", "user_id"),
                ("payload.Geo.lonDeg", "payload.Geo.lon"),
            ]),
        }],
        &input,
    );
    let schema = out.batch.schema();
    assert_eq!(names(&schema), ["event_id", "payload", "tags"]);
    let DataType::Struct(payload) = schema.field(1).data_type() else {
        panic!()
    };
    assert_eq!(payload[0].name(), "user_id");
    let DataType::Struct(geo) = payload[1].data_type() else {
        panic!()
    };
    assert_eq!(geo[1].name(), "lon");
    let p = out.batch.column(1).as_struct();
    assert!(p.is_null(1), "struct nulls kept");
    assert_eq!(p.column(0).as_primitive::<Int32Type>().value(2), 9);
}

#[test]
fn rename_errors_name_the_transform_and_the_fix() {
    let input = batch(vec![
        ("amount", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        ("name", strs(&[Some("x")])),
    ]);
    let drop = TransformSpec::Drop { columns: vec![] };
    let err = compile_err(
        &[
            drop.clone(),
            TransformSpec::Rename {
                columns: map(&[("amont", "total")]),
            },
        ],
        &input,
    );
    assert_eq!(
        err,
        "transforms[1] (rename): column `amont` not found; columns are: amount, name"
    );
    let err = compile_err(
        &[TransformSpec::Rename {
            columns: map(&[("Amount", "total")]),
        }],
        &input,
    );
    assert!(err.contains("did you mean `amount`?"), "{err}");
    let err = compile_err(
        &[TransformSpec::Rename {
            columns: map(&[("amount", "name")]),
        }],
        &input,
    );
    assert!(
        err.starts_with("transforms[0] (rename): two columns would be named `name`"),
        "{err}"
    );
    let err = compile_err(
        &[TransformSpec::Rename {
            columns: map(&[("name.name", "n")]),
        }],
        &input,
    );
    assert!(err.contains("`name` is Utf8, not a struct"), "{err}");
}

#[test]
fn snake_case_renames_nested_fields_and_keeps_buffers() {
    let input = nested_batch();
    let out = run(&[spec(json!({"op": "snake_case"}))], &input);
    let schema = out.batch.schema();
    assert_eq!(names(&schema), ["event_id", "payload", "tags"]);
    let payload = out.batch.column(1).as_struct();
    assert_eq!(payload.column_names(), ["user_id", "geo"]);
    assert_eq!(
        payload.column(1).as_struct().column_names(),
        ["lat", "lon_deg"]
    );
    assert!(payload.is_null(1));
    let tags = out.batch.column(2).as_list::<i32>();
    assert_eq!(tags.values().as_struct().column_names(), ["tag_name"]);
    assert!(tags.is_null(1));
    assert_eq!(
        tags.value(2)
            .as_struct()
            .column(0)
            .as_string::<i32>()
            .value(0),
        "c"
    );
    // The leaf arrays are the same buffers.
    let before = input.column(1).as_struct().column(0);
    assert!(Arc::ptr_eq(before, payload.column(0)));

    let out = run(
        &[spec(json!({"op": "snake_case", "nested": false}))],
        &input,
    );
    assert_eq!(
        out.batch.column(1).as_struct().column_names(),
        ["userId", "Geo"]
    );

    let clash = batch(vec![
        ("userName", strs(&[Some("a")])),
        ("user_name", strs(&[Some("b")])),
    ]);
    let err = compile_err(&[spec(json!({"op": "snake_case"}))], &clash);
    assert!(
        err.starts_with(
            "transforms[0] (snake_case): `userName` and `user_name` would both become `user_name`"
        ),
        "{err}"
    );
}

#[test]
fn flatten_structs_recursively_with_parent_nulls() {
    let input = nested_batch();
    let out = run(&[spec(json!({"op": "flatten"}))], &input);
    assert_eq!(
        names(&out.batch.schema()),
        [
            "eventId",
            "payload_userId",
            "payload_Geo_lat",
            "payload_Geo_lonDeg",
            "tags"
        ]
    );
    // payload is null in row 1; Geo is null in row 2.
    assert_eq!(
        text(&out.batch, "payload_userId"),
        owned(&[Some("7"), None, Some("9")])
    );
    assert_eq!(
        text(&out.batch, "payload_Geo_lonDeg"),
        owned(&[Some("10.0"), None, None])
    );
    assert_eq!(
        text(&out.batch, "payload_Geo_lat"),
        owned(&[Some("1.0"), None, None])
    );

    let out = run(
        &[spec(
            json!({"op": "flatten", "separator": "__", "columns": ["payload"]}),
        )],
        &input,
    );
    assert_eq!(out.batch.schema().field(2).name(), "payload__Geo__lat");

    let err = compile_err(
        &[spec(json!({"op": "flatten", "columns": ["eventId"]}))],
        &input,
    );
    assert!(err.contains("`eventId` is Int64, not a struct"), "{err}");

    let clash = RecordBatch::try_from_iter(vec![
        ("a_b", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        (
            "a",
            Arc::new(StructArray::from(vec![(
                Arc::new(Field::new("b", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![2])) as ArrayRef,
            )])),
        ),
    ])
    .unwrap();
    let err = compile_err(&[spec(json!({"op": "flatten"}))], &clash);
    assert!(err.contains("two columns would be named `a_b`"), "{err}");
}

#[test]
fn drop_columns() {
    let input = batch(vec![
        ("a", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        ("b", strs(&[Some("x")])),
    ]);
    let out = run(&[spec(json!({"op": "drop", "columns": ["a"]}))], &input);
    assert_eq!(names(&out.batch.schema()), ["b"]);
    let err = compile_err(&[spec(json!({"op": "drop", "columns": ["c"]}))], &input);
    assert_eq!(
        err,
        "transforms[0] (drop): column `c` not found; columns are: a, b"
    );
    let err = compile_err(
        &[spec(json!({"op": "drop", "columns": ["a", "b"]}))],
        &input,
    );
    assert!(err.contains("no column would be left"), "{err}");
}

// ---------------------------------------------------------------- cast

#[test]
fn cast_rejects_values_that_do_not_convert() {
    let input = batch(vec![
        (
            "id",
            strs(&[Some("1"), Some("x"), None, Some("1.5"), Some("40")]),
        ),
        (
            "amount",
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(2.5),
            ])) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int32Array::from(vec![
                Some(1),
                None,
                Some(3),
                Some(4),
                Some(5),
            ])) as ArrayRef,
        ),
    ]);
    let out = run(
        &[TransformSpec::Cast {
            columns: map(&[("id", "INT"), ("amount", "BIGINT"), ("n", "BIGINT")]),
        }],
        &input,
    );
    // "x" and "1.5" do not parse; 2.5 is not a whole number.
    assert_eq!(rejected_rows(&out), [1, 3, 4]);
    assert_eq!(out.rows, [0, 2]);
    assert!(
        out.rejected[0]
            .1
            .starts_with("transforms[0] (cast): `id` value `x` does not convert to INT"),
        "{}",
        out.rejected[0].1
    );
    assert!(
        out.rejected[2].1.contains("`amount` value `2.5`"),
        "{}",
        out.rejected[2].1
    );
    let schema = out.batch.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int32);
    assert_eq!(schema.field(1).data_type(), &DataType::Int64);
    assert_eq!(schema.field(2).data_type(), &DataType::Int64);
    assert_eq!(text(&out.batch, "id"), owned(&[Some("1"), None]));
    assert_eq!(text(&out.batch, "amount"), owned(&[Some("1"), Some("3")]));
    assert_eq!(text(&out.batch, "n"), owned(&[Some("1"), Some("3")]));
}

#[test]
fn cast_overflow_decimals_dates_and_timestamps() {
    let input = batch(vec![
        (
            "big",
            Arc::new(Int64Array::from(vec![1, 3_000_000_000, -5])) as ArrayRef,
        ),
        (
            "price",
            strs(&[Some("12.345"), Some("1.2"), Some("123456789.5")]),
        ),
        ("day", strs(&[Some("2024-01-02"), Some("2024-02-30"), None])),
        (
            "at",
            strs(&[
                Some("2024-01-02 03:04:05"),
                None,
                Some("2024-01-02T03:04:05+02:00"),
            ]),
        ),
        ("ok", strs(&[Some("true"), Some("no"), Some("1")])),
    ]);
    let out = run(
        &[TransformSpec::Cast {
            columns: map(&[
                ("big", "INT"),
                ("price", "DECIMAL(10,2)"),
                ("day", "DATE"),
                ("at", "TIMESTAMP"),
                ("ok", "BOOLEAN"),
            ]),
        }],
        &input,
    );
    // Row 1: INT overflow (and an invalid date); row 2: decimal overflow.
    assert_eq!(rejected_rows(&out), [1, 2]);
    assert_eq!(out.rows, [0]);
    assert!(out.rejected[0]
        .1
        .contains("`big` value `3000000000` does not convert to INT"));
    assert!(out.rejected[1]
        .1
        .contains("`price` value `123456789.5` does not convert to DECIMAL(10,2)"));
    assert_eq!(
        text(&out.batch, "price"),
        owned(&[Some("12.35")]),
        "rounds half-up like Spark"
    );
    assert_eq!(
        out.batch
            .schema()
            .field_with_name("at")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(micros(&out.batch, "at"), [Some(1_704_164_645_000_000)]);
    assert_eq!(text(&out.batch, "day"), owned(&[Some("2024-01-02")]));
    assert_eq!(text(&out.batch, "ok"), owned(&[Some("true")]));

    let t = batch(vec![("at", strs(&[Some("2024-01-02T03:04:05+02:00")]))]);
    let out = run(
        &[TransformSpec::Cast {
            columns: map(&[("at", "TIMESTAMP")]),
        }],
        &t,
    );
    assert_eq!(micros(&out.batch, "at"), [Some(1_704_157_445_000_000)]);
}

#[test]
fn cast_widening_keeps_every_row() {
    let input = batch(vec![
        (
            "n",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(i32::MAX)])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(Date32Array::from(vec![Some(0), None, Some(19_000)])) as ArrayRef,
        ),
    ]);
    let out = run(
        &[TransformSpec::Cast {
            columns: map(&[("n", "BIGINT"), ("d", "TIMESTAMP")]),
        }],
        &input,
    );
    assert!(out.rejected.is_empty());
    assert_eq!(out.rows, [0, 1, 2]);
    assert_eq!(
        text(&out.batch, "n"),
        owned(&[Some("1"), None, Some("2147483647")])
    );
    assert_eq!(
        micros(&out.batch, "d"),
        [Some(0), None, Some(19_000 * 86_400_000_000)]
    );
}

#[test]
fn cast_compile_errors() {
    let input = batch(vec![
        ("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("s", strs(&[Some("x")])),
    ]);
    let err = compile_err(
        &[TransformSpec::Cast {
            columns: map(&[("s", "INTEGR")]),
        }],
        &input,
    );
    assert!(
        err.starts_with("transforms[0] (cast): `INTEGR` is not a type"),
        "{err}"
    );
    let err = compile_err(
        &[TransformSpec::Cast {
            columns: map(&[("n", "TIMESTAMP")]),
        }],
        &input,
    );
    assert!(err.contains("from = \"epoch_seconds\""), "{err}");
    let err = compile_err(
        &[TransformSpec::Cast {
            columns: map(&[("m", "INT")]),
        }],
        &input,
    );
    assert_eq!(
        err,
        "transforms[0] (cast): column `m` not found; columns are: n, s"
    );
}

// ---------------------------------------------------------------- timestamp

#[test]
fn timestamp_from_iso_strings() {
    let input = batch(vec![(
        "ts",
        strs(&[
            Some("2024-01-02T03:04:05Z"),
            Some("2024-01-02 03:04:05"),
            Some("2024-01-02T03:04:05.123456+01:00"),
            None,
            Some("yesterday"),
            Some("2024-01-02"),
            Some("2024-01-02T03:04:05.5-0100"),
        ]),
    )]);
    let out = run(&[spec(json!({"op": "timestamp", "column": "ts"}))], &input);
    assert_eq!(rejected_rows(&out), [4]);
    assert_eq!(
        out.rejected[0].1,
        "transforms[0] (timestamp): `ts` value `yesterday` is not an RFC 3339 / ISO 8601 timestamp such as 2024-01-02T03:04:05Z"
    );
    let base = 1_704_164_645_000_000;
    assert_eq!(
        micros(&out.batch, "ts"),
        [
            Some(base),
            Some(base),
            Some(base - 3_600_000_000 + 123_456),
            None,
            Some(1_704_153_600_000_000),
            Some(base + 3_600_000_000 + 500_000)
        ]
    );
    assert_eq!(
        out.batch.schema().field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
}

#[test]
fn timestamp_with_format_and_into() {
    let input = batch(vec![
        (
            "raw",
            strs(&[Some("02/01/2024 03:04:05"), Some("2024-01-02"), None]),
        ),
        (
            "other",
            Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef,
        ),
    ]);
    let out = run(
        &[spec(
            json!({"op": "timestamp", "column": "raw", "format": "%d/%m/%Y %H:%M:%S", "into": "event_time"}),
        )],
        &input,
    );
    assert_eq!(names(&out.batch.schema()), ["raw", "other", "event_time"]);
    assert_eq!(rejected_rows(&out), [1]);
    assert!(out.rejected[0]
        .1
        .contains("is not a timestamp in the format `%d/%m/%Y %H:%M:%S`"));
    assert_eq!(
        micros(&out.batch, "event_time"),
        [Some(1_704_164_645_000_000), None]
    );

    // With an offset, and a date-only pattern.
    let input = batch(vec![
        ("a", strs(&[Some("2024-01-02 03:04 +0200")])),
        ("b", strs(&[Some("20240102")])),
    ]);
    let out = run(
        &[
            spec(json!({"op": "timestamp", "column": "a", "format": "%Y-%m-%d %H:%M %z"})),
            spec(json!({"op": "timestamp", "column": "b", "format": "%Y%m%d"})),
        ],
        &input,
    );
    assert_eq!(micros(&out.batch, "a"), [Some(1_704_157_440_000_000)]);
    assert_eq!(micros(&out.batch, "b"), [Some(1_704_153_600_000_000)]);

    let err = compile_err(
        &[spec(
            json!({"op": "timestamp", "column": "a", "format": "%Q"}),
        )],
        &input,
    );
    assert!(err.contains("not a valid chrono strftime pattern"), "{err}");
}

#[test]
fn timestamp_from_epochs() {
    let input = batch(vec![
        (
            "s",
            Arc::new(Int64Array::from(vec![
                Some(1_704_164_645),
                None,
                Some(i64::MAX),
            ])) as ArrayRef,
        ),
        (
            "ms",
            strs(&[Some("1704164645123"), Some("12x"), Some("1704164645123.5")]),
        ),
        (
            "us",
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(2.0),
                Some(f64::NAN),
            ])) as ArrayRef,
        ),
    ]);
    let out = run(
        &[
            spec(json!({"op": "timestamp", "column": "s", "from": "epoch_seconds"})),
            spec(json!({"op": "timestamp", "column": "ms", "from": "epoch_millis"})),
            spec(
                json!({"op": "timestamp", "column": "us", "from": "epoch_micros", "into": "us_ts"}),
            ),
        ],
        &input,
    );
    // Row 1: "12x"; row 2: i64::MAX seconds overflows.
    assert_eq!(rejected_rows(&out), [1, 2]);
    assert!(
        out.rejected[0]
            .1
            .starts_with("transforms[1] (timestamp): `ms` value `12x`"),
        "{}",
        out.rejected[0].1
    );
    assert!(
        out.rejected[1].1.starts_with("transforms[0] (timestamp)"),
        "{}",
        out.rejected[1].1
    );
    assert_eq!(micros(&out.batch, "s"), [Some(1_704_164_645_000_000)]);
    assert_eq!(micros(&out.batch, "ms"), [Some(1_704_164_645_123_000)]);
    assert_eq!(micros(&out.batch, "us_ts"), [Some(2)]);

    let fraction = batch(vec![("ms", strs(&[Some("1704164645123.5")]))]);
    let out = run(
        &[spec(
            json!({"op": "timestamp", "column": "ms", "from": "epoch_millis"}),
        )],
        &fraction,
    );
    assert_eq!(micros(&out.batch, "ms"), [Some(1_704_164_645_123_500)]);

    let err = compile_err(&[spec(json!({"op": "timestamp", "column": "s"}))], &input);
    assert!(
        err.contains("not a string; for epoch numbers set from = \"epoch_seconds\""),
        "{err}"
    );
    let err = compile_err(
        &[spec(
            json!({"op": "timestamp", "column": "s", "from": "epoch_seconds", "format": "%s"}),
        )],
        &input,
    );
    assert!(err.contains("`format` only applies"), "{err}");
}

// ---------------------------------------------------------------- mask, hash

#[test]
fn mask_keeps_nulls() {
    let input = batch(vec![
        ("card", strs(&[Some("4111"), None, Some("")])),
        (
            "pin",
            Arc::new(Int32Array::from(vec![Some(1), Some(2), None])) as ArrayRef,
        ),
    ]);
    let out = run(
        &[
            spec(json!({"op": "mask", "columns": ["card"]})),
            spec(json!({"op": "mask", "columns": ["pin"], "with": "x"})),
        ],
        &input,
    );
    assert_eq!(
        text(&out.batch, "card"),
        owned(&[Some("****"), None, Some("****")])
    );
    assert_eq!(
        text(&out.batch, "pin"),
        owned(&[Some("x"), Some("x"), None])
    );
    assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Utf8);
}

#[test]
fn hash_is_sha256_hex_deterministic_and_salted() {
    let input = batch(vec![
        ("email", strs(&[Some("abc"), None, Some("abc")])),
        (
            "n",
            Arc::new(Int64Array::from(vec![Some(42), Some(42), None])) as ArrayRef,
        ),
        (
            "bytes",
            Arc::new(BinaryArray::from(vec![Some(&[0u8, 1][..]), None, None])) as ArrayRef,
        ),
    ]);
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let n42 = "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049";
    let bytes = "b413f47d13ee2fe6c845b2ee141af81de858df4ec549a58b7970bb96645bc8d2";
    let plain = spec(json!({"op": "hash", "columns": ["email", "n", "bytes"]}));
    let out = run(std::slice::from_ref(&plain), &input);
    assert_eq!(
        text(&out.batch, "email"),
        owned(&[Some(abc), None, Some(abc)])
    );
    assert_eq!(text(&out.batch, "n"), owned(&[Some(n42), Some(n42), None]));
    assert_eq!(text(&out.batch, "bytes"), owned(&[Some(bytes), None, None]));
    // Same on another compile and another batch.
    let again = run(&[plain], &input.slice(2, 1));
    assert_eq!(text(&again.batch, "email"), owned(&[Some(abc)]));

    let salted = TransformSpec::Hash {
        columns: vec!["email".into(), "n".into()],
        salt: Some("pepper".into()),
        salt_env: None,
    };
    let out = run(std::slice::from_ref(&salted), &input);
    let pepper_abc = "fadf7b97406e1eaa259a82e26e6839e564c37c256876e060e17838c86b7275ef";
    let pepper_42 = "93ca73bec2907ec825519db1f7ee28cb033d71c83d14b76ef78b0c4e64566e6e";
    assert_eq!(text(&out.batch, "email")[0].as_deref(), Some(pepper_abc));
    assert_eq!(text(&out.batch, "n")[0].as_deref(), Some(pepper_42));

    // From the environment.
    std::env::set_var("INLET_TEST_TRANSFORM_SALT", "pepper");
    let from_env =
        spec(json!({"op": "hash", "columns": ["email"], "salt_env": "INLET_TEST_TRANSFORM_SALT"}));
    let out = run(&[from_env], &input);
    assert_eq!(text(&out.batch, "email")[0].as_deref(), Some(pepper_abc));
    let missing =
        spec(json!({"op": "hash", "columns": ["email"], "salt_env": "INLET_TEST_NO_SUCH_SALT"}));
    let err = compile_err(&[missing], &input);
    assert!(
        err.contains("`INLET_TEST_NO_SUCH_SALT`, which is not set"),
        "{err}"
    );

    // The salt is never shown.
    let debug = format!("{salted:?}");
    assert!(!debug.contains("pepper"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    let plan = TransformPlan::compile(std::slice::from_ref(&salted), input.schema()).unwrap();
    assert!(!format!("{plan:?}").contains("pepper"));
    let both = TransformSpec::Hash {
        columns: vec!["nope".into()],
        salt: Some("pepper".into()),
        salt_env: Some("X".into()),
    };
    let err = compile_err(&[both], &input);
    assert!(!err.contains("pepper"), "{err}");
    let bad_column = TransformSpec::Hash {
        columns: vec!["nope".into()],
        salt: Some("pepper".into()),
        salt_env: None,
    };
    let err = compile_err(&[bad_column], &input);
    assert!(
        !err.contains("pepper") && err.contains("column `nope` not found"),
        "{err}"
    );
}

// ---------------------------------------------------------------- expressions

fn events() -> RecordBatch {
    batch(vec![
        (
            "name",
            strs(&[Some("ann smith"), Some("bob"), None, Some("cy d")]),
        ),
        (
            "action",
            strs(&[Some("click"), Some("view"), Some("click"), None]),
        ),
        (
            "amount",
            Arc::new(Int64Array::from(vec![Some(10), Some(0), Some(5), Some(-1)])) as ArrayRef,
        ),
        (
            "qty",
            Arc::new(Int64Array::from(vec![Some(2), Some(0), Some(5), Some(1)])) as ArrayRef,
        ),
    ])
}

#[test]
fn derive_adds_or_replaces_and_rejects_failing_rows() {
    let input = events();
    let out = run(
        &[
            spec(json!({"op": "derive", "column": "unit", "expr": "amount / qty"})),
            spec(json!({"op": "derive", "column": "action", "expr": "upper(action)"})),
        ],
        &input,
    );
    assert_eq!(
        names(&out.batch.schema()),
        ["name", "action", "amount", "qty", "unit"]
    );
    // Row 1 divides by zero: only it is rejected.
    assert_eq!(rejected_rows(&out), [1]);
    assert!(
        out.rejected[0]
            .1
            .starts_with("transforms[0] (derive): `amount / qty` failed:")
            && out.rejected[0].1.to_lowercase().contains("divide by zero"),
        "{}",
        out.rejected[0].1
    );
    assert_eq!(out.rows, [0, 2, 3]);
    assert_eq!(
        text(&out.batch, "unit"),
        owned(&[Some("5"), Some("1"), Some("-1")])
    );
    assert_eq!(
        text(&out.batch, "action"),
        owned(&[Some("CLICK"), Some("CLICK"), None])
    );

    let err = compile_err(
        &[spec(
            json!({"op": "derive", "column": "x", "expr": "amont + 1"}),
        )],
        &input,
    );
    assert!(
        err.starts_with(
            "transforms[0] (derive): `amont + 1`: column `amont` not found (did you mean"
        ) || err.starts_with("transforms[0] (derive): `amont + 1`: column `amont` not found;"),
        "{err}"
    );
    assert!(
        err.contains("columns are: name, action, amount, qty"),
        "{err}"
    );
    let err = compile_err(
        &[spec(
            json!({"op": "derive", "column": "x", "expr": "amount +"}),
        )],
        &input,
    );
    assert!(
        err.starts_with("transforms[0] (derive): `amount +`"),
        "{err}"
    );
}

#[test]
fn derive_date_partitions_from_timestamps() {
    let input = batch(vec![(
        "ts",
        strs(&[Some("2024-01-02T23:59:59Z"), Some("2024-03-04 05:06:07")]),
    )]);
    let out = run(
        &[
            spec(json!({"op": "timestamp", "column": "ts"})),
            spec(json!({"op": "derive", "column": "day", "expr": "to_date(ts)"})),
            spec(json!({"op": "derive", "column": "hour", "expr": "date_trunc('hour', ts)"})),
        ],
        &input,
    );
    assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Date32);
    assert_eq!(
        text(&out.batch, "day"),
        owned(&[Some("2024-01-02"), Some("2024-03-04")])
    );
    assert_eq!(
        micros(&out.batch, "hour"),
        [Some(1_704_236_400_000_000), Some(1_709_528_400_000_000)]
    );
}

#[test]
fn cast_inside_sql_rejects_only_the_bad_rows() {
    let n = 1000;
    let values: Vec<Option<String>> = (0..n)
        .map(|i| match i {
            17 | 500 | 999 => Some(format!("bad{i}")),
            13 => None,
            _ => Some(i.to_string()),
        })
        .collect();
    let input = batch(vec![("v", Arc::new(StringArray::from(values)) as ArrayRef)]);
    let out = run(
        &[spec(
            json!({"op": "derive", "column": "n", "expr": "CAST(v AS INT) * 2"}),
        )],
        &input,
    );
    assert_eq!(rejected_rows(&out), [17, 500, 999]);
    assert_eq!(out.rows.len(), n - 3);
    let doubled = cast(out.batch.column(1), &DataType::Int64).unwrap();
    let doubled = doubled.as_primitive::<arrow::datatypes::Int64Type>();
    for (j, &row) in out.rows.iter().enumerate() {
        if row == 13 {
            assert!(doubled.is_null(j));
        } else {
            assert_eq!(doubled.value(j), 2 * row as i64);
        }
    }
}

#[test]
fn filter_keeps_true_rows_only() {
    let input = events();
    let out = run(
        &[spec(json!({"op": "filter", "expr": "action = 'click'"}))],
        &input,
    );
    // Row 3's action is NULL: dropped, not rejected.
    assert_eq!(out.rows, [0, 2]);
    assert!(out.rejected.is_empty());
    assert_eq!(text(&out.batch, "name"), owned(&[Some("ann smith"), None]));

    let out = run(
        &[spec(json!({"op": "filter", "expr": "amount / qty > 1"}))],
        &input,
    );
    assert_eq!(rejected_rows(&out), [1]);
    assert_eq!(out.rows, [0]);

    let err = compile_err(
        &[spec(json!({"op": "filter", "expr": "amount + 1"}))],
        &input,
    );
    assert!(err.contains("is Int64, not a condition"), "{err}");
}

#[test]
fn sql_projects_and_filters() {
    let input = events();
    let query = "SELECT *, upper(action) AS action_upper, split_part(name, ' ', 1) AS first_name FROM input WHERE amount > 0";
    let out = run(&[spec(json!({"op": "sql", "query": query}))], &input);
    assert_eq!(
        names(&out.batch.schema()),
        [
            "name",
            "action",
            "amount",
            "qty",
            "action_upper",
            "first_name"
        ]
    );
    assert_eq!(out.rows, [0, 2]);
    assert!(out.rejected.is_empty());
    assert_eq!(
        text(&out.batch, "action_upper"),
        owned(&[Some("CLICK"), Some("CLICK")])
    );
    assert_eq!(text(&out.batch, "first_name"), owned(&[Some("ann"), None]));

    let query =
        "SELECT * EXCEPT (qty, action), amount * 2 AS amount2, input.name AS who FROM input";
    let out = run(&[spec(json!({"op": "sql", "query": query}))], &input);
    assert_eq!(
        names(&out.batch.schema()),
        ["name", "amount", "amount2", "who"]
    );
    assert!(
        Arc::ptr_eq(out.batch.column(3), input.column(0)),
        "bare columns are not copied"
    );

    let out = run(
        &[spec(
            json!({"op": "sql", "query": "select e.name, amount from input as e where qty >= 1"}),
        )],
        &input,
    );
    assert_eq!(names(&out.batch.schema()), ["name", "amount"]);
    assert_eq!(out.rows, [0, 2, 3]);
}

#[test]
fn sql_rejects_failing_rows_after_its_where() {
    let input = events();
    // Row 3 is filtered out by WHERE; row 1 divides by zero.
    let query = "SELECT name, amount / qty AS unit FROM input WHERE amount >= 0";
    let out = run(&[spec(json!({"op": "sql", "query": query}))], &input);
    assert_eq!(out.rows, [0, 2]);
    assert_eq!(rejected_rows(&out), [1]);
    assert!(
        out.rejected[0]
            .1
            .starts_with("transforms[0] (sql): `amount / qty` failed"),
        "{}",
        out.rejected[0].1
    );
    // A WHERE that fails on a row rejects it.
    let out = run(
        &[spec(
            json!({"op": "sql", "query": "SELECT * FROM input WHERE amount / qty < 3"}),
        )],
        &input,
    );
    assert_eq!(rejected_rows(&out), [1]);
    assert_eq!(out.rows, [2, 3]);
}

#[test]
fn sql_says_what_is_supported() {
    let input = events();
    let supported = "supported: SELECT <items> FROM input [WHERE <condition>]";
    for (query, what) in [
        (
            "SELECT action, count(*) AS n FROM input GROUP BY action",
            "GROUP BY",
        ),
        (
            "SELECT * FROM input a JOIN input b ON a.name = b.name",
            "JOIN",
        ),
        (
            "SELECT * FROM events",
            "the table is `events`, but the only table is `input`",
        ),
        ("SELECT * FROM input ORDER BY amount", "ORDER BY"),
        ("SELECT * FROM input LIMIT 5", "LIMIT"),
        ("SELECT DISTINCT name FROM input", "DISTINCT"),
        ("SELECT * FROM input UNION SELECT * FROM input", "UNION"),
        (
            "SELECT * FROM (SELECT * FROM input)",
            "FROM other than exactly `FROM input`",
        ),
        ("WITH x AS (SELECT 1) SELECT * FROM input", "WITH"),
        ("DELETE FROM input", "expected one SELECT"),
        (
            "SELECT * FROM input; SELECT * FROM input",
            "expected one SELECT",
        ),
        ("SELEKT *", "does not parse"),
    ] {
        let err = compile_err(&[spec(json!({"op": "sql", "query": query}))], &input);
        assert!(err.starts_with("transforms[0] (sql): "), "{err}");
        assert!(err.contains(what), "{query}: {err}");
        assert!(err.contains(supported), "{query}: {err}");
    }
    for (query, what) in [
        (
            "SELECT count(*) AS n FROM input",
            "aggregate functions are not supported",
        ),
        (
            "SELECT row_number() OVER () AS n FROM input",
            "window functions (OVER) are not supported",
        ),
        (
            "SELECT * FROM input WHERE amount IN (SELECT 1)",
            "subqueries are not supported",
        ),
    ] {
        let err = compile_err(&[spec(json!({"op": "sql", "query": query}))], &input);
        assert!(err.contains(what), "{query}: {err}");
    }
    let err = compile_err(
        &[spec(
            json!({"op": "derive", "column": "s", "expr": "sum(amount)"}),
        )],
        &input,
    );
    assert_eq!(
        err,
        "transforms[0] (derive): `sum(amount)`: aggregate functions are not supported: transforms compute each row from that row alone"
    );
    let err = compile_err(
        &[spec(
            json!({"op": "sql", "query": "SELECT upper(name) FROM input"}),
        )],
        &input,
    );
    assert!(
        err.contains("`upper(name)` needs a name: write `upper(name) AS <name>`"),
        "{err}"
    );
    let err = compile_err(
        &[spec(
            json!({"op": "sql", "query": "SELECT *, name FROM input"}),
        )],
        &input,
    );
    assert!(
        err.contains("two columns named `name`") && err.contains("* EXCEPT (name)"),
        "{err}"
    );
    let err = compile_err(
        &[spec(json!({"op": "sql", "query": "SELECT usr FROM input"}))],
        &input,
    );
    assert!(
        err.contains("column `usr` not found")
            && err.contains("columns are: name, action, amount, qty"),
        "{err}"
    );
    let err = compile_err(
        &[spec(
            json!({"op": "sql", "query": "SELECT * EXCEPT (nope) FROM input"}),
        )],
        &input,
    );
    assert!(err.contains("column `nope` not found"), "{err}");
}

// ---------------------------------------------------------------- chains

#[test]
fn chain_rename_snake_timestamp_derive_sql_drop() {
    let input = batch(vec![
        (
            "userName",
            strs(&[Some("Ann"), Some("Bob"), Some("Cy"), Some("Di"), Some("Ed")]),
        ),
        (
            "EventTime",
            strs(&[
                Some("2024-01-02T03:04:05Z"),
                Some("garbage"),
                Some("2024-01-03 00:00:00"),
                Some("2024-01-04T10:00:00+02:00"),
                Some("2024-01-05T00:00:00Z"),
            ]),
        ),
        (
            "AMT",
            strs(&[Some("1.5"), Some("2"), Some("x"), Some("-4"), Some("5")]),
        ),
        ("debugInfo", strs(&[Some("d"); 5])),
    ]);
    let specs = [
        spec(json!({"op": "rename", "columns": {"AMT": "amountText"}})),
        spec(json!({"op": "snake_case"})),
        spec(json!({"op": "timestamp", "column": "event_time"})),
        spec(json!({"op": "cast", "columns": {"amount_text": "DECIMAL(10,2)"}})),
        spec(json!({"op": "derive", "column": "event_date", "expr": "to_date(event_time)"})),
        spec(
            json!({"op": "sql", "query": "SELECT * EXCEPT (amount_text), amount_text AS amount, lower(user_name) AS name FROM input WHERE amount_text > 0"}),
        ),
        spec(json!({"op": "drop", "columns": ["debug_info", "user_name"]})),
    ];
    let out = run(&specs, &input);
    assert_eq!(
        names(&out.batch.schema()),
        ["event_time", "event_date", "amount", "name"]
    );
    // Row 1: bad timestamp; row 2: bad amount; row 3: filtered (negative).
    assert_eq!(rejected_rows(&out), [1, 2]);
    assert!(out.rejected[0].1.starts_with("transforms[2] (timestamp)"));
    assert!(out.rejected[1].1.starts_with("transforms[3] (cast)"));
    assert_eq!(out.rows, [0, 4]);
    assert_eq!(text(&out.batch, "name"), owned(&[Some("ann"), Some("ed")]));
    assert_eq!(
        text(&out.batch, "event_date"),
        owned(&[Some("2024-01-02"), Some("2024-01-05")])
    );
    assert_eq!(
        text(&out.batch, "amount"),
        owned(&[Some("1.50"), Some("5.00")])
    );

    // The schema is known before any batch.
    let plan = TransformPlan::compile(&specs, input.schema()).unwrap();
    assert_eq!(plan.output_schema(), &out.batch.schema());
    assert!(!plan.is_empty());
    // An empty batch works too.
    let empty = plan.apply(&input.slice(0, 0)).unwrap();
    assert_eq!(empty.batch.num_rows(), 0);
    assert_eq!(empty.batch.schema(), *plan.output_schema());
}

#[test]
fn rows_map_back_through_several_filters_and_rejections() {
    let n = 64;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n as i64));
    let divisor: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 7)));
    let input = batch(vec![("id", ids), ("d", divisor)]);
    let specs = [
        spec(json!({"op": "filter", "expr": "id % 2 = 0"})),
        spec(json!({"op": "derive", "column": "q", "expr": "id / d"})),
        spec(json!({"op": "filter", "expr": "id % 3 <> 0"})),
    ];
    let out = run(&specs, &input);
    let expected_rows: Vec<usize> = (0..n)
        .filter(|i| i % 2 == 0 && i % 7 != 0 && i % 3 != 0)
        .collect();
    let expected_rejected: Vec<usize> = (0..n).filter(|i| i % 2 == 0 && i % 7 == 0).collect();
    assert_eq!(out.rows, expected_rows);
    assert_eq!(rejected_rows(&out), expected_rejected);
    let ids = out
        .batch
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    for (j, &row) in out.rows.iter().enumerate() {
        assert_eq!(
            ids.value(j),
            row as i64,
            "output row {j} is input row {row}"
        );
    }
}

#[test]
fn big_batch_is_not_slow() {
    let n = 8192;
    let input = batch(vec![
        (
            "userName",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("name {i}")),
            )) as ArrayRef,
        ),
        (
            "eventTime",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                if i % 1000 == 7 {
                    "not a time".to_string()
                } else {
                    format!("2024-01-02T03:{:02}:{:02}Z", (i / 60) % 60, i % 60)
                }
            }))),
        ),
        (
            "amount",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("{}.25", i % 100)),
            )),
        ),
        (
            "email",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("u{i}@example.com")),
            )),
        ),
        (
            "qty",
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 499))),
        ),
    ]);
    let specs = [
        spec(json!({"op": "snake_case"})),
        spec(json!({"op": "timestamp", "column": "event_time"})),
        spec(json!({"op": "cast", "columns": {"amount": "DECIMAL(10,2)"}})),
        spec(json!({"op": "hash", "columns": ["email"], "salt": "s"})),
        spec(json!({"op": "derive", "column": "event_date", "expr": "to_date(event_time)"})),
        spec(
            json!({"op": "sql", "query": "SELECT *, upper(user_name) AS shout, 100 / qty AS per FROM input WHERE amount > 1"}),
        ),
        spec(json!({"op": "filter", "expr": "per IS NULL OR per < 50"})),
    ];
    let started = std::time::Instant::now();
    let plan = TransformPlan::compile(&specs, input.schema()).unwrap();
    let compiled = started.elapsed();
    let out = plan.apply(&input).unwrap();
    let applied = started.elapsed() - compiled;
    check(&plan, &input, &out);
    // 9 bad timestamps, and divisions by zero (qty = 0) among rows that pass the WHERE.
    let bad_time = (0..n).filter(|i| i % 1000 == 7).count();
    assert!(out.rejected.len() > bad_time, "{}", out.rejected.len());
    assert!(out.rows.len() > n / 2);
    eprintln!("8192 rows: compile {compiled:?}, apply {applied:?}");
    assert!(
        applied < std::time::Duration::from_secs(5),
        "apply took {applied:?}"
    );
}

#[test]
fn predicate_mask_treats_null_as_false() {
    let input = batch(vec![(
        "b",
        Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])) as ArrayRef,
    )]);
    let out = run(&[spec(json!({"op": "filter", "expr": "b"}))], &input);
    assert_eq!(out.rows, [0]);
    assert!(out.rejected.is_empty());
}

#[test]
fn every_row_failing_is_still_bounded() {
    let n = 8192;
    let input = batch(vec![(
        "v",
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("x{i}")),
        )) as ArrayRef,
    )]);
    let started = std::time::Instant::now();
    let out = run(
        &[spec(
            json!({"op": "derive", "column": "n", "expr": "CAST(v AS INT)"}),
        )],
        &input,
    );
    let took = started.elapsed();
    eprintln!("8192 failing rows isolated in {took:?}");
    assert_eq!(out.rejected.len(), n);
    assert!(out.rows.is_empty());
    assert_eq!(out.batch.num_rows(), 0);
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn sql_names_are_case_sensitive_and_functions_are_not() {
    let input = batch(vec![
        ("userName", strs(&[Some("ann"), None])),
        (
            "Event Time",
            strs(&[Some("2024-01-02"), Some("2024-01-03")]),
        ),
    ]);
    let out = run(
        &[
            spec(json!({"op": "derive", "column": "shout", "expr": "UPPER(userName)"})),
            spec(json!({"op": "derive", "column": "day", "expr": "to_date(`Event Time`)"})),
            spec(
                json!({"op": "sql", "query": "SELECT \"userName\" AS who, Lower(shout) AS quiet, day FROM input"}),
            ),
        ],
        &input,
    );
    assert_eq!(text(&out.batch, "who"), owned(&[Some("ann"), None]));
    assert_eq!(text(&out.batch, "quiet"), owned(&[Some("ann"), None]));
    assert_eq!(
        text(&out.batch, "day"),
        owned(&[Some("2024-01-02"), Some("2024-01-03")])
    );
    let err = compile_err(
        &[spec(
            json!({"op": "derive", "column": "x", "expr": "username"}),
        )],
        &input,
    );
    assert!(
        err.contains("column `username` not found (did you mean `userName`?)"),
        "{err}"
    );
}

#[test]
fn plans_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TransformPlan>();
    assert_send_sync::<Transformed>();
    assert_send_sync::<TransformError>();
}

// ------------------------------------------------ SQL functions, faults

/// Three rows of every kind the SQL functions below take; row 1 is mostly
/// null.
fn kinds() -> RecordBatch {
    let ts = arrow::array::TimestampMicrosecondArray::from(vec![
        Some(1_709_528_767_000_000), // 2024-03-04T05:06:07Z
        None,
        Some(1_735_689_599_000_000), // 2024-12-31T23:59:59Z
    ])
    .with_timezone("UTC");
    batch(vec![
        (
            "a",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from(vec![None, None, Some(30)])) as ArrayRef,
        ),
        ("s", strs(&[Some("Ann Smith"), None, Some("  bob  ")])),
        (
            "t",
            strs(&[
                Some("2024-03-04T05:06:07Z"),
                None,
                Some("2024-12-31 23:59:59"),
            ]),
        ),
        ("ts", Arc::new(ts) as ArrayRef),
        ("code", strs(&[Some("x"), Some("y"), None])),
    ])
}

/// Every SQL function the README's transforms reference names or tests,
/// with what it gives on [`kinds`] (as text; `None` is NULL).
const FUNCTIONS: &[(&str, [Option<&str>; 3])] = &[
    // Null handling: these need DataFusion's simplifier to run at all.
    ("coalesce(b, a)", [Some("1"), None, Some("30")]),
    ("coalesce(b, a, 0)", [Some("1"), Some("0"), Some("30")]),
    ("nvl(b, a)", [Some("1"), None, Some("30")]),
    ("ifnull(b, a)", [Some("1"), None, Some("30")]),
    (
        "nvl2(b, 'has b', 'no b')",
        [Some("no b"), Some("no b"), Some("has b")],
    ),
    ("nullif(a, 3)", [Some("1"), None, None]),
    ("arrow_cast(a, 'Int32')", [Some("1"), None, Some("3")]),
    // Conditions.
    (
        "CASE WHEN a > 2 THEN 'big' WHEN a IS NULL THEN 'none' ELSE 'small' END",
        [Some("small"), Some("none"), Some("big")],
    ),
    (
        "CASE code WHEN 'x' THEN 1 ELSE 0 END",
        [Some("1"), Some("0"), Some("0")],
    ),
    ("a IN (1, 2)", [Some("true"), None, Some("false")]),
    (
        "code NOT IN ('x', 'z')",
        [Some("false"), Some("true"), None],
    ),
    ("a BETWEEN 1 AND 2", [Some("true"), None, Some("false")]),
    ("s LIKE 'A%'", [Some("true"), None, Some("false")]),
    ("s ILIKE 'a%'", [Some("true"), None, Some("false")]),
    (
        "a IS NULL OR b IS NOT NULL",
        [Some("false"), Some("true"), Some("true")],
    ),
    ("greatest(a, b)", [Some("1"), None, Some("30")]),
    ("least(a, b)", [Some("1"), None, Some("3")]),
    // Dates and times.
    ("to_date(t)", [Some("2024-03-04"), None, Some("2024-12-31")]),
    (
        "CAST(ts AS DATE)",
        [Some("2024-03-04"), None, Some("2024-12-31")],
    ),
    (
        "date_trunc('day', ts)",
        [
            Some("2024-03-04T00:00:00Z"),
            None,
            Some("2024-12-31T00:00:00Z"),
        ],
    ),
    (
        "date_bin(INTERVAL '1 hour', ts)",
        [
            Some("2024-03-04T05:00:00Z"),
            None,
            Some("2024-12-31T23:00:00Z"),
        ],
    ),
    ("extract(year FROM ts)", [Some("2024"), None, Some("2024")]),
    ("date_part('month', ts)", [Some("3"), None, Some("12")]),
    (
        "to_char(ts, '%Y-%m')",
        [Some("2024-03"), None, Some("2024-12")],
    ),
    (
        "to_timestamp(t)",
        [
            Some("2024-03-04T05:06:07"),
            None,
            Some("2024-12-31T23:59:59"),
        ],
    ),
    (
        "to_unixtime(ts)",
        [Some("1709528767"), None, Some("1735689599")],
    ),
    (
        "from_unixtime(a)",
        [
            Some("1970-01-01T00:00:01"),
            None,
            Some("1970-01-01T00:00:03"),
        ],
    ),
    (
        "make_date(2024, a, 1)",
        [Some("2024-01-01"), None, Some("2024-03-01")],
    ),
    // Strings.
    ("upper(s)", [Some("ANN SMITH"), None, Some("  BOB  ")]),
    ("lower(s)", [Some("ann smith"), None, Some("  bob  ")]),
    ("split_part(s, ' ', 1)", [Some("Ann"), None, Some("")]),
    (
        "concat(s, '-', code)",
        [Some("Ann Smith-x"), Some("-y"), Some("  bob  -")],
    ),
    (
        "concat_ws('/', s, code)",
        [Some("Ann Smith/x"), Some("y"), Some("  bob  ")],
    ),
    ("s || code", [Some("Ann Smithx"), None, None]),
    ("substr(s, 1, 3)", [Some("Ann"), None, Some("  b")]),
    ("substring(s FROM 5)", [Some("Smith"), None, Some("b  ")]),
    ("left(s, 2)", [Some("An"), None, Some("  ")]),
    ("right(code, 1)", [Some("x"), Some("y"), None]),
    ("trim(s)", [Some("Ann Smith"), None, Some("bob")]),
    ("ltrim(s)", [Some("Ann Smith"), None, Some("bob  ")]),
    ("rtrim(s)", [Some("Ann Smith"), None, Some("  bob")]),
    ("lpad(code, 3, '0')", [Some("00x"), Some("00y"), None]),
    (
        "replace(s, ' ', '_')",
        [Some("Ann_Smith"), None, Some("__bob__")],
    ),
    (
        "regexp_replace(s, '[aeiou]', '*', 'g')",
        [Some("Ann Sm*th"), None, Some("  b*b  ")],
    ),
    ("regexp_like(s, '^A')", [Some("true"), None, Some("false")]),
    ("length(s)", [Some("9"), None, Some("7")]),
    ("char_length(s)", [Some("9"), None, Some("7")]),
    ("strpos(s, 'S')", [Some("5"), None, Some("0")]),
    ("starts_with(s, 'Ann')", [Some("true"), None, Some("false")]),
    ("reverse(code)", [Some("x"), Some("y"), None]),
    (
        "encode(digest(code, 'sha256'), 'hex')",
        [
            Some("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
            Some("a1fce4363854ff888cff4b8e7875d600c2682390412a8cf79b37d0b11148b0fa"),
            None,
        ],
    ),
    (
        "md5(code)",
        [
            Some("9dd4e461268c8034f5c8564e155c67a6"),
            Some("415290769594460e2e485922904f345d"),
            None,
        ],
    ),
    // Arithmetic and casts.
    ("a * 2 + b", [None, None, Some("36")]),
    ("a % 2", [Some("1"), None, Some("1")]),
    ("b / a", [None, None, Some("10")]),
    ("abs(-a)", [Some("1"), None, Some("3")]),
    ("round(a / 3.0, 2)", [Some("0.33"), None, Some("1.0")]),
    ("floor(a / 2.0)", [Some("0.0"), None, Some("1.0")]),
    ("CAST(a AS STRING)", [Some("1"), None, Some("3")]),
    ("CAST(a AS DOUBLE) / 2", [Some("0.5"), None, Some("1.5")]),
    (
        "CAST(a AS DECIMAL(10,2))",
        [Some("1.00"), None, Some("3.00")],
    ),
    ("TRY_CAST(code AS INT)", [None, None, None]),
];

/// Each function compiles and runs on a batch the way `run` does (through
/// [`TransformPlan`]), as a `derive`, inside a `sql` query and in a `filter`,
/// and gives its values: none fails for inlet's own reasons.
#[test]
fn every_documented_sql_function_runs_on_a_batch() {
    let input = kinds();
    let mut failures = Vec::new();
    for (expr, expected) in FUNCTIONS {
        let derive = spec(json!({"op": "derive", "column": "v", "expr": expr}));
        let plan = match TransformPlan::compile(&[derive], input.schema()) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{expr}: compile: {e}"));
                continue;
            }
        };
        match plan.apply(&input) {
            Ok(out) if !out.rejected.is_empty() => {
                failures.push(format!("{expr}: rejected {:?}", out.rejected))
            }
            Ok(out) => {
                check(&plan, &input, &out);
                let got = text(&out.batch, "v");
                if got != owned(expected) {
                    failures.push(format!("{expr}: {got:?}, expected {expected:?}"));
                }
            }
            Err(e) => failures.push(format!("{expr}: {e}")),
        }
        // The same inside SELECT and WHERE.
        let query = format!(
            "SELECT a, {expr} AS v FROM input WHERE ({expr}) IS NULL OR ({expr}) IS NOT NULL"
        );
        match TransformPlan::compile(
            &[spec(json!({"op": "sql", "query": query}))],
            input.schema(),
        )
        .map(|p| p.apply(&input))
        {
            Ok(Ok(out)) if out.rejected.is_empty() && text(&out.batch, "v") == owned(expected) => {}
            other => failures.push(format!("{query}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn coalesce_of_struct_fields_like_a_debezium_envelope() {
    let id = |values: Vec<Option<i64>>| {
        let ids: ArrayRef = Arc::new(Int64Array::from(values));
        Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("id", DataType::Int64, true)),
            ids,
        )])) as ArrayRef
    };
    // An insert (after only), an update, a delete (before only).
    let input = batch(vec![
        ("op", strs(&[Some("c"), Some("u"), Some("d")])),
        ("before", id(vec![None, Some(2), Some(3)])),
        ("after", id(vec![Some(1), Some(22), None])),
    ]);
    let out = run(
        &[
            spec(json!({"op": "derive", "column": "id", "expr": "coalesce(after.id, before.id)"})),
            spec(json!({"op": "filter", "expr": "coalesce(after.id, before.id) > 1"})),
            spec(
                json!({"op": "sql", "query": "SELECT op, nvl(after.id, before.id) AS key, id FROM input WHERE op IN ('u', 'd')"}),
            ),
        ],
        &input,
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.rows, [1, 2]);
    assert_eq!(text(&out.batch, "id"), owned(&[Some("22"), Some("3")]));
    assert_eq!(text(&out.batch, "key"), owned(&[Some("22"), Some("3")]));
}

/// A function DataFusion plans but cannot execute fails `compile` (so
/// `inlet check` and the start), naming the transform, as inlet's fault:
/// `digest` with a per-row algorithm is not implemented, `now()` cannot run
/// without a query start time (and one fixed at compile time would be wrong).
#[test]
fn what_cannot_run_on_any_row_fails_at_compile_time() {
    let input = kinds();
    for (i, expr) in ["digest(s, code)", "now()", "current_date()"]
        .into_iter()
        .enumerate()
    {
        let mut specs = vec![spec(json!({"op": "snake_case"})); i];
        specs.push(spec(json!({"op": "derive", "column": "v", "expr": expr})));
        let err = TransformPlan::compile(&specs, input.schema()).unwrap_err();
        assert_eq!(err.fault(), Fault::Internal, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "transforms[{i}] (derive): column `v`: `{expr}` failed:"
            )),
            "{text}"
        );
        assert!(text.contains("no message can pass it"), "{text}");
    }
    // In a WHERE and a select list too.
    for query in [
        "SELECT * FROM input WHERE digest(s, code) IS NULL",
        "SELECT digest(s, code) AS d FROM input",
    ] {
        let err = TransformPlan::compile(
            &[spec(json!({"op": "sql", "query": query}))],
            input.schema(),
        )
        .unwrap_err();
        assert_eq!(err.fault(), Fault::Internal, "{err}");
        assert!(
            err.to_string().starts_with("transforms[0] (sql): "),
            "{err}"
        );
    }
    // A constant argument no row can fix is found too.
    let err = TransformPlan::compile(
        &[spec(
            json!({"op": "derive", "column": "v", "expr": "digest(s, 'md7')"}),
        )],
        input.schema(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("md7"), "{err}");
    // A failure that depends on the values is not found at compile time:
    // rows fail on their own (a cast of 'x', a division by zero).
    let out = run(
        &[spec(
            json!({"op": "derive", "column": "v", "expr": "CAST(code AS INT) + 1 / (a - 1)"}),
        )],
        &input,
    );
    assert_eq!(rejected_rows(&out), [0, 1]);
}

/// A branch no compile-time row reaches: `digest` with a per-row algorithm
/// (DataFusion: "not implemented") runs only for rows where `a > 2`. That is
/// not those rows' fault: the whole batch fails as inlet's fault
/// ([`TransformError::Eval`]), and no row is rejected.
const UNRUNNABLE_BRANCH: &str =
    "CASE WHEN a > 2 THEN digest(s, code) WHEN a > 0 THEN digest(s, 'md5') END";

#[test]
fn an_internal_error_on_rows_is_inlets_fault_not_the_rows() {
    let input = kinds();
    let specs = [spec(
        json!({"op": "derive", "column": "v", "expr": UNRUNNABLE_BRANCH}),
    )];
    let plan = TransformPlan::compile(&specs, input.schema()).expect("the probe cannot reach it");
    // Rows where the branch is not taken are fine.
    let out = plan.apply(&input.slice(0, 2)).unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.rows, [0, 1]);
    let err = plan.apply(&input).unwrap_err();
    assert_eq!(err.fault(), Fault::Internal, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("transforms[0] (derive): column `v`: "),
        "{text}"
    );
    assert!(text.to_lowercase().contains("not implemented"), "{text}");
}

#[test]
fn datafusion_errors_are_classified_by_whose_fault_they_are() {
    use super::expr::fault_of;
    use deltalake::datafusion::common::DataFusionError as E;
    let arrow = |e| E::ArrowError(Box::new(e), None);
    for e in [
        arrow(arrow::error::ArrowError::CastError(
            "Cannot cast string 'abc'".into(),
        )),
        arrow(arrow::error::ArrowError::DivideByZero),
        arrow(arrow::error::ArrowError::ParseError("x".into())),
        E::Execution("Error parsing timestamp from 'yesterday'".into()),
        E::Execution("x".into()).context("in a function"),
    ] {
        assert_eq!(fault_of(&e), Fault::Message, "{e}");
    }
    for e in [
        E::Internal("coalesce should have been simplified to case".into()),
        E::NotImplemented("Digest using dynamically decided method".into()),
        E::Plan("x".into()),
        E::Configuration("x".into()),
        arrow(arrow::error::ArrowError::NotYetImplemented("x".into())),
        arrow(arrow::error::ArrowError::SchemaError("x".into())),
        E::Internal("x".into()).context("in a function"),
        E::Collection(vec![E::Execution("x".into()), E::Internal("y".into())]),
    ] {
        assert_eq!(fault_of(&e), Fault::Internal, "{e}");
    }
    let config = TransformError::Config {
        index: 0,
        op: "cast",
        message: String::new(),
    };
    assert_eq!(config.fault(), Fault::Operator);
}
