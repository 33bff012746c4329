//! Conforming decoded batches to a table's value schema.
//!
//! A decoder produces batches in an *input schema*: one Avro writer schema
//! version as arrow-avro decodes it, or one JSON Schema version as
//! [`json_schema_to_arrow`](crate::schema::json_schema_to_arrow) maps it. A
//! [`Conformer`] is planned once per (input schema, table value schema) and
//! then turns every batch of that input schema into a batch of the table's
//! columns, in table order, with arrow kernels only.
//!
//! Columns (and nested struct fields) are matched by exact name. A conversion
//! is only made where no value can be lost or changed:
//!
//! | input | table |
//! | --- | --- |
//! | the same type | as it is (the array is shared, not copied) |
//! | `Int8`/`Int16`/`Int32`, `UInt8`/`UInt16`/`UInt32` | a wider integer, `DOUBLE` (and `FLOAT` for 8 and 16 bits), a `DECIMAL` with enough integer digits |
//! | `Int64`, `UInt64` | a `DECIMAL` with at least 19 (20) integer digits |
//! | `Float16`, `Float32` | `FLOAT` (from `Float16`), `DOUBLE` |
//! | `Utf8`, `LargeUtf8`, `Utf8View`, a dictionary of strings (Avro `enum`) | `STRING` |
//! | `FixedSizeBinary(16)` (Avro `uuid`) | `STRING`: the lowercase hyphenated uuid |
//! | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` | `BINARY` |
//! | `Decimal(p1, s)` | `DECIMAL(p2, s)` with `p2 >= p1` |
//! | a UTC timestamp (`UTC`, `+00:00`, `Z`, …) in s, ms or µs | `TIMESTAMP` |
//! | a timestamp without time zone in s, ms or µs | `TIMESTAMP_NTZ` |
//! | struct, array, map | the same, converted field by field |
//!
//! Anything else is [`ConformError::Incompatible`]: narrowing (`BIGINT` to
//! `INT`, `DOUBLE` to `FLOAT`), strings to numbers, nanosecond timestamps (Delta
//! stores microseconds), a time zone change, a decimal scale change. Nothing
//! is ever truncated silently.
//!
//! Table columns the input lacks become nulls when they are nullable; a
//! missing `NOT NULL` column is `Incompatible`. Input fields the table lacks
//! follow the table's [`EvolutionPolicy`].
//!
//! Values that cannot be stored reject their row, not the batch (see
//! [`Conformed`]): a null in a `NOT NULL` column (or `NOT NULL` nested field,
//! or non-null array element or map value), and a second or millisecond
//! timestamp beyond the microsecond range.
//!
//! Around the [`Conformer`]: the [`Normalizer`] (a table's transforms, then
//! conforming, per input schema), the [`KeyDecoder`] (keys decoded and
//! conformed to the key column), the table's [`constraints`] and the
//! assembly of value, key and Kafka metadata columns into table rows.

mod assemble;
pub mod constraints;
mod convert;
mod key;
mod normalize;
mod nulls;
mod plan;

pub use assemble::{assemble, assemble_with_key, headers_column};
pub use key::{struct_fields, KeyDecoder, KeyError};
pub use normalize::{NormalizeError, Normalized, Normalizer};

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, NullArray, RecordBatch, RecordBatchOptions};
use arrow::compute::FilterBuilder;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;

use convert::convert_children;
use nulls::check_children;
use plan::{Planner, StructPlan};

use crate::config::EvolutionPolicy;

