//! Checking a table location before anything is opened: a local path or a
//! URL of a store inlet is built with (the sink registers those stores).

/// URL schemes a table `uri` may use (a location without `://` is a local path).
pub const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure", "memory",
];

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
}
