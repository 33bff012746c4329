//! Reading the file, applying environment overrides, and validating.

use std::path::Path;

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::Value;
use figment::Figment;

use super::{Config, ConfigError, Result};

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "INLET_";
/// Top-level sections: only `INLET_<SECTION>...` variables are configuration
/// overrides, so that `INLET_LOG`, `INLET_CONFIG` and the like are not.
const SECTIONS: &[&str] = &[
    "app_id",
    "kafka",
    "sources",
    "tables",
    "flush",
    "commit",
    "metrics",
    "schema_registry",
];

/// Loads `path`, applies `INLET_*` environment overrides and validates.
pub fn load(path: &Path) -> Result<Config> {
    if !path.exists() {
        return Err(ConfigError::Parse(format!(
            "file `{}` does not exist; pass an existing file with -c",
            path.display()
        )));
    }
    extract(Figment::from(Toml::file(path)))
}

/// Loads a configuration from TOML text (plus environment overrides).
pub fn load_str(toml: &str) -> Result<Config> {
    extract(Figment::from(Toml::string(toml)))
}

fn extract(figment: Figment) -> Result<Config> {
    extract_with_env(figment, std::env::vars())
}

/// Applies `INLET_*` overrides from `vars` (injected, so tests need not touch
/// the process environment).
fn extract_with_env(
    mut figment: Figment,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Config> {
    for (name, raw) in vars {
        let Some(rest) = name
            .get(..ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            .map(|_| &name[ENV_PREFIX.len()..])
        else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if !SECTIONS.contains(&path[0].as_str()) || path.iter().any(String::is_empty) {
            continue;
        }
        // Passthrough maps hold strings: keep the text as written, so that a
        // password `007` stays `007` and `true` stays a string.
        let verbatim = matches!(
            path.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["kafka", "properties", ..]
                | ["tables", _, "storage_options", ..]
                | ["schema_registry", ..]
        );
        let value: Value = if verbatim {
            Value::from(raw)
        } else {
            // Parsed as figment's own Env provider does (numbers, bools, arrays).
            raw.parse().unwrap_or_else(|_| Value::from(raw))
        };
        figment = figment.merge(Serialized::global(&path.join("."), value));
    }
    let config: Config = figment.extract().map_err(|e| {
        // figment's error names the key path; keep every error it collected.
        let msgs: Vec<String> = e
            .into_iter()
            .map(|e| {
                let path = e.path.join(".");
                // Never echo a value: it might be a secret.
                let kind = redact_kind(&e.kind);
                if path.is_empty() {
                    kind
                } else {
                    format!("key `{path}`: {kind}")
                }
            })
            .collect();
        ConfigError::Parse(msgs.join("; "))
    })?;
    validate(&config)?;
    Ok(config)
}

fn redact_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) => format!("wrong type, expected {expected}"),
        Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        other => other.to_string(),
    }
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

