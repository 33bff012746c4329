//! Start offsets from the Delta log, set inside the rebalance callback, and the
//! generation gate that keeps a revoked assignment's batches out of the table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::info;

use super::route::Router;
use super::FetchEvent;
use crate::config::{CommitConfig, OffsetSpec};
use crate::fault::Shutdown;
use crate::observability::events::ConsumerLag;
use crate::observability::{InternalEvent, Metrics};
use crate::sink::{txn_app_id, DeltaSink, Patience};
use crate::source::{RebalanceHandler, TopicPartition};

/// The assignment generation. The committer holds the lock while it checks a
/// batch's generation and commits it; a rebalance takes the lock to bump the
/// generation. So once a rebalance has bumped it, no batch of the previous
/// assignment can still be committed, and stored offsets read afterwards are
/// final for this process.
pub type Gate = Arc<tokio::sync::Mutex<u64>>;

/// Reads stored offsets for assignments; lives on the consumer's thread.
pub struct Rebalancer {
    app_id: String,
    gate: Gate,
    generation: AtomicU64,
    router: Arc<Router>,
    /// Own handles on the tables, separate from the committer's.
    sinks: Mutex<Vec<DeltaSink>>,
    runtime: Handle,
    events: mpsc::Sender<FetchEvent>,
    fatal: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    /// Backoff for stored-offset reads (the `[commit]` settings).
    retry: CommitConfig,
    shutdown: Shutdown,
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
    pub fn new(
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
            gate,
            generation: AtomicU64::new(0),
            router,
            sinks: Mutex::new(sinks),
            runtime,
            events,
            fatal: Mutex::new(None),
            metrics,
            retry: CommitConfig::default(),
            shutdown: Shutdown::new(),
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
        self.generation.load(Ordering::Acquire)
    }

    /// Topic routes.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// A fatal error raised in a callback, if any.
    pub fn take_fatal(&self) -> Option<String> {
        self.fatal.lock().expect("fatal lock").take()
    }

    /// Starts a new generation: waits for an in-flight commit, bumps the
    /// counter, and tells the pipeline to drop what it buffered.
    pub fn bump(&self) -> u64 {
        // Polled rather than `blocking_lock`: librdkafka may run the revoke
        // callback from a consumer drop on any thread, even a runtime's.
        let mut g = loop {
            match self.gate.try_lock() {
                Ok(g) => break g,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        *g += 1;
        let gen = *g;
        self.generation.store(gen, Ordering::Release);
        drop(g);
        let mut event = FetchEvent::Rebalanced { generation: gen };
        loop {
            match self.events.try_send(event) {
                Ok(()) => break,
                // The buffer stage is gone at shutdown; nothing to drop then.
                Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(e)) => {
                    event = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        gen
    }

    /// Stored version for each partition, `None` where the table holds none.
    /// The object store's transient failures are retried with backoff.
    pub fn stored_offsets(&self, parts: &[TopicPartition]) -> Result<Vec<Option<i64>>, String> {
        let mut by_table: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, (topic, _)) in parts.iter().enumerate() {
            let table = self
                .router
                .table_for(topic)
                .ok_or_else(|| format!("topic `{topic}` matches no source"))?;
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
                    Err(e) => return Err(e.to_string()),
                }
            };
            for (&i, v) in idx.iter().zip(versions) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Where each partition starts: stored version + 1, or the source's
    /// `starting_offsets` when the table holds none.
    pub fn start_offsets(&self, parts: &[TopicPartition]) -> Result<Vec<OffsetSpec>, String> {
        let stored = self.stored_offsets(parts)?;
        Ok(parts
            .iter()
            .zip(stored)
            .map(|((topic, p), s)| match s {
                Some(v) => OffsetSpec::Offset(v + 1),
                None => self.router.starting_offset(topic, *p),
            })
            .collect())
    }
}

impl RebalanceHandler for Arc<Rebalancer> {
    fn on_assign(&self, partitions: &[TopicPartition]) -> Result<Vec<OffsetSpec>, String> {
        self.bump();
        let starts = self.start_offsets(partitions)?;
        for ((t, p), s) in partitions.iter().zip(&starts) {
            info!(topic = %t, partition = p, start = ?s, "partition starts");
        }
        self.metrics.ready.store(true, Ordering::Release);
        Ok(starts)
    }

    fn on_revoke(&self, _partitions: &[TopicPartition]) {
        self.metrics.ready.store(false, Ordering::Release);
        self.bump();
    }

    fn on_stats(&self, stats: &rdkafka::statistics::Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's "internal" partition and unknown lags.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    ConsumerLag {
                        topic,
                        partition: *partition,
                        lag: p.consumer_lag,
                    }
                    .emit(&self.metrics);
                }
            }
        }
    }

    fn on_fatal(&self, message: String) {
        *self.fatal.lock().expect("fatal lock") = Some(message);
    }
}
