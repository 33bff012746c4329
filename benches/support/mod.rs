//! What the benches share: the events they feed inlet.
// Each bench uses part of this module.
#![allow(dead_code)]

// The tests' Avro encoder, written from the spec; the payload writer
// below uses its varint and writes the rest directly (no `Datum`s).
#[path = "../../tests/common/avro.rs"]
mod avro;

/// Writes the benches' JSON event `id` (about 190 bytes) into `out`.
pub(crate) fn payload(id: u64, out: &mut String) {
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
pub(crate) const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"bench","fields":[
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

/// The values of event `id` (of [`avro_payload`] and the Protobuf bench).
pub(crate) struct EventFields {
    pub user: String,
    pub action: &'static str,
    pub amount: f64,
    pub event_time_us: i64,
    pub country: &'static str,
    pub session: String,
    pub page: String,
    pub user_agent: &'static str,
    pub referrer: Option<&'static str>,
}

/// Event `id`'s values.
pub(crate) fn event_fields(id: u64) -> EventFields {
    EventFields {
        user: format!("user-{:05}", id % 50_000),
        action: ["view", "click", "purchase", "refund"][(id % 4) as usize],
        amount: (id % 500) as f64 + (id % 100) as f64 / 100.0,
        event_time_us: 1_714_564_800_000_000 + (id as i64 % 3_600_000) * 1000,
        country: ["DE", "FR", "US", "JP", "BR"][(id % 5) as usize],
        session: format!("s-{:08x}", id.wrapping_mul(2_654_435_761) & 0xffff_ffff),
        page: format!("/catalog/item/{:06}?ref=campaign", id % 100_000),
        user_agent: [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
        ][(id % 2) as usize],
        referrer: (id % 3 != 0).then_some("https://www.example.com/search?q=shoes"),
    }
}

/// [`AVRO_SCHEMA`] as a `.proto` file (the Protobuf bench's schema).
pub(crate) const PROTO_SCHEMA: &str = r#"syntax = "proto3";
package bench;
import "google/protobuf/timestamp.proto";
message Event {
  int64 id = 1;
  string user = 2;
  string action = 3;
  double amount = 4;
  google.protobuf.Timestamp event_time = 5;
  optional string country = 6;
  string session = 7;
  string page = 8;
  string user_agent = 9;
  optional string referrer = 10;
}
"#;

/// Writes event `id` under [`AVRO_SCHEMA`] in the Confluent wire format
/// (magic 0, the 4-byte big-endian schema id, the Avro binary) into `out`;
/// about 200 bytes.
pub(crate) fn avro_payload(id: u64, schema_id: u32, out: &mut Vec<u8>) {
    let e = event_fields(id);
    out.clear();
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    avro::long(out, id as i64);
    avro_str(out, &e.user);
    avro_str(out, e.action);
    out.extend_from_slice(&e.amount.to_le_bytes());
    avro::long(out, e.event_time_us);
    avro::long(out, 1); // union branch 1: string
    avro_str(out, e.country);
    avro_str(out, &e.session);
    avro_str(out, &e.page);
    avro_str(out, e.user_agent);
    match e.referrer {
        None => avro::long(out, 0), // null
        Some(r) => {
            avro::long(out, 1);
            avro_str(out, r);
        }
    }
}
