//! The opening handshake, server side (RFC 6455 §4.2).
//!
//! [`validate`] checks a parsed request head against §4.2.1 and either
//! accepts it ([`Accepted`], which writes the `101` response) or names the
//! failure ([`HandshakeError`], which writes the error response). Every
//! failure has its own variant, status and reason, so a client developer
//! reading the response body or the server log knows exactly what to fix.
//!
//! | Failure | Status |
//! |---|---|
//! | method is not `GET` | 405 (`Allow: GET`) |
//! | HTTP/1.0 | 505 |
//! | no `Host` | 400 |
//! | no `Upgrade` header | 426 (`Upgrade: websocket`) |
//! | `Upgrade` without `websocket` | 400 |
//! | `Connection` without `Upgrade` | 400 |
//! | no `Sec-WebSocket-Version` | 400 (`Sec-WebSocket-Version: 13`) |
//! | `Sec-WebSocket-Version` other than 13 | 426 (`Sec-WebSocket-Version: 13`) |
//! | no `Sec-WebSocket-Key` | 400 |
//! | key that is not base64 of 16 bytes | 400 |
//! | a request body | 400 |
//! | `Sec-WebSocket-Extensions` that does not parse (when the server negotiates permessage-deflate) | 400 |
//!
//! Subprotocols: the server passes its supported list in preference order;
//! the first of them that the client offered is selected. When the client
//! offers only protocols the server lacks, the handshake still succeeds
//! without `Sec-WebSocket-Protocol`, and the client decides whether to
//! proceed (RFC 6455 §4.2.2 /4.2/ and §4.1 /6/).
//!
//! Extensions: when the server passes a permessage-deflate [`Policy`], the
//! client's `Sec-WebSocket-Extensions` offers are negotiated
//! ([`super::deflate::negotiate`]) and the agreement is answered in the
//! `101`; otherwise (and when no offer is acceptable) the response names
//! no extension, so the client must not set RSV bits.

use base64::Engine;
use bytes::{BufMut, BytesMut};
use sha1::{Digest, Sha1};

use super::deflate::{self, Agreed, Policy};
use crate::http::{responses, Method, RequestHead, StatusCode, Version};

/// The GUID of RFC 6455 §1.3, appended to the client's key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key ++ GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to exactly 28 base64 characters");
    debug_assert_eq!(n, 28);
    out
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method was not `GET`.
    NotGet,
    /// The request was HTTP/1.0.
    NotHttp11,
    /// No `Host` header.
    MissingHost,
    /// No `Upgrade` header at all: a plain HTTP request to a WebSocket URL.
    MissingUpgrade,
    /// `Upgrade` present but without the `websocket` token.
    UpgradeNotWebSocket,
    /// `Connection` lacks the `Upgrade` token.
    ConnectionNotUpgrade,
    /// No `Sec-WebSocket-Version`.
    MissingVersion,
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes.
    InvalidKey,
    /// The upgrade request carries a body.
    UnexpectedBody,
    /// `Sec-WebSocket-Extensions` does not parse.
    MalformedExtensions,
}

impl HandshakeError {
    /// The status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            HandshakeError::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::NotHttp11 => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HandshakeError::MissingUpgrade | HandshakeError::UnsupportedVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            HandshakeError::MissingHost
            | HandshakeError::UpgradeNotWebSocket
            | HandshakeError::ConnectionNotUpgrade
            | HandshakeError::MissingVersion
            | HandshakeError::MissingKey
            | HandshakeError::InvalidKey
            | HandshakeError::UnexpectedBody
            | HandshakeError::MalformedExtensions => StatusCode::BAD_REQUEST,
        }
    }

    /// What was wrong, for the response body and the log.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::NotGet => "websocket handshake must use GET",
            HandshakeError::NotHttp11 => "websocket handshake requires HTTP/1.1",
            HandshakeError::MissingHost => "websocket handshake without Host header",
            HandshakeError::MissingUpgrade => {
                "this endpoint requires a websocket upgrade (Upgrade: websocket)"
            }
            HandshakeError::UpgradeNotWebSocket => "Upgrade header does not name websocket",
            HandshakeError::ConnectionNotUpgrade => "Connection header does not contain Upgrade",
            HandshakeError::MissingVersion => {
                "missing Sec-WebSocket-Version (this server speaks 13)"
            }
            HandshakeError::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version (this server speaks 13)"
            }
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::UnexpectedBody => "websocket handshake must not carry a body",
            HandshakeError::MalformedExtensions => {
                "malformed Sec-WebSocket-Extensions header (RFC 6455 section 9.1)"
            }
        }
    }

    /// Headers the response must carry besides the usual ones.
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::NotGet => &[("Allow", "GET")],
            HandshakeError::MissingUpgrade => &[("Upgrade", "websocket")],
            HandshakeError::MissingVersion | HandshakeError::UnsupportedVersion => {
                &[("Sec-WebSocket-Version", "13")]
            }
            _ => &[],
        }
    }

    /// Writes the complete error response, with `Connection: close`.
    pub fn write_response(self, dst: &mut BytesMut) {
        responses::error(
            dst,
            self.status(),
            self.reason(),
            true,
            self.extra_headers(),
            true,
        );
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().code(), self.reason())
    }
}

