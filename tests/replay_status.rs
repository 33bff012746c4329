//! `inlet replay` (bounded, idempotent, own app id) and `inlet status`.

use std::process::Output;

use crate::common::assertions::{app_ids, assert_exactly_once, last_offsets};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{inlet, wait_output};
use crate::common::producing::{event, produce, Landed};
use crate::common::tables::{read_table, txn_versions};
use crate::common::workspace::{ConfigSpec, Workspace};

fn spec<'a>(bootstrap: &'a str, topic: &'a str) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "inlet-replay",
        max_rows: 10_000,
        max_age: "1s",
        extra: "",
        session_timeout_ms: 6000,
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = inlet()
        .envs(env.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, std::time::Duration::from_secs(120))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn replay_is_bounded_idempotent_and_leaves_ingest_offsets_alone() {
    let mut broker = MockBroker::start();
    let topic = "events";
    broker.create_topic(topic, 2);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic));
    let cfg = config.to_str().unwrap();
    let landed = produce(&bootstrap, topic, &(0..400).map(event).collect::<Vec<_>>());
    ok(&run(&["run", "--available-now", "-c", cfg], &[]));
    let ingest_ids = app_ids(&landed, topic);
    let before = txn_versions(&ws.table(), &ingest_ids);

    // Replay a range into another table.
    let other = ws.dir.path().join("replayed");
    // The config has a quarantine table: the ingest's, not the replay's.
    let other_q = ws.dir.path().join("replayed_quarantine");
    let from = r#"{"events":{"0":10,"1":-2}}"#;
    let to = r#"{"events":{"0":50,"1":30}}"#;
    let args = [
        "replay",
        "-c",
        cfg,
        "--from",
        from,
        "--to",
        to,
        "--table-uri",
        other.to_str().unwrap(),
        "--quarantine-uri",
        other_q.to_str().unwrap(),
    ];
    ok(&run(&args, &[]));
    let expected: Vec<Landed> = landed
        .iter()
        .copied()
        .filter(|l| {
            (l.partition == 0 && (10..50).contains(&l.offset))
                || (l.partition == 1 && l.offset < 30)
        })
        .collect();
    let t = read_table(&other);
    assert_exactly_once(&t.coordinates, &expected);
    let replay_id = inlet::pipeline::replay_app_id("test", from, to);
    let stored = txn_versions(
        &other,
        &[
            format!("{replay_id}:events:0"),
            format!("{replay_id}:events:1"),
        ],
    );
    assert_eq!(stored[&format!("{replay_id}:events:0")], Some(49));
    assert_eq!(stored[&format!("{replay_id}:events:1")], Some(29));

    // The same replay again writes nothing.
    ok(&run(&args, &[]));
    assert_eq!(
        read_table(&other).version,
        t.version,
        "second replay committed"
    );

    // A replay into the ingest's own table re-ingests the range under its own
    // app id: the ingest's stored offsets do not move.
    ok(&run(&args[..7], &[]));
    assert_eq!(txn_versions(&ws.table(), &ingest_ids), before);
    assert_eq!(
        read_table(&ws.table()).coordinates.len(),
        landed.len() + expected.len()
    );
    // `status --app-id` shows what the replay stored, partition by partition.
    let json = ok(&run(
        &["status", "--json", "-c", cfg, "--app-id", &replay_id],
        &[],
    ));
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stored: Vec<(i64, i64)> = status["tables"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["stored_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(stored, [(0, 49), (1, 29)], "{json}");
}

#[test]
fn status_reports_offsets_lag_and_table_and_hides_secrets() {
    let mut broker = MockBroker::start();
    let topic = "events";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic));
    let cfg = config.to_str().unwrap();
    let secret = [(
        "INLET_KAFKA__PROPERTIES__SASL_PASSWORD",
        "hunter2-very-secret",
    )];

    // Before the table exists.
    let human = ok(&run(&["status", "-c", cfg], &secret));
    assert!(human.contains("not created yet"), "{human}");

    let landed = produce(&bootstrap, topic, &(0..300).map(event).collect::<Vec<_>>());
    let ran = run(&["run", "--available-now", "-c", cfg], &secret);
    ok(&ran);
    produce(
        &bootstrap,
        topic,
        &(300..350).map(event).collect::<Vec<_>>(),
    );

    let json_out = run(&["status", "--json", "-c", cfg], &secret);
    let status: serde_json::Value = serde_json::from_str(&ok(&json_out)).unwrap();
    let table = &status["tables"][0];
    assert_eq!(table["exists"], true);
    assert!(table["version"].as_i64().unwrap() >= 1);
    assert!(table["files"].as_u64().unwrap() >= 1);
    assert!(table["last_commit"].is_string());
    assert_eq!(table["lag"], 50);
    let last = last_offsets(&landed);
    for p in table["partitions"].as_array().unwrap() {
        let partition = p["partition"].as_i64().unwrap() as i32;
        assert_eq!(p["stored_offset"], last[&partition]);
        assert_eq!(
            p["lag"].as_i64().unwrap(),
            p["high_watermark"].as_i64().unwrap() - last[&partition] - 1
        );
    }
    let human_out = run(&["status", "-c", cfg], &secret);
    let human = ok(&human_out);
    assert!(human.contains("total lag 50"), "{human}");

    for out in [&ran, &json_out, &human_out] {
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains("hunter2-very-secret"),
                "secret leaked"
            );
        }
    }
}
