//! Progress of a bounded run: a progress bar on a terminal (offsets done out
//! of the target, rate, ETA), plain periodic log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use crate::record::TopicPartition;

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Offsets done out of the offsets to read.
#[derive(Debug)]
pub(super) struct Progress {
    what: String,
    /// Start and offsets done, per topic and partition (nested so that the
    /// per-message update borrows the topic name).
    partitions: HashMap<String, HashMap<i32, (i64, u64)>>,
    done: u64,
    total: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Tracks `total` offsets from `starts`.
    pub(super) fn new(what: &str, starts: HashMap<TopicPartition, i64>, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} offsets ({per_sec}, ETA {eta})",
                )
                .expect("static template"),
            );
            bar.set_message(what.to_string());
            bar
        });
        let now = Instant::now();
        let mut partitions: HashMap<String, HashMap<i32, (i64, u64)>> = HashMap::new();
        for ((topic, p), start) in starts {
            partitions.entry(topic).or_default().insert(p, (start, 0));
        }
        Progress {
            what: what.to_string(),
            partitions,
            done: 0,
            total,
            bar,
            started: now,
            last_log: now,
        }
    }

    /// A message at `offset` of `tp` was read: everything before it is done.
    pub(super) fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some((start, done)) = self
            .partitions
            .get_mut(topic)
            .and_then(|m| m.get_mut(&partition))
        else {
            return;
        };
        let now_done = (offset + 1 - *start).max(0) as u64;
        self.done += now_done.saturating_sub(*done);
        *done = now_done.max(*done);
        self.report();
    }

    fn report(&mut self) {
        let done = self.done.min(self.total);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                ((self.total - done) as f64 / rate) as u64
            } else {
                0
            };
            info!(
                run = %self.what,
                done,
                total = self.total,
                per_sec = rate as u64,
                eta_s = eta,
                "progress"
            );
        }
    }

    /// The run ended.
    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
