//! Bounded runs keep their word: a commit whose answer was lost is still
//! the run's own (counted once, nothing fenced or dropped, every offset in
//! table ∪ quarantine exactly once), a run exits successfully only once its
//! whole range is in the table and names what it could not finish, opening
//! a table waits out a flaky store, and a replay into another table touches
//! nothing of the ingest's.
//!
//! The runs here drive inlet's library in this process, through the
//! fault-injecting object store of `common::faults` (local disk and
//! SeaweedFS underneath).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::assertions::{assert_exactly_once, assert_exactly_once_in_either, last_offsets};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::faults::{self, Fault, Target};
use crate::common::process::{inlet, wait_output};
use crate::common::producing::{event, produce, Landed};
use crate::common::required;
use crate::common::s3::SeaweedS3;
use crate::common::tables::{read_quarantine, read_quarantine_at, read_table, read_table_at};
use crate::common::workspace::{ConfigSpec, Workspace};
use inlet::{Mode, PipelineError, RunSummary};

/// An event, or every 25th time a message that is not JSON.
fn poisoned(id: u64) -> Vec<u8> {
    if id % 25 == 0 {
        b"{\"id\":".to_vec()
    } else {
        event(id)
    }
}

/// A broker with one topic full of messages, and a workspace.
struct Case {
    _broker: MockBroker,
    ws: Workspace,
    config: PathBuf,
    landed: Vec<Landed>,
    bootstrap: String,
}

/// `n` messages (`make`) on two partitions; commits of at most `max_rows`.
fn case(n: u64, make: fn(u64) -> Vec<u8>, s3: Option<(&SeaweedS3, &str)>) -> Case {
    let mut broker = MockBroker::start();
    broker.create_topic("events", 2);
    let bootstrap = broker.bootstrap();
    let ws = match s3 {
        Some((server, bucket)) => Workspace::on_s3(server, bucket),
        None => Workspace::new(),
    };
    let config = ws.config(&ConfigSpec {
        bootstrap: &bootstrap,
        topic: "events",
        group: "inlet-bounded",
        max_rows: 150,
        max_age: "30s",
        extra: "",
        session_timeout_ms: 6000,
    });
    let payloads: Vec<Vec<u8>> = (0..n).map(make).collect();
    let landed = produce(&bootstrap, "events", &payloads);
    Case {
        _broker: broker,
        ws,
        config,
        landed,
        bootstrap,
    }
}

impl Case {
    /// The config, with both tables behind the fault store.
    fn faulty_config(&self) -> inlet::Config {
        let mut cfg = inlet::pipeline::load_config(&self.config).unwrap();
        let t = cfg.tables.get_mut("events").unwrap();
        t.uri = faults::faulty(&self.ws.table_location().uri);
        t.quarantine_uri = Some(faults::faulty(&self.ws.quarantine_location().uri));
        cfg
    }

    fn table_target(&self) -> String {
        faults::target_location(&self.ws.table_location().uri)
    }

    fn quarantine_target(&self) -> String {
        faults::target_location(&self.ws.quarantine_location().uri)
    }

