//! Column mapping (`delta.columnMapping.mode` = `name` or `id`): the table's
//! columns have logical names (what the schema, the config, transforms and
//! readers use) and physical names and field ids (what the Parquet files
//! hold, what add actions key partition values and statistics by).
//!
//! inlet's pipeline works in logical names throughout; only the writer
//! turns a batch into its physical form just before Parquet (a rename of
//! the columns and nested struct fields, with `PARQUET:field_id`; the arrays
//! are shared, not copied). Columns the table lacks (schema evolution) get
//! the next ids after `delta.columnMapping.maxColumnId` and a physical name
//! made of the table id and the column id: two inlet processes adding the
//! same column from the same table state name it alike, and a clash with
//! another writer's column is seen at commit (see [`evolve`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, LargeListArray, ListArray, MapArray, RecordBatch,
    RecordBatchOptions, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use delta_kernel::schema::MetadataValue;
use deltalake::kernel::{ArrayType, DataType as KernelType, MapType, StructField, StructType};

/// The table property naming the mode.
pub(super) const MODE: &str = "delta.columnMapping.mode";
/// The table property holding the largest column id assigned.
pub(crate) const MAX_ID: &str = "delta.columnMapping.maxColumnId";
/// A field's column id (schema metadata).
pub(super) const ID: &str = "delta.columnMapping.id";
/// A field's physical name (schema metadata).
pub(super) const PHYSICAL: &str = "delta.columnMapping.physicalName";
/// The Arrow field metadata the parquet writer turns into a field id.
const FIELD_ID: &str = "PARQUET:field_id";

/// Whether a table with these properties maps its columns.
pub(super) fn is_mapped(config: &HashMap<String, String>) -> bool {
    config
        .get(MODE)
        .is_some_and(|m| m.eq_ignore_ascii_case("name") || m.eq_ignore_ascii_case("id"))
}

/// One column's mapping, and that of the struct fields inside its type.
#[derive(Debug, Clone, PartialEq)]
struct Column {
    id: i64,
    physical: String,
    shape: Shape,
}

/// Where a type holds struct fields (which have mappings of their own).
#[derive(Debug, Clone, PartialEq, Default)]
enum Shape {
    #[default]
    Leaf,
    Struct(Vec<(String, Column)>),
    List(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
}

fn number(v: &MetadataValue) -> Option<i64> {
    match v {
        MetadataValue::Number(n) => Some(*n),
        MetadataValue::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn columns_of(s: &StructType) -> Result<Vec<(String, Column)>, String> {
    s.fields()
        .map(|f| {
            let id = f
                .metadata()
                .get(ID)
                .and_then(number)
                .ok_or_else(|| format!("column `{}` has no {ID}", f.name()))?;
            let physical = match f.metadata().get(PHYSICAL) {
                Some(MetadataValue::String(p)) if !p.is_empty() => p.clone(),
                _ => return Err(format!("column `{}` has no {PHYSICAL}", f.name())),
            };
            Ok((
                f.name().clone(),
                Column {
                    id,
                    physical,
                    shape: shape_of(f.data_type())?,
                },
            ))
        })
        .collect()
}

fn shape_of(t: &KernelType) -> Result<Shape, String> {
    Ok(match t {
        KernelType::Struct(s) => Shape::Struct(columns_of(s)?),
        KernelType::Array(a) => Shape::List(Box::new(shape_of(a.element_type())?)),
        KernelType::Map(m) => Shape::Map(
            Box::new(shape_of(m.key_type())?),
            Box::new(shape_of(m.value_type())?),
        ),
        _ => Shape::Leaf,
    })
}

/// The largest column id in a schema (nested fields included).
fn max_id_in(s: &StructType) -> i64 {
    fn of_type(t: &KernelType) -> i64 {
        match t {
            KernelType::Struct(s) => max_id_in(s),
            KernelType::Array(a) => of_type(a.element_type()),
            KernelType::Map(m) => of_type(m.key_type()).max(of_type(m.value_type())),
            _ => 0,
        }
    }
    s.fields()
        .map(|f| {
            let own = f.metadata().get(ID).and_then(number).unwrap_or(0);
            own.max(of_type(f.data_type()))
        })
        .max()
        .unwrap_or(0)
}

/// The largest column id a table has assigned: its `maxColumnId`, or the
/// largest in the schema if that is larger.
pub(super) fn max_column_id(schema: &StructType, config: &HashMap<String, String>) -> i64 {
    let recorded = config
        .get(MAX_ID)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    recorded.max(max_id_in(schema))
}

/// A physical name for column `id` of table `table_id` (see the module docs).
fn physical_name(table_id: &str, id: i64) -> String {
    format!("col-{table_id}-{id}")
}

/// The column mapping a process's writers of one table share: the table's
/// columns, those the writers assigned since, and the largest id in use.
#[derive(Debug)]
pub(crate) struct Mapper {
    known: Mutex<Known>,
}

#[derive(Debug)]
struct Known {
    columns: Vec<(String, Column)>,
    max_id: i64,
    table_id: String,
}

/// The schemas of one writer of a column-mapped table.
#[derive(Debug, Clone)]
pub(crate) struct Physical {
    /// What the Parquet files hold: physical names, field ids.
    pub(crate) schema: SchemaRef,
    /// The rows' (logical) schema with every field's mapping in its
    /// metadata: what the commit records for new columns.
    pub(crate) annotated: SchemaRef,
}

/// Hands out new column ids.
struct Alloc<'a> {
    max_id: &'a mut i64,
    table_id: &'a str,
}

impl Alloc<'_> {
    fn column(&mut self) -> Column {
        *self.max_id += 1;
        Column {
            id: *self.max_id,
            physical: physical_name(self.table_id, *self.max_id),
            shape: Shape::Leaf,
        }
    }
}

impl Mapper {
    /// The mapping of a table with `schema` and `config` (its metadata).
    pub(super) fn new(
        schema: &StructType,
        config: &HashMap<String, String>,
        table_id: &str,
    ) -> Result<Self, String> {
        Ok(Mapper {
            known: Mutex::new(Known {
                columns: columns_of(schema)?,
                max_id: max_column_id(schema, config),
                table_id: table_id.to_string(),
            }),
        })
    }

