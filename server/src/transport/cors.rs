//! Which web pages may use the node: the `Origin` check and CORS.
//!
//! A browser names the page behind every cross-origin request — and every
//! WebSocket handshake — in `Origin`. `--allowed-origins` lists the origins
//! whose pages may use the node, or is `*` (the default) for any:
//!
//! * no `Origin` (curl, servers, SDKs), or the node's own origin (the demo
//!   and `/client.js` served from here): served as is, no CORS headers;
//! * an allowed origin: served with `Access-Control-Allow-Origin` — `*`
//!   for `*`, the origin itself with `Access-Control-Allow-Credentials:
//!   true` and `Vary: Origin` for a listed one (the CORS rules forbid
//!   credentials with `*`);
//! * any other origin: `403` naming it, before the request does anything —
//!   a cross-origin `POST` with a "simple" content type is sent without a
//!   preflight, so leaving out the headers alone would still publish. The
//!   refusal itself carries `Access-Control-Allow-Origin: *`, so the
//!   page's script can read why; and the built-in client is public, so
//!   such a page can load it and be told.
//!
//! Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered
//! with the methods and headers the node reads. `ETag` and `Retry-After`
//! are exposed to scripts: polling clients resume from the one and back off
//! by the other.

use codec::http::{RequestHead, ResponseHead, StatusCode};

use crate::config::AllowedOrigins;

/// The request headers the node reads, for preflights.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID, If-None-Match";
/// The response headers scripts may read.
const EXPOSE_HEADERS: &str = "ETag, Retry-After";
/// How long a browser may cache a preflight's answer, in seconds
/// (Chromium's cap: a token-carrying client preflights each URL once).
const MAX_AGE: &str = "7200";

/// What the request's origin is granted; travels with the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Grant {
    /// No CORS headers: no `Origin`, or the node's own.
    #[default]
    Plain,
    /// Any origin (`--allowed-origins *`).
    Any,
    /// The listed origin at this index in `--allowed-origins`.
    Listed(u16),
}

/// An origin `--allowed-origins` does not allow: answered `403` with the
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed(pub String);

impl NotAllowed {
    /// The status it is answered with.
    pub const STATUS: StatusCode = StatusCode::FORBIDDEN;
}

/// Checks the request's `Origin` against `allowed`: the grant its answer
/// carries, or the refusal naming the origin.
pub fn check(head: &RequestHead<'_>, allowed: &AllowedOrigins) -> Result<Grant, NotAllowed> {
    let Some(origin) = head.headers.origin else {
        return Ok(Grant::Plain);
    };
    if is_same_origin(origin, head.headers.host) {
        return Ok(Grant::Plain);
    }
    match allowed {
        AllowedOrigins::Any => Ok(Grant::Any),
        AllowedOrigins::List(list) => list
            .iter()
            .position(|o| o.as_bytes().eq_ignore_ascii_case(origin))
            .map(|i| Grant::Listed(i as u16))
            .ok_or_else(|| {
                NotAllowed(format!(
                    "origin {} is not allowed (--allowed-origins)",
                    String::from_utf8_lossy(origin)
                ))
            }),
    }
}

/// `Origin` is `http://<Host>` or `https://<Host>`: a page of the node
/// itself (the demo), which needs no CORS.
fn is_same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    let Some(host) = host else { return false };
    let rest = if let Some(rest) = strip_prefix_ignore_case(origin, b"http://") {
        rest
    } else if let Some(rest) = strip_prefix_ignore_case(origin, b"https://") {
        rest
    } else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Adds the grant's headers to an answer.
pub fn headers<'a>(
    grant: Grant,
    allowed: &AllowedOrigins,
    mut head: ResponseHead<'a>,
) -> ResponseHead<'a> {
    match (grant, allowed) {
        (Grant::Plain, _) => return head,
        (Grant::Any, _) => head = head.header("Access-Control-Allow-Origin", "*"),
        (Grant::Listed(i), AllowedOrigins::List(list)) => {
            let origin = list.get(usize::from(i)).map_or("null", String::as_str);
            head = head
                .header("Access-Control-Allow-Origin", origin)
                .header("Access-Control-Allow-Credentials", "true")
                .header("Vary", "Origin");
        }
        // A grant made under a list is only ever read under it.
        (Grant::Listed(_), AllowedOrigins::Any) => {
            head = head.header("Access-Control-Allow-Origin", "*")
        }
    }
    head.header("Access-Control-Expose-Headers", EXPOSE_HEADERS)
}

/// Whether the request is a CORS preflight.
pub fn is_preflight(head: &RequestHead<'_>) -> bool {
    head.headers.origin.is_some() && head.headers.access_control_request_method.is_some()
}

/// The extra headers of a preflight's `204`.
pub fn preflight_headers(methods: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("Access-Control-Allow-Methods", methods),
        ("Access-Control-Allow-Headers", ALLOW_HEADERS),
        ("Access-Control-Max-Age", MAX_AGE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::http::{parse_request, Limits};
    use codec::Status;

    fn grant(request: &str, allowed: &str) -> Result<Grant, NotAllowed> {
        let allowed = AllowedOrigins::parse(allowed).unwrap();
        match parse_request(request.as_bytes(), &Limits::default()).unwrap() {
            Status::Complete((head, _)) => check(&head, &allowed),
            Status::Partial => panic!("incomplete request"),
        }
    }

    #[test]
    fn no_origin_and_the_nodes_own_origin_need_no_cors() {
        let list = "https://app.example.com";
        let plain = "GET /sse/a HTTP/1.1\r\nHost: node:8080\r\n\r\n";
        assert_eq!(grant(plain, list), Ok(Grant::Plain));
        let own = "GET /sse/a HTTP/1.1\r\nHost: node:8080\r\nOrigin: http://NODE:8080\r\n\r\n";
        assert_eq!(grant(own, list), Ok(Grant::Plain));
    }

    #[test]
    fn listed_origins_are_granted_and_others_refused_with_their_name() {
        let list = "https://app.example.com, http://localhost:3000";
        let req = |origin: &str| {
            format!("GET /sse/a HTTP/1.1\r\nHost: node:8080\r\nOrigin: {origin}\r\n\r\n")
        };
        assert_eq!(
            grant(&req("http://localhost:3000"), list),
            Ok(Grant::Listed(1))
        );
        assert_eq!(
            grant(&req("HTTPS://App.Example.com"), list),
            Ok(Grant::Listed(0))
        );
        let NotAllowed(reason) = grant(&req("https://evil.example"), list).unwrap_err();
        assert!(reason.contains("https://evil.example"), "{reason}");
        // A port is part of the origin.
        assert!(grant(&req("http://localhost:3001"), list).is_err());
        assert_eq!(grant(&req("https://evil.example"), "*"), Ok(Grant::Any));
    }

    #[test]
    fn origins_are_parsed_as_browsers_send_them() {
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert!(AllowedOrigins::parse("app.example.com").is_err());
        assert!(AllowedOrigins::parse("https://app.example.com/").is_err());
        assert!(AllowedOrigins::parse("https://a.example,*").is_err());
        assert!(AllowedOrigins::parse(" , ").is_err());
    }
}