/// Checks what serde cannot: references between sections and value ranges.
fn validate(c: &Config) -> Result<()> {
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
    for (key, value) in c.kafka_properties() {
        let owned = [
            "bootstrap.servers",
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "enable.partition.eof",
        ];
        if owned.contains(&key.as_str()) {
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
        if key == "partition.assignment.strategy" && value.contains("cooperative") {
            return Err(ConfigError::invalid(
                format!("kafka.properties.{key}"),
                "cooperative rebalancing is not supported yet",
                "use `range` or `roundrobin` (the default)",
            ));
        }
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
        for t in &s.topics {
            if !is_topic_name(t) {
                return Err(ConfigError::invalid(
                    format!("{key}.topics"),
                    format!("`{t}` is not a valid Kafka topic name"),
                    "use letters, digits, `.`, `_` and `-`",
                ));
            }
            if let Some(other) = seen_topics.insert(t.clone(), name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.topics"),
                    format!("topic `{t}` is also read by source `{other}`"),
                    "read each topic from one source only",
                ));
            }
        }
        if let Some(p) = &s.pattern {
            if let Err(e) = regex::Regex::new(p) {
                return Err(ConfigError::invalid(
                    format!("{key}.pattern"),
                    format!("not a valid regular expression: {e}"),
                    "fix the expression",
                ));
            }
        }
        if !c.tables.contains_key(&s.table) {
            return Err(ConfigError::invalid(
                format!("{key}.table"),
                format!("names no table: `{}`", s.table),
                format!(
                    "define [tables.{}] or use one of: {}",
                    s.table,
                    c.tables.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let quarantined = c
            .tables
            .get(&s.table)
            .is_some_and(|t| t.quarantine_uri.is_some());
        if !s.fail_on_data_loss && !quarantined {
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
        if let super::StartingOffsets::Specific(m) = &s.starting_offsets {
            for t in m.keys() {
                let listed = s.topics.contains(t)
                    || s.pattern
                        .as_deref()
                        .and_then(|p| regex::Regex::new(p).ok())
                        .is_some_and(|re| re.is_match(t));
                if !listed {
                    return Err(ConfigError::invalid(
                        format!("{key}.starting_offsets"),
                        format!("names topic `{t}`, which this source does not read"),
                        "list only this source's topics",
                    ));
                }
            }
        }
    }
    for (name, t) in &c.tables {
        let key = format!("tables.{name}");
        if !is_name(name) {
            return Err(ConfigError::invalid(
                &key,
                "table names must be lowercase letters, digits and `_`",
                "rename the section (names are also used in environment overrides)",
            ));
        }
        if t.uri.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.uri"),
                "is empty",
                "set a local path or an object store URL",
            ));
        }
        for (field, uri) in std::iter::once(("uri", Some(&t.uri))).chain(std::iter::once((
            "quarantine_uri",
            t.quarantine_uri.as_ref(),
        ))) {
            if let Some(uri) = uri {
                crate::config::uri::check_uri(uri).map_err(|problem| {
                    ConfigError::invalid(
                        format!("{key}.{field}"),
                        problem,
                        "set a local path or an object store URL such as s3://bucket/path",
                    )
                })?;
            }
        }
        if let Some(ddl) = &t.schema {
            let schema = crate::schema::parse_ddl(ddl).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}.schema"),
                    e.to_string(),
                    "write the columns as `name TYPE, ...` in Spark DDL",
                )
            })?;
            for (_, col) in t.metadata_columns.iter() {
                if schema.field_with_name(col).is_ok() {
                    return Err(ConfigError::invalid(
                        format!("{key}.metadata_columns"),
                        format!("column `{col}` is also in the schema"),
                        "give the metadata column another name, or drop it from the schema",
                    ));
                }
            }
            for p in &t.partition_by {
                let in_meta = t.metadata_columns.iter().any(|(_, c)| c == p);
                if schema.field_with_name(p).is_err() && !in_meta {
                    return Err(ConfigError::invalid(
                        format!("{key}.partition_by"),
                        format!("`{p}` is not a column of the table"),
                        "name a column of `schema` or a metadata column",
                    ));
                }
            }
        }
        if t.properties
            .contains_key("delta.setTransactionRetentionDuration")
        {
            return Err(ConfigError::invalid(
                format!("{key}.properties"),
                "`delta.setTransactionRetentionDuration` would expire the Kafka offsets stored in the table",
                "remove the property",
            ));
        }
        if t.quarantine_uri.as_deref().map(str::trim) == Some(t.uri.trim()) {
            return Err(ConfigError::invalid(
                format!("{key}.quarantine_uri"),
                "is the table itself",
                "give the quarantine table a location of its own",
            ));
        }
        if t.target_file_size.as_u64() < 1024 {
            return Err(ConfigError::invalid(
                format!("{key}.target_file_size"),
                "is below 1 KiB",
                "set a size such as \"128MiB\"",
            ));
        }
        if t.checkpoint_interval == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.checkpoint_interval"),
                "must be at least 1",
                "set e.g. 100, or leave it out for Delta's default",
            ));
        }
        let feeding: Vec<(&String, &super::SourceConfig)> =
            c.sources.iter().filter(|(_, s)| s.table == *name).collect();
        if let Some((first, s0)) = feeding.first() {
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
            let format = s0.format;
            for (source, s) in &feeding {
                if s.subject_name_strategy != super::SubjectNameStrategy::TopicName
                    && s.record_name.is_none()
                {
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
            if format.uses_registry() && c.schema_registry.is_none() {
                return Err(ConfigError::invalid(
                    format!("sources.{first}.format"),
                    "needs a Schema Registry, and `[schema_registry]` is not set",
                    "add [schema_registry] with `url = \"http://registry:8081\"`",
                ));
            }
            if let Some(ddl) = &t.input_schema {
                if format != super::Format::Json {
                    return Err(ConfigError::invalid(
                        format!("{key}.input_schema"),
                        "only applies to the plain `json` format",
                        "remove it: Avro, JSON Schema and Protobuf messages bring their schema",
                    ));
                }
                crate::schema::parse_ddl(ddl).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.input_schema"),
                        e.to_string(),
                        "write the message's fields as `name TYPE, ...` in Spark DDL",
                    )
                })?;
            }
            if let (Some(ddl), super::Format::Json, false) =
                (&t.schema, format, t.transforms.is_empty())
            {
                check_transforms(&key, ddl, t)?;
            }
            if let (Some(ddl), super::Format::Bytes | super::Format::String) = (&t.schema, format) {
                let want = if format == super::Format::Bytes {
                    "BINARY"
                } else {
                    "STRING"
                };
                let schema = crate::schema::parse_ddl(ddl).map_err(|e| {
                    ConfigError::invalid(format!("{key}.schema"), e.to_string(), "fix the DDL")
                })?;
                let ok = matches!(schema.fields().as_ref(), [f] if
                    (format == super::Format::Bytes && f.data_type() == &arrow::datatypes::DataType::Binary)
                    || (format == super::Format::String && f.data_type() == &arrow::datatypes::DataType::Utf8));
                if !ok {
                    return Err(ConfigError::invalid(
                        format!("{key}.schema"),
                        format!("the `{format:?}` format fills one {want} column; the schema has other columns"),
                        format!("declare one column, e.g. `value {want}` (metadata columns go in metadata_columns)"),
                    ));
                }
            }
        }
        if t.key_format != super::KeyFormat::Bytes && t.metadata_columns.key.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.key_format"),
                "decodes keys, but no column holds them",
                format!("name the key column: [tables.{name}.metadata_columns] key = \"key\""),
            ));
        }
        if t.key_format.is_structured() {
            match &t.key_schema {
                None if t.schema.is_some() => {
                    return Err(ConfigError::invalid(
                        format!("{key}.key_schema"),
                        format!(
                            "is needed to create the table with `key_format = {:?}`",
                            t.key_format
                        ),
                        "give the key's fields in Spark DDL, e.g. `key_schema = \"id BIGINT\"`",
                    ))
                }
                Some(ddl) => {
                    crate::schema::parse_ddl(ddl).map_err(|e| {
                        ConfigError::invalid(
                            format!("{key}.key_schema"),
                            e.to_string(),
                            "write the key's fields as `name TYPE, ...` in Spark DDL",
                        )
                    })?;
                }
                None => {}
            }
        }
        if matches!(
            t.key_format,
            super::KeyFormat::Avro | super::KeyFormat::JsonSchema | super::KeyFormat::Protobuf
        ) && c.schema_registry.is_none()
        {
            return Err(ConfigError::invalid(
                format!("{key}.key_format"),
                "needs a Schema Registry, and `[schema_registry]` is not set",
                "add [schema_registry] with `url = \"http://registry:8081\"`",
            ));
        }
        let mut cols: Vec<&str> = t.metadata_columns.iter().map(|(_, c)| c).collect();
        cols.sort_unstable();
        if cols.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::invalid(
                format!("{key}.metadata_columns"),
                "two metadata columns share a name",
                "give each a distinct name",
            ));
        }
    }
    let f = &c.flush;
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
    if c.commit.max_attempts == 0 {
        return Err(ConfigError::invalid(
            "commit.max_attempts",
            "must be at least 1",
            "set e.g. 20",
        ));
    }
    if let Some(registry) = &c.schema_registry {
        validate_registry(registry)?;
    }
    Ok(())
}

