//! Broker look-ups of where partitions begin and end: watermarks, and the
//! offsets of a timestamp (offsets-for-times). What to make of them is the
//! pipeline's decision.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::record::TopicPartition;

/// How long one look-up may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A look-up the broker did not answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The watermarks of a partition.
    #[error("watermarks of {topic}/{partition}: {source}")]
    Watermarks {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The offsets of a timestamp.
    #[error("offsets for timestamp {ts}: {source}")]
    OffsetsForTime {
        /// The timestamp (epoch milliseconds).
        ts: i64,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The broker's answer left out a partition asked for.
    #[error("no offset for {topic}/{partition} at {ts}")]
    Missing {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The timestamp (epoch milliseconds).
        ts: i64,
    },
    /// The request could not be built.
    #[error("{0}")]
    Request(#[source] KafkaError),
}

/// The (low, high) watermarks of a partition.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    (topic, partition): &TopicPartition,
) -> Result<(i64, i64), LookupError> {
    consumer
        .fetch_watermarks(topic, *partition, LOOKUP_TIMEOUT)
        .map_err(|source| LookupError::Watermarks {
            topic: topic.clone(),
            partition: *partition,
            source,
        })
}

/// The broker's answer to "first offset with a timestamp at or after `ts`",
/// per partition; `None` where no message is that late.
pub fn offsets_for_time<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[TopicPartition],
    ts: i64,
) -> Result<Vec<Option<i64>>, LookupError> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, Offset::Offset(ts))
            .map_err(LookupError::Request)?;
    }
    let found = consumer
        .offsets_for_times(tpl, LOOKUP_TIMEOUT)
        .map_err(|source| LookupError::OffsetsForTime { ts, source })?;
    parts
        .iter()
        .map(|(t, p)| {
            let e = found
                .find_partition(t, *p)
                .ok_or_else(|| LookupError::Missing {
                    topic: t.clone(),
                    partition: *p,
                    ts,
                })?;
            Ok(match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
        })
        .collect()
}

/// Per partition, how far the consumer is behind the high watermark, from
/// librdkafka's statistics; partitions whose lag librdkafka does not know
/// yet are left out.
pub fn consumer_lags(
    stats: &rdkafka::statistics::Statistics,
) -> impl Iterator<Item = (&str, i32, i64)> + '_ {
    stats.topics.iter().flat_map(|(topic, t)| {
        t.partitions
            .iter()
            // -1 is librdkafka's "internal" partition and unknown lags.
            .filter(|(partition, p)| **partition >= 0 && p.consumer_lag >= 0)
            .map(move |(partition, p)| (topic.as_str(), *partition, p.consumer_lag))
    })
}
