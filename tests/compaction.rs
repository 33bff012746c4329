//! Compaction rewrites small files with `dataChange = false`: every row stays
//! exactly once, the Kafka offsets in the log are untouched, and it runs
//! beside ingest without conflicting with it.

use std::time::{Duration, Instant};

use crate::common::assertions::{
    app_ids, assert_exactly_once, assert_exactly_once_in_either, wait_rows,
};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{inlet, run_available_now, Running};
use crate::common::producing::{background_producer, event, produce};
use crate::common::tables::{duckdb_read, read_table, txn_versions};
use crate::common::workspace::{ConfigSpec, Workspace};

fn spec<'a>(bootstrap: &'a str, topic: &'a str, extra: &'a str) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "compaction",
        max_rows: 100,
        max_age: "300ms",
        extra,
        session_timeout_ms: 6000,
    }
}

fn compact(config: &std::path::Path, extra: &[&str]) -> String {
    let out = inlet()
        .args(["compact", "-c"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inlet compact failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The JSON actions of the last commit in the table's log.
fn last_commit(table: &std::path::Path) -> Vec<serde_json::Value> {
    let log = table.join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    std::fs::read_to_string(commits.last().unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn compact_merges_small_files_and_keeps_rows_and_offsets() {
    let mut broker = MockBroker::start();
    broker.create_topic("small", 2);
    let ws = Workspace::new();
    let config = ws.config(&spec(&broker.bootstrap(), "small", ""));
    let payloads: Vec<Vec<u8>> = (0..2000).map(event).collect();
    let mut landed = produce(&broker.bootstrap(), "small", &payloads);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = read_table(&ws.table());
    assert!(
        before.files >= 20,
        "expected many small files, got {}",
        before.files
    );
    let ids = app_ids(&landed, "small");
    let offsets = txn_versions(&ws.table(), &ids);

    let out = compact(&config, &[]);
    assert!(
        out.contains(&format!("compacted {} files into 1", before.files)),
        "{out}"
    );
    let after = read_table(&ws.table());
    assert_eq!(after.files, 1);
    assert_eq!(after.version, before.version + 1);
    assert_exactly_once(&after.coordinates, &landed);
    assert_eq!(txn_versions(&ws.table(), &ids), offsets, "offsets moved");
    let actions = last_commit(&ws.table());
    let changes: Vec<bool> = actions
        .iter()
        .filter_map(|a| {
            let f = a.get("add").or_else(|| a.get("remove"))?;
            f["dataChange"].as_bool()
        })
        .collect();
    assert_eq!(changes.len(), before.files + 1);
    assert!(
        changes.iter().all(|c| !c),
        "compaction must not change data"
    );

    // Nothing left to do.
    let out = compact(&config, &[]);
    assert!(out.contains("events: skipped"), "{out}");

    // Ingest resumes from the offsets in the log, exactly once.
    let more: Vec<Vec<u8>> = (2000..2500).map(event).collect();
    landed.extend(produce(&broker.bootstrap(), "small", &more));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once_in_either(&ws, &landed);
    if let Some(v) = duckdb_read(&ws.table(), &[], Some("SELECT count(*) AS n FROM t")) {
        assert_eq!(v["result"][0][0], 2500, "{v}");
    }
}

#[test]
fn background_compaction_beside_ingest_loses_and_duplicates_nothing() {
    let mut broker = MockBroker::start();
    broker.create_topic("busy", 2);
    let ws = Workspace::new();
    let config = ws.config(&spec(
        &broker.bootstrap(),
        "busy",
        "[tables.events.compaction]\ninterval = \"1s\"\nmin_small_files = 4\n",
    ));
    let mut inlet = Running::start(&config);
    let (producer, landed, _) = background_producer(broker.bootstrap(), "busy", 3000, 600, event);
    producer.join().unwrap();
    let landed = landed.lock().unwrap().clone();
    wait_rows(&ws, &inlet, landed.len(), Duration::from_secs(90));
    // At least two compactions ran while batches kept committing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while inlet.count("table compacted") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        inlet.count("table compacted") >= 2,
        "no compaction ran; log:\n{}",
        inlet.log().join("\n")
    );
    inlet.signal("TERM");
    assert_eq!(
        inlet.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        inlet.log().join("\n")
    );
    assert_eq!(
        inlet.count("compaction failed"),
        0,
        "{}",
        inlet.log().join("\n")
    );
    assert_exactly_once_in_either(&ws, &landed);
    let t = read_table(&ws.table());
    assert!(t.files < 30, "{} files after compaction", t.files);
}

/// One large commit is split into files of about `target_file_size`
/// (compressed bytes), and still lands exactly once.
#[test]
fn large_commits_are_split_at_the_target_file_size() {
    let mut broker = MockBroker::start();
    broker.create_topic("large", 4);
    let ws = Workspace::new();
    let config = ws.config(&ConfigSpec {
        max_rows: 1_000_000,
        max_age: "30s",
        ..spec(&broker.bootstrap(), "large", "")
    });
    // The harness config has no such key: add it to the table section.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[tables.events]\n",
        "[tables.events]\ntarget_file_size = \"64KiB\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let payloads: Vec<Vec<u8>> = (0..6_000).map(event).collect();
    let landed = produce(&broker.bootstrap(), "large", &payloads);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once_in_either(&ws, &landed);
    let mut sizes: Vec<u64> = last_commit(&ws.table())
        .iter()
        .filter_map(|a| a.get("add")?["size"].as_u64())
        .collect();
    assert!(sizes.len() >= 3, "one commit, several files: {sizes:?}");
    // Every file but the remainder (the smallest) is about the target.
    sizes.sort_unstable();
    for s in &sizes[1..] {
        assert!(
            (32 * 1024..=192 * 1024).contains(s),
            "file of {s} bytes for a 64 KiB target: {sizes:?}"
        );
    }
}
