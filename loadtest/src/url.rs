//! Target URL templates.
//!
//! Every target is a URL with a `{ch}` placeholder for the channel name,
//! e.g. `ws://127.0.0.1:8080/ws/{ch}` or `http://10.0.0.5/sse/{ch}?x=1`, so
//! the same workload can be pointed at ringcast or at any other push server
//! whose paths look different. Hosts are IPv4 addresses (or `localhost`):
//! the harness opens sockets itself and does no DNS lookups, which would
//! measure the resolver, not the server. `wss://` and `https://` targets
//! speak TLS (see [`crate::tls`]); their host is also the TLS server name.

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
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `https://`: HTTP over TLS.
    Https,
}

impl Scheme {
    /// `wss://` or `https://`.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Wss | Scheme::Https)
    }

    /// `ws://` or `wss://`.
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    /// As written before `://`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Http => "http",
            Scheme::Wss => "wss",
            Scheme::Https => "https",
        }
    }

    /// The WebSocket scheme on the same footing (TLS or not).
    pub fn websocket(self) -> Scheme {
        if self.is_tls() {
            Scheme::Wss
        } else {
            Scheme::Ws
        }
    }

    /// The HTTP scheme on the same footing (TLS or not).
    pub fn http(self) -> Scheme {
        if self.is_tls() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
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
    /// Parses `SCHEME://HOST[:PORT]/PATH`, SCHEME one of `ws`, `http`,
    /// `wss`, `https`.
    pub fn parse(s: &str) -> Result<UrlTemplate, String> {
        let (scheme, rest) = [Scheme::Ws, Scheme::Http, Scheme::Wss, Scheme::Https]
            .into_iter()
            .find_map(|sc| {
                s.strip_prefix(sc.name())
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|r| (sc, r))
            })
            .ok_or_else(|| {
                format!("{s}: URL must start with ws://, http://, wss:// or https://")
            })?;
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
            None => (authority, if scheme.is_tls() { 443 } else { 80 }),
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

    /// The host as written, without the port: the TLS server name.
    pub fn hostname(&self) -> &str {
        self.host.rsplit_once(':').map_or(&self.host, |(h, _)| h)
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
        write!(f, "{}://{}{}", self.scheme.name(), self.host, self.path)
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
    fn tls_schemes() {
        let t = UrlTemplate::parse("wss://localhost/ws/{ch}").unwrap();
        assert_eq!((t.scheme, t.addr.port()), (Scheme::Wss, 443));
        assert!(t.scheme.is_tls() && t.scheme.is_websocket());
        assert_eq!(t.hostname(), "localhost");
        assert_eq!(t.to_string(), "wss://localhost/ws/{ch}");
        let t = UrlTemplate::parse("https://127.0.0.1:8443/sse/{ch}").unwrap();
        assert_eq!((t.scheme, t.addr.port()), (Scheme::Https, 8443));
        assert_eq!(
            (t.host.as_str(), t.hostname()),
            ("127.0.0.1:8443", "127.0.0.1")
        );
        assert_eq!(t.scheme.websocket(), Scheme::Wss);
        assert_eq!(Scheme::Ws.http(), Scheme::Http);
    }

    #[test]
    fn refuses_what_it_cannot_measure() {
        for bad in [
            "wss://x/ws",
            "wsss://127.0.0.1/ws",
            "ftp://x",
            "ws://example.com/ws",
            "ws://127.0.0.1:99999/",
            "http:///x",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
