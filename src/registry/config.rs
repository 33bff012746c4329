//! The `[schema_registry]` section of the configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{RegistryError, Result};
use crate::fault::Backoff;

/// `[schema_registry]`: where the Confluent-compatible Schema Registry is
/// (Confluent, Karapace, Redpanda, Apicurio's Confluent API) and how to reach
/// it. The Avro and JSON Schema decoders fetch the schema of each schema id
/// they meet once, then keep it for the life of the process.
///
/// ```toml
/// [schema_registry]
/// url = "https://registry.example.com:8081"
/// username = "ingest"
/// # password from the environment: INLET_SCHEMA_REGISTRY__PASSWORD
/// ca_location = "/etc/inlet/registry-ca.pem"
/// timeout = "5s"
/// unknown_id_grace = "60s"
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the registry, `http(s)://host:port[/path]`, e.g.
    /// `"http://localhost:8081"`. Required. A path is kept as a prefix (for a
    /// registry behind a reverse proxy). Credentials do not belong in the URL:
    /// set `username` and `password`.
    pub url: String,
    /// User name for HTTP basic authentication (on Confluent Cloud: the API
    /// key). Set together with `password`. Default: none, no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for HTTP basic authentication (on Confluent Cloud: the API
    /// secret). Prefer the environment (`INLET_SCHEMA_REGISTRY__PASSWORD`) to
    /// the file. Never logged or printed. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of CA certificates to trust for an `https://` registry, in
    /// addition to the system's trusted roots, e.g.
    /// `"/etc/inlet/registry-ca.pem"`. Default: the system's roots only.
    #[serde(default)]
    pub ca_location: Option<PathBuf>,
    /// PEM file with the client certificate (and its chain) for mutual TLS.
    /// Set together with `key_location`. Default: none.
    #[serde(default)]
    pub certificate_location: Option<PathBuf>,
    /// PEM file with the unencrypted private key of `certificate_location`
    /// (PKCS#8, PKCS#1 or SEC1). Default: none.
    #[serde(default)]
    pub key_location: Option<PathBuf>,
    /// Longest time one request may take, connecting included, e.g. `"5s"`.
    /// A request that takes longer counts as the registry being unavailable
    /// (retried, never quarantined). Default `10s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First delay before retrying while the registry is unavailable (or
    /// does not know a schema id yet, see `unknown_id_grace`), doubled at
    /// each attempt up to `max_backoff`. More than 0. Default `500ms`.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest delay between two retries, at least `retry_backoff`. Default
    /// `30s`.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a schema id the registry answers "not found" for (HTTP 404,
    /// error 40403) is retried, with the backoff above, before the messages
    /// carrying it are quarantined (stage `schema`), e.g. `"60s"`. A Karapace
    /// or Confluent registry that restarts answers 404 for ids it holds for
    /// several seconds while it re-reads its `_schemas` topic, also right
    /// after an outage (the grace starts at the first 404 after the registry
    /// was last unreachable). After the grace the id is remembered as unknown
    /// until inlet restarts: later messages with it are quarantined at once.
    ///
    /// The trade-off: a real poison pill with an unknown id holds its chunk,
    /// and with it the decode stage of the process (every table and
    /// partition, whose consumers pause meanwhile and keep their group), for
    /// the grace, once per unknown id per process; a shorter grace risks
    /// quarantining valid records after a registry restart that takes longer.
    /// `"0s"` quarantines at the first 404; at most `1h`. Default `60s`.
    #[serde(default = "default_unknown_id_grace", with = "humantime_serde")]
    pub unknown_id_grace: Duration,
}

/// Longest `unknown_id_grace` accepted: beyond it a poison pill would hold
/// the pipeline for longer than anyone waits for a registry restart.
const MAX_UNKNOWN_ID_GRACE: Duration = Duration::from_secs(3600);

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_backoff() -> Duration {
    Duration::from_millis(500)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_unknown_id_grace() -> Duration {
    Duration::from_secs(60)
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redacted_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("timeout", &self.timeout)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("unknown_id_grace", &self.unknown_id_grace)
            .finish()
    }
}

/// `url` with any `user:password@` replaced (validation refuses it, but a
/// config is printed before it is validated).
fn redacted_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://<redacted>@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

