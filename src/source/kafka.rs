//! The rdkafka consumer: client settings, the rebalance callback that sets
//! explicit start offsets, and watermark look-ups.

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tracing::{error, warn};

use crate::config::{Config, OffsetSpec};
use crate::record::{KafkaRecord, TopicPartition};

/// Looks up a partition's (low, high) watermarks on the broker.
pub type Watermarks<'a> = dyn Fn(&str, i32) -> Result<(i64, i64), KafkaError> + 'a;

/// How long a watermark look-up may take.
pub const WATERMARK_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a consumer error means a fetch position is out of the
/// partition's range (deleted under a lagging consumer, or past a truncated
/// end). With `auto.offset.reset=error` librdkafka stops fetching that
/// partition and reports this instead of jumping elsewhere in silence.
pub fn is_offset_out_of_range(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageConsumption(C::AutoOffsetReset | C::OffsetOutOfRange)
    )
}

/// Decides where newly assigned partitions start, and hears of revocations.
/// Called on the consumer's polling thread from inside the rebalance callback,
/// so the offsets are in place before the first fetch.
pub trait RebalanceHandler: Send + Sync + 'static {
    /// Start offsets for `partitions`, in the same order; `watermarks` looks
    /// up where each partition begins and ends. An error leaves the
    /// partitions unassigned and stops the consumer ([`Self::on_fatal`]).
    fn on_assign(
        &self,
        partitions: &[TopicPartition],
        watermarks: &Watermarks<'_>,
    ) -> Result<Vec<OffsetSpec>, String>;
    /// The partitions were taken away.
    fn on_revoke(&self, partitions: &[TopicPartition]);
    /// An unrecoverable error happened in the callback.
    fn on_fatal(&self, message: String);
    /// librdkafka's periodic statistics (when `statistics.interval.ms` > 0).
    fn on_stats(&self, _stats: &rdkafka::statistics::Statistics) {}
}

/// The consumer context: routes rebalances to the handler.
#[derive(Debug)]
pub struct InletContext<H> {
    handler: H,
}

