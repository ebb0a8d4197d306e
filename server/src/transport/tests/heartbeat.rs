//! WebSocket heartbeats: a ping (`0x89 0x00`) every `--ping-interval`; a
//! peer from which nothing arrived for two intervals is closed without a
//! close frame; any input, whatever it is, keeps a peer alive.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use codec::ws::OpCode;

use crate::transport::testing::{frame, text, Node, WsFrame};

/// A node pinging every second (ten ticks).
fn node() -> Node {
    Node::with(|s| s.ping_interval = Duration::from_secs(1))
}

#[test]
fn a_ping_goes_out_every_interval() {
    let mut node = node();
    let c = node.open_ws("/ws/hb");
    for round in 1..=5 {
        node.advance(9);
        assert_eq!(node.output(c), b"", "round {round}: early");
        node.advance(1);
        assert_eq!(node.take_output(c), [0x89, 0x00], "round {round}");
        node.input(c, &frame(OpCode::Pong, true, b""));
    }
    assert!(!node.is_closed(c));
}

#[test]
fn a_peer_silent_for_two_intervals_is_closed_without_a_close_frame() {
    let mut node = node();
    let c = node.open_ws("/ws/hb");
    node.advance(10);
    assert_eq!(node.frames(c), [WsFrame::Ping(vec![])]);
    node.advance(9);
    assert!(!node.is_closed(c));
    node.advance(1);
    assert!(node.is_closed(c), "silent since tick 0, closed at tick 20");
    assert_eq!(node.output(c), b"", "no close frame: the peer is gone");
    assert_eq!(node.metrics().ping_timeouts.load(Relaxed), 1);
    assert_eq!(node.subscriptions("hb"), 0, "its subscription went with it");
}

#[test]
fn any_input_keeps_a_peer_alive() {
    let mut node = node();
    let c = node.open_ws("/ws/hb");
    let ping = frame(OpCode::Ping, true, b"hi");
    let pong = frame(OpCode::Pong, true, b"");
    let ignored = text("subscribers' messages are ignored");
    // One input every 15 ticks: a pong, a message, half a ping, the rest.
    for input in [&pong[..], &ignored[..], &ping[..3], &ping[3..]] {
        node.advance(15);
        node.input(c, input);
        assert!(!node.is_closed(c), "tick {}", node.now());
    }
    let frames = node.frames(c);
    let pings = frames.iter().filter(|f| **f == WsFrame::Ping(vec![]));
    assert_eq!(pings.count(), 6, "one per interval: {frames:?}");
    assert!(frames.contains(&WsFrame::Pong(b"hi".to_vec())));
    // The last input came at tick 60: the check at tick 70 finds it ten
    // ticks old (ping), the one at tick 80 twenty (closed).
    node.advance(19);
    assert!(!node.is_closed(c));
    node.advance(1);
    assert!(node.is_closed(c));
}
