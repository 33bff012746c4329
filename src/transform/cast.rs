//! `cast` and `timestamp`: type conversions that reject the rows whose value
//! does not convert, instead of nulling or truncating it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray as _, BooleanArray, Int64Array, PrimitiveArray,
    TimestampMicrosecondArray,
};
use arrow::compute::kernels::cmp::neq;
use arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use chrono::format::{Item, Parsed, StrftimeItems};

use super::{is_string, show_value, ColumnFn, Compiled, Computed, Ctx, Failed, TimestampFrom};

/// The `TIMESTAMP` type: microseconds, UTC.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

const SAFE: CastOptions<'static> = CastOptions {
    safe: true,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// Parses a Spark type name (`INT`, `DECIMAL(10,2)`, ...).
fn parse_type(ty: &str) -> Result<DataType, String> {
    let schema = crate::schema::parse_ddl(&format!("x {ty}")).map_err(|e| {
        format!(
            "`{ty}` is not a type: {e}; use a Spark type such as STRING, INT, BIGINT, DOUBLE, DECIMAL(10,2), DATE, TIMESTAMP, BOOLEAN"
        )
    })?;
    if schema.fields().len() != 1 {
        return Err(format!("`{ty}` is not one type"));
    }
    Ok(schema.field(0).data_type().clone())
}

fn is_numeric(ty: &DataType) -> bool {
    ty.is_numeric()
}

fn is_temporal(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
    )
}

fn is_fractional(ty: &DataType) -> bool {
    ty.is_floating()
        || matches!(
            ty,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}

/// A compiled `cast` of one column.
pub(crate) struct CastFn {
    column: usize,
    name: String,
    to: DataType,
    to_name: String,
    /// Numbers with a fraction to integers: also reject values that do not
    /// come back equal (`1.5` → `1`).
    exact: bool,
    /// Doubles to floats: reject finite values that overflow to infinity.
    overflow_to_inf: bool,
    prefix: String,
}

impl fmt::Debug for CastFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cast({} `{}` → {})", self.column, self.name, self.to)
    }
}

pub(crate) fn compile_cast(
    ctx: &Ctx<'_>,
    columns: &BTreeMap<String, String>,
) -> Result<Compiled, String> {
    let mut out = super::keep_all(ctx.schema);
    for (name, ty) in columns {
        let i = ctx.column(name)?;
        let field = ctx.schema.field(i);
        let from = field.data_type();
        let to = parse_type(ty)?;
        if from == &to {
            continue;
        }
        if is_numeric(from) && is_temporal(&to) {
            return Err(format!(
                "`{name}` is {from}: numbers do not cast to {ty}; for epoch seconds/milliseconds/microseconds use op = \"timestamp\" with from = \"epoch_seconds\" (or epoch_millis, epoch_micros)"
            ));
        }
        if is_temporal(from) && is_numeric(&to) {
            return Err(format!(
                "`{name}` is {from}: dates and timestamps do not cast to {ty}; use op = \"derive\" with an expression such as `to_unixtime({name})`"
            ));
        }
        if !can_cast_types(from, &to) {
            return Err(format!("`{name}` is {from}, which does not cast to {ty}"));
        }
        let cast = CastFn {
            column: i,
            name: name.clone(),
            exact: is_fractional(from) && to.is_integer(),
            overflow_to_inf: from == &DataType::Float64 && matches!(to, DataType::Float32),
            to: to.clone(),
            to_name: ty.clone(),
            prefix: ctx.reason_prefix(),
        };
        let field = Field::new(field.name(), to, field.is_nullable())
            .with_metadata(field.metadata().clone());
        out[i] = (Arc::new(field), ColumnFn::Cast(cast));
    }
    Ok(Compiled::columns(out))
}

impl CastFn {
    pub(crate) fn eval(&self, batch: &arrow::record_batch::RecordBatch) -> Computed {
        let input = batch.column(self.column);
        let out = cast_with_options(input, &self.to, &SAFE).map_err(|e| e.to_string())?;
        let mut failed = lost(input.as_ref(), out.as_ref());
        if self.exact {
            // Back to the input type: a value with a fraction comes back different.
            let back =
                cast_with_options(&out, input.data_type(), &SAFE).map_err(|e| e.to_string())?;
            let differs = neq(&back, input).map_err(|e| e.to_string())?;
            add_true(&mut failed, &differs);
        }
        if self.overflow_to_inf {
            let i = input.as_primitive::<Float64Type>();
            let o = out.as_primitive::<Float32Type>();
            let inf: BooleanArray = i
                .iter()
                .zip(o.iter())
                .map(|(a, b)| {
                    Some(matches!((a, b), (Some(a), Some(b)) if a.is_finite() && b.is_infinite()))
                })
                .collect();
            add_true(&mut failed, &inf);
        }
        Ok((out, self.reasons(input.as_ref(), failed)))
    }

