//! The rejections of one chunk, in the chunk's message order.

use std::ops::Deref;

use super::{Rejection, Stage};

/// The messages of one chunk that cannot become rows, in index order.
///
/// A `Rejections` holds indices of one index space only: the chunk (or the
/// subset, or the range) whose messages its owner was handed. Rejections of
/// a subset of the chunk are collected in a `Rejections` of their own and
/// merged back with their mapping; never pushed into the parent's list
/// (commit 2244d37: a decoder sorting a vector that mixed chunk and subset
/// indices gave an oversized message another message's coordinates).
///
/// Every method that merges leaves the list in index order (stable: two
/// rejections of one message keep their order). [`Rejections::push`] does
/// not sort: push in index order, or call [`Rejections::sort`] when done.
///
/// The hot path keeps one list per decode thread and [`Rejections::clear`]s
/// it per chunk; merging moves entries (no allocation beyond the list's own
/// growth) and sorts only when what was merged is out of order.
///
/// The usual hand-written remaps and what replaces them:
///
/// - a subset's `Vec<Rejection>` mapped back by `parent[r.index]`, then the
///   whole list sorted: [`Rejections::merge_subset`]`(&mut local, &parent)`
///   (or [`Rejections::merge_mapped`] when the mapping is not a slice);
/// - a subset's row failures `(row, reason)` (transforms, constraints,
///   NOT NULL) pushed as `Rejection::new(parent[row], stage, reason)`, then
///   sorted: [`Rejections::extend_subset`]`(stage, failures, &parent)`;
/// - a range's rejections shifted by the range's start:
///   [`Rejections::merge_shifted`]`(&mut range, start)`.
///
/// So in the decode thread (`pipeline/fetch.rs`), the key decoder's
/// rejections become `rejected.merge_subset(&mut local, &good)` and the
/// constraint violations `rejected.extend_subset(Stage::Constraint,
/// violations.into_iter().map(|v| (v.row, v.reason)), good)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    list: Vec<Rejection>,
}

impl Rejections {
    /// An empty list.
    pub fn new() -> Self {
        Rejections::default()
    }

    /// Adds a rejection; see the type's note on order.
    pub fn push(&mut self, rejection: Rejection) {
        self.list.push(rejection);
    }

    /// Rejects message `index` at `stage`; see the type's note on order.
    pub fn reject(&mut self, index: usize, stage: Stage, reason: impl Into<String>) {
        self.list.push(Rejection::new(index, stage, reason));
    }

    /// Empties the list, keeping its capacity for the next chunk.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// Drops every rejection after the first `len` (an attempt's, undone).
    pub fn truncate(&mut self, len: usize) {
        self.list.truncate(len);
    }

    /// Puts the list in index order (stable).
    pub fn sort(&mut self) {
        if !self.list.is_sorted_by_key(|r| r.index) {
            self.list.sort_by_key(|r| r.index);
        }
    }

    /// Moves `other`'s rejections, of the same index space, here.
    pub fn append(&mut self, other: &mut Rejections) {
        self.merge_shifted(other, 0);
    }

    /// Moves the rejections of a range of this list's chunk here: `range`'s
    /// index `i` is the chunk's `offset + i`.
    pub fn merge_shifted(&mut self, range: &mut Rejections, offset: usize) {
        let from = self.list.len();
        self.list.extend(range.list.drain(..).map(|mut r| {
            r.index += offset;
            r
        }));
        self.settle(from);
    }

    /// Moves the rejections of a subset of this list's chunk here:
    /// `subset`'s index `i` is the chunk's `parent[i]`. `subset` is left
    /// empty, with its capacity.
    ///
    /// # Panics
    ///
    /// If a subset index is not below `parent.len()` (a bug: the subset is
    /// not the one `parent` maps).
    pub fn merge_subset(&mut self, subset: &mut Rejections, parent: &[usize]) {
        self.merge_mapped(subset, |i| parent[i]);
    }

    /// [`Rejections::merge_subset`] where the subset's index `i` is the
    /// chunk's `to_parent(i)` (the mapping is not a slice of indices).
    pub fn merge_mapped(&mut self, subset: &mut Rejections, to_parent: impl Fn(usize) -> usize) {
        let from = self.list.len();
        self.list.extend(subset.list.drain(..).map(|mut r| {
            r.index = to_parent(r.index);
            r
        }));
        self.settle(from);
    }

    /// Rejects at `stage` the rows of a subset of this list's chunk that
    /// failed: `(row, reason)`, where the subset's `row` is the chunk's
    /// `parent[row]` (rows' failures of a transform, a constraint check or
    /// NOT NULL).
    ///
    /// # Panics
    ///
    /// If a row is not below `parent.len()`.
    pub fn extend_subset(
        &mut self,
        stage: Stage,
        failures: impl IntoIterator<Item = (usize, String)>,
        parent: &[usize],
    ) {
        let from = self.list.len();
        self.list.extend(
            failures
                .into_iter()
                .map(|(row, reason)| Rejection::new(parent[row], stage, reason)),
        );
        self.settle(from);
    }

    /// Puts `prefix` before every reason (a key's rejections say so).
    pub fn prefix_reasons(&mut self, prefix: &str) {
        for r in &mut self.list {
            r.reason.insert_str(0, prefix);
        }
    }

