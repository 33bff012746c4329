//! `inlet migrate`: versioned table definitions applied in order, exactly
//! once, with the version recorded in the table; CHECK constraints it creates
//! are enforced by ingest (violating rows go to quarantine).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::assertions::assert_exactly_once_in_either;
use crate::common::brokers::{Broker, MockBroker};
use crate::common::process::{inlet, run_available_now, wait_output};
use crate::common::producing::{event, produce};
use crate::common::tables::{duckdb_read, read_quarantine, read_table};
use crate::common::workspace::{ConfigSpec, Workspace};

const CREATE: &str = r#"
[create]
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, event_date DATE"
partition_by = ["event_date"]
properties = { "delta.checkpointInterval" = "5" }
constraints = { amount_range = "amount >= 0 AND amount < 90" }
"#;

const ADD_COUNTRY: &str =
    r#"add_columns = "country STRING, device STRUCT<os: STRING, version: INT>""#;

const RETENTION: &str = r#"
[set_properties]
"delta.logRetentionDuration" = "interval 60 days"
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let toml = format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "g"
[sources.events]
topics = ["events"]
table = "events"
[tables.events]
uri = "{}"
"#,
            s.table().display()
        );
        std::fs::write(s.config(), toml).unwrap();
        s
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("inlet.toml")
    }
    fn table(&self) -> PathBuf {
        self.dir.path().join("events")
    }
    fn migrations(&self) -> PathBuf {
        self.dir.path().join("migrations")
    }
    fn add(&self, file: &str, text: &str) {
        let dir = self.migrations().join("events");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }
    fn migrate(&self, extra: &[&str]) -> Output {
        inlet()
            .args(["migrate", "-c"])
            .arg(self.config())
            .arg("--dir")
            .arg(self.migrations())
            .args(extra)
            .output()
            .unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "inlet migrate failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "inlet migrate should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the table's log says: version, configuration, columns, partition
/// columns, min writer version, and the migration named by each commit.
struct TableInfo {
    version: i64,
    config: std::collections::HashMap<String, String>,
    columns: Vec<String>,
    partition_by: Vec<String>,
    min_writer: i32,
    migrations: Vec<String>,
}

fn table_info(path: &Path) -> TableInfo {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = url::Url::from_directory_path(path).unwrap();
        let table = deltalake::open_table(url).await.expect("open table");
        let snapshot = table.snapshot().unwrap();
        use futures::TryStreamExt as _;
        let history: Vec<_> = table.history(None).try_collect().await.unwrap();
        let mut migrations: Vec<String> = history
            .iter()
            .filter_map(|c| c.info.get("inlet.migration")?.as_str().map(String::from))
            .collect();
        migrations.reverse();
        TableInfo {
            version: table.version().map_or(-1, |v| v as i64),
            config: snapshot.metadata().configuration().clone(),
            columns: snapshot
                .schema()
                .fields()
                .map(|f| f.name().to_string())
                .collect(),
            partition_by: snapshot.metadata().partition_columns().to_vec(),
            min_writer: snapshot.protocol().min_writer_version(),
            migrations,
        }
    })
}

