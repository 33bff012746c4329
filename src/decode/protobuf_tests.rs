//! Unit tests of the Protobuf wire walker, the message-index array and the
//! mapping. Values are encoded with prost-reflect's `DynamicMessage` (an
//! encoder independent of the walker) or by hand where they must be wrong.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use prost_reflect::prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, Value as PValue};

use super::*;
use crate::record::{Rejections, Stage};
use crate::registry::{frame, SchemaKind, SchemaReference};

const COMMON: &str = r#"
syntax = "proto3";
package acme.common;
message Address { string city = 1; string zip = 2; }
"#;

const ORDER: &str = r#"
syntax = "proto3";
package acme;
import "acme/common.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Status { UNKNOWN = 0; PAID = 1; SHIPPED = 2; }

message Order {
  int64 id = 1;
  string customer = 2;
  double amount = 3;
  optional int32 discount = 4;
  acme.common.Address ship_to = 5;
  repeated string tags = 6;
  repeated int64 quantities = 7;
  map<string, int64> counts = 8;
  oneof payment { string card = 9; string iban = 10; }
  Status status = 11;
  google.protobuf.Timestamp created = 12;
  google.protobuf.Int64Value parent = 13;
  google.protobuf.StringValue note = 14;
  repeated Line lines = 15;
  sint64 delta = 16;
  uint64 big = 17;
  bool rush = 18;
  message Line { string sku = 1; int32 qty = 2; }
}

message Other { string x = 1; }
"#;

fn schema(
    id: u32,
    text: &str,
    refs: Vec<(SchemaReference, Arc<ResolvedSchema>)>,
) -> ResolvedSchema {
    ResolvedSchema {
        id,
        kind: SchemaKind::Protobuf,
        schema: text.to_string(),
        references: refs,
    }
}

fn order_schema(id: u32) -> ResolvedSchema {
    let common = Arc::new(schema(1, COMMON, Vec::new()));
    schema(
        id,
        ORDER,
        vec![(
            SchemaReference {
                name: "acme/common.proto".into(),
                subject: "common".into(),
                version: 1,
            },
            common,
        )],
    )
}

fn order_desc() -> MessageDescriptor {
    let file = compile_schema(&order_schema(7)).unwrap();
    let first = file.messages().next().unwrap();
    first
}

/// A framed value: header, message index `index` (already encoded), body.
fn framed(id: u32, index: &[u8], body: &[u8]) -> Vec<u8> {
    let mut payload = index.to_vec();
    payload.extend_from_slice(body);
    frame(id, &payload)
}

fn order(i: i64) -> Vec<u8> {
    let desc = order_desc();
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("id", PValue::I64(i));
    m.set_field_by_name("customer", PValue::String(format!("c{i}")));
    m.set_field_by_name("amount", PValue::F64(i as f64 / 2.0));
    if i % 2 == 0 {
        m.set_field_by_name("discount", PValue::I32(0));
    }
    let addr_desc = desc
        .parent_pool()
        .get_message_by_name("acme.common.Address")
        .unwrap();
    let mut addr = DynamicMessage::new(addr_desc);
    addr.set_field_by_name("city", PValue::String("Lyon".into()));
    m.set_field_by_name("ship_to", PValue::Message(addr));
    m.set_field_by_name(
        "tags",
        PValue::List(vec![PValue::String("a".into()), PValue::String("b".into())]),
    );
    m.set_field_by_name(
        "quantities",
        PValue::List(vec![PValue::I64(1), PValue::I64(300)]),
    );
    let mut counts = std::collections::HashMap::new();
    counts.insert(MapKey::String("k".into()), PValue::I64(i));
    m.set_field_by_name("counts", PValue::Map(counts));
    m.set_field_by_name("iban", PValue::String("FR76".into()));
    m.set_field_by_name("status", PValue::EnumNumber(if i == 3 { 9 } else { 1 }));
    let ts_desc = desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let mut ts = DynamicMessage::new(ts_desc);
    ts.set_field_by_name("seconds", PValue::I64(1_700_000_000));
    ts.set_field_by_name("nanos", PValue::I32(123_456_789));
    m.set_field_by_name("created", PValue::Message(ts));
    let w_desc = desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Int64Value")
        .unwrap();
    let mut w = DynamicMessage::new(w_desc);
    w.set_field_by_name("value", PValue::I64(0));
    m.set_field_by_name("parent", PValue::Message(w));
    let line_desc = desc
        .parent_pool()
        .get_message_by_name("acme.Order.Line")
        .unwrap();
    let mut line = DynamicMessage::new(line_desc);
    line.set_field_by_name("sku", PValue::String("s1".into()));
    line.set_field_by_name("qty", PValue::I32(2));
    m.set_field_by_name("lines", PValue::List(vec![PValue::Message(line)]));
    m.set_field_by_name("delta", PValue::I64(-5));
    m.set_field_by_name("big", PValue::U64(u64::MAX));
    m.encode_to_vec()
}

