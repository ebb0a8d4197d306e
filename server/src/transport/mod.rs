//! The protocols clients speak, each over the same shards and hub.
//!
//! * [`http`] — request routing, plain responses, keep-alive.
//! * [`ws`] — WebSocket subscribers (`/ws/{channel}`) and echo (`/echo`).
//! * [`publish`] — `POST /pub/{channel}` and batch publishing.
//! * [`sse`] — Server-Sent Events, one or several channels per stream.
//! * [`poll`] — long and short HTTP polling.
//! * [`mux`] — the multiplexed JSON protocol on `/ws`.
//!
//! Fan-out to all of them is in `shard::deliver`.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use codec::http::RequestHead;
use codec::ws::DataKind;
use serde_json::Value;

use crate::hub::{Message, MsgId};

/// A payload as text for JSON and event streams: text as is, binary as
/// base64 (marked `"encoding":"base64"` in JSON, `binary` in SSE event
/// names; docs/protocol.md).
pub(crate) fn payload_text(msg: &Message) -> Cow<'_, str> {
    match msg.kind {
        DataKind::Text => String::from_utf8_lossy(&msg.payload),
        DataKind::Binary => base64::engine::general_purpose::STANDARD
            .encode(&msg.payload)
            .into(),
    }
}

/// Sets `data` (and `encoding` for binary) of a JSON message envelope.
pub(crate) fn set_payload(v: &mut Value, msg: &Message) {
    v["data"] = Value::String(payload_text(msg).into_owned());
    if msg.kind == DataKind::Binary {
        v["encoding"] = Value::String("base64".into());
    }
}

/// The payload of a JSON publish request (a batch line or a multiplexed
/// `publish`): `data` (a string, or any JSON value published as its text)
/// or `data_base64` (binary). The error is the reason to answer with.
pub(crate) fn payload_of(
    o: &mut serde_json::Map<String, Value>,
) -> Result<(DataKind, Bytes), String> {
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

/// The `since` query parameter: `Ok(None)` when absent; the error is the
/// reason to answer with.
pub(crate) fn since_param(head: &RequestHead<'_>) -> Result<Option<MsgId>, String> {
    match head.query_param("since") {
        Ok(None) => Ok(None),
        Ok(Some(s)) => s
            .parse::<MsgId>()
            .map(Some)
            .map_err(|e| format!("invalid since: {e}")),
        Err(e) => Err(format!("invalid since: {e}")),
    }
}

pub mod http;
pub mod mux;
pub mod poll;
pub mod publish;
pub mod sse;
pub mod ws;
