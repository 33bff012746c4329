//! The value decoder of a table, whatever the format.

use std::ops::Range;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::boundary::{self, Failure, Piece, RangeDecoder};
use super::framed::{FramedDecoder, FramedError};
use super::{JsonDecoder, Part, RawDecoder};
use crate::record::{Rejections, Stage};

/// Decodes message values of one table into parts (one per input schema).
#[derive(Debug)]
pub enum ValueDecoder {
    /// Plain JSON into a fixed schema.
    Json(JsonDecoder),
    /// `bytes` / `string` into the one value column.
    Raw(RawDecoder),
    /// Confluent-framed Avro, JSON Schema or Protobuf.
    Framed(Box<FramedDecoder>),
}

impl ValueDecoder {
    /// The fixed input schema of the formats that have one.
    pub fn fixed_schema(&self) -> Option<SchemaRef> {
        match self {
            ValueDecoder::Json(d) => Some(d.schema().clone()),
            ValueDecoder::Raw(d) => Some(d.schema().clone()),
            ValueDecoder::Framed(_) => None,
        }
    }

    /// Decodes `values`; fixed-schema formats produce one part with schema
    /// id 0, framed ones a part per schema id. Values longer than
    /// `max_bytes` are rejected without being decoded.
    pub fn decode(
        &mut self,
        values: &[Option<&[u8]>],
        max_bytes: usize,
        parts: &mut Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<(), FramedError> {
        if !values.iter().flatten().any(|v| v.len() > max_bytes) {
            return self.decode_all(values, parts, rejected);
        }
        // Rare: decode the others, then map their indices back.
        let kept: Vec<usize> = (0..values.len())
            .filter(|&i| values[i].is_none_or(|v| v.len() <= max_bytes))
            .collect();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.len() > max_bytes) {
                rejected.reject(
                    i,
                    Stage::Decode,
                    format!(
                        "value of {} bytes exceeds tables.<name>.max_value_bytes ({max_bytes} bytes)",
                        v.len()
                    ),
                );
            }
        }
        let subset: Vec<Option<&[u8]>> = kept.iter().map(|&i| values[i]).collect();
        let first_part = parts.len();
        // The subset's rejections are collected apart: they are indices into
        // the subset (commit 2244d37).
        let mut local = Rejections::new();
        self.decode_all(&subset, parts, &mut local)?;
        for p in &mut parts[first_part..] {
            for r in &mut p.rows {
                *r = kept[*r];
            }
        }
        rejected.merge_subset(&mut local, &kept);
        Ok(())
    }

    /// Decodes `values` behind the panic boundary: a panic, or an error
    /// refusing the chunk as a whole, costs only the messages at fault.
    fn decode_all(
        &mut self,
        values: &[Option<&[u8]>],
        parts: &mut Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<(), FramedError> {
        let (first_part, first_rejected) = (parts.len(), rejected.len());
        // The common case writes straight into the caller's vectors.
        let reason = match boundary::attempt(|| {
            self.decode_unguarded(values, parts, rejected)
                .map_err(failure)
        }) {
            Ok(()) => return Ok(()),
            Err(Failure::Stop(e)) => return Err(e),
            Err(Failure::Refused(reason)) => reason,
        };
        parts.truncate(first_part);
        rejected.truncate(first_rejected);
        let mut out = Decoded::default();
        let mut chunk = Ranges {
            decoder: self,
            values,
        };
        boundary::isolate(&mut chunk, 0..values.len(), reason, &mut out)?;
        out.finish(parts, rejected)
    }

    fn decode_unguarded(
        &mut self,
        values: &[Option<&[u8]>],
        parts: &mut Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<(), FramedError> {
        let mut rows = Vec::with_capacity(values.len());
        let batch = match self {
            ValueDecoder::Framed(d) => return d.decode(values, parts, rejected),
            ValueDecoder::Json(d) => d
                .decode(values, &mut rows, rejected)
                .map_err(FramedError::Json)?,
            ValueDecoder::Raw(d) => {
                d.decode(values, &mut rows, rejected)
                    .map_err(|source| FramedError::Arrow {
                        context: "decoder",
                        source,
                    })?
            }
        };
        parts.push(Part {
            schema_id: 0,
            batch,
            rows,
        });
        Ok(())
    }

    /// Fresh decoder state after a refusal or a panic.
    fn reset(&mut self) -> Result<(), FramedError> {
        match self {
            ValueDecoder::Json(d) => d.reset().map_err(|source| FramedError::Arrow {
                context: "JSON decoder",
                source,
            }),
            ValueDecoder::Raw(_) => Ok(()),
            ValueDecoder::Framed(d) => d.reset(),
        }
    }
}

/// Which errors the boundary bisects: only those that are a message's
/// fault (a refusal of the bytes); the registry, a shutdown or a bug stop.
fn failure(e: FramedError) -> Failure<FramedError> {
    use crate::fault::{Classify, Fault};
    match e.fault() {
        Fault::Message => Failure::Refused(e.to_string()),
        _ => Failure::Stop(e),
    }
}

/// A chunk of values, decoded a range at a time while isolating culprits.
struct Ranges<'a, 'v> {
    decoder: &'a mut ValueDecoder,
    values: &'a [Option<&'v [u8]>],
}

