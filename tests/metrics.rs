//! `inlet run` serves Prometheus metrics, `/healthz` and `/readyz`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::process::Running;
use crate::common::*;

/// A plain HTTP/1.1 GET: (status code, body).
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

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
        if let Some(r) = get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "no /healthz: {:#?}", inlet.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health.0, 200);
    assert!(inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    assert_eq!(get(port, "/readyz").unwrap().0, 200);
    assert_eq!(get(port, "/nope").unwrap().0, 404);

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
        let (code, body) = get(port, "/metrics").unwrap();
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
