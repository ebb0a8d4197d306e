//! Target URL templates.
//!
//! Every target is a URL with a `{ch}` placeholder for the channel name,
//! e.g. `ws://127.0.0.1:8080/ws/{ch}` or `http://10.0.0.5/sse/{ch}?x=1`, so
//! the same workload can be pointed at ringcast or at any other push server
//! whose paths look different. Only plain `ws://` and `http://` to an IPv4
//! address (or `localhost`) are supported: the harness opens sockets itself
//! and does no DNS or TLS, which would measure the harness, not the server.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The placeholder replaced by the channel name.
pub const CHANNEL: &str = "{ch}";

/// URL scheme of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`
    Ws,
    /// `http://`
    Http,
}

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// Scheme as given.
    pub scheme: Scheme,
    /// Address to connect to.
    pub addr: SocketAddrV4,
    /// `host[:port]` as written, for the `Host` header.
    pub host: String,
    /// Path and query, with `{ch}` placeholders.
    pub path: String,
}

impl UrlTemplate {
    /// Parses `ws://HOST[:PORT]/PATH` or `http://HOST[:PORT]/PATH`.
    pub fn parse(s: &str) -> Result<UrlTemplate, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (Scheme::Ws, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if s.starts_with("wss://") || s.starts_with("https://") {
            return Err(format!(
                "{s}: TLS targets are not supported (the harness measures the push server, put \
                 TLS termination in front of it separately)"
            ));
        } else {
            return Err(format!("{s}: URL must start with ws:// or http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{s}: URL has no host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{s}: invalid port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>().map_err(|_| {
                format!(
                    "{s}: host must be an IPv4 address or localhost (no DNS lookups), got {host:?}"
                )
            })?
        };
        if path.contains(char::is_whitespace) {
            return Err(format!("{s}: path contains whitespace"));
        }
        Ok(UrlTemplate {
            scheme,
            addr: SocketAddrV4::new(ip, port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// Whether the template names a channel.
    pub fn has_channel(&self) -> bool {
        self.path.contains(CHANNEL)
    }

    /// The request target for `channel`, with extra query parameters
    /// appended (values must already be URL-safe).
    pub fn target(&self, channel: &str, extra: &[(&str, &str)]) -> String {
        let mut t = self.path.replace(CHANNEL, channel);
        for (k, v) in extra {
            t.push(if t.contains('?') { '&' } else { '?' });
            t.push_str(k);
            t.push('=');
            t.push_str(v);
        }
        t
    }
}

impl std::fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Http => "http",
        };
        write!(f, "{s}://{}{}", self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let t = UrlTemplate::parse("ws://127.0.0.1:8080/ws/{ch}?format=json").unwrap();
        assert_eq!(t.scheme, Scheme::Ws);
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(
            t.target("a", &[("since", "1-2")]),
            "/ws/a?format=json&since=1-2"
        );
        let t = UrlTemplate::parse("http://localhost/pub/{ch}").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.target("x", &[]), "/pub/x");
        assert_eq!(t.target("x", &[("a", "b")]), "/pub/x?a=b");
        assert_eq!(t.to_string(), "http://localhost/pub/{ch}");
    }

    #[test]
    fn refuses_what_it_cannot_measure() {
        for bad in [
            "wss://x/ws",
            "ftp://x",
            "ws://example.com/ws",
            "ws://127.0.0.1:99999/",
            "http:///x",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
