//! A data file's stored keys, for `upsert` merges: the physical rows of
//! each key, and each row's sequence.
//!
//! Built once from the file's key (and sequence) columns and kept in the
//! read cache (files never change), so that a batch looks its changed keys
//! up in each candidate file, or the file's keys up in the batch, whichever
//! is smaller, instead of converting and hashing every stored row of every
//! candidate file again on every batch. Keys are in the row format of the
//! batch's key converter: the same key types always give the same bytes,
//! so an index serves every later batch with those types (the cache key
//! holds them).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::row::{Row, RowConverter, Rows};

/// No next row of the same key.
const END: u32 = u32::MAX;

/// A map from keys in the row format, hashed by foldhash (per-process
/// seed): the merge probes one per changed key and candidate file.
pub(super) type KeyMap<V> = HashMap<Box<[u8]>, V, foldhash::fast::RandomState>;

/// The keys of one data file (see the module docs).
pub(super) struct KeyIndex {
    /// Key (row format) to its last physical row in the file.
    last: KeyMap<u32>,
    /// The previous row of the same key, per row ([`END`]: none); only when
    /// a key repeats in the file (a foreign writer's file, or deleted rows).
    previous: Option<Vec<u32>>,
    /// Each row's sequence, with `sequence_by`.
    sequence: Option<Rows>,
    /// The rows of each of the reader's batches (for [`super::dv::FileHits`]).
    pub(super) batch_rows: Vec<usize>,
    /// The file's physical rows.
    pub(super) rows: u64,
}

