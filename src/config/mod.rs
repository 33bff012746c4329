//! The configuration file: one TOML document describing sources, tables and
//! flushing, with an environment override for every key.
//!
//! The doc comments on these structs are the configuration reference: the
//! README's table is generated from them (`reference.rs`, a test that fails
//! when the two differ). Every key can be set from
//! the environment as `INLET_<PATH>` with `__` between levels, for example
//! `INLET_KAFKA__BOOTSTRAP_SERVERS` or `INLET_TABLES__EVENTS__URI`.

mod error;
mod load;
mod offsets;
#[cfg(test)]
mod reference;
mod registry;
mod table;
mod transform;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, InvalidKey, Result};
pub(crate) use load::{load, load_str};
pub use offsets::{OffsetSpec, RangeBound, StartingOffsets};
pub use registry::RegistryConfig;
pub use table::{
    check_uri, CompactionConfig, Compression, DeletionVectorConfig, EvolutionPolicy,
    HistoryColumns, IdentityColumn, KeyFormat, MetadataColumns, MetadataKind, TableConfig,
    TableMode, Tombstones, DEFAULT_MAX_DEPTH, URI_SCHEMES,
};
pub use transform::{TimestampFrom, TransformSpec};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this pipeline's progress in the Delta log. Every partition's
    /// offset is stored as a Delta `txn` action with
    /// `appId = "<app_id>:<topic>:<partition>"`. Two pipelines writing the same
    /// table must use different app ids. Letters, digits, `.`, `_`, `-`.
    /// Default: `inlet`.
    #[serde(default = "default_app_id")]
    pub app_id: String,
    /// Kafka connection and consumer settings.
    pub kafka: KafkaConfig,
    /// Sources by name: which topics to read and which table each feeds.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Delta tables by name.
    pub tables: BTreeMap<String, TableConfig>,
    /// When buffered rows are written and committed.
    #[serde(default)]
    pub flush: FlushConfig,
    /// Commit retry behaviour.
    #[serde(default)]
    pub commit: CommitConfig,
    /// The HTTP endpoint for metrics and health checks.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The Confluent-compatible Schema Registry that `avro`, `json_schema`
    /// and `protobuf` sources fetch writer schemas from.
    pub schema_registry: Option<RegistryConfig>,
    /// How long a stopping `inlet run` (SIGTERM/SIGINT) may take to commit
    /// what it holds. Past it, inlet exits with status 1 without committing
    /// the rest: each Delta commit is all or nothing, nothing is lost, and a
    /// restart reads the rest again from the table's offsets. Keep it below the orchestrator's grace period (Kubernetes:
    /// `terminationGracePeriodSeconds`, 30 s by default). Default: `25s`.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(25)
}

/// `[metrics]`: Prometheus `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` (Prometheus), `/healthz` and `/readyz`
    /// on, e.g. `"0.0.0.0:9898"`. Not served when unset. Consumer lag comes
    /// from librdkafka's statistics, emitted every 5 s while this is set
    /// (`kafka.properties."statistics.interval.ms"` overrides).
    pub listen: Option<std::net::SocketAddr>,
}

fn default_app_id() -> String {
    "inlet".to_string()
}

/// `[kafka]`: the consumer.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Consumer group id. Processes with the same group id share the
    /// partitions; the group's committed offsets are advisory only.
    pub group_id: String,
    /// Passed through to librdkafka as they are, e.g. `"security.protocol"`,
    /// `"sasl.mechanism"`, `"sasl.username"`, `"sasl.password"`, `"ssl.ca.location"`.
    /// From the environment write `_` for `.`:
    /// `INLET_KAFKA__PROPERTIES__SASL_PASSWORD`. Values of secret keys are
    /// never logged or printed. inlet owns `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit`, `enable.auto.offset.store`,
    /// `enable.partition.eof` and `auto.offset.reset` (set to `error`, so
    /// that librdkafka never skips deleted offsets in silence; see
    /// `fail_on_data_loss`). Incremental rebalancing is supported:
    /// `"partition.assignment.strategy" = "cooperative-sticky"` on the
    /// classic protocol, or `"group.protocol" = "consumer"` (KIP-848; the
    /// broker then owns the session timeout, heartbeat and assignor, so
    /// those keys are refused); see Rebalancing. Defaults inlet sets that
    /// you may override: `isolation.level=read_committed`,
    /// `session.timeout.ms=30000` (classic protocol only),
    /// `fetch.queue.backoff.ms=10` (librdkafka's 1 s default stalls a consumer
    /// that decodes, see Benchmarks).
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("properties", &redacted_map(self.properties.iter()))
            .finish()
    }
}

