//! `inlet status`: per partition the offset stored in the table, the high
//! watermark and the lag; per table the version, files and last commit.
//! Reads only: it never creates a table or joins the consumer group.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use deltalake::DeltaTableError;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::config::Config;
use crate::pipeline::Router;
use crate::sink::txn_app_id;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of `inlet status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Kafka could not be asked.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was asked.
        what: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The blocking task that asks Kafka did not finish.
    #[error("kafka: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A table could not be read.
    #[error("table `{table}`: {source}")]
    Table {
        /// Table name.
        table: String,
        /// What failed.
        #[source]
        source: DeltaTableError,
    },
}

/// The status of every table and partition of a config.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The pipeline's app id.
    pub app_id: String,
    /// Per table.
    pub tables: Vec<TableStatus>,
}

/// One table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// Name in the config.
    pub name: String,
    /// Location.
    pub uri: String,
    /// Whether the table exists yet.
    pub exists: bool,
    /// Table version.
    pub version: Option<i64>,
    /// Active data files.
    pub files: Option<usize>,
    /// Time of the last commit, RFC 3339.
    pub last_commit: Option<String>,
    /// Quarantine rows; `None` while no quarantine table is configured.
    pub quarantine_rows: Option<u64>,
    /// Per partition of the topics feeding it.
    pub partitions: Vec<PartitionStatus>,
    /// Total lag over the partitions.
    pub lag: i64,
}

/// One partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Last offset stored in the table (its txn version).
    pub stored_offset: Option<i64>,
    /// Next offset the broker will write.
    pub high_watermark: i64,
    /// Messages not in the table yet.
    pub lag: i64,
}

/// Collects the status of every table of `cfg`.
pub async fn collect(cfg: &Config) -> Result<Status, StatusError> {
    let router = Router::new(cfg);
    // librdkafka calls block: keep them off the async workers.
    let kafka_cfg = cfg.clone();
    let watermarks = tokio::task::spawn_blocking(move || watermarks(&kafka_cfg)).await??;
    let mut by_table: BTreeMap<usize, Vec<(String, i32, i64, i64)>> = BTreeMap::new();
    for (t, p, low, high) in watermarks {
        if let Some(table) = router.table_for(&t) {
            by_table.entry(table).or_default().push((t, p, low, high));
        }
    }
    let mut tables = Vec::new();
    for (idx, name) in router.tables().iter().enumerate() {
        let tc = &cfg.tables[name];
        let err = |source| StatusError::Table {
            table: name.clone(),
            source,
        };
        let mut table = crate::sink::storage::table(&tc.uri, &tc.storage_options).map_err(err)?;
        let exists = match table.load().await {
            Ok(()) => true,
            Err(DeltaTableError::NotATable(_)) => false,
            Err(e) => return Err(err(e)),
        };
        let mut status = TableStatus {
            name: name.clone(),
            uri: tc.uri.clone(),
            exists,
            version: None,
            files: None,
            last_commit: None,
            quarantine_rows: None,
            partitions: Vec::new(),
            lag: 0,
        };
        if exists {
            status.version = table.version().map(|v| v as i64);
            status.files = Some(table.get_file_uris().map_err(err)?.count());
            use futures::StreamExt;
            let mut history = table.history(Some(1));
            status.last_commit = history
                .next()
                .await
                .transpose()
                .map_err(err)?
                .and_then(|c| c.timestamp)
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339());
        }
        if let Some(q) = &tc.quarantine_uri {
            status.quarantine_rows = Some(count_rows(name, q, tc).await?);
        }
        for (topic, partition, low, high) in by_table.remove(&idx).unwrap_or_default() {
            let stored = if exists {
                let snapshot = table.snapshot().map_err(err)?;
                snapshot
                    .transaction_version(
                        table.log_store().as_ref(),
                        txn_app_id(&cfg.app_id, &topic, partition),
                    )
                    .await
                    .map_err(err)?
            } else {
                None
            };
            let next = stored.map_or(low, |s| (s + 1).max(low));
            let lag = (high - next).max(0);
            status.lag += lag;
            status.partitions.push(PartitionStatus {
                topic,
                partition,
                stored_offset: stored,
                high_watermark: high,
                lag,
            });
        }
        tables.push(status);
    }
    Ok(Status {
        app_id: cfg.app_id.clone(),
        tables,
    })
}

/// `inlet status`: prints the status of `config`'s tables and partitions,
/// as a table or (`json`) as JSON; `app_id` shows the offsets stored under
/// that app id instead of the config's (e.g. a replay's).
pub async fn run(config: &Path, json: bool, app_id: Option<String>) -> super::Result {
    let mut cfg = crate::pipeline::load_config(config)?;
    if let Some(id) = app_id {
        cfg.app_id = id;
    }
    let status = collect(&cfg).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

/// Rows of the quarantine table at `uri`, from the file statistics in the log
/// (0 while it does not exist).
async fn count_rows(
    name: &str,
    uri: &str,
    tc: &crate::config::TableConfig,
) -> Result<u64, StatusError> {
    let err = |source| StatusError::Table {
        table: format!("{name} (quarantine)"),
        source,
    };
    let mut table = crate::sink::storage::table(uri, &tc.storage_options).map_err(err)?;
    match table.load().await {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) => return Ok(0),
        Err(e) => return Err(err(e)),
    }
    let snapshot = table.snapshot().map_err(err)?;
    Ok(snapshot
        .log_data()
        .into_iter()
        .map(|f| f.num_records().unwrap_or(0) as u64)
        .sum())
}

/// (topic, partition, low, high) of every partition the config reads.
fn watermarks(cfg: &Config) -> Result<Vec<(String, i32, i64, i64)>, StatusError> {
    let router = Router::new(cfg);
    let consumer: BaseConsumer<DefaultConsumerContext> = crate::source::client_config(cfg)
        .create()
        .map_err(|source| StatusError::Kafka {
            what: "creating a client".into(),
            source,
        })?;
    let parts = crate::source::list_partitions(&consumer, |t| router.reads(t), TIMEOUT).map_err(
        |source| StatusError::Kafka {
            what: "listing topics".into(),
            source,
        },
    )?;
    let mut out = Vec::with_capacity(parts.len());
    for (t, p) in parts {
        let (low, high) = consumer
            .fetch_watermarks(&t, p, TIMEOUT)
            .map_err(|source| StatusError::Kafka {
                what: format!("watermarks of {t}/{p}"),
                source,
            })?;
        out.push((t, p, low, high));
    }
    Ok(out)
}

impl Status {
    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let _ = writeln!(out, "table {} ({})", t.name, t.uri);
            if !t.exists {
                let _ = writeln!(out, "  not created yet");
            } else {
                let _ = writeln!(
                    out,
                    "  version {}  files {}  last commit {}",
                    t.version.unwrap_or_default(),
                    t.files.unwrap_or_default(),
                    t.last_commit.as_deref().unwrap_or("-")
                );
            }
            let _ = writeln!(
                out,
                "  quarantine {}",
                t.quarantine_rows
                    .map_or("not configured".to_string(), |n| format!("{n} rows"))
            );
            let _ = writeln!(
                out,
                "  {:<32} {:>9} {:>14} {:>14} {:>10}",
                "topic", "partition", "stored offset", "high watermark", "lag"
            );
            for p in &t.partitions {
                let _ = writeln!(
                    out,
                    "  {:<32} {:>9} {:>14} {:>14} {:>10}",
                    p.topic,
                    p.partition,
                    p.stored_offset.map_or("-".to_string(), |o| o.to_string()),
                    p.high_watermark,
                    p.lag
                );
            }
            let _ = writeln!(out, "  total lag {}", t.lag);
        }
        out
    }
}
