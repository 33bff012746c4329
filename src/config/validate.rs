//! What serde cannot check, section by section: references between
//! sections, names and value ranges. Only what the configuration itself
//! says: checks that need a later stage (parsing the DDL, compiling the
//! transforms) are `crate::pipeline`'s, run by every load right after these.

use super::{
    Config, ConfigError, FlushConfig, Format, InvalidKey, KeyFormat, Result, SourceConfig,
    StartingOffsets, SubjectNameStrategy, TableConfig, TableMode, Tombstones,
};

/// Checks every section.
pub(crate) fn validate(c: &Config) -> Result<()> {
    top_level(c)?;
    kafka(c)?;
    sources(c)?;
    tables(c)?;
    flush(&c.flush)?;
    commit(c)?;
    if let Some(registry) = &c.schema_registry {
        // The very checks the client makes when it starts, so `inlet check`
        // and `run` cannot disagree.
        registry.validate("schema_registry")?;
    }
    Ok(())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// `app_id`, `shutdown_timeout`, and that there is something to do.
fn top_level(c: &Config) -> Result<()> {
    if c.app_id.is_empty()
        || !c
            .app_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
    {
        return Err(ConfigError::invalid(
            "app_id",
            format!("`{}` is not a valid app id", c.app_id),
            "use letters, digits, `.`, `_` and `-` only (it is part of the Delta txn appId)",
        ));
    }
    if c.shutdown_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "shutdown_timeout",
            "is 0: a stop could never commit what it holds",
            "set a duration below the orchestrator's grace period, e.g. \"25s\"",
        ));
    }
    if c.sources.is_empty() {
        return Err(ConfigError::invalid(
            "sources",
            "no source is defined",
            "add a [sources.<name>] section with `topics` and `table`",
        ));
    }
    if c.tables.is_empty() {
        return Err(ConfigError::invalid(
            "tables",
            "no table is defined",
            "add a [tables.<name>] section with `uri` and `schema`",
        ));
    }
    Ok(())
}

/// `[kafka]`: the keys inlet owns are not passed through.
fn kafka(c: &Config) -> Result<()> {
    if c.kafka.bootstrap_servers.trim().is_empty() {
        return Err(ConfigError::invalid(
            "kafka.bootstrap_servers",
            "is empty",
            "set it to the brokers' host:port list",
        ));
    }
    if c.kafka.group_id.trim().is_empty() {
        return Err(ConfigError::invalid(
            "kafka.group_id",
            "is empty",
            "set a consumer group id",
        ));
    }
    const OWNED: &[&str] = &[
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
    ];
    for (key, _) in c.kafka_properties() {
        if OWNED.contains(&key.as_str()) {
            return Err(ConfigError::invalid(
                format!("kafka.properties.{key}"),
                "is set by inlet itself",
                "remove it (bootstrap servers and group id have their own keys under [kafka])",
            ));
        }
        if key == "auto.offset.reset" {
            // librdkafka's reset would skip deleted offsets in silence.
            return Err(ConfigError::invalid(
                format!("kafka.properties.{key}"),
                "is set by inlet itself (to `error`, so that offsets deleted before inlet read \
                 them are noticed)",
                "remove it; where a partition without a stored offset starts is \
                 sources.<name>.starting_offsets, and what happens when offsets are lost is \
                 sources.<name>.fail_on_data_loss",
            ));
        }
    }
    consumer_protocol(c)
}

