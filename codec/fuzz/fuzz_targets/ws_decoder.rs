//! `FrameDecoder` and `Assembler` on arbitrary bytes, fed the way a
//! connection feeds them: unconsumed bytes stay, new reads are appended.
//!
//! Input layout: byte 0 picks the role (bit 0) and the RSV bits an extension
//! would allow (bits 1–3); bytes 1–2 the message size limit (0–4095); byte 3
//! the read pattern (see `split.rs`); the rest is the byte stream.
//!
//! Invariants: never panics; `Complete((n, _))` has 0 < n <= buffer length;
//! a chunk's payload lies within the `n` bytes used; `first`/`last` flags
//! bracket messages correctly; assembled messages never exceed the limit;
//! assembled text is UTF-8; control payloads are at most 125 bytes; errors
//! are sticky; and the events and the final error do not depend on how the
//! stream was cut into reads (compared with a single-read run).
#![no_main]

#[path = "split.rs"]
mod split;

use codec::ws::{Assembler, DataKind, DecoderConfig, Frame, FrameDecoder, ProtocolError, Role};
use codec::Status;
use libfuzzer_sys::fuzz_target;

/// What a connection acts on: whole messages and control frames.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Message(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn run(config: DecoderConfig, pieces: &[&[u8]]) -> (Vec<Event>, Option<ProtocolError>) {
    let limit = config.max_message_size;
    let mut dec = FrameDecoder::new(config);
    let mut asm = Assembler::new();
    let mut events = Vec::new();
    // The kind of the message in progress, per the flags seen so far.
    let mut in_message: Option<DataKind> = None;
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        let mut start = 0;
        loop {
            let available = pending.len() - start;
            match dec.decode(&mut pending[start..]) {
                Ok(Status::Complete((n, frame))) => {
                    assert!(n > 0, "Complete with 0 bytes used");
                    assert!(n <= available, "used {n} of {available}");
                    match frame {
                        Frame::Data {
                            kind,
                            payload,
                            first,
                            last,
                            compressed,
                        } => {
                            assert!(payload.len() <= n);
                            match (first, in_message) {
                                (true, None) => in_message = Some(kind),
                                (false, Some(k)) => assert_eq!(k, kind, "kind changed mid-message"),
                                (true, Some(_)) => panic!("first chunk inside a message"),
                                (false, None) => panic!("continuation chunk outside a message"),
                            }
                            if let Some(msg) = asm.push(kind, payload, last) {
                                assert!(
                                    msg.payload.len() as u64 <= limit,
                                    "message of {} bytes, limit {limit}",
                                    msg.payload.len()
                                );
                                // A compressed message's UTF-8 is checked
                                // once inflated, not by the decoder.
                                if msg.kind == DataKind::Text && !compressed {
                                    if let Err(e) = std::str::from_utf8(&msg.payload) {
                                        panic!("text message is not UTF-8: {e}");
                                    }
                                }
                                events.push(Event::Message(msg.kind, msg.payload.to_vec()));
                            }
                            if last {
                                in_message = None;
                                assert!(asm.is_empty());
                            }
                            assert!(asm.len() as u64 <= limit, "assembler over the limit");
                        }
                        Frame::Ping(p) => {
                            assert!(p.len() <= 125);
                            events.push(Event::Ping(p.to_vec()));
                        }
                        Frame::Pong(p) => {
                            assert!(p.len() <= 125);
                            events.push(Event::Pong(p.to_vec()));
                        }
                        Frame::Close(c) => {
                            if let Some(c) = c {
                                assert!(c.code.is_valid_on_wire());
                                assert!(c.reason.len() <= 123);
                            }
                            events.push(Event::Close(c.map(|c| (c.code.0, c.reason.to_owned()))));
                        }
                    }
                    start += n;
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    let _ = e.close_code();
                    // Sticky: the same error whatever comes next.
                    assert_eq!(dec.decode(&mut pending[start..]), Err(e));
                    assert_eq!(dec.decode(&mut [0x81, 0x80, 0, 0, 0, 0]), Err(e));
                    assert!(!dec.is_idle());
                    return (events, Some(e));
                }
            }
        }
        pending.drain(..start);
    }
    if dec.is_idle() {
        assert!(asm.is_empty());
        assert!(in_message.is_none());
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let [b0, lo, hi, split_seed, stream @ ..] = data else {
        return;
    };
    let config = DecoderConfig {
        role: if b0 & 1 == 0 {
            Role::Server
        } else {
            Role::Client
        },
        max_message_size: u64::from(u16::from_le_bytes([*lo, *hi]) % 4096),
        extension_rsv: (b0 >> 1) & 0x7,
    };
    let split = run(config, &split::pieces(stream, *split_seed));
    let whole = run(config, &[stream]);
    assert_eq!(split, whole, "result depends on how the stream was cut");
});
