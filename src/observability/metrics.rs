//! Prometheus metrics. Only internal events write to them (see
//! [`super::events`]), so every log line and metric comes from one place.

use std::sync::atomic::{AtomicBool, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Labels of per-topic metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Topic.
    pub topic: String,
}

/// Labels of rejection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Topic.
    pub topic: String,
    /// Stage that refused the message.
    pub stage: String,
}

/// Labels of per-table metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// Table name from the config.
    pub table: String,
}

/// Labels of the unknown schema id metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnknownIdLabels {
    /// `found` (within the grace) or `given_up` (quarantined).
    pub outcome: String,
}

/// Labels of compaction metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompactionLabels {
    /// Table name.
    pub table: String,
    /// `done`, `skipped` or `failed`.
    pub outcome: String,
}

/// Labels of the merge row counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MergeRowLabels {
    /// Table name.
    pub table: String,
    /// `inserted`, `updated` or `deleted`.
    pub action: String,
}

/// Labels of per-partition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~80 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// Everything inlet measures, plus the run counters of the exit summary.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Messages consumed, per topic.
    pub consumed: Family<TopicLabels, Counter>,
    /// Value bytes consumed, per topic.
    pub consumed_bytes: Family<TopicLabels, Counter>,
    /// Rows committed to tables, per topic.
    pub written: Family<TopicLabels, Counter>,
    /// Messages that became no row, per topic and stage.
    pub rejected: Family<RejectLabels, Counter>,
    /// Delta commits, per table.
    pub batches: Family<TableLabels, Counter>,
    /// Rows committed to quarantine tables, per quarantine table.
    pub quarantined: Family<TableLabels, Counter>,
    /// Flush-to-commit latency, per table.
    pub commit_latency: Family<TableLabels, Histogram, fn() -> Histogram>,
    /// Commit attempts that failed and were retried, per table.
    pub commit_retries: Family<TableLabels, Counter>,
    /// Parquet writes that failed in the object store; their rows were read
    /// again from the table's offsets, per table.
    pub write_retries: Family<TableLabels, Counter>,
    /// Batches not written because another writer had committed their
    /// offsets (zombie fencing), per table.
    pub commit_conflicts: Family<TableLabels, Counter>,
    /// Log versions another writer took first (the commit read its commits
    /// and tried the next version), per table: the table's commit-rate
    /// contention.
    pub commit_versions_lost: Family<TableLabels, Counter>,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Offsets deleted by the broker before inlet read them, skipped with
    /// `fail_on_data_loss = false`, per partition.
    pub offsets_lost: Family<PartitionLabels, Counter>,
    /// Compactions per table and outcome (`done`, `skipped`, `failed`).
    pub compactions: Family<CompactionLabels, Counter>,
    /// Schemas fetched from the Schema Registry.
    pub schemas_fetched: Counter,
    /// Schema Registry requests that failed transiently and were retried.
    pub registry_retries: Counter,
    /// Schema ids the registry answered 404 for, by how the grace ended.
    pub registry_unknown_ids: Family<UnknownIdLabels, Counter>,
    /// Schema changes that added columns to a table, per table.
    pub schema_evolutions: Family<TableLabels, Counter>,
    /// Times the consumer paused its partitions because the stages behind it
    /// were stalled (it keeps polling to stay in its group).
    pub consumer_pauses: Counter,
    /// Partitions this process owns now.
    pub partitions_assigned: Gauge,
    /// Partitions revoked per rebalance (its count: rebalances that took
    /// partitions away).
    pub partitions_revoked: Histogram,
    /// Seconds this process spent owning no partition (from its start to
    /// its first assignment, and from a revocation of its last partition to
    /// its next assignment).
    pub unassigned_seconds: Counter<f64, AtomicU64>,
    /// Merges (`upsert`, `history`) committed, per table; with the files
    /// and bytes they read and wrote and the rows they changed.
    pub merges: Family<TableLabels, Counter>,
    /// Files a merge read (its candidates after pruning), per table.
    pub merge_files_read: Family<TableLabels, Counter>,
    /// Files a merge rewrote (removed, their other rows written again).
    pub merge_files_rewritten: Family<TableLabels, Counter>,
    /// Files merges gave a deletion vector (left in place).
    pub merge_files_vectored: Family<TableLabels, Counter>,
    /// Bytes of the files merges read.
    pub merge_bytes_read: Family<TableLabels, Counter>,
    /// Bytes of the files merges wrote.
    pub merge_bytes_written: Family<TableLabels, Counter>,
    /// Rows merges inserted, updated and deleted, per table and action.
    pub merge_rows: Family<MergeRowLabels, Counter>,
    /// Merges planned again because a concurrent commit touched their
    /// files or keys, per table.
    pub merge_replans: Family<TableLabels, Counter>,
    /// Batches whose identity values were generated again (and files
    /// written anew) after another writer's commit, per table.
    pub identity_regenerations: Family<TableLabels, Counter>,
    /// Run totals for the exit summary.
    pub totals: Totals,
    /// Set once partitions are assigned (or a bounded run has resolved its
    /// range); cleared when the pipeline stops.
    pub ready: AtomicBool,
}

