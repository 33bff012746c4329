//! Poison pills and registry outages: every bad message lands in quarantine
//! with its stage while the good ones land exactly once; a registry outage
//! quarantines nothing; the crash loop with Avro poison pills.

use std::path::Path;
use std::time::Duration;

use crate::common::assertions::{assert_exactly_once, crash_loop, wait_rows_at, CrashLoop};
use crate::common::avro::{framed_json, Datum};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{run_available_now, Running};
use crate::common::producing::{produce, produce_values, Landed};
use crate::common::registry::{MockRegistry, Outage};
use crate::common::required;
use crate::common::tables::{duckdb_read, read_quarantine, read_table, table_batches, Location};

const PILL_SCHEMA: &str = r#"{"type":"record","name":"Pill","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":["null","string"],"default":null},
  {"name":"amount","type":"double"}]}"#;

/// `amount` as a string: not a type the table's DOUBLE can take.
const PILL_SCHEMA_WRONG_TYPE: &str = r#"{"type":"record","name":"Pill","fields":[
  {"name":"id","type":"long"},
  {"name":"user","type":["null","string"],"default":null},
  {"name":"amount","type":"string"}]}"#;

fn pill(id: i64, user: Option<&str>, schema: u32) -> Vec<u8> {
    Datum::Record(vec![
        Datum::Long(id),
        match user {
            Some(u) => Datum::Union(1, Box::new(Datum::Str(u.into()))),
            None => Datum::Union(0, Box::new(Datum::Null)),
        },
        Datum::Double(id as f64),
    ])
    .framed(schema)
}

/// The grace of [`config`]: short, for the catalogue's unknown schema id.
const GRACE_LINE: &str = r#"unknown_id_grace = "500ms""#;

