//! Tombstone retention (`tables.<name>.tombstone_retention`): an `upsert`
//! table remembers the deletes it applied, so that a change older than a
//! delete of its key, arriving in a later batch, is dropped instead of
//! bringing the row back; a `history` table remembers every delete, so that
//! such a change becomes a version closed by the delete, not the current
//! one (a delete that closed a version is also that version's end, but one
//! of a key with nothing open left no trace before).
//!
//! **Where they live.** Each merge that applies deletes writes their keys,
//! sequences and times as one small Parquet file, a segment, under
//! `_inlet_tombstones/` in the table's directory (a hidden directory:
//! Spark's and delta-rs' VACUUM leave it alone, readers never see it). The
//! table's `inlet.tombstones` domain (domain metadata, a writer feature)
//! lists the live segments; the merge's commit sets it, so a segment counts
//! exactly when the merge that wrote it committed. A file written by an
//! attempt that did not commit is listed by nothing and swept later.
//!
//! **Cost.** The listing stays small: once it holds more than
//! [`MAX_SEGMENTS`] segments they are merged into one, and expired rows
//! dropped. A segment is immutable, so its index (key → greatest sequence)
//! is built once per process and kept; a merge probes its changed keys in
//! each. Per commit that is the listing (a few hundred bytes) and one
//! segment write when the batch deletes anything, independent of the
//! table's age. A merged segment holds each key once, so memory is bounded
//! by the keys deleted in one retention period (and 16 segments' rows).
//!
//! **Expiry.** A tombstone is kept at least the retention (by the time its
//! merge planned it): a segment whose newest row is older is unlisted, and
//! a merge of segments drops older rows. An unlisted file is deleted once
//! it has been unlisted for [`GRACE_MS`], long past any plan that could
//! still read it.
//!
//! **Conflicts.** Two writers both rewrite the listing: a commit that lost
//! its version to one that changed the domain plans again on the new
//! listing (see `DeltaSink::after_race`), so neither drops the other's
//! segment, and a delete committed meanwhile is seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray as _, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::Int64Type;
use arrow::error::ArrowError;
use arrow::row::{Row, RowConverter, Rows, SortField};
use deltalake::kernel::{Action, DomainMetadata};
use deltalake::DeltaTableError;
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use super::history::{History, KeptIndex};
use super::merge::{MergeRules, TombstoneIndex, Winners};

/// The domain listing the segments.
pub(crate) const DOMAIN: &str = "inlet.tombstones";
/// Where the segments are written, relative to the table's root.
pub(super) const DIR: &str = "_inlet_tombstones";
/// A segment's column holding when each delete was planned (ms).
pub(super) const DELETED_AT: &str = "__inlet_deleted_at";
/// Segments listed at most before they are merged into one.
pub(super) const MAX_SEGMENTS: usize = 16;
/// How long an unlisted segment file stays before it is deleted (ms).
pub(super) const GRACE_MS: i64 = 3_600_000;

/// The `inlet.tombstones` domain's configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Listing {
    /// The live segments, oldest first.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Files unlisted, waiting out [`GRACE_MS`] before they are deleted.
    #[serde(default)]
    pub retired: Vec<Retired>,
}

/// A segment: its file and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Segment {
    /// Relative to the table's root.
    pub path: String,
    pub rows: u64,
    /// The oldest and newest `deleted_at` of its rows (ms).
    pub oldest: i64,
    pub newest: i64,
}

/// A file no longer listed, and since when (ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Retired {
    pub path: String,
    pub at: i64,
}

impl Listing {
    /// The listing a domain configuration holds; none: empty.
    pub(super) fn parse(config: Option<&str>) -> Result<Self, DeltaTableError> {
        match config {
            None => Ok(Listing::default()),
            // Written by another program: the operator's to fix.
            Some(c) => serde_json::from_str(c).map_err(|e| {
                DeltaTableError::MetadataError(format!(
                    "the table's `{DOMAIN}` domain cannot be read ({e}); it is inlet's own, \
                     written by another program: {c}"
                ))
            }),
        }
    }

