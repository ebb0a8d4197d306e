//! A shard's rings, the connections in their tables, and the bytes going out.
//!
//! # Rings
//! A shard owns up to `Plan::rings_per_shard` [`ConnRing`]s, created as its
//! connections grow. Ring 0 is the *home* ring: the shard sleeps on it, with
//! a read armed on the shard's eventfd. Every other ring signals that
//! eventfd whenever it gains completion work, so one sleeping thread hears
//! from all its rings and from other shards.
//!
//! Exactly one ring at a time has multishot accepts armed (on each of the
//! shard's listeners): the *accepting* ring. When it fills up to
//! `usable_per_ring` connections, accepting moves to the emptiest ring, or
//! to a new ring.
//!
//! # Sending
//! Bytes for a connection are queued as shared [`Bytes`] (a broadcast frame
//! is one allocation referenced by every subscriber's queue). At most one
//! send per connection is in flight, which keeps the stream ordered; when it
//! completes, everything queued meanwhile leaves in one `sendmsg` with up to
//! [`MAX_IOV`] buffers. Connections that receive bytes during a loop turn
//! are flushed once at the end of it (the *dirty* list), so a burst of
//! messages costs one submission per connection, not one per message.
//!
//! The buffers of a send in flight are kept in the ring's `sends` slab until
//! its completion is reaped, whatever happens to the connection meanwhile —
//! the kernel may still be reading them.

use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::conn::{flags, Conn, ConnKey, Outbox, Phase};
use crate::capacity::Plan;
use crate::metrics::ShardMetrics;
use crate::runtime::bufring::BufRing;
use crate::runtime::ring::{Ring, RingSize, SetupError};

/// Most buffers in one `sendmsg`.
pub const MAX_IOV: usize = 64;

/// Empty outboxes kept for reuse, so that delivering to an idle connection
/// does not allocate (and a drained one gives its box back instead of
/// keeping memory while idle).
const SPARE_OUTBOXES: usize = 4096;

/// Submission and completion queue sizes of every ring.
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 8192;

/// A `sendmsg` header with its iovec array, boxed so its address is stable
/// while the kernel reads it.
struct MsgHdr {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// A send in flight: the buffers the kernel is reading.
pub struct InFlight {
    /// Whose send it is.
    pub key: ConnKey,
    first: Bytes,
    rest: Vec<Bytes>,
    len: usize,
    /// Kept alive for the kernel; read only through the raw pointer given
    /// to `sendmsg`.
    _msg: Option<Box<MsgHdr>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("key", &self.key)
            .field("buffers", &(1 + self.rest.len()))
            .field("len", &self.len)
            .finish()
    }
}

/// One ring with its receive buffers, connections and sends in flight.
///
/// Field order matters: the ring is dropped before the buffer ring it
/// references.
#[derive(Debug)]
pub struct ConnRing {
    /// The io_uring.
    pub ring: Ring,
    /// Receive buffers shared by this ring's connections.
    pub bufs: BufRing,
    /// Connections by slot.
    pub conns: Vec<Conn>,
    /// Sends in flight, by the index in their `user_data`.
    pub sends: Slab<InFlight>,
    /// Slots occupied (accepted and not yet closed by the kernel).
    pub used: u32,
    /// Whether its accepts are armed.
    pub accepting: bool,
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
    /// Its outbound queue is over the limit: a slow consumer.
    Overflow,
}

/// The connection half of a shard.
#[derive(Debug)]
pub struct Io {
    /// Rings, home ring first.
    pub rings: Vec<ConnRing>,
    /// The eventfd every non-home ring signals.
    efd: RawFd,
    plan: Plan,
    buffers: BufferPlan,
    /// Connections with bytes queued this turn.
    dirty: Vec<ConnKey>,
    /// Empty outboxes to reuse. Boxed because the box itself is what is
    /// reused: connections hold `Option<Box<Outbox>>` to stay small.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Outbox>>,
    /// Outbound limit per connection.
    pub max_outbound: usize,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
}

impl Io {
    /// Creates the home ring.
    pub fn new(
        plan: Plan,
        buffers: BufferPlan,
        efd: RawFd,
        max_outbound: usize,
        metrics: Arc<ShardMetrics>,
    ) -> Result<Io, SetupError> {
        let mut io = Io {
            rings: Vec::new(),
            efd,
            plan,
            buffers,
            dirty: Vec::new(),
            spare: Vec::new(),
            max_outbound,
            metrics,
        };
        io.add_ring()?;
        Ok(io)
    }

