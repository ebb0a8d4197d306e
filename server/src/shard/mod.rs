//! A shard: one thread, its rings, its connections, its part of the hub.
//! The driver of the protocol state machines in `transport`.
//!
//! # The loop
//! Each turn of [`Shard::run`]:
//! 1. reads the clock once (`now`, `tick`);
//! 2. takes mail from every other shard (owner work, answers, deliveries);
//! 3. reaps completions from every ring that has any (accepts, received
//!    bytes, finished sends, closes) and runs the protocols they concern;
//! 4. fires due timers;
//! 5. hands the turn's answers to the kernel, then runs the held fan-outs
//!    (`fanout`): a publisher never waits behind a delivery to thousands;
//! 6. flushes every connection that got bytes, re-arms receives, submits
//!    every ring and rings the doorbells of shards it sent mail;
//! 7. sleeps on the home ring if the turn found nothing to do.
//!
//! Work per turn is bounded (completions per ring, mail per peer, fan-out
//! rounds), so one busy ring or peer cannot starve the rest.
//!
//! # Dispatch
//! A connection's protocol state lives in its slot. To run it, the shard
//! takes it out, lends it a [`context::ConnCtx`] over the rest of the shard,
//! and puts it back; then it applies what the state asked for: close the
//! socket (now, or once the output is flushed), tell it about a slow
//! reader, feed kept input again. Mail the state sent this shard (it owns
//! the channel) is handled right after, the same way mail from other
//! shards is.
//!
//! # Modules
//! [`conns`] the connection table and output, `acceptor` accepting and
//! ring growth, `timers` (over `wheel`) deadlines, `context` the protocols'
//! view of the shard, `owner` the channel-owner side of mail, `post` mail
//! out, `completions` / `mail` / `fanout` / `shutdown` the shard's handling
//! of each kind of event.
//!
//! # Who touches what
//! Everything in a `Shard` is touched only by its thread. Other shards reach
//! it only through the mailboxes and its doorbell; `/metrics` reads its
//! counters (relaxed atomics it alone writes).

mod acceptor;
mod buffers;
mod completions;
pub mod conns;
mod context;
mod durable;
#[cfg(test)]
mod durable_tests;
mod fanout;
mod lag;
mod mail;
mod op;
mod owner;
pub mod peers;
mod post;
mod relay;
pub mod shared;
mod shutdown;
mod tally;
mod timers;
pub mod tls;
mod wheel;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uring::{Completion, SetupError};

use crate::hub::{Hub, SubRef};
use crate::metrics::{Refusal, ShardMetrics};
use crate::transport::deflate::Deflater;
use crate::transport::response::Refused;
use crate::transport::{Protocol, Tick, TICK};
use codec::http::StatusCode;
use tls::TlsConn;

use acceptor::Acceptor;
use conns::{BufferPlan, ConnKey, Conns, OutputPlan, ShardHub};
use context::{ConnCtx, Requests};
use durable::Durable;
pub use durable::ShardStore;
use op::Op;
use peers::Admit;
use post::Post;
use relay::Relay;
use shared::Shared;
use tally::{RefusalSummary, Tally};
use timers::Timers;

/// Completions handled per ring per reaping round.
const CQE_BATCH: usize = 512;
/// Rounds of reaping per ring per turn.
const CQE_ROUNDS: usize = 16;
/// Mail handled per peer per turn.
const MAIL_BATCH: usize = 4096;
/// TLS sessions rested that make trimming the C heap worth its cost.
const TLS_RESTS_WORTH_A_TRIM: u64 = 1024;
/// The least time between two trims of the C heap by one shard.
const MIN_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Graceful shutdown in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// When to give up waiting.
    deadline: Instant,
    /// The deadline passed and what was left was closed.
    forced: bool,
}

