//! Internal events: one typed event per thing that happens, emitted in one
//! place, from which both the logs and the metrics come.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::metrics::{
    CompactionLabels, Metrics, PartitionLabels, RejectLabels, TableLabels, TopicLabels,
    UnknownIdLabels,
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
