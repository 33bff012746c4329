//! `op = "debezium"`: Debezium change events unwrapped on whole batches.
//!
//! The envelope's parts (`before`, `after`, `op`, `source`, `ts_ms`,
//! `transaction`) are found once per input schema, at the top level and/or
//! inside `payload` (JSON with schemas). Applying picks each row's envelope
//! (`payload` where it is present), classifies the op in one pass over the
//! op strings, and builds the row image with one `zip` of the `before` and
//! `after` struct arrays: no value is looked at row by row except the op.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray as _, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::{keep_all, names, not_found, validity, Compiled, Ctx, Failed};
use crate::config::TransformSpec;

/// The options of one `debezium` entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options<'a> {
    op_column: &'a str,
    source_fields: &'a [String],
    source_prefix: &'a str,
    source_column: Option<&'a str>,
    ts_ms_column: Option<&'a str>,
    transaction: bool,
    transaction_prefix: &'a str,
}

impl<'a> Options<'a> {
    /// The options of `spec`, when it is a `debezium` entry.
    pub(crate) fn of(spec: &'a TransformSpec) -> Option<Self> {
        match spec {
            TransformSpec::Debezium {
                op_column,
                source_fields,
                source_prefix,
                source_column,
                ts_ms_column,
                transaction,
                transaction_prefix,
            } => Some(Options {
                op_column,
                source_fields,
                source_prefix,
                source_column: source_column.as_deref(),
                ts_ms_column: ts_ms_column.as_deref(),
                transaction: *transaction,
                transaction_prefix,
            }),
            _ => None,
        }
    }

    /// The transaction columns' names and types, in order.
    fn transaction_columns(&self) -> Vec<(String, DataType)> {
        if !self.transaction {
            return Vec::new();
        }
        TRANSACTION
            .iter()
            .map(|(f, ty)| (format!("{}{f}", self.transaction_prefix), ty.clone()))
            .collect()
    }

    /// Every column this transform adds beside the row image.
    fn added_columns(&self) -> Vec<String> {
        let mut out = vec![self.op_column.to_string()];
        out.extend(
            self.source_fields
                .iter()
                .map(|f| format!("{}{f}", self.source_prefix)),
        );
        out.extend(self.source_column.map(str::to_string));
        out.extend(self.ts_ms_column.map(str::to_string));
        out.extend(self.transaction_columns().into_iter().map(|c| c.0));
        out
    }
}

/// Debezium's transaction block.
const TRANSACTION: [(&str, DataType); 3] = [
    ("id", DataType::Utf8),
    ("total_order", DataType::Int64),
    ("data_collection_order", DataType::Int64),
];

/// The `source` fields of the Postgres and MySQL connectors, with the types
/// Debezium gives them: the default `source` of a plain JSON envelope.
const SOURCE: [(&str, DataType); 21] = [
    ("version", DataType::Utf8),
    ("connector", DataType::Utf8),
    ("name", DataType::Utf8),
    ("ts_ms", DataType::Int64),
    ("snapshot", DataType::Utf8),
    ("db", DataType::Utf8),
    ("sequence", DataType::Utf8),
    ("ts_us", DataType::Int64),
    ("ts_ns", DataType::Int64),
    ("schema", DataType::Utf8),
    ("table", DataType::Utf8),
    ("txId", DataType::Int64),
    ("lsn", DataType::Int64),
    ("xmin", DataType::Int64),
    ("server_id", DataType::Int64),
    ("gtid", DataType::Utf8),
    ("file", DataType::Utf8),
    ("pos", DataType::Int64),
    ("row", DataType::Int32),
    ("thread", DataType::Int64),
    ("query", DataType::Utf8),
];

