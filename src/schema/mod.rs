//! Table schemas: Spark DDL parsing and the Kafka metadata columns.

mod ddl;
mod json_schema;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub use ddl::{parse_ddl, DdlError};
pub use json_schema::{json_schema_to_arrow, JsonSchemaError};

use crate::config::{KeyFormat, MetadataColumns, MetadataKind};

/// The Arrow type a metadata column has in the table.
pub fn metadata_type(kind: MetadataKind) -> DataType {
    match kind {
        MetadataKind::Topic => DataType::Utf8,
        MetadataKind::Partition => DataType::Int32,
        MetadataKind::Offset => DataType::Int64,
        MetadataKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        MetadataKind::Key => DataType::Binary,
        MetadataKind::Headers => headers_type(),
    }
}

/// `MAP<STRING, BINARY>`, laid out as Delta expects maps.
pub fn headers_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Binary, true),
            ])),
            false,
        )),
        false,
    )
}

/// Whether the metadata column is nullable (key, timestamp and headers can be absent).
fn metadata_nullable(kind: MetadataKind) -> bool {
    matches!(
        kind,
        MetadataKind::Key | MetadataKind::Timestamp | MetadataKind::Headers
    )
}

/// The schema of a table inlet creates: the DDL columns, then the metadata
/// columns (keys as BINARY).
pub fn table_schema(ddl: &str, meta: &MetadataColumns) -> Result<Schema, DdlError> {
    table_schema_with_key(ddl, meta, &KeyFormat::Bytes, None)
}

/// [`table_schema`], with the key column typed by the key format.
pub fn table_schema_with_key(
    ddl: &str,
    meta: &MetadataColumns,
    key: &KeyFormat,
    key_schema: Option<&str>,
) -> Result<Schema, DdlError> {
    table_schema_from(parse_ddl(ddl)?, meta, key, key_schema)
}

/// [`table_schema_with_key`] with the value columns given as a schema.
pub fn table_schema_from(
    base: Schema,
    meta: &MetadataColumns,
    key: &KeyFormat,
    key_schema: Option<&str>,
) -> Result<Schema, DdlError> {
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (kind, name) in meta.iter() {
        let ty = match kind {
            MetadataKind::Key => key_type(*key, key_schema)?,
            other => metadata_type(other),
        };
        fields.push(Field::new(name, ty, metadata_nullable(kind)));
    }
    Ok(Schema::new(fields))
}

/// The key column's type for a key format: BINARY, STRING, or a STRUCT of
/// the `key_schema` fields (all nullable: keys vary).
pub fn key_type(format: KeyFormat, key_schema: Option<&str>) -> Result<DataType, DdlError> {
    Ok(match format {
        KeyFormat::Bytes => DataType::Binary,
        KeyFormat::String => DataType::Utf8,
        _ => {
            let fields = parse_ddl(key_schema.unwrap_or_default())?;
            DataType::Struct(
                fields
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect(),
            )
        }
    })
}

/// Whether an existing key column of type `ty` can hold keys of `format`.
pub fn key_type_fits(format: KeyFormat, ty: &DataType) -> bool {
    match format {
        KeyFormat::Bytes => ty == &DataType::Binary,
        KeyFormat::String => ty == &DataType::Utf8,
        _ => matches!(ty, DataType::Struct(_)),
    }
}

/// Spark DDL columns as a Delta schema (for creating and altering tables).
pub fn ddl_to_delta(ddl: &str) -> Result<deltalake::kernel::StructType, String> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let schema = parse_ddl(ddl).map_err(|e| e.to_string())?;
    (&schema)
        .try_into_kernel()
        .map_err(|e| format!("cannot be stored in Delta: {e}"))
}

/// How a table's columns are filled: decoded from the value, or from Kafka metadata.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// The table's full Arrow schema, in table column order.
    pub table: SchemaRef,
    /// The columns decoded from the message value, in table order.
    pub value: SchemaRef,
    /// For each table column: `None` if decoded, or the metadata it holds.
    pub sources: Vec<Option<MetadataKind>>,
}

impl TableLayout {
    /// Splits `table` into value and metadata columns.
    pub fn new(table: SchemaRef, meta: &MetadataColumns) -> Self {
        let sources: Vec<Option<MetadataKind>> = table
            .fields()
            .iter()
            .map(|f| meta.iter().find(|(_, n)| *n == f.name()).map(|(k, _)| k))
            .collect();
        let value = Arc::new(Schema::new(
            table
                .fields()
                .iter()
                .zip(&sources)
                .filter(|(_, s)| s.is_none())
                .map(|(f, _)| f.clone())
                .collect::<Vec<_>>(),
        ));
        TableLayout {
            table,
            value,
            sources,
        }
    }

    /// The layout after schema evolution gave the value columns `value`
    /// (the old ones, possibly with wider structs, then new ones): value
    /// columns are replaced by name, new ones go at the end of the table.
    pub fn with_value(&self, value: &SchemaRef, meta: &MetadataColumns) -> Self {
        let mut fields: Vec<arrow::datatypes::FieldRef> = self
            .table
            .fields()
            .iter()
            .zip(&self.sources)
            .map(|(f, source)| match source {
                Some(_) => f.clone(),
                None => value
                    .field_with_name(f.name())
                    .map(|v| Arc::new(v.clone()))
                    .unwrap_or_else(|_| f.clone()),
            })
            .collect();
        for v in value.fields() {
            if self.table.field_with_name(v.name()).is_err() {
                fields.push(v.clone());
            }
        }
        TableLayout::new(Arc::new(Schema::new(fields)), meta)
    }
}
