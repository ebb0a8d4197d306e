//! permessage-deflate (RFC 7692): negotiation, and compressing and
//! inflating one message.
//!
//! # Negotiation
//! A client lists offers in `Sec-WebSocket-Extensions`, most preferred
//! first, each `permessage-deflate` with parameters. [`negotiate`] takes
//! the first offer the server can honour as it stands and answers it
//! ([`Agreed::write_header`]); an offer it cannot honour is declined,
//! never half-accepted, and the next one is tried. What the server asks of
//! every connection ([`Policy`]):
//! * `server_no_context_takeover`: each message the server sends is
//!   compressed on its own, so a broadcast is compressed **once** and the
//!   same bytes go to every subscriber that negotiated the same
//!   parameters;
//! * `client_no_context_takeover` (unless the policy allows context
//!   takeover): each message a client sends can be inflated on its own, so
//!   a connection holds no inflate state between messages.
//!
//! # One message
//! [`compress`] deflates a payload as a message of its own (raw DEFLATE,
//! a sync flush, the `00 00 ff ff` tail removed, RFC 7692 §7.2.1);
//! [`Inflater`] reverses it, bounded by a size limit so that a small
//! frame cannot expand into gigabytes (a deflate bomb fails with
//! [`InflateError::TooBig`], close code 1009). The compressor and the
//! decompressor are flate2's on the zlib-rs backend.

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's token.
pub const NAME: &str = "permessage-deflate";

/// The tail a sync flush ends with, removed from every compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a server asks of every connection that negotiates the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The largest window the server compresses with (9–15; zlib cannot
    /// compress within a 256-byte window, so offers limiting the server to
    /// 8 bits are declined).
    pub server_max_window_bits: u8,
    /// Let clients keep their compression context across messages (the
    /// server then keeps an inflater per connection). Off: the server
    /// answers `client_no_context_takeover`.
    pub client_context_takeover: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            server_max_window_bits: 15,
            client_context_takeover: false,
        }
    }
}

/// The parameters both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window the server compresses with.
    pub server_max_window_bits: u8,
    /// The window the client compresses with (15 when it said nothing).
    pub client_max_window_bits: u8,
    /// The client compresses each message on its own.
    pub client_no_context_takeover: bool,
    /// Echo the client's `client_max_window_bits` in the answer (it may
    /// only appear there when the client offered it).
    answer_client_window: bool,
}

impl Agreed {
    /// Writes the answer header line, `\r\n` included.
    pub fn write_header(&self, dst: &mut BytesMut) {
        dst.put_slice(b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover");
        if self.client_no_context_takeover {
            dst.put_slice(b"; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            dst.put_slice(b"; server_max_window_bits=");
            dst.put_slice(
                itoa::Buffer::new()
                    .format(self.server_max_window_bits)
                    .as_bytes(),
            );
        }
        if self.answer_client_window && self.client_max_window_bits < 15 {
            dst.put_slice(b"; client_max_window_bits=");
            dst.put_slice(
                itoa::Buffer::new()
                    .format(self.client_max_window_bits)
                    .as_bytes(),
            );
        }
        dst.put_slice(b"\r\n");
    }
}

/// A `Sec-WebSocket-Extensions` header that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedExtensions;

impl std::fmt::Display for MalformedExtensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed Sec-WebSocket-Extensions header")
    }
}

impl std::error::Error for MalformedExtensions {}

/// Picks the first `permessage-deflate` offer among `items` (the
/// comma-separated elements of `Sec-WebSocket-Extensions`) that `policy`
/// can honour. `Ok(None)`: no offer, or none acceptable — the connection
/// goes on uncompressed. Other extensions are ignored.
pub fn negotiate<'a>(
    items: impl IntoIterator<Item = &'a [u8]>,
    policy: Policy,
) -> Result<Option<Agreed>, MalformedExtensions> {
    let mut found = None;
    for item in items {
        let mut parts = item.split(|&b| b == b';').map(trim);
        let name = parts.next().unwrap_or_default();
        if !is_token(name) {
            return Err(MalformedExtensions);
        }
        if !name.eq_ignore_ascii_case(NAME.as_bytes()) {
            continue;
        }
        let mut offer = Offer::default();
        let mut valid = true;
        for param in parts {
            let (key, value) = match param.iter().position(|&b| b == b'=') {
                Some(i) => (trim(&param[..i]), Some(unquote(trim(&param[i + 1..]))?)),
                None => (param, None),
            };
            if !is_token(key) {
                return Err(MalformedExtensions);
            }
            valid &= offer.set(key, value);
        }
        if found.is_none() && valid {
            found = offer.accept(policy);
        }
    }
    Ok(found)
}

