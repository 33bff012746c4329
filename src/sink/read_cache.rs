//! What merges read of a table, kept between batches: a data file's key
//! (and sequence) columns, or for `upsert` merges its key index, and the
//! rows a deletion vector file deletes.
//!
//! Both are immutable (Delta never writes a data file or a vector file
//! twice under one name), so an entry stays right for as long as it is
//! kept, whoever commits meanwhile. Without it a merge into a table with
//! deletion vectors fetches and decodes every candidate file on every batch
//! (scattered keys leave statistics nothing to prune), although the vector
//! it writes leaves the file as it was. The byte budget bounds memory; the
//! least recently used entries go first.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use roaring::RoaringTreemap;

use super::key_index::KeyIndex;

/// Bytes of decoded columns and vectors a table's merges keep (about 16
/// bytes a row for a BIGINT key and sequence: 16M physical rows).
pub(super) const BUDGET: usize = 256 << 20;

/// A data file's columns as a merge reads them: the reader's batches
/// (completed with partition values), and the file's physical row count.
#[derive(Clone)]
pub(super) struct Columns {
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
}

#[derive(Hash, PartialEq, Eq)]
enum Key {
    /// A data file's path, and the columns read.
    Columns(String, Vec<String>),
    /// A vector file's encoded path, and the vector's offset in it.
    Vector(String, i32),
    /// A data file's path, the columns read and the index's signature
    /// (`Winners::index_signature`).
    Index(String, Vec<String>, String),
}

enum Value {
    Columns(Columns),
    Vector(Arc<RoaringTreemap>),
    Index(Arc<KeyIndex>),
}

struct Entry {
    value: Value,
    bytes: usize,
    used: u64,
}

/// The cache of one table (see the module docs).
pub(super) struct ReadCache {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    budget: usize,
    clock: u64,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self::with_budget(BUDGET)
    }
}

