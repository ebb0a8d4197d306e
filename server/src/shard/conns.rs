//! A shard's rings and the connections in their tables: lookup by key,
//! install and release, and the bytes going out.
//!
//! # Rings
//! A shard owns up to `Plan::rings_per_shard` [`ConnRing`]s, created as its
//! connections grow. Ring 0 is the *home* ring: the shard sleeps on it, with
//! a read armed on the shard's eventfd. Every other ring signals that
//! eventfd whenever it gains completion work, so one sleeping thread hears
//! from all its rings and from other shards.
//!
//! # Keys
//! A connection lives in one slot of one ring's direct-descriptor table;
//! [`ConnKey`] (`ring:8 | slot:24 | gen:32`) names it from anywhere in the
//! shard (hub subscriptions, timers, replies to mail) and carries the
//! slot's generation, so a key outliving its connection never reaches the
//! slot's next occupant.
//!
//! # Sending
//! Bytes for a connection are queued as shared [`Bytes`] (a broadcast frame
//! is one allocation referenced by every subscriber's queue). At most one
//! send per connection is in flight, which keeps the stream ordered; when it
//! completes, everything queued meanwhile leaves in one `sendmsg` with up to
//! [`uring::MAX_IOV`] buffers. Connections that get bytes during a loop
//! turn are flushed once at the end of it (the *dirty* list), so a burst of
//! messages costs one submission per connection, not one per message. The
//! ring owns the bytes of a send in flight until its completion, whatever
//! happens to the connection meanwhile.
//!
//! # TLS
//! A connection accepted on a TLS listener has its session
//! ([`TlsConn`]) in its ring's side table, indexed by slot, and the `TLS`
//! flag: received bytes go through it before the protocol sees them
//! (`Conns::tls_read`), and when it sends, its queued plaintext is sealed
//! into records first (`TlsConn::seal`). Plaintext connections pay nothing
//! for it; a ring that never held a TLS connection has an empty table.
//!
//! # Size
//! [`Conn`] is what every connection pays for, idle or not (see the
//! `size_of` test and docs/architecture.md); a busy connection's queues and
//! kept input live in a [`Buffers`] box taken from a per-shard pool.

use std::sync::Arc;

use bytes::Bytes;
use uring::{Completion, EventFd, Ring, RingConfig, SetupError, TcpOption};

use crate::bus::ConnHandle;
use crate::capacity::Plan;
use crate::hub::{ClientId, Hub};
use crate::metrics::{ShardMetrics, TlsFailure};
use crate::transport::deflate::Deflate;
use crate::transport::{Format, Protocol, Tick};

use super::buffers::Buffers;
use super::op::Op;
use super::peers::PeerId;
use super::tls::{Read, TlsConn, SEAL_BUDGET};

/// Empty buffer boxes kept for reuse, so that delivering to an idle
/// connection does not allocate (and a drained one gives its box back
/// instead of keeping memory while idle).
const SPARE_BUFFERS: usize = 4096;

/// Submission and completion queue sizes of every ring.
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 8192;

/// `ring:8 | slot:24 | gen:32`, unique within a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey(u64);

impl ConnKey {
    /// Packs a key.
    pub fn new(ring: u8, slot: u32, gen: u32) -> Self {
        debug_assert!(slot < 1 << 24);
        ConnKey(u64::from(ring) << 56 | u64::from(slot & 0xFF_FFFF) << 32 | u64::from(gen))
    }

    /// The ring (within its shard).
    pub fn ring(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The slot in that ring's table.
    pub fn slot(self) -> u32 {
        (self.0 >> 32) as u32 & 0xFF_FFFF
    }

    /// The slot's generation when the key was made.
    pub fn gen(self) -> u32 {
        self.0 as u32
    }

    /// The key as mail names it.
    pub fn handle(self) -> ConnHandle {
        ConnHandle(self.0)
    }

    /// The key a handle from mail carries.
    pub fn from_handle(h: ConnHandle) -> ConnKey {
        ConnKey(h.0)
    }

    /// The client id of this connection on shard `shard`: the shard in the
    /// top byte, then ring:8 | slot:24 | gen:24.
    pub fn client_id(self, shard: usize) -> ClientId {
        let k = self.0;
        ClientId(
            (shard as u64) << 56
                | (k >> 56) << 48
                | ((k >> 32) & 0xFF_FFFF) << 24
                | (k & 0xFF_FFFF),
        )
    }
}

/// What a hub subscription of this shard records: who, how its
/// deliveries are framed, and since when it has been behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscribed connection.
    pub key: ConnKey,
    /// Its framing.
    pub format: Format,
    /// What its connection agreed for permessage-deflate.
    pub deflate: Option<Deflate>,
    /// The tick it last fell behind (meaningful while it is behind): its
    /// oldest undelivered message has waited since about then.
    pub behind_since: Tick,
}

