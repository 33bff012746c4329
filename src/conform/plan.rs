//! Planning a conformer: how each input field becomes its table column
//! (matched by name, widened only without loss), or why it cannot.

use std::sync::Arc;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};

use super::{ConformError, EvolutionPolicy};

/// How one array becomes its output array.
#[derive(Debug)]
pub(super) enum Node {
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
pub(super) struct StructPlan {
    pub(super) fields: Fields,
    pub(super) children: Vec<Child>,
}

#[derive(Debug)]
pub(super) struct Child {
    pub(super) source: Source,
    /// The output field is NOT NULL and the input's is nullable.
    pub(super) check_null: bool,
    pub(super) path: String,
}

#[derive(Debug)]
pub(super) enum Source {
    /// The input's child at this index, converted.
    Input(usize, Node),
    /// Nulls (a nullable table field the input lacks).
    Missing,
}

impl StructPlan {
    pub(super) fn may_reject(&self) -> bool {
        self.children.iter().any(|c| {
            c.check_null || matches!(&c.source, Source::Input(_, node) if node.may_reject())
        })
    }

    pub(super) fn sources(&self) -> Vec<usize> {
        self.children
            .iter()
            .filter_map(|c| match c.source {
                Source::Input(i, _) => Some(i),
                Source::Missing => None,
            })
            .collect()
    }
}

pub(super) struct Planner {
    pub(super) policy: EvolutionPolicy,
    pub(super) new_fields: Vec<String>,
}

pub(super) fn join(prefix: &str, name: &str) -> String {
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

pub(super) fn incompatible(
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
    pub(super) fn plan_struct(
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
                plan_timestamp(*unit, (tz1, tz2), from, to, path)
            }
            (Struct(fi), Struct(fo)) => {
                let plan = self.plan_struct(fi, fo, path)?;
                let dt = Struct(plan.fields.clone());
                Ok((Node::Struct(plan), dt))
            }
            (List(fi), List(fo)) => self.plan_list(fi, fo, path),
            (Map(ei, _), Map(eo, ordered)) => self.plan_map(ei, eo, *ordered, from, to, path),
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

    fn plan_list(
        &mut self,
        fi: &FieldRef,
        fo: &FieldRef,
        path: &str,
    ) -> Result<(Node, DataType), ConformError> {
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
            DataType::List(field),
        ))
    }

    fn plan_map(
        &mut self,
        ei: &FieldRef,
        eo: &FieldRef,
        ordered: bool,
        from: &DataType,
        to: &DataType,
        path: &str,
    ) -> Result<(Node, DataType), ConformError> {
        use DataType::*;
        let (Struct(ki), Struct(ko)) = (ei.data_type(), eo.data_type()) else {
            return Err(incompatible(path, from, to, "malformed map type"));
        };
        if ki.len() != 2 || ko.len() != 2 {
            return Err(incompatible(path, from, to, "malformed map type"));
        }
        let (key, kt) = self.plan_type(&ki[0], ko[0].data_type(), &format!("{path}.key"))?;
        let value_path = format!("{path}.value");
        let (value, vt) = self.plan_type(&ki[1], ko[1].data_type(), &value_path)?;
        let entries = with_type(
            eo,
            Struct(Fields::from(vec![
                with_type(&ko[0], kt),
                with_type(&ko[1], vt),
            ])),
        );
        Ok((
            Node::Map {
                field: entries.clone(),
                ordered,
                key: Box::new(key),
                value: Box::new(value),
                check_null: !ko[1].is_nullable() && ki[1].is_nullable(),
                path: value_path,
            },
            Map(entries, ordered),
        ))
    }
}

/// A timestamp in `unit` into a microsecond column: the same zone (none,
/// or UTC under any name), and no nanoseconds.
fn plan_timestamp(
    unit: TimeUnit,
    (tz1, tz2): (&Option<Arc<str>>, &Option<Arc<str>>),
    from: &DataType,
    to: &DataType,
    path: &str,
) -> Result<(Node, DataType), ConformError> {
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
            (Some(_), None) => {
                "an instant cannot go into TIMESTAMP_NTZ; make the column TIMESTAMP".to_string()
            }
            (Some(a), _) => format!("only UTC timestamps are supported, not time zone {a:?}"),
            _ => String::new(),
        };
        return Err(incompatible(path, from, to, reason));
    }
    match unit {
        TimeUnit::Second | TimeUnit::Millisecond => Ok((
            Node::Rescale {
                unit,
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

pub(super) fn with_type(field: &FieldRef, dt: DataType) -> FieldRef {
    if field.data_type() == &dt {
        field.clone()
    } else {
        Arc::new(field.as_ref().clone().with_data_type(dt))
    }
}

pub(super) fn is_numeric(dt: &DataType) -> bool {
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
pub(super) fn int_fits(from: &DataType, to: &DataType) -> bool {
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
pub(super) fn is_utc(tz: &str) -> bool {
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
pub(super) fn is_uuid(field: &Field) -> bool {
    let md = field.metadata();
    md.get("ARROW:extension:name").map(String::as_str) == Some("arrow.uuid")
        || md.get("logicalType").map(String::as_str) == Some("uuid")
}

/// The Delta type a new column of `field`'s type gets: one that holds every value.
pub(super) fn normalize(field: &Field, path: &str) -> Result<DataType, ConformError> {
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
