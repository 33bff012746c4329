//! Prometheus metrics. Only internal events write to them (see
//! [`super::events`]), so every log line and metric comes from one place.

use std::sync::atomic::{AtomicBool, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    /// Consumer lag per partition, from librdkafka's statistics.
    pub lag: Family<PartitionLabels, Gauge>,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("inlet");
        let consumed = Family::<TopicLabels, Counter>::default();
        let consumed_bytes = Family::<TopicLabels, Counter>::default();
        let written = Family::<TopicLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        let batches = Family::<TableLabels, Counter>::default();
        let quarantined = Family::<TableLabels, Counter>::default();
        let commit_latency =
            Family::<TableLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let commit_retries = Family::<TableLabels, Counter>::default();
        let write_retries = Family::<TableLabels, Counter>::default();
        let commit_conflicts = Family::<TableLabels, Counter>::default();
        let lag = Family::<PartitionLabels, Gauge>::default();
        let compactions = Family::<CompactionLabels, Counter>::default();
        let schemas_fetched = Counter::default();
        let registry_retries = Counter::default();
        let registry_unknown_ids = Family::<UnknownIdLabels, Counter>::default();
        for outcome in ["found", "given_up"] {
            registry_unknown_ids
                .get_or_create(&UnknownIdLabels {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        let schema_evolutions = Family::<TableLabels, Counter>::default();
        let consumer_pauses = Counter::default();
        registry.register("records_consumed", "Messages consumed", consumed.clone());
        registry.register(
            "bytes_consumed",
            "Message value bytes consumed",
            consumed_bytes.clone(),
        );
        registry.register(
            "records_written",
            "Rows committed to tables",
            written.clone(),
        );
        registry.register(
            "records_rejected",
            "Messages that could not become rows (poison pills)",
            rejected.clone(),
        );
        registry.register("batches_committed", "Delta commits", batches.clone());
        registry.register(
            "records_quarantined",
            "Rows committed to quarantine tables",
            quarantined.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Time from flush to Delta commit",
            commit_latency.clone(),
        );
        registry.register(
            "commit_retries",
            "Commit attempts that failed and were retried",
            commit_retries.clone(),
        );
        registry.register(
            "write_retries",
            "Parquet writes that failed in the object store and were read again from the table's offsets",
            write_retries.clone(),
        );
        registry.register(
            "commit_conflicts",
            "Batches fenced because another writer had committed their offsets",
            commit_conflicts.clone(),
        );
        registry.register("consumer_lag", "Consumer lag in messages", lag.clone());
        registry.register(
            "compactions",
            "Background compactions by outcome",
            compactions.clone(),
        );
        registry.register(
            "registry_schemas_fetched",
            "Writer schemas fetched from the Schema Registry (each id once)",
            schemas_fetched.clone(),
        );
        registry.register(
            "registry_retries",
            "Schema Registry requests retried after a transient failure",
            registry_retries.clone(),
        );
        registry.register(
            "registry_unknown_ids",
            "Schema ids the registry answered 404 for, by outcome: found within \
             schema_registry.unknown_id_grace, or given_up (their messages quarantined)",
            registry_unknown_ids.clone(),
        );
        registry.register(
            "schema_evolutions",
            "Schema changes that added columns to a table",
            schema_evolutions.clone(),
        );
        registry.register(
            "consumer_pauses",
            "Times the consumer paused its partitions while the stages behind it were stalled",
            consumer_pauses.clone(),
        );
        Metrics {
            registry,
            consumed,
            consumed_bytes,
            written,
            rejected,
            batches,
            quarantined,
            commit_latency,
            commit_retries,
            write_retries,
            commit_conflicts,
            lag,
            compactions,
            schemas_fetched,
            registry_retries,
            registry_unknown_ids,
            schema_evolutions,
            consumer_pauses,
            totals: Totals::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
