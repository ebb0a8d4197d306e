//! A shard: one thread, its rings, its connections, its part of the hub.
//!
//! # The loop
//! Each turn of [`Shard::run`]:
//! 1. reads the clock once (`now`, `tick`);
//! 2. drains mail from every other shard (publishes to own, replays,
//!    deliveries);
//! 3. reaps completions from every ring that has any (accepts, received
//!    bytes, finished sends, closes) and runs the protocol for each;
//! 4. fires due timers from the wheel (timeouts, pings);
//! 5. flushes every connection that got bytes this turn, re-arms receives,
//!    submits every ring, and rings the doorbells of shards it sent mail;
//! 6. sleeps on the home ring if the turn found nothing to do.
//!
//! Work per turn is bounded (completions per ring per turn, mail per peer
//! per turn), so one busy ring or peer cannot starve the rest.
//!
//! # Who touches what
//! Everything in a `Shard` is touched only by its thread. Other shards reach
//! it only through [`Mailboxes`] and its doorbell; `/metrics` reads its
//! counters (relaxed atomics it alone writes).

pub mod conn;
mod deliver;
pub mod io;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::ws::{encode, CloseCode};

use crate::capacity::Plan;
use crate::config::Settings;
use crate::hub::mail::{Mail, Mailboxes, ReplyTo};
use crate::hub::{Epoch, HistoryLimits, Hub, Unsubscribed};
use crate::metrics::{ShardMetrics, Transport};
use crate::runtime::ring::{Completion, Op, SetupError};
use crate::runtime::wheel::{self, TimerWheel};

use conn::{flags, ConnKey, Phase};
use io::{BufferPlan, Io, Queued, SendDone};

/// Completions handled per ring per turn.
const CQE_BATCH: usize = 512;
/// Rounds of reaping per ring per turn.
const CQE_ROUNDS: usize = 16;
/// Mail handled per peer per turn.
const MAIL_BATCH: usize = 4096;

/// What every shard shares, read-only.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub settings: Settings,
    /// The capacity plan.
    pub plan: Plan,
    /// The node's epoch.
    pub epoch: Epoch,
    /// Cross-shard queues and doorbells.
    pub mail: Arc<Mailboxes>,
    /// Every shard's counters, for `/metrics`.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Set on SIGTERM/SIGINT.
    pub shutdown: AtomicBool,
}

impl Shared {
    /// Converts a duration to wheel ticks (at least one).
    pub fn ticks(d: Duration) -> u32 {
        (d.as_millis() / wheel::TICK.as_millis()).max(1) as u32
    }
}

/// One shard. See the module docs.
#[derive(Debug)]
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) io: Io,
    pub(crate) hub: Hub,
    pub(crate) wheel: TimerWheel<ConnKey>,
    listeners: Vec<OwnedFd>,
    /// The ring whose accepts are armed.
    accept_ring: Option<usize>,
    /// Connections accepted per listener since the last housekeeping, to
    /// detect a listener whose queue fills while nothing is accepted.
    accepted: Vec<u64>,
    /// When an accept failure was last logged (failures are rate-limited).
    accept_warned: Option<Instant>,
    accept_failures_unlogged: u64,
    started: Instant,
    pub(crate) now: Instant,
    pub(crate) tick: u32,
    /// Peers sent mail this turn (bit per shard).
    to_wake: u64,
    /// Receives to re-arm at the end of the turn.
    rearm: Vec<ConnKey>,
    /// Connections whose queues drained while closing.
    drained: Vec<ConnKey>,
    cqes: Vec<Completion>,
    /// Target of the eventfd read on the home ring; leaked so that the
    /// kernel may write it at any time (8 bytes per shard, once).
    wake_buf: &'static mut u64,
    wake_armed: bool,
    /// Set once shutdown began: when to give up waiting.
    drain_deadline: Option<Instant>,
    /// The drain timeout passed and the remaining connections were closed.
    drain_forced: bool,
    last_housekeeping: Instant,
    pub(crate) next_token: u32,
    pub(crate) decoder: codec::ws::DecoderConfig,
    /// State of connections that hold several subscriptions (multiplexed
    /// WebSockets, multi-channel SSE streams). Single-channel subscribers
    /// keep theirs in `Conn` and have no entry.
    pub(crate) sessions: hashbrown::HashMap<ConnKey, Session>,
}

/// Per-connection state of connections with several subscriptions.
#[derive(Debug)]
pub(crate) enum Session {
    /// A multiplexed WebSocket.
    Mux(crate::transport::mux::MuxSession),
    /// A multi-channel SSE stream.
    SseMulti(crate::transport::sse::MultiStream),
}

