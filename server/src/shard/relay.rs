//! The owner side of a channel in a cluster: what a shard does with the
//! channels it owns when Redis, not the shard, numbers their messages and
//! keeps their history.
//!
//! The owner keeps a copy of each channel the node follows (its epoch,
//! last sequence number and the newest of its history: `Hub::owner_load`,
//! `Hub::owner_append`), so subscriptions, resumes and catch-ups are
//! answered from memory exactly as on a single node. This module keeps
//! that copy in step with Redis, one [`Track`] per channel:
//!
//! * **Following.** A channel's first subscription on the node asks the
//!   bridge to follow it (subscribe to its topic, then read its history).
//!   Until the history arrives, subscription requests are held; then the
//!   copy is loaded and they are answered as usual.
//! * **Live.** Each message Pub/Sub brings is judged by
//!   [`cluster::sequence`](crate::cluster::sequence): the next one is
//!   appended and fanned out to the node's interested shards (once per
//!   node); a duplicate is dropped; a gap or a new epoch sends the owner
//!   to history first.
//! * **Reading.** While a read is on its way, arriving messages wait
//!   (bounded), and are judged again once the read is applied — so a read
//!   racing the live stream yields each message exactly once, in order.
//!   A failed read is asked again at the next housekeeping.
//!
//! * **Durable subscriptions.** Redis keeps the cursors
//!   ([`cluster::cursors`](crate::cluster::cursors)), so a client acks on
//!   one node and resumes on another: a durable subscription first asks
//!   the bridge for its cursor (created "from now" if it has none), then
//!   goes on as any other, resuming from the cursor when it names no
//!   `since`. Acks go to the bridge, which answers the connection; so do
//!   unread queries (`GET /unread`), which the bridge answers from the
//!   identity's index of channels in Redis.
//!
//! Every few seconds the owner asks Redis for the newest id of each
//! channel it follows. A channel found behind is looked at again at the
//! next housekeeping (a second later): Redis answers the probe on another
//! connection than Pub/Sub, so under load the probe often overtakes a
//! message on its way, and that is no stall. One still behind what the
//! probe saw (a Pub/Sub that silently stopped) reads what it missed. When the Pub/Sub connection comes back after a
//! loss, every channel reads what it missed before going on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::bus::Mail;
use crate::bus::{ConnHandle, FromRedis, ReplyTo};
use crate::cluster::bridge::{origin, Bridge, ToRedis};
use crate::cluster::sequence::{Sequence, Verdict};
use crate::hub::{AckError, ChannelName, Cursor, CursorState, Member, Message, MsgId, SubRef};

use super::conns::ShardHub;
use super::owner;
use super::post::Post;

/// How often each followed channel is checked against Redis's newest id.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Messages kept while a read is on its way; past this the oldest are
/// dropped, and the gap they leave is read again.
const EARLY_MAX: usize = 4096;

/// A subscription request waiting for the channel's first read.
#[derive(Debug)]
pub struct Held {
    /// The subscriber's shard.
    pub from: usize,
    /// The subscriber.
    pub conn: ConnHandle,
    /// Its subscription there.
    pub at: SubRef,
    /// Its resume point.
    pub since: Option<MsgId>,
    /// Who joins the presence, if anyone.
    pub member: Option<Member>,
    /// A durable subscription: whose cursor.
    pub durable: Option<Cursor>,
    /// Its cursor once Redis gave it, and whether Redis created it.
    pub cursor: Option<(CursorState, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the first read; nothing loaded yet.
    Following,
    /// In step with Redis.
    Live,
    /// A read is on its way (a gap, a new epoch, a reconnection, a stall).
    Reading,
}

/// One followed channel.
#[derive(Debug)]
struct Track {
    stage: Stage,
    /// The last read failed: ask again at the next housekeeping.
    failed: bool,
    sequence: Sequence,
    held: Vec<Held>,
    /// Messages that arrived during a read.
    early: Vec<Arc<Message>>,
}

/// The cluster state of one shard's owned channels.
#[derive(Debug)]
pub struct Relay {
    bridge: Bridge,
    tracks: HashMap<ChannelName, Track>,
    last_probe: Instant,
    /// How often this node's presence entries are refreshed.
    heartbeat: Duration,
    last_heartbeat: Instant,
    /// Durable subscriptions waiting for their cursor, by request number.
    cursors: HashMap<u64, (ChannelName, Held)>,
    /// Those whose cursor read failed: asked again at housekeeping.
    cursors_failed: Vec<(ChannelName, Held)>,
    next_token: u64,
    /// Channels a probe found behind Redis, with the id Redis had: looked
    /// at again at the next housekeeping.
    suspects: Vec<(ChannelName, MsgId)>,
}

/// What the relay needs of its shard for one call.
pub struct Owner<'a> {
    /// The shard's hub.
    pub hub: &'a mut ShardHub,
    /// Its post.
    pub post: &'a mut Post,
    /// Now.
    pub now: Instant,
    /// The replay budget (`--max-outbound`).
    pub budget: usize,
}

