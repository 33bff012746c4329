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
mod key;
mod normalize;

pub use assemble::{assemble, assemble_with_key, headers_column};
pub use key::{struct_fields, KeyDecoder, KeyError};
pub use normalize::{NormalizeError, Normalized, Normalizer};

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, ListArray,
    MapArray, NullArray, PrimitiveArray, RecordBatch, RecordBatchOptions, StringArray, StructArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer};
use arrow::compute::{can_cast_types, cast_with_options, CastOptions, FilterBuilder};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampSecondType,
};
use arrow::error::ArrowError;

/// What ingest does with fields of the decoded value that the table lacks
/// (`tables.<name>.evolution`). A field "lacks" when no table column (or, for a
/// field inside a struct column, no field of that struct) has its exact name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvolutionPolicy {
    /// `"add_columns"` (the default): add them to the table as nullable
    /// columns, after the existing ones (a new field of a struct column is
    /// added at the end of that struct). Their types become the nearest Delta
    /// type that holds every value: an Avro `enum` becomes `STRING`, a `uuid`
    /// its string, a millisecond timestamp `TIMESTAMP`, an unsigned int the
    /// next wider signed one. A field no Delta type can hold (a nanosecond
    /// timestamp, an Avro `time-*`, a union of several types) stops ingest with
    /// an error naming it.
    #[default]
    AddColumns,
    /// `"fail"`: stop ingest with an error naming the new fields, so that
    /// someone adds them on purpose (with an `inlet migrate` `add_columns`
    /// migration) or changes the policy.
    Fail,
    /// `"ignore"`: drop them; the table keeps its schema.
    Ignore,
}

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

fn list(fields: &[String]) -> String {
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

/// How one array becomes its output array.
#[derive(Debug)]
enum Node {
    /// The same type: the array as it is.
    Same,
    /// An input field of Arrow type `Null`: a null array of the output type.
    AllNull(DataType),
    /// A lossless arrow cast.
    Cast(DataType),
    /// The same values under another type (decimal precision, time zone name).
    Retype(DataType),
    /// Seconds or milliseconds to microseconds (may overflow: rows checked).
    Rescale {
        unit: TimeUnit,
        to: DataType,
        path: String,
    },
    /// 16 bytes to the canonical uuid string.
    Uuid,
    Struct(StructPlan),
    List {
        field: FieldRef,
        item: Box<Node>,
        check_null: bool,
        path: String,
    },
    Map {
        field: FieldRef,
        ordered: bool,
        key: Box<Node>,
        value: Box<Node>,
        check_null: bool,
        path: String,
    },
}

impl Node {
    fn may_reject(&self) -> bool {
        match self {
            Node::Rescale { .. } => true,
            Node::Struct(plan) => plan.may_reject(),
            Node::List {
                item, check_null, ..
            } => *check_null || item.may_reject(),
            Node::Map {
                key,
                value,
                check_null,
                ..
            } => *check_null || key.may_reject() || value.may_reject(),
            _ => false,
        }
    }
}

/// The output fields of a struct (or the batch) and where each comes from.
#[derive(Debug)]
struct StructPlan {
    fields: Fields,
    children: Vec<Child>,
}

#[derive(Debug)]
struct Child {
    source: Source,
    /// The output field is NOT NULL and the input's is nullable.
    check_null: bool,
    path: String,
}

#[derive(Debug)]
enum Source {
    /// The input's child at this index, converted.
    Input(usize, Node),
    /// Nulls (a nullable table field the input lacks).
    Missing,
}

impl StructPlan {
    fn may_reject(&self) -> bool {
        self.children.iter().any(|c| {
            c.check_null || matches!(&c.source, Source::Input(_, node) if node.may_reject())
        })
    }

    fn sources(&self) -> Vec<usize> {
        self.children
            .iter()
            .filter_map(|c| match c.source {
                Source::Input(i, _) => Some(i),
                Source::Missing => None,
            })
            .collect()
    }
}

struct Planner {
    policy: EvolutionPolicy,
    new_fields: Vec<String>,
}

fn join(prefix: &str, name: &str) -> String {
    let name = if name.contains(['.', '`']) {
        format!("`{}`", name.replace('`', "``"))
    } else {
        name.to_string()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}.{name}")
    }
}

fn incompatible(
    path: &str,
    from: &DataType,
    to: &DataType,
    reason: impl Into<String>,
) -> ConformError {
    ConformError::Incompatible {
        field: path.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        reason: reason.into(),
    }
}

impl Planner {
    fn plan_struct(
        &mut self,
        input: &Fields,
        table: &Fields,
        prefix: &str,
    ) -> Result<StructPlan, ConformError> {
        let mut fields = Vec::with_capacity(table.len());
        let mut children = Vec::with_capacity(table.len());
        for tf in table.iter() {
            let path = join(prefix, tf.name());
            match input.find(tf.name()) {
                Some((i, inf)) => {
                    let (node, dt) = self.plan_type(inf, tf.data_type(), &path)?;
                    fields.push(with_type(tf, dt));
                    children.push(Child {
                        source: Source::Input(i, node),
                        check_null: !tf.is_nullable() && inf.is_nullable(),
                        path,
                    });
                }
                None if tf.is_nullable() => {
                    fields.push(tf.clone());
                    children.push(Child {
                        source: Source::Missing,
                        check_null: false,
                        path,
                    });
                }
                None => {
                    return Err(ConformError::Incompatible {
                        field: path,
                        from: "missing".into(),
                        to: tf.data_type().to_string(),
                        reason: "the table column is NOT NULL and the input has no such field"
                            .into(),
                    })
                }
            }
        }
        for (i, inf) in input.iter().enumerate() {
            if table.find(inf.name()).is_some() {
                continue;
            }
            let path = join(prefix, inf.name());
            self.new_fields.push(path.clone());
            if self.policy != EvolutionPolicy::AddColumns {
                continue;
            }
            if let Some(tf) = table
                .iter()
                .find(|tf| tf.name().eq_ignore_ascii_case(inf.name()))
            {
                return Err(ConformError::Incompatible {
                    field: path,
                    from: inf.data_type().to_string(),
                    to: "a new column".into(),
                    reason: format!(
                        "it differs from the table's `{}` only in case, and Delta column names are \
                         case-insensitive; rename one of them",
                        tf.name()
                    ),
                });
            }
            let out = Field::new(inf.name(), normalize(inf, &path)?, true);
            let (node, dt) = self.plan_type(inf, out.data_type(), &path)?;
            fields.push(Arc::new(out.with_data_type(dt)));
            children.push(Child {
                source: Source::Input(i, node),
                check_null: false,
                path,
            });
        }
        Ok(StructPlan {
            fields: fields.into(),
            children,
        })
    }

