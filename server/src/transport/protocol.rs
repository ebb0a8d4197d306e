//! The state of one connection's protocol, and how one state leads to the
//! next.
//!
//! ```text
//!              ┌──────── keep-alive: next request ────────┐
//!              ▼                                          │
//! accept ─▶ Http ──upgrade──▶ Ws (subscriber, echo, mux)  │
//!              │ ──stream───▶ Sse / SseMulti              │
//!              │ ──poll─────▶ Poll ──answered─────────────┘
//!              ▼
//!   Draining (flushing, then closed) ─▶ Closed
//! ```
//!
//! Each state handles the same events — input bytes, its timer, a replay,
//! a delivery, an owner's answer, shutdown, a peer that does not read — and
//! [`Protocol`] routes them and applies the transitions the states ask for.
//! Every way a connection ends goes through [`Protocol::finish`], which
//! first releases what the state holds in the hub, so no subscription
//! outlives its connection.
//!
//! A slot of the connection table holds a `Protocol`, so it is kept small
//! (32 bytes): large or rare state is boxed inside the states.

use std::sync::Arc;

use bytes::Bytes;
use codec::ws::CloseCode;

use crate::hub::{
    AckError, ChannelName, CursorState, Member, Message, MsgId, Replay, SubRef, UnreadCounts,
};
use crate::metrics::Transport;

use super::context::{ticks, Context, Finish, Step};
use super::http::{self, Http, Route};
use super::poll::{self, Poll};
use super::response::Refused;

/// How long a connection refused for its address may take to send the
/// request its refusal answers.
const REFUSED_PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use super::sse::{self, Sse, SseMulti};
use super::ws::Ws;

/// One connection's protocol state. See the module docs.
#[derive(Debug)]
pub enum Protocol {
    /// Reading a request head or body; between requests.
    Http(Http),
    /// A WebSocket.
    Ws(Ws),
    /// A one-channel event stream.
    Sse(Sse),
    /// An event stream of several channels.
    SseMulti(Box<SseMulti>),
    /// A poll waiting for its answer.
    Poll(Poll),
    /// Ended: flushing what is queued, then closed (by the driver, or at
    /// the close timeout).
    Draining,
    /// Ended: the driver closes the socket.
    Closed,
}

impl Protocol {
    /// A freshly accepted connection.
    pub fn accept(ctx: &mut impl Context) -> Protocol {
        Protocol::Http(Http::start(ctx))
    }

    /// The transport gauge the connection counts under (none once ended).
    pub fn gauge(&self) -> Option<Transport> {
        match self {
            Protocol::Http(_) => Some(Transport::Http),
            Protocol::Ws(ws) if ws.is_closing() => None,
            Protocol::Ws(ws) => Some(ws.transport()),
            Protocol::Sse(_) | Protocol::SseMulti(_) => Some(Transport::Sse),
            Protocol::Poll(_) => Some(Transport::LongPoll),
            Protocol::Draining | Protocol::Closed => None,
        }
    }

    /// Whether the connection is flushing before it closes.
    pub fn is_draining(&self) -> bool {
        matches!(self, Protocol::Draining)
    }

    /// Whether the driver should close the socket now.
    pub fn is_closed(&self) -> bool {
        matches!(self, Protocol::Closed)
    }

