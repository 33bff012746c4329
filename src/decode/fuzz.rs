//! Fuzzing the decoders of foreign bytes on the stable toolchain, with
//! proptest: arbitrary bytes, and valid messages (from encoders of the
//! tests' own, not the decoders under test) mutated the way transport and
//! producers break them: flipped bits, truncation, splices of two messages,
//! inserted or overwritten bytes (huge and negative Avro lengths among them),
//! trailing copies.
//!
//! Inputs are decoded in chunks of [`CHUNK`], as the pipeline does, so that
//! the panic boundary's bisection runs on mixed chunks. The property, per
//! chunk: decoding returns (never an error for the messages' own bytes, never
//! a panic out of the boundary), every message is a row or a rejection
//! exactly once, and every message that was valid and left unmutated is a
//! row (a poison pill never costs its neighbours).
//!
//! The default run (part of `cargo nextest run`) is [`DEFAULT_INPUTS`]
//! inputs per target; `INLET_FUZZ_INPUTS` sets more (scripts/fuzz.sh) and
//! `INLET_FUZZ_SEED` replays one run. Inputs found to break the property are
//! kept as regression tests in `tests.rs`.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use super::avro_enc::{long, Datum};
use super::tests::{assert_partition, Framed};
use super::*;

/// Inputs per target in the default (CI) run.
pub(crate) const DEFAULT_INPUTS: usize = 100_000;
/// Messages per decoded chunk.
pub(crate) const CHUNK: usize = 256;
/// `max_value_bytes` of the fuzzed decoders.
const MAX_BYTES: usize = 4096;

/// One input: its bytes (`None`, a tombstone) and whether it is a valid
/// message that must become a row.
pub(crate) type Input = (Option<Vec<u8>>, bool);

/// How a valid message is broken.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Flip these bits (position as a fraction of the length, bit).
    FlipBits(Vec<(u16, u8)>),
    /// Cut at this fraction.
    Truncate(u16),
    /// Keep the head up to this fraction, then the other message's tail
    /// from its fraction.
    Splice(u16, u16),
    /// Insert bytes at this fraction.
    Insert(u16, Vec<u8>),
    /// Overwrite bytes from this fraction (Avro varints: huge, negative).
    Overwrite(u16, Vec<u8>),
    /// Append a copy of the message (trailing bytes).
    Duplicate,
}

fn at(frac: u16, len: usize) -> usize {
    (usize::from(frac) * len) >> 16
}

/// Applies `m` to `bytes[from..]` (the header before `from` is kept);
/// `other` is the message spliced in.
pub(crate) fn apply(bytes: &mut Vec<u8>, from: usize, m: &Mutation, other: &[u8]) {
    let body = bytes.len().saturating_sub(from);
    let pos = |f: u16| from + at(f, body);
    match m {
        Mutation::FlipBits(bits) => {
            for &(f, bit) in bits {
                if body > 0 {
                    let p = pos(f);
                    bytes[p] ^= 1 << (bit % 8);
                }
            }
        }
        Mutation::Truncate(f) => bytes.truncate(pos(*f)),
        Mutation::Splice(f, g) => {
            bytes.truncate(pos(*f));
            let tail = other.get(from.min(other.len())..).unwrap_or_default();
            bytes.extend_from_slice(&tail[at(*g, tail.len())..]);
        }
        Mutation::Insert(f, b) => {
            let p = pos(*f);
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Overwrite(f, b) => {
            let p = pos(*f);
            for (i, &x) in b.iter().enumerate() {
                match bytes.get_mut(p + i) {
                    Some(y) => *y = x,
                    None => bytes.push(x),
                }
            }
        }
        Mutation::Duplicate => {
            let copy = bytes[from.min(bytes.len())..].to_vec();
            bytes.extend_from_slice(&copy);
        }
    }
}

/// Avro `long`s a mutation may write: huge, negative, overlong.
fn varints() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<i64>().prop_map(|v| {
            let mut out = Vec::new();
            long(&mut out, v);
            out
        }),
        (-3i64..3).prop_map(|v| {
            let mut out = Vec::new();
            long(&mut out, v);
            out
        }),
        Just(vec![0xff; 10]),
        Just(vec![0x80; 12]),
        Just(vec![
            0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01
        ]),
    ]
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        5 => vec((any::<u16>(), 0u8..8), 1..4).prop_map(Mutation::FlipBits),
        1 => any::<u16>().prop_map(Mutation::Truncate),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
        1 => (any::<u16>(), vec(any::<u8>(), 1..8)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        2 => (any::<u16>(), varints()).prop_map(|(a, b)| Mutation::Overwrite(a, b)),
        1 => Just(Mutation::Duplicate),
    ]
}

