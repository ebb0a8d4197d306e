//! An HTTP/1.1 connection between upgrades and streams: request heads,
//! routing, plain answers, publish bodies, pipelining and keep-alive.
//!
//! | Route | Method | What |
//! |---|---|---|
//! | `/healthz` | GET, HEAD | `200 ok` once the node accepts connections (`200 degraded: …` in a cluster that lost Redis); `503 draining` while it shuts down |
//! | `/readyz` | GET, HEAD | `200 ready`; `503` while draining, or in a cluster while Redis's Pub/Sub is down (for load balancers) |
//! | `/metrics` | GET, HEAD | Prometheus text |
//! | `/ws/{channel}`, `/ws`, `/echo` | GET (upgrade) | WebSocket (`super::ws`) |
//! | `/sse/{channel}`, `/sse?ch=…` | GET, HEAD | event stream (`super::sse`) |
//! | `/poll/{channel}` | GET, HEAD | long or short poll (`super::poll`) |
//! | `/pub/{channel}`, `/pub` | POST | publish (`super::publish`) |
//! | `/ack/{channel}` | POST | acknowledge up to an id for a durable cursor (`super::ack`) |
//! | `/unread` | GET, HEAD | the identity's unread count per channel with a cursor, from every shard (in a cluster, from Redis) |
//! | `/presence/{channel}` | GET, HEAD | the channel's presence, from every shard |
//! | `/client.js`, `/client.d.ts`, `/` (`--demo`) | GET, HEAD | built-in files (`super::assets`) |
//! | any | OPTIONS | `204` with `Allow`; CORS preflights get `super::cors` headers |
//!
//! Every request's `Origin` is checked first (`super::cors`): one that
//! `--allowed-origins` does not allow gets `403`, WebSocket handshakes
//! included.
//!
//! A request that upgrades or starts a stream or a poll ends this state:
//! [`Http::handle_input`] returns the [`Route`] and the protocol moves on.
//!
//! # Publishing and pipelining
//! A publish's answer goes out as soon as every message has its id —
//! assigned by the channels' owner shards, usually in microseconds — never
//! after the fan-out. Pipelined publishes overlap: each is forwarded to its
//! owners as soon as its body is read, and the answers go out in request
//! order as the ids arrive (up to
//! [`MAX_PIPELINED_PUBLISHES`](super::publish::MAX_PIPELINED_PUBLISHES)
//! outstanding). Any other request waits until the publishes before it are
//! answered.
//!
//! # Timeouts
//! A new connection has `--handshake-timeout` for its first request head;
//! a head or body that stops arriving gets `408`; a kept-alive connection
//! with nothing in progress is closed after `--idle-timeout`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codec::http::{parse_request, responses, Limits, Method, RequestHead, StatusCode};
use codec::Status;
use serde_json::json;

use crate::auth::ticket::IssueError;
use crate::auth::{self, Access, TokenError};
use crate::hub::{AckError, ChannelName, Cursor, CursorState, Member, MsgId, UnreadCounts};
use crate::metrics::Refusal;

use super::ack;
use super::assets::{self, Asset};
use super::context::{ticks, Context, Finish, Step, RETRY_AFTER_SECS};
use super::cors::{self, Grant};
use super::deflate::Deflate;
use super::framing;
use super::poll;
use super::publish::{self, Body, Pending, MAX_PIPELINED_PUBLISHES};
use super::response::{self, Answer, Refused};
use super::sse;
use super::ws;

const ALLOW: &str = "GET, HEAD, POST, OPTIONS";

/// Flags of the request being served.
mod flag {
    /// The request asked to keep the connection open.
    pub const KEEP_ALIVE: u8 = 1;
    /// The request is `HEAD`.
    pub const HEAD: u8 = 2;
    /// At least one request head arrived (idle vs. handshake timeout).
    pub const SERVED: u8 = 4;
    /// A head has started arriving and is not complete.
    pub const PARTIAL: u8 = 8;
}

/// Where a request sends the connection next.
#[derive(Debug)]
pub enum Route {
    /// Upgraded to a WebSocket (the `101` is written), with what
    /// permessage-deflate agreed.
    Ws(ws::App, Option<Deflate>),
    /// An event stream.
    Sse(sse::Plan),
    /// A poll of one channel.
    Poll(poll::Plan, Answer),
    /// A poll of several channels.
    PollMany(poll::ManyPlan, Answer),
}

/// What became of the connection after an event.
#[derive(Debug)]
#[must_use]
pub enum Outcome {
    /// Still serving HTTP.
    Stay,
    /// Moving on.
    Route(Route),
    /// Ending.
    Finish(Finish),
}

/// State only a busy HTTP connection needs, boxed.
#[derive(Debug, Default)]
struct Busy {
    /// A publish body being read.
    body: Option<Body>,
    /// Requests waiting for channel owners, in request order.
    waiting: VecDeque<Waiting>,
}

/// A request waiting for channel owners: answered in request order.
#[derive(Debug)]
enum Waiting {
    /// A publish, for its ids.
    Publish(Pending),
    /// `GET /presence/{channel}`, for the channel's clients.
    Presence {
        token: u32,
        answer: Answer,
        /// The answer's body, once the owner replied.
        body: Option<Bytes>,
    },
    /// `GET /unread`, for every shard's answer.
    Unread {
        token: u32,
        answer: Answer,
        /// Shards still to answer.
        left: usize,
        /// The counts so far.
        counts: Vec<(ChannelName, u64)>,
        /// Why they could not all be read (Redis, in a cluster).
        failed: Option<AckError>,
    },
    /// `POST /ack/{channel}`, for the channel owner's answer.
    Ack {
        token: u32,
        answer: Answer,
        /// The owner's answer, once it came.
        result: Option<(ChannelName, Result<CursorState, AckError>)>,
    },
}

impl Waiting {
    fn is_complete(&self) -> bool {
        match self {
            Waiting::Publish(p) => p.is_complete(),
            Waiting::Presence { body, .. } => body.is_some(),
            Waiting::Ack { result, .. } => result.is_some(),
            Waiting::Unread { left, .. } => *left == 0,
        }
    }
}