impl<H> InletContext<H> {
    /// Wraps a handler.
    pub fn new(handler: H) -> Self {
        InletContext { handler }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: RebalanceHandler> ClientContext for InletContext<H> {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.handler.on_stats(&statistics);
    }
}

impl<H: RebalanceHandler> ConsumerContext for InletContext<H> {
    /// Eager protocols replace the whole assignment (`assign`, `unassign`);
    /// incremental ones (cooperative-sticky, and the consumer group
    /// protocol of KIP-848) add and take away only the partitions that move
    /// (`incremental_assign`, `incremental_unassign`). Either way new
    /// partitions start at the offsets the handler gives, set here, before
    /// any fetch.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts = partitions(tpl);
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let watermarks =
                    |t: &str, p: i32| consumer.fetch_watermarks(t, p, WATERMARK_TIMEOUT);
                match self.handler.on_assign(&parts, &watermarks) {
                    Ok(starts) => {
                        let mut with_offsets = TopicPartitionList::new();
                        for ((topic, p), start) in parts.iter().zip(starts) {
                            if let Err(e) =
                                with_offsets.add_partition_offset(topic, *p, to_rd_offset(start))
                            {
                                self.handler
                                    .on_fatal(format!("offset for {topic}/{p}: {e}"));
                                return;
                            }
                        }
                        let assigned = if incremental {
                            consumer.incremental_assign(&with_offsets)
                        } else {
                            consumer.assign(&with_offsets)
                        };
                        if let Err(e) = assigned {
                            self.handler.on_fatal(format!("assign failed: {e}"));
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "cannot resolve start offsets; not consuming");
                        let _ = if incremental {
                            consumer.incremental_unassign(tpl)
                        } else {
                            consumer.unassign()
                        };
                        self.handler.on_fatal(e);
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handler.on_revoke(&parts);
                let unassigned = if incremental {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    warn!(error = %e, "unassign failed");
                }
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                error!(error = %code, "rebalance error");
                self.handler.on_revoke(&parts);
                let _ = if incremental {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
            }
        }
    }
}

/// The partitions of a list.
pub fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// rdkafka's offset for a start position.
pub fn to_rd_offset(spec: OffsetSpec) -> Offset {
    match spec {
        OffsetSpec::Earliest => Offset::Beginning,
        OffsetSpec::Latest => Offset::End,
        OffsetSpec::Offset(o) => Offset::Offset(o),
    }
}

/// Client settings: the passthrough properties, then what inlet must own.
/// Offsets live in the Delta log, so auto commit and the offset store are off.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Sensible defaults a user may override. With the consumer group
    // protocol (KIP-848) the broker owns the session timeout, and
    // librdkafka refuses one set here.
    if !consumer_protocol(cfg) {
        c.set("session.timeout.ms", "30000");
    }
    c.set("isolation.level", "read_committed");
    // librdkafka pauses fetching a partition for this long once its
    // pre-fetch queue is full (default 1 s). inlet drains that queue more
    // slowly than a bare consumer (it decodes), so with the default it
    // idles in 1 s stalls: measured 0.19 → 0.6 of the raw consume rate.
    c.set("fetch.queue.backoff.ms", "10");
    if cfg.metrics.listen.is_some() {
        // Per-partition consumer lag for /metrics.
        c.set("statistics.interval.ms", "5000");
    }
    for (k, v) in cfg.kafka_properties() {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    c.set("group.id", &cfg.kafka.group_id);
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("enable.partition.eof", "false");
    // Starts are explicit offsets checked against the watermarks; a fetch
    // position the broker no longer (or not yet) holds is reported, never
    // reset in silence (the config refuses a user value).
    c.set("auto.offset.reset", "error");
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Whether the group uses the consumer group protocol of KIP-848
/// (`group.protocol = consumer`) rather than the classic one.
pub fn consumer_protocol(cfg: &Config) -> bool {
    cfg.kafka_properties()
        .iter()
        .any(|(k, v)| k == "group.protocol" && v.trim().eq_ignore_ascii_case("consumer"))
}

/// Whether the group rebalances incrementally (only the partitions that
/// move are revoked): the consumer group protocol, or a cooperative
/// assignor on the classic one.
pub fn incremental_rebalancing(cfg: &Config) -> bool {
    consumer_protocol(cfg)
        || cfg
            .kafka_properties()
            .get("partition.assignment.strategy")
            .is_some_and(|s| s.contains("cooperative"))
}

/// Creates a consumer with `handler` receiving rebalances.
pub fn create_consumer<H: RebalanceHandler>(
    cfg: &Config,
    handler: H,
) -> Result<BaseConsumer<InletContext<H>>, KafkaError> {
    client_config(cfg).create_with_context(InletContext::new(handler))
}

/// All partitions of the topics matching `matches`, from cluster metadata.
pub fn list_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    matches: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Result<Vec<TopicPartition>, KafkaError> {
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name().starts_with("__") || !matches(t.name()) {
            continue;
        }
        if let Some(err) = t.error() {
            warn!(topic = t.name(), error = ?err, "topic metadata error");
            continue;
        }
        for p in t.partitions() {
            out.push((t.name().to_string(), p.id()));
        }
    }
    out.sort();
    Ok(out)
}

impl KafkaRecord for BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }

    fn topic_handle(&self) -> Option<usize> {
        // Compared, never dereferenced.
        Some(self.topic_ptr() as usize)
    }

    fn partition(&self) -> i32 {
        Message::partition(self)
    }

    fn offset(&self) -> i64 {
        Message::offset(self)
    }

    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }

    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }

    fn value(&self) -> Option<&[u8]> {
        Message::payload(self)
    }

    fn for_each_header(&self, f: &mut dyn FnMut(&str, Option<&[u8]>)) {
        if let Some(h) = Message::headers(self) {
            for header in h.iter() {
                f(header.key, header.value);
            }
        }
    }
}
