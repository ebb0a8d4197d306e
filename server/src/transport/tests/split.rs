//! Split input: the same bytes fed whole, split in two at every position,
//! and byte by byte give exactly the same output (the "every prefix" tests
//! of quinn and rustls). What a protocol cannot use yet is kept and offered
//! again with what follows.

use codec::ws::OpCode;

use crate::transport::testing::{
    close, frame, get, parse_frames, parse_response, post, text, upgrade, Node, WsFrame, EPOCH,
};

/// Feeds `chunks` to a new connection of a new node: its whole output, and
/// whether it ended closed.
fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, bool) {
    let mut node = Node::new();
    let c = node.connect();
    for chunk in chunks {
        node.input(c, chunk);
    }
    (node.take_output(c), node.is_closed(c))
}

/// Checks every split of `input` against feeding it whole; returns the
/// output and whether the connection ended closed.
fn same_output_however_split(input: &[u8]) -> (Vec<u8>, bool) {
    let whole = run([input]);
    for at in 1..input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(run([a, b]), whole, "split at {at}");
    }
    assert_eq!(run(input.chunks(1)), whole, "byte by byte");
    whole
}

#[test]
fn a_websocket_upgrade_and_its_frames() {
    let mut input = upgrade("/echo");
    input.extend(text("hello"));
    input.extend(frame(OpCode::Text, false, b"frag"));
    input.extend(frame(OpCode::Ping, true, b"mid-message"));
    input.extend(frame(OpCode::Continuation, false, b"men"));
    input.extend(frame(OpCode::Continuation, true, b"ted"));
    input.extend(frame(OpCode::Binary, true, &[0, 1, 2, 255]));
    input.extend(close(1000, "done"));
    let (output, closed) = same_output_however_split(&input);
    assert!(closed, "the close handshake ended it");

    let (response, used) = parse_response(&output).expect("a response");
    assert_eq!(response.status, 101);
    let (frames, rest) = parse_frames(&output[used..]);
    assert_eq!(used + rest, output.len());
    assert_eq!(
        frames,
        [
            WsFrame::Text("hello".into()),
            WsFrame::Pong(b"mid-message".to_vec()),
            WsFrame::Text("fragmented".into()),
            WsFrame::Binary(vec![0, 1, 2, 255]),
            WsFrame::Close(Some(1000), String::new()),
        ]
    );
}

#[test]
fn a_pipelined_publish_and_poll() {
    let mut input = post("/pub/a", "text/plain", b"hello");
    input.extend(get(
        &format!("/poll/a?since={EPOCH:012x}-0&timeout=0"),
        &[("Connection", "close")],
    ));
    let (output, closed) = same_output_however_split(&input);
    assert!(closed, "the poll asked to close");

    let (publish, used) = parse_response(&output).expect("the publish's answer");
    let id = format!("{EPOCH:012x}-1");
    assert_eq!(publish.text(), format!("{{\"id\":\"{id}\"}}\n"));
    let (poll, rest) = parse_response(&output[used..]).expect("the poll's answer");
    assert_eq!(used + rest, output.len());
    assert_eq!(poll.json()["messages"][0]["data"], "hello");
    assert_eq!(poll.header("Connection"), Some("close"));
}
