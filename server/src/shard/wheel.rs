//! A hashed timing wheel: one per shard, for every per-connection deadline
//! (handshake and idle timeouts, heartbeat pings, close timeouts, long-poll
//! expiry). No connection owns a kernel timer.
//!
//! Time is counted in ticks since the shard started (`transport::TICK`
//! each). An entry due at tick `t` sits in bucket `t % BUCKETS`; advancing
//! the wheel visits each elapsed bucket once and takes the entries that are
//! due, leaving those a full turn or more away. Scheduling is O(1), expiry is
//! O(entries in the visited buckets).
//!
//! Entries are never removed early. A connection keeps at most one *live*
//! entry (it records the tick it is scheduled for) and treats any other
//! entry that fires as stale; see `shard::timers`.

/// Buckets per turn: 1024 × 100 ms ≈ 102 s.
const BUCKETS: usize = 1024;

/// A timer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<T> {
    /// The tick it is due at.
    pub due: u32,
    /// What fires.
    pub item: T,
}

/// The wheel. `T` is small and `Copy` (a connection key).
#[derive(Debug)]
pub struct TimerWheel<T> {
    buckets: Vec<Vec<Entry<T>>>,
    /// Ticks up to and including this one have been expired.
    now: u32,
    len: usize,
}

impl<T: Copy> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> TimerWheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        TimerWheel {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            now: 0,
            len: 0,
        }
    }

    /// The last tick expired.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the wheel holds nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` at tick `due`; a tick already past fires on the next
    /// advance.
    pub fn schedule(&mut self, due: u32, item: T) {
        let due = due.max(self.now + 1);
        self.buckets[due as usize % BUCKETS].push(Entry { due, item });
        self.len += 1;
    }

    /// Expires every entry due at or before `to`, appending them to `out`.
    pub fn advance(&mut self, to: u32, out: &mut Vec<Entry<T>>) {
        if to <= self.now {
            return;
        }
        let steps = (to - self.now) as usize;
        let visit = steps.min(BUCKETS);
        for i in 1..=visit {
            let bucket = &mut self.buckets[(self.now as usize + i) % BUCKETS];
            let before = bucket.len();
            let mut j = 0;
            while j < bucket.len() {
                if bucket[j].due <= to {
                    out.push(bucket.swap_remove(j));
                } else {
                    j += 1;
                }
            }
            self.len -= before - bucket.len();
            if bucket.is_empty() && bucket.capacity() > 64 {
                bucket.shrink_to(8);
            }
        }
        self.now = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut TimerWheel<u32>, to: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        w.advance(to, &mut out);
        let mut v: Vec<_> = out.into_iter().map(|e| (e.due, e.item)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn fires_in_order_of_ticks() {
        let mut w = TimerWheel::new();
        w.schedule(5, 1);
        w.schedule(3, 2);
        w.schedule(5, 3);
        assert_eq!(fired(&mut w, 2), []);
        assert_eq!(fired(&mut w, 3), [(3, 2)]);
        assert_eq!(fired(&mut w, 10), [(5, 1), (5, 3)]);
        assert!(w.is_empty());
    }

    #[test]
    fn entries_beyond_one_turn_wait_their_turn() {
        let mut w = TimerWheel::new();
        let far = BUCKETS as u32 * 2 + 7;
        w.schedule(far, 9);
        w.schedule(7, 1);
        assert_eq!(fired(&mut w, 7), [(7, 1)]);
        assert_eq!(fired(&mut w, BUCKETS as u32 + 7), []);
        assert_eq!(w.len(), 1);
        assert_eq!(fired(&mut w, far), [(far, 9)]);
    }

    #[test]
    fn a_long_jump_visits_every_bucket_once() {
        let mut w = TimerWheel::new();
        for t in 1..3000u32 {
            w.schedule(t, t);
        }
        let all = fired(&mut w, 10_000);
        assert_eq!(all.len(), 2999);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_next() {
        let mut w = TimerWheel::new();
        w.advance(50, &mut Vec::new());
        w.schedule(10, 1);
        assert_eq!(fired(&mut w, 51), [(51, 1)]);
    }
}
