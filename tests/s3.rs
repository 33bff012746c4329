//! Tables on S3 (SeaweedFS, a real S3-compatible server with conditional
//! put): concurrent writers lose no commit, racing writers of one partition
//! commit once, and three `inlet run` processes in one group, one killed and
//! restarted mid-stream, land every offset exactly once.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::assertions::assert_exactly_once_in_either;
use crate::common::brokers::{Broker, TansuBroker};
use crate::common::process::{inlet, Running};
use crate::common::producing::{background_producer, event};
use crate::common::required;
use crate::common::s3::SeaweedS3;
use crate::common::sink::{ids, progress, race_one_partition, sink_config};
use crate::common::tables::{read_quarantine_at, read_table_at, table_batches_at, Location};
use crate::common::workspace::{ConfigSpec, Workspace};
use arrow::array::{Int64Array, RecordBatch};
use inlet::config::CommitConfig;
use inlet::sink::{txn_app_id, CommitOutcome, DeltaSink};

fn server() -> Option<SeaweedS3> {
    let s = SeaweedS3::start();
    if s.is_none() {
        assert!(!required(), "SeaweedFS (INLET_TEST_WEED) is required in CI");
    }
    s
}

fn config(uri: &str, s3: &SeaweedS3) -> inlet::Config {
    sink_config(
        uri,
        &format!(
            "[tables.events.storage_options]\n{}",
            s3.storage_options_toml()
        ),
    )
}

/// The harness reader blocks on a runtime of its own.
async fn read_blocking(loc: Location) -> (i64, usize, Vec<RecordBatch>) {
    tokio::task::spawn_blocking(move || table_batches_at(&loc).expect("a table"))
        .await
        .unwrap()
}

/// Eight writers, each with partitions of its own, append ten batches each
/// at the same time through inlet's commit path. Every commit must survive:
/// with a store that lets a commit file be overwritten, some would vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_lose_no_commit() {
    let Some(s3) = server() else { return };
    s3.create_bucket("writers");
    let cfg = Arc::new(config("s3://writers/events", &s3));
    let tc = &cfg.tables["events"];
    // Create the table once, then open eight writers on it.
    DeltaSink::open("events", tc).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for w in 0..8i32 {
        let mut sink = DeltaSink::open("events", tc).await.unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let retry = CommitConfig {
                retry_backoff: Duration::from_millis(20),
                max_attempts: 100,
                ..CommitConfig::default()
            };
            barrier.wait().await;
            for b in 0..10i64 {
                let mut writer = sink.writer().unwrap();
                writer
                    .write(ids(i64::from(w) * 1000 + b * 10, 10))
                    .await
                    .unwrap();
                let adds = writer.flush().await.unwrap();
                let out = sink
                    .commit(
                        adds,
                        &sink.schema(),
                        &[progress(w, b * 10, b * 10 + 9)],
                        1,
                        &retry,
                    )
                    .await
                    .unwrap();
                assert!(matches!(out, CommitOutcome::Committed { .. }), "{out:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loc = Location {
        uri: "s3://writers/events".into(),
        options: s3.storage_options(),
    };
    let (version, files, batches) = read_blocking(loc).await;
    assert_eq!(version, 80, "the create commit plus 80 appends");
    assert_eq!(files, 80);
    let mut got: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    got.sort_unstable();
    let want: Vec<i64> = (0..8)
        .flat_map(|w| (0..100).map(move |i| w * 1000 + i))
        .collect();
    assert_eq!(got, want);
    // Writers did collide: a commit whose read version is not the version
    // before it first tried a version someone else had written, and the
    // store refused the overwrite (`If-None-Match: *` answered 412).
    let table = {
        let url = deltalake::ensure_table_uri("s3://writers/events").unwrap();
        let mut t = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(s3.storage_options())
            .build()
            .unwrap();
        t.load().await.unwrap();
        t
    };
    use futures::TryStreamExt as _;
    let history: Vec<_> = table.history(None).try_collect().await.unwrap();
    assert_eq!(history.len(), 81);
    // Newest first: entry i is version 80 - i.
    let read: Vec<Option<u64>> = history.iter().map(|c| c.read_version).collect();
    let collided = read
        .iter()
        .enumerate()
        .filter(|(i, r)| 80 - *i as u64 > 0 && **r != Some(80 - *i as u64 - 1))
        .count();
    assert!(
        collided > 0,
        "no commit collided; the test did not race: {read:?}"
    );
    let mut check = DeltaSink::open("events", tc).await.unwrap();
    let app_ids: Vec<String> = (0..8).map(|w| txn_app_id("inlet", "events", w)).collect();
    let stored = check.stored_versions(&app_ids).await.unwrap();
    assert!(stored.iter().all(|v| *v == Some(99)), "{stored:?}");
}

/// Eight writers commit the same partition range at once on S3: exactly one
/// wins, through the store's conditional put.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_of_one_partition_commit_once_on_s3() {
    let Some(s3) = server() else { return };
    s3.create_bucket("race");
    let cfg = Arc::new(config("s3://race/events", &s3));
    let tc = &cfg.tables["events"];
    let committed = race_one_partition(tc).await;
    assert_eq!(committed, 1);
    let loc = Location {
        uri: "s3://race/events".into(),
        options: s3.storage_options(),
    };
    let (version, _, batches) = read_blocking(loc).await;
    assert_eq!(version, 1, "the create commit plus exactly one data commit");
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        500
    );
}