    /// Takes in the table's columns after another writer changed its
    /// schema: their mappings win over any this process assigned and did
    /// not commit yet, and ids continue after the table's.
    pub(super) fn observe(
        &self,
        schema: &StructType,
        config: &HashMap<String, String>,
    ) -> Result<(), String> {
        let table = columns_of(schema)?;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, column) in table {
            match known.columns.iter_mut().find(|(n, _)| *n == name) {
                Some(c) => c.1 = column,
                None => known.columns.push((name, column)),
            }
        }
        known.max_id = known.max_id.max(max_column_id(schema, config));
        Ok(())
    }

    /// The physical names of top-level columns `names` (partition columns).
    pub(super) fn physical_names(&self, names: &[String]) -> Result<Vec<String>, String> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .iter()
            .map(|n| {
                known
                    .columns
                    .iter()
                    .find(|(c, _)| c == n)
                    .map(|(_, c)| c.physical.clone())
                    .ok_or_else(|| format!("partition column `{n}` is not in the table"))
            })
            .collect()
    }

    /// The schemas of a writer of rows of `logical`, assigning ids and
    /// physical names to the columns the table lacks.
    pub(crate) fn physical(&self, logical: &Schema) -> Physical {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let Known {
            columns,
            max_id,
            table_id,
        } = &mut *known;
        let mut alloc = Alloc { max_id, table_id };
        let (physical, annotated): (Vec<Field>, Vec<Field>) = logical
            .fields()
            .iter()
            .map(|f| resolve(columns, f, &mut alloc))
            .unzip();
        Physical {
            schema: Arc::new(Schema::new(physical)),
            annotated: Arc::new(Schema::new_with_metadata(
                annotated,
                logical.metadata().clone(),
            )),
        }
    }
}

