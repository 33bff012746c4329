//! The checks of a configuration that need a later stage: the tables' DDL
//! parses, the transforms compile against the input and produce what fits
//! the table. `crate::config` cannot make them (it sits below the stages);
//! this module sits above every stage it asks and below the commands, so
//! [`load_config`] (what every command loads with) and [`Pipeline::run`]
//! (for a configuration built or changed in code) both make them, before
//! anything is fetched. Errors name the key and the fix, as the
//! configuration's own do.
//!
//! [`Pipeline::run`]: super::Pipeline::run

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};

use crate::config::{Config, ConfigError, Format, InvalidKey, TableConfig};

/// Loads `path`, applies `INLET_*` environment overrides, and checks
/// everything that can be checked before anything is fetched: each section
/// (`crate::config`), then what needs a later stage (the DDL, the
/// transforms). The one way to load a configuration file.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let config = crate::config::load(path)?;
    check_stages(&config)?;
    Ok(config)
}

/// [`load_config`] of TOML text (plus environment overrides).
pub fn load_config_str(toml: &str) -> Result<Config, ConfigError> {
    let config = crate::config::load_str(toml)?;
    check_stages(&config)?;
    Ok(config)
}

/// The checks of every table that need the later stages.
pub(crate) fn check_stages(c: &Config) -> Result<(), ConfigError> {
    for (name, t) in &c.tables {
        let fed = c.sources.values().any(|s| s.table == *name);
        check_table(name, t, fed.then(|| c.table_format(name)))?;
    }
    Ok(())
}

/// `tables.<name>`: its DDL keys parse and agree with the other keys; with
/// `format` (when a source feeds it), the value columns fit the format and the
/// transforms fit the table.
fn check_table(name: &str, t: &TableConfig, format: Option<Format>) -> Result<(), ConfigError> {
    let key = format!("tables.{name}");
    let schema = match &t.schema {
        Some(ddl) => Some(ddl_key(
            &key,
            "schema",
            ddl,
            "write the columns as `name TYPE, ...` in Spark DDL",
        )?),
        None => None,
    };
    if let Some(schema) = &schema {
        check_columns(&key, t, schema)?;
        check_changes(&key, t, schema)?;
    }
    if let (true, Some(ddl)) = (t.key_format.is_structured(), &t.key_schema) {
        ddl_key(
            &key,
            "key_schema",
            ddl,
            "write the key's fields as `name TYPE, ...` in Spark DDL",
        )?;
    }
    let Some(format) = format else {
        return Ok(());
    };
    let input = match &t.input_schema {
        Some(ddl) => Some(ddl_key(
            &key,
            "input_schema",
            ddl,
            "write the message's fields as `name TYPE, ...` in Spark DDL",
        )?),
        None => None,
    };
    match (schema, format) {
        (Some(table), Format::Json) if !t.transforms.is_empty() => {
            check_transforms(&key, t, table, input)
        }
        (Some(table), Format::Bytes | Format::String) => check_raw(&key, format, &table),
        _ => Ok(()),
    }
}

/// `tables.<name>.<field>` parsed as Spark DDL.
fn ddl_key(key: &str, field: &str, ddl: &str, fix: &str) -> Result<Schema, ConfigError> {
    crate::schema::parse_ddl(ddl).map_err(|e| {
        InvalidKey::new(format!("{key}.{field}"), e.to_string(), fix)
            .because(e)
            .into()
    })
}

/// Metadata columns are not also schema columns; partition columns exist.
fn check_columns(key: &str, t: &TableConfig, schema: &Schema) -> Result<(), ConfigError> {
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
    Ok(())
}

/// `upsert`, `history` and `changelog`: `delete_when` compiles against the
/// table's columns (as a run compiles it), and the history columns are not
/// value columns too (the merge would overwrite them).
fn check_changes(key: &str, t: &TableConfig, schema: &Schema) -> Result<(), ConfigError> {
    if !t.mode.merges() && t.mode != crate::config::TableMode::Changelog {
        return Ok(());
    }
    if t.mode == crate::config::TableMode::History {
        let h = &t.history;
        for (field, col) in [
            ("start_column", &h.start_column),
            ("end_column", &h.end_column),
            ("current_column", &h.current_column),
        ] {
            if schema.field_with_name(col).is_ok() {
                return Err(ConfigError::invalid(
                    format!("{key}.history.{field}"),
                    format!("`{col}` is also a column of `schema`, which the history columns would overwrite"),
                    format!("name the history column otherwise (`{field} = \"...\"`), or rename the value column"),
                ));
            }
        }
    }
    let Some(sql) = &t.delete_when else {
        return Ok(());
    };
    let table = crate::schema::table_schema_from(
        schema.clone(),
        &t.metadata_columns,
        &t.key_format,
        t.key_schema.as_deref(),
    )
    .map_err(|e| {
        InvalidKey::new(
            format!("{key}.key_schema"),
            e.to_string(),
            "write the key's fields as `name TYPE, ...` in Spark DDL",
        )
        .because(e)
    })?;
    crate::conform::constraints::Constraint::compile("delete_when", sql, &table).map_err(|e| {
        InvalidKey::new(
            format!("{key}.delete_when"),
            e.to_string(),
            "write a boolean SQL predicate over the table's columns, e.g. `__op = 'd'`",
        )
        .because(e)
    })?;
    Ok(())
}

