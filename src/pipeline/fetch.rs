//! The consumer thread: polls librdkafka, decodes messages straight from its
//! buffers into Arrow chunks per table, and hands them to the buffer stage.
//!
//! It is a plain thread, not a tokio task, because librdkafka serves the
//! rebalance callback from `poll`, and that callback blocks on the Delta log
//! to read stored offsets before any fetch starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::rebalance::Rebalancer;
use super::{Chunk, FetchEvent, PipelineError};
use crate::config::OffsetSpec;
use crate::decode::{assemble, JsonDecoder, KafkaRecord, Rejection};
use crate::observability::events::{MessageRejected, MessagesConsumed};
use crate::observability::{InternalEvent, Metrics};
use crate::schema::TableLayout;
use crate::source::{to_rd_offset, InletContext, TopicPartition};

/// The consumer type of the pipeline.
pub type InletConsumer = BaseConsumer<InletContext<Arc<Rebalancer>>>;

/// A chunk is decoded when its first message has waited this long (or it is full).
const CHUNK_LINGER: Duration = Duration::from_millis(100);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// What the consumer thread needs.
pub struct FetchLoop {
    /// The consumer, shared with the committer for advisory offset commits.
    pub consumer: Arc<InletConsumer>,
    /// Per table: layout and decoder, in router order.
    pub tables: Vec<(TableLayout, JsonDecoder)>,
    /// Per table: whether rejected messages go to a quarantine table.
    pub quarantine: Vec<bool>,
    /// Stage output.
    pub events: mpsc::Sender<FetchEvent>,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: Arc<AtomicBool>,
    /// Set by the committer when a batch was fenced: positions must be re-read.
    pub resync: Arc<AtomicBool>,
    /// Metrics and run totals.
    pub metrics: Arc<Metrics>,
    /// `--available-now`: stop at these offsets (high watermarks at start).
    pub targets: Option<HashMap<TopicPartition, i64>>,
    /// Messages per chunk: at most [`crate::decode::MAX_CHUNK`], and at most
    /// `flush.max_rows` so that a commit overshoots its row limit by less than
    /// one chunk.
    pub chunk_messages: usize,
    /// Progress of a bounded run.
    pub(super) progress: Option<super::progress::Progress>,
}

/// Messages of one table waiting to be decoded.
struct Pending<'c> {
    messages: Vec<BorrowedMessage<'c>>,
}

impl FetchLoop {
    fn rebalancer(&self) -> &Arc<Rebalancer> {
        self.consumer.context().handler()
    }