fn config(dir: &Path, bootstrap: &str, registry: &str) -> std::path::PathBuf {
    let table = |name: &str| dir.join(name).display().to_string();
    let toml = format!(
        r#"
app_id = "test"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "pills"

[schema_registry]
url = "{registry}"
retry_backoff = "100ms"
max_backoff = "1s"
timeout = "1s"
# The unknown schema id of the catalogue is quarantined after this.
{GRACE_LINE}

[sources.avro]
topics = ["pills-avro", "pills-avro-big"]
table = "avro_events"
format = "avro"

[sources.json]
topics = ["pills-json", "pills-json-big"]
table = "json_events"

[tables.avro_events]
uri = "{a}"
quarantine_uri = "{aq}"
schema = "id BIGINT NOT NULL, user STRING NOT NULL, amount DOUBLE"
[tables.avro_events.metadata_columns]
topic = "_topic"
partition = "_partition"
offset = "_offset"

[tables.json_events]
uri = "{j}"
quarantine_uri = "{jq}"
schema = "id BIGINT NOT NULL, user STRING, amount DOUBLE"
[tables.json_events.metadata_columns]
topic = "_topic"
partition = "_partition"
offset = "_offset"

[flush]
max_age = "300ms"
"#,
        a = table("avro_events"),
        aq = table("avro_quarantine"),
        j = table("json_events"),
        jq = table("json_quarantine"),
    );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A topic, where its messages landed, and the stage expected of each (None:
/// a row).
type TopicPills<'a> = (&'a str, &'a [Landed], Vec<Option<&'a str>>);

/// Checks that the messages of each `(topic, landed, expected stages)` split
/// into table rows and quarantine rows as expected (None = a row), each
/// exactly once.
fn check(table: &Path, quarantine: &Path, topics: &[TopicPills<'_>]) {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type};
    let mut rows: Vec<(String, i32, i64)> = Vec::new();
    let (_, _, batches) = table_batches(table);
    for b in &batches {
        let t = b.column_by_name("_topic").unwrap().as_string::<i32>();
        let p = b
            .column_by_name("_partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        let o = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.push((t.value(i).to_string(), p.value(i), o.value(i)));
        }
    }
    let q = read_quarantine(quarantine);
    let mut seen: Vec<(String, i32, i64)> = rows.clone();
    seen.extend(q.iter().map(|q| (q.topic.clone(), q.partition, q.offset)));
    seen.sort();
    let mut expected_all: Vec<(String, i32, i64)> = Vec::new();
    for (topic, landed, stages) in topics {
        for (l, want) in landed.iter().zip(stages) {
            let key = (topic.to_string(), l.partition, l.offset);
            expected_all.push(key.clone());
            let got = q.iter().find(|q| {
                (q.topic.as_str(), q.partition, q.offset) == (*topic, l.partition, l.offset)
            });
            match (want, got) {
                (None, None) => assert!(rows.contains(&key), "{key:?} is in neither table"),
                (Some(stage), Some(row)) => {
                    assert_eq!(&row.stage, stage, "{key:?}: {}", row.error);
                    assert!(!row.error.is_empty());
                }
                (want, got) => panic!("{key:?}: expected {want:?}, got {got:?}"),
            }
        }
    }
    expected_all.sort();
    assert_eq!(
        seen, expected_all,
        "every offset exactly once in one of the tables"
    );
    if let Some(d) = duckdb_read(table, &[], None) {
        assert_eq!(d["rows"], rows.len(), "DuckDB sees the same rows");
    } else {
        assert!(!required(), "DuckDB is required in CI");
    }
}

#[test]
fn the_poison_pill_catalogue_lands_in_quarantine_with_its_stage() {
    let mut broker = MockBroker::start();
    broker.create_topic("pills-avro", 1);
    broker.create_topic("pills-json", 1);
    let registry = MockRegistry::start();
    let good = registry.register("pills-avro-value", "AVRO", PILL_SCHEMA, &[]);
    let wrong = registry.register("pills-avro-value", "AVRO", PILL_SCHEMA_WRONG_TYPE, &[]);
    // The mock broker keeps about 5 MiB per partition: each 5 MB message
    // gets a topic of its own, so that it pushes nothing else out.
    broker.create_topic("pills-avro-big", 1);
    broker.create_topic("pills-json-big", 1);
    let big_text = "x".repeat(5_000_000);

    // Avro topic: (value, expected stage).
    let mut truncated = pill(2, Some("b"), good);
    truncated.truncate(truncated.len() - 3);
    let mut wrong_magic = pill(3, Some("c"), good);
    wrong_magic[0] = 1;
    let wrong_type = Datum::Record(vec![
        Datum::Long(6),
        Datum::Union(0, Box::new(Datum::Null)),
        Datum::Str("lots".into()),
    ])
    .framed(wrong);
    let huge = Datum::Record(vec![
        Datum::Long(8),
        Datum::Union(1, Box::new(Datum::Str(big_text.clone()))),
        Datum::Double(8.0),
    ])
    .framed(good);
    let avro: Vec<(Option<Vec<u8>>, Option<&str>)> = vec![
        (Some(pill(1, Some("a"), good)), None),
        (Some(truncated), Some("decode")),
        (Some(wrong_magic), Some("decode")),
        (Some(pill(4, Some("d"), 999)), Some("schema")), // unknown schema id
        (Some(pill(5, None, good)), Some("constraint")), // null in NOT NULL
        (Some(wrong_type), Some("schema")),
        (None, Some("decode")),             // tombstone
        (Some(vec![0, 0]), Some("decode")), // shorter than the header
        (Some(pill(9, Some("i"), good)), None),
    ];
    let deep = format!(
        r#"{{"id":10,"nested":{}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let big_json = format!(r#"{{"id":11,"user":"{big_text}"}}"#);
    let json: Vec<(Option<Vec<u8>>, Option<&str>)> = vec![
        (Some(br#"{"id":1,"user":"a","amount":1.5}"#.to_vec()), None),
        (
            Some(b"{\"id\":2,\"user\":\"\xff\xfe\"}".to_vec()),
            Some("decode"),
        ), // invalid UTF-8
        (Some(br#"{"id":"three"}"#.to_vec()), Some("schema")), // wrong type
        (Some(br#"{"user":"no id"}"#.to_vec()), Some("constraint")), // null in NOT NULL
        (Some(deep.into_bytes()), Some("decode")),
        (None, Some("decode")),
        (Some(b"{\"id\":5".to_vec()), Some("decode")), // truncated
        (Some(framed_json(good, r#"{"id":6}"#)), Some("decode")), // framed, but the topic is plain JSON
        (Some(br#"{"id":7}"#.to_vec()), None),
    ];
    let bootstrap = broker.bootstrap();
    let send = |topic: &str, items: &[(Option<Vec<u8>>, Option<&str>)]| {
        let values: Vec<Option<&[u8]>> = items.iter().map(|(v, _)| v.as_deref()).collect();
        produce_values(&bootstrap, topic, &values)
    };
    let avro_landed = send("pills-avro", &avro);
    let json_landed = send("pills-json", &json);
    let big: Vec<(Option<Vec<u8>>, Option<&str>)> = vec![(Some(huge), Some("decode"))];
    let avro_big = send("pills-avro-big", &big);
    let big_json: Vec<(Option<Vec<u8>>, Option<&str>)> =
        vec![(Some(big_json.into_bytes()), Some("decode"))];
    let json_big = send("pills-json-big", &big_json);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &bootstrap, &registry.url());
    let out = run_available_now(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Shown when an assertion below fails.
    eprintln!("{log}");
    let stages = |items: &[(Option<Vec<u8>>, Option<&'static str>)]| -> Vec<Option<&'static str>> {
        items.iter().map(|(_, s)| *s).collect()
    };
    check(
        &dir.path().join("avro_events"),
        &dir.path().join("avro_quarantine"),
        &[
            ("pills-avro", &avro_landed, stages(&avro)),
            ("pills-avro-big", &avro_big, stages(&big)),
        ],
    );
    check(
        &dir.path().join("json_events"),
        &dir.path().join("json_quarantine"),
        &[
            ("pills-json", &json_landed, stages(&json)),
            ("pills-json-big", &json_big, stages(&big_json)),
        ],
    );
    // The raw value is kept: the 5 MB message can be replayed from quarantine.
    let q = read_quarantine(&dir.path().join("json_quarantine"));
    assert!(q
        .iter()
        .any(|r| r.value.as_ref().is_some_and(|v| v.len() >= 5_000_000)));
    assert!(
        q.iter().any(|r| r.value.is_none()),
        "the tombstone has no value"
    );
    // DuckDB reads the quarantine tables too, raw values included.
    for (name, n) in [("avro_quarantine", 8), ("json_quarantine", 8)] {
        let Some(d) = duckdb_read(
            &dir.path().join(name),
            &[],
            Some("SELECT stage, count(*) FROM t GROUP BY stage ORDER BY stage"),
        ) else {
            assert!(!required(), "DuckDB is required in CI");
            return;
        };
        assert_eq!(d["rows"], n, "{name}: {d}");
    }
}

/// A broker with the pill topics, a registry that is down (5xx) with the
/// pill schema registered, and `inlet run` on them (`extra` TOML appended to
/// the config) with its partitions assigned. [`DownRegistry::start_with`]
/// chooses the outage (or none) and `schema_registry.unknown_id_grace`.
struct DownRegistry {
    broker: MockBroker,
    registry: MockRegistry,
    dir: tempfile::TempDir,
    inlet: Running,
    /// The pill schema's id.
    id: u32,
}

impl DownRegistry {
    fn start(extra: &str) -> Self {
        Self::start_with(extra, Some(Outage::ServerError), "500ms")
    }

    fn start_with(extra: &str, outage: Option<Outage>, grace: &str) -> Self {
        let mut broker = MockBroker::start();
        broker.create_topic("pills-avro", 2);
        broker.create_topic("pills-json", 1);
        let registry = MockRegistry::start();
        let id = registry.register("pills-avro-value", "AVRO", PILL_SCHEMA, &[]);
        if let Some(how) = outage {
            registry.go_down(how);
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &broker.bootstrap(), &registry.url());
        let mut toml = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(GRACE_LINE, &format!("unknown_id_grace = \"{grace}\""));
        toml.push_str(extra);
        std::fs::write(&cfg, toml).unwrap();
        let inlet = Running::start(&cfg);
        assert!(inlet.wait_for("partitions assigned", 1, Duration::from_secs(60)));
        DownRegistry {
            broker,
            registry,
            dir,
            inlet,
            id,
        }
    }

    /// Produces pills `ids` to `pills-avro`.
    fn produce(&self, ids: std::ops::Range<i64>) -> Vec<Landed> {
        let values: Vec<Vec<u8>> = ids.map(|i| pill(i, Some("u"), self.id)).collect();
        produce(&self.broker.bootstrap(), "pills-avro", &values)
    }

    /// Waits until `n` rows of `pills-avro` are in the table, failing as
    /// soon as any record is in the quarantine.
    fn wait_landed(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rows = read_table(&self.dir.path().join("avro_events"))
                .coordinates
                .len();
            let quarantined = read_quarantine(&self.dir.path().join("avro_quarantine"));
            assert!(
                quarantined.is_empty(),
                "valid records quarantined: {:?}",
                quarantined.first()
            );
            if rows >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{rows} of {n} rows: {:#?}",
                self.inlet.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Once the registry is back: waits for `landed` to be in the table,
    /// stops inlet and checks every offset is there once, none quarantined.
    fn finish(&mut self, landed: &[Landed]) {
        let table = self.dir.path().join("avro_events");
        wait_rows_at(
            &Location::local(&table),
            &[&self.inlet],
            landed.len(),
            Duration::from_secs(60),
        );
        self.inlet.signal("TERM");
        assert_eq!(self.inlet.wait(Duration::from_secs(60)), Some(0));
        assert_exactly_once(&read_table(&table).coordinates, landed);
        assert!(read_quarantine(&self.dir.path().join("avro_quarantine")).is_empty());
    }
}

/// The registry is down (5xx, then refusing connections) when the first
/// message of a new schema id arrives: nothing is quarantined, and ingest
/// resumes when it comes back.
#[test]
fn a_registry_outage_quarantines_nothing_and_ingest_resumes() {
    let mut t = DownRegistry::start("");
    let mut landed = t.produce(0..50);
    let (inlet, registry) = (&t.inlet, &t.registry);
    assert!(
        inlet.wait_for("schema registry unavailable", 2, Duration::from_secs(30)),
        "{:#?}",
        inlet.log()
    );
    for outage in [Outage::Refuse, Outage::Hang] {
        registry.come_back();
        registry.go_down(outage);
        let seen = inlet.count("schema registry unavailable");
        assert!(inlet.wait_for(
            "schema registry unavailable",
            seen + 1,
            Duration::from_secs(30)
        ));
    }
    assert!(
        read_quarantine(&t.dir.path().join("avro_quarantine")).is_empty(),
        "nothing quarantined"
    );
    assert!(
        read_table(&t.dir.path().join("avro_events"))
            .coordinates
            .is_empty(),
        "nothing decoded yet"
    );
    registry.come_back();
    landed.extend(t.produce(50..80));
    t.finish(&landed);
    let log = t.inlet.log().join("\n");
    assert!(!log.contains("message rejected"), "{log}");
}

/// A Karapace registry that restarts answers 404 (40403) for the ids it
/// holds while it re-reads its `_schemas` topic: within the grace, nothing is
/// quarantined and every record lands once.
#[test]
fn a_restarting_registry_answering_404_quarantines_nothing() {
    let mut t = DownRegistry::start_with("", None, "30s");
    t.registry.restart(Duration::from_secs(4));
    let landed = t.produce(0..300);
    t.wait_landed(landed.len());
    t.finish(&landed);
    let log = t.inlet.log().join("\n");
    assert!(
        t.inlet.count("does not know this schema id") >= 1,
        "inlet met no 404: {log}"
    );
    assert!(!log.contains("message rejected"), "{log}");
    assert_eq!(t.inlet.count("nothing was quarantined"), 1, "{log}");
}

/// After an outage (connections refused), the registry comes back re-reading
/// its log and answers 404 for a few seconds: the grace covers those first
/// answers too, and nothing is quarantined.
#[test]
fn the_404s_right_after_an_outage_quarantine_nothing() {
    let mut t = DownRegistry::start_with("", Some(Outage::Refuse), "30s");
    let landed = t.produce(0..200);
    assert!(
        t.inlet
            .wait_for("schema registry unavailable", 2, Duration::from_secs(30)),
        "{:#?}",
        t.inlet.log()
    );
    t.registry.restart(Duration::from_secs(3));
    t.registry.come_back();
    t.wait_landed(landed.len());
    t.finish(&landed);
    let log = t.inlet.log().join("\n");
    assert!(
        t.inlet.count("does not know this schema id") >= 1,
        "inlet met no 404: {log}"
    );
    assert!(!log.contains("message rejected"), "{log}");
}

/// A really unknown schema id: its messages wait the grace once, are
/// quarantined (stage `schema`) exactly once, and later chunks with the id
/// are quarantined at once, without asking the registry again; the good
/// messages around them land.
#[test]
fn a_really_unknown_id_is_quarantined_after_the_grace_paid_once() {
    let grace = Duration::from_secs(2);
    let mut t = DownRegistry::start_with("", None, "2s");
    let bootstrap = t.broker.bootstrap();
    let unknown = 999;
    let round = |r: i64| -> Vec<Vec<u8>> {
        (0..10)
            .map(|i| {
                pill(
                    r * 10 + i,
                    Some("u"),
                    if i % 2 == 0 { unknown } else { t.id },
                )
            })
            .collect()
    };
    let started = std::time::Instant::now();
    let mut landed = produce(&bootstrap, "pills-avro", &round(0));
    assert!(
        t.inlet.wait_for(
            "schema id unknown after the grace",
            1,
            Duration::from_secs(30)
        ),
        "{:#?}",
        t.inlet.log()
    );
    let first = started.elapsed();
    assert!(
        first >= grace,
        "quarantined after {first:?}, before the grace"
    );
    assert!(first < grace + Duration::from_secs(8), "{first:?}");
    let requests = t.registry.requests(&format!("/schemas/ids/{unknown}"));
    // 100 ms doubling to 1 s within 2 s: a handful.
    assert!((2..=10).contains(&requests), "{requests} requests");
    // Nine more chunks, each with the id: decided at once.
    let later = std::time::Instant::now();
    for r in 1..10 {
        landed.extend(produce(&bootstrap, "pills-avro", &round(r)));
        std::thread::sleep(Duration::from_millis(150));
    }
    let quarantine = t.dir.path().join("avro_quarantine");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_quarantine(&quarantine).len() < 50
        || read_table(&t.dir.path().join("avro_events"))
            .coordinates
            .len()
            < 50
    {
        assert!(std::time::Instant::now() < deadline, "{:#?}", t.inlet.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "grace {grace:?}: first quarantined after {first:?} with {requests} requests; \
         nine more chunks decided in {:?}",
        later.elapsed()
    );
    // Per chunk, the grace would be 18 s more.
    assert!(
        later.elapsed() < Duration::from_secs(12),
        "{:?}",
        later.elapsed()
    );
    assert_eq!(
        t.registry.requests(&format!("/schemas/ids/{unknown}")),
        requests,
        "the id is remembered as unknown"
    );
    t.inlet.signal("TERM");
    assert_eq!(t.inlet.wait(Duration::from_secs(60)), Some(0));
    let log = t.inlet.log().join("\n");
    assert_eq!(
        t.inlet.count("schema id unknown after the grace"),
        1,
        "{log}"
    );
    let stages: Vec<Option<&str>> = (0..100).map(|i| (i % 2 == 0).then_some("schema")).collect();
    // Produced in order, one round after the other: `landed[i]` is pill i.
    check(
        &t.dir.path().join("avro_events"),
        &quarantine,
        &[("pills-avro", &landed, stages)],
    );
    assert!(
        read_quarantine(&quarantine)
            .iter()
            .all(|q| q.error.contains("unknown_id_grace")),
        "{log}"
    );
}

/// A stall twice as long as `max.poll.interval.ms` (the registry is down
/// while the chunk queue is full): the consumer pauses and keeps polling, so
/// it is never thrown out of its group, and resumes when the registry is back.
#[test]
fn a_stalled_pipeline_pauses_the_consumer_which_keeps_its_group() {
    // The poll thread pauses after a third of max.poll.interval.ms, 2 s.
    let mut t = DownRegistry::start(
        r#"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"max.poll.interval.ms" = "6000"
"#,
    );
    // Rounds further apart than the chunk linger are chunks of their own:
    // the decode thread holds the first, the queue two more, and the poll
    // thread waits to hand over the fourth.
    let mut landed = Vec::new();
    for round in 0..8 {
        landed.extend(t.produce(round * 10..round * 10 + 10));
        std::thread::sleep(Duration::from_millis(300));
    }
    // The queue is full once the last round is polled: 2 s later the
    // consumer pauses; the stall lasts twice max.poll.interval.ms from then
    // (the pause and 10 s more), however late the pause comes.
    assert!(
        t.inlet
            .wait_for("consumer paused", 1, Duration::from_secs(60)),
        "{:#?}",
        t.inlet.log()
    );
    std::thread::sleep(Duration::from_secs(10));
    t.registry.come_back();
    landed.extend(t.produce(80..100));
    let table = t.dir.path().join("avro_events");
    wait_rows_at(
        &Location::local(&table),
        &[&t.inlet],
        landed.len(),
        Duration::from_secs(60),
    );
    // One assignment, never revoked: the consumer kept its group.
    let revoked = t.inlet.count("partitions revoked");
    t.finish(&landed);
    let inlet = &t.inlet;
    let log = inlet.log().join("\n");
    assert_eq!(revoked, 0, "{log}");
    assert_eq!(inlet.count("partitions assigned"), 1, "{log}");
    let paused = inlet.count("consumer paused");
    assert!(paused >= 1, "{log}");
    assert_eq!(inlet.count("consumer resumed"), paused, "{log}");
    assert!(!log.contains("max.poll.interval.ms"), "{log}");
}

/// The schema every crash-loop message is written with: registered first in
/// a fresh registry, so its id is 1.
const CRASH_SCHEMA: &str = r#"{"type":"record","name":"E","fields":[
  {"name":"id","type":"long"},{"name":"user","type":"string"},
  {"name":"action","type":"string"},{"name":"amount","type":"double"},
  {"name":"event_time","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

/// An Avro event, or every 25th time an Avro poison pill of one of four kinds.
fn avro_poisoned_event(id: u64) -> Vec<u8> {
    let event = Datum::Record(vec![
        Datum::Long(id as i64),
        Datum::Str(format!("user{}", id % 10)),
        Datum::Str("click".into()),
        Datum::Double(id as f64),
        Datum::Long(1_700_000_000_000_000 + id as i64),
    ]);
    match (id % 25, id / 25 % 4) {
        (0, 0) => {
            let mut v = event.framed(1);
            v.truncate(v.len() - 4);
            v
        }
        (0, 1) => event.framed(77), // unknown schema id
        (0, 2) => {
            let mut v = event.framed(1);
            v[0] = 0x7f;
            v
        }
        (0, _) => vec![0, 0, 0, 0, 1, 0xff, 0xff],
        _ => event.framed(1),
    }
}

#[test]
fn crash_loop_with_avro_poison_pills_mock() {
    let registry = MockRegistry::start();
    assert_eq!(
        registry.register("crash-value", "AVRO", CRASH_SCHEMA, &[]),
        1
    );
    crash_loop(
        &mut MockBroker::start(),
        &CrashLoop {
            iterations: 12,
            session_timeout_ms: 6000,
            kill_window_ms: 1000..6000,
            fresh_groups: true,
            make: avro_poisoned_event,
            env: vec![("INLET_SOURCES__EVENTS__FORMAT".into(), "avro".into())],
            // A short grace: a process killed within the grace would wait
            // for the unknown id again on every restart.
            extra: format!(
                "[schema_registry]\nurl = \"{}\"\nunknown_id_grace = \"200ms\"\n",
                registry.url()
            ),
        },
    );
}
