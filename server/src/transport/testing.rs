//! An in-memory driver for the protocol state machines, after quinn-proto's
//! `Pair`: one node with one shard that owns every channel, no sockets, and
//! a virtual clock that moves only when a test says so.
//!
//! [`Node`] drives each connection's [`Protocol`] the way the shard does
//! (`shard/mod.rs` `dispatch`, `completions.rs`, `fanout.rs`, `owner.rs`,
//! `context.rs`), so a test sees what a client of the real server would:
//!
//! * Input the protocol does not use is kept and offered again in front of
//!   the next input, or on [`Context::resume_input`] right after the call
//!   that asked.
//! * Requests to channel owners (subscribe, publish, presence) become the
//!   shard's own [`Mail`], handled after the call that sent it; the answers
//!   come back as later calls, never during the call that asked.
//! * Output is queued during a *turn* and flushed at its end. A peer that
//!   reads gets everything flushed; a peer that stopped reading
//!   ([`Node::stop_reading`]) leaves it queued, as a socket that does not
//!   take bytes does.
//! * Deliveries go by cursor (`shard/fanout.rs`): a fan-out finds a full
//!   window (`--max-outbound` queued) and the subscription falls behind;
//!   once the queue is flushed, the connection is *hungry* and its
//!   protocol catches up from history (`handle_drained`). Once a second
//!   (every 10th tick) subscriptions behind for `--max-lag` are lagging
//!   (`shard/lag.rs`). A connection's own output past the hard limit
//!   (`Settings::outbound_hard_limit`) makes it a slow consumer.
//! * A protocol that is `Closed` is closed at once, dropping what is
//!   queued; one that is `Draining` is closed once its output is flushed.
//! * Published messages are held until the turn's answers are flushed, then
//!   fanned out: each shared format encoded once, `handle_delivery` only
//!   for the formats that are not shared.
//!
//! Every public operation (`connect`, `input`, one tick of `advance`,
//! `publish`, `shutdown`, …) is one turn of the shard's loop. Time is in
//! ticks (`TICK`, 100 ms); deadlines fire in tick order, and within a tick
//! in deadline order, then connection order.
//!
//! The free functions build client input (requests, masked frames) and read
//! the server's output (responses, frames, SSE fields) with the codec's
//! client-side pieces where it has them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use codec::ws::{encode, DataKind, DecoderConfig, Frame, FrameDecoder, OpCode};
use codec::Status;
use serde_json::Value;

use crate::auth::Tickets;
use crate::bus::{ConnHandle, Mail, ReplyTo};
use crate::config::{Cli, Settings};
use crate::hub::{
    AckError, CatchUpFrom, ChannelName, ClientId, Cursor, Epoch, Event, Hub, Member, Message,
    MsgId, PublishItem, Replay, Standing, SubRef,
};
use crate::metrics::{NodeGauges, ShardMetrics};
use crate::policy::Namespaces;

use super::context::{tick_at, ticks, waiting_since, Context, Subscribe, Tick, TICK};
use super::deflate::{Deflate, Deflater};
use super::framing::{Encodings, Format};
use super::protocol::Protocol;

/// The node's epoch in every test: ids read `000000000abc-<seq>`.
pub const EPOCH: u64 = 0xabc;

/// The settings a node starts from: the server's defaults.
pub fn default_settings() -> Settings {
    Settings::resolve(Cli::default()).expect("the defaults are valid")
}

impl Default for Node {
    fn default() -> Node {
        Node::with(|_| {})
    }
}

/// A connection of a [`Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(usize);

/// What a hub subscription records, as in the shard: who, how its
/// deliveries are framed, and since when it has been behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subscriber {
    conn: usize,
    format: Format,
    deflate: Option<Deflate>,
    behind_since: Tick,
}

/// One connection: its protocol and what its socket would hold.
#[derive(Debug)]
struct Conn {
    proto: Protocol,
    /// Output queued and not yet flushed to the peer (the shard's outbound
    /// queue), with the message sequence number of each buffer (0: not a
    /// message).
    queued: Vec<(Bytes, u64)>,
    queued_len: usize,
    /// A subscription fell behind: catch up once the queue is flushed.
    behind: bool,
    /// Output the peer has received and the test has not taken yet.
    received: Vec<u8>,
    /// Input the protocol has not used yet.
    kept: BytesMut,
    timer: Option<Tick>,
    open: bool,
    reading: bool,
}

/// An in-memory node. See the module docs.
#[derive(Debug)]
pub struct Node {
    settings: Settings,
    metrics: Arc<ShardMetrics>,
    tickets: Tickets,
    hub: Hub<Subscriber>,
    /// What tick 0 is, for the hub's history ages.
    start: Instant,
    now: Tick,
    /// Wall-clock seconds at tick 0 (token expiry).
    unix_base: u64,
    conns: Vec<Conn>,
    /// Mail the shard sent itself, oldest first.
    mail: VecDeque<Mail>,
    /// Hold mail instead of handling it (see [`Node::hold_mail`]).
    mail_held: bool,
    /// Deliveries held for the end of the turn.
    fanouts: Vec<Arc<Message>>,
    /// Subscriptions that fell behind, for the lag check.
    behind: Vec<(usize, SubRef)>,
    /// Connections whose queue was flushed while a subscription was behind.
    hungry: Vec<usize>,
    next_token: u32,
    draining: bool,
    /// The shard's permessage-deflate compressors and inflater.
    deflater: Deflater,
    /// What `/readyz` and `/healthz` report of a store (see
    /// [`Node::fail_store`]).
    store_failed: Option<Arc<str>>,
}

impl Node {
    /// A node with the default settings.
    pub fn new() -> Node {
        Node::default()
    }

