//! The ingest loop and its modes. Data flows one way:
//!
//! ```text
//! poll thread (poll → route → chunk of borrowed messages)
//!   → decode thread (decode → Arrow chunk, constraints, quarantine rows)
//!   → buffer stage (Parquet writer per table; flush on rows/bytes/age)
//!     → commit stage (Delta commit with txn actions; advisory group commit)
//! ```

mod bounded;
mod buffer;
mod changes;
mod commit;
mod completion;
mod decode;
mod ends;
mod messages;
mod ownership;
mod plan;
mod poll;
mod progress;
mod rebalance;
mod replay;
mod route;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{Config, Format, KeyFormat, RangeBound};
use crate::conform::Normalizer;
use crate::decode::{FramedDecoder, FramedKind, JsonDecoder, RawDecoder, ValueDecoder};
use crate::fault::{Classify, Shutdown};
use crate::observability::Metrics;
use crate::sink::DeltaSink;
use crate::source::create_consumer;
use messages::FetchEvent;

pub use completion::{Gap, GapCause, Unfinished};
pub use plan::{load_config, load_config_str};
pub use replay::replay_target;
pub use route::Router;

/// The value columns of a new table whose topics carry registry schemas:
/// the latest schema of the source's value subject (by its
/// `subject_name_strategy`, `<topic>-value` by default), through the table's
/// transforms, in Delta-storable types.
async fn schema_from_registry(
    cfg: &Config,
    name: &str,
    shutdown: &Shutdown,
) -> Result<arrow::datatypes::Schema> {
    let message = |e: &dyn std::fmt::Display| {
        format!(
            "table `{name}` does not exist and has no `schema`; creating it from the registry: {e}; \
             fix: set tables.{name}.schema"
        )
    };
    let setup = |e: &str| PipelineError::Setup(message(&e));
    let failed = |e: BoxError| PipelineError::SetupBy {
        message: message(&e),
        source: e,
    };
    let (source, topic) = cfg
        .sources
        .values()
        .filter(|s| s.table == name)
        .find_map(|s| s.topics.first().map(|t| (s, t)))
        .ok_or_else(|| setup("its sources name topics by pattern only"))?;
    let record_name = source.record_name.as_deref();
    let subject = source
        .subject_name_strategy
        .value_subject(topic, record_name)
        .ok_or_else(|| setup("the subject name strategy needs `record_name`"))?;
    let registry_cfg = cfg
        .schema_registry
        .as_ref()
        .ok_or_else(|| setup("no [schema_registry]"))?;
    let registry =
        crate::registry::SchemaRegistry::new(registry_cfg).map_err(|e| failed(Box::new(e)))?;
    let mut backoff = registry_cfg.backoff().with_max_attempts(5);
    let latest = loop {
        match registry.latest(&subject).await {
            Ok(s) => break s,
            // Unavailable, or a restarting registry's 404: a few tries.
            Err(e) if e.is_retryable() => {
                warn!(subject, error = %e, "schema registry cannot answer yet; retrying");
                if backoff.wait(shutdown).await.is_err() {
                    return Err(failed(Box::new(e)));
                }
            }
            Err(e) => return Err(failed(Box::new(e))),
        }
    };
    let input: arrow::datatypes::SchemaRef = match latest.kind {
        crate::registry::SchemaKind::Avro => {
            let text = latest
                .avro_self_contained()
                .map_err(|e| failed(Box::new(e)))?;
            crate::decode::AvroDecoder::new()
                .add_schema(latest.id, &text)
                .map_err(|e| setup(&e))?
        }
        crate::registry::SchemaKind::Json => {
            let doc: serde_json::Value =
                serde_json::from_str(&latest.schema).map_err(|e| failed(Box::new(e)))?;
            let resolve = |r: &str| {
                latest
                    .json_reference(r)
                    .and_then(|x| serde_json::from_str(&x.schema).ok())
            };
            Arc::new(
                crate::schema::json_schema_to_arrow(&doc, &resolve)
                    .map_err(|e| failed(Box::new(e)))?,
            )
        }
        crate::registry::SchemaKind::Protobuf => {
            crate::decode::protobuf_arrow_schema(&latest, record_name).map_err(|e| setup(&e))?
        }
    };
    let tc = &cfg.tables[name];
    let shaped = if tc.transforms.is_empty() {
        input
    } else {
        crate::transform::TransformPlan::compile(&tc.transforms, input)
            .map_err(|e| failed(Box::new(e)))?
            .output_schema()
            .clone()
    };
    // Conforming to an empty table: every field is new, in a type Delta stores.
    let empty = arrow::datatypes::Schema::empty();
    let conformer =
        crate::conform::Conformer::new(&shaped, &empty, crate::config::EvolutionPolicy::AddColumns)
            .map_err(|e| failed(Box::new(e)))?;
    info!(
        table = name,
        subject,
        schema_id = latest.id,
        "creating the table from the registry's latest schema"
    );
    Ok(conformer.output_schema().as_ref().clone())
}