/// The physical and the annotated field of logical field `f`, assigning a
/// mapping to it (and its nested fields) where `columns` has none.
fn resolve(
    columns: &mut Vec<(String, Column)>,
    f: &Field,
    alloc: &mut Alloc<'_>,
) -> (Field, Field) {
    let at = match columns.iter().position(|(n, _)| n == f.name()) {
        Some(i) => i,
        None => {
            columns.push((f.name().clone(), alloc.column()));
            columns.len() - 1
        }
    };
    let column = &mut columns[at].1;
    let (physical_type, annotated_type) = resolve_type(&mut column.shape, f.data_type(), alloc);
    let physical = Field::new(&column.physical, physical_type, f.is_nullable()).with_metadata(
        HashMap::from([(FIELD_ID.to_string(), column.id.to_string())]),
    );
    let mut metadata = f.metadata().clone();
    metadata.insert(ID.to_string(), column.id.to_string());
    metadata.insert(PHYSICAL.to_string(), column.physical.clone());
    let annotated = Field::new(f.name(), annotated_type, f.is_nullable()).with_metadata(metadata);
    (physical, annotated)
}

/// [`resolve`] for the struct fields inside a type: its physical and its
/// annotated form.
fn resolve_type(shape: &mut Shape, t: &DataType, alloc: &mut Alloc<'_>) -> (DataType, DataType) {
    let item = |shape: &mut Shape, item: &Field, alloc: &mut Alloc<'_>| {
        let (p, a) = resolve_type(shape, item.data_type(), alloc);
        (
            Arc::new(item.as_ref().clone().with_data_type(p)),
            Arc::new(item.as_ref().clone().with_data_type(a)),
        )
    };
    match t {
        DataType::Struct(fields) => {
            if !matches!(shape, Shape::Struct(_)) {
                *shape = Shape::Struct(Vec::new());
            }
            let Shape::Struct(children) = shape else {
                unreachable!("set above")
            };
            let (p, a): (Vec<Field>, Vec<Field>) =
                fields.iter().map(|f| resolve(children, f, alloc)).unzip();
            (DataType::Struct(p.into()), DataType::Struct(a.into()))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            if !matches!(shape, Shape::List(_)) {
                *shape = Shape::List(Box::default());
            }
            let Shape::List(inner) = shape else {
                unreachable!("set above")
            };
            let (p, a) = item(inner, f, alloc);
            match t {
                DataType::List(_) => (DataType::List(p), DataType::List(a)),
                DataType::LargeList(_) => (DataType::LargeList(p), DataType::LargeList(a)),
                DataType::FixedSizeList(_, n) => (
                    DataType::FixedSizeList(p, *n),
                    DataType::FixedSizeList(a, *n),
                ),
                _ => unreachable!("matched above"),
            }
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return (t.clone(), t.clone());
            };
            if kv.len() != 2 {
                return (t.clone(), t.clone());
            }
            if !matches!(shape, Shape::Map(..)) {
                *shape = Shape::Map(Box::default(), Box::default());
            }
            let Shape::Map(k, v) = shape else {
                unreachable!("set above")
            };
            let (kp, ka) = item(k, &kv[0], alloc);
            let (vp, va) = item(v, &kv[1], alloc);
            let entry = |k, v| {
                Arc::new(
                    entries
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::Struct(Fields::from(vec![k, v]))),
                )
            };
            (
                DataType::Map(entry(kp, vp), *sorted),
                DataType::Map(entry(ka, va), *sorted),
            )
        }
        _ => (t.clone(), t.clone()),
    }
}

