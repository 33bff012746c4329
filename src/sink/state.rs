//! The light table state inlet appends with: the table's version, protocol
//! and metadata, and the txn versions of the app ids it asks about. No file
//! list: appending never reads one.
//!
//! It is read once (protocol and metadata from a snapshot without files, the
//! commits after the last checkpoint in one pass) and then advanced from the
//! new commits only: each refresh reads the commit files after the known
//! version, in order, until there is none. A commit by another writer moves
//! the txn versions, protocol and metadata it carries; inlet's own commits are
//! read back the same way. The cost of a refresh is the number of new
//! commits, not the table's history.
//!
//! A txn version is known for every app id that appears in a commit after
//! the base (the last checkpoint when the state was loaded); any other app id
//! is looked up once in the base snapshot (the checkpoint alone) and
//! remembered. Without a checkpoint the whole log is the replay and the base
//! is empty.
//!
//! A state that sat unrefreshed for half the table's log retention is loaded
//! again: past that, expired-log cleanup could have removed commits it has
//! not read yet, and a write after such a gap must not rely on "the next
//! commit file is missing, so the table ends here".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use delta_kernel::table_properties::TableProperties;
use delta_kernel::Snapshot as KernelSnapshot;
use deltalake::kernel::{Metadata, Protocol, StructType};
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::LogStore;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaResult, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt as _;
use serde::Deserialize;

/// Commit files read at once when replaying a log without a checkpoint.
const REPLAY_CONCURRENCY: usize = 16;

/// What one or more commits changed that a commit planned before them
/// depends on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Changes {
    /// A commit carried a protocol action.
    pub protocol: bool,
    /// A commit carried a metadata action.
    pub metadata: bool,
    /// The app ids whose txn version a commit set.
    pub app_ids: Vec<String>,
    /// A commit added or removed files (what a merge planned on).
    pub files: bool,
    /// The files added (what a merge's conflict check compares with the
    /// keys it changes).
    pub added: Vec<AddedFile>,
    /// The paths (URL-decoded) of the files removed, or whose deletion
    /// vector changed (a remove and an add of one path).
    pub removed: Vec<String>,
    /// What moved is unknown (the state was loaded again): every file may
    /// have changed.
    pub unknown_files: bool,
    /// A commit set the `inlet.tombstones` domain (the kept deletes).
    pub tombstones: bool,
}

/// A file a concurrent commit added: where it sits and its statistics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct AddedFile {
    #[serde(rename = "partitionValues", default)]
    pub partition_values: HashMap<String, Option<String>>,
    /// The statistics JSON, if the writer wrote any.
    #[serde(default)]
    pub stats: Option<String>,
}

/// A remove line: its path.
#[derive(Debug, Deserialize)]
struct RemoveLine {
    path: String,
}

impl Changes {
    fn merge(&mut self, other: Changes) {
        self.protocol |= other.protocol;
        self.metadata |= other.metadata;
        self.app_ids.extend(other.app_ids);
        self.files |= other.files;
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.unknown_files |= other.unknown_files;
        self.tombstones |= other.tombstones;
    }

    /// Whether a commit planned for `app_ids` before these changes must be
    /// planned again: the protocol or metadata moved, or one of its app ids.
    pub(super) fn conflicts_with(&self, app_ids: &[String]) -> bool {
        self.protocol || self.metadata || self.app_ids.iter().any(|id| app_ids.contains(id))
    }
}

/// The light table state (see the module docs).
pub(super) struct TableState {
    version: i64,
    protocol: Protocol,
    metadata: Metadata,
    schema: StructType,
    properties: TableProperties,
    /// Txn versions known as of `version`; `None`: the app id has none.
    txns: HashMap<String, Option<i64>>,
    /// Where app ids absent from `txns` are looked up; `None` when `txns`
    /// is complete (the whole log was replayed).
    base: Option<Arc<KernelSnapshot>>,
    /// The `inCommitTimestamp` of the commit at `version`, if it has one.
    in_commit_timestamp: Option<i64>,
    /// The row id high-water mark (`delta.rowTracking` domain) as of
    /// `version`; `None`: no row id was assigned yet. Tracked only on
    /// tables that support row tracking.
    high_water_mark: Option<i64>,
    /// The `inlet.tombstones` domain's configuration as of `version` when
    /// known (`Some(None)`: not set); `None`: look it up in `base`.
    tombstones: Option<Option<String>>,
    refreshed: Instant,
}

