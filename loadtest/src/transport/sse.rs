//! Server-Sent Events subscriber: one `GET` with
//! `Accept: text/event-stream` (and `Last-Event-ID` when resuming), a `200`,
//! then a stream of events — `id:`/`data:` lines ended by a blank line;
//! comment lines (`:` heartbeats) are skipped. Chunked bodies are
//! de-chunked with the codec's decoder.

use codec::http::{ChunkedDecoder, ChunkedEvent};

use super::http::parse_head;
use super::{delivery, Delivery, ProtoError, RequestCtx, Step};

/// Longest event accepted (a misbehaving server cannot grow it without bound).
const MAX_EVENT: usize = 1 << 20;

/// One SSE connection's client state.
#[derive(Debug)]
pub struct SseClient {
    want_ids: bool,
    head: Option<Vec<u8>>,
    chunked: Option<ChunkedDecoder>,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// `data:` lines of the current event, joined with `\n`.
    data: Vec<u8>,
    has_data: bool,
    id: Option<Box<str>>,
}

impl SseClient {
    /// A connection before its response.
    pub fn new(want_ids: bool) -> SseClient {
        SseClient {
            want_ids,
            head: Some(Vec::new()),
            chunked: None,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            id: None,
        }
    }

    /// The request.
    pub fn request(&self, ctx: &RequestCtx, resume: Option<&str>, out: &mut Vec<u8>) {
        let last = resume
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        out.extend_from_slice(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{}{last}\r\n",
                ctx.target, ctx.host, ctx.headers
            )
            .as_bytes(),
        );
    }

    /// Feeds received bytes.
    pub fn on_bytes(&mut self, input: &[u8], got: &mut Vec<Delivery>) -> Result<Step, ProtoError> {
        let mut ready = false;
        let mut owned = Vec::new();
        let mut body: &[u8] = input;
        if let Some(head) = self.head.as_mut() {
            head.extend_from_slice(input);
            let Some(h) = parse_head(head).map_err(|e| ProtoError(format!("bad response: {e}")))?
            else {
                return Ok(Step::Continue);
            };
            if h.status != 200 {
                return Err(ProtoError(format!("http_{}", h.status)));
            }
            if !h
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("text/event-stream"))
            {
                return Err(ProtoError("sse_not_event_stream".into()));
            }
            if h.chunked {
                self.chunked = Some(ChunkedDecoder::new());
            }
            let mut head = self.head.take().unwrap_or_default();
            head.drain(..h.len);
            owned = head;
            body = &owned;
            ready = true;
        }
        let ended = self.body(body, got)?;
        drop(owned);
        Ok(if ended {
            Step::Closed("sse_end_of_stream".into())
        } else if ready {
            Step::Ready
        } else {
            Step::Continue
        })
    }

    /// Returns `true` at the end of a chunked body.
    fn body(&mut self, mut input: &[u8], got: &mut Vec<Delivery>) -> Result<bool, ProtoError> {
        let Some(mut dec) = self.chunked.take() else {
            self.stream(input, got)?;
            return Ok(false);
        };
        let mut ended = false;
        while !input.is_empty() {
            let (used, ev) = dec
                .decode(input)
                .map_err(|e| ProtoError(format!("sse_chunked: {e}")))?;
            match ev {
                Some(ChunkedEvent::Data(d)) => self.stream(d, got)?,
                Some(ChunkedEvent::End) => {
                    ended = true;
                    break;
                }
                None => {}
            }
            input = &input[used..];
        }
        self.chunked = Some(dec);
        Ok(ended)
    }

    fn stream(&mut self, bytes: &[u8], got: &mut Vec<Delivery>) -> Result<(), ProtoError> {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_EVENT {
                    return Err(ProtoError("sse_line_too_long".into()));
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            self.field(&line, got)?;
            self.line = line;
            self.line.clear();
        }
        Ok(())
    }

    fn field(&mut self, line: &[u8], got: &mut Vec<Delivery>) -> Result<(), ProtoError> {
        if line.is_empty() {
            if self.has_data {
                let id = self.id.clone().filter(|_| self.want_ids);
                got.push(delivery(&self.data, id));
            }
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT {
                    return Err(ProtoError("sse_event_too_long".into()));
                }
            }
            b"id" if self.want_ids => {
                self.id = std::str::from_utf8(value).ok().map(Into::into);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_plain_and_chunked() {
        let events = b"retry:1000\n\n:\n\nid:e-1\ndata:rcl1:1:0:5;\n\nid: e-2\r\ndata: a\r\ndata: rcl1:1:1:6;\r\n\r\n";
        let plain = [
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"[..],
            events,
        ]
        .concat();
        let mut chunked =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for part in events.chunks(7) {
            chunked.extend(format!("{:x}\r\n", part.len()).bytes());
            chunked.extend(part);
            chunked.extend(b"\r\n");
        }
        for stream in [plain, chunked] {
            for split in 0..stream.len() {
                let mut c = SseClient::new(true);
                let mut got = Vec::new();
                let mut ready = 0;
                for part in [&stream[..split], &stream[split..]] {
                    if c.on_bytes(part, &mut got).unwrap() == Step::Ready {
                        ready += 1;
                    }
                }
                assert_eq!(ready, 1);
                assert_eq!(got.len(), 2, "split {split}");
                assert_eq!(got[0].id.as_deref(), Some("e-1"));
                assert_eq!(got[1].id.as_deref(), Some("e-2"));
                assert_eq!(got[1].marker.unwrap().nanos, 6);
            }
        }
    }

    #[test]
    fn refusals() {
        let mut c = SseClient::new(false);
        assert_eq!(
            c.on_bytes(b"HTTP/1.1 404 Not Found\r\n\r\n", &mut Vec::new()),
            Err(ProtoError("http_404".into()))
        );
        let mut c = SseClient::new(false);
        assert!(c
            .on_bytes(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
                &mut Vec::new()
            )
            .is_err());
        let mut c = SseClient::new(false);
        let mut req = Vec::new();
        c.request(
            &super::super::RequestCtx {
                host: "h".into(),
                target: "/sse/c".into(),
                resume_param: "since".into(),
                headers: "".into(),
                want_ids: true,
                deflate: false,
                poll_timeout_s: 1,
                poll_interval: std::time::Duration::from_secs(1),
            },
            Some("e-9"),
            &mut req,
        );
        assert!(String::from_utf8(req)
            .unwrap()
            .contains("Last-Event-ID: e-9\r\n"));
        let _ = &mut c;
    }
}