/// An HTTP/1.1 connection waiting for or reading a request.
#[derive(Debug)]
pub struct Http {
    flags: u8,
    /// What the current request's origin is granted.
    cors: Grant,
    busy: Option<Box<Busy>>,
}

impl Http {
    /// A new connection: its first head must arrive within
    /// `--handshake-timeout`.
    pub fn start(ctx: &mut impl Context) -> Http {
        ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().handshake_timeout)));
        Http {
            flags: 0,
            cors: Grant::Plain,
            busy: None,
        }
    }

    /// A connection that answered a poll and serves its next request.
    pub fn after_poll(ctx: &mut impl Context) -> Http {
        let mut http = Http {
            flags: flag::SERVED | flag::KEEP_ALIVE,
            cors: Grant::Plain,
            busy: None,
        };
        http.wait_for_next(ctx);
        http
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn answer(&self) -> Answer {
        Answer {
            keep_alive: self.has(flag::KEEP_ALIVE),
            head_only: self.has(flag::HEAD),
            cors: self.cors,
        }
    }

    /// Requests waiting for channel owners.
    fn waiting(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.waiting.len())
    }

    /// Bytes from the peer.
    pub fn handle_input(&mut self, ctx: &mut impl Context, buf: &mut [u8]) -> (Step, Outcome) {
        if self.busy.as_ref().is_some_and(|b| b.body.is_some()) {
            return self.body_input(ctx, buf);
        }
        // After a request that asked to close, nothing more is read.
        if self.has(flag::SERVED) && !self.has(flag::KEEP_ALIVE) {
            return (Step::Discard, Outcome::Stay);
        }
        let limits = Limits {
            max_head_bytes: ctx.settings().max_head_size,
            ..Limits::default()
        };
        match parse_request(buf, &limits) {
            Ok(Status::Partial) => {
                self.flags |= flag::PARTIAL;
                (Step::Wait(0), Outcome::Stay)
            }
            Err(e) => {
                self.cors = Grant::Plain;
                ctx.metrics().refuse(Refusal::BadRequest);
                tracing::debug!("refused request: {e}");
                let extra: &[(&str, &str)] = if e.status() == StatusCode::METHOD_NOT_ALLOWED {
                    &[("Allow", ALLOW)]
                } else {
                    &[]
                };
                let answer = Answer {
                    keep_alive: false,
                    ..self.answer()
                };
                response::error(ctx, answer, e.status(), e.reason(), extra);
                (Step::Discard, Outcome::Finish(Finish::AfterFlush))
            }
            Ok(Status::Complete((head, used))) => {
                // Requests behind unanswered publishes wait, so answers stay
                // in request order; more publishes may go ahead, up to a cap.
                let pending = self.waiting();
                let is_publish = head.method == Method::Post
                    && (head.path == "/pub" || head.path.starts_with("/pub/"));
                if pending > 0 && (!is_publish || pending >= MAX_PIPELINED_PUBLISHES) {
                    return (Step::Wait(0), Outcome::Stay);
                }
                self.flags = flag::SERVED;
                self.cors = Grant::Plain;
                if head.keep_alive() && !ctx.draining() {
                    self.flags |= flag::KEEP_ALIVE;
                }
                if head.method == Method::Head {
                    self.flags |= flag::HEAD;
                }
                let outcome = self.route(ctx, &head);
                (Step::Continue(used), outcome)
            }
        }
    }

    fn route(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>) -> Outcome {
        let get_or_head = matches!(head.method, Method::Get | Method::Head);
        let upgrade = |ctx: &mut _, app| match ws::accept_upgrade(ctx, head) {
            Ok(deflate) => Outcome::Route(Route::Ws(app, deflate)),
            Err(_) => Outcome::Finish(Finish::AfterFlush),
        };
        match cors::check(head, &ctx.settings().allowed_origins) {
            Ok(grant) => self.cors = grant,
            // The client and the demo are public: any page may load them
            // (and then learn from the node why it may not connect).
            Err(_) if assets::find(head.path, ctx.settings().demo).is_some() => {
                self.cors = Grant::Any
            }
            // The refusal itself is readable by the page, so its script can
            // show why; nothing else is.
            Err(cors::NotAllowed(reason)) => {
                self.cors = Grant::Any;
                let refused = Refused::new(Refusal::Origin, cors::NotAllowed::STATUS, reason);
                return self.refuse(ctx, &refused);
            }
        }
        let answer = self.answer();
        // A CORS preflight is still answered (with `Connection: close`):
        // refused, the browser would hide the request's own `503` and its
        // `Retry-After` from the page behind a CORS error.
        if ctx.draining() && head.path != "/metrics" && head.method != Method::Options {
            return self.refuse_draining(ctx, head);
        }
        if let Some(asset) = assets::find(head.path, ctx.settings().demo).filter(|_| get_or_head) {
            return self.serve_asset(ctx, head, asset);
        }
        match head.path {
            "/healthz" if get_or_head => {
                // Alive either way; a cluster node that lost Redis, or a
                // node whose store failed, says so.
                let body: std::borrow::Cow<'static, [u8]> = if ctx.cluster_degraded() {
                    (&b"degraded: redis Pub/Sub is down (messages from other nodes wait; publishes get 503)\n"[..]).into()
                } else if let Some(reason) = ctx.store_failed() {
                    format!("degraded: store failed (stored publishes get 503 until a restart): {reason}\n")
                        .into_bytes()
                        .into()
                } else {
                    (&b"ok\n"[..]).into()
                };
                let ct = "text/plain";
                response::respond(ctx, answer, StatusCode::OK, ct, &body, &[], true);
                self.after_response(ctx)
            }
            "/readyz" if get_or_head => {
                let (status, body): (_, std::borrow::Cow<'static, [u8]>) = if ctx.cluster_degraded()
                {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        (&b"unready: redis Pub/Sub is down\n"[..]).into(),
                    )
                } else if let Some(reason) = ctx.store_failed() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unready: store failed: {reason}\n")
                            .into_bytes()
                            .into(),
                    )
                } else {
                    (StatusCode::OK, (&b"ready\n"[..]).into())
                };
                let ct = "text/plain";
                response::respond(ctx, answer, status, ct, &body, &[], true);
                self.after_response(ctx)
            }
            "/metrics" if get_or_head => {
                let body = ctx.render_metrics();
                let ct = "text/plain; version=0.0.4";
                response::respond(ctx, answer, StatusCode::OK, ct, body.as_bytes(), &[], true);
                self.after_response(ctx)
            }
            "/healthz" | "/readyz" | "/metrics" if head.method != Method::Options => {
                ctx.metrics().refuse(Refusal::BadRequest);
                let allow = [("Allow", "GET, HEAD, OPTIONS")];
                let reason = "method not allowed for this path";
                response::error(ctx, answer, StatusCode::METHOD_NOT_ALLOWED, reason, &allow);
                self.after_response(ctx)
            }
            "/echo" if ctx.settings().echo && head.method != Method::Options => {
                upgrade(ctx, ws::App::Echo)
            }
            _ if head.method == Method::Options => {
                let [m, h, a] = cors::preflight_headers(ALLOW);
                let extra: &[(&str, &str)] = if cors::is_preflight(head) {
                    &[("Allow", ALLOW), m, h, a]
                } else {
                    &[("Allow", ALLOW)]
                };
                response::respond(ctx, answer, StatusCode::NO_CONTENT, "", b"", extra, true);
                self.after_response(ctx)
            }
            p if p.starts_with("/presence/") => self.query_presence(ctx, head, &p[10..]),
            "/ticket" => self.issue_ticket(ctx, head),
            "/ws" | "/sse" if !offered(ctx, &head.path[1..]) => {
                self.transport_off(ctx, &head.path[1..])
            }
            p if p.starts_with("/ws/") && !offered(ctx, "ws") => self.transport_off(ctx, "ws"),
            p if p.starts_with("/sse/") && !offered(ctx, "sse") => self.transport_off(ctx, "sse"),
            "/ws" => match presented_access(ctx, head) {
                Ok(access) => upgrade(ctx, ws::App::Mux(access)),
                Err(refused) => self.refuse_auth(ctx, &refused),
            },
            p if p.starts_with("/ws/") => match ws::subscribe_plan(head, &p["/ws/".len()..]) {
                Ok(plan) => match admit(ctx, [&plan.channel])
                    .and_then(|()| read_access(ctx, head, [&plan.channel]))
                    .and_then(|access| {
                        let durable = durable_of(ctx, head, access.as_ref(), [&plan.channel])?;
                        Ok((access, durable))
                    }) {
                    Ok((access, durable)) => upgrade(
                        ctx,
                        ws::App::Subscriber(ws::SubscribePlan {
                            expires: access.map(|a| a.exp),
                            durable: durable.into_iter().next().flatten(),
                            ..plan
                        }),
                    ),
                    Err(refused) => self.refuse_auth(ctx, &refused),
                },
                Err(refused) => self.refuse(ctx, &refused),
            },
            "/sse" => self.stream(ctx, head, None),
            p if p.starts_with("/sse/") => self.stream(ctx, head, Some(&p["/sse/".len()..])),
            p if p.starts_with("/poll/") => {
                match poll::plan(head, &p["/poll/".len()..], ctx.settings()) {
                    Ok(plan) => match poll_kind(ctx, plan.timeout) {
                        Err(off) => self.transport_off(ctx, off),
                        Ok(()) => match admit(ctx, [&plan.channel])
                            .and_then(|()| read_access(ctx, head, [&plan.channel]))
                            .and_then(|a| durable_of(ctx, head, a.as_ref(), [&plan.channel]))
                        {
                            Ok(durable) => Outcome::Route(Route::Poll(
                                poll::Plan {
                                    durable: durable.into_iter().next().flatten(),
                                    ..plan
                                },
                                answer,
                            )),
                            Err(refused) => self.refuse_auth(ctx, &refused),
                        },
                    },
                    Err(refused) => self.refuse(ctx, &refused),
                }
            }
            "/poll" => match poll::plan_many(head, ctx.settings()) {
                Ok(plan) => match poll_kind(ctx, plan.timeout) {
                    Err(off) => self.transport_off(ctx, off),
                    Ok(()) => match admit(ctx, &plan.channels)
                        .and_then(|()| read_access(ctx, head, &plan.channels))
                        .and_then(|a| durable_of(ctx, head, a.as_ref(), &plan.channels))
                    {
                        Ok(durable) => Outcome::Route(Route::PollMany(
                            poll::ManyPlan { durable, ..plan },
                            answer,
                        )),
                        Err(refused) => self.refuse_auth(ctx, &refused),
                    },
                },
                Err(refused) => self.refuse(ctx, &refused),
            },
            p if p == "/pub" || p.starts_with("/pub/") => self.start_publish(ctx, head),
            p if p.starts_with("/ack/") => self.start_ack(ctx, head, &p["/ack/".len()..]),
            "/unread" => self.query_unread(ctx, head),
            _ => {
                ctx.metrics().refuse(Refusal::NotFound);
                response::error(ctx, answer, StatusCode::NOT_FOUND, "not found", &[]);
                self.after_response(ctx)
            }
        }
    }

    /// A transport turned off with `--transports`: `501`, naming it and
    /// what the node offers, so that a client falls back to the next.
    fn transport_off(&mut self, ctx: &mut impl Context, name: &str) -> Outcome {
        ctx.metrics().refuse(Refusal::TransportOff);
        let offered = ctx.settings().transports.names();
        let reason = format!("the {name} transport is off on this node; it offers {offered}");
        tracing::debug!("refused: {reason}");
        // A refused WebSocket handshake closes, as every other does.
        let answer = Answer {
            keep_alive: self.answer().keep_alive && name != "ws",
            ..self.answer()
        };
        response::error(ctx, answer, StatusCode::NOT_IMPLEMENTED, &reason, &[]);
        if name == "ws" {
            return Outcome::Finish(Finish::AfterFlush);
        }
        self.after_response(ctx)
    }

    /// While the node drains, every request but `/metrics` and CORS
    /// preflights gets `503` and
    /// `Connection: close`: `/healthz` says `draining`, so load balancers
    /// move away; anything else is told to retry, on another node.
    fn refuse_draining(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>) -> Outcome {
        ctx.metrics().refuse(Refusal::Draining);
        tracing::debug!(path = head.path, "refused during drain");
        let answer = Answer {
            keep_alive: false,
            ..self.answer()
        };
        let retry = RETRY_AFTER_SECS.to_string();
        let extra = [("Retry-After", retry.as_str())];
        let reason = if head.path == "/healthz" {
            "draining"
        } else {
            "draining: this node is shutting down; retry on another node"
        };
        response::error(ctx, answer, StatusCode::SERVICE_UNAVAILABLE, reason, &extra);
        Outcome::Finish(Finish::AfterFlush)
    }

    fn stream(
        &mut self,
        ctx: &mut impl Context,
        head: &RequestHead<'_>,
        raw: Option<&str>,
    ) -> Outcome {
        match sse::plan(head, raw, ctx.settings().max_stream_channels) {
            Ok(plan) => match admit(ctx, &plan.channels)
                .and_then(|()| read_access(ctx, head, &plan.channels))
                .and_then(|access| {
                    let durable = durable_of(ctx, head, access.as_ref(), &plan.channels)?;
                    Ok((access, durable))
                }) {
                Ok((access, durable)) => Outcome::Route(Route::Sse(sse::Plan {
                    cors: self.cors,
                    expires: access.map(|a| a.exp),
                    durable,
                    ..plan
                })),
                Err(refused) => self.refuse_auth(ctx, &refused),
            },
            Err(refused) => self.refuse(ctx, &refused),
        }
    }

    /// A refusal for credentials: as any refusal (counted, logged at
    /// `debug` and in the shard's ten-second summary at `info`, so a flood
    /// of bad keys cannot fill the disk), and a `401` says how to
    /// authenticate (`WWW-Authenticate`).
    fn refuse_auth(&mut self, ctx: &mut impl Context, refused: &Refused) -> Outcome {
        let challenge = [("WWW-Authenticate", "Bearer realm=\"ringcast\"")];
        let extra: &[_] = if refused.status == StatusCode::UNAUTHORIZED {
            &challenge
        } else {
            &[]
        };
        self.refuse_with(ctx, refused, extra)
    }

    fn refuse(&mut self, ctx: &mut impl Context, refused: &Refused) -> Outcome {
        self.refuse_with(ctx, refused, &[])
    }

    fn refuse_with(
        &mut self,
        ctx: &mut impl Context,
        refused: &Refused,
        extra: &[(&str, &str)],
    ) -> Outcome {
        response::refuse_with(ctx, self.answer(), refused, extra);
        Outcome::Finish(Finish::AfterFlush)
    }

    /// After a complete answer: close if the request asked to, else wait
    /// for the next request (at most `--idle-timeout` when nothing is in
    /// progress).
    fn after_response(&mut self, ctx: &mut impl Context) -> Outcome {
        if !self.has(flag::KEEP_ALIVE) {
            return Outcome::Finish(Finish::AfterFlush);
        }
        self.wait_for_next(ctx);
        Outcome::Stay
    }

    fn wait_for_next(&mut self, ctx: &mut impl Context) {
        self.flags &= !flag::PARTIAL;
        if self.waiting() == 0 {
            ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().idle_timeout)));
        }
    }

    // ---- publishing --------------------------------------------------------------

    fn start_publish(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>) -> Outcome {
        if head.method == Method::Post {
            if let Err(refused) = publish::authorize(head, ctx.settings()) {
                return self.refuse_auth(ctx, &refused);
            }
        }
        let plan = match publish::plan(head, ctx.settings()) {
            Ok(plan) => plan,
            Err(refused) if refused.status == StatusCode::METHOD_NOT_ALLOWED => {
                return self.refuse_with(ctx, &refused, &[("Allow", "POST, OPTIONS")]);
            }
            Err(refused) => return self.refuse(ctx, &refused),
        };
        if plan.send_continue {
            ctx.send(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        if plan.body.is_complete() {
            return self.finish_body(ctx, plan.body);
        }
        ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().handshake_timeout)));
        self.busy.get_or_insert_with(Default::default).body = Some(plan.body);
        Outcome::Stay
    }

    fn body_input(&mut self, ctx: &mut impl Context, buf: &mut [u8]) -> (Step, Outcome) {
        let busy = self.busy.as_mut().expect("a body is being read");
        let body = busy.body.as_mut().expect("a body is being read");
        match body.feed(buf) {
            Err(refused) => {
                busy.body = None;
                (Step::Discard, self.refuse(ctx, &refused))
            }
            Ok(used) if body.is_complete() => {
                let body = busy.body.take().expect("a body is being read");
                (Step::Continue(used), self.finish_body(ctx, body))
            }
            Ok(used) => {
                // Progress pushes the body deadline back.
                ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().handshake_timeout)));
                (Step::Wait(used), Outcome::Stay)
            }
        }
    }

    /// The body is complete: send its messages to their owners and wait
    /// for the ids (the connection goes on reading meanwhile).
    fn finish_body(&mut self, ctx: &mut impl Context, body: Body) -> Outcome {
        let body = match body.into_ack() {
            Ok((channel, who, id)) => return self.finish_ack(ctx, channel, who, id),
            Err(body) => body,
        };
        let (items, batch) = match body.into_items(ctx.settings().max_message_size) {
            Ok(parsed) => parsed,
            Err(refused) => return self.refuse(ctx, &refused),
        };
        let settings = ctx.settings();
        if let Some(reason) = (items.iter()).find_map(|i| ack::receipts_only(settings, &i.channel))
        {
            let refused = Refused::new(Refusal::Forbidden, StatusCode::FORBIDDEN, reason);
            return self.refuse(ctx, &refused);
        }
        let answer = Answer {
            head_only: false,
            ..self.answer()
        };
        let ephemeral = !batch && items.iter().all(|i| i.ephemeral);
        self.flags &= !flag::PARTIAL;
        ctx.set_timer(None);
        let unavailable = if ctx.overloaded() {
            ctx.metrics().refuse(Refusal::Overloaded);
            Some(
                "overloaded: readers that are behind hold more than --max-pinned; retry later"
                    .into(),
            )
        } else if items.iter().any(|i| !ctx.admits_channel(&i.channel)) {
            ctx.metrics().refuse(Refusal::ChannelLimit);
            Some(response::channel_limit_reason(ctx))
        } else {
            None
        };
        let busy = self.busy.get_or_insert_with(Default::default);
        if unavailable.is_some() {
            // Answered in its turn, after the publishes before it.
            busy.waiting.push_back(Waiting::Publish(Pending {
                token: 0,
                ids: Vec::new(),
                batch,
                answer,
                ephemeral,
                unavailable,
            }));
            return self.answer_waiting(ctx);
        }
        let ids = vec![None; items.len()];
        let token = ctx.publish(items);
        busy.waiting.push_back(Waiting::Publish(Pending {
            token,
            ids,
            batch,
            answer,
            ephemeral,
            unavailable: None,
        }));
        Outcome::Stay
    }

    // ---- acks ------------------------------------------------------------------------

    /// `POST /ack/{channel}[?device=]`: checks what the connection can
    /// decide alone (the method, the channel, the device, an identity,
    /// read access), then reads the body (the id). See `super::ack`.
    fn start_ack(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>, raw: &str) -> Outcome {
        if head.method != Method::Post {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let refused = Refused::new(Refusal::BadRequest, status, "ack with POST");
            return self.refuse_with(ctx, &refused, &[("Allow", "POST, OPTIONS")]);
        }
        let channel = match ChannelName::from_path(raw) {
            Ok(channel) => channel,
            Err(reason) => return self.refuse(ctx, &Refused::bad(Refusal::BadChannel, reason)),
        };
        let device = match ack::device_query(head) {
            Ok(device) => device,
            Err(refused) => return self.refuse(ctx, &refused),
        };
        let access = match presented_access(ctx, head) {
            Ok(access) => access,
            Err(refused) => return self.refuse_auth(ctx, &refused),
        };
        let who = match ack::identity(access.as_deref(), device) {
            Ok(who) => who,
            Err(e) => return self.refuse_auth(ctx, &ack::refused(&e)),
        };
        let guarded = ctx.settings().namespaces.of(channel.as_str()).token;
        // `identity` above made sure there is a token.
        let denied =
            (access.as_deref()).and_then(|a| ack::read_denied(ctx.settings(), a, &channel));
        if let Some(reason) = denied.filter(|_| guarded) {
            let refused = Refused::new(Refusal::Forbidden, StatusCode::FORBIDDEN, reason);
            return self.refuse(ctx, &refused);
        }
        let plan = match publish::ack_plan(head, channel, who) {
            Ok(plan) => plan,
            Err(refused) => return self.refuse(ctx, &refused),
        };
        if plan.send_continue {
            ctx.send(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        if plan.body.is_complete() {
            return self.finish_body(ctx, plan.body);
        }
        ctx.set_timer(Some(ctx.now() + ticks(ctx.settings().handshake_timeout)));
        self.busy.get_or_insert_with(Default::default).body = Some(plan.body);
        Outcome::Stay
    }

    /// An ack's body is read: refuse a bad id or a node without a store,
    /// else ask the channel's owner (answered in request order).
    fn finish_ack(
        &mut self,
        ctx: &mut impl Context,
        channel: ChannelName,
        who: Cursor,
        id: Result<MsgId, AckError>,
    ) -> Outcome {
        let id = match id.and_then(|id| ack::store_kept(ctx.settings(), &channel).map(|()| id)) {
            Ok(id) => id,
            Err(e) => return self.refuse(ctx, &ack::refused(&e)),
        };
        let answer = Answer {
            head_only: false,
            ..self.answer()
        };
        self.flags &= !flag::PARTIAL;
        ctx.set_timer(None);
        let token = ctx.ack(channel, who, id, false);
        let busy = self.busy.get_or_insert_with(Default::default);
        busy.waiting.push_back(Waiting::Ack {
            token,
            answer,
            result: None,
        });
        Outcome::Stay
    }

    /// `GET /unread[?device=]`: an identity and a store (or Redis), then every shard
    /// is asked (answered in request order, once all did).
    fn query_unread(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>) -> Outcome {
        if !matches!(head.method, Method::Get | Method::Head) {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let refused = Refused::new(Refusal::BadRequest, status, "use GET /unread");
            return self.refuse_with(ctx, &refused, &[("Allow", "GET, HEAD, OPTIONS")]);
        }
        let device = match ack::device_query(head) {
            Ok(device) => device,
            Err(refused) => return self.refuse(ctx, &refused),
        };
        let access = match presented_access(ctx, head) {
            Ok(access) => access,
            Err(refused) => return self.refuse_auth(ctx, &refused),
        };
        let who = match ack::identity(access.as_deref(), device) {
            Ok(who) => who,
            Err(e) => return self.refuse_auth(ctx, &ack::refused(&e)),
        };
        if let Some(why) = ack::no_unread(ctx.settings()) {
            let refused = Refused::new(Refusal::BadRequest, StatusCode::CONFLICT, why);
            return self.refuse(ctx, &refused);
        }
        let (token, left) = ctx.query_unread(who);
        let answer = self.answer();
        let busy = self.busy.get_or_insert_with(Default::default);
        busy.waiting.push_back(Waiting::Unread {
            token,
            answer,
            left,
            counts: Vec::new(),
            failed: None,
        });
        Outcome::Stay
    }

    /// One shard answered the unread query made with `token`.
    pub fn handle_unread(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        answer: UnreadCounts,
    ) -> Outcome {
        if let Some(busy) = self.busy.as_mut() {
            for w in busy.waiting.iter_mut() {
                if let Waiting::Unread {
                    token: t,
                    left,
                    counts,
                    failed,
                    ..
                } = w
                {
                    if *t == token && *left > 0 {
                        match answer {
                            Ok(answer) => {
                                counts.extend(answer.into_iter().map(|(c, s)| (c, s.unread)));
                                *left -= 1;
                            }
                            // Answered now; the other shards' answers
                            // find nothing waiting.
                            Err(e) => (*failed, *left) = (Some(e), 0),
                        }
                        break;
                    }
                }
            }
        }
        self.answer_waiting(ctx)
    }

    /// The channel's owner answered the ack made with `token`.
    pub fn handle_acked(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        answer: Result<CursorState, AckError>,
    ) -> Outcome {
        if let Some(busy) = self.busy.as_mut() {
            for w in busy.waiting.iter_mut() {
                if let Waiting::Ack {
                    token: t, result, ..
                } = w
                {
                    if *t == token && result.is_none() {
                        *result = Some((channel.clone(), answer));
                        break;
                    }
                }
            }
        }
        self.answer_waiting(ctx)
    }

    /// Owners assigned ids: answer the publishes at the head of the queue
    /// whose ids are all known, in request order; once none is left,
    /// continue with requests that waited behind them.
    pub fn handle_published(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        ids: &[(u32, MsgId)],
    ) -> Outcome {
        if let Some(p) = self.waiting_publish(token) {
            p.fill(ids);
        }
        self.answer_waiting(ctx)
    }

    /// The publish waiting for its answer under `token`, if any.
    fn waiting_publish(&mut self, token: u32) -> Option<&mut Pending> {
        let busy = self.busy.as_mut()?;
        busy.waiting.iter_mut().find_map(|w| match w {
            Waiting::Publish(p) if p.token == token && p.unavailable.is_none() => Some(p),
            _ => None,
        })
    }

    /// The publish made with `token` could not be stored (in a cluster,
    /// Redis did not take it): it is answered `503` in its turn.
    pub fn handle_publish_refused(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        reason: &str,
    ) -> Outcome {
        if let Some(p) = self.waiting_publish(token) {
            ctx.metrics().refuse(Refusal::Unavailable);
            p.unavailable = Some(format!("{reason}; retry later"));
        }
        self.answer_waiting(ctx)
    }

    /// A channel owner answered a presence query made with `token`.
    pub fn handle_presence(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        clients: &[Member],
    ) -> Outcome {
        let Some(busy) = self.busy.as_mut() else {
            return Outcome::Stay;
        };
        for w in busy.waiting.iter_mut() {
            if let Waiting::Presence { token: t, body, .. } = w {
                if *t == token && body.is_none() {
                    let clients: Vec<String> = clients.iter().map(Member::to_string).collect();
                    let json = serde_json::json!({ "ch": channel.as_str(), "clients": clients });
                    *body = Some(framing::json_body(&json));
                }
            }
        }
        self.answer_waiting(ctx)
    }

    /// Answers the requests at the head of the queue that are complete
    /// (ids all known, refused for load, or presence known), in request
    /// order.
    fn answer_waiting(&mut self, ctx: &mut impl Context) -> Outcome {
        let Some(busy) = self.busy.as_mut() else {
            return Outcome::Stay;
        };
        while busy.waiting.front().is_some_and(Waiting::is_complete) {
            let answer = match busy.waiting.pop_front().expect("checked above") {
                Waiting::Publish(Pending {
                    unavailable: Some(reason),
                    answer,
                    ..
                }) => {
                    tracing::debug!("publish refused: {reason}");
                    let retry = RETRY_AFTER_SECS.to_string();
                    let status = StatusCode::SERVICE_UNAVAILABLE;
                    response::error(ctx, answer, status, &reason, &[("Retry-After", &retry)]);
                    answer
                }
                Waiting::Publish(p) => {
                    let body = p.answer_body();
                    let ct = "application/json";
                    response::respond(ctx, p.answer, StatusCode::OK, ct, &body, &[], true);
                    p.answer
                }
                Waiting::Presence { answer, body, .. } => {
                    let body = body.expect("complete");
                    let ct = "application/json";
                    response::respond(ctx, answer, StatusCode::OK, ct, &body, &[], true);
                    answer
                }
                Waiting::Unread {
                    answer,
                    failed: Some(e),
                    ..
                } => {
                    let refused = ack::refused(&e);
                    ctx.metrics().refuse(refused.why);
                    tracing::debug!("unread refused: {}", refused.reason);
                    let retry = RETRY_AFTER_SECS.to_string();
                    let extra = [("Retry-After", retry.as_str())];
                    response::error(ctx, answer, refused.status, &refused.reason, &extra);
                    answer
                }
                Waiting::Unread { answer, counts, .. } => {
                    let body = framing::json_body(&ack::unread_answer(&counts));
                    let ct = "application/json";
                    response::respond(ctx, answer, StatusCode::OK, ct, &body, &[], true);
                    answer
                }
                Waiting::Ack { answer, result, .. } => {
                    match result.expect("complete") {
                        (channel, Ok(state)) => {
                            let body = framing::json_body(&ack::answer(&channel, state));
                            let ct = "application/json";
                            response::respond(ctx, answer, StatusCode::OK, ct, &body, &[], true);
                        }
                        (_, Err(e)) => {
                            let refused = ack::refused(&e);
                            ctx.metrics().refuse(refused.why);
                            tracing::debug!(
                                "ack refused: {} {}",
                                refused.status.code(),
                                refused.reason
                            );
                            let retry = RETRY_AFTER_SECS.to_string();
                            let with_retry = [("Retry-After", retry.as_str())];
                            let extra: &[(&str, &str)] = if refused.retry_later {
                                &with_retry
                            } else {
                                &[]
                            };
                            response::error(ctx, answer, refused.status, &refused.reason, extra);
                        }
                    }
                    answer
                }
            };
            if !answer.keep_alive {
                return Outcome::Finish(Finish::AfterFlush);
            }
        }
        if busy.waiting.is_empty() && busy.body.is_none() {
            self.busy = None;
            self.wait_for_next(ctx);
            ctx.resume_input();
        }
        Outcome::Stay
    }

    // ---- tickets, presence and built-in files -------------------------------------

    /// `POST /ticket`: exchanges the token in `Authorization` for a
    /// single-use ticket (see `auth::ticket`), answered
    /// `{"ticket":…,"expires_in":<seconds>}`.
    fn issue_ticket(&mut self, ctx: &mut impl Context, head: &RequestHead<'_>) -> Outcome {
        if head.method != Method::Post {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let refused = Refused::new(Refusal::BadRequest, status, "use POST /ticket");
            return self.refuse_with(ctx, &refused, &[("Allow", "POST, OPTIONS")]);
        }
        if head.headers.chunked || head.headers.content_length.is_some_and(|n| n > 0) {
            let refused = Refused::bad(Refusal::BadRequest, "POST /ticket takes no body");
            return self.refuse(ctx, &refused);
        }
        let Some(verifier) = ctx.settings().verifier.clone() else {
            let reason = "this node checks no tokens (no --jwt-secret or --jwt-public-key), so it issues no tickets";
            return self.refuse(ctx, &Refused::bad(Refusal::BadRequest, reason));
        };
        let access = match auth::bearer_token(head.headers.authorization) {
            None => return self.refuse_auth(ctx, &token_refusal(&TokenError::Missing)),
            Some(token) => match verifier.verify(token) {
                Ok(access) => access,
                Err(e) => return self.refuse_auth(ctx, &token_refusal(&e)),
            },
        };
        let tickets = ctx.tickets();
        let ttl = tickets.ttl().as_secs();
        match tickets.issue(access, ctx.unix_time()) {
            Ok(ticket) => {
                let body = framing::json_body(&json!({"ticket": ticket, "expires_in": ttl}));
                let ct = "application/json";
                response::respond(ctx, self.answer(), StatusCode::OK, ct, &body, &[], true);
                self.after_response(ctx)
            }
            Err(IssueError::Full) => {
                let reason = format!(
                    "{} tickets are outstanding (--max-tickets); retry shortly",
                    ctx.settings().max_tickets
                );
                let refused =
                    Refused::new(Refusal::Overloaded, StatusCode::SERVICE_UNAVAILABLE, reason);
                self.refuse(ctx, &refused.retry_later())
            }
        }
    }

    /// `GET /presence/{channel}`: asks the channel's owner, which knows
    /// the clients on every shard; answered `{"ch":…,"clients":[…]}`.
    fn query_presence(
        &mut self,
        ctx: &mut impl Context,
        head: &RequestHead<'_>,
        raw: &str,
    ) -> Outcome {
        if !matches!(head.method, Method::Get | Method::Head) {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let refused = Refused::new(
                Refusal::BadRequest,
                status,
                "method not allowed for this path",
            );
            return self.refuse_with(ctx, &refused, &[("Allow", "GET, HEAD, OPTIONS")]);
        }
        let channel = match ChannelName::from_path(raw) {
            Ok(channel) => channel,
            Err(reason) => return self.refuse(ctx, &Refused::bad(Refusal::BadChannel, reason)),
        };
        if let Err(refused) = read_access(ctx, head, [&channel]) {
            return self.refuse_auth(ctx, &refused);
        }
        if let Some(reason) = response::presence_hidden(ctx, &channel) {
            let refused = Refused::new(Refusal::Forbidden, StatusCode::FORBIDDEN, reason);
            return self.refuse(ctx, &refused);
        }
        let token = ctx.query_presence(channel);
        let answer = self.answer();
        let busy = self.busy.get_or_insert_with(Default::default);
        busy.waiting.push_back(Waiting::Presence {
            token,
            answer,
            body: None,
        });
        Outcome::Stay
    }

    /// A built-in file, or `304` when the browser's copy is current.
    fn serve_asset(
        &mut self,
        ctx: &mut impl Context,
        head: &RequestHead<'_>,
        asset: &'static Asset,
    ) -> Outcome {
        let answer = self.answer();
        let extra = [
            ("ETag", asset.etag()),
            ("Cache-Control", asset.cache_control),
        ];
        if asset.is_fresh(head) {
            response::respond(
                ctx,
                answer,
                StatusCode::NOT_MODIFIED,
                "",
                b"",
                &extra,
                false,
            );
        } else {
            let (ct, body) = (asset.content_type, asset.body);
            response::respond(ctx, answer, StatusCode::OK, ct, body, &extra, false);
        }
        self.after_response(ctx)
    }

    // ---- time and shutdown -------------------------------------------------------

    /// Whether nothing has happened on the connection yet: no request, not
    /// even part of one.
    pub fn is_fresh(&self) -> bool {
        self.busy.is_none() && !self.has(flag::PARTIAL) && !self.has(flag::SERVED)
    }

    /// The connection's address is over a per-address limit: answered with
    /// the refusal, unless a request is under way, whose answer must not
    /// be cut into: then it just closes.
    pub fn refuse_peer(&mut self, ctx: &mut impl Context, refused: &Refused) -> Outcome {
        if self.busy.is_some() || self.has(flag::PARTIAL) {
            ctx.metrics().refuse(refused.why);
            return Outcome::Finish(Finish::Now);
        }
        self.refuse(ctx, refused)
    }

    /// The connection's deadline passed.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Outcome {
        let reading_body = self.busy.as_ref().is_some_and(|b| b.body.is_some());
        if reading_body || self.has(flag::PARTIAL) {
            // Slowloris, or a body that stopped: the request did not come
            // in time.
            ctx.metrics().refuse(Refusal::Timeout);
            ctx.send(Bytes::from_static(responses::REQUEST_TIMEOUT));
            return Outcome::Finish(Finish::AfterFlush);
        }
        if self.waiting() > 0 {
            return Outcome::Stay;
        }
        if !self.has(flag::SERVED) {
            // A silent peer: no request at all.
            ctx.metrics().refuse(Refusal::Timeout);
        }
        Outcome::Finish(Finish::Now)
    }

    /// The node is shutting down: an idle keep-alive connection closes
    /// once what it was answered is sent (an answer may still be queued
    /// when the drain starts); one with a request in progress finishes it
    /// (and is answered `Connection: close`); a new one that has sent
    /// nothing yet is answered `503` when its request comes (within the
    /// handshake timeout).
    pub fn handle_shutdown(&mut self) -> Outcome {
        let idle = self.busy.is_none() && !self.has(flag::PARTIAL);
        if idle && self.has(flag::SERVED) {
            Outcome::Finish(Finish::AfterFlush)
        } else {
            Outcome::Stay
        }
    }
}

