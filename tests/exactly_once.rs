//! Exactly-once under crashes, rebalances and zombies.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::assertions::{
    assert_exactly_once, assert_exactly_once_in_either, crash_loop, CrashLoop,
};
use crate::common::brokers::{Broker, MockBroker, TansuBroker};
use crate::common::process::{metrics_toml, Running};
use crate::common::producing::{background_producer, event, produce};
use crate::common::tables::read_table;
use crate::common::workspace::{ConfigSpec, Workspace};
use crate::common::{free_port, required};

fn spec<'a>(bootstrap: &'a str, topic: &'a str, max_age: &'a str) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "inlet-eo",
        max_rows: 400,
        max_age,
        extra: "",
        session_timeout_ms: 6000,
    }
}

/// An event, or every 25th time a poison pill of one of several kinds.
fn poisoned_event(id: u64) -> Vec<u8> {
    match (id % 25, id / 25 % 4) {
        (0, 0) => b"{\"id\":".to_vec(),
        (0, 1) => br#"{"id":"not a number"}"#.to_vec(),
        (0, 2) => b"\xff\xfe not utf-8".to_vec(),
        (0, _) => br#"{"id":1}{"id":2}"#.to_vec(),
        _ => event(id),
    }
}

#[test]
fn crash_loop_loses_and_duplicates_nothing_mock() {
    crash_loop(
        &mut MockBroker::start(),
        &CrashLoop {
            iterations: 20,
            session_timeout_ms: 6000,
            kill_window_ms: 1000..6000,
            fresh_groups: true,
            make: poisoned_event,
            env: Vec::new(),
            extra: String::new(),
        },
    );
}

#[test]
fn crash_loop_loses_and_duplicates_nothing_tansu() {
    let Some(mut broker) = TansuBroker::start() else {
        assert!(!required(), "Tansu is required in CI");
        return;
    };
    // Tansu lets a group join take about half the session timeout.
    crash_loop(
        &mut broker,
        &CrashLoop {
            iterations: 10,
            session_timeout_ms: 6000,
            kill_window_ms: 2000..8000,
            fresh_groups: false,
            make: poisoned_event,
            env: Vec::new(),
            extra: String::new(),
        },
    );
}

/// Two processes in one group split the partitions; one is killed mid-stream,
/// the other takes over; exactly once.
fn two_processes(broker: &mut dyn Broker) {
    let topic = "shared";
    broker.create_topic(topic, 6);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, "300ms"));
    let mut a = Running::start(&config);
    assert!(a.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let mut b = Running::start(&config);
    // B joining makes the group rebalance: both end up with a share.
    assert!(
        b.wait_for("partitions assigned", 1, Duration::from_secs(60)),
        "B got nothing: {:#?}",
        b.log()
    );
    let (producer, landed, done) =
        background_producer(bootstrap.clone(), topic, 4000, 800, poisoned_event);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(a.count("batch committed") > 0 && b.count("batch committed") > 0) {
        assert!(Instant::now() < deadline, "both processes should commit");
        std::thread::sleep(Duration::from_millis(100));
    }
    let assigned = |r: &Running| -> Vec<String> {
        r.log()
            .into_iter()
            .filter(|l| l.contains("partitions assigned"))
            .collect()
    };
    let last_a = assigned(&a).last().cloned().unwrap();
    assert!(
        !last_a.contains("partitions=6"),
        "A still holds all: {last_a}"
    );
    a.kill();
    producer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    let landed = landed.lock().unwrap().clone();
    // B takes over A's partitions and catches up alone.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let t = read_table(&ws.table());
        if t.coordinates.len() >= landed.len() - landed.len() / 25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not catch up: {} of {} rows",
            t.coordinates.len(),
            landed.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(60)), Some(0));
    assert_exactly_once_in_either(&ws, &landed);
}

#[test]
fn two_processes_split_partitions_and_take_over_mock() {
    two_processes(&mut MockBroker::start());
}

