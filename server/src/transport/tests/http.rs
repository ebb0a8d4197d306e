//! HTTP/1.1 connections: the handshake timeout (a head that stops
//! arriving gets `408`, a silent peer is closed), the keep-alive idle
//! timeout, pipelined publishes answered in request order, body limits,
//! and malformed requests.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::metrics::Refusal;
use crate::transport::testing::{get, post, text, upgrade, Node, EPOCH};

/// Heads have one second (ten ticks); idle connections three.
fn node() -> Node {
    Node::with(|s| {
        s.handshake_timeout = Duration::from_secs(1);
        s.idle_timeout = Duration::from_secs(3);
    })
}

fn refused(node: &Node, why: Refusal) -> u64 {
    node.metrics().refused[why as usize].load(Relaxed)
}

#[test]
fn a_head_that_stops_arriving_gets_408_at_the_handshake_timeout() {
    let mut node = node();
    let c = node.connect();
    node.advance(3);
    node.input(c, b"GET /healthz HTTP/1.1\r\n");
    node.advance(3);
    node.input(c, b"Host: x\r\n"); // trickling in buys no time
    node.advance(3);
    assert_eq!(node.output(c), b"");
    node.advance(1);
    let r = node.response(c);
    assert_eq!(r.status, 408);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.text(), "request timeout\n");
    assert!(node.is_closed(c));
    assert_eq!(refused(&node, Refusal::Timeout), 1);
}

#[test]
fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let mut node = node();
    let c = node.connect();
    node.advance(9);
    assert!(!node.is_closed(c));
    node.advance(1);
    assert!(node.is_closed(c));
    assert_eq!(node.output(c), b"", "nothing to answer");
    assert_eq!(refused(&node, Refusal::Timeout), 1);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let mut node = node();
    let c = node.connect();
    node.advance(5);
    node.input(c, &get("/healthz", &[]));
    assert_eq!(node.response(c).status, 200);
    // Another request within the idle timeout starts it again.
    node.advance(29);
    node.input(c, &get("/healthz", &[]));
    assert_eq!(node.response(c).status, 200);
    node.advance(29);
    assert!(!node.is_closed(c));
    node.advance(1);
    assert!(node.is_closed(c), "idle for the whole --idle-timeout");
    assert_eq!(node.output(c), b"");
    assert_eq!(refused(&node, Refusal::Timeout), 0, "not a refusal");
}

#[test]
fn pipelined_publishes_are_answered_in_request_order() {
    let mut node = Node::new();
    let c = node.connect();
    let mut input = Vec::new();
    for body in ["one", "two", "three"] {
        input.extend(post("/pub/a", "text/plain", body.as_bytes()));
    }
    input.extend(get("/healthz", &[]));
    // The owner's ids come back newest request first, as they may from
    // several owners.
    node.hold_mail();
    node.input(c, &input);
    assert_eq!(node.output(c), b"");
    node.release_mail_reversed();
    let answers = node.responses(c);
    let bodies: Vec<String> = answers.iter().map(|r| r.text().to_string()).collect();
    let id = |seq: u64| format!("{{\"id\":\"{EPOCH:012x}-{seq}\"}}\n");
    // The last request was published first (id 1); each answer still goes
    // to its own request, in request order; the health check waited.
    assert_eq!(bodies, [id(3), id(2), id(1), "ok\n".into()]);
    assert!(answers.iter().all(|r| r.status == 200));
}

#[test]
fn a_publish_body_over_the_limit_is_413() {
    let mut node = Node::with(|s| {
        s.max_message_size = 100;
        s.max_batch_size = 200;
    });
    let c = node.connect();
    node.input(c, &post("/pub/a", "text/plain", &[b'x'; 100]));
    assert_eq!(node.response(c).status, 200, "at the limit");
    node.input(c, &post("/pub/a", "text/plain", &[b'x'; 101]));
    let r = node.response(c);
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        "body of 101 bytes is over the limit of 100 bytes\n"
    );
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(node.is_closed(c));

    // A chunked body, as soon as its chunks go over.
    let c = node.connect();
    let mut chunked =
        b"POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend(b"65\r\n");
    chunked.extend([b'x'; 0x65]);
    node.input(c, &chunked);
    assert_eq!(node.response(c).status, 413);
    assert!(node.is_closed(c));

    // A batch has its own limit.
    let c = node.connect();
    let line = format!("\"{}\"\n", "y".repeat(50));
    node.input(
        c,
        &post("/pub/a", "application/x-ndjson", line.repeat(3).as_bytes()),
    );
    assert_eq!(node.response(c).status, 200);
    node.input(
        c,
        &post("/pub/a", "application/x-ndjson", line.repeat(4).as_bytes()),
    );
    assert_eq!(node.response(c).status, 413);
}