/// The schema registry client and its backoff (first, max).
type RegistryClient = (
    crate::registry::SchemaRegistry,
    (std::time::Duration, std::time::Duration),
);

/// How messages of the table of `sink` become its rows: decoder by format,
/// transforms and evolution policy, constraints.
fn table_decode(
    sink: &DeltaSink,
    cfg: &Config,
    registry: Option<&RegistryClient>,
    shutdown: &Shutdown,
    metrics: &Arc<Metrics>,
) -> Result<decode::TableDecode> {
    let name = sink.name();
    let tc = &cfg.tables[name];
    let d = Decoders {
        name,
        tc,
        registry,
        shutdown,
        metrics,
    };
    let mut layout = sink.layout().clone();
    // Decoded nullable: a null in a NOT NULL column is then a constraint
    // violation of that row, found when conforming, not a decode failure.
    let input = match &tc.input_schema {
        Some(ddl) => crate::schema::parse_ddl(ddl).map_err(|e| d.failed(e))?,
        None if cfg.table_format(name) == Format::Json => {
            crate::transform::json_input(&tc.transforms, &layout.value)
        }
        None => (*layout.value).clone(),
    };
    let input = Arc::new(arrow::datatypes::Schema::new(
        input
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let decoder = d.value(cfg.table_format(name), input)?;
    // Generated columns are computed last, from the rows as the
    // configured transforms left them (a message's value is replaced).
    let mut transforms = tc.transforms.clone();
    transforms.extend(
        sink.generated_columns()
            .into_iter()
            .map(|(column, expr)| crate::config::TransformSpec::Derive { column, expr }),
    );
    let mut normalizer = Normalizer::new(name, transforms, tc.evolution, layout.value.clone());
    if let Some(fixed) = decoder.fixed_schema() {
        let added = normalizer
            .prepare(fixed)
            .map_err(|e| PipelineError::setup_by(e.to_string(), e))?;
        if !added.is_empty() {
            layout = layout.with_value(normalizer.value_schema(), &tc.metadata_columns);
        }
    }
    let key = d.key(&layout)?;
    let properties = sink
        .properties()
        .map_err(|e| PipelineError::setup_by(e.to_string(), e))?;
    let constraints =
        crate::conform::constraints::Constraints::from_properties(&properties, &layout.table)
            .map_err(|e| d.failed(e))?;
    let changes = changes::ChangeRules::new(name, tc, &layout)?;
    Ok(decode::TableDecode {
        name: name.to_string(),
        layout,
        meta: tc.metadata_columns.clone(),
        decoder,
        normalizer,
        constraints,
        properties,
        max_value_bytes: usize::try_from(tc.max_value_bytes.as_u64()).unwrap_or(usize::MAX),
        key,
        changes,
    })
}

/// What the decoders of one table are made from.
struct Decoders<'a> {
    name: &'a str,
    tc: &'a crate::config::TableConfig,
    registry: Option<&'a RegistryClient>,
    shutdown: &'a Shutdown,
    metrics: &'a Arc<Metrics>,
}

impl Decoders<'_> {
    fn setup(&self, e: &dyn std::fmt::Display) -> PipelineError {
        PipelineError::Setup(format!("table `{}`: {e}", self.name))
    }

    fn failed(&self, e: impl std::error::Error + Send + Sync + 'static) -> PipelineError {
        PipelineError::setup_by(format!("table `{}`: {e}", self.name), e)
    }

    /// A decoder of Confluent-framed values, with registry look-ups.
    fn framed(&self, kind: FramedKind) -> Result<ValueDecoder> {
        let (registry, backoff) = self
            .registry
            .ok_or_else(|| self.setup(&"the format needs [schema_registry]"))?;
        Ok(ValueDecoder::Framed(Box::new(
            FramedDecoder::new(
                kind,
                registry.clone(),
                tokio::runtime::Handle::current(),
                *backoff,
                self.shutdown.clone(),
                self.metrics.clone(),
            )
            .with_max_depth(self.tc.max_nesting_depth),
        )))
    }

    /// The value decoder of `format`, into `input`.
    fn value(&self, format: Format, input: arrow::datatypes::SchemaRef) -> Result<ValueDecoder> {
        Ok(match format {
            Format::Json => ValueDecoder::Json(
                JsonDecoder::new(input)
                    .map_err(|e| self.failed(e))?
                    .with_max_depth(self.tc.max_nesting_depth),
            ),
            Format::Bytes | Format::String => {
                let want = if format == Format::Bytes {
                    arrow::datatypes::DataType::Binary
                } else {
                    arrow::datatypes::DataType::Utf8
                };
                if !matches!(input.fields().as_ref(), [f] if f.data_type() == &want) {
                    return Err(self.setup(&format!(
                        "the {format:?} format fills one {want} value column; the table's value columns are {:?}",
                        input.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>()
                    )));
                }
                ValueDecoder::Raw(RawDecoder::new(input).map_err(|e| self.setup(&e))?)
            }
            Format::Avro => self.framed(FramedKind::Avro)?,
            Format::JsonSchema => self.framed(FramedKind::JsonSchema)?,
            Format::Protobuf => self.framed(FramedKind::Protobuf)?,
        })
    }

    /// The key decoder (`key_format` other than `bytes`) into the key column
    /// of `layout`.
    fn key(
        &self,
        layout: &crate::schema::TableLayout,
    ) -> Result<Option<crate::conform::KeyDecoder>> {
        let tc = self.tc;
        let format = match tc.key_format {
            KeyFormat::Bytes => return Ok(None),
            KeyFormat::String => return Ok(Some(crate::conform::KeyDecoder::Utf8)),
            format => format,
        };
        let column = tc.metadata_columns.key.as_deref().unwrap_or_default();
        let fields = layout
            .table
            .field_with_name(column)
            .ok()
            .and_then(|f| crate::conform::struct_fields(f.data_type()).cloned())
            .ok_or_else(|| self.setup(&format!("key column `{column}` is not a STRUCT")))?;
        let schema = Arc::new(arrow::datatypes::Schema::new(fields.clone()));
        let decoder = match format {
            KeyFormat::Avro => self.framed(FramedKind::Avro)?,
            KeyFormat::JsonSchema => self.framed(FramedKind::JsonSchema)?,
            KeyFormat::Protobuf => self.framed(FramedKind::Protobuf)?,
            _ => ValueDecoder::Json(
                JsonDecoder::new(schema.clone())
                    .map_err(|e| self.failed(e))?
                    .with_max_depth(tc.max_nesting_depth),
            ),
        };
        // Keys keep the column's fields: new ones are ignored.
        let mut normalizer = Normalizer::new(
            &format!("{} (key)", self.name),
            Vec::new(),
            crate::config::EvolutionPolicy::Ignore,
            schema,
        );
        if let Some(fixed) = decoder.fixed_schema() {
            normalizer
                .prepare(fixed)
                .map_err(|e| PipelineError::setup_by(e.to_string(), e))?;
        }
        Ok(Some(crate::conform::KeyDecoder::Structured {
            decoder: Box::new(decoder),
            normalizer: Box::new(normalizer),
            fields,
            max_bytes: usize::try_from(tc.max_value_bytes.as_u64()).unwrap_or(usize::MAX),
        }))
    }
}

