//! Data loss, per Spark's `failOnDataLoss`: offsets the broker deleted
//! before inlet read them. librdkafka's mock cluster keeps about 5 MiB per
//! partition, so producing ~15 MiB to one partition moves its first
//! available offset (low watermark) past what inlet stored.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::assertions::{assert_exactly_once, wait_rows};
use crate::common::avro::Datum;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{http_get, inlet, run_available_now, wait_output, Running};
use crate::common::producing::{event, produce, Landed};
use crate::common::registry::{MockRegistry, Outage};
use crate::common::tables::{duckdb_read, read_quarantine, read_table, txn_versions};
use crate::common::workspace::{ConfigSpec, Workspace};
use crate::common::{free_port, required};

/// `fail_on_data_loss = false` for the harness's source, from the environment.
const LENIENT: [(&str, &str); 1] = [("INLET_SOURCES__EVENTS__FAIL_ON_DATA_LOSS", "false")];

/// Bytes of padding per burst message: 1,500 of them are ~15 MiB.
const PAD: usize = 10_000;
const BURST: u64 = 1_500;

fn padded(id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"user":"{}","action":"burst","amount":1.5,"event_time":"2024-05-01T12:00:00Z"}}"#,
        "x".repeat(PAD)
    )
    .into_bytes()
}

fn spec<'a>(bootstrap: &'a str, topic: &'a str, extra: &'a str) -> ConfigSpec<'a> {
    ConfigSpec {
        bootstrap,
        topic,
        group: "inlet-loss",
        max_rows: 10_000,
        max_age: "300ms",
        extra,
        session_timeout_ms: 6000,
    }
}

/// (low, high) watermarks of partition 0.
fn watermarks(bootstrap: &str, topic: &str) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
}

/// Produces ~15 MiB (three times what the mock keeps) to the one partition
/// of `topic`, made by `make`; returns where they landed and the watermarks.
fn outrun_retention(
    bootstrap: &str,
    topic: &str,
    ids: std::ops::Range<u64>,
    make: impl Fn(u64) -> Vec<u8>,
) -> (Vec<Landed>, i64, i64) {
    let landed = produce(bootstrap, topic, &ids.map(make).collect::<Vec<_>>());
    let (low, high) = watermarks(bootstrap, topic);
    assert_eq!(high, landed.last().unwrap().offset + 1);
    (landed, low, high)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = inlet()
        .envs(env.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stderr of a run that must have failed.
fn failed(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the run should have stopped:\n{err}");
    err
}

/// The error names the partition, the stored offset, the first available
/// offset, the lost range and count, and both ways on.
fn assert_loss_message(text: &str, topic: &str, first: i64, low: i64) {
    for needle in [
        format!("{topic}/0 was to be read from offset {first}"),
        format!("first available offset is {low}"),
        format!("offsets {first}..={} ({} offsets)", low - 1, low - first),
        format!(r#"--from '{{"{topic}":{{"0":{low}}}}}'"#),
        "fail_on_data_loss = false in [sources.events]".to_string(),
    ] {
        assert!(text.contains(&needle), "`{needle}` not in:\n{text}");
    }
}

/// The `lost` quarantine rows as (first, last) per partition 0, parsed from
/// their error text (the header carries the last offset too, see
/// [`assert_auditor_query`]).
fn lost_ranges(quarantine: &Path) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = read_quarantine(quarantine)
        .into_iter()
        .filter(|q| q.stage == "lost")
        .map(|q| {
            assert_eq!((q.partition, q.value.as_deref()), (0, None), "{q:?}");
            let range = q
                .error
                .strip_prefix("offsets ")
                .and_then(|r| r.split_once(' '))
                .map(|(r, _)| r)
                .unwrap_or_else(|| panic!("no range in {:?}", q.error));
            let (a, b) = range.split_once("..=").unwrap();
            let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a, q.offset, "the row's offset is the first lost one");
            (a, b)
        })
        .collect();
    out.sort();
    out
}

/// An auditor's query of the quarantine table, with DuckDB: the lost ranges
/// from `offset` and the `inlet.lost.last_offset` header.
fn assert_auditor_query(quarantine: &Path, expected: &[(i64, i64)]) {
    let sql = "SELECT \"offset\" AS first_lost, \
               CAST(decode(map_extract(headers, 'inlet.lost.last_offset')[1]) AS BIGINT) AS last_lost \
               FROM t WHERE stage = 'lost' ORDER BY 1";
    if let Some(v) = duckdb_read(quarantine, &[], Some(sql)) {
        let got: Vec<(i64, i64)> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
            .collect();
        assert_eq!(got, expected);
    } else {
        assert!(!required(), "DuckDB reader not installed");
    }
}

/// `--available-now` stops at a lost range, writing nothing for the
/// partition; with `fail_on_data_loss = false` it goes on from the first
/// available offset and records the range once, also over a re-run.
#[test]
fn available_now_stops_on_lost_offsets_and_goes_on_when_told() {
    let mut broker = MockBroker::start();
    let topic = "lossy";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, ""));
    let cfg = config.to_str().unwrap();
    let first = produce(&bootstrap, topic, &(0..100).map(event).collect::<Vec<_>>());
    ok(&run_available_now(&config));
    let (burst, low, high) = outrun_retention(&bootstrap, topic, 100..100 + BURST, padded);
    assert!(low > 100, "retention moved the low watermark: {low}");

    let err = failed(&run_available_now(&config));
    assert_loss_message(&err, topic, 100, low);
    assert!(err.contains("the table stores offset 99"), "{err}");
    assert_exactly_once(&read_table(&ws.table()).coordinates, &first);
    assert!(read_quarantine(&ws.quarantine()).is_empty());

    for _ in 0..2 {
        ok(&run(&["run", "--available-now", "-c", cfg], &LENIENT));
    }
    let mut kept = first.clone();
    kept.extend(burst.iter().filter(|l| l.offset >= low));
    assert_exactly_once(&read_table(&ws.table()).coordinates, &kept);
    assert_eq!(lost_ranges(&ws.quarantine()), [(100, low - 1)]);
    assert_auditor_query(&ws.quarantine(), &[(100, low - 1)]);
    let ids = [format!("test:{topic}:0")];
    assert_eq!(txn_versions(&ws.table(), &ids)[&ids[0]], Some(high - 1));
}

