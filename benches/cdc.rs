//! The change data capture benches of issue 11, end to end: a release
//! `inlet run --available-now` (its own process, as in `benches/e2e.rs`)
//! reading topics preloaded on an in-process mock cluster, timed from spawn
//! to exit, with its CPU time and peak RSS (VmHWM) sampled from `/proc`.
//!
//! 1. `upsert`: a table of `CDC_KEYS` keys (default 1M) loaded from one
//!    topic (every key once, in key order; not timed), then `CDC_CHANGES`
//!    changes (default 9M, so 10M messages in all) from a second topic to
//!    uniformly random keys, in batches of `CDC_CHANGED` of the keys
//!    (default 0.01: 10k changes per commit, `flush.max_rows`). The same
//!    two phases into a plain `append` table in the same run, side by side;
//!    printed per run and as medians: changes/s, the ratio to append, write
//!    amplification (bytes the change phase added to the table directory:
//!    Parquet, deletion vectors and `_delta_log`, over the message values'
//!    bytes), peak RSS, and a check of the end state (DuckDB: one row per
//!    key, each at its last change).
//! 2. `debezium`: a Debezium Postgres stream (JSON envelope without
//!    schemas, REPLICA IDENTITY FULL, no tombstones): a snapshot of
//!    `DBZ_SNAPSHOT` rows (`op = r`, default 100k) then `DBZ_CHANGES`
//!    changes (default 1M: 70% updates, 20% inserts, 10% deletes, of
//!    uniformly random live rows), replayed through `op = "debezium"` into
//!    an `upsert` and a `history` table, `DBZ_BATCH` rows per commit
//!    (default 10k), and into an `append` table for comparison. Prints
//!    rows/s (and the ratio to append's), write amplification and peak RSS
//!    of each, and whether each end state equals the one DuckDB computes from
//!    the message values the bench produced (written to a file, unwrapped
//!    by DuckDB's JSON reader, not inlet's).
//!
//! `CDC_PROPERTIES` (`k=v,k=v`, e.g. `delta.enableDeletionVectors=true`)
//! sets table properties of the merged tables (not the append ones).
//! `scripts/bench-cdc.sh` builds inlet in release and runs this; see the
//! README's "Benchmarks". Not part of the test suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// The bench's settings, from the environment.
#[derive(Debug)]
struct Args {
    inlet: String,
    python: Option<String>,
    only: Option<String>,
    runs: usize,
    keys: u64,
    changes: u64,
    changed: f64,
    partitions: i32,
    properties: Vec<(String, String)>,
    dbz_snapshot: u64,
    dbz_changes: u64,
    dbz_batch: u64,
    dbz_partitions: i32,
    keep: Option<PathBuf>,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        Err(_) => default,
    }
}

fn args() -> Args {
    let mut inlet = "target/release/inlet".to_string();
    let mut only = std::env::var("CDC_ONLY").ok();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--inlet" => inlet = it.next().expect("--inlet BIN"),
            "--only" => only = it.next(),
            "--bench" => {}
            other => panic!("unknown flag {other} (sizes are env vars: see benches/cdc.rs)"),
        }
    }
    let properties = std::env::var("CDC_PROPERTIES")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("CDC_PROPERTIES: k=v,k=v");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Args {
        inlet,
        python: std::env::var("INLET_TEST_PYTHON").ok(),
        only,
        runs: env("CDC_RUNS", 3),
        keys: env("CDC_KEYS", 1_000_000),
        changes: env("CDC_CHANGES", 9_000_000),
        changed: env("CDC_CHANGED", 0.01),
        partitions: env("CDC_PARTITIONS", 256),
        properties,
        dbz_snapshot: env("DBZ_SNAPSHOT", 100_000),
        dbz_changes: env("DBZ_CHANGES", 1_000_000),
        dbz_batch: env("DBZ_BATCH", 10_000),
        dbz_partitions: env("DBZ_PARTITIONS", 256),
        keep: std::env::var_os("CDC_KEEP").map(PathBuf::from),
    }
}

/// xorshift64: the same stream every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Sends one keyed message, waiting while the producer's queue is full.
fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &[u8], value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match p.send(BaseRecord::to(topic).key(key).payload(value)) {
            Ok(()) => return,
            Err(_) => {
                assert!(Instant::now() < deadline, "producer stuck for 120 s");
                p.poll(Duration::from_millis(1));
            }
        }
    }
}

