//! # ringcast-codec
//!
//! The wire formats of ringcast, written **sans-io**: every type here takes
//! bytes in and gives events and bytes out. Nothing in this crate opens a
//! socket, reads a clock, spawns a thread or keeps a global. The server owns
//! the memory and the I/O; the codec owns the rules.
//!
//! ```text
//!              bytes from the socket                      bytes to the socket
//!                      │                                          ▲
//!   ┌──────────────────▼──────────────────┐     ┌─────────────────┴───────────────┐
//!   │ http::parse_request   (head)        │     │ http::ResponseHead / responses  │
//!   │ http::ChunkedDecoder  (POST bodies) │     │ ws::encode_* (encode once →     │
//!   │ ws::handshake::validate (upgrade)   │     │   shared `Bytes` for broadcast) │
//!   │ ws::FrameDecoder → ws::Assembler    │     │ sse::Event::encode              │
//!   └─────────────────────────────────────┘     └─────────────────────────────────┘
//! ```
//!
//! ## Conventions
//! * Running out of input is **not an error**: parsers return [`Status::Partial`]
//!   and the caller keeps the unconsumed bytes for the next call.
//!   [`Status::Complete`] carries how many bytes were used; anything after them
//!   (pipelined requests, the next frame) stays with the caller.
//! * Errors are small `Copy` enums naming exactly what failed. Each maps to
//!   the response the peer deserves: an HTTP status
//!   ([`http::HttpError::status`]) or a WebSocket close code
//!   ([`ws::ProtocolError::close_code`]).
//! * Decoders keep fixed-size state and never allocate; the only growing
//!   buffer ([`ws::Assembler`]) is opt-in and bounded by the configured
//!   maximum message size.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod http;
pub mod sse;
pub mod ws;

/// The outcome of feeding a parser a buffer that may hold only part of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole item was parsed.
    Complete(T),
    /// More bytes are needed; nothing was consumed. Call again with the same
    /// bytes plus whatever arrives next.
    Partial,
}

impl<T> Status<T> {
    /// `true` when the item was complete.
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// The complete item, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }
}
