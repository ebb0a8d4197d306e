//! One worker: a thread, a ring (with its receive buffers and its sends in
//! flight) and its share of the connections. See the module docs of
//! [`super`].
//!
//! # Connection life
//! ```text
//! Idle ─start─▶ Connecting ─SEND ok─▶ Handshaking ─Ready─▶ Open
//!                   │ chain error         │ error/timeout     │ EOF, close frame, error
//!                   ▼                     ▼                   ▼
//!                Closing ◀────────────────┴───────────────────┘   (cancel recv + close slot)
//!                   │ CLOSE completion
//!                   ▼
//!                 Idle  ── reconnect (churn) ──▶ Connecting
//! ```
//! Every completion carries the slot's generation — in its tag, or, for a
//! send, in the owner the ring hands back with it — and completions of an
//! earlier connection in the same slot are recognised and ignored.
//!
//! # TLS
//! A `wss://` or `https://` fleet's connections send a ClientHello where a
//! plaintext one sends its request (the connect chain's send), and stay
//! `Handshaking` through the TLS handshake; once it completes, the request
//! is sealed and sent, and the transport's own handshake follows as usual.
//! Received bytes go through the connection's [`TlsConn`] to the
//! transport, and whatever the transport sends (pongs, polls) is sealed on
//! its way to the send queue. The sessions live in a side table beside the
//! connections, one box per connection that exists, freed when it closes:
//! a plaintext fleet has no table, so its connections pay nothing for TLS.
//!
//! # Sends
//! The ring owns the bytes of every send until its completion is reaped
//! and passed to [`Ring::finish_send`], so a connection closed (and its
//! slot reused) while a send is in the kernel frees nothing the kernel
//! still reads. A connection has at most one send in flight: the connect
//! chain's request, then whatever was queued meanwhile, in order; the part
//! of a short send the kernel did not take goes back in front of the queue.
//!
//! # Bounds
//! At most `inflight` attempts per ring; every attempt ends within the
//! connect timeout; the loop wakes at least every 50 ms to read commands,
//! and stops on `Stop` or when the fleet is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringcast_uring::{Completion, ConnectChain, FinishedSend, Ring, RingConfig, UserData};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion};

use super::op::{errno_name, Op};
use super::{channel_name, Cmd, Collected, Counters, FleetConfig, Phase};
use crate::marker::now_nanos;
use crate::stats::{latency_ns, DeliveryCounts, LatencyHist, Seen, SeqTracker};
use crate::transport::tls::{self, End, Established, TlsConn};
use crate::transport::{ws, Delivery, Kind, Proto, RequestCtx, Step};

/// Submission queue entries per ring.
const SQ: u32 = 4096;
/// Completion queue entries per ring (a fan-out burst posts one per connection).
const CQ: u32 = 32768;
/// Receive buffers per ring and their size.
const BUFS: u16 = 1024;
const BUF_SIZE: u32 = 4096;
/// Most completions handled per loop turn.
const BATCH: usize = 4096;

pub(super) struct Spec {
    pub id: usize,
    pub base: u64,
    pub count: u32,
    pub endpoints: (u64, u64),
    pub cfg: Arc<FleetConfig>,
    pub counters: Arc<Counters>,
    pub live: Arc<Mutex<LatencyHist>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Idle,
    Connecting,
    Handshaking,
    Open,
    Closing,
}

struct Conn {
    gen: u32,
    st: St,
    started: u64,
    /// First real error of the connect chain: (op, errno).
    chain_err: Option<(Op, i32)>,
    timed_out: bool,
    proto: Proto,
    /// Bytes waiting for the send in flight to finish.
    queued: Vec<u8>,
    /// A send of this connection is in flight (the ring owns its bytes).
    sending: bool,
    tracker: Option<SeqTracker>,
    tracker_run: u32,
    last_id: Option<Box<str>>,
    reconnect: bool,
    /// Attempts retried because their source endpoint was still in use.
    bind_retries: u8,
}

