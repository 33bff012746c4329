//! The decode thread: decodes each chunk straight from librdkafka's buffers
//! (the messages are borrowed, not copied) into an Arrow batch: decode →
//! normalize (transforms, conform) → keys → assemble (metadata columns) →
//! constraints → events → quarantine rows, and hands it to the buffer stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc;

use super::messages::{Chunk, FetchEvent, RawChunk};
use super::PipelineError;
use crate::config::MetadataColumns;
use crate::conform::constraints::Constraints;
use crate::conform::{assemble_with_key, KeyDecoder, KeyError, NormalizeError, Normalizer};
use crate::decode::{FramedError, Part, ValueDecoder};
use crate::fault::{Classify, Fault};
use crate::observability::events::{MessageRejected, MessagesConsumed, SchemaEvolved};
use crate::observability::{InternalEvent, Metrics};
use crate::record::{KafkaRecord, Rejection, Rejections, Stage, TopicPartition};
use crate::schema::TableLayout;

/// What a chunk held of one topic.
struct TopicStats<'a> {
    /// librdkafka's topic handle: compared, never dereferenced.
    handle: *mut rdkafka::types::RDKafkaTopic,
    name: &'a str,
    messages: u64,
    bytes: u64,
    rows: u64,
}

/// How messages of one table become its rows.
#[derive(Debug)]
pub(super) struct TableDecode {
    /// Table name.
    pub name: String,
    /// Value vs metadata columns (wider after schema evolution).
    pub layout: TableLayout,
    /// The table's metadata columns.
    pub meta: MetadataColumns,
    /// Value bytes into Arrow.
    pub decoder: ValueDecoder,
    /// Transforms and conforming to the table.
    pub normalizer: Normalizer,
    /// CHECK constraints.
    pub constraints: Constraints,
    /// Table properties, to compile the constraints again after evolution.
    pub properties: HashMap<String, String>,
    /// Longer values are rejected undecoded.
    pub max_value_bytes: usize,
    /// Decodes keys into the key column (`key_format` other than `bytes`).
    pub key: Option<KeyDecoder>,
    /// `upsert` and `changelog` modes: how rows become changes.
    pub changes: Option<super::changes::ChangeRules>,
}

impl TableDecode {
    /// The table gained columns: lay them out and recompile the constraints.
    fn evolve(&mut self, added: &[String], metrics: &Metrics) -> Result<(), PipelineError> {
        self.layout = self
            .layout
            .with_value(self.normalizer.value_schema(), &self.meta);
        self.constraints = Constraints::from_properties(&self.properties, &self.layout.table)
            .map_err(|e| PipelineError::internal_by(e.to_string(), e))?;
        SchemaEvolved {
            table: &self.name,
            columns: added,
        }
        .emit(metrics);
        Ok(())
    }
}

/// The decode thread's state.
pub(super) struct DecodeStage {
    /// Per table, in router order: how its messages become rows.
    pub tables: Vec<TableDecode>,
    /// Per table: whether rejected messages go to a quarantine table.
    pub quarantine: Vec<bool>,
    /// Stage output.
    pub events: mpsc::Sender<FetchEvent>,
    /// Metrics and run totals.
    pub metrics: Arc<Metrics>,
}

/// What stops the pipeline when a decoder of `table` fails (a shutdown
/// aside), by whose fault the failure is.
fn decode_failure(table: &str, e: FramedError) -> PipelineError {
    match e.fault() {
        Fault::Internal => PipelineError::internal_by(e.to_string(), e),
        _ => PipelineError::setup_by(format!("table `{table}`: {e}"), e),
    }
}

impl DecodeStage {
    /// Decodes chunks until the poll thread closes the queue.
    pub(super) fn run(
        &mut self,
        raw: crossbeam_channel::Receiver<RawChunk<'_>>,
    ) -> Result<(), PipelineError> {
        let mut rejected = Rejections::new();
        let mut parts = Vec::new();
        for mut p in raw {
            if let Some(token) = p.drain.take() {
                if self.events.blocking_send(FetchEvent::Drain(token)).is_err() {
                    return Err(PipelineError::Internal("buffer stage stopped".into()));
                }
                continue;
            }
            let Some(chunk) = self.decode_chunk(&p, &mut rejected, &mut parts)? else {
                // Stopping while the registry is down: this chunk and those
                // behind it are not committed, and are read again next time.
                return Ok(());
            };
            // Releases librdkafka's buffers before waiting on the buffer stage.
            drop(p);
            if self.events.blocking_send(FetchEvent::Chunk(chunk)).is_err() {
                return Err(PipelineError::Internal("buffer stage stopped".into()));
            }
        }
        Ok(())
    }

