//! Message keys decoded into the key column: STRING, or a STRUCT decoded
//! like values (JSON, Avro or JSON Schema), a chunk at a time.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, StructArray, UInt32Array};
use arrow::datatypes::{DataType, Fields, Schema};

use super::normalize::{NormalizeError, Normalizer};
use crate::decode::{FramedError, Rejection, Stage, ValueDecoder};

/// Decodes the keys of one table.
#[derive(Debug)]
pub enum KeyDecoder {
    /// UTF-8 text.
    Utf8,
    /// A STRUCT of `fields`.
    Structured {
        /// Key bytes into Arrow.
        decoder: Box<ValueDecoder>,
        /// Onto the key column's fields.
        normalizer: Box<Normalizer>,
        /// The key column's fields.
        fields: Fields,
        /// Longer keys are rejected.
        max_bytes: usize,
    },
}

/// A key decoding failure that stops the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The registry or a shutdown.
    #[error(transparent)]
    Framed(#[from] FramedError),
    /// Planning or an internal error.
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    /// Arrow failed (a bug).
    #[error("key column: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl KeyDecoder {
    /// Decodes `keys` (one per row). Returns the key column for the rows
    /// kept, and those rows' positions in `keys`; a row whose key cannot be
    /// decoded goes to `rejected` (indexed by position in `keys`). Absent
    /// keys are null.
    pub fn decode(
        &mut self,
        keys: &[Option<&[u8]>],
        rejected: &mut Vec<Rejection>,
    ) -> Result<(ArrayRef, Vec<usize>), KeyError> {
        match self {
            KeyDecoder::Utf8 => {
                let mut b = StringBuilder::with_capacity(keys.len(), keys.len() * 16);
                let mut kept = Vec::with_capacity(keys.len());
                for (i, k) in keys.iter().enumerate() {
                    match k.map(std::str::from_utf8) {
                        None => b.append_null(),
                        Some(Ok(s)) => b.append_value(s),
                        Some(Err(e)) => {
                            rejected.push(Rejection::new(
                                i,
                                Stage::Decode,
                                format!("key: invalid UTF-8: {e}"),
                            ));
                            continue;
                        }
                    }
                    kept.push(i);
                }
                Ok((Arc::new(b.finish()), kept))
            }
            KeyDecoder::Structured {
                decoder,
                normalizer,
                fields,
                max_bytes,
            } => {
                let present: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].is_some()).collect();
                let values: Vec<Option<&[u8]>> = present.iter().map(|&i| keys[i]).collect();
                let mut parts = Vec::new();
                let mut local = Vec::new();
                decoder.decode(&values, *max_bytes, &mut parts, &mut local)?;
                let normalized = normalizer.normalize(parts, &mut local)?;
                for r in local {
                    rejected.push(Rejection::new(
                        present[r.index],
                        r.stage,
                        format!("key: {}", r.reason),
                    ));
                }
                rejected.sort_by_key(|r| r.index);
                // Row of each kept key in the decoded batch; absent keys are
                // null rows (a null take index).
                let mut decoded_row = vec![None; keys.len()];
                for (row, &pos) in normalized.rows.iter().enumerate() {
                    decoded_row[present[pos]] = Some(row as u32);
                }
                let kept: Vec<usize> = (0..keys.len())
                    .filter(|&i| keys[i].is_none() || decoded_row[i].is_some())
                    .collect();
                let batch = conform_fields(&normalized.batch, fields)?;
                let all = StructArray::from(batch);
                let take =
                    UInt32Array::from(kept.iter().map(|&i| decoded_row[i]).collect::<Vec<_>>());
                let column = arrow::compute::take(&all, &take, None)?;
                Ok((column, kept))
            }
        }
    }
}

/// The batch with the key column's exact field types (all nullable).
fn conform_fields(
    batch: &RecordBatch,
    fields: &Fields,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = Arc::new(Schema::new(fields.clone()));
    let columns: Vec<ArrayRef> = batch.columns().to_vec();
    if columns.len() != fields.len() {
        return Err(arrow::error::ArrowError::SchemaError(format!(
            "decoded key has {} fields, the key column {}",
            columns.len(),
            fields.len()
        )));
    }
    RecordBatch::try_new(schema, columns)
}

/// The key column's fields, if it is a STRUCT.
pub fn struct_fields(ty: &DataType) -> Option<&Fields> {
    match ty {
        DataType::Struct(f) => Some(f),
        _ => None,
    }
}
