//! Confluent-framed values (magic byte 0, 4-byte big-endian schema id, body):
//! Avro, JSON Schema and Protobuf, with writer schemas from the Schema Registry.
//!
//! A chunk is first split by schema id (the 5-byte header only). Each id is
//! fetched once and cached; while the registry is unreachable the chunk waits
//! and retries with backoff, so a transient outage never quarantines a
//! message. An id the registry answers 404 for is retried for
//! `schema_registry.unknown_id_grace` (a restarting registry answers 404 for
//! ids it holds), inside the chunk: the decode thread decides a chunk's
//! messages together, so no offset of the partition can be committed past a
//! message still waiting. An id still unknown after the grace, a schema of
//! the wrong kind or one that cannot be read is a permanent failure of the
//! messages carrying it, remembered for the life of the decoder: they are
//! rejected at the schema stage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;

use super::{AvroDecoder, AvroError, JsonDecoder, Part, ProtobufDecoder};
use crate::fault::{Backoff, Classify, Fault, Shutdown};
use crate::observability::events::{
    RegistryUnavailable, SchemaFetched, SchemaIdFoundAfterWait, SchemaIdGivenUp,
    SchemaIdNotFoundYet,
};
use crate::observability::{InternalEvent, Metrics};
use crate::record::{Rejection, Rejections, Stage};
use crate::registry::{
    split_frame, Lookup, RegistryError, ResolvedSchema, SchemaKind, SchemaRegistry,
};

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
    /// The registry refused our credentials or settings: the operator must
    /// act.
    #[error("schema registry: {0}")]
    Registry(#[source] RegistryError),
    /// Shutdown was requested while waiting for the registry.
    #[error("stopped while waiting for the schema registry")]
    Shutdown,
    /// The Avro decoder failed: it refused the bytes of a chunk as a whole
    /// (a message in it is at fault: [`super::ValueDecoder::decode`]'s panic
    /// boundary finds it and rejects it, so this never leaves that
    /// boundary), or a bug.
    #[error(transparent)]
    Avro(#[from] AvroError),
    /// The JSON decoder refused the bytes of a chunk as a whole: a message
    /// in it is at fault (this too never leaves the panic boundary).
    #[error("JSON decoder: {0}")]
    Json(#[source] ArrowError),
    /// Arrow failed where no message is at fault (a bug).
    #[error("{context}: {source}")]
    Arrow {
        /// What inlet was doing.
        context: &'static str,
        /// Arrow's error.
        #[source]
        source: ArrowError,
    },
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

impl Classify for FramedError {
    fn fault(&self) -> Fault {
        match self {
            FramedError::Registry(e) => e.fault(),
            // The chunk was not decided for want of the registry: it is read
            // again by the next run.
            FramedError::Shutdown => Fault::Environment,
            FramedError::Avro(e) => e.fault(),
            FramedError::Json(_) => Fault::Message,
            FramedError::Arrow { .. } | FramedError::Internal(_) => Fault::Internal,
        }
    }
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
            max_depth: crate::config::DEFAULT_MAX_DEPTH,
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
        rejected: &mut Rejections,
    ) -> Result<(), FramedError> {
        // Usually one id per chunk: a short vector beats a map.
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = super::not_tombstone(i, *v, rejected) else {
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
            // Ids are immutable: what is known of one, usable or refused,
            // stays so (an unknown id was given the grace already).
            if !self.known.contains_key(&id) {
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
        rejected.sort();
        Ok(())
    }

    fn decode_group(
        &mut self,
        id: u32,
        messages: &[(usize, &[u8])],
        rejected: &mut Rejections,
    ) -> Result<(RecordBatch, Vec<usize>), FramedError> {
        let mut rows = Vec::with_capacity(messages.len());
        match self.kind {
            FramedKind::Avro => {
                let batch = self
                    .avro
                    .decode(id, messages, &mut rows, rejected)
                    .map_err(FramedError::Avro)?;
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
                let mut local = Rejections::new();
                let batch = decoder
                    .decode(&bodies, &mut good, &mut local)
                    .map_err(FramedError::Json)?;
                rows.extend(good.iter().map(|&g| messages[g].0));
                rejected.merge_mapped(&mut local, |i| messages[i].0);
                Ok((batch, rows))
            }
            FramedKind::Protobuf => Err(FramedError::Internal(
                "Protobuf values are decoded per message type".into(),
            )),
        }
    }

    /// Fresh decoders for every known schema, after a refusal or a panic.
    pub(super) fn reset(&mut self) -> Result<(), FramedError> {
        self.avro.reset()?;
        for d in self.json.values_mut() {
            d.reset().map_err(|source| FramedError::Arrow {
                context: "JSON decoder",
                source,
            })?;
        }
        Ok(())
    }

    /// Fetches schema `id`, waiting out the registry's unavailability and,
    /// for the grace, its 404s.
    fn fetch(&mut self, id: u32) -> Result<Known, FramedError> {
        let backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let metrics = &self.metrics;
        let report = |event: Lookup<'_>| match event {
            Lookup::Unavailable { error, retry_in } => RegistryUnavailable {
                id,
                error: &error.to_string(),
                retry_in,
            }
            .emit(metrics),
            Lookup::NotFoundYet {
                error,
                retry_in,
                left,
            } => SchemaIdNotFoundYet {
                id,
                error: &error.to_string(),
                retry_in,
                left,
            }
            .emit(metrics),
            Lookup::FoundAfterWait { waited } => {
                SchemaIdFoundAfterWait { id, waited }.emit(metrics)
            }
            Lookup::GaveUp { error } => SchemaIdGivenUp {
                id,
                error: &error.to_string(),
            }
            .emit(metrics),
        };
        let lookup = self
            .registry
            .schema_patiently(id, backoff, &self.shutdown, report);
        match self.runtime.block_on(lookup) {
            Ok(schema) => {
                SchemaFetched { id }.emit(&self.metrics);
                Ok(self.compile(id, &schema))
            }
            Err(_) if self.shutdown.is_triggered() => Err(FramedError::Shutdown),
            Err(e) => match e.fault() {
                Fault::Message => Ok(Known::Refused(format!("schema id {id}: {e}"))),
                // Our credentials or settings, or a registry that stays down
                // past an (unbounded) backoff: no message is at fault.
                _ => Err(FramedError::Registry(e)),
            },
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
