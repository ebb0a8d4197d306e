//! What a published message carries around its marker (`--payload`).
//!
//! * `pad` (the default): the marker padded with `x` to `--size` bytes.
//!   The least work for publisher and server, but one repeated byte, which
//!   any compressor shrinks to almost nothing.
//! * `chat`: a JSON chat message — user, time, a line of words — of 200 to
//!   2,000 bytes, uniformly spread, so that permessage-deflate is measured
//!   on text that compresses like chat does, not like padding. The marker
//!   sits in a field of its own (`"ref"`). Message `seq` is the same
//!   message in every run with the same `--payload-seed`, apart from its
//!   marker, so runs with and without compression compare.
//!
//! Both are text (UTF-8) and published as `text/plain`.

use crate::marker::Marker;

/// The kinds of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// The marker padded with `x` to `--size` bytes.
    Pad,
    /// JSON chat messages of 200–2,000 bytes.
    Chat,
}

/// Smallest chat message, in bytes.
pub const CHAT_MIN: usize = 200;
/// Largest chat message, in bytes.
pub const CHAT_MAX: usize = 2_000;

impl Payload {
    /// For the summary: what the messages were.
    pub fn describe(self, size: usize) -> String {
        match self {
            Payload::Pad => format!("{size}-byte padded payloads"),
            Payload::Chat => format!("JSON chat payloads of {CHAT_MIN}–{CHAT_MAX} bytes"),
        }
    }

    /// Appends the body of the message `marker` marks: `size` bytes for
    /// `pad`; for `chat`, a message chosen by `seed` and the marker's
    /// sequence number.
    pub fn encode(self, marker: &Marker, size: usize, seed: u64, out: &mut Vec<u8>) {
        match self {
            Payload::Pad => marker.encode(size, out),
            Payload::Chat => chat(marker, seed, out),
        }
    }
}

/// Chat words, the most frequent first ([`chat`] picks early ones more
/// often, as people do). ASCII apart from a few words, none needing a JSON
/// escape.
const WORDS: &[&str] = &[
    "the",
    "I",
    "you",
    "to",
    "a",
    "and",
    "it",
    "is",
    "that",
    "of",
    "in",
    "we",
    "for",
    "this",
    "on",
    "have",
    "just",
    "so",
    "be",
    "but",
    "not",
    "are",
    "with",
    "was",
    "what",
    "can",
    "do",
    "lol",
    "ok",
    "yes",
    "no",
    "if",
    "at",
    "my",
    "me",
    "they",
    "all",
    "about",
    "like",
    "get",
    "will",
    "one",
    "there",
    "know",
    "think",
    "now",
    "going",
    "out",
    "up",
    "when",
    "time",
    "good",
    "how",
    "see",
    "yeah",
    "really",
    "thanks",
    "today",
    "would",
    "could",
    "people",
    "still",
    "some",
    "more",
    "been",
    "right",
    "why",
    "because",
    "tomorrow",
    "meeting",
    "deploy",
    "server",
    "build",
    "release",
    "coffee",
    "later",
    "maybe",
    "sure",
    "sounds",
    "great",
    "morning",
    "tonight",
    "weekend",
    "problem",
    "issue",
    "fixed",
    "broken",
    "again",
    "working",
    "check",
    "link",
    "posted",
    "channel",
    "everyone",
    "anyone",
    "somebody",
    "question",
    "answer",
    "review",
    "merge",
    "branch",
    "test",
    "passed",
    "failed",
    "latency",
    "graph",
    "numbers",
    "looks",
    "better",
    "worse",
    "fine",
    "agree",
    "disagree",
    "idea",
    "plan",
    "lunch",
    "call",
    "minutes",
    "hours",
    "yesterday",
    "next",
    "week",
    "month",
    "ticket",
    "customer",
    "support",
    "dashboard",
    "alert",
    "pager",
    "incident",
    "rollback",
    "config",
    "cache",
    "memory",
    "disk",
    "network",
    "connection",
    "timeout",
    "retry",
    "queue",
    "backlog",
    "sprint",
    "demo",
    "slides",
    "notes",
    "docs",
    "write",
    "read",
    "send",
    "share",
    "screen",
    "mute",
    "unmute",
    "brb",
    "afk",
    "omg",
    "haha",
    "nice",
    "cool",
    "awesome",
    "weird",
    "interesting",
    "honestly",
    "probably",
    "definitely",
    "absolutely",
    "basically",
    "actually",
    "anyway",
    "though",
    "already",
    "almost",
    "exactly",
    "enough",
    "everything",
    "nothing",
    "something",
    "café",
    "naïve",
    "über",
    "👍",
    "🎉",
    "😂",
    "🙏",
    "🚀",
    "déjà",
    "vu",
];

/// Names of chat users (each gets a number too).
const USERS: &[&str] = &[
    "maria", "wei", "amara", "lars", "priya", "tomás", "yuki", "olu", "sofia", "ivan", "fatima",
    "noah", "aiko", "kwame", "elena", "raj", "chloe", "mateo", "hana", "omar", "ingrid", "diego",
    "leila", "sam",
];

