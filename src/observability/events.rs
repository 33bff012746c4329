//! Internal events: one typed event per thing that happens, emitted in one
//! place, from which both the logs and the metrics come.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::metrics::{
    CompactionLabels, MergeRowLabels, Metrics, PartitionLabels, RejectLabels, TableLabels,
    TopicLabels, UnknownIdLabels,
};
use crate::record::{Stage, TopicPartition};

/// Something that happened, with everything needed to log and count it.
pub trait InternalEvent {
    /// Logs the event and updates the metrics.
    fn emit(self, metrics: &Metrics);
}

/// Messages of one topic were read (counted per chunk, not per message).
#[derive(Debug)]
pub struct MessagesConsumed<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Messages.
    pub count: u64,
    /// Value bytes.
    pub bytes: u64,
}

impl InternalEvent for MessagesConsumed<'_> {
    fn emit(self, m: &Metrics) {
        let labels = TopicLabels {
            topic: self.topic.to_string(),
        };
        m.consumed.get_or_create(&labels).inc_by(self.count);
        m.consumed_bytes.get_or_create(&labels).inc_by(self.bytes);
        m.totals.consumed.fetch_add(self.count, Ordering::Relaxed);
    }
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
    fn emit(self, m: &Metrics) {
        m.rejected
            .get_or_create(&RejectLabels {
                topic: self.topic.to_string(),
                stage: self.stage.as_str().to_string(),
            })
            .inc();
        m.totals.rejected.fetch_add(1, Ordering::Relaxed);
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

/// Offsets of a partition were deleted before inlet read them, and its
/// source goes on from the first available offset (`fail_on_data_loss =
/// false`). Emitted each time a start finds the loss (again after a restart
/// that had not committed it yet); the quarantine table holds it once.
#[derive(Debug)]
pub struct DataLost<'a> {
    /// The lost range.
    pub range: &'a crate::record::LostRange,
}

impl InternalEvent for DataLost<'_> {
    fn emit(self, m: &Metrics) {
        let r = self.range;
        m.offsets_lost
            .get_or_create(&PartitionLabels {
                topic: r.topic.clone(),
                partition: r.partition.to_string(),
            })
            .inc_by(u64::try_from(r.count()).unwrap_or(0));
        tracing::error!(
            topic = %r.topic,
            partition = r.partition,
            first_lost = r.first(),
            last_lost = r.last,
            lost = r.count(),
            first_available = r.first_available,
            "data lost: offsets deleted by the broker before inlet read them; going on from the first available offset"
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
    /// Rows per topic in the batch.
    pub rows_by_topic: &'a [(String, u64)],
    /// Partitions covered.
    pub partitions: usize,
    /// Time from flush to commit.
    pub elapsed: Duration,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, m: &Metrics) {
        let table = TableLabels {
            table: self.table.to_string(),
        };
        m.batches.get_or_create(&table).inc();
        m.commit_latency
            .get_or_create(&table)
            .observe(self.elapsed.as_secs_f64());
        let mut rows = 0;
        for (topic, n) in self.rows_by_topic {
            rows += n;
            m.written
                .get_or_create(&TopicLabels {
                    topic: topic.clone(),
                })
                .inc_by(*n);
        }
        m.totals.commits.fetch_add(1, Ordering::Relaxed);
        m.totals.rows_written.fetch_add(rows, Ordering::Relaxed);
        tracing::info!(
            table = self.table,
            version = self.version,
            rows,
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
    fn emit(self, m: &Metrics) {
        m.commit_conflicts
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        m.totals.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            table = self.table,
            app_id = self.app_id,
            stored = self.stored,
            first = self.first,
            "batch dropped: another writer already committed these offsets; re-reading positions"
        );
    }
}

/// Another writer's commit moved an identity column's high-water mark into
/// the values of a batch's files: they were written anew with values after
/// it, and the commit is tried again.
#[derive(Debug)]
pub struct IdentityRegenerated<'a> {
    /// Table name.
    pub table: &'a str,
    /// Files written anew.
    pub files: usize,
    /// Their rows.
    pub rows: i64,
    /// The new first and last value, by identity column.
    pub window: &'a [Option<(i64, i64)>],
}