/// What the buffer stage hears when the consumer thread failed.
const CONSUMER_STOPPED: &str = "consumer stopped";

/// How long a stopping pipeline waits for the consumer to leave its group.
const CONSUMER_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Errors that stop the pipeline, by whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration cannot be used (found before anything is fetched):
    /// the operator must act.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The configuration or a table cannot be used: the operator must act.
    #[error("{0}")]
    Setup(String),
    /// As [`Self::Setup`], caused by `source` (`message` includes its text).
    #[error("{message}")]
    SetupBy {
        /// What cannot be used, and why.
        message: String,
        /// The error that says why.
        #[source]
        source: BoxError,
    },
    /// Kafka failed in a way librdkafka does not retry.
    #[error("kafka: {0}")]
    Kafka(String),
    /// As [`Self::Kafka`], caused by `source` (`message` includes its text).
    #[error("kafka: {message}")]
    KafkaBy {
        /// What failed.
        message: String,
        /// The error that says why.
        #[source]
        source: BoxError,
    },
    /// Delta commits kept failing after retries.
    #[error("delta: {0}")]
    Delta(String),
    /// As [`Self::Delta`], caused by `source` (`message` includes its text).
    #[error("delta: {message}")]
    DeltaBy {
        /// What failed.
        message: String,
        /// The error that says why.
        #[source]
        source: BoxError,
    },
    /// A look-up of partition offsets failed.
    #[error("kafka: {0}")]
    Lookup(#[from] crate::source::watermarks::LookupError),
    /// Offsets to read are gone from the broker (the operator decides how
    /// to go on).
    #[error(transparent)]
    DataLoss(#[from] crate::source::DataLossError),
    /// A bug in inlet.
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
    /// As [`Self::Internal`], caused by `source` (`message` includes its
    /// text).
    #[error("internal error (a bug, please report it): {message}")]
    InternalBy {
        /// What failed.
        message: String,
        /// The error that says why.
        #[source]
        source: BoxError,
    },
    /// A bounded run could not get its whole range into the table.
    #[error("{0}")]
    Incomplete(Unfinished),
    /// A bounded run was stopped (SIGTERM/SIGINT) before its whole range
    /// was in the table.
    #[error(
        "stopped before the range was complete: {} not in the table yet; \
         run it again to finish (it resumes from the table's offsets)",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Interrupted(Vec<Gap>),
    /// The final commit did not finish within `shutdown_timeout`.
    #[error(
        "shutdown took longer than shutdown_timeout ({0:?}): exited without committing the rest; \
         nothing is lost, a restart resumes from the table's offsets"
    )]
    ShutdownTimeout(std::time::Duration),
}

