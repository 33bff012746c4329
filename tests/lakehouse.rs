//! Tables other engines made (`../shared/fixtures/delta`, written by Spark
//! and Databricks): inlet appends to those it can write, exactly once and
//! readable by DuckDB, and refuses the others at open, before fetching
//! anything, naming the feature.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::assertions::last_offsets;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{inlet, run_available_now};
use crate::common::producing::produce;
use crate::common::required;
use crate::common::tables::{duckdb_read, read_quarantine, table_batches, txn_versions};

/// The shared fixtures, beside the repository (CI lays `../shared` there).
fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/delta");
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(!required(), "missing {}", dir.display());
        None
    }
}

/// Copies fixture `name` into `into` (the fixtures are read-only).
fn copy_fixture(name: &str, into: &Path) -> Option<PathBuf> {
    let from = fixtures()?.join(name);
    let to = into.join(name);
    copy_dir(&from, &to);
    Some(to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            // The copy must be writable even where the fixtures are not.
            let mut perm = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm).unwrap();
        }
    }
}

/// The files of a table's log, to show that nothing was written.
fn log_files(table: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A config appending topic `topic` to the existing table at `table` (no
/// schema: the table's own), with a quarantine table beside it.
fn config(dir: &Path, bootstrap: &str, topic: &str, table: &Path) -> PathBuf {
    let path = dir.join("inlet.toml");
    std::fs::write(
        &path,
        format!(
            r#"
app_id = "lake"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "lake"
[sources.s]
topics = ["{topic}"]
table = "t"
[tables.t]
uri = "{table}"
quarantine_uri = "{quarantine}"
[flush]
max_rows = 40
max_age = "1s"
[commit]
retry_backoff = "50ms"
"#,
            table = table.display(),
            quarantine = dir.join("quarantine").display(),
        ),
    )
    .unwrap();
    path
}

fn rows(table: &Path, sql: Option<&str>) -> Option<serde_json::Value> {
    let read = duckdb_read(table, &[], sql);
    assert!(
        read.is_some() || !required(),
        "DuckDB reader not installed (run scripts/install-test-deps.sh)"
    );
    read
}

/// Appends 100 messages (and one poison pill) to a copy of fixture `name`;
/// DuckDB and delta-rs read the old rows plus the new ones, the offsets are
/// in the log, the poison pill is in quarantine, and a re-run adds nothing.
fn appends_to(name: &str, message: impl Fn(i64) -> String, check_sql: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = copy_fixture(name, dir.path()) else {
        return;
    };
    let before = rows(&table, None).map(|r| r["rows"].as_i64().unwrap());
    let mut broker = MockBroker::start();
    broker.create_topic("lake", 2);
    let bootstrap = broker.bootstrap();
    let mut payloads: Vec<Vec<u8>> = (0..100).map(|i| message(i).into_bytes()).collect();
    payloads.push(b"{not json".to_vec());
    let landed = produce(&bootstrap, "lake", &payloads);
    let cfg = config(dir.path(), &bootstrap, "lake", &table);

    let out = run_available_now(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");

    let ids: Vec<String> = last_offsets(&landed)
        .keys()
        .map(|p| format!("lake:lake:{p}"))
        .collect();
    let txn = txn_versions(&table, &ids);
    for (p, last) in last_offsets(&landed) {
        assert_eq!(txn[&format!("lake:lake:{p}")], Some(last), "{name} p{p}");
    }
    let quarantined = read_quarantine(&dir.path().join("quarantine"));
    assert_eq!(quarantined.len(), 1, "{name}: the poison pill, once");
    if let (Some(before), Some(after)) = (before, rows(&table, Some(check_sql))) {
        assert_eq!(after["rows"].as_i64().unwrap(), before + 100, "{name}");
        assert_eq!(after["result"].to_string(), expect, "{name}: {check_sql}");
    }
    // delta-rs reads it too: its version moved and its files are listed.
    let (version, files, _) = table_batches(&table);
    assert!(
        version >= 1 && files >= 1,
        "{name}: v{version}, {files} files"
    );

    let out = run_available_now(&cfg);
    assert!(out.status.success(), "{name} re-run");
    assert_eq!(
        table_batches(&table).0,
        version,
        "{name}: a re-run commits nothing"
    );
}

#[test]
fn appends_to_a_spark_table_with_deletion_vectors() {
    // 8 of the 10 old rows are visible (two are deleted by the vector).
    appends_to(
        "deletion-vectors",
        |i| format!(r#"{{"value": {}}}"#, 1000 + i),
        "SELECT count(*), min(value) FILTER (WHERE value >= 1000), max(value) FROM t",
        "[[108,1000,1099]]",
    );
}

#[test]
fn appends_to_a_spark_table_partitioned_by_timestamp_ntz() {
    appends_to(
        "timestamp-ntz-partitioned",
        |i| {
            format!(
                r#"{{"id": {}, "tsNtz": "2024-05-06T07:08:09.123456", "tsNtzPartition": "2024-05-06T00:00:00"}}"#,
                1000 + i
            )
        },
        "SELECT count(*) FILTER (WHERE id >= 1000), \
         CAST(min(tsNtzPartition) FILTER (WHERE id >= 1000) AS VARCHAR) FROM t",
        r#"[[100,"2024-05-06 00:00:00"]]"#,
    );
}

#[test]
fn appends_to_a_spark_table_with_txn_actions_in_its_checkpoint() {
    appends_to(
        "txn-in-checkpoint",
        |i| format!(r#"{{"id": "n{i}", "value": {i}, "modified": "2024-01-01"}}"#),
        "SELECT count(*) FILTER (WHERE id LIKE 'n%'), sum(value) FILTER (WHERE id LIKE 'n%') FROM t",
        "[[100,4950]]",
    );
}

/// A copy of fixture `name` is refused at open, within seconds, naming
/// `feature`: by `inlet check` and by a run, which fetches nothing and
/// writes nothing.
fn refused(name: &str, feature: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = copy_fixture(name, dir.path()) else {
        return;
    };
    let log_before = log_files(&table);
    let mut broker = MockBroker::start();
    broker.create_topic("lake", 1);
    let bootstrap = broker.bootstrap();
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| format!(r#"{{"id": {i}}}"#).into_bytes())
        .collect();
    produce(&bootstrap, "lake", &payloads);
    let cfg = config(dir.path(), &bootstrap, "lake", &table);

    let check = inlet().args(["check", "-c"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{name}: check passed");
    assert!(
        text.contains(feature),
        "{name}: check names {feature}: {text}"
    );

    let started = Instant::now();
    let out = run_available_now(&cfg);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {text}");
    assert!(text.contains(feature), "{name}: names {feature}: {text}");
    assert!(
        text.contains("table `t`") && text.contains("Fix:"),
        "{name}: names the table and the fix: {text}"
    );
    // At open: no retries (the refusal is not the object store's fault), no
    // fetch, no commit.
    assert!(
        took < Duration::from_secs(10),
        "{name}: refused after {took:?}"
    );
    assert!(!text.contains("retr"), "{name}: retried: {text}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("consumed"));
    assert_eq!(
        log_files(&table),
        log_before,
        "{name}: the log is unchanged"
    );
    assert!(
        !dir.path().join("quarantine").exists(),
        "{name}: nothing created"
    );
}

#[test]
fn refuses_column_mapping_at_open() {
    refused("column-mapping-name", "column mapping");
}

#[test]
fn refuses_in_commit_timestamps_at_open() {
    refused("in-commit-timestamps-cdf", "inCommitTimestamp");
}

#[test]
fn refuses_row_tracking_and_liquid_clustering_at_open() {
    refused("liquid-clustering-row-tracking", "rowTracking");
}

#[test]
fn refuses_type_widening_at_open() {
    refused("type-widening", "typeWidening-preview");
}

#[test]
fn refuses_identity_columns_at_open() {
    refused("v2-checkpoint-identity", "identityColumns");
}