/// `run` and `replay` stop at a lost range too; with `fail_on_data_loss =
/// false`, `run` goes on, counts the lost offsets in
/// `inlet_offsets_lost_total` and records the range once (also after a
/// restart), and so does a replay, under its own app id.
#[test]
fn run_and_replay_stop_on_lost_offsets_and_go_on_when_told() {
    let mut broker = MockBroker::start();
    let topic = "lossy";
    broker.create_topic(topic, 1);
    let bootstrap = broker.bootstrap();
    let port = free_port();
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let ws = Workspace::new();
    let config = ws.config(&spec(&bootstrap, topic, &extra));
    let cfg = config.to_str().unwrap();
    let first = produce(&bootstrap, topic, &(0..100).map(event).collect::<Vec<_>>());
    ok(&run_available_now(&config));
    let (burst, low, high) = outrun_retention(&bootstrap, topic, 100..100 + BURST, padded);
    assert!(low > 100, "retention moved the low watermark: {low}");

    // `run` stops by itself, before writing anything.
    let mut inlet = Running::start(&config);
    let code = inlet.wait(Duration::from_secs(60));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert_loss_message(&inlet.log().join("\n"), topic, 100, low);

    // A replay of the whole partition stops too, and says where to start.
    let from = format!(r#"{{"{topic}":{{"0":0}}}}"#);
    let to = format!(r#"{{"{topic}":{{"0":{high}}}}}"#);
    let replay = ["replay", "-c", cfg, "--from", &from, "--to", &to];
    let err = failed(&run(&replay, &[]));
    assert!(
        err.contains("no offset is stored; reading was to start at 0"),
        "{err}"
    );
    assert!(err.contains(&format!("offsets 0..={}", low - 1)), "{err}");
    assert!(
        err.contains(&format!(
            r#"replay what is left: --from '{{"{topic}":{{"0":{low}}}}}'"#
        )),
        "{err}"
    );
    assert_exactly_once(&read_table(&ws.table()).coordinates, &first);
    assert!(read_quarantine(&ws.quarantine()).is_empty());

    // Told to go on: the loss is logged, counted and recorded once.
    let mut kept = first.clone();
    kept.extend(burst.iter().filter(|l| l.offset >= low));
    for round in 0..2 {
        let mut inlet = Running::start_with_env(&config, &LENIENT);
        if round == 0 {
            assert!(
                inlet.wait_for("data lost", 1, Duration::from_secs(60)),
                "{:#?}",
                inlet.log()
            );
            let metric = format!(
                "inlet_offsets_lost_total{{topic=\"{topic}\",partition=\"0\"}} {}",
                low - 100
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while !http_get(port, "/metrics").is_some_and(|(_, b)| b.contains(&metric)) {
                assert!(Instant::now() < deadline, "no `{metric}` in /metrics");
                std::thread::sleep(Duration::from_millis(100));
            }
            wait_rows(&ws, &inlet, kept.len(), Duration::from_secs(60));
        } else {
            assert!(inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)));
            assert_eq!(inlet.count("data lost"), 0, "{:#?}", inlet.log());
        }
        inlet.signal("TERM");
        assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));
    }
    assert_exactly_once(&read_table(&ws.table()).coordinates, &kept);
    assert_eq!(lost_ranges(&ws.quarantine()), [(100, low - 1)]);

    // The replay goes on too, into a table of its own with a quarantine of
    // its own; run twice, it records its lost range once, there.
    let other = ws.dir.path().join("replayed");
    let other_q = ws.dir.path().join("replayed_quarantine");
    let mut replay = replay.to_vec();
    replay.extend(["--table-uri", other.to_str().unwrap()]);
    replay.extend(["--quarantine-uri", other_q.to_str().unwrap()]);
    for _ in 0..2 {
        ok(&run(&replay, &LENIENT));
    }
    let left: Vec<Landed> = burst.iter().filter(|l| l.offset >= low).copied().collect();
    assert_exactly_once(&read_table(&other).coordinates, &left);
    assert_eq!(lost_ranges(&other_q), [(0, low - 1)]);
    assert_eq!(
        lost_ranges(&ws.quarantine()),
        [(100, low - 1)],
        "the ingest's quarantine is the replay's no more"
    );
}

