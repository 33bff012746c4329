//! The conformer's tests: widening, refusals, evolution, rejected rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, DictionaryArray, FixedSizeBinaryArray,
    Float32Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeBinaryArray,
    LargeStringArray, ListBuilder, NullArray, RecordBatch, StringArray, StringViewArray,
    StructArray, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt32Array, UInt64Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Int32Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use super::*;
use crate::schema::parse_ddl;

// --- Avro, hand-encoded and decoded by arrow-avro, as the decoder does ---

fn long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Decodes Confluent-framed bodies written with `schema` (id 1).
fn avro(schema: &str, bodies: &[Vec<u8>]) -> RecordBatch {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(1), AvroSchema::new(schema.to_string()))
        .unwrap();
    let mut decoder = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .build_decoder()
        .unwrap();
    for body in bodies {
        let mut frame = vec![0, 0, 0, 0, 1];
        frame.extend_from_slice(body);
        assert_eq!(decoder.decode(&frame).unwrap(), frame.len());
    }
    decoder.flush().unwrap().unwrap()
}

fn ddl(s: &str) -> Schema {
    parse_ddl(s).unwrap()
}

fn conform(batch: &RecordBatch, table: &Schema, policy: EvolutionPolicy) -> Conformed {
    let c = Conformer::new(&batch.schema(), table, policy).unwrap();
    let out = c.apply(batch).unwrap();
    assert_eq!(out.batch.schema(), *c.output_schema());
    out
}