fn decode_all(d: &mut ProtobufDecoder, id: u32, values: &[Vec<u8>]) -> (Vec<Part>, Rejections) {
    let msgs: Vec<(usize, &[u8])> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i, &v[..]))
        .collect();
    let (mut parts, mut rejected) = (Vec::new(), Rejections::new());
    d.decode(id, &msgs, &mut parts, &mut rejected).unwrap();
    (parts, rejected)
}

#[test]
fn message_index_arrays_parse() {
    // A lone 0 is [0].
    let (p, used) = parse_message_index(&[0, 0xff]).unwrap();
    assert_eq!((p.as_slice(), used), (&[0u32][..], 1));
    // Count 1 (zig-zag 2), index 1 (zig-zag 2).
    let (p, used) = parse_message_index(&[2, 2]).unwrap();
    assert_eq!((p.as_slice(), used), (&[1u32][..], 2));
    // [1, 2]: count 2 (4), 1 (2), 2 (4).
    let (p, used) = parse_message_index(&[4, 2, 4, 9]).unwrap();
    assert_eq!((p.as_slice(), used), (&[1u32, 2][..], 3));
    // Negative count, negative index, too deep, truncated, empty.
    for bad in [&[1u8][..], &[2, 1], &[34], &[4, 2], &[0x80], &[]] {
        let e = parse_message_index(bad).unwrap_err();
        assert!(e.contains("bad message index"), "{bad:?}: {e}");
    }
}

#[test]
fn varints_and_tags_are_bounded() {
    assert_eq!(read_varint(&[0x96, 0x01], 0, 2).unwrap(), (150, 2));
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(read_varint(&max, 0, 10).unwrap(), (u64::MAX, 10));
    let mut over = max;
    over[9] = 0x02;
    assert!(read_varint(&over, 0, 10).unwrap_err().contains("overflows"));
    assert!(read_varint(&[0xff; 11], 0, 11).is_err());
    assert!(read_varint(&[0x80, 0x80], 0, 2)
        .unwrap_err()
        .contains("truncated"));
    // The end bounds the read, not the buffer.
    assert!(read_varint(&[0x80, 0x01], 0, 1).is_err());
    assert!(read_tag(&[0x00], 0, 1)
        .unwrap_err()
        .contains("field number 0"));
    assert!(read_len(&[0x05, 1, 2], 0, 3)
        .unwrap_err()
        .contains("runs past"));
    // Unknown fields of every wire type skip, groups to their end.
    let group = [0x0b, 0x08, 0x01, 0x0c, 0x10];
    assert_eq!(skip(&group, 1, 5, START_GROUP, 1, 0).unwrap(), 4);
    assert!(skip(&[0x14], 0, 1, START_GROUP, 1, 0).is_err());
    assert!(skip(&[], 0, 0, 6, 1, 0)
        .unwrap_err()
        .contains("wire type 6"));
}