/// The plain JSON input of a `debezium` entry without `input_schema`: the
/// envelope (both shapes: top level and in `payload`) whose row image is
/// `table`'s columns less those the transform adds. See the `debezium`
/// entry's documentation for `source`.
pub(crate) fn json_envelope(o: &Options<'_>, table: &Schema) -> Schema {
    let added = o.added_columns();
    let image: Fields = table
        .fields()
        .iter()
        .filter(|f| !added.contains(f.name()))
        .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
        .collect();
    let table_type = |name: &str| table.field_with_name(name).ok().map(|f| f.data_type());
    let mut source: Vec<Field> = match o.source_column.and_then(table_type) {
        Some(DataType::Struct(fields)) => fields.iter().map(|f| f.as_ref().clone()).collect(),
        _ => SOURCE
            .iter()
            .map(|(n, ty)| Field::new(*n, ty.clone(), true))
            .collect(),
    };
    for f in o.source_fields {
        if source.iter().any(|s| s.name() == f) {
            continue;
        }
        let known = SOURCE.iter().find(|(n, _)| n == f).map(|(_, ty)| ty);
        let column = format!("{}{f}", o.source_prefix);
        if let Some(ty) = known.or(table_type(&column)) {
            source.push(Field::new(f, ty.clone(), true));
        }
    }
    let row = DataType::Struct(image);
    let envelope = Fields::from(vec![
        Field::new("before", row.clone(), true),
        Field::new("after", row, true),
        Field::new("source", DataType::Struct(source.into()), true),
        Field::new("op", DataType::Utf8, true),
        Field::new("ts_ms", DataType::Int64, true),
        Field::new(
            "transaction",
            DataType::Struct(
                TRANSACTION
                    .iter()
                    .map(|(n, ty)| Field::new(*n, ty.clone(), true))
                    .collect(),
            ),
            true,
        ),
    ]);
    let mut fields: Vec<Field> = envelope.iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("payload", DataType::Struct(envelope), true));
    Schema::new(fields)
}

/// Where one part of the envelope is: a top-level column and/or a field of
/// `payload`.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    top: Option<usize>,
    inner: Option<usize>,
}

impl Part {
    fn exists(self) -> bool {
        self.top.is_some() || self.inner.is_some()
    }
}

/// The envelope's parts in the input schema.
#[derive(Debug, Clone, Copy)]
struct Envelope {
    /// The `payload` STRUCT column, when it holds an `op`.
    payload: Option<usize>,
    before: Part,
    after: Part,
    op: Part,
    source: Part,
    ts_ms: Part,
    transaction: Part,
}

/// A compiled `debezium` entry.
pub(crate) struct Unwrap {
    env: Envelope,
    /// Child positions in `source` of the kept source fields.
    source_fields: Vec<usize>,
    keep_source: bool,
    keep_ts_ms: bool,
    /// Child positions in `transaction` of id, total_order and
    /// data_collection_order (`None`: a null column); `None`: not kept.
    transaction: Option<[Option<usize>; 3]>,
    output: SchemaRef,
    /// `transforms[i] (debezium)`, for the rows' rejection reasons.
    prefix: String,
}

impl std::fmt::Debug for Unwrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwrap")
            .field("envelope", &self.env)
            .field("columns", &self.output.fields().len())
            .finish()
    }
}