    /// A node with the default settings as changed by `adjust` (short
    /// timeouts, small limits…).
    pub fn with(adjust: impl FnOnce(&mut Settings)) -> Node {
        let mut settings = default_settings();
        adjust(&mut settings);
        if settings.namespaces.spaces().is_empty() {
            // The defaults follow what `adjust` changed (keys, history…).
            settings.namespaces = Arc::new(Namespaces::uniform(settings.default_policy()));
        }
        let metrics = Arc::new(ShardMetrics::default());
        Node {
            hub: Hub::new(0, 1, Epoch::from_bits(EPOCH), settings.namespaces.clone()),
            tickets: Tickets::new(settings.ticket_ttl, settings.max_tickets),
            deflater: Deflater::new(settings.deflate, metrics.clone()),
            store_failed: None,
            settings,
            metrics,
            start: Instant::now(),
            now: 0,
            unix_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            conns: Vec::new(),
            mail: VecDeque::new(),
            mail_held: false,
            fanouts: Vec::new(),
            behind: Vec::new(),
            hungry: Vec::new(),
            next_token: 1,
            draining: false,
        }
    }

    // ---- what a test does ------------------------------------------------------

    /// Accepts a connection.
    pub fn connect(&mut self) -> ConnId {
        let c = self.conns.len();
        self.conns.push(Conn {
            proto: Protocol::Closed,
            queued: Vec::new(),
            queued_len: 0,
            behind: false,
            received: Vec::new(),
            kept: BytesMut::new(),
            timer: None,
            open: true,
            reading: true,
        });
        self.dispatch(c, |p, ctx| *p = Protocol::accept(ctx));
        self.end_turn();
        ConnId(c)
    }