#[test]
fn every_mapped_type_decodes_into_its_column() {
    let mut d = ProtobufDecoder::new();
    d.add_schema(7, &order_schema(7)).unwrap();
    let values: Vec<Vec<u8>> = (0..4).map(|i| framed(7, &[0], &order(i))).collect();
    let (parts, rejected) = decode_all(&mut d, 7, &values);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(parts.len(), 1);
    let b = &parts[0].batch;
    assert_eq!(parts[0].rows, vec![0, 1, 2, 3]);
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    assert_eq!(
        col("id").as_primitive::<Int64Type>(),
        &Int64Array::from(vec![0, 1, 2, 3])
    );
    assert_eq!(
        col("customer").as_string::<i32>(),
        &StringArray::from(vec!["c0", "c1", "c2", "c3"])
    );
    assert_eq!(
        col("amount")
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap(),
        &Float64Array::from(vec![0.0, 0.5, 1.0, 1.5])
    );
    // proto3 `optional`: set to 0 is 0, unset is null.
    assert_eq!(
        col("discount")
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap(),
        &Int32Array::from(vec![Some(0), None, Some(0), None])
    );
    let ship = col("ship_to");
    let ship = ship.as_struct();
    assert_eq!(
        ship.column_by_name("city")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "Lyon"
    );
    // An implicit-presence string left out is "", not null.
    assert_eq!(
        ship.column_by_name("zip")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        ""
    );
    let tags = col("tags");
    let tags = tags.as_list::<i32>();
    assert_eq!(
        tags.value(1).as_string::<i32>(),
        &StringArray::from(vec!["a", "b"])
    );
    // Packed by the encoder (proto3 default).
    let q = col("quantities");
    assert_eq!(
        q.as_list::<i32>().value(2).as_primitive::<Int64Type>(),
        &Int64Array::from(vec![1, 300])
    );
    let counts = col("counts");
    let counts = counts.as_map();
    assert_eq!(counts.keys().as_string::<i32>().value(3), "k");
    assert_eq!(counts.values().as_primitive::<Int64Type>().value(3), 3);
    // oneof: the member set, the other null.
    assert_eq!(col("iban").as_string::<i32>().value(0), "FR76");
    assert!(col("card").is_null(0));
    // Enum names; a number the schema does not name, as digits.
    assert_eq!(
        col("status").as_string::<i32>(),
        &StringArray::from(vec!["PAID", "PAID", "PAID", "9"])
    );
    let created = col("created");
    assert_eq!(
        created.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        created.as_primitive::<TimestampMicrosecondType>().value(0),
        1_700_000_000_123_456
    );
    // A wrapper holding its default is 0, not null; absent wrappers are null.
    assert_eq!(col("parent").as_primitive::<Int64Type>().value(0), 0);
    assert!(col("note").is_null(0));
    let lines = col("lines");
    let line = lines.as_list::<i32>().value(0);
    assert_eq!(line.as_struct().column(0).as_string::<i32>().value(0), "s1");
    assert_eq!(col("delta").as_primitive::<Int64Type>().value(0), -5);
    assert_eq!(
        col("big")
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .value(0),
        u64::MAX
    );
    assert_eq!(
        col("rush").as_any().downcast_ref::<BooleanArray>().unwrap(),
        &BooleanArray::from(vec![false; 4])
    );
}

#[test]
fn poison_pills_are_rejected_and_the_rest_lands() {
    let mut d = ProtobufDecoder::new();
    d.add_schema(7, &order_schema(7)).unwrap();
    let good = order(1);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    // Field 1 (id, an int64) as length-delimited.
    let wrong_wire = [0x0a, 0x01, 0x41];
    // Field 2 (customer) with invalid UTF-8.
    let bad_utf8 = [0x12, 0x02, 0xc3, 0x28];
    let values = vec![
        framed(7, &[0], &good),
        framed(7, &[0], &truncated),
        framed(7, &[2, 10], &good),
        framed(7, &[0], &wrong_wire),
        framed(7, &[], &[]),
        framed(7, &[0], &bad_utf8),
        framed(7, &[0], &good),
    ];
    let (parts, mut rejected) = decode_all(&mut d, 7, &values);
    // The framed decoder sorts a chunk's rejections; this one comes by type.
    rejected.sort();
    let got: Vec<(usize, Stage)> = rejected.iter().map(|r| (r.index, r.stage)).collect();
    assert_eq!(
        got,
        vec![
            (1, Stage::Decode),
            (2, Stage::Decode),
            (3, Stage::Decode),
            (4, Stage::Decode),
            (5, Stage::Decode)
        ],
        "{rejected:?}"
    );
    assert!(
        rejected[1].reason.contains("bad message index"),
        "{rejected:?}"
    );
    assert!(rejected[2].reason.contains("wire type 2"), "{rejected:?}");
    assert!(rejected[4].reason.contains("UTF-8"), "{rejected:?}");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].rows, vec![0, 6]);
    assert_eq!(parts[0].batch.num_rows(), 2);
}

