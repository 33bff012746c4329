//! Deletion vectors: `upsert` and `history` merges into tables with
//! `delta.enableDeletionVectors = true` delete replaced rows with a vector
//! instead of rewriting their files. The end state is compared with the
//! reference of tests/cdc.rs, read by delta-rs' DataFusion scan (which
//! applies the vectors) and by DuckDB; the raw files, read without the
//! vectors, hold the replaced rows too (the files were not rewritten).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};

use crate::cdc::{
    assert_duckdb_agrees, assert_duckdb_reads_history, history_changes, history_reference,
    history_toml, poison_offsets, produce_changes, quarantined, rounds, two_writers_with,
    upsert_toml, value_changes, value_reference, write_config, Change, Lcg, Row, Version,
};
use crate::common::brokers::{Broker, MockBroker};
use crate::common::fixtures::copy_fixture;
use crate::common::process::{run_available_now, Running};
use crate::common::producing::{produce_records, Landed};
use crate::common::tables::{duckdb_read, table_batches};
use crate::common::workspace::Workspace;

/// `toml` with deletion vectors turned on for the table inlet creates;
/// without `rewrites`, the rules that rewrite small or mostly deleted files
/// instead are turned off: every file a merge hits gets a vector.
fn vectors(toml: String, rewrites: bool) -> String {
    let rules = if rewrites {
        ""
    } else {
        "[tables.events.deletion_vectors]\nrewrite_below_batches = 0\nrewrite_deleted_share = 1.0\n\n"
    };
    let toml = toml.replace(
        "[tables.events.metadata_columns]",
        &format!(
            "[tables.events.properties]\n\"delta.enableDeletionVectors\" = \"true\"\n\n\
             {rules}[tables.events.metadata_columns]"
        ),
    );
    assert!(toml.contains("enableDeletionVectors"));
    toml
}

/// [`vectors`] with the rewrite rules off.
fn with_vectors(toml: String) -> String {
    vectors(toml, false)
}

/// Runs `count` changes over `keys` keys (seed `seed`) through `inlet run
/// --available-now` into an upsert table made by `toml` from the plain
/// upsert config, and checks the end state against the reference (delta-rs
/// and DuckDB, at least `at_least` keys) and the quarantine. Returns the
/// broker (still up), the workspace, the config and the reference.
fn upsert_is_exact(
    toml: impl Fn(String) -> String,
    (count, keys, seed): (u64, u64, u64),
    at_least: usize,
) -> (
    MockBroker,
    Workspace,
    std::path::PathBuf,
    BTreeMap<i64, Row>,
) {
    let mut broker = MockBroker::start();
    let topic = "changes";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let config = write_config(&ws, &toml(upsert_toml(&ws, &bootstrap, topic, "dv", 40)));
    let changes = value_changes(count, keys, seed);
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = value_reference(&changes, &landed);
    assert!(expected.len() > at_least, "a reference worth checking");
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_duckdb_agrees(&ws.table(), &expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    (broker, ws, config, expected)
}

/// The rows of `sql` over the table at `path` (as `t`), read by delta-rs'
/// DataFusion scan, which applies deletion vectors.
fn scan(path: &Path, sql: &str) -> Vec<RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap();
        table.load().await.unwrap();
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        let provider = table.table_provider().await.unwrap();
        ctx.register_table("t", provider).unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    })
}

/// The upsert table's rows by id, read by delta-rs; panics on an id twice.
fn read_upsert(path: &Path) -> BTreeMap<i64, Row> {
    let mut out = BTreeMap::new();
    for b in scan(path, "SELECT id, v, seq, _offset FROM t") {
        let id = b.column(0).as_primitive::<Int64Type>();
        let v = strings(b.column(1).as_ref());
        let seq = b.column(2).as_primitive::<Int64Type>();
        let off = b.column(3).as_primitive::<Int64Type>();
        for (i, v) in v.into_iter().enumerate() {
            let row = (v, seq.value(i), off.value(i));
            if let Some(old) = out.insert(id.value(i), row) {
                panic!("id {} twice in the table (also {old:?})", id.value(i));
            }
        }
    }
    out
}

