//! Confluent-framed Avro straight into Arrow with arrow-avro's decoder: no
//! `apache_avro::Value` per message.
//!
//! One arrow-avro decoder per writer schema id. A chunk's messages of one id
//! are fed to its decoder one by one, each checked to be exactly one complete
//! record; a message that is not (truncated, trailing bytes, a bad union
//! branch) is rejected. After a failure the decoder may hold half a record,
//! so it is rebuilt and the good messages since the last failure are fed
//! again; each failure therefore costs at most the messages before it, and a
//! chunk full of poison pills stays linear.
//!
//! Some checks of arrow-avro run only when a batch is built (strings are
//! validated as UTF-8 then): they refuse the whole chunk, as
//! [`AvroError::Refused`], and the panic boundary (`boundary.rs`) finds the
//! message at fault.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use super::MAX_CHUNK;
use crate::record::{Rejection, Rejections, Stage};

/// A writer schema arrow-avro can decode, with its decoder.
struct Writer {
    schema: String,
    arrow: SchemaRef,
    decoder: Decoder,
}

fn build(id: u32, schema: &str) -> Result<Decoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), AvroSchema::new(schema.to_string()))
        .map_err(|e| e.to_string())?;
    ReaderBuilder::new()
        .with_batch_size(MAX_CHUNK)
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(id))
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// Why a chunk of Avro messages was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// arrow-avro refused the chunk's bytes as a whole (a check made when
    /// the batch is built, such as UTF-8): some message in it is at fault.
    #[error("undecodable Avro body: {0}")]
    Refused(String),
    /// arrow-avro refused the chunk's bytes when building the batch.
    #[error("undecodable Avro body: {0}")]
    Flush(#[source] arrow_avro::errors::AvroError),
    /// inlet's own bug (a schema not added, a chunk too long).
    #[error("Avro decoder: {0}")]
    Internal(String),
    /// Joining the batches of a chunk failed (a bug).
    #[error("Avro decoder: {0}")]
    Concat(#[source] arrow::error::ArrowError),
}

impl crate::fault::Classify for AvroError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            AvroError::Refused(_) | AvroError::Flush(_) => crate::fault::Fault::Message,
            AvroError::Internal(_) | AvroError::Concat(_) => crate::fault::Fault::Internal,
        }
    }
}

/// Decodes Confluent-framed Avro values, one writer schema at a time.
#[derive(Default)]
pub struct AvroDecoder {
    writers: HashMap<u32, Writer>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("writer_schemas", &self.writers.len())
            .finish()
    }
}

impl AvroDecoder {
    /// An empty decoder; writer schemas are added as their ids show up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether writer schema `id` is known.
    pub fn has(&self, id: u32) -> bool {
        self.writers.contains_key(&id)
    }

    /// Adds writer schema `id` (one self-contained Avro schema document) and
    /// returns the Arrow schema its records decode to. An error means
    /// arrow-avro cannot read records of this schema: they are rejected.
    pub fn add_schema(&mut self, id: u32, schema: &str) -> Result<SchemaRef, String> {
        let decoder = build(id, schema)?;
        let arrow = decoder.schema();
        self.writers.insert(
            id,
            Writer {
                schema: schema.to_string(),
                arrow: arrow.clone(),
                decoder,
            },
        );
        Ok(arrow)
    }

    /// Rebuilds every writer's decoder: after a refusal or a panic one may
    /// hold half a record.
    pub fn reset(&mut self) -> Result<(), AvroError> {
        for (id, w) in &mut self.writers {
            w.decoder = build(*id, &w.schema).map_err(AvroError::Internal)?;
        }
        Ok(())
    }

    /// The Arrow schema records of writer schema `id` decode to.
    pub fn arrow_schema(&self, id: u32) -> Option<&SchemaRef> {
        self.writers.get(&id).map(|w| &w.arrow)
    }