/// Valid messages from `valid`, a third of them left valid and the others
/// mutated (keeping `header` bytes), arbitrary bytes behind `prefix`, and
/// tombstones.
pub(crate) fn inputs(
    valid: impl Strategy<Value = Vec<u8>> + Clone + 'static,
    header: usize,
    prefix: impl Strategy<Value = Vec<u8>> + 'static,
) -> impl Strategy<Value = Input> {
    let mutated = (valid.clone(), valid.clone(), vec(mutation(), 1..3)).prop_map(
        move |(mut bytes, other, ms)| {
            for m in &ms {
                apply(&mut bytes, header, m, &other);
            }
            (Some(bytes), false)
        },
    );
    let random = (prefix, vec(any::<u8>(), 0..48)).prop_map(|(mut p, tail)| {
        p.extend_from_slice(&tail);
        (Some(p), false)
    });
    prop_oneof![
        4 => valid.prop_map(|v| (Some(v), true)),
        7 => mutated,
        2 => random,
        1 => Just((None, false)),
    ]
}

/// The number of inputs per target of this run.
fn total_inputs() -> usize {
    std::env::var("INLET_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_INPUTS)
}

/// Runs `check` on chunks of [`CHUNK`] inputs drawn from `input` until the
/// run's inputs are used; `check` returns how many panics the boundary
/// caught in the chunk. Prints the figures (visible with --no-capture).
pub(crate) fn run<S: Strategy<Value = Input>>(
    target: &str,
    input: S,
    mut check: impl FnMut(&[Option<&[u8]>], &[bool]) -> Result<usize, TestCaseError>,
) {
    let total = total_inputs();
    let cases = total.div_ceil(CHUNK) as u32;
    // A new seed each run unless one is given, printed so that a failure
    // found in CI can be replayed.
    let seed: u64 = std::env::var("INLET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let config = Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        // A failing chunk of 256 shrinks slowly; a few hundred steps find
        // the culprit message well enough.
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let (chunks, panics) = (Cell::new(0usize), Cell::new(0usize));
    let decoding = Cell::new(std::time::Duration::ZERO);
    let check = RefCell::new(&mut check);
    let result = runner.run(&vec(input, CHUNK), |chunk| {
        let values: Vec<Option<&[u8]>> = chunk.iter().map(|(v, _)| v.as_deref()).collect();
        let valid: Vec<bool> = chunk.iter().map(|(_, ok)| *ok).collect();
        let t = Instant::now();
        let caught = (*check.borrow_mut())(&values, &valid)?;
        decoding.set(decoding.get() + t.elapsed());
        chunks.set(chunks.get() + 1);
        panics.set(panics.get() + caught);
        Ok(())
    });
    eprintln!(
        "fuzz {target} (INLET_FUZZ_SEED={seed}): {} inputs in {:.1?} ({:.1?} decoding), \
         {} panics caught by the boundary",
        chunks.get() * CHUNK,
        started.elapsed(),
        decoding.get(),
        panics.get()
    );
    if let Err(e) = result {
        panic!("fuzz {target} (replay with INLET_FUZZ_SEED={seed}): {e}");
    }
    assert!(chunks.get() * CHUNK >= total, "ran fewer inputs than asked");
}

/// The property for a value decoder: decoding returns, every index once,
/// valid messages are rows. Returns the panics caught.
fn check_value(
    d: &mut ValueDecoder,
    values: &[Option<&[u8]>],
    valid: &[bool],
) -> Result<usize, TestCaseError> {
    let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
    d.decode(values, MAX_BYTES, &mut parts, &mut rejected)
        .map_err(|e| TestCaseError::fail(format!("decoding stopped: {e}")))?;
    assert_partition(values.len(), &parts, &rejected);
    for r in &rejected {
        prop_assert!(
            !valid[r.index],
            "valid message {} rejected: {} ({:?})",
            r.index,
            r.reason,
            values[r.index]
        );
    }
    Ok(rejected
        .iter()
        .filter(|r| r.reason.starts_with("decoder panicked"))
        .count())
}

/// Short text of any characters.
pub(crate) fn text() -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect())
}

