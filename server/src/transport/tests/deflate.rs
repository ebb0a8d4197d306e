//! permessage-deflate (`--deflate`): negotiation in the handshake, what a
//! WebSocket receives compressed (broadcast once per window, echoes), what
//! it may send compressed, and the refusals (a deflate bomb, corrupt data,
//! invalid UTF-8, RSV1 without the extension).

use std::sync::atomic::Ordering;

use codec::ws::{DataKind, OpCode};

use crate::config::DeflateSettings;
use crate::transport::testing::{
    deflated, frame, parse_frames, parse_response, text, upgrade_offering, ConnId, Node, WsFrame,
    EPOCH,
};

fn node() -> Node {
    Node::with(|s| {
        s.deflate = Some(DeflateSettings {
            min_size: 64,
            level: 1,
        })
    })
}

/// Opens a WebSocket offering `extensions`; returns it and the
/// `Sec-WebSocket-Extensions` answer.
fn open(node: &mut Node, target: &str, extensions: &str) -> (ConnId, Option<String>) {
    let c = node.connect();
    node.input(c, &upgrade_offering(target, extensions));
    let r = node.response(c);
    assert_eq!(r.status, 101, "{r:?}");
    let answer = r.header("Sec-WebSocket-Extensions").map(str::to_string);
    (c, answer)
}

