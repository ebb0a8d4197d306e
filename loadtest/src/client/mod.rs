//! The connection engine: many client connections per process over
//! io_uring direct descriptors.
//!
//! ```text
//! Fleet ──commands──▶ worker 0: thread + ringcast_uring::Ring ─┐
//!   │                   (≤ per-ring slots, receive buffers,     ├─ counters (atomics),
//!   │                    sends in flight)                       │  live histogram
//!   │                 worker 1: …                               │
//!   └──collect◀────── worker R-1                                ┘
//! ```
//!
//! A process may hold at most `RLIMIT_NOFILE` ordinary descriptors (20,000
//! on the reference host, not raisable), but that limit applies to each
//! io_uring's *direct descriptor table* separately. So the fleet runs R
//! workers — one thread and one ring each, `⌈conns / per_ring⌉` of them —
//! and every socket lives only in its ring's table. Idle threads cost
//! nothing; with 2 CPUs the busy ones share them.
//!
//! The rings come from `ringcast-uring`, which owns every byte the kernel
//! may still read or write: each connect chain's addresses and request,
//! each send's bytes until its completion is reaped, and the provided
//! receive buffers, lent out as [`RecvBuf`](ringcast_uring::RecvBuf)
//! tokens that go back to the kernel when dropped. The engine itself is
//! safe code only (the crate root forbids anything else): it says what to
//! submit and reacts to what completes.
//!
//! Each worker owns its connections outright: their protocol state, their
//! sequence trackers and their histograms, so the data path takes no locks.
//! Over `wss://` and `https://` also their TLS sessions (rustls,
//! unbuffered: see [`crate::transport::tls`]), and a TLS session store of
//! its own, so that reconnecting connections resume without sharing a lock
//! with other workers.
//! The fleet reads progress from per-worker atomic counters and asks for
//! exact results by message ([`Fleet::collect`]).

pub mod addr;
pub mod op;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ringcast_uring::{Opcode, Ring, SetupError};
use rustls::pki_types::ServerName;

use crate::stats::{DeliveryCounts, LatencyHist};
use crate::transport::Kind;
use crate::url::UrlTemplate;
use addr::AddrPlan;

/// Why a ring could not be set up, in terms the user can act on: the
/// ring crate's explanation, except where the harness knows better (the
/// kernel version its client opcodes need, the option that sizes the
/// descriptor table).
pub fn explain_setup_error(e: &SetupError) -> String {
    match e {
        SetupError::Unsupported(e) => format!(
            "this kernel's io_uring lacks a needed feature ({e}); Linux 6.11 or newer is \
             required (direct IORING_OP_SOCKET, IORING_OP_BIND, uring_cmd setsockopt)"
        ),
        SetupError::TableTooLarge(e) => format!(
            "the direct-descriptor table is larger than RLIMIT_NOFILE ({e}); lower --per-ring"
        ),
        other => other.to_string(),
    }
}

/// Checks that the kernel supports every opcode the engine uses.
pub fn check_opcodes(ring: &Ring) -> Result<(), String> {
    let missing = ring
        .unsupported(&[
            Opcode::Socket,
            Opcode::Bind,
            Opcode::Connect,
            Opcode::UringCmd,
            Opcode::Send,
            Opcode::Recv,
            Opcode::AsyncCancel,
            Opcode::Close,
        ])
        .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this kernel's io_uring lacks {}: Linux 6.11 or newer is required",
            missing.join(", ")
        ))
    }
}

