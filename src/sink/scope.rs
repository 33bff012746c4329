//! What a merge may touch: the files that may hold one of its keys, on a
//! partitioned table as well, and the conflict rule that follows from it.
//!
//! **Partitions.** A Delta data file does not hold its partition columns:
//! their values are the add's `partitionValues` (strings), given back to the
//! rows read ([`with_partition_columns`]) so that matching by key and the
//! rewritten rows see them. New row versions are written partitioned like
//! appends. Pruning by partition is by the key columns that partition the
//! table: a stored row of a changed key has the same value in each of them,
//! so a file of another partition value cannot hold it. A partition column
//! that is not a key can change with a key's row (the key moves
//! partitions): that column prunes nothing, and the merge searches every
//! partition for the key (by the key columns' statistics only).
//!
//! **Conflicts.** A merge planned on a snapshot stays right on top of a
//! concurrent commit unless that commit removed a file the merge read (or
//! changed its deletion vector: a remove of its path), or added a file
//! that may hold one of the batch's keys (by partition and key statistics,
//! as the merge pruned its own candidates; no statistics: it may).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use super::merge::{MergeRules, Pruner};
use super::state::Changes;

/// A file's partition values, as the log stores them.
pub(super) type PartitionValues = HashMap<String, Option<String>>;

/// The partition value `value` (Delta's string form) as a one-row array of
/// type `to`; `None` (null) as a null.
fn partition_array(
    value: Option<&str>,
    to: &DataType,
    rows: usize,
) -> Result<ArrayRef, ArrowError> {
    let Some(v) = value else {
        return Ok(new_null_array(to, rows));
    };
    let strings: ArrayRef = Arc::new(StringArray::from(vec![v; rows]));
    // Delta's forms (decimal integers, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.f]`,
    // `true`/`false`) are the ones Arrow's string casts parse.
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&strings, to, &opts)
}

