//! `upsert` mode: a batch of changes merged into the table, planned by inlet
//! and committed through the sink's own commit path.
//!
//! A batch is reduced to its last change per key ([`Winners`]). On the
//! snapshot the commit attempt read, the files that may hold one of those
//! keys (by the key columns' min/max statistics) are read, first only their
//! key and sequence columns; a file that holds a changed key is rewritten
//! without the rows the changes replace or delete, and removed. The new
//! files (rewritten rows and the changed rows) and the removes go in one
//! commit with the txn actions of the batch, so a crash, a replay or a
//! zombie can never apply a change twice. A commit by another writer that
//! added or removed files meanwhile makes the attempt plan again on the new
//! snapshot (see `DeltaSink::write`): the files it read may be gone, or a
//! new file may hold one of its keys.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray as _, BooleanArray, RecordBatch, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};
use deltalake::kernel::Protocol;
use roaring::RoaringTreemap;

use super::key_index::{KeyIndex, KeyMap};
use super::read_cache::Columns;

/// The column of a change batch holding each change's Kafka offset.
pub const OFFSET_COLUMN: &str = "__inlet_offset";
/// The column of a change batch telling deletes (true) from upserts.
pub const DELETE_COLUMN: &str = "__inlet_delete";

/// Whether `name` is one of the columns inlet adds to change batches.
pub fn is_internal(name: &str) -> bool {
    name == OFFSET_COLUMN || name == DELETE_COLUMN
}

/// How changes find their rows and which one is newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRules {
    /// The key columns.
    pub keys: Vec<String>,
    /// The ordering column; `None`: the Kafka offset.
    pub sequence_by: Option<String>,
    /// `history` mode: its columns; `None`: `upsert` mode.
    pub history: Option<crate::config::HistoryColumns>,
}

/// Why a table cannot be merged into, if it cannot: features whose files
/// inlet's merge would have to read or rewrite differently. Deletion
/// vectors are read and written (see the `dv` module).
pub(super) fn refusal(protocol: &Protocol, mode: &str) -> Option<String> {
    let blocking = [
        ("rowTracking", "row ids would not be kept by rewritten rows"),
        ("columnMapping", "files hold physical column names"),
        (
            "identityColumns",
            "rows written again would be given new identity values",
        ),
    ];
    let names: Vec<String> = protocol
        .writer_features()
        .map(|f| f.iter().map(|f| f.to_string()).collect())
        .unwrap_or_default();
    let found: Vec<String> = blocking
        .iter()
        .filter(|(f, _)| names.iter().any(|n| n == f))
        .map(|(f, why)| format!("{f} ({why})"))
        .collect();
    (!found.is_empty()).then(|| {
        format!(
            "`mode = \"{mode}\"` cannot merge into a table with {}; use a table without \
             these features, or `mode = \"changelog\"`",
            found.join(", ")
        )
    })
}

/// The last change of each key in a batch (see [`reduce`]).
pub(super) struct Winners {
    /// One row per key, the change columns.
    pub batch: RecordBatch,
    /// Key (row format) to row of `batch`.
    index: KeyMap<usize>,
    keys: RowConverter,
    /// The key columns' types (a stored file's are cast to them).
    key_types: Vec<DataType>,
    /// The sequence converter and the winners' sequences.
    sequence: Option<(RowConverter, Rows)>,
    /// Rows whose change is older than the row stored for their key.
    pub beaten: Vec<bool>,
    /// Rows whose change replaces or deletes a stored row.
    found: Vec<bool>,
    /// Rows whose change is older than a kept delete of their key (see
    /// the `tombstones` module): beaten, and matched against nothing.
    entombed: Vec<bool>,
}

/// Kept deletes as [`Winners::entomb`] looks them up: key (row format) to
/// the greatest sequence (row format) a delete of it had.
pub(super) type TombstoneIndex = KeyMap<Box<[u8]>>;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is missing")))
}

fn converter(batch: &RecordBatch, names: &[String]) -> Result<(RowConverter, Rows), ArrowError> {
    let cols: Vec<ArrayRef> = names
        .iter()
        .map(|n| column(batch, n).cloned())
        .collect::<Result<_, _>>()?;
    let conv = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = conv.convert_columns(&cols)?;
    Ok((conv, rows))
}

