//! Accepting connections: which ring takes them, moving on when it fills,
//! and the once-a-second check that no listener is left unserved.
//!
//! Each shard has its own `SO_REUSEPORT` listener per `--listen` address;
//! the kernel spreads new connections over shards. Within a shard, exactly
//! one ring — the *accepting* ring — has a multishot accept armed on each
//! listener, placing sockets straight into its direct-descriptor table.
//! When it reaches `usable_per_ring` connections, accepting moves to the
//! emptiest ring with room, or to a new ring; a shard at capacity stops
//! accepting until connections close.
//!
//! A multishot accept ends on errors, on a full completion queue and on
//! cancellation; every completion without `F_MORE` is re-armed unless we
//! cancelled it. Once a second the acceptor also compares each listener's
//! accept queue (`TCP_INFO`) with what it accepted in that second:
//! connections waiting on a listener that accepted none mean its accept is
//! not being served. That is logged with what the ring looked like, counted
//! (`ringcast_accept_rearms_total`) and repaired by re-arming, so no stall
//! outlives a second.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use uring::{sys, Completion, EventFd};

use crate::metrics::ShardMetrics;

use super::conns::Conns;
use super::op::Op;

/// How often accept failures are logged in detail (the others are
/// counted and summarised).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A shard's listeners and where their connections go. See the module docs.
#[derive(Debug)]
pub struct Acceptor {
    shard: usize,
    listeners: Vec<OwnedFd>,
    /// Index of the first TLS listener (they come after the plaintext ones).
    tls_from: usize,
    /// Per listener: whether it is an IPv6 socket (what a peer-address
    /// lookup asks for).
    ipv6: Vec<bool>,
    /// The ring whose accepts are armed (`None`: not accepting).
    ring: Option<usize>,
    /// Per listener: our accept on the accepting ring is armed (we have not
    /// seen its last completion).
    armed: Vec<bool>,
    /// Connections accepted per listener since the last check.
    accepted: Vec<u64>,
    /// When each listener last accepted a connection.
    last_accept: Vec<Option<Instant>>,
    /// Accepting stopped for good (shutdown).
    stopped: bool,
    /// When an accept failure was last logged.
    warned: Option<Instant>,
    failures_unlogged: u64,
}

impl Acceptor {
    /// An acceptor for shard `shard`'s listeners, not yet accepting.
    /// Listeners from index `tls_from` on are TLS listeners.
    pub fn new(shard: usize, listeners: Vec<OwnedFd>, tls_from: usize) -> Acceptor {
        let n = listeners.len();
        let ipv6 = (listeners.iter())
            .map(|l| sys::local_addr(l.as_raw_fd()).is_ok_and(|a| a.is_ipv6()))
            .collect();
        Acceptor {
            shard,
            listeners,
            tls_from,
            ipv6,
            ring: None,
            armed: vec![false; n],
            accepted: vec![0; n],
            last_accept: vec![None; n],
            stopped: false,
            warned: None,
            failures_unlogged: 0,
        }
    }

    /// Whether listener `listener` speaks TLS (`--listen-tls`).
    pub fn is_tls(&self, listener: usize) -> bool {
        listener >= self.tls_from
    }

    /// Whether listener `listener` is an IPv6 socket (its connections are).
    pub fn is_ipv6(&self, listener: usize) -> bool {
        self.ipv6.get(listener).copied().unwrap_or(false)
    }

    /// Arms accepts on ring `r` and cancels them on the ring that had them.
    pub fn accept_on(&mut self, conns: &mut Conns, r: usize) {
        if self.ring == Some(r) || self.stopped {
            return;
        }
        self.disarm(conns);
        for (i, l) in self.listeners.iter().enumerate() {
            conns.rings[r]
                .ring
                .accept_multi(l.as_raw_fd(), Op::Accept.tag(i as u32, 0));
            self.armed[i] = true;
        }
        self.ring = Some(r);
    }

    fn disarm(&mut self, conns: &mut Conns) {
        if let Some(old) = self.ring.take() {
            for i in 0..self.listeners.len() {
                conns.rings[old]
                    .ring
                    .cancel(Op::Accept.tag(i as u32, 0), Op::Cancel.tag(0, 0));
                self.armed[i] = false;
            }
        }
    }

    /// Stops accepting for good (shutdown).
    pub fn stop(&mut self, conns: &mut Conns) {
        self.disarm(conns);
        self.stopped = true;
    }

