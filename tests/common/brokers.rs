//! Kafka-protocol brokers for the tests, each on a 127.0.0.1 port of its
//! own: librdkafka's mock cluster (run by `inlet-devkit`) and Tansu.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::free_port;

/// A Kafka-protocol broker the tests can create topics on.
pub(crate) trait Broker: Send {
    /// `host:port`.
    fn bootstrap(&self) -> String;
    /// Creates a topic and waits until its metadata is visible.
    fn create_topic(&mut self, name: &str, partitions: i32);
    /// Name for messages.
    fn kind(&self) -> &'static str;
}

/// librdkafka's mock cluster, run as a standalone process by `inlet-devkit`.
pub(crate) struct MockBroker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    bootstrap: String,
}

impl MockBroker {
    /// Starts a mock broker process.
    pub(crate) fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet-devkit"))
            .arg("mock-broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start inlet-devkit mock-broker");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("mock broker output");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .unwrap_or_else(|| panic!("unexpected mock broker output: {line}"))
            .to_string();
        MockBroker {
            child,
            stdin,
            stdout,
            bootstrap,
        }
    }
}

impl Broker for MockBroker {
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        writeln!(self.stdin, "create {name} {partitions}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("created {name}"));
        wait_for_topic(&self.bootstrap, name, partitions);
    }

    fn kind(&self) -> &'static str {
        "mock"
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tansu (memory storage), a second, independent broker implementation.
pub(crate) struct TansuBroker {
    child: Child,
    port: u16,
}

/// Path of the Tansu binary, from `INLET_TEST_TANSU` (set by scripts/test.sh).
pub(crate) fn tansu_binary() -> Option<PathBuf> {
    std::env::var_os("INLET_TEST_TANSU")
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

impl TansuBroker {
    /// Starts Tansu on a free port; `None` when the binary is not installed.
    /// Ready when it prints `ready in`: a port clash makes it exit 0 silently,
    /// and a TCP probe would then reach whoever owns the port.
    pub(crate) fn start() -> Option<Self> {
        let bin = tansu_binary()?;
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("tcp://127.0.0.1:{port}");
            let mut child = Command::new(&bin)
                .args(["broker", "--storage-engine", "memory://tansu/"])
                .args(["--listener-url", &addr, "--advertised-listener-url", &addr])
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tansu");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("ready in") {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(20)).is_ok()
                && child.try_wait().unwrap().is_none()
            {
                return Some(TansuBroker { child, port });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tansu did not start");
    }
}

impl Broker for TansuBroker {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let res = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("create topic");
        for r in res {
            r.expect("topic created");
        }
        wait_for_topic(&self.bootstrap(), name, partitions);
    }

    fn kind(&self) -> &'static str {
        "tansu"
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md
                .topics()
                .iter()
                .any(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} not visible");
        std::thread::sleep(Duration::from_millis(100));
    }
}