/// The client token a request presents: `Authorization: Bearer`, or
/// `?token=` where the operator allows it (`--allow-token-in-query`).
fn token_of<'h>(ctx: &impl Context, head: &'h RequestHead<'_>) -> Option<Cow<'h, str>> {
    if let Some(token) = auth::bearer_token(head.headers.authorization) {
        return Some(Cow::Borrowed(token));
    }
    if !ctx.settings().allow_token_in_query {
        return None;
    }
    head.query_param("token").ok().flatten()
}

fn token_refusal(e: &TokenError) -> Refused {
    Refused::new(Refusal::Unauthorized, StatusCode::UNAUTHORIZED, e.reason())
}

/// What the request's token grants, if it presents one (in
/// `Authorization`, else as a `?ticket=`, else as a `?token=` where
/// allowed): `Ok(None)` when
/// the node checks no tokens or none came (a `/ws` client may still send
/// `auth`); `401` for a token that is not valid.
fn presented_access(
    ctx: &impl Context,
    head: &RequestHead<'_>,
) -> Result<Option<Arc<Access>>, Refused> {
    let Some(verifier) = ctx.settings().verifier.as_deref() else {
        return Ok(None);
    };
    if head.headers.authorization.is_none() {
        if let Some(ticket) = head.query_param("ticket").ok().flatten() {
            return match ctx.tickets().redeem(&ticket, ctx.unix_time()) {
                Some(access) => Ok(Some(access)),
                None => Err(Refused::new(
                    Refusal::Unauthorized,
                    StatusCode::UNAUTHORIZED,
                    "ticket unknown, already used or expired: get a new one with POST /ticket",
                )),
            };
        }
    }
    match token_of(ctx, head) {
        None => Ok(None),
        Some(token) => verifier
            .verify(&token)
            .map(Some)
            .map_err(|e| token_refusal(&e)),
    }
}

