//! Logging of per-connection events that can come in floods — readers
//! closed for lagging, slow consumers, refused requests — as a summary: the
//! first few of each ten-second window in detail, then one line for the
//! window with how many there were and the worst case.

use std::time::{Duration, Instant};

use crate::metrics::{ShardMetrics, REFUSALS};

/// How long a summary window lasts.
const WINDOW: Duration = Duration::from_secs(10);

/// Events logged in detail per window.
const DETAILED: u64 = 3;

/// One kind of event. See the module docs.
#[derive(Debug)]
pub struct Tally {
    shard: usize,
    /// What the events are, for the summary ("slow consumers closed").
    what: &'static str,
    /// What `worst` measures, and its unit ("oldest lag", "s").
    worst_of: (&'static str, &'static str),
    since: Option<Instant>,
    count: u64,
    worst: f64,
}

impl Tally {
    /// A tally of `what` for shard `shard`.
    pub fn new(shard: usize, what: &'static str, worst_of: (&'static str, &'static str)) -> Tally {
        Tally {
            shard,
            what,
            worst_of,
            since: None,
            count: 0,
            worst: 0.0,
        }
    }

    /// Counts one event measuring `size`; logs `detail` if it is among the
    /// first of its window.
    pub fn note(&mut self, now: Instant, size: f64, detail: impl FnOnce() -> String) {
        self.roll(now);
        self.since.get_or_insert(now);
        self.count += 1;
        self.worst = self.worst.max(size);
        if self.count <= DETAILED {
            tracing::info!(shard = self.shard, "{}", detail());
        }
    }

    /// Ends the window if it is over, logging its summary when events were
    /// not all logged in detail. Call it about once a second.
    pub fn roll(&mut self, now: Instant) {
        let Some(since) = self.since else {
            return;
        };
        if now.duration_since(since) < WINDOW {
            return;
        }
        if self.count > DETAILED {
            tracing::info!(
                shard = self.shard,
                "{} {} in the last {} s, {} {:.1} {}",
                self.what,
                self.count,
                now.duration_since(since).as_secs(),
                self.worst_of.0,
                self.worst,
                self.worst_of.1,
            );
        }
        self.since = None;
        self.count = 0;
        self.worst = 0.0;
    }
}

/// Refused requests, summed up every ten seconds from the refusal
/// counters: one line per window with a count per reason. Each refusal is
/// logged at `debug` where it happens, with its reason.
#[derive(Debug)]
pub struct RefusalSummary {
    shard: usize,
    since: Instant,
    seen: [u64; REFUSALS.len()],
}

impl RefusalSummary {
    /// Starts counting from the counters' current values.
    pub fn new(shard: usize, now: Instant, metrics: &ShardMetrics) -> RefusalSummary {
        RefusalSummary {
            shard,
            since: now,
            seen: metrics.refusals(),
        }
    }

    /// Logs the window's refusals if it is over. Call it about once a
    /// second.
    pub fn roll(&mut self, now: Instant, metrics: &ShardMetrics) {
        if now.duration_since(self.since) < WINDOW {
            return;
        }
        let counts = metrics.refusals();
        let mut parts = Vec::new();
        let mut total = 0;
        for (i, (_, name)) in REFUSALS.iter().enumerate() {
            let n = counts[i] - self.seen[i];
            if n > 0 {
                total += n;
                parts.push(format!("{name} {n}"));
            }
        }
        if total > 0 {
            tracing::info!(
                shard = self.shard,
                "refused {total} requests in the last {} s: {}",
                now.duration_since(self.since).as_secs(),
                parts.join(", ")
            );
        }
        self.since = now;
        self.seen = counts;
    }
}
