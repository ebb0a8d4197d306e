//! WebSocket (RFC 6455), server side first.
//!
//! * [`handshake`]: validates an opening handshake and writes the `101`.
//! * [`FrameDecoder`]: frames in, [`Frame`] events out. Fixed-size state,
//!   no heap, in-place unmasking, payload streamed as chunks; every protocol
//!   violation is a [`ProtocolError`] carrying its close code.
//! * [`Assembler`]: joins data chunks into whole [`Message`]s when a caller
//!   wants them (echo, client commands); bounded by the message size limit.
//! * [`encode`]: server frames (unmasked), broadcast frames encoded once
//!   into shared [`bytes::Bytes`], and masked client frames for test and
//!   load clients.
//! * [`CloseHandshake`]: who has sent and received a close frame, and what
//!   to send next.
//! * [`Utf8Validator`]: incremental UTF-8 validation across fragments.

mod assembler;
mod close;
mod code;
mod decoder;
pub mod deflate;
pub mod encode;
mod error;
mod frame;
pub mod handshake;
mod mask;
mod utf8;

pub use assembler::{Assembler, Message};
pub use close::{CloseFrame, CloseHandshake, CloseState, PeerClosed};
pub use code::CloseCode;
pub use decoder::{DecoderConfig, Frame, FrameDecoder, Role};
pub use error::ProtocolError;
pub use frame::{DataKind, OpCode};
pub use mask::apply_mask;
pub use utf8::Utf8Validator;