    /// Bytes from the peer, as one receive.
    pub fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        self.on_input(conn.0, bytes);
        self.drain_local();
        self.end_turn();
    }

    /// The peer closed its end (or the socket failed).
    pub fn hang_up(&mut self, conn: ConnId) {
        self.dispatch(conn.0, |p, ctx| p.handle_close(ctx));
        self.drain_local();
        self.end_turn();
    }

    /// Moves the clock `ticks` ticks on, one turn per tick: the deadlines
    /// due at each tick fire, in deadline order.
    pub fn advance(&mut self, ticks: Tick) {
        for _ in 0..ticks {
            self.now += 1;
            let now = self.now;
            let mut due: Vec<(Tick, usize)> = (self.conns.iter().enumerate())
                .filter(|(_, c)| c.open)
                .filter_map(|(i, c)| c.timer.filter(|&t| t <= now).map(|t| (t, i)))
                .collect();
            due.sort_unstable();
            for (_, c) in due {
                // An earlier timer of this tick may have moved this one.
                if self.conns[c].timer.is_some_and(|t| t <= now) {
                    self.conns[c].timer = None;
                    self.dispatch(c, |p, ctx| p.handle_timer(ctx));
                    self.drain_local();
                }
            }
            // The shard's once-a-second housekeeping.
            if now.is_multiple_of(10) {
                self.check_lagging();
                let at = self.instant();
                self.hub.expire(at);
            }
            self.end_turn();
        }
    }

    /// Publishes on the channel's owner, as a publisher on another
    /// connection would, and fans the message out. Returns its id.
    pub fn publish(&mut self, channel: &str, kind: DataKind, payload: &[u8]) -> MsgId {
        let name = ChannelName::new(channel).expect("a valid channel name");
        ShardMetrics::add(&self.metrics.published, 1);
        let at = self.instant();
        let (msg, _) = self
            .hub
            .publish(&name, kind, Bytes::copy_from_slice(payload), at);
        let id = msg.id;
        self.fanouts.push(msg);
        self.end_turn();
        id
    }

    /// Publishes several messages in one turn, as a publisher pipelining
    /// them does: the fan-out meets them all at once. Returns their ids.
    pub fn publish_burst(&mut self, channel: &str, payloads: &[&[u8]]) -> Vec<MsgId> {
        let name = ChannelName::new(channel).expect("a valid channel name");
        let at = self.instant();
        let mut ids = Vec::new();
        for p in payloads {
            ShardMetrics::add(&self.metrics.published, 1);
            let (msg, _) =
                (self.hub).publish(&name, DataKind::Binary, Bytes::copy_from_slice(p), at);
            ids.push(msg.id);
            self.fanouts.push(msg);
        }
        self.end_turn();
        ids
    }

    /// [`Node::publish`] of a text message.
    pub fn publish_text(&mut self, channel: &str, text: &str) -> MsgId {
        self.publish(channel, DataKind::Text, text.as_bytes())
    }

    /// The node starts shutting down: every connection's protocol is told.
    pub fn shutdown(&mut self) {
        self.draining = true;
        for c in 0..self.conns.len() {
            self.dispatch(c, |p, ctx| p.handle_shutdown(ctx));
            self.drain_local();
        }
        self.end_turn();
    }

    /// The peer stops reading: output stays queued from now on.
    pub fn stop_reading(&mut self, conn: ConnId) {
        self.conns[conn.0].reading = false;
    }

    /// A peer that does not read takes `n` bytes of what is queued for it
    /// (whole buffers, at least one), as a socket draining a little.
    pub fn read_some(&mut self, conn: ConnId, n: usize) {
        let c = &mut self.conns[conn.0];
        let mut taken = 0;
        while taken < n && !c.queued.is_empty() {
            let (b, _) = c.queued.remove(0);
            taken += b.len();
            c.queued_len -= b.len();
            c.received.extend_from_slice(&b);
        }
        if c.queued.is_empty() && std::mem::take(&mut c.behind) {
            self.hungry.push(conn.0);
        }
        self.end_turn();
    }

    /// The peer reads again, and gets what was queued.
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.conns[conn.0].reading = true;
        self.end_turn();
    }

    /// From now on `/readyz` and `/healthz` report a failed store.
    pub fn fail_store(&mut self, reason: &str) {
        self.store_failed = Some(reason.into());
    }

    /// Holds the shard's mail (owner work and answers) until
    /// [`Node::release_mail_reversed`], to see answers arrive in another
    /// order than the requests, as they do from several owners.
    pub fn hold_mail(&mut self) {
        self.mail_held = true;
    }

    /// Handles the held mail, newest first.
    pub fn release_mail_reversed(&mut self) {
        self.mail_held = false;
        self.mail = self.mail.drain(..).rev().collect();
        self.drain_local();
        self.end_turn();
    }

    // ---- what a test looks at ----------------------------------------------------

    /// The current tick.
    pub fn now(&self) -> Tick {
        self.now
    }

    /// The node's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// What the peer received and the test has not taken.
    pub fn output(&self, conn: ConnId) -> &[u8] {
        &self.conns[conn.0].received
    }

    /// Takes what the peer received.
    pub fn take_output(&mut self, conn: ConnId) -> Vec<u8> {
        std::mem::take(&mut self.conns[conn.0].received)
    }

    /// Bytes queued for a peer that does not read.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.conns[conn.0].queued_len
    }

    /// Whether the connection's socket is closed.
    pub fn is_closed(&self, conn: ConnId) -> bool {
        !self.conns[conn.0].open
    }

    /// The connection's protocol state.
    pub fn protocol(&self, conn: ConnId) -> &Protocol {
        &self.conns[conn.0].proto
    }

    /// The identity the connection has in presence lists.
    pub fn client_id(&self, conn: ConnId) -> ClientId {
        client_id(conn.0)
    }

    /// Local subscriptions of a channel, pending ones included.
    pub fn subscriptions(&self, channel: &str) -> usize {
        let name = ChannelName::new(channel).expect("a valid channel name");
        self.hub
            .local_channel(&name)
            .map_or(0, |chan| self.hub.subs(chan).count())
    }

    /// Takes the next whole response the peer received. Panics if there is
    /// none: a test expects one.
    pub fn response(&mut self, conn: ConnId) -> Response {
        let received = &mut self.conns[conn.0].received;
        let Some((r, used)) = parse_response(received) else {
            panic!(
                "no whole response in {:?}",
                String::from_utf8_lossy(received)
            );
        };
        received.drain(..used);
        r
    }

    /// Takes every whole response the peer received.
    pub fn responses(&mut self, conn: ConnId) -> Vec<Response> {
        let mut out = Vec::new();
        let received = &mut self.conns[conn.0].received;
        while let Some((r, used)) = parse_response(received) {
            received.drain(..used);
            out.push(r);
        }
        out
    }

    /// Takes every whole WebSocket frame the peer received.
    pub fn frames(&mut self, conn: ConnId) -> Vec<WsFrame> {
        let received = &mut self.conns[conn.0].received;
        let (frames, used) = parse_frames(received);
        received.drain(..used);
        frames
    }

    /// Takes every frame the peer received as JSON (the multiplexed
    /// protocol, `format=json`). Panics on anything but a text frame.
    pub fn json(&mut self, conn: ConnId) -> Vec<Value> {
        (self.frames(conn).into_iter())
            .map(|f| match f {
                WsFrame::Text(t) => serde_json::from_str(&t).expect("JSON text"),
                other => panic!("expected a JSON text frame, got {other:?}"),
            })
            .collect()
    }

    /// Takes every whole event and comment of an event stream the peer
    /// received (after the response head).
    pub fn sse(&mut self, conn: ConnId) -> Vec<SseItem> {
        let received = &mut self.conns[conn.0].received;
        let (items, used) = parse_sse(received);
        received.drain(..used);
        items
    }

    /// Connects and upgrades to a WebSocket on `target`; the `101` is taken.
    pub fn open_ws(&mut self, target: &str) -> ConnId {
        let c = self.connect();
        self.input(c, &upgrade(target));
        let r = self.response(c);
        assert_eq!(r.status, 101, "upgrade refused: {r:?}");
        c
    }

    // ---- the driver ----------------------------------------------------------------

    fn instant(&self) -> Instant {
        self.start + TICK * self.now
    }

    /// Runs `f` on a connection's protocol and applies what it asked for,
    /// as `Shard::dispatch` does; `None` if the connection is closed.
    fn dispatch<R>(
        &mut self,
        c: usize,
        f: impl FnOnce(&mut Protocol, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        if !self.conns[c].open {
            return None;
        }
        let mut proto = std::mem::replace(&mut self.conns[c].proto, Protocol::Closed);
        let before = proto.gauge();
        let mut ctx = Ctx {
            node: self,
            conn: c,
            slow: false,
            resume: false,
        };
        let r = f(&mut proto, &mut ctx);
        if ctx.slow {
            ShardMetrics::add(&ctx.node.metrics.slow_consumers, 1);
            proto.handle_slow_consumer(&mut ctx);
        }
        let resume = ctx.resume;
        let after = proto.gauge();
        if before != after {
            if let Some(t) = before {
                self.metrics.close(t);
            }
            if let Some(t) = after {
                self.metrics.open(t);
            }
        }
        let conn = &mut self.conns[c];
        let close = proto.is_closed() || (proto.is_draining() && conn.queued_len == 0);
        conn.proto = proto;
        if close {
            self.close_now(c);
        } else if resume {
            self.resume_input(c);
        }
        Some(r)
    }

    /// Closes the socket; queued output and kept input are dropped.
    fn close_now(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        conn.open = false;
        conn.proto = Protocol::Closed;
        conn.queued.clear();
        conn.queued_len = 0;
        conn.behind = false;
        conn.kept.clear();
        conn.timer = None;
    }

    /// Queues a connection's own output (message `seq`, or 0), as
    /// `Conns::queue`: `Overflow` once the queue is over the hard limit.
    fn queue(&mut self, c: usize, bytes: Bytes, seq: u64) -> Queued {
        let max = self.settings.outbound_hard_limit();
        let conn = &mut self.conns[c];
        if !conn.open {
            return Queued::Gone;
        }
        conn.queued_len += bytes.len();
        conn.queued.push((bytes, seq));
        if conn.queued_len > max {
            Queued::Overflow
        } else {
            Queued::Ok
        }
    }

    /// Whether a delivery of `len` bytes finds `c`'s window full
    /// (`Conns::window_full`).
    fn window_full(&self, c: usize, len: usize) -> bool {
        let queued = self.conns[c].queued_len;
        queued > 0 && queued + len > self.settings.max_outbound
    }

    /// Received bytes, after any kept ones (`Shard::on_input`).
    fn on_input(&mut self, c: usize, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.conns[c].kept);
        buf.extend_from_slice(data);
        let used = self.feed(c, &mut buf);
        buf.advance(used);
        self.keep_input(c, buf);
    }

    /// Offers kept input again (`Shard::resume_input`).
    fn resume_input(&mut self, c: usize) {
        let mut buf = std::mem::take(&mut self.conns[c].kept);
        if buf.is_empty() {
            return;
        }
        let used = self.feed(c, &mut buf);
        buf.advance(used);
        self.keep_input(c, buf);
    }

    fn feed(&mut self, c: usize, buf: &mut [u8]) -> usize {
        self.dispatch(c, |p, ctx| p.handle_input(ctx, buf))
            .unwrap_or(buf.len())
    }

    /// Keeps what the protocol did not use, up to what a valid peer can
    /// have outstanding (`Shard::keep_input`).
    fn keep_input(&mut self, c: usize, rest: BytesMut) {
        let s = &self.settings;
        let limit = s.max_message_size + s.max_head_size + 64 * 1024;
        if rest.len() > limit {
            self.dispatch(c, |p, ctx| p.handle_close(ctx));
            return;
        }
        if self.conns[c].open {
            self.conns[c].kept = rest;
        }
    }

    /// Handles mail until none is left (`Shard::drain_local`).
    fn drain_local(&mut self) {
        while !self.mail_held {
            let Some(mail) = self.mail.pop_front() else {
                return;
            };
            self.on_mail(mail);
        }
    }

    /// One piece of mail: owner work (`shard/owner.rs`) or an answer for a
    /// connection (`shard/mail.rs`).
    fn on_mail(&mut self, mail: Mail) {
        let at = self.instant();
        match mail {
            Mail::Subscribe {
                conn,
                at: sub,
                channel,
                since,
                member,
                durable,
                ..
            } => {
                let budget = self.settings.max_outbound;
                // Cursors live in the hub; this node stores nothing (as
                // `--fsync never`: acks are answered at once).
                let replay = match durable.map(|b| *b) {
                    Some(who) => {
                        (self
                            .hub
                            .owner_subscribe_durable(&channel, 0, since, &who, budget))
                        .0
                    }
                    None => self.hub.owner_subscribe(&channel, 0, since, budget),
                };
                self.mail.push_back(Mail::Replayed {
                    conn,
                    at: sub,
                    replay: Box::new(replay),
                });
                if let Some(member) = member {
                    let identity = member.to_string();
                    if self.hub.presence_join(&channel, member) {
                        self.announce(&channel, Event::Joined, identity);
                    }
                }
            }
            Mail::Left { channel, member } => {
                if self.hub.presence_leave(&channel, &member) {
                    self.announce(&channel, Event::Left, member.to_string());
                }
            }
            Mail::Unsubscribe { channel, from } => self.hub.owner_unsubscribe(&channel, from),
            Mail::PresenceQuery { reply, channel } => {
                let clients = self.hub.presence(&channel);
                self.mail.push_back(Mail::Presence {
                    reply,
                    channel,
                    clients,
                });
            }
            Mail::Publish { reply, items } => {
                let mut ids = Vec::with_capacity(items.len());
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let (msg, _) = if item.ephemeral {
                        let event = Event::Ephemeral;
                        (self.hub).publish_live(&item.channel, item.kind, item.payload, event, at)
                    } else {
                        ShardMetrics::add(&self.metrics.published, 1);
                        self.hub.publish(&item.channel, item.kind, item.payload, at)
                    };
                    ids.push((item.index, msg.id));
                    out.push(msg);
                }
                self.mail.push_back(Mail::Published { reply, ids });
                self.fanouts.extend(out);
            }
            Mail::Published { reply, ids } => {
                let c = reply.conn.0 as usize;
                self.dispatch(c, |p, ctx| p.handle_published(ctx, reply.token, &ids));
            }
            Mail::Replayed {
                conn,
                at: sub,
                replay,
            } => {
                self.dispatch(conn.0 as usize, |p, ctx| p.handle_replay(ctx, sub, *replay));
            }
            Mail::Presence {
                reply,
                channel,
                clients,
            } => {
                let c = reply.conn.0 as usize;
                self.dispatch(c, |p, ctx| {
                    p.handle_presence(ctx, reply.token, &channel, &clients)
                });
            }
            Mail::Ack {
                reply,
                channel,
                who,
                id,
                ..
            } => {
                let acked = match &self.store_failed {
                    Some(reason) => Err(AckError::Unavailable(format!(
                        "store unavailable: {reason}"
                    ))),
                    None => self.hub.ack(&channel, &who, id),
                };
                // As `shard::owner::ack` at `--fsync never`: the receipt
                // goes out with the answer.
                let receipt =
                    (acked.as_ref().ok()).and_then(|a| self.hub.receipt(&channel, &who, a));
                let result = acked.map(|a| a.state);
                self.mail.push_back(Mail::Acked {
                    reply,
                    channel,
                    result,
                });
                if let Some(receipt) = receipt {
                    self.mail.push_back(Mail::Receipt(Box::new(receipt)));
                }
            }
            Mail::UnreadQuery { reply, who } => {
                let counts = Ok(self.hub.unread(&who));
                self.mail.push_back(Mail::Unread { reply, counts });
            }
            Mail::Unread { reply, counts } => {
                let c = reply.conn.0 as usize;
                self.dispatch(c, |p, ctx| p.handle_unread(ctx, reply.token, counts));
            }
            Mail::Acked {
                reply,
                channel,
                result,
            } => {
                let c = reply.conn.0 as usize;
                self.dispatch(c, |p, ctx| {
                    p.handle_acked(ctx, reply.token, &channel, result)
                });
            }
            Mail::Deliver(msg) => self.fanouts.push(msg),
            Mail::CatchUp { conn, at } => self.catch_up(conn, at),
            Mail::PublishRefused { reply, reason } => {
                let c = reply.conn.0 as usize;
                self.dispatch(c, |p, ctx| {
                    p.handle_publish_refused(ctx, reply.token, &reason)
                });
            }
            Mail::Receipt(receipt) => {
                let at = self.instant();
                let crate::hub::Receipt { to, payload } = *receipt;
                let event = Event::Ephemeral;
                let (msg, _) = (self.hub).publish_live(&to, DataKind::Text, payload, event, at);
                self.fanouts.push(msg);
            }
            // This node is on its own: no Redis bridge writes to it, and
            // it has no store.
            Mail::Redis(_) | Mail::Durable { .. } | Mail::StoreFailed { .. } => {}
        }
    }

    /// Tells a channel's subscribers about a presence change of the
    /// member `identity` names.
    fn announce(&mut self, channel: &ChannelName, event: Event, identity: String) {
        let at = self.instant();
        let identity = Bytes::from(identity);
        let (msg, _) = (self.hub).publish_live(channel, DataKind::Text, identity, event, at);
        self.fanouts.push(msg);
    }

    /// The end of a turn: the answers go out, then the held deliveries
    /// (which may lead to more), each round flushed.
    /// Connections whose queue was flushed while a subscription was
    /// behind catch up (`Shard::feed_hungry`), each round flushed too.
    fn end_turn(&mut self) {
        self.flush();
        loop {
            if !self.fanouts.is_empty() {
                for msg in std::mem::take(&mut self.fanouts) {
                    self.deliver(&msg);
                    self.drain_local();
                }
            } else if !self.hungry.is_empty() {
                for c in std::mem::take(&mut self.hungry) {
                    self.dispatch(c, |p, ctx| p.handle_drained(ctx));
                    self.drain_local();
                }
            } else {
                return;
            }
            self.flush();
        }
    }

    /// Hands queued output to peers that read, and closes the draining
    /// connections that have nothing left to send.
    fn flush(&mut self) {
        for c in 0..self.conns.len() {
            let conn = &mut self.conns[c];
            if !conn.open {
                continue;
            }
            if conn.reading {
                for (b, _) in conn.queued.drain(..) {
                    conn.received.extend_from_slice(&b);
                }
                conn.queued_len = 0;
                if std::mem::take(&mut conn.behind) {
                    self.hungry.push(c);
                }
            }
            if conn.proto.is_draining() && conn.queued_len == 0 {
                self.close_now(c);
            }
        }
    }

    /// Sends a message to the channel's subscribers (`Shard::deliver`):
    /// queued where the window has room, otherwise the subscription falls
    /// behind.
    fn deliver(&mut self, msg: &Arc<Message>) {
        let Some(chan) = self.hub.local_channel(&msg.channel) else {
            return;
        };
        let seq = if msg.is_stored() { msg.id.seq } else { 0 };
        let mut enc = Encodings::new(msg, false);
        let behind = (self.hub.subs(chan))
            .filter(|s| matches!(s.standing(), Standing::Behind(..)))
            .filter(|s| s.subscriber.format.wants(msg.event))
            .count();
        if !msg.is_stored() {
            ShardMetrics::add(&self.metrics.live_only_skipped, behind as u64);
        }
        let subs: Vec<(SubRef, Subscriber)> = (self.hub.subs_at(chan))
            .filter(|(_, s)| s.is_live() && s.subscriber.format.wants(msg.event))
            .filter(|(_, s)| !msg.is_stored() || s.live_after < seq)
            .map(|(at, s)| (at, s.subscriber))
            .collect();
        let mut delivered = 0;
        for (at, sub) in subs {
            let shared = match sub.deflate {
                None => enc.get(sub.format),
                Some(d) => enc.deflated(sub.format, d, &mut self.deflater),
            };
            let windowed = !sub.format.is_poll();
            if windowed && self.window_full(sub.conn, shared.len()) {
                self.fall_behind(at, sub, msg);
            } else if sub.format.is_shared() {
                if self.queue(sub.conn, shared, seq) == Queued::Ok {
                    delivered += 1;
                }
            } else {
                self.dispatch(sub.conn, |p, ctx| p.handle_delivery(ctx, msg, &shared));
            }
        }
        ShardMetrics::add(&self.metrics.deliveries, delivered);
        if msg.is_stored() {
            self.hub.keep_for_behind(chan, msg);
        }
    }

    /// A subscription that fell behind catches up (`Shard::catch_up`):
    /// from the backlog, else from the owner's history.
    fn catch_up(&mut self, conn: ConnHandle, at: SubRef) {
        let c = conn.0 as usize;
        let budget = self.settings.max_outbound;
        match self.hub.catch_up_from(at, |s| s.conn == c, budget) {
            Some(CatchUpFrom::Backlog(replay)) => {
                self.dispatch(c, |p, ctx| p.handle_replay(ctx, at, replay));
            }
            Some(CatchUpFrom::Owner { channel, since }) => {
                let (from, since, member) = (0, Some(since), None);
                (self.mail).push_back(Mail::Subscribe {
                    durable: None,
                    from,
                    conn,
                    at,
                    channel,
                    since,
                    member,
                });
            }
            None => {}
        }
    }

    /// `sub`'s window is full: the message waits in history and the
    /// subscription falls behind (`Shard::fall_behind`).
    fn fall_behind(&mut self, at: SubRef, mut sub: Subscriber, msg: &Message) {
        if !msg.is_stored() {
            ShardMetrics::add(&self.metrics.live_only_skipped, 1);
            return;
        }
        sub.behind_since = self.now;
        if let Some(s) = self.hub.sub_mut(at) {
            s.subscriber = sub;
        }
        if self
            .hub
            .set_standing(at, &sub, Standing::Behind(msg.id.seq - 1, false))
        {
            ShardMetrics::add(&self.metrics.fell_behind, 1);
            self.conns[sub.conn].behind = true;
            self.behind.push((sub.conn, at));
        }
    }

    /// The once-a-second lag check (`Shard::check_lagging`).
    fn check_lagging(&mut self) {
        let max = ticks(self.settings.max_lag);
        for (c, at) in std::mem::take(&mut self.behind) {
            let since = match self.hub.sub(at) {
                Some(s) if s.subscriber.conn == c => match s.standing() {
                    Standing::Behind(..) => Some(s.subscriber.behind_since),
                    _ => None,
                },
                _ => None,
            };
            let Some(since) = since else {
                continue; // caught up, or gone
            };
            if self.now.saturating_sub(since) < max {
                self.behind.push((c, at));
                continue;
            }
            ShardMetrics::add(&self.metrics.lagging_closes, 1);
            self.dispatch(c, |p, ctx| p.handle_lagging(ctx, at));
            self.drain_local();
        }
        // What no subscription behind needs any more (`Shard::trim_backlogs`).
        let mut oldest: std::collections::HashMap<u32, u64> = Default::default();
        for &(c, at) in &self.behind {
            if let Some(s) = self.hub.sub(at).filter(|s| s.subscriber.conn == c) {
                if let Standing::Behind(cursor, _) = s.standing() {
                    let o = oldest.entry(at.chan).or_insert(cursor);
                    *o = (*o).min(cursor);
                }
            }
        }
        for (chan, cursor) in oldest {
            self.hub.trim_backlog(chan, cursor);
        }
    }
}

