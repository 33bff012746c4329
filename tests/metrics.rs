//! `inlet run` serves Prometheus metrics, `/healthz` and `/readyz`.

use std::time::{Duration, Instant};

use crate::common::assertions::wait_rows;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::free_port;
use crate::common::process::{http_get, Running};
use crate::common::producing::{event, produce};
use crate::common::workspace::{ConfigSpec, Workspace};

/// The value of the sample line that starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_health_and_readiness() {
    let mut broker = MockBroker::start();
    let topic = "events";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let port = free_port();
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let ws = Workspace::new();
    let config = ws.config(&ConfigSpec {
        bootstrap: &bootstrap,
        topic,
        group: "inlet-metrics",
        max_rows: 10_000,
        max_age: "300ms",
        extra: &extra,
        session_timeout_ms: 6000,
    });
    let mut inlet = Running::start(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(r) = http_get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "no /healthz: {:#?}", inlet.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health.0, 200);
    assert!(inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    let mut payloads: Vec<Vec<u8>> = (0..300).map(event).collect();
    payloads.extend([b"not json".to_vec(), b"{\"id\":".to_vec(), b"[]".to_vec()]);
    let landed = produce(&bootstrap, topic, &payloads);
    wait_rows(&ws, &inlet, 300, Duration::from_secs(60));

    // Lag comes from librdkafka's statistics, every 5 s: an earlier sample
    // may still show the lag from before the messages were read.
    let lag = |body: &str, p: i32| {
        sample(
            body,
            &format!("inlet_consumer_lag{{topic=\"{topic}\",partition=\"{p}\"}}"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, body) = http_get(port, "/metrics").unwrap();
        assert_eq!(code, 200);
        if (0..2).all(|p| lag(&body, p) == Some(0.0))
            && body.contains("inlet_records_rejected_total{")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "metrics incomplete:\n{body}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let t = format!("{{topic=\"{topic}\"}}");
    assert_eq!(
        sample(&body, &format!("inlet_records_consumed_total{t}")),
        Some(landed.len() as f64),
        "{body}"
    );
    assert_eq!(
        sample(&body, &format!("inlet_records_written_total{t}")),
        Some(300.0)
    );
    let rejected: f64 = body
        .lines()
        .filter(|l| l.starts_with("inlet_records_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rejected, 3.0, "{body}");
    assert!(sample(&body, &format!("inlet_bytes_consumed_total{t}")).unwrap() > 300.0 * 50.0);
    assert!(sample(&body, "inlet_batches_committed_total{table=\"events\"}").unwrap() >= 1.0);
    assert!(
        body.contains("inlet_commit_latency_seconds_bucket{"),
        "{body}"
    );
    assert_eq!(
        sample(&body, "inlet_commit_retries_total{table=\"events\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "inlet_commit_conflicts_total{table=\"events\"}"),
        Some(0.0)
    );
    inlet.signal("TERM");
    assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));
}
