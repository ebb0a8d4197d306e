//! Keys and values on disk: pure functions, no I/O.
//!
//! Four fjall keyspaces (the layout of issue 14's design, §5.1):
//!
//! | Keyspace | Key | Value |
//! |---|---|---|
//! | `msgs` | `name ‖ 0x00 ‖ seq:u64be` | `ver:u8=1 ‖ kind:u8 ‖ published_ms:u64be ‖ payload` |
//! | `chans` | `name` | `first_seq:u64be ‖ last_seq:u64be` |
//! | `cursors` | `len(sub):u16be ‖ sub ‖ len(dev):u8 ‖ dev ‖ name` | `seq:u64be ‖ epoch:u64be ‖ updated_ms:u64be` |
//! | `meta` | `format`, `epoch`, `floor`, `run` | see the functions below |
//!
//! Why these shapes:
//! * a channel name never contains `0x00` (its alphabet is
//!   `A–Z a–z 0–9 _ - . : @`, `hub::channel`), so `name ‖ 0x00` is a prefix
//!   no other channel's keys share, and since `0x00` sorts below every name
//!   byte, keys sort by (name, seq). Big-endian seqs sort numerically. "The
//!   newest N of a channel" is a reverse prefix scan, and a trim is a
//!   known range of seqs, written as point tombstones without reading;
//! * a message value starts with a version byte, so a later build can
//!   change the value and still read the old ones;
//! * a cursor key starts with its identity, so an identity's cursors are
//!   one prefix scan (export, delete a user); the lengths make the key
//!   unambiguous whatever bytes a `sub` holds. Its value keeps the epoch
//!   it was acked in and when, for inspection; the owner uses the seq;
//! * a channel row has no byte or message count (the design sketched
//!   both): keeping them exact would cost a read of every trimmed message,
//!   and the owner recounts what it loads anyway. `last − first + 1` is the
//!   count while seqs are contiguous, which the owner guarantees.
//!
//! A value that does not decode is [`Malformed`]; the caller names the
//! keyspace and key (`StoreError::Corrupt`).

use std::fmt;

use ::codec::ws::DataKind;

/// The store's own format, in `meta.format`. A build refuses a store with a
/// larger number rather than misread it.
pub const FORMAT: u32 = 1;

/// The version byte every message value starts with.
const MSG_VERSION: u8 = 1;

/// `meta` keys.
pub const META_FORMAT: &[u8] = b"format";
/// The node's epoch (48 bits, as `u64be`).
pub const META_EPOCH: &[u8] = b"epoch";
/// The highest seq ever stored on the node, any channel (`u64be`).
pub const META_FLOOR: &[u8] = b"floor";
/// How the last run ended ([`RunMarker`]).
pub const META_RUN: &[u8] = b"run";

/// Why bytes on disk are not what this build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

fn malformed(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

/// The prefix every key of channel `name` starts with: `name ‖ 0x00`.
pub fn msg_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// The key of message `seq` of channel `name`.
pub fn msg_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a message key into its channel name and seq.
pub fn parse_msg_key(key: &[u8]) -> Result<(&str, u64), Malformed> {
    if key.len() < 10 {
        return Err(malformed(format!(
            "a message key has at least 10 bytes, this one {}",
            key.len()
        )));
    }
    let (name, rest) = key.split_at(key.len() - 9);
    if rest[0] != 0 {
        return Err(malformed("no 0x00 between channel name and seq"));
    }
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| crate::hub::channel::validate(n).is_ok())
        .ok_or_else(|| malformed("the channel name in the key is not a valid name"))?;
    Ok((name, be_u64(&rest[1..])))
}

/// A message value, borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgValue<'a> {
    /// Text or binary.
    pub kind: DataKind,
    /// When it was published, Unix milliseconds.
    pub published_ms: u64,
    /// The payload as published.
    pub payload: &'a [u8],
}

/// The value of a message: `ver ‖ kind ‖ published_ms ‖ payload`.
pub fn msg_value(kind: DataKind, published_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + payload.len());
    v.push(MSG_VERSION);
    v.push(match kind {
        DataKind::Text => 0,
        DataKind::Binary => 1,
    });
    v.extend_from_slice(&published_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Decodes [`msg_value`]'s output.
pub fn parse_msg_value(v: &[u8]) -> Result<MsgValue<'_>, Malformed> {
    if v.len() < 10 {
        return Err(malformed(format!(
            "a message value has at least 10 bytes, this one {}",
            v.len()
        )));
    }
    if v[0] != MSG_VERSION {
        return Err(malformed(format!(
            "message value version {} (this build writes {MSG_VERSION})",
            v[0]
        )));
    }
    let kind = match v[1] {
        0 => DataKind::Text,
        1 => DataKind::Binary,
        k => return Err(malformed(format!("message kind {k} (0 text, 1 binary)"))),
    };
    Ok(MsgValue {
        kind,
        published_ms: be_u64(&v[2..10]),
        payload: &v[10..],
    })
}