    /// An accept completion from ring `r`. Returns the slot of a new
    /// connection, if one was accepted.
    pub fn on_accept(
        &mut self,
        conns: &mut Conns,
        doorbell: &EventFd,
        metrics: &ShardMetrics,
        r: usize,
        c: &Completion,
        now: Instant,
    ) -> Option<u32> {
        let listener = c.user_data().index() as usize;
        let mine = self.ring == Some(r);
        if mine && !c.more() {
            if let Some(a) = self.armed.get_mut(listener) {
                *a = false;
            }
        }
        let slot = if c.result() >= 0 {
            if let Some(n) = self.accepted.get_mut(listener) {
                *n += 1;
            }
            if let Some(t) = self.last_accept.get_mut(listener) {
                *t = Some(now);
            }
            ShardMetrics::add(&metrics.accepts, 1);
            Some(c.result() as u32)
        } else {
            let errno = -c.result();
            if errno != libc::ECANCELED {
                self.failed(metrics, errno, now);
            }
            None
        };
        let full = conns.rings[r].used + u32::from(slot.is_some()) >= conns.usable_per_ring();
        if mine && (full || c.result() == -libc::ENFILE) {
            self.rotate(conns, doorbell, r);
        } else if mine && !c.more() && c.result() != -libc::ECANCELED && !self.stopped {
            // Ended without our cancel (an error, a full completion queue):
            // re-arm.
            if let Some(l) = self.listeners.get(listener) {
                conns.rings[r]
                    .ring
                    .accept_multi(l.as_raw_fd(), Op::Accept.tag(listener as u32, 0));
                self.armed[listener] = true;
            }
        }
        slot
    }

    /// The accepting ring `r` filled up: move accepting to the emptiest
    /// ring with room, creating one if needed.
    fn rotate(&mut self, conns: &mut Conns, doorbell: &EventFd, r: usize) {
        let usable = conns.usable_per_ring();
        let emptiest = (0..conns.rings.len())
            .filter(|&i| i != r && conns.rings[i].used < usable * 9 / 10)
            .min_by_key(|&i| conns.rings[i].used);
        let target = match emptiest {
            Some(i) => Some(i),
            None if conns.can_grow() => match conns.add_ring(Some(doorbell)) {
                Ok(i) => {
                    tracing::info!(
                        shard = self.shard,
                        ring = i,
                        "ring {i} created ({} rings now)",
                        i + 1
                    );
                    Some(i)
                }
                Err(e) => {
                    tracing::error!(shard = self.shard, "cannot create another ring: {e}");
                    None
                }
            },
            None => None,
        };
        match target {
            Some(i) => self.accept_on(conns, i),
            None => {
                self.disarm(conns);
                tracing::warn!(
                    shard = self.shard,
                    connections = conns.used(),
                    "shard is at capacity: not accepting until connections close (raise --max-connections or the open-files limit)"
                );
            }
        }
    }

    /// A slot of ring `r` was freed: a shard that stopped at capacity
    /// accepts again once the ring has room.
    pub fn on_closed(&mut self, conns: &mut Conns, r: usize) {
        if self.ring.is_none()
            && !self.stopped
            && conns.rings[r].used < conns.usable_per_ring() * 9 / 10
        {
            self.accept_on(conns, r);
        }
    }

    /// The self-check, once a second (see the module docs).
    pub fn check(&mut self, conns: &mut Conns, metrics: &ShardMetrics, now: Instant) {
        let accepted = std::mem::replace(&mut self.accepted, vec![0; self.listeners.len()]);
        let Some(r) = self.ring else {
            return;
        };
        for (i, l) in self.listeners.iter().enumerate() {
            let waiting = sys::listen_queue_len(l.as_raw_fd()).unwrap_or(0);
            if waiting == 0 || accepted[i] > 0 {
                continue;
            }
            ShardMetrics::add(&metrics.accept_rearms, 1);
            let cr = &mut conns.rings[r];
            let since = self.last_accept[i].map(|t| now.duration_since(t));
            tracing::warn!(
                shard = self.shard,
                listener = i,
                ring = r,
                waiting,
                armed = self.armed[i],
                ring_has_work = cr.ring.has_work(),
                ring_connections = cr.used,
                last_accept_ago = ?since,
                "{waiting} connections waiting on a listener that accepted none for a second; re-arming its accept"
            );
            cr.ring
                .cancel(Op::Accept.tag(i as u32, 0), Op::Cancel.tag(0, 0));
            cr.ring
                .accept_multi(l.as_raw_fd(), Op::Accept.tag(i as u32, 0));
            self.armed[i] = true;
        }
    }

    /// Logs accept failures: the first at once, then at most one line per
    /// ten seconds with the count of those not logged.
    fn failed(&mut self, metrics: &ShardMetrics, errno: i32, now: Instant) {
        ShardMetrics::add(&metrics.accept_errors, 1);
        if self
            .warned
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_INTERVAL)
        {
            self.failures_unlogged += 1;
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
            shard = self.shard,
            unlogged = self.failures_unlogged,
            "accept failed: {err}{hint}"
        );
        self.warned = Some(now);
        self.failures_unlogged = 0;
    }
}
