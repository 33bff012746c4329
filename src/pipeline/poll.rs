//! The consumer side's poll thread: pause/resume, assignment, positions and
//! the ends of bounded runs.
//!
//! The poll thread polls librdkafka, routes messages to tables and cuts them
//! into chunks for the decode thread ([`super::decode`]), which it starts.
//! Polling and decoding overlap; the chunk queue between them is short, so
//! memory stays bounded.
//!
//! The poll thread is a plain thread, not a tokio task, because librdkafka
//! serves the rebalance callback from `poll`, and that callback blocks on the
//! Delta log to read stored offsets before any fetch starts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::SendTimeoutError;
use rdkafka::consumer::{BaseConsumer, Consumer, RebalanceProtocol};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::completion::{Completion, Verdict};
use super::decode::{DecodeStage, TableDecode};
use super::ends::{AtEnd, RangeEnds};
use super::messages::{Drained, FetchEvent, RawChunk};
use super::ownership::Ownership;
use super::rebalance::Rebalancer;
use super::PipelineError;
use crate::config::OffsetSpec;
use crate::fault::Shutdown;
use crate::observability::events::{ConsumerPaused, ConsumerResumed};
use crate::observability::{InternalEvent, Metrics};
use crate::record::{KafkaRecord, TopicPartition};
use crate::source::kafka::WATERMARK_TIMEOUT;
use crate::source::{to_rd_offset, InletContext};

/// The consumer type of the pipeline.
pub(super) type InletConsumer = BaseConsumer<InletContext<Arc<Rebalancer>>>;

/// A chunk is decoded when its first message has waited this long (or it is full).
const CHUNK_LINGER: Duration = Duration::from_millis(100);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long re-positioning partitions by seeking may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the consumer thread needs.
pub(super) struct FetchLoop {
    /// The consumer, shared with the committer for advisory offset commits.
    pub consumer: Arc<InletConsumer>,
    /// Per table, in router order: how its messages become rows.
    pub tables: Vec<TableDecode>,
    /// Per table: whether rejected messages go to a quarantine table.
    pub quarantine: Vec<bool>,
    /// Stage output.
    pub events: mpsc::Sender<FetchEvent>,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: Shutdown,
    /// Set by the committer when a batch was fenced: positions must be re-read.
    pub resync: Arc<AtomicBool>,
    /// A bounded run's range: checked against the table before the run ends.
    pub completion: Arc<Mutex<Completion>>,
    /// Metrics and run totals.
    pub metrics: Arc<Metrics>,
    /// `--available-now`: stop at these offsets (high watermarks at start).
    pub targets: Option<HashMap<TopicPartition, i64>>,
    /// Messages per chunk: see [`chunk_messages`].
    pub chunk_messages: usize,
    /// Progress of a bounded run.
    pub(super) progress: Option<super::progress::Progress>,
    /// The poll thread pauses its partitions once the decode thread has
    /// taken nothing for this long (see [`pause_after`]).
    pub pause_after: Duration,
}

/// Messages per chunk for `flush.max_rows`: at most
/// [`crate::decode::MAX_CHUNK`], and an even share of `max_rows`, so that
/// full chunks fill a commit to `max_rows` (exactly when the share divides
/// it, else with fewer extra rows than chunks) instead of overshooting it
/// by up to a chunk (`max_rows = 10000` in chunks of 8,192 made commits of
/// 16,384 rows).
pub(super) fn chunk_messages(max_rows: usize) -> usize {
    let max_rows = max_rows.max(1);
    max_rows.div_ceil(max_rows.div_ceil(crate::decode::MAX_CHUNK))
}

/// How long the poll thread waits on a stalled pipeline before it pauses its
/// partitions: well inside `max.poll.interval.ms` (librdkafka's default 300 s)
/// and long enough that a slow commit under load does not pause.
pub(super) fn pause_after(kafka: &std::collections::BTreeMap<String, String>) -> Duration {
    let max_poll = kafka
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_millis((max_poll / 3).clamp(100, 5_000))
}

/// Marks a partition of a bounded run done and pauses it; true when it was
/// not done before.
fn mark_done(consumer: &InletConsumer, ends: &mut RangeEnds, topic: &str, partition: i32) -> bool {
    if !ends.mark_done(topic, partition) {
        return false;
    }
    info!(topic, partition, "partition reached its end offset");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let _ = consumer.pause(&tpl);
    true
}

/// Housekeeping runs every this many messages (and on every empty poll).
const CHECK_EVERY: u32 = 64;

