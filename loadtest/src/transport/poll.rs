//! HTTP polling subscriber, long and short, on one keep-alive connection.
//!
//! * The first request asks with `timeout=0` (or resumes with
//!   `since=<id>`); its answer carries the current cursor (`next` in the
//!   body, or the `ETag`). From then on the subscriber is live.
//! * Long polling sends the next `GET …?since=<cursor>&timeout=<s>` as soon
//!   as an answer arrives: `200` with messages, or `204` when the timeout
//!   passed with nothing new.
//! * Short polling waits the interval, then asks with `timeout=0` and
//!   `If-None-Match: "<cursor>"`: `304` when nothing is new.
//!
//! Every request counts toward the requests/s figure of the comparison.

use std::time::Duration;

use serde::Deserialize;

use super::http::{parse_head, Head};
use super::{delivery, with_param, Delivery, ProtoError, RequestCtx, Step};

/// Largest response body accepted.
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    messages: Vec<Msg>,
    next: Option<String>,
    /// Present when the server lost the position asked for.
    reset: Option<serde_json::Value>,
}

/// A full batch means more is waiting: poll again at once.
const SERVER_BATCH: usize = 100;

#[derive(Debug, Deserialize)]
struct Msg {
    id: Option<String>,
    #[serde(default)]
    data: String,
}

/// One polling connection's client state.
#[derive(Debug)]
pub struct PollClient {
    short: bool,
    cursor: Option<String>,
    buf: Vec<u8>,
    head: Option<Head>,
    live: bool,
    requests: u64,
}

impl PollClient {
    /// A polling subscriber; `short` for short polling.
    pub fn new(short: bool) -> PollClient {
        PollClient {
            short,
            cursor: None,
            buf: Vec::new(),
            head: None,
            live: false,
            requests: 0,
        }
    }

    /// Requests made so far.
    #[cfg(test)]
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The first request, resuming after `resume` if given.
    pub fn first_request(&mut self, ctx: &RequestCtx, resume: Option<&str>, out: &mut Vec<u8>) {
        if let Some(r) = resume {
            self.cursor = Some(r.to_string());
        }
        self.live = false;
        self.buf.clear();
        self.head = None;
        self.write(ctx, true, out);
    }

    /// The next poll.
    pub fn next_request(&mut self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        self.write(ctx, false, out);
    }

