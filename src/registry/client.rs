//! The HTTP client: requests, the id cache, reference resolution.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;

use super::{RegistryError, ResolvedSchema, Result, SchemaKind, SchemaReference};
use crate::config::{InvalidKey, RegistryConfig};

const ACCEPT_VALUE: &str = "application/vnd.schemaregistry.v1+json, \
     application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5";
const POST_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Key prefix [`SchemaRegistry::new`] names in its configuration errors.
const SECTION: &str = "schema_registry";
/// Longest chain of references followed before giving up.
const MAX_REFERENCE_DEPTH: usize = 64;
/// Most ids remembered as unknown after their grace.
const MAX_REMEMBERED_UNKNOWN: usize = 10_000;

type Cell = Arc<OnceCell<Arc<ResolvedSchema>>>;

/// A Schema Registry client with a cache of schemas by id. Cheap to clone
/// (clones share the cache and the connection pool).
#[derive(Clone)]
pub struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Base URL, without credentials.
    base: Url,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    by_id: Mutex<HashMap<u32, Cell>>,
    by_version: Mutex<HashMap<(String, u32), Cell>>,
    requests: AtomicU64,
    /// `unknown_id_grace` of the configuration.
    unknown_id_grace: Duration,
    /// Ids still unknown after the grace, with the answer given up on: kept
    /// for the life of the process, so a poison pill costs the grace once.
    unknown: Mutex<HashMap<u32, RegistryError>>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.by_id.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url())
            .field("username", &self.inner.username)
            .field(
                "password",
                &self.inner.password.as_ref().map(|_| "<redacted>"),
            )
            .field("cached_schemas", &cached)
            .field("requests", &self.requests())
            .finish()
    }
}

/// Body of `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}`.
#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<ReferenceBody>>,
    #[serde(default)]
    id: Option<u32>,
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Deserialize)]
struct ReferenceBody {
    name: String,
    subject: String,
    version: i64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    schema: &'a str,
    #[serde(rename = "schemaType", skip_serializing_if = "Option::is_none")]
    schema_type: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    references: &'a [SchemaReference],
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

impl SchemaRegistry {
    /// Builds a client (HTTPS with rustls: the system's roots plus
    /// `ca_location`, and the client identity for mutual TLS). Makes no
    /// request. Errors are [`RegistryError::Config`].
    pub fn new(cfg: &RegistryConfig) -> Result<Self> {
        cfg.validate(SECTION)?;
        let mut base = Url::parse(&cfg.url).map_err(|e| {
            RegistryError::config(format!("{SECTION}.url"), e.to_string(), "fix the URL")
        })?;
        // validate() refused credentials in the URL; make sure none can leak.
        let _ = base.set_username("");
        let _ = base.set_password(None);

        let http = match client_builder(cfg, true)?.build() {
            Ok(http) => http,
            Err(e) => {
                // Which file is at fault: does it build without the identity?
                let ca_ok = client_builder(cfg, false)?.build().is_ok();
                let (name, files) = if ca_ok && cfg.certificate_location.is_some() {
                    ("certificate_location", "the client certificate and key")
                } else {
                    ("ca_location", "the CA certificates")
                };
                return Err(RegistryError::config(
                    format!("{SECTION}.{name}"),
                    format!("cannot set up TLS with {files}: {}", error_chain(&e)),
                    "use PEM files of X.509 v3 certificates, and the key that belongs to the \
                     client certificate",
                ));
            }
        };
        Ok(SchemaRegistry {
            inner: Arc::new(Inner {
                http,
                base,
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                timeout: cfg.timeout,
                by_id: Mutex::default(),
                by_version: Mutex::default(),
                requests: AtomicU64::new(0),
                unknown_id_grace: cfg.unknown_id_grace,
                unknown: Mutex::default(),
            }),
        })
    }

    /// The registry's base URL (never with credentials).
    pub fn url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// HTTP requests made so far (for tests and metrics).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// How long an id answered 404 is retried (`unknown_id_grace`).
    pub(super) fn unknown_id_grace(&self) -> Duration {
        self.inner.unknown_id_grace
    }

    /// The answer given up on for `id`, if its grace ran out before.
    pub(super) fn given_up(&self, id: u32) -> Option<RegistryError> {
        let map = self.inner.unknown.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id).cloned()
    }

