//! The Delta side: opening or creating tables, reading stored offsets, and
//! committing data together with the offsets it covers.

mod attempt;
mod change;
mod checkpoint;
mod classify;
pub mod compaction;
mod create;
mod delta;
mod dv;
mod features;
mod history;
mod identity;
mod key_index;
mod mapping;
mod merge;
mod read_cache;
mod scope;
mod state;
pub mod storage;
mod tombstones;
mod writer;

pub use attempt::{commit_id, Patience, COMMIT_ID_KEY};
pub(crate) use change::{commit as commit_change, needs_own_commit};
pub use classify::{delta_fault, store_fault};
pub(crate) use create::{create as create_own, needs_own_create};
pub use delta::{writer_properties, CommitOutcome, DeltaSink, PartitionProgress};
pub(crate) use mapping::{map_added_columns, MAX_ID as MAX_COLUMN_ID};
pub use merge::{is_internal, MergeRules, DELETE_COLUMN, OFFSET_COLUMN};
pub use writer::{TableWriter, WriterFactory};

use deltalake::DeltaTableError;

/// Errors of the Delta sink, split by whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The table or its configuration cannot be used; the operator must act.
    #[error("table `{table}`: {message}")]
    Table {
        /// Table name from the config.
        table: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The store or the log failed; retried with backoff, then fatal.
    #[error("table `{table}`: {source}")]
    Delta {
        /// Table name from the config.
        table: String,
        /// The delta-rs error.
        #[source]
        source: DeltaTableError,
    },
    /// An invariant of inlet's own broke (a bug): stop loudly.
    #[error("table `{table}`: {message}")]
    Internal {
        /// Table name from the config.
        table: String,
        /// What broke.
        message: String,
    },
    /// Gave up after the configured number of attempts.
    #[error("table `{table}`: commit failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Table name from the config.
        table: String,
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
    /// Shutdown cut a retry short; nothing of the attempt is lost (a
    /// restart resumes from the table).
    #[error("table `{table}`: stopped while retrying: {last}")]
    Interrupted {
        /// Table name from the config.
        table: String,
        /// The last error seen.
        last: String,
    },
}

/// Result alias for the sink.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// The Delta `txn` appId under which a partition's progress is stored:
/// `<app_id>:<topic>:<partition>`. Topic names cannot contain `:`, and app
/// ids are validated not to, so the id is unambiguous.
pub fn txn_app_id(app_id: &str, topic: &str, partition: i32) -> String {
    format!("{app_id}:{topic}:{partition}")
}