/// Compiles a `debezium` entry against the context's schema.
pub(crate) fn compile(ctx: &Ctx<'_>, o: &Options<'_>) -> Result<Compiled, String> {
    for name in o.added_columns() {
        if name.is_empty() {
            return Err("column names must not be empty".to_string());
        }
    }
    let schema = ctx.schema;
    let env = locate(schema);
    let type_of = |part: Part, name: &str| part_type(schema, env.payload, part, name);
    let op_type = type_of(env.op, "op")?.ok_or_else(|| {
        format!(
            "not a Debezium envelope: no `op` column nor `payload.op`; {}",
            not_found(schema.fields().iter().map(|f| f.name().as_str()), "op")
                .trim_start_matches("column `op` not found; ")
        )
    })?;
    if !matches!(
        op_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Err(format!("`op` is {op_type}, not a string"));
    }
    let image =
        match (type_of(env.before, "before")?, type_of(env.after, "after")?) {
            (Some(b), Some(a)) if b != a => {
                return Err(format!(
            "`before` ({b}) and `after` ({a}) differ: Debezium gives both the table's one row type"
        ))
            }
            (Some(_), Some(DataType::Struct(fields))) => fields,
            _ => return Err(
                "the Debezium envelope needs `before` and `after`, STRUCTs of the row's fields \
                 (with plain JSON, write them in `input_schema`)"
                    .to_string(),
            ),
        };
    let mut fields: Vec<Field> = image
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(o.op_column, DataType::Utf8, true));
    let source = type_of(env.source, "source")?;
    let source_fields = source_columns(o, source.as_ref(), &mut fields)?;
    if let Some(name) = o.ts_ms_column {
        let ty = type_of(env.ts_ms, "ts_ms")?
            .ok_or("`ts_ms_column`: the envelope has no `ts_ms`".to_string())?;
        fields.push(Field::new(name, ty, true));
    }
    let transaction = if o.transaction {
        let txn = type_of(env.transaction, "transaction")?;
        Some(transaction_columns(o, txn.as_ref(), &mut fields)?)
    } else {
        None
    };
    let output = Arc::new(Schema::new(fields));
    let unwrap = Unwrap {
        env,
        source_fields,
        keep_source: o.source_column.is_some(),
        keep_ts_ms: o.ts_ms_column.is_some(),
        transaction,
        output: output.clone(),
        prefix: ctx.reason_prefix(),
    };
    Ok(Compiled {
        filter: None,
        unwrap: Some(Box::new(unwrap)),
        columns: keep_all(&output),
    })
}

/// The `source_fields` and `source_column` output fields; the kept fields'
/// positions in `source`.
fn source_columns(
    o: &Options<'_>,
    source: Option<&DataType>,
    fields: &mut Vec<Field>,
) -> Result<Vec<usize>, String> {
    if o.source_fields.is_empty() && o.source_column.is_none() {
        return Ok(Vec::new());
    }
    let Some(DataType::Struct(children)) = source else {
        return Err(match source {
            None => "`source_fields`/`source_column`: the envelope has no `source`".to_string(),
            Some(ty) => format!("`source` is {ty}, not a STRUCT"),
        });
    };
    let mut positions = Vec::with_capacity(o.source_fields.len());
    for f in o.source_fields {
        let Some((i, child)) = children.find(f) else {
            return Err(format!(
                "`source_fields`: {}",
                not_found(children.iter().map(|c| c.name().as_str()), f).replacen(
                    "column",
                    "source field",
                    1
                )
            ));
        };
        positions.push(i);
        fields.push(Field::new(
            format!("{}{f}", o.source_prefix),
            child.data_type().clone(),
            true,
        ));
    }
    if let (Some(name), Some(ty)) = (o.source_column, source) {
        fields.push(Field::new(name, ty.clone(), true));
    }
    Ok(positions)
}

/// The transaction output fields; the positions of Debezium's three
/// transaction fields in `transaction` (`None` where it lacks one).
fn transaction_columns(
    o: &Options<'_>,
    txn: Option<&DataType>,
    fields: &mut Vec<Field>,
) -> Result<[Option<usize>; 3], String> {
    let children = match txn {
        None => Fields::empty(),
        Some(DataType::Struct(c)) => c.clone(),
        Some(ty) => return Err(format!("`transaction` is {ty}, not a STRUCT")),
    };
    let mut positions = [None; 3];
    for (k, (name, ty)) in o.transaction_columns().into_iter().enumerate() {
        let (field, default) = &TRANSACTION[k];
        let ty = match children.find(field) {
            Some((i, child)) => {
                positions[k] = Some(i);
                child.data_type().clone()
            }
            None => {
                debug_assert_eq!(&ty, default);
                ty
            }
        };
        fields.push(Field::new(name, ty, true));
    }
    Ok(positions)
}

