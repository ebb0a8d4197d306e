//! Writes seed inputs for the fuzz targets into `<dir>/<target>/` (default
//! `corpus/`): valid request heads, the RFC 6455 §5.7 example frames and a
//! few longer streams, chunked bodies. Each file is named after what it
//! holds; existing files are overwritten, other files are left alone.
//!
//! `ws_roundtrip` takes structured input from `arbitrary`, which has no
//! meaningful hand-written seeds; libFuzzer starts it from scratch.

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use codec::ws::{encode, OpCode};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("create corpus directory");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn http_heads(dir: &Path) {
    let heads: &[(&str, &[u8])] = &[
        (
            "upgrade",
            b"GET /ws/news?since=abc%3A1&x=a+b HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Version: 13\r\n\r\n",
        ),
        (
            "sse",
            b"GET /sse/a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: e1:42\r\nIf-None-Match: \"c1\"\r\n\
Accept: text/event-stream\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n",
        ),
        (
            "post-length-pipelined",
            b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n\
helloGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "post-chunked",
            b"POST /pub/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        ("options-star", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("http10", b"HEAD /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        (
            "absolute-form",
            b"GET http://example.com/ws/a?b=c#f HTTP/1.1\r\nHost: example.com\r\n\r\n",
        ),
        ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n"),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ];
    for (name, bytes) in heads {
        write(dir, "http_head", name, bytes);
    }
}

fn masked(out: &mut BytesMut, opcode: OpCode, fin: bool, payload: &[u8]) {
    encode::masked_frame(out, opcode, fin, payload, MASK);
}

fn ws_decoder(dir: &Path) {
    // Prefix: role/RSV byte, message limit (LE, mod 4096), read pattern.
    const SERVER: [u8; 4] = [0x00, 0xff, 0x0f, 0x00];
    const SERVER_BYTEWISE: [u8; 4] = [0x00, 0xff, 0x0f, 0x01];
    const SERVER_RANDOM: [u8; 4] = [0x00, 0xff, 0x0f, 0x05];
    const CLIENT: [u8; 4] = [0x01, 0xff, 0x0f, 0x00];
    const SERVER_SMALL_LIMIT: [u8; 4] = [0x00, 0x08, 0x00, 0x03];

    let seed = |name: &str, prefix: [u8; 4], stream: &[u8]| {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(stream);
        write(dir, "ws_decoder", name, &bytes);
    };

    // RFC 6455 §5.7, byte for byte.
    seed(
        "rfc-masked-hello",
        SERVER,
        &[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    seed(
        "rfc-unmasked-hello",
        CLIENT,
        &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
    );
    seed(
        "rfc-fragmented-hello",
        CLIENT,
        &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
    );
    seed(
        "rfc-unmasked-ping",
        CLIENT,
        &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
    );
    seed(
        "rfc-masked-pong",
        SERVER,
        &[
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    let mut b256 = vec![0x82, 0x7E, 0x01, 0x00];
    b256.extend(std::iter::repeat_n(0xAB, 256));
    seed("rfc-binary-256", CLIENT, &b256);
    // A 64 KiB header alone: over the limit, refused before its payload.
    seed(
        "rfc-binary-64k-header",
        CLIENT,
        &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00],
    );

    // A conversation: fragmented UTF-8 split inside a character, control
    // frames between fragments, a close with a reason.
    let mut s = BytesMut::new();
    masked(&mut s, OpCode::Text, true, "small".as_bytes());
    masked(&mut s, OpCode::Binary, true, &[7u8; 300]);
    masked(&mut s, OpCode::Text, false, &"κό".as_bytes()[..3]);
    masked(&mut s, OpCode::Ping, true, b"ping!");
    masked(&mut s, OpCode::Continuation, false, &"κό".as_bytes()[3..]);
    masked(&mut s, OpCode::Pong, true, b"");
    masked(&mut s, OpCode::Continuation, true, "σμε".as_bytes());
    masked(&mut s, OpCode::Close, true, b"\x03\xe8done");
    seed("conversation", SERVER, &s);
    seed("conversation-bytewise", SERVER_BYTEWISE, &s);
    seed("conversation-random", SERVER_RANDOM, &s);
    seed("conversation-small-limit", SERVER_SMALL_LIMIT, &s);

    // Violations, one each.
    let mut bad = BytesMut::new();
    masked(&mut bad, OpCode::Text, true, b"a\xffbc");
    seed("invalid-utf8", SERVER, &bad);
    let mut bad = BytesMut::new();
    masked(&mut bad, OpCode::Close, true, b"\x03\xed");
    seed("invalid-close-code", SERVER, &bad);
    let mut raw = Vec::new();
    encode::masked_frame_raw(&mut raw, 0xC1, b"rsv1", MASK);
    seed("rsv1-allowed", [0x08, 0xff, 0x0f, 0x00], &raw);
}

fn chunked(dir: &Path) {
    let bodies: &[(&str, &[u8])] = &[
        ("simple", b"5\r\nhello\r\n0\r\n\r\n"),
        (
            "extensions-trailer-next",
            b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
        ),
        ("empty", b"0\r\n\r\n"),
        ("leading-zeros", b"0005\r\nhello\r\n000\r\n\r\n"),
        ("big-size", b"FFFFFFFFFFFFFFFF\r\nab"),
    ];
    for (name, body) in bodies {
        for split in [0u8, 1, 7] {
            let mut bytes = vec![split];
            bytes.extend_from_slice(body);
            write(dir, "chunked", &format!("{name}-{split}"), &bytes);
        }
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_owned());
    let dir = Path::new(&dir);
    http_heads(dir);
    ws_decoder(dir);
    chunked(dir);
    fs::create_dir_all(dir.join("ws_roundtrip")).expect("create corpus directory");
    println!("seeds written under {}", dir.display());
}
