//! Logging of per-connection events that can come in floods — readers
//! closed for lagging, slow consumers — as a summary: the first few of each
//! ten-second window in detail, then one line for the window with how many
//! there were and the worst case.

use std::time::{Duration, Instant};

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
    /// What `worst` measures ("oldest lag").
    worst_of: &'static str,
    since: Option<Instant>,
    count: u64,
    worst: Duration,
}

impl Tally {
    /// A tally of `what` for shard `shard`.
    pub fn new(shard: usize, what: &'static str, worst_of: &'static str) -> Tally {
        Tally {
            shard,
            what,
            worst_of,
            since: None,
            count: 0,
            worst: Duration::ZERO,
        }
    }

    /// Counts one event measuring `size`; logs `detail` if it is among the
    /// first of its window.
    pub fn note(&mut self, now: Instant, size: Duration, detail: impl FnOnce() -> String) {
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
                "{} {} in the last {} s, {} {:.1} s",
                self.what,
                self.count,
                now.duration_since(since).as_secs(),
                self.worst_of,
                self.worst.as_secs_f64()
            );
        }
        self.since = None;
        self.count = 0;
        self.worst = Duration::ZERO;
    }
}
