//! The protocols clients speak, as sans-io state machines.
//!
//! Every connection's protocol is one [`Protocol`] value: an HTTP/1.1
//! connection between requests, a WebSocket (subscriber, echo or the
//! multiplexed `/ws`), an event stream, a held poll. A state is driven by
//! calls that bring bytes, time and deliveries in, and acts only through a
//! [`Context`] — queue output, (un)subscribe in the hub, set its deadline,
//! send requests to channel owners. It never sees a socket, a ring, a clock
//! or the shard that drives it, so the tests drive it with byte slices and
//! a virtual clock (`testing`).
//!
//! * [`context`] — the `Context` trait, ticks, how a connection ends.
//! * [`protocol`] — the `Protocol` enum: event routing and transitions.
//! * [`http`] — request heads, routing, plain answers, publishing,
//!   acks, pipelining, keep-alive; [`response`] writes answers,
//!   [`publish`] reads publish requests, [`ack`] reads acks and durable
//!   subscriptions and names their refusals, [`params`] reads shared
//!   query parameters, [`cors`] checks `Origin` and grants CORS,
//!   [`assets`] holds the built-in client and demo.
//! * [`ws`] — the WebSocket link and its apps; [`mux`] the `/ws` protocol.
//! * [`sse`] — Server-Sent Events; [`poll`] — long and short polling.
//! * [`framing`] — how a message looks on each transport, encoded once per
//!   message and shard; [`deflate`] compresses it for WebSockets that
//!   negotiated permessage-deflate.
//! * `testing` (tests only) — an in-memory node driving these states as
//!   the shard does, with a virtual clock and client helpers; `tests` are
//!   the protocol tests built on it.
//!
//! Imports point down this list's reverse: `protocol` knows every state,
//! `http` knows the requests it routes to, and no state knows `protocol`.

pub mod ack;
pub mod assets;
pub mod context;
pub mod cors;
pub mod deflate;
pub mod framing;
pub mod http;
pub mod mux;
pub mod params;
pub mod poll;
pub mod protocol;
pub mod publish;
pub mod response;
pub mod sse;
pub mod ws;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use context::{tick_at, ticks, waiting_since, Context, Finish, Subscribe, Tick, TICK};
pub use framing::{Encodings, Format};
pub use protocol::Protocol;