    /// Every offset in table ∪ quarantine exactly once, each committed
    /// batch counted once, nothing fenced.
    fn assert_kept(&self, summary: &RunSummary) {
        assert_exactly_once_in_either(&self.ws, &self.landed);
        let rows = read_table_at(&self.ws.table_location()).coordinates.len();
        let quarantined = read_quarantine_at(&self.ws.quarantine_location()).len();
        assert_eq!(summary.rows_written as usize, rows, "rows counted once");
        assert_eq!(
            summary.quarantined as usize, quarantined,
            "quarantine rows counted once"
        );
        assert_eq!(summary.fenced, 0, "no batch fenced or dropped");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a bounded pipeline to its end.
fn bounded(cfg: inlet::Config, mode: Mode) -> Result<RunSummary, PipelineError> {
    runtime().block_on(inlet::Pipeline::new(cfg).with_mode(mode).run())
}

/// Runs a continuous pipeline until `case`'s messages are all in table ∪
/// quarantine, then stops it the way SIGTERM does.
fn continuous(case: &Case, cfg: inlet::Config) -> Result<RunSummary, PipelineError> {
    let pipeline = inlet::Pipeline::new(cfg);
    let stop = pipeline.shutdown_handle();
    let worker = std::thread::spawn(move || runtime().block_on(pipeline.run()));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rows = read_table_at(&case.ws.table_location()).coordinates.len()
            + read_quarantine_at(&case.ws.quarantine_location()).len();
        if rows >= case.landed.len() || worker.is_finished() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {rows} of {} offsets landed",
            case.landed.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.trigger();
    worker.join().unwrap()
}

fn replay_mode(cfg: &mut inlet::Config) -> Mode {
    let (from, to) = (r#"{"events":{"0":-2,"1":-2}}"#, "{}");
    cfg.app_id = inlet::pipeline::replay_app_id(&cfg.app_id, from, to);
    Mode::Replay {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
    }
}

#[derive(Clone, Copy)]
enum How {
    AvailableNow,
    Replay,
    Run,
}

/// The answer to the second data commit of a run is lost after the commit
/// landed (the store's client retries the conditional PUT and hears "already
/// exists", so delta-rs then meets its own commit as a concurrent one).
fn lost_answer(how: How, s3: Option<(&SeaweedS3, &str)>) {
    let case = case(1200, poisoned, s3);
    let rule = faults::inject(
        Target::Commit(case.table_target()),
        2..3,
        Fault::LoseAnswerAndRetry,
    );
    let mut cfg = case.faulty_config();
    if let How::Run = how {
        // The last, partial batch of a continuous run waits for max_age.
        cfg.flush.max_age = Duration::from_secs(1);
    }
    let summary = match how {
        How::AvailableNow => bounded(cfg, Mode::AvailableNow),
        How::Replay => {
            let mode = replay_mode(&mut cfg);
            bounded(cfg, mode)
        }
        How::Run => continuous(&case, cfg),
    }
    .expect("the run succeeds");
    assert_eq!(rule.fired(), 1, "the fault was injected");
    case.assert_kept(&summary);
}

#[test]
fn lost_commit_answer_available_now_local() {
    lost_answer(How::AvailableNow, None);
}

#[test]
fn lost_commit_answer_replay_local() {
    lost_answer(How::Replay, None);
}

#[test]
fn lost_commit_answer_run_local() {
    lost_answer(How::Run, None);
}

fn s3_server() -> Option<SeaweedS3> {
    let s = SeaweedS3::start();
    if s.is_none() {
        assert!(!required(), "SeaweedFS (INLET_TEST_WEED) is required in CI");
    }
    s
}

#[test]
fn lost_commit_answer_available_now_s3() {
    let Some(s3) = s3_server() else { return };
    lost_answer(How::AvailableNow, Some((&s3, "lost-now")));
}

#[test]
fn lost_commit_answer_replay_s3() {
    let Some(s3) = s3_server() else { return };
    lost_answer(How::Replay, Some((&s3, "lost-replay")));
}

#[test]
fn lost_commit_answer_run_s3() {
    let Some(s3) = s3_server() else { return };
    lost_answer(How::Run, Some((&s3, "lost-run")));
}

/// Four lost answers in one `--available-now` run, two of them on
/// quarantine commits, of both kinds.
#[test]
fn several_lost_answers_in_one_bounded_run() {
    let case = case(2000, poisoned, None);
    let rules = [
        faults::inject(Target::Commit(case.table_target()), 2..3, Fault::LoseAnswer),
        faults::inject(
            Target::Commit(case.table_target()),
            5..6,
            Fault::LoseAnswerAndRetry,
        ),
        faults::inject(
            Target::Commit(case.quarantine_target()),
            1..2,
            Fault::LoseAnswer,
        ),
        faults::inject(
            Target::Commit(case.quarantine_target()),
            4..5,
            Fault::LoseAnswerAndRetry,
        ),
    ];
    let summary = bounded(case.faulty_config(), Mode::AvailableNow).expect("the run succeeds");
    for r in &rules {
        assert_eq!(r.fired(), 1, "every fault was injected");
    }
    case.assert_kept(&summary);
}

/// Another writer stores offsets of partition 0 under the run's app id just
/// before the run's first commit: the run keeps the rest of its range
/// (partition 1 whole, partition 0 after the other writer's offset, fetched
/// again after the fence), writes nothing twice, and fails naming partition
/// 0's offsets it did not write.
#[test]
fn a_range_owned_in_part_by_another_writer_fails_naming_what_is_missing() {
    let case = case(1000, event, None);
    let last = last_offsets(&case.landed);
    let other = last[&0] / 2;
    let hook = move |location: &str| {
        let path = location.strip_prefix("file://").unwrap();
        let info = r#"{"commitInfo":{"timestamp":1700000000000,"operation":"STREAMING UPDATE","operationParameters":{"outputMode":"Append","queryId":"other","epochId":"1"}}}"#;
        let txn = format!(
            r#"{{"txn":{{"appId":"test:events:0","version":{other},"lastUpdated":1700000000000}}}}"#
        );
        let commit = format!("{info}\n{txn}\n");
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .expect("the other writer takes the version");
        f.write_all(commit.as_bytes()).unwrap();
    };
    let rule = faults::inject(
        Target::Commit(case.table_target()),
        1..2,
        Fault::Before(Arc::new(hook)),
    );
    let err = bounded(case.faulty_config(), Mode::AvailableNow).expect_err("the range is not ours");
    assert_eq!(rule.fired(), 1);
    let PipelineError::Incomplete(unfinished) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        unfinished.0,
        vec![inlet::pipeline::Gap {
            partition: ("events".into(), 0),
            first: 0,
            last: other,
            cause: inlet::pipeline::GapCause::OtherWriter { stored: other },
        }],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("events/0 offsets 0..={other}")),
        "{text}"
    );
    // Everything else of the range, exactly once.
    let expected: Vec<Landed> = case
        .landed
        .iter()
        .copied()
        .filter(|l| l.partition == 1 || l.offset > other)
        .collect();
    assert_exactly_once(
        &read_table_at(&case.ws.table_location()).coordinates,
        &expected,
    );
}

/// The first reads of the log fail as if the store were unreachable: opening
/// waits them out, and the run then does its work.
fn transient_open_errors(s3: Option<(&SeaweedS3, &str)>) {
    let case = case(600, poisoned, s3);
    // The table exists before the faulty start.
    create_table(&case);
    let rule = faults::inject(
        Target::Read(format!("{}/_delta_log", case.table_target())),
        1..4,
        Fault::Unreachable,
    );
    let summary = bounded(case.faulty_config(), Mode::AvailableNow).expect("the run succeeds");
    assert_eq!(rule.fired(), 3, "the faults were injected");
    case.assert_kept(&summary);
}

/// Creates the case's table without faults.
fn create_table(case: &Case) {
    let cfg = inlet::pipeline::load_config(&case.config).unwrap();
    runtime().block_on(async {
        inlet::sink::DeltaSink::open("events", &cfg.tables["events"])
            .await
            .unwrap();
    });
}

#[test]
fn transient_store_errors_at_open_are_retried_local() {
    transient_open_errors(None);
}

#[test]
fn transient_store_errors_at_open_are_retried_s3() {
    let Some(s3) = s3_server() else { return };
    transient_open_errors(Some((&s3, "open-flaky")));
}

/// The committed offsets of `group` for partitions 0 and 1 of `events`.
fn group_offsets(bootstrap: &str, group: &str) -> Vec<rdkafka::Offset> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("events", 0);
    tpl.add_partition("events", 1);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements().iter().map(|e| e.offset()).collect()
}