/// With `group.protocol = consumer` (KIP-848) the broker owns the session,
/// the heartbeat and the assignor: librdkafka refuses the classic keys, so
/// they are refused here, by name, before anything starts.
fn consumer_protocol(c: &Config) -> Result<()> {
    let props = c.kafka_properties();
    let Some(protocol) = props.get("group.protocol") else {
        return Ok(());
    };
    let protocol = protocol.trim().to_ascii_lowercase();
    if protocol != "consumer" && protocol != "classic" {
        return Err(ConfigError::invalid(
            "kafka.properties.group.protocol",
            format!("`{protocol}` is not a group protocol"),
            "use `classic` (the default) or `consumer` (KIP-848)",
        ));
    }
    if protocol == "classic" {
        return Ok(());
    }
    for key in [
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
        "group.protocol.type",
    ] {
        if props.contains_key(key) {
            return Err(ConfigError::invalid(
                format!("kafka.properties.{key}"),
                "is not used with `group.protocol = consumer`: the broker sets it for the group",
                "remove it (the broker's group.consumer.* settings apply; \
                 `group.remote.assignor` picks the broker's assignor)",
            ));
        }
    }
    Ok(())
}

/// `[sources.<name>]`: each source, and that no topic is read twice.
fn sources(c: &Config) -> Result<()> {
    let mut seen_topics = std::collections::BTreeMap::new();
    for (name, s) in &c.sources {
        let key = format!("sources.{name}");
        if !is_name(name) {
            return Err(ConfigError::invalid(
                &key,
                "source names must be lowercase letters, digits and `_`",
                "rename the section (names are also used in environment overrides)",
            ));
        }
        source_topics(&key, s)?;
        for t in &s.topics {
            if let Some(other) = seen_topics.insert(t.clone(), name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.topics"),
                    format!("topic `{t}` is also read by source `{other}`"),
                    "read each topic from one source only",
                ));
            }
        }
        source_table(c, &key, s)?;
    }
    Ok(())
}

/// `topics` or `pattern`, and `starting_offsets` naming only those.
fn source_topics(key: &str, s: &SourceConfig) -> Result<()> {
    match (s.topics.is_empty(), &s.pattern) {
        (true, None) => {
            return Err(ConfigError::invalid(
                format!("{key}.topics"),
                "no topic is given",
                "set `topics = [\"...\"]` or `pattern = \"^prefix-.*\"`",
            ))
        }
        (false, Some(_)) => {
            return Err(ConfigError::invalid(
                format!("{key}.pattern"),
                "both `topics` and `pattern` are set",
                "keep one of them",
            ))
        }
        _ => {}
    }
    if let Some(t) = s.topics.iter().find(|t| !is_topic_name(t)) {
        return Err(ConfigError::invalid(
            format!("{key}.topics"),
            format!("`{t}` is not a valid Kafka topic name"),
            "use letters, digits, `.`, `_` and `-`",
        ));
    }
    let pattern = match &s.pattern {
        Some(p) => Some(regex::Regex::new(p).map_err(|e| {
            InvalidKey::new(
                format!("{key}.pattern"),
                format!("not a valid regular expression: {e}"),
                "fix the expression",
            )
            .because(e)
        })?),
        None => None,
    };
    if let StartingOffsets::Specific(m) = &s.starting_offsets {
        let read =
            |t: &String| s.topics.contains(t) || pattern.as_ref().is_some_and(|re| re.is_match(t));
        if let Some(t) = m.keys().find(|t| !read(t)) {
            return Err(ConfigError::invalid(
                format!("{key}.starting_offsets"),
                format!("names topic `{t}`, which this source does not read"),
                "list only this source's topics",
            ));
        }
    }
    Ok(())
}