impl std::fmt::Debug for TableState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableState")
            .field("version", &self.version)
            .field("txns", &self.txns.len())
            .field("base", &self.base.as_ref().map(|b| b.version()))
            .finish()
    }
}

#[derive(Deserialize)]
struct LogLine {
    protocol: Option<Protocol>,
    #[serde(rename = "metaData")]
    metadata: Option<Metadata>,
    txn: Option<TxnLine>,
    #[serde(rename = "commitInfo")]
    commit_info: Option<CommitInfoLine>,
    #[serde(rename = "domainMetadata")]
    domain: Option<DomainLine>,
    add: Option<AddedFile>,
    remove: Option<RemoveLine>,
}

#[derive(Deserialize)]
struct CommitInfoLine {
    #[serde(rename = "inCommitTimestamp")]
    in_commit_timestamp: Option<i64>,
}

#[derive(Deserialize)]
struct DomainLine {
    domain: String,
    configuration: String,
    #[serde(default)]
    removed: bool,
}

/// The configuration of the `delta.rowTracking` domain.
#[derive(Deserialize)]
struct RowTrackingDomain {
    #[serde(rename = "rowIdHighWaterMark")]
    high_water_mark: i64,
}

/// The domain holding the row id high-water mark.
pub(super) const ROW_TRACKING_DOMAIN: &str = "delta.rowTracking";

impl DomainLine {
    /// The kept deletes' listing (`Some(None)`: the domain was removed),
    /// if this is their domain.
    fn tombstones(&self) -> Option<Option<String>> {
        (self.domain == super::tombstones::DOMAIN)
            .then(|| (!self.removed).then(|| self.configuration.clone()))
    }

    /// The high-water mark, if this is the row tracking domain.
    fn high_water_mark(&self) -> DeltaResult<Option<i64>> {
        if self.domain != ROW_TRACKING_DOMAIN || self.removed {
            return Ok(None);
        }
        let d: RowTrackingDomain = serde_json::from_str(&self.configuration).map_err(|e| {
            DeltaTableError::Generic(format!(
                "the {ROW_TRACKING_DOMAIN} domain cannot be read: {e}: {}",
                self.configuration
            ))
        })?;
        Ok(Some(d.high_water_mark))
    }
}

#[derive(Deserialize)]
struct TxnLine {
    #[serde(rename = "appId")]
    app_id: String,
    version: i64,
}

#[derive(Deserialize)]
struct CheckpointHint {
    version: i64,
}

impl TableState {
    /// Reads the state of the table's latest version: `NotATable` when there
    /// is none.
    pub(super) async fn load(log: &dyn LogStore) -> DeltaResult<Self> {
        let snapshot = deltalake::kernel::Snapshot::try_new(log, None).await?;
        let version = snapshot.version() as i64;
        let mut state = Self::from_parts(
            version,
            snapshot.protocol().clone(),
            snapshot.metadata().clone(),
        )?;
        let tracked = super::features::tracks_row_ids(&state.protocol);
        match last_checkpoint(log).await? {
            Some(c) if c <= version => {
                state.base = Some(kernel_snapshot(log, c).await?);
                if tracked {
                    state.high_water_mark = checkpoint_high_water_mark(log, c).await?;
                }
                state.replay(log, c + 1, version).await?;
            }
            // A checkpoint newer than the snapshot (written meanwhile):
            // the kernel finds the one the snapshot's version can use.
            Some(_) if !tracked => state.base = Some(kernel_snapshot(log, version).await?),
            None if log.read_commit_entry(0).await?.is_some() => {
                state.replay(log, 0, version).await?;
            }
            // No hint and no first commit: let the kernel find the
            // checkpoint, and look app ids up at the tip.
            _ if !tracked => state.base = Some(kernel_snapshot(log, version).await?),
            // A row-tracked table needs the high-water mark of the
            // checkpoint itself: find it in the listing.
            _ => {
                let c = latest_checkpoint_listed(log, version)
                    .await?
                    .ok_or_else(|| {
                        DeltaTableError::Generic(format!(
                            "no checkpoint and no first commit found for version {version}"
                        ))
                    })?;
                state.base = Some(kernel_snapshot(log, c).await?);
                state.high_water_mark = checkpoint_high_water_mark(log, c).await?;
                state.replay(log, c + 1, version).await?;
            }
        }
        if state.base.is_none() && state.tombstones.is_none() {
            // The whole log was replayed: no commit set the domain.
            state.tombstones = Some(None);
        }
        if state.in_commit_timestamp.is_none() {
            // The tip is a checkpoint: its commit file still holds the ICT.
            if let Some(bytes) = log.read_commit_entry(version as u64).await? {
                state.in_commit_timestamp = commit_ict(&lines(&bytes)?);
            }
        }
        Ok(state)
    }

