//! The protocols clients speak, each over the same shards and hub.
//!
//! * [`http`] — request routing, plain responses, keep-alive.
//! * [`ws`] — WebSocket subscribers (`/ws/{channel}`) and echo (`/echo`).
//! * [`publish`] — `POST /pub/{channel}` and batch publishing.

pub mod http;
pub mod publish;
pub mod ws;
