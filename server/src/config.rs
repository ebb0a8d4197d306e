//! Configuration: command-line flags, `RINGCAST_*` environment variables,
//! and an optional TOML file, in that order of precedence, over embedded
//! defaults.
//!
//! Every option exists in all three forms: `--ping-interval 30s`,
//! `RINGCAST_PING_INTERVAL=30s`, and `ping-interval = "30s"` in the file.
//! Durations accept `500ms`, `30s`, `2m`… or a bare number of seconds;
//! sizes accept `64KiB`, `1MiB`… or a bare number of bytes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::auth::{PublishKeys, Verifier};
use crate::policy::{HistoryLimits, Namespace, Namespaces, Policy};
use crate::store::Fsync;

/// ringcast — an edge push server on a thread-per-core io_uring runtime.
///
/// Clients subscribe over WebSocket (`/ws/{channel}`, or the multiplexed
/// `/ws`), Server-Sent Events (`/sse/{channel}`) or HTTP polling
/// (`/poll/{channel}`), and resume with the last message id they saw;
/// publishers send `POST /pub/{channel}`. docs/protocol.md is the reference.
/// Every option can also be set as an environment
/// variable (`RINGCAST_` + the option name in capitals with `_`) or in the
/// TOML file given by `--config`; flags win over the environment, which
/// wins over the file.
#[derive(Debug, Parser, Default)]
#[command(name = "ringcast", version, max_term_width = 100)]
pub struct Cli {
    /// Address to listen on; repeat for several. [default: 0.0.0.0:8080]
    #[arg(
        long = "listen",
        env = "RINGCAST_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub listen: Vec<SocketAddr>,

    /// Address to listen on with TLS (https://, wss://); repeat for several.
    /// Needs --tls-cert and --tls-key. With only --listen-tls given, no
    /// plaintext listener is opened.
    #[arg(
        long = "listen-tls",
        env = "RINGCAST_LISTEN_TLS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub listen_tls: Vec<SocketAddr>,

    /// PEM file with the certificate chain, leaf first (e.g. fullchain.pem).
    /// Re-read on SIGHUP: new handshakes get the new certificate, open
    /// connections keep theirs; a bad file is logged and the old one kept.
    #[arg(long, env = "RINGCAST_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC; not encrypted). Re-read on SIGHUP. ECDSA P-256 keys make
    /// handshakes several times cheaper than RSA-2048.
    #[arg(long, env = "RINGCAST_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Do not issue TLS session tickets (every reconnecting client then
    /// makes a full handshake). Tickets hold no state on the node.
    #[arg(long, env = "RINGCAST_NO_TLS_TICKETS")]
    pub no_tls_tickets: bool,

    /// A TLS connection with no traffic either way for this long (up to
    /// twice it; checked once a second at most) drops its expanded
    /// encryption keys, ~1.2 KB, and makes them again (~0.2 µs each) with
    /// its next record. Short, so that the WebSocket pings every
    /// --ping-interval leave a connection awake only briefly. [default: 2s]
    #[arg(long, env = "RINGCAST_TLS_REST_AFTER", value_parser = parse_duration, value_name = "DURATION")]
    pub tls_rest_after: Option<Duration>,

    /// Shard threads, each owning its connections, channels and rings.
    /// [default: one per online CPU]
    #[arg(long, env = "RINGCAST_SHARDS", value_name = "N")]
    pub shards: Option<usize>,

    /// Connections the node must be able to hold. Rings are added (as
    /// connections arrive) until this many fit; each ring holds up to
    /// RLIMIT_NOFILE sockets. [default: 1000000]
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,

    /// Interval between WebSocket pings; a peer silent for two intervals is
    /// closed. [default: 30s]
    #[arg(long, env = "RINGCAST_PING_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_interval: Option<Duration>,

    /// Time allowed for a request head (and a WebSocket handshake) to
    /// arrive. [default: 10s]
    #[arg(long, env = "RINGCAST_HANDSHAKE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Option<Duration>,

    /// Time an idle keep-alive HTTP connection stays open. [default: 60s]
    #[arg(long, env = "RINGCAST_IDLE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,

    /// Time to wait for the peer's close frame after sending ours.
    /// [default: 5s]
    #[arg(long, env = "RINGCAST_CLOSE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub close_timeout: Option<Duration>,

    /// On SIGTERM/SIGINT, time allowed for connections to close before the
    /// rest are dropped. [default: 10s]
    #[arg(long, env = "RINGCAST_DRAIN_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,

    /// Largest message accepted, published or received on a WebSocket
    /// (413 / close 1009 beyond). [default: 1MiB]
    #[arg(long, env = "RINGCAST_MAX_MESSAGE_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub max_message_size: Option<u64>,

    /// Largest batch body for newline-delimited publishes. [default: 16MiB]
    #[arg(long, env = "RINGCAST_MAX_BATCH_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub max_batch_size: Option<u64>,

    /// Bytes queued for one connection beyond which further messages wait
    /// in their channel's history: the connection is then fed from history
    /// at its socket's pace (a burst never closes a reader that keeps
    /// reading). At least one message is always queued. [default: 1MiB]
    #[arg(long, env = "RINGCAST_MAX_OUTBOUND", value_parser = parse_size, value_name = "SIZE")]
    pub max_outbound: Option<u64>,

    /// A subscription whose oldest undelivered message has waited this long
    /// is a slow consumer: a WebSocket is closed with 1008 "lagging: resume
    /// from <id>", an event stream gets `event: reset` and ends. [default: 10s]
    #[arg(long, env = "RINGCAST_MAX_LAG", value_parser = parse_duration, value_name = "DURATION")]
    pub max_lag: Option<Duration>,

    /// Node-wide cap on the bytes of encoded messages kept alive only by
    /// connections' queues (beyond what channel history holds). Over it,
    /// publishes are refused with 503 and Retry-After until readers catch
    /// up or are closed. [default: 256MiB]
    #[arg(long, env = "RINGCAST_MAX_PINNED", value_parser = parse_size, value_name = "SIZE")]
    pub max_pinned: Option<u64>,

    /// Offer permessage-deflate (RFC 7692) to WebSocket clients. A message
    /// is compressed once per shard (with no context kept between messages)
    /// and the same compressed frame goes to every subscriber that
    /// negotiated it; messages clients send are inflated up to
    /// --max-message-size (1009 beyond).
    #[arg(long, env = "RINGCAST_DEFLATE")]
    pub deflate: bool,

    /// With --deflate, messages smaller than this go uncompressed (so are
    /// those that would not shrink). [default: 128B]
    #[arg(long, env = "RINGCAST_DEFLATE_MIN_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub deflate_min_size: Option<u64>,

    /// With --deflate, the zlib compression level, 1 (fastest) to 9
    /// (smallest). [default: 1]
    #[arg(long, env = "RINGCAST_DEFLATE_LEVEL", value_name = "N")]
    pub deflate_level: Option<u32>,

    /// Leave Nagle's algorithm on (no `TCP_NODELAY` on accepted sockets).
    /// With it on, a small frame sent while the previous one is
    /// unacknowledged can wait for a delayed ACK.
    #[arg(long, env = "RINGCAST_NO_TCP_NODELAY")]
    pub no_tcp_nodelay: bool,

