//! A running `inlet run` process whose log lines the test can wait for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `inlet run -c <config>` in the background.
pub struct Running {
    /// The child process.
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `inlet run` (continuous) on `config`.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts `inlet run` with extra environment (e.g. config overrides).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_args(config, env, &["run"])
    }

    /// Starts `inlet <args> -c <config>`, e.g. `&["run", "--available-now"]`.
    pub fn start_args(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = super::inlet()
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
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `n` lines contain `needle`.
    pub fn wait_for(&self, needle: &str, n: usize, limit: Duration) -> bool {
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
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, with a limit; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
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

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
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