/// Finds the envelope's parts in `schema`.
fn locate(schema: &Schema) -> Envelope {
    let payload = schema.fields().iter().position(|f| {
        f.name() == "payload"
            && matches!(f.data_type(), DataType::Struct(c) if c.find("op").is_some())
    });
    let inner = payload.map(|p| match schema.field(p).data_type() {
        DataType::Struct(c) => c.clone(),
        _ => Fields::empty(),
    });
    let part = |name: &str| Part {
        top: schema.index_of(name).ok(),
        inner: inner.as_ref().and_then(|c| c.find(name).map(|(i, _)| i)),
    };
    Envelope {
        payload,
        before: part("before"),
        after: part("after"),
        op: part("op"),
        source: part("source"),
        ts_ms: part("ts_ms"),
        transaction: part("transaction"),
    }
}

/// The type of an envelope part; both places must agree.
fn part_type(
    schema: &Schema,
    payload: Option<usize>,
    part: Part,
    name: &str,
) -> Result<Option<DataType>, String> {
    let top = part.top.map(|i| schema.field(i).data_type().clone());
    let inner = match (payload.map(|p| schema.field(p).data_type()), part.inner) {
        (Some(DataType::Struct(c)), Some(i)) => Some(c[i].data_type().clone()),
        _ => None,
    };
    match (top, inner) {
        (Some(t), Some(i)) if t != i => Err(format!(
            "`{name}` ({t}) and `payload.{name}` ({i}) differ; give them one type"
        )),
        (t, i) => Ok(t.or(i)),
    }
}

/// Why a row is not a change the table can take.
fn reason(op: Option<&str>, before: bool, after: bool) -> Option<String> {
    let image = |needed: &str| -> Option<String> {
        if !before && !after {
            Some("Debezium envelope with neither `before` nor `after`".to_string())
        } else {
            Some(format!(
                "Debezium `{}` event without `{needed}`",
                op.unwrap_or_default()
            ))
        }
    };
    match op {
        Some("c" | "u" | "r") if after => None,
        Some("c" | "u" | "r") => image("after"),
        Some("d") if before => None,
        Some("d") => image("before"),
        Some("t") => Some(
            "Debezium truncate event (op `t`): not applied, the table keeps its rows".to_string(),
        ),
        Some("m") => {
            Some("Debezium logical decoding message (op `m`): not a row change".to_string())
        }
        Some(other) => Some(format!(
            "unknown Debezium op `{}`; expected c, u, d or r",
            other.chars().take(20).collect::<String>()
        )),
        None => Some(
            "not a Debezium change event: no `op` (a heartbeat or schema change message?)"
                .to_string(),
        ),
    }
}

/// What [`Unwrap::apply`] makes of a batch.
pub(crate) struct Unwrapped {
    /// The good rows, unwrapped.
    pub(crate) batch: RecordBatch,
    /// The input rows in `batch`; `None`: all.
    pub(crate) kept: Option<BooleanBuffer>,
    /// The other rows, with the reason.
    pub(crate) rejected: Failed,
}

