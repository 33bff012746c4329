//! Whether a bounded run (`--available-now`, `replay`) has its range in the
//! table: the decision behind its exit code, kept apart from Kafka and Delta
//! so that it is tested on its own.
//!
//! Once every partition's fetch position has reached its end, the run waits
//! until everything it fetched is committed or dropped, re-reads the stored
//! versions from the table and asks [`Completion::check`]:
//!
//! - every partition stores `end - 1` or more, and nothing of the range was
//!   fenced by another writer: done, exit 0;
//! - some partition stores less (a batch was fenced or dropped after the
//!   poll loop had read its end): fetch those partitions again from the
//!   stored offset + 1, as long as each round moves something;
//! - otherwise the run cannot finish: it stops non-zero, naming the
//!   partitions and offsets it did not write.
//!
//! A fence means another writer stored offsets of the range under this app
//! id. Its txn version says how far it got, not what it wrote, so the
//! offsets from the fenced batch's first up to that version are reported as
//! not written by this run even when the stored versions reach the end.

use std::collections::BTreeMap;
use std::fmt;

use crate::record::TopicPartition;

/// Rounds of re-fetching before a run that keeps losing batches gives up.
pub(super) const MAX_ROUNDS: u32 = 5;

/// Why part of a range is not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapCause {
    /// The table stores less than the range's end.
    NotStored,
    /// Another writer stored `stored` under this run's app id while this
    /// run's batch started at `first`.
    OtherWriter {
        /// The version the other writer stored.
        stored: i64,
    },
}

/// Offsets `first..=last` of a partition that this run did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// First offset not done.
    pub first: i64,
    /// Last offset not done.
    pub last: i64,
    /// Why.
    pub cause: GapCause,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, p) = &self.partition;
        write!(f, "{t}/{p} offsets {}..={}", self.first, self.last)?;
        match self.cause {
            GapCause::NotStored => write!(f, " (not in the table)"),
            GapCause::OtherWriter { stored } => write!(
                f,
                " (another writer stored offset {stored} under this app id first)"
            ),
        }
    }
}

/// The parts of a range a bounded run did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished(pub Vec<Gap>);

impl fmt::Display for Unfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gaps: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(
            f,
            "the range is not complete in the table: {}. Nothing was written twice; \
             find the other writer of this app id (`inlet status` shows the stored offsets), \
             then run again",
            gaps.join("; ")
        )
    }
}

/// What to do after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The whole range is in the table.
    Complete,
    /// Fetch these partitions again, from these offsets.
    Refetch(Vec<(TopicPartition, i64)>),
    /// The range cannot be completed.
    Incomplete(Unfinished),
}

#[derive(Debug, Clone)]
struct Range {
    start: i64,
    end: i64,
    /// The stored version at the last check (`start - 1` before any).
    seen: i64,
    /// Offsets another writer stored first, merged, with the highest
    /// version it had stored when they were fenced.
    foreign: Vec<(i64, i64, i64)>,
}

/// The range of a bounded run and what happened to it.
#[derive(Debug, Clone, Default)]
pub(super) struct Completion {
    ranges: BTreeMap<TopicPartition, Range>,
    rounds: u32,
}

impl Completion {
    /// Sets the range: per partition, the first offset to read and the end
    /// (exclusive). Empty ranges are left out.
    pub(super) fn set_ranges(
        &mut self,
        ranges: impl IntoIterator<Item = (TopicPartition, i64, i64)>,
    ) {
        self.ranges = ranges
            .into_iter()
            .filter(|(_, start, end)| start < end)
            .map(|(tp, start, end)| {
                (
                    tp,
                    Range {
                        start,
                        end,
                        seen: start - 1,
                        foreign: Vec::new(),
                    },
                )
            })
            .collect();
        self.rounds = 0;
    }

    /// The partitions of the range.
    pub(super) fn partitions(&self) -> Vec<TopicPartition> {
        self.ranges.keys().cloned().collect()
    }

