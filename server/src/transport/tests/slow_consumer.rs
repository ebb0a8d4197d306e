//! Readers that do not keep up, and readers that do.
//!
//! Deliveries go by cursor: a connection has at most `--max-outbound`
//! bytes of deliveries queued; past that its subscription *falls behind*
//! and the messages wait in history, from which it catches up once its
//! socket has taken the queue. A burst therefore never closes a reader
//! that reads. One whose oldest undelivered message has waited
//! `--max-lag` is lagging: a WebSocket gets its queue dropped and `1008
//! lagging: resume from <id>`, an event stream `event: reset` and its
//! end. Only a peer that makes the node queue its *own* output past the
//! hard limit (sending without reading) is closed as a slow consumer.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use codec::ws::DataKind;

use crate::hub::MsgId;
use crate::transport::testing::{
    close, default_settings, get, post, text, upgrade, ConnId, Node, WsFrame, EPOCH,
};

const LIMIT: usize = 1024;

/// `--max-lag` here: 2 s, 20 ticks.
const MAX_LAG_TICKS: u32 = 20;

/// A node whose window is 1 KiB and whose `--max-lag` is 2 s.
fn node() -> Node {
    Node::with(|s| {
        s.max_outbound = LIMIT;
        s.max_lag = Duration::from_secs(2);
    })
}

/// 300 bytes: a frame of 304, so three fit in the window and four do not.
const PAYLOAD: [u8; 300] = [b'x'; 300];

fn id(seq: u64) -> String {
    format!("{EPOCH:012x}-{seq}")
}

/// The sequence numbers of binary frames whose first bytes are the
/// message's number (see [`numbered`]).
fn numbers(frames: &[WsFrame]) -> Vec<u32> {
    (frames.iter())
        .map(|f| match f {
            WsFrame::Binary(b) => u32::from_be_bytes(b[..4].try_into().unwrap()),
            other => panic!("expected a message, got {other:?}"),
        })
        .collect()
}

/// `n` payloads of 300 bytes, numbered 1..=n in their first four bytes.
fn numbered(n: u32) -> Vec<Vec<u8>> {
    (1..=n)
        .map(|i| {
            let mut p = PAYLOAD.to_vec();
            p[..4].copy_from_slice(&i.to_be_bytes());
            p
        })
        .collect()
}

fn burst(node: &mut Node, channel: &str, payloads: &[Vec<u8>]) -> Vec<MsgId> {
    let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    node.publish_burst(channel, &slices)
}

#[test]
fn a_burst_reaches_every_reader_in_order_and_closes_none() {
    let mut node = node();
    let readers: Vec<ConnId> = (0..5).map(|_| node.open_ws("/ws/feed")).collect();
    let payloads = numbered(200);
    burst(&mut node, "feed", &payloads);
    for &r in &readers {
        assert_eq!(numbers(&node.frames(r)), (1..=200).collect::<Vec<_>>());
        assert!(!node.is_closed(r));
    }
    // 200 × 304 bytes through a 1 KiB window: the readers fell behind and
    // caught up from history, many times over.
    assert!(node.metrics().fell_behind.load(Relaxed) >= 5);
    node.advance(5 * MAX_LAG_TICKS);
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 0);
    assert_eq!(node.metrics().slow_consumers.load(Relaxed), 0);
    // Caught up: live again, the next message comes by fan-out.
    node.publish("feed", DataKind::Binary, &[0, 0, 0, 201]);
    for &r in &readers {
        assert_eq!(numbers(&node.frames(r)), [201]);
    }
}

#[test]
fn a_websocket_that_stops_reading_costs_one_window_then_lags_out_with_where_to_resume() {
    let mut node = node();
    let c = node.open_ws("/ws/feed");
    node.stop_reading(c);
    for p in numbered(10) {
        node.publish("feed", DataKind::Binary, &p);
    }
    assert_eq!(node.queued(c), 3 * 304, "one window, the rest in history");
    assert_eq!(node.metrics().fell_behind.load(Relaxed), 1);
    node.advance(MAX_LAG_TICKS - 1);
    assert!(!node.is_closed(c), "not lagging yet");
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 0);
    node.advance(10);
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 1);
    assert_eq!(node.metrics().slow_consumers.load(Relaxed), 0);
    assert_eq!(node.subscriptions("feed"), 0, "no more deliveries");

    // What was queued is dropped; the close says where the peer stands:
    // nothing of the queue reached it, so it resumes after 0.
    node.resume_reading(c);
    let reason = format!("lagging: resume from {}", id(0));
    assert_eq!(node.frames(c), [WsFrame::Close(Some(1008), reason)]);
    node.input(c, &close(1008, ""));
    assert!(node.is_closed(c));

    // Resuming from that id loses nothing.
    let again = node.open_ws(&format!("/ws/feed?since={}", id(0)));
    assert_eq!(numbers(&node.frames(again)), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_paused_reader_that_resumes_within_the_lag_loses_nothing() {
    let mut node = node();
    let c = node.open_ws("/ws/feed");
    node.stop_reading(c);
    let payloads = numbered(30);
    for p in &payloads[..15] {
        node.publish("feed", DataKind::Binary, p);
        node.advance(1);
    }
    node.resume_reading(c);
    for p in &payloads[15..] {
        node.publish("feed", DataKind::Binary, p);
    }
    node.advance(3 * MAX_LAG_TICKS);
    assert_eq!(numbers(&node.frames(c)), (1..=30).collect::<Vec<_>>());
    assert!(!node.is_closed(c));
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 0);
}