impl Unwrap {
    /// Unwraps `batch`; rows that are not changes the table can take are
    /// rejected.
    pub(crate) fn apply(&self, batch: &RecordBatch) -> Result<Unwrapped, ArrowError> {
        let n = batch.num_rows();
        let in_payload = self
            .env
            .payload
            .map(|p| BooleanArray::new(validity(batch.column(p).as_ref()), None));
        let get = |part: Part| self.resolve(batch, part, in_payload.as_ref());
        let op = get(self.env.op)?.unwrap_or_else(|| new_null_array(&DataType::Utf8, n));
        let op = cast(&op, &DataType::Utf8)?;
        let ops = op.as_string::<i32>();
        let (Some(before), Some(after)) = (get(self.env.before)?, get(self.env.after)?) else {
            return Err(ArrowError::SchemaError(
                "the envelope lost `before` or `after`".to_string(),
            ));
        };
        let (bv, av) = (validity(before.as_ref()), validity(after.as_ref()));
        let mut deletes = vec![false; n];
        let mut rejected = Vec::new();
        for (i, delete) in deletes.iter_mut().enumerate() {
            let code = ops.is_valid(i).then(|| ops.value(i));
            match reason(code, bv.value(i), av.value(i)) {
                None => *delete = code == Some("d"),
                Some(why) => rejected.push((i, format!("{}: {why}", self.prefix))),
            }
        }
        let deletes = BooleanBuffer::from(deletes);
        let image = match deletes.count_set_bits() {
            0 => after,
            d if d == n => before,
            _ => zip(&BooleanArray::new(deletes, None), &before, &after)?,
        };
        let mut columns: Vec<ArrayRef> = image.as_struct().columns().to_vec();
        columns.push(op.clone());
        self.optional_columns(&get, n, &mut columns)?;
        let out = RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        if rejected.is_empty() {
            return Ok(Unwrapped {
                batch: out,
                kept: None,
                rejected,
            });
        }
        let mut good = vec![true; n];
        for (row, _) in &rejected {
            good[*row] = false;
        }
        let good = BooleanBuffer::from(good);
        let out = filter_record_batch(&out, &BooleanArray::new(good.clone(), None))?;
        Ok(Unwrapped {
            batch: out,
            kept: Some(good),
            rejected,
        })
    }

    /// The source, ts_ms and transaction columns.
    fn optional_columns(
        &self,
        get: &dyn Fn(Part) -> Result<Option<ArrayRef>, ArrowError>,
        n: usize,
        columns: &mut Vec<ArrayRef>,
    ) -> Result<(), ArrowError> {
        let lost = |what: &str| ArrowError::SchemaError(format!("the envelope lost `{what}`"));
        if !self.source_fields.is_empty() || self.keep_source {
            let source = get(self.env.source)?.ok_or_else(|| lost("source"))?;
            for &i in &self.source_fields {
                columns.push(names::struct_field(&source, &[i])?);
            }
            if self.keep_source {
                columns.push(source);
            }
        }
        if self.keep_ts_ms {
            columns.push(get(self.env.ts_ms)?.ok_or_else(|| lost("ts_ms"))?);
        }
        if let Some(positions) = &self.transaction {
            let txn = get(self.env.transaction)?;
            for (k, position) in positions.iter().enumerate() {
                columns.push(match (&txn, position) {
                    (Some(t), Some(i)) => names::struct_field(t, &[*i])?,
                    _ => new_null_array(&TRANSACTION[k].1, n),
                });
            }
        }
        Ok(())
    }

    /// A part's values: from `payload` where the row has one, else from the
    /// top level.
    fn resolve(
        &self,
        batch: &RecordBatch,
        part: Part,
        in_payload: Option<&BooleanArray>,
    ) -> Result<Option<ArrayRef>, ArrowError> {
        if !part.exists() {
            return Ok(None);
        }
        let payload = self.env.payload.map(|p| batch.column(p));
        let inner = match (payload, part.inner) {
            (Some(p), Some(i)) => Some(names::struct_field(p, &[i])?),
            _ => None,
        };
        let top = part.top.map(|i| batch.column(i).clone());
        Ok(match (top, inner, in_payload) {
            (Some(t), Some(i), Some(mask)) => {
                let wrapped = mask.values().count_set_bits();
                if wrapped == 0 {
                    Some(t)
                } else if wrapped == mask.len() {
                    Some(i)
                } else {
                    Some(zip(mask, &i, &t)?)
                }
            }
            (t, i, _) => i.or(t),
        })
    }
}

#[cfg(test)]
#[path = "debezium_tests.rs"]
mod tests;
