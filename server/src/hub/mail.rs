//! Cross-shard messages and the queues that carry them.
//!
//! Shards share no mutable state on the data path; they send each other
//! [`Mail`] through one lock-free queue per ordered pair of shards
//! (`from → to`), so the items one shard sends another arrive in the order
//! they were sent — the resume protocol depends on it (see the hub docs).
//!
//! # Waking a sleeping shard
//! Each shard sleeps on its ring, which has a read armed on the shard's
//! eventfd. A sender pushes its mail, then rings the target's doorbell only
//! if the target said it is parked. The target sets `parked`, re-checks its
//! queues, and only then sleeps; the `SeqCst` pair (push → load `parked`,
//! store `parked` → check queues) guarantees that one of the two sides sees
//! the other, so no mail waits for a timeout. A busy shard costs its senders
//! no system call at all.
//!
//! Why an eventfd and not `IORING_OP_MSG_RING` into the target's ring
//! (measured on the reference host, 2026-11-22): in isolation `MSG_RING`
//! wakes a sleeping ring faster (ping-pong round trip 32 µs against 74 µs,
//! `cargo run --release -p ringcast-uring --example wakeup`) but costs the sender
//! more (464 against 215 ns per wake-up); end to end, 10,000 subscribers on
//! 100 channels at 100 publishes/s, `MSG_RING` wake-ups gave 2 % lower
//! delivery latency (p50 1.026 against 1.045 ms) for 30 % more server CPU
//! per delivery (8.9 against 6.85 ms per 1,000), so the eventfd stays.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use codec::ws::DataKind;
use crossbeam_queue::SegQueue;

use super::{ChannelName, ClientId, Message, MsgId, Replay};
use crate::runtime::sys;
use crate::shard::conn::ConnKey;

/// Where a shard wants an answer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The asking shard.
    pub shard: usize,
    /// The asking connection.
    pub conn: ConnKey,
    /// Distinguishes requests of the same connection.
    pub token: u32,
}

/// One message to publish, with its position in the request that carried it.
#[derive(Debug, Clone)]
pub struct PublishItem {
    /// Position in the publishing request (its answer lists ids in order).
    pub index: u32,
    /// Target channel (owned by the receiving shard).
    pub channel: ChannelName,
    /// Text or binary.
    pub kind: DataKind,
    /// Payload.
    pub payload: Bytes,
    /// Deliver live only: no id, not stored.
    pub ephemeral: bool,
}

/// An item sent from one shard to another.
#[derive(Debug)]
pub enum Mail {
    /// Publish these messages (all owned by the receiving shard), then
    /// answer with [`Mail::Published`].
    Publish {
        /// Who to answer.
        reply: ReplyTo,
        /// What to publish.
        items: Vec<PublishItem>,
    },
    /// The ids assigned to a [`Mail::Publish`], by request position.
    Published {
        /// The request.
        reply: ReplyTo,
        /// (position, id) pairs.
        ids: Vec<(u32, MsgId)>,
    },
    /// A connection on shard `from` subscribes; answer with
    /// [`Mail::Replayed`].
    Subscribe {
        /// The subscriber's shard.
        from: usize,
        /// The subscriber.
        conn: ConnKey,
        /// The subscription's indices in the subscriber shard's hub.
        chan: u32,
        /// ″
        sub: u32,
        /// The channel.
        channel: ChannelName,
        /// Resume point.
        since: Option<MsgId>,
        /// The multiplexed-WebSocket client joining the channel's presence.
        client: Option<ClientId>,
    },
    /// The owner's answer to [`Mail::Subscribe`].
    Replayed {
        /// The subscriber.
        conn: ConnKey,
        /// Its subscription.
        chan: u32,
        /// ″
        sub: u32,
        /// History to send first, and the live starting point.
        replay: Replay,
    },
    /// Shard `from` has no subscribers of `channel` left.
    Unsubscribe {
        /// The shard.
        from: usize,
        /// The channel.
        channel: ChannelName,
    },
    /// A multiplexed-WebSocket client left a channel (owner updates
    /// presence and tells the channel).
    Left {
        /// The channel.
        channel: ChannelName,
        /// The client.
        client: ClientId,
    },
    /// Who is present on a channel? Answer with [`Mail::Presence`].
    PresenceQuery {
        /// Who to answer.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
    },
    /// The answer to [`Mail::PresenceQuery`].
    Presence {
        /// The request.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
        /// The clients present.
        clients: Vec<ClientId>,
    },
    /// A published message for the receiving shard's subscribers.
    Deliver(Arc<Message>),
}

/// A shard's doorbell: the eventfd its ring reads, and whether it sleeps.
#[derive(Debug)]
pub struct Doorbell {
    efd: OwnedFd,
    parked: AtomicBool,
}

impl Doorbell {
    /// The eventfd, for the shard to read and register on its rings.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Wakes the shard, whatever it is doing.
    pub fn ring(&self) {
        sys::eventfd_signal(self.fd());
    }
}

/// All queues and doorbells of the node; shared by every shard.
#[derive(Debug)]
pub struct Mailboxes {
    shards: usize,
    /// `queues[to * shards + from]`.
    queues: Box<[SegQueue<Mail>]>,
    doors: Box<[Doorbell]>,
}

impl Mailboxes {
    /// Queues and doorbells for `shards` shards.
    pub fn new(shards: usize) -> std::io::Result<Arc<Mailboxes>> {
        let doors = (0..shards)
            .map(|_| {
                Ok(Doorbell {
                    efd: sys::eventfd()?,
                    parked: AtomicBool::new(false),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(Mailboxes {
            shards,
            queues: (0..shards * shards).map(|_| SegQueue::new()).collect(),
            doors: doors.into_boxed_slice(),
        }))
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Shard `shard`'s doorbell.
    pub fn door(&self, shard: usize) -> &Doorbell {
        &self.doors[shard]
    }

    /// Queues `mail` from `from` to `to`. Call [`Mailboxes::wake`] once the
    /// batch is complete.
    pub fn send(&self, from: usize, to: usize, mail: Mail) {
        self.queues[to * self.shards + from].push(mail);
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
        self.queues[me * self.shards + from].pop()
    }

    /// Whether any mail waits for `me`.
    pub fn has_mail(&self, me: usize) -> bool {
        (0..self.shards).any(|from| !self.queues[me * self.shards + from].is_empty())
    }

    /// Mail waiting for `me` (for metrics).
    pub fn depth(&self, me: usize) -> usize {
        (0..self.shards)
            .map(|from| self.queues[me * self.shards + from].len())
            .sum()
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