impl Shard {
    /// Creates shard `id` with its home ring, inside its own thread (rings
    /// are single-issuer: the creating thread is the only one that may
    /// submit).
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        listeners: Vec<OwnedFd>,
    ) -> Result<Shard, SetupError> {
        let s = &shared.settings;
        let efd = shared.mail.door(id).fd();
        let io = Io::new(
            shared.plan,
            BufferPlan {
                count: s.recv_buffers,
                size: s.recv_buffer_size,
            },
            efd,
            s.max_outbound,
            shared.metrics[id].clone(),
        )?;
        let hub = Hub::new(
            id,
            shared.mail.shards(),
            shared.epoch,
            HistoryLimits {
                max_messages: s.history_size,
                max_age: s.history_ttl,
            },
        );
        let decoder = codec::ws::DecoderConfig {
            max_message_size: s.max_message_size as u64,
            ..codec::ws::DecoderConfig::server()
        };
        let now = Instant::now();
        Ok(Shard {
            id,
            io,
            hub,
            wheel: TimerWheel::new(),
            accepted: vec![0; listeners.len()],
            listeners,
            accept_ring: None,
            accept_warned: None,
            accept_failures_unlogged: 0,
            started: now,
            now,
            tick: 0,
            to_wake: 0,
            rearm: Vec::new(),
            drained: Vec::new(),
            cqes: Vec::with_capacity(CQE_BATCH),
            wake_buf: Box::leak(Box::new(0)),
            wake_armed: false,
            drain_deadline: None,
            drain_forced: false,
            last_housekeeping: now,
            next_token: 1,
            decoder,
            sessions: hashbrown::HashMap::new(),
            shared,
        })
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.io.metrics
    }

    /// When shutdown gives up waiting, once it has begun.
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        self.move_accepting(0);
        loop {
            self.now = Instant::now();
            self.tick = (self.now.duration_since(self.started).as_millis()
                / wheel::TICK.as_millis()) as u32;
            let mut busy = self.drain_mail();
            busy |= self.reap_rings();
            self.run_timers();
            if self.now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
                self.housekeeping();
            }
            if self.shared.shutdown.load(Ordering::Relaxed) && self.shutdown_step() {
                break;
            }
            self.end_turn();
            if !busy {
                self.sleep();
            }
        }
        self.end_turn();
        tracing::debug!(shard = self.id, "shard stopped");
    }

    // ---- the turn ----------------------------------------------------------

    fn drain_mail(&mut self) -> bool {
        let mail = self.shared.mail.clone();
        let mut any = false;
        for from in 0..mail.shards() {
            for _ in 0..MAIL_BATCH {
                let Some(m) = mail.recv(self.id, from) else {
                    break;
                };
                any = true;
                self.on_mail(m);
            }
        }
        any
    }

    fn reap_rings(&mut self) -> bool {
        let mut any = false;
        for r in 0..self.io.rings.len() {
            for _ in 0..CQE_ROUNDS {
                let cr = &mut self.io.rings[r];
                if !cr.ring.has_work() {
                    break;
                }
                if let Err(e) = cr.ring.flush_completions() {
                    tracing::error!(shard = self.id, ring = r, "io_uring_enter failed: {e}");
                }
                let mut cqes = std::mem::take(&mut self.cqes);
                cqes.clear();
                self.io.rings[r].ring.reap(&mut cqes, CQE_BATCH);
                if cqes.is_empty() {
                    self.cqes = cqes;
                    break;
                }
                any = true;
                for c in cqes.drain(..) {
                    self.on_completion(r, c);
                }
                self.cqes = cqes;
                self.io.rings[r].bufs.publish();
            }
        }
        any
    }

    fn end_turn(&mut self) {
        self.io.flush(&mut self.drained);
        for key in std::mem::take(&mut self.drained) {
            self.close_now(key);
        }
        for key in std::mem::take(&mut self.rearm) {
            self.io.rearm_recv(key);
        }
        if !self.wake_armed {
            // SAFETY: `wake_buf` is leaked ('static), so it outlives the read
            // even if the ring is torn down with the read still pending.
            unsafe {
                self.io.rings[0]
                    .ring
                    .read_eventfd(self.shared.mail.door(self.id).fd(), &raw mut *self.wake_buf)
            };
            self.wake_armed = true;
        }
        for cr in &mut self.io.rings {
            if cr.ring.pending() > 0 {
                if let Err(e) = cr.ring.submit() {
                    tracing::error!(shard = self.id, "io_uring submit failed: {e}");
                }
            }
        }
        let mail = &self.shared.mail;
        while self.to_wake != 0 {
            let to = self.to_wake.trailing_zeros() as usize;
            self.to_wake &= self.to_wake - 1;
            mail.wake(to);
        }
    }

    fn sleep(&mut self) {
        let mail = self.shared.mail.clone();
        if !mail.park(self.id) {
            return;
        }
        // Sleep to the next tick at most, so timers stay on time.
        let elapsed = self.now.duration_since(self.started);
        let next_tick = wheel::TICK * (self.tick + 1);
        let timeout = next_tick
            .saturating_sub(elapsed)
            .max(Duration::from_millis(1));
        if let Err(e) = self.io.rings[0].ring.submit_and_wait(timeout) {
            tracing::error!(shard = self.id, "io_uring wait failed: {e}");
        }
        mail.unpark(self.id);
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = self.now;
        self.check_listeners();
        self.hub.expire(self.now);
        let stats = self.hub.stats();
        let m = self.metrics();
        ShardMetrics::set(&m.history_evictions, stats.evictions);
        ShardMetrics::set(&m.channels, self.hub.channel_count() as u64);
    }

    // ---- accepting ---------------------------------------------------------

    /// Self-check, once a second: a listener with connections waiting in its
    /// queue that accepted none since the last check has lost its armed
    /// accept somehow. Log it (with what we know) and re-arm, so a stall
    /// lasts a second at most instead of until the clients give up.
    fn check_listeners(&mut self) {
        let accepted = std::mem::replace(&mut self.accepted, vec![0; self.listeners.len()]);
        let Some(r) = self.accept_ring else {
            return;
        };
        if self.drain_deadline.is_some() {
            return;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let waiting = crate::runtime::sys::listen_queue_len(l.as_raw_fd()).unwrap_or(0);
            if waiting > 0 && accepted[i] == 0 {
                tracing::warn!(
                    shard = self.id,
                    listener = i,
                    ring = r,
                    waiting,
                    "{waiting} connections waiting on a listener that accepted none for a second; re-arming its accept"
                );
                let cr = &mut self.io.rings[r];
                cr.ring.cancel_accept(i as u32);
                cr.ring.accept_multi(l.as_raw_fd(), i as u32);
            }
        }
    }

    /// Logs accept failures: the first at once, then at most one line per
    /// ten seconds with the count of those not logged.
    fn accept_failed(&mut self, errno: i32) {
        ShardMetrics::add(&self.metrics().accept_errors, 1);
        let recent = self
            .accept_warned
            .is_some_and(|t| self.now.duration_since(t) < Duration::from_secs(10));
        if recent {
            self.accept_failures_unlogged += 1;
            return;
        }
        let err = std::io::Error::from_raw_os_error(errno);
        let hint = match errno {
            libc::ENFILE => " (the ring's socket table is full; the kernel dropped the connection)",
            libc::EMFILE => " (out of file descriptors)",
            libc::ENOMEM | libc::ENOBUFS => " (out of kernel memory)",
            _ => "",
        };
        tracing::warn!(
            shard = self.id,
            unlogged = self.accept_failures_unlogged,
            "accept failed: {err}{hint}"
        );
        self.accept_warned = Some(self.now);
        self.accept_failures_unlogged = 0;
    }

    /// Arms accepts on ring `r` and cancels them on the ring that had them.
    fn move_accepting(&mut self, r: usize) {
        if self.accept_ring == Some(r) || self.drain_deadline.is_some() {
            return;
        }
        if let Some(old) = self.accept_ring.take() {
            let cr = &mut self.io.rings[old];
            cr.accepting = false;
            for i in 0..self.listeners.len() {
                cr.ring.cancel_accept(i as u32);
            }
        }
        let cr = &mut self.io.rings[r];
        cr.accepting = true;
        for (i, l) in self.listeners.iter().enumerate() {
            cr.ring.accept_multi(l.as_raw_fd(), i as u32);
        }
        self.accept_ring = Some(r);
    }

    /// Called when the accepting ring filled up: moves accepting to the
    /// emptiest ring with room, creating one if needed.
    fn rotate_accepting(&mut self) {
        let usable = self.io.usable_per_ring();
        let emptiest = (0..self.io.rings.len())
            .filter(|&r| self.io.rings[r].used < usable * 9 / 10)
            .min_by_key(|&r| self.io.rings[r].used);
        let target = match emptiest {
            Some(r) => Some(r),
            None if self.io.can_grow() => match self.io.add_ring() {
                Ok(r) => {
                    tracing::info!(
                        shard = self.id,
                        ring = r,
                        "ring {r} created ({} rings now)",
                        r + 1
                    );
                    Some(r)
                }
                Err(e) => {
                    tracing::error!(shard = self.id, "cannot create another ring: {e}");
                    None
                }
            },
            None => None,
        };
        match target {
            Some(r) => self.move_accepting(r),
            None => {
                if let Some(old) = self.accept_ring.take() {
                    let cr = &mut self.io.rings[old];
                    cr.accepting = false;
                    for i in 0..self.listeners.len() {
                        cr.ring.cancel_accept(i as u32);
                    }
                }
                tracing::warn!(
                    shard = self.id,
                    connections = self.io.used(),
                    "shard is at capacity: not accepting until connections close (raise --max-connections or the open-files limit)"
                );
            }
        }
    }

    // ---- completions -------------------------------------------------------

    fn on_completion(&mut self, r: usize, c: Completion) {
        let ud = c.user_data;
        match ud.op() {
            Some(Op::Accept) => self.on_accept(r, c),
            Some(Op::Recv) => self.on_recv(r, c),
            Some(Op::Send) => match self.io.on_send(r, ud.index(), c.result) {
                SendDone::Sent | SendDone::Ignore => {}
                SendDone::Drained(key) => self.close_now(key),
                SendDone::Failed(key, errno) => {
                    tracing::debug!(
                        shard = self.id,
                        "send failed: {}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                    self.close_now(key);
                }
            },
            Some(Op::Close) => {
                let cr = &mut self.io.rings[r];
                cr.used = cr.used.saturating_sub(1);
                if c.result < 0 {
                    tracing::warn!(
                        shard = self.id,
                        "closing a socket failed: {}",
                        std::io::Error::from_raw_os_error(-c.result)
                    );
                }
                if self.accept_ring.is_none()
                    && self.drain_deadline.is_none()
                    && self.io.rings[r].used < self.io.usable_per_ring() * 9 / 10
                {
                    self.move_accepting(r);
                }
            }
            Some(Op::Wake) => self.wake_armed = false,
            Some(Op::Shutdown | Op::Cancel) | None => {}
        }
    }

    fn on_accept(&mut self, r: usize, c: Completion) {
        let listener = c.user_data.index() as usize;
        if c.result >= 0 {
            if let Some(n) = self.accepted.get_mut(listener) {
                *n += 1;
            }
            let key = self.io.install(r, c.result as u32, self.tick);
            let m = self.metrics();
            ShardMetrics::add(&m.accepts, 1);
            m.open(Transport::Http);
            let deadline = self.tick + Shared::ticks(self.settings().handshake_timeout);
            self.set_deadline(key, deadline);
            if self.io.rings[r].used >= self.io.usable_per_ring() && self.accept_ring == Some(r) {
                self.rotate_accepting();
            }
        } else {
            let errno = -c.result;
            if errno != libc::ECANCELED {
                self.accept_failed(errno);
            }
            if errno == libc::ENFILE && self.accept_ring == Some(r) {
                self.rotate_accepting();
            }
        }
        // A multishot accept ends on errors, on a full completion queue and
        // on cancellation; re-arm it unless we cancelled it (rotation and the
        // listener self-check arm their own).
        if !c.more()
            && c.result != -libc::ECANCELED
            && self.accept_ring == Some(r)
            && self.io.rings[r].accepting
        {
            if let Some(l) = self.listeners.get(listener) {
                self.io.rings[r]
                    .ring
                    .accept_multi(l.as_raw_fd(), listener as u32);
            }
        }
    }

    fn on_recv(&mut self, r: usize, c: Completion) {
        let key = ConnKey::new(r as u8, c.user_data.index(), c.user_data.gen());
        let alive = self.io.conn(key).is_some();
        if c.result > 0 {
            let Some(mut buf) = c
                .buffer_id()
                .and_then(|bid| self.io.rings[r].bufs.take(bid, c.result as usize))
            else {
                tracing::error!(shard = self.id, "receive completion without a valid buffer");
                return;
            };
            if alive {
                ShardMetrics::add(&self.metrics().bytes_in, c.result as u64);
                if let Some(conn) = self.io.conn_mut(key) {
                    conn.last_rx = self.tick;
                }
                self.on_input(key, buf.bytes());
            }
            self.io.rings[r].bufs.recycle(buf);
            if !c.more() && self.io.conn(key).is_some() {
                self.rearm.push(key);
            }
        } else if c.result == 0 {
            if alive {
                self.close_now(key); // the peer closed its end
            }
        } else if -c.result == libc::ENOBUFS {
            ShardMetrics::add(&self.metrics().recv_nobufs, 1);
            if alive {
                self.rearm.push(key);
            }
        } else if alive {
            tracing::debug!(
                shard = self.id,
                "receive failed: {}",
                std::io::Error::from_raw_os_error(-c.result)
            );
            self.close_now(key);
        }
    }

    // ---- input -------------------------------------------------------------

    /// Feeds received bytes to the connection's protocol. Bytes it cannot
    /// use yet (a partial head or frame) are kept in its `inbuf`.
    fn on_input(&mut self, key: ConnKey, data: &mut [u8]) {
        let stash = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .map(|e| std::mem::take(&mut e.inbuf))
            .filter(|b| !b.is_empty());
        match stash {
            Some(mut stash) => {
                stash.extend_from_slice(data);
                let used = self.process(key, &mut stash);
                bytes::Buf::advance(&mut stash, used);
                self.keep_unused(key, stash);
            }
            None => {
                let used = self.process(key, data);
                if used < data.len() {
                    self.keep_unused(key, bytes::BytesMut::from(&data[used..]));
                }
            }
        }
    }

    fn keep_unused(&mut self, key: ConnKey, rest: bytes::BytesMut) {
        let limit = self.settings().max_message_size + self.settings().max_head_size + 64 * 1024;
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        if rest.is_empty() {
            conn.shrink();
            return;
        }
        if rest.len() > limit {
            tracing::debug!(
                shard = self.id,
                "peer sent {} bytes it may not send yet; closing",
                rest.len()
            );
            self.close_now(key);
            return;
        }
        conn.ext().inbuf = rest;
    }

    /// Runs the connection's protocol over `buf`; returns the bytes used.
    fn process(&mut self, key: ConnKey, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let Some(conn) = self.io.conn(key) else {
                return buf.len();
            };
            let step = match conn.phase {
                Phase::Http => self.on_http_input(key, &mut buf[pos..]),
                Phase::Body => self.on_body_input(key, &mut buf[pos..]),
                Phase::WsSub | Phase::WsEcho | Phase::WsMux | Phase::Closing => {
                    self.on_ws_input(key, &mut buf[pos..])
                }
                // Pipelined bytes wait until the publish or poll is answered.
                Phase::Poll => Step::Wait(0),
                // An event stream's client has nothing more to say.
                Phase::Sse | Phase::Draining | Phase::Free => Step::Discard,
            };
            match step {
                Step::Continue(n) => pos += n,
                Step::Wait(n) => return pos + n,
                Step::Discard => return buf.len(),
            }
        }
        pos
    }

    /// Continues with bytes kept while the connection waited (after a
    /// publish was answered).
    pub(crate) fn resume_input(&mut self, key: ConnKey) {
        let stash = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .map(|e| std::mem::take(&mut e.inbuf))
            .filter(|b| !b.is_empty());
        if let Some(mut stash) = stash {
            let used = self.process(key, &mut stash);
            bytes::Buf::advance(&mut stash, used);
            self.keep_unused(key, stash);
        } else if let Some(conn) = self.io.conn_mut(key) {
            conn.shrink();
        }
    }

    // ---- output helpers ----------------------------------------------------

    /// Queues bytes; a subscriber over its outbound limit is closed as a
    /// slow consumer.
    pub(crate) fn send(&mut self, key: ConnKey, bytes: Bytes) {
        if self.io.queue(key, bytes) == Queued::Overflow {
            self.slow_consumer(key);
        }
    }

    fn slow_consumer(&mut self, key: ConnKey) {
        let Some(conn) = self.io.conn(key) else {
            return;
        };
        let phase = conn.phase;
        let queued = conn.outbound_bytes();
        ShardMetrics::add(&self.metrics().slow_consumers, 1);
        tracing::info!(
            shard = self.id,
            queued,
            "closing a slow consumer: {queued} bytes queued, limit {} (--max-outbound)",
            self.settings().max_outbound
        );
        self.io.discard_queued(key);
        if phase.is_ws() {
            self.initiate_close(
                key,
                CloseCode::POLICY_VIOLATION,
                "slow consumer: outbound queue overflow",
            );
        } else {
            self.close_now(key);
        }
    }

    // ---- closing -----------------------------------------------------------

    /// Moves a connection to `phase`, keeping the transport gauges right.
    pub(crate) fn set_phase(&mut self, key: ConnKey, phase: Phase) {
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        let (old, new) = (conn.phase.transport(), phase.transport());
        conn.phase = phase;
        if old != new {
            let m = &self.io.metrics;
            if let Some(t) = old {
                m.close(t);
            }
            if let Some(t) = new {
                m.open(t);
            }
        }
    }

    /// Removes every subscription of a connection (it stays open).
    pub(crate) fn detach(&mut self, key: ConnKey) {
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        let (chan, sub) = (conn.chan, conn.sub);
        conn.chan = u32::MAX;
        conn.sub = u32::MAX;
        if chan != u32::MAX {
            self.unsubscribe(key, chan, sub);
        }
        match self.sessions.remove(&key) {
            Some(Session::Mux(mux)) => self.mux_leave_all(key, mux),
            Some(Session::SseMulti(multi)) => {
                for c in multi.channels {
                    self.unsubscribe(key, c.chan, c.sub);
                }
            }
            None => {}
        }
    }

    /// Removes one subscription; tells the owner when it was this shard's
    /// last subscriber of the channel.
    pub(crate) fn unsubscribe(&mut self, key: ConnKey, chan: u32, sub: u32) {
        if let Unsubscribed::LastLocal(channel) = self.hub.remove_sub(chan, sub, key) {
            let owner = self.hub.owner(&channel);
            self.mail_to(
                owner,
                Mail::Unsubscribe {
                    from: self.id,
                    channel,
                },
            );
        }
    }

    /// Closes the socket now; queued bytes are dropped.
    pub(crate) fn close_now(&mut self, key: ConnKey) {
        if self.io.conn(key).is_none() {
            return;
        }
        self.detach(key);
        self.set_phase(key, Phase::Free);
        // `set_phase(Free)` made the connection invisible to `conn()`;
        // release the slot by generation.
        self.io.release_slot(key);
    }

    /// Sends what is queued, then closes (within the close timeout).
    pub(crate) fn close_after_flush(&mut self, key: ConnKey) {
        self.detach(key);
        let deadline = self.tick + Shared::ticks(self.settings().close_timeout);
        self.set_phase(key, Phase::Draining);
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        if conn.out.is_none() && !conn.has(flags::SENDING) {
            self.close_now(key);
            return;
        }
        self.set_deadline(key, deadline);
    }

    /// Starts the WebSocket closing handshake from our side.
    pub(crate) fn initiate_close(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
        let Some(phase) = self.io.conn(key).map(|c| c.phase) else {
            return;
        };
        if !matches!(phase, Phase::WsSub | Phase::WsEcho | Phase::WsMux) {
            return;
        }
        self.detach(key);
        let mut frame = bytes::BytesMut::with_capacity(4 + reason.len());
        if encode::close(&mut frame, Some(code), reason).is_err() {
            let _ = encode::close(&mut frame, Some(code), "");
        }
        self.send(key, frame.freeze());
        let deadline = self.tick + Shared::ticks(self.settings().close_timeout);
        self.set_phase(key, Phase::Closing);
        self.set_deadline(key, deadline);
    }

    // ---- timers ------------------------------------------------------------

    /// Asks for [`Shard::on_timer`] at `tick` (replacing any earlier wish).
    pub(crate) fn set_deadline(&mut self, key: ConnKey, tick: u32) {
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        let tick = tick.max(1);
        conn.deadline = tick;
        if conn.scheduled == 0 || tick < conn.scheduled {
            conn.scheduled = tick;
            self.wheel.schedule(tick, key);
        }
    }

    fn run_timers(&mut self) {
        if self.tick <= self.wheel.now() {
            return;
        }
        let mut fired = Vec::new();
        self.wheel.advance(self.tick, &mut fired);
        for e in fired {
            let key = e.item;
            let Some(conn) = self.io.conn_mut(key) else {
                continue;
            };
            if conn.scheduled != e.due {
                continue; // superseded by an earlier entry
            }
            conn.scheduled = 0;
            let deadline = conn.deadline;
            if deadline == 0 {
                continue;
            }
            if deadline > self.tick {
                conn.scheduled = deadline;
                self.wheel.schedule(deadline, key);
                continue;
            }
            conn.deadline = 0;
            self.on_timer(key);
        }
    }

    fn on_timer(&mut self, key: ConnKey) {
        let Some(conn) = self.io.conn(key) else {
            return;
        };
        let (phase, last_rx, served) = (conn.phase, conn.last_rx, conn.has(flags::SERVED));
        match phase {
            Phase::Http => {
                let partial = conn.ext.as_ref().is_some_and(|e| !e.inbuf.is_empty());
                if partial || !served {
                    // Slowloris or silent peer: the head did not come in time.
                    self.metrics().refuse(crate::metrics::Refusal::Timeout);
                    if partial {
                        self.send(
                            key,
                            Bytes::from_static(codec::http::responses::REQUEST_TIMEOUT),
                        );
                        self.close_after_flush(key);
                    } else {
                        self.close_now(key);
                    }
                } else {
                    self.close_now(key); // idle keep-alive connection
                }
            }
            Phase::Body => {
                self.metrics().refuse(crate::metrics::Refusal::Timeout);
                self.send(
                    key,
                    Bytes::from_static(codec::http::responses::REQUEST_TIMEOUT),
                );
                self.close_after_flush(key);
            }
            Phase::Sse => {
                self.send(key, Bytes::from_static(codec::sse::HEARTBEAT));
                let interval = Shared::ticks(self.settings().sse_heartbeat);
                self.set_deadline(key, self.tick + interval);
            }
            Phase::Poll => self.poll_timed_out(key),
            Phase::WsSub | Phase::WsEcho | Phase::WsMux => {
                let interval = Shared::ticks(self.settings().ping_interval);
                if self.tick.saturating_sub(last_rx) >= 2 * interval {
                    ShardMetrics::add(&self.metrics().ping_timeouts, 1);
                    tracing::debug!(
                        shard = self.id,
                        "closing a WebSocket silent for two ping intervals"
                    );
                    self.close_now(key);
                } else {
                    self.send(key, Bytes::from_static(&[0x89, 0x00]));
                    self.set_deadline(key, self.tick + interval);
                }
            }
            Phase::Closing | Phase::Draining => self.close_now(key),
            Phase::Free => {}
        }
    }

    // ---- mail --------------------------------------------------------------

    pub(crate) fn mail_to(&mut self, to: usize, mail: Mail) {
        debug_assert_ne!(to, self.id);
        self.shared.mail.send(self.id, to, mail);
        self.to_wake |= 1 << to;
    }

    fn on_mail(&mut self, mail: Mail) {
        match mail {
            Mail::Deliver(msg) => self.deliver(&msg, false),
            Mail::Publish { reply, items } => {
                let ids = items
                    .into_iter()
                    .map(|item| {
                        let id = if item.ephemeral {
                            self.publish_ephemeral(&item.channel, item.kind, item.payload)
                        } else {
                            self.publish_owned(&item.channel, item.kind, item.payload)
                        };
                        (item.index, id)
                    })
                    .collect();
                self.mail_to(reply.shard, Mail::Published { reply, ids });
            }
            Mail::Published { reply, ids } => self.on_published(reply, ids),
            Mail::Subscribe {
                from,
                conn,
                chan,
                sub,
                channel,
                since,
                client,
            } => {
                let replay = self.hub.owner_subscribe(&channel, from, since);
                self.mail_to(
                    from,
                    Mail::Replayed {
                        conn,
                        chan,
                        sub,
                        replay,
                    },
                );
                if let Some(client) = client {
                    self.presence_joined(&channel, client);
                }
            }
            Mail::Left { channel, client } => self.presence_left(&channel, client),
            Mail::PresenceQuery { reply, channel } => {
                let clients = self.hub.presence(&channel);
                self.mail_to(
                    reply.shard,
                    Mail::Presence {
                        reply,
                        channel,
                        clients,
                    },
                );
            }
            Mail::Presence {
                reply,
                channel,
                clients,
            } => self.mux_presence_answer(reply, &channel, &clients),
            Mail::Replayed {
                conn,
                chan,
                sub,
                replay,
            } => self.apply_replay(conn, chan, sub, replay),
            Mail::Unsubscribe { from, channel } => self.hub.owner_unsubscribe(&channel, from),
        }
    }

    /// Publishes on a channel this shard owns: assigns the id, records
    /// history, mails the message to interested shards and delivers it to
    /// local subscribers.
    pub(crate) fn publish_owned(
        &mut self,
        channel: &crate::hub::ChannelName,
        kind: codec::ws::DataKind,
        payload: Bytes,
    ) -> crate::hub::MsgId {
        let (msg, interested) = self.hub.publish(channel, kind, payload, self.now);
        ShardMetrics::add(&self.io.metrics.published, 1);
        self.fan_out(&msg, interested)
    }

    /// Sends a message this shard owns to every interested shard (one item
    /// each) and delivers it to the local subscribers; returns its id.
    fn fan_out(
        &mut self,
        msg: &Arc<crate::hub::Message>,
        interested: crate::hub::ShardSet,
    ) -> crate::hub::MsgId {
        for shard in interested.iter() {
            self.mail_to(shard, Mail::Deliver(msg.clone()));
        }
        self.deliver(msg, true);
        msg.id
    }

    /// Publishes a live-only message on a channel this shard owns.
    pub(crate) fn publish_ephemeral(
        &mut self,
        channel: &crate::hub::ChannelName,
        kind: codec::ws::DataKind,
        payload: Bytes,
    ) -> crate::hub::MsgId {
        let (msg, interested) = self.hub.publish_live(
            channel,
            kind,
            payload,
            crate::hub::Event::Ephemeral,
            self.now,
        );
        self.fan_out(&msg, interested)
    }

    /// On the owner: a client joined; tell the channel's multiplexed
    /// subscribers.
    pub(crate) fn presence_joined(
        &mut self,
        channel: &crate::hub::ChannelName,
        client: crate::hub::ClientId,
    ) {
        if self.hub.presence_join(channel, client) {
            self.presence_event(channel, crate::hub::Event::Joined(client));
        }
    }

    /// On the owner: a client left.
    pub(crate) fn presence_left(
        &mut self,
        channel: &crate::hub::ChannelName,
        client: crate::hub::ClientId,
    ) {
        if self.hub.presence_leave(channel, client) {
            self.presence_event(channel, crate::hub::Event::Left(client));
        }
    }

    fn presence_event(&mut self, channel: &crate::hub::ChannelName, event: crate::hub::Event) {
        let (msg, interested) = self.hub.publish_live(
            channel,
            codec::ws::DataKind::Text,
            Bytes::new(),
            event,
            self.now,
        );
        self.fan_out(&msg, interested);
    }

    fn on_published(&mut self, reply: ReplyTo, ids: Vec<(u32, crate::hub::MsgId)>) {
        let key = reply.conn;
        if self.io.conn(key).is_some_and(|c| c.phase == Phase::WsMux) {
            self.mux_published(reply, ids);
            return;
        }
        let Some(pending) = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .and_then(|e| e.publishes.iter_mut().find(|p| p.token == reply.token))
        else {
            return;
        };
        for (i, id) in ids {
            if let Some(slot) = pending.ids.get_mut(i as usize) {
                *slot = Some(id);
            }
        }
        pending.outstanding -= 1;
        self.answer_publishes(key);
    }

    // ---- shutdown ----------------------------------------------------------

    /// One step of graceful shutdown; `true` once the shard may stop.
    fn shutdown_step(&mut self) -> bool {
        let deadline = match self.drain_deadline {
            Some(d) => d,
            None => {
                let d = self.now + self.settings().drain_timeout;
                self.drain_deadline = Some(d);
                if let Some(r) = self.accept_ring.take() {
                    let cr = &mut self.io.rings[r];
                    cr.accepting = false;
                    for i in 0..self.listeners.len() {
                        cr.ring.cancel_accept(i as u32);
                    }
                }
                for key in self.live_keys() {
                    let Some(conn) = self.io.conn(key) else {
                        continue;
                    };
                    match conn.phase {
                        Phase::WsSub | Phase::WsEcho | Phase::WsMux => {
                            self.initiate_close(key, CloseCode::GOING_AWAY, "server shutting down")
                        }
                        Phase::Poll => self.poll_timed_out(key),
                        Phase::Sse => self.close_now(key),
                        Phase::Http if conn.ext.as_ref().is_none_or(|e| e.inbuf.is_empty()) => {
                            self.close_now(key)
                        }
                        _ => {}
                    }
                }
                d
            }
        };
        if self.now >= deadline && !self.drain_forced {
            // Past the drain timeout: drop whatever is still open, once.
            self.drain_forced = true;
            for key in self.live_keys() {
                self.close_now(key);
            }
        }
        // `used` counts every slot until its close completes, so it is zero
        // only when nothing is open; after the forced close nothing is open
        // either, and kernel closes get one more second.
        self.io.used() == 0 || (self.drain_forced && self.now >= deadline + Duration::from_secs(1))
    }

    fn live_keys(&self) -> Vec<ConnKey> {
        let mut keys = Vec::new();
        for (r, cr) in self.io.rings.iter().enumerate() {
            for (slot, c) in cr.conns.iter().enumerate() {
                if c.phase != Phase::Free {
                    keys.push(ConnKey::new(r as u8, slot as u32, c.gen));
                }
            }
        }
        keys
    }
}

/// What a protocol handler did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Used this many bytes; hand the rest to the connection's (possibly
    /// new) phase.
    Continue(usize),
    /// Used this many bytes; the rest must wait for more input (or for an
    /// answer) and is kept.
    Wait(usize),
    /// The connection stops reading: drop the rest.
    Discard,
}
