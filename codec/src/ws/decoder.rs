//! The frame decoder (RFC 6455 §5).
//!
//! # Shape
//! [`FrameDecoder::decode`] takes the bytes received so far (mutably: it
//! unmasks them in place) and returns one [`Frame`] event plus the number of
//! bytes it used, or [`Status::Partial`] when it needs more. The caller drops
//! the used bytes and calls again; unused bytes stay with the caller.
//!
//! * Data frames are streamed: once a data frame's header is complete the
//!   decoder returns whatever part of its payload is present as a
//!   [`Frame::Data`] chunk and keeps the frame's remaining length and mask
//!   position, so the next call continues with the next bytes. A 1 GiB frame
//!   needs no 1 GiB buffer. A chunk may be empty (a zero-length frame, or a
//!   header that arrived without payload).
//! * Control frames are returned whole (they carry at most 125 bytes): the
//!   decoder answers `Partial` until header and payload are all present.
//! * Fragmented messages are tracked (`first`/`last` on every chunk), their
//!   size is checked against the limit at each frame header — before the
//!   payload arrives — and text is validated incrementally, so an
//!   impossible UTF-8 sequence fails at the byte where it becomes
//!   impossible. Control frames may arrive between fragments.
//!
//! The state is a few dozen bytes and never allocates. Errors are sticky:
//! after one, every call returns it again.

use crate::Status;

use super::close::{parse_close_payload, CloseFrame};
use super::error::ProtocolError;
use super::frame::{DataKind, OpCode, MAX_CONTROL_PAYLOAD};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which end of the connection the decoder sits on. Servers require every
/// frame to be masked; clients require that none is (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames sent by a client.
    Server,
    /// Decoding frames sent by a server.
    Client,
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Which side is decoding.
    pub role: Role,
    /// Largest data message accepted, summed over its fragments. Larger
    /// messages fail with `1009` as soon as a frame header announces them.
    pub max_message_size: u64,
    /// RSV bits a negotiated extension gives meaning to (bit 0x4 = RSV1,
    /// as in the frame's first byte shifted right by 4). Zero until an
    /// extension such as permessage-deflate is negotiated.
    pub extension_rsv: u8,
}

impl DecoderConfig {
    /// Server-side defaults: masked frames required, 1 MiB messages.
    pub fn server() -> Self {
        DecoderConfig {
            role: Role::Server,
            max_message_size: 1 << 20,
            extension_rsv: 0,
        }
    }

    /// Client-side defaults: unmasked frames required, 64 MiB messages.
    pub fn client() -> Self {
        DecoderConfig {
            role: Role::Client,
            max_message_size: 64 << 20,
            extension_rsv: 0,
        }
    }
}

