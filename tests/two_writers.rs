//! Two `inlet run` processes of one consumer group appending at once to a
//! copy of a table another engine made (`../shared/fixtures/delta`), on
//! local disk and on S3 (SeaweedFS): an identity table, whose ids both
//! generate (a writer whose values the other's commit reached writes its
//! files anew after the fresh high-water mark), and an in-commit-timestamp
//! table (a writer that lost a version to the other stamps its timestamp
//! after the other's). Every offset lands exactly once, and DuckDB and
//! delta-rs read the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;

use crate::common::assertions::last_offsets;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::fixtures::copy_fixture;
use crate::common::process::Running;
use crate::common::producing::produce;
use crate::common::required;
use crate::common::s3::SeaweedS3;
use crate::common::tables::{duckdb_read, table_batches, txn_versions_at, Location};

/// The log line of a batch whose identity values were generated again.
const REGENERATED: &str = "identity values generated again";
/// The debug line of a commit that lost its version to another writer.
const RACED: &str = "another writer committed first";
/// How long a writer may take to get its partitions (as in `s3.rs`'s
/// processes, with room for a loaded machine).
const JOIN_LIMIT: Duration = Duration::from_secs(120);

/// The commit files of a table's log, in version order, as JSON lines.
fn commits(table: &Path) -> Vec<(i64, Vec<serde_json::Value>)> {
    let mut out: Vec<(i64, Vec<serde_json::Value>)> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.contains("checkpoint"))
        .filter_map(|n| Some((n.split('.').next()?.parse().ok()?, n)))
        .map(|(v, n)| {
            let text = std::fs::read_to_string(table.join("_delta_log").join(n)).unwrap();
            let lines = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (v, lines)
        })
        .collect();
    out.sort_by_key(|(v, _)| *v);
    out
}

/// What a run of two writers left: the table (local, also when it was on
/// S3), the last version before them, the messages produced, and the log
/// lines counted.
struct Ran {
    _dir: tempfile::TempDir,
    table: PathBuf,
    from: i64,
    produced: usize,
    regenerated: usize,
    raced: usize,
}