    fn from_parts(version: i64, protocol: Protocol, metadata: Metadata) -> DeltaResult<Self> {
        let schema = metadata.parse_schema()?;
        let properties = TableProperties::from(metadata.configuration().iter());
        Ok(TableState {
            version,
            protocol,
            metadata,
            schema,
            properties,
            txns: HashMap::new(),
            base: None,
            in_commit_timestamp: None,
            high_water_mark: None,
            tombstones: None,
            refreshed: Instant::now(),
        })
    }

    /// Applies commits `from..=to` (read concurrently, applied in order)
    /// to the txn versions; protocol and metadata are already those of `to`.
    async fn replay(&mut self, log: &dyn LogStore, from: i64, to: i64) -> DeltaResult<()> {
        let mut commits = futures::stream::iter(from..=to)
            .map(|v| async move {
                Ok::<_, DeltaTableError>((v, log.read_commit_entry(v as u64).await?))
            })
            .buffered(REPLAY_CONCURRENCY);
        while let Some((v, bytes)) = commits.try_next().await? {
            let bytes = bytes.ok_or_else(|| {
                DeltaTableError::Generic(format!("commit {v} is missing from the log"))
            })?;
            let lines = lines(&bytes)?;
            self.in_commit_timestamp = commit_ict(&lines);
            for line in lines {
                if let Some(t) = line.txn {
                    self.txns.insert(t.app_id, Some(t.version));
                }
                if let Some(d) = &line.domain {
                    self.high_water_mark = d.high_water_mark()?.or(self.high_water_mark);
                    if let Some(t) = d.tombstones() {
                        self.tombstones = Some(t);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the commit `self.version + 1`.
    pub(super) fn apply(&mut self, bytes: &[u8]) -> DeltaResult<Changes> {
        let mut changes = Changes::default();
        let mut protocol = None;
        let mut metadata = None;
        let lines = lines(bytes)?;
        let ict = commit_ict(&lines);
        let mut high_water_mark = self.high_water_mark;
        for line in lines {
            if let Some(d) = &line.domain {
                high_water_mark = d.high_water_mark()?.or(high_water_mark);
                if let Some(t) = d.tombstones() {
                    self.tombstones = Some(t);
                    changes.tombstones = true;
                }
            }
            if let Some(p) = line.protocol {
                protocol = Some(p);
            }
            if let Some(m) = line.metadata {
                metadata = Some(m);
            }
            if let Some(t) = line.txn {
                self.txns.insert(t.app_id.clone(), Some(t.version));
                changes.app_ids.push(t.app_id);
            }
            changes.files |= line.add.is_some() || line.remove.is_some();
            changes.added.extend(line.add);
            if let Some(r) = line.remove {
                let path = percent_encoding::percent_decode_str(&r.path).decode_utf8_lossy();
                changes.removed.push(path.into_owned());
            }
        }
        if let Some(m) = metadata {
            self.schema = m.parse_schema()?;
            self.properties = TableProperties::from(m.configuration().iter());
            self.metadata = m;
            changes.metadata = true;
        }
        if let Some(p) = protocol {
            self.protocol = p;
            changes.protocol = true;
        }
        self.in_commit_timestamp = ict;
        self.high_water_mark = high_water_mark;
        self.version += 1;
        Ok(changes)
    }

    /// Reads the commits made since the last refresh; what they changed.
    pub(super) async fn refresh(&mut self, log: &dyn LogStore) -> DeltaResult<Changes> {
        let stale = self.properties.log_retention_duration() / 2;
        if self.refreshed.elapsed() >= stale {
            *self = Self::load(log).await?;
            // What moved in the gap is unknown: everything counts as changed.
            return Ok(Changes {
                protocol: true,
                metadata: true,
                app_ids: self.txns.keys().cloned().collect(),
                files: true,
                unknown_files: true,
                tombstones: true,
                ..Changes::default()
            });
        }
        let mut changes = Changes::default();
        while let Some(bytes) = log.read_commit_entry(self.version as u64 + 1).await? {
            changes.merge(self.apply(&bytes)?);
        }
        self.refreshed = Instant::now();
        Ok(changes)
    }

    /// The stored txn version of each of `app_ids` as of [`Self::version`].
    pub(super) async fn txn_versions(
        &mut self,
        log: &dyn LogStore,
        app_ids: &[String],
    ) -> DeltaResult<Vec<Option<i64>>> {
        let missing: Vec<String> = app_ids
            .iter()
            .filter(|id| !self.txns.contains_key(*id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Some(base) = self.base.clone() {
                let engine = log.engine(None);
                let found = tokio::task::spawn_blocking(move || {
                    missing
                        .into_iter()
                        .map(|id| {
                            let v = base.get_app_id_version(&id, engine.as_ref())?;
                            Ok((id, v))
                        })
                        .collect::<Result<Vec<_>, delta_kernel::Error>>()
                })
                .await
                .map_err(|e| DeltaTableError::Generic(e.to_string()))??;
                self.txns.extend(found);
            }
        }
        Ok(app_ids
            .iter()
            .map(|id| self.txns.get(id).copied().flatten())
            .collect())
    }

    /// The `inlet.tombstones` domain's configuration as of
    /// [`Self::version`] (`None`: not set), looked up in the base snapshot
    /// (its checkpoint) once when no commit after it set the domain.
    pub(super) async fn tombstone_domain(
        &mut self,
        log: &dyn LogStore,
    ) -> DeltaResult<Option<String>> {
        if let Some(known) = &self.tombstones {
            return Ok(known.clone());
        }
        let found = match self.base.clone() {
            Some(base) => {
                let engine = log.engine(None);
                tokio::task::spawn_blocking(move || {
                    base.get_domain_metadata(super::tombstones::DOMAIN, engine.as_ref())
                })
                .await
                .map_err(|e| DeltaTableError::Generic(e.to_string()))??
            }
            None => None,
        };
        self.tombstones = Some(found.clone());
        Ok(found)
    }

    /// The version the state is at.
    pub(super) fn version(&self) -> i64 {
        self.version
    }

    /// The `inCommitTimestamp` of the latest commit, if it has one.
    pub(super) fn in_commit_timestamp(&self) -> Option<i64> {
        self.in_commit_timestamp
    }

    /// The row id high-water mark as of the latest commit (see the field).
    pub(super) fn high_water_mark(&self) -> Option<i64> {
        self.high_water_mark
    }

    pub(super) fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    pub(super) fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The table schema (parsed from the metadata).
    pub(super) fn schema(&self) -> &StructType {
        &self.schema
    }

    /// The table properties (parsed from the metadata).
    pub(super) fn properties(&self) -> &TableProperties {
        &self.properties
    }

    /// Whether inlet writes a checkpoint after committing `version`: every
    /// `delta.checkpointInterval` versions, so that concurrent writers do not
    /// all write one.
    pub(super) fn checkpoint_due(&self, version: i64) -> bool {
        let interval = self.properties.checkpoint_interval().get() as i64;
        version > 0 && version % interval == 0
    }
}

fn lines(bytes: &[u8]) -> DeltaResult<Vec<LogLine>> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice::<LogLine>(l).map_err(|e| DeltaTableError::InvalidJsonLog {
                json_err: e,
                line: String::from_utf8_lossy(l).into_owned(),
                version: 0,
            })
        })
        .collect()
}

/// The `inCommitTimestamp` of a commit's `commitInfo`, if it has one.
fn commit_ict(lines: &[LogLine]) -> Option<i64> {
    lines
        .iter()
        .find_map(|l| l.commit_info.as_ref())
        .and_then(|c| c.in_commit_timestamp)
}

/// The files of the checkpoint of `version` (classic, multi-part or v2
/// top-level; sidecars hold no domain metadata).
async fn checkpoint_files(log: &dyn LogStore, version: i64) -> DeltaResult<Vec<Path>> {
    let store = log.object_store(None);
    let prefix = format!("{version:020}.checkpoint");
    let offset = Path::from(format!("_delta_log/{version:020}"));
    let files: Vec<Path> = store
        .list_with_offset(Some(&Path::from("_delta_log")), &offset)
        .map_ok(|m| m.location)
        .try_filter(|p| {
            let ok = p.filename().is_some_and(|n| n.starts_with(&prefix));
            async move { ok }
        })
        .try_collect()
        .await?;
    Ok(files)
}

/// The newest checkpoint at or before `version`, from a listing of the log.
async fn latest_checkpoint_listed(log: &dyn LogStore, version: i64) -> DeltaResult<Option<i64>> {
    let store = log.object_store(None);
    let names: Vec<Path> = store
        .list(Some(&Path::from("_delta_log")))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    Ok(names
        .iter()
        .filter_map(|p| p.filename())
        .filter(|n| n.contains(".checkpoint"))
        .filter_map(|n| n.split('.').next()?.parse::<i64>().ok())
        .filter(|v| *v <= version)
        .max())
}

/// The row id high-water mark the checkpoint of `version` holds. The
/// checkpoint is read whole, once, when a row-tracked table is loaded.
async fn checkpoint_high_water_mark(log: &dyn LogStore, version: i64) -> DeltaResult<Option<i64>> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let store = log.object_store(None);
    let files = checkpoint_files(log, version).await?;
    if files.is_empty() {
        return Err(DeltaTableError::Generic(format!(
            "the checkpoint of version {version} is not in the log"
        )));
    }
    let mut mark = None;
    for path in files {
        let bytes = store.get(&path).await?.bytes().await?;
        if path.as_ref().ends_with(".json") {
            for line in lines(&bytes)? {
                if let Some(d) = line.domain {
                    mark = d.high_water_mark()?.or(mark);
                }
            }
            continue;
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        let Some(index) = builder
            .schema()
            .fields()
            .iter()
            .position(|f| f.name() == "domainMetadata")
        else {
            continue;
        };
        let mask =
            deltalake::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let json = arrow_json_rows(&batch)?;
            for row in json {
                let Some(d) = row.get("domainMetadata") else {
                    continue;
                };
                if let Ok(d) = serde_json::from_value::<DomainLine>(d.clone()) {
                    mark = d.high_water_mark()?.or(mark);
                }
            }
        }
    }
    Ok(mark)
}

/// The rows of a batch as JSON objects.
fn arrow_json_rows(
    batch: &arrow::array::RecordBatch,
) -> DeltaResult<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| DeltaTableError::Generic(e.to_string()))
}

