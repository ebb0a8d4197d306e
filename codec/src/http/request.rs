//! Request heads: [`parse_request`] and what it produces.
//!
//! The parser is stateless and incremental in the `httparse` manner: call it
//! with everything received so far; it answers [`Status::Partial`] until the
//! blank line that ends the head has arrived, then the parsed head and the
//! number of bytes it used. Bytes after the head (a body, a pipelined request)
//! are left for the caller.
//!
//! Limits are enforced on every call, so a peer that never finishes its head
//! is refused as soon as it has sent more than [`Limits::max_head_bytes`], and
//! a bad request line or a method ringcast does not serve is refused as soon
//! as it is visible, without waiting for the rest of the head.
//!
//! Each call rescans the buffer from its start. Heads are small (8 KiB by
//! default), so this costs microseconds; callers that receive a head byte by
//! byte should only call again once a `\n` has arrived.

use crate::Status;

use super::response::StatusCode;

/// The most header fields a request may carry; the size of the on-stack
/// array `httparse` fills. [`Limits::max_headers`] may lower it.
pub const MAX_HEADERS: usize = 64;

/// Size limits applied while parsing a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted head, request line through the blank line. Larger
    /// heads are refused with `431`.
    pub max_head_bytes: usize,
    /// Most header fields accepted (capped at [`MAX_HEADERS`]). More are
    /// refused with `431`.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: MAX_HEADERS,
        }
    }
}

/// The request methods ringcast serves. Every other method is refused with
/// [`HttpError::MethodNotAllowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`: subscriptions, upgrades, polls, health and metrics.
    Get,
    /// `HEAD`: `GET` without a body.
    Head,
    /// `POST`: publishing.
    Post,
    /// `OPTIONS`: CORS preflight.
    Options,
}

impl Method {
    /// Method tokens are case-sensitive (RFC 9110 §9.1).
    fn from_token(token: &str) -> Option<Method> {
        match token {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            "POST" => Some(Method::Post),
            "OPTIONS" => Some(Method::Options),
            _ => None,
        }
    }

    /// The method's token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Options => "OPTIONS",
        }
    }
}

/// HTTP versions ringcast speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// HTTP/1.0: no persistent connection unless the client asks for one.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// How the request's body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with
    /// [`ChunkedDecoder`](super::ChunkedDecoder).
    Chunked,
}

/// The header fields ringcast looks at, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the variants are the header names
pub enum HeaderName {
    Host,
    Origin,
    LastEventId,
    Authorization,
    ContentType,
    ContentLength,
    TransferEncoding,
    SecWebSocketKey,
    SecWebSocketVersion,
    IfNoneMatch,
    Accept,
    Connection,
    Upgrade,
    SecWebSocketProtocol,
    SecWebSocketExtensions,
    Expect,
    AccessControlRequestMethod,
    AccessControlRequestHeaders,
}

impl HeaderName {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Host => "Host",
            HeaderName::Origin => "Origin",
            HeaderName::LastEventId => "Last-Event-ID",
            HeaderName::Authorization => "Authorization",
            HeaderName::ContentType => "Content-Type",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::TransferEncoding => "Transfer-Encoding",
            HeaderName::SecWebSocketKey => "Sec-WebSocket-Key",
            HeaderName::SecWebSocketVersion => "Sec-WebSocket-Version",
            HeaderName::IfNoneMatch => "If-None-Match",
            HeaderName::Accept => "Accept",
            HeaderName::Connection => "Connection",
            HeaderName::Upgrade => "Upgrade",
            HeaderName::SecWebSocketProtocol => "Sec-WebSocket-Protocol",
            HeaderName::SecWebSocketExtensions => "Sec-WebSocket-Extensions",
            HeaderName::Expect => "Expect",
            HeaderName::AccessControlRequestMethod => "Access-Control-Request-Method",
            HeaderName::AccessControlRequestHeaders => "Access-Control-Request-Headers",
        }
    }

    fn lookup(name: &str) -> Option<HeaderName> {
        const ALL: [HeaderName; 18] = [
            HeaderName::Host,
            HeaderName::Origin,
            HeaderName::LastEventId,
            HeaderName::Authorization,
            HeaderName::ContentType,
            HeaderName::ContentLength,
            HeaderName::TransferEncoding,
            HeaderName::SecWebSocketKey,
            HeaderName::SecWebSocketVersion,
            HeaderName::IfNoneMatch,
            HeaderName::Accept,
            HeaderName::Connection,
            HeaderName::Upgrade,
            HeaderName::SecWebSocketProtocol,
            HeaderName::SecWebSocketExtensions,
            HeaderName::Expect,
            HeaderName::AccessControlRequestMethod,
            HeaderName::AccessControlRequestHeaders,
        ];
        ALL.into_iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(name))
    }
}

