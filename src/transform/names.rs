//! Transforms that change names and shape only: rename, snake_case, flatten,
//! drop. Arrays keep their buffers; only struct/list wrappers are rebuilt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray as _, BooleanArray, FixedSizeListArray, GenericListArray, MapArray,
    OffsetSizeTrait, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use arrow::error::ArrowError;

use super::{ColumnFn, Compiled, Ctx};

/// `a_b`-style snake_case of a column name.
pub(crate) fn to_snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    // Leading underscores are part of the name (`_id`).
    let lead = chars.iter().take_while(|c| **c == '_').count();
    out.extend(std::iter::repeat_n('_', lead));
    let mut word_open = false; // a word was written and not yet closed
    let mut pending_break = false;
    for i in lead..chars.len() {
        let c = chars[i];
        if !c.is_alphanumeric() {
            pending_break = true;
            continue;
        }
        let prev = if i > lead { Some(chars[i - 1]) } else { None };
        let next = chars.get(i + 1).copied();
        let camel_break = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_numeric()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if word_open && (pending_break || camel_break) {
            out.push('_');
        }
        pending_break = false;
        word_open = true;
        out.extend(c.to_lowercase());
    }
    out
}

/// Errors when two fields of one level share a name.
pub(crate) fn check_unique(fields: &Fields, path: &str) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(fields.len());
    for f in fields {
        if !seen.insert(f.name().as_str()) {
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" inside `{path}`")
            };
            return Err(format!(
                "two columns would be named `{}`{at}; rename or drop one of them first",
                f.name()
            ));
        }
    }
    Ok(())
}

/// The column function for a column whose field changes from `from` to `to`
/// in name or nested names only.
fn relabel_fn(i: usize, from: &Field, to: &Field) -> ColumnFn {
    if from.data_type() == to.data_type() {
        ColumnFn::Keep(i)
    } else {
        ColumnFn::Relabel(i)
    }
}

pub(crate) fn rename(
    ctx: &Ctx<'_>,
    columns: &BTreeMap<String, String>,
) -> Result<Compiled, String> {
    let schema = ctx.schema;
    let mut top: HashMap<usize, &str> = HashMap::new();
    // Nested renames: path of child indices → new name.
    let mut nested: HashMap<Vec<usize>, &str> = HashMap::new();
    for (old, new) in columns {
        if new.is_empty() {
            return Err(format!("the new name of `{old}` is empty"));
        }
        if let Ok(i) = schema.index_of(old) {
            top.insert(i, new);
            continue;
        }
        let Some((head, _)) = old.split_once('.') else {
            return Err(ctx.column(old).unwrap_err());
        };
        let head_i = ctx.column(head)?;
        let mut path = vec![head_i];
        let mut field = schema.field(head_i).clone();
        let mut walked = head.to_string();
        for part in old.split('.').skip(1) {
            let DataType::Struct(children) = field.data_type() else {
                return Err(format!(
                    "`{walked}` is {}, not a struct, so `{old}` does not exist",
                    field.data_type()
                ));
            };
            let Some((ci, child)) = children.find(part) else {
                let names = children.iter().map(|f| f.name().as_str());
                return Err(format!("in `{walked}`: {}", super::not_found(names, part)));
            };
            path.push(ci);
            field = child.as_ref().clone();
            walked = format!("{walked}.{part}");
        }
        // "payload.event_ts" as the new name means the leaf `event_ts`.
        let leaf = match new.rsplit_once('.') {
            None => new.as_str(),
            Some((prefix, leaf)) if old.rsplit_once('.').map(|p| p.0) == Some(prefix) => leaf,
            Some(_) => {
                return Err(format!(
                    "`{old}` can only be renamed inside its struct: give the new field name alone (e.g. `{}`); to move it out of the struct, flatten it",
                    new.rsplit('.').next().unwrap_or(new)
                ));
            }
        };
        nested.insert(path, leaf);
    }
    let mut out = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let mut path = vec![i];
        let name = top.get(&i).copied().unwrap_or(f.name());
        let field = rename_field(f, name, &mut path, &nested)?;
        out.push((Arc::new(field.clone()), relabel_fn(i, f, &field)));
    }
    Ok(Compiled::columns(out))
}

