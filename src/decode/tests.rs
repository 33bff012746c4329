//! The panic boundary at the decode level: a decoder that refuses a whole
//! chunk, or panics, costs only the messages at fault (rejected at the
//! decode stage with the decoder's error); the rest of the chunk decodes,
//! every message index exactly once, and the decoder is clean afterwards.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};

use super::avro_enc::Datum;
use super::*;
use crate::config::RegistryConfig;
use crate::fault::Shutdown;
use crate::observability::Metrics;
use crate::record::{Rejection, Rejections, Stage};
use crate::registry::mock::MockRegistry;
use crate::registry::SchemaRegistry;

/// A framed decoder against a mock registry, with the runtime it blocks on.
pub(crate) struct Framed {
    // Dropped before the runtime it holds a handle of.
    pub decoder: ValueDecoder,
    pub mock: MockRegistry,
    pub shutdown: Shutdown,
    _runtime: tokio::runtime::Runtime,
}

impl Framed {
    pub(crate) fn new(kind: FramedKind) -> Self {
        // Ids the mock does not hold are really unknown here: no grace, or
        // every fuzzed header with a random id would wait it out.
        Self::with_grace(kind, Duration::ZERO)
    }

    /// With `unknown_id_grace` = `grace`.
    pub(crate) fn with_grace(kind: FramedKind, grace: Duration) -> Self {
        let mock = MockRegistry::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = RegistryConfig::new(mock.url());
        config.unknown_id_grace = grace;
        let registry = SchemaRegistry::new(&config).unwrap();
        let shutdown = Shutdown::new();
        let framed = FramedDecoder::new(
            kind,
            registry,
            runtime.handle().clone(),
            (Duration::from_millis(10), Duration::from_millis(10)),
            shutdown.clone(),
            Arc::new(Metrics::new()),
        );
        Framed {
            decoder: ValueDecoder::Framed(Box::new(framed)),
            mock,
            shutdown,
            _runtime: runtime,
        }
    }
}

/// Every index of a chunk of `n` exactly once, in a row or a rejection;
/// rows ascending in each part and as many as the part's batch has;
/// rejections in message order.
pub(crate) fn assert_partition(n: usize, parts: &[Part], rejected: &[Rejection]) {
    let mut seen = vec![0u8; n];
    for p in parts {
        assert_eq!(
            p.batch.num_rows(),
            p.rows.len(),
            "rows of part {}",
            p.schema_id
        );
        assert!(p.rows.windows(2).all(|w| w[0] < w[1]), "{:?}", p.rows);
        for &r in &p.rows {
            seen[r] += 1;
        }
    }
    for r in rejected {
        seen[r.index] += 1;
        assert!(!r.reason.is_empty());
    }
    assert!(
        rejected.windows(2).all(|w| w[0].index < w[1].index),
        "{rejected:?}"
    );
    let wrong: Vec<(usize, u8)> = seen
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .map(|(i, &c)| (i, c))
        .collect();
    assert!(wrong.is_empty(), "(index, times seen) not once: {wrong:?}");
}

/// Decodes `values`, checks the partition, returns parts and rejections.
pub(crate) fn decode(
    d: &mut ValueDecoder,
    values: &[Option<&[u8]>],
    max_bytes: usize,
) -> (Vec<Part>, Rejections) {
    let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
    d.decode(values, max_bytes, &mut parts, &mut rejected)
        .expect("no message's bytes stop decoding");
    assert_partition(values.len(), &parts, &rejected);
    (parts, rejected)
}

fn rejected_at(rejected: &[Rejection]) -> Vec<usize> {
    rejected.iter().map(|r| r.index).collect()
}

fn rows(parts: &[Part]) -> Vec<usize> {
    parts.iter().flat_map(|p| p.rows.iter().copied()).collect()
}