fn incompatible(input: &Schema, table: &Schema) -> (String, String) {
    match Conformer::new(input, table, EvolutionPolicy::AddColumns) {
        Err(e @ ConformError::Incompatible { .. }) => {
            let ConformError::Incompatible { ref field, .. } = e else {
                unreachable!()
            };
            (field.clone(), e.to_string())
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

fn delta_storable(schema: &Schema) {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let _: deltalake::kernel::StructType = schema.try_into_kernel().unwrap();
}

fn field(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

const USER: &str = r#"{"type":"record","name":"U","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;

fn users() -> RecordBatch {
    let bodies = [(1, "ann"), (2, "bob")].map(|(id, name)| {
        let mut b = Vec::new();
        long(&mut b, id);
        string(&mut b, name);
        b
    });
    avro(USER, &bodies)
}

#[test]
fn identical_schemas_share_the_arrays() {
    let input = users();
    let table = ddl("id BIGINT NOT NULL, name STRING NOT NULL");
    assert_eq!(input.schema().as_ref(), &table, "arrow-avro's types");
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap();
    let out = c.apply(&input).unwrap();
    assert!(c.new_fields().is_empty());
    assert_eq!(out.rows, vec![0, 1]);
    assert!(out.rejected.is_empty());
    for (a, b) in out.batch.columns().iter().zip(input.columns()) {
        assert!(Arc::ptr_eq(a, b));
    }
    // Nullable table columns take the same arrays too.
    let out = conform(
        &input,
        &ddl("id BIGINT, name STRING"),
        EvolutionPolicy::Fail,
    );
    assert!(Arc::ptr_eq(out.batch.column(0), input.column(0)));
}

#[test]
fn reorders_and_fills_missing_nullable_columns() {
    let input = users();
    let table = ddl("name STRING, country STRING, id BIGINT NOT NULL, tags ARRAY<STRING>");
    let out = conform(&input, &table, EvolutionPolicy::Fail);
    assert_eq!(out.batch.schema().as_ref(), &table);
    assert!(Arc::ptr_eq(out.batch.column(0), input.column(1)));
    assert!(Arc::ptr_eq(out.batch.column(2), input.column(0)));
    assert_eq!(out.batch.column(1).null_count(), 2);
    assert_eq!(out.batch.column(3).null_count(), 2);
}

#[test]
fn missing_not_null_column_is_incompatible() {
    let (field, text) = incompatible(
        &users().schema(),
        &ddl("id BIGINT, country STRING NOT NULL"),
    );
    assert_eq!(field, "country");
    assert!(text.contains("NOT NULL"), "{text}");
}

#[test]
fn widens_without_loss() {
    let utc = || Some(Arc::from("UTC"));
    let input = batch(
        vec![
            field("i8", DataType::Int8, true),
            field("i16", DataType::Int16, true),
            field("i32", DataType::Int32, true),
            field("u32", DataType::UInt32, true),
            field("u64", DataType::UInt64, true),
            field("f32", DataType::Float32, true),
            field("large", DataType::LargeUtf8, true),
            field("view", DataType::Utf8View, true),
            field("bin", DataType::LargeBinary, true),
            field("dec", DataType::Decimal128(5, 2), true),
            field(
                "s",
                DataType::Timestamp(TimeUnit::Second, Some("+00:00".into())),
                true,
            ),
            field(
                "ms",
                DataType::Timestamp(TimeUnit::Millisecond, Some("Z".into())),
                true,
            ),
            field(
                "us",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            field(
                "local",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            field("i64", DataType::Int64, true),
        ],
        vec![
            Arc::new(Int8Array::from(vec![-8])),
            Arc::new(Int16Array::from(vec![-16])),
            Arc::new(Int32Array::from(vec![i32::MIN])),
            Arc::new(UInt32Array::from(vec![u32::MAX])),
            Arc::new(UInt64Array::from(vec![u64::MAX])),
            Arc::new(Float32Array::from(vec![0.1f32])),
            Arc::new(LargeStringArray::from(vec!["large"])),
            Arc::new(StringViewArray::from(vec!["view"])),
            Arc::new(LargeBinaryArray::from(vec![b"b".as_ref()])),
            Arc::new(
                Decimal128Array::from(vec![-12345])
                    .with_precision_and_scale(5, 2)
                    .unwrap(),
            ),
            Arc::new(TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("+00:00")),
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("Z")),
            Arc::new(TimestampMicrosecondArray::from(vec![7]).with_timezone("+00:00")),
            Arc::new(TimestampMillisecondArray::from(vec![-1])),
            Arc::new(Int64Array::from(vec![i64::MIN])),
        ],
    );
    let table = ddl(
        "i8 SMALLINT, i16 BIGINT, i32 DOUBLE, u32 BIGINT, u64 DECIMAL(20,0), f32 DOUBLE, \
         large STRING, view STRING, bin BINARY, dec DECIMAL(12,2), s TIMESTAMP, ms TIMESTAMP, \
         us TIMESTAMP, local TIMESTAMP_NTZ, i64 DECIMAL(38,0)",
    );
    let out = conform(&input, &table, EvolutionPolicy::Fail).batch;
    assert_eq!(out.schema().as_ref(), &table);
    let c = |i: usize| out.column(i);
    assert_eq!(
        c(0).as_primitive::<arrow::datatypes::Int16Type>().value(0),
        -8
    );
    assert_eq!(
        c(1).as_primitive::<arrow::datatypes::Int64Type>().value(0),
        -16
    );
    assert_eq!(
        c(2).as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        i32::MIN as f64
    );
    assert_eq!(
        c(3).as_primitive::<arrow::datatypes::Int64Type>().value(0),
        u32::MAX as i64
    );
    assert_eq!(
        c(4).as_primitive::<Decimal128Type>().value(0),
        u64::MAX as i128
    );
    assert_eq!(
        c(5).as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        0.1f32 as f64
    );
    assert_eq!(c(6).as_string::<i32>().value(0), "large");
    assert_eq!(c(7).as_string::<i32>().value(0), "view");
    assert_eq!(c(8).as_binary::<i32>().value(0), b"b");
    assert_eq!(c(9).as_primitive::<Decimal128Type>().value(0), -12345);
    let ts = |i: usize| c(i).as_primitive::<TimestampMicrosecondType>().value(0);
    assert_eq!(ts(10), 1_700_000_000_000_000);
    assert_eq!(ts(11), 1_700_000_000_123_000);
    assert_eq!(ts(12), 7);
    assert_eq!(ts(13), -1000);
    assert_eq!(
        c(14).as_primitive::<Decimal128Type>().value(0),
        i64::MIN as i128
    );
    assert_eq!(
        c(10).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, utc())
    );
}

#[test]
fn widens_what_arrow_avro_decodes() {
    let schema = r#"{"type":"record","name":"E","fields":[
        {"name":"n","type":"int"},
        {"name":"x","type":"float"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"local","type":{"type":"long","logicalType":"local-timestamp-micros"}},
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":5,"scale":2}},
        {"name":"day","type":{"type":"int","logicalType":"date"}}]}"#;
    let mut b = Vec::new();
    long(&mut b, -3);
    b.extend_from_slice(&1.5f32.to_le_bytes());
    long(&mut b, 1_700_000_000_123);
    long(&mut b, 42);
    let unscaled = (-12345i32).to_be_bytes(); // two's complement, big-endian
    long(&mut b, 4);
    b.extend_from_slice(&unscaled);
    long(&mut b, 19_000);
    let input = avro(schema, &[b]);
    let table = ddl(
        "n BIGINT, x DOUBLE, at TIMESTAMP, local TIMESTAMP_NTZ, amount DECIMAL(10,2), day DATE",
    );
    let out = conform(&input, &table, EvolutionPolicy::Fail).batch;
    assert_eq!(out.schema().as_ref(), &table);
    assert_eq!(
        out.column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        -3
    );
    assert_eq!(
        out.column(1)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        1.5
    );
    assert_eq!(
        out.column(2)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_700_000_000_123_000
    );
    assert_eq!(
        out.column(3)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        42
    );
    assert_eq!(
        out.column(4).as_primitive::<Decimal128Type>().value(0),
        -12345
    );
    let day: &Date32Array = out.column(5).as_primitive();
    assert_eq!(day.value(0), 19_000);
    assert!(Arc::ptr_eq(out.column(5), input.column(5)));
}

#[test]
fn refuses_narrowing_and_lossy_conversions() {
    let cases: Vec<(DataType, &str)> = vec![
        (DataType::Int64, "v INT"),
        (DataType::Int64, "v DOUBLE"),
        (DataType::Float64, "v FLOAT"),
        (DataType::Float64, "v BIGINT"),
        (DataType::Utf8, "v BIGINT"),
        (DataType::Int32, "v STRING"),
        (DataType::UInt64, "v BIGINT"),
        (
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            "v TIMESTAMP",
        ),
        (
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            "v TIMESTAMP_NTZ",
        ),
        (
            DataType::Timestamp(TimeUnit::Millisecond, None),
            "v TIMESTAMP",
        ),
        (
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            "v TIMESTAMP_NTZ",
        ),
        (
            DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into())),
            "v TIMESTAMP",
        ),
        (DataType::Decimal128(10, 2), "v DECIMAL(10,3)"),
        (DataType::Decimal128(10, 2), "v DECIMAL(9,2)"),
        (DataType::Date32, "v TIMESTAMP"),
        (DataType::Time32(TimeUnit::Millisecond), "v INT"),
        (DataType::Int64, "v DECIMAL(20,2)"),
    ];
    for (from, table) in cases {
        let input = Schema::new(vec![field("v", from.clone(), true)]);
        let (name, text) = incompatible(&input, &ddl(table));
        assert_eq!(name, "v", "{from} -> {table}");
        assert!(text.contains(&from.to_string()), "{text}");
    }
    let (_, text) = incompatible(
        &Schema::new(vec![field(
            "v",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]),
        &ddl("v TIMESTAMP_NTZ"),
    );
    assert!(text.contains("nanoseconds"), "{text}");
}

#[test]
fn avro_enum_becomes_a_string() {
    let schema = r#"{"type":"record","name":"E","fields":[
        {"name":"color","type":{"type":"enum","name":"C","symbols":["RED","GREEN"]}}]}"#;
    let bodies = [1, 0, 1].map(|i| {
        let mut b = Vec::new();
        long(&mut b, i);
        b
    });
    let input = avro(schema, &bodies);
    assert!(matches!(
        input.schema().field(0).data_type(),
        DataType::Dictionary(..)
    ));
    let out = conform(&input, &ddl("color STRING"), EvolutionPolicy::Fail).batch;
    let colors: Vec<_> = out.column(0).as_string::<i32>().iter().flatten().collect();
    assert_eq!(colors, ["GREEN", "RED", "GREEN"]);
    // A new enum column is a STRING column.
    let out = conform(&input, &ddl("other INT"), EvolutionPolicy::AddColumns);
    assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Utf8);
    delta_storable(&out.batch.schema());
}