#[test]
fn a_reader_slower_than_the_publisher_lags_out_though_it_reads() {
    // It takes one message a tick while two are published: its oldest
    // undelivered message waits longer and longer, until --max-lag.
    let mut node = node();
    let c = node.open_ws("/ws/feed");
    node.stop_reading(c);
    let mut closed_at = None;
    for tick in 0..10 * MAX_LAG_TICKS {
        for p in numbered(2) {
            node.publish("feed", DataKind::Binary, &p);
        }
        node.read_some(c, 304);
        node.advance(1);
        if node.metrics().lagging_closes.load(Relaxed) > 0 {
            closed_at = Some(tick);
            break;
        }
    }
    let closed_at = closed_at.expect("a reader this slow lags out");
    assert!(
        (MAX_LAG_TICKS..2 * MAX_LAG_TICKS).contains(&closed_at),
        "closed at tick {closed_at}"
    );
    // Until then it got messages in order (each tick's pair is numbered
    // 1, 2), and the close says where to resume.
    node.resume_reading(c);
    let frames = node.frames(c);
    let (close, messages) = frames.split_last().unwrap();
    assert!(numbers(messages).chunks(2).all(|p| p == [1, 2] || p == [1]));
    assert!(
        matches!(close, WsFrame::Close(Some(1008), r) if r.starts_with("lagging: resume from "))
    );
}

#[test]
fn an_event_stream_that_stops_reading_lags_out_with_a_reset() {
    let mut node = node();
    let c = node.connect();
    node.input(c, &get("/sse/feed", &[]));
    assert_eq!(node.response(c).status, 200);
    node.take_output(c);
    node.stop_reading(c);
    for _ in 0..10 {
        node.publish("feed", DataKind::Text, &PAYLOAD);
        assert!(node.queued(c) <= LIMIT);
    }
    node.advance(MAX_LAG_TICKS + 10);
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 1);
    assert_eq!(node.subscriptions("feed"), 0);
    node.resume_reading(c);
    let items = node.sse(c);
    let [item] = items.as_slice() else {
        panic!("expected only the reset, got {items:?}");
    };
    let reset = item.event().expect("an event");
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(
        reset.id, None,
        "the client resumes from its own Last-Event-ID"
    );
    let data: serde_json::Value = serde_json::from_str(reset.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reason"], "lagging");
    assert_eq!(data["since"], id(0));
    assert!(node.is_closed(c), "the stream ends once the reset is out");
}

#[test]
fn a_behind_reader_misses_live_only_messages() {
    let mut node = Node::with(|s| {
        s.max_outbound = LIMIT;
        s.client_publish = true;
    });
    let c = node.open_ws("/ws/feed");
    node.stop_reading(c);
    for p in numbered(4) {
        node.publish("feed", DataKind::Binary, &p);
    }
    // Behind: an ephemeral message is not in history, so it is skipped.
    let publisher = node.open_ws("/ws");
    let command = r#"{"type":"publish","ch":"feed","data":"typing","ephemeral":true}"#;
    node.input(publisher, &text(command));
    assert_eq!(node.json(publisher)[0]["type"], "published");
    assert_eq!(node.metrics().live_only_skipped.load(Relaxed), 1);
    node.resume_reading(c);
    assert_eq!(numbers(&node.frames(c)), [1, 2, 3, 4]);
}

#[test]
fn a_resume_from_long_ago_is_not_lagging() {
    // The history was published long before the subscriber came: its wait
    // counts from when it could first have had it.
    let mut node = node();
    for p in numbered(10) {
        node.publish("feed", DataKind::Binary, &p);
    }
    node.advance(10 * MAX_LAG_TICKS);
    let c = node.connect();
    node.stop_reading(c);
    node.input(c, &upgrade(&format!("/ws/feed?since={}", id(0))));
    node.advance(MAX_LAG_TICKS / 2);
    assert_eq!(node.metrics().lagging_closes.load(Relaxed), 0);
    node.resume_reading(c);
    assert_eq!(node.response(c).status, 101);
    assert_eq!(numbers(&node.frames(c)), (1..=10).collect::<Vec<_>>());
    node.advance(2 * MAX_LAG_TICKS);
    assert!(!node.is_closed(c));
}

