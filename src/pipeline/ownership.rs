//! Which partitions this process owns, and since when: the per-partition
//! fence between a change of positions (an assignment, a revocation, a
//! re-read from the table) and the data fetched from the positions it
//! replaced.
//!
//! A counter, the generation, goes up with every change. Data is stamped
//! with the generation it was polled in (later stages re-stamp it once they
//! have checked it again). A partition's data stamped `g` is still good when
//! the partition is owned, its position was last set at or before `g`, and
//! it is not stale (some of its data was dropped, so its position must be
//! re-read before anything later of it may commit). With eager rebalancing
//! every change touches every partition, so this is the old generation gate;
//! with incremental rebalancing only the moved partitions' data is dropped.

use std::collections::HashMap;

use crate::record::TopicPartition;

/// One owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owned {
    /// The generation its position was last set in.
    since: u64,
    /// Some of its data was dropped: nothing more of it commits until its
    /// position is re-read.
    stale: bool,
}

/// The partitions owned, by generation.
#[derive(Debug, Default, Clone)]
pub(super) struct Ownership {
    generation: u64,
    parts: HashMap<TopicPartition, Owned>,
}

impl Ownership {
    /// The current generation.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Partitions owned.
    pub(super) fn owned(&self) -> usize {
        self.parts.len()
    }

    fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// `parts` are owned from now on, at positions set now (an assignment,
    /// or a re-read of positions from the table).
    pub(super) fn assign<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> u64 {
        let g = self.bump();
        for tp in parts {
            self.parts.insert(
                tp.clone(),
                Owned {
                    since: g,
                    stale: false,
                },
            );
        }
        g
    }

    /// Every owned partition's position is set again now.
    pub(super) fn reread_all(&mut self) -> u64 {
        let g = self.bump();
        for o in self.parts.values_mut() {
            *o = Owned {
                since: g,
                stale: false,
            };
        }
        g
    }

    /// `parts` are no longer owned.
    pub(super) fn revoke<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> u64 {
        let g = self.bump();
        for tp in parts {
            self.parts.remove(tp);
        }
        g
    }

    /// Nothing is owned any more.
    #[cfg(test)]
    pub(super) fn revoke_all(&mut self) -> u64 {
        self.parts.clear();
        self.bump()
    }

    /// Data of `parts` was dropped: their positions must be re-read.
    pub(super) fn mark_stale<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> u64 {
        let g = self.bump();
        for tp in parts {
            if let Some(o) = self.parts.get_mut(tp) {
                o.stale = true;
            }
        }
        g
    }

    /// Every owned partition's position must be re-read.
    pub(super) fn mark_all_stale(&mut self) -> u64 {
        for o in self.parts.values_mut() {
            o.stale = true;
        }
        self.bump()
    }

    /// The owned partitions whose positions must be re-read, sorted.
    pub(super) fn stale(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, o)| o.stale)
            .map(|(tp, _)| tp.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether data of `tp` stamped `stamp` may still commit.
    pub(super) fn admits(&self, tp: &TopicPartition, stamp: u64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|o| !o.stale && o.since <= stamp)
    }

    /// Like [`Self::admits`], by topic name and partition (no allocation).
    pub(super) fn admits_parts(&self, topic: &str, partition: i32, stamp: u64) -> bool {
        // Only after a change of positions, over the few partitions owned.
        self.parts
            .iter()
            .find(|((t, p), _)| *p == partition && t == topic)
            .is_some_and(|(_, o)| !o.stale && o.since <= stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn data_of_a_partition_is_good_from_its_assignment_until_its_revocation() {
        let mut o = Ownership::default();
        assert!(!o.admits(&tp(0), 0), "nothing owned yet");
        let g1 = o.assign(&[tp(0), tp(1)]);
        assert!(o.admits(&tp(0), g1));
        assert!(!o.admits(&tp(0), g1 - 1), "polled before the assignment");
        // Incremental: partition 2 joins, 0 and 1 keep their data.
        let g2 = o.assign(&[tp(2)]);
        assert!(
            o.admits(&tp(0), g1),
            "an assignment of others moves nothing"
        );
        assert!(!o.admits(&tp(2), g1));
        assert!(o.admits(&tp(2), g2));
        // Partition 1 is revoked: its data goes, 0's and 2's stays.
        let g3 = o.revoke(&[tp(1)]);
        assert!(!o.admits(&tp(1), g1));
        assert!(!o.admits(&tp(1), g3));
        assert!(o.admits(&tp(0), g1));
        assert!(o.admits(&tp(2), g3));
        assert_eq!(o.owned(), 2);
        // Assigned again: only data polled since then.
        let g4 = o.assign(&[tp(1)]);
        assert!(!o.admits(&tp(1), g3));
        assert!(o.admits(&tp(1), g4));
        // Eager: everything goes.
        let g5 = o.revoke_all();
        assert!(!o.admits(&tp(0), g5));
        assert_eq!(o.owned(), 0);
    }

    #[test]
    fn a_stale_partition_admits_nothing_until_its_position_is_read_again() {
        let mut o = Ownership::default();
        let g1 = o.assign(&[tp(0), tp(1)]);
        let g2 = o.mark_stale(&[tp(0)]);
        assert!(!o.admits(&tp(0), g1));
        assert!(!o.admits(&tp(0), g2), "not even data polled after the mark");
        assert!(o.admits(&tp(1), g1), "others are untouched");
        assert_eq!(o.stale(), [tp(0)]);
        let g3 = o.assign(&[tp(0)]);
        assert!(!o.admits(&tp(0), g2), "polled before the re-read");
        assert!(o.admits(&tp(0), g3));
        assert!(o.stale().is_empty());
        o.mark_all_stale();
        assert_eq!(o.stale(), [tp(0), tp(1)]);
        let g5 = o.reread_all();
        assert!(o.admits(&tp(1), g5));
        assert!(!o.admits(&tp(1), g3));
        assert!(o.admits_parts("t", 1, g5));
        assert!(!o.admits_parts("t", 1, g3));
        assert!(!o.admits_parts("u", 1, g5));
    }

    #[test]
    fn staleness_of_a_partition_not_owned_is_ignored() {
        let mut o = Ownership::default();
        o.assign(&[tp(0)]);
        o.mark_stale(&[tp(5)]);
        assert!(o.stale().is_empty());
        assert_eq!(o.owned(), 1);
    }
}
