//! End-to-end throughput, against the machine's own limits, in one run:
//!
//! 1. preload topics on an in-process mock cluster (many partitions: the mock
//!    keeps ~100k messages or ~5 MiB per partition and silently drops older
//!    ones, so the rates use the messages it actually holds) with ~200 B
//!    JSON events, or with `--format avro` ~200 B Confluent-framed Avro
//!    records whose schema is in a Schema Registry (the tests' mock, in this
//!    process); `--tables T` spreads them over T topics, one table each, all
//!    read by one inlet process;
//! 2. per run, side by side: a raw C consumer reading all of it as its own
//!    process (`--rdkafka-performance BIN`: librdkafka's
//!    examples/rdkafka_performance.c in group mode, built against the
//!    librdkafka that rdkafka-sys vendors, the one inlet links; and/or
//!    `--kcat BIN`, with `--librdkafka DIR` on its `LD_LIBRARY_PATH` so that it
//!    loads that same librdkafka), a bare rdkafka consumer in this process and
//!    Parquet encoding alone of the same rows (the consume and encode limits,
//!    skipped with `--no-limits`), and `inlet run --available-now` into local
//!    tables (and `--baseline BIN`, another inlet binary);
//!
//! and print, per run and as medians of the per-run ratios, inlet's rate
//! against each (wall time of the whole process, start to exit, as both
//! inlet and the C consumers join a group) and its CPU time per message
//! against each process's (user + system from `/proc/<pid>/stat`), and the
//! peak RSS of inlet.
//!
//! `scripts/bench.sh [--messages N] [--partitions P] [--tables T] [--runs R]
//! [--baseline BIN] [--config TOML] [--no-limits] [--format json|avro]` builds
//! inlet and the C reference in release mode and runs it. `--config` appends a
//! line to inlet's config, after the last table (e.g. `--config '[flush]'
//! --config 'max_rows = 100000'`). Not part of the test suite.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[path = "../tests/common/registry.rs"]
mod registry;
mod support;
use support::{avro_payload, payload, AVRO_SCHEMA};

struct Args {
    messages: u64,
    /// Partitions over all topics.
    partitions: i32,
    /// Topics, one table each, in one inlet process.
    tables: usize,
    runs: usize,
    inlet: String,
    /// Another inlet binary (e.g. the previous commit's) timed in the same
    /// runs, for before/after ratios measured side by side.
    baseline: Option<String>,
    /// librdkafka's rdkafka_performance example (the raw C reference).
    rdkafka_performance: Option<String>,
    /// kcat, another raw C reference.
    kcat: Option<String>,
    /// A directory holding the librdkafka.so.1 kcat is to load.
    librdkafka: Option<String>,
    /// Extra TOML appended to the bench config (e.g. `[flush]` limits).
    extra: String,
    /// Skip the in-process raw-consume and encode-only limits.
    no_limits: bool,
    /// `--format avro`: Confluent-framed Avro from a Schema Registry (the
    /// tests' mock, in this process) instead of JSON.
    avro: bool,
}

