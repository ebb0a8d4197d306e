//! The channel hub: ids, history, presence and subscriber sets. One `Hub`
//! per shard; together they form the channel model every transport shares.
//!
//! The hub knows nothing of connections or transports: a subscription
//! carries whatever the shard puts in it (`S`, e.g. a connection key and a
//! framing), and the hub only stores it and hands it back.
//!
//! # Ownership
//! Every channel has one **owner shard** (`hash(name) % shards`). The owner
//! assigns message ids, keeps the bounded history used for resume, and knows
//! which other shards have subscribers ("interested" shards). Every shard,
//! owner or not, keeps the set of *its own* connections subscribed to the
//! channel. A publish therefore costs one id assignment and history append
//! on the owner, one queue item per interested shard, and one send per
//! subscriber on each shard — never one cross-shard item per subscriber.
//!
//! # Resume without gap or duplicate
//! A new subscription starts *pending*: deliveries skip it. Its shard asks
//! the owner (`owner_subscribe`), which marks the shard interested and
//! answers, in one step, with the history after the client's `since` and
//! the last sequence number issued. Because the owner → shard queue is FIFO,
//! every delivery the shard receives after that answer has a higher
//! sequence number, and every one it received before was covered by the
//! replay. The subscription then goes live "after" that sequence number.
//!
//! # Invariants
//! * Sequence numbers of a channel increase by one per message. A channel
//!   that is dropped (no subscribers, history expired) and created again
//!   starts above every sequence number its shard ever issued (`seq_floor`),
//!   so an old id can never be mistaken for a new one. With a store
//!   (`--data-dir`) the floor starts at the highest seq the node ever
//!   stored, so this holds across restarts and changes of `--shards`.
//! * With a store at `--fsync always|interval`, a message is appended to
//!   history when its id is assigned but is *durable* only once the store
//!   says so: replays and the `Unknown` check see history up to
//!   `durable_seq` only, so nobody is shown a message a crash could lose.
//!   Without a store, or at `never`, `durable_seq` is always `last_seq`.
//! * This module does no I/O and reads no clock: callers pass `now`.

pub mod backlog;
pub mod channel;
pub mod cursor;
pub mod id;
pub mod message;
#[cfg(test)]
mod retention_tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codec::ws::DataKind;
use hashbrown::HashMap;
use slab::Slab;

use crate::policy::Namespaces;

pub use backlog::Backlogs;
pub use channel::ChannelName;
pub use cursor::{AckError, Cursor, CursorState, Receipt, UnreadCounts};
pub use id::{Epoch, MsgId};
pub use message::{ClientId, Event, Member, Message};

pub use crate::policy::HistoryLimits;

/// Sentinel for a subscription waiting for its replay.
pub const PENDING: u64 = u64::MAX;

/// Flag on [`Sub::live_after`]: the subscription fell behind its
/// connection's socket. Deliveries skip it; the value's low bits are its
/// cursor (the last sequence number queued to it), from which it catches up
/// through the owner's history at the socket's pace.
pub const BEHIND: u64 = 1 << 63;

/// Flag on [`Sub::live_after`], with [`BEHIND`]: its catch-up is on its way.
pub const CATCHING_UP: u64 = 1 << 62;

/// Where a subscription stands, from its [`Sub::live_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Waiting for its first replay.
    Pending,
    /// Live: delivered every message after this sequence number.
    Live(u64),
    /// Behind at this cursor; `true` while a catch-up is on its way.
    Behind(u64, bool),
}

impl Standing {
    /// Reads a `live_after` value.
    pub fn of(live_after: u64) -> Standing {
        if live_after == PENDING {
            Standing::Pending
        } else if live_after & BEHIND != 0 {
            Standing::Behind(
                live_after & !(BEHIND | CATCHING_UP),
                live_after & CATCHING_UP != 0,
            )
        } else {
            Standing::Live(live_after)
        }
    }
}

/// One local subscription.
#[derive(Debug, Clone, Copy)]
pub struct Sub<S> {
    /// Who subscribed, as the shard names it.
    pub subscriber: S,
    /// Deliver only messages with a higher sequence number; [`PENDING`]
    /// until the owner's replay arrived; [`BEHIND`] (with the cursor) while
    /// it catches up (see [`Standing`]). Any value with the top bit set is
    /// skipped by deliveries.
    pub live_after: u64,
}

impl<S> Sub<S> {
    /// Whether deliveries reach it.
    pub fn is_live(&self) -> bool {
        self.live_after & BEHIND == 0
    }

    /// Where it stands.
    pub fn standing(&self) -> Standing {
        Standing::of(self.live_after)
    }
}

/// Where a local subscription lives in its shard's hub: the channel's and
/// the subscription's slab indices. Stable until the subscription is
/// removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubRef {
    /// The channel.
    pub chan: u32,
    /// The subscription within it.
    pub sub: u32,
}

impl SubRef {
    /// Refers to no subscription: what a handle holds once released.
    pub const NONE: SubRef = SubRef {
        chan: u32::MAX,
        sub: u32::MAX,
    };
}

/// One message to publish, with its position in the request that carried
/// it.
#[derive(Debug, Clone)]
pub struct PublishItem {
    /// Position in the publishing request (its answer lists ids in order).
    pub index: u32,
    /// Target channel.
    pub channel: ChannelName,
    /// Text or binary.
    pub kind: DataKind,
    /// Payload.
    pub payload: Bytes,
    /// Deliver live only: no id, not stored.
    pub ephemeral: bool,
}

/// Why a resume could not continue exactly where the client left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The id is from another epoch: the node restarted since.
    Epoch,
    /// Messages after the id have been evicted from history.
    Evicted,
    /// The id was never issued for this channel.
    Unknown,
    /// The subscriber fell behind by more than `--max-lag`; the stream ends
    /// and the client resumes after `since`.
    Lagging,
}

impl ResetReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Epoch => "epoch",
            ResetReason::Evicted => "evicted",
            ResetReason::Unknown => "unknown",
            ResetReason::Lagging => "lagging",
        }
    }
}

/// The signal a resuming client gets when its position is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// Why.
    pub reason: ResetReason,
    /// The id the client resumed from.
    pub since: MsgId,
    /// How many messages it missed, when known.
    pub missed: Option<u64>,
}

/// The owner's answer to a subscription, or to a subscription's catch-up:
/// what its subscriber must be sent before it can go live.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The channel.
    pub channel: ChannelName,
    /// The channel's epoch: the node's, or in a cluster the channel's own
    /// (see [`Hub::owner_load`]).
    pub epoch: Epoch,
    /// Messages after the client's `since`, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// Set when the client's position was lost.
    pub reset: Option<Reset>,
    /// The last sequence number issued when the replay was taken.
    pub last_seq: u64,
    /// `None` when the messages reach `last_seq`, so the subscription can
    /// go live after it. Otherwise the replay stopped at its byte budget:
    /// the subscription continues from its last message, and this is when
    /// the first message left out was published (how long the
    /// subscriber's oldest undelivered message has waited).
    pub rest_since: Option<Instant>,
    /// For a durable subscription's first replay: its cursor and unread
    /// count (`None` for every other replay). Boxed, so replays (and the
    /// mail carrying them) grow by a pointer, not by the state.
    pub durable: Option<Box<CursorState>>,
}

impl Replay {
    /// The channel's position when the replay was taken: its epoch and
    /// last sequence number.
    pub fn end(&self) -> MsgId {
        MsgId {
            epoch: self.epoch,
            seq: self.last_seq,
        }
    }

    /// Whether the messages reach `last_seq`.
    pub fn is_complete(&self) -> bool {
        self.rest_since.is_none()
    }

    /// Where the subscription stands once the replay is sent: live after
    /// `last_seq`, or behind at the replay's last message.
    pub fn standing(&self) -> Standing {
        match self.messages.last() {
            Some(m) if !self.is_complete() => Standing::Behind(m.id.seq, false),
            _ => Standing::Live(self.last_seq),
        }
    }
}

/// What an accepted ack did (see [`Hub::ack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Where the cursor stands now.
    pub state: CursorState,
    /// It moved (store it); `false` for an ack of an older id.
    pub moved: bool,
    /// Where it stood before (`None`: created by this ack).
    pub before: Option<u64>,
}

/// Where a catch-up comes from (see [`Hub::catch_up_from`]).
#[derive(Debug)]
pub enum CatchUpFrom {
    /// This shard's backlog: the replay to hand the subscriber.
    Backlog(Replay),
    /// The owner's history: ask it for what follows `since`.
    Owner {
        /// The channel.
        channel: ChannelName,
        /// The subscription's cursor.
        since: MsgId,
    },
}

/// What became of a channel when a local subscription was removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsubscribed {
    /// Other local subscribers remain, or this shard owns the channel.
    Kept,
    /// That was this shard's last subscriber of a channel owned elsewhere:
    /// tell the owner.
    LastLocal(ChannelName),
}

