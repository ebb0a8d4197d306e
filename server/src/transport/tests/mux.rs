//! The multiplexed protocol on `/ws`: a session's commands and their
//! answers — subscribe (with history), publish, presence, unsubscribe —
//! errors with their codes, and the close after too many invalid commands
//! in a row.

use codec::ws::OpCode;
use serde_json::{json, Value};

use crate::hub::MsgId;
use crate::transport::testing::{frame, text, ConnId, Node, WsFrame, EPOCH};

/// A node whose clients may publish.
fn node() -> Node {
    Node::with(|s| s.client_publish = true)
}

fn command(node: &mut Node, c: ConnId, v: Value) {
    node.input(c, &text(&v.to_string()));
}

fn id(seq: u64) -> String {
    format!("{EPOCH:012x}-{seq}")
}

#[test]
fn a_session_subscribes_publishes_asks_who_is_here_and_unsubscribes() {
    let mut node = node();
    let first = node.publish_text("room", "one");
    let second = node.publish_text("room", "two");
    let c = node.open_ws("/ws");
    let me = node.client_id(c).to_string();

    // Subscribed, then the history after `since`, then its own arrival.
    command(
        &mut node,
        c,
        json!({"type": "subscribe", "ch": "room", "since": first.to_string(), "rid": 1}),
    );
    assert_eq!(
        node.json(c),
        [
            json!({"type": "subscribed", "ch": "room", "client": me, "rid": 1}),
            json!({"type": "message", "ch": "room", "id": second.to_string(), "data": "two"}),
            json!({"type": "joined", "ch": "room", "client": me}),
        ]
    );

    // The id comes back first, then the message like any other.
    command(
        &mut node,
        c,
        json!({"type": "publish", "ch": "room", "data": "hi", "rid": "p"}),
    );
    let published = id(second.seq + 1);
    assert_eq!(
        node.json(c),
        [
            json!({"type": "published", "ch": "room", "id": published, "rid": "p"}),
            json!({"type": "message", "ch": "room", "id": published, "data": "hi"}),
        ]
    );

    // Another session arrives; presence lists both.
    let other = node.open_ws("/ws");
    let them = node.client_id(other).to_string();
    command(&mut node, other, json!({"type": "subscribe", "ch": "room"}));
    assert_eq!(
        node.json(c),
        [json!({"type": "joined", "ch": "room", "client": them})]
    );
    command(
        &mut node,
        c,
        json!({"type": "presence", "ch": "room", "rid": {"n": 3}}),
    );
    assert_eq!(
        node.json(c),
        [json!({"type": "presence", "ch": "room", "clients": [me, them], "rid": {"n": 3}})]
    );

    // Unsubscribed: the others see it leave; it hears nothing more.
    command(
        &mut node,
        c,
        json!({"type": "unsubscribe", "ch": "room", "rid": 4}),
    );
    assert_eq!(
        node.json(c),
        [json!({"type": "unsubscribed", "ch": "room", "rid": 4})]
    );
    let other_got = node.json(other);
    assert_eq!(
        other_got.last(),
        Some(&json!({"type": "left", "ch": "room", "client": me}))
    );
    node.publish_text("room", "after");
    assert_eq!(node.json(c), Vec::<Value>::new());
    command(&mut node, c, json!({"type": "ping", "rid": 5}));
    assert_eq!(node.json(c), [json!({"type": "pong", "rid": 5})]);
}

/// The code and rid of an error answer.
fn error(v: &Value) -> (&str, &Value) {
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    (v["code"].as_str().unwrap(), &v["rid"])
}

#[test]
fn invalid_commands_get_an_error_with_their_code() {
    let mut node = Node::new(); // clients may not publish
    let c = node.open_ws("/ws");
    command(&mut node, c, json!({"type": "dance", "rid": 9}));
    node.input(c, &text("{not json"));
    command(
        &mut node,
        c,
        json!({"type": "unsubscribe", "ch": "nowhere"}),
    );
    command(&mut node, c, json!({"type": "subscribe", "rid": 10}));
    command(&mut node, c, json!({"type": "subscribe", "ch": "a b"}));
    command(
        &mut node,
        c,
        json!({"type": "subscribe", "ch": "a", "since": "yesterday"}),
    );
    command(
        &mut node,
        c,
        json!({"type": "publish", "ch": "a", "data": "x"}),
    );
    command(&mut node, c, json!(["subscribe"]));
    node.input(c, &frame(OpCode::Binary, true, b"{}"));
    let answers = node.json(c);
    let codes: Vec<(&str, &Value)> = answers.iter().map(error).collect();
    assert_eq!(
        codes,
        [
            ("unknown_type", &json!(9)),
            ("bad_json", &Value::Null),
            ("not_subscribed", &Value::Null),
            ("bad_channel", &json!(10)),
            ("bad_channel", &Value::Null),
            ("bad_since", &Value::Null),
            ("forbidden", &Value::Null),
            ("bad_request", &Value::Null),
            ("bad_request", &Value::Null),
        ]
    );
    assert!(!node.is_closed(c), "errors leave the session open");
}

