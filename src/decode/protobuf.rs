//! Confluent-framed Protobuf straight into Arrow: no dynamic message per
//! value.
//!
//! A framed value is the magic byte, the 4-byte schema id, the message-index
//! array (a zig-zag varint count, then that many zig-zag varint indexes: the
//! path to the message type among the file's top-level messages and their
//! nested ones; a lone `0` means the first message), then the message body.
//!
//! The registered `.proto` text and its references (other subjects, named by
//! import path) are compiled once per schema id with `protox`, the well-known
//! types (`google/protobuf/*.proto`) built in. Each message type a value
//! names gets a tree of Arrow builders mirroring the descriptor. A body is
//! walked twice: once to check it (wire types, lengths, UTF-8, nothing past
//! the end), so that a poison pill is rejected before any builder moved, then
//! to append it. Singular fields keep the last occurrence on the wire (and
//! embedded messages merge), as Protobuf parsers do.
//!
//! | Protobuf | Arrow |
//! | --- | --- |
//! | `double`, `float` | `Float64`, `Float32` |
//! | `int32`, `sint32`, `sfixed32` | `Int32` |
//! | `int64`, `sint64`, `sfixed64` | `Int64` |
//! | `uint32`, `fixed32` | `UInt32` (a `BIGINT` column) |
//! | `uint64`, `fixed64` | `UInt64` (a `DECIMAL(20,0)` column) |
//! | `bool`, `string`, `bytes` | `Boolean`, `Utf8`, `Binary` |
//! | enum | `Utf8`: the value's name; a number the schema does not name, as digits |
//! | message | `Struct` (null when absent) |
//! | `repeated T` | `List<T>` (empty when absent) |
//! | `map<K, V>` | `Map<K, V>` |
//! | `oneof` | each member its own nullable field; only the one set is non-null |
//! | `google.protobuf.Timestamp` | `Timestamp(µs, UTC)` |
//! | `google.protobuf.*Value` wrappers | the wrapped type, null when absent |
//!
//! A field without presence (proto3 scalars outside a `oneof` and without
//! `optional`) that is absent holds its default (0, `false`, `""`, the first
//! enum value); a field with presence that is absent is null. Unknown fields
//! are skipped. Recursive message types and groups cannot be columns: values
//! of such a schema are refused (stage `schema`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, RecordBatch, RecordBatchOptions,
    StringBuilder, StructArray, TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    DataType, Field as ArrowField, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
};
use prost_reflect::{FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use super::Part;
use crate::record::{Rejection, Rejections, Stage};
use crate::registry::{ResolvedSchema, HEADER_LEN};

/// Longest message-index array accepted (nesting depth of the message type).
const MAX_INDEX_DEPTH: usize = 16;
/// Deepest nesting of message types mapped to columns, and of unknown groups skipped.
const MAX_DEPTH: usize = 64;
/// Field numbers below this are looked up in a table, others by search.
const DENSE_NUMBERS: u32 = 256;
/// Largest valid field number.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

// ---------------------------------------------------------------- wire format

/// The wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Reads a varint at `pos` (before `end`); returns it and the position after.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: usize, end: usize) -> Result<(u64, usize), String> {
    let mut value = 0u64;
    let mut p = pos;
    for shift in (0..70).step_by(7) {
        if p >= end {
            return Err(format!("truncated varint at byte {pos}"));
        }
        let b = buf[p];
        p += 1;
        if shift == 63 && b > 1 {
            return Err(format!("varint at byte {pos} overflows 64 bits"));
        }
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok((value, p));
        }
    }
    Err(format!("varint at byte {pos} is longer than 10 bytes"))
}

/// Reads `n` little-endian bytes at `pos`.
#[inline]
fn read_fixed(buf: &[u8], pos: usize, end: usize, n: usize) -> Result<(u64, usize), String> {
    if end - pos < n {
        return Err(format!("truncated {}-bit value at byte {pos}", n * 8));
    }
    let mut v = 0u64;
    for (i, b) in buf[pos..pos + n].iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Ok((v, pos + n))
}

/// Reads a length prefix at `pos`; returns the (start, end) of the bytes.
#[inline]
fn read_len(buf: &[u8], pos: usize, end: usize) -> Result<(usize, usize), String> {
    let (len, p) = read_varint(buf, pos, end)?;
    if len > (end - p) as u64 {
        return Err(format!(
            "length {len} at byte {pos} runs past the end of its message ({} bytes left)",
            end - p
        ));
    }
    Ok((p, p + len as usize))
}

/// Reads a tag at `pos`: (field number, wire type, position after).
#[inline]
fn read_tag(buf: &[u8], pos: usize, end: usize) -> Result<(u32, u8, usize), String> {
    let (tag, p) = read_varint(buf, pos, end)?;
    let number = tag >> 3;
    if number == 0 || number > MAX_FIELD_NUMBER {
        return Err(format!("invalid field number {number} at byte {pos}"));
    }
    Ok((number as u32, (tag & 7) as u8, p))
}

/// Skips a field of wire type `wire` (number `number`) whose value starts at `pos`.
fn skip(
    buf: &[u8],
    pos: usize,
    end: usize,
    wire: u8,
    number: u32,
    depth: usize,
) -> Result<usize, String> {
    match wire {
        VARINT => read_varint(buf, pos, end).map(|(_, p)| p),
        FIXED64 => read_fixed(buf, pos, end, 8).map(|(_, p)| p),
        FIXED32 => read_fixed(buf, pos, end, 4).map(|(_, p)| p),
        LEN => read_len(buf, pos, end).map(|(_, e)| e),
        START_GROUP => {
            if depth >= MAX_DEPTH {
                return Err(format!("groups nested deeper than {MAX_DEPTH}"));
            }
            let mut p = pos;
            loop {
                let (n, w, q) = read_tag(buf, p, end)?;
                if w == END_GROUP {
                    if n != number {
                        return Err(format!("group {number} ended by the end of group {n}"));
                    }
                    return Ok(q);
                }
                p = skip(buf, q, end, w, n, depth + 1)?;
            }
        }
        END_GROUP => Err(format!("end of group {number} without its start")),
        w => Err(format!("invalid wire type {w} (field {number})")),
    }
}

