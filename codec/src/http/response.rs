//! Response heads: a small builder and canned responses.
//!
//! [`ResponseHead`] appends a status line and headers to a caller-owned
//! buffer. A header value holding CR, LF or NUL would let a caller-influenced
//! value split the response, so it fails the whole head and the buffer is
//! left exactly as it was.
//!
//! [`responses`] holds complete responses as `&'static [u8]` for the paths
//! that should not format anything (health checks, the common errors).

use bytes::{BufMut, BytesMut};

/// An HTTP status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(u16);

#[allow(missing_docs)] // the constants are the statuses they are named after
impl StatusCode {
    pub const SWITCHING_PROTOCOLS: StatusCode = StatusCode(101);
    pub const OK: StatusCode = StatusCode(200);
    pub const NO_CONTENT: StatusCode = StatusCode(204);
    pub const NOT_MODIFIED: StatusCode = StatusCode(304);
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    pub const CONFLICT: StatusCode = StatusCode(409);
    pub const GONE: StatusCode = StatusCode(410);
    pub const LENGTH_REQUIRED: StatusCode = StatusCode(411);
    pub const PAYLOAD_TOO_LARGE: StatusCode = StatusCode(413);
    pub const UNSUPPORTED_MEDIA_TYPE: StatusCode = StatusCode(415);
    pub const EXPECTATION_FAILED: StatusCode = StatusCode(417);
    pub const UPGRADE_REQUIRED: StatusCode = StatusCode(426);
    pub const TOO_MANY_REQUESTS: StatusCode = StatusCode(429);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: StatusCode = StatusCode(431);
    pub const INTERNAL_SERVER_ERROR: StatusCode = StatusCode(500);
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    pub const HTTP_VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);

    /// The numeric code.
    pub fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase of RFC 9110 §15.
    pub fn reason_phrase(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            204 => "No Content",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            411 => "Length Required",
            413 => "Content Too Large",
            415 => "Unsupported Media Type",
            417 => "Expectation Failed",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }

    /// Whether a response with this status may carry a body.
    pub fn allows_body(self) -> bool {
        !matches!(self.0, 100..=199 | 204 | 304)
    }
}

/// A header value that would have broken the response (CR, LF or NUL), or a
/// header name that is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHeader;

impl std::fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("header name or value contains forbidden bytes")
    }
}

impl std::error::Error for InvalidHeader {}

/// Builds an `HTTP/1.1` status line and headers at the end of a buffer.
///
/// ```
/// # use bytes::BytesMut;
/// # use codec::http::{ResponseHead, StatusCode};
/// let mut out = BytesMut::new();
/// ResponseHead::new(&mut out, StatusCode::OK)
///     .header("Content-Type", "application/json")
///     .content_length(2)
///     .finish()
///     .unwrap();
/// out.extend_from_slice(b"{}");
/// assert!(out.starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"));
/// ```
#[derive(Debug)]
#[must_use = "a response head is only written by `finish`"]
pub struct ResponseHead<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    failed: bool,
}

impl<'a> ResponseHead<'a> {
    /// Starts a response with `status` at the end of `dst`.
    pub fn new(dst: &'a mut BytesMut, status: StatusCode) -> Self {
        let start = dst.len();
        dst.reserve(128);
        dst.put_slice(b"HTTP/1.1 ");
        dst.put_slice(itoa::Buffer::new().format(status.code()).as_bytes());
        dst.put_u8(b' ');
        dst.put_slice(status.reason_phrase().as_bytes());
        dst.put_slice(b"\r\n");
        ResponseHead {
            dst,
            start,
            failed: false,
        }
    }