/// Why a request head was refused. Each variant maps to one status
/// ([`HttpError::status`]) and one human-readable reason
/// ([`HttpError::reason`]) for the response body and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head exceeded [`Limits::max_head_bytes`] → `431`.
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`] → `431`.
    TooManyHeaders,
    /// The request line is not `METHOD SP target SP HTTP/x.y` → `400`.
    BadRequestLine,
    /// A header field name or value has invalid syntax → `400`.
    BadHeader,
    /// The request target is neither origin-form (`/path?query`),
    /// absolute-form (`http://host/path`) nor `*` for `OPTIONS` → `400`.
    BadTarget,
    /// An HTTP version other than 1.0 or 1.1 → `505`.
    UnsupportedVersion,
    /// A method ringcast does not serve → `405`.
    MethodNotAllowed,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2) → `400`.
    MissingHost,
    /// A header that must appear at most once appeared more often → `400`.
    DuplicateHeader(HeaderName),
    /// A list-valued header was repeated on more lines than
    /// [`TokenList::CAPACITY`] → `400`.
    TooManyHeaderLines(HeaderName),
    /// `Content-Length` is not a decimal number that fits in 64 bits → `400`.
    BadContentLength,
    /// Several `Content-Length` values that differ, or `Content-Length`
    /// together with `Transfer-Encoding` (a request-smuggling vector) → `400`.
    ConflictingFraming,
    /// A transfer coding other than a lone `chunked` → `501`.
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 §6.1) → `400`.
    TransferEncodingInHttp10,
}

impl HttpError {
    /// The status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HttpError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            HttpError::BadRequestLine
            | HttpError::BadHeader
            | HttpError::BadTarget
            | HttpError::MissingHost
            | HttpError::DuplicateHeader(_)
            | HttpError::TooManyHeaderLines(_)
            | HttpError::BadContentLength
            | HttpError::ConflictingFraming
            | HttpError::TransferEncodingInHttp10 => StatusCode::BAD_REQUEST,
        }
    }

    /// What was wrong, in words for the response body and the log.
    pub fn reason(self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BadRequestLine => "malformed request line",
            HttpError::BadHeader => "malformed header field",
            HttpError::BadTarget => "request target must be an absolute path",
            HttpError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            HttpError::MethodNotAllowed => "method not allowed (allowed: GET, HEAD, POST, OPTIONS)",
            HttpError::MissingHost => "HTTP/1.1 request without Host header",
            HttpError::DuplicateHeader(h) => match h {
                HeaderName::Host => "duplicate Host header",
                HeaderName::Origin => "duplicate Origin header",
                HeaderName::LastEventId => "duplicate Last-Event-ID header",
                HeaderName::Authorization => "duplicate Authorization header",
                HeaderName::ContentType => "duplicate Content-Type header",
                HeaderName::SecWebSocketKey => "duplicate Sec-WebSocket-Key header",
                HeaderName::SecWebSocketVersion => "duplicate Sec-WebSocket-Version header",
                HeaderName::Expect => "duplicate Expect header",
                HeaderName::AccessControlRequestMethod => {
                    "duplicate Access-Control-Request-Method header"
                }
                _ => "duplicate header",
            },
            HttpError::TooManyHeaderLines(_) => "list header repeated on too many lines",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::ConflictingFraming => {
                "conflicting message framing (Content-Length with Transfer-Encoding, or differing Content-Length values)"
            }
            HttpError::UnsupportedTransferEncoding => {
                "unsupported Transfer-Encoding (only chunked is accepted)"
            }
            HttpError::TransferEncodingInHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().code(), self.reason())
    }
}