fn rename_field(
    f: &Field,
    name: &str,
    path: &mut Vec<usize>,
    nested: &HashMap<Vec<usize>, &str>,
) -> Result<Field, String> {
    let ty = match f.data_type() {
        DataType::Struct(children) if nested.keys().any(|p| p.starts_with(path)) => {
            let mut fields = Vec::with_capacity(children.len());
            for (ci, c) in children.iter().enumerate() {
                path.push(ci);
                let name = nested.get(path.as_slice()).copied().unwrap_or(c.name());
                fields.push(rename_field(c, name, path, nested)?);
                path.pop();
            }
            let fields = Fields::from(fields);
            check_unique(&fields, f.name())?;
            DataType::Struct(fields)
        }
        other => other.clone(),
    };
    Ok(f.clone().with_name(name).with_data_type(ty))
}

pub(crate) fn snake_case(ctx: &Ctx<'_>, nested: bool) -> Result<Compiled, String> {
    let mut out = Vec::with_capacity(ctx.schema.fields().len());
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (i, f) in ctx.schema.fields().iter().enumerate() {
        let field = snake_field(f, nested)?;
        if let Some(other) = seen.insert(field.name().clone(), f.name()) {
            return Err(collision(other, f.name(), field.name(), ""));
        }
        out.push((Arc::new(field.clone()), relabel_fn(i, f, &field)));
    }
    Ok(Compiled::columns(out))
}

fn collision(a: &str, b: &str, to: &str, path: &str) -> String {
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" (inside `{path}`)")
    };
    format!(
        "`{a}` and `{b}` would both become `{to}`{at}; rename or drop one of them first (op = \"rename\" / \"drop\")"
    )
}

fn snake_field(f: &Field, nested: bool) -> Result<Field, String> {
    let name = to_snake_case(f.name());
    if name.is_empty() || name.chars().all(|c| c == '_') {
        return Err(format!(
            "`{}` has no letters or digits to make a snake_case name of; rename it first (op = \"rename\")",
            f.name()
        ));
    }
    let ty = if nested {
        snake_type(f.data_type(), f.name())?
    } else {
        f.data_type().clone()
    };
    Ok(f.clone().with_name(name).with_data_type(ty))
}

/// Renames struct fields inside `ty`, also under lists and maps (whose own
/// element/entry names are kept).
fn snake_type(ty: &DataType, path: &str) -> Result<DataType, String> {
    let keep_name = |f: &FieldRef| -> Result<FieldRef, String> {
        let inner = snake_type(f.data_type(), path)?;
        Ok(Arc::new(f.as_ref().clone().with_data_type(inner)))
    };
    Ok(match ty {
        DataType::Struct(children) => {
            let mut seen: HashMap<String, &str> = HashMap::new();
            let mut fields = Vec::with_capacity(children.len());
            for c in children {
                let renamed = snake_field(c, true)?;
                if let Some(other) = seen.insert(renamed.name().clone(), c.name()) {
                    return Err(collision(other, c.name(), renamed.name(), path));
                }
                fields.push(renamed);
            }
            DataType::Struct(fields.into())
        }
        DataType::List(f) => DataType::List(keep_name(f)?),
        DataType::LargeList(f) => DataType::LargeList(keep_name(f)?),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(keep_name(f)?, *n),
        DataType::Map(entries, sorted) => {
            // Keep `key`/`value`, rename inside them.
            let DataType::Struct(kv) = entries.data_type() else {
                return Ok(ty.clone());
            };
            let kv: Vec<FieldRef> = kv.iter().map(keep_name).collect::<Result<_, _>>()?;
            let entries = entries
                .as_ref()
                .clone()
                .with_data_type(DataType::Struct(kv.into()));
            DataType::Map(Arc::new(entries), *sorted)
        }
        other => other.clone(),
    })
}

