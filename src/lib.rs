//! # inlet
//!
//! Kafka → Delta Lake ingestion, exactly once. inlet consumes Kafka topics,
//! decodes each message straight into Arrow columns, and commits micro-batches
//! to Delta tables in one commit that holds both the Parquet files and the
//! Kafka offsets they cover (as Delta `txn` actions). The Delta log is the only
//! record of progress: a restarted or rebalanced consumer resumes from it, and
//! a zombie writer whose offsets were already committed is fenced.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = inlet::pipeline::load_config(std::path::Path::new("configs/ingest.toml"))?;
//! let summary = inlet::Pipeline::new(config)
//!     .with_mode(inlet::Mode::AvailableNow)
//!     .run()
//!     .await?;
//! println!("{} rows written in {} commits", summary.rows_written, summary.commits);
//! # Ok(())
//! # }
//! ```
// The other lints are set for every target in Cargo.toml.
#![warn(missing_docs)]

pub mod commands;
pub mod config;
pub mod conform;
pub mod decode;
pub mod fault;
pub mod observability;
pub mod pipeline;
pub mod quarantine;
pub mod record;
pub mod registry;
pub mod schema;
pub mod sink;
pub mod source;
pub mod transform;

pub use config::Config;
pub use pipeline::{Mode, Pipeline, PipelineError, RunSummary};
