//! Kafka metadata columns, built with Arrow builders (no per-message values),
//! and the final table-ordered batch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;

use crate::config::MetadataKind;
use crate::record::KafkaRecord;
use crate::schema::TableLayout;

/// Builds the table's batch: decoded value columns, and metadata columns for
/// the messages at `good` (the rows of `values`, in order).
pub fn assemble<R: KafkaRecord>(
    layout: &TableLayout,
    values: &RecordBatch,
    records: &[R],
    good: &[usize],
) -> Result<RecordBatch, ArrowError> {
    assemble_with_key(layout, values, records, good, None)
}

/// [`assemble`], with the key column already decoded (`key_format` other
/// than `bytes`).
pub fn assemble_with_key<R: KafkaRecord>(
    layout: &TableLayout,
    values: &RecordBatch,
    records: &[R],
    good: &[usize],
    key: Option<&ArrayRef>,
) -> Result<RecordBatch, ArrowError> {
    debug_assert_eq!(values.num_rows(), good.len());
    let mut value_cols = values.columns().iter();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.sources.len());
    for source in &layout.sources {
        let col = match source {
            None => value_cols
                .next()
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError("value column missing".into()))?,
            Some(MetadataKind::Key) if key.is_some() => key
                .cloned()
                .unwrap_or_else(|| metadata_column(MetadataKind::Key, records, good)),
            Some(kind) => metadata_column(*kind, records, good),
        };
        columns.push(col);
    }
    RecordBatch::try_new(layout.table.clone(), columns)
}

fn metadata_column<R: KafkaRecord>(kind: MetadataKind, records: &[R], good: &[usize]) -> ArrayRef {
    let rows = good.iter().map(|&i| &records[i]);
    let n = good.len();
    match kind {
        MetadataKind::Topic => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            // A chunk's rows come in runs of one topic: the name (a strlen
            // and a UTF-8 check in librdkafka's binding) is read once per run.
            let mut last: Option<(usize, &str)> = None;
            for r in rows {
                let name = match (last, r.topic_handle()) {
                    (Some((h, name)), Some(now)) if h == now => name,
                    (_, handle) => {
                        let name = r.topic();
                        last = handle.map(|h| (h, name));
                        name
                    }
                };
                b.append_value(name);
            }
            Arc::new(b.finish())
        }
        MetadataKind::Partition => {
            let mut b = Int32Builder::with_capacity(n);
            rows.for_each(|r| b.append_value(r.partition()));
            Arc::new(b.finish())
        }
        MetadataKind::Offset => {
            let mut b = Int64Builder::with_capacity(n);
            rows.for_each(|r| b.append_value(r.offset()));
            Arc::new(b.finish())
        }
        MetadataKind::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            rows.for_each(|r| b.append_option(r.timestamp_ms().map(|ms| ms * 1000)));
            Arc::new(b.finish())
        }
        MetadataKind::Key => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            rows.for_each(|r| b.append_option(r.key()));
            Arc::new(b.finish())
        }
        MetadataKind::Headers => headers_column(records, good),
    }
}

/// Headers of the messages at `indices`, as `MAP<STRING, BINARY>`.
pub fn headers_column<R: KafkaRecord>(records: &[R], indices: &[usize]) -> ArrayRef {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), BinaryBuilder::new());
    for &i in indices {
        records[i].for_each_header(&mut |k, v| {
            b.keys().append_value(k);
            b.values().append_option(v);
        });
        // Infallible: keys and values were appended in pairs.
        b.append(true).expect("header keys and values are paired");
    }
    Arc::new(b.finish())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};

    use super::*;

    /// A record whose topic has a handle, as librdkafka's messages do.
    struct Rec {
        topic: &'static str,
        handle: Option<usize>,
    }

    impl KafkaRecord for Rec {
        fn topic(&self) -> &str {
            self.topic
        }
        fn topic_handle(&self) -> Option<usize> {
            self.handle
        }
        fn partition(&self) -> i32 {
            0
        }
        fn offset(&self) -> i64 {
            0
        }
        fn timestamp_ms(&self) -> Option<i64> {
            None
        }
        fn key(&self) -> Option<&[u8]> {
            None
        }
        fn value(&self) -> Option<&[u8]> {
            None
        }
        fn for_each_header(&self, _: &mut dyn FnMut(&str, Option<&[u8]>)) {}
    }

    #[test]
    fn topic_column_follows_runs_of_topics_and_records_without_handles() {
        let rec = |topic, handle| Rec { topic, handle };
        let records = [
            rec("a", Some(1)),
            rec("a", Some(1)),
            rec("b", Some(2)),
            rec("skipped", Some(3)),
            rec("a", Some(1)),
            rec("c", None),
            rec("d", None),
            rec("b", Some(2)),
        ];
        let good = [0, 1, 2, 4, 5, 6, 7];
        let col = metadata_column(MetadataKind::Topic, &records, &good);
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        let names: Vec<&str> = (0..col.len()).map(|i| col.value(i)).collect();
        assert_eq!(names, ["a", "a", "b", "a", "c", "d", "b"]);
    }
}
