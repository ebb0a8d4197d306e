//! Property tests: whatever the encoders produce, the decoders read back
//! identically, however the bytes are split on the way.

use bytes::BytesMut;
use codec::http::{parse_request, ChunkedDecoder, ChunkedEvent, Limits};
use codec::ws::{
    apply_mask, encode, Assembler, CloseCode, DataKind, DecoderConfig, Frame, FrameDecoder,
    Message, OpCode,
};
use codec::Status;
use proptest::prelude::*;

/// A frame to send, as the test models it.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    /// A whole message, sent in `fragments` frames (≥ 1).
    Message {
        kind: DataKind,
        payload: Vec<u8>,
        fragments: usize,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// What the receiver should see.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Message(Message),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Payload sizes that cover every length encoding and its edges.
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=3,
        120usize..=130,
        65530usize..=65540,
        Just(70_000usize),
        0usize..2000,
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        4 => (payload_len(), 1usize..5, any::<bool>(), any::<u8>()).prop_map(|(len, fragments, text, seed)| {
            if text {
                // Multi-byte characters so fragment edges fall inside them.
                let s: String = "aé€😀".chars().cycle().skip(seed as usize % 4).take(len / 3 + 1).collect();
                Sent::Message { kind: DataKind::Text, payload: s.into_bytes(), fragments }
            } else {
                let payload = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
                Sent::Message { kind: DataKind::Binary, payload, fragments }
            }
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Sent::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Sent::Pong),
    ]
}

/// Encodes the frames as a client would (masked), with a ping between the
/// first and second fragment of every fragmented message; returns the bytes
/// and what the receiver must see.
fn encode_client(
    frames: &[Sent],
    masks: &[[u8; 4]],
    close: Option<(u16, &str)>,
) -> (Vec<u8>, Vec<Seen>) {
    let mut out = BytesMut::new();
    let mut expected = Vec::new();
    let mut mask_i = 0;
    let mut next_mask = || {
        mask_i += 1;
        masks[mask_i % masks.len()]
    };
    for f in frames {
        match f {
            Sent::Message {
                kind,
                payload,
                fragments,
            } => {
                let n = *fragments;
                let size = payload.len().div_ceil(n).max(1);
                let mut pieces: Vec<&[u8]> = payload.chunks(size).collect();
                while pieces.len() < n {
                    pieces.push(&[]);
                }
                for (i, piece) in pieces.iter().enumerate() {
                    let op = if i == 0 {
                        kind.opcode()
                    } else {
                        OpCode::Continuation
                    };
                    encode::masked_frame(&mut out, op, i + 1 == pieces.len(), piece, next_mask());
                    if i == 0 && pieces.len() > 1 {
                        // A ping in the middle of a fragmented message.
                        encode::masked_frame(&mut out, OpCode::Ping, true, b"mid", next_mask());
                        expected.push(Seen::Ping(b"mid".to_vec()));
                    }
                }
                // The ping was seen before the message completed.
                expected.push(Seen::Message(Message {
                    kind: *kind,
                    payload: payload.clone().into(),
                }));
            }
            Sent::Ping(p) => {
                encode::masked_frame(&mut out, OpCode::Ping, true, p, next_mask());
                expected.push(Seen::Ping(p.clone()));
            }
            Sent::Pong(p) => {
                encode::masked_frame(&mut out, OpCode::Pong, true, p, next_mask());
                expected.push(Seen::Pong(p.clone()));
            }
        }
    }
    if let Some((code, reason)) = close {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        encode::masked_frame(&mut out, OpCode::Close, true, &payload, next_mask());
        expected.push(Seen::Close(Some((code, reason.to_string()))));
    }
    (out.to_vec(), expected)
}

/// Receives `input` in pieces cut at `cuts`, keeping unconsumed bytes
/// between reads as a connection does.
fn receive(config: DecoderConfig, input: &[u8], cuts: &[usize]) -> Vec<Seen> {
    let mut dec = FrameDecoder::new(config);
    let mut asm = Assembler::new();
    let mut pending = Vec::new();
    let mut seen = Vec::new();
    let mut from = 0;
    let mut edges: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    edges.sort_unstable();
    edges.push(input.len());
    for to in edges {
        pending.extend_from_slice(&input[from..to]);
        from = to;
        let mut start = 0;
        loop {
            match dec.decode(&mut pending[start..]).expect("valid input") {
                Status::Partial => break,
                Status::Complete((n, frame)) => {
                    match frame {
                        Frame::Data {
                            kind,
                            payload,
                            last,
                            ..
                        } => {
                            if let Some(m) = asm.push(kind, payload, last) {
                                seen.push(Seen::Message(m));
                            }
                        }
                        Frame::Ping(p) => seen.push(Seen::Ping(p.to_vec())),
                        Frame::Pong(p) => seen.push(Seen::Pong(p.to_vec())),
                        Frame::Close(c) => {
                            seen.push(Seen::Close(c.map(|c| (c.code.0, c.reason.to_string()))))
                        }
                    }
                    start += n;
                }
            }
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty(), "bytes left over: {}", pending.len());
    assert!(dec.is_idle());
    seen
}

fn masks() -> impl Strategy<Value = Vec<[u8; 4]>> {
    proptest::collection::vec(any::<[u8; 4]>(), 1..4)
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..200_000, 0..12)
}