    /// Decodes `messages` (message index, whole framed value) that all carry
    /// writer schema `id`. Returns one batch in that schema's Arrow form with
    /// a row per message pushed to `good` (in order); the others go to
    /// `rejected` at the decode stage. After an error, call
    /// [`AvroDecoder::reset`] before decoding again.
    pub fn decode(
        &mut self,
        id: u32,
        messages: &[(usize, &[u8])],
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, AvroError> {
        let w = self
            .writers
            .get_mut(&id)
            .ok_or_else(|| AvroError::Internal(format!("writer schema {id} was not added")))?;
        if messages.len() > MAX_CHUNK {
            return Err(AvroError::Internal(format!(
                "chunk of {} messages exceeds {MAX_CHUNK}",
                messages.len()
            )));
        }
        let mut done: Vec<RecordBatch> = Vec::new();
        // Good messages fed since the last failure (indices into `messages`).
        let mut since_failure: Vec<usize> = Vec::new();
        let first_good = good.len();
        for (pos, (index, bytes)) in messages.iter().enumerate() {
            match push_one(&mut w.decoder, bytes) {
                Ok(()) => {
                    since_failure.push(pos);
                    good.push(*index);
                }
                Err(reason) => {
                    rejected.push(Rejection::new(*index, Stage::Decode, reason));
                    // Half a record may be in the builders: start over with
                    // the good ones since the last failure, and set them aside.
                    w.decoder = build(id, &w.schema).map_err(AvroError::Internal)?;
                    for &p in &since_failure {
                        push_one(&mut w.decoder, messages[p].1).map_err(AvroError::Refused)?;
                    }
                    if let Some(b) = w.decoder.flush().map_err(AvroError::Flush)? {
                        done.push(b);
                    }
                    since_failure.clear();
                }
            }
        }
        if let Some(b) = w.decoder.flush().map_err(AvroError::Flush)? {
            done.push(b);
        }
        debug_assert_eq!(
            done.iter().map(RecordBatch::num_rows).sum::<usize>(),
            good.len() - first_good
        );
        match done.len() {
            0 => Ok(RecordBatch::new_empty(w.arrow.clone())),
            1 => Ok(done
                .pop()
                .unwrap_or_else(|| RecordBatch::new_empty(w.arrow.clone()))),
            _ => arrow::compute::concat_batches(&w.arrow, &done).map_err(AvroError::Concat),
        }
    }
}

/// Feeds one framed message; it must be exactly one whole record.
fn push_one(decoder: &mut Decoder, bytes: &[u8]) -> Result<(), String> {
    super::boundary::test_panic(bytes);
    let before = decoder.capacity();
    let consumed = decoder
        .decode(bytes)
        .map_err(|e| format!("undecodable Avro body: {e}"))?;
    let rows = before - decoder.capacity();
    if rows == 0 {
        return Err(format!(
            "truncated Avro record: {} bytes end inside the record",
            bytes.len()
        ));
    }
    if rows > 1 || consumed != bytes.len() {
        return Err(format!(
            "{} bytes of garbage after the Avro record",
            bytes.len().saturating_sub(consumed)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::Int64Type;

    const SCHEMA: &str = r#"{"type":"record","name":"E","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;

    /// Avro zigzag varint.
    fn long(mut out: Vec<u8>, v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn record(id: u32, n: i64, name: &str) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&id.to_be_bytes());
        let mut v = long(v, n);
        v = long(v, name.len() as i64);
        v.extend_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn decodes_good_and_rejects_bad_records_in_one_chunk() {
        let mut d = AvroDecoder::new();
        let arrow = d.add_schema(7, SCHEMA).unwrap();
        assert_eq!(arrow.fields().len(), 2);
        let good1 = record(7, 1, "a");
        let mut truncated = record(7, 2, "bbbb");
        truncated.truncate(truncated.len() - 2);
        let mut trailing = record(7, 3, "c");
        trailing.extend_from_slice(&[0, 0, 0, 0, 7, 2, 2, b'x']);
        let good2 = record(7, 4, "d");
        let msgs: Vec<(usize, &[u8])> =
            vec![(0, &good1), (1, &truncated), (2, &trailing), (3, &good2)];
        let (mut good, mut rejected) = (Vec::new(), Rejections::new());
        let batch = d.decode(7, &msgs, &mut good, &mut rejected).unwrap();
        assert_eq!(good, vec![0, 3]);
        assert_eq!(
            rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(rejected[0].reason.contains("truncated"), "{rejected:?}");
        assert!(rejected[1].reason.contains("garbage"), "{rejected:?}");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids, &Int64Array::from(vec![1, 4]));
        let names = batch.column(1).as_string::<i32>();
        assert_eq!(names, &StringArray::from(vec!["a", "d"]));
    }

    #[test]
    fn a_chunk_of_poison_pills_is_linear_and_keeps_the_good_ones() {
        let mut d = AvroDecoder::new();
        d.add_schema(1, SCHEMA).unwrap();
        let good = record(1, 5, "ok");
        let bad = [0u8, 0, 0, 0, 1, 0xff];
        let msgs: Vec<(usize, &[u8])> = (0..MAX_CHUNK)
            .map(|i| (i, if i % 2 == 0 { &good[..] } else { &bad[..] }))
            .collect();
        let (mut ok, mut rejected) = (Vec::new(), Rejections::new());
        let t = std::time::Instant::now();
        let batch = d.decode(1, &msgs, &mut ok, &mut rejected).unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(batch.num_rows(), MAX_CHUNK / 2);
        assert_eq!(rejected.len(), MAX_CHUNK / 2);
    }

    #[test]
    fn an_invalid_schema_is_an_error() {
        let mut d = AvroDecoder::new();
        assert!(d.add_schema(1, r#"{"type":"nonsense"}"#).is_err());
    }
}
