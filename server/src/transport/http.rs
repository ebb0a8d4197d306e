//! HTTP/1.1: routing request heads, plain responses, keep-alive.
//!
//! | Route | Method | What |
//! |---|---|---|
//! | `/healthz` | GET, HEAD | `200 ok` once the node accepts connections |
//! | `/metrics` | GET, HEAD | Prometheus text |
//! | `/ws/{channel}` | GET (upgrade) | WebSocket subscriber (`transport::ws`) |
//! | `/echo` | GET (upgrade) | WebSocket echo (unless `--no-echo`) |
//! | `/pub/{channel}`, `/pub` | POST | publish (`transport::publish`) |
//! | any | OPTIONS | `204` with `Allow` |
//!
//! Every refusal names its cause in the body (one line of text) and in a
//! debug log line, and is counted in `ringcast_requests_refused_total`.

use bytes::{Bytes, BytesMut};
use codec::http::{
    parse_request, responses, Limits, Method, RequestHead, ResponseHead, StatusCode,
};
use codec::Status;

use crate::metrics::{NodeGauges, Refusal};
use crate::shard::conn::{flags, ConnKey, Phase};
use crate::shard::{Shard, Shared, Step};

impl Shard {
    /// Bytes arriving while the connection waits for a request head.
    pub(crate) fn on_http_input(&mut self, key: ConnKey, buf: &mut [u8]) -> Step {
        // After a request that asked to close, nothing more is read.
        if self
            .io
            .conn(key)
            .is_some_and(|c| c.has(flags::SERVED) && !c.has(flags::KEEP_ALIVE))
        {
            return Step::Discard;
        }
        let limits = Limits {
            max_head_bytes: self.settings().max_head_size,
            ..Limits::default()
        };
        match parse_request(buf, &limits) {
            Ok(Status::Partial) => Step::Wait(0),
            Err(e) => {
                self.metrics().refuse(Refusal::BadRequest);
                tracing::debug!(shard = self.id, "refused request: {e}");
                let extra: &[(&str, &str)] = if e.status() == StatusCode::METHOD_NOT_ALLOWED {
                    &[("Allow", "GET, HEAD, POST, OPTIONS")]
                } else {
                    &[]
                };
                self.respond_error(key, e.status(), e.reason(), extra, true);
                Step::Discard
            }
            Ok(Status::Complete((head, used))) => {
                // Requests behind unanswered publishes wait, so answers stay
                // in request order; more publishes may go ahead, up to a cap.
                let pending = self
                    .io
                    .conn(key)
                    .and_then(|c| c.ext.as_ref())
                    .map_or(0, |e| e.publishes.len());
                let is_publish = head.method == Method::Post
                    && (head.path == "/pub" || head.path.starts_with("/pub/"));
                if pending > 0
                    && (!is_publish
                        || pending >= crate::transport::publish::MAX_PIPELINED_PUBLISHES)
                {
                    return Step::Wait(0);
                }
                let keep_alive = head.keep_alive() && self.drain_deadline().is_none();
                if let Some(conn) = self.io.conn_mut(key) {
                    conn.flags &= !(flags::KEEP_ALIVE | flags::HEAD);
                    conn.flags |= flags::SERVED;
                    if keep_alive {
                        conn.flags |= flags::KEEP_ALIVE;
                    }
                    if head.method == Method::Head {
                        conn.flags |= flags::HEAD;
                    }
                }
                self.route(key, &head);
                Step::Continue(used)
            }
        }
    }

    fn route(&mut self, key: ConnKey, head: &RequestHead<'_>) {
        let path = head.path;
        let get_or_head = matches!(head.method, Method::Get | Method::Head);
        match path {
            "/healthz" if get_or_head => {
                self.respond(key, StatusCode::OK, "text/plain", b"ok\n", &[]);
            }
            "/metrics" if get_or_head => {
                let body = self.render_metrics();
                self.respond(
                    key,
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body.as_bytes(),
                    &[],
                );
            }
            "/healthz" | "/metrics" if head.method != Method::Options => {
                self.method_not_allowed(key, "GET, HEAD, OPTIONS");
            }
            "/echo" if self.settings().echo && head.method != Method::Options => {
                self.upgrade_echo(key, head);
            }
            _ if head.method == Method::Options => {
                self.respond(
                    key,
                    StatusCode::NO_CONTENT,
                    "",
                    b"",
                    &[("Allow", "GET, HEAD, POST, OPTIONS")],
                );
            }
            "/ws" => self.upgrade_mux(key, head),
            p if p.starts_with("/ws/") => self.upgrade_subscribe(key, head, &p["/ws/".len()..]),
            "/sse" => self.start_sse(key, head, None),
            p if p.starts_with("/sse/") => self.start_sse(key, head, Some(&p["/sse/".len()..])),
            p if p.starts_with("/poll/") => self.start_poll(key, head, &p["/poll/".len()..]),
            p if p == "/pub" || p.starts_with("/pub/") => self.start_publish(key, head),
            _ => {
                self.metrics().refuse(Refusal::NotFound);
                self.respond_error(key, StatusCode::NOT_FOUND, "not found", &[], false);
            }
        }
    }