#[test]
fn a_poll_answer_larger_than_the_window_is_sent_whole() {
    let mut node = node();
    let c = node.connect();
    node.input(c, &get("/poll/feed?timeout=30", &[]));
    node.stop_reading(c);
    node.publish("feed", DataKind::Text, &[b'x'; 4 * LIMIT]);
    assert!(!node.is_closed(c));
    node.resume_reading(c);
    let r = node.response(c);
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        body["messages"][0]["data"].as_str().unwrap().len(),
        4 * LIMIT
    );
    assert_eq!(node.metrics().slow_consumers.load(Relaxed), 0);
}

#[test]
fn a_peer_that_sends_without_reading_is_a_slow_consumer() {
    // Echoes pile up: the node's own output past the hard limit.
    let mut node = Node::with(|s| {
        s.max_outbound = LIMIT;
        s.max_message_size = 4096;
    });
    let hard = default_settings();
    let c = node.open_ws("/echo");
    node.stop_reading(c);
    let message = "e".repeat(4000);
    let mut sent = 0;
    while node.metrics().slow_consumers.load(Relaxed) == 0 {
        node.input(c, &text(&message));
        sent += 1;
        assert!(sent < 1000, "never closed");
    }
    let limit = 2 * LIMIT + 4096 + (64 << 10);
    assert!(
        sent * 4000 > limit && (sent - 1) * 4000 <= limit + 4004,
        "{sent}"
    );
    assert!(
        hard.outbound_hard_limit() > limit,
        "the defaults allow more"
    );
    node.resume_reading(c);
    assert_eq!(
        node.frames(c),
        [WsFrame::Close(
            Some(1008),
            "slow consumer: outbound queue overflow".into()
        )]
    );
}

#[test]
fn a_message_of_the_largest_size_reaches_a_reader() {
    // The defaults: 1 MiB messages, 1 MiB window.
    let defaults = default_settings();
    assert_eq!(defaults.max_message_size, defaults.max_outbound);
    let mut node = Node::new();
    let c = node.open_ws("/ws/big");
    let payload = vec![7u8; defaults.max_message_size];
    node.publish("big", DataKind::Binary, &payload);
    node.publish("big", DataKind::Binary, &payload);
    assert_eq!(node.metrics().slow_consumers.load(Relaxed), 0);
    assert_eq!(
        node.frames(c),
        [WsFrame::Binary(payload.clone()), WsFrame::Binary(payload)]
    );
}

#[test]
fn a_resume_longer_than_the_window_reaches_a_reader() {
    let mut node = node();
    let first = node.publish("feed", DataKind::Binary, &numbered(1)[0]);
    for p in &numbered(10)[1..] {
        node.publish("feed", DataKind::Binary, p);
    }
    // Nine messages after `first` are in history: 2736 bytes of frames,
    // replayed a window at a time after the 101.
    let c = node.connect();
    node.input(c, &upgrade(&format!("/ws/feed?since={first}")));
    assert_eq!(node.metrics().slow_consumers.load(Relaxed), 0);
    assert_eq!(node.response(c).status, 101);
    assert_eq!(numbers(&node.frames(c)), (2..=10).collect::<Vec<_>>());
    node.publish("feed", DataKind::Binary, &[0, 0, 0, 11]);
    assert_eq!(numbers(&node.frames(c)), [11]);
}

#[test]
fn publishers_are_refused_while_readers_behind_pin_more_than_the_cap() {
    let mut node = Node::with(|s| {
        s.max_outbound = LIMIT;
        s.max_lag = Duration::from_secs(2);
        s.max_pinned = 4 * 1024;
        s.client_publish = true;
    });
    let reader = node.open_ws("/ws/feed");
    node.stop_reading(reader);
    let publisher = node.connect();
    let mux = node.open_ws("/ws");
    let publish = |node: &mut Node| {
        node.input(publisher, &post("/pub/feed", "text/plain", &PAYLOAD));
        node.response(publisher)
    };
    // The window fills, then the backlog: each message pins its payload
    // and its frame, 604 bytes, until over 4 KiB.
    let mut accepted = 0;
    let refused = loop {
        let r = publish(&mut node);
        if r.status != 200 {
            break r;
        }
        accepted += 1;
        assert!(accepted < 100, "never refused");
    };
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert!(
        refused.text().contains("--max-pinned"),
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("Connection"), None, "the connection stays");
    assert!(accepted >= 3 + 4096 / 604, "{accepted} accepted");
    // The multiplexed protocol says the same, and does not count it as
    // the client's error.
    for _ in 0..2 * crate::transport::mux::MAX_CONSECUTIVE_ERRORS {
        let cmd = r#"{"type":"publish","ch":"feed","data":"x","rid":7}"#;
        node.input(mux, &text(cmd));
        let answers = node.json(mux);
        assert_eq!(answers[0]["code"], "overloaded", "{answers:?}");
        assert_eq!(answers[0]["retry_after"], 1);
        assert_eq!(answers[0]["rid"], 7);
    }
    assert!(!node.is_closed(mux));
    // The reader lags out: what it pinned is freed, and publishing works.
    node.advance(MAX_LAG_TICKS + 10);
    assert!(node.is_closed(reader) || node.subscriptions("feed") == 0);
    assert_eq!(publish(&mut node).status, 200);
}