/// One shard. See the module docs.
#[derive(Debug)]
pub struct Shard {
    id: usize,
    shared: Arc<Shared>,
    metrics: Arc<ShardMetrics>,
    conns: Conns,
    hub: ShardHub,
    /// In a cluster: this shard's owned channels kept in step with Redis.
    relay: Option<Relay>,
    /// With `--data-dir`: this shard's way into the store, and the
    /// publishes waiting for it.
    durable: Option<Durable>,
    timers: Timers,
    acceptor: Acceptor,
    post: Post,
    started: Instant,
    now: Instant,
    tick: Tick,
    next_token: u32,
    /// Receives to re-arm at the end of the turn.
    rearm: Vec<ConnKey>,
    /// Draining connections whose output has gone out.
    drained: Vec<ConnKey>,
    /// Connections whose deadline came this turn.
    due: Vec<ConnKey>,
    /// Subscriptions that fell behind, checked once a second (`lag`).
    behind: Vec<(ConnKey, SubRef)>,
    /// Connections whose queue drained while a subscription was behind.
    hungry: Vec<ConnKey>,
    /// permessage-deflate's compressors and inflater (`--deflate`).
    deflater: Deflater,
    /// The TLS configuration connections on TLS listeners start from (a
    /// copy per shard, so sessions do not share one reference count across
    /// cores; the certificate resolver and ticket keys inside are shared).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Plaintext a TLS receive decrypted, on its way to the protocol.
    tls_plain: Vec<u8>,
    /// Records a TLS receive made rustls send (handshake, alerts).
    tls_flight: Vec<u8>,
    /// Whether new connections' addresses are looked up (per-address
    /// limits apply to some listener).
    look_up_peers: bool,
    /// New connections waiting for a free peer-address lookup (and whether
    /// each is IPv6).
    peer_wait: Vec<(ConnKey, bool)>,
    /// Connections refused for their address, answered when their request
    /// comes (or closed after a second without one).
    refused_peers: HashMap<ConnKey, Refused>,
    /// Readers closed for lagging, logged as a summary.
    lag_tally: Tally,
    /// Connections closed for sending without reading, likewise.
    slow_tally: Tally,
    /// Refused requests, logged as a summary.
    refusals: RefusalSummary,
    cqes: Vec<Completion>,
    drain: Option<Drain>,
    last_housekeeping: Instant,
    /// When idle TLS sessions last dropped their expanded keys.
    last_tls_rest: Instant,
    /// Sessions rested since the C heap was last trimmed, and when that was.
    rested_since_trim: u64,
    last_trim: Instant,
}

