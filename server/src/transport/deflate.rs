//! permessage-deflate on this node (`--deflate`): what one WebSocket
//! agreed ([`Deflate`], one byte of its state) and the shard's compressors
//! and inflater ([`Deflater`]), shared by every connection of the shard.
//!
//! The node always answers `server_no_context_takeover` and
//! `client_no_context_takeover` (codec `ws::deflate::negotiate`), so no
//! connection keeps a compression context between messages:
//! * a broadcast is compressed once per message, shard and window, and the
//!   same frame goes to every subscriber that agreed on that window
//!   (`framing::Encodings`);
//! * an echo or a `/ws` answer is compressed with the shard's compressor
//!   for the connection's window, reset after each message;
//! * a compressed message a client sends is kept compressed while its
//!   frames arrive (bounded by `--max-message-size`, as any message) and
//!   inflated whole when its last frame is in, by the shard's one inflater,
//!   against `--max-message-size` (a deflate bomb closes with 1009).
//!
//! So an idle connection that negotiated the extension costs nothing more
//! than one that did not, and the compressors' memory is per shard (zlib
//! documents 256 KiB for a 15-bit window at its default memory level), not
//! per connection.
//!
//! A message is sent compressed only when it is at least
//! `--deflate-min-size` and its compressed frame is smaller; otherwise the
//! uncompressed frame goes (RSV1 clear), which RFC 7692 allows for any
//! message. History replays and catch-ups go uncompressed: compressing
//! them would cost one compression per reader and message rather than one
//! per message.

use std::num::NonZeroU8;
use std::sync::Arc;

use bytes::Bytes;
use codec::ws::deflate::{Agreed, Compressor, InflateError, Inflater, Policy};
use codec::ws::{encode, DataKind};

use crate::config::DeflateSettings;
use crate::metrics::ShardMetrics;

/// What the node asks of every connection that negotiates the extension.
pub const POLICY: Policy = Policy {
    server_max_window_bits: 15,
    client_context_takeover: false,
};

/// What a connection agreed: the window (9–15 bits) the server compresses
/// its messages with. `Option<Deflate>` is one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deflate {
    window_bits: NonZeroU8,
}

impl Deflate {
    /// The connection's side of an agreement (the node's policy makes
    /// every client compress each message on its own, so only the server's
    /// window is left to remember).
    pub fn from_agreed(agreed: &Agreed) -> Deflate {
        debug_assert!(agreed.client_no_context_takeover);
        let bits = agreed.server_max_window_bits.clamp(9, 15);
        Deflate {
            window_bits: NonZeroU8::new(bits).expect("9..=15"),
        }
    }

    /// The window the server compresses with, in bits.
    pub fn window_bits(self) -> u8 {
        self.window_bits.get()
    }

    /// The agreement in 4 bits (0: none), for states that pack it.
    pub fn pack(deflate: Option<Deflate>) -> u8 {
        deflate.map_or(0, |d| d.window_bits() - 8)
    }

    /// The agreement from [`Deflate::pack`]'s 4 bits.
    pub fn unpack(bits: u8) -> Option<Deflate> {
        let bits = bits & 0x0f;
        (bits != 0).then(|| Deflate {
            window_bits: NonZeroU8::new(bits + 8).expect("non-zero"),
        })
    }
}

/// The shard's compressors (one per window in use, made on first use) and
/// its inflater.
#[derive(Debug)]
pub struct Deflater {
    settings: DeflateSettings,
    /// Index `bits - 9`.
    compressors: [Option<Compressor>; 7],
    inflater: Option<Inflater>,
    /// The shard's counters (`ringcast_deflate_*`).
    metrics: Arc<ShardMetrics>,
}

impl Deflater {
    /// A deflater for `settings` (`None`: the node does not compress; its
    /// methods then never compress).
    pub fn new(settings: Option<DeflateSettings>, metrics: Arc<ShardMetrics>) -> Deflater {
        Deflater {
            settings: settings.unwrap_or(DeflateSettings {
                min_size: usize::MAX,
                level: 1,
            }),
            compressors: Default::default(),
            inflater: None,
            metrics,
        }
    }

