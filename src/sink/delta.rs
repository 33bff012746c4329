//! One Delta table: open or create, read stored offsets, commit with fencing.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use bytes::Bytes;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{
    CommitConflictError, CommitData, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Add, MetadataExt as _, Remove, StructType, Transaction};
use deltalake::logstore::{CommitOrBytes, LogStore, LogStoreRef};
use deltalake::parquet::basic::{Compression as PqCompression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::DeltaTableError;
use object_store::ObjectStoreExt as _;
use tracing::{debug, info, warn};

use super::attempt::{Attempts, Retrier};
use super::identity::Identities;
use super::mapping::Mapper;
use super::merge::{self, MergeRules};
use super::state::{Changes, TableState};
use super::writer::{TableWriter, WriterFactory};
use super::{Result, SinkError, COMMIT_ID_KEY};
use crate::config::{CommitConfig, Compression, MetadataKind, TableConfig};
use crate::fault::{Classify, Fault, Shutdown};
use crate::observability::Metrics;
use crate::schema::{table_schema_from, TableLayout};

/// The table property that would expire stored offsets.
const TXN_RETENTION: &str = "delta.setTransactionRetentionDuration";
/// Commits between checkpoints.
const CHECKPOINT_INTERVAL: &str = "delta.checkpointInterval";
/// Times one attempt moves on past commits of other writers that do not
/// conflict with it, before it counts as failed (delta-rs' default).
const MAX_RACES: usize = 15;

/// What a commit covers for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The txn appId (see [`super::txn_app_id`]).
    pub app_id: String,
    /// First offset in the batch.
    pub first: i64,
    /// Last offset in the batch: the version stored.
    pub last: i64,
}

/// The result of a commit attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written as this table version.
    Committed {
        /// The new table version.
        version: i64,
    },
    /// Not written: another writer already stored `stored` for `app_id`, at or
    /// past this batch's first offset. The batch is a zombie's or a duplicate.
    Fenced {
        /// The partition that overlapped.
        app_id: String,
        /// The version found in the table.
        stored: i64,
        /// The batch's first offset for that partition.
        first: i64,
    },
}

/// A Delta table inlet writes to.
pub struct DeltaSink {
    name: String,
    /// The table's location, for Parquet writers.
    uri: String,
    log: LogStoreRef,
    state: TableState,
    /// The table's column mapping (shared with its writers); `None`: the
    /// table does not map columns.
    mapper: Option<Arc<Mapper>>,
    /// The table's identity columns (shared with its writers).
    identity: Option<Arc<Identities>>,
    /// Whether commits write checkpoints (off once the table refused one).
    checkpoints: bool,
    layout: TableLayout,
    writer_properties: WriterProperties,
    target_file_size: u64,
    storage_options: HashMap<String, String>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    /// `upsert` mode: how changes find their rows.
    merge: Option<MergeRules>,
    /// `upsert` mode: the table with its file list, loaded at the version
    /// a merge is planned on.
    files: Option<deltalake::DeltaTable>,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("name", &self.name)
            .field("version", &self.state.version())
            .finish()
    }
}

impl DeltaSink {
    /// Opens the table named `name`, creating it from `cfg.schema` if it does
    /// not exist yet.
    pub async fn open(name: &str, cfg: &TableConfig) -> Result<Self> {
        Self::open_or_create(name, cfg, None).await
    }

    /// Whether the table exists (without creating it).
    pub async fn exists(name: &str, cfg: &TableConfig) -> Result<bool> {
        let table =
            crate::sink::storage::table(&cfg.uri, &cfg.storage_options).map_err(|source| {
                SinkError::Delta {
                    table: name.to_string(),
                    source,
                }
            })?;
        // A snapshot without files: protocol and metadata only.
        match deltalake::kernel::Snapshot::try_new(table.log_store().as_ref(), None).await {
            Ok(_) => Ok(true),
            Err(DeltaTableError::NotATable(_)) => Ok(false),
            Err(source) => Err(SinkError::Delta {
                table: name.to_string(),
                source,
            }),
        }
    }

    /// Like [`DeltaSink::exists`], waiting out the environment's faults
    /// (an object store error while reading the log) with `patience`.
    pub async fn exists_retrying(
        name: &str,
        cfg: &TableConfig,
        patience: &mut super::Patience,
    ) -> Result<bool> {
        loop {
            match Self::exists(name, cfg).await {
                Err(e) if patience.again(&e).await => continue,
                other => return other,
            }
        }
    }

    /// Like [`DeltaSink::open_or_create`], waiting out the environment's
    /// faults with `patience`; the operator's (not a table, properties
    /// inlet refuses) stop at once.
    pub async fn open_retrying(
        name: &str,
        cfg: &TableConfig,
        value: Option<&Schema>,
        patience: &mut super::Patience,
    ) -> Result<Self> {
        loop {
            match Self::open_or_create(name, cfg, value).await {
                Err(e) if patience.again(&e).await => continue,
                other => return other,
            }
        }
    }

