//! Message ids: `{epoch}-{seq}`.
//!
//! `seq` is monotonic per channel, assigned by the channel's owner shard.
//! `epoch` is random at every start of the node and printed as 12 hex
//! digits. A client resuming with an id from another epoch (the node
//! restarted and lost its history) is told so explicitly instead of
//! silently missing messages. (The store, `crate::store`, can keep an
//! epoch across restarts; it is not wired into the node yet.)

use std::fmt;

/// The node's epoch: 48 random bits chosen at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// The epoch of what has no id (live-only messages from Redis).
    pub const NONE: Epoch = Epoch(0);

    /// A fresh random epoch.
    pub fn random() -> Self {
        Epoch(rand::random::<u64>() & 0xFFFF_FFFF_FFFF)
    }

    /// The epoch whose bits are `bits` (only the low 48 count): a fixed
    /// one in tests, and the epoch the store kept from an earlier run
    /// (`store::recovery`), so that ids survive a restart.
    pub fn from_bits(bits: u64) -> Self {
        Epoch(bits & 0xFFFF_FFFF_FFFF)
    }

    /// The raw bits, as the store writes them.
    pub fn bits(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// A message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgId {
    /// The epoch it was issued in.
    pub epoch: Epoch,
    /// Its position in its channel.
    pub seq: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// A string that is not a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadId;

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message id must look like <12 hex digits>-<sequence number>")
    }
}

impl std::error::Error for BadId {}

impl std::str::FromStr for Epoch {
    type Err = BadId;

    /// Exactly 12 hex digits, as [`Epoch`] prints.
    fn from_str(s: &str) -> Result<Self, BadId> {
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadId);
        }
        Ok(Epoch(u64::from_str_radix(s, 16).map_err(|_| BadId)?))
    }
}

impl std::str::FromStr for MsgId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        let (epoch, seq) = s.split_once('-').ok_or(BadId)?;
        if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadId);
        }
        Ok(MsgId {
            epoch: epoch.parse()?,
            seq: seq.parse().map_err(|_| BadId)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = MsgId {
            epoch: Epoch::from_bits(0xabc),
            seq: 42,
        };
        assert_eq!(id.to_string(), "000000000abc-42");
        assert_eq!("000000000abc-42".parse::<MsgId>(), Ok(id));
        for bad in [
            "",
            "abc",
            "000000000abc-",
            "000000000abc-x",
            "00000000abc-1",
            "zzzzzzzzzzzz-1",
            "000000000abc--1",
            "000000000abc-99999999999999999999999",
        ] {
            assert_eq!(bad.parse::<MsgId>(), Err(BadId), "{bad:?}");
        }
        assert!(Epoch::random().bits() < 1 << 48);
    }
}
