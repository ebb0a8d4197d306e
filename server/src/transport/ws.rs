//! WebSocket connections: the link (frames, heartbeats, the closing
//! handshake) and the three things a WebSocket can be on this node — a
//! subscriber of one channel (`/ws/{channel}`), the echo endpoint
//! (`/echo`), or a multiplexed session (`/ws`, see `super::mux`).
//!
//! # `/ws/{channel}`
//! Query parameters:
//! * `since=ID` — resume: first every message after `ID` still in history,
//!   then live, with no gap and no duplicate at the seam.
//! * `format=raw` (default) — each message is one frame holding exactly the
//!   published payload: a text frame for text, a binary frame otherwise.
//! * `format=json` — each message is a text frame
//!   `{"type":"message","ch":…,"id":…,"data":…}` (binary payloads as
//!   base64 with `"encoding":"base64"`), so the client learns the ids it
//!   needs to resume.
//!
//! When `since` can no longer be honoured (evicted from history, another
//! epoch, unknown) the first frame, in either format, is a JSON text frame
//! `{"type":"reset","ch":…,"reason":"evicted"|"epoch"|"unknown",
//! "since":…,"missed":N|null,"epoch":…}`, followed by everything history
//! still has, then live messages. Messages a subscriber sends are validated
//! (a violation closes the connection with its code) and otherwise ignored.
//!
//! # Heartbeats and closing
//! A ping goes out every `--ping-interval`; a connection from which nothing
//! (pong or otherwise) arrived for two intervals is closed without a close
//! frame — the peer is gone, and clients observe 1006. The server's own
//! closes carry a code: 1001 on shutdown, 1008 for a slow consumer or too
//! many invalid commands, the protocol error's code (1002, 1007, 1009) for
//! a violation. A peer's close is answered with its own code, then the
//! server closes TCP. After sending its close frame the server waits
//! `--close-timeout` for the peer's.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codec::http::RequestHead;
use codec::ws::deflate::InflateError;
use codec::ws::handshake::HandshakeError;
use codec::ws::{
    encode, handshake, Assembler, CloseCode, CloseHandshake, DataKind, DecoderConfig, Frame,
    FrameDecoder, Message, PeerClosed, ProtocolError,
};
use codec::Status;

use crate::auth::Access;
use crate::hub::{
    AckError, ChannelName, Cursor, CursorState, Member, MsgId, Replay, SubRef, UnreadCounts,
};
use crate::metrics::{Refusal, ShardMetrics, Transport};

use super::context::{compact_expiry, sooner_of, ticks, Context, Finish, Step, Subscribe, Tick};
use super::deflate::{self, Deflate};
use super::framing::{self, Format};
use super::mux::{Session, Verdict, TOKEN_EXPIRED};
use super::params;
use super::response::Refused;

/// What a `/ws/{channel}` request subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribePlan {
    /// The channel.
    pub channel: ChannelName,
    /// [`Format::WsRaw`] or [`Format::WsJson`].
    pub format: Format,
    /// Resume point.
    pub since: Option<MsgId>,
    /// When the client's token expires, seconds since the epoch (set by
    /// the router when the node checks tokens).
    pub expires: Option<u64>,
    /// A durable subscription (`?durable=1`, or a durable namespace, with
    /// a token naming a `sub`; set by the router): whose cursor.
    pub durable: Option<Cursor>,
}

/// Reads a `/ws/{channel}` request (`raw_channel` is the path's last
/// segment, percent-encoded).
pub fn subscribe_plan(head: &RequestHead<'_>, raw_channel: &str) -> Result<SubscribePlan, Refused> {
    let channel =
        ChannelName::from_path(raw_channel).map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
    let format = match head.query_param("format") {
        Ok(None) => Format::WsRaw,
        Ok(Some(f)) if f == "raw" => Format::WsRaw,
        Ok(Some(f)) if f == "json" => Format::WsJson,
        _ => {
            return Err(Refused::bad(
                Refusal::BadRequest,
                "format must be raw or json",
            ))
        }
    };
    let since = params::since(head).map_err(|r| Refused::bad(Refusal::BadSince, r))?;
    Ok(SubscribePlan {
        channel,
        format,
        since,
        expires: None,
        durable: None,
    })
}