    /// The domain action that sets this listing.
    pub(super) fn action(&self) -> Result<Action, DeltaTableError> {
        Ok(Action::DomainMetadata(DomainMetadata {
            domain: DOMAIN.to_string(),
            configuration: serde_json::to_string(self)?,
            removed: false,
        }))
    }

    /// Unlists the segments whose every row is older than `cutoff`.
    fn expire(&mut self, cutoff: i64, now: i64) {
        let (gone, kept): (Vec<Segment>, Vec<Segment>) = std::mem::take(&mut self.segments)
            .into_iter()
            .partition(|s| s.newest < cutoff);
        self.segments = kept;
        self.retired.extend(gone.into_iter().map(|s| Retired {
            path: s.path,
            at: now,
        }));
    }

    /// The retired files whose grace ran out, taken off the listing.
    fn take_due(&mut self, now: i64) -> Vec<String> {
        let (due, kept): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| now - r.at >= GRACE_MS);
        self.retired = kept;
        due.into_iter().map(|r| r.path).collect()
    }

    fn names(&self, path: &str) -> bool {
        self.segments.iter().any(|s| s.path == path) || self.retired.iter().any(|r| r.path == path)
    }
}

/// What a merge did with the kept deletes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kept {
    /// Changes dropped as older than a kept delete (`upsert`).
    pub dropped: u64,
    /// Kept deletes taken into the batch's timelines (`history`).
    pub applied: u64,
    /// Deletes written to be kept.
    pub written: u64,
    /// Bytes of segments read from the store and written to it.
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// A sink's tombstones: its retention and the indexes of the segments it
/// read (immutable files, so an index is built once).
#[derive(Debug)]
pub(super) struct Tombstones {
    retention: Duration,
    /// `history` mode: every kept delete of a key counts (each can close
    /// a late change), not only its newest.
    history: bool,
    /// `upsert`: path → (the changes' index signature, the index).
    indexes: HashMap<String, (String, Arc<TombstoneIndex>)>,
    /// `history`: path → (the index signature, the segment's rows by key).
    kept: HashMap<String, (String, Arc<KeptIndex>)>,
}

impl Tombstones {
    pub(super) fn new(retention: Duration, history: bool) -> Self {
        Tombstones {
            retention,
            history,
            indexes: HashMap::new(),
            kept: HashMap::new(),
        }
    }

    /// `history` mode: takes the kept deletes of the batch's keys (in the
    /// live segments of `listing`) into its timeline, where each closes
    /// the version open at its sequence.
    pub(super) async fn apply_history(
        &mut self,
        store: &dyn ObjectStore,
        listing: &Listing,
        history: &mut History,
        rules: &MergeRules,
        now: i64,
        kept: &mut Kept,
    ) -> Result<(), DeltaTableError> {
        let arrow = |source| DeltaTableError::Arrow { source };
        let signature = history.index_signature();
        let cutoff = self.cutoff(now);
        self.kept
            .retain(|p, _| listing.segments.iter().any(|s| &s.path == p));
        for seg in listing.segments.iter().filter(|s| s.newest >= cutoff) {
            let index = match self.kept.get(&seg.path) {
                Some((sig, index)) if *sig == signature => index.clone(),
                _ => {
                    let (batches, bytes) = read(store, &seg.path).await?;
                    kept.bytes_read += bytes;
                    let live = unexpired(&batches, cutoff)?;
                    let index = Arc::new(history.kept_index(&live, rules).map_err(arrow)?);
                    self.kept
                        .insert(seg.path.clone(), (signature.clone(), index.clone()));
                    index
                }
            };
            kept.applied += history.keep_deletes(&index).map_err(arrow)?;
        }
        Ok(())
    }

