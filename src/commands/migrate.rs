//! `inlet migrate`: versioned table definitions, applied in order, exactly
//! once, with the applied version recorded in the table itself.
//!
//! A migrations directory holds one folder per table of the configuration
//! (`migrations/<table>/`), each with files named `<version>_<what>.toml`,
//! e.g. `0001_create.toml`. A file does one of:
//!
//! ```toml
//! # 0001_create.toml: create the table
//! [create]
//! schema = "user STRING NOT NULL, amount DOUBLE, event_date DATE"
//! partition_by = ["event_date"]
//! properties = { "delta.checkpointInterval" = "50" }
//! constraints = { amount_non_negative = "amount >= 0" }
//! ```
//!
//! ```toml
//! # 0002_country.toml: add nullable columns and/or set properties
//! add_columns = "country STRING"
//! set_properties = { "delta.logRetentionDuration" = "interval 60 days" }
//! ```
//!
//! Each migration is one Delta commit that also sets the table property
//! [`VERSION_PROPERTY`], so a migration and its record cannot come apart, and
//! a run that races another (or an `inlet run` commit) re-reads the table and
//! applies only what is still missing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, MetadataExt as _, StructField, StructType};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use serde::Deserialize;

use crate::config::Config;
use crate::schema::ddl_to_delta;

/// Table property holding the last migration version applied to a table.
pub const VERSION_PROPERTY: &str = "inlet.migrations.version";
/// Attempts per table when other writers keep changing it under us.
const MAX_CONFLICTS: usize = 10;

/// Errors from `inlet migrate`.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The directory or a file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A migration file or the directory layout is wrong.
    #[error("`{path}`: {problem}; {fix}")]
    Invalid {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The table is not in the state the migrations expect.
    #[error("table `{table}`: {problem}; {fix}")]
    State {
        /// The table name.
        table: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// Delta failed.
    #[error("table `{table}`: {source}")]
    Delta {
        /// The table name.
        table: String,
        /// The cause.
        source: DeltaTableError,
    },
}

/// Result alias of this module.
pub type Result<T, E = MigrateError> = std::result::Result<T, E>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationFile {
    create: Option<CreateTable>,
    add_columns: Option<String>,
    set_properties: Option<BTreeMap<String, String>>,
}

/// `[create]` of a migration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTable {
    /// Columns in Spark DDL form.
    pub schema: String,
    /// Partition columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Table properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// CHECK constraints: name → SQL expression over the columns.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

/// What one migration changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create the table.
    Create(CreateTable),
    /// Change an existing table.
    Alter {
        /// Nullable columns to append.
        add_columns: Vec<StructField>,
        /// Properties to set.
        set_properties: BTreeMap<String, String>,
    },
}

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Its version, from the file name.
    pub version: u64,
    /// Its file name without `.toml`.
    pub name: String,
    /// What it does.
    pub change: Change,
}

/// What `inlet migrate` did (or, dry, would do) to one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableReport {
    /// The table name.
    pub table: String,
    /// Migration version before (0: none yet).
    pub from: u64,
    /// Migration version after.
    pub to: u64,
    /// Names of the migrations applied, in order.
    pub applied: Vec<String>,
}

/// Applies the migrations of a directory to the tables of a configuration.
#[derive(Debug)]
pub struct Migrator {
    config: Config,
    dir: PathBuf,
    tables: Vec<String>,
    dry_run: bool,
}

impl Migrator {
    /// Migrations from `dir` for the tables of `config`.
    pub fn new(config: Config, dir: impl Into<PathBuf>) -> Self {
        Migrator {
            config,
            dir: dir.into(),
            tables: Vec::new(),
            dry_run: false,
        }
    }

    /// Only these tables (default: every table with a folder).
    pub fn with_tables(mut self, tables: Vec<String>) -> Self {
        self.tables = tables;
        self
    }

    /// Report what would be applied without changing anything.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Applies every pending migration, table by table.
    pub async fn run(&self) -> Result<Vec<TableReport>> {
        let plans = self.load()?;
        let mut reports = Vec::new();
        for (table, migrations) in plans {
            reports.push(self.apply(&table, &migrations).await?);
        }
        Ok(reports)
    }