/// Reduces `changes` (batches of one schema, with [`OFFSET_COLUMN`] and
/// [`DELETE_COLUMN`]) to the last change per key: the greatest sequence,
/// ties to the greater offset, then to the later row.
pub(super) fn reduce(changes: &[RecordBatch], rules: &MergeRules) -> Result<Winners, ArrowError> {
    let schema = changes
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| ArrowError::InvalidArgumentError("no changes".into()))?;
    let all = arrow::compute::concat_batches(&schema, changes)?;
    let (_, keys) = converter(&all, &rules.keys)?;
    let sequence = match &rules.sequence_by {
        Some(s) => Some(converter(&all, std::slice::from_ref(s))?.1),
        None => None,
    };
    let offsets = column(&all, OFFSET_COLUMN)?.as_primitive::<Int64Type>();
    let newer = |i: usize, w: usize| {
        let by_sequence = sequence
            .as_ref()
            .map_or(std::cmp::Ordering::Equal, |s| s.row(i).cmp(&s.row(w)));
        by_sequence.then(offsets.value(i).cmp(&offsets.value(w))) != std::cmp::Ordering::Less
    };
    let mut best: KeyMap<usize> =
        KeyMap::with_capacity_and_hasher(all.num_rows(), Default::default());
    for i in 0..all.num_rows() {
        match best.entry(keys.row(i).as_ref().into()) {
            Entry::Vacant(e) => {
                e.insert(i);
            }
            Entry::Occupied(mut e) => {
                if newer(i, *e.get()) {
                    e.insert(i);
                }
            }
        }
    }
    let mut rows: Vec<u32> = best.values().map(|&i| i as u32).collect();
    rows.sort_unstable();
    let batch = arrow::compute::take_record_batch(&all, &UInt32Array::from(rows))?;
    let (keys, key_rows) = converter(&batch, &rules.keys)?;
    let key_types = rules
        .keys
        .iter()
        .map(|k| column(&batch, k).map(|c| c.data_type().clone()))
        .collect::<Result<_, _>>()?;
    let index = (0..batch.num_rows())
        .map(|i| (key_rows.row(i).as_ref().into(), i))
        .collect();
    let sequence = match &rules.sequence_by {
        Some(s) => Some(converter(&batch, std::slice::from_ref(s))?),
        None => None,
    };
    let beaten = vec![false; batch.num_rows()];
    let found = vec![false; batch.num_rows()];
    let entombed = vec![false; batch.num_rows()];
    Ok(Winners {
        batch,
        index,
        keys,
        key_types,
        sequence,
        beaten,
        found,
        entombed,
    })
}