/// Column `name` of every part, as i64s.
fn ids(parts: &[Part], name: &str) -> Vec<i64> {
    parts
        .iter()
        .flat_map(|p| {
            let c = p.batch.column_by_name(name).unwrap();
            c.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

pub(crate) const STRINGS_SCHEMA: &str = r#"{"type":"record","name":"S","fields":[
  {"name":"id","type":"long"},
  {"name":"name","type":"string"},
  {"name":"opt","type":["null","string"]},
  {"name":"tags","type":{"type":"map","values":"string"}},
  {"name":"list","type":{"type":"array","items":"string"}}]}"#;

/// A record of [`STRINGS_SCHEMA`] whose strings are `s` (raw bytes, so
/// they can be invalid UTF-8) in the field `which` (0 name, 1 opt, 2 map
/// key, 3 map value, 4 array item), valid text elsewhere.
pub(crate) fn strings_record(id: u32, n: i64, which: usize, s: &[u8]) -> Vec<u8> {
    let text = |k: usize| -> Vec<u8> {
        if k == which {
            s.to_vec()
        } else {
            format!("t{n}").into_bytes()
        }
    };
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    let raw = |out: &mut Vec<u8>, b: &[u8]| {
        super::avro_enc::long(out, b.len() as i64);
        out.extend_from_slice(b);
    };
    Datum::Long(n).encode(&mut out);
    raw(&mut out, &text(0));
    Datum::Long(1).encode(&mut out); // union branch: string
    raw(&mut out, &text(1));
    Datum::Long(1).encode(&mut out); // one map entry
    raw(&mut out, &text(2));
    raw(&mut out, &text(3));
    Datum::Long(0).encode(&mut out);
    Datum::Long(1).encode(&mut out); // one array item
    raw(&mut out, &text(4));
    Datum::Long(0).encode(&mut out);
    out
}

/// Invalid UTF-8 in every kind of Avro string arrow-avro reads (its check
/// runs when the batch is built, and refused the whole chunk; inlet then
/// stopped with an internal error): only those messages are rejected, at
/// the decode stage with arrow-avro's error, and the rest decode, the next
/// chunk too.
#[test]
fn invalid_utf8_in_avro_strings_costs_only_those_messages() {
    let mut f = Framed::new(FramedKind::Avro);
    let id = f.mock.register("t-value", "AVRO", STRINGS_SCHEMA, &[]);
    let bad_at = [3usize, 17, 18, 25, 39];
    let values: Vec<Vec<u8>> = (0..40)
        .map(|i| match bad_at.iter().position(|&b| b == i) {
            Some(k) => strings_record(id, i as i64, k, b"ok\xff\xfeok"),
            None => strings_record(id, i as i64, 9, b""),
        })
        .collect();
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(&v[..])).collect();
    let (parts, rejected) = decode(&mut f.decoder, &values, usize::MAX);
    assert_eq!(rejected_at(&rejected), bad_at, "{rejected:?}");
    for r in &rejected {
        assert_eq!(r.stage, Stage::Decode);
        assert!(r.reason.contains("UTF-8"), "{r:?}");
    }
    assert_eq!(parts.len(), 1, "one part for the one schema id");
    let want: Vec<i64> = (0..40)
        .filter(|i| !bad_at.contains(i))
        .map(|i| i as i64)
        .collect();
    assert_eq!(ids(&parts, "id"), want);
    let names = parts[0].batch.column_by_name("name").unwrap();
    assert_eq!(names.as_string::<i32>().value(0), "t0");
    // The decoder was rebuilt: the next chunk is whole.
    let good: Vec<Vec<u8>> = (100..110).map(|i| strings_record(id, i, 9, b"")).collect();
    let good: Vec<Option<&[u8]>> = good.iter().map(|v| Some(&v[..])).collect();
    let (parts, rejected) = decode(&mut f.decoder, &good, usize::MAX);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ids(&parts, "id"), (100..110).collect::<Vec<_>>());
}

