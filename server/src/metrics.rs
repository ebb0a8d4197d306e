//! Counters and gauges for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer (relaxed
//! atomic adds on the shard's own cache lines); whichever shard serves
//! `/metrics` reads all of them. Nothing on the data path waits for a
//! reader.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an HTTP request or upgrade was refused; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Refusal {
    /// Malformed or oversized request head.
    BadRequest = 0,
    /// WebSocket handshake failed validation.
    Handshake,
    /// Channel name invalid.
    BadChannel,
    /// `since` invalid.
    BadSince,
    /// Unknown path.
    NotFound,
    /// Body over the limit.
    TooLarge,
    /// Request head did not arrive in time.
    Timeout,
    /// A publish while readers that are behind pin more than
    /// `--max-pinned`.
    Overloaded,
    /// A request while the node drains.
    Draining,
    /// A transport turned off with `--transports`.
    TransportOff,
    /// An `Origin` that `--allowed-origins` does not list.
    Origin,
    /// No credentials where they are needed (`401`).
    Unauthorized,
    /// Credentials that are not valid (`403`).
    Forbidden,
    /// Over a per-connection rate (`/ws` publishes, control frames).
    RateLimited,
    /// A new channel while the node holds `--max-channels`.
    ChannelLimit,
    /// A connection from an address that holds `--max-connections-per-ip`.
    PeerConnections,
    /// A connection from an address over `--max-connection-rate-per-ip`.
    PeerRate,
    /// A publish the cluster could not store (Redis unavailable).
    Unavailable,
}

/// Every refusal reason with its label.
pub const REFUSALS: [(Refusal, &str); 18] = [
    (Refusal::BadRequest, "bad_request"),
    (Refusal::Handshake, "handshake"),
    (Refusal::BadChannel, "bad_channel"),
    (Refusal::BadSince, "bad_since"),
    (Refusal::NotFound, "not_found"),
    (Refusal::TooLarge, "too_large"),
    (Refusal::Timeout, "timeout"),
    (Refusal::Overloaded, "overloaded"),
    (Refusal::Draining, "draining"),
    (Refusal::TransportOff, "transport_off"),
    (Refusal::Origin, "origin"),
    (Refusal::Unauthorized, "unauthorized"),
    (Refusal::Forbidden, "forbidden"),
    (Refusal::RateLimited, "rate_limited"),
    (Refusal::ChannelLimit, "channel_limit"),
    (Refusal::PeerConnections, "ip_connections"),
    (Refusal::PeerRate, "ip_rate"),
    (Refusal::Unavailable, "unavailable"),
];

/// Transports, for the connection gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Transport {
    /// Plain HTTP (before an upgrade, publishers, polls).
    Http = 0,
    /// WebSocket subscribers.
    WebSocket,
    /// WebSocket echo.
    Echo,
    /// Multiplexed WebSocket protocol.
    Multiplexed,
    /// Server-Sent Events streams.
    Sse,
    /// Long polls being held.
    LongPoll,
}

const TRANSPORTS: [(Transport, &str); 6] = [
    (Transport::Http, "http"),
    (Transport::WebSocket, "websocket"),
    (Transport::Echo, "echo"),
    (Transport::Multiplexed, "websocket_mux"),
    (Transport::Sse, "sse"),
    (Transport::LongPoll, "longpoll"),
];

