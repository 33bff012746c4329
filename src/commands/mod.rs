//! The commands of the `inlet` binary. `main.rs` parses the command line and
//! calls one function here, which loads the configuration, does the work
//! through the library and prints what the operator reads on stdout.
//!
//! - [`ingest`]: `inlet run` and `inlet replay` (the pipeline until it ends or
//!   a signal stops it);
//! - [`check`]: `inlet check`, the configuration and the tables it names;
//! - [`status`]: `inlet status`, stored offsets, lag and table versions;
//! - [`migrate`]: `inlet migrate`, versioned table definitions;
//! - [`compact`]: `inlet compact`, one compaction of the configured tables.

pub mod check;
pub mod compact;
pub mod ingest;
pub mod migrate;
pub mod status;

/// What a command returns: its errors keep their types, so the binary can
/// tell a bounded run that ended incomplete (exit code 3) from the rest.
pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
