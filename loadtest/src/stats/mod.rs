//! Statistics: latency histograms and the delivery check.
//!
//! # Latency
//! Every latency is `received − intended`, where *intended* is the time
//! the publisher's schedule said the message should go out (see
//! [`crate::marker`]). A publisher that stalls for a second therefore
//! shows up as a second of extra latency on every message it should have
//! sent during the stall — exactly what a real client would have seen —
//! instead of vanishing from the measurement (coordinated omission).
//! [`latency_ns`] is that rule; the tests below show the difference.
//!
//! Each worker thread records into its own HDR histogram (3 significant
//! digits, 1 µs … 1 h); histograms are merged by addition, which is exact
//! for HDR histograms with the same layout, so merged percentiles equal
//! the percentiles of all samples together.
//!
//! # Deliveries
//! [`SeqTracker`] follows one subscriber's view of one channel: a bitmap of
//! the positions seen. A position seen twice is a duplicate; a new position
//! below the highest seen so far arrived out of order; a position never
//! seen by the end is lost. The counts are exact, not sampled.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Smallest trackable latency: 1 µs (values below are clamped up).
const LOW_NS: u64 = 1_000;
/// Largest trackable latency: one hour (values above are clamped down).
const HIGH_NS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist(Histogram<u64>);

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHist(
            Histogram::new_with_bounds(LOW_NS, HIGH_NS, 3).expect("valid static histogram bounds"),
        )
    }

    /// Records one latency; out-of-range values are clamped.
    pub fn record_ns(&mut self, ns: u64) {
        let v = ns.clamp(LOW_NS, HIGH_NS);
        // Cannot fail: the value is within the bounds.
        let _ = self.0.record(v);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHist) {
        // Same bounds and precision on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Removes every sample.
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// Latency at quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        ns_to_ms(self.0.value_at_quantile(q))
    }

    /// The percentile summary.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.0.is_empty();
        let ms = |v: u64| if empty { 0.0 } else { ns_to_ms(v) };
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: if empty { 0.0 } else { self.0.mean() / 1e6 },
        }
    }

    /// `(latency_ms, cumulative fraction)` points for a CDF plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        self.0
            .iter_quantiles(2)
            .map(|v| (ns_to_ms(v.value_iterated_to()), v.quantile_iterated_to()))
            .collect()
    }
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Percentiles of a latency distribution; durations in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Latency of a delivery measured from its intended send time; a receive
/// clock that reads earlier than the intention (impossible with one
/// monotonic clock, but cheap to guard) counts as zero.
pub fn latency_ns(intended_ns: u64, received_ns: u64) -> u64 {
    received_ns.saturating_sub(intended_ns)
}

/// What one received position meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time, in order.
    New,
    /// First time, but after a higher position.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Outside the positions this subscriber expects.
    Unexpected,
}

/// One subscriber's record of the positions `0..expected` of its channel.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    expected: u32,
    unique: u32,
    highest: Option<u32>,
}

impl SeqTracker {
    /// A tracker expecting positions `0..expected`.
    pub fn new(expected: u32) -> Self {
        SeqTracker {
            bits: vec![0; (expected as usize).div_ceil(64)],
            expected,
            unique: 0,
            highest: None,
        }
    }

    /// Records position `pos`.
    pub fn observe(&mut self, pos: u64) -> Seen {
        let Ok(p) = u32::try_from(pos) else {
            return Seen::Unexpected;
        };
        if p >= self.expected {
            return Seen::Unexpected;
        }
        let (w, b) = ((p / 64) as usize, p % 64);
        if self.bits[w] & (1 << b) != 0 {
            return Seen::Duplicate;
        }
        self.bits[w] |= 1 << b;
        self.unique += 1;
        match self.highest {
            Some(h) if p < h => Seen::OutOfOrder,
            _ => {
                self.highest = Some(p);
                Seen::New
            }
        }
    }

    /// Positions not seen (so far).
    pub fn missing(&self) -> u32 {
        self.expected - self.unique
    }

    /// Positions seen at least once.
    pub fn unique(&self) -> u32 {
        self.unique
    }
}

/// Delivery counts, summed over subscribers.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Deliveries the workload called for (subscribers × their channel's messages).
    pub expected: u64,
    /// Messages of this run received, duplicates included.
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of a message the subscriber already had.
    pub duplicates: u64,
    /// First deliveries that came after a later message of the same channel.
    pub out_of_order: u64,
    /// Messages of this run for another channel, or beyond the published range.
    pub unexpected: u64,
    /// Frames without this run's marker (other runs, server notices).
    pub foreign: u64,
    /// Reset notices (the server lost the subscriber's resume position).
    pub resets: u64,
}

