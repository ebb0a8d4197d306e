//! What a protocol state machine may ask of the connection it runs on, and
//! the small types every state shares.
//!
//! A protocol never sees a socket, a ring, a clock or another shard. It is
//! driven by calls (`handle_*` on [`super::Protocol`]) that bring bytes, time
//! and deliveries in, and it acts only through a [`Context`]: queue output,
//! subscribe and unsubscribe in the hub, set its one deadline, and send
//! requests to channel owners (publish, presence), whose answers come back
//! as further calls. The shard implements `Context` for the connection it
//! is dispatching to; the tests implement it in memory with a virtual
//! clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::Tickets;
use crate::config::Settings;
use crate::hub::{
    ChannelName, ClientId, Cursor, Epoch, Member, MsgId, PublishItem, Replay, SubRef,
};
use crate::metrics::ShardMetrics;

use super::deflate::{Deflate, Deflater};
use super::framing::Format;

/// Time as protocols see it: ticks since the shard started.
pub type Tick = u32;

/// The length of a tick: the resolution of every protocol deadline.
pub const TICK: Duration = Duration::from_millis(100);

/// `d` in ticks, at least one.
pub fn ticks(d: Duration) -> Tick {
    (d.as_millis() / TICK.as_millis()).clamp(1, u128::from(u32::MAX / 2)) as Tick
}

/// The tick of instant `t`, on a clock whose tick 0 was `started`.
pub fn tick_at(started: Instant, t: Instant) -> Tick {
    (t.saturating_duration_since(started).as_millis() / TICK.as_millis()) as Tick
}

/// Since when a subscription that is behind after taking a replay has been
/// waiting for its oldest undelivered message — what `--max-lag` limits.
///
/// That message was published at `rest_published` (the first message a
/// cut replay left out), but the wait counts only from when this
/// subscriber could first have had it: when it fell behind (`behind_since`,
/// if it already was) or now (a subscriber resuming from far back is not
/// lagging for what was published before it came).
pub fn waiting_since(behind_since: Option<Tick>, now: Tick, rest_published: Option<Tick>) -> Tick {
    let floor = behind_since.unwrap_or(now);
    rest_published.map_or(floor, |t| t.max(floor))
}

/// The next deadline of a connection that wakes every `interval` and must
/// also act when its token expires (`expires`, seconds since the epoch):
/// whichever comes first, at least a tick away.
pub fn sooner_of(ctx: &impl Context, interval: Duration, expires: Option<u64>) -> Tick {
    let mut next = ticks(interval);
    if let Some(e) = expires {
        let left = e.saturating_sub(ctx.unix_time());
        next = next.min(ticks(Duration::from_secs(left)).max(1));
    }
    ctx.now() + next
}

/// A token expiry as kept in a connection's state: seconds since the
/// epoch in 32 bits (until 2106), 0 for none.
pub fn compact_expiry(expires: Option<u64>) -> u32 {
    expires.map_or(0, |e| e.min(u64::from(u32::MAX)) as u32)
}

/// What a refusal for load (publishes while readers that are behind pin
/// too much, requests while the node drains) tells the client to wait.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A subscription request (see [`Context::subscribe`]).
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The channel.
    pub channel: ChannelName,
    /// How deliveries are framed for this connection.
    pub format: Format,
    /// Resume after this id (`None`: from now on).
    pub since: Option<MsgId>,
    /// Who joins the channel's presence, if the connection takes part in
    /// it.
    pub presence: Option<Member>,
    /// What the connection agreed for permessage-deflate (WebSockets
    /// only): live messages reach it compressed.
    pub deflate: Option<Deflate>,
    /// A durable subscription: whose cursor it resumes from when `since`
    /// is `None`; its replay reports the cursor (`Replay::durable`).
    pub durable: Option<Cursor>,
}

/// What a protocol may ask of its connection. See the module docs.
///
/// Every call concerns the connection the protocol runs on; answers to
/// requests (`subscribe`, `publish`, `ack`, `query_presence`) arrive
/// later as `handle_replay`, `handle_published`, `handle_acked` and
/// `handle_presence`, never during the call that asked.
pub trait Context {
    /// The current tick.
    fn now(&self) -> Tick;

    /// Wall-clock seconds since the Unix epoch: what token expiry is
    /// measured in. Read when a token is checked, never per delivery.
    fn unix_time(&self) -> u64;

    /// The node's configuration.
    fn settings(&self) -> &Settings;

    /// The shard's counters.
    fn metrics(&self) -> &ShardMetrics;

    /// The node's outstanding tickets (`POST /ticket`, `?ticket=`).
    fn tickets(&self) -> &Tickets;

    /// Queues bytes for the peer, after everything queued before. A
    /// connection whose peer does not read is told so by
    /// `handle_slow_consumer` (not during this call).
    fn send(&mut self, bytes: Bytes);

    /// Queues one message (sequence number `seq`) for the peer, like
    /// [`Context::send`]; the driver remembers which message the bytes are,
    /// so that [`Context::discard_output`] can tell where the peer stands.
    fn send_message(&mut self, bytes: Bytes, seq: u64);

    /// Drops output that is queued but not yet handed to the kernel.
    /// Returns the lowest sequence number of a message the peer may not
    /// have received whole: one dropped, or in a send the kernel has not
    /// completed (`None` when every message queued was delivered).
    fn discard_output(&mut self) -> Option<u64>;

