//! What the benches share: the events they feed inlet.
// Each bench uses part of this module.
#![allow(dead_code)]

// The tests' Avro encoder, written from the spec; the payload writer
// below uses its varint and writes the rest directly (no `Datum`s).
#[path = "../../tests/common/avro.rs"]
mod avro;

/// Writes the benches' JSON event `id` (about 190 bytes) into `out`.
pub fn payload(id: u64, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        r#"{{"id":{id},"user":"user-{:05}","action":"{}","amount":{}.{:02},"event_time":"2024-05-01T12:{:02}:{:02}.{:03}Z","country":"{}","session":"s-{:08x}","page":"/catalog/item/{:06}?ref=campaign"}}"#,
        id % 50_000,
        ["view", "click", "purchase", "refund"][(id % 4) as usize],
        id % 500,
        id % 100,
        id / 60 % 60,
        id % 60,
        id % 1000,
        ["DE", "FR", "US", "JP", "BR"][(id % 5) as usize],
        id.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        id % 100_000,
    );
}

/// The writer schema of [`avro_payload`]: the JSON event's fields plus a
/// user agent and a referrer, so that a record is about 200 bytes of Avro.
pub const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"bench","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":"string"},
  {"name":"action","type":"string"},
  {"name":"amount","type":"double"},
  {"name":"event_time","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"country","type":["null","string"],"default":null},
  {"name":"session","type":"string"},
  {"name":"page","type":"string"},
  {"name":"user_agent","type":"string"},
  {"name":"referrer","type":["null","string"],"default":null}
]}"#;

fn avro_str(out: &mut Vec<u8>, s: &str) {
    avro::long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Writes event `id` under [`AVRO_SCHEMA`] in the Confluent wire format
/// (magic 0, the 4-byte big-endian schema id, the Avro binary) into `out`;
/// about 200 bytes.
pub fn avro_payload(id: u64, schema_id: u32, out: &mut Vec<u8>) {
    out.clear();
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    avro::long(out, id as i64);
    avro_str(out, &format!("user-{:05}", id % 50_000));
    avro_str(
        out,
        ["view", "click", "purchase", "refund"][(id % 4) as usize],
    );
    out.extend_from_slice(&((id % 500) as f64 + (id % 100) as f64 / 100.0).to_le_bytes());
    avro::long(out, 1_714_564_800_000_000 + (id as i64 % 3_600_000) * 1000);
    avro::long(out, 1); // union branch 1: string
    avro_str(out, ["DE", "FR", "US", "JP", "BR"][(id % 5) as usize]);
    avro_str(
        out,
        &format!("s-{:08x}", id.wrapping_mul(2_654_435_761) & 0xffff_ffff),
    );
    avro_str(
        out,
        &format!("/catalog/item/{:06}?ref=campaign", id % 100_000),
    );
    avro_str(
        out,
        [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
        ][(id % 2) as usize],
    );
    if id % 3 == 0 {
        avro::long(out, 0); // null
    } else {
        avro::long(out, 1);
        avro_str(out, "https://www.example.com/search?q=shoes");
    }
}
