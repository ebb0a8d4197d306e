//! The WebSocket closing handshake: a peer's close is answered with its
//! code and the connection ends once the answer is flushed; our close
//! (shutdown: 1001) waits `--close-timeout` for the peer's, which completes
//! it when it comes.

use std::time::Duration;

use codec::ws::OpCode;

use crate::transport::testing::{close, frame, text, Node, WsFrame};

/// A node whose close timeout is two seconds (twenty ticks).
fn node() -> Node {
    Node::with(|s| s.close_timeout = Duration::from_secs(2))
}

#[test]
fn a_peers_close_is_answered_with_its_code_then_the_connection_ends() {
    let mut node = node();
    let c = node.open_ws("/ws/room");
    node.input(c, &close(1000, "bye"));
    assert_eq!(node.frames(c), [WsFrame::Close(Some(1000), String::new())]);
    assert!(node.is_closed(c), "closed once the answer went out");
    assert_eq!(node.subscriptions("room"), 0);

    // A close without a code is answered without one.
    let c = node.open_ws("/echo");
    node.input(c, &frame(OpCode::Close, true, b""));
    assert_eq!(node.frames(c), [WsFrame::Close(None, String::new())]);
    assert!(node.is_closed(c));
}

#[test]
fn an_answer_that_cannot_be_flushed_ends_at_the_close_timeout() {
    let mut node = node();
    let c = node.open_ws("/echo");
    node.stop_reading(c);
    node.input(c, &close(3000, "app closing"));
    assert!(node.protocol(c).is_draining());
    node.advance(19);
    assert!(!node.is_closed(c), "still flushing");
    node.advance(1);
    assert!(node.is_closed(c));
}

#[test]
fn shutdown_closes_with_1001_and_waits_for_the_peers_close() {
    let mut node = node();
    let c = node.open_ws("/ws/room");
    node.shutdown();
    assert_eq!(
        node.frames(c),
        [WsFrame::Close(Some(1001), "server shutting down".into())]
    );
    assert_eq!(
        node.subscriptions("room"),
        0,
        "nothing is delivered after it"
    );
    node.advance(19);
    assert!(!node.is_closed(c), "waiting for the peer's close");
    node.advance(1);
    assert!(node.is_closed(c), "the close timeout passed");
    assert_eq!(node.output(c), b"");
}

#[test]
fn a_peers_close_after_ours_completes_the_handshake() {
    let mut node = node();
    let c = node.open_ws("/ws/room");
    node.shutdown();
    assert_eq!(node.frames(c).len(), 1);
    node.advance(5);
    node.input(c, &close(1001, ""));
    assert!(node.is_closed(c), "no need to wait for the timeout");
    assert_eq!(node.output(c), b"", "our close was sent already");
}

#[test]
fn after_our_close_messages_and_pings_go_unanswered() {
    let mut node = node();
    let c = node.open_ws("/echo");
    node.shutdown();
    assert_eq!(node.frames(c).len(), 1);
    let mut late = text("late");
    late.extend(frame(OpCode::Ping, true, b"?"));
    node.input(c, &late);
    assert_eq!(node.output(c), b"");
    assert!(!node.is_closed(c));
}

#[test]
fn a_ping_flood_is_closed_with_1008_and_a_steady_pinger_is_not() {
    let mut node = Node::with(|s| s.max_control_rate = 5);
    let steady = node.open_ws("/ws/room");
    for _ in 0..20 {
        node.input(steady, &frame(OpCode::Ping, true, b"hb"));
        node.advance(3); // a ping every 300 ms: 3 or 4 a second
    }
    let pongs = node.frames(steady);
    assert_eq!(pongs.len(), 20, "every ping answered: {pongs:?}");
    assert!(!node.protocol(steady).is_draining());

    let flood = node.open_ws("/ws/room");
    for _ in 0..6 {
        node.input(flood, &frame(OpCode::Ping, true, b""));
    }
    let got = node.frames(flood);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(
        got[5],
        WsFrame::Close(
            Some(1008),
            "over 5 pings and pongs per second (--max-control-rate)".into()
        )
    );
    assert_eq!(
        node.subscriptions("room"),
        1,
        "the flooder left its channel"
    );
}
