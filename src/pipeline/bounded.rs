//! Bounded runs: `--available-now` and `replay` read each partition from a
//! start offset to an end offset (exclusive), then stop. Neither joins the
//! consumer group: the partitions are assigned directly, so a bounded run
//! neither waits for nor disturbs a running group.

use std::collections::HashMap;

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::info;

use super::poll::FetchLoop;
use super::progress::Progress;
use super::route::Router;
use super::{PipelineError, Result};
use crate::config::{OffsetSpec, RangeBound};
use crate::record::{Next, TopicPartition};
use crate::source::watermarks::{self, LOOKUP_TIMEOUT};
use crate::source::RunKind;

/// `--available-now`: every partition of the configured topics, from its
/// stored offset + 1 (or `starting_offsets`) to the high watermark seen now.
pub(super) fn available_now(fetch: &mut FetchLoop, router: &Router) -> Result<()> {
    let parts =
        crate::source::list_partitions(&fetch.consumer, |t| router.reads(t), LOOKUP_TIMEOUT)
            .map_err(|e| PipelineError::kafka_by(format!("listing topics: {e}"), e))?;
    let reb = fetch.consumer.context().handler().clone();
    // Owned from here: a lost range's quarantine row is stamped next.
    reb.assigned_directly(&parts);
    let consumer = fetch.consumer.clone();
    let wm =
        |t: &str, p: i32| consumer.fetch_watermarks(t, p, crate::source::kafka::WATERMARK_TIMEOUT);
    let starts = reb.start_offsets(&parts, &wm)?;
    let mut ranges = Vec::with_capacity(parts.len());
    for (tp, start) in parts.into_iter().zip(starts) {
        let (_, high) = watermarks::watermarks(&fetch.consumer, &tp)?;
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
            crate::source::list_partitions(&fetch.consumer, |t| router.reads(t), LOOKUP_TIMEOUT)
                .map_err(|e| PipelineError::kafka_by(format!("listing topics: {e}"), e))?
        }
    };
    let lookup = |parts: &[TopicPartition], ts: i64| {
        Ok(watermarks::offsets_for_time(&fetch.consumer, parts, ts)?)
    };
    let starts = resolve(&lookup, &parts, from, OffsetSpec::Earliest)?;
    let ends = resolve(&lookup, &parts, to, OffsetSpec::Latest)?;
    let reb = fetch.consumer.context().handler().clone();
    // Owned from here: a lost range's quarantine row is stamped next.
    reb.assigned_directly(&parts);
    let stored = reb
        .stored_offsets(&parts)
        .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
    let mut ranges = Vec::with_capacity(parts.len());
    let mut lost = Vec::new();
    for (((tp, start), end), stored) in parts.into_iter().zip(starts).zip(ends).zip(stored) {
        let (low, high) = watermarks::watermarks(&fetch.consumer, &tp)?;
        let end = concrete(end, low, high);
        let from = concrete(start, low, high);
        let next = match stored {
            Some(s) if s + 1 > from => Next::Stored(s),
            _ => Next::Requested(from),
        };
        let mut start = next.offset();
        if start < end {
            let (checked, loss) = reb.check_start(&tp.0, tp.1, next, (low, high), end)?;
            start = checked;
            lost.extend(loss);
        }
        ranges.push((tp, OffsetSpec::Offset(start), end));
    }
    reb.settle_losses(lost, RunKind::Replay)?;
    assign(fetch, ranges, "replay")
}

/// An offset for a spec, given the watermarks.
pub(super) fn concrete(spec: OffsetSpec, low: i64, high: i64) -> i64 {
    match spec {
        OffsetSpec::Earliest => low,
        OffsetSpec::Latest => high,
        OffsetSpec::Offset(o) => o,
    }
}

/// Offsets-for-times: per partition, the first offset at or after a timestamp.
type TimeLookup<'a> = dyn Fn(&[TopicPartition], i64) -> Result<Vec<Option<i64>>> + 'a;

