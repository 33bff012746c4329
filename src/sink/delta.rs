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
use super::dv;
use super::identity::Identities;
use super::mapping::Mapper;
use super::merge::{self, MergeRules};
use super::state::{Changes, TableState};
use super::writer::{TableWriter, WriterFactory};
use super::{Result, SinkError, COMMIT_ID_KEY};
use crate::config::{CommitConfig, Compression, MetadataKind, TableConfig};
use crate::fault::{Classify, Fault, Shutdown};
use crate::observability::events::{
    CommitVersionLost, IdentityRegenerated, MergeCommitted, MergeReplanned,
};
use crate::observability::{InternalEvent, Metrics};
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
    /// The merge planned last: the files it read and its keys' scope,
    /// which decide whether a concurrent commit conflicts with it.
    footprint: Option<super::scope::Footprint>,
    /// What the merge planned last reads, writes and changes (its table
    /// name is set when it is emitted), and the re-plans of its batch.
    merged: MergeCommitted<'static>,
    replans: u64,
    /// What merges read of the table's files, kept between batches.
    read_cache: super::read_cache::ReadCache,
    /// When a merge rewrites a file rather than giving it a vector.
    vector_rules: crate::config::DeletionVectorConfig,
    /// The kept deletes (`tombstone_retention`), in `upsert` and `history`
    /// modes.
    tombstones: Option<super::tombstones::Tombstones>,
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
                let kernel = creation_schema(name, cfg, value)?;
                let created = if super::create::needs_own_create(&cfg.properties, &cfg.cluster_by)
                    || !cfg.identity.is_empty()
                    || cfg.tombstone_retention.is_some()
                {
                    super::create::create(
                        log.as_ref(),
                        &kernel,
                        &cfg.partition_by,
                        &cfg.cluster_by,
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
        check_clustering(name, cfg, log.as_ref(), &state).await?;
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
            footprint: None,
            merged: MergeCommitted::default(),
            replans: 0,
            read_cache: Default::default(),
            vector_rules: cfg.deletion_vectors.clone(),
            tombstones: cfg
                .tombstone_retention
                .filter(|_| {
                    matches!(
                        cfg.mode,
                        crate::config::TableMode::Upsert | crate::config::TableMode::History
                    )
                })
                .map(|r| {
                    super::tombstones::Tombstones::new(
                        r,
                        cfg.mode == crate::config::TableMode::History,
                    )
                }),
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
    ///
    /// On a table with identity columns, when another writer's commit moved
    /// a high-water mark into the window of the files' values, the files are
    /// written anew with values after the fresh mark (see
    /// [`DeltaSink::regenerate`]) and the commit carries those instead.
    pub async fn commit(
        &mut self,
        adds: Vec<Add>,
        schema: &Schema,
        progress: &[PartitionProgress],
        epoch: i64,
        retry: &CommitConfig,
    ) -> Result<CommitOutcome> {
        let app_ids: Vec<String> = progress.iter().map(|p| p.app_id.clone()).collect();
        let mut attempts = Attempts::new();
        let (mut adds, mut schema) = (adds, schema.clone());
        loop {
            let job = Job::Data {
                adds: &adds,
                schema: &schema,
                progress,
                app_ids: &app_ids,
            };
            return Ok(
                match self.commit_loop(&job, epoch, retry, &mut attempts).await? {
                    Finished::Landed { version, .. } => CommitOutcome::Committed { version },
                    Finished::Fenced(outcome) => outcome,
                    Finished::Regenerate => {
                        (adds, schema) = self.regenerate(&adds, &schema, retry).await?;
                        continue;
                    }
                    Finished::Nothing => {
                        return Err(SinkError::Internal {
                            table: self.name.clone(),
                            message: "a data commit planned no write".into(),
                        })
                    }
                },
            );
        }
    }

    /// The files of `adds` written anew, each beside its old one, with
    /// identity values taken after the table's high-water marks as of the
    /// table state (which another writer's commit moved into the window
    /// `schema` records), and `schema` recording the new window. The old
    /// files are left unreferenced (an earlier attempt could still be
    /// found to have landed with them; `vacuum` removes them otherwise).
    async fn regenerate(
        &mut self,
        adds: &[Add],
        schema: &Schema,
        retry: &CommitConfig,
    ) -> Result<(Vec<Add>, Schema)> {
        let Some(ids) = self.identity.clone() else {
            return Err(self.table_error(
                "identity values to generate again on a table without identity columns".into(),
            ));
        };
        ids.observe(self.state.schema());
        let names = ids.names();
        let columns = match &self.mapper {
            Some(m) => m.physical_names(&names).map_err(|e| self.table_error(e))?,
            None => names,
        };
        let mut retrier = Retrier::new(
            &self.name,
            self.metrics.clone(),
            self.shutdown.clone(),
            retry,
        );
        let store = self.log.object_store(None);
        'files: loop {
            let mut new = Vec::with_capacity(adds.len());
            let mut window = vec![None; ids.len()];
            for add in adds {
                match super::identity::rewrite(
                    store.as_ref(),
                    add,
                    &ids,
                    &columns,
                    &self.writer_properties,
                )
                .await
                {
                    Ok((add, w)) => {
                        super::identity::extend(&mut window, &w);
                        new.push(add);
                    }
                    Err(e) => {
                        retrier.failed(e.to_string()).await?;
                        continue 'files;
                    }
                }
            }
            let rows = new
                .iter()
                .filter_map(|a| a.get_stats().ok().flatten())
                .map(|s| s.num_records)
                .sum();
            IdentityRegenerated {
                table: &self.name,
                files: new.len(),
                rows,
                window: &window,
            }
            .emit(&self.metrics);
            return Ok((new, ids.mark(schema, &window)));
        }
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
        self.replans = 0;
        let mut attempts = Attempts::new();
        Ok(
            match self.commit_loop(&job, epoch, retry, &mut attempts).await? {
                Finished::Landed { version, .. } => {
                    self.merge_committed(version);
                    CommitOutcome::Committed { version }
                }
                Finished::Fenced(outcome) => outcome,
                Finished::Nothing | Finished::Regenerate => {
                    return Err(SinkError::Internal {
                        table: self.name.clone(),
                        message: "a merge commit planned no write".into(),
                    })
                }
            },
        )
    }

    /// Reports the merge that landed at `version` (as planned by the
    /// attempt that landed; an earlier attempt found in the log after a
    /// lost answer was planned the same way, on an older snapshot).
    fn merge_committed(&mut self, version: i64) {
        let merged = std::mem::take(&mut self.merged);
        MergeCommitted {
            table: &self.name,
            version,
            replans: self.replans,
            ..merged
        }
        .emit(&self.metrics);
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
        let mut attempts = Attempts::new();
        Ok(
            match self.commit_loop(&job, epoch, retry, &mut attempts).await? {
                Finished::Landed { rows, .. } => rows,
                Finished::Fenced(_) | Finished::Nothing => 0,
                // Its files are written by each attempt's plan, after the mark.
                Finished::Regenerate => {
                    return Err(self
                        .table_error("a quarantine commit asked for identity values again".into()))
                }
            },
        )
    }

    /// The one retry loop of data and quarantine commits (`attempts`: the
    /// batch's, also those of its files before identity values were
    /// generated again).
    async fn commit_loop(
        &mut self,
        job: &Job<'_>,
        epoch: i64,
        retry: &CommitConfig,
        attempts: &mut Attempts,
    ) -> Result<Finished> {
        let mut retrier = Retrier::new(
            &self.name,
            self.metrics.clone(),
            self.shutdown.clone(),
            retry,
        );
        loop {
            match self.attempt(job, epoch, attempts).await {
                Ok(done) => return Ok(done),
                Err(CommitAttemptError::Fatal(e)) => return Err(*e),
                Err(CommitAttemptError::Regenerate) => return Ok(Finished::Regenerate),
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
            Plan::Regenerate => return Ok(Finished::Regenerate),
        };
        let id = attempts.next(read_version, rows);
        let data = CommitData::new(
            actions,
            job.operation(epoch),
            HashMap::from([(COMMIT_ID_KEY.to_string(), serde_json::Value::String(id))]),
            Vec::new(),
        );
        match self
            .write_job(&data, job.app_ids(), job.reads_files(), job.files())
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
        self.write_job(data, app_ids, false, None).await
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
    ///
    /// On an identity table every commit moves the high-water marks, a
    /// metadata change. One that changed nothing else does not conflict
    /// while the marks stay before the window of the values in the files
    /// (`files`: their schema, see `Identities::mark`); once they reach it,
    /// the files are written again ([`CommitAttemptError::Regenerate`]).
    async fn write_job(
        &mut self,
        data: &CommitData,
        app_ids: Vec<String>,
        reads_files: bool,
        files: Option<&Schema>,
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
                    CommitVersionLost {
                        table: &self.name,
                        version,
                    }
                    .emit(&self.metrics);
                    let changes = self.refresh().await.map_err(CommitAttemptError::sink)?;
                    self.after_race(&changes, &app_ids, reads_files, data, files)?;
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

    /// Whether an attempt that lost its version to the commits `changes`
    /// must be planned again (an error), or written again
    /// ([`CommitAttemptError::Regenerate`]), or may move on (see
    /// [`DeltaSink::write_job`]).
    // The error is the same type every commit attempt returns.
    #[allow(clippy::result_large_err)]
    fn after_race(
        &mut self,
        changes: &Changes,
        app_ids: &[String],
        reads_files: bool,
        data: &CommitData,
        files: Option<&Schema>,
    ) -> std::result::Result<(), CommitAttemptError> {
        let footprint = reads_files.then_some(self.footprint.as_ref()).flatten();
        let kept_deletes = reads_files && self.tombstones.is_some();
        let Some(conflict) = conflict(changes, app_ids, reads_files, footprint, kept_deletes)
        else {
            return Ok(());
        };
        if matches!(conflict, CommitConflictError::ConcurrentDeleteRead) {
            self.replans += 1;
            MergeReplanned {
                table: &self.name,
                version: self.state.version(),
            }
            .emit(&self.metrics);
        }
        let marks_only = matches!(conflict, CommitConflictError::MetadataChanged)
            && !changes.app_ids.iter().any(|id| app_ids.contains(id))
            && self.marks_moved_only(data, files);
        if !marks_only {
            return Err(CommitAttemptError::delta(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(conflict),
            }));
        }
        match files {
            Some(f) if super::identity::moved(self.state.schema(), f) => {
                Err(CommitAttemptError::Regenerate)
            }
            _ => Ok(()),
        }
    }

    /// Whether the table's metadata, read in after a lost race, differs
    /// from the metadata action of `data` in identity high-water marks only
    /// (`files`: a data commit's files; other commits always conflict).
    fn marks_moved_only(&self, data: &CommitData, files: Option<&Schema>) -> bool {
        if files.is_none() || self.identity.is_none() {
            return false;
        }
        data.actions.iter().any(|a| match a {
            Action::Metadata(ours) => super::identity::same_but_marks(ours, self.state.metadata()),
            _ => false,
        })
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
        if super::identity::moved(self.state.schema(), schema) {
            return Ok(Plan::Regenerate);
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
        let table = self.name.clone();
        let arrow = |e| planning_bug(&table, e);
        let mut winners = merge::reduce(changes, rules).map_err(arrow)?;
        let store = self.log.object_store(None);
        let now = chrono::Utc::now().timestamp_millis();
        let mut kept = super::tombstones::Kept::default();
        let listing = self.tombstone_listing().await?;
        let listing = if let (Some(t), Some(listing)) = (self.tombstones.as_mut(), listing) {
            t.apply(
                store.as_ref(),
                &listing,
                &mut winners,
                rules,
                now,
                &mut kept,
            )
            .await
            .map_err(CommitAttemptError::delta)?;
            Some(listing)
        } else {
            None
        };
        let current: Schema = self.state.schema().try_into_arrow().map_err(arrow)?;
        let out = merge::output_schema(&current, &winners.batch.schema());
        let candidates = self.merge_candidates(&winners.batch, rules).await?;
        let mut writer = self
            .writer_factory()
            .map_err(CommitAttemptError::sink)?
            .writer(out.clone())
            .map_err(CommitAttemptError::delta)?;
        let vectors = dv::enabled(self.state.protocol(), self.state.metadata().configuration());
        let needed: Vec<&String> = rules.keys.iter().chain(&rules.sequence_by).collect();
        let (mut removes, mut deletes) = (Vec::new(), dv::Vectors::default());
        let read = candidates.len() as u64;
        let partitions = self.state.metadata().partition_columns().to_vec();
        let mut bytes_read = 0;
        for (path, target) in candidates {
            let dv = target.add.deletion_vector.as_ref();
            let fill = |b| with_partitions(b, &partitions, &target.remove, &current);
            let cache = &mut self.read_cache;
            // With vectors files stay, so a file's key index serves later
            // batches; without, a file hit is rewritten and its index would
            // be built for one use.
            let (hits, fetched) = if vectors {
                dv::upsert_hits(
                    store.as_ref(),
                    cache,
                    &path,
                    dv,
                    &needed,
                    fill,
                    &mut winners,
                    rules,
                )
                .await
            } else {
                dv::hits(store.as_ref(), cache, &path, dv, &needed, fill, |b| {
                    winners.matches(b, rules)
                })
                .await
            }
            .map_err(CommitAttemptError::delta)?;
            bytes_read += fetched;
            let Some(hits) = hits else { continue };
            if vectors && !hits.rewrites(&self.vector_rules, winners.batch.num_rows()) {
                let (deleted, rows) = (hits.deleted(), hits.rows());
                deletes.delete(target, deleted, rows);
                continue;
            }
            bytes_read += hits.split_reads(&target.remove);
            let (kept, _) = hits
                .split(store.as_ref(), &out, true, fill)
                .await
                .map_err(CommitAttemptError::delta)?;
            for b in kept {
                writer.write(b).await.map_err(CommitAttemptError::delta)?;
            }
            removes.push(target.remove);
        }
        let upserts = winners.upserts().map_err(arrow)?;
        if upserts.num_rows() > 0 {
            writer
                .write(merge::align(&upserts, &out).map_err(arrow)?)
                .await
                .map_err(CommitAttemptError::delta)?;
        }
        let mut adds = writer.flush().await.map_err(CommitAttemptError::delta)?;
        let domain = match (self.tombstones.as_mut(), listing) {
            (Some(t), Some(listing)) => {
                let new = winners
                    .tombstones(rules, super::tombstones::DELETED_AT, now)
                    .map_err(arrow)?;
                t.record(store.as_ref(), listing, new, rules, now, &mut kept)
                    .await
                    .map_err(CommitAttemptError::delta)?
            }
            _ => None,
        };
        let (rows_inserted, rows_updated, rows_deleted) = winners.counts().map_err(arrow)?;
        let (files_vectored, files_rewritten) = (deletes.files() as u64, removes.len() as u64);
        let (dv_removes, dv_adds, dv_bytes) = deletes
            .finish(store.as_ref(), &mut self.read_cache)
            .await
            .map_err(|e| CommitAttemptError::delta(e.into()))?;
        self.merged = MergeCommitted {
            changes: winners.batch.num_rows() as u64,
            files_read: read,
            files_rewritten,
            files_vectored,
            bytes_read: bytes_read + kept.bytes_read,
            bytes_written: adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>()
                + dv_bytes
                + kept.bytes_written,
            rows_inserted,
            rows_updated,
            rows_deleted,
            rows_dropped_by_tombstone: kept.dropped,
            tombstones_written: kept.written,
            ..MergeCommitted::default()
        };
        removes.extend(dv_removes);
        adds.extend(dv_adds);
        self.merge_plan(&out, removes, adds, domain, progress)
    }

    /// The listing of kept deletes as of the current state; `None`: the
    /// table keeps none.
    async fn tombstone_listing(
        &mut self,
    ) -> std::result::Result<Option<super::tombstones::Listing>, CommitAttemptError> {
        if self.tombstones.is_none() {
            return Ok(None);
        }
        let config = self
            .state
            .tombstone_domain(self.log.as_ref())
            .await
            .map_err(CommitAttemptError::delta)?;
        super::tombstones::Listing::parse(config.as_deref())
            .map(Some)
            .map_err(CommitAttemptError::delta)
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
        let table = self.name.clone();
        let arrow = |e| planning_bug(&table, e);
        let cols = rules.history.as_ref().expect("a history job");
        let mut history = super::history::History::new(changes, rules, cols).map_err(arrow)?;
        let store = self.log.object_store(None);
        let now = chrono::Utc::now().timestamp_millis();
        let mut kept = super::tombstones::Kept::default();
        let listing = self.tombstone_listing().await?;
        if let (Some(t), Some(listing)) = (self.tombstones.as_mut(), &listing) {
            t.apply_history(store.as_ref(), listing, &mut history, rules, now, &mut kept)
                .await
                .map_err(CommitAttemptError::delta)?;
        }
        let current: Schema = self.state.schema().try_into_arrow().map_err(arrow)?;
        let out = merge::output_schema(&current, &history.changes.schema());
        let out = Arc::new(super::history::with_columns(&out, rules, cols));
        let candidates = self.merge_candidates(&history.changes, rules).await?;
        let mut writer = self
            .writer_factory()
            .map_err(CommitAttemptError::sink)?
            .writer(out.clone())
            .map_err(CommitAttemptError::delta)?;
        let vectors = dv::enabled(self.state.protocol(), self.state.metadata().configuration());
        let needed: Vec<&String> = rules.keys.iter().collect();
        let (mut removes, mut deletes) = (Vec::new(), dv::Vectors::default());
        let read = candidates.len() as u64;
        let partitions = self.state.metadata().partition_columns().to_vec();
        let (mut stored, mut bytes_read) = (0, 0);
        for (path, target) in candidates {
            let dv = target.add.deletion_vector.as_ref();
            let fill = |b| with_partitions(b, &partitions, &target.remove, &current);
            let cache = &mut self.read_cache;
            let (hits, fetched) = dv::hits(store.as_ref(), cache, &path, dv, &needed, fill, |b| {
                history.touches(b, rules)
            })
            .await
            .map_err(CommitAttemptError::delta)?;
            bytes_read += fetched;
            let Some(hits) = hits else { continue };
            // The stored versions of the changed keys are written again
            // (with their new ends); with vectors, deleted where they are
            // unless the file is rewritten.
            let rewrite = !vectors || hits.rewrites(&self.vector_rules, history.changes.num_rows());
            bytes_read += hits.split_reads(&target.remove);
            let (kept, versions) = hits
                .split(store.as_ref(), &out, rewrite, fill)
                .await
                .map_err(CommitAttemptError::delta)?;
            for b in kept {
                writer.write(b).await.map_err(CommitAttemptError::delta)?;
            }
            stored += versions.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
            versions.into_iter().for_each(|b| history.keep_stored(b));
            if rewrite {
                removes.push(target.remove);
            } else {
                let (deleted, rows) = (hits.deleted(), hits.rows());
                deletes.delete(target, deleted, rows);
            }
        }
        let versions = history.versions(rules, &out).map_err(arrow)?;
        let written = versions.num_rows() as u64;
        if versions.num_rows() > 0 {
            writer
                .write(versions)
                .await
                .map_err(CommitAttemptError::delta)?;
        }
        let mut adds = writer.flush().await.map_err(CommitAttemptError::delta)?;
        let domain = match (self.tombstones.as_mut(), listing) {
            (Some(t), Some(listing)) => {
                let new = history
                    .tombstones(rules, super::tombstones::DELETED_AT, now)
                    .map_err(arrow)?;
                t.record(store.as_ref(), listing, new, rules, now, &mut kept)
                    .await
                    .map_err(CommitAttemptError::delta)?
            }
            _ => None,
        };
        let (files_vectored, files_rewritten) = (deletes.files() as u64, removes.len() as u64);
        let (dv_removes, dv_adds, dv_bytes) = deletes
            .finish(store.as_ref(), &mut self.read_cache)
            .await
            .map_err(|e| CommitAttemptError::delta(e.into()))?;
        self.merged = MergeCommitted {
            changes: history.changes.num_rows() as u64,
            files_read: read,
            files_rewritten,
            files_vectored,
            bytes_read: bytes_read + kept.bytes_read,
            bytes_written: adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>()
                + dv_bytes
                + kept.bytes_written,
            rows_inserted: written.saturating_sub(stored),
            rows_updated: stored,
            rows_deleted: history.deletes(),
            tombstones_applied: kept.applied,
            tombstones_written: kept.written,
            ..MergeCommitted::default()
        };
        removes.extend(dv_removes);
        adds.extend(dv_adds);
        self.merge_plan(&out, removes, adds, domain, progress)
    }

    /// A merge's commit: the schema change its rows need, the removes of
    /// the files it rewrote, its new files, the kept deletes' listing
    /// (`domain`) and the txn actions of every partition of the batch, all
    /// in one commit.
    #[allow(clippy::result_large_err)]
    fn merge_plan(
        &self,
        out: &Schema,
        removes: Vec<Remove>,
        adds: Vec<Add>,
        domain: Option<Action>,
        progress: &[PartitionProgress],
    ) -> std::result::Result<Plan, CommitAttemptError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = Vec::with_capacity(adds.len() + removes.len() + 3);
        actions.extend(self.evolution(out)?);
        actions.extend(domain);
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

    /// The files of the snapshot at the table state's version whose key
    /// statistics may hold one of the changed keys, with their removes.
    async fn merge_candidates(
        &mut self,
        changes: &RecordBatch,
        rules: &MergeRules,
    ) -> std::result::Result<Vec<(deltalake::Path, dv::Target)>, CommitAttemptError> {
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
        let partition_columns = self.state.metadata().partition_columns();
        let scope = super::scope::Scope::new(changes, rules, partition_columns)
            .map_err(|e| CommitAttemptError::delta(DeltaTableError::Arrow { source: e }))?;
        let candidates: Vec<_> = snapshot
            .log_data()
            .iter()
            .filter(|f| scope.may_hold(&f.partition_values_map(), f.stats().as_deref()))
            .map(|f| {
                // The add as the log has it: a file given a deletion vector
                // is added again with its statistics and tags.
                #[allow(deprecated)]
                let add = f.add_action();
                let remove = f.remove_action(true);
                (f.object_store_path(), dv::Target { add, remove })
            })
            .collect();
        self.footprint = Some(super::scope::Footprint {
            read: candidates
                .iter()
                .map(|(_, t)| t.remove.path.clone())
                .collect(),
            scope,
        });
        Ok(candidates)
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

/// An Arrow error of planning a merge on rows inlet shaped itself (the
/// change batch, the table's own files read with the table's schema):
/// inlet's bug, so the batch stops loudly instead of being retried.
fn planning_bug(table: &str, e: arrow::error::ArrowError) -> CommitAttemptError {
    CommitAttemptError::Fatal(Box::new(SinkError::Internal {
        table: table.to_string(),
        message: format!(
            "planning the merge failed, which is a bug of inlet (nothing of this batch \
             was committed; a restart reads it again): {e}"
        ),
    }))
}

/// `batch`, read from the file of `remove` (with its partition values),
/// with the partition `columns` of the `table` (which data files do not
/// hold).
fn with_partitions(
    batch: RecordBatch,
    columns: &[String],
    remove: &Remove,
    table: &Schema,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let (Some(values), false) = (&remove.partition_values, columns.is_empty()) else {
        return Ok(batch);
    };
    super::scope::with_partition_columns(batch, columns, values, table)
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

    /// The schema of a data job's files (their identity values' window).
    fn files(&self) -> Option<&Schema> {
        match self {
            Job::Data { schema, .. } => Some(schema),
            _ => None,
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
    /// Another writer's commit moved an identity high-water mark into the
    /// window of the files' values: they must be written again.
    Regenerate,
}

/// The conflict that `changes` (commits that landed after an attempt's
/// read version) make for an attempt storing versions of `app_ids`.
fn conflict(
    changes: &Changes,
    app_ids: &[String],
    reads_files: bool,
    footprint: Option<&super::scope::Footprint>,
    kept_deletes: bool,
) -> Option<CommitConflictError> {
    if changes.protocol {
        Some(CommitConflictError::ProtocolChanged(
            "a concurrent commit changed the protocol".into(),
        ))
    } else if changes.metadata {
        Some(CommitConflictError::MetadataChanged)
    } else if changes.conflicts_with(app_ids) {
        Some(CommitConflictError::ConcurrentTransaction)
    } else if reads_files && footprint.map_or(changes.files, |f| f.conflicts(changes)) {
        // Without a footprint (none recorded), any file change conflicts.
        Some(CommitConflictError::ConcurrentDeleteRead)
    } else if kept_deletes && changes.tombstones {
        // Another writer's kept deletes: the merge must see them, and its
        // listing must keep their segment.
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

/// The schema of a table inlet creates: `cfg.schema` (or `value`), the
/// metadata and history columns, checked against `cluster_by`, with the
/// identity columns declared.
fn creation_schema(name: &str, cfg: &TableConfig, value: Option<&Schema>) -> Result<StructType> {
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
    let kernel: StructType = (&schema).try_into_kernel().map_err(|e| SinkError::Table {
        table: name.to_string(),
        message: format!("schema cannot be stored in Delta: {e}"),
    })?;
    if let Some(c) = cfg.cluster_by.iter().find(|c| kernel.field(c).is_none()) {
        return Err(SinkError::Table {
            table: name.to_string(),
            message: format!(
                "tables.{name}.cluster_by names `{c}`, which is not a top-level column of the table; \
                 name a column of the schema"
            ),
        });
    }
    let kernel =
        super::identity::declare(&kernel, &cfg.identity).map_err(|m| SinkError::Table {
            table: name.to_string(),
            message: format!(
                "tables.{name}.identity {m}; name nullable BIGINT columns of the schema"
            ),
        })?;
    Ok(kernel)
}

/// `cluster_by` on a clustered table names the table's clustering columns,
/// in order: a different list would be the table's silently (inlet never
/// re-clusters). A table whose columns cannot be read (Databricks' preview
/// `delta.liquid` domain) is not compared.
async fn check_clustering(
    name: &str,
    cfg: &TableConfig,
    log: &dyn LogStore,
    state: &TableState,
) -> Result<()> {
    if cfg.cluster_by.is_empty() {
        return Ok(());
    }
    let table = super::state::clustering_columns(log, state.version())
        .await
        .map_err(|source| SinkError::Delta {
            table: name.to_string(),
            source,
        })?;
    let Some(table) = table else {
        return Ok(());
    };
    let wanted: Vec<Vec<String>> = cfg
        .cluster_by
        .iter()
        .map(|c| {
            let physical = state.schema().field(c).and_then(|f| {
                match f.metadata().get(super::mapping::PHYSICAL) {
                    Some(deltalake::kernel::MetadataValue::String(p)) => Some(p.clone()),
                    _ => None,
                }
            });
            vec![physical.unwrap_or_else(|| c.clone())]
        })
        .collect();
    if wanted == table {
        return Ok(());
    }
    let logical: Vec<String> = table
        .iter()
        .map(|path| {
            let top = state
                .schema()
                .fields()
                .find(|f| {
                    matches!(f.metadata().get(super::mapping::PHYSICAL),
                        Some(deltalake::kernel::MetadataValue::String(p)) if Some(p) == path.first())
                })
                .map(|f| f.name().clone());
            match top {
                Some(t) if path.len() == 1 => t,
                _ => path.join("."),
            }
        })
        .collect();
    Err(SinkError::Table {
        table: name.to_string(),
        message: format!(
            "tables.{name}.cluster_by is {:?}, but the table is clustered by {logical:?}; \
             set cluster_by to the table's columns or remove it (inlet does not re-cluster a table)",
            cfg.cluster_by
        ),
    })
}

/// The checks every table inlet writes must pass, before anything is fetched
/// (each the operator's to fix), and the table's layout.
fn checked_layout(name: &str, cfg: &TableConfig, state: &TableState) -> Result<TableLayout> {
    check_appendable(name, state)?;
    if !cfg.cluster_by.is_empty() && !super::features::is_clustered(state.protocol()) {
        // Clustering an existing table is an ALTER (and a rewrite to be
        // worth it), not something an ingest should do on its own.
        return Err(SinkError::Table {
            table: name.to_string(),
            message: format!(
                "tables.{name}.cluster_by is set, but the existing table is not clustered; \
                 remove cluster_by, or cluster the table with ALTER TABLE … CLUSTER BY"
            ),
        });
    }
    if cfg.mode.merges() {
        let mode = cfg.mode.name();
        if let Some(message) = merge::refusal(state.protocol(), mode) {
            return Err(SinkError::Table {
                table: name.to_string(),
                message,
            });
        }
    }
    if cfg.tombstone_retention.is_some() && !super::features::has_domain_metadata(state.protocol())
    {
        return Err(SinkError::Table {
            table: name.to_string(),
            message: format!(
                "tables.{name}.tombstone_retention keeps deletes in the table's `{}` domain, \
                 and the table does not support domain metadata; enable it with ALTER TABLE … \
                 SET TBLPROPERTIES ('delta.feature.domainMetadata' = 'supported') (writer \
                 version 7), or remove tombstone_retention",
                super::tombstones::DOMAIN
            ),
        });
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
    check_history_columns(name, cfg, &layout.table)?;
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

/// A `history` table's start, end and current columns, where it has them,
/// have the types the merge writes (the start and end the sequence's, the
/// current BOOLEAN): another type is a value column of the same name, which
/// the merge would overwrite.
fn check_history_columns(name: &str, cfg: &TableConfig, table: &Schema) -> Result<()> {
    if cfg.mode != crate::config::TableMode::History {
        return Ok(());
    }
    let rules = MergeRules {
        keys: cfg.keys.clone(),
        sequence_by: cfg.sequence_by.clone(),
        history: None,
    };
    let seq = super::history::sequence_type(table, &rules);
    let h = &cfg.history;
    for (field, col, ty) in [
        ("start_column", &h.start_column, &seq),
        ("end_column", &h.end_column, &seq),
        (
            "current_column",
            &h.current_column,
            &arrow::datatypes::DataType::Boolean,
        ),
    ] {
        match table.field_with_name(col) {
            Ok(f) if f.data_type() != ty => {
                return Err(SinkError::Table {
                    table: name.to_string(),
                    message: format!(
                        "tables.{name}.history.{field}: the table's column `{col}` is {}, not the \
                         {ty} the history merge writes: it is a value column of the same name. \
                         Fix: name the history column otherwise (`{field} = \"...\"`)",
                        f.data_type()
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// How a commit loop ended.
enum Finished {
    /// This batch's commit is in the log at `version`.
    Landed { version: i64, rows: usize },
    /// Not written: see [`CommitOutcome::Fenced`].
    Fenced(CommitOutcome),
    /// Nothing left to write.
    Nothing,
    /// See [`Plan::Regenerate`].
    Regenerate,
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
    /// Another writer's commit reached the window of the identity values
    /// in the files: they must be written again (see [`Plan::Regenerate`]).
    #[error("another writer's commit reached the identity values of the batch's files")]
    Regenerate,
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
            // Handled by the commit loop; never a failure.
            CommitAttemptError::Regenerate => Fault::Internal,
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
            CommitAttemptError::Regenerate => SinkError::Table {
                table: table.to_string(),
                message: "identity values to generate again outside a data commit".into(),
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
    // Kept deletes are listed in a domain: the new table supports them.
    if cfg.tombstone_retention.is_some() && !cfg.properties.contains_key(DOMAIN_FEATURE) {
        props.push((DOMAIN_FEATURE.to_string(), Some("supported".into())));
    }
    props
}

/// The property that makes a new table support domain metadata.
const DOMAIN_FEATURE: &str = super::create::DOMAIN_FEATURE;

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

    /// An `upsert` table `events` (id, v, seq) keyed by `id` and ordered by
    /// `seq`; with `vectors`, with deletion vectors on.
    fn upsert_config(path: &std::path::Path, vectors: bool) -> TableConfig {
        let mut cfg = config(path, 100);
        cfg.schema = Some("id BIGINT, v STRING, seq BIGINT".into());
        cfg.mode = crate::config::TableMode::Upsert;
        cfg.keys = vec!["id".into()];
        cfg.sequence_by = Some("seq".into());
        if vectors {
            cfg.properties
                .insert("delta.enableDeletionVectors".into(), "true".into());
        }
        cfg
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
        // The version lost is counted (the table's commit contention).
        let lost = || {
            one.metrics
                .commit_versions_lost
                .get_or_create(&crate::observability::TableLabels {
                    table: "events".into(),
                })
                .get()
        };
        assert_eq!(lost(), 1);
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
        assert_eq!(
            one.metrics
                .commit_versions_lost
                .get_or_create(&crate::observability::TableLabels {
                    table: "events".into(),
                })
                .get(),
            2
        );
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
            .write_job(&data, vec!["a:t:0".into()], true, None)
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("concurrent"), "{e}");
        assert_eq!(one.state.version(), 1, "the foreign commit was read");
        foreign(
            2,
            r#"{"add":{"path":"b.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}"#,
        );
        assert_eq!(
            one.write_job(&data, vec!["a:t:0".into()], false, None)
                .await
                .unwrap(),
            3,
            "an append moves on"
        );
        foreign(4, r#"{"txn":{"appId":"b:t:0","version":3}}"#);
        let data = txn_only("a:t:0", 19);
        assert_eq!(
            one.write_job(&data, vec!["a:t:0".into()], true, None)
                .await
                .unwrap(),
            5,
            "no files changed: the merge moves on"
        );
        // Another writer's deletion vector on a file: removed and added
        // again under the same path; a merge conflicts with it.
        foreign(
            6,
            r#"{"remove":{"path":"b.parquet","deletionTimestamp":1,"dataChange":true}}
{"add":{"path":"b.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true,"deletionVector":{"storageType":"u","pathOrInlineDv":"vBn[lx{q8@P<9BNH/isA","offset":1,"sizeInBytes":36,"cardinality":2}}}"#,
        );
        let data = txn_only("a:t:0", 29);
        let e = one
            .write_job(&data, vec!["a:t:0".into()], true, None)
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("concurrent"), "{e}");
    }

    /// With the footprint of its plan, a merge moves on past a foreign
    /// commit that removed no file it read and added none that may hold one
    /// of its keys; one that did makes it plan again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_conflicts_only_with_commits_touching_its_files_or_keys() {
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
        let rules = MergeRules {
            keys: vec!["id".into()],
            sequence_by: None,
            history: None,
        };
        let changes = merge::tests::changes(&[(5, "a", 0, 0, false), (7, "b", 0, 1, false)]);
        let footprint = || super::super::scope::Footprint {
            read: ["a b.parquet".to_string()].into(),
            scope: super::super::scope::Scope::new(&changes, &rules, &[]).unwrap(),
        };
        let add = |name: &str, min: i64, max: i64| {
            format!(
                r#"{{"add":{{"path":"{name}","partitionValues":{{}},"size":1,"modificationTime":1,"dataChange":true,"stats":"{{\"numRecords\":1,\"minValues\":{{\"id\":{min}}},\"maxValues\":{{\"id\":{max}}}}}"}}}}"#
            )
        };
        let remove = |name: &str| {
            format!(r#"{{"remove":{{"path":"{name}","deletionTimestamp":1,"dataChange":true}}}}"#)
        };
        let mut version = 0;
        // One foreign commit at the next version, then the merge's write.
        macro_rules! race {
            ($line:expr) => {{
                version += 1;
                foreign(version, &$line);
                one.footprint = Some(footprint());
                let data = txn_only("a:t:0", 100 + version);
                let got = one.write_job(&data, vec!["a:t:0".into()], true, None).await;
                if got.is_ok() {
                    version += 1;
                }
                got.map_err(|e| e.to_string())
            }};
        }
        // Not read, other keys, no file: the merge moves on.
        assert!(race!(remove("c.parquet")).is_ok());
        assert!(race!(add("d.parquet", 8, 100)).is_ok());
        assert!(race!(add("e.parquet", 0, 4)).is_ok());
        // A file read is gone (its path as the log encodes it), a new file
        // may hold key 5 or 7, or has no statistics: planned again.
        for line in [
            remove("a%20b.parquet"),
            add("f.parquet", 6, 9),
            r#"{"add":{"path":"g.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}"#.to_string(),
        ] {
            let e = race!(line).unwrap_err();
            assert!(e.to_lowercase().contains("concurrent"), "{e}");
        }
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

    /// Each merge committed reports the files and bytes it read and wrote
    /// and the rows it inserted, updated and deleted, as metrics.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merges_report_their_files_bytes_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let cfg = upsert_config(&path, false);
        let metrics = Arc::new(Metrics::new());
        let mut sink = DeltaSink::open("events", &cfg)
            .await
            .unwrap()
            .with_metrics(metrics.clone());
        let retry = CommitConfig::default();
        let first = merge::tests::changes(&[
            (1, "a", 5, 0, false),
            (2, "b", 5, 1, false),
            (3, "c", 5, 2, false),
        ]);
        sink.commit_merge(&[first], &progress(0), 0, &retry)
            .await
            .unwrap();
        let first_size: u64 = parquet_sizes(&path).values().sum();
        let second = merge::tests::changes(&[
            (1, "a2", 6, 10, false),  // updates
            (2, "", 6, 11, true),     // deletes
            (4, "d", 6, 12, false),   // inserts
            (3, "old", 1, 13, false), // older than the stored row: nothing
            (9, "", 6, 14, true),     // deletes nothing
        ]);
        sink.commit_merge(&[second], &progress(10), 0, &retry)
            .await
            .unwrap();
        let text = metrics.encode();
        let value = |name: &str| metric(&text, name);
        assert_eq!(value("inlet_merges_total{table=\"events\"}"), 2);
        assert_eq!(value("inlet_merge_files_read_total{table=\"events\"}"), 1);
        assert_eq!(
            value("inlet_merge_files_rewritten_total{table=\"events\"}"),
            1
        );
        let rows = |action: &str| {
            value(&format!(
                "inlet_merge_rows_total{{table=\"events\",action=\"{action}\"}}"
            ))
        };
        assert_eq!(
            (rows("inserted"), rows("updated"), rows("deleted")),
            (4, 1, 1)
        );
        let written: u64 = parquet_sizes(&path).values().sum();
        assert_eq!(
            value("inlet_merge_bytes_written_total{table=\"events\"}"),
            written,
            "every file the merges wrote is in the table's directory"
        );
        assert_eq!(
            value("inlet_merge_bytes_read_total{table=\"events\"}"),
            first_size,
            "the second merge read the first one's file"
        );
        assert!(!text.contains("inlet_merge_replans_total{"), "no re-plan");
    }

    /// With deletion vectors a file keeps its path, so a later merge finds
    /// its key columns (and the vector the last merge wrote) in the read
    /// cache: only files it never read come from the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merges_with_vectors_read_each_file_from_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = upsert_config(&path, true);
        // Every file a merge hits gets a vector (none is rewritten).
        cfg.deletion_vectors = crate::config::DeletionVectorConfig {
            rewrite_below_batches: 0,
            rewrite_deleted_share: 1.0,
        };
        let metrics = Arc::new(Metrics::new());
        let mut sink = DeltaSink::open("events", &cfg)
            .await
            .unwrap()
            .with_metrics(metrics.clone());
        let retry = CommitConfig::default();
        let mut sizes = Vec::new();
        let batches = [
            vec![
                (1, "a", 5, 0, false),
                (2, "b", 5, 1, false),
                (3, "c", 5, 2, false),
            ],
            vec![(1, "a2", 6, 10, false), (4, "d", 6, 11, false)],
            vec![(2, "", 7, 20, true), (4, "d2", 7, 21, false)],
            vec![(3, "c2", 8, 30, false), (4, "d3", 8, 31, false)],
        ];
        for (i, rows) in batches.iter().enumerate() {
            let before: HashMap<String, u64> = parquet_sizes(&path);
            sink.commit_merge(
                &[merge::tests::changes(rows)],
                &progress(i as i64 * 10),
                0,
                &retry,
            )
            .await
            .unwrap();
            let added: u64 = parquet_sizes(&path)
                .iter()
                .filter(|(name, _)| !before.contains_key(*name))
                .map(|(_, size)| size)
                .sum();
            sizes.push(added);
        }
        let text = metrics.encode();
        let value = |name: &str| metric(&text, name);
        assert_eq!(
            value("inlet_merge_files_rewritten_total{table=\"events\"}"),
            0,
            "vectors, no rewrites"
        );
        // Merge 2 reads file 1; merge 3 files 1 (kept) and 2; merge 4
        // files 1, 2 (kept) and 3: each file once, the last one never.
        assert_eq!(
            value("inlet_merge_bytes_read_total{table=\"events\"}"),
            sizes[0] + sizes[1] + sizes[2],
            "files written: {sizes:?}"
        );
        assert_eq!(value("inlet_merge_files_read_total{table=\"events\"}"), 6);
        let table = deltalake::open_table(url::Url::from_directory_path(&path).unwrap())
            .await
            .unwrap();
        let live: i64 = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| {
                f.num_records().unwrap_or(0) as i64
                    - f.deletion_vector_descriptor().map_or(0, |d| d.cardinality)
            })
            .sum();
        assert_eq!(live, 3, "keys 1, 3 and 4 are left");
    }

    /// With deletion vectors and the default rewrite rules, merges of
    /// scattered keys fold the small files they hit into their new file and
    /// rewrite files mostly deleted: the table keeps few files however many
    /// batches merge into it, and its rows are the latest per key. With the
    /// rules off every batch leaves one more file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merges_with_vectors_keep_the_table_few_files() {
        use std::collections::BTreeMap;
        let off = crate::config::DeletionVectorConfig {
            rewrite_below_batches: 0,
            rewrite_deleted_share: 1.0,
        };
        for (rules, bounded) in [(Default::default(), true), (off, false)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events");
            let mut cfg = upsert_config(&path, true);
            cfg.deletion_vectors = rules;
            let metrics = Arc::new(Metrics::new());
            let mut sink = DeltaSink::open("events", &cfg)
                .await
                .unwrap()
                .with_metrics(metrics.clone());
            let retry = CommitConfig::default();
            let keys = 2000i64;
            let mut expected: BTreeMap<i64, String> = BTreeMap::new();
            let load: Vec<(i64, String)> = (0..keys).map(|k| (k, format!("v{k}-0"))).collect();
            let mut batches = vec![load];
            for b in 1..=40i64 {
                // 50 keys (2.5%) a batch, scattered over the key range.
                batches.push(
                    (0..50)
                        .map(|j| ((j * 797 + b * 131) % keys, format!("v{j}-{b}")))
                        .collect(),
                );
            }
            let mut offset = 0;
            for (b, batch) in batches.iter().enumerate() {
                let rows: Vec<(i64, &str, i64, i64, bool)> = batch
                    .iter()
                    .enumerate()
                    .map(|(j, (k, v))| {
                        // Every ninth change of a batch is a delete.
                        (
                            *k,
                            v.as_str(),
                            b as i64,
                            offset + j as i64,
                            b > 0 && j % 9 == 0,
                        )
                    })
                    .collect();
                for r in &rows {
                    if r.4 {
                        expected.remove(&r.0);
                    } else {
                        expected.insert(r.0, r.1.to_string());
                    }
                }
                sink.commit_merge(
                    &[merge::tests::changes(&rows)],
                    &progress(offset),
                    0,
                    &retry,
                )
                .await
                .unwrap();
                offset += rows.len() as i64;
            }
            let url = url::Url::from_directory_path(&path).unwrap();
            let mut table = deltalake::open_table(url).await.unwrap();
            table.load().await.unwrap();
            let files = table.snapshot().unwrap().log_data().num_files();
            let read = upsert_values(&path).await;
            assert_eq!(read, expected, "rules on: {bounded}");
            let text = metrics.encode();
            let value = |name: &str| metric(&text, name);
            let vectored = value("inlet_merge_files_vectored_total{table=\"events\"}");
            let rewritten = value("inlet_merge_files_rewritten_total{table=\"events\"}");
            if bounded {
                assert!(files <= 8, "{files} files");
                assert!(vectored > 0 && rewritten > 0, "{vectored} / {rewritten}");
            } else {
                assert!(files > 40, "{files} files");
                assert_eq!(rewritten, 0);
            }
        }
    }

    /// A change batch inlet shaped wrongly (here: without its delete
    /// column) fails the merge's planning: inlet's bug, stopped at once as
    /// internal, not retried as the environment's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_planning_bug_stops_at_once_as_internal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = config(&path, 100);
        cfg.schema = Some("id BIGINT, v STRING, seq BIGINT".into());
        cfg.mode = crate::config::TableMode::Upsert;
        cfg.keys = vec!["id".into()];
        let mut sink = DeltaSink::open("events", &cfg).await.unwrap();
        let changes = merge::tests::changes(&[(1, "a", 5, 0, false)]);
        let malformed = changes.project(&[0, 1, 2, 3]).unwrap();
        let retry = CommitConfig {
            retry_backoff: std::time::Duration::from_secs(5),
            max_attempts: 3,
            ..CommitConfig::default()
        };
        let started = std::time::Instant::now();
        let e = sink
            .commit_merge(&[malformed], &progress(0), 0, &retry)
            .await
            .unwrap_err();
        assert_eq!(e.fault(), Fault::Internal, "{e}");
        assert!(e.to_string().contains("bug of inlet"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "not retried"
        );
    }

    /// A history table whose column of a history column's name has another
    /// type (a value column) is refused at open, naming the key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_column_named_like_a_history_column_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = config(&path, 100);
        cfg.schema = Some("id BIGINT, seq BIGINT, __is_current STRING".into());
        DeltaSink::open("events", &cfg).await.unwrap();
        cfg.mode = crate::config::TableMode::History;
        cfg.keys = vec!["id".into()];
        cfg.sequence_by = Some("seq".into());
        let e = DeltaSink::open("events", &cfg).await.unwrap_err();
        assert_eq!(e.fault(), Fault::Operator, "{e}");
        assert!(e.to_string().contains("history.current_column"), "{e}");
        cfg.history.current_column = "__current".into();
        DeltaSink::open("events", &cfg).await.unwrap();
    }

    /// The value of the metric line starting with `name` in `text`.
    fn metric(text: &str, name: &str) -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    }

    /// The sizes of the table's Parquet files by name.
    fn parquet_sizes(path: &std::path::Path) -> HashMap<String, u64> {
        std::fs::read_dir(path)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().len())
            })
            .collect()
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

    const IDENTITY: &str = r#"{"commitInfo":{"timestamp":1,"operation":"CREATE"}}
{"protocol":{"minReaderVersion":1,"minWriterVersion":7,"writerFeatures":["identityColumns","appendOnly","invariants"]}}
{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{\"delta.identity.highWaterMark\":44,\"delta.identity.step\":1,\"delta.identity.allowExplicitInsert\":false,\"delta.identity.start\":1}}]}","partitionColumns":[],"configuration":{},"createdTime":1}}"#;

    /// The same, column-mapped (by name) and partitioned by a string
    /// column `p`: files carry physical names, in partition directories.
    const MAPPED_IDENTITY: &str = r#"{"commitInfo":{"timestamp":1,"operation":"CREATE"}}
{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["columnMapping"],"writerFeatures":["columnMapping","identityColumns","appendOnly","invariants"]}}
{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{\"delta.identity.highWaterMark\":44,\"delta.identity.step\":1,\"delta.identity.allowExplicitInsert\":false,\"delta.identity.start\":1,\"delta.columnMapping.id\":1,\"delta.columnMapping.physicalName\":\"col-id\"}},{\"name\":\"p\",\"type\":\"string\",\"nullable\":true,\"metadata\":{\"delta.columnMapping.id\":2,\"delta.columnMapping.physicalName\":\"col-p\"}}]}","partitionColumns":["p"],"configuration":{"delta.columnMapping.mode":"name","delta.columnMapping.maxColumnId":"2"},"createdTime":1}}"#;

    /// Writes `rows` rows (identity values generated; `p`, if the table
    /// has it, "x") with `sink`'s writer: the adds and the schema their
    /// commit takes.
    async fn identity_files(sink: &DeltaSink, rows: usize) -> (Vec<Add>, Schema) {
        let mut w = sink.writer().unwrap();
        let schema = w.arrow_schema();
        let columns: Vec<arrow::array::ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> arrow::array::ArrayRef {
                if f.name() == "id" {
                    Arc::new(arrow::array::Int64Array::from(vec![None; rows]))
                } else {
                    Arc::new(arrow::array::StringArray::from(vec!["x"; rows]))
                }
            })
            .collect();
        w.write(RecordBatch::try_new(schema, columns).unwrap())
            .await
            .unwrap();
        let adds = w.flush().await.unwrap();
        (adds, w.commit_schema().as_ref().clone())
    }

    /// The ids (column `col` of the files, by its name there) in the files
    /// of the adds of commit `version`, the commit's high-water mark, and
    /// the statistics' (min, max) of `col`.
    fn identity_commit(
        path: &std::path::Path,
        version: i64,
        col: &str,
    ) -> (Vec<i64>, i64, Vec<(i64, i64)>) {
        use arrow::array::AsArray;
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let lines = commit_lines(path, version);
        let mut ids = Vec::new();
        let mut stats = Vec::new();
        for add in lines.iter().filter_map(|l| l.get("add")) {
            let file = std::fs::File::open(path.join(add["path"].as_str().unwrap())).unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let col = b
                    .column_by_name(col)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>();
                assert_eq!(arrow::array::Array::null_count(col), 0);
                ids.extend(col.values().iter().copied());
            }
            let s: serde_json::Value =
                serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
            stats.push((
                s["minValues"][col].as_i64().unwrap(),
                s["maxValues"][col].as_i64().unwrap(),
            ));
        }
        let meta = lines.iter().find_map(|l| l.get("metaData")).unwrap();
        let schema: serde_json::Value =
            serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        let mark = schema["fields"][0]["metadata"]["delta.identity.highWaterMark"]
            .as_i64()
            .unwrap();
        (ids, mark, stats)
    }

    /// Two writers generate identity values at once (both after mark 44):
    /// the second to commit finds the mark moved into its window, writes
    /// its files anew with values after the fresh mark and commits them
    /// (counted in the metric); ids never repeat, and each mark covers them.
    /// Also on a column-mapped, partitioned table (physical names in the
    /// files and statistics, the new file in the partition's directory).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_whose_identity_values_another_committed_generates_them_again() {
        for (log0, col, dir_prefix) in [
            (IDENTITY, "id", ""),
            (MAPPED_IDENTITY, "col-id", "col-p=x/"),
        ] {
            generates_identity_values_again(log0, col, dir_prefix).await;
        }
    }

    async fn generates_identity_values_again(log0: &str, col: &str, dir_prefix: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let log = path.join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join(format!("{:020}.json", 0)), log0).unwrap();
        let cfg = config(&path, 100);
        let metrics = Arc::new(Metrics::new());
        let mut one = DeltaSink::open("events", &cfg)
            .await
            .unwrap()
            .with_metrics(metrics.clone());
        let mut two = DeltaSink::open("events", &cfg).await.unwrap();
        let (adds, schema) = identity_files(&one, 3).await;
        let (adds2, schema2) = identity_files(&two, 2).await;
        let other = |app: &str| {
            vec![PartitionProgress {
                app_id: app.into(),
                first: 0,
                last: 9,
            }]
        };
        let retry = CommitConfig::default();
        let p = other("b:t:0");
        let done = two.commit(adds2, &schema2, &p, 0, &retry);
        assert_eq!(done.await.unwrap(), CommitOutcome::Committed { version: 1 });
        assert_eq!(
            identity_commit(&path, 1, col),
            (vec![45, 46], 46, vec![(45, 46)])
        );
        let old = adds[0].path.clone();
        let p = other("a:t:0");
        let done = one.commit(adds, &schema, &p, 0, &retry);
        assert_eq!(done.await.unwrap(), CommitOutcome::Committed { version: 2 });
        let (ids, mark, stats) = identity_commit(&path, 2, col);
        assert_eq!(
            ids,
            [48, 49, 50],
            "after the fresh mark (its own 45-47 skipped)"
        );
        assert_eq!((mark, stats), (50, vec![(48, 50)]));
        let lines = commit_lines(&path, 2);
        for add in lines.iter().filter_map(|l| l.get("add")) {
            let new = add["path"].as_str().unwrap();
            assert!(
                new != old && new.starts_with(dir_prefix),
                "{new} after {old}"
            );
        }
        assert!(
            metrics
                .encode()
                .contains(r#"inlet_identity_regenerations_total{table="events"} 1"#),
            "{}",
            metrics.encode()
        );
        // Both writers go on after the mark.
        let (adds, schema) = identity_files(&two, 1).await;
        let p = other("b:t:1");
        let done = two.commit(adds, &schema, &p, 0, &retry);
        assert_eq!(done.await.unwrap(), CommitOutcome::Committed { version: 3 });
        assert_eq!(
            identity_commit(&path, 3, col),
            (vec![51], 51, vec![(51, 51)])
        );
    }

    /// The commit of `adds` written with `schema` for app id `app`, as an
    /// attempt of `sink` plans it on its state.
    fn identity_data(sink: &DeltaSink, adds: Vec<Add>, schema: &Schema, app: &str) -> CommitData {
        let mut actions: Vec<Action> = sink.evolution(schema).unwrap().into_iter().collect();
        actions.extend(adds.into_iter().map(Action::Add));
        actions.push(Action::Txn(Transaction::new(app, 9)));
        CommitData::new(
            actions,
            DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: "a".into(),
                epoch_id: 0,
            },
            HashMap::new(),
            Vec::new(),
        )
    }

    /// A write that lost its version to another writer's append (which
    /// moved only the identity mark) moves on to the next version while the
    /// mark stays before its values, and asks for them again once it
    /// reached them; a commit that changed more conflicts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_race_to_a_moved_mark_moves_on_or_generates_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let log = path.join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join(format!("{:020}.json", 0)), IDENTITY).unwrap();
        let cfg = config(&path, 100);
        let mut one = DeltaSink::open("events", &cfg).await.unwrap();
        let mut two = DeltaSink::open("events", &cfg).await.unwrap();
        let retry = CommitConfig::default();
        let progress = |app: &str| {
            vec![PartitionProgress {
                app_id: app.into(),
                first: 0,
                last: 9,
            }]
        };
        // One's second batch holds 48-50; two commits 45-46 first.
        let _ = identity_files(&one, 3).await;
        let (adds, schema) = identity_files(&one, 3).await;
        let data = identity_data(&one, adds, &schema, "a:t:0");
        let (adds2, schema2) = identity_files(&two, 2).await;
        let p = progress("b:t:0");
        let done = two.commit(adds2, &schema2, &p, 0, &retry).await.unwrap();
        assert_eq!(done, CommitOutcome::Committed { version: 1 });
        let files = Some(&schema);
        let landed = one.write_job(&data, vec!["a:t:0".into()], false, files);
        assert_eq!(landed.await.unwrap(), 2, "moved on past the mark 46");
        assert_eq!(
            identity_commit(&path, 2, "id"),
            (vec![48, 49, 50], 50, vec![(48, 50)])
        );
        // Two generates 47 (before one's mark 50): written again as 51.
        let (adds2, schema2) = identity_files(&two, 1).await;
        let p = progress("b:t:1");
        let done = two.commit(adds2, &schema2, &p, 0, &retry).await.unwrap();
        assert_eq!(done, CommitOutcome::Committed { version: 3 });
        assert_eq!(
            identity_commit(&path, 3, "id"),
            (vec![51], 51, vec![(51, 51)])
        );
        // One's next values (51) are reached by two's mark.
        let (adds, schema) = identity_files(&one, 1).await;
        let data = identity_data(&one, adds, &schema, "a:t:1");
        let files = Some(&schema);
        let lost = one.write_job(&data, vec!["a:t:1".into()], false, files);
        assert!(matches!(lost.await, Err(CommitAttemptError::Regenerate)));
        // A commit that changed more than the marks conflicts.
        let (adds, schema) = identity_files(&one, 1).await;
        let data = identity_data(&one, adds, &schema, "a:t:2");
        let text = std::fs::read_to_string(log.join(format!("{:020}.json", 3))).unwrap();
        std::fs::write(
            log.join(format!("{:020}.json", 4)),
            text.replace(r#""configuration":{}"#, r#""configuration":{"x":"y"}"#),
        )
        .unwrap();
        let files = Some(&schema);
        let lost = one.write_job(&data, vec!["a:t:2".into()], false, files);
        assert!(matches!(lost.await, Err(CommitAttemptError::Delta(_))));
    }

    /// The rows `(id, v)` of the upsert table at `path`, read by DataFusion.
    async fn upsert_values(path: &std::path::Path) -> std::collections::BTreeMap<i64, String> {
        use arrow::array::AsArray as _;
        let url = url::Url::from_directory_path(path).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("t", table.table_provider().await.unwrap())
            .unwrap();
        let mut out = std::collections::BTreeMap::new();
        for b in ctx
            .sql("SELECT id, v FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
        {
            let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            let vs = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
            for (i, v) in ids.iter().zip(vs.as_string::<i32>().iter()) {
                assert!(out.insert(i.unwrap(), v.unwrap().to_string()).is_none());
            }
        }
        out
    }

    /// An upsert table keeping deletes for an hour, checkpointed every
    /// other version.
    fn keeping_config(path: &std::path::Path) -> TableConfig {
        let mut cfg = config(path, 2);
        cfg.schema = Some("id BIGINT, v STRING, seq BIGINT".into());
        cfg.mode = crate::config::TableMode::Upsert;
        cfg.keys = vec!["id".into()];
        cfg.sequence_by = Some("seq".into());
        cfg.tombstone_retention = Some(std::time::Duration::from_secs(3600));
        cfg
    }

    fn progress_of(app_id: &str, first: i64) -> Vec<PartitionProgress> {
        vec![PartitionProgress {
            app_id: app_id.into(),
            first,
            last: first + 9,
        }]
    }

    /// With `tombstone_retention`, a change older than a delete of its key
    /// that arrives in a later batch is dropped, for a key the table held
    /// and for one it never did; a change as new as the delete or newer
    /// applies. Without it, the older changes bring the keys back. The
    /// kept deletes are read again by a process opened after a checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_deletes_drop_older_changes_of_later_batches() {
        use merge::tests::changes;
        for keep in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events");
            let mut cfg = keeping_config(&path);
            if !keep {
                cfg.tombstone_retention = None;
            }
            let metrics = Arc::new(Metrics::new());
            let retry = CommitConfig::default();
            let mut sink = DeltaSink::open("events", &cfg).await.unwrap();
            let first = changes(&[(1, "a", 1, 0, false), (2, "b", 1, 1, false)]);
            sink.commit_merge(&[first], &progress(0), 0, &retry)
                .await
                .unwrap();
            // Deletes 1, and 3, which the table never held.
            let deletes = changes(&[(1, "", 5, 10, true), (3, "", 5, 11, true)]);
            sink.commit_merge(&[deletes], &progress(10), 0, &retry)
                .await
                .unwrap();
            drop(sink);
            let checkpoint = path
                .join("_delta_log")
                .join(format!("{:020}.checkpoint.parquet", 2));
            assert!(checkpoint.exists(), "the listing is read from a checkpoint");
            let mut sink = DeltaSink::open("events", &cfg)
                .await
                .unwrap()
                .with_metrics(metrics.clone());
            let late = changes(&[
                (1, "late", 3, 20, false),
                (3, "late", 4, 21, false),
                (2, "b2", 2, 22, false),
            ]);
            sink.commit_merge(&[late], &progress(20), 0, &retry)
                .await
                .unwrap();
            let got = upsert_values(&path).await;
            let text = metrics.encode();
            let dropped = metric(
                &text,
                "inlet_merge_rows_total{table=\"events\",action=\"dropped_by_tombstone\"}",
            );
            if keep {
                assert_eq!(got, [(2, "b2".to_string())].into());
                assert_eq!(dropped, 2);
            } else {
                let all = [(1, "late"), (2, "b2"), (3, "late")];
                assert_eq!(got, all.map(|(k, v)| (k, v.to_string())).into());
                assert_eq!(dropped, 0);
            }
            // As new as the delete (a tie goes to the later change), or newer.
            let newer = changes(&[(1, "new", 6, 30, false), (3, "tie", 5, 31, false)]);
            sink.commit_merge(&[newer], &progress(30), 0, &retry)
                .await
                .unwrap();
            let all = [(1, "new"), (2, "b2"), (3, "tie")];
            assert_eq!(
                upsert_values(&path).await,
                all.map(|(k, v)| (k, v.to_string())).into()
            );
            let segments = path.join(super::super::tombstones::DIR);
            assert_eq!(segments.exists(), keep);
        }
    }

    /// Two writers: one deletes a key the table never held; the other,
    /// which last read the table before, merges an older change of it and
    /// deletes another key. The second reads the first's listing from its
    /// commit (its change is dropped) and keeps both writers' segments.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_writers_kept_deletes_are_seen_and_kept() {
        use merge::tests::changes;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let cfg = keeping_config(&path);
        let retry = CommitConfig::default();
        let mut one = DeltaSink::open("events", &cfg).await.unwrap();
        let mut two = DeltaSink::open("events", &cfg).await.unwrap();
        let first = changes(&[(1, "a", 1, 0, false)]);
        one.commit_merge(&[first], &progress_of("a:t:0", 0), 0, &retry)
            .await
            .unwrap();
        let deletes = changes(&[(3, "", 5, 10, true)]);
        one.commit_merge(&[deletes], &progress_of("a:t:0", 10), 0, &retry)
            .await
            .unwrap();
        // `two` still holds the state of version 0: its commit races.
        let theirs = changes(&[(3, "late", 4, 0, false), (4, "", 5, 1, true)]);
        two.commit_merge(&[theirs], &progress_of("a:t:1", 0), 0, &retry)
            .await
            .unwrap();
        assert_eq!(upsert_values(&path).await, [(1, "a".to_string())].into());
        // Both deletes are kept: older changes of 3 and 4 stay out.
        let later = changes(&[(3, "x", 1, 20, false), (4, "y", 1, 21, false)]);
        one.commit_merge(&[later], &progress_of("a:t:0", 20), 0, &retry)
            .await
            .unwrap();
        assert_eq!(upsert_values(&path).await, [(1, "a".to_string())].into());
    }

    /// A merge keeping deletes that lost its version to a commit that set
    /// the kept deletes' domain plans again (it must see them, and its
    /// listing must keep their segment); one that keeps none does not.
    #[test]
    fn another_writers_kept_deletes_make_a_keeping_merge_plan_again() {
        let changes = Changes {
            tombstones: true,
            ..Changes::default()
        };
        let ids = ["a:t:0".to_string()];
        assert!(matches!(
            conflict(&changes, &ids, true, None, true),
            Some(CommitConflictError::ConcurrentDeleteRead)
        ));
        assert!(conflict(&changes, &ids, true, None, false).is_none());
        assert!(conflict(&Changes::default(), &ids, true, None, true).is_none());
    }

    /// An existing table without domain metadata cannot keep deletes: the
    /// operator is told how to enable it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeping_deletes_needs_a_table_with_domain_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut cfg = keeping_config(&path);
        cfg.tombstone_retention = None;
        drop(DeltaSink::open("events", &cfg).await.unwrap());
        cfg.tombstone_retention = Some(std::time::Duration::from_secs(60));
        let err = DeltaSink::open("events", &cfg).await.unwrap_err();
        assert!(matches!(err, SinkError::Table { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("tables.events.tombstone_retention"), "{text}");
        assert!(
            text.contains("'delta.feature.domainMetadata' = 'supported'"),
            "{text}"
        );
    }
}
