//! Command-line interface. The `idle` and `fanout` options are fixed by
//! issue 4 (scripts depend on them); the rest follows the same style.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::payload::Payload;
use crate::tls::{Switch, TlsVersion};
use crate::transport::Kind;

/// ringcast-load — how many clients can one push-server node hold, at what
/// latency, at what cost, on which transport.
///
/// Opens hundreds of thousands of WebSocket, SSE or HTTP-polling clients
/// from one process (io_uring direct descriptors, so the open-files limit
/// does not apply), publishes marked messages on a fixed schedule, and
/// checks every delivery: latency from the intended send time, loss,
/// duplicates and order. Targets are URL templates with `{ch}` for the
/// channel, so any push server can be measured.
#[derive(Debug, Parser)]
#[command(name = "ringcast-load", version, max_term_width = 100)]
pub struct Cli {
    /// Scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Ramp N connections, hold them, report connect times, errors and memory per connection.
    Idle(IdleArgs),
    /// S subscribers on K channels; publish M messages at rate R; latency and delivery check.
    Fanout(FanoutArgs),
    /// Raise the publish rate step by step until latency or loss crosses a limit.
    Throughput(ThroughputArgs),
    /// Subscribers disconnect and resume while messages flow; nothing may be lost or duplicated.
    Churn(ChurnArgs),
    /// The same fan-out over every transport; one comparison table.
    Compare(CompareArgs),
}

/// Options every scenario has.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Print one JSON document on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write a Markdown report with SVG plots into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Exit with status 3 when a threshold is crossed, e.g. `p99>50ms`,
    /// `loss>0`, `failed>0`, `connect_p99>1s`. Repeatable.
    #[arg(long = "fail-if", value_name = "EXPR")]
    pub fail_if: Vec<String>,
    /// Server process to sample (CPU, RSS); repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pid: Vec<i32>,
    /// Prometheus endpoint of the server, e.g. http://127.0.0.1:8080/metrics.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// Source addresses to bind: `auto`, `none`, a count N (127.0.0.2…), `A-B` or `A,B`.
    #[arg(long, default_value = "auto", value_name = "SPEC")]
    pub source_ips: String,
    /// Destination addresses (server must listen on 0.0.0.0): `none` or a count N (127.0.0.1…).
    #[arg(long, default_value = "none", value_name = "SPEC")]
    pub dest_ips: String,
    /// Several nodes of one cluster, `HOST:PORT,HOST:PORT,…` (IPv4):
    /// subscribers connect to them in turn (connection i to node i mod n),
    /// whatever address the URL names; publishes and `--metrics-url` still
    /// go where they say. Not with `--dest-ips`.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    pub nodes: Vec<std::net::SocketAddrV4>,
    /// Connections per io_uring (at most the hard open-files limit).
    #[arg(long, default_value_t = 19_000, value_name = "N")]
    pub per_ring: u32,
    /// Connection attempts in flight per ring.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub inflight: u32,
    /// Time allowed from socket creation to a live subscription.
    #[arg(long, default_value = "10s", value_parser = parse_secs, value_name = "DURATION")]
    pub connect_timeout: f64,
    /// Channel names are this prefix plus a number.
    #[arg(long, default_value = "lt", value_name = "PREFIX")]
    pub channel_prefix: String,
    /// Long-poll timeout asked of the server.
    #[arg(long, default_value = "30s", value_parser = parse_secs, value_name = "DURATION")]
    pub poll_timeout: f64,
    /// Short-poll interval.
    #[arg(long, default_value = "1s", value_parser = parse_secs, value_name = "DURATION")]
    pub poll_interval: f64,
    /// Query parameter that resumes a subscription.
    #[arg(long, default_value = "since", value_name = "NAME")]
    pub resume_param: String,
    /// A header every subscriber request carries (WebSocket handshakes,
    /// event streams, polls), e.g. `Authorization: Bearer <jwt>`.
    /// Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<String>,
    /// Give up on a run after this long, whatever it is doing.
    #[arg(long, default_value = "15m", value_parser = parse_secs, value_name = "DURATION")]
    pub max_time: f64,
    /// WebSocket subscribers offer permessage-deflate (RFC 7692) and
    /// inflate what arrives compressed; the summary counts the
    /// connections that agreed and the messages that came compressed. A
    /// server that declines is measured uncompressed. Other transports
    /// are unaffected.
    #[arg(long)]
    pub deflate: bool,
    /// PEM file of the certificate authority (or authorities) to trust for
    /// wss:// and https:// targets: the server's certificate must chain to
    /// one of them and name the URL's host (or --tls-server-name). A TLS
    /// target needs this or --insecure.
    #[arg(long, value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// DANGEROUS: accept ANY server certificate, for any name, without
    /// verifying it — anyone between the harness and the server could read
    /// and change the traffic. Only for measuring a test server with a
    /// throwaway certificate on a network you control. (The server must
    /// still prove it holds the key of the certificate it sends: the
    /// handshake's signature is checked, so the server's work per handshake
    /// is unchanged.)
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// TLS session resumption: `on` keeps the tickets (TLS 1.3) and sessions
    /// (TLS 1.2) servers hand out and offers them when a connection opens
    /// again (churn) or later in a ramp; `off` makes every handshake a full
    /// one.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub tls_resume: Switch,
    /// Offer only this TLS version (default: 1.3 and 1.2; the server chooses).
    #[arg(long, value_enum, value_name = "1.2|1.3")]
    pub tls_version: Option<TlsVersion>,
    /// The TLS server name (SNI, and the name the certificate must carry)
    /// when it is not the URL's host: URLs name IPv4 addresses (no DNS).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

