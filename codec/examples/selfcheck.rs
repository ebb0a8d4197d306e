//! Checks the codec against the published examples of RFC 6455 and prints
//! the result. `make run` runs it until the server exists.

use bytes::BytesMut;
use codec::ws::{encode, handshake, DataKind, DecoderConfig, Frame, FrameDecoder, OpCode};
use codec::Status;

fn main() {
    let mut failures = 0;
    let mut check = |name: &str, ok: bool| {
        println!("{} {name}", if ok { "ok  " } else { "FAIL" });
        failures += usize::from(!ok);
    };

    let accept = handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
    check(
        "RFC 6455 §1.3: Sec-WebSocket-Accept of the sample nonce",
        &accept[..] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    );

    let mut masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut dec = FrameDecoder::new(DecoderConfig::server());
    let hello = matches!(
        dec.decode(&mut masked),
        Ok(Status::Complete((
            11,
            Frame::Data {
                kind: DataKind::Text,
                payload: b"Hello",
                first: true,
                last: true,
                compressed: false
            }
        )))
    );
    check("RFC 6455 §5.7: masked \"Hello\" decodes", hello);

    let mut out = BytesMut::new();
    encode::frame(&mut out, OpCode::Text, true, b"Hello");
    check(
        "RFC 6455 §5.7: unmasked \"Hello\" encodes byte for byte",
        out[..] == [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
    );

    if failures > 0 {
        eprintln!("{failures} check(s) failed");
        std::process::exit(1);
    }
    println!("codec self-check passed");
}
