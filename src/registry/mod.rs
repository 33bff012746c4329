//! The Confluent Schema Registry: a client that fetches and caches schemas by
//! id (resolving schema references), and the Confluent wire format's framing
//! (`0x00`, 4-byte big-endian schema id, payload).
//!
//! Schema ids are immutable, so a schema fetched once is kept for the life of
//! the process; concurrent lookups of one id make one request. Every error
//! says whose fault it is ([`Classify`]): [`RegistryError::Unavailable`] is
//! the environment's (retry with [`RegistryConfig::backoff`](crate::config::RegistryConfig::backoff)), and so is
//! [`RegistryError::NotFound`] for a while, because a restarting registry
//! answers 404 for ids it holds until it has re-read its log;
//! [`SchemaRegistry::schema_patiently`] retries it for
//! `schema_registry.unknown_id_grace`, then answers
//! [`RegistryError::Unknown`], the message's fault (quarantine it), as is
//! [`RegistryError::Invalid`]. [`RegistryError::Unauthorized`],
//! [`RegistryError::Rejected`] and [`RegistryError::Config`] are the
//! operator's (stop and say what to fix).
//!
//! ```no_run
//! # async fn demo() -> inlet::registry::Result<()> {
//! use inlet::config::RegistryConfig;
//! use inlet::registry::{split_frame, SchemaRegistry};
//!
//! let registry = SchemaRegistry::new(&RegistryConfig::new("http://localhost:8081"))?;
//! let message: &[u8] = &[0, 0, 0, 0, 7, 2, 104, 105];
//! let (id, payload) = split_frame(message).expect("framed");
//! let schema = registry.schema(id).await?;
//! let avro = schema.avro_self_contained()?;
//! # let _ = (payload, avro);
//! # Ok(())
//! # }
//! ```

mod avro;
mod client;
mod grace;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use client::SchemaRegistry;
pub use grace::Lookup;

use crate::config::InvalidKey;
use crate::fault::{Classify, Fault};

/// Errors of the registry client. Each says whose fault it is ([`Classify`]);
/// none contains the password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry has no such schema id, subject or version (HTTP 404 with a
    /// Confluent error code 40401, 40402, 40403, ...). Not yet the message's
    /// fault: a Karapace or Confluent registry that restarts answers this for
    /// ids it holds while it re-reads its `_schemas` topic, so it is retried
    /// (see [`SchemaRegistry::schema_patiently`]) and becomes
    /// [`RegistryError::Unknown`] after `schema_registry.unknown_id_grace`.
    #[error("schema registry has no {what} (error {code}: {message})")]
    NotFound {
        /// What was looked up, e.g. "schema id 7".
        what: String,
        /// Confluent error code, e.g. 40403.
        code: u32,
        /// The registry's message.
        message: String,
    },
    /// The registry refused the credentials (HTTP 401) or the account may not
    /// read this (HTTP 403). The operator's fault.
    #[error(
        "schema registry refused access (HTTP {status}): {message}; check `schema_registry.username` \
         and `schema_registry.password`, and that the account may read the subjects"
    )]
    Unauthorized {
        /// HTTP status, 401 or 403.
        status: u16,
        /// The request and the registry's message.
        message: String,
    },
    /// The registry cannot be reached or cannot answer now: connection
    /// refused or reset, timeout, HTTP 5xx (50001 backend store, 50002
    /// timeout, 50003 forwarding), 408, 429. Transient: retry with backoff.
    #[error("schema registry unavailable: {message}")]
    Unavailable {
        /// The request and what went wrong.
        message: String,
        /// The transport's error (without the URL), where one failed.
        #[source]
        source: Option<Arc<reqwest::Error>>,
    },
    /// The registry refused the request in a way no retry will change (HTTP
    /// 4xx other than the above, e.g. 409 incompatible schema, 422 invalid
    /// schema, or 404 without a Confluent error code: the URL does not point at
    /// a registry). Not the message's fault: stop and tell the operator.
    #[error("schema registry rejected the request (HTTP {status}, error {code}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Confluent error code (the HTTP status when the body has none).
        code: u32,
        /// The request, the registry's message and, where there is one, a hint.
        message: String,
    },
    /// An answer or a schema inlet cannot use: a body that does not parse, a
    /// schema type inlet does not know, an Avro type no reference defines, a
    /// reference cycle. Permanent: the message goes to quarantine.
    #[error("invalid schema: {message}")]
    Invalid {
        /// What is wrong, naming the schema id or the request.
        message: String,
        /// The parser's error, where a body or schema does not parse.
        #[source]
        source: Option<Arc<serde_json::Error>>,
    },
    /// The registry still had no such schema after
    /// `schema_registry.unknown_id_grace` of retries: the message that names
    /// it goes to quarantine. Remembered for the life of the process, so
    /// later messages with this id cost no wait and no request.
    #[error(
        "schema registry has no {what} (error {code}: {message}), still after \
         {waited:.1?} of retries (`schema_registry.unknown_id_grace`)"
    )]
    Unknown {
        /// What was looked up, e.g. "schema id 7".
        what: String,
        /// Confluent error code of the last answer, e.g. 40403.
        code: u32,
        /// The registry's last message.
        message: String,
        /// How long inlet retried before giving up.
        waited: std::time::Duration,
    },
    /// A `[schema_registry]` key has a value the client cannot use.
    #[error(transparent)]
    Config(#[from] InvalidKey),
}