/// `batch` (of the logical schema) as rows of `physical`: the same arrays
/// under physical names, struct, list and map arrays rebuilt around their
/// children.
pub(crate) fn to_physical(
    batch: &RecordBatch,
    physical: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(physical.fields())
        .map(|(a, f)| retype(a, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        physical.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

fn retype(a: &ArrayRef, t: &DataType) -> Result<ArrayRef, ArrowError> {
    if a.data_type() == t {
        return Ok(a.clone());
    }
    Ok(match t {
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let children = s
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| retype(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new_with_length(
                fields.clone(),
                children,
                s.nulls().cloned(),
                s.len(),
            )?)
        }
        DataType::List(item) => {
            let l = a.as_list::<i32>();
            Arc::new(ListArray::try_new(
                item.clone(),
                l.offsets().clone(),
                retype(l.values(), item.data_type())?,
                l.nulls().cloned(),
            )?)
        }
        DataType::LargeList(item) => {
            let l = a.as_list::<i64>();
            Arc::new(LargeListArray::try_new(
                item.clone(),
                l.offsets().clone(),
                retype(l.values(), item.data_type())?,
                l.nulls().cloned(),
            )?)
        }
        DataType::FixedSizeList(item, n) => {
            let l = a.as_fixed_size_list();
            Arc::new(FixedSizeListArray::try_new(
                item.clone(),
                *n,
                retype(l.values(), item.data_type())?,
                l.nulls().cloned(),
            )?)
        }
        DataType::Map(entries, sorted) => {
            let m = a.as_map();
            let kv: ArrayRef = Arc::new(m.entries().clone());
            let kv = retype(&kv, entries.data_type())?;
            Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                kv.as_struct().clone(),
                m.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => a.clone(),
    })
}

/// Removes the mapping keys from every field's metadata (nested included),
/// and the schema's metadata.
pub(super) fn strip(schema: &Schema) -> Schema {
    fn field(f: &Field) -> Field {
        let mut metadata = f.metadata().clone();
        metadata.remove(ID);
        metadata.remove(PHYSICAL);
        metadata.remove(FIELD_ID);
        Field::new(f.name(), data_type(f.data_type()), f.is_nullable()).with_metadata(metadata)
    }
    fn data_type(t: &DataType) -> DataType {
        let item = |f: &Field| Arc::new(field(f));
        match t {
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect()),
            DataType::List(f) => DataType::List(item(f)),
            DataType::LargeList(f) => DataType::LargeList(item(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(item(f), *n),
            DataType::Map(f, sorted) => DataType::Map(item(f), *sorted),
            _ => t.clone(),
        }
    }
    Schema::new(schema.fields().iter().map(|f| field(f)).collect::<Vec<_>>())
}

/// The table schema after a commit of files written with `file` (the
/// annotated schema of their writer): `merged` (the table's and the rows'
/// columns, without mappings) with the table's metadata on its columns
/// (kept as the table has it: ids, type changes, ... are not strings) and,
/// on a column-mapped table (`table_max_id` is its `maxColumnId`), the
/// writer's mapping on the new ones. An error when the writer's mapping of a
/// column differs from the table's, or a new column's id is one the table
/// has assigned meanwhile (another writer added columns concurrently): the
/// files hold the wrong physical names and must not be committed.
pub(super) fn evolve(
    merged: &StructType,
    table: &StructType,
    file: &Schema,
    table_max_id: Option<i64>,
) -> Result<StructType, String> {
    annotate_fields(merged, Some(table), Some(file.fields()), table_max_id, "")
}

fn annotate_fields(
    merged: &StructType,
    table: Option<&StructType>,
    file: Option<&Fields>,
    max_id: Option<i64>,
    path: &str,
) -> Result<StructType, String> {
    let fields = merged
        .fields()
        .map(|f| {
            let name = if path.is_empty() {
                f.name().clone()
            } else {
                format!("{path}.{}", f.name())
            };
            let old = table.and_then(|t| t.field(f.name()));
            let written = file
                .and_then(|fs| fs.find(f.name()))
                .map(|(_, f)| f.as_ref());
            let written_id = written.and_then(|w| w.metadata().get(ID)?.parse::<i64>().ok());
            let written_name = written.and_then(|w| w.metadata().get(PHYSICAL));
            let metadata = match old {
                Some(old) => {
                    let id = old.metadata().get(ID).and_then(number);
                    let physical = match old.metadata().get(PHYSICAL) {
                        Some(MetadataValue::String(p)) => Some(p),
                        _ => None,
                    };
                    let mapped = max_id.is_some();
                    if mapped && written.is_some() && (written_id != id || written_name != physical)
                    {
                        return Err(format!(
                            "column `{name}` was added by another writer (id {id:?}, physical name \
                             {physical:?}) while inlet wrote files for it as id {written_id:?}, \
                             {written_name:?}"
                        ));
                    }
                    old.metadata().clone()
                }
                None => {
                    let Some(max_id) = max_id else {
                        return Ok(f.clone());
                    };
                    let (Some(id), Some(physical)) = (written_id, written_name) else {
                        return Err(format!("new column `{name}` has no column mapping"));
                    };
                    if id <= max_id {
                        return Err(format!(
                            "new column `{name}` was given id {id}, which another writer \
                             assigned meanwhile (the table's maxColumnId is {max_id})"
                        ));
                    }
                    let mut m = f.metadata().clone();
                    m.insert(ID.to_string(), MetadataValue::Number(id));
                    m.insert(
                        PHYSICAL.to_string(),
                        MetadataValue::String(physical.clone()),
                    );
                    m
                }
            };
            let data_type = annotate_type(
                f.data_type(),
                old.map(StructField::data_type),
                written.map(Field::data_type),
                max_id,
                &name,
            )?;
            Ok(
                StructField::new(f.name().clone(), data_type, f.is_nullable())
                    .with_metadata(metadata),
            )
        })
        .collect::<Result<Vec<_>, String>>()?;
    StructType::try_new(fields).map_err(|e| e.to_string())
}

fn annotate_type(
    merged: &KernelType,
    table: Option<&KernelType>,
    file: Option<&DataType>,
    max_id: Option<i64>,
    path: &str,
) -> Result<KernelType, String> {
    let item = |t: Option<&DataType>| match t {
        Some(DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)) => {
            Some(f.data_type().clone())
        }
        _ => None,
    };
    Ok(match merged {
        KernelType::Struct(s) => {
            let old = match table {
                Some(KernelType::Struct(t)) => Some(t.as_ref()),
                _ => None,
            };
            let written = match file {
                Some(DataType::Struct(f)) => Some(f),
                _ => None,
            };
            KernelType::Struct(Box::new(annotate_fields(s, old, written, max_id, path)?))
        }
        KernelType::Array(a) => {
            let old = match table {
                Some(KernelType::Array(t)) => Some(t.element_type()),
                _ => None,
            };
            let written = item(file);
            let element = annotate_type(a.element_type(), old, written.as_ref(), max_id, path)?;
            KernelType::Array(Box::new(ArrayType::new(element, a.contains_null())))
        }
        KernelType::Map(m) => {
            let (old_k, old_v) = match table {
                Some(KernelType::Map(t)) => (Some(t.key_type()), Some(t.value_type())),
                _ => (None, None),
            };
            let (file_k, file_v) = match file {
                Some(DataType::Map(e, _)) => match e.data_type() {
                    DataType::Struct(kv) if kv.len() == 2 => (
                        Some(kv[0].data_type().clone()),
                        Some(kv[1].data_type().clone()),
                    ),
                    _ => (None, None),
                },
                _ => (None, None),
            };
            let key = annotate_type(m.key_type(), old_k, file_k.as_ref(), max_id, path)?;
            let value = annotate_type(m.value_type(), old_v, file_v.as_ref(), max_id, path)?;
            KernelType::Map(Box::new(MapType::new(key, value, m.value_contains_null())))
        }
        other => other.clone(),
    })
}

/// `schema` with a fresh mapping on every field (ids from 1, in order,
/// nested fields included), for a table created with column mapping;
/// returns the largest id.
pub(super) fn assign(schema: &StructType, name_prefix: &str) -> Result<(StructType, i64), String> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let mapper = Mapper {
        known: Mutex::new(Known {
            columns: Vec::new(),
            max_id: 0,
            table_id: name_prefix.to_string(),
        }),
    };
    let arrow: Schema = schema
        .try_into_arrow()
        .map_err(|e: ArrowError| e.to_string())?;
    let physical = mapper.physical(&arrow);
    let max_id = mapper
        .known
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .max_id;
    let empty = StructType::try_new([]).map_err(|e| e.to_string())?;
    Ok((
        evolve(schema, &empty, &physical.annotated, Some(0))?,
        max_id,
    ))
}

/// On a column-mapped table (`config` its properties, `table_id` its
/// metadata id): `schema` (the table's columns `table` plus new ones, e.g.
/// a migration's `add_columns`) with the next ids and physical names on
/// the new columns, and the new `maxColumnId`. `None` when the table does
/// not map columns.
pub(crate) fn map_added_columns(
    table: &StructType,
    config: &HashMap<String, String>,
    table_id: &str,
    schema: &StructType,
) -> Result<Option<(StructType, i64)>, String> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    if !is_mapped(config) {
        return Ok(None);
    }
    let mapper = Mapper::new(table, config, table_id)?;
    let arrow: Schema = schema
        .try_into_arrow()
        .map_err(|e: ArrowError| e.to_string())?;
    let physical = mapper.physical(&strip(&arrow));
    let max_id = max_column_id(table, config);
    let mapped = evolve(schema, table, &physical.annotated, Some(max_id))?;
    let new_max = max_column_id(&mapped, config);
    Ok(Some((mapped, new_max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn kernel(json: &str) -> StructType {
        serde_json::from_str(json).unwrap()
    }

    const TABLE: &str = r#"{"type":"struct","fields":[
        {"name":"Company Very Short","type":"string","nullable":true,"metadata":{"delta.columnMapping.id":1,"delta.columnMapping.physicalName":"col-a"}},
        {"name":"s","type":{"type":"struct","fields":[{"name":"x y","type":"long","nullable":true,"metadata":{"delta.columnMapping.id":3,"delta.columnMapping.physicalName":"col-c"}}]},"nullable":true,"metadata":{"delta.columnMapping.id":2,"delta.columnMapping.physicalName":"col-b"}}
    ]}"#;

    fn logical(with_new: bool) -> Schema {
        let mut inner = vec![Field::new("x y", DataType::Int64, true)];
        if with_new {
            inner.push(Field::new("z", DataType::Utf8, true));
        }
        let mut fields = vec![
            Field::new("Company Very Short", DataType::Utf8, true),
            Field::new("s", DataType::Struct(inner.into()), true),
        ];
        if with_new {
            fields.push(Field::new("added", DataType::Int64, true));
        }
        Schema::new(fields)
    }

    /// Existing columns keep their physical names and ids (nested
    /// included); new ones, top-level and nested, get the next ids; the
    /// batch's arrays are renamed, not copied.
    #[test]
    fn physical_names_and_field_ids() {
        let config = HashMap::from([(MAX_ID.to_string(), "3".to_string())]);
        let mapper = Mapper::new(&kernel(TABLE), &config, "t").unwrap();
        let p = mapper.physical(&logical(true));
        let names: Vec<&str> = p
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["col-a", "col-b", "col-t-5"]);
        let ids: Vec<&str> = p
            .schema
            .fields()
            .iter()
            .map(|f| f.metadata()[FIELD_ID].as_str())
            .collect();
        assert_eq!(ids, ["1", "2", "5"]);
        let DataType::Struct(inner) = p.schema.field(1).data_type() else {
            panic!()
        };
        assert_eq!(inner[0].name(), "col-c");
        assert_eq!(inner[0].metadata()[FIELD_ID], "3");
        assert_eq!(
            inner[1].name(),
            "col-t-4",
            "nested first: depth-first order"
        );
        // A second writer of the same process reuses the assignments.
        let again = mapper.physical(&logical(true));
        assert_eq!(again.schema, p.schema);
        assert_eq!(
            mapper
                .physical_names(&["Company Very Short".into()])
                .unwrap(),
            ["col-a"]
        );

        let s = StructArray::from(vec![
            (
                Arc::new(Field::new("x y", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![7])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("z", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["q"])) as ArrayRef,
            ),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(logical(true)),
            vec![
                Arc::new(StringArray::from(vec!["BMS"])),
                Arc::new(s),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let out = to_physical(&batch, &p.schema).unwrap();
        assert_eq!(out.schema(), p.schema);
        assert_eq!(
            out.column(0).to_data().buffers()[1].as_ptr(),
            batch.column(0).to_data().buffers()[1].as_ptr()
        );
    }

    /// The commit's schema: the table's mapping on old columns, the
    /// writer's on new ones; a clash with another writer's is an error.
    #[test]
    fn evolution_keeps_and_assigns_mappings() {
        let table = kernel(TABLE);
        let config = HashMap::from([(MAX_ID.to_string(), "3".to_string())]);
        let mapper = Mapper::new(&table, &config, "t").unwrap();
        let p = mapper.physical(&logical(true));
        let merged: StructType =
            deltalake::kernel::engine::arrow_conversion::TryIntoKernel::try_into_kernel(&strip(
                &p.annotated,
            ))
            .unwrap();
        let evolved = evolve(&merged, &table, &p.annotated, Some(3)).unwrap();
        let added = evolved.field("added").unwrap();
        assert_eq!(added.metadata()[ID], MetadataValue::Number(5));
        assert_eq!(
            added.metadata()[PHYSICAL],
            MetadataValue::String("col-t-5".into())
        );
        assert_eq!(
            evolved.field("Company Very Short"),
            table.field("Company Very Short")
        );
        assert_eq!(max_id_in(&evolved), 5);
        // Unchanged rows: the table's schema exactly.
        let p0 = mapper.physical(&logical(false));
        let merged0: StructType =
            deltalake::kernel::engine::arrow_conversion::TryIntoKernel::try_into_kernel(&strip(
                &p0.annotated,
            ))
            .unwrap();
        assert_eq!(
            evolve(&merged0, &table, &p0.annotated, Some(3)).unwrap(),
            table
        );
        // Another writer took id 5 first.
        assert!(evolve(&merged, &table, &p.annotated, Some(5))
            .unwrap_err()
            .contains("another writer"));
        // ... or added `added` under another name.
        let theirs = evolve(&merged, &table, &p.annotated, Some(3)).unwrap();
        let mut other = mapper.physical(&logical(true)).annotated.as_ref().clone();
        let fields: Vec<Field> = other
            .fields()
            .iter()
            .map(|f| {
                let mut f = f.as_ref().clone();
                if f.name() == "added" {
                    let mut m = f.metadata().clone();
                    m.insert(PHYSICAL.into(), "col-other".into());
                    f = f.with_metadata(m);
                }
                f
            })
            .collect();
        other = Schema::new(fields);
        assert!(evolve(&merged, &theirs, &other, Some(5))
            .unwrap_err()
            .contains("another writer"));
    }

    /// After another writer added a column (id 4) and moved maxColumnId,
    /// a column this process adds next gets id 5, and the other writer's
    /// column keeps its mapping.
    #[test]
    fn ids_continue_after_another_writers_columns() {
        let config = HashMap::from([(MAX_ID.to_string(), "3".to_string())]);
        let mapper = Mapper::new(&kernel(TABLE), &config, "t").unwrap();
        let theirs = kernel(&TABLE.replace(
            "\n    ]}",
            r#",
        {"name":"theirs","type":"long","nullable":true,"metadata":{"delta.columnMapping.id":4,"delta.columnMapping.physicalName":"col-x"}}
    ]}"#,
        ));
        assert!(theirs.field("theirs").is_some(), "{theirs:?}");
        mapper
            .observe(
                &theirs,
                &HashMap::from([(MAX_ID.to_string(), "4".to_string())]),
            )
            .unwrap();
        let mut fields: Vec<Field> = logical(false)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("theirs", DataType::Int64, true));
        fields.push(Field::new("mine", DataType::Int64, true));
        let p = mapper.physical(&Schema::new(fields));
        let mapped: Vec<(&str, &str)> = p
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.metadata()[FIELD_ID].as_str()))
            .collect();
        assert_eq!(
            mapped,
            [
                ("col-a", "1"),
                ("col-b", "2"),
                ("col-x", "4"),
                ("col-t-5", "5")
            ]
        );
    }

    #[test]
    fn a_new_table_gets_ids_from_one() {
        let s = kernel(
            r#"{"type":"struct","fields":[{"name":"a b","type":"long","nullable":true,"metadata":{}},{"name":"m","type":{"type":"map","keyType":"string","valueType":{"type":"struct","fields":[{"name":"v","type":"long","nullable":true,"metadata":{}}]},"valueContainsNull":true},"nullable":true,"metadata":{}}]}"#,
        );
        let (mapped, max) = assign(&s, "t").unwrap();
        assert_eq!(max, 3);
        let json = serde_json::to_string(&mapped).unwrap();
        assert!(json.contains(r#""delta.columnMapping.id":3"#), "{json}");
        assert!(
            json.contains(r#""delta.columnMapping.physicalName":"col-t-1""#),
            "{json}"
        );
    }
}