/// A schema an input cannot be conformed to.
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// The input has fields the table lacks, under [`EvolutionPolicy::Fail`].
    #[error(
        "the input has fields the table lacks: {} (evolution = \"fail\"); add them with an \
         `inlet migrate` add_columns migration, or set `tables.<name>.evolution = \"add_columns\"` \
         to add them as they arrive (or \"ignore\" to drop them)",
        list(fields)
    )]
    NewFields {
        /// The new fields, nested ones as `struct.field`.
        fields: Vec<String>,
    },
    /// A field whose type cannot become the table's without losing or
    /// changing values, or a `NOT NULL` table column the input lacks.
    #[error("field `{field}` cannot be stored: {from} does not fit {to}: {reason}")]
    Incompatible {
        /// The field, nested ones as `struct.field`.
        field: String,
        /// The input's type (or "missing").
        from: String,
        /// The table's type.
        to: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// An Arrow kernel failed (or a batch did not have the planned input schema).
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

pub(super) fn list(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One conformed batch.
///
/// Rows whose values the table cannot hold are *removed* from `batch` and
/// listed in `rejected`; the caller quarantines them (the `schema` stage) from
/// the original messages. A `NOT NULL` table column therefore never holds a
/// null: a nullable input field may feed a `NOT NULL` column (the plan allows
/// it, since the data may have no nulls), and every row where it is null is
/// rejected here.
#[derive(Debug, Clone)]
pub struct Conformed {
    /// The kept rows, in [`Conformer::output_schema`].
    pub batch: RecordBatch,
    /// For each row of `batch`, its row in the input batch (ascending).
    pub rows: Vec<usize>,
    /// The rejected input rows (ascending) and why, e.g. "`user.id` is NOT
    /// NULL in the table but the value is null".
    pub rejected: Vec<(usize, String)>,
}

/// How batches of one input schema become batches of one table's value
/// columns. Plan once with [`Conformer::new`], then [`Conformer::apply`] to
/// every batch of that input schema.
#[derive(Debug)]
pub struct Conformer {
    input: SchemaRef,
    output: SchemaRef,
    plan: StructPlan,
    new_fields: Vec<String>,
    may_reject: bool,
}

impl Conformer {
    /// Plans how batches of `input` become batches of `table` (plus the new
    /// columns [`EvolutionPolicy::AddColumns`] adds).
    ///
    /// Errors: [`ConformError::Incompatible`] for a type that cannot be
    /// converted without loss or a missing `NOT NULL` column;
    /// [`ConformError::NewFields`] for new fields under
    /// [`EvolutionPolicy::Fail`].
    pub fn new(
        input: &Schema,
        table: &Schema,
        policy: EvolutionPolicy,
    ) -> Result<Self, ConformError> {
        let mut planner = Planner {
            policy,
            new_fields: Vec::new(),
        };
        let plan = planner.plan_struct(input.fields(), table.fields(), "")?;
        if policy == EvolutionPolicy::Fail && !planner.new_fields.is_empty() {
            return Err(ConformError::NewFields {
                fields: planner.new_fields,
            });
        }
        let output = Arc::new(Schema::new_with_metadata(
            plan.fields.clone(),
            table.metadata().clone(),
        ));
        let may_reject = plan.may_reject();
        Ok(Conformer {
            input: Arc::new(input.clone()),
            output,
            plan,
            new_fields: planner.new_fields,
            may_reject,
        })
    }

    /// The schema batches must have.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.input
    }

    /// The schema [`apply`](Self::apply) produces: the table's fields in
    /// order, then (with [`EvolutionPolicy::AddColumns`]) the new ones,
    /// nullable and with Delta types. New fields of struct columns are added
    /// at the end of their struct.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// The input's fields the table lacks, nested ones as `a.b` (array
    /// elements as `a.element.b`, map values as `a.value.b`): added to
    /// [`output_schema`](Self::output_schema) with
    /// [`EvolutionPolicy::AddColumns`], dropped with
    /// [`EvolutionPolicy::Ignore`]. Empty when the table has every field.
    pub fn new_fields(&self) -> &[String] {
        &self.new_fields
    }

    /// Conforms one batch, which must have [`input_schema`](Self::input_schema).
    /// Rows the table cannot hold are left out and listed (see [`Conformed`]).
    /// Columns of the same type are shared with `batch`, not copied.
    pub fn apply(&self, batch: &RecordBatch) -> Result<Conformed, ConformError> {
        self.check_input(batch)?;
        let n = batch.num_rows();
        let mut violations = Vec::new();
        if self.may_reject {
            check_children(&self.plan, batch.columns(), None, &mut violations);
        }
        if violations.is_empty() {
            let columns = convert_children(&self.plan, batch.columns(), n)?;
            return Ok(Conformed {
                batch: self.batch(columns, n)?,
                rows: (0..n).collect(),
                rejected: Vec::new(),
            });
        }
        let mut bad = violations[0].1.clone();
        for (_, mask) in &violations[1..] {
            bad = &bad | mask;
        }
        let rejected = bad
            .set_indices()
            .map(|row| {
                let reason = violations
                    .iter()
                    .find(|(_, mask)| mask.value(row))
                    .map(|(reason, _)| reason.clone())
                    .unwrap_or_default();
                (row, reason)
            })
            .collect();
        let keep = !&bad;
        let rows: Vec<usize> = keep.set_indices().collect();
        let filter = FilterBuilder::new(&BooleanArray::new(keep, None))
            .optimize()
            .build();
        let used = self.plan.sources();
        let filtered = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if used.contains(&i) {
                    filter.filter(c)
                } else {
                    Ok(Arc::new(NullArray::new(0)) as ArrayRef)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let columns = convert_children(&self.plan, &filtered, rows.len())?;
        Ok(Conformed {
            batch: self.batch(columns, rows.len())?,
            rows,
            rejected,
        })
    }

    fn batch(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }

    fn check_input(&self, batch: &RecordBatch) -> Result<(), ConformError> {
        let fields = self.input.fields();
        let matches = batch.num_columns() == fields.len()
            && batch
                .columns()
                .iter()
                .zip(fields.iter())
                .all(|(c, f)| c.data_type() == f.data_type());
        if matches {
            Ok(())
        } else {
            Err(ArrowError::SchemaError(format!(
                "the batch's schema {:?} is not the one this conformer was planned for: {:?}",
                batch.schema().fields(),
                fields
            ))
            .into())
        }
    }
}

#[cfg(test)]
mod tests;