/// A passthrough value: TOML strings, numbers and booleans are all accepted,
/// and so are nested tables (`[kafka.properties.sasl] mechanism = "PLAIN"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PropertyValue {
    /// A plain value.
    Scalar(ScalarValue),
    /// A nested table, flattened with `.`.
    Nested(BTreeMap<String, PropertyValue>),
}

/// A passthrough scalar.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ScalarValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarValue::Bool(b) => write!(f, "{b}"),
            ScalarValue::Int(i) => write!(f, "{i}"),
            ScalarValue::Float(x) => write!(f, "{x}"),
            ScalarValue::Str(s) => f.write_str(s),
        }
    }
}

/// `[sources.<name>]`: topics and the table they feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topics to read. Give either `topics` or `pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression over topic names, like Spark's
    /// `subscribePattern`; topics created later that match are picked up.
    pub pattern: Option<String>,
    /// Name of the table (a key of `[tables]`) these topics are written to.
    pub table: String,
    /// Value format: `json`, `avro`, `json_schema` or `protobuf` (the last
    /// three Confluent-framed, schemas from `[schema_registry]`), `bytes` or
    /// `string` (see "Formats"). Sources feeding one table must share a
    /// format. Default: `json`.
    #[serde(default)]
    pub format: Format,
    /// The registry subject whose latest schema shapes a table created
    /// from the registry (a table without `schema` that does not exist
    /// yet), as the producers' serializer names it: `topic_name`
    /// (`<topic>-value`), `record_name` (`<record_name>`) or
    /// `topic_record_name` (`<topic>-<record_name>`). Decoding is by the
    /// schema id in each message and does not depend on it. Default:
    /// `topic_name`.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
    /// The fully qualified name of the record (Avro), message (Protobuf) or
    /// schema title (JSON Schema) the topics carry, e.g. `com.acme.Order`:
    /// needed by the `record_name` and `topic_record_name` strategies. For
    /// Protobuf it also picks the message of the `.proto` file a new table
    /// is created from (default: the file's first message).
    pub record_name: Option<String>,
    /// Where a partition starts when the table holds no offset for it:
    /// `earliest`, `latest`, or per-partition JSON in Spark's
    /// `startingOffsets` form, `{"events":{"0":42,"1":-2}}` (-2 = earliest,
    /// -1 = latest; partitions not listed start at earliest). Offsets stored in
    /// the table always win. Default: `earliest`.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// What to do when offsets inlet was still to read are gone from the
    /// broker (retention, `deleteRecords`, an unclean leader election), like
    /// Spark's `failOnDataLoss`. `true`: stop before writing anything for
    /// that partition, naming it, the stored offset, the first available
    /// offset and the lost range. `false`: go on from the first available
    /// offset, log `data lost`, count the offsets in
    /// `inlet_offsets_lost_total`, and record the range as one quarantine row
    /// with stage `lost` (`offset` = first lost offset, header
    /// `inlet.lost.last_offset` = last lost offset), so the table's
    /// `quarantine_uri` must be set. A stored offset past the partition's end
    /// (a recreated topic) always stops. See "Data loss". Default: `true`.
    #[serde(default = "default_true")]
    pub fail_on_data_loss: bool,
}

fn default_true() -> bool {
    true
}

/// Message value formats.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per message, decoded straight into Arrow columns.
    #[default]
    Json,
    /// Confluent-framed Avro (magic byte 0, 4-byte schema id, Avro binary),
    /// writer schemas fetched from `[schema_registry]`.
    Avro,
    /// Confluent-framed JSON Schema (magic byte 0, 4-byte schema id, JSON),
    /// schemas fetched from `[schema_registry]`.
    JsonSchema,
    /// Confluent-framed Protobuf (magic byte 0, 4-byte schema id, the
    /// message-index array, Protobuf binary), `.proto` schemas with their
    /// references fetched from `[schema_registry]`.
    Protobuf,
    /// The value's bytes as they are, into the table's one BINARY value column.
    Bytes,
    /// The value as UTF-8 text, into the table's one STRING value column
    /// (invalid UTF-8 is quarantined).
    String,
}

