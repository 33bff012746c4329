//! A Confluent Schema Registry for tests: the REST API's subset inlet uses,
//! with Confluent's status codes, error codes and id semantics, served over
//! HTTP on a 127.0.0.1 port chosen by the OS.
//!
//! Self-contained on purpose (std, tokio, hyper, hyper-util, http-body-util,
//! serde_json, tokio-rustls): the integration tests include it from
//! `tests/common`, and the registry client's unit tests include it with
//! `#[path]`. [`MockRegistry::start_tls`] serves HTTPS with the test
//! certificate in `tests/support/tls` (signed by `ca.pem` there).
//!
//! Faithful to Confluent in what a client can observe:
//! - ids are global and start at 1; the same schema (text, type and
//!   references) gets the same id under every subject; registering it again
//!   under a subject that has it returns the existing id without a new version;
//! - `schemaType` is omitted for AVRO, `references` when there are none;
//! - errors are `{"error_code": N, "message": "..."}` with 40401 (subject),
//!   40402 (version), 40403 (schema), 42201 (invalid schema), 42202 (invalid
//!   version), 401 (credentials), 404/405/415 (routing), 50001 (backend);
//! - responses are `application/vnd.schemaregistry.v1+json`; subjects in the
//!   path are percent-decoded.
//!
//! - [`MockRegistry::restart`] plays a Karapace (or Confluent) registry that
//!   has just started and is re-reading its `_schemas` topic: for a while it
//!   answers `GET /schemas/ids/{id}` with 404 and error code 40403 for ids it
//!   holds, `GET /subjects` with `[]`, a subject's versions with 40401, and
//!   `GET /_health` with `schema_registry_ready: false`.
//!
//! Left out: compatibility checks (409), deletes, modes, configs, contexts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How the registry fails after [`MockRegistry::go_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outage {
    /// Stops listening and closes open connections: connections are refused
    /// until [`MockRegistry::come_back`] listens on the same port again.
    Refuse,
    /// Answers every request with 500 and error code 50001, as Confluent does
    /// when its backing Kafka topic is unavailable.
    ServerError,
    /// Accepts connections and reads requests, but never answers.
    Hang,
}

/// A reference from one schema to a named type / document in another
/// subject's version: `(name, subject, version)`.
pub(crate) type Reference<'a> = (&'a str, &'a str, u32);

#[derive(Clone, PartialEq)]
struct Stored {
    kind: String,
    schema: String,
    references: Vec<(String, String, u32)>,
}

#[derive(Default)]
struct State {
    /// Schema `id` is at index `id - 1`.
    schemas: Vec<Stored>,
    /// Per subject, the id of each version (version `v` at index `v - 1`).
    subjects: BTreeMap<String, Vec<u32>>,
    /// Path of every request that reached the server.
    seen: Vec<String>,
    outage: Option<Outage>,
    /// Until then, the registry is re-reading its log (see
    /// [`MockRegistry::restart`]).
    reading_until: Option<Instant>,
}

impl State {
    /// Whether the registry is still re-reading its log after a restart.
    fn reading(&self) -> bool {
        self.reading_until.is_some_and(|t| Instant::now() < t)
    }
}

struct Shared {
    state: Mutex<State>,
    /// `Basic <base64(user:password)>` when basic auth is on.
    authorization: Option<String>,
    /// HTTPS instead of HTTP.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The test client certificate and key files that [`MockRegistry::start_mtls`]
/// accepts.
pub(crate) fn test_client_identity() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls");
    (dir.join("client.pem"), dir.join("client.key"))
}

/// The test CA that signed the mock's HTTPS certificate.
pub(crate) fn test_ca() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls/ca.pem")
}

