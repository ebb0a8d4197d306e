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

pub mod http;
pub mod mux;
pub mod poll;
pub mod publish;
pub mod sse;
pub mod ws;
