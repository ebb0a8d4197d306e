//! `ringcast`: an edge push server on a thread-per-core io_uring runtime.
//!
//! # Brief overview
//! Layers, each importing only the ones below it:
//!
//! ```text
//! node       start-up: limits, listeners, shard threads, signals, banner
//! shard      the driver: one thread per core, its rings and connection
//!            table, timers, acceptor, owner-side mail, fan-out, shutdown;
//!            runs each connection's protocol through a `Context`
//! bus        mail between shards: queues and doorbells
//! transport  sans-io protocol state machines (HTTP, WebSocket, /ws,
//!            SSE, polling) over `Context`
//! cluster    several nodes through Redis: the channel model in Redis
//!            (in progress, issue 12; not wired in yet)
//! store      messages that survive a restart: one fjall database and its
//!            writer thread (issue 14, stage 1; not wired in yet)
//! hub        the channel model: names, ids, history, presence
//! ─────────  auth, config, policy, capacity, metrics (leaves every layer
//!            may use)
//! uring, codec   (crates) io_uring machinery; HTTP/1.1, WebSocket and SSE codecs
//! ```
//!
//! docs/architecture.md follows a connection from accept to delivery and
//! says which thread owns which state; docs/protocol.md is the wire
//! reference.

#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod capacity;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod shard;
pub mod store;
pub mod tls;
pub mod transport;