    /// Polls until shutdown, the end of `--available-now`, or a fatal error.
    pub fn run(&mut self) -> Result<(), PipelineError> {
        let consumer = self.consumer.clone();
        let mut pending: Vec<Pending<'_>> = (0..self.tables.len())
            .map(|_| Pending {
                messages: Vec::with_capacity(self.chunk_messages),
            })
            .collect();
        let mut count = 0usize;
        let mut chunk_started: Option<Instant> = None;
        let mut generation = self.rebalancer().generation();
        let mut done: HashMap<TopicPartition, bool> = HashMap::new();
        if let Some(targets) = &self.targets {
            done = targets.keys().map(|tp| (tp.clone(), false)).collect();
        }
        // Topic → table, cached here so the hot loop takes no lock.
        let mut routes: HashMap<String, Option<usize>> = HashMap::new();
        loop {
            if let Some(msg) = self.rebalancer().take_fatal() {
                let _ = self.events.blocking_send(FetchEvent::Fatal(msg.clone()));
                return Err(PipelineError::Kafka(msg));
            }
            if self.resync.swap(false, Ordering::AcqRel) {
                self.resync_positions(&consumer)?;
            }
            let stop = self.shutdown.load(Ordering::Acquire)
                || (self.targets.is_some() && done.values().all(|d| *d));
            if stop {
                if let Some(p) = &mut self.progress {
                    p.finish();
                }
                self.decode_and_send(&mut pending, generation)?;
                let _ = self.events.blocking_send(FetchEvent::End);
                return Ok(());
            }
            let polled = consumer.poll(POLL_TIMEOUT);
            let now_gen = self.rebalancer().generation();
            if now_gen != generation {
                // Messages polled before the rebalance belong to the old
                // assignment: the new one restarts from the table's offsets.
                for p in &mut pending {
                    p.messages.clear();
                }
                count = 0;
                chunk_started = None;
                generation = now_gen;
            }
            match polled {
                None => {
                    if count > 0 {
                        self.decode_and_send(&mut pending, generation)?;
                        count = 0;
                        chunk_started = None;
                    }
                    if self.targets.is_some() {
                        self.check_positions(&consumer, &mut done);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    // librdkafka retries broker errors itself; they are transient.
                    warn!(error = %e, "consumer error");
                    continue;
                }
                Some(Ok(msg)) => {
                    let topic = msg.topic();
                    let table = match routes.get(topic) {
                        Some(t) => *t,
                        None => {
                            let t = self.rebalancer().router().table_for(topic);
                            routes.insert(topic.to_string(), t);
                            t
                        }
                    };
                    let Some(table) = table else {
                        debug!(topic, "message of a topic no source reads");
                        continue;
                    };
                    if let Some(targets) = &self.targets {
                        let tp = (topic.to_string(), msg.partition());
                        let Some(&target) = targets.get(&tp) else {
                            continue;
                        };
                        if msg.offset() >= target {
                            // Beyond the snapshot taken at start: the next run's.
                            self.mark_done(&consumer, &mut done, tp);
                            continue;
                        }
                        if msg.offset() + 1 >= target {
                            self.mark_done(&consumer, &mut done, tp);
                        }
                    }
                    if let Some(p) = &mut self.progress {
                        p.advance(topic, msg.partition(), msg.offset());
                    }
                    pending[table].messages.push(msg);
                    count += 1;
                    chunk_started.get_or_insert_with(Instant::now);
                }
            }
            if count >= self.chunk_messages
                || chunk_started.is_some_and(|t| t.elapsed() >= CHUNK_LINGER)
            {
                self.decode_and_send(&mut pending, generation)?;
                count = 0;
                chunk_started = None;
            }
        }
    }

    fn mark_done(
        &self,
        consumer: &InletConsumer,
        done: &mut HashMap<TopicPartition, bool>,
        tp: TopicPartition,
    ) {
        if let Some(d) = done.get_mut(&tp) {
            if !*d {
                *d = true;
                info!(topic = %tp.0, partition = tp.1, "partition reached its end offset");
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&tp.0, tp.1);
                let _ = consumer.pause(&tpl);
            }
        }
    }