/// One offer's parameters; `None` where absent.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: Option<()>,
    client_no_context_takeover: Option<()>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
    server_max_window_bits: Option<u8>,
}

impl Offer {
    /// Records a parameter; `false` when the offer is invalid with it (an
    /// unknown name, a repeated one, a value where none belongs or a bad
    /// one), which declines the whole offer (RFC 7692 §5).
    fn set(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let key = key.to_ascii_lowercase();
        match (&key[..], value) {
            (b"server_no_context_takeover", None) => {
                self.server_no_context_takeover.replace(()).is_none()
            }
            (b"client_no_context_takeover", None) => {
                self.client_no_context_takeover.replace(()).is_none()
            }
            (b"server_max_window_bits", Some(v)) => match window_bits(v) {
                Some(bits) => self.server_max_window_bits.replace(bits).is_none(),
                None => false,
            },
            (b"client_max_window_bits", None) => {
                self.client_max_window_bits.replace(None).is_none()
            }
            (b"client_max_window_bits", Some(v)) => match window_bits(v) {
                Some(bits) => self.client_max_window_bits.replace(Some(bits)).is_none(),
                None => false,
            },
            _ => false,
        }
    }

    /// The agreement for this offer under `policy`, if it can be honoured.
    fn accept(&self, policy: Policy) -> Option<Agreed> {
        // The server may always compress with a smaller window than the
        // client allows; it cannot go below 9 bits.
        let server_bits = self
            .server_max_window_bits
            .map_or(policy.server_max_window_bits, |limit| {
                limit.min(policy.server_max_window_bits)
            });
        if server_bits < 9 {
            return None;
        }
        let client_bits = self.client_max_window_bits.flatten().unwrap_or(15);
        let client_no_context_takeover =
            self.client_no_context_takeover.is_some() || !policy.client_context_takeover;
        Some(Agreed {
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            client_no_context_takeover,
            answer_client_window: self.client_max_window_bits.is_some(),
        })
    }
}

/// A window size parameter: 8 to 15, no sign, no leading zero.
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// A parameter value: a token, or a quoted string holding one (RFC 7692
/// §7.1: a quoted value must be a token once unquoted).
fn unquote(v: &[u8]) -> Result<&[u8], MalformedExtensions> {
    let inner = match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    };
    if is_token(inner) {
        Ok(inner)
    } else {
        Err(MalformedExtensions)
    }
}

/// RFC 9110 token characters, at least one.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Compresses `payload` as a message of its own with a window of
/// `window_bits` (9–15): what goes in the frame (with RSV1 set), the sync
/// flush's tail removed. The same bytes suit every receiver that agreed on
/// a window at least as large. Sets a compressor up for one message; a
/// sender of many keeps a [`Compressor`].
pub fn compress(payload: &[u8], window_bits: u8, level: u32) -> Vec<u8> {
    Compressor::new(window_bits, level).compress(payload)
}

/// A compressor kept for many messages, each compressed on its own (no
/// context takeover): setting one up costs more than compressing a short
/// message (tens of kilobytes of tables to allocate and clear), so a
/// shard keeps one per window size and resets it after every message.
pub struct Compressor {
    deflate: Compress,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor with a window of `window_bits` (9–15) at `level`
    /// (0–9).
    pub fn new(window_bits: u8, level: u32) -> Compressor {
        Compressor {
            deflate: Compress::new_with_window_bits(
                Compression::new(level.min(9)),
                false,
                window_bits.clamp(9, 15),
            ),
        }
    }