/// Validates an opening handshake and writes the `101` with what
/// permessage-deflate agreed (when the node offers it: `--deflate`), or
/// the refusal with its status and reason (finish after the flush).
pub fn accept_upgrade(
    ctx: &mut impl Context,
    head: &RequestHead<'_>,
) -> Result<Option<Deflate>, HandshakeError> {
    let policy = ctx.settings().deflate.map(|_| deflate::POLICY);
    match handshake::validate(head, &[], policy) {
        Ok(accepted) => {
            let mut out = BytesMut::with_capacity(256);
            accepted.write_response(&mut out);
            ctx.send(out.freeze());
            ShardMetrics::add(&ctx.metrics().upgrades, 1);
            Ok(accepted.deflate.as_ref().map(Deflate::from_agreed))
        }
        Err(e) => {
            ctx.metrics().refuse(Refusal::Handshake);
            tracing::debug!("refused WebSocket handshake: {e}");
            let mut out = BytesMut::new();
            e.write_response(&mut out);
            ctx.send(out.freeze());
            Err(e)
        }
    }
}

/// What an upgraded connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// `/ws/{channel}`.
    Subscriber(SubscribePlan),
    /// `/echo`.
    Echo,
    /// `/ws`, with what the handshake's token grants (if the node checks
    /// tokens and one came with it).
    Mux(Option<Arc<Access>>),
}

/// What the connection is, in one byte (the state is kept small: it lives
/// in every connection slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// A subscriber receiving [`Format::WsRaw`] frames.
    Raw,
    /// A subscriber receiving [`Format::WsJson`] envelopes.
    Json,
    Echo,
    Mux,
}

/// The link's state in one byte (it lives in every connection slot): bit 7
/// — we sent a close frame and wait for the peer's; bits 0–3 — the
/// permessage-deflate agreement ([`Deflate::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link(u8);

impl Link {
    const CLOSING: u8 = 0x80;

    fn new(deflate: Option<Deflate>) -> Link {
        Link(Deflate::pack(deflate))
    }

    fn is_closing(self) -> bool {
        self.0 & Link::CLOSING != 0
    }

    fn set_closing(&mut self) {
        self.0 |= Link::CLOSING;
    }

    fn deflate(self) -> Option<Deflate> {
        Deflate::unpack(self.0)
    }
}

/// State only a busy or multiplexed WebSocket needs, boxed.
#[derive(Debug, Default)]
struct Extra {
    /// A decoder in the middle of a frame or fragmented message.
    decoder: Option<FrameDecoder>,
    /// Reassembly of a fragmented message (echo, multiplexed).
    assembler: Assembler,
    /// The multiplexed session (boxed: a token-carrying `/ws/{channel}`
    /// subscriber keeps an `Extra` for its expiry, and should not pay for a
    /// session).
    mux: Option<Box<Session>>,
    /// A `/ws/{channel}` subscriber's token expiry, seconds since the
    /// epoch (0: none; `/ws` keeps its token in the session).
    expires: u32,
}

/// What a WebSocket that needs more than [`Ws`] keeps on the heap (a
/// fragmented message, a session, a token's expiry): reported by the size
/// test beside `Conn`.
pub const EXTRA_SIZE: usize = std::mem::size_of::<Extra>();

impl Extra {
    fn is_idle(&self) -> bool {
        self.decoder.is_none()
            && self.assembler.is_empty()
            && self.mux.is_none()
            && self.expires == 0
    }
}