/// What became of queued output (`shard::conns::Queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Ok,
    Gone,
    Overflow,
}

fn client_id(c: usize) -> ClientId {
    ClientId(c as u64 + 1)
}

/// The context of one protocol call on connection `conn`, as
/// `shard::context::ConnCtx`.
#[derive(Debug)]
struct Ctx<'a> {
    node: &'a mut Node,
    conn: usize,
    /// Output went over the outbound limit.
    slow: bool,
    /// Feed the kept input again after the call.
    resume: bool,
}

impl Ctx<'_> {
    fn reply_to(&mut self) -> ReplyTo {
        let token = self.node.next_token;
        self.node.next_token = token.wrapping_add(1);
        ReplyTo {
            shard: 0,
            conn: ConnHandle(self.conn as u64),
            token,
        }
    }

    /// The subscription `at`, if it is this connection's.
    fn own_sub(&self, at: SubRef) -> Option<Subscriber> {
        (self.node.hub.sub(at))
            .map(|s| s.subscriber)
            .filter(|s| s.conn == self.conn)
    }
}

impl Context for Ctx<'_> {
    fn now(&self) -> Tick {
        self.node.now
    }

    fn deflater(&mut self) -> &mut Deflater {
        &mut self.node.deflater
    }

    fn unix_time(&self) -> u64 {
        // The wall clock when the node was made, moved by the virtual one.
        self.node.unix_base + u64::from(self.node.now) * TICK.as_millis() as u64 / 1000
    }

    fn settings(&self) -> &Settings {
        &self.node.settings
    }

    fn metrics(&self) -> &ShardMetrics {
        &self.node.metrics
    }

    fn tickets(&self) -> &Tickets {
        &self.node.tickets
    }

    fn send(&mut self, bytes: Bytes) {
        self.send_message(bytes, 0);
    }

    fn send_message(&mut self, bytes: Bytes, seq: u64) {
        if self.node.queue(self.conn, bytes, seq) == Queued::Overflow {
            self.slow = true;
        }
    }

    fn discard_output(&mut self) -> Option<u64> {
        let conn = &mut self.node.conns[self.conn];
        let first = (conn.queued.iter())
            .map(|&(_, seq)| seq)
            .filter(|&seq| seq != 0)
            .min();
        conn.queued.clear();
        conn.queued_len = 0;
        self.slow = false;
        first
    }

    fn output_pending(&self) -> bool {
        self.node.conns[self.conn].queued_len > 0
    }

    fn set_timer(&mut self, at: Option<Tick>) {
        self.node.conns[self.conn].timer = at;
    }

    fn resume_input(&mut self) {
        self.resume = true;
    }

    fn subscribe(&mut self, request: Subscribe) -> SubRef {
        let subscriber = Subscriber {
            conn: self.conn,
            format: request.format,
            deflate: request.deflate,
            behind_since: 0,
        };
        let at = self.node.hub.add_sub(&request.channel, subscriber);
        self.node.mail.push_back(Mail::Subscribe {
            from: 0,
            conn: ConnHandle(self.conn as u64),
            at,
            channel: request.channel,
            since: request.since,
            member: request.presence,
            durable: request.durable.map(Box::new),
        });
        at
    }

    fn accept_replay(&mut self, at: SubRef, replay: &Replay) -> bool {
        let Some(s) = self.own_sub(at) else {
            return false;
        };
        let Some(before) = self.node.hub.take_replay(at, &s, replay) else {
            return false;
        };
        if let Standing::Behind(..) = replay.standing() {
            let was_behind = matches!(before, Standing::Behind(..));
            let since = waiting_since(
                was_behind.then_some(s.behind_since),
                self.node.now,
                replay.rest_since.map(|t| tick_at(self.node.start, t)),
            );
            if let Some(sub) = self.node.hub.sub_mut(at) {
                sub.subscriber.behind_since = since;
            }
            if !was_behind {
                self.node.behind.push((self.conn, at));
            }
            self.node.conns[self.conn].behind = true;
        }
        true
    }

    fn position(&self, at: SubRef) -> Option<u64> {
        self.own_sub(at)?;
        match self.node.hub.sub(at)?.standing() {
            Standing::Live(seq) => Some(seq),
            _ => None,
        }
    }

    fn cursor(&self, at: SubRef) -> Option<u64> {
        self.own_sub(at)?;
        match self.node.hub.sub(at)?.standing() {
            Standing::Live(seq) | Standing::Behind(seq, _) => Some(seq),
            Standing::Pending => None,
        }
    }

    fn needs_catch_up(&self, at: SubRef) -> bool {
        self.own_sub(at).is_some()
            && (self.node.hub.sub(at))
                .is_some_and(|s| matches!(s.standing(), Standing::Behind(_, false)))
    }

    fn channel(&self, at: SubRef) -> Option<ChannelName> {
        self.own_sub(at)?;
        self.node.hub.channel_name(at.chan)
    }

    fn catch_up(&mut self, at: SubRef) {
        let Some(s) = self.own_sub(at) else {
            return;
        };
        let Some(Standing::Behind(cursor, false)) = self.node.hub.sub(at).map(|s| s.standing())
        else {
            return;
        };
        (self.node.hub).set_standing(at, &s, Standing::Behind(cursor, true));
        let conn = ConnHandle(self.conn as u64);
        self.node.mail.push_back(Mail::CatchUp { conn, at });
    }

    fn unsubscribe(&mut self, at: SubRef, presence: Option<Member>) {
        let Some(s) = self.own_sub(at) else {
            return;
        };
        let left = presence.and_then(|m| Some((self.node.hub.channel_name(at.chan)?, m)));
        // The owner is this shard: the channel is kept, no mail for that.
        let _ = self.node.hub.remove_sub(at, &s);
        if let Some((channel, member)) = left {
            self.node.mail.push_back(Mail::Left { channel, member });
        }
    }

    fn publish(&mut self, items: Vec<PublishItem>) -> u32 {
        let reply = self.reply_to();
        self.node.mail.push_back(Mail::Publish { reply, items });
        reply.token
    }

    fn ack(&mut self, channel: ChannelName, who: Cursor, id: MsgId, subscribed: bool) -> u32 {
        let reply = self.reply_to();
        self.node.mail.push_back(Mail::Ack {
            reply,
            channel,
            who,
            id,
            subscribed,
        });
        reply.token
    }

    fn query_unread(&mut self, who: Cursor) -> (u32, usize) {
        let reply = self.reply_to();
        self.node.mail.push_back(Mail::UnreadQuery { reply, who });
        (reply.token, 1)
    }

    fn query_presence(&mut self, channel: ChannelName) -> u32 {
        let reply = self.reply_to();
        (self.node.mail).push_back(Mail::PresenceQuery { reply, channel });
        reply.token
    }

    fn client_id(&self) -> ClientId {
        client_id(self.conn)
    }

    fn node_epoch(&self) -> Epoch {
        self.node.hub.epoch()
    }

    fn channel_epoch(&self, at: SubRef) -> Epoch {
        self.node.hub.channel_epoch(at.chan)
    }

    fn overloaded(&self) -> bool {
        self.node.hub.pinned() > self.node.settings.max_pinned
    }

    fn admits_channel(&self, channel: &ChannelName) -> bool {
        self.node.hub.local_channel(channel).is_some()
            || self.node.hub.owned_count() < self.node.settings.max_channels
    }

    fn draining(&self) -> bool {
        self.node.draining
    }

    fn cluster_degraded(&self) -> bool {
        false
    }

    fn store_failed(&self) -> Option<Arc<str>> {
        self.node.store_failed.clone()
    }

    fn render_metrics(&self) -> String {
        let node = NodeGauges {
            capacity: 0,
            mailbox_depth: vec![0],
            rss_bytes: None,
            tls_reloads: None,
        };
        crate::metrics::render(std::slice::from_ref(&self.node.metrics), &node)
    }
}