    /// The earliest `deleted_at` still kept at `now`.
    fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX))
    }

    /// Marks the changes of `winners` older than a kept delete of their key
    /// (in the live segments of `listing`) as beaten.
    pub(super) async fn apply(
        &mut self,
        store: &dyn ObjectStore,
        listing: &Listing,
        winners: &mut Winners,
        rules: &MergeRules,
        now: i64,
        kept: &mut Kept,
    ) -> Result<(), DeltaTableError> {
        let signature = winners.index_signature(rules);
        let cutoff = self.cutoff(now);
        self.indexes
            .retain(|p, _| listing.segments.iter().any(|s| &s.path == p));
        for seg in listing.segments.iter().filter(|s| s.newest >= cutoff) {
            let index = match self.indexes.get(&seg.path) {
                Some((sig, index)) if *sig == signature => index.clone(),
                _ => {
                    let (batches, bytes) = read(store, &seg.path).await?;
                    kept.bytes_read += bytes;
                    let live = unexpired(&batches, cutoff)?;
                    let index = Arc::new(
                        winners
                            .tombstone_index(&live, rules)
                            .map_err(|source| DeltaTableError::Arrow { source })?,
                    );
                    self.indexes
                        .insert(seg.path.clone(), (signature.clone(), index.clone()));
                    index
                }
            };
            kept.dropped += winners.entomb(&index);
        }
        Ok(())
    }

    /// Writes the deletes `new` (as [`Winners::tombstones`] gives them, at
    /// `now`) as a new segment of `listing`, expires what the retention let
    /// go, merges the segments once there are too many, and deletes files
    /// unlisted long enough. The domain action the commit must carry when
    /// the listing changed.
    pub(super) async fn record(
        &mut self,
        store: &dyn ObjectStore,
        mut listing: Listing,
        new: RecordBatch,
        rules: &MergeRules,
        now: i64,
        kept: &mut Kept,
    ) -> Result<Option<Action>, DeltaTableError> {
        let before = listing.clone();
        let arrow = |source| DeltaTableError::Arrow { source };
        if new.num_rows() > 0 {
            kept.written += new.num_rows() as u64;
            let schema = new.schema();
            let seg = write(store, std::slice::from_ref(&new), &schema, kept).await?;
            listing.segments.push(seg);
        }
        let cutoff = self.cutoff(now);
        listing.expire(cutoff, now);
        if listing.segments.len() > MAX_SEGMENTS {
            let schema = new.schema();
            let mut all = Vec::new();
            for seg in &listing.segments {
                let (batches, bytes) = read(store, &seg.path).await?;
                kept.bytes_read += bytes;
                for b in unexpired(&batches, cutoff)? {
                    all.push(super::merge::align(&b, &schema).map_err(arrow)?);
                }
            }
            let all = arrow::compute::concat_batches(&schema, &all).map_err(arrow)?;
            let merged = newest_per_key(&all, rules, !self.history).map_err(arrow)?;
            let merged = write(store, std::slice::from_ref(&merged), &schema, kept).await?;
            let old = std::mem::replace(&mut listing.segments, vec![merged]);
            listing.retired.extend(old.into_iter().map(|s| Retired {
                path: s.path,
                at: now,
            }));
            sweep(store, &listing, now).await?;
        }
        for path in listing.take_due(now) {
            delete(store, &path).await?;
        }
        (listing != before).then(|| listing.action()).transpose()
    }
}

