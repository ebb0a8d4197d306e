//! How a message looks on each transport, and encoding it once per shard.
//!
//! A subscription names its [`Format`]. Four formats give every subscriber
//! the same bytes — the WebSocket frame of the payload, the JSON envelope
//! (`/ws` and `/ws/{ch}?format=json`), the one-channel SSE event — so the
//! fan-out encodes each at most once per message per shard and queues the
//! same [`Bytes`] for every subscriber ("publish once, fan out by
//! reference"). The other two need per-connection work — a multi-channel
//! SSE stream's composite cursor, a held poll's response head — so their
//! protocol state builds them around a shared body.
//!
//! A subscriber that negotiated permessage-deflate gets the compressed
//! frame of the same bytes, made once per message, shard and window
//! ([`Encodings::deflated`]).
//!
//! The wire formats are specified in docs/protocol.md.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use codec::sse::Event as SseEvent;
use codec::ws::{encode, DataKind};
use serde_json::{json, Value};

use crate::hub::{ChannelName, Epoch, Event, Message, MsgId, Reset};

use super::deflate::{Deflate, Deflater};

/// How a subscription wants its messages framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// WebSocket, the payload as one frame.
    WsRaw,
    /// WebSocket, a JSON envelope with id and channel per message.
    WsJson,
    /// The multiplexed WebSocket protocol (`/ws`): the JSON envelope, plus
    /// presence events.
    Mux,
    /// Server-Sent Events on a one-channel stream: id and data.
    Sse,
    /// Server-Sent Events on a stream of several channels: each event
    /// carries the stream's composite cursor as its id.
    SseMulti,
    /// A held long poll: answered by the first message, then removed.
    Poll,
    /// A held long poll of several channels: likewise, its answer built
    /// around the message with the poll's composite cursor.
    PollMany,
}

impl Format {
    /// Whether subscribers in this format receive `event`.
    pub fn wants(self, event: Event) -> bool {
        match event {
            Event::Stored => true,
            Event::Ephemeral => !self.is_poll(),
            Event::Joined | Event::Left => self == Format::Mux,
        }
    }

    /// Whether every subscriber in this format receives the same bytes
    /// (queued by the fan-out); otherwise the protocol state builds them
    /// (`handle_delivery`).
    pub fn is_shared(self) -> bool {
        !matches!(self, Format::SseMulti | Format::Poll | Format::PollMany)
    }

    /// Whether it answers a poll: the answer goes whole, whatever the
    /// connection's window (it is bounded by `--poll-batch`).
    pub fn is_poll(self) -> bool {
        matches!(self, Format::Poll | Format::PollMany)
    }
}

/// The encodings of one message on one shard, each made on first use.
#[derive(Debug)]
pub struct Encodings<'m> {
    msg: &'m Arc<Message>,
    /// Copy the WebSocket frame before sharing it (shards other than the
    /// owner do, so the reference counts their subscribers touch stay on
    /// their core).
    copy_frame: bool,
    raw: Option<Bytes>,
    json: Option<Bytes>,
    sse: Option<Bytes>,
    sse_multi: Option<Bytes>,
    poll: Option<Bytes>,
    /// Compressed frames made so far: (JSON envelope?, window, the frame
    /// subscribers with that agreement get — compressed or, when that did
    /// not pay, the plain one).
    deflated: Vec<(bool, Deflate, Bytes)>,
}

impl<'m> Encodings<'m> {
    /// No encoding made yet.
    pub fn new(msg: &'m Arc<Message>, copy_frame: bool) -> Self {
        Encodings {
            msg,
            copy_frame,
            raw: None,
            json: None,
            sse: None,
            sse_multi: None,
            poll: None,
            deflated: Vec::new(),
        }
    }

