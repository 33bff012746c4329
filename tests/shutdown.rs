//! The object store refusing every request: a failed Parquet write is read
//! again from the table's offsets once the store is back (never fatal, never
//! lost), and a stop is bounded: SIGTERM during the outage ends `inlet run`
//! within `shutdown_timeout`, non-zero, with nothing half committed, and the
//! next run lands every offset exactly once.

use std::time::{Duration, Instant};

use crate::common::assertions::{assert_exactly_once_in_either, wait_rows_at};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{metrics_toml, run_available_now, Running};
use crate::common::producing::{event, produce, Landed};
use crate::common::proxy::Proxy;
use crate::common::s3::SeaweedS3;
use crate::common::workspace::{ConfigSpec, Workspace};
use crate::common::{free_port, required};

/// An S3 table that inlet reaches through a proxy the test can switch to
/// refusing, and a mock broker with topic `events`.
struct Outage {
    _s3: SeaweedS3,
    proxy: Proxy,
    broker: MockBroker,
    ws: Workspace,
    config: std::path::PathBuf,
    /// Where inlet serves its metrics.
    metrics: u16,
}

impl Outage {
    fn start(bucket: &str, shutdown_timeout: Duration) -> Option<Self> {
        let Some(s3) = SeaweedS3::start() else {
            assert!(!required(), "SeaweedFS not installed");
            return None;
        };
        let port = s3.endpoint().rsplit(':').next()?.parse().ok()?;
        let proxy = Proxy::start(port);
        let mut broker = MockBroker::start();
        broker.create_topic("events", 4);
        let ws = Workspace::on_s3(&s3, bucket);
        let metrics = free_port();
        let extra = metrics_toml(metrics);
        let config = ws.config(&ConfigSpec {
            bootstrap: &broker.bootstrap(),
            topic: "events",
            group: bucket,
            max_rows: 500,
            max_age: "500ms",
            extra: &extra,
            session_timeout_ms: 6000,
        });
        // inlet talks to the store through the proxy; the test reads it directly.
        let text = std::fs::read_to_string(&config).unwrap().replace(
            &s3.endpoint(),
            &format!("http://127.0.0.1:{}", proxy.port()),
        );
        std::fs::write(
            &config,
            format!(
                "shutdown_timeout = \"{}ms\"\n{text}",
                shutdown_timeout.as_millis()
            ),
        )
        .unwrap();
        Some(Outage {
            _s3: s3,
            proxy,
            broker,
            ws,
            config,
            metrics,
        })
    }

    fn produce(&self, ids: std::ops::Range<u64>) -> Vec<Landed> {
        produce(
            &self.broker.bootstrap(),
            "events",
            &ids.map(event).collect::<Vec<_>>(),
        )
    }
}

#[test]
fn a_failed_parquet_write_is_read_again_once_the_store_is_back() {
    let Some(o) = Outage::start("rewrite", Duration::from_secs(25)) else {
        return;
    };
    let mut landed = o.produce(0..1000);
    let mut run = Running::start(&o.config);
    wait_rows_at(&o.ws.table_location(), &[&run], 1, Duration::from_secs(60));
    o.proxy.refuse();
    landed.extend(o.produce(1000..2000));
    assert!(
        run.wait_for("writing Parquet failed", 1, Duration::from_secs(60)),
        "{}",
        run.log().join("\n")
    );
    o.proxy.pass();
    wait_rows_at(
        &o.ws.table_location(),
        &[&run],
        2000,
        Duration::from_secs(120),
    );
    run.signal("TERM");
    assert_eq!(run.wait(Duration::from_secs(30)), Some(0));
    assert_exactly_once_in_either(&o.ws, &landed);
}

#[test]
fn sigterm_during_a_failing_commit_exits_within_the_shutdown_timeout() {
    let limit = Duration::from_secs(4);
    let Some(o) = Outage::start("shutdown", limit) else {
        return;
    };
    let mut landed = o.produce(0..1000);
    let mut run = Running::start(&o.config);
    wait_rows_at(&o.ws.table_location(), &[&run], 1, Duration::from_secs(60));

    // The store starts refusing; new messages make a batch that cannot land.
    o.proxy.refuse();
    landed.extend(o.produce(1000..2000));
    // Within max_age (500 ms) of reading them, inlet flushes the new rows
    // to the refusing store: wait until it has read some, then give it that
    // and a margin (the write's retries take longer).
    run.wait_consumed(o.metrics, "events", 1001, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    run.signal("TERM");
    let code = run.wait(limit + Duration::from_secs(20));
    let took = stopped.elapsed();
    let log = run.log().join("\n");
    assert_eq!(code, Some(1), "non-zero after the timeout:\n{log}");
    assert!(
        took < limit + Duration::from_secs(4),
        "stopped after {took:?} (shutdown_timeout {limit:?}):\n{log}"
    );
    assert!(log.contains("shutdown_timeout"), "{log}");

    // The store is back: a backfill lands everything, once.
    o.proxy.pass();
    let out = run_available_now(&o.config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once_in_either(&o.ws, &landed);
}