    /// How `input` becomes `to`, and the output type (`to`, plus new nested fields).
    fn plan_type(
        &mut self,
        input: &Field,
        to: &DataType,
        path: &str,
    ) -> Result<(Node, DataType), ConformError> {
        use DataType::*;
        let from = input.data_type();
        if from == to {
            return Ok((Node::Same, to.clone()));
        }
        let cast = |ok: bool, reason: &str| -> Result<(Node, DataType), ConformError> {
            if ok && can_cast_types(from, to) {
                Ok((Node::Cast(to.clone()), to.clone()))
            } else {
                Err(incompatible(path, from, to, reason))
            }
        };
        let narrowing = "the table's type is narrower: values would be truncated; widen the table \
                         column (or cast in a transform)";
        match (from, to) {
            (Null, _) => Ok((Node::AllNull(to.clone()), to.clone())),
            (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64, _) if is_numeric(to) => {
                cast(int_fits(from, to), narrowing)
            }
            (Float16, Float32 | Float64) | (Float32, Float64) => cast(true, ""),
            (Utf8 | LargeUtf8 | Utf8View, Utf8) => cast(true, ""),
            (Binary | LargeBinary | BinaryView | FixedSizeBinary(_), Binary) => cast(true, ""),
            (FixedSizeBinary(16), Utf8) => Ok((Node::Uuid, Utf8)),
            (Dictionary(_, values), _) => {
                let field = Field::new(input.name(), (**values).clone(), true)
                    .with_metadata(input.metadata().clone());
                match self.plan_type(&field, to, path) {
                    Ok((Node::Same | Node::Cast(_), _)) => cast(true, ""),
                    Ok(_) => Err(incompatible(path, from, to, "no conversion of this dictionary")),
                    Err(e) => Err(e),
                }
            }
            (Decimal32(p1, s1) | Decimal64(p1, s1) | Decimal128(p1, s1), Decimal128(p2, s2)) => {
                if s1 != s2 {
                    Err(incompatible(path, from, to, "the scale differs: values would be rounded or rescaled"))
                } else if p2 < p1 {
                    Err(incompatible(path, from, to, narrowing))
                } else if matches!(from, Decimal128(..)) {
                    Ok((Node::Retype(to.clone()), to.clone()))
                } else {
                    cast(true, "")
                }
            }
            (Timestamp(unit, tz1), Timestamp(TimeUnit::Microsecond, tz2)) => {
                let same_zone = match (tz1, tz2) {
                    (None, None) => true,
                    (Some(a), Some(b)) => is_utc(a) && is_utc(b),
                    _ => false,
                };
                if !same_zone {
                    let reason = match (tz1, tz2) {
                        (None, Some(_)) => "a local timestamp (without time zone) is not an instant; \
                                            make the column TIMESTAMP_NTZ"
                            .to_string(),
                        (Some(_), None) => "an instant cannot go into TIMESTAMP_NTZ; make the column TIMESTAMP".to_string(),
                        (Some(a), _) => format!("only UTC timestamps are supported, not time zone {a:?}"),
                        _ => String::new(),
                    };
                    return Err(incompatible(path, from, to, reason));
                }
                match unit {
                    TimeUnit::Second | TimeUnit::Millisecond => Ok((
                        Node::Rescale {
                            unit: *unit,
                            to: to.clone(),
                            path: path.to_string(),
                        },
                        to.clone(),
                    )),
                    TimeUnit::Microsecond => Ok((Node::Retype(to.clone()), to.clone())),
                    TimeUnit::Nanosecond => Err(incompatible(
                        path,
                        from,
                        to,
                        "Delta timestamps hold microseconds: the nanoseconds would be truncated",
                    )),
                }
            }
            (Struct(fi), Struct(fo)) => {
                let plan = self.plan_struct(fi, fo, path)?;
                let dt = Struct(plan.fields.clone());
                Ok((Node::Struct(plan), dt))
            }
            (List(fi), List(fo)) => {
                let item_path = format!("{path}.element");
                let (item, dt) = self.plan_type(fi, fo.data_type(), &item_path)?;
                let field = with_type(fo, dt);
                Ok((
                    Node::List {
                        field: field.clone(),
                        item: Box::new(item),
                        check_null: !fo.is_nullable() && fi.is_nullable(),
                        path: item_path,
                    },
                    List(field),
                ))
            }
            (Map(ei, _), Map(eo, ordered)) => {
                let (Struct(ki), Struct(ko)) = (ei.data_type(), eo.data_type()) else {
                    return Err(incompatible(path, from, to, "malformed map type"));
                };
                if ki.len() != 2 || ko.len() != 2 {
                    return Err(incompatible(path, from, to, "malformed map type"));
                }
                let (key, kt) = self.plan_type(&ki[0], ko[0].data_type(), &format!("{path}.key"))?;
                let value_path = format!("{path}.value");
                let (value, vt) = self.plan_type(&ki[1], ko[1].data_type(), &value_path)?;
                let entries = with_type(eo, Struct(Fields::from(vec![with_type(&ko[0], kt), with_type(&ko[1], vt)])));
                Ok((
                    Node::Map {
                        field: entries.clone(),
                        ordered: *ordered,
                        key: Box::new(key),
                        value: Box::new(value),
                        check_null: !ko[1].is_nullable() && ki[1].is_nullable(),
                        path: value_path,
                    },
                    Map(entries, *ordered),
                ))
            }
            (Float32 | Float64, _) if is_numeric(to) => Err(incompatible(path, from, to, narrowing)),
            (Timestamp(..), _) | (_, Timestamp(..)) => Err(incompatible(
                path,
                from,
                to,
                "only timestamps in s, ms or µs go into TIMESTAMP / TIMESTAMP_NTZ columns",
            )),
            _ => Err(incompatible(
                path,
                from,
                to,
                "no conversion keeps every value; change the table column's type, or convert in a transform",
            )),
        }
    }
}

fn with_type(field: &FieldRef, dt: DataType) -> FieldRef {
    if field.data_type() == &dt {
        field.clone()
    } else {
        Arc::new(field.as_ref().clone().with_data_type(dt))
    }
}

fn is_numeric(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Decimal128(..)
    )
}