/// One shard's counters. Written only by that shard, and aligned to its
/// own cache lines: two shards' counters sharing a line would make every
/// delivery on one shard invalidate the other's cache (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Open connections by transport.
    pub connections: [AtomicU64; 6],
    /// Connections accepted.
    pub accepts: AtomicU64,
    /// Accept failures (including a full ring table).
    pub accept_errors: AtomicU64,
    /// Accepts re-armed by the listener self-check (connections waited on
    /// a listener that accepted none for a second).
    pub accept_rearms: AtomicU64,
    /// Refused requests by reason.
    pub refused: [AtomicU64; REFUSALS.len()],
    /// WebSocket handshakes completed.
    pub upgrades: AtomicU64,
    /// Messages published on channels this shard owns.
    pub published: AtomicU64,
    /// Messages handed to the kernel for a subscriber.
    pub deliveries: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Connections closed for sending without reading (their own output
    /// over the hard limit).
    pub slow_consumers: AtomicU64,
    /// Subscriptions that fell behind their socket (and caught up from
    /// history, or were closed for lagging).
    pub fell_behind: AtomicU64,
    /// Readers closed because a message waited longer than `--max-lag`.
    pub lagging_closes: AtomicU64,
    /// Live-only messages (ephemeral, presence) a subscription that was
    /// behind did not get.
    pub live_only_skipped: AtomicU64,
    /// Bytes of messages this shard keeps for subscriptions that are
    /// behind (`hub::backlog`).
    pub pinned_bytes: AtomicU64,
    /// Notices (a 1008 close frame, an `event: reset`) to readers closed
    /// as lagging or slow that the kernel took before the socket closed.
    pub close_notices_sent: AtomicU64,
    /// Such notices still queued when the socket closed (the peer's
    /// receive buffer stayed full for `--close-timeout`).
    pub close_notices_lost: AtomicU64,
    /// Connections closed for not answering pings.
    pub ping_timeouts: AtomicU64,
    /// WebSocket protocol violations by peers.
    pub protocol_errors: AtomicU64,
    /// Messages evicted from history.
    pub history_evictions: AtomicU64,
    /// Channels known to this shard.
    pub channels: AtomicU64,
    /// Channels this shard owns (updated every turn; their sum is checked
    /// against `--max-channels`).
    pub owned_channels: AtomicU64,
    /// Rings created (each holds up to `slots` connections).
    pub rings: AtomicU64,
    /// Receives that found no free buffer and were re-armed.
    pub recv_nobufs: AtomicU64,
    /// Connections whose reading paused because they pipelined requests
    /// further ahead of their answers than one request's worth.
    pub reads_paused: AtomicU64,
    /// permessage-deflate: messages compressed (once per shard and
    /// window for a broadcast), whether they went compressed or not.
    pub deflate_messages: AtomicU64,
    /// Of those, the ones that did not shrink and went uncompressed.
    pub deflate_not_smaller: AtomicU64,
    /// Payload bytes of the messages that went compressed.
    pub deflate_bytes_in: AtomicU64,
    /// Their bytes once compressed.
    pub deflate_bytes_out: AtomicU64,
    /// Compressed messages from clients inflated.
    pub inflated_messages: AtomicU64,
    /// TLS handshakes completed: index 2 × (TLS 1.2) + (resumed).
    pub tls_handshakes: [AtomicU64; 4],
    /// Idle TLS connections that dropped their expanded keys.
    pub tls_rests: AtomicU64,
    /// TLS connections that failed before or while speaking TLS, by
    /// [`TlsFailure`].
    pub tls_failures: [AtomicU64; TLS_FAILURES.len()],
}

/// Why a TLS connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TlsFailure {
    /// It spoke plain HTTP to a TLS port (answered 400).
    PlainHttp,
    /// A handshake or record error (rustls sent its alert).
    Alert,
    /// More bytes ahead than a record and a receive.
    TooLarge,
    /// It closed, or was closed at --handshake-timeout, mid-handshake.
    Incomplete,
}

/// Every [`TlsFailure`] with its label.
pub const TLS_FAILURES: [(TlsFailure, &str); 4] = [
    (TlsFailure::PlainHttp, "plain_http"),
    (TlsFailure::Alert, "alert"),
    (TlsFailure::TooLarge, "too_large"),
    (TlsFailure::Incomplete, "incomplete"),
];

