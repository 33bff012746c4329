//! Retrying against the object store: the backoff between commit attempts,
//! finding a commit whose answer was lost, and patience for table opens and
//! stored-offset reads.
//!
//! A commit attempt can land and still fail: the response to the log PUT is
//! lost (the store's client then retries the conditional PUT and hears
//! "already exists" and reads its own commit in as a concurrent one that
//! stored the batch's app ids). Every attempt therefore writes a unique id into its
//! `commitInfo` (`inlet.commitId`), and after a failed attempt the commits
//! made since the attempt's read version (and only those) are searched for
//! it. Found, the batch is committed at that version.

use std::sync::Arc;
use std::time::Duration;

use deltalake::logstore::LogStore;
use deltalake::DeltaTableError;
use serde::Deserialize;
use tracing::warn;

use super::{Result, SinkError};
use crate::config::CommitConfig;
use crate::fault::{Backoff, Classify, GaveUp, Shutdown};
use crate::observability::events::CommitRetried;
use crate::observability::{InternalEvent, Metrics};

/// The `commitInfo` key holding the id of the inlet commit attempt.
pub const COMMIT_ID_KEY: &str = "inlet.commitId";

/// The backoff of a commit loop, bounded by `commit.max_attempts`.
fn backoff(retry: &CommitConfig) -> Backoff {
    Backoff::new(retry.retry_backoff, retry.max_backoff)
        .with_max_attempts(retry.max_attempts.saturating_sub(1))
}

/// Waits between commit attempts, reporting each failure.
pub(super) struct Retrier {
    table: String,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    attempt: u32,
    backoff: Backoff,
}

impl Retrier {
    pub(super) fn new(
        table: &str,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        retry: &CommitConfig,
    ) -> Self {
        Retrier {
            table: table.to_string(),
            metrics,
            shutdown,
            attempt: 0,
            backoff: backoff(retry),
        }
    }

    /// Records a failed attempt, then waits before the next one; an error
    /// once the attempts are used up or shutdown cuts the wait short.
    pub(super) async fn failed(&mut self, error: String) -> Result<()> {
        self.attempt += 1;
        CommitRetried {
            table: &self.table,
            attempt: self.attempt,
            error: &error,
        }
        .emit(&self.metrics);
        match self.backoff.wait(&self.shutdown).await {
            Ok(_) => Ok(()),
            Err(GaveUp::Exhausted) => Err(SinkError::RetriesExhausted {
                table: self.table.clone(),
                attempts: self.attempt,
                last: error,
            }),
            Err(GaveUp::Shutdown) => Err(SinkError::Interrupted {
                table: self.table.clone(),
                last: error,
            }),
        }
    }
}

/// One attempt whose outcome is not known yet.
#[derive(Debug)]
struct Sent {
    id: String,
    /// The table version the attempt read: it can only have landed after it.
    read_version: i64,
    /// Rows the attempt carried.
    rows: usize,
}

/// The attempts of one batch, to recognise one that landed although its
/// call failed.
#[derive(Debug)]
pub(super) struct Attempts {
    batch: uuid::Uuid,
    sent: Vec<Sent>,
}

impl Attempts {
    pub(super) fn new() -> Self {
        Attempts {
            batch: uuid::Uuid::new_v4(),
            sent: Vec::new(),
        }
    }

    /// Registers the next attempt and returns its commit id.
    pub(super) fn next(&mut self, read_version: i64, rows: usize) -> String {
        let id = format!("{}-{}", self.batch, self.sent.len() + 1);
        self.sent.push(Sent {
            id: id.clone(),
            read_version,
            rows,
        });
        id
    }

    /// The version and rows of an attempt found among the commits after the
    /// earliest read version of any attempt, up to `latest`.
    pub(super) async fn find(
        &self,
        log: &dyn LogStore,
        latest: i64,
    ) -> std::result::Result<Option<(i64, usize)>, DeltaTableError> {
        let Some(from) = self.sent.iter().map(|s| s.read_version + 1).min() else {
            return Ok(None);
        };
        for version in from.max(0)..=latest {
            let Some(bytes) = log.read_commit_entry(version as u64).await? else {
                continue;
            };
            let Some(id) = commit_id(&bytes) else {
                continue;
            };
            if let Some(s) = self.sent.iter().find(|s| s.id == id) {
                return Ok(Some((version, s.rows)));
            }
        }
        Ok(None)
    }
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(rename = "commitInfo")]
    commit_info: Option<CommitInfoId>,
}