fn args() -> Args {
    let mut a = Args {
        messages: 2_000_000,
        partitions: 128,
        tables: 1,
        runs: 3,
        inlet: "target/release/inlet".into(),
        baseline: None,
        rdkafka_performance: None,
        kcat: None,
        librdkafka: None,
        extra: String::new(),
        no_limits: false,
        avro: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("flag value");
        match k.as_str() {
            "--messages" => a.messages = v().parse().expect("--messages N"),
            "--partitions" => a.partitions = v().parse().expect("--partitions N"),
            "--tables" => a.tables = v().parse().expect("--tables N"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--inlet" => a.inlet = v(),
            "--baseline" => a.baseline = Some(v()),
            "--rdkafka-performance" => a.rdkafka_performance = Some(v()),
            "--kcat" => a.kcat = Some(v()),
            "--librdkafka" => a.librdkafka = Some(v()),
            "--config" => a.extra.push_str(&format!("{}\n", v())),
            "--no-limits" => a.no_limits = true,
            "--format" => match v().as_str() {
                "json" => a.avro = false,
                "avro" => a.avro = true,
                other => panic!("--format json|avro, not {other}"),
            },
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.tables >= 1, "--tables must be at least 1");
    a
}

/// The topics (and tables) of the bench: `bench` alone, or `bench_00`….
struct Layout {
    topics: Vec<String>,
    /// Partitions per topic.
    partitions: i32,
}

impl Layout {
    fn new(tables: usize, partitions: i32) -> Self {
        let topics = if tables == 1 {
            vec!["bench".to_string()]
        } else {
            (0..tables).map(|i| format!("bench_{i:02}")).collect()
        };
        Layout {
            topics,
            partitions: (partitions / tables as i32).max(1),
        }
    }
}

/// Message `id` as the bench sends it: JSON, or Avro under `schema_id`.
fn message(id: u64, avro: Option<u32>, json: &mut String, bytes: &mut Vec<u8>) {
    match avro {
        Some(schema_id) => avro_payload(id, schema_id, bytes),
        None => {
            payload(id, json);
            bytes.clear();
            bytes.extend_from_slice(json.as_bytes());
        }
    }
}

/// Sends `n` messages round-robin over the topics (message `id` to topic
/// `id % topics`, under that topic's schema id for Avro); the bytes sent.
fn preload(bootstrap: &str, n: u64, layout: &Layout, avro: &[u32]) -> u64 {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let (mut json, mut buf) = (String::with_capacity(256), Vec::with_capacity(256));
    let mut bytes = 0;
    let topics = layout.topics.len() as u64;
    for id in 0..n {
        let t = (id % topics) as usize;
        message(id, avro.get(t).copied(), &mut json, &mut buf);
        bytes += buf.len() as u64;
        let key = id.to_le_bytes();
        loop {
            let record = BaseRecord::to(&layout.topics[t])
                .key(&key[..])
                .payload(&buf);
            match producer.send(record) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    bytes
}

/// Messages the cluster holds (it may have dropped the oldest).
fn held_messages(bootstrap: &str, layout: &Layout) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let mut held = 0;
    for topic in &layout.topics {
        for p in 0..layout.partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            held += (high - low) as u64;
        }
    }
    held
}

/// A bare consumer in this process reading every message once: the consume
/// limit of the Rust binding (its CPU cannot be told apart from the mock
/// cluster's, which runs in this process too).
fn raw_consume(bootstrap: &str, layout: &Layout, n: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in &layout.topics {
        for p in 0..layout.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let (mut seen, mut sum) = (0u64, 0usize);
    while seen < n {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            sum += m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    std::hint::black_box(sum);
    start.elapsed()
}

/// The same rows as Arrow batches (decoded outside the timing).
fn rows(n: u64, avro: Option<u32>) -> Vec<RecordBatch> {
    if let Some(id) = avro {
        let mut decoder = inlet::decode::AvroDecoder::new();
        decoder.add_schema(id, AVRO_SCHEMA).unwrap();
        let mut out = Vec::new();
        let (mut json, mut buf) = (String::new(), Vec::new());
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let (mut good, mut bad) = (Vec::new(), inlet::record::Rejections::new());
        for i in 0..n {
            message(i, avro, &mut json, &mut buf);
            chunk.push(buf.clone());
            if chunk.len() == inlet::decode::MAX_CHUNK || i + 1 == n {
                let framed: Vec<(usize, &[u8])> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i, v.as_slice()))
                    .collect();
                good.clear();
                out.push(decoder.decode(id, &framed, &mut good, &mut bad).unwrap());
                chunk.clear();
            }
        }
        return out;
    }
    let ddl = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, \
               country STRING, session STRING, page STRING";
    let schema = Arc::new(inlet::schema::parse_ddl(ddl).unwrap());
    let mut decoder = inlet::decode::JsonDecoder::new(schema).unwrap();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let (mut good, mut bad) = (Vec::new(), inlet::record::Rejections::new());
    for id in 0..n {
        payload(id, &mut buf);
        chunk.push(buf.clone().into_bytes());
        if chunk.len() == inlet::decode::MAX_CHUNK || id + 1 == n {
            let values: Vec<Option<&[u8]>> = chunk.iter().map(|v| Some(v.as_slice())).collect();
            out.push(decoder.decode(&values, &mut good, &mut bad).unwrap());
            chunk.clear();
        }
    }
    out
}

/// Parquet encoding alone, with inlet's writer settings (snappy, its
/// default): the encode limit.
fn encode_only(batches: &[RecordBatch]) -> (Duration, usize) {
    let props = inlet::sink::writer_properties(inlet::config::Compression::Snappy);
    let start = Instant::now();
    let mut out = Vec::with_capacity(64 << 20);
    let mut w = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    (start.elapsed(), out.len())
}

/// What one process of the bench (inlet, or a C consumer) took.
struct ProcRun {
    /// Wall time from spawn to exit.
    took: Duration,
    /// Peak resident set size of that process alone (VmHWM).
    rss_mib: f64,
    /// CPU time (user + system) of that process, sampled until it exits
    /// (so short by at most one 10 ms sampling interval).
    cpu: Duration,
}

/// User + system CPU time of process `pid` from `/proc/<pid>/stat`, in clock
/// ticks (fields 14 and 15; counted after the `)` that ends the command name,
/// which may hold spaces).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when unknown).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Spawns `cmd` and samples its CPU time and peak RSS until it exits.
fn watch(name: &str, cmd: &mut Command) -> ProcRun {
    let start = Instant::now();
    let mut child: Child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    // Not getrusage/wait4: a child spawned by this (large) process inherits
    // its peak RSS through exec. VmHWM is the high-water mark of the child's
    // own address space; sampled until it exits.
    let status_file = format!("/proc/{}/status", child.id());
    let mut hwm_kib = 0u64;
    let mut ticks = 0u64;
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
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    assert!(status.success(), "{name} failed: {status}");
    ProcRun {
        took,
        rss_mib: hwm_kib as f64 / 1024.0,
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks()),
    }
}

/// The inlet config of the bench: one source and table per topic.
fn inlet_config(
    bootstrap: &str,
    dir: &std::path::Path,
    layout: &Layout,
    extra: &str,
    registry: Option<&str>,
) -> String {
    let format = if registry.is_some() { "avro" } else { "json" };
    let schema = if registry.is_some() {
        "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING, user_agent STRING, referrer STRING"
    } else {
        "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING"
    };
    let mut config = format!(
        "app_id = \"bench\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"bench-inlet\"\n{}\n",
        registry.map_or(String::new(), |url| format!("[schema_registry]\nurl = \"{url}\"")),
    );
    for topic in &layout.topics {
        let table = topic.replace("bench", "events");
        config.push_str(&format!(
            r#"
[sources.{topic}]
topics = ["{topic}"]
table = "{table}"
format = "{format}"
[tables.{table}]
uri = "{}"
schema = "{schema}"
[tables.{table}.metadata_columns]
partition = "_partition"
offset = "_offset"
"#,
            dir.join(&table).display(),
        ));
    }
    config.push_str(extra);
    config
}

fn run_inlet(
    binary: &str,
    bootstrap: &str,
    dir: &std::path::Path,
    layout: &Layout,
    extra: &str,
    registry: Option<&str>,
) -> ProcRun {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        inlet_config(bootstrap, dir, layout, extra, registry),
    )
    .unwrap();
    watch(
        binary,
        Command::new(binary)
            .args(["run", "--available-now", "-c"])
            .arg(&config)
            .env("INLET_LOG", "warn,buoyant_kernel=off"),
    )
}

