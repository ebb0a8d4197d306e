//! Limits by client address: connections held, and new connections per
//! second (reconnect storms), node-wide.
//!
//! An address is an IPv4 address or an IPv6 /64 (what one subscriber line
//! usually gets). Each has a count of open connections and a token bucket
//! of new ones, refilled at `--max-connection-rate-per-ip` per second up to
//! as many. Loopback peers — a local proxy carrying many clients, or load
//! tools — are exempt unless `--limit-loopback`.
//!
//! One table for the node behind a mutex, since SO_REUSEPORT spreads one
//! address's connections over every shard. It is touched once when a
//! connection opens (after its address is known) and once when it closes,
//! never on the delivery path. Entries of addresses with no connection are
//! swept once their bucket has refilled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use slab::Slab;

/// An address's entry, as a connection keeps it (fits in 24 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerId(u32);

impl PeerId {
    /// Largest index a connection can keep.
    pub const MAX: u32 = (1 << 24) - 2;

    /// The id a connection keeps in 24 bits, `0` meaning none.
    pub fn to_bits(self) -> u32 {
        self.0 + 1
    }

    /// Back from [`PeerId::to_bits`]; `None` for `0`.
    pub fn from_bits(bits: u32) -> Option<PeerId> {
        bits.checked_sub(1).map(PeerId)
    }
}

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Open connections per address.
    pub connections: u32,
    /// New connections per address per second (and the burst).
    pub rate: u32,
    /// Whether loopback peers are limited too.
    pub loopback: bool,
}

/// What [`Peers::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counted; release it with [`Peers::release`] when it closes.
    Yes(PeerId),
    /// Not counted: exempt (loopback), or the table is full.
    Untracked,
    /// The address holds `--max-connections-per-ip`.
    TooMany,
    /// The address opened more than `--max-connection-rate-per-ip` in the
    /// last second.
    TooFast,
}

#[derive(Debug)]
struct Entry {
    key: IpAddr,
    connections: u32,
    tokens: f32,
    refilled: Instant,
}

#[derive(Debug, Default)]
struct Table {
    index: HashMap<IpAddr, u32>,
    entries: Slab<Entry>,
}

/// The node's table. See the module docs.
#[derive(Debug)]
pub struct Peers {
    limits: PeerLimits,
    table: Mutex<Table>,
}

