//! Scale-out on one S3 table: aggregate rows/s of 1, 2 and 4 `inlet run`
//! processes in one consumer group writing one Delta table on SeaweedFS, and
//! the table's commit-rate ceiling.
//!
//! 1. Starts SeaweedFS (`INLET_TEST_WEED`, as the tests do: 127.0.0.1, ports
//!    it picks, stopped at the end) and an in-process mock cluster (one
//!    broker, reached by the inlet processes over TCP), and preloads one
//!    topic with ~190 B JSON events.
//! 2. Each run starts N `inlet run` processes at once (long-running, in one
//!    group on the classic protocol: the mock holds a new group's first join
//!    for 3 s, so all N join one generation and nothing is rebalanced
//!    mid-run) on a table of its own (`s3://scaleout/run-K/events`, a new
//!    group id, so it reads the topic from the start). Time zero is when
//!    every process owns partitions and together they own all of them
//!    (`inlet_partitions_assigned`). A run ends when the table holds every
//!    message (`inlet_records_written_total`), or after a time limit; then
//!    SIGTERM, and every process must exit 0.
//! 3. From the table's Delta log (every commit file, read back from S3): the
//!    data commits, their rows and their `commitInfo` times. Rows/s and
//!    commits/s are over the window from time zero to the time limit, or
//!    for a run that read everything, to the commit that brought the table
//!    to 90% of the rows (so the flush of the last partial batches, up to
//!    `max_age` later, does not count). From each process's log: the
//!    versions lost to another writer (`another writer committed first`,
//!    debug level: the commit then re-reads the table and tries the next
//!    version), failed attempts retried (`commit attempt failed`) and
//!    fenced batches (`batch dropped`).
//! 4. Exactly once: the table is read back and each partition's `_offset`s
//!    must be 0, 1, … with none missing or repeated (all of the partition
//!    for a run that read everything).
//!
//! Two series: the scale-out runs (`SCALEOUT_PROCESSES`, default 1,2,4; each
//! `SCALEOUT_RUNS` times, reading all `SCALEOUT_MESSAGES`, with
//! `SCALEOUT_MAX_ROWS`/`SCALEOUT_MAX_AGE`), then the commit-rate sweep: for
//! each of `SCALEOUT_SWEEP_PROCESSES` and each of `SCALEOUT_SWEEP_ROWS`
//! (smaller flushes, more commits per second), one run of at most
//! `SCALEOUT_SWEEP_SECONDS`. The ceiling printed is the commit rate at which
//! lost versions first outnumber commits.
//!
//! `scripts/bench.sh --scaleout` builds inlet in release mode and runs it;
//! `SCALEOUT_PARTITIONS` sets the topic's partitions. Not part of the test
//! suite.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod support;
use support::payload;

// The tests' SeaweedFS harness and table reader.
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/s3.rs"]
mod s3;
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/tables.rs"]
mod tables;

const TOPIC: &str = "scaleout";
const BUCKET: &str = "scaleout";

/// A free TCP port on 127.0.0.1 (for the SeaweedFS harness).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Args {
    inlet: String,
    messages: u64,
    partitions: i32,
    processes: Vec<usize>,
    runs: usize,
    max_rows: u64,
    max_age: String,
    sweep_processes: Vec<usize>,
    sweep_rows: Vec<u64>,
    sweep_seconds: u64,
    /// Between process starts (0: all at once, one group generation; more
    /// than the mock's 3 s join delay: a rebalance per process).
    stagger: Duration,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}")),
        Err(_) => default,
    }
}

fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    let v = std::env::var(name).unwrap_or_else(|_| default.to_string());
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {s:?}"))
        })
        .collect()
}