impl ReadCache {
    /// A cache keeping at most `budget` bytes.
    pub(super) fn with_budget(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
        }
    }

    /// Bytes kept now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The `needed` columns of the file at `path`, if kept.
    pub(super) fn columns(&mut self, path: &str, needed: &[&String]) -> Option<Columns> {
        match &self.touch(&columns_key(path, needed))?.value {
            Value::Columns(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Keeps the `needed` columns of the file at `path`.
    pub(super) fn put_columns(&mut self, path: &str, needed: &[&String], columns: Columns) {
        let bytes = columns
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            + path.len();
        self.put(columns_key(path, needed), Value::Columns(columns), bytes);
    }

    /// The rows the vector `dv` deletes, if kept (vectors stored in files
    /// only: an inline one is read from the log entry itself).
    pub(super) fn vector(&mut self, dv: &DeletionVectorDescriptor) -> Option<Arc<RoaringTreemap>> {
        match &self.touch(&vector_key(dv)?)?.value {
            Value::Vector(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The key index of the file at `path` read on `needed`, built as
    /// `signature` says, if kept.
    pub(super) fn index(
        &mut self,
        path: &str,
        needed: &[&String],
        signature: &str,
    ) -> Option<Arc<KeyIndex>> {
        match &self.touch(&index_key(path, needed, signature))?.value {
            Value::Index(i) => Some(i.clone()),
            _ => None,
        }
    }

    /// Keeps the key index of the file at `path`.
    pub(super) fn put_index(
        &mut self,
        path: &str,
        needed: &[&String],
        signature: &str,
        index: Arc<KeyIndex>,
    ) {
        let bytes = index.memory_size() + path.len() + signature.len();
        self.put(
            index_key(path, needed, signature),
            Value::Index(index),
            bytes,
        );
    }

    /// Keeps the rows the vector `dv` deletes.
    pub(super) fn put_vector(&mut self, dv: &DeletionVectorDescriptor, rows: Arc<RoaringTreemap>) {
        if let Some(key) = vector_key(dv) {
            let bytes = rows.serialized_size() + dv.path_or_inline_dv.len();
            self.put(key, Value::Vector(rows), bytes);
        }
    }

    fn touch(&mut self, key: &Key) -> Option<&Entry> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(key)?;
        entry.used = clock;
        Some(entry)
    }

    fn put(&mut self, key: Key, value: Value, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        self.clock += 1;
        let entry = Entry {
            value,
            bytes,
            used: self.clock,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        if self.bytes > self.budget {
            self.evict();
        }
    }

    /// Drops the least recently used entries until a tenth of the budget
    /// is free (so that eviction, a sort, is not paid on every put).
    fn evict(&mut self) {
        let goal = self.budget - self.budget / 10;
        let mut by_use: Vec<(u64, usize)> = Vec::with_capacity(self.entries.len());
        by_use.extend(self.entries.values().map(|e| (e.used, e.bytes)));
        by_use.sort_unstable();
        let mut freed = 0;
        let mut cutoff = 0;
        for (used, bytes) in by_use {
            if self.bytes - freed <= goal {
                break;
            }
            freed += bytes;
            cutoff = used;
        }
        self.entries.retain(|_, e| e.used > cutoff);
        self.bytes -= freed;
    }
}

fn columns_key(path: &str, needed: &[&String]) -> Key {
    Key::Columns(
        path.to_string(),
        needed.iter().map(|c| c.to_string()).collect(),
    )
}

fn index_key(path: &str, needed: &[&String], signature: &str) -> Key {
    Key::Index(
        path.to_string(),
        needed.iter().map(|c| c.to_string()).collect(),
        signature.to_string(),
    )
}

fn vector_key(dv: &DeletionVectorDescriptor) -> Option<Key> {
    (dv.storage_type == StorageType::UuidRelativePath)
        .then(|| Key::Vector(dv.path_or_inline_dv.clone(), dv.offset.unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn columns(rows: i64) -> Columns {
        let ids = Int64Array::from_iter_values(0..rows);
        let batch = RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).unwrap();
        Columns {
            batches: vec![batch],
            rows: rows as u64,
        }
    }

    fn vector(path: &str, offset: i32) -> DeletionVectorDescriptor {
        DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: path.to_string(),
            offset: Some(offset),
            size_in_bytes: 10,
            cardinality: 1,
        }
    }

    #[test]
    fn entries_are_found_by_path_columns_and_vector_offset() {
        let mut cache = ReadCache::default();
        let (id, seq) = ("id".to_string(), "seq".to_string());
        cache.put_columns("a.parquet", &[&id], columns(10));
        assert_eq!(cache.columns("a.parquet", &[&id]).unwrap().rows, 10);
        assert!(cache.columns("a.parquet", &[&id, &seq]).is_none());
        assert!(cache.columns("b.parquet", &[&id]).is_none());
        let rows = Arc::new([1u64, 5].into_iter().collect::<RoaringTreemap>());
        cache.put_vector(&vector("abc", 1), rows.clone());
        assert_eq!(cache.vector(&vector("abc", 1)), Some(rows));
        assert_eq!(cache.vector(&vector("abc", 40)), None);
        let mut inline = vector("abc", 1);
        inline.storage_type = StorageType::Inline;
        cache.put_vector(&inline, Arc::new(RoaringTreemap::new()));
        assert_eq!(cache.vector(&inline), None, "inline vectors are not kept");
    }

    /// Over budget, the least recently used entries go, and the bytes
    /// kept stay within the budget.
    #[test]
    fn the_least_recently_used_go_first() {
        let id = "id".to_string();
        let one = {
            let mut c = ReadCache::default();
            c.put_columns("x", &[&id], columns(1000));
            c.bytes()
        };
        let mut cache = ReadCache::with_budget(one * 3 + one / 2);
        for f in ["a", "b", "c"] {
            cache.put_columns(f, &[&id], columns(1000));
        }
        assert!(cache.columns("a", &[&id]).is_some(), "a used last");
        cache.put_columns("d", &[&id], columns(1000));
        assert!(cache.bytes() <= one * 3 + one / 2);
        assert!(cache.columns("a", &[&id]).is_some());
        assert!(cache.columns("d", &[&id]).is_some());
        assert!(
            cache.columns("b", &[&id]).is_none(),
            "b was least recently used"
        );
        let mut tiny = ReadCache::with_budget(one / 2);
        tiny.put_columns("a", &[&id], columns(1000));
        assert_eq!(
            (tiny.bytes(), tiny.columns("a", &[&id]).is_none()),
            (0, true)
        );
    }
}