impl Relay {
    /// The relay of a shard of a node in a cluster.
    pub fn new(bridge: Bridge, presence_ttl: Duration, now: Instant) -> Relay {
        Relay {
            bridge,
            tracks: HashMap::new(),
            last_probe: now,
            heartbeat: presence_ttl / 3,
            last_heartbeat: now,
            cursors: HashMap::new(),
            cursors_failed: Vec::new(),
            next_token: 0,
            suspects: Vec::new(),
        }
    }

    /// A subscription request for a channel this shard owns: answered at
    /// once when the channel is in step, else held until it is (following
    /// it first if nobody on the node does yet).
    pub fn subscribe(&mut self, o: Owner<'_>, request: Held, channel: ChannelName) {
        if request.durable.is_some() && request.cursor.is_none() {
            return self.ask_cursor(channel, request);
        }
        if let Some(track) = self.tracks.get_mut(&channel) {
            if track.stage == Stage::Following {
                track.held.push(request);
                return;
            }
            if o.hub.owner_position(&channel).is_some() {
                return answer(&self.bridge, o, channel, request);
            }
            // The hub forgot the channel this turn (its last subscriber
            // left) and the relay has not heard yet: follow it afresh.
            self.tracks.remove(&channel);
        }
        self.bridge.ask(ToRedis::Follow(channel.clone()));
        self.tracks.insert(
            channel,
            Track {
                stage: Stage::Following,
                failed: false,
                sequence: Sequence::starting_after(None),
                held: vec![request],
                early: Vec::new(),
            },
        );
    }

    /// A durable subscription asks Redis for its cursor first.
    fn ask_cursor(&mut self, channel: ChannelName, request: Held) {
        let who = request.durable.clone().expect("a durable subscription");
        let token = self.next_token;
        self.next_token += 1;
        self.bridge.ask(ToRedis::Cursor {
            token,
            channel: channel.clone(),
            who,
        });
        self.cursors.insert(token, (channel, request));
    }

    /// An ack, in a cluster: Redis moves the cursor, and the bridge
    /// answers the connection (or it is refused here, `unavailable`,
    /// when the bridge cannot take it).
    pub fn ack(
        &self,
        post: &mut Post,
        reply: ReplyTo,
        channel: ChannelName,
        who: Cursor,
        id: MsgId,
        subscribed: bool,
    ) {
        let asked = self.bridge.ack(reply, channel.clone(), who, id, subscribed);
        if let Err(reason) = asked {
            let result = Err(AckError::Unavailable(reason.to_string()));
            post.send(
                reply.shard,
                Mail::Acked {
                    reply,
                    channel,
                    result,
                },
            );
        }
    }

    /// Shard `from` has no subscribers of `channel` left: its held
    /// requests go too.
    pub fn unsubscribe(&mut self, from: usize, channel: &ChannelName) {
        if let Some(track) = self.tracks.get_mut(channel) {
            track.held.retain(|h| h.from != from);
        }
        self.cursors
            .retain(|_, (c, h)| !(h.from == from && c == channel));
        self.cursors_failed
            .retain(|(c, h)| !(h.from == from && c == channel));
    }

    /// A connection of `member` left `channel`'s presence: if it was the
    /// member's last on this node, every node hears of it.
    pub fn left(&mut self, hub: &mut ShardHub, channel: &ChannelName, member: &Member) {
        if hub.presence_leave(channel, member) {
            let (channel, member) = (channel.clone(), member.to_string());
            self.bridge.ask(ToRedis::PresenceLeave { channel, member });
        }
    }