/// A chunk with two schema ids, poison pills of both, framing errors and an
/// oversized value: indices stay right through the bisection, there is one
/// part per schema id with its rows in order.
#[test]
fn isolation_keeps_indices_across_schema_ids_and_oversized_values() {
    let mut f = Framed::new(FramedKind::Avro);
    let a = f.mock.register("t-value", "AVRO", STRINGS_SCHEMA, &[]);
    let b_schema = r#"{"type":"record","name":"B","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"}]}"#;
    let b = f.mock.register("u-value", "AVRO", b_schema, &[]);
    let b_record = |n: i64, s: &[u8]| {
        let mut v = vec![0u8];
        v.extend_from_slice(&b.to_be_bytes());
        Datum::Long(n).encode(&mut v);
        super::avro_enc::long(&mut v, s.len() as i64);
        v.extend_from_slice(s);
        v
    };
    let mut values: Vec<Option<Vec<u8>>> = Vec::new();
    let mut expect_bad = Vec::new();
    for i in 0..64i64 {
        let v = match i % 8 {
            1 if i % 16 == 1 => {
                expect_bad.push(i as usize);
                Some(strings_record(a, i, 0, b"\xc3\x28")) // invalid 2-byte sequence
            }
            2 => Some(b_record(i, b"fine")),
            3 if i == 11 => {
                expect_bad.push(i as usize);
                Some(b_record(i, b"\xe2\x82")) // truncated 3-byte sequence
            }
            5 if i == 13 => {
                expect_bad.push(i as usize);
                Some(vec![0u8; 200]) // oversized (max 100 bytes below)
            }
            6 if i == 30 => {
                expect_bad.push(i as usize);
                None // tombstone
            }
            7 if i == 47 => {
                expect_bad.push(i as usize);
                Some(vec![1, 2, 3]) // not framed
            }
            _ => Some(strings_record(a, i, 9, b"")),
        };
        values.push(v);
    }
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    let (parts, rejected) = decode(&mut f.decoder, &values, 100);
    assert_eq!(rejected_at(&rejected), expect_bad, "{rejected:?}");
    assert!(
        rejected[2].reason.contains("max_value_bytes"),
        "{rejected:?}"
    );
    assert_eq!(
        parts.iter().map(|p| p.schema_id).collect::<Vec<_>>(),
        [a, b],
        "one part per id, in order of first appearance"
    );
    let mut all = rows(&parts);
    all.sort();
    let want: Vec<usize> = (0..64).filter(|i| !expect_bad.contains(i)).collect();
    assert_eq!(all, want);
    // Rows and ids agree in each part.
    for p in &parts {
        let got = ids(std::slice::from_ref(p), "id");
        assert_eq!(got, p.rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
    }
}

/// A value ending in the test marker makes each decoder panic (debug builds):
/// the boundary catches it, rejects that message with `decoder panicked`,
/// and the rest of the chunk decodes, again in the next chunk.
fn panics_cost_one_message(d: &mut ValueDecoder, good: &dyn Fn(i64) -> Vec<u8>) {
    boundary::quiet_test_panics();
    for round in 0..2 {
        let mut values: Vec<Vec<u8>> = (0..12).map(good).collect();
        values[4].extend_from_slice(TEST_PANIC_MARKER);
        values[9].extend_from_slice(TEST_PANIC_MARKER);
        let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(&v[..])).collect();
        let (parts, rejected) = decode(d, &values, usize::MAX);
        assert_eq!(
            rejected_at(&rejected),
            [4, 9],
            "round {round}: {rejected:?}"
        );
        for r in &rejected {
            assert_eq!(r.stage, Stage::Decode);
            assert!(
                r.reason.starts_with("decoder panicked: test panic marker"),
                "{r:?}"
            );
        }
        let want: Vec<usize> = (0..12).filter(|i| ![4, 9].contains(i)).collect();
        assert_eq!(rows(&parts), want);
    }
}

fn json_value(n: i64) -> Vec<u8> {
    format!(r#"{{"id":{n}}}"#).into_bytes()
}

fn one_column(name: &str, ty: DataType) -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(name, ty, true)]))
}

#[test]
fn a_panicking_json_decoder_costs_one_message() {
    let mut d = ValueDecoder::Json(JsonDecoder::new(one_column("id", DataType::Int64)).unwrap());
    panics_cost_one_message(&mut d, &json_value);
}

#[test]
fn a_panicking_raw_decoder_costs_one_message() {
    for ty in [DataType::Utf8, DataType::Binary] {
        let mut d = ValueDecoder::Raw(RawDecoder::new(one_column("v", ty)).unwrap());
        panics_cost_one_message(&mut d, &|n| format!("v{n}").into_bytes());
    }
}

#[test]
fn a_panicking_avro_decoder_costs_one_message() {
    let mut f = Framed::new(FramedKind::Avro);
    let id = f.mock.register("t-value", "AVRO", STRINGS_SCHEMA, &[]);
    panics_cost_one_message(&mut f.decoder, &|n| strings_record(id, n, 9, b""));
}

#[test]
fn a_panicking_json_schema_decoder_costs_one_message() {
    let mut f = Framed::new(FramedKind::JsonSchema);
    let schema = r#"{"type":"object","properties":{"id":{"type":"integer"}}}"#;
    let id = f.mock.register("t-value", "JSON", schema, &[]);
    panics_cost_one_message(&mut f.decoder, &|n| {
        crate::registry::frame(id, &json_value(n))
    });
}

/// JSON Schema bodies that arrow-json refuses only when it builds the batch
/// (invalid UTF-8, a wrong type) beside a panic: each costs its message.
#[test]
fn json_schema_refusals_and_a_panic_in_one_chunk() {
    let mut f = Framed::new(FramedKind::JsonSchema);
    let schema =
        r#"{"type":"object","properties":{"id":{"type":"integer"},"s":{"type":"string"}}}"#;
    let id = f.mock.register("t-value", "JSON", schema, &[]);
    let mut values: Vec<Vec<u8>> = (0..10)
        .map(|n| crate::registry::frame(id, &json_value(n)))
        .collect();
    values[2] = crate::registry::frame(id, b"{\"id\":2,\"s\":\"\xff\"}");
    values[5] = crate::registry::frame(id, br#"{"id":"five"}"#);
    values[7].extend_from_slice(TEST_PANIC_MARKER);
    boundary::quiet_test_panics();
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(&v[..])).collect();
    let (parts, rejected) = decode(&mut f.decoder, &values, usize::MAX);
    assert_eq!(rejected_at(&rejected), [2, 5, 7], "{rejected:?}");
    assert!(
        rejected[2].reason.contains("decoder panicked"),
        "{rejected:?}"
    );
    assert_eq!(ids(&parts, "id"), [0, 1, 3, 4, 6, 8, 9]);
}

