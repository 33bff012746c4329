//! A range of offsets the broker deleted before inlet read them, and where
//! reading was to go on; the checks that find them live in
//! the source (`source/loss.rs`).

use std::fmt;

/// Where a partition was to be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The table stores this offset; reading goes on after it.
    Stored(i64),
    /// No offset is stored: the start the source (or `--from`) asks for, or
    /// where this process began reading.
    Requested(i64),
}

impl Next {
    /// The next offset to read.
    pub fn offset(self) -> i64 {
        match self {
            Next::Stored(s) => s + 1,
            Next::Requested(o) => o,
        }
    }
}

impl fmt::Display for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::Stored(s) => write!(f, "the table stores offset {s}"),
            Next::Requested(o) => write!(f, "no offset is stored; reading was to start at {o}"),
        }
    }
}

/// Offsets of one partition deleted before inlet read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    /// The source (config section) reading the topic.
    pub source: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Where reading was to go on.
    pub next: Next,
    /// The partition's first available offset (low watermark).
    pub first_available: i64,
    /// Last lost offset: before the first available one, or before the end
    /// of a bounded range when that comes first.
    pub last: i64,
}

impl LostRange {
    /// First lost offset.
    pub fn first(&self) -> i64 {
        self.next.offset()
    }

    /// Offsets lost.
    pub fn count(&self) -> i64 {
        self.last - self.first() + 1
    }

    /// The quarantine row's error text.
    pub fn describe(&self) -> String {
        format!(
            "offsets {}..={} of {}/{} ({} offsets) were deleted by the broker (retention, \
             deleteRecords or an unclean leader election) before inlet read them; the first \
             available offset was {}",
            self.first(),
            self.last,
            self.topic,
            self.partition,
            self.count(),
            self.first_available
        )
    }
}
