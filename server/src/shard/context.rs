//! The shard's side of the transport [`Context`]: what a connection's
//! protocol state may do, carried out on this shard's connection table,
//! timers, hub and mail.
//!
//! A `ConnCtx` borrows the parts of the shard a protocol call may touch,
//! for the one connection being dispatched to. Requests for channel owners
//! become [`Mail`] through the shard's post, to another shard or (when this
//! shard owns the channel) to itself; either way the answer comes back as a
//! later call on the protocol, never during this one.

use std::time::Instant;

use bytes::Bytes;

use crate::auth::Tickets;
use crate::bus::{Mail, ReplyTo};
use crate::config::Settings;
use crate::hub::{
    ChannelName, ClientId, Cursor, Epoch, Member, MsgId, PublishItem, Replay, Standing, SubRef,
    Unsubscribed,
};
use crate::metrics::ShardMetrics;
use crate::transport::deflate::Deflater;
use crate::transport::{tick_at, waiting_since, Context, Subscribe, Tick};

use super::conns::{ConnKey, Conns, Queued, ShardHub, Subscriber};
use super::post::Post;
use super::shared::Shared;
use super::timers::Timers;

/// What a protocol call asked of the driver besides its effects.
#[derive(Debug, Default, Clone, Copy)]
pub struct Requests {
    /// Output went over the outbound limit: tell the protocol it has a
    /// slow consumer.
    pub slow: bool,
    /// Feed the kept input again.
    pub resume: bool,
}

/// The context of one protocol call on connection `key`.
#[derive(Debug)]
pub struct ConnCtx<'a> {
    /// The connection.
    pub key: ConnKey,
    /// The current tick.
    pub now: Tick,
    /// When tick 0 was.
    pub started: Instant,
    /// The node is draining.
    pub draining: bool,
    /// What every shard shares.
    pub shared: &'a Shared,
    /// The connection table.
    pub conns: &'a mut Conns,
    /// The deadlines.
    pub timers: &'a mut Timers,
    /// The hub.
    pub hub: &'a mut ShardHub,
    /// Mail out.
    pub post: &'a mut Post,
    /// The shard's request counter.
    pub next_token: &'a mut u32,
    /// Subscriptions that fell behind, for the shard's lag check.
    pub behind: &'a mut Vec<(ConnKey, SubRef)>,
    /// The shard's permessage-deflate compressors and inflater.
    pub deflater: &'a mut Deflater,
    /// What the call asked of the driver.
    pub requests: Requests,
}

impl ConnCtx<'_> {
    fn token(&mut self) -> u32 {
        let t = *self.next_token;
        *self.next_token = t.wrapping_add(1);
        t
    }

    fn reply_to(&mut self) -> ReplyTo {
        ReplyTo {
            shard: self.post.me(),
            conn: self.key.handle(),
            token: self.token(),
        }
    }

    /// The subscription `at`, if it is this connection's.
    fn own_sub(&self, at: SubRef) -> Option<Subscriber> {
        self.hub
            .sub(at)
            .map(|s| s.subscriber)
            .filter(|s| s.key == self.key)
    }

    fn metrics_of(&self) -> &ShardMetrics {
        &self.shared.metrics[self.post.me()]
    }
}