    /// One message as a frame with RSV1 for a connection that agreed on
    /// `deflate`: `None` when it is smaller than `--deflate-min-size` or
    /// would not shrink (send it uncompressed).
    pub fn frame(&mut self, deflate: Deflate, kind: DataKind, payload: &[u8]) -> Option<Bytes> {
        if payload.len() < self.settings.min_size {
            return None;
        }
        let level = self.settings.level;
        let bits = deflate.window_bits();
        let compressor = self.compressors[usize::from(bits - 9)]
            .get_or_insert_with(|| Compressor::new(bits, level));
        let compressed = compressor.compress(payload);
        let m = &self.metrics;
        ShardMetrics::add(&m.deflate_messages, 1);
        // Frame headers grow with the length: compare whole frames.
        if encode::header_len(compressed.len()) + compressed.len()
            >= encode::header_len(payload.len()) + payload.len()
        {
            ShardMetrics::add(&m.deflate_not_smaller, 1);
            return None;
        }
        ShardMetrics::add(&m.deflate_bytes_in, payload.len() as u64);
        ShardMetrics::add(&m.deflate_bytes_out, compressed.len() as u64);
        Some(encode::compressed_message(kind, &compressed))
    }

    /// One message for a connection: compressed when `deflate` is agreed
    /// and it is worth it, otherwise as a plain frame.
    pub fn message(&mut self, deflate: Option<Deflate>, kind: DataKind, payload: &[u8]) -> Bytes {
        deflate
            .and_then(|d| self.frame(d, kind, payload))
            .unwrap_or_else(|| encode::message(kind, payload))
    }

    /// Inflates a whole compressed message from a client, at most `limit`
    /// bytes of it.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let inflater = self.inflater.get_or_insert_with(Inflater::new);
        let mut out = Vec::with_capacity((compressed.len() * 3).min(limit));
        let result = inflater.inflate(compressed, true, limit, &mut out);
        // No context takeover: every message starts afresh (and a failed
        // one must not poison the next connection's).
        inflater.reset();
        result?;
        ShardMetrics::add(&self.metrics.inflated_messages, 1);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::ws::deflate::{compress, negotiate};

    fn agreed(offer: &str) -> Deflate {
        let a = negotiate([offer.as_bytes()], POLICY).unwrap().unwrap();
        Deflate::from_agreed(&a)
    }

    #[test]
    fn an_agreement_packs_into_four_bits() {
        assert_eq!(Deflate::pack(None), 0);
        assert_eq!(Deflate::unpack(0), None);
        for offer in [
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=12",
        ] {
            let d = agreed(offer);
            assert!(Deflate::pack(Some(d)) < 16);
            assert_eq!(Deflate::unpack(Deflate::pack(Some(d))), Some(d));
        }
        assert_eq!(agreed("permessage-deflate").window_bits(), 15);
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=10").window_bits(),
            10
        );
        assert_eq!(std::mem::size_of::<Option<Deflate>>(), 1);
    }

    #[test]
    fn compresses_what_is_large_enough_and_shrinks() {
        let metrics = Arc::new(ShardMetrics::default());
        let mut d = Deflater::new(
            Some(DeflateSettings {
                min_size: 64,
                level: 1,
            }),
            metrics.clone(),
        );
        let w15 = agreed("permessage-deflate");
        let json = br#"{"type":"message","ch":"room","data":"hello, hello, hello, hello"}"#;
        let frame = d.frame(w15, DataKind::Text, json).unwrap();
        assert_eq!(frame[0], 0xc1, "FIN, RSV1, text");
        let body = &frame[2..];
        assert_eq!(usize::from(frame[1]), body.len());
        assert_eq!(body, compress(json, 15, 1));
        assert!(frame.len() < json.len());
        // Under the minimum, or not shrinking: sent as is.
        assert_eq!(d.frame(w15, DataKind::Text, &json[..63]), None);
        let random: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(d.frame(w15, DataKind::Binary, &random), None);
        assert_eq!(
            d.message(Some(w15), DataKind::Binary, &random),
            encode::message(DataKind::Binary, &random)
        );
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(count(&metrics.deflate_messages), 3);
        assert_eq!(count(&metrics.deflate_not_smaller), 2);
        assert_eq!(count(&metrics.deflate_bytes_in), json.len() as u64);
        assert_eq!(count(&metrics.deflate_bytes_out), body.len() as u64);
        // A node without --deflate never compresses.
        let mut off = Deflater::new(None, metrics.clone());
        assert_eq!(off.frame(w15, DataKind::Text, &json.repeat(100)), None);
    }

    #[test]
    fn inflates_whole_messages_within_the_limit() {
        let mut d = Deflater::new(None, Arc::default());
        let text = b"the quick brown fox ".repeat(50);
        let c = compress(&text, 15, 6);
        assert_eq!(d.inflate(&c, text.len()).unwrap(), text);
        assert_eq!(d.inflate(&c, text.len() - 1), Err(InflateError::TooBig));
        assert_eq!(d.inflate(b"\xff\xff\xff", 100), Err(InflateError::Corrupt));
        // Each message on its own: the inflater is reset after a failure too.
        assert_eq!(d.inflate(&c, text.len()).unwrap(), text);
    }
}