/// The hub of a shard: what it holds per subscription is a [`Subscriber`].
pub type ShardHub = Hub<Subscriber>;

/// Bit flags of [`Conn::flags`].
mod flags {
    /// The slot holds a connection (its close may be in progress).
    pub const LIVE: u8 = 1;
    /// A send is in flight.
    pub const SENDING: u8 = 2;
    /// Queued on the shard's list of connections to flush.
    pub const DIRTY: u8 = 4;
    /// A subscription fell behind: catch up once the queue has drained.
    pub const BEHIND: u8 = 8;
    /// Its reader was closed as lagging or slow, and told so: when the
    /// socket closes, count whether the notice went out.
    pub const NOTICE: u8 = 16;
    /// A TLS connection: its session is in the ring's side table.
    pub const TLS: u8 = 32;
    /// Its receive is cancelled because it pipelined more than its
    /// protocol can take before answers go out ([`Conns::pause_recv`]).
    pub const RECV_PAUSED: u8 = 64;
}

/// The state of one connection slot.
#[derive(Debug)]
pub struct Conn {
    /// Generation of the slot's current occupant.
    pub gen: u32,
    /// Tick at which its timer is due (0: none).
    pub deadline: Tick,
    /// Tick of its live timer-wheel entry (0: none).
    pub scheduled: Tick,
    flags: u8,
    /// Its address's entry in the node's peer table
    /// ([`PeerId::to_bits`], 0: none), in three bytes that would
    /// otherwise be padding.
    peer: [u8; 3],
    /// The protocol it speaks, and where it stands.
    pub proto: Protocol,
    /// Queues and kept input, while any are in use.
    buffers: Option<Box<Buffers>>,
}

impl Conn {
    const fn free() -> Conn {
        Conn {
            gen: 0,
            deadline: 0,
            scheduled: 0,
            flags: 0,
            peer: [0; 3],
            proto: Protocol::Closed,
            buffers: None,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Its address's entry in the peer table, if it was counted.
    pub fn peer(&self) -> Option<PeerId> {
        let [a, b, c] = self.peer;
        PeerId::from_bits(u32::from_le_bytes([a, b, c, 0]))
    }

    /// Records its address's entry.
    pub fn set_peer(&mut self, id: PeerId) {
        let [a, b, c, _] = id.to_bits().to_le_bytes();
        self.peer = [a, b, c];
    }

    /// Bytes queued or in flight.
    pub fn outbound(&self) -> usize {
        self.buffers.as_ref().map_or(0, |b| b.outbound())
    }
}

/// One ring with its connections.
#[derive(Debug)]
pub struct ConnRing {
    /// The io_uring, its receive buffers and its sends in flight.
    pub ring: Ring,
    /// Connections by slot.
    conns: Vec<Conn>,
    /// TLS sessions by slot (grown only as far as a TLS connection's slot:
    /// empty in a ring that never held one).
    #[allow(clippy::vec_box)]
    tls: Vec<Option<Box<TlsConn>>>,
    /// Slots occupied (accepted and not yet closed by the kernel).
    pub used: u32,
}

/// Receive-buffer settings of every ring.
#[derive(Debug, Clone, Copy)]
pub struct BufferPlan {
    /// Buffers per ring.
    pub count: u16,
    /// Bytes per buffer.
    pub size: u32,
}

/// What became of bytes queued for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued.
    Ok,
    /// The connection is gone.
    Gone,
    /// Its outbound bytes are over the hard limit: a slow consumer.
    Overflow,
}

/// What became of a message offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued.
    Queued,
    /// The connection's queue is full (`--max-outbound`): the message
    /// waits in history.
    Full,
    /// The connection is gone.
    Gone,
}