impl crate::fault::Classify for PipelineError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            PipelineError::Config(_) | PipelineError::Setup(_) | PipelineError::SetupBy { .. } => {
                Fault::Operator
            }
            PipelineError::Kafka(_)
            | PipelineError::KafkaBy { .. }
            | PipelineError::Lookup(_)
            | PipelineError::Delta(_)
            | PipelineError::DeltaBy { .. }
            | PipelineError::ShutdownTimeout(_) => Fault::Environment,
            PipelineError::DataLoss(e) => e.fault(),
            PipelineError::Internal(_) | PipelineError::InternalBy { .. } => Fault::Internal,
            // Another writer of the app id: someone must look.
            PipelineError::Incomplete(_) => Fault::Operator,
            // Asked to stop: running again finishes the range.
            PipelineError::Interrupted(_) => Fault::Environment,
        }
    }
}

/// The error another part of inlet (or a library) reported.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl PipelineError {
    fn setup_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PipelineError::SetupBy {
            message: message.into(),
            source: Box::new(source),
        }
    }

    fn kafka_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PipelineError::KafkaBy {
            message: message.into(),
            source: Box::new(source),
        }
    }

    fn delta_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PipelineError::DeltaBy {
            message: message.into(),
            source: Box::new(source),
        }
    }

    fn internal_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PipelineError::InternalBy {
            message: message.into(),
            source: Box::new(source),
        }
    }
}

/// A spawned task cancelled when its handle is dropped, so a run cut short
/// by the shutdown timeout leaves no stage running behind it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Result alias for the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// How the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Join the group and ingest until SIGTERM/SIGINT.
    Continuous,
    /// Snapshot the high watermarks, ingest up to them, exit.
    AvailableNow,
    /// Ingest exactly `from`..`to` (end exclusive), under the config's
    /// `app_id` (set it with [`replay_app_id`]), then exit.
    Replay {
        /// Start of the range.
        from: RangeBound,
        /// End of the range (exclusive).
        to: RangeBound,
    },
}

