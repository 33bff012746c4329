//! Deletion vectors (Delta's merge-on-read): how a merge removes rows from
//! an existing file without rewriting it, and how the rows an existing
//! vector deletes are kept out of a merge's reads.
//!
//! Format (Delta protocol, "Deletion Vector Format"): a vector is a
//! `RoaringBitmapArray`, the magic 1681511377 then a 64-bit roaring treemap
//! in its portable serialization (buckets of 32-bit roaring bitmaps,
//! little-endian). In a file (`deletion_vector_<uuid>.bin` at the table
//! root, storage type `u`, the path the z85 of the uuid): a version byte 1,
//! then per vector its size (big-endian), the magic and bitmap, and a CRC32
//! of those (big-endian). The kernel's streaming writer writes it; the
//! reader here is async (the object store) and checks size, magic and CRC.
//!
//! Row positions are physical: the index of a row in its Parquet file, all
//! rows counted, deleted or not.
//!
//! A file a merge hits is rewritten instead when it is small next to the
//! batch or would be mostly deleted rows ([`FileHits::rewrites`]): left in
//! place, every batch's file would be hit by every later batch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::error::ArrowError;
use deltalake::kernel::{Add, DeletionVectorDescriptor, Protocol, Remove, StorageType};
use deltalake::DeltaTableError;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use roaring::RoaringTreemap;

use super::merge::{MergeRules, Winners};
use super::read_cache::{Columns, ReadCache};
use crate::config::DeletionVectorConfig;

/// The magic number a serialized `RoaringBitmapArray` starts with.
const MAGIC: u32 = 1_681_511_377;

