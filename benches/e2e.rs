//! End-to-end throughput, against the machine's own limits, in one run:
//!
//! 1. preload a topic on an in-process mock cluster (many partitions: the mock
//!    keeps ~100k messages or ~5 MiB per partition and silently drops older
//!    ones, so the rates use the messages it actually holds) with ~200 B
//!    JSON events, or with `--format avro` ~200 B Confluent-framed Avro
//!    records whose schema is in a Schema Registry (the tests' mock, in this
//!    process);
//! 2. time a bare rdkafka consumer reading all of it (the consume limit);
//! 3. time Parquet encoding alone of the same rows (the encode limit);
//! 4. time `inlet run --available-now` into a local table, with its peak RSS;
//!
//! and print inlet's rate as a ratio of each limit, per run and as medians.
//!
//! `scripts/bench.sh [--messages N] [--partitions P] [--runs R]
//! [--baseline BIN] [--config TOML] [--no-limits]` builds in release mode and
//! runs it. `--config` appends a line to inlet's config (e.g.
//! `--config '[flush]' --config 'max_rows = 100000'`); `--no-limits` skips
//! the raw-consume and encode-only runs (for the 10M-message RSS check:
//! `--messages 10000000 --partitions 512 --no-limits`). Not part of the test
//! suite.

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

const TOPIC: &str = "bench";

struct Args {
    messages: u64,
    partitions: i32,
    runs: usize,
    inlet: String,
    /// Another inlet binary (e.g. the previous commit's) timed in the same
    /// runs, for before/after ratios measured side by side.
    baseline: Option<String>,
    /// Extra TOML appended to the bench config (e.g. `[flush]` limits).
    extra: String,
    /// Skip the raw-consume and encode-only limits (RSS runs at 10M).
    no_limits: bool,
    /// `--format avro`: Confluent-framed Avro from a Schema Registry (the
    /// tests' mock, in this process) instead of JSON.
    avro: bool,
}

