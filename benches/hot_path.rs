//! Micro-benchmarks of the hot path's stages, one chunk at a time:
//! JSON → Arrow decode, Confluent Avro and Protobuf → Arrow decode (equal
//! records), Kafka metadata
//! columns, transforms, CHECK constraint evaluation, and Parquet encoding.
//! `cargo bench --bench hot_path` (or `scripts/bench.sh --micro`).

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inlet::config::MetadataColumns;
use inlet::config::TransformSpec;
use inlet::conform::assemble;
use inlet::conform::constraints::Constraints;
use inlet::decode::JsonDecoder;
use inlet::decode::{AvroDecoder, ProtobufDecoder};
use inlet::record::{KafkaRecord, Rejections};
use inlet::schema::{table_schema, TableLayout};
use inlet::transform::TransformPlan;
use parquet::arrow::ArrowWriter;

mod support;
use support::{avro_payload, payload, AVRO_SCHEMA};

const CHUNK: usize = 8192;
const DDL: &str = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, \
                   country STRING, session STRING, page STRING";

/// A message as the consumer hands it over.
struct Rec {
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl KafkaRecord for Rec {
    fn topic(&self) -> &str {
        "events"
    }
    fn partition(&self) -> i32 {
        3
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Some(1_714_564_800_000 + self.offset)
    }
    fn key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
    fn value(&self) -> Option<&[u8]> {
        Some(&self.value)
    }
    fn for_each_header(&self, _f: &mut dyn FnMut(&str, Option<&[u8]>)) {}
}

/// Chunk `k`: events `k * CHUNK ..`.
fn records(k: u64) -> Vec<Rec> {
    (k * CHUNK as u64..(k + 1) * CHUNK as u64)
        .map(|i| Rec {
            offset: i as i64,
            key: format!("k{i}").into_bytes(),
            value: {
                let mut s = String::new();
                payload(i, &mut s);
                s.into_bytes()
            },
        })
        .collect()
}

fn layout() -> TableLayout {
    let meta = MetadataColumns {
        topic: Some("_topic".into()),
        partition: Some("_partition".into()),
        offset: Some("_offset".into()),
        timestamp: Some("_ts".into()),
        key: Some("_key".into()),
        headers: None,
    };
    let schema = table_schema(DDL, &meta).unwrap();
    TableLayout::new(Arc::new(schema), &meta)
}

fn decode(
    decoder: &mut JsonDecoder,
    recs: &[Rec],
    good: &mut Vec<usize>,
    rejected: &mut Rejections,
) -> RecordBatch {
    let values: Vec<Option<&[u8]>> = recs.iter().map(KafkaRecord::value).collect();
    rejected.clear();
    decoder.decode(&values, good, rejected).unwrap()
}

fn benches(c: &mut Criterion) {
    let recs = records(0);
    let bytes: usize = recs.iter().map(|r| r.value.len()).sum();
    let layout = layout();
    let mut decoder = JsonDecoder::new(layout.value.clone()).unwrap();
    let (mut good, mut rejected) = (Vec::new(), Rejections::new());

    let mut g = c.benchmark_group("json_decode");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("8192_messages", |b| {
        b.iter(|| black_box(decode(&mut decoder, &recs, &mut good, &mut rejected)))
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("8192_messages_bytes", |b| {
        b.iter(|| black_box(decode(&mut decoder, &recs, &mut good, &mut rejected)))
    });
    g.finish();

    avro(c);
    protobuf(c);

    let values = decode(&mut decoder, &recs, &mut good, &mut rejected);
    transforms(c, &values);
    let mut g = c.benchmark_group("metadata_columns");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("assemble_8192", |b| {
        b.iter(|| black_box(assemble(&layout, &values, &recs, &good).unwrap()))
    });
    g.finish();

    let batch = assemble(&layout, &values, &recs, &good).unwrap();
    let props = std::collections::HashMap::from([(
        "delta.constraints.amount_range".to_string(),
        "amount >= 0 AND amount < 1000".to_string(),
    )]);
    let constraints = Constraints::from_properties(&props, &batch.schema()).unwrap();
    let mut g = c.benchmark_group("constraints");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("check_8192", |b| {
        b.iter(|| black_box(constraints.violations(&batch).unwrap()))
    });
    g.finish();

    // 16 different chunks (131072 distinct events, as dictionary encoding
    // would see them): one 128 Ki-row row group, as the sink writes them.
    let batches: Vec<RecordBatch> = (0..16)
        .map(|k| {
            let recs = records(k);
            let values = decode(&mut decoder, &recs, &mut good, &mut rejected);
            assemble(&layout, &values, &recs, &good).unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("parquet_encode");
    g.throughput(Throughput::Elements((CHUNK * 16) as u64));
    g.sample_size(20);
    // inlet's settings, and snappy with parquet's default 1 MiB dictionary
    // page limit (inlet's before it was lowered) for comparison.
    let variants = [
        (
            "snappy",
            inlet::sink::writer_properties(inlet::config::Compression::Snappy),
        ),
        (
            "zstd",
            inlet::sink::writer_properties(inlet::config::Compression::Zstd),
        ),
        (
            "snappy_dict_1mib",
            parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_max_row_group_row_count(Some(1 << 17))
                .build(),
        ),
    ];
    for (name, props) in variants {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Vec::with_capacity(32 << 20),
                |mut out| {
                    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props.clone()))
                        .unwrap();
                    for b in &batches {
                        w.write(b).unwrap();
                    }
                    w.close().unwrap();
                    black_box(out.len())
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Confluent-framed Avro (about 200 B a record) into Arrow, one chunk.
fn avro(c: &mut Criterion) {
    const ID: u32 = 7;
    let frames: Vec<Vec<u8>> = (0..CHUNK as u64)
        .map(|i| {
            let mut v = Vec::new();
            avro_payload(i, ID, &mut v);
            v
        })
        .collect();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let messages: Vec<(usize, &[u8])> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.as_slice()))
        .collect();
    let mut decoder = AvroDecoder::new();
    decoder.add_schema(ID, AVRO_SCHEMA).unwrap();
    let (mut good, mut rejected) = (Vec::new(), Rejections::new());
    let mut run = |good: &mut Vec<usize>, rejected: &mut Rejections| {
        good.clear();
        rejected.clear();
        decoder.decode(ID, &messages, good, rejected).unwrap()
    };
    let b = run(&mut good, &mut rejected);
    assert_eq!((b.num_rows(), rejected.len()), (CHUNK, 0), "{rejected:?}");
    let mut g = c.benchmark_group("avro_decode");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("8192_messages", |b| {
        b.iter(|| black_box(run(&mut good, &mut rejected)))
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("8192_messages_bytes", |b| {
        b.iter(|| black_box(run(&mut good, &mut rejected)))
    });
    g.finish();
}

/// The events of [`avro`] as Confluent-framed Protobuf (the same fields
/// and values; `event_time` a `google.protobuf.Timestamp`), one chunk.
fn protobuf(c: &mut Criterion) {
    use prost_reflect::prost::Message as _;
    use prost_reflect::{DynamicMessage, Value};
    const ID: u32 = 8;
    let schema = inlet::registry::ResolvedSchema {
        id: ID,
        kind: inlet::registry::SchemaKind::Protobuf,
        schema: support::PROTO_SCHEMA.to_string(),
        references: Vec::new(),
    };
    let file = inlet::decode::compile_schema(&schema).unwrap();
    let desc = file.messages().next().unwrap();
    let ts = desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let frames: Vec<Vec<u8>> = (0..CHUNK as u64)
        .map(|id| {
            let e = support::event_fields(id);
            let mut m = DynamicMessage::new(desc.clone());
            m.set_field_by_name("id", Value::I64(id as i64));
            m.set_field_by_name("user", Value::String(e.user));
            m.set_field_by_name("action", Value::String(e.action.into()));
            m.set_field_by_name("amount", Value::F64(e.amount));
            let mut t = DynamicMessage::new(ts.clone());
            t.set_field_by_name("seconds", Value::I64(e.event_time_us / 1_000_000));
            t.set_field_by_name(
                "nanos",
                Value::I32((e.event_time_us % 1_000_000) as i32 * 1000),
            );
            m.set_field_by_name("event_time", Value::Message(t));
            m.set_field_by_name("country", Value::String(e.country.into()));
            m.set_field_by_name("session", Value::String(e.session));
            m.set_field_by_name("page", Value::String(e.page));
            m.set_field_by_name("user_agent", Value::String(e.user_agent.into()));
            if let Some(r) = e.referrer {
                m.set_field_by_name("referrer", Value::String(r.into()));
            }
            // Magic byte, schema id, message index [0], body.
            let mut v = vec![0];
            v.extend_from_slice(&ID.to_be_bytes());
            v.push(0);
            v.extend_from_slice(&m.encode_to_vec());
            v
        })
        .collect();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let messages: Vec<(usize, &[u8])> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.as_slice()))
        .collect();
    let mut decoder = ProtobufDecoder::new();
    decoder.add_schema(ID, &schema).unwrap();
    let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
    let mut run = |parts: &mut Vec<inlet::decode::Part>, rejected: &mut Rejections| {
        parts.clear();
        rejected.clear();
        decoder.decode(ID, &messages, parts, rejected).unwrap();
    };
    run(&mut parts, &mut rejected);
    assert_eq!(
        (parts[0].batch.num_rows(), rejected.len()),
        (CHUNK, 0),
        "{rejected:?}"
    );
    let mut g = c.benchmark_group("protobuf_decode");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.bench_function("8192_messages", |b| {
        b.iter(|| run(black_box(&mut parts), &mut rejected))
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("8192_messages_bytes", |b| {
        b.iter(|| run(black_box(&mut parts), &mut rejected))
    });
    g.finish();
}

fn plan(specs: serde_json::Value, input: &RecordBatch) -> TransformPlan {
    let specs: Vec<TransformSpec> = serde_json::from_value(specs).unwrap();
    TransformPlan::compile(&specs, input.schema()).unwrap()
}

/// Transforms over one decoded chunk: each alone, and a typical list.
fn transforms(c: &mut Criterion, decoded: &RecordBatch) {
    use arrow::datatypes::{DataType, Field, Schema};
    use serde_json::json;
    // The event as a producer in camelCase with a string timestamp sends it.
    let mut json = JsonDecoder::new(Arc::new(
        inlet::schema::parse_ddl(
            "id BIGINT, userName STRING, action STRING, amount DOUBLE, eventTime STRING, \
             country STRING, session STRING, page STRING",
        )
        .unwrap(),
    ))
    .unwrap();
    let raw_values: Vec<Vec<u8>> = (0..CHUNK as u64)
        .map(|i| {
            let mut s = String::new();
            payload(i, &mut s);
            s.replace("\"user\"", "\"userName\"")
                .replace("\"event_time\"", "\"eventTime\"")
                .into_bytes()
        })
        .collect();
    let values: Vec<Option<&[u8]>> = raw_values.iter().map(|v| Some(v.as_slice())).collect();
    let (mut good, mut bad) = (Vec::new(), Rejections::new());
    let camel = json.decode(&values, &mut good, &mut bad).unwrap();
    assert_eq!(camel.num_rows(), CHUNK);
    // The same in snake_case, event_time still a string.
    let snake_schema = Arc::new(Schema::new(
        camel
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let name = match f.name().as_str() {
                    "userName" => "user",
                    "eventTime" => "event_time",
                    n => n,
                };
                Field::new(name, f.data_type().clone(), f.is_nullable())
            })
            .collect::<Vec<_>>(),
    ));
    let snake = RecordBatch::try_new(snake_schema, camel.columns().to_vec()).unwrap();
    assert_eq!(
        decoded
            .schema()
            .field_with_name("event_time")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
    );
    let cases: Vec<(&str, serde_json::Value, &RecordBatch)> = vec![
        ("snake_case", json!([{"op": "snake_case"}]), &camel),
        (
            "timestamp_parse",
            json!([{"op": "timestamp", "column": "event_time"}]),
            &snake,
        ),
        (
            "derive_date",
            json!([{"op": "derive", "column": "event_date", "expr": "to_date(event_time)"}]),
            decoded,
        ),
        (
            "sql_upper",
            json!([{"op": "sql", "query": "SELECT *, upper(action) AS action_upper FROM input"}]),
            decoded,
        ),
        (
            "hash",
            json!([{"op": "hash", "columns": ["session"], "salt": "pepper"}]),
            decoded,
        ),
        (
            "all_five",
            json!([
                {"op": "snake_case"},
                {"op": "timestamp", "column": "event_time"},
                {"op": "derive", "column": "event_date", "expr": "to_date(event_time)"},
                {"op": "sql", "query": "SELECT *, upper(action) AS action_upper FROM input"},
                {"op": "hash", "columns": ["session"], "salt": "pepper"}
            ]),
            &camel,
        ),
    ];
    let mut g = c.benchmark_group("transform");
    g.throughput(Throughput::Elements(CHUNK as u64));
    for (name, specs, input) in cases {
        let p = plan(specs, input);
        let out = p.apply(input).unwrap();
        assert_eq!(
            (out.batch.num_rows(), out.rejected.len()),
            (CHUNK, 0),
            "{name}"
        );
        g.bench_function(name, |b| b.iter(|| black_box(p.apply(input).unwrap())));
    }
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
