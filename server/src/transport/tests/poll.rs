//! Long and short polling: a held poll is answered by the message that
//! wakes it, or by its timeout; short polls answer at once, `304` when the
//! client's `If-None-Match` is current; requests pipelined behind a held
//! poll wait for its answer.

use std::sync::atomic::Ordering::Relaxed;

use serde_json::json;

use crate::metrics::Transport;
use crate::transport::testing::{get, Node};
use crate::transport::Protocol;

/// Open connections counted under `t`.
fn gauge(node: &Node, t: Transport) -> u64 {
    node.metrics().connections[t as usize].load(Relaxed)
}

#[test]
fn a_held_poll_is_answered_by_the_call_that_delivers_its_message() {
    let mut node = Node::new();
    let c = node.connect();
    node.input(c, &get("/poll/lp?timeout=30", &[]));
    assert!(matches!(node.protocol(c), Protocol::Poll(_)));
    assert_eq!(gauge(&node, Transport::LongPoll), 1);
    node.advance(100);
    assert_eq!(node.output(c), b"", "held: nothing to answer yet");

    let id = node.publish_text("lp", "wake");
    // No tick passed: the publish's own fan-out answered the poll.
    let r = node.response(c);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ETag"), Some(format!("\"{id}\"").as_str()));
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    assert_eq!(
        r.json(),
        json!({"messages": [{"id": id.to_string(), "ch": "lp", "data": "wake"}],
               "next": id.to_string()})
    );
    assert!(
        matches!(node.protocol(c), Protocol::Http(_)),
        "kept alive for the next request"
    );
    assert_eq!(gauge(&node, Transport::LongPoll), 0);
    assert_eq!(gauge(&node, Transport::Http), 1);
    assert_eq!(
        node.subscriptions("lp"),
        0,
        "the answer ends the subscription"
    );
}

#[test]
fn a_poll_times_out_with_204_and_its_unchanged_cursor() {
    let mut node = Node::new();
    let since = node.publish_text("lp", "seen");
    let c = node.connect();
    node.input(c, &get(&format!("/poll/lp?since={since}&timeout=2"), &[]));
    node.advance(19);
    assert_eq!(node.output(c), b"", "held until the timeout");
    node.advance(1);
    let r = node.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("ETag"), Some(format!("\"{since}\"").as_str()));
    assert_eq!(r.header("Content-Length"), None);
    assert!(r.body.is_empty());
    assert!(!node.is_closed(c), "a 204 keeps the connection");
    assert_eq!(node.subscriptions("lp"), 0);
}

#[test]
fn a_poll_without_a_cursor_times_out_with_the_position_it_started_at() {
    let mut node = Node::new();
    node.publish_text("lp", "one");
    let last = node.publish_text("lp", "two");
    let c = node.connect();
    node.input(c, &get("/poll/lp?timeout=1", &[]));
    node.advance(10);
    let r = node.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("ETag"), Some(format!("\"{last}\"").as_str()));
}

#[test]
fn a_timeout_over_the_maximum_is_capped() {
    let mut node = Node::with(|s| s.poll_max_timeout = std::time::Duration::from_secs(2));
    let c = node.connect();
    node.input(c, &get("/poll/lp?timeout=600", &[]));
    node.advance(19);
    assert_eq!(node.output(c), b"");
    node.advance(1);
    assert_eq!(node.response(c).status, 204);
}

#[test]
fn a_short_poll_answers_at_once_and_304_when_if_none_match_is_current() {
    let mut node = Node::new();
    let first = node.publish_text("sp", "one");
    let c = node.connect();
    node.input(c, &get("/poll/sp?timeout=0", &[]));
    let r = node.response(c);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"messages": [], "next": first.to_string()}));
    let etag = r.header("ETag").expect("an ETag").to_string();
    assert_eq!(etag, format!("\"{first}\""));

    // Nothing new since the ETag: 304, no body, the same ETag.
    node.input(c, &get("/poll/sp?timeout=0", &[("If-None-Match", &etag)]));
    let r = node.response(c);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    assert!(r.body.is_empty());
    // A weak validator names the same cursor.
    node.input(
        c,
        &get(
            "/poll/sp?timeout=0",
            &[("If-None-Match", &format!("W/{etag}"))],
        ),
    );
    assert_eq!(node.response(c).status, 304);

    // Something new: 200 with it, and its id as the next ETag.
    let second = node.publish_text("sp", "two");
    node.input(c, &get("/poll/sp?timeout=0", &[("If-None-Match", &etag)]));
    let r = node.response(c);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"][0]["id"], second.to_string());
    assert_eq!(r.header("ETag"), Some(format!("\"{second}\"").as_str()));
    assert_eq!(node.output(c), b"", "one answer per request");
}

#[test]
fn a_request_pipelined_behind_a_held_poll_waits_for_its_answer() {
    let mut node = Node::new();
    let c = node.connect();
    let mut both = get("/poll/lp?timeout=30", &[]);
    both.extend(get("/healthz", &[]));
    node.input(c, &both);
    assert_eq!(
        node.output(c),
        b"",
        "the health check waits behind the poll"
    );

    let id = node.publish_text("lp", "wake");
    let answers = node.responses(c);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].json()["next"], id.to_string());
    assert_eq!((answers[1].status, answers[1].text()), (200, "ok\n"));
}

#[test]
fn a_request_pipelined_behind_a_poll_is_served_after_its_timeout() {
    let mut node = Node::new();
    let c = node.connect();
    let mut both = get("/poll/lp?timeout=1", &[]);
    both.extend(get("/healthz", &[]));
    node.input(c, &both);
    node.advance(9);
    assert_eq!(node.output(c), b"");
    node.advance(1);
    let answers = node.responses(c);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [204, 200]);
}

#[test]
fn shutdown_answers_a_held_poll_with_204_and_closes() {
    let mut node = Node::new();
    let c = node.connect();
    node.input(c, &get("/poll/lp?timeout=30", &[]));
    node.shutdown();
    let r = node.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(node.is_closed(c), "closed once the answer is flushed");
}
