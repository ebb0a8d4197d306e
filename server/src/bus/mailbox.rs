//! The queues between shards and the doorbells that wake them.
//!
//! # Waking a sleeping shard
//! Each shard sleeps on its home ring, which has a read armed on the
//! shard's eventfd. A sender pushes its mail, then rings the target's
//! doorbell only if the target said it is parked. The target sets
//! `parked`, re-checks its queues, and only then sleeps; the `SeqCst` pair
//! (push → load `parked`, store `parked` → check queues) guarantees that one
//! of the two sides sees the other, so no mail waits for a timeout. A busy
//! shard costs its senders no system call at all.
//!
//! Why an eventfd and not `IORING_OP_MSG_RING` into the target's ring
//! (measured on the reference host, 2026-11-22): in isolation `MSG_RING`
//! wakes a sleeping ring faster (ping-pong round trip 32 µs against 74 µs,
//! `cargo run --release -p ringcast-uring --example wakeup`) but costs the
//! sender more (464 against 215 ns per wake-up); end to end, 10,000
//! subscribers on 100 channels at 100 publishes/s, `MSG_RING` wake-ups gave
//! 2 % lower delivery latency (p50 1.026 against 1.045 ms) for 30 % more
//! server CPU per delivery (8.9 against 6.85 ms per 1,000), so the eventfd
//! stays.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::SegQueue;
use uring::EventFd;

use super::Mail;

/// A shard's doorbell: the eventfd its ring reads, and whether it sleeps.
#[derive(Debug)]
pub struct Doorbell {
    efd: EventFd,
    parked: AtomicBool,
}

impl Doorbell {
    /// The eventfd, for the shard to read and register on its rings.
    pub fn eventfd(&self) -> &EventFd {
        &self.efd
    }

    /// Wakes the shard, whatever it is doing.
    pub fn ring(&self) {
        self.efd.signal();
    }
}

/// Senders that are not shards: the Redis bridge and the store's writer.
const EXTRA_SENDERS: usize = 2;

/// All queues and doorbells of the node; shared by every shard.
///
/// Senders are the shards, numbered from 0, and two more: `shards`
/// ([`Mailboxes::bridge`]), the thread that talks to Redis in a cluster,
/// and `shards + 1` ([`Mailboxes::store`]), the store's writer thread
/// (`--data-dir`). Their mail to a shard is FIFO like a shard's. An
/// unused sender costs one empty queue per shard, checked when a shard
/// drains its mail.
#[derive(Debug)]
pub struct Mailboxes {
    shards: usize,
    /// `queues[to * (shards + EXTRA_SENDERS) + from]`.
    queues: Box<[SegQueue<Mail>]>,
    doors: Box<[Doorbell]>,
}

impl Mailboxes {
    /// Queues and doorbells for `shards` shards.
    pub fn new(shards: usize) -> std::io::Result<Arc<Mailboxes>> {
        let doors = (0..shards)
            .map(|_| {
                Ok(Doorbell {
                    efd: EventFd::new()?,
                    parked: AtomicBool::new(false),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(Mailboxes {
            shards,
            queues: (0..shards * (shards + EXTRA_SENDERS))
                .map(|_| SegQueue::new())
                .collect(),
            doors: doors.into_boxed_slice(),
        }))
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The sender number of the Redis bridge (one past the last shard).
    pub fn bridge(&self) -> usize {
        self.shards
    }

    /// The sender number of the store's writer (two past the last shard).
    pub fn store(&self) -> usize {
        self.shards + 1
    }

    /// Every sender: the shards, then the bridge, then the store.
    pub fn senders(&self) -> std::ops::Range<usize> {
        0..self.shards + EXTRA_SENDERS
    }

    fn queue(&self, to: usize, from: usize) -> &SegQueue<Mail> {
        &self.queues[to * (self.shards + EXTRA_SENDERS) + from]
    }

    /// Shard `shard`'s doorbell.
    pub fn door(&self, shard: usize) -> &Doorbell {
        &self.doors[shard]
    }

    /// Queues `mail` from `from` to `to`. Call [`Mailboxes::wake`] once the
    /// batch is complete.
    pub fn send(&self, from: usize, to: usize, mail: Mail) {
        self.queue(to, from).push(mail);
    }

    /// Wakes `to` if it sleeps.
    pub fn wake(&self, to: usize) {
        fence(Ordering::SeqCst);
        if self.doors[to].parked.load(Ordering::SeqCst) {
            self.doors[to].ring();
        }
    }

    /// Takes the next mail for `me` from `from`.
    pub fn recv(&self, me: usize, from: usize) -> Option<Mail> {
        self.queue(me, from).pop()
    }

    /// Whether any mail waits for `me`.
    pub fn has_mail(&self, me: usize) -> bool {
        self.senders().any(|from| !self.queue(me, from).is_empty())
    }

    /// Mail waiting for `me` (for metrics).
    pub fn depth(&self, me: usize) -> usize {
        self.senders().map(|from| self.queue(me, from).len()).sum()
    }

    /// `me` is about to sleep: returns `false` (and stays awake) if mail
    /// arrived meanwhile.
    pub fn park(&self, me: usize) -> bool {
        self.doors[me].parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_mail(me) {
            self.doors[me].parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// `me` woke up.
    pub fn unpark(&self, me: usize) {
        self.doors[me].parked.store(false, Ordering::Relaxed);
    }
}