    /// `TCP_NOTSENT_LOWAT` on accepted sockets: the kernel takes no more
    /// output for a connection while this much waits for the peer's
    /// receive window. A reader that stops then holds its window plus this
    /// in the kernel, not a send buffer grown to megabytes; what it has
    /// not taken waits in the node, shared. 0 leaves the kernel's default.
    /// [default: 128KiB]
    #[arg(long, env = "RINGCAST_TCP_NOTSENT_LOWAT", value_parser = parse_size, value_name = "SIZE")]
    pub tcp_notsent_lowat: Option<u64>,

    /// Largest HTTP request head (431 beyond). [default: 8KiB]
    #[arg(long, env = "RINGCAST_MAX_HEAD_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub max_head_size: Option<u64>,

    /// Messages kept per channel for resume (0 disables history).
    /// [default: 128]
    #[arg(long, env = "RINGCAST_HISTORY_SIZE", value_name = "N")]
    pub history_size: Option<usize>,

    /// Age after which messages leave history. [default: 5m]
    #[arg(long, env = "RINGCAST_HISTORY_TTL", value_parser = parse_duration, value_name = "DURATION")]
    pub history_ttl: Option<Duration>,

    /// Payload bytes kept per channel: the oldest messages leave history
    /// while it holds more (the newest always stays). 0 means no byte
    /// limit. [default: 0]
    #[arg(long, env = "RINGCAST_HISTORY_BYTES", value_parser = parse_size, value_name = "SIZE")]
    pub history_bytes: Option<u64>,

    /// Interval of comment heartbeats on idle SSE streams (keeps proxies
    /// from closing them). [default: 15s]
    #[arg(long, env = "RINGCAST_SSE_HEARTBEAT", value_parser = parse_duration, value_name = "DURATION")]
    pub sse_heartbeat: Option<Duration>,

    /// Reconnection delay suggested to SSE clients (`retry:`). [default: 3s]
    #[arg(long, env = "RINGCAST_SSE_RETRY", value_parser = parse_duration, value_name = "DURATION")]
    pub sse_retry: Option<Duration>,

    /// Long-poll wait when the request gives no `timeout`. [default: 30s]
    #[arg(long, env = "RINGCAST_POLL_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_timeout: Option<Duration>,

    /// Longest long-poll wait a request may ask for. [default: 120s]
    #[arg(long, env = "RINGCAST_POLL_MAX_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_max_timeout: Option<Duration>,

    /// Most messages in one poll answer. [default: 100]
    #[arg(long, env = "RINGCAST_POLL_BATCH", value_name = "N")]
    pub poll_batch: Option<usize>,

    /// Most channels in one SSE stream (`/sse?ch=a,b,c`). [default: 32]
    #[arg(long, env = "RINGCAST_MAX_STREAM_CHANNELS", value_name = "N")]
    pub max_stream_channels: Option<usize>,

    /// Most connections one client address holds at once (an IPv4
    /// address, or an IPv6 /64); more get 429. [default: 10000]
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<u32>,

    /// New connections one client address may open per second, in bursts
    /// of as many (reconnect storms); more get 429 with `Retry-After`.
    /// [default: 500]
    #[arg(long, env = "RINGCAST_MAX_CONNECTION_RATE_PER_IP", value_name = "N")]
    pub max_connection_rate_per_ip: Option<u32>,

    /// Apply the per-address limits to loopback peers too. Off by
    /// default: on this host they are a local proxy carrying many clients,
    /// or load tools.
    #[arg(long, env = "RINGCAST_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,

    /// Most channels the node holds (a channel lives while it has
    /// subscribers or history); a request that would create another gets
    /// 503 (`channel_limit` on `/ws`). Checked on the shard that takes the
    /// request: at the limit, a channel only another shard holds counts
    /// as new there. [default: 1000000]
    #[arg(long, env = "RINGCAST_MAX_CHANNELS", value_name = "N")]
    pub max_channels: Option<usize>,

    /// Most subscriptions of one multiplexed WebSocket (`/ws`).
    /// [default: 256]
    #[arg(long, env = "RINGCAST_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Publishes one multiplexed WebSocket may make per second, with
    /// bursts of as many (a token bucket); beyond it a publish gets the
    /// `rate_limited` error with `retry_after`. [default: 50]
    #[arg(long, env = "RINGCAST_MAX_PUBLISH_RATE", value_name = "N")]
    pub max_publish_rate: Option<u32>,

    /// WebSocket pings and pongs a client may send per second; more closes
    /// the connection with 1008 (at most 250). [default: 20]
    #[arg(long, env = "RINGCAST_MAX_CONTROL_RATE", value_name = "N")]
    pub max_control_rate: Option<u32>,

    /// Let multiplexed-WebSocket clients publish (`{"type":"publish"}`) on
    /// channels in no namespace (namespaces set their own `publish`).
    /// Off by default: a token's `publish` claim is the finer way.
    #[arg(long, env = "RINGCAST_CLIENT_PUBLISH")]
    pub client_publish: bool,

    /// Disable the `GET /echo` WebSocket echo endpoint.
    #[arg(long, env = "RINGCAST_NO_ECHO")]
    pub no_echo: bool,

    /// Web origins whose pages may use the node, comma-separated
    /// (`https://app.example.com,http://localhost:3000`), or `*` for any.
    /// Requests carrying an `Origin` that is neither listed nor the node's
    /// own get `403` — WebSocket handshakes included; listed origins may
    /// send credentials, `*` may not. [default: *]
    #[arg(long, env = "RINGCAST_ALLOWED_ORIGINS", value_parser = AllowedOrigins::parse, value_name = "LIST")]
    pub allowed_origins: Option<AllowedOrigins>,

    /// A key that publishing over HTTP (`POST /pub…`) must present as
    /// `Authorization: Bearer <key>`; repeat for several (to rotate: add the
    /// new key, move publishers, drop the old). At least 16 characters.
    /// Without any key, publishing is open to whoever reaches the node, so
    /// the node refuses to start on a non-loopback address unless
    /// `--insecure-public-publish` is given.
    #[arg(
        long,
        env = "RINGCAST_PUBLISH_KEY",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub publish_key: Vec<String>,

    /// A file of publish keys, one per line (`#` comments); repeat for
    /// several. Keeps keys out of the process list.
    #[arg(
        long,
        env = "RINGCAST_PUBLISH_KEY_FILE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub publish_key_file: Vec<PathBuf>,

    /// Secret for client tokens signed with HS256 (at least 32 bytes).
    /// With a token key configured, subscribing on any transport needs a
    /// valid token whose `channels` claim covers the channel.
    #[arg(long, env = "RINGCAST_JWT_SECRET", value_name = "SECRET")]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key of client tokens signed with RS256
    /// (an RSA key) or ES256 (an EC P-256 key).
    #[arg(long, env = "RINGCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file (JSON) with the keys of client tokens, each chosen by
    /// the `kid` in a token's header: RSA (RS256), EC P-256 (ES256) or
    /// symmetric (HS256). Read at start; rotate by adding the new key,
    /// restarting, then moving signers to it.
    #[arg(long, env = "RINGCAST_JWT_JWKS", value_name = "FILE")]
    pub jwt_jwks: Option<PathBuf>,

    /// Also accept a client token as `?token=` in the URL. Off by default:
    /// URLs end up in proxy and access logs (prefer tickets, `POST
    /// /ticket`).
    #[arg(long, env = "RINGCAST_ALLOW_TOKEN_IN_QUERY")]
    pub allow_token_in_query: bool,

