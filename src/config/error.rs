//! The errors of loading and validating the configuration, and the one
//! "key / problem / fix" shape every configuration error takes, here and in
//! the modules that check a section further (the registry client).

use std::sync::Arc;

/// A configuration key whose value inlet cannot use: which key, what is
/// wrong, and what to change. The registry client reports its
/// `[schema_registry]` findings in this shape too.
#[derive(Debug, Clone)]
pub struct InvalidKey {
    /// Dotted path of the key, e.g. `sources.events.table`.
    pub key: String,
    /// What is wrong with the value.
    pub problem: String,
    /// What to change.
    pub fix: String,
    /// The error that found the problem, where there is one (a DDL parser's,
    /// a regular expression's, a transform's).
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl InvalidKey {
    /// `key` is wrong: `problem`, to be fixed by `fix`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        InvalidKey {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
            source: None,
        }
    }

    /// The same, found by `source`.
    pub fn because(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

impl std::fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "configuration key `{}`: {}; fix: {}",
            self.key, self.problem, self.fix
        )
    }
}

/// The source is the finding error itself (not the `Arc` around it), so that
/// it can be downcast.
impl std::error::Error for InvalidKey {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Errors found while loading or validating the configuration. Each names the
/// key at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key has the wrong type.
    /// Kept as text: figment's error shows the value, which may be a secret.
    #[error("configuration: {0}")]
    Parse(String),
    /// A key has a value inlet cannot use.
    #[error(transparent)]
    Invalid(#[from] InvalidKey),
}

impl ConfigError {
    /// [`ConfigError::Invalid`] of a new [`InvalidKey`].
    pub fn invalid(
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid(InvalidKey::new(key, problem, fix))
    }
}

impl crate::fault::Classify for ConfigError {
    fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Operator
    }
}

/// Result alias for configuration loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