// ---- client input ------------------------------------------------------------------

/// `GET target` with a `Host` and the given headers.
pub fn get(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// `POST target` with a `Content-Length` body.
pub fn post(target: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A WebSocket opening handshake for `target` offering `extensions`
/// (`Sec-WebSocket-Extensions`).
pub fn upgrade_offering(target: &str, extensions: &str) -> Vec<u8> {
    get(
        target,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Extensions", extensions),
        ],
    )
}

/// A WebSocket opening handshake for `target`, with RFC 6455's sample key.
pub fn upgrade(target: &str) -> Vec<u8> {
    get(
        target,
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
}

/// One frame as a client sends it: masked (with a fixed key, so output is
/// the same run after run).
pub fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode::masked_frame(&mut out, opcode, fin, payload, [0x37, 0xfa, 0x21, 0x3d]);
    out.to_vec()
}

/// A client's message compressed (permessage-deflate, no context
/// takeover) and split into frames of at most `frame_size` compressed
/// bytes, RSV1 on the first.
pub fn deflated(kind: DataKind, payload: &[u8], frame_size: usize) -> Vec<u8> {
    let compressed = codec::ws::deflate::compress(payload, 15, 6);
    let chunks: Vec<&[u8]> = if compressed.is_empty() {
        vec![&[]]
    } else {
        compressed.chunks(frame_size.max(1)).collect()
    };
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            kind.opcode()
        } else {
            OpCode::Continuation
        };
        let mut f = frame(opcode, i + 1 == chunks.len(), chunk);
        if i == 0 {
            f[0] |= 0x40; // RSV1
        }
        out.extend(f);
    }
    out
}

