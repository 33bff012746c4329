//! JSON Schema documents (the subset Confluent users write, drafts 4 to
//! 2020-12) as Arrow schemas.
//!
//! | JSON Schema | Arrow |
//! | --- | --- |
//! | `string` | `Utf8`; `format: date-time` → `Timestamp(µs, "UTC")`, `format: date` → `Date32` |
//! | `integer` | `Int64` |
//! | `number` | `Float64` (also `["integer", "number"]`) |
//! | `boolean` | `Boolean` |
//! | `object` with `properties` | `Struct`, one field per property |
//! | `object` without `properties` | `Map<Utf8, additionalProperties' type>` (`Utf8` values when `additionalProperties` is not a schema) |
//! | `array` with `items` | `List` |
//! | `enum` / `const` of strings (of integers) | `Utf8` (`Int64`) |
//! | `type: ["null", X]`, `oneOf` / `anyOf` of `X` and `{"type": "null"}` | `X` |
//! | `$ref` | the referenced schema: `#/definitions/x`, `#/$defs/x` (any JSON pointer) in the same document, or `other#/pointer` through the resolver |
//!
//! Every field is nullable, also the `required` ones: a producer that breaks
//! `required` must not stop ingest, and `NOT NULL` is the table's business
//! (a null in a `NOT NULL` column rejects that row only, see
//! [`Conformed`](super::Conformed)).
//!
//! Struct fields are sorted by property name: this crate's `serde_json` keeps
//! objects sorted (its `preserve_order` feature is off), so the document's
//! order is not known. Tables match columns by name, so the order only shows
//! in the columns [`EvolutionPolicy::AddColumns`](crate::config::EvolutionPolicy)
//! adds.
//!
//! Unions of several non-null types, tuples (`items` as an array,
//! `prefixItems`), `allOf` of several schemas, `$ref` cycles (recursive
//! types) and schemas without a type are errors that name the property.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::Value;

/// A JSON Schema inlet cannot map to Arrow.
#[derive(Debug, thiserror::Error)]
pub enum JsonSchemaError {
    /// The top level is not an object schema with properties.
    #[error("JSON Schema: the top level must be an object schema with `properties` ({0})")]
    NotAnObject(String),
    /// A property whose schema has no Arrow type.
    #[error("JSON Schema property `{path}` is not supported: {reason}")]
    Unsupported {
        /// The property, nested ones as `a.b` (array items as `a.element`).
        path: String,
        /// What is unsupported.
        reason: String,
    },
    /// A `$ref` that does not resolve.
    #[error("JSON Schema property `{path}`: `$ref` {reference:?} cannot be resolved: {reason}")]
    UnresolvedRef {
        /// The property holding the reference (empty at the top level).
        path: String,
        /// The reference as written.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A `$ref` that leads back to itself (a recursive type).
    #[error(
        "JSON Schema property `{path}`: `$ref` cycle {} (recursive types have no Arrow schema)",
        chain.join(" -> ")
    )]
    RefCycle {
        /// The property where the cycle closes.
        path: String,
        /// The references, from the first to the one that repeats.
        chain: Vec<String>,
    },
}

/// Arrow schema of a JSON Schema document (draft 4–2020-12 subset Confluent users write).
///
/// `resolve` returns an external document by the part of a `$ref` before `#`
/// (e.g. a Schema Registry reference name); `None` makes the reference an
/// error. See the [module docs](self) for the mapping.
pub fn json_schema_to_arrow(
    doc: &serde_json::Value,
    resolve: &dyn Fn(&str) -> Option<serde_json::Value>,
) -> Result<Schema, JsonSchemaError> {
    let mut mapper = Mapper {
        resolve,
        docs: HashMap::new(),
        stack: Vec::new(),
    };
    let root = Doc {
        name: Rc::from(""),
        value: Rc::new(doc.clone()),
    };
    match mapper.map(doc, &root, "")? {
        DataType::Struct(fields) => Ok(Schema::new(fields)),
        DataType::Map(..) => Err(JsonSchemaError::NotAnObject(
            "it is an object without `properties`".into(),
        )),
        other => Err(JsonSchemaError::NotAnObject(format!("it maps to {other}"))),
    }
}

/// A document `$ref`s resolve in: the root (named "") or an external one.
#[derive(Clone)]
struct Doc {
    name: Rc<str>,
    value: Rc<Value>,
}

struct Mapper<'a> {
    resolve: &'a dyn Fn(&str) -> Option<Value>,
    /// External documents by name, resolved once.
    docs: HashMap<String, Rc<Value>>,
    /// The references being expanded, as (`document#pointer`, as written).
    stack: Vec<(String, String)>,
}