    /// The message.
    pub fn message(&self) -> &'m Arc<Message> {
        self.msg
    }

    /// What a subscriber in `format` that negotiated permessage-deflate as
    /// `deflate` receives: [`Encodings::get`]'s frame compressed with its
    /// window (once per window), or that frame itself when compressing it
    /// does not pay or `format` is not a WebSocket one.
    pub fn deflated(&mut self, format: Format, deflate: Deflate, deflater: &mut Deflater) -> Bytes {
        let json = match format {
            Format::WsRaw => false,
            Format::WsJson | Format::Mux => true,
            _ => return self.get(format),
        };
        if let Some((_, _, frame)) = self.deflated.iter().find(|e| (e.0, e.1) == (json, deflate)) {
            return frame.clone();
        }
        let msg = self.msg;
        let compressed = if json {
            deflater.frame(deflate, DataKind::Text, &message_json(msg))
        } else {
            deflater.frame(deflate, msg.kind, &msg.payload)
        };
        let frame = compressed.unwrap_or_else(|| self.get(format));
        self.deflated.push((json, deflate, frame.clone()));
        frame
    }

    /// The bytes a subscriber in `format` receives: the whole delivery for
    /// shared formats, the shared body for the others.
    pub fn get(&mut self, format: Format) -> Bytes {
        let msg = self.msg;
        let copy = self.copy_frame;
        match format {
            Format::WsRaw => self.raw.get_or_insert_with(|| {
                if copy {
                    Bytes::copy_from_slice(&msg.ws_frame)
                } else {
                    msg.ws_frame.clone()
                }
            }),
            Format::WsJson | Format::Mux => self.json.get_or_insert_with(|| message_frame(msg)),
            Format::Sse => self.sse.get_or_insert_with(|| sse_event(msg)),
            Format::SseMulti => self.sse_multi.get_or_insert_with(|| sse_multi_body(msg)),
            Format::Poll => self.poll.get_or_insert_with(|| poll_body(msg)),
            // Built by the poll itself, with its composite cursor.
            Format::PollMany => return Bytes::new(),
        }
        .clone()
    }
}

// ---- payloads ----------------------------------------------------------------

/// A payload as text for JSON and event streams: text as is, binary as
/// base64 (marked `"encoding":"base64"` in JSON, `binary` in SSE event
/// names).
pub fn payload_text(msg: &Message) -> Cow<'_, str> {
    match msg.kind {
        DataKind::Text => String::from_utf8_lossy(&msg.payload),
        DataKind::Binary => base64::engine::general_purpose::STANDARD
            .encode(&msg.payload)
            .into(),
    }
}

/// Sets `data` (and `encoding` for binary) of a JSON message envelope.
fn set_payload(v: &mut Value, msg: &Message) {
    v["data"] = Value::String(payload_text(msg).into_owned());
    if msg.kind == DataKind::Binary {
        v["encoding"] = Value::String("base64".into());
    }
}

/// The payload of a JSON publish request (a batch line or a multiplexed
/// `publish`): `data` (a string, or any JSON value published as its text)
/// or `data_base64` (binary). The error is the reason to answer with.
pub fn payload_of(o: &mut serde_json::Map<String, Value>) -> Result<(DataKind, Bytes), String> {
    match (o.remove("data"), o.remove("data_base64")) {
        (Some(Value::String(s)), None) => Ok((DataKind::Text, Bytes::from(s.into_bytes()))),
        (Some(v), None) => Ok((DataKind::Text, Bytes::from(v.to_string().into_bytes()))),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(|raw| (DataKind::Binary, Bytes::from(raw)))
            .map_err(|e| format!("data_base64 is not base64: {e}")),
        (None, Some(_)) => Err("data_base64 must be a string".into()),
        (Some(_), Some(_)) => Err("give data or data_base64, not both".into()),
        (None, None) => Err("missing data".into()),
    }
}

// ---- WebSocket -----------------------------------------------------------------

/// The member a presence event is about: its payload.
fn identity(msg: &Message) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&msg.payload)
}

/// A message as the JSON envelope shared by `/ws` and `/ws/{ch}?format=json`,
/// in a text frame.
pub fn message_frame(msg: &Message) -> Bytes {
    encode::message(DataKind::Text, &message_json(msg))
}

