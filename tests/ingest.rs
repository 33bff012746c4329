//! End-to-end ingest against real brokers: backfill and re-run, bad messages,
//! graceful shutdown, empty partitions.

use std::time::Duration;

use crate::common::assertions::{
    app_ids, assert_exactly_once, assert_exactly_once_in_either, last_offsets,
};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{metrics_toml, run_available_now, Running};
use crate::common::producing::{event, produce, Landed};
use crate::common::tables::{duckdb_read, read_quarantine, read_table, txn_versions};
use crate::common::workspace::{ConfigSpec, Workspace};
use crate::common::{free_port, required};

fn spec<'a>(bootstrap: &'a str, topic: &'a str, max_rows: usize) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "inlet-test",
        max_rows,
        max_age: "1s",
        extra: "",
        session_timeout_ms: 6000,
    }
}

/// Backfill N messages, re-run (no commit), add M, run again (exactly M more).
fn backfill_and_rerun(broker: &mut dyn Broker) {
    let topic = "events";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, 700));

    let n = 3000;
    let payloads: Vec<Vec<u8>> = (0..n).map(event).collect();
    let mut landed = produce(&bootstrap, topic, &payloads);

    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &landed);
    assert!(
        t.version >= 3,
        "several bounded commits expected, got version {}",
        t.version
    );
    let ids = app_ids(&landed, topic);
    let txn = txn_versions(&ws.table(), &ids);
    for (p, last) in last_offsets(&landed) {
        assert_eq!(
            txn[&format!("test:{topic}:{p}")],
            Some(last),
            "txn version of partition {p}"
        );
    }
    if let Some(duck) = duckdb_read(&ws.table(), &ids, None) {
        assert_eq!(duck["rows"], n);
        for (p, last) in last_offsets(&landed) {
            assert_eq!(
                duck["txn"][format!("test:{topic}:{p}")],
                last,
                "duckdb txn {p}"
            );
        }
    } else {
        assert!(
            !required(),
            "DuckDB reader not installed (run scripts/install-test-deps.sh)"
        );
    }

    // A second run finds nothing new and makes no commit.
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_table(&ws.table()).version,
        t.version,
        "re-run committed"
    );

    // M more messages: exactly M more rows.
    let m = 500;
    let more: Vec<Vec<u8>> = (n..n + m).map(event).collect();
    landed.extend(produce(&bootstrap, topic, &more));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &landed);
    let mut ids: Vec<i64> = t.ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, (0..(n + m) as i64).collect::<Vec<_>>());
}

#[test]
fn backfill_and_rerun_mock() {
    backfill_and_rerun(&mut MockBroker::start());
}