/// The source's `table` exists, with a quarantine when data loss goes on.
fn source_table(c: &Config, key: &str, s: &SourceConfig) -> Result<()> {
    let Some(table) = c.tables.get(&s.table) else {
        return Err(ConfigError::invalid(
            format!("{key}.table"),
            format!("names no table: `{}`", s.table),
            format!(
                "define [tables.{}] or use one of: {}",
                s.table,
                c.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    if !s.fail_on_data_loss && table.quarantine_uri.is_none() {
        return Err(ConfigError::invalid(
            format!("{key}.fail_on_data_loss"),
            format!(
                "is false, which records each lost offset range in the quarantine table, \
                 but table `{}` has none",
                s.table
            ),
            format!(
                "set tables.{}.quarantine_uri, or keep fail_on_data_loss = true",
                s.table
            ),
        ));
    }
    Ok(())
}

/// `[tables.<name>]`: each table.
fn tables(c: &Config) -> Result<()> {
    for (name, t) in &c.tables {
        let key = format!("tables.{name}");
        if !is_name(name) {
            return Err(ConfigError::invalid(
                &key,
                "table names must be lowercase letters, digits and `_`",
                "rename the section (names are also used in environment overrides)",
            ));
        }
        table_locations(&key, t)?;
        table_files(&key, t)?;
        table_clustering(&key, t)?;
        table_identity(&key, t)?;
        table_sources(c, name, t)?;
        table_keys(c, name, t)?;
        table_metadata_columns(&key, t)?;
        table_mode(name, t)?;
    }
    Ok(())
}

/// `uri` and `quarantine_uri`.
fn table_locations(key: &str, t: &TableConfig) -> Result<()> {
    if t.uri.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.uri"),
            "is empty",
            "set a local path or an object store URL",
        ));
    }
    for (field, uri) in [
        ("uri", Some(&t.uri)),
        ("quarantine_uri", t.quarantine_uri.as_ref()),
    ] {
        if let Some(uri) = uri {
            super::check_uri(uri).map_err(|problem| {
                ConfigError::invalid(
                    format!("{key}.{field}"),
                    problem,
                    "set a local path or an object store URL such as s3://bucket/path",
                )
            })?;
        }
    }
    if t.quarantine_uri.as_deref().map(str::trim) == Some(t.uri.trim()) {
        return Err(ConfigError::invalid(
            format!("{key}.quarantine_uri"),
            "is the table itself",
            "give the quarantine table a location of its own",
        ));
    }
    Ok(())
}

/// `cluster_by`: not with partitions, no column twice. Whether the columns
/// exist is checked against the schema when the table is created.
fn table_clustering(key: &str, t: &TableConfig) -> Result<()> {
    if t.cluster_by.is_empty() {
        return Ok(());
    }
    if !t.partition_by.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.cluster_by"),
            "a table is either clustered or partitioned, and `partition_by` is set too",
            "remove `cluster_by` or `partition_by`",
        ));
    }
    for (i, c) in t.cluster_by.iter().enumerate() {
        if c.trim().is_empty() || t.cluster_by[..i].contains(c) {
            return Err(ConfigError::invalid(
                format!("{key}.cluster_by"),
                format!("names `{c}` twice or is empty"),
                "list each clustering column once",
            ));
        }
    }
    Ok(())
}

/// `identity`: a non-zero step, no column twice. The column's type is
/// checked against the schema when the table is created.
fn table_identity(key: &str, t: &TableConfig) -> Result<()> {
    for (i, c) in t.identity.iter().enumerate() {
        if c.step == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.identity"),
                format!("column `{}` has step 0", c.column),
                "set a non-zero step, e.g. 1",
            ));
        }
        if t.identity[..i].iter().any(|o| o.column == c.column) {
            return Err(ConfigError::invalid(
                format!("{key}.identity"),
                format!("names `{}` twice", c.column),
                "list each identity column once",
            ));
        }
    }
    Ok(())
}

/// `properties`, `target_file_size`, `checkpoint_interval`.
fn table_files(key: &str, t: &TableConfig) -> Result<()> {
    if t.properties
        .contains_key("delta.setTransactionRetentionDuration")
    {
        return Err(ConfigError::invalid(
            format!("{key}.properties"),
            "`delta.setTransactionRetentionDuration` would expire the Kafka offsets stored in the table",
            "remove the property",
        ));
    }
    if t.target_file_size.as_u64() < 1024 {
        return Err(ConfigError::invalid(
            format!("{key}.target_file_size"),
            "is below 1 KiB",
            "set a size such as \"128MiB\"",
        ));
    }
    let share = t.deletion_vectors.rewrite_deleted_share;
    let in_range = share > 0.0 && share <= 1.0; // false for NaN
    if !in_range {
        return Err(ConfigError::invalid(
            format!("{key}.deletion_vectors.rewrite_deleted_share"),
            "must be above 0 and at most 1",
            "set e.g. 0.5, or 1 to never rewrite a file for its deleted rows",
        ));
    }
    if t.checkpoint_interval == Some(0) {
        return Err(ConfigError::invalid(
            format!("{key}.checkpoint_interval"),
            "must be at least 1",
            "set e.g. 100, or leave it out for Delta's default",
        ));
    }
    Ok(())
}