/// Whether every value of integer type `from` is exactly representable in `to`.
fn int_fits(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    // (signed, bits, decimal digits of the largest magnitude)
    let (signed, bits, digits) = match from {
        Int8 => (true, 8, 3),
        Int16 => (true, 16, 5),
        Int32 => (true, 32, 10),
        Int64 => (true, 64, 19),
        UInt8 => (false, 8, 3),
        UInt16 => (false, 16, 5),
        UInt32 => (false, 32, 10),
        UInt64 => (false, 64, 20),
        _ => return false,
    };
    match to {
        Int16 => bits < 16 || (signed && bits == 16),
        Int32 => bits < 32 || (signed && bits == 32),
        Int64 => bits < 64 || (signed && bits == 64),
        Float32 => bits <= 16,
        Float64 => bits <= 32,
        Decimal128(p, s) => *s >= 0 && (*p as i16 - *s as i16) >= digits,
        _ => false,
    }
}

/// Whether a time zone name means UTC.
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC"
            | "utc"
            | "Z"
            | "z"
            | "+00:00"
            | "+0000"
            | "+00"
            | "-00:00"
            | "Etc/UTC"
            | "GMT"
            | "Etc/GMT"
    )
}

/// Whether a field holds uuids (arrow's `arrow.uuid` extension, or Avro's `logicalType`).
fn is_uuid(field: &Field) -> bool {
    let md = field.metadata();
    md.get("ARROW:extension:name").map(String::as_str) == Some("arrow.uuid")
        || md.get("logicalType").map(String::as_str) == Some("uuid")
}

/// The Delta type a new column of `field`'s type gets: one that holds every value.
fn normalize(field: &Field, path: &str) -> Result<DataType, ConformError> {
    use DataType::*;
    let dt = field.data_type();
    let unstorable = |reason: &str| {
        Err(ConformError::Incompatible {
            field: path.to_string(),
            from: dt.to_string(),
            to: "a new column".into(),
            reason: format!(
                "{reason}; add the column yourself with a type that holds it, or drop the field"
            ),
        })
    };
    Ok(match dt {
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Utf8 | Binary | Date32 => {
            dt.clone()
        }
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 => Int64,
        UInt64 => Decimal128(20, 0),
        Float16 => Float32,
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView => Binary,
        FixedSizeBinary(16) if is_uuid(field) => Utf8,
        FixedSizeBinary(_) => Binary,
        Dictionary(_, values) => {
            let f = Field::new(field.name(), (**values).clone(), true)
                .with_metadata(field.metadata().clone());
            normalize(&f, path)?
        }
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) if *s >= 0 && (*s as u8) <= *p => {
            Decimal128(*p, *s)
        }
        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            return unstorable(
                "Delta decimals have at most 38 digits and a scale between 0 and the precision",
            )
        }
        Timestamp(TimeUnit::Nanosecond, _) => {
            return unstorable(
                "Delta timestamps hold microseconds: the nanoseconds would be truncated",
            )
        }
        Timestamp(_, None) => Timestamp(TimeUnit::Microsecond, None),
        Timestamp(_, Some(tz)) if is_utc(tz) => {
            Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        Timestamp(_, Some(_)) => return unstorable("only UTC timestamps are supported"),
        Struct(fields) if fields.is_empty() => return unstorable("Delta has no empty struct type"),
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(Field::new(
                        f.name(),
                        normalize(f, &join(path, f.name()))?,
                        true,
                    ))
                })
                .collect::<Result<Fields, ConformError>>()?,
        ),
        List(item) => List(Arc::new(Field::new(
            "element",
            normalize(item, &format!("{path}.element"))?,
            true,
        ))),
        Map(entries, _) => {
            let Struct(kv) = entries.data_type() else {
                return unstorable("malformed map type");
            };
            if kv.len() != 2 {
                return unstorable("malformed map type");
            }
            let key = Field::new("key", normalize(&kv[0], &format!("{path}.key"))?, false);
            let value = Field::new("value", normalize(&kv[1], &format!("{path}.value"))?, true);
            Map(
                Arc::new(Field::new(
                    "key_value",
                    Struct(Fields::from(vec![key, value])),
                    false,
                )),
                false,
            )
        }
        Null => return unstorable("a field that is always null has no Delta type"),
        Time32(_) | Time64(_) => return unstorable("Delta has no TIME type"),
        Duration(_) | Interval(_) => return unstorable("Delta has no interval or duration type"),
        Union(..) => return unstorable("a union of several non-null types has no Delta type"),
        _ => return unstorable("no Delta type holds it"),
    })
}

/// Rows that cannot be stored: (reason, rows flagged), at one array's granularity.
type Violations = Vec<(String, BooleanBuffer)>;

fn null_violation(
    path: &str,
    array: &dyn Array,
    parent: Option<&NullBuffer>,
    out: &mut Violations,
) {
    let Some(nulls) = array.logical_nulls() else {
        return;
    };
    let mut mask = !nulls.inner();
    if let Some(parent) = parent {
        mask = &mask & parent.inner();
    }
    if mask.count_set_bits() > 0 {
        out.push((
            format!("`{path}` is NOT NULL in the table but the value is null"),
            mask,
        ));
    }
}

/// Checks a struct's (or the batch's) children. A null in a NOT NULL field only
/// counts where the struct itself is valid, as in Arrow's own rule.
fn check_children(
    plan: &StructPlan,
    columns: &[ArrayRef],
    nulls: Option<&NullBuffer>,
    out: &mut Violations,
) {
    for child in &plan.children {
        let Source::Input(i, node) = &child.source else {
            continue;
        };
        let array = &columns[*i];
        if child.check_null {
            null_violation(&child.path, array.as_ref(), nulls, out);
        }
        check_node(node, array, out);
    }
}

