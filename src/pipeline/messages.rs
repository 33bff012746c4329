//! The messages between the stages, in the order data flows: poll thread →
//! decode thread ([`RawChunk`]) → buffer stage ([`FetchEvent`], [`Chunk`]) →
//! commit stage ([`CommitRequest`], [`PendingCommit`]); [`Drained`] answers a
//! bounded run once everything before it is committed.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::kernel::Add;
use rdkafka::message::BorrowedMessage;

use crate::record::TopicPartition;

/// From the consumer thread to the buffer stage, in order.
#[derive(Debug)]
pub(super) enum FetchEvent {
    /// Decoded rows of one table.
    Chunk(Chunk),
    /// The assignment changed: drop everything buffered.
    Rebalanced {
        /// The new generation.
        generation: u64,
    },
    /// No more input: flush and stop.
    End,
    /// Flush everything, then answer the token once it is committed.
    Drain(Drained),
    /// The consumer hit an unrecoverable error.
    Fatal(String),
}

/// Decoded messages of one table.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Table index.
    pub table: usize,
    /// Assignment generation the messages were fetched in.
    pub generation: u64,
    /// Rows, in the table's schema.
    pub batch: RecordBatch,
    /// First and last offset per partition, rejected messages included.
    pub progress: BTreeMap<TopicPartition, (i64, i64)>,
    /// Rows per topic.
    pub rows_by_topic: Vec<(String, u64)>,
    /// Quarantine rows of the rejected messages (when configured).
    pub quarantine: Option<RecordBatch>,
    /// The rows of `batch` by partition, in row order: runs of rows of one
    /// partition (messages come in runs of one partition), so that the rows
    /// of a revoked partition can be dropped and the others kept.
    pub runs: Vec<(TopicPartition, usize)>,
}

impl Chunk {
    /// Keeps only the rows, offsets and quarantine rows of the partitions
    /// `keep` says; false when it kept everything.
    pub(super) fn retain(
        &mut self,
        keep: impl Fn(&TopicPartition) -> bool,
    ) -> Result<bool, arrow::error::ArrowError> {
        if self.progress.keys().all(&keep) {
            return Ok(false);
        }
        self.progress.retain(|tp, _| keep(tp));
        self.batch = keep_rows(&self.batch, &self.runs, &keep)?;
        self.runs.retain(|(tp, _)| keep(tp));
        self.rows_by_topic = rows_by_topic(&self.runs);
        if let Some(q) = &self.quarantine {
            let q = keep_quarantine(q, &keep)?;
            self.quarantine = (q.num_rows() > 0).then_some(q);
        }
        Ok(true)
    }
}

/// The rows of `batch` (laid out by `runs`) of the partitions `keep` says.
pub(super) fn keep_rows(
    batch: &RecordBatch,
    runs: &[(TopicPartition, usize)],
    keep: impl Fn(&TopicPartition) -> bool,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut mask = Vec::with_capacity(batch.num_rows());
    for (tp, n) in runs {
        let k = keep(tp);
        mask.extend(std::iter::repeat_n(k, *n));
    }
    if mask.len() != batch.num_rows() {
        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "runs cover {} rows of {}",
            mask.len(),
            batch.num_rows()
        )));
    }
    if mask.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(mask))
}

/// Quarantine rows (columns `topic`, `partition`) of the partitions `keep`
/// says.
pub(super) fn keep_quarantine(
    batch: &RecordBatch,
    keep: impl Fn(&TopicPartition) -> bool,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int32Type;
    let missing = || arrow::error::ArrowError::SchemaError("quarantine columns".into());
    let topics = batch.column_by_name("topic").ok_or_else(missing)?;
    let parts = batch.column_by_name("partition").ok_or_else(missing)?;
    let (topics, parts) = (topics.as_string::<i32>(), parts.as_primitive::<Int32Type>());
    let mask: arrow::array::BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let tp = (topics.value(i).to_string(), parts.value(i));
            Some(!topics.is_null(i) && keep(&tp))
        })
        .collect();
    arrow::compute::filter_record_batch(batch, &mask)
}

/// Rows per topic, from the runs of rows.
pub(super) fn rows_by_topic(runs: &[(TopicPartition, usize)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for ((topic, _), n) in runs {
        match out.iter_mut().find(|(t, _)| t == topic) {
            Some(e) => e.1 += *n as u64,
            None => out.push((topic.clone(), *n as u64)),
        }
    }
    out
}

/// A flushed batch waiting for its commit.
#[derive(Debug)]
pub(super) struct PendingCommit {
    /// Table index.
    pub table: usize,
    /// Assignment generation of the data.
    pub generation: u64,
    /// The Parquet files written.
    pub adds: Vec<Add>,
    /// `upsert` mode: the changes to merge (no files are written ahead).
    pub changes: Vec<RecordBatch>,
    /// The schema they were written with (wider than the table's after
    /// schema evolution).
    pub schema: arrow::datatypes::SchemaRef,
    /// First and last offset per partition.
    pub offsets: BTreeMap<TopicPartition, (i64, i64)>,
    /// Rows in the files.
    pub rows: u64,
    /// Rows per topic.
    pub rows_by_topic: Vec<(String, u64)>,
    /// Quarantine rows, committed before the data.
    pub quarantine: Vec<RecordBatch>,
    /// When the flush started.
    pub flushed_at: Instant,
}

/// A chunk on its way from the poll thread to the decode thread.
pub(super) struct RawChunk<'c> {
    /// Table index.
    pub table: usize,
    /// Assignment generation the messages were polled in.
    pub generation: u64,
    /// The messages, borrowed from librdkafka.
    pub messages: Vec<BorrowedMessage<'c>>,
    /// No messages: everything before is to be committed, then answered.
    pub drain: Option<Drained>,
}

/// From the buffer stage to the committer, in order.
#[derive(Debug)]
pub(super) enum CommitRequest {
    /// A batch to commit.
    Batch(PendingCommit),
    /// Everything sent before was committed or dropped: answer the token.
    Drain(Drained),
}

/// Answered once everything sent before it is committed or dropped (a
/// bounded run waits for it before it checks its range).
#[derive(Debug)]
pub(super) struct Drained(pub std::sync::mpsc::Sender<()>);
