//! The commit stage: one Delta commit per flushed batch, with the txn actions
//! of every partition it covers; then, advisory only, the consumer group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::completion::Completion;
use super::messages::{CommitRequest, Drained, PendingCommit};
use super::poll::InletConsumer;
use super::rebalance::Gate;
use super::PipelineError;
use crate::config::CommitConfig;
use crate::observability::events::{BatchCommitted, BatchFenced, QuarantineCommitted};
use crate::observability::{InternalEvent, Metrics};
use crate::sink::{txn_app_id, CommitOutcome, DeltaSink, PartitionProgress};

/// Fenced batches in a row, with no commit between, before inlet stops: a
/// stored offset past the partition's end makes every batch overlap.
const MAX_FENCED_IN_A_ROW: u32 = 5;

/// Tells a bounded run's range which partition of `batch` another writer
/// fenced.
fn record_fence(
    completion: &Mutex<Completion>,
    app_id: &str,
    batch: &PendingCommit,
    fenced_app_id: &str,
    stored: i64,
    first: i64,
) {
    let tp = batch
        .offsets
        .keys()
        .find(|(t, p)| txn_app_id(app_id, t, *p) == fenced_app_id);
    if let Some(tp) = tp {
        completion
            .lock()
            .expect("completion lock")
            .fenced(tp, first, stored);
    }
}

/// The committer's decisions about fenced batches.
///
/// After a fenced batch, the batches queued behind it (same generation)
/// start past offsets that may now never be committed: they are dropped
/// too, until the consumer has re-read its positions (a new generation).
#[derive(Debug, Default)]
struct Fences {
    generation: Option<u64>,
    in_a_row: u32,
}

impl Fences {
    /// Whether a batch fetched in `batch` may be committed while the
    /// assignment is at generation `current`.
    fn admits(&self, current: u64, batch: u64) -> bool {
        current == batch && self.generation < Some(batch)
    }

    fn committed(&mut self) {
        self.in_a_row = 0;
    }

    /// A batch of `generation` was fenced; true once too many were in a row
    /// (a stored offset past the partition's end makes every batch overlap).
    fn fenced(&mut self, generation: u64) -> bool {
        self.generation = Some(generation);
        self.in_a_row += 1;
        self.in_a_row >= MAX_FENCED_IN_A_ROW
    }
}

/// What the commit stage needs.
pub struct Committer {
    /// The pipeline's app id.
    pub app_id: String,
    /// One sink per table, in router order.
    pub sinks: Vec<DeltaSink>,
    /// Each table's quarantine table, when configured.
    pub quarantine: Vec<Option<DeltaSink>>,
    /// The generation gate shared with the rebalance callback.
    pub gate: Gate,
    /// Retry settings.
    pub retry: CommitConfig,
    /// For the advisory group commit.
    pub consumer: Arc<InletConsumer>,
    /// Raised when a batch was fenced.
    pub resync: Arc<AtomicBool>,
    /// A bounded run's range, told of every fence.
    pub completion: Arc<Mutex<Completion>>,
    /// Whether to send the advisory consumer-group commit: only continuous
    /// ingest, a member of its group, does. A bounded run assigns its
    /// partitions itself and never touches the group.
    pub advise: bool,
    /// Metrics and run totals.
    pub metrics: Arc<Metrics>,
}

