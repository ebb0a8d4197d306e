//! Gap detection for one channel's messages as Pub/Sub delivers them.
//!
//! Redis Pub/Sub is at-most-once: a subscriber whose output buffer
//! overflows is disconnected, a failover can drop what was in flight, and
//! a Pub/Sub connection that comes back has missed whatever was published
//! meanwhile. The publish script numbers every message of a channel
//! consecutively, so a node can tell: each arriving id is either the next
//! one (deliver it), one it has already delivered (drop it — a history
//! read raced the live message), one past a hole (read the hole from
//! history, then deliver), or one of a new epoch (the channel's keys were
//! lost: what this node kept of the old epoch is gone, and its
//! subscribers are told `reset`, reason `epoch`).
//!
//! Sans-io: ids in, verdicts out. The bridge keeps one [`Sequence`] per
//! channel it is subscribed to.

use crate::hub::{Epoch, MsgId};

/// Where a channel stands: the last message delivered on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    last: Option<MsgId>,
}

/// What to do with an arriving message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next one: deliver it.
    Next,
    /// Delivered already (or older): drop it.
    Duplicate,
    /// Messages `from..=to` are missing: read them from history, deliver
    /// them, then this one.
    Gap {
        /// The first missing sequence number.
        from: u64,
        /// The last missing one.
        to: u64,
    },
    /// The channel started over with another epoch: the node's copy of the
    /// old one is void. Read the new epoch's history up to this message.
    NewEpoch {
        /// The epoch it had.
        old: Epoch,
    },
}

impl Sequence {
    /// A channel this node has delivered nothing of yet: the first message
    /// it sees is taken as it comes (the subscription's replay came from
    /// history up to `last`, if any).
    pub fn starting_after(last: Option<MsgId>) -> Sequence {
        Sequence { last }
    }

    /// The last id delivered.
    pub fn last(&self) -> Option<MsgId> {
        self.last
    }

    /// Judges `id`, and — unless it is a duplicate — records it as
    /// delivered (the caller fills a gap before delivering it).
    pub fn arrive(&mut self, id: MsgId) -> Verdict {
        let verdict = match self.last {
            None => Verdict::Next,
            Some(last) if last.epoch != id.epoch => Verdict::NewEpoch { old: last.epoch },
            Some(last) if id.seq <= last.seq => return Verdict::Duplicate,
            Some(last) if id.seq == last.seq + 1 => Verdict::Next,
            Some(last) => Verdict::Gap {
                from: last.seq + 1,
                to: id.seq - 1,
            },
        };
        self.last = Some(id);
        verdict
    }

    /// Whether the channel's newest id, as Redis reports it (the periodic
    /// check), shows messages this node has not seen: a stalled Pub/Sub.
    pub fn is_behind(&self, newest: MsgId) -> bool {
        match self.last {
            None => true,
            Some(last) => last.epoch != newest.epoch || last.seq < newest.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(epoch: u64, seq: u64) -> MsgId {
        MsgId {
            epoch: Epoch::from_bits(epoch),
            seq,
        }
    }

    #[test]
    fn each_arrival_gets_its_verdict() {
        let mut s = Sequence::starting_after(Some(id(1, 4)));
        assert_eq!(s.arrive(id(1, 5)), Verdict::Next);
        assert_eq!(s.arrive(id(1, 5)), Verdict::Duplicate);
        assert_eq!(s.arrive(id(1, 3)), Verdict::Duplicate);
        assert_eq!(s.arrive(id(1, 9)), Verdict::Gap { from: 6, to: 8 });
        assert_eq!(s.last(), Some(id(1, 9)));
        assert_eq!(
            s.arrive(id(2, 1)),
            Verdict::NewEpoch {
                old: Epoch::from_bits(1)
            }
        );
        assert_eq!(s.arrive(id(2, 2)), Verdict::Next);
        assert!(!s.is_behind(id(2, 2)));
        assert!(s.is_behind(id(2, 3)));
        assert!(s.is_behind(id(3, 1)));
        let mut fresh = Sequence::starting_after(None);
        assert_eq!(fresh.arrive(id(7, 40)), Verdict::Next);
        assert!(Sequence::starting_after(None).is_behind(id(7, 1)));
    }

    proptest! {
        /// Whatever Pub/Sub does to a channel's messages — drop some,
        /// repeat some, reorder neighbours — delivering each `Next`, each
        /// gap's range, and nothing else yields every message up to the
        /// last seen exactly once, in order.
        #[test]
        fn delivery_with_gap_fills_is_exactly_once_in_order(
            fates in proptest::collection::vec(0u8..6, 1..200),
        ) {
            let mut arriving = Vec::new();
            for (i, fate) in fates.iter().enumerate() {
                let seq = i as u64 + 1;
                match fate {
                    0 => {}                                   // dropped
                    1 => { arriving.push(seq); arriving.push(seq) } // repeated
                    2 if seq > 1 => { arriving.push(seq); arriving.push(seq - 1) } // late
                    _ => arriving.push(seq),
                }
            }
            let mut s = Sequence::starting_after(Some(id(1, 0)));
            let mut delivered = Vec::new();
            for seq in arriving {
                match s.arrive(id(1, seq)) {
                    Verdict::Next => delivered.push(seq),
                    Verdict::Gap { from, to } => {
                        delivered.extend(from..=to);
                        delivered.push(seq);
                    }
                    Verdict::Duplicate => {}
                    Verdict::NewEpoch { .. } => prop_assert!(false, "one epoch"),
                }
            }
            let last = s.last().map_or(0, |l| l.seq);
            prop_assert_eq!(delivered, (1..=last).collect::<Vec<_>>());
        }
    }
}