    /// Reads and checks every migration before touching any table.
    fn load(&self) -> Result<Vec<(String, Vec<Migration>)>> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MigrateError::Io { path, source }
        };
        for t in &self.tables {
            if !self.config.tables.contains_key(t) {
                return Err(MigrateError::Invalid {
                    path: self.dir.clone(),
                    problem: format!("`{t}` is not a table of the configuration"),
                    fix: "name a [tables.<name>] section".into(),
                });
            }
        }
        let mut plans = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .collect::<std::io::Result<_>>()
            .map_err(io(&self.dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let table = entry.file_name().to_string_lossy().into_owned();
            if !self.config.tables.contains_key(&table) {
                return Err(MigrateError::Invalid {
                    path,
                    problem: format!("`{table}` is not a table of the configuration"),
                    fix: "name the folder after a [tables.<name>] section".into(),
                });
            }
            if !self.tables.is_empty() && !self.tables.contains(&table) {
                continue;
            }
            plans.push((table, load_table_dir(&path)?));
        }
        for t in &self.tables {
            if !plans.iter().any(|(name, _)| name == t) {
                return Err(MigrateError::Invalid {
                    path: self.dir.join(t),
                    problem: "no migrations folder for this table".into(),
                    fix: format!("create {}/{t}/0001_create.toml", self.dir.display()),
                });
            }
        }
        Ok(plans)
    }

    async fn apply(&self, name: &str, migrations: &[Migration]) -> Result<TableReport> {
        let cfg = &self.config.tables[name];
        let delta = |source| MigrateError::Delta {
            table: name.to_string(),
            source,
        };
        let mut table =
            crate::sink::storage::table(&cfg.uri, &cfg.storage_options).map_err(delta)?;
        let mut report = TableReport {
            table: name.to_string(),
            from: 0,
            to: 0,
            applied: Vec::new(),
        };
        let mut first = true;
        let mut conflicts = 0;
        loop {
            let exists = match table.load().await {
                Ok(()) => true,
                Err(DeltaTableError::NotATable(_)) => false,
                Err(e) => return Err(delta(e)),
            };
            let current = if exists {
                recorded_version(name, &table)?
            } else {
                None
            };
            let at = current.unwrap_or(0);
            if first {
                report.from = at;
                first = false;
            }
            report.to = at;
            let Some(next) = migrations.iter().find(|m| m.version > at) else {
                return Ok(report);
            };
            check_state(name, &cfg.uri, next, exists, current)?;
            if self.dry_run {
                // Nothing changes: list everything pending.
                for m in migrations.iter().filter(|m| m.version > at) {
                    report.applied.push(m.name.clone());
                    report.to = m.version;
                }
                return Ok(report);
            }
            let outcome = match &next.change {
                Change::Create(create) => create_table(name, &table, next, create).await,
                Change::Alter {
                    add_columns,
                    set_properties,
                } => alter_table(&table, next, add_columns, set_properties).await,
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(table = name, migration = %next.name, "migration applied");
                    report.applied.push(next.name.clone());
                }
                Err(e)
                    if conflicts < MAX_CONFLICTS
                        && (is_conflict(&e)
                            || (matches!(next.change, Change::Create(_))
                                && created_meanwhile(&cfg.uri, &cfg.storage_options).await)) =>
                {
                    // Someone else changed the table: re-read and re-plan.
                    conflicts += 1;
                    tracing::info!(table = name, migration = %next.name, "table changed concurrently; re-reading");
                }
                Err(e) => return Err(delta(e)),
            }
        }
    }
}