/// An error that is no message's fault (here a shutdown while a schema is
/// still to be fetched) met while isolating a poison pill stops decoding:
/// nothing is rejected for it.
#[test]
fn a_stop_during_isolation_is_never_quarantine() {
    // Id `a` is known from a first chunk; id 4242 is not, and the registry
    // is given a grace to learn it: a wait, which the shutdown cuts short.
    let mut f = Framed::with_grace(FramedKind::Avro, Duration::from_secs(60));
    let a = f.mock.register("t-value", "AVRO", STRINGS_SCHEMA, &[]);
    let warm = strings_record(a, 0, 9, b"");
    decode(&mut f.decoder, &[Some(&warm)], usize::MAX);
    f.shutdown.trigger();
    let poison = strings_record(a, 1, 0, b"\xff");
    let new_id = crate::registry::frame(4242, &[2]);
    let values = [Some(&poison[..]), Some(&warm[..]), Some(&new_id[..])];
    let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
    let r = f
        .decoder
        .decode(&values, usize::MAX, &mut parts, &mut rejected);
    assert!(matches!(r, Err(FramedError::Shutdown)), "{r:?}");
    assert!(
        rejected.iter().all(|r| r.index != 2),
        "the unfetched id is not quarantined: {rejected:?}"
    );
}

/// Values arrow-avro refuses, some only when it builds the batch (an enum
/// index past the symbols, invalid UTF-8 in a map key) and so for the whole
/// chunk, others at once (a UUID that is not one): each costs its own
/// message. (A decimal wider than its precision is not refused by
/// arrow-avro: it decodes.)
#[test]
fn every_arrow_avro_refusal_costs_only_its_message() {
    let schema = r#"{"type":"record","name":"K","fields":[
      {"name":"id","type":"long"},
      {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}},
      {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}},
      {"name":"u","type":{"type":"string","logicalType":"uuid"}},
      {"name":"m","type":{"type":"map","values":"long"}}]}"#;
    let mut f = Framed::new(FramedKind::Avro);
    let id = f.mock.register("k-value", "AVRO", schema, &[]);
    let uuid = "6f1c2a3b-0d4e-4f5a-8b6c-7d8e9f0a1b2c";
    let record = |n: i64, e: i64, dec: &[u8], u: &str, key: &[u8]| {
        let mut v = crate::registry::frame(id, &[]);
        let raw = |v: &mut Vec<u8>, b: &[u8]| {
            super::avro_enc::long(v, b.len() as i64);
            v.extend_from_slice(b);
        };
        super::avro_enc::long(&mut v, n);
        super::avro_enc::long(&mut v, e);
        raw(&mut v, dec);
        raw(&mut v, u.as_bytes());
        super::avro_enc::long(&mut v, 1);
        raw(&mut v, key);
        super::avro_enc::long(&mut v, n);
        super::avro_enc::long(&mut v, 0);
        v
    };
    let bad: Vec<(usize, Vec<u8>)> = vec![
        (2, record(2, 7, &[0x01], uuid, b"k")), // enum index past the symbols
        (3, record(3, -1, &[0x01], uuid, b"k")), // negative enum index
        (8, record(8, 0, &[0x01], "not-a-uuid", b"k")),
        (9, record(9, 0, &[0x01], uuid, b"\xed\xa0\x80")), // a surrogate: invalid UTF-8
    ];
    let mut values: Vec<Vec<u8>> = (0..12)
        .map(|n| record(n, n % 3, &[0x01, 0x00], uuid, b"k"))
        .collect();
    for (i, v) in &bad {
        values[*i] = v.clone();
    }
    let values: Vec<Option<&[u8]>> = values.iter().map(|v| Some(&v[..])).collect();
    let (parts, rejected) = decode(&mut f.decoder, &values, usize::MAX);
    let want: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected_at(&rejected), want, "{rejected:#?}");
    assert!(rejected.iter().all(|r| r.stage == Stage::Decode));
    let landed: Vec<i64> = (0..12).filter(|i| !want.contains(&(*i as usize))).collect();
    assert_eq!(ids(&parts, "id"), landed);
}