#[test]
fn uuid_becomes_its_string() {
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let schema = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":{"type":"string","logicalType":"uuid"}},
        {"name":"fixed","type":["null",{"type":"fixed","name":"F","size":16,"logicalType":"uuid"}]}]}"#;
    let mut b = Vec::new();
    string(&mut b, &id.to_uppercase());
    long(&mut b, 1);
    b.extend_from_slice(uuid::Uuid::parse_str(id).unwrap().as_bytes());
    let mut null = Vec::new();
    string(&mut null, id);
    long(&mut null, 0);
    let input = avro(schema, &[b, null]);
    assert_eq!(
        input.schema().field(0).data_type(),
        &DataType::FixedSizeBinary(16)
    );
    let out = conform(
        &input,
        &ddl("id STRING, fixed STRING"),
        EvolutionPolicy::Fail,
    )
    .batch;
    let ids = out.column(0).as_string::<i32>();
    assert_eq!((ids.value(0), ids.value(1)), (id, id));
    let fixed = out.column(1).as_string::<i32>();
    assert_eq!(fixed.value(0), id);
    assert!(fixed.is_null(1));
    // New uuid columns become STRING; a plain fixed(16) BINARY.
    let out = conform(&input, &ddl("x INT"), EvolutionPolicy::AddColumns).batch;
    assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
    assert_eq!(out.column(1).as_string::<i32>().value(0), id);
    let plain = batch(
        vec![field("f", DataType::FixedSizeBinary(16), false)],
        vec![Arc::new(
            FixedSizeBinaryArray::try_from_iter([[7u8; 16]].iter()).unwrap(),
        )],
    );
    let out = conform(&plain, &ddl("x INT"), EvolutionPolicy::AddColumns).batch;
    assert_eq!(out.column(1).as_binary::<i32>().value(0), &[7u8; 16]);
}