/// The app id of a replay: derived from the pipeline's app id and the range
/// as given, so that running the same replay again resumes it (and writes
/// nothing twice) while the long-running ingest's offsets stay untouched.
pub fn replay_app_id(app_id: &str, from: &str, to: &str) -> String {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in from.trim().bytes().chain([0u8]).chain(to.trim().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{app_id}-replay-{h:016x}")
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Messages consumed.
    pub consumed: u64,
    /// Rows committed.
    pub rows_written: u64,
    /// Messages that became no row.
    pub rejected: u64,
    /// Rows committed to quarantine tables.
    pub quarantined: u64,
    /// Delta commits made.
    pub commits: u64,
    /// Batches dropped by fencing.
    pub fenced: u64,
}

/// The ingest pipeline, configured with `with_*` methods and started with
/// [`Pipeline::run`].
#[derive(Debug)]
pub struct Pipeline {
    config: Config,
    mode: Mode,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A continuous pipeline for `config`.
    pub fn new(config: Config) -> Self {
        Pipeline {
            config,
            mode: Mode::Continuous,
            shutdown: Shutdown::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The pipeline's metrics (also served on `[metrics] listen`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// A flag that, once set, makes the pipeline commit what it holds and stop.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until shutdown (continuous) or until the targets are reached
    /// (available-now). Once shutdown is triggered, the run has
    /// `shutdown_timeout` to commit what it holds; past it, it stops without
    /// committing the rest ([`PipelineError::ShutdownTimeout`]): each Delta
    /// commit is all or nothing, so nothing is half written, and a restart
    /// reads the rest again from the table's offsets.
    pub async fn run(self) -> Result<RunSummary> {
        // What load_config checks after parsing, again for a configuration
        // built or changed in code, before anything is fetched.
        plan::check_stages(&self.config)?;
        let shutdown = self.shutdown.clone();
        let limit = self.config.shutdown_timeout;
        let stages = self.run_stages();
        tokio::pin!(stages);
        tokio::select! {
            done = &mut stages => done,
            () = async {
                shutdown.triggered().await;
                tokio::time::sleep(limit).await;
            } => {
                warn!(
                    timeout_s = limit.as_secs_f64(),
                    "shutdown timed out: stopping without committing the rest; \
                     a restart resumes from the table's offsets"
                );
                Err(PipelineError::ShutdownTimeout(limit))
            }
        }
    }

    async fn run_stages(self) -> Result<RunSummary> {
        let cfg = &self.config;
        let server = self.serve_metrics().await?;
        let router = Arc::new(Router::new(cfg));
        let compactions = self.spawn_compactions(&router);
        let sinks = self.open_sinks(&router).await?;
        self.zero_counters(&router);
        let (tables, writers) = self.decoders(&sinks.commit)?;

        let metrics = self.metrics.clone();
        let (events_tx, events_rx) = mpsc::channel(4);
        let (commits_tx, commits_rx) = mpsc::channel(1);
        let gate: rebalance::Gate = Arc::new(rebalance::Fence::default());
        let gate_for_buffer = gate.clone();
        let (rebalancer, consumer) = self.consumer(
            gate.clone(),
            router.clone(),
            sinks.offset,
            events_tx.clone(),
        )?;
        let resync = Arc::new(AtomicBool::new(false));
        let completion = Arc::new(std::sync::Mutex::new(completion::Completion::default()));
        let bounded = !matches!(self.mode, Mode::Continuous);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();

        let fetch = poll::FetchLoop {
            consumer: consumer.clone(),
            tables,
            events: events_tx,
            shutdown: self.shutdown.clone(),
            resync: resync.clone(),
            completion: completion.clone(),
            metrics: metrics.clone(),
            targets: None,
            progress: None,
            quarantine: sinks.quarantine.iter().map(Option::is_some).collect(),
            chunk_messages: poll::chunk_messages(cfg.flush.max_rows),
            pause_after: poll::pause_after(&cfg.kafka_properties()),
        };
        let fetch_thread = spawn_consumer(fetch, self.mode.clone(), router.clone(), done_rx)?;

        let mut commit_task = self.spawn_committer(
            commit::Committer {
                app_id: cfg.app_id.clone(),
                sinks: sinks.commit,
                quarantine: sinks.quarantine,
                gate,
                retry: cfg.commit.clone(),
                consumer,
                resync: resync.clone(),
                completion: completion.clone(),
                advise: matches!(self.mode, Mode::Continuous),
                metrics: metrics.clone(),
            },
            commits_rx,
        );
        let recovery = buffer::Recovery {
            resync: resync.clone(),
            retry: cfg.commit.clone(),
            shutdown: self.shutdown.clone(),
            metrics: metrics.clone(),
            fence: gate_for_buffer,
            keep_batches: matches!(self.mode, Mode::Continuous)
                && crate::source::kafka::incremental_rebalancing(cfg),
        };
        let buffered =
            buffer::run(writers, cfg.flush.clone(), events_rx, commits_tx, recovery).await;
        if buffered.is_err() {
            self.shutdown.trigger();
        }
        let committed = (&mut commit_task.0)
            .await
            .map_err(|e| PipelineError::internal_by(format!("commit task: {e}"), e))?;
        let _ = done_tx.send(());
        let fetched = join_consumer(fetch_thread).await?;
        // A compaction cut short leaves at most unreferenced files behind:
        // its commit is all or nothing.
        for c in compactions {
            c.abort();
        }
        first_cause(committed, buffered, fetched)?;
        if bounded && self.shutdown.is_triggered() {
            // Stopped early: exit 0 only if the range is in the table anyway.
            range_left(&completion, &rebalancer).await?;
        }
        metrics.ready.store(false, Ordering::Release);
        if let Some(server) = server {
            server.abort();
        }
        let summary = RunSummary::of(&metrics);
        info!(?summary, "pipeline stopped");
        Ok(summary)
    }

    /// Starts the commit stage; a failed commit stage stops the whole
    /// pipeline, not just itself.
    fn spawn_committer(
        &self,
        committer: commit::Committer,
        requests: mpsc::Receiver<messages::CommitRequest>,
    ) -> AbortOnDrop<Result<()>> {
        let stop = self.shutdown.clone();
        AbortOnDrop(tokio::spawn(async move {
            let result = committer.run(requests).await;
            if result.is_err() {
                stop.trigger();
            }
            result
        }))
    }

    /// The consumer, with the rebalance callback that reads start offsets
    /// from `sinks`.
    fn consumer(
        &self,
        gate: rebalance::Gate,
        router: Arc<Router>,
        sinks: Vec<DeltaSink>,
        events: mpsc::Sender<FetchEvent>,
    ) -> Result<(Arc<rebalance::Rebalancer>, Arc<poll::InletConsumer>)> {
        let cfg = &self.config;
        let rebalancer = Arc::new(
            rebalance::Rebalancer::new(
                cfg.app_id.clone(),
                gate,
                router,
                sinks,
                tokio::runtime::Handle::current(),
                events,
                self.metrics.clone(),
            )
            // Like commit retries, bounded by shutdown_timeout rather than
            // cut short by SIGTERM: a resync in flight then still lands.
            .with_retry(cfg.commit.clone(), Shutdown::new()),
        );
        let consumer = Arc::new(
            create_consumer(cfg, rebalancer.clone())
                .map_err(|e| PipelineError::setup_by(format!("kafka consumer: {e}"), e))?,
        );
        Ok((rebalancer, consumer))
    }

    /// Serves `/metrics` on `[metrics] listen`, if set.
    async fn serve_metrics(&self) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(addr) = self.config.metrics.listen else {
            return Ok(None);
        };
        let server = crate::observability::http::serve(addr, self.metrics.clone())
            .await
            .map_err(|e| {
                PipelineError::setup_by(
                    format!("metrics.listen: cannot serve on {addr}: {e}; pick a free address"),
                    e,
                )
            })?;
        Ok(Some(server))
    }

    /// Background compaction only for long-running ingest; bounded runs
    /// leave it to `inlet compact`.
    fn spawn_compactions(&self, router: &Router) -> Vec<tokio::task::JoinHandle<()>> {
        if !matches!(self.mode, Mode::Continuous) {
            return Vec::new();
        }
        crate::sink::compaction::spawn_periodic(
            router
                .tables()
                .iter()
                .map(|n| (n.clone(), self.config.tables[n].clone()))
                .collect(),
            self.shutdown.clone(),
            self.metrics.clone(),
        )
    }

    /// Opens (or creates) every table, twice (the committer's and the
    /// rebalance callback's handles), and each quarantine table.
    async fn open_sinks(&self, router: &Router) -> Result<Sinks> {
        let cfg = &self.config;
        let mut sinks = Sinks {
            commit: Vec::new(),
            offset: Vec::new(),
            quarantine: Vec::new(),
        };
        // Opening retries the object store's transient errors like a commit,
        // and stops at once on SIGTERM. Commit retries are not cut short by
        // SIGTERM: the final commit keeps trying until shutdown_timeout.
        let patience = |name: &str| {
            crate::sink::Patience::new(
                format!("opening table `{name}`"),
                &cfg.commit,
                &self.shutdown,
            )
        };
        for name in router.tables() {
            let tc = &cfg.tables[name];
            let derived = if tc.schema.is_none()
                && cfg.table_format(name).uses_registry()
                && !DeltaSink::exists_retrying(name, tc, &mut patience(name))
                    .await
                    .map_err(|e| PipelineError::setup_by(e.to_string(), e))?
            {
                Some(schema_from_registry(cfg, name, &self.shutdown).await?)
            } else {
                None
            };
            for sinks in [&mut sinks.commit, &mut sinks.offset] {
                sinks.push(
                    DeltaSink::open_retrying(name, tc, derived.as_ref(), &mut patience(name))
                        .await
                        .map_err(|e| PipelineError::setup_by(e.to_string(), e))?
                        .with_metrics(self.metrics.clone()),
                );
            }
        }
        for name in router.tables() {
            let tc = &cfg.tables[name];
            sinks.quarantine.push(match &tc.quarantine_uri {
                Some(uri) => Some(
                    DeltaSink::open_retrying(
                        &format!("{name}_quarantine"),
                        &crate::quarantine::table_config(tc, uri),
                        None,
                        &mut patience(name),
                    )
                    .await
                    .map_err(|e| PipelineError::setup_by(e.to_string(), e))?
                    .with_metrics(self.metrics.clone()),
                ),
                None => None,
            });
        }
        Ok(sinks)
    }

    /// Counters exist from the start, at 0, so rates and alerts work.
    fn zero_counters(&self, router: &Router) {
        for name in router.tables() {
            let labels = crate::observability::TableLabels {
                table: name.clone(),
            };
            self.metrics.batches.get_or_create(&labels).inc_by(0);
            self.metrics.commit_retries.get_or_create(&labels).inc_by(0);
            self.metrics
                .commit_conflicts
                .get_or_create(&labels)
                .inc_by(0);
        }
    }

    /// Per table: how its messages become rows, and its Parquet writers.
    fn decoders(&self, sinks: &[DeltaSink]) -> Result<(Vec<decode::TableDecode>, Vec<Writers>)> {
        let cfg = &self.config;
        let registry = match &cfg.schema_registry {
            Some(r) => Some((
                crate::registry::SchemaRegistry::new(r)
                    .map_err(|e| PipelineError::setup_by(format!("schema_registry: {e}"), e))?,
                (r.retry_backoff, r.max_backoff),
            )),
            None => None,
        };
        let mut tables = Vec::new();
        let mut writers = Vec::new();
        for s in sinks {
            tables.push(table_decode(
                s,
                cfg,
                registry.as_ref(),
                &self.shutdown,
                &self.metrics,
            )?);
            writers.push((
                s.name().to_string(),
                s.writer()
                    .map_err(|e| PipelineError::setup_by(e.to_string(), e))?,
                s.writer_factory()
                    .map_err(|e| PipelineError::setup_by(e.to_string(), e))?,
            ));
        }
        Ok((tables, writers))
    }
}

/// The tables a run writes, in router order.
struct Sinks {
    /// The committer's handles.
    commit: Vec<DeltaSink>,
    /// The rebalance callback's handles, to read stored offsets.
    offset: Vec<DeltaSink>,
    /// Each table's quarantine table, when configured.
    quarantine: Vec<Option<DeltaSink>>,
}

/// A table's name, Parquet writer, and writers for a wider schema.
type Writers = (String, crate::sink::TableWriter, crate::sink::WriterFactory);

/// Starts the consumer thread: subscribes (continuous) or assigns a
/// bounded run's range, then polls until the run ends.
fn spawn_consumer(
    mut fetch: poll::FetchLoop,
    mode: Mode,
    router: Arc<Router>,
    done: std::sync::mpsc::Receiver<()>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let subscription = router.subscription();
    std::thread::Builder::new()
        .name("inlet-consumer".into())
        .spawn(move || -> Result<()> {
            let setup = match mode {
                Mode::Continuous => {
                    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
                    fetch
                        .consumer
                        .subscribe(&topics)
                        .map_err(|e| PipelineError::kafka_by(format!("subscribe: {e}"), e))
                }
                Mode::AvailableNow => bounded::available_now(&mut fetch, &router),
                Mode::Replay { from, to } => bounded::replay(&mut fetch, &router, &from, &to),
            };
            let result = setup.and_then(|()| fetch.run());
            if result.is_ok() {
                // Keep the consumer open until the last commit is done, so
                // that the advisory group commit goes through.
                let _ = done.recv();
            } else {
                let _ = fetch
                    .events
                    .try_send(FetchEvent::Fatal(CONSUMER_STOPPED.into()));
            }
            drop(fetch);
            result
        })
        .map_err(|e| PipelineError::internal_by(format!("spawning consumer thread: {e}"), e))
}

/// Waits for the consumer thread to close the consumer. Closing leaves the
/// group; a broker that does not answer must not keep a finished (or
/// failed) run from exiting. Everything is committed by now, and the group
/// expires the member anyway. The outer error is the join's, the inner the
/// thread's.
async fn join_consumer(thread: std::thread::JoinHandle<Result<()>>) -> Result<Result<()>> {
    let join = tokio::task::spawn_blocking(move || thread.join());
    match tokio::time::timeout(CONSUMER_CLOSE_TIMEOUT, join).await {
        Ok(joined) => Ok(joined
            .map_err(|e| PipelineError::internal_by(format!("joining consumer thread: {e}"), e))?
            .map_err(|_| PipelineError::Internal("consumer thread panicked".into()))?),
        Err(_) => {
            warn!(
                timeout_s = CONSUMER_CLOSE_TIMEOUT.as_secs(),
                "the consumer did not close in time; leaving it to the group's session timeout"
            );
            Ok(Ok(()))
        }
    }
}

/// The error that ended a run, of the commit stage's, the buffer stage's
/// and the consumer thread's, in that order; the consumer's own error is the
/// cause when the buffer stage only saw it stop.
fn first_cause(committed: Result<()>, buffered: Result<()>, fetched: Result<()>) -> Result<()> {
    let consumer_failed = matches!(
        (&buffered, &fetched),
        (Err(PipelineError::Kafka(m)), Err(_)) if m == CONSUMER_STOPPED
    );
    let buffered = if consumer_failed { Ok(()) } else { buffered };
    committed?;
    buffered?;
    fetched
}

/// A bounded run stopped early: fails with what of its range is not in the
/// table yet, if anything.
async fn range_left(
    completion: &Arc<std::sync::Mutex<completion::Completion>>,
    rebalancer: &Arc<rebalance::Rebalancer>,
) -> Result<()> {
    let parts = completion.lock().expect("completion lock").partitions();
    let reb = rebalancer.clone();
    let stored = tokio::task::spawn_blocking(move || {
        reb.stored_offsets(&parts)
            .map(|s| parts.into_iter().zip(s).collect())
    })
    .await
    .map_err(|e| PipelineError::internal_by(format!("reading stored offsets: {e}"), e))?
    .map_err(|e| PipelineError::delta_by(e.to_string(), e))?;
    let left = completion
        .lock()
        .expect("completion lock")
        .remaining(&stored);
    if !left.is_empty() {
        return Err(PipelineError::Interrupted(left));
    }
    Ok(())
}

impl RunSummary {
    /// The run totals counted in `metrics`.
    fn of(metrics: &Metrics) -> Self {
        let c = &metrics.totals;
        RunSummary {
            consumed: c.consumed.load(Ordering::Relaxed),
            rows_written: c.rows_written.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fenced: c.fenced.load(Ordering::Relaxed),
        }
    }
}