const LAG_SCHEMA: &str = r#"{"type":"record","name":"Lag","fields":[
  {"name":"id","type":"long"},{"name":"pad","type":"string"}]}"#;

fn lag_record(id: u64, pad: usize, schema: u32) -> Vec<u8> {
    Datum::Record(vec![Datum::Long(id as i64), Datum::Str("x".repeat(pad))]).framed(schema)
}

fn lag_config(ws: &Workspace, bootstrap: &str, registry: &str, fail: bool) -> std::path::PathBuf {
    let path = ws.dir.path().join("lag.toml");
    let toml = format!(
        r#"
app_id = "test"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "lag"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"max.poll.interval.ms" = "6000"

[schema_registry]
url = "{registry}"
retry_backoff = "100ms"
max_backoff = "500ms"
timeout = "1s"

[sources.events]
topics = ["lag"]
table = "events"
format = "avro"
{lenient}

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "id BIGINT NOT NULL, pad STRING"
[tables.events.metadata_columns]
partition = "_partition"
offset = "_offset"

[flush]
max_rows = 10
max_age = "200ms"

[commit]
retry_backoff = "50ms"
"#,
        table = ws.table().display(),
        quarantine = ws.quarantine().display(),
        // The default when failing, so that the test also runs on a build
        // without the key.
        lenient = if fail {
            ""
        } else {
            "fail_on_data_loss = false"
        },
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// A consumer lags while retention deletes under it: the registry is down
/// when a new schema id arrives, so the pipeline stalls and the consumer
/// pauses its partition; meanwhile ~15 MiB are produced. When the registry
/// is back, the consumer's next fetch is out of range (OFFSET_OUT_OF_RANGE).
fn lagging(ws: &Workspace, fail: bool) -> Lag {
    let mut broker = MockBroker::start();
    broker.create_topic("lag", 1);
    let bootstrap = broker.bootstrap();
    let registry = MockRegistry::start();
    let a = registry.register("lag-value", "AVRO", LAG_SCHEMA, &[]);
    let config = lag_config(ws, &bootstrap, &registry.url(), fail);
    let inlet = Running::start(&config);
    assert!(inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)));
    let make = |schema: u32, pad: usize, ids: std::ops::Range<u64>| -> Vec<Vec<u8>> {
        ids.map(|i| lag_record(i, pad, schema)).collect()
    };
    let mut landed = produce(&bootstrap, "lag", &make(a, 10, 0..50));
    wait_rows(ws, &inlet, 50, Duration::from_secs(60));

    // A schema the pipeline has not seen, while the registry is down: the
    // decode thread waits, the chunk queue fills, the consumer pauses.
    let doc = LAG_SCHEMA.replace("\"name\":\"Lag\"", "\"name\":\"Lag\",\"doc\":\"b\"");
    let b = registry.register("lag-value", "AVRO", &doc, &[]);
    assert_ne!(a, b);
    registry.go_down(Outage::ServerError);
    landed.extend(produce(&bootstrap, "lag", &make(b, 10, 50..150)));
    assert!(
        inlet.wait_for("consumer paused", 1, Duration::from_secs(30)),
        "{:#?}",
        inlet.log()
    );
    let (burst, low, high) = outrun_retention(&bootstrap, "lag", 150..150 + BURST, |i| {
        lag_record(i, PAD, b)
    });
    landed.extend(burst);
    assert!(
        low > 150,
        "retention moved the low watermark past the paused position: {low}"
    );
    registry.come_back();
    Lag {
        inlet,
        low,
        high,
        landed,
        _broker: broker,
        _registry: registry,
    }
}

