//! Channel names.
//!
//! A channel name is 1 to 128 bytes of `A–Z a–z 0–9 _ - . : @`. The set is
//! small on purpose: names appear in URL paths, SSE fields and JSON without
//! any escaping, and two spellings can never name the same channel.

use std::fmt;
use std::sync::Arc;

/// The longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 128;

/// A validated channel name; cheap to clone and to send between shards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadChannel {
    /// Empty.
    Empty,
    /// Longer than [`MAX_CHANNEL_LEN`].
    TooLong,
    /// A byte outside the allowed set.
    BadCharacter,
}

impl fmt::Display for BadChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadChannel::Empty => "channel name is empty",
            BadChannel::TooLong => "channel name longer than 128 bytes",
            BadChannel::BadCharacter => "channel name may only contain A-Z a-z 0-9 _ - . : @",
        })
    }
}

impl std::error::Error for BadChannel {}

impl ChannelName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<ChannelName, BadChannel> {
        validate(name)?;
        Ok(ChannelName(Arc::from(name)))
    }

    /// A channel named in a URL path segment: percent-decoded, then
    /// validated. The error is the reason to answer with.
    pub fn from_path(segment: &str) -> Result<ChannelName, String> {
        let name = codec::http::query::percent_decode(segment).map_err(|e| e.to_string())?;
        ChannelName::new(&name).map_err(|e| e.to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard that owns this channel: assigns its ids and keeps its
    /// history. FNV-1a, so every shard (and every run) agrees.
    pub fn owner(&self, shards: usize) -> usize {
        owner_of(self.as_str(), shards)
    }
}

/// The owner shard of a channel name (see [`ChannelName::owner`]).
pub fn owner_of(name: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// Checks a channel name against the rules in the module docs.
pub fn validate(name: &str) -> Result<(), BadChannel> {
    if name.is_empty() {
        return Err(BadChannel::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(BadChannel::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'))
    {
        return Err(BadChannel::BadCharacter);
    }
    Ok(())
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "chat:room-1",
            "user@example.com",
            "A_b.c",
            &"x".repeat(128),
        ] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(ChannelName::new(""), Err(BadChannel::Empty));
        assert_eq!(ChannelName::new(&"x".repeat(129)), Err(BadChannel::TooLong));
        for bad in ["a b", "a/b", "a%20", "é", "a\n", "a?b", "a#"] {
            assert_eq!(
                ChannelName::new(bad),
                Err(BadChannel::BadCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn owners_are_stable_and_spread() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner_of(&format!("ch{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(
            owner_of("news", 7),
            ChannelName::new("news").unwrap().owner(7)
        );
    }
}