    /// A batch of `tp` starting at `first` was fenced: another writer stored
    /// `stored`, at or past `first`.
    pub(super) fn fenced(&mut self, tp: &TopicPartition, first: i64, stored: i64) {
        let Some(r) = self.ranges.get_mut(tp) else {
            return;
        };
        let (a, b) = (first.max(r.start), stored.min(r.end - 1));
        if a > b {
            return;
        }
        r.foreign.push((a, b, stored));
        r.foreign.sort_unstable();
        let mut merged: Vec<(i64, i64, i64)> = Vec::with_capacity(r.foreign.len());
        for (a, b, s) in r.foreign.drain(..) {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => {
                    last.1 = last.1.max(b);
                    last.2 = last.2.max(s);
                }
                _ => merged.push((a, b, s)),
            }
        }
        r.foreign = merged;
    }

    /// Decides, given the stored version of each partition re-read from the
    /// table (partitions not listed store nothing).
    pub(super) fn check(&mut self, stored: &BTreeMap<TopicPartition, Option<i64>>) -> Verdict {
        let round = self.rounds;
        self.rounds += 1;
        let mut refetch = Vec::new();
        let mut gaps = Vec::new();
        for (tp, r) in &mut self.ranges {
            let s = stored.get(tp).copied().flatten().unwrap_or(r.start - 1);
            let moved = s > r.seen;
            r.seen = r.seen.max(s);
            if s < r.end - 1 {
                if round + 1 < MAX_ROUNDS && (round == 0 || moved) {
                    refetch.push((tp.clone(), s + 1));
                    continue;
                }
                gaps.push(Gap {
                    partition: tp.clone(),
                    first: (s + 1).max(r.start),
                    last: r.end - 1,
                    cause: GapCause::NotStored,
                });
            }
            gaps.extend(r.foreign.iter().map(|&(first, last, stored)| Gap {
                partition: tp.clone(),
                first,
                last,
                cause: GapCause::OtherWriter { stored },
            }));
        }
        if !refetch.is_empty() {
            Verdict::Refetch(refetch)
        } else if gaps.is_empty() {
            Verdict::Complete
        } else {
            Verdict::Incomplete(Unfinished(gaps))
        }
    }

    /// What is left of the range, given the stored versions re-read after
    /// a run was stopped (SIGTERM) before its end: no refetch, no rounds.
    pub(super) fn remaining(&self, stored: &BTreeMap<TopicPartition, Option<i64>>) -> Vec<Gap> {
        self.ranges
            .iter()
            .filter_map(|(tp, r)| {
                let s = stored.get(tp).copied().flatten().unwrap_or(r.start - 1);
                (s < r.end - 1).then(|| Gap {
                    partition: tp.clone(),
                    first: (s + 1).max(r.start),
                    last: r.end - 1,
                    cause: GapCause::NotStored,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_run_names_what_is_left() {
        let mut c = Completion::default();
        c.set_ranges([(tp(0), 0, 100), (tp(1), 50, 60), (tp(2), 5, 5)]);
        let stored = BTreeMap::from([(tp(0), Some(41)), (tp(1), Some(59))]);
        assert_eq!(
            c.remaining(&stored),
            vec![Gap {
                partition: tp(0),
                first: 42,
                last: 99,
                cause: GapCause::NotStored,
            }]
        );
        let nothing = BTreeMap::new();
        assert_eq!(
            c.remaining(&nothing).len(),
            2,
            "p0 and p1, not the empty p2"
        );
    }

    fn tp(p: i32) -> TopicPartition {
        ("events".to_string(), p)
    }

    fn stored(v: &[(i32, Option<i64>)]) -> BTreeMap<TopicPartition, Option<i64>> {
        v.iter().map(|(p, s)| (tp(*p), *s)).collect()
    }

    fn range() -> Completion {
        let mut c = Completion::default();
        // p0: 0..100, p1: 50..80, p2: empty (left out).
        c.set_ranges([(tp(0), 0, 100), (tp(1), 50, 80), (tp(2), 10, 10)]);
        c
    }

    #[test]
    fn a_range_stored_to_its_end_is_complete() {
        let mut c = range();
        assert_eq!(c.partitions(), vec![tp(0), tp(1)]);
        assert_eq!(
            c.check(&stored(&[(0, Some(99)), (1, Some(79))])),
            Verdict::Complete
        );
        // Stored past the end (a later run went on) is complete too.
        assert_eq!(
            c.check(&stored(&[(0, Some(500)), (1, Some(79))])),
            Verdict::Complete
        );
    }

    #[test]
    fn a_batch_lost_after_the_last_fetch_is_fetched_again() {
        let mut c = range();
        // The last batch of p0 was dropped; p1 stores nothing at all.
        assert_eq!(
            c.check(&stored(&[(0, Some(59)), (1, None)])),
            Verdict::Refetch(vec![(tp(0), 60), (tp(1), 50)])
        );
        // The next round moved p0 but not p1: p1 gets no further round.
        assert_eq!(
            c.check(&stored(&[(0, Some(79)), (1, None)])),
            Verdict::Refetch(vec![(tp(0), 80)])
        );
        assert_eq!(
            c.check(&stored(&[(0, Some(99)), (1, None)])),
            Verdict::Incomplete(Unfinished(vec![Gap {
                partition: tp(1),
                first: 50,
                last: 79,
                cause: GapCause::NotStored
            }]))
        );
    }

    #[test]
    fn rounds_are_bounded() {
        let mut c = range();
        let mut verdicts = Vec::new();
        for round in 0..MAX_ROUNDS as i64 {
            verdicts.push(c.check(&stored(&[(0, Some(round)), (1, Some(79))])));
        }
        assert!(verdicts[..MAX_ROUNDS as usize - 1]
            .iter()
            .all(|v| matches!(v, Verdict::Refetch(_))));
        assert!(matches!(verdicts.last(), Some(Verdict::Incomplete(_))));
    }

    #[test]
    fn offsets_another_writer_stored_first_are_named() {
        let mut c = range();
        // Our batch 20..=39 of p0 was fenced: another writer stored 59; two
        // fences of one writer merge.
        c.fenced(&tp(0), 20, 59);
        c.fenced(&tp(0), 40, 69);
        // Outside the range or below the batch: nothing.
        c.fenced(&tp(3), 0, 5);
        c.fenced(&tp(1), 90, 95);
        let v = c.check(&stored(&[(0, Some(99)), (1, Some(79))]));
        let Verdict::Incomplete(u) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            u.0,
            vec![Gap {
                partition: tp(0),
                first: 20,
                last: 69,
                cause: GapCause::OtherWriter { stored: 69 }
            }]
        );
        let text = u.to_string();
        assert!(
            text.contains("events/0 offsets 20..=69") && text.contains("another writer"),
            "{text}"
        );
        // A fence past the range's end covers only the range.
        let mut c = range();
        c.fenced(&tp(1), 60, 1000);
        let Verdict::Incomplete(u) = c.check(&stored(&[(0, Some(99)), (1, Some(1000))])) else {
            panic!()
        };
        assert_eq!((u.0[0].first, u.0[0].last), (60, 79));
    }

    #[test]
    fn refetching_comes_before_giving_up_on_other_partitions() {
        let mut c = range();
        c.fenced(&tp(1), 50, 79);
        assert_eq!(
            c.check(&stored(&[(0, Some(10)), (1, Some(79))])),
            Verdict::Refetch(vec![(tp(0), 11)])
        );
        assert!(matches!(
            c.check(&stored(&[(0, Some(99)), (1, Some(79))])),
            Verdict::Incomplete(_)
        ));
    }
}
