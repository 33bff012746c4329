//! Commits of table changes other than appends (migrations: new columns,
//! properties) on inlet's own commit path, for tables whose writer features
//! delta-rs' commit refuses or would not honour (in-commit timestamps, row
//! tracking, domains, liquid clustering, identity columns, type widening).
//! The commit is stamped for the table's features as inlet's appends are
//! (`commitInfo` first with its in-commit timestamp), and written
//! conditionally as the version after the one the change was planned on:
//! a commit landing in between makes it a conflict, which the migrator
//! re-reads and plans again.

use std::collections::HashMap;

use bytes::Bytes;
use delta_kernel::table_features::TableFeature;
use deltalake::kernel::transaction::{CommitConflictError, CommitData, TransactionError};
use deltalake::kernel::{Action, Protocol};
use deltalake::logstore::{CommitOrBytes, LogStore};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaResult, DeltaTableError};
use object_store::ObjectStoreExt as _;

use super::delta::{stamp, Stamp};
use super::state::TableState;

/// Whether a change of a table with this protocol must be committed by
/// inlet (delta-rs' commit path refuses or would break its features).
pub(crate) fn needs_own_commit(protocol: &Protocol) -> bool {
    let own = [
        TableFeature::InCommitTimestamp,
        TableFeature::RowTracking,
        TableFeature::DomainMetadata,
        TableFeature::ClusteredTable,
        TableFeature::Unknown("liquid".to_owned()),
        TableFeature::IdentityColumns,
        TableFeature::TypeWidening,
        TableFeature::TypeWideningPreview,
    ];
    protocol.writer_features().is_some_and(|fs| {
        fs.iter()
            .any(|f| own.iter().any(|o| o == f || o.to_string() == f.to_string()))
    })
}

/// The commit as the log store takes it: the bytes for stores with a
/// conditional put, else a temporary file to copy (as delta-rs does).
pub(super) async fn staged(
    log: &dyn LogStore,
    bytes: Bytes,
    operation: uuid::Uuid,
) -> DeltaResult<CommitOrBytes> {
    if ["LakeFSLogStore", "DefaultLogStore"].contains(&log.name().as_str()) {
        return Ok(CommitOrBytes::LogBytes(bytes));
    }
    let path = deltalake::Path::from_iter([
        "_delta_log",
        &format!("_commit_{}.json.tmp", uuid::Uuid::new_v4()),
    ]);
    log.object_store(Some(operation))
        .put(&path, bytes.into())
        .await?;
    Ok(CommitOrBytes::TmpCommit(path))
}

/// Commits `actions` as the version after `read_version` (the version the
/// change was planned on); a conflict when the table moved meanwhile.
/// Returns the version written.
pub(crate) async fn commit(
    log: &dyn LogStore,
    read_version: i64,
    actions: Vec<Action>,
    operation: DeltaOperation,
    app_metadata: HashMap<String, serde_json::Value>,
) -> DeltaResult<i64> {
    let conflict = || DeltaTableError::Transaction {
        source: TransactionError::CommitConflict(CommitConflictError::MetadataChanged),
    };
    let state = TableState::load(log).await?;
    if state.version() != read_version {
        return Err(conflict());
    }
    let version = read_version + 1;
    let mut data = CommitData::new(actions, operation, app_metadata, Vec::new());
    stamp(
        &mut data.actions,
        &Stamp::of(&state),
        version,
        chrono::Utc::now().timestamp_millis(),
    )
    .map_err(DeltaTableError::Generic)?;
    let bytes = data
        .get_bytes()
        .map_err(|source| DeltaTableError::Transaction { source })?;
    let operation = uuid::Uuid::new_v4();
    let commit = staged(log, bytes, operation).await?;
    log.write_commit_entry(version as u64, commit, operation)
        .await
        .map_err(|source| DeltaTableError::Transaction { source })?;
    Ok(version)
}