/// Checks that the request may read `channels`: `Ok(None)` when none of
/// their namespaces needs a token; `401` without a valid token; `403`
/// naming the first channel that needs one the token does not allow.
fn read_access<'c>(
    ctx: &impl Context,
    head: &RequestHead<'_>,
    channels: impl IntoIterator<Item = &'c ChannelName>,
) -> Result<Option<Arc<Access>>, Refused> {
    let namespaces = &ctx.settings().namespaces;
    if !namespaces.any_token() {
        return Ok(None);
    }
    let mut guarded = channels
        .into_iter()
        .filter(|c| namespaces.of(c.as_str()).token)
        .peekable();
    if guarded.peek().is_none() {
        return Ok(None);
    }
    let access = presented_access(ctx, head)?.ok_or_else(|| token_refusal(&TokenError::Missing))?;
    if let Some(reason) = guarded.find_map(|c| ack::read_denied(ctx.settings(), &access, c)) {
        return Err(Refused::new(
            Refusal::Forbidden,
            StatusCode::FORBIDDEN,
            reason,
        ));
    }
    Ok(Some(access))
}

/// The durable cursors of an HTTP subscription to `channels` (`?durable=`,
/// `?device=`, durable namespaces; see `ack::durable_for`), in channel
/// order; empty when none is durable. `access` is what `read_access`
/// found; without it the request's token is read here (only when a
/// cursor is wanted, so a plain subscription never pays for it).
fn durable_of<'c, I>(
    ctx: &impl Context,
    head: &RequestHead<'_>,
    access: Option<&Arc<Access>>,
    channels: I,
) -> Result<Vec<Option<Cursor>>, Refused>
where
    I: IntoIterator<Item = &'c ChannelName> + Clone,
{
    let (asked, device) = ack::durable_query(head)?;
    let settings = ctx.settings();
    let namespaces = &settings.namespaces;
    let by_namespace = || (channels.clone().into_iter()).any(|c| namespaces.of(c.as_str()).durable);
    if !asked && (!settings.keeps_cursors() || !by_namespace()) {
        return Ok(Vec::new());
    }
    let presented;
    let access = match access {
        Some(a) => Some(&**a),
        None => {
            presented = presented_access(ctx, head)?;
            presented.as_deref()
        }
    };
    (channels.into_iter())
        .map(|c| {
            ack::durable_for(settings, access, c, asked, device.clone())
                .map_err(|e| ack::refused(&e))
        })
        .collect()
}