/// The version in `_delta_log/_last_checkpoint`, if there is one.
async fn last_checkpoint(log: &dyn LogStore) -> DeltaResult<Option<i64>> {
    let store = log.object_store(None);
    let path = Path::from("_delta_log/_last_checkpoint");
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A hint that cannot be read is no hint.
    Ok(serde_json::from_slice::<CheckpointHint>(&bytes)
        .ok()
        .map(|h| h.version))
}

/// The table root as the kernel wants it (ending in `/`).
pub(super) fn kernel_root(log: &dyn LogStore) -> url::Url {
    let mut root = log.root_url().clone();
    if !root.path().ends_with('/') {
        let path = format!("{}/", root.path());
        root.set_path(&path);
    }
    root
}

/// A kernel snapshot at `version` (no files are read).
/// The clustering columns (physical name parts) of the `delta.clustering`
/// domain as of `version`; `None` when the table has no such domain (not
/// clustered, or Databricks' preview `delta.liquid` domain). One log
/// replay by the kernel, made at open only when `cluster_by` is set.
pub(super) async fn clustering_columns(
    log: &dyn LogStore,
    version: i64,
) -> DeltaResult<Option<Vec<Vec<String>>>> {
    let snapshot = kernel_snapshot(log, version).await?;
    let engine = log.engine(None);
    tokio::task::spawn_blocking(move || snapshot.get_physical_clustering_columns(engine.as_ref()))
        .await
        .map_err(|e| DeltaTableError::Generic(e.to_string()))?
        .map_err(DeltaTableError::from)
        .map(|c| c.map(|cols| cols.into_iter().map(|c| c.into_inner()).collect()))
}