/// The message-index array after the schema id: the path to the message type
/// (at most [`MAX_INDEX_DEPTH`] deep), without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexPath {
    len: u8,
    items: [u32; MAX_INDEX_DEPTH],
}

impl IndexPath {
    /// The indexes.
    pub(crate) fn as_slice(&self) -> &[u32] {
        &self.items[..usize::from(self.len)]
    }
}

impl std::fmt::Display for IndexPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

fn zigzag32(raw: u64) -> i64 {
    // Confluent writes the count and the indexes as zig-zag 32-bit varints.
    let n = raw as u32;
    i64::from(((n >> 1) as i32) ^ -((n & 1) as i32))
}

/// Parses the message-index array at the start of `body`; returns the path
/// and the number of bytes it took.
pub(crate) fn parse_message_index(body: &[u8]) -> Result<(IndexPath, usize), String> {
    let bad = |e: String| format!("bad message index: {e}");
    let (raw, mut pos) = read_varint(body, 0, body.len()).map_err(bad)?;
    let count = zigzag32(raw);
    let mut path = IndexPath {
        len: 1,
        items: [0; MAX_INDEX_DEPTH],
    };
    // A lone 0 is the common shorthand for [0].
    if count == 0 {
        return Ok((path, pos));
    }
    if count < 0 || count as usize > MAX_INDEX_DEPTH {
        return Err(format!(
            "bad message index: count {count} (expected 0 to {MAX_INDEX_DEPTH})"
        ));
    }
    path.len = count as u8;
    for slot in path.items.iter_mut().take(count as usize) {
        let (raw, p) = read_varint(body, pos, body.len()).map_err(bad)?;
        pos = p;
        let index = zigzag32(raw);
        if index < 0 {
            return Err(format!("bad message index: negative index {index}"));
        }
        *slot = index as u32;
    }
    Ok((path, pos))
}

// ---------------------------------------------------------------- the tree

/// How the wire value of a scalar field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum,
}

impl Scalar {
    fn of(kind: &Kind) -> Option<Scalar> {
        Some(match kind {
            Kind::Double => Scalar::Double,
            Kind::Float => Scalar::Float,
            Kind::Int32 => Scalar::Int32,
            Kind::Int64 => Scalar::Int64,
            Kind::Uint32 => Scalar::Uint32,
            Kind::Uint64 => Scalar::Uint64,
            Kind::Sint32 => Scalar::Sint32,
            Kind::Sint64 => Scalar::Sint64,
            Kind::Fixed32 => Scalar::Fixed32,
            Kind::Fixed64 => Scalar::Fixed64,
            Kind::Sfixed32 => Scalar::Sfixed32,
            Kind::Sfixed64 => Scalar::Sfixed64,
            Kind::Bool => Scalar::Bool,
            Kind::String => Scalar::String,
            Kind::Bytes => Scalar::Bytes,
            Kind::Enum(_) => Scalar::Enum,
            Kind::Message(_) => return None,
        })
    }

    fn wire(self) -> u8 {
        match self {
            Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => FIXED64,
            Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => FIXED32,
            Scalar::String | Scalar::Bytes => LEN,
            _ => VARINT,
        }
    }

    fn arrow(self) -> DataType {
        match self {
            Scalar::Double => DataType::Float64,
            Scalar::Float => DataType::Float32,
            Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => DataType::Int32,
            Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => DataType::Int64,
            Scalar::Uint32 | Scalar::Fixed32 => DataType::UInt32,
            Scalar::Uint64 | Scalar::Fixed64 => DataType::UInt64,
            Scalar::Bool => DataType::Boolean,
            Scalar::String | Scalar::Enum => DataType::Utf8,
            Scalar::Bytes => DataType::Binary,
        }
    }

    /// Reads one wire value at `pos` (of this scalar's wire type); returns
    /// the raw value (for varints and fixed), the (start, end) of the bytes
    /// (for strings and bytes) and the position after. Strings are checked
    /// to be UTF-8.
    #[inline]
    fn read(
        self,
        buf: &[u8],
        pos: usize,
        end: usize,
    ) -> Result<(u64, usize, usize, usize), String> {
        self.read_as(buf, pos, end, true)
    }

    /// [`Scalar::read`] without the UTF-8 check, for the second walk.
    #[inline]
    fn read_checked(
        self,
        buf: &[u8],
        pos: usize,
        end: usize,
    ) -> Result<(u64, usize, usize, usize), String> {
        self.read_as(buf, pos, end, false)
    }

    #[inline]
    fn read_as(
        self,
        buf: &[u8],
        pos: usize,
        end: usize,
        utf8: bool,
    ) -> Result<(u64, usize, usize, usize), String> {
        match self.wire() {
            VARINT => read_varint(buf, pos, end).map(|(v, p)| (v, 0, 0, p)),
            FIXED64 => read_fixed(buf, pos, end, 8).map(|(v, p)| (v, 0, 0, p)),
            FIXED32 => read_fixed(buf, pos, end, 4).map(|(v, p)| (v, 0, 0, p)),
            _ => {
                let (s, e) = read_len(buf, pos, end)?;
                if utf8 && self == Scalar::String && std::str::from_utf8(&buf[s..e]).is_err() {
                    return Err(format!("invalid UTF-8 in a string at byte {s}"));
                }
                Ok((0, s, e, e))
            }
        }
    }
}

