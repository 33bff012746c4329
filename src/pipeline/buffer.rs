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
use crate::record::TopicPartition;
use crate::sink::WriterFactory;

/// How full a table's buffer is, and since when: what its flush triggers
/// look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fill {
    rows: usize,
    bytes: usize,
    /// When the first chunk since the last flush came.
    opened: Option<Instant>,
}

/// Why a buffer is flushed before the stage is told to (`End`, `Drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// `flush.max_rows` reached.
    Rows,
    /// `flush.max_bytes` reached.
    Bytes,
}

impl Fill {
    /// A chunk of `rows` rows taking `bytes` came at `now`.
    fn add(&mut self, rows: usize, bytes: usize, now: Instant) {
        self.rows += rows;
        self.bytes += bytes;
        self.opened.get_or_insert(now);
    }

    /// Whether rows or bytes reached their limit.
    fn full(&self, flush: &FlushConfig) -> Option<Trigger> {
        if self.rows >= flush.max_rows {
            Some(Trigger::Rows)
        } else if self.bytes as u64 >= flush.max_bytes.as_u64() {
            Some(Trigger::Bytes)
        } else {
            None
        }
    }

    /// When the oldest row has waited `flush.max_age`.
    fn deadline(&self, flush: &FlushConfig) -> Option<Instant> {
        self.opened.map(|t| t + flush.max_age)
    }

    /// Whether the oldest row has waited `flush.max_age` at `now`.
    fn aged(&self, flush: &FlushConfig, now: Instant) -> bool {
        self.opened
            .is_some_and(|t| now.saturating_duration_since(t) >= flush.max_age)
    }
}

struct TableBuffer {
    name: String,
    writer: RecordBatchWriter,
    factory: WriterFactory,
    fill: Fill,
    progress: BTreeMap<TopicPartition, (i64, i64)>,
    rows_by_topic: Vec<(String, u64)>,
    quarantine: Vec<RecordBatch>,
    /// `upsert` mode: changes kept for the merge instead of written.
    changes: Vec<RecordBatch>,
}

impl TableBuffer {
    fn is_empty(&self) -> bool {
        self.progress.is_empty()
    }