/// The messages of one partition being polled one after another.
struct Run {
    /// librdkafka's topic handle: compared, never dereferenced.
    topic: *mut rdkafka::types::RDKafkaTopic,
    partition: i32,
    topic_idx: usize,
    /// The table the topic feeds.
    table: Option<usize>,
    /// End of a bounded run's range (`i64::MAX` when unbounded); `None`
    /// when the partition is not in the range.
    end: Option<i64>,
    /// Last offset of the run taken.
    last: Option<i64>,
}

/// Messages of one table waiting to be decoded.
struct Pending<'c> {
    messages: Vec<BorrowedMessage<'c>>,
}

/// Messages pending over all tables, in chunks, before all are handed on. A
/// table's chunk goes once it is full, so that with many tables a chunk still
/// holds many rows (decoding and Parquet encoding cost per chunk and batch
/// too: with 50 tables, chunks of the whole count cut evenly held ~160 rows);
/// this bounds the librdkafka buffers held meanwhile (with the linger).
const PENDING_CHUNKS: usize = 4;

/// Chunks queued between polling and decoding: enough to keep both busy,
/// few enough to bound the librdkafka buffers held.
const RAW_QUEUE: usize = 2;

/// The poll thread's end of the queue to the decode thread.
struct Outbox<'c> {
    raw: crossbeam_channel::Sender<RawChunk<'c>>,
    consumer: &'c InletConsumer,
    /// Messages polled while the consumer was paused, taken before new polls.
    held: VecDeque<BorrowedMessage<'c>>,
    /// The generation at which every held message was still good.
    held_generation: u64,
    /// Set when the decode thread has returned (a chunk already queued is
    /// then never taken: the queue lives on with this sender).
    decoder_gone: Arc<AtomicBool>,
    /// Set once a chunk was dropped (shutdown while paused): nothing polled
    /// after it may be handed on, or its partitions' later messages would
    /// commit past the dropped ones, leaving a gap under the stored offsets.
    dropped: bool,
}

/// The assigned partitions a stall may pause: all but those a bounded run
/// has finished, which stay paused.
fn pausable(consumer: &InletConsumer, ends: &RangeEnds) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    let Ok(assignment) = consumer.assignment() else {
        return tpl;
    };
    for e in assignment.elements() {
        if !ends.is_done(e.topic(), e.partition()) {
            tpl.add_partition(e.topic(), e.partition());
        }
    }
    tpl
}

/// The poll loop's state between messages.
struct PollState<'c> {
    /// Per table: messages waiting to be decoded.
    pending: Vec<Pending<'c>>,
    /// Messages pending, over all tables.
    count: usize,
    /// When the first pending message was polled.
    chunk_started: Option<Instant>,
    /// The assignment generation the pending messages were polled in.
    generation: u64,
    /// Where a bounded run's partitions end, and which are done.
    ends: RangeEnds,
    /// Topic → table, cached here so the hot loop takes no lock.
    routes: HashMap<String, Option<usize>>,
    /// Topic names, by the index a [`Run`] keeps.
    names: Vec<String>,
    /// The run of messages of one partition being polled.
    run: Option<Run>,
    /// Messages since the last housekeeping.
    since_check: u32,
}

/// What the housekeeping between messages decided.
enum Housekeeping {
    /// Poll on.
    Go,
    /// A bounded run reads partitions again: poll on, housekeeping later.
    ReadAgain,
    /// Stop polling.
    Stop,
}

/// How the poll loop ended.
enum Stopped {
    /// Shutdown or the end of a bounded run: the buffer stage gets `End`.
    Done,
}

impl FetchLoop {
    fn rebalancer(&self) -> &Arc<Rebalancer> {
        self.consumer.context().handler()
    }