fn unsupported(path: &str, reason: impl Into<String>) -> JsonSchemaError {
    JsonSchemaError::Unsupported {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `Map<Utf8, value>`, laid out as Delta expects maps.
fn map_type(value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
        false,
    )
}

impl Mapper<'_> {
    fn map(&mut self, schema: &Value, doc: &Doc, path: &str) -> Result<DataType, JsonSchemaError> {
        let obj = match schema {
            Value::Object(obj) => obj,
            Value::Bool(_) => {
                return Err(unsupported(
                    path,
                    "a boolean schema (any value) has no type",
                ))
            }
            _ => return Err(unsupported(path, "a schema must be a JSON object")),
        };
        if let Some(reference) = obj.get("$ref") {
            let reference = reference
                .as_str()
                .ok_or_else(|| unsupported(path, "`$ref` must be a string"))?;
            return self.map_ref(reference, doc, path);
        }
        if let Some(one) = union_branch(obj, path)? {
            return self.map(one, doc, path);
        }
        match type_name(obj, path)? {
            "string" => Ok(match obj.get("format").and_then(Value::as_str) {
                Some("date-time") => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Some("date") => DataType::Date32,
                _ => DataType::Utf8,
            }),
            "integer" => Ok(DataType::Int64),
            "number" => Ok(DataType::Float64),
            "boolean" => Ok(DataType::Boolean),
            "object" => self.map_object(obj, doc, path),
            "array" => self.map_array(obj, doc, path),
            "null" => Err(unsupported(path, "`type` allows only null")),
            other => Err(unsupported(path, format!("unknown type {other:?}"))),
        }
    }

    fn map_array(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        doc: &Doc,
        path: &str,
    ) -> Result<DataType, JsonSchemaError> {
        match (obj.get("items"), obj.get("prefixItems")) {
            (Some(Value::Array(_)), _) | (None, Some(_)) => Err(unsupported(
                path,
                "tuples (`items` as an array, `prefixItems`) are not supported",
            )),
            (Some(items), _) => {
                let item = self.map(items, doc, &format!("{path}.element"))?;
                Ok(DataType::List(Arc::new(Field::new("element", item, true))))
            }
            (None, None) => Err(unsupported(path, "an array without `items`")),
        }
    }

    fn map_object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        doc: &Doc,
        path: &str,
    ) -> Result<DataType, JsonSchemaError> {
        let properties = match obj.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(unsupported(path, "`properties` must be an object")),
        };
        match properties {
            Some(properties) if !properties.is_empty() => {
                let mut names: Vec<&String> = properties.keys().collect();
                names.sort();
                let fields = names
                    .into_iter()
                    .map(|name| {
                        let ty = self.map(&properties[name], doc, &child_path(path, name))?;
                        Ok(Field::new(name, ty, true))
                    })
                    .collect::<Result<Vec<_>, JsonSchemaError>>()?;
                Ok(DataType::Struct(fields.into()))
            }
            _ => {
                let value = match obj.get("additionalProperties") {
                    Some(schema @ Value::Object(o)) if !o.is_empty() => {
                        self.map(schema, doc, &format!("{path}.value"))?
                    }
                    _ => DataType::Utf8,
                };
                Ok(map_type(value))
            }
        }
    }

    fn map_ref(
        &mut self,
        reference: &str,
        doc: &Doc,
        path: &str,
    ) -> Result<DataType, JsonSchemaError> {
        let err = |reason: &str| JsonSchemaError::UnresolvedRef {
            path: path.to_string(),
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        let (name, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let target_doc = if name.is_empty() {
            doc.clone()
        } else {
            let value = match self.docs.get(name) {
                Some(value) => value.clone(),
                None => {
                    let value =
                        (self.resolve)(name).ok_or_else(|| err("the resolver does not know it"))?;
                    let value = Rc::new(value);
                    self.docs.insert(name.to_string(), value.clone());
                    value
                }
            };
            Doc {
                name: Rc::from(name),
                value,
            }
        };
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return Err(err(
                "only JSON pointers (`#/...`) are supported, not anchors",
            ));
        }
        let key = format!("{}#{fragment}", target_doc.name);
        if let Some(at) = self.stack.iter().position(|(k, _)| *k == key) {
            let mut chain: Vec<String> = self.stack[at..].iter().map(|(_, r)| r.clone()).collect();
            chain.push(reference.to_string());
            return Err(JsonSchemaError::RefCycle {
                path: path.to_string(),
                chain,
            });
        }
        let target = target_doc
            .value
            .pointer(&percent_decode(fragment))
            .cloned()
            .ok_or_else(|| err("the pointer matches nothing"))?;
        self.stack.push((key, reference.to_string()));
        let result = self.map(&target, &target_doc, path);
        self.stack.pop();
        result
    }
}