    /// `--available-now`: a partition is done once its fetch position reaches
    /// the target (covers control records and compacted gaps at the end).
    fn check_positions(&self, consumer: &InletConsumer, done: &mut HashMap<TopicPartition, bool>) {
        let Some(targets) = &self.targets else {
            return;
        };
        let Ok(pos) = consumer.position() else {
            return;
        };
        for e in pos.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if let (Offset::Offset(o), Some(&t)) = (e.offset(), targets.get(&tp)) {
                if o >= t {
                    self.mark_done(consumer, done, tp);
                }
            }
        }
    }

    /// A batch was fenced: drop everything buffered and restart every
    /// assigned partition from the offsets now in the table.
    fn resync_positions(&self, consumer: &InletConsumer) -> Result<(), PipelineError> {
        let assignment = consumer
            .assignment()
            .map_err(|e| PipelineError::Kafka(e.to_string()))?;
        let parts = crate::source::kafka::partitions(&assignment);
        let reb = self.rebalancer();
        reb.bump();
        let starts = reb.start_offsets(&parts).map_err(PipelineError::Kafka)?;
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in parts.iter().zip(starts) {
            let s = if let (Some(targets), OffsetSpec::Offset(o)) = (&self.targets, s) {
                // Keep done partitions paused at their end.
                if targets.get(&(t.clone(), *p)).is_some_and(|&hw| o >= hw) {
                    continue;
                }
                s
            } else {
                s
            };
            tpl.add_partition_offset(t, *p, to_rd_offset(s))
                .map_err(|e| PipelineError::Kafka(e.to_string()))?;
        }
        info!(
            partitions = tpl.count(),
            "re-reading positions from the table"
        );
        consumer
            .assign(&tpl)
            .map_err(|e| PipelineError::Kafka(e.to_string()))
    }

    /// Decodes the pending messages of every table and sends the chunks.
    fn decode_and_send(
        &mut self,
        pending: &mut [Pending<'_>],
        generation: u64,
    ) -> Result<(), PipelineError> {
        let mut good = Vec::new();
        let mut rejected: Vec<Rejection> = Vec::new();
        for (table, p) in pending.iter_mut().enumerate() {
            if p.messages.is_empty() {
                continue;
            }
            let (layout, decoder) = &mut self.tables[table];
            // One small vector per chunk, borrowing librdkafka's buffers.
            let values: Vec<Option<&[u8]>> =
                p.messages.iter().map(|m| KafkaRecord::value(m)).collect();
            rejected.clear();
            let decoded = decoder
                .decode(&values, &mut good, &mut rejected)
                .map_err(|e| PipelineError::Internal(format!("decoder: {e}")))?;
            let batch = assemble(layout, &decoded, &p.messages, &good)
                .map_err(|e| PipelineError::Internal(format!("assembling batch: {e}")))?;
            for r in &rejected {
                let m = &p.messages[r.index];
                MessageRejected {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    stage: r.stage,
                    reason: &r.reason,
                }
                .emit(&self.metrics);
            }
            // Per topic: messages, value bytes, rows. Usually one topic per
            // table, so a short vector beats a map.
            let mut by_topic: Vec<(&str, u64, u64, u64)> = Vec::new();
            let mut good_iter = good.iter().peekable();
            for (i, m) in p.messages.iter().enumerate() {
                let is_good = good_iter.peek() == Some(&&i);
                if is_good {
                    good_iter.next();
                }
                let bytes = KafkaRecord::value(m).map_or(0, |v| v.len() as u64);
                let topic = KafkaRecord::topic(m);
                match by_topic.iter_mut().find(|(t, ..)| *t == topic) {
                    Some(e) => {
                        e.1 += 1;
                        e.2 += bytes;
                        e.3 += u64::from(is_good);
                    }
                    None => by_topic.push((topic, 1, bytes, u64::from(is_good))),
                }
            }
            for (topic, count, bytes, _) in &by_topic {
                MessagesConsumed {
                    topic,
                    count: *count,
                    bytes: *bytes,
                }
                .emit(&self.metrics);
            }
            let quarantine = if self.quarantine[table] && !rejected.is_empty() {
                Some(
                    crate::quarantine::rows(&p.messages, &rejected)
                        .map_err(|e| PipelineError::Internal(format!("quarantine rows: {e}")))?,
                )
            } else {
                None
            };
            let rows_by_topic = by_topic
                .iter()
                .map(|(t, _, _, rows)| (t.to_string(), *rows))
                .collect();
            let mut progress: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
            for m in &p.messages {
                let e = progress
                    .entry((m.topic().to_string(), m.partition()))
                    .or_insert((m.offset(), m.offset()));
                e.0 = e.0.min(m.offset());
                e.1 = e.1.max(m.offset());
            }
            let chunk = Chunk {
                table,
                generation,
                batch,
                progress,
                rejected: rejected.len(),
                rows_by_topic,
                quarantine,
            };
            p.messages.clear();
            if self.events.blocking_send(FetchEvent::Chunk(chunk)).is_err() {
                return Err(PipelineError::Internal("buffer stage stopped".into()));
            }
        }
        Ok(())
    }
}