fn check_node(node: &Node, array: &ArrayRef, out: &mut Violations) {
    match node {
        Node::Rescale { unit, path, .. } => {
            let (factor, values) = match unit {
                TimeUnit::Second => (
                    1_000_000,
                    array.as_primitive::<TimestampSecondType>().values(),
                ),
                _ => (
                    1_000,
                    array.as_primitive::<TimestampMillisecondType>().values(),
                ),
            };
            let (lo, hi) = (i64::MIN / factor, i64::MAX / factor);
            let nulls = array.nulls();
            let mask = BooleanBuffer::collect_bool(array.len(), |i| {
                (values[i] < lo || values[i] > hi) && nulls.is_none_or(|n| n.is_valid(i))
            });
            if mask.count_set_bits() > 0 {
                out.push((
                    format!(
                        "`{path}`: the timestamp is out of the range of microsecond timestamps"
                    ),
                    mask,
                ));
            }
        }
        Node::Struct(plan) => {
            let s = array.as_struct();
            check_children(plan, s.columns(), s.nulls(), out);
        }
        Node::List {
            item,
            check_null,
            path,
            ..
        } => {
            let list = array.as_list::<i32>();
            let (offsets, values) = trim(list.offsets(), list.values());
            let mut inner = Vec::new();
            if *check_null {
                null_violation(path, values.as_ref(), None, &mut inner);
            }
            check_node(item, &values, &mut inner);
            out.extend(inner.into_iter().map(|(r, m)| (r, to_rows(&m, &offsets))));
        }
        Node::Map {
            key,
            value,
            check_null,
            path,
            ..
        } => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let (offsets, entries) = trim(map.offsets(), &entries);
            let entries = entries.as_struct();
            let mut inner = Vec::new();
            if *check_null {
                null_violation(path, entries.column(1).as_ref(), None, &mut inner);
            }
            check_node(key, entries.column(0), &mut inner);
            check_node(value, entries.column(1), &mut inner);
            out.extend(inner.into_iter().map(|(r, m)| (r, to_rows(&m, &offsets))));
        }
        _ => {}
    }
}

/// The values a list's offsets reference, and the offsets rebased onto them.
fn trim(offsets: &OffsetBuffer<i32>, values: &ArrayRef) -> (OffsetBuffer<i32>, ArrayRef) {
    let start = offsets[0];
    let end = offsets[offsets.len() - 1];
    if start == 0 && end as usize == values.len() {
        return (offsets.clone(), values.clone());
    }
    let values = values.slice(start as usize, (end - start) as usize);
    if start == 0 {
        return (offsets.clone(), values);
    }
    let rebased: Vec<i32> = offsets.iter().map(|o| o - start).collect();
    (OffsetBuffer::new(rebased.into()), values)
}

/// Maps a mask over (rebased) list values to the list's rows.
fn to_rows(mask: &BooleanBuffer, offsets: &OffsetBuffer<i32>) -> BooleanBuffer {
    let mut rows = vec![false; offsets.len() - 1];
    for j in mask.set_indices() {
        let row = offsets.partition_point(|&o| o as usize <= j) - 1;
        rows[row] = true;
    }
    BooleanBuffer::from(rows)
}

fn convert_children(
    plan: &StructPlan,
    columns: &[ArrayRef],
    len: usize,
) -> Result<Vec<ArrayRef>, ArrowError> {
    plan.children
        .iter()
        .zip(plan.fields.iter())
        .map(|(child, field)| match &child.source {
            Source::Input(i, node) => convert(node, &columns[*i]),
            Source::Missing => Ok(new_null_array(field.data_type(), len)),
        })
        .collect()
}

fn convert(node: &Node, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    Ok(match node {
        Node::Same => array.clone(),
        Node::AllNull(dt) => new_null_array(dt, array.len()),
        Node::Cast(dt) => cast_with_options(
            array,
            dt,
            &CastOptions {
                safe: false,
                ..Default::default()
            },
        )?,
        Node::Retype(dt) => match dt {
            DataType::Decimal128(..) => Arc::new(
                array
                    .as_primitive::<Decimal128Type>()
                    .clone()
                    .with_data_type(dt.clone()),
            ),
            _ => Arc::new(
                array
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_data_type(dt.clone()),
            ),
        },
        Node::Rescale { unit, to, .. } => {
            // Rows that would overflow were rejected before (see check_node);
            // a null slot's value is meaningless either way.
            let out: PrimitiveArray<TimestampMicrosecondType> = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .unary(|v| v.wrapping_mul(1_000_000)),
                _ => array
                    .as_primitive::<TimestampMillisecondType>()
                    .unary(|v| v.wrapping_mul(1_000)),
            };
            Arc::new(out.with_data_type(to.clone()))
        }
        Node::Uuid => Arc::new(uuid_strings(array.as_fixed_size_binary())?),
        Node::Struct(plan) => {
            let s = array.as_struct();
            let columns = convert_children(plan, s.columns(), s.len())?;
            Arc::new(StructArray::try_new_with_length(
                plan.fields.clone(),
                columns,
                s.nulls().cloned(),
                s.len(),
            )?)
        }
        Node::List { field, item, .. } => {
            let list = array.as_list::<i32>();
            let (offsets, values) = trim(list.offsets(), list.values());
            let values = convert(item, &values)?;
            Arc::new(ListArray::try_new(
                field.clone(),
                offsets,
                values,
                list.nulls().cloned(),
            )?)
        }
        Node::Map {
            field,
            ordered,
            key,
            value,
            ..
        } => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let (offsets, entries) = trim(map.offsets(), &entries);
            let entries = entries.as_struct();
            let DataType::Struct(fields) = field.data_type() else {
                return Err(ArrowError::SchemaError(
                    "map entries must be a struct".into(),
                ));
            };
            let columns = vec![
                convert(key, entries.column(0))?,
                convert(value, entries.column(1))?,
            ];
            let entries =
                StructArray::try_new_with_length(fields.clone(), columns, None, entries.len())?;
            Arc::new(MapArray::try_new(
                field.clone(),
                offsets,
                entries,
                map.nulls().cloned(),
                *ordered,
            )?)
        }
    })
}

