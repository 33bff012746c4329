//! `history` mode (SCD type 2): every version of a key is kept, each with
//! where it starts, where it ends and whether it is current.
//!
//! A batch's changes are not reduced: every change of a key becomes a
//! version, in sequence order. On the snapshot a commit attempt read, the
//! files that may hold a changed key (key statistics, as in `upsert`) are
//! read, key columns first; a file holding one is rewritten without that
//! key's stored versions, which are merged with the new changes into the
//! key's timeline again ([`History::versions`]). So a change arriving late
//! (older than the current version) is inserted between its neighbours as
//! a closed version, and never becomes current. Deletes leave no row: a
//! stored version whose end is no other version's start was closed by a
//! delete, which is how the timeline is rebuilt with it; a delete that
//! closed nothing is rebuilt from the kept deletes (`tombstone_retention`,
//! see the `tombstones` module), if the table keeps them. A change at the
//! same sequence as a version replaces it (ties go to the later change,
//! as in `upsert`): a version never ends where it starts, and a change
//! delivered again (Debezium after a connector restart) changes nothing. The new files,
//! the removes and the txn actions go in one commit, as in `upsert`.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray as _, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use super::merge::{align, MergeRules, DELETE_COLUMN, OFFSET_COLUMN};
use crate::config::HistoryColumns;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is missing")))
}

fn cast(c: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if c.data_type() == to {
        Ok(c.clone())
    } else {
        arrow::compute::cast(c, to)
    }
}

/// The type of the start and end columns: the sequence column's, or
/// BIGINT (the Kafka offset).
pub(super) fn sequence_type(schema: &Schema, rules: &MergeRules) -> DataType {
    rules
        .sequence_by
        .as_ref()
        .and_then(|s| schema.field_with_name(s).ok())
        .map_or(DataType::Int64, |f| f.data_type().clone())
}

/// `schema` with the history columns it lacks, nullable (the decoded
/// rows carry none of them; the merge fills them).
pub(super) fn with_columns(schema: &Schema, rules: &MergeRules, cols: &HistoryColumns) -> Schema {
    let seq = sequence_type(schema, rules);
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, ty) in [
        (&cols.start_column, seq.clone()),
        (&cols.end_column, seq),
        (&cols.current_column, DataType::Boolean),
    ] {
        if schema.field_with_name(name).is_err() {
            fields.push(Field::new(name, ty, true));
        }
    }
    Schema::new(fields)
}

/// One batch of changes and the stored versions of their keys.
pub(super) struct History {
    /// The changes, all of them, in the change schema.
    pub changes: RecordBatch,
    cols: HistoryColumns,
    keys: RowConverter,
    key_types: Vec<DataType>,
    touched: HashSet<Box<[u8]>>,
    /// Stored versions of the changed keys, aligned to the output schema.
    stored: Vec<RecordBatch>,
    /// Kept deletes of the changed keys (`tombstone_retention`): their key
    /// columns and the sequence column, as the segments hold them.
    kept: Vec<RecordBatch>,
}

/// A segment of kept deletes as [`History::keep_deletes`] probes it: its
/// rows, and per key (row format) the rows of it.
#[derive(Debug)]
pub(super) struct KeptIndex {
    batch: RecordBatch,
    rows: HashMap<Box<[u8]>, Vec<u32>>,
}

/// One event of a key's timeline.
struct Event {
    /// Index into the sequence values: rows' starts, rows' ends, then
    /// kept deletes'.
    at: usize,
    /// At an equal sequence, earlier first. 0: a kept delete (a version
    /// stored at its sequence came later: a tie it lost, or a change
    /// applied after it), 1: from the table, 2: from this batch.
    tier: u8,
    /// A stored version's end (`None` for no end or not stored): at equal
    /// starts, a closed version precedes the one that follows it.
    end: Option<usize>,
    offset: i64,
    /// The version it opens (a row of the versions batch); `None`: a delete.
    opens: Option<usize>,
}