const NESTED_V1: &str = r#"{"type":"record","name":"E","fields":[
    {"name":"id","type":"long"},
    {"name":"user","type":{"type":"record","name":"U","fields":[
        {"name":"name","type":"string"},{"name":"age","type":"int"}]}}]}"#;

fn nested() -> RecordBatch {
    let mut b = Vec::new();
    long(&mut b, 1);
    string(&mut b, "ann");
    long(&mut b, 30);
    avro(NESTED_V1, &[b])
}

#[test]
fn new_nested_field_follows_the_policy() {
    let input = nested();
    let table = ddl("id BIGINT, user STRUCT<name: STRING, email: STRING>");
    // add_columns: `user.age` is added at the end of the struct.
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
    assert_eq!(c.new_fields(), ["user.age"]);
    let out = c.apply(&input).unwrap().batch;
    let user = out.column(1).as_struct();
    let names: Vec<_> = user.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["name", "email", "age"]);
    assert!(user.fields()[2].is_nullable());
    assert_eq!(user.column(0).as_string::<i32>().value(0), "ann");
    assert!(user.column(1).is_null(0));
    assert_eq!(user.column(2).as_primitive::<Int32Type>().value(0), 30);
    delta_storable(&out.schema());
    // ignore: dropped, still reported.
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Ignore).unwrap();
    assert_eq!(c.new_fields(), ["user.age"]);
    assert_eq!(c.output_schema().as_ref(), &table);
    let out = c.apply(&input).unwrap().batch;
    assert_eq!(out.column(1).as_struct().num_columns(), 2);
    // fail: names it and the fix.
    let err = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap_err();
    assert!(matches!(&err, ConformError::NewFields { fields } if fields == &["user.age"]));
    let text = err.to_string();
    assert!(
        text.contains("`user.age`") && text.contains("add_columns"),
        "{text}"
    );
}

#[test]
fn new_top_level_fields_follow_the_policy() {
    let input = nested();
    let table = ddl("id BIGINT");
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
    assert_eq!(c.new_fields(), ["user"]);
    let user = c.output_schema().field(1);
    assert_eq!(user.name(), "user");
    assert!(user.is_nullable());
    let DataType::Struct(fields) = user.data_type() else {
        panic!()
    };
    assert!(
        fields.iter().all(|f| f.is_nullable()),
        "new columns are nullable all through"
    );
    let out = c.apply(&input).unwrap().batch;
    assert_eq!(
        out.column(1)
            .as_struct()
            .column(0)
            .as_string::<i32>()
            .value(0),
        "ann"
    );
    delta_storable(&out.schema());

    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Ignore).unwrap();
    assert_eq!(c.output_schema().as_ref(), &table);
    assert_eq!(c.apply(&input).unwrap().batch.num_columns(), 1);

    let err = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap_err();
    assert!(matches!(err, ConformError::NewFields { fields } if fields == ["user"]));
}

