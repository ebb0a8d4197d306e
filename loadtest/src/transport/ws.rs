//! WebSocket subscriber: the upgrade request, the `101`, then frames
//! through the codec's client-role decoder. Pings are answered with masked
//! pongs (servers close peers that stay silent), a close frame is echoed.

use bytes::BytesMut;
use codec::ws::{encode, CloseCode, DecoderConfig, Frame, FrameDecoder, OpCode};
use codec::Status;

use super::http::parse_head;
use super::{delivery, json_id, Delivery, ProtoError, RequestCtx, Step};

/// A fixed key: the server only checks its form, and the harness does not
/// verify `Sec-WebSocket-Accept` (it measures servers, not proxies).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One WebSocket connection's client state.
#[derive(Debug)]
pub struct WsClient {
    want_ids: bool,
    /// The response head while it arrives; `None` once upgraded.
    head: Option<Vec<u8>>,
    dec: FrameDecoder,
    /// Bytes of an incomplete frame header or control frame.
    spill: Vec<u8>,
    /// A fragmented message being joined.
    msg: Vec<u8>,
    mask: u32,
}

impl WsClient {
    /// A connection before its handshake.
    pub fn new(want_ids: bool) -> WsClient {
        WsClient {
            want_ids,
            head: Some(Vec::new()),
            dec: FrameDecoder::new(DecoderConfig::client()),
            spill: Vec::new(),
            msg: Vec::new(),
            mask: 0x9e37_79b9,
        }
    }