    fn write(&mut self, ctx: &RequestCtx, first: bool, out: &mut Vec<u8>) {
        let mut target = ctx.target.to_string();
        if let Some(c) = &self.cursor {
            target = with_param(&target, &ctx.resume_param, c);
        }
        let timeout = if first || self.short {
            0
        } else {
            ctx.poll_timeout_s
        };
        target = with_param(&target, "timeout", &timeout.to_string());
        let inm = match (&self.cursor, self.short && !first) {
            (Some(c), true) => format!("If-None-Match: \"{c}\"\r\n"),
            _ => String::new(),
        };
        self.requests += 1;
        out.extend_from_slice(
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\n{}{inm}\r\n",
                ctx.host, ctx.headers
            )
            .as_bytes(),
        );
    }

    /// Feeds received bytes.
    pub fn on_bytes(
        &mut self,
        ctx: &RequestCtx,
        input: &[u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        self.buf.extend_from_slice(input);
        if self.head.is_none() {
            match parse_head(&self.buf).map_err(|e| ProtoError(format!("bad response: {e}")))? {
                None => return Ok(Step::Continue),
                Some(h) => {
                    if h.chunked {
                        return Err(ProtoError("poll_chunked_unsupported".into()));
                    }
                    self.buf.drain(..h.len);
                    self.head = Some(h);
                }
            }
        }
        let Some(head) = self.head.as_ref() else {
            return Ok(Step::Continue);
        };
        let len = match head.status {
            204 | 304 => head.content_length.unwrap_or(0),
            s if s != 200 => return Err(ProtoError(format!("http_{s}"))),
            _ => head
                .content_length
                .ok_or_else(|| ProtoError("poll_no_content_length".into()))?,
        };
        if len > MAX_BODY {
            return Err(ProtoError("poll_body_too_large".into()));
        }
        if self.buf.len() < len {
            return Ok(Step::Continue);
        }
        let Some(head) = self.head.take() else {
            return Ok(Step::Continue);
        };
        let body: Vec<u8> = self.buf.drain(..len).collect();
        let mut full = false;
        match head.status {
            200 => {
                let b: Body = serde_json::from_slice(&body)
                    .map_err(|e| ProtoError(format!("poll_bad_json: {e}")))?;
                if b.reset.is_some() {
                    got.push(Delivery {
                        reset: true,
                        ..Delivery::default()
                    });
                }
                full = b.messages.len() >= SERVER_BATCH;
                for m in &b.messages {
                    let id = m.id.clone().filter(|_| ctx.want_ids).map(Into::into);
                    let d = delivery(m.data.as_bytes(), id);
                    got.push(d);
                }
                if let Some(n) = b.next.or(head.etag.clone()) {
                    self.cursor = Some(n);
                }
            }
            204 | 304 => {
                if let Some(e) = head.etag.clone() {
                    self.cursor = Some(e);
                }
            }
            s => return Err(ProtoError(format!("http_{s}"))),
        }
        if head.close {
            return Ok(Step::Closed("poll_connection_close".into()));
        }
        let was_live = std::mem::replace(&mut self.live, true);
        if self.short && !full {
            return Ok(if was_live {
                Step::SendAfter(ctx.poll_interval)
            } else {
                // Ready now; the first real poll follows after the interval.
                Step::Ready
            });
        }
        self.write(ctx, false, out);
        Ok(if was_live {
            Step::Continue
        } else {
            Step::Ready
        })
    }

    /// Short polling waits between polls.
    pub fn interval(&self, ctx: &RequestCtx) -> Option<Duration> {
        self.short.then_some(ctx.poll_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx() -> RequestCtx {
        RequestCtx {
            host: Arc::from("h"),
            target: Arc::from("/poll/c"),
            resume_param: Arc::from("since"),
            headers: Arc::from(""),
            want_ids: true,
            deflate: false,
            poll_timeout_s: 25,
            poll_interval: Duration::from_millis(500),
        }
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8(v.to_vec()).unwrap()
    }

    #[test]
    fn long_poll_cycle() {
        let ctx = ctx();
        let mut p = PollClient::new(false);
        let mut out = Vec::new();
        p.first_request(&ctx, None, &mut out);
        assert!(text(&out).starts_with("GET /poll/c?timeout=0 HTTP/1.1\r\n"));
        out.clear();
        let mut got = Vec::new();
        let r = b"HTTP/1.1 204 No Content\r\nETag: \"e-0\"\r\n\r\n";
        assert_eq!(p.on_bytes(&ctx, r, &mut out, &mut got), Ok(Step::Ready));
        assert!(text(&out).starts_with("GET /poll/c?since=e-0&timeout=25 HTTP/1.1\r\n"));
        out.clear();
        let body =
            br#"{"messages":[{"id":"e-1","channel":"c","data":"rcl1:1:0:5;"}],"next":"e-1"}"#;
        let resp = [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            body,
        ]
        .concat();
        let (a, b) = resp.split_at(30);
        assert_eq!(p.on_bytes(&ctx, a, &mut out, &mut got), Ok(Step::Continue));
        assert_eq!(p.on_bytes(&ctx, b, &mut out, &mut got), Ok(Step::Continue));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id.as_deref(), Some("e-1"));
        assert!(text(&out).contains("since=e-1&timeout=25"));
        assert_eq!(p.requests(), 3);
    }

    #[test]
    fn short_poll_cycle() {
        let ctx = ctx();
        let mut p = PollClient::new(true);
        let mut out = Vec::new();
        p.first_request(&ctx, Some("e-5"), &mut out);
        assert!(text(&out).starts_with("GET /poll/c?since=e-5&timeout=0 HTTP/1.1\r\n"));
        let r = b"HTTP/1.1 304 Not Modified\r\nETag: \"e-5\"\r\n\r\n";
        out.clear();
        assert_eq!(
            p.on_bytes(&ctx, r, &mut out, &mut Vec::new()),
            Ok(Step::Ready)
        );
        assert!(out.is_empty());
        p.next_request(&ctx, &mut out);
        assert!(text(&out).contains("If-None-Match: \"e-5\"\r\n"));
        assert_eq!(
            p.on_bytes(&ctx, r, &mut Vec::new(), &mut Vec::new()),
            Ok(Step::SendAfter(Duration::from_millis(500)))
        );
        let mut p = PollClient::new(true);
        assert_eq!(
            p.on_bytes(&ctx, b"HTTP/1.1 404 No\r\n\r\n", &mut out, &mut Vec::new()),
            Err(ProtoError("http_404".into()))
        );
    }
}