#[test]
fn bad_messages_are_skipped_and_good_rows_land_once() {
    let mut broker = MockBroker::start();
    let topic = "mixed";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, 10_000));

    let deep = format!(r#"{{"id":1,"x":{}{}}}"#, "[".repeat(1000), "]".repeat(1000));
    let bad: Vec<Vec<u8>> = vec![
        b"{\"id\":1".to_vec(),                        // truncated
        b"not json at all".to_vec(),                  // not JSON
        br#"{"id":"seven"}"#.to_vec(),                // wrong type
        br#"{"user":"no id"}"#.to_vec(),              // id is NOT NULL? (nullable here: lands)
        br#"{"id":2}{"id":3}"#.to_vec(),              // two objects
        b"{\"id\":4,\"user\":\"\xff\xfe\"}".to_vec(), // invalid UTF-8
        br#"[1,2,3]"#.to_vec(),                       // not an object
        deep.into_bytes(),                            // nested deeper than max_nesting_depth
    ];
    // Good events get ids 1000.., bad ones are interleaved.
    let mut payloads = Vec::new();
    let mut expect_good = Vec::new();
    for i in 0..400u64 {
        payloads.push(event(1000 + i));
        expect_good.push(1000 + i as i64);
        if i % 50 == 0 {
            payloads.extend(bad.iter().cloned());
        }
    }
    let landed = produce(&bootstrap, topic, &payloads);
    let out = run_available_now(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let t = read_table(&ws.table());
    let mut good: Vec<i64> = t.ids.iter().copied().filter(|&i| i >= 1000).collect();
    good.sort_unstable();
    assert_eq!(good, expect_good, "good rows exactly once");
    // Rejections are logged with their coordinates…
    let rejected = stderr
        .lines()
        .filter(|l| l.contains("message rejected"))
        .count();
    assert_eq!(
        rejected,
        7 * 8,
        "seven of the eight kinds are rejected, 8 times each"
    );
    assert!(stderr.contains("partition=") && stderr.contains("offset="));
    // …and land in the quarantine table with their raw bytes, stage and
    // reason: every offset is in exactly one of the two tables.
    assert_exactly_once_in_either(&ws, &landed);
    let q = read_quarantine(&ws.quarantine());
    assert_eq!(q.len(), 7 * 8);
    for row in &q {
        let i = landed
            .iter()
            .position(|l| l.partition == row.partition && l.offset == row.offset)
            .unwrap();
        assert_eq!(
            row.value.as_deref(),
            Some(payloads[i].as_slice()),
            "raw bytes kept"
        );
        assert_eq!(row.topic, topic);
        assert!(!row.error.is_empty());
        if payloads[i] == br#"{"id":"seven"}"# {
            assert_eq!(row.stage, "schema", "{row:?}");
        }
        if payloads[i] == b"not json at all" || payloads[i].starts_with(b"{\"id\":1,\"x\":[[") {
            assert_eq!(row.stage, "decode", "{row:?}");
        }
    }
    if let Some(duck) = duckdb_read(&ws.quarantine(), &[], None) {
        assert_eq!(duck["rows"], 7 * 8, "DuckDB reads the quarantine table");
    }
    // The stored offsets cover the bad messages too.
    let ids = app_ids(&landed, topic);
    let txn = txn_versions(&ws.table(), &ids);
    for (p, last) in last_offsets(&landed) {
        assert_eq!(txn[&format!("test:{topic}:{p}")], Some(last));
    }
    // Nothing is read twice on a re-run.
    let out = run_available_now(&config);
    assert!(out.status.success());
    assert_eq!(
        read_table(&ws.table()).coordinates.len(),
        t.coordinates.len()
    );
}

#[test]
fn sigterm_commits_buffered_rows_and_exits_zero() {
    let mut broker = MockBroker::start();
    let topic = "term";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // Nothing flushes by itself: only the shutdown can commit.
    let port = free_port();
    let metrics = metrics_toml(port);
    let config = ws.config(&ConfigSpec {
        max_age: "10m",
        extra: &metrics,
        ..spec(&bootstrap, topic, 1_000_000)
    });
    let mut inlet = Running::start(&config);
    assert!(
        inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)),
        "no assignment: {:#?}",
        inlet.log()
    );
    let payloads: Vec<Vec<u8>> = (0..500).map(event).collect();
    let landed = produce(&bootstrap, topic, &payloads);
    inlet.wait_consumed(port, topic, 500, Duration::from_secs(60));
    assert_eq!(
        read_table(&ws.table()).coordinates.len(),
        0,
        "flushed before SIGTERM"
    );
    inlet.signal("TERM");
    assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));
    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &landed);
}

/// A backfill stopped by SIGTERM before its end commits what it holds and
/// exits 3 naming what is left (not 0: a scheduler must not take it for
/// done); the next run finishes the range, every offset once.
#[test]
fn a_backfill_stopped_by_sigterm_exits_3_and_the_next_run_finishes() {
    let mut broker = MockBroker::start();
    let topic = "stopped";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // Many small commits, so the range takes a while.
    let config = ws.config(&spec(&bootstrap, topic, 50));
    let payloads: Vec<Vec<u8>> = (0..10_000).map(event).collect();
    let landed = produce(&bootstrap, topic, &payloads);
    let mut run = Running::start_args(&config, &[], &["run", "--available-now"]);
    assert!(
        run.wait_for("batch committed", 1, Duration::from_secs(60)),
        "{:#?}",
        run.log()
    );
    run.signal("TERM");
    let code = run.wait(Duration::from_secs(60));
    let log = run.log().join("\n");
    let stored = read_table(&ws.table()).coordinates.len();
    assert!(stored < landed.len(), "finished before SIGTERM: {log}");
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.contains("stopped before the range was complete") && log.contains("run it again"),
        "{log}"
    );
    // The next run, with large commits, finishes the range.
    let config = ws.config(&spec(&bootstrap, topic, 100_000));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&read_table(&ws.table()).coordinates, &landed);
}