    /// Decodes one chunk into the table's rows, its rejections and their
    /// quarantine rows; `None` when a decoder stopped for shutdown.
    fn decode_chunk(
        &mut self,
        p: &RawChunk<'_>,
        rejected: &mut Rejections,
        parts: &mut Vec<Part>,
    ) -> Result<Option<Chunk>, PipelineError> {
        let table = p.table;
        let t = &mut self.tables[table];
        // One small vector per chunk, borrowing librdkafka's buffers.
        let values: Vec<Option<&[u8]>> = p.messages.iter().map(|m| KafkaRecord::value(m)).collect();
        rejected.clear();
        match t
            .decoder
            .decode(&values, t.max_value_bytes, parts, rejected)
        {
            Ok(()) => {}
            Err(FramedError::Shutdown) => return Ok(None),
            Err(e) => return Err(decode_failure(&t.name, e)),
        }
        let normalized = t
            .normalizer
            .normalize(std::mem::take(parts), rejected)
            .map_err(|e| match crate::fault::Classify::fault(&e) {
                crate::fault::Fault::Internal => PipelineError::internal_by(e.to_string(), e),
                _ => PipelineError::setup_by(e.to_string(), e),
            })?;
        if !normalized.added.is_empty() {
            t.evolve(&normalized.added, &self.metrics)?;
        }
        let mut good = normalized.rows;
        let mut values_batch = normalized.batch;
        let mut key_column = None;
        if let Some(kd) = &mut t.key {
            let Some(column) = decode_keys(
                kd,
                &t.name,
                &p.messages,
                &mut good,
                &mut values_batch,
                rejected,
            )?
            else {
                return Ok(None);
            };
            key_column = Some(column);
        }
        let mut batch = assemble_with_key(
            &t.layout,
            &values_batch,
            &p.messages,
            &good,
            key_column.as_ref(),
        )
        .map_err(|e| PipelineError::internal_by(format!("assembling batch: {e}"), e))?;
        if !t.constraints.is_empty() {
            batch = check_constraints(&t.constraints, batch, &mut good, rejected)?;
        }
        if let Some(c) = &t.changes {
            batch = c.changes(
                &t.layout,
                &t.meta,
                t.key.as_mut(),
                &t.name,
                &p.messages,
                batch,
                &mut good,
                rejected,
            )?;
            // From here on `good` only counts messages (in order).
            good.sort_unstable();
        }
        Ok(Some(self.chunk(p, batch, &good, rejected)?))
    }

