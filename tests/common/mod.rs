//! Shared test harness: brokers started on 127.0.0.1 ports of their own
//! choosing, a producer that records where each message landed, the inlet
//! binary, and two independent table readers (delta-rs and DuckDB).
#![allow(dead_code)]

pub mod avro;
pub mod faults;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod s3;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// A Kafka-protocol broker the tests can create topics on.
pub trait Broker: Send {
    /// `host:port`.
    fn bootstrap(&self) -> String;
    /// Creates a topic and waits until its metadata is visible.
    fn create_topic(&mut self, name: &str, partitions: i32);
    /// Name for messages.
    fn kind(&self) -> &'static str;
}

/// librdkafka's mock cluster, run as a standalone process by `inlet-devkit`.
pub struct MockBroker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    bootstrap: String,
}

impl MockBroker {
    /// Starts a mock broker process.
    pub fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet-devkit"))
            .arg("mock-broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start inlet-devkit mock-broker");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("mock broker output");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .unwrap_or_else(|| panic!("unexpected mock broker output: {line}"))
            .to_string();
        MockBroker {
            child,
            stdin,
            stdout,
            bootstrap,
        }
    }
}

impl Broker for MockBroker {
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        writeln!(self.stdin, "create {name} {partitions}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("created {name}"));
        wait_for_topic(&self.bootstrap, name, partitions);
    }

    fn kind(&self) -> &'static str {
        "mock"
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tansu (memory storage), a second, independent broker implementation.
pub struct TansuBroker {
    child: Child,
    port: u16,
}

/// Path of the Tansu binary, from `INLET_TEST_TANSU` (set by scripts/test.sh).
pub fn tansu_binary() -> Option<PathBuf> {
    std::env::var_os("INLET_TEST_TANSU")
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

impl TansuBroker {
    /// Starts Tansu on a free port; `None` when the binary is not installed.
    /// Ready when it prints `ready in`: a port clash makes it exit 0 silently,
    /// and a TCP probe would then reach whoever owns the port.
    pub fn start() -> Option<Self> {
        let bin = tansu_binary()?;
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("tcp://127.0.0.1:{port}");
            let mut child = Command::new(&bin)
                .args(["broker", "--storage-engine", "memory://tansu/"])
                .args(["--listener-url", &addr, "--advertised-listener-url", &addr])
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tansu");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("ready in") {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(20)).is_ok()
                && child.try_wait().unwrap().is_none()
            {
                return Some(TansuBroker { child, port });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tansu did not start");
    }
}

impl Broker for TansuBroker {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let res = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("create topic");
        for r in res {
            r.expect("topic created");
        }
        wait_for_topic(&self.bootstrap(), name, partitions);
    }

    fn kind(&self) -> &'static str {
        "tansu"
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md
                .topics()
                .iter()
                .any(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} not visible");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Landed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Produces `payloads` (keys spread them over the partitions) and returns
/// where each landed, in order.
pub fn produce(bootstrap: &str, topic: &str, payloads: &[Vec<u8>]) -> Vec<Landed> {
    let values: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
    produce_values(bootstrap, topic, &values)
}

/// Like [`produce`], with tombstones (`None`) and values up to 16 MB.
pub fn produce_values(bootstrap: &str, topic: &str, values: &[Option<&[u8]>]) -> Vec<Landed> {
    let keys: Vec<Vec<u8>> = (0..values.len())
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    let records: Vec<Record<'_>> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| (Some(k.as_slice()), *v))
        .collect();
    produce_records(bootstrap, topic, &records)
}

/// A record to produce: key and value, `None` to leave one out.
pub type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Produces (key, value) records; `None` leaves the key or value out.
pub fn produce_records(bootstrap: &str, topic: &str, records: &[Record<'_>]) -> Vec<Landed> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", "16000000")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let landed = rt.block_on(async {
        let mut futs = Vec::with_capacity(records.len());
        for (k, v) in records {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = k {
                record = record.key(*k);
            }
            if let Some(v) = v {
                record = record.payload(*v);
            }
            futs.push(producer.send(record, Duration::from_secs(30)));
        }
        let mut out = Vec::with_capacity(futs.len());
        for f in futs {
            let d = f.await.expect("delivered");
            out.push(Landed {
                partition: d.partition,
                offset: d.offset,
            });
        }
        out
    });
    producer.flush(Duration::from_secs(10)).unwrap();
    landed
}

/// Produces `count` payloads made by `make(id)` in the background at about
/// `rate` per second. Returns the thread, where each landed (in order), and a
/// flag set once all are produced.
pub fn background_producer(
    bootstrap: String,
    topic: &'static str,
    count: u64,
    rate: u64,
    make: fn(u64) -> Vec<u8>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<Mutex<Vec<Landed>>>,
    Arc<AtomicBool>,
) {
    let landed = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (l, d) = (landed.clone(), done.clone());
    let handle = std::thread::spawn(move || {
        let per_batch = (rate / 10).max(1);
        let mut id = 0;
        while id < count {
            let n = per_batch.min(count - id);
            let payloads: Vec<Vec<u8>> = (id..id + n).map(make).collect();
            let got = produce(&bootstrap, topic, &payloads);
            l.lock().unwrap().extend(got);
            id += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        d.store(true, Ordering::Release);
    });
    (handle, landed, done)
}

/// A config with one table `events` (`id BIGINT`) at `uri`, for tests that
/// drive the sink directly; `extra` is appended to the table section.
pub fn sink_config(uri: &str, extra: &str) -> inlet::Config {
    inlet::pipeline::load_config_str(&format!(
        r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:1"
        group_id = "g"
        [sources.events]
        topics = ["events"]
        table = "events"
        [tables.events]
        uri = "{uri}"
        schema = "id BIGINT"
        {extra}
        "#
    ))
    .unwrap()
}

/// The progress of one partition of topic `events` under app id `inlet`.
pub fn progress(partition: i32, first: i64, last: i64) -> inlet::sink::PartitionProgress {
    inlet::sink::PartitionProgress {
        app_id: inlet::sink::txn_app_id("inlet", "events", partition),
        first,
        last,
    }
}

/// A JSON event with a unique id.
pub fn event(id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"user":"u{}","action":"click","amount":{}.5,"event_time":"2024-05-01T12:00:00Z"}}"#,
        id % 7,
        id % 100
    )
    .into_bytes()
}

