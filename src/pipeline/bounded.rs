//! Bounded runs: `--available-now` and `replay` read each partition from a
//! start offset to an end offset (exclusive), then stop. Neither joins the
//! consumer group: the partitions are assigned directly, so a bounded run
//! neither waits for nor disturbs a running group.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::info;

use super::fetch::{FetchLoop, InletConsumer};
use super::progress::Progress;
use super::route::Router;
use super::{PipelineError, Result};
use crate::config::{OffsetSpec, RangeBound};
use crate::source::TopicPartition;

const TIMEOUT: Duration = Duration::from_secs(30);

fn kafka(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Kafka(e.to_string())
}

/// `--available-now`: every partition of the configured topics, from its
/// stored offset + 1 (or `starting_offsets`) to the high watermark seen now.
pub(super) fn available_now(fetch: &mut FetchLoop, router: &Router) -> Result<()> {
    let parts = crate::source::list_partitions(&fetch.consumer, |t| router.reads(t), TIMEOUT)
        .map_err(|e| kafka(format!("listing topics: {e}")))?;
    let reb = fetch.consumer.context().handler().clone();
    let starts = reb.start_offsets(&parts).map_err(PipelineError::Kafka)?;
    let mut ranges = Vec::with_capacity(parts.len());
    for (tp, start) in parts.into_iter().zip(starts) {
        let (_, high) = watermarks(&fetch.consumer, &tp)?;
        ranges.push((tp, start, high));
    }
    assign(fetch, ranges, "available-now")
}

/// `replay`: the partitions `from` names (or, for a timestamp, all of the
/// configured topics), from `from` to `to`, skipping what this replay's own
/// app id already stored.
pub(super) fn replay(
    fetch: &mut FetchLoop,
    router: &Router,
    from: &RangeBound,
    to: &RangeBound,
) -> Result<()> {
    let parts: Vec<TopicPartition> = match from {
        RangeBound::Offsets(m) => {
            let mut parts = Vec::new();
            for (topic, ps) in m {
                if !router.reads(topic) {
                    return Err(PipelineError::Setup(format!(
                        "--from names topic `{topic}`, which no source of the config reads"
                    )));
                }
                parts.extend(ps.keys().map(|p| (topic.clone(), *p)));
            }
            parts
        }
        RangeBound::Timestamp(_) => {
            crate::source::list_partitions(&fetch.consumer, |t| router.reads(t), TIMEOUT)
                .map_err(|e| kafka(format!("listing topics: {e}")))?
        }
    };
    let starts = resolve(&fetch.consumer, &parts, from, OffsetSpec::Earliest)?;
    let ends = resolve(&fetch.consumer, &parts, to, OffsetSpec::Latest)?;
    let reb = fetch.consumer.context().handler().clone();
    let stored = reb.stored_offsets(&parts).map_err(PipelineError::Kafka)?;
    let mut ranges = Vec::with_capacity(parts.len());
    for (((tp, start), end), stored) in parts.into_iter().zip(starts).zip(ends).zip(stored) {
        let (low, high) = watermarks(&fetch.consumer, &tp)?;
        let end = concrete(end, low, high);
        let start = concrete(start, low, high).max(stored.map_or(0, |s| s + 1));
        ranges.push((tp, OffsetSpec::Offset(start), end));
    }
    assign(fetch, ranges, "replay")
}

/// An offset for a spec, given the watermarks.
fn concrete(spec: OffsetSpec, low: i64, high: i64) -> i64 {
    match spec {
        OffsetSpec::Earliest => low,
        OffsetSpec::Latest => high,
        OffsetSpec::Offset(o) => o,
    }
}

fn watermarks(consumer: &InletConsumer, (t, p): &TopicPartition) -> Result<(i64, i64)> {
    consumer
        .fetch_watermarks(t, *p, TIMEOUT)
        .map_err(|e| kafka(format!("watermarks of {t}/{p}: {e}")))
}

/// One bound per partition: listed offsets (unlisted partitions get
/// `default`), or the offsets of a timestamp.
fn resolve(
    consumer: &InletConsumer,
    parts: &[TopicPartition],
    bound: &RangeBound,
    default: OffsetSpec,
) -> Result<Vec<OffsetSpec>> {
    match bound {
        RangeBound::Offsets(m) => Ok(parts
            .iter()
            .map(|(t, p)| {
                m.get(t)
                    .and_then(|ps| ps.get(p))
                    .copied()
                    .unwrap_or(default)
            })
            .collect()),
        RangeBound::Timestamp(ts) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition_offset(t, *p, Offset::Offset(*ts))
                    .map_err(kafka)?;
            }
            let found = consumer
                .offsets_for_times(tpl, TIMEOUT)
                .map_err(|e| kafka(format!("offsets for timestamp {ts}: {e}")))?;
            parts
                .iter()
                .map(|(t, p)| {
                    let e = found
                        .find_partition(t, *p)
                        .ok_or_else(|| kafka(format!("no offset for {t}/{p} at {ts}")))?;
                    Ok(match e.offset() {
                        Offset::Offset(o) => OffsetSpec::Offset(o),
                        // No message at or after the timestamp: the end.
                        _ => OffsetSpec::Latest,
                    })
                })
                .collect()
        }
    }
}

/// Assigns every partition that has something to read at its start, and
/// records the ends (exclusive) for the fetch loop.
fn assign(
    fetch: &mut FetchLoop,
    ranges: Vec<(TopicPartition, OffsetSpec, i64)>,
    what: &str,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    let mut targets: HashMap<TopicPartition, i64> = HashMap::new();
    let mut starts: HashMap<TopicPartition, i64> = HashMap::new();
    let partitions = ranges.len();
    for (tp, start, end) in ranges {
        let (low, high) = watermarks(&fetch.consumer, &tp)?;
        let start = concrete(start, low, high).max(low);
        if start >= end {
            continue;
        }
        tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(start))
            .map_err(kafka)?;
        starts.insert(tp.clone(), start);
        targets.insert(tp, end);
    }
    let total: i64 = targets.iter().map(|(tp, end)| end - starts[tp]).sum();
    info!(
        partitions,
        to_read = targets.len(),
        offsets = total,
        "{what}: range resolved"
    );
    fetch
        .consumer
        .assign(&tpl)
        .map_err(|e| kafka(format!("assign: {e}")))?;
    fetch.progress = Some(Progress::new(what, starts, total.max(0) as u64));
    fetch
        .metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    fetch.targets = Some(targets);
    Ok(())
}
