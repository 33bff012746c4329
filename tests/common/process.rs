//! The inlet binary: run to completion with a time limit, or in the
//! background as a process whose log lines and metrics the test can wait for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The inlet binary, logging with its default filter (or `INLET_TEST_LOG`).
pub(crate) fn inlet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inlet"));
    c.env_remove("INLET_LOG");
    if let Ok(filter) = std::env::var("INLET_TEST_LOG") {
        c.env("INLET_LOG", filter);
    }
    c
}

/// Runs `inlet run -c <config> --available-now` to completion, with a time limit.
pub(crate) fn run_available_now(config: &Path) -> std::process::Output {
    let child = inlet()
        .args(["run", "--available-now", "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

/// Waits for a child with a time limit, killing it on expiry. Its output is
/// drained while it runs, so a chatty child never blocks on a full pipe.
pub(crate) fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "inlet did not finish in {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A plain HTTP/1.1 GET to 127.0.0.1: (status code, body).
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// TOML serving a process's metrics on 127.0.0.1:`port` (for a config's
/// `extra`), so a test can wait for its counters.
pub(crate) fn metrics_toml(port: u16) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// `inlet run -c <config>` in the background.
pub(crate) struct Running {
    /// The child process.
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `inlet run` (continuous) on `config`.
    pub(crate) fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts `inlet run` with extra environment (e.g. config overrides).
    pub(crate) fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_args(config, env, &["run"])
    }

    /// Starts `inlet <args> -c <config>`, e.g. `&["run", "--available-now"]`.
    pub(crate) fn start_args(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = inlet()
            .envs(env.iter().copied())
            .args(args)
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start inlet run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("INLET_TEST_ECHO").is_some() {
                    eprintln!("[inlet] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, lines }
    }

    /// Log lines so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines containing `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `n` lines contain `needle`.
    pub(crate) fn wait_for(&self, needle: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.count(needle) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub(crate) fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, with a limit; returns the exit code.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "inlet did not exit within {limit:?}; log:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the process's metrics on `port` (see [`metrics_toml`])
    /// count at least `n` messages decoded from `topic`; fails with its log
    /// on time-out.
    pub(crate) fn wait_consumed(&self, port: u16, topic: &str, n: u64, limit: Duration) {
        let prefix = format!("inlet_records_consumed_total{{topic=\"{topic}\"}} ");
        let consumed = || -> Option<u64> {
            let (_, body) = http_get(port, "/metrics")?;
            let line = body.lines().find(|l| l.starts_with(&prefix))?;
            line[prefix.len()..].trim().parse().ok()
        };
        let deadline = Instant::now() + limit;
        while consumed().is_none_or(|c| c < n) {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} messages of {topic} consumed; log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code if the process has exited (`Some(-1)`: by a signal).
    pub(crate) fn child_exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .unwrap()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