impl InternalEvent for IdentityRegenerated<'_> {
    fn emit(self, m: &Metrics) {
        m.identity_regenerations
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        tracing::info!(
            table = self.table,
            files = self.files,
            rows = self.rows,
            window = ?self.window,
            "identity values generated again after another writer's commit"
        );
    }
}

/// Another writer committed the log version a commit tried first; the
/// commit read the new commits and, unless they conflict, tries the next.
#[derive(Debug)]
pub struct CommitVersionLost<'a> {
    /// Table name.
    pub table: &'a str,
    /// The version another writer took.
    pub version: i64,
}

impl InternalEvent for CommitVersionLost<'_> {
    fn emit(self, m: &Metrics) {
        m.commit_versions_lost
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        // Under the commit's target, where it was logged before (log
        // filters and tests select it there).
        tracing::debug!(
            target: "inlet::sink::delta",
            table = self.table,
            version = self.version,
            "another writer committed first; moving on"
        );
    }
}

/// A commit attempt failed (store error or conflict) and will be retried.
#[derive(Debug)]
pub struct CommitRetried<'a> {
    /// Table name.
    pub table: &'a str,
    /// Attempt that failed, from 1.
    pub attempt: u32,
    /// The error.
    pub error: &'a str,
}

impl InternalEvent for CommitRetried<'_> {
    fn emit(self, m: &Metrics) {
        m.commit_retries
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        tracing::warn!(
            table = self.table,
            attempt = self.attempt,
            error = self.error,
            "commit attempt failed; retrying"
        );
    }
}

/// Writing a table's Parquet files failed in the object store: the buffered
/// rows are dropped and read again from the table's offsets.
#[derive(Debug)]
pub struct WriteFailed<'a> {
    /// Table name.
    pub table: &'a str,
    /// Failures in a row, from 1.
    pub attempt: u32,
    /// The error.
    pub error: &'a str,
    /// Wait before reading again.
    pub retry_in: std::time::Duration,
}

impl InternalEvent for WriteFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.write_retries
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        tracing::warn!(
            table = self.table,
            attempt = self.attempt,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "writing Parquet failed; dropping the buffered rows to read them again from the table's offsets"
        );
    }
}

/// librdkafka reported a partition's consumer lag.
#[derive(Debug)]
pub struct ConsumerLag<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Lag in messages.
    pub lag: i64,
}

impl InternalEvent for ConsumerLag<'_> {
    fn emit(self, m: &Metrics) {
        m.lag
            .get_or_create(&PartitionLabels {
                topic: self.topic.to_string(),
                partition: self.partition.to_string(),
            })
            .set(self.lag);
    }
}

/// Rejected messages were committed to a quarantine table.
#[derive(Debug)]
pub struct QuarantineCommitted<'a> {
    /// Quarantine table name.
    pub table: &'a str,
    /// Rows committed (after dropping those already stored).
    pub rows: u64,
}

impl InternalEvent for QuarantineCommitted<'_> {
    fn emit(self, m: &Metrics) {
        m.quarantined
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc_by(self.rows);
        m.totals.quarantined.fetch_add(self.rows, Ordering::Relaxed);
        tracing::info!(table = self.table, rows = self.rows, "quarantine committed");
    }
}

/// A compaction rewrote small files of a table.
#[derive(Debug)]
pub struct TableCompacted<'a> {
    /// Table name.
    pub table: &'a str,
    /// Table version of the compaction commit.
    pub version: i64,
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
}

impl InternalEvent for TableCompacted<'_> {
    fn emit(self, m: &Metrics) {
        count_compaction(m, self.table, "done");
        tracing::info!(
            table = self.table,
            version = self.version,
            files_removed = self.files_removed,
            files_added = self.files_added,
            "table compacted"
        );
    }
}