/// A raw C consumer reading every message of the topics once, as its own
/// process; it exits after the `-c` count (not at the partitions' ends,
/// which librdkafka reports only after an empty fetch, up to
/// `fetch.wait.max.ms` later). On one topic it assigns every partition, as
/// `inlet run --available-now` does.
enum CRaw {
    /// rdkafka_performance `-C` (the legacy queue consumer's callback per
    /// message). One topic only: it reads one topic handle.
    Performance(String),
    /// kcat `-C` (writes each value to stdout, here /dev/null); over several
    /// topics `-G` with `group.protocol=consumer` (KIP-848, which the mock
    /// cluster assigns at the first heartbeat: the classic protocol's initial
    /// rebalance delay of 3 s would be most of the run).
    Kcat {
        binary: String,
        librdkafka: Option<String>,
    },
}

impl CRaw {
    fn name(&self) -> &'static str {
        match self {
            CRaw::Performance(_) => "rdkafka_performance",
            CRaw::Kcat { .. } => "kcat",
        }
    }

    /// Whether it can read the bench's topics.
    fn reads(&self, layout: &Layout) -> bool {
        !matches!(self, CRaw::Performance(_)) || layout.topics.len() == 1
    }

    fn run(&self, bootstrap: &str, layout: &Layout, n: u64, group: &str) -> ProcRun {
        let mut cmd;
        let count = n.to_string();
        match self {
            CRaw::Performance(binary) => {
                cmd = Command::new(binary);
                cmd.args(["-C", "-b", bootstrap, "-t", &layout.topics[0]])
                    .args(["-o", "beginning", "-c", &count, "-q"]);
                for p in 0..layout.partitions {
                    cmd.args(["-p", &p.to_string()]);
                }
            }
            CRaw::Kcat { binary, librdkafka } => {
                cmd = Command::new(binary);
                cmd.args(["-b", bootstrap, "-c", &count, "-q"]);
                if let [topic] = &layout.topics[..] {
                    cmd.args(["-C", "-o", "beginning", "-t", topic]);
                } else {
                    cmd.args(["-G", group, "-X", "auto.offset.reset=earliest"])
                        .args(["-X", "group.protocol=consumer"])
                        .args(&layout.topics);
                }
                if let Some(dir) = librdkafka {
                    cmd.env("LD_LIBRARY_PATH", dir);
                }
            }
        }
        watch(self.name(), cmd.stderr(Stdio::null()))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per-run figures of one contender: rate (msg/s), CPU µs per message, RSS.
#[derive(Default)]
struct Series {
    rate: Vec<f64>,
    cpu: Vec<f64>,
    rss: Vec<f64>,
}

impl Series {
    fn push(&mut self, r: &ProcRun, n: f64) {
        self.rate.push(n / r.took.as_secs_f64());
        self.cpu.push(r.cpu.as_secs_f64() * 1e6 / n);
        self.rss.push(r.rss_mib);
    }

    /// Medians of inlet's per-run ratios to `other`: (rate, CPU per message).
    fn ratios(&self, other: &Series) -> (f64, f64) {
        let rate = self.rate.iter().zip(&other.rate).map(|(a, b)| a / b);
        let cpu = self.cpu.iter().zip(&other.cpu).map(|(a, b)| a / b);
        (median(rate.collect()), median(cpu.collect()))
    }
}

/// The raw C consumers given, those that can read the bench's topics.
fn c_references(a: &Args, layout: &Layout) -> Vec<CRaw> {
    let mut craws = Vec::new();
    if let Some(b) = &a.rdkafka_performance {
        craws.push(CRaw::Performance(b.clone()));
    }
    if let Some(b) = &a.kcat {
        craws.push(CRaw::Kcat {
            binary: b.clone(),
            librdkafka: a.librdkafka.clone(),
        });
    }
    craws.retain(|c| {
        let reads = c.reads(layout);
        if !reads {
            eprintln!("{} reads one topic only: left out", c.name());
        }
        reads
    });
    craws
}

/// The medians: inlet's, and its per-run ratios to the baseline and to each
/// raw C consumer.
fn print_medians(
    inlet: &Series,
    base: Option<&Series>,
    craws: &[CRaw],
    raw: &[Series],
    mb: f64,
    n: f64,
) {
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "median  inlet {:.0} msg/s ({:.1} MB/s), CPU {:.2} µs/msg, peak RSS {:.0} MiB (max of {} runs)",
        median(inlet.rate.clone()),
        mb * median(inlet.rate.clone()) / n,
        median(inlet.cpu.clone()),
        max(&inlet.rss),
        inlet.rss.len(),
    );
    if let Some(base) = base {
        let (rate, cpu) = inlet.ratios(base);
        println!(
            "median  baseline {:.0} msg/s, CPU {:.2} µs/msg, peak RSS {:.0} MiB; \
             inlet/baseline: rate {rate:.2}, CPU per message {cpu:.2}",
            median(base.rate.clone()),
            median(base.cpu.clone()),
            max(&base.rss),
        );
    }
    for (c, s) in craws.iter().zip(raw) {
        let (rate, cpu) = inlet.ratios(s);
        println!(
            "median  {} {:.0} msg/s, CPU {:.2} µs/msg, peak RSS {:.0} MiB; \
             inlet/raw: rate {rate:.2}, CPU per message {cpu:.2}",
            c.name(),
            median(s.rate.clone()),
            median(s.cpu.clone()),
            max(&s.rss),
        );
    }
}