/// A channel's row in `chans`: the seqs it holds on disk are
/// `first_seq..=last_seq`. Empty when `first_seq > last_seq` (everything
/// trimmed); the row stays so that a trim knows where to start and the
/// channel continues after `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChanRow {
    /// The oldest seq still stored.
    pub first_seq: u64,
    /// The newest seq stored.
    pub last_seq: u64,
}

impl ChanRow {
    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.first_seq > self.last_seq
    }
}

/// A channel row's value.
pub fn chan_value(row: ChanRow) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&row.first_seq.to_be_bytes());
    v[8..].copy_from_slice(&row.last_seq.to_be_bytes());
    v
}

/// Decodes [`chan_value`]'s output.
pub fn parse_chan_value(v: &[u8]) -> Result<ChanRow, Malformed> {
    if v.len() != 16 {
        return Err(malformed(format!(
            "a channel row has 16 bytes, this one {}",
            v.len()
        )));
    }
    Ok(ChanRow {
        first_seq: be_u64(&v[..8]),
        last_seq: be_u64(&v[8..]),
    })
}

/// The longest `sub` a cursor key holds (its length is a `u16`; the
/// transports refuse longer identities for durable use).
pub const MAX_SUB: usize = u16::MAX as usize;

/// The longest device name (its length is a `u8`; the transports allow 64).
pub const MAX_DEVICE: usize = u8::MAX as usize;

/// The key of `sub`'s cursor for `device` on channel `name`. `sub` must be
/// at most [`MAX_SUB`] and `device` at most [`MAX_DEVICE`] bytes (longer
/// ones are cut, which the transports never let happen).
pub fn cursor_key(sub: &str, device: &str, name: &str) -> Vec<u8> {
    let sub = &sub.as_bytes()[..sub.len().min(MAX_SUB)];
    let device = &device.as_bytes()[..device.len().min(MAX_DEVICE)];
    let mut k = Vec::with_capacity(3 + sub.len() + device.len() + name.len());
    k.extend_from_slice(&(sub.len() as u16).to_be_bytes());
    k.extend_from_slice(sub);
    k.push(device.len() as u8);
    k.extend_from_slice(device);
    k.extend_from_slice(name.as_bytes());
    k
}

/// A cursor key's parts, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorKey<'a> {
    /// The identity.
    pub sub: &'a str,
    /// The device (`""`: none).
    pub device: &'a str,
    /// The channel.
    pub channel: &'a str,
}

/// Splits [`cursor_key`]'s output.
pub fn parse_cursor_key(key: &[u8]) -> Result<CursorKey<'_>, Malformed> {
    let short = || malformed(format!("a cursor key of {} bytes is cut short", key.len()));
    let sub_len = usize::from(u16::from_be_bytes([
        *key.first().ok_or_else(short)?,
        *key.get(1).ok_or_else(short)?,
    ]));
    let sub = key.get(2..2 + sub_len).ok_or_else(short)?;
    let dev_len = usize::from(*key.get(2 + sub_len).ok_or_else(short)?);
    let start = 3 + sub_len;
    let device = key.get(start..start + dev_len).ok_or_else(short)?;
    let name = &key[start + dev_len..];
    let text = |b, what: &str| {
        std::str::from_utf8(b)
            .map_err(|_| malformed(format!("the {what} in a cursor key is not UTF-8")))
    };
    let channel = std::str::from_utf8(name)
        .ok()
        .filter(|n| crate::hub::channel::validate(n).is_ok())
        .ok_or_else(|| malformed("the channel name in a cursor key is not a valid name"))?;
    Ok(CursorKey {
        sub: text(sub, "sub")?,
        device: text(device, "device")?,
        channel,
    })
}

/// A cursor's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorValue {
    /// The last seq acknowledged.
    pub seq: u64,
    /// The epoch it was acknowledged in (48 bits).
    pub epoch: u64,
    /// When, Unix milliseconds.
    pub updated_ms: u64,
}

/// `seq ‖ epoch ‖ updated_ms`, each `u64be`.
pub fn cursor_value(v: CursorValue) -> [u8; 24] {
    let mut b = [0; 24];
    b[..8].copy_from_slice(&v.seq.to_be_bytes());
    b[8..16].copy_from_slice(&v.epoch.to_be_bytes());
    b[16..].copy_from_slice(&v.updated_ms.to_be_bytes());
    b
}

/// Decodes [`cursor_value`]'s output.
pub fn parse_cursor_value(v: &[u8]) -> Result<CursorValue, Malformed> {
    if v.len() != 24 {
        return Err(malformed(format!(
            "a cursor value has 24 bytes, this one {}",
            v.len()
        )));
    }
    Ok(CursorValue {
        seq: be_u64(&v[..8]),
        epoch: be_u64(&v[8..16]),
        updated_ms: be_u64(&v[16..]),
    })
}

