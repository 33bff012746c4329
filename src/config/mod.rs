//! The configuration file: one TOML document describing sources, tables and
//! flushing, with an environment override for every key.
//!
//! The doc comments on these structs are the configuration reference; the
//! README's table is generated from the same words. Every key can be set from
//! the environment as `INLET_<PATH>` with `__` between levels, for example
//! `INLET_KAFKA__BOOTSTRAP_SERVERS` or `INLET_TABLES__EVENTS__URI`.

mod load;
mod offsets;
pub mod uri;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

pub use load::{load, load_str};
pub use offsets::{OffsetSpec, RangeBound, StartingOffsets};

/// Errors found while loading or validating the configuration. Each names the
/// key at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key has the wrong type.
    #[error("configuration: {0}")]
    Parse(String),
    /// A key has a value inlet cannot use.
    #[error("configuration key `{key}`: {problem}; fix: {fix}")]
    Invalid {
        /// Dotted path of the key, e.g. `sources.events.table`.
        key: String,
        /// What is wrong with the value.
        problem: String,
        /// What to change.
        fix: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl crate::fault::Classify for ConfigError {
    fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Operator
    }
}

/// Result alias for configuration loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

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
    pub schema_registry: Option<crate::registry::RegistryConfig>,
    /// How long a stopping `inlet run` (SIGTERM/SIGINT) may take to commit
    /// what it holds. Past it, inlet exits with status 1 without committing
    /// the rest: nothing is lost, a restart reads it again from the table's
    /// offsets. Keep it below the orchestrator's grace period (Kubernetes:
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
    /// Address to serve on, e.g. `"0.0.0.0:9898"`. Not served when unset.
    /// Consumer lag comes from librdkafka's statistics, emitted every 5 s
    /// while this is set (`kafka.properties."statistics.interval.ms"`
    /// overrides).
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
    /// never logged or printed.
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
    /// Value format: `json` (default), `avro`, `json_schema` or `protobuf`
    /// (all Confluent-framed, schemas from `[schema_registry]`), `bytes` or
    /// `string`. Sources feeding one table must share a format.
    #[serde(default)]
    pub format: Format,
    /// The registry subject whose latest schema shapes a table created
    /// from the registry (a table without `schema` that does not exist
    /// yet), as the producers' serializer names it: `topic_name` (default,
    /// `<topic>-value`), `record_name` (`<record_name>`) or
    /// `topic_record_name` (`<topic>-<record_name>`). Decoding is by the
    /// schema id in each message and does not depend on it.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
    /// The fully qualified name of the record (Avro), message (Protobuf) or
    /// schema title (JSON Schema) the topics carry, e.g. `com.acme.Order`:
    /// needed by the `record_name` and `topic_record_name` strategies. For
    /// Protobuf it also picks the message of the `.proto` file a new table
    /// is created from (default: the file's first message).
    pub record_name: Option<String>,
    /// Where a partition starts when the table holds no offset for it:
    /// `earliest` (default), `latest`, or per-partition JSON in Spark's
    /// `startingOffsets` form, `{"events":{"0":42,"1":-2}}` (-2 = earliest,
    /// -1 = latest; partitions not listed start at earliest). Offsets stored in
    /// the table always win.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// What to do when offsets inlet was still to read are gone from the
    /// broker (retention, `deleteRecords`, an unclean leader election), like
    /// Spark's `failOnDataLoss`. `true` (default): stop before writing
    /// anything for that partition, naming the partition and the lost range.
    /// `false`: go on from the first available offset, log `data lost`,
    /// count the offsets in `inlet_offsets_lost_total`, and record the range
    /// as one quarantine row with stage `lost` (`offset` = first lost offset,
    /// header `inlet.lost.last_offset` = last lost offset), so the table's
    /// `quarantine_uri` must be set. A stored offset past the partition's end
    /// (a recreated topic) always stops.
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

/// Message key formats (`tables.<name>.key_format`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// The key's bytes, as BINARY.
    #[default]
    Bytes,
    /// The key as UTF-8 text, as STRING.
    String,
    /// A JSON object, as a STRUCT.
    Json,
    /// Confluent-framed Avro, as a STRUCT.
    Avro,
    /// Confluent-framed JSON Schema, as a STRUCT.
    JsonSchema,
    /// Confluent-framed Protobuf, as a STRUCT.
    Protobuf,
}

