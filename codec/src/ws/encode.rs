//! Encoding frames.
//!
//! Servers send unmasked frames ([`frame`], [`message`], [`ping`], [`pong`],
//! [`close`]). Broadcast depends on [`message`]: it encodes a message once
//! into an immutable [`Bytes`] whose clones share one allocation, so the same
//! frame can sit in the send queues of any number of connections.
//!
//! Clients must mask ([`masked_frame`]); ringcast's own test and load
//! clients use it.
//!
//! Fallible encoders check everything before writing, so on error the
//! destination buffer is unchanged.

use bytes::{BufMut, Bytes, BytesMut};

use super::code::CloseCode;
use super::frame::{encode_header, DataKind, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;

/// A frame that may not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A control frame payload over 125 bytes (for close: a reason over 123).
    ControlPayloadTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, reserved ranges).
    InvalidCloseCode,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncodeError::ControlPayloadTooLong => "control frame payload over 125 bytes",
            EncodeError::InvalidCloseCode => "close code may not be sent",
        })
    }
}

impl std::error::Error for EncodeError {}

/// The length of the header of an unmasked frame with this payload length.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends one unmasked frame.
pub fn frame(dst: &mut BytesMut, opcode: OpCode, fin: bool, payload: &[u8]) {
    let (header, n) = encode_header(fin, opcode, payload.len() as u64, None);
    dst.reserve(n + payload.len());
    dst.put_slice(&header[..n]);
    dst.put_slice(payload);
}

/// Encodes a whole message as one unmasked frame into shareable bytes:
/// the encode-once half of broadcast.
pub fn message(kind: DataKind, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    frame(&mut dst, kind.opcode(), true, payload);
    dst.freeze()
}

/// Encodes a whole compressed message (permessage-deflate: `compressed`
/// is what [`super::deflate::compress`] made of it) as one unmasked frame
/// with RSV1 set, into shareable bytes.
pub fn compressed_message(kind: DataKind, compressed: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(header_len(compressed.len()) + compressed.len());
    frame(&mut dst, kind.opcode(), true, compressed);
    dst[0] |= 0x40; // RSV1
    dst.freeze()
}

/// Appends a ping.
pub fn ping(dst: &mut BytesMut, payload: &[u8]) -> Result<(), EncodeError> {
    control(dst, OpCode::Ping, payload)
}

/// Appends a pong (answering a ping: echo its payload).
pub fn pong(dst: &mut BytesMut, payload: &[u8]) -> Result<(), EncodeError> {
    control(dst, OpCode::Pong, payload)
}

fn control(dst: &mut BytesMut, opcode: OpCode, payload: &[u8]) -> Result<(), EncodeError> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(EncodeError::ControlPayloadTooLong);
    }
    frame(dst, opcode, true, payload);
    Ok(())
}