/// The sources feeding table `name`: one format, the record names their
/// strategies need, a registry for framed formats, `input_schema` for JSON
/// only.
fn table_sources(c: &Config, name: &str, t: &TableConfig) -> Result<()> {
    let feeding: Vec<(&String, &SourceConfig)> =
        c.sources.iter().filter(|(_, s)| s.table == name).collect();
    let Some((first, s0)) = feeding.first() else {
        return Ok(());
    };
    if let Some((other, s1)) = feeding.iter().find(|(_, s)| s.format != s0.format) {
        return Err(ConfigError::invalid(
            format!("sources.{other}.format"),
            format!(
                "sources `{first}` and `{other}` feed table `{name}` with different formats ({:?} and {:?})",
                s0.format, s1.format
            ),
            "write each format to a table of its own",
        ));
    }
    for (source, s) in &feeding {
        if s.subject_name_strategy != SubjectNameStrategy::TopicName && s.record_name.is_none() {
            return Err(ConfigError::invalid(
                format!("sources.{source}.record_name"),
                format!(
                    "is needed by `subject_name_strategy = {:?}`",
                    s.subject_name_strategy
                ),
                "give the fully qualified record or message name, e.g. `record_name = \"com.acme.Order\"`",
            ));
        }
    }
    if s0.format.uses_registry() && c.schema_registry.is_none() {
        return Err(ConfigError::invalid(
            format!("sources.{first}.format"),
            "needs a Schema Registry, and `[schema_registry]` is not set",
            "add [schema_registry] with `url = \"http://registry:8081\"`",
        ));
    }
    if t.input_schema.is_some() && s0.format != Format::Json {
        return Err(ConfigError::invalid(
            format!("tables.{name}.input_schema"),
            "only applies to the plain `json` format",
            "remove it: Avro, JSON Schema and Protobuf messages bring their schema",
        ));
    }
    Ok(())
}

/// `key_format` and `key_schema`.
fn table_keys(c: &Config, name: &str, t: &TableConfig) -> Result<()> {
    let key = format!("tables.{name}");
    if t.key_format != KeyFormat::Bytes && t.metadata_columns.key.is_none() {
        return Err(ConfigError::invalid(
            format!("{key}.key_format"),
            "decodes keys, but no column holds them",
            format!("name the key column: [tables.{name}.metadata_columns] key = \"key\""),
        ));
    }
    if t.key_format.is_structured() && t.key_schema.is_none() && t.schema.is_some() {
        return Err(ConfigError::invalid(
            format!("{key}.key_schema"),
            format!(
                "is needed to create the table with `key_format = {:?}`",
                t.key_format
            ),
            "give the key's fields in Spark DDL, e.g. `key_schema = \"id BIGINT\"`",
        ));
    }
    if matches!(
        t.key_format,
        KeyFormat::Avro | KeyFormat::JsonSchema | KeyFormat::Protobuf
    ) && c.schema_registry.is_none()
    {
        return Err(ConfigError::invalid(
            format!("{key}.key_format"),
            "needs a Schema Registry, and `[schema_registry]` is not set",
            "add [schema_registry] with `url = \"http://registry:8081\"`",
        ));
    }
    Ok(())
}