/// Two processes of one group (4 partitions, small flushes: both commit
/// all the time) append rounds of 40 messages (`message(n)`, n counting
/// from 0) to a copy of `fixture` (on `s3` if given) until `enough` says
/// so of their logs (at least 3 rounds, at most 30); each round waits until
/// every partition stores its last offset. Both stop with SIGTERM.
fn two_writers(
    fixture: &str,
    s3: Option<&SeaweedS3>,
    message: &dyn Fn(usize) -> String,
    enough: &dyn Fn(&[Running]) -> bool,
) -> Option<Ran> {
    let dir = tempfile::tempdir().unwrap();
    let local = copy_fixture(fixture, dir.path())?;
    let from = commits(&local).last().map_or(-1, |(v, _)| *v);
    let (loc, storage) = match s3 {
        None => (Location::local(&local), String::new()),
        Some(s3) => {
            s3.create_bucket("lake");
            s3.upload_dir(&local, "s3://lake/t");
            std::fs::remove_dir_all(&local).unwrap();
            let loc = Location {
                uri: "s3://lake/t".into(),
                options: s3.storage_options(),
            };
            let storage = format!(
                "[tables.t.storage_options]\n{}\n",
                s3.storage_options_toml()
            );
            (loc, storage)
        }
    };
    let mut broker = MockBroker::start();
    let bootstrap = broker.bootstrap();
    broker.create_topic("a", 4);
    let cfg = dir.path().join("inlet.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
app_id = "lake"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "lake"
[sources.s]
topics = ["a"]
table = "t"
[tables.t]
uri = "{uri}"
[flush]
max_rows = 3
max_age = "100ms"
[commit]
retry_backoff = "20ms"
max_attempts = 50
{storage}"#,
            uri = loc.uri,
        ),
    )
    .unwrap();
    // Debug lines of the commit say when a race for a version was lost.
    let env = [("INLET_LOG", "info,inlet::sink::delta=debug")];
    let mut runs = vec![Running::start_with_env(&cfg, &env)];
    assert!(
        runs[0].wait_for("partitions assigned", 1, JOIN_LIMIT),
        "{:#?}",
        runs[0].log()
    );
    runs.push(Running::start_with_env(&cfg, &env));
    // The second member's join is a rebalance of the first: on a loaded
    // 2-core CI machine with S3 in the loop it took over 60 s once.
    assert!(
        runs[1].wait_for("partitions assigned", 1, JOIN_LIMIT),
        "second writer: {:#?}\nfirst writer: {:#?}",
        runs[1].log(),
        runs[0].log()
    );
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut produced = 0;
    let mut rounds = 0;
    while rounds < 30 && (rounds < 3 || !enough(&runs)) {
        rounds += 1;
        let payloads: Vec<Vec<u8>> = (produced..produced + 40)
            .map(|n| message(n).into_bytes())
            .collect();
        produced += payloads.len();
        for (p, l) in last_offsets(&produce(&bootstrap, "a", &payloads)) {
            last.insert(format!("lake:a:{p}"), l);
        }
        let ids: Vec<String> = last.keys().cloned().collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let txn = txn_versions_at(&loc, &ids);
            if last.iter().all(|(id, l)| txn[id] == Some(*l)) {
                break;
            }
            for run in &mut runs {
                assert_eq!(
                    run.child_exited(),
                    None,
                    "a writer stopped: {:#?}",
                    run.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "round {rounds}: {txn:?} vs {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for run in &runs {
        assert!(run.count("batch committed") > 0, "{:#?}", run.log());
    }
    let regenerated = runs.iter().map(|r| r.count(REGENERATED)).sum();
    let raced = runs.iter().map(|r| r.count(RACED)).sum();
    eprintln!("{rounds} rounds: {regenerated} identity regenerations, {raced} lost races");
    for run in &mut runs {
        run.signal("TERM");
        assert_eq!(
            run.wait(Duration::from_secs(60)),
            Some(0),
            "{:#?}",
            run.log()
        );
    }
    if let Some(s3) = s3 {
        s3.download_dir(&loc.uri, &local);
    }
    Some(Ran {
        _dir: dir,
        table: local,
        from,
        produced,
        regenerated,
        raced,
    })
}

/// Two writers generating identity values at once in the Databricks
/// identity fixture (`id` GENERATED ALWAYS, high-water mark 44): the
/// writers make each other generate values again (at least once); every
/// message lands once, every id is unique, non-null and above 44; each
/// commit's values lie above the mark before it, and its mark is the
/// largest id it holds.
#[test]
fn two_writers_generate_identity_values_at_once() {
    identity(None);
}

/// Like [`two_writers_generate_identity_values_at_once`], with the
/// fixture's copy on S3 (SeaweedFS, conditional put).
#[test]
fn two_writers_generate_identity_values_at_once_on_s3() {
    let Some(s3) = SeaweedS3::start() else {
        assert!(!required(), "SeaweedFS (INLET_TEST_WEED) is required in CI");
        return;
    };
    identity(Some(&s3));
}

fn identity(s3: Option<&SeaweedS3>) {
    let message = |n: usize| format!(r#"{{"name": "m{n}", "created_at": "2025-08-10T00:00:00Z"}}"#);
    let Some(ran) = two_writers("v2-checkpoint-identity", s3, &message, &|runs| {
        runs.iter().map(|r| r.count(REGENERATED)).sum::<usize>() >= 1
    }) else {
        return;
    };
    assert!(ran.regenerated >= 1, "the writers never conflicted on ids");
    let max = check_identity_log(&ran.table, ran.from, 44);
    // delta-rs' file list, the parquet crate's values.
    let (_, _, batches) = table_batches(&ran.table);
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for b in &batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        assert_eq!(id.null_count(), 0, "a null id");
        let name = b.column_by_name("name").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            ids.push(id.value(i));
            if name.value(i).starts_with('m') {
                names.push(name.value(i).to_string());
                assert!(
                    id.value(i) > 44,
                    "new row's id {} not above 44",
                    id.value(i)
                );
            }
        }
    }
    let total = 44 + ran.produced;
    assert_eq!(ids.len(), total);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "ids repeat");
    assert!(*ids.last().unwrap() <= max);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ran.produced, "every message once");
    let sql = "SELECT count(*), count(id), count(DISTINCT id), \
               count(DISTINCT name) FILTER (WHERE name LIKE 'm%'), \
               min(id) FILTER (WHERE name LIKE 'm%') > 44, max(id) FROM t";
    if let Some(r) = duckdb_read(&ran.table, &[], Some(sql)) {
        let p = ran.produced;
        assert_eq!(
            r["result"].to_string(),
            format!(
                "[[{total},{total},{total},{p},true,{}]]",
                ids.last().unwrap()
            )
        );
    } else {
        assert!(!required(), "DuckDB reader not installed");
    }
}

