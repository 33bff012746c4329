//! Per-commit cost as a table ages: the time inlet's commit path takes
//! (refresh, stored-version reads, fencing check, log write; no Parquet
//! encoding) at table versions of about 100, 5,000 and 20,000, the time of
//! the commit that writes the next checkpoint (inlet writes one when the
//! version it committed is a multiple of `delta.checkpointInterval`), and the
//! peak RSS of a process that opens the table there and commits.
//!
//! The history is written directly as a realistic log, quicker than running
//! inlet 20,000 times: every commit is a `STREAMING UPDATE` with
//! `--files-per-commit` adds (with statistics) and txn actions for a rotating
//! eighth of `--partitions` app ids, with a checkpoint every 100 commits as
//! Delta's default interval makes (and inlet writes). The data files are not
//! written: appending never reads them.
//!
//! ```text
//! cargo bench --bench growth -- [--versions 100,5000,20000] [--partitions 256]
//!     [--files-per-commit 5] [--commits 20]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use deltalake::kernel::Add;
use inlet::config::CommitConfig;
use inlet::sink::{txn_app_id, DeltaSink, PartitionProgress};

const CHECKPOINT_EVERY: u64 = 100;

struct Args {
    versions: Vec<u64>,
    partitions: i32,
    files_per_commit: usize,
    commits: usize,
}

fn args() -> Args {
    let mut a = Args {
        versions: vec![100, 5_000, 20_000],
        partitions: 256,
        files_per_commit: 5,
        commits: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--versions" => {
                a.versions = v().split(',').map(|s| s.parse().unwrap()).collect();
            }
            "--partitions" => a.partitions = v().parse().unwrap(),
            "--files-per-commit" => a.files_per_commit = v().parse().unwrap(),
            "--commits" => a.commits = v().parse().unwrap(),
            "--measure" => {
                let table = v();
                let version: u64 = v().parse().unwrap();
                measure(Path::new(&table), version, &a);
                std::process::exit(0);
            }
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    a
}

fn table_config(path: &Path) -> inlet::config::TableConfig {
    let toml = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "growth"
[sources.s]
topics = ["events"]
table = "events"
[tables.events]
uri = "{}"
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP"
"#,
        path.display()
    );
    inlet::pipeline::load_config_str(&toml).unwrap().tables["events"].clone()
}

/// Appends commits `from..=to` to the log as JSON files.
fn write_history(table: &Path, from: u64, to: u64, a: &Args) {
    let log = table.join("_delta_log");
    let now = chrono::Utc::now().timestamp_millis();
    let mut text = String::new();
    for v in from..=to {
        use std::fmt::Write;
        text.clear();
        let ts = now - ((to - v) as i64) * 5_000;
        let _ = writeln!(
            text,
            r#"{{"commitInfo":{{"timestamp":{ts},"operation":"STREAMING UPDATE","operationParameters":{{"outputMode":"Append","queryId":"growth","epochId":"{v}"}},"clientVersion":"inlet-growth-bench"}}}}"#
        );
        for f in 0..a.files_per_commit {
            let first = v * 10_000 + f as u64 * 500;
            let _ = writeln!(
                text,
                r#"{{"add":{{"path":"part-{v:08}-{f:03}.snappy.parquet","partitionValues":{{}},"size":48213,"modificationTime":{ts},"dataChange":true,"stats":"{{\"numRecords\":500,\"minValues\":{{\"id\":{first},\"user\":\"user-00000\",\"action\":\"click\",\"amount\":0.0,\"event_time\":\"2024-05-01T12:00:00.000Z\"}},\"maxValues\":{{\"id\":{last},\"user\":\"user-49999\",\"action\":\"view\",\"amount\":499.99,\"event_time\":\"2024-05-01T12:59:59.999Z\"}},\"nullCount\":{{\"id\":0,\"user\":0,\"action\":0,\"amount\":0,\"event_time\":0}}}}"}}}}"#,
                last = first + 499
            );
        }
        // Each commit covers an eighth of the partitions, rotating.
        let step = (a.partitions / 8).max(1);
        let start = (v as i32 % 8) * step;
        for p in start..(start + step).min(a.partitions) {
            let _ = writeln!(
                text,
                r#"{{"txn":{{"appId":"{}","version":{},"lastUpdated":{ts}}}}}"#,
                txn_app_id("growth", "events", p),
                v * 100
            );
        }
        std::fs::write(log.join(format!("{v:020}.json")), &text).unwrap();
    }
}