    /// Remembers that `id` is unknown for the life of the process (up to
    /// [`MAX_REMEMBERED_UNKNOWN`] ids: garbage with a valid magic byte names
    /// random ids, and memory must stay bounded; an id beyond costs its grace
    /// again).
    pub(super) fn give_up(&self, id: u32, error: RegistryError) {
        let mut map = self.inner.unknown.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() < MAX_REMEMBERED_UNKNOWN {
            map.insert(id, error);
        }
    }

    /// The schema with global id `id`, references resolved (`GET
    /// /schemas/ids/{id}`, then `GET /subjects/{s}/versions/{v}` per
    /// reference). Cached forever: ids are immutable. Concurrent lookups of an
    /// id not yet cached make one request; a failed lookup is not cached.
    pub async fn schema(&self, id: u32) -> Result<Arc<ResolvedSchema>> {
        let cell = cell(&self.inner.by_id, id);
        let result = cell
            .get_or_try_init(|| async {
                let body: SchemaBody = self
                    .get(&["schemas", "ids", &id.to_string()], || {
                        format!("schema id {id}")
                    })
                    .await?;
                self.build(id, body, &[]).await
            })
            .await
            .cloned();
        if result.is_err() {
            // Keep no empty entry per bad id (garbage input names many).
            let mut map = self.inner.by_id.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&id)
                .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
            {
                map.remove(&id);
            }
        }
        result
    }

    /// The latest version of `subject` (`GET /subjects/{s}/versions/latest`).
    /// Not cached, as the latest version changes; the schema is added to the
    /// id cache.
    pub async fn latest(&self, subject: &str) -> Result<Arc<ResolvedSchema>> {
        let body: SchemaBody = self
            .get(&["subjects", subject, "versions", "latest"], || {
                format!("subject `{subject}`")
            })
            .await?;
        let (Some(id), Some(version)) = (body.id, body.version) else {
            return Err(RegistryError::invalid(format!(
                "the answer to GET {} has no `id` or `version`",
                self.endpoint(&["subjects", subject, "versions", "latest"])
            )));
        };
        let path = [(subject.to_string(), version)];
        let schema = self.build(id, body, &path).await?;
        let _ = cell(&self.inner.by_version, (subject.to_string(), version)).set(schema.clone());
        Ok(self.remember(schema))
    }

    /// The versions of `subject`, oldest first (`GET
    /// /subjects/{s}/versions`).
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        self.get(&["subjects", subject, "versions"], || {
            format!("subject `{subject}`")
        })
        .await
    }

    /// All subjects (`GET /subjects`).
    pub async fn subjects(&self) -> Result<Vec<String>> {
        self.get(&["subjects"], || "subject list".to_string()).await
    }

    /// Registers `schema` under `subject` (`POST /subjects/{s}/versions`) and
    /// returns its global id. Registering a schema the subject already has
    /// returns the existing id.
    pub async fn register(
        &self,
        subject: &str,
        kind: SchemaKind,
        schema: &str,
        references: &[SchemaReference],
    ) -> Result<u32> {
        let body = RegisterBody {
            schema,
            schema_type: (kind != SchemaKind::Avro).then(|| kind.as_str()),
            references,
        };
        let body = serde_json::to_vec(&body).expect("a request body serializes");
        let bytes = self
            .send(
                Method::POST,
                &["subjects", subject, "versions"],
                Some(body),
                || format!("subject `{subject}`"),
            )
            .await?;
        let answer: IdBody = self.parse(&["subjects", subject, "versions"], &bytes)?;
        Ok(answer.id)
    }

    /// Fetches a referenced version (cached by subject and version), its own
    /// references resolved. `path` is the chain of references that led here.
    fn version<'a>(
        &'a self,
        subject: &'a str,
        version: u32,
        path: &'a [(String, u32)],
    ) -> Pin<Box<dyn Future<Output = Result<Arc<ResolvedSchema>>> + Send + 'a>> {
        Box::pin(async move {
            if path.iter().any(|(s, v)| s == subject && *v == version)
                || path.len() >= MAX_REFERENCE_DEPTH
            {
                let chain: Vec<String> = path
                    .iter()
                    .map(|(s, v)| format!("{s} version {v}"))
                    .chain([format!("{subject} version {version}")])
                    .collect();
                return Err(RegistryError::invalid(format!(
                    "schema references form a cycle or are nested too deep: {}",
                    chain.join(" -> ")
                )));
            }
            let cell = cell(&self.inner.by_version, (subject.to_string(), version));
            let schema = cell
                .get_or_try_init(|| async {
                    let v = version.to_string();
                    let body: SchemaBody = self
                        .get(&["subjects", subject, "versions", &v], || {
                            format!("version {version} of subject `{subject}`")
                        })
                        .await?;
                    let Some(id) = body.id else {
                        return Err(RegistryError::invalid(format!(
                            "the answer to GET {} has no `id`",
                            self.endpoint(&["subjects", subject, "versions", &v])
                        )));
                    };
                    let mut path = path.to_vec();
                    path.push((subject.to_string(), version));
                    self.build(id, body, &path).await
                })
                .await?
                .clone();
            Ok(self.remember(schema))
        })
    }

    /// Resolves the references of a fetched schema.
    async fn build(
        &self,
        id: u32,
        body: SchemaBody,
        path: &[(String, u32)],
    ) -> Result<Arc<ResolvedSchema>> {
        let kind = match &body.schema_type {
            None => SchemaKind::Avro,
            Some(t) => t.parse().map_err(|_| {
                RegistryError::invalid(format!(
                    "schema id {id} has type `{t}`, which inlet does not know \
                     (it knows AVRO, JSON and PROTOBUF)"
                ))
            })?,
        };
        let mut references = Vec::new();
        for r in body.references.unwrap_or_default() {
            let version = u32::try_from(r.version)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    RegistryError::invalid(format!(
                        "schema id {id} references version {} of subject `{}`, \
                         which is not a version number",
                        r.version, r.subject
                    ))
                })?;
            let target = self
                .version(&r.subject, version, path)
                .await
                .map_err(|e| match e {
                    RegistryError::NotFound {
                        what,
                        code,
                        message,
                    } => RegistryError::NotFound {
                        what: format!("{what} (reference `{}` of schema id {id})", r.name),
                        code,
                        message,
                    },
                    other => other,
                })?;
            references.push((
                SchemaReference {
                    name: r.name,
                    subject: r.subject,
                    version,
                },
                target,
            ));
        }
        Ok(Arc::new(ResolvedSchema {
            id,
            kind,
            schema: body.schema,
            references,
        }))
    }

    /// Puts `schema` into the id cache; returns the cached one.
    fn remember(&self, schema: Arc<ResolvedSchema>) -> Arc<ResolvedSchema> {
        let cell = cell(&self.inner.by_id, schema.id);
        let _ = cell.set(schema.clone());
        cell.get().cloned().unwrap_or(schema)
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        segments: &[&str],
        what: impl Fn() -> String,
    ) -> Result<T> {
        let bytes = self.send(Method::GET, segments, None, what).await?;
        self.parse(segments, &bytes)
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, segments: &[&str], bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            let message = format!(
                "the answer to {} is not what a Schema Registry answers ({e}): {}",
                self.endpoint(segments),
                snippet(bytes)
            );
            RegistryError::not_json(message, e)
        })
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("validated http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Vec<u8>>,
        what: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        let url = self.endpoint(segments);
        let request_name = format!("{method} {url}");
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static(ACCEPT_VALUE));
        if let Some(user) = &self.inner.username {
            request = request.basic_auth(user, self.inner.password.as_deref());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static(POST_CONTENT_TYPE))
                .body(body);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            let detail = if e.is_timeout() {
                format!(
                    "no answer within {:?} (`{SECTION}.timeout`)",
                    self.inner.timeout
                )
            } else {
                error_chain(&e)
            };
            // An untrusted certificate does not heal by waiting: the
            // operator must name the CA.
            if detail.contains("invalid peer certificate") {
                return InvalidKey::new(
                    format!("{SECTION}.ca_location"),
                    format!(
                        "{request_name}: the registry's TLS certificate is not trusted: {detail}"
                    ),
                    "set it to the PEM file of the CA that signed the registry's certificate",
                )
                .because(e)
                .into();
            }
            if detail.contains("Certificate") || detail.contains("certificate") {
                return InvalidKey::new(
                    format!("{SECTION}.certificate_location"),
                    format!(
                        "{request_name}: the registry refused the TLS client certificate: {detail}"
                    ),
                    "set certificate_location and key_location to a client certificate the \
                     registry accepts",
                )
                .because(e)
                .into();
            }
            RegistryError::Unavailable {
                message: format!("{request_name}: {detail}"),
                source: Some(Arc::new(e)),
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(status_error(&request_name, status, &bytes, what))
    }
}