async fn kernel_snapshot(log: &dyn LogStore, version: i64) -> DeltaResult<Arc<KernelSnapshot>> {
    let engine = log.engine(None);
    let root = kernel_root(log);
    tokio::task::spawn_blocking(move || {
        KernelSnapshot::builder_for(root)
            .at_version(version as u64)
            .build(engine.as_ref())
    })
    .await
    .map_err(|e| DeltaTableError::Generic(e.to_string()))?
    .map_err(DeltaTableError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOL: &str = r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#;

    fn metadata(config: &str) -> String {
        format!(
            r#"{{"metaData":{{"id":"t","format":{{"provider":"parquet","options":{{}}}},"schemaString":"{{\"type\":\"struct\",\"fields\":[{{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{{}}}}]}}","partitionColumns":[],"configuration":{{{config}}},"createdTime":1}}}}"#
        )
    }

    fn state() -> TableState {
        let mut lines = lines(format!("{PROTOCOL}\n{}", metadata("")).as_bytes()).unwrap();
        let m = lines.pop().unwrap().metadata.unwrap();
        let p = lines.pop().unwrap().protocol.unwrap();
        TableState::from_parts(0, p, m).unwrap()
    }

    fn txn(id: &str, v: i64) -> String {
        format!(r#"{{"txn":{{"appId":"{id}","version":{v},"lastUpdated":1}}}}"#)
    }

    const INFO: &str = r#"{"commitInfo":{"timestamp":1,"operation":"WRITE"}}"#;
    const ADD: &str = r#"{"add":{"path":"a.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true,"stats":"{\"numRecords\":1}"}}"#;

    #[test]
    fn a_foreign_commit_advancing_our_app_id_is_seen() {
        let mut s = state();
        let c = s
            .apply(format!("{INFO}\n{ADD}\n{}\n{}", txn("a:t:0", 9), txn("b:t:0", 3)).as_bytes())
            .unwrap();
        assert_eq!(s.version(), 1);
        assert_eq!(c.app_ids, ["a:t:0", "b:t:0"]);
        assert!(c.conflicts_with(&["a:t:0".into()]));
        assert!(!c.conflicts_with(&["a:t:1".into()]));
        let c = s
            .apply(format!("{INFO}\n{}", txn("a:t:0", 12)).as_bytes())
            .unwrap();
        assert!(!c.protocol && !c.metadata);
        assert_eq!(s.txns["a:t:0"], Some(12));
        assert_eq!(s.txns["b:t:0"], Some(3));
    }

    #[test]
    fn a_protocol_or_metadata_change_is_seen_and_conflicts() {
        let mut s = state();
        let c = s
            .apply(
                format!(r#"{INFO}
{{"protocol":{{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}}}"#)
                .as_bytes(),
            )
            .unwrap();
        assert!(c.protocol && !c.metadata);
        assert!(c.conflicts_with(&[]));
        assert_eq!(s.protocol().min_writer_version(), 7);
        let c = s
            .apply(format!("{INFO}\n{}", metadata(r#""delta.checkpointInterval":"10""#)).as_bytes())
            .unwrap();
        assert!(c.metadata && c.conflicts_with(&["x".into()]));
        assert_eq!(
            s.properties().checkpoint_interval.map(|n| n.get()),
            Some(10)
        );
        assert_eq!(s.version(), 2);
    }

    #[test]
    fn checkpoints_fall_on_multiples_of_the_interval() {
        let mut s = state();
        assert!(!s.checkpoint_due(0));
        assert!(!s.checkpoint_due(99));
        assert!(s.checkpoint_due(100));
        assert!(s.checkpoint_due(300));
        s.apply(format!("{INFO}\n{}", metadata(r#""delta.checkpointInterval":"3""#)).as_bytes())
            .unwrap();
        assert!(s.checkpoint_due(3) && s.checkpoint_due(6));
        assert!(!s.checkpoint_due(4));
    }

    #[test]
    fn a_broken_line_is_an_error_not_skipped() {
        let mut s = state();
        assert!(s.apply(b"{\"txn\": 1}").is_err());
        assert_eq!(s.version(), 0);
    }
}
