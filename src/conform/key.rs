//! Message keys decoded into the key column: STRING, or a STRUCT decoded
//! like values (JSON, Avro or JSON Schema), a chunk at a time.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder, StructArray, UInt32Array};
use arrow::datatypes::{DataType, Fields, Schema};

use super::normalize::{NormalizeError, Normalizer};
use crate::decode::boundary::{self, Failure, Piece, RangeDecoder};
use crate::decode::{FramedError, ValueDecoder};
use crate::record::{Rejection, Rejections, Stage};

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
    /// keys are null. Behind the panic boundary: a key that makes a decoder
    /// panic is rejected alone (stage decode), the other rows are kept.
    pub fn decode(
        &mut self,
        keys: &[Option<&[u8]>],
        rejected: &mut Rejections,
    ) -> Result<(ArrayRef, Vec<usize>), KeyError> {
        let first_rejected = rejected.len();
        let reason = match boundary::attempt(|| {
            self.decode_unguarded(keys, rejected).map_err(Failure::Stop)
        }) {
            Ok(k) => return Ok(k),
            Err(Failure::Stop(e)) => return Err(e),
            Err(Failure::Refused(reason)) => reason,
        };
        rejected.truncate(first_rejected);
        let data_type = self.data_type();
        let mut out = Keys::default();
        boundary::isolate(
            &mut KeyRanges {
                decoder: self,
                keys,
            },
            0..keys.len(),
            reason,
            &mut out,
        )?;
        out.finish(&data_type, rejected)
    }

    /// The key column's type.
    fn data_type(&self) -> DataType {
        match self {
            KeyDecoder::Utf8 => DataType::Utf8,
            KeyDecoder::Structured { fields, .. } => DataType::Struct(fields.clone()),
        }
    }

    fn decode_unguarded(
        &mut self,
        keys: &[Option<&[u8]>],
        rejected: &mut Rejections,
    ) -> Result<(ArrayRef, Vec<usize>), KeyError> {
        match self {
            KeyDecoder::Utf8 => {
                let mut b = StringBuilder::with_capacity(keys.len(), keys.len() * 16);
                let mut kept = Vec::with_capacity(keys.len());
                for (i, k) in keys.iter().enumerate() {
                    if let Some(k) = k {
                        boundary::test_panic(k);
                    }
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
                let mut local = Rejections::new();
                decoder.decode(&values, *max_bytes, &mut parts, &mut local)?;
                let normalized = normalizer.normalize(parts, &mut local)?;
                local.prefix_reasons("key: ");
                rejected.merge_subset(&mut local, &present);
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

/// The keys of a chunk, decoded a range at a time while isolating culprits.
struct KeyRanges<'a, 'k> {
    decoder: &'a mut KeyDecoder,
    keys: &'a [Option<&'k [u8]>],
}

impl RangeDecoder for KeyRanges<'_, '_> {
    type Piece = Keys;
    type Stop = KeyError;

    fn decode_range(&mut self, range: Range<usize>) -> Result<Keys, Failure<KeyError>> {
        let mut out = Keys::default();
        let (column, kept) = self
            .decoder
            .decode_unguarded(&self.keys[range], &mut out.rejected)
            .map_err(Failure::Stop)?;
        out.columns.push(column);
        out.kept = kept;
        Ok(out)
    }

    fn reset(&mut self) -> Result<(), KeyError> {
        // The value decoder of structured keys resets itself behind its own
        // boundary; nothing else holds state across a chunk.
        Ok(())
    }
}

/// Key columns, kept rows and rejections of a range of keys.
#[derive(Default)]
struct Keys {
    columns: Vec<ArrayRef>,
    kept: Vec<usize>,
    rejected: Rejections,
}

impl Piece for Keys {
    fn append(&mut self, mut other: Self, offset: usize) {
        self.columns.extend(other.columns);
        self.kept.extend(other.kept.iter().map(|k| k + offset));
        self.rejected.merge_shifted(&mut other.rejected, offset);
    }

    fn reject(&mut self, index: usize, reason: String) {
        self.rejected.push(Rejection::new(
            index,
            Stage::Decode,
            format!("key: {reason}"),
        ));
    }
}

impl Keys {
    /// The key column of all kept rows (ranges came in order), rejections
    /// into `rejected` in order.
    fn finish(
        mut self,
        data_type: &DataType,
        rejected: &mut Rejections,
    ) -> Result<(ArrayRef, Vec<usize>), KeyError> {
        rejected.append(&mut self.rejected);
        let column = if self.columns.is_empty() {
            arrow::array::new_empty_array(data_type)
        } else {
            let columns: Vec<&dyn Array> = self.columns.iter().map(|c| c.as_ref()).collect();
            arrow::compute::concat(&columns)?
        };
        Ok((column, self.kept))
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

#[cfg(test)]
mod tests {
    use arrow::datatypes::SchemaRef;
    use proptest::strategy::{Just, Strategy};
    use proptest::test_runner::TestCaseError;

    use super::*;
    use crate::config::EvolutionPolicy;
    use crate::decode::fuzz;
    use crate::decode::{JsonDecoder, TEST_PANIC_MARKER};

    fn key_schema() -> SchemaRef {
        let s = crate::schema::parse_ddl("id BIGINT, name STRING").unwrap();
        Arc::new(Schema::new(
            s.fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ))
    }

    fn structured(schema: SchemaRef) -> KeyDecoder {
        let decoder = ValueDecoder::Json(JsonDecoder::new(schema.clone()).unwrap());
        let mut normalizer = Normalizer::new(
            "t (key)",
            Vec::new(),
            EvolutionPolicy::Ignore,
            schema.clone(),
        );
        normalizer.prepare(schema.clone()).unwrap();
        KeyDecoder::Structured {
            decoder: Box::new(decoder),
            normalizer: Box::new(normalizer),
            fields: schema.fields().clone(),
            max_bytes: 4096,
        }
    }

    /// Every key once, kept or rejected; the column has a row per kept key;
    /// absent and valid keys are kept. Returns the panics caught.
    fn check(
        d: &mut KeyDecoder,
        keys: &[Option<&[u8]>],
        valid: &[bool],
    ) -> Result<usize, TestCaseError> {
        let mut rejected = Rejections::new();
        let (column, kept) = d
            .decode(keys, &mut rejected)
            .map_err(|e| TestCaseError::fail(format!("key decoding stopped: {e}")))?;
        assert_eq!(column.len(), kept.len());
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        let mut all: Vec<usize> = kept.clone();
        all.extend(rejected.iter().map(|r| r.index));
        all.sort();
        assert_eq!(all, (0..keys.len()).collect::<Vec<_>>(), "{rejected:?}");
        for r in &rejected {
            assert!(keys[r.index].is_some() && !valid[r.index], "{r:?}");
            assert!(r.reason.starts_with("key: "), "{r:?}");
        }
        Ok(rejected
            .iter()
            .filter(|r| r.reason.contains("decoder panicked"))
            .count())
    }

    /// A key that makes its decoder panic (the debug builds' test marker)
    /// is rejected alone at the decode stage; the other rows keep theirs.
    #[test]
    fn a_panicking_key_decoder_costs_one_row() {
        let panicking = |good: Vec<u8>| {
            let mut bad = good.clone();
            bad.extend_from_slice(TEST_PANIC_MARKER);
            bad
        };
        crate::decode::boundary::quiet_test_panics();
        for mut d in [KeyDecoder::Utf8, structured(key_schema())] {
            let good = br#"{"id":1,"name":"k"}"#.to_vec();
            let bad = panicking(good.clone());
            let keys = [Some(&good[..]), None, Some(&bad[..]), Some(&good[..])];
            let valid = [true, false, false, true];
            assert_eq!(check(&mut d, &keys, &valid).unwrap(), 1);
            let mut rejected = Rejections::new();
            let (column, kept) = d.decode(&keys, &mut rejected).unwrap();
            assert_eq!(kept, [0, 1, 3]);
            assert_eq!(column.len(), 3);
            assert!(column.is_null(1), "an absent key is a null");
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].index, 2);
            assert_eq!(rejected[0].stage, Stage::Decode);
            assert!(
                rejected[0]
                    .reason
                    .starts_with("key: decoder panicked: test panic marker"),
                "{rejected:?}"
            );
        }
    }

    #[test]
    fn fuzz_string_keys() {
        let mut d = KeyDecoder::Utf8;
        let valid = fuzz::text().prop_map(String::into_bytes);
        fuzz::run(
            "string keys",
            fuzz::inputs(valid, 0, Just(Vec::new())),
            |k, ok| check(&mut d, k, ok),
        );
    }

    #[test]
    fn fuzz_json_keys() {
        let mut d = structured(fuzz::json_schema());
        fuzz::run(
            "json keys",
            fuzz::inputs(fuzz::json_doc(), 0, Just(Vec::new())),
            |k, ok| check(&mut d, k, ok),
        );
    }
}