/// One decoded event. Payloads borrow the caller's buffer, already unmasked.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'b> {
    /// A piece of a data message.
    Data {
        /// Text or binary (the kind of the message's first frame).
        kind: DataKind,
        /// The bytes of this piece; may be empty.
        payload: &'b [u8],
        /// This is the message's first piece.
        first: bool,
        /// This is the message's last piece: the message is complete, and
        /// for text, its UTF-8 has been fully validated — unless it is
        /// compressed.
        last: bool,
        /// The message is compressed (permessage-deflate: RSV1 on its first
        /// frame, which [`DecoderConfig::extension_rsv`] must allow): the
        /// pieces are DEFLATE data, and the UTF-8 of a text message is the
        /// caller's to check once inflated.
        compressed: bool,
    },
    /// A ping with its application data; answer with a pong carrying it.
    Ping(&'b [u8]),
    /// A pong.
    Pong(&'b [u8]),
    /// A close frame; `None` when its payload was empty (status 1005).
    Close(Option<CloseFrame<'b>>),
}

/// Decodes the frames of one connection. See the module docs.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    config: DecoderConfig,
    /// Payload bytes of the current data frame not yet returned.
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Key position for the next payload byte of the current frame.
    mask_offset: u8,
    /// Inside a data frame's payload.
    in_frame: bool,
    /// The current data frame has FIN set.
    frame_fin: bool,
    /// The message in progress, from its first frame to its last chunk.
    message: Option<DataKind>,
    /// Payload bytes announced so far for the message in progress.
    message_len: u64,
    /// The next chunk returned is the message's first.
    first_pending: bool,
    /// The message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
    utf8: Utf8Validator,
    error: Option<ProtocolError>,
}

impl FrameDecoder {
    /// A decoder at a frame boundary with no message in progress.
    pub fn new(config: DecoderConfig) -> Self {
        FrameDecoder {
            config,
            remaining: 0,
            mask: None,
            mask_offset: 0,
            in_frame: false,
            frame_fin: false,
            message: None,
            message_len: 0,
            first_pending: false,
            compressed: false,
            utf8: Utf8Validator::new(),
            error: None,
        }
    }

    /// The settings this decoder was made with.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether the decoder sits between messages with nothing pending:
    /// a connection in this state can drop and later recreate its decoder.
    pub fn is_idle(&self) -> bool {
        !self.in_frame && self.message.is_none() && self.error.is_none()
    }

    /// Decodes the next event from the front of `buf`. See the module docs.
    pub fn decode<'b>(
        &mut self,
        buf: &'b mut [u8],
    ) -> Result<Status<(usize, Frame<'b>)>, ProtocolError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let result = self.decode_inner(buf);
        if let Err(e) = result {
            self.error = Some(e);
        }
        result
    }

    fn decode_inner<'b>(
        &mut self,
        buf: &'b mut [u8],
    ) -> Result<Status<(usize, Frame<'b>)>, ProtocolError> {
        if self.in_frame {
            if buf.is_empty() {
                return Ok(Status::Partial);
            }
            let n = buf
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let frame = self.data_chunk(&mut buf[..n])?;
            return Ok(Status::Complete((n, frame)));
        }

        let [b0, b1, ..] = *buf else {
            return Ok(Status::Partial);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        if rsv & !self.config.extension_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode)?;
        let masked = b1 & 0x80 != 0;
        match (self.config.role, masked) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        // RSV1 (permessage-deflate) belongs on a message's first frame
        // only: never on a control frame or a continuation (RFC 7692 §6.1).
        if rsv != 0 && (opcode == OpCode::Continuation || opcode.is_control()) {
            return Err(ProtocolError::ReservedBits);
        }
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        } else {
            match (opcode, self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
        }

        let (payload_len, mut pos) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(Status::Partial),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthOverflow);
                    }
                    (len, 10)
                }
                None => return Ok(Status::Partial),
            },
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else {
                return Ok(Status::Partial);
            };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };

        if opcode.is_control() {
            // `payload_len` ≤ 125 was checked above.
            let end = pos + payload_len as usize;
            if buf.len() < end {
                return Ok(Status::Partial);
            }
            let payload = &mut buf[pos..end];
            if let Some(key) = mask {
                apply_mask(payload, key, 0);
            }
            let frame = match opcode {
                OpCode::Ping => Frame::Ping(payload),
                OpCode::Pong => Frame::Pong(payload),
                _ => Frame::Close(parse_close_payload(payload)?),
            };
            return Ok(Status::Complete((end, frame)));
        }

        // A data frame: check the message limit before any payload.
        let message_len = self
            .message_len
            .checked_add(payload_len)
            .filter(|&n| n <= self.config.max_message_size)
            .ok_or(ProtocolError::MessageTooBig)?;
        if let Some(kind) = match opcode {
            OpCode::Text => Some(DataKind::Text),
            OpCode::Binary => Some(DataKind::Binary),
            _ => None,
        } {
            self.message = Some(kind);
            self.first_pending = true;
            self.compressed = rsv & 0x4 != 0;
            self.utf8 = Utf8Validator::new();
        }
        self.message_len = message_len;
        self.remaining = payload_len;
        self.frame_fin = fin;
        self.mask = mask;
        self.mask_offset = 0;
        self.in_frame = true;

        let available = (buf.len() - pos).min(usize::try_from(payload_len).unwrap_or(usize::MAX));
        let end = pos + available;
        let frame = self.data_chunk(&mut buf[pos..end])?;
        Ok(Status::Complete((end, frame)))
    }

    /// Unmasks and checks the next piece of the current data frame.
    fn data_chunk<'b>(&mut self, chunk: &'b mut [u8]) -> Result<Frame<'b>, ProtocolError> {
        if let Some(key) = self.mask {
            self.mask_offset = apply_mask(chunk, key, usize::from(self.mask_offset)) as u8;
        }
        self.remaining -= chunk.len() as u64;
        let frame_done = self.remaining == 0;
        let last = frame_done && self.frame_fin;
        if frame_done {
            self.in_frame = false;
        }
        let kind = self
            .message
            .expect("a data frame always belongs to a message");
        if kind == DataKind::Text && !self.compressed {
            self.utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if last {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        let first = std::mem::take(&mut self.first_pending);
        if last {
            self.message = None;
            self.message_len = 0;
        }
        Ok(Frame::Data {
            kind,
            payload: chunk,
            first,
            last,
            compressed: self.compressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> FrameDecoder {
        FrameDecoder::new(DecoderConfig::server())
    }

    fn client() -> FrameDecoder {
        FrameDecoder::new(DecoderConfig::client())
    }

    /// Owned copy of a frame event, for comparing runs.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Ev {
        Data(DataKind, Vec<u8>, bool, bool),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    fn own(f: Frame<'_>) -> Ev {
        match f {
            Frame::Data {
                kind,
                payload,
                first,
                last,
                ..
            } => Ev::Data(kind, payload.to_vec(), first, last),
            Frame::Ping(p) => Ev::Ping(p.to_vec()),
            Frame::Pong(p) => Ev::Pong(p.to_vec()),
            Frame::Close(c) => Ev::Close(c.map(|c| (c.code.0, c.reason.to_string()))),
        }
    }

    /// Decodes everything in `input` (in one piece); returns the events, or
    /// the first error.
    fn decode_all(dec: &mut FrameDecoder, input: &[u8]) -> Result<Vec<Ev>, ProtocolError> {
        let mut buf = input.to_vec();
        let mut start = 0;
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf[start..])? {
                Status::Complete((n, f)) => {
                    out.push(own(f));
                    start += n;
                }
                Status::Partial => return Ok(out),
            }
        }
    }

    /// Decodes `input` and joins the message's pieces, with whether they
    /// were all marked compressed.
    fn compressed_pieces(
        dec: &mut FrameDecoder,
        input: &[u8],
    ) -> Result<(Vec<u8>, Vec<bool>), ProtocolError> {
        let mut buf = input.to_vec();
        let (mut start, mut data, mut flags) = (0, Vec::new(), Vec::new());
        while let Status::Complete((n, f)) = dec.decode(&mut buf[start..])? {
            if let Frame::Data {
                payload,
                compressed,
                ..
            } = f
            {
                data.extend_from_slice(payload);
                flags.push(compressed);
            }
            start += n;
        }
        Ok((data, flags))
    }

    #[test]
    fn rsv1_marks_a_compressed_message_where_permessage_deflate_allows_it() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, one frame, RSV1 set.
        const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let deflate = DecoderConfig {
            extension_rsv: 0x4,
            ..DecoderConfig::client()
        };
        let one = [&[0xc1, 0x07][..], &HELLO].concat();
        let (data, flags) = compressed_pieces(&mut FrameDecoder::new(deflate), &one).unwrap();
        assert_eq!(
            (data, flags),
            (HELLO.to_vec(), vec![true]),
            "not UTF-8, not checked"
        );
        // Fragmented (RFC 7692 §7.2.3.2): RSV1 on the first frame only.
        let two = [&[0x41, 0x03][..], &HELLO[..3], &[0x80, 0x04], &HELLO[3..]].concat();
        let (data, flags) = compressed_pieces(&mut FrameDecoder::new(deflate), &two).unwrap();
        assert_eq!((data, flags), (HELLO.to_vec(), vec![true, true]));
        // The next message, uncompressed, is checked as usual.
        let mut dec = FrameDecoder::new(deflate);
        let both = [&one[..], SINGLE_UNMASKED_HELLO].concat();
        assert_eq!(compressed_pieces(&mut dec, &both).unwrap().1, [true, false]);
        // RSV1 on a continuation or a control frame, or where nothing was
        // negotiated, is a protocol error.
        let on_continuation = [&[0x41, 0x03][..], &HELLO[..3], &[0xc0, 0x04], &HELLO[3..]].concat();
        assert_eq!(
            compressed_pieces(&mut FrameDecoder::new(deflate), &on_continuation),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            compressed_pieces(&mut FrameDecoder::new(deflate), &[0xc9, 0x00]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            compressed_pieces(&mut client(), &one),
            Err(ProtocolError::ReservedBits)
        );
        // What the encoder writes for a compressed broadcast is that frame.
        let encoded = crate::ws::encode::compressed_message(DataKind::Text, &HELLO);
        assert_eq!(&encoded[..], &one[..]);
    }

    // RFC 6455 §5.7 examples, byte for byte.
    const SINGLE_UNMASKED_HELLO: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const SINGLE_MASKED_HELLO: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const FRAGMENTED_HEL_LO: [&[u8]; 2] =
        [&[0x01, 0x03, 0x48, 0x65, 0x6c], &[0x80, 0x02, 0x6c, 0x6f]];
    const UNMASKED_PING: &[u8] = &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const MASKED_PONG: &[u8] = &[
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    #[test]
    fn rfc_5_7_examples() {
        assert_eq!(
            decode_all(&mut server(), SINGLE_MASKED_HELLO).unwrap(),
            [Ev::Data(DataKind::Text, b"Hello".to_vec(), true, true)]
        );
        assert_eq!(
            decode_all(&mut client(), SINGLE_UNMASKED_HELLO).unwrap(),
            [Ev::Data(DataKind::Text, b"Hello".to_vec(), true, true)]
        );
        let mut dec = client();
        let frag: Vec<u8> = FRAGMENTED_HEL_LO.concat();
        assert_eq!(
            decode_all(&mut dec, &frag).unwrap(),
            [
                Ev::Data(DataKind::Text, b"Hel".to_vec(), true, false),
                Ev::Data(DataKind::Text, b"lo".to_vec(), false, true),
            ]
        );
        assert_eq!(
            decode_all(&mut client(), UNMASKED_PING).unwrap(),
            [Ev::Ping(b"Hello".to_vec())]
        );
        assert_eq!(
            decode_all(&mut server(), MASKED_PONG).unwrap(),
            [Ev::Pong(b"Hello".to_vec())]
        );
        // 256 bytes and 64 KiB binary, unmasked (client side).
        let mut b256 = vec![0x82, 0x7E, 0x01, 0x00];
        b256.extend(std::iter::repeat_n(0xAB, 256));
        assert_eq!(
            decode_all(&mut client(), &b256).unwrap(),
            [Ev::Data(DataKind::Binary, vec![0xAB; 256], true, true)]
        );
        let mut b64k = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        b64k.extend(std::iter::repeat_n(0xCD, 65536));
        assert_eq!(
            decode_all(&mut client(), &b64k).unwrap(),
            [Ev::Data(DataKind::Binary, vec![0xCD; 65536], true, true)]
        );
    }

    #[test]
    fn masking_is_required_by_role() {
        assert_eq!(
            decode_all(&mut server(), SINGLE_UNMASKED_HELLO),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            decode_all(&mut client(), SINGLE_MASKED_HELLO),
            Err(ProtocolError::MaskedFrame)
        );
    }

    /// Masks an unmasked frame built from parts, as a client would send it.
    fn masked(fin_op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::ws::encode::masked_frame_raw(&mut out, fin_op, payload, [9, 8, 7, 6]);
        out
    }

    #[test]
    fn every_violation_has_its_close_code() {
        let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
            (
                masked(0x80 | 0x40 | 0x1, b"a"),
                ProtocolError::ReservedBits,
                1002,
            ),
            (
                masked(0x80 | 0x10 | 0x2, b"a"),
                ProtocolError::ReservedBits,
                1002,
            ),
            (masked(0x83, b""), ProtocolError::ReservedOpcode, 1002),
            (masked(0x8B, b""), ProtocolError::ReservedOpcode, 1002),
            (
                masked(0x89, &[0; 126]),
                ProtocolError::ControlFrameTooLong,
                1002,
            ),
            (
                masked(0x09, b""),
                ProtocolError::FragmentedControlFrame,
                1002,
            ),
            (
                masked(0x80, b"x"),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            (
                [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
                ProtocolError::ExpectedContinuation,
                1002,
            ),
            (
                masked(0x88, b"\x03"),
                ProtocolError::CloseFrameTooShort,
                1002,
            ),
            (
                masked(0x88, b"\x03\xed"),
                ProtocolError::InvalidCloseCode,
                1002,
            ),
            (
                masked(0x88, b"\x03\xe8\xff"),
                ProtocolError::InvalidCloseReason,
                1007,
            ),
            (masked(0x81, b"\xff"), ProtocolError::InvalidUtf8, 1007),
            (
                [masked(0x01, b"\xce"), masked(0x80, b"")].concat(),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ProtocolError::LengthOverflow,
                1002,
            ),
        ];
        for (input, err, code) in cases {
            let got = decode_all(&mut server(), &input);
            assert_eq!(got, Err(err), "{input:x?}");
            assert_eq!(err.close_code().0, code);
        }
    }

    #[test]
    fn control_frames_may_interleave_with_fragments() {
        let input = [
            masked(0x01, b"Hel"),
            masked(0x89, b"p"),
            masked(0x00, b"l"),
            masked(0x8A, b""),
            masked(0x80, b"o"),
        ]
        .concat();
        assert_eq!(
            decode_all(&mut server(), &input).unwrap(),
            [
                Ev::Data(DataKind::Text, b"Hel".to_vec(), true, false),
                Ev::Ping(b"p".to_vec()),
                Ev::Data(DataKind::Text, b"l".to_vec(), false, false),
                Ev::Pong(vec![]),
                Ev::Data(DataKind::Text, b"o".to_vec(), false, true),
            ]
        );
    }

    #[test]
    fn message_size_is_enforced_at_the_header_across_fragments() {
        let config = DecoderConfig {
            max_message_size: 10,
            ..DecoderConfig::server()
        };
        // Exactly at the limit passes.
        let ok = [masked(0x02, &[0; 6]), masked(0x80, &[0; 4])].concat();
        assert!(decode_all(&mut FrameDecoder::new(config), &ok).is_ok());
        // One byte over fails, and fails before the payload arrived: the
        // header alone is enough.
        let over = [masked(0x02, &[0; 6]), masked(0x80, &[0; 5])].concat();
        let header_of_second_end = masked(0x02, &[0; 6]).len() + 6;
        assert_eq!(
            decode_all(
                &mut FrameDecoder::new(config),
                &over[..header_of_second_end]
            ),
            Err(ProtocolError::MessageTooBig)
        );
        assert_eq!(ProtocolError::MessageTooBig.close_code().0, 1009);
        // A single huge announced frame fails without its payload.
        let mut dec = server();
        let huge = [0x82u8, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            decode_all(&mut dec, &huge),
            Err(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = server();
        assert!(decode_all(&mut dec, &masked(0x83, b"")).is_err());
        assert_eq!(
            decode_all(&mut dec, SINGLE_MASKED_HELLO),
            Err(ProtocolError::ReservedOpcode)
        );
        assert!(!dec.is_idle());
    }

    /// Feeds `input` split at each position in `cuts` the way a connection
    /// receives it: unconsumed bytes stay and new bytes are appended.
    fn decode_split(
        dec: &mut FrameDecoder,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Ev>, ProtocolError> {
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut edges = cuts.to_vec();
        edges.push(input.len());
        let mut from = 0;
        for &to in &edges {
            pending.extend_from_slice(&input[from..to]);
            from = to;
            let mut start = 0;
            while let Status::Complete((n, f)) = dec.decode(&mut pending[start..])? {
                let ev = own(f);
                // Drop the empty chunk that a header without payload yields,
                // so split runs compare equal to whole runs.
                if !matches!(&ev, Ev::Data(_, p, false, false) if p.is_empty()) {
                    out.push(ev);
                }
                start += n;
                if n == 0 {
                    break;
                }
            }
            pending.drain(..start);
        }
        Ok(coalesce(out))
    }

    /// Joins consecutive chunks of one message so that runs with different
    /// splits compare equal.
    fn coalesce(events: Vec<Ev>) -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for ev in events {
            if let (Some(Ev::Data(k, p, first, false)), Ev::Data(k2, p2, false, last)) =
                (out.last_mut(), &ev)
            {
                if *k == *k2 {
                    p.extend_from_slice(p2);
                    let f = *first;
                    let (k, p) = (*k, std::mem::take(p));
                    *out.last_mut().unwrap() = Ev::Data(k, p, f, *last);
                    continue;
                }
            }
            out.push(ev);
        }
        out
    }

    #[test]
    fn every_split_of_every_header_size_decodes_identically() {
        let mut stream = Vec::new();
        stream.extend(masked(0x81, b"small"));
        stream.extend(masked(0x82, &[7u8; 300]));
        stream.extend(masked(0x89, b"ping!"));
        stream.extend(masked(0x82, &[5u8; 70_000]));
        stream.extend(masked(0x01, "κό".as_bytes()));
        stream.extend(masked(0x80, "σμε".as_bytes()));
        stream.extend(masked(0x88, b"\x03\xe8done"));
        let whole = decode_split(&mut server(), &stream, &[]).unwrap();
        assert_eq!(whole.len(), 6);
        // Every single cut in the headers and around them; every 97th cut in
        // the long payload keeps the test fast.
        for cut in (0..stream.len()).filter(|c| *c < 400 || c % 97 == 0 || *c > stream.len() - 100)
        {
            assert_eq!(
                decode_split(&mut server(), &stream, &[cut]).unwrap(),
                whole,
                "cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..600).collect();
        let split = decode_split(&mut server(), &stream[..600], &every_byte).unwrap();
        assert_eq!(split[..3], whole[..3]);
        assert!(
            matches!(&split[3], Ev::Data(DataKind::Binary, p, true, false) if p.len() == 600 - 330 - 14)
        );
    }

    #[test]
    fn utf8_fails_fast_inside_a_frame() {
        // The frame announces 8 bytes; the invalid byte is the 2nd. The error
        // must come as soon as those bytes are present, not at frame end.
        let frame = masked(0x81, b"a\xffbcdefg");
        let header = 6;
        assert_eq!(
            decode_split(&mut server(), &frame[..header + 2], &[header]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn partial_control_frames_are_not_consumed() {
        let ping = masked(0x89, b"hello");
        let mut dec = server();
        for cut in 0..ping.len() {
            let mut part = ping[..cut].to_vec();
            assert_eq!(dec.decode(&mut part), Ok(Status::Partial), "cut {cut}");
        }
        assert!(dec.is_idle());
    }
}
