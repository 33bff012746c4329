//! The decode thread's side of the `upsert` and `changelog` modes: turning
//! a chunk's rows into changes.
//!
//! - A change needs its key: a row with a null key column (or a null
//!   `sequence_by`) is quarantined (stage `constraint`).
//! - Tombstones (`tombstones = "delete"`) become delete changes of their
//!   Kafka key instead of being quarantined: rows with null value columns.
//!   When the keys are not the key column, a tombstone has no key and stays
//!   quarantined.
//! - `upsert` and `history`: `delete_when` marks deletes, and each change carries its
//!   Kafka offset ([`OFFSET_COLUMN`]) and whether it deletes
//!   ([`DELETE_COLUMN`]); the batch's columns are all nullable (a delete has
//!   no values), the sink writes rows with the table's own nullability.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Builder, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::message::BorrowedMessage;

use super::PipelineError;
use crate::config::{MetadataColumns, TableConfig, TableMode, Tombstones};
use crate::conform::constraints::Constraint;
use crate::conform::{assemble_with_key, KeyDecoder};
use crate::record::{KafkaRecord, Rejections, Stage};
use crate::schema::TableLayout;
use crate::sink::{DELETE_COLUMN, OFFSET_COLUMN};

/// How one table's rows become changes.
#[derive(Debug)]
pub(super) struct ChangeRules {
    mode: TableMode,
    keys: Vec<String>,
    sequence_by: Option<String>,
    delete_when: Option<(String, Constraint)>,
    /// Tombstones delete their key (the keys are the key column).
    tombstones: bool,
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> PipelineError {
    PipelineError::internal_by(format!("building changes: {e}"), e)
}

impl ChangeRules {
    /// The rules of `tc` over the table of `layout`; `None` in `append` mode.
    pub(super) fn new(
        name: &str,
        tc: &TableConfig,
        layout: &TableLayout,
    ) -> Result<Option<Self>, PipelineError> {
        if tc.mode == TableMode::Append {
            return Ok(None);
        }
        let delete_when = match &tc.delete_when {
            Some(sql) => Some((
                sql.clone(),
                Constraint::compile("delete_when", sql, &layout.table).map_err(|e| {
                    PipelineError::setup_by(format!("table `{name}`: tables.{name}.{e}"), e)
                })?,
            )),
            None => None,
        };
        let key_column = tc.metadata_columns.key.as_deref();
        let tombstones = tc.tombstones == Tombstones::Delete
            && key_column.is_some_and(|k| tc.keys.len() == 1 && tc.keys[0] == k);
        Ok(Some(ChangeRules {
            mode: tc.mode,
            keys: tc.keys.clone(),
            sequence_by: tc.sequence_by.clone(),
            delete_when,
            tombstones,
        }))
    }