/// A client's text message in one frame.
pub fn text(s: &str) -> Vec<u8> {
    frame(OpCode::Text, true, s.as_bytes())
}

/// A client's close frame.
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Close, true, &payload)
}

// ---- server output -------------------------------------------------------------------

/// An HTTP response as the peer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes; none for `101` or an event
    /// stream, whose bytes follow as frames or events).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a text body")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Parses the response at the front of `buf`; `None` until its head and
/// body are complete. The server frames every body with `Content-Length`.
pub fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("an ASCII response head");
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status_line = lines.next().expect("a status line");
    let status = (status_line.strip_prefix("HTTP/1.1 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("a header line");
            (name.to_string(), value.to_string())
        })
        .collect();
    let len = (headers.iter())
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map_or(0, |(_, v)| v.parse::<usize>().expect("a length"));
    let body = buf.get(end..end + len)?.to_vec();
    Some((
        Response {
            status,
            headers,
            body,
        },
        end + len,
    ))
}

/// A WebSocket frame (a whole message: the server never fragments) as the
/// peer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping and its payload.
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// A close frame: its code (`None`: empty) and reason.
    Close(Option<u16>, String),
    /// A text message that came compressed (permessage-deflate), inflated.
    DeflatedText(String),
    /// A binary message that came compressed, inflated.
    DeflatedBinary(Vec<u8>),
}