pub(crate) const FUZZ_AVRO_SCHEMA: &str = r#"{"type":"record","name":"F","fields":[
 {"name":"id","type":"long"},
 {"name":"i","type":"int"},
 {"name":"s","type":"string"},
 {"name":"b","type":"bytes"},
 {"name":"d","type":"double"},
 {"name":"f","type":"float"},
 {"name":"flag","type":"boolean"},
 {"name":"opt","type":["null","string"]},
 {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}},
 {"name":"fx","type":{"type":"fixed","name":"Fx","size":4}},
 {"name":"arr","type":{"type":"array","items":"long"}},
 {"name":"m","type":{"type":"map","values":"string"}},
 {"name":"rec","type":{"type":"record","name":"R","fields":[
   {"name":"x","type":["null","long"]},{"name":"y","type":"string"}]}},
 {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
 {"name":"dt","type":{"type":"int","logicalType":"date"}},
 {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
 {"name":"u","type":{"type":"string","logicalType":"uuid"}}]}"#;

/// A valid record of [`FUZZ_AVRO_SCHEMA`], framed with schema `id`.
pub(crate) fn avro_record(id: u32) -> impl Strategy<Value = Vec<u8>> + Clone {
    let head = (
        any::<i64>(),
        any::<i32>(),
        text(),
        vec(any::<u8>(), 0..6),
        any::<f64>(),
        any::<f32>(),
        any::<bool>(),
        proptest::option::of(text()),
        0usize..3,
        any::<[u8; 4]>(),
    );
    let tail = (
        vec(any::<i64>(), 0..4),
        vec((text(), text()), 0..3),
        (proptest::option::of(any::<i64>()), text()),
        any::<i64>(),
        any::<i32>(),
        // Fits DECIMAL(10,2): at most 10 digits.
        -9_999_999_999i64..=9_999_999_999,
        any::<u128>(),
    );
    (head, tail).prop_map(move |((id_, i, s, b, d, f, flag, opt, e, fx), tail)| {
        let (arr, m, (x, y), ts, dt, dec, u) = tail;
        let dec_bytes = {
            // Minimal big-endian two's complement.
            let all = dec.to_be_bytes();
            let skip = all
                .windows(2)
                .take_while(|w| {
                    (w[0] == 0 && w[1] & 0x80 == 0) || (w[0] == 0xff && w[1] & 0x80 != 0)
                })
                .count();
            all[skip..].to_vec()
        };
        let uuid = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (u >> 96) as u32,
            (u >> 80) as u16,
            (u >> 64) as u16,
            (u >> 48) as u16,
            u as u64 & 0xffff_ffff_ffff
        );
        Datum::Record(vec![
            Datum::Long(id_),
            Datum::Int(i),
            Datum::Str(s),
            Datum::Bytes(b),
            Datum::Double(d),
            Datum::Float(f),
            Datum::Bool(flag),
            match opt {
                Some(s) => Datum::Union(1, Box::new(Datum::Str(s))),
                None => Datum::Union(0, Box::new(Datum::Null)),
            },
            Datum::Enum(e),
            Datum::Fixed(fx.to_vec()),
            Datum::Array(arr.into_iter().map(Datum::Long).collect()),
            Datum::Map(m.into_iter().map(|(k, v)| (k, Datum::Str(v))).collect()),
            Datum::Record(vec![
                match x {
                    Some(x) => Datum::Union(1, Box::new(Datum::Long(x))),
                    None => Datum::Union(0, Box::new(Datum::Null)),
                },
                Datum::Str(y),
            ]),
            Datum::Long(ts),
            Datum::Int(dt),
            Datum::Bytes(dec_bytes),
            Datum::Str(uuid),
        ])
        .framed(id)
    })
}

