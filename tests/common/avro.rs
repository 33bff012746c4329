//! A small Avro binary encoder for the tests, written from the spec, so that
//! test messages are not produced by the library under test.

/// An Avro datum, positionally matching its schema.
#[derive(Debug, Clone)]
pub(crate) enum Datum {
    /// `null`.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `int` (and `date`).
    Int(i32),
    /// `long` (and `timestamp-millis/micros`).
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `bytes` (and `decimal` on bytes: big-endian two's complement).
    Bytes(Vec<u8>),
    /// `string` (and `uuid`).
    Str(String),
    /// A record: its fields in schema order.
    Record(Vec<Datum>),
    /// A union: branch index and value.
    Union(usize, Box<Datum>),
    /// An enum symbol index.
    Enum(usize),
    /// An array.
    Array(Vec<Datum>),
    /// A map.
    Map(Vec<(String, Datum)>),
    /// A fixed.
    Fixed(Vec<u8>),
}

/// Avro `long`/`int`: zigzag, then a little-endian base-128 varint (also
/// used by the benches' payload writer).
pub(crate) fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

impl Datum {
    /// Appends the binary encoding.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Datum::Null => {}
            Datum::Bool(b) => out.push(u8::from(*b)),
            Datum::Int(i) => long(out, i64::from(*i)),
            Datum::Long(l) => long(out, *l),
            Datum::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
            Datum::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
            Datum::Bytes(b) => {
                long(out, b.len() as i64);
                out.extend_from_slice(b);
            }
            Datum::Str(s) => {
                long(out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
            }
            Datum::Record(fields) => fields.iter().for_each(|f| f.encode(out)),
            Datum::Union(i, v) => {
                long(out, *i as i64);
                v.encode(out);
            }
            Datum::Enum(i) => long(out, *i as i64),
            Datum::Array(items) => {
                if !items.is_empty() {
                    long(out, items.len() as i64);
                    items.iter().for_each(|d| d.encode(out));
                }
                long(out, 0);
            }
            Datum::Map(entries) => {
                if !entries.is_empty() {
                    long(out, entries.len() as i64);
                    for (k, v) in entries {
                        Datum::Str(k.clone()).encode(out);
                        v.encode(out);
                    }
                }
                long(out, 0);
            }
            Datum::Fixed(b) => out.extend_from_slice(b),
        }
    }

    /// The Confluent wire format of this datum under schema `id`.
    pub(crate) fn framed(&self, id: u32) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&id.to_be_bytes());
        self.encode(&mut out);
        out
    }
}

/// The Confluent frame of a JSON document under schema `id`.
pub(crate) fn framed_json(id: u32, json: &str) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}
