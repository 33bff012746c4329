//! The buffer stage: streams chunks into each table's Parquet writer and
//! flushes when rows, bytes or age reach their limit.
//!
//! A Parquet write that fails in the object store (the environment's fault)
//! does not stop inlet: the rows it held are gone from the writer, so every
//! table's buffer is dropped, every partition is marked stale, and after a
//! backoff the poll thread re-reads the positions from the tables, exactly
//! as after a fenced batch. Chunks of stale partitions are dropped until
//! then, so no later offset can commit ahead of the lost ones.
//!
//! After a change of positions (see [`super::ownership`]) the rows of the
//! partitions that moved are dropped, from the buffers and from chunks
//! polled before the change. With incremental rebalancing the buffers keep
//! their chunks' Arrow batches until the flush, so that only those rows go
//! and the other partitions' rows stay; with eager rebalancing every change
//! drops everything anyway.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::DeltaTableError;
use tokio::sync::mpsc;
use tracing::debug;

use super::messages::{
    keep_quarantine, keep_rows, rows_by_topic, Chunk, CommitRequest, FetchEvent, PendingCommit,
};
use super::ownership::Ownership;
use super::rebalance::Gate;
use super::PipelineError;
use crate::config::{CommitConfig, FlushConfig};
use crate::fault::{storage_fault, Backoff, Fault, Shutdown};
use crate::observability::events::WriteFailed;
use crate::observability::{InternalEvent, Metrics};
use crate::record::TopicPartition;
use crate::sink::{TableWriter, WriterFactory};

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
    writer: TableWriter,
    factory: WriterFactory,
    fill: Fill,
    progress: BTreeMap<TopicPartition, (i64, i64)>,
    rows_by_topic: Vec<(String, u64)>,
    quarantine: Vec<RecordBatch>,
    /// With incremental rebalancing: the batches written since the last
    /// flush, with their runs of rows by partition.
    kept: Vec<(RecordBatch, Vec<(TopicPartition, usize)>)>,
    /// `upsert` mode: changes kept for the merge instead of written, with
    /// their runs of rows by partition (a revocation drops its rows).
    changes: Vec<(RecordBatch, Vec<(TopicPartition, usize)>)>,
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
        self.kept.clear();
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
    /// Which partitions' rows are still good.
    pub fence: Gate,
    /// Incremental rebalancing: keep the Arrow batches until the flush, so
    /// that a revocation drops only its partitions' rows.
    pub keep_batches: bool,
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
    /// Everything buffered was still good at this generation.
    generation: u64,
    fence: Gate,
    keep_batches: bool,
    /// Tells the poll thread to re-read the stale partitions.
    resync: Arc<AtomicBool>,
    failures_in_a_row: u32,
    backoff: Backoff,
    /// `backoff` as it starts, for after a write that succeeded.
    first_backoff: Backoff,
}