impl KeyFormat {
    /// Whether keys decode into a STRUCT.
    pub fn is_structured(self) -> bool {
        matches!(
            self,
            KeyFormat::Json | KeyFormat::Avro | KeyFormat::JsonSchema | KeyFormat::Protobuf
        )
    }
}

/// `[tables.<name>]`: a Delta table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table location: a local path, `file://` URL or object store URL.
    pub uri: String,
    /// Columns in Spark DDL form, e.g.
    /// `"user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP"`.
    /// Used to create the table when it does not exist; an existing table's
    /// own schema is used as it is.
    pub schema: Option<String>,
    /// Partition columns for a table inlet creates: table columns, plain or
    /// derived by a transform (e.g. a date from the event time).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// How message keys fill the `metadata_columns.key` column: `bytes`
    /// (default: BINARY, as they are), `string` (STRING; invalid UTF-8 is
    /// quarantined), or `json`, `avro`, `json_schema`, `protobuf` (decoded
    /// into a STRUCT of the `key_schema` fields; the framed formats use
    /// `[schema_registry]`). A message without a key gets a null key; a key
    /// that cannot be decoded quarantines its message.
    #[serde(default)]
    pub key_format: KeyFormat,
    /// The decoded key's fields in Spark DDL, e.g. `"id BIGINT, region
    /// STRING"`, for the `json`, `avro`, `json_schema` and `protobuf` key formats: the
    /// key column of a table inlet creates is a STRUCT of them. An existing
    /// table's key column type is used as it is.
    pub key_schema: Option<String>,
    /// Values longer than this are quarantined undecoded (stage `decode`).
    /// Default `"1MiB"`, Kafka's default message size limit; raise it when
    /// the topics legitimately carry larger values.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: bytesize::ByteSize,
    /// JSON values nested deeper than this many objects/arrays are
    /// quarantined (stage `decode`). Default 64.
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
    /// The shape of plain JSON message values, in Spark DDL, when it differs
    /// from the table's (the transforms then map it onto the table). Default:
    /// the table's own value columns. Avro and JSON Schema topics take their
    /// shape from the registry instead.
    pub input_schema: Option<String>,
    /// Table properties for a table inlet creates (`delta.*` keys).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Kafka metadata columns to add, each named here.
    #[serde(default)]
    pub metadata_columns: MetadataColumns,
    /// Object store options (credentials, endpoint, region) passed to delta-rs.
    /// Values are never logged or printed.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Parquet compression: `snappy` (default), `zstd`, `lz4`, `uncompressed`.
    #[serde(default)]
    pub compression: Compression,
    /// Size of the Parquet files ingest writes, in compressed bytes: a
    /// commit larger than this is split into several files. Default
    /// `"128MiB"`. (Commits smaller than this make smaller files; see
    /// `[flush]` and compaction.)
    #[serde(default = "default_target_file_size")]
    pub target_file_size: bytesize::ByteSize,
    /// Commits between Delta checkpoints, for a table inlet creates (the
    /// `delta.checkpointInterval` property; Delta's default is 100). An
    /// existing table keeps its own property. Log files older than
    /// `delta.logRetentionDuration` are cleaned up after a checkpoint; data
    /// files are never vacuumed by inlet.
    pub checkpoint_interval: Option<u64>,
    /// Location of this table's quarantine table: messages that cannot become
    /// rows land there with topic, partition, offset, timestamp, key, raw
    /// value, headers, stage and error, exactly once. Created when missing.
    /// Unset: such messages are only logged and counted.
    pub quarantine_uri: Option<String>,
    /// Background compaction of small files (`[tables.<name>.compaction]`).
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// What happens when messages carry fields the table lacks (a new writer
    /// schema version): `add_columns` (default) adds them as nullable
    /// columns in the commit that first holds them, older rows read null;
    /// `fail` stops inlet with the new fields named; `ignore` drops them. A
    /// type change that is not a safe widening never truncates data: its
    /// messages are quarantined (`fail`: inlet stops).
    #[serde(default)]
    pub evolution: crate::schema::EvolutionPolicy,
    /// Normalising transforms applied in order to each decoded batch,
    /// before it is conformed to the table (`[[tables.<name>.transforms]]`,
    /// each with an `op`; see the transforms reference).
    #[serde(default)]
    pub transforms: Vec<crate::transform::TransformSpec>,
}

