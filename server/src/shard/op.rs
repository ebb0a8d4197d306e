//! What each io_uring operation of a shard is for: the `op` byte of its
//! `UserData`, so a completion is routed without a lookup.

use uring::UserData;

/// The shard's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept; index = listener number.
    Accept = 1,
    /// Multishot receive; index = slot, gen = connection generation.
    Recv = 2,
    /// A send (the ring's own send index and generation).
    Send = 3,
    /// Shutdown of a connection's socket; index = slot.
    Shutdown = 4,
    /// Close of a connection's direct descriptor; index = slot.
    Close = 5,
    /// Read of the shard's eventfd (home ring only).
    Wake = 6,
    /// Cancellation request; its own completion is ignored.
    Cancel = 7,
    /// A socket option set on a new connection (posts only on failure);
    /// index = slot.
    SockOpt = 8,
    /// The peer-address lookup of a new connection; index = slot, gen =
    /// connection generation.
    Peer = 9,
}

impl Op {
    /// The operation a completion's tag names; `None` for values a shard
    /// never submits.
    pub fn of(tag: UserData) -> Option<Op> {
        Some(match tag.op() {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Close,
            6 => Op::Wake,
            7 => Op::Cancel,
            8 => Op::SockOpt,
            9 => Op::Peer,
            _ => return None,
        })
    }

    /// A tag for this operation.
    pub fn tag(self, index: u32, gen: u32) -> UserData {
        UserData::new(self as u8, index, gen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Close,
            Op::Wake,
            Op::Cancel,
            Op::SockOpt,
            Op::Peer,
        ] {
            let tag = op.tag(19_999, 7);
            assert_eq!((Op::of(tag), tag.index(), tag.gen()), (Some(op), 19_999, 7));
        }
        assert_eq!(Op::of(UserData::from_raw(0)), None);
    }
}