/// A compaction of a table found nothing worth doing.
#[derive(Debug)]
pub struct CompactionSkipped<'a> {
    /// Table name.
    pub table: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl InternalEvent for CompactionSkipped<'_> {
    fn emit(self, m: &Metrics) {
        count_compaction(m, self.table, "skipped");
        tracing::debug!(table = self.table, reason = %self.reason, "compaction skipped");
    }
}

/// A compaction of a table failed; the table is unchanged.
#[derive(Debug)]
pub struct CompactionFailed<'a> {
    /// Table name.
    pub table: &'a str,
    /// Why.
    pub error: &'a str,
}

impl InternalEvent for CompactionFailed<'_> {
    fn emit(self, m: &Metrics) {
        count_compaction(m, self.table, "failed");
        tracing::warn!(table = self.table, error = %self.error, "compaction failed; will try again at the next interval");
    }
}

fn count_compaction(m: &Metrics, table: &str, outcome: &str) {
    m.compactions
        .get_or_create(&CompactionLabels {
            table: table.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// A writer schema was fetched from the Schema Registry.
#[derive(Debug)]
pub struct SchemaFetched {
    /// Schema id.
    pub id: u32,
}

impl InternalEvent for SchemaFetched {
    fn emit(self, m: &Metrics) {
        m.schemas_fetched.inc();
        tracing::info!(
            schema_id = self.id,
            "writer schema fetched from the registry"
        );
    }
}

/// The Schema Registry could not be reached; the chunk waits and retries.
#[derive(Debug)]
pub struct RegistryUnavailable<'a> {
    /// Schema id being fetched.
    pub id: u32,
    /// The failure (never holds credentials).
    pub error: &'a str,
    /// Wait before the next attempt.
    pub retry_in: Duration,
}

impl InternalEvent for RegistryUnavailable<'_> {
    fn emit(self, m: &Metrics) {
        m.registry_retries.inc();
        tracing::warn!(
            schema_id = self.id,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "schema registry unavailable; retrying (nothing is quarantined meanwhile)"
        );
    }
}

/// The registry answered 404 for a schema id; the chunk waits and retries
/// within `schema_registry.unknown_id_grace` (a restarting registry answers
/// 404 for ids it holds until it has re-read its log).
#[derive(Debug)]
pub struct SchemaIdNotFoundYet<'a> {
    /// Schema id being fetched.
    pub id: u32,
    /// The registry's answer.
    pub error: &'a str,
    /// Wait before the next attempt.
    pub retry_in: Duration,
    /// What remains of the grace.
    pub left: Duration,
}

impl InternalEvent for SchemaIdNotFoundYet<'_> {
    fn emit(self, m: &Metrics) {
        m.registry_retries.inc();
        tracing::warn!(
            schema_id = self.id,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            grace_left_ms = self.left.as_millis() as u64,
            "schema registry does not know this schema id (yet); retrying within \
             schema_registry.unknown_id_grace before quarantining its messages"
        );
    }
}

/// A schema id the registry had answered 404 for was found within the grace.
#[derive(Debug)]
pub struct SchemaIdFoundAfterWait {
    /// Schema id.
    pub id: u32,
    /// From the first 404 to the answer.
    pub waited: Duration,
}

impl InternalEvent for SchemaIdFoundAfterWait {
    fn emit(self, m: &Metrics) {
        m.registry_unknown_ids
            .get_or_create(&UnknownIdLabels {
                outcome: "found".into(),
            })
            .inc();
        tracing::info!(
            schema_id = self.id,
            waited_ms = self.waited.as_millis() as u64,
            "schema registry knows the schema id after answering 404; nothing was quarantined"
        );
    }
}

/// A schema id is still unknown after the grace: its messages go to
/// quarantine, now and for the rest of the process.
#[derive(Debug)]
pub struct SchemaIdGivenUp<'a> {
    /// Schema id.
    pub id: u32,
    /// The error its messages are quarantined with.
    pub error: &'a str,
}