fn args() -> Args {
    let mut inlet = "target/release/inlet".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--inlet" => inlet = it.next().expect("--inlet BIN"),
            "--bench" => {}
            other => panic!("unknown flag {other} (sizes are SCALEOUT_* variables)"),
        }
    }
    Args {
        inlet,
        messages: env("SCALEOUT_MESSAGES", 2_000_000),
        partitions: env("SCALEOUT_PARTITIONS", 128),
        processes: env_list("SCALEOUT_PROCESSES", "1,2,4"),
        runs: env("SCALEOUT_RUNS", 3),
        max_rows: env("SCALEOUT_MAX_ROWS", 50_000),
        max_age: env("SCALEOUT_MAX_AGE", "1s".to_string()),
        sweep_processes: env_list("SCALEOUT_SWEEP_PROCESSES", "2,4,8"),
        sweep_rows: env_list("SCALEOUT_SWEEP_ROWS", "2000,500,200,50"),
        sweep_seconds: env("SCALEOUT_SWEEP_SECONDS", 20),
        stagger: Duration::from_millis(env("SCALEOUT_STAGGER_MS", 0)),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends `n` JSON events to the topic (keyed, spread by the partitioner);
/// the messages each partition holds afterwards.
fn preload(bootstrap: &str, n: u64, partitions: i32) -> BTreeMap<i32, i64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut json = String::with_capacity(256);
    for id in 0..n {
        payload(id, &mut json);
        let key = id.to_le_bytes();
        loop {
            let record = BaseRecord::to(TOPIC).key(&key[..]).payload(&json);
            match producer.send(record) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "the mock cluster dropped messages of partition {p}: use more partitions"
            );
            (p, high)
        })
        .collect()
}

/// One run's settings.
#[derive(Clone)]
struct RunSpec {
    processes: usize,
    max_rows: u64,
    max_age: String,
    /// Stop after this long from time zero (else when every message is in).
    limit: Option<Duration>,
}

/// One `inlet run` process of a run.
struct Proc {
    child: Child,
    log: PathBuf,
    metrics: u16,
}

