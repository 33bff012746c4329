//! The buffer stage: streams chunks into each table's Parquet writer and
//! flushes when rows, bytes or age reach their limit.
//!
//! A Parquet write that fails in the object store (the environment's fault)
//! does not stop inlet: the rows it held are gone from the writer, so every
//! table's buffer is dropped, and after a backoff the poll thread re-reads
//! the positions from the tables (a new generation), exactly as after a
//! fenced batch. Chunks of the failed generation are dropped until then, so
//! no later offset can commit ahead of the lost ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTableError;
use tokio::sync::mpsc;
use tracing::debug;

use super::messages::{Chunk, CommitRequest, FetchEvent, PendingCommit};
use super::PipelineError;
use crate::config::{CommitConfig, FlushConfig};
use crate::fault::{storage_fault, Backoff, Fault, Shutdown};
use crate::observability::events::WriteFailed;
use crate::observability::{InternalEvent, Metrics};
use crate::sink::WriterFactory;
use crate::source::TopicPartition;

struct TableBuffer {
    name: String,
    writer: RecordBatchWriter,
    factory: WriterFactory,
    rows: usize,
    bytes: usize,
    opened: Option<Instant>,
    progress: BTreeMap<TopicPartition, (i64, i64)>,
    rows_by_topic: Vec<(String, u64)>,
    quarantine: Vec<RecordBatch>,
}

impl TableBuffer {
    fn is_empty(&self) -> bool {
        self.progress.is_empty()
    }

    fn clear(&mut self) {
        self.writer.reset();
        self.rows = 0;
        self.bytes = 0;
        self.opened = None;
        self.progress.clear();
        self.rows_by_topic.clear();
        self.quarantine.clear();
    }
}

/// How the buffer stage recovers from a failed Parquet write.
pub(super) struct Recovery {
    /// Tells the poll thread to re-read its positions from the tables.
    pub resync: Arc<AtomicBool>,
    /// Backoff between attempts and how many failures in a row end the run
    /// (the commit's settings: a write is the first half of a commit).
    pub retry: CommitConfig,
    /// Cuts the backoff short.
    pub shutdown: Shutdown,
    /// Where [`WriteFailed`] is counted.
    pub metrics: Arc<Metrics>,
}

/// A write or flush that failed.
enum Failed {
    /// In the storage stack: classified by [`storage_fault`].
    Store {
        table: usize,
        error: DeltaTableError,
    },
    /// Anything else: the run stops.
    Stop(PipelineError),
}

impl From<PipelineError> for Failed {
    fn from(e: PipelineError) -> Self {
        Failed::Stop(e)
    }
}

/// The stage's state.
struct Buffers {
    tables: Vec<TableBuffer>,
    flush: FlushConfig,
    commits: mpsc::Sender<CommitRequest>,
    generation: u64,
    /// A write of this generation failed: its chunks are dropped until the
    /// poll thread has re-read its positions.
    failed_generation: Option<u64>,
    failures_in_a_row: u32,
    backoff: Backoff,
    /// `backoff` as it starts, for after a write that succeeded.
    first_backoff: Backoff,
}

/// Runs the buffer stage until the fetch side ends.
pub(super) async fn run(
    writers: Vec<(String, RecordBatchWriter, WriterFactory)>,
    flush: FlushConfig,
    mut events: mpsc::Receiver<FetchEvent>,
    commits: mpsc::Sender<CommitRequest>,
    recovery: Recovery,
) -> Result<(), PipelineError> {
    let mut b = Buffers {
        tables: writers
            .into_iter()
            .map(|(name, writer, factory)| TableBuffer {
                name,
                writer,
                factory,
                rows: 0,
                bytes: 0,
                opened: None,
                progress: BTreeMap::new(),
                rows_by_topic: Vec::new(),
                quarantine: Vec::new(),
            })
            .collect(),
        flush,
        commits,
        generation: 0,
        failed_generation: None,
        failures_in_a_row: 0,
        backoff: Backoff::new(recovery.retry.retry_backoff, recovery.retry.max_backoff),
        first_backoff: Backoff::new(recovery.retry.retry_backoff, recovery.retry.max_backoff),
    };
    loop {
        let deadline = b
            .tables
            .iter()
            .filter_map(|t| t.opened)
            .min()
            .map(|t| t + b.flush.max_age);
        let event = match deadline {
            Some(d) => {
                tokio::select! {
                    ev = events.recv() => ev,
                    _ = tokio::time::sleep_until(d.into()) => {
                        let done = b.flush_aged().await;
                        b.recover(done, &recovery).await?;
                        continue;
                    }
                }
            }
            None => events.recv().await,
        };
        match event {
            Some(FetchEvent::Chunk(chunk)) => {
                let done = b.take(chunk).await;
                b.recover(done, &recovery).await?;
            }
            Some(FetchEvent::Rebalanced { generation: g }) => {
                b.generation = g;
                for t in &mut b.tables {
                    t.clear();
                }
            }
            Some(FetchEvent::Drain(token)) => {
                // Everything before the token goes to the committer first.
                let done = b.flush_all().await;
                b.recover(done, &recovery).await?;
                b.commits
                    .send(CommitRequest::Drain(token))
                    .await
                    .map_err(|_| PipelineError::Internal("committer stopped".into()))?;
            }
            Some(FetchEvent::End) => {
                let done = b.flush_all().await;
                // At the end a failed write is not read again: the rows are
                // not committed, so a restart reads them from the table.
                return match done {
                    Ok(()) => Ok(()),
                    Err(Failed::Stop(e)) => Err(e),
                    Err(Failed::Store { table, error }) => Err(PipelineError::Delta(format!(
                        "table `{}`: writing Parquet failed: {error}",
                        b.tables[table].name
                    ))),
                };
            }
            Some(FetchEvent::Fatal(msg)) => return Err(PipelineError::Kafka(msg)),
            None => return Ok(()),
        }
    }
}