impl Committer {
    /// Commits batches until the buffer stage hangs up.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<CommitRequest>,
    ) -> Result<(), PipelineError> {
        let mut epoch = 0i64;
        let mut fences = Fences::default();
        while let Some(request) = requests.recv().await {
            let mut batch = match request {
                CommitRequest::Batch(b) => b,
                CommitRequest::Drain(Drained(done)) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let gate = self.gate.lock().await;
            if !fences.admits(*gate, batch.generation) {
                info!(
                    table = self.sinks[batch.table].name(),
                    rows = batch.rows,
                    "batch of a revoked or re-read assignment dropped"
                );
                continue;
            }
            let progress: Vec<PartitionProgress> = batch
                .offsets
                .iter()
                .map(|((topic, partition), (first, last))| PartitionProgress {
                    app_id: txn_app_id(&self.app_id, topic, *partition),
                    first: *first,
                    last: *last,
                })
                .collect();
            epoch += 1;
            // Quarantine first: a crash between the two commits re-reads the
            // batch, and the quarantine rows already stored are dropped then.
            if let Some(q) = self.quarantine[batch.table].as_mut() {
                if !batch.quarantine.is_empty() {
                    let partitions: Vec<(String, i32, i64)> = batch
                        .offsets
                        .iter()
                        .map(|((t, p), (_, last))| (t.clone(), *p, *last))
                        .collect();
                    let rows = q
                        .commit_quarantine(
                            &batch.quarantine,
                            &partitions,
                            &self.app_id,
                            epoch,
                            &self.retry,
                        )
                        .await
                        .map_err(|e| PipelineError::Delta(e.to_string()))?;
                    QuarantineCommitted {
                        table: q.name(),
                        rows: rows as u64,
                    }
                    .emit(&self.metrics);
                }
            }
            let sink = &mut self.sinks[batch.table];
            let outcome = sink
                .commit(
                    std::mem::take(&mut batch.adds),
                    &batch.schema,
                    &progress,
                    epoch,
                    &self.retry,
                )
                .await
                .map_err(|e| PipelineError::Delta(e.to_string()))?;
            drop(gate);
            match outcome {
                CommitOutcome::Committed { version } => {
                    BatchCommitted {
                        table: sink.name(),
                        version,
                        rows_by_topic: &batch.rows_by_topic,
                        partitions: progress.len(),
                        elapsed: batch.flushed_at.elapsed(),
                    }
                    .emit(&self.metrics);
                    fences.committed();
                    if self.advise {
                        self.advise_group(&batch);
                    }
                }
                CommitOutcome::Fenced {
                    app_id,
                    stored,
                    first,
                } => {
                    BatchFenced {
                        table: sink.name(),
                        app_id: &app_id,
                        stored,
                        first,
                    }
                    .emit(&self.metrics);
                    record_fence(
                        &self.completion,
                        &self.app_id,
                        &batch,
                        &app_id,
                        stored,
                        first,
                    );
                    if fences.fenced(batch.generation) {
                        return Err(PipelineError::Setup(format!(
                            "{MAX_FENCED_IN_A_ROW} batches in a row were already in table `{}` \
                             ({app_id} stores offset {stored}, the batch starts at {first}). \
                             If nothing else writes this table with app id `{}`, the topic was \
                             probably recreated or truncated below the stored offset: ingest it \
                             under a new app_id or into a new table",
                            sink.name(),
                            self.app_id
                        )));
                    }
                    self.resync.store(true, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Commits the offsets to the consumer group so that lag tools see
    /// progress. Losing this loses nothing: the table is the truth.
    fn advise_group(&self, batch: &PendingCommit) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), (_, last)) in &batch.offsets {
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(last + 1))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "advisory consumer-group commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_behind_a_fence_wait_for_the_next_generation() {
        let mut f = Fences::default();
        assert!(f.admits(1, 1));
        assert!(!f.admits(2, 1), "a batch of a revoked assignment");
        assert!(!f.fenced(1));
        assert!(!f.admits(1, 1), "queued behind the fenced batch");
        assert!(f.admits(2, 2), "after the positions were re-read");
    }

    #[test]
    fn too_many_fences_in_a_row_stop_and_a_commit_resets_the_count() {
        let mut f = Fences::default();
        for g in 1..MAX_FENCED_IN_A_ROW as u64 {
            assert!(!f.fenced(g));
        }
        f.committed();
        for g in 1..MAX_FENCED_IN_A_ROW as u64 {
            assert!(!f.fenced(g));
        }
        assert!(f.fenced(MAX_FENCED_IN_A_ROW as u64));
    }
}