#[test]
fn ten_invalid_commands_in_a_row_close_with_1008() {
    let mut node = node();
    let c = node.open_ws("/ws");
    let bad = text("nope");
    for _ in 0..9 {
        node.input(c, &bad);
    }
    // A valid command breaks the run.
    command(&mut node, c, json!({"type": "ping"}));
    for _ in 0..9 {
        node.input(c, &bad);
    }
    let frames = node.frames(c);
    assert_eq!(frames.len(), 19);
    assert!(!frames.iter().any(|f| matches!(f, WsFrame::Close(..))));
    node.input(c, &bad);
    let frames = node.frames(c);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(matches!(&frames[0], WsFrame::Text(t) if t.contains("bad_json")));
    assert_eq!(
        frames[1],
        WsFrame::Close(Some(1008), "too many invalid commands".into())
    );
    // Commands are no longer read.
    command(&mut node, c, json!({"type": "ping"}));
    assert_eq!(node.output(c), b"");
}

#[test]
fn a_resubscribe_before_the_first_replay_is_answered_once() {
    let mut node = node();
    let ids: Vec<MsgId> = (0..3)
        .map(|i| node.publish_text("room", &i.to_string()))
        .collect();
    let c = node.open_ws("/ws");
    let me = node.client_id(c).to_string();
    // Three commands in one read: the owner's first replay arrives after
    // the unsubscribe, for a subscription that no longer exists.
    let input = [
        json!({"type": "subscribe", "ch": "room", "since": ids[0].to_string(), "rid": 1}),
        json!({"type": "unsubscribe", "ch": "room", "rid": 2}),
        json!({"type": "subscribe", "ch": "room", "since": ids[1].to_string(), "rid": 3}),
    ]
    .map(|v| text(&v.to_string()))
    .concat();
    node.input(c, &input);
    let answers: Vec<Value> = (node.json(c).into_iter())
        .filter(|v| v["type"] != "joined" && v["type"] != "left")
        .collect();
    assert_eq!(
        answers,
        [
            json!({"type": "unsubscribed", "ch": "room", "rid": 2}),
            json!({"type": "subscribed", "ch": "room", "client": me, "rid": 3}),
            json!({"type": "message", "ch": "room", "id": ids[2].to_string(), "data": "2"}),
        ]
    );
}

#[test]
fn publishes_over_the_rate_are_refused_with_a_retry_and_never_close() {
    let mut node = Node::with(|s| {
        s.client_publish = true;
        s.max_publish_rate = 5;
    });
    let c = node.open_ws("/ws");
    let publish = |node: &mut Node, rid: u32| {
        command(
            node,
            c,
            json!({"type": "publish", "ch": "room", "data": "x", "rid": rid}),
        );
        node.json(c)
    };
    // A burst of the rate goes through.
    for rid in 0..5 {
        let answers = publish(&mut node, rid);
        assert_eq!(answers[0]["type"], "published", "{answers:?}");
    }
    // Then each one is refused, however many: pace is not a protocol error.
    for rid in 5..30 {
        let answers = publish(&mut node, rid);
        assert_eq!(
            answers,
            [
                json!({"type": "error", "code": "rate_limited", "retry_after": 1, "rid": rid,
                    "reason": "over 5 publishes per second on this connection (--max-publish-rate)"})
            ]
        );
    }
    assert!(!node.is_closed(c));
    // A second later the bucket has refilled.
    node.advance(10);
    for rid in 30..35 {
        assert_eq!(publish(&mut node, rid)[0]["type"], "published");
    }
    assert_eq!(publish(&mut node, 35)[0]["code"], "rate_limited");
    let refused = node.metrics().refusals();
    let i = crate::metrics::REFUSALS
        .iter()
        .position(|(_, name)| *name == "rate_limited")
        .unwrap();
    assert_eq!(refused[i], 26);
}
