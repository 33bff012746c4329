//! `[tables.<name>]`: where a Delta table is, how it is created, how keys
//! and new fields are handled, and which Kafka metadata it stores.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{redacted_map, PropertyValue, ScalarValue, TransformSpec};

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
    /// Table location: a local path, a `file://` URL, or an object store URL:
    /// `s3://bucket/path` (also `s3a://`), `gs://bucket/path`,
    /// `az://container/path` (also `abfs[s]://`, `adl://`, `azure://`).
    /// Other schemes stop inlet at start. See "Object stores" below.
    pub uri: String,
    /// Columns in Spark DDL form, e.g.
    /// `"user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP"`.
    /// Types: STRING, BINARY, BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT,
    /// DOUBLE, DECIMAL(p,s), DATE, TIMESTAMP, TIMESTAMP_NTZ, ARRAY<T>,
    /// MAP<K,V>, STRUCT<…>, with NOT NULL and COMMENT. Used to create the
    /// table when it does not exist; an existing table's own schema is used
    /// as it is. Unset with `avro`/`json_schema`/`protobuf`: a missing table
    /// is created from the registry's latest schema of the source's value
    /// subject (`subject_name_strategy`).
    pub schema: Option<String>,
    /// Partition columns for a table inlet creates: table columns, plain or
    /// derived by a transform (e.g. a date from the event time). In `upsert`
    /// and `history` mode a merge reads only the partitions of its keys when
    /// the partition columns are also keys; otherwise every partition (a key
    /// may move; see "Change data capture").
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Liquid clustering columns for a table inlet creates, e.g.
    /// `["user", "event_time"]`: top-level table columns. The table gets the
    /// `clustering` writer feature and the `delta.clustering` domain (as
    /// Spark's `CLUSTER BY`); the files inlet appends are unclustered, so
    /// that an `OPTIMIZE` by Spark or Databricks clusters them. Not with
    /// `partition_by`. On an existing table it must name the table's
    /// clustering columns, in order (inlet never re-clusters a table):
    /// otherwise, or on a table that is not clustered, inlet stops at open.
    /// Default: none.
    #[serde(default)]
    pub cluster_by: Vec<String>,
    /// Identity columns for a table inlet creates
    /// (`identity = [{ column = "id", start = 1, step = 1 }]`; `start` and
    /// `step` default to 1, `step` is not 0 and counts down when negative):
    /// each a nullable BIGINT column of the schema, created `GENERATED
    /// ALWAYS AS IDENTITY` (the `identityColumns` writer feature); inlet
    /// generates its values, replacing whatever a message holds for the
    /// column (see "Writer features"). An existing table's identity columns
    /// are the table's. Default: none.
    #[serde(default)]
    pub identity: Vec<IdentityColumn>,
    /// How message keys fill the `metadata_columns.key` column: `bytes`
    /// (BINARY, as they are), `string` (STRING; invalid UTF-8 is
    /// quarantined), or `json`, `avro`, `json_schema`, `protobuf` (decoded
    /// into a STRUCT of the `key_schema` fields; the framed formats use
    /// `[schema_registry]`). A message without a key gets a null key; a key
    /// that cannot be decoded quarantines its message. Default: `bytes`.
    #[serde(default)]
    pub key_format: KeyFormat,
    /// The decoded key's fields in Spark DDL, e.g. `"id BIGINT, region
    /// STRING"`, for the `json`, `avro`, `json_schema` and `protobuf` key formats: the
    /// key column of a table inlet creates is a STRUCT of them. An existing
    /// table's key column type is used as it is.
    pub key_schema: Option<String>,
    /// Values longer than this are quarantined undecoded (stage `decode`).
    /// The default is Kafka's default message size limit; raise it when the
    /// topics legitimately carry larger values. Default: `1MiB`.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: bytesize::ByteSize,
    /// JSON values nested deeper than this many objects/arrays are
    /// quarantined (stage `decode`). Default: `64`.
    #[serde(default = "default_max_nesting_depth")]
    pub max_nesting_depth: usize,
    /// The shape of plain JSON message values, in Spark DDL, when it differs
    /// from the table's (the transforms then map it onto the table). Plain
    /// `json` only: Avro, JSON Schema and Protobuf topics take their shape
    /// from the registry. Default: the table's value columns.
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
    /// Parquet compression: `snappy`, `zstd`, `lz4`, `uncompressed`.
    /// Default: `snappy`.
    #[serde(default)]
    pub compression: Compression,
    /// Size of the Parquet files ingest writes, in compressed bytes: a
    /// commit larger than this is split into several files. Commits smaller
    /// than this make smaller files (see `[flush]` and compaction). Row
    /// groups hold 128 Ki rows, with column statistics for pruning. Default:
    /// `128MiB`.
    #[serde(default = "default_target_file_size")]
    pub target_file_size: bytesize::ByteSize,
    /// Commits between Delta checkpoints, for a table inlet creates (the
    /// `delta.checkpointInterval` property). An existing table keeps its own
    /// property. Log files older than `delta.logRetentionDuration` are
    /// cleaned up after a checkpoint; data files are never vacuumed by inlet.
    /// Default: Delta's (100).
    pub checkpoint_interval: Option<u64>,
    /// Location of this table's quarantine table: messages that cannot become
    /// rows land there with topic, partition, offset, timestamp, key, raw
    /// value, headers, stage and error, exactly once. Created when missing,
    /// with the table's storage options. Unset: such messages are only
    /// logged and counted.
    pub quarantine_uri: Option<String>,
    /// Background compaction of small files (`[tables.<name>.compaction]`).
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// What happens when messages carry fields the table lacks (a new writer
    /// schema version): `add_columns` adds them as nullable columns in the
    /// commit that first holds them, older rows read null; `fail` stops
    /// inlet with the new fields named; `ignore` drops them. A type change
    /// that is not a safe widening never truncates data: its messages are
    /// quarantined (`fail`: inlet stops). Default: `add_columns`.
    #[serde(default)]
    pub evolution: EvolutionPolicy,
    /// How messages become rows: `append` (the default: every message is a
    /// row), `upsert` (the table holds the latest row per `keys`: SCD type
    /// 1; a change replaces the row of its key, a delete removes it),
    /// `history` (every version of a row is kept with its validity, SCD
    /// type 2: see `history`) or `changelog` (every change is appended,
    /// tombstones included, as rows with null value columns). See "Change
    /// data capture". Default: `append`.
    #[serde(default)]
    pub mode: TableMode,
    /// The columns that identify a row in `upsert`, `history` and
    /// `changelog` modes:
    /// value columns, or the key column (`metadata_columns.key`, as
    /// `key_format` decodes it). A change with a null key column is
    /// quarantined (stage `constraint`). Required by those modes. Default:
    /// none.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The column that orders the changes of one key (e.g. Debezium's
    /// `source.lsn` or `ts_ms` flattened): of several changes of a key in
    /// one batch only the last applies, and a change older than the row in
    /// the table never overwrites it. Ties go to the higher Kafka offset
    /// (for one partition, the later change), and a change as old as the
    /// row replaces it. A change with a null value here is quarantined.
    /// Unset: the Kafka offset orders, and a later batch always wins.
    pub sequence_by: Option<String>,
    /// An SQL predicate over the row (its table columns) that makes a
    /// change a delete, e.g. `"__op = 'd'"`; NULL is false. Unset: only
    /// tombstones delete.
    pub delete_when: Option<String>,
    /// What a tombstone (a message with a key and no value) means in
    /// `upsert`, `history` and `changelog` modes: `delete` (the default; the key must
    /// then be the key column, as a tombstone has no value columns) or
    /// `quarantine` (as in `append` mode, always). Default: `delete`.
    #[serde(default)]
    pub tombstones: Tombstones,
    /// How long an `upsert` or `history` table remembers a delete, e.g.
    /// `"7d"`: a change older (by `sequence_by`) than a delete of its key
    /// that arrives in a later batch is dropped instead of bringing the row
    /// back (`history`: it becomes a version the delete closes, not the
    /// current one). Each delete's key and sequence are kept in files under
    /// `_inlet_tombstones/` that the table's `inlet.tombstones` domain
    /// lists, written in the merge's commit; the table must support domain
    /// metadata (one inlet creates with this set does). Needs `sequence_by`. Unset
    /// (the default): deletes leave no trace.
    #[serde(default, with = "humantime_serde")]
    pub tombstone_retention: Option<Duration>,
    /// `history` mode's columns (`[tables.<name>.history]`).
    #[serde(default)]
    pub history: HistoryColumns,
    /// When `upsert` and `history` merges into a table with deletion
    /// vectors rewrite a file instead (`[tables.<name>.deletion_vectors]`).
    #[serde(default)]
    pub deletion_vectors: DeletionVectorConfig,
    /// Normalising transforms applied in order to each decoded batch,
    /// before it is conformed to the table (`[[tables.<name>.transforms]]`,
    /// each with an `op`; see "Transforms").
    #[serde(default)]
    pub transforms: Vec<TransformSpec>,
}