/// Plain totals of one run.
#[derive(Debug, Default)]
pub struct Totals {
    /// Messages consumed.
    pub consumed: AtomicU64,
    /// Rows committed.
    pub rows_written: AtomicU64,
    /// Messages rejected.
    pub rejected: AtomicU64,
    /// Rows committed to quarantine tables.
    pub quarantined: AtomicU64,
    /// Commits made.
    pub commits: AtomicU64,
    /// Batches fenced.
    pub fenced: AtomicU64,
}

/// A registry being filled: each metric is registered under its name and
/// help, and handed back to be kept as a field (its clone shares the values).
struct Registering(Registry);

impl Registering {
    fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.add_with(name, help, M::default())
    }

    fn add_with<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (in this order, which
    /// is the order of the Prometheus text).
    pub fn new() -> Self {
        let mut r = Registering(Registry::with_prefix("inlet"));
        let metrics = Metrics {
            consumed: r.add("records_consumed", "Messages consumed"),
            consumed_bytes: r.add("bytes_consumed", "Message value bytes consumed"),
            written: r.add("records_written", "Rows committed to tables"),
            rejected: r.add(
                "records_rejected",
                "Messages that could not become rows (poison pills)",
            ),
            batches: r.add("batches_committed", "Delta commits"),
            quarantined: r.add("records_quarantined", "Rows committed to quarantine tables"),
            commit_latency: r.add_with(
                "commit_latency_seconds",
                "Time from flush to Delta commit",
                Family::new_with_constructor(latency_histogram),
            ),
            commit_retries: r.add(
                "commit_retries",
                "Commit attempts that failed and were retried",
            ),
            write_retries: r.add(
                "write_retries",
                "Parquet writes that failed in the object store and were read again \
                 from the table's offsets",
            ),
            commit_conflicts: r.add(
                "commit_conflicts",
                "Batches fenced because another writer had committed their offsets",
            ),
            commit_versions_lost: r.add(
                "commit_versions_lost",
                "Log versions another writer committed first; the commit tried the next",
            ),
            lag: r.add("consumer_lag", "Consumer lag in messages"),
            offsets_lost: r.add(
                "offsets_lost",
                "Offsets deleted by the broker before inlet read them (fail_on_data_loss = false)",
            ),
            compactions: r.add("compactions", "Background compactions by outcome"),
            schemas_fetched: r.add(
                "registry_schemas_fetched",
                "Writer schemas fetched from the Schema Registry (each id once)",
            ),
            registry_retries: r.add(
                "registry_retries",
                "Schema Registry requests retried after a transient failure",
            ),
            registry_unknown_ids: r.add(
                "registry_unknown_ids",
                "Schema ids the registry answered 404 for, by outcome: found within \
                 schema_registry.unknown_id_grace, or given_up (their messages \
                 quarantined)",
            ),
            schema_evolutions: r.add(
                "schema_evolutions",
                "Schema changes that added columns to a table",
            ),
            consumer_pauses: r.add(
                "consumer_pauses",
                "Times the consumer paused its partitions while the stages behind it were stalled",
            ),
            partitions_assigned: r.add("partitions_assigned", "Partitions this process owns now"),
            partitions_revoked: r.add_with(
                "partitions_revoked",
                "Partitions revoked per rebalance",
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1.0, 2.0, 12,
                )),
            ),
            unassigned_seconds: r.add(
                "unassigned_seconds",
                "Seconds this process owned no partition (before its first assignment, \
                 and between losing its last partition and its next assignment)",
            ),
            merges: r.add("merges", "Merges (upsert, history) committed"),
            merge_files_read: r.add(
                "merge_files_read",
                "Files merges read (the candidates left after pruning)",
            ),
            merge_files_rewritten: r.add(
                "merge_files_rewritten",
                "Files merges rewrote (removed; their unchanged rows written again)",
            ),
            merge_files_vectored: r.add(
                "merge_files_vectored",
                "Files merges gave a deletion vector (left in place, replaced rows marked deleted)",
            ),
            merge_bytes_read: r.add("merge_bytes_read", "Bytes of the files merges read"),
            merge_bytes_written: r.add("merge_bytes_written", "Bytes of the files merges wrote"),
            merge_rows: r.add(
                "merge_rows",
                "Rows merges inserted, updated and deleted (history: versions added, \
                 stored versions rewritten, deletes applied), and changes they dropped as \
                 older than a kept delete (dropped_by_tombstone)",
            ),
            merge_replans: r.add(
                "merge_replans",
                "Merges planned again because a concurrent commit removed a file they read \
                 or added one that may hold their keys",
            ),
            identity_regenerations: r.add(
                "identity_regenerations",
                "Batches whose identity values were generated again, their files written \
                 anew, after another writer's commit moved the high-water mark",
            ),
            totals: Totals::default(),
            ready: AtomicBool::new(false),
            registry: r.0,
        };
        for outcome in ["found", "given_up"] {
            metrics
                .registry_unknown_ids
                .get_or_create(&UnknownIdLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        metrics
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric is in the text once it has a value, under its name and
    /// help, in registration order.
    #[test]
    fn every_metric_is_registered_with_its_help() {
        let m = Metrics::new();
        let topic = TopicLabels { topic: "t".into() };
        let table = TableLabels { table: "x".into() };
        let partition = PartitionLabels {
            topic: "t".into(),
            partition: "0".into(),
        };
        m.consumed.get_or_create(&topic).inc();
        m.consumed_bytes.get_or_create(&topic).inc();
        m.written.get_or_create(&topic).inc();
        let reject = RejectLabels {
            topic: "t".into(),
            stage: "decode".into(),
        };
        m.rejected.get_or_create(&reject).inc();
        for family in [&m.batches, &m.quarantined, &m.commit_retries] {
            family.get_or_create(&table).inc();
        }
        for family in [
            &m.write_retries,
            &m.commit_conflicts,
            &m.commit_versions_lost,
            &m.schema_evolutions,
            &m.identity_regenerations,
        ] {
            family.get_or_create(&table).inc();
        }
        m.commit_latency.get_or_create(&table).observe(0.1);
        m.lag.get_or_create(&partition).set(1);
        m.offsets_lost.get_or_create(&partition).inc();
        let compaction = CompactionLabels {
            table: "x".into(),
            outcome: "done".into(),
        };
        m.compactions.get_or_create(&compaction).inc();
        let text = m.encode();
        let help: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
        let names: Vec<&str> = help
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "inlet_records_consumed",
                "inlet_bytes_consumed",
                "inlet_records_written",
                "inlet_records_rejected",
                "inlet_batches_committed",
                "inlet_records_quarantined",
                "inlet_commit_latency_seconds",
                "inlet_commit_retries",
                "inlet_write_retries",
                "inlet_commit_conflicts",
                "inlet_commit_versions_lost",
                "inlet_consumer_lag",
                "inlet_offsets_lost",
                "inlet_compactions",
                "inlet_registry_schemas_fetched",
                "inlet_registry_retries",
                "inlet_registry_unknown_ids",
                "inlet_schema_evolutions",
                "inlet_consumer_pauses",
                "inlet_partitions_assigned",
                "inlet_partitions_revoked",
                "inlet_unassigned_seconds",
                "inlet_identity_regenerations",
            ],
            "{text}"
        );
        println!("{text}");
    }
}
