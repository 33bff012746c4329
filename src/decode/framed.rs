//! Confluent-framed values (magic byte 0, 4-byte big-endian schema id, body):
//! Avro, JSON Schema and Protobuf, with writer schemas from the Schema Registry.
//!
//! A chunk is first split by schema id (the 5-byte header only). Each id is
//! fetched once and cached; while the registry is unreachable the chunk waits
//! and retries with backoff, so a transient outage never quarantines a
//! message. An id the registry does not know, a schema of the wrong kind or
//! one that cannot be read is a permanent failure of the messages carrying
//! it: they are rejected at the schema stage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;

use super::{AvroDecoder, JsonDecoder, Part, ProtobufDecoder, Rejection, Stage};
use crate::fault::{Backoff, Shutdown};
use crate::observability::events::{RegistryUnavailable, SchemaFetched};
use crate::observability::{InternalEvent, Metrics};
use crate::registry::{split_frame, RegistryError, ResolvedSchema, SchemaKind, SchemaRegistry};

/// Which framed format a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramedKind {
    /// Avro binary bodies.
    Avro,
    /// JSON bodies described by a JSON Schema.
    JsonSchema,
    /// Protobuf bodies after the message-index array.
    Protobuf,
}

/// The messages of one schema id in a chunk: (index, framed value).
type Group<'a> = (u32, Vec<(usize, &'a [u8])>);

/// What is known of a schema id.
enum Known {
    /// Decodable.
    Ready,
    /// Its messages are rejected for this reason.
    Refused(String),
}

/// A failure that stops decoding (not a message's fault).
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The registry refused our credentials: the operator must act.
    #[error("schema registry: {0}")]
    Registry(RegistryError),
    /// Shutdown was requested while waiting for the registry.
    #[error("stopped while waiting for the schema registry")]
    Shutdown,
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

/// Decodes Confluent-framed values of one table.
pub struct FramedDecoder {
    kind: FramedKind,
    registry: SchemaRegistry,
    runtime: tokio::runtime::Handle,
    backoff: (Duration, Duration),
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    known: HashMap<u32, Known>,
    avro: AvroDecoder,
    json: HashMap<u32, JsonDecoder>,
    protobuf: ProtobufDecoder,
    max_depth: usize,
}

impl std::fmt::Debug for FramedDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedDecoder")
            .field("kind", &self.kind)
            .field("schemas", &self.known.len())
            .finish()
    }
}

impl FramedDecoder {
    /// A decoder fetching schemas from `registry` on `runtime` (the decode
    /// thread is not a runtime thread, so it blocks on it).
    pub fn new(
        kind: FramedKind,
        registry: SchemaRegistry,
        runtime: tokio::runtime::Handle,
        backoff: (Duration, Duration),
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
    ) -> Self {
        FramedDecoder {
            kind,
            registry,
            runtime,
            backoff,
            shutdown,
            metrics,
            known: HashMap::new(),
            avro: AvroDecoder::new(),
            json: HashMap::new(),
            protobuf: ProtobufDecoder::new(),
            max_depth: super::DEFAULT_MAX_DEPTH,
        }
    }

    /// JSON Schema values nested deeper than `depth` are rejected.
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Decodes `values` into one part per schema id (in order of first
    /// appearance); unusable messages go to `rejected`.
    pub fn decode(
        &mut self,
        values: &[Option<&[u8]>],
        parts: &mut Vec<Part>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), FramedError> {
        // Only what this call adds is sorted below.
        let first_rejected = rejected.len();
        // Usually one id per chunk: a short vector beats a map.
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else {
                rejected.push(Rejection::new(i, Stage::Decode, "null value (tombstone)"));
                continue;
            };
            match split_frame(v) {
                Ok((id, _)) => match groups.iter_mut().find(|(g, _)| *g == id) {
                    Some((_, g)) => g.push((i, v)),
                    None => groups.push((id, vec![(i, v)])),
                },
                Err(e) => rejected.push(Rejection::new(
                    i,
                    Stage::Decode,
                    format!("bad Confluent framing: {e}"),
                )),
            }
        }
        for (id, messages) in groups {
            // An id the registry answered 404 for is asked again in the next
            // chunk: cheap, and right if it was registered meanwhile.
            if !matches!(self.known.get(&id), Some(Known::Ready)) {
                let known = self.fetch(id)?;
                self.known.insert(id, known);
            }
            match &self.known[&id] {
                Known::Refused(reason) => {
                    for (i, _) in messages {
                        rejected.push(Rejection::new(i, Stage::Schema, reason.clone()));
                    }
                }
                // One part per message type the values name.
                Known::Ready if self.kind == FramedKind::Protobuf => self
                    .protobuf
                    .decode(id, &messages, parts, rejected)
                    .map_err(FramedError::Internal)?,
                Known::Ready => {
                    let (batch, rows) = self.decode_group(id, &messages, rejected)?;
                    parts.push(Part {
                        schema_id: id,
                        batch,
                        rows,
                    });
                }
            }
        }
        rejected[first_rejected..].sort_by_key(|r| r.index);
        Ok(())
    }