/// An identity column of a table inlet creates (`tables.<name>.identity`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityColumn {
    /// The column: a nullable BIGINT column of the schema.
    pub column: String,
    /// The first value. Default: `1`.
    #[serde(default = "one")]
    pub start: i64,
    /// The difference between consecutive values, not 0 (negative counts
    /// down). Default: `1`.
    #[serde(default = "one")]
    pub step: i64,
}

fn one() -> i64 {
    1
}

fn default_max_value_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}

/// Default of `max_nesting_depth`.
pub const DEFAULT_MAX_DEPTH: usize = 64;

fn default_max_nesting_depth() -> usize {
    DEFAULT_MAX_DEPTH
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
    /// Size of the files compaction writes. Default: `128MiB`.
    pub target_file_size: bytesize::ByteSize,
    /// Compact only when at least this many files are smaller than half the
    /// target (`inlet compact --force`: from 2). Default: `8`.
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
            .field("cluster_by", &self.cluster_by)
            .field("identity", &self.identity)
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
            .field("mode", &self.mode)
            .field("keys", &self.keys)
            .field("sequence_by", &self.sequence_by)
            .field("delete_when", &self.delete_when)
            .field("tombstone_retention", &self.tombstone_retention)
            .field("tombstones", &self.tombstones)
            .field("history", &self.history)
            .field("deletion_vectors", &self.deletion_vectors)
            .finish()
    }
}