    /// The upgrade request.
    pub fn request(&self, ctx: &RequestCtx, resume: Option<&str>, out: &mut Vec<u8>) {
        let target = match resume {
            Some(id) => super::with_param(&ctx.target, &ctx.resume_param, id),
            None => ctx.target.to_string(),
        };
        out.extend_from_slice(
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
                ctx.host, ctx.headers
            )
            .as_bytes(),
        );
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks only need to vary, not to be secret, here.
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_le_bytes()
    }

    /// Feeds received bytes.
    pub fn on_bytes(
        &mut self,
        input: &mut [u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        let mut ready = false;
        let mut rest: &mut [u8] = input;
        if let Some(head) = self.head.as_mut() {
            head.extend_from_slice(rest);
            let parsed = parse_head(head).map_err(|e| ProtoError(format!("bad response: {e}")))?;
            let Some(h) = parsed else {
                return Ok(Step::Continue);
            };
            if h.status != 101 {
                return Err(ProtoError(format!("http_{}", h.status)));
            }
            let mut head = self.head.take().unwrap_or_default();
            head.drain(..h.len);
            ready = true;
            if head.is_empty() {
                return Ok(Step::Ready);
            }
            self.spill = head;
            rest = &mut [];
        }
        let step = self.frames(rest, out, got)?;
        Ok(match step {
            Step::Continue if ready => Step::Ready,
            s => s,
        })
    }

    fn frames(
        &mut self,
        input: &mut [u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        if self.spill.is_empty() {
            let (used, step) = self.decode_all(input, out, got)?;
            self.spill.extend_from_slice(&input[used..]);
            Ok(step)
        } else {
            let mut buf = std::mem::take(&mut self.spill);
            buf.extend_from_slice(input);
            let (used, step) = self.decode_all(&mut buf, out, got)?;
            buf.drain(..used);
            self.spill = buf;
            Ok(step)
        }
    }

    fn decode_all(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<(usize, Step), ProtoError> {
        let mut pos = 0;
        loop {
            let (n, frame) = match self.dec.decode(&mut buf[pos..]) {
                Ok(Status::Partial) => return Ok((pos, Step::Continue)),
                Ok(Status::Complete(x)) => x,
                Err(e) => return Err(ProtoError(format!("ws_protocol: {e}"))),
            };
            pos += n;
            match frame {
                Frame::Data {
                    payload,
                    first,
                    last,
                    ..
                } => {
                    if first && last {
                        got.push(self.deliver(payload));
                    } else {
                        self.msg.extend_from_slice(payload);
                        if last {
                            let m = std::mem::take(&mut self.msg);
                            got.push(self.deliver(&m));
                        }
                    }
                }
                Frame::Ping(p) => {
                    let p = p.to_vec();
                    let mask = self.next_mask();
                    let mut b = BytesMut::new();
                    encode::masked_frame(&mut b, OpCode::Pong, true, &p, mask);
                    out.extend_from_slice(&b);
                }
                Frame::Pong(_) => {}
                Frame::Close(c) => {
                    let code = c.map(|c| c.code);
                    let mask = self.next_mask();
                    let mut b = BytesMut::new();
                    let payload = code.map(|c| c.0.to_be_bytes().to_vec()).unwrap_or_default();
                    encode::masked_frame(&mut b, OpCode::Close, true, &payload, mask);
                    out.extend_from_slice(&b);
                    let code = code.unwrap_or(CloseCode::NO_STATUS).0;
                    return Ok((pos, Step::Closed(format!("ws_close_{code}"))));
                }
            }
        }
    }

    fn deliver(&self, payload: &[u8]) -> Delivery {
        let id = if self.want_ids {
            json_id(payload)
        } else {
            None
        };
        delivery(payload, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn ctx() -> RequestCtx {
        RequestCtx {
            host: Arc::from("h:1"),
            target: Arc::from("/ws/c?format=json"),
            resume_param: Arc::from("since"),
            headers: Arc::from("Authorization: Bearer t\r\n"),
            want_ids: true,
            poll_timeout_s: 30,
            poll_interval: Duration::from_secs(1),
        }
    }

    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | op, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn handshake_then_frames_split_anywhere() {
        let mut req = Vec::new();
        WsClient::new(true).request(&ctx(), Some("e-3"), &mut req);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /ws/c?format=json&since=e-3 HTTP/1.1\r\nHost: h:1\r\n"));
        // --header lines go into the handshake, before the blank line.
        assert!(
            req.ends_with("Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t\r\n\r\n"),
            "{req}"
        );

        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend(frame(1, br#"{"id":"e-4","data":"rcl1:1:0:5;"}"#));
        stream.extend(frame(9, b"pi"));
        stream.extend([0x01, 3, b'r', b'c', b'l']); // fragmented text
        stream.extend([0x80, 8, b'1', b':', b'1', b':', b'1', b':', b'6', b';']);
        for split in 0..stream.len() {
            let mut c = WsClient::new(true);
            let (mut out, mut got, mut ready) = (Vec::new(), Vec::new(), 0);
            for part in [&stream[..split], &stream[split..]] {
                let mut p = part.to_vec();
                if c.on_bytes(&mut p, &mut out, &mut got).unwrap() == Step::Ready {
                    ready += 1;
                }
            }
            assert_eq!(ready, 1, "split {split}");
            assert_eq!(got.len(), 2, "split {split}");
            assert_eq!(got[0].id.as_deref(), Some("e-4"));
            assert_eq!(got[0].marker.unwrap().nanos, 5);
            assert_eq!(got[1].marker.unwrap().seq, 1);
            // A masked pong carrying "pi".
            assert_eq!(out.len(), 2 + 4 + 2);
            assert_eq!(out[0], 0x8A);
            assert_eq!(out[1], 0x82);
        }
    }

    #[test]
    fn refused_upgrade_and_close() {
        let mut c = WsClient::new(false);
        let mut b = b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec();
        let e = c.on_bytes(&mut b, &mut Vec::new(), &mut Vec::new());
        assert_eq!(e, Err(ProtoError("http_503".into())));
        let mut c = WsClient::new(false);
        let mut b = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        b.extend(frame(8, &[0x03, 0xE9]));
        let mut out = Vec::new();
        let s = c.on_bytes(&mut b, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(s, Step::Closed("ws_close_1001".into()));
        assert_eq!(out[0], 0x88);
    }
}
