//! Normalising transforms between decoding and the table: rename, snake_case,
//! cast, timestamp parsing, flatten, drop, mask, hash, derived columns, SQL
//! projections and filters, Debezium envelopes, configured per table as
//! `[[tables.<name>.transforms]]` entries (see [`TransformSpec`]).
//!
//! A [`TransformPlan`] is compiled once per input schema (an Avro topic can
//! bring several writer schemas; the caller keeps one plan per schema). Its
//! output schema is known at compile time, and every configuration mistake is
//! reported then, naming the entry as `transforms[i] (op)`. Applying it runs
//! whole-batch Arrow kernels and compiled DataFusion expressions,
//! synchronously. Rows a transform cannot process are returned as rejected,
//! with the reason, for the quarantine; only when a batch-level evaluation
//! fails are the failing rows isolated (by bisecting the batch), so good rows
//! always go through.

mod cast;
mod debezium;
mod expr;
mod names;
mod redact;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::config::{TimestampFrom, TransformSpec};
use crate::fault::{Classify, Fault};
use cast::{CastFn, TimestampFn};
use expr::{ExprFn, SqlCompiler};
use redact::{HashFn, MaskFn};

/// Errors compiling or applying transforms.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A transform does not fit the configuration or the input schema.
    #[error("transforms[{index}] ({op}): {message}")]
    Config {
        /// Position of the entry in the table's `transforms` list.
        index: usize,
        /// Its `op`.
        op: &'static str,
        /// What is wrong, and the fix.
        message: String,
    },
    /// Applying a compiled plan failed for inlet's own reasons, not a row's:
    /// a batch of another schema, or DataFusion failing internally
    /// (`Internal`, `NotImplemented`, a planning error) or on a batch
    /// without rows. Also raised at compile time when the plan cannot run
    /// even on a batch of nulls (see [`TransformPlan::compile`]).
    #[error("transforms[{index}] ({op}): {message}")]
    Eval {
        /// Position of the entry in the table's `transforms` list.
        index: usize,
        /// Its `op`.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Arrow failed on a whole batch, for inlet's own reasons (as `Eval`).
    #[error("transforms[{index}] ({op}): {source}")]
    Arrow {
        /// Position of the entry in the table's `transforms` list.
        index: usize,
        /// Its `op`.
        op: &'static str,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl TransformError {
    /// What went wrong, without the transform's name.
    pub fn message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            TransformError::Config { message, .. } | TransformError::Eval { message, .. } => {
                message.into()
            }
            TransformError::Arrow { source, .. } => source.to_string().into(),
        }
    }
}