/// Decodes the whole frames at the front of `buf` with the codec's
/// client-side decoder (which rejects masked or malformed frames);
/// returns them and the bytes they took. Compressed messages are inflated
/// and told apart ([`WsFrame::DeflatedText`]), so a test sees which went
/// compressed.
pub fn parse_frames(buf: &[u8]) -> (Vec<WsFrame>, usize) {
    let mut bytes = buf.to_vec();
    let config = DecoderConfig {
        extension_rsv: 0x4,
        ..DecoderConfig::client()
    };
    let mut dec = FrameDecoder::new(config);
    let mut frames = Vec::new();
    let mut message: Option<(DataKind, Vec<u8>)> = None;
    let mut pos = 0;
    let mut whole = 0;
    while let Status::Complete((n, f)) = dec
        .decode(&mut bytes[pos..])
        .expect("the server sends valid frames")
    {
        pos += n;
        match f {
            Frame::Data {
                kind,
                payload,
                last,
                compressed,
                ..
            } => {
                let m = message.get_or_insert((kind, Vec::new()));
                m.1.extend_from_slice(payload);
                if last {
                    let (kind, data) = message.take().expect("a message");
                    let text = |data| String::from_utf8(data).expect("UTF-8");
                    frames.push(match (kind, compressed) {
                        (DataKind::Text, false) => WsFrame::Text(text(data)),
                        (DataKind::Binary, false) => WsFrame::Binary(data),
                        (DataKind::Text, true) => WsFrame::DeflatedText(text(inflate(&data))),
                        (DataKind::Binary, true) => WsFrame::DeflatedBinary(inflate(&data)),
                    });
                }
            }
            Frame::Ping(p) => frames.push(WsFrame::Ping(p.to_vec())),
            Frame::Pong(p) => frames.push(WsFrame::Pong(p.to_vec())),
            Frame::Close(c) => frames.push(WsFrame::Close(
                c.map(|c| c.code.0),
                c.map_or(String::new(), |c| c.reason.to_string()),
            )),
        }
        if dec.is_idle() {
            whole = pos;
        }
        if pos == bytes.len() {
            break;
        }
    }
    assert_eq!(whole, pos, "the server sent part of a frame");
    (frames, whole)
}