/// A chat message of `n` bytes or so: compressible, as JSON chat is.
fn chat(n: usize) -> String {
    let mut s = String::from(r#"{"user":"ana","text":""#);
    while s.len() < n {
        s.push_str("see you at the station at nine, ");
    }
    s.push_str(r#""}"#);
    s
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[test]
fn the_extension_is_negotiated_only_when_offered_and_enabled() {
    let mut node = node();
    let (_, answer) = open(
        &mut node,
        "/echo",
        "permessage-deflate; client_max_window_bits",
    );
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let (_, answer) = open(
        &mut node,
        "/ws/a",
        "permessage-deflate; server_max_window_bits=10",
    );
    assert_eq!(
        answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    // Offers it cannot honour are declined: the connection goes on plain.
    let (_, answer) = open(
        &mut node,
        "/echo",
        "permessage-deflate; server_max_window_bits=8",
    );
    assert_eq!(answer, None);
    // A header that does not parse: 400, saying why.
    let c = node.connect();
    node.input(c, &upgrade_offering("/echo", "permessage-deflate; =1"));
    let r = node.response(c);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("malformed Sec-WebSocket-Extensions"),
        "{}",
        r.text()
    );
    // A node without --deflate names no extension, whatever is offered.
    let mut plain = Node::new();
    let (_, answer) = open(&mut plain, "/echo", "permessage-deflate");
    assert_eq!(answer, None);
    let c = plain.connect();
    plain.input(c, &upgrade_offering("/echo", "permessage-deflate; =1"));
    assert_eq!(plain.response(c).status, 101, "the header is not read");
}

#[test]
fn a_broadcast_is_compressed_once_per_window_and_shared() {
    let mut node = node();
    let offer = "permessage-deflate; client_max_window_bits";
    let (a, _) = open(&mut node, "/ws/room", offer);
    let (b, _) = open(&mut node, "/ws/room", offer);
    let (small_window, _) = open(
        &mut node,
        "/ws/room",
        "permessage-deflate; server_max_window_bits=9",
    );
    let (json, _) = open(&mut node, "/ws/room?format=json", offer);
    let (plain, _) = open(&mut node, "/ws/room", "x-unknown");
    let message = chat(600);
    let id = node.publish_text("room", &message);
    for c in [a, b, small_window] {
        assert_eq!(node.frames(c), [WsFrame::DeflatedText(message.clone())]);
    }
    let envelope = match &node.frames(json)[..] {
        [WsFrame::DeflatedText(t)] => serde_json::from_str::<serde_json::Value>(t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(envelope["id"], id.to_string());
    assert_eq!(envelope["data"], message);
    assert_eq!(node.frames(plain), [WsFrame::Text(message.clone())]);
    // Once per window and format: raw at 15 and at 9 bits, JSON at 15.
    assert_eq!(count(&node.metrics().deflate_messages), 3);

    // Small messages, and messages that do not shrink, go plain.
    node.publish_text("room", "hi");
    assert_eq!(node.frames(a), [WsFrame::Text("hi".into())]);
    let mut x = 0x9e37_79b9u32;
    let noise: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    node.publish("room", DataKind::Binary, &noise);
    assert_eq!(node.frames(a), [WsFrame::Binary(noise.clone())]);
    assert_eq!(
        count(&node.metrics().deflate_not_smaller),
        2,
        "raw at 15 and 9"
    );
    // Binary that shrinks goes compressed too.
    let zeros = vec![0u8; 1000];
    node.publish("room", DataKind::Binary, &zeros);
    assert_eq!(node.frames(a), [WsFrame::DeflatedBinary(zeros)]);
}

#[test]
fn history_replays_go_uncompressed_then_live_messages_compressed() {
    let mut node = node();
    let message = chat(300);
    node.publish_text("room", &message);
    let target = format!("/ws/room?since={EPOCH:012x}-0");
    let (c, _) = open(&mut node, &target, "permessage-deflate");
    assert_eq!(node.frames(c), [WsFrame::Text(message.clone())]);
    node.publish_text("room", &message);
    assert_eq!(node.frames(c), [WsFrame::DeflatedText(message)]);
}

#[test]
fn the_multiplexed_protocol_gets_live_messages_compressed() {
    let mut node = node();
    let (c, _) = open(&mut node, "/ws", "permessage-deflate");
    node.input(c, &text(r#"{"type":"subscribe","ch":"room","rid":1}"#));
    let answer = node.json(c);
    assert_eq!(answer[0]["type"], "subscribed", "{answer:?}");
    let message = chat(500);
    node.publish_text("room", &message);
    match &node.frames(c)[..] {
        [WsFrame::DeflatedText(t)] => {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["data"].as_str()),
                (Some("message"), Some(&message[..]))
            );
        }
        other => panic!("{other:?}"),
    }
    // A compressed command is inflated and understood.
    let publish = r#"{"type":"presence","ch":"room","rid":2}"#;
    node.input(c, &deflated(DataKind::Text, publish.as_bytes(), 1000));
    let answer = node.json(c);
    assert_eq!(answer[0]["type"], "presence", "{answer:?}");
    assert_eq!(answer[0]["rid"], 2);
}

#[test]
fn echo_inflates_and_compresses_each_message_on_its_own() {
    let mut node = node();
    let (c, _) = open(&mut node, "/echo", "permessage-deflate");
    let message = chat(2000);
    // One frame, then fragmented into many (RSV1 only on the first), then
    // a binary one, then a small one that comes back plain.
    node.input(c, &deflated(DataKind::Text, message.as_bytes(), 1 << 20));
    node.input(c, &deflated(DataKind::Text, message.as_bytes(), 7));
    node.input(c, &deflated(DataKind::Binary, &[7u8; 5000], 100));
    node.input(c, &deflated(DataKind::Text, b"ok", 100));
    // An uncompressed message between compressed ones is fine too.
    node.input(c, &text("plain"));
    assert_eq!(
        node.frames(c),
        [
            WsFrame::DeflatedText(message.clone()),
            WsFrame::DeflatedText(message),
            WsFrame::DeflatedBinary(vec![7u8; 5000]),
            WsFrame::Text("ok".into()),
            WsFrame::Text("plain".into()),
        ]
    );
    assert_eq!(count(&node.metrics().inflated_messages), 4);
}

#[test]
fn compressed_input_split_anywhere_gives_the_same_echo() {
    let message = chat(400);
    let mut input = upgrade_offering("/echo", "permessage-deflate");
    input.extend(deflated(DataKind::Text, message.as_bytes(), 50));
    let run = |chunks: &[&[u8]]| {
        let mut node = node();
        let c = node.connect();
        for chunk in chunks {
            node.input(c, chunk);
        }
        node.take_output(c)
    };
    let whole = run(&[&input]);
    let (r, used) = parse_response(&whole).unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(
        parse_frames(&whole[used..]).0,
        [WsFrame::DeflatedText(message)]
    );
    for at in 1..input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(run(&[a, b]), whole, "split at {at}");
    }
}

#[test]
fn a_deflate_bomb_closes_with_1009_and_bad_data_with_1007() {
    let mut node = Node::with(|s| {
        s.deflate = Some(DeflateSettings {
            min_size: 64,
            level: 1,
        });
        s.max_message_size = 64 * 1024;
    });
    // 16 MiB of zeros compress to about 16 KiB: under the limit on the
    // wire, far over it inflated.
    let bomb = deflated(DataKind::Binary, &vec![0u8; 16 << 20], 1 << 20);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let (c, _) = open(&mut node, "/echo", "permessage-deflate");
    node.input(c, &bomb);
    assert_eq!(
        node.frames(c),
        [WsFrame::Close(
            Some(1009),
            "message too big once inflated (--max-message-size)".into()
        )]
    );
    assert!(node.is_closed(c));

    let (c, _) = open(&mut node, "/echo", "permessage-deflate");
    let mut corrupt = frame(OpCode::Binary, true, b"\xff\xff\xff\xff");
    corrupt[0] |= 0x40;
    node.input(c, &corrupt);
    assert_eq!(
        node.frames(c),
        [WsFrame::Close(
            Some(1007),
            "compressed message is not valid DEFLATE data".into()
        )]
    );

    let (c, _) = open(&mut node, "/echo", "permessage-deflate");
    node.input(c, &deflated(DataKind::Text, b"\xc3\x28 not UTF-8", 100));
    assert_eq!(
        node.frames(c),
        [WsFrame::Close(
            Some(1007),
            "invalid UTF-8 in a compressed text message".into()
        )]
    );
    assert_eq!(count(&node.metrics().protocol_errors), 3);
}

#[test]
fn rsv1_without_the_extension_is_a_protocol_error() {
    let mut node = node();
    let (c, answer) = open(&mut node, "/echo", "x-unknown");
    assert_eq!(answer, None);
    node.input(c, &deflated(DataKind::Text, b"hello", 100));
    match &node.frames(c)[..] {
        [WsFrame::Close(Some(1002), _)] => {}
        other => panic!("{other:?}"),
    }
    assert!(node.is_closed(c));
}