/// `inlet migrate`: applies the pending migrations of `dir` (only to
/// `tables`, when given) and prints a line per table; with `dry_run`, only
/// says what it would apply.
pub async fn run(config: &Path, dir: PathBuf, tables: Vec<String>, dry_run: bool) -> super::Result {
    let cfg = crate::pipeline::load_config(config)?;
    let reports = Migrator::new(cfg, dir)
        .with_tables(tables)
        .with_dry_run(dry_run)
        .run()
        .await?;
    let verb = if dry_run { "would apply" } else { "applied" };
    for r in reports {
        if r.applied.is_empty() {
            println!("{}: at version {}, nothing to apply", r.table, r.from);
        } else {
            println!(
                "{}: version {} -> {}, {verb} {}",
                r.table,
                r.from,
                r.to,
                r.applied.join(", ")
            );
        }
    }
    Ok(())
}

/// Whether migration `next` can be applied to table `name` at `uri` as it
/// is: created by migrations (`current`, the recorded version) or not, and
/// there or not (`exists`).
fn check_state(
    name: &str,
    uri: &str,
    next: &Migration,
    exists: bool,
    current: Option<u64>,
) -> Result<()> {
    let state = |problem: String, fix: String| {
        Err(MigrateError::State {
            table: name.to_string(),
            problem,
            fix,
        })
    };
    let at = current.unwrap_or(0);
    match (&next.change, exists, current) {
        (Change::Create(_), true, _) => state(
            format!(
                "`{}` creates the table, but a table already exists at {uri} (migration version {at})",
                next.name
            ),
            format!(
                "start this table's migrations after the create, or set the table property `{VERSION_PROPERTY}` to the version it matches"
            ),
        ),
        (Change::Alter { .. }, false, _) => state(
            format!(
                "`{}` alters the table, but there is no table at {uri}",
                next.name
            ),
            "begin the table's migrations with a `[create]`".into(),
        ),
        (Change::Alter { .. }, true, None) => state(
            format!("the table at {uri} was not created by migrations"),
            format!(
                "set the table property `{VERSION_PROPERTY}` to the version it matches (e.g. 1 for a table created as 0001 describes)"
            ),
        ),
        _ => Ok(()),
    }
}

/// Whether a table exists at `uri` now (another migrator created it).
async fn created_meanwhile(uri: &str, options: &BTreeMap<String, String>) -> bool {
    match crate::sink::storage::table(uri, options) {
        Ok(mut t) => t.load().await.is_ok(),
        Err(_) => false,
    }
}

fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

fn recorded_version(name: &str, table: &DeltaTable) -> Result<Option<u64>> {
    let snapshot = table.snapshot().map_err(|source| MigrateError::Delta {
        table: name.to_string(),
        source,
    })?;
    match snapshot.metadata().configuration().get(VERSION_PROPERTY) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| MigrateError::State {
            table: name.to_string(),
            problem: format!("table property `{VERSION_PROPERTY}` = `{v}` is not a number"),
            fix: "set it to the last migration version applied".into(),
        }),
    }
}

fn commit_properties(m: &Migration) -> CommitProperties {
    CommitProperties::default().with_metadata([(
        "inlet.migration".to_string(),
        serde_json::Value::String(m.name.clone()),
    )])
}

async fn create_table(
    name: &str,
    table: &DeltaTable,
    m: &Migration,
    create: &CreateTable,
) -> std::result::Result<(), DeltaTableError> {
    let schema = ddl_to_delta(&create.schema).map_err(DeltaTableError::Generic)?;
    let mut config: HashMap<String, Option<String>> = create
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for (cname, expr) in &create.constraints {
        config.insert(format!("delta.constraints.{cname}"), Some(expr.clone()));
    }
    if !create.constraints.is_empty() {
        // CHECK constraints need writer version 3, or readers ignore them.
        let w = config
            .get("delta.minWriterVersion")
            .and_then(|v| v.as_deref()?.parse::<i32>().ok())
            .unwrap_or(2);
        if w < 3 {
            config.insert("delta.minWriterVersion".into(), Some("3".into()));
        }
    }
    config.insert(VERSION_PROPERTY.into(), Some(m.version.to_string()));
    let props: HashMap<String, String> = config
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    if crate::sink::needs_own_create(&props, &[]) {
        // Features delta-rs' create does not turn on: inlet's own first commit.
        let properties: Vec<(String, Option<String>)> = config.into_iter().collect();
        return crate::sink::create_own(
            table.log_store().as_ref(),
            &schema,
            &create.partition_by,
            &[],
            &properties,
        )
        .await;
    }
    table
        .create()
        .with_table_name(name)
        .with_columns(schema.fields().cloned())
        .with_partition_columns(create.partition_by.clone())
        .with_configuration(config)
        .with_raise_if_key_not_exists(false)
        // A lost race must fail, not stack a second create on the winner's.
        .with_commit_properties(commit_properties(m).with_max_retries(0))
        .await?;
    Ok(())
}