/// A compressed message inflated, as a client with no context takeover
/// does.
fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::ws::deflate::Inflater::new()
        .inflate(compressed, true, 64 << 20, &mut out)
        .expect("the server sends valid DEFLATE data");
    out
}

/// What an event stream carries: events, and comments (heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A comment line (`:` and its text).
    Comment(String),
    /// The fields up to a blank line.
    Event(SseEvent),
}

/// One event's fields (`data` lines joined with `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:`.
    pub data: Option<String>,
    /// `retry:`.
    pub retry: Option<u32>,
}

impl SseItem {
    /// The event, or `None` for a comment.
    pub fn event(&self) -> Option<&SseEvent> {
        match self {
            SseItem::Event(e) => Some(e),
            SseItem::Comment(_) => None,
        }
    }
}

/// Parses the whole events and comments at the front of an event stream;
/// returns them and the bytes they took. The server ends lines with `\n`.
pub fn parse_sse(buf: &[u8]) -> (Vec<SseItem>, usize) {
    let text = std::str::from_utf8(buf).expect("an event stream is UTF-8");
    let mut items = Vec::new();
    // What was read since the last whole item: an event's fields, and any
    // comments among them.
    let mut pending: Vec<SseItem> = Vec::new();
    let mut event: Option<SseEvent> = None;
    let mut pos = 0;
    let mut whole = 0;
    while let Some(n) = text[pos..].find('\n') {
        let line = &text[pos..pos + n];
        pos += n + 1;
        if let Some(comment) = line.strip_prefix(':') {
            pending.push(SseItem::Comment(comment.to_string()));
        } else if line.is_empty() {
            pending.extend(event.take().map(SseItem::Event));
        } else {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            let e = event.get_or_insert_with(SseEvent::default);
            match field {
                "id" => e.id = Some(value),
                "event" => e.event = Some(value),
                "data" => match &mut e.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => e.data = Some(value),
                },
                "retry" => e.retry = Some(value.parse().expect("retry is a number")),
                other => panic!("unknown SSE field {other:?}"),
            }
        }
        if event.is_none() {
            items.append(&mut pending);
            whole = pos;
        }
    }
    (items, whole)
}
