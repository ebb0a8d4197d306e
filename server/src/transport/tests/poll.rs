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

// ---- several channels in one poll ---------------------------------------------

fn cursor(parts: &[(&str, u64)]) -> String {
    let list: Vec<String> = parts.iter().map(|(c, s)| format!("{c}={s}")).collect();
    format!(
        "{:012x};{}",
        crate::transport::testing::EPOCH,
        list.join(",")
    )
}

#[test]
fn a_poll_of_several_channels_answers_what_each_has_with_a_composite_cursor() {
    let mut node = Node::new();
    let a1 = node.publish_text("a", "a1");
    let b1 = node.publish_text("b", "b1");
    let b2 = node.publish_text("b", "b2");
    let c = node.connect();
    let since = cursor(&[("a", 0), ("b", 0)]);
    node.input(
        c,
        &get(&format!("/poll?ch=a,b&since={since}&timeout=0"), &[]),
    );
    let r = node.response(c);
    assert_eq!(r.status, 200);
    let next = cursor(&[("a", a1.seq), ("b", b2.seq)]);
    assert_eq!(r.header("ETag"), Some(format!("\"{next}\"").as_str()));
    assert_eq!(
        r.json(),
        json!({"messages": [
                  {"id": a1.to_string(), "ch": "a", "data": "a1"},
                  {"id": b1.to_string(), "ch": "b", "data": "b1"},
                  {"id": b2.to_string(), "ch": "b", "data": "b2"}],
               "next": next})
    );
    // Nothing new since: with the cursor as If-None-Match, a 304.
    let inm = format!("\"{next}\"");
    node.input(
        c,
        &get("/poll?ch=a,b&timeout=0", &[("If-None-Match", &inm)]),
    );
    let r = node.response(c);
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("ETag"), Some(inm.as_str()));
    assert_eq!(node.subscriptions("a") + node.subscriptions("b"), 0);
}

#[test]
fn a_held_poll_of_several_channels_is_answered_by_the_first_message_on_any() {
    let mut node = Node::new();
    let a1 = node.publish_text("a", "a1");
    let c = node.connect();
    let since = cursor(&[("a", a1.seq)]);
    // `b` is not in the cursor: it starts from now on.
    node.input(
        c,
        &get(&format!("/poll?ch=a,b&since={since}&timeout=30"), &[]),
    );
    node.advance(50);
    assert_eq!(node.output(c), b"", "held");
    let b1 = node.publish_text("b", "wake");
    let r = node.response(c);
    assert_eq!(r.status, 200);
    let next = cursor(&[("a", a1.seq), ("b", b1.seq)]);
    assert_eq!(
        r.json(),
        json!({"messages": [{"id": b1.to_string(), "ch": "b", "data": "wake"}], "next": next})
    );
    assert_eq!(node.subscriptions("a") + node.subscriptions("b"), 0);
    // Timing out: 204 with the cursor unchanged.
    node.input(
        c,
        &get(&format!("/poll?ch=a,b&since={next}&timeout=2"), &[]),
    );
    node.advance(20);
    let r = node.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("ETag"), Some(format!("\"{next}\"").as_str()));
}

#[test]
fn a_poll_of_several_channels_stops_at_the_batch_and_reports_lost_positions() {
    let mut node = Node::with(|s| s.poll_batch = 2);
    let ids: Vec<_> = (0..3)
        .map(|i| node.publish_text("a", &format!("m{i}")))
        .collect();
    let b1 = node.publish_text("b", "b1");
    let c = node.connect();
    let since = cursor(&[("a", 0), ("b", 0)]);
    node.input(
        c,
        &get(&format!("/poll?ch=a,b&since={since}&timeout=0"), &[]),
    );
    let body = node.response(c).json();
    let shown: Vec<&str> = (body["messages"].as_array().unwrap().iter())
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["m0", "m1"], "a full batch");
    // `b` was not reached: it stays where it was; `a` moves to what was shown.
    let next = cursor(&[("a", ids[1].seq), ("b", 0)]);
    assert_eq!(body["next"], next.as_str());
    node.input(
        c,
        &get(&format!("/poll?ch=a,b&since={next}&timeout=0"), &[]),
    );
    let body = node.response(c).json();
    let shown: Vec<&str> = (body["messages"].as_array().unwrap().iter())
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["m2", "b1"]);
    assert_eq!(
        body["next"],
        cursor(&[("a", ids[2].seq), ("b", b1.seq)]).as_str()
    );
    // A cursor from another epoch: each channel reports its reset, then
    // what history has.
    let old = "000000000001;a=1,b=1";
    node.input(c, &get(&format!("/poll?ch=a,b&since={old}&timeout=0"), &[]));
    let body = node.response(c).json();
    let resets = body["resets"].as_array().unwrap();
    assert_eq!(resets.len(), 2);
    assert_eq!(
        (resets[0]["ch"].as_str(), resets[0]["reason"].as_str()),
        (Some("a"), Some("epoch"))
    );
}

#[test]
fn polls_of_several_channels_refuse_bad_requests_with_their_reason() {
    let mut node = Node::new();
    for (target, reason) in [
        (
            "/poll?timeout=0",
            "name at least one channel: /poll?ch=a,b\n",
        ),
        (
            "/poll?ch=a&since=nope",
            "invalid stream cursor \"nope\": expected <epoch>;<channel>=<seq>,…\n",
        ),
        ("/poll?ch=a%20b", "channel name may only contain"),
    ] {
        let c = node.connect();
        node.input(c, &get(target, &[]));
        let r = node.response(c);
        assert_eq!(r.status, 400, "{target}");
        assert!(r.text().starts_with(reason), "{target}: {}", r.text());
    }
}