impl Format {
    /// Whether values carry a Schema Registry id.
    pub fn uses_registry(self) -> bool {
        matches!(self, Format::Avro | Format::JsonSchema | Format::Protobuf)
    }
}

/// How registry subjects are named (`sources.<name>.subject_name_strategy`),
/// as in Confluent's serializers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `TopicNameStrategy`: `<topic>-value`.
    #[default]
    TopicName,
    /// `RecordNameStrategy`: `<record_name>`.
    RecordName,
    /// `TopicRecordNameStrategy`: `<topic>-<record_name>`.
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The value subject of `topic`, or `None` when the strategy needs a
    /// record name and there is none.
    pub fn value_subject(self, topic: &str, record_name: Option<&str>) -> Option<String> {
        match (self, record_name) {
            (SubjectNameStrategy::TopicName, _) => Some(format!("{topic}-value")),
            (SubjectNameStrategy::RecordName, Some(r)) => Some(r.to_string()),
            (SubjectNameStrategy::TopicRecordName, Some(r)) => Some(format!("{topic}-{r}")),
            (_, None) => None,
        }
    }
}

/// `[flush]`: a table's buffer is written and committed when any limit is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Rows buffered per table before a commit. Default: `500000`.
    pub max_rows: usize,
    /// Decoded (Arrow) bytes buffered per table before a commit, e.g.
    /// `"64MiB"`. Default: `128MiB`.
    pub max_bytes: bytesize::ByteSize,
    /// Longest time a row waits in the buffer before its commit, e.g.
    /// `"5s"`. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            max_rows: 500_000,
            max_bytes: bytesize::ByteSize::mib(128),
            max_age: Duration::from_secs(10),
        }
    }
}

/// `[commit]`: retries of transient commit failures (object store errors,
/// conflicts with other writers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitConfig {
    /// First retry delay of a failed commit, doubled each attempt. Default:
    /// `200ms`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest delay between retries. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts before inlet gives up and exits non-zero (a restart resumes
    /// from the table). The three `commit.*` keys also bound the retries of
    /// opening a table at start and of reading stored offsets (transient
    /// object store errors). Default: `20`.
    pub max_attempts: u32,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            retry_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_attempts: 20,
        }
    }
}

/// Whether a property or option name holds a secret whose value must never be
/// shown.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "private",
        "access_key",
        "credential",
        "session",
    ]
    .iter()
    .any(|s| k.contains(s))
}

fn redacted_map<'a, V: fmt::Debug + 'a>(
    it: impl Iterator<Item = (&'a String, V)>,
) -> BTreeMap<&'a str, String> {
    it.map(|(k, v)| {
        let shown = if is_secret_key(k) {
            "<redacted>".to_string()
        } else {
            format!("{v:?}")
        };
        (k.as_str(), shown)
    })
    .collect()
}

impl Config {
    /// librdkafka properties from `kafka.properties`, flattened, with `_`
    /// read as `.` (so environment overrides can name them).
    pub fn kafka_properties(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        flatten_properties("", &self.kafka.properties, &mut out);
        out
    }

    /// The value format of the sources feeding table `table` (validated to
    /// be one).
    pub fn table_format(&self, table: &str) -> Format {
        self.sources
            .values()
            .find(|s| s.table == table)
            .map_or(Format::Json, |s| s.format)
    }

    /// The source feeding `topic`, by explicit list first, then by pattern.
    pub fn source_for_topic(&self, topic: &str) -> Option<(&str, &SourceConfig)> {
        self.sources
            .iter()
            .find(|(_, s)| s.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.sources.iter().find(|(_, s)| {
                    s.pattern
                        .as_deref()
                        .and_then(|p| regex::Regex::new(p).ok())
                        .is_some_and(|re| re.is_match(topic))
                })
            })
            .map(|(n, s)| (n.as_str(), s))
    }
}

fn flatten_properties(
    prefix: &str,
    props: &BTreeMap<String, PropertyValue>,
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in props {
        let key = k.replace('_', ".");
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            PropertyValue::Scalar(s) => {
                out.insert(key, s.to_string());
            }
            PropertyValue::Nested(m) => flatten_properties(&key, m, out),
        }
    }
}