struct Worker {
    spec: Spec,
    ring: Ring,
    conns: Vec<Conn>,
    ctxs: Vec<RequestCtx>,
    pending: VecDeque<u32>,
    initial_started: u64,
    ramp_start: u64,
    inflight: u32,
    attempts: VecDeque<(u64, u32, u32)>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    next_endpoint: u64,
    phase: Option<Arc<Phase>>,
    counts: DeliveryCounts,
    latency: LatencyHist,
    connect: LatencyHist,
    live: LatencyHist,
    errors: HashMap<String, u64>,
    churn_rate: f64,
    churn_acc: f64,
    churn_last: u64,
    rng: u64,
    out: Vec<u8>,
    got: Vec<Delivery>,
    /// What the WebSocket connections share (the permessage-deflate
    /// inflater), so that none of them holds it.
    ws: ws::Shared,
    /// TLS fleets only.
    tls: Option<WorkerTls>,
    /// TLS: from socket creation to the end of the handshake.
    handshake: LatencyHist,
}

/// A TLS fleet's share in one worker.
struct WorkerTls {
    /// This worker's client configuration (its own session store).
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// Each slot's session while its connection exists: the side table.
    conns: Vec<Option<Box<TlsConn>>>,
    /// Scratch: what one receive decrypted.
    plain: Vec<u8>,
    /// Scratch: the handshake records (or alert) one receive made.
    flight: Vec<u8>,
}