/// A message as the JSON envelope (the text of [`message_frame`]).
pub fn message_json(msg: &Message) -> Vec<u8> {
    let ch = msg.channel.as_str();
    let v = match msg.event {
        Event::Joined => json!({"type": "joined", "ch": ch, "client": identity(msg)}),
        Event::Left => json!({"type": "left", "ch": ch, "client": identity(msg)}),
        Event::Stored | Event::Ephemeral => {
            let id = msg.is_stored().then(|| msg.id.to_string());
            let mut v = json!({"type": "message", "ch": ch, "id": id});
            set_payload(&mut v, msg);
            if !msg.is_stored() {
                v["ephemeral"] = Value::Bool(true);
            }
            v
        }
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

/// A JSON value as one WebSocket text frame.
pub fn text_frame(v: &Value) -> Bytes {
    let text = serde_json::to_vec(v).expect("JSON values serialize");
    encode::message(DataKind::Text, &text)
}

/// The reset signal as a JSON text frame (both WebSocket formats).
pub fn reset_frame(channel: &ChannelName, reset: &Reset, epoch: Epoch) -> Bytes {
    text_frame(&json!({
        "type": "reset",
        "ch": channel.as_str(),
        "reason": reset.reason.as_str(),
        "since": reset.since.to_string(),
        "missed": reset.missed,
        "epoch": epoch.to_string(),
    }))
}

// ---- Server-Sent Events --------------------------------------------------------

/// A message as an event of a one-channel stream: `id:` (stored messages
/// only), `event:binary` for base64 payloads, `data:`.
pub fn sse_event(msg: &Message) -> Bytes {
    let id = msg.is_stored().then(|| msg.id.to_string());
    SseEvent {
        id: id.as_deref(),
        event: (msg.kind == DataKind::Binary).then_some("binary"),
        data: &payload_text(msg),
        retry: None,
    }
    .to_bytes()
    .expect("ids and event names never contain line breaks")
}

/// A message as the shared part of a multi-channel event: `event:<ch>` (or
/// `<ch>;binary`) and `data:`, without the per-stream `id:` line.
pub fn sse_multi_body(msg: &Message) -> Bytes {
    let name = match msg.kind {
        DataKind::Text => msg.channel.as_str().to_owned(),
        DataKind::Binary => format!("{};binary", msg.channel),
    };
    SseEvent {
        id: None,
        event: Some(&name),
        data: &payload_text(msg),
        retry: None,
    }
    .to_bytes()
    .expect("channel names never contain line breaks")
}

/// An event with only an `id:`: it dispatches nothing, but moves the
/// stream's position (the browser's `Last-Event-ID`). Sent once a
/// subscription that found nothing to replay is in place, so a stream that
/// started "from now" and reconnects before its first message resumes from
/// here rather than from a later "now".
pub fn sse_position(id: &str) -> Bytes {
    debug_assert!(!id.contains(['\r', '\n']));
    Bytes::from(format!("id:{id}\n\n"))
}

/// The `event:reset` of a lost position, with `id` (the stream's position)
/// when no history follows to set it.
pub fn sse_reset(channel: &ChannelName, reset: &Reset, epoch: Epoch, id: Option<&str>) -> Bytes {
    let data = json!({
        "type": "reset",
        "ch": channel.as_str(),
        "reason": reset.reason.as_str(),
        "since": reset.since.to_string(),
        "missed": reset.missed,
        "epoch": epoch.to_string(),
    })
    .to_string();
    SseEvent {
        id,
        event: Some("reset"),
        data: &data,
        retry: None,
    }
    .to_bytes()
    .expect("ids never contain line breaks")
}

// ---- polling ---------------------------------------------------------------------

/// One message in a poll answer.
pub fn poll_message(m: &Message) -> Value {
    let mut v = json!({"id": m.id.to_string(), "ch": m.channel.as_str()});
    set_payload(&mut v, m);
    v
}

/// The `200` body answering held polls with one message: the same for every
/// poll of the channel, so a shard serializes it once per message.
pub fn poll_body(msg: &Message) -> Bytes {
    json_body(&json!({"messages": [poll_message(msg)], "next": msg.id.to_string()}))
}

/// A poll answer of `messages` with cursor `next` (and the reset signal of
/// a lost position).
pub fn poll_answer(messages: &[Arc<Message>], next: MsgId, reset: Option<&Reset>) -> Bytes {
    let list: Vec<Value> = messages.iter().map(|m| poll_message(m)).collect();
    let mut body = json!({"messages": list, "next": next.to_string()});
    if let Some(reset) = reset {
        body["reset"] = json!({
            "reason": reset.reason.as_str(),
            "since": reset.since.to_string(),
            "missed": reset.missed,
        });
    }
    json_body(&body)
}

/// A JSON value as a response body (one line).
pub fn json_body(v: &Value) -> Bytes {
    let mut text = serde_json::to_vec(v).expect("JSON values serialize");
    text.push(b'\n');
    Bytes::from(text)
}
