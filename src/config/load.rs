//! Reading the file, applying environment overrides, and validating what
//! the configuration itself says (`super::validate`). The checks that need a
//! later stage follow in `crate::pipeline::load_config`, the public entry.

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

/// Loads `path`, applies `INLET_*` environment overrides and validates
/// each section; `crate::pipeline::load_config` adds the later stages' checks.
pub(crate) fn load(path: &Path) -> Result<Config> {
    if !path.exists() {
        return Err(ConfigError::Parse(format!(
            "file `{}` does not exist; pass an existing file with -c",
            path.display()
        )));
    }
    extract(Figment::from(Toml::file(path)))
}

/// Loads a configuration from TOML text (plus environment overrides).
pub(crate) fn load_str(toml: &str) -> Result<Config> {
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
    super::validate::validate(&config)?;
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
    fn a_bad_pattern_names_the_key_and_carries_the_regex_error() {
        let cfg = BASE.replace("topics = [\"events\"]", "pattern = \"events(\"");
        let e = load_str(&cfg).unwrap_err();
        assert!(e.to_string().contains("sources.events.pattern"), "{e}");
        let source = std::error::Error::source(&e).expect("the regex error");
        assert!(source.downcast_ref::<regex::Error>().is_some(), "{source}");
    }

    #[test]
    fn cluster_by_is_refused_with_partitions_and_with_a_column_twice() {
        let with = |extra: &str| {
            load_str(&BASE.replace(
                "schema = \"user STRING, amount DOUBLE\"\n",
                &format!("schema = \"user STRING, amount DOUBLE\"\n{extra}\n"),
            ))
        };
        let ok = with("cluster_by = [\"user\", \"amount\"]").unwrap();
        assert_eq!(ok.tables["events"].cluster_by, ["user", "amount"]);
        for bad in [
            "cluster_by = [\"user\"]\npartition_by = [\"user\"]",
            "cluster_by = [\"user\", \"user\"]",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("tables.events.cluster_by"), "{bad}: {err}");
        }
    }

    #[test]
    fn identity_is_refused_with_step_0_and_with_a_column_twice() {
        let with = |extra: &str| {
            load_str(&BASE.replace(
                "schema = \"user STRING, amount DOUBLE\"\n",
                &format!("schema = \"id BIGINT, user STRING\"\n{extra}\n"),
            ))
        };
        let ok = with("identity = [{ column = \"id\", step = -2 }]").unwrap();
        let id = &ok.tables["events"].identity[0];
        assert_eq!((id.column.as_str(), id.start, id.step), ("id", 1, -2));
        for bad in [
            "identity = [{ column = \"id\", step = 0 }]",
            "identity = [{ column = \"id\" }, { column = \"id\", start = 5 }]",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("tables.events.identity"), "{bad}: {err}");
        }
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
    fn deletion_vector_rules_default_and_a_share_out_of_range_is_refused() {
        let cfg = load_str(BASE).unwrap();
        let rules = &cfg.tables["events"].deletion_vectors;
        assert_eq!(
            (rules.rewrite_below_batches, rules.rewrite_deleted_share),
            (4, 0.5)
        );
        for share in ["0.0", "1.5", "-0.1", "nan"] {
            let cfg = format!(
                "{BASE}\n[tables.events.deletion_vectors]\nrewrite_deleted_share = {share}\n"
            );
            let err = load_str(&cfg).unwrap_err().to_string();
            assert!(
                err.contains("tables.events.deletion_vectors.rewrite_deleted_share"),
                "{share}: {err}"
            );
        }
        let cfg = format!(
            "{BASE}\n[tables.events.deletion_vectors]\nrewrite_below_batches = 0\nrewrite_deleted_share = 1.0\n"
        );
        let rules = load_str(&cfg).unwrap().tables["events"]
            .deletion_vectors
            .clone();
        assert_eq!(
            (rules.rewrite_below_batches, rules.rewrite_deleted_share),
            (0, 1.0)
        );
    }

    #[test]
    fn tombstone_retention_needs_upsert_or_history_mode_and_sequence_by() {
        let table = |extra: &str| {
            format!(
                "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\n\
                 [sources.events]\ntopics = [\"events\"]\ntable = \"events\"\n\
                 [tables.events]\nuri = \"/tmp/y\"\nschema = \"id BIGINT, seq BIGINT\"\n{extra}\n"
            )
        };
        let ok = table("mode = \"upsert\"\nkeys = [\"id\"]\nsequence_by = \"seq\"\ntombstone_retention = \"2d\"");
        let cfg = load_str(&ok).unwrap();
        assert_eq!(
            cfg.tables["events"].tombstone_retention,
            Some(std::time::Duration::from_secs(2 * 86_400))
        );
        let history = table("mode = \"history\"\nkeys = [\"id\"]\nsequence_by = \"seq\"\ntombstone_retention = \"2d\"");
        assert!(load_str(&history).is_ok());
        for bad in [
            "mode = \"upsert\"\nkeys = [\"id\"]\ntombstone_retention = \"2d\"",
            "mode = \"history\"\nkeys = [\"id\"]\ntombstone_retention = \"2d\"",
            "mode = \"changelog\"\nkeys = [\"id\"]\nsequence_by = \"seq\"\ntombstone_retention = \"2d\"",
            "tombstone_retention = \"2d\"",
            "mode = \"upsert\"\nkeys = [\"id\"]\nsequence_by = \"seq\"\ntombstone_retention = \"0s\"",
        ] {
            let err = load_str(&table(bad)).unwrap_err().to_string();
            assert!(err.contains("tables.events.tombstone_retention"), "{bad}: {err}");
        }
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
    fn incremental_rebalancing_is_accepted_and_classic_keys_refused_with_kip_848() {
        let with =
            |props: &str| load_str(&BASE.replace("\"security.protocol\" = \"SASL_SSL\"", props));
        with("\"partition.assignment.strategy\" = \"cooperative-sticky\"").unwrap();
        with("\"group.protocol\" = \"consumer\"").unwrap();
        with("\"group.protocol\" = \"classic\"\n\"session.timeout.ms\" = \"6000\"").unwrap();
        for key in [
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "partition.assignment.strategy",
        ] {
            let err = with(&format!(
                "\"group.protocol\" = \"consumer\"\n\"{key}\" = \"1\""
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{err}");
            assert!(err.contains("group.protocol = consumer"), "{err}");
        }
        let err = with("\"group.protocol\" = \"new\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("group.protocol"), "{err}");
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