/// What closes a line whose next word would overrun its size: ASCII, so
/// any prefix of it is whole characters.
const FILL: &[u8] = b" see you all later, bye for now and take care";

/// splitmix64: deterministic, seeded per message, fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Appends a chat message of 200..=2,000 bytes, chosen by `seed` and the
/// marker's sequence number: `{"type":"chat","user":…,"ts":…,"ref":"<marker>","text":"…"}`.
pub fn chat(marker: &Marker, seed: u64, out: &mut Vec<u8>) {
    let mut rng = Rng(seed ^ marker.seq.wrapping_mul(0xd605_bbb5_8c8a_bd6b));
    let size = CHAT_MIN + rng.below(CHAT_MAX - CHAT_MIN + 1);
    let start = out.len();
    let user = USERS[rng.below(USERS.len())];
    let number = 1 + rng.below(999);
    // A plausible wall-clock time in milliseconds, steady with the sequence.
    let ts = 1_750_000_000_000u64 + marker.seq * 731 + rng.below(500) as u64;
    out.extend_from_slice(
        format!(r#"{{"type":"chat","user":"{user}_{number}","ts":{ts},"ref":""#).as_bytes(),
    );
    marker.encode(0, out);
    out.extend_from_slice(br#"","text":""#);
    // What is left for the text once `"}` closes the message.
    let mut left = (start + size).saturating_sub(out.len() + 2);
    let mut first = true;
    loop {
        // Skewed towards the frequent words: the smaller of two picks.
        let word = WORDS[rng.below(WORDS.len()).min(rng.below(WORDS.len()))];
        let need = word.len() + usize::from(!first);
        if need > left {
            break;
        }
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(word.as_bytes());
        left -= need;
        first = false;
        if left > 0 && rng.below(8) == 0 {
            out.push(b".,!?"[rng.below(4)]);
            left -= 1;
        }
    }
    out.extend(FILL.iter().cycle().take(left));
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(seq: u64) -> Marker {
        Marker {
            run: 77,
            seq,
            nanos: 123_456_789_012,
        }
    }

    fn message(seed: u64, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Payload::Chat.encode(&marker(seq), 64, seed, &mut out);
        out
    }

    #[test]
    fn chat_messages_are_json_of_200_to_2000_bytes_carrying_their_marker() {
        let mut total = 0;
        let (mut small, mut large) = (0, 0);
        for seq in 0..2000 {
            let m = message(1, seq);
            assert!((CHAT_MIN..=CHAT_MAX).contains(&m.len()), "{}", m.len());
            total += m.len();
            small += usize::from(m.len() < 650);
            large += usize::from(m.len() > 1550);
            assert_eq!(Marker::find(&m), Some(marker(seq)));
            let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
            assert_eq!(v["type"], "chat");
            assert!(v["ref"].as_str().unwrap().starts_with("rcl1:77:"));
            assert!(v["text"].as_str().unwrap().len() > 40);
        }
        // Uniform over 200..=2000: mean 1,100, a quarter in each end's 450 bytes.
        let mean = total as f64 / 2000.0;
        assert!((mean - 1100.0).abs() < 40.0, "{mean}");
        assert!((400..600).contains(&small) && (400..600).contains(&large));
        // The smallest and largest sizes are reachable exactly.
        assert!((0..20_000).any(|s| message(1, s).len() == CHAT_MIN));
        assert!((0..20_000).any(|s| message(1, s).len() == CHAT_MAX));
    }

    #[test]
    fn the_same_seed_makes_the_same_messages() {
        assert_eq!(message(1, 42), message(1, 42));
        assert_ne!(message(1, 42), message(2, 42));
        assert_ne!(message(1, 42), message(1, 43));
        // After what is already in the buffer (the publisher reuses one).
        let mut out = b"prefix".to_vec();
        chat(&marker(42), 1, &mut out);
        assert_eq!(&out[6..], message(1, 42));
        // `pad` is the marker padded to --size.
        let mut pad = Vec::new();
        Payload::Pad.encode(&marker(1), 64, 1, &mut pad);
        assert_eq!(pad.len(), 64);
        assert!(pad.ends_with(b"xxx"));
    }

    /// Chat must compress like text — a few times, not the hundredfold of
    /// padding, nor not at all.
    #[test]
    fn chat_compresses_like_text() {
        use codec::ws::deflate::compress;
        let (mut raw, mut packed) = (0, 0);
        for seq in 0..200 {
            let m = message(7, seq);
            raw += m.len();
            packed += compress(&m, 15, 6).len();
        }
        let ratio = raw as f64 / packed as f64;
        assert!((1.5..4.0).contains(&ratio), "{ratio}");
        let mut pad = Vec::new();
        Payload::Pad.encode(&marker(1), 1100, 1, &mut pad);
        assert!(pad.len() / compress(&pad, 15, 6).len() > 20);
    }
}