/// The cast of `c` to `to`, if it differs.
pub(super) fn cast(c: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if c.data_type() == to {
        Ok(c.clone())
    } else {
        arrow::compute::cast(c, to)
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` is missing")))
}

impl KeyIndex {
    /// The index of a file read as `batches` (of `rows` physical rows):
    /// its `keys` columns cast to `key_types` and converted by
    /// `converter`, and with `sequence` (the column, its type and its
    /// converter) each row's sequence. A row with a null key column is
    /// left out (a change never has one). `None` for a file of more rows
    /// than positions fit in 32 bits.
    pub(super) fn build(
        batches: &[RecordBatch],
        rows: u64,
        keys: &[String],
        key_types: &[DataType],
        converter: &RowConverter,
        sequence: Option<(&str, &DataType, &RowConverter)>,
    ) -> Result<Option<Self>, ArrowError> {
        if rows >= u64::from(END) {
            return Ok(None);
        }
        let mut last: KeyMap<u32> =
            KeyMap::with_capacity_and_hasher(rows as usize, Default::default());
        let mut previous: Option<Vec<u32>> = None;
        let mut sequences = Vec::new();
        let (mut base, mut batch_rows) = (0u32, Vec::with_capacity(batches.len()));
        for b in batches {
            let cols: Vec<ArrayRef> = keys
                .iter()
                .zip(key_types)
                .map(|(k, t)| cast(column(b, k)?, t))
                .collect::<Result<_, _>>()?;
            let converted = converter.convert_columns(&cols)?;
            let nulls = cols.iter().any(|c| c.null_count() > 0);
            for i in 0..b.num_rows() {
                if nulls && cols.iter().any(|c| c.is_null(i)) {
                    continue;
                }
                let r = base + i as u32;
                match last.entry(converted.row(i).as_ref().into()) {
                    Entry::Vacant(e) => {
                        e.insert(r);
                    }
                    Entry::Occupied(mut e) => {
                        let previous = previous.get_or_insert_with(|| vec![END; rows as usize]);
                        previous[r as usize] = *e.get();
                        e.insert(r);
                    }
                }
            }
            if let Some((s, t, _)) = sequence {
                sequences.push(cast(column(b, s)?, t)?);
            }
            base += b.num_rows() as u32;
            batch_rows.push(b.num_rows());
        }
        if u64::from(base) != rows {
            return Err(ArrowError::InvalidArgumentError(format!(
                "the file has {rows} rows, its batches {base}"
            )));
        }
        let sequence = match sequence {
            Some((_, t, conv)) => {
                let parts: Vec<&dyn Array> = sequences.iter().map(|a| a.as_ref()).collect();
                let all = if parts.is_empty() {
                    arrow::array::new_empty_array(t)
                } else {
                    arrow::compute::concat(&parts)?
                };
                Some(conv.convert_columns(&[all])?)
            }
            None => None,
        };
        last.shrink_to_fit();
        Ok(Some(KeyIndex {
            last,
            previous,
            sequence,
            batch_rows,
            rows,
        }))
    }

    /// The physical rows holding `key` (row format), last first.
    pub(super) fn rows_of(&self, key: &[u8]) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.last.get(key).copied().unwrap_or(END);
        std::iter::from_fn(move || {
            if next == END {
                return None;
            }
            let r = next;
            next = self.previous.as_ref().map_or(END, |p| p[r as usize]);
            Some(r)
        })
    }

    /// The distinct keys of the file (row format).
    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.last.keys().map(|k| k.as_ref())
    }

    /// How many distinct keys the file holds.
    pub(super) fn key_count(&self) -> usize {
        self.last.len()
    }

    /// The sequence of physical row `r`, with `sequence_by`.
    pub(super) fn sequence(&self, r: u32) -> Option<Row<'_>> {
        self.sequence.as_ref().map(|s| s.row(r as usize))
    }

    /// About the bytes the index holds in memory.
    pub(super) fn memory_size(&self) -> usize {
        let keys: usize = self.last.keys().map(|k| k.len().next_multiple_of(16)).sum();
        let table = self.last.capacity() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1);
        let previous = self.previous.as_ref().map_or(0, |p| p.len() * 4);
        let sequence = self.sequence.as_ref().map_or(0, Rows::size);
        keys + table + previous + sequence + self.batch_rows.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::row::SortField;
    use std::sync::Arc;

    fn batch(ids: &[Option<i64>], seqs: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            ("seq", Arc::new(Int64Array::from(seqs.to_vec())) as ArrayRef),
            (
                "v",
                Arc::new(StringArray::from(vec!["x"; ids.len()])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    /// Keys are found at their physical rows across the reader's batches,
    /// a repeated key at each of its rows, a null key not at all, and the
    /// sequences line up with the rows.
    #[test]
    fn keys_are_found_at_their_rows_across_batches() {
        let conv = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let seq_conv = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let batches = [
            batch(&[Some(1), Some(2), None], &[10, 20, 30]),
            batch(&[Some(3), Some(1)], &[40, 50]),
        ];
        let index = KeyIndex::build(
            &batches,
            5,
            &["id".into()],
            &[DataType::Int64],
            &conv,
            Some(("seq", &DataType::Int64, &seq_conv)),
        )
        .unwrap()
        .unwrap();
        let key = |k: i64| {
            let rows = conv
                .convert_columns(&[Arc::new(Int64Array::from(vec![k])) as ArrayRef])
                .unwrap();
            rows.row(0).as_ref().to_vec()
        };
        assert_eq!(index.rows_of(&key(1)).collect::<Vec<_>>(), vec![4, 0]);
        assert_eq!(index.rows_of(&key(2)).collect::<Vec<_>>(), vec![1]);
        assert_eq!(index.rows_of(&key(3)).collect::<Vec<_>>(), vec![3]);
        assert_eq!(index.rows_of(&key(7)).count(), 0);
        assert_eq!((index.key_count(), index.keys().count()), (3, 3));
        assert_eq!(index.batch_rows, vec![3, 2]);
        let seq = |v: i64| {
            seq_conv
                .convert_columns(&[Arc::new(Int64Array::from(vec![v])) as ArrayRef])
                .unwrap()
        };
        assert_eq!(index.sequence(3).unwrap(), seq(40).row(0));
        assert!(index.sequence(4).unwrap() > seq(40).row(0));
        assert!(index.memory_size() > 0);
        // A key cast to the changes' type: an INT file column, BIGINT keys.
        let narrow = RecordBatch::try_from_iter([(
            "id",
            Arc::new(arrow::array::Int32Array::from(vec![2, 9])) as ArrayRef,
        )])
        .unwrap();
        let index = KeyIndex::build(
            &[narrow],
            2,
            &["id".into()],
            &[DataType::Int64],
            &conv,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(index.rows_of(&key(9)).collect::<Vec<_>>(), vec![1]);
        assert!(index.sequence(0).is_none());
    }
}
