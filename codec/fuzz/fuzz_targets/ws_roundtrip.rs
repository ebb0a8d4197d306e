//! Structured round trip: messages and control frames built by `arbitrary`,
//! encoded as a client sends them (`encode::masked_frame`, fragmented at
//! arbitrary points, pings between fragments) or as a server sends them
//! (`encode::frame`, unmasked), cut into arbitrary reads, decoded with
//! `FrameDecoder` + `Assembler` of the matching role. What comes out must
//! be exactly what went in, with no error.
#![no_main]

#[path = "split.rs"]
mod split;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use codec::ws::{encode, Assembler, DataKind, DecoderConfig, Frame, FrameDecoder, OpCode};
use codec::Status;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Item {
    Text {
        text: String,
        cuts: Vec<u16>,
        ping_between: Option<Vec<u8>>,
    },
    Binary {
        data: Vec<u8>,
        cuts: Vec<u16>,
        ping_between: Option<Vec<u8>>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close {
        code: Option<u16>,
        reason: String,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    server_side: bool,
    mask_seed: u32,
    split_seed: u8,
    items: Vec<Item>,
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Message(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

struct Writer {
    out: BytesMut,
    masked: bool,
    mask: u32,
}

impl Writer {
    fn frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        if self.masked {
            self.mask = self
                .mask
                .wrapping_mul(0x0101_0101)
                .wrapping_add(0x9E37_79B9);
            encode::masked_frame(&mut self.out, opcode, fin, payload, self.mask.to_be_bytes());
        } else {
            encode::frame(&mut self.out, opcode, fin, payload);
        }
    }
}

fn truncate_control(p: &[u8]) -> &[u8] {
    &p[..p.len().min(125)]
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn data_message(
    w: &mut Writer,
    expected: &mut Vec<Event>,
    kind: DataKind,
    payload: &[u8],
    cuts: &[u16],
    ping_between: &Option<Vec<u8>>,
) {
    // Fragment boundaries at arbitrary byte positions (splitting UTF-8
    // sequences is allowed across fragments).
    let mut edges: Vec<usize> = cuts
        .iter()
        .take(8)
        .map(|&c| usize::from(c) % (payload.len() + 1))
        .collect();
    edges.sort_unstable();
    edges.push(payload.len());
    let mut from = 0;
    let count = edges.len();
    for (i, &to) in edges.iter().enumerate() {
        let opcode = if i == 0 {
            kind.opcode()
        } else {
            OpCode::Continuation
        };
        let fin = i + 1 == count;
        w.frame(opcode, fin, &payload[from..to]);
        from = to;
        if !fin {
            if let Some(p) = ping_between {
                let p = truncate_control(p);
                w.frame(OpCode::Ping, true, p);
                expected.push(Event::Ping(p.to_vec()));
            }
        }
    }
    // Control frames between fragments are delivered before the message.
    expected.push(Event::Message(kind, payload.to_vec()));
}

fuzz_target!(|input: Input| {
    let mut w = Writer {
        out: BytesMut::new(),
        masked: input.server_side,
        mask: input.mask_seed,
    };
    let mut expected = Vec::new();
    for item in input.items.iter().take(32) {
        match item {
            Item::Text {
                text,
                cuts,
                ping_between,
            } => data_message(
                &mut w,
                &mut expected,
                DataKind::Text,
                text.as_bytes(),
                cuts,
                ping_between,
            ),
            Item::Binary {
                data,
                cuts,
                ping_between,
            } => data_message(
                &mut w,
                &mut expected,
                DataKind::Binary,
                data,
                cuts,
                ping_between,
            ),
            Item::Ping(p) => {
                let p = truncate_control(p);
                w.frame(OpCode::Ping, true, p);
                expected.push(Event::Ping(p.to_vec()));
            }
            Item::Pong(p) => {
                let p = truncate_control(p);
                w.frame(OpCode::Pong, true, p);
                expected.push(Event::Pong(p.to_vec()));
            }
            Item::Close { code, reason } => match code {
                None => {
                    w.frame(OpCode::Close, true, &[]);
                    expected.push(Event::Close(None));
                }
                Some(code) => {
                    // Map onto the codes valid on the wire.
                    let code = match code % 3 {
                        0 => 1000 + code % 4,
                        1 => 1007 + code % 8,
                        _ => 3000 + code % 2000,
                    };
                    let reason = truncate_str(reason, 123);
                    let mut payload = code.to_be_bytes().to_vec();
                    payload.extend_from_slice(reason.as_bytes());
                    w.frame(OpCode::Close, true, &payload);
                    expected.push(Event::Close(Some((code, reason.to_owned()))));
                }
            },
        }
    }

    let config = if input.server_side {
        DecoderConfig::server()
    } else {
        DecoderConfig::client()
    };
    let mut dec = FrameDecoder::new(config);
    let mut asm = Assembler::new();
    let mut got = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in split::pieces(&w.out, input.split_seed) {
        pending.extend_from_slice(piece);
        let mut start = 0;
        while let Status::Complete((n, frame)) = dec
            .decode(&mut pending[start..])
            .unwrap_or_else(|e| panic!("valid stream refused: {e}"))
        {
            assert!(n > 0);
            match frame {
                Frame::Data {
                    kind,
                    payload,
                    last,
                    ..
                } => {
                    if let Some(m) = asm.push(kind, payload, last) {
                        got.push(Event::Message(m.kind, m.payload.to_vec()));
                    }
                }
                Frame::Ping(p) => got.push(Event::Ping(p.to_vec())),
                Frame::Pong(p) => got.push(Event::Pong(p.to_vec())),
                Frame::Close(c) => {
                    got.push(Event::Close(c.map(|c| (c.code.0, c.reason.to_owned()))))
                }
            }
            start += n;
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty(), "{} bytes left undecoded", pending.len());
    assert!(dec.is_idle());
    assert_eq!(got, expected);
});