impl RegistryConfig {
    /// A configuration for `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            username: None,
            password: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            timeout: default_timeout(),
            retry_backoff: default_retry_backoff(),
            max_backoff: default_max_backoff(),
            unknown_id_grace: default_unknown_id_grace(),
        }
    }

    /// Checks every key. `key_prefix` is the dotted path of this section
    /// (`"schema_registry"`); errors are [`RegistryError::Config`] naming the
    /// key (`schema_registry.url`), the problem and the fix, and never contain
    /// the password.
    pub fn validate(&self, key_prefix: &str) -> Result<()> {
        let keys = Keys(key_prefix);
        let url = self.validate_url(&keys)?;
        self.validate_credentials(&keys)?;
        self.validate_tls(&keys, &url)?;
        self.validate_timings(&keys)
    }

    /// `url`: an `http(s)://host[:port]` base address without credentials.
    fn validate_url(&self, keys: &Keys<'_>) -> Result<url::Url> {
        let url = match url::Url::parse(&self.url) {
            Ok(url) => url,
            // The parse error does not repeat the input, which may hold a password.
            Err(e) => {
                return keys.invalid(
                    "url",
                    format!("not a URL ({e})"),
                    "write it as `http://host:port` or `https://host:port`".into(),
                )
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return keys.invalid(
                "url",
                "the URL contains credentials (`user:password@`)".into(),
                format!(
                    "remove them from the URL and set `{}` and `{}`",
                    keys.key("username"),
                    keys.key("password")
                ),
            );
        }
        if !matches!(url.scheme(), "http" | "https") {
            return keys.invalid(
                "url",
                format!("scheme `{}` is not supported", url.scheme()),
                "use an `http://` or `https://` URL".into(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) {
            return keys.invalid(
                "url",
                "the URL has no host".into(),
                "write it as `http://host:port`".into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return keys.invalid(
                "url",
                "the URL has a query or fragment (`?...`, `#...`)".into(),
                "remove it: the URL is the registry's base address".into(),
            );
        }
        Ok(url)
    }

    /// `username` and `password`: both or neither.
    fn validate_credentials(&self, keys: &Keys<'_>) -> Result<()> {
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return keys.invalid(
                    "password",
                    format!("`{}` is set but the password is not", keys.key("username")),
                    format!(
                        "set `{}` (e.g. from the environment), or remove `{}`",
                        keys.key("password"),
                        keys.key("username")
                    ),
                )
            }
            (None, Some(_)) => {
                return keys.invalid(
                    "username",
                    format!("`{}` is set but the user name is not", keys.key("password")),
                    format!(
                        "set `{}`, or remove `{}`",
                        keys.key("username"),
                        keys.key("password")
                    ),
                )
            }
            (Some(user), Some(_)) if user.is_empty() || user.contains(':') => {
                return keys.invalid(
                    "username",
                    "the user name is empty or contains `:`".into(),
                    "set the user name (or API key) without a colon".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    /// The TLS files: a certificate with its key, readable, over `https://`.
    fn validate_tls(&self, keys: &Keys<'_>, url: &url::Url) -> Result<()> {
        match (&self.certificate_location, &self.key_location) {
            (Some(_), None) => {
                return keys.invalid(
                    "key_location",
                    format!(
                        "`{}` is set but the key is not",
                        keys.key("certificate_location")
                    ),
                    format!(
                        "set `{}` to the certificate's private key (PEM)",
                        keys.key("key_location")
                    ),
                )
            }
            (None, Some(_)) => {
                return keys.invalid(
                    "certificate_location",
                    format!(
                        "`{}` is set but the certificate is not",
                        keys.key("key_location")
                    ),
                    format!(
                        "set `{}` to the client certificate (PEM)",
                        keys.key("certificate_location")
                    ),
                )
            }
            _ => {}
        }
        for (name, path) in [
            ("ca_location", &self.ca_location),
            ("certificate_location", &self.certificate_location),
            ("key_location", &self.key_location),
        ] {
            let Some(path) = path else { continue };
            if url.scheme() != "https" {
                return keys.invalid(
                    name,
                    "TLS files are set but the URL is `http://`".into(),
                    format!(
                        "use an `https://` URL in `{}`, or remove `{}`",
                        keys.key("url"),
                        keys.key(name)
                    ),
                );
            }
            if !Path::new(path).is_file() {
                return keys.invalid(
                    name,
                    format!("`{}` is not a readable file", path.display()),
                    "point it at a PEM file".into(),
                );
            }
        }
        Ok(())
    }

    /// Timeout, backoff and the unknown-id grace.
    fn validate_timings(&self, keys: &Keys<'_>) -> Result<()> {
        if self.timeout.is_zero() {
            return keys.invalid(
                "timeout",
                "the timeout is 0".into(),
                "set a duration such as \"10s\"".into(),
            );
        }
        if self.retry_backoff.is_zero() {
            return keys.invalid(
                "retry_backoff",
                "the backoff is 0, which would retry in a busy loop".into(),
                "set a duration such as \"500ms\"".into(),
            );
        }
        if self.max_backoff < self.retry_backoff {
            return keys.invalid(
                "max_backoff",
                format!(
                    "{:?} is shorter than `{}` ({:?})",
                    self.max_backoff,
                    keys.key("retry_backoff"),
                    self.retry_backoff
                ),
                format!("make it at least `{}`", keys.key("retry_backoff")),
            );
        }
        if self.unknown_id_grace > MAX_UNKNOWN_ID_GRACE {
            return keys.invalid(
                "unknown_id_grace",
                format!(
                    "{:?} is longer than 1h: a message with a really unknown schema id would \
                     hold ingest that long",
                    self.unknown_id_grace
                ),
                "set about the time the registry takes to restart, e.g. \"60s\"".into(),
            );
        }
        Ok(())
    }

    /// The backoff between retries while the registry is unavailable (or
    /// does not know an id yet): `retry_backoff`, doubled per attempt, at
    /// most `max_backoff`, without limit.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_backoff, self.max_backoff)
    }
}

/// The keys of one registry section, for its errors.
struct Keys<'a>(&'a str);

impl Keys<'_> {
    /// The dotted key of `name` in the section.
    fn key(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.0)
        }
    }

    /// The error naming `name`, the problem and the fix.
    fn invalid<T>(&self, name: &str, problem: String, fix: String) -> Result<T> {
        Err(RegistryError::config(self.key(name), problem, fix))
    }
}