#[test]
fn available_now_exits_with_empty_partitions() {
    let mut broker = MockBroker::start();
    let bootstrap = broker.bootstrap();
    // A topic with nothing at all.
    broker.create_topic("empty", 3);
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, "empty", 100));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_table(&ws.table()).version, 0, "only the create commit");

    // A topic where only some partitions have data.
    broker.create_topic("sparse", 4);
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let mut landed = Vec::new();
    for i in 0..50u64 {
        let p = event(i);
        producer
            .send(
                rdkafka::producer::BaseRecord::<(), _>::to("sparse")
                    .partition(1)
                    .payload(&p),
            )
            .unwrap();
        landed.push(Landed {
            partition: 1,
            offset: i as i64,
        });
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, "sparse", 100));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&read_table(&ws.table()).coordinates, &landed);
}

/// A pattern subscription picks up every matching topic into one table, with
/// the topic in its metadata column; per-partition starting offsets in
/// Spark's JSON form apply to partitions the table has no offset for.
#[test]
fn pattern_subscription_and_json_starting_offsets() {
    let mut broker = MockBroker::start();
    let bootstrap = broker.bootstrap();
    broker.create_topic("orders-eu", 2);
    broker.create_topic("orders-us", 2);
    broker.create_topic("other", 1);
    let eu = produce(
        &bootstrap,
        "orders-eu",
        &(0..200).map(event).collect::<Vec<_>>(),
    );
    let us = produce(
        &bootstrap,
        "orders-us",
        &(200..400).map(event).collect::<Vec<_>>(),
    );
    produce(
        &bootstrap,
        "other",
        &(400..450).map(event).collect::<Vec<_>>(),
    );

    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, "unused", 10_000));
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "topics = [\"unused\"]",
        "pattern = \"^orders-.*\"\nstarting_offsets = '{\"orders-eu\":{\"0\":10,\"1\":-2},\"orders-us\":{\"0\":-1}}'",
    );
    std::fs::write(&config, toml).unwrap();
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // orders-eu/0 from offset 10, orders-eu/1 from the start, orders-us/0
    // from the end (nothing), orders-us/1 from the start (unlisted); `other`
    // is not read.
    let mut expected: Vec<(String, i32, i64)> = Vec::new();
    for l in &eu {
        if l.partition == 1 || l.offset >= 10 {
            expected.push(("orders-eu".into(), l.partition, l.offset));
        }
    }
    for l in &us {
        if l.partition == 1 {
            expected.push(("orders-us".into(), l.partition, l.offset));
        }
    }
    expected.sort();
    let mut got: Vec<(String, i32, i64)> = Vec::new();
    if let Some(duck) = duckdb_read(
        &ws.table(),
        &[],
        Some("SELECT _topic, _partition, _offset FROM t ORDER BY 1, 2, 3"),
    ) {
        for r in duck["result"].as_array().unwrap() {
            got.push((
                r[0].as_str().unwrap().to_string(),
                r[1].as_i64().unwrap() as i32,
                r[2].as_i64().unwrap(),
            ));
        }
        assert_eq!(got, expected);
    }
    assert_eq!(read_table(&ws.table()).coordinates.len(), expected.len());
}

/// Checkpoints are written every `checkpoint_interval` commits, and the
/// stored offsets survive them (read back through the checkpoint by both
/// readers).
#[test]
fn checkpoints_keep_the_offsets() {
    let mut broker = MockBroker::start();
    let topic = "ckpt";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, 100));
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "[tables.events.metadata_columns]",
        "checkpoint_interval = 3\n\n[tables.events.metadata_columns]",
    );
    std::fs::write(&config, toml).unwrap();
    let landed = produce(&bootstrap, topic, &(0..1000).map(event).collect::<Vec<_>>());
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log_dir = ws.table().join("_delta_log");
    let checkpoints = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    let t = read_table(&ws.table());
    assert!(
        t.version >= 9,
        "expected at least 9 commits, got {}",
        t.version
    );
    assert!(checkpoints >= 3, "{checkpoints} checkpoints");
    assert!(log_dir.join("_last_checkpoint").exists());
    assert_exactly_once(&t.coordinates, &landed);
    let ids = app_ids(&landed, topic);
    let txn = txn_versions(&ws.table(), &ids);
    for (p, last) in last_offsets(&landed) {
        assert_eq!(txn[&format!("test:{topic}:{p}")], Some(last));
    }
    if let Some(duck) = duckdb_read(&ws.table(), &ids, None) {
        assert_eq!(duck["rows"], 1000);
        for (p, last) in last_offsets(&landed) {
            assert_eq!(duck["txn"][format!("test:{topic}:{p}")], last);
        }
    }
}
