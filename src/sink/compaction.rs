//! Table maintenance: compacting small files without disturbing ingest.
//!
//! Micro-batches make small files. Compaction rewrites them into files of
//! `compaction.target_file_size` in a commit with `dataChange = false`: no
//! row is added or removed, a concurrent ingest append does not conflict with
//! it, and the Kafka offsets (`txn` actions) are untouched. Two compactions
//! racing on the same files conflict; the loser gives up until its next turn.

use std::num::NonZeroU64;
use std::sync::Arc;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::optimize::OptimizeType;
use deltalake::DeltaTableError;

use crate::config::TableConfig;
use crate::fault::Shutdown;
use crate::observability::events::{CompactionFailed, CompactionSkipped, TableCompacted};
use crate::observability::{InternalEvent, Metrics};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CompactOutcome {
    /// Files were rewritten.
    Done {
        /// Table version of the compaction commit.
        version: i64,
        /// Small files replaced.
        files_removed: u64,
        /// Files written.
        files_added: u64,
    },
    /// Nothing worth doing.
    Skipped {
        /// Why.
        reason: String,
    },
    /// It failed; the table is unchanged.
    Failed {
        /// Why.
        error: String,
    },
}

impl CompactOutcome {
    /// Logs and counts the outcome of compacting table `table`.
    pub fn emit(&self, table: &str, metrics: &Metrics) {
        match self {
            CompactOutcome::Done {
                version,
                files_removed,
                files_added,
            } => TableCompacted {
                table,
                version: *version,
                files_removed: *files_removed,
                files_added: *files_added,
            }
            .emit(metrics),
            CompactOutcome::Skipped { reason } => CompactionSkipped { table, reason }.emit(metrics),
            CompactOutcome::Failed { error } => CompactionFailed { table, error }.emit(metrics),
        }
    }
}

/// Compacts table `name` once. With `force`, compacts even when fewer than
/// `compaction.min_small_files` files are small.
pub async fn compact(name: &str, cfg: &TableConfig, force: bool) -> CompactOutcome {
    use tracing::Instrument as _;
    let span = tracing::info_span!("compact", table = name);
    match try_compact(cfg, force).instrument(span).await {
        Ok(outcome) => outcome,
        Err(e) => CompactOutcome::Failed {
            error: e.to_string(),
        },
    }
}

async fn try_compact(cfg: &TableConfig, force: bool) -> Result<CompactOutcome, DeltaTableError> {
    let mut table = crate::sink::storage::table(&cfg.uri, &cfg.storage_options)?;
    match table.load().await {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) => {
            return Ok(CompactOutcome::Skipped {
                reason: format!("no table at {} yet", cfg.uri),
            })
        }
        Err(e) => return Err(e),
    }
    if let Some(reason) = crate::sink::features::compaction_refusal(
        table.snapshot()?.protocol(),
        table.snapshot()?.metadata(),
    ) {
        return Ok(CompactOutcome::Failed { error: reason });
    }
    let target = cfg.compaction.target_file_size.as_u64().max(1);
    let small = table
        .snapshot()?
        .log_data()
        .into_iter()
        .filter(|f| (f.size().max(0) as u64) < target / 2)
        .count();
    if small < 2 || (!force && small < cfg.compaction.min_small_files) {
        return Ok(CompactOutcome::Skipped {
            reason: format!(
                "{small} small files (compacting from {})",
                cfg.compaction.min_small_files.max(2)
            ),
        });
    }
    let target = NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN);
    let (table, metrics) = table
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_target_size(target)
        .with_writer_properties(crate::sink::writer_properties(cfg.compression))
        .with_commit_properties(CommitProperties::default().with_metadata([(
            "inlet.operation".to_string(),
            serde_json::Value::String("compaction".into()),
        )]))
        // Parquet encoding is CPU-bound; leave a core to ingest.
        .with_max_concurrent_tasks(1)
        .await?;
    if metrics.num_files_removed == 0 {
        return Ok(CompactOutcome::Skipped {
            reason: "no bin of files to merge".into(),
        });
    }
    Ok(CompactOutcome::Done {
        version: table.version().map_or(-1, |v| v as i64),
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
    })
}

/// Runs `compact` on every table with a `compaction.interval` until
/// `shutdown` is set. Each table waits its interval first, so a restarting
/// process does not compact straight away.
pub fn spawn_periodic(
    tables: Vec<(String, TableConfig)>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    tables
        .into_iter()
        .filter_map(|(name, cfg)| {
            let interval = cfg.compaction.interval?;
            let shutdown = shutdown.clone();
            let metrics = metrics.clone();
            Some(tokio::spawn(async move {
                loop {
                    if !shutdown.sleep(interval).await {
                        return;
                    }
                    compact(&name, &cfg, false).await.emit(&name, &metrics);
                }
            }))
        })
        .collect()
}