/// Three `inlet run` processes in one group write one S3 table while a
/// producer writes; one is SIGKILLed mid-stream and restarted. Every offset
/// lands exactly once (in the table or, for poison pills, in quarantine).
/// Runs on Tansu: the mock cluster's coordinator stalls on killed members.
#[test]
fn three_processes_on_one_s3_table_with_a_kill() {
    let Some(s3) = server() else { return };
    let Some(mut broker) = TansuBroker::start() else {
        assert!(!required(), "Tansu is required in CI");
        return;
    };
    let topic = "scaled";
    broker.create_topic(topic, 6);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::on_s3(&s3, "scaleout");
    let config = ws.config(&ConfigSpec {
        bootstrap: &bootstrap,
        topic,
        group: "scaleout",
        max_rows: 300,
        max_age: "300ms",
        extra: "",
        session_timeout_ms: 6000,
    });
    let mut procs: Vec<Running> = (0..3).map(|_| Running::start(&config)).collect();
    for p in &procs {
        assert!(
            p.wait_for("partitions assigned", 1, Duration::from_secs(90)),
            "{:#?}",
            p.log()
        );
    }
    let (producer, landed, done) =
        background_producer(bootstrap.clone(), topic, 3000, 500, poisoned);
    // Kill one once it has committed, while the producer is still going.
    let deadline = Instant::now() + Duration::from_secs(90);
    while procs[1].count("batch committed") == 0 {
        assert!(
            Instant::now() < deadline,
            "process 1 never committed: {:#?}",
            procs[1].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    procs[1].kill();
    std::thread::sleep(Duration::from_secs(2));
    procs[1] = Running::start(&config);
    producer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    let landed = landed.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut have = read_table_at(&ws.table_location()).coordinates.len();
        have += read_quarantine_at(&ws.quarantine_location()).len();
        if have >= landed.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {} offsets landed; logs:\n{}",
            landed.len(),
            procs
                .iter()
                .map(|p| p.log().join("\n"))
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for p in &procs {
        p.signal("TERM");
    }
    for p in &mut procs {
        assert_eq!(p.wait(Duration::from_secs(60)), Some(0), "{:#?}", p.log());
    }
    assert_exactly_once_in_either(&ws, &landed);
    // Status reads the S3 table and never shows the secret key.
    let out = inlet()
        .args(["status", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(common::s3::SECRET_KEY), "{text}");
    for p in &procs {
        assert!(!p.log().join("\n").contains(common::s3::SECRET_KEY));
    }
}

/// An event, or every 50th a poison pill.
fn poisoned(id: u64) -> Vec<u8> {
    if id % 50 == 0 {
        b"{\"id\":".to_vec()
    } else {
        event(id)
    }
}

/// Writers starting at once on a table that does not exist yet: one creates
/// it, the others lose the race (as a conflict or as an existing version)
/// and use it. None fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_to_create_a_table_all_start() {
    let Some(s3) = server() else { return };
    s3.create_bucket("create");
    let cfg = Arc::new(config("s3://create/events", &s3));
    for round in 0..3 {
        let uri = format!("s3://create/events{round}");
        let mut cfg = (*cfg).clone();
        cfg.tables.get_mut("events").unwrap().uri = uri.clone();
        let cfg = Arc::new(cfg);
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cfg, barrier) = (cfg.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    DeltaSink::open("events", &cfg.tables["events"])
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("every writer opens the table");
        }
        let loc = Location {
            uri,
            options: s3.storage_options(),
        };
        let (version, _, _) = read_blocking(loc).await;
        assert_eq!(version, 0, "one create commit");
    }
}