    /// Bytes from the peer. Returns how many were used; the driver keeps
    /// the rest and offers them again with the next bytes (or on
    /// [`Context::resume_input`]).
    pub fn handle_input(&mut self, ctx: &mut impl Context, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let step = match self {
                Protocol::Http(h) => {
                    let (step, outcome) = h.handle_input(ctx, &mut buf[pos..]);
                    self.after_http(ctx, outcome);
                    step
                }
                Protocol::Ws(ws) => {
                    let (step, finish) = ws.handle_input(ctx, &mut buf[pos..]);
                    self.finish_if(ctx, finish);
                    step
                }
                // Pipelined requests wait until the poll is answered.
                Protocol::Poll(_) => Step::Wait(0),
                // An event stream's client has nothing more to say.
                Protocol::Sse(_)
                | Protocol::SseMulti(_)
                | Protocol::Draining
                | Protocol::Closed => Step::Discard,
            };
            match step {
                Step::Continue(n) => pos += n,
                Step::Wait(n) => return pos + n,
                Step::Discard => return buf.len(),
            }
        }
        pos
    }

    /// The deadline the state set has come.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_timer(ctx);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => {
                let finish = ws.handle_timer(ctx);
                self.finish_if(ctx, finish);
            }
            Protocol::Sse(s) => {
                let finish = s.handle_timer(ctx);
                self.finish_if(ctx, finish);
            }
            Protocol::SseMulti(s) => {
                let finish = s.handle_timer(ctx);
                self.finish_if(ctx, finish);
            }
            Protocol::Poll(p) => {
                let outcome = p.handle_timer(ctx);
                self.after_poll(ctx, outcome);
            }
            // The close timeout: stop waiting for the flush.
            Protocol::Draining => *self = Protocol::Closed,
            Protocol::Closed => {}
        }
    }

    /// A channel owner's answer to a subscription of this connection.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) {
        match self {
            Protocol::Ws(ws) => ws.handle_replay(ctx, at, replay),
            Protocol::Sse(s) => s.handle_replay(ctx, at, replay),
            Protocol::SseMulti(s) => s.handle_replay(ctx, at, replay),
            Protocol::Poll(p) => {
                let outcome = p.handle_replay(ctx, at, replay);
                self.after_poll(ctx, outcome);
            }
            Protocol::Http(_) | Protocol::Draining | Protocol::Closed => {}
        }
    }

    /// A live message for a subscription whose format needs per-connection
    /// work (`Format::is_shared` is false); `shared` is the part every
    /// such subscriber on the shard receives.
    pub fn handle_delivery(&mut self, ctx: &mut impl Context, msg: &Arc<Message>, shared: &Bytes) {
        match self {
            Protocol::SseMulti(s) => s.handle_delivery(ctx, msg, shared.clone()),
            Protocol::Poll(p) => {
                let outcome = p.handle_delivery(ctx, msg, shared);
                self.after_poll(ctx, outcome);
            }
            _ => {}
        }
    }

    /// The connection's output drained, and some of its subscriptions fell
    /// behind meanwhile (their messages wait in history): they catch up.
    pub fn handle_drained(&mut self, ctx: &mut impl Context) {
        match self {
            Protocol::Ws(ws) => ws.handle_drained(ctx),
            Protocol::Sse(s) => s.handle_drained(ctx),
            Protocol::SseMulti(s) => s.handle_drained(ctx),
            _ => {}
        }
    }

    /// Subscription `at` has been behind for longer than `--max-lag`: the
    /// peer is not keeping up. A WebSocket closes with 1008 and where to
    /// resume; an event stream says `event: reset` and ends.
    pub fn handle_lagging(&mut self, ctx: &mut impl Context, at: SubRef) {
        match self {
            Protocol::Ws(ws) => ws.handle_lagging(ctx, at),
            Protocol::Sse(s) => {
                let how = s.handle_lagging(ctx, at);
                self.finish(ctx, how);
            }
            Protocol::SseMulti(s) => {
                let how = s.handle_lagging(ctx, at);
                self.finish(ctx, how);
            }
            _ => {}
        }
    }

    /// Channel owners assigned the ids of a publish made with `token`.
    pub fn handle_published(&mut self, ctx: &mut impl Context, token: u32, ids: &[(u32, MsgId)]) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_published(ctx, token, ids);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_published(ctx, token, ids),
            _ => {}
        }
    }

    /// The publish made with `token` could not be stored.
    pub fn handle_publish_refused(&mut self, ctx: &mut impl Context, token: u32, reason: &str) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_publish_refused(ctx, token, reason);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_publish_refused(ctx, token, reason),
            _ => {}
        }
    }

    /// One shard answered the unread query made with `token`.
    pub fn handle_unread(&mut self, ctx: &mut impl Context, token: u32, counts: UnreadCounts) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_unread(ctx, token, counts);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_unread(ctx, token, counts),
            _ => {}
        }
    }

    /// A channel's owner answered an ack made with `token`.
    pub fn handle_acked(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        result: Result<CursorState, AckError>,
    ) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_acked(ctx, token, channel, result);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_acked(ctx, token, channel, result),
            _ => {}
        }
    }

    /// A channel owner answered a presence query made with `token`.
    pub fn handle_presence(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        clients: &[Member],
    ) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_presence(ctx, token, channel, clients);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_presence(ctx, token, channel, clients),
            _ => {}
        }
    }

    /// The node is shutting down: WebSockets close with 1001, held polls
    /// are answered (`204`), event streams and idle HTTP connections close;
    /// requests in progress finish first.
    pub fn handle_shutdown(&mut self, ctx: &mut impl Context) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.handle_shutdown();
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => ws.handle_shutdown(ctx),
            Protocol::Sse(_) | Protocol::SseMulti(_) => {
                let finish = sse::shutdown(ctx);
                self.finish(ctx, finish);
            }
            Protocol::Poll(p) => {
                let outcome = p.handle_timer(ctx);
                self.after_poll(ctx, outcome);
            }
            Protocol::Draining | Protocol::Closed => {}
        }
    }

    /// The peer does not read what is sent to it (the driver's outbound
    /// limit): a WebSocket gets 1008 after its queue is dropped; anything
    /// else is closed at once. Nobody else waits for it.
    pub fn handle_slow_consumer(&mut self, ctx: &mut impl Context) {
        match self {
            Protocol::Ws(ws) if !ws.is_closing() => ws.handle_slow_consumer(ctx),
            Protocol::Draining | Protocol::Closed => {}
            _ => self.finish(ctx, Finish::Now),
        }
    }

    /// The connection is gone (the peer closed, or an I/O error): release
    /// what the state holds.
    /// The connection's address is over a per-address limit, and it has
    /// sent nothing yet: `true` if it is to be answered when its request
    /// comes (an HTTP client reads an answer only to a request it sent),
    /// within a second; `false` if it is to be refused now
    /// ([`Protocol::refuse_peer`]).
    pub fn hold_for_refusal(&mut self, ctx: &mut impl Context) -> bool {
        match self {
            Protocol::Http(h) if h.is_fresh() => {
                ctx.set_timer(Some(ctx.now() + ticks(REFUSED_PEER_WAIT)));
                true
            }
            _ => false,
        }
    }

    /// The connection's address is over a per-address limit (see
    /// `shard::peers`): a connection still on plain HTTP is answered the
    /// refusal and closed; one whose request beat the address lookup is
    /// closed as a WebSocket with 1008, or at once.
    pub fn refuse_peer(&mut self, ctx: &mut impl Context, refused: &Refused) {
        match self {
            Protocol::Http(h) => {
                let outcome = h.refuse_peer(ctx, refused);
                self.after_http(ctx, outcome);
            }
            Protocol::Ws(ws) => {
                ctx.metrics().refuse(refused.why);
                let reason = "too many connections from this address";
                ws.initiate_close(ctx, CloseCode::POLICY_VIOLATION, reason);
            }
            Protocol::Draining | Protocol::Closed => {}
            Protocol::Sse(_) | Protocol::SseMulti(_) | Protocol::Poll(_) => {
                ctx.metrics().refuse(refused.why);
                self.finish(ctx, Finish::Now);
            }
        }
    }

    pub fn handle_close(&mut self, ctx: &mut impl Context) {
        self.finish(ctx, Finish::Now);
    }

    /// Ends the connection: releases what the state holds in the hub, then
    /// closes now, or after the output is flushed (within the close
    /// timeout).
    pub fn finish(&mut self, ctx: &mut impl Context, how: Finish) {
        self.release(ctx);
        if how == Finish::AfterFlush && ctx.output_pending() {
            ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().close_timeout)));
            *self = Protocol::Draining;
        } else {
            ctx.set_timer(None);
            *self = Protocol::Closed;
        }
    }

    fn finish_if(&mut self, ctx: &mut impl Context, finish: Option<Finish>) {
        if let Some(how) = finish {
            self.finish(ctx, how);
        }
    }

    /// Leaves every channel the state subscribed to.
    fn release(&mut self, ctx: &mut impl Context) {
        match self {
            Protocol::Ws(ws) => ws.release(ctx),
            Protocol::Sse(s) => s.release(ctx),
            Protocol::SseMulti(s) => s.release(ctx),
            Protocol::Poll(p) => p.release(ctx),
            Protocol::Http(_) | Protocol::Draining | Protocol::Closed => {}
        }
    }

    fn after_http(&mut self, ctx: &mut impl Context, outcome: http::Outcome) {
        match outcome {
            http::Outcome::Stay => {}
            http::Outcome::Finish(how) => self.finish(ctx, how),
            http::Outcome::Route(Route::Ws(app, deflate)) => {
                *self = Protocol::Ws(Ws::start(ctx, app, deflate))
            }
            http::Outcome::Route(Route::Sse(plan)) => match sse::start(ctx, plan) {
                sse::Started::One(s) => *self = Protocol::Sse(s),
                sse::Started::Multi(s) => *self = Protocol::SseMulti(s),
                sse::Started::HeadOnly => self.finish(ctx, Finish::AfterFlush),
            },
            http::Outcome::Route(Route::Poll(plan, answer)) => {
                *self = Protocol::Poll(Poll::start(ctx, plan, answer));
            }
            http::Outcome::Route(Route::PollMany(plan, answer)) => {
                *self = Protocol::Poll(Poll::start_many(ctx, plan, answer));
            }
        }
    }

    fn after_poll(&mut self, ctx: &mut impl Context, outcome: poll::Outcome) {
        match outcome {
            poll::Outcome::Held => {}
            poll::Outcome::Answered(answer) if answer.keep_alive && !ctx.draining() => {
                *self = Protocol::Http(Http::after_poll(ctx));
                ctx.resume_input();
            }
            poll::Outcome::Answered(_) => self.finish(ctx, Finish::AfterFlush),
        }
    }
}
