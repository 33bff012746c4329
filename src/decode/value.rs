//! The value decoder of a table, whatever the format.

use arrow::datatypes::SchemaRef;

use super::framed::{FramedDecoder, FramedError};
use super::{JsonDecoder, Part, RawDecoder, Rejection, Stage};

/// Decodes message values of one table into parts (one per input schema).
#[derive(Debug)]
pub enum ValueDecoder {
    /// Plain JSON into a fixed schema.
    Json(JsonDecoder),
    /// `bytes` / `string` into the one value column.
    Raw(RawDecoder),
    /// Confluent-framed Avro or JSON Schema.
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
        rejected: &mut Vec<Rejection>,
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
                rejected.push(Rejection::new(
                    i,
                    Stage::Decode,
                    format!(
                        "value of {} bytes exceeds tables.<name>.max_value_bytes ({max_bytes} bytes)",
                        v.len()
                    ),
                ));
            }
        }
        let subset: Vec<Option<&[u8]>> = kept.iter().map(|&i| values[i]).collect();
        let (first_part, first_rejected) = (parts.len(), rejected.len());
        self.decode_all(&subset, parts, rejected)?;
        for p in &mut parts[first_part..] {
            for r in &mut p.rows {
                *r = kept[*r];
            }
        }
        for r in &mut rejected[first_rejected..] {
            r.index = kept[r.index];
        }
        rejected.sort_by_key(|r| r.index);
        Ok(())
    }

    fn decode_all(
        &mut self,
        values: &[Option<&[u8]>],
        parts: &mut Vec<Part>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), FramedError> {
        let mut rows = Vec::with_capacity(values.len());
        let batch = match self {
            ValueDecoder::Framed(d) => return d.decode(values, parts, rejected),
            ValueDecoder::Json(d) => d.decode(values, &mut rows, rejected),
            ValueDecoder::Raw(d) => d.decode(values, &mut rows, rejected),
        }
        .map_err(|e| FramedError::Internal(format!("decoder: {e}")))?;
        parts.push(Part {
            schema_id: 0,
            batch,
            rows,
        });
        Ok(())
    }
}
