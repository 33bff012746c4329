//! JSON values straight into Arrow columns with arrow-json's tape decoder: no
//! `serde_json::Value` per message.
//!
//! Messages are fed one by one so that each is checked to hold exactly one
//! complete JSON value (the decoder itself would happily join a truncated
//! message with the next one). Values that do not fit the schema only show up
//! when the tape is turned into arrays; then, and only then, the chunk is
//! decoded again message by message to find the culprits. Good messages pay
//! nothing for the bad ones' existence.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};

use crate::config::DEFAULT_MAX_DEPTH;
use crate::record::{Rejection, Rejections, Stage};

/// Decodes JSON message values of one table into record batches.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    max_depth: usize,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("fields", &self.schema.fields().len())
            .finish()
    }
}

/// Whether `v` nests objects/arrays deeper than `max`. Almost every value
/// has fewer brackets than `max` in all: that count is a fast vectorised
/// pass, and only values with more are scanned for their real depth.
fn too_deep(v: &[u8], max: usize) -> bool {
    if opening_brackets(v) <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in v {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The number of `{` and `[` bytes in `v`. Counted in u8 lanes over blocks
/// of 255 bytes, which vectorises 16–32 bytes a step; a plain
/// `filter(..).count()` widens every byte to a u64 and was ~15% of JSON
/// decoding (benches/hot_path.rs, json_decode).
fn opening_brackets(v: &[u8]) -> usize {
    v.chunks(255)
        .map(|block| {
            // `{` is 0x7b and `[` is 0x5b: they differ only in bit 0x20.
            block
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{'))) as usize
        })
        .sum()
}

/// Most messages decoded at once. The tape decoder sizes its buffers by this
/// and stops at it, so it bounds a chunk.
pub const MAX_CHUNK: usize = 8192;

fn new_decoder(schema: &SchemaRef) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(schema.clone())
        .with_batch_size(MAX_CHUNK)
        .with_strict_mode(false)
        .build_decoder()
}

impl JsonDecoder {
    /// A decoder producing batches of `schema` (unknown JSON fields are ignored).
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        let decoder = new_decoder(&schema)?;
        Ok(JsonDecoder {
            schema,
            decoder,
            max_depth: DEFAULT_MAX_DEPTH,
        })
    }

    /// Rejects values nested deeper than `depth` objects and arrays.
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// The schema of the batches produced.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// A fresh tape decoder: after an error or a panic the old one may hold
    /// half a value.
    pub fn reset(&mut self) -> Result<(), ArrowError> {
        self.decoder = new_decoder(&self.schema)?;
        Ok(())
    }

    /// Decodes `values` (one entry per message; `None` is a tombstone).
    ///
    /// Returns one batch with a row per good message; `good` receives the
    /// indices of those messages, in order, and `rejected` the others. After
    /// an error, call [`JsonDecoder::reset`] before decoding again.
    pub fn decode(
        &mut self,
        values: &[Option<&[u8]>],
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, ArrowError> {
        good.clear();
        if values.len() > MAX_CHUNK {
            return Err(ArrowError::InvalidArgumentError(format!(
                "chunk of {} messages exceeds {MAX_CHUNK}",
                values.len()
            )));
        }
        for (i, v) in values.iter().enumerate() {
            let Some(v) = super::not_tombstone(i, *v, rejected) else {
                continue;
            };
            if too_deep(v, self.max_depth) {
                rejected.push(Rejection::new(
                    i,
                    Stage::Decode,
                    format!(
                        "JSON nested deeper than {} levels (tables.<name>.max_nesting_depth)",
                        self.max_depth
                    ),
                ));
                continue;
            }
            match push_one(&mut self.decoder, v) {
                Ok(()) => good.push(i),
                Err(reason) => {
                    rejected.push(Rejection::new(i, Stage::Decode, reason));
                    // The tape may hold half a value: start again with the good ones.
                    self.decoder = new_decoder(&self.schema)?;
                    for &j in good.iter() {
                        push_one(&mut self.decoder, values[j].unwrap_or_default())
                            .map_err(ArrowError::JsonError)?;
                    }
                }
            }
        }
        match self.decoder.flush() {
            Ok(batch) => Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()))),
            Err(_) => {
                self.decoder = new_decoder(&self.schema)?;
                self.isolate(values, good, rejected)
            }
        }
    }

    /// Slow path: decode each good message alone to find those that do not fit
    /// the schema, then decode the rest together.
    fn isolate(
        &mut self,
        values: &[Option<&[u8]>],
        good: &mut Vec<usize>,
        rejected: &mut Rejections,
    ) -> Result<RecordBatch, ArrowError> {
        let mut single = new_decoder(&self.schema)?;
        let mut fits = Vec::with_capacity(good.len());
        for &i in good.iter() {
            let v = values[i].unwrap_or_default();
            let result = push_one(&mut single, v)
                .map_err(ArrowError::JsonError)
                .and_then(|()| single.flush());
            match result {
                Ok(_) => fits.push(i),
                Err(e) => {
                    // The tape checks UTF-8 only when it is read: a decode
                    // failure, though it shows up here.
                    let reason = e.to_string();
                    let stage = if reason.contains("non-UTF-8") {
                        Stage::Decode
                    } else {
                        Stage::Schema
                    };
                    rejected.push(Rejection::new(i, stage, reason));
                    single = new_decoder(&self.schema)?;
                }
            }
        }
        rejected.sort();
        *good = fits;
        for &i in good.iter() {
            push_one(&mut self.decoder, values[i].unwrap_or_default())
                .map_err(ArrowError::JsonError)?;
        }
        Ok(self
            .decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }
}

