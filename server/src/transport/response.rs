//! Writing HTTP responses: complete answers, errors that name their cause,
//! and refusals.
//!
//! Every refusal names its cause in the body (one line of text) and in a
//! debug log line, and is counted in `ringcast_requests_refused_total`.

use bytes::BytesMut;
use codec::http::{ResponseHead, StatusCode};

use crate::hub::ChannelName;
use crate::metrics::Refusal;

use super::context::{Context, RETRY_AFTER_SECS};
use super::cors::{self, Grant};

/// How the request being answered wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The connection stays open after it (else `Connection: close`).
    pub keep_alive: bool,
    /// The request was `HEAD`: head only.
    pub head_only: bool,
    /// What the request's origin is granted (CORS headers).
    pub cors: Grant,
}

/// Writes a complete response. `no_store` adds `Cache-Control: no-store`
/// (callers that set their own caching headers pass false).
pub fn respond(
    ctx: &mut impl Context,
    answer: Answer,
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    no_store: bool,
) {
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
    if !answer.keep_alive {
        h = h.header("Connection", "close");
    }
    for (name, value) in extra {
        h = h.header(name, value);
    }
    h = cors::headers(answer.cors, &ctx.settings().allowed_origins, h);
    if h.finish().is_err() {
        tracing::error!("response header with forbidden bytes; sending 500");
        out.clear();
        out.extend_from_slice(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    } else if !answer.head_only && status.allows_body() {
        out.extend_from_slice(body);
    }
    ctx.send(out.freeze());
}

/// Writes a plain-text error response naming `reason` (one line).
pub fn error(
    ctx: &mut impl Context,
    answer: Answer,
    status: StatusCode,
    reason: &str,
    extra: &[(&str, &str)],
) {
    let mut body = String::with_capacity(reason.len() + 1);
    body.push_str(reason);
    body.push('\n');
    let ct = "text/plain; charset=utf-8";
    respond(ctx, answer, status, ct, body.as_bytes(), extra, false);
}

/// Why a request is refused: the counter, the status and the reason sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The refusal counter it goes to.
    pub why: Refusal,
    /// The status answered.
    pub status: StatusCode,
    /// The one-line reason in the body and the log.
    pub reason: String,
    /// The cause passes (a rate, a limit): answered with `Retry-After`.
    pub retry_later: bool,
}

impl Refused {
    /// A refusal.
    pub fn new(why: Refusal, status: StatusCode, reason: impl Into<String>) -> Refused {
        Refused {
            why,
            status,
            reason: reason.into(),
            retry_later: false,
        }
    }

    /// The same refusal, telling the client to retry after
    /// [`RETRY_AFTER_SECS`].
    pub fn retry_later(self) -> Refused {
        Refused {
            retry_later: true,
            ..self
        }
    }

    /// A `400 Bad Request` counted under `why`.
    pub fn bad(why: Refusal, reason: impl Into<String>) -> Refused {
        Refused::new(why, StatusCode::BAD_REQUEST, reason)
    }
}

/// Refuses a request: counts and logs the cause, and answers with it and
/// `Connection: close`. The caller then finishes the connection after the
/// answer is flushed.
pub fn refuse(ctx: &mut impl Context, answer: Answer, refused: &Refused) {
    refuse_with(ctx, answer, refused, &[]);
}

/// [`refuse`], with `extra` headers (`Allow` for a `405`,
/// `WWW-Authenticate` for a `401`), and `Retry-After` when the refusal
/// says the client may retry.
pub fn refuse_with(
    ctx: &mut impl Context,
    answer: Answer,
    refused: &Refused,
    extra: &[(&str, &str)],
) {
    ctx.metrics().refuse(refused.why);
    tracing::debug!(
        "refused request: {} {}",
        refused.status.code(),
        refused.reason
    );
    let closing = Answer {
        keep_alive: false,
        ..answer
    };
    if refused.retry_later {
        let retry = RETRY_AFTER_SECS.to_string();
        let with_retry: Vec<(&str, &str)> = (extra.iter().copied())
            .chain([("Retry-After", retry.as_str())])
            .collect();
        return error(ctx, closing, refused.status, &refused.reason, &with_retry);
    }
    error(ctx, closing, refused.status, &refused.reason, extra);
}

/// Why a request that would create a channel is refused while the node
/// holds `--max-channels`.
pub fn channel_limit_reason(ctx: &impl Context) -> String {
    let max = ctx.settings().max_channels;
    format!("the node holds its limit of {max} channels (--max-channels); retry later")
}

/// Why presence may not be read on `channel`: `Some` where its namespace
/// hides presence.
pub fn presence_hidden(ctx: &impl Context, channel: &ChannelName) -> Option<String> {
    let namespaces = &ctx.settings().namespaces;
    if namespaces.of(channel.as_str()).presence {
        return None;
    }
    let space = namespaces.name_of(channel.as_str());
    Some(format!(
        "presence is not visible on {channel} (namespace {space})"
    ))
}