/// A union's null branch, as the error's way on names it.
const NULL_BRANCH: &str = r#"{"type": "null"}"#;

/// The one schema a `oneOf` / `anyOf` (besides null branches) or `allOf`
/// stands for; `None` when the schema has none of these keywords.
fn union_branch<'v>(
    obj: &'v serde_json::Map<String, Value>,
    path: &str,
) -> Result<Option<&'v Value>, JsonSchemaError> {
    for key in ["oneOf", "anyOf"] {
        let Some(branches) = obj.get(key) else {
            continue;
        };
        let branches = branches
            .as_array()
            .ok_or_else(|| unsupported(path, format!("`{key}` must be an array")))?;
        let non_null: Vec<&Value> = branches.iter().filter(|b| !is_null_schema(b)).collect();
        return match non_null.as_slice() {
            [one] => Ok(Some(one)),
            [] => Err(unsupported(path, format!("`{key}` allows only null"))),
            more => Err(unsupported(
                path,
                format!(
                    "`{key}` of {} non-null schemas: a column has one type; use one schema \
                     (or a nullable one: `{key}` of it and {NULL_BRANCH})",
                    more.len()
                ),
            )),
        };
    }
    match obj.get("allOf") {
        None => Ok(None),
        Some(all) => match all.as_array().map(Vec::as_slice) {
            Some([one]) => Ok(Some(one)),
            _ => Err(unsupported(
                path,
                "`allOf` of several schemas is not supported",
            )),
        },
    }
}

/// The schema's one type name: its `type` (a nullable one: the type beside
/// `"null"`), or the type its keywords or values imply.
fn type_name<'v>(
    obj: &'v serde_json::Map<String, Value>,
    path: &str,
) -> Result<&'v str, JsonSchemaError> {
    match obj.get("type") {
        None => infer_type(obj).ok_or_else(|| {
            unsupported(
                path,
                "the schema has no `type` (nor keywords or `enum` values of one type that imply it)",
            )
        }),
        Some(Value::String(t)) => Ok(t.as_str()),
        Some(Value::Array(types)) => {
            let mut names = Vec::new();
            for t in types {
                let t = t
                    .as_str()
                    .ok_or_else(|| unsupported(path, "`type` must list type names"))?;
                if t != "null" {
                    names.push(t);
                }
            }
            names.sort_unstable();
            match names.as_slice() {
                [one] => Ok(one),
                ["integer", "number"] => Ok("number"),
                [] => Err(unsupported(path, "`type` allows only null")),
                more => Err(unsupported(
                    path,
                    format!("`type` {more:?}: a column has one type; allow one type (and \"null\")"),
                )),
            }
        }
        Some(_) => Err(unsupported(path, "`type` must be a string or an array")),
    }
}

/// `{"type": "null"}` (or `{"const": null}`), a union's null branch.
fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("const").is_some_and(Value::is_null)
}

/// The type a schema without `type` implies: by its keywords or `enum` / `const` values.
fn infer_type(obj: &serde_json::Map<String, Value>) -> Option<&'static str> {
    if obj.contains_key("properties") || obj.contains_key("additionalProperties") {
        return Some("object");
    }
    if obj.contains_key("items") || obj.contains_key("prefixItems") {
        return Some("array");
    }
    let values: Vec<&Value> = match (obj.get("enum"), obj.get("const")) {
        (Some(Value::Array(values)), _) => values.iter().filter(|v| !v.is_null()).collect(),
        (_, Some(value)) if !value.is_null() => vec![value],
        _ => return None,
    };
    if values.is_empty() {
        None
    } else if values.iter().all(|v| v.is_string()) {
        Some("string")
    } else if values.iter().all(|v| v.is_i64() || v.is_u64()) {
        Some("integer")
    } else if values.iter().all(|v| v.is_number()) {
        Some("number")
    } else if values.iter().all(|v| v.is_boolean()) {
        Some("boolean")
    } else {
        None
    }
}