impl RangeDecoder for Ranges<'_, '_> {
    type Piece = Decoded;
    type Stop = FramedError;

    fn decode_range(&mut self, range: Range<usize>) -> Result<Decoded, Failure<FramedError>> {
        let mut out = Decoded::default();
        self.decoder
            .decode_unguarded(&self.values[range], &mut out.parts, &mut out.rejected)
            .map_err(failure)?;
        Ok(out)
    }

    fn reset(&mut self) -> Result<(), FramedError> {
        self.decoder.reset()
    }
}

/// Parts and rejections of a range of a chunk.
#[derive(Default)]
struct Decoded {
    parts: Vec<Part>,
    rejected: Rejections,
}

impl Piece for Decoded {
    fn append(&mut self, mut other: Self, offset: usize) {
        for mut p in other.parts {
            for r in &mut p.rows {
                *r += offset;
            }
            self.parts.push(p);
        }
        self.rejected.merge_shifted(&mut other.rejected, offset);
    }

    fn reject(&mut self, index: usize, reason: String) {
        self.rejected
            .push(boundary::decode_rejection(index, reason));
    }
}

impl Decoded {
    /// Into the caller's vectors as one decode of the whole chunk would
    /// give them: one part per schema id (in order of first appearance,
    /// rows ascending, as the ranges came in message order), rejections in
    /// message order.
    fn finish(
        mut self,
        parts: &mut Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<(), FramedError> {
        rejected.append(&mut self.rejected);
        let mut merged: Vec<(u32, Vec<RecordBatch>, Vec<usize>)> = Vec::new();
        for p in self.parts {
            match merged.iter_mut().find(|(id, _, _)| *id == p.schema_id) {
                Some((_, batches, rows)) => {
                    batches.push(p.batch);
                    rows.extend(p.rows);
                }
                None => merged.push((p.schema_id, vec![p.batch], p.rows)),
            }
        }
        for (schema_id, mut batches, rows) in merged {
            let batch = match batches.len() {
                1 => batches.swap_remove(0),
                _ => arrow::compute::concat_batches(&batches[0].schema(), &batches).map_err(
                    |source| FramedError::Arrow {
                        context: "joining decoded ranges",
                        source,
                    },
                )?,
            };
            parts.push(Part {
                schema_id,
                batch,
                rows,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::RegistryConfig;
    use crate::decode::{FramedDecoder, FramedKind};
    use crate::observability::Metrics;
    use crate::registry::mock::MockRegistry;
    use crate::registry::{frame, SchemaRegistry};

    /// An oversized value among messages the framed decoder rejects (and
    /// sorts) keeps its own index, and so do they.
    #[test]
    fn oversized_values_keep_their_index_beside_other_rejections() {
        let mock = MockRegistry::start();
        let schema = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;
        let id = mock.register("t-value", "AVRO", schema, &[]);
        // The decoder blocks on the handle: a runtime with its own worker.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let registry = SchemaRegistry::new(&RegistryConfig::new(mock.url())).unwrap();
        let framed = FramedDecoder::new(
            FramedKind::Avro,
            registry,
            runtime.handle().clone(),
            (Duration::from_millis(10), Duration::from_millis(10)),
            crate::fault::Shutdown::new(),
            Arc::new(Metrics::new()),
        );
        let mut decoder = ValueDecoder::Framed(Box::new(framed));
        let good = frame(id, &[2]);
        let big = frame(id, &[0; 64]);
        let bad_magic = [1u8, 0, 0, 0, 1, 2];
        let values = [
            Some(&good[..]),
            None,
            Some(&big[..]),
            Some(&bad_magic[..]),
            Some(&good[..]),
        ];
        let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
        decoder
            .decode(&values, 16, &mut parts, &mut rejected)
            .unwrap();
        let got: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, 1);
        assert!(got[0].1.contains("tombstone"), "{got:?}");
        assert_eq!(got[1].0, 2);
        assert!(got[1].1.contains("max_value_bytes"), "{got:?}");
        assert_eq!(got[2].0, 3);
        assert!(got[2].1.contains("magic"), "{got:?}");
        let rows: Vec<usize> = parts.iter().flat_map(|p| p.rows.clone()).collect();
        assert_eq!(rows, [0, 4]);
    }
}