impl DeliveryCounts {
    /// Adds `other` to `self`.
    pub fn merge(&mut self, o: &DeliveryCounts) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.foreign += o.foreign;
        self.resets += o.resets;
    }

    /// Counts one observation.
    pub fn count(&mut self, seen: Seen) {
        self.received += 1;
        match seen {
            Seen::New => {}
            Seen::OutOfOrder => self.out_of_order += 1,
            Seen::Duplicate => self.duplicates += 1,
            Seen::Unexpected => self.unexpected += 1,
        }
    }

    /// Lost deliveries as a fraction of the expected ones.
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_worker_histograms_equals_one_histogram_of_all_samples() {
        let mut all = LatencyHist::new();
        let mut workers = vec![LatencyHist::new(); 4];
        for i in 0..100_000u64 {
            // A skewed distribution: mostly ~1 ms, a tail up to ~1 s.
            let v =
                1_000_000 + (i * 7919 % 1000) * 1000 + if i % 1000 == 0 { i * 10_000 } else { 0 };
            all.record_ns(v);
            workers[(i % 4) as usize].record_ns(v);
        }
        let mut merged = LatencyHist::new();
        for w in &workers {
            merged.merge(w);
        }
        assert_eq!(merged.count(), 100_000);
        assert_eq!(merged.summary(), all.summary());
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = LatencyHist::new();
        for ms in 1..=1000u64 {
            h.record_ns(ms * 1_000_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(LatencyHist::new().summary().p99_ms, 0.0);
        let cdf = h.cdf();
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((cdf.last().unwrap().1 - 1.0).abs() < 1e-9);
    }

    /// A publisher scheduled at 1,000 msg/s stalls for 1 s after message
    /// 100, then catches up. The network delivers every message 1 ms after
    /// it is actually sent.
    #[test]
    fn coordinated_omission_is_corrected_by_measuring_from_intended_time() {
        let interval = 1_000_000u64; // 1 ms
        let stall_until = 101 * interval + 1_000_000_000;
        let mut intended_hist = LatencyHist::new();
        let mut naive_hist = LatencyHist::new();
        for i in 0..2000u64 {
            let intended = i * interval;
            let actual = if i > 100 {
                intended.max(stall_until)
            } else {
                intended
            };
            let received = actual + 1_000_000;
            intended_hist.record_ns(latency_ns(intended, received));
            naive_hist.record_ns(latency_ns(actual, received));
        }
        // Measured from the actual send, the stall is invisible.
        assert!(naive_hist.quantile_ms(0.99) < 1.1);
        // Measured from the intention, the ~1000 messages scheduled during
        // the stall waited up to a second: half the distribution is hurt.
        let s = intended_hist.summary();
        assert!(s.max_ms > 999.0 && s.max_ms < 1002.0, "{s:?}");
        assert!(s.mean_ms > 200.0, "{s:?}");
        assert!(naive_hist.summary().mean_ms < 1.1);
        assert!(s.p90_ms > 700.0, "{s:?}");
        // And hdrhistogram's own correction (synthesising the missing
        // samples from the expected interval) agrees on the tail.
        let mut corrected = Histogram::<u64>::new_with_bounds(LOW_NS, HIGH_NS, 3).unwrap();
        for i in 0..2000u64 {
            let intended = i * interval;
            let actual = if i > 100 {
                intended.max(stall_until)
            } else {
                intended
            };
            if i == 101 {
                // One sample for the stalled send; the corrector back-fills.
                corrected
                    .record_correct(stall_until - intended + 1_000_000, interval)
                    .unwrap();
            } else if actual == intended {
                corrected.record(1_000_000).unwrap();
            }
        }
        let ours = intended_hist.quantile_ms(0.99);
        let theirs = corrected.value_at_quantile(0.99) as f64 / 1e6;
        assert!((ours - theirs).abs() / theirs < 0.05, "{ours} vs {theirs}");
        assert_eq!(latency_ns(10, 5), 0);
    }

    #[test]
    fn sequence_tracker_counts_exactly() {
        let mut t = SeqTracker::new(10);
        let mut c = DeliveryCounts::default();
        for p in [0, 1, 3, 2, 3, 5, 4, 9, 9, 42] {
            c.count(t.observe(p));
        }
        assert_eq!(t.unique(), 7); // 0 1 2 3 4 5 9
        assert_eq!(t.missing(), 3); // 6 7 8
        assert_eq!(c.received, 10);
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.out_of_order, 2); // 2 after 3, 4 after 5
        assert_eq!(c.unexpected, 1);
        assert_eq!(SeqTracker::new(0).observe(0), Seen::Unexpected);
        let mut big = SeqTracker::new(130);
        assert_eq!(big.observe(129), Seen::New);
        assert_eq!(big.observe(64), Seen::OutOfOrder);
        assert_eq!(big.observe(u64::MAX), Seen::Unexpected);
        assert_eq!(big.missing(), 128);
    }

    #[test]
    fn counts_merge_and_ratio() {
        let mut a = DeliveryCounts {
            expected: 100,
            lost: 10,
            ..Default::default()
        };
        let b = DeliveryCounts {
            expected: 100,
            duplicates: 1,
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!(a.expected, 200);
        assert_eq!(a.duplicates, 1);
        assert!((a.loss_ratio() - 0.05).abs() < 1e-12);
        assert_eq!(DeliveryCounts::default().loss_ratio(), 0.0);
    }
}
