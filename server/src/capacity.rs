//! How many connections the node can hold, and why.
//!
//! Sockets live only in io_uring direct-descriptor tables, one table per
//! ring. The kernel refuses a table larger than the process's
//! `RLIMIT_NOFILE` (the per-registration check is `nr > rlimit`), so each
//! ring holds at most that many sockets; capacity grows by adding rings,
//! not by raising the process file limit. Each shard thread owns several
//! rings and creates them as its connections grow (see `shard`), so the
//! rings a node has at any moment match its load.
//!
//! A ring stops accepting before its table is full. With `DEFER_TASKRUN`
//! the kernel runs a multishot accept's pending work in one go when the
//! shard next enters the ring, and that run takes *every* connection
//! waiting in the listen queue (up to the backlog) before the shard sees
//! any of them — and before the cancel that moves accepting elsewhere takes
//! effect. So each table keeps a reserve of the listen backlog plus
//! [`ACCEPT_BURST`] slots; a smaller reserve makes those accepts fail with
//! `ENFILE`, and the kernel drops the connections (measured: 1–4 lost per
//! 200k connections with a 256-slot reserve). The backlog itself is capped
//! at a quarter of a (small) table so the reserve never eats the ring.

/// Slots kept beyond the listen backlog for connections that arrive while
/// the queue is being drained.
pub const ACCEPT_BURST: u32 = 1024;

/// The listen backlog ringcast asks for (the kernel caps it at
/// `net.core.somaxconn`).
pub const MAX_BACKLOG: u32 = 4096;

/// The largest table ringcast asks for, even when the file limit allows
/// more: larger tables buy nothing (rings are cheap) and cost kernel memory
/// up front.
pub const MAX_SLOTS: u32 = 1 << 18;

/// The most rings one shard may own (ring index is 8 bits in keys).
pub const MAX_RINGS_PER_SHARD: usize = 255;

/// The connection capacity plan of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Shard threads.
    pub shards: usize,
    /// Rings each shard may create.
    pub rings_per_shard: usize,
    /// Table size of each ring.
    pub slots_per_ring: u32,
    /// Connections each ring takes before accepting moves on.
    pub usable_per_ring: u32,
    /// Listen backlog of every listener.
    pub backlog: u32,
    /// `RLIMIT_NOFILE` (soft, after raising it to the hard limit).
    pub nofile: u64,
    /// The requested `--max-connections`.
    pub requested: u64,
}

impl Plan {
    /// Plans rings for `max_connections` over `shards` given the file
    /// limit and `net.core.somaxconn`.
    pub fn new(shards: usize, max_connections: u64, nofile: u64, somaxconn: u32) -> Plan {
        let slots = nofile.clamp(256, u64::from(MAX_SLOTS)) as u32;
        let backlog = MAX_BACKLOG.min(somaxconn.max(16)).min(slots / 4);
        let usable = slots - backlog - ACCEPT_BURST.min(slots / 8);
        let per_shard = max_connections.div_ceil(shards as u64);
        let rings = per_shard
            .div_ceil(u64::from(usable))
            .clamp(1, MAX_RINGS_PER_SHARD as u64) as usize;
        Plan {
            shards,
            rings_per_shard: rings,
            slots_per_ring: slots,
            usable_per_ring: usable,
            backlog,
            nofile,
            requested: max_connections,
        }
    }

    /// Connections the node can hold with every ring created.
    pub fn capacity(&self) -> u64 {
        self.shards as u64 * self.rings_per_shard as u64 * u64::from(self.usable_per_ring)
    }

    /// The start-up line: the capacity, what limits it, and what raises it.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "capacity: {} shards × {} rings × {} connections = {} connections \
             (each ring's socket table is limited by RLIMIT_NOFILE={}; {} slots per ring \
             are kept for the accepts of one listen backlog; rings are created as \
             connections arrive)",
            self.shards,
            self.rings_per_shard,
            group(u64::from(self.usable_per_ring)),
            group(self.capacity()),
            group(self.nofile),
            self.slots_per_ring - self.usable_per_ring,
        );
        if self.capacity() < self.requested {
            s.push_str(&format!(
                "; below --max-connections={} because a shard owns at most {} rings: raise the \
                 hard open-files limit (ulimit -Hn, systemd LimitNOFILE=) so each ring holds more",
                group(self.requested),
                MAX_RINGS_PER_SHARD
            ));
        } else {
            s.push_str(
                "; to hold more, raise --max-connections (more rings) or the open-files limit \
                 (ulimit -n / LimitNOFILE=, more sockets per ring)",
            );
        }
        s
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_on_this_host_holds_a_million() {
        let p = Plan::new(2, 1_000_000, 20_000, 4096);
        assert_eq!(p.slots_per_ring, 20_000);
        assert_eq!(p.backlog, 4096);
        assert_eq!(p.usable_per_ring, 20_000 - 4096 - 1024);
        assert_eq!(p.rings_per_shard, 34);
        assert!(p.capacity() >= 1_000_000);
        assert!(
            p.describe().starts_with(
                "capacity: 2 shards × 34 rings × 14,880 connections = 1,011,840 connections"
            ),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn more_files_per_ring_means_fewer_rings() {
        let p = Plan::new(2, 1_000_000, 1_048_576, 4096);
        assert_eq!(p.slots_per_ring, MAX_SLOTS);
        assert_eq!(p.rings_per_shard, 2);
    }

    #[test]
    fn small_tables_get_a_small_backlog() {
        let p = Plan::new(1, 10, 1024, 4096);
        assert_eq!(p.rings_per_shard, 1);
        assert_eq!(p.backlog, 256);
        assert_eq!(p.usable_per_ring, 1024 - 256 - 128);
        let p = Plan::new(2, 1000, 20_000, 128);
        assert_eq!(p.backlog, 128, "somaxconn caps the backlog");
        let p = Plan::new(4, 100_000_000, 20_000, 4096);
        assert_eq!(p.rings_per_shard, MAX_RINGS_PER_SHARD);
        assert!(p.describe().contains("below --max-connections"));
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