impl Classify for TransformError {
    /// A mistake in the configuration is the operator's; a whole batch
    /// failing is inlet's own: it stops the pipeline instead of quarantining
    /// every message. A row's own failures are not errors at all: they are
    /// [`Transformed::rejected`].
    fn fault(&self) -> Fault {
        match self {
            TransformError::Config { .. } => Fault::Operator,
            TransformError::Eval { .. } | TransformError::Arrow { .. } => Fault::Internal,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = TransformError> = std::result::Result<T, E>;

/// The result of applying a plan to a batch. Every input row is in exactly
/// one of `rows` (it became an output row), `rejected` (it failed a
/// transform) or neither (a filter dropped it).
#[derive(Debug, Clone)]
pub struct Transformed {
    /// The output rows, with exactly [`TransformPlan::output_schema`].
    pub batch: RecordBatch,
    /// For each output row, the input row it came from; strictly ascending.
    pub rows: Vec<usize>,
    /// Input rows that failed a transform, with the reason (naming the
    /// transform as `transforms[i] (op)`), ascending by row.
    pub rejected: Vec<(usize, String)>,
}

/// Transforms compiled against one input schema.
pub struct TransformPlan {
    input: SchemaRef,
    output: SchemaRef,
    steps: Vec<Step>,
}

impl fmt::Debug for TransformPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransformPlan")
            .field("steps", &self.steps)
            .field("output", &self.output)
            .finish()
    }
}

impl TransformPlan {
    /// Compiles `specs`, in order, against batches of schema `input`.
    ///
    /// Each step is then tried on a batch without rows and its expressions
    /// on one row of nulls: what fails there fails without any row's help
    /// (a function DataFusion cannot execute, an argument no row can fix),
    /// so it is reported now, naming the transform, as an
    /// [`TransformError::Eval`] (inlet's fault), instead of failing every
    /// batch at run time.
    pub fn compile(specs: &[TransformSpec], input: SchemaRef) -> Result<Self> {
        let mut steps = Vec::new();
        let mut schema = input.clone();
        let mut sql = None;
        for (index, spec) in specs.iter().enumerate() {
            let op = spec.op();
            let config = |message: String| TransformError::Config { index, op, message };
            let ctx = Ctx {
                index,
                op,
                schema: &schema,
            };
            let compiled = match spec {
                TransformSpec::Rename { columns } => names::rename(&ctx, columns),
                TransformSpec::SnakeCase { nested } => names::snake_case(&ctx, *nested),
                TransformSpec::Cast { columns } => cast::compile_cast(&ctx, columns),
                TransformSpec::Timestamp {
                    column,
                    from,
                    format,
                    into,
                } => {
                    cast::compile_timestamp(&ctx, column, *from, format.as_deref(), into.as_deref())
                }
                TransformSpec::Flatten { separator, columns } => {
                    names::flatten(&ctx, separator, columns.as_deref())
                }
                TransformSpec::Drop { columns } => names::drop(&ctx, columns),
                TransformSpec::Mask { columns, with } => redact::compile_mask(&ctx, columns, with),
                TransformSpec::Hash {
                    columns,
                    salt,
                    salt_env,
                } => redact::compile_hash(&ctx, columns, salt.as_deref(), salt_env.as_deref()),
                TransformSpec::Derive { column, expr } => sql
                    .get_or_insert_with(SqlCompiler::new)
                    .derive(&ctx, column, expr),
                TransformSpec::Sql { query } => {
                    sql.get_or_insert_with(SqlCompiler::new).query(&ctx, query)
                }
                TransformSpec::Filter { expr } => {
                    sql.get_or_insert_with(SqlCompiler::new).filter(&ctx, expr)
                }
                TransformSpec::Debezium { .. } => match debezium::Options::of(spec) {
                    Some(o) => debezium::compile(&ctx, &o),
                    None => Err("not a debezium entry".to_string()),
                },
            }
            .map_err(config)?;
            if compiled.columns.is_empty() {
                return Err(config(
                    "no column would be left; keep at least one column".to_string(),
                ));
            }
            let output = Arc::new(Schema::new_with_metadata(
                compiled
                    .columns
                    .iter()
                    .map(|c| c.0.clone())
                    .collect::<Vec<_>>(),
                schema.metadata().clone(),
            ));
            names::check_unique(output.fields(), "").map_err(config)?;
            let step = Step {
                index,
                op,
                filter: compiled.filter,
                unwrap: compiled.unwrap,
                columns: compiled.columns.into_iter().map(|c| c.1).collect(),
                output: output.clone(),
            };
            step.probe(&schema)
                .map_err(|message| TransformError::Eval {
                    index,
                    op,
                    message: format!(
                        "{message}; this fails on a batch of nulls already, so no message \
                     can pass it: change the expression"
                    ),
                })?;
            steps.push(step);
            schema = output;
        }
        Ok(TransformPlan {
            input,
            output: schema,
            steps,
        })
    }

    /// The schema of every output batch.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Whether there are no transforms (batches pass through unchanged).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the transforms to `batch`, which must have the schema the plan
    /// was compiled for (field names and types).
    pub fn apply(&self, batch: &RecordBatch) -> Result<Transformed> {
        let n = batch.num_rows();
        self.check_input(batch)?;
        let mut current = batch.clone();
        // Current row → input row; `None` while it is the identity.
        let mut origin: Option<Vec<usize>> = None;
        let mut rejected = Vec::new();
        for step in &self.steps {
            let out = step.apply(&current)?;
            for (row, reason) in out.rejected {
                let row = origin.as_ref().map_or(row, |o| o[row]);
                rejected.push((row, reason));
            }
            if let Some(kept) = out.kept {
                let before = origin
                    .take()
                    .unwrap_or_else(|| (0..current.num_rows()).collect());
                origin = Some(
                    before
                        .into_iter()
                        .zip(kept.iter())
                        .filter_map(|(row, keep)| keep.then_some(row))
                        .collect(),
                );
            }
            current = out.batch;
        }
        if self.steps.is_empty() {
            current = current.with_schema(self.output.clone()).map_err(|source| {
                TransformError::Arrow {
                    index: 0,
                    op: self.steps.first().map_or("none", |s| s.op),
                    source,
                }
            })?;
        }
        rejected.sort_by_key(|r| r.0);
        Ok(Transformed {
            batch: current,
            rows: origin.unwrap_or_else(|| (0..n).collect()),
            rejected,
        })
    }