#[derive(Deserialize)]
struct CommitInfoId {
    #[serde(rename = "inlet.commitId")]
    id: Option<String>,
}

/// The inlet commit id in the `commitInfo` of a commit file, if any.
pub fn commit_id(commit: &[u8]) -> Option<String> {
    commit
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<LogLine>(l).ok())
        .find_map(|l| l.commit_info)
        .and_then(|c| c.id)
}

/// Patience with the environment outside the commit loop (opening a table,
/// reading stored offsets): retries what [`Classify`] calls retryable, with
/// the `[commit]` backoff, until the attempts are used up or shutdown.
#[derive(Debug)]
pub struct Patience {
    what: String,
    backoff: Backoff,
    shutdown: Shutdown,
}

impl Patience {
    /// Patience for `what` (for the log line), per `retry`.
    pub fn new(what: impl Into<String>, retry: &CommitConfig, shutdown: &Shutdown) -> Self {
        Patience {
            what: what.into(),
            backoff: backoff(retry),
            shutdown: shutdown.clone(),
        }
    }

    /// Whether to try again after `error`, having waited; false when the
    /// error is not the environment's, or patience is used up.
    pub async fn again(&mut self, error: &SinkError) -> bool {
        let Some(d) = self.delay(error) else {
            return false;
        };
        self.shutdown.sleep(d).await
    }

    /// Like [`Patience::again`], on a plain thread.
    pub fn again_blocking(&mut self, error: &SinkError) -> bool {
        let Some(d) = self.delay(error) else {
            return false;
        };
        self.shutdown.sleep_blocking(d)
    }

    fn delay(&mut self, error: &SinkError) -> Option<Duration> {
        if !error.is_retryable() || self.shutdown.is_triggered() {
            return None;
        }
        let d = self.backoff.next_delay()?;
        warn!(
            error = %error,
            attempt = self.backoff.attempts(),
            retry_in_ms = d.as_millis() as u64,
            "{} failed; retrying", self.what
        );
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_id_is_read_from_commit_info_only() {
        let commit = br#"{"commitInfo":{"timestamp":1,"operation":"STREAMING UPDATE","inlet.commitId":"b-2"}}
{"add":{"path":"part-1.parquet","size":1,"inlet.commitId":"not this"}}
{"txn":{"appId":"a:t:0","version":9}}"#;
        assert_eq!(commit_id(commit).as_deref(), Some("b-2"));
        let foreign = br#"{"commitInfo":{"timestamp":1,"operation":"WRITE"}}
{"add":{"path":"x"}}"#;
        assert_eq!(commit_id(foreign), None);
        assert_eq!(commit_id(b""), None);
    }

    #[test]
    fn attempts_get_ids_of_their_own() {
        let mut a = Attempts::new();
        let one = a.next(4, 10);
        let two = a.next(5, 10);
        assert_ne!(one, two);
        assert!(one.starts_with(&a.batch.to_string()));
    }

    #[test]
    fn patience_retries_only_the_environment() {
        let shutdown = Shutdown::new();
        let retry = CommitConfig {
            retry_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_attempts: 3,
        };
        let mut p = Patience::new("opening", &retry, &shutdown);
        let operator = SinkError::Table {
            table: "t".into(),
            message: "bad".into(),
        };
        assert!(!p.again_blocking(&operator));
        let env = SinkError::Delta {
            table: "t".into(),
            source: DeltaTableError::VersionAlreadyExists(1),
        };
        assert!(p.again_blocking(&env));
        assert!(p.again_blocking(&env));
        assert!(!p.again_blocking(&env), "max_attempts 3 allows two waits");
        let mut p = Patience::new("opening", &retry, &shutdown);
        shutdown.trigger();
        assert!(!p.again_blocking(&env));
    }
}