/// What a send completion asks of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDone {
    /// Nothing (more was sent, or the connection was already gone).
    Sent,
    /// The send failed (the peer is gone): close the connection.
    Failed(ConnKey, i32),
    /// The connection was draining and everything has gone out: close it.
    Drained(ConnKey),
}

/// The connection table of a shard. See the module docs.
#[derive(Debug)]
pub struct Conns {
    /// Rings, home ring first.
    pub rings: Vec<ConnRing>,
    plan: Plan,
    buffers: BufferPlan,
    /// Connections with bytes queued this turn.
    dirty: Vec<ConnKey>,
    /// Empty buffer boxes to reuse. Boxed because the box itself is what is
    /// reused: connections hold `Option<Box<Buffers>>` to stay small.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Buffers>>,
    /// Bytes a fan-out may queue for one connection (`--max-outbound`).
    window: usize,
    /// Bytes beyond which a connection's own output (answers, echoes,
    /// replays) makes it a slow consumer: a peer that sends without
    /// reading.
    hard_limit: usize,
    /// Set `TCP_NODELAY` on accepted sockets.
    nodelay: bool,
    /// `TCP_NOTSENT_LOWAT` for accepted sockets (0: not set).
    notsent_lowat: u32,
    /// Connections whose queue drained while a subscription was behind.
    hungry: Vec<ConnKey>,
    /// TLS connections whose records could not be sealed: the shard closes
    /// them through their protocol (`take_broken`).
    broken: Vec<ConnKey>,
    /// Where small frames are gathered into one TLS record.
    gather: Vec<u8>,
    metrics: Arc<ShardMetrics>,
}

/// How a shard's connections send.
#[derive(Debug, Clone, Copy)]
pub struct OutputPlan {
    /// Bytes a fan-out may queue for one connection.
    pub window: usize,
    /// Bytes beyond which a connection's own output makes it a slow
    /// consumer.
    pub hard_limit: usize,
    /// Set `TCP_NODELAY` on accepted sockets.
    pub nodelay: bool,
    /// `TCP_NOTSENT_LOWAT` for accepted sockets (0: not set).
    pub notsent_lowat: u32,
}

impl Conns {
    /// The table with its home ring.
    pub fn new(
        plan: Plan,
        buffers: BufferPlan,
        output: OutputPlan,
        metrics: Arc<ShardMetrics>,
    ) -> Result<Conns, SetupError> {
        let mut conns = Conns {
            rings: Vec::new(),
            plan,
            buffers,
            dirty: Vec::new(),
            spare: Vec::new(),
            window: output.window,
            hard_limit: output.hard_limit,
            nodelay: output.nodelay,
            notsent_lowat: output.notsent_lowat,
            hungry: Vec::new(),
            broken: Vec::new(),
            gather: Vec::new(),
            metrics,
        };
        conns.add_ring(None)?;
        Ok(conns)
    }

    /// Creates one more ring, registering `doorbell` (every ring but the
    /// home ring signals it); returns its index.
    pub fn add_ring(&mut self, doorbell: Option<&EventFd>) -> Result<usize, SetupError> {
        let idx = self.rings.len();
        let ring = Ring::new(RingConfig {
            sq: SQ_ENTRIES,
            cq: CQ_ENTRIES,
            slots: self.plan.slots_per_ring,
            buffers: Some((self.buffers.count, self.buffers.size)),
        })?;
        if let Some(efd) = doorbell {
            ring.register_eventfd(efd).map_err(SetupError::Other)?;
        }
        self.rings.push(ConnRing {
            ring,
            conns: Vec::new(),
            tls: Vec::new(),
            used: 0,
        });
        ShardMetrics::set(&self.metrics.rings, self.rings.len() as u64);
        Ok(idx)
    }

    /// Whether another ring may be created.
    pub fn can_grow(&self) -> bool {
        self.rings.len() < self.plan.rings_per_shard
    }

    /// Connections each ring takes before accepting moves on.
    pub fn usable_per_ring(&self) -> u32 {
        self.plan.usable_per_ring
    }

    /// Open connections (slots in use, closing ones included) over all
    /// rings.
    pub fn used(&self) -> u64 {
        self.rings.iter().map(|r| u64::from(r.used)).sum()
    }