    /// How long a ticket from `POST /ticket` stays valid (it is good for
    /// one request). [default: 30s]
    #[arg(long, env = "RINGCAST_TICKET_TTL", value_parser = parse_duration, value_name = "DURATION")]
    pub ticket_ttl: Option<Duration>,

    /// Most tickets outstanding on the node; `POST /ticket` gets 503 past
    /// it. [default: 100000]
    #[arg(long, env = "RINGCAST_MAX_TICKETS", value_name = "N")]
    pub max_tickets: Option<usize>,

    /// Share channels with other nodes through Redis:
    /// `redis://host:port[/db]`, or several URLs separated by commas, over
    /// which channels are spread by rendezvous hashing (every node must
    /// list the same servers). See docs/cluster.md.
    #[arg(long, env = "RINGCAST_REDIS", value_name = "URL[,URL…]")]
    pub redis: Option<String>,

    /// Wait for Redis at start instead of exiting when it is unreachable.
    #[arg(long, env = "RINGCAST_REDIS_WAIT")]
    pub redis_wait: bool,

    /// Keep history and the epoch in this directory (created if missing),
    /// so a restart loses neither and clients resume without `reset`. A
    /// node of its own only: in a cluster Redis is the store. See
    /// docs/durability.md. [default: none, history in memory only]
    #[arg(long, env = "RINGCAST_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// When a stored publish is answered: `always` (after an fsync that
    /// holds it; survives power loss), `interval:<ms>` (after the kernel
    /// has it; fsynced every <ms>), `interval` (= interval:100) or `never`
    /// (at once). Needs --data-dir, or --redis: in a cluster `always`
    /// answers once Redis's AOF is fsynced, `interval` needs Redis to keep
    /// an AOF, `never` asks nothing of it (docs/durability.md).
    /// [default: interval:100; in a cluster: none, as `never`]
    #[arg(long, env = "RINGCAST_FSYNC", value_name = "POLICY")]
    pub fsync: Option<Fsync>,

    /// In a cluster: how long a node's presence entries outlive its last
    /// heartbeat (it sends one every third of this), so that the members
    /// of a node that died stop counting. [default: 30s]
    #[arg(long, env = "RINGCAST_PRESENCE_TTL", value_parser = parse_duration, value_name = "DURATION")]
    pub presence_ttl: Option<Duration>,

    /// Let anyone who reaches the node publish over HTTP, even on a
    /// non-loopback address with no `--publish-key`.
    #[arg(long, env = "RINGCAST_INSECURE_PUBLIC_PUBLISH")]
    pub insecure_public_publish: bool,

    /// Serve the chat demo at `GET /` (and let `/ws` clients publish, as
    /// `--client-publish` does).
    #[arg(long, env = "RINGCAST_DEMO")]
    pub demo: bool,

    /// The transports clients may use, comma-separated: `ws` (WebSocket,
    /// `/ws` and `/ws/{channel}`), `sse`, `longpoll`, `poll` (short
    /// polling). A transport left out answers `501` naming it, which
    /// clients take as "fall back to the next". [default: ws,sse,longpoll,poll]
    #[arg(long, env = "RINGCAST_TRANSPORTS", value_parser = Transports::parse, value_name = "LIST")]
    pub transports: Option<Transports>,

    /// Receive buffers per ring (a power of two); shared by all of the
    /// ring's connections. Many small buffers suit what idle connections
    /// receive (pongs, short requests) best. [default: 1024]
    #[arg(long, env = "RINGCAST_RECV_BUFFERS", value_name = "N")]
    pub recv_buffers: Option<u16>,

