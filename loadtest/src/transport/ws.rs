//! WebSocket subscriber: the upgrade request, the `101`, then frames
//! through the codec's client-role decoder. Pings are answered with masked
//! pongs (servers close peers that stay silent), a close frame is echoed.
//!
//! # permessage-deflate (RFC 7692)
//! With `--deflate` the request offers `permessage-deflate;
//! client_max_window_bits`, as browsers do. A server that declines answers
//! without the extension and the connection goes on uncompressed (the
//! worker counts connections of either kind); one that accepts has the
//! decoder allow RSV1, and every compressed message is inflated before its
//! marker and id are looked for. Where the inflate state lives is chosen
//! for a million mostly idle connections:
//! * a server that compresses each message on its own
//!   (`server_no_context_takeover`, which ringcast always answers) leaves
//!   no inflate state between messages, so one inflater per worker
//!   ([`Shared`]) serves all its connections. It cannot hold one
//!   connection's half-inflated message while another's arrives, so a
//!   message whose frames span several reads has its compressed bytes
//!   joined on its connection and is inflated when its last piece comes;
//! * a server that keeps its context needs an inflater per connection
//!   (a 32 KiB window and tables), boxed in the connection's [`Stage`],
//!   which inflates pieces as they come.
//!
//! Without `--deflate` an idle connection costs what it did before: the
//! stage takes the room of the `Option<Vec<u8>>` the response head needed
//! anyway (a test checks).

use bytes::BytesMut;
use codec::ws::deflate::{InflateError, Inflater, NAME};
use codec::ws::{
    encode, CloseCode, DataKind, DecoderConfig, Frame, FrameDecoder, OpCode, Utf8Validator,
};
use codec::Status;

use super::http::parse_head;
use super::{delivery, json_id, Delivery, ProtoError, RequestCtx, Step};

/// A fixed key: the server only checks its form, and the harness does not
/// verify `Sec-WebSocket-Accept` (it measures servers, not proxies).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// RSV1 in [`DecoderConfig::extension_rsv`]: permessage-deflate's bit.
const RSV1: u8 = 0x4;

/// One WebSocket connection's client state.
#[derive(Debug)]
pub struct WsClient {
    want_ids: bool,
    /// The handshake, then the open connection and its inflate state.
    stage: Stage,
    dec: FrameDecoder,
    /// Bytes of an incomplete frame header or control frame.
    spill: Vec<u8>,
    /// A fragmented message being joined: its payload, or with
    /// permessage-deflate its compressed bytes (shared inflater) or what
    /// is inflated of it so far (own inflater).
    msg: Vec<u8>,
    mask: u32,
}

/// Where a connection is. One enum rather than a head and a separate
/// `Option<Box<Inflater>>`: the head is gone once the inflater may exist,
/// so both fit in the head's room and a connection without its own
/// inflater is no larger than before permessage-deflate.
#[derive(Debug)]
enum Stage {
    /// The response head while it arrives.
    Head(Vec<u8>),
    /// Upgraded. If permessage-deflate was agreed (the decoder allows
    /// RSV1), the server compresses each message on its own and the
    /// worker's [`Shared`] inflater serves.
    Open,
    /// Upgraded with permessage-deflate, and the server keeps its
    /// compression context from message to message: so does this inflater.
    Inflating(Box<Inflater>),
}

/// What one worker's WebSocket connections share. No connection's state
/// stays in it from one call to the next: the inflater is reset after
/// every message, the buffer is scratch.
#[derive(Debug, Default)]
pub struct Shared {
    /// For servers that compress each message on its own; made at the
    /// first such message, so a run without `--deflate` has none.
    inflater: Option<Inflater>,
    /// A whole message, inflated.
    inflated: Vec<u8>,
}

/// What the server's `Sec-WebSocket-Extensions` answer agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Agreed {
    /// The server compresses each message on its own.
    server_no_context_takeover: bool,
}