    fn method_not_allowed(&mut self, key: ConnKey, allow: &str) {
        self.metrics().refuse(Refusal::BadRequest);
        self.respond_error(
            key,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed for this path",
            &[("Allow", allow)],
            false,
        );
    }

    fn render_metrics(&self) -> String {
        let mail = &self.shared.mail;
        let node = NodeGauges {
            capacity: self.shared.plan.capacity(),
            mailbox_depth: (0..mail.shards()).map(|s| mail.depth(s) as u64).collect(),
            rss_bytes: crate::runtime::sys::rss_bytes(),
        };
        crate::metrics::render(&self.shared.metrics, &node)
    }

    /// Writes a complete response. A connection that is not kept alive is
    /// closed once it is sent; one that is waits for its next request, at
    /// most `--idle-timeout`.
    pub(crate) fn respond(
        &mut self,
        key: ConnKey,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) {
        let Some(keep_alive) = self.io.conn(key).map(|c| c.has(flags::KEEP_ALIVE)) else {
            return;
        };
        self.respond_as(key, status, content_type, body, extra, true, keep_alive);
    }

    /// Writes a complete response with the keep-alive of the request it
    /// answers (which may not be the latest: a pipelined publish answered
    /// later), with `Cache-Control: no-store` only when `no_store` (callers
    /// that set their own caching headers pass false).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond_as(
        &mut self,
        key: ConnKey,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
        extra: &[(&str, &str)],
        no_store: bool,
        keep_alive: bool,
    ) {
        let Some(conn) = self.io.conn(key) else {
            return;
        };
        let head_only = conn.has(flags::HEAD);
        let mut out = BytesMut::with_capacity(160 + body.len());
        let mut h = ResponseHead::new(&mut out, status);
        if !content_type.is_empty() {
            h = h.header("Content-Type", content_type);
        }
        if status.allows_body() {
            h = h.content_length(body.len() as u64);
        }
        if no_store {
            h = h.header("Cache-Control", "no-store");
        }
        if !keep_alive {
            h = h.header("Connection", "close");
        }
        for (name, value) in extra {
            h = h.header(name, value);
        }
        if h.finish().is_err() {
            tracing::error!(
                shard = self.id,
                "response header with forbidden bytes; sending 500"
            );
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            self.send(key, out.freeze());
            self.close_after_flush(key);
            return;
        }
        if !head_only && status.allows_body() {
            out.extend_from_slice(body);
        }
        self.send(key, out.freeze());
        self.after_response(key, keep_alive);
    }

    /// Writes a plain-text error response naming `reason`; `close` forces
    /// the connection closed after it.
    pub(crate) fn respond_error(
        &mut self,
        key: ConnKey,
        status: StatusCode,
        reason: &str,
        extra: &[(&str, &str)],
        close: bool,
    ) {
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        if close {
            conn.flags &= !flags::KEEP_ALIVE;
        }
        let keep_alive = conn.has(flags::KEEP_ALIVE);
        let head_only = conn.has(flags::HEAD);
        let mut out = BytesMut::new();
        responses::error(&mut out, status, reason, !keep_alive, extra, !head_only);
        self.send(key, out.freeze());
        self.after_response(key, keep_alive);
    }

    fn after_response(&mut self, key: ConnKey, keep_alive: bool) {
        if !keep_alive {
            self.close_after_flush(key);
            return;
        }
        // The phase is left alone: a pipelined request may already be in
        // progress. A connection with nothing in progress gets the idle
        // timeout.
        let idle = self.io.conn(key).is_some_and(|c| {
            c.phase == Phase::Http && c.ext.as_ref().is_none_or(|e| e.publishes.is_empty())
        });
        if idle {
            let deadline = self.tick + Shared::ticks(self.settings().idle_timeout);
            self.set_deadline(key, deadline);
        }
    }

    /// Queues raw bytes (a `101`, a `100 Continue`).
    pub(crate) fn send_raw(&mut self, key: ConnKey, bytes: &'static [u8]) {
        self.send(key, Bytes::from_static(bytes));
    }
}
