//! The handshake: rustls's unbuffered server driven over received bytes
//! until it is done, or failed.
//!
//! rustls 0.23 panics when `process_tls_records` is given an empty slice
//! while it still refers to bytes it has not discarded, so every call here
//! passes the kept bytes (the spill, or the rest of the current receive).

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};

/// What [`drive`] did.
pub struct Drive {
    /// Bytes rustls discarded: the rest is offered again, in front of the
    /// next receive.
    pub used: usize,
    pub peer_closed: bool,
    pub error: Option<rustls::Error>,
}

/// Runs rustls over `buf` until it needs more input.
pub fn drive(
    tls: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    plain: &mut Vec<u8>,
    flight: &mut Vec<u8>,
) -> Drive {
    let mut start = 0;
    let mut peer_closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } = tls.process_tls_records(&mut buf[start..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                start += discard;
                return Drive {
                    used: start,
                    peer_closed,
                    error: Some(e),
                };
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            return Drive {
                                used: start + discard,
                                peer_closed,
                                error: Some(e),
                            }
                        }
                    }
                }
                false
            }
            ConnectionState::EncodeTlsData(mut e) => {
                encode_into(flight, |b| e.encode(b));
                false
            }
            // The caller queues `flight`.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                false
            }
            ConnectionState::PeerClosed => {
                peer_closed = true;
                false
            }
            ConnectionState::Closed
            | ConnectionState::BlockedHandshake
            | ConnectionState::WriteTraffic(_) => true,
            // Early data is off; anything else is a state this code does
            // not know.
            _ => {
                return Drive {
                    used: start + discard,
                    peer_closed,
                    error: Some(rustls::Error::General("unexpected TLS state".into())),
                }
            }
        };
        start += discard;
        if stop {
            return Drive {
                used: start,
                peer_closed,
                error: None,
            };
        }
    }
}

/// The fatal alert (RFC 8446 §6) for a handshake that failed with `e`, as
/// a plaintext record: the handshake never reached encryption. Made here
/// rather than taken from rustls, which would have to be driven again over
/// the bad bytes after its error to hand its own alert over.
pub fn handshake_alert(e: &rustls::Error) -> [u8; 7] {
    let description = match e {
        rustls::Error::InvalidMessage(_) => 50,      // decode_error
        rustls::Error::NoApplicationProtocol => 120, // no_application_protocol
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => 10, // unexpected_message
        rustls::Error::PeerMisbehaved(_) => 47,      // illegal_parameter
        _ => 40,                                     // handshake_failure
    };
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Appends what `encode` writes to `out`, growing it as rustls asks.
pub fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) {
    let at = out.len();
    out.resize(at + 4096, 0);
    let n = match encode(&mut out[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(at + required_size, 0);
            encode(&mut out[at..]).unwrap_or(0)
        }
        Err(EncodeError::AlreadyEncoded) => 0,
    };
    out.truncate(at + n);
}