    fn reasons(&self, input: &dyn Array, rows: Vec<usize>) -> Failed {
        rows.into_iter()
            .map(|row| {
                (
                    row,
                    format!(
                        "{}: `{}` value {} does not convert to {}",
                        self.prefix,
                        self.name,
                        show_value(input, row),
                        self.to_name
                    ),
                )
            })
            .collect()
    }
}

/// Rows where `input` has a value and `out` is null, ascending.
fn lost(input: &dyn Array, out: &dyn Array) -> Vec<usize> {
    if out.logical_null_count() == input.logical_null_count() {
        return Vec::new();
    }
    let had = super::validity(input);
    let has = super::validity(out);
    (&had & &!&has).set_indices().collect()
}

/// Adds the rows where `mask` is true (not null) to `rows`, keeping them
/// ascending and unique.
fn add_true(rows: &mut Vec<usize>, mask: &BooleanArray) {
    let set = match mask.nulls() {
        Some(n) => mask.values() & n.inner(),
        None => mask.values().clone(),
    };
    if set.count_set_bits() == 0 {
        return;
    }
    rows.extend(set.set_indices());
    rows.sort_unstable();
    rows.dedup();
}

/// How a `timestamp` transform reads its column.
enum Reader {
    /// Arrow's cast: ISO 8601 strings, or dates/timestamps.
    Cast,
    /// A chrono pattern.
    Format(Vec<Item<'static>>),
    /// A number (or numeric string) of units; microseconds per unit.
    Epoch(i64),
}

/// A compiled `timestamp` transform.
pub(crate) struct TimestampFn {
    column: usize,
    name: String,
    reader: Reader,
    expected: String,
    prefix: String,
}

impl fmt::Debug for TimestampFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Timestamp({} `{}`, {})",
            self.column, self.name, self.expected
        )
    }
}

pub(crate) fn compile_timestamp(
    ctx: &Ctx<'_>,
    column: &str,
    from: TimestampFrom,
    format: Option<&str>,
    into: Option<&str>,
) -> Result<Compiled, String> {
    let i = ctx.column(column)?;
    let field = ctx.schema.field(i);
    let ty = field.data_type();
    let (reader, expected) = match (from, format) {
        (TimestampFrom::String, None) if is_string(ty) || is_temporal(ty) => (
            Reader::Cast,
            "an RFC 3339 / ISO 8601 timestamp such as 2024-01-02T03:04:05Z".to_string(),
        ),
        (TimestampFrom::String, Some(f)) if is_string(ty) => {
            let items = StrftimeItems::new(f)
                .parse_to_owned()
                .map_err(|e| format!("format `{f}` is not a valid chrono strftime pattern: {e}"))?;
            (
                Reader::Format(items),
                format!("a timestamp in the format `{f}`"),
            )
        }
        (TimestampFrom::String, Some(_)) => {
            return Err(format!(
                "`{column}` is {ty}, not a string, so `format` does not apply; remove it"
            ));
        }
        (TimestampFrom::String, None) => {
            let fix = if is_numeric(ty) {
                "; for epoch numbers set from = \"epoch_seconds\" (or epoch_millis, epoch_micros)"
            } else {
                ""
            };
            return Err(format!("`{column}` is {ty}, not a string{fix}"));
        }
        (_, Some(_)) => {
            return Err(format!(
                "`format` only applies to from = \"string\"; remove it for {from:?} columns"
            ));
        }
        (epoch, None) => {
            if !(is_numeric(ty) || is_string(ty)) {
                return Err(format!(
                    "`{column}` is {ty}: epoch timestamps must be numbers or numeric strings"
                ));
            }
            let (per_unit, unit) = match epoch {
                TimestampFrom::EpochSeconds => (1_000_000, "seconds"),
                TimestampFrom::EpochMillis => (1_000, "milliseconds"),
                _ => (1, "microseconds"),
            };
            (
                Reader::Epoch(per_unit),
                format!("a number of {unit} since 1970-01-01"),
            )
        }
    };
    let function = TimestampFn {
        column: i,
        name: column.to_string(),
        reader,
        expected,
        prefix: ctx.reason_prefix(),
    };
    let out_name = into.unwrap_or(column);
    let field = Field::new(out_name, timestamp_type(), field.is_nullable());
    Ok(Compiled::replace_or_add(
        ctx.schema,
        out_name,
        field,
        ColumnFn::Timestamp(function),
    ))
}