impl Peers {
    /// A table enforcing `limits`.
    pub fn new(limits: PeerLimits) -> Peers {
        Peers {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    /// Whether peer addresses are worth looking up at all: not when every
    /// listener is on loopback and loopback is exempt.
    pub fn needed(&self, listeners_all_loopback: bool) -> bool {
        self.limits.loopback || !listeners_all_loopback
    }

    /// A connection from `ip` opened at `now`.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admit {
        let ip = ip.to_canonical();
        if ip.is_loopback() && !self.limits.loopback {
            return Admit::Untracked;
        }
        let key = bucket_of(ip);
        let rate = self.limits.rate as f32;
        let mut t = self.lock();
        let idx = match t.index.get(&key) {
            Some(&i) => i,
            None => {
                if t.entries.len() as u32 > PeerId::MAX {
                    return Admit::Untracked;
                }
                let i = t.entries.insert(Entry {
                    key,
                    connections: 0,
                    tokens: rate,
                    refilled: now,
                }) as u32;
                t.index.insert(key, i);
                i
            }
        };
        let e = &mut t.entries[idx as usize];
        let elapsed = now.saturating_duration_since(e.refilled).as_secs_f32();
        e.tokens = (e.tokens + elapsed * rate).min(rate);
        e.refilled = now;
        if e.connections >= self.limits.connections {
            return Admit::TooMany;
        }
        if e.tokens < 1.0 {
            return Admit::TooFast;
        }
        e.tokens -= 1.0;
        e.connections += 1;
        Admit::Yes(PeerId(idx))
    }

    /// A connection [`Peers::admit`] counted has closed.
    pub fn release(&self, id: PeerId) {
        let mut t = self.lock();
        if let Some(e) = t.entries.get_mut(id.0 as usize) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Forgets addresses with no connection whose bucket is full again
    /// (they would be admitted as if new). Call about once a second.
    pub fn sweep(&self, now: Instant) {
        let full_after = 1.0;
        let mut t = self.lock();
        let idle: Vec<(usize, IpAddr)> = (t.entries.iter())
            .filter(|(_, e)| {
                e.connections == 0
                    && now.saturating_duration_since(e.refilled).as_secs_f32() >= full_after
            })
            .map(|(i, e)| (i, e.key))
            .collect();
        for (i, key) in idle {
            t.entries.remove(i);
            t.index.remove(&key);
        }
    }

    /// Addresses in the table.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The limits.
    pub fn limits(&self) -> PeerLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every operation leaves the table consistent before it can panic
        // (none does), so a poisoned lock is used as it is.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one client is: an IPv4 address, or an IPv6 /64.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peers(connections: u32, rate: u32) -> Peers {
        Peers::new(PeerLimits {
            connections,
            rate,
            loopback: false,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_holds_at_most_its_connections() {
        let p = peers(2, 100);
        let t0 = Instant::now();
        let a = p.admit(ip("10.0.0.1"), t0);
        assert!(matches!(a, Admit::Yes(_)));
        assert!(matches!(p.admit(ip("10.0.0.1"), t0), Admit::Yes(_)));
        assert_eq!(p.admit(ip("10.0.0.1"), t0), Admit::TooMany);
        assert!(
            matches!(p.admit(ip("10.0.0.2"), t0), Admit::Yes(_)),
            "another address"
        );
        let Admit::Yes(id) = a else { unreachable!() };
        p.release(id);
        assert!(
            matches!(p.admit(ip("10.0.0.1"), t0), Admit::Yes(_)),
            "room again"
        );
    }

    #[test]
    fn new_connections_are_limited_per_second_with_a_burst() {
        let p = peers(1000, 10);
        let t0 = Instant::now();
        let admitted = (0..15)
            .filter(|_| matches!(p.admit(ip("10.0.0.1"), t0), Admit::Yes(_)))
            .count();
        assert_eq!(admitted, 10, "the burst");
        assert_eq!(p.admit(ip("10.0.0.1"), t0), Admit::TooFast);
        let later = t0 + Duration::from_millis(500);
        let admitted = (0..15)
            .filter(|_| matches!(p.admit(ip("10.0.0.1"), later), Admit::Yes(_)))
            .count();
        assert_eq!(admitted, 5, "half a second refills half");
    }

    #[test]
    fn loopback_is_exempt_unless_asked_and_v6_counts_by_64() {
        let p = peers(1, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(p.admit(ip("127.0.0.1"), t0), Admit::Untracked);
            assert_eq!(p.admit(ip("::1"), t0), Admit::Untracked);
            assert_eq!(p.admit(ip("::ffff:127.0.0.1"), t0), Admit::Untracked);
        }
        assert!(matches!(p.admit(ip("2001:db8::1"), t0), Admit::Yes(_)));
        assert_eq!(p.admit(ip("2001:db8::2"), t0), Admit::TooMany, "same /64");
        assert!(matches!(p.admit(ip("2001:db8:0:1::1"), t0), Admit::Yes(_)));
        assert!(matches!(p.admit(ip("::ffff:10.1.2.3"), t0), Admit::Yes(_)));
        assert_eq!(
            p.admit(ip("10.1.2.3"), t0),
            Admit::TooMany,
            "a mapped v4 is v4"
        );
        let strict = Peers::new(PeerLimits {
            connections: 1,
            rate: 1,
            loopback: true,
        });
        assert!(matches!(strict.admit(ip("127.0.0.1"), t0), Admit::Yes(_)));
        assert_eq!(strict.admit(ip("127.0.0.1"), t0), Admit::TooMany);
        assert!(
            strict.needed(true),
            "loopback limited: addresses looked up even on a loopback listener"
        );
        assert!(!p.needed(true) && p.needed(false));
    }

    #[test]
    fn idle_addresses_are_swept_once_their_bucket_is_full() {
        let p = peers(10, 10);
        let t0 = Instant::now();
        let Admit::Yes(id) = p.admit(ip("10.0.0.1"), t0) else {
            panic!()
        };
        for _ in 0..9 {
            p.admit(ip("10.0.0.2"), t0);
        }
        p.release(id);
        p.sweep(t0 + Duration::from_millis(500));
        assert_eq!(
            p.len(),
            2,
            "too soon: 10.0.0.2 still has connections, 10.0.0.1 a spent token"
        );
        p.sweep(t0 + Duration::from_secs(1));
        assert_eq!(p.len(), 1, "10.0.0.1 forgotten; 10.0.0.2 holds connections");
    }
}