    fn check_input(&self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        if Arc::ptr_eq(&schema, &self.input) {
            return Ok(());
        }
        let same = schema.fields().len() == self.input.fields().len()
            && schema
                .fields()
                .iter()
                .zip(self.input.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same {
            Ok(())
        } else {
            Err(self.mismatch(format!(
                "the batch's schema {schema:?} is not the one the transforms were compiled for ({:?})",
                self.input
            )))
        }
    }

    fn mismatch(&self, message: String) -> TransformError {
        TransformError::Eval {
            index: 0,
            op: self.steps.first().map_or("none", |s| s.op),
            message,
        }
    }
}

/// The shape plain JSON values are decoded as when `input_schema` is not
/// set: the table's value columns `table`, or, when the first transform is
/// `debezium`, the Debezium envelope of them (see [`TransformSpec`]).
pub fn json_input(specs: &[TransformSpec], table: &Schema) -> Schema {
    match specs.first().and_then(debezium::Options::of) {
        Some(o) => debezium::json_envelope(&o, table),
        None => table.clone(),
    }
}

/// What a transform compiles to: an optional row filter, then the output
/// columns computed from the (filtered) input.
pub(crate) struct Compiled {
    filter: Option<ExprFn>,
    /// A Debezium envelope unwrapped (and bad events rejected) first; the
    /// columns are then computed from the unwrapped batch.
    unwrap: Option<Box<debezium::Unwrap>>,
    columns: Vec<(FieldRef, ColumnFn)>,
}

impl Compiled {
    /// Output columns only.
    fn columns(columns: Vec<(FieldRef, ColumnFn)>) -> Self {
        Compiled {
            filter: None,
            unwrap: None,
            columns,
        }
    }

    /// Every input column unchanged, with `column` put at `name`'s place, or
    /// added at the end.
    fn replace_or_add(schema: &Schema, name: &str, field: Field, column: ColumnFn) -> Self {
        let mut columns = keep_all(schema);
        let field = Arc::new(field);
        match schema.index_of(name) {
            Ok(i) => columns[i] = (field, column),
            Err(_) => columns.push((field, column)),
        }
        Compiled::columns(columns)
    }
}

/// Every column of `schema`, unchanged.
fn keep_all(schema: &Schema) -> Vec<(FieldRef, ColumnFn)> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.clone(), ColumnFn::Keep(i)))
        .collect()
}

/// Compile-time context of one transform.
pub(crate) struct Ctx<'a> {
    index: usize,
    op: &'static str,
    schema: &'a SchemaRef,
}

impl Ctx<'_> {
    /// Index of a top-level column, or an error that lists the columns.
    fn column(&self, name: &str) -> Result<usize, String> {
        self.schema
            .index_of(name)
            .map_err(|_| not_found(self.schema.fields().iter().map(|f| f.name().as_str()), name))
    }

    /// Prefix of a row's rejection reason.
    fn reason_prefix(&self) -> String {
        format!("transforms[{}] ({})", self.index, self.op)
    }
}

/// "column `x` not found; columns are: ...", with a hint when only the case
/// differs.
pub(crate) fn not_found<'a>(names: impl Iterator<Item = &'a str> + Clone, name: &str) -> String {
    let hint = names
        .clone()
        .find(|n| n.eq_ignore_ascii_case(name) || snake(n) == snake(name))
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    let all: Vec<&str> = names.collect();
    const SHOWN: usize = 50;
    let mut list = all
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > SHOWN {
        list.push_str(&format!(", … ({} more)", all.len() - SHOWN));
    }
    format!("column `{name}` not found{hint}; columns are: {list}")
}

