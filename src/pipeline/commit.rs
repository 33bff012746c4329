//! The commit stage: one Delta commit per flushed batch, with the txn actions
//! of every partition it covers; then, advisory only, the consumer group.

use std::collections::BTreeMap;
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
use crate::record::TopicPartition;
use crate::sink::{txn_app_id, CommitOutcome, DeltaSink, PartitionProgress};

/// Fenced batches in a row, with no commit between, before inlet stops: a
/// stored offset past the partition's end makes every batch overlap.
const MAX_FENCED_IN_A_ROW: u32 = 5;

/// The partition of `offsets` whose txn app id (under the pipeline's
/// `app_id`) is `fenced_app_id`.
fn fenced_partition<'a>(
    app_id: &str,
    offsets: &'a BTreeMap<TopicPartition, (i64, i64)>,
    fenced_app_id: &str,
) -> Option<&'a TopicPartition> {
    offsets
        .keys()
        .find(|(t, p)| txn_app_id(app_id, t, *p) == fenced_app_id)
}

/// The txn actions of a batch: per partition, its app id and offsets.
fn progress_of(
    app_id: &str,
    offsets: &BTreeMap<TopicPartition, (i64, i64)>,
) -> Vec<PartitionProgress> {
    offsets
        .iter()
        .map(|((topic, partition), (first, last))| PartitionProgress {
            app_id: txn_app_id(app_id, topic, *partition),
            first: *first,
            last: *last,
        })
        .collect()
}

/// What the committer does after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCommit {
    /// Written: tell the consumer group (advisory).
    Advise,
    /// Fenced: drop the batches queued behind it and have the positions
    /// re-read from the table.
    Resync,
    /// Fenced [`MAX_FENCED_IN_A_ROW`] times in a row: stop.
    Stop,
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

    /// What follows the `outcome` of committing a batch of `generation`.
    fn after(&mut self, generation: u64, outcome: &CommitOutcome) -> AfterCommit {
        match outcome {
            CommitOutcome::Committed { .. } => {
                self.in_a_row = 0;
                AfterCommit::Advise
            }
            // A stored offset past the partition's end makes every batch
            // overlap: too many in a row stop.
            CommitOutcome::Fenced { .. } => {
                self.generation = Some(generation);
                self.in_a_row += 1;
                if self.in_a_row >= MAX_FENCED_IN_A_ROW {
                    AfterCommit::Stop
                } else {
                    AfterCommit::Resync
                }
            }
        }
    }
}

