//! One self-contained Avro schema from a schema and its references.
//!
//! A Confluent Avro schema may use named types (records, enums, fixed) that
//! are defined in other subjects' schemas (its references). Avro readers need
//! one schema in which every name is defined before it is used, so each type
//! a reference defines is written in full at its first use and by its full
//! name afterwards.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{RegistryError, ResolvedSchema, Result, SchemaKind};

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

impl ResolvedSchema {
    /// For Avro: one self-contained Avro schema (JSON text) in which every
    /// named type that comes from a reference is defined inline at its first
    /// use and referred to by full name afterwards. Types used several times
    /// (diamond references, recursive types) are defined once.
    ///
    /// Every named type is written with a short `name` and an explicit
    /// `namespace`, and every use of a named type by its full name, so the
    /// result means the same wherever a definition lands. Errors
    /// ([`RegistryError::Invalid`], permanent) name the schema id: not Avro,
    /// not JSON, a type neither the schema nor its references define.
    pub fn avro_self_contained(&self) -> Result<String> {
        if self.kind != SchemaKind::Avro {
            return Err(RegistryError::invalid(format!(
                "schema id {} is {}, not Avro",
                self.id, self.kind
            )));
        }
        let mut root: Value = serde_json::from_str(&self.schema).map_err(|e| {
            RegistryError::not_json(format!("schema id {} is not JSON: {e}", self.id), e)
        })?;
        let mut available = HashMap::new();
        let mut visited = HashSet::new();
        collect_references(self, &mut available, &mut visited)?;
        let mut inliner = Inliner {
            id: self.id,
            available,
            defined: HashSet::new(),
        };
        inliner.schema(&mut root, "")?;
        Ok(root.to_string())
    }
}

/// Adds every named type defined by `schema`'s references (recursively) to
/// `out`, by full name; the first definition of a name wins.
fn collect_references(
    schema: &ResolvedSchema,
    out: &mut HashMap<String, Value>,
    visited: &mut HashSet<*const ResolvedSchema>,
) -> Result<()> {
    for (reference, target) in &schema.references {
        if !visited.insert(std::sync::Arc::as_ptr(target)) {
            continue;
        }
        let describe = || {
            format!(
                "reference `{}` of schema id {} (subject `{}` version {}, schema id {})",
                reference.name, schema.id, reference.subject, reference.version, target.id
            )
        };
        if target.kind != SchemaKind::Avro {
            return Err(RegistryError::invalid(format!(
                "{} is {}, not Avro",
                describe(),
                target.kind
            )));
        }
        let value: Value = serde_json::from_str(&target.schema)
            .map_err(|e| RegistryError::not_json(format!("{} is not JSON: {e}", describe()), e))?;
        collect_definitions(&value, "", out)?;
        collect_references(target, out, visited)?;
    }
    Ok(())
}

/// Adds the named types defined in `schema` to `out`.
fn collect_definitions(schema: &Value, ns: &str, out: &mut HashMap<String, Value>) -> Result<()> {
    match schema {
        Value::Array(branches) => {
            for b in branches {
                collect_definitions(b, ns, out)?;
            }
        }
        Value::Object(obj) => match obj.get("type") {
            Some(Value::String(t)) => match t.as_str() {
                "record" | "error" | "enum" | "fixed" => {
                    let (full, space) = full_name(obj, ns)?;
                    out.entry(full).or_insert_with(|| schema.clone());
                    for field in fields(obj) {
                        if let Some(t) = field.get("type") {
                            collect_definitions(t, &space, out)?;
                        }
                    }
                }
                "array" => {
                    if let Some(items) = obj.get("items") {
                        collect_definitions(items, ns, out)?;
                    }
                }
                "map" => {
                    if let Some(values) = obj.get("values") {
                        collect_definitions(values, ns, out)?;
                    }
                }
                _ => {}
            },
            Some(nested) => collect_definitions(nested, ns, out)?,
            None => {}
        },
        _ => {}
    }
    Ok(())
}

fn fields(obj: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    obj.get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// Full name and namespace of a named type defined by `obj` inside namespace
/// `ns` (Avro: a dotted `name` is the full name; else `namespace`, else the
/// enclosing namespace).
fn full_name(obj: &Map<String, Value>, ns: &str) -> Result<(String, String)> {
    let Some(name) = obj.get("name").and_then(Value::as_str) else {
        return Err(RegistryError::invalid(format!(
            "a named Avro type has no `name`: {}",
            Value::Object(obj.clone())
        )));
    };
    if let Some((space, _)) = name.rsplit_once('.') {
        return Ok((name.to_string(), space.to_string()));
    }
    let space = match obj.get("namespace") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => ns.to_string(),
        Some(other) => {
            return Err(RegistryError::invalid(format!(
                "type `{name}` has a namespace that is not a string: {other}"
            )))
        }
    };
    let full = if space.is_empty() {
        name.to_string()
    } else {
        format!("{space}.{name}")
    };
    Ok((full, space))
}