#[test]
fn new_fields_delta_cannot_hold() {
    let input = Schema::new(vec![
        field("id", DataType::Int64, false),
        field(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
            false,
        ),
    ]);
    let (name, text) = incompatible(&input, &ddl("id BIGINT"));
    assert_eq!(name, "at");
    assert!(text.contains("nanoseconds"), "{text}");
    // Ignored, they are no problem.
    Conformer::new(&input, &ddl("id BIGINT"), EvolutionPolicy::Ignore).unwrap();
    // A name differing only in case would clash in Delta.
    let input = Schema::new(vec![field("ID", DataType::Int64, false)]);
    let (_, text) = incompatible(&input, &ddl("id BIGINT"));
    assert!(text.contains("case"), "{text}");
}

#[test]
fn nulls_in_not_null_columns_reject_their_rows() {
    let input = batch(
        vec![
            field("id", DataType::Int64, true),
            field(
                "user",
                DataType::Struct(vec![field("name", DataType::Utf8, true)].into()),
                true,
            ),
        ],
        vec![
            Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                Some(3),
                Some(4),
                Some(5),
            ])),
            Arc::new(StructArray::new(
                vec![field("name", DataType::Utf8, true)].into(),
                vec![Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    None,
                    Some("e"),
                ]))],
                // Row 3's user is null: its null name is no violation.
                Some(NullBuffer::from(vec![true, true, true, false, true])),
            )),
        ],
    );
    let table = ddl("id BIGINT NOT NULL, user STRUCT<name: STRING NOT NULL>");
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap();
    let out = c.apply(&input).unwrap();
    assert_eq!(out.rows, vec![0, 3, 4]);
    assert_eq!(out.rejected.len(), 2);
    assert_eq!(out.rejected[0].0, 1);
    assert!(
        out.rejected[0].1.contains("`id` is NOT NULL"),
        "{}",
        out.rejected[0].1
    );
    assert_eq!(out.rejected[1].0, 2);
    assert!(
        out.rejected[1].1.contains("`user.name`"),
        "{}",
        out.rejected[1].1
    );
    let ids: Vec<_> = out
        .batch
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, [1, 4, 5]);
    assert!(!out.batch.schema().field(0).is_nullable());
    // Without nulls, nothing is rejected and nothing copied.
    let clean = input.slice(3, 2);
    let out = c.apply(&clean).unwrap();
    assert_eq!(out.rows, vec![0, 1]);
    assert!(Arc::ptr_eq(out.batch.column(0), clean.column(0)));
}

