//! A minimal HTTP/1.1 response-head reader for the client transports.

/// The parts of a response head the transports use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Bytes of the head including the blank line.
    pub len: usize,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Connection: close`.
    pub close: bool,
    /// `ETag` without quotes.
    pub etag: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Sec-WebSocket-Extensions`, several header lines joined with `, `
    /// (a list may be split over lines, RFC 9110 §5.3).
    pub extensions: Option<String>,
}

/// Largest head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parses a head at the start of `buf`: `Ok(None)` until the blank line has
/// arrived.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response head over 16 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = Head {
        status,
        len: end + 4,
        ..Head::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.content_length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                )
            }
            "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            "etag" => {
                let v = value.strip_prefix("W/").unwrap_or(value);
                head.etag = Some(v.trim_matches('"').to_string());
            }
            "content-type" => head.content_type = Some(value.to_string()),
            "sec-websocket-extensions" => match &mut head.extensions {
                Some(list) => {
                    list.push_str(", ");
                    list.push_str(value);
                }
                None => head.extensions = Some(value.to_string()),
            },
            _ => {}
        }
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        let buf =
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nETag: \"e-5\"\r\nConnection: close\r\n\r\nbody";
        let h = parse_head(buf).unwrap().unwrap();
        assert_eq!(&buf[h.len..], b"body");
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(12));
        assert_eq!(h.etag.as_deref(), Some("e-5"));
        assert!(h.close);
        let h =
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.status, 101);
        assert!(h.chunked);
        assert_eq!(h.extensions, None);
        let h = parse_head(
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\
              sec-websocket-extensions:  x-other \r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.extensions.as_deref(), Some("permessage-deflate, x-other"));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }
}