/// A lagging consumer's run: inlet, the watermarks after the burst, where
/// every message landed, and the servers kept up while it runs.
struct Lag {
    inlet: Running,
    low: i64,
    high: i64,
    landed: Vec<Landed>,
    _broker: MockBroker,
    _registry: MockRegistry,
}

/// With `fail_on_data_loss = true` the lagging consumer stops, naming the
/// range; the table holds a gap-free prefix below the first available offset.
#[test]
fn a_lagging_consumer_whose_position_is_deleted_stops() {
    let ws = Workspace::new();
    // Bound whole: the broker and registry must live until the end.
    let mut lag = lagging(&ws, true);
    let (inlet, low) = (&mut lag.inlet, lag.low);
    let code = inlet.wait(Duration::from_secs(60));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    let log = inlet.log().join("\n");
    assert!(
        log.contains("fetch position out of the partition's range"),
        "{log}"
    );
    assert!(log.contains("lag/0 was to be read from offset"), "{log}");
    assert!(
        log.contains(&format!("first available offset is {low}")),
        "{log}"
    );
    let mut offsets: Vec<i64> = read_table(&ws.table())
        .coordinates
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    offsets.sort();
    let n = offsets.len() as i64;
    assert!(n >= 50 && n < low, "{n} rows");
    assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "a prefix, no gap");
    assert!(log.contains(&format!("offsets {n}..={}", low - 1)), "{log}");
    assert!(read_quarantine(&ws.quarantine()).is_empty());
}

/// With `fail_on_data_loss = false` the lagging consumer goes on: every
/// offset is once in the table or in the one lost range.
#[test]
fn a_lagging_consumer_whose_position_is_deleted_goes_on_when_told() {
    let ws = Workspace::new();
    let mut lag = lagging(&ws, false);
    let (low, high, landed) = (lag.low, lag.high, lag.landed.clone());
    let inlet = &mut lag.inlet;
    assert!(
        inlet.wait_for("data lost", 1, Duration::from_secs(60)),
        "{:#?}",
        inlet.log()
    );
    let ids = ["test:lag:0".to_string()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while txn_versions(&ws.table(), &ids)[&ids[0]] != Some(high - 1) {
        assert!(Instant::now() < deadline, "{:#?}", inlet.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    inlet.signal("TERM");
    assert_eq!(inlet.wait(Duration::from_secs(60)), Some(0));
    let lost = lost_ranges(&ws.quarantine());
    assert_eq!(lost.len(), 1, "{lost:?}");
    let (first, last) = lost[0];
    assert_eq!(last, low - 1);
    let mut all = read_table(&ws.table()).coordinates;
    all.extend((first..=last).map(|o| (0, o)));
    assert_exactly_once(&all, &landed);
}