/// The `bytes` and `string` formats fill one BINARY / STRING column.
fn check_raw(key: &str, format: Format, schema: &Schema) -> Result<(), ConfigError> {
    let (want, ty) = if format == Format::Bytes {
        ("BINARY", DataType::Binary)
    } else {
        ("STRING", DataType::Utf8)
    };
    if matches!(schema.fields().as_ref(), [f] if f.data_type() == &ty) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        format!("{key}.schema"),
        format!("the `{format:?}` format fills one {want} column; the schema has other columns"),
        format!(
            "declare one column, e.g. `value {want}` (metadata columns go in metadata_columns)"
        ),
    ))
}

/// Plain JSON with a table DDL: the transforms must compile against the
/// input (`input_schema`, else the table's columns or their Debezium
/// envelope) and produce what fits the table.
fn check_transforms(
    key: &str,
    t: &TableConfig,
    table: Schema,
    input: Option<Schema>,
) -> Result<(), ConfigError> {
    let input = input.unwrap_or_else(|| crate::transform::json_input(&t.transforms, &table));
    let plan =
        crate::transform::TransformPlan::compile(&t.transforms, Arc::new(input)).map_err(|e| {
            InvalidKey::new(
                format!("{key}.transforms"),
                e.to_string(),
                "fix that transform (the README's transforms reference lists the ops and keys)",
            )
            .because(e)
        })?;
    crate::conform::Conformer::new(plan.output_schema(), &table, t.evolution).map_err(|e| {
        InvalidKey::new(
            format!("{key}.transforms"),
            format!("the transforms' output does not fit the table: {e}"),
            "make the transforms produce the table's columns, or change `schema`",
        )
        .because(e)
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
    fn the_shipped_example_configs_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load_config(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
        load_config_str(&ok).unwrap();
        let missing = cfg("[[tables.t.transforms]]\nop = \"drop\"\ncolumns = [\"nope\"]");
        let e = load_config_str(&missing).unwrap_err().to_string();
        assert!(
            e.contains("tables.t.transforms") && e.contains("nope"),
            "{e}"
        );
        let unfit = cfg("[[tables.t.transforms]]\nop = \"cast\"\ncolumns = { n = \"STRING\" }");
        let e = load_config_str(&unfit).unwrap_err().to_string();
        assert!(e.contains("does not fit the table"), "{e}");
    }

    #[test]
    fn bad_ddl_is_rejected_at_start() {
        let err = load_config_str(&BASE.replace("amount DOUBLE", "amount DUBLE"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tables.events.schema"), "{err}");
    }

    #[test]
    fn errors_of_the_later_stages_carry_their_source() {
        let e = load_config_str(&BASE.replace("amount DOUBLE", "amount DUBLE")).unwrap_err();
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("DUBLE")), "{e}");
    }

    #[test]
    fn the_later_checks_are_made_by_every_load() {
        let bad_key = BASE.replace(
            "[tables.events.metadata_columns]",
            "key_format = \"json\"\nkey_schema = \"id BIGNT\"\n[tables.events.metadata_columns]\nkey = \"k\"",
        );
        let raw = BASE.replace(
            "table = \"events\"",
            "table = \"events\"\nformat = \"bytes\"",
        );
        let partition = BASE.replace("schema =", "partition_by = [\"day\"]\nschema =");
        let meta = BASE.replace("offset = \"_offset\"", "offset = \"amount\"");
        for (cfg, key) in [
            (bad_key, "tables.events.key_schema"),
            (raw, "tables.events.schema"),
            (partition, "tables.events.partition_by"),
            (meta, "tables.events.metadata_columns"),
        ] {
            // The configuration alone passes; the whole load does not.
            crate::config::load_str(&cfg).unwrap();
            let e = load_config_str(&cfg).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("fix:"), "{key}: {e}");
        }
    }

    /// An invalid `delete_when`, and a history column that is also a value
    /// column, stop the load naming the key.
    #[test]
    fn change_keys_are_checked_at_load() {
        let upsert = |delete_when: &str| {
            BASE.replace(
                "schema =",
                &format!("mode = \"upsert\"\nkeys = [\"user\"]\ndelete_when = \"{delete_when}\"\nschema ="),
            )
        };
        load_config_str(&upsert("amount < 0")).unwrap();
        load_config_str(&upsert("_offset = 3")).unwrap();
        for bad in ["nosuch = 1", "amount <", "amount + 1"] {
            let cfg = upsert(bad);
            crate::config::load_str(&cfg).unwrap();
            let e = load_config_str(&cfg).unwrap_err().to_string();
            assert!(
                e.contains("tables.events.delete_when") && e.contains("fix:"),
                "{bad}: {e}"
            );
        }
        let history = BASE
            .replace(
                "schema =",
                "mode = \"history\"\nkeys = [\"user\"]\nschema =",
            )
            .replace("amount DOUBLE", "amount DOUBLE, __end_at BIGINT");
        crate::config::load_str(&history).unwrap();
        let e = load_config_str(&history).unwrap_err().to_string();
        assert!(e.contains("tables.events.history.end_column"), "{e}");
    }

    #[tokio::test]
    async fn a_run_checks_a_config_built_in_code_before_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let toml = BASE
            .replace("127.0.0.1:9092", "127.0.0.1:1")
            .replace("/tmp/x", &dir.path().join("t").display().to_string())
            .replace("amount DOUBLE", "amount DUBLE");
        // Past the configuration's own checks, as a config built in code is.
        let cfg = crate::config::load_str(&toml).unwrap();
        let run = super::super::Pipeline::new(cfg)
            .with_mode(super::super::Mode::AvailableNow)
            .run();
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), run)
            .await
            .expect("stopped at once")
            .unwrap_err();
        assert!(
            matches!(&e, super::super::PipelineError::Config(_)),
            "{e:?}"
        );
        assert!(e.to_string().contains("tables.events.schema"), "{e}");
        assert!(!dir.path().join("t").exists(), "nothing was opened");
    }
}
