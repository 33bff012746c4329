//! Where tables live: the object stores inlet is built with, and checking a
//! table location before anything is opened.
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

/// URL schemes a table `uri` may use (a location without `://` is a local path).
pub const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure", "memory",
];

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

/// Checks that `uri` is a local path or a URL of a supported store, with a
/// message naming the fix otherwise.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let uri = uri.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(());
    };
    let scheme = scheme.to_ascii_lowercase();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "scheme `{scheme}://` is not supported; use a local path or one of {}",
            SCHEMES
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if scheme != "file" && scheme != "memory" && rest.split('/').next().unwrap_or("").is_empty() {
        return Err(format!(
            "`{scheme}://` needs a bucket or container, e.g. `{scheme}://my-bucket/path/to/table`"
        ));
    }
    url::Url::parse(uri).map_err(|e| format!("is not a valid URL: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(check_uri("/data/events").is_ok());
        assert!(check_uri("relative/events").is_ok());
        assert!(check_uri("file:///data/events").is_ok());
        assert!(check_uri("s3://bucket/events").is_ok());
        assert!(check_uri("S3A://bucket/events").is_ok());
        assert!(check_uri("gs://bucket/events").is_ok());
        assert!(check_uri("abfss://c@acct.dfs.core.windows.net/events").is_ok());
        let e = check_uri("hdfs://nn/events").unwrap_err();
        assert!(
            e.contains("`hdfs://` is not supported") && e.contains("s3://"),
            "{e}"
        );
        let e = check_uri("s3:///events").unwrap_err();
        assert!(e.contains("needs a bucket"), "{e}");
    }

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
