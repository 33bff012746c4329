//! Where tables live: the object stores inlet is built with (the schemes a
//! table `uri` may use are checked with the configuration:
//! `crate::config::check_uri`).
//!
//! - Local paths and `file://` URLs.
//! - `s3://` / `s3a://` (AWS S3 and S3-compatible stores). Credentials come
//!   from `storage_options`, `AWS_*` variables, or, when no custom endpoint is
//!   set (or `AWS_FORCE_CREDENTIAL_LOAD=true`), the standard AWS chain:
//!   environment, profile, SSO, web identity, instance metadata. Concurrent
//!   writers rely on the store's conditional put (`If-None-Match: *`); no
//!   DynamoDB lock is used or needed.
//! - `gs://` (Google Cloud Storage).
//! - `az://`, `abfs://`, `abfss://`, `adl://`, `azure://` (Azure storage).
//! - `memory://` (process-local, for tests).

use std::collections::BTreeMap;
use std::sync::Once;

use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

/// Makes sure every object store factory is registered with delta-rs.
///
/// delta-rs registers them from constructors at load time; doing it again
/// here keeps inlet working if a linker drops those constructors.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::gcp::register_handlers(None);
        deltalake::azure::register_handlers(None);
    });
}

/// A handle on the table at `uri` (not loaded yet), with `options` passed to
/// the object store.
pub fn table(uri: &str, options: &BTreeMap<String, String>) -> Result<DeltaTable, DeltaTableError> {
    register();
    let url = deltalake::ensure_table_uri(uri.trim())?;
    DeltaTableBuilder::from_url(url)?
        .with_storage_options(options.clone().into_iter().collect())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_tables_open_without_network() {
        // Building the store must not need the network (no credential lookup
        // happens with a custom endpoint and static keys).
        let opts = [
            ("aws_endpoint", "http://127.0.0.1:9"),
            ("aws_access_key_id", "k"),
            ("aws_secret_access_key", "s"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let table = table("s3://bucket/events", &opts);
        assert!(table.is_ok(), "{:?}", table.err());
    }
}
