//! What every shard of a node shares, read-only after start (but for the
//! mail queues, the doorbells' flags and the counters, which are built for
//! concurrent use).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::auth::Tickets;
use crate::bus::Mailboxes;
use crate::capacity::Plan;
use crate::cluster::bridge::Bridge;
use crate::config::Settings;
use crate::hub::Epoch;
use crate::metrics::{self, NodeGauges, ShardMetrics};
use crate::tls::TlsContext;

use super::peers::Peers;

/// See the module docs.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub settings: Settings,
    /// Outstanding tickets (`POST /ticket`), redeemed on any shard.
    pub tickets: Tickets,
    /// Connections by client address, for the per-address limits.
    pub peers: Peers,
    /// The capacity plan.
    pub plan: Plan,
    /// The node's epoch.
    pub epoch: Epoch,
    /// Cross-shard queues and doorbells.
    pub mail: Arc<Mailboxes>,
    /// In a cluster (`--redis`): the thread that talks to Redis.
    pub bridge: Option<Bridge>,
    /// With `--data-dir`: the store's state (whether it failed, counters).
    pub store: Option<crate::store::Health>,
    /// XORed into every client id: 0 on a node of its own; in a cluster a
    /// random value per node, so that anonymous clients of different nodes
    /// (whose connection slots coincide) never share an id in presence.
    pub client_salt: u64,
    /// Every shard's counters, for `/metrics`.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// With `--listen-tls`: the TLS configuration and certificate.
    pub tls: Option<TlsContext>,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: AtomicBool,
    /// While draining: a bit per shard that still has connections. The
    /// shards stop together once it is empty, so none closes its listener
    /// (resetting what waits in its backlog) while others still answer.
    pub draining_shards: AtomicU64,
}

impl Shared {
    /// Whether the node can take traffic: not draining, and in a cluster
    /// connected to Redis's Pub/Sub (without it, messages published on
    /// other nodes would not arrive). What `/readyz` answers.
    pub fn cluster_degraded(&self) -> bool {
        self.bridge.as_ref().is_some_and(|b| !b.health().is_up())
    }

    /// With `--data-dir`: why the store failed, if it did (`/readyz`
    /// answers 503, `/healthz` says `degraded`).
    pub fn store_failed(&self) -> Option<std::sync::Arc<str>> {
        self.store.as_ref().and_then(crate::store::Health::failed)
    }

    /// Whether readers that are behind pin more than `--max-pinned` bytes
    /// node-wide: publishers are refused until they catch up or are closed.
    pub fn overloaded(&self) -> bool {
        let pinned: u64 = (self.metrics.iter())
            .map(|m| m.pinned_bytes.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        pinned > self.settings.max_pinned as u64
    }

    /// Channels the node holds: what every shard owns, as of its last
    /// turn.
    pub fn channels(&self) -> usize {
        (self.metrics.iter())
            .map(|m| m.owned_channels.load(std::sync::atomic::Ordering::Relaxed) as usize)
            .sum()
    }

    /// The node's metrics in Prometheus text format: every shard's
    /// counters (relaxed reads of atomics only their shard writes) and the
    /// node-wide gauges.
    pub fn render_metrics(&self) -> String {
        let node = NodeGauges {
            capacity: self.plan.capacity(),
            mailbox_depth: (0..self.mail.shards())
                .map(|s| self.mail.depth(s) as u64)
                .collect(),
            rss_bytes: uring::sys::rss_bytes(),
            tls_reloads: self.tls.as_ref().map(|t| t.certs.reload_counts()),
        };
        let mut out = metrics::render(&self.metrics, &node);
        if let Some(bridge) = self.bridge.as_ref() {
            bridge.health().render(&mut out);
        }
        if let Some(store) = self.store.as_ref() {
            store.render(&mut out);
        }
        out
    }
}