/// `idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Kind,
    /// Subscriber URL template, e.g. 'ws://127.0.0.1:8080/ws/{ch}'.
    #[arg(long, value_name = "TEMPLATE", required_unless_present = "mix")]
    pub url: Option<String>,
    /// A mix of transports by percentage instead of --transport/--url, e.g.
    /// `ws=70,sse=20,longpoll=10`; URLs derive from --base-url.
    #[arg(long, value_name = "SPEC", conflicts_with = "url")]
    pub mix: Option<String>,
    /// Server base URL for --mix (/ws/{ch}, /sse/{ch}, /poll/{ch}).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub base_url: String,
    /// Connections to open.
    #[arg(long, value_name = "N")]
    pub conns: u64,
    /// How long to hold them once all are up.
    #[arg(long, default_value = "30s", value_parser = parse_secs, value_name = "DURATION")]
    pub hold: f64,
    /// Channels to spread over.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub channels: u32,
    /// Connection attempts per second (default: as fast as the in-flight limit allows).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// Publishing options shared by fan-out style scenarios.
#[derive(Debug, Args, Clone)]
pub struct PubArgs {
    /// Publish URL template, e.g. 'http://127.0.0.1:8080/pub/{ch}'.
    #[arg(long, value_name = "TEMPLATE")]
    pub pub_url: String,
    /// Payload bytes per message (at least the ~40-byte marker).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// What a message carries: `pad`, the marker padded with `x` to
    /// --size; `chat`, JSON chat messages of 200–2,000 bytes of words
    /// (uniformly spread; --size is ignored) that compress like real text.
    #[arg(long, value_enum, default_value = "pad")]
    pub payload: Payload,
    /// Seed of the `chat` messages: the same seed, the same messages.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub payload_seed: u64,
    /// Publisher connections (pipelined).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pub_conns: usize,
    /// Wait after the last message for late deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_secs, value_name = "DURATION")]
    pub drain: f64,
    /// Pause between the last subscription and the first message.
    #[arg(long, default_value = "1s", value_parser = parse_secs, value_name = "DURATION")]
    pub settle: f64,
}