/// Everything a fleet of subscribers needs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Transport.
    pub kind: Kind,
    /// Subscriber URL template.
    pub url: UrlTemplate,
    /// Connections (subscribers).
    pub conns: u64,
    /// Channels; subscriber `i` listens on channel `i % channels`.
    pub channels: u32,
    /// Channel names are this prefix plus the channel number.
    pub channel_prefix: String,
    /// Connections per ring (≤ the file limit).
    pub per_ring: u32,
    /// Handshakes in flight per ring.
    pub inflight: u32,
    /// Connection attempts per second over the whole fleet; `None`: as fast as possible.
    pub connect_rate: Option<f64>,
    /// Time allowed from socket creation to a live subscription.
    pub connect_timeout: Duration,
    /// Addressing.
    pub addr: Arc<AddrPlan>,
    /// Track message ids (for resuming).
    pub want_ids: bool,
    /// Long-poll timeout.
    pub poll_timeout_s: u32,
    /// Short-poll interval.
    pub poll_interval: Duration,
    /// Resume query parameter.
    pub resume_param: String,
    /// Extra header lines for every subscriber request (`Name: value`).
    pub headers: Vec<String>,
    /// WebSocket subscribers offer permessage-deflate.
    pub deflate: bool,
    /// The share of `addr`'s source endpoints this fleet may bind (fleets
    /// running side by side get disjoint shares); `None`: all of them.
    pub endpoint_range: Option<(u64, u64)>,
    /// TLS (`wss://`, `https://`); `None`: plaintext.
    pub tls: Option<FleetTls>,
}

/// What a fleet's TLS connections share.
#[derive(Debug, Clone)]
pub struct FleetTls {
    /// The run's TLS client (each worker makes its configuration from it).
    pub client: Arc<crate::tls::Client>,
    /// The server name (SNI; what the certificate must name).
    pub name: ServerName<'static>,
}

/// The name of channel `i`.
pub fn channel_name(prefix: &str, i: u32) -> String {
    format!("{prefix}{i}")
}

/// Progress counters of one worker; summed by [`Fleet::totals`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now.
    pub open: AtomicU64,
    /// Attempts in flight now.
    pub connecting: AtomicU64,
    /// Attempts that became live subscriptions, ever.
    pub connected: AtomicU64,
    /// Attempts that failed.
    pub failed: AtomicU64,
    /// Live connections lost without the harness asking.
    pub dropped: AtomicU64,
    /// Messages received (any).
    pub deliveries: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// HTTP requests sent (one per connection, plus every poll).
    pub requests: AtomicU64,
    /// Deliberate disconnects followed by a resume (churn).
    pub reconnects: AtomicU64,
    /// Receives re-armed after the buffer pool ran dry.
    pub nobufs: AtomicU64,
    /// Handshakes that offered permessage-deflate and had it accepted.
    pub deflate_agreed: AtomicU64,
    /// Handshakes that offered permessage-deflate and had it declined.
    pub deflate_declined: AtomicU64,
    /// Messages that arrived compressed (of `deliveries`).
    pub compressed: AtomicU64,
    /// Bytes of the messages received, as the transport hands them over
    /// (inflated): beside `bytes_in`, what framing and compression make
    /// of them.
    pub message_bytes: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Of those, resumed (a ticket or session of an earlier connection).
    pub tls_resumed: AtomicU64,
    /// Of those, TLS 1.3.
    pub tls13: AtomicU64,
    /// Of those, TLS 1.2.
    pub tls12: AtomicU64,
}

/// A snapshot of the summed counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Totals {
    /// Open now.
    pub open: u64,
    /// In flight now.
    pub connecting: u64,
    /// Live subscriptions made, ever.
    pub connected: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Connections lost.
    pub dropped: u64,
    /// Messages received.
    pub deliveries: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Requests sent.
    pub requests: u64,
    /// Churn reconnects.
    pub reconnects: u64,
    /// Receive re-arms for lack of buffers.
    pub nobufs: u64,
    /// Handshakes that agreed on permessage-deflate.
    pub deflate_agreed: u64,
    /// Handshakes that offered permessage-deflate and went on without.
    pub deflate_declined: u64,
    /// Messages that arrived compressed.
    pub compressed: u64,
    /// Bytes of the messages received (inflated).
    pub message_bytes: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// Of those, resumed.
    pub tls_resumed: u64,
    /// Of those, TLS 1.3.
    pub tls13: u64,
    /// Of those, TLS 1.2.
    pub tls12: u64,
}

impl Totals {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Totals) {
        self.open += o.open;
        self.connecting += o.connecting;
        self.connected += o.connected;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.deliveries += o.deliveries;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.requests += o.requests;
        self.reconnects += o.reconnects;
        self.nobufs += o.nobufs;
        self.deflate_agreed += o.deflate_agreed;
        self.deflate_declined += o.deflate_declined;
        self.compressed += o.compressed;
        self.message_bytes += o.message_bytes;
        self.tls_handshakes += o.tls_handshakes;
        self.tls_resumed += o.tls_resumed;
        self.tls13 += o.tls13;
        self.tls12 += o.tls12;
    }
}