impl std::error::Error for HttpError {}

/// The values of a list-valued header (`Connection: keep-alive, Upgrade`),
/// which a client may also spread over several lines. Holds up to
/// [`TokenList::CAPACITY`] lines without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenList<'b> {
    lines: [&'b [u8]; TokenList::CAPACITY],
    len: u8,
}

impl<'b> TokenList<'b> {
    /// How many lines of one list header are accepted.
    pub const CAPACITY: usize = 4;

    fn push(&mut self, value: &'b [u8], name: HeaderName) -> Result<(), HttpError> {
        let slot = self
            .lines
            .get_mut(self.len as usize)
            .ok_or(HttpError::TooManyHeaderLines(name))?;
        *slot = value;
        self.len += 1;
        Ok(())
    }

    /// `true` when the header was absent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw header lines, in order.
    pub fn lines(&self) -> &[&'b [u8]] {
        &self.lines[..self.len as usize]
    }

    /// The comma-separated elements of every line, trimmed of optional
    /// whitespace, empty elements skipped (RFC 9110 §5.6.1).
    pub fn items(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.lines()
            .iter()
            .flat_map(|line| line.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|item| !item.is_empty())
    }

    /// Whether any element equals `token`, ignoring ASCII case.
    pub fn contains(&self, token: &str) -> bool {
        self.items()
            .any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The header fields ringcast acts on, picked out during parsing. Fields that
/// must appear at most once are `Option`s (a repeat is an error); list-valued
/// fields are [`TokenList`]s. Other headers are skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the header it is named after
pub struct Headers<'b> {
    pub host: Option<&'b [u8]>,
    pub origin: Option<&'b [u8]>,
    pub last_event_id: Option<&'b [u8]>,
    pub authorization: Option<&'b [u8]>,
    pub content_type: Option<&'b [u8]>,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` was present (the only coding accepted).
    pub chunked: bool,
    pub sec_websocket_key: Option<&'b [u8]>,
    pub sec_websocket_version: Option<&'b [u8]>,
    /// `Expect` (`100-continue` is the only expectation defined).
    pub expect: Option<&'b [u8]>,
    /// A CORS preflight's `Access-Control-Request-Method`.
    pub access_control_request_method: Option<&'b [u8]>,
    /// A CORS preflight's `Access-Control-Request-Headers`.
    pub access_control_request_headers: TokenList<'b>,
    pub if_none_match: TokenList<'b>,
    pub accept: TokenList<'b>,
    pub connection: TokenList<'b>,
    pub upgrade: TokenList<'b>,
    pub sec_websocket_protocol: TokenList<'b>,
    pub sec_websocket_extensions: TokenList<'b>,
}

impl<'b> Headers<'b> {
    fn set_once(
        slot: &mut Option<&'b [u8]>,
        value: &'b [u8],
        name: HeaderName,
    ) -> Result<(), HttpError> {
        if slot.is_some() {
            return Err(HttpError::DuplicateHeader(name));
        }
        *slot = Some(trim_ows(value));
        Ok(())
    }