/// `batch` (rows of one file) with the table's partition columns it lacks,
/// filled from the file's partition values. `table` gives their types.
pub(super) fn with_partition_columns(
    batch: RecordBatch,
    partition_columns: &[String],
    values: &PartitionValues,
    table: &Schema,
) -> Result<RecordBatch, ArrowError> {
    let missing: Vec<&String> = partition_columns
        .iter()
        .filter(|c| batch.schema().field_with_name(c).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(batch);
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    for c in missing {
        let field = table.field_with_name(c)?;
        let value = values.get(c.as_str()).and_then(|v| v.as_deref());
        columns.push(partition_array(value, field.data_type(), batch.num_rows())?);
        fields.push(field.clone().with_nullable(true));
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// Which files may hold one of a batch's keys.
pub(super) struct Scope {
    /// The key columns that partition the table, with the changes' types.
    pruning: Vec<(String, DataType)>,
    /// The changes' values of those columns (row format).
    values: HashSet<Box<[u8]>>,
    rows: Option<RowConverter>,
    stats: Pruner,
}

impl Scope {
    /// The scope of `changes` (its key columns) on a table partitioned by
    /// `partition_columns`.
    pub(super) fn new(
        changes: &RecordBatch,
        rules: &MergeRules,
        partition_columns: &[String],
    ) -> Result<Self, ArrowError> {
        let pruning: Vec<(String, DataType)> = partition_columns
            .iter()
            .filter(|c| rules.keys.contains(c))
            .filter_map(|c| {
                changes
                    .column_by_name(c)
                    .map(|a| (c.clone(), a.data_type().clone()))
            })
            .collect();
        let (mut values, mut rows) = (HashSet::new(), None);
        if !pruning.is_empty() {
            let cols: Vec<ArrayRef> = pruning
                .iter()
                .map(|(c, _)| changes.column_by_name(c).cloned().expect("found above"))
                .collect();
            let conv = RowConverter::new(
                pruning
                    .iter()
                    .map(|(_, t)| SortField::new(t.clone()))
                    .collect(),
            )?;
            let r = conv.convert_columns(&cols)?;
            values = (0..changes.num_rows())
                .map(|i| r.row(i).as_ref().into())
                .collect();
            rows = Some(conv);
        }
        Ok(Scope {
            pruning,
            values,
            rows,
            stats: Pruner::new(changes, rules),
        })
    }

    /// Whether the file with these partition values and statistics may
    /// hold one of the changed keys.
    pub(super) fn may_hold(&self, partition: &PartitionValues, stats: Option<&str>) -> bool {
        self.in_partitions(partition) && self.stats.may_hold(stats)
    }

    fn in_partitions(&self, partition: &PartitionValues) -> bool {
        let Some(conv) = &self.rows else {
            return true;
        };
        let cols: Result<Vec<ArrayRef>, ArrowError> = self
            .pruning
            .iter()
            .map(|(c, t)| partition_array(partition.get(c).and_then(|v| v.as_deref()), t, 1))
            .collect();
        // A value that does not parse as the column's type: read the file.
        let Ok(cols) = cols else { return true };
        match conv.convert_columns(&cols) {
            Ok(r) => self.values.contains(r.row(0).as_ref()),
            Err(_) => true,
        }
    }
}

/// What a planned merge depends on: the files it read, and the scope of
/// its keys (see the module docs).
pub(super) struct Footprint {
    /// URL-decoded paths of the files read.
    pub read: HashSet<String>,
    pub scope: Scope,
}

impl Footprint {
    /// Whether commits with `changes`, landed after the snapshot the merge
    /// was planned on, make it plan again.
    pub(super) fn conflicts(&self, changes: &Changes) -> bool {
        changes.unknown_files
            || changes.removed.iter().any(|p| self.read.contains(p))
            || changes
                .added
                .iter()
                .any(|a| self.scope.may_hold(&a.partition_values, a.stats.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::merge::tests::changes;
    use crate::sink::state::AddedFile;

    fn rules(keys: &[&str]) -> MergeRules {
        MergeRules {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            sequence_by: None,
            history: None,
        }
    }

    fn part(v: &str) -> PartitionValues {
        HashMap::from([("v".to_string(), Some(v.to_string()))])
    }

    fn stats(min: i64, max: i64) -> String {
        format!(r#"{{"numRecords":1,"minValues":{{"id":{min}}},"maxValues":{{"id":{max}}}}}"#)
    }

    /// Partition columns among the keys prune; one that is not a key does
    /// not (a key may have moved there).
    #[test]
    fn files_are_pruned_by_the_partition_columns_that_are_keys() {
        let c = changes(&[(5, "a", 0, 0, false), (7, "b", 0, 1, false)]);
        let keyed = Scope::new(&c, &rules(&["id", "v"]), &["v".into()]).unwrap();
        assert!(keyed.may_hold(&part("a"), Some(&stats(0, 10))));
        assert!(!keyed.may_hold(&part("c"), Some(&stats(0, 10))));
        assert!(
            !keyed.may_hold(&part("a"), Some(&stats(8, 10))),
            "statistics too"
        );
        let moving = Scope::new(&c, &rules(&["id"]), &["v".into()]).unwrap();
        assert!(moving.may_hold(&part("c"), Some(&stats(0, 10))));
        assert!(!moving.may_hold(&part("c"), Some(&stats(8, 10))));
    }

    /// Typed partition values (an integer here) are compared as values.
    #[test]
    fn integer_partition_values_prune() {
        let c = changes(&[(5, "a", 0, 0, false)]);
        let s = Scope::new(&c, &rules(&["id"]), &["id".into()]).unwrap();
        let at = |v: &str| HashMap::from([("id".to_string(), Some(v.to_string()))]);
        assert!(s.may_hold(&at("5"), None));
        assert!(!s.may_hold(&at("6"), None));
        assert!(s.may_hold(&at("not a number"), None), "unparsed: read it");
    }

    /// A concurrent commit conflicts when it removed a file read or added
    /// one that may hold a key; not otherwise.
    #[test]
    fn a_merge_conflicts_only_with_the_files_it_depends_on() {
        let c = changes(&[(5, "a", 0, 0, false)]);
        let f = Footprint {
            read: HashSet::from(["v=a/x.parquet".to_string()]),
            scope: Scope::new(&c, &rules(&["id", "v"]), &["v".into()]).unwrap(),
        };
        let added = |v: &str, s: Option<String>| Changes {
            files: true,
            added: vec![AddedFile {
                partition_values: part(v),
                stats: s,
            }],
            ..Changes::default()
        };
        assert!(
            !f.conflicts(&added("b", Some(stats(0, 10)))),
            "another partition"
        );
        assert!(!f.conflicts(&added("a", Some(stats(6, 10)))), "other keys");
        assert!(f.conflicts(&added("a", Some(stats(0, 10)))));
        assert!(f.conflicts(&added("a", None)), "no statistics: may hold");
        let removed = |p: &str| Changes {
            files: true,
            removed: vec![p.to_string()],
            ..Changes::default()
        };
        assert!(f.conflicts(&removed("v=a/x.parquet")));
        assert!(!f.conflicts(&removed("v=b/y.parquet")));
        let unknown = Changes {
            unknown_files: true,
            ..Changes::default()
        };
        assert!(f.conflicts(&unknown));
    }

    /// Delta's string forms of dates and timestamps (as delta-rs writes
    /// them) parse to their values.
    #[test]
    fn date_and_timestamp_partition_values_parse() {
        use arrow::datatypes::{Date32Type, TimeUnit, TimestampMicrosecondType};
        let d = partition_array(Some("2024-01-02"), &DataType::Date32, 1).unwrap();
        assert_eq!(
            arrow::array::AsArray::as_primitive::<Date32Type>(d.as_ref()).value(0),
            19724
        );
        let ty = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let t = partition_array(Some("2024-01-02 03:04:05.000006"), &ty, 1).unwrap();
        assert_eq!(
            arrow::array::AsArray::as_primitive::<TimestampMicrosecondType>(t.as_ref()).value(0),
            1_704_164_645_000_006
        );
    }

    #[test]
    fn partition_values_become_columns() {
        let c = changes(&[(5, "a", 0, 0, false)]);
        let bare = c.project(&[0, 2, 3, 4]).unwrap();
        let table = c.schema();
        let b = with_partition_columns(bare, &["v".into()], &part("zz"), &table).unwrap();
        let v = b.column_by_name("v").unwrap();
        assert_eq!(
            arrow::array::AsArray::as_string::<i32>(v.as_ref()).value(0),
            "zz"
        );
        let none = HashMap::from([("v".to_string(), None)]);
        let b =
            with_partition_columns(c.project(&[0]).unwrap(), &["v".into()], &none, &table).unwrap();
        assert!(b.column_by_name("v").unwrap().is_null(0));
    }
}
