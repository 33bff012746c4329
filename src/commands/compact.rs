//! `inlet compact`: one compaction of the configured tables, for a scheduled
//! job (ingest may keep running; see [`crate::sink::compaction`]).

use std::path::Path;

use crate::sink::compaction::{compact, CompactOutcome};

/// Compacts `tables` of `config` (every table when empty) once, printing a
/// line per table; with `force`, even tables with fewer than
/// `compaction.min_small_files` small files. Fails when a table is not in the
/// configuration or a compaction failed (the others still run).
pub async fn run(config: &Path, tables: &[String], force: bool) -> super::Result {
    let cfg = crate::pipeline::load_config(config)?;
    if let Some(name) = tables.iter().find(|t| !cfg.tables.contains_key(*t)) {
        return Err(format!("--table {name}: no [tables.{name}] in the configuration").into());
    }
    let mut failed = false;
    for (name, tc) in &cfg.tables {
        if !tables.is_empty() && !tables.contains(name) {
            continue;
        }
        match compact(name, tc, force).await {
            CompactOutcome::Done {
                version,
                files_removed,
                files_added,
            } => println!(
                "{name}: compacted {files_removed} files into {files_added} (version {version})"
            ),
            CompactOutcome::Skipped { reason } => println!("{name}: skipped ({reason})"),
            CompactOutcome::Failed { error } => {
                failed = true;
                eprintln!("{name}: failed: {error}")
            }
        }
    }
    if failed {
        return Err("compaction failed for some tables".into());
    }
    Ok(())
}