async fn alter_table(
    table: &DeltaTable,
    m: &Migration,
    add_columns: &[StructField],
    set_properties: &BTreeMap<String, String>,
) -> std::result::Result<(), DeltaTableError> {
    let mut props: HashMap<String, String> = set_properties.clone().into_iter().collect();
    props.insert(VERSION_PROPERTY.into(), m.version.to_string());
    let own = crate::sink::needs_own_commit(table.snapshot()?.protocol());
    if add_columns.is_empty() && own {
        if let Some(p) = props
            .keys()
            .find(|k| PROTOCOL_PROPERTIES.contains(&k.as_str()))
        {
            return Err(DeltaTableError::Generic(format!(
                "migration `{}`: `{p}` changes the protocol of a table whose features \
                 inlet's own commit keeps (in-commit timestamps, row tracking, identity, ...), \
                 which inlet does not do; set it with the engine that made the table",
                m.name
            )));
        }
        let snapshot = table.snapshot()?;
        let mut metadata = snapshot.metadata().clone();
        for (k, v) in &props {
            metadata = metadata.add_config_key(k.clone(), v.clone())?;
        }
        let operation = DeltaOperation::SetTableProperties { properties: props };
        return commit_alter(table, m, metadata, operation).await;
    }
    if add_columns.is_empty() {
        // delta-rs upgrades the protocol for properties that need it.
        table
            .clone()
            .set_tbl_properties()
            .with_properties(props)
            .with_raise_if_not_exists(false)
            .with_commit_properties(commit_properties(m))
            .await?;
        return Ok(());
    }
    let snapshot = table.snapshot()?;
    let current = snapshot.schema();
    for f in add_columns {
        if current.field(f.name()).is_some() {
            return Err(DeltaTableError::Generic(format!(
                "migration `{}`: column `{}` already exists",
                m.name,
                f.name()
            )));
        }
        // The one column type DDL can express that needs a table feature.
        let needs_ntz = serde_json::to_string(f)?.contains("\"timestamp_ntz\"");
        let has_ntz = snapshot
            .protocol()
            .writer_features()
            .is_some_and(|fs| fs.iter().any(|f| f.as_ref() == "timestampNtz"));
        if needs_ntz && !has_ntz {
            return Err(DeltaTableError::Generic(format!(
                "migration `{}`: column `{}` is TIMESTAMP_NTZ, which needs the table feature `timestampNtz` this table lacks; use TIMESTAMP",
                m.name,
                f.name()
            )));
        }
    }
    // Schema, properties and the version in one metadata action: one commit.
    let schema = StructType::try_new(current.fields().cloned().chain(add_columns.iter().cloned()))?;
    // On a column-mapped table the new columns need ids and physical names.
    let (schema, max_column_id) = match crate::sink::map_added_columns(
        &current,
        snapshot.metadata().configuration(),
        snapshot.metadata().id(),
        &schema,
    )
    .map_err(|e| DeltaTableError::Generic(format!("migration `{}`: {e}", m.name)))?
    {
        Some((schema, max)) => (schema, Some(max)),
        None => (schema, None),
    };
    let mut metadata = snapshot.metadata().clone().with_schema(&schema)?;
    if let Some(max) = max_column_id {
        metadata =
            metadata.add_config_key(crate::sink::MAX_COLUMN_ID.to_string(), max.to_string())?;
    }
    for (k, v) in props {
        metadata = metadata.add_config_key(k, v)?;
    }
    let operation = DeltaOperation::AddColumn {
        fields: add_columns.to_vec(),
    };
    commit_alter(table, m, metadata, operation).await
}

