//! Which table each topic feeds, and where its partitions start by default.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{Config, OffsetSpec, StartingOffsets};

/// Topic → table, resolved once per topic (patterns match topics created later).
#[derive(Debug)]
pub struct Router {
    /// Table names, in index order.
    tables: Vec<String>,
    /// Source name → (table index, starting offsets, explicit topics, pattern).
    sources: Vec<SourceRoute>,
    cache: Mutex<HashMap<String, Option<usize>>>,
}

#[derive(Debug)]
struct SourceRoute {
    name: String,
    table: usize,
    topics: Vec<String>,
    pattern: Option<regex::Regex>,
    starting: StartingOffsets,
    fail_on_data_loss: bool,
}

impl Router {
    /// Builds the routes of a validated config.
    pub fn new(cfg: &Config) -> Self {
        let tables: Vec<String> = cfg.tables.keys().cloned().collect();
        let sources = cfg
            .sources
            .iter()
            .map(|(name, s)| SourceRoute {
                name: name.clone(),
                table: tables
                    .iter()
                    .position(|t| *t == s.table)
                    .expect("validated: source table exists"),
                topics: s.topics.clone(),
                pattern: s
                    .pattern
                    .as_deref()
                    .map(|p| regex::Regex::new(p).expect("validated: pattern compiles")),
                starting: s.starting_offsets.clone(),
                fail_on_data_loss: s.fail_on_data_loss,
            })
            .collect();
        Router {
            tables,
            sources,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Table names in index order.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    fn source_for(&self, topic: &str) -> Option<&SourceRoute> {
        self.sources
            .iter()
            .find(|s| s.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.sources
                    .iter()
                    .find(|s| s.pattern.as_ref().is_some_and(|re| re.is_match(topic)))
            })
    }

    /// The table index `topic` feeds, if any source reads it.
    pub fn table_for(&self, topic: &str) -> Option<usize> {
        let mut cache = self.cache.lock().expect("router cache");
        if let Some(t) = cache.get(topic) {
            return *t;
        }
        let t = self.source_for(topic).map(|s| s.table);
        cache.insert(topic.to_string(), t);
        t
    }

    /// Whether any source reads `topic`.
    pub fn reads(&self, topic: &str) -> bool {
        self.source_for(topic).is_some()
    }

    /// The configured start for a partition without a stored offset.
    pub fn starting_offset(&self, topic: &str, partition: i32) -> OffsetSpec {
        self.source_for(topic)
            .map(|s| s.starting.for_partition(topic, partition))
            .unwrap_or(OffsetSpec::Earliest)
    }

    /// The source reading `topic` and its `fail_on_data_loss` (true, the
    /// default, for a topic no source reads).
    pub fn data_loss_policy(&self, topic: &str) -> (&str, bool) {
        self.source_for(topic)
            .map_or(("?", true), |s| (s.name.as_str(), s.fail_on_data_loss))
    }

    /// The subscription list: explicit topics, and patterns as `^…` regexes
    /// (librdkafka's convention for pattern subscriptions).
    pub fn subscription(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.extend(s.topics.iter().cloned());
            if let Some(p) = &s.pattern {
                let p = p.as_str();
                out.push(if p.starts_with('^') {
                    p.to_string()
                } else {
                    format!("^{p}")
                });
            }
        }
        out
    }
}