/// 16-byte uuids as their canonical lowercase hyphenated strings.
fn uuid_strings(array: &FixedSizeBinaryArray) -> Result<StringArray, ArrowError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = array.len();
    let too_big = || ArrowError::ComputeError("too many uuids for one string array".into());
    let total = i32::try_from(n.checked_mul(36).ok_or_else(too_big)?).map_err(|_| too_big())?;
    let mut bytes = Vec::with_capacity(total as usize);
    for i in 0..n {
        for (j, b) in array.value(i).iter().enumerate() {
            if matches!(j, 4 | 6 | 8 | 10) {
                bytes.push(b'-');
            }
            bytes.push(HEX[(b >> 4) as usize]);
            bytes.push(HEX[(b & 15) as usize]);
        }
    }
    let offsets = OffsetBuffer::new((0..=total).step_by(36).collect::<Vec<i32>>().into());
    StringArray::try_new(offsets, Buffer::from_vec(bytes), array.nulls().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse_ddl;
    use arrow::array::{
        Date32Array, Decimal128Array, DictionaryArray, Float32Array, Int16Array, Int32Array,
        Int64Array, Int8Array, LargeBinaryArray, LargeStringArray, ListBuilder, StringViewArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt32Array, UInt64Array,
    };
    use arrow::datatypes::Int32Type;
    use arrow_avro::reader::ReaderBuilder;
    use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

    // --- Avro, hand-encoded and decoded by arrow-avro, as the decoder does ---

    fn long(out: &mut Vec<u8>, v: i64) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        long(out, s.len() as i64);
        out.extend_from_slice(s.as_bytes());
    }

    /// Decodes Confluent-framed bodies written with `schema` (id 1).
    fn avro(schema: &str, bodies: &[Vec<u8>]) -> RecordBatch {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(1), AvroSchema::new(schema.to_string()))
            .unwrap();
        let mut decoder = ReaderBuilder::new()
            .with_writer_schema_store(store)
            .build_decoder()
            .unwrap();
        for body in bodies {
            let mut frame = vec![0, 0, 0, 0, 1];
            frame.extend_from_slice(body);
            assert_eq!(decoder.decode(&frame).unwrap(), frame.len());
        }
        decoder.flush().unwrap().unwrap()
    }

    fn ddl(s: &str) -> Schema {
        parse_ddl(s).unwrap()
    }

    fn conform(batch: &RecordBatch, table: &Schema, policy: EvolutionPolicy) -> Conformed {
        let c = Conformer::new(&batch.schema(), table, policy).unwrap();
        let out = c.apply(batch).unwrap();
        assert_eq!(out.batch.schema(), *c.output_schema());
        out
    }

    fn incompatible(input: &Schema, table: &Schema) -> (String, String) {
        match Conformer::new(input, table, EvolutionPolicy::AddColumns) {
            Err(e @ ConformError::Incompatible { .. }) => {
                let ConformError::Incompatible { ref field, .. } = e else {
                    unreachable!()
                };
                (field.clone(), e.to_string())
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }
    }

    fn delta_storable(schema: &Schema) {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        let _: deltalake::kernel::StructType = schema.try_into_kernel().unwrap();
    }

    fn field(name: &str, dt: DataType, nullable: bool) -> Field {
        Field::new(name, dt, nullable)
    }

    fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    const USER: &str = r#"{"type":"record","name":"U","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;

    fn users() -> RecordBatch {
        let bodies = [(1, "ann"), (2, "bob")].map(|(id, name)| {
            let mut b = Vec::new();
            long(&mut b, id);
            string(&mut b, name);
            b
        });
        avro(USER, &bodies)
    }

    #[test]
    fn identical_schemas_share_the_arrays() {
        let input = users();
        let table = ddl("id BIGINT NOT NULL, name STRING NOT NULL");
        assert_eq!(input.schema().as_ref(), &table, "arrow-avro's types");
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap();
        let out = c.apply(&input).unwrap();
        assert!(c.new_fields().is_empty());
        assert_eq!(out.rows, vec![0, 1]);
        assert!(out.rejected.is_empty());
        for (a, b) in out.batch.columns().iter().zip(input.columns()) {
            assert!(Arc::ptr_eq(a, b));
        }
        // Nullable table columns take the same arrays too.
        let out = conform(
            &input,
            &ddl("id BIGINT, name STRING"),
            EvolutionPolicy::Fail,
        );
        assert!(Arc::ptr_eq(out.batch.column(0), input.column(0)));
    }

    #[test]
    fn reorders_and_fills_missing_nullable_columns() {
        let input = users();
        let table = ddl("name STRING, country STRING, id BIGINT NOT NULL, tags ARRAY<STRING>");
        let out = conform(&input, &table, EvolutionPolicy::Fail);
        assert_eq!(out.batch.schema().as_ref(), &table);
        assert!(Arc::ptr_eq(out.batch.column(0), input.column(1)));
        assert!(Arc::ptr_eq(out.batch.column(2), input.column(0)));
        assert_eq!(out.batch.column(1).null_count(), 2);
        assert_eq!(out.batch.column(3).null_count(), 2);
    }

    #[test]
    fn missing_not_null_column_is_incompatible() {
        let (field, text) = incompatible(
            &users().schema(),
            &ddl("id BIGINT, country STRING NOT NULL"),
        );
        assert_eq!(field, "country");
        assert!(text.contains("NOT NULL"), "{text}");
    }

    #[test]
    fn widens_without_loss() {
        let utc = || Some(Arc::from("UTC"));
        let input = batch(
            vec![
                field("i8", DataType::Int8, true),
                field("i16", DataType::Int16, true),
                field("i32", DataType::Int32, true),
                field("u32", DataType::UInt32, true),
                field("u64", DataType::UInt64, true),
                field("f32", DataType::Float32, true),
                field("large", DataType::LargeUtf8, true),
                field("view", DataType::Utf8View, true),
                field("bin", DataType::LargeBinary, true),
                field("dec", DataType::Decimal128(5, 2), true),
                field(
                    "s",
                    DataType::Timestamp(TimeUnit::Second, Some("+00:00".into())),
                    true,
                ),
                field(
                    "ms",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("Z".into())),
                    true,
                ),
                field(
                    "us",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    true,
                ),
                field(
                    "local",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ),
                field("i64", DataType::Int64, true),
            ],
            vec![
                Arc::new(Int8Array::from(vec![-8])),
                Arc::new(Int16Array::from(vec![-16])),
                Arc::new(Int32Array::from(vec![i32::MIN])),
                Arc::new(UInt32Array::from(vec![u32::MAX])),
                Arc::new(UInt64Array::from(vec![u64::MAX])),
                Arc::new(Float32Array::from(vec![0.1f32])),
                Arc::new(LargeStringArray::from(vec!["large"])),
                Arc::new(StringViewArray::from(vec!["view"])),
                Arc::new(LargeBinaryArray::from(vec![b"b".as_ref()])),
                Arc::new(
                    Decimal128Array::from(vec![-12345])
                        .with_precision_and_scale(5, 2)
                        .unwrap(),
                ),
                Arc::new(TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("+00:00")),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("Z"),
                ),
                Arc::new(TimestampMicrosecondArray::from(vec![7]).with_timezone("+00:00")),
                Arc::new(TimestampMillisecondArray::from(vec![-1])),
                Arc::new(Int64Array::from(vec![i64::MIN])),
            ],
        );
        let table = ddl(
            "i8 SMALLINT, i16 BIGINT, i32 DOUBLE, u32 BIGINT, u64 DECIMAL(20,0), f32 DOUBLE, \
             large STRING, view STRING, bin BINARY, dec DECIMAL(12,2), s TIMESTAMP, ms TIMESTAMP, \
             us TIMESTAMP, local TIMESTAMP_NTZ, i64 DECIMAL(38,0)",
        );
        let out = conform(&input, &table, EvolutionPolicy::Fail).batch;
        assert_eq!(out.schema().as_ref(), &table);
        let c = |i: usize| out.column(i);
        assert_eq!(
            c(0).as_primitive::<arrow::datatypes::Int16Type>().value(0),
            -8
        );
        assert_eq!(
            c(1).as_primitive::<arrow::datatypes::Int64Type>().value(0),
            -16
        );
        assert_eq!(
            c(2).as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            i32::MIN as f64
        );
        assert_eq!(
            c(3).as_primitive::<arrow::datatypes::Int64Type>().value(0),
            u32::MAX as i64
        );
        assert_eq!(
            c(4).as_primitive::<Decimal128Type>().value(0),
            u64::MAX as i128
        );
        assert_eq!(
            c(5).as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            0.1f32 as f64
        );
        assert_eq!(c(6).as_string::<i32>().value(0), "large");
        assert_eq!(c(7).as_string::<i32>().value(0), "view");
        assert_eq!(c(8).as_binary::<i32>().value(0), b"b");
        assert_eq!(c(9).as_primitive::<Decimal128Type>().value(0), -12345);
        let ts = |i: usize| c(i).as_primitive::<TimestampMicrosecondType>().value(0);
        assert_eq!(ts(10), 1_700_000_000_000_000);
        assert_eq!(ts(11), 1_700_000_000_123_000);
        assert_eq!(ts(12), 7);
        assert_eq!(ts(13), -1000);
        assert_eq!(
            c(14).as_primitive::<Decimal128Type>().value(0),
            i64::MIN as i128
        );
        assert_eq!(
            c(10).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, utc())
        );
    }

    #[test]
    fn widens_what_arrow_avro_decodes() {
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"n","type":"int"},
            {"name":"x","type":"float"},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"local","type":{"type":"long","logicalType":"local-timestamp-micros"}},
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":5,"scale":2}},
            {"name":"day","type":{"type":"int","logicalType":"date"}}]}"#;
        let mut b = Vec::new();
        long(&mut b, -3);
        b.extend_from_slice(&1.5f32.to_le_bytes());
        long(&mut b, 1_700_000_000_123);
        long(&mut b, 42);
        let unscaled = (-12345i32).to_be_bytes(); // two's complement, big-endian
        long(&mut b, 4);
        b.extend_from_slice(&unscaled);
        long(&mut b, 19_000);
        let input = avro(schema, &[b]);
        let table = ddl(
            "n BIGINT, x DOUBLE, at TIMESTAMP, local TIMESTAMP_NTZ, amount DECIMAL(10,2), day DATE",
        );
        let out = conform(&input, &table, EvolutionPolicy::Fail).batch;
        assert_eq!(out.schema().as_ref(), &table);
        assert_eq!(
            out.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            -3
        );
        assert_eq!(
            out.column(1)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            1.5
        );
        assert_eq!(
            out.column(2)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_123_000
        );
        assert_eq!(
            out.column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            42
        );
        assert_eq!(
            out.column(4).as_primitive::<Decimal128Type>().value(0),
            -12345
        );
        let day: &Date32Array = out.column(5).as_primitive();
        assert_eq!(day.value(0), 19_000);
        assert!(Arc::ptr_eq(out.column(5), input.column(5)));
    }

    #[test]
    fn refuses_narrowing_and_lossy_conversions() {
        let cases: Vec<(DataType, &str)> = vec![
            (DataType::Int64, "v INT"),
            (DataType::Int64, "v DOUBLE"),
            (DataType::Float64, "v FLOAT"),
            (DataType::Float64, "v BIGINT"),
            (DataType::Utf8, "v BIGINT"),
            (DataType::Int32, "v STRING"),
            (DataType::UInt64, "v BIGINT"),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                "v TIMESTAMP",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "v TIMESTAMP_NTZ",
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                "v TIMESTAMP",
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                "v TIMESTAMP_NTZ",
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into())),
                "v TIMESTAMP",
            ),
            (DataType::Decimal128(10, 2), "v DECIMAL(10,3)"),
            (DataType::Decimal128(10, 2), "v DECIMAL(9,2)"),
            (DataType::Date32, "v TIMESTAMP"),
            (DataType::Time32(TimeUnit::Millisecond), "v INT"),
            (DataType::Int64, "v DECIMAL(20,2)"),
        ];
        for (from, table) in cases {
            let input = Schema::new(vec![field("v", from.clone(), true)]);
            let (name, text) = incompatible(&input, &ddl(table));
            assert_eq!(name, "v", "{from} -> {table}");
            assert!(text.contains(&from.to_string()), "{text}");
        }
        let (_, text) = incompatible(
            &Schema::new(vec![field(
                "v",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            )]),
            &ddl("v TIMESTAMP_NTZ"),
        );
        assert!(text.contains("nanoseconds"), "{text}");
    }

    #[test]
    fn avro_enum_becomes_a_string() {
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"color","type":{"type":"enum","name":"C","symbols":["RED","GREEN"]}}]}"#;
        let bodies = [1, 0, 1].map(|i| {
            let mut b = Vec::new();
            long(&mut b, i);
            b
        });
        let input = avro(schema, &bodies);
        assert!(matches!(
            input.schema().field(0).data_type(),
            DataType::Dictionary(..)
        ));
        let out = conform(&input, &ddl("color STRING"), EvolutionPolicy::Fail).batch;
        let colors: Vec<_> = out.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(colors, ["GREEN", "RED", "GREEN"]);
        // A new enum column is a STRING column.
        let out = conform(&input, &ddl("other INT"), EvolutionPolicy::AddColumns);
        assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Utf8);
        delta_storable(&out.batch.schema());
    }

    #[test]
    fn uuid_becomes_its_string() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"id","type":{"type":"string","logicalType":"uuid"}},
            {"name":"fixed","type":["null",{"type":"fixed","name":"F","size":16,"logicalType":"uuid"}]}]}"#;
        let mut b = Vec::new();
        string(&mut b, &id.to_uppercase());
        long(&mut b, 1);
        b.extend_from_slice(uuid::Uuid::parse_str(id).unwrap().as_bytes());
        let mut null = Vec::new();
        string(&mut null, id);
        long(&mut null, 0);
        let input = avro(schema, &[b, null]);
        assert_eq!(
            input.schema().field(0).data_type(),
            &DataType::FixedSizeBinary(16)
        );
        let out = conform(
            &input,
            &ddl("id STRING, fixed STRING"),
            EvolutionPolicy::Fail,
        )
        .batch;
        let ids = out.column(0).as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1)), (id, id));
        let fixed = out.column(1).as_string::<i32>();
        assert_eq!(fixed.value(0), id);
        assert!(fixed.is_null(1));
        // New uuid columns become STRING; a plain fixed(16) BINARY.
        let out = conform(&input, &ddl("x INT"), EvolutionPolicy::AddColumns).batch;
        assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
        assert_eq!(out.column(1).as_string::<i32>().value(0), id);
        let plain = batch(
            vec![field("f", DataType::FixedSizeBinary(16), false)],
            vec![Arc::new(
                FixedSizeBinaryArray::try_from_iter([[7u8; 16]].iter()).unwrap(),
            )],
        );
        let out = conform(&plain, &ddl("x INT"), EvolutionPolicy::AddColumns).batch;
        assert_eq!(out.column(1).as_binary::<i32>().value(0), &[7u8; 16]);
    }

    const NESTED_V1: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"long"},
        {"name":"user","type":{"type":"record","name":"U","fields":[
            {"name":"name","type":"string"},{"name":"age","type":"int"}]}}]}"#;

    fn nested() -> RecordBatch {
        let mut b = Vec::new();
        long(&mut b, 1);
        string(&mut b, "ann");
        long(&mut b, 30);
        avro(NESTED_V1, &[b])
    }

    #[test]
    fn new_nested_field_follows_the_policy() {
        let input = nested();
        let table = ddl("id BIGINT, user STRUCT<name: STRING, email: STRING>");
        // add_columns: `user.age` is added at the end of the struct.
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
        assert_eq!(c.new_fields(), ["user.age"]);
        let out = c.apply(&input).unwrap().batch;
        let user = out.column(1).as_struct();
        let names: Vec<_> = user.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["name", "email", "age"]);
        assert!(user.fields()[2].is_nullable());
        assert_eq!(user.column(0).as_string::<i32>().value(0), "ann");
        assert!(user.column(1).is_null(0));
        assert_eq!(user.column(2).as_primitive::<Int32Type>().value(0), 30);
        delta_storable(&out.schema());
        // ignore: dropped, still reported.
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Ignore).unwrap();
        assert_eq!(c.new_fields(), ["user.age"]);
        assert_eq!(c.output_schema().as_ref(), &table);
        let out = c.apply(&input).unwrap().batch;
        assert_eq!(out.column(1).as_struct().num_columns(), 2);
        // fail: names it and the fix.
        let err = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap_err();
        assert!(matches!(&err, ConformError::NewFields { fields } if fields == &["user.age"]));
        let text = err.to_string();
        assert!(
            text.contains("`user.age`") && text.contains("add_columns"),
            "{text}"
        );
    }

    #[test]
    fn new_top_level_fields_follow_the_policy() {
        let input = nested();
        let table = ddl("id BIGINT");
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
        assert_eq!(c.new_fields(), ["user"]);
        let user = c.output_schema().field(1);
        assert_eq!(user.name(), "user");
        assert!(user.is_nullable());
        let DataType::Struct(fields) = user.data_type() else {
            panic!()
        };
        assert!(
            fields.iter().all(|f| f.is_nullable()),
            "new columns are nullable all through"
        );
        let out = c.apply(&input).unwrap().batch;
        assert_eq!(
            out.column(1)
                .as_struct()
                .column(0)
                .as_string::<i32>()
                .value(0),
            "ann"
        );
        delta_storable(&out.schema());

        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Ignore).unwrap();
        assert_eq!(c.output_schema().as_ref(), &table);
        assert_eq!(c.apply(&input).unwrap().batch.num_columns(), 1);

        let err = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap_err();
        assert!(matches!(err, ConformError::NewFields { fields } if fields == ["user"]));
    }

    #[test]
    fn new_fields_delta_cannot_hold() {
        let input = Schema::new(vec![
            field("id", DataType::Int64, false),
            field(
                "at",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                false,
            ),
        ]);
        let (name, text) = incompatible(&input, &ddl("id BIGINT"));
        assert_eq!(name, "at");
        assert!(text.contains("nanoseconds"), "{text}");
        // Ignored, they are no problem.
        Conformer::new(&input, &ddl("id BIGINT"), EvolutionPolicy::Ignore).unwrap();
        // A name differing only in case would clash in Delta.
        let input = Schema::new(vec![field("ID", DataType::Int64, false)]);
        let (_, text) = incompatible(&input, &ddl("id BIGINT"));
        assert!(text.contains("case"), "{text}");
    }

    #[test]
    fn nulls_in_not_null_columns_reject_their_rows() {
        let input = batch(
            vec![
                field("id", DataType::Int64, true),
                field(
                    "user",
                    DataType::Struct(vec![field("name", DataType::Utf8, true)].into()),
                    true,
                ),
            ],
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(3),
                    Some(4),
                    Some(5),
                ])),
                Arc::new(StructArray::new(
                    vec![field("name", DataType::Utf8, true)].into(),
                    vec![Arc::new(StringArray::from(vec![
                        Some("a"),
                        Some("b"),
                        None,
                        None,
                        Some("e"),
                    ]))],
                    // Row 3's user is null: its null name is no violation.
                    Some(NullBuffer::from(vec![true, true, true, false, true])),
                )),
            ],
        );
        let table = ddl("id BIGINT NOT NULL, user STRUCT<name: STRING NOT NULL>");
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::Fail).unwrap();
        let out = c.apply(&input).unwrap();
        assert_eq!(out.rows, vec![0, 3, 4]);
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(out.rejected[0].0, 1);
        assert!(
            out.rejected[0].1.contains("`id` is NOT NULL"),
            "{}",
            out.rejected[0].1
        );
        assert_eq!(out.rejected[1].0, 2);
        assert!(
            out.rejected[1].1.contains("`user.name`"),
            "{}",
            out.rejected[1].1
        );
        let ids: Vec<_> = out
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(ids, [1, 4, 5]);
        assert!(!out.batch.schema().field(0).is_nullable());
        // Without nulls, nothing is rejected and nothing copied.
        let clean = input.slice(3, 2);
        let out = c.apply(&clean).unwrap();
        assert_eq!(out.rows, vec![0, 1]);
        assert!(Arc::ptr_eq(out.batch.column(0), clean.column(0)));
    }

    #[test]
    fn null_list_elements_reject_their_rows() {
        let item = Arc::new(field("item", DataType::Int32, true));
        let mut builder = ListBuilder::new(arrow::array::Int32Builder::new());
        builder.append_value([Some(1), Some(2)]);
        builder.append_value([Some(3), None]);
        builder.append_null();
        builder.append_value([Some(4)]);
        let list = builder.finish();
        assert_eq!(list.data_type(), &DataType::List(item));
        let input = batch(
            vec![field("xs", list.data_type().clone(), true)],
            vec![Arc::new(list)],
        );
        let table = Schema::new(vec![field(
            "xs",
            DataType::List(Arc::new(field("element", DataType::Int64, false))),
            true,
        )]);
        let out = conform(&input, &table, EvolutionPolicy::Fail);
        assert_eq!(out.rows, vec![0, 2, 3]);
        assert_eq!(out.rejected[0].0, 1);
        assert!(out.rejected[0].1.contains("`xs.element`"));
        let xs = out.batch.column(0).as_list::<i32>();
        assert!(xs.is_null(1));
        assert_eq!(
            xs.value(2)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            4
        );
        // A slice of the same batch (offsets not starting at 0) conforms too.
        let out = conform(&input.slice(2, 2), &table, EvolutionPolicy::Fail);
        assert_eq!(out.rows, vec![0, 1]);
        let xs = out.batch.column(0).as_list::<i32>();
        assert_eq!(
            xs.value(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec(),
            [4]
        );
    }

    #[test]
    fn out_of_range_timestamps_reject_their_rows() {
        let input = batch(
            vec![field(
                "at",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                false,
            )],
            vec![Arc::new(
                TimestampSecondArray::from(vec![1, i64::MAX / 10, 2]).with_timezone("UTC"),
            )],
        );
        let out = conform(&input, &ddl("at TIMESTAMP"), EvolutionPolicy::Fail);
        assert_eq!(out.rows, vec![0, 2]);
        assert_eq!(out.rejected[0].0, 1);
        assert!(out.rejected[0].1.contains("out of the range"));
        let at = out
            .batch
            .column(0)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.values().to_vec(), [1_000_000, 2_000_000]);
    }

    #[test]
    fn lists_and_maps_convert_element_by_element() {
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"xs","type":{"type":"array","items":"int"}},
            {"name":"m","type":{"type":"map","values":"int"}},
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[
                {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}}]}"#;
        let mut b = Vec::new();
        long(&mut b, 2); // xs: one block of 2
        long(&mut b, 7);
        long(&mut b, 8);
        long(&mut b, 0);
        long(&mut b, 1); // m: one block of 1
        string(&mut b, "k");
        long(&mut b, 9);
        long(&mut b, 0);
        long(&mut b, 1); // items: one
        string(&mut b, "s1");
        long(&mut b, 3);
        long(&mut b, 0);
        let input = avro(schema, &[b]);
        let table =
            ddl("xs ARRAY<BIGINT>, m MAP<STRING, BIGINT>, items ARRAY<STRUCT<sku: STRING>>");
        let c = Conformer::new(&input.schema(), &table, EvolutionPolicy::AddColumns).unwrap();
        assert_eq!(c.new_fields(), ["items.element.qty"]);
        let out = c.apply(&input).unwrap().batch;
        delta_storable(&out.schema());
        let xs = out.column(0).as_list::<i32>().value(0);
        assert_eq!(
            xs.as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec(),
            [7, 8]
        );
        let m = out.column(1).as_map();
        assert_eq!(m.keys().as_string::<i32>().value(0), "k");
        assert_eq!(
            m.values()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            9
        );
        let items = out.column(2).as_list::<i32>().value(0);
        let items = items.as_struct();
        assert_eq!(items.column(0).as_string::<i32>().value(0), "s1");
        assert_eq!(items.column(1).as_primitive::<Int32Type>().value(0), 3);
    }

    #[test]
    fn null_typed_fields_and_dictionaries() {
        let dict: DictionaryArray<Int32Type> = vec![Some("a"), None].into_iter().collect();
        let input = batch(
            vec![
                field("n", DataType::Null, true),
                field("d", dict.data_type().clone(), true),
            ],
            vec![Arc::new(NullArray::new(2)), Arc::new(dict)],
        );
        let out = conform(&input, &ddl("n INT, d STRING"), EvolutionPolicy::Fail).batch;
        assert_eq!(out.column(0).null_count(), 2);
        assert_eq!(out.column(1).as_string::<i32>().value(0), "a");
        assert!(out.column(1).is_null(1));
        // An all-null field has no Delta type of its own.
        assert!(Conformer::new(
            &input.schema(),
            &ddl("d STRING"),
            EvolutionPolicy::AddColumns
        )
        .is_err());
    }

    #[test]
    fn rejects_batches_of_another_schema() {
        let c = Conformer::new(
            &users().schema(),
            &ddl("id BIGINT"),
            EvolutionPolicy::Ignore,
        )
        .unwrap();
        let other = batch(
            vec![field("id", DataType::Int32, false)],
            vec![Arc::new(Int32Array::from(vec![1]))],
        );
        assert!(matches!(c.apply(&other), Err(ConformError::Arrow(_))));
    }

    #[test]
    fn nanosecond_table_column_still_takes_same_type() {
        let input = batch(
            vec![field(
                "at",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            )],
            vec![Arc::new(TimestampNanosecondArray::from(vec![1]))],
        );
        let out = conform(&input, &input.schema(), EvolutionPolicy::Fail);
        assert!(Arc::ptr_eq(out.batch.column(0), input.column(0)));
    }

    #[test]
    fn policy_config_names() {
        let p = |s: &str| serde_json::from_str::<EvolutionPolicy>(s).unwrap();
        assert_eq!(p("\"add_columns\""), EvolutionPolicy::AddColumns);
        assert_eq!(p("\"fail\""), EvolutionPolicy::Fail);
        assert_eq!(p("\"ignore\""), EvolutionPolicy::Ignore);
        assert_eq!(EvolutionPolicy::default(), EvolutionPolicy::AddColumns);
        assert!(serde_json::from_str::<EvolutionPolicy>("\"merge\"").is_err());
    }
}