/// An open WebSocket. See the module docs.
#[derive(Debug)]
pub struct Ws {
    /// The subscription of a `/ws/{channel}` subscriber.
    sub: SubRef,
    /// Tick of the last bytes received.
    last_rx: Tick,
    kind: Kind,
    /// Whether we are closing, and what permessage-deflate agreed.
    link: Link,
    /// Control frames (pings, pongs) received in the second `control_second`
    /// names (the low byte of the second's number): two bytes that would
    /// otherwise be padding.
    control_frames: u8,
    control_second: u8,
    extra: Option<Box<Extra>>,
}

impl Ws {
    /// The connection was upgraded (with permessage-deflate as `deflate`
    /// agreed): start its heartbeat and its app.
    pub fn start(ctx: &mut impl Context, app: App, deflate: Option<Deflate>) -> Ws {
        let now = ctx.now();
        ctx.set_timer(Some(now + ticks(ctx.settings().ping_interval)));
        let mut ws = Ws {
            sub: SubRef::NONE,
            last_rx: now,
            kind: Kind::Echo,
            link: Link::new(deflate),
            control_frames: 0,
            control_second: 0,
            extra: None,
        };
        match app {
            App::Echo => {}
            App::Subscriber(plan) => {
                if let Some(e) = plan.expires {
                    // Kept on the heap: only connections that presented a
                    // token pay for it (every idle one pays for `Ws`).
                    ws.extra = Some(Box::new(Extra {
                        expires: compact_expiry(Some(e)),
                        ..Extra::default()
                    }));
                }
                ws.kind = if plan.format == Format::WsJson {
                    Kind::Json
                } else {
                    Kind::Raw
                };
                ws.sub = ctx.subscribe(Subscribe {
                    channel: plan.channel,
                    format: plan.format,
                    since: plan.since,
                    presence: None,
                    deflate,
                    durable: plan.durable,
                });
            }
            App::Mux(access) => {
                ws.kind = Kind::Mux;
                ws.extra = Some(Box::new(Extra {
                    mux: Some(Box::new(Session::new(access, deflate))),
                    ..Extra::default()
                }));
            }
        }
        if ws.token_expiry().is_some() {
            ws.schedule(ctx);
        }
        ws
    }

    fn mux(&mut self) -> Option<&mut Session> {
        self.extra.as_mut().and_then(|e| e.mux.as_deref_mut())
    }

    /// Bytes from the peer.
    pub fn handle_input(
        &mut self,
        ctx: &mut impl Context,
        buf: &mut [u8],
    ) -> (Step, Option<Finish>) {
        self.last_rx = ctx.now();
        let config = DecoderConfig {
            max_message_size: ctx.settings().max_message_size as u64,
            // RSV1 marks a compressed message once the extension is agreed.
            extension_rsv: if self.link.deflate().is_some() {
                0x4
            } else {
                0
            },
            ..DecoderConfig::server()
        };
        let mut dec = self
            .extra
            .as_mut()
            .and_then(|e| e.decoder.take())
            .unwrap_or_else(|| FrameDecoder::new(config));
        let mut pos = 0;
        loop {
            match dec.decode(&mut buf[pos..]) {
                Ok(Status::Partial) => break,
                Ok(Status::Complete((n, frame))) => {
                    pos += n;
                    if let Some(finish) = self.on_frame(ctx, frame) {
                        return (Step::Discard, Some(finish));
                    }
                }
                Err(e) => return (Step::Discard, Some(self.protocol_error(ctx, e))),
            }
        }
        if !dec.is_idle() {
            self.extra.get_or_insert_with(Default::default).decoder = Some(dec);
        } else if self.extra.as_ref().is_some_and(|e| e.is_idle()) {
            self.extra = None;
        }
        (Step::Wait(pos), None)
    }