/// The Confluent header of schema `id`.
fn header(id: u32) -> Vec<u8> {
    crate::registry::frame(id, &[])
}

#[test]
fn fuzz_avro_decode() {
    let mut f = Framed::new(FramedKind::Avro);
    let id = f.mock.register("f-value", "AVRO", FUZZ_AVRO_SCHEMA, &[]);
    run(
        "avro",
        inputs(avro_record(id), 5, Just(header(id))),
        |v, ok| check_value(&mut f.decoder, v, ok),
    );
}

/// Headers of every kind: wrong magic bytes, too short, an id whose schema is
/// of the wrong kind, the right id; bodies valid or not.
#[test]
fn fuzz_confluent_framing() {
    let mut f = Framed::new(FramedKind::Avro);
    let id = f.mock.register("f-value", "AVRO", FUZZ_AVRO_SCHEMA, &[]);
    let json = f
        .mock
        .register("g-value", "JSON", r#"{"type":"object"}"#, &[]);
    let headers = prop_oneof![
        Just(header(id)),
        Just(header(json)),
        vec(any::<u8>(), 0..5),
        (1u8..=255, vec(any::<u8>(), 4)).prop_map(|(m, mut id)| {
            id.insert(0, m);
            id
        }),
    ];
    // Mutations keep the header: a flipped id bit would ask the registry
    // for unknown ids, which it may be given a grace to learn (a wait).
    // Broken headers come from `headers`, behind arbitrary bytes.
    run("framing", inputs(avro_record(id), 5, headers), |v, ok| {
        // Split alone: never a panic, Ok exactly for a magic byte and a
        // whole header.
        for b in v.iter().flatten() {
            let split = crate::registry::split_frame(b);
            prop_assert_eq!(split.is_ok(), b.len() >= 5 && b[0] == 0);
        }
        check_value(&mut f.decoder, v, ok)
    });
}

/// The plain JSON table schema the JSON targets decode into.
pub(crate) fn json_schema() -> arrow::datatypes::SchemaRef {
    let ddl = "id BIGINT, small INT, name STRING, amount DOUBLE, f FLOAT, flag BOOLEAN, \
               ts TIMESTAMP, d DATE, dec DECIMAL(10,2), tags ARRAY<BIGINT>, m MAP<STRING,BIGINT>, \
               obj STRUCT<a: BIGINT, b: STRING>";
    let s = crate::schema::parse_ddl(ddl).unwrap();
    Arc::new(arrow::datatypes::Schema::new(
        s.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// A JSON value of any shape for a field the table does not have: a leaf,
/// or one level of array or object (cheap to generate; deeper nesting is
/// the mutations' and the arbitrary bytes' job).
fn any_json() -> impl Strategy<Value = serde_json::Value> + Clone {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
        vec(any::<i64>(), 0..3)
            .prop_map(|v| Value::Array(v.into_iter().map(Value::from).collect())),
        (text(), text())
            .prop_map(|(k, v)| Value::Object([(k, Value::String(v))].into_iter().collect())),
    ]
}

/// A valid document of [`json_schema`] (every field optional).
pub(crate) fn json_doc() -> impl Strategy<Value = Vec<u8>> + Clone {
    use serde_json::{json, Value};
    let fields = (
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(text()),
        proptest::option::of(-1e300f64..1e300),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0i64..4_000_000_000),
        proptest::option::of(-100_000i32..100_000),
        proptest::option::of(-99_999_999i64..99_999_999),
        proptest::option::of(vec(any::<i64>(), 0..3)),
        proptest::option::of(vec((text(), any::<i64>()), 0..3)),
        proptest::option::of((any::<i64>(), text())),
        any_json(),
    );
    fields.prop_map(
        |(id, small, name, amount, flag, ts, d, dec, tags, m, obj, extra)| {
            let mut doc = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    doc.insert(k.to_string(), v);
                }
            };
            put("id", id.map(Value::from));
            put("small", small.map(Value::from));
            put("name", name.map(Value::String));
            put("amount", amount.map(Value::from));
            put("flag", flag.map(Value::Bool));
            put(
                "ts",
                ts.map(|s| {
                    let t = chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
                    Value::String(t.to_rfc3339())
                }),
            );
            put(
                "d",
                d.map(|d| {
                    let day = chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + d)
                        .unwrap_or_default();
                    Value::String(day.to_string())
                }),
            );
            put(
                "dec",
                dec.map(|c| {
                    let sign = if c < 0 { "-" } else { "" };
                    Value::String(format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100))
                }),
            );
            put("tags", tags.map(|t| json!(t)));
            put(
                "m",
                m.map(|m| Value::Object(m.into_iter().map(|(k, v)| (k, json!(v))).collect())),
            );
            put("obj", obj.map(|(a, b)| json!({"a": a, "b": b})));
            // Unknown fields are ignored, whatever they hold.
            put("extra", Some(extra));
            serde_json::to_vec(&Value::Object(doc)).unwrap()
        },
    )
}