    /// Polls and decodes until shutdown, the end of `--available-now`, or a
    /// fatal error.
    pub(super) fn run(&mut self) -> Result<(), PipelineError> {
        let consumer = self.consumer.clone();
        let mut stage = DecodeStage {
            tables: std::mem::take(&mut self.tables),
            quarantine: std::mem::take(&mut self.quarantine),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        };
        let tables = stage.tables.len();
        let (polled, decoded) = std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::bounded::<RawChunk<'_>>(RAW_QUEUE);
            let decoder_gone = Arc::new(AtomicBool::new(false));
            let gone = decoder_gone.clone();
            let decoder = std::thread::Builder::new()
                .name("inlet-decode".into())
                .spawn_scoped(scope, move || {
                    let result = stage.run(rx);
                    gone.store(true, Ordering::Release);
                    result
                });
            let decoder = match decoder {
                Ok(d) => d,
                Err(e) => {
                    return (
                        Err(PipelineError::internal_by(
                            format!("spawning decode thread: {e}"),
                            e,
                        )),
                        Ok(()),
                    )
                }
            };
            let mut out = Outbox {
                raw: tx,
                consumer: &consumer,
                held: VecDeque::new(),
                held_generation: self.rebalancer().generation(),
                decoder_gone,
                dropped: false,
            };
            let polled = self.poll_loop(&consumer, tables, &mut out);
            // Closing the queue lets the decode thread finish what it holds.
            drop(out);
            let decoded = decoder
                .join()
                .unwrap_or_else(|_| Err(PipelineError::Internal("decode thread panicked".into())));
            (polled, decoded)
        });
        // A decode failure is the cause when both failed (the poll loop
        // only saw the queue close).
        decoded?;
        match polled? {
            Stopped::Done => {
                // Every chunk is with the buffer stage by now.
                let _ = self.events.blocking_send(FetchEvent::End);
                Ok(())
            }
        }
    }

    /// Polls, routes and cuts chunks for the decode thread.
    ///
    /// Per message this only compares the message's partition with the run
    /// of messages it follows (librdkafka hands out a partition's messages in
    /// runs): routing, range ends and progress are looked up once per run,
    /// and the housekeeping (fatal errors, resync, shutdown, chunk linger)
    /// runs every [`CHECK_EVERY`] messages and whenever a poll comes back
    /// empty. Per-message clock reads, locks and hash lookups were a
    /// measurable share of this thread.
    fn poll_loop<'c>(
        &mut self,
        consumer: &'c InletConsumer,
        tables: usize,
        out: &mut Outbox<'c>,
    ) -> Result<Stopped, PipelineError> {
        let mut st = PollState {
            pending: (0..tables)
                .map(|_| Pending {
                    messages: Vec::with_capacity(self.chunk_messages),
                })
                .collect(),
            count: 0,
            chunk_started: None,
            generation: self.rebalancer().generation(),
            // `--available-now`/replay: where each partition ends.
            ends: RangeEnds::new(self.targets.as_ref()),
            routes: HashMap::new(),
            names: Vec::new(),
            run: None,
            since_check: CHECK_EVERY,
        };
        loop {
            if st.since_check >= CHECK_EVERY {
                st.since_check = 0;
                match self.housekeeping(consumer, out, &mut st)? {
                    Housekeeping::Stop => return Ok(Stopped::Done),
                    Housekeeping::ReadAgain => continue,
                    Housekeeping::Go => {}
                }
            }
            // Messages polled while paused come first, in their order.
            if !out.held.is_empty() {
                self.follow_generation(&mut st, out);
            }
            let polled = match out.held.pop_front() {
                Some(m) => Some(Ok(m)),
                None => {
                    let polled = consumer.poll(POLL_TIMEOUT);
                    // The rebalance callback runs inside `poll`.
                    self.follow_generation(&mut st, out);
                    polled
                }
            };
            match polled {
                None => self.idle(consumer, out, &mut st)?,
                Some(Err(e)) => {
                    if self.consumer_error(&e) {
                        st.since_check = CHECK_EVERY;
                    }
                }
                Some(Ok(msg)) => {
                    st.since_check += 1;
                    self.take(consumer, out, &mut st, msg)?;
                }
            }
        }
    }

    /// The poll loop's checks between messages: fatal errors, resync,
    /// the end of a bounded run, shutdown, chunk linger.
    fn housekeeping<'c>(
        &mut self,
        consumer: &'c InletConsumer,
        out: &mut Outbox<'c>,
        st: &mut PollState<'c>,
    ) -> Result<Housekeeping, PipelineError> {
        if let Some(e) = self.rebalancer().take_fatal() {
            // The buffer stage stops; this thread's error is the cause.
            let stopped = super::CONSUMER_STOPPED.to_string();
            let _ = self.events.blocking_send(FetchEvent::Fatal(stopped));
            return Err(e);
        }
        if self.resync.swap(false, Ordering::AcqRel) {
            if matches!(
                consumer.rebalance_protocol(),
                RebalanceProtocol::Cooperative
            ) {
                // Only the stale partitions; the others keep flowing (their
                // pending and held messages are checked on the next poll).
                self.reread_stale(consumer)?;
            } else {
                self.resync_positions(consumer, &mut st.ends)?;
                // Held messages belong to the positions just replaced.
                out.held.clear();
                out.held_generation = self.rebalancer().generation();
                st.run = None;
            }
        }
        let reached = st.ends.all_done();
        if reached && !self.shutdown.is_triggered() {
            // Every position is at its end; the run ends only once
            // the table holds the whole range.
            self.end_run(st.run.take(), &st.names);
            self.send_pending(st, out)?;
            if self.settle(consumer, out, st.generation, &mut st.ends)? {
                st.generation = self.rebalancer().generation();
                return Ok(Housekeeping::ReadAgain);
            }
        }
        if self.shutdown.is_triggered() || reached {
            self.end_run(st.run.take(), &st.names);
            if let Some(p) = &mut self.progress {
                p.finish();
            }
            self.send_pending(st, out)?;
            return Ok(Housekeeping::Stop);
        }
        if st
            .chunk_started
            .is_some_and(|t| t.elapsed() >= CHUNK_LINGER)
        {
            self.send_pending(st, out)?;
        }
        Ok(Housekeeping::Go)
    }

    /// Messages polled before a change of positions (a rebalance, a re-read)
    /// are dropped where their partition moved: the new positions restart
    /// from the table's offsets. Those of the other partitions stay.
    fn follow_generation(&self, st: &mut PollState<'_>, out: &mut Outbox<'_>) {
        let now = self.rebalancer().generation();
        if now == st.generation && now == out.held_generation {
            return;
        }
        self.rebalancer().fence().with(|o| {
            let now = o.generation();
            if st.generation != now {
                let mut count = 0;
                for p in &mut st.pending {
                    p.messages.retain(still_good(o, st.generation));
                    count += p.messages.len();
                }
                st.count = count;
                if count == 0 {
                    st.chunk_started = None;
                }
                st.generation = now;
                st.run = None;
            }
            if out.held_generation != now {
                out.held.retain(still_good(o, out.held_generation));
                out.held_generation = now;
            }
        });
    }

    /// A poll came back empty: hands on what is pending and, in a bounded
    /// run, looks for partitions whose position reached their end.
    fn idle<'c>(
        &mut self,
        consumer: &'c InletConsumer,
        out: &mut Outbox<'c>,
        st: &mut PollState<'c>,
    ) -> Result<(), PipelineError> {
        st.since_check = CHECK_EVERY;
        self.end_run(st.run.take(), &st.names);
        if st.count > 0 {
            self.send_pending(st, out)?;
        }
        if st.ends.bounded() {
            self.check_positions(consumer, &mut st.ends);
        }
        Ok(())
    }

    /// Takes one polled message into its table's pending chunk, unless no
    /// table reads it or it is beyond its partition's range.
    fn take<'c>(
        &mut self,
        consumer: &'c InletConsumer,
        out: &mut Outbox<'c>,
        st: &mut PollState<'c>,
        msg: BorrowedMessage<'c>,
    ) -> Result<(), PipelineError> {
        let (partition, offset) = (msg.partition(), msg.offset());
        if !st
            .run
            .as_ref()
            .is_some_and(|r| r.topic == msg.topic_ptr() && r.partition == partition)
        {
            self.end_run(st.run.take(), &st.names);
            st.run = Some(self.start_run(st, &msg));
        }
        let Some(r) = st.run.as_mut() else {
            return Ok(());
        };
        let (Some(table), Some(end)) = (r.table, r.end) else {
            // No table reads the topic, or the partition is outside a
            // bounded run's range.
            return Ok(());
        };
        let at = AtEnd::of(offset, end);
        if at.ends_partition() {
            let topic = &st.names[r.topic_idx];
            if mark_done(consumer, &mut st.ends, topic, partition) {
                st.since_check = CHECK_EVERY;
            }
            if !at.taken() {
                // Beyond the end of the range: the next run's.
                return Ok(());
            }
        }
        r.last = Some(offset);
        let pending = &mut st.pending[table].messages;
        pending.push(msg);
        let full = pending.len() >= self.chunk_messages;
        st.count += 1;
        if st.count == 1 {
            st.chunk_started = Some(Instant::now());
        }
        if full {
            self.send_table(st, out, table)?;
        } else if st.count >= self.chunk_messages * PENDING_CHUNKS {
            self.send_pending(st, out)?;
        }
        Ok(())
    }

    /// Hands one table's full chunk to the decode thread.
    fn send_table<'c>(
        &self,
        st: &mut PollState<'c>,
        out: &mut Outbox<'c>,
        table: usize,
    ) -> Result<(), PipelineError> {
        let n = st.pending[table].messages.len();
        self.send_raw(&mut st.pending, Some(table), st.generation, out, &st.ends)?;
        st.count -= n;
        if st.count == 0 {
            // Otherwise the linger stays that of older pending messages.
            st.chunk_started = None;
        }
        Ok(())
    }

    /// A run of messages of a partition begins: its table and range end,
    /// looked up once for the run.
    fn start_run(&self, st: &mut PollState<'_>, msg: &BorrowedMessage<'_>) -> Run {
        let topic = msg.topic();
        let partition = msg.partition();
        let topic_idx = match st.names.iter().position(|n| n == topic) {
            Some(i) => i,
            None => {
                st.names.push(topic.to_string());
                st.names.len() - 1
            }
        };
        let table = match st.routes.get(topic) {
            Some(t) => *t,
            None => {
                let t = self.rebalancer().router().table_for(topic);
                st.routes.insert(topic.to_string(), t);
                t
            }
        };
        if table.is_none() {
            debug!(topic, "messages of a topic no source reads");
        }
        Run {
            topic: msg.topic_ptr(),
            partition,
            topic_idx,
            table,
            end: st.ends.end(topic, partition),
            last: None,
        }
    }

    /// Hands everything pending to the decode thread.
    fn send_pending<'c>(
        &self,
        st: &mut PollState<'c>,
        out: &mut Outbox<'c>,
    ) -> Result<(), PipelineError> {
        self.send_raw(&mut st.pending, None, st.generation, out, &st.ends)?;
        st.count = 0;
        st.chunk_started = None;
        Ok(())
    }

    /// Reports how far a finished run of one partition's messages got.
    fn end_run(&mut self, run: Option<Run>, names: &[String]) {
        if let (Some(p), Some(r)) = (&mut self.progress, run) {
            if let Some(last) = r.last {
                p.advance(&names[r.topic_idx], r.partition, last);
            }
        }
    }

    /// Hands every table's pending messages (or only table `only`'s) to the
    /// decode thread, pausing the consumer while the decode thread takes
    /// nothing for longer than `pause_after`.
    fn send_raw<'c>(
        &self,
        pending: &mut [Pending<'c>],
        only: Option<usize>,
        generation: u64,
        out: &mut Outbox<'c>,
        ends: &RangeEnds,
    ) -> Result<(), PipelineError> {
        if out.dropped {
            for p in pending.iter_mut() {
                p.messages.clear();
            }
            return Ok(());
        }
        for (table, p) in pending.iter_mut().enumerate() {
            if p.messages.is_empty() || only.is_some_and(|t| t != table) {
                continue;
            }
            let messages =
                std::mem::replace(&mut p.messages, Vec::with_capacity(self.chunk_messages));
            let chunk = RawChunk {
                table,
                generation,
                messages,
                drain: None,
            };
            let chunk = match out.raw.send_timeout(chunk, self.pause_after) {
                Ok(()) => continue,
                Err(SendTimeoutError::Disconnected(_)) => return self.decode_stopped(),
                Err(SendTimeoutError::Timeout(chunk)) => chunk,
            };
            if !self.send_paused(chunk, out, ends)? {
                // Shutdown: the chunk is dropped, and with it everything
                // polled after it (pending, held, and what later polls
                // bring): none of it is committed, so the stored offsets
                // stay below the first dropped message.
                out.dropped = true;
                out.held.clear();
                for p in pending.iter_mut() {
                    p.messages.clear();
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// Handles a consumer error; true when positions must be re-read.
    /// librdkafka retries broker errors itself. A position out of the
    /// partition's range stops that partition's fetching (with
    /// `auto.offset.reset=error`): the positions are then re-read from the
    /// table, which checks them for data loss.
    fn consumer_error(&self, e: &rdkafka::error::KafkaError) -> bool {
        if crate::source::kafka::is_offset_out_of_range(e) {
            warn!(error = %e, "fetch position out of the partition's range; re-reading positions");
            // librdkafka does not say which partition: every one is read again.
            self.rebalancer()
                .fence()
                .restrict(Ownership::mark_all_stale);
            self.resync.store(true, Ordering::Release);
            true
        } else {
            warn!(error = %e, "consumer error");
            false
        }
    }

    /// The decode thread stopped taking chunks; it stops early only when
    /// told to stop.
    fn decode_stopped(&self) -> Result<(), PipelineError> {
        if self.shutdown.is_triggered() {
            return Ok(());
        }
        Err(PipelineError::Internal("decode thread stopped".into()))
    }

    /// The stages behind the poll thread are stalled (the decode thread
    /// waits for the registry, a commit retries against the object store):
    /// pauses the assignment and keeps polling until `chunk` is taken, so
    /// that the consumer is not thrown out of its group for exceeding
    /// `max.poll.interval.ms`. Messages polled meanwhile are kept, in order,
    /// for the poll loop: they were handed out, so dropping them would skip
    /// them. Returns false, dropping the chunk, on shutdown.
    fn send_paused<'c>(
        &self,
        mut chunk: RawChunk<'c>,
        out: &mut Outbox<'c>,
        ends: &RangeEnds,
    ) -> Result<bool, PipelineError> {
        let consumer = out.consumer;
        let paused = pausable(consumer, ends);
        if let Err(e) = consumer.pause(&paused) {
            warn!(error = %e, "pausing partitions failed");
        }
        ConsumerPaused {
            partitions: paused.count(),
            waited: self.pause_after,
        }
        .emit(&self.metrics);
        let started = Instant::now();
        let sent = loop {
            let polled = consumer.poll(Duration::ZERO);
            // A rebalance in that poll: held messages of moved partitions
            // go. The chunk goes on; later stages drop its moved rows.
            self.follow_held(out);
            match polled {
                Some(Ok(m)) => out.held.push_back(m),
                Some(Err(e)) => {
                    self.consumer_error(&e);
                }
                None => {}
            }
            if self.shutdown.is_triggered() {
                break false;
            }
            match out.raw.send_timeout(chunk, POLL_TIMEOUT) {
                Ok(()) => break true,
                Err(SendTimeoutError::Timeout(c)) => chunk = c,
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.decode_stopped()?;
                    break false;
                }
            }
        };
        // Also after a rebalance: a partition assigned again must fetch.
        if let Err(e) = consumer.resume(&paused) {
            warn!(error = %e, "resuming partitions failed");
        }
        ConsumerResumed {
            partitions: paused.count(),
            paused_for: started.elapsed(),
        }
        .emit(&self.metrics);
        Ok(sent)
    }

    /// `--available-now`: a partition is done once its fetch position reaches
    /// the target (covers control records and compacted gaps at the end).
    fn check_positions(&self, consumer: &InletConsumer, ends: &mut RangeEnds) {
        let Ok(pos) = consumer.position() else {
            return;
        };
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset() {
                if ends.reached_at(e.topic(), e.partition(), o) {
                    mark_done(consumer, ends, e.topic(), e.partition());
                }
            }
        }
    }

    /// Held messages polled before a change of positions are dropped where
    /// their partition moved.
    fn follow_held(&self, out: &mut Outbox<'_>) {
        if self.rebalancer().generation() == out.held_generation {
            return;
        }
        self.rebalancer().fence().with(|o| {
            out.held.retain(still_good(o, out.held_generation));
            out.held_generation = o.generation();
        });
    }

    /// Incremental rebalancing: partitions were marked stale (their rows
    /// dropped with a fenced or dropped batch, or a position out of range):
    /// only those restart, by a seek, from the offsets now in the table.
    /// The fence moves first, under the gate, so that no batch of their old
    /// positions can commit after the offsets are read.
    fn reread_stale(&self, consumer: &InletConsumer) -> Result<(), PipelineError> {
        let reb = self.rebalancer();
        let stale = reb.fence().with(Ownership::stale);
        if stale.is_empty() {
            return Ok(());
        }
        reb.reread(&stale);
        let watermarks = |t: &str, p: i32| consumer.fetch_watermarks(t, p, WATERMARK_TIMEOUT);
        let starts = reb.start_offsets(&stale, &watermarks)?;
        let mut tpl = TopicPartitionList::new();
        for ((t, p), s) in stale.iter().zip(starts) {
            tpl.add_partition_offset(t, *p, to_rd_offset(s))
                .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
        }
        info!(
            partitions = tpl.count(),
            "re-reading positions from the table"
        );
        let sought = consumer
            .seek_partitions(tpl, SEEK_TIMEOUT)
            .map_err(|e| PipelineError::kafka_by(format!("seek: {e}"), e))?;
        for e in sought.elements() {
            if let Err(err) = e.error() {
                return Err(PipelineError::kafka_by(
                    format!("seek {}/{}: {err}", e.topic(), e.partition()),
                    err,
                ));
            }
        }
        Ok(())
    }

    /// A batch was fenced, or a position fell out of range: drop everything
    /// buffered and restart every assigned partition from the offsets now
    /// in the table. A bounded run's partitions whose stored offsets are at
    /// their ends stay done, and paused.
    fn resync_positions(
        &self,
        consumer: &InletConsumer,
        ends: &mut RangeEnds,
    ) -> Result<(), PipelineError> {
        let assignment = consumer
            .assignment()
            .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
        let parts = crate::source::kafka::partitions(&assignment);
        let reb = self.rebalancer();
        reb.reread_all();
        let watermarks = |t: &str, p: i32| consumer.fetch_watermarks(t, p, WATERMARK_TIMEOUT);
        let starts = reb.start_offsets(&parts, &watermarks)?;
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for ((t, p), s) in parts.iter().zip(starts) {
            if let OffsetSpec::Offset(o) = s {
                // Keep done partitions paused at their end.
                if ends.reached_at(t, *p, o) {
                    done.push((t.clone(), *p));
                    continue;
                }
            }
            tpl.add_partition_offset(t, *p, to_rd_offset(s))
                .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
        }
        info!(
            partitions = tpl.count(),
            "re-reading positions from the table"
        );
        reopen(consumer, &tpl, ends)?;
        for (t, p) in done {
            mark_done(consumer, ends, &t, p);
        }
        Ok(())
    }

    /// A bounded run read every partition to its end: waits until all of it
    /// is committed or dropped, re-reads the stored offsets and decides
    /// (see [`Completion`]). True when partitions are read again.
    fn settle<'c>(
        &self,
        consumer: &InletConsumer,
        out: &mut Outbox<'c>,
        generation: u64,
        ends: &mut RangeEnds,
    ) -> Result<bool, PipelineError> {
        if !self.drain(out, generation)? {
            return Ok(false);
        }
        // The check below re-reads every partition from the table.
        self.resync.store(false, Ordering::Release);
        let parts = self
            .completion
            .lock()
            .expect("completion lock")
            .partitions();
        let stored = self
            .rebalancer()
            .stored_offsets(&parts)
            .map_err(|e| PipelineError::delta_by(e.to_string(), e))?;
        let stored = parts.into_iter().zip(stored).collect();
        let verdict = self
            .completion
            .lock()
            .expect("completion lock")
            .check(&stored);
        match verdict {
            Verdict::Complete => Ok(false),
            Verdict::Incomplete(unfinished) => Err(PipelineError::Incomplete(unfinished)),
            Verdict::Refetch(parts) => {
                // A new generation: the committer drops batches of the one
                // a fence happened in.
                self.rebalancer().reread_all();
                let mut tpl = TopicPartitionList::new();
                for ((t, p), from) in &parts {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*from))
                        .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
                }
                info!(
                    partitions = parts.len(),
                    "bounded run: fetching again what is not in the table"
                );
                reopen(consumer, &tpl, ends)?;
                Ok(true)
            }
        }
    }

    /// Sends a drain token behind every chunk and waits for the committer's
    /// answer; false when shutdown came first.
    fn drain(&self, out: &mut Outbox<'_>, generation: u64) -> Result<bool, PipelineError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let token = RawChunk {
            table: 0,
            generation,
            messages: Vec::new(),
            drain: Some(Drained(tx)),
        };
        if out.raw.send(token).is_err() {
            self.decode_stopped()?;
            return Ok(false);
        }
        loop {
            match rx.recv_timeout(POLL_TIMEOUT) {
                Ok(()) => return Ok(true),
                Err(_) if self.shutdown.is_triggered() => return Ok(false),
                // A decode failure: its error is the run's (see `run`).
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if out.decoder_gone.load(Ordering::Acquire) =>
                {
                    self.decode_stopped()?;
                    return Ok(false);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // The stage that failed reports why.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PipelineError::Internal("commit stage stopped".into()))
                }
            }
        }
    }
}