async fn checkpoint(table: &Path) {
    let mut t = deltalake::open_table(
        url::Url::from_directory_path(std::fs::canonicalize(table).unwrap()).unwrap(),
    )
    .await
    .unwrap();
    t.load().await.unwrap();
    deltalake::checkpoints::create_checkpoint(&t, None)
        .await
        .unwrap();
}

/// In a process of its own (for its peak RSS): opens the table at
/// `version` as a starting inlet would, then times `--commits` commits.
fn measure(table: &Path, version: u64, a: &Args) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = table_config(table);
        let opened = Instant::now();
        let mut sink = DeltaSink::open("events", &cfg).await.unwrap();
        let open = opened.elapsed();
        let schema = sink.schema();
        let retry = CommitConfig::default();
        let mut times = Vec::new();
        for i in 0..a.commits {
            let offset = (version as i64 + 1 + i as i64) * 100;
            let progress: Vec<PartitionProgress> = (0..a.partitions)
                .map(|p| PartitionProgress {
                    app_id: txn_app_id("growth", "events", p),
                    first: offset,
                    last: offset + 99,
                })
                .collect();
            let add = Add {
                path: format!("part-bench-{version}-{i}.snappy.parquet"),
                size: 48_213,
                modification_time: chrono::Utc::now().timestamp_millis(),
                data_change: true,
                stats: Some(r#"{"numRecords":500}"#.into()),
                ..Default::default()
            };
            let started = Instant::now();
            sink.commit(vec![add], &schema, &progress, i as i64, &retry)
                .await
                .unwrap();
            times.push(started.elapsed());
        }
        // On to the next checkpoint inlet writes, timing that commit.
        let log = table.join("_delta_log");
        let mut checkpoint = None;
        for i in a.commits..a.commits + CHECKPOINT_EVERY as usize + 1 {
            let offset = (version as i64 + 1 + i as i64) * 100;
            let progress: Vec<PartitionProgress> = (0..a.partitions)
                .map(|p| PartitionProgress {
                    app_id: txn_app_id("growth", "events", p),
                    first: offset,
                    last: offset + 99,
                })
                .collect();
            let started = Instant::now();
            let done = sink
                .commit(Vec::new(), &schema, &progress, i as i64, &retry)
                .await
                .unwrap();
            let took = started.elapsed();
            let inlet::sink::CommitOutcome::Committed { version: v } = done else {
                panic!("fenced: {done:?}");
            };
            if log.join(format!("{v:020}.checkpoint.parquet")).exists() {
                checkpoint = Some((v, took));
                break;
            }
        }
        times.sort();
        let median = times[times.len() / 2];
        let hwm = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        println!(
            "version {version:>6}: open {:>8.1} ms, per commit median {:>7.1} ms (min {:.1}, max {:.1}), peak RSS {hwm}",
            ms(open),
            ms(median),
            ms(times[0]),
            ms(*times.last().unwrap())
        );
        match checkpoint {
            Some((v, took)) => println!(
                "version {v:>6}: the commit writing its checkpoint took {:.1} ms",
                ms(took)
            ),
            None => println!("no checkpoint written within {CHECKPOINT_EVERY} commits"),
        }
    });
}

/// The table's latest version, from its log's file names.
fn latest(table: &Path) -> u64 {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .max()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("events");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        DeltaSink::open("events", &table_config(&table))
            .await
            .unwrap();
    });
    println!(
        "growth: {} partitions, {} files per commit, {} timed commits per point",
        a.partitions, a.files_per_commit, a.commits
    );
    let exe = std::env::current_exe().unwrap();
    let mut version = 0u64;
    for &target in &a.versions {
        let started = Instant::now();
        let mut from = version + 1;
        while from <= target {
            let to = (from / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY;
            let to = to.min(target);
            write_history(&table, from, to, &a);
            if to % CHECKPOINT_EVERY == 0 {
                rt.block_on(checkpoint(&table));
            }
            from = to + 1;
        }
        eprintln!(
            "built versions {}..={target} in {:.1} s",
            version + 1,
            started.elapsed().as_secs_f64()
        );
        let status = std::process::Command::new(&exe)
            .args(["--partitions", &a.partitions.to_string()])
            .args(["--commits", &a.commits.to_string()])
            .args(["--measure", table.to_str().unwrap(), &target.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // The measured commits moved the table on.
        version = latest(&table);
    }
}