    /// The live connection `key`.
    pub fn get(&self, key: ConnKey) -> Option<&Conn> {
        self.rings
            .get(key.ring())?
            .conns
            .get(key.slot() as usize)
            .filter(|c| c.gen == key.gen() && c.has(flags::LIVE))
    }

    /// The live connection `key`, mutably.
    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        live(&mut self.rings, key)
    }

    /// Every live connection's key.
    pub fn live_keys(&self) -> Vec<ConnKey> {
        let mut keys = Vec::new();
        for (r, cr) in self.rings.iter().enumerate() {
            for (slot, c) in cr.conns.iter().enumerate() {
                if c.has(flags::LIVE) {
                    keys.push(ConnKey::new(r as u8, slot as u32, c.gen));
                }
            }
        }
        keys
    }

    /// Installs a freshly accepted socket in `slot` of ring `r` with its
    /// multishot receive armed; its protocol is set by the caller. Returns
    /// its key.
    ///
    /// With `peer` (`Some(ipv6)`), the peer's address is looked up first,
    /// ahead of the receive, so its answer comes before any request: a
    /// refused address is refused before it is served. Returns `false` as
    /// the second value when the ring's lookups were all in flight (ask
    /// again later).
    pub fn install(
        &mut self,
        r: usize,
        slot: u32,
        peer: Option<bool>,
        tls: Option<Box<TlsConn>>,
    ) -> (ConnKey, bool) {
        let cr = &mut self.rings[r];
        if cr.conns.len() <= slot as usize {
            cr.conns.resize_with(slot as usize + 1, Conn::free);
        }
        let conn = &mut cr.conns[slot as usize];
        let gen = conn.gen.wrapping_add(1);
        *conn = Conn::free();
        conn.gen = gen;
        conn.flags = flags::LIVE;
        match tls {
            Some(session) => {
                conn.flags |= flags::TLS;
                if cr.tls.len() <= slot as usize {
                    cr.tls.resize_with(slot as usize + 1, || None);
                }
                cr.tls[slot as usize] = Some(session);
            }
            // `release` took the last occupant's session; never let a
            // plaintext connection inherit one.
            None => debug_assert!(cr.tls.get(slot as usize).is_none_or(Option::is_none)),
        }
        cr.used += 1;
        // Small frames go out at once; a reader that stops makes the
        // kernel hold its receive window plus `notsent_lowat`, not a send
        // buffer grown to megabytes (the rest waits in the backlog).
        let tag = Op::SockOpt.tag(slot, gen);
        if self.nodelay {
            cr.ring.set_tcp_option(slot, TcpOption::NoDelay, tag);
        }
        if self.notsent_lowat > 0 {
            let lowat = TcpOption::NotSentLowat(self.notsent_lowat);
            cr.ring.set_tcp_option(slot, lowat, tag);
        }
        let looked_up = match peer {
            Some(ipv6) => cr.ring.peer_name(slot, ipv6, Op::Peer.tag(slot, gen)),
            None => true,
        };
        cr.ring.recv_multi(slot, Op::Recv.tag(slot, gen));
        (ConnKey::new(r as u8, slot, gen), looked_up)
    }

    /// Re-arms the multishot receive of `key` (after it ended for lack of
    /// buffers, or without `F_MORE`).
    /// Does nothing while its reading is paused.
    pub fn rearm_recv(&mut self, key: ConnKey) {
        if self.get(key).is_some_and(|c| !c.has(flags::RECV_PAUSED)) {
            self.rings[key.ring()]
                .ring
                .recv_multi(key.slot(), Op::Recv.tag(key.slot(), key.gen()));
        }
    }

    /// Stops reading from `key`'s socket: cancels its multishot receive,
    /// so TCP flow control holds back a peer that pipelines requests
    /// faster than they are answered, instead of the shard buffering
    /// them. A receive completion already on its way still arrives.
    /// Returns false if it was paused already (or is gone).
    pub fn pause_recv(&mut self, key: ConnKey) -> bool {
        let Some(conn) = live(&mut self.rings, key) else {
            return false;
        };
        if conn.has(flags::RECV_PAUSED) {
            return false;
        }
        conn.flags |= flags::RECV_PAUSED;
        let tag = Op::Recv.tag(key.slot(), key.gen());
        self.rings[key.ring()]
            .ring
            .cancel(tag, Op::Cancel.tag(key.slot(), key.gen()));
        true
    }

    /// Whether `key`'s reading is paused ([`Conns::pause_recv`]).
    pub fn recv_paused(&self, key: ConnKey) -> bool {
        self.get(key).is_some_and(|c| c.has(flags::RECV_PAUSED))
    }

    /// Ends a pause: the caller re-arms the receive
    /// ([`Conns::rearm_recv`]). Returns false if `key` was not paused.
    pub fn unpause_recv(&mut self, key: ConnKey) -> bool {
        match live(&mut self.rings, key) {
            Some(conn) if conn.has(flags::RECV_PAUSED) => {
                conn.flags &= !flags::RECV_PAUSED;
                true
            }
            _ => false,
        }
    }

    /// Frees the slot's state and closes its socket (shutdown, then close).
    /// The slot counts as used until the close completes. Returns the
    /// connection's entry in the peer table, for the caller to release.
    pub fn release(&mut self, key: ConnKey) -> Option<PeerId> {
        let conn = live(&mut self.rings, key)?;
        let gen = conn.gen;
        let old = std::mem::replace(conn, Conn::free());
        let peer = old.peer();
        conn.gen = gen;
        if old.has(flags::NOTICE) {
            let counter = if old.outbound() == 0 {
                &self.metrics.close_notices_sent
            } else {
                &self.metrics.close_notices_lost
            };
            ShardMetrics::add(counter, 1);
        }
        let tls = old.has(flags::TLS);
        if let Some(b) = old.buffers {
            self.give_back(b);
        }
        let slot = key.slot();
        if tls {
            let session = self.rings[key.ring()]
                .tls
                .get_mut(slot as usize)
                .and_then(Option::take);
            if session.is_some_and(|s| s.is_incomplete()) {
                ShardMetrics::add(
                    &self.metrics.tls_failures[TlsFailure::Incomplete as usize],
                    1,
                );
            }
        }
        self.rings[key.ring()].ring.shutdown_and_close(
            slot,
            Op::Shutdown.tag(slot, gen),
            Op::Close.tag(slot, gen),
        );
        peer
    }

    fn give_back(&mut self, mut b: Box<Buffers>) {
        if self.spare.len() < SPARE_BUFFERS && b.reset() {
            self.spare.push(b);
        }
    }

    // ---- input ---------------------------------------------------------------

    /// Takes the bytes `key` kept from earlier input, if any.
    pub fn take_input(&mut self, key: ConnKey) -> Option<bytes::BytesMut> {
        let conn = live(&mut self.rings, key)?;
        let b = conn.buffers.as_mut()?;
        (!b.input.is_empty()).then(|| std::mem::take(&mut b.input))
    }

    /// Keeps `rest` for the next input of `key`.
    pub fn keep_input(&mut self, key: ConnKey, rest: bytes::BytesMut) {
        let spare = &mut self.spare;
        let Some(conn) = live(&mut self.rings, key) else {
            return;
        };
        if rest.is_empty() {
            if conn.buffers.as_ref().is_some_and(|b| b.is_idle()) {
                let b = conn.buffers.take().expect("checked above");
                if spare.len() < SPARE_BUFFERS {
                    spare.push(b);
                }
            }
            return;
        }
        conn.buffers
            .get_or_insert_with(|| spare.pop().unwrap_or_default())
            .input = rest;
    }

    // ---- TLS -----------------------------------------------------------------

    /// Whether `key` is a TLS connection.
    pub fn is_tls(&self, key: ConnKey) -> bool {
        self.get(key).is_some_and(|c| c.has(flags::TLS))
    }

    /// Runs `key`'s TLS session over received bytes (see
    /// [`TlsConn::read`]); `None` if it is gone or not TLS.
    pub fn tls_read(
        &mut self,
        key: ConnKey,
        data: &mut [u8],
        plain: &mut Vec<u8>,
        flight: &mut Vec<u8>,
    ) -> Option<Read> {
        live(&mut self.rings, key).filter(|c| c.has(flags::TLS))?;
        let session = self.rings[key.ring()]
            .tls
            .get_mut(key.slot() as usize)?
            .as_mut()?;
        Some(session.read(data, plain, flight))
    }

    /// Lets every TLS session that neither received nor sent since the
    /// last call drop its expanded keys ([`TlsConn::rest_if_idle`]): what
    /// keeps a mostly idle TLS connection near 1 KB. One pass over the
    /// side table (empty on a plaintext node).
    /// Returns how many rested.
    pub fn rest_idle_tls(&mut self) -> u64 {
        let mut rested = 0;
        for cr in &mut self.rings {
            for session in cr.tls.iter_mut().flatten() {
                rested += u64::from(session.rest_if_idle());
            }
        }
        rested
    }

    /// Queues TLS records rustls made (a handshake flight, an alert) or
    /// bytes that go out as they are (the refusal of plain HTTP); they
    /// leave at the end of the turn, before any plaintext queued later.
    pub fn queue_sealed(&mut self, key: ConnKey, bytes: Bytes) {
        let spare = &mut self.spare;
        let Some(conn) = live(&mut self.rings, key) else {
            return;
        };
        let b = conn
            .buffers
            .get_or_insert_with(|| spare.pop().unwrap_or_default());
        b.push_sealed(bytes);
        if !conn.has(flags::SENDING | flags::DIRTY) {
            conn.flags |= flags::DIRTY;
            self.dirty.push(key);
        }
    }

    /// Marks `key` to send at the end of the turn (a TLS handshake just
    /// completed: plaintext queued meanwhile can be sealed now).
    pub fn wake_output(&mut self, key: ConnKey) {
        let Some(conn) = live(&mut self.rings, key) else {
            return;
        };
        if conn.outbound() > 0 && !conn.has(flags::SENDING | flags::DIRTY) {
            conn.flags |= flags::DIRTY;
            self.dirty.push(key);
        }
    }

    /// TLS connections whose records could not be sealed since the last
    /// call: close them (through their protocol).
    pub fn take_broken(&mut self) -> Vec<ConnKey> {
        std::mem::take(&mut self.broken)
    }

    // ---- output --------------------------------------------------------------

    /// Queues the connection's own output (message `seq`, or 0) for
    /// `key`; it leaves at the end of the turn. Only a peer that sends
    /// without reading gets past the hard limit.
    pub fn queue(&mut self, key: ConnKey, bytes: Bytes, seq: u64) -> Queued {
        let hard_limit = self.hard_limit;
        let spare = &mut self.spare;
        let Some(conn) = live(&mut self.rings, key) else {
            return Queued::Gone;
        };
        let b = conn
            .buffers
            .get_or_insert_with(|| spare.pop().unwrap_or_default());
        b.push(bytes, seq);
        let over = b.outbound() > hard_limit;
        if !conn.has(flags::SENDING | flags::DIRTY) {
            conn.flags |= flags::DIRTY;
            self.dirty.push(key);
        }
        if over {
            Queued::Overflow
        } else {
            Queued::Ok
        }
    }

    /// Offers a delivery (message `seq`) to `key`: queued, unless the
    /// connection already has a full window (`--max-outbound`) queued or
    /// in flight — then the message stays in history and the subscription
    /// catches up when the socket has taken the queue. A connection with
    /// nothing outstanding always takes one message, however large.
    pub fn offer(&mut self, key: ConnKey, bytes: Bytes, seq: u64) -> Offered {
        let Some(conn) = self.get(key) else {
            return Offered::Gone;
        };
        let outbound = conn.outbound();
        if outbound > 0 && outbound + bytes.len() > self.window {
            return Offered::Full;
        }
        self.queue(key, bytes, seq);
        Offered::Queued
    }

    /// Whether a delivery of `len` bytes would find `key`'s window full.
    pub fn window_full(&self, key: ConnKey, len: usize) -> bool {
        let outbound = self.outbound(key);
        outbound > 0 && outbound + len > self.window
    }

    /// A subscription of `key` fell behind: once its queue has gone to the
    /// kernel, the connection is *hungry* (see [`Conns::take_hungry`]).
    pub fn mark_behind(&mut self, key: ConnKey) {
        if let Some(conn) = self.get_mut(key) {
            conn.flags |= flags::BEHIND;
        }
    }

    /// `key`'s reader was closed as lagging or slow and a notice (a close
    /// frame, an `event: reset`) queued: count, when the socket closes,
    /// whether the kernel took it.
    pub fn watch_notice(&mut self, key: ConnKey) {
        if let Some(conn) = self.get_mut(key) {
            conn.flags |= flags::NOTICE;
        }
    }

    /// Connections whose queue went to the kernel while a subscription
    /// was behind: time to catch up from history.
    pub fn take_hungry(&mut self, out: &mut Vec<ConnKey>) {
        out.append(&mut self.hungry);
    }

    /// Whether some connection is hungry.
    pub fn has_hungry(&self) -> bool {
        !self.hungry.is_empty()
    }

    /// Drops what is queued for `key` but not yet in flight. Returns the
    /// lowest sequence number of a message the peer may not have received
    /// whole (see [`Buffers::discard_queued`]).
    pub fn discard_queued(&mut self, key: ConnKey) -> Option<u64> {
        live(&mut self.rings, key)
            .and_then(|c| c.buffers.as_mut())
            .and_then(|b| b.discard_queued())
    }

    /// Starts a send for every connection that got bytes this turn.
    /// Connections whose protocol is draining and that have nothing left to
    /// send are added to `drained` (the caller closes them).
    pub fn flush(&mut self, drained: &mut Vec<ConnKey>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.get_mut(key) else {
                continue;
            };
            conn.flags &= !flags::DIRTY;
            if !conn.has(flags::SENDING) && !self.start_send(key) {
                drained.push(key);
            }
        }
        // Keep the allocation for the next turn.
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Hands the head of `key`'s queue to the kernel. Returns `false` when
    /// there was nothing to send and the connection is draining.
    fn start_send(&mut self, key: ConnKey) -> bool {
        let max = uring::MAX_IOV;
        let Some(cr) = self.rings.get_mut(key.ring()) else {
            return true;
        };
        let Some(conn) = cr
            .conns
            .get_mut(key.slot() as usize)
            .filter(|c| c.gen == key.gen() && c.has(flags::LIVE))
        else {
            return true;
        };
        if conn.has(flags::TLS) {
            return self.start_tls_send(key);
        }
        let Some(b) = conn.buffers.as_mut().filter(|b| !b.out.is_empty()) else {
            return nothing_to_send(conn, key, &mut self.spare, &mut self.hungry);
        };
        let n = b.out.len().min(max);
        let len = cr
            .ring
            .send_from(key.slot(), Op::Send as u8, key.0, &mut b.out);
        b.sent(n, len);
        let all_sent = b.out.is_empty();
        conn.flags |= flags::SENDING;
        if all_sent {
            catch_up_if_behind(conn, key, &mut self.hungry);
        }
        true
    }

    /// [`Conns::start_send`] for a TLS connection: seal what is queued,
    /// then send the records.
    fn start_tls_send(&mut self, key: ConnKey) -> bool {
        let Conns {
            rings,
            spare,
            gather,
            hungry,
            broken,
            ..
        } = self;
        let cr = &mut rings[key.ring()];
        let slot = key.slot() as usize;
        let conn = &mut cr.conns[slot];
        let Some(session) = cr.tls.get_mut(slot).and_then(|s| s.as_deref_mut()) else {
            return true;
        };
        let draining = conn.proto.is_draining();
        let b = conn
            .buffers
            .get_or_insert_with(|| spare.pop().unwrap_or_default());
        if !b.out.is_empty() {
            match session.seal(b, gather, SEAL_BUDGET) {
                Ok(true) => {}
                // The handshake never completed: nothing can go out.
                Ok(false) if draining => b.drop_plain(),
                // Still handshaking: the plaintext waits.
                Ok(false) => {}
                Err(e) => {
                    // In practice only the sequence space running out.
                    tracing::debug!("TLS: cannot encrypt for a connection: {e}");
                    b.drop_plain();
                    broken.push(key);
                    return true;
                }
            }
        }
        if draining && b.out.is_empty() {
            session.seal_close_notify(b);
        }
        if !b.has_sealed() {
            return nothing_to_send(conn, key, spare, hungry);
        }
        let len = cr
            .ring
            .send_from(key.slot(), Op::Send as u8, key.0, b.sealed());
        b.sent_sealed(len);
        let all_sent = b.out.is_empty() && !b.has_sealed();
        conn.flags |= flags::SENDING;
        if all_sent {
            catch_up_if_behind(conn, key, hungry);
        }
        true
    }

    /// Handles a send completion of ring `r`.
    pub fn on_send(&mut self, r: usize, c: &Completion) -> SendDone {
        let Some(done) = self.rings[r].ring.finish_send(c) else {
            return SendDone::Sent;
        };
        let key = ConnKey(done.owner);
        let spare = &mut self.spare;
        let Some(conn) = live(&mut self.rings, key) else {
            return SendDone::Sent;
        };
        conn.flags &= !flags::SENDING;
        if done.result < 0 {
            return SendDone::Failed(key, -done.result);
        }
        ShardMetrics::add(&self.metrics.bytes_out, done.result as u64);
        let tls = conn.has(flags::TLS);
        let b = conn
            .buffers
            .get_or_insert_with(|| spare.pop().unwrap_or_default());
        // After a short write (the socket buffer filled), what the kernel
        // did not take goes back in front of anything queued since.
        let unsent = if done.is_short() {
            done.unsent().collect()
        } else {
            Vec::new()
        };
        if tls {
            b.completed_sealed(unsent);
        } else {
            b.completed(unsent);
        }
        if self.start_send(key) {
            SendDone::Sent
        } else {
            SendDone::Drained(key)
        }
    }

    /// Bytes queued or in flight for `key`.
    pub fn outbound(&self, key: ConnKey) -> usize {
        self.get(key).map_or(0, Conn::outbound)
    }
}