impl Buffers {
    /// Buffers a chunk, flushing when a limit is reached.
    async fn take(&mut self, chunk: Chunk) -> Result<(), Failed> {
        if chunk.generation != self.generation || self.failed_generation >= Some(chunk.generation) {
            return Ok(());
        }
        let table = chunk.table;
        let b = &mut self.tables[table];
        let store = |error| Failed::Store { table, error };
        if chunk.batch.num_rows() > 0
            && chunk.batch.schema().fields() != b.writer.arrow_schema().fields()
        {
            // Schema evolution: what is buffered is committed under the old
            // schema, the new columns come with the next commit.
            flush_table(table, b, self.generation, &self.commits).await?;
            b.writer = b.factory.writer(chunk.batch.schema()).map_err(store)?;
        }
        if chunk.batch.num_rows() > 0 {
            b.rows += chunk.batch.num_rows();
            b.bytes += chunk.batch.get_array_memory_size();
            b.writer.write(chunk.batch).await.map_err(store)?;
        }
        b.quarantine.extend(chunk.quarantine);
        for (topic, rows) in chunk.rows_by_topic {
            match b.rows_by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some(e) => e.1 += rows,
                None => b.rows_by_topic.push((topic, rows)),
            }
        }
        for (tp, (first, last)) in chunk.progress {
            let e = b.progress.entry(tp).or_insert((first, last));
            e.0 = e.0.min(first);
            e.1 = e.1.max(last);
        }
        b.opened.get_or_insert_with(Instant::now);
        if b.rows >= self.flush.max_rows || b.bytes as u64 >= self.flush.max_bytes.as_u64() {
            flush_table(table, b, self.generation, &self.commits).await?;
            self.succeeded();
        }
        Ok(())
    }

    /// A flush went through: the next failure starts the backoff afresh.
    fn succeeded(&mut self) {
        self.failures_in_a_row = 0;
        self.backoff = self.first_backoff.clone();
    }

    /// Flushes the tables whose oldest row has waited `max_age`.
    async fn flush_aged(&mut self) -> Result<(), Failed> {
        let mut flushed = false;
        for (table, b) in self.tables.iter_mut().enumerate() {
            if b.opened.is_some_and(|t| t.elapsed() >= self.flush.max_age) {
                flush_table(table, b, self.generation, &self.commits).await?;
                flushed = true;
            }
        }
        if flushed {
            self.succeeded();
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> Result<(), Failed> {
        for (table, b) in self.tables.iter_mut().enumerate() {
            flush_table(table, b, self.generation, &self.commits).await?;
        }
        Ok(())
    }

    /// After a failed write of the environment's fault: drops every buffer,
    /// waits, and has the positions re-read. Anything else stops the run.
    async fn recover(
        &mut self,
        done: Result<(), Failed>,
        recovery: &Recovery,
    ) -> Result<(), PipelineError> {
        let (table, error) = match done {
            Ok(()) => return Ok(()),
            Err(Failed::Stop(e)) => return Err(e),
            Err(Failed::Store { table, error }) => (table, error),
        };
        let name = self.tables[table].name.clone();
        let fault = storage_fault(&error);
        self.failures_in_a_row += 1;
        if fault != Fault::Environment || self.failures_in_a_row >= recovery.retry.max_attempts {
            let what = match fault {
                Fault::Environment => format!("{} attempts", self.failures_in_a_row),
                other => format!("{other} fault, not retried"),
            };
            return Err(PipelineError::Delta(format!(
                "table `{name}`: writing Parquet failed ({what}): {error}"
            )));
        }
        for t in &mut self.tables {
            t.clear();
            // The failed writer may hold half an upload: start afresh.
            if let Ok(w) = t.factory.writer(t.writer.arrow_schema()) {
                t.writer = w;
            }
        }
        self.failed_generation = Some(self.generation);
        let retry_in = self
            .backoff
            .next_delay()
            .unwrap_or(recovery.retry.max_backoff);
        WriteFailed {
            table: &name,
            attempt: self.failures_in_a_row,
            error: &error.to_string(),
            retry_in,
        }
        .emit(&recovery.metrics);
        // While this waits, the chunk queue fills and the poll thread pauses
        // its partitions, so the consumer keeps its group.
        recovery.shutdown.sleep(retry_in).await;
        recovery.resync.store(true, Ordering::Release);
        Ok(())
    }
}

async fn flush_table(
    table: usize,
    b: &mut TableBuffer,
    generation: u64,
    commits: &mpsc::Sender<CommitRequest>,
) -> Result<(), Failed> {
    if b.is_empty() {
        return Ok(());
    }
    let flushed_at = Instant::now();
    let adds = b
        .writer
        .flush()
        .await
        .map_err(|error| Failed::Store { table, error })?;
    let offsets = std::mem::take(&mut b.progress);
    debug!(table, rows = b.rows, files = adds.len(), "flushing");
    let pending = PendingCommit {
        table,
        generation,
        adds,
        schema: b.writer.arrow_schema(),
        offsets,
        rows: b.rows as u64,
        rows_by_topic: std::mem::take(&mut b.rows_by_topic),
        quarantine: std::mem::take(&mut b.quarantine),
        flushed_at,
    };
    b.rows = 0;
    b.bytes = 0;
    b.opened = None;
    commits
        .send(CommitRequest::Batch(pending))
        .await
        .map_err(|_| Failed::Stop(PipelineError::Internal("committer stopped".into())))
}