    fn record(&mut self, name: HeaderName, value: &'b [u8]) -> Result<(), HttpError> {
        match name {
            HeaderName::Host => Self::set_once(&mut self.host, value, name),
            HeaderName::Origin => Self::set_once(&mut self.origin, value, name),
            HeaderName::LastEventId => Self::set_once(&mut self.last_event_id, value, name),
            HeaderName::Authorization => Self::set_once(&mut self.authorization, value, name),
            HeaderName::ContentType => Self::set_once(&mut self.content_type, value, name),
            HeaderName::SecWebSocketKey => Self::set_once(&mut self.sec_websocket_key, value, name),
            HeaderName::SecWebSocketVersion => {
                Self::set_once(&mut self.sec_websocket_version, value, name)
            }
            HeaderName::Expect => Self::set_once(&mut self.expect, value, name),
            HeaderName::AccessControlRequestMethod => {
                Self::set_once(&mut self.access_control_request_method, value, name)
            }
            HeaderName::AccessControlRequestHeaders => {
                self.access_control_request_headers.push(value, name)
            }
            HeaderName::ContentLength => {
                let n = parse_content_length(trim_ows(value))?;
                match self.content_length {
                    Some(prev) if prev != n => Err(HttpError::ConflictingFraming),
                    _ => {
                        self.content_length = Some(n);
                        Ok(())
                    }
                }
            }
            HeaderName::TransferEncoding => {
                // Only a lone `chunked` is understood; `gzip, chunked` and
                // friends would need decoders ringcast does not carry.
                let mut codings = value
                    .split(|&b| b == b',')
                    .map(trim_ows)
                    .filter(|c| !c.is_empty());
                match (codings.next(), codings.next()) {
                    (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") && !self.chunked => {
                        self.chunked = true;
                        Ok(())
                    }
                    _ => Err(HttpError::UnsupportedTransferEncoding),
                }
            }
            HeaderName::IfNoneMatch => self.if_none_match.push(value, name),
            HeaderName::Accept => self.accept.push(value, name),
            HeaderName::Connection => self.connection.push(value, name),
            HeaderName::Upgrade => self.upgrade.push(value, name),
            HeaderName::SecWebSocketProtocol => self.sec_websocket_protocol.push(value, name),
            HeaderName::SecWebSocketExtensions => self.sec_websocket_extensions.push(value, name),
        }
    }
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    if value.is_empty() {
        return Err(HttpError::BadContentLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(HttpError::BadContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::BadContentLength)
    })
}

/// A parsed request head. Everything borrows from the buffer it was parsed
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The request method.
    pub method: Method,
    /// The protocol version.
    pub version: Version,
    /// The request target exactly as sent.
    pub target: &'b str,
    /// The path part of the target, still percent-encoded (`*` for
    /// `OPTIONS *`). Always starts with `/` otherwise.
    pub path: &'b str,
    /// The query after `?`, still encoded; empty when there was none.
    pub query: &'b str,
    /// The headers ringcast acts on.
    pub headers: Headers<'b>,
}