impl std::error::Error for HandshakeError {}

/// An accepted handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'b, 'p> {
    accept: [u8; 28],
    /// The selected subprotocol, if any.
    pub protocol: Option<&'p str>,
    /// The request's `Origin`, for the server's allow-list.
    pub origin: Option<&'b [u8]>,
    /// The permessage-deflate agreement, if the server negotiates the
    /// extension and the client offered something it accepts.
    pub deflate: Option<Agreed>,
}

impl Accepted<'_, '_> {
    /// The `Sec-WebSocket-Accept` value.
    pub fn accept_key(&self) -> &str {
        std::str::from_utf8(&self.accept).expect("base64 is ASCII")
    }

    /// Writes the `101 Switching Protocols` response.
    pub fn write_response(&self, dst: &mut BytesMut) {
        dst.reserve(160);
        dst.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        dst.put_slice(&self.accept);
        if let Some(p) = self.protocol {
            dst.put_slice(b"\r\nSec-WebSocket-Protocol: ");
            dst.put_slice(p.as_bytes());
        }
        dst.put_slice(b"\r\n");
        if let Some(agreed) = &self.deflate {
            agreed.write_header(dst);
        }
        dst.put_slice(b"\r\n");
    }
}

/// Validates an opening handshake. `protocols` lists the subprotocols the
/// server supports, in preference order; `deflate` is what the server asks
/// of connections that negotiate permessage-deflate (`None`: the server
/// does not offer it, and ignores the header).
pub fn validate<'b, 'p>(
    head: &RequestHead<'b>,
    protocols: &[&'p str],
    deflate: Option<Policy>,
) -> Result<Accepted<'b, 'p>, HandshakeError> {
    if head.method != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if head.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    let h = &head.headers;
    if h.host.is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if h.upgrade.is_empty() {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !h.upgrade.contains("websocket") {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    if !h.connection.contains("upgrade") {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }
    match h.sec_websocket_version {
        None => return Err(HandshakeError::MissingVersion),
        Some(b"13") => {}
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = h.sec_websocket_key.ok_or(HandshakeError::MissingKey)?;
    let mut decoded = [0u8; 18];
    let key_ok = key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut decoded)
            .is_ok_and(|n| n == 16);
    if !key_ok {
        return Err(HandshakeError::InvalidKey);
    }
    if h.chunked || h.content_length.is_some_and(|n| n > 0) {
        return Err(HandshakeError::UnexpectedBody);
    }
    let protocol = protocols.iter().copied().find(|p| {
        h.sec_websocket_protocol
            .items()
            .any(|offered| offered == p.as_bytes())
    });
    let deflate = match deflate {
        Some(policy) => deflate::negotiate(h.sec_websocket_extensions.items(), policy)
            .map_err(|_| HandshakeError::MalformedExtensions)?,
        None => None,
    };
    Ok(Accepted {
        accept: accept_key(key),
        protocol,
        origin: h.origin,
        deflate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Limits};
    use crate::Status;

    #[test]
    fn rfc_1_3_example_key() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ==")[..],
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn check(
        request: &str,
        protocols: &[&str],
    ) -> Result<(String, Option<String>), HandshakeError> {
        let Ok(Status::Complete((head, _))) = parse_request(request.as_bytes(), &Limits::default())
        else {
            panic!("test request does not parse: {request}");
        };
        validate(&head, protocols, None).map(|a| {
            let mut out = BytesMut::new();
            a.write_response(&mut out);
            (
                String::from_utf8(out.to_vec()).unwrap(),
                a.protocol.map(str::to_string),
            )
        })
    }

    #[test]
    fn accepts_the_rfc_example_and_writes_the_101() {
        let (response, protocol) = check(GOOD, &["superchat", "chat"]).unwrap();
        assert_eq!(protocol.as_deref(), Some("superchat"));
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: superchat\r\n\r\n"
        );
        let (response, protocol) = check(GOOD, &["mqtt"]).unwrap();
        assert_eq!(protocol, None);
        assert!(!response.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn tokens_are_case_insensitive_lists() {
        let req = GOOD
            .replace("Upgrade: websocket", "Upgrade: WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, upgrade");
        assert!(check(&req, &[]).is_ok());
        let req = GOOD.replace(
            "Connection: Upgrade",
            "Connection: keep-alive\r\nConnection: Upgrade",
        );
        assert!(check(&req, &[]).is_ok());
    }

    #[test]
    fn every_failure_has_its_own_status_and_reason() {
        let cases = [
            (
                GOOD.replace("GET /chat", "POST /chat"),
                HandshakeError::NotGet,
                405,
            ),
            (
                GOOD.replace(
                    "HTTP/1.1\r\nHost: server.example.com\r\n",
                    "HTTP/1.0\r\nHost: a\r\n",
                ),
                HandshakeError::NotHttp11,
                505,
            ),
            (
                GOOD.replace("Upgrade: websocket\r\n", ""),
                HandshakeError::MissingUpgrade,
                426,
            ),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::UpgradeNotWebSocket,
                400,
            ),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::ConnectionNotUpgrade,
                400,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::MissingVersion,
                400,
            ),
            (
                GOOD.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::MissingKey,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                GOOD.replace("Origin:", "Content-Length: 3\r\nOrigin:"),
                HandshakeError::UnexpectedBody,
                400,
            ),
        ];
        let mut reasons = Vec::new();
        for (req, err, status) in cases {
            assert_eq!(check(&req, &[]), Err(err), "{req}");
            assert_eq!(err.status().code(), status, "{err:?}");
            if !reasons.contains(&err.reason()) {
                reasons.push(err.reason());
            }
            let mut out = BytesMut::new();
            err.write_response(&mut out);
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.ends_with(&format!("{}\n", err.reason())));
            for (name, value) in err.extra_headers() {
                assert!(text.contains(&format!("\r\n{name}: {value}\r\n")));
            }
        }
        // MissingHost cannot come through the parser for HTTP/1.1 (it is
        // refused there first), so check it directly.
        assert_eq!(HandshakeError::MissingHost.status().code(), 400);
        reasons.push(HandshakeError::MissingHost.reason());
        reasons.push(HandshakeError::MalformedExtensions.reason());
        // Twelve distinct failures, twelve distinct reasons.
        assert_eq!(reasons.len(), 12);
        // The version errors tell the client which version to use.
        assert_eq!(
            HandshakeError::UnsupportedVersion.extra_headers(),
            &[("Sec-WebSocket-Version", "13")]
        );
    }

    #[test]
    fn negotiates_permessage_deflate_only_when_the_server_offers_it() {
        let offer = GOOD.replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate; client_max_window_bits\r\n",
        );
        let Ok(Status::Complete((head, _))) = parse_request(offer.as_bytes(), &Limits::default())
        else {
            panic!()
        };
        let respond = |a: Accepted<'_, '_>| {
            let mut out = BytesMut::new();
            a.write_response(&mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        // The server does not offer it: no extension, the header unread.
        let plain = validate(&head, &[], None).unwrap();
        assert_eq!(plain.deflate, None);
        assert!(!respond(plain).contains("Extensions"));
        // It does: the answer names what both agreed, before the blank line.
        let agreed = validate(&head, &[], Some(Policy::default())).unwrap();
        assert_eq!(agreed.deflate.map(|a| a.server_max_window_bits), Some(15));
        assert!(respond(agreed).ends_with(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"
        ));
        // A header that does not parse fails the handshake (only when read).
        let bad = GOOD.replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; =1\r\n",
        );
        let Ok(Status::Complete((head, _))) = parse_request(bad.as_bytes(), &Limits::default())
        else {
            panic!()
        };
        assert!(validate(&head, &[], None).is_ok());
        assert_eq!(
            validate(&head, &[], Some(Policy::default())),
            Err(HandshakeError::MalformedExtensions)
        );
    }

    #[test]
    fn exposes_the_origin() {
        let Ok(Status::Complete((head, _))) = parse_request(GOOD.as_bytes(), &Limits::default())
        else {
            panic!()
        };
        assert_eq!(
            validate(&head, &[], None).unwrap().origin,
            Some(&b"http://example.com"[..])
        );
    }
}