/// Enum value names by number.
#[derive(Debug)]
struct EnumNames {
    names: Vec<(i32, String)>,
    default: String,
}

impl EnumNames {
    fn name(&self, n: i32) -> Option<&str> {
        self.names
            .binary_search_by_key(&n, |(k, _)| *k)
            .ok()
            .map(|i| self.names[i].1.as_str())
    }
}

/// The Arrow builder of a scalar, wrapper or timestamp column.
#[derive(Debug)]
enum Leaf {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Enum(StringBuilder, Arc<EnumNames>),
    Ts(TimestampMicrosecondBuilder),
}

impl Leaf {
    fn new(kind: Scalar, names: Option<Arc<EnumNames>>) -> Leaf {
        match kind {
            Scalar::Double => Leaf::F64(Float64Builder::new()),
            Scalar::Float => Leaf::F32(Float32Builder::new()),
            Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => Leaf::I32(Int32Builder::new()),
            Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => Leaf::I64(Int64Builder::new()),
            Scalar::Uint32 | Scalar::Fixed32 => Leaf::U32(UInt32Builder::new()),
            Scalar::Uint64 | Scalar::Fixed64 => Leaf::U64(UInt64Builder::new()),
            Scalar::Bool => Leaf::Bool(BooleanBuilder::new()),
            Scalar::String => Leaf::Str(StringBuilder::new()),
            Scalar::Bytes => Leaf::Bin(BinaryBuilder::new()),
            Scalar::Enum => Leaf::Enum(
                StringBuilder::new(),
                names.unwrap_or_else(|| {
                    Arc::new(EnumNames {
                        names: Vec::new(),
                        default: "0".into(),
                    })
                }),
            ),
        }
    }

    fn timestamp() -> Leaf {
        Leaf::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
    }