#[test]
fn two_processes_split_partitions_and_take_over_tansu() {
    let Some(mut broker) = TansuBroker::start() else {
        assert!(!required(), "Tansu is required in CI");
        return;
    };
    two_processes(&mut broker);
}

/// A writer that is paused (think: a long GC pause or a network partition)
/// loses its partitions; when it wakes up with a buffered batch, that batch
/// must not be committed over the new owner's.
#[test]
fn paused_zombie_does_not_commit_reassigned_offsets() {
    let mut broker = MockBroker::start();
    let topic = "zombie";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // The zombie only flushes by age, well after it is woken up.
    let port = free_port();
    let metrics = metrics_toml(port);
    let config = ws.config(&ConfigSpec {
        max_rows: 1_000_000,
        extra: &metrics,
        ..spec(&bootstrap, topic, "8s")
    });
    let mut zombie = Running::start(&config);
    assert!(zombie.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let payloads: Vec<Vec<u8>> = (0..300).map(event).collect();
    let mut landed = produce(&bootstrap, topic, &payloads);
    // The zombie buffers them.
    zombie.wait_consumed(port, topic, 300, Duration::from_secs(60));
    zombie.signal("STOP");

    // The new owner, flushing fast, gets the partitions once the zombie's
    // session times out, and commits the same offsets.
    let fast = ws.dir.path().join("fast.toml");
    std::fs::write(
        &fast,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("max_age = \"8s\"", "max_age = \"200ms\"")
            .replace(&metrics, ""),
    )
    .unwrap();
    let mut owner = Running::start(&fast);
    assert!(owner.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let more: Vec<Vec<u8>> = (300..400).map(event).collect();
    landed.extend(produce(&bootstrap, topic, &more));
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_table(&ws.table()).coordinates.len() < landed.len() {
        assert!(Instant::now() < deadline, "owner did not commit everything");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Wake the zombie; its age timer fires with the old batch, which is
    // fenced, or the revocation drops it first.
    let asleep = zombie.log().len();
    zombie.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !zombie.log()[asleep..].iter().any(|l| {
        l.contains("batch dropped")
            || l.contains("revoked assignment dropped")
            || l.contains("partitions revoked")
    }) {
        assert!(Instant::now() < deadline, "{:#?}", zombie.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    zombie.signal("TERM");
    let _ = zombie.wait(Duration::from_secs(60));
    owner.signal("TERM");
    assert_eq!(owner.wait(Duration::from_secs(60)), Some(0));
    assert_exactly_once(&read_table(&ws.table()).coordinates, &landed);
    let zlog = zombie.log().join("\n");
    assert!(
        zlog.contains("batch dropped")
            || zlog.contains("revoked assignment dropped")
            || zlog.contains("partitions revoked"),
        "the zombie should have been fenced or revoked:\n{zlog}"
    );
}

/// A table whose stored offset is past the partition's end (the topic was
/// recreated) makes every batch overlap: inlet stops with an explanation
/// instead of looping or writing anything.
#[test]
fn stored_offset_past_the_end_stops_with_a_clear_error() {
    let mut broker = MockBroker::start();
    let topic = "recreated";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, "200ms"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = inlet::pipeline::load_config(&config).unwrap();
        let mut sink = inlet::sink::DeltaSink::open("events", &cfg.tables["events"])
            .await
            .unwrap();
        let progress = inlet::sink::PartitionProgress {
            app_id: inlet::sink::txn_app_id("test", topic, 0),
            first: 0,
            last: 10_000,
        };
        sink.commit(vec![], &sink.schema(), &[progress], 1, &cfg.commit)
            .await
            .unwrap();
    });
    produce(&bootstrap, topic, &(0..50).map(event).collect::<Vec<_>>());
    let mut inlet = Running::start(&config);
    let code = inlet.wait(Duration::from_secs(90));
    assert_eq!(code, Some(1), "{}", inlet.log().join("\n"));
    let log = inlet.log().join("\n");
    assert!(log.contains("recreated or truncated"), "{log}");
    assert_eq!(read_table(&ws.table()).coordinates.len(), 0);
}