/// A client builder for `cfg`: rustls, timeouts, the CA certificates and,
/// with `with_identity`, the client certificate and key.
fn client_builder(cfg: &RegistryConfig, with_identity: bool) -> Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.ca_location {
        let key = format!("{SECTION}.ca_location");
        let pem = read_pem(&key, path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            RegistryError::config(
                &key,
                format!("`{}` is not a PEM certificate bundle ({e})", path.display()),
                "point it at the CA certificates in PEM (`-----BEGIN CERTIFICATE-----`)",
            )
        })?;
        if certs.is_empty() {
            return Err(RegistryError::config(
                &key,
                format!("`{}` holds no certificate", path.display()),
                "point it at the CA certificates in PEM (`-----BEGIN CERTIFICATE-----`)",
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (true, Some(cert_path), Some(key_path)) =
        (with_identity, &cfg.certificate_location, &cfg.key_location)
    {
        builder = builder.identity(identity(cert_path, key_path)?);
    }
    Ok(builder)
}

/// The cell of `key` in `map`, created empty if absent.
fn cell<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Cell>>, key: K) -> Cell {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_default().clone()
}

fn status_error(
    request: &str,
    status: StatusCode,
    body: &[u8],
    what: impl Fn() -> String,
) -> RegistryError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error_code,
            message,
        }) => (
            error_code
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(u32::from(status.as_u16())),
            message.unwrap_or_default(),
        ),
        Err(_) => (u32::from(status.as_u16()), snippet(body)),
    };
    match status.as_u16() {
        401 | 403 => RegistryError::Unauthorized {
            status: status.as_u16(),
            message: format!("{request}: {message}"),
        },
        404 if (40401..40500).contains(&code) => RegistryError::NotFound {
            what: what(),
            code,
            message,
        },
        404 => RegistryError::Rejected {
            status: 404,
            code,
            message: format!(
                "{request}: {message}; check `{SECTION}.url`: it must be the registry's base \
                 address, where GET /subjects answers"
            ),
        },
        408 | 429 | 500..=599 => RegistryError::Unavailable {
            message: format!("{request} answered HTTP {status} (error {code}): {message}"),
            source: None,
        },
        other => RegistryError::Rejected {
            status: other,
            code,
            message: format!("{request}: {message}"),
        },
    }
}