    /// `who`'s unread count on every channel where Redis has its cursor:
    /// the bridge answers `reply` ([`Mail::Unread`]).
    pub fn unread(&self, reply: ReplyTo, who: Cursor) {
        self.bridge.ask(ToRedis::Unread { reply, who });
    }

    /// Who is present on `channel`, on every node: Redis answers `reply`.
    pub fn presence(&self, reply: ReplyTo, channel: ChannelName) {
        self.bridge.ask(ToRedis::PresenceQuery { reply, channel });
    }

    /// The hub forgot these channels (nobody on the node follows them):
    /// stop following them in Redis, unless requests wait.
    pub fn forget(&mut self, channels: Vec<ChannelName>) {
        for channel in channels {
            if self.tracks.get(&channel).is_some_and(|t| t.held.is_empty()) {
                self.tracks.remove(&channel);
                self.bridge.ask(ToRedis::Unfollow(channel));
            }
        }
    }

    /// Something the bridge learned from Redis.
    pub fn on_redis(&mut self, o: Owner<'_>, what: FromRedis) {
        match what {
            FromRedis::Message { msg, local } => {
                if msg.is_stored() {
                    let latency = o.now.saturating_duration_since(msg.published_at);
                    let health = self.bridge.health();
                    health.delivery_seconds[origin(local)].observe(latency);
                }
                self.on_message(o, msg)
            }
            FromRedis::History {
                channel,
                newest,
                messages,
            } => self.on_history(o, channel, newest, messages),
            FromRedis::ReadFailed { channel } => {
                if let Some(track) = self.tracks.get_mut(&channel) {
                    track.failed = true;
                }
            }
            FromRedis::Newest { channel, newest } => {
                let Some(newest) = newest else { return };
                let Some(track) = self.tracks.get(&channel) else {
                    return;
                };
                if track.stage == Stage::Live && track.sequence.is_behind(newest) {
                    self.suspects.push((channel, newest));
                }
            }
            FromRedis::Cursor { token, found } => {
                let Some((channel, mut request)) = self.cursors.remove(&token) else {
                    return; // its subscriber left meanwhile
                };
                match found {
                    Some(found) => {
                        request.cursor = Some(found);
                        self.subscribe(o, request, channel);
                    }
                    None => self.cursors_failed.push((channel, request)),
                }
            }
            FromRedis::Resubscribed => {
                for (channel, track) in self.tracks.iter_mut() {
                    match track.stage {
                        Stage::Following => self.bridge.ask(ToRedis::Read {
                            channel: channel.clone(),
                            after: 0,
                        }),
                        _ => read_after(&self.bridge, o.hub, track, channel),
                    }
                }
            }
        }
    }

    /// Once a second: reads that failed are asked again, every
    /// [`PROBE_EVERY`] the channels are checked against Redis, and every
    /// third of the presence TTL this node's members are refreshed.
    pub fn housekeeping(&mut self, hub: &ShardHub, now: Instant) {
        for (channel, newest) in std::mem::take(&mut self.suspects) {
            let Some(track) = self.tracks.get_mut(&channel) else {
                continue; // no longer followed
            };
            if track.stage == Stage::Live && track.sequence.is_behind(newest) {
                tracing::warn!(
                    "{channel}: Redis was at {newest} a second ago and this node is still at {:?}; reading what Pub/Sub did not bring",
                    track.sequence.last().map(|l| l.to_string())
                );
                self.bridge
                    .health()
                    .stalls_repaired
                    .fetch_add(1, Ordering::Relaxed);
                read_after(&self.bridge, hub, track, &channel);
            }
        }
        for (channel, request) in std::mem::take(&mut self.cursors_failed) {
            self.ask_cursor(channel, request);
        }
        if now.duration_since(self.last_heartbeat) >= self.heartbeat {
            self.last_heartbeat = now;
            for channel in self.tracks.keys() {
                let members: Vec<String> = (hub.presence(channel).iter())
                    .map(Member::to_string)
                    .collect();
                if !members.is_empty() {
                    let channel = channel.clone();
                    self.bridge
                        .ask(ToRedis::PresenceRefresh { channel, members });
                }
            }
        }
        for (channel, track) in self.tracks.iter_mut().filter(|(_, t)| t.failed) {
            track.failed = false;
            let after = match track.stage {
                Stage::Following => 0,
                _ => hub.owner_position(channel).map_or(0, |p| p.seq),
            };
            let channel = channel.clone();
            self.bridge.ask(ToRedis::Read { channel, after });
        }
        if now.duration_since(self.last_probe) >= PROBE_EVERY && !self.tracks.is_empty() {
            self.last_probe = now;
            let live = (self.tracks.iter())
                .filter(|(_, t)| t.stage == Stage::Live)
                .map(|(c, _)| c.clone())
                .collect();
            self.bridge.ask(ToRedis::Probe(live));
        }
    }