#[test]
fn migrations_apply_in_order_exactly_once() {
    let s = Setup::new();
    s.add("0001_create.toml", CREATE);
    s.add("0002_add_country.toml", ADD_COUNTRY);
    s.add("0003_retention.toml", RETENTION);

    let dry = ok(&s.migrate(&["--dry-run"]));
    assert!(
        dry.contains("would apply 0001_create, 0002_add_country, 0003_retention"),
        "{dry}"
    );
    assert!(!s.table().join("_delta_log").exists(), "a dry run wrote");

    let out = ok(&s.migrate(&[]));
    assert!(out.contains("version 0 -> 3"), "{out}");
    let t = table_info(&s.table());
    assert_eq!(t.version, 2, "one commit per migration");
    assert_eq!(
        t.migrations,
        ["0001_create", "0002_add_country", "0003_retention"]
    );
    assert_eq!(t.config["inlet.migrations.version"], "3");
    assert_eq!(t.config["delta.checkpointInterval"], "5");
    assert_eq!(t.config["delta.logRetentionDuration"], "interval 60 days");
    assert_eq!(
        t.config["delta.constraints.amount_range"],
        "amount >= 0 AND amount < 90"
    );
    assert!(t.min_writer >= 3, "CHECK constraints need writer version 3");
    assert_eq!(t.partition_by, ["event_date"]);
    assert_eq!(
        t.columns,
        [
            "id",
            "user",
            "action",
            "amount",
            "event_time",
            "event_date",
            "country",
            "device"
        ]
    );

    // Again: nothing to do, nothing written.
    let out = ok(&s.migrate(&[]));
    assert!(out.contains("at version 3, nothing to apply"), "{out}");
    assert_eq!(table_info(&s.table()).version, 2);

    // A new migration applies alone.
    s.add("0004_more.toml", r#"add_columns = "referrer STRING""#);
    let out = ok(&s.migrate(&[]));
    assert!(out.contains("version 3 -> 4, applied 0004_more"), "{out}");
    let t = table_info(&s.table());
    assert_eq!(t.version, 3);
    assert_eq!(t.columns.last().map(String::as_str), Some("referrer"));

    // An independent reader agrees on the schema.
    if let Some(v) = duckdb_read(&s.table(), &[], Some("SELECT count(*) AS n FROM t")) {
        assert_eq!(v["result"][0][0], 0, "{v}");
    }
}

#[test]
fn concurrent_migrators_apply_each_migration_once() {
    let s = Setup::new();
    s.add("0001_create.toml", CREATE);
    s.add("0002_add_country.toml", ADD_COUNTRY);
    s.add("0003_retention.toml", RETENTION);
    let children: Vec<_> = (0..4)
        .map(|_| {
            inlet()
                .args(["migrate", "-c"])
                .arg(s.config())
                .arg("--dir")
                .arg(s.migrations())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(&wait_output(c, Duration::from_secs(60)));
    }
    let t = table_info(&s.table());
    assert_eq!(
        t.migrations,
        ["0001_create", "0002_add_country", "0003_retention"]
    );
    assert_eq!(t.version, 2);
    assert_eq!(t.config["inlet.migrations.version"], "3");
}

#[test]
fn bad_migrations_are_refused_before_anything_is_written() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("0001_a.toml", CREATE), ("1_b.toml", RETENTION)],
            "same version 1",
        ),
        (
            &[("0001_a.toml", RETENTION), ("0002_b.toml", CREATE)],
            "not the first migration",
        ),
        (&[("create.toml", CREATE)], "does not start with a version"),
        (
            &[("0001_a.toml", "add_columns = \"x INT NOT NULL\"")],
            "NOT NULL",
        ),
        (
            &[("0001_a.toml", "add_columns = \"x INTEGRAL\"")],
            "add_columns",
        ),
        (
            &[(
                "0001_a.toml",
                "[create]\nschema = \"a INT\"\nconstraints = { c = \"b > 1\" }",
            )],
            "create.constraints.c",
        ),
        (
            &[(
                "0001_a.toml",
                "[create]\nschema = \"a INT\"\nconstraints = { c = \"a + 1\" }",
            )],
            "not a boolean",
        ),
        (
            &[(
                "0001_a.toml",
                "[create]\nschema = \"a INT\"\npartition_by = [\"b\"]",
            )],
            "`b` is not a column",
        ),
        (
            &[(
                "0001_a.toml",
                "[set_properties]\n\"delta.setTransactionRetentionDuration\" = \"1 day\"",
            )],
            "expire the Kafka offsets",
        ),
        (
            &[("0001_a.toml", "sett_properties = {}")],
            "sett_properties",
        ),
    ];
    for (files, needle) in cases {
        let s = Setup::new();
        for (name, text) in files.iter() {
            s.add(name, text);
        }
        let e = failed(&s.migrate(&[]));
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert!(!s.table().exists(), "{needle}: something was written");
    }
    // A folder for a table the configuration does not have.
    let s = Setup::new();
    std::fs::create_dir_all(s.migrations().join("evnts")).unwrap();
    let e = failed(&s.migrate(&[]));
    assert!(
        e.contains("`evnts` is not a table of the configuration"),
        "{e}"
    );
}

#[test]
fn a_table_not_made_by_migrations_is_not_touched() {
    let s = Setup::new();
    s.add("0001_create.toml", CREATE);
    s.add("0002_add_country.toml", ADD_COUNTRY);
    // Made by hand (as `inlet run` makes one from `schema`): no migration version.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = url::Url::from_directory_path(s.table()).unwrap();
        deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(
                inlet::schema::ddl_to_delta("id BIGINT")
                    .unwrap()
                    .fields()
                    .cloned(),
            )
            .await
            .unwrap();
    });
    let e = failed(&s.migrate(&[]));
    assert!(e.contains("inlet.migrations.version"), "{e}");
    assert_eq!(table_info(&s.table()).version, 0, "the table was changed");
}

/// A table created by a migration with a CHECK constraint: ingest sends the
/// rows that violate it to quarantine (stage `constraint`), the rest land,
/// every offset exactly once.
#[test]
fn ingest_quarantines_rows_that_violate_a_constraint() {
    let mut broker = MockBroker::start();
    broker.create_topic("checked", 3);
    let ws = Workspace::new();
    let config = ws.config(&ConfigSpec {
        bootstrap: &broker.bootstrap(),
        topic: "checked",
        group: "checked",
        max_rows: 200,
        max_age: "1s",
        extra: "",
        session_timeout_ms: 6000,
    });
    let dir = ws.dir.path().join("migrations/events");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0001_create.toml"),
        r#"
[create]
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP, _topic STRING NOT NULL, _partition INT NOT NULL, _offset BIGINT NOT NULL, _ts TIMESTAMP, _key BINARY, _headers MAP<STRING, BINARY>"
constraints = { amount_range = "amount >= 0 AND amount < 90" }
"#,
    )
    .unwrap();
    ok(&inlet()
        .args(["migrate", "-c"])
        .arg(&config)
        .arg("--dir")
        .arg(ws.dir.path().join("migrations"))
        .output()
        .unwrap());

    let payloads: Vec<Vec<u8>> = (0..500).map(event).collect();
    let landed = produce(&broker.bootstrap(), "checked", &payloads);
    let out = run_available_now(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once_in_either(&ws, &landed);
    let q = read_quarantine(&ws.quarantine());
    assert_eq!(
        q.len(),
        50,
        "ids with id % 100 >= 90 violate the constraint"
    );
    for row in &q {
        assert_eq!(row.stage, "constraint");
        assert!(row.error.contains("amount_range"), "{}", row.error);
        let v: serde_json::Value = serde_json::from_slice(row.value.as_ref().unwrap()).unwrap();
        assert!(v["id"].as_u64().unwrap() % 100 >= 90, "{v}");
    }
    let t = read_table(&ws.table());
    assert!(t.ids.iter().all(|id| id % 100 < 90));
    assert_eq!(t.ids.len(), 450);
}
