//! Run-mode latency: the time from produce to visible in the table.
//!
//! Starts `inlet run` (long-running, not `--available-now`) with
//! `flush.max_age = "1s"` against an in-process mock cluster, produces JSON
//! events at a steady rate, and watches the table's `_delta_log`: a row is
//! visible when the commit that adds its file appears. Its produce time is
//! its Kafka timestamp (set by the producer when it sends, stored by inlet
//! in the `_ts` metadata column). Prints p50/p99/max of visible − produced
//! over every row produced during the measured window (a warm-up before it
//! waits for inlet to join the group and make its first commit).
//!
//! `scripts/bench.sh --latency [--rate MSG_PER_S] [--seconds S]
//! [--partitions P] [--max-age DURATION]`. Not part of the test suite.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod support;
use support::payload;

const TOPIC: &str = "latency";

struct Args {
    rate: u64,
    seconds: u64,
    partitions: i32,
    max_age: String,
    inlet: String,
}

fn args() -> Args {
    let mut a = Args {
        rate: 3000,
        seconds: 30,
        partitions: 8,
        max_age: "1s".into(),
        inlet: "target/release/inlet".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("flag value");
        match k.as_str() {
            "--rate" => a.rate = v().parse().expect("--rate N"),
            "--seconds" => a.seconds = v().parse().expect("--seconds N"),
            "--partitions" => a.partitions = v().parse().expect("--partitions N"),
            "--max-age" => a.max_age = v(),
            "--inlet" => a.inlet = v(),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Commits seen so far: version → wall-clock ms at which it was first seen.
struct Watcher {
    log: PathBuf,
    seen: BTreeMap<u64, i64>,
}

impl Watcher {
    /// Records the commit files that appeared since the last look.
    fn look(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.log) else {
            return;
        };
        let t = now_ms();
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(v) = name
                .strip_suffix(".json")
                .and_then(|v| v.parse::<u64>().ok())
            {
                self.seen.entry(v).or_insert(t);
            }
        }
    }
}

/// The files a commit adds.
fn added_files(log: &Path, version: u64) -> Vec<String> {
    let text = std::fs::read_to_string(log.join(format!("{version:020}.json"))).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["add"]["path"].as_str().map(str::to_string))
        .collect()
}

/// The `_ts` values (ms) of a data file.
fn produce_times(file: &Path) -> Vec<i64> {
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let idx = b
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == "_ts")
        .expect("_ts column");
    let mask = ProjectionMask::roots(b.parquet_schema(), [idx]);
    let mut out = Vec::new();
    for batch in b.with_projection(mask).build().unwrap() {
        let batch = batch.unwrap();
        let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        out.extend((0..ts.len()).map(|i| ts.value(i) / 1000));
    }
    out
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = args();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, a.partitions, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("events");
    let config = dir.path().join("latency.toml");
    std::fs::write(
        &config,
        format!(
            r#"
app_id = "latency"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "latency-inlet"
[sources.bench]
topics = ["{TOPIC}"]
table = "events"
[tables.events]
uri = "{}"
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, country STRING, session STRING, page STRING"
[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"
timestamp = "_ts"
[flush]
max_age = "{}"
"#,
            table.display(),
            a.max_age
        ),
    )
    .unwrap();
    let mut inlet = std::process::Command::new(&a.inlet)
        .args(["run", "-c"])
        .arg(&config)
        .env("INLET_LOG", "warn,buoyant_kernel=off")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start inlet");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut w = Watcher {
        log: table.join("_delta_log"),
        seen: BTreeMap::new(),
    };
    let mut buf = String::with_capacity(256);
    let send = |id: u64, buf: &mut String| {
        payload(id, buf);
        let key = id.to_le_bytes();
        let rec = BaseRecord::to(TOPIC)
            .key(&key[..])
            .payload(buf.as_str())
            .timestamp(now_ms());
        producer.send(rec).map_err(|(e, _)| e).expect("send");
    };

    // Warm-up: until a commit holds a message produced after inlet started.
    eprintln!("warming up (inlet joins the group, creates the table)…");
    let warm = Instant::now();
    let mut id = 0u64;
    loop {
        send(id, &mut buf);
        id += 1;
        std::thread::sleep(Duration::from_millis(100));
        w.look();
        if w.seen.len() >= 2 {
            break;
        }
        assert!(
            warm.elapsed() < Duration::from_secs(120),
            "no commit within 2 min"
        );
        if let Ok(Some(s)) = inlet.try_wait() {
            panic!("inlet exited: {s}");
        }
    }
    let after_warmup = *w.seen.keys().last().unwrap();

    // The measured window: `rate` messages a second in 10 ms ticks.
    eprintln!(
        "producing {} msg/s for {} s over {} partitions, flush.max_age = {}…",
        a.rate, a.seconds, a.partitions, a.max_age
    );
    let start_ms = now_ms();
    let start = Instant::now();
    let total = a.rate * a.seconds;
    let mut sent = 0u64;
    let tick = Duration::from_millis(10);
    let mut next = start;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * a.rate as f64) as u64 + 1).min(total);
        while sent < due {
            send(id, &mut buf);
            id += 1;
            sent += 1;
        }
        w.look();
        next += tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let produced_for = start.elapsed();
    producer.flush(Duration::from_secs(30)).expect("flush");

    // Until every message of the window is visible, looking every 10 ms.
    let mut latencies: Vec<i64> = Vec::new();
    let mut counted: HashSet<u64> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        w.look();
        let new: Vec<(u64, i64)> = w
            .seen
            .iter()
            .filter(|(v, _)| **v > after_warmup && !counted.contains(v))
            .map(|(v, t)| (*v, *t))
            .collect();
        for (v, visible) in new {
            counted.insert(v);
            for f in added_files(&w.log, v) {
                for ts in produce_times(&table.join(&f)) {
                    if ts >= start_ms {
                        latencies.push(visible - ts);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &inlet.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success(), "kill -TERM inlet");
    let status = inlet.wait().expect("wait inlet");
    assert!(status.success(), "inlet exited with {status}");
    assert_eq!(
        latencies.len() as u64,
        total,
        "messages of the window visible in the table within 60 s after producing"
    );
    latencies.sort_unstable();
    let commits = counted.len();
    println!(
        "{total} messages at {:.0} msg/s over {:.1} s, {} partitions, flush.max_age {}: \
         {commits} commits; produce → visible p50 {} ms, p99 {} ms, max {} ms",
        total as f64 / produced_for.as_secs_f64(),
        produced_for.as_secs_f64(),
        a.partitions,
        a.max_age,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
    );
}
