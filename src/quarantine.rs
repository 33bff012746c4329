//! The quarantine table: every message that cannot become a row lands here
//! with its coordinates, raw bytes and reason, exactly once.
//!
//! Protocol: a batch's quarantine rows are committed *before* its data, with
//! txn actions of their own (same appId scheme, in the quarantine table's
//! log) whose version is the last offset of the batch. On a retry after a
//! crash or a fenced batch, quarantine rows at or below the stored version
//! are dropped, so each rejected offset is in the quarantine table once, and
//! every consumed offset is in exactly one of the two tables.
//!
//! A range of offsets the broker deleted before inlet read them
//! (`fail_on_data_loss = false`) is one row with stage `lost`: `offset` is
//! the first lost offset, the header `inlet.lost.last_offset` the last (as
//! decimal text), `key`, `value` and `timestamp` are null, and `error`
//! names the range. It travels with the partition's next batch like any
//! rejected message, and is trimmed by its last offset, so a retry stores it
//! once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int32Builder, Int64Builder, MapArray,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use arrow::error::ArrowError;

use crate::config::{MetadataColumns, TableConfig};
use crate::record::{KafkaRecord, Rejection, Stage};
use crate::source::loss::LOST_LAST_OFFSET_HEADER;

/// The quarantine table's columns, in Spark DDL.
pub const QUARANTINE_DDL: &str = "topic STRING NOT NULL, partition INT NOT NULL, \
    offset BIGINT NOT NULL, timestamp TIMESTAMP, key BINARY, value BINARY, \
    headers MAP<STRING, BINARY>, stage STRING NOT NULL, error STRING NOT NULL";

/// The table config of the quarantine table of `table`.
pub fn table_config(table: &TableConfig, uri: &str) -> TableConfig {
    TableConfig {
        uri: uri.to_string(),
        schema: Some(QUARANTINE_DDL.to_string()),
        partition_by: Vec::new(),
        cluster_by: Vec::new(),
        identity: Vec::new(),
        input_schema: None,
        key_format: Default::default(),
        key_schema: None,
        max_value_bytes: table.max_value_bytes,
        max_nesting_depth: table.max_nesting_depth,
        properties: Default::default(),
        metadata_columns: MetadataColumns::default(),
        storage_options: table.storage_options.clone(),
        compression: table.compression,
        target_file_size: table.target_file_size,
        checkpoint_interval: table.checkpoint_interval,
        quarantine_uri: None,
        // Quarantine tables stay small; never compacted in the background.
        compaction: Default::default(),
        evolution: crate::config::EvolutionPolicy::Fail,
        transforms: Vec::new(),
        // Quarantine rows are appended, whatever the table's mode.
        mode: Default::default(),
        keys: Vec::new(),
        sequence_by: None,
        delete_when: None,
        tombstones: Default::default(),
        tombstone_retention: None,
        history: Default::default(),
        deletion_vectors: Default::default(),
    }
}

/// Builds quarantine rows for `rejected` messages of `records`.
pub fn rows<R: KafkaRecord>(
    records: &[R],
    rejected: &[Rejection],
) -> Result<RecordBatch, ArrowError> {
    let n = rejected.len();
    let mut topic = StringBuilder::new();
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut key = BinaryBuilder::new();
    let mut value = BinaryBuilder::new();
    let mut stage = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut headers_of = Vec::with_capacity(n);
    for r in rejected {
        let m = &records[r.index];
        topic.append_value(m.topic());
        partition.append_value(m.partition());
        offset.append_value(m.offset());
        ts.append_option(m.timestamp_ms().map(|t| t * 1000));
        key.append_option(m.key());
        value.append_option(m.value());
        stage.append_value(r.stage.as_str());
        error.append_value(&r.reason);
        headers_of.push(r.index);
    }
    let headers = crate::conform::headers_column(records, &headers_of);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(ts.finish()),
        Arc::new(key.finish()),
        Arc::new(value.finish()),
        headers,
        Arc::new(stage.finish()),
        Arc::new(error.finish()),
    ];
    RecordBatch::try_new(quarantine_schema(), columns)
}

/// The Arrow schema of quarantine rows.
pub fn quarantine_schema() -> SchemaRef {
    thread_local! {
        static SCHEMA: SchemaRef = Arc::new(
            crate::schema::parse_ddl(QUARANTINE_DDL).expect("the quarantine DDL parses"),
        );
    }
    SCHEMA.with(Clone::clone)
}

