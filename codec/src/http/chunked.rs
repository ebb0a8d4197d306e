//! `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! A byte-at-a-time state machine with fixed-size state: feed it whatever has
//! arrived, take the data slices it hands back (they borrow the input), and
//! stop at [`ChunkedEvent::End`]. Line endings must be CRLF; chunk
//! extensions are skipped but bounded, trailer fields are skipped but
//! bounded, so a peer cannot make the decoder buffer or loop without limit.

use super::query::hex_value;

/// The longest chunk-size line (size, extensions) accepted.
const MAX_SIZE_LINE: u16 = 1024;
/// The most trailer bytes accepted after the last chunk.
const MAX_TRAILER: u16 = 8 * 1024;

/// What a call to [`ChunkedDecoder::decode`] produced besides consuming bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedEvent<'a> {
    /// A piece of the body.
    Data(&'a [u8]),
    /// The body is complete; bytes after it belong to the next request.
    End,
}

/// A malformed chunked body. All of them deserve a `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size that is not hexadecimal.
    BadChunkSize,
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk-size line longer than 1 KiB (extensions included).
    SizeLineTooLong,
    /// A CRLF was expected.
    ExpectedCrlf,
    /// More than 8 KiB of trailer fields.
    TrailerTooLarge,
}

impl ChunkedError {
    /// What was wrong, for the `400` body and the log.
    pub fn reason(self) -> &'static str {
        match self {
            ChunkedError::BadChunkSize => "chunked body: chunk size is not hexadecimal",
            ChunkedError::ChunkSizeOverflow => "chunked body: chunk size too large",
            ChunkedError::SizeLineTooLong => "chunked body: chunk-size line too long",
            ChunkedError::ExpectedCrlf => "chunked body: expected CRLF",
            ChunkedError::TrailerTooLarge => "chunked body: trailer section too large",
        }
    }
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading the hex digits of a chunk size; `digits` seen so far.
    #[default]
    SizeStart,
    Size,
    /// Skipping chunk extensions up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Decodes one chunked body. Create a new one (or [`reset`](Self::reset))
/// for each request.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read, then the bytes of the chunk still to come.
    remaining: u64,
    /// Bytes of the current size line or of the trailer section so far.
    line: u16,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Back to the start of a body.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Whether [`ChunkedEvent::End`] has been returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input`. Returns how many were used and, if one
    /// was reached, an event: a piece of body data, or the end of the body.
    /// When no event is returned, all of `input` was used and more is needed.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<ChunkedEvent<'a>>), ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok((i + n, Some(ChunkedEvent::Data(&input[i..i + n]))));
            }
            if self.state == State::Done {
                return Ok((i, Some(ChunkedEvent::End)));
            }
            self.step(input[i])?;
            i += 1;
            if self.state == State::Done {
                return Ok((i, Some(ChunkedEvent::End)));
            }
        }
        Ok((i, None))
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::SizeStart | State::Size => {
                self.count_line(MAX_SIZE_LINE, ChunkedError::SizeLineTooLong)?;
                match (hex_value(b), self.state) {
                    (Some(d), _) => {
                        self.remaining = self
                            .remaining
                            .checked_mul(16)
                            .and_then(|n| n.checked_add(u64::from(d)))
                            .ok_or(ChunkedError::ChunkSizeOverflow)?;
                        self.state = State::Size;
                    }
                    (None, State::SizeStart) => return Err(ChunkedError::BadChunkSize),
                    (None, _) if b == b';' || b == b' ' || b == b'\t' => {
                        self.state = State::Extension
                    }
                    (None, _) if b == b'\r' => self.state = State::SizeLf,
                    (None, _) => return Err(ChunkedError::BadChunkSize),
                }
            }
            State::Extension => {
                self.count_line(MAX_SIZE_LINE, ChunkedError::SizeLineTooLong)?;
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(ChunkedError::ExpectedCrlf),
                    _ => {}
                }
            }
            State::SizeLf => {
                expect(b, b'\n')?;
                self.line = 0;
                self.state = if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                expect(b, b'\r')?;
                self.state = State::DataLf;
            }
            State::DataLf => {
                expect(b, b'\n')?;
                self.state = State::SizeStart;
            }
            State::TrailerStart => {
                self.count_line(MAX_TRAILER, ChunkedError::TrailerTooLarge)?;
                self.state = match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkedError::ExpectedCrlf),
                    _ => State::Trailer,
                };
            }
            State::Trailer => {
                self.count_line(MAX_TRAILER, ChunkedError::TrailerTooLarge)?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(ChunkedError::ExpectedCrlf),
                    _ => {}
                }
            }
            State::TrailerLf => {
                expect(b, b'\n')?;
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                expect(b, b'\n')?;
                self.state = State::Done;
            }
            State::Data | State::Done => unreachable!("handled by decode"),
        }
        Ok(())
    }

    fn count_line(&mut self, max: u16, err: ChunkedError) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > max {
            return Err(err);
        }
        Ok(())
    }
}

fn expect(b: u8, want: u8) -> Result<(), ChunkedError> {
    if b == want {
        Ok(())
    } else {
        Err(ChunkedError::ExpectedCrlf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the body and the
    /// bytes left after its end.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + step).min(input.len());
            let mut piece = &input[offset..end];
            while !piece.is_empty() {
                let (used, event) = dec.decode(piece)?;
                piece = &piece[used..];
                offset += used;
                match event {
                    Some(ChunkedEvent::Data(d)) => body.extend_from_slice(d),
                    Some(ChunkedEvent::End) => return Ok((body, input.len() - offset)),
                    None => assert!(piece.is_empty()),
                }
            }
        }
        panic!("body did not end");
    }

    #[test]
    fn decodes_at_every_step_size() {
        let input = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, left) = run(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(left, 4, "step {step}");
        }
    }

    #[test]
    fn empty_body() {
        assert_eq!(run(b"0\r\n\r\n", 1).unwrap(), (vec![], 0));
        assert_eq!(run(b"000\r\n\r\n", 100).unwrap(), (vec![], 0));
    }

    #[test]
    fn rejects_malformed_bodies() {
        assert_eq!(run(b"x\r\n", 10), Err(ChunkedError::BadChunkSize));
        assert_eq!(run(b"\r\n", 10), Err(ChunkedError::BadChunkSize));
        assert_eq!(run(b"5\nhello", 10), Err(ChunkedError::BadChunkSize));
        assert_eq!(run(b"5\r\nhelloX\r\n", 10), Err(ChunkedError::ExpectedCrlf));
        assert_eq!(
            run(b"1\r\na\r\n0\r\n\n", 10),
            Err(ChunkedError::ExpectedCrlf)
        );
        assert_eq!(
            run(b"10000000000000000\r\n", 32),
            Err(ChunkedError::ChunkSizeOverflow)
        );
        let mut long_ext = b"1;".to_vec();
        long_ext.resize(2000, b'a');
        assert_eq!(run(&long_ext, 64), Err(ChunkedError::SizeLineTooLong));
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(9000, b'a');
        assert_eq!(run(&trailer, 64), Err(ChunkedError::TrailerTooLarge));
    }
}
