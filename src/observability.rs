//! Internal events: one typed event per thing that happens, emitted in one
//! place, from which the logs and the run counters both come.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::decode::Stage;

/// Counters of one run, read for the summary printed at exit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages consumed (good and bad).
    pub consumed: AtomicU64,
    /// Rows committed to tables.
    pub rows_written: AtomicU64,
    /// Messages that could not become rows.
    pub rejected: AtomicU64,
    /// Delta commits made.
    pub commits: AtomicU64,
    /// Batches not written because another writer had committed their offsets.
    pub fenced: AtomicU64,
}

/// Something that happened, with everything needed to log and count it.
pub trait InternalEvent {
    /// Logs the event and updates the counters.
    fn emit(self, counters: &Counters);
}

/// A message became no row.
#[derive(Debug)]
pub struct MessageRejected<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Stage that refused it.
    pub stage: Stage,
    /// Why.
    pub reason: &'a str,
}

impl InternalEvent for MessageRejected<'_> {
    fn emit(self, counters: &Counters) {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            stage = self.stage.as_str(),
            reason = self.reason,
            "message rejected"
        );
    }
}

/// A batch was committed to a table.
#[derive(Debug)]
pub struct BatchCommitted<'a> {
    /// Table name.
    pub table: &'a str,
    /// New table version.
    pub version: i64,
    /// Rows in the batch.
    pub rows: u64,
    /// Partitions covered.
    pub partitions: usize,
    /// Time from flush to commit.
    pub elapsed: std::time::Duration,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, counters: &Counters) {
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters
            .rows_written
            .fetch_add(self.rows, Ordering::Relaxed);
        tracing::info!(
            table = self.table,
            version = self.version,
            rows = self.rows,
            partitions = self.partitions,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "batch committed"
        );
    }
}

/// A batch was dropped because its offsets were already in the table.
#[derive(Debug)]
pub struct BatchFenced<'a> {
    /// Table name.
    pub table: &'a str,
    /// The txn appId that overlapped.
    pub app_id: &'a str,
    /// Version found in the table.
    pub stored: i64,
    /// First offset of the batch for that partition.
    pub first: i64,
}

impl InternalEvent for BatchFenced<'_> {
    fn emit(self, counters: &Counters) {
        counters.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            table = self.table,
            app_id = self.app_id,
            stored = self.stored,
            first = self.first,
            "batch dropped: another writer already committed these offsets; re-reading positions"
        );
    }
}
