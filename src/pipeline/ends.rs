//! Where a bounded run stops reading each partition: the poll thread's
//! range-end decisions, apart from librdkafka (the poll thread pauses what
//! these say is done).

use std::collections::HashMap;

use crate::record::TopicPartition;

/// Where a message stands against its partition's range end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AtEnd {
    /// Before the last offset of the range: taken.
    Inside,
    /// The last offset of the range: taken, and the partition is done.
    Last,
    /// At or past the end (exclusive): the next run's; the partition is done.
    Beyond,
}

impl AtEnd {
    /// A message at `offset` of a partition whose range ends at `end`
    /// (exclusive; `i64::MAX` when unbounded).
    pub(super) fn of(offset: i64, end: i64) -> Self {
        if offset >= end {
            AtEnd::Beyond
        } else if offset + 1 >= end {
            AtEnd::Last
        } else {
            AtEnd::Inside
        }
    }

    /// Whether the partition is done reading.
    pub(super) fn ends_partition(self) -> bool {
        self != AtEnd::Inside
    }

    /// Whether the message belongs to the range.
    pub(super) fn taken(self) -> bool {
        self != AtEnd::Beyond
    }
}

/// The range end (exclusive) of each partition of a bounded run, and which
/// partitions are done. A continuous run has no ends: every partition is
/// read on and never done.
#[derive(Debug, Default)]
pub(super) struct RangeEnds {
    /// (end, done) per topic and partition.
    ends: HashMap<String, HashMap<i32, (i64, bool)>>,
    /// Partitions not done yet.
    open: usize,
    bounded: bool,
}

impl RangeEnds {
    /// The ends of a bounded run (`Some`), or none for a continuous one.
    pub(super) fn new(targets: Option<&HashMap<TopicPartition, i64>>) -> Self {
        let mut ends: HashMap<String, HashMap<i32, (i64, bool)>> = HashMap::new();
        for ((topic, p), end) in targets.into_iter().flatten() {
            ends.entry(topic.clone())
                .or_default()
                .insert(*p, (*end, false));
        }
        let open = ends.values().map(HashMap::len).sum();
        RangeEnds {
            ends,
            open,
            bounded: targets.is_some(),
        }
    }

    /// Whether this is a bounded run.
    pub(super) fn bounded(&self) -> bool {
        self.bounded
    }

    /// Where reading `topic`/`partition` ends (exclusive): `i64::MAX` when
    /// unbounded, `None` when a bounded run's range leaves it out.
    pub(super) fn end(&self, topic: &str, partition: i32) -> Option<i64> {
        if !self.bounded {
            return Some(i64::MAX);
        }
        self.ends
            .get(topic)
            .and_then(|m| m.get(&partition))
            .map(|(end, _)| *end)
    }

    /// Whether a bounded run is done with the partition.
    pub(super) fn is_done(&self, topic: &str, partition: i32) -> bool {
        self.ends
            .get(topic)
            .and_then(|m| m.get(&partition))
            .is_some_and(|(_, done)| *done)
    }

    /// Whether a fetch position `position` is at or past the partition's end
    /// (the end of a range that closes with control records or a compacted
    /// gap is found by its position, not by a message).
    pub(super) fn reached_at(&self, topic: &str, partition: i32, position: i64) -> bool {
        self.bounded
            && self
                .ends
                .get(topic)
                .and_then(|m| m.get(&partition))
                .is_some_and(|(end, _)| position >= *end)
    }

    /// Marks the partition done; true when it was in the range and not done
    /// before (the caller then pauses it).
    pub(super) fn mark_done(&mut self, topic: &str, partition: i32) -> bool {
        let Some(state) = self.ends.get_mut(topic).and_then(|m| m.get_mut(&partition)) else {
            return false;
        };
        if state.1 {
            return false;
        }
        state.1 = true;
        self.open -= 1;
        true
    }

    /// The partition is read again (positions re-read); true when it was
    /// done.
    pub(super) fn reopen(&mut self, topic: &str, partition: i32) -> bool {
        let Some(state) = self.ends.get_mut(topic).and_then(|m| m.get_mut(&partition)) else {
            return false;
        };
        if !state.1 {
            return false;
        }
        state.1 = false;
        self.open += 1;
        true
    }

    /// Partitions of a bounded run not done yet.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.open
    }

    /// A bounded run with every partition done.
    pub(super) fn all_done(&self) -> bool {
        self.bounded && self.open == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ends: &[(&str, i32, i64)]) -> RangeEnds {
        let targets = ends
            .iter()
            .map(|(t, p, e)| ((t.to_string(), *p), *e))
            .collect();
        RangeEnds::new(Some(&targets))
    }

    #[test]
    fn the_last_offset_of_the_range_is_taken_and_ends_the_partition() {
        assert_eq!(AtEnd::of(8, 10), AtEnd::Inside);
        assert_eq!(AtEnd::of(9, 10), AtEnd::Last);
        assert!(AtEnd::of(9, 10).taken() && AtEnd::of(9, 10).ends_partition());
        assert_eq!(AtEnd::of(10, 10), AtEnd::Beyond);
        assert_eq!(AtEnd::of(17, 10), AtEnd::Beyond);
        assert!(!AtEnd::of(10, 10).taken() && AtEnd::of(10, 10).ends_partition());
        assert!(!AtEnd::of(8, 10).ends_partition());
        // Unbounded: never done.
        assert_eq!(AtEnd::of(i64::MAX - 2, i64::MAX), AtEnd::Inside);
    }

    #[test]
    fn a_continuous_run_reads_every_partition_on() {
        let r = RangeEnds::new(None);
        assert!(!r.bounded());
        assert_eq!(r.end("t", 0), Some(i64::MAX));
        assert!(!r.reached_at("t", 0, i64::MAX - 1));
        assert!(!r.all_done(), "nothing to finish: never done");
    }

    #[test]
    fn a_bounded_run_is_done_once_every_partition_is() {
        let mut r = run(&[("a", 0, 10), ("a", 1, 5), ("b", 0, 3)]);
        assert_eq!(r.end("a", 1), Some(5));
        assert_eq!(r.end("a", 2), None, "outside the range");
        assert_eq!(r.open(), 3);
        assert!(r.mark_done("a", 0));
        assert!(!r.mark_done("a", 0), "done once");
        assert!(!r.mark_done("c", 0), "not in the range");
        assert!(r.is_done("a", 0) && !r.is_done("a", 1));
        assert_eq!(r.open(), 2);
        assert!(!r.all_done(), "a/1 and b/0 are left");
        // The end found by position: a/1's position at its end.
        assert!(!r.reached_at("a", 1, 4));
        assert!(r.reached_at("a", 1, 5) && r.reached_at("a", 1, 6));
        assert!(r.mark_done("a", 1));
        assert!(r.mark_done("b", 0));
        assert!(r.all_done());
    }

    #[test]
    fn a_partition_read_again_is_open_until_its_end_again() {
        let mut r = run(&[("a", 0, 10), ("a", 1, 5)]);
        assert!(!r.reopen("a", 0), "not done: nothing reopened");
        r.mark_done("a", 0);
        r.mark_done("a", 1);
        assert!(r.all_done());
        assert!(r.reopen("a", 1));
        assert!(!r.reopen("a", 1));
        assert!(!r.all_done() && !r.is_done("a", 1) && r.is_done("a", 0));
        assert_eq!(r.open(), 1);
        assert!(r.mark_done("a", 1));
        assert!(r.all_done());
    }

    #[test]
    fn an_empty_range_is_done_at_once() {
        let r = RangeEnds::new(Some(&HashMap::new()));
        assert!(r.all_done());
    }
}