/// Appends a close frame: `None` for an empty payload (answering an empty
/// close), otherwise the code and a reason of at most 123 bytes.
pub fn close(dst: &mut BytesMut, code: Option<CloseCode>, reason: &str) -> Result<(), EncodeError> {
    let Some(code) = code else {
        frame(dst, OpCode::Close, true, &[]);
        return Ok(());
    };
    if !code.is_valid_on_wire() {
        return Err(EncodeError::InvalidCloseCode);
    }
    if reason.len() > MAX_CONTROL_PAYLOAD - 2 {
        return Err(EncodeError::ControlPayloadTooLong);
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    frame(dst, OpCode::Close, true, &payload[..2 + reason.len()]);
    Ok(())
}

/// Appends one masked frame, as a client sends it.
pub fn masked_frame(dst: &mut BytesMut, opcode: OpCode, fin: bool, payload: &[u8], mask: [u8; 4]) {
    let (header, n) = encode_header(fin, opcode, payload.len() as u64, Some(mask));
    dst.reserve(n + payload.len());
    dst.put_slice(&header[..n]);
    let start = dst.len();
    dst.put_slice(payload);
    apply_mask(&mut dst[start..], mask, 0);
}

/// Appends a masked frame whose first byte is given raw (FIN, RSV and
/// opcode bits as they are), including invalid combinations: for tests that
/// must produce protocol violations.
#[doc(hidden)]
pub fn masked_frame_raw(dst: &mut Vec<u8>, first_byte: u8, payload: &[u8], mask: [u8; 4]) {
    let (mut header, n) = encode_header(
        false,
        OpCode::Continuation,
        payload.len() as u64,
        Some(mask),
    );
    header[0] = first_byte;
    dst.extend_from_slice(&header[..n]);
    let start = dst.len();
    dst.extend_from_slice(payload);
    apply_mask(&mut dst[start..], mask, 0);
}

/// The largest header any frame can have.
pub const MAX_FRAME_HEADER: usize = MAX_HEADER_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_5_7_server_frames_byte_for_byte() {
        let mut out = BytesMut::new();
        frame(&mut out, OpCode::Text, true, b"Hello");
        assert_eq!(&out[..], [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = BytesMut::new();
        frame(&mut out, OpCode::Text, false, b"Hel");
        frame(&mut out, OpCode::Continuation, true, b"lo");
        assert_eq!(
            &out[..],
            [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        );

        let mut out = BytesMut::new();
        ping(&mut out, b"Hello").unwrap();
        assert_eq!(&out[..], [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let m = message(DataKind::Binary, &[0u8; 256]);
        assert_eq!(&m[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(m.len(), 260);
        let m = message(DataKind::Binary, &vec![0u8; 65536]);
        assert_eq!(&m[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn rfc_5_7_masked_frames_byte_for_byte() {
        let mut out = BytesMut::new();
        masked_frame(
            &mut out,
            OpCode::Text,
            true,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        assert_eq!(
            &out[..],
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let mut out = BytesMut::new();
        masked_frame(
            &mut out,
            OpCode::Pong,
            true,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        assert_eq!(
            &out[..],
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn header_lengths_at_the_size_class_edges() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            assert_eq!(header_len(len), header);
            let m = message(DataKind::Binary, &vec![1; len]);
            assert_eq!(m.len(), len + header, "{len}");
        }
    }

    #[test]
    fn broadcast_frames_share_one_allocation() {
        let m = message(DataKind::Text, b"tick");
        let copies: Vec<Bytes> = (0..1000).map(|_| m.clone()).collect();
        assert!(copies.iter().all(|c| c.as_ptr() == m.as_ptr()));
    }

    #[test]
    fn close_frames_and_their_errors() {
        let mut out = BytesMut::new();
        close(&mut out, Some(CloseCode::GOING_AWAY), "bye").unwrap();
        assert_eq!(&out[..], [0x88, 0x05, 0x03, 0xE9, b'b', b'y', b'e']);
        let mut out = BytesMut::new();
        close(&mut out, None, "").unwrap();
        assert_eq!(&out[..], [0x88, 0x00]);

        let mut out = BytesMut::from(&b"x"[..]);
        assert_eq!(
            close(&mut out, Some(CloseCode::NO_STATUS), ""),
            Err(EncodeError::InvalidCloseCode)
        );
        assert_eq!(
            close(&mut out, Some(CloseCode::ABNORMAL), ""),
            Err(EncodeError::InvalidCloseCode)
        );
        assert_eq!(
            close(&mut out, Some(CloseCode::NORMAL), &"r".repeat(124)),
            Err(EncodeError::ControlPayloadTooLong)
        );
        assert_eq!(
            ping(&mut out, &[0; 126]),
            Err(EncodeError::ControlPayloadTooLong)
        );
        assert_eq!(&out[..], b"x", "failed encodes leave the buffer unchanged");
        close(&mut out, Some(CloseCode::NORMAL), &"r".repeat(123)).unwrap();
        assert_eq!(out.len(), 1 + 2 + 125);
    }
}