impl InternalEvent for SchemaIdGivenUp<'_> {
    fn emit(self, m: &Metrics) {
        m.registry_unknown_ids
            .get_or_create(&UnknownIdLabels {
                outcome: "given_up".into(),
            })
            .inc();
        tracing::warn!(
            schema_id = self.id,
            error = self.error,
            "schema id unknown after the grace; its messages are quarantined \
             (remembered until inlet restarts)"
        );
    }
}

/// Rows with new columns arrived and the table's schema grows with them.
#[derive(Debug)]
pub struct SchemaEvolved<'a> {
    /// Table name.
    pub table: &'a str,
    /// The new columns (nested ones as `a.b`).
    pub columns: &'a [String],
}

impl InternalEvent for SchemaEvolved<'_> {
    fn emit(self, m: &Metrics) {
        m.schema_evolutions
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        tracing::info!(
            table = self.table,
            columns = ?self.columns,
            "new columns: the table schema evolves with the next commit"
        );
    }
}

/// The stages behind the consumer (decode waiting for the registry, a commit
/// retrying against the object store) stalled: its partitions are paused and
/// it keeps polling, so that it stays in its group past
/// `max.poll.interval.ms`.
#[derive(Debug)]
pub struct ConsumerPaused {
    /// Partitions paused.
    pub partitions: usize,
    /// How long the consumer had waited for the decode thread.
    pub waited: Duration,
}

impl InternalEvent for ConsumerPaused {
    fn emit(self, m: &Metrics) {
        m.consumer_pauses.inc();
        tracing::warn!(
            partitions = self.partitions,
            waited_ms = self.waited.as_millis() as u64,
            "pipeline stalled; consumer paused (it keeps polling to stay in its group)"
        );
    }
}

/// The stall ended and the paused partitions fetch again.
#[derive(Debug)]
pub struct ConsumerResumed {
    /// Partitions resumed.
    pub partitions: usize,
    /// How long they were paused.
    pub paused_for: Duration,
}

impl InternalEvent for ConsumerResumed {
    fn emit(self, _m: &Metrics) {
        tracing::info!(
            partitions = self.partitions,
            paused_ms = self.paused_for.as_millis() as u64,
            "pipeline moving again; consumer resumed"
        );
    }
}

/// `topic/partition,...` for a log line.
fn list(parts: &[TopicPartition]) -> String {
    let mut out = String::new();
    for (i, (t, p)) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(t);
        out.push('/');
        out.push_str(&p.to_string());
    }
    out
}

/// The group gave this process partitions (all of its assignment with
/// eager rebalancing, the added ones with incremental rebalancing).
#[derive(Debug)]
pub struct PartitionsAssigned<'a> {
    /// The partitions given.
    pub partitions: &'a [TopicPartition],
    /// Partitions owned now.
    pub owned: usize,
    /// How long it had owned none, when it had none.
    pub unassigned_for: Option<Duration>,
}

impl InternalEvent for PartitionsAssigned<'_> {
    fn emit(self, m: &Metrics) {
        m.partitions_assigned.set(self.owned as i64);
        if let Some(d) = self.unassigned_for {
            m.unassigned_seconds.inc_by(d.as_secs_f64());
        }
        tracing::info!(
            partitions = self.partitions.len(),
            owned = self.owned,
            unassigned_ms = self.unassigned_for.map(|d| d.as_millis() as u64),
            list = %list(self.partitions),
            "partitions assigned"
        );
    }
}

/// The group took partitions from this process; logged once no batch of
/// them can commit any more.
#[derive(Debug)]
pub struct PartitionsRevoked<'a> {
    /// The partitions taken.
    pub partitions: &'a [TopicPartition],
    /// Partitions still owned.
    pub owned: usize,
}

