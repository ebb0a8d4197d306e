//! The client side of each push transport, written sans-io.
//!
//! A [`Proto`] turns received bytes into [`Delivery`]s and bytes to send
//! (pongs, the next poll); the io_uring engine in [`crate::client`] owns the
//! sockets and the clock. Every transport finds this run's messages by the
//! [`crate::marker::Marker`] inside whatever envelope the server adds, and
//! reports the server's message id where the transport has one, for
//! resuming after a reconnect.
//!
//! | Transport | Request | Messages | Resume |
//! |---|---|---|---|
//! | [`ws`] | `GET` + `Upgrade: websocket` | one frame each (raw or JSON envelope) | `?since=ID` (ids need `format=json`) |
//! | [`sse`] | `GET`, `Accept: text/event-stream` | `id:`/`data:` events | `Last-Event-ID: ID` |
//! | [`poll`] long | `GET ?since=C&timeout=S` repeated | JSON `{"messages":[…],"next":C}` / `204` | the cursor |
//! | [`poll`] short | `GET ?since=C&timeout=0` every interval, `If-None-Match` | as above / `304` | the cursor |
//!
//! A WebSocket subscriber may offer permessage-deflate (`--deflate`); its
//! messages are then inflated before the marker is looked for, and each
//! [`Delivery`] says whether it came compressed. What a worker's WebSocket
//! connections share for that ([`ws::Shared`]) is passed into every call,
//! so that no connection holds it.
//!
//! Under any of them, for `wss://` and `https://` targets, [`tls`] turns
//! the socket's bytes into the transport's and back.

pub mod http;
pub mod poll;
pub mod sse;
pub mod tls;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use crate::marker::Marker;

/// The transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// HTTP long polling.
    Longpoll,
    /// HTTP short polling.
    Shortpoll,
}

impl Kind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ws => "ws",
            Kind::Sse => "sse",
            Kind::Longpoll => "longpoll",
            Kind::Shortpoll => "shortpoll",
        }
    }
}

/// One received message (or notice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The marker found in it, if any.
    pub marker: Option<Marker>,
    /// The server's id for it, when the transport carries one and ids were asked for.
    pub id: Option<Box<str>>,
    /// A reset notice: the server could not resume from the position asked.
    pub reset: bool,
    /// It arrived compressed (WebSocket permessage-deflate) and was inflated.
    pub compressed: bool,
    /// Bytes of the message as the transport hands it over: a WebSocket
    /// message's payload (inflated), an event's data, a polled message's
    /// data. Beside the bytes received on the wire, this shows what
    /// framing and compression make of a message.
    pub bytes: usize,
}

/// What a connection should do after some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep going.
    Continue,
    /// The handshake (or the first response) completed: the subscriber is live.
    Ready,
    /// Send the next request after this delay (short polling).
    SendAfter(Duration),
    /// The server ended the stream (close frame, `Connection: close`, end of body).
    Closed(String),
}

/// A protocol failure, named for the error table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

/// What every transport needs to build requests.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `Host` header value.
    pub host: Arc<str>,
    /// Request target for this subscriber's channel, without resume parameters.
    pub target: Arc<str>,
    /// Query parameter carrying the resume position (`since`).
    pub resume_param: Arc<str>,
    /// Extra header lines, each ending in CRLF (`--header`).
    pub headers: Arc<str>,
    /// Extract message ids (needed to resume; costs an allocation per message).
    pub want_ids: bool,
    /// WebSocket: offer permessage-deflate in the handshake.
    pub deflate: bool,
    /// Long-poll timeout in seconds.
    pub poll_timeout_s: u32,
    /// Short-poll interval.
    pub poll_interval: Duration,
}

/// A connection's protocol state.
#[derive(Debug)]
pub enum Proto {
    /// WebSocket.
    Ws(ws::WsClient),
    /// Server-Sent Events.
    Sse(sse::SseClient),
    /// Long or short polling.
    Poll(poll::PollClient),
}

impl Proto {
    /// A fresh state for `kind`.
    pub fn new(kind: Kind, want_ids: bool) -> Proto {
        match kind {
            Kind::Ws => Proto::Ws(ws::WsClient::new(want_ids)),
            Kind::Sse => Proto::Sse(sse::SseClient::new(want_ids)),
            Kind::Longpoll => Proto::Poll(poll::PollClient::new(false)),
            Kind::Shortpoll => Proto::Poll(poll::PollClient::new(true)),
        }
    }

    /// The first request of a connection, resuming after `resume` if given.
    pub fn first_request(&mut self, ctx: &RequestCtx, resume: Option<&str>, out: &mut Vec<u8>) {
        match self {
            Proto::Ws(w) => w.request(ctx, resume, out),
            Proto::Sse(s) => s.request(ctx, resume, out),
            Proto::Poll(p) => p.first_request(ctx, resume, out),
        }
    }

    /// The next request, for transports that make more than one (polling).
    pub fn next_request(&mut self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        if let Proto::Poll(p) = self {
            p.next_request(ctx, out);
        }
    }

    /// Feeds received bytes. Deliveries go to `got`, bytes to send to `out`;
    /// `shared` is what the worker's WebSocket connections share.
    pub fn on_bytes(
        &mut self,
        ctx: &RequestCtx,
        shared: &mut ws::Shared,
        input: &mut [u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        match self {
            Proto::Ws(w) => w.on_bytes(ctx, shared, input, out, got),
            Proto::Sse(s) => s.on_bytes(input, got),
            Proto::Poll(p) => p.on_bytes(ctx, input, out, got),
        }
    }

    /// Whether the handshake agreed on permessage-deflate (WebSocket only).
    pub fn deflate_agreed(&self) -> bool {
        matches!(self, Proto::Ws(w) if w.deflate_agreed())
    }
}

/// Finds `"id":"…"` in a JSON envelope.
pub fn json_id(payload: &[u8]) -> Option<Box<str>> {
    const KEY: &[u8] = b"\"id\":\"";
    let i = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = payload[i..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&payload[i..i + len])
        .ok()
        .map(Into::into)
}

/// Builds a [`Delivery`] from one message body.
pub fn delivery(payload: &[u8], id: Option<Box<str>>) -> Delivery {
    let reset = payload.starts_with(b"{\"type\":\"reset\"");
    Delivery {
        marker: if reset { None } else { Marker::find(payload) },
        id,
        reset,
        compressed: false,
        bytes: payload.len(),
    }
}

/// Appends `key=value` to a request target, percent-encoding the value.
pub fn with_param(target: &str, key: &str, value: &str) -> String {
    let mut t = String::with_capacity(target.len() + key.len() + value.len() + 2);
    t.push_str(target);
    t.push(if target.contains('?') { '&' } else { '?' });
    t.push_str(key);
    t.push('=');
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            t.push(b as char);
        } else {
            t.push_str(&format!("%{b:02X}"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_resets() {
        assert_eq!(
            json_id(br#"{"type":"message","channel":"c","id":"ab-12","data":"x"}"#).as_deref(),
            Some("ab-12")
        );
        assert_eq!(json_id(b"rcl1:1:2:3;"), None);
        assert!(delivery(br#"{"type":"reset","channel":"c"}"#, None).reset);
        assert!(!delivery(b"hello", None).reset);
    }
}
