//! Micro-benchmarks of the hot path's stages, one chunk at a time:
//! JSON → Arrow decode, Kafka metadata columns, CHECK constraint evaluation,
//! and Parquet encoding. `cargo bench --bench hot_path` (or
//! `scripts/bench.sh --micro`). Avro decode and transforms join when they
//! exist (issue 3).

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inlet::config::MetadataColumns;
use inlet::constraints::Constraints;
use inlet::decode::{assemble, JsonDecoder, KafkaRecord, Rejection};
use inlet::schema::{table_schema, TableLayout};
use parquet::arrow::ArrowWriter;

mod support;
use support::payload;

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

fn records() -> Vec<Rec> {
    (0..CHUNK as u64)
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
    rejected: &mut Vec<Rejection>,
) -> RecordBatch {
    let values: Vec<Option<&[u8]>> = recs.iter().map(KafkaRecord::value).collect();
    rejected.clear();
    decoder.decode(&values, good, rejected).unwrap()
}

fn benches(c: &mut Criterion) {
    let recs = records();
    let bytes: usize = recs.iter().map(|r| r.value.len()).sum();
    let layout = layout();
    let mut decoder = JsonDecoder::new(layout.value.clone()).unwrap();
    let (mut good, mut rejected) = (Vec::new(), Vec::new());

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

    let values = decode(&mut decoder, &recs, &mut good, &mut rejected);
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

    // 16 chunks: one 128 Ki-row row group, as the sink writes them.
    let batches: Vec<RecordBatch> = (0..16).map(|_| batch.clone()).collect();
    let mut g = c.benchmark_group("parquet_encode");
    g.throughput(Throughput::Elements((CHUNK * 16) as u64));
    g.sample_size(20);
    for (name, codec) in [
        ("snappy", inlet::config::Compression::Snappy),
        ("zstd", inlet::config::Compression::Zstd),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Vec::with_capacity(32 << 20),
                |mut out| {
                    let mut w = ArrowWriter::try_new(
                        &mut out,
                        batch.schema(),
                        Some(inlet::sink::writer_properties(codec)),
                    )
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

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