    /// The rejections, in order.
    pub fn as_slice(&self) -> &[Rejection] {
        &self.list
    }

    /// The list was in order before `from`: keeps it so, sorting only when
    /// what came after is out of order.
    fn settle(&mut self, from: usize) {
        let tail = &self.list[from..];
        let joins = from == 0
            || tail
                .first()
                .is_none_or(|t| self.list[from - 1].index <= t.index);
        if !(joins && tail.is_sorted_by_key(|r| r.index)) {
            self.list.sort_by_key(|r| r.index);
        }
    }
}

impl Deref for Rejections {
    type Target = [Rejection];

    fn deref(&self) -> &[Rejection] {
        &self.list
    }
}

impl<'a> IntoIterator for &'a Rejections {
    type Item = &'a Rejection;
    type IntoIter = std::slice::Iter<'a, Rejection>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl IntoIterator for Rejections {
    type Item = Rejection;
    type IntoIter = std::vec::IntoIter<Rejection>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl Extend<Rejection> for Rejections {
    /// Adds rejections; see the type's note on order.
    fn extend<I: IntoIterator<Item = Rejection>>(&mut self, iter: I) {
        self.list.extend(iter);
    }
}

impl From<Vec<Rejection>> for Rejections {
    /// The list of `rejections`, put in index order.
    fn from(rejections: Vec<Rejection>) -> Self {
        let mut r = Rejections { list: rejections };
        r.sort();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indices(r: &Rejections) -> Vec<(usize, &str)> {
        r.iter().map(|r| (r.index, r.reason.as_str())).collect()
    }

    /// Commit 2244d37's case: a chunk of five messages, the oversized one
    /// (2) rejected in the chunk's indices before the framed decoder decodes
    /// the rest as a subset and rejects, out of order, subset messages 2
    /// (chunk 3, bad magic) and 1 (chunk 1, tombstone). Each keeps its own
    /// message: subset index 2 is not chunk index 2.
    #[test]
    fn a_subsets_rejections_map_back_beside_the_parents_own() {
        let mut chunk = Rejections::new();
        chunk.reject(2, Stage::Decode, "max_value_bytes");
        let kept = [0, 1, 3, 4];
        let mut subset = Rejections::new();
        subset.reject(2, Stage::Decode, "magic");
        subset.reject(1, Stage::Decode, "tombstone");
        subset.sort();
        chunk.merge_subset(&mut subset, &kept);
        assert_eq!(
            indices(&chunk),
            [(1, "tombstone"), (2, "max_value_bytes"), (3, "magic")]
        );
        assert!(subset.is_empty());
    }

    #[test]
    fn a_subsets_row_failures_map_back_in_order() {
        let mut chunk = Rejections::new();
        chunk.reject(0, Stage::Decode, "bad json");
        chunk.reject(5, Stage::Decode, "bad json");
        // Rows 0 and 2 of a batch holding chunk messages 1, 3, 4, 6.
        let rows = [1, 3, 4, 6];
        chunk.extend_subset(
            Stage::Transform,
            [(2, "div by zero".to_string()), (0, "null".to_string())],
            &rows,
        );
        assert_eq!(
            indices(&chunk),
            [
                (0, "bad json"),
                (1, "null"),
                (4, "div by zero"),
                (5, "bad json")
            ]
        );
        assert_eq!(chunk[1].stage, Stage::Transform);
        assert_eq!(chunk[3].stage, Stage::Decode);
    }

    #[test]
    fn ranges_shift_into_the_chunks_indices() {
        let mut chunk = Rejections::new();
        let mut first = Rejections::new();
        first.reject(1, Stage::Decode, "a");
        chunk.merge_shifted(&mut first, 0);
        let mut second = Rejections::new();
        second.reject(0, Stage::Decode, "b");
        second.reject(3, Stage::Decode, "c");
        chunk.merge_shifted(&mut second, 4);
        // A culprit found alone, pushed before a range it precedes.
        let mut third = Rejections::new();
        third.reject(0, Stage::Decode, "d");
        chunk.merge_shifted(&mut third, 2);
        assert_eq!(indices(&chunk), [(1, "a"), (2, "d"), (4, "b"), (7, "c")]);
    }

    #[test]
    fn merging_in_order_keeps_order_and_sorting_is_stable() {
        let mut chunk: Rejections = vec![
            Rejection::new(3, Stage::Schema, "x"),
            Rejection::new(1, Stage::Decode, "y"),
            Rejection::new(3, Stage::Constraint, "z"),
        ]
        .into();
        assert_eq!(indices(&chunk), [(1, "y"), (3, "x"), (3, "z")]);
        let mut other = Rejections::new();
        other.reject(3, Stage::Decode, "w");
        chunk.append(&mut other);
        assert_eq!(indices(&chunk), [(1, "y"), (3, "x"), (3, "z"), (3, "w")]);
        chunk.clear();
        assert!(chunk.is_empty());
    }

    #[test]
    fn keys_say_so() {
        let mut keys = Rejections::new();
        keys.reject(0, Stage::Decode, "invalid UTF-8");
        keys.prefix_reasons("key: ");
        assert_eq!(keys[0].reason, "key: invalid UTF-8");
    }
}