/// A test workspace: config file and table directory (or S3 bucket).
pub struct Workspace {
    /// Temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// Tables live in this S3 bucket instead of `dir`.
    remote: Option<Remote>,
}

struct Remote {
    bucket: String,
    options: HashMap<String, String>,
    toml: String,
}

/// What a config for the tests contains.
pub struct ConfigSpec<'a> {
    /// Bootstrap servers.
    pub bootstrap: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// `[flush] max_rows`.
    pub max_rows: usize,
    /// `[flush] max_age`.
    pub max_age: &'a str,
    /// Extra TOML appended at the end.
    pub extra: &'a str,
    /// `session.timeout.ms`: how long the group waits for a killed member.
    pub session_timeout_ms: u32,
}

impl Workspace {
    /// A fresh workspace.
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            remote: None,
        }
    }

    /// A workspace whose tables live in a new bucket of `server`.
    pub fn on_s3(server: &s3::SeaweedS3, bucket: &str) -> Self {
        server.create_bucket(bucket);
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            remote: Some(Remote {
                bucket: bucket.to_string(),
                options: server.storage_options(),
                toml: server.storage_options_toml(),
            }),
        }
    }

    fn location(&self, name: &str) -> Location {
        match &self.remote {
            None => Location::local(&self.dir.path().join(name)),
            Some(r) => Location {
                uri: format!("s3://{}/{name}", r.bucket),
                options: r.options.clone(),
            },
        }
    }

    /// Where the table is.
    pub fn table_location(&self) -> Location {
        self.location("events")
    }

    /// Where the quarantine table is.
    pub fn quarantine_location(&self) -> Location {
        self.location("events_quarantine")
    }

    /// The table directory.
    pub fn table(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    /// The quarantine table directory.
    pub fn quarantine(&self) -> PathBuf {
        self.dir.path().join("events_quarantine")
    }

    /// Writes `inlet.toml` and returns its path.
    pub fn config(&self, spec: &ConfigSpec<'_>) -> PathBuf {
        let path = self.dir.path().join("inlet.toml");
        let toml = format!(
            r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[kafka.properties]
"session.timeout.ms" = "{session}"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP"

[tables.events.metadata_columns]
topic = "_topic"
partition = "_partition"
offset = "_offset"
timestamp = "_ts"
key = "_key"
headers = "_headers"
{storage}

[flush]
max_rows = {max_rows}
max_age = "{max_age}"

[commit]
retry_backoff = "50ms"
{extra}
"#,
            bootstrap = spec.bootstrap,
            group = spec.group,
            topic = spec.topic,
            table = self.table_location().uri,
            quarantine = self.quarantine_location().uri,
            storage = match &self.remote {
                None => String::new(),
                Some(r) => format!("[tables.events.storage_options]\n{}\n", r.toml),
            },
            max_rows = spec.max_rows,
            max_age = spec.max_age,
            extra = spec.extra,
            session = spec.session_timeout_ms,
        );
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// The inlet binary, logging with its default filter (or `INLET_TEST_LOG`).
pub fn inlet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inlet"));
    c.env_remove("INLET_LOG");
    if let Ok(filter) = std::env::var("INLET_TEST_LOG") {
        c.env("INLET_LOG", filter);
    }
    c
}

/// Runs `inlet run -c <config> --available-now` to completion, with a time limit.
pub fn run_available_now(config: &Path) -> std::process::Output {
    let child = inlet()
        .args(["run", "--available-now", "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// Waits for a child with a time limit, killing it on expiry. Its output is
/// drained while it runs, so a chatty child never blocks on a full pipe.
pub fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "inlet did not finish in {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// What a table holds, read with delta-rs (file list and txn actions from the
/// log) and the parquet crate (file contents).
#[derive(Debug, Default)]
pub struct TableContents {
    /// (partition, offset) of each row.
    pub coordinates: Vec<(i32, i64)>,
    /// `id` of each row.
    pub ids: Vec<i64>,
    /// Table version.
    pub version: i64,
    /// Number of data files.
    pub files: usize,
}

/// The version, the number of active files, and the record batches of every
/// active file of the table at `path` (file list from delta-rs, contents
/// from the parquet crate).
pub fn table_batches(path: &Path) -> (i64, usize, Vec<RecordBatch>) {
    table_batches_at(&Location::local(path)).expect("a table")
}

/// Where a table is: a URI and its object store options.
#[derive(Debug, Clone)]
pub struct Location {
    /// Table URI (local path or `s3://...`).
    pub uri: String,
    /// Object store options.
    pub options: HashMap<String, String>,
}

impl Location {
    /// A local table directory.
    pub fn local(path: &Path) -> Self {
        Location {
            uri: path.display().to_string(),
            options: HashMap::new(),
        }
    }
}

/// Like [`table_batches`], for any location, reading files through the
/// table's object store; `None` when there is no table.
pub fn table_batches_at(loc: &Location) -> Option<(i64, usize, Vec<RecordBatch>)> {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = deltalake::ensure_table_uri(&loc.uri).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(loc.options.clone())
            .build()
            .unwrap();
        match table.load().await {
            Ok(()) => {}
            Err(deltalake::DeltaTableError::NotATable(_)) => return None,
            Err(e) => panic!("open table {}: {e}", loc.uri),
        }
        let version = table.version().map_or(-1, |v| v as i64);
        let store = table.log_store().object_store(None);
        let paths: Vec<String> = table
            .snapshot()
            .unwrap()
            .log_data()
            .into_iter()
            .map(|f| f.path().to_string())
            .collect();
        let mut batches = Vec::new();
        for p in &paths {
            let path = deltalake::Path::parse(p).unwrap();
            let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
        Some((version, paths.len(), batches))
    })
}

/// Reads the table at `loc` (empty when there is none).
pub fn read_table_at(loc: &Location) -> TableContents {
    let Some((version, files, batches)) = table_batches_at(loc) else {
        return TableContents {
            version: -1,
            ..Default::default()
        };
    };
    let mut out = TableContents {
        version,
        files,
        ..Default::default()
    };
    for b in &batches {
        collect(b, &mut out);
    }
    out
}

/// Reads the table at `path` with delta-rs.
pub fn read_table(path: &Path) -> TableContents {
    read_table_at(&Location::local(path))
}

fn collect(batch: &RecordBatch, out: &mut TableContents) {
    let p = batch.column_by_name("_partition").unwrap();
    let o = batch.column_by_name("_offset").unwrap();
    let id = batch.column_by_name("id").unwrap();
    let (p, o, id) = (
        p.as_primitive::<Int32Type>(),
        o.as_primitive::<Int64Type>(),
        id.as_primitive::<Int64Type>(),
    );
    for i in 0..batch.num_rows() {
        out.coordinates.push((p.value(i), o.value(i)));
        if !id.is_null(i) {
            out.ids.push(id.value(i));
        }
    }
}

/// A quarantine row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Raw value.
    pub value: Option<Vec<u8>>,
    /// Stage.
    pub stage: String,
    /// Error text.
    pub error: String,
}

/// Reads a quarantine table with delta-rs and the parquet crate (empty when
/// it does not exist).
pub fn read_quarantine(path: &Path) -> Vec<QuarantineRow> {
    read_quarantine_at(&Location::local(path))
}

/// Reads the quarantine table at `loc` (empty when there is none).
pub fn read_quarantine_at(loc: &Location) -> Vec<QuarantineRow> {
    let Some((_, _, batches)) = table_batches_at(loc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in batches {
        let topic = b.column_by_name("topic").unwrap().as_string::<i32>();
        let part = b
            .column_by_name("partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        let off = b
            .column_by_name("offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        let value = b.column_by_name("value").unwrap().as_binary::<i32>();
        let stage = b.column_by_name("stage").unwrap().as_string::<i32>();
        let error = b.column_by_name("error").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push(QuarantineRow {
                topic: topic.value(i).to_string(),
                partition: part.value(i),
                offset: off.value(i),
                value: (!value.is_null(i)).then(|| value.value(i).to_vec()),
                stage: stage.value(i).to_string(),
                error: error.value(i).to_string(),
            });
        }
    }
    out
}

/// Asserts every coordinate in `expected` is in exactly one of the data rows
/// and the quarantine rows, and nothing else is in either.
pub fn assert_exactly_once_in_either(ws: &Workspace, expected: &[Landed]) {
    let mut all = read_table_at(&ws.table_location()).coordinates;
    all.extend(
        read_quarantine_at(&ws.quarantine_location())
            .into_iter()
            .map(|q| (q.partition, q.offset)),
    );
    assert_exactly_once(&all, expected);
}

/// The txn versions stored in the table for `app_ids`, read with delta-rs.
pub fn txn_versions(path: &Path, app_ids: &[String]) -> HashMap<String, Option<i64>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = url::Url::from_directory_path(path).unwrap();
        let table = deltalake::open_table(url).await.expect("open table");
        let snapshot = table.snapshot().unwrap();
        let mut out = HashMap::new();
        for id in app_ids {
            let v = snapshot
                .transaction_version(table.log_store().as_ref(), id)
                .await
                .unwrap();
            out.insert(id.clone(), v);
        }
        out
    })
}

/// Asserts every coordinate in `expected` appears exactly once in `actual`.
pub fn assert_exactly_once(actual: &[(i32, i64)], expected: &[Landed]) {
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for c in actual {
        *counts.entry(*c).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(dups.is_empty(), "duplicated rows (first 10): {dups:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|l| !counts.contains_key(&(l.partition, l.offset)))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing rows (first 10): {missing:?}");
    assert_eq!(actual.len(), expected.len(), "row count");
}

/// The last offset per partition of `landed`.
pub fn last_offsets(landed: &[Landed]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for l in landed {
        let e = m.entry(l.partition).or_insert(l.offset);
        *e = (*e).max(l.offset);
    }
    m
}

/// Reads the table with DuckDB's delta extension (a reader sharing no code
/// with delta-rs). `None` when the Python environment is not installed.
pub fn duckdb_read(
    path: &Path,
    txn_ids: &[String],
    sql: Option<&str>,
) -> Option<serde_json::Value> {
    let python = std::env::var_os("INLET_TEST_PYTHON")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/delta_read.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(path);
    for id in txn_ids {
        cmd.args(["--txn", id]);
    }
    if let Some(sql) = sql {
        cmd.args(["--sql", sql]);
    }
    let out = cmd.output().expect("run delta_read.py");
    assert!(
        out.status.success(),
        "delta_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("delta_read.py output is JSON"))
}

/// Whether CI requires the external parts (so a missing one is a failure,
/// not a skip).
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("INLET_TEST_REQUIRE_ALL").is_some()
}

/// Waits until the table holds at least `n` rows; on time-out, fails with the
/// log of the process that should have written them.
pub fn wait_rows(ws: &Workspace, writer: &process::Running, n: usize, limit: Duration) {
    wait_rows_at(&ws.table_location(), &[writer], n, limit);
}

/// Waits until the table at `loc` holds at least `n` rows; on time-out, fails
/// with the logs of the processes that should have written them.
pub fn wait_rows_at(loc: &Location, writers: &[&process::Running], n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let have = read_table_at(loc).coordinates.len();
        if have >= n {
            return;
        }
        let logs: Vec<String> = writers.iter().map(|w| w.log().join("\n")).collect();
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} rows landed; logs:\n{}",
            logs.join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The txn app ids (`test:<topic>:<partition>`) of the partitions in `landed`.
pub fn app_ids(landed: &[Landed], topic: &str) -> Vec<String> {
    last_offsets(landed)
        .keys()
        .map(|p| format!("test:{topic}:{p}"))
        .collect()
}

/// A crash loop: how many kills, when, and what is produced.
pub struct CrashLoop {
    /// Kill-and-restart rounds.
    pub iterations: usize,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u32,
    /// A kill comes this many milliseconds after a start.
    pub kill_window_ms: std::ops::Range<u64>,
    /// Each restart joins a new consumer group (see below).
    pub fresh_groups: bool,
    /// Message `id`: every 25th must be a poison pill, the rest events.
    pub make: fn(u64) -> Vec<u8>,
    /// Environment overrides for every process.
    pub env: Vec<(String, String)>,
    /// TOML appended to the config.
    pub extra: String,
}

/// Start `inlet run` while a producer writes, SIGKILL it at a random moment,
/// restart; `iterations` times. Then one last run drains the topic and stops
/// with SIGTERM. Every produced offset lands exactly once.
///
/// With `fresh_groups`, each restart joins a new consumer group. The mock
/// cluster's group coordinator stalls for minutes once killed members are in
/// a group (JoinGroup is not answered; Tansu and Kafka expire them after the
/// session timeout), so on the mock each process is alone in its group, and
/// its first join waits the mock's 3 s initial rebalance delay (a session
/// timeout below that makes the mock expire the member while it joins). Progress lives in the table either way; group takeover is
/// covered by the two-process test.
pub fn crash_loop(broker: &mut dyn Broker, run: &CrashLoop) {
    let iterations = run.iterations;
    let fresh_groups = run.fresh_groups;
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&ConfigSpec {
        bootstrap: &bootstrap,
        topic,
        group: "inlet-eo",
        max_rows: 400,
        max_age: "300ms",
        extra: &run.extra,
        session_timeout_ms: run.session_timeout_ms,
    });
    let total = 300 * iterations as u64;
    let (producer, landed, _) = background_producer(bootstrap.clone(), topic, total, 400, run.make);
    let mut rng = rand::rng();
    let mut kills_after_commit = 0;
    let group = |i: usize| format!("crash-{i}");
    let env = |g: &String| -> Vec<(&str, String)> {
        let mut env: Vec<(&str, String)> = run
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        if fresh_groups {
            env.push(("INLET_KAFKA__GROUP_ID", g.clone()));
        }
        env
    };
    let start = |i: usize| {
        let g = group(i);
        let e = env(&g);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        process::Running::start_with_env(&config, &e)
    };
    for i in 0..iterations {
        let mut inlet = start(i);
        // Every other kill waits for this process's first commit, then a
        // random moment of the window's width: on a slow, loaded machine a
        // fixed window from the start would land before any commit and test
        // little. The others fall anywhere in the window from the start
        // (startup, assignment, the first flush).
        if i % 2 == 0 {
            inlet.wait_for("batch committed", 1, Duration::from_secs(60));
        }
        let wait = Duration::from_millis(rng.random_range(run.kill_window_ms.clone()));
        let wait = if i % 2 == 0 {
            wait.saturating_sub(Duration::from_millis(run.kill_window_ms.start))
        } else {
            wait
        };
        std::thread::sleep(wait);
        let commits = inlet.count("batch committed");
        if commits > 0 {
            kills_after_commit += 1;
        }
        inlet.kill();
        eprintln!(
            "{} iteration {i}: killed after {wait:?}, {commits} commits",
            broker.kind()
        );
    }
    producer.join().unwrap();
    let landed = landed.lock().unwrap().clone();
    let mut last = start(iterations);
    wait_rows(
        &ws,
        &last,
        landed.len() - landed.len() / 25,
        Duration::from_secs(120),
    );
    last.signal("TERM");
    assert_eq!(last.wait(Duration::from_secs(60)), Some(0));
    // Poison pills are mixed in: every offset is in exactly one table.
    assert_exactly_once_in_either(&ws, &landed);
    let quarantined = read_quarantine(&ws.quarantine()).len();
    assert_eq!(quarantined, landed.len() / 25, "one poison pill in 25");
    if let Some(duck) = duckdb_read(&ws.table(), &[], None) {
        assert_eq!(
            duck["rows"],
            landed.len() - quarantined,
            "DuckDB sees the same rows"
        );
    }
    assert!(
        kills_after_commit >= iterations / 4,
        "too few kills landed after a commit ({kills_after_commit}); the loop tests little"
    );
}

/// Rows `from..from + n` of a table `id BIGINT`.
pub fn ids(from: i64, n: i64) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from_iter_values(
            from..from + n,
        ))],
    )
    .unwrap()
}

/// Eight writers of the table `tc` each write the same 500 rows and commit
/// them as partition 3's offsets 0..=499, all at once. Returns how many
/// commits went through (exactly one must).
pub async fn race_one_partition(tc: &inlet::config::TableConfig) -> usize {
    use deltalake::writer::DeltaWriter as _;
    use inlet::sink::{CommitOutcome, DeltaSink};
    let mut sinks = Vec::new();
    for _ in 0..8 {
        sinks.push(DeltaSink::open("events", tc).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for mut sink in sinks {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = sink.writer().unwrap();
            writer.write(ids(0, 500)).await.unwrap();
            let adds = writer.flush().await.unwrap();
            barrier.wait().await;
            sink.commit(
                adds,
                &sink.schema(),
                &[progress(3, 0, 499)],
                1,
                &inlet::config::CommitConfig::default(),
            )
            .await
            .unwrap()
        }));
    }
    let mut committed = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), CommitOutcome::Committed { .. }) {
            committed += 1;
        }
    }
    committed
}