    fn on_message(&mut self, o: Owner<'_>, msg: Arc<Message>) {
        let Some(track) = self.tracks.get_mut(&msg.channel) else {
            return; // not followed (any more)
        };
        if !msg.is_stored() {
            // Live-only: to whoever is live now; never waits for a read.
            if track.stage != Stage::Following {
                let interested = o.hub.interest(&msg.channel);
                o.post.deliver(msg, interested);
            }
            return;
        }
        if track.stage != Stage::Live {
            keep_early(track, msg);
            return;
        }
        match track.sequence.arrive(msg.id) {
            Verdict::Next => {
                if let Some(interested) = o.hub.owner_append(&msg) {
                    o.post.deliver(msg, interested);
                }
            }
            Verdict::Duplicate => {}
            Verdict::Gap { from, to } => {
                tracing::info!(
                    "{}: ids {from}..={to} did not come through Pub/Sub; reading them from history",
                    msg.channel
                );
                self.bridge
                    .health()
                    .gaps_repaired
                    .fetch_add(1, Ordering::Relaxed);
                let channel = msg.channel.clone();
                keep_early(track, msg);
                read_after(&self.bridge, o.hub, track, &channel);
            }
            Verdict::NewEpoch { old } => {
                tracing::warn!(
                    "{}: epoch {old} gave way to {} (its keys were lost in Redis); subscribers are told `reset`",
                    msg.channel,
                    msg.id.epoch
                );
                let channel = msg.channel.clone();
                keep_early(track, msg);
                track.stage = Stage::Reading;
                self.bridge.ask(ToRedis::Read { channel, after: 0 });
            }
        }
    }

    fn on_history(
        &mut self,
        o: Owner<'_>,
        channel: ChannelName,
        newest: Option<MsgId>,
        messages: Vec<Arc<Message>>,
    ) {
        let Some(track) = self.tracks.get_mut(&channel) else {
            return;
        };
        let Owner {
            hub,
            post,
            now,
            budget,
        } = o;
        match track.stage {
            Stage::Following => {
                // Redis knows nothing of the channel (its keys went between
                // the follow and the read): it starts in the node's epoch,
                // and the first publish's epoch, if another, resets it.
                let newest = newest.unwrap_or(MsgId {
                    epoch: hub.epoch(),
                    seq: 0,
                });
                hub.owner_load(&channel, newest.epoch, newest.seq, messages);
                track.sequence = Sequence::starting_after(Some(newest));
                track.stage = Stage::Live;
                for request in std::mem::take(&mut track.held) {
                    let o = Owner {
                        hub,
                        post,
                        now,
                        budget,
                    };
                    answer(&self.bridge, o, channel.clone(), request);
                }
            }
            Stage::Reading | Stage::Live => {
                let had = hub.owner_position(&channel);
                if let (Some(h), Some(n)) = (had, newest) {
                    if h.epoch == n.epoch && n.seq < h.seq {
                        // Redis went back (it lost the tail of its data):
                        // it would number those messages again under ids
                        // this node has shown. A new epoch first (the
                        // script checks again, atomically, so a stale
                        // read changes nothing); then history is read
                        // again (`ReadFailed` if not).
                        tracing::warn!(
                            "{channel}: Redis is at {n}, behind this node's {h} in the same epoch; asking for a new epoch"
                        );
                        track.stage = Stage::Reading;
                        self.bridge.ask(ToRedis::RolledBack { channel, at: h });
                        return;
                    }
                }
                let epoch_changed =
                    matches!((had, newest), (Some(h), Some(n)) if h.epoch != n.epoch);
                if epoch_changed {
                    let n = newest.expect("checked");
                    self.bridge
                        .health()
                        .epoch_changes
                        .fetch_add(1, Ordering::Relaxed);
                    // The copy starts over in the new epoch; every shard's
                    // subscribers are told `reset` by the first message
                    // they see of it (see `fanout`).
                    hub.owner_load(&channel, n.epoch, 0, Vec::new());
                }
                let mut last = hub.owner_position(&channel).map_or(0, |p| p.seq);
                for msg in messages {
                    if msg.id.seq <= last {
                        continue;
                    }
                    if msg.id.seq > last + 1 {
                        tracing::warn!(
                            "{channel}: ids {}..={} left Redis history before this node read them; its subscribers miss them",
                            last + 1,
                            msg.id.seq - 1
                        );
                    }
                    last = msg.id.seq;
                    if let Some(interested) = hub.owner_append(&msg) {
                        post.deliver(msg, interested);
                    }
                }
                track.sequence = Sequence::starting_after(hub.owner_position(&channel));
                track.stage = Stage::Live;
            }
        }
        // What came meanwhile, judged again.
        let early = std::mem::take(&mut track.early);
        for msg in early {
            let o = Owner {
                hub,
                post,
                now,
                budget,
            };
            self.on_message(o, msg);
        }
    }
}

