//! `inlet run` and `inlet replay`: the pipeline, until it ends (bounded
//! runs) or SIGTERM/SIGINT stops it after committing what is buffered.

use std::path::Path;

use crate::config::RangeBound;
use crate::pipeline::{replay_app_id, replay_target, Mode, Pipeline};

/// `inlet run`: ingests until a signal, or with `available_now` up to the
/// high watermarks seen at start.
pub async fn run(config: &Path, available_now: bool) -> super::Result {
    let cfg = crate::pipeline::load_config(config)?;
    let mode = if available_now {
        Mode::AvailableNow
    } else {
        Mode::Continuous
    };
    run_pipeline(Pipeline::new(cfg).with_mode(mode)).await
}

/// What `inlet replay` re-ingests, and where to.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Start of the range (Spark's startingOffsets JSON or a timestamp).
    pub from: String,
    /// End of the range, exclusive.
    pub to: String,
    /// Write into this table location instead of the configured one.
    pub table_uri: Option<String>,
    /// Write rejected messages into this quarantine table.
    pub quarantine_uri: Option<String>,
    /// The replay's app id; default derived from the app id and the range.
    pub replay_id: Option<String>,
}

/// `inlet replay`: re-ingests a bounded range under the replay's own app id.
pub async fn replay(config: &Path, replay: Replay) -> super::Result {
    let mut cfg = crate::pipeline::load_config(config)?;
    let from: RangeBound = replay.from.parse().map_err(|e| format!("--from: {e}"))?;
    let to: RangeBound = replay.to.parse().map_err(|e| format!("--to: {e}"))?;
    cfg.app_id = replay
        .replay_id
        .unwrap_or_else(|| replay_app_id(&cfg.app_id, &replay.from, &replay.to));
    replay_target(&mut cfg, replay.table_uri, replay.quarantine_uri)?;
    tracing::info!(app_id = %cfg.app_id, "replay");
    run_pipeline(Pipeline::new(cfg).with_mode(Mode::Replay { from, to })).await
}

async fn run_pipeline(pipeline: Pipeline) -> super::Result {
    let shutdown = pipeline.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: committing what is buffered, then exiting");
        shutdown.trigger();
    });
    let summary = pipeline.run().await?;
    println!(
        "consumed {} messages, wrote {} rows in {} commits, rejected {} (quarantined {}), fenced {}",
        summary.consumed,
        summary.rows_written,
        summary.commits,
        summary.rejected,
        summary.quarantined,
        summary.fenced
    );
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