/// One row per key of the kept deletes `batch`: its greatest sequence,
/// deleted at the latest time any of its rows was. So a merged segment
/// holds a key once, however often it was deleted, and it beats every
/// change one of the rows it replaces would have beaten, for at least as
/// long (a retention is a minimum). Not `per_key` (`history` mode, where
/// each delete closes what is open at its sequence): one row per key and
/// sequence.
fn newest_per_key(
    batch: &RecordBatch,
    rules: &MergeRules,
    per_key: bool,
) -> Result<RecordBatch, ArrowError> {
    let rows = |names: &[String]| -> Result<Rows, ArrowError> {
        let cols: Vec<ArrayRef> = names
            .iter()
            .map(|n| {
                batch.column_by_name(n).cloned().ok_or_else(|| {
                    ArrowError::SchemaError(format!("a tombstone segment lacks `{n}`"))
                })
            })
            .collect::<Result<_, _>>()?;
        let fields = cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        RowConverter::new(fields)?.convert_columns(&cols)
    };
    let mut names = rules.keys.clone();
    if !per_key {
        names.extend(rules.sequence_by.iter().cloned());
    }
    let keys = rows(&names)?;
    let seqs = rows(rules.sequence_by.as_slice())?;
    let (at_index, _) = batch.schema().column_with_name(DELETED_AT).ok_or_else(|| {
        ArrowError::SchemaError(format!("a tombstone segment lacks `{DELETED_AT}`"))
    })?;
    let at = batch.column(at_index).as_primitive::<Int64Type>();
    // Key → (the row with the greatest sequence, the latest deleted_at).
    let mut best: HashMap<Row<'_>, (usize, i64)> = HashMap::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let t = at.value(i);
        best.entry(keys.row(i))
            .and_modify(|(row, latest)| {
                if seqs.row(i) > seqs.row(*row) {
                    *row = i;
                }
                *latest = (*latest).max(t);
            })
            .or_insert((i, t));
    }
    let mut kept: Vec<(usize, i64)> = best.into_values().collect();
    kept.sort_unstable();
    let take = UInt32Array::from_iter_values(kept.iter().map(|(i, _)| *i as u32));
    let mut columns = arrow::compute::take_record_batch(batch, &take)?
        .columns()
        .to_vec();
    columns[at_index] = Arc::new(Int64Array::from_iter_values(kept.iter().map(|(_, t)| *t)));
    RecordBatch::try_new(batch.schema(), columns)
}

/// The rows of `batches` deleted at or after `cutoff`.
fn unexpired(batches: &[RecordBatch], cutoff: i64) -> Result<Vec<RecordBatch>, DeltaTableError> {
    batches
        .iter()
        .map(|b| {
            let at = b
                .column_by_name(DELETED_AT)
                .ok_or_else(|| DeltaTableError::Arrow {
                    source: arrow::error::ArrowError::SchemaError(format!(
                        "a tombstone segment lacks `{DELETED_AT}`"
                    )),
                })?
                .as_primitive::<Int64Type>();
            let keep: BooleanArray = at
                .iter()
                .map(|v| Some(v.is_some_and(|v| v >= cutoff)))
                .collect();
            arrow::compute::filter_record_batch(b, &keep)
                .map_err(|source| DeltaTableError::Arrow { source })
        })
        .collect()
}

fn path_of(p: &str) -> Result<Path, DeltaTableError> {
    Path::parse(p).map_err(|e| {
        DeltaTableError::MetadataError(format!("tombstone segment `{p}` in `{DOMAIN}`: {e}"))
    })
}

/// A segment's rows and the file's size.
async fn read(
    store: &dyn ObjectStore,
    path: &str,
) -> Result<(Vec<RecordBatch>, u64), DeltaTableError> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bytes = store.get(&path_of(path)?).await?.bytes().await?;
    let size = bytes.len() as u64;
    let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| DeltaTableError::Arrow { source })?;
    Ok((batches, size))
}

/// Writes `batches` as a new segment file.
async fn write(
    store: &dyn ObjectStore,
    batches: &[RecordBatch],
    schema: &arrow::datatypes::SchemaRef,
    kept: &mut Kept,
) -> Result<Segment, DeltaTableError> {
    use deltalake::parquet::arrow::ArrowWriter;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), None)?;
    let (mut rows, mut oldest, mut newest) = (0u64, i64::MAX, i64::MIN);
    for b in batches {
        if let Some(at) = b.column_by_name(DELETED_AT) {
            let at = at.as_primitive::<Int64Type>();
            if let Some(min) = arrow::compute::min(at) {
                oldest = oldest.min(min);
            }
            if let Some(max) = arrow::compute::max(at) {
                newest = newest.max(max);
            }
        }
        rows += b.num_rows() as u64;
        writer.write(b)?;
    }
    writer.close()?;
    if rows == 0 {
        (oldest, newest) = (0, 0);
    }
    let path = format!("{DIR}/{}.parquet", uuid::Uuid::new_v4());
    kept.bytes_written += out.len() as u64;
    store.put(&path_of(&path)?, out.into()).await?;
    Ok(Segment {
        path,
        rows,
        oldest,
        newest,
    })
}