/// Answers a subscription request from the channel's copy. A member
/// joining is recorded in Redis for every node, and announced to all
/// through the channel's topic — this node's subscribers included.
fn answer(bridge: &Bridge, o: Owner<'_>, channel: ChannelName, r: Held) {
    if let Some(member) = r.member {
        if o.hub.presence_join(&channel, member.clone()) {
            let member = member.to_string();
            let channel = channel.clone();
            bridge.ask(ToRedis::PresenceJoin { channel, member });
        }
    }
    let Some((state, created)) = r.cursor else {
        return owner::subscribe(
            o.hub, o.post, o.now, o.budget, r.from, r.conn, r.at, channel, r.since, None, None,
        );
    };
    // A durable subscription without `since` resumes from its cursor; a
    // cursor just created is "now" in Redis, which this node's copy may
    // not have reached: it starts from the copy's now instead (what it
    // then gets live is after the cursor, or acked again harmlessly). But
    // a cursor behind the copy's end — an inbox's, made just below its
    // oldest message, or any made before the copy's latest messages came
    // — replays from the cursor: those messages are unread.
    let since = match (r.since, created) {
        (Some(since), _) => Some(since),
        (None, true) => match o.hub.owner_position(&channel) {
            Some(p) if p.epoch == state.cursor.epoch && p.seq > state.cursor.seq => {
                Some(state.cursor)
            }
            _ => None,
        },
        (None, false) => {
            let at = state.cursor;
            // The cursor may be ahead of the copy (acked on another node
            // a moment ago, the message not here yet): from the copy's
            // end, never `unknown`.
            match o.hub.owner_position(&channel) {
                Some(p) if p.epoch == at.epoch && p.seq < at.seq => Some(p),
                _ => Some(at),
            }
        }
    };
    let mut replay = o.hub.owner_subscribe(&channel, r.from, since, o.budget);
    replay.durable = Some(Box::new(state));
    o.post.send(
        r.from,
        Mail::Replayed {
            conn: r.conn,
            at: r.at,
            replay: Box::new(replay),
        },
    );
}

/// Sends the track to history: everything after what the owner holds.
fn read_after(bridge: &Bridge, hub: &ShardHub, track: &mut Track, channel: &ChannelName) {
    track.stage = Stage::Reading;
    let after = hub.owner_position(channel).map_or(0, |p| p.seq);
    bridge.ask(ToRedis::Read {
        channel: channel.clone(),
        after,
    });
}

fn keep_early(track: &mut Track, msg: Arc<Message>) {
    if track.early.len() >= EARLY_MAX {
        track.early.remove(0);
    }
    track.early.push(msg);
}