impl Proc {
    fn start(inlet: &str, config: &Path, log: PathBuf) -> Proc {
        let metrics = free_port();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(inlet)
            .args(["run", "-c"])
            .arg(config)
            .env("INLET_METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
            // Versions lost to another writer are logged at debug level.
            .env(
                "INLET_LOG",
                "warn,inlet=info,inlet::sink::delta=debug,buoyant_kernel=off",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {inlet}: {e}"));
        Proc {
            child,
            log,
            metrics,
        }
    }

    /// The sum of a metric's samples (all label sets); `None` while the
    /// endpoint does not answer.
    fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    fn count(&self, needle: &str) -> usize {
        self.lines(needle).len()
    }

    fn lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The table versions this process says it committed.
    fn versions(&self) -> Vec<i64> {
        self.lines("batch committed")
            .iter()
            .filter_map(|l| {
                let v = &l[l.find(" version=")? + 9..];
                v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            })
            .collect()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The body of `GET path` on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// One data commit of the table's log.
#[derive(Debug)]
struct LogCommit {
    /// `commitInfo.timestamp`, ms.
    at: i64,
    rows: u64,
}

/// The data commits (those adding files) of the table at `uri`, read
/// commit by commit from the store.
fn data_commits(s3: &s3::SeaweedS3, uri: &str) -> Vec<LogCommit> {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    use futures::TryStreamExt as _;
    let url = deltalake::ensure_table_uri(uri).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .with_storage_options(s3.storage_options())
        .build()
        .unwrap();
    let store = table.log_store().object_store(None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = deltalake::Path::from("_delta_log");
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut out = Vec::new();
        for o in objects {
            let name = o.location.filename().unwrap_or_default().to_string();
            if !name.ends_with(".json") || name.contains(".tmp") || name.starts_with('_') {
                continue;
            }
            let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            let (mut at, mut rows, mut adds) = (0, 0, 0);
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                if let Some(ts) = v["commitInfo"]["timestamp"].as_i64() {
                    at = ts;
                }
                if let Some(stats) = v["add"]["stats"].as_str() {
                    adds += 1;
                    let s: serde_json::Value = serde_json::from_str(stats).unwrap();
                    rows += s["numRecords"].as_u64().unwrap_or(0);
                }
            }
            if adds > 0 {
                out.push(LogCommit { at, rows });
            }
        }
        out.sort_by_key(|c| c.at);
        out
    })
}

/// Checks that each partition's offsets in the table are 0, 1, … once
/// each, all of them when `complete`; the rows.
fn exactly_once(
    loc: &tables::Location,
    held: &BTreeMap<i32, i64>,
    complete: bool,
) -> Result<u64, String> {
    let table = tables::read_table_at(loc);
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in &table.coordinates {
        by_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &mut by_partition {
        offsets.sort_unstable();
        if let Some(at) = offsets.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("partition {p}: offset {} twice", at[0]));
        }
        if offsets.first().is_some_and(|o| *o != 0) {
            return Err(format!("partition {p}: starts at {}", offsets[0]));
        }
        if let Some(i) = (0..offsets.len()).find(|i| offsets[*i] != *i as i64) {
            return Err(format!("partition {p}: offset {i} missing"));
        }
    }
    if complete {
        for (p, high) in held {
            let have = by_partition.get(p).map_or(0, Vec::len) as i64;
            if have != *high {
                return Err(format!("partition {p}: {have} of {high} offsets"));
            }
        }
    }
    Ok(table.coordinates.len() as u64)
}

/// What a run measured.
struct RunResult {
    spec: RunSpec,
    /// Seconds of the window.
    window: f64,
    rows_in_window: u64,
    commits_in_window: usize,
    /// Over the whole run.
    commits: usize,
    rows: u64,
    lost_versions: usize,
    retries: usize,
    fenced: usize,
    /// Rebalances seen (revocations, over all processes).
    revoked: usize,
}

impl RunResult {
    fn rows_per_s(&self) -> f64 {
        self.rows_in_window as f64 / self.window
    }
    fn commits_per_s(&self) -> f64 {
        self.commits_in_window as f64 / self.window
    }
    fn lost_per_commit(&self) -> f64 {
        self.lost_versions as f64 / self.commits.max(1) as f64
    }
}

/// The inlet config of one run.
fn config(bootstrap: &str, uri: &str, group: &str, spec: &RunSpec, s3: &s3::SeaweedS3) -> String {
    format!(
        r#"app_id = "bench"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
[sources.events]
topics = ["{TOPIC}"]
table = "events"
[tables.events]
uri = "{uri}"
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING"
[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"
[tables.events.storage_options]
{storage}
[flush]
max_rows = {max_rows}
max_age = "{max_age}"
[commit]
retry_backoff = "50ms"
max_attempts = 50
"#,
        storage = s3.storage_options_toml(),
        max_rows = spec.max_rows,
        max_age = spec.max_age,
    )
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts the run's processes and waits until they own every partition
/// between them (each some).
fn start_group(
    a: &Args,
    spec: &RunSpec,
    config: &Path,
    dir: &Path,
    partitions: usize,
    k: usize,
) -> Vec<Proc> {
    let procs: Vec<Proc> = (0..spec.processes)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(a.stagger);
            }
            Proc::start(&a.inlet, config, dir.join(format!("inlet-{i}.log")))
        })
        .collect();
    let all = partitions as f64;
    let assigned = wait_until(Duration::from_secs(90), || {
        let owned: Vec<f64> = procs
            .iter()
            .map(|p| p.metric("inlet_partitions_assigned").unwrap_or(0.0))
            .collect();
        owned.iter().all(|o| *o > 0.0) && owned.iter().sum::<f64>() == all
    });
    if !assigned {
        // Rebalancing went on (many processes on a loaded machine): time
        // zero is now, and the line says so.
        eprintln!("run {k}: the group did not settle in 90 s; measuring from now");
    }
    procs
}

/// SIGTERM to every process; each must exit 0.
fn stop(procs: &mut [Proc]) {
    for p in procs.iter() {
        signal(&p.child, "-TERM");
    }
    for (i, p) in procs.iter_mut().enumerate() {
        let ok = wait_until(Duration::from_secs(60), || p.exited().is_some());
        let status = p.exited();
        assert!(
            ok && status.is_some_and(|s| s.success()),
            "inlet process {i} did not stop cleanly ({status:?}): {}",
            p.tail()
        );
    }
}