/// The start of a body, on one line, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None if text.is_empty() => "(empty body)".to_string(),
        None => text,
    }
}

/// An error and its sources, `: `-separated, without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

fn read_pem(key: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        RegistryError::config(
            key,
            format!("cannot read `{}`: {e}", path.display()),
            "point it at a readable PEM file",
        )
    })
}

/// The client identity: the certificate chain and the key, keeping only the
/// PEM blocks rustls reads (openssl adds e.g. `EC PARAMETERS`).
fn identity(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<reqwest::Identity> {
    let cert_key = format!("{SECTION}.certificate_location");
    let key_key = format!("{SECTION}.key_location");
    let certs = pem_blocks(&read_pem(&cert_key, cert_path)?, |label| {
        label == "CERTIFICATE"
    });
    if certs.is_empty() {
        return Err(RegistryError::config(
            cert_key,
            format!("`{}` holds no PEM certificate", cert_path.display()),
            "point it at the client certificate (`-----BEGIN CERTIFICATE-----`)",
        ));
    }
    let key_pem = read_pem(&key_key, key_path)?;
    if !pem_blocks(&key_pem, |label| label == "ENCRYPTED PRIVATE KEY").is_empty() {
        return Err(RegistryError::config(
            key_key,
            format!("the key in `{}` is encrypted", key_path.display()),
            "decrypt it (`openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`)",
        ));
    }
    let keys = pem_blocks(&key_pem, |label| {
        matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")
    });
    if keys.len() != 1 {
        return Err(RegistryError::config(
            key_key,
            format!(
                "`{}` holds {} private keys, not one",
                key_path.display(),
                keys.len()
            ),
            "point it at the certificate's unencrypted private key in PEM \
             (`-----BEGIN PRIVATE KEY-----`)",
        ));
    }
    let pem = [certs, keys].concat().join("\n");
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
        RegistryError::config(
            key_key,
            format!("the certificate and key do not load ({})", error_chain(&e)),
            "check that both are PEM and that the key belongs to the certificate",
        )
    })
}

/// The PEM blocks (BEGIN to END lines, inclusive) whose label `keep` accepts.
fn pem_blocks(pem: &[u8], keep: impl Fn(&str) -> bool) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_string(), vec![line]));
        } else if let Some((label, mut lines)) = current.take() {
            lines.push(line);
            if line.starts_with("-----END ") {
                if keep(&label) {
                    blocks.push(lines.join("\n"));
                }
            } else {
                current = Some((label, lines));
            }
        }
    }
    blocks
}