/// Messages the cluster holds on `topic`; panics unless it holds all `n`
/// (the mock drops the oldest past ~100k messages or ~5 MiB per partition,
/// and a reference computed from the produced messages needs them all).
fn check_held(bootstrap: &str, topic: &str, partitions: i32, n: u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let mut held = 0;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(
            low, 0,
            "{topic}/{p} lost its oldest messages: use more partitions"
        );
        held += (high - low) as u64;
    }
    assert_eq!(held, n, "{topic} holds {held} of {n} messages");
}

/// What one inlet process took.
struct ProcRun {
    took: Duration,
    rss_mib: f64,
    cpu: Duration,
    /// CPU time of this process meanwhile: mostly the mock cluster serving
    /// inlet's fetches (its broker thread runs here), a bound on how much
    /// of the wall time the cluster rather than inlet took.
    harness_cpu: Duration,
}

/// User + system CPU ticks of `pid` (fields 14 and 15 of its stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `inlet run --available-now -c config` to its exit (at most
/// `limit`), sampling its CPU time and peak RSS (not getrusage: a child of
/// this large process inherits its peak RSS through exec).
fn run_inlet(binary: &str, config: &Path, limit: Duration) -> ProcRun {
    let start = Instant::now();
    let own = || cpu_ticks(std::process::id()).unwrap_or(0);
    let own_before = own();
    let mut child = Command::new(binary)
        .args(["run", "--available-now", "-c"])
        .arg(config)
        .env("INLET_LOG", "warn,buoyant_kernel=off")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let status_file = format!("/proc/{}/status", child.id());
    let (mut hwm_kib, mut ticks) = (0u64, 0u64);
    let status = loop {
        if let Some(t) = cpu_ticks(child.id()) {
            ticks = ticks.max(t);
        }
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            hwm_kib = hwm_kib.max(hwm);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("inlet ran longer than {limit:?} ({})", config.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "inlet failed: {status} ({})",
        config.display()
    );
    let tick = clock_ticks();
    let run = ProcRun {
        took: start.elapsed(),
        rss_mib: hwm_kib as f64 / 1024.0,
        cpu: Duration::from_secs_f64(ticks as f64 / tick),
        harness_cpu: Duration::from_secs_f64(own().saturating_sub(own_before) as f64 / tick),
    };
    eprintln!(
        "    inlet took {:.1?}, CPU {:.1?}, peak RSS {:.0} MiB; the harness (mock cluster) used {:.1?} CPU meanwhile",
        run.took, run.cpu, run.rss_mib, run.harness_cpu
    );
    run
}

/// Every file under `dir` with its size.
fn files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), meta.len());
            }
        }
    }
    out
}

/// Bytes a phase wrote into a table directory, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    parquet: u64,
    dv: u64,
    log: u64,
    commits: u64,
}

impl Written {
    fn total(&self) -> u64 {
        self.parquet + self.dv + self.log
    }

    /// What is in `after` and not in `before` (or grew): inlet never
    /// deletes data files, and Delta's log cleanup keeps 30 days.
    fn between(before: &BTreeMap<PathBuf, u64>, after: &BTreeMap<PathBuf, u64>) -> Self {
        let mut w = Written::default();
        for (path, size) in after {
            let grew = size.saturating_sub(before.get(path).copied().unwrap_or(0));
            let name = path.file_name().unwrap().to_string_lossy();
            let in_log = path.components().any(|c| c.as_os_str() == "_delta_log");
            if in_log {
                w.log += grew;
                let commit = name.ends_with(".json") && !name.starts_with('_');
                if commit && !before.contains_key(path) {
                    w.commits += 1;
                }
            } else if name.ends_with(".parquet") {
                w.parquet += grew;
            } else if name.ends_with(".bin") {
                w.dv += grew;
            }
        }
        w
    }
}

/// The machine's 1-minute load average when a run starts (the machine is
/// shared: figures taken under load are slower in absolute terms).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The config of one inlet run: `topic` into `table` at `dir`.
struct RunConfig<'a> {
    bootstrap: &'a str,
    group: String,
    topic: &'a str,
    dir: &'a Path,
    /// The table's keys (after `[tables.t]`'s uri): schema, mode, …
    table: &'a str,
    properties: &'a [(String, String)],
    max_rows: u64,
}

