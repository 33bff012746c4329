//! Data loss, per Spark's `failOnDataLoss`: the next offset inlet is to read
//! of a partition lies below the partition's first available offset (the
//! low watermark), because retention, `deleteRecords` or an unclean leader
//! election removed offsets inlet never read. And its mirror image: a stored
//! offset past the partition's end (the topic was deleted and recreated, or
//! truncated), where reading on would skip the offsets written again.
//!
//! Checked wherever a partition starts: at assignment, for `--available-now`
//! and `replay`, and when the broker answers a fetch with
//! OFFSET_OUT_OF_RANGE (librdkafka runs with `auto.offset.reset=error`, so it
//! never jumps ahead on its own).

use std::fmt::Write as _;

use crate::fault::{Classify, Fault};
use crate::record::{KafkaRecord, LostRange, Next};

/// The header of a `lost` quarantine row that holds the last lost offset
/// (as decimal text); the row's `offset` is the first lost offset.
pub const LOST_LAST_OFFSET_HEADER: &str = "inlet.lost.last_offset";

/// Checks where a partition starts against its watermarks `(low, high)`.
/// `end` bounds a bounded run's range (exclusive; `i64::MAX` otherwise).
/// `Ok(None)`: nothing lost, read from `next`.
pub fn check(
    source: &str,
    topic: &str,
    partition: i32,
    next: Next,
    (low, high): (i64, i64),
    end: i64,
) -> Result<Option<LostRange>, PastEnd> {
    let at = next.offset();
    if at > high {
        return Err(PastEnd {
            topic: topic.to_string(),
            partition,
            next,
            first_available: low,
            high,
        });
    }
    if at >= low || at >= end {
        return Ok(None);
    }
    Ok(Some(LostRange {
        source: source.to_string(),
        topic: topic.to_string(),
        partition,
        next,
        first_available: low,
        last: low.min(end) - 1,
    }))
}

/// The next offset to read lies past the partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastEnd {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Where reading was to go on.
    pub next: Next,
    /// Low watermark.
    pub first_available: i64,
    /// High watermark.
    pub high: i64,
}

/// How a run hit data loss, for the way on it suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `run` or `run --available-now`, under the pipeline's app id.
    Ingest,
    /// `replay`, under its own app id.
    Replay,
}

/// Data loss that stops the run: the operator decides how to go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataLossError {
    /// Offsets were deleted before inlet read them, with
    /// `fail_on_data_loss = true`.
    #[error("{}", lost_message(.ranges, .kind))]
    Lost {
        /// Every lost range found (one per partition).
        ranges: Vec<LostRange>,
        /// What ran.
        kind: RunKind,
    },
    /// A stored (or requested) offset is past the partition's end.
    #[error("{}", past_end_message(.0))]
    PastEnd(PastEnd),
}

impl Classify for DataLossError {
    fn fault(&self) -> Fault {
        Fault::Operator
    }
}

fn past_end_message(e: &PastEnd) -> String {
    let head = format!(
        "data loss: {}/{} is to be read from offset {} ({}), past the partition's end \
         (offsets {}..{} exist)",
        e.topic,
        e.partition,
        e.next.offset(),
        e.next,
        e.first_available,
        e.high
    );
    match e.next {
        Next::Stored(_) => format!(
            "{head}: the topic was probably recreated or truncated (deleted and created again, \
             or cut short by an unclean leader election), and reading on would skip the offsets \
             written again. Nothing was \
             written for this partition. fail_on_data_loss does not apply (a stored offset \
             cannot go back): ingest the topic under a new app_id or into a new table"
        ),
        Next::Requested(_) => format!(
            "{head}. Nothing was written for this partition: start at an offset the partition \
             holds (starting_offsets, or replay --from)"
        ),
    }
}