/// The column names of the per-run lines.
fn header(a: &Args, craws: &[CRaw]) -> String {
    let mut header = String::from("run  inlet msg/s  CPU µs/msg  RSS MiB");
    if a.baseline.is_some() {
        header.push_str("  baseline msg/s  CPU µs/msg  RSS MiB");
    }
    for c in craws {
        header.push_str(&format!("  {:>19} msg/s  CPU µs/msg", c.name()));
    }
    if !a.no_limits {
        header.push_str("  rust raw msg/s  encode rows/s");
    }
    header
}

fn main() {
    let a = args();
    let layout = Layout::new(a.tables, a.partitions);
    let cluster = MockCluster::new(1).expect("mock cluster");
    for t in &layout.topics {
        cluster.create_topic(t, layout.partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let registry = a.avro.then(registry::MockRegistry::start);
    let schema_ids: Vec<u32> = registry.as_ref().map_or(Vec::new(), |r| {
        layout
            .topics
            .iter()
            .map(|t| r.register(&format!("{t}-value"), "AVRO", AVRO_SCHEMA, &[]))
            .collect()
    });
    let registry_url = registry.as_ref().map(registry::MockRegistry::url);
    eprintln!(
        "preloading {} {} messages over {} topic(s) of {} partitions…",
        a.messages,
        if a.avro { "Avro" } else { "JSON" },
        layout.topics.len(),
        layout.partitions,
    );
    let bytes = preload(&bootstrap, a.messages, &layout, &schema_ids);
    let held = held_messages(&bootstrap, &layout);
    assert!(
        held * 10 >= a.messages * 9,
        "the mock cluster kept only {held} of {} messages: use more partitions",
        a.messages
    );
    let mb = bytes as f64 / 1e6 * held as f64 / a.messages as f64;
    eprintln!(
        "{held} messages held, {mb:.0} MB ({:.0} B/message)",
        bytes as f64 / a.messages as f64
    );
    let batches = if a.no_limits {
        Vec::new()
    } else {
        rows(held, schema_ids.first().copied())
    };
    let n = held as f64;
    let craws = c_references(&a, &layout);
    println!("{}", header(&a, &craws));
    let (mut inlet, mut base) = (Series::default(), Series::default());
    let mut raw: Vec<Series> = craws.iter().map(|_| Series::default()).collect();
    let (mut r_rust, mut r_enc) = (Vec::new(), Vec::new());
    for run in 1..=a.runs {
        let mut line = String::new();
        // The C consumers first, then inlet, then the baseline: each run
        // has all of them, so drifts of the machine hit them alike.
        let mut c_line = String::new();
        for (c, s) in craws.iter().zip(&mut raw) {
            let r = c.run(
                &bootstrap,
                &layout,
                held,
                &format!("bench-{}-{run}", c.name()),
            );
            s.push(&r, n);
            c_line.push_str(&format!(
                "  {:>25.0}  {:>10.2}",
                s.rate[run - 1],
                s.cpu[run - 1]
            ));
        }
        let timed = |binary: &str| {
            let dir = tempfile::tempdir().unwrap();
            run_inlet(
                binary,
                &bootstrap,
                dir.path(),
                &layout,
                &a.extra,
                registry_url.as_deref(),
            )
        };
        // inlet and the baseline take turns going first: with a fixed order
        // two copies of one binary measured 0.92 CPU per message on the
        // loaded machine (the second run of a pair is the slower one).
        let baseline_first = run % 2 == 0;
        let early = a.baseline.as_deref().filter(|_| baseline_first).map(&timed);
        let r = timed(&a.inlet);
        inlet.push(&r, n);
        line.push_str(&format!(
            "{run:>3}  {:>11.0}  {:>10.2}  {:>7.0}",
            inlet.rate[run - 1],
            inlet.cpu[run - 1],
            r.rss_mib
        ));
        let late = match (&a.baseline, early) {
            (_, Some(r)) => Some(r),
            (Some(b), None) => Some(timed(b)),
            (None, None) => None,
        };
        if let Some(r) = late {
            base.push(&r, n);
            line.push_str(&format!(
                "  {:>14.0}  {:>10.2}  {:>7.0}",
                base.rate[run - 1],
                base.cpu[run - 1],
                r.rss_mib
            ));
        }
        line.push_str(&c_line);
        if !a.no_limits {
            let rust = n / raw_consume(&bootstrap, &layout, held).as_secs_f64();
            let (enc_t, _) = encode_only(&batches);
            let enc = n / enc_t.as_secs_f64();
            line.push_str(&format!("  {rust:>14.0}  {enc:>13.0}"));
            r_rust.push(inlet.rate[run - 1] / rust);
            r_enc.push(inlet.rate[run - 1] / enc);
        }
        println!("{line}");
    }
    let base = a.baseline.is_some().then_some(&base);
    print_medians(&inlet, base, &craws, &raw, mb, n);
    if !a.no_limits {
        println!(
            "median  inlet/rust raw consume {:.2}, inlet/encode-only {:.2}",
            median(r_rust),
            median(r_enc),
        );
    }
}