/// Which fsync policy a run used, as the run marker stores it (the
/// interval's length does not matter to the epoch rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncKind {
    /// Every commit fsynced before it is reported.
    Always,
    /// Commits written to the OS, fsynced every interval.
    Interval,
    /// Never fsynced by us.
    Never,
}

impl fmt::Display for FsyncKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncKind::Always => "always",
            FsyncKind::Interval => "interval",
            FsyncKind::Never => "never",
        })
    }
}

/// The kernel's id of the current boot (`/proc/sys/kernel/random/boot_id`),
/// or [`BootId::UNKNOWN`] (all zeros) where it cannot be read. A run at
/// `--fsync interval` that ended uncleanly lost nothing if the machine did
/// not reboot meanwhile (the kernel still had every `write`); an unknown
/// boot id on either side counts as a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// Not known.
    pub const UNKNOWN: BootId = BootId([0; 16]);

    /// Parses the kernel's text form, a UUID (`8-4-4-4-12` hex digits).
    pub fn parse(text: &str) -> Option<BootId> {
        let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            id[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(BootId(id))
    }

    /// Whether it is the same known boot as `other`.
    pub fn same_boot(self, other: BootId) -> bool {
        self != BootId::UNKNOWN && self == other
    }
}

/// `meta.run`: how the last run ended. Written with `clean = false` (and
/// fsynced) before the store is used, and with `clean = true` as the last
/// write of a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMarker {
    /// The run shut down gracefully: everything it reported is on disk.
    pub clean: bool,
    /// Its fsync policy.
    pub policy: FsyncKind,
    /// The boot it ran in.
    pub boot: BootId,
}

/// `clean:u8 ‖ policy:u8 ‖ boot_id:[u8;16]`.
pub fn run_value(m: RunMarker) -> [u8; 18] {
    let mut v = [0; 18];
    v[0] = u8::from(m.clean);
    v[1] = match m.policy {
        FsyncKind::Always => 0,
        FsyncKind::Interval => 1,
        FsyncKind::Never => 2,
    };
    v[2..].copy_from_slice(&m.boot.0);
    v
}

/// Decodes [`run_value`]'s output.
pub fn parse_run_value(v: &[u8]) -> Result<RunMarker, Malformed> {
    if v.len() != 18 {
        return Err(malformed(format!(
            "the run marker has 18 bytes, this one {}",
            v.len()
        )));
    }
    let clean = match v[0] {
        0 => false,
        1 => true,
        c => return Err(malformed(format!("run marker clean flag {c} (0 or 1)"))),
    };
    let policy = match v[1] {
        0 => FsyncKind::Always,
        1 => FsyncKind::Interval,
        2 => FsyncKind::Never,
        p => return Err(malformed(format!("run marker policy {p} (0, 1 or 2)"))),
    };
    let mut boot = [0; 16];
    boot.copy_from_slice(&v[2..]);
    Ok(RunMarker {
        clean,
        policy,
        boot: BootId(boot),
    })
}

/// A `u64be` value (`meta.epoch`, `meta.floor`).
pub fn parse_u64(v: &[u8]) -> Result<u64, Malformed> {
    if v.len() != 8 {
        return Err(malformed(format!("expected 8 bytes, found {}", v.len())));
    }
    Ok(be_u64(v))
}

/// The `u32be` of `meta.format`.
pub fn parse_u32(v: &[u8]) -> Result<u32, Malformed> {
    let b: [u8; 4] = v
        .try_into()
        .map_err(|_| malformed(format!("expected 4 bytes, found {}", v.len())))?;
    Ok(u32::from_be_bytes(b))
}