    /// Creates one more ring; returns its index.
    pub fn add_ring(&mut self) -> Result<usize, SetupError> {
        let idx = self.rings.len();
        let ring = Ring::new(RingSize {
            sq: SQ_ENTRIES,
            cq: CQ_ENTRIES,
            slots: self.plan.slots_per_ring,
        })?;
        if idx == 0 {
            ring.probe()?;
        } else {
            ring.register_eventfd(self.efd).map_err(SetupError::Other)?;
        }
        let bufs = BufRing::new(&ring, 0, self.buffers.count, self.buffers.size)
            .map_err(SetupError::Other)?;
        self.rings.push(ConnRing {
            ring,
            bufs,
            conns: Vec::new(),
            sends: Slab::new(),
            used: 0,
            accepting: false,
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

    /// Open connections (slots in use) over all rings.
    pub fn used(&self) -> u64 {
        self.rings.iter().map(|r| u64::from(r.used)).sum()
    }

    /// The live connection `key`, if it still exists.
    pub fn conn(&self, key: ConnKey) -> Option<&Conn> {
        self.rings
            .get(key.ring())?
            .conns
            .get(key.slot() as usize)
            .filter(|c| c.gen == key.gen() && c.phase != Phase::Free)
    }

    /// The live connection `key`, mutably.
    pub fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        live_conn(&mut self.rings, key)
    }

    /// Installs a freshly accepted socket in `slot` of ring `r`, in phase
    /// `Http`, with its multishot receive armed. Returns its key.
    pub fn install(&mut self, r: usize, slot: u32, tick: u32) -> ConnKey {
        let cr = &mut self.rings[r];
        if cr.conns.len() <= slot as usize {
            cr.conns.resize_with(slot as usize + 1, Conn::free);
        }
        let conn = &mut cr.conns[slot as usize];
        let gen = conn.gen.wrapping_add(1);
        *conn = Conn::free();
        conn.gen = gen;
        conn.phase = Phase::Http;
        conn.last_rx = tick;
        cr.used += 1;
        let bgid = cr.bufs.bgid();
        cr.ring.recv_multi(slot, gen, bgid);
        ConnKey::new(r as u8, slot, gen)
    }

    /// Re-arms the multishot receive of `key` (after it ended for lack of
    /// buffers, or without `F_MORE`).
    pub fn rearm_recv(&mut self, key: ConnKey) {
        if self.conn(key).is_some() {
            let cr = &mut self.rings[key.ring()];
            let bgid = cr.bufs.bgid();
            cr.ring.recv_multi(key.slot(), key.gen(), bgid);
        }
    }

    /// Frees the connection's state and closes its socket, whatever its
    /// phase (callers move it to `Free` first). The slot returns to the
    /// kernel's free list when the close completes.
    pub fn release_slot(&mut self, key: ConnKey) {
        let Some(conn) = self
            .rings
            .get_mut(key.ring())
            .and_then(|r| r.conns.get_mut(key.slot() as usize))
            .filter(|c| c.gen == key.gen())
        else {
            return;
        };
        let gen = conn.gen;
        *conn = Conn::free();
        conn.gen = gen;
        self.rings[key.ring()]
            .ring
            .shutdown_and_close(key.slot(), gen);
    }

    // ---- outbound ----------------------------------------------------------

    /// Queues `bytes` for `key`.
    pub fn queue(&mut self, key: ConnKey, bytes: Bytes) -> Queued {
        let max = self.max_outbound;
        let Some(conn) = live_conn(&mut self.rings, key) else {
            return Queued::Gone;
        };
        let out = conn
            .out
            .get_or_insert_with(|| self.spare.pop().unwrap_or_default());
        out.queued_bytes += bytes.len();
        out.queue.push_back(bytes);
        let over = out.queued_bytes + out.inflight_bytes > max;
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

    /// Drops what is queued but not yet in flight (a slow consumer about to
    /// get a close frame instead).
    pub fn discard_queued(&mut self, key: ConnKey) {
        if let Some(out) = self.conn_mut(key).and_then(|c| c.out.as_mut()) {
            out.queue.clear();
            out.queued_bytes = 0;
        }
    }

    /// Starts a send for every connection that got bytes this turn.
    /// Returns the connections in phase `Draining` whose queues are now
    /// empty (the caller closes them).
    pub fn flush(&mut self, drained: &mut Vec<ConnKey>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.conn_mut(key) else {
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
        let Some(conn) = self.conn_mut(key) else {
            return true;
        };
        let draining = conn.phase == Phase::Draining;
        let Some(out) = conn.out.as_mut().filter(|o| !o.queue.is_empty()) else {
            if let Some(mut spare) = conn.out.take() {
                if self.spare.len() < SPARE_OUTBOXES && spare.queue.capacity() <= MAX_IOV {
                    spare.queued_bytes = 0;
                    spare.inflight_bytes = 0;
                    self.spare.push(spare);
                }
            }
            return !draining;
        };
        let n = out.queue.len().min(MAX_IOV);
        let first = out.queue.pop_front().expect("queue is not empty");
        let rest: Vec<Bytes> = out.queue.drain(..n - 1).collect();
        let len = first.len() + rest.iter().map(Bytes::len).sum::<usize>();
        out.queued_bytes -= len;
        out.inflight_bytes = len;
        conn.flags |= flags::SENDING;

        let cr = &mut self.rings[key.ring()];
        let entry = cr.sends.vacant_entry();
        let index = entry.key() as u32;
        let msg = if rest.is_empty() {
            // SAFETY: `first` is stored in the `sends` slab entry below and
            // stays there until this send's completion is reaped; Bytes
            // data never moves while referenced.
            unsafe {
                cr.ring
                    .send(key.slot(), first.as_ptr(), first.len() as u32, index, 0)
            };
            None
        } else {
            // SAFETY: all-zero is a valid msghdr and iovec array.
            let mut msg: Box<MsgHdr> = Box::new(unsafe { std::mem::zeroed() });
            for (iov, b) in msg.iov.iter_mut().zip(std::iter::once(&first).chain(&rest)) {
                iov.iov_base = b.as_ptr().cast_mut().cast();
                iov.iov_len = b.len();
            }
            msg.hdr.msg_iov = msg.iov.as_mut_ptr();
            msg.hdr.msg_iovlen = n;
            let ptr: *const libc::msghdr = &msg.hdr;
            // SAFETY: the boxed header, its iovecs and the buffers they
            // point to are stored in the `sends` entry below until the
            // completion is reaped; a Box's contents never move.
            unsafe { cr.ring.sendmsg(key.slot(), ptr, index, 0) };
            Some(msg)
        };
        entry.insert(InFlight {
            key,
            first,
            rest,
            len,
            _msg: msg,
        });
        true
    }

    /// Handles a send completion. Returns the connection it belonged to and
    /// what the caller must do with it.
    pub fn on_send(&mut self, r: usize, index: u32, result: i32) -> SendDone {
        let Some(done) = self.rings[r].sends.try_remove(index as usize) else {
            return SendDone::Ignore;
        };
        let key = done.key;
        let Some(conn) = live_conn(&mut self.rings, key) else {
            return SendDone::Ignore;
        };
        conn.flags &= !flags::SENDING;
        if result < 0 {
            return SendDone::Failed(key, -result);
        }
        let sent = result as usize;
        let out = conn
            .out
            .get_or_insert_with(|| self.spare.pop().unwrap_or_default());
        out.inflight_bytes = 0;
        if sent < done.len {
            // A short write (the socket buffer filled): put back what the
            // kernel did not take, in order, ahead of anything queued since.
            let mut skip = sent;
            let mut unsent = Vec::new();
            for b in std::iter::once(done.first).chain(done.rest) {
                if skip >= b.len() {
                    skip -= b.len();
                } else {
                    unsent.push(b.slice(skip..));
                    skip = 0;
                }
            }
            for b in unsent.into_iter().rev() {
                out.queued_bytes += b.len();
                out.queue.push_front(b);
            }
        }
        ShardMetrics::add(&self.metrics.bytes_out, sent as u64);
        if self.start_send(key) {
            SendDone::Sent
        } else {
            SendDone::Drained(key)
        }
    }
}

/// The live connection `key` in `rings` (a free function so that callers
/// can borrow other fields of `Io` at the same time).
fn live_conn(rings: &mut [ConnRing], key: ConnKey) -> Option<&mut Conn> {
    rings
        .get_mut(key.ring())?
        .conns
        .get_mut(key.slot() as usize)
        .filter(|c| c.gen == key.gen() && c.phase != Phase::Free)
}

/// What a send completion asks of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDone {
    /// Nothing (more was sent, or the connection was already gone).
    Sent,
    /// Stale completion.
    Ignore,
    /// The send failed (peer gone): close the connection.
    Failed(ConnKey, i32),
    /// The queue is empty and the connection was draining: close it.
    Drained(ConnKey),
}