impl Classify for RegistryError {
    fn fault(&self) -> Fault {
        match self {
            // A 404 may be a registry re-reading its log: retried, for a
            // bounded time (the grace), by whoever looks it up.
            RegistryError::Unavailable { .. } | RegistryError::NotFound { .. } => {
                Fault::Environment
            }
            RegistryError::Unknown { .. } | RegistryError::Invalid { .. } => Fault::Message,
            RegistryError::Unauthorized { .. }
            | RegistryError::Rejected { .. }
            | RegistryError::Config(_) => Fault::Operator,
        }
    }
}

impl RegistryError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        RegistryError::Invalid {
            message: message.into(),
            source: None,
        }
    }

    /// [`RegistryError::Invalid`] for JSON that does not parse.
    pub(crate) fn not_json(message: impl Into<String>, source: serde_json::Error) -> Self {
        RegistryError::Invalid {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub(crate) fn config(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        RegistryError::Config(InvalidKey::new(key, problem, fix))
    }
}

/// Result alias for the registry client.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The format of a registered schema (the registry's `schemaType`; absent
/// means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    /// `AVRO`.
    Avro,
    /// `JSON` (JSON Schema).
    Json,
    /// `PROTOBUF`.
    Protobuf,
}

impl SchemaKind {
    /// The registry's name: `AVRO`, `JSON` or `PROTOBUF`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Json => "JSON",
            SchemaKind::Protobuf => "PROTOBUF",
        }
    }
}

impl fmt::Display for SchemaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchemaKind {
    type Err = RegistryError;

    /// Parses a `schemaType`, case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaKind::Avro),
            "JSON" => Ok(SchemaKind::Json),
            "PROTOBUF" => Ok(SchemaKind::Protobuf),
            _ => Err(RegistryError::invalid(format!(
                "schema type `{s}` is not one of AVRO, JSON, PROTOBUF"
            ))),
        }
    }
}

/// A schema's reference to a version of another subject: the named Avro type
/// or the JSON Schema document `name` is defined there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaReference {
    /// For Avro, the full name of the referenced type (`com.acme.Address`);
    /// for JSON Schema, the `$ref` the referencing schema uses.
    pub name: String,
    /// Subject holding the referenced schema.
    pub subject: String,
    /// Version of that subject.
    pub version: u32,
}

/// A registered schema with its references resolved, recursively.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSchema {
    /// Global schema id.
    pub id: u32,
    /// Avro, JSON Schema or Protobuf.
    pub kind: SchemaKind,
    /// The schema text, as registered.
    pub schema: String,
    /// Each reference with the schema it resolves to, in the registry's order.
    pub references: Vec<(SchemaReference, Arc<ResolvedSchema>)>,
}

impl ResolvedSchema {
    /// For JSON Schema: the referenced document a `$ref` of `name` means,
    /// searching this schema's references first, then theirs (breadth
    /// first). A `name` with a fragment (`address.json#/definitions/Street`)
    /// also matches a reference named without it (`address.json`).
    pub fn json_reference(&self, name: &str) -> Option<&ResolvedSchema> {
        self.find_reference(name).or_else(|| {
            let (document, _) = name.split_once('#')?;
            self.find_reference(document)
        })
    }

    fn find_reference(&self, name: &str) -> Option<&ResolvedSchema> {
        let mut level: Vec<&ResolvedSchema> = vec![self];
        let mut seen: Vec<*const ResolvedSchema> = Vec::new();
        while !level.is_empty() {
            let mut next = Vec::new();
            for schema in level {
                for (reference, target) in &schema.references {
                    if reference.name == name {
                        return Some(target);
                    }
                    let ptr = Arc::as_ptr(target);
                    if !seen.contains(&ptr) {
                        seen.push(ptr);
                        next.push(target.as_ref());
                    }
                }
            }
            level = next;
        }
        None
    }
}

/// First byte of a Confluent-framed message.
pub const MAGIC: u8 = 0;

/// Length of the Confluent frame header: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// Why bytes are not a Confluent-framed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("empty message: a Schema Registry message starts with the magic byte 0x00 and a 4-byte schema id")]
    Empty,
    /// The first byte is not [`MAGIC`].
    #[error("wrong magic byte 0x{0:02x} (expected 0x00): not a Schema Registry framed message")]
    WrongMagic(u8),
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("message of {0} bytes is shorter than the 5-byte header (magic byte and schema id)")]
    TooShort(usize),
}

/// Splits a Confluent-framed message into its schema id and payload.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    match bytes {
        [] => Err(FrameError::Empty),
        [magic, ..] if *magic != MAGIC => Err(FrameError::WrongMagic(*magic)),
        [_, a, b, c, d, payload @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => Err(FrameError::TooShort(bytes.len())),
    }
}

/// Frames `payload` for schema `id`: [`MAGIC`], the id big-endian, the payload.
pub fn frame(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
#[path = "../../tests/common/registry.rs"]
pub(crate) mod mock;

#[cfg(test)]
mod tests;
