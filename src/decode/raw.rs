//! `bytes` and `string` formats: the value as it is, in one column.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use crate::record::{Rejections, Stage};

/// Copies values into a BINARY or STRING column (the schema's only field).
#[derive(Debug)]
pub struct RawDecoder {
    schema: SchemaRef,
    utf8: bool,
}

impl RawDecoder {
    /// A decoder filling the single column of `schema`: STRING values must be
    /// valid UTF-8, BINARY values are taken as they are.
    pub fn new(schema: SchemaRef) -> Result<Self, String> {
        let [field] = schema.fields().as_ref() else {
            return Err(format!(
                "the bytes and string formats fill exactly one value column; the table has {}",
                schema.fields().len()
            ));
        };
        let utf8 = match field.data_type() {
            arrow::datatypes::DataType::Utf8 => true,
            arrow::datatypes::DataType::Binary => false,
            other => {
                return Err(format!(
                    "value column `{}` is {other}; the bytes format needs BINARY, the string format STRING",
                    field.name()
                ))
            }
        };
        Ok(RawDecoder { schema, utf8 })
    }

    /// The one-column schema of the batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `values`; tombstones and (for STRING) invalid UTF-8 are rejected.
    pub fn decode(
        &self,
        values: &[Option<&[u8]>],
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, ArrowError> {
        good.clear();
        let bytes: usize = values.iter().flatten().map(|v| v.len()).sum();
        let column: ArrayRef = if self.utf8 {
            let mut b = StringBuilder::with_capacity(values.len(), bytes);
            for (i, v) in values.iter().enumerate() {
                let Some(v) = super::not_tombstone(i, *v, rejected) else {
                    continue;
                };
                super::boundary::test_panic(v);
                match std::str::from_utf8(v) {
                    Err(e) => rejected.reject(i, Stage::Decode, format!("invalid UTF-8: {e}")),
                    Ok(s) => {
                        b.append_value(s);
                        good.push(i);
                    }
                }
            }
            Arc::new(b.finish())
        } else {
            let mut b = BinaryBuilder::with_capacity(values.len(), bytes);
            for (i, v) in values.iter().enumerate() {
                let Some(v) = super::not_tombstone(i, *v, rejected) else {
                    continue;
                };
                super::boundary::test_panic(v);
                b.append_value(v);
                good.push(i);
            }
            Arc::new(b.finish())
        };
        RecordBatch::try_new(self.schema.clone(), vec![column])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn strings_must_be_utf8_and_tombstones_are_rejected() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        let d = RawDecoder::new(schema).unwrap();
        let (mut good, mut rejected) = (Vec::new(), Rejections::new());
        let values: Vec<Option<&[u8]>> = vec![Some(b"a"), None, Some(&[0xff, 0xfe]), Some(b"")];
        let b = d.decode(&values, &mut good, &mut rejected).unwrap();
        assert_eq!(good, vec![0, 3]);
        assert_eq!(rejected.len(), 2);
        assert!(rejected[1].reason.contains("UTF-8"));
        let col = b.column(0).as_string::<i32>();
        assert_eq!((col.value(0), col.value(1)), ("a", ""));
    }

    #[test]
    fn bytes_keep_everything_but_tombstones() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Binary, true)]));
        let d = RawDecoder::new(schema).unwrap();
        let (mut good, mut rejected) = (Vec::new(), Rejections::new());
        let values: Vec<Option<&[u8]>> = vec![Some(&[0xff]), None];
        let b = d.decode(&values, &mut good, &mut rejected).unwrap();
        assert_eq!(b.column(0).as_binary::<i32>().value(0), &[0xff]);
        assert_eq!(good, vec![0]);
    }

    #[test]
    fn needs_one_binary_or_string_column() {
        let two = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        assert!(RawDecoder::new(two).unwrap_err().contains("exactly one"));
        let int = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        assert!(RawDecoder::new(int).unwrap_err().contains("BINARY"));
    }
}
