//! `inlet check`: validates the configuration file and checks every table
//! that exists the way a run opens it. Creates nothing.

use std::path::Path;

use crate::config::Config;
use crate::sink::{DeltaSink, SinkError};

/// Loads and validates `config`, checks its tables, and prints one line per
/// table saying what a run will do with it, then `<config>: ok`.
pub async fn run(config: &Path) -> super::Result {
    let cfg = crate::pipeline::load_config(config)?;
    for line in check_tables(&cfg).await? {
        println!("{line}");
    }
    println!("{}: ok", config.display());
    Ok(())
}

/// Checks every table of `cfg` that exists, and its quarantine table, the
/// way a run opens them (see [`DeltaSink::check_existing`]); one line per
/// table saying what a run will do with it.
pub async fn check_tables(cfg: &Config) -> Result<Vec<String>, SinkError> {
    let mut lines = Vec::new();
    for (name, tc) in &cfg.tables {
        let mut tables = vec![(name.clone(), tc.clone())];
        if let Some(uri) = &tc.quarantine_uri {
            tables.push((
                format!("{name}_quarantine"),
                crate::quarantine::table_config(tc, uri),
            ));
        }
        for (name, tc) in tables {
            lines.push(match DeltaSink::check_existing(&name, &tc).await? {
                Some(v) => format!("table `{name}` at {}: version {v}, writable", tc.uri),
                None => format!(
                    "table `{name}` at {}: not there yet, a run creates it",
                    tc.uri
                ),
            });
        }
    }
    Ok(lines)
}
