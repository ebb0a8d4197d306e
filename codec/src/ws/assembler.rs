//! Reassembling data chunks into whole messages.

use bytes::{Bytes, BytesMut};

use super::frame::DataKind;

/// A complete data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Text (already validated as UTF-8 by the decoder) or binary.
    pub kind: DataKind,
    /// The whole payload.
    pub payload: Bytes,
}

/// Joins the [`Frame::Data`](super::Frame::Data) chunks of a message.
///
/// The buffer only grows while a message is in progress and is handed over
/// with the message, so an idle connection keeps no capacity. Its size is
/// bounded by the decoder, which refuses messages over
/// [`DecoderConfig::max_message_size`](super::DecoderConfig::max_message_size)
/// before their payload arrives.
#[derive(Debug, Default)]
pub struct Assembler {
    buf: BytesMut,
}

impl Assembler {
    /// An assembler with no message in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk; returns the message when `last` is set.
    pub fn push(&mut self, kind: DataKind, chunk: &[u8], last: bool) -> Option<Message> {
        self.buf.extend_from_slice(chunk);
        last.then(|| Message {
            kind,
            payload: std::mem::take(&mut self.buf).freeze(),
        })
    }

    /// Bytes of the message in progress.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no message is in progress.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_chunks_and_keeps_no_capacity_between_messages() {
        let mut a = Assembler::new();
        assert_eq!(a.push(DataKind::Text, b"He", false), None);
        assert_eq!(a.push(DataKind::Text, b"", false), None);
        assert_eq!(a.len(), 2);
        let m = a.push(DataKind::Text, b"llo", true).unwrap();
        assert_eq!(m.payload, &b"Hello"[..]);
        assert!(a.is_empty());
        assert_eq!(a.buf.capacity(), 0);
    }
}
