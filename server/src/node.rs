//! Starting and stopping a node: limits, listeners, shards, signals, the
//! start-up banner.
//!
//! Listeners are bound here, before any shard starts, so that an address in
//! use is reported at once and clearly; each shard gets its own
//! `SO_REUSEPORT` socket per address and the kernel spreads new connections
//! over them. (The alternative, one acceptor handing sockets to shards, costs
//! an extra cross-ring message and a close per connection; see
//! docs/architecture.md.)

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use uring::{sys, Opcode, Ring, RingConfig};

use crate::auth::Tickets;
use crate::bus::{Mailboxes, StoreReports};
use crate::capacity::{group, Plan};
use crate::cluster::bridge::{self, BridgeConfig};
use crate::cluster::persistence::Policy;
use crate::config::{Settings, StoreSettings};
use crate::hub::{ChannelName, Epoch};
use crate::metrics::ShardMetrics;
use crate::shard::peers::{PeerLimits, Peers};
use crate::shard::shared::Shared;
use crate::shard::{Shard, ShardStore};
use crate::store::{Options as StoreOptions, Previous, RecoveredChannel, RecoveredCursor, Store};
use crate::tls::TlsContext;

/// The io_uring operations a shard submits.
const OPCODES: [Opcode; 8] = [
    Opcode::Accept,
    Opcode::Recv,
    Opcode::Send,
    Opcode::SendMsg,
    Opcode::Shutdown,
    Opcode::Close,
    Opcode::AsyncCancel,
    Opcode::Read,
];

/// Why the node could not start or stopped in error.
#[derive(Debug)]
pub struct NodeError(pub String);

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeError {}