fn strings(c: &dyn Array) -> Vec<String> {
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
    let s = c.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_string()).collect()
}

/// Every version in the history table, sorted, read by delta-rs.
fn read_history(path: &Path) -> Vec<Version> {
    let mut out = Vec::new();
    for b in scan(
        path,
        "SELECT id, v, __start_at, __end_at, __is_current FROM t",
    ) {
        let id = b.column(0).as_primitive::<Int64Type>();
        let v = strings(b.column(1).as_ref());
        let start = b.column(2).as_primitive::<Int64Type>();
        let end = b.column(3).as_primitive::<Int64Type>();
        let current = b.column(4).as_boolean();
        for (i, v) in v.into_iter().enumerate() {
            out.push((
                id.value(i),
                v,
                start.value(i),
                end.is_valid(i).then(|| end.value(i)),
                current.value(i),
            ));
        }
    }
    out.sort();
    out
}

/// The log's actions of every commit, in order.
fn log_actions(path: &Path) -> Vec<serde_json::Value> {
    let log = path.join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    commits
        .iter()
        .flat_map(|c| {
            std::fs::read_to_string(c)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

/// What the log shows of the vectors: adds with a vector, removes of a
/// file that had one (a second vector on a file: the union), and removes
/// without an add of the same path in the commit (files rewritten or
/// emptied).
struct VectorUse {
    adds_with_vector: usize,
    removes_with_vector: usize,
}

fn vector_use(path: &Path) -> VectorUse {
    let actions = log_actions(path);
    let adds_with_vector = actions
        .iter()
        .filter(|a| a["add"]["deletionVector"].is_object())
        .count();
    let removes_with_vector = actions
        .iter()
        .filter(|a| a["remove"]["deletionVector"].is_object())
        .count();
    for a in &actions {
        if a["add"]["deletionVector"].is_object() {
            let stats: serde_json::Value =
                serde_json::from_str(a["add"]["stats"].as_str().unwrap()).unwrap();
            assert_eq!(stats["tightBounds"], false, "{a}");
        }
    }
    VectorUse {
        adds_with_vector,
        removes_with_vector,
    }
}

/// How many rows the data files hold, read without their vectors.
fn physical_rows(path: &Path) -> usize {
    let (_, _, batches) = table_batches(path);
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Upserts, deletes, late changes and ties over many small batches into a
/// table with deletion vectors: the end state is the reference (delta-rs
/// and DuckDB), replaced rows are deleted by vectors (the files keep them),
/// files get a second vector (the union of both), and a second run
/// changes nothing.
#[test]
fn upsert_with_deletion_vectors_is_exact() {
    let (_broker, ws, config, expected) = upsert_is_exact(with_vectors, (1200, 60, 7), 20);
    let used = vector_use(&ws.table());
    assert!(used.adds_with_vector > 10, "vectors written");
    assert!(used.removes_with_vector > 0, "a file given a second vector");
    assert!(
        physical_rows(&ws.table()) > expected.len(),
        "replaced rows stay in their files"
    );
    let version = log_actions(&ws.table()).len();
    let out = run_available_now(&config);
    assert!(out.status.success());
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_eq!(log_actions(&ws.table()).len(), version, "nothing to do");
    // `compact` materialises the vectors: the files it writes hold the
    // live rows only.
    let out = crate::common::process::inlet()
        .args(["compact", "--force", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_eq!(
        physical_rows(&ws.table()),
        expected.len(),
        "no deleted rows left"
    );
    assert_duckdb_agrees(&ws.table(), &expected);
}

/// The same with the default rewrite rules (`[tables.<name>.deletion_vectors]`):
/// a merge folds the small files it hits into its new file and rewrites
/// files mostly deleted, and gives the other files it hits a vector. Both
/// happen here, the end state is the reference (delta-rs and DuckDB), and
/// the table ends with few files: without the rules each of the ~75
/// batches would leave one more.
#[test]
fn upsert_with_deletion_vectors_and_rewrites_is_exact() {
    let (_broker, ws, _, _) = upsert_is_exact(|t| vectors(t, true), (3000, 600, 11), 200);
    let used = vector_use(&ws.table());
    assert!(used.adds_with_vector > 10, "vectors written");
    let actions = log_actions(&ws.table());
    let rewritten = actions
        .iter()
        .filter(|a| a["remove"].is_object() && !a["remove"]["deletionVector"].is_object())
        .count();
    assert!(rewritten > 10, "files rewritten, not only vectored");
    let files = table_batches(&ws.table()).1;
    assert!(files <= 12, "{files} files left");
}

/// History into a table with deletion vectors: a closed version is
/// deleted where it was and written again, closed, in the merge's new
/// file; stored versions a vector deletes are not read back (else they
/// would be doubled). The history is the reference (delta-rs and DuckDB).
#[test]
fn history_with_deletion_vectors_is_exact() {
    let mut broker = MockBroker::start();
    let topic = "history";
    broker.create_topic(topic, 3);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let toml = with_vectors(history_toml(&ws, &bootstrap, topic, "dv-2", 40, true));
    let config = write_config(&ws, &toml);
    let changes = history_changes(1200, 60, 7);
    let landed = produce_changes(&bootstrap, topic, &changes);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = history_reference(&changes, &landed, true);
    assert!(expected.len() > 100, "a history worth checking");
    assert_eq!(read_history(&ws.table()), expected);
    assert_duckdb_reads_history(&ws.table(), &expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    let used = vector_use(&ws.table());
    assert!(used.adds_with_vector > 10, "vectors written");
    assert!(used.removes_with_vector > 0, "a second vector on a file");
}

/// SIGKILL at random moments while changes are produced into a table with
/// deletion vectors, restart, a few times; a last run drains the topic.
/// The end state is exact and every partition's offset stored.
#[test]
fn upsert_with_deletion_vectors_crash_loop_is_exact() {
    let mut broker = MockBroker::start();
    let topic = "crash";
    broker.create_topic(topic, 4);
    let bootstrap = broker.bootstrap();
    let ws = Workspace::new();
    let rounds = rounds(6, 1000);
    let (mut changes, mut landed) = (Vec::<Change>::new(), Vec::<Landed>::new());
    let mut rng = Lcg(11);
    let mut after_commit = 0;
    for (i, round) in rounds.iter().enumerate() {
        // A fresh group per process (see `assertions::crash_loop`).
        let toml = with_vectors(upsert_toml(&ws, &bootstrap, topic, &format!("dv-{i}"), 20));
        let inlet = Running::start(&write_config(&ws, &toml));
        let (b, r) = (bootstrap.clone(), round.clone());
        let producer = std::thread::spawn(move || {
            let mut landed = Vec::new();
            for slice in r.chunks(15) {
                landed.extend(produce_changes(&b, topic, slice));
                std::thread::sleep(Duration::from_millis(100));
            }
            landed
        });
        if i % 2 == 0 {
            inlet.wait_for("batch committed", 1, Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_millis(200 + rng.next(1500)));
        if inlet.count("batch committed") > 0 {
            after_commit += 1;
        }
        drop(inlet); // SIGKILL
        landed.extend(producer.join().unwrap());
        changes.extend(round.iter().cloned());
    }
    let toml = with_vectors(upsert_toml(&ws, &bootstrap, topic, "dv-last", 20));
    let out = run_available_now(&write_config(&ws, &toml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        after_commit >= 2,
        "too few kills after a commit: {after_commit}"
    );
    let expected = value_reference(&changes, &landed);
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    let last = crate::common::assertions::last_offsets(&landed);
    let ids: Vec<String> = last.keys().map(|p| format!("test:crash:{p}")).collect();
    let stored = crate::common::tables::txn_versions(&ws.table(), &ids);
    for (p, off) in &last {
        assert_eq!(
            stored[&format!("test:crash:{p}")],
            Some(*off),
            "partition {p}"
        );
    }
    assert_duckdb_agrees(&ws.table(), &expected);
    assert!(vector_use(&ws.table()).adds_with_vector > 0);
}

/// Spark's table with a deletion vector (values 0..9, 0 and 9 deleted) as
/// an `upsert` target keyed by its only column: upserting 0, 5 and 20
/// gives one row each, 9 stays deleted (the file's new vector is the union
/// of Spark's and inlet's), the others stay as they are.
#[test]
fn upsert_into_a_spark_table_with_deletion_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = copy_fixture("deletion-vectors", dir.path()) else {
        return;
    };
    let mut broker = MockBroker::start();
    broker.create_topic("spark", 1);
    let bootstrap = broker.bootstrap();
    let payloads: Vec<Vec<u8>> = [0, 5, 20]
        .iter()
        .map(|v| format!(r#"{{"value": {v}}}"#).into_bytes())
        .collect();
    let records: Vec<crate::common::producing::Record<'_>> = payloads
        .iter()
        .map(|p| (None, Some(p.as_slice())))
        .collect();
    produce_records(&bootstrap, "spark", &records);
    let config = dir.path().join("inlet.toml");
    std::fs::write(
        &config,
        format!(
            r#"
app_id = "spark"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "spark"
[sources.s]
topics = ["spark"]
table = "t"
[tables.t]
uri = "{table}"
quarantine_uri = "{quarantine}"
mode = "upsert"
keys = ["value"]
[tables.t.deletion_vectors]
rewrite_below_batches = 0
rewrite_deleted_share = 1.0
[flush]
max_rows = 10
max_age = "300ms"
"#,
            table = table.display(),
            quarantine = dir.path().join("quarantine").display(),
        ),
    )
    .unwrap();
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values: Vec<i32> = scan(&table, "SELECT value FROM t")
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
        .collect();
    values.sort();
    assert_eq!(values, [0, 1, 2, 3, 4, 5, 6, 7, 8, 20], "delta-rs");
    if let Some(duck) = duckdb_read(&table, &[], Some("SELECT value FROM t ORDER BY value")) {
        assert_eq!(
            duck["result"].to_string(),
            "[[0],[1],[2],[3],[4],[5],[6],[7],[8],[20]]",
            "DuckDB"
        );
    }
    let used = vector_use(&table);
    assert_eq!(
        used.removes_with_vector, 1,
        "the file with Spark's vector removed"
    );
    let spark_file = log_actions(&table)
        .into_iter()
        .rfind(|a| a["add"]["deletionVector"].is_object())
        .unwrap();
    // Spark's 0 and 9, and inlet's 5 (Spark's deleted 0 is not live: the
    // new 0 replaces nothing).
    assert_eq!(spark_file["add"]["deletionVector"]["cardinality"], 3);
}

/// Two `inlet run` processes of one group on one upsert table with
/// deletion vectors: their merges give vectors to the same files and race;
/// a merge whose files another commit changed is planned again (else a
/// vector would be lost, or a row deleted twice over); the end state is
/// exact.
#[test]
fn two_writers_on_one_upsert_table_with_deletion_vectors() {
    let ws = Workspace::new();
    let toml = |bootstrap: &str| with_vectors(upsert_toml(&ws, bootstrap, "crash", "pair", 10));
    let (changes, landed) = two_writers_with(&ws, &toml, rounds(10, 1000));
    let expected = value_reference(&changes, &landed);
    assert_eq!(read_upsert(&ws.table()), expected);
    assert_eq!(quarantined(&ws), poison_offsets(&changes, &landed));
    assert!(vector_use(&ws.table()).removes_with_vector > 0);
    assert_duckdb_agrees(&ws.table(), &expected);
}