/// Owner-side state of a channel.
#[derive(Debug)]
struct Owned {
    /// The epoch its ids carry: the node's, or in a cluster the channel's
    /// own, as Redis holds it.
    epoch: Epoch,
    /// Members subscribed over multiplexed WebSockets, on every shard,
    /// with how many connections each has subscribed.
    presence: HashMap<Member, u32>,
    /// The first sequence number of this incarnation of the channel.
    first_seq: u64,
    /// The last sequence number issued (`first_seq - 1` before any).
    last_seq: u64,
    /// The last sequence number the store holds as `--fsync` promises:
    /// what replays may show. `last_seq` except while publishes wait for
    /// the disk.
    durable_seq: u64,
    history: VecDeque<Arc<Message>>,
    /// The payload bytes `history` holds (what `history-bytes` limits).
    bytes: usize,
    /// Bit per shard with subscribers (the owner's own bit is never set).
    interested: u64,
    /// Its namespace's history limits, looked up once at creation.
    limits: HistoryLimits,
    /// Durable cursors (see [`cursor`]): the last seq each identity and
    /// device acknowledged. Empty without a store.
    cursors: HashMap<Cursor, u64>,
}

impl Owned {
    /// The oldest retained seq (`durable_seq + 1` when none is).
    fn oldest(&self) -> u64 {
        self.history
            .front()
            .map_or(self.durable_seq + 1, |m| m.id.seq)
    }

    /// Where cursor `seq` stands, as the client is told.
    fn cursor_state(&self, seq: u64) -> CursorState {
        CursorState {
            cursor: MsgId {
                epoch: self.epoch,
                seq,
            },
            unread: cursor::unread(self.durable_seq, self.oldest(), seq),
        }
    }

    /// Appends `msg` to the history, trimmed to its limits; returns how
    /// many messages it evicted.
    fn keep(&mut self, msg: &Arc<Message>) -> u64 {
        let limits = &self.limits;
        if limits.max_messages == 0 {
            return 0;
        }
        self.history.push_back(msg.clone());
        self.bytes += msg.payload.len();
        if limits.inbox.is_some() {
            return self.trim(None);
        }
        // The publish path: a full history drops one message per publish.
        let (count, most) = (limits.max_messages, limits.max_bytes);
        let mut evicted = 0;
        while self.history.len() > count
            || (most != 0 && self.bytes > most && self.history.len() > 1)
        {
            if let Some(m) = self.history.pop_front() {
                self.bytes -= m.payload.len();
            }
            evicted += 1;
        }
        evicted
    }

    /// Replaces the history with `messages` (oldest first), trimmed to its
    /// limits; returns how many it dropped.
    fn replace_history(&mut self, messages: Vec<Arc<Message>>) -> u64 {
        self.history = messages.into();
        self.bytes = self.history.iter().map(|m| m.payload.len()).sum();
        self.trim(None)
    }

    /// Drops the oldest messages the limits no longer keep, and with `now`
    /// those past their age; returns how many. The rules:
    /// * over `history-size` or `history-bytes` (the newest message always
    ///   stays), or older than `history-ttl`: dropped;
    /// * but in an inbox only once every cursor of the channel is past it
    ///   (a channel without cursors keeps everything for its reader) —
    ///   unless it is older than `inbox-ttl`, or the inbox is over its hard
    ///   bound ([`HistoryLimits::most_kept`], `most_bytes`).
    fn trim(&mut self, now: Option<Instant>) -> u64 {
        let limits = self.limits;
        let acked = match limits.inbox {
            Some(_) => self.cursors.values().copied().min().unwrap_or(0),
            None => u64::MAX,
        };
        let (hard_count, hard_bytes) = (limits.most_kept(), limits.most_bytes());
        let mut dropped = 0;
        while let Some(front) = self.history.front() {
            let len = self.history.len();
            let bytes = self.bytes;
            let over =
                |count: usize, most: usize| len > count || (most != 0 && bytes > most && len > 1);
            let age = now.map_or(std::time::Duration::ZERO, |t| {
                t.saturating_duration_since(front.published_at)
            });
            let drop = over(hard_count, hard_bytes)
                || limits.inbox.is_some_and(|ttl| age > ttl)
                || (front.id.seq <= acked
                    && (over(limits.max_messages, limits.max_bytes) || age > limits.max_age));
            if !drop {
                break;
            }
            if let Some(m) = self.history.pop_front() {
                self.bytes -= m.payload.len();
            }
            dropped += 1;
        }
        dropped
    }

    /// The oldest seq the history keeps, or the next to be issued: what a
    /// trim tells the store to keep from.
    fn kept_from(&self) -> u64 {
        self.history.front().map_or(self.last_seq + 1, |m| m.id.seq)
    }

    /// The payload bytes of the history, counted again (tests check that
    /// `bytes` always equals it).
    #[cfg(test)]
    fn counted_bytes(&self) -> usize {
        self.history.iter().map(|m| m.payload.len()).sum()
    }
}

#[derive(Debug)]
struct Channel<S> {
    name: ChannelName,
    /// The channel's epoch as this shard's subscribers know it: the last
    /// one a replay or delivery showed them. The node's epoch, except in a
    /// cluster, where each channel has its own (stored with it in Redis)
    /// and it changes when Redis lost it.
    epoch: Epoch,
    /// The last stored message of `epoch` delivered on this shard: where
    /// its live subscribers stand when the epoch changes.
    seen: u64,
    subs: Slab<Sub<S>>,
    owned: Option<Owned>,
}

/// Counters the hub keeps for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    /// Messages published on channels this shard owns.
    pub published: u64,
    /// Messages dropped from history (by count or age).
    pub evictions: u64,
}

/// One shard's view of the channel model. `S` is what a local
/// subscription records about its subscriber.
#[derive(Debug)]
pub struct Hub<S> {
    shard: usize,
    shards: usize,
    epoch: Epoch,
    namespaces: Arc<Namespaces>,
    index: HashMap<ChannelName, u32>,
    channels: Slab<Channel<S>>,
    /// Channels this shard owns (of `channels`).
    owned: usize,
    seq_floor: u64,
    stats: HubStats,
    backlogs: Backlogs,
    /// In a cluster: the owner's channel state is a copy of what Redis
    /// holds (see [`Hub::mirrored`]).
    mirror: bool,
    /// In a cluster: owned channels forgotten since the last
    /// [`Hub::take_forgotten`], whose Redis subscription can end.
    forgotten: Vec<ChannelName>,
    /// With a store at `always`/`interval`: new messages wait for
    /// [`Hub::set_durable`] before replays show them.
    hold: bool,
    /// With a store: the channels whose history was trimmed since the
    /// last [`Hub::take_trims`], with the oldest seq kept, so the owner
    /// can tell the store to drop the rest. `None` without a store.
    trims: Option<Vec<(ChannelName, u64)>>,
    /// Per identity (`sub`), the owned channels where it has a cursor (of
    /// any device): what `GET /unread` reads, without a scan of every
    /// channel. Kept with the cursors.
    cursors_of: HashMap<Arc<str>, Vec<ChannelName>>,
}

impl<S: Copy + PartialEq> Hub<S> {
    /// The hub of shard `shard` out of `shards`; each channel keeps the
    /// history its namespace sets.
    pub fn new(shard: usize, shards: usize, epoch: Epoch, namespaces: Arc<Namespaces>) -> Self {
        assert!(shards <= 64, "interest sets hold 64 shards");
        Hub {
            shard,
            shards,
            epoch,
            namespaces,
            index: HashMap::new(),
            channels: Slab::new(),
            owned: 0,
            seq_floor: 0,
            stats: HubStats::default(),
            backlogs: Backlogs::default(),
            mirror: false,
            forgotten: Vec::new(),
            hold: false,
            trims: None,
            cursors_of: HashMap::new(),
        }
    }

    /// The hub of a node with a store (`--data-dir`): channels start above
    /// `floor`, the highest seq the node ever stored (so no restart, and
    /// no change of `--shards`, reuses an id); trims are recorded for the
    /// store ([`Hub::take_trims`]); and with `hold` (`--fsync always` or
    /// `interval`) new messages stay out of replays until
    /// [`Hub::set_durable`].
    pub fn with_store(mut self, floor: u64, hold: bool) -> Self {
        debug_assert!(!self.mirror, "in a cluster Redis is the store");
        self.seq_floor = floor;
        self.hold = hold;
        self.trims = Some(Vec::new());
        self
    }

    /// The trims since the last call (see [`Hub::with_store`]): per
    /// channel, the oldest seq its history keeps.
    pub fn take_trims(&mut self) -> Vec<(ChannelName, u64)> {
        self.trims.as_mut().map(std::mem::take).unwrap_or_default()
    }
    /// The hub of a node in a cluster: Redis numbers the messages and
    /// keeps the history, and what an owner holds of a channel is a copy
    /// ([`Hub::owner_load`], [`Hub::owner_append`]) kept while the node has
    /// subscribers — forgotten with the last of them, not when its history
    /// expires.
    pub fn mirrored(mut self) -> Self {
        self.mirror = true;
        self
    }

    /// Whether this hub mirrors Redis (see [`Hub::mirrored`]).
    pub fn is_mirror(&self) -> bool {
        self.mirror
    }

    /// The node's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The shard owning `name`.
    pub fn owner(&self, name: &ChannelName) -> usize {
        name.owner(self.shards)
    }

