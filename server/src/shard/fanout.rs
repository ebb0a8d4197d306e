//! Fan-out: from a published message to the bytes each of this shard's
//! subscribers receives, in its transport's format.
//!
//! Deliveries are held until the turn's answers have been handed to the
//! kernel (see `post`), then run here. Per message and shard each shared
//! format is encoded at most once and every subscriber's queue gets a
//! reference to the same bytes; only the formats that need per-connection
//! work (a multi-channel SSE stream's cursor, a held poll's answer) go
//! through the subscriber's protocol state.
//!
//! # Delivery by cursor
//! A subscriber whose connection already has a full window queued or in
//! flight (`--max-outbound`) is not sent the message: the subscription
//! *falls behind* at its cursor (the last message queued to it) and the
//! message stays where every message already is, in its channel's history.
//! When the socket has taken the queue, the subscription catches up from
//! history in window-sized steps (`Protocol::handle_drained`,
//! `Context::catch_up`) and goes live again once it reaches the end. So a
//! reader is fed at its socket's pace: a burst costs it nothing but a few
//! catch-ups, and a reader that stops reading costs one window, not a copy
//! of every message. Live-only messages (ephemeral, presence) are not in
//! history: a subscription that is behind misses them.

use std::sync::Arc;

use crate::bus::{ConnHandle, Mail};
use crate::hub::{CatchUpFrom, Message, MsgId, Replay, Reset, ResetReason, Standing, SubRef};
use crate::metrics::ShardMetrics;
use crate::transport::Encodings;

use super::conns::{ConnKey, Offered, Subscriber};
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
        if msg.is_stored() && msg.id.epoch != self.hub.channel_epoch(chan) {
            self.start_epoch(chan, msg);
        }
        let seq = if msg.is_stored() { msg.id.seq } else { 0 };
        let mut enc = Encodings::new(msg, remote);
        let mut per_connection: Vec<(SubRef, Subscriber)> = Vec::new();
        let mut full: Vec<(SubRef, Subscriber)> = Vec::new();
        let mut delivered = 0u64;
        let mut skipped = 0u64;
        for (at, s) in self.hub.subs_at(chan) {
            let sub = s.subscriber;
            if !s.is_live() {
                let behind = matches!(s.standing(), Standing::Behind(..));
                if seq == 0 && behind && sub.format.wants(msg.event) {
                    skipped += 1; // live-only: not in history to catch up from
                }
                continue;
            }
            if !sub.format.wants(msg.event) {
                continue;
            }
            if msg.is_stored() && s.live_after >= seq {
                continue; // already covered by the subscriber's replay
            }
            if !sub.format.is_shared() {
                per_connection.push((at, sub));
                continue;
            }
            let bytes = match sub.deflate {
                None => enc.get(sub.format),
                Some(d) => enc.deflated(sub.format, d, &mut self.deflater),
            };
            match self.conns.offer(sub.key, bytes, seq) {
                Offered::Queued => delivered += 1,
                Offered::Full => full.push((at, sub)),
                Offered::Gone => {}
            }
        }
        ShardMetrics::add(&self.metrics.deliveries, delivered);
        ShardMetrics::add(&self.metrics.live_only_skipped, skipped);
        for (at, sub) in per_connection {
            let shared = enc.get(sub.format);
            if !sub.format.is_poll() && self.conns.window_full(sub.key, shared.len()) {
                full.push((at, sub));
                continue;
            }
            self.dispatch(sub.key, |p, ctx| p.handle_delivery(ctx, msg, &shared));
        }
        for (at, sub) in full {
            self.fall_behind(at, sub, msg);
        }
        if msg.is_stored() {
            self.hub.keep_for_behind(chan, msg);
        }
    }

    /// In a cluster, a channel's keys were lost in Redis and it started
    /// over in `msg`'s epoch: every subscription that has a position is
    /// told `reset` (reason `epoch`, from its last position in the old
    /// one) and goes on from the new epoch's start, so `msg` and what
    /// follows reach it with ids a client accepts.
    fn start_epoch(&mut self, chan: u32, msg: &Message) {
        let old = self.hub.channel_epoch(chan);
        let seen = self.hub.seen(chan);
        let positioned: Vec<(SubRef, Subscriber, u64)> = (self.hub.subs_at(chan))
            .filter_map(|(at, s)| match s.standing() {
                Standing::Pending => None,
                Standing::Live(seq) => Some((at, s.subscriber, seq.max(seen))),
                Standing::Behind(seq, _) => Some((at, s.subscriber, seq)),
            })
            .collect();
        self.hub.set_channel_epoch(chan, msg.id.epoch);
        for (at, sub, seq) in positioned {
            let replay = Replay {
                channel: msg.channel.clone(),
                epoch: msg.id.epoch,
                messages: Vec::new(),
                reset: Some(Reset {
                    reason: ResetReason::Epoch,
                    since: MsgId { epoch: old, seq },
                    missed: None,
                }),
                last_seq: 0,
                rest_since: None,
                durable: None,
            };
            self.dispatch(sub.key, |p, ctx| p.handle_replay(ctx, at, replay));
        }
    }

    /// `sub`'s connection has a full window: leave `msg` in history and
    /// mark the subscription behind at the message before it (see the
    /// module docs).
    fn fall_behind(&mut self, at: SubRef, mut sub: Subscriber, msg: &Message) {
        if !msg.is_stored() {
            // Not in history: a reader that is behind misses it.
            ShardMetrics::add(&self.metrics.live_only_skipped, 1);
            return;
        }
        sub.behind_since = self.tick;
        if let Some(s) = self.hub.sub_mut(at) {
            s.subscriber = sub;
        }
        let standing = Standing::Behind(msg.id.seq - 1, false);
        if self.hub.set_standing(at, &sub, standing) {
            ShardMetrics::add(&self.metrics.fell_behind, 1);
            self.conns.mark_behind(sub.key);
            self.behind.push((sub.key, at));
        }
    }

    /// A subscription that fell behind catches up (`Mail::CatchUp`): from
    /// this shard's backlog when it reaches back to the cursor, else from
    /// the owner's history.
    pub(super) fn catch_up(&mut self, conn: ConnHandle, at: SubRef) {
        let key = ConnKey::from_handle(conn);
        let budget = self.shared.settings.max_outbound;
        match self.hub.catch_up_from(at, |s| s.key == key, budget) {
            Some(CatchUpFrom::Backlog(replay)) => {
                self.dispatch(key, |p, ctx| p.handle_replay(ctx, at, replay));
            }
            Some(CatchUpFrom::Owner { channel, since }) => {
                let owner = self.hub.owner(&channel);
                let subscribe = Mail::Subscribe {
                    from: self.id,
                    conn,
                    at,
                    channel,
                    since: Some(since),
                    member: None,
                    durable: None,
                };
                self.post.send(owner, subscribe);
            }
            None => {}
        }
    }

    /// Connections whose queue has gone to the kernel while a subscription
    /// was behind: let their protocols catch up.
    pub(super) fn feed_hungry(&mut self) {
        let mut hungry = std::mem::take(&mut self.hungry);
        self.conns.take_hungry(&mut hungry);
        for key in hungry.drain(..) {
            self.dispatch(key, |p, ctx| p.handle_drained(ctx));
            self.drain_local();
        }
        self.hungry = hungry;
    }
}