    /// Adds a header. A name that is not a token or a value containing CR,
    /// LF or NUL makes [`finish`](Self::finish) fail.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        let name_ok = !name.is_empty() && name.bytes().all(is_token_byte);
        let value_ok = !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0));
        if !(name_ok && value_ok) {
            self.failed = true;
            return self;
        }
        self.dst.put_slice(name.as_bytes());
        self.dst.put_slice(b": ");
        self.dst.put_slice(value);
        self.dst.put_slice(b"\r\n");
        self
    }

    /// Adds `Content-Length`.
    pub fn content_length(self, len: u64) -> Self {
        let mut digits = itoa::Buffer::new();
        self.header("Content-Length", digits.format(len))
    }

    /// Ends the head with the blank line. Returns the head's length, or
    /// [`InvalidHeader`] with `dst` restored to its length before
    /// [`new`](Self::new).
    pub fn finish(self) -> Result<usize, InvalidHeader> {
        if self.failed {
            self.dst.truncate(self.start);
            return Err(InvalidHeader);
        }
        self.dst.put_slice(b"\r\n");
        Ok(self.dst.len() - self.start)
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Complete canned responses and the helper that writes error responses.
pub mod responses {
    use super::{ResponseHead, StatusCode};
    use bytes::BytesMut;

    /// `200` for `GET /healthz`.
    pub const HEALTHZ_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nCache-Control: no-store\r\n\r\nok\n";
    /// `404` that keeps the connection open.
    pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n";
    /// `503` while the node drains for shutdown.
    pub const SHUTTING_DOWN: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\nRetry-After: 1\r\n\r\nshutting down\n";
    /// `408` for a head that did not arrive within the handshake timeout.
    pub const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nrequest timeout\n";

    /// Writes a plain-text error response whose body is `reason` and a
    /// newline. `close` adds `Connection: close` (the caller then closes
    /// after sending); `extra` adds headers such as `Allow` or
    /// `Sec-WebSocket-Version`. A `HEAD` request gets the same head without
    /// the body when `with_body` is false.
    pub fn error(
        dst: &mut BytesMut,
        status: StatusCode,
        reason: &str,
        close: bool,
        extra: &[(&str, &str)],
        with_body: bool,
    ) {
        let mut head = ResponseHead::new(dst, status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .content_length(reason.len() as u64 + 1);
        if close {
            head = head.header("Connection", "close");
        }
        for (name, value) in extra {
            head = head.header(name, value);
        }
        if head.finish().is_ok() && with_body {
            dst.extend_from_slice(reason.as_bytes());
            dst.extend_from_slice(b"\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_length_matches(response: &[u8]) -> bool {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        len == body.len()
    }

    #[test]
    fn builds_a_head() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        let n = ResponseHead::new(&mut out, StatusCode::NOT_MODIFIED)
            .header("ETag", "\"e1:5\"")
            .header("Cache-Control", "no-cache")
            .finish()
            .unwrap();
        assert_eq!(
            &out[..],
            &b"prefixHTTP/1.1 304 Not Modified\r\nETag: \"e1:5\"\r\nCache-Control: no-cache\r\n\r\n"[..]
        );
        assert_eq!(n, out.len() - 6);
    }

    #[test]
    fn a_bad_header_leaves_the_buffer_unchanged() {
        for (name, value) in [
            ("X", "a\r\nInjected: 1"),
            ("X", "a\nb"),
            ("X", "nul\0"),
            ("Bad Name", "v"),
            ("", "v"),
        ] {
            let mut out = BytesMut::from(&b"keep"[..]);
            let r = ResponseHead::new(&mut out, StatusCode::OK)
                .header(name, value)
                .finish();
            assert_eq!(r, Err(InvalidHeader));
            assert_eq!(&out[..], b"keep");
        }
    }

    #[test]
    fn canned_responses_are_well_formed() {
        for r in [
            responses::HEALTHZ_OK,
            responses::NOT_FOUND,
            responses::SHUTTING_DOWN,
            responses::REQUEST_TIMEOUT,
        ] {
            assert!(content_length_matches(r), "{}", String::from_utf8_lossy(r));
        }
        let mut out = BytesMut::new();
        responses::error(
            &mut out,
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version",
            true,
            &[("Sec-WebSocket-Version", "13")],
            true,
        );
        assert!(content_length_matches(&out));
        assert!(out.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn every_status_has_a_phrase() {
        for s in [
            StatusCode::SWITCHING_PROTOCOLS,
            StatusCode::OK,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::GONE,
            StatusCode::LENGTH_REQUIRED,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::EXPECTATION_FAILED,
            StatusCode::UPGRADE_REQUIRED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::NOT_IMPLEMENTED,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ] {
            assert!(!s.reason_phrase().is_empty(), "{s:?}");
        }
    }
}