    /// Compresses one message (see [`compress`]), then forgets it.
    pub fn compress(&mut self, payload: &[u8]) -> Vec<u8> {
        let deflate = &mut self.deflate;
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = deflate.total_in() as usize;
            deflate
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .expect("raw deflate into a vector cannot fail");
            // Done once every byte is in and the flush is complete (the
            // output ends with the flush's tail and had room to spare).
            if deflate.total_in() as usize == payload.len()
                && out.ends_with(&TAIL)
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        deflate.reset();
        out.truncate(out.len() - TAIL.len());
        out
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the size limit (close with 1009).
    TooBig,
    /// Not valid DEFLATE data (close with 1007).
    Corrupt,
}

/// Inflates the messages of one connection: with `client_no_context_takeover`
/// it is reset after each message, and holds nothing between them worth
/// keeping (drop it); otherwise it carries the client's window.
pub struct Inflater {
    inflate: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// An inflater for windows up to 32 KiB (every window a client may use).
    pub fn new() -> Inflater {
        Inflater {
            inflate: Decompress::new_with_window_bits(false, 15),
        }
    }

    /// Inflates one part of a message into `out`. `last`: the message's
    /// final part — the sync flush tail the sender removed is fed after
    /// it. Fails when `out` would grow past `limit` bytes in all.
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        last: bool,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.feed(compressed, limit, out)?;
        if last {
            self.feed(&TAIL, limit, out)?;
        }
        Ok(())
    }