/// `fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Kind,
    /// Subscriber URL template.
    #[arg(long, value_name = "TEMPLATE")]
    pub sub_url: String,
    /// Subscribers.
    #[arg(long, value_name = "N")]
    pub subs: u64,
    /// Channels; subscriber i listens on channel i mod K, message j goes to channel j mod K.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub channels: u32,
    /// Messages to publish.
    #[arg(long, value_name = "M")]
    pub msgs: u64,
    /// Messages per second.
    #[arg(long, value_name = "R")]
    pub rate: f64,
    /// Publishing.
    #[command(flatten)]
    pub publish: PubArgs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `throughput`.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Kind,
    /// Subscriber URL template.
    #[arg(long, value_name = "TEMPLATE")]
    pub sub_url: String,
    /// Subscribers.
    #[arg(long, value_name = "N")]
    pub subs: u64,
    /// Channels.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub channels: u32,
    /// First publish rate (messages/s).
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    pub start_rate: f64,
    /// Highest publish rate tried.
    #[arg(long, default_value_t = 100_000.0, value_name = "R")]
    pub max_rate: f64,
    /// Rate multiplier between steps.
    #[arg(long, default_value_t = 2.0, value_name = "X")]
    pub step: f64,
    /// Length of each step.
    #[arg(long, default_value = "5s", value_parser = parse_secs, value_name = "DURATION")]
    pub step_time: f64,
    /// A step is sustainable while its p99 stays at or below this.
    #[arg(long, default_value = "100ms", value_parser = parse_ms, value_name = "DURATION")]
    pub max_p99: f64,
    /// … and its loss ratio at or below this.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub max_loss: f64,
    /// Publishing.
    #[command(flatten)]
    pub publish: PubArgs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `churn`.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Kind,
    /// Subscriber URL template; for ws use a format that carries ids (ringcast: ?format=json).
    #[arg(long, value_name = "TEMPLATE")]
    pub sub_url: String,
    /// Subscribers.
    #[arg(long, value_name = "N")]
    pub subs: u64,
    /// Channels.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub channels: u32,
    /// Messages per second.
    #[arg(long, default_value_t = 100.0, value_name = "R")]
    pub rate: f64,
    /// Publishing time.
    #[arg(long, default_value = "10s", value_parser = parse_secs, value_name = "DURATION")]
    pub duration: f64,
    /// Subscribers dropped (and resumed) per second.
    #[arg(long, default_value_t = 100.0, value_name = "PER_SEC")]
    pub churn_rate: f64,
    /// Publishing.
    #[command(flatten)]
    pub publish: PubArgs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Server base URL; transports' URLs derive from it (/ws/{ch}, /sse/{ch}, /poll/{ch}, /pub/{ch}).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub base_url: String,
    /// Override the WebSocket URL template.
    #[arg(long, value_name = "TEMPLATE")]
    pub ws_url: Option<String>,
    /// Override the SSE URL template.
    #[arg(long, value_name = "TEMPLATE")]
    pub sse_url: Option<String>,
    /// Override the polling URL template.
    #[arg(long, value_name = "TEMPLATE")]
    pub poll_url: Option<String>,
    /// Transports to compare.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ws,sse,longpoll,shortpoll"
    )]
    pub transports: Vec<Kind>,
    /// Short-polling intervals to try.
    #[arg(long, value_delimiter = ',', default_value = "1s,5s", value_parser = parse_secs)]
    pub shortpoll_intervals: Vec<f64>,
    /// Subscribers per transport.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub subs: u64,
    /// Channels.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub channels: u32,
    /// Messages per transport.
    #[arg(long, default_value_t = 200, value_name = "M")]
    pub msgs: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0, value_name = "R")]
    pub rate: f64,
    /// Publish URL template (default: derived from --base-url).
    #[arg(long, value_name = "TEMPLATE")]
    pub pub_url: Option<String>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// What a message carries: `pad` (to --size) or `chat` (JSON chat
    /// messages of 200–2,000 bytes).
    #[arg(long, value_enum, default_value = "pad")]
    pub payload: Payload,
    /// Seed of the `chat` messages.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub payload_seed: u64,
    /// Wait after the last message for late deliveries (short polling needs ≥ its interval).
    #[arg(long, default_value = "7s", value_parser = parse_secs, value_name = "DURATION")]
    pub drain: f64,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// Parses a transport mix `ws=70,sse=30` and splits `conns` by it.
pub fn parse_mix(spec: &str, conns: u64) -> Result<Vec<(Kind, u64)>, String> {
    use clap::ValueEnum;
    let mut parts = Vec::new();
    let mut total = 0u64;
    for item in spec.split(',') {
        let (name, pct) = item.split_once('=').ok_or_else(|| {
            format!("--mix {spec:?}: expected TRANSPORT=PERCENT, e.g. ws=70,sse=30")
        })?;
        let kind = Kind::from_str(name.trim(), true).map_err(|_| {
            format!("--mix: unknown transport {name:?} (ws, sse, longpoll, shortpoll)")
        })?;
        let pct: u64 = pct
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("--mix: {pct:?} is not a whole percentage"))?;
        total += pct;
        parts.push((kind, pct));
    }
    if total != 100 {
        return Err(format!(
            "--mix {spec:?}: percentages add up to {total}, not 100"
        ));
    }
    let mut out: Vec<(Kind, u64)> = parts.iter().map(|(k, p)| (*k, conns * p / 100)).collect();
    let assigned: u64 = out.iter().map(|(_, n)| n).sum();
    if let Some(first) = out.first_mut() {
        first.1 += conns - assigned;
    }
    out.retain(|(_, n)| *n > 0);
    Ok(out)
}

/// Parses `30`, `30s`, `500ms`, `2m`, `1h` into seconds.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(v * mult)
}

/// Like [`parse_secs`] but returns milliseconds (bare numbers are ms).
pub fn parse_ms(s: &str) -> Result<f64, String> {
    if s.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
        return s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"));
    }
    parse_secs(s).map(|v| v * 1e3)
}