/// Deletes a file; one already gone is fine.
async fn delete(store: &dyn ObjectStore, path: &str) -> Result<(), DeltaTableError> {
    match store.delete(&path_of(path)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the files of [`DIR`] that `listing` does not name and that are
/// older than [`GRACE_MS`]: left by attempts that never committed.
async fn sweep(
    store: &dyn ObjectStore,
    listing: &Listing,
    now: i64,
) -> Result<(), DeltaTableError> {
    let files: Vec<object_store::ObjectMeta> =
        store.list(Some(&Path::from(DIR))).try_collect().await?;
    for f in files {
        let name = f.location.as_ref().to_string();
        if !listing.names(&name) && now - f.last_modified.timestamp_millis() >= GRACE_MS {
            delete(store, &name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(path: &str, oldest: i64, newest: i64) -> Segment {
        Segment {
            path: path.into(),
            rows: 1,
            oldest,
            newest,
        }
    }

    /// A merged segment holds each key once: its greatest sequence, kept
    /// as long as the latest of its rows.
    #[test]
    fn a_merged_segment_holds_each_key_once() {
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("seq", DataType::Int64, true),
            Field::new(DELETED_AT, DataType::Int64, false),
        ]));
        let col = |v: &[i64]| -> ArrayRef { Arc::new(Int64Array::from(v.to_vec())) };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                col(&[1, 2, 1, 3, 2]),
                col(&[5, 7, 9, 1, 4]),
                col(&[100, 110, 90, 120, 130]),
            ],
        )
        .unwrap();
        let rules = MergeRules {
            keys: vec!["id".into()],
            sequence_by: Some("seq".into()),
            history: None,
        };
        let merged = newest_per_key(&batch, &rules, true).unwrap();
        let values = |n: &str| -> Vec<i64> {
            merged
                .column_by_name(n)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        let mut rows: Vec<(i64, i64, i64)> = values("id")
            .into_iter()
            .zip(values("seq"))
            .zip(values(DELETED_AT))
            .map(|((k, s), t)| (k, s, t))
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, vec![(1, 9, 100), (2, 7, 130), (3, 1, 120)]);
        // `history`: one row per key and sequence.
        let merged = newest_per_key(&batch, &rules, false).unwrap();
        assert_eq!(merged.num_rows(), 5);
        let twice = arrow::compute::concat_batches(&batch.schema(), [&batch, &batch]).unwrap();
        assert_eq!(newest_per_key(&twice, &rules, false).unwrap().num_rows(), 5);
    }

    /// Segments whose newest row is past the retention are unlisted and
    /// deleted after the grace; the listing round-trips through the domain.
    #[test]
    fn segments_expire_then_their_files_go_after_the_grace() {
        let mut l = Listing {
            segments: vec![seg("a", 0, 10), seg("b", 5, 100)],
            retired: Vec::new(),
        };
        l.expire(50, 1_000);
        assert_eq!(l.segments, vec![seg("b", 5, 100)]);
        assert!(l.names("a") && l.names("b") && !l.names("c"));
        assert!(l.take_due(1_000 + GRACE_MS - 1).is_empty());
        assert_eq!(l.take_due(1_000 + GRACE_MS), vec!["a".to_string()]);
        assert!(!l.names("a"));
        let Action::DomainMetadata(d) = l.action().unwrap() else {
            panic!("a domain action")
        };
        assert_eq!(d.domain, DOMAIN);
        assert_eq!(Listing::parse(Some(&d.configuration)).unwrap(), l);
        assert_eq!(Listing::parse(None).unwrap(), Listing::default());
        assert!(Listing::parse(Some("{not json")).is_err());
    }
}