impl History {
    /// `changes` (batches of one schema, with [`OFFSET_COLUMN`] and
    /// [`DELETE_COLUMN`]).
    pub(super) fn new(
        changes: &[RecordBatch],
        rules: &MergeRules,
        cols: &HistoryColumns,
    ) -> Result<Self, ArrowError> {
        let schema = changes
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| ArrowError::InvalidArgumentError("no changes".into()))?;
        let all = arrow::compute::concat_batches(&schema, changes)?;
        let key_cols: Vec<ArrayRef> = rules
            .keys
            .iter()
            .map(|k| column(&all, k).cloned())
            .collect::<Result<_, _>>()?;
        let key_types: Vec<DataType> = key_cols.iter().map(|c| c.data_type().clone()).collect();
        let keys = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let rows = keys.convert_columns(&key_cols)?;
        let touched = (0..all.num_rows())
            .map(|i| rows.row(i).as_ref().into())
            .collect();
        Ok(History {
            changes: all,
            cols: cols.clone(),
            keys,
            key_types,
            touched,
            stored: Vec::new(),
            kept: Vec::new(),
        })
    }

    /// What a [`KeptIndex`] built for this batch depends on: the key types.
    pub(super) fn index_signature(&self) -> String {
        format!("{:?}", self.key_types)
    }

    /// The [`KeptIndex`] of a segment's rows (key columns and the sequence
    /// column).
    pub(super) fn kept_index(
        &self,
        segment: &[RecordBatch],
        rules: &MergeRules,
    ) -> Result<KeptIndex, ArrowError> {
        let schema = match segment.first() {
            Some(b) => b.schema(),
            None => Arc::new(Schema::empty()),
        };
        let batch = arrow::compute::concat_batches(&schema, segment)?;
        let mut rows: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        if batch.num_rows() > 0 {
            let cols: Vec<ArrayRef> = rules
                .keys
                .iter()
                .zip(&self.key_types)
                .map(|(n, t)| cast(column(&batch, n)?, t))
                .collect::<Result<_, _>>()?;
            let keys = self.keys.convert_columns(&cols)?;
            for r in 0..batch.num_rows() {
                rows.entry(keys.row(r).as_ref().into())
                    .or_default()
                    .push(r as u32);
            }
        }
        Ok(KeptIndex { batch, rows })
    }

    /// Takes the kept deletes of the changed keys from `index` into the
    /// timeline. How many.
    pub(super) fn keep_deletes(&mut self, index: &KeptIndex) -> Result<u64, ArrowError> {
        let mut take: Vec<u32> = self
            .touched
            .iter()
            .filter_map(|k| index.rows.get(k))
            .flatten()
            .copied()
            .collect();
        if take.is_empty() {
            return Ok(0);
        }
        take.sort_unstable();
        let n = take.len() as u64;
        self.kept.push(arrow::compute::take_record_batch(
            &index.batch,
            &UInt32Array::from(take),
        )?);
        Ok(n)
    }

    /// The batch's deletes, to keep (see [`super::merge::tombstone_rows`]):
    /// every one counts in a later timeline, also one that closed nothing.
    pub(super) fn tombstones(
        &self,
        rules: &MergeRules,
        at_column: &str,
        deleted_at: i64,
    ) -> Result<RecordBatch, ArrowError> {
        let deletes = column(&self.changes, DELETE_COLUMN)?.as_boolean();
        let keep: BooleanArray = (0..self.changes.num_rows())
            .map(|i| Some(deletes.is_valid(i) && deletes.value(i)))
            .collect();
        super::merge::tombstone_rows(&self.changes, &keep, rules, at_column, deleted_at)
    }

    /// For each row of `stored` (holding at least the key columns): whether
    /// its key is one the batch changes.
    pub(super) fn touches(
        &self,
        stored: &RecordBatch,
        rules: &MergeRules,
    ) -> Result<Vec<bool>, ArrowError> {
        let cols: Vec<ArrayRef> = rules
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(n, t)| cast(column(stored, n)?, t))
            .collect::<Result<_, _>>()?;
        let rows = self.keys.convert_columns(&cols)?;
        Ok((0..stored.num_rows())
            .map(|r| self.touched.contains(rows.row(r).as_ref()))
            .collect())
    }

    /// The delete changes of the batch.
    pub(super) fn deletes(&self) -> u64 {
        self.changes
            .column_by_name(DELETE_COLUMN)
            .map_or(0, |c| c.as_boolean().true_count() as u64)
    }

    /// Keeps stored versions of changed keys (aligned to the output schema).
    pub(super) fn keep_stored(&mut self, versions: RecordBatch) {
        if versions.num_rows() > 0 {
            self.stored.push(versions);
        }
    }

    /// Every version of the changed keys, stored and new, with their start,
    /// end and current columns, in the output schema `out` (which has them).
    pub(super) fn versions(
        &self,
        rules: &MergeRules,
        out: &SchemaRef,
    ) -> Result<RecordBatch, ArrowError> {
        let start_at = out.index_of(&self.cols.start_column)?;
        let end_at = out.index_of(&self.cols.end_column)?;
        let current_at = out.index_of(&self.cols.current_column)?;
        let seq_type = out.field(start_at).data_type().clone();
        // The new changes as versions: their start is their sequence.
        let mut new = align(&self.changes, out)?;
        let seq = match &rules.sequence_by {
            Some(s) => column(&self.changes, s)?,
            None => column(&self.changes, OFFSET_COLUMN)?,
        };
        let mut columns = new.columns().to_vec();
        columns[start_at] = cast(seq, &seq_type)?;
        new = RecordBatch::try_new(out.clone(), columns)?;
        let n_stored: usize = self.stored.iter().map(RecordBatch::num_rows).sum();
        let mut parts = self.stored.clone();
        parts.push(new);
        let all = arrow::compute::concat_batches(out, &parts)?;
        let n = all.num_rows();
        // Kept deletes: their sequences and keys, cast as the changes'.
        let mut seq_parts = vec![all.column(start_at).clone(), all.column(end_at).clone()];
        let mut kept_keys: Vec<Vec<ArrayRef>> = vec![Vec::new(); rules.keys.len()];
        if let Some(s) = &rules.sequence_by {
            for b in &self.kept {
                seq_parts.push(cast(column(b, s)?, &seq_type)?);
                for (k, (name, t)) in rules.keys.iter().zip(&self.key_types).enumerate() {
                    kept_keys[k].push(cast(column(b, name)?, t)?);
                }
            }
        }
        let concat = |parts: &[ArrayRef]| {
            let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&parts)
        };
        // Sequence values: rows' starts, rows' ends (index n + i), then
        // kept deletes' (index 2n + j).
        let seqs = concat(&seq_parts)?;
        let conv = RowConverter::new(vec![SortField::new(seq_type)])?;
        let seq_rows = conv.convert_columns(std::slice::from_ref(&seqs))?;
        let key_cols: Vec<ArrayRef> = rules
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| cast(column(&all, k)?, t))
            .collect::<Result<_, _>>()?;
        let key_rows = self.keys.convert_columns(&key_cols)?;
        let kept_rows = if self.kept.is_empty() {
            None
        } else {
            let cols: Vec<ArrayRef> = kept_keys
                .iter()
                .map(|c| concat(c))
                .collect::<Result<_, _>>()?;
            Some(self.keys.convert_columns(&cols)?)
        };
        let mut kept_at: HashMap<&[u8], Vec<usize>> = HashMap::new();
        if let Some(rows) = &kept_rows {
            for j in 0..rows.num_rows() {
                kept_at
                    .entry(rows.row(j).data())
                    .or_default()
                    .push(2 * n + j);
            }
        }
        let deletes = column(&self.changes, DELETE_COLUMN)?.as_boolean();
        let offsets = column(&self.changes, OFFSET_COLUMN)?.as_primitive::<Int64Type>();
        let mut groups: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for i in 0..n {
            groups.entry(key_rows.row(i).data()).or_default().push(i);
        }
        let mut picked: Vec<u32> = Vec::with_capacity(n);
        let mut ends: Vec<Option<u32>> = Vec::with_capacity(n);
        let mut events = Vec::new();
        for (key, rows) in &groups {
            events.clear();
            for &at in kept_at.get(key).into_iter().flatten() {
                events.push(Event {
                    at,
                    tier: 0,
                    end: None,
                    offset: 0,
                    opens: None,
                });
            }
            let starts: HashSet<&[u8]> = rows
                .iter()
                .filter(|&&i| i < n_stored)
                .map(|&i| seq_rows.row(i).data())
                .collect();
            for &i in rows {
                if i < n_stored {
                    let end = seqs.is_valid(n + i).then_some(n + i);
                    events.push(Event {
                        at: i,
                        tier: 1,
                        end,
                        offset: 0,
                        opens: Some(i),
                    });
                    // Closed with no version starting there: a delete.
                    if end.is_some_and(|e| !starts.contains(seq_rows.row(e).data())) {
                        events.push(Event {
                            at: n + i,
                            tier: 1,
                            end: None,
                            offset: 0,
                            opens: None,
                        });
                    }
                } else {
                    let c = i - n_stored;
                    let delete = deletes.is_valid(c) && deletes.value(c);
                    events.push(Event {
                        at: i,
                        tier: 2,
                        end: None,
                        offset: offsets.value(c),
                        opens: (!delete).then_some(i),
                    });
                }
            }
            events.sort_by(|a, b| {
                let end = |e: &Event| e.end.map(|x| seq_rows.row(x));
                seq_rows
                    .row(a.at)
                    .cmp(&seq_rows.row(b.at))
                    .then(a.tier.cmp(&b.tier))
                    // A closed version (Some end) before an open one.
                    .then_with(|| match (end(a), end(b)) {
                        (Some(x), Some(y)) => x.cmp(&y),
                        (Some(_), None) => Ordering::Less,
                        (None, Some(_)) => Ordering::Greater,
                        (None, None) => Ordering::Equal,
                    })
                    .then(a.offset.cmp(&b.offset))
                    .then(a.at.cmp(&b.at))
            });
            walk(&events, &seq_rows, &mut picked, &mut ends);
        }
        let versions = arrow::compute::take_record_batch(&all, &UInt32Array::from(picked))?;
        let end = arrow::compute::take(&seqs, &UInt32Array::from(ends.clone()), None)?;
        let current: BooleanArray = ends.iter().map(|e| Some(e.is_none())).collect();
        let mut columns = versions.columns().to_vec();
        columns[end_at] = end;
        columns[current_at] = Arc::new(current);
        RecordBatch::try_new(out.clone(), columns)
    }
}