#[test]
fn a_bad_request_line_is_400_and_closes() {
    let mut node = Node::new();
    let c = node.connect();
    let mut input = b"GET /healthz\r\n\r\n".to_vec();
    input.extend(get("/healthz", &[]));
    node.input(c, &input);
    let r = node.response(c);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(node.is_closed(c));
    assert_eq!(node.output(c), b"", "what followed is not read");
    assert_eq!(refused(&node, Refusal::BadRequest), 1);
}

#[test]
fn an_answer_still_queued_when_the_drain_starts_is_sent_before_the_close() {
    // Answered, but not yet taken by the socket (a busy host): the drain
    // closes the keep-alive connection only once the answer is out. Closing
    // at once dropped it, and the client saw its request go unanswered.
    let mut node = node();
    let c = node.connect();
    node.stop_reading(c);
    node.input(c, &get("/healthz", &[]));
    assert!(node.queued(c) > 0, "the answer waits in the queue");
    node.shutdown();
    assert!(!node.is_closed(c), "closed with its answer unsent");
    node.resume_reading(c);
    assert_eq!(node.response(c).status, 200);
    assert!(node.is_closed(c));
}

#[test]
fn while_draining_requests_get_503_with_connection_close_but_metrics_answer() {
    let mut node = node();
    // Connected just before the drain, its request not sent yet: it is
    // answered, not dropped. An idle keep-alive connection is closed.
    let early = node.connect();
    let idle = node.connect();
    node.input(idle, &get("/healthz", &[]));
    assert_eq!(node.response(idle).status, 200);
    node.shutdown();
    assert!(node.is_closed(idle));
    node.input(early, &get("/healthz", &[]));
    assert_eq!(node.response(early).status, 503);
    for (target, body) in [
        ("/healthz", "draining\n"),
        (
            "/ws/a",
            "draining: this node is shutting down; retry on another node\n",
        ),
        (
            "/poll/a",
            "draining: this node is shutting down; retry on another node\n",
        ),
    ] {
        let c = node.connect();
        node.input(c, &get(target, &[]));
        let r = node.response(c);
        assert_eq!((r.status, r.text()), (503, body), "{target}");
        assert_eq!(r.header("Connection"), Some("close"));
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(node.is_closed(c), "{target}");
    }
    let c = node.connect();
    node.input(c, &post("/pub/a", "text/plain", b"x"));
    assert_eq!(node.response(c).status, 503);
    assert_eq!(refused(&node, Refusal::Draining), 5);
    // A preflight is answered, so the page can read the 503 that follows.
    let c = node.connect();
    node.input(
        c,
        b"OPTIONS /ack/a HTTP/1.1\r\nHost: x\r\nOrigin: http://app.test\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\n\r\n",
    );
    let r = node.response(c);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(r
        .header("Access-Control-Allow-Methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(node.is_closed(c));
    assert_eq!(refused(&node, Refusal::Draining), 5);
    let c = node.connect();
    node.input(c, &get("/metrics", &[]));
    let r = node.response(c);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("reason=\"draining\"} 5"), "{}", r.text());
}

#[test]
fn a_transport_turned_off_answers_501_naming_what_the_node_offers() {
    use crate::config::Transports;
    let mut node = Node::with(|s| {
        s.transports = Transports::parse("sse,poll").unwrap();
    });
    let off = "is off on this node; it offers sse,poll\n";
    for (target, name) in [
        ("/ws/a", "ws"),
        ("/ws", "ws"),
        ("/poll/a?timeout=5", "longpoll"),
        ("/poll/a", "longpoll"),
    ] {
        let c = node.connect();
        node.input(c, &get(target, &[]));
        let r = node.response(c);
        assert_eq!(r.status, 501, "{target}");
        assert_eq!(r.text(), format!("the {name} transport {off}"), "{target}");
    }
    assert_eq!(refused(&node, Refusal::TransportOff), 4);
    // What is on works.
    let c = node.connect();
    node.input(c, &get("/poll/a?timeout=0", &[]));
    assert_eq!(node.response(c).status, 200);
    node.input(c, &get("/sse/a", &[]));
    assert_eq!(node.response(c).status, 200);
    let mut node = Node::with(|s| s.transports = Transports::parse("ws,longpoll").unwrap());
    for (target, name) in [
        ("/sse/a", "sse"),
        ("/sse?ch=a,b", "sse"),
        ("/poll/a?timeout=0", "poll"),
    ] {
        let c = node.connect();
        node.input(c, &get(target, &[]));
        let r = node.response(c);
        let reason = format!("the {name} transport is off on this node; it offers ws,longpoll\n");
        assert_eq!((r.status, r.text()), (501, reason.as_str()), "{target}");
    }
}

#[test]
fn past_max_channels_new_channels_are_refused_and_old_ones_served() {
    let mut node = Node::with(|s| s.max_channels = 2);
    for ch in ["a", "b"] {
        let c = node.connect();
        node.input(c, &post(&format!("/pub/{ch}"), "text/plain", b"x"));
        assert_eq!(node.response(c).status, 200, "{ch}");
    }
    let reason = "the node holds its limit of 2 channels (--max-channels); retry later";
    // Publishing, streaming, polling or subscribing to a third: 503.
    for request in [
        post("/pub/c", "text/plain", b"x"),
        get("/sse/c", &[]),
        get("/sse?ch=a,c", &[]),
        get("/poll/c?timeout=0", &[]),
        get("/poll?ch=a,c&timeout=0", &[]),
        upgrade("/ws/c"),
    ] {
        let c = node.connect();
        node.input(c, &request);
        let r = node.response(c);
        assert_eq!((r.status, r.text().trim()), (503, reason));
        assert_eq!(
            r.header("retry-after"),
            Some("1"),
            "{}",
            String::from_utf8_lossy(&request)
        );
    }
    assert_eq!(refused(&node, Refusal::ChannelLimit), 6);
    // The two it holds are served as before.
    let c = node.connect();
    node.input(c, &get("/poll/a?timeout=0", &[]));
    assert_eq!(node.response(c).status, 200);
    let ws = node.open_ws("/ws/b");
    assert!(!node.is_closed(ws));
    // On /ws, an error that names the limit; the connection stays.
    let mux = node.open_ws("/ws");
    node.input(mux, &text(r#"{"type":"subscribe","ch":"c","rid":1}"#));
    let e = node.json(mux);
    assert_eq!(
        (e[0]["code"].as_str(), e[0]["reason"].as_str()),
        (Some("channel_limit"), Some(reason))
    );
    node.input(mux, &text(r#"{"type":"subscribe","ch":"a","rid":2}"#));
    assert_eq!(node.json(mux)[0]["type"], "subscribed");
}

#[test]
fn a_failed_store_makes_readyz_503_and_healthz_degraded() {
    let mut node = node();
    let c = node.connect();
    node.input(c, &get("/readyz", &[]));
    assert_eq!(node.response(c).text(), "ready\n");
    node.fail_store("writing to data directory /d failed: No space left on device (os error 28)");
    node.input(c, &get("/readyz", &[]));
    let r = node.response(c);
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "unready: store failed: writing to data directory /d failed: No space left on device (os error 28)\n"
    );
    node.input(c, &get("/healthz", &[]));
    let r = node.response(c);
    assert_eq!(
        r.status, 200,
        "alive: ephemeral publishes and delivery go on"
    );
    assert!(
        r.text().starts_with("degraded: store failed"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("No space left on device"), "{}", r.text());
}