fn tls_acceptor(client_auth: bool) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("test certificate")
        .collect::<Result<_, _>>()
        .expect("test certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("test key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if client_auth {
        // Clients must show a certificate signed by the test client CA.
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.join("client-ca.pem")).expect("client CA") {
            roots.add(ca.expect("client CA")).expect("client CA");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .expect("test certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

enum Command {
    /// Stop listening, drop open connections.
    Close(std_mpsc::Sender<()>),
    /// Listen again on the same port.
    Open(std_mpsc::Sender<Result<(), String>>),
    Stop,
}

/// A Schema Registry on its own thread; dropping it stops the server.
pub(crate) struct MockRegistry {
    shared: Arc<Shared>,
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockRegistry")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockRegistry {
    /// Starts a registry that needs no credentials.
    pub(crate) fn start() -> Self {
        Self::start_inner(None, None)
    }

    /// Starts a registry serving HTTPS (`https://127.0.0.1:<port>`) with a
    /// certificate signed by [`test_ca`].
    pub(crate) fn start_tls() -> Self {
        Self::start_inner(None, Some(false))
    }

    /// Like [`MockRegistry::start_tls`], and clients must present the test
    /// client certificate ([`test_client_identity`]).
    pub(crate) fn start_mtls() -> Self {
        Self::start_inner(None, Some(true))
    }

    /// Starts a registry that answers 401 unless a request carries these
    /// basic-auth credentials.
    pub(crate) fn start_with_basic_auth(user: &str, password: &str) -> Self {
        let token = base64(format!("{user}:{password}").as_bytes());
        Self::start_inner(Some(format!("Basic {token}")), None)
    }

    /// `tls`: None for HTTP, Some(true) when client certificates are required.
    fn start_inner(authorization: Option<String>, tls: Option<bool>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the mock registry");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("mock registry address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            authorization,
            tls: tls.map(tls_acceptor),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("mock-registry".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("mock registry runtime");
                    rt.block_on(serve(listener, addr, shared, rx));
                }
            })
            .expect("spawn the mock registry thread");
        MockRegistry {
            shared,
            addr,
            commands,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Registers a schema without HTTP, with the semantics of `POST
    /// /subjects/{subject}/versions`; returns its id. `kind` is the
    /// `schemaType` ("AVRO", "JSON" or "PROTOBUF"). Panics where the POST
    /// would answer an error (an unknown reference, a schema that is not JSON).
    pub(crate) fn register(
        &self,
        subject: &str,
        kind: &str,
        schema: &str,
        references: &[Reference<'_>],
    ) -> u32 {
        let stored = Stored {
            kind: kind.to_string(),
            schema: schema.to_string(),
            references: references
                .iter()
                .map(|(n, s, v)| (n.to_string(), s.to_string(), *v))
                .collect(),
        };
        let mut state = self.shared.state.lock().unwrap();
        match register(&mut state, subject, stored) {
            Ok(id) => id,
            Err((status, code, message)) => {
                panic!("mock registry refused the schema for {subject}: {status} {code} {message}")
            }
        }
    }

    /// Starts failing in the given way until [`MockRegistry::come_back`].
    /// With [`Outage::Refuse`], the port is closed when this returns.
    pub(crate) fn go_down(&self, how: Outage) {
        self.shared.state.lock().unwrap().outage = Some(how);
        if how == Outage::Refuse {
            let (tx, rx) = std_mpsc::channel();
            self.commands
                .send(Command::Close(tx))
                .expect("mock registry running");
            rx.recv().expect("mock registry closed its port");
        }
    }

    /// Ends an outage; after [`Outage::Refuse`], listens on the same port
    /// again (panics if another process took it meanwhile).
    pub(crate) fn come_back(&self) {
        let was = self.shared.state.lock().unwrap().outage.take();
        if was == Some(Outage::Refuse) {
            let (tx, rx) = std_mpsc::channel();
            self.commands
                .send(Command::Open(tx))
                .expect("mock registry running");
            if let Err(e) = rx.recv().expect("mock registry answers") {
                panic!("mock registry could not listen on {} again: {e}", self.addr);
            }
        }
    }

    /// Restarts the registry as Karapace does: for `window` from now it
    /// knows none of its schemas while it re-reads its `_schemas` topic
    /// (404 with 40403 for every id, `[]` for the subjects, 40401 for each
    /// subject, `schema_registry_ready: false`), then all of them again.
    /// During an outage, the window runs from now as well: call this before
    /// [`MockRegistry::come_back`] to come back re-reading.
    pub(crate) fn restart(&self, window: Duration) {
        self.shared.state.lock().unwrap().reading_until = Some(Instant::now() + window);
    }

    /// Whether the registry is still re-reading its log.
    pub(crate) fn is_reading(&self) -> bool {
        self.shared.state.lock().unwrap().reading()
    }

    /// Number of requests that reached the server whose path (as sent,
    /// still percent-encoded) starts with `path_prefix`.
    pub(crate) fn requests(&self, path_prefix: &str) -> usize {
        let state = self.shared.state.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|p| p.starts_with(path_prefix))
            .count()
    }
}

impl Drop for MockRegistry {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut listener = Some(TcpListener::from_std(listener).expect("tokio listener"));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Close(ack)) => {
                    listener = None;
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    let _ = ack.send(());
                }
                Some(Command::Open(ack)) => {
                    let result = listen_again(addr).await;
                    let result = match result {
                        Ok(l) => {
                            listener = Some(l);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = ack.send(result);
                }
                Some(Command::Stop) | None => break,
            },
            accepted = accept(listener.as_ref()) => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let tls = shared.tls.clone();
                    let service = service_fn(move |req| respond(shared.clone(), req));
                    match tls {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            // A client that does not trust the certificate
                            // fails the handshake: nothing to serve.
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn listen_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match attempt {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

type Answer = (StatusCode, String);

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Answer {
    let body = json!({"error_code": code, "message": message.into()});
    (status, body.to_string())
}

fn not_found_route() -> Answer {
    error(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
}

fn subject_not_found(subject: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        40401,
        format!("Subject '{subject}' not found."),
    )
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let outage = {
        let mut state = shared.state.lock().unwrap();
        state.seen.push(req.uri().path().to_string());
        state.outage
    };
    let (status, body) = match outage {
        Some(Outage::Hang) => hang().await,
        Some(Outage::ServerError) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            "Error in the backend data store",
        ),
        // Refuse closes the port; a request already read is answered 500.
        Some(Outage::Refuse) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            "Error in the backend data store",
        ),
        None => route(&shared, req).await,
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", CONTENT_TYPE);
    if status == StatusCode::UNAUTHORIZED {
        response = response.header("www-authenticate", "Basic realm=\"SchemaRegistry\"");
    }
    Ok(response
        .body(Full::new(Bytes::from(body)))
        .expect("response parts"))
}

fn hang() -> impl Future<Output = Answer> {
    std::future::pending()
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Answer {
    if let Some(expected) = &shared.authorization {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return error(StatusCode::UNAUTHORIZED, 401, "Unauthorized");
        }
    }
    if let Some(accept) = req.headers().get("accept").and_then(|v| v.to_str().ok()) {
        let acceptable = [
            "application/vnd.schemaregistry.v1+json",
            "application/vnd.schemaregistry+json",
            "application/json",
            "application/*",
            "*/*",
        ];
        if !accept
            .split(',')
            .any(|t| acceptable.contains(&t.split(';').next().unwrap_or("").trim()))
        {
            return error(StatusCode::NOT_ACCEPTABLE, 406, "HTTP 406 Not Acceptable");
        }
    }
    let Some(segments) = req
        .uri()
        .path()
        .strip_prefix('/')
        .unwrap_or("")
        .split('/')
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
    else {
        return not_found_route();
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().as_str().to_string();
    if method == "GET" {
        if let Some(answer) = while_reading(shared, &segments) {
            return answer;
        }
    }
    match (segments.as_slice(), method.as_str()) {
        (["subjects", subject, "versions"], "POST") => {
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
            let supported = [
                "application/vnd.schemaregistry.v1+json",
                "application/vnd.schemaregistry+json",
                "application/json",
                "application/octet-stream",
            ];
            if !content_type.is_some_and(|t| supported.contains(&t.as_str())) {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    415,
                    "HTTP 415 Unsupported Media Type",
                );
            }
            let subject = subject.to_string();
            let Ok(body) = req.into_body().collect().await else {
                return error(StatusCode::BAD_REQUEST, 400, "Bad Request");
            };
            post_version(shared, &subject, &body.to_bytes())
        }
        (["subjects"], "GET") => {
            let state = shared.state.lock().unwrap();
            let names: Vec<&String> = state.subjects.keys().collect();
            (StatusCode::OK, json!(names).to_string())
        }
        (["subjects", subject, "versions"], "GET") => {
            let state = shared.state.lock().unwrap();
            match state.subjects.get(*subject) {
                Some(ids) => {
                    let versions: Vec<usize> = (1..=ids.len()).collect();
                    (StatusCode::OK, json!(versions).to_string())
                }
                None => subject_not_found(subject),
            }
        }
        (["subjects", subject, "versions", version], "GET") => {
            let state = shared.state.lock().unwrap();
            match find_version(&state, subject, version) {
                Ok((v, id)) => {
                    let stored = &state.schemas[id as usize - 1];
                    let mut body = describe(stored);
                    body.insert("subject".into(), json!(subject));
                    body.insert("version".into(), json!(v));
                    body.insert("id".into(), json!(id));
                    (StatusCode::OK, Value::Object(body).to_string())
                }
                Err(e) => e,
            }
        }
        (["subjects", subject, "versions", version, "schema"], "GET") => {
            let state = shared.state.lock().unwrap();
            match find_version(&state, subject, version) {
                Ok((_, id)) => (
                    StatusCode::OK,
                    state.schemas[id as usize - 1].schema.clone(),
                ),
                Err(e) => e,
            }
        }
        (["schemas", "ids", id], "GET") => {
            let state = shared.state.lock().unwrap();
            match find_id(&state, id) {
                Ok(stored) => (StatusCode::OK, Value::Object(describe(stored)).to_string()),
                Err(e) => e,
            }
        }
        (["schemas", "ids", id, "schema"], "GET") => {
            let state = shared.state.lock().unwrap();
            match find_id(&state, id) {
                Ok(stored) => (StatusCode::OK, stored.schema.clone()),
                Err(e) => e,
            }
        }
        (["schemas", "types"], "GET") => (
            StatusCode::OK,
            json!(["JSON", "PROTOBUF", "AVRO"]).to_string(),
        ),
        (
            ["subjects"]
            | ["subjects", _, "versions"]
            | ["subjects", _, "versions", _]
            | ["subjects", _, "versions", _, "schema"]
            | ["schemas", "ids", _]
            | ["schemas", "ids", _, "schema"]
            | ["schemas", "types"],
            _,
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            405,
            "HTTP 405 Method Not Allowed",
        ),
        _ => not_found_route(),
    }
}

/// Karapace's answers while it re-reads its log after a restart (and its
/// health check at any time); `None` for what it answers as usual.
fn while_reading(shared: &Shared, segments: &[&str]) -> Option<Answer> {
    let reading = shared.state.lock().unwrap().reading();
    let answer = match segments {
        ["_health"] => (
            StatusCode::OK,
            json!({"status": "healthy", "schema_registry_ready": !reading}).to_string(),
        ),
        _ if !reading => return None,
        ["subjects"] => (StatusCode::OK, "[]".to_string()),
        ["subjects", subject, ..] => subject_not_found(subject),
        ["schemas", "ids", id] | ["schemas", "ids", id, "schema"] => error(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
        _ => return None,
    };
    Some(answer)
}

/// The `schema`, `schemaType` and `references` fields of a stored schema.
fn describe(stored: &Stored) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("schema".into(), json!(stored.schema));
    if stored.kind != "AVRO" {
        body.insert("schemaType".into(), json!(stored.kind));
    }
    if !stored.references.is_empty() {
        let refs: Vec<Value> = stored
            .references
            .iter()
            .map(|(n, s, v)| json!({"name": n, "subject": s, "version": v}))
            .collect();
        body.insert("references".into(), Value::Array(refs));
    }
    body
}

fn find_id<'a>(state: &'a State, id: &str) -> Result<&'a Stored, Answer> {
    // Jersey answers a path parameter that is not an int with a plain 404.
    let id: i64 = id.parse().map_err(|_| not_found_route())?;
    usize::try_from(id)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| state.schemas.get(i))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                40403,
                format!("Schema {id} not found"),
            )
        })
}

