//! Close frames and the closing handshake (RFC 6455 §5.5.1, §7); the
//! codes themselves are in `code`.

use super::code::CloseCode;
use super::error::ProtocolError;

/// A parsed close frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code.
    pub code: CloseCode,
    /// The reason, validated UTF-8; often empty.
    pub reason: &'a str,
}

/// Parses a (unmasked) close payload: empty, or a valid code followed by a
/// UTF-8 reason. `Ok(None)` for an empty payload (status 1005).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Where a connection stands in the closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseState {
    /// Neither side has sent a close frame; data flows both ways.
    #[default]
    Open,
    /// We sent a close frame and await the peer's. Send no more data;
    /// arm a close timeout and drop the connection when it fires.
    CloseSent,
    /// Both close frames have been exchanged (or the peer's was answered):
    /// flush what is queued, then close the TCP connection. RFC 6455 §7.1.1
    /// has the server close TCP first.
    Closed,
}

/// What to do after the peer's close frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum PeerClosed {
    /// Answer with a close frame carrying this code (`None`: empty payload,
    /// answering an empty close), then close TCP.
    Reply(Option<CloseCode>),
    /// We had already sent ours: the handshake is complete; close TCP.
    Complete,
    /// The handshake was already complete; nothing to do.
    Ignore,
}

/// The closing handshake as a small state machine the server drives:
/// [`receive`](Self::receive) when the peer's close frame arrives,
/// [`initiate`](Self::initiate) when the server decides to close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseHandshake {
    state: CloseState,
}

impl CloseHandshake {
    /// A connection that is open.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state.
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// Whether data frames may still be sent.
    pub fn can_send_data(&self) -> bool {
        self.state == CloseState::Open
    }

    /// The peer's close frame arrived (`None`: empty payload). Echoes the
    /// peer's code when we have not closed yet (RFC 6455 §5.5.1).
    pub fn receive(&mut self, frame: Option<CloseFrame<'_>>) -> PeerClosed {
        match self.state {
            CloseState::Open => {
                self.state = CloseState::Closed;
                PeerClosed::Reply(frame.map(|f| f.code))
            }
            CloseState::CloseSent => {
                self.state = CloseState::Closed;
                PeerClosed::Complete
            }
            CloseState::Closed => PeerClosed::Ignore,
        }
    }

    /// The server wants to close. Returns `true` when the caller should now
    /// send a close frame; `false` when one was already sent.
    #[must_use]
    pub fn initiate(&mut self) -> bool {
        match self.state {
            CloseState::Open => {
                self.state = CloseState::CloseSent;
                true
            }
            CloseState::CloseSent | CloseState::Closed => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_validity() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        let invalid = [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for c in valid {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
            assert!(parse_close_payload(&c.to_be_bytes()).is_ok(), "{c}");
        }
        for c in invalid {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
            assert_eq!(
                parse_close_payload(&c.to_be_bytes()),
                Err(ProtocolError::InvalidCloseCode),
                "{c}"
            );
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(
            parse_close_payload(b"\x03"),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8bye"),
            Ok(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "bye"
            }))
        );
        assert_eq!(
            parse_close_payload(
                b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
            ),
            Err(ProtocolError::InvalidCloseReason)
        );
        assert_eq!(
            ProtocolError::InvalidCloseReason.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        assert_eq!(
            ProtocolError::CloseFrameTooShort.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn peer_initiated_close_is_echoed() {
        let mut hs = CloseHandshake::new();
        assert!(hs.can_send_data());
        let frame = CloseFrame {
            code: CloseCode(4001),
            reason: "",
        };
        assert_eq!(
            hs.receive(Some(frame)),
            PeerClosed::Reply(Some(CloseCode(4001)))
        );
        assert_eq!(hs.state(), CloseState::Closed);
        assert!(!hs.can_send_data());
        assert!(!hs.initiate());
        assert_eq!(hs.receive(None), PeerClosed::Ignore);

        let mut hs = CloseHandshake::new();
        assert_eq!(hs.receive(None), PeerClosed::Reply(None));
    }

    #[test]
    fn server_initiated_close_awaits_the_peer() {
        let mut hs = CloseHandshake::new();
        assert!(hs.initiate());
        assert_eq!(hs.state(), CloseState::CloseSent);
        assert!(!hs.can_send_data());
        assert!(!hs.initiate(), "a second close frame is never sent");
        assert_eq!(hs.receive(None), PeerClosed::Complete);
        assert_eq!(hs.state(), CloseState::Closed);
    }
}
