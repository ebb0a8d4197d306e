//! Several nodes sharing channels through Redis (issue 12, in progress).
//!
//! Built so far: [`script`], the channel model in Redis — keys, the atomic
//! publish script, history reads and the Pub/Sub format — tested against a
//! real `redis-server`; [`sequence`], gap and duplicate detection for what
//! Pub/Sub delivers; [`placement`], which of several Redis servers holds a
//! channel (rendezvous hashing). Still to come (docs/cluster.md): the
//! bridge thread that owns the Redis connections and talks to the shards
//! through the bus, `--redis`, gap repair, presence, health.

pub mod bridge;
pub mod connection;
pub mod placement;
pub mod script;
pub mod sequence;