/// Feeds one message; it must be exactly one complete JSON value.
fn push_one(decoder: &mut Decoder, value: &[u8]) -> Result<(), String> {
    super::boundary::test_panic(value);
    let before = decoder.len();
    let read = decoder.decode(value).map_err(|e| e.to_string())?;
    if read != value.len() {
        return Err(format!(
            "decoder stopped after {read} of {} bytes",
            value.len()
        ));
    }
    if decoder.has_partial_record() {
        return Err("truncated JSON: the value ends inside an object".to_string());
    }
    match decoder.len() - before {
        1 => Ok(()),
        0 => Err("empty value: no JSON object".to_string()),
        n => Err(format!("expected one JSON object, found {n}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("id", DataType::Int64, false),
        ]))
    }

    fn run(values: &[Option<&[u8]>]) -> (RecordBatch, Vec<usize>, Rejections) {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let (mut good, mut bad) = (Vec::new(), Rejections::new());
        let batch = d.decode(values, &mut good, &mut bad).unwrap();
        (batch, good, bad)
    }

    #[test]
    fn decodes_good_values() {
        let v: Vec<Option<&[u8]>> = vec![
            Some(br#"{"user":"a","amount":1.5,"event_time":"2024-01-01T00:00:00Z","id":1}"#),
            Some(br#"{"user":"b","id":2,"extra":{"x":[1,2]}}"#),
        ];
        let (b, good, bad) = run(&v);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(good, vec![0, 1]);
        assert!(bad.is_empty());
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 1.5);
        assert!(b.column(1).is_null(1));
    }

    #[test]
    fn rejects_each_bad_message_and_keeps_the_rest() {
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        let deep_obj = format!(r#"{{"id":7,"nested":{deep}}}"#);
        let v: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id":1}"#),
            Some(br#"{"id":2"#), // truncated
            Some(br#"{"id":3}"#),
            Some(b"not json"),                         // syntax
            None,                                      // tombstone
            Some(br#"{"id":"x"}"#),                    // wrong type
            Some(br#"{"user":"no id"}"#),              // null in NOT NULL
            Some(br#"{"id":4}{"id":5}"#),              // two objects
            Some(b""),                                 // empty
            Some(b"{\"id\":6,\"user\":\"\xff\xfe\"}"), // invalid UTF-8
            Some(deep_obj.as_bytes()),
            Some(br#"{"id":8}"#),
        ];
        let (b, good, bad) = run(&v);
        assert_eq!(good, vec![0, 2, 11]);
        assert_eq!(b.num_rows(), 3);
        let ids: Vec<i64> = b
            .column(3)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(ids, vec![1, 3, 8]);
        let bad_idx: Vec<usize> = bad.iter().map(|r| r.index).collect();
        assert_eq!(bad_idx, vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(bad[8].reason.contains("nested deeper than 64"), "{bad:?}");
        let stage = |i: usize| bad.iter().find(|r| r.index == i).unwrap().stage;
        assert_eq!(stage(9), Stage::Decode, "invalid UTF-8 is a decode failure");
        assert_eq!(stage(5), Stage::Schema, "a wrong type is a schema failure");
        assert!(bad.iter().all(|r| !r.reason.is_empty()));
    }

    #[test]
    fn counts_opening_brackets() {
        assert_eq!(opening_brackets(b""), 0);
        assert_eq!(opening_brackets(b"{[}]{{ ; [ { \x7b \x5b"), 8);
        // Neither the bytes one bit away nor the closing ones.
        assert_eq!(opening_brackets(b"}]\x3b\x1b\xfb\xdb\x7a\x5a"), 0);
        // Across the 255-byte blocks, with more than 255 in one block.
        let many = "[".repeat(1000) + &"x".repeat(333) + &"{".repeat(700);
        assert_eq!(opening_brackets(many.as_bytes()), 1700);
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 10).collect();
        let naive = all.iter().filter(|&&b| b == b'{' || b == b'[').count();
        assert_eq!(opening_brackets(&all), naive);
    }

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(too_deep(deep.as_bytes(), 64));
        let ok = "[".repeat(64) + &"]".repeat(64);
        assert!(!too_deep(ok.as_bytes(), 64));
        let in_string = format!(r#"{{"s":"{}"}}"#, "[".repeat(200));
        assert!(!too_deep(in_string.as_bytes(), 64));
        let escaped = format!(r#"{{"s":"\"{}"}}"#, "{".repeat(200));
        assert!(!too_deep(escaped.as_bytes(), 64));
        // Many siblings are not depth.
        let wide = format!("[{}]", vec!["[]"; 500].join(","));
        assert!(!too_deep(wide.as_bytes(), 64));
    }

    #[test]
    fn decoder_is_reusable_after_errors() {
        let mut d = JsonDecoder::new(schema()).unwrap();
        let (mut good, mut bad) = (Vec::new(), Rejections::new());
        d.decode(&[Some(br#"{"id":"x"}"#)], &mut good, &mut bad)
            .unwrap();
        bad.clear();
        let b = d
            .decode(&[Some(br#"{"id":9}"#)], &mut good, &mut bad)
            .unwrap();
        assert_eq!(b.num_rows(), 1);
        assert!(bad.is_empty());
    }
}