/// Commits a migration's new metadata: on inlet's own commit path for
/// tables whose features delta-rs' commit refuses or would not keep
/// (in-commit timestamps, row tracking, identity, ...), else with delta-rs.
async fn commit_alter(
    table: &DeltaTable,
    m: &Migration,
    metadata: deltalake::kernel::Metadata,
    operation: DeltaOperation,
) -> std::result::Result<(), DeltaTableError> {
    let snapshot = table.snapshot()?;
    if crate::sink::needs_own_commit(snapshot.protocol()) {
        let read_version = table.version().map_or(-1, |v| v as i64);
        crate::sink::commit_change(
            table.log_store().as_ref(),
            read_version,
            vec![Action::Metadata(metadata)],
            operation,
            HashMap::from([(
                "inlet.migration".to_string(),
                serde_json::Value::String(m.name.clone()),
            )]),
        )
        .await?;
        return Ok(());
    }
    CommitBuilder::from(commit_properties(m))
        .with_actions(vec![Action::Metadata(metadata)])
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    Ok(())
}

/// Properties that change the table protocol: set on their own, where
/// delta-rs upgrades the protocol with them.
const PROTOCOL_PROPERTIES: &[&str] = &[
    "delta.minReaderVersion",
    "delta.minWriterVersion",
    "delta.appendOnly",
    "delta.enableChangeDataFeed",
    "delta.enableDeletionVectors",
    "delta.enableRowTracking",
    "delta.columnMapping.mode",
    "delta.checkpointPolicy",
];

/// Reads `<dir>/*.toml` of one table, sorted by version.
pub fn load_table_dir(dir: &Path) -> Result<Vec<Migration>> {
    let io = |source| MigrateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out: Vec<Migration> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        out.push(load_file(&path)?);
    }
    out.sort_by_key(|m| m.version);
    for pair in out.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(MigrateError::Invalid {
                path: dir.to_path_buf(),
                problem: format!(
                    "`{}` and `{}` have the same version {}",
                    pair[0].name, pair[1].name, pair[0].version
                ),
                fix: "give each migration its own version number".into(),
            });
        }
    }
    if let Some(pos) = out
        .iter()
        .skip(1)
        .position(|m| matches!(m.change, Change::Create(_)))
    {
        return Err(MigrateError::Invalid {
            path: dir.to_path_buf(),
            problem: format!(
                "`{}` creates the table but is not the first migration",
                out[pos + 1].name
            ),
            fix: "only the first migration of a table may have [create]".into(),
        });
    }
    Ok(out)
}

fn load_file(path: &Path) -> Result<Migration> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let Some(version) = file_version(&name) else {
        return Err(invalid(
            path,
            "the file name does not start with a version".into(),
            "name it `<version>_<what>.toml` with a version of 1 or more, e.g. 0002_add_country.toml",
        ));
    };
    let text = std::fs::read_to_string(path).map_err(|source| MigrateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: MigrationFile = toml_from_str(&text)
        .map_err(|e| invalid(path, e, "see migrations/README.md for the format"))?;
    let change = match file {
        MigrationFile {
            create: Some(create),
            add_columns: None,
            set_properties: None,
        } => {
            check_create(path, &create)?;
            Change::Create(create)
        }
        MigrationFile {
            create: Some(_), ..
        } => {
            return Err(invalid(
                path,
                "[create] cannot be combined with add_columns or set_properties".into(),
                "put the change in a migration of its own",
            ))
        }
        MigrationFile {
            create: None,
            add_columns: None,
            set_properties: None,
        } => {
            return Err(invalid(
                path,
                "the migration changes nothing".into(),
                "give it [create], add_columns or set_properties",
            ))
        }
        MigrationFile {
            create: None,
            add_columns,
            set_properties,
        } => alter_change(path, add_columns, set_properties.unwrap_or_default())?,
    };
    Ok(Migration {
        version,
        name,
        change,
    })
}

/// The version a migration file name starts with (`0002_country` → 2):
/// digits of at least 1, then `_`.
fn file_version(name: &str) -> Option<u64> {
    let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
    match digits.parse() {
        Ok(v) if v > 0 && name[digits.len()..].starts_with('_') => Some(v),
        _ => None,
    }
}