/// A key's timeline from its sorted events: each event closes the open
/// version at its sequence (one at the same sequence replaces it), and an
/// upsert opens the next; the last stays open (current). Pushes each
/// version's row and end (an index into the sequence values).
fn walk(events: &[Event], seq_rows: &Rows, picked: &mut Vec<u32>, ends: &mut Vec<Option<u32>>) {
    let mut open: Option<usize> = None;
    for e in events {
        // A change at the open version's own start replaces it (a
        // tie, or a re-delivered change): no empty version is kept.
        if let Some(o) = open
            .take()
            .filter(|&o| seq_rows.row(o) != seq_rows.row(e.at))
        {
            picked.push(o as u32);
            ends.push(Some(e.at as u32));
        }
        open = e.opens;
    }
    if let Some(o) = open {
        picked.push(o as u32);
        ends.push(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::merge::tests::changes;

    type Version = (i64, String, i64, Option<i64>, bool);

    fn read(b: &RecordBatch) -> Vec<Version> {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let vs = b.column(1).as_string::<i32>();
        let start = b.column(3).as_primitive::<Int64Type>();
        let end = b.column(4).as_primitive::<Int64Type>();
        let cur = b.column(5).as_boolean();
        let mut out: Vec<Version> = (0..b.num_rows())
            .map(|i| {
                (
                    ids.value(i),
                    vs.value(i).to_string(),
                    start.value(i),
                    end.is_valid(i).then(|| end.value(i)),
                    cur.value(i),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn rules() -> MergeRules {
        MergeRules {
            keys: vec!["id".into()],
            sequence_by: Some("seq".into()),
            history: Some(HistoryColumns::default()),
        }
    }

    fn out() -> SchemaRef {
        let table = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("seq", DataType::Int64, true),
        ]);
        Arc::new(with_columns(&table, &rules(), &HistoryColumns::default()))
    }

    fn v(id: i64, s: &str, start: i64, end: Option<i64>, cur: bool) -> Version {
        (id, s.into(), start, end, cur)
    }

    /// Every change of a batch is a version in sequence order (not arrival
    /// order); a delete closes the current one; of a tie the later
    /// offset replaces the earlier (no empty version).
    #[test]
    fn a_batch_becomes_a_timeline_per_key() {
        let c = changes(&[
            (1, "a", 5, 10, false),
            (1, "c", 9, 11, false),
            (1, "b", 7, 12, false), // late: between a and c
            (2, "x", 3, 13, false),
            (2, "", 4, 14, true), // delete
            (3, "p", 2, 15, false),
            (3, "q", 2, 16, false), // a tie
        ]);
        let h = History::new(&[c], &rules(), &HistoryColumns::default()).unwrap();
        let got = read(&h.versions(&rules(), &out()).unwrap());
        assert_eq!(
            got,
            [
                v(1, "a", 5, Some(7), false),
                v(1, "b", 7, Some(9), false),
                v(1, "c", 9, None, true),
                v(2, "x", 3, Some(4), false),
                v(3, "q", 2, None, true),
            ]
        );
    }

    /// Against stored versions: a late change goes between them, a newer
    /// one closes the current one, a delete seen only as a stored version's
    /// end stays a delete.
    #[test]
    fn stored_versions_are_merged_with_the_changes() {
        let first = changes(&[
            (1, "a", 5, 0, false),
            (1, "c", 9, 1, false),
            (2, "x", 3, 2, false),
            (2, "", 4, 3, true),
        ]);
        let h = History::new(&[first], &rules(), &HistoryColumns::default()).unwrap();
        let stored = h.versions(&rules(), &out()).unwrap();
        let second = changes(&[
            (1, "b", 7, 4, false),  // late
            (1, "d", 11, 5, false), // newer
            (2, "y", 6, 6, false),  // after the delete
            (2, "w", 2, 7, false),  // before everything
        ]);
        let mut h = History::new(&[second], &rules(), &HistoryColumns::default()).unwrap();
        assert_eq!(h.touches(&stored, &rules()).unwrap(), [true; 3]);
        h.keep_stored(stored);
        let got = read(&h.versions(&rules(), &out()).unwrap());
        assert_eq!(
            got,
            [
                v(1, "a", 5, Some(7), false),
                v(1, "b", 7, Some(9), false),
                v(1, "c", 9, Some(11), false),
                v(1, "d", 11, None, true),
                v(2, "w", 2, Some(3), false),
                v(2, "x", 3, Some(4), false),
                v(2, "y", 6, None, true),
            ]
        );
    }

    /// Kept deletes (`tombstone_retention`) take part in the timeline: a
    /// late change before a delete that closed nothing ends at it; a
    /// version stored at a kept delete's sequence came after it (it
    /// stays); a change at a kept delete's sequence wins the tie.
    #[test]
    fn kept_deletes_close_late_changes() {
        // Earlier batches: key 1 deleted at 5 while absent; key 2 deleted
        // at 4, then set again at 4 (a tie the change won) and stored.
        let earlier = changes(&[(1, "", 5, 0, true), (2, "", 4, 1, true)]);
        let h = History::new(&[earlier], &rules(), &HistoryColumns::default()).unwrap();
        let kept = h.tombstones(&rules(), "at", 7).unwrap();
        assert_eq!(kept.num_rows(), 2);
        assert!(read(&h.versions(&rules(), &out()).unwrap()).is_empty());
        let stored_two = changes(&[(2, "s", 4, 2, false)]);
        let h = History::new(&[stored_two], &rules(), &HistoryColumns::default()).unwrap();
        let stored = h.versions(&rules(), &out()).unwrap();
        let later = changes(&[
            (1, "late", 3, 3, false), // before the kept delete at 5
            (2, "new", 6, 4, false),  // after the stored version
            (3, "tie", 8, 5, false),  // at a kept delete's sequence
        ]);
        let keys3 = changes(&[(3, "", 8, 6, true)]);
        let h3 = History::new(&[keys3], &rules(), &HistoryColumns::default()).unwrap();
        let kept3 = h3.tombstones(&rules(), "at", 7).unwrap();
        let mut h = History::new(&[later], &rules(), &HistoryColumns::default()).unwrap();
        h.keep_stored(stored);
        let index = h.kept_index(&[kept, kept3], &rules()).unwrap();
        assert_eq!(h.keep_deletes(&index).unwrap(), 3);
        let got = read(&h.versions(&rules(), &out()).unwrap());
        assert_eq!(
            got,
            [
                v(1, "late", 3, Some(5), false),
                v(2, "new", 6, None, true),
                v(2, "s", 4, Some(6), false),
                v(3, "tie", 8, None, true),
            ]
        );
        // Without the kept deletes the late change would be current.
        let mut h = History::new(
            &[changes(&[(1, "late", 3, 3, false)])],
            &rules(),
            &HistoryColumns::default(),
        )
        .unwrap();
        assert_eq!(h.keep_deletes(&index).unwrap(), 1);
        assert_eq!(
            read(&h.versions(&rules(), &out()).unwrap()),
            [v(1, "late", 3, Some(5), false)]
        );
    }
}