impl<'b> RequestHead<'b> {
    /// The first value of query parameter `name`, percent- and `+`-decoded.
    /// `Ok(None)` when absent; an error when its encoding is invalid.
    pub fn query_param(
        &self,
        name: &str,
    ) -> Result<Option<std::borrow::Cow<'b, str>>, super::query::DecodeError> {
        super::query::find(self.query, name)
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.headers.connection.contains("close"),
            Version::Http10 => self.headers.connection.contains("keep-alive"),
        }
    }

    /// How the body that follows the head is delimited.
    pub fn body(&self) -> BodyFraming {
        if self.headers.chunked {
            BodyFraming::Chunked
        } else {
            match self.headers.content_length {
                None | Some(0) => BodyFraming::None,
                Some(n) => BodyFraming::Length(n),
            }
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Complete((head, used))` once the whole head is in `buf`, where
/// `used` counts the bytes up to and including the blank line; `Partial` when
/// more is needed; or the error to answer with. See the module docs for the
/// limits and their timing.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Status<(RequestHead<'b>, usize)>, HttpError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut raw[..max_headers]);
    // Never let httparse look past the limit: a head that does not end
    // inside the window is too large, whatever follows.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    match req.parse(window) {
        Ok(httparse::Status::Complete(used)) => {
            let head = build_head(&req)?;
            Ok(Status::Complete((head, used)))
        }
        Ok(httparse::Status::Partial) => {
            if let Some(method) = req.method {
                // The method token is complete once httparse reports it.
                Method::from_token(method).ok_or(unknown_method(method))?;
            }
            if window.len() >= limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(Status::Partial)
        }
        Err(e) => Err(map_parse_error(e, &req, window)),
    }
}

/// The error for a method token ringcast does not serve: `405` for a word
/// (`PUT`, `PATCH`, a lowercase `get`), `400` for a token no client would
/// send as a method (`0`, `G3T`): that is garbage, not a request.
fn unknown_method(token: &str) -> HttpError {
    if token.bytes().all(|b| b.is_ascii_alphabetic()) {
        HttpError::MethodNotAllowed
    } else {
        HttpError::BadRequestLine
    }
}

fn map_parse_error(e: httparse::Error, req: &httparse::Request<'_, '_>, buf: &[u8]) -> HttpError {
    // A version ringcast does not speak is named first: the h2c preface
    // (`PRI * HTTP/2.0`) is a `505`, whatever its method.
    let other_version = e == httparse::Error::Version;
    if let Some(method) = req.method.filter(|_| !other_version) {
        if Method::from_token(method).is_none() {
            return unknown_method(method);
        }
    }
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => {
            // `HTTP/2.0`, `HTTP/1.2` and the h2c preface are well-formed
            // versions ringcast does not speak; anything else is garbage.
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut parts = line.split(|&b| b == b' ');
            let (_method, _target, version) = (parts.next(), parts.next(), parts.next());
            let well_formed = parts.next().is_none()
                && matches!(version, Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
                    if major.is_ascii_digit() && minor.is_ascii_digit());
            if well_formed {
                HttpError::UnsupportedVersion
            } else {
                HttpError::BadRequestLine
            }
        }
        _ if req.version.is_some() => HttpError::BadHeader,
        _ => HttpError::BadRequestLine,
    }
}

fn build_head<'b>(req: &httparse::Request<'_, 'b>) -> Result<RequestHead<'b>, HttpError> {
    let token = req.method.ok_or(HttpError::BadRequestLine)?;
    let method = Method::from_token(token).ok_or(unknown_method(token))?;
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    let target = req.path.ok_or(HttpError::BadRequestLine)?;
    let (path, query) = split_target(method, target)?;

    let mut headers = Headers::default();
    for header in req.headers.iter() {
        if let Some(name) = HeaderName::lookup(header.name) {
            headers.record(name, header.value)?;
        }
    }
    if version == Version::Http11 && headers.host.is_none() {
        return Err(HttpError::MissingHost);
    }
    if headers.chunked {
        if version == Version::Http10 {
            return Err(HttpError::TransferEncodingInHttp10);
        }
        if headers.content_length.is_some() {
            return Err(HttpError::ConflictingFraming);
        }
    }
    Ok(RequestHead {
        method,
        version,
        target,
        path,
        query,
        headers,
    })
}

/// Splits a request target into (path, query), accepting origin-form,
/// absolute-form and, for `OPTIONS`, asterisk-form (RFC 9112 §3.2).
fn split_target(method: Method, target: &str) -> Result<(&str, &str), HttpError> {
    if target == "*" {
        return match method {
            Method::Options => Ok(("*", "")),
            _ => Err(HttpError::BadTarget),
        };
    }
    let origin_form = if target.starts_with('/') {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
            .ok_or(HttpError::BadTarget)?;
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            // `http://host?x` has an empty path, which means `/`.
            _ => return Ok(("/", rest.split_once('?').map_or("", |(_, q)| q))),
        }
    };
    let without_fragment = origin_form.split('#').next().unwrap_or_default();
    Ok(match without_fragment.split_once('?') {
        Some((path, query)) => (path, query),
        None => (without_fragment, ""),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Status<(RequestHead<'_>, usize)>, HttpError> {
        parse_request(buf, &Limits::default())
    }

    fn complete(buf: &[u8]) -> (RequestHead<'_>, usize) {
        match parse(buf) {
            Ok(Status::Complete(x)) => x,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    const UPGRADE: &[u8] = b"GET /ws/news?since=abc%3A1&x=a+b HTTP/1.1\r\n\
Host: example.com\r\n\
Upgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\
\r\n";

    #[test]
    fn parses_an_upgrade_request() {
        let (head, used) = complete(UPGRADE);
        assert_eq!(used, UPGRADE.len());
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.path, "/ws/news");
        assert_eq!(head.query, "since=abc%3A1&x=a+b");
        assert_eq!(head.query_param("since").unwrap().as_deref(), Some("abc:1"));
        assert_eq!(head.query_param("x").unwrap().as_deref(), Some("a b"));
        assert_eq!(head.query_param("nope").unwrap(), None);
        let h = &head.headers;
        assert_eq!(h.host, Some(&b"example.com"[..]));
        assert_eq!(h.origin, Some(&b"http://example.com"[..]));
        assert!(h.connection.contains("upgrade"));
        assert!(h.upgrade.contains("WebSocket"));
        let protocols: Vec<_> = h.sec_websocket_protocol.items().collect();
        assert_eq!(protocols, [&b"chat"[..], b"superchat"]);
        assert!(head.keep_alive());
        assert_eq!(head.body(), BodyFraming::None);
    }

    #[test]
    fn every_prefix_is_partial_and_every_split_is_identical() {
        let whole = complete(UPGRADE);
        for cut in 0..UPGRADE.len() {
            assert_eq!(
                parse(&UPGRADE[..cut]),
                Ok(Status::Partial),
                "prefix of {cut} bytes"
            );
        }
        // The parser is stateless, so "split across reads" means the caller
        // re-presents the grown buffer; the result must not depend on how
        // it grew.
        let mut grown = Vec::new();
        for &b in UPGRADE {
            grown.push(b);
        }
        assert_eq!(complete(&grown), whole);
    }

    #[test]
    fn leaves_pipelined_bytes_for_the_caller() {
        let mut buf = b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.extend_from_slice(b"helloGET /healthz HTTP/1.1\r\n");
        let (head, used) = complete(&buf);
        assert_eq!(used, head_len);
        assert_eq!(head.body(), BodyFraming::Length(5));
        assert_eq!(&buf[used..used + 5], b"hello");
    }

    #[test]
    fn head_over_the_limit_is_431_even_before_it_ends() {
        let limits = Limits {
            max_head_bytes: 64,
            ..Limits::default()
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        buf.resize(63, b'a');
        assert_eq!(parse_request(&buf, &limits), Ok(Status::Partial));
        buf.push(b'a');
        assert_eq!(parse_request(&buf, &limits), Err(HttpError::HeadTooLarge));
        assert_eq!(HttpError::HeadTooLarge.status().code(), 431);

        // A complete head longer than the limit is refused too.
        let mut long = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        long.resize(100, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&long, &limits), Err(HttpError::HeadTooLarge));
        // The default limit is 8 KiB.
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        big.resize(8 * 1024, b'a');
        assert_eq!(parse(&big), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(parse_request(buf, &limits), Err(HttpError::TooManyHeaders));
        assert_eq!(HttpError::TooManyHeaders.status().code(), 431);
    }

    #[test]
    fn methods_outside_the_served_set_are_405_as_soon_as_seen() {
        assert_eq!(parse(b"DELETE /pub/x"), Err(HttpError::MethodNotAllowed));
        assert_eq!(
            parse(b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HttpError::MethodNotAllowed)
        );
        // Methods are case-sensitive.
        assert_eq!(
            parse(b"get / HTTP/1.1\r\n\r\n"),
            Err(HttpError::MethodNotAllowed)
        );
        assert_eq!(HttpError::MethodNotAllowed.status().code(), 405);
        // A token that is not a word is not a method at all: garbage.
        for garbage in [
            &b"0 \x07\x01"[..],
            b"0 ",
            b"G3T / HTTP/1.1\r\n\r\n",
            b"!#$ /",
        ] {
            assert_eq!(
                parse(garbage),
                Err(HttpError::BadRequestLine),
                "{garbage:?}"
            );
        }
        for ok in ["GET", "HEAD", "POST", "OPTIONS"] {
            let req = format!("{ok} / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(complete(req.as_bytes()).0.method.as_str(), ok);
        }
    }

    #[test]
    fn unsupported_versions_are_505_and_garbage_is_400() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0"] {
            let req = format!("GET / {v}\r\nHost: x\r\n\r\n");
            assert_eq!(
                parse(req.as_bytes()),
                Err(HttpError::UnsupportedVersion),
                "{v}"
            );
        }
        // The h2c preface: its version is what ringcast does not speak.
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HttpError::UnsupportedVersion)
        );
        assert_eq!(
            parse(b"GET / FTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(
            parse(b"GET /a b HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequestLine)
        );
        assert_eq!(HttpError::UnsupportedVersion.status().code(), 505);
        let (head, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive());
    }

    #[test]
    fn malformed_headers_are_400() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n"),
            Err(HttpError::BadHeader)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost x\r\n\r\n"),
            Err(HttpError::BadHeader)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HttpError::MissingHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HttpError::DuplicateHeader(HeaderName::Host))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: a\r\nsec-websocket-key: b\r\n\r\n"),
            Err(HttpError::DuplicateHeader(HeaderName::SecWebSocketKey))
        );
        let many = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a\r\nConnection: b\r\nConnection: c\r\nConnection: d\r\nConnection: e\r\n\r\n";
        assert_eq!(
            parse(many),
            Err(HttpError::TooManyHeaderLines(HeaderName::Connection))
        );
    }

    #[test]
    fn request_targets() {
        let (head, _) = complete(b"GET http://example.com/ws/a?b=c HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.path, head.query), ("/ws/a", "b=c"));
        let (head, _) = complete(b"GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.path, head.query), ("/", ""));
        let (head, _) = complete(b"GET http://example.com?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.path, head.query), ("/", "q=1"));
        let (head, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head.path, "*");
        assert_eq!(
            parse(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HttpError::BadTarget)
        );
        assert_eq!(
            parse(b"GET ws/a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HttpError::BadTarget)
        );
        assert_eq!(
            parse(b"GET ftp://a/b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HttpError::BadTarget)
        );
        let (head, _) = complete(b"GET /a?x=1#frag HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.path, head.query), ("/a", "x=1"));
    }

    #[test]
    fn body_framing_and_smuggling_guards() {
        let (head, _) =
            complete(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.body(), BodyFraming::Chunked);
        let (head, _) = complete(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(head.body(), BodyFraming::Length(3));
        assert_eq!(
            parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(HttpError::ConflictingFraming)
        );
        assert_eq!(
            parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::ConflictingFraming)
        );
        for bad in ["-1", "+1", "1 2", "0x10", "", "18446744073709551616"] {
            let req = format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse(req.as_bytes()),
                Err(HttpError::BadContentLength),
                "{bad:?}"
            );
        }
        for bad in ["gzip", "gzip, chunked", "chunked, chunked", "identity"] {
            let req = format!("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {bad}\r\n\r\n");
            assert_eq!(
                parse(req.as_bytes()),
                Err(HttpError::UnsupportedTransferEncoding),
                "{bad:?}"
            );
        }
        assert_eq!(HttpError::UnsupportedTransferEncoding.status().code(), 501);
        assert_eq!(
            parse(b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::TransferEncodingInHttp10)
        );
    }

    #[test]
    fn exposes_the_headers_later_stages_need() {
        let req = b"GET /sse/a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: e1:42\r\nIf-None-Match: \"c1\"\r\nAccept: text/event-stream\r\nAuthorization: Bearer t\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n";
        let (head, _) = complete(req);
        let h = head.headers;
        assert_eq!(h.last_event_id, Some(&b"e1:42"[..]));
        assert_eq!(h.if_none_match.lines(), [&b"\"c1\""[..]]);
        assert!(h.accept.contains("text/event-stream"));
        assert_eq!(h.authorization, Some(&b"Bearer t"[..]));
        assert_eq!(h.content_type, Some(&b"text/plain"[..]));
        assert!(!head.keep_alive());
    }

    #[test]
    fn every_error_has_a_reason() {
        let all = [
            HttpError::HeadTooLarge,
            HttpError::TooManyHeaders,
            HttpError::BadRequestLine,
            HttpError::BadHeader,
            HttpError::BadTarget,
            HttpError::UnsupportedVersion,
            HttpError::MethodNotAllowed,
            HttpError::MissingHost,
            HttpError::DuplicateHeader(HeaderName::Host),
            HttpError::TooManyHeaderLines(HeaderName::Upgrade),
            HttpError::BadContentLength,
            HttpError::ConflictingFraming,
            HttpError::UnsupportedTransferEncoding,
            HttpError::TransferEncodingInHttp10,
        ];
        let mut reasons: Vec<_> = all.iter().map(|e| e.reason()).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len(), "reasons must be distinct");
    }
}