struct Inliner {
    /// Id of the schema being made self-contained, for messages.
    id: u32,
    /// Definitions from the references, by full name.
    available: HashMap<String, Value>,
    /// Full names defined so far in the output.
    defined: HashSet<String>,
}

impl Inliner {
    /// Rewrites the schema at `v`, enclosed in namespace `ns`.
    fn schema(&mut self, v: &mut Value, ns: &str) -> Result<()> {
        match v {
            Value::String(name) => {
                if !PRIMITIVES.contains(&name.as_str()) {
                    let name = name.clone();
                    *v = self.use_name(&name, ns)?;
                }
            }
            Value::Array(branches) => {
                for b in branches {
                    self.schema(b, ns)?;
                }
            }
            Value::Object(obj) => match obj.get("type") {
                Some(Value::String(t)) => match t.as_str() {
                    "record" | "error" | "enum" | "fixed" => self.define(v, ns)?,
                    "array" => {
                        if let Some(items) = obj.get_mut("items") {
                            self.schema(items, ns)?;
                        }
                    }
                    "map" => {
                        if let Some(values) = obj.get_mut("values") {
                            self.schema(values, ns)?;
                        }
                    }
                    t if PRIMITIVES.contains(&t) => {}
                    // `{"type": "com.acme.Address"}`: a use of a named type.
                    name => {
                        let name = name.to_string();
                        *v = self.use_name(&name, ns)?;
                    }
                },
                Some(_) => {
                    if let Some(nested) = obj.get_mut("type") {
                        self.schema(nested, ns)?;
                    }
                }
                None => {
                    return Err(RegistryError::invalid(format!(
                        "schema id {}: an Avro schema object has no `type`: {}",
                        self.id, v
                    )))
                }
            },
            other => {
                return Err(RegistryError::invalid(format!(
                    "schema id {}: `{other}` is not an Avro schema",
                    self.id
                )))
            }
        }
        Ok(())
    }

    /// A named type's definition at `v`: the first one is kept (normalised
    /// to a short name and an explicit namespace), a later one becomes a use
    /// by full name.
    fn define(&mut self, v: &mut Value, ns: &str) -> Result<()> {
        let Value::Object(obj) = v else {
            unreachable!("define is called on objects")
        };
        let (full, space) = full_name(obj, ns)?;
        if self.defined.contains(&full) {
            *v = Value::String(full);
            return Ok(());
        }
        self.defined.insert(full.clone());
        let short = full.rsplit('.').next().unwrap_or(&full).to_string();
        obj.insert("name".into(), Value::String(short));
        if space.is_empty() && ns.is_empty() {
            obj.remove("namespace");
        } else {
            obj.insert("namespace".into(), Value::String(space.clone()));
        }
        if let Some(Value::Array(fields)) = obj.get_mut("fields") {
            for field in fields {
                if let Some(t) = field.get_mut("type") {
                    self.schema(t, &space)?;
                }
            }
        }
        Ok(())
    }

    /// A use of the named type `name` inside namespace `ns`: its full name if
    /// already defined, else its definition from a reference.
    fn use_name(&mut self, name: &str, ns: &str) -> Result<Value> {
        let mut candidates = Vec::with_capacity(2);
        if !name.contains('.') && !ns.is_empty() {
            candidates.push(format!("{ns}.{name}"));
        }
        // A short name outside any namespace, or (as Java's Avro allows) a
        // type of the null namespace.
        candidates.push(name.to_string());
        for full in &candidates {
            if self.defined.contains(full) {
                return Ok(Value::String(full.clone()));
            }
            if let Some(mut definition) = self.available.get(full).cloned() {
                // Pin the type's namespace: where it lands, the enclosing
                // namespace may be another.
                let space = full.rsplit_once('.').map_or("", |(s, _)| s);
                if let Value::Object(obj) = &mut definition {
                    let dotted = obj
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.contains('.'));
                    if !dotted {
                        obj.insert("namespace".into(), Value::String(space.to_string()));
                    }
                }
                self.schema(&mut definition, ns)?;
                return Ok(definition);
            }
        }
        Err(RegistryError::invalid(format!(
            "schema id {} uses the Avro type `{name}`{}, which neither the schema nor its \
             references define (references must name the full name of the type they bring)",
            self.id,
            if ns.is_empty() {
                String::new()
            } else {
                format!(" (in namespace `{ns}`)")
            }
        )))
    }
}