    /// The chunk of `batch` for the buffer stage, with its rejections
    /// counted and quarantined, and the messages counted per topic.
    fn chunk(
        &self,
        p: &RawChunk<'_>,
        batch: RecordBatch,
        good: &[usize],
        rejected: &[Rejection],
    ) -> Result<Chunk, PipelineError> {
        let table = p.table;
        for r in rejected {
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
        let (by_topic, ranges) = tally(&p.messages, good);
        for t in &by_topic {
            MessagesConsumed {
                topic: t.name,
                count: t.messages,
                bytes: t.bytes,
            }
            .emit(&self.metrics);
        }
        let quarantine = if self.quarantine[table] && !rejected.is_empty() {
            Some(
                crate::quarantine::rows(&p.messages, rejected)
                    .map_err(|e| PipelineError::internal_by(format!("quarantine rows: {e}"), e))?,
            )
        } else {
            None
        };
        let rows_by_topic = by_topic
            .iter()
            .map(|t| (t.name.to_string(), t.rows))
            .collect();
        let progress: BTreeMap<TopicPartition, (i64, i64)> = ranges
            .into_iter()
            .map(|(t, p, first, last)| ((by_topic[t].name.to_string(), p), (first, last)))
            .collect();
        Ok(Chunk {
            table,
            generation: p.generation,
            batch,
            progress,
            rejected: rejected.len(),
            rows_by_topic,
            quarantine,
        })
    }
}

/// Decodes the keys of the `good` messages into the key column; messages
/// whose key fails are rejected, and dropped from `good` and `values_batch`.
/// `None` when the key decoder stopped for shutdown.
pub(super) fn decode_keys(
    kd: &mut KeyDecoder,
    table: &str,
    messages: &[BorrowedMessage<'_>],
    good: &mut Vec<usize>,
    values_batch: &mut RecordBatch,
    rejected: &mut Rejections,
) -> Result<Option<ArrayRef>, PipelineError> {
    let keys: Vec<Option<&[u8]>> = good
        .iter()
        .map(|&i| KafkaRecord::key(&messages[i]))
        .collect();
    let mut local = Rejections::new();
    let (column, kept) = match kd.decode(&keys, &mut local) {
        Ok(k) => k,
        Err(KeyError::Framed(FramedError::Shutdown)) => return Ok(None),
        Err(KeyError::Framed(e)) => return Err(decode_failure(table, e)),
        Err(KeyError::Normalize(e @ NormalizeError::Policy { .. })) => {
            return Err(PipelineError::setup_by(e.to_string(), e))
        }
        Err(e) => return Err(PipelineError::internal_by(e.to_string(), e)),
    };
    if kept.len() != good.len() {
        rejected.merge_subset(&mut local, good);
        let take = UInt32Array::from_iter_values(kept.iter().map(|&k| k as u32));
        *values_batch = arrow::compute::take_record_batch(values_batch, &take)
            .map_err(|e| PipelineError::internal_by(format!("dropping bad keys: {e}"), e))?;
        *good = kept.iter().map(|&k| good[k]).collect();
    }
    Ok(Some(column))
}

/// Partitions covered by a chunk: (index into the topic stats, partition,
/// first offset, last offset).
type Ranges = Vec<(usize, i32, i64, i64)>;

/// Per topic: messages, value bytes, rows; per partition: the offsets
/// covered. One pass; messages come in runs of one partition, so only a
/// run's first message looks anything up (topic names by librdkafka's topic
/// handle, compared, never dereferenced), and short vectors beat maps.
fn tally<'m>(messages: &'m [BorrowedMessage<'_>], good: &[usize]) -> (Vec<TopicStats<'m>>, Ranges) {
    let mut by_topic: Vec<TopicStats<'_>> = Vec::new();
    let mut ranges: Ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut good_iter = good.iter().peekable();
    for (i, m) in messages.iter().enumerate() {
        let is_good = good_iter.peek() == Some(&&i);
        if is_good {
            good_iter.next();
        }
        let (handle, partition, offset) = (m.topic_ptr(), m.partition(), m.offset());
        let (t, r) = match current {
            Some((t, r)) if by_topic[t].handle == handle && ranges[r].1 == partition => (t, r),
            _ => {
                let t = match by_topic.iter().position(|e| e.handle == handle) {
                    Some(t) => t,
                    None => {
                        by_topic.push(TopicStats {
                            handle,
                            name: KafkaRecord::topic(m),
                            messages: 0,
                            bytes: 0,
                            rows: 0,
                        });
                        by_topic.len() - 1
                    }
                };
                let r = match ranges.iter().position(|e| e.0 == t && e.1 == partition) {
                    Some(r) => r,
                    None => {
                        ranges.push((t, partition, offset, offset));
                        ranges.len() - 1
                    }
                };
                current = Some((t, r));
                (t, r)
            }
        };
        let stats = &mut by_topic[t];
        stats.messages += 1;
        stats.bytes += m.payload_len() as u64;
        stats.rows += u64::from(is_good);
        let range = &mut ranges[r];
        range.2 = range.2.min(offset);
        range.3 = range.3.max(offset);
    }
    (by_topic, ranges)
}

/// Moves the rows of `batch` that violate a constraint to `rejected` (as
/// constraint-stage rejections of their messages) and returns the rest.
fn check_constraints(
    constraints: &Constraints,
    batch: RecordBatch,
    good: &mut Vec<usize>,
    rejected: &mut Rejections,
) -> Result<RecordBatch, PipelineError> {
    let violations = constraints
        .violations(&batch)
        .map_err(|e| PipelineError::internal_by(e.to_string(), e))?;
    if violations.is_empty() {
        return Ok(batch);
    }
    let mut keep = vec![true; batch.num_rows()];
    for v in &violations {
        keep[v.row] = false;
    }
    rejected.extend_subset(
        Stage::Constraint,
        violations.into_iter().map(|v| (v.row, v.reason)),
        good,
    );
    let mut row = 0;
    good.retain(|_| {
        row += 1;
        keep[row - 1]
    });
    arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))
        .map_err(|e| PipelineError::internal_by(format!("filtering violations: {e}"), e))
}