/// A connection with nothing left to send: an idle buffer box goes back to
/// the pool, and a subscription that was behind may catch up. `false` when
/// the connection is draining (the caller closes it).
#[allow(clippy::vec_box)] // the pool keeps the boxes themselves
fn nothing_to_send(
    conn: &mut Conn,
    key: ConnKey,
    spare: &mut Vec<Box<Buffers>>,
    hungry: &mut Vec<ConnKey>,
) -> bool {
    if conn.buffers.as_ref().is_some_and(|b| b.is_idle()) {
        let b = conn.buffers.take().expect("checked above");
        if spare.len() < SPARE_BUFFERS && b.out.capacity() <= uring::MAX_IOV {
            spare.push(b);
        }
    }
    catch_up_if_behind(conn, key, hungry);
    !conn.proto.is_draining()
}

/// Everything queued is on its way (or there was nothing): a subscription
/// that fell behind asks for more now, so it is here by the time the
/// socket has taken this send.
fn catch_up_if_behind(conn: &mut Conn, key: ConnKey, hungry: &mut Vec<ConnKey>) {
    if conn.has(flags::BEHIND) {
        conn.flags &= !flags::BEHIND;
        hungry.push(key);
    }
}

/// The live connection `key` in `rings` (a free function so that callers
/// can borrow other fields of `Conns` at the same time).
fn live(rings: &mut [ConnRing], key: ConnKey) -> Option<&mut Conn> {
    rings
        .get_mut(key.ring())?
        .conns
        .get_mut(key.slot() as usize)
        .filter(|c| c.gen == key.gen() && c.has(flags::LIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = ConnKey::new(255, (1 << 24) - 1, u32::MAX);
        assert_eq!(
            (k.ring(), k.slot(), k.gen()),
            (255, (1 << 24) - 1, u32::MAX)
        );
        let k = ConnKey::new(3, 19_999, 7);
        assert_eq!((k.ring(), k.slot(), k.gen()), (3, 19_999, 7));
        assert_eq!(ConnKey::from_handle(k.handle()), k);
        assert_eq!(
            ConnKey::new(0, 5, 1).client_id(1).to_string(),
            "0100000005000001"
        );
    }

    #[test]
    fn an_idle_connection_is_small() {
        // Reported in docs/benchmarks.md and docs/architecture.md; every
        // byte here is paid by every idle connection.
        assert!(
            std::mem::size_of::<Conn>() <= 48,
            "{}",
            std::mem::size_of::<Conn>()
        );
        assert!(
            std::mem::size_of::<Protocol>() <= 24,
            "{}",
            std::mem::size_of::<Protocol>()
        );
        eprintln!(
            "Conn {} B, Protocol {} B, hub Sub {} B, Buffers {} B, WebSocket extra {} B",
            std::mem::size_of::<Conn>(),
            std::mem::size_of::<Protocol>(),
            std::mem::size_of::<crate::hub::Sub<Subscriber>>(),
            std::mem::size_of::<Buffers>(),
            crate::transport::ws::EXTRA_SIZE,
        );
    }
}