/// Versions claimed by two commits of the run's processes: the store let
/// one conditional put overwrite another, and a commit was lost.
fn claimed_twice(procs: &[Proc]) -> usize {
    let mut claimed: Vec<i64> = procs.iter().flat_map(Proc::versions).collect();
    let said = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    said - claimed.len()
}

fn run(
    a: &Args,
    s3: &s3::SeaweedS3,
    bootstrap: &str,
    held: &BTreeMap<i32, i64>,
    k: usize,
    spec: &RunSpec,
) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("s3://{BUCKET}/run-{k}/events");
    let config_path = dir.path().join("inlet.toml");
    let group = format!("scaleout-{k}");
    std::fs::write(&config_path, config(bootstrap, &uri, &group, spec, s3)).unwrap();
    let total: i64 = held.values().sum();
    let mut procs = start_group(a, spec, &config_path, dir.path(), held.len(), k);
    let t0 = now_ms();
    let started = Instant::now();
    let limit = spec.limit.unwrap_or(Duration::from_secs(600));
    let mut failed = None;
    let complete = wait_until(limit, || {
        if let Some(i) = procs.iter_mut().position(|p| p.exited().is_some()) {
            failed = Some(i);
            return true;
        }
        let written: f64 = procs
            .iter()
            .map(|p| p.metric("inlet_records_written_total").unwrap_or(0.0))
            .sum();
        written >= total as f64
    });
    if let Some(i) = failed {
        panic!("inlet process {i} exited: {}", procs[i].tail());
    }
    assert!(
        complete || spec.limit.is_some(),
        "not all {total} rows committed within {limit:?}"
    );
    let stopped = started.elapsed();
    stop(&mut procs);
    // What made attempts fail (to stderr, for a look).
    for p in &procs {
        for l in p.lines("commit attempt failed").iter().take(3) {
            eprintln!("run {k}: {l}");
        }
    }
    let commits = data_commits(s3, &uri);
    let rows: u64 = commits.iter().map(|c| c.rows).sum();
    // The window: to the time limit, or to the commit that brought the
    // table to 90% of everything.
    let t_end = if complete {
        let mut sum = 0;
        commits
            .iter()
            .find(|c| {
                sum += c.rows;
                sum * 10 >= total as u64 * 9
            })
            .map_or(t0 + stopped.as_millis() as i64, |c| c.at)
    } else {
        t0 + stopped.as_millis() as i64
    };
    let in_window: Vec<&LogCommit> = commits
        .iter()
        .filter(|c| c.at > t0 && c.at <= t_end)
        .collect();
    let loc = tables::Location {
        uri: uri.clone(),
        options: s3.storage_options(),
    };
    let twice = claimed_twice(&procs);
    if twice > 0 {
        eprintln!("run {k}: {twice} table version(s) claimed by two commits");
    }
    let checked = match exactly_once(&loc, held, complete) {
        Ok(rows) => rows,
        Err(e) => {
            // Keep the evidence: the table (downloaded) and the logs.
            let keep = dir.keep();
            s3.download_dir(&uri, &keep.join("table"));
            // Fewer rows read back than the log's adds hold: the reader
            // (a checkpoint) lost files; as many: they were never committed.
            let read = tables::read_table_at(&loc).coordinates.len();
            panic!(
                "run {k}: {e} ({read} rows read back, {rows} in the log's adds, {twice} versions claimed twice); \
                 the table and the logs are in {}",
                keep.display()
            );
        }
    };
    assert_eq!(checked, rows, "rows read back vs the log's numRecords");
    RunResult {
        spec: spec.clone(),
        window: (t_end - t0).max(1) as f64 / 1000.0,
        rows_in_window: in_window.iter().map(|c| c.rows).sum(),
        commits_in_window: in_window.len(),
        commits: commits.len(),
        rows,
        lost_versions: procs
            .iter()
            .map(|p| p.count("another writer committed first"))
            .sum(),
        retries: procs.iter().map(|p| p.count("commit attempt failed")).sum(),
        fenced: procs.iter().map(|p| p.count("batch dropped")).sum(),
        revoked: procs.iter().map(|p| p.count("partitions revoked")).sum(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const HEADER: &str = "processes  max_rows  window s      rows/s  commits/s  rows/commit  commits  lost versions  lost/commit  retries  fenced  revoked  exactly once";

fn line(r: &RunResult) -> String {
    format!(
        "{:>9}  {:>8}  {:>8.1}  {:>10.0}  {:>9.1}  {:>11.0}  {:>7}  {:>13}  {:>11.2}  {:>7}  {:>6}  {:>7}  {} rows",
        r.spec.processes,
        r.spec.max_rows,
        r.window,
        r.rows_per_s(),
        r.commits_per_s(),
        r.rows as f64 / r.commits.max(1) as f64,
        r.commits,
        r.lost_versions,
        r.lost_per_commit(),
        r.retries,
        r.fenced,
        r.revoked,
        r.rows,
    )
}

fn main() {
    let a = args();
    let Some(s3) = s3::SeaweedS3::start() else {
        panic!("SeaweedFS is needed: set INLET_TEST_WEED (scripts/install-test-deps.sh)");
    };
    s3.create_bucket(BUCKET);
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, a.partitions, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    eprintln!(
        "preloading {} JSON messages over {} partitions…",
        a.messages, a.partitions
    );
    let held = preload(&bootstrap, a.messages, a.partitions);
    let total: i64 = held.values().sum();
    eprintln!("{total} messages held");
    let mut k = 0;
    println!(
        "scale-out: {total} messages, max_rows {}, max_age {}",
        a.max_rows, a.max_age
    );
    println!("{HEADER}");
    let mut medians = Vec::new();
    for &n in &a.processes {
        let spec = RunSpec {
            processes: n,
            max_rows: a.max_rows,
            max_age: a.max_age.clone(),
            limit: None,
        };
        let mut rates = Vec::new();
        for _ in 0..a.runs {
            k += 1;
            let r = run(&a, &s3, &bootstrap, &held, k, &spec);
            println!("{}", line(&r));
            rates.push(r.rows_per_s());
        }
        medians.push((n, median(rates)));
    }
    let one = medians.iter().find(|(n, _)| *n == 1).map(|(_, r)| *r);
    for (n, r) in &medians {
        let scale = one.map_or(String::new(), |o| format!(", {:.2}× one process", r / o));
        println!("median  {n} process(es): {r:.0} rows/s{scale}");
    }
    if a.sweep_rows.is_empty() || a.sweep_processes.is_empty() {
        return;
    }
    println!(
        "commit-rate sweep: at most {} s per point, max_age {}",
        a.sweep_seconds, a.max_age
    );
    println!("{HEADER}");
    let mut sweep = Vec::new();
    for &n in &a.sweep_processes {
        for &rows in &a.sweep_rows {
            k += 1;
            let spec = RunSpec {
                processes: n,
                max_rows: rows,
                max_age: a.max_age.clone(),
                limit: Some(Duration::from_secs(a.sweep_seconds)),
            };
            let r = run(&a, &s3, &bootstrap, &held, k, &spec);
            println!("{}", line(&r));
            sweep.push(r);
        }
    }
    let best = sweep
        .iter()
        .map(RunResult::commits_per_s)
        .fold(0.0, f64::max);
    println!("highest commit rate reached: {best:.1} commits/s");
    let mut over: Vec<&RunResult> = sweep.iter().filter(|r| r.lost_per_commit() > 1.0).collect();
    over.sort_by(|x, y| x.commits_per_s().total_cmp(&y.commits_per_s()));
    match over.first() {
        Some(r) => println!(
            "ceiling: lost versions outnumber commits from {:.1} commits/s ({} processes, max_rows {})",
            r.commits_per_s(),
            r.spec.processes,
            r.spec.max_rows
        ),
        None => println!("ceiling: not reached (lost versions never outnumbered commits)"),
    }
}
