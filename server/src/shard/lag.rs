//! Readers that do not keep up.
//!
//! A subscription that falls behind (its connection's window is full, see
//! `fanout`) is recorded here. Once a second the shard looks at each: one
//! that caught up is forgotten; one behind for longer than `--max-lag` —
//! its oldest undelivered message has waited that long — is a slow
//! consumer, and its protocol ends it (`Protocol::handle_lagging`: 1008
//! with where to resume, or `event: reset`). A reader that keeps up with a
//! burst only ever falls behind briefly, and is never closed for it.

use hashbrown::HashMap;

use crate::hub::Standing;
use crate::metrics::ShardMetrics;
use crate::transport::{ticks, TICK};

use super::Shard;

impl Shard {
    /// The once-a-second check (see the module docs).
    pub(super) fn check_lagging(&mut self) {
        let max = ticks(self.shared.settings.max_lag);
        let mut behind = std::mem::take(&mut self.behind);
        let mut i = 0;
        while i < behind.len() {
            let (key, at) = behind[i];
            let since = match self.hub.sub(at) {
                Some(s) if s.subscriber.key == key => match s.standing() {
                    Standing::Behind(..) => Some(s.subscriber.behind_since),
                    _ => None,
                },
                _ => None,
            };
            let Some(since) = since else {
                behind.swap_remove(i); // caught up, or gone
                continue;
            };
            let lag = self.tick.saturating_sub(since);
            if lag < max {
                i += 1;
                continue;
            }
            behind.swap_remove(i);
            ShardMetrics::add(&self.metrics.lagging_closes, 1);
            let lag = TICK * lag;
            let limit = self.shared.settings.max_lag;
            self.lag_tally.note(self.now, lag.as_secs_f64(), || {
                format!(
                    "closing a reader that fell behind: its oldest undelivered message has waited {:.1} s (--max-lag {})",
                    lag.as_secs_f64(),
                    humantime::format_duration(limit)
                )
            });
            self.dispatch(key, |p, ctx| p.handle_lagging(ctx, at));
            self.conns.watch_notice(key); // gone already if it had no notice
            self.drain_local();
        }
        // Entries added meanwhile (a catch-up that stopped short) stay.
        behind.append(&mut self.behind);
        self.behind = behind;
        self.trim_backlogs();
        self.lag_tally.roll(self.now);
        self.slow_tally.roll(self.now);
    }

    /// Drops from each channel's backlog what no subscription behind needs
    /// any more: the messages up to the oldest cursor among them.
    fn trim_backlogs(&mut self) {
        let mut oldest: HashMap<u32, u64> = HashMap::new();
        for &(key, at) in &self.behind {
            let Some(s) = self.hub.sub(at).filter(|s| s.subscriber.key == key) else {
                continue;
            };
            if let Standing::Behind(cursor, _) = s.standing() {
                let c = oldest.entry(at.chan).or_insert(cursor);
                *c = (*c).min(cursor);
            }
        }
        for (chan, cursor) in oldest {
            self.hub.trim_backlog(chan, cursor);
        }
    }
}