    /// Size of each receive buffer. [default: 512B]
    #[arg(long, env = "RINGCAST_RECV_BUFFER_SIZE", value_parser = parse_size, value_name = "SIZE")]
    pub recv_buffer_size: Option<u64>,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`,
    /// `ringcast=debug`). [default: info]
    #[arg(long, env = "RINGCAST_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// TOML file with any of the options above (keys as the long option
    /// names, e.g. `ping-interval = "30s"`).
    #[arg(long, env = "RINGCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The same options, as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<Vec<SocketAddr>>,
    listen_tls: Option<Vec<SocketAddr>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    no_tls_tickets: Option<bool>,
    tls_rest_after: Option<String>,
    shards: Option<usize>,
    max_connections: Option<u64>,
    ping_interval: Option<String>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    close_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_message_size: Option<toml::Value>,
    max_batch_size: Option<toml::Value>,
    max_outbound: Option<toml::Value>,
    max_lag: Option<String>,
    max_pinned: Option<toml::Value>,
    no_tcp_nodelay: Option<bool>,
    deflate: Option<bool>,
    deflate_min_size: Option<toml::Value>,
    deflate_level: Option<u32>,
    tcp_notsent_lowat: Option<toml::Value>,
    max_head_size: Option<toml::Value>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    history_bytes: Option<toml::Value>,
    sse_heartbeat: Option<String>,
    sse_retry: Option<String>,
    poll_timeout: Option<String>,
    poll_max_timeout: Option<String>,
    poll_batch: Option<usize>,
    max_stream_channels: Option<usize>,
    max_subscriptions: Option<usize>,
    max_channels: Option<usize>,
    max_connections_per_ip: Option<u32>,
    max_connection_rate_per_ip: Option<u32>,
    limit_loopback: Option<bool>,
    max_publish_rate: Option<u32>,
    max_control_rate: Option<u32>,
    client_publish: Option<bool>,
    no_echo: Option<bool>,
    allowed_origins: Option<String>,
    publish_key: Option<Vec<String>>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    jwt_jwks: Option<PathBuf>,
    allow_token_in_query: Option<bool>,
    ticket_ttl: Option<String>,
    max_tickets: Option<usize>,
    redis: Option<String>,
    redis_wait: Option<bool>,
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    presence_ttl: Option<String>,
    publish_key_file: Option<Vec<PathBuf>>,
    insecure_public_publish: Option<bool>,
    demo: Option<bool>,
    transports: Option<String>,
    recv_buffers: Option<u16>,
    recv_buffer_size: Option<toml::Value>,
    log: Option<String>,
    namespace: Option<Vec<FileNamespace>>,
}

/// A `[[namespace]]` table: a prefix and what differs from the defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileNamespace {
    prefix: String,
    token: Option<bool>,
    publish: Option<bool>,
    presence: Option<bool>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    history_bytes: Option<toml::Value>,
    durable: Option<bool>,
    /// `"<prefix>{sub}"`: each channel belongs to one identity.
    owner: Option<String>,
    /// Keep messages until acknowledged, at most this long (an inbox).
    inbox_ttl: Option<String>,
    /// Acks that move a cursor publish a receipt to `<channel>:receipts`.
    receipts: Option<bool>,
}

/// The resolved configuration the node runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub listen_tls: Vec<SocketAddr>,
    /// The certificate and key of the TLS listeners.
    pub tls: Option<TlsFiles>,
    /// Issue TLS session tickets.
    pub tls_tickets: bool,
    /// Idle time after which a TLS connection drops its expanded keys.
    pub tls_rest_after: Duration,
    /// Shard threads.
    pub shards: usize,
    /// Connections the node must hold.
    pub max_connections: u64,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Request head / handshake timeout.
    pub handshake_timeout: Duration,
    /// Keep-alive idle timeout.
    pub idle_timeout: Duration,
    /// Close handshake timeout.
    pub close_timeout: Duration,
    /// Shutdown drain timeout.
    pub drain_timeout: Duration,
    /// Largest message.
    pub max_message_size: usize,
    /// Largest batch body.
    pub max_batch_size: usize,
    /// Bytes queued per connection before messages wait in history.
    pub max_outbound: usize,
    /// Longest a subscription's oldest undelivered message may wait.
    pub max_lag: Duration,
    /// Node-wide cap on bytes kept alive only by queues.
    pub max_pinned: usize,
    /// permessage-deflate, when offered (`--deflate`).
    pub deflate: Option<DeflateSettings>,
    /// Set `TCP_NODELAY` on accepted sockets.
    pub tcp_nodelay: bool,
    /// `TCP_NOTSENT_LOWAT` for accepted sockets (0: the kernel's default).
    pub tcp_notsent_lowat: usize,
    /// Largest request head.
    pub max_head_size: usize,
    /// History length.
    pub history_size: usize,
    /// History age.
    pub history_ttl: Duration,
    /// History payload bytes per channel (0: no limit).
    pub history_bytes: usize,
    /// SSE heartbeat interval.
    pub sse_heartbeat: Duration,
    /// SSE `retry:` hint.
    pub sse_retry: Duration,
    /// Default long-poll wait.
    pub poll_timeout: Duration,
    /// Longest long-poll wait.
    pub poll_max_timeout: Duration,
    /// Messages per poll answer.
    pub poll_batch: usize,
    /// Channels per SSE stream.
    pub max_stream_channels: usize,
    /// Subscriptions per multiplexed WebSocket.
    pub max_subscriptions: usize,
    /// Most channels on the node.
    pub max_channels: usize,
    /// Most connections per client address.
    pub max_connections_per_ip: u32,
    /// New connections per client address per second.
    pub max_connection_rate_per_ip: u32,
    /// Whether loopback peers are limited too.
    pub limit_loopback: bool,
    /// Publishes per second per multiplexed WebSocket (and its burst).
    pub max_publish_rate: u32,
    /// WebSocket control frames a client may send per second.
    pub max_control_rate: u32,
    /// Multiplexed clients may publish.
    pub client_publish: bool,
    /// `/echo` enabled.
    pub echo: bool,
    /// Origins whose pages may use the node (CORS, WebSocket `Origin`).
    pub allowed_origins: AllowedOrigins,
    /// Keys for publishing over HTTP (none: open).
    pub publish_keys: PublishKeys,
    /// Verifies client tokens (none: tokens are neither needed nor read).
    pub verifier: Option<Arc<Verifier>>,
    /// Channel policy by namespace (`[[namespace]]` in the config file),
    /// over defaults from the options above.
    pub namespaces: Arc<Namespaces>,
    /// `?token=` is accepted.
    pub allow_token_in_query: bool,
    /// How long a ticket stays valid.
    pub ticket_ttl: Duration,
    /// Most tickets outstanding.
    pub max_tickets: usize,
    /// Redis servers shared with the other nodes of a cluster (none: a
    /// node on its own).
    pub redis: Vec<String>,
    /// Wait for Redis at start.
    pub redis_wait: bool,
    /// Where history survives restarts, and how (none: memory only).
    pub store: Option<StoreSettings>,
    /// In a cluster: `--fsync`, which Redis must honour (none: nothing is
    /// asked of Redis's persistence).
    pub redis_fsync: Option<Fsync>,
    /// How long presence entries outlive a node's last heartbeat.
    pub presence_ttl: Duration,
    /// Publishing without keys on a non-loopback address was asked for.
    pub insecure_public_publish: bool,
    /// `GET /` serves the chat demo.
    pub demo: bool,
    /// The transports clients may use.
    pub transports: Transports,
    /// Receive buffers per ring.
    pub recv_buffers: u16,
    /// Receive buffer size.
    pub recv_buffer_size: u32,
    /// Log filter.
    pub log: String,
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn file_duration(v: Option<String>, key: &str) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| parse_duration(&s).map_err(|e| ConfigError(format!("{key}: {e}"))))
        .transpose()
}

fn file_size(v: Option<toml::Value>, key: &str) -> Result<Option<u64>, ConfigError> {
    v.map(|v| match v {
        toml::Value::Integer(n) if n >= 0 => Ok(n as u64),
        toml::Value::String(s) => parse_size(&s).map_err(|e| ConfigError(format!("{key}: {e}"))),
        other => Err(ConfigError(format!("{key}: expected a size, got {other}"))),
    })
    .transpose()
}

/// What `--data-dir` and `--fsync` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The data directory.
    pub dir: PathBuf,
    /// When a stored publish counts as durable.
    pub fsync: Fsync,
}

/// `--data-dir` and `--fsync` from flags or file. Refused: `--fsync`
/// without a directory (it would promise durability the node does not
/// have), and a directory in a cluster (Redis holds a cluster's history;
/// a node-local copy would disagree with it after a failover).
fn store_settings(
    dir: Option<PathBuf>,
    fsync: Option<Fsync>,
    file_fsync: Option<String>,
    cluster: bool,
) -> Result<Option<StoreSettings>, ConfigError> {
    let fsync = fsync_setting(fsync, file_fsync)?;
    match (dir, fsync) {
        (None, None) => Ok(None),
        // In a cluster `--fsync` is Redis's to honour (`Settings::redis_fsync`).
        (None, Some(_)) if cluster => Ok(None),
        (None, Some(f)) => Err(ConfigError(format!(
            "--fsync {f} needs --data-dir, or --redis where it is a demand on Redis \
             (without either history is kept in memory only and nothing is fsynced)"
        ))),
        (Some(_), _) if cluster => Err(ConfigError(
            "--data-dir needs a node of its own; in a cluster (--redis) Redis is the store".into(),
        )),
        (Some(dir), _) if dir.as_os_str().is_empty() => {
            Err(ConfigError("--data-dir must not be empty".into()))
        }
        (Some(dir), f) => Ok(Some(StoreSettings {
            dir,
            fsync: f.unwrap_or(Fsync::Interval(crate::store::DEFAULT_INTERVAL)),
        })),
    }
}

/// `--fsync` from the flag, else the config file.
fn fsync_setting(fsync: Option<Fsync>, file: Option<String>) -> Result<Option<Fsync>, ConfigError> {
    match (fsync, file) {
        (Some(f), _) => Ok(Some(f)),
        (None, Some(s)) => s
            .parse::<Fsync>()
            .map(Some)
            .map_err(|e| ConfigError(format!("fsync in the config file: {e}"))),
        (None, None) => Ok(None),
    }
}

/// The certificate chain and key files of the TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
    pub key: PathBuf,
}

/// What `--deflate` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// Messages smaller than this go uncompressed.
    pub min_size: usize,
    /// zlib's compression level, 1–9.
    pub level: u32,
}

impl Settings {
    /// Whether durable cursors are kept: in the store (`--data-dir`), or
    /// in a cluster in Redis.
    pub fn keeps_cursors(&self) -> bool {
        self.store.is_some() || !self.redis.is_empty()
    }

    /// Resolves flags and environment (already in `cli`) over the file and
    /// the defaults, and checks the result.
    pub fn resolve(cli: Cli) -> Result<Settings, ConfigError> {
        let file: FileConfig = match &cli.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
        };
        let listen_tls = if !cli.listen_tls.is_empty() {
            cli.listen_tls
        } else {
            file.listen_tls.unwrap_or_default()
        };
        let listen = if !cli.listen.is_empty() {
            cli.listen
        } else {
            // The default plaintext listener only when no listener is named.
            file.listen.unwrap_or_else(|| {
                if listen_tls.is_empty() {
                    vec![SocketAddr::from(([0, 0, 0, 0], 8080))]
                } else {
                    Vec::new()
                }
            })
        };
        let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(ConfigError("--tls-key needs --tls-cert".into())),
        };
        let tls_tickets = !(cli.no_tls_tickets || file.no_tls_tickets.unwrap_or(false));
        let poll_max_timeout = cli
            .poll_max_timeout
            .or(file_duration(file.poll_max_timeout, "poll-max-timeout")?)
            .unwrap_or(Duration::from_secs(120));
        let demo = cli.demo || file.demo.unwrap_or(false);
        let file_namespaces = file.namespace.unwrap_or_default();
        let mut s = Settings {
            listen,
            listen_tls,
            tls,
            tls_tickets,
            tls_rest_after: cli
                .tls_rest_after
                .or(file_duration(file.tls_rest_after, "tls-rest-after")?)
                .unwrap_or(Duration::from_secs(2)),
            shards: cli.shards.or(file.shards).unwrap_or_else(online_cpus),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(1_000_000),
            ping_interval: cli
                .ping_interval
                .or(file_duration(file.ping_interval, "ping-interval")?)
                .unwrap_or(Duration::from_secs(30)),
            handshake_timeout: cli
                .handshake_timeout
                .or(file_duration(file.handshake_timeout, "handshake-timeout")?)
                .unwrap_or(Duration::from_secs(10)),
            idle_timeout: cli
                .idle_timeout
                .or(file_duration(file.idle_timeout, "idle-timeout")?)
                .unwrap_or(Duration::from_secs(60)),
            close_timeout: cli
                .close_timeout
                .or(file_duration(file.close_timeout, "close-timeout")?)
                .unwrap_or(Duration::from_secs(5)),
            drain_timeout: cli
                .drain_timeout
                .or(file_duration(file.drain_timeout, "drain-timeout")?)
                .unwrap_or(Duration::from_secs(10)),
            max_message_size: cli
                .max_message_size
                .or(file_size(file.max_message_size, "max-message-size")?)
                .unwrap_or(1 << 20) as usize,
            max_batch_size: cli
                .max_batch_size
                .or(file_size(file.max_batch_size, "max-batch-size")?)
                .unwrap_or(16 << 20) as usize,
            max_outbound: cli
                .max_outbound
                .or(file_size(file.max_outbound, "max-outbound")?)
                .unwrap_or(1 << 20) as usize,
            max_lag: cli
                .max_lag
                .or(file_duration(file.max_lag, "max-lag")?)
                .unwrap_or(Duration::from_secs(10)),
            max_pinned: cli
                .max_pinned
                .or(file_size(file.max_pinned, "max-pinned")?)
                .unwrap_or(256 << 20) as usize,
            deflate: (cli.deflate || file.deflate.unwrap_or(false))
                .then(|| -> Result<_, ConfigError> {
                    Ok(DeflateSettings {
                        min_size: cli
                            .deflate_min_size
                            .or(file_size(
                                file.deflate_min_size.clone(),
                                "deflate-min-size",
                            )?)
                            .unwrap_or(128) as usize,
                        level: cli.deflate_level.or(file.deflate_level).unwrap_or(1),
                    })
                })
                .transpose()?,
            tcp_nodelay: !(cli.no_tcp_nodelay || file.no_tcp_nodelay.unwrap_or(false)),
            tcp_notsent_lowat: cli
                .tcp_notsent_lowat
                .or(file_size(file.tcp_notsent_lowat, "tcp-notsent-lowat")?)
                .unwrap_or(128 << 10) as usize,
            max_head_size: cli
                .max_head_size
                .or(file_size(file.max_head_size, "max-head-size")?)
                .unwrap_or(8 << 10) as usize,
            history_size: cli.history_size.or(file.history_size).unwrap_or(128),
            history_ttl: cli
                .history_ttl
                .or(file_duration(file.history_ttl, "history-ttl")?)
                .unwrap_or(Duration::from_secs(300)),
            history_bytes: cli
                .history_bytes
                .or(file_size(file.history_bytes, "history-bytes")?)
                .unwrap_or(0) as usize,
            sse_heartbeat: cli
                .sse_heartbeat
                .or(file_duration(file.sse_heartbeat, "sse-heartbeat")?)
                .unwrap_or(Duration::from_secs(15)),
            sse_retry: cli
                .sse_retry
                .or(file_duration(file.sse_retry, "sse-retry")?)
                .unwrap_or(Duration::from_secs(3)),
            poll_max_timeout,
            // Lowering only the maximum lowers the default with it.
            poll_timeout: cli
                .poll_timeout
                .or(file_duration(file.poll_timeout, "poll-timeout")?)
                .unwrap_or(Duration::from_secs(30).min(poll_max_timeout)),
            poll_batch: cli.poll_batch.or(file.poll_batch).unwrap_or(100),
            max_stream_channels: cli
                .max_stream_channels
                .or(file.max_stream_channels)
                .unwrap_or(32),
            max_subscriptions: cli
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(256),
            max_channels: cli.max_channels.or(file.max_channels).unwrap_or(1_000_000),
            max_connections_per_ip: (cli.max_connections_per_ip)
                .or(file.max_connections_per_ip)
                .unwrap_or(10_000),
            max_connection_rate_per_ip: (cli.max_connection_rate_per_ip)
                .or(file.max_connection_rate_per_ip)
                .unwrap_or(500),
            limit_loopback: cli.limit_loopback || file.limit_loopback.unwrap_or(false),
            redis: (cli.redis.clone().or(file.redis.clone()).unwrap_or_default())
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
            redis_wait: cli.redis_wait || file.redis_wait.unwrap_or(false),
            redis_fsync: match cli.redis.is_some() || file.redis.is_some() {
                true => fsync_setting(cli.fsync, file.fsync.clone())?,
                false => None,
            },
            store: store_settings(
                cli.data_dir.or(file.data_dir),
                cli.fsync,
                file.fsync,
                cli.redis.is_some() || file.redis.is_some(),
            )?,
            presence_ttl: cli
                .presence_ttl
                .or(file_duration(file.presence_ttl, "presence-ttl")?)
                .unwrap_or(Duration::from_secs(30)),
            max_publish_rate: cli.max_publish_rate.or(file.max_publish_rate).unwrap_or(50),
            max_control_rate: cli.max_control_rate.or(file.max_control_rate).unwrap_or(20),
            client_publish: cli.client_publish || file.client_publish.unwrap_or(false) || demo,
            echo: !(cli.no_echo || file.no_echo.unwrap_or(false)),
            allowed_origins: match (cli.allowed_origins, file.allowed_origins) {
                (Some(o), _) => o,
                (None, Some(s)) => AllowedOrigins::parse(&s)
                    .map_err(|e| ConfigError(format!("allowed-origins in the config file: {e}")))?,
                (None, None) => AllowedOrigins::Any,
            },
            publish_keys: {
                let flags = if cli.publish_key.is_empty() {
                    file.publish_key.unwrap_or_default()
                } else {
                    cli.publish_key
                };
                let files = if cli.publish_key_file.is_empty() {
                    file.publish_key_file.unwrap_or_default()
                } else {
                    cli.publish_key_file
                };
                PublishKeys::load(&flags, &files).map_err(ConfigError)?
            },
            verifier: Verifier::load(
                cli.jwt_secret.or(file.jwt_secret).as_deref(),
                cli.jwt_public_key.or(file.jwt_public_key).as_deref(),
                cli.jwt_jwks.or(file.jwt_jwks).as_deref(),
            )
            .map_err(ConfigError)?
            .map(Arc::new),
            allow_token_in_query: cli.allow_token_in_query
                || file.allow_token_in_query.unwrap_or(false),
            ticket_ttl: cli
                .ticket_ttl
                .or(file_duration(file.ticket_ttl, "ticket-ttl")?)
                .unwrap_or(Duration::from_secs(30)),
            max_tickets: cli.max_tickets.or(file.max_tickets).unwrap_or(100_000),
            insecure_public_publish: cli.insecure_public_publish
                || file.insecure_public_publish.unwrap_or(false),
            demo,
            transports: match (cli.transports, file.transports) {
                (Some(t), _) => t,
                (None, Some(s)) => Transports::parse(&s)
                    .map_err(|e| ConfigError(format!("transports in the config file: {e}")))?,
                (None, None) => Transports::ALL,
            },
            recv_buffers: cli.recv_buffers.or(file.recv_buffers).unwrap_or(1024),
            recv_buffer_size: cli
                .recv_buffer_size
                .or(file_size(file.recv_buffer_size, "recv-buffer-size")?)
                .unwrap_or(512) as u32,
            log: cli.log.or(file.log).unwrap_or_else(|| "info".into()),
            namespaces: Arc::new(Namespaces::uniform(Policy {
                token: false,
                publish: false,
                presence: true,
                history: HistoryLimits {
                    max_messages: 0,
                    max_age: Duration::ZERO,
                    max_bytes: 0,
                    inbox: None,
                },
                durable: false,
                owner: false,
                receipts: false,
            })),
        };
        s.namespaces = Arc::new(s.channel_policy(file_namespaces)?);
        s.check()?;
        Ok(s)
    }

    /// The namespaces of the config file over the defaults the options
    /// give: a token when the node has JWT keys, publishing as
    /// `--client-publish` says, presence visible, `--history-size` and
    /// `--history-ttl`.
    fn channel_policy(&self, file: Vec<FileNamespace>) -> Result<Namespaces, ConfigError> {
        let default = self.default_policy();
        let mut spaces = Vec::with_capacity(file.len());
        for n in file {
            let what = format!("namespace {:?}", n.prefix);
            if n.token == Some(true) && self.verifier.is_none() {
                return Err(ConfigError(format!(
                    "{what} requires a token, but the node has no JWT keys (--jwt-secret or --jwt-public-key)"
                )));
            }
            if n.durable == Some(true) && !self.keeps_cursors() {
                return Err(ConfigError(format!(
                    "{what} has durable = true, which needs --data-dir or --redis (the cursors are kept in the store, or in Redis)"
                )));
            }
            let owner = match &n.owner {
                None => false,
                Some(o) if *o == format!("{}{{sub}}", n.prefix) => true,
                Some(o) => {
                    return Err(ConfigError(format!(
                        "{what}: owner = {o:?} must be the prefix followed by {{sub}} ({:?})",
                        format!("{}{{sub}}", n.prefix)
                    )))
                }
            };
            if owner && self.verifier.is_none() {
                return Err(ConfigError(format!(
                    "{what} sets owner, which needs JWT keys (--jwt-secret or --jwt-public-key): the token's sub names the owner"
                )));
            }
            let inbox = file_duration(n.inbox_ttl, &format!("{what} inbox-ttl"))?;
            if inbox.is_some() && !self.keeps_cursors() {
                return Err(ConfigError(format!(
                    "{what} has inbox-ttl, which needs --data-dir or --redis (an inbox keeps messages until acknowledged, with cursors in the store, or in Redis)"
                )));
            }
            let history = HistoryLimits {
                max_messages: n.history_size.unwrap_or(default.history.max_messages),
                max_age: file_duration(n.history_ttl, &format!("{what} history-ttl"))?
                    .unwrap_or(default.history.max_age),
                max_bytes: file_size(n.history_bytes, &format!("{what} history-bytes"))?
                    .map_or(default.history.max_bytes, |b| b as usize),
                inbox,
            };
            if inbox.is_some() && history.max_messages == 0 {
                return Err(ConfigError(format!(
                    "{what} has inbox-ttl but history-size 0 (an inbox keeps its messages in history)"
                )));
            }
            // An inbox's cursors are what keep its messages.
            let durable = n.durable.unwrap_or(default.durable) || inbox.is_some();
            let receipts = n.receipts.unwrap_or(false);
            if receipts && !durable {
                return Err(ConfigError(format!(
                    "{what} has receipts = true, which needs durable = true (or inbox-ttl): receipts follow the acks of durable cursors"
                )));
            }
            let policy = Policy {
                durable,
                owner,
                receipts,
                token: n.token.unwrap_or(default.token) || owner,
                publish: n.publish.unwrap_or(default.publish),
                presence: n.presence.unwrap_or(default.presence),
                history,
            };
            spaces.push(Namespace {
                prefix: n.prefix.into(),
                policy,
            });
        }
        Namespaces::new(default, spaces).map_err(ConfigError)
    }

    /// What channels in no namespace get.
    pub fn default_policy(&self) -> Policy {
        Policy {
            token: self.verifier.is_some(),
            publish: self.client_publish,
            presence: true,
            history: HistoryLimits {
                max_messages: self.history_size,
                max_age: self.history_ttl,
                max_bytes: self.history_bytes,
                inbox: None,
            },
            durable: false,
            owner: false,
            receipts: false,
        }
    }

    /// Bytes queued for one connection beyond which it is a slow
    /// consumer. Fan-outs stop at `--max-outbound` (the rest waits in
    /// history); a connection's own output (answers, echoes, one replay) is
    /// bounded by what a valid peer can make it send, so only a peer that
    /// sends without reading gets past this.
    pub fn outbound_hard_limit(&self) -> usize {
        2 * self.max_outbound + self.max_message_size + (64 << 10)
    }

    /// Who may publish over HTTP, as the banner says it; `Err` when
    /// anyone could, on an address others can reach, without the operator
    /// having said so (`--insecure-public-publish`). Checked at start-up,
    /// not by [`Settings::resolve`], so tests and tools can build settings
    /// for any address.
    pub fn publishing(&self) -> Result<String, ConfigError> {
        if !self.publish_keys.is_empty() {
            return Ok(format!(
                "HTTP publishing needs a key ({} configured)",
                self.publish_keys.len()
            ));
        }
        let exposed: Vec<String> = (self.listen.iter().chain(&self.listen_tls))
            .filter(|a| !a.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if exposed.is_empty() {
            Ok("HTTP publishing open to local clients (loopback only, no --publish-key)".into())
        } else if self.insecure_public_publish {
            Ok(format!(
                "HTTP publishing OPEN TO ANYONE who reaches {} (--insecure-public-publish)",
                exposed.join(", ")
            ))
        } else {
            Err(ConfigError(format!(
                "no --publish-key: anyone who reaches {} could publish. Give --publish-key or --publish-key-file, listen on a loopback address, or pass --insecure-public-publish",
                exposed.join(", ")
            )))
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.into()));
        if self.shards == 0 || self.shards > 64 {
            return fail("--shards must be between 1 and 64");
        }
        if self.max_connections == 0 {
            return fail("--max-connections must be at least 1");
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return fail("--recv-buffers must be a power of two up to 32768");
        }
        if !(256..=1 << 20).contains(&self.recv_buffer_size) {
            return fail("--recv-buffer-size must be between 256 B and 1 MiB");
        }
        if self.ping_interval < Duration::from_millis(200) {
            return fail("--ping-interval must be at least 200ms");
        }
        if self.max_lag < Duration::from_millis(200) {
            return fail("--max-lag must be at least 200ms");
        }
        for (name, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--close-timeout", self.close_timeout),
            ("--tls-rest-after", self.tls_rest_after),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ConfigError(format!("{name} must be at least 100ms")));
            }
        }
        if self.max_head_size < 256 || self.max_head_size > 1 << 20 {
            return fail("--max-head-size must be between 256 B and 1 MiB");
        }
        if self.max_message_size == 0 || self.max_batch_size == 0 || self.max_outbound == 0 {
            return fail("size limits must be greater than zero");
        }
        if self.sse_heartbeat < Duration::from_millis(100) {
            return fail("--sse-heartbeat must be at least 100ms");
        }
        if self.poll_timeout > self.poll_max_timeout {
            return fail("--poll-timeout must not exceed --poll-max-timeout");
        }
        if self.max_publish_rate == 0 {
            return fail("--max-publish-rate must be at least 1 (leave out --client-publish to forbid publishing)");
        }
        if self.max_connections_per_ip == 0 || self.max_connection_rate_per_ip == 0 {
            return fail(
                "--max-connections-per-ip and --max-connection-rate-per-ip must be at least 1",
            );
        }
        if self.deflate.is_some_and(|d| !(1..=9).contains(&d.level)) {
            return fail("--deflate-level must be between 1 and 9");
        }
        if !(1..=250).contains(&self.max_control_rate) {
            return fail("--max-control-rate must be between 1 and 250");
        }
        if self.poll_batch == 0
            || self.max_stream_channels == 0
            || self.max_subscriptions == 0
            || self.max_channels == 0
        {
            return fail(
                "--poll-batch, --max-stream-channels, --max-subscriptions and --max-channels must be at least 1",
            );
        }
        if self.ticket_ttl < Duration::from_secs(1) || self.max_tickets == 0 {
            return fail("--ticket-ttl must be at least 1s and --max-tickets at least 1");
        }
        if self.presence_ttl < Duration::from_secs(3) {
            return fail("--presence-ttl must be at least 3s (nodes refresh their entries every third of it, at most once a second)");
        }
        if self.listen.is_empty() && self.listen_tls.is_empty() {
            return fail("at least one --listen or --listen-tls address is needed");
        }
        if !self.listen_tls.is_empty() && self.tls.is_none() {
            return fail("--listen-tls needs --tls-cert and --tls-key");
        }
        if self.listen_tls.is_empty() && self.tls.is_some() {
            return fail(
                "--tls-cert and --tls-key need --listen-tls (the address to serve TLS on)",
            );
        }
        Ok(())
    }
}

/// The transports a node offers (`--transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// WebSocket: `/ws/{channel}` and the multiplexed `/ws`.
    pub ws: bool,
    /// Server-Sent Events.
    pub sse: bool,
    /// Long polling (`/poll/…` with a timeout).
    pub longpoll: bool,
    /// Short polling (`/poll/…?timeout=0`).
    pub poll: bool,
}