/// Each commit after `from` that adds files: their ids (statistics) lie
/// above the mark before it (`mark`, then each commit's), and its new mark
/// is their largest. Returns the last mark.
fn check_identity_log(table: &Path, from: i64, mut mark: i64) -> i64 {
    let mut checked = 0;
    for (v, lines) in commits(table).into_iter().filter(|(v, _)| *v > from) {
        let stats: Vec<(i64, i64)> = lines
            .iter()
            .filter_map(|l| l.get("add"))
            .map(|a| {
                let s: serde_json::Value =
                    serde_json::from_str(a["stats"].as_str().unwrap()).unwrap();
                (
                    s["minValues"]["id"].as_i64().unwrap(),
                    s["maxValues"]["id"].as_i64().unwrap(),
                )
            })
            .collect();
        if stats.is_empty() {
            continue;
        }
        let meta = lines
            .iter()
            .find_map(|l| l.get("metaData"))
            .unwrap_or_else(|| panic!("v{v}: no metaData"));
        let schema: serde_json::Value =
            serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        let new = schema["fields"][0]["metadata"]["delta.identity.highWaterMark"]
            .as_i64()
            .unwrap();
        let low = stats.iter().map(|s| s.0).min().unwrap();
        let high = stats.iter().map(|s| s.1).max().unwrap();
        assert!(low > mark, "v{v}: id {low} not above the mark {mark}");
        assert_eq!(new, high, "v{v}: the mark is the commit's largest id");
        mark = new;
        checked += 1;
    }
    assert!(checked >= 10, "{checked} commits with data");
    eprintln!("{checked} commits with data");
    mark
}

/// Two writers appending at once to the Spark table with in-commit
/// timestamps (and change data feed): every message lands once, and the
/// in-commit timestamps of the log never go back.
#[test]
fn two_writers_append_to_a_table_with_in_commit_timestamps() {
    in_commit_timestamps(None);
}

/// Like [`two_writers_append_to_a_table_with_in_commit_timestamps`], on S3
/// (SeaweedFS), where the writers lose versions to each other (at least
/// once, from their debug logs) and stamp after the winner's timestamp.
#[test]
fn two_writers_append_to_a_table_with_in_commit_timestamps_on_s3() {
    let Some(s3) = SeaweedS3::start() else {
        assert!(!required(), "SeaweedFS (INLET_TEST_WEED) is required in CI");
        return;
    };
    in_commit_timestamps(Some(&s3));
}

fn in_commit_timestamps(s3: Option<&SeaweedS3>) {
    let message = |n: usize| {
        format!(
            r#"{{"name": "m{n}", "birthyear": {}, "age": {n}}}"#,
            2000 + n % 2
        )
    };
    let Some(ran) = two_writers("in-commit-timestamps-cdf", s3, &message, &|runs| {
        runs.iter().map(|r| r.count(RACED)).sum::<usize>() >= 2
    }) else {
        return;
    };
    if s3.is_some() {
        assert!(ran.raced >= 1, "no lost race on S3");
    }
    // commitInfo first, with a timestamp past the previous commit's.
    let all = commits(&ran.table);
    let ict = |lines: &[serde_json::Value]| lines[0]["commitInfo"]["inCommitTimestamp"].as_i64();
    let mut previous = all
        .iter()
        .find(|(v, _)| *v == ran.from)
        .and_then(|(_, l)| ict(l));
    let mut checked = 0;
    for (v, lines) in all.iter().filter(|(v, _)| *v > ran.from) {
        let t = ict(lines).unwrap_or_else(|| panic!("v{v}: commitInfo first with an ICT"));
        if let Some(p) = previous {
            assert!(t > p, "v{v}: ICT {t} not after {p}");
        }
        previous = Some(t);
        checked += 1;
    }
    assert!(checked >= 10, "{checked} commits");
    let (_, _, batches) = table_batches(&ran.table);
    let mut names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let n = b.column_by_name("name").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| n.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| n.starts_with('m'))
        .collect();
    assert_eq!(names.len(), ran.produced, "every message once");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ran.produced, "every message once");
    let sql = "SELECT count(*) FILTER (WHERE name LIKE 'm%'), \
               count(DISTINCT age) FILTER (WHERE name LIKE 'm%') FROM t";
    if let Some(r) = duckdb_read(&ran.table, &[], Some(sql)) {
        let p = ran.produced;
        assert_eq!(r["result"].to_string(), format!("[[{p},{p}]]"));
    } else {
        assert!(!required(), "DuckDB reader not installed");
    }
}
