//! Development kit: a standalone Kafka-protocol broker (librdkafka's mock
//! cluster) and a sample-event producer, for the quick start and the tests.
//! Not needed in production.

use std::io::BufRead;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// inlet development kit.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run librdkafka's mock cluster as a broker on 127.0.0.1.
    ///
    /// Prints `bootstrap=<host:port>` once ready. Reads commands on stdin:
    /// `create <topic> <partitions>` (answers `created <topic>`). Exits when
    /// stdin closes, so it never outlives the process that started it.
    MockBroker {
        /// Topics to create at start, as `name:partitions`.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Number of brokers in the cluster.
        #[arg(long, default_value_t = 1)]
        brokers: i32,
    },
    /// Show what a Delta table holds: version, files, rows, stored offsets
    /// and the first rows (read with delta-rs and the parquet crate).
    Show {
        /// Table path.
        table: std::path::PathBuf,
        /// Rows to print.
        #[arg(long, default_value_t = 5)]
        rows: usize,
    },
    /// Produce sample JSON events.
    Produce {
        /// Bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Number of events.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// First event id.
        #[arg(long, default_value_t = 0)]
        start_id: u64,
        /// Events per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Show { table, rows } => show(&table, rows),
        Command::MockBroker { topics, brokers } => mock_broker(&topics, brokers),
        Command::Produce {
            brokers,
            topic,
            count,
            start_id,
            rate,
        } => produce(&brokers, &topic, count, start_id, rate),
    }
}

fn parse_topic(spec: &str) -> Result<(&str, i32), String> {
    let (name, parts) = spec
        .split_once(':')
        .ok_or_else(|| format!("`{spec}`: expected name:partitions"))?;
    let parts = parts
        .parse()
        .map_err(|_| format!("`{spec}`: partitions is not a number"))?;
    Ok((name, parts))
}

fn mock_broker(topics: &[String], brokers: i32) -> Result<(), Box<dyn std::error::Error>> {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(brokers)?;
    for spec in topics {
        let (name, parts) = parse_topic(spec)?;
        cluster.create_topic(name, parts, 1)?;
    }
    println!("bootstrap={}", cluster.bootstrap_servers());
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, parts] => {
                let parts: i32 = parts.parse()?;
                cluster.create_topic(name, parts, 1)?;
                println!("created {name}");
            }
            [] => {}
            other => eprintln!("unknown command: {other:?}"),
        }
    }
    Ok(())
}

const USERS: [&str; 5] = ["ada", "grace", "linus", "barbara", "ken"];
const ACTIONS: [&str; 4] = ["view", "click", "purchase", "refund"];

fn produce(
    brokers: &str,
    topic: &str,
    count: u64,
    start_id: u64,
    rate: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    let mut payload = String::with_capacity(256);
    for i in 0..count {
        let id = start_id + i;
        payload.clear();
        use std::fmt::Write;
        write!(
            payload,
            r#"{{"id":{id},"user":"{}","action":"{}","amount":{}.{:02},"event_time":"{}"}}"#,
            USERS[(id % 5) as usize],
            ACTIONS[(id % 4) as usize],
            id % 500,
            id % 100,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
        let key = id.to_string();
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        if rate > 0 {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    println!("produced {count} events to {topic}");
    Ok(())
}

fn show(path: &std::path::Path, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = deltalake::ensure_table_uri(path.to_string_lossy())?;
        let table = deltalake::open_table(url).await?;
        let snapshot = table.snapshot()?;
        let uris: Vec<String> = table.get_file_uris()?.collect();
        let mut total = 0usize;
        let mut head = Vec::new();
        for uri in &uris {
            let file_path = match url::Url::parse(uri) {
                Ok(u) => u
                    .to_file_path()
                    .map_err(|_| format!("not a local file: {uri}"))?,
                Err(_) => std::path::PathBuf::from(uri),
            };
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(file_path)?,
            )?
            .build()?;
            for batch in reader {
                let batch = batch?;
                total += batch.num_rows();
                let have: usize = head
                    .iter()
                    .map(|b: &arrow::array::RecordBatch| b.num_rows())
                    .sum();
                if have < rows {
                    head.push(batch.slice(0, batch.num_rows().min(rows - have)));
                }
            }
        }
        println!("table:   {}", path.display());
        println!("version: {}", table.version().unwrap_or_default());
        println!("files:   {}", uris.len());
        println!("rows:    {total}");
        for app_id in txn_app_ids(path)? {
            let version = snapshot
                .transaction_version(table.log_store().as_ref(), &app_id)
                .await?;
            println!("offset:  {app_id} = {}", version.unwrap_or(-1));
        }
        if !head.is_empty() {
            println!("{}", arrow::util::pretty::pretty_format_batches(&head)?);
        }
        Ok(())
    })
}

/// The txn app ids named in the JSON commits of the log (delta-rs has no call
/// that lists them; versions are then read through delta-rs).
fn txn_app_ids(table: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(table.join("_delta_log"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            for line in std::fs::read_to_string(&path)?.lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                if let Some(id) = v["txn"]["appId"].as_str() {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    Ok(ids.into_iter().collect())
}