/// Refuses a request that would create a channel while the node holds
/// `--max-channels`.
fn admit<'c>(
    ctx: &impl Context,
    channels: impl IntoIterator<Item = &'c ChannelName>,
) -> Result<(), Refused> {
    if channels.into_iter().all(|c| ctx.admits_channel(c)) {
        return Ok(());
    }
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let reason = response::channel_limit_reason(ctx);
    // Channels come and go: the client may try again.
    Err(Refused::new(Refusal::ChannelLimit, status, reason).retry_later())
}

/// Whether the node offers the kind of poll a plan asks for: a zero
/// timeout is a short poll, anything else a long poll. `Err` names the
/// transport that is off.
fn poll_kind(ctx: &impl Context, timeout: Duration) -> Result<(), &'static str> {
    let name = if timeout.is_zero() {
        "poll"
    } else {
        "longpoll"
    };
    if offered(ctx, name) {
        Ok(())
    } else {
        Err(name)
    }
}

/// Whether the node offers transport `name` (`ws`, `sse`, `longpoll`,
/// `poll`; see `--transports`).
fn offered(ctx: &impl Context, name: &str) -> bool {
    let t = ctx.settings().transports;
    match name {
        "ws" => t.ws,
        "sse" => t.sse,
        "longpoll" => t.longpoll,
        "poll" => t.poll,
        _ => true,
    }
}