impl RunConfig<'_> {
    fn write(&self) -> PathBuf {
        let mut props = String::new();
        if !self.properties.is_empty() {
            props.push_str("[tables.t.properties]\n");
            for (k, v) in self.properties {
                props.push_str(&format!("{k:?} = {v:?}\n"));
            }
        }
        let toml = format!(
            r#"app_id = "bench"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
[sources.s]
topics = ["{topic}"]
table = "t"
format = "json"
[tables.t]
uri = "{uri}"
{table}
{props}
[flush]
max_rows = {max_rows}
max_bytes = "1GiB"
max_age = "10m"
"#,
            bootstrap = self.bootstrap,
            group = self.group,
            topic = self.topic,
            uri = self.dir.join("t").display(),
            table = self.table,
            max_rows = self.max_rows,
        );
        let path = self.dir.join(format!("{}.toml", self.topic));
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// Runs `python` on `benches/support/cdc_check.py` with `args`; its JSON.
fn check_script(python: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/cdc_check.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run cdc_check.py");
    assert!(
        out.status.success(),
        "cdc_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cdc_check.py prints JSON")
}

const UPSERT_SCHEMA: &str = "id BIGINT, name STRING, amount DOUBLE, seq BIGINT";

/// The upsert bench's change `seq` of key `id`: about 70 bytes of JSON.
fn upsert_value(id: u64, seq: u64, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(
        out,
        r#"{{"id":{id},"name":"customer-{id:09}","amount":{}.{:02},"seq":{seq}}}"#,
        seq % 10_000,
        seq % 100
    );
}

/// What the upsert bench produced: the changes topic's value bytes and the
/// expected end state (sum of every key's last `seq`).
struct UpsertData {
    change_bytes: u64,
    seq_sum: u128,
}

fn preload_upsert(bootstrap: &str, a: &Args) -> UpsertData {
    let p = producer(bootstrap);
    let mut buf = String::with_capacity(128);
    let mut last = vec![0u64; a.keys as usize];
    for id in 0..a.keys {
        upsert_value(id, id, &mut buf);
        send(&p, "cdc_load", id.to_string().as_bytes(), buf.as_bytes());
        last[id as usize] = id;
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut change_bytes = 0;
    for i in 0..a.changes {
        let id = rng.below(a.keys);
        let seq = a.keys + i;
        upsert_value(id, seq, &mut buf);
        change_bytes += buf.len() as u64;
        send(&p, "cdc_changes", id.to_string().as_bytes(), buf.as_bytes());
        last[id as usize] = seq;
    }
    p.flush(Duration::from_secs(300)).expect("flush");
    check_held(bootstrap, "cdc_load", a.partitions, a.keys);
    check_held(bootstrap, "cdc_changes", a.partitions, a.changes);
    UpsertData {
        change_bytes,
        seq_sum: last.iter().map(|&s| u128::from(s)).sum(),
    }
}

/// One side of an upsert run: the change phase's figures.
struct Phase {
    run: ProcRun,
    written: Written,
}

/// Loads the keys into a fresh table at `dir`, then applies the changes,
/// timing the second phase.
fn two_phases(
    a: &Args,
    bootstrap: &str,
    dir: &Path,
    table: &str,
    run: usize,
    merged: bool,
) -> Phase {
    let per_batch = ((a.keys as f64 * a.changed) as u64).max(1);
    let props: &[(String, String)] = if merged { &a.properties } else { &[] };
    let limit = Duration::from_secs(4 * 3600);
    let tag = if merged { "upsert" } else { "append" };
    let load = RunConfig {
        bootstrap,
        group: format!("bench-{tag}-load-{run}"),
        topic: "cdc_load",
        dir,
        table,
        properties: props,
        max_rows: 200_000,
    };
    let r = run_inlet(&a.inlet, &load.write(), limit);
    eprintln!("  {tag}: loaded {} keys in {:.1?}", a.keys, r.took);
    let before = files(&dir.join("t"));
    let changes = RunConfig {
        group: format!("bench-{tag}-changes-{run}"),
        topic: "cdc_changes",
        max_rows: per_batch,
        ..load
    };
    let r = run_inlet(&a.inlet, &changes.write(), limit);
    let written = Written::between(&before, &files(&dir.join("t")));
    Phase { run: r, written }
}

fn upsert_bench(a: &Args, bootstrap: &str, cluster: &MockCluster<'_, DefaultProducerContext>) {
    for t in ["cdc_load", "cdc_changes"] {
        cluster.create_topic(t, a.partitions, 1).unwrap();
    }
    let per_batch = ((a.keys as f64 * a.changed) as u64).max(1);
    eprintln!(
        "upsert: preloading {} keys then {} changes over {} partitions…",
        a.keys, a.changes, a.partitions
    );
    let t = Instant::now();
    let data = preload_upsert(bootstrap, a);
    eprintln!("  preloaded in {:.1?}", t.elapsed());
    let upsert_table = format!(
        "schema = \"{UPSERT_SCHEMA}\"\nmode = \"upsert\"\nkeys = [\"id\"]\nsequence_by = \"seq\""
    );
    let append_table = format!("schema = \"{UPSERT_SCHEMA}\"");
    println!(
        "upsert bench: {} keys, {} changes in batches of {} ({}% of the keys), {} partitions, properties {:?}",
        a.keys, a.changes, per_batch, a.changed * 100.0, a.partitions, a.properties
    );
    println!(
        "run  upsert changes/s  CPU µs/chg  RSS MiB  WA (parquet+dv+log MiB)  commits (changes each)  append changes/s  CPU µs/chg  RSS MiB  append WA  ratio  CPU ratio  end state"
    );
    let n = a.changes as f64;
    let (mut ratios, mut rates, mut was, mut rss) = (vec![], vec![], vec![], vec![]);
    let mut cpu_ratios = vec![];
    for run in 1..=a.runs {
        let base = tempfile::tempdir().unwrap();
        let up_dir = base.path().join("upsert");
        let ap_dir = base.path().join("append");
        std::fs::create_dir_all(&up_dir).unwrap();
        std::fs::create_dir_all(&ap_dir).unwrap();
        let load = loadavg();
        // Alternate which goes first, so that a drift of the shared
        // machine's load does not favour one side.
        let ap_first =
            (run % 2 == 0).then(|| two_phases(a, bootstrap, &ap_dir, &append_table, run, false));
        let up = two_phases(a, bootstrap, &up_dir, &upsert_table, run, true);
        let check = a.python.as_deref().map_or("no DuckDB".to_string(), |py| {
            let table = up_dir.join("t");
            let got = check_script(py, &["upsert", table.to_str().unwrap()]);
            let ok = got["rows"] == a.keys
                && got["ids"] == a.keys
                && got["seq_sum"].as_str() == Some(&data.seq_sum.to_string());
            if ok {
                "ok".into()
            } else {
                format!("WRONG {got}")
            }
        });
        let ap = ap_first
            .unwrap_or_else(|| two_phases(a, bootstrap, &ap_dir, &append_table, run, false));
        if let Some(keep) = &a.keep {
            let _ = std::fs::rename(base.path(), keep.join(format!("upsert-run{run}")));
        }
        let rate = n / up.run.took.as_secs_f64();
        let ap_rate = n / ap.run.took.as_secs_f64();
        let wa = up.written.total() as f64 / data.change_bytes as f64;
        let ap_wa = ap.written.total() as f64 / data.change_bytes as f64;
        let up_cpu = up.run.cpu.as_secs_f64() * 1e6 / n;
        let ap_cpu = ap.run.cpu.as_secs_f64() * 1e6 / n;
        println!(
            "{run:>3}  {rate:>17.0}  {up_cpu:>10.2}  {:>7.0}  {wa:>5.2} ({:.1}+{:.1}+{:.1})  {:>7} ({:>6.0})  {ap_rate:>16.0}  {ap_cpu:>10.2}  {:>7.0}  {ap_wa:>9.2}  {:>5.3}  {:>9.3}  {check}  (load {load})",
            up.run.rss_mib,
            mib(up.written.parquet),
            mib(up.written.dv),
            mib(up.written.log),
            up.written.commits,
            n / up.written.commits.max(1) as f64,
            ap.run.rss_mib,
            rate / ap_rate,
            ap_cpu / up_cpu,
        );
        ratios.push(rate / ap_rate);
        cpu_ratios.push(ap_cpu / up_cpu);
        rates.push(rate);
        was.push(wa);
        rss.push(up.run.rss_mib);
    }
    println!(
        "median  upsert {:.0} changes/s, upsert/append {:.3} (of append's CPU time per change {:.3}), write amplification {:.2}, peak RSS {:.0} MiB (max {:.0}); ingested {:.1} MiB of change values",
        median(rates),
        median(ratios),
        median(cpu_ratios),
        median(was),
        median(rss.clone()),
        rss.iter().cloned().fold(0.0, f64::max),
        mib(data.change_bytes),
    );
}

fn main() {
    let a = args();
    eprintln!("{a:?}");
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    if a.only.as_deref() != Some("debezium") {
        upsert_bench(&a, &bootstrap, &cluster);
    }
    if a.only.as_deref() != Some("upsert") {
        debezium::bench(&a, &bootstrap, &cluster);
    }
}

#[path = "cdc/debezium.rs"]
mod debezium;