fn snake(name: &str) -> String {
    names::to_snake_case(name)
}

/// How one output column is computed from the step's input batch.
pub(crate) enum ColumnFn {
    /// An input column as it is.
    Keep(usize),
    /// An input column whose (nested) field names changed: same buffers.
    Relabel(usize),
    /// A field inside a struct column (`path` of child indices), null where
    /// any enclosing struct is null.
    StructField { column: usize, path: Vec<usize> },
    /// A checked cast.
    Cast(CastFn),
    /// Timestamp parsing.
    Timestamp(TimestampFn),
    /// Masking.
    Mask(MaskFn),
    /// Hashing.
    Hash(HashFn),
    /// An SQL expression.
    Expr(ExprFn),
}

impl fmt::Debug for ColumnFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnFn::Keep(i) => write!(f, "Keep({i})"),
            ColumnFn::Relabel(i) => write!(f, "Relabel({i})"),
            ColumnFn::StructField { column, path } => write!(f, "StructField({column}, {path:?})"),
            ColumnFn::Cast(c) => c.fmt(f),
            ColumnFn::Timestamp(t) => t.fmt(f),
            ColumnFn::Mask(m) => m.fmt(f),
            ColumnFn::Hash(h) => h.fmt(f),
            ColumnFn::Expr(e) => e.fmt(f),
        }
    }
}

/// Rows of the batch a column function could not compute, with the reason.
pub(crate) type Failed = Vec<(usize, String)>;

/// A computed column: full length (failed rows hold anything, usually null).
pub(crate) type Computed = std::result::Result<(ArrayRef, Failed), String>;

impl ColumnFn {
    fn eval(&self, batch: &RecordBatch, field: &Field) -> Computed {
        let ok = |a: ArrayRef| Ok((a, Vec::new()));
        match self {
            ColumnFn::Keep(i) => ok(batch.column(*i).clone()),
            ColumnFn::Relabel(i) => {
                ok(names::relabel(batch.column(*i), field.data_type())
                    .map_err(|e| e.to_string())?)
            }
            ColumnFn::StructField { column, path } => {
                ok(names::struct_field(batch.column(*column), path).map_err(|e| e.to_string())?)
            }
            ColumnFn::Cast(c) => c.eval(batch),
            ColumnFn::Timestamp(t) => t.eval(batch),
            ColumnFn::Mask(m) => ok(m.eval(batch)),
            ColumnFn::Hash(h) => ok(h.eval(batch).map_err(|e| e.to_string())?),
            ColumnFn::Expr(e) => e.eval(batch),
        }
    }
}

/// One compiled transform.
struct Step {
    index: usize,
    op: &'static str,
    filter: Option<ExprFn>,
    unwrap: Option<Box<debezium::Unwrap>>,
    columns: Vec<ColumnFn>,
    output: SchemaRef,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field(
                "transform",
                &format_args!("transforms[{}] ({})", self.index, self.op),
            )
            .field("filter", &self.filter)
            .field("unwrap", &self.unwrap)
            .field("columns", &self.columns)
            .finish()
    }
}

/// What one step did to its input batch.
struct StepOut {
    batch: RecordBatch,
    /// Which input rows are in `batch`, in order; `None`: all of them.
    kept: Option<BooleanBuffer>,
    /// Input rows that failed, with the reason.
    rejected: Failed,
}

impl Step {
    /// Runs the step on a batch without rows and its expressions on one row
    /// of nulls; the error is what cannot run whatever the rows. Failures of
    /// the null row itself are a row's (a message would be rejected) and
    /// are ignored.
    fn probe(&self, input: &SchemaRef) -> std::result::Result<(), String> {
        self.apply(&RecordBatch::new_empty(input.clone()))
            .map_err(|e| e.message().to_string())?;
        let Some(nulls) = null_row(input) else {
            return Ok(());
        };
        let exprs = self.columns.iter().filter_map(|c| match c {
            ColumnFn::Expr(e) => Some(e),
            _ => None,
        });
        for e in self.filter.iter().chain(exprs) {
            e.eval(&nulls)?;
        }
        Ok(())
    }

    fn arrow_error(&self, source: arrow::error::ArrowError) -> TransformError {
        TransformError::Arrow {
            index: self.index,
            op: self.op,
            source,
        }
    }

