//! Whose fault an error is, decided once where the error arises, and the one
//! way inlet waits out the environment's faults.
//!
//! Every error type inlet handles implements [`Classify`]. What happens next
//! follows from the [`Fault`] alone, never from the error's text:
//!
//! | fault | examples | what inlet does |
//! | --- | --- | --- |
//! | [`Fault::Message`] | undecodable bytes, an unknown schema id after the registry's grace, a violated constraint | quarantine that message with its stage; the rest of its chunk lands |
//! | [`Fault::Environment`] | broker, registry or object store unreachable or erroring, commit conflicts | retry with [`Backoff`], never quarantine; keep polling so the group is kept |
//! | [`Fault::Operator`] | bad config, a table with features inlet cannot write, data lost to retention | stop before fetching, naming the key or table and the fix |
//! | [`Fault::Internal`] | an invariant broken, a decoder or transform failing for inlet's own reasons | stop loudly; the restart resumes from the table |
//!
//! ```
//! use std::time::Duration;
//! use inlet::fault::{Backoff, Shutdown};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let shutdown = Shutdown::new();
//! let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
//!     .with_max_attempts(3);
//! let mut tries = 0;
//! while backoff.wait(&shutdown).await.is_ok() {
//!     tries += 1;
//! }
//! assert_eq!(tries, 3);
//! # });
//! ```

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Whose fault an error is (Arroyo's `ErrorDomain`, with the message as a
/// domain of its own because a message's fault has its own remedy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The message's own bytes: quarantine it.
    Message,
    /// The broker, the registry or the object store: retry, never quarantine.
    Environment,
    /// The configuration, or a table inlet cannot write: stop before
    /// fetching, naming what to fix.
    Operator,
    /// A bug in inlet: stop loudly.
    Internal,
}

impl Fault {
    /// True when waiting and trying again can succeed.
    pub fn is_retryable(self) -> bool {
        self == Fault::Environment
    }

    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Message => "message",
            Fault::Environment => "environment",
            Fault::Operator => "operator",
            Fault::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows whose fault it is.
pub trait Classify {
    /// Whose fault this error is.
    fn fault(&self) -> Fault;

    /// True when retrying later can succeed.
    fn is_retryable(&self) -> bool {
        self.fault().is_retryable()
    }
}

/// Whose fault an error from the storage stack is (delta-rs, parquet,
/// object_store wrap each other's errors): the object store's or the file
/// system's answer anywhere in the chain makes it the environment's, except
/// a refusal of inlet's credentials or request, which is the operator's;
/// anything else (a schema that does not fit, a bad Parquet encoding) is
/// inlet's own.
pub fn storage_fault(error: &(dyn std::error::Error + 'static)) -> Fault {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(os) = e.downcast_ref::<object_store::Error>() {
            return match os {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. } => Fault::Operator,
                _ => Fault::Environment,
            };
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return Fault::Environment;
        }
        next = e.source();
    }
    Fault::Internal
}

/// Set on SIGTERM/SIGINT (or by a failed stage): every wait of inlet ends
/// early when it is, so a stop is never held up by a backoff.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A shutdown not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers the shutdown; every clone sees it.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether the shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once the shutdown is triggered.
    pub async fn triggered(&self) {
        self.0.cancelled().await;
    }

    /// Sleeps for `d` on a plain thread, in short steps; false when the
    /// shutdown cut the sleep short.
    pub fn sleep_blocking(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.is_triggered() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }

    /// Sleeps for `d`; false when the shutdown cut the sleep short.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.triggered() => false,
            _ = tokio::time::sleep(d) => !self.is_triggered(),
        }
    }
}

/// Why a [`Backoff`] gives no further attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GaveUp {
    /// The attempts or the deadline are used up.
    #[error("retries exhausted")]
    Exhausted,
    /// Shutdown was triggered while waiting.
    #[error("shutting down")]
    Shutdown,
}

/// Exponential backoff between attempts against the environment, bounded by
/// a number of attempts and/or a deadline, and cut short by [`Shutdown`].
/// The one backoff of inlet: commits, table opens, stored-offset reads,
/// registry lookups.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
    max_attempts: Option<u32>,
    deadline: Option<Instant>,
}

impl Backoff {
    /// Waits of `initial`, doubling up to `max`, without limit.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial,
            max: max.max(initial),
            attempts: 0,
            max_attempts: None,
            deadline: None,
        }
    }

    /// At most `n` waits.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// No wait that would end after `limit` from now.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.deadline = Some(Instant::now() + limit);
        self
    }

    /// Waits made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next wait, or `None` once the attempts or the deadline are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| self.attempts >= m) {
            return None;
        }
        let mut d = self.next;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            d = d.min(left);
        }
        self.attempts += 1;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }

    /// Waits before the next attempt.
    pub async fn wait(&mut self, shutdown: &Shutdown) -> Result<Duration, GaveUp> {
        let d = self.next_delay().ok_or(GaveUp::Exhausted)?;
        if shutdown.sleep(d).await {
            Ok(d)
        } else {
            Err(GaveUp::Shutdown)
        }
    }

    /// Like [`Backoff::wait`], on a plain thread.
    pub fn wait_blocking(&mut self, shutdown: &Shutdown) -> Result<Duration, GaveUp> {
        let d = self.next_delay().ok_or(GaveUp::Exhausted)?;
        if shutdown.sleep_blocking(d) {
            Ok(d)
        } else {
            Err(GaveUp::Shutdown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_stops_after_the_attempts() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350))
            .with_max_attempts(4);
        let waits: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(
            waits,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        assert_eq!(b.attempts(), 4);
    }

    #[test]
    fn a_deadline_bounds_the_waits() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10))
            .with_deadline(Duration::from_millis(30));
        let first = b.next_delay().expect("one wait");
        assert!(first <= Duration::from_millis(30), "{first:?}");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.next_delay(), None);
    }

    #[tokio::test]
    async fn shutdown_cuts_a_wait_short() {
        let shutdown = Shutdown::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.trigger();
        });
        let started = Instant::now();
        assert_eq!(b.wait(&shutdown).await, Err(GaveUp::Shutdown));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Blocking waits see it too, at once.
        assert_eq!(b.wait_blocking(&shutdown), Err(GaveUp::Shutdown));
    }

    #[test]
    fn storage_errors_are_classified_through_their_chain() {
        let store = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let parquet = parquet::errors::ParquetError::External(Box::new(store));
        let delta = deltalake::DeltaTableError::Parquet { source: parquet };
        assert_eq!(storage_fault(&delta), Fault::Environment);
        let denied = deltalake::DeltaTableError::ObjectStore {
            source: object_store::Error::PermissionDenied {
                path: "t/_delta_log".into(),
                source: "403".into(),
            },
        };
        assert_eq!(storage_fault(&denied), Fault::Operator);
        let schema = deltalake::DeltaTableError::Generic("schema mismatch".into());
        assert_eq!(storage_fault(&schema), Fault::Internal);
    }

    #[test]
    fn only_the_environment_is_retried() {
        for f in [Fault::Message, Fault::Operator, Fault::Internal] {
            assert!(!f.is_retryable(), "{f}");
        }
        assert!(Fault::Environment.is_retryable());
    }
}