    /// Checks an existing table as a run would open it (features, offsets
    /// retention, metadata columns) without creating or writing anything;
    /// `Ok(None)` when there is no table yet (a run creates it).
    pub async fn check_existing(name: &str, cfg: &TableConfig) -> Result<Option<i64>> {
        let err = |source| SinkError::Delta {
            table: name.to_string(),
            source,
        };
        let table = crate::sink::storage::table(&cfg.uri, &cfg.storage_options).map_err(err)?;
        let state = match TableState::load(table.log_store().as_ref()).await {
            Ok(s) => s,
            Err(DeltaTableError::NotATable(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        checked_layout(name, cfg, &state)?;
        Ok(Some(state.version()))
    }

    /// Like [`DeltaSink::open`]; a missing table without `cfg.schema` is
    /// created with `value` as its value columns (e.g. from the latest
    /// schema in the registry), then the metadata columns.
    pub async fn open_or_create(
        name: &str,
        cfg: &TableConfig,
        value: Option<&Schema>,
    ) -> Result<Self> {
        let err = |source| SinkError::Delta {
            table: name.to_string(),
            source,
        };
        let table = crate::sink::storage::table(&cfg.uri, &cfg.storage_options).map_err(err)?;
        let log = table.log_store();
        let state = match TableState::load(log.as_ref()).await {
            Ok(state) => state,
            Err(DeltaTableError::NotATable(_)) => {
                let base = match (cfg.schema.as_deref(), value) {
                    (Some(ddl), _) => crate::schema::parse_ddl(ddl).map_err(|e| SinkError::Table {
                        table: name.to_string(),
                        message: e.to_string(),
                    })?,
                    (None, Some(v)) => v.clone(),
                    (None, None) => {
                        return Err(SinkError::Table {
                            table: name.to_string(),
                            message: format!(
                                "no Delta table at `{}` and no `schema` to create one; set tables.{name}.schema",
                                cfg.uri
                            ),
                        })
                    }
                };
                let mut schema = table_schema_from(
                    base,
                    &cfg.metadata_columns,
                    &cfg.key_format,
                    cfg.key_schema.as_deref(),
                )
                .map_err(|e| SinkError::Table {
                    table: name.to_string(),
                    message: e.to_string(),
                })?;
                if cfg.mode == crate::config::TableMode::History {
                    let rules = MergeRules {
                        keys: cfg.keys.clone(),
                        sequence_by: cfg.sequence_by.clone(),
                        history: None,
                    };
                    schema = super::history::with_columns(&schema, &rules, &cfg.history);
                }
                let kernel: StructType =
                    (&schema).try_into_kernel().map_err(|e| SinkError::Table {
                        table: name.to_string(),
                        message: format!("schema cannot be stored in Delta: {e}"),
                    })?;
                let created = if super::create::needs_own_create(&cfg.properties) {
                    super::create::create(
                        log.as_ref(),
                        &kernel,
                        &cfg.partition_by,
                        &table_properties(cfg),
                    )
                    .await
                } else {
                    table
                        .create()
                        .with_table_name(name)
                        .with_columns(kernel.fields().cloned())
                        .with_partition_columns(cfg.partition_by.clone())
                        .with_configuration(table_properties(cfg))
                        // A lost race must fail, not stack a second create
                        // (with a new table id) on top of the winner's.
                        .with_commit_properties(CommitProperties::default().with_max_retries(0))
                        .await
                        .map(|_| ())
                };
                match created {
                    Ok(_) => TableState::load(log.as_ref()).await.map_err(err)?,
                    // Another process created it first: use theirs. Losing
                    // that race shows as VersionAlreadyExists, or as a
                    // conflict ("protocol changed") when delta-rs retried
                    // the create on top of the winner's.
                    Err(e) => match TableState::load(log.as_ref()).await {
                        Ok(state) => {
                            debug!(table = name, error = %e, "table created concurrently; using it");
                            state
                        }
                        Err(_) => return Err(err(e)),
                    },
                }
            }
            Err(e) => return Err(err(e)),
        };
        let layout = checked_layout(name, cfg, &state)?;
        let mapper = mapper_of(name, &state)?;
        let identity = Identities::of(state.schema());
        Ok(DeltaSink {
            name: name.to_string(),
            uri: log.root_url().to_string(),
            log,
            state,
            mapper,
            identity,
            checkpoints: true,
            layout,
            writer_properties: writer_properties(cfg.compression),
            target_file_size: cfg.target_file_size.as_u64(),
            storage_options: cfg.storage_options.clone().into_iter().collect(),
            metrics: Arc::new(Metrics::new()),
            shutdown: Shutdown::new(),
            merge: cfg.mode.merges().then(|| MergeRules {
                keys: cfg.keys.clone(),
                sequence_by: cfg.sequence_by.clone(),
                history: (cfg.mode == crate::config::TableMode::History)
                    .then(|| cfg.history.clone()),
            }),
            files: None,
        })
    }

    /// Reports retries into `metrics` (by default into metrics of its own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Cuts commit retries short once `shutdown` is triggered.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The table name from the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Value vs metadata columns.
    pub fn layout(&self) -> &TableLayout {
        &self.layout
    }

    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        self.layout.table.clone()
    }

    /// The table's properties (its metadata configuration).
    pub fn properties(&self) -> Result<HashMap<String, String>> {
        Ok(self.state.metadata().configuration().clone())
    }

    /// The table's generated columns (`delta.generationExpression`), as
    /// (column, expression): the pipeline computes them with DataFusion
    /// after the configured transforms.
    pub fn generated_columns(&self) -> Vec<(String, String)> {
        self.state
            .schema()
            .fields()
            .filter_map(|f| match f.metadata().get("delta.generationExpression") {
                Some(delta_kernel::schema::MetadataValue::String(e)) => {
                    Some((f.name().clone(), e.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The table's CHECK constraints, compiled against its schema.
    pub fn constraints(&self) -> Result<crate::conform::constraints::Constraints> {
        crate::conform::constraints::Constraints::from_properties(
            self.state.metadata().configuration(),
            &self.layout.table,
        )
        .map_err(|e| SinkError::Table {
            table: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// A streaming Parquet writer for this table.
    pub fn writer(&self) -> Result<TableWriter> {
        let schema: Schema =
            self.state
                .schema()
                .try_into_arrow()
                .map_err(|source| SinkError::Delta {
                    table: self.name.clone(),
                    source: DeltaTableError::Arrow { source },
                })?;
        self.writer_factory()?
            .writer(Arc::new(schema))
            .map_err(|source| SinkError::Delta {
                table: self.name.clone(),
                source,
            })
    }

    /// Makes writers for this table with another schema (after evolution).
    pub fn writer_factory(&self) -> Result<WriterFactory> {
        Ok(WriterFactory {
            uri: self.uri.clone(),
            options: self.storage_options.clone(),
            partition_columns: self.state.metadata().partition_columns().to_vec(),
            properties: self.writer_properties.clone(),
            target_file_size: self.target_file_size,
            mapper: self.mapper.clone(),
            identity: self.identity.clone(),
        })
    }

    /// Refreshes the snapshot and returns the stored version of each appId.
    pub async fn stored_versions(&mut self, app_ids: &[String]) -> Result<Vec<Option<i64>>> {
        self.refresh().await?;
        self.read_versions(app_ids).await
    }

    /// Reads the commits since the last refresh into the table state; a
    /// table that another writer changed into one inlet cannot append to
    /// is refused (the operator's to fix).
    async fn refresh(&mut self) -> Result<Changes> {
        let changes = self
            .state
            .refresh(self.log.as_ref())
            .await
            .map_err(|source| SinkError::Delta {
                table: self.name.clone(),
                source,
            })?;
        if changes.protocol || changes.metadata {
            check_appendable(&self.name, &self.state)?;
            self.observe_mapping()?;
        }
        Ok(changes)
    }

    /// After another writer changed the metadata: the writers take in its
    /// column mappings; a table whose mapping mode was switched under a
    /// running inlet is refused (its writers write the other kind of file).
    fn observe_mapping(&self) -> Result<()> {
        if let Some(i) = &self.identity {
            i.observe(self.state.schema());
        }
        let config = self.state.metadata().configuration();
        match (&self.mapper, super::mapping::is_mapped(config)) {
            (Some(m), true) => m
                .observe(self.state.schema(), config)
                .map_err(|e| self.table_error(format!("the table's column mapping: {e}"))),
            (None, false) => Ok(()),
            _ => Err(self.table_error(format!(
                "another writer changed the table's column mapping mode (`{}`) while inlet ran; \
                 nothing more was committed. Fix: restart inlet, which opens the table afresh",
                super::mapping::MODE
            ))),
        }
    }

    async fn read_versions(&mut self, app_ids: &[String]) -> Result<Vec<Option<i64>>> {
        self.state
            .txn_versions(self.log.as_ref(), app_ids)
            .await
            .map_err(|source| SinkError::Delta {
                table: self.name.clone(),
                source,
            })
    }

    /// Commits `adds` with one txn action per partition, exactly once.
    ///
    /// Just before each attempt the table state reads the commits made since
    /// the last one: if any partition already holds a version at or past the
    /// batch's first offset, nothing is written ([`CommitOutcome::Fenced`]).
    /// The log write is conditional on the version after the state's; a
    /// concurrent writer that took it is read in, and if it stored a version
    /// for one of the batch's appIds (or changed the protocol or metadata)
    /// the attempt fails with `ConcurrentTransaction` and the loop re-checks;
    /// otherwise the write moves on to the next version. An
    /// attempt that landed although its call failed is recognised by its
    /// commit id (see [`super::COMMIT_ID_KEY`]) and is this batch's commit.
    ///
    /// `schema` is the schema the files were written with. When it has
    /// columns the table lacks (schema evolution), the same commit carries the
    /// widened table schema; when another writer added them first, nothing is
    /// changed.
    pub async fn commit(
        &mut self,
        adds: Vec<Add>,
        schema: &Schema,
        progress: &[PartitionProgress],
        epoch: i64,
        retry: &CommitConfig,
    ) -> Result<CommitOutcome> {
        let app_ids: Vec<String> = progress.iter().map(|p| p.app_id.clone()).collect();
        let job = Job::Data {
            adds: &adds,
            schema,
            progress,
            app_ids: &app_ids,
        };
        Ok(match self.commit_loop(&job, epoch, retry).await? {
            Finished::Landed { version, .. } => CommitOutcome::Committed { version },
            Finished::Fenced(outcome) => outcome,
            Finished::Nothing => {
                return Err(SinkError::Delta {
                    table: self.name.clone(),
                    source: DeltaTableError::Generic("a data commit planned no write".into()),
                })
            }
        })
    }

    /// `upsert` mode: merges `changes` (batches of the table's columns plus
    /// [`merge::OFFSET_COLUMN`] and [`merge::DELETE_COLUMN`], one schema)
    /// into the table with one txn action per partition, exactly once, as
    /// [`DeltaSink::commit`] does: the merge is planned on the snapshot each
    /// attempt reads, and a commit by another writer that added or removed
    /// files meanwhile makes the attempt plan again (see the `merge` module).
    pub async fn commit_merge(
        &mut self,
        changes: &[RecordBatch],
        progress: &[PartitionProgress],
        epoch: i64,
        retry: &CommitConfig,
    ) -> Result<CommitOutcome> {
        let Some(rules) = self.merge.clone() else {
            return Err(self.table_error("a merge commit on a table that appends".into()));
        };
        let app_ids: Vec<String> = progress.iter().map(|p| p.app_id.clone()).collect();
        let job = Job::Merge {
            changes,
            rules: &rules,
            progress,
            app_ids: &app_ids,
        };
        Ok(match self.commit_loop(&job, epoch, retry).await? {
            Finished::Landed { version, .. } => CommitOutcome::Committed { version },
            Finished::Fenced(outcome) => outcome,
            Finished::Nothing => {
                return Err(SinkError::Delta {
                    table: self.name.clone(),
                    source: DeltaTableError::Generic("a merge commit planned no write".into()),
                })
            }
        })
    }

    /// Commits quarantine rows with a txn action per partition (version =
    /// the batch's last offset), first dropping rows whose offset the table
    /// already stores: a retry after a crash or a fenced data batch then adds
    /// each rejected message once. Returns the rows committed.
    pub async fn commit_quarantine(
        &mut self,
        batches: &[RecordBatch],
        partitions: &[(String, i32, i64)],
        app_id: &str,
        epoch: i64,
        retry: &CommitConfig,
    ) -> Result<usize> {
        let job = Job::Quarantine {
            batches,
            partitions,
            app_id,
        };
        Ok(match self.commit_loop(&job, epoch, retry).await? {
            Finished::Landed { rows, .. } => rows,
            Finished::Fenced(_) | Finished::Nothing => 0,
        })
    }

    /// The one retry loop of data and quarantine commits.
    async fn commit_loop(
        &mut self,
        job: &Job<'_>,
        epoch: i64,
        retry: &CommitConfig,
    ) -> Result<Finished> {
        let mut retrier = Retrier::new(
            &self.name,
            self.metrics.clone(),
            self.shutdown.clone(),
            retry,
        );
        let mut attempts = Attempts::new();
        loop {
            match self.attempt(job, epoch, &mut attempts).await {
                Ok(done) => return Ok(done),
                Err(CommitAttemptError::Fatal(e)) => return Err(*e),
                Err(e) if !e.is_retryable() => return Err(e.into_sink(&self.name)),
                Err(e) => retrier.failed(e.to_string()).await?,
            }
        }
    }

    /// One attempt on a fresh snapshot: an earlier attempt found in the log,
    /// a fence, or a write.
    async fn attempt(
        &mut self,
        job: &Job<'_>,
        epoch: i64,
        attempts: &mut Attempts,
    ) -> std::result::Result<Finished, CommitAttemptError> {
        self.refresh().await.map_err(CommitAttemptError::sink)?;
        if let Some(found) = self.find_own(attempts).await? {
            return Ok(found);
        }
        let read_version = self.state.version();
        let (actions, rows) = match self.plan(job).await? {
            Plan::Write { actions, rows } => (actions, rows),
            Plan::Fenced(outcome) => return Ok(Finished::Fenced(outcome)),
            Plan::Nothing => return Ok(Finished::Nothing),
        };
        let id = attempts.next(read_version, rows);
        let data = CommitData::new(
            actions,
            job.operation(epoch),
            HashMap::from([(COMMIT_ID_KEY.to_string(), serde_json::Value::String(id))]),
            Vec::new(),
        );
        match self
            .write_job(&data, job.app_ids(), job.reads_files())
            .await
        {
            Ok(version) => {
                debug!(table = %self.name, version, "committed");
                self.after_commit(version).await;
                Ok(Finished::Landed { version, rows })
            }
            Err(e) => {
                // The call failed, but the write may have landed: look now,
                // and again on every later attempt if this look fails.
                if self.refresh().await.is_ok() {
                    if let Ok(Some(found)) = self.find_own(attempts).await {
                        return Ok(found);
                    }
                }
                Err(e)
            }
        }
    }

    /// [`DeltaSink::write_job`] of an append (the tests race it).
    #[cfg(test)]
    async fn write(
        &mut self,
        data: &CommitData,
        app_ids: Vec<String>,
    ) -> std::result::Result<i64, CommitAttemptError> {
        self.write_job(data, app_ids, false).await
    }

    /// Writes `bytes` as the version after the table state's. When another
    /// writer took that version first, its commits are read into the state;
    /// unless one of them changed the protocol or metadata or stored a
    /// version for one of `app_ids` (then the attempt is planned again), the
    /// write moves on to the next version. The conditional write of each
    /// version keeps this exact: nothing lands between the state and the
    /// version written.
    ///
    /// What depends on the version written (row ids, their commit
    /// version, the in-commit timestamp) is stamped for each version tried,
    /// from the state that has read every commit before it.
    ///
    /// With `reads_files` (a merge, planned on the files it read) a commit
    /// that added or removed files conflicts too.
    async fn write_job(
        &mut self,
        data: &CommitData,
        app_ids: Vec<String>,
        reads_files: bool,
    ) -> std::result::Result<i64, CommitAttemptError> {
        for _ in 0..=MAX_RACES {
            let version = self.state.version() + 1;
            let bytes = self.stamped(data, version)?;
            let operation = uuid::Uuid::new_v4();
            let commit = self.staged(&bytes, operation).await?;
            match self
                .log
                .write_commit_entry(version as u64, commit.clone(), operation)
                .await
            {
                Ok(()) => {
                    self.state
                        .apply(&bytes)
                        .map_err(CommitAttemptError::delta)?;
                    return Ok(version);
                }
                Err(TransactionError::VersionAlreadyExists(_)) => {
                    let changes = self.refresh().await.map_err(CommitAttemptError::sink)?;
                    if let Some(conflict) = conflict(&changes, &app_ids, reads_files) {
                        return Err(CommitAttemptError::delta(DeltaTableError::Transaction {
                            source: TransactionError::CommitConflict(conflict),
                        }));
                    }
                    debug!(table = %self.name, version, "another writer committed first; moving on");
                }
                Err(e) => {
                    if let Err(abort) = self
                        .log
                        .abort_commit_entry(version as u64, commit, operation)
                        .await
                    {
                        debug!(table = %self.name, error = %abort, "aborting the commit entry failed");
                    }
                    return Err(CommitAttemptError::delta(DeltaTableError::Transaction {
                        source: e,
                    }));
                }
            }
        }
        Err(CommitAttemptError::delta(DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(MAX_RACES as i32),
        }))
    }

    /// The bytes of `data` as the commit of `version` (see [`stamp`]).
    // The error is the same type every commit attempt returns; it is rare.
    #[allow(clippy::result_large_err)]
    fn stamped(
        &self,
        data: &CommitData,
        version: i64,
    ) -> std::result::Result<Bytes, CommitAttemptError> {
        let mut actions = data.actions.clone();
        let rules = Stamp::of(&self.state);
        stamp(
            &mut actions,
            &rules,
            version,
            chrono::Utc::now().timestamp_millis(),
        )
        .map_err(|m| CommitAttemptError::Fatal(Box::new(self.table_error(m))))?;
        CommitData {
            actions,
            operation: data.operation.clone(),
            app_metadata: data.app_metadata.clone(),
            app_transactions: Vec::new(),
        }
        .get_bytes()
        .map_err(|source| CommitAttemptError::delta(DeltaTableError::Transaction { source }))
    }

    /// The commit as the log store takes it: the bytes for stores with a
    /// conditional put, else a temporary file to copy (as delta-rs does).
    async fn staged(
        &self,
        bytes: &Bytes,
        operation: uuid::Uuid,
    ) -> std::result::Result<CommitOrBytes, CommitAttemptError> {
        if ["LakeFSLogStore", "DefaultLogStore"].contains(&self.log.name().as_str()) {
            return Ok(CommitOrBytes::LogBytes(bytes.clone()));
        }
        let path = deltalake::Path::from_iter([
            "_delta_log",
            &format!("_commit_{}.json.tmp", uuid::Uuid::new_v4()),
        ]);
        self.log
            .object_store(Some(operation))
            .put(&path, bytes.clone().into())
            .await
            .map_err(|source| CommitAttemptError::delta(DeltaTableError::ObjectStore { source }))?;
        Ok(CommitOrBytes::TmpCommit(path))
    }

    /// After a commit at `version`: a checkpoint when the version is a
    /// multiple of `delta.checkpointInterval` (so that concurrent writers do
    /// not all write one), then expired log files cleaned up if the table
    /// allows it (the Delta defaults). Data files are never vacuumed here.
    /// Failures are logged: the commit stands, and a reader only reads more
    /// JSON until the next checkpoint.
    async fn after_commit(&mut self, version: i64) {
        if !self.checkpoints || !self.state.checkpoint_due(version) {
            return;
        }
        match super::checkpoint::write(self.log.as_ref(), version).await {
            Ok(()) => debug!(table = %self.name, version, "checkpoint written"),
            Err(e) if e.is_unsupported() => {
                warn!(
                    table = %self.name,
                    version,
                    error = %e,
                    "this table cannot be checkpointed by inlet; no more checkpoints are written by this process"
                );
                self.checkpoints = false;
                return;
            }
            Err(e) => {
                warn!(table = %self.name, version, error = %e, "writing a checkpoint failed");
                return;
            }
        }
        let properties = self.state.properties();
        if !properties.enable_expired_log_cleanup()
            || super::features::protects_checkpoints(self.state.protocol())
        {
            return;
        }
        let cutoff = chrono::Utc::now().timestamp_millis()
            - properties.log_retention_duration().as_millis() as i64;
        if let Err(e) = deltalake::checkpoints::cleanup_expired_logs_for(
            version as u64,
            self.log.as_ref(),
            cutoff,
            None,
        )
        .await
        {
            warn!(table = %self.name, version, error = %e, "cleaning up expired log files failed");
        }
    }

    /// An earlier attempt of this batch that landed, in the commits after
    /// its read version up to the current snapshot.
    async fn find_own(
        &self,
        attempts: &Attempts,
    ) -> std::result::Result<Option<Finished>, CommitAttemptError> {
        let latest = self.state.version();
        let found = attempts
            .find(self.log.as_ref(), latest)
            .await
            .map_err(CommitAttemptError::delta)?;
        Ok(found.map(|(version, rows)| {
            warn!(
                table = %self.name,
                version,
                "a commit whose answer was lost is in the log: the batch is committed"
            );
            Finished::Landed { version, rows }
        }))
    }

    /// What an attempt writes, read from the current snapshot.
    async fn plan(&mut self, job: &Job<'_>) -> std::result::Result<Plan, CommitAttemptError> {
        match *job {
            Job::Data {
                adds,
                schema,
                progress,
                app_ids,
            } => self.plan_data(adds, schema, progress, app_ids).await,
            Job::Quarantine {
                batches,
                partitions,
                app_id,
            } => self.plan_quarantine(batches, partitions, app_id).await,
            Job::Merge {
                changes,
                rules,
                progress,
                app_ids,
            } if rules.history.is_some() => {
                self.plan_history(changes, rules, progress, app_ids).await
            }
            Job::Merge {
                changes,
                rules,
                progress,
                app_ids,
            } => self.plan_merge(changes, rules, progress, app_ids).await,
        }
    }

    /// The metadata action that widens the table to `schema`, if it lacks
    /// any of its columns (nested struct fields included).
    // The error is the same type every commit attempt returns; it is rare.
    #[allow(clippy::result_large_err)]
    fn evolution(
        &self,
        schema: &Schema,
    ) -> std::result::Result<Option<Action>, CommitAttemptError> {
        let fatal =
            |message: String| CommitAttemptError::Fatal(Box::new(self.table_error(message)));
        let table_schema = self.state.schema();
        let current: Schema = table_schema
            .try_into_arrow()
            .map_err(|e| fatal(format!("table schema has no Arrow equivalent: {e}")))?;
        let bare = |s: &Schema| Schema::new(s.fields().clone());
        let mapped = self.mapper.is_some();
        let (current, rows) = if mapped {
            (
                super::mapping::strip(&current),
                super::mapping::strip(schema),
            )
        } else {
            (bare(&current), bare(schema))
        };
        let (current, rows) = (
            super::identity::strip(&current),
            super::identity::strip(&rows),
        );
        let merged = Schema::try_merge([current, rows]).map_err(|e| {
            fatal(format!(
                "the rows' schema does not fit the table's: {e}; the table was changed by another writer"
            ))
        })?;
        let merged: StructType = (&merged)
            .try_into_kernel()
            .map_err(|e| fatal(format!("new columns cannot be stored in Delta: {e}")))?;
        let config = self.state.metadata().configuration();
        // The table's own metadata on its columns (type changes, column
        // mapping, ... are not strings, as they come back from Arrow).
        let max_id = mapped.then(|| super::mapping::max_column_id(table_schema, config));
        let merged =
            super::mapping::evolve(&merged, table_schema, schema, max_id).map_err(|e| {
                fatal(format!(
                    "{e}. Nothing of this batch was committed. Fix: restart inlet, which writes \
                     the rows again with the table's column mapping"
                ))
            })?;
        let merged = super::identity::advance(&merged, table_schema, schema).map_err(|e| {
            fatal(format!(
                "{e}. Nothing of this batch was committed. Fix: restart inlet, which generates \
                 the values again after the table's high-water mark"
            ))
        })?;
        if &merged == table_schema {
            return Ok(None);
        }
        let added: Vec<String> = merged
            .fields()
            .filter(|f| {
                table_schema
                    .field(f.name())
                    .is_none_or(|old| old.data_type() != f.data_type())
            })
            .map(|f| f.name().to_string())
            .collect();
        if !added.is_empty() {
            info!(table = %self.name, columns = ?added, "schema evolution: adding columns in this commit");
        }
        let mut metadata = self
            .state
            .metadata()
            .clone()
            .with_schema(&merged)
            .map_err(|e| fatal(format!("new schema: {e}")))?;
        if mapped {
            let max_id = super::mapping::max_column_id(&merged, config);
            metadata = metadata
                .add_config_key(super::mapping::MAX_ID.to_string(), max_id.to_string())
                .map_err(|e| fatal(format!("new schema: {e}")))?;
        }
        Ok(Some(Action::Metadata(metadata)))
    }

    fn table_error(&self, message: String) -> SinkError {
        SinkError::Table {
            table: self.name.clone(),
            message,
        }
    }

    async fn plan_data(
        &mut self,
        adds: &[Add],
        schema: &Schema,
        progress: &[PartitionProgress],
        app_ids: &[String],
    ) -> std::result::Result<Plan, CommitAttemptError> {
        if let Some(fenced) = self.fence(progress, app_ids).await? {
            return Ok(Plan::Fenced(fenced));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = Vec::with_capacity(adds.len() + progress.len() + 1);
        actions.extend(self.evolution(schema)?);
        actions.extend(adds.iter().cloned().map(Action::Add));
        actions.extend(progress.iter().map(|p| {
            Action::Txn(Transaction::new_with_last_update(
                &p.app_id,
                p.last,
                Some(now),
            ))
        }));
        Ok(Plan::Write { actions, rows: 0 })
    }

    /// The merge of `changes` on the current snapshot: the files holding a
    /// changed key rewritten without the rows the changes replace, the
    /// changed rows added, and the txn actions.
    async fn plan_merge(
        &mut self,
        changes: &[RecordBatch],
        rules: &MergeRules,
        progress: &[PartitionProgress],
        app_ids: &[String],
    ) -> std::result::Result<Plan, CommitAttemptError> {
        if let Some(fenced) = self.fence(progress, app_ids).await? {
            return Ok(Plan::Fenced(fenced));
        }
        let arrow = |e: arrow::error::ArrowError| {
            CommitAttemptError::Delta(DeltaTableError::Arrow { source: e })
        };
        let mut winners = merge::reduce(changes, rules).map_err(arrow)?;
        let current: Schema = self.state.schema().try_into_arrow().map_err(arrow)?;
        let out = merge::output_schema(&current, &winners.batch.schema());
        let candidates = self.merge_candidates(&winners.batch, rules).await?;
        let mut writer = self
            .writer_factory()
            .map_err(CommitAttemptError::sink)?
            .writer(out.clone())
            .map_err(CommitAttemptError::delta)?;
        let mut removes = Vec::new();
        let (mut read, mut rewritten) = (0usize, 0u64);
        for (path, remove) in candidates {
            read += 1;
            let kept = self
                .rewrite(&path, &mut winners, rules, &out)
                .await
                .map_err(CommitAttemptError::delta)?;
            let Some(kept) = kept else { continue };
            for b in kept {
                writer.write(b).await.map_err(CommitAttemptError::delta)?;
            }
            rewritten += remove.size.unwrap_or(0) as u64;
            removes.push(remove);
        }
        let upserts = winners.upserts().map_err(arrow)?;
        if upserts.num_rows() > 0 {
            writer
                .write(merge::align(&upserts, &out).map_err(arrow)?)
                .await
                .map_err(CommitAttemptError::delta)?;
        }
        let adds = writer.flush().await.map_err(CommitAttemptError::delta)?;
        debug!(
            table = %self.name,
            changes = winners.batch.num_rows(),
            files_read = read,
            files_rewritten = removes.len(),
            bytes_rewritten = rewritten,
            bytes_written = adds.iter().map(|a| a.size).sum::<i64>(),
            "merge planned"
        );
        self.merge_plan(&out, removes, adds, progress)
    }

    /// `history` mode: the merge of `changes` on the current snapshot. The
    /// files holding a changed key are rewritten without its versions, and
    /// every version of the changed keys (stored and new, see the `history`
    /// module) is written again with its start, end and current flag.
    async fn plan_history(
        &mut self,
        changes: &[RecordBatch],
        rules: &MergeRules,
        progress: &[PartitionProgress],
        app_ids: &[String],
    ) -> std::result::Result<Plan, CommitAttemptError> {
        if let Some(fenced) = self.fence(progress, app_ids).await? {
            return Ok(Plan::Fenced(fenced));
        }
        let arrow = |e: arrow::error::ArrowError| {
            CommitAttemptError::Delta(DeltaTableError::Arrow { source: e })
        };
        let cols = rules.history.as_ref().expect("a history job");
        let mut history = super::history::History::new(changes, rules, cols).map_err(arrow)?;
        let current: Schema = self.state.schema().try_into_arrow().map_err(arrow)?;
        let out = merge::output_schema(&current, &history.changes.schema());
        let out = Arc::new(super::history::with_columns(&out, rules, cols));
        let candidates = self.merge_candidates(&history.changes, rules).await?;
        let mut writer = self
            .writer_factory()
            .map_err(CommitAttemptError::sink)?
            .writer(out.clone())
            .map_err(CommitAttemptError::delta)?;
        let mut removes = Vec::new();
        let read = candidates.len();
        for (path, remove) in candidates {
            let split = self
                .split_file(&path, &rules.keys, &out, |b| history.touches(b, rules))
                .await
                .map_err(CommitAttemptError::delta)?;
            let Some((kept, versions)) = split else {
                continue;
            };
            for b in kept {
                writer.write(b).await.map_err(CommitAttemptError::delta)?;
            }
            versions.into_iter().for_each(|b| history.keep_stored(b));
            removes.push(remove);
        }
        let versions = history.versions(rules, &out).map_err(arrow)?;
        if versions.num_rows() > 0 {
            writer
                .write(versions)
                .await
                .map_err(CommitAttemptError::delta)?;
        }
        let adds = writer.flush().await.map_err(CommitAttemptError::delta)?;
        debug!(
            table = %self.name,
            changes = history.changes.num_rows(),
            files_read = read,
            files_rewritten = removes.len(),
            bytes_written = adds.iter().map(|a| a.size).sum::<i64>(),
            "history merge planned"
        );
        self.merge_plan(&out, removes, adds, progress)
    }

    /// A merge's commit: the schema change its rows need, the removes of
    /// the files it rewrote, its new files and the txn actions of every
    /// partition of the batch, all in one commit.
    #[allow(clippy::result_large_err)]
    fn merge_plan(
        &self,
        out: &Schema,
        removes: Vec<Remove>,
        adds: Vec<Add>,
        progress: &[PartitionProgress],
    ) -> std::result::Result<Plan, CommitAttemptError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = Vec::with_capacity(adds.len() + removes.len() + 2);
        actions.extend(self.evolution(out)?);
        actions.extend(removes.into_iter().map(Action::Remove));
        actions.extend(adds.into_iter().map(Action::Add));
        actions.extend(progress.iter().map(|p| {
            Action::Txn(Transaction::new_with_last_update(
                &p.app_id,
                p.last,
                Some(now),
            ))
        }));
        Ok(Plan::Write { actions, rows: 0 })
    }

    /// Reads the file at `path`: the `needed` columns first, matched by
    /// `hit`; if no row is hit, `None` (the file stays); else its rows
    /// split into those not hit and those hit, aligned to `out`.
    async fn split_file(
        &self,
        path: &deltalake::Path,
        needed: &[String],
        out: &SchemaRef,
        mut hit: impl FnMut(&RecordBatch) -> std::result::Result<Vec<bool>, arrow::error::ArrowError>,
    ) -> std::result::Result<Option<(Vec<RecordBatch>, Vec<RecordBatch>)>, DeltaTableError> {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::parquet::arrow::ProjectionMask;
        let bytes = self.log.object_store(None).get(path).await?.bytes().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| needed.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut hits = Vec::new();
        for b in builder.with_projection(mask).build()? {
            hits.push(hit(&b?).map_err(|source| DeltaTableError::Arrow { source })?);
        }
        if !hits.iter().flatten().any(|h| *h) {
            return Ok(None);
        }
        // The same reader settings: the same batch boundaries as above.
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let (mut kept, mut matched) = (Vec::new(), Vec::new());
        for (b, hit) in reader.zip(hits) {
            let b = b?;
            let on = arrow::array::BooleanArray::from(hit);
            let off = arrow::compute::not(&on)?;
            for (mask, into) in [(&off, &mut kept), (&on, &mut matched)] {
                let part = arrow::compute::filter_record_batch(&b, mask)?;
                if part.num_rows() > 0 {
                    into.push(merge::align(&part, out)?);
                }
            }
        }
        Ok(Some((kept, matched)))
    }

    /// The files of the snapshot at the table state's version whose key
    /// statistics may hold one of the changed keys, with their removes.
    async fn merge_candidates(
        &mut self,
        changes: &RecordBatch,
        rules: &MergeRules,
    ) -> std::result::Result<Vec<(deltalake::Path, deltalake::kernel::Remove)>, CommitAttemptError>
    {
        let version = self.state.version();
        if self.files.is_none() {
            let options = self.storage_options.clone().into_iter().collect();
            let table = crate::sink::storage::table(&self.uri, &options)
                .map_err(CommitAttemptError::delta)?;
            self.files = Some(table);
        }
        let table = self.files.as_mut().expect("loaded above");
        let loaded = match table.version() {
            Some(v) if v as i64 > version => table.load_version(version as _).await,
            _ => table.update_incremental(Some(version as _)).await,
        };
        loaded.map_err(CommitAttemptError::delta)?;
        let snapshot = table.snapshot().map_err(CommitAttemptError::delta)?;
        let pruner = merge::Pruner::new(changes, rules);
        Ok(snapshot
            .log_data()
            .iter()
            .filter(|f| pruner.may_hold(f.stats().as_deref()))
            .map(|f| (f.object_store_path(), f.remove_action(true)))
            .collect())
    }

    /// Reads the file at `path`: its key (and sequence) columns first; if
    /// no change matches a row, `None` (the file stays); else the rows no
    /// change replaces, aligned to `out`.
    async fn rewrite(
        &self,
        path: &deltalake::Path,
        winners: &mut merge::Winners,
        rules: &MergeRules,
        out: &SchemaRef,
    ) -> std::result::Result<Option<Vec<RecordBatch>>, DeltaTableError> {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use deltalake::parquet::arrow::ProjectionMask;
        let bytes = self.log.object_store(None).get(path).await?.bytes().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
        let needed: Vec<&String> = rules.keys.iter().chain(&rules.sequence_by).collect();
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| needed.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut hits = Vec::new();
        for b in builder.with_projection(mask).build()? {
            hits.push(
                winners
                    .matches(&b?, rules)
                    .map_err(|source| DeltaTableError::Arrow { source })?,
            );
        }
        if !hits.iter().flatten().any(|h| *h) {
            return Ok(None);
        }
        // The same reader settings: the same batch boundaries as above.
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let mut kept = Vec::new();
        for (b, hit) in reader.zip(hits) {
            let keep = arrow::array::BooleanArray::from_iter(hit.iter().map(|h| Some(!h)));
            let b = arrow::compute::filter_record_batch(&b?, &keep)?;
            if b.num_rows() > 0 {
                kept.push(merge::align(&b, out)?);
            }
        }
        Ok(Some(kept))
    }

    /// The fence of a batch, if a partition already stores a version at or
    /// past its first offset.
    async fn fence(
        &mut self,
        progress: &[PartitionProgress],
        app_ids: &[String],
    ) -> std::result::Result<Option<CommitOutcome>, CommitAttemptError> {
        let stored = self
            .read_versions(app_ids)
            .await
            .map_err(CommitAttemptError::sink)?;
        Ok(progress.iter().zip(&stored).find_map(|(p, s)| match *s {
            Some(s) if s >= p.first => Some(CommitOutcome::Fenced {
                app_id: p.app_id.clone(),
                stored: s,
                first: p.first,
            }),
            _ => None,
        }))
    }

    async fn plan_quarantine(
        &mut self,
        batches: &[RecordBatch],
        partitions: &[(String, i32, i64)],
        app_id: &str,
    ) -> std::result::Result<Plan, CommitAttemptError> {
        let ids: Vec<String> = partitions
            .iter()
            .map(|(t, p, _)| super::txn_app_id(app_id, t, *p))
            .collect();
        let stored = self
            .read_versions(&ids)
            .await
            .map_err(CommitAttemptError::sink)?;
        let stored_by_tp: HashMap<(String, i32), i64> = partitions
            .iter()
            .zip(&stored)
            .filter_map(|((t, p, _), s)| s.map(|s| ((t.clone(), *p), s)))
            .collect();
        let mut writer = self.writer().map_err(CommitAttemptError::sink)?;
        let mut rows = 0;
        for b in batches {
            let kept = crate::quarantine::trim(b, &stored_by_tp)
                .map_err(|e| CommitAttemptError::Delta(DeltaTableError::Arrow { source: e }))?;
            if kept.num_rows() > 0 {
                rows += kept.num_rows();
                writer
                    .write(kept)
                    .await
                    .map_err(CommitAttemptError::delta)?;
            }
        }
        let txns: Vec<Action> = partitions
            .iter()
            .zip(&ids)
            .zip(&stored)
            .filter(|(((_, _, last), _), s)| s.is_none_or(|s| *last > s))
            .map(|(((_, _, last), id), _)| {
                Action::Txn(Transaction::new_with_last_update(
                    id,
                    *last,
                    Some(chrono::Utc::now().timestamp_millis()),
                ))
            })
            .collect();
        if rows == 0 && txns.is_empty() {
            writer.reset();
            return Ok(Plan::Nothing);
        }
        let adds = writer.flush().await.map_err(CommitAttemptError::delta)?;
        // Identity values generated: their high-water mark moves.
        let mut actions: Vec<Action> = self
            .evolution(&writer.commit_schema())?
            .into_iter()
            .collect();
        actions.extend(adds.into_iter().map(Action::Add));
        actions.extend(txns);
        Ok(Plan::Write { actions, rows })
    }
}

/// What a commit loop commits.
enum Job<'a> {
    /// Data files and the offsets they cover.
    Data {
        adds: &'a [Add],
        schema: &'a Schema,
        progress: &'a [PartitionProgress],
        app_ids: &'a [String],
    },
    /// Quarantine rows, trimmed to what the table does not store yet.
    Quarantine {
        batches: &'a [RecordBatch],
        partitions: &'a [(String, i32, i64)],
        app_id: &'a str,
    },
    /// Changes merged into the table, and the offsets they cover.
    Merge {
        changes: &'a [RecordBatch],
        rules: &'a MergeRules,
        progress: &'a [PartitionProgress],
        app_ids: &'a [String],
    },
}

impl Job<'_> {
    /// The txn app ids the job stores versions for.
    fn app_ids(&self) -> Vec<String> {
        match self {
            Job::Data { app_ids, .. } | Job::Merge { app_ids, .. } => app_ids.to_vec(),
            Job::Quarantine {
                partitions, app_id, ..
            } => partitions
                .iter()
                .map(|(t, p, _)| super::txn_app_id(app_id, t, *p))
                .collect(),
        }
    }

    /// Whether the job was planned on the table's files (a merge).
    fn reads_files(&self) -> bool {
        matches!(self, Job::Merge { .. })
    }

    fn operation(&self, epoch: i64) -> DeltaOperation {
        let query_id = match self {
            Job::Data { app_ids, .. } | Job::Merge { app_ids, .. } => app_ids
                .first()
                .and_then(|id| id.split(':').next())
                .unwrap_or("inlet"),
            Job::Quarantine { app_id, .. } => app_id,
        };
        DeltaOperation::StreamingUpdate {
            output_mode: if self.reads_files() {
                OutputMode::Update
            } else {
                OutputMode::Append
            },
            query_id: query_id.to_string(),
            epoch_id: epoch,
        }
    }
}

/// What a commit must carry for the table's writer features, from the
/// table state as of the version before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    /// `Some(previous)`: in-commit timestamps are enabled; the previous
    /// commit's, if it has one.
    in_commit_timestamp: Option<Option<i64>>,
    /// `Some(mark)`: row tracking is supported; the high-water mark
    /// (`None`: no row id assigned yet).
    row_ids: Option<Option<i64>>,
}

impl Stamp {
    pub(super) fn of(state: &TableState) -> Self {
        let features =
            super::features::writes_in_commit_timestamps(state.protocol(), state.metadata());
        Stamp {
            in_commit_timestamp: features.then(|| state.in_commit_timestamp()),
            row_ids: super::features::tracks_row_ids(state.protocol())
                .then(|| state.high_water_mark()),
        }
    }
}

/// Stamps the actions of the commit of `version` for the table's writer
/// features (`now`: ms since the epoch):
/// - in-commit timestamps: `commitInfo` first, with `inCommitTimestamp` =
///   max(now, the previous commit's + 1) (also its `timestamp`);
/// - row tracking: each add that has none gets `baseRowId` (fresh ids
///   after the high-water mark, in order) and `defaultRowCommitVersion` =
///   `version`, and the `delta.rowTracking` domain is set to the new mark
///   (other domains are left as they are).
///
/// An error (the rows' fault is impossible: inlet's own writer) when an add
/// lacks `numRecords`, which row ids need.
pub(super) fn stamp(
    actions: &mut Vec<Action>,
    rules: &Stamp,
    version: i64,
    now: i64,
) -> Result<(), String> {
    if let Some(previous) = rules.in_commit_timestamp {
        let ict = previous.map_or(now, |p| now.max(p + 1));
        let at = actions
            .iter()
            .position(|a| matches!(a, Action::CommitInfo(_)))
            .ok_or("a commit without commitInfo")?;
        let mut info = actions.remove(at);
        if let Action::CommitInfo(c) = &mut info {
            c.in_commit_timestamp = Some(ict);
            c.timestamp = Some(ict);
        }
        actions.insert(0, info);
    }
    let Some(mark) = rules.row_ids else {
        return Ok(());
    };
    actions.retain(|a| {
        !matches!(a, Action::DomainMetadata(d) if d.domain == super::state::ROW_TRACKING_DOMAIN)
    });
    let mut next = mark.map_or(0, |m| m + 1);
    let mut assigned = false;
    for action in actions.iter_mut() {
        let Action::Add(add) = action else { continue };
        let records = add
            .get_stats()
            .ok()
            .flatten()
            .map(|s| s.num_records)
            .ok_or_else(|| format!("file {} has no numRecords for its row ids", add.path))?;
        add.base_row_id = Some(next);
        add.default_row_commit_version = Some(version);
        next += records;
        assigned = true;
    }
    if assigned && Some(next - 1) != mark {
        actions.push(Action::DomainMetadata(deltalake::kernel::DomainMetadata {
            domain: super::state::ROW_TRACKING_DOMAIN.to_string(),
            configuration: serde_json::json!({ "rowIdHighWaterMark": next - 1 }).to_string(),
            removed: false,
        }));
    }
    Ok(())
}

/// What one attempt found it has to do.
enum Plan {
    /// Write these actions (`rows`: quarantine rows they carry).
    Write { actions: Vec<Action>, rows: usize },
    /// Another writer already stored the batch's offsets.
    Fenced(CommitOutcome),
    /// Everything is stored already.
    Nothing,
}

/// The conflict that `changes` (commits that landed after an attempt's
/// read version) make for an attempt storing versions of `app_ids`.
fn conflict(
    changes: &Changes,
    app_ids: &[String],
    reads_files: bool,
) -> Option<CommitConflictError> {
    if changes.protocol {
        Some(CommitConflictError::ProtocolChanged(
            "a concurrent commit changed the protocol".into(),
        ))
    } else if changes.metadata {
        Some(CommitConflictError::MetadataChanged)
    } else if changes.conflicts_with(app_ids) {
        Some(CommitConflictError::ConcurrentTransaction)
    } else if reads_files && changes.files {
        Some(CommitConflictError::ConcurrentDeleteRead)
    } else {
        None
    }
}

/// The checks of the protocol and properties every table inlet writes must
/// pass (each the operator's to fix): at open, and again whenever another
/// writer changed them.
fn check_appendable(name: &str, state: &TableState) -> Result<()> {
    super::features::check_writable(name, state.protocol(), state.metadata(), state.schema())?;
    if state.metadata().configuration().contains_key(TXN_RETENTION) {
        return Err(SinkError::Table {
                table: name.to_string(),
                message: format!(
                    "the table sets `{TXN_RETENTION}`, which would silently expire the Kafka offsets stored in it; \
                     unset it (ALTER TABLE ... UNSET TBLPROPERTIES ('{TXN_RETENTION}')) before running inlet"
                ),
            });
    }
    Ok(())
}

/// The column mapping of a table that maps its columns.
fn mapper_of(name: &str, state: &TableState) -> Result<Option<Arc<Mapper>>> {
    let metadata = state.metadata();
    if !super::mapping::is_mapped(metadata.configuration()) {
        return Ok(None);
    }
    Mapper::new(state.schema(), metadata.configuration(), metadata.id())
        .map(|m| Some(Arc::new(m)))
        .map_err(|e| SinkError::Table {
            table: name.to_string(),
            message: format!(
                "its column mapping cannot be read: {e}. Fix: repair the table's schema with the \
                 engine that wrote it"
            ),
        })
}

/// The checks every table inlet writes must pass, before anything is fetched
/// (each the operator's to fix), and the table's layout.
fn checked_layout(name: &str, cfg: &TableConfig, state: &TableState) -> Result<TableLayout> {
    check_appendable(name, state)?;
    if cfg.mode.merges() {
        let mode = cfg.mode.name();
        let refused = merge::refusal(state.protocol(), mode).or_else(|| {
            (!state.metadata().partition_columns().is_empty()).then(|| {
                format!(
                    "`mode = \"{mode}\"` cannot merge into a partitioned table yet; use an \
                     unpartitioned table"
                )
            })
        });
        if let Some(message) = refused {
            return Err(SinkError::Table {
                table: name.to_string(),
                message,
            });
        }
    }
    let arrow: Schema = state
        .schema()
        .try_into_arrow()
        .map_err(|e| SinkError::Table {
            table: name.to_string(),
            message: format!("table schema has no Arrow equivalent: {e}"),
        })?;
    let layout = TableLayout::new(Arc::new(arrow), &cfg.metadata_columns);
    for (what, col) in cfg
        .keys
        .iter()
        .map(|k| ("keys", k))
        .chain(cfg.sequence_by.iter().map(|s| ("sequence_by", s)))
    {
        if layout.table.field_with_name(col).is_err() {
            return Err(SinkError::Table {
                table: name.to_string(),
                message: format!(
                    "tables.{name}.{what} names `{col}`, which is not a column of the table; \
                     name a table column (or the key column, metadata_columns.key)"
                ),
            });
        }
    }
    for (kind, col) in cfg.metadata_columns.iter() {
        let ok = layout.table.field_with_name(col).is_ok_and(|f| match kind {
            MetadataKind::Key => crate::schema::key_type_fits(cfg.key_format, f.data_type()),
            _ => f.data_type() == &crate::schema::metadata_type(kind),
        });
        if !ok {
            return Err(SinkError::Table {
                    table: name.to_string(),
                    message: format!(
                        "metadata column `{col}` is missing from the existing table or has another type; \
                         add it to the table or remove it from tables.{name}.metadata_columns"
                    ),
                });
        }
    }
    Ok(layout)
}

/// How a commit loop ended.
enum Finished {
    /// This batch's commit is in the log at `version`.
    Landed { version: i64, rows: usize },
    /// Not written: see [`CommitOutcome::Fenced`].
    Fenced(CommitOutcome),
    /// Nothing left to write.
    Nothing,
}

/// A failed attempt. Retryable ones are retried on a fresh snapshot, which is
/// where a concurrent commit of the same partition turns into
/// [`CommitOutcome::Fenced`].
#[derive(Debug, thiserror::Error)]
enum CommitAttemptError {
    #[error("{0}")]
    Sink(SinkError),
    #[error("{0}")]
    Delta(DeltaTableError),
    /// Retrying cannot help.
    #[error("{0}")]
    Fatal(Box<SinkError>),
}

impl Classify for CommitAttemptError {
    fn fault(&self) -> Fault {
        match self {
            CommitAttemptError::Sink(e) => e.fault(),
            CommitAttemptError::Delta(e) => super::delta_fault(e),
            CommitAttemptError::Fatal(e) => match e.fault() {
                Fault::Environment => Fault::Internal,
                f => f,
            },
        }
    }
}

impl CommitAttemptError {
    fn sink(e: SinkError) -> Self {
        CommitAttemptError::Sink(e)
    }

    fn delta(e: DeltaTableError) -> Self {
        if matches!(
            e,
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(
                    CommitConflictError::ConcurrentTransaction
                )
            }
        ) {
            debug!("concurrent writer committed the same partition; re-checking");
        }
        CommitAttemptError::Delta(e)
    }

    fn into_sink(self, table: &str) -> SinkError {
        match self {
            CommitAttemptError::Sink(e) => e,
            CommitAttemptError::Fatal(e) => *e,
            CommitAttemptError::Delta(source) => SinkError::Delta {
                table: table.to_string(),
                source,
            },
        }
    }
}

/// Properties of a table inlet creates: the configured ones, plus the
/// checkpoint interval when `checkpoint_interval` is set.
fn table_properties(cfg: &TableConfig) -> Vec<(String, Option<String>)> {
    let mut props: Vec<(String, Option<String>)> = cfg
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    if let Some(n) = cfg.checkpoint_interval {
        if !cfg.properties.contains_key(CHECKPOINT_INTERVAL) {
            props.push((CHECKPOINT_INTERVAL.to_string(), Some(n.to_string())));
        }
    }
    props
}

/// Parquet writer settings for `c` (row groups of 128 Ki rows, with the
/// default page statistics readers prune on).
pub fn writer_properties(c: Compression) -> WriterProperties {
    let codec = match c {
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::Uncompressed => PqCompression::UNCOMPRESSED,
    };
    // A column's dictionary falls back to plain encoding once it outgrows
    // the limit. At parquet's default (1 MiB) high-cardinality columns (ids,
    // session keys, URLs) are interned for most of each row group before
    // they fall back, which made encoding ~2.8x slower than at 128 KiB for
    // the benches' events, with a larger file; low-cardinality columns keep
    // their dictionary either way (benches/hot_path.rs, parquet_encode).
    WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(1 << 17))
        .set_dictionary_page_size_limit(128 << 10)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &std::path::Path, interval: u64) -> TableConfig {
        let toml = format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "g"
[sources.s]
topics = ["t"]
table = "events"
[tables.events]
uri = "{}"
schema = "id BIGINT"
checkpoint_interval = {interval}
"#,
            path.display()
        );
        crate::config::load_str(&toml).unwrap().tables["events"].clone()
    }

    fn progress(first: i64) -> Vec<PartitionProgress> {
        vec![PartitionProgress {
            app_id: "a:t:0".into(),
            first,
            last: first + 9,
        }]
    }

    async fn commit(sink: &mut DeltaSink, first: i64) -> CommitOutcome {
        let schema = sink.schema();
        sink.commit(
            Vec::new(),
            &schema,
            &progress(first),
            0,
            &CommitConfig::default(),
        )
        .await
        .unwrap()
    }

    /// A second writer's commit of our app id is read into the first
    /// writer's state (its next batch is fenced), and a table opened after a
    /// checkpoint reads the stored version through it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn foreign_commits_are_seen_and_checkpoints_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let cfg = config(&path, 3);
        let mut one = DeltaSink::open("events", &cfg).await.unwrap();
        for (i, first) in [0, 10, 20].into_iter().enumerate() {
            let v = commit(&mut one, first).await;
            assert_eq!(
                v,
                CommitOutcome::Committed {
                    version: i as i64 + 1
                }
            );
        }
        let log = path.join("_delta_log");
        assert!(
            log.join(format!("{:020}.checkpoint.parquet", 3)).exists(),
            "a checkpoint at version 3 (interval 3)"
        );
        assert!(!log.join(format!("{:020}.checkpoint.parquet", 2)).exists());

        // Opened after the checkpoint: the version comes from it.
        let mut two = DeltaSink::open("events", &cfg).await.unwrap();
        let ids = ["a:t:0".to_string()];
        assert_eq!(two.stored_versions(&ids).await.unwrap(), [Some(29)]);
        assert_eq!(
            commit(&mut two, 30).await,
            CommitOutcome::Committed { version: 4 }
        );
        // The first writer (a zombie now) is fenced by the second's commit.
        assert_eq!(
            commit(&mut one, 30).await,
            CommitOutcome::Fenced {
                app_id: "a:t:0".into(),
                stored: 39,
                first: 30
            }
        );
        assert_eq!(one.stored_versions(&ids).await.unwrap(), [Some(39)]);
        // It moves on past the second's commits that do not touch its ids.
        let other = vec![PartitionProgress {
            app_id: "a:t:1".into(),
            first: 0,
            last: 9,
        }];
        let schema = two.schema();
        two.commit(Vec::new(), &schema, &other, 0, &CommitConfig::default())
            .await
            .unwrap();
        assert_eq!(
            commit(&mut one, 40).await,
            CommitOutcome::Committed { version: 6 }
        );
        assert!(log.join(format!("{:020}.checkpoint.parquet", 6)).exists());
    }

    /// Another writer upgrading the protocol to a feature inlet cannot
    /// write is seen by the next commit, which refuses (the operator's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_protocol_change_is_seen_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut sink = DeltaSink::open("events", &config(&path, 100))
            .await
            .unwrap();
        std::fs::write(
            path.join("_delta_log").join(format!("{:020}.json", 1)),
            r#"{"commitInfo":{"timestamp":1,"operation":"ALTER"}}
{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":[],"writerFeatures":["someFutureFeature"]}}"#,
        )
        .unwrap();
        let schema = sink.schema();
        let e = sink
            .commit(
                Vec::new(),
                &schema,
                &progress(0),
                0,
                &CommitConfig::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Table { .. }), "{e}");
        assert!(e.to_string().contains("someFutureFeature"), "{e}");
        assert_eq!(sink.state.version(), 1);
    }

    fn txn_only(id: &str, version: i64) -> CommitData {
        CommitData::new(
            vec![Action::Txn(Transaction::new(id, version))],
            DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: "a".into(),
                epoch_id: 0,
            },
            HashMap::new(),
            Vec::new(),
        )
    }