fn close_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Client → server: every frame kind and size class, fragmented and
    /// interleaved with control frames, split at random positions.
    #[test]
    fn client_frames_round_trip_through_any_split(
        frames in proptest::collection::vec(sent(), 1..6),
        masks in masks(),
        cuts in cuts(),
        code in close_code(),
    ) {
        let (wire, expected) = encode_client(&frames, &masks, Some((code, "bye")));
        let config = DecoderConfig { max_message_size: 1 << 20, ..DecoderConfig::server() };
        prop_assert_eq!(receive(config, &wire, &cuts), expected);
    }

    /// Server → client: the unmasked encoders, read by a client-role decoder.
    #[test]
    fn server_frames_round_trip_through_any_split(
        messages in proptest::collection::vec((payload_len(), any::<bool>()), 1..5),
        cuts in cuts(),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for (len, text) in messages {
            let (kind, payload) = if text {
                (DataKind::Text, "x€".repeat(len / 4 + 1).into_bytes())
            } else {
                (DataKind::Binary, vec![0xA5; len])
            };
            wire.extend_from_slice(&encode::message(kind, &payload));
            expected.push(Seen::Message(Message { kind, payload: payload.into() }));
        }
        encode::ping(&mut wire, b"p").unwrap();
        expected.push(Seen::Ping(b"p".to_vec()));
        encode::close(&mut wire, Some(CloseCode::GOING_AWAY), "restart").unwrap();
        expected.push(Seen::Close(Some((1001, "restart".into()))));
        prop_assert_eq!(receive(DecoderConfig::client(), &wire, &cuts), expected);
    }

    /// Masking twice is the identity, for any key, offset and split.
    #[test]
    fn masking_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..1000),
        mask in any::<[u8; 4]>(),
        cut in 0usize..1000,
    ) {
        let mut buf = data.clone();
        let cut = cut.min(buf.len());
        let (a, b) = buf.split_at_mut(cut);
        let off = apply_mask(a, mask, 0);
        apply_mask(b, mask, off);
        let defined: Vec<u8> = data.iter().enumerate().map(|(i, d)| d ^ mask[i % 4]).collect();
        prop_assert_eq!(&buf, &defined);
        apply_mask(&mut buf, mask, 0);
        prop_assert_eq!(buf, data);
    }

    /// A header split at every byte offset decodes identically.
    #[test]
    fn header_split_at_every_offset(len in payload_len(), mask in any::<[u8; 4]>()) {
        let mut wire = BytesMut::new();
        let payload = vec![0x5A; len];
        encode::masked_frame(&mut wire, OpCode::Binary, true, &payload, mask);
        let expected = vec![Seen::Message(Message { kind: DataKind::Binary, payload: payload.into() })];
        for cut in 0..=14.min(wire.len()) {
            prop_assert_eq!(&receive(DecoderConfig::server(), &wire, &[cut]), &expected);
        }
    }

    /// The request-head parser gives the same head whatever prefix it first
    /// sees, and `Partial` for every proper prefix.
    #[test]
    fn request_heads_parse_the_same_from_any_prefix(
        path in "/[a-z0-9/._-]{0,40}",
        value in "[ -~]{0,60}",
        extra in 0usize..5,
    ) {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-Value: {}\r\n", value.trim());
        for i in 0..extra {
            req.push_str(&format!("X-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        let bytes = req.as_bytes();
        let Ok(Status::Complete((head, used))) = parse_request(bytes, &Limits::default()) else {
            panic!("does not parse: {req:?}");
        };
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(head.path, path.as_str());
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_request(&bytes[..cut], &Limits::default()), Ok(Status::Partial));
        }
    }

    /// Chunked bodies decode to what was chunked, for any split.
    #[test]
    fn chunked_bodies_round_trip(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        chunk in 1usize..700,
        step in 1usize..100,
    ) {
        let mut wire = Vec::new();
        for piece in body.chunks(chunk) {
            wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            wire.extend_from_slice(piece);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut dec = ChunkedDecoder::new();
        let mut got = Vec::new();
        let mut done = false;
        for mut piece in wire.chunks(step) {
            while !piece.is_empty() {
                let (n, ev) = dec.decode(piece).unwrap();
                piece = &piece[n..];
                match ev {
                    Some(ChunkedEvent::Data(d)) => got.extend_from_slice(d),
                    Some(ChunkedEvent::End) => done = true,
                    None => {}
                }
            }
        }
        prop_assert!(done);
        prop_assert_eq!(got, body);
    }
}

/// Random bytes never panic the decoder, in either role, with any split.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..512), 1usize..64),
            |(bytes, step)| {
                for config in [DecoderConfig::server(), DecoderConfig::client()] {
                    let mut dec = FrameDecoder::new(config);
                    let mut buf = Vec::new();
                    for piece in bytes.chunks(step) {
                        buf.extend_from_slice(piece);
                        let mut start = 0;
                        while let Ok(Status::Complete((n, _))) = dec.decode(&mut buf[start..]) {
                            start += n;
                        }
                        buf.drain(..start);
                    }
                }
                let _ = parse_request(&bytes, &Limits::default());
                Ok(())
            },
        )
        .unwrap();
}