impl TimestampFn {
    pub(crate) fn eval(&self, batch: &arrow::record_batch::RecordBatch) -> Computed {
        let input = batch.column(self.column);
        let out: ArrayRef = match &self.reader {
            Reader::Cast => cast_with_options(input, &timestamp_type(), &SAFE),
            Reader::Format(items) => with_format(input, items),
            Reader::Epoch(per_unit) => epoch(input, *per_unit),
        }
        .map_err(|e| e.to_string())?;
        let failed = lost(input.as_ref(), out.as_ref())
            .into_iter()
            .map(|row| {
                let why = format!(
                    "{}: `{}` value {} is not {}",
                    self.prefix,
                    self.name,
                    show_value(input.as_ref(), row),
                    self.expected
                );
                (row, why)
            })
            .collect();
        Ok((out, failed))
    }
}

fn utc(values: PrimitiveArray<TimestampMicrosecondType>) -> ArrayRef {
    Arc::new(values.with_timezone("UTC"))
}

fn with_format(input: &ArrayRef, items: &[Item<'static>]) -> Result<ArrayRef, ArrowError> {
    let parse = |s: &str| -> Option<i64> {
        let mut p = Parsed::new();
        chrono::format::parse(&mut p, s, items.iter()).ok()?;
        let micros = match p.offset() {
            Some(_) => p.to_datetime().ok()?.timestamp_micros(),
            None => match p.to_naive_datetime_with_offset(0) {
                Ok(t) => t.and_utc().timestamp_micros(),
                Err(_) => p
                    .to_naive_date()
                    .ok()?
                    .and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros(),
            },
        };
        Some(micros)
    };
    let values: TimestampMicrosecondArray = match input.data_type() {
        DataType::Utf8 => input
            .as_string::<i32>()
            .iter()
            .map(|v| v.and_then(parse))
            .collect(),
        DataType::LargeUtf8 => input
            .as_string::<i64>()
            .iter()
            .map(|v| v.and_then(parse))
            .collect(),
        DataType::Utf8View => input
            .as_string_view()
            .iter()
            .map(|v| v.and_then(parse))
            .collect(),
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{other} is not a string"
            )));
        }
    };
    Ok(utc(values))
}

/// Epoch numbers (or numeric strings) to microseconds.
fn epoch(input: &ArrayRef, per_unit: i64) -> Result<ArrayRef, ArrowError> {
    let from_float = |v: f64| -> Option<i64> {
        let micros = (v * per_unit as f64).round();
        // Strictly inside i64's range (2^63 is exactly representable).
        (micros.is_finite() && micros.abs() < 9.223_372_036_854_775e18).then_some(micros as i64)
    };
    let ty = input.data_type();
    let micros: Int64Array = if ty.is_integer() || is_string(ty) {
        let ints = cast_with_options(input, &DataType::Int64, &SAFE)?;
        let ints = ints.as_primitive::<Int64Type>();
        let scaled: Int64Array = ints.unary_opt(|v| v.checked_mul(per_unit));
        if is_string(ty) && ints.null_count() > input.null_count() {
            // Some strings are not integers: try them as decimals ("1.5").
            let floats = cast_with_options(input, &DataType::Float64, &SAFE)?;
            scaled
                .iter()
                .zip(floats.as_primitive::<Float64Type>().iter())
                .map(|(i, f)| i.or_else(|| f.and_then(from_float)))
                .collect()
        } else {
            scaled
        }
    } else {
        let floats = cast_with_options(input, &DataType::Float64, &SAFE)?;
        floats.as_primitive::<Float64Type>().unary_opt(from_float)
    };
    Ok(utc(micros.reinterpret_cast::<TimestampMicrosecondType>()))
}