/// How messages become rows (`tables.<name>.mode`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableMode {
    /// Every message is a row.
    #[default]
    Append,
    /// Every change is a row, tombstones included.
    Changelog,
    /// The latest row per key (SCD type 1).
    Upsert,
    /// Every version of each key, with its validity (SCD type 2).
    History,
}

impl TableMode {
    /// The mode's name, as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            TableMode::Append => "append",
            TableMode::Changelog => "changelog",
            TableMode::Upsert => "upsert",
            TableMode::History => "history",
        }
    }

    /// Whether a batch is merged into the table rather than appended.
    pub fn merges(self) -> bool {
        matches!(self, TableMode::Upsert | TableMode::History)
    }
}

/// `[tables.<name>.history]`: the columns `mode = "history"` adds to every
/// version of a row (a table inlet creates gets them; an existing table
/// without them gets them added, nullable, by the first merge).
///
/// A version starts at its change's `sequence_by` value, or its Kafka
/// offset without `sequence_by` (the order upsert mode uses too: a Kafka
/// timestamp may repeat or go back within a partition, the offset does
/// not), and ends where the next version of its key starts, or at the
/// delete that closed it; the current version has no end. Start and end
/// have the type of the `sequence_by` column (BIGINT for the offset).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryColumns {
    /// The column holding where a version starts. Default: `__start_at`.
    pub start_column: String,
    /// The column holding where a version ends (null: the current one).
    /// Default: `__end_at`.
    pub end_column: String,
    /// The BOOLEAN column that is true for the current version of a key
    /// (a deleted key has none). Default: `__is_current`.
    pub current_column: String,
}

impl Default for HistoryColumns {
    fn default() -> Self {
        HistoryColumns {
            start_column: "__start_at".into(),
            end_column: "__end_at".into(),
            current_column: "__is_current".into(),
        }
    }
}

/// `[tables.<name>.deletion_vectors]`: when a merge into a table with
/// deletion vectors (`delta.enableDeletionVectors`) rewrites a file it hits
/// rather than giving it a vector.
///
/// A vector leaves its file in place: without rewrites each batch's new
/// file would stay, every later batch would read it and add it again with a
/// larger vector, and the cost of a batch would grow with the batches
/// merged before it. Folding small files into the batch's new file and
/// rewriting files that are mostly deleted rows bounds the files a batch
/// hits (with scattered keys, about `1 / (rewrite_below_batches × the
/// share of keys a batch changes)` besides the large files).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeletionVectorConfig {
    /// A file a merge hits that has fewer rows than this many times the
    /// batch's changes is rewritten: its live rows are written again with
    /// the batch's rows, into the same new files. `0`: never. Default: `4`.
    pub rewrite_below_batches: u32,
    /// A file a merge hits that would then have at least this share of its
    /// rows deleted is rewritten without them (above 0, at most 1; `1.0`:
    /// never, as a file whose rows are all deleted is removed anyway).
    /// Default: `0.5`.
    pub rewrite_deleted_share: f64,
}

impl Default for DeletionVectorConfig {
    fn default() -> Self {
        DeletionVectorConfig {
            rewrite_below_batches: 4,
            rewrite_deleted_share: 0.5,
        }
    }
}