impl WsClient {
    /// A connection before its handshake.
    pub fn new(want_ids: bool) -> WsClient {
        WsClient {
            want_ids,
            stage: Stage::Head(Vec::new()),
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
        // The offer browsers make: any window the server likes, ours up to
        // the server (the harness never sends a data message).
        let offer = if ctx.deflate {
            format!("Sec-WebSocket-Extensions: {NAME}; client_max_window_bits\r\n")
        } else {
            String::new()
        };
        out.extend_from_slice(
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}{}\r\n",
                ctx.host, ctx.headers
            )
            .as_bytes(),
        );
    }

    /// Whether the handshake agreed on permessage-deflate.
    pub fn deflate_agreed(&self) -> bool {
        self.dec.config().extension_rsv & RSV1 != 0
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
        ctx: &RequestCtx,
        shared: &mut Shared,
        input: &mut [u8],
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        let mut ready = false;
        let mut rest: &mut [u8] = input;
        if let Stage::Head(head) = &mut self.stage {
            head.extend_from_slice(rest);
            let parsed = parse_head(head).map_err(|e| ProtoError(format!("bad response: {e}")))?;
            let Some(h) = parsed else {
                return Ok(Step::Continue);
            };
            if h.status != 101 {
                return Err(ProtoError(format!("http_{}", h.status)));
            }
            let agreed = deflate_answer(h.extensions.as_deref(), ctx.deflate)?;
            let mut head = std::mem::take(head);
            head.drain(..h.len);
            self.stage = Stage::Open;
            if let Some(a) = agreed {
                self.dec = FrameDecoder::new(DecoderConfig {
                    extension_rsv: RSV1,
                    ..DecoderConfig::client()
                });
                if !a.server_no_context_takeover {
                    self.stage = Stage::Inflating(Box::default());
                }
            }
            ready = true;
            if head.is_empty() {
                return Ok(Step::Ready);
            }
            self.spill = head;
            rest = &mut [];
        }
        let step = self.frames(rest, shared, out, got)?;
        Ok(match step {
            Step::Continue if ready => Step::Ready,
            s => s,
        })
    }

    fn frames(
        &mut self,
        input: &mut [u8],
        shared: &mut Shared,
        out: &mut Vec<u8>,
        got: &mut Vec<Delivery>,
    ) -> Result<Step, ProtoError> {
        if self.spill.is_empty() {
            let (used, step) = self.decode_all(input, shared, out, got)?;
            self.spill.extend_from_slice(&input[used..]);
            Ok(step)
        } else {
            let mut buf = std::mem::take(&mut self.spill);
            buf.extend_from_slice(input);
            let (used, step) = self.decode_all(&mut buf, shared, out, got)?;
            buf.drain(..used);
            self.spill = buf;
            Ok(step)
        }
    }

    fn decode_all(
        &mut self,
        buf: &mut [u8],
        shared: &mut Shared,
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
                    kind,
                    payload,
                    first,
                    last,
                    compressed: true,
                } => self.inflate(kind, payload, first, last, shared, got)?,
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

    /// One piece of a compressed message; the message is delivered with
    /// its last piece. See the module docs for which inflater serves.
    fn inflate(
        &mut self,
        kind: DataKind,
        piece: &[u8],
        first: bool,
        last: bool,
        shared: &mut Shared,
        got: &mut Vec<Delivery>,
    ) -> Result<(), ProtoError> {
        // Inflated, a message may be as large as the decoder lets a frame
        // announce: a small frame cannot expand without bound.
        let limit = usize::try_from(self.dec.config().max_message_size).unwrap_or(usize::MAX);
        match &mut self.stage {
            Stage::Inflating(inflater) if !(first && last) => {
                inflater
                    .inflate(piece, last, limit, &mut self.msg)
                    .map_err(inflate_error)?;
                if last {
                    let m = std::mem::take(&mut self.msg);
                    self.deliver_inflated(kind, &m, got)?;
                }
                return Ok(());
            }
            Stage::Inflating(inflater) => {
                shared.inflated.clear();
                inflater
                    .inflate(piece, true, limit, &mut shared.inflated)
                    .map_err(inflate_error)?;
            }
            Stage::Head(_) | Stage::Open => {
                if !last {
                    self.msg.extend_from_slice(piece);
                    return Ok(());
                }
                let inflater = shared.inflater.get_or_insert_with(Inflater::new);
                shared.inflated.clear();
                let r = if first {
                    inflater.inflate(piece, true, limit, &mut shared.inflated)
                } else {
                    self.msg.extend_from_slice(piece);
                    let m = std::mem::take(&mut self.msg);
                    inflater.inflate(&m, true, limit, &mut shared.inflated)
                };
                // Whatever became of it, the next message — of any
                // connection — starts without context.
                inflater.reset();
                r.map_err(inflate_error)?;
            }
        }
        self.deliver_inflated(kind, &shared.inflated, got)
    }

    /// Delivers an inflated message; a text message's UTF-8 is checked
    /// here, as the decoder does for uncompressed ones.
    fn deliver_inflated(
        &self,
        kind: DataKind,
        payload: &[u8],
        got: &mut Vec<Delivery>,
    ) -> Result<(), ProtoError> {
        if kind == DataKind::Text {
            let mut utf8 = Utf8Validator::new();
            utf8.feed(payload)
                .and_then(|()| utf8.finish())
                .map_err(|_| ProtoError("ws_deflate_invalid_utf8".into()))?;
        }
        let mut d = self.deliver(payload);
        d.compressed = true;
        got.push(d);
        Ok(())
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

fn inflate_error(e: InflateError) -> ProtoError {
    ProtoError(
        match e {
            InflateError::TooBig => "ws_deflate_too_big",
            InflateError::Corrupt => "ws_deflate_corrupt",
        }
        .into(),
    )
}

/// Reads the server's `Sec-WebSocket-Extensions` answer (RFC 7692 §5,
/// §7.1). `Ok(None)`: no extension, the connection goes on uncompressed.
/// A server may answer only what was offered, once, with parameters an
/// answer may carry; anything else fails the connection (RFC 6455 §9.1),
/// as the frames that follow could not be read.
fn deflate_answer(header: Option<&str>, offered: bool) -> Result<Option<Agreed>, ProtoError> {
    let bad = || ProtoError("ws_deflate_bad_answer".into());
    let mut agreed = None;
    let items = header
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty());
    for item in items {
        let mut params = item.split(';').map(str::trim);
        let name = params.next().unwrap_or_default();
        if !offered || !name.eq_ignore_ascii_case(NAME) {
            return Err(ProtoError("ws_unrequested_extension".into()));
        }
        if agreed.is_some() {
            return Err(bad());
        }
        let mut a = Agreed {
            server_no_context_takeover: false,
        };
        let mut seen = [false; 4];
        for param in params {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                None => (param, None),
            };
            // `client_*` concern what the client sends: only control
            // frames here, never compressed.
            let (i, valid) = match (key.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) => {
                    a.server_no_context_takeover = true;
                    (0, true)
                }
                ("client_no_context_takeover", None) => (1, true),
                // Any window up to 15 bits inflates with ours.
                ("server_max_window_bits", Some(v)) => (2, window_bits(v)),
                // Allowed in the answer because it was offered.
                ("client_max_window_bits", Some(v)) => (3, window_bits(v)),
                _ => return Err(bad()),
            };
            if !valid || std::mem::replace(&mut seen[i], true) {
                return Err(bad());
            }
        }
        agreed = Some(a);
    }
    Ok(agreed)
}