    /// Whether output is queued or in flight.
    fn output_pending(&self) -> bool;

    /// Asks for `handle_timer` at tick `at`, replacing any earlier wish;
    /// `None` cancels it. A connection has one deadline.
    fn set_timer(&mut self, at: Option<Tick>);

    /// The shard's permessage-deflate compressors and inflater (a
    /// WebSocket that negotiated the extension compresses its own output
    /// and inflates its input with them; they keep nothing between
    /// messages).
    fn deflater(&mut self) -> &mut Deflater;

    /// Asks the driver to feed this connection's kept input again (bytes
    /// that waited behind an answer), once the current call returns.
    fn resume_input(&mut self);

    /// Adds a pending subscription; the channel owner's replay arrives as
    /// `handle_replay` with the returned reference.
    fn subscribe(&mut self, request: Subscribe) -> SubRef;

    /// Takes a replay (or a catch-up) for a subscription, before its
    /// messages are sent: the subscription goes live after the replay's
    /// last sequence number, or — a replay cut at its byte budget — stays
    /// behind at its last message, to catch up when the connection's
    /// output drains (`handle_drained`). `false` when the subscription is
    /// gone.
    fn accept_replay(&mut self, at: SubRef, replay: &Replay) -> bool;

    /// The sequence number a live subscription delivers after; `None`
    /// while it waits for its replay or catches up.
    fn position(&self, at: SubRef) -> Option<u64>;

    /// The last sequence number queued to a subscription (live or behind).
    fn cursor(&self, at: SubRef) -> Option<u64>;

    /// Whether a subscription fell behind and waits to catch up.
    fn needs_catch_up(&self, at: SubRef) -> bool;

    /// The channel of a subscription.
    fn channel(&self, at: SubRef) -> Option<ChannelName>;

    /// Asks the channel's owner for the next messages after a behind
    /// subscription's cursor (at most `--max-outbound` bytes); they arrive
    /// as `handle_replay`.
    fn catch_up(&mut self, at: SubRef);

    /// Removes a subscription; `presence` is the member it joined the
    /// channel's presence as, if it did.
    fn unsubscribe(&mut self, at: SubRef, presence: Option<Member>);

    /// Sends messages to their channels' owners; the ids arrive as
    /// `handle_published` with the returned token.
    fn publish(&mut self, items: Vec<PublishItem>) -> u32;

    /// Acknowledges every message of `channel` up to `id` for `who`'s
    /// durable cursor; the answer arrives as `handle_acked` with the
    /// returned token. `subscribed`: the connection holds a durable
    /// subscription to `channel` for `who` (in a cluster, an ack may then
    /// make the cursor again after Redis lost it).
    fn ack(&mut self, channel: ChannelName, who: Cursor, id: MsgId, subscribed: bool) -> u32;

    /// Asks every shard where `who`'s cursors stand on the channels it
    /// owns; each answers `handle_unread` with the returned token. Returns
    /// the token and how many answers to expect.
    fn query_unread(&mut self, who: Cursor) -> (u32, usize);

    /// Asks a channel's owner who is present; the answer arrives as
    /// `handle_presence` with the returned token.
    fn query_presence(&mut self, channel: ChannelName) -> u32;

    /// This connection's anonymous identity (in presence lists when its
    /// token names no `sub`).
    fn client_id(&self) -> ClientId;

    /// The node's epoch: the first half of every id on a node of its own,
    /// and of channels new to a cluster.
    fn node_epoch(&self) -> Epoch;

    /// The epoch of subscription `at`'s channel as this shard knows it:
    /// the node's, or in a cluster the channel's own.
    fn channel_epoch(&self, at: SubRef) -> Epoch;

    /// Whether readers that are behind pin more than `--max-pinned` bytes
    /// node-wide: publishes are refused (with a retry hint) until they
    /// catch up or are closed.
    fn overloaded(&self) -> bool;

    /// Whether a request may name `channel`: it exists on this shard, or
    /// the node holds fewer than `--max-channels`. (A channel its owner
    /// shard holds but this one does not counts as new once the node is
    /// full: the check stays on this thread.)
    fn admits_channel(&self, channel: &ChannelName) -> bool;

    /// Whether the node is shutting down (answers then close the
    /// connection).
    fn draining(&self) -> bool;

    /// Whether the node is in a cluster and has lost Redis's Pub/Sub
    /// (`/readyz` answers 503, `/healthz` says `degraded`).
    fn cluster_degraded(&self) -> bool;

    /// With `--data-dir`: why the store failed, if it did (`/readyz`
    /// answers 503, `/healthz` says `degraded`; stored publishes get 503).
    fn store_failed(&self) -> Option<std::sync::Arc<str>>;

    /// The node's metrics in Prometheus text format.
    fn render_metrics(&self) -> String;
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Send what is queued (within `--close-timeout`), then close.
    AfterFlush,
    /// Close now; queued bytes are dropped.
    Now,
}

/// What a state did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Used this many bytes; hand the rest to the connection's (possibly
    /// new) state.
    Continue(usize),
    /// Used this many bytes; the rest waits for more input or for an
    /// answer, and is kept by the driver.
    Wait(usize),
    /// The connection reads nothing more: drop the rest.
    Discard,
}