    /// One frame; `Some` when the connection ends.
    fn on_frame(&mut self, ctx: &mut impl Context, frame: Frame<'_>) -> Option<Finish> {
        match frame {
            Frame::Data {
                kind,
                payload,
                last,
                compressed,
                ..
            } => {
                if matches!(self.kind, Kind::Raw | Kind::Json) || self.link.is_closing() {
                    // Validated by the decoder (a compressed message's
                    // UTF-8 is not: it is never inflated), otherwise ignored.
                    return None;
                }
                let extra = self.extra.get_or_insert_with(Default::default);
                let mut message = extra.assembler.push(kind, payload, last)?;
                if compressed {
                    match inflate(ctx, &message) {
                        Ok(payload) => message.payload = payload,
                        Err((code, reason)) => return Some(self.fail(ctx, code, reason)),
                    }
                }
                let extra = self.extra.get_or_insert_with(Default::default);
                match (self.kind, extra.mux.as_deref_mut()) {
                    (Kind::Mux, Some(session)) => {
                        let expiry = session.token_expiry();
                        let verdict = session.handle_message(ctx, message.kind, &message.payload);
                        if let Verdict::Close(code, reason) = verdict {
                            self.initiate_close(ctx, code, &reason);
                        } else if session.token_expiry() != expiry {
                            self.schedule(ctx); // a token came, or a newer one
                        }
                    }
                    _ => {
                        let deflate = self.link.deflate();
                        let frame = ctx
                            .deflater()
                            .message(deflate, message.kind, &message.payload);
                        ctx.send(frame);
                    }
                }
                None
            }
            Frame::Ping(_) | Frame::Pong(_) if !self.take_control_frame(ctx) => {
                let max = ctx.settings().max_control_rate;
                ctx.metrics().refuse(Refusal::RateLimited);
                tracing::debug!("WebSocket closed: over {max} control frames per second");
                let reason = format!("over {max} pings and pongs per second (--max-control-rate)");
                self.initiate_close(ctx, CloseCode::POLICY_VIOLATION, &reason);
                None
            }
            Frame::Ping(payload) => {
                if !self.link.is_closing() {
                    let mut out = BytesMut::with_capacity(2 + payload.len());
                    if encode::pong(&mut out, payload).is_ok() {
                        ctx.send(out.freeze());
                    }
                }
                None
            }
            Frame::Pong(_) => None,
            Frame::Close(close) => {
                let mut hs = CloseHandshake::new();
                if self.link.is_closing() {
                    let _ = hs.initiate();
                }
                match hs.receive(close) {
                    PeerClosed::Reply(code) => {
                        self.release(ctx);
                        let mut out = BytesMut::with_capacity(4);
                        let _ = encode::close(&mut out, code, "");
                        ctx.send(out.freeze());
                        Some(Finish::AfterFlush)
                    }
                    PeerClosed::Complete => Some(Finish::AfterFlush),
                    PeerClosed::Ignore => None,
                }
            }
        }
    }

    fn protocol_error(&mut self, ctx: &mut impl Context, e: ProtocolError) -> Finish {
        self.fail(ctx, e.close_code(), e.reason())
    }

    /// The peer broke the protocol: leave every channel, send a close frame
    /// with `code` and `reason`, and end the connection once it is out.
    fn fail(&mut self, ctx: &mut impl Context, code: CloseCode, reason: &str) -> Finish {
        ShardMetrics::add(&ctx.metrics().protocol_errors, 1);
        tracing::debug!("closing WebSocket after a protocol violation: {reason}");
        if !self.link.is_closing() {
            self.release(ctx);
            let mut out = BytesMut::with_capacity(4 + reason.len());
            let _ = encode::close(&mut out, Some(code), reason);
            ctx.send(out.freeze());
        }
        Finish::AfterFlush
    }

    /// Starts the closing handshake from our side: leave every channel,
    /// send the close frame, wait `--close-timeout` for the peer's.
    /// Counts a control frame against `--max-control-rate`; `false` once
    /// the peer sends more in one second.
    fn take_control_frame(&mut self, ctx: &impl Context) -> bool {
        let second = (ctx.now() / ticks(Duration::from_secs(1)).max(1)) as u8;
        if second != self.control_second {
            self.control_second = second;
            self.control_frames = 0;
        }
        self.control_frames = self.control_frames.saturating_add(1);
        u32::from(self.control_frames) <= ctx.settings().max_control_rate
    }