/// What one measurement phase expects: message `seq` of run `run` goes to
/// channel `seq % channels`, position `seq / channels`.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Run id in the markers.
    pub run: u32,
    /// Channels.
    pub channels: u32,
    /// Messages each channel will receive.
    pub per_channel: Vec<u32>,
}

impl Phase {
    /// `msgs` messages round-robin over `channels`.
    pub fn round_robin(run: u32, channels: u32, msgs: u64) -> Phase {
        let per_channel = (0..u64::from(channels))
            .map(|c| {
                let n = msgs / u64::from(channels) + u64::from(c < msgs % u64::from(channels));
                u32::try_from(n).unwrap_or(u32::MAX)
            })
            .collect();
        Phase {
            run,
            channels,
            per_channel,
        }
    }
}

/// Exact results gathered from every worker.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Delivery check of the current phase.
    pub counts: DeliveryCounts,
    /// Delivery latency of the current phase.
    pub latency: LatencyHist,
    /// Time from socket creation to a live subscription, all attempts.
    pub connect: LatencyHist,
    /// TLS: time from socket creation to the end of the handshake.
    pub handshake: LatencyHist,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Subscribers taking part in the phase.
    pub subscribers: u64,
    /// Of those, how many hold a message id to resume from.
    pub resumable: u64,
}

impl Collected {
    /// Adds `o` to `self`.
    pub fn merge(&mut self, o: Collected) {
        self.counts.merge(&o.counts);
        self.latency.merge(&o.latency);
        self.connect.merge(&o.connect);
        self.handshake.merge(&o.handshake);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.subscribers += o.subscribers;
        self.resumable += o.resumable;
    }
}

enum Cmd {
    Phase(Arc<Phase>, Sender<()>),
    Collect(Sender<Collected>),
    Churn(f64),
    Stop,
}

struct Handle {
    tx: Sender<Cmd>,
    counters: Arc<Counters>,
    live: Arc<Mutex<LatencyHist>>,
    join: Option<JoinHandle<()>>,
}

/// A running set of workers.
pub struct Fleet {
    workers: Vec<Handle>,
    /// Rings (and worker threads).
    pub rings: usize,
    /// Its subscribers offer permessage-deflate (WebSocket with `--deflate`).
    pub deflate: bool,
    /// Its connections speak TLS, set up so.
    pub tls: Option<crate::tls::Mode>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("rings", &self.rings).finish()
    }
}

impl Fleet {
    /// Rings needed for `conns` connections at `per_ring` each.
    pub fn rings_for(conns: u64, per_ring: u32) -> usize {
        conns.div_ceil(u64::from(per_ring.max(1))).max(1) as usize
    }