/// One bound per partition: listed offsets (unlisted partitions get
/// `default`), or the offsets of a timestamp (`lookup`, the broker's
/// offsets-for-times); a partition with no message at or after the
/// timestamp is bounded by its end.
fn resolve(
    lookup: &TimeLookup<'_>,
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
        RangeBound::Timestamp(ts) => Ok(lookup(parts, *ts)?
            .into_iter()
            .map(|o| o.map_or(OffsetSpec::Latest, OffsetSpec::Offset))
            .collect()),
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
        let (low, high) = watermarks::watermarks(&fetch.consumer, &tp)?;
        // Checked for data loss already; should the low watermark move past
        // it meanwhile, the fetch is out of range and positions are re-read.
        let start = concrete(start, low, high);
        if start >= end {
            continue;
        }
        tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(start))
            .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
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
        .map_err(|e| PipelineError::kafka_by(format!("assign: {e}"), e))?;
    fetch
        .completion
        .lock()
        .expect("completion lock")
        .set_ranges(
            targets
                .iter()
                .map(|(tp, end)| (tp.clone(), starts[tp], *end)),
        );
    fetch.progress = Some(Progress::new(what, starts, total.max(0) as u64));
    fetch
        .metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    fetch.targets = Some(targets);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition log of (offset, timestamp), as a broker would search it.
    fn log(p: i32) -> Vec<(i64, i64)> {
        // Partition p: offsets 0..10 at 1000 + 100 * offset + p.
        (0..10)
            .map(|o| (o, 1000 + 100 * o + i64::from(p)))
            .collect()
    }

    fn fake(parts: &[TopicPartition], ts: i64) -> Result<Vec<Option<i64>>> {
        Ok(parts
            .iter()
            .map(|(_, p)| log(*p).into_iter().find(|(_, t)| *t >= ts).map(|(o, _)| o))
            .collect())
    }

    #[test]
    fn timestamps_resolve_per_partition() {
        let parts = vec![("e".to_string(), 0), ("e".to_string(), 1)];
        let from: RangeBound = "1250".parse().unwrap();
        let to: RangeBound = "1601".parse().unwrap();
        let starts = resolve(&fake, &parts, &from, OffsetSpec::Earliest).unwrap();
        let ends = resolve(&fake, &parts, &to, OffsetSpec::Latest).unwrap();
        // p0: 1300 is offset 3; p1: 1301 is offset 3. End (exclusive): the
        // first offset at or after 1601: p0 offset 7 (1700), p1 offset 6 (1601).
        assert_eq!(starts, [OffsetSpec::Offset(3), OffsetSpec::Offset(3)]);
        assert_eq!(ends, [OffsetSpec::Offset(7), OffsetSpec::Offset(6)]);
        // Later than every message: the end of the partition.
        let late: RangeBound = "99999".parse().unwrap();
        let ends = resolve(&fake, &parts, &late, OffsetSpec::Latest).unwrap();
        assert_eq!(ends, [OffsetSpec::Latest, OffsetSpec::Latest]);
        // RFC 3339 is the same instant as epoch milliseconds.
        let rfc: RangeBound = "1970-01-01T00:00:01.250Z".parse().unwrap();
        assert_eq!(
            resolve(&fake, &parts, &rfc, OffsetSpec::Earliest).unwrap(),
            [OffsetSpec::Offset(3), OffsetSpec::Offset(3)]
        );
    }

    #[test]
    fn listed_offsets_default_for_unlisted_partitions() {
        let parts = vec![("e".to_string(), 0), ("e".to_string(), 1)];
        let from: RangeBound = r#"{"e":{"1":5}}"#.parse().unwrap();
        let never = |_: &[TopicPartition], _: i64| -> Result<Vec<Option<i64>>> {
            panic!("no timestamp lookup for offsets")
        };
        assert_eq!(
            resolve(&never, &parts, &from, OffsetSpec::Earliest).unwrap(),
            [OffsetSpec::Earliest, OffsetSpec::Offset(5)]
        );
    }
}