#[test]
fn null_list_elements_reject_their_rows() {
    let item = Arc::new(field("item", DataType::Int32, true));
    let mut builder = ListBuilder::new(arrow::array::Int32Builder::new());
    builder.append_value([Some(1), Some(2)]);
    builder.append_value([Some(3), None]);
    builder.append_null();
    builder.append_value([Some(4)]);
    let list = builder.finish();
    assert_eq!(list.data_type(), &DataType::List(item));
    let input = batch(
        vec![field("xs", list.data_type().clone(), true)],
        vec![Arc::new(list)],
    );
    let table = Schema::new(vec![field(
        "xs",
        DataType::List(Arc::new(field("element", DataType::Int64, false))),
        true,
    )]);
    let out = conform(&input, &table, EvolutionPolicy::Fail);
    assert_eq!(out.rows, vec![0, 2, 3]);
    assert_eq!(out.rejected[0].0, 1);
    assert!(out.rejected[0].1.contains("`xs.element`"));
    let xs = out.batch.column(0).as_list::<i32>();
    assert!(xs.is_null(1));
    assert_eq!(
        xs.value(2)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        4
    );
    // A slice of the same batch (offsets not starting at 0) conforms too.
    let out = conform(&input.slice(2, 2), &table, EvolutionPolicy::Fail);
    assert_eq!(out.rows, vec![0, 1]);
    let xs = out.batch.column(0).as_list::<i32>();
    assert_eq!(
        xs.value(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec(),
        [4]
    );
}

#[test]
fn out_of_range_timestamps_reject_their_rows() {
    let input = batch(
        vec![field(
            "at",
            DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            false,
        )],
        vec![Arc::new(
            TimestampSecondArray::from(vec![1, i64::MAX / 10, 2]).with_timezone("UTC"),
        )],
    );
    let out = conform(&input, &ddl("at TIMESTAMP"), EvolutionPolicy::Fail);
    assert_eq!(out.rows, vec![0, 2]);
    assert_eq!(out.rejected[0].0, 1);
    assert!(out.rejected[0].1.contains("out of the range"));
    let at = out
        .batch
        .column(0)
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(at.values().to_vec(), [1_000_000, 2_000_000]);
}

#[test]
fn lists_and_maps_convert_element_by_element() {
    let schema = r#"{"type":"record","name":"E","fields":[
        {"name":"xs","type":{"type":"array","items":"int"}},
        {"name":"m","type":{"type":"map","values":"int"}},
        {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[
            {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}}]}"#;
    let mut b = Vec::new();
    long(&mut b, 2); // xs: one block of 2
    long(&mut b, 7);
    long(&mut b, 8);
    long(&mut b, 0);
    long(&mut b, 1); // m: one block of 1
    string(&mut b, "k");
    long(&mut b, 9);
    long(&mut b, 0);
    long(&mut b, 1); // items: one
    string(&mut b, "s1");
    long(&mut b, 3);
    long(&mut b, 0);
    let input = avro(schema, &[b]);
    let table = ddl("xs ARRAY<BIGINT>, m MAP<STRING, BIGINT>, items ARRAY<STRUCT<sku: STRING>>");
    let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
    assert_eq!(c.new_fields(), ["items.element.qty"]);
    let out = c.apply(&input).unwrap().batch;
    delta_storable(&out.schema());
    let xs = out.column(0).as_list::<i32>().value(0);
    assert_eq!(
        xs.as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec(),
        [7, 8]
    );
    let m = out.column(1).as_map();
    assert_eq!(m.keys().as_string::<i32>().value(0), "k");
    assert_eq!(
        m.values()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        9
    );
    let items = out.column(2).as_list::<i32>().value(0);
    let items = items.as_struct();
    assert_eq!(items.column(0).as_string::<i32>().value(0), "s1");
    assert_eq!(items.column(1).as_primitive::<Int32Type>().value(0), 3);
}

#[test]
fn null_typed_fields_and_dictionaries() {
    let dict: DictionaryArray<Int32Type> = vec![Some("a"), None].into_iter().collect();
    let input = batch(
        vec![
            field("n", DataType::Null, true),
            field("d", dict.data_type().clone(), true),
        ],
        vec![Arc::new(NullArray::new(2)), Arc::new(dict)],
    );
    let out = conform(&input, &ddl("n INT, d STRING"), EvolutionPolicy::Fail).batch;
    assert_eq!(out.column(0).null_count(), 2);
    assert_eq!(out.column(1).as_string::<i32>().value(0), "a");
    assert!(out.column(1).is_null(1));
    // An all-null field has no Delta type of its own.
    assert!(Conformer::new(
        &input.schema(),
        &ddl("d STRING"),
        EvolutionPolicy::AddColumns
    )
    .is_err());
}

#[test]
fn rejects_batches_of_another_schema() {
    let c = Conformer::new(
        &users().schema(),
        &ddl("id BIGINT"),
        EvolutionPolicy::Ignore,
    )
    .unwrap();
    let other = batch(
        vec![field("id", DataType::Int32, false)],
        vec![Arc::new(Int32Array::from(vec![1]))],
    );
    assert!(matches!(c.apply(&other), Err(ConformError::Arrow(_))));
}

#[test]
fn nanosecond_table_column_still_takes_same_type() {
    let input = batch(
        vec![field(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )],
        vec![Arc::new(TimestampNanosecondArray::from(vec![1]))],
    );
    let out = conform(&input, &input.schema(), EvolutionPolicy::Fail);
    assert!(Arc::ptr_eq(out.batch.column(0), input.column(0)));
}

#[test]
fn policy_config_names() {
    let p = |s: &str| serde_json::from_str::<EvolutionPolicy>(s).unwrap();
    assert_eq!(p("\"add_columns\""), EvolutionPolicy::AddColumns);
    assert_eq!(p("\"fail\""), EvolutionPolicy::Fail);
    assert_eq!(p("\"ignore\""), EvolutionPolicy::Ignore);
    assert_eq!(EvolutionPolicy::default(), EvolutionPolicy::AddColumns);
    assert!(serde_json::from_str::<EvolutionPolicy>("\"merge\"").is_err());
}
