//! The buffer stage: streams chunks into each table's Parquet writer and
//! flushes when rows, bytes or age reach their limit.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use tokio::sync::mpsc;
use tracing::debug;

use super::commit::CommitRequest;
use super::{FetchEvent, PendingCommit, PipelineError};
use crate::config::FlushConfig;
use crate::sink::WriterFactory;
use crate::source::TopicPartition;

struct TableBuffer {
    writer: RecordBatchWriter,
    factory: WriterFactory,
    rows: usize,
    bytes: usize,
    opened: Option<Instant>,
    progress: BTreeMap<TopicPartition, (i64, i64)>,
    rows_by_topic: Vec<(String, u64)>,
    quarantine: Vec<RecordBatch>,
}

impl TableBuffer {
    fn is_empty(&self) -> bool {
        self.progress.is_empty()
    }

    fn clear(&mut self) {
        self.writer.reset();
        self.rows = 0;
        self.bytes = 0;
        self.opened = None;
        self.progress.clear();
        self.rows_by_topic.clear();
        self.quarantine.clear();
    }
}

/// Runs the buffer stage until the fetch side ends.
pub async fn run(
    writers: Vec<(RecordBatchWriter, WriterFactory)>,
    flush: FlushConfig,
    mut events: mpsc::Receiver<FetchEvent>,
    commits: mpsc::Sender<CommitRequest>,
) -> Result<(), PipelineError> {
    let mut buffers: Vec<TableBuffer> = writers
        .into_iter()
        .map(|(writer, factory)| TableBuffer {
            writer,
            factory,
            rows: 0,
            bytes: 0,
            opened: None,
            progress: BTreeMap::new(),
            rows_by_topic: Vec::new(),
            quarantine: Vec::new(),
        })
        .collect();
    let mut generation = 0u64;
    loop {
        let deadline = buffers
            .iter()
            .filter_map(|b| b.opened)
            .min()
            .map(|t| t + flush.max_age);
        let event = match deadline {
            Some(d) => {
                tokio::select! {
                    ev = events.recv() => ev,
                    _ = tokio::time::sleep_until(d.into()) => {
                        for (table, b) in buffers.iter_mut().enumerate() {
                            if b.opened.is_some_and(|t| t.elapsed() >= flush.max_age) {
                                flush_table(table, b, generation, &commits).await?;
                            }
                        }
                        continue;
                    }
                }
            }
            None => events.recv().await,
        };
        match event {
            Some(FetchEvent::Chunk(chunk)) => {
                if chunk.generation != generation {
                    continue;
                }
                let b = &mut buffers[chunk.table];
                if chunk.batch.num_rows() > 0
                    && chunk.batch.schema().fields() != b.writer.arrow_schema().fields()
                {
                    // Schema evolution: what is buffered is committed under
                    // the old schema, the new columns come with the next commit.
                    flush_table(chunk.table, b, generation, &commits).await?;
                    b.writer = b
                        .factory
                        .writer(chunk.batch.schema())
                        .map_err(|e| PipelineError::Delta(e.to_string()))?;
                }
                if chunk.batch.num_rows() > 0 {
                    b.rows += chunk.batch.num_rows();
                    b.bytes += chunk.batch.get_array_memory_size();
                    b.writer
                        .write(chunk.batch)
                        .await
                        .map_err(|e| PipelineError::Delta(e.to_string()))?;
                }
                b.quarantine.extend(chunk.quarantine);
                for (topic, rows) in chunk.rows_by_topic {
                    match b.rows_by_topic.iter_mut().find(|(t, _)| *t == topic) {
                        Some(e) => e.1 += rows,
                        None => b.rows_by_topic.push((topic, rows)),
                    }
                }
                for (tp, (first, last)) in chunk.progress {
                    let e = b.progress.entry(tp).or_insert((first, last));
                    e.0 = e.0.min(first);
                    e.1 = e.1.max(last);
                }
                b.opened.get_or_insert_with(Instant::now);
                if b.rows >= flush.max_rows || b.bytes as u64 >= flush.max_bytes.as_u64() {
                    flush_table(chunk.table, b, generation, &commits).await?;
                }
            }
            Some(FetchEvent::Rebalanced { generation: g }) => {
                generation = g;
                for b in &mut buffers {
                    b.clear();
                }
            }
            Some(FetchEvent::Drain(token)) => {
                // Everything before the token goes to the committer first.
                for (table, b) in buffers.iter_mut().enumerate() {
                    flush_table(table, b, generation, &commits).await?;
                }
                commits
                    .send(CommitRequest::Drain(token))
                    .await
                    .map_err(|_| PipelineError::Internal("committer stopped".into()))?;
            }
            Some(FetchEvent::End) => {
                for (table, b) in buffers.iter_mut().enumerate() {
                    flush_table(table, b, generation, &commits).await?;
                }
                return Ok(());
            }
            Some(FetchEvent::Fatal(msg)) => return Err(PipelineError::Kafka(msg)),
            None => return Ok(()),
        }
    }
}

async fn flush_table(
    table: usize,
    b: &mut TableBuffer,
    generation: u64,
    commits: &mpsc::Sender<CommitRequest>,
) -> Result<(), PipelineError> {
    if b.is_empty() {
        return Ok(());
    }
    let flushed_at = Instant::now();
    let adds = b
        .writer
        .flush()
        .await
        .map_err(|e| PipelineError::Delta(e.to_string()))?;
    let offsets = std::mem::take(&mut b.progress);
    debug!(table, rows = b.rows, files = adds.len(), "flushing");
    let pending = PendingCommit {
        table,
        generation,
        adds,
        schema: b.writer.arrow_schema(),
        offsets,
        rows: b.rows as u64,
        rows_by_topic: std::mem::take(&mut b.rows_by_topic),
        quarantine: std::mem::take(&mut b.quarantine),
        flushed_at,
    };
    b.rows = 0;
    b.bytes = 0;
    b.opened = None;
    commits
        .send(CommitRequest::Batch(pending))
        .await
        .map_err(|_| PipelineError::Internal("committer stopped".into()))
}