/// `mode` and what goes with it: `keys` for the modes that have them,
/// none of the change settings in `append` mode. Whether the columns exist
/// is checked against the table when it is opened.
fn table_mode(name: &str, t: &TableConfig) -> Result<()> {
    let key = format!("tables.{name}");
    if t.mode == TableMode::Append {
        let set = [
            ("keys", !t.keys.is_empty()),
            ("sequence_by", t.sequence_by.is_some()),
            ("delete_when", t.delete_when.is_some()),
            ("tombstones", t.tombstones != Tombstones::Delete),
            ("tombstone_retention", t.tombstone_retention.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
            return Err(ConfigError::invalid(
                format!("{key}.{field}"),
                "applies to the `upsert`, `history` and `changelog` modes; the table appends",
                format!("set `mode = \"upsert\"` (or `changelog`), or remove `{field}`"),
            ));
        }
        return Ok(());
    }
    if t.keys.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.keys"),
            format!("is needed by `mode = \"{:?}\"`", t.mode).to_lowercase(),
            "name the columns that identify a row, e.g. `keys = [\"id\"]` (or the key column)",
        ));
    }
    if t.tombstone_retention.is_some() {
        if !matches!(t.mode, TableMode::Upsert | TableMode::History) {
            return Err(ConfigError::invalid(
                format!("{key}.tombstone_retention"),
                format!(
                    "applies to the `upsert` and `history` modes; the table's mode is `{}`",
                    t.mode.name()
                ),
                "remove `tombstone_retention`, or use `mode = \"upsert\"`",
            ));
        }
        if t.sequence_by.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.tombstone_retention"),
                "needs `sequence_by`: ordered by the Kafka offset, a later batch always wins, so a kept delete would drop nothing",
                "set `sequence_by` to the column that orders the source's changes, or remove `tombstone_retention`",
            ));
        }
        if t.tombstone_retention.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                format!("{key}.tombstone_retention"),
                "must be longer than zero",
                "set a duration such as `\"7d\"`, or remove `tombstone_retention`",
            ));
        }
    }
    let h = &t.history;
    let names = [&h.start_column, &h.end_column, &h.current_column];
    if t.mode == TableMode::History
        && (names.iter().any(|n| n.is_empty())
            || names[0] == names[1]
            || names[1] == names[2]
            || names[0] == names[2])
    {
        return Err(ConfigError::invalid(
            format!("{key}.history"),
            "needs three distinct, non-empty column names",
            "set distinct `start_column`, `end_column` and `current_column` (or leave them unset)",
        ));
    }
    Ok(())
}

/// `metadata_columns`: distinct names.
fn table_metadata_columns(key: &str, t: &TableConfig) -> Result<()> {
    let mut cols: Vec<&str> = t.metadata_columns.iter().map(|(_, c)| c).collect();
    cols.sort_unstable();
    if cols.windows(2).any(|w| w[0] == w[1]) {
        return Err(ConfigError::invalid(
            format!("{key}.metadata_columns"),
            "two metadata columns share a name",
            "give each a distinct name",
        ));
    }
    Ok(())
}

/// `[flush]`.
fn flush(f: &FlushConfig) -> Result<()> {
    if f.max_rows == 0 {
        return Err(ConfigError::invalid(
            "flush.max_rows",
            "must be at least 1",
            "set a positive row count",
        ));
    }
    if f.max_bytes.as_u64() < 1024 {
        return Err(ConfigError::invalid(
            "flush.max_bytes",
            "must be at least 1 KiB",
            "set e.g. \"64MiB\"",
        ));
    }
    if f.max_age.is_zero() {
        return Err(ConfigError::invalid(
            "flush.max_age",
            "must be more than zero",
            "set e.g. \"10s\"",
        ));
    }
    Ok(())
}

/// `[commit]`.
fn commit(c: &Config) -> Result<()> {
    if c.commit.max_attempts == 0 {
        return Err(ConfigError::invalid(
            "commit.max_attempts",
            "must be at least 1",
            "set e.g. 20",
        ));
    }
    Ok(())
}
