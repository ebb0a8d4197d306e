//! What a peer can do wrong, and the close code each violation earns.

use super::code::CloseCode;

/// A protocol violation by the peer, with the close code it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV bits set that no negotiated extension defines → 1002.
    ReservedBits,
    /// Opcode 3–7 or 0xB–0xF → 1002.
    ReservedOpcode,
    /// A client frame without a mask → 1002.
    UnmaskedFrame,
    /// A server frame with a mask → 1002.
    MaskedFrame,
    /// A control frame with more than 125 bytes of payload → 1002.
    ControlFrameTooLong,
    /// A control frame without FIN → 1002.
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message in progress → 1002.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress → 1002.
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set → 1002.
    LengthOverflow,
    /// A close frame with a 1-byte payload → 1002.
    CloseFrameTooShort,
    /// A close frame whose code may not be sent → 1002.
    InvalidCloseCode,
    /// A text message that is not UTF-8 → 1007.
    InvalidUtf8,
    /// A close reason that is not UTF-8 → 1007.
    InvalidCloseReason,
    /// A message larger than [`DecoderConfig::max_message_size`] → 1009.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code to send.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame (well under 123 bytes) and the log.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::MaskedFrame => "server frame masked",
            ProtocolError::ControlFrameTooLong => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "continuation without a message in progress",
            ProtocolError::ExpectedContinuation => "new data frame inside a fragmented message",
            ProtocolError::LengthOverflow => "payload length has its top bit set",
            ProtocolError::CloseFrameTooShort => "close payload of 1 byte",
            ProtocolError::InvalidCloseCode => "invalid close code",
            ProtocolError::InvalidUtf8 => "text message is not valid UTF-8",
            ProtocolError::InvalidCloseReason => "close reason is not valid UTF-8",
            ProtocolError::MessageTooBig => "message too big",
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.close_code().0)
    }
}

impl std::error::Error for ProtocolError {}