#[test]
fn singular_fields_take_the_last_occurrence_and_messages_merge() {
    let mut d = ProtobufDecoder::new();
    d.add_schema(7, &order_schema(7)).unwrap();
    // id = 1, id = 2; ship_to {city "A"} then ship_to {zip "Z"}; card then iban.
    let body = [
        0x08, 0x01, 0x08, 0x02, //
        0x2a, 0x03, 0x0a, 0x01, b'A', //
        0x2a, 0x03, 0x12, 0x01, b'Z', //
        0x4a, 0x01, b'c', 0x52, 0x01, b'i', //
        // Unpacked repeated int64 and an unknown field 99 (varint).
        0x38, 0x05, 0x38, 0x06, 0x98, 0x06, 0x01,
    ];
    let (parts, rejected) = decode_all(&mut d, 7, &[framed(7, &[0], &body)]);
    assert!(rejected.is_empty(), "{rejected:?}");
    let b = &parts[0].batch;
    assert_eq!(
        b.column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        2
    );
    let ship = b.column_by_name("ship_to").unwrap().as_struct().clone();
    assert_eq!(ship.column(0).as_string::<i32>().value(0), "A");
    assert_eq!(ship.column(1).as_string::<i32>().value(0), "Z");
    assert!(b.column_by_name("card").unwrap().is_null(0));
    assert_eq!(
        b.column_by_name("iban")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "i"
    );
    let q = b
        .column_by_name("quantities")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    assert_eq!(q.as_primitive::<Int64Type>(), &Int64Array::from(vec![5, 6]));
    // Absent message: null struct; absent timestamp and wrappers: null.
    assert!(b.column_by_name("created").unwrap().is_null(0));
    assert!(b.column_by_name("parent").unwrap().is_null(0));
}

#[test]
fn message_indexes_pick_the_type_and_each_type_is_a_part() {
    let mut d = ProtobufDecoder::new();
    d.add_schema(7, &order_schema(7)).unwrap();
    let other = [0x0a, 0x01, b'x'];
    let line = [0x0a, 0x02, b's', b'1', 0x10, 0x03];
    // [0, n]: Order.Line among Order's nested types (with the map entry
    // type of `counts`), in the descriptor's order.
    let n = order_desc()
        .child_messages()
        .position(|m| m.name() == "Line")
        .unwrap() as u8;
    let values = vec![
        framed(7, &[0], &order(1)),
        framed(7, &[2, 2], &other),
        framed(7, &[4, 0, n * 2], &line),
    ];
    let (parts, rejected) = decode_all(&mut d, 7, &values);
    assert!(rejected.is_empty(), "{rejected:?}");
    let shapes: Vec<(Vec<usize>, Vec<String>)> = parts
        .iter()
        .map(|p| {
            (
                p.rows.clone(),
                p.batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(shapes.len(), 3, "{shapes:?}");
    assert_eq!(shapes[1], (vec![1], vec!["x".to_string()]));
    assert_eq!(
        shapes[2],
        (vec![2], vec!["sku".to_string(), "qty".to_string()])
    );
}

#[test]
fn recursive_types_are_refused_and_the_table_schema_follows_the_record_name() {
    let text = r#"syntax = "proto3"; package t;
        message Flat { int64 a = 1; }
        message Tree { string name = 1; repeated Tree children = 2; }"#;
    let s = schema(3, text, Vec::new());
    let mut d = ProtobufDecoder::new();
    d.add_schema(3, &s).unwrap();
    let values = vec![
        framed(3, &[2, 2], &[0x0a, 0x01, b'n']),
        framed(3, &[0], &[0x08, 0x01]),
    ];
    let (parts, rejected) = decode_all(&mut d, 3, &values);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].stage, Stage::Schema);
    assert!(rejected[0].reason.contains("recursive"), "{rejected:?}");
    assert_eq!(parts[0].rows, vec![1]);
    let first = protobuf_arrow_schema(&s, None).unwrap();
    assert_eq!(first.field(0).name(), "a");
    assert!(protobuf_arrow_schema(&s, Some("t.Tree")).is_err());
    let e = protobuf_arrow_schema(&s, Some("t.Nope")).unwrap_err();
    assert!(e.contains("t.Flat"), "{e}");
    assert!(compile_schema(&schema(
        4,
        "syntax = \"proto3\"; message X { Y y = 1; }",
        Vec::new()
    ))
    .is_err());
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut d = ProtobufDecoder::new();
    d.add_schema(7, &order_schema(7)).unwrap();
    let good = order(2);
    let mut values = Vec::new();
    for _ in 0..2000 {
        let mut v = framed(7, &[0], &good);
        // Flip a few bytes of a good value, or take pure noise.
        if rng.random_bool(0.5) {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(5..v.len());
                v[i] = rng.random();
            }
        } else {
            let n = rng.random_range(0..64);
            v.truncate(5);
            v.extend((0..n).map(|_| rng.random::<u8>()));
        }
        values.push(v);
    }
    let (parts, rejected) = decode_all(&mut d, 7, &values);
    let rows: usize = parts.iter().map(|p| p.batch.num_rows()).sum();
    assert_eq!(rows + rejected.len(), values.len());
}
