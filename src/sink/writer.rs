//! The Parquet writers of a table: delta-rs' `RecordBatchWriter` (file
//! rolling, partition split, statistics), fed logical rows; on a
//! column-mapped table they are renamed to the physical schema first (see
//! [`super::mapping`]), so files, partition values and statistics carry
//! physical names and field ids.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTableError;

use super::identity::Identities;
use super::mapping::{Mapper, Physical};

/// Makes Parquet writers of a table, also for a schema the table does not
/// have yet: the rows carry new columns that their commit will add.
#[derive(Clone)]
pub struct WriterFactory {
    pub(super) uri: String,
    pub(super) options: HashMap<String, String>,
    pub(super) partition_columns: Vec<String>,
    pub(super) properties: WriterProperties,
    pub(super) target_file_size: u64,
    /// The table's column mapping, shared by its writers; `None`: unmapped.
    pub(super) mapper: Option<Arc<Mapper>>,
    /// The table's identity columns, whose values the writers generate.
    pub(super) identity: Option<Arc<Identities>>,
}

impl std::fmt::Debug for WriterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold credentials.
        f.debug_struct("WriterFactory")
            .field("uri", &self.uri)
            .finish()
    }
}

impl WriterFactory {
    /// A writer for rows of `schema` (logical names).
    pub fn writer(&self, schema: SchemaRef) -> Result<TableWriter, DeltaTableError> {
        let (file_schema, partitions, mapped) = match &self.mapper {
            None => (schema.clone(), self.partition_columns.clone(), None),
            Some(m) => {
                let physical = m.physical(&schema);
                let partitions = m
                    .physical_names(&self.partition_columns)
                    .map_err(DeltaTableError::Generic)?;
                (physical.schema.clone(), partitions, Some(physical))
            }
        };
        let inner = RecordBatchWriter::try_new(
            &self.uri,
            file_schema,
            Some(partitions),
            Some(self.options.clone()),
        )?
        .with_writer_properties(self.properties.clone())
        .with_target_file_size(self.target_file_size);
        let schema = match mapped {
            None => inner.arrow_schema(),
            Some(_) => schema,
        };
        let columns = self.identity.as_ref().map_or(0, |i| i.len());
        Ok(TableWriter {
            inner,
            schema,
            mapped,
            identity: self.identity.clone(),
            window: vec![None; columns],
            flushed: vec![None; columns],
        })
    }
}

/// A streaming Parquet writer of one table.
pub struct TableWriter {
    inner: RecordBatchWriter,
    /// The rows' schema (logical names).
    schema: SchemaRef,
    /// On a column-mapped table: the files' schema and the annotated one.
    mapped: Option<Physical>,
    /// Identity columns: values generated here.
    identity: Option<Arc<Identities>>,
    /// The first and last identity value generated since the last flush,
    /// by column.
    window: Vec<Option<(i64, i64)>>,
    /// Those of the last flush: what its commit records.
    flushed: Vec<Option<(i64, i64)>>,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("mapped", &self.mapped.is_some())
            .finish()
    }
}

impl TableWriter {
    /// The schema of the rows it takes (logical names).
    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The schema the commit of its files records: the rows' schema, with
    /// the column mapping of every field on a column-mapped table.
    pub fn commit_schema(&self) -> SchemaRef {
        let schema = match &self.mapped {
            Some(p) => p.annotated.clone(),
            None => self.schema.clone(),
        };
        match &self.identity {
            Some(i) => Arc::new(i.mark(&schema, &self.flushed)),
            None => schema,
        }
    }

    /// Streams `batch` (of [`Self::arrow_schema`]) into the open files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), DeltaTableError> {
        let batch = match &self.identity {
            Some(i) if batch.num_rows() > 0 => {
                let (batch, ranges) = i.fill(batch)?;
                let ranges: Vec<Option<(i64, i64)>> = ranges.into_iter().map(Some).collect();
                super::identity::extend(&mut self.window, &ranges);
                batch
            }
            _ => batch,
        };
        let Some(p) = &self.mapped else {
            return self.inner.write(batch).await;
        };
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch
        } else {
            // Columns matched by name, as delta-rs' writer does.
            let columns = self
                .schema
                .fields()
                .iter()
                .map(|f| {
                    batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                        DeltaTableError::Generic(format!("the rows lack column `{}`", f.name()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(self.schema.clone(), columns)?
        };
        let physical = super::mapping::to_physical(&batch, &p.schema)?;
        self.inner.write(physical).await
    }

    /// Finishes the files written since the last flush: their add actions.
    pub async fn flush(&mut self) -> Result<Vec<Add>, DeltaTableError> {
        let adds = self.inner.flush().await?;
        let empty = vec![None; self.window.len()];
        self.flushed = std::mem::replace(&mut self.window, empty);
        Ok(adds)
    }

    /// Drops what was written since the last flush.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.window.iter_mut().for_each(|w| *w = None);
    }
}