/// `array` with the nested field names of `to` (same layout): buffers are
/// shared, only struct/list/map wrappers are rebuilt.
pub(crate) fn relabel(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    Ok(match to {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let columns = s
                .columns()
                .iter()
                .zip(fields)
                .map(|(c, f)| relabel(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                s.nulls().cloned(),
            )?)
        }
        DataType::List(f) => relabel_list::<i32>(array, f)?,
        DataType::LargeList(f) => relabel_list::<i64>(array, f)?,
        DataType::FixedSizeList(f, n) => {
            let l = array.as_fixed_size_list();
            Arc::new(FixedSizeListArray::try_new(
                f.clone(),
                *n,
                relabel(l.values(), f.data_type())?,
                l.nulls().cloned(),
            )?)
        }
        DataType::Map(f, sorted) => {
            let m = array.as_map();
            let entries: ArrayRef = Arc::new(m.entries().clone());
            let entries = relabel(&entries, f.data_type())?;
            Arc::new(MapArray::try_new(
                f.clone(),
                m.offsets().clone(),
                entries.as_struct().clone(),
                m.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => arrow::compute::cast(array, to)?,
    })
}

fn relabel_list<O: OffsetSizeTrait>(
    array: &ArrayRef,
    f: &FieldRef,
) -> Result<ArrayRef, ArrowError> {
    let l = array.as_list::<O>();
    Ok(Arc::new(GenericListArray::<O>::try_new(
        f.clone(),
        l.offsets().clone(),
        relabel(l.values(), f.data_type())?,
        l.nulls().cloned(),
    )?))
}

pub(crate) fn flatten(
    ctx: &Ctx<'_>,
    separator: &str,
    columns: Option<&[String]>,
) -> Result<Compiled, String> {
    let schema = ctx.schema;
    let chosen: HashSet<usize> = match columns {
        None => schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.data_type(), DataType::Struct(_)))
            .map(|(i, _)| i)
            .collect(),
        Some(names) => {
            let mut set = HashSet::new();
            for name in names {
                let i = ctx.column(name)?;
                if !matches!(schema.field(i).data_type(), DataType::Struct(_)) {
                    return Err(format!(
                        "`{name}` is {}, not a struct; list only struct columns",
                        schema.field(i).data_type()
                    ));
                }
                set.insert(i);
            }
            set
        }
    };
    let mut out = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if chosen.contains(&i) {
            leaves(
                i,
                f,
                f.name(),
                f.is_nullable(),
                &mut Vec::new(),
                separator,
                &mut out,
            );
        } else {
            out.push((f.clone(), ColumnFn::Keep(i)));
        }
    }
    Ok(Compiled::columns(out))
}

fn leaves(
    column: usize,
    f: &Field,
    name: &str,
    nullable: bool,
    path: &mut Vec<usize>,
    separator: &str,
    out: &mut Vec<(FieldRef, ColumnFn)>,
) {
    match f.data_type() {
        DataType::Struct(children) => {
            for (ci, c) in children.iter().enumerate() {
                path.push(ci);
                let child_name = format!("{name}{separator}{}", c.name());
                leaves(
                    column,
                    c,
                    &child_name,
                    nullable || c.is_nullable(),
                    path,
                    separator,
                    out,
                );
                path.pop();
            }
        }
        _ => {
            let field = f.clone().with_name(name).with_nullable(nullable);
            out.push((
                Arc::new(field),
                ColumnFn::StructField {
                    column,
                    path: path.clone(),
                },
            ));
        }
    }
}

/// The field at `path` inside a struct array, null wherever an enclosing
/// struct is null.
pub(crate) fn struct_field(array: &ArrayRef, path: &[usize]) -> Result<ArrayRef, ArrowError> {
    let mut current = array.clone();
    let mut parents: Option<NullBuffer> = None;
    for &i in path {
        let s = current.as_struct();
        parents = NullBuffer::union(parents.as_ref(), s.nulls());
        current = s.column(i).clone();
    }
    match parents {
        Some(p) if p.null_count() > 0 => {
            let parent_null = BooleanArray::new(!p.inner(), None);
            arrow::compute::nullif(&current, &parent_null)
        }
        _ => Ok(current),
    }
}

pub(crate) fn drop(ctx: &Ctx<'_>, columns: &[String]) -> Result<Compiled, String> {
    let mut gone = HashSet::new();
    for name in columns {
        gone.insert(ctx.column(name)?);
    }
    Ok(Compiled::columns(
        super::keep_all(ctx.schema)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, c)| c)
            .collect(),
    ))
}
