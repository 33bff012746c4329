//! Logs and metrics. Every thing that happens is one typed internal event
//! ([`events`]) that writes both its log line and its metrics; `inlet run`
//! serves the metrics with health and readiness over HTTP ([`http`]).

pub mod events;
pub mod http;
mod metrics;

pub use events::InternalEvent;
pub use metrics::{
    CompactionLabels, MergeRowLabels, Metrics, PartitionLabels, RejectLabels, TableLabels,
    TopicLabels, Totals, UnknownIdLabels,
};