    /// The changes of a chunk: `batch` (rows of the messages at `good`)
    /// checked for keys, the chunk's tombstones added as deletes (and taken
    /// out of `rejected`), and in `upsert` mode the change columns. `good`
    /// stays in message order, matching the rows only in `append`-like
    /// order: the tombstone rows come last.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn changes(
        &self,
        layout: &TableLayout,
        meta: &MetadataColumns,
        key: Option<&mut KeyDecoder>,
        name: &str,
        messages: &[BorrowedMessage<'_>],
        batch: RecordBatch,
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, PipelineError> {
        let batch = self.keyed(batch, good, rejected)?;
        let mut deletes = match &self.delete_when {
            Some((_, c)) if self.mode.merges() => {
                let d = c.holds(&batch).map_err(internal)?;
                d.values().iter().collect::<Vec<bool>>()
            }
            _ => vec![false; batch.num_rows()],
        };
        let mut tomb_good = self.tombstones_of(messages, rejected);
        let relaxed = relaxed(layout, meta);
        let mut parts = vec![self.with_changes(&relaxed, &batch, good, messages, &deletes)?];
        if !tomb_good.is_empty() {
            let nulls = RecordBatch::try_new_with_options(
                relaxed.value.clone(),
                relaxed
                    .value
                    .fields()
                    .iter()
                    .map(|f| arrow::array::new_null_array(f.data_type(), tomb_good.len()))
                    .collect(),
                &RecordBatchOptions::new().with_row_count(Some(tomb_good.len())),
            )
            .map_err(internal)?;
            let mut values = nulls;
            let key_column = match key {
                Some(kd) => {
                    let Some(c) = super::decode::decode_keys(
                        kd,
                        name,
                        messages,
                        &mut tomb_good,
                        &mut values,
                        rejected,
                    )?
                    else {
                        return Err(PipelineError::Internal("stopped decoding keys".into()));
                    };
                    Some(c)
                }
                None => None,
            };
            let tombs =
                assemble_with_key(&relaxed, &values, messages, &tomb_good, key_column.as_ref())
                    .map_err(internal)?;
            let tombs = self.keyed(tombs, &mut tomb_good, rejected)?;
            deletes = vec![true; tombs.num_rows()];
            if self.mode == TableMode::Changelog {
                match conform_to(&tombs, &layout.table) {
                    Some(t) => parts.push(t),
                    None => {
                        for &i in &tomb_good {
                            rejected.reject(
                                i,
                                Stage::Constraint,
                                "a tombstone in changelog mode needs nullable value columns",
                            );
                        }
                        rejected.sort();
                        tomb_good.clear();
                    }
                }
            } else {
                parts.push(self.with_changes(&relaxed, &tombs, &tomb_good, messages, &deletes)?);
            }
            good.extend(tomb_good);
        }
        let schema = parts[0].schema();
        arrow::compute::concat_batches(&schema, &parts).map_err(internal)
    }

    /// Takes the tombstones out of `rejected` when they delete: the
    /// messages (in order) that become deletes.
    fn tombstones_of(
        &self,
        messages: &[BorrowedMessage<'_>],
        rejected: &mut Rejections,
    ) -> Vec<usize> {
        if !self.tombstones {
            return Vec::new();
        }
        let is_tomb = |i: usize| {
            let m = &messages[i];
            KafkaRecord::value(m).is_none() && KafkaRecord::key(m).is_some()
        };
        let tombs: Vec<usize> = rejected
            .iter()
            .filter(|r| r.stage == Stage::Decode && is_tomb(r.index))
            .map(|r| r.index)
            .collect();
        if tombs.is_empty() {
            return tombs;
        }
        let rest: Vec<_> = rejected
            .iter()
            .filter(|r| !(r.stage == Stage::Decode && is_tomb(r.index)))
            .cloned()
            .collect();
        rejected.clear();
        rejected.extend(rest);
        tombs
    }

    /// `batch` without the rows whose key (or sequence) is null, which are
    /// rejected.
    fn keyed(
        &self,
        batch: RecordBatch,
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, PipelineError> {
        let mut failures: Vec<(usize, String)> = Vec::new();
        let needed = self.keys.iter().map(|k| ("key", k));
        for (what, col) in needed.chain(self.sequence_by.iter().map(|s| ("sequence_by", s))) {
            let Some(c) = batch.column_by_name(col) else {
                continue;
            };
            if c.null_count() == 0 {
                continue;
            }
            for row in (0..c.len()).filter(|&r| c.is_null(r)) {
                if !failures.iter().any(|(r, _)| *r == row) {
                    failures.push((
                        row,
                        format!("{what} column `{col}` is null: a change needs it"),
                    ));
                }
            }
        }
        if failures.is_empty() {
            return Ok(batch);
        }
        failures.sort();
        let mut keep = vec![true; batch.num_rows()];
        for (r, _) in &failures {
            keep[*r] = false;
        }
        rejected.extend_subset(Stage::Constraint, failures, good);
        let mut row = 0;
        good.retain(|_| {
            row += 1;
            keep[row - 1]
        });
        arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(internal)
    }

    /// `upsert`: `batch` in the relaxed schema with the offset and delete
    /// columns; `changelog`: `batch` as it is.
    fn with_changes(
        &self,
        relaxed: &TableLayout,
        batch: &RecordBatch,
        good: &[usize],
        messages: &[BorrowedMessage<'_>],
        deletes: &[bool],
    ) -> Result<RecordBatch, PipelineError> {
        if !self.mode.merges() {
            return Ok(batch.clone());
        }
        let mut offsets = Int64Builder::with_capacity(good.len());
        good.iter()
            .for_each(|&i| offsets.append_value(KafkaRecord::offset(&messages[i])));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(offsets.finish()));
        columns.push(Arc::new(BooleanArray::from(deletes.to_vec())));
        RecordBatch::try_new(change_schema(&relaxed.table), columns).map_err(internal)
    }
}

/// The table's layout with every column nullable (a delete has no values).
fn relaxed(layout: &TableLayout, meta: &MetadataColumns) -> TableLayout {
    let fields: Vec<Field> = layout
        .table
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    TableLayout::new(Arc::new(Schema::new(fields)), meta)
}

/// The schema of change batches: the (relaxed) table columns, then the
/// offset and delete columns.
fn change_schema(table: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
    fields.push(Field::new(DELETE_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// `batch` in `schema` (the same columns), if its nulls fit.
fn conform_to(batch: &RecordBatch, schema: &SchemaRef) -> Option<RecordBatch> {
    RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).ok()
}