impl Shard {
    /// Creates shard `id` with its home ring, inside its own thread (rings
    /// are single-issuer: the creating thread is the only one that may
    /// submit).
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        listeners: Vec<OwnedFd>,
        store: Option<ShardStore>,
    ) -> Result<Shard, SetupError> {
        let s = &shared.settings;
        let metrics = shared.metrics[id].clone();
        let buffers = BufferPlan {
            count: s.recv_buffers,
            size: s.recv_buffer_size,
        };
        let output = OutputPlan {
            window: s.max_outbound,
            hard_limit: s.outbound_hard_limit(),
            nodelay: s.tcp_nodelay,
            notsent_lowat: u32::try_from(s.tcp_notsent_lowat).unwrap_or(u32::MAX),
        };
        let conns = Conns::new(shared.plan, buffers, output, metrics.clone())?;
        let mut hub = Hub::new(id, shared.mail.shards(), shared.epoch, s.namespaces.clone());
        let now = Instant::now();
        let relay = (shared.bridge.clone()).map(|b| Relay::new(b, s.presence_ttl, now));
        if relay.is_some() {
            hub = hub.mirrored();
        }
        if let Some(store) = store.as_ref() {
            hub = hub.with_store(store.floor, store.fsync != crate::store::Fsync::Never);
        }
        let durable = store.map(|store| Durable::new(store, &mut hub, now));
        Ok(Shard {
            id,
            metrics,
            conns,
            hub,
            relay,
            durable,
            timers: Timers::default(),
            acceptor: Acceptor::new(id, listeners, s.listen.len()),
            post: Post::new(id, shared.mail.clone()),
            started: now,
            now,
            tick: 0,
            next_token: 1,
            rearm: Vec::new(),
            drained: Vec::new(),
            due: Vec::new(),
            behind: Vec::new(),
            hungry: Vec::new(),
            deflater: Deflater::new(s.deflate, shared.metrics[id].clone()),
            tls: (shared.tls.as_ref()).map(|t| Arc::new((*t.config).clone())),
            tls_plain: Vec::new(),
            tls_flight: Vec::new(),
            look_up_peers: (shared.peers).needed(s.listen.iter().all(|a| a.ip().is_loopback())),
            peer_wait: Vec::new(),
            refused_peers: HashMap::new(),
            lag_tally: Tally::new(id, "readers closed for lagging:", ("oldest lag", "s")),
            slow_tally: Tally::new(id, "slow consumers closed:", ("largest queue", "MB")),
            refusals: RefusalSummary::new(id, now, &shared.metrics[id]),
            cqes: Vec::with_capacity(CQE_BATCH),
            drain: None,
            last_housekeeping: now,
            last_tls_rest: now,
            rested_since_trim: 0,
            last_trim: now,
            shared,
        })
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        self.acceptor.accept_on(&mut self.conns, 0);
        loop {
            self.now = Instant::now();
            self.tick =
                (self.now.duration_since(self.started).as_millis() / TICK.as_millis()) as Tick;
            let mut busy = self.drain_mail();
            busy |= self.reap_rings();
            self.feed_hungry();
            self.retry_peer_lookups();
            self.run_timers();
            if self.now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
                self.housekeeping();
            }
            if self.shared.shutdown.load(Ordering::Relaxed) && self.shutdown_step() {
                break;
            }
            busy |= self.run_fanouts();
            if let Some(relay) = self.relay.as_mut() {
                let forgotten = self.hub.take_forgotten();
                if !forgotten.is_empty() {
                    relay.forget(forgotten);
                }
            }
            // One relaxed store a turn: what `--max-channels` is checked
            // against on every shard.
            ShardMetrics::set(&self.metrics.owned_channels, self.hub.owned_count() as u64);
            self.end_turn();
            // Queues that drained at the flush catch up in the next turn.
            busy |= self.conns.has_hungry();
            if !busy {
                self.sleep();
            }
        }
        self.end_turn();
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn reap_rings(&mut self) -> bool {
        let mut any = false;
        for r in 0..self.conns.rings.len() {
            for _ in 0..CQE_ROUNDS {
                let ring = &mut self.conns.rings[r].ring;
                if !ring.has_work() {
                    break;
                }
                if let Err(e) = ring.flush_completions() {
                    tracing::error!(shard = self.id, ring = r, "io_uring_enter failed: {e}");
                }
                let mut cqes = std::mem::take(&mut self.cqes);
                self.conns.rings[r].ring.reap(&mut cqes, CQE_BATCH);
                if cqes.is_empty() {
                    self.cqes = cqes;
                    break;
                }
                any = true;
                for c in cqes.drain(..) {
                    self.on_completion(r, c);
                    self.drain_local();
                }
                self.cqes = cqes;
                self.conns.rings[r].ring.recycle_buffers();
            }
        }
        any
    }

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.expire(self.tick, &mut self.conns, &mut due);
        for key in due.drain(..) {
            self.dispatch(key, |p, ctx| p.handle_timer(ctx));
            self.drain_local();
        }
        self.due = due;
    }

    /// Starts a send for every connection with bytes queued, closes the
    /// draining ones that have nothing left, submits every ring, and wakes
    /// the shards sent mail.
    fn flush(&mut self) {
        self.submit_output();
        self.post.wake_peers();
    }

    /// [`Shard::flush`] without waking shards that were only sent
    /// deliveries: what runs before this shard's own fan-out.
    fn flush_answers(&mut self) {
        self.submit_output();
        self.post.wake_answered();
    }

    fn submit_output(&mut self) {
        self.conns.flush(&mut self.drained);
        for key in std::mem::take(&mut self.drained) {
            self.close_now(key);
        }
        for key in self.conns.take_broken() {
            self.dispatch(key, |p, ctx| p.handle_close(ctx));
        }
        for key in std::mem::take(&mut self.rearm) {
            self.conns.rearm_recv(key);
        }
        for cr in &mut self.conns.rings {
            if cr.ring.pending() > 0 {
                if let Err(e) = cr.ring.submit() {
                    tracing::error!(shard = self.id, "io_uring submit failed: {e}");
                }
            }
        }
    }

    fn end_turn(&mut self) {
        if let Some(d) = self.durable.as_mut() {
            d.submit(&mut self.hub, &mut self.post);
        }
        let doorbell = self.shared.mail.door(self.id).eventfd();
        self.conns.rings[0]
            .ring
            .arm_wake_read(doorbell, Op::Wake.tag(0, 0));
        self.flush();
        // What backlogs pin, for the node-wide cap publishers check.
        ShardMetrics::set(&self.metrics.pinned_bytes, self.hub.pinned() as u64);
    }

    fn sleep(&mut self) {
        let mail = self.shared.mail.clone();
        if !mail.park(self.id) {
            return;
        }
        // Sleep to the next tick at most, so timers stay on time.
        let elapsed = self.now.duration_since(self.started);
        let next_tick = TICK * (self.tick + 1);
        let timeout = next_tick
            .saturating_sub(elapsed)
            .max(Duration::from_millis(1));
        if let Err(e) = self.conns.rings[0].ring.submit_and_wait(timeout) {
            tracing::error!(shard = self.id, "io_uring wait failed: {e}");
        }
        mail.unpark(self.id);
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = self.now;
        if self.drain.is_none() {
            self.acceptor
                .check(&mut self.conns, &self.metrics, self.now);
        }
        self.check_lagging();
        // TLS sessions idle since the last pass drop their expanded keys
        // (`--tls-rest-after`): one pass touches every TLS session of the
        // shard, so it runs that often and no more.
        if self.now.duration_since(self.last_tls_rest) >= self.shared.settings.tls_rest_after {
            self.last_tls_rest = self.now;
            let rested = self.conns.rest_idle_tls();
            ShardMetrics::add(&self.metrics.tls_rests, rested);
            self.rested_since_trim += rested;
            // The keys were aws-lc's, in glibc's heap, which keeps what
            // is freed (and reuses it for the next keys): after many
            // rests, hand it back to the kernel at once — not often, as a
            // trim walks the heap (0.1–10 ms measured at 100k sessions).
            if self.rested_since_trim >= TLS_RESTS_WORTH_A_TRIM
                && self.now.duration_since(self.last_trim) >= MIN_TRIM_INTERVAL
            {
                let started = Instant::now();
                let released = uring::sys::trim_c_heap();
                tracing::debug!(
                    shard = self.id,
                    rested = self.rested_since_trim,
                    released,
                    "TLS keys rested; C heap trimmed in {:?}",
                    started.elapsed()
                );
                self.rested_since_trim = 0;
                self.last_trim = self.now;
            }
        }
        self.refusals.roll(self.now, &self.metrics);
        self.hub.expire(self.now);
        if let Some(relay) = self.relay.as_mut() {
            relay.housekeeping(&self.hub, self.now);
        }
        if self.id == 0 {
            // One table for the node: one shard sweeps it.
            self.shared.peers.sweep(self.now);
        }
        let stats = self.hub.stats();
        ShardMetrics::set(&self.metrics.history_evictions, stats.evictions);
        ShardMetrics::set(&self.metrics.channels, self.hub.channel_count() as u64);
    }

    // ---- dispatch ----------------------------------------------------------

    /// Runs `f` on connection `key`'s protocol state (see the module docs);
    /// `None` if the connection is gone.
    fn dispatch<R>(
        &mut self,
        key: ConnKey,
        f: impl FnOnce(&mut Protocol, &mut ConnCtx<'_>) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(key)?;
        let mut proto = std::mem::replace(&mut conn.proto, Protocol::Closed);
        let before = proto.gauge();
        let mut ctx = ConnCtx {
            key,
            now: self.tick,
            started: self.started,
            draining: self.drain.is_some(),
            shared: &self.shared,
            conns: &mut self.conns,
            timers: &mut self.timers,
            hub: &mut self.hub,
            post: &mut self.post,
            next_token: &mut self.next_token,
            behind: &mut self.behind,
            deflater: &mut self.deflater,
            requests: Requests::default(),
        };
        let r = f(&mut proto, &mut ctx);
        if ctx.requests.slow {
            let queued = ctx.conns.outbound(key);
            note_slow_consumer(&mut self.slow_tally, &self.metrics, self.now, queued);
            proto.handle_slow_consumer(&mut ctx);
            if !proto.is_closed() {
                ctx.conns.watch_notice(key); // a close frame is on its way
            }
        }
        let resume = ctx.requests.resume;
        let after = proto.gauge();
        if before != after {
            if let Some(t) = before {
                self.metrics.close(t);
            }
            if let Some(t) = after {
                self.metrics.open(t);
            }
        }
        let close = proto.is_closed() || (proto.is_draining() && self.conns.outbound(key) == 0);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.proto = proto;
        }
        if close {
            self.close_now(key);
        } else if resume {
            self.resume_input(key);
        }
        Some(r)
    }

    /// Closes the socket of a connection whose protocol has ended (it holds
    /// nothing in the hub any more); queued bytes are dropped.
    fn close_now(&mut self, key: ConnKey) {
        if !self.refused_peers.is_empty() {
            self.refused_peers.remove(&key);
        }
        if let Some(peer) = self.conns.release(key) {
            self.shared.peers.release(peer);
        }
    }

    /// A new connection in slot `slot` of ring `r`.
    fn open(&mut self, r: usize, slot: u32, listener: usize) {
        let ipv6 = self.acceptor.is_ipv6(listener);
        let peer = self.look_up_peers.then_some(ipv6);
        let tls = match (&self.tls, self.acceptor.is_tls(listener)) {
            (Some(config), true) => match TlsConn::new(config) {
                Ok(session) => Some(session),
                Err(e) => {
                    // Only a configuration rustls rejects: a bug.
                    tracing::error!(shard = self.id, "cannot start a TLS session: {e}");
                    None
                }
            },
            _ => None,
        };
        let (key, looked_up) = self.conns.install(r, slot, peer, tls);
        if !looked_up {
            self.peer_wait.push((key, ipv6));
        }
        self.dispatch(key, |p, ctx| *p = Protocol::accept(ctx));
    }

    /// Asks for the address of a new connection, for the per-address
    /// limits; while the ring's lookups are all in flight, it waits its
    /// turn in `peer_wait`.
    fn look_up_peer(&mut self, key: ConnKey, ipv6: bool) {
        let tag = Op::Peer.tag(key.slot(), key.gen());
        if !self.conns.rings[key.ring()]
            .ring
            .peer_name(key.slot(), ipv6, tag)
        {
            self.peer_wait.push((key, ipv6));
        }
    }

    /// Asks again for the addresses that found every lookup in flight.
    fn retry_peer_lookups(&mut self) {
        for (key, ipv6) in std::mem::take(&mut self.peer_wait) {
            if self.conns.get(key).is_some() {
                self.look_up_peer(key, ipv6);
            }
        }
    }

    /// The address of a new connection is known: count it, or refuse it
    /// with its reason.
    fn on_peer(&mut self, key: ConnKey, peer: Result<std::net::SocketAddr, i32>) {
        if self.conns.get(key).is_none() {
            return; // gone already
        }
        let ip = match peer {
            Ok(addr) => addr.ip(),
            Err(errno) => {
                // The peer reset before its address was read: it is going.
                tracing::debug!(
                    shard = self.id,
                    "peer address unknown: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
                return;
            }
        };
        let limits = self.shared.peers.limits();
        let status = StatusCode::TOO_MANY_REQUESTS;
        let refused = match self.shared.peers.admit(ip, self.now) {
            Admit::Yes(id) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.set_peer(id);
                }
                return;
            }
            Admit::Untracked => return,
            Admit::TooMany => Refused::new(
                Refusal::PeerConnections,
                status,
                format!(
                    "too many connections from {ip}: at most {} per address (--max-connections-per-ip)",
                    limits.connections
                ),
            ),
            Admit::TooFast => Refused::new(
                Refusal::PeerRate,
                status,
                format!(
                    "too many new connections from {ip}: at most {} a second per address (--max-connection-rate-per-ip)",
                    limits.rate
                ),
            )
            .retry_later(),
        };
        if self.dispatch(key, |p, ctx| p.hold_for_refusal(ctx)) == Some(true) {
            self.refused_peers.insert(key, refused);
        } else {
            self.dispatch(key, |p, ctx| p.refuse_peer(ctx, &refused));
        }
    }
}

/// Counts and logs (as a summary) a connection closed for sending without
/// reading.
fn note_slow_consumer(tally: &mut Tally, metrics: &ShardMetrics, now: Instant, queued: usize) {
    ShardMetrics::add(&metrics.slow_consumers, 1);
    tally.note(now, queued as f64 / 1e6, || {
        format!("closing a slow consumer: it sends without reading; {queued} bytes queued for it")
    });
}