    /// A commit racing another writer for the same version: the loser reads
    /// the winner's commit; without a conflict it lands on the next version,
    /// with one (the same app id) it is fenced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_race_moves_on_or_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let cfg = config(&path, 100);
        let mut one = DeltaSink::open("events", &cfg).await.unwrap();
        let mut two = DeltaSink::open("events", &cfg).await.unwrap();
        // `one` has not seen version 1 when it writes.
        commit(&mut two, 0).await;
        let ids = vec!["a:t:1".to_string()];
        // Write straight at the stale version: the race, then the move on.
        let data = txn_only("a:t:1", 9);
        assert_eq!(one.state.version(), 0);
        assert_eq!(one.write(&data, ids).await.unwrap(), 2);
        assert_eq!(one.state.version(), 2);
        assert_eq!(
            one.stored_versions(&["a:t:0".into(), "a:t:1".into()])
                .await
                .unwrap(),
            [Some(9), Some(9)]
        );
        // A stale state racing on the same app id: a conflict, then a fence.
        commit(&mut two, 10).await;
        let data = txn_only("a:t:0", 19);
        let e = one.write(&data, vec!["a:t:0".into()]).await.unwrap_err();
        assert!(e.to_string().to_lowercase().contains("concurrent"), "{e}");
        assert!(matches!(
            commit(&mut one, 10).await,
            CommitOutcome::Fenced { stored: 19, .. }
        ));
    }

    /// A merge racing a foreign commit that added or removed files is
    /// planned again (a conflict), where an append moves on; a foreign
    /// commit of txn actions only lets the merge move on too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_that_lost_a_race_to_a_file_change_is_planned_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut one = DeltaSink::open("events", &config(&path, 100))
            .await
            .unwrap();
        let log = path.join("_delta_log");
        let foreign = |v: i64, line: &str| {
            std::fs::write(
                log.join(format!("{v:020}.json")),
                format!("{{\"commitInfo\":{{\"timestamp\":1,\"operation\":\"WRITE\"}}}}\n{line}"),
            )
            .unwrap();
        };
        foreign(
            1,
            r#"{"remove":{"path":"a.parquet","deletionTimestamp":1,"dataChange":true}}"#,
        );
        let data = txn_only("a:t:0", 9);
        let e = one
            .write_job(&data, vec!["a:t:0".into()], true)
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("concurrent"), "{e}");
        assert_eq!(one.state.version(), 1, "the foreign commit was read");
        foreign(
            2,
            r#"{"add":{"path":"b.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}"#,
        );
        assert_eq!(
            one.write_job(&data, vec!["a:t:0".into()], false)
                .await
                .unwrap(),
            3,
            "an append moves on"
        );
        foreign(4, r#"{"txn":{"appId":"b:t:0","version":3}}"#);
        let data = txn_only("a:t:0", 19);
        assert_eq!(
            one.write_job(&data, vec!["a:t:0".into()], true)
                .await
                .unwrap(),
            5,
            "no files changed: the merge moves on"
        );
    }

    /// A history table inlet creates has the history columns; a batch of
    /// changes replayed with offsets the table already stores is fenced and
    /// adds no versions (the stored offsets fence it, as in `upsert`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_history_batch_is_fenced() {
        use arrow::array::{BooleanArray, Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = config(&path, 100);
        cfg.schema = Some("id BIGINT, v STRING, seq BIGINT".into());
        cfg.mode = crate::config::TableMode::History;
        cfg.keys = vec!["id".into()];
        cfg.sequence_by = Some("seq".into());
        let mut sink = DeltaSink::open("events", &cfg).await.unwrap();
        let schema = sink.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", "v", "seq", "__start_at", "__end_at", "__is_current"]
        );
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(merge::OFFSET_COLUMN, DataType::Int64, false));
        fields.push(Field::new(merge::DELETE_COLUMN, DataType::Boolean, false));
        let nulls = |t: &DataType| arrow::array::new_null_array(t, 3);
        let changes = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 2])),
                Arc::new(StringArray::from(vec!["a", "b", "x"])),
                Arc::new(Int64Array::from(vec![5, 7, 5])),
                nulls(&DataType::Int64),
                nulls(&DataType::Int64),
                nulls(&DataType::Boolean),
                Arc::new(Int64Array::from(vec![0, 1, 2])),
                Arc::new(BooleanArray::from(vec![false, false, false])),
            ],
        )
        .unwrap();
        let retry = CommitConfig::default();
        let first = sink
            .commit_merge(std::slice::from_ref(&changes), &progress(0), 0, &retry)
            .await
            .unwrap();
        assert!(
            matches!(first, CommitOutcome::Committed { .. }),
            "{first:?}"
        );
        let version = sink.state.version();
        let again = sink
            .commit_merge(&[changes], &progress(0), 0, &retry)
            .await
            .unwrap();
        assert!(matches!(again, CommitOutcome::Fenced { .. }), "{again:?}");
        assert_eq!(sink.state.version(), version, "nothing written");
    }

    /// An existing table without the history columns gets them (nullable)
    /// in the first history merge's commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_history_merge_adds_the_history_columns_to_an_existing_table() {
        use arrow::array::{BooleanArray, Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = config(&path, 100);
        cfg.schema = Some("id BIGINT, v STRING, seq BIGINT".into());
        drop(DeltaSink::open("events", &cfg).await.unwrap());
        cfg.mode = crate::config::TableMode::History;
        cfg.keys = vec!["id".into()];
        cfg.sequence_by = Some("seq".into());
        let mut sink = DeltaSink::open("events", &cfg).await.unwrap();
        assert_eq!(sink.schema().fields().len(), 3);
        let mut fields: Vec<Field> = sink
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(merge::OFFSET_COLUMN, DataType::Int64, false));
        fields.push(Field::new(merge::DELETE_COLUMN, DataType::Boolean, false));
        let changes = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![5, 7])),
                Arc::new(Int64Array::from(vec![0, 1])),
                Arc::new(BooleanArray::from(vec![false, false])),
            ],
        )
        .unwrap();
        let done = sink
            .commit_merge(&[changes], &progress(0), 0, &CommitConfig::default())
            .await
            .unwrap();
        assert!(matches!(done, CommitOutcome::Committed { .. }), "{done:?}");
        let reopened = DeltaSink::open("events", &cfg).await.unwrap();
        let names: Vec<String> = reopened
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["id", "v", "seq", "__start_at", "__end_at", "__is_current"]
        );
    }

    fn add(path: &str, records: i64) -> Action {
        Action::Add(Add {
            path: path.into(),
            partition_values: HashMap::new(),
            size: 1,
            modification_time: 1,
            data_change: true,
            stats: Some(format!(r#"{{"numRecords":{records}}}"#)),
            ..Default::default()
        })
    }

    fn info(ts: i64) -> Action {
        Action::CommitInfo(deltalake::kernel::CommitInfo {
            timestamp: Some(ts),
            ..Default::default()
        })
    }

    fn ict_of(actions: &[Action]) -> i64 {
        match &actions[0] {
            Action::CommitInfo(c) => c.in_commit_timestamp.unwrap(),
            a => panic!("commitInfo is not first: {a:?}"),
        }
    }

    /// The in-commit timestamp is the clock's, but always past the
    /// previous commit's (a clock behind it, or the same millisecond), and
    /// commitInfo goes first.
    #[test]
    fn in_commit_timestamps_never_go_back() {
        let rules = |p| Stamp {
            in_commit_timestamp: Some(p),
            row_ids: None,
        };
        let mut a = vec![add("x", 1), info(5)];
        stamp(&mut a, &rules(Some(1_000)), 3, 2_000).unwrap();
        assert_eq!(ict_of(&a), 2_000);
        let mut a = vec![add("x", 1), info(5)];
        stamp(&mut a, &rules(Some(9_000)), 3, 2_000).unwrap();
        assert_eq!(ict_of(&a), 9_001, "a clock behind the previous commit");
        let mut a = vec![info(5)];
        stamp(&mut a, &rules(Some(2_000)), 3, 2_000).unwrap();
        assert_eq!(ict_of(&a), 2_001, "the same millisecond");
        let mut a = vec![info(5)];
        stamp(&mut a, &rules(None), 3, 2_000).unwrap();
        assert_eq!(ict_of(&a), 2_000, "no previous timestamp");
        // Not enabled: nothing is stamped.
        let mut a = vec![add("x", 1), info(5)];
        stamp(&mut a, &Stamp::default(), 3, 2_000).unwrap();
        assert!(matches!(&a[1], Action::CommitInfo(c) if c.in_commit_timestamp.is_none()));
    }

    fn row_ids(actions: &[Action]) -> (Vec<(i64, i64)>, Option<i64>) {
        let ids = actions
            .iter()
            .filter_map(|a| match a {
                Action::Add(a) => Some((
                    a.base_row_id.unwrap(),
                    a.default_row_commit_version.unwrap(),
                )),
                _ => None,
            })
            .collect();
        let mark = actions.iter().find_map(|a| match a {
            Action::DomainMetadata(d) if d.domain == "delta.rowTracking" => {
                let v: serde_json::Value = serde_json::from_str(&d.configuration).unwrap();
                v["rowIdHighWaterMark"].as_i64()
            }
            _ => None,
        });
        (ids, mark)
    }

    /// Fresh row ids after the high-water mark, in order, the commit
    /// version as default row commit version, the new mark in the commit;
    /// other domains stay.
    #[test]
    fn row_ids_follow_the_high_water_mark() {
        let rules = |m| Stamp {
            in_commit_timestamp: None,
            row_ids: Some(m),
        };
        let clustering = Action::DomainMetadata(deltalake::kernel::DomainMetadata {
            domain: "delta.clustering".into(),
            configuration: "{}".into(),
            removed: false,
        });
        let mut a = vec![info(1), add("x", 3), add("y", 2), clustering.clone()];
        stamp(&mut a, &rules(Some(9)), 4, 1).unwrap();
        assert_eq!(row_ids(&a), (vec![(10, 4), (13, 4)], Some(14)));
        assert!(a.contains(&clustering));
        // Stamped again for a later version (another writer took 4 and
        // moved the mark): re-based, one mark.
        stamp(&mut a, &rules(Some(20)), 5, 1).unwrap();
        assert_eq!(row_ids(&a), (vec![(21, 5), (24, 5)], Some(25)));
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::DomainMetadata(_)))
                .count(),
            2
        );
        let mut a = vec![info(1), add("x", 2)];
        stamp(&mut a, &rules(None), 0, 1).unwrap();
        assert_eq!(row_ids(&a), (vec![(0, 0)], Some(1)), "the first row ids");
        let mut a = vec![info(1), Action::Txn(Transaction::new("a", 1))];
        stamp(&mut a, &rules(Some(3)), 2, 1).unwrap();
        assert_eq!(row_ids(&a).1, None, "no rows, no new mark");
        let mut a = vec![info(1), add("x", 2)];
        if let Action::Add(add) = &mut a[1] {
            add.stats = None;
        }
        assert!(stamp(&mut a, &rules(None), 1, 1).is_err(), "no numRecords");
    }

    const TRACKED: &str = r#"{"commitInfo":{"timestamp":1,"inCommitTimestamp":1000,"operation":"CREATE"}}
{"protocol":{"minReaderVersion":1,"minWriterVersion":7,"writerFeatures":["inCommitTimestamp","rowTracking","domainMetadata"]}}
{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}","partitionColumns":[],"configuration":{"delta.enableInCommitTimestamps":"true","delta.enableRowTracking":"true"},"createdTime":1}}
{"add":{"path":"a.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true,"stats":"{\"numRecords\":5}","baseRowId":0,"defaultRowCommitVersion":0}}
{"domainMetadata":{"domain":"delta.rowTracking","configuration":"{\"rowIdHighWaterMark\":4}","removed":false}}"#;

    fn commit_lines(path: &std::path::Path, version: i64) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path.join("_delta_log").join(format!("{version:020}.json")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A writer whose version was taken by a foreign commit that assigned
    /// row ids and set a later in-commit timestamp moves on to the next
    /// version with its row ids re-based after the foreign mark and its
    /// timestamp after the foreign one; a state loaded afresh (also from a
    /// checkpoint) knows both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_commit_re_bases_row_ids_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let log = path.join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join(format!("{:020}.json", 0)), TRACKED).unwrap();
        let cfg = config(&path, 2);
        let mut one = DeltaSink::open("events", &cfg).await.unwrap();
        assert_eq!(one.state.high_water_mark(), Some(4));
        assert_eq!(one.state.in_commit_timestamp(), Some(1000));
        let future = chrono::Utc::now().timestamp_millis() + 3_600_000;
        std::fs::write(
            log.join(format!("{:020}.json", 1)),
            format!(
                r#"{{"commitInfo":{{"timestamp":1,"inCommitTimestamp":{future},"operation":"WRITE"}}}}
{{"add":{{"path":"b.parquet","partitionValues":{{}},"size":1,"modificationTime":1,"dataChange":true,"stats":"{{\"numRecords\":10}}","baseRowId":5,"defaultRowCommitVersion":1}}}}
{{"domainMetadata":{{"domain":"delta.rowTracking","configuration":"{{\"rowIdHighWaterMark\":14}}","removed":false}}}}"#
            ),
        )
        .unwrap();
        let data = CommitData::new(
            vec![
                add("c.parquet", 3),
                Action::Txn(Transaction::new("a:t:0", 9)),
            ],
            DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: "a".into(),
                epoch_id: 0,
            },
            HashMap::new(),
            Vec::new(),
        );
        assert_eq!(one.state.version(), 0, "version 1 not seen yet");
        assert_eq!(one.write(&data, vec!["a:t:0".into()]).await.unwrap(), 2);
        let lines = commit_lines(&path, 2);
        assert_eq!(lines[0]["commitInfo"]["inCommitTimestamp"], future + 1);
        let add = lines.iter().find_map(|l| l.get("add")).unwrap();
        assert_eq!(add["baseRowId"], 15);
        assert_eq!(add["defaultRowCommitVersion"], 2);
        let mark = lines.iter().find_map(|l| l.get("domainMetadata")).unwrap();
        assert_eq!(mark["configuration"], r#"{"rowIdHighWaterMark":17}"#);
        assert_eq!(one.state.high_water_mark(), Some(17));
        assert_eq!(one.state.in_commit_timestamp(), Some(future + 1));
        // After a checkpoint of version 2, a fresh state reads the mark
        // from it, and the timestamp from its commit.
        crate::sink::checkpoint::write(one.log.as_ref(), 2)
            .await
            .unwrap();
        assert!(log.join(format!("{:020}.checkpoint.parquet", 2)).exists());
        let two = DeltaSink::open("events", &cfg).await.unwrap();
        assert_eq!(two.state.high_water_mark(), Some(17));
        assert_eq!(two.state.in_commit_timestamp(), Some(future + 1));
    }
}