pub(super) fn run(spec: Spec, rx: Receiver<Cmd>, ready: Sender<Result<(), String>>) {
    let mut w = match Worker::new(spec) {
        Ok(w) => {
            let _ = ready.send(Ok(()));
            w
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    w.run(rx);
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn sub(a: &AtomicU64, n: u64) {
    a.fetch_sub(n, Ordering::Relaxed);
}

/// The tag of connection `slot`/`gen`'s operation `op`.
fn tag(op: Op, slot: u32, gen: u32) -> UserData {
    UserData::new(op as u8, slot, gen)
}

/// The owner of a send: the connection it belongs to.
fn send_owner(slot: u32, gen: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(gen)
}

/// `(slot, gen)` of a send's owner.
fn owner_conn(owner: u64) -> (u32, u32) {
    ((owner >> 32) as u32, owner as u32)
}

impl Worker {
    fn new(spec: Spec) -> Result<Worker, String> {
        let cfg = spec.cfg.clone();
        let ring = Ring::new(RingConfig {
            sq: SQ,
            cq: CQ,
            slots: spec.count.max(1),
            buffers: Some((BUFS, BUF_SIZE)),
        })
        .map_err(|e| super::explain_setup_error(&e))?;
        super::check_opcodes(&ring)?;
        let host: Arc<str> = Arc::from(cfg.url.host.as_str());
        let resume: Arc<str> = Arc::from(cfg.resume_param.as_str());
        let headers: Arc<str> = cfg
            .headers
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect::<String>()
            .into();
        // One request context per channel this worker serves.
        let channels = cfg.channels.max(1);
        let needed = u64::from(spec.count).min(u64::from(channels));
        let mut ctxs = Vec::with_capacity(needed as usize);
        for k in 0..needed {
            let ch = ((spec.base + k) % u64::from(channels)) as u32;
            let name = channel_name(&cfg.channel_prefix, ch);
            ctxs.push(RequestCtx {
                host: host.clone(),
                target: Arc::from(cfg.url.target(&name, &[]).as_str()),
                resume_param: resume.clone(),
                headers: headers.clone(),
                want_ids: cfg.want_ids,
                deflate: cfg.deflate && cfg.kind == Kind::Ws,
                poll_timeout_s: cfg.poll_timeout_s,
                poll_interval: cfg.poll_interval,
            });
        }
        let conns = (0..spec.count)
            .map(|_| Conn {
                gen: 0,
                st: St::Idle,
                started: 0,
                chain_err: None,
                timed_out: false,
                proto: Proto::new(cfg.kind, cfg.want_ids),
                queued: Vec::new(),
                sending: false,
                tracker: None,
                tracker_run: 0,
                last_id: None,
                reconnect: false,
                bind_retries: 0,
            })
            .collect();
        let tls = cfg.tls.as_ref().map(|t| WorkerTls {
            config: t.client.worker_config(spec.count),
            name: t.name.clone(),
            conns: (0..spec.count).map(|_| None).collect(),
            plain: Vec::new(),
            flight: Vec::new(),
        });
        let now = now_nanos();
        Ok(Worker {
            ring,
            conns,
            ctxs,
            pending: (0..spec.count).collect(),
            initial_started: 0,
            ramp_start: now,
            inflight: 0,
            attempts: VecDeque::new(),
            timers: BinaryHeap::new(),
            // Start somewhere else in the range each run: sockets of a
            // previous run may still hold the first endpoints for a moment.
            next_endpoint: spec.endpoints.0
                + (now ^ u64::from(std::process::id())).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    % (spec.endpoints.1 - spec.endpoints.0).max(1),
            phase: None,
            counts: DeliveryCounts::default(),
            latency: LatencyHist::new(),
            connect: LatencyHist::new(),
            live: LatencyHist::new(),
            errors: HashMap::new(),
            churn_rate: 0.0,
            churn_acc: 0.0,
            churn_last: now,
            rng: 0x2545_f491_4f6c_dd1d ^ (spec.id as u64 + 1),
            out: Vec::new(),
            got: Vec::new(),
            ws: ws::Shared::default(),
            tls,
            handshake: LatencyHist::new(),
            spec,
        })
    }

    fn channel_of(&self, slot: u32) -> u32 {
        ((self.spec.base + u64::from(slot)) % u64::from(self.spec.cfg.channels.max(1))) as u32
    }

    fn ctx_index(&self, slot: u32) -> usize {
        slot as usize % self.ctxs.len().max(1)
    }

    fn run(&mut self, rx: Receiver<Cmd>) {
        let mut done = Vec::with_capacity(BATCH);
        let mut last_flush = now_nanos();
        loop {
            match self.commands(&rx) {
                Ok(true) => {}
                Ok(false) => break,
                Err(()) => break,
            }
            let now = now_nanos();
            self.start_connects(now);
            self.expire_attempts(now);
            self.fire_timers(now);
            self.churn_tick(now);
            let wait = self.wait_time(now);
            if let Err(e) = self.ring.submit_and_wait(wait) {
                *self
                    .errors
                    .entry(format!(
                        "ring_{}",
                        errno_name(e.raw_os_error().unwrap_or(0))
                    ))
                    .or_default() += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            self.ring.reap(&mut done, BATCH);
            for c in done.drain(..) {
                self.on_completion(c);
            }
            // Receive buffers dropped while handling the batch go back to
            // the kernel now rather than at the next reap.
            self.ring.recycle_buffers();
            let now = now_nanos();
            if now - last_flush > 200_000_000 {
                last_flush = now;
                if let Ok(mut l) = self.spec.live.lock() {
                    l.merge(&self.live);
                }
                self.live.clear();
            }
        }
        // Dropping the ring closes every socket; SO_LINGER {1,0} makes each a reset.
    }

    /// Handles queued commands; `Ok(false)` to stop.
    fn commands(&mut self, rx: &Receiver<Cmd>) -> Result<bool, ()> {
        loop {
            match rx.try_recv() {
                Ok(Cmd::Phase(p, ack)) => {
                    self.start_phase(p);
                    let _ = ack.send(());
                }
                Ok(Cmd::Collect(tx)) => {
                    let _ = tx.send(self.collect());
                }
                Ok(Cmd::Churn(r)) => {
                    self.churn_rate = r.max(0.0);
                    self.churn_acc = 0.0;
                    self.churn_last = now_nanos();
                }
                Ok(Cmd::Stop) => return Ok(false),
                Err(TryRecvError::Empty) => return Ok(true),
                Err(TryRecvError::Disconnected) => return Err(()),
            }
        }
    }

    fn wait_time(&self, now: u64) -> Duration {
        let mut ns: u64 = 50_000_000;
        if !self.pending.is_empty() && self.inflight < self.spec.cfg.inflight {
            ns = 1_000_000;
        }
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            ns = ns.min(at.saturating_sub(now).max(100_000));
        }
        if self.churn_rate > 0.0 {
            ns = ns.min(10_000_000);
        }
        Duration::from_nanos(ns)
    }

    fn start_connects(&mut self, now: u64) {
        let cap = self.spec.cfg.inflight;
        let rate = self.spec.cfg.connect_rate.map(|r| {
            r / super::Fleet::rings_for(self.spec.cfg.conns, self.spec.cfg.per_ring) as f64
        });
        while self.inflight < cap {
            let Some(&slot) = self.pending.front() else {
                break;
            };
            let reconnect = self.conns[slot as usize].reconnect;
            if !reconnect {
                if let Some(r) = rate {
                    let allowed = (now - self.ramp_start) as f64 / 1e9 * r + 1.0;
                    if self.initial_started as f64 >= allowed {
                        break;
                    }
                }
                self.initial_started += 1;
            }
            self.pending.pop_front();
            self.start(slot, now);
        }
    }

    fn start(&mut self, slot: u32, now: u64) {
        let idx = slot as usize;
        let ci = self.ctx_index(slot);
        let cfg = self.spec.cfg.clone();
        // TLS: the chain sends the ClientHello, and the request waits for
        // the end of the handshake.
        let mut hello = None;
        if let Some(t) = self.tls.as_mut() {
            let mut bytes = Vec::new();
            match TlsConn::new(t.config.clone(), t.name.clone(), &mut bytes) {
                Ok(session) => t.conns[idx] = Some(session),
                Err(e) => {
                    // Not expected: the configuration was built when the
                    // run was planned. Counted, not retried.
                    *self.errors.entry(tls::error_label(&e)).or_default() += 1;
                    add(&self.spec.counters.failed, 1);
                    self.conns[idx].reconnect = false;
                    return;
                }
            }
            hello = Some(bytes);
        }
        let src = if cfg.addr.src_ips.is_empty() {
            None
        } else {
            let (lo, hi) = self.spec.endpoints;
            let ep = cfg.addr.endpoint(self.next_endpoint);
            self.next_endpoint += 1;
            if self.next_endpoint >= hi {
                self.next_endpoint = lo;
            }
            ep
        };
        let dst = cfg.addr.destination(self.spec.base + u64::from(slot));
        let c = &mut self.conns[idx];
        c.gen = c.gen.wrapping_add(1);
        c.st = St::Connecting;
        c.started = now;
        c.chain_err = None;
        c.timed_out = false;
        c.proto = Proto::new(cfg.kind, cfg.want_ids);
        c.queued.clear();
        let request = match hello {
            Some(hello) => hello,
            None => {
                let resume = c.last_id.clone();
                let mut request = Vec::new();
                c.proto
                    .first_request(&self.ctxs[ci], resume.as_deref(), &mut request);
                request
            }
        };
        c.sending = true;
        let gen = c.gen;
        // The ring keeps the addresses and the request until the chain's
        // last link, the send, is finished.
        self.ring.connect_chain(ConnectChain {
            slot,
            src,
            dst,
            request: Bytes::from(request),
            tags: [Op::Socket, Op::Opt, Op::Bind, Op::Connect].map(|op| tag(op, slot, gen)),
            send_op: Op::Send as u8,
            owner: send_owner(slot, gen),
        });
        self.inflight += 1;
        self.attempts.push_back((now, slot, gen));
        add(&self.spec.counters.connecting, 1);
        add(&self.spec.counters.requests, 1);
    }

    fn expire_attempts(&mut self, now: u64) {
        let timeout = self.spec.cfg.connect_timeout.as_nanos() as u64;
        while let Some(&(t, slot, gen)) = self.attempts.front() {
            if now - t < timeout {
                break;
            }
            self.attempts.pop_front();
            let c = &mut self.conns[slot as usize];
            if c.gen != gen {
                continue;
            }
            match c.st {
                St::Connecting => {
                    c.timed_out = true;
                    self.ring
                        .cancel(tag(Op::Connect, slot, gen), tag(Op::Cancel, slot, gen));
                }
                St::Handshaking => {
                    let label = match self.tls_conn(slot) {
                        Some(t) if t.is_handshaking() => "tls_timeout_handshake",
                        _ => "timeout_waiting_for_response",
                    };
                    self.fail(slot, label)
                }
                _ => {}
            }
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, slot, gen))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let idx = slot as usize;
            if self.conns[idx].gen != gen || self.conns[idx].st != St::Open {
                continue;
            }
            let ci = self.ctx_index(slot);
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            self.conns[idx].proto.next_request(&self.ctxs[ci], &mut out);
            if !out.is_empty() {
                add(&self.spec.counters.requests, 1);
                self.send_plain(slot, &out);
            }
            self.out = out;
        }
    }

    fn churn_tick(&mut self, now: u64) {
        if self.churn_rate <= 0.0 {
            return;
        }
        self.churn_acc += (now - self.churn_last) as f64 / 1e9 * self.churn_rate;
        self.churn_last = now;
        let n = self.conns.len() as u64;
        // At most one full sweep of tries per tick, so the loop is bounded.
        let mut tries = n.min(4096);
        while self.churn_acc >= 1.0 && tries > 0 && n > 0 {
            tries -= 1;
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let slot = (self.rng % n) as u32;
            if self.conns[slot as usize].st != St::Open {
                continue;
            }
            self.churn_acc -= 1.0;
            self.conns[slot as usize].reconnect = true;
            add(&self.spec.counters.reconnects, 1);
            self.close(slot);
        }
        self.churn_acc = self.churn_acc.min(self.churn_rate.max(1.0));
    }

    fn on_completion(&mut self, mut c: Completion) {
        let ud = c.user_data();
        let Some(op) = Op::from_code(ud.op()) else {
            return;
        };
        if op == Op::Send {
            // A send's tag names the ring's record of it; the connection
            // comes back as the send's owner.
            if let Some(done) = self.ring.finish_send(&c) {
                self.on_send(done);
            }
            return;
        }
        let slot = ud.index();
        let idx = slot as usize;
        if idx >= self.conns.len() {
            return;
        }
        let current = self.conns[idx].gen == ud.gen();
        let res = c.result();
        match op {
            Op::Socket | Op::Opt | Op::Bind | Op::Connect => {
                if current && res < 0 && res != -libc::ECANCELED {
                    let conn = &mut self.conns[idx];
                    conn.chain_err.get_or_insert((op, -res));
                }
            }
            Op::Recv => self.on_recv(slot, current, &mut c),
            Op::Send | Op::Cancel => {}
            Op::Close => {
                if current && self.conns[idx].st == St::Closing {
                    let conn = &mut self.conns[idx];
                    conn.st = St::Idle;
                    if conn.reconnect {
                        self.pending.push_back(slot);
                    }
                }
            }
        }
    }

    /// A send finished: the connect chain's request or a later one.
    fn on_send(&mut self, done: FinishedSend) {
        let (slot, gen) = owner_conn(done.owner);
        let idx = slot as usize;
        if idx >= self.conns.len() || self.conns[idx].gen != gen {
            // A send of an earlier connection in this slot.
            return;
        }
        let res = done.result;
        let st = self.conns[idx].st;
        self.conns[idx].sending = false;
        if st == St::Connecting {
            if res < 0 {
                let c = &mut self.conns[idx];
                if c.chain_err == Some((Op::Bind, libc::EADDRINUSE)) && c.bind_retries < 8 {
                    // The endpoint is still held (by an earlier run's socket
                    // or a listener): try the next one, without counting a
                    // failure.
                    c.bind_retries += 1;
                    c.reconnect = true;
                    *self
                        .errors
                        .entry("bind_EADDRINUSE_retried".into())
                        .or_default() += 1;
                    self.inflight -= 1;
                    sub(&self.spec.counters.connecting, 1);
                    self.close(slot);
                    return;
                }
                let c = &self.conns[idx];
                let label = match c.chain_err {
                    Some((op, e)) => format!("{}_{}", op.name(), errno_name(e)),
                    None if c.timed_out => "timeout_connecting".to_string(),
                    None => format!("send_{}", errno_name(-res)),
                };
                self.fail(slot, &label);
                return;
            }
            add(&self.spec.counters.bytes_out, res as u64);
            self.conns[idx].st = St::Handshaking;
            self.ring.recv_multi(slot, tag(Op::Recv, slot, gen));
        } else if matches!(st, St::Handshaking | St::Open) {
            if res < 0 {
                self.drop_conn(slot, &format!("send_{}", errno_name(-res)));
                return;
            }
            add(&self.spec.counters.bytes_out, res as u64);
        } else {
            return;
        }
        // A short send keeps its tail in front of anything queued.
        if done.is_short() {
            let c = &mut self.conns[idx];
            let mut rest = Vec::with_capacity(done.len - res as usize + c.queued.len());
            for b in done.unsent() {
                rest.extend_from_slice(&b);
            }
            rest.extend_from_slice(&c.queued);
            c.queued = rest;
        }
        self.flush(slot);
    }

    fn on_recv(&mut self, slot: u32, current: bool, c: &mut Completion) {
        let idx = slot as usize;
        let res = c.result();
        if res > 0 {
            // Dropping the buffer (at the latest when this returns) gives it
            // back to the ring.
            let Some(mut buf) = c.take_buffer() else {
                return;
            };
            if !current || !matches!(self.conns[idx].st, St::Handshaking | St::Open) {
                return;
            }
            add(&self.spec.counters.bytes_in, res as u64);
            self.on_bytes(slot, buf.bytes());
            drop(buf);
            if !c.more() && matches!(self.conns[idx].st, St::Handshaking | St::Open) {
                let gen = self.conns[idx].gen;
                self.ring.recv_multi(slot, tag(Op::Recv, slot, gen));
            }
            return;
        }
        if !current || !matches!(self.conns[idx].st, St::Handshaking | St::Open) {
            return;
        }
        match res {
            0 => self.drop_conn(slot, "closed_by_server"),
            e if e == -libc::ENOBUFS => {
                add(&self.spec.counters.nobufs, 1);
                if !c.more() {
                    let gen = self.conns[idx].gen;
                    self.ring.recv_multi(slot, tag(Op::Recv, slot, gen));
                }
            }
            e if e == -libc::ECANCELED => {}
            e => self.drop_conn(slot, &format!("recv_{}", errno_name(-e))),
        }
    }

    /// Received bytes: through TLS, if the fleet speaks it, to the
    /// connection's protocol.
    fn on_bytes(&mut self, slot: u32, input: &mut [u8]) {
        if self.tls.is_some() {
            self.on_tls_bytes(slot, input);
        } else {
            self.on_plain(slot, input);
        }
    }

    fn tls_conn(&self, slot: u32) -> Option<&TlsConn> {
        self.tls.as_ref()?.conns.get(slot as usize)?.as_deref()
    }

    /// Whether the connection in `slot` is still there to take bytes.
    fn is_live(&self, slot: u32) -> bool {
        matches!(self.conns[slot as usize].st, St::Handshaking | St::Open)
    }

    /// Received TLS bytes: rustls decrypts them in place; its handshake
    /// records go out, the plaintext goes on to the protocol. When the
    /// handshake completes, the subscription's first request goes out.
    fn on_tls_bytes(&mut self, slot: u32, input: &mut [u8]) {
        let idx = slot as usize;
        let Some(t) = self.tls.as_mut() else {
            return;
        };
        let Some(session) = t.conns[idx].as_mut() else {
            return;
        };
        let mut plain = std::mem::take(&mut t.plain);
        let mut flight = std::mem::take(&mut t.flight);
        plain.clear();
        flight.clear();
        let read = session.read(input, &mut plain, &mut flight);
        if !flight.is_empty() {
            self.queue_send(slot, &flight);
        }
        if let Some(e) = read.established {
            self.tls_established(slot, e);
        }
        if !plain.is_empty() && self.is_live(slot) {
            self.on_plain(slot, &mut plain);
        }
        if let Some(end) = read.end {
            let label = match &end {
                End::PeerClosed => "closed_by_server".to_string(),
                End::Failed(e) => tls::error_label(e),
                End::PlaintextHttp => "tls_server_answered_plaintext_http".to_string(),
                End::TooLarge => "tls_too_much_pending".to_string(),
            };
            // An alert queued above may or may not leave before the reset.
            self.drop_conn(slot, &label);
        }
        if let Some(t) = self.tls.as_mut() {
            t.plain = plain;
            t.flight = flight;
        }
    }

    /// The TLS handshake completed: count it, and send the request the
    /// connect chain could not carry.
    fn tls_established(&mut self, slot: u32, e: Established) {
        let idx = slot as usize;
        let c = &self.spec.counters;
        add(&c.tls_handshakes, 1);
        if e.resumed {
            add(&c.tls_resumed, 1);
        }
        match e.version {
            ProtocolVersion::TLSv1_2 => add(&c.tls12, 1),
            _ => add(&c.tls13, 1),
        }
        let now = now_nanos();
        self.handshake
            .record_ns(now.saturating_sub(self.conns[idx].started));
        let ci = self.ctx_index(slot);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let c = &mut self.conns[idx];
        let resume = c.last_id.clone();
        c.proto
            .first_request(&self.ctxs[ci], resume.as_deref(), &mut out);
        self.send_plain(slot, &out);
        self.out = out;
    }

    /// Sends what the protocol wrote: sealed first on a TLS connection.
    fn send_plain(&mut self, slot: u32, bytes: &[u8]) {
        let idx = slot as usize;
        let Some(t) = self.tls.as_mut() else {
            self.queue_send(slot, bytes);
            return;
        };
        let Some(session) = t.conns[idx].as_mut() else {
            return;
        };
        match session.seal(bytes, &mut self.conns[idx].queued) {
            Ok(true) => self.flush(slot),
            Ok(false) => self.drop_conn(slot, "tls_cannot_send"),
            Err(e) => self.drop_conn(slot, tls::encrypt_label(&e)),
        }
    }

    /// Feeds received plaintext to the connection's protocol.
    fn on_plain(&mut self, slot: u32, input: &mut [u8]) {
        let idx = slot as usize;
        let ci = self.ctx_index(slot);
        let mut out = std::mem::take(&mut self.out);
        let mut got = std::mem::take(&mut self.got);
        out.clear();
        got.clear();
        let r =
            self.conns[idx]
                .proto
                .on_bytes(&self.ctxs[ci], &mut self.ws, input, &mut out, &mut got);
        let now = now_nanos();
        for d in got.drain(..) {
            self.deliver(slot, d, now);
        }
        if !out.is_empty() {
            if matches!(self.conns[idx].proto, Proto::Poll(_)) {
                add(&self.spec.counters.requests, 1);
            }
            self.send_plain(slot, &out);
        }
        match r {
            Ok(Step::Continue) => {}
            Ok(Step::Ready) => {
                if self.conns[idx].st == St::Handshaking {
                    let c = &mut self.conns[idx];
                    c.st = St::Open;
                    c.reconnect = false;
                    let started = c.started;
                    self.inflight -= 1;
                    sub(&self.spec.counters.connecting, 1);
                    add(&self.spec.counters.open, 1);
                    add(&self.spec.counters.connected, 1);
                    if self.ctxs[ci].deflate {
                        let c = &self.spec.counters;
                        if self.conns[idx].proto.deflate_agreed() {
                            add(&c.deflate_agreed, 1);
                        } else {
                            add(&c.deflate_declined, 1);
                        }
                    }
                    self.connect.record_ns(now.saturating_sub(started));
                    if let Proto::Poll(p) = &self.conns[idx].proto {
                        if let Some(d) = p.interval(&self.ctxs[ci]) {
                            let gen = self.conns[idx].gen;
                            self.timers
                                .push(Reverse((now + d.as_nanos() as u64, slot, gen)));
                        }
                    }
                }
            }
            Ok(Step::SendAfter(d)) => {
                let gen = self.conns[idx].gen;
                self.timers
                    .push(Reverse((now + d.as_nanos() as u64, slot, gen)));
            }
            Ok(Step::Closed(label)) => self.drop_conn(slot, &label),
            Err(e) => self.drop_conn(slot, &e.0),
        }
        self.out = out;
        self.got = got;
    }

    fn deliver(&mut self, slot: u32, d: Delivery, now: u64) {
        add(&self.spec.counters.deliveries, 1);
        add(&self.spec.counters.message_bytes, d.bytes as u64);
        if d.compressed {
            add(&self.spec.counters.compressed, 1);
        }
        let idx = slot as usize;
        if let Some(id) = d.id {
            self.conns[idx].last_id = Some(id);
        }
        if d.reset {
            self.counts.resets += 1;
            return;
        }
        let (Some(p), Some(m)) = (self.phase.as_ref(), d.marker) else {
            self.counts.foreign += 1;
            return;
        };
        if m.run != p.run {
            self.counts.foreign += 1;
            return;
        }
        let channels = u64::from(p.channels.max(1));
        let ch = (m.seq % channels) as u32;
        let mine = self.channel_of(slot);
        let c = &mut self.conns[idx];
        if ch != mine || c.tracker_run != p.run {
            self.counts.count(Seen::Unexpected);
            return;
        }
        let Some(t) = c.tracker.as_mut() else {
            self.counts.count(Seen::Unexpected);
            return;
        };
        let seen = t.observe(m.seq / channels);
        self.counts.count(seen);
        if matches!(seen, Seen::New | Seen::OutOfOrder) {
            let l = latency_ns(m.nanos, now);
            self.latency.record_ns(l);
            self.live.record_ns(l);
        }
    }

    fn start_phase(&mut self, p: Arc<Phase>) {
        self.counts = DeliveryCounts::default();
        self.latency.clear();
        for slot in 0..self.conns.len() as u32 {
            let ch = self.channel_of(slot) as usize;
            let c = &mut self.conns[slot as usize];
            // Subscribers live now, or on their way back from a churn
            // disconnect, take part; failed ones do not.
            let taking_part = c.st == St::Open || c.reconnect;
            if taking_part {
                c.tracker = Some(SeqTracker::new(p.per_channel.get(ch).copied().unwrap_or(0)));
                c.tracker_run = p.run;
            } else {
                c.tracker = None;
                c.tracker_run = 0;
            }
        }
        self.phase = Some(p);
    }

    fn collect(&mut self) -> Collected {
        let mut counts = self.counts;
        let mut subscribers = 0;
        let mut resumable = 0;
        if let Some(p) = &self.phase {
            for c in &self.conns {
                if c.tracker_run == p.run {
                    if let Some(t) = &c.tracker {
                        subscribers += 1;
                        resumable += u64::from(c.last_id.is_some());
                        counts.expected += u64::from(t.unique() + t.missing());
                        counts.lost += u64::from(t.missing());
                    }
                }
            }
        }
        Collected {
            counts,
            latency: self.latency.clone(),
            connect: self.connect.clone(),
            handshake: self.handshake.clone(),
            errors: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            subscribers,
            resumable,
        }
    }

    /// Sends `bytes` now, or after the send in flight.
    fn queue_send(&mut self, slot: u32, bytes: &[u8]) {
        let c = &mut self.conns[slot as usize];
        c.queued.extend_from_slice(bytes);
        self.flush(slot);
    }

    fn flush(&mut self, slot: u32) {
        let idx = slot as usize;
        let c = &mut self.conns[idx];
        if c.sending || c.queued.is_empty() || !matches!(c.st, St::Handshaking | St::Open) {
            return;
        }
        c.sending = true;
        let bytes = Bytes::from(std::mem::take(&mut c.queued));
        let owner = send_owner(slot, c.gen);
        // The ring owns the bytes until the completion is finished.
        self.ring.send(slot, Op::Send as u8, owner, bytes);
    }

    /// A connection attempt failed.
    fn fail(&mut self, slot: u32, label: &str) {
        let c = &mut self.conns[slot as usize];
        if !matches!(c.st, St::Connecting | St::Handshaking) {
            return;
        }
        *self.errors.entry(label.to_string()).or_default() += 1;
        add(&self.spec.counters.failed, 1);
        sub(&self.spec.counters.connecting, 1);
        self.inflight -= 1;
        // A failed resume is not retried: the subscriber leaves the run.
        self.conns[slot as usize].reconnect = false;
        self.close(slot);
    }

    /// A live connection ended without the harness asking.
    fn drop_conn(&mut self, slot: u32, label: &str) {
        match self.conns[slot as usize].st {
            St::Connecting | St::Handshaking => self.fail(slot, label),
            St::Open => {
                *self.errors.entry(label.to_string()).or_default() += 1;
                add(&self.spec.counters.dropped, 1);
                self.close(slot);
            }
            _ => {}
        }
    }

    /// Closes the slot (reset, no TIME_WAIT).
    fn close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.st == St::Open {
            sub(&self.spec.counters.open, 1);
        }
        if c.st == St::Idle || c.st == St::Closing {
            return;
        }
        c.st = St::Closing;
        let gen = c.gen;
        if let Some(t) = self.tls.as_mut() {
            // The session goes with its connection: a closed slot holds none.
            t.conns[slot as usize] = None;
        }
        self.ring.cancel_and_close(
            tag(Op::Recv, slot, gen),
            slot,
            tag(Op::Cancel, slot, gen),
            tag(Op::Close, slot, gen),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS lives in the worker's side table, not in the connection: a
    /// plaintext connection is exactly as large as before TLS (and a
    /// plaintext fleet has no table at all).
    #[test]
    fn tls_makes_no_connection_larger() {
        // 280 B when TLS came (rustc 1.95, x86-64), as before it.
        assert!(
            std::mem::size_of::<Conn>() <= 280,
            "{}",
            std::mem::size_of::<Conn>()
        );
        assert_eq!(std::mem::size_of::<Option<Box<TlsConn>>>(), 8);
    }
}