/// A quoted parameter value's inside (RFC 7692 §7.1).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// A window size: 8 to 15, digits only, no leading zero.
fn window_bits(v: &str) -> bool {
    !v.starts_with('0')
        && v.bytes().all(|b| b.is_ascii_digit())
        && matches!(v.parse(), Ok(8u8..=15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker::Marker;
    use crate::payload::chat;
    use codec::ws::deflate::compress;
    use std::sync::Arc;
    use std::time::Duration;

    fn ctx() -> RequestCtx {
        RequestCtx {
            host: Arc::from("h:1"),
            target: Arc::from("/ws/c?format=json"),
            resume_param: Arc::from("since"),
            headers: Arc::from("Authorization: Bearer t\r\n"),
            want_ids: true,
            deflate: false,
            poll_timeout_s: 30,
            poll_interval: Duration::from_secs(1),
        }
    }

    fn deflate_ctx() -> RequestCtx {
        RequestCtx {
            deflate: true,
            ..ctx()
        }
    }

    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | op, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    /// A server frame of any length: `rsv1` marks the first frame of a
    /// compressed message.
    fn server_frame(op: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode::frame(&mut b, op, fin, payload);
        if rsv1 {
            b[0] |= 0x40;
        }
        b.to_vec()
    }

    /// Feeds `parts` in turn; returns the deliveries, the bytes to send,
    /// and how many times the connection became ready.
    fn feed(
        c: &mut WsClient,
        ctx: &RequestCtx,
        shared: &mut Shared,
        parts: &[&[u8]],
    ) -> Result<(Vec<Delivery>, Vec<u8>, usize), ProtoError> {
        let (mut got, mut out, mut ready) = (Vec::new(), Vec::new(), 0);
        for part in parts {
            let mut p = part.to_vec();
            if c.on_bytes(ctx, shared, &mut p, &mut out, &mut got)? == Step::Ready {
                ready += 1;
            }
        }
        Ok((got, out, ready))
    }

    fn marked(seq: u64) -> Vec<u8> {
        let mut p = Vec::new();
        Marker {
            run: 1,
            seq,
            nanos: 5,
        }
        .encode(0, &mut p);
        p
    }

    fn envelope(id: &str, data: &[u8]) -> Vec<u8> {
        let data = String::from_utf8(data.to_vec()).unwrap();
        serde_json::json!({"type": "message", "ch": "c", "id": id, "data": data})
            .to_string()
            .into_bytes()
    }

    const AGREED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
        client_no_context_takeover\r\n\r\n";

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
        assert!(!req.contains("Sec-WebSocket-Extensions"));

        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend(frame(1, br#"{"id":"e-4","data":"rcl1:1:0:5;"}"#));
        stream.extend(frame(9, b"pi"));
        stream.extend([0x01, 3, b'r', b'c', b'l']); // fragmented text
        stream.extend([0x80, 8, b'1', b':', b'1', b':', b'1', b':', b'6', b';']);
        for split in 0..stream.len() {
            let mut c = WsClient::new(true);
            let parts = [&stream[..split], &stream[split..]];
            let (got, out, ready) = feed(&mut c, &ctx(), &mut Shared::default(), &parts).unwrap();
            assert_eq!(ready, 1, "split {split}");
            assert_eq!(got.len(), 2, "split {split}");
            assert_eq!(got[0].id.as_deref(), Some("e-4"));
            assert_eq!(got[0].marker.unwrap().nanos, 5);
            assert_eq!(got[1].marker.unwrap().seq, 1);
            assert_eq!(got[1].bytes, 11);
            assert!(!got[0].compressed && !got[1].compressed);
            // A masked pong carrying "pi".
            assert_eq!(out.len(), 2 + 4 + 2);
            assert_eq!(out[0], 0x8A);
            assert_eq!(out[1], 0x82);
            assert!(!c.deflate_agreed());
        }
    }

    #[test]
    fn refused_upgrade_and_close() {
        let mut c = WsClient::new(false);
        let e = feed(
            &mut c,
            &ctx(),
            &mut Shared::default(),
            &[b"HTTP/1.1 503 Service Unavailable\r\n\r\n"],
        );
        assert_eq!(e, Err(ProtoError("http_503".into())));
        let mut c = WsClient::new(false);
        let mut b = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        b.extend(frame(8, &[0x03, 0xE9]));
        let mut out = Vec::new();
        let s = c
            .on_bytes(
                &ctx(),
                &mut Shared::default(),
                &mut b,
                &mut out,
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(s, Step::Closed("ws_close_1001".into()));
        assert_eq!(out[0], 0x88);
    }

    /// A recorded compressed stream — what a permessage-deflate server
    /// sends: whole compressed messages, an uncompressed one between them,
    /// a compressed chat message in three frames with a ping among them,
    /// a compressed binary message — split at every position, and fed
    /// byte by byte, inflates to the messages and their markers. One
    /// shared inflater serves every connection of the test, as it serves
    /// a worker's.
    #[test]
    fn a_compressed_stream_split_anywhere_inflates_to_the_deliveries() {
        let mut req = Vec::new();
        WsClient::new(true).request(&deflate_ctx(), None, &mut req);
        let req = String::from_utf8(req).unwrap();
        assert!(
            req.contains(
                "Sec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
                 Authorization: Bearer t\r\n\r\n"
            ),
            "{req}"
        );

        let first = envelope("e-4", &marked(0));
        let second = envelope("e-5", &marked(1));
        let mut talk = Vec::new();
        chat(
            &Marker {
                run: 1,
                seq: 2,
                nanos: 5,
            },
            9,
            &mut talk,
        );
        let third = envelope("e-6", &talk);
        let fourth = marked(3);
        let mut stream = AGREED.to_vec();
        stream.extend(server_frame(
            OpCode::Text,
            true,
            true,
            &compress(&first, 15, 6),
        ));
        stream.extend(server_frame(OpCode::Text, true, false, &second));
        stream.extend(frame(9, b"pi"));
        let c3 = compress(&third, 15, 6);
        assert!(c3.len() > 200 && c3.len() < third.len());
        let (a, b) = (c3.len() / 3, 2 * c3.len() / 3);
        stream.extend(server_frame(OpCode::Text, false, true, &c3[..a]));
        stream.extend(frame(9, b"pi"));
        stream.extend(server_frame(OpCode::Continuation, false, false, &c3[a..b]));
        stream.extend(server_frame(OpCode::Continuation, true, false, &c3[b..]));
        stream.extend(server_frame(
            OpCode::Binary,
            true,
            true,
            &compress(&fourth, 15, 6),
        ));

        let check = |got: &[Delivery], out: &[u8], ready: usize, what: &str| {
            assert_eq!(ready, 1, "{what}");
            assert_eq!(got.len(), 4, "{what}");
            let ids: Vec<_> = got.iter().map(|d| d.id.as_deref()).collect();
            assert_eq!(ids, [Some("e-4"), Some("e-5"), Some("e-6"), None], "{what}");
            for (seq, d) in got.iter().enumerate() {
                let m = d
                    .marker
                    .unwrap_or_else(|| panic!("{what}: no marker in {seq}"));
                assert_eq!((m.run, m.seq, m.nanos), (1, seq as u64, 5), "{what}");
            }
            let compressed: Vec<_> = got.iter().map(|d| d.compressed).collect();
            assert_eq!(compressed, [true, false, true, true], "{what}");
            let bytes: Vec<_> = got.iter().map(|d| d.bytes).collect();
            let want = [first.len(), second.len(), third.len(), fourth.len()];
            assert_eq!(bytes, want, "{what}");
            // Two masked pongs.
            assert_eq!(out.len(), 2 * (2 + 4 + 2), "{what}");
        };
        let mut shared = Shared::default();
        for split in 0..stream.len() {
            let mut c = WsClient::new(true);
            let parts = [&stream[..split], &stream[split..]];
            let (got, out, ready) = feed(&mut c, &deflate_ctx(), &mut shared, &parts).unwrap();
            check(&got, &out, ready, &format!("split {split}"));
            assert!(c.deflate_agreed());
            assert!(matches!(c.stage, Stage::Open), "no inflater of its own");
        }
        let mut c = WsClient::new(true);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (got, out, ready) = feed(&mut c, &deflate_ctx(), &mut shared, &bytes).unwrap();
        check(&got, &out, ready, "byte by byte");
    }

    /// Two connections of one worker, each in the middle of a compressed
    /// message spread over reads, while the other's arrive: the shared
    /// inflater holds neither's, so neither is mixed into the other.
    #[test]
    fn connections_sharing_an_inflater_keep_their_messages_apart() {
        let ctx = deflate_ctx();
        let mut shared = Shared::default();
        let mut conns = [WsClient::new(false), WsClient::new(false)];
        for c in &mut conns {
            assert_eq!(feed(c, &ctx, &mut shared, &[AGREED]).unwrap().2, 1);
        }
        let msg = |seq| {
            let mut m = Vec::new();
            chat(
                &Marker {
                    run: 1,
                    seq,
                    nanos: 5,
                },
                3,
                &mut m,
            );
            server_frame(OpCode::Text, true, true, &compress(&m, 15, 6))
        };
        let (ma, mb) = (msg(10), msg(20));
        let (ha, hb) = (ma.len() / 2, mb.len() / 2);
        let mut seqs = Vec::new();
        let (m21, m11) = (msg(21), msg(11));
        for (c, part) in [
            (0, &ma[..ha]),
            (1, &mb[..hb]),
            (1, &mb[hb..]),
            (1, &m21[..]),
            (0, &ma[ha..]),
            (0, &m11[..]),
        ] {
            let (got, _, _) = feed(&mut conns[c], &ctx, &mut shared, &[part]).unwrap();
            seqs.extend(got.iter().map(|d| d.marker.unwrap().seq));
        }
        assert_eq!(seqs, [20, 21, 10, 11]);
    }

    /// A server that keeps its compression context (no
    /// `server_no_context_takeover`): the connection gets an inflater of
    /// its own, which carries the window from message to message. RFC 7692
    /// §7.2.3.2: "Hello", then "Hello" again as a back reference into the
    /// first — in one frame, then in two.
    #[test]
    fn a_server_keeping_its_context_is_inflated_per_connection() {
        const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        const AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];
        let answer = b"HTTP/1.1 101 Switching Protocols\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"10\"\r\n\r\n";
        let mut stream = answer.to_vec();
        stream.extend(server_frame(OpCode::Text, true, true, &HELLO));
        stream.extend(server_frame(OpCode::Text, true, true, &AGAIN));
        stream.extend(server_frame(OpCode::Text, false, true, &AGAIN[..2]));
        stream.extend(server_frame(OpCode::Continuation, true, false, &AGAIN[2..]));
        let mut shared = Shared::default();
        for split in 0..stream.len() {
            let mut c = WsClient::new(false);
            let parts = [&stream[..split], &stream[split..]];
            let (got, _, ready) = feed(&mut c, &deflate_ctx(), &mut shared, &parts).unwrap();
            assert_eq!(ready, 1);
            assert!(matches!(c.stage, Stage::Inflating(_)), "split {split}");
            assert_eq!(got.len(), 3, "split {split}");
            assert!(got
                .iter()
                .all(|d| d.compressed && d.bytes == 5 && d.marker.is_none()));
        }
        // Without the context, the back reference cannot be inflated: a
        // server that claimed no context takeover but kept it fails.
        let mut c = WsClient::new(false);
        let mut lying = AGREED.to_vec();
        lying.extend(server_frame(OpCode::Text, true, true, &HELLO));
        lying.extend(server_frame(OpCode::Text, true, true, &AGAIN));
        let e = feed(&mut c, &deflate_ctx(), &mut shared, &[&lying]);
        assert_eq!(e, Err(ProtoError("ws_deflate_corrupt".into())));
    }

    /// A server that does not take up the offer: the connection goes on
    /// uncompressed, and a compressed frame from it is then a protocol
    /// error, as it is on a connection that never offered.
    #[test]
    fn a_declining_server_gives_uncompressed_deliveries() {
        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend(server_frame(
            OpCode::Text,
            true,
            false,
            &envelope("e-1", &marked(0)),
        ));
        stream.extend(server_frame(OpCode::Text, true, false, &marked(1)));
        for split in 0..stream.len() {
            let mut c = WsClient::new(true);
            let parts = [&stream[..split], &stream[split..]];
            let mut shared = Shared::default();
            let (got, _, ready) = feed(&mut c, &deflate_ctx(), &mut shared, &parts).unwrap();
            assert_eq!(ready, 1);
            assert!(!c.deflate_agreed());
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].id.as_deref(), Some("e-1"));
            assert_eq!(got[1].marker.unwrap().seq, 1);
            assert!(got.iter().all(|d| !d.compressed));
            assert!(shared.inflater.is_none());
        }
        let hello = server_frame(OpCode::Text, true, true, &compress(b"Hello", 15, 6));
        for ctx in [deflate_ctx(), ctx()] {
            let mut c = WsClient::new(true);
            let mut s = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
            s.extend(&hello);
            let e = feed(&mut c, &ctx, &mut Shared::default(), &[&s]);
            assert_eq!(
                e,
                Err(ProtoError("ws_protocol: reserved bits set (1002)".into())),
                "offered: {}",
                ctx.deflate
            );
        }
    }

    #[test]
    fn broken_compressed_messages_fail_the_connection() {
        let run = |frames: Vec<u8>| {
            let mut s = AGREED.to_vec();
            s.extend(frames);
            feed(
                &mut WsClient::new(false),
                &deflate_ctx(),
                &mut Shared::default(),
                &[&s],
            )
        };
        let corrupt = server_frame(OpCode::Text, true, true, b"\xff\xff\xff\xff");
        assert_eq!(run(corrupt), Err(ProtoError("ws_deflate_corrupt".into())));
        // Text must be UTF-8 once inflated; binary need not.
        let latin1 = compress(b"caf\xe9", 15, 6);
        let text = server_frame(OpCode::Text, true, true, &latin1);
        assert_eq!(run(text), Err(ProtoError("ws_deflate_invalid_utf8".into())));
        let binary = server_frame(OpCode::Binary, true, true, &latin1);
        assert_eq!(run(binary).unwrap().0.len(), 1);
        // RSV1 belongs on a message's first frame only.
        let mut late = server_frame(OpCode::Text, false, false, b"a");
        late.extend(server_frame(OpCode::Continuation, true, true, b"b"));
        assert_eq!(
            run(late),
            Err(ProtoError("ws_protocol: reserved bits set (1002)".into()))
        );
    }

    #[test]
    fn extension_answers() {
        let agreed = |no_context| {
            Ok(Some(Agreed {
                server_no_context_takeover: no_context,
            }))
        };
        for (answer, want) in [
            ("", Ok(None)),
            (" , ", Ok(None)),
            ("permessage-deflate", agreed(false)),
            (
                "Permessage-Deflate; Server_No_Context_Takeover",
                agreed(true),
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=9; client_max_window_bits=\"15\"",
                agreed(true),
            ),
            ("permessage-deflate;server_max_window_bits=8", agreed(false)),
        ] {
            assert_eq!(deflate_answer(Some(answer), true), want, "{answer}");
        }
        let bad = Err(ProtoError("ws_deflate_bad_answer".into()));
        for answer in [
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(deflate_answer(Some(answer), true), bad, "{answer}");
        }
        let unasked = ProtoError("ws_unrequested_extension".into());
        for (answer, offered) in [
            ("x-webkit-deflate-frame", true),
            ("permessage-deflate", false),
        ] {
            assert_eq!(deflate_answer(Some(answer), offered), Err(unasked.clone()));
        }
        assert_eq!(deflate_answer(None, false), Ok(None));
        // Through the handshake: a connection that offered nothing fails.
        let e = feed(
            &mut WsClient::new(false),
            &ctx(),
            &mut Shared::default(),
            &[AGREED],
        );
        assert_eq!(e, Err(unasked));
    }

    /// At a million connections every byte of a connection counts: the
    /// inflate state shares the room the response head needed anyway, so
    /// supporting permessage-deflate made no connection larger.
    #[test]
    fn deflate_support_costs_an_idle_connection_nothing() {
        assert_eq!(
            std::mem::size_of::<Stage>(),
            std::mem::size_of::<Option<Vec<u8>>>()
        );
    }
}
