//! Fan-out: from a published message to the bytes each of this shard's
//! subscribers receives, in its transport's format.
//!
//! Deliveries are held until the turn's answers have been handed to the
//! kernel (see `post`), then run here. Per message and shard each shared
//! format is encoded at most once and every subscriber's queue gets a
//! reference to the same bytes; only the formats that need per-connection
//! work (a multi-channel SSE stream's cursor, a held poll's answer) go
//! through the subscriber's protocol state.

use std::sync::Arc;

use crate::hub::{Message, PENDING};
use crate::metrics::ShardMetrics;
use crate::transport::{Encodings, Format};

use super::conns::{ConnKey, Queued};
use super::Shard;

/// Rounds of fan-out per turn (a delivery can lead to more: a poll answered
/// resumes a pipelined publish); what is left waits for the next turn.
const FANOUT_ROUNDS: usize = 4;

impl Shard {
    /// Runs the held deliveries; `true` if some are left for the next turn.
    pub(super) fn run_fanouts(&mut self) -> bool {
        for _ in 0..FANOUT_ROUNDS {
            if !self.post.has_fanouts() {
                return false;
            }
            // The publisher first: answers queued this turn go to the
            // kernel, and shards sent answers are woken, before the
            // fan-out's sends.
            self.flush_answers();
            let mut fanouts = self.post.take_fanouts();
            for f in fanouts.drain(..) {
                self.deliver(&f.msg, f.remote);
                self.drain_local();
            }
            self.post.return_fanouts(fanouts);
        }
        self.post.has_fanouts()
    }

    /// Sends `msg` to this shard's subscribers of its channel.
    fn deliver(&mut self, msg: &Arc<Message>, remote: bool) {
        let Some(chan) = self.hub.local_channel(&msg.channel) else {
            return;
        };
        let mut enc = Encodings::new(msg, remote);
        let mut per_connection: Vec<(ConnKey, Format)> = Vec::new();
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        for s in self.hub.subs(chan) {
            let sub = s.subscriber;
            if !sub.format.wants(msg.event) || s.live_after == PENDING {
                continue;
            }
            if msg.is_stored() && s.live_after >= msg.id.seq {
                continue; // already covered by the subscriber's replay
            }
            if !sub.format.is_shared() {
                per_connection.push((sub.key, sub.format));
                continue;
            }
            match self.conns.queue(sub.key, enc.get(sub.format)) {
                Queued::Ok => delivered += 1,
                Queued::Overflow => slow.push(sub.key),
                Queued::Gone => {}
            }
        }
        ShardMetrics::add(&self.metrics.deliveries, delivered);
        for (key, format) in per_connection {
            let shared = enc.get(format);
            self.dispatch(key, |p, ctx| p.handle_delivery(ctx, msg, &shared));
        }
        for key in slow {
            self.slow_consumer(key);
        }
    }
}
