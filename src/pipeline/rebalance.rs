//! Start offsets from the Delta log, set inside the rebalance callback, and
//! the per-partition fence that keeps a revoked or re-read partition's
//! batches out of the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::info;

use super::messages::{Chunk, FetchEvent};
use super::ownership::Ownership;
use super::route::Router;
use super::PipelineError;
use crate::config::{CommitConfig, OffsetSpec};
use crate::fault::Shutdown;
use crate::observability::events::{ConsumerLag, DataLost, PartitionsAssigned, PartitionsRevoked};
use crate::observability::{InternalEvent, Metrics};
use crate::record::{LostRange, Next, Rejection, Stage, TopicPartition};
use crate::sink::{txn_app_id, DeltaSink, Patience, SinkError};
use crate::source::loss::{self, LostRecord};
use crate::source::watermarks::LookupError;
use crate::source::{DataLossError, RebalanceHandler, RunKind, Watermarks};

/// The fence between changes of positions and commits. The committer holds
/// the gate while it checks a batch against the [`Ownership`] and commits
/// it; a change that moves partitions or re-reads their positions takes the
/// gate first. So once a partition is revoked, no batch holding its rows can
/// still be committed by this process, and stored offsets read after a
/// change are final for this process.
#[derive(Debug, Default)]
pub(super) struct Fence {
    gate: tokio::sync::Mutex<()>,
    owned: Mutex<Ownership>,
    generation: AtomicU64,
}

/// The fence, shared by the consumer thread, the buffer stage and the
/// committer.
pub(super) type Gate = Arc<Fence>;

impl Fence {
    /// Applies a change of ownership once no commit is in flight (blocking:
    /// for the consumer's thread).
    pub(super) fn change(&self, f: impl FnOnce(&mut Ownership) -> u64) -> u64 {
        // Polled rather than `blocking_lock`: librdkafka may run the revoke
        // callback from a consumer drop on any thread, even a runtime's.
        let _gate = loop {
            match self.gate.try_lock() {
                Ok(g) => break g,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        self.restrict(f)
    }

    /// Applies a change that only takes data away (marks partitions stale):
    /// it need not wait for a commit in flight, whose data was good when it
    /// was checked. The committer, holding the gate, changes through this.
    pub(super) fn restrict(&self, f: impl FnOnce(&mut Ownership) -> u64) -> u64 {
        let mut owned = self.owned.lock().expect("ownership lock");
        let g = f(&mut owned);
        self.generation.store(g, Ordering::Release);
        g
    }

    /// Reads the ownership.
    pub(super) fn with<R>(&self, f: impl FnOnce(&Ownership) -> R) -> R {
        f(&self.owned.lock().expect("ownership lock"))
    }

    /// The current generation, without a lock.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Held by the committer while it checks and commits a batch.
    pub(super) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }
}

/// Why stored offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoredOffsetsError {
    /// The partition's topic feeds no table.
    #[error("topic `{0}` matches no source")]
    NoSource(String),
    /// The table could not be read.
    #[error("{0}")]
    Sink(#[source] Box<SinkError>),
}

/// Reads stored offsets for assignments; lives on the consumer's thread.
pub struct Rebalancer {
    app_id: String,
    fence: Gate,
    router: Arc<Router>,
    /// Own handles on the tables, separate from the committer's.
    sinks: Mutex<Vec<DeltaSink>>,
    runtime: Handle,
    events: mpsc::Sender<FetchEvent>,
    fatal: Mutex<Option<PipelineError>>,
    metrics: Arc<Metrics>,
    /// Where this process began reading each partition it has read: with
    /// no offset stored yet, reading goes on from there, not from a
    /// `starting_offsets = "earliest"` that retention has since moved.
    began: Mutex<HashMap<TopicPartition, i64>>,
    /// Backoff for stored-offset reads (the `[commit]` settings).
    retry: CommitConfig,
    shutdown: Shutdown,
    /// Since when this process owns no partition, if it owns none.
    unassigned_since: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Rebalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebalancer")
            .field("app_id", &self.app_id)
            .field("generation", &self.generation())
            .finish()
    }
}

impl Rebalancer {
    /// A handler reading offsets from `sinks` (one per table, in router order).
    pub(super) fn new(
        app_id: String,
        gate: Gate,
        router: Arc<Router>,
        sinks: Vec<DeltaSink>,
        runtime: Handle,
        events: mpsc::Sender<FetchEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Rebalancer {
            app_id,
            fence: gate,
            router,
            sinks: Mutex::new(sinks),
            runtime,
            events,
            fatal: Mutex::new(None),
            metrics,
            began: Mutex::new(HashMap::new()),
            retry: CommitConfig::default(),
            shutdown: Shutdown::new(),
            unassigned_since: Mutex::new(Some(Instant::now())),
        }
    }