/// Commits offsets for `group` as its members would.
fn commit_group(bootstrap: &str, group: &str, offsets: [i64; 2]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets.into_iter().enumerate() {
        tpl.add_partition_offset("events", p as i32, rdkafka::Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn run_inlet(args: &[&str]) -> std::process::Output {
    let child = inlet()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// `replay --table-uri` with poison pills: the production quarantine is
/// untouched, the replay's own quarantine holds them exactly once, and the
/// ingest's consumer group keeps its offsets. Without `--quarantine-uri` the
/// replay refuses to start.
#[test]
fn replay_into_another_table_touches_nothing_of_the_ingest() {
    let case = case(800, poisoned, None);
    let cfg = case.config.to_str().unwrap();
    let ingest = run_inlet(&["run", "--available-now", "-c", cfg]);
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    let production_quarantine = read_quarantine(&case.ws.quarantine());
    assert_eq!(production_quarantine.len(), case.landed.len().div_ceil(25));
    commit_group(&case.bootstrap, "inlet-bounded", [7, 9]);
    let group_before = group_offsets(&case.bootstrap, "inlet-bounded");

    let other = case.ws.dir.path().join("replayed");
    let other_q = case.ws.dir.path().join("replayed_quarantine");
    let from = r#"{"events":{"0":-2,"1":-2}}"#;
    let base = [
        "replay",
        "-c",
        cfg,
        "--from",
        from,
        "--table-uri",
        other.to_str().unwrap(),
    ];
    let refused = run_inlet(&base);
    assert!(
        !refused.status.success(),
        "a replay without a quarantine of its own must not start"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--quarantine-uri"), "{err}");
    assert!(!other.exists(), "nothing was written");

    let mut args = base.to_vec();
    args.extend(["--quarantine-uri", other_q.to_str().unwrap()]);
    let replayed = run_inlet(&args);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        read_quarantine(&case.ws.quarantine()),
        production_quarantine,
        "the production quarantine is unchanged"
    );
    let mut all = read_table(&other).coordinates;
    let own_q = read_quarantine(&other_q);
    assert_eq!(own_q.len(), production_quarantine.len());
    all.extend(own_q.iter().map(|q| (q.partition, q.offset)));
    assert_exactly_once(&all, &case.landed);
    assert_eq!(
        group_offsets(&case.bootstrap, "inlet-bounded"),
        group_before,
        "the ingest's group offsets are unchanged"
    );
}