    pub fn initiate_close(&mut self, ctx: &mut impl Context, code: CloseCode, reason: &str) {
        if self.link.is_closing() {
            return;
        }
        self.release(ctx);
        let mut frame = BytesMut::with_capacity(4 + reason.len());
        if encode::close(&mut frame, Some(code), reason).is_err() {
            frame.clear();
            let _ = encode::close(&mut frame, Some(code), "");
        }
        ctx.send(frame.freeze());
        self.link.set_closing();
        ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().close_timeout)));
    }

    /// The heartbeat (or, while closing, the close timeout) is due.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Option<Finish> {
        if self.link.is_closing() {
            return Some(Finish::Now);
        }
        let expires = self.token_expiry();
        if expires.is_some_and(|e| ctx.unix_time() >= e) {
            tracing::debug!("closing a WebSocket: its token expired");
            self.initiate_close(ctx, TOKEN_EXPIRED, "token expired");
            return None;
        }
        let interval = ticks(ctx.settings().ping_interval);
        if ctx.now().saturating_sub(self.last_rx) >= 2 * interval {
            ShardMetrics::add(&ctx.metrics().ping_timeouts, 1);
            tracing::debug!("closing a WebSocket silent for two ping intervals");
            return Some(Finish::Now);
        }
        ctx.send(Bytes::from_static(&[0x89, 0x00]));
        self.schedule(ctx);
        None
    }

    /// The timer: the next ping, or the token's expiry if that comes
    /// first.
    fn schedule(&self, ctx: &mut impl Context) {
        let at = sooner_of(ctx, ctx.settings().ping_interval, self.token_expiry());
        ctx.set_timer(Some(at));
    }

    /// When the client's token expires, if the node checks tokens.
    fn token_expiry(&self) -> Option<u64> {
        match self.kind {
            Kind::Mux => self.extra.as_ref()?.mux.as_ref()?.token_expiry(),
            _ => {
                let expires = self.extra.as_ref()?.expires;
                (expires != 0).then_some(u64::from(expires))
            }
        }
    }

    /// The owner's answer to a subscription: the reset signal and history
    /// in the subscription's format, then live.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) {
        if self.link.is_closing() {
            return;
        }
        if self.kind == Kind::Mux {
            if let Some(session) = self.mux() {
                session.handle_replay(ctx, at, replay);
            }
            return;
        }
        if at != self.sub || !ctx.accept_replay(at, &replay) {
            return;
        }
        let raw = self.kind == Kind::Raw;
        if let Some(reset) = replay.reset {
            ctx.send(framing::reset_frame(&replay.channel, &reset, replay.epoch));
        }
        for m in &replay.messages {
            let frame = if raw {
                m.ws_frame.clone()
            } else {
                framing::message_frame(m)
            };
            ctx.send_message(frame, m.id.seq);
        }
        ShardMetrics::add(&ctx.metrics().deliveries, replay.messages.len() as u64);
    }

    /// The connection's output drained: a subscription that fell behind
    /// catches up.
    pub fn handle_drained(&mut self, ctx: &mut impl Context) {
        if self.link.is_closing() {
            return;
        }
        if let Some(session) = self.mux() {
            session.handle_drained(ctx);
        } else if self.sub != SubRef::NONE && ctx.needs_catch_up(self.sub) {
            ctx.catch_up(self.sub);
        }
    }

    /// Subscription `at` has waited longer than `--max-lag` for its oldest
    /// message to go out: drop what is queued and close with 1008, saying
    /// where to resume (a multiplexed client resumes each channel from the
    /// last id it has).
    pub fn handle_lagging(&mut self, ctx: &mut impl Context, at: SubRef) {
        if self.link.is_closing() {
            return;
        }
        let undelivered = ctx.discard_output();
        if self.kind == Kind::Mux {
            self.initiate_close(
                ctx,
                CloseCode::POLICY_VIOLATION,
                "lagging: resume each channel from the last id received",
            );
            return;
        }
        let reason = match undelivered.map(|seq| seq - 1).or_else(|| ctx.cursor(at)) {
            Some(seq) => {
                let id = MsgId {
                    epoch: ctx.channel_epoch(at),
                    seq,
                };
                format!("lagging: resume from {id}")
            }
            None => "lagging".to_string(),
        };
        self.initiate_close(ctx, CloseCode::POLICY_VIOLATION, &reason);
    }

    /// An owner assigned the ids of a client's publish.
    pub fn handle_published(&mut self, ctx: &mut impl Context, token: u32, ids: &[(u32, MsgId)]) {
        if let Some(session) = self.mux() {
            session.handle_published(ctx, token, ids);
        }
    }

    /// A publish could not be stored.
    pub fn handle_publish_refused(&mut self, ctx: &mut impl Context, token: u32, reason: &str) {
        if let Some(session) = self.mux() {
            session.handle_publish_refused(ctx, token, reason);
        }
    }

    /// One shard answered an `unread` query.
    pub fn handle_unread(&mut self, ctx: &mut impl Context, token: u32, counts: UnreadCounts) {
        if let Some(session) = self.mux() {
            session.handle_unread(ctx, token, counts);
        }
    }

    /// The channel's owner answered an `ack`.
    pub fn handle_acked(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        result: Result<CursorState, AckError>,
    ) {
        if let Some(session) = self.mux() {
            session.handle_acked(ctx, token, channel, result);
        }
    }

    /// An owner answered a presence query.
    pub fn handle_presence(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        clients: &[Member],
    ) {
        if let Some(session) = self.mux() {
            session.handle_presence(ctx, token, channel, clients);
        }
    }

    /// The node is shutting down: close with 1001.
    pub fn handle_shutdown(&mut self, ctx: &mut impl Context) {
        self.initiate_close(ctx, CloseCode::GOING_AWAY, "server shutting down");
    }

    /// The peer does not read: drop what is queued and close with 1008.
    pub fn handle_slow_consumer(&mut self, ctx: &mut impl Context) {
        ctx.discard_output();
        self.initiate_close(
            ctx,
            CloseCode::POLICY_VIOLATION,
            "slow consumer: outbound queue overflow",
        );
    }

    /// Leaves every channel (once).
    pub fn release(&mut self, ctx: &mut impl Context) {
        let sub = std::mem::replace(&mut self.sub, SubRef::NONE);
        if sub != SubRef::NONE {
            ctx.unsubscribe(sub, None);
        }
        if let Some(session) = self.mux() {
            session.release(ctx);
        }
    }

    /// The connection is closing: nothing more is delivered.
    pub fn is_closing(&self) -> bool {
        self.link.is_closing()
    }

    /// The transport gauge it counts under.
    pub fn transport(&self) -> Transport {
        match self.kind {
            Kind::Raw | Kind::Json => Transport::WebSocket,
            Kind::Echo => Transport::Echo,
            Kind::Mux => Transport::Multiplexed,
        }
    }
}

/// A compressed message from the peer, inflated (up to
/// `--max-message-size`) and, if text, checked as UTF-8; or the close code
/// and reason to fail the connection with.
fn inflate(ctx: &mut impl Context, message: &Message) -> Result<Bytes, (CloseCode, &'static str)> {
    let limit = ctx.settings().max_message_size;
    let payload = match ctx.deflater().inflate(&message.payload, limit) {
        Ok(payload) => payload,
        Err(InflateError::TooBig) => {
            return Err((
                CloseCode::MESSAGE_TOO_BIG,
                "message too big once inflated (--max-message-size)",
            ))
        }
        Err(InflateError::Corrupt) => {
            return Err((
                CloseCode::INVALID_PAYLOAD,
                "compressed message is not valid DEFLATE data",
            ))
        }
    };
    if message.kind == DataKind::Text && std::str::from_utf8(&payload).is_err() {
        return Err((
            CloseCode::INVALID_PAYLOAD,
            "invalid UTF-8 in a compressed text message",
        ));
    }
    Ok(Bytes::from(payload))
}