fn invalid(path: &Path, problem: String, fix: &str) -> MigrateError {
    MigrateError::Invalid {
        path: path.to_path_buf(),
        problem,
        fix: fix.to_string(),
    }
}

/// Checks the `[create]` of the migration file at `path`: its schema, its
/// partition columns, properties and constraints.
fn check_create(path: &Path, create: &CreateTable) -> Result<()> {
    let schema = ddl_to_delta(&create.schema).map_err(|e| {
        invalid(
            path,
            format!("create.schema: {e}"),
            "write the columns as `name TYPE, ...` in Spark DDL",
        )
    })?;
    for p in &create.partition_by {
        if schema.field(p).is_none() {
            return Err(invalid(
                path,
                format!("create.partition_by: `{p}` is not a column"),
                "name a column of create.schema",
            ));
        }
    }
    check_properties(&create.properties).map_err(|e| invalid(path, e, "remove the property"))?;
    for (cname, expr) in &create.constraints {
        check_constraint(&schema, cname, expr).map_err(|e| {
            invalid(
                path,
                format!("create.constraints.{cname}: {e}"),
                "write a SQL boolean expression over the table's columns",
            )
        })?;
    }
    Ok(())
}

/// The change of a migration file at `path` without `[create]`: nullable
/// columns to add and properties to set.
fn alter_change(
    path: &Path,
    add_columns: Option<String>,
    set_properties: BTreeMap<String, String>,
) -> Result<Change> {
    let add_columns = match add_columns {
        None => Vec::new(),
        Some(ddl) => {
            let schema = ddl_to_delta(&ddl).map_err(|e| {
                invalid(
                    path,
                    format!("add_columns: {e}"),
                    "write the columns as `name TYPE, ...` in Spark DDL",
                )
            })?;
            let fields: Vec<StructField> = schema.fields().cloned().collect();
            if let Some(f) = fields.iter().find(|f| !f.is_nullable()) {
                return Err(invalid(
                    path,
                    format!(
                        "add_columns: `{}` is NOT NULL, but existing rows have no value for it",
                        f.name()
                    ),
                    "add it as a nullable column",
                ));
            }
            fields
        }
    };
    check_properties(&set_properties).map_err(|e| invalid(path, e, "remove the property"))?;
    if let Some(k) = set_properties
        .keys()
        .find(|k| !add_columns.is_empty() && PROTOCOL_PROPERTIES.contains(&k.as_str()))
    {
        return Err(invalid(
            path,
            format!("`{k}` changes the table protocol and cannot be combined with add_columns"),
            "set it in a migration of its own",
        ));
    }
    Ok(Change::Alter {
        add_columns,
        set_properties,
    })
}

fn toml_from_str(text: &str) -> std::result::Result<MigrationFile, String> {
    use figment::providers::{Format as _, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

fn check_properties(props: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if props.contains_key("delta.setTransactionRetentionDuration") {
        return Err("`delta.setTransactionRetentionDuration` would expire the Kafka offsets stored in the table".into());
    }
    if props.contains_key(VERSION_PROPERTY) {
        return Err(format!(
            "`{VERSION_PROPERTY}` is set by inlet migrate itself"
        ));
    }
    if let Some(k) = props.keys().find(|k| k.starts_with("delta.constraints.")) {
        return Err(format!(
            "`{k}`: constraints are declared under [create.constraints]"
        ));
    }
    Ok(())
}

/// A constraint must be a boolean SQL expression over the table's columns.
fn check_constraint(
    schema: &StructType,
    name: &str,
    expr: &str,
) -> std::result::Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("constraint names are letters, digits and `_`".into());
    }
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let arrow: arrow::datatypes::Schema = schema.try_into_arrow().map_err(|e| e.to_string())?;
    crate::conform::constraints::Constraint::compile(name, expr, &arrow)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/events");
        let m = load_table_dir(&dir).unwrap();
        let versions: Vec<u64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert!(matches!(m[0].change, Change::Create(_)));
    }
}
