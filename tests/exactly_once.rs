//! Exactly-once under crashes, rebalances and zombies.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::Running;
use common::*;
use rand::Rng;

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

/// Produces `count` events in the background at about `rate` per second.
fn background_producer(
    bootstrap: String,
    topic: &'static str,
    count: u64,
    rate: u64,
) -> (
    std::thread::JoinHandle<()>,
    Arc<Mutex<Vec<Landed>>>,
    Arc<AtomicBool>,
) {
    let landed = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (l, d) = (landed.clone(), done.clone());
    let handle = std::thread::spawn(move || {
        let per_batch = (rate / 10).max(1);
        let mut id = 0;
        while id < count {
            let n = per_batch.min(count - id);
            let payloads: Vec<Vec<u8>> = (id..id + n).map(event).collect();
            let got = produce(&bootstrap, topic, &payloads);
            l.lock().unwrap().extend(got);
            id += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        d.store(true, Ordering::Release);
    });
    (handle, landed, done)
}

/// Start `inlet run` while a producer writes, SIGKILL it at a random moment,
/// restart; about 20 times. Every produced offset lands exactly once.
#[test]
fn crash_loop_loses_and_duplicates_nothing() {
    let mut broker = MockBroker::start();
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    // A short session: the group reassigns a killed member's partitions fast.
    let config = ws.config(&ConfigSpec {
        session_timeout_ms: 2000,
        ..spec(&bootstrap, topic, "300ms")
    });
    let (producer, landed, _) = background_producer(bootstrap.clone(), topic, 6000, 400);
    let mut rng = rand::rng();
    let mut kills_after_commit = 0;
    for i in 0..20 {
        let mut inlet = Running::start(&config);
        let wait = Duration::from_millis(rng.random_range(300..3500));
        std::thread::sleep(wait);
        if inlet.count("batch committed") > 0 {
            kills_after_commit += 1;
        }
        inlet.kill();
        eprintln!("iteration {i}: killed after {wait:?}");
    }
    producer.join().unwrap();
    // Drain what is left and check.
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let landed = landed.lock().unwrap().clone();
    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &landed);
    assert!(
        kills_after_commit >= 5,
        "too few kills landed after a commit ({kills_after_commit}); the loop tests little"
    );
}

/// Two processes in one group split the partitions; one is killed mid-stream,
/// the other takes over; exactly once.
#[test]
fn two_processes_split_partitions_and_take_over() {
    let mut broker = MockBroker::start();
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
    let (producer, landed, done) = background_producer(bootstrap.clone(), topic, 4000, 800);
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
        if t.coordinates.len() >= landed.len() {
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
    assert_exactly_once(&read_table(&ws.table()).coordinates, &landed);
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
    let config = ws.config(&ConfigSpec {
        max_rows: 1_000_000,
        ..spec(&bootstrap, topic, "8s")
    });
    let mut zombie = Running::start(&config);
    assert!(zombie.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let payloads: Vec<Vec<u8>> = (0..300).map(event).collect();
    let mut landed = produce(&bootstrap, topic, &payloads);
    std::thread::sleep(Duration::from_secs(2)); // the zombie buffers them
    zombie.signal("STOP");

    // The new owner, flushing fast, gets the partitions once the zombie's
    // session times out, and commits the same offsets.
    let fast = ws.dir.path().join("fast.toml");
    std::fs::write(
        &fast,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("max_age = \"8s\"", "max_age = \"200ms\""),
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
    // Wake the zombie; its age timer fires with the old batch.
    zombie.signal("CONT");
    std::thread::sleep(Duration::from_secs(12));
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