    /// Retries stored-offset reads with `retry`'s backoff, cut short by
    /// `shutdown`.
    pub fn with_retry(mut self, retry: CommitConfig, shutdown: Shutdown) -> Self {
        self.retry = retry;
        self.shutdown = shutdown;
        self
    }

    /// The current generation; chunks are stamped with it.
    pub fn generation(&self) -> u64 {
        self.fence.generation()
    }

    /// The per-partition fence.
    pub(super) fn fence(&self) -> &Gate {
        &self.fence
    }

    /// Topic routes.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// A fatal error raised in a callback, if any.
    pub fn take_fatal(&self) -> Option<PipelineError> {
        self.fatal.lock().expect("fatal lock").take()
    }

    /// Records a fatal error; the first one is the cause and is kept.
    fn set_fatal(&self, e: PipelineError) {
        self.fatal.lock().expect("fatal lock").get_or_insert(e);
    }

    /// Hands `event` to the buffer stage, waiting while its queue is full.
    fn send(&self, mut event: FetchEvent) {
        loop {
            match self.events.try_send(event) {
                Ok(()) => break,
                // The buffer stage is gone at shutdown; nothing to tell then.
                Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(e)) => {
                    event = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Every owned partition's position is read again: waits for an
    /// in-flight commit, starts a new generation, and tells the pipeline to
    /// drop what it buffered.
    pub fn reread_all(&self) -> u64 {
        let gen = self.fence.change(Ownership::reread_all);
        self.send(FetchEvent::Rebalanced { generation: gen });
        gen
    }

    /// The positions of `parts` are read again (incremental rebalancing):
    /// as [`Self::reread_all`], for those partitions only.
    pub(super) fn reread(&self, parts: &[TopicPartition]) -> u64 {
        let gen = self.fence.change(|o| o.assign(parts));
        self.send(FetchEvent::Rebalanced { generation: gen });
        gen
    }

    /// `parts` were assigned without the group (a bounded run).
    pub(super) fn assigned_directly(&self, parts: &[TopicPartition]) {
        self.fence.change(|o| o.assign(parts));
    }

    /// Stored version for each partition, `None` where the table holds none.
    /// The object store's transient failures are retried with backoff.
    pub fn stored_offsets(
        &self,
        parts: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>, StoredOffsetsError> {
        let mut by_table: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, (topic, _)) in parts.iter().enumerate() {
            let table = self
                .router
                .table_for(topic)
                .ok_or_else(|| StoredOffsetsError::NoSource(topic.clone()))?;
            by_table.entry(table).or_default().push(i);
        }
        let mut out = vec![None; parts.len()];
        let mut sinks = self.sinks.lock().expect("sinks lock");
        for (table, idx) in by_table {
            let ids: Vec<String> = idx
                .iter()
                .map(|&i| txn_app_id(&self.app_id, &parts[i].0, parts[i].1))
                .collect();
            let sink = &mut sinks[table];
            let mut patience = Patience::new(
                format!("reading stored offsets of table `{}`", sink.name()),
                &self.retry,
                &self.shutdown,
            );
            let versions = loop {
                match self.runtime.block_on(sink.stored_versions(&ids)) {
                    Ok(v) => break v,
                    Err(e) if patience.again_blocking(&e) => {}
                    Err(e) => return Err(StoredOffsetsError::Sink(Box::new(e))),
                }
            };
            for (&i, v) in idx.iter().zip(versions) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Where each partition starts: stored version + 1; with none stored,
    /// where this process began reading it, else the source's
    /// `starting_offsets`. Each start is checked against the partition's
    /// watermarks ([`Self::check_start`], [`Self::settle_losses`]).
    pub fn start_offsets(
        &self,
        parts: &[TopicPartition],
        watermarks: &Watermarks<'_>,
    ) -> Result<Vec<OffsetSpec>, PipelineError> {
        let stored = self
            .stored_offsets(parts)
            .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
        let mut starts = Vec::with_capacity(parts.len());
        let mut lost = Vec::new();
        for ((topic, p), s) in parts.iter().zip(stored) {
            let wm = watermarks(topic, *p).map_err(|source| LookupError::Watermarks {
                topic: topic.clone(),
                partition: *p,
                source,
            })?;
            let began = self
                .began
                .lock()
                .expect("began lock")
                .get(&(topic.clone(), *p))
                .copied();
            let next = match (s, began) {
                (Some(v), _) => Next::Stored(v),
                (None, Some(o)) => Next::Requested(o),
                (None, None) => Next::Requested(super::bounded::concrete(
                    self.router.starting_offset(topic, *p),
                    wm.0,
                    wm.1,
                )),
            };
            let (start, loss) = self.check_start(topic, *p, next, wm, i64::MAX)?;
            lost.extend(loss);
            starts.push(OffsetSpec::Offset(start));
        }
        self.settle_losses(lost, RunKind::Ingest)?;
        Ok(starts)
    }

    /// Checks the start `next` of a partition against its watermarks `wm`
    /// (`end` bounds a bounded range): the offset to read from, and the
    /// range lost before it, if any. Past the partition's end is an error.
    pub(super) fn check_start(
        &self,
        topic: &str,
        partition: i32,
        next: Next,
        wm: (i64, i64),
        end: i64,
    ) -> Result<(i64, Option<LostRange>), PipelineError> {
        let (source, _) = self.router.data_loss_policy(topic);
        let loss = loss::check(source, topic, partition, next, wm, end)
            .map_err(|e| PipelineError::DataLoss(DataLossError::PastEnd(e)))?;
        let start = loss.as_ref().map_or(next.offset(), |l| l.first_available);
        self.began
            .lock()
            .expect("began lock")
            .entry((topic.to_string(), partition))
            .or_insert(next.offset());
        Ok((start, loss))
    }

    /// Lost ranges stop the run when any of their sources has
    /// `fail_on_data_loss = true`, before anything of them is written.
    /// Otherwise each is logged, counted and handed to the buffer stage as a
    /// chunk of its own (no rows, one quarantine row with stage `lost`,
    /// covering the lost offsets), ahead of the partition's messages: it
    /// commits with the partition's next batch, quarantine row and stored
    /// offset together, so a crash before that commit finds the loss again
    /// and the row is stored once.
    pub(super) fn settle_losses(
        &self,
        lost: Vec<LostRange>,
        kind: RunKind,
    ) -> Result<(), PipelineError> {
        let failing: Vec<LostRange> = lost
            .iter()
            .filter(|r| self.router.data_loss_policy(&r.topic).1)
            .cloned()
            .collect();
        if !failing.is_empty() {
            return Err(PipelineError::DataLoss(DataLossError::Lost {
                ranges: failing,
                kind,
            }));
        }
        for r in lost {
            DataLost { range: &r }.emit(&self.metrics);
            let Some(table) = self.router.table_for(&r.topic) else {
                continue;
            };
            let row = crate::quarantine::rows(
                &[LostRecord::new(&r)],
                &[Rejection::new(0, Stage::Lost, r.describe())],
            )
            .map_err(|e| PipelineError::internal_by(format!("lost-range row: {e}"), e))?;
            let chunk = Chunk {
                table,
                generation: self.generation(),
                batch: arrow::array::RecordBatch::new_empty(Arc::new(
                    arrow::datatypes::Schema::empty(),
                )),
                progress: BTreeMap::from([((r.topic.clone(), r.partition), (r.first(), r.last))]),
                rows_by_topic: Vec::new(),
                quarantine: Some(row),
                runs: Vec::new(),
            };
            self.send(FetchEvent::Chunk(chunk));
        }
        Ok(())
    }
}

impl RebalanceHandler for Arc<Rebalancer> {
    fn on_assign(
        &self,
        partitions: &[TopicPartition],
        watermarks: &Watermarks<'_>,
    ) -> Result<Vec<OffsetSpec>, String> {
        self.fence.change(|o| o.assign(partitions));
        let owned = self.fence.with(Ownership::owned);
        let starts = match self.start_offsets(partitions, watermarks) {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                self.set_fatal(e);
                return Err(text);
            }
        };
        for ((t, p), s) in partitions.iter().zip(&starts) {
            info!(topic = %t, partition = p, start = ?s, "partition starts");
        }
        let mut since = self.unassigned_since.lock().expect("unassigned lock");
        let unassigned_for = if owned > 0 {
            since.take().map(|t| t.elapsed())
        } else {
            None
        };
        drop(since);
        PartitionsAssigned {
            partitions,
            owned,
            unassigned_for,
        }
        .emit(&self.metrics);
        self.metrics.ready.store(true, Ordering::Release);
        Ok(starts)
    }

    fn on_revoke(&self, partitions: &[TopicPartition]) {
        let gen = self.fence.change(|o| o.revoke(partitions));
        let owned = self.fence.with(Ownership::owned);
        if owned == 0 {
            self.metrics.ready.store(false, Ordering::Release);
            self.unassigned_since
                .lock()
                .expect("unassigned lock")
                .get_or_insert_with(Instant::now);
        }
        self.send(FetchEvent::Rebalanced { generation: gen });
        // After the gate: no batch of these partitions commits from here on.
        PartitionsRevoked { partitions, owned }.emit(&self.metrics);
    }

    fn on_stats(&self, stats: &rdkafka::statistics::Statistics) {
        for (topic, partition, lag) in crate::source::watermarks::consumer_lags(stats) {
            ConsumerLag {
                topic,
                partition,
                lag,
            }
            .emit(&self.metrics);
        }
    }

    fn on_fatal(&self, message: String) {
        self.set_fatal(PipelineError::Kafka(message));
    }
}