impl ShardMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Counts a completed TLS handshake.
    pub fn tls_handshake(&self, tls12: bool, resumed: bool) {
        let i = 2 * usize::from(tls12) + usize::from(resumed);
        ShardMetrics::add(&self.tls_handshakes[i], 1);
    }

    /// Every refusal counter, in [`REFUSALS`] order.
    pub fn refusals(&self) -> [u64; REFUSALS.len()] {
        std::array::from_fn(|i| self.refused[REFUSALS[i].0 as usize].load(Ordering::Relaxed))
    }

    /// One more open connection of `t`.
    pub fn open(&self, t: Transport) {
        self.connections[t as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer open connection of `t`.
    pub fn close(&self, t: Transport) {
        self.connections[t as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a refusal.
    pub fn refuse(&self, r: Refusal) {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Node-wide values that are not per-shard counters.
#[derive(Debug)]
pub struct NodeGauges {
    /// Connections the node can hold.
    pub capacity: u64,
    /// Mail waiting per shard.
    pub mailbox_depth: Vec<u64>,
    /// Resident set size.
    pub rss_bytes: Option<u64>,
    /// With TLS: certificate reloads that worked and that failed.
    pub tls_reloads: Option<(u64, u64)>,
}

/// Renders every shard's metrics.
pub fn render(shards: &[std::sync::Arc<ShardMetrics>], node: &NodeGauges) -> String {
    let mut out = String::with_capacity(4096);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);

    let _ = writeln!(
        out,
        "# HELP ringcast_connections Open connections.\n# TYPE ringcast_connections gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        for (t, name) in TRANSPORTS {
            let _ = writeln!(
                out,
                "ringcast_connections{{shard=\"{i}\",transport=\"{name}\"}} {}",
                get(&m.connections[t as usize])
            );
        }
    }
    type Field = fn(&ShardMetrics) -> &AtomicU64;
    let counters: [(&str, &str, Field); 27] = [
        ("accepts_total", "Connections accepted.", |m| &m.accepts),
        ("accept_errors_total", "Accept failures.", |m| {
            &m.accept_errors
        }),
        (
            "accept_rearms_total",
            "Accepts re-armed because connections waited on a listener that accepted none for a second.",
            |m| &m.accept_rearms,
        ),
        ("upgrades_total", "WebSocket handshakes completed.", |m| {
            &m.upgrades
        }),
        (
            "messages_published_total",
            "Messages published on channels the shard owns.",
            |m| &m.published,
        ),
        (
            "deliveries_total",
            "Messages handed to the kernel for subscribers.",
            |m| &m.deliveries,
        ),
        ("bytes_in_total", "Bytes received.", |m| &m.bytes_in),
        ("bytes_out_total", "Bytes sent.", |m| &m.bytes_out),
        (
            "slow_consumer_closes_total",
            "Connections closed for sending without reading (their own output over the hard limit).",
            |m| &m.slow_consumers,
        ),
        (
            "fell_behind_total",
            "Times a subscription's connection had a full window and its messages waited in history.",
            |m| &m.fell_behind,
        ),
        (
            "lagging_closes_total",
            "Readers closed because their oldest undelivered message waited longer than --max-lag.",
            |m| &m.lagging_closes,
        ),
        (
            "live_only_skipped_total",
            "Live-only messages (ephemeral, presence) not sent to subscriptions that were behind.",
            |m| &m.live_only_skipped,
        ),
        (
            "close_notices_sent_total",
            "Close frames or resets to readers closed as lagging or slow that went out before the socket closed.",
            |m| &m.close_notices_sent,
        ),
        (
            "close_notices_lost_total",
            "Close frames or resets to readers closed as lagging or slow still queued when the socket closed.",
            |m| &m.close_notices_lost,
        ),
        (
            "pinned_bytes",
            "Bytes of messages kept for subscriptions that are behind (at most what they add to history); publishes are refused over --max-pinned.",
            |m| &m.pinned_bytes,
        ),
        (
            "ping_timeouts_total",
            "Connections closed for not answering pings.",
            |m| &m.ping_timeouts,
        ),
        (
            "protocol_errors_total",
            "WebSocket protocol violations by peers.",
            |m| &m.protocol_errors,
        ),
        (
            "history_evictions_total",
            "Messages evicted from channel history.",
            |m| &m.history_evictions,
        ),
        (
            "deflate_messages_total",
            "Messages compressed for permessage-deflate (a broadcast once per shard), sent compressed or not.",
            |m| &m.deflate_messages,
        ),
        (
            "deflate_not_smaller_total",
            "Messages compressed for permessage-deflate that did not shrink and went uncompressed.",
            |m| &m.deflate_not_smaller,
        ),
        (
            "deflate_bytes_in_total",
            "Bytes of the messages sent compressed, before compression.",
            |m| &m.deflate_bytes_in,
        ),
        (
            "deflate_bytes_out_total",
            "Bytes of the messages sent compressed, after compression.",
            |m| &m.deflate_bytes_out,
        ),
        (
            "inflated_messages_total",
            "Compressed messages from clients inflated.",
            |m| &m.inflated_messages,
        ),
        (
            "recv_nobufs_total",
            "Receives that found no free buffer.",
            |m| &m.recv_nobufs,
        ),
        (
            "reads_paused_total",
            "Times a connection's reading paused: it pipelined more than one request ahead of its answers, and TCP flow control held the rest back.",
            |m| &m.reads_paused,
        ),
        ("rings", "io_uring instances created.", |m| &m.rings),
        (
            "owned_channels",
            "Channels the shard owns (ids, history); their sum is the node's channels, held to --max-channels.",
            |m| &m.owned_channels,
        ),
    ];
    for (name, help, field) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP ringcast_{name} {help}\n# TYPE ringcast_{name} {kind}"
        );
        for (i, m) in shards.iter().enumerate() {
            let _ = writeln!(out, "ringcast_{name}{{shard=\"{i}\"}} {}", get(field(m)));
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringcast_channels Channels known to each shard.\n# TYPE ringcast_channels gauge"
    );
    for (i, m) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringcast_channels{{shard=\"{i}\"}} {}",
            get(&m.channels)
        );
    }
    let _ = writeln!(out, "# HELP ringcast_requests_refused_total Requests and handshakes refused, by reason.\n# TYPE ringcast_requests_refused_total counter");
    for (i, m) in shards.iter().enumerate() {
        for (r, name) in REFUSALS {
            let _ = writeln!(
                out,
                "ringcast_requests_refused_total{{shard=\"{i}\",reason=\"{name}\"}} {}",
                get(&m.refused[r as usize])
            );
        }
    }
    let _ = writeln!(out, "# HELP ringcast_tls_handshakes_total TLS handshakes completed.\n# TYPE ringcast_tls_handshakes_total counter");
    for (i, m) in shards.iter().enumerate() {
        for (j, (version, resumed)) in
            [("1.3", false), ("1.3", true), ("1.2", false), ("1.2", true)]
                .into_iter()
                .enumerate()
        {
            let _ = writeln!(
                out,
                "ringcast_tls_handshakes_total{{shard=\"{i}\",version=\"{version}\",resumed=\"{resumed}\"}} {}",
                get(&m.tls_handshakes[j])
            );
        }
    }
    let _ = writeln!(out, "# HELP ringcast_tls_key_rests_total Idle TLS connections that dropped their expanded keys (--tls-rest-after).\n# TYPE ringcast_tls_key_rests_total counter");
    for (i, m) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringcast_tls_key_rests_total{{shard=\"{i}\"}} {}",
            get(&m.tls_rests)
        );
    }
    let _ = writeln!(out, "# HELP ringcast_tls_failures_total TLS connections that failed, by reason.\n# TYPE ringcast_tls_failures_total counter");
    for (i, m) in shards.iter().enumerate() {
        for (f, name) in TLS_FAILURES {
            let _ = writeln!(
                out,
                "ringcast_tls_failures_total{{shard=\"{i}\",reason=\"{name}\"}} {}",
                get(&m.tls_failures[f as usize])
            );
        }
    }
    if let Some((ok, failed)) = node.tls_reloads {
        let _ = writeln!(out, "# HELP ringcast_tls_cert_reloads_total Certificate reloads on SIGHUP, by result.\n# TYPE ringcast_tls_cert_reloads_total counter\nringcast_tls_cert_reloads_total{{result=\"ok\"}} {ok}\nringcast_tls_cert_reloads_total{{result=\"error\"}} {failed}");
    }
    let _ = writeln!(out, "# HELP ringcast_mailbox_depth Cross-shard items waiting for each shard.\n# TYPE ringcast_mailbox_depth gauge");
    for (i, d) in node.mailbox_depth.iter().enumerate() {
        let _ = writeln!(out, "ringcast_mailbox_depth{{shard=\"{i}\"}} {d}");
    }
    let _ = writeln!(out, "# HELP ringcast_capacity_connections Connections the node can hold.\n# TYPE ringcast_capacity_connections gauge\nringcast_capacity_connections {}", node.capacity);
    if let Some(rss) = node.rss_bytes {
        let _ = writeln!(out, "# HELP ringcast_resident_memory_bytes Resident set size.\n# TYPE ringcast_resident_memory_bytes gauge\nringcast_resident_memory_bytes {rss}");
    }
    out
}

/// A Prometheus histogram of durations, with fixed buckets from 100 µs to
/// 10 s. Several threads may observe (relaxed adds, one per bucket
/// reached); it is for events counted in thousands per second, not per
/// delivery.
#[derive(Debug)]
pub struct Histogram {
    /// Observations at or under each bound (non-cumulative; cumulated when
    /// rendered), then over the last.
    buckets: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// The upper bounds of [`Histogram`]'s buckets, µs.
const LATENCY_BOUNDS_MICROS: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_MICROS.partition_point(|&b| b < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Writes the histogram's series (`_bucket`, `_sum`, `_count`) with
    /// `labels` (e.g. `origin="local"`, or empty). The caller writes `HELP`
    /// and `TYPE` once per name.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match LATENCY_BOUNDS_MICROS.get(i) {
                Some(&b) => format!("{}", b as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {cumulative}"
        );
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "origin=\"local\"");
        assert!(
            out.contains("x_seconds_bucket{origin=\"local\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{origin=\"local\",le=\"0.00025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{origin=\"local\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{origin=\"local\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{origin=\"local\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{origin=\"local\"} 60.000201\n"),
            "{out}"
        );
    }
}