/// Runs the buffer stage until the fetch side ends.
pub(super) async fn run(
    writers: Vec<(String, TableWriter, WriterFactory)>,
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
                kept: Vec::new(),
                changes: Vec::new(),
            })
            .collect(),
        flush,
        commits,
        generation: 0,
        fence: recovery.fence.clone(),
        keep_batches: recovery.keep_batches,
        resync: recovery.resync.clone(),
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
            Some(FetchEvent::Rebalanced { generation }) => {
                debug!(generation, "positions changed");
                let done = b.check(None).await;
                b.recover(done, &recovery).await?;
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
                let done = match b.check(None).await {
                    Ok(()) => b.flush_all().await,
                    Err(e) => Err(e),
                };
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
    async fn take(&mut self, mut chunk: Chunk) -> Result<(), Failed> {
        self.check(Some(&mut chunk)).await?;
        if chunk.progress.is_empty() {
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
                .is_some_and(|(c, _)| c.schema().fields() != chunk.batch.schema().fields())
            {
                // Schema evolution: one schema per merge.
                flush_table(table, b, self.generation, &self.commits).await?;
            }
            if rows > 0 {
                b.changes.push((chunk.batch, chunk.runs));
            }
        } else if rows > 0 {
            if chunk.batch.schema().fields() != b.writer.arrow_schema().fields() {
                // Schema evolution: what is buffered is committed under the
                // old schema, the new columns come with the next commit.
                flush_table(table, b, self.generation, &self.commits).await?;
                b.writer = b.factory.writer(chunk.batch.schema()).map_err(store)?;
            }
            if self.keep_batches {
                b.kept.push((chunk.batch.clone(), chunk.runs));
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

    /// Drops what is no longer good since the last check: the buffered rows
    /// of partitions revoked, re-read or marked stale since, and the rows of
    /// `chunk` whose partitions changed since it was polled. Everything
    /// buffered is then good at the current generation.
    async fn check(&mut self, chunk: Option<&mut Chunk>) -> Result<(), Failed> {
        let since = self.generation;
        let tables = &self.tables;
        let (generation, gone, retained) = self.fence.with(|o| {
            let gone: Vec<Vec<TopicPartition>> = if o.generation() == since {
                Vec::new()
            } else {
                tables
                    .iter()
                    .map(|t| {
                        t.progress
                            .keys()
                            .filter(|tp| !o.admits(tp, since))
                            .cloned()
                            .collect()
                    })
                    .collect()
            };
            let retained = chunk.map(|c| {
                let stamp = c.generation;
                c.retain(|tp| o.admits(tp, stamp))
            });
            (o.generation(), gone, retained)
        });
        if let Some(Err(e)) = retained {
            return Err(Failed::Stop(PipelineError::internal_by(
                format!("dropping rows of moved partitions: {e}"),
                e,
            )));
        }
        self.generation = generation;
        for (table, gone) in gone.into_iter().enumerate() {
            if !gone.is_empty() {
                self.drop_partitions(table, &gone).await?;
            }
        }
        Ok(())
    }

    /// Drops the buffered rows of `gone` from a table's buffer. With the
    /// batches kept, the other partitions' rows are written again to a
    /// fresh writer; without, the whole buffer goes and the other
    /// partitions in it are marked stale, to be read again.
    async fn drop_partitions(
        &mut self,
        table: usize,
        gone: &[TopicPartition],
    ) -> Result<(), Failed> {
        let b = &mut self.tables[table];
        let keep = |tp: &TopicPartition| !gone.contains(tp);
        debug!(table = %b.name, partitions = gone.len(), "dropping the rows of moved partitions");
        let internal = |e: arrow::error::ArrowError| {
            Failed::Stop(PipelineError::internal_by(format!("dropping rows: {e}"), e))
        };
        if !self.keep_batches {
            let others: Vec<TopicPartition> =
                b.progress.keys().filter(|tp| keep(tp)).cloned().collect();
            b.clear();
            if !others.is_empty() {
                self.generation = self.fence.restrict(|o| o.mark_stale(&others));
                self.resync.store(true, Ordering::Release);
            }
            return Ok(());
        }
        let kept = std::mem::take(&mut b.kept);
        let opened = b.fill.opened;
        b.writer.reset();
        b.fill = Fill::default();
        b.progress.retain(|tp, _| keep(tp));
        let mut quarantine = Vec::with_capacity(b.quarantine.len());
        for q in &b.quarantine {
            let q = keep_quarantine(q, keep).map_err(internal)?;
            if q.num_rows() > 0 {
                quarantine.push(q);
            }
        }
        b.quarantine = quarantine;
        let mut all_runs = Vec::new();
        for (batch, mut runs) in kept {
            let batch = keep_rows(&batch, &runs, keep).map_err(internal)?;
            runs.retain(|(tp, _)| keep(tp));
            if batch.num_rows() == 0 {
                continue;
            }
            let (rows, bytes) = (batch.num_rows(), batch.get_array_memory_size());
            b.writer
                .write(batch.clone())
                .await
                .map_err(|error| Failed::Store { table, error })?;
            b.fill.rows += rows;
            b.fill.bytes += bytes;
            all_runs.extend(runs.iter().cloned());
            b.kept.push((batch, runs));
        }
        // `upsert` changes are held, not written: filter them the same way.
        for (batch, mut runs) in std::mem::take(&mut b.changes) {
            let batch = keep_rows(&batch, &runs, keep).map_err(internal)?;
            runs.retain(|(tp, _)| keep(tp));
            if batch.num_rows() == 0 {
                continue;
            }
            b.fill.rows += batch.num_rows();
            b.fill.bytes += batch.get_array_memory_size();
            all_runs.extend(runs.iter().cloned());
            b.changes.push((batch, runs));
        }
        b.rows_by_topic = rows_by_topic(&all_runs);
        if b.progress.is_empty() {
            b.clear();
        } else {
            b.fill.opened = opened;
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
        self.check(None).await?;
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
        self.check(None).await?;
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
        // Nothing more of any partition commits until its position is read
        // again.
        self.generation = self.fence.restrict(Ownership::mark_all_stale);
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
    b.kept.clear();
    debug!(table, rows = b.fill.rows, files = adds.len(), "flushing");
    let pending = PendingCommit {
        table,
        generation,
        adds,
        changes: std::mem::take(&mut b.changes)
            .into_iter()
            .map(|(batch, _)| batch)
            .collect(),
        schema: b.writer.commit_schema(),
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
        fence: Gate,
        resync: Arc<AtomicBool>,
        dir: tempfile::TempDir,
    }

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    async fn stage(flush: FlushConfig) -> Stage {
        stage_with(flush, false).await
    }

    /// The stage over a table whose partitions t/0 and t/1 are owned since
    /// generation 1; `keep_batches` as with incremental rebalancing.
    async fn stage_with(flush: FlushConfig, keep_batches: bool) -> Stage {
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
        let fence: Gate = Arc::new(crate::pipeline::rebalance::Fence::default());
        fence.change(|o| o.assign(&[tp(0), tp(1)]));
        let resync = Arc::new(AtomicBool::new(false));
        let recovery = Recovery {
            resync: resync.clone(),
            retry: CommitConfig::default(),
            shutdown: Shutdown::new(),
            metrics: Arc::new(Metrics::new()),
            fence: fence.clone(),
            keep_batches,
        };
        let done = tokio::spawn(run(writers, flush, events_rx, commits_tx, recovery));
        Stage {
            events,
            commits,
            done,
            fence,
            resync,
            dir,
        }
    }

    /// `rows` rows of partition t/0 from offset `first` on.
    fn chunk(generation: u64, first: i64, rows: i64) -> FetchEvent {
        runs_chunk(generation, &[(0, first, rows)])
    }

    /// Runs of rows `(partition, first offset, rows)`; a row's id is
    /// `1000 * partition + offset`.
    fn runs_chunk(generation: u64, runs: &[(i32, i64, i64)]) -> FetchEvent {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        ]));
        let ids = Int64Array::from_iter_values(runs.iter().flat_map(|&(p, first, rows)| {
            (first..first + rows).map(move |o| 1000 * i64::from(p) + o)
        }));
        let mut progress: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
        for &(p, first, rows) in runs {
            let e = progress.entry(tp(p)).or_insert((first, first + rows - 1));
            e.0 = e.0.min(first);
            e.1 = e.1.max(first + rows - 1);
        }
        let total: i64 = runs.iter().map(|r| r.2).sum();
        FetchEvent::Chunk(Chunk {
            table: 0,
            generation,
            batch: RecordBatch::try_new(schema, vec![Arc::new(ids)]).unwrap(),
            progress,
            rows_by_topic: vec![("t".to_string(), total as u64)],
            quarantine: None,
            runs: runs
                .iter()
                .map(|&(p, _, rows)| (tp(p), rows as usize))
                .collect(),
        })
    }

    impl Stage {
        async fn send(&self, event: FetchEvent) {
            self.events.send(event).await.unwrap();
        }

        /// Waits until the stage has taken everything sent before: it has
        /// received a no-op sent after it.
        async fn settle(&self) {
            self.send(FetchEvent::Rebalanced { generation: 0 }).await;
            while self.events.capacity() < self.events.max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
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
        s.send(chunk(1, 0, 3)).await;
        s.send(chunk(1, 3, 3)).await;
        s.send(chunk(1, 6, 1)).await;
        // The first three rows waited for the next three: one batch of six.
        assert_eq!(s.batch().await, (1, 6, (0, 5)));
        assert_eq!(s.end().await, [(1, 1, (6, 6))], "the last row at the end");
    }

    #[tokio::test]
    async fn a_buffer_flushes_at_max_bytes() {
        let mut s = stage(limits(1_000_000, 1, HOUR)).await;
        s.send(chunk(1, 0, 3)).await;
        s.send(chunk(1, 3, 2)).await;
        assert_eq!(s.batch().await, (1, 3, (0, 2)));
        assert_eq!(s.batch().await, (1, 2, (3, 4)));
        assert_eq!(s.end().await, []);
    }

    #[tokio::test]
    async fn a_buffer_flushes_at_max_age() {
        let max_age = Duration::from_millis(200);
        let mut s = stage(limits(1_000_000, u64::MAX, max_age)).await;
        let sent = Instant::now();
        s.send(chunk(1, 0, 3)).await;
        assert_eq!(s.batch().await, (1, 3, (0, 2)));
        assert!(
            sent.elapsed() >= max_age,
            "not before the oldest row is due"
        );
        assert_eq!(s.end().await, []);
    }

    #[tokio::test]
    async fn shutdown_flushes_what_is_buffered_and_drain_answers_after_it() {
        let mut s = stage(limits(1_000_000, u64::MAX, HOUR)).await;
        s.send(chunk(1, 0, 3)).await;
        let (tx, rx) = std::sync::mpsc::channel();
        s.send(FetchEvent::Drain(Drained(tx))).await;
        assert_eq!(s.batch().await, (1, 3, (0, 2)), "drained: flushed first");
        match s.commits.recv().await {
            Some(CommitRequest::Drain(Drained(done))) => done.send(()).unwrap(),
            other => panic!("expected the drain token, got {other:?}"),
        }
        rx.recv().unwrap();
        s.send(chunk(1, 3, 2)).await;
        assert_eq!(s.end().await, [(1, 2, (3, 4))], "End flushes the rest");
    }

    #[tokio::test]
    async fn a_revocation_drops_what_is_buffered_and_chunks_of_the_old_assignment() {
        let s = stage(limits(1_000_000, u64::MAX, HOUR)).await;
        s.send(chunk(1, 0, 3)).await;
        let g = s.fence.change(|o| o.revoke(&[tp(0), tp(1)]));
        s.send(FetchEvent::Rebalanced { generation: g }).await;
        // Polled before the rebalance, decoded after it: stale.
        s.send(chunk(1, 3, 2)).await;
        let g = s.fence.change(|o| o.assign(&[tp(0), tp(1)]));
        s.send(chunk(g, 10, 4)).await;
        assert_eq!(s.end().await, [(g, 4, (10, 13))]);
    }

    /// The ids in the Parquet files of a batch.
    fn ids_in(dir: &std::path::Path, b: &PendingCommit) -> Vec<i64> {
        use arrow::array::AsArray;
        let mut ids = Vec::new();
        for add in &b.adds {
            let path = dir.join("t").join(&add.path);
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>();
                ids.extend(col.values().iter().copied());
            }
        }
        ids.sort_unstable();
        ids
    }

    /// Ends the stage; every batch it sent.
    async fn end_batches(mut s: Stage) -> (Vec<PendingCommit>, tempfile::TempDir) {
        s.send(FetchEvent::End).await;
        tokio::time::timeout(Duration::from_secs(60), s.done)
            .await
            .expect("the stage stops in time")
            .unwrap()
            .expect("the stage stops cleanly");
        let mut batches = Vec::new();
        while let Some(request) = s.commits.recv().await {
            match request {
                CommitRequest::Batch(b) => batches.push(b),
                other => panic!("expected a batch, got {other:?}"),
            }
        }
        (batches, s.dir)
    }

    #[tokio::test]
    async fn an_incremental_revocation_drops_only_the_revoked_partitions_rows() {
        let s = stage_with(limits(1_000_000, u64::MAX, HOUR), true).await;
        s.send(runs_chunk(1, &[(0, 0, 2), (1, 0, 2), (0, 2, 1)]))
            .await;
        s.settle().await;
        let g = s.fence.change(|o| o.revoke(&[tp(1)]));
        s.send(FetchEvent::Rebalanced { generation: g }).await;
        // Polled before the revocation: its t/1 rows go, its t/0 rows stay.
        s.send(runs_chunk(1, &[(1, 2, 2), (0, 3, 2)])).await;
        let resync = s.resync.clone();
        let fence = s.fence.clone();
        let (batches, dir) = end_batches(s).await;
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.offsets, BTreeMap::from([(tp(0), (0, 4))]));
        assert_eq!(b.rows, 5);
        assert_eq!(b.rows_by_topic, [("t".to_string(), 5)]);
        assert_eq!(ids_in(dir.path(), b), [0, 1, 2, 3, 4]);
        assert!(fence.with(|o| o.admits(&tp(0), b.generation)));
        assert!(!resync.load(Ordering::Acquire), "nothing to read again");
    }

    #[tokio::test]
    async fn a_revocation_after_a_flush_keeps_only_what_came_since() {
        let mut s = stage_with(limits(4, u64::MAX, HOUR), true).await;
        s.send(runs_chunk(1, &[(0, 0, 2), (1, 0, 2)])).await;
        let first = tokio::time::timeout(Duration::from_secs(60), s.commits.recv())
            .await
            .expect("a flush at max_rows");
        assert!(matches!(first, Some(CommitRequest::Batch(_))));
        s.send(runs_chunk(1, &[(0, 2, 1), (1, 2, 1)])).await;
        s.settle().await;
        s.fence.change(|o| o.revoke(&[tp(1)]));
        let (batches, dir) = end_batches(s).await;
        assert_eq!(batches.len(), 1);
        assert_eq!(
            ids_in(dir.path(), &batches[0]),
            [2],
            "flushed rows stay flushed"
        );
    }

    #[tokio::test]
    async fn without_kept_batches_a_partial_revocation_drops_the_buffer_and_rereads_the_rest() {
        let s = stage_with(limits(1_000_000, u64::MAX, HOUR), false).await;
        s.send(runs_chunk(1, &[(0, 0, 2), (1, 0, 2)])).await;
        s.settle().await;
        let g = s.fence.change(|o| o.revoke(&[tp(1)]));
        s.send(FetchEvent::Rebalanced { generation: g }).await;
        let resync = s.resync.clone();
        let fence = s.fence.clone();
        let (batches, _dir) = end_batches(s).await;
        assert!(batches.is_empty(), "{batches:?}");
        assert!(resync.load(Ordering::Acquire));
        assert_eq!(fence.with(Ownership::stale), [tp(0)]);
    }

    #[tokio::test]
    async fn a_stale_partitions_chunks_wait_for_its_position_to_be_read_again() {
        let s = stage_with(limits(1_000_000, u64::MAX, HOUR), true).await;
        s.fence.restrict(|o| o.mark_stale(&[tp(0)]));
        s.send(runs_chunk(1, &[(0, 0, 2), (1, 0, 2)])).await;
        let g = s.fence.change(|o| o.assign(&[tp(0)]));
        s.send(runs_chunk(1, &[(0, 2, 2)])).await;
        s.send(runs_chunk(g, &[(0, 0, 1)])).await;
        let (batches, dir) = end_batches(s).await;
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(
            b.offsets,
            BTreeMap::from([(tp(0), (0, 0)), (tp(1), (0, 1))])
        );
        assert_eq!(ids_in(dir.path(), b), [0, 1000, 1001]);
    }
}
