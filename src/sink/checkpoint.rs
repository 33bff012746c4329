//! Checkpoints inlet writes: with the kernel's checkpoint writer, which
//! replays the log from the previous checkpoint and streams the surviving
//! actions into the Parquet file batch by batch, so memory stays bounded by
//! the replay's set of live paths rather than a file list with statistics.
//! Nothing of it is kept once the file is written.

use delta_kernel::Snapshot as KernelSnapshot;
use deltalake::logstore::LogStore;

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckpointError {
    /// The kernel failed to read the log or write the file.
    #[error("{0}")]
    Kernel(#[from] delta_kernel::Error),
    /// The blocking task did not finish.
    #[error("checkpoint task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CheckpointError {
    /// Whether the table cannot be checkpointed by the kernel at all (a
    /// feature it does not support): trying again at the next interval
    /// would fail the same way.
    pub(super) fn is_unsupported(&self) -> bool {
        fn unsupported(e: &delta_kernel::Error) -> bool {
            use delta_kernel::Error as E;
            match e {
                E::Backtraced { source, .. } => unsupported(source),
                E::Unsupported(_) | E::InvalidProtocol(_) => true,
                _ => false,
            }
        }
        matches!(self, CheckpointError::Kernel(e) if unsupported(e))
    }
}

/// Writes the checkpoint of `version` (a committed version).
pub(super) async fn write(log: &dyn LogStore, version: i64) -> Result<(), CheckpointError> {
    let engine = log.engine(None);
    let root = super::state::kernel_root(log);
    tokio::task::spawn_blocking(move || {
        let snapshot = KernelSnapshot::builder_for(root)
            .at_version(version as u64)
            .build(engine.as_ref())?;
        snapshot.checkpoint(engine.as_ref(), None)?;
        Ok(())
    })
    .await?
}