/// Runs a node until SIGTERM or SIGINT has drained it.
pub fn run(mut settings: Settings) -> Result<(), NodeError> {
    let nofile = match sys::raise_nofile_to_hard() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot raise RLIMIT_NOFILE to its hard limit: {e}");
            sys::nofile_limit().map(|(soft, _)| soft).unwrap_or(1024)
        }
    };
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let plan = Plan::new(settings.shards, settings.max_connections, nofile, somaxconn);

    // Fail early, with a message an operator can act on, where io_uring is
    // unavailable (seccomp, sysctl) or too old.
    let probe = Ring::new(RingConfig {
        sq: 8,
        cq: 16,
        slots: 16,
        buffers: Some((8, 64)),
    })
    .map_err(|e| NodeError(e.to_string()))?;
    let missing = probe
        .unsupported(&OPCODES)
        .map_err(|e| NodeError(e.to_string()))?;
    if !missing.is_empty() {
        return Err(NodeError(format!(
            "this kernel's io_uring lacks {} (IORING_OP_*): Linux 6.1 or newer is required",
            missing.join(", ")
        )));
    }
    if (settings.tcp_nodelay || settings.tcp_notsent_lowat > 0)
        && !probe
            .unsupported(&[Opcode::UringCmd])
            .map_err(|e| NodeError(e.to_string()))?
            .is_empty()
    {
        tracing::warn!(
            "this kernel cannot set socket options through io_uring (Linux 6.7+): \
             accepted sockets keep Nagle's algorithm and the kernel's send buffering \
             (no TCP_NODELAY, no TCP_NOTSENT_LOWAT)"
        );
        settings.tcp_nodelay = false;
        settings.tcp_notsent_lowat = 0;
    }
    drop(probe);

    // A certificate that does not load fails start-up before anything is
    // bound, saying which file and why.
    let tls = (settings.tls.as_ref())
        .map(|files| TlsContext::load(files, settings.tls_tickets))
        .transpose()
        .map_err(|e| NodeError(format!("cannot load the TLS certificate: {e}")))?;
    let shards = settings.shards;
    let mail =
        Mailboxes::new(shards).map_err(|e| NodeError(format!("cannot create eventfds: {e}")))?;
    // The store opens before any port is bound: a directory that cannot
    // be used stops the node with its reason, and the epoch clients will
    // see is the one the store decided.
    let (store, epoch, mut shard_stores) = match &settings.store {
        None => (None, Epoch::random(), (0..shards).map(|_| None).collect()),
        Some(s) => open_store(s, &settings, &mail)?,
    };
    let (listeners, bound) = bind_all(&settings, plan.backlog as i32)?;
    let bridge = if settings.redis.is_empty() {
        None
    } else {
        let config = BridgeConfig {
            servers: settings.redis.clone(),
            wait: settings.redis_wait,
            epoch,
            namespaces: settings.namespaces.clone(),
            presence_ttl: settings.presence_ttl,
            fsync: settings.redis_fsync.map(|f| match f {
                crate::store::Fsync::Always => Policy::Always,
                crate::store::Fsync::Interval(_) => Policy::Interval,
                crate::store::Fsync::Never => Policy::Never,
            }),
        };
        Some(bridge::start(config, mail.clone()).map_err(NodeError)?)
    };
    let metrics: Vec<Arc<ShardMetrics>> = (0..shards)
        .map(|_| Arc::new(ShardMetrics::default()))
        .collect();
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        tickets: Tickets::new(settings.ticket_ttl, settings.max_tickets),
        peers: Peers::new(PeerLimits {
            connections: settings.max_connections_per_ip,
            rate: settings.max_connection_rate_per_ip,
            loopback: settings.limit_loopback,
        }),
        plan,
        epoch,
        mail: mail.clone(),
        client_salt: if bridge.is_some() { rand::random() } else { 0 },
        bridge,
        store: store.as_ref().map(Store::health),
        metrics,
        tls,
        shutdown: AtomicBool::new(false),
        draining_shards: AtomicU64::new(u64::MAX >> (64 - shards)),
    });
    install_signal_handler(shared.clone())?;

    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    for (i, fds) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let shard_store = shard_stores[i].take();
        let t = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || match Shard::new(i, shared, fds, shard_store) {
                Ok(shard) => {
                    let _ = ready.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("shard {i}: {e}")));
                }
            })
            .map_err(|e| NodeError(format!("cannot start shard thread: {e}")))?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a shard thread died during start-up".into()),
        }
    }
    if let Some(e) = failure {
        shared.shutdown.store(true, Ordering::SeqCst);
        for i in 0..shards {
            mail.door(i).ring();
        }
        for t in threads {
            let _ = t.join();
        }
        return Err(NodeError(e));
    }

    print_banner(&settings, &plan, &bound, &shared);
    let mut panicked = false;
    for t in threads {
        panicked |= t.join().is_err();
    }
    // The shards have stopped submitting: the writer commits what they
    // queued, flushes and marks the run clean (a panicked shard still
    // leaves a consistent store; only what it never submitted is lost).
    if let Some(store) = store {
        let dir = store.dir().display().to_string();
        match store.shutdown() {
            Ok(()) => tracing::info!("store in {dir} closed cleanly"),
            Err(e) => {
                tracing::error!("store: {e}");
                return Err(NodeError(format!("store: {e}")));
            }
        }
    }
    if panicked {
        return Err(NodeError(
            "a shard panicked (a bug: please report it with the log)".into(),
        ));
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// What [`open_store`] hands the node: the store, this run's epoch, and
/// per shard its part of the store.
type OpenedStore = (Option<Store>, Epoch, Vec<Option<ShardStore>>);

/// Opens the store in `--data-dir`: the lock, the format, the epoch rule
/// and every channel's newest messages (as many as its namespace keeps),
/// handed to the shards that own them.
fn open_store(
    s: &StoreSettings,
    settings: &Settings,
    mail: &Arc<Mailboxes>,
) -> Result<OpenedStore, NodeError> {
    let shards = settings.shards;
    let namespaces = settings.namespaces.clone();
    let limit_for = move |name: &ChannelName| namespaces.of(name.as_str()).history.most_kept();
    let started = std::time::Instant::now();
    let opened = Store::open(
        &s.dir,
        StoreOptions::new(s.fsync, shards),
        Box::new(StoreReports(mail.clone())),
        &limit_for,
    )
    .map_err(|e| NodeError(e.to_string()))?;
    let recovered = opened.recovered;
    let messages: usize = recovered.channels.iter().map(|c| c.messages.len()).sum();
    tracing::info!(
        "store: {} opened at --fsync {} in {:?}: {} channels, {} messages, {} cursors; epoch {} ({})",
        s.dir.display(),
        s.fsync,
        started.elapsed(),
        recovered.channels.len(),
        messages,
        recovered.cursors.len(),
        recovered.epoch,
        recovered.choice
    );
    if recovered.choice.is_new() && recovered.previous != Previous::None {
        tracing::warn!(
            "store: new epoch {}: {}; clients resume with reset: epoch",
            recovered.epoch,
            recovered.choice
        );
    }
    let mut per_shard: Vec<Vec<RecoveredChannel>> = (0..shards).map(|_| Vec::new()).collect();
    for ch in recovered.channels {
        per_shard[ch.name.owner(shards)].push(ch);
    }
    let mut cursors_of: Vec<Vec<RecoveredCursor>> = (0..shards).map(|_| Vec::new()).collect();
    for c in recovered.cursors {
        cursors_of[c.channel.owner(shards)].push(c);
    }
    let shard_stores = opened
        .intakes
        .into_iter()
        .zip(per_shard)
        .zip(cursors_of)
        .map(|((intake, channels), cursors)| {
            Some(ShardStore {
                intake,
                fsync: s.fsync,
                floor: recovered.floor,
                channels,
                cursors,
            })
        })
        .collect();
    Ok((Some(opened.store), recovered.epoch, shard_stores))
}

/// Binds one listener per shard per address, the `--listen` ones first,
/// then the `--listen-tls` ones (the acceptor tells them apart by index).
/// An address with port 0 gets its port from the first bind; the other
/// shards bind that port.
fn bind_all(
    settings: &Settings,
    backlog: i32,
) -> Result<(Vec<Vec<OwnedFd>>, Vec<SocketAddr>), NodeError> {
    let mut per_shard: Vec<Vec<OwnedFd>> = (0..settings.shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for &addr in settings.listen.iter().chain(&settings.listen_tls) {
        let mut actual = addr;
        for (i, fds) in per_shard.iter_mut().enumerate() {
            let fd = sys::reuseport_listener(actual, backlog)
                .map_err(|e| NodeError(format!("cannot listen on {actual}: {e}")))?;
            if i == 0 {
                actual = sys::local_addr(fd.as_raw_fd()).map_err(|e| {
                    NodeError(format!("cannot read the bound address of {addr}: {e}"))
                })?;
            }
            fds.push(fd);
        }
        bound.push(actual);
    }
    Ok((per_shard, bound))
}

/// SIGTERM/SIGINT start a graceful drain; a second one exits at once.
/// SIGHUP reloads the TLS certificate (and is otherwise logged and
/// ignored, rather than killing the node as by default).
fn install_signal_handler(shared: Arc<Shared>) -> Result<(), NodeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| NodeError(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    reload_certificate(&shared);
                    continue;
                }
                if shared.shutdown.swap(true, Ordering::SeqCst) {
                    eprintln!("ringcast: second signal {sig}; exiting without draining");
                    std::process::exit(1);
                }
                tracing::info!(
                    "signal {sig}: draining (closing WebSockets with 1001, up to {:?}; send again to exit at once)",
                    shared.settings.drain_timeout
                );
                for i in 0..shared.mail.shards() {
                    shared.mail.door(i).ring();
                }
            }
        })
        .map_err(|e| NodeError(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// SIGHUP: new TLS handshakes get the certificate now in the files; open
/// connections keep theirs. A file that does not load is logged, and the
/// current certificate stays.
fn reload_certificate(shared: &Shared) {
    let Some(tls) = shared.tls.as_ref() else {
        tracing::info!("SIGHUP: nothing to reload (no --tls-cert)");
        return;
    };
    match tls.certs.reload() {
        Ok(what) => {
            tracing::info!("SIGHUP: TLS certificate reloaded ({what}); new handshakes use it")
        }
        Err(e) => tracing::error!(
            "SIGHUP: TLS certificate NOT reloaded, new handshakes keep the current one: {e}"
        ),
    }
}

fn human_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Whether this process has CAP_IPC_LOCK (bit 14 of CapEff), which exempts
/// io_uring memory from RLIMIT_MEMLOCK.
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

fn print_banner(s: &Settings, plan: &Plan, bound: &[SocketAddr], shared: &Shared) {
    let epoch = shared.epoch;
    let (plain, tls) = bound.split_at(s.listen.len());
    // The examples use the first listener: plaintext if there is one.
    let (http, ws) = if plain.is_empty() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let example = bound
        .first()
        .map(|a| match a {
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], v4.port()))
            }
            other => *other,
        })
        .expect("at least one listener");
    let mut out = String::new();
    for a in plain {
        out.push_str(&format!("ringcast listening on http://{a}\n"));
    }
    for a in tls {
        out.push_str(&format!("ringcast listening on https://{a}\n"));
    }
    out.push_str(&format!(
        "  version      {}\n  epoch        {epoch}\n  shards       {} (one thread each; SO_REUSEPORT spreads accepts)\n  {}\n",
        env!("CARGO_PKG_VERSION"),
        s.shards,
        plan.describe()
    ));
    if !has_ipc_lock() {
        let per_ring = 256 * 1024u64;
        let memlock = sys::memlock_limit().unwrap_or(0);
        let rings = plan.shards as u64 * plan.rings_per_shard as u64;
        if rings * per_ring > memlock {
            out.push_str(&format!(
                "  warning      without CAP_IPC_LOCK, ring memory counts against RLIMIT_MEMLOCK ({}): about {} rings ({} connections) fit; raise `ulimit -l` or grant CAP_IPC_LOCK\n",
                human_size(memlock as usize),
                memlock / per_ring,
                group(memlock / per_ring * u64::from(plan.usable_per_ring)),
            ));
        }
    }
    if let Some(t) = shared.tls.as_ref() {
        out.push_str(&format!(
            "  tls          TLS 1.3 and 1.2 (aws-lc-rs), ALPN http/1.1, {}; {}; SIGHUP reloads it\n",
            if s.tls_tickets { "session tickets" } else { "no session tickets" },
            t.certs.describe(),
        ));
    }
    if !s.redis.is_empty() {
        out.push_str(&format!(
            "  cluster      channels shared through Redis: {} (ids and history there; this node follows the channels its clients read)\n",
            s.redis.join(", ")
        ));
    }
    out.push_str(&format!(
        "  history      {} messages, {} per channel\n  heartbeats   ping every {}; silent peers closed after {}\n  limits       message {}, batch {}, head {}\n  readers      fed from history at their socket's pace past {} queued; closed when a message waits {} (--max-lag); pinned at most {}\n  sockets      {}{}\n  transports   {}\n  origins      {}{}\n  publishing   {}\n  tokens       {}\n",
        s.history_size,
        humantime::format_duration(s.history_ttl),
        humantime::format_duration(s.ping_interval),
        humantime::format_duration(s.ping_interval * 2),
        human_size(s.max_message_size),
        human_size(s.max_batch_size),
        human_size(s.max_head_size),
        human_size(s.max_outbound),
        humantime::format_duration(s.max_lag),
        human_size(s.max_pinned),
        if s.tcp_nodelay { "TCP_NODELAY" } else { "Nagle on (--no-tcp-nodelay)" },
        if s.tcp_notsent_lowat > 0 {
            format!(", TCP_NOTSENT_LOWAT {}", human_size(s.tcp_notsent_lowat))
        } else {
            String::new()
        },
        s.transports.names(),
        s.allowed_origins.describe(),
        if s.client_publish { "; /ws clients may publish" } else { "" },
        s.publishing().unwrap_or_else(|e| e.0),
        match &s.verifier {
            Some(v) => format!(
                "verified ({}){}",
                v.algorithms(),
                if s.allow_token_in_query { "; ?token= accepted" } else { "" }
            ),
            None => "not checked: anyone may subscribe (--jwt-secret, --jwt-public-key)".into(),
        },
    ));
    out.push_str(&format!(
        "  per address  at most {} connections and {} new a second (IPv4 address or IPv6 /64){}; node: at most {} channels\n",
        group(u64::from(s.max_connections_per_ip)),
        group(u64::from(s.max_connection_rate_per_ip)),
        if s.limit_loopback { ", loopback included" } else { "; loopback exempt (--limit-loopback)" },
        group(s.max_channels as u64),
    ));
    for line in s.namespaces.describe() {
        out.push_str(&format!("  policy       {line}\n"));
    }
    if s.demo {
        out.push_str(&format!(
            "  demo         {http}://{example}/   client: {http}://{example}/client.js\n"
        ));
    }
    out.push_str(&format!(
        "  subscribe    {ws}://{example}/ws/{{channel}}   (?since=ID to resume, ?format=json for ids)\n  publish      curl -H 'Content-Type: text/plain' -d hello {http}://{example}/pub/{{channel}}\n  health       {http}://{example}/healthz   metrics: {http}://{example}/metrics{}\n",
        if s.echo { format!("   echo: {ws}://{example}/echo") } else { String::new() }
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