fn default_max_value_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}

fn default_max_nesting_depth() -> usize {
    crate::decode::DEFAULT_MAX_DEPTH
}

fn default_target_file_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(128)
}

/// `[tables.<name>.compaction]`: rewriting small files into large ones.
///
/// Compaction commits with `dataChange = false`, so it never conflicts with
/// ingest appends and readers of the change feed see no new rows. Data files
/// it replaces stay in storage until a VACUUM, which inlet never runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// How often `inlet run` compacts the table, e.g. `"1h"`. Unset (the
    /// default): never in `run`; `inlet compact` does it on demand.
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Size of the files compaction writes. Default `"128MiB"`.
    pub target_file_size: bytesize::ByteSize,
    /// Compact only when at least this many files are smaller than half the
    /// target. Default 8.
    pub min_small_files: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: None,
            target_file_size: bytesize::ByteSize::mib(128),
            min_small_files: 8,
        }
    }
}

impl fmt::Debug for TableConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableConfig")
            .field("uri", &self.uri)
            .field("schema", &self.schema)
            .field("partition_by", &self.partition_by)
            .field("input_schema", &self.input_schema)
            .field("key_format", &self.key_format)
            .field("key_schema", &self.key_schema)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_nesting_depth", &self.max_nesting_depth)
            .field("properties", &self.properties)
            .field("metadata_columns", &self.metadata_columns)
            .field(
                "storage_options",
                &redacted_map(
                    self.storage_options
                        .iter()
                        .map(|(k, v)| (k, PropertyValue::Scalar(ScalarValue::Str(v.clone())))),
                ),
            )
            .field("compression", &self.compression)
            .field("target_file_size", &self.target_file_size)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("quarantine_uri", &self.quarantine_uri)
            .field("compaction", &self.compaction)
            .field("evolution", &self.evolution)
            .field("transforms", &self.transforms)
            .finish()
    }
}

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Fast, moderate ratio.
    #[default]
    Snappy,
    /// Better ratio, a little slower.
    Zstd,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    Uncompressed,
}

/// `[tables.<name>.metadata_columns]`: each key names the column that gets
/// that piece of Kafka metadata; leave a key out to not store it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    /// Topic name (STRING).
    pub topic: Option<String>,
    /// Partition number (INT).
    pub partition: Option<String>,
    /// Offset (BIGINT).
    pub offset: Option<String>,
    /// Message timestamp (TIMESTAMP, UTC); null when the broker gave none.
    pub timestamp: Option<String>,
    /// Message key (BINARY); null for messages without a key.
    pub key: Option<String>,
    /// Headers as `MAP<STRING, BINARY>`.
    pub headers: Option<String>,
}

impl MetadataColumns {
    /// The configured columns as (kind, column name) pairs, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (MetadataKind, &str)> {
        [
            (MetadataKind::Topic, &self.topic),
            (MetadataKind::Partition, &self.partition),
            (MetadataKind::Offset, &self.offset),
            (MetadataKind::Timestamp, &self.timestamp),
            (MetadataKind::Key, &self.key),
            (MetadataKind::Headers, &self.headers),
        ]
        .into_iter()
        .filter_map(|(k, n)| n.as_deref().map(|n| (k, n)))
    }
}

/// Which piece of Kafka metadata a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    /// Topic.
    Topic,
    /// Partition.
    Partition,
    /// Offset.
    Offset,
    /// Timestamp.
    Timestamp,
    /// Key.
    Key,
    /// Headers.
    Headers,
}

/// `[flush]`: a table's buffer is written and committed when any limit is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Rows buffered per table before a commit. Default 500000.
    pub max_rows: usize,
    /// Decoded (Arrow) bytes buffered per table before a commit, e.g. `"128MiB"`.
    /// Default 128 MiB.
    pub max_bytes: bytesize::ByteSize,
    /// Longest time a row waits in the buffer, e.g. `"10s"`. Default 10 s.
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
    /// First retry delay, doubled each attempt. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest delay between retries. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts before inlet gives up and exits non-zero (a restart resumes
    /// from the table). Default 20.
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