/// Whether a message polled at generation `stamp` is still good: its
/// partition is owned at the position it was read from. Decided once per
/// run of one partition's messages.
fn still_good<'o>(
    owned: &'o Ownership,
    stamp: u64,
) -> impl FnMut(&BorrowedMessage<'_>) -> bool + 'o {
    let mut last: Option<(*mut rdkafka::types::RDKafkaTopic, i32, bool)> = None;
    move |m| {
        let (topic, partition) = (m.topic_ptr(), m.partition());
        match last {
            Some((t, p, good)) if t == topic && p == partition => good,
            _ => {
                let good = owned.admits_parts(m.topic(), partition, stamp);
                last = Some((topic, partition, good));
                good
            }
        }
    }
}

/// Assigns `tpl` (resumed: finished partitions were paused), and marks its
/// partitions of a bounded run not done again.
fn reopen(
    consumer: &InletConsumer,
    tpl: &TopicPartitionList,
    ends: &mut RangeEnds,
) -> Result<(), PipelineError> {
    consumer
        .assign(tpl)
        .map_err(|e| PipelineError::kafka_by(e.to_string(), e))?;
    if let Err(e) = consumer.resume(tpl) {
        warn!(error = %e, "resuming partitions failed");
    }
    for e in tpl.elements() {
        ends.reopen(e.topic(), e.partition());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::ClientConfig;

    const CONFIG: &str = r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:9092"
        group_id = "g"
        [sources.s]
        topics = ["t"]
        table = "t"
        [tables.t]
        uri = "/tmp/inlet-poll-test"
        schema = "n BIGINT"
    "#;

    /// Chunks are at most MAX_CHUNK and fill `max_rows` with less than one
    /// row per chunk over it (10,000 rows: two chunks of 5,000, not 8,192
    /// and 8,192).
    #[test]
    fn chunks_fill_max_rows_without_overshooting_by_a_chunk() {
        let max = crate::decode::MAX_CHUNK;
        for (rows, chunk) in [
            (1, 1),
            (500, 500),
            (max, max),
            (max + 1, 4097),
            (10_000, 5_000),
        ] {
            assert_eq!(chunk_messages(rows), chunk, "max_rows {rows}");
        }
        assert_eq!(chunk_messages(0), 1);
        for rows in [1, 77, 8_191, 8_193, 10_000, 16_385, 50_000, 1_000_000] {
            let chunk = chunk_messages(rows);
            assert!(chunk <= max);
            let chunks = rows.div_ceil(chunk);
            assert!(
                chunks * chunk - rows < chunks,
                "max_rows {rows}: chunks of {chunk}"
            );
        }
    }

    /// Waits up to 20 s for `cond`.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The poll loop on a real consumer (librdkafka's mock cluster), with
    /// this test in the decode thread's place: it takes two chunks' worth of
    /// queue and then nothing, so that the third chunk waits paused; SIGTERM
    /// comes then, and the chunk is dropped. The partition resumes, and the
    /// poll loop polls the messages after the dropped ones before it sees
    /// the shutdown; the queue is then taken again. Nothing of those may be
    /// handed on, or they would commit past the dropped ones: a gap under
    /// the stored offsets.
    #[test]
    fn a_chunk_dropped_at_shutdown_while_paused_takes_the_later_polls_along() {
        let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..20 {
            let payload = i.to_string();
            producer
                .send(BaseRecord::<(), _>::to("t").payload(&payload))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cfg = crate::config::load_str(CONFIG).unwrap();
        let (events, _events_rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::new());
        let rebalancer = Arc::new(Rebalancer::new(
            "app".into(),
            Arc::new(super::super::rebalance::Fence::default()),
            Arc::new(super::super::route::Router::new(&cfg)),
            Vec::new(),
            runtime.handle().clone(),
            events.clone(),
            metrics.clone(),
        ));
        let consumer: Arc<InletConsumer> = Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("group.id", "g")
                .set("enable.auto.commit", "false")
                // The mock holds an empty fetch this long: the refetch after
                // the resume must not wait behind one.
                .set("fetch.wait.max.ms", "10")
                .create_with_context(crate::source::InletContext::new(rebalancer))
                .unwrap(),
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(0)).unwrap();
        consumer.assign(&tpl).unwrap();

        let shutdown = Shutdown::new();
        let mut fetch = FetchLoop {
            consumer: consumer.clone(),
            tables: Vec::new(),
            quarantine: Vec::new(),
            events,
            shutdown: shutdown.clone(),
            resync: Arc::new(AtomicBool::new(false)),
            completion: Arc::new(Mutex::new(Completion::default())),
            metrics: metrics.clone(),
            targets: None,
            chunk_messages: 5,
            progress: None,
            pause_after: Duration::from_millis(300),
        };
        let position = || {
            let p = consumer.position().ok()?;
            match p.find_partition("t", 0)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }
        };
        let handed_on = std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::bounded::<RawChunk<'_>>(RAW_QUEUE);
            let polling = scope.spawn(|| {
                let mut out = Outbox {
                    raw: tx,
                    consumer: &consumer,
                    held: VecDeque::new(),
                    held_generation: fetch.rebalancer().generation(),
                    decoder_gone: Arc::new(AtomicBool::new(false)),
                    dropped: false,
                };
                let polled = fetch.poll_loop(&consumer, 1, &mut out);
                drop(out);
                polled.map(|_| ())
            });
            // Chunks 0–4 and 5–9 fill the queue; 10–14 waits, paused.
            wait_for("the consumer to pause", || {
                metrics.consumer_pauses.get() >= 1
            });
            shutdown.trigger();
            // 10–14 dropped, the partition resumed: 15–19 are polled.
            // librdkafka's broker thread looks at a resumed partition on its
            // next wakeup (at most a second away, longer than the poll loop
            // polls before it sees the shutdown); a request wakes it.
            wait_for("the messages after the dropped chunk to be polled", || {
                let _ = consumer.fetch_watermarks("t", 0, Duration::from_secs(5));
                polling.is_finished() || position() >= Some(20)
            });
            assert_eq!(
                position(),
                Some(20),
                "the poll loop stopped before polling past the dropped chunk"
            );
            // The stall ends: whatever is handed on now is taken.
            let until = Instant::now() + Duration::from_secs(20);
            let mut offsets = Vec::new();
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(chunk) => offsets.extend(chunk.messages.iter().map(|m| m.offset())),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    Err(e) => panic!("the poll loop did not stop: {e}"),
                }
            }
            polling.join().unwrap().unwrap();
            offsets
        });
        assert_eq!(
            handed_on,
            (0..10).collect::<Vec<i64>>(),
            "nothing polled after the dropped chunk (10–14) is handed on: it would commit past it, a gap"
        );
    }
}