    /// Whether this shard owns `name`.
    pub fn owns(&self, name: &ChannelName) -> bool {
        self.owner(name) == self.shard
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// Channels this shard knows (owned or with local subscribers).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Channels this shard owns: its share of the node's channels.
    pub fn owned_count(&self) -> usize {
        self.owned
    }

    fn entry(&mut self, name: &ChannelName) -> u32 {
        if let Some(&idx) = self.index.get(name.as_str()) {
            return idx;
        }
        // Redis numbers a cluster's channels from 1 in each epoch.
        let floor = if self.mirror { 0 } else { self.seq_floor };
        let owned = self.owns(name).then(|| Owned {
            epoch: self.epoch,
            presence: Default::default(),
            first_seq: floor + 1,
            last_seq: floor,
            durable_seq: floor,
            history: VecDeque::new(),
            bytes: 0,
            interested: 0,
            limits: self.namespaces.of(name.as_str()).history,
            cursors: HashMap::new(),
        });
        self.owned += usize::from(owned.is_some());
        let idx = self.channels.insert(Channel {
            name: name.clone(),
            epoch: self.epoch,
            seen: 0,
            subs: Slab::new(),
            owned,
        }) as u32;
        self.index.insert(name.clone(), idx);
        idx
    }

    fn collect_if_unused(&mut self, idx: u32) {
        let mirror = self.mirror;
        let ch = &self.channels[idx as usize];
        let unused = ch.subs.is_empty()
            && ch.owned.as_ref().is_none_or(|o| {
                (mirror || o.history.is_empty())
                    && o.interested == 0
                    && o.presence.is_empty()
                    && o.cursors.is_empty()
            });
        if unused {
            let ch = self.channels.remove(idx as usize);
            self.owned -= usize::from(ch.owned.is_some());
            self.index.remove(ch.name.as_str());
            if mirror && ch.owned.is_some() {
                self.forgotten.push(ch.name);
            }
        }
    }

    // ---- local subscriptions (any shard) ---------------------------------

    /// Adds a pending local subscription; the caller then asks the owner
    /// for the replay.
    pub fn add_sub(&mut self, name: &ChannelName, subscriber: S) -> SubRef {
        let chan = self.entry(name);
        let sub = self.channels[chan as usize].subs.insert(Sub {
            subscriber,
            live_after: PENDING,
        }) as u32;
        SubRef { chan, sub }
    }

    /// Marks a pending subscription live after `last_seq`. `false` when it
    /// no longer exists or belongs to someone else than `subscriber` (its
    /// subscriber left meanwhile and the slot was reused).
    pub fn set_live(&mut self, at: SubRef, subscriber: &S, last_seq: u64) -> bool {
        self.set_standing(at, subscriber, Standing::Live(last_seq))
    }

    /// Sets where a subscription of `subscriber` stands (see [`Standing`]).
    /// `false` when it no longer exists or belongs to someone else.
    pub fn set_standing(&mut self, at: SubRef, subscriber: &S, standing: Standing) -> bool {
        match self.sub_mut(at) {
            Some(s) if s.subscriber == *subscriber => {
                let was_behind = matches!(s.standing(), Standing::Behind(..));
                s.live_after = match standing {
                    Standing::Pending => PENDING,
                    Standing::Live(seq) => seq,
                    Standing::Behind(cursor, false) => cursor | BEHIND,
                    Standing::Behind(cursor, true) => cursor | BEHIND | CATCHING_UP,
                };
                match (was_behind, matches!(standing, Standing::Behind(..))) {
                    (false, true) => self.backlogs.fell_behind(at.chan),
                    (true, false) => self.backlogs.caught_up(at.chan),
                    _ => {}
                }
                true
            }
            _ => false,
        }
    }

    /// Takes a replay (or a catch-up) for subscription `at` of
    /// `subscriber`, before its messages are sent: it now stands where
    /// [`Replay::standing`] says. Returns where it stood before, or `None`
    /// when it no longer exists or belongs to someone else.
    pub fn take_replay(&mut self, at: SubRef, subscriber: &S, replay: &Replay) -> Option<Standing> {
        let before = self
            .sub(at)
            .filter(|s| s.subscriber == *subscriber)?
            .standing();
        self.set_standing(at, subscriber, replay.standing());
        let c = &mut self.channels[at.chan as usize];
        if c.epoch != replay.epoch {
            c.epoch = replay.epoch;
            c.seen = 0;
        }
        Some(before)
    }

    /// One local subscription, mutably.
    pub fn sub_mut(&mut self, at: SubRef) -> Option<&mut Sub<S>> {
        self.channels
            .get_mut(at.chan as usize)?
            .subs
            .get_mut(at.sub as usize)
    }

    /// Removes a local subscription of `subscriber`.
    pub fn remove_sub(&mut self, at: SubRef, subscriber: &S) -> Unsubscribed {
        let (chan, sub) = (at.chan, at.sub);
        let Some(ch) = self.channels.get_mut(chan as usize) else {
            return Unsubscribed::Kept;
        };
        if ch
            .subs
            .get(sub as usize)
            .is_none_or(|s| s.subscriber != *subscriber)
        {
            return Unsubscribed::Kept;
        }
        let removed = ch.subs.remove(sub as usize);
        if let Standing::Behind(..) = removed.standing() {
            self.backlogs.caught_up(chan);
        }
        let ch = &self.channels[chan as usize];
        let outcome = if ch.subs.is_empty() && ch.owned.is_none() {
            Unsubscribed::LastLocal(ch.name.clone())
        } else {
            Unsubscribed::Kept
        };
        self.collect_if_unused(chan);
        outcome
    }

    /// A stored message of local channel `chan` reached this shard: kept
    /// for the catch-ups of its subscriptions that are behind, if any (see
    /// [`backlog`]).
    pub fn keep_for_behind(&mut self, chan: u32, msg: &Arc<Message>) {
        if let Some(c) = self.channels.get_mut(chan as usize) {
            c.seen = c.seen.max(msg.id.seq);
        }
        self.backlogs.keep(chan, msg);
    }

    /// The last stored message of channel `chan` this shard delivered (0:
    /// none in its current epoch).
    pub fn seen(&self, chan: u32) -> u64 {
        self.channels.get(chan as usize).map_or(0, |c| c.seen)
    }

    /// Where the catch-up of subscription `at` comes from — it is behind
    /// with its catch-up asked for, and `is_mine` says its subscriber is
    /// the one asking: the next messages after its cursor from this
    /// shard's backlog (at most `budget` bytes of frames, always at least
    /// one), or, when the backlog does not reach back to the cursor, the
    /// owner's history. `None` when there is nothing to catch up.
    pub fn catch_up_from(
        &self,
        at: SubRef,
        is_mine: impl Fn(&S) -> bool,
        budget: usize,
    ) -> Option<CatchUpFrom> {
        let sub = self.sub(at).filter(|s| is_mine(&s.subscriber))?;
        let Standing::Behind(cursor, true) = sub.standing() else {
            return None;
        };
        let channel = self.channel_name(at.chan)?;
        Some(match self.backlogs.catch_up(at.chan, cursor, budget) {
            Some(up) => CatchUpFrom::Backlog(Replay {
                channel,
                epoch: self.channels[at.chan as usize].epoch,
                messages: up.messages,
                reset: None,
                last_seq: up.last_seq,
                rest_since: up.rest_since,
                durable: None,
            }),
            None => CatchUpFrom::Owner {
                channel,
                since: MsgId {
                    epoch: self.channels[at.chan as usize].epoch,
                    seq: cursor,
                },
            },
        })
    }

    /// Drops what channel `chan` keeps for subscriptions behind up to
    /// `cursor`, the oldest cursor among them.
    pub fn trim_backlog(&mut self, chan: u32, cursor: u64) {
        self.backlogs.trim(chan, cursor);
    }

    /// The bytes this shard's backlogs keep alive.
    pub fn pinned(&self) -> usize {
        self.backlogs.pinned()
    }

    /// The local subscribers of a channel, by name.
    pub fn local_channel(&self, name: &ChannelName) -> Option<u32> {
        self.index.get(name.as_str()).copied()
    }

    /// One local subscription.
    pub fn sub(&self, at: SubRef) -> Option<&Sub<S>> {
        self.channels
            .get(at.chan as usize)?
            .subs
            .get(at.sub as usize)
    }

    /// The local subscriptions of channel `chan`, with where each lives.
    pub fn subs_at(&self, chan: u32) -> impl Iterator<Item = (SubRef, &Sub<S>)> {
        self.channels
            .get(chan as usize)
            .into_iter()
            .flat_map(move |c| {
                c.subs.iter().map(move |(i, s)| {
                    (
                        SubRef {
                            chan,
                            sub: i as u32,
                        },
                        s,
                    )
                })
            })
    }

    /// The local subscribers of channel `chan`.
    pub fn subs(&self, chan: u32) -> impl Iterator<Item = &Sub<S>> {
        self.channels
            .get(chan as usize)
            .into_iter()
            .flat_map(|c| c.subs.iter().map(|(_, s)| s))
    }

    /// The name of channel `chan`.
    pub fn channel_name(&self, chan: u32) -> Option<ChannelName> {
        self.channels.get(chan as usize).map(|c| c.name.clone())
    }

    // ---- owner side --------------------------------------------------------

    /// On the owner: registers interest from shard `from` (which may be this
    /// shard) and returns what a subscriber resuming after `since` must be
    /// sent first — at most `budget` bytes of messages (by their WebSocket
    /// frames), and always at least one. A subscriber that fell behind
    /// catches up the same way, from its cursor.
    pub fn owner_subscribe(
        &mut self,
        name: &ChannelName,
        from: usize,
        since: Option<MsgId>,
        budget: usize,
    ) -> Replay {
        debug_assert!(self.owns(name));
        let idx = self.entry(name);
        let me = self.shard;
        let owned = (self.channels[idx as usize].owned.as_mut()).expect("owner has owner state");
        let epoch = owned.epoch;
        if from != me {
            owned.interested |= 1 << from;
        }
        let mut replay = Replay {
            channel: name.clone(),
            epoch,
            messages: Vec::new(),
            reset: None,
            last_seq: owned.durable_seq,
            rest_since: None,
            durable: None,
        };
        let Some(since) = since else {
            return replay;
        };
        let oldest = owned
            .history
            .front()
            .map_or(owned.durable_seq + 1, |m| m.id.seq);
        let reset = |reason, missed| {
            Some(Reset {
                reason,
                since,
                missed,
            })
        };
        // `<epoch>-0` is "from this channel's first message", whatever its
        // sequence number (channels created later on a shard start higher).
        let after = if since.seq == 0 {
            owned.first_seq - 1
        } else {
            since.seq
        };
        let (reset, after) = if since.epoch != epoch {
            (reset(ResetReason::Epoch, None), 0)
        } else if after > owned.durable_seq {
            // Includes a seq issued but not yet durable: nobody was shown
            // it, so a client naming it made it up.
            (reset(ResetReason::Unknown, None), 0)
        } else if after + 1 < owned.first_seq {
            // From an earlier incarnation of the channel.
            (reset(ResetReason::Evicted, None), 0)
        } else if after + 1 < oldest {
            (reset(ResetReason::Evicted, Some(oldest - after - 1)), 0)
        } else {
            (None, after)
        };
        replay.reset = reset;
        let mut bytes = 0usize;
        let durable = owned.durable_seq;
        let shown = owned.history.iter().take_while(|m| m.id.seq <= durable);
        for m in shown.filter(|m| m.id.seq > after) {
            if !replay.messages.is_empty() && bytes + m.ws_frame.len() > budget {
                replay.rest_since = Some(m.published_at);
                break;
            }
            bytes += m.ws_frame.len();
            replay.messages.push(m.clone());
        }
        replay
    }

    /// On the owner: a durable subscription of `who` (see [`cursor`]).
    /// Without `since` it resumes from `who`'s cursor; a first-time
    /// cursor is created at `durable_seq` ("from now") — in an inbox, just
    /// below its oldest message (what waited for its reader). The replay says
    /// where the cursor stands ([`Replay::durable`]). Returns the seq of a
    /// cursor it created, for the caller to store.
    pub fn owner_subscribe_durable(
        &mut self,
        name: &ChannelName,
        from: usize,
        since: Option<MsgId>,
        who: &Cursor,
        budget: usize,
    ) -> (Replay, Option<u64>) {
        debug_assert!(self.owns(name) && !self.mirror);
        let idx = self.entry(name);
        let owned = (self.channels[idx as usize].owned.as_mut()).expect("owner has owner state");
        let mut created = None;
        let seq = match owned.cursors.get(who) {
            Some(&seq) => seq,
            None => {
                // From now; but an inbox's reader gets what waited for it.
                let seq = match owned.limits.inbox {
                    Some(_) => owned.oldest() - 1,
                    None => owned.durable_seq,
                };
                owned.cursors.insert(who.clone(), seq);
                created = Some(seq);
                seq
            }
        };
        let state = owned.cursor_state(seq);
        if created.is_some() {
            index_cursor(&mut self.cursors_of, name, who);
        }
        let since = since.or(Some(state.cursor));
        let mut replay = self.owner_subscribe(name, from, since, budget);
        replay.durable = Some(Box::new(state));
        (replay, created)
    }

    /// On the owner: `who` acknowledges everything of `name` up to `id`
    /// (see [`cursor`] for the rules). A channel keeps a cursor for `who`
    /// once `who` subscribed durably; in a namespace with `durable = true`
    /// an ack creates it.
    pub fn ack(&mut self, name: &ChannelName, who: &Cursor, id: MsgId) -> Result<Acked, AckError> {
        debug_assert!(self.owns(name) && !self.mirror);
        let policy = self.namespaces.of(name.as_str());
        let durable_ns = policy.durable;
        let known = self
            .index
            .get(name.as_str())
            .and_then(|&idx| self.channels[idx as usize].owned.as_ref())
            .is_some_and(|o| o.cursors.contains_key(who));
        if !known && !durable_ns {
            let space = self.namespaces.name_of(name.as_str());
            return Err(AckError::NotDurable {
                channel: name.clone(),
                why: format!(
                    "namespace {space} has durable = false and {who} did not subscribe durably"
                ),
            });
        }
        let idx = self.entry(name);
        let owned = (self.channels[idx as usize].owned.as_mut()).expect("owner has owner state");
        let refused = if id.epoch != owned.epoch {
            Some(AckError::Stale {
                channel: name.clone(),
                id,
                epoch: owned.epoch,
            })
        } else if id.seq > owned.durable_seq {
            Some(AckError::Unknown {
                channel: name.clone(),
                id,
                newest: MsgId {
                    epoch: owned.epoch,
                    seq: owned.durable_seq,
                },
            })
        } else {
            None
        };
        if let Some(e) = refused {
            // An ack that created nothing leaves nothing behind.
            self.collect_if_unused(idx);
            return Err(e);
        }
        let before = owned.cursors.get(who).copied();
        let seq = before.map_or(id.seq, |b| b.max(id.seq));
        let moved = before != Some(seq);
        if moved {
            owned.cursors.insert(who.clone(), seq);
        }
        let state = owned.cursor_state(seq);
        if before.is_none() {
            index_cursor(&mut self.cursors_of, name, who);
        }
        // An inbox keeps what some cursor has not passed: an ack frees it.
        if moved && owned.limits.inbox.is_some() {
            let dropped = owned.trim(None);
            if dropped > 0 {
                self.stats.evictions += dropped;
                if let Some(trims) = self.trims.as_mut() {
                    trims.push((name.clone(), owned.kept_from()));
                }
            }
        }
        Ok(Acked {
            state,
            moved,
            before,
        })
    }

    /// On the owner: takes back an ack that moved `who`'s cursor from
    /// `before` to `to` (the store failed before it was durable), unless
    /// a later ack moved it on meanwhile.
    pub fn unwind_cursor(
        &mut self,
        name: &ChannelName,
        who: &Cursor,
        before: Option<u64>,
        to: u64,
    ) {
        let Some(&idx) = self.index.get(name.as_str()) else {
            return;
        };
        let Some(owned) = self.channels[idx as usize].owned.as_mut() else {
            return;
        };
        if owned.cursors.get(who) != Some(&to) {
            return;
        }
        match before {
            Some(seq) => {
                owned.cursors.insert(who.clone(), seq);
            }
            None => {
                owned.cursors.remove(who);
                let others = owned.cursors.keys().any(|c| c.sub == who.sub);
                if !others {
                    unindex_cursor(&mut self.cursors_of, name, &who.sub);
                }
                self.collect_if_unused(idx);
            }
        }
    }

    /// On the owner, at start with a store: installs a cursor the store
    /// recovered, at most at the channel's last durable seq.
    pub fn restore_cursor(&mut self, name: &ChannelName, who: Cursor, seq: u64) {
        debug_assert!(self.owns(name) && !self.mirror);
        if !self.owns(name) {
            return;
        }
        index_cursor(&mut self.cursors_of, name, &who);
        if let Some(owned) = self.owned_mut(name) {
            let seq = seq.min(owned.durable_seq);
            owned.cursors.insert(who, seq);
        }
    }

    /// On the owner: where `who`'s cursors stand on the channels this
    /// shard owns (`GET /unread`, `{"type":"unread"}`), sorted by channel.
    pub fn unread(&self, who: &Cursor) -> Vec<(ChannelName, CursorState)> {
        let Some(channels) = self.cursors_of.get(&who.sub) else {
            return Vec::new();
        };
        let mut out: Vec<(ChannelName, CursorState)> = (channels.iter())
            .filter_map(|name| {
                let idx = *self.index.get(name.as_str())?;
                let owned = self.channels[idx as usize].owned.as_ref()?;
                let seq = *owned.cursors.get(who)?;
                Some((name.clone(), owned.cursor_state(seq)))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// On the owner: `who`'s cursor on `name`, if it has one.
    pub fn cursor(&self, name: &ChannelName, who: &Cursor) -> Option<CursorState> {
        let idx = *self.index.get(name.as_str())?;
        let owned = self.channels[idx as usize].owned.as_ref()?;
        owned.cursors.get(who).map(|&seq| owned.cursor_state(seq))
    }

    /// On the owner: shard `from` has no subscribers left.
    pub fn owner_unsubscribe(&mut self, name: &ChannelName, from: usize) {
        if let Some(&idx) = self.index.get(name.as_str()) {
            if let Some(owned) = self.channels[idx as usize].owned.as_mut() {
                owned.interested &= !(1 << from);
            }
            self.collect_if_unused(idx);
        }
    }

    /// On the owner: assigns the next id, records the message in history
    /// and returns it with the shards that must receive it.
    pub fn publish(
        &mut self,
        name: &ChannelName,
        kind: DataKind,
        payload: Bytes,
        now: Instant,
    ) -> (Arc<Message>, ShardSet) {
        debug_assert!(self.owns(name) && !self.mirror);
        let idx = self.entry(name);
        let owned = (self.channels[idx as usize].owned.as_mut()).expect("owner has owner state");
        let epoch = owned.epoch;
        owned.last_seq += 1;
        let seq = owned.last_seq;
        if !self.hold {
            owned.durable_seq = seq;
        }
        self.seq_floor = self.seq_floor.max(seq);
        let msg = Arc::new(Message::stored(
            name.clone(),
            MsgId { epoch, seq },
            kind,
            payload,
            now,
        ));
        let evicted = owned.keep(&msg);
        let interested = ShardSet(owned.interested);
        if evicted > 0 {
            if let Some(trims) = self.trims.as_mut() {
                trims.push((name.clone(), owned.kept_from()));
            }
        }
        self.stats.published += 1;
        self.stats.evictions += evicted;
        (msg, interested)
    }

    /// On the owner: the receipt an accepted ack owes (see
    /// [`Receipt`]): only when it moved the cursor, in a namespace with
    /// `receipts`, and when `<name>:receipts` is a valid name (not over
    /// the length limit).
    pub fn receipt(&self, name: &ChannelName, who: &Cursor, acked: &Acked) -> Option<Receipt> {
        if !acked.moved {
            return None;
        }
        Receipt::owed(&self.namespaces, name, who, acked.state.cursor)
    }

    /// On the owner: whether `name` keeps history (a message on a channel
    /// that keeps none is not worth storing).
    pub fn keeps_history(&self, name: &ChannelName) -> bool {
        self.namespaces.of(name.as_str()).history.max_messages > 0
    }

    /// On the owner, with a store: the messages of `name` up to `seq` are
    /// durable, and replays may show them.
    pub fn set_durable(&mut self, name: &ChannelName, seq: u64) {
        if let Some(owned) = self.owned_mut(name) {
            owned.durable_seq = owned.durable_seq.max(seq.min(owned.last_seq));
        }
    }

    /// On the owner, with a store that failed: the messages of `name` from
    /// `from_seq` on were never stored, answered, delivered or replayed
    /// (they were held for the store), so they are taken back — out of
    /// history, and their seqs are issued again. Does nothing for seqs
    /// already durable.
    pub fn unpublish_tail(&mut self, name: &ChannelName, from_seq: u64) {
        let Some(owned) = self.owned_mut(name) else {
            return;
        };
        if from_seq <= owned.durable_seq || from_seq > owned.last_seq {
            return;
        }
        while owned.history.back().is_some_and(|m| m.id.seq >= from_seq) {
            if let Some(m) = owned.history.pop_back() {
                owned.bytes -= m.payload.len();
            }
        }
        owned.last_seq = from_seq - 1;
    }

    /// On the owner, at start with a store: installs a channel the store
    /// recovered — the node's epoch (the store decided it), the last seq
    /// issued, and its newest messages, oldest first (at most what its
    /// history keeps). Every recovered message is durable. `first_seq`
    /// is the oldest seq stored: an id below it is reported evicted.
    pub fn restore(
        &mut self,
        name: &ChannelName,
        first_seq: u64,
        last_seq: u64,
        messages: Vec<Arc<Message>>,
    ) {
        debug_assert!(self.owns(name) && !self.mirror);
        let epoch = self.epoch;
        let Some(owned) = self.owned_mut(name) else {
            return;
        };
        owned.epoch = epoch;
        owned.first_seq = first_seq.clamp(1, last_seq + 1);
        owned.last_seq = last_seq;
        owned.durable_seq = last_seq;
        // The store may hold more than the limits keep now (they were
        // tightened, or it loaded only the newest): it drops the rest too.
        let dropped = owned.replace_history(messages);
        let kept_from = owned.kept_from();
        if kept_from > owned.first_seq {
            if let Some(trims) = self.trims.as_mut() {
                trims.push((name.clone(), kept_from));
            }
        }
        self.stats.evictions += dropped;
        self.seq_floor = self.seq_floor.max(last_seq);
    }

    /// The owner state of `name`, created if this shard owns it.
    fn owned_mut(&mut self, name: &ChannelName) -> Option<&mut Owned> {
        if !self.owns(name) {
            return None;
        }
        let idx = self.entry(name);
        self.channels[idx as usize].owned.as_mut()
    }

    /// On the owner, in a cluster: makes the channel's copy what Redis
    /// holds — its epoch, the last sequence number issued and the newest
    /// of its history, oldest first — dropping what it held before.
    pub fn owner_load(
        &mut self,
        name: &ChannelName,
        epoch: Epoch,
        last_seq: u64,
        messages: Vec<Arc<Message>>,
    ) {
        debug_assert!(self.owns(name) && self.mirror);
        let idx = self.entry(name);
        let owned = (self.channels[idx as usize].owned.as_mut()).expect("owner has owner state");
        owned.epoch = epoch;
        owned.first_seq = 1;
        owned.last_seq = last_seq;
        owned.durable_seq = last_seq;
        owned.replace_history(messages);
    }

    /// On the owner, in a cluster: a message Redis numbered, the next one
    /// of the channel's epoch (the caller checked, see
    /// `cluster::sequence`). Records it and returns the shards that must
    /// receive it; `None` when the channel is not held, or holds it
    /// already (deliver nothing).
    pub fn owner_append(&mut self, msg: &Arc<Message>) -> Option<ShardSet> {
        debug_assert!(self.mirror);
        let idx = *self.index.get(msg.channel.as_str())?;
        let owned = self.channels[idx as usize].owned.as_mut()?;
        if owned.epoch != msg.id.epoch || msg.id.seq <= owned.last_seq {
            return None;
        }
        owned.last_seq = msg.id.seq;
        owned.durable_seq = msg.id.seq;
        let evicted = owned.keep(msg);
        self.stats.published += 1;
        self.stats.evictions += evicted;
        Some(ShardSet(owned.interested))
    }

    /// On the owner: the channel's epoch and the last sequence number it
    /// issued, if it holds the channel.
    pub fn owner_position(&self, name: &ChannelName) -> Option<MsgId> {
        let ch = &self.channels[*self.index.get(name.as_str())? as usize];
        let owned = ch.owned.as_ref()?;
        Some(MsgId {
            epoch: owned.epoch,
            seq: owned.last_seq,
        })
    }

    /// On the owner: the shards with subscribers of a channel (for a
    /// message the owner did not publish itself).
    pub fn interest(&self, name: &ChannelName) -> ShardSet {
        let owned = (self.index.get(name.as_str()))
            .and_then(|&idx| self.channels[idx as usize].owned.as_ref());
        ShardSet(owned.map_or(0, |o| o.interested))
    }

    /// In a cluster: the owned channels forgotten since the last call
    /// (nobody on this node follows them any more).
    pub fn take_forgotten(&mut self) -> Vec<ChannelName> {
        std::mem::take(&mut self.forgotten)
    }

    /// Channel `chan`'s epoch as this shard knows it.
    pub fn channel_epoch(&self, chan: u32) -> Epoch {
        self.channels
            .get(chan as usize)
            .map_or(self.epoch, |c| c.epoch)
    }

    /// A delivery showed channel `chan` in another epoch (in a cluster, its
    /// keys were lost in Redis): this shard now knows it by `epoch`.
    pub fn set_channel_epoch(&mut self, chan: u32, epoch: Epoch) {
        if let Some(c) = self.channels.get_mut(chan as usize) {
            c.epoch = epoch;
            c.seen = 0;
        }
    }

    /// On the owner: a live-only message (ephemeral, or a presence event)
    /// and the shards that must receive it. It gets no sequence number and
    /// stays out of history.
    pub fn publish_live(
        &mut self,
        name: &ChannelName,
        kind: DataKind,
        payload: Bytes,
        event: Event,
        now: Instant,
    ) -> (Arc<Message>, ShardSet) {
        debug_assert!(self.owns(name));
        debug_assert_ne!(event, Event::Stored);
        let idx = self.entry(name);
        let interested = ShardSet(
            self.channels[idx as usize]
                .owned
                .as_ref()
                .map_or(0, |o| o.interested),
        );
        let ws_frame = if event == Event::Ephemeral {
            codec::ws::encode::message(kind, &payload)
        } else {
            Bytes::new()
        };
        let msg = Arc::new(Message {
            channel: name.clone(),
            id: MsgId {
                epoch: (self.channels[idx as usize].owned.as_ref()).map_or(self.epoch, |o| o.epoch),
                seq: 0,
            },
            kind,
            payload,
            ws_frame,
            published_at: now,
            event,
        });
        self.collect_if_unused(idx);
        (msg, interested)
    }

    /// On the owner: a connection of `member` joined the channel's
    /// presence. `true` when the member was not present before (announce
    /// it).
    pub fn presence_join(&mut self, name: &ChannelName, member: Member) -> bool {
        let idx = self.entry(name);
        let Some(owned) = self.channels[idx as usize].owned.as_mut() else {
            return false;
        };
        let connections = owned.presence.entry(member).or_insert(0);
        *connections += 1;
        *connections == 1
    }

    /// On the owner: a connection of `member` left. `true` when that was
    /// its last one (announce it).
    pub fn presence_leave(&mut self, name: &ChannelName, member: &Member) -> bool {
        let Some(&idx) = self.index.get(name.as_str()) else {
            return false;
        };
        let Some(owned) = self.channels[idx as usize].owned.as_mut() else {
            return false;
        };
        let gone = match owned.presence.get_mut(member) {
            None => false,
            Some(1) => {
                owned.presence.remove(member);
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
        };
        self.collect_if_unused(idx);
        gone
    }

    /// On the owner: the members present on a channel, sorted by identity.
    pub fn presence(&self, name: &ChannelName) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .index
            .get(name.as_str())
            .and_then(|&idx| self.channels[idx as usize].owned.as_ref())
            .map(|o| o.presence.keys().cloned().collect())
            .unwrap_or_default();
        v.sort_unstable_by_key(Member::to_string);
        v
    }

    /// Drops history older than the age limit and forgets channels nobody
    /// uses. Call about once a second.
    pub fn expire(&mut self, now: Instant) {
        let mut idle = Vec::new();
        let mut evicted = 0;
        for (idx, ch) in self.channels.iter_mut() {
            if let Some(owned) = ch.owned.as_mut() {
                let popped = owned.trim(Some(now));
                evicted += popped;
                if popped > 0 {
                    if let Some(trims) = self.trims.as_mut() {
                        trims.push((ch.name.clone(), owned.kept_from()));
                    }
                }
                if (self.mirror || owned.history.is_empty())
                    && owned.interested == 0
                    && owned.presence.is_empty()
                    && ch.subs.is_empty()
                {
                    idle.push(idx as u32);
                }
            }
        }
        self.stats.evictions += evicted;
        for idx in idle {
            self.collect_if_unused(idx);
        }
    }
}

/// Notes that `who.sub` has a cursor on `name` (once per channel, whatever
/// the device).
fn index_cursor(index: &mut HashMap<Arc<str>, Vec<ChannelName>>, name: &ChannelName, who: &Cursor) {
    let channels = index.entry(who.sub.clone()).or_default();
    if !channels.contains(name) {
        channels.push(name.clone());
    }
}

/// `sub` has no cursor left on `name`.
fn unindex_cursor(
    index: &mut HashMap<Arc<str>, Vec<ChannelName>>,
    name: &ChannelName,
    sub: &Arc<str>,
) {
    if let Some(channels) = index.get_mut(sub) {
        channels.retain(|c| c != name);
        if channels.is_empty() {
            index.remove(sub);
        }
    }
}

/// A set of shards (bit per shard, at most 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardSet(pub u64);

impl ShardSet {
    /// The shards in the set.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.0 & (1 << i) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Subscribers in these tests are plain numbers.
    fn hub(shard: usize, shards: usize, max_messages: usize) -> Hub<u32> {
        Hub::new(
            shard,
            shards,
            Epoch::from_bits(7),
            Arc::new(Namespaces::uniform(crate::policy::Policy {
                token: false,
                publish: false,
                presence: true,
                history: HistoryLimits {
                    max_messages,
                    max_age: Duration::from_secs(60),
                    max_bytes: 0,
                    inbox: None,
                },
                durable: false,
                owner: false,
                receipts: false,
            })),
        )
    }

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.messages.iter().map(|m| m.id.seq).collect()
    }

    #[test]
    fn ids_are_monotonic_and_carry_the_epoch() {
        let mut h = hub(0, 1, 10);
        let ch = name("a");
        let now = Instant::now();
        let ids: Vec<_> = (0..3)
            .map(|_| {
                h.publish(&ch, DataKind::Text, Bytes::from_static(b"x"), now)
                    .0
                    .id
            })
            .collect();
        assert_eq!(ids.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(ids.iter().all(|i| i.epoch == Epoch::from_bits(7)));
        // A channel created later starts above every id its shard issued,
        // then counts up by one like any other.
        let other = name("b");
        let first = h
            .publish(&other, DataKind::Text, Bytes::new(), now)
            .0
            .id
            .seq;
        assert_eq!(first, 4);
        assert_eq!(
            h.publish(&other, DataKind::Text, Bytes::new(), now)
                .0
                .id
                .seq,
            5
        );
    }

    #[test]
    fn resume_replays_exactly_what_follows() {
        let mut h = hub(0, 1, 10);
        let ch = name("a");
        let now = Instant::now();
        for _ in 0..5 {
            h.publish(&ch, DataKind::Binary, Bytes::new(), now);
        }
        let since = MsgId {
            epoch: h.epoch(),
            seq: 2,
        };
        let r = h.owner_subscribe(&ch, 0, Some(since), usize::MAX);
        assert_eq!(seqs(&r), [3, 4, 5]);
        assert_eq!((r.reset, r.last_seq), (None, 5));
        let r = h.owner_subscribe(
            &ch,
            0,
            Some(MsgId {
                epoch: h.epoch(),
                seq: 5,
            }),
            usize::MAX,
        );
        assert!(r.messages.is_empty() && r.reset.is_none());
        let r = h.owner_subscribe(&ch, 0, None, usize::MAX);
        assert!(r.messages.is_empty() && r.reset.is_none() && r.last_seq == 5);
        // "from the start": seq 0 of the current epoch.
        let r = h.owner_subscribe(
            &ch,
            0,
            Some(MsgId {
                epoch: h.epoch(),
                seq: 0,
            }),
            usize::MAX,
        );
        assert_eq!(seqs(&r), [1, 2, 3, 4, 5]);
        assert_eq!(r.reset, None);
        // So is it for a channel whose first id is not 1 (created after
        // others on its shard).
        let other = name("other");
        h.publish(&other, DataKind::Text, Bytes::new(), now);
        let start = MsgId {
            epoch: h.epoch(),
            seq: 0,
        };
        let r = h.owner_subscribe(&other, 0, Some(start), usize::MAX);
        assert_eq!((seqs(&r), r.reset), (vec![6], None));
    }

    #[test]
    fn lost_positions_are_signalled() {
        let mut h = hub(0, 1, 3);
        let ch = name("a");
        let now = Instant::now();
        for _ in 0..6 {
            h.publish(&ch, DataKind::Binary, Bytes::new(), now);
        }
        assert_eq!(h.stats().evictions, 3);
        // History holds 4, 5, 6; resuming after 1 lost 2 and 3.
        let since = MsgId {
            epoch: h.epoch(),
            seq: 1,
        };
        let r = h.owner_subscribe(&ch, 0, Some(since), usize::MAX);
        assert_eq!(
            r.reset,
            Some(Reset {
                reason: ResetReason::Evicted,
                since,
                missed: Some(2)
            })
        );
        assert_eq!(seqs(&r), [4, 5, 6]);
        // Resuming after 3 is exact.
        let r = h.owner_subscribe(
            &ch,
            0,
            Some(MsgId {
                epoch: h.epoch(),
                seq: 3,
            }),
            usize::MAX,
        );
        assert_eq!((r.reset, seqs(&r)), (None, vec![4, 5, 6]));
        // Another epoch: everything, with the reason.
        let old = MsgId {
            epoch: Epoch::from_bits(8),
            seq: 5,
        };
        let r = h.owner_subscribe(&ch, 0, Some(old), usize::MAX);
        assert_eq!(r.reset.unwrap().reason, ResetReason::Epoch);
        assert_eq!(seqs(&r), [4, 5, 6]);
        // An id from the future.
        let future = MsgId {
            epoch: h.epoch(),
            seq: 99,
        };
        assert_eq!(
            h.owner_subscribe(&ch, 0, Some(future), usize::MAX)
                .reset
                .unwrap()
                .reason,
            ResetReason::Unknown
        );
    }

    #[test]
    fn a_recreated_channel_never_reuses_ids() {
        let mut h = hub(0, 1, 10);
        let ch = name("a");
        let t0 = Instant::now();
        for _ in 0..3 {
            h.publish(&ch, DataKind::Binary, Bytes::new(), t0);
        }
        h.expire(t0 + Duration::from_secs(61));
        assert_eq!(
            h.channel_count(),
            0,
            "expired and unused channels are forgotten"
        );
        let (m, _) = h.publish(
            &ch,
            DataKind::Binary,
            Bytes::new(),
            t0 + Duration::from_secs(62),
        );
        assert_eq!(m.id.seq, 4);
        let since = MsgId {
            epoch: h.epoch(),
            seq: 2,
        };
        let r = h.owner_subscribe(&ch, 0, Some(since), usize::MAX);
        assert_eq!(
            r.reset,
            Some(Reset {
                reason: ResetReason::Evicted,
                since,
                missed: None
            })
        );
        assert_eq!(seqs(&r), [4]);
    }

    #[test]
    fn interest_follows_remote_subscribers() {
        let mut owner = hub(0, 2, 10);
        let ch = (0..)
            .map(|i| name(&format!("x{i}")))
            .find(|c| c.owner(2) == 0)
            .unwrap();
        let now = Instant::now();
        assert_eq!(
            owner.publish(&ch, DataKind::Text, Bytes::new(), now).1,
            ShardSet(0)
        );
        owner.owner_subscribe(&ch, 1, None, usize::MAX);
        assert_eq!(
            owner.publish(&ch, DataKind::Text, Bytes::new(), now).1,
            ShardSet(0b10)
        );
        owner.owner_unsubscribe(&ch, 1);
        assert_eq!(
            owner.publish(&ch, DataKind::Text, Bytes::new(), now).1,
            ShardSet(0)
        );

        // The remote shard reports its last local subscriber.
        let mut remote = hub(1, 2, 10);
        let a = remote.add_sub(&ch, 1);
        let b = remote.add_sub(&ch, 2);
        assert_eq!(a.chan, b.chan);
        assert!(remote.subs(a.chan).all(|s| s.live_after == PENDING));
        assert!(remote.set_live(a, &1, 3));
        assert!(!remote.set_live(a, &9, 3), "another subscriber's slot");
        assert_eq!(remote.sub(a).map(|s| s.live_after), Some(3));
        assert_eq!(
            remote.remove_sub(a, &9),
            Unsubscribed::Kept,
            "not its subscription"
        );
        assert_eq!(remote.remove_sub(a, &1), Unsubscribed::Kept);
        assert_eq!(
            remote.remove_sub(b, &2),
            Unsubscribed::LastLocal(ch.clone())
        );
        assert_eq!(remote.channel_count(), 0);
    }

    #[test]
    fn live_messages_skip_history_and_ids() {
        let mut h = hub(0, 1, 10);
        let ch = name("typing");
        let now = Instant::now();
        h.publish(&ch, DataKind::Text, Bytes::from_static(b"stored"), now);
        let (m, _) = h.publish_live(
            &ch,
            DataKind::Text,
            Bytes::from_static(b"..."),
            Event::Ephemeral,
            now,
        );
        assert_eq!(m.id.seq, 0);
        assert!(!m.is_stored());
        let r = h.owner_subscribe(
            &ch,
            0,
            Some(MsgId {
                epoch: h.epoch(),
                seq: 0,
            }),
            usize::MAX,
        );
        assert_eq!(seqs(&r), [1], "ephemeral messages never enter history");
        assert_eq!(
            h.publish(&ch, DataKind::Text, Bytes::new(), now).0.id.seq,
            2
        );
    }

    #[test]
    fn presence_counts_a_user_once_however_many_connections() {
        let mut h = hub(0, 1, 10);
        let ch = name("room");
        let ann = Member::User("ann".into());
        assert!(h.presence_join(&ch, ann.clone()));
        assert!(!h.presence_join(&ch, ann.clone()), "a second tab");
        assert!(h.presence_join(&ch, Member::Client(ClientId(9))));
        assert_eq!(h.presence(&ch), [Member::Client(ClientId(9)), ann.clone()]);
        assert!(!h.presence_leave(&ch, &ann), "one tab still there");
        assert!(h.presence_leave(&ch, &ann));
        assert!(!h.presence_leave(&ch, &ann));
    }

    #[test]
    fn presence_is_kept_by_the_owner() {
        let mut h = hub(0, 1, 10);
        let ch = name("room");
        let (one, two) = (Member::Client(ClientId(1)), Member::Client(ClientId(2)));
        assert!(h.presence_join(&ch, two.clone()));
        assert!(h.presence_join(&ch, one.clone()));
        assert_eq!(h.presence(&ch), [one.clone(), two.clone()]);
        assert!(h.presence_leave(&ch, &one));
        assert!(!h.presence_leave(&ch, &one));
        assert_eq!(h.presence(&ch), std::slice::from_ref(&two));
        assert!(h.presence_leave(&ch, &two));
        assert_eq!(h.channel_count(), 0, "an empty channel is forgotten");
        assert_eq!(ClientId(0x0100000005000001).to_string(), "0100000005000001");
    }

    #[test]
    fn replays_stop_at_their_budget_and_say_where_to_continue() {
        let mut h = hub(0, 1, 10);
        let ch = name("a");
        let now = Instant::now();
        for _ in 0..5 {
            h.publish(&ch, DataKind::Binary, Bytes::from(vec![0u8; 100]), now);
        }
        let frame = 102; // a 100-byte payload's frame
        let from = |seq| {
            Some(MsgId {
                epoch: Epoch::from_bits(7),
                seq,
            })
        };
        let r = h.owner_subscribe(&ch, 0, from(0), 2 * frame);
        assert_eq!((seqs(&r), r.is_complete()), (vec![1, 2], false));
        assert_eq!(r.standing(), Standing::Behind(2, false));
        let r = h.owner_subscribe(&ch, 0, from(2), 2 * frame);
        assert_eq!((seqs(&r), r.is_complete()), (vec![3, 4], false));
        let r = h.owner_subscribe(&ch, 0, from(4), 2 * frame);
        assert_eq!((seqs(&r), r.is_complete()), (vec![5], true));
        assert_eq!(r.standing(), Standing::Live(5));
        // A budget smaller than one message still moves on by one.
        let r = h.owner_subscribe(&ch, 0, from(0), 1);
        assert_eq!((seqs(&r), r.is_complete()), (vec![1], false));
        // Nothing to send: live at the end.
        let r = h.owner_subscribe(&ch, 0, None, 1);
        assert_eq!((r.messages.len(), r.standing()), (0, Standing::Live(5)));
    }

    #[test]
    fn standings_round_trip_through_live_after() {
        let mut h = hub(0, 1, 10);
        let at = h.add_sub(&name("a"), 1);
        assert_eq!(h.sub(at).unwrap().standing(), Standing::Pending);
        for st in [
            Standing::Live(0),
            Standing::Live(41),
            Standing::Behind(7, false),
            Standing::Behind(7, true),
        ] {
            assert!(h.set_standing(at, &1, st));
            let sub = h.sub(at).unwrap();
            assert_eq!(sub.standing(), st);
            assert_eq!(sub.is_live(), matches!(st, Standing::Live(_)));
        }
        assert!(
            !h.set_standing(at, &2, Standing::Live(1)),
            "not its subscription"
        );
    }

    #[test]
    fn disabled_history_still_assigns_ids() {
        let mut h = hub(0, 1, 0);
        let ch = name("a");
        let now = Instant::now();
        h.publish(&ch, DataKind::Text, Bytes::new(), now);
        let r = h.owner_subscribe(
            &ch,
            0,
            Some(MsgId {
                epoch: h.epoch(),
                seq: 0,
            }),
            usize::MAX,
        );
        assert_eq!(r.reset.unwrap().missed, Some(1));
    }

    fn id(h: &Hub<u32>, seq: u64) -> MsgId {
        MsgId {
            epoch: h.epoch(),
            seq,
        }
    }

    #[test]
    fn held_messages_are_replayed_only_once_durable() {
        let mut h = hub(0, 1, 10).with_store(0, true);
        let ch = name("a");
        let now = Instant::now();
        for _ in 0..3 {
            h.publish(&ch, DataKind::Text, Bytes::new(), now);
        }
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
        assert!(r.messages.is_empty() && r.reset.is_none());
        assert_eq!(r.last_seq, 0, "a held message is not shown");
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 2)), usize::MAX);
        assert_eq!(
            r.reset.map(|r| r.reason),
            Some(ResetReason::Unknown),
            "nobody was shown seq 2 yet"
        );
        h.set_durable(&ch, 2);
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
        assert_eq!((seqs(&r), r.last_seq, r.reset), (vec![1, 2], 2, None));
        h.set_durable(&ch, 1);
        let r = h.owner_subscribe(&ch, 0, None, usize::MAX);
        assert_eq!(r.last_seq, 2, "durable never goes back");
        h.set_durable(&ch, 99);
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
        assert_eq!(
            (seqs(&r), r.last_seq),
            (vec![1, 2, 3], 3),
            "capped at last_seq"
        );
    }

    #[test]
    fn without_hold_every_message_is_durable_at_once() {
        for mut h in [hub(0, 1, 10), hub(0, 1, 10).with_store(0, false)] {
            let ch = name("a");
            h.publish(&ch, DataKind::Text, Bytes::new(), Instant::now());
            let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
            assert_eq!((seqs(&r), r.last_seq), (vec![1], 1));
        }
    }

    #[test]
    fn an_undurable_tail_is_taken_back_and_its_seqs_reissued() {
        let mut h = hub(0, 1, 10).with_store(0, true);
        let ch = name("a");
        let now = Instant::now();
        for _ in 0..4 {
            h.publish(&ch, DataKind::Text, Bytes::new(), now);
        }
        h.set_durable(&ch, 2);
        h.unpublish_tail(&ch, 2);
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
        assert_eq!(seqs(&r), [1, 2], "a durable message is never taken back");
        h.unpublish_tail(&ch, 3);
        let (m, _) = h.publish(&ch, DataKind::Text, Bytes::from("again"), now);
        assert_eq!(m.id.seq, 3, "3 and 4 were never shown: reissued");
        h.set_durable(&ch, 3);
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 0)), usize::MAX);
        assert_eq!(seqs(&r), [1, 2, 3]);
        assert_eq!(&r.messages[2].payload[..], b"again");
    }

    #[test]
    fn a_restored_channel_continues_where_the_store_left_it() {
        let mut h = hub(0, 1, 3).with_store(40, true);
        let ch = name("a");
        let now = Instant::now();
        let stored = |seq| {
            Arc::new(Message::stored(
                ch.clone(),
                MsgId {
                    epoch: Epoch::from_bits(7),
                    seq,
                },
                DataKind::Text,
                Bytes::new(),
                now,
            ))
        };
        h.restore(&ch, 6, 10, (6..=10).map(stored).collect());
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 7)), usize::MAX);
        assert_eq!(
            (seqs(&r), r.last_seq, r.reset),
            (vec![8, 9, 10], 10, None),
            "restored messages are durable, trimmed to history-size"
        );
        let r = h.owner_subscribe(&ch, 0, Some(id(&h, 3)), usize::MAX);
        assert_eq!(r.reset.map(|r| r.reason), Some(ResetReason::Evicted));
        let (m, _) = h.publish(&ch, DataKind::Text, Bytes::new(), now);
        assert_eq!(m.id.seq, 11);
        let (m, _) = h.publish(&name("new"), DataKind::Text, Bytes::new(), now);
        assert_eq!(
            m.id.seq, 41,
            "a channel the store does not know starts above the floor"
        );
    }

    #[test]
    fn trims_are_reported_only_with_a_store() {
        let now = Instant::now();
        let ch = name("a");
        let mut plain = hub(0, 1, 2);
        for _ in 0..3 {
            plain.publish(&ch, DataKind::Text, Bytes::new(), now);
        }
        assert!(plain.take_trims().is_empty());
        let mut h = hub(0, 1, 2).with_store(0, false);
        for _ in 0..3 {
            h.publish(&ch, DataKind::Text, Bytes::new(), now);
        }
        assert_eq!(h.take_trims(), [(ch.clone(), 2)], "count: seq 1 dropped");
        assert!(h.take_trims().is_empty());
        h.expire(now + Duration::from_secs(61));
        assert_eq!(h.take_trims(), [(ch.clone(), 4)], "age: everything dropped");
    }

    fn who(sub: &str, device: &str) -> Cursor {
        Cursor {
            sub: sub.into(),
            device: device.into(),
        }
    }

    /// A hub whose channels under `d:` are durable by namespace.
    fn durable_hub(max_messages: usize) -> Hub<u32> {
        let policy = |durable| crate::policy::Policy {
            token: false,
            publish: false,
            presence: true,
            history: HistoryLimits {
                max_messages,
                max_age: Duration::from_secs(60),
                max_bytes: 0,
                inbox: None,
            },
            durable,
            owner: false,
            receipts: false,
        };
        let spaces = vec![crate::policy::Namespace {
            prefix: "d:".into(),
            policy: policy(true),
        }];
        let ns = Namespaces::new(policy(false), spaces).unwrap();
        Hub::new(0, 1, Epoch::from_bits(7), Arc::new(ns)).with_store(0, true)
    }

    fn publish_durable(h: &mut Hub<u32>, ch: &ChannelName, n: usize) {
        for _ in 0..n {
            let (m, _) = h.publish(ch, DataKind::Text, Bytes::new(), Instant::now());
            h.set_durable(ch, m.id.seq);
        }
    }

    #[test]
    fn a_durable_subscription_starts_from_now_then_resumes_from_its_cursor() {
        let mut h = durable_hub(100);
        let ch = name("a");
        let ann = who("ann", "");
        publish_durable(&mut h, &ch, 3);
        let (r, created) = h.owner_subscribe_durable(&ch, 0, None, &ann, usize::MAX);
        assert_eq!(created, Some(3), "a first-time cursor starts from now");
        assert!(r.messages.is_empty() && r.reset.is_none());
        assert_eq!(r.durable.map(|d| (d.cursor.seq, d.unread)), Some((3, 0)));
        publish_durable(&mut h, &ch, 5);
        let acked = h.ack(&ch, &ann, id(&h, 6)).unwrap();
        assert_eq!((acked.state.cursor, acked.state.unread), (id(&h, 6), 2));
        assert_eq!((acked.moved, acked.before), (true, Some(3)));
        let (r, created) = h.owner_subscribe_durable(&ch, 0, None, &ann, usize::MAX);
        assert_eq!(created, None);
        assert_eq!(seqs(&r), [7, 8], "delivered but not acked: again");
        assert_eq!(r.durable.map(|d| (d.cursor.seq, d.unread)), Some((6, 2)));
        // An explicit since wins over the cursor.
        let (r, _) = h.owner_subscribe_durable(&ch, 0, Some(id(&h, 4)), &ann, usize::MAX);
        assert_eq!(seqs(&r), [5, 6, 7, 8]);
        // Acks are cumulative: an older one changes nothing.
        let acked = h.ack(&ch, &ann, id(&h, 5)).unwrap();
        assert_eq!((acked.state.cursor.seq, acked.moved), (6, false));
        // A replay that is not a durable subscription says nothing of it.
        assert_eq!(h.owner_subscribe(&ch, 0, None, usize::MAX).durable, None);
    }

    #[test]
    fn two_devices_of_one_identity_keep_separate_cursors() {
        let mut h = durable_hub(100);
        let ch = name("a");
        let (phone, laptop) = (who("ann", "phone"), who("ann", "laptop"));
        h.owner_subscribe_durable(&ch, 0, None, &phone, usize::MAX);
        h.owner_subscribe_durable(&ch, 0, None, &laptop, usize::MAX);
        publish_durable(&mut h, &ch, 4);
        h.ack(&ch, &phone, id(&h, 3)).unwrap();
        h.ack(&ch, &laptop, id(&h, 1)).unwrap();
        assert_eq!(h.cursor(&ch, &phone).map(|c| c.cursor.seq), Some(3));
        assert_eq!(h.cursor(&ch, &laptop).map(|c| c.cursor.seq), Some(1));
        assert_eq!(h.cursor(&ch, &who("ann", "")), None);
        let (r, _) = h.owner_subscribe_durable(&ch, 0, None, &laptop, usize::MAX);
        assert_eq!(seqs(&r), [2, 3, 4]);
    }

    #[test]
    fn acks_name_only_what_was_shown_in_the_channels_epoch() {
        let mut h = durable_hub(100);
        let ch = name("a");
        let ann = who("ann", "");
        h.owner_subscribe_durable(&ch, 0, None, &ann, usize::MAX);
        publish_durable(&mut h, &ch, 2);
        // Published, not yet durable: nobody was shown it.
        h.publish(&ch, DataKind::Text, Bytes::new(), Instant::now());
        let other = MsgId {
            epoch: Epoch::from_bits(8),
            seq: 1,
        };
        assert!(matches!(
            h.ack(&ch, &ann, other),
            Err(AckError::Stale { .. })
        ));
        match h.ack(&ch, &ann, id(&h, 3)) {
            Err(AckError::Unknown { newest, .. }) => assert_eq!(newest, id(&h, 2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.cursor(&ch, &ann).map(|c| c.cursor.seq),
            Some(0),
            "unchanged"
        );
        // No durable subscription, not a durable namespace: no cursor.
        match h.ack(&ch, &who("bob", ""), id(&h, 1)) {
            Err(AckError::NotDurable { why, .. }) => {
                assert!(why.contains("durable = false"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.ack(&name("nothing"), &ann, id(&h, 1)),
            Err(AckError::NotDurable { .. })
        ));
        assert_eq!(h.channel_count(), 1, "a refused ack creates no channel");
        // A durable namespace keeps a cursor from the first ack.
        let d = name("d:inbox");
        publish_durable(&mut h, &d, 2);
        let acked = h.ack(&d, &who("bob", ""), id(&h, 4)).unwrap();
        assert_eq!((acked.state.cursor.seq, acked.before), (4, None));
    }

    #[test]
    fn unread_counts_retained_messages_and_cursors_keep_their_channel() {
        let mut h = durable_hub(3);
        let ch = name("a");
        let ann = who("ann", "");
        h.owner_subscribe_durable(&ch, 0, None, &ann, usize::MAX);
        publish_durable(&mut h, &ch, 10);
        // History keeps 8..=10; the cursor (0) is before it.
        assert_eq!(h.cursor(&ch, &ann).unwrap().unread, 3);
        let acked = h.ack(&ch, &ann, id(&h, 9)).unwrap();
        assert_eq!(acked.state.unread, 1);
        // Taken back (the store failed before it was durable).
        h.unwind_cursor(&ch, &ann, acked.before, 9);
        assert_eq!(h.cursor(&ch, &ann).unwrap().cursor.seq, 0);
        h.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(h.channel_count(), 1, "a channel with cursors is kept");
        assert_eq!(h.cursor(&ch, &ann).unwrap().unread, 0);
        // A recovered cursor is at most the channel's last durable seq.
        h.restore_cursor(&ch, who("bob", ""), 99);
        assert_eq!(h.cursor(&ch, &who("bob", "")).unwrap().cursor.seq, 10);
    }

    #[test]
    fn unread_lists_an_identitys_cursors_of_one_device_sorted() {
        let mut h = durable_hub(100);
        let (a, b) = (name("b-chan"), name("a-chan"));
        let phone = who("ann", "phone");
        h.owner_subscribe_durable(&a, 0, None, &phone, usize::MAX);
        h.owner_subscribe_durable(&b, 0, None, &phone, usize::MAX);
        h.owner_subscribe_durable(&a, 0, None, &who("ann", ""), usize::MAX);
        h.owner_subscribe_durable(&a, 0, None, &who("bob", "phone"), usize::MAX);
        publish_durable(&mut h, &a, 3);
        publish_durable(&mut h, &b, 1);
        let counts = |h: &Hub<u32>, w: &Cursor| -> Vec<(String, u64)> {
            (h.unread(w).into_iter())
                .map(|(c, s)| (c.as_str().to_string(), s.unread))
                .collect()
        };
        assert_eq!(
            counts(&h, &phone),
            [("a-chan".to_string(), 1), ("b-chan".to_string(), 3)]
        );
        assert_eq!(counts(&h, &who("ann", "")), [("b-chan".to_string(), 3)]);
        assert!(counts(&h, &who("carl", "")).is_empty());
        // A cursor taken back (created by an ack the store lost) leaves it.
        let d = name("d:x");
        publish_durable(&mut h, &d, 1);
        let carl = who("carl", "");
        let acked = h.ack(&d, &carl, id(&h, 4)).unwrap();
        assert_eq!(counts(&h, &carl), [("d:x".to_string(), 0)]);
        h.unwind_cursor(&d, &carl, acked.before, 4);
        assert!(counts(&h, &carl).is_empty());
        // A recovered cursor is listed.
        h.restore_cursor(&b, who("dora", ""), 0);
        assert_eq!(counts(&h, &who("dora", "")), [("a-chan".to_string(), 1)]);
    }
}