/// Drops rows whose (topic, partition) already stores a version at or past
/// their offset (for a `lost` row, the last offset of its range). `stored`
/// maps (topic, partition) to the stored version.
pub fn trim(
    batch: &RecordBatch,
    stored: &HashMap<(String, i32), i64>,
) -> Result<RecordBatch, ArrowError> {
    let topics = batch.column(0).as_string::<i32>();
    let partitions = batch.column(1).as_primitive::<Int32Type>();
    let offsets = batch.column(2).as_primitive::<Int64Type>();
    let headers = batch.column(6).as_map();
    let stages = batch.column(7).as_string::<i32>();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let key = (topics.value(i).to_string(), partitions.value(i));
            let offset = if stages.value(i) == Stage::Lost.as_str() {
                lost_last(headers, i).unwrap_or(offsets.value(i))
            } else {
                offsets.value(i)
            };
            Some(stored.get(&key).is_none_or(|&s| offset > s))
        })
        .collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    arrow::compute::filter_record_batch(batch, &keep)
}

/// The last offset of the `lost` row `i`, from its header.
fn lost_last(headers: &MapArray, i: usize) -> Option<i64> {
    if headers.is_null(i) {
        return None;
    }
    let entries = headers.value(i);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_binary::<i32>();
    (0..entries.len())
        .find(|&j| keys.value(j) == LOST_LAST_OFFSET_HEADER && !values.is_null(j))
        .and_then(|j| std::str::from_utf8(values.value(j)).ok()?.parse().ok())
}

/// Rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_ddl_parses_to_the_expected_columns() {
        let s = quarantine_schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "topic",
                "partition",
                "offset",
                "timestamp",
                "key",
                "value",
                "headers",
                "stage",
                "error"
            ]
        );
        assert!(!s.field(2).is_nullable());
        assert!(s.field(5).is_nullable(), "tombstones have no value");
        assert_eq!(s.field(6).data_type(), &crate::schema::headers_type());
    }

    #[test]
    fn trim_keeps_rows_past_the_stored_version() {
        let s = quarantine_schema();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::StringArray::from(vec!["t", "t", "t", "u"])),
            Arc::new(arrow::array::Int32Array::from(vec![0, 0, 1, 0])),
            Arc::new(arrow::array::Int64Array::from(vec![5, 9, 3, 1])),
            arrow::array::new_null_array(s.field(3).data_type(), 4),
            arrow::array::new_null_array(s.field(4).data_type(), 4),
            arrow::array::new_null_array(s.field(5).data_type(), 4),
            arrow::array::new_null_array(s.field(6).data_type(), 4),
            Arc::new(arrow::array::StringArray::from(vec!["decode"; 4])),
            Arc::new(arrow::array::StringArray::from(vec!["bad"; 4])),
        ];
        let b = RecordBatch::try_new(s, cols).unwrap();
        let stored = HashMap::from([(("t".to_string(), 0), 5), (("t".to_string(), 1), 3)]);
        let kept = trim(&b, &stored).unwrap();
        let offsets = kept.column(2).as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![9, 1]);
    }

    #[test]
    fn a_lost_range_is_trimmed_by_its_last_offset() {
        use crate::record::{LostRange, Next};
        use crate::source::loss::LostRecord;
        let range = LostRange {
            source: "s".into(),
            topic: "t".into(),
            partition: 0,
            next: Next::Stored(9),
            first_available: 100,
            last: 99,
        };
        let b = rows(
            &[LostRecord::new(&range)],
            &[Rejection::new(0, Stage::Lost, range.describe())],
        )
        .unwrap();
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 10);
        assert_eq!(lost_last(b.column(6).as_map(), 0), Some(99));
        assert_eq!(b.column(7).as_string::<i32>().value(0), "lost");
        // Stored inside the range (a batch's quarantine commit whose data
        // commit did not happen): the range is still recorded.
        for (stored, kept) in [(9, 1), (50, 1), (99, 0), (120, 0)] {
            let s = HashMap::from([(("t".to_string(), 0), stored)]);
            assert_eq!(trim(&b, &s).unwrap().num_rows(), kept, "stored {stored}");
        }
    }
}
