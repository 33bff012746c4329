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
pub enum FetchEvent {
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
pub struct Chunk {
    /// Table index.
    pub table: usize,
    /// Assignment generation the messages were fetched in.
    pub generation: u64,
    /// Rows, in the table's schema.
    pub batch: RecordBatch,
    /// First and last offset per partition, rejected messages included.
    pub progress: BTreeMap<TopicPartition, (i64, i64)>,
    /// How many messages became no row.
    pub rejected: usize,
    /// Rows per topic.
    pub rows_by_topic: Vec<(String, u64)>,
    /// Quarantine rows of the rejected messages (when configured).
    pub quarantine: Option<RecordBatch>,
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
pub struct Drained(pub std::sync::mpsc::Sender<()>);