/// What the commit stage needs.
pub(super) struct Committer {
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
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<CommitRequest>,
    ) -> Result<(), PipelineError> {
        let mut epoch = 0i64;
        let mut fences = Fences::default();
        while let Some(request) = requests.recv().await {
            match request {
                CommitRequest::Batch(batch) => self.commit(batch, &mut epoch, &mut fences).await?,
                CommitRequest::Drain(Drained(done)) => {
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }

    /// Commits one batch, unless fencing drops it.
    async fn commit(
        &mut self,
        mut batch: PendingCommit,
        epoch: &mut i64,
        fences: &mut Fences,
    ) -> Result<(), PipelineError> {
        let gate = self.gate.clone();
        let gate = gate.lock().await;
        if !fences.admits(*gate, batch.generation) {
            info!(
                table = self.sinks[batch.table].name(),
                rows = batch.rows,
                "batch of a revoked or re-read assignment dropped"
            );
            return Ok(());
        }
        let progress = progress_of(&self.app_id, &batch.offsets);
        *epoch += 1;
        // Quarantine first: a crash between the two commits re-reads the
        // batch, and the quarantine rows already stored are dropped then.
        self.commit_quarantine(&batch, *epoch).await?;
        let sink = &mut self.sinks[batch.table];
        let outcome = if batch.changes.is_empty() {
            sink.commit(
                std::mem::take(&mut batch.adds),
                &batch.schema,
                &progress,
                *epoch,
                &self.retry,
            )
            .await
        } else {
            // `upsert` mode: the changes merged, in the same one commit
            // with the batch's txn actions.
            sink.commit_merge(&batch.changes, &progress, *epoch, &self.retry)
                .await
        }
        .map_err(|e| PipelineError::delta_by(e.to_string(), e))?;
        drop(gate);
        let after = fences.after(batch.generation, &outcome);
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
                if self.advise && after == AfterCommit::Advise {
                    self.advise_group(&batch);
                }
                Ok(())
            }
            CommitOutcome::Fenced {
                app_id,
                stored,
                first,
            } => self.fenced(&batch, after, &app_id, stored, first),
        }
    }

    /// The quarantine rows of `batch`, committed ahead of its data.
    async fn commit_quarantine(
        &mut self,
        batch: &PendingCommit,
        epoch: i64,
    ) -> Result<(), PipelineError> {
        let Some(q) = self.quarantine[batch.table].as_mut() else {
            return Ok(());
        };
        if batch.quarantine.is_empty() {
            return Ok(());
        }
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
            .map_err(|e| PipelineError::delta_by(e.to_string(), e))?;
        QuarantineCommitted {
            table: q.name(),
            rows: rows as u64,
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// Another writer stored `stored` for `app_id`, at or past the batch's
    /// `first` offset: tells the range and the poll thread, or stops.
    fn fenced(
        &self,
        batch: &PendingCommit,
        after: AfterCommit,
        app_id: &str,
        stored: i64,
        first: i64,
    ) -> Result<(), PipelineError> {
        let sink = &self.sinks[batch.table];
        BatchFenced {
            table: sink.name(),
            app_id,
            stored,
            first,
        }
        .emit(&self.metrics);
        // Tells a bounded run's range which partition another writer fenced.
        if let Some(tp) = fenced_partition(&self.app_id, &batch.offsets, app_id) {
            self.completion
                .lock()
                .expect("completion lock")
                .fenced(tp, first, stored);
        }
        if after == AfterCommit::Stop {
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

    const COMMITTED: CommitOutcome = CommitOutcome::Committed { version: 7 };

    fn fenced() -> CommitOutcome {
        CommitOutcome::Fenced {
            app_id: "app-t-0".into(),
            stored: 10,
            first: 5,
        }
    }

    #[test]
    fn batches_behind_a_fence_wait_for_the_next_generation() {
        let mut f = Fences::default();
        assert!(f.admits(1, 1));
        assert!(!f.admits(2, 1), "a batch of a revoked assignment");
        assert_eq!(f.after(1, &COMMITTED), AfterCommit::Advise);
        assert!(f.admits(1, 1), "a commit fences nothing");
        assert_eq!(f.after(1, &fenced()), AfterCommit::Resync);
        assert!(!f.admits(1, 1), "queued behind the fenced batch");
        assert!(f.admits(2, 2), "after the positions were re-read");
        assert!(!f.admits(3, 2), "re-read again meanwhile");
    }

    #[test]
    fn too_many_fences_in_a_row_stop_and_a_commit_resets_the_count() {
        let mut f = Fences::default();
        for g in 1..MAX_FENCED_IN_A_ROW as u64 {
            assert_eq!(f.after(g, &fenced()), AfterCommit::Resync);
        }
        assert_eq!(f.after(9, &COMMITTED), AfterCommit::Advise);
        for g in 1..MAX_FENCED_IN_A_ROW as u64 {
            assert_eq!(f.after(g, &fenced()), AfterCommit::Resync);
        }
        assert_eq!(
            f.after(MAX_FENCED_IN_A_ROW as u64, &fenced()),
            AfterCommit::Stop
        );
    }

    #[test]
    fn the_fenced_partition_is_found_by_its_txn_app_id() {
        let offsets = BTreeMap::from([
            (("t".to_string(), 0), (5, 9)),
            (("t".to_string(), 1), (3, 4)),
            (("u".to_string(), 1), (0, 2)),
        ]);
        let id = txn_app_id("app", "t", 1);
        assert_eq!(
            fenced_partition("app", &offsets, &id),
            Some(&("t".to_string(), 1))
        );
        assert_eq!(
            fenced_partition("other", &offsets, &id),
            None,
            "another pipeline's app id"
        );
        let progress = progress_of("app", &offsets);
        assert_eq!(progress.len(), 3);
        assert_eq!(progress[1].app_id, id);
        assert_eq!((progress[1].first, progress[1].last), (3, 4));
    }
}
