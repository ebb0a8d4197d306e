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

use codec::http::RequestHead;

use crate::hub::MsgId;

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
