//! What the tests assert about tables, and the waits before asserting:
//! every offset exactly once, rows landed, and the crash loop that kills and
//! restarts inlet while a producer writes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use super::brokers::Broker;
use super::process;
use super::producing::{background_producer, Landed};
use super::tables::{duckdb_read, read_quarantine, read_quarantine_at, read_table_at, Location};
use super::workspace::{ConfigSpec, Workspace};

/// Asserts every coordinate in `expected` is in exactly one of the data rows
/// and the quarantine rows, and nothing else is in either.
pub(crate) fn assert_exactly_once_in_either(ws: &Workspace, expected: &[Landed]) {
    let mut all = read_table_at(&ws.table_location()).coordinates;
    all.extend(
        read_quarantine_at(&ws.quarantine_location())
            .into_iter()
            .map(|q| (q.partition, q.offset)),
    );
    assert_exactly_once(&all, expected);
}

/// Asserts every coordinate in `expected` appears exactly once in `actual`.
pub(crate) fn assert_exactly_once(actual: &[(i32, i64)], expected: &[Landed]) {
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
pub(crate) fn last_offsets(landed: &[Landed]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for l in landed {
        let e = m.entry(l.partition).or_insert(l.offset);
        *e = (*e).max(l.offset);
    }
    m
}

/// Waits until the table holds at least `n` rows; on time-out, fails with the
/// log of the process that should have written them.
pub(crate) fn wait_rows(ws: &Workspace, writer: &process::Running, n: usize, limit: Duration) {
    wait_rows_at(&ws.table_location(), &[writer], n, limit);
}

/// Waits until the table at `loc` holds at least `n` rows; on time-out, fails
/// with the logs of the processes that should have written them.
pub(crate) fn wait_rows_at(
    loc: &Location,
    writers: &[&process::Running],
    n: usize,
    limit: Duration,
) {
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
pub(crate) fn app_ids(landed: &[Landed], topic: &str) -> Vec<String> {
    last_offsets(landed)
        .keys()
        .map(|p| format!("test:{topic}:{p}"))
        .collect()
}

/// A crash loop: how many kills, when, and what is produced.
pub(crate) struct CrashLoop {
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
pub(crate) fn crash_loop(broker: &mut dyn Broker, run: &CrashLoop) {
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