fn find_version(state: &State, subject: &str, version: &str) -> Result<(usize, u32), Answer> {
    let invalid = || {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
        )
    };
    let wanted = match version {
        "latest" | "-1" => None,
        v => match v.parse::<i32>() {
            Ok(n) if n >= 1 => Some(n as usize),
            _ => return Err(invalid()),
        },
    };
    let ids = state
        .subjects
        .get(subject)
        .ok_or_else(|| subject_not_found(subject))?;
    let v = wanted.unwrap_or(ids.len());
    match ids.get(v.wrapping_sub(1)) {
        Some(id) => Ok((v, *id)),
        None => Err(error(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        )),
    }
}

fn post_version(shared: &Shared, subject: &str, body: &[u8]) -> Answer {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, 400, "Bad Request");
    };
    let Some(schema) = body.get("schema").and_then(Value::as_str) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Empty schema");
    };
    let kind = match body.get("schemaType") {
        None | Some(Value::Null) => "AVRO".to_string(),
        Some(Value::String(k)) => k.clone(),
        Some(_) => return error(StatusCode::BAD_REQUEST, 400, "Bad Request"),
    };
    let mut references = Vec::new();
    if let Some(refs) = body.get("references").filter(|r| !r.is_null()) {
        let Some(refs) = refs.as_array() else {
            return error(StatusCode::BAD_REQUEST, 400, "Bad Request");
        };
        for r in refs {
            let name = r.get("name").and_then(Value::as_str);
            let subject = r.get("subject").and_then(Value::as_str);
            let version = r.get("version").and_then(Value::as_u64);
            match (name, subject, version) {
                (Some(n), Some(s), Some(v)) if v >= 1 && v <= u32::MAX as u64 => {
                    references.push((n.to_string(), s.to_string(), v as u32))
                }
                _ => return error(StatusCode::BAD_REQUEST, 400, "Bad Request"),
            }
        }
    }
    let stored = Stored {
        kind,
        schema: schema.to_string(),
        references,
    };
    let mut state = shared.state.lock().unwrap();
    match register(&mut state, subject, stored) {
        Ok(id) => (StatusCode::OK, json!({ "id": id }).to_string()),
        Err((status, code, message)) => error(status, code, message),
    }
}

fn register(
    state: &mut State,
    subject: &str,
    stored: Stored,
) -> Result<u32, (StatusCode, u32, String)> {
    let invalid = |details: String| {
        Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema {}, details: {details}", stored.schema),
        ))
    };
    match stored.kind.as_str() {
        "AVRO" | "JSON" => {
            if let Err(e) = serde_json::from_str::<Value>(&stored.schema) {
                return invalid(format!("not JSON: {e}"));
            }
        }
        "PROTOBUF" => {}
        other => {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("Invalid schema type {other}"),
            ))
        }
    }
    for (name, ref_subject, version) in &stored.references {
        let exists = state
            .subjects
            .get(ref_subject)
            .is_some_and(|ids| (*version as usize) >= 1 && (*version as usize) <= ids.len());
        if !exists {
            return invalid(format!(
                "reference {name} to version {version} of subject {ref_subject} does not exist"
            ));
        }
    }
    let id = match state.schemas.iter().position(|s| *s == stored) {
        Some(i) => i as u32 + 1,
        None => {
            state.schemas.push(stored);
            state.schemas.len() as u32
        }
    };
    let versions = state.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    Ok(id)
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