impl Transports {
    /// Every transport.
    pub const ALL: Transports = Transports {
        ws: true,
        sse: true,
        longpoll: true,
        poll: true,
    };

    /// Parses a comma-separated list of `ws`, `sse`, `longpoll`, `poll`.
    pub fn parse(s: &str) -> Result<Transports, String> {
        let mut t = Transports {
            ws: false,
            sse: false,
            longpoll: false,
            poll: false,
        };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "ws" => t.ws = true,
                "sse" => t.sse = true,
                "longpoll" => t.longpoll = true,
                "poll" => t.poll = true,
                other => {
                    return Err(format!(
                        "unknown transport {other:?}: expected ws, sse, longpoll or poll"
                    ))
                }
            }
        }
        if t == (Transports {
            ws: false,
            sse: false,
            longpoll: false,
            poll: false,
        }) {
            return Err("name at least one transport (ws, sse, longpoll, poll)".into());
        }
        Ok(t)
    }

    /// The list, as `--transports` takes it.
    pub fn names(&self) -> String {
        let all = [
            (self.ws, "ws"),
            (self.sse, "sse"),
            (self.longpoll, "longpoll"),
            (self.poll, "poll"),
        ];
        let on: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        on.join(",")
    }
}

/// The web origins whose pages may use the node (`--allowed-origins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`); browsers then send no credentials.
    Any,
    /// These origins (`scheme://host[:port]`, lowercase), each of which may
    /// send credentials.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses `*` or a comma-separated list of origins. An origin is what a
    /// browser sends in `Origin`: scheme, host and port only, so a path, a
    /// trailing `/` or a missing scheme is refused rather than never
    /// matching.
    pub fn parse(s: &str) -> Result<AllowedOrigins, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let mut list = Vec::new();
        for origin in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if origin == "*" {
                return Err("`*` stands alone: it allows every origin".into());
            }
            let Some((scheme, rest)) = origin.split_once("://") else {
                return Err(format!(
                    "origin {origin:?} has no scheme: write it as the browser sends it, e.g. https://app.example.com"
                ));
            };
            let scheme_ok = !scheme.is_empty()
                && (scheme.bytes()).all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            let host_ok = !rest.is_empty()
                && (rest.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !scheme_ok || !host_ok {
                return Err(format!(
                    "origin {origin:?} is not scheme://host[:port] (no path, no trailing /)"
                ));
            }
            list.push(origin.to_ascii_lowercase());
        }
        if list.is_empty() {
            return Err("name at least one origin, or `*` for any".into());
        }
        Ok(AllowedOrigins::List(list))
    }

    /// As the banner shows it.
    pub fn describe(&self) -> String {
        match self {
            AllowedOrigins::Any => "*".into(),
            AllowedOrigins::List(list) => list.join(","),
        }
    }
}