fn args() -> Args {
    let mut a = Args {
        messages: 2_000_000,
        partitions: 128,
        runs: 3,
        inlet: "target/release/inlet".into(),
        baseline: None,
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
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--inlet" => a.inlet = v(),
            "--baseline" => a.baseline = Some(v()),
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
    a
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

fn preload(bootstrap: &str, n: u64, avro: Option<u32>) -> u64 {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let (mut json, mut buf) = (String::with_capacity(256), Vec::with_capacity(256));
    let mut bytes = 0;
    for id in 0..n {
        message(id, avro, &mut json, &mut buf);
        bytes += buf.len() as u64;
        let key = id.to_le_bytes();
        loop {
            match producer.send(BaseRecord::to(TOPIC).key(&key[..]).payload(&buf)) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    bytes
}

/// Messages the cluster holds (it may have dropped the oldest).
fn held_messages(bootstrap: &str, partitions: i32) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .expect("watermarks");
            (high - low) as u64
        })
        .sum()
}

/// A bare consumer reading every message once: the consume limit.
fn raw_consume(bootstrap: &str, partitions: i32, n: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
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

/// What one `inlet run --available-now` took.
struct InletRun {
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
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn run_inlet(
    binary: &str,
    bootstrap: &str,
    dir: &std::path::Path,
    extra: &str,
    registry: Option<&str>,
) -> InletRun {
    let table = dir.join("events");
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"
app_id = "bench"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "bench-inlet"
{}
[sources.bench]
topics = ["{TOPIC}"]
table = "events"
format = "{}"
[tables.events]
uri = "{}"
{}
[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"
{extra}
"#,
            registry.map_or(String::new(), |url| format!("[schema_registry]\nurl = \"{url}\"")),
            if registry.is_some() { "avro" } else { "json" },
            table.display(),
            if registry.is_some() {
                "schema = \"id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING, user_agent STRING, referrer STRING\""
            } else {
                "schema = \"id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING\""
            },
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = std::process::Command::new(binary)
        .args(["run", "--available-now", "-c"])
        .arg(&config)
        .env("INLET_LOG", "warn,buoyant_kernel=off")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run inlet");
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
        if let Some(status) = child.try_wait().expect("wait inlet") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    assert!(status.success(), "inlet failed: {status}");
    InletRun {
        took,
        rss_mib: hwm_kib as f64 / 1024.0,
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, a.partitions, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let registry = a.avro.then(registry::MockRegistry::start);
    let schema_id = registry
        .as_ref()
        .map(|r| r.register(&format!("{TOPIC}-value"), "AVRO", AVRO_SCHEMA, &[]));
    let registry_url = registry.as_ref().map(registry::MockRegistry::url);
    eprintln!(
        "preloading {} {} messages over {} partitions…",
        a.messages,
        if a.avro { "Avro" } else { "JSON" },
        a.partitions
    );
    let bytes = preload(&bootstrap, a.messages, schema_id);
    let held = held_messages(&bootstrap, a.partitions);
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
        rows(held, schema_id)
    };
    let n = held as f64;
    let (mut r_inlet, mut r_raw, mut r_enc, mut r_base) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rss, mut rss_base) = (Vec::new(), Vec::new());
    let (mut cpu, mut cpu_base) = (Vec::new(), Vec::new());
    // CPU per message of the inlet process, in microseconds.
    let per_msg = |r: &InletRun| r.cpu.as_secs_f64() * 1e6 / n;
    println!(
        "run  inlet msg/s  inlet MB/s  RSS MiB  CPU µs/msg  raw msg/s  encode rows/s  inlet/raw  inlet/encode{}",
        if a.baseline.is_some() {
            "  baseline msg/s  RSS MiB  CPU µs/msg  inlet/baseline"
        } else {
            ""
        }
    );
    for run in 1..=a.runs {
        let (raw, enc) = if a.no_limits {
            (f64::NAN, f64::NAN)
        } else {
            let raw = n / raw_consume(&bootstrap, a.partitions, held).as_secs_f64();
            let (enc_t, _) = encode_only(&batches);
            (raw, n / enc_t.as_secs_f64())
        };
        let dir = tempfile::tempdir().unwrap();
        let r = run_inlet(
            &a.inlet,
            &bootstrap,
            dir.path(),
            &a.extra,
            registry_url.as_deref(),
        );
        drop(dir);
        let inl = n / r.took.as_secs_f64();
        let base = a.baseline.as_ref().map(|b| {
            let dir = tempfile::tempdir().unwrap();
            let r = run_inlet(b, &bootstrap, dir.path(), &a.extra, registry_url.as_deref());
            (n / r.took.as_secs_f64(), r.rss_mib, per_msg(&r))
        });
        println!(
            "{run:>3}  {inl:>11.0}  {:>10.1}  {:>7.0}  {:>10.2}  {raw:>9.0}  {enc:>13.0}  {:>9.2}  {:>12.2}{}",
            mb / r.took.as_secs_f64(),
            r.rss_mib,
            per_msg(&r),
            inl / raw,
            inl / enc,
            base.map_or(String::new(), |(b, m, c)| format!(
                "  {b:>14.0}  {m:>7.0}  {c:>10.2}  {:>14.2}",
                inl / b
            ))
        );
        cpu.push(per_msg(&r));
        r_inlet.push(inl);
        r_raw.push(raw);
        r_enc.push(enc);
        rss.push(r.rss_mib);
        if let Some((b, m, c)) = base {
            r_base.push(inl / b);
            rss_base.push(m);
            cpu_base.push(c);
        }
    }
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (mi, mr, me) = (median(r_inlet), median(r_raw), median(r_enc));
    println!(
        "median  inlet {mi:.0} msg/s ({:.1} MB/s), raw consume {mr:.0} msg/s, encode-only {me:.0} rows/s; \
         inlet/raw {:.2}, inlet/encode {:.2}{}; CPU of inlet {:.2} µs/msg{}; \
         peak RSS of inlet {:.0} MiB (max of {} runs){}",
        mb * mi / n,
        mi / mr,
        mi / me,
        if r_base.is_empty() {
            String::new()
        } else {
            format!(", inlet/baseline {:.2}", median(r_base))
        },
        median(cpu),
        if cpu_base.is_empty() {
            String::new()
        } else {
            format!(" (baseline {:.2})", median(cpu_base))
        },
        max(&rss),
        rss.len(),
        if rss_base.is_empty() {
            String::new()
        } else {
            format!(", of the baseline {:.0} MiB", max(&rss_base))
        },
    );
}