/// Checks a `Name: value` header line.
fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?}: expected `Name: value`"))?;
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("header {s:?}: invalid name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("header {s:?}: line breaks in the value"));
    }
    Ok(format!("{}: {}", name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_secs("30"), Ok(30.0));
        assert_eq!(parse_secs("500ms"), Ok(0.5));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert!(parse_secs("-1s").is_err());
        assert!(parse_secs("soon").is_err());
        assert_eq!(parse_ms("50"), Ok(50.0));
        assert_eq!(parse_ms("1s"), Ok(1000.0));
    }

    #[test]
    fn mixes() {
        let m = parse_mix("ws=70,sse=20,longpoll=10", 1001).unwrap();
        assert_eq!(
            m,
            vec![(Kind::Ws, 701), (Kind::Sse, 200), (Kind::Longpoll, 100)]
        );
        assert!(parse_mix("ws=70,sse=20", 10).is_err());
        assert!(parse_mix("ws=70,carrier-pigeon=30", 10).is_err());
        assert!(parse_mix("ws", 10).is_err());
    }

    #[test]
    fn the_command_lines_of_issue_4_parse() {
        let c = Cli::try_parse_from([
            "ringcast-load",
            "idle",
            "--transport",
            "ws",
            "--url",
            "ws://127.0.0.1:8080/ws/{ch}",
            "--conns",
            "200000",
            "--hold",
            "30",
            "--channels",
            "10",
            "--json",
        ])
        .unwrap();
        assert!(matches!(c.scenario, Scenario::Idle(ref a) if a.conns == 200_000 && a.common.json));
        let c = Cli::try_parse_from([
            "ringcast-load",
            "fanout",
            "--transport",
            "sse",
            "--sub-url",
            "http://127.0.0.1:8080/sse/{ch}",
            "--pub-url",
            "http://127.0.0.1:8080/pub/{ch}",
            "--subs",
            "1000",
            "--channels",
            "10",
            "--msgs",
            "100",
            "--rate",
            "50",
            "--json",
        ])
        .unwrap();
        assert!(
            matches!(c.scenario, Scenario::Fanout(ref a) if a.transport == Kind::Sse && a.msgs == 100)
        );
    }

    #[test]
    fn deflate_and_chat_payloads() {
        let c = Cli::try_parse_from([
            "ringcast-load",
            "fanout",
            "--sub-url",
            "ws://127.0.0.1:8080/ws/{ch}",
            "--pub-url",
            "http://127.0.0.1:8080/pub/{ch}",
            "--subs",
            "10",
            "--msgs",
            "10",
            "--rate",
            "10",
            "--deflate",
            "--payload",
            "chat",
            "--payload-seed",
            "7",
        ])
        .unwrap();
        let Scenario::Fanout(a) = c.scenario else {
            panic!("fanout");
        };
        assert!(a.common.deflate);
        assert_eq!(
            (a.publish.payload, a.publish.payload_seed),
            (Payload::Chat, 7)
        );
        // Off unless asked for; every scenario has it.
        let c = Cli::try_parse_from([
            "ringcast-load",
            "compare",
            "--transports",
            "ws",
            "--payload",
            "chat",
        ])
        .unwrap();
        assert!(matches!(
            c.scenario,
            Scenario::Compare(ref a) if !a.common.deflate && a.payload == Payload::Chat
        ));
        assert!(Cli::try_parse_from(["ringcast-load", "compare", "--payload", "lorem"]).is_err());
    }

    #[test]
    fn tls_options() {
        let c = Cli::try_parse_from([
            "ringcast-load",
            "churn",
            "--sub-url",
            "wss://127.0.0.1:8443/ws/{ch}?format=json",
            "--pub-url",
            "https://127.0.0.1:8443/pub/{ch}",
            "--subs",
            "10",
            "--ca",
            "ca.pem",
            "--tls-resume",
            "off",
            "--tls-version",
            "1.2",
            "--tls-server-name",
            "push.example",
        ])
        .unwrap();
        let Scenario::Churn(a) = c.scenario else {
            panic!("churn");
        };
        assert_eq!(a.common.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(a.common.tls_resume, Switch::Off);
        assert_eq!(a.common.tls_version, Some(TlsVersion::V12));
        assert_eq!(a.common.tls_server_name.as_deref(), Some("push.example"));
        // Defaults: resumption on, both versions, verification required.
        let c = Cli::try_parse_from(["ringcast-load", "compare", "--insecure"]).unwrap();
        let Scenario::Compare(a) = c.scenario else {
            panic!("compare");
        };
        assert!(a.common.insecure);
        assert_eq!(a.common.tls_resume, Switch::On);
        assert_eq!(a.common.tls_version, None);
        // Trusting a CA and nothing at all at once makes no sense.
        assert!(
            Cli::try_parse_from(["ringcast-load", "compare", "--insecure", "--ca", "ca.pem"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["ringcast-load", "compare", "--tls-version", "1.1"]).is_err());
    }
}