/// Decodes `%xx` escapes of a URI fragment (JSON pointer `~` escapes are `pointer`'s).
fn percent_decode(fragment: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_refs(_: &str) -> Option<Value> {
        None
    }

    fn arrow(doc: Value) -> Schema {
        json_schema_to_arrow(&doc, &no_refs).unwrap()
    }

    fn error(doc: Value) -> String {
        json_schema_to_arrow(&doc, &no_refs)
            .unwrap_err()
            .to_string()
    }

    /// The type of property `v`.
    fn ty(schema: Value) -> DataType {
        let s = arrow(json!({"type": "object", "properties": {"v": schema}}));
        s.field(0).data_type().clone()
    }

    fn list(item: DataType) -> DataType {
        DataType::List(Arc::new(Field::new("element", item, true)))
    }

    #[test]
    fn maps_each_type() {
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(ty(json!({"type": "string"})), DataType::Utf8);
        assert_eq!(ty(json!({"type": "string", "format": "date-time"})), utc);
        assert_eq!(
            ty(json!({"type": "string", "format": "date"})),
            DataType::Date32
        );
        assert_eq!(
            ty(json!({"type": "string", "format": "email"})),
            DataType::Utf8
        );
        assert_eq!(ty(json!({"type": "integer"})), DataType::Int64);
        assert_eq!(ty(json!({"type": "number"})), DataType::Float64);
        assert_eq!(
            ty(json!({"type": ["integer", "number"]})),
            DataType::Float64
        );
        assert_eq!(ty(json!({"type": "boolean"})), DataType::Boolean);
        assert_eq!(ty(json!({"enum": ["a", "b"]})), DataType::Utf8);
        assert_eq!(ty(json!({"enum": ["a", null]})), DataType::Utf8);
        assert_eq!(ty(json!({"const": "x"})), DataType::Utf8);
        assert_eq!(ty(json!({"enum": [1, 2]})), DataType::Int64);
        assert_eq!(ty(json!({"type": "string", "enum": ["a"]})), DataType::Utf8);
        assert_eq!(
            ty(json!({"type": "array", "items": {"type": "integer"}})),
            list(DataType::Int64)
        );
        assert_eq!(
            ty(
                json!({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}})
            ),
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Utf8, true),
                Field::new("b", DataType::Int64, true),
            ]))
        );
        assert_eq!(ty(json!({"type": "object"})), map_type(DataType::Utf8));
        assert_eq!(
            ty(json!({"type": "object", "additionalProperties": {"type": "number"}})),
            map_type(DataType::Float64)
        );
        assert_eq!(
            ty(json!({"type": "object", "additionalProperties": true})),
            map_type(DataType::Utf8)
        );
        assert_eq!(
            ty(json!({"properties": {"a": {"type": "boolean"}}})),
            DataType::Struct(vec![Field::new("a", DataType::Boolean, true)].into())
        );
    }

    #[test]
    fn null_unions_are_nullable_and_other_unions_errors() {
        assert_eq!(ty(json!({"type": ["null", "string"]})), DataType::Utf8);
        assert_eq!(
            ty(json!({"oneOf": [{"type": "null"}, {"type": "integer"}]})),
            DataType::Int64
        );
        assert_eq!(
            ty(json!({"anyOf": [{"type": "number"}, {"type": "null"}]})),
            DataType::Float64
        );
        for union in [
            json!({"type": ["string", "integer"]}),
            json!({"oneOf": [{"type": "string"}, {"type": "object", "properties": {"a": {"type": "string"}}}]}),
            json!({"anyOf": [{"type": "null"}, {"type": "string"}, {"type": "integer"}]}),
            json!({"allOf": [{"type": "string"}, {"maxLength": 3}]}),
            json!({"type": "null"}),
            json!({}),
            json!({"type": "array", "items": [{"type": "string"}]}),
            json!({"type": "array"}),
        ] {
            let doc = json!({"type": "object", "properties": {"o": {"properties": {"v": union}}}});
            let text = error(doc);
            assert!(text.contains("property `o.v`"), "{text}");
        }
    }

    #[test]
    fn every_field_is_nullable_even_required_ones() {
        let s = arrow(json!({
            "type": "object",
            "required": ["id", "user"],
            "properties": {
                "id": {"type": "integer"},
                "user": {"type": "object", "required": ["n"], "properties": {"n": {"type": "string"}}}
            }
        }));
        assert!(s.fields().iter().all(|f| f.is_nullable()));
        let DataType::Struct(user) = s.field_with_name("user").unwrap().data_type() else {
            panic!()
        };
        assert!(user[0].is_nullable());
    }

    #[test]
    fn properties_are_sorted_by_name() {
        let s = arrow(json!({"type": "object", "properties": {
            "zeta": {"type": "string"}, "alpha": {"type": "string"}, "mid": {"type": "string"}}}));
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn local_refs() {
        let s = arrow(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"money": {"type": "number"}, "alias": {"$ref": "#/definitions/money"}},
            "$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}},
            "type": "object",
            "properties": {
                "price": {"$ref": "#/definitions/alias"},
                "home": {"$ref": "#/$defs/addr"},
                "work": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/addr"}]},
                "odd name": {"$ref": "#/definitions/a~1b%20c"}
            }
        }).as_object().map(|o| {
            let mut o = o.clone();
            o["definitions"]["a/b c"] = json!({"type": "boolean"});
            Value::Object(o)
        }).unwrap());
        let addr = DataType::Struct(vec![Field::new("city", DataType::Utf8, true)].into());
        assert_eq!(
            s.field_with_name("price").unwrap().data_type(),
            &DataType::Float64
        );
        assert_eq!(s.field_with_name("home").unwrap().data_type(), &addr);
        assert_eq!(s.field_with_name("work").unwrap().data_type(), &addr);
        assert_eq!(
            s.field_with_name("odd name").unwrap().data_type(),
            &DataType::Boolean
        );
        // The top level can be a reference too.
        let s = arrow(
            json!({"$ref": "#/$defs/addr", "$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
        );
        assert_eq!(s.fields().len(), 1);
    }

    #[test]
    fn external_refs_go_through_the_resolver() {
        let resolve = |name: &str| match name {
            "address.json" => Some(json!({
                "definitions": {"zip": {"type": "string"}},
                "type": "object",
                "properties": {"zip": {"$ref": "#/definitions/zip"}, "geo": {"$ref": "geo.json#/$defs/point"}}
            })),
            "geo.json" => {
                Some(json!({"$defs": {"point": {"type": "array", "items": {"type": "number"}}}}))
            }
            _ => None,
        };
        let doc = json!({"type": "object", "properties": {
            "home": {"$ref": "address.json"},
            "zip": {"$ref": "address.json#/definitions/zip"}
        }});
        let s = json_schema_to_arrow(&doc, &resolve).unwrap();
        let home = DataType::Struct(Fields::from(vec![
            Field::new("geo", list(DataType::Float64), true),
            Field::new("zip", DataType::Utf8, true),
        ]));
        assert_eq!(s.field_with_name("home").unwrap().data_type(), &home);
        assert_eq!(
            s.field_with_name("zip").unwrap().data_type(),
            &DataType::Utf8
        );

        let doc = json!({"type": "object", "properties": {"x": {"$ref": "missing.json#/a"}}});
        let err = json_schema_to_arrow(&doc, &resolve).unwrap_err();
        assert!(
            matches!(&err, JsonSchemaError::UnresolvedRef { path, .. } if path == "x"),
            "{err}"
        );
        let doc = json!({"type": "object", "properties": {"x": {"$ref": "#/definitions/nope"}}});
        assert!(matches!(
            json_schema_to_arrow(&doc, &resolve),
            Err(JsonSchemaError::UnresolvedRef { .. })
        ));
        let doc = json!({"type": "object", "properties": {"x": {"$ref": "#anchor"}}});
        assert!(error(doc).contains("anchors"));
    }

    #[test]
    fn ref_cycles_are_errors() {
        let doc = json!({
            "definitions": {"node": {"type": "object", "properties": {
                "value": {"type": "integer"},
                "next": {"$ref": "#/definitions/node"}}}},
            "type": "object",
            "properties": {"head": {"$ref": "#/definitions/node"}}
        });
        let err = json_schema_to_arrow(&doc, &no_refs).unwrap_err();
        let JsonSchemaError::RefCycle { path, chain } = &err else {
            panic!("{err}")
        };
        assert_eq!(path, "head.next");
        assert_eq!(chain, &["#/definitions/node", "#/definitions/node"]);
        // Across documents, and through alias chains.
        let resolve = |name: &str| match name {
            "a.json" => Some(json!({"$ref": "b.json"})),
            "b.json" => Some(json!({"$ref": "a.json"})),
            _ => None,
        };
        let doc = json!({"type": "object", "properties": {"x": {"$ref": "a.json"}}});
        let err = json_schema_to_arrow(&doc, &resolve).unwrap_err();
        assert!(
            err.to_string().contains("a.json -> b.json -> a.json"),
            "{err}"
        );
        // A definition used twice (no cycle) is fine.
        let doc = json!({
            "$defs": {"p": {"type": "string"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/p"}, "b": {"type": "array", "items": {"$ref": "#/$defs/p"}}}
        });
        assert_eq!(arrow(doc).fields().len(), 2);
    }

    #[test]
    fn top_level_must_be_an_object_with_properties() {
        assert!(error(json!({"type": "string"})).contains("top level"));
        assert!(error(json!({"type": "object"})).contains("without `properties`"));
        assert!(error(json!(true)).contains("boolean schema"));
    }
}
