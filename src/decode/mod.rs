//! Turning Kafka messages into Arrow rows of a table: value decoding and the
//! Kafka metadata columns.

mod avro;
pub(crate) mod boundary;
mod framed;
mod json;
mod protobuf;
mod raw;
mod value;

/// The tests' Avro encoder, written from the spec (not by arrow-avro).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/avro.rs"]
pub(crate) mod avro_enc;
#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
pub(crate) mod tests;

pub use avro::{AvroDecoder, AvroError};
#[cfg(debug_assertions)]
#[doc(hidden)]
pub use boundary::TEST_PANIC_MARKER;
pub use framed::{FramedDecoder, FramedError, FramedKind};
pub use json::{JsonDecoder, MAX_CHUNK};

pub use protobuf::{compile_schema, message_arrow_schema, protobuf_arrow_schema, ProtobufDecoder};
pub use raw::RawDecoder;
pub use value::ValueDecoder;

use crate::record::{Rejections, Stage};

/// Decoded rows of one input schema (one writer schema id of a framed
/// format; id 0 for fixed-schema formats).
#[derive(Debug)]
pub struct Part {
    /// Schema Registry id, or 0.
    pub schema_id: u32,
    /// The rows, in that schema's Arrow form.
    pub batch: arrow::array::RecordBatch,
    /// The message index of each row, ascending.
    pub rows: Vec<usize>,
}

/// The value of message `index`, or `None` once it is rejected as a
/// tombstone (a message without a value): the one place the decoders check.
fn not_tombstone<'v>(
    index: usize,
    value: Option<&'v [u8]>,
    rejected: &mut Rejections,
) -> Option<&'v [u8]> {
    if value.is_none() {
        rejected.reject(index, Stage::Decode, "null value (tombstone)");
    }
    value
}