/// Why a deletion vector could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DvError {
    /// The object store failed.
    #[error("deletion vector {path}: {source}")]
    Store {
        /// The vector's file.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The vector's bytes are not a valid deletion vector.
    #[error("deletion vector {path}: {message}")]
    Format {
        /// The vector's file (or `inline`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Serializing a vector failed (inlet's bug).
    #[error("writing a deletion vector: {0}")]
    Write(#[source] delta_kernel::Error),
}

impl From<DvError> for DeltaTableError {
    fn from(e: DvError) -> Self {
        match e {
            DvError::Store { source, .. } => DeltaTableError::ObjectStore { source },
            // A table whose vector cannot be read is the operator's to fix.
            DvError::Format { .. } => DeltaTableError::MetadataError(e.to_string()),
            DvError::Write(_) => DeltaTableError::Generic(e.to_string()),
        }
    }
}

/// Whether a merge into this table deletes rows with deletion vectors:
/// the writer feature is on and `delta.enableDeletionVectors = true`.
/// Otherwise files are rewritten (honouring the vectors they already have).
pub(super) fn enabled(protocol: &Protocol, configuration: &HashMap<String, String>) -> bool {
    let feature = protocol
        .writer_features()
        .is_some_and(|f| f.iter().any(|f| f.to_string() == "deletionVectors"));
    feature
        && configuration
            .get("delta.enableDeletionVectors")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The relative path of the vector file of `uuid` (no random prefix).
fn file_name(uuid: &uuid::Uuid) -> String {
    format!("deletion_vector_{uuid}.bin")
}

fn format_error(path: &str, message: impl Into<String>) -> DvError {
    DvError::Format {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A `RoaringBitmapArray` (magic and treemap) from `bytes`.
fn decode_bitmap(path: &str, bytes: &[u8]) -> Result<RoaringTreemap, DvError> {
    let magic = bytes
        .get(..4)
        .map(|m| u32::from_le_bytes(m.try_into().expect("4 bytes")))
        .ok_or_else(|| format_error(path, "too short"))?;
    if magic != MAGIC {
        return Err(format_error(path, format!("magic {magic}, not {MAGIC}")));
    }
    RoaringTreemap::deserialize_from(&bytes[4..]).map_err(|e| format_error(path, e.to_string()))
}

/// The rows `dv` deletes (empty without a vector). `store` is rooted at
/// the table.
pub(super) async fn read(
    store: &dyn ObjectStore,
    dv: Option<&DeletionVectorDescriptor>,
) -> Result<RoaringTreemap, DvError> {
    let Some(dv) = dv else {
        return Ok(RoaringTreemap::new());
    };
    let relative = match dv.storage_type {
        StorageType::Inline => {
            let bytes = z85::decode(&dv.path_or_inline_dv)
                .map_err(|e| format_error("inline", e.to_string()))?;
            return decode_bitmap("inline", &bytes);
        }
        StorageType::AbsolutePath => {
            return Err(format_error(
                &dv.path_or_inline_dv,
                "vectors at an absolute path are not read by inlet",
            ))
        }
        StorageType::UuidRelativePath => relative_path(&dv.path_or_inline_dv)?,
    };
    let offset = dv.offset.unwrap_or(1).max(0) as u64;
    let size =
        u64::try_from(dv.size_in_bytes).map_err(|_| format_error(&relative, "negative size"))?;
    let path = deltalake::Path::from(relative.as_str());
    // Size, magic and bitmap, CRC.
    let bytes = store
        .get_range(&path, offset..offset + 4 + size + 4)
        .await
        .map_err(|source| DvError::Store {
            path: relative.clone(),
            source,
        })?;
    if bytes.len() as u64 != 8 + size {
        return Err(format_error(
            &relative,
            "the file is shorter than the vector",
        ));
    }
    let stored_size = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as u64;
    if stored_size != size {
        return Err(format_error(
            &relative,
            format!("size {stored_size} in the file, {size} in the log"),
        ));
    }
    let data = &bytes[4..4 + size as usize];
    let crc = u32::from_be_bytes(bytes[4 + size as usize..].try_into().expect("4 bytes"));
    if crc32fast::hash(data) != crc {
        return Err(format_error(&relative, "CRC mismatch"));
    }
    decode_bitmap(&relative, data)
}

/// `<prefix>/deletion_vector_<uuid>.bin` from a `u` vector's path field
/// (optional prefix, then the z85 of the uuid, 20 characters).
fn relative_path(encoded: &str) -> Result<String, DvError> {
    let split = encoded
        .len()
        .checked_sub(20)
        .filter(|s| encoded.is_char_boundary(*s))
        .ok_or_else(|| format_error(encoded, "the path is not a prefix and a z85 uuid"))?;
    let (prefix, id) = encoded.split_at(split);
    let bytes = z85::decode(id).map_err(|e| format_error(encoded, e.to_string()))?;
    let uuid = uuid::Uuid::from_slice(&bytes).map_err(|e| format_error(encoded, e.to_string()))?;
    Ok(if prefix.is_empty() {
        file_name(&uuid)
    } else {
        format!("{prefix}/{}", file_name(&uuid))
    })
}

/// `hit` applied to the live rows of `batch` (the rows at physical
/// positions `base..` of its file that `deleted` does not hold), its
/// answer spread back over all rows (a deleted row is never hit).
pub(super) fn live_hits(
    batch: &RecordBatch,
    base: u64,
    deleted: &RoaringTreemap,
    hit: impl FnOnce(&RecordBatch) -> Result<Vec<bool>, ArrowError>,
) -> Result<Vec<bool>, ArrowError> {
    let n = batch.num_rows() as u64;
    if deleted.range_cardinality(base..base + n) == 0 {
        return hit(batch);
    }
    let live: Vec<bool> = (base..base + n).map(|r| !deleted.contains(r)).collect();
    let hits = hit(&arrow::compute::filter_record_batch(
        batch,
        &BooleanArray::from(live.clone()),
    )?)?;
    let mut hits = hits.into_iter();
    Ok(live
        .into_iter()
        .map(|l| l && hits.next().unwrap_or(false))
        .collect())
}

/// A candidate file read on its key (and sequence) columns: the rows a
/// merge hits, by physical position, and those its vector already deletes.
pub(super) struct FileHits {
    path: deltalake::Path,
    /// The file's bytes, if they were read (not when its columns were
    /// kept in the cache).
    bytes: Option<bytes::Bytes>,
    /// The physical rows hit, ascending.
    hit_rows: Vec<u64>,
    /// The rows of each of the reader's batches (as `hits` read them).
    batch_rows: Vec<usize>,
    deleted: Arc<RoaringTreemap>,
    rows: u64,
}

/// Reads the file at `path` (whose vector is `dv`) on its `needed` columns,
/// completed by `fill` (the partition columns a data file does not hold),
/// and matches its live rows with `hit`; `None` if no row is hit (the file
/// stays as it is), with the bytes of the file read (none when `cache`
/// keeps its columns). The columns and the vector come from `cache` when
/// it keeps them, and are kept there when read.
#[allow(clippy::too_many_arguments)]
pub(super) async fn hits(
    store: &dyn ObjectStore,
    cache: &mut ReadCache,
    path: &deltalake::Path,
    dv: Option<&DeletionVectorDescriptor>,
    needed: &[&String],
    fill: impl Fn(RecordBatch) -> Result<RecordBatch, ArrowError>,
    mut hit: impl FnMut(&RecordBatch) -> Result<Vec<bool>, ArrowError>,
) -> Result<(Option<FileHits>, u64), DeltaTableError> {
    let deleted = deleted_rows(store, cache, dv).await?;
    let (columns, bytes) = match cache.columns(path.as_ref(), needed) {
        Some(kept) => (kept, None),
        None => {
            let (columns, bytes) = read_columns(store, path, needed, &fill).await?;
            cache.put_columns(path.as_ref(), needed, columns.clone());
            (columns, Some(bytes))
        }
    };
    let (mut hit_rows, mut batch_rows, mut base) = (Vec::new(), Vec::new(), 0u64);
    for b in &columns.batches {
        let hits = live_hits(b, base, &deleted, &mut hit)?;
        hit_rows.extend(
            hits.iter()
                .enumerate()
                .filter(|(_, h)| **h)
                .map(|(i, _)| base + i as u64),
        );
        base += b.num_rows() as u64;
        batch_rows.push(b.num_rows());
    }
    Ok(FileHits::of(
        path,
        bytes,
        hit_rows,
        batch_rows,
        deleted,
        columns.rows,
    ))
}

/// [`hits`] for `upsert` merges, by the file's key index
/// ([`super::key_index`]), built from its columns on first read and kept in
/// `cache` instead of them: a batch looks up its keys rather than
/// converting every stored row.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upsert_hits(
    store: &dyn ObjectStore,
    cache: &mut ReadCache,
    path: &deltalake::Path,
    dv: Option<&DeletionVectorDescriptor>,
    needed: &[&String],
    fill: impl Fn(RecordBatch) -> Result<RecordBatch, ArrowError>,
    winners: &mut Winners,
    rules: &MergeRules,
) -> Result<(Option<FileHits>, u64), DeltaTableError> {
    let deleted = deleted_rows(store, cache, dv).await?;
    let signature = winners.index_signature(rules);
    let (index, bytes) = match cache.index(path.as_ref(), needed, &signature) {
        Some(kept) => (kept, None),
        None => {
            let (columns, bytes) = read_columns(store, path, needed, &fill).await?;
            let Some(index) = winners.key_index(&columns, rules)? else {
                // Not indexable: matched row by row.
                cache.put_columns(path.as_ref(), needed, columns);
                return hits(store, cache, path, dv, needed, fill, |b| {
                    winners.matches(b, rules)
                })
                .await
                .map(|(h, _)| (h, bytes.len() as u64));
            };
            let index = std::sync::Arc::new(index);
            cache.put_index(path.as_ref(), needed, &signature, index.clone());
            (index, Some(bytes))
        }
    };
    let hit_rows = winners.index_matches(&index, &deleted);
    let batch_rows = index.batch_rows.clone();
    Ok(FileHits::of(
        path, bytes, hit_rows, batch_rows, deleted, index.rows,
    ))
}

/// The rows the vector `dv` deletes (none without one), from `cache` when
/// it keeps them, and kept there when read.
async fn deleted_rows(
    store: &dyn ObjectStore,
    cache: &mut ReadCache,
    dv: Option<&DeletionVectorDescriptor>,
) -> Result<Arc<RoaringTreemap>, DeltaTableError> {
    if let Some(kept) = dv.and_then(|dv| cache.vector(dv)) {
        return Ok(kept);
    }
    let read = Arc::new(read(store, dv).await?);
    if let Some(dv) = dv {
        cache.put_vector(dv, read.clone());
    }
    Ok(read)
}

/// The `needed` columns of the file at `path` (completed by `fill`), and
/// the file's bytes.
async fn read_columns(
    store: &dyn ObjectStore,
    path: &deltalake::Path,
    needed: &[&String],
    fill: &impl Fn(RecordBatch) -> Result<RecordBatch, ArrowError>,
) -> Result<(Columns, bytes::Bytes), DeltaTableError> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use deltalake::parquet::arrow::ProjectionMask;
    let bytes = store.get(path).await?.bytes().await?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| needed.contains(&f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut batches = Vec::new();
    for b in builder.with_projection(mask).build()? {
        batches.push(fill(b?)?);
    }
    Ok((Columns { batches, rows }, bytes))
}

impl FileHits {
    /// The hits of a file, `None` if no row is hit, and the bytes of the
    /// file read (`bytes`).
    /// `hit_rows` ascending.
    fn of(
        path: &deltalake::Path,
        bytes: Option<bytes::Bytes>,
        hit_rows: Vec<u64>,
        batch_rows: Vec<usize>,
        deleted: Arc<RoaringTreemap>,
        rows: u64,
    ) -> (Option<Self>, u64) {
        let fetched = bytes.as_ref().map_or(0, |b| b.len() as u64);
        if hit_rows.is_empty() {
            return (None, fetched);
        }
        let hits = FileHits {
            path: path.clone(),
            bytes,
            hit_rows,
            batch_rows,
            deleted,
            rows,
        };
        (Some(hits), fetched)
    }

    /// The bytes [`FileHits::split`] reads of the file (`remove`'s): none
    /// if [`hits`] read them.
    pub(super) fn split_reads(&self, remove: &Remove) -> u64 {
        match self.bytes {
            Some(_) => 0,
            None => remove.size.unwrap_or(0).max(0) as u64,
        }
    }

    /// The file's rows, all counted.
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether a merge of `changes` keys rewrites the file rather than
    /// giving it a vector, by `rules`: it is small next to the batch, or
    /// would be mostly deleted rows.
    pub(super) fn rewrites(&self, rules: &DeletionVectorConfig, changes: usize) -> bool {
        let small = u64::from(rules.rewrite_below_batches).saturating_mul(changes as u64);
        // Hits are live rows: none is in the old vector.
        let hit = self.hit_rows.len() as u64;
        let deleted = self.deleted.len() + hit;
        if deleted >= self.rows {
            return false; // removed without being read again
        }
        self.rows < small || deleted as f64 >= rules.rewrite_deleted_share * self.rows as f64
    }

    /// The rows deleted once the hit rows are: the old vector's and the
    /// hit ones.
    pub(super) fn deleted(&self) -> RoaringTreemap {
        let mut all = (*self.deleted).clone();
        // Built from the sorted rows at once, not inserted one by one.
        all |= RoaringTreemap::from_sorted_iter(self.hit_rows.iter().copied())
            .expect("hit rows are ascending");
        all
    }

    /// Reads the file whole, completed by `fill` as in [`hits`]: its live
    /// rows not hit (only `with_kept`: a rewrite keeps them, a vector
    /// leaves them where they are) and its hit rows, aligned to `out`.
    pub(super) async fn split(
        &self,
        store: &dyn ObjectStore,
        out: &arrow::datatypes::SchemaRef,
        with_kept: bool,
        fill: impl Fn(RecordBatch) -> Result<RecordBatch, ArrowError>,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>), DeltaTableError> {
        use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let bytes = match &self.bytes {
            Some(b) => b.clone(),
            None => store.get(&self.path).await?.bytes().await?,
        };
        // The same reader settings: the same batch boundaries as `hits`.
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let (mut kept, mut matched, mut base) = (Vec::new(), Vec::new(), 0u64);
        let mut next = self.hit_rows.iter().peekable();
        for (b, &n) in reader.zip(&self.batch_rows) {
            let b = fill(b?)?;
            let mut hit = vec![false; n];
            while let Some(&&r) = next.peek() {
                if r >= base + n as u64 {
                    break;
                }
                hit[(r - base) as usize] = true;
                next.next();
            }
            let on = BooleanArray::from(hit.clone());
            let off: BooleanArray = hit
                .iter()
                .enumerate()
                .map(|(i, h)| Some(!h && !self.deleted.contains(base + i as u64)))
                .collect();
            base += b.num_rows() as u64;
            for (mask, into, want) in [(&off, &mut kept, with_kept), (&on, &mut matched, true)] {
                if !want {
                    continue;
                }
                let part = arrow::compute::filter_record_batch(&b, mask)?;
                if part.num_rows() > 0 {
                    into.push(super::merge::align(&part, out)?);
                }
            }
        }
        Ok((kept, matched))
    }
}

/// A file a merge removes rows from: its add as the snapshot has it, and
/// its remove (with its current vector, if any).
pub(super) struct Target {
    /// The file's add action.
    pub add: Add,
    /// The file's remove action.
    pub remove: Remove,
}

/// The deletion vectors of one merge, written to one file; what the
/// commit does with each file it deletes rows from.
#[derive(Default)]
pub(super) struct Vectors {
    /// Files whose rows are all deleted: removed.
    gone: Vec<Remove>,
    /// Files keeping some rows: removed and added again with the vector.
    kept: Vec<(Target, RoaringTreemap)>,
}

impl Vectors {
    /// Deletes `rows` (the union of the file's old and new deletions) from
    /// the file of `target`, which has `physical_rows` rows.
    pub(super) fn delete(&mut self, target: Target, rows: RoaringTreemap, physical_rows: u64) {
        if rows.len() >= physical_rows {
            self.gone.push(target.remove);
        } else {
            self.kept.push((target, rows));
        }
    }

    /// How many files rows are deleted from.
    pub(super) fn files(&self) -> usize {
        self.gone.len() + self.kept.len()
    }

    /// Writes the vectors (one file, if any file keeps rows) through
    /// `store` (rooted at the table) and returns the removes and the adds
    /// of the commit, and the bytes written.
    pub(super) async fn finish(
        self,
        store: &dyn ObjectStore,
        cache: &mut ReadCache,
    ) -> Result<(Vec<Remove>, Vec<Add>, u64), DvError> {
        let mut removes = self.gone;
        if self.kept.is_empty() {
            return Ok((removes, Vec::new(), 0));
        }
        let uuid = uuid::Uuid::new_v4();
        let (bytes, results) = serialize(self.kept.iter().map(|(_, rows)| rows))?;
        let name = file_name(&uuid);
        let written = bytes.len() as u64;
        store
            .put(
                &deltalake::Path::from(name.as_str()),
                PutPayload::from(bytes),
            )
            .await
            .map_err(|source| DvError::Store { path: name, source })?;
        let encoded = z85::encode(uuid.as_bytes());
        let mut adds = Vec::with_capacity(self.kept.len());
        for ((target, rows), r) in self.kept.into_iter().zip(results) {
            let mut add = target.add;
            let dv = DeletionVectorDescriptor {
                storage_type: StorageType::UuidRelativePath,
                path_or_inline_dv: encoded.clone(),
                offset: Some(r.offset),
                size_in_bytes: r.size_in_bytes,
                cardinality: r.cardinality,
            };
            // The next batch reads this vector if the commit lands (and
            // never names it if not: the name is new).
            cache.put_vector(&dv, Arc::new(rows));
            add.deletion_vector = Some(dv);
            add.stats = add.stats.as_deref().map(loose_stats);
            add.data_change = true;
            removes.push(target.remove);
            adds.push(add);
        }
        Ok((removes, adds, written))
    }
}

/// The bytes of a vector file holding `vectors`, and where each is.
fn serialize<'a>(
    vectors: impl Iterator<Item = &'a RoaringTreemap>,
) -> Result<
    (
        Vec<u8>,
        Vec<delta_kernel::actions::deletion_vector_writer::DeletionVectorWriteResult>,
    ),
    DvError,
> {
    use delta_kernel::actions::deletion_vector_writer::StreamingDeletionVectorWriter;
    let mut bytes = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
    let mut results = Vec::new();
    for rows in vectors {
        results.push(
            writer
                .write_deletion_vector(Serialized(rows))
                .map_err(DvError::Write)?,
        );
    }
    writer.finalize().map_err(DvError::Write)?;
    Ok((bytes, results))
}

/// A vector as the kernel's writer takes it, serialized as it is: the
/// kernel's own type would be rebuilt row by row from an iterator, which
/// cost a file's whole vector in inserts on every merge that grew it.
struct Serialized<'a>(&'a RoaringTreemap);

impl<'a> delta_kernel::actions::deletion_vector_writer::DeletionVector for Serialized<'a> {
    type IndexIterator = roaring::treemap::Iter<'a>;

    fn into_iter(self) -> Self::IndexIterator {
        self.0.iter()
    }

    fn cardinality(&self) -> u64 {
        self.0.len()
    }

    fn serialize(self) -> delta_kernel::DeltaResult<bytes::Bytes> {
        let mut out = Vec::with_capacity(self.0.serialized_size());
        self.0.serialize_into(&mut out).map_err(|e| {
            delta_kernel::Error::generic(format!("Failed to serialize deletion vector: {e}"))
        })?;
        Ok(bytes::Bytes::from(out))
    }
}

/// A file's statistics once a vector hides some of its rows: the counts
/// stay those of the physical file, and its bounds are no longer tight
/// (the protocol's `tightBounds: false`).
fn loose_stats(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stats) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("tightBounds".into(), serde_json::Value::Bool(false));
            serde_json::Value::Object(m).to_string()
        }
        _ => stats.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;

    fn treemap(rows: &[u64]) -> RoaringTreemap {
        rows.iter().copied().collect()
    }

    /// Rows across several 32-bit buckets, and an empty vector.
    fn samples() -> Vec<RoaringTreemap> {
        vec![
            treemap(&[0, 3, 4, 5, 70_000, 1 << 20]),
            treemap(&[7, (1u64 << 32) + 1, (3u64 << 32) + 9]),
            (0..10_000).step_by(3).collect(),
        ]
    }

    /// The storage handler the kernel's reader needs: local files only.
    struct LocalFiles;

    impl delta_kernel::StorageHandler for LocalFiles {
        fn list_from(
            &self,
            _: &url::Url,
        ) -> delta_kernel::DeltaResult<
            Box<dyn Iterator<Item = delta_kernel::DeltaResult<delta_kernel::FileMeta>>>,
        > {
            Err(delta_kernel::Error::generic("not listed"))
        }
        fn read_files(
            &self,
            files: Vec<delta_kernel::FileSlice>,
        ) -> delta_kernel::DeltaResult<
            Box<dyn Iterator<Item = delta_kernel::DeltaResult<bytes::Bytes>>>,
        > {
            let out: Vec<_> = files
                .into_iter()
                .map(|(url, _)| {
                    Ok(bytes::Bytes::from(
                        std::fs::read(url.to_file_path().unwrap()).unwrap(),
                    ))
                })
                .collect();
            Ok(Box::new(out.into_iter()))
        }
        fn copy_atomic(&self, _: &url::Url, _: &url::Url) -> delta_kernel::DeltaResult<()> {
            Err(delta_kernel::Error::generic("read only"))
        }
        fn put(&self, _: &url::Url, _: bytes::Bytes, _: bool) -> delta_kernel::DeltaResult<()> {
            Err(delta_kernel::Error::generic("read only"))
        }
        fn head(&self, _: &url::Url) -> delta_kernel::DeltaResult<delta_kernel::FileMeta> {
            Err(delta_kernel::Error::generic("read only"))
        }
        fn delete(&self, _: &url::Url) -> delta_kernel::DeltaResult<()> {
            Err(delta_kernel::Error::generic("read only"))
        }
    }

    fn target(path: &str) -> Target {
        let add: Add = serde_json::from_str(&format!(
            r#"{{"path":"{path}","partitionValues":{{}},"size":10,"modificationTime":1,"dataChange":true,"stats":"{{\"numRecords\":10,\"minValues\":{{\"id\":1}}}}"}}"#
        ))
        .unwrap();
        let remove: Remove = serde_json::from_str(&format!(
            r#"{{"path":"{path}","dataChange":true,"deletionTimestamp":1}}"#
        ))
        .unwrap();
        Target { add, remove }
    }

    /// Vectors written to one file read back, by inlet's reader and by the
    /// kernel's, with the descriptors the commit gets.
    #[tokio::test]
    async fn vectors_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let mut v = Vectors::default();
        let rows = samples();
        for (i, r) in rows.iter().enumerate() {
            v.delete(target(&format!("f{i}.parquet")), r.clone(), 1 << 40);
        }
        v.delete(target("all.parquet"), treemap(&[0, 1]), 2);
        let (removes, adds, written) = v.finish(&store, &mut ReadCache::default()).await.unwrap();
        assert_eq!(removes.len(), 4, "every file removed");
        assert_eq!(
            removes[0].path, "all.parquet",
            "all rows deleted: removed only"
        );
        assert_eq!(adds.len(), 3);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one vector file");
        assert_eq!(
            files[0].as_ref().unwrap().metadata().unwrap().len(),
            written
        );
        let root = url::Url::from_directory_path(dir.path()).unwrap();
        for (add, expected) in adds.iter().zip(&rows) {
            let dv = add.deletion_vector.as_ref().unwrap();
            assert_eq!(dv.cardinality, expected.len() as i64);
            assert_eq!(dv.storage_type, StorageType::UuidRelativePath);
            assert_eq!(&read(&store, Some(dv)).await.unwrap(), expected);
            let kernel = delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_new(
                delta_kernel::actions::deletion_vector::DeletionVectorStorageType::PersistedRelative,
                dv.path_or_inline_dv.clone(),
                dv.offset,
                dv.size_in_bytes,
                dv.cardinality,
            )
            .unwrap();
            let by_kernel = kernel.read(Arc::new(LocalFiles), &root).unwrap();
            assert_eq!(&by_kernel, expected, "the kernel reads it");
            let stats: serde_json::Value =
                serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
            assert_eq!(stats["tightBounds"], false);
            assert_eq!(stats["numRecords"], 10, "physical counts kept");
        }
    }

    /// A damaged vector file is refused, not read as fewer deletions.
    #[tokio::test]
    async fn a_damaged_vector_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let mut v = Vectors::default();
        v.delete(target("f.parquet"), samples().remove(0), 100);
        let (_, adds, _) = v.finish(&store, &mut ReadCache::default()).await.unwrap();
        let dv = adds[0].deletion_vector.clone().unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let e = read(&store, Some(&dv)).await.unwrap_err();
        assert!(e.to_string().contains("CRC"), "{e}");
    }

    /// The inline form (as Spark writes small vectors) and a prefixed path.
    #[tokio::test]
    async fn inline_vectors_and_prefixed_paths_are_read() {
        let rows = samples().remove(1);
        let mut bytes = MAGIC.to_le_bytes().to_vec();
        rows.serialize_into(&mut bytes).unwrap();
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        let dv = DeletionVectorDescriptor {
            storage_type: StorageType::Inline,
            path_or_inline_dv: z85::encode(&bytes),
            offset: None,
            size_in_bytes: bytes.len() as i32,
            cardinality: rows.len() as i64,
        };
        let store = LocalFileSystem::new();
        assert_eq!(read(&store, Some(&dv)).await.unwrap(), rows);
        // The protocol's example.
        assert_eq!(
            relative_path("ab^-aqEH.-t@S}K{vb[*k^").unwrap(),
            "ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin"
        );
    }

    /// Deleted rows are never hit, and the others keep their positions.
    #[test]
    fn deleted_rows_are_not_live() {
        use arrow::array::Int64Array;
        let b = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from_iter_values(0..6)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        // Rows 100..106 of the file; 101 and 104 deleted.
        let deleted = treemap(&[101, 104]);
        let mut seen = Vec::new();
        let hits = live_hits(&b, 100, &deleted, |live| {
            let ids = live
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            seen = ids.values().to_vec();
            Ok(vec![true; live.num_rows()])
        })
        .unwrap();
        assert_eq!(seen, [0, 2, 3, 5]);
        assert_eq!(hits, [true, false, true, true, false, true]);
    }
}
