//! A test's workspace: a temporary directory with the config file and the
//! tables (or an S3 bucket for them).

use std::collections::HashMap;
use std::path::PathBuf;

use super::s3;
use super::tables::Location;

/// A test workspace: config file and table directory (or S3 bucket).
pub(crate) struct Workspace {
    /// Temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// Tables live in this S3 bucket instead of `dir`.
    remote: Option<Remote>,
}

struct Remote {
    bucket: String,
    options: HashMap<String, String>,
    toml: String,
}

/// What a config for the tests contains.
pub(crate) struct ConfigSpec<'a> {
    /// Bootstrap servers.
    pub bootstrap: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// `[flush] max_rows`.
    pub max_rows: usize,
    /// `[flush] max_age`.
    pub max_age: &'a str,
    /// Extra TOML appended at the end.
    pub extra: &'a str,
    /// `session.timeout.ms`: how long the group waits for a killed member.
    pub session_timeout_ms: u32,
}

impl Workspace {
    /// A fresh workspace.
    pub(crate) fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            remote: None,
        }
    }

    /// A workspace whose tables live in a new bucket of `server`.
    pub(crate) fn on_s3(server: &s3::SeaweedS3, bucket: &str) -> Self {
        server.create_bucket(bucket);
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            remote: Some(Remote {
                bucket: bucket.to_string(),
                options: server.storage_options(),
                toml: server.storage_options_toml(),
            }),
        }
    }

    fn location(&self, name: &str) -> Location {
        match &self.remote {
            None => Location::local(&self.dir.path().join(name)),
            Some(r) => Location {
                uri: format!("s3://{}/{name}", r.bucket),
                options: r.options.clone(),
            },
        }
    }

    /// Where the table is.
    pub(crate) fn table_location(&self) -> Location {
        self.location("events")
    }

    /// Where the quarantine table is.
    pub(crate) fn quarantine_location(&self) -> Location {
        self.location("events_quarantine")
    }

    /// The table directory.
    pub(crate) fn table(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    /// The quarantine table directory.
    pub(crate) fn quarantine(&self) -> PathBuf {
        self.dir.path().join("events_quarantine")
    }

    /// Writes `inlet.toml` and returns its path.
    pub(crate) fn config(&self, spec: &ConfigSpec<'_>) -> PathBuf {
        let path = self.dir.path().join("inlet.toml");
        let toml = format!(
            r#"
app_id = "test"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{group}"

[kafka.properties]
"session.timeout.ms" = "{session}"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "1000"

[sources.events]
topics = ["{topic}"]
table = "events"

[tables.events]
uri = "{table}"
quarantine_uri = "{quarantine}"
schema = "id BIGINT, user STRING, action STRING, amount DOUBLE, event_time TIMESTAMP"

[tables.events.metadata_columns]
topic = "_topic"
partition = "_partition"
offset = "_offset"
timestamp = "_ts"
key = "_key"
headers = "_headers"
{storage}

[flush]
max_rows = {max_rows}
max_age = "{max_age}"

[commit]
retry_backoff = "50ms"
{extra}
"#,
            bootstrap = spec.bootstrap,
            group = spec.group,
            topic = spec.topic,
            table = self.table_location().uri,
            quarantine = self.quarantine_location().uri,
            storage = match &self.remote {
                None => String::new(),
                Some(r) => format!("[tables.events.storage_options]\n{}\n", r.toml),
            },
            max_rows = spec.max_rows,
            max_age = spec.max_age,
            extra = spec.extra,
            session = spec.session_timeout_ms,
        );
        std::fs::write(&path, toml).unwrap();
        path
    }
}
