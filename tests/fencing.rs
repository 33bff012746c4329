//! The commit fence, at the sink: a batch whose offsets are already stored is
//! not written, also when writers race on the same partition.

use std::sync::Arc;

use crate::common::sink::{progress, race_one_partition, sink_config};
use inlet::config::CommitConfig;
use inlet::sink::{txn_app_id, CommitOutcome, DeltaSink};

async fn stored(sink: &mut DeltaSink, partition: i32) -> Option<i64> {
    sink.stored_versions(&[txn_app_id("inlet", "events", partition)])
        .await
        .unwrap()[0]
}

#[tokio::test]
async fn overlapping_batch_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sink_config(dir.path().to_str().unwrap(), "");
    let tc = &cfg.tables["events"];
    let retry = CommitConfig::default();
    let mut owner = DeltaSink::open("events", tc).await.unwrap();
    let mut zombie = DeltaSink::open("events", tc).await.unwrap();

    let out = owner
        .commit(vec![], &owner.schema(), &[progress(0, 0, 99)], 1, &retry)
        .await
        .unwrap();
    assert!(matches!(out, CommitOutcome::Committed { .. }));
    // The zombie read the table before the owner's commit, and its batch
    // overlaps: it must not land.
    let out = zombie
        .commit(
            vec![],
            &zombie.schema(),
            &[progress(0, 50, 149), progress(1, 0, 10)],
            1,
            &retry,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        CommitOutcome::Fenced {
            app_id: txn_app_id("inlet", "events", 0),
            stored: 99,
            first: 50
        }
    );
    assert_eq!(stored(&mut owner, 0).await, Some(99));
    assert_eq!(
        stored(&mut owner, 1).await,
        None,
        "nothing of the fenced batch landed"
    );
    // The next batch in sequence does land.
    let out = owner
        .commit(vec![], &owner.schema(), &[progress(0, 100, 120)], 2, &retry)
        .await
        .unwrap();
    assert!(matches!(out, CommitOutcome::Committed { .. }));
    assert_eq!(stored(&mut owner, 0).await, Some(120));
}

/// Eight writers commit the same partition range at once: exactly one wins.
/// The losers either see the stored version on their pre-commit check or
/// lose the log race and get `ConcurrentTransaction`, then see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_of_one_partition_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(sink_config(dir.path().to_str().unwrap(), ""));
    let tc = &cfg.tables["events"];
    let committed = race_one_partition(tc).await;
    assert_eq!(committed, 1);
    let mut check = DeltaSink::open("events", tc).await.unwrap();
    assert_eq!(stored(&mut check, 3).await, Some(499));
    // Table versions: the create commit plus exactly one data commit.
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    assert_eq!(table.version(), Some(1u64));
}

/// A table that would expire stored offsets is refused, naming the property.
#[tokio::test]
async fn table_with_txn_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap();
    table
        .create()
        .with_columns(vec![deltalake::kernel::StructField::new(
            "id",
            deltalake::kernel::DataType::LONG,
            true,
        )])
        .with_configuration(vec![(
            "delta.setTransactionRetentionDuration",
            Some("interval 1 days"),
        )])
        .await
        .unwrap();
    let cfg = sink_config(dir.path().to_str().unwrap(), "");
    let err = DeltaSink::open("events", &cfg.tables["events"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("delta.setTransactionRetentionDuration"),
        "{err}"
    );
}

struct Msg {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

impl inlet::record::KafkaRecord for Msg {
    fn topic(&self) -> &str {
        "events"
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Some(1_700_000_000_000)
    }
    fn key(&self) -> Option<&[u8]> {
        None
    }
    fn value(&self) -> Option<&[u8]> {
        Some(&self.value)
    }
    fn for_each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>)) {
        f("source", Some(b"test"));
    }
}

/// Quarantine commits are exactly-once: a retried batch (after a crash
/// between the quarantine and the data commit, or a fenced data batch) adds
/// only the rows past the stored version.
#[tokio::test]
async fn quarantine_commit_keeps_each_row_once() {
    use inlet::record::{Rejection, Stage};
    let dir = tempfile::tempdir().unwrap();
    let cfg = sink_config(dir.path().join("t").to_str().unwrap(), "");
    let qcfg = inlet::quarantine::table_config(
        &cfg.tables["events"],
        dir.path().join("q").to_str().unwrap(),
    );
    let mut q = DeltaSink::open("q", &qcfg).await.unwrap();
    let msgs: Vec<Msg> = (0..6)
        .map(|o| Msg {
            partition: (o % 2) as i32,
            offset: o,
            value: format!("bad {o}").into_bytes(),
        })
        .collect();
    let rejected: Vec<Rejection> = (0..6)
        .map(|i| Rejection::new(i, Stage::Decode, "not JSON"))
        .collect();
    let rows = inlet::quarantine::rows(&msgs, &rejected).unwrap();
    let parts = vec![("events".to_string(), 0, 4), ("events".to_string(), 1, 5)];
    let retry = CommitConfig::default();
    // The first three rows, as a batch ending at offset 2 on both partitions.
    let first = rows.slice(0, 3);
    let n = q
        .commit_quarantine(
            &[first],
            &[("events".to_string(), 0, 2), ("events".to_string(), 1, 1)],
            "inlet",
            1,
            &retry,
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // The retried, larger batch: only the rows past the stored versions land.
    let n = q
        .commit_quarantine(std::slice::from_ref(&rows), &parts, "inlet", 2, &retry)
        .await
        .unwrap();
    assert_eq!(n, 3);
    // And once more: nothing.
    let n = q
        .commit_quarantine(&[rows], &parts, "inlet", 3, &retry)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let stored = q
        .stored_versions(&[
            txn_app_id("inlet", "events", 0),
            txn_app_id("inlet", "events", 1),
        ])
        .await
        .unwrap();
    assert_eq!(stored, vec![Some(4), Some(5)]);
}