fn lost_message(ranges: &[LostRange], kind: &RunKind) -> String {
    let mut s = String::from("data loss: ");
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = write!(
            s,
            "{}/{} was to be read from offset {} ({}), but its first available offset is {}: \
             offsets {}..={} ({} offsets) were deleted by the broker (retention, deleteRecords \
             or an unclean leader election) before inlet read them",
            r.topic,
            r.partition,
            r.first(),
            r.next,
            r.first_available,
            r.first(),
            r.last,
            r.count()
        );
    }
    s.push_str(". Nothing was written for these partitions. To go on, either ");
    let from = from_json(ranges);
    match kind {
        RunKind::Replay => {
            let _ = write!(s, "replay what is left: --from '{from}'");
        }
        RunKind::Ingest => {
            let _ = write!(
                s,
                "read what is left without moving this pipeline's offsets: \
                 `inlet replay -c <config> --from '{from}'`"
            );
        }
    }
    let mut sources: Vec<&str> = ranges.iter().map(|r| r.source.as_str()).collect();
    sources.dedup();
    let _ = write!(
        s,
        ", or set fail_on_data_loss = false in [sources.{}] to go on from the first available \
         offset and record each lost range in the quarantine table (stage `lost`)",
        sources.join("], [sources.")
    );
    s
}

/// `{"topic":{"partition":first available,...},...}`, for `--from`.
fn from_json(ranges: &[LostRange]) -> String {
    let mut by_topic: std::collections::BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for r in ranges {
        by_topic
            .entry(&r.topic)
            .or_default()
            .insert(r.partition.to_string(), r.first_available.into());
    }
    serde_json::to_string(&by_topic).unwrap_or_default()
}

/// A lost range as the record its quarantine row is built from: the first
/// lost offset, no key or value, the last lost offset in a header.
#[derive(Debug)]
pub struct LostRecord<'a> {
    range: &'a LostRange,
    last: String,
}

impl<'a> LostRecord<'a> {
    /// The record of `range`.
    pub fn new(range: &'a LostRange) -> Self {
        LostRecord {
            range,
            last: range.last.to_string(),
        }
    }
}

impl KafkaRecord for LostRecord<'_> {
    fn topic(&self) -> &str {
        &self.range.topic
    }

    fn partition(&self) -> i32 {
        self.range.partition
    }

    fn offset(&self) -> i64 {
        self.range.first()
    }

    fn timestamp_ms(&self) -> Option<i64> {
        None
    }

    fn key(&self) -> Option<&[u8]> {
        None
    }

    fn value(&self) -> Option<&[u8]> {
        None
    }

    fn for_each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>)) {
        f(LOST_LAST_OFFSET_HEADER, Some(self.last.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_low_watermark_is_lost_up_to_it_or_the_range_end() {
        let lost = check(
            "s",
            "t",
            0,
            Next::Stored(9_999),
            (190_320, 210_000),
            i64::MAX,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (lost.first(), lost.last, lost.count()),
            (10_000, 190_319, 180_320)
        );
        // A replay ending before the low watermark lost only its own range.
        let lost = check("s", "t", 0, Next::Requested(100), (1_000, 2_000), 500)
            .unwrap()
            .unwrap();
        assert_eq!((lost.first(), lost.last), (100, 499));
        // At or above the low watermark, or past the range: nothing lost.
        for (next, end) in [
            (Next::Stored(189_999), i64::MAX),
            (Next::Requested(600), 500),
        ] {
            assert_eq!(check("s", "t", 0, next, (190_000, 210_000), end), Ok(None));
        }
        // Caught up: stored + 1 == high is fine.
        assert_eq!(
            check("s", "t", 0, Next::Stored(9), (0, 10), i64::MAX),
            Ok(None)
        );
    }

    #[test]
    fn past_the_end_is_an_error_whatever_the_setting() {
        let e = check("s", "t", 3, Next::Stored(1_000), (0, 50), i64::MAX).unwrap_err();
        let msg = DataLossError::PastEnd(e).to_string();
        assert!(msg.contains("t/3") && msg.contains("1001"), "{msg}");
        assert!(msg.contains("new app_id"), "{msg}");
    }

    #[test]
    fn the_error_names_partition_range_and_both_ways_on() {
        let r = check(
            "orders",
            "o",
            2,
            Next::Stored(9_999),
            (190_320, 210_000),
            i64::MAX,
        )
        .unwrap()
        .unwrap();
        let e = DataLossError::Lost {
            ranges: vec![r],
            kind: RunKind::Ingest,
        };
        assert_eq!(e.fault(), Fault::Operator);
        let msg = e.to_string();
        for needle in [
            "o/2",
            "table stores offset 9999",
            "first available offset is 190320",
            "10000..=190319",
            "180320 offsets",
            r#"--from '{"o":{"2":190320}}'"#,
            "fail_on_data_loss = false in [sources.orders]",
        ] {
            assert!(msg.contains(needle), "{needle} in {msg}");
        }
    }
}