    /// Starts the workers; they begin connecting at once. Fails when a
    /// ring cannot be set up.
    pub fn start(cfg: FleetConfig) -> Result<Fleet, String> {
        let rings = Self::rings_for(cfg.conns, cfg.per_ring);
        let deflate = cfg.deflate && cfg.kind == Kind::Ws;
        let tls = cfg.tls.as_ref().map(|t| t.client.mode);
        let cfg = Arc::new(cfg);
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(rings);
        let (ep_lo, ep_hi) = cfg.endpoint_range.unwrap_or((0, cfg.addr.endpoints()));
        let endpoints = ep_hi.saturating_sub(ep_lo);
        for r in 0..rings {
            let base = r as u64 * cfg.conns / rings as u64;
            let end = (r as u64 + 1) * cfg.conns / rings as u64;
            // Each ring cycles through its own share of source endpoints.
            let ep = (
                ep_lo + r as u64 * endpoints / rings as u64,
                ep_lo + (r as u64 + 1) * endpoints / rings as u64,
            );
            let (tx, rx) = mpsc::channel();
            let counters = Arc::new(Counters::default());
            let live = Arc::new(Mutex::new(LatencyHist::new()));
            let spec = worker::Spec {
                id: r,
                base,
                count: (end - base) as u32,
                endpoints: ep,
                cfg: cfg.clone(),
                counters: counters.clone(),
                live: live.clone(),
            };
            let ready = ready_tx.clone();
            let join = std::thread::Builder::new()
                .name(format!("load-ring-{r}"))
                .spawn(move || worker::run(spec, rx, ready))
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            workers.push(Handle {
                tx,
                counters,
                live,
                join: Some(join),
            });
        }
        drop(ready_tx);
        let mut fleet = Fleet {
            workers,
            rings,
            deflate,
            tls,
        };
        for _ in 0..rings {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    fleet.stop();
                    return Err(e);
                }
                Err(_) => {
                    fleet.stop();
                    return Err("a worker did not start within 30 s".into());
                }
            }
        }
        Ok(fleet)
    }

    /// Summed counters.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.workers {
            let c = &w.counters;
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            t.open += g(&c.open);
            t.connecting += g(&c.connecting);
            t.connected += g(&c.connected);
            t.failed += g(&c.failed);
            t.dropped += g(&c.dropped);
            t.deliveries += g(&c.deliveries);
            t.bytes_in += g(&c.bytes_in);
            t.bytes_out += g(&c.bytes_out);
            t.requests += g(&c.requests);
            t.reconnects += g(&c.reconnects);
            t.nobufs += g(&c.nobufs);
            t.deflate_agreed += g(&c.deflate_agreed);
            t.deflate_declined += g(&c.deflate_declined);
            t.compressed += g(&c.compressed);
            t.message_bytes += g(&c.message_bytes);
            t.tls_handshakes += g(&c.tls_handshakes);
            t.tls_resumed += g(&c.tls_resumed);
            t.tls13 += g(&c.tls13);
            t.tls12 += g(&c.tls12);
        }
        t
    }

    /// Latency samples recorded since the last call (for the live p99).
    pub fn take_live(&self) -> LatencyHist {
        let mut h = LatencyHist::new();
        for w in &self.workers {
            if let Ok(mut l) = w.live.lock() {
                h.merge(&l);
                l.clear();
            }
        }
        h
    }

    /// Starts a measurement phase on every worker, and returns once every
    /// worker has switched to it: messages published after this call are
    /// counted against it, none are mistaken for strays.
    pub fn set_phase(&self, p: Phase) -> Result<(), String> {
        let p = Arc::new(p);
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.tx.send(Cmd::Phase(p.clone(), tx.clone()))
                .map_err(|_| "a worker thread has died".to_string())?;
        }
        for _ in 0..self.workers.len() {
            rx.recv_timeout(Duration::from_secs(30))
                .map_err(|_| "a worker did not start the phase within 30 s".to_string())?;
        }
        Ok(())
    }

    /// Disconnect-and-resume `per_sec` subscribers per second (0 stops).
    pub fn churn(&self, per_sec: f64) {
        let each = per_sec / self.workers.len() as f64;
        for w in &self.workers {
            let _ = w.tx.send(Cmd::Churn(each));
        }
    }

    /// Gathers exact results from every worker.
    pub fn collect(&self) -> Result<Collected, String> {
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.tx.send(Cmd::Collect(tx.clone()))
                .map_err(|_| "a worker thread has died".to_string())?;
        }
        drop(tx);
        let mut all = Collected::default();
        for _ in 0..self.workers.len() {
            let c = rx
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| "a worker did not report within 30 s".to_string())?;
            all.merge(c);
        }
        Ok(all)
    }

    /// Closes every connection (with a reset: no TIME_WAIT is left behind)
    /// and joins the workers.
    pub fn stop(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Cmd::Stop);
        }
        for w in &mut self.workers {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_phase() {
        let p = Phase::round_robin(1, 3, 10);
        assert_eq!(p.per_channel, vec![4, 3, 3]);
        assert_eq!(p.per_channel.iter().sum::<u32>(), 10);
        assert_eq!(Fleet::rings_for(200_000, 19_000), 11);
        assert_eq!(Fleet::rings_for(5, 19_000), 1);
    }
}