    fn clear(&mut self) {
        self.writer.reset();
        self.fill = Fill::default();
        self.progress.clear();
        self.rows_by_topic.clear();
        self.quarantine.clear();
        self.changes.clear();
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
                fill: Fill::default(),
                progress: BTreeMap::new(),
                rows_by_topic: Vec::new(),
                quarantine: Vec::new(),
                changes: Vec::new(),
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
            .filter_map(|t| t.fill.deadline(&b.flush))
            .min();
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
                    Err(Failed::Store { table, error }) => Err(PipelineError::delta_by(
                        format!(
                            "table `{}`: writing Parquet failed: {error}",
                            b.tables[table].name
                        ),
                        error,
                    )),
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
        let merges = chunk
            .batch
            .schema()
            .field_with_name(crate::sink::DELETE_COLUMN)
            .is_ok();
        let (rows, bytes) = (chunk.batch.num_rows(), chunk.batch.get_array_memory_size());
        if merges {
            if b.changes
                .first()
                .is_some_and(|c| c.schema().fields() != chunk.batch.schema().fields())
            {
                // Schema evolution: one schema per merge.
                flush_table(table, b, self.generation, &self.commits).await?;
            }
            if rows > 0 {
                b.changes.push(chunk.batch);
            }
        } else if rows > 0 {
            if chunk.batch.schema().fields() != b.writer.arrow_schema().fields() {
                // Schema evolution: what is buffered is committed under the
                // old schema, the new columns come with the next commit.
                flush_table(table, b, self.generation, &self.commits).await?;
                b.writer = b.factory.writer(chunk.batch.schema()).map_err(store)?;
            }
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
        b.fill
            .add(rows, if rows > 0 { bytes } else { 0 }, Instant::now());
        if let Some(trigger) = b.fill.full(&self.flush) {
            debug!(table = %b.name, ?trigger, "buffer full");
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
        let now = Instant::now();
        for (table, b) in self.tables.iter_mut().enumerate() {
            if b.fill.aged(&self.flush, now) {
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
            return Err(PipelineError::delta_by(
                format!("table `{name}`: writing Parquet failed ({what}): {error}"),
                error,
            ));
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
    debug!(table, rows = b.fill.rows, files = adds.len(), "flushing");
    let pending = PendingCommit {
        table,
        generation,
        adds,
        changes: std::mem::take(&mut b.changes),
        schema: b.writer.arrow_schema(),
        offsets,
        rows: b.fill.rows as u64,
        rows_by_topic: std::mem::take(&mut b.rows_by_topic),
        quarantine: std::mem::take(&mut b.quarantine),
        flushed_at,
    };
    b.fill = Fill::default();
    commits
        .send(CommitRequest::Batch(pending))
        .await
        .map_err(|_| Failed::Stop(PipelineError::Internal("committer stopped".into())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::Int64Array;

    use super::*;
    use crate::observability::Metrics;
    use crate::pipeline::messages::Drained;
    use crate::sink::DeltaSink;

    fn limits(max_rows: usize, max_bytes: u64, max_age: Duration) -> FlushConfig {
        FlushConfig {
            max_rows,
            max_bytes: bytesize::ByteSize::b(max_bytes),
            max_age,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn rows_and_bytes_fill_a_buffer() {
        let now = Instant::now();
        let flush = limits(5, 1000, HOUR);
        let mut f = Fill::default();
        f.add(3, 100, now);
        assert_eq!(f.full(&flush), None);
        f.add(2, 100, now);
        assert_eq!(f.full(&flush), Some(Trigger::Rows));
        let mut f = Fill::default();
        f.add(1, 999, now);
        assert_eq!(f.full(&flush), None);
        f.add(1, 1, now);
        assert_eq!(f.full(&flush), Some(Trigger::Bytes));
    }

    #[test]
    fn the_oldest_row_sets_the_age() {
        let t0 = Instant::now();
        let flush = limits(5, 1000, Duration::from_secs(10));
        let mut f = Fill::default();
        assert_eq!(f.deadline(&flush), None, "nothing buffered: no deadline");
        assert!(!f.aged(&flush, t0 + HOUR));
        f.add(1, 1, t0);
        f.add(1, 1, t0 + Duration::from_secs(5));
        assert_eq!(f.deadline(&flush), Some(t0 + Duration::from_secs(10)));
        assert!(!f.aged(&flush, t0 + Duration::from_secs(9)));
        assert!(f.aged(&flush, t0 + Duration::from_secs(10)));
    }

    /// The buffer stage over a local table of one `id BIGINT` column.
    struct Stage {
        events: mpsc::Sender<FetchEvent>,
        commits: mpsc::Receiver<CommitRequest>,
        done: tokio::task::JoinHandle<Result<(), PipelineError>>,
        _dir: tempfile::TempDir,
    }

    async fn stage(flush: FlushConfig) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::load_str(&format!(
            r#"
            [kafka]
            bootstrap_servers = "127.0.0.1:1"
            group_id = "g"
            [sources.t]
            topics = ["t"]
            table = "t"
            [tables.t]
            uri = "{}"
            schema = "id BIGINT"
            "#,
            dir.path().join("t").display()
        ))
        .unwrap();
        let sink = DeltaSink::open_or_create("t", &cfg.tables["t"], None)
            .await
            .unwrap();
        let writers = vec![(
            "t".to_string(),
            sink.writer().unwrap(),
            sink.writer_factory().unwrap(),
        )];
        let (events, events_rx) = mpsc::channel(8);
        let (commits_tx, commits) = mpsc::channel(8);
        let recovery = Recovery {
            resync: Arc::new(AtomicBool::new(false)),
            retry: CommitConfig::default(),
            shutdown: Shutdown::new(),
            metrics: Arc::new(Metrics::new()),
        };
        let done = tokio::spawn(run(writers, flush, events_rx, commits_tx, recovery));
        Stage {
            events,
            commits,
            done,
            _dir: dir,
        }
    }

    /// `rows` rows of partition t/0 from offset `first` on.
    fn chunk(generation: u64, first: i64, rows: i64) -> FetchEvent {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        ]));
        let ids = Int64Array::from_iter_values(first..first + rows);
        FetchEvent::Chunk(Chunk {
            table: 0,
            generation,
            batch: RecordBatch::try_new(schema, vec![Arc::new(ids)]).unwrap(),
            progress: BTreeMap::from([(("t".to_string(), 0), (first, first + rows - 1))]),
            rejected: 0,
            rows_by_topic: vec![("t".to_string(), rows as u64)],
            quarantine: None,
        })
    }

    impl Stage {
        async fn send(&self, event: FetchEvent) {
            self.events.send(event).await.unwrap();
        }

        /// The next batch sent to the committer: (generation, rows, offsets of t/0).
        async fn batch(&mut self) -> (u64, u64, (i64, i64)) {
            let next = tokio::time::timeout(Duration::from_secs(60), self.commits.recv());
            match next.await.expect("a commit in time") {
                Some(CommitRequest::Batch(b)) => summary(&b),
                other => panic!("expected a batch, got {other:?}"),
            }
        }

        /// Ends the stage (as at shutdown); the batches it sent from then on.
        async fn end(mut self) -> Vec<(u64, u64, (i64, i64))> {
            self.send(FetchEvent::End).await;
            tokio::time::timeout(Duration::from_secs(60), self.done)
                .await
                .expect("the stage stops in time")
                .unwrap()
                .expect("the stage stops cleanly");
            let mut batches = Vec::new();
            while let Some(request) = self.commits.recv().await {
                match request {
                    CommitRequest::Batch(b) => batches.push(summary(&b)),
                    other => panic!("expected a batch, got {other:?}"),
                }
            }
            batches
        }
    }

    fn summary(b: &PendingCommit) -> (u64, u64, (i64, i64)) {
        (b.generation, b.rows, b.offsets[&("t".to_string(), 0)])
    }

    #[tokio::test]
    async fn a_buffer_flushes_at_max_rows() {
        let mut s = stage(limits(6, u64::MAX, HOUR)).await;
        s.send(chunk(0, 0, 3)).await;
        s.send(chunk(0, 3, 3)).await;
        s.send(chunk(0, 6, 1)).await;
        // The first three rows waited for the next three: one batch of six.
        assert_eq!(s.batch().await, (0, 6, (0, 5)));
        assert_eq!(s.end().await, [(0, 1, (6, 6))], "the last row at the end");
    }

    #[tokio::test]
    async fn a_buffer_flushes_at_max_bytes() {
        let mut s = stage(limits(1_000_000, 1, HOUR)).await;
        s.send(chunk(0, 0, 3)).await;
        s.send(chunk(0, 3, 2)).await;
        assert_eq!(s.batch().await, (0, 3, (0, 2)));
        assert_eq!(s.batch().await, (0, 2, (3, 4)));
        assert_eq!(s.end().await, []);
    }

    #[tokio::test]
    async fn a_buffer_flushes_at_max_age() {
        let max_age = Duration::from_millis(200);
        let mut s = stage(limits(1_000_000, u64::MAX, max_age)).await;
        let sent = Instant::now();
        s.send(chunk(0, 0, 3)).await;
        assert_eq!(s.batch().await, (0, 3, (0, 2)));
        assert!(
            sent.elapsed() >= max_age,
            "not before the oldest row is due"
        );
        assert_eq!(s.end().await, []);
    }

    #[tokio::test]
    async fn shutdown_flushes_what_is_buffered_and_drain_answers_after_it() {
        let mut s = stage(limits(1_000_000, u64::MAX, HOUR)).await;
        s.send(chunk(0, 0, 3)).await;
        let (tx, rx) = std::sync::mpsc::channel();
        s.send(FetchEvent::Drain(Drained(tx))).await;
        assert_eq!(s.batch().await, (0, 3, (0, 2)), "drained: flushed first");
        match s.commits.recv().await {
            Some(CommitRequest::Drain(Drained(done))) => done.send(()).unwrap(),
            other => panic!("expected the drain token, got {other:?}"),
        }
        rx.recv().unwrap();
        s.send(chunk(0, 3, 2)).await;
        assert_eq!(s.end().await, [(0, 2, (3, 4))], "End flushes the rest");
    }

    #[tokio::test]
    async fn a_revocation_drops_what_is_buffered_and_chunks_of_the_old_assignment() {
        let s = stage(limits(1_000_000, u64::MAX, HOUR)).await;
        s.send(chunk(0, 0, 3)).await;
        s.send(FetchEvent::Rebalanced { generation: 1 }).await;
        // Polled before the rebalance, decoded after it: stale.
        s.send(chunk(0, 3, 2)).await;
        s.send(chunk(1, 10, 4)).await;
        assert_eq!(s.end().await, [(1, 4, (10, 13))]);
    }
}
