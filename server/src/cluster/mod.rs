//! Several nodes sharing channels through Redis (`--redis`; docs/cluster.md).
//!
//! * [`bridge`]: the one thread that talks to Redis, between the shards'
//!   queues and the node's mailboxes;
//! * [`connection`]: what it holds — a server's connections, or a Redis
//!   Cluster's;
//! * [`script`]: the channel model in Redis — keys, the atomic publish
//!   script, history reads, presence entries, the Pub/Sub format;
//! * [`sequence`]: gap and duplicate detection for what Pub/Sub delivers;
//! * [`placement`]: which of several Redis servers holds a channel;
//! * [`cursors`]: durable cursors and acks in Redis;
//! * [`persistence`]: what `--fsync` demands of Redis, checked at start.
//!
//! The owner side, which keeps each followed channel in step, is
//! `shard::relay`.

pub mod bridge;
pub mod connection;
pub mod cursors;
pub mod persistence;
pub mod placement;
pub mod script;
pub mod sequence;