impl InternalEvent for PartitionsRevoked<'_> {
    fn emit(self, m: &Metrics) {
        m.partitions_assigned.set(self.owned as i64);
        m.partitions_revoked.observe(self.partitions.len() as f64);
        tracing::info!(
            partitions = self.partitions.len(),
            owned = self.owned,
            list = %list(self.partitions),
            "partitions revoked"
        );
    }
}

/// A merge (`upsert` or `history`) was committed: what it read, wrote and
/// changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeCommitted<'a> {
    /// Table name.
    pub table: &'a str,
    /// Table version of the commit.
    pub version: i64,
    /// Changes in the batch.
    pub changes: u64,
    /// Files read (candidates after pruning).
    pub files_read: u64,
    /// Files rewritten (removed).
    pub files_rewritten: u64,
    /// Files given a deletion vector (left in place, their replaced rows
    /// marked deleted).
    pub files_vectored: u64,
    /// Bytes of the files read.
    pub bytes_read: u64,
    /// Bytes of the files written.
    pub bytes_written: u64,
    /// Rows inserted (history: versions added).
    pub rows_inserted: u64,
    /// Rows updated (history: stored versions rewritten).
    pub rows_updated: u64,
    /// Rows deleted (history: deletes applied).
    pub rows_deleted: u64,
    /// Changes dropped as older than a kept delete of their key
    /// (`tombstone_retention`).
    pub rows_dropped_by_tombstone: u64,
    /// Deletes this merge keeps as tombstones.
    pub tombstones_written: u64,
    /// Kept deletes taken into the changed keys' timelines (`history`).
    pub tombstones_applied: u64,
    /// Times this batch's merge was planned again (see [`MergeReplanned`]).
    pub replans: u64,
}

impl InternalEvent for MergeCommitted<'_> {
    fn emit(self, m: &Metrics) {
        let table = TableLabels {
            table: self.table.to_string(),
        };
        m.merges.get_or_create(&table).inc();
        for (family, n) in [
            (&m.merge_files_read, self.files_read),
            (&m.merge_files_rewritten, self.files_rewritten),
            (&m.merge_files_vectored, self.files_vectored),
            (&m.merge_bytes_read, self.bytes_read),
            (&m.merge_bytes_written, self.bytes_written),
        ] {
            family.get_or_create(&table).inc_by(n);
        }
        for (action, n) in [
            ("inserted", self.rows_inserted),
            ("updated", self.rows_updated),
            ("deleted", self.rows_deleted),
            ("dropped_by_tombstone", self.rows_dropped_by_tombstone),
        ] {
            m.merge_rows
                .get_or_create(&MergeRowLabels {
                    table: self.table.to_string(),
                    action: action.to_string(),
                })
                .inc_by(n);
        }
        tracing::info!(
            table = self.table,
            version = self.version,
            changes = self.changes,
            files_read = self.files_read,
            files_rewritten = self.files_rewritten,
            files_vectored = self.files_vectored,
            bytes_read = self.bytes_read,
            bytes_written = self.bytes_written,
            rows_inserted = self.rows_inserted,
            rows_updated = self.rows_updated,
            rows_deleted = self.rows_deleted,
            rows_dropped_by_tombstone = self.rows_dropped_by_tombstone,
            tombstones_written = self.tombstones_written,
            tombstones_applied = self.tombstones_applied,
            replans = self.replans,
            "merge committed"
        );
    }
}

/// A merge lost a race to a commit that removed a file it read or added
/// one that may hold its keys: it is planned again on the new snapshot.
#[derive(Debug)]
pub struct MergeReplanned<'a> {
    /// Table name.
    pub table: &'a str,
    /// The version of the commit it conflicted with (or the latest read).
    pub version: i64,
}

impl InternalEvent for MergeReplanned<'_> {
    fn emit(self, m: &Metrics) {
        m.merge_replans
            .get_or_create(&TableLabels {
                table: self.table.to_string(),
            })
            .inc();
        tracing::info!(
            table = self.table,
            version = self.version,
            "merge conflicts with a concurrent commit; planning it again"
        );
    }
}