    fn eval_error(&self, message: impl fmt::Display) -> TransformError {
        TransformError::Eval {
            index: self.index,
            op: self.op,
            message: message.to_string(),
        }
    }

    fn apply(&self, input: &RecordBatch) -> Result<StepOut> {
        let mut rejected = Vec::new();
        let mut kept: Option<BooleanBuffer> = None;
        let filtered;
        let batch = match (&self.unwrap, &self.filter) {
            (Some(u), _) => {
                let out = u.apply(input).map_err(|e| self.arrow_error(e))?;
                rejected = out.rejected;
                kept = out.kept;
                filtered = out.batch;
                &filtered
            }
            (None, None) => input,
            (None, Some(f)) => {
                let (mask, failed) = f.eval_predicate(input).map_err(|e| self.eval_error(e))?;
                rejected = failed;
                if mask.count_set_bits() == input.num_rows() {
                    input
                } else {
                    filtered = arrow::compute::filter_record_batch(
                        input,
                        &BooleanArray::new(mask.clone(), None),
                    )
                    .map_err(|e| self.eval_error(e))?;
                    kept = Some(mask);
                    &filtered
                }
            }
        };
        let mut arrays = Vec::with_capacity(self.columns.len());
        let mut failed: Failed = Vec::new();
        for (column, field) in self.columns.iter().zip(self.output.fields()) {
            let (array, bad) = column
                .eval(batch, field)
                .map_err(|e| self.eval_error(format_args!("column `{}`: {e}", field.name())))?;
            if array.len() != batch.num_rows() {
                return Err(self.eval_error(format_args!(
                    "column `{}`: {} values for {} rows",
                    field.name(),
                    array.len(),
                    batch.num_rows()
                )));
            }
            arrays.push(array);
            failed.extend(bad);
        }
        let mut rows = batch.num_rows();
        if !failed.is_empty() {
            // A row fails once, for its first reason.
            failed.sort_by_key(|f| f.0);
            failed.dedup_by_key(|f| f.0);
            let mut good = vec![true; batch.num_rows()];
            for (row, _) in &failed {
                good[*row] = false;
            }
            let good = BooleanBuffer::from(good);
            let predicate = BooleanArray::new(good.clone(), None);
            for array in &mut arrays {
                *array = filter(array, &predicate).map_err(|e| self.arrow_error(e))?;
            }
            rows = good.count_set_bits();
            // Back to the step's input rows.
            match &kept {
                None => {
                    rejected.extend(failed);
                    kept = Some(good);
                }
                Some(mask) => {
                    let positions: Vec<usize> = mask.set_indices().collect();
                    rejected.extend(failed.into_iter().map(|(r, why)| (positions[r], why)));
                    let mut composed = vec![false; input.num_rows()];
                    for (j, &p) in positions.iter().enumerate() {
                        composed[p] = good.value(j);
                    }
                    kept = Some(BooleanBuffer::from(composed));
                }
            }
            rejected.sort_by_key(|r| r.0);
        }
        let batch = RecordBatch::try_new_with_options(
            self.output.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| self.arrow_error(e))?;
        Ok(StepOut {
            batch,
            kept,
            rejected,
        })
    }
}

/// One row of nulls of `schema` (its fields made nullable), or `None` when
/// Arrow cannot build one.
fn null_row(schema: &Schema) -> Option<RecordBatch> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let columns = schema
        .fields()
        .iter()
        .map(|f| arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).ok()
}

/// Bitmap of rows where `array` is valid (all set when it has no nulls).
pub(crate) fn validity(array: &dyn Array) -> BooleanBuffer {
    match array.logical_nulls() {
        Some(n) => n.inner().clone(),
        None => BooleanBuffer::new_set(array.len()),
    }
}

/// Whether a type is a string type.
pub(crate) fn is_string(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// A value of `array` at `row` for a rejection reason: shown as text,
/// shortened.
pub(crate) fn show_value(array: &dyn Array, row: usize) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let text = ArrayFormatter::try_new(array, &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".to_string());
    const MAX: usize = 100;
    if text.chars().count() > MAX {
        let short: String = text.chars().take(MAX).collect();
        format!("`{short}…`")
    } else {
        format!("`{text}`")
    }
}