/// Eight bytes, big-endian. Callers have checked the length.
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A key as readable text for error messages: printable ASCII as is,
/// everything else as `\xNN`.
pub fn show_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Channel names from the whole alphabet, 1 to 128 bytes.
    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:@-]{1,128}"
    }

    proptest! {
        #[test]
        fn message_keys_round_trip(n in name(), seq in any::<u64>()) {
            let k = msg_key(&n, seq);
            prop_assert_eq!(parse_msg_key(&k), Ok((n.as_str(), seq)));
            prop_assert!(k.starts_with(&msg_prefix(&n)));
        }

        /// Byte order of keys is (name, seq) order, and a channel's prefix
        /// matches only its own keys: what "newest N" scans and trims rely on.
        #[test]
        fn message_keys_sort_by_name_then_seq(
            a in name(), b in name(), s in any::<u64>(), t in any::<u64>()
        ) {
            let (ka, kb) = (msg_key(&a, s), msg_key(&b, t));
            prop_assert_eq!(ka.cmp(&kb), (a.as_bytes(), s).cmp(&(b.as_bytes(), t)));
            prop_assert_eq!(kb.starts_with(&msg_prefix(&a)), a == b);
        }

        #[test]
        fn message_values_round_trip(
            binary in any::<bool>(),
            ms in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let kind = if binary { DataKind::Binary } else { DataKind::Text };
            let v = msg_value(kind, ms, &payload);
            prop_assert_eq!(
                parse_msg_value(&v),
                Ok(MsgValue { kind, published_ms: ms, payload: &payload })
            );
        }

        #[test]
        fn rows_and_markers_round_trip(
            first in any::<u64>(), last in any::<u64>(),
            clean in any::<bool>(), p in 0u8..3, boot in any::<[u8; 16]>(),
        ) {
            let row = ChanRow { first_seq: first, last_seq: last };
            prop_assert_eq!(parse_chan_value(&chan_value(row)), Ok(row));
            let policy = [FsyncKind::Always, FsyncKind::Interval, FsyncKind::Never][p as usize];
            let m = RunMarker { clean, policy, boot: BootId(boot) };
            prop_assert_eq!(parse_run_value(&run_value(m)), Ok(m));
        }

        #[test]
        fn cursor_keys_and_values_round_trip(
            sub in "\\PC{1,40}", device in "[A-Za-z0-9_.-]{0,64}", n in name(),
            seq in any::<u64>(), epoch in any::<u64>(), ms in any::<u64>(),
        ) {
            let k = cursor_key(&sub, &device, &n);
            prop_assert_eq!(
                parse_cursor_key(&k),
                Ok(CursorKey { sub: &sub, device: &device, channel: &n })
            );
            let v = CursorValue { seq, epoch, updated_ms: ms };
            prop_assert_eq!(parse_cursor_value(&cursor_value(v)), Ok(v));
        }

        /// An identity's cursors share a prefix no other identity's keys
        /// have (one scan per user), and distinct cursors never share a key.
        #[test]
        fn cursor_keys_are_unambiguous(
            a in "[a-z\\x00]{1,8}", b in "[a-z\\x00]{1,8}",
            da in "[a-z]{0,3}", db in "[a-z]{0,3}", na in name(), nb in name(),
        ) {
            let (ka, kb) = (cursor_key(&a, &da, &na), cursor_key(&b, &db, &nb));
            prop_assert_eq!(ka == kb, (&a, &da, &na) == (&b, &db, &nb));
            let prefix = &ka[..2 + a.len()];
            prop_assert_eq!(kb.starts_with(prefix), a == b);
        }

        /// Arbitrary bytes never panic a decoder.
        #[test]
        fn decoders_take_any_bytes(v in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_cursor_key(&v);
            let _ = parse_cursor_value(&v);
            let _ = parse_msg_key(&v);
            let _ = parse_msg_value(&v);
            let _ = parse_chan_value(&v);
            let _ = parse_run_value(&v);
            let _ = parse_u64(&v);
            let _ = parse_u32(&v);
        }
    }

    #[test]
    fn malformed_bytes_say_what_is_wrong() {
        let why = |r: Result<MsgValue<'_>, Malformed>| r.unwrap_err().0;
        assert!(why(parse_msg_value(b"\x01\x00")).contains("at least 10 bytes"));
        assert!(why(parse_msg_value(b"\x02\x00\0\0\0\0\0\0\0\0")).contains("version 2"));
        assert!(why(parse_msg_value(b"\x01\x07\0\0\0\0\0\0\0\0")).contains("kind 7"));
        let mut k = msg_key("room", 3);
        k[4] = b'x';
        assert!(parse_msg_key(&k).unwrap_err().0.contains("0x00"));
        assert!(parse_msg_key(&msg_key("a b", 1))
            .unwrap_err()
            .0
            .contains("not a valid name"));
        assert!(parse_run_value(&[2; 18])
            .unwrap_err()
            .0
            .contains("clean flag 2"));
        assert!(parse_chan_value(b"short")
            .unwrap_err()
            .0
            .contains("16 bytes"));
        assert_eq!(
            show_key(&msg_key("a", 258)),
            "a\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x02"
        );
    }

    #[test]
    fn boot_ids_parse_the_kernels_form() {
        let id = BootId::parse("0f9b6d3e-2c4a-4b8e-9d1f-8a7b6c5d4e3f\n").unwrap();
        assert_eq!(id.0[0], 0x0f);
        assert_eq!(id.0[15], 0x3f);
        assert!(id.same_boot(id));
        assert!(!BootId::UNKNOWN.same_boot(BootId::UNKNOWN));
        assert_eq!(BootId::parse("0f9b6d3e"), None);
        assert_eq!(BootId::parse("zz9b6d3e-2c4a-4b8e-9d1f-8a7b6c5d4e3f"), None);
    }
}