/// Parses `500ms`, `30s`, `2m`, … or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parses `65536`, `64KiB`, `1MiB`, `1GiB` (also `KB`/`MB`/`GB` as
/// powers of 1000, `K`/`M`/`G` as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional unit"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// The number of CPUs this process may run on.
fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("ringcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(
            &path,
            "ping-interval = \"5s\"\nhistory-size = 7\nmax-outbound = \"2MiB\"\nlisten = [\"127.0.0.1:9000\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "ringcast",
            "--config",
            path.to_str().unwrap(),
            "--history-size",
            "9",
        ])
        .unwrap();
        let s = Settings::resolve(cli).unwrap();
        assert_eq!(s.history_size, 9, "flag wins");
        assert_eq!(
            s.ping_interval,
            Duration::from_secs(5),
            "file wins over default"
        );
        assert_eq!(s.max_outbound, 2 << 20);
        assert_eq!(s.listen, [SocketAddr::from(([127, 0, 0, 1], 9000))]);
        assert_eq!(s.handshake_timeout, Duration::from_secs(10), "default");
        std::fs::write(&path, "no-such-option = 1\n").unwrap();
        let cli = Cli::try_parse_from(["ringcast", "--config", path.to_str().unwrap()]).unwrap();
        let err = Settings::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("no-such-option"), "{err}");
    }

    #[test]
    fn history_bytes_and_inbox_namespaces() {
        let dir = std::env::temp_dir().join(format!("ringcast-inbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        let resolve = |toml: &str, args: &[&str]| {
            std::fs::write(&path, toml).unwrap();
            let mut v = vec!["ringcast", "--config", path.to_str().unwrap()];
            v.extend_from_slice(args);
            Settings::resolve(Cli::try_parse_from(v).unwrap()).map_err(|e| e.to_string())
        };
        const SECRET: &str = "0123456789abcdef0123456789abcdef";
        let inbox = "[[namespace]]\nprefix = \"user:\"\nowner = \"user:{sub}\"\ninbox-ttl = \"30d\"\nhistory-bytes = \"2KiB\"\n";
        let with_store = [
            "--data-dir",
            "/tmp/x",
            "--jwt-secret",
            SECRET,
            "--history-bytes",
            "1KiB",
        ];
        let s = resolve(inbox, &with_store).unwrap();
        assert_eq!(s.default_policy().history.max_bytes, 1024);
        let p = s.namespaces.of("user:bob");
        assert!(
            p.owner && p.token && p.durable,
            "an inbox is durable; owner needs a token"
        );
        assert_eq!(p.history.max_bytes, 2048);
        assert_eq!(p.history.inbox, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(s.namespaces.owner_of("user:bob"), Some("bob"));
        let err = resolve(inbox, &["--jwt-secret", SECRET]).unwrap_err();
        assert!(
            err.contains("inbox-ttl, which needs --data-dir or --redis"),
            "{err}"
        );
        let in_cluster = ["--redis", "redis://127.0.0.1:1", "--jwt-secret", SECRET];
        let s = resolve(inbox, &in_cluster).unwrap();
        let p = s.namespaces.of("user:bob");
        assert_eq!(p.history.inbox, Some(Duration::from_secs(30 * 86400)));
        assert!(p.durable, "an inbox in a cluster is durable too");
        let err = resolve(inbox, &["--data-dir", "/tmp/x"]).unwrap_err();
        assert!(err.contains("sets owner, which needs JWT keys"), "{err}");
        let other = "[[namespace]]\nprefix = \"user:\"\nowner = \"u:{sub}\"\n";
        let err = resolve(other, &with_store).unwrap_err();
        assert!(
            err.contains("must be the prefix followed by {sub}"),
            "{err}"
        );
        let receipts = "[[namespace]]\nprefix = \"room:\"\ndurable = true\nreceipts = true\n";
        let s = resolve(receipts, &with_store).unwrap();
        assert!(s.namespaces.of("room:7").receipts);
        assert_eq!(s.namespaces.receipts_of("room:7:receipts"), Some("room:7"));
        let err = resolve(
            "[[namespace]]\nprefix = \"room:\"\nreceipts = true\n",
            &with_store,
        )
        .unwrap_err();
        assert!(
            err.contains("receipts = true, which needs durable"),
            "{err}"
        );
    }

    #[test]
    fn transports_are_a_list_of_known_names() {
        assert_eq!(
            Transports::parse("ws,sse,longpoll,poll"),
            Ok(Transports::ALL)
        );
        let t = Transports::parse(" sse , poll ").unwrap();
        assert!(!t.ws && t.sse && !t.longpoll && t.poll);
        assert_eq!(t.names(), "sse,poll");
        let err = Transports::parse("ws,carrier-pigeon").unwrap_err();
        assert!(err.contains("carrier-pigeon"), "{err}");
        assert!(Transports::parse(",").is_err(), "at least one");
        let cli = Cli::try_parse_from(["ringcast", "--transports", "ws"]).unwrap();
        assert_eq!(Settings::resolve(cli).unwrap().transports.names(), "ws");
        let cli = Cli::try_parse_from(["ringcast", "--transports", "udp"]).unwrap_err();
        assert!(cli.to_string().contains("unknown transport"), "{cli}");
    }

    #[test]
    fn bad_values_are_refused_with_the_option_name() {
        let cli = Cli::try_parse_from(["ringcast", "--shards", "0"]).unwrap();
        assert!(Settings::resolve(cli)
            .unwrap_err()
            .to_string()
            .contains("--shards"));
        let cli = Cli::try_parse_from(["ringcast", "--recv-buffers", "100"]).unwrap();
        assert!(Settings::resolve(cli)
            .unwrap_err()
            .to_string()
            .contains("--recv-buffers"));
    }

    #[test]
    fn data_dir_and_fsync() {
        let resolve = |args: &[&str]| {
            let mut v = vec!["ringcast"];
            v.extend_from_slice(args);
            Settings::resolve(Cli::try_parse_from(v).unwrap())
        };
        assert_eq!(resolve(&[]).unwrap().store, None, "memory only by default");
        let s = resolve(&["--data-dir", "/tmp/x"]).unwrap().store.unwrap();
        assert_eq!(s.dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.fsync, Fsync::Interval(Duration::from_millis(100)));
        for (arg, want) in [
            ("always", Fsync::Always),
            ("never", Fsync::Never),
            ("interval", Fsync::Interval(Duration::from_millis(100))),
            ("interval:5", Fsync::Interval(Duration::from_millis(5))),
        ] {
            let s = resolve(&["--data-dir", "/tmp/x", "--fsync", arg]).unwrap();
            assert_eq!(s.store.unwrap().fsync, want, "{arg}");
        }
        let err = resolve(&["--fsync", "always"]).unwrap_err().to_string();
        assert!(err.contains("--fsync always needs --data-dir"), "{err}");
        // In a cluster --fsync is Redis's to keep (stage 8), and durable
        // namespaces keep their cursors in Redis.
        let s = resolve(&["--fsync", "always", "--redis", "redis://127.0.0.1"]).unwrap();
        assert_eq!((&s.store, s.redis_fsync), (&None, Some(Fsync::Always)));
        assert!(s.keeps_cursors());
        let s = resolve(&["--redis", "redis://127.0.0.1"]).unwrap();
        assert_eq!(s.redis_fsync, None);
        assert!(resolve(&["--data-dir", "/tmp/x"])
            .unwrap()
            .redis_fsync
            .is_none());
        let err = resolve(&["--data-dir", "/tmp/x", "--redis", "redis://127.0.0.1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in a cluster (--redis) Redis is the store"),
            "{err}"
        );
        let err = Cli::try_parse_from(["ringcast", "--data-dir", "/x", "--fsync", "sometimes"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("always, interval, interval:<ms> or never"),
            "{err}"
        );
        let err = Cli::try_parse_from(["ringcast", "--data-dir", "/x", "--fsync", "interval:0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 1 to 60000"), "{err}");

        let dir =
            std::env::temp_dir().join(format!("ringcast-config-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(&path, "data-dir = \"/tmp/y\"\nfsync = \"always\"\n").unwrap();
        let s = resolve(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            s.store,
            Some(StoreSettings {
                dir: PathBuf::from("/tmp/y"),
                fsync: Fsync::Always
            })
        );
        std::fs::write(&path, "data-dir = \"/tmp/y\"\nfsync = \"weekly\"\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("fsync in the config file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
