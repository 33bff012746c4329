//! Driving inlet's Delta sink in this process: a config, progress and rows
//! for one table `events (id BIGINT)`, and a commit race.

use std::sync::Arc;

use arrow::array::RecordBatch;

/// A config with one table `events` (`id BIGINT`) at `uri`, for tests that
/// drive the sink directly; `extra` is appended to the table section.
pub(crate) fn sink_config(uri: &str, extra: &str) -> inlet::Config {
    inlet::pipeline::load_config_str(&format!(
        r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:1"
        group_id = "g"
        [sources.events]
        topics = ["events"]
        table = "events"
        [tables.events]
        uri = "{uri}"
        schema = "id BIGINT"
        {extra}
        "#
    ))
    .unwrap()
}

/// The progress of one partition of topic `events` under app id `inlet`.
pub(crate) fn progress(partition: i32, first: i64, last: i64) -> inlet::sink::PartitionProgress {
    inlet::sink::PartitionProgress {
        app_id: inlet::sink::txn_app_id("inlet", "events", partition),
        first,
        last,
    }
}

/// Rows `from..from + n` of a table `id BIGINT`.
pub(crate) fn ids(from: i64, n: i64) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from_iter_values(
            from..from + n,
        ))],
    )
    .unwrap()
}

/// Eight writers of the table `tc` each write the same 500 rows and commit
/// them as partition 3's offsets 0..=499, all at once. Returns how many
/// commits went through (exactly one must).
pub(crate) async fn race_one_partition(tc: &inlet::config::TableConfig) -> usize {
    use inlet::sink::{CommitOutcome, DeltaSink};
    let mut sinks = Vec::new();
    for _ in 0..8 {
        sinks.push(DeltaSink::open("events", tc).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for mut sink in sinks {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = sink.writer().unwrap();
            writer.write(ids(0, 500)).await.unwrap();
            let adds = writer.flush().await.unwrap();
            barrier.wait().await;
            sink.commit(
                adds,
                &sink.schema(),
                &[progress(3, 0, 499)],
                1,
                &inlet::config::CommitConfig::default(),
            )
            .await
            .unwrap()
        }));
    }
    let mut committed = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), CommitOutcome::Committed { .. }) {
            committed += 1;
        }
    }
    committed
}