    /// Forgets the context (after a message, without context takeover).
    pub fn reset(&mut self) {
        self.inflate.reset(false);
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        loop {
            // Room for one byte past the limit tells "exactly at it" from
            // "over it"; at most 64 KiB a step, so a bomb is caught after
            // one step's worth of output.
            let room = (limit + 1).saturating_sub(out.len()).min(64 * 1024);
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            out.reserve(room);
            let spare = out.capacity() - out.len();
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let produced = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let drained = input.is_empty() && produced < spare;
            if drained || status == Status::StreamEnd || (used == 0 && produced == 0) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agree(header: &str, policy: Policy) -> Result<Option<String>, MalformedExtensions> {
        let items = header
            .split(',')
            .map(|i| i.trim().as_bytes())
            .filter(|i| !i.is_empty());
        Ok(negotiate(items, policy)?.map(|a| {
            let mut b = BytesMut::new();
            a.write_header(&mut b);
            String::from_utf8(b.to_vec()).unwrap()
        }))
    }

    fn answer(params: &str) -> Option<String> {
        Some(format!(
            "Sec-WebSocket-Extensions: permessage-deflate{params}\r\n"
        ))
    }

    #[test]
    fn offers_are_answered_or_declined_never_half_accepted() {
        let p = Policy::default();
        let snct = "; server_no_context_takeover";
        let cnct = "; client_no_context_takeover";
        // What browsers send.
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits", p),
            Ok(answer(&format!("{snct}{cnct}")))
        );
        assert_eq!(
            agree("permessage-deflate", p),
            Ok(answer(&format!("{snct}{cnct}")))
        );
        // Windows: the server's never above what the client allows.
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=10", p),
            Ok(answer(&format!("{snct}{cnct}; server_max_window_bits=10")))
        );
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits=9", p),
            Ok(answer(&format!("{snct}{cnct}; client_max_window_bits=9")))
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=\"12\"", p),
            Ok(answer(&format!("{snct}{cnct}; server_max_window_bits=12")))
        );
        // A client that keeps its context is allowed to when the policy says so.
        let takeover = Policy {
            client_context_takeover: true,
            ..p
        };
        assert_eq!(agree("permessage-deflate", takeover), Ok(answer(snct)));
        assert_eq!(
            agree("permessage-deflate; client_no_context_takeover", takeover),
            Ok(answer(&format!("{snct}{cnct}")))
        );
        // Offers it cannot honour, or that are invalid, are declined; the
        // next one is taken.
        for declined in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_parameter",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(agree(declined, p), Ok(None), "{declined}");
            let then = format!("{declined}, permessage-deflate; server_max_window_bits=11");
            assert_eq!(
                agree(&then, p),
                Ok(answer(&format!("{snct}{cnct}; server_max_window_bits=11"))),
                "{then}"
            );
        }
        // Broken syntax fails the handshake.
        for bad in [
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate; =10",
            "perm{essage",
            "permessage-deflate; client_max_window_bits=\"",
        ] {
            assert_eq!(agree(bad, p), Err(MalformedExtensions), "{bad}");
        }
        let small = Policy {
            server_max_window_bits: 10,
            ..p
        };
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=12", small),
            Ok(answer(&format!("{snct}{cnct}; server_max_window_bits=10")))
        );
    }

    fn inflate_all(parts: &[&[u8]], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        for (n, part) in parts.iter().enumerate() {
            i.inflate(part, n + 1 == parts.len(), limit, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn compressed_messages_round_trip_and_shrink() {
        let json =
            br#"{"type":"message","ch":"room:1","data":"hello hello hello hello"}"#.repeat(20);
        for bits in 9..=15 {
            let c = compress(&json, bits, 6);
            assert!(
                c.len() < json.len() / 5,
                "{bits}: {} of {}",
                c.len(),
                json.len()
            );
            assert!(!c.ends_with(&TAIL));
            assert_eq!(inflate_all(&[&c], 1 << 20).unwrap(), json);
        }
        // The example of RFC 7692 §7.2.3.1: "Hello", no context.
        assert_eq!(
            compress(b"Hello", 15, 6),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(
            inflate_all(&[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]], 100).unwrap(),
            b"Hello"
        );
        // An empty message.
        assert_eq!(inflate_all(&[&compress(b"", 15, 6)], 10).unwrap(), b"");
        // A compressor kept for many messages compresses each on its own:
        // the same bytes as a fresh one.
        let mut kept = Compressor::new(15, 6);
        for m in [&json[..], b"Hello", b"", &json[..100]] {
            assert_eq!(kept.compress(m), compress(m, 15, 6));
        }
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = compress(&zeros, 15, 9);
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        assert_eq!(inflate_all(&[&bomb], 1 << 20), Err(InflateError::TooBig));
        // Exactly at the limit is fine.
        let exact = compress(&zeros[..1000], 15, 6);
        assert_eq!(inflate_all(&[&exact], 1000).unwrap().len(), 1000);
        assert_eq!(inflate_all(&[&exact], 999), Err(InflateError::TooBig));
        assert_eq!(
            inflate_all(&[b"\xff\xff\xff\xff"], 1000),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn context_takeover_carries_the_window_and_reset_drops_it() {
        // A client keeping its context: the second message refers back to
        // the first, and inflates only with the first's context.
        let mut deflate = Compress::new_with_window_bits(Compression::new(6), false, 15);
        let mut first = Vec::with_capacity(256);
        let mut second = Vec::with_capacity(256);
        let text = b"the same sentence, twice over";
        deflate
            .compress_vec(text, &mut first, FlushCompress::Sync)
            .unwrap();
        deflate
            .compress_vec(text, &mut second, FlushCompress::Sync)
            .unwrap();
        first.truncate(first.len() - 4);
        second.truncate(second.len() - 4);
        assert!(second.len() < first.len(), "a back reference");
        let mut i = Inflater::new();
        let mut out = Vec::new();
        i.inflate(&first, true, 1000, &mut out).unwrap();
        i.inflate(&second, true, 1000, &mut out).unwrap();
        assert_eq!(out, [&text[..], &text[..]].concat());
        let mut fresh = Inflater::new();
        let mut out = Vec::new();
        fresh.inflate(&first, true, 1000, &mut out).unwrap();
        fresh.reset();
        assert!(fresh.inflate(&second, true, 1000, &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn any_message_split_anywhere_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..4000),
            repeat in 1usize..4,
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            bits in 9u8..=15,
        ) {
            let payload = payload.repeat(repeat);
            let c = compress(&payload, bits, 6);
            let mut at: Vec<usize> = cuts.iter().map(|x| x % (c.len() + 1)).collect();
            at.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for cut in at {
                parts.push(&c[from..cut]);
                from = cut;
            }
            parts.push(&c[from..]);
            prop_assert_eq!(inflate_all(&parts, payload.len()).unwrap(), payload);
        }
    }
}