/// What a tombstone means outside `append` mode (`tables.<name>.tombstones`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Tombstones {
    /// A delete of its key.
    #[default]
    Delete,
    /// Quarantined, as in `append` mode.
    Quarantine,
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
    /// The column that gets the topic name (STRING).
    pub topic: Option<String>,
    /// The column that gets the partition number (INT).
    pub partition: Option<String>,
    /// The column that gets the offset (BIGINT).
    pub offset: Option<String>,
    /// The column that gets the message timestamp (TIMESTAMP, UTC); null
    /// when the broker gave none.
    pub timestamp: Option<String>,
    /// The column that gets the message key (BINARY, or as `key_format`
    /// decodes it); null for messages without a key.
    pub key: Option<String>,
    /// The column that gets the headers (`MAP<STRING, BINARY>`).
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

/// What ingest does with fields of the decoded value that the table lacks
/// (`tables.<name>.evolution`). A field "lacks" when no table column (or, for a
/// field inside a struct column, no field of that struct) has its exact name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvolutionPolicy {
    /// `"add_columns"` (the default): add them to the table as nullable
    /// columns, after the existing ones (a new field of a struct column is
    /// added at the end of that struct). Their types become the nearest Delta
    /// type that holds every value: an Avro `enum` becomes `STRING`, a `uuid`
    /// its string, a millisecond timestamp `TIMESTAMP`, an unsigned int the
    /// next wider signed one. A field no Delta type can hold (a nanosecond
    /// timestamp, an Avro `time-*`, a union of several types) stops ingest with
    /// an error naming it.
    #[default]
    AddColumns,
    /// `"fail"`: stop ingest with an error naming the new fields, so that
    /// someone adds them on purpose (with an `inlet migrate` `add_columns`
    /// migration) or changes the policy.
    Fail,
    /// `"ignore"`: drop them; the table keeps its schema.
    Ignore,
}

/// URL schemes a table `uri` may use (a location without `://` is a local path).
pub const URI_SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure", "memory",
];

/// Checks that `uri` is a local path or a URL of a supported store, with a
/// message naming the fix otherwise.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let uri = uri.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(());
    };
    let scheme = scheme.to_ascii_lowercase();
    if !URI_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "scheme `{scheme}://` is not supported; use a local path or one of {}",
            URI_SCHEMES
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if scheme != "file" && scheme != "memory" && rest.split('/').next().unwrap_or("").is_empty() {
        return Err(format!(
            "`{scheme}://` needs a bucket or container, e.g. `{scheme}://my-bucket/path/to/table`"
        ));
    }
    url::Url::parse(uri).map_err(|e| format!("is not a valid URL: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(check_uri("/data/events").is_ok());
        assert!(check_uri("relative/events").is_ok());
        assert!(check_uri("file:///data/events").is_ok());
        assert!(check_uri("s3://bucket/events").is_ok());
        assert!(check_uri("S3A://bucket/events").is_ok());
        assert!(check_uri("gs://bucket/events").is_ok());
        assert!(check_uri("abfss://c@acct.dfs.core.windows.net/events").is_ok());
        let e = check_uri("hdfs://nn/events").unwrap_err();
        assert!(
            e.contains("`hdfs://` is not supported") && e.contains("s3://"),
            "{e}"
        );
        let e = check_uri("s3:///events").unwrap_err();
        assert!(e.contains("needs a bucket"), "{e}");
    }
}

#[cfg(test)]
mod history_tests {
    /// `mode = "history"` takes the change settings and three distinct
    /// history column names, with defaults.
    #[test]
    fn history_mode_and_its_columns() {
        let toml = |extra: &str| {
            format!(
                r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "g"
[sources.s]
topics = ["t"]
table = "events"
[tables.events]
uri = "/tmp/events"
schema = "id BIGINT, seq BIGINT"
mode = "history"
keys = ["id"]
sequence_by = "seq"
{extra}
"#
            )
        };
        let cfg = crate::config::load_str(&toml("")).unwrap();
        let t = &cfg.tables["events"];
        assert!(t.mode.merges());
        assert_eq!(t.history.start_column, "__start_at");
        assert_eq!(t.history.end_column, "__end_at");
        assert_eq!(t.history.current_column, "__is_current");
        let e = crate::config::load_str(&toml(
            "[tables.events.history]\nstart_column = \"valid_from\"\nend_column = \"valid_from\"",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("tables.events.history"), "{e}");
        let e = crate::config::load_str(&toml("").replace("keys = [\"id\"]\n", ""))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tables.events.keys"), "{e}");
    }
}
