//! The Delta side: opening or creating tables, reading stored offsets, and
//! committing data together with the offsets it covers.

mod attempt;
mod checkpoint;
mod classify;
mod delta;
mod features;
mod state;

pub use attempt::{commit_id, Patience, COMMIT_ID_KEY};
pub use classify::{delta_fault, store_fault};
pub use delta::{writer_properties, CommitOutcome, DeltaSink, PartitionProgress, WriterFactory};

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

/// Checks every table of `cfg` that exists, and its quarantine table, the
/// way a run opens them (see [`DeltaSink::check_existing`]); one line per
/// table saying what a run will do with it.
pub async fn check_tables(cfg: &crate::config::Config) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (name, tc) in &cfg.tables {
        let mut tables = vec![(name.clone(), tc.clone())];
        if let Some(uri) = &tc.quarantine_uri {
            tables.push((
                format!("{name}_quarantine"),
                crate::quarantine::table_config(tc, uri),
            ));
        }
        for (name, tc) in tables {
            lines.push(match DeltaSink::check_existing(&name, &tc).await? {
                Some(v) => format!("table `{name}` at {}: version {v}, writable", tc.uri),
                None => format!(
                    "table `{name}` at {}: not there yet, a run creates it",
                    tc.uri
                ),
            });
        }
    }
    Ok(lines)
}

/// Result alias for the sink.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// The Delta `txn` appId under which a partition's progress is stored:
/// `<app_id>:<topic>:<partition>`. Topic names cannot contain `:`, and app
/// ids are validated not to, so the id is unambiguous.
pub fn txn_app_id(app_id: &str, topic: &str, partition: i32) -> String {
    format!("{app_id}:{topic}:{partition}")
}