#[test]
fn fuzz_json_decode() {
    let mut d = ValueDecoder::Json(JsonDecoder::new(json_schema()).unwrap());
    // Arbitrary bytes behind a JSON-ish start, so the tape gets further.
    let prefix = prop_oneof![
        Just(Vec::new()),
        Just(b"{\"id\":".to_vec()),
        Just(b"{".to_vec())
    ];
    run("json", inputs(json_doc(), 0, prefix), |v, ok| {
        check_value(&mut d, v, ok)
    });
}

#[test]
fn fuzz_json_schema_decode() {
    let mut f = Framed::new(FramedKind::JsonSchema);
    let schema = r#"{"type":"object","properties":{
      "id":{"type":"integer"},"small":{"type":"integer"},"name":{"type":"string"},
      "amount":{"type":"number"},"flag":{"type":"boolean"},
      "ts":{"type":"string","format":"date-time"},"d":{"type":"string","format":"date"},
      "tags":{"type":"array","items":{"type":"integer"}},
      "obj":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}}}}}"#;
    let id = f.mock.register("f-value", "JSON", schema, &[]);
    // Documents of the plain JSON schema: the fields the JSON Schema lacks
    // (f, dec, m) are unknown there and ignored.
    let valid = json_doc().prop_map(move |doc| crate::registry::frame(id, &doc));
    run(
        "json_schema",
        inputs(valid, 5, Just(header(id))),
        |v, ok| check_value(&mut f.decoder, v, ok),
    );
}

#[test]
fn fuzz_raw_string_decode() {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Utf8, true),
    ]));
    let mut d = ValueDecoder::Raw(RawDecoder::new(schema).unwrap());
    let valid = text().prop_map(String::into_bytes);
    run("string", inputs(valid, 0, Just(Vec::new())), |v, ok| {
        check_value(&mut d, v, ok)
    });
}