impl Winners {
    /// Matches the stored rows of `stored` (holding at least the key and
    /// sequence columns) against the changes: `true` for each row a change
    /// replaces or deletes. A stored row newer than its key's change stays,
    /// and that change is marked beaten.
    pub(super) fn matches(
        &mut self,
        stored: &RecordBatch,
        rules: &MergeRules,
    ) -> Result<Vec<bool>, ArrowError> {
        let cast = |c: &ArrayRef, to: &DataType| {
            if c.data_type() == to {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, to)
            }
        };
        let cols: Vec<ArrayRef> = rules
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(n, t)| cast(column(stored, n)?, t))
            .collect::<Result<_, _>>()?;
        let keys = self.keys.convert_columns(&cols)?;
        let stored_sequence = match (&self.sequence, &rules.sequence_by) {
            (Some((conv, _)), Some(s)) => {
                let to = column(&self.batch, s)?.data_type().clone();
                Some(conv.convert_columns(&[cast(column(stored, s)?, &to)?])?)
            }
            _ => None,
        };
        let mut out = vec![false; stored.num_rows()];
        for (r, hit) in out.iter_mut().enumerate() {
            let Some(&w) = self.index.get(keys.row(r).as_ref()) else {
                continue;
            };
            if self.entombed[w] {
                continue;
            }
            let stored_is_newer = match (&stored_sequence, &self.sequence) {
                (Some(s), Some((_, mine))) => s.row(r) > mine.row(w),
                _ => false,
            };
            if stored_is_newer {
                self.beaten[w] = true;
            } else {
                *hit = true;
                self.found[w] = true;
            }
        }
        Ok(out)
    }

    /// A cache key for the [`KeyIndex`] of a file as these changes build
    /// it: the key and sequence types (the row format depends on them).
    pub(super) fn index_signature(&self, rules: &MergeRules) -> String {
        let sequence = rules
            .sequence_by
            .as_ref()
            .and_then(|s| self.batch.column_by_name(s))
            .map(|c| c.data_type().clone());
        format!("{:?} {:?}", self.key_types, sequence)
    }

    /// The [`KeyIndex`] of a file read as `columns` (see [`Winners::matches`]
    /// for the columns), `None` if it cannot index the file.
    pub(super) fn key_index(
        &self,
        columns: &Columns,
        rules: &MergeRules,
    ) -> Result<Option<KeyIndex>, ArrowError> {
        let sequence = match (&self.sequence, &rules.sequence_by) {
            (Some((conv, _)), Some(s)) => {
                let t = column(&self.batch, s)?.data_type().clone();
                Some((s.as_str(), t, conv))
            }
            _ => None,
        };
        KeyIndex::build(
            &columns.batches,
            columns.rows,
            &rules.keys,
            &self.key_types,
            &self.keys,
            sequence.as_ref().map(|(s, t, c)| (*s, t, *c)),
        )
    }

    /// [`Winners::matches`] by a file's [`KeyIndex`]: the physical rows a
    /// change replaces or deletes, ascending; rows `deleted` (by the file's
    /// vector) are never matched. Looks the smaller side up in the larger:
    /// the changed keys in the file, or the file's keys in the changes.
    pub(super) fn index_matches(&mut self, index: &KeyIndex, deleted: &RoaringTreemap) -> Vec<u64> {
        let Winners {
            index: changed,
            sequence,
            beaten,
            found,
            entombed,
            ..
        } = self;
        // Sparse: a batch hits a few hundred rows of a file of thousands.
        let mut out = Vec::new();
        let mut hit = |w: usize, key: &[u8]| {
            if entombed[w] {
                return;
            }
            for r in index.rows_of(key) {
                if deleted.contains(u64::from(r)) {
                    continue;
                }
                let stored_is_newer = match (index.sequence(r), sequence.as_ref()) {
                    (Some(s), Some((_, mine))) => s > mine.row(w),
                    _ => false,
                };
                if stored_is_newer {
                    beaten[w] = true;
                } else {
                    out.push(u64::from(r));
                    found[w] = true;
                }
            }
        };
        if index.key_count() < changed.len() {
            for key in index.keys() {
                if let Some(&w) = changed.get(key) {
                    hit(w, key);
                }
            }
        } else {
            for (key, &w) in changed.iter() {
                hit(w, key);
            }
        }
        out.sort_unstable();
        out
    }

    /// The [`TombstoneIndex`] of kept deletes `batches` (each with the key
    /// columns and the sequence column, cast to the changes' types): per
    /// key the greatest sequence.
    pub(super) fn tombstone_index(
        &self,
        batches: &[RecordBatch],
        rules: &MergeRules,
    ) -> Result<TombstoneIndex, ArrowError> {
        let (Some((conv, _)), Some(s)) = (&self.sequence, &rules.sequence_by) else {
            return Err(ArrowError::InvalidArgumentError(
                "kept deletes need `sequence_by`".into(),
            ));
        };
        let seq_type = column(&self.batch, s)?.data_type().clone();
        let cast = |c: &ArrayRef, to: &DataType| {
            if c.data_type() == to {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, to)
            }
        };
        let mut out = TombstoneIndex::default();
        for b in batches {
            let cols: Vec<ArrayRef> = rules
                .keys
                .iter()
                .zip(&self.key_types)
                .map(|(n, t)| cast(column(b, n)?, t))
                .collect::<Result<_, _>>()?;
            let keys = self.keys.convert_columns(&cols)?;
            let seqs = conv.convert_columns(&[cast(column(b, s)?, &seq_type)?])?;
            for r in 0..b.num_rows() {
                let seq = seqs.row(r);
                match out.entry(keys.row(r).as_ref().into()) {
                    Entry::Vacant(e) => {
                        e.insert(seq.as_ref().into());
                    }
                    Entry::Occupied(mut e) => {
                        if seq.as_ref() > e.get().as_ref() {
                            e.insert(seq.as_ref().into());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Marks beaten (and matched against no stored row) each change older
    /// than a kept delete of its key in `index`; a change as old as the
    /// delete is not (the later change wins a tie). Returns how many.
    pub(super) fn entomb(&mut self, index: &TombstoneIndex) -> u64 {
        let Some((_, mine)) = &self.sequence else {
            return 0;
        };
        let mut n = 0;
        let probe_changes = self.index.len() <= index.len();
        let mut mark = |w: usize, kept: &[u8]| {
            if !self.entombed[w] && kept > mine.row(w).as_ref() {
                self.entombed[w] = true;
                self.beaten[w] = true;
                n += 1;
            }
        };
        if probe_changes {
            for (key, &w) in &self.index {
                if let Some(kept) = index.get(key) {
                    mark(w, kept);
                }
            }
        } else {
            for (key, kept) in index {
                if let Some(&w) = self.index.get(key) {
                    mark(w, kept);
                }
            }
        }
        n
    }

    /// The deletes this merge applies, as deletes to keep (see
    /// [`tombstone_rows`]). A delete beaten by a newer stored row or by a
    /// kept delete is not among them.
    pub(super) fn tombstones(
        &self,
        rules: &MergeRules,
        at_column: &str,
        deleted_at: i64,
    ) -> Result<RecordBatch, ArrowError> {
        let deletes = column(&self.batch, DELETE_COLUMN)?.as_boolean();
        let keep: BooleanArray = (0..self.batch.num_rows())
            .map(|i| Some(!self.beaten[i] && deletes.is_valid(i) && deletes.value(i)))
            .collect();
        tombstone_rows(&self.batch, &keep, rules, at_column, deleted_at)
    }

    /// The rows the merge (as matched so far) inserts, updates and
    /// deletes: winners not beaten, by whether they found a stored row.
    pub(super) fn counts(&self) -> Result<(u64, u64, u64), ArrowError> {
        let deletes = column(&self.batch, DELETE_COLUMN)?.as_boolean();
        let (mut inserted, mut updated, mut deleted) = (0, 0, 0);
        for i in 0..self.batch.num_rows() {
            let delete = deletes.is_valid(i) && deletes.value(i);
            match (self.beaten[i], self.found[i], delete) {
                (true, _, _) | (false, false, true) => {}
                (false, true, true) => deleted += 1,
                (false, true, false) => updated += 1,
                (false, false, false) => inserted += 1,
            }
        }
        Ok((inserted, updated, deleted))
    }

    /// The changed rows to write: winners that are not deletes and not
    /// beaten by a newer stored row.
    pub(super) fn upserts(&self) -> Result<RecordBatch, ArrowError> {
        let deletes = column(&self.batch, DELETE_COLUMN)?.as_boolean();
        let keep: BooleanArray = (0..self.batch.num_rows())
            .map(|i| Some(!(self.beaten[i] || deletes.is_valid(i) && deletes.value(i))))
            .collect();
        arrow::compute::filter_record_batch(&self.batch, &keep)
    }
}

/// The rows of `batch` that `keep` selects as deletes to keep: their key
/// columns, the sequence column and `deleted_at` (milliseconds since the
/// epoch) in a column named `at_column`.
pub(super) fn tombstone_rows(
    batch: &RecordBatch,
    keep: &BooleanArray,
    rules: &MergeRules,
    at_column: &str,
    deleted_at: i64,
) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let schema = batch.schema();
    for name in rules.keys.iter().chain(&rules.sequence_by) {
        let (i, f) = schema
            .column_with_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is missing")))?;
        fields.push(f.clone());
        columns.push(arrow::compute::filter(batch.column(i), keep)?);
    }
    let rows = columns.first().map_or(0, |c| c.len());
    fields.push(Field::new(at_column, DataType::Int64, false));
    columns.push(Arc::new(arrow::array::Int64Array::from(vec![
        deleted_at;
        rows
    ])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The schema merged rows are written with: the table's columns (with their
/// nullability), then the change columns the table lacks (schema evolution,
/// nullable), without inlet's own columns.
pub(super) fn output_schema(table: &Schema, changes: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in changes.fields() {
        if !is_internal(f.name()) && table.field_with_name(f.name()).is_err() {
            fields.push(f.as_ref().clone().with_nullable(true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// `batch` with the columns of `schema`, by name: cast where the type
/// differs, null where the batch lacks one (a file older than a column).
pub(super) fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// A primitive leaf of a key column that file statistics can prune on:
/// its path in the stats JSON and the changes' values.
enum Leaf {
    Int(Vec<String>, Vec<i64>),
    Str(Vec<String>, Vec<String>),
}

/// Delta truncates string statistics to this many characters: a max of
/// that length may be below the real one.
const STRING_STATS_PREFIX: usize = 32;

fn leaf(path: Vec<String>, array: &ArrayRef) -> Option<Leaf> {
    let ints = |a: &ArrayRef| {
        let c = arrow::compute::cast(a, &DataType::Int64).ok()?;
        let mut v: Vec<i64> = c.as_primitive::<Int64Type>().iter().flatten().collect();
        v.sort_unstable();
        Some(v)
    };
    match array.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            Some(Leaf::Int(path, ints(array)?))
        }
        DataType::Utf8 => {
            let mut v: Vec<String> = array
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect();
            v.sort_unstable();
            Some(Leaf::Str(path, v))
        }
        _ => None,
    }
}

/// Prunes files by the key columns' min/max statistics.
pub(super) struct Pruner {
    leaves: Vec<Leaf>,
}

impl Pruner {
    /// From the winners' key columns (primitive columns, and the primitive
    /// fields of struct columns).
    pub(super) fn new(winners: &RecordBatch, rules: &MergeRules) -> Self {
        let mut leaves = Vec::new();
        for k in &rules.keys {
            let Some(c) = winners.column_by_name(k) else {
                continue;
            };
            if let DataType::Struct(fields) = c.data_type() {
                let s = c.as_struct();
                for (f, child) in fields.iter().zip(s.columns()) {
                    leaves.extend(leaf(vec![k.clone(), f.name().clone()], child));
                }
            } else {
                leaves.extend(leaf(vec![k.clone()], c));
            }
        }
        Pruner { leaves }
    }

    /// Whether the file with these statistics (JSON) may hold a changed key.
    pub(super) fn may_hold(&self, stats: Option<&str>) -> bool {
        let Some(stats) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        else {
            return true;
        };
        let at = |root: &str, path: &[String]| {
            path.iter()
                .try_fold(&stats[root], |v, p| v.get(p))
                .filter(|v| !v.is_null())
                .cloned()
        };
        self.leaves.iter().all(|l| match l {
            Leaf::Int(path, values) => {
                let (Some(min), Some(max)) = (
                    at("minValues", path).and_then(|v| v.as_i64()),
                    at("maxValues", path).and_then(|v| v.as_i64()),
                ) else {
                    return true;
                };
                let i = values.partition_point(|v| *v < min);
                values.get(i).is_some_and(|v| *v <= max)
            }
            Leaf::Str(path, values) => {
                let min = at("minValues", path).and_then(|v| v.as_str().map(str::to_string));
                let max = at("maxValues", path).and_then(|v| v.as_str().map(str::to_string));
                let (Some(min), Some(max)) = (min, max) else {
                    return true;
                };
                let i = values.partition_point(|v| *v < min);
                let Some(first) = values.get(i) else {
                    return false;
                };
                max.chars().count() >= STRING_STATS_PREFIX || *first <= max
            }
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int64Array, StringArray};

    /// A batch of changes: (id, v, seq, offset, delete) per row.
    pub(in crate::sink) fn changes(rows: &[(i64, &str, i64, i64, bool)]) -> RecordBatch {
        // (id, v, seq, offset, delete)
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("seq", DataType::Int64, true),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
            Field::new(DELETE_COLUMN, DataType::Boolean, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.4)))),
            ],
        )
        .unwrap()
    }

    fn values(b: &RecordBatch) -> Vec<(i64, String)> {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let vs = b.column(1).as_string::<i32>();
        let mut out: Vec<(i64, String)> = (0..b.num_rows())
            .map(|i| (ids.value(i), vs.value(i).to_string()))
            .collect();
        out.sort();
        out
    }

    fn rules(seq: bool) -> MergeRules {
        MergeRules {
            keys: vec!["id".into()],
            sequence_by: seq.then(|| "seq".into()),
            history: None,
        }
    }

    /// Per key the greatest sequence wins, ties to the greater offset;
    /// without `sequence_by`, the greatest offset.
    #[test]
    fn the_last_change_per_key_wins_and_ties_go_to_the_later_offset() {
        let c = changes(&[
            (1, "a", 5, 10, false),
            (1, "b", 3, 11, false), // older sequence, later offset
            (2, "c", 7, 12, false),
            (2, "d", 7, 13, false), // tie: the later offset wins
            (3, "e", 1, 14, false),
        ]);
        let w = reduce(std::slice::from_ref(&c), &rules(true)).unwrap();
        assert_eq!(
            values(&w.batch),
            [(1, "a".into()), (2, "d".into()), (3, "e".into())]
        );
        let w = reduce(&[c], &rules(false)).unwrap();
        assert_eq!(
            values(&w.batch),
            [(1, "b".into()), (2, "d".into()), (3, "e".into())]
        );
    }

    /// A stored row newer than its change stays and beats it; as old or
    /// older, it is replaced; deletes are not written.
    #[test]
    fn stored_rows_newer_than_the_change_stay() {
        let c = changes(&[
            (1, "new", 5, 10, false),
            (2, "new", 5, 11, false),
            (3, "gone", 5, 12, true),
        ]);
        let mut w = reduce(&[c], &rules(true)).unwrap();
        let stored = changes(&[
            (1, "old", 4, 0, false),
            (2, "newer", 6, 1, false),
            (3, "old", 5, 2, false),
            (4, "other", 1, 3, false),
        ]);
        assert_eq!(
            w.matches(&stored, &rules(true)).unwrap(),
            [true, false, true, false]
        );
        assert_eq!(values(&w.upserts().unwrap()), [(1, "new".into())]);
        // 1 replaces a row, 2 is beaten, 3 deletes one.
        assert_eq!(w.counts().unwrap(), (0, 1, 1));
        let mut w = reduce(
            &[changes(&[(9, "x", 1, 13, false), (8, "", 1, 14, true)])],
            &rules(true),
        )
        .unwrap();
        w.matches(&stored, &rules(true)).unwrap();
        assert_eq!(
            w.counts().unwrap(),
            (1, 0, 0),
            "an insert; a delete of nothing"
        );
    }

    /// A change older than a kept delete of its key is beaten and matches
    /// no stored row; one as new as it applies. The deletes to keep are
    /// those applied, with their sequence and time.
    #[test]
    fn changes_older_than_a_kept_delete_are_beaten() {
        let c = changes(&[
            (1, "old", 3, 10, false),
            (2, "tie", 5, 11, false),
            (3, "", 7, 12, true),
            (4, "", 1, 13, true),
        ]);
        let mut w = reduce(&[c], &rules(true)).unwrap();
        let kept = changes(&[
            (1, "", 5, 0, true),
            (2, "", 5, 1, true),
            (4, "", 2, 2, true),
        ]);
        let index = w.tombstone_index(&[kept], &rules(true)).unwrap();
        assert_eq!(w.entomb(&index), 2, "1 and 4 are older than their deletes");
        let stored = changes(&[(1, "x", 0, 0, false), (3, "y", 0, 1, false)]);
        assert_eq!(w.matches(&stored, &rules(true)).unwrap(), [false, true]);
        assert_eq!(values(&w.upserts().unwrap()), [(2, "tie".into())]);
        let t = w.tombstones(&rules(true), "at", 99).unwrap();
        assert_eq!(t.num_rows(), 1, "only 3's delete applied");
        assert_eq!(t.column(0).as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(t.column(1).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(t.column(2).as_primitive::<Int64Type>().value(0), 99);
    }

    #[test]
    fn files_are_pruned_by_key_statistics() {
        let c = changes(&[(5, "x", 0, 0, false), (50, "y", 0, 1, false)]);
        let p = Pruner::new(&c, &rules(false));
        let s = |min: i64, max: i64| {
            format!(r#"{{"numRecords":1,"minValues":{{"id":{min}}},"maxValues":{{"id":{max}}}}}"#)
        };
        assert!(p.may_hold(Some(&s(0, 5))));
        assert!(p.may_hold(Some(&s(10, 60))));
        assert!(!p.may_hold(Some(&s(6, 49))));
        assert!(!p.may_hold(Some(&s(51, 100))));
        assert!(p.may_hold(None), "no statistics: read it");
        assert!(p.may_hold(Some(r#"{"numRecords":1}"#)));
    }

    #[test]
    fn tables_with_features_the_merge_cannot_keep_are_refused() {
        let p: Protocol = serde_json::from_str(
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors","columnMapping"],"writerFeatures":["deletionVectors","columnMapping","appendOnly"]}"#,
        )
        .unwrap();
        let why = refusal(&p, "history").unwrap();
        assert!(why.contains("columnMapping"), "{why}");
        assert!(!why.contains("deletionVectors"), "merged into: {why}");
        assert!(why.contains(r#"`mode = "history"`"#), "{why}");
        let p: Protocol = serde_json::from_str(
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":[],"writerFeatures":["identityColumns"]}"#,
        )
        .unwrap();
        assert!(refusal(&p, "upsert").unwrap().contains("identityColumns"));
        let p: Protocol = serde_json::from_str(
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}"#,
        )
        .unwrap();
        assert_eq!(refusal(&p, "upsert"), None);
        let p: Protocol =
            serde_json::from_str(r#"{"minReaderVersion":1,"minWriterVersion":2}"#).unwrap();
        assert_eq!(refusal(&p, "upsert"), None);
    }
}