    fn len(&self) -> usize {
        match self {
            Leaf::Bool(b) => b.len(),
            Leaf::I32(b) => b.len(),
            Leaf::I64(b) => b.len(),
            Leaf::U32(b) => b.len(),
            Leaf::U64(b) => b.len(),
            Leaf::F32(b) => b.len(),
            Leaf::F64(b) => b.len(),
            Leaf::Str(b) | Leaf::Enum(b, _) => b.len(),
            Leaf::Bin(b) => b.len(),
            Leaf::Ts(b) => b.len(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Leaf::Bool(b) => b.append_null(),
            Leaf::I32(b) => b.append_null(),
            Leaf::I64(b) => b.append_null(),
            Leaf::U32(b) => b.append_null(),
            Leaf::U64(b) => b.append_null(),
            Leaf::F32(b) => b.append_null(),
            Leaf::F64(b) => b.append_null(),
            Leaf::Str(b) | Leaf::Enum(b, _) => b.append_null(),
            Leaf::Bin(b) => b.append_null(),
            Leaf::Ts(b) => b.append_null(),
        }
    }

    /// Appends the field's default (proto3 zero value).
    fn append_default(&mut self) {
        match self {
            Leaf::Bool(b) => b.append_value(false),
            Leaf::I32(b) => b.append_value(0),
            Leaf::I64(b) => b.append_value(0),
            Leaf::U32(b) => b.append_value(0),
            Leaf::U64(b) => b.append_value(0),
            Leaf::F32(b) => b.append_value(0.0),
            Leaf::F64(b) => b.append_value(0.0),
            Leaf::Str(b) => b.append_value(""),
            Leaf::Enum(b, names) => b.append_value(&names.default),
            Leaf::Bin(b) => b.append_value(b""),
            Leaf::Ts(b) => b.append_value(0),
        }
    }

    /// Appends a value read by [`Scalar::read`] (already checked).
    #[inline]
    fn append(&mut self, kind: Scalar, raw: u64, bytes: &[u8]) {
        match self {
            Leaf::Bool(b) => b.append_value(raw != 0),
            Leaf::I32(b) => b.append_value(match kind {
                Scalar::Sint32 => zigzag32(raw) as i32,
                _ => raw as i32,
            }),
            Leaf::I64(b) => b.append_value(match kind {
                Scalar::Sint64 => ((raw >> 1) as i64) ^ -((raw & 1) as i64),
                _ => raw as i64,
            }),
            Leaf::U32(b) => b.append_value(raw as u32),
            Leaf::U64(b) => b.append_value(raw),
            Leaf::F32(b) => b.append_value(f32::from_bits(raw as u32)),
            Leaf::F64(b) => b.append_value(f64::from_bits(raw)),
            // Checked to be UTF-8 by the first walk.
            Leaf::Str(b) => b.append_value(std::str::from_utf8(bytes).unwrap_or_default()),
            Leaf::Bin(b) => b.append_value(bytes),
            Leaf::Enum(b, names) => {
                let n = raw as i32;
                match names.name(n) {
                    Some(name) => b.append_value(name),
                    // An open enum's newer value: its number, as text
                    // (written in place, no allocation).
                    None => {
                        let _ = write!(b, "{n}");
                        b.append_value("");
                    }
                }
            }
            Leaf::Ts(b) => b.append_value(raw as i64),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Leaf::Bool(b) => Arc::new(b.finish()),
            Leaf::I32(b) => Arc::new(b.finish()),
            Leaf::I64(b) => Arc::new(b.finish()),
            Leaf::U32(b) => Arc::new(b.finish()),
            Leaf::U64(b) => Arc::new(b.finish()),
            Leaf::F32(b) => Arc::new(b.finish()),
            Leaf::F64(b) => Arc::new(b.finish()),
            Leaf::Str(b) | Leaf::Enum(b, _) => Arc::new(b.finish()),
            Leaf::Bin(b) => Arc::new(b.finish()),
            Leaf::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// What a field holds.
#[derive(Debug)]
enum Value {
    /// A scalar or enum.
    Scalar(Scalar, Leaf),
    /// A `google.protobuf.*Value` wrapper: an embedded message whose field 1
    /// is the value.
    Wrapper(Scalar, Leaf),
    /// `google.protobuf.Timestamp`: seconds (1) and nanos (2).
    Timestamp(Leaf),
    /// A message (for a map, its entry: key 1, value 2).
    Message(Box<Message>),
}

impl Value {
    fn len(&self) -> usize {
        match self {
            Value::Scalar(_, l) | Value::Wrapper(_, l) | Value::Timestamp(l) => l.len(),
            Value::Message(m) => m.len,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    Single,
    Repeated,
    Map,
}

/// One field of a message type, with its builder and the scratch of the
/// message being decoded.
#[derive(Debug)]
struct Field {
    number: u32,
    name: String,
    card: Card,
    /// Absent means null (else the default).
    presence: bool,
    /// Index of its `oneof` in [`Message::oneofs`].
    oneof: Option<usize>,
    value: Value,
    arrow: FieldRef,
    /// Item or entries field of a list or map.
    item: Option<FieldRef>,
    /// List offsets (repeated and map fields).
    offsets: Vec<i32>,
    // Scratch of the current message:
    seen: bool,
    raw: u64,
    start: usize,
    end: usize,
    /// Occurrences of an embedded message (merged in order).
    ranges: Vec<(usize, usize)>,
}

impl Field {
    fn clear(&mut self) {
        self.seen = false;
        self.ranges.clear();
    }
}

/// A message type: its fields, as a struct column.
#[derive(Debug)]
struct Message {
    name: String,
    fields: Vec<Field>,
    /// Position + 1 of the field of each small number (0: unknown).
    dense: Vec<u16>,
    /// (number, position) of larger numbers, sorted.
    sparse: Vec<(u32, usize)>,
    /// Positions of the members of each oneof.
    oneofs: Vec<Vec<usize>>,
    arrow: Fields,
    validity: NullBufferBuilder,
    len: usize,
}

impl Message {
    #[inline]
    fn position(&self, number: u32) -> Option<usize> {
        if number < DENSE_NUMBERS {
            match self.dense.get(number as usize) {
                Some(&p) if p > 0 => Some(usize::from(p) - 1),
                _ => None,
            }
        } else {
            self.sparse
                .binary_search_by_key(&number, |(n, _)| *n)
                .ok()
                .map(|i| self.sparse[i].1)
        }
    }
}

// ---------------------------------------------------------------- building

fn wrapper(name: &str) -> Option<Scalar> {
    Some(match name {
        "google.protobuf.DoubleValue" => Scalar::Double,
        "google.protobuf.FloatValue" => Scalar::Float,
        "google.protobuf.Int64Value" => Scalar::Int64,
        "google.protobuf.UInt64Value" => Scalar::Uint64,
        "google.protobuf.Int32Value" => Scalar::Int32,
        "google.protobuf.UInt32Value" => Scalar::Uint32,
        "google.protobuf.BoolValue" => Scalar::Bool,
        "google.protobuf.StringValue" => Scalar::String,
        "google.protobuf.BytesValue" => Scalar::Bytes,
        _ => return None,
    })
}

fn enum_names(kind: &Kind) -> Option<Arc<EnumNames>> {
    let Kind::Enum(e) = kind else { return None };
    let mut names: Vec<(i32, String)> = e
        .values()
        .map(|v| (v.number(), v.name().to_string()))
        .collect();
    // Aliases (allow_alias): the first name of a number wins.
    names.sort_by_key(|(n, _)| *n);
    names.dedup_by_key(|(n, _)| *n);
    let default = e.default_value().name().to_string();
    Some(Arc::new(EnumNames { names, default }))
}

/// The value of a field of `kind`, and its Arrow type. `stack` holds the
/// message types being built (a type inside itself cannot be a column).
fn build_value(kind: &Kind, stack: &mut Vec<String>) -> Result<(Value, DataType), String> {
    let m = match (kind, Scalar::of(kind)) {
        (Kind::Message(m), _) => m,
        (_, Some(s)) => return Ok((Value::Scalar(s, Leaf::new(s, enum_names(kind))), s.arrow())),
        (_, None) => return Err(format!("no column type for {kind:?}")),
    };
    if m.full_name() == "google.protobuf.Timestamp" {
        return Ok((
            Value::Timestamp(Leaf::timestamp()),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ));
    }
    if let Some(s) = wrapper(m.full_name()) {
        return Ok((Value::Wrapper(s, Leaf::new(s, None)), s.arrow()));
    }
    let message = build_message(m, stack)?;
    let dt = DataType::Struct(message.arrow.clone());
    Ok((Value::Message(Box::new(message)), dt))
}

fn build_field(fd: &FieldDescriptor, stack: &mut Vec<String>) -> Result<Field, String> {
    if fd.is_group() {
        return Err(format!(
            "field `{}` is a group, which inlet cannot map to a column",
            fd.full_name()
        ));
    }
    let kind = fd.kind();
    let (card, value, dt, item) = if fd.is_map() {
        let Kind::Message(entry) = &kind else {
            return Err(format!("map field `{}` has no entry type", fd.full_name()));
        };
        let mut message = build_message(entry, stack)?;
        // An absent key or scalar value is its default (also in proto2).
        for f in &mut message.fields {
            f.presence = false;
        }
        // The key never is null.
        let mut fields: Vec<ArrowField> =
            message.arrow.iter().map(|f| f.as_ref().clone()).collect();
        if let Some(k) = fields.first_mut() {
            *k = k.clone().with_nullable(false);
        }
        message.arrow = Fields::from(fields);
        let entries = Arc::new(ArrowField::new(
            "entries",
            DataType::Struct(message.arrow.clone()),
            false,
        ));
        let dt = DataType::Map(entries.clone(), false);
        (
            Card::Map,
            Value::Message(Box::new(message)),
            dt,
            Some(entries),
        )
    } else {
        let (value, dt) = build_value(&kind, stack)?;
        if fd.is_list() {
            let item = Arc::new(ArrowField::new("item", dt, false));
            (
                Card::Repeated,
                value,
                DataType::List(item.clone()),
                Some(item),
            )
        } else {
            (Card::Single, value, dt, None)
        }
    };
    Ok(Field {
        number: fd.number(),
        name: fd.name().to_string(),
        card,
        presence: card == Card::Single && fd.supports_presence(),
        oneof: None,
        value,
        arrow: Arc::new(ArrowField::new(fd.name(), dt, true)),
        item,
        offsets: if card == Card::Single {
            Vec::new()
        } else {
            vec![0]
        },
        seen: false,
        raw: 0,
        start: 0,
        end: 0,
        ranges: Vec::new(),
    })
}

fn build_message(desc: &MessageDescriptor, stack: &mut Vec<String>) -> Result<Message, String> {
    let name = desc.full_name().to_string();
    if stack.contains(&name) {
        return Err(format!(
            "message `{name}` contains itself ({} -> {name}); a recursive type cannot be a column",
            stack.join(" -> ")
        ));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(format!("messages nested deeper than {MAX_DEPTH}"));
    }
    stack.push(name.clone());
    let mut fields = Vec::new();
    let mut oneof_index: Vec<String> = Vec::new();
    let mut oneofs: Vec<Vec<usize>> = Vec::new();
    for fd in desc.fields() {
        let mut f = build_field(&fd, stack)?;
        if let Some(o) = fd.containing_oneof() {
            let slot = match oneof_index.iter().position(|n| n == o.name()) {
                Some(s) => s,
                None => {
                    oneof_index.push(o.name().to_string());
                    oneofs.push(Vec::new());
                    oneofs.len() - 1
                }
            };
            oneofs[slot].push(fields.len());
            f.oneof = Some(slot);
        }
        fields.push(f);
    }
    stack.pop();
    let mut dense = Vec::new();
    let mut sparse = Vec::new();
    for (pos, f) in fields.iter().enumerate() {
        if f.number < DENSE_NUMBERS {
            let n = f.number as usize;
            if dense.len() <= n {
                dense.resize(n + 1, 0);
            }
            dense[n] = (pos + 1) as u16;
        } else {
            sparse.push((f.number, pos));
        }
    }
    sparse.sort_unstable();
    let arrow = Fields::from(fields.iter().map(|f| f.arrow.clone()).collect::<Vec<_>>());
    Ok(Message {
        name,
        fields,
        dense,
        sparse,
        oneofs,
        arrow,
        validity: NullBufferBuilder::new(0),
        len: 0,
    })
}

// ---------------------------------------------------------------- checking

/// Checks that `buf[start..end]` is a message of type `msg`: every known
/// field with a wire type its type allows and a value that reads, strings in
/// UTF-8, unknown fields skippable, nothing past the end.
fn check(msg: &Message, buf: &[u8], start: usize, end: usize) -> Result<(), String> {
    let mut pos = start;
    while pos < end {
        let (number, wire, p) = read_tag(buf, pos, end)?;
        pos = match msg.position(number) {
            None => skip(buf, p, end, wire, number, 0)?,
            Some(i) => check_field(&msg.fields[i], buf, p, end, wire)
                .map_err(|e| format!("field `{}`: {e}", msg.fields[i].name))?,
        };
    }
    Ok(())
}

fn wire_name(wire: u8) -> &'static str {
    match wire {
        VARINT => "varint",
        FIXED64 => "64-bit",
        LEN => "length-delimited",
        START_GROUP => "group start",
        END_GROUP => "group end",
        FIXED32 => "32-bit",
        _ => "invalid",
    }
}

fn wrong_wire(got: u8, want: u8) -> String {
    format!(
        "wire type {got} ({}) where its type needs {want} ({})",
        wire_name(got),
        wire_name(want)
    )
}

fn check_field(f: &Field, buf: &[u8], pos: usize, end: usize, wire: u8) -> Result<usize, String> {
    match &f.value {
        Value::Scalar(kind, _) => {
            let want = kind.wire();
            if wire == want {
                return kind.read(buf, pos, end).map(|(_, _, _, p)| p);
            }
            if f.card == Card::Repeated && wire == LEN && want != LEN {
                // Packed: the values back to back.
                let (s, e) = read_len(buf, pos, end)?;
                let mut p = s;
                while p < e {
                    p = kind.read(buf, p, e)?.3;
                }
                return Ok(e);
            }
            Err(wrong_wire(wire, want))
        }
        Value::Wrapper(kind, _) => {
            let (s, e) = embedded(buf, pos, end, wire)?;
            check_wrapper(*kind, buf, s, e)?;
            Ok(e)
        }
        Value::Timestamp(_) => {
            let (s, e) = embedded(buf, pos, end, wire)?;
            let (seconds, nanos) = read_timestamp(buf, &[(s, e)])?;
            if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds)
                || !(0..1_000_000_000).contains(&nanos)
            {
                return Err(format!(
                    "google.protobuf.Timestamp out of range (seconds {seconds}, nanos {nanos})"
                ));
            }
            Ok(e)
        }
        Value::Message(m) => {
            let (s, e) = embedded(buf, pos, end, wire)?;
            check(m, buf, s, e)?;
            Ok(e)
        }
    }
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the Timestamp's range.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

fn embedded(buf: &[u8], pos: usize, end: usize, wire: u8) -> Result<(usize, usize), String> {
    if wire != LEN {
        return Err(wrong_wire(wire, LEN));
    }
    read_len(buf, pos, end)
}

fn check_wrapper(kind: Scalar, buf: &[u8], start: usize, end: usize) -> Result<(), String> {
    let mut pos = start;
    while pos < end {
        let (number, wire, p) = read_tag(buf, pos, end)?;
        pos = if number == 1 {
            if wire != kind.wire() {
                return Err(format!("wrapper value: {}", wrong_wire(wire, kind.wire())));
            }
            kind.read(buf, p, end)?.3
        } else {
            skip(buf, p, end, wire, number, 0)?
        };
    }
    Ok(())
}

/// Seconds and nanos of a Timestamp over its occurrences (last wins).
fn read_timestamp(buf: &[u8], ranges: &[(usize, usize)]) -> Result<(i64, i64), String> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    for &(start, end) in ranges {
        let mut pos = start;
        while pos < end {
            let (number, wire, p) = read_tag(buf, pos, end)?;
            pos = match (number, wire) {
                (1, VARINT) => {
                    let (v, q) = read_varint(buf, p, end)?;
                    seconds = v as i64;
                    q
                }
                (2, VARINT) => {
                    let (v, q) = read_varint(buf, p, end)?;
                    nanos = i64::from(v as i32);
                    q
                }
                (1 | 2, w) => return Err(format!("timestamp: {}", wrong_wire(w, VARINT))),
                (n, w) => skip(buf, p, end, w, n, 0)?,
            };
        }
    }
    Ok((seconds, nanos))
}

// ---------------------------------------------------------------- decoding

/// Appends the message in `ranges` of `buf` (checked) as one row of `msg`.
fn decode_message(msg: &mut Message, buf: &[u8], ranges: &[(usize, usize)]) {
    for f in &mut msg.fields {
        f.clear();
    }
    for &(start, end) in ranges {
        walk(msg, buf, start, end);
    }
    finish_row(msg, buf);
}

/// Records singular fields and appends repeated ones, in wire order.
fn walk(msg: &mut Message, buf: &[u8], start: usize, end: usize) {
    let mut pos = start;
    while pos < end {
        // Checked by `check`: an error here is a bug, and stops this walk.
        let Ok((number, wire, p)) = read_tag(buf, pos, end) else {
            return;
        };
        let next = match msg.position(number) {
            None => skip(buf, p, end, wire, number, 0),
            Some(i) => {
                if let Some(o) = msg.fields[i].oneof {
                    // A oneof member clears the others.
                    for &j in &msg.oneofs[o] {
                        if j != i {
                            msg.fields[j].clear();
                        }
                    }
                }
                take_field(&mut msg.fields[i], buf, p, end, wire)
            }
        };
        match next {
            Ok(q) => pos = q,
            Err(_) => return,
        }
    }
}

fn take_field(
    f: &mut Field,
    buf: &[u8],
    pos: usize,
    end: usize,
    wire: u8,
) -> Result<usize, String> {
    match (f.card, &mut f.value) {
        (Card::Single, Value::Scalar(kind, _)) => {
            let (raw, s, e, p) = kind.read_checked(buf, pos, end)?;
            (f.seen, f.raw, f.start, f.end) = (true, raw, s, e);
            Ok(p)
        }
        (Card::Single, _) => {
            let (s, e) = read_len(buf, pos, end)?;
            f.seen = true;
            f.ranges.push((s, e));
            Ok(e)
        }
        (_, Value::Scalar(kind, leaf)) => {
            let kind = *kind;
            if wire == kind.wire() {
                let (raw, s, e, p) = kind.read_checked(buf, pos, end)?;
                leaf.append(kind, raw, &buf[s..e]);
                return Ok(p);
            }
            let (s, e) = read_len(buf, pos, end)?;
            let mut p = s;
            while p < e {
                let (raw, _, _, q) = kind.read_checked(buf, p, e)?;
                leaf.append(kind, raw, &[]);
                p = q;
            }
            Ok(e)
        }
        (_, value) => {
            let (s, e) = read_len(buf, pos, end)?;
            append_embedded(value, buf, &[(s, e)]);
            Ok(e)
        }
    }
}

/// Appends an embedded message value (present) from its occurrences.
fn append_embedded(value: &mut Value, buf: &[u8], ranges: &[(usize, usize)]) {
    match value {
        Value::Message(m) => decode_message(m, buf, ranges),
        Value::Timestamp(leaf) => match read_timestamp(buf, ranges) {
            Ok((seconds, nanos)) => match seconds
                .checked_mul(1_000_000)
                .and_then(|us| us.checked_add(nanos.div_euclid(1000)))
            {
                Some(us) => leaf.append(Scalar::Int64, us as u64, &[]),
                None => leaf.append_null(),
            },
            Err(_) => leaf.append_null(),
        },
        Value::Wrapper(kind, leaf) => {
            let mut last = None;
            for &(start, end) in ranges {
                let mut pos = start;
                while pos < end {
                    let Ok((number, wire, p)) = read_tag(buf, pos, end) else {
                        break;
                    };
                    let read = if number == 1 {
                        kind.read_checked(buf, p, end).map(|(raw, s, e, q)| {
                            last = Some((raw, s, e));
                            q
                        })
                    } else {
                        skip(buf, p, end, wire, number, 0)
                    };
                    match read {
                        Ok(q) => pos = q,
                        Err(_) => break,
                    }
                }
            }
            match last {
                Some((raw, s, e)) => leaf.append(*kind, raw, &buf[s..e]),
                None => leaf.append_default(),
            }
        }
        Value::Scalar(..) => {}
    }
}

/// Appends the recorded singular fields and closes the lists of one row.
fn finish_row(msg: &mut Message, buf: &[u8]) {
    for f in &mut msg.fields {
        match f.card {
            Card::Single => match &mut f.value {
                Value::Scalar(kind, leaf) => {
                    if f.seen {
                        leaf.append(*kind, f.raw, &buf[f.start..f.end]);
                    } else if f.presence {
                        leaf.append_null();
                    } else {
                        leaf.append_default();
                    }
                }
                value => {
                    if f.ranges.is_empty() {
                        append_null_value(value);
                    } else {
                        append_embedded(value, buf, &f.ranges);
                    }
                }
            },
            Card::Repeated | Card::Map => {
                f.offsets.push(f.value.len() as i32);
            }
        }
    }
    msg.validity.append_non_null();
    msg.len += 1;
}

fn append_null_value(value: &mut Value) {
    match value {
        Value::Scalar(_, l) | Value::Wrapper(_, l) | Value::Timestamp(l) => l.append_null(),
        Value::Message(m) => append_null_row(m),
    }
}

/// An absent message: a null struct, its children null or empty.
fn append_null_row(msg: &mut Message) {
    for f in &mut msg.fields {
        match f.card {
            Card::Single => append_null_value(&mut f.value),
            Card::Repeated | Card::Map => f.offsets.push(f.value.len() as i32),
        }
    }
    msg.validity.append_null();
    msg.len += 1;
}

// ---------------------------------------------------------------- finishing

fn finish_value(value: &mut Value) -> Result<ArrayRef, String> {
    match value {
        Value::Scalar(_, l) | Value::Wrapper(_, l) | Value::Timestamp(l) => Ok(l.finish()),
        Value::Message(m) => Ok(Arc::new(finish_struct(m)?)),
    }
}

fn finish_struct(msg: &mut Message) -> Result<StructArray, String> {
    let columns = finish_columns(msg)?;
    let nulls = msg.validity.finish();
    let len = std::mem::take(&mut msg.len);
    if msg.arrow.is_empty() {
        return Ok(StructArray::new_empty_fields(len, nulls));
    }
    StructArray::try_new(msg.arrow.clone(), columns, nulls)
        .map_err(|e| format!("struct `{}`: {e}", msg.name))
}

fn finish_columns(msg: &mut Message) -> Result<Vec<ArrayRef>, String> {
    let mut columns = Vec::with_capacity(msg.fields.len());
    let arrow = msg.arrow.clone();
    for (f, af) in msg.fields.iter_mut().zip(arrow.iter()) {
        let column: ArrayRef = match f.card {
            Card::Single => finish_value(&mut f.value)?,
            Card::Repeated | Card::Map => {
                let offsets = OffsetBuffer::new(std::mem::replace(&mut f.offsets, vec![0]).into());
                let item = f.item.clone().ok_or("list without item field")?;
                let values = finish_value(&mut f.value)?;
                if f.card == Card::Repeated {
                    Arc::new(
                        ListArray::try_new(item, offsets, values, None)
                            .map_err(|e| format!("list `{}`: {e}", f.name))?,
                    )
                } else {
                    let entries = values
                        .as_any()
                        .downcast_ref::<StructArray>()
                        .cloned()
                        .ok_or("map entries are not a struct")?;
                    Arc::new(
                        MapArray::try_new(item, offsets, entries, None, false)
                            .map_err(|e| format!("map `{}`: {e}", f.name))?,
                    )
                }
            }
        };
        debug_assert_eq!(column.data_type(), af.data_type());
        columns.push(column);
    }
    Ok(columns)
}

// ---------------------------------------------------------------- schemas

/// Resolves the imports of a registered schema: its references (by import
/// path, recursively), then the well-known types.
struct References {
    files: HashMap<String, String>,
}

impl protox::file::FileResolver for References {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.files.get(name) {
            Some(source) => protox::file::File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn collect_references(schema: &ResolvedSchema, files: &mut HashMap<String, String>) {
    for (reference, target) in &schema.references {
        if !files.contains_key(&reference.name) {
            files.insert(reference.name.clone(), target.schema.clone());
            collect_references(target, files);
        }
    }
}

/// Compiles a registered Protobuf schema (with its references) into the
/// descriptor of its file.
pub fn compile_schema(schema: &ResolvedSchema) -> Result<FileDescriptor, String> {
    // A name no import can take.
    let main = format!("<schema id {}>.proto", schema.id);
    let mut files = HashMap::new();
    collect_references(schema, &mut files);
    files.insert(main.clone(), schema.schema.clone());
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(References { files });
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(&main)
        .map_err(|e| format!("Protobuf schema does not compile: {e}"))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(&main)
        .ok_or_else(|| "compiled Protobuf schema has no file".to_string())
}

/// The message type a message-index path names in `file`.
fn resolve(file: &FileDescriptor, path: &IndexPath) -> Result<MessageDescriptor, String> {
    let items = path.as_slice();
    let miss = |level: usize, count: usize| {
        format!(
            "bad message index {path}: index {} at depth {level} names none of the {count} messages there",
            items[level]
        )
    };
    let top: Vec<MessageDescriptor> = file.messages().collect();
    let mut m = top
        .get(items[0] as usize)
        .cloned()
        .ok_or_else(|| miss(0, top.len()))?;
    for (level, &i) in items.iter().enumerate().skip(1) {
        let children: Vec<MessageDescriptor> = m.child_messages().collect();
        m = children
            .get(i as usize)
            .cloned()
            .ok_or_else(|| miss(level, children.len()))?;
    }
    Ok(m)
}

/// The Arrow schema values of message type `desc` decode to.
pub fn message_arrow_schema(desc: &MessageDescriptor) -> Result<SchemaRef, String> {
    let m = build_message(desc, &mut Vec::new())?;
    Ok(Arc::new(Schema::new(m.arrow)))
}

/// The Arrow schema of message `name` (fully qualified) of a registered
/// schema, or of its first message: the shape of a table created from it.
pub fn protobuf_arrow_schema(
    schema: &ResolvedSchema,
    name: Option<&str>,
) -> Result<SchemaRef, String> {
    let file = compile_schema(schema)?;
    let desc = match name {
        Some(n) => file
            .parent_pool()
            .get_message_by_name(n)
            .filter(|m| m.parent_file().name() == file.name())
            .ok_or_else(|| {
                format!(
                    "schema id {} has no message `{n}`; it has {}",
                    schema.id,
                    file.messages()
                        .map(|m| m.full_name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None => file
            .messages()
            .next()
            .ok_or_else(|| format!("schema id {} defines no message", schema.id))?,
    };
    message_arrow_schema(&desc)
}

// ---------------------------------------------------------------- decoder

/// A message type of a writer schema, ready to decode.
struct Root {
    message: Message,
    schema: SchemaRef,
}

impl Root {
    fn finish(&mut self, rows: usize) -> Result<RecordBatch, String> {
        let columns = finish_columns(&mut self.message)?;
        self.message.len = 0;
        let _ = self.message.validity.finish();
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| format!("message `{}`: {e}", self.message.name))
    }
}

struct Entry {
    path: IndexPath,
    /// Ready, or why its values are refused (at the schema stage).
    target: Result<Root, String>,
    /// This chunk's messages of the type: (position in the group, body start).
    pending: Vec<(usize, usize)>,
}

struct Writer {
    file: FileDescriptor,
    entries: Vec<Entry>,
}

impl Writer {
    /// The entry of `path`; an index naming no message is the value's fault
    /// (and not cached, so foreign bytes cannot grow the cache).
    fn entry(&mut self, path: IndexPath) -> Result<usize, String> {
        if let Some(i) = self.entries.iter().position(|e| e.path == path) {
            return Ok(i);
        }
        let desc = resolve(&self.file, &path)?;
        let target = build_message(&desc, &mut Vec::new()).map(|message| Root {
            schema: Arc::new(Schema::new(message.arrow.clone())),
            message,
        });
        self.entries.push(Entry {
            path,
            target,
            pending: Vec::new(),
        });
        Ok(self.entries.len() - 1)
    }
}

/// Decodes Confluent-framed Protobuf values, one writer schema at a time.
#[derive(Default)]
pub struct ProtobufDecoder {
    writers: HashMap<u32, Writer>,
}

impl std::fmt::Debug for ProtobufDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufDecoder")
            .field("writer_schemas", &self.writers.len())
            .finish()
    }
}

impl ProtobufDecoder {
    /// An empty decoder; writer schemas are added as their ids show up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds writer schema `id`. An error means the schema does not compile:
    /// its values are refused.
    pub fn add_schema(&mut self, id: u32, schema: &ResolvedSchema) -> Result<(), String> {
        let file = compile_schema(schema)?;
        self.writers.insert(
            id,
            Writer {
                file,
                entries: Vec::new(),
            },
        );
        Ok(())
    }

    /// Decodes `messages` (message index, whole framed value) that all carry
    /// writer schema `id`: one part per message type in them (almost always
    /// one), unusable values to `rejected`.
    pub fn decode(
        &mut self,
        id: u32,
        messages: &[(usize, &[u8])],
        parts: &mut Vec<Part>,
        rejected: &mut Rejections,
    ) -> Result<(), String> {
        let w = self
            .writers
            .get_mut(&id)
            .ok_or_else(|| format!("writer schema {id} was not added"))?;
        for e in &mut w.entries {
            e.pending.clear();
        }
        for (pos, (index, bytes)) in messages.iter().enumerate() {
            let body = bytes.get(HEADER_LEN..).unwrap_or_default();
            let entry =
                parse_message_index(body).and_then(|(path, used)| Ok((w.entry(path)?, used)));
            match entry {
                Ok((e, used)) => match &w.entries[e].target {
                    Ok(_) => w.entries[e].pending.push((pos, HEADER_LEN + used)),
                    Err(reason) => rejected.push(Rejection::new(
                        *index,
                        Stage::Schema,
                        format!("schema id {id}: {reason}"),
                    )),
                },
                Err(reason) => rejected.push(Rejection::new(
                    *index,
                    Stage::Decode,
                    format!("schema id {id}: {reason}"),
                )),
            }
        }
        for e in &mut w.entries {
            let Ok(root) = &mut e.target else { continue };
            if e.pending.is_empty() {
                continue;
            }
            let mut rows = Vec::with_capacity(e.pending.len());
            for &(pos, start) in &e.pending {
                let (index, bytes) = messages[pos];
                match check(&root.message, bytes, start, bytes.len()) {
                    Ok(()) => {
                        for f in &mut root.message.fields {
                            f.clear();
                        }
                        walk(&mut root.message, bytes, start, bytes.len());
                        finish_row(&mut root.message, bytes);
                        rows.push(index);
                    }
                    Err(reason) => rejected.push(Rejection::new(
                        index,
                        Stage::Decode,
                        format!(
                            "undecodable Protobuf body (message `{}`): {reason}",
                            root.message.name
                        ),
                    )),
                }
            }
            let batch = root.finish(rows.len())?;
            parts.push(Part {
                schema_id: id,
                batch,
                rows,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
