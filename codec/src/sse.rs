//! Server-Sent Events encoding (WHATWG HTML §9.2, "event stream").
//!
//! An [`Event`] becomes `id:`, `event:`, `retry:` and `data:` lines followed
//! by a blank line. Data is split into one `data:` line per line of the
//! payload, on `\n`, `\r\n` and `\r` alike, because the browser's parser
//! treats all three as line ends and joins `data:` lines with `\n`.
//!
//! An `id` or `event` containing a line break would end the field early and
//! let the rest be read as another field, so such values are refused
//! ([`SseError`]) and nothing is written. An `id` containing NUL is refused
//! too: browsers ignore such ids, which would silently break resumption.
//!
//! A value that starts with a space gets one extra space, because the parser
//! strips exactly one after the colon.

use bytes::{BufMut, Bytes, BytesMut};

/// An event that cannot be encoded as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// The id contains CR, LF or NUL.
    InvalidId,
    /// The event name contains CR or LF.
    InvalidEventName,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SseError::InvalidId => "SSE id must not contain CR, LF or NUL",
            SseError::InvalidEventName => "SSE event name must not contain CR or LF",
        })
    }
}

impl std::error::Error for SseError {}

/// One event of an event stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event<'a> {
    /// Becomes the client's `lastEventId` and its `Last-Event-ID` on reconnect.
    pub id: Option<&'a str>,
    /// The event type; `message` when absent.
    pub event: Option<&'a str>,
    /// The payload; may span several lines.
    pub data: &'a str,
    /// Reconnection delay hint in milliseconds.
    pub retry: Option<u32>,
}

impl Event<'_> {
    /// An event with only data.
    pub fn data(data: &str) -> Event<'_> {
        Event {
            data,
            ..Event::default()
        }
    }

    /// Appends the encoded event to `dst`, or refuses it and leaves `dst`
    /// unchanged.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), SseError> {
        if let Some(id) = self.id {
            if id.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(SseError::InvalidId);
            }
        }
        if let Some(event) = self.event {
            if event.bytes().any(|b| matches!(b, b'\r' | b'\n')) {
                return Err(SseError::InvalidEventName);
            }
        }
        dst.reserve(self.data.len() + 32);
        if let Some(id) = self.id {
            field(dst, b"id", id);
        }
        if let Some(event) = self.event {
            field(dst, b"event", event);
        }
        if let Some(retry) = self.retry {
            field(dst, b"retry", itoa::Buffer::new().format(retry));
        }
        for line in lines(self.data) {
            field(dst, b"data", line);
        }
        dst.put_u8(b'\n');
        Ok(())
    }

    /// Encodes the event once into shareable bytes, for every stream of a
    /// channel.
    pub fn to_bytes(&self) -> Result<Bytes, SseError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

fn field(dst: &mut BytesMut, name: &[u8], value: &str) {
    dst.put_slice(name);
    dst.put_u8(b':');
    if value.starts_with(' ') {
        dst.put_u8(b' ');
    }
    dst.put_slice(value.as_bytes());
    dst.put_u8(b'\n');
}

/// Splits on `\r\n`, `\n` and `\r`. An empty string is one empty line, so an
/// event with empty data still carries a `data:` line and is dispatched.
fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// Appends a comment: one `:` line per line of `text`. Comments keep idle
/// streams alive through proxies and are ignored by clients. An empty text
/// gives the shortest heartbeat, `:\n`.
pub fn comment(dst: &mut BytesMut, text: &str) {
    for line in lines(text) {
        dst.put_u8(b':');
        if !line.is_empty() {
            dst.put_u8(b' ');
            dst.put_slice(line.as_bytes());
        }
        dst.put_u8(b'\n');
    }
}

/// The heartbeat ringcast sends on idle streams.
pub const HEARTBEAT: &[u8] = b":\n";

/// Appends a lone `retry:` field (followed by a blank line so it takes effect
/// immediately, without waiting for an event).
pub fn retry(dst: &mut BytesMut, millis: u32) {
    field(dst, b"retry", itoa::Buffer::new().format(millis));
    dst.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ev: Event<'_>) -> String {
        let mut out = BytesMut::new();
        ev.encode(&mut out).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn all_fields() {
        let ev = Event {
            id: Some("e1:7"),
            event: Some("news"),
            data: "hello",
            retry: Some(3000),
        };
        assert_eq!(enc(ev), "id:e1:7\nevent:news\nretry:3000\ndata:hello\n\n");
    }

    #[test]
    fn multi_line_data_splits_on_every_line_ending() {
        assert_eq!(
            enc(Event::data("a\nb\r\nc\rd")),
            "data:a\ndata:b\ndata:c\ndata:d\n\n"
        );
        assert_eq!(enc(Event::data("a\n")), "data:a\ndata:\n\n");
        assert_eq!(enc(Event::data("\r\n\r\n")), "data:\ndata:\ndata:\n\n");
        assert_eq!(enc(Event::data("")), "data:\n\n");
    }

    #[test]
    fn leading_space_survives_the_parser() {
        assert_eq!(enc(Event::data(" x")), "data:  x\n\n");
    }

    #[test]
    fn ids_and_names_with_line_breaks_are_refused() {
        let mut out = BytesMut::from(&b"before"[..]);
        for id in ["a\nb", "a\rb", "a\0b"] {
            let ev = Event {
                id: Some(id),
                ..Event::data("x")
            };
            assert_eq!(ev.encode(&mut out), Err(SseError::InvalidId));
        }
        for name in ["a\nb", "a\r"] {
            let ev = Event {
                event: Some(name),
                ..Event::data("x")
            };
            assert_eq!(ev.encode(&mut out), Err(SseError::InvalidEventName));
        }
        assert_eq!(&out[..], b"before");
    }

    #[test]
    fn comments_and_retry() {
        let mut out = BytesMut::new();
        comment(&mut out, "");
        comment(&mut out, "keep\nalive");
        retry(&mut out, 5000);
        assert_eq!(&out[..], b":\n: keep\n: alive\nretry:5000\n\n");
        assert_eq!(HEARTBEAT, b":\n");
    }
}