/// `[schema_registry]`, by the very checks the client makes when it starts
/// (so `inlet check` and `run` cannot disagree).
fn validate_registry(registry: &crate::registry::RegistryConfig) -> Result<()> {
    use crate::registry::RegistryError;
    registry.validate("schema_registry").map_err(|e| match e {
        RegistryError::Config { key, problem, fix } => ConfigError::Invalid { key, problem, fix },
        other => ConfigError::invalid("schema_registry", other.to_string(), "fix the section"),
    })
}

/// Plain JSON with a table DDL: the transforms must compile against the
/// input and produce what fits the table, checked before anything runs.
fn check_transforms(key: &str, ddl: &str, t: &super::TableConfig) -> Result<()> {
    use std::sync::Arc;
    let parse = |ddl: &str, field: &str| {
        crate::schema::parse_ddl(ddl).map_err(|e| {
            ConfigError::invalid(format!("{key}.{field}"), e.to_string(), "fix the DDL")
        })
    };
    let table = parse(ddl, "schema")?;
    let input = match &t.input_schema {
        Some(i) => parse(i, "input_schema")?,
        None => table.clone(),
    };
    let plan =
        crate::transform::TransformPlan::compile(&t.transforms, Arc::new(input)).map_err(|e| {
            ConfigError::invalid(
                format!("{key}.transforms"),
                e.to_string(),
                "fix that transform (the README's transforms reference lists the ops and keys)",
            )
        })?;
    crate::schema::Conformer::new(plan.output_schema(), &table, t.evolution).map_err(|e| {
        ConfigError::invalid(
            format!("{key}.transforms"),
            format!("the transforms' output does not fit the table: {e}"),
            "make the transforms produce the table's columns, or change `schema`",
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        group_id = "g"
        [kafka.properties]
        "security.protocol" = "SASL_SSL"
        "sasl.password" = "hunter2"
        [sources.events]
        topics = ["events"]
        table = "events"
        [tables.events]
        uri = "/tmp/x"
        schema = "user STRING, amount DOUBLE"
        [tables.events.metadata_columns]
        offset = "_offset"
    "#;

    #[test]
    fn subject_name_strategies_name_subjects_and_need_a_record_name() {
        use crate::config::SubjectNameStrategy as S;
        let c = load_str(BASE).unwrap();
        assert_eq!(c.sources["events"].subject_name_strategy, S::TopicName);
        assert_eq!(
            S::TopicName.value_subject("t", None).as_deref(),
            Some("t-value")
        );
        assert_eq!(
            S::RecordName.value_subject("t", Some("a.B")).as_deref(),
            Some("a.B")
        );
        assert_eq!(
            S::TopicRecordName
                .value_subject("t", Some("a.B"))
                .as_deref(),
            Some("t-a.B")
        );
        assert_eq!(S::RecordName.value_subject("t", None), None);
        let with = |extra: &str| {
            BASE.replace(
                "table = \"events\"\n",
                &format!("table = \"events\"\n{extra}\n"),
            )
        };
        let ok = load_str(&with(
            "subject_name_strategy = \"record_name\"\nrecord_name = \"a.B\"",
        ))
        .unwrap();
        assert_eq!(ok.sources["events"].record_name.as_deref(), Some("a.B"));
        let e = load_str(&with("subject_name_strategy = \"topic_record_name\"")).unwrap_err();
        assert!(e.to_string().contains("sources.events.record_name"), "{e}");
    }

    #[test]
    fn the_shipped_example_configs_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "configs/ holds the examples");
    }

    #[test]
    fn a_transform_that_does_not_fit_stops_at_load_naming_it() {
        let cfg = |transforms: &str| {
            format!(
                r#"
                [kafka]
                bootstrap_servers = "b:9092"
                group_id = "g"
                [sources.s]
                topics = ["t"]
                table = "t"
                [tables.t]
                uri = "/tmp/t"
                schema = "user_name STRING, n BIGINT"
                input_schema = "userName STRING, n BIGINT"
                {transforms}
                "#
            )
        };
        let ok = cfg("[[tables.t.transforms]]\nop = \"snake_case\"");
        load_str(&ok).unwrap();
        let missing = cfg("[[tables.t.transforms]]\nop = \"drop\"\ncolumns = [\"nope\"]");
        let e = load_str(&missing).unwrap_err().to_string();
        assert!(
            e.contains("tables.t.transforms") && e.contains("nope"),
            "{e}"
        );
        let unfit = cfg("[[tables.t.transforms]]\nop = \"cast\"\ncolumns = { n = \"STRING\" }");
        let e = load_str(&unfit).unwrap_err().to_string();
        assert!(e.contains("does not fit the table"), "{e}");
    }

    #[test]
    fn loads_and_flattens_properties() {
        let c = load_str(BASE).unwrap();
        let p = c.kafka_properties();
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(c.app_id, "inlet");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str(&BASE.replace("table = \"events\"", "tabel = \"events\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tabel"), "{err}");
    }

    #[test]
    fn missing_table_names_key_and_fix() {
        let err = load_str(&BASE.replace("table = \"events\"", "table = \"evnts\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sources.events.table"), "{err}");
        assert!(err.contains("define [tables.evnts]"), "{err}");
    }

    #[test]
    fn bad_ddl_is_rejected_at_start() {
        let err = load_str(&BASE.replace("amount DOUBLE", "amount DUBLE"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tables.events.schema"), "{err}");
    }

    #[test]
    fn retention_property_is_refused() {
        let cfg = format!(
            "{BASE}\n[tables.events.properties]\n\"delta.setTransactionRetentionDuration\" = \"interval 1 days\"\n"
        );
        let err = load_str(&cfg).unwrap_err().to_string();
        assert!(err.contains("setTransactionRetentionDuration"), "{err}");
    }

    #[test]
    fn wrong_type_does_not_echo_value() {
        let err = load_str(&BASE.replace("[kafka]", "[flush]\nmax_rows = \"lots\"\n[kafka]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush.max_rows"), "{err}");
        assert!(!err.contains("lots"), "{err}");
    }

    #[test]
    fn cooperative_strategy_is_refused() {
        let cfg = BASE.replace(
            "\"security.protocol\" = \"SASL_SSL\"",
            "\"partition.assignment.strategy\" = \"cooperative-sticky\"",
        );
        let err = load_str(&cfg).unwrap_err().to_string();
        assert!(err.contains("partition.assignment.strategy"), "{err}");
    }

    #[test]
    fn auto_offset_reset_is_refused_and_data_loss_defaults_to_failing() {
        let cfg = BASE.replace(
            "\"security.protocol\" = \"SASL_SSL\"",
            "\"auto.offset.reset\" = \"earliest\"",
        );
        let err = load_str(&cfg).unwrap_err().to_string();
        assert!(err.contains("kafka.properties.auto.offset.reset"), "{err}");
        assert!(err.contains("fail_on_data_loss"), "{err}");
        assert!(load_str(BASE).unwrap().sources["events"].fail_on_data_loss);
    }

    #[test]
    fn going_on_after_data_loss_needs_a_quarantine_table() {
        let lenient = BASE.replace(
            "table = \"events\"",
            "table = \"events\"\nfail_on_data_loss = false",
        );
        let err = load_str(&lenient).unwrap_err().to_string();
        assert!(err.contains("sources.events.fail_on_data_loss"), "{err}");
        assert!(err.contains("tables.events.quarantine_uri"), "{err}");
        let with_quarantine = lenient.replace(
            "uri = \"/tmp/x\"",
            "uri = \"/tmp/x\"\nquarantine_uri = \"/tmp/xq\"",
        );
        assert!(!load_str(&with_quarantine).unwrap().sources["events"].fail_on_data_loss);
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    const BASE: &str = r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        group_id = "g"
        [sources.events]
        topics = ["events"]
        table = "events"
        [tables.events]
        uri = "/tmp/x"
        schema = "id BIGINT"
    "#;

    fn with_env(vars: &[(&str, &str)]) -> Result<Config> {
        extract_with_env(
            Figment::from(Toml::string(BASE)),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn overrides_every_level_and_keeps_passthrough_text() {
        let c = with_env(&[
            ("INLET_KAFKA__BOOTSTRAP_SERVERS", "broker:9092"),
            ("INLET_FLUSH__MAX_ROWS", "1000"),
            ("INLET_FLUSH__MAX_AGE", "5s"),
            ("INLET_TABLES__EVENTS__URI", "/data/events"),
            ("INLET_KAFKA__PROPERTIES__SASL_PASSWORD", "007"),
            (
                "INLET_TABLES__EVENTS__STORAGE_OPTIONS__AWS_ALLOW_HTTP",
                "true",
            ),
            (
                "INLET_TABLES__EVENTS__STORAGE_OPTIONS__AWS_SECRET_ACCESS_KEY",
                "12345",
            ),
            ("INLET_SCHEMA_REGISTRY__URL", "http://registry:8081"),
            // A password needs a user name: the section is validated at load.
            ("INLET_SCHEMA_REGISTRY__USERNAME", "inlet"),
            ("INLET_SCHEMA_REGISTRY__PASSWORD", "0042"),
            ("INLET_LOG", "debug"),
            ("INLET_TEST_PYTHON", "/usr/bin/python3"),
            ("OTHER", "x"),
        ])
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "broker:9092");
        assert_eq!(c.flush.max_rows, 1000);
        assert_eq!(c.flush.max_age, std::time::Duration::from_secs(5));
        assert_eq!(c.tables["events"].uri, "/data/events");
        assert_eq!(c.kafka_properties()["sasl.password"], "007");
        let so = &c.tables["events"].storage_options;
        assert_eq!(so["aws_allow_http"], "true");
        assert_eq!(so["aws_secret_access_key"], "12345");
        let r = c
            .schema_registry
            .as_ref()
            .expect("the section comes from the environment");
        assert_eq!(r.url, "http://registry:8081");
        assert_eq!(r.password.as_deref(), Some("0042"), "kept as written");
    }

    #[test]
    fn a_bad_override_names_its_key() {
        let err = with_env(&[("INLET_FLUSH__MAX_ROWS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush.max_rows"), "{err}");
        let err = with_env(&[("INLET_KAFKA__GROUP_IDD", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_idd"), "{err}");
    }
}
