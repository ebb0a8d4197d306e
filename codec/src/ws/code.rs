//! Close status codes (RFC 6455 §7.4).
//!
//! # Which codes are valid on the wire
//! A received close code is accepted when it is one of 1000–1003, 1007–1011,
//! 1012–1014 (registered with IANA after RFC 6455: service restart, try again
//! later, bad gateway — servers send them routinely, ringcast included), or
//! in the application ranges 3000–4999. Everything else (0–999, 1004–1006,
//! 1015, 1016–2999, 5000+) is a protocol error (`1002`). 1005 and 1006 are
//! never sent: an empty close payload *means* 1005.

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

#[allow(missing_docs)] // the constants are the codes they are named after
impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Never on the wire: what an empty close payload means.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Never on the wire: the connection ended without a close frame.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// Whether this code may appear in a close frame (see the module docs).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