impl Context for ConnCtx<'_> {
    fn now(&self) -> Tick {
        self.now
    }

    fn unix_time(&self) -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_secs())
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn metrics(&self) -> &ShardMetrics {
        self.metrics_of()
    }

    fn tickets(&self) -> &Tickets {
        &self.shared.tickets
    }

    fn send(&mut self, bytes: Bytes) {
        self.send_message(bytes, 0);
    }

    fn send_message(&mut self, bytes: Bytes, seq: u64) {
        if self.conns.queue(self.key, bytes, seq) == Queued::Overflow {
            self.requests.slow = true;
        }
    }

    fn discard_output(&mut self) -> Option<u64> {
        self.requests.slow = false;
        self.conns.discard_queued(self.key)
    }

    fn output_pending(&self) -> bool {
        self.conns.outbound(self.key) > 0
    }

    fn set_timer(&mut self, at: Option<Tick>) {
        self.timers.set(self.conns, self.key, at);
    }

    fn deflater(&mut self) -> &mut Deflater {
        self.deflater
    }

    fn resume_input(&mut self) {
        self.requests.resume = true;
    }

    fn subscribe(&mut self, request: Subscribe) -> SubRef {
        let at = self.hub.add_sub(
            &request.channel,
            Subscriber {
                key: self.key,
                format: request.format,
                deflate: request.deflate,
                behind_since: 0,
            },
        );
        let me = self.post.me();
        let owner = self.hub.owner(&request.channel);
        self.post.send(
            owner,
            Mail::Subscribe {
                from: me,
                conn: self.key.handle(),
                at,
                channel: request.channel,
                since: request.since,
                member: request.presence,
                durable: request.durable.map(Box::new),
            },
        );
        at
    }

    fn accept_replay(&mut self, at: SubRef, replay: &Replay) -> bool {
        let Some(s) = self.own_sub(at) else {
            return false;
        };
        let Some(before) = self.hub.take_replay(at, &s, replay) else {
            return false;
        };
        if let Standing::Behind(..) = replay.standing() {
            let was_behind = matches!(before, Standing::Behind(..));
            let since = waiting_since(
                was_behind.then_some(s.behind_since),
                self.now,
                replay.rest_since.map(|t| tick_at(self.started, t)),
            );
            if let Some(sub) = self.hub.sub_mut(at) {
                sub.subscriber.behind_since = since;
            }
            if !was_behind {
                self.behind.push((self.key, at));
            }
            self.conns.mark_behind(self.key);
        }
        true
    }

    fn position(&self, at: SubRef) -> Option<u64> {
        self.own_sub(at)?;
        match self.hub.sub(at)?.standing() {
            Standing::Live(seq) => Some(seq),
            _ => None,
        }
    }

    fn cursor(&self, at: SubRef) -> Option<u64> {
        self.own_sub(at)?;
        match self.hub.sub(at)?.standing() {
            Standing::Live(seq) | Standing::Behind(seq, _) => Some(seq),
            Standing::Pending => None,
        }
    }

    fn needs_catch_up(&self, at: SubRef) -> bool {
        self.own_sub(at).is_some()
            && self
                .hub
                .sub(at)
                .is_some_and(|s| matches!(s.standing(), Standing::Behind(_, false)))
    }

    fn catch_up(&mut self, at: SubRef) {
        let Some(s) = self.own_sub(at) else {
            return;
        };
        let Some(Standing::Behind(cursor, false)) = self.hub.sub(at).map(|s| s.standing()) else {
            return;
        };
        self.hub
            .set_standing(at, &s, Standing::Behind(cursor, true));
        let me = self.post.me();
        let conn = self.key.handle();
        self.post.send(me, Mail::CatchUp { conn, at });
    }

    fn channel(&self, at: SubRef) -> Option<ChannelName> {
        self.own_sub(at)?;
        self.hub.channel_name(at.chan)
    }

    fn unsubscribe(&mut self, at: SubRef, presence: Option<Member>) {
        let Some(s) = self.own_sub(at) else {
            return;
        };
        let left = presence.and_then(|member| Some((self.hub.channel_name(at.chan)?, member)));
        if let Unsubscribed::LastLocal(name) = self.hub.remove_sub(at, &s) {
            let owner = self.hub.owner(&name);
            let from = self.post.me();
            self.post.send(
                owner,
                Mail::Unsubscribe {
                    from,
                    channel: name,
                },
            );
        }
        if let Some((channel, member)) = left {
            let owner = self.hub.owner(&channel);
            self.post.send(owner, Mail::Left { channel, member });
        }
    }

    fn publish(&mut self, items: Vec<PublishItem>) -> u32 {
        let reply = self.reply_to();
        if let Some(bridge) = self.shared.bridge.as_ref() {
            // In a cluster Redis numbers and stores every message; the
            // owners hear of it through Pub/Sub like every other node.
            if let Err(reason) = bridge.publish(reply, items) {
                let reason = reason.to_string();
                self.post
                    .send(self.post.me(), Mail::PublishRefused { reply, reason });
            }
            return reply.token;
        }
        let shards = self.post.shards();
        let mut by_owner: Vec<Vec<PublishItem>> = (0..shards).map(|_| Vec::new()).collect();
        for item in items {
            by_owner[self.hub.owner(&item.channel)].push(item);
        }
        for (owner, items) in by_owner.into_iter().enumerate() {
            if !items.is_empty() {
                self.post.send(owner, Mail::Publish { reply, items });
            }
        }
        reply.token
    }

    fn ack(&mut self, channel: ChannelName, who: Cursor, id: MsgId, subscribed: bool) -> u32 {
        let reply = self.reply_to();
        let owner = self.hub.owner(&channel);
        self.post.send(
            owner,
            Mail::Ack {
                reply,
                channel,
                who,
                id,
                subscribed,
            },
        );
        reply.token
    }

    fn query_unread(&mut self, who: Cursor) -> (u32, usize) {
        let reply = self.reply_to();
        let shards = self.post.shards();
        for shard in 0..shards {
            let who = who.clone();
            self.post.send(shard, Mail::UnreadQuery { reply, who });
        }
        (reply.token, shards)
    }

    fn query_presence(&mut self, channel: ChannelName) -> u32 {
        let reply = self.reply_to();
        let owner = self.hub.owner(&channel);
        self.post
            .send(owner, Mail::PresenceQuery { reply, channel });
        reply.token
    }

    fn client_id(&self) -> ClientId {
        ClientId(self.key.client_id(self.post.me()).0 ^ self.shared.client_salt)
    }

    fn node_epoch(&self) -> Epoch {
        self.hub.epoch()
    }

    fn channel_epoch(&self, at: SubRef) -> Epoch {
        self.hub.channel_epoch(at.chan)
    }

    fn overloaded(&self) -> bool {
        self.shared.overloaded()
    }

    fn admits_channel(&self, channel: &ChannelName) -> bool {
        self.hub.local_channel(channel).is_some()
            || self.shared.channels() < self.shared.settings.max_channels
    }

    fn draining(&self) -> bool {
        self.draining
    }

    fn cluster_degraded(&self) -> bool {
        self.shared.cluster_degraded()
    }

    fn store_failed(&self) -> Option<std::sync::Arc<str>> {
        self.shared.store_failed()
    }

    fn render_metrics(&self) -> String {
        self.shared.render_metrics()
    }
}
