//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across frames and reads at any byte, even in
//! the middle of a code point. The validator keeps the (at most three) bytes
//! of an unfinished code point between pieces and fails as soon as a
//! sequence can no longer become valid, not only at the end of the message
//! (RFC 6455 §8.1; Autobahn 6.4.x "fail fast").
//!
//! The bulk of each piece goes through `simdutf8`'s `compat` validator
//! (SIMD, chosen at run time; ~10× `std` on non-ASCII text), whose errors
//! carry the same information as `std::str::from_utf8`'s: `error_len()` tells
//! "invalid here" (`Some`) from "cut short" (`None`), and the second byte's
//! range is checked right after the lead byte, so `F4 90` is rejected
//! without waiting for the rest.

use simdutf8::compat::from_utf8;

/// Validates a byte stream as UTF-8, one piece at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The bytes seen so far cannot be the start of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of the stream.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let len = self.pending_len as usize;
            let need = sequence_len(self.pending[0]) - len;
            let take = need.min(piece.len());
            self.pending[len..len + take].copy_from_slice(&piece[..take]);
            let have = len + take;
            match from_utf8(&self.pending[..have]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    self.pending_len = have as u8;
                    return Ok(());
                }
            }
            piece = &piece[take..];
        }
        match from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Whether the stream so far ends on a code point boundary, i.e. may
    /// end here.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Checks that the stream ends on a code point boundary.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.is_complete() {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// The length of the sequence a lead byte starts. Only called on the first
/// byte of a pending tail, which `from_utf8` has already accepted as a lead.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<Result<(), InvalidUtf8>> {
        (0..=bytes.len())
            .flat_map(|a| (a..=bytes.len()).map(move |b| (a, b)))
            .map(|(a, b)| {
                let mut v = Utf8Validator::new();
                v.feed(&bytes[..a])?;
                v.feed(&bytes[a..b])?;
                v.feed(&bytes[b..])?;
                v.finish()
            })
            .collect()
    }

    #[test]
    fn valid_text_passes_at_every_split() {
        let text = "κόσμε 🎉 a\u{10FFFF}\u{7FF}\u{FFFF}";
        assert!(split_everywhere(text.as_bytes()).iter().all(Result::is_ok));
    }

    #[test]
    fn invalid_text_fails_at_every_split() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xff",
            b"abc\xe0\x80\xaf",
            b"\xf8\x88\x80\x80\x80",
        ] {
            assert!(
                split_everywhere(bad).iter().all(Result::is_err),
                "{bad:x?} accepted somewhere"
            );
        }
    }

    #[test]
    fn truncated_code_point_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok \xf0\x9f"), Ok(()));
        assert!(!v.is_complete());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert_eq!(v.feed(b"\x8e"), Ok(()));
        assert_eq!(v.feed(b"\x89"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn fails_fast_on_an_impossible_second_byte() {
        // F4 90 can never start a valid code point (> U+10FFFF): fail on the
        // 90, not at the end of the message.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8), "surrogate");
    }
}