    fn decode_group(
        &mut self,
        id: u32,
        messages: &[(usize, &[u8])],
        rejected: &mut Vec<Rejection>,
    ) -> Result<(RecordBatch, Vec<usize>), FramedError> {
        let mut rows = Vec::with_capacity(messages.len());
        match self.kind {
            FramedKind::Avro => {
                let batch = self
                    .avro
                    .decode(id, messages, &mut rows, rejected)
                    .map_err(FramedError::Internal)?;
                Ok((batch, rows))
            }
            FramedKind::JsonSchema => {
                let decoder = self
                    .json
                    .get_mut(&id)
                    .ok_or_else(|| FramedError::Internal(format!("no decoder for id {id}")))?;
                let bodies: Vec<Option<&[u8]>> =
                    messages.iter().map(|(_, v)| Some(&v[5..])).collect();
                let mut good = Vec::with_capacity(messages.len());
                let mut local = Vec::new();
                let batch = decoder
                    .decode(&bodies, &mut good, &mut local)
                    .map_err(|e| FramedError::Internal(format!("JSON decoder: {e}")))?;
                rows.extend(good.iter().map(|&g| messages[g].0));
                rejected.extend(local.into_iter().map(|mut r| {
                    r.index = messages[r.index].0;
                    r
                }));
                Ok((batch, rows))
            }
            FramedKind::Protobuf => Err(FramedError::Internal(
                "Protobuf values are decoded per message type".into(),
            )),
        }
    }

    /// Fetches schema `id`, waiting out transient registry failures.
    fn fetch(&mut self, id: u32) -> Result<Known, FramedError> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            if self.shutdown.is_triggered() {
                return Err(FramedError::Shutdown);
            }
            match self.runtime.block_on(self.registry.schema(id)) {
                Ok(schema) => {
                    SchemaFetched { id }.emit(&self.metrics);
                    return Ok(self.compile(id, &schema));
                }
                Err(e) if e.is_transient() => {
                    let Some(wait) = backoff.next_delay() else {
                        unreachable!("an unbounded backoff always has a next wait")
                    };
                    RegistryUnavailable {
                        id,
                        error: &e.to_string(),
                        retry_in: wait,
                    }
                    .emit(&self.metrics);
                    if !self.shutdown.sleep_blocking(wait) {
                        return Err(FramedError::Shutdown);
                    }
                }
                // Our credentials or settings: no message is at fault.
                Err(
                    e @ (RegistryError::Unauthorized { .. }
                    | RegistryError::Rejected { .. }
                    | RegistryError::Config { .. }),
                ) => return Err(FramedError::Registry(e)),
                Err(e) => return Ok(Known::Refused(format!("schema id {id}: {e}"))),
            }
        }
    }

    /// Makes a decoder for schema `id`, or the reason its messages are refused.
    fn compile(&mut self, id: u32, schema: &ResolvedSchema) -> Known {
        match (self.kind, schema.kind) {
            (FramedKind::Avro, SchemaKind::Avro) => {
                let text = match schema.avro_self_contained() {
                    Ok(t) => t,
                    Err(e) => return Known::Refused(format!("schema id {id}: {e}")),
                };
                match self.avro.add_schema(id, &text) {
                    Ok(_) => Known::Ready,
                    Err(e) => Known::Refused(format!(
                        "schema id {id}: Avro schema cannot be decoded: {e}"
                    )),
                }
            }
            (FramedKind::JsonSchema, SchemaKind::Json) => {
                let arrow = serde_json::from_str::<serde_json::Value>(&schema.schema)
                    .map_err(|e| e.to_string())
                    .and_then(|doc| {
                        let resolve = |name: &str| {
                            schema
                                .json_reference(name)
                                .and_then(|r| serde_json::from_str(&r.schema).ok())
                        };
                        crate::schema::json_schema_to_arrow(&doc, &resolve)
                            .map_err(|e| e.to_string())
                    });
                let arrow = match arrow {
                    Ok(a) => Arc::new(a),
                    Err(e) => return Known::Refused(format!("schema id {id}: JSON Schema: {e}")),
                };
                match JsonDecoder::new(arrow.clone()).map(|d| d.with_max_depth(self.max_depth)) {
                    Ok(d) => {
                        self.json.insert(id, d);
                        Known::Ready
                    }
                    Err(e) => Known::Refused(format!("schema id {id}: {e}")),
                }
            }
            (FramedKind::Protobuf, SchemaKind::Protobuf) => {
                match self.protobuf.add_schema(id, schema) {
                    Ok(()) => Known::Ready,
                    Err(e) => Known::Refused(format!("schema id {id}: {e}")),
                }
            }
            (want, got) => Known::Refused(format!(
                "schema id {id} is a {got:?} schema, but the topic is read as {want:?}"
            )),
        }
    }
}
