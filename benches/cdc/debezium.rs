//! The Debezium bench: a Postgres connector's JSON change stream replayed
//! into `upsert` and `history` tables, each end state checked against
//! DuckDB's, computed from the message values the bench produced.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer as _};

use super::{
    check_held, check_script, files, mib, producer, run_inlet, send, Args, Rng, RunConfig, Written,
};

const TOPIC: &str = "dbserver1.inventory.customers";

/// The table's columns: the row image, the op and `source.lsn`.
const SCHEMA: &str =
    "id INT, first_name STRING, last_name STRING, email STRING, __op STRING, __source_lsn BIGINT";

/// Row `id` at `version`, as Debezium writes a row image.
fn row(id: u64, version: u64, out: &mut String) {
    let _ = write!(
        out,
        r#"{{"id":{id},"first_name":"Anne{id}","last_name":"Kretchmar v{version}","email":"#
    );
    if version % 3 == 0 {
        out.push_str("null}");
    } else {
        let _ = write!(out, r#""annek{id}.{version}@noanswer.org"}}"#);
    }
}

/// The connector's JsonConverter value (`schemas.enable = false`) of one
/// change: `before`/`after` as REPLICA IDENTITY FULL gives them.
fn envelope(
    op: char,
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    lsn: u64,
    tx: u64,
    out: &mut String,
) {
    out.clear();
    out.push_str(r#"{"before":"#);
    match before {
        Some((id, v)) => row(id, v, out),
        None => out.push_str("null"),
    }
    out.push_str(r#","after":"#);
    match after {
        Some((id, v)) => row(id, v, out),
        None => out.push_str("null"),
    }
    let ts = 1_700_000_000_000 + lsn / 8;
    let snapshot = if op == 'r' { "true" } else { "false" };
    let _ = write!(
        out,
        r#","source":{{"version":"2.7.3.Final","connector":"postgresql","name":"dbserver1","ts_ms":{ts},"snapshot":"{snapshot}","db":"postgres","sequence":"[\"{}\",\"{lsn}\"]","schema":"inventory","table":"customers","txId":{tx},"lsn":{lsn},"xmin":null}},"op":"{op}","ts_ms":{},"transaction":null}}"#,
        lsn - 8,
        ts + 500,
    );
}

/// What was produced: message count, value bytes, and the counts by op.
struct Produced {
    messages: u64,
    bytes: u64,
    ops: [u64; 4],
}

/// The live rows: ids in a vector (uniform picks) with each one's slot
/// and version.
#[derive(Default)]
struct Live {
    ids: Vec<u64>,
    at: HashMap<u64, (usize, u64)>,
}

impl Live {
    fn insert(&mut self, id: u64, version: u64) {
        self.at.insert(id, (self.ids.len(), version));
        self.ids.push(id);
    }

    fn remove(&mut self, id: u64) -> u64 {
        let (slot, version) = self.at.remove(&id).unwrap();
        self.ids.swap_remove(slot);
        if let Some(&moved) = self.ids.get(slot) {
            self.at.get_mut(&moved).unwrap().0 = slot;
        }
        version
    }
}

/// Produces the snapshot and the changes (each key's changes in one
/// partition, keyed `{"id":N}` as the connector keys them) and writes every
/// value, one a line, to `values`.
fn produce(bootstrap: &str, a: &Args, values: &Path) -> Produced {
    let p = producer(bootstrap);
    let mut file = BufWriter::new(std::fs::File::create(values).unwrap());
    let (mut buf, mut key) = (String::with_capacity(1024), String::with_capacity(32));
    let mut out = Produced {
        messages: 0,
        bytes: 0,
        ops: [0; 4],
    };
    let mut emit = |id: u64, buf: &str, op: usize| {
        key.clear();
        let _ = write!(key, r#"{{"id":{id}}}"#);
        send(&p, TOPIC, key.as_bytes(), buf.as_bytes());
        file.write_all(buf.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
        out.messages += 1;
        out.bytes += buf.len() as u64;
        out.ops[op] += 1;
    };
    let mut live = Live::default();
    let (mut lsn, mut tx) = (33_816_400u64, 760u64);
    for id in 1..=a.dbz_snapshot {
        lsn += 8;
        live.insert(id, 1);
        envelope('r', None, Some((id, 1)), lsn, tx, &mut buf);
        emit(id, &buf, 0);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_id = a.dbz_snapshot + 1;
    for i in 0..a.dbz_changes {
        if i % 3 == 0 {
            tx += 1;
        }
        lsn += 8 + rng.below(40);
        let roll = rng.below(10);
        if live.ids.is_empty() || roll >= 8 {
            let id = next_id;
            next_id += 1;
            live.insert(id, 1);
            envelope('c', None, Some((id, 1)), lsn, tx, &mut buf);
            emit(id, &buf, 1);
        } else {
            let id = live.ids[rng.below(live.ids.len() as u64) as usize];
            if roll == 0 {
                let v = live.remove(id);
                envelope('d', Some((id, v)), None, lsn, tx, &mut buf);
                emit(id, &buf, 3);
            } else {
                let v = live.at[&id].1;
                let new = v + 1 + rng.below(5);
                live.at.get_mut(&id).unwrap().1 = new;
                envelope('u', Some((id, v)), Some((id, new)), lsn, tx, &mut buf);
                emit(id, &buf, 2);
            }
        }
    }
    file.flush().unwrap();
    p.flush(Duration::from_secs(300))
        .expect("flush the producer");
    out
}

/// The table of `mode`: keyed by `id`, ordered by `source.lsn`, deleting
/// on `d` (`append`: every change a row, for comparison).
fn table(mode: &str) -> String {
    let keyed = if mode == "append" {
        ""
    } else {
        "keys = [\"id\"]\nsequence_by = \"__source_lsn\"\ndelete_when = \"__op = 'd'\"\n"
    };
    format!(
        r#"schema = "{SCHEMA}"
mode = "{mode}"
{keyed}[[tables.t.transforms]]
op = "debezium"
source_fields = ["lsn"]
"#
    )
}

/// The bench: produce, replay into each mode, compare with DuckDB.
pub(super) fn bench(a: &Args, bootstrap: &str, cluster: &MockCluster<'_, DefaultProducerContext>) {
    cluster.create_topic(TOPIC, a.dbz_partitions, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let values = work.path().join("values.jsonl");
    eprintln!(
        "debezium: preloading a snapshot of {} rows and {} changes over {} partitions…",
        a.dbz_snapshot, a.dbz_changes, a.dbz_partitions
    );
    let t = Instant::now();
    let produced = produce(bootstrap, a, &values);
    check_held(bootstrap, TOPIC, a.dbz_partitions, produced.messages);
    eprintln!("  preloaded in {:.1?}", t.elapsed());
    let [r, c, u, d] = produced.ops;
    println!(
        "debezium bench: {} messages ({r} snapshot reads, {c} inserts, {u} updates, {d} deletes), \
         {:.0} B/message, {} per commit, {} partitions, properties {:?}",
        produced.messages,
        produced.bytes as f64 / produced.messages as f64,
        a.dbz_batch,
        a.dbz_partitions,
        a.properties,
    );
    println!("load average {}", super::loadavg());
    println!(
        "mode     rows/s  CPU µs/row  RSS MiB  WA (parquet+dv+log MiB)  commits  of append's rate"
    );
    let n = produced.messages as f64;
    let mut append_rate = None;
    // Append first: the plain rate of the same stream, for the ratios.
    for mode in ["append", "upsert", "history"] {
        let dir = work.path().join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let table = table(mode);
        let config = RunConfig {
            bootstrap,
            group: format!("bench-debezium-{mode}"),
            topic: TOPIC,
            dir: &dir,
            table: &table,
            properties: if mode == "append" { &[] } else { &a.properties },
            max_rows: a.dbz_batch,
        };
        let run = run_inlet(&a.inlet, &config.write(), Duration::from_secs(4 * 3600));
        let w = Written::between(&Default::default(), &files(&dir.join("t")));
        let rate = n / run.took.as_secs_f64();
        let base = *append_rate.get_or_insert(rate);
        println!(
            "{mode:<7}  {rate:>7.0}  {:>10.2}  {:>7.0}  {:>5.2} ({:.1}+{:.1}+{:.1})  {:>7}  {:>15.3}",
            run.cpu.as_secs_f64() * 1e6 / n,
            run.rss_mib,
            w.total() as f64 / produced.bytes as f64,
            mib(w.parquet),
            mib(w.dv),
            mib(w.log),
            w.commits,
            rate / base,
        );
    }
    let Some(python) = a.python.as_deref() else {
        println!("end state: not compared (INLET_TEST_PYTHON unset: no DuckDB)");
        return;
    };
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let got = check_script(
        python,
        &[
            "debezium",
            &path(&values),
            &path(&work.path().join("upsert/t")),
            &path(&work.path().join("history/t")),
        ],
    );
    for mode in ["upsert", "history"] {
        let m = &got[mode];
        let pass = m["missing"] == 0 && m["extra"] == 0 && m["reference"] == m["table"];
        println!(
            "end state {mode}: {} ({} rows in the table, {} in DuckDB's reference; {} missing, {} extra)",
            if pass { "PASS" } else { "FAIL" },
            m["table"],
            m["reference"],
            m["missing"],
            m["extra"],
        );
    }
    if let Some(keep) = &a.keep {
        let _ = std::fs::rename(work.path(), keep.join("debezium"));
    }
}
