//! A node killed with SIGKILL and started again: a client of each
//! transport comes back with the ids it had, and is told `reset` with
//! reason `epoch` (its history is gone) — never a silent gap — then gets
//! what is published from then on.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{publish, recv_message, Server};
use eventsource_stream::Eventsource;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn assert_epoch_reset(v: &Value, since: &str) {
    assert_eq!(v["reason"], "epoch", "{v}");
    assert_eq!(v["since"], since, "{v}");
}

#[tokio::test]
async fn after_kill_9_every_transport_is_told_reset_epoch_then_served() {
    let mut old = Server::start(&[]);
    let a = publish(&old, "a", "text/plain", "before a").await;
    let b = publish(&old, "b", "text/plain", "before b").await;
    let old_epoch = a.split('-').next().unwrap().to_string();
    let cursor = format!(
        "{old_epoch};a={},b={}",
        a.rsplit('-').next().unwrap(),
        b.rsplit('-').next().unwrap()
    );
    Command::new("kill")
        .args(["-KILL", &old.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        old.wait_exit(Duration::from_secs(5)).is_some(),
        "the node died"
    );

    let node = Server::start(&[]);
    let http = reqwest::Client::new();

    // Event stream, one channel: the reset first.
    let resp = http
        .get(node.url("/sse/a"))
        .header("Last-Event-ID", &a)
        .send()
        .await
        .unwrap();
    let mut sse = resp.bytes_stream().eventsource();
    let reset = tokio::time::timeout(WAIT, sse.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reset.event, "reset");
    assert_epoch_reset(&serde_json::from_str(&reset.data).unwrap(), &a);

    // Event stream, two channels, from the composite cursor: one reset each.
    let resp = http
        .get(node.url("/sse?ch=a,b"))
        .header("Last-Event-ID", &cursor)
        .send()
        .await
        .unwrap();
    let mut multi = resp.bytes_stream().eventsource();
    let mut reset_channels = Vec::new();
    while reset_channels.len() < 2 {
        let e = tokio::time::timeout(WAIT, multi.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.event == "reset" {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["reason"], "epoch", "{v}");
            reset_channels.push(v["ch"].as_str().unwrap().to_string());
        }
    }
    reset_channels.sort();
    assert_eq!(reset_channels, ["a", "b"]);

    // Polls, one channel and several.
    let one: Value = http
        .get(node.url(&format!("/poll/a?timeout=0&since={a}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_epoch_reset(&one["reset"], &a);
    let many: Value = http
        .get(node.url("/poll?ch=a,b&timeout=0"))
        .header("If-None-Match", format!("\"{cursor}\""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resets = many["resets"].as_array().expect("resets");
    assert_eq!(resets.len(), 2, "{many}");
    assert!(resets.iter().all(|r| r["reason"] == "epoch"), "{many}");

    // WebSocket subscriber, JSON format.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(node.ws_url(&format!("/ws/a?format=json&since={a}")))
            .await
            .unwrap();
    let first = recv_message(&mut ws).await;
    assert_eq!(first["type"], "reset");
    assert_epoch_reset(&first, &a);

    // Multiplexed WebSocket.
    let (mut mux, _) = tokio_tungstenite::connect_async(node.ws_url("/ws"))
        .await
        .unwrap();
    mux.send(Message::text(
        json!({"type": "subscribe", "ch": "b", "since": b}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv_message(&mut mux).await["type"], "subscribed");
    let reset = recv_message(&mut mux).await;
    assert_eq!(reset["type"], "reset");
    assert_epoch_reset(&reset, &b);

    // Then what is published is delivered, with the new epoch.
    let fresh_a = publish(&node, "a", "text/plain", "after a").await;
    let fresh_b = publish(&node, "b", "text/plain", "after b").await;
    assert_ne!(fresh_a.split('-').next().unwrap(), old_epoch);
    let e = tokio::time::timeout(WAIT, sse.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.id.as_str(), e.data.as_str()),
        (fresh_a.as_str(), "after a")
    );
    let m = recv_message(&mut ws).await;
    assert_eq!(
        (m["id"].as_str(), m["data"].as_str()),
        (Some(fresh_a.as_str()), Some("after a"))
    );
    let m = recv_message(&mut mux).await;
    assert_eq!(
        (m["id"].as_str(), m["data"].as_str()),
        (Some(fresh_b.as_str()), Some("after b"))
    );
}

#[tokio::test]
async fn sigterm_drains_every_transport_and_exits_0_within_the_drain_timeout() {
    let mut node = Server::start(&["--drain-timeout", "5s", "--sse-retry", "2s"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url("/ws/d"))
        .await
        .unwrap();
    let sse = reqwest::get(node.url("/sse/d")).await.unwrap();
    let mut raw = sse.bytes_stream();
    let _ = tokio::time::timeout(WAIT, raw.next()).await.unwrap(); // retry: and the head
    let poll = tokio::spawn({
        let url = node.url("/poll/d?timeout=60");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    node.send_sigterm();

    // The WebSocket: 1001, and it answers the close.
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001);
    // Reading on sends our close in reply, as a client does; the node then
    // closes the socket.
    while let Some(m) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        if m.is_err() {
            break;
        }
    }
    // The event stream: a retry hint of 2-4 s, then the end.
    let mut tail = String::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, raw.next()).await.unwrap() {
        tail.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    // (After the stream's position event, and maybe a heartbeat.)
    let hint: u64 = (tail.rsplit_once("retry:").map(|(_, t)| t))
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("no retry hint: {tail:?}"))
        .parse()
        .unwrap();
    assert!((2000..=4000).contains(&hint), "{hint}");
    // The held long poll: 204 at once.
    assert_eq!(
        tokio::time::timeout(WAIT, poll).await.unwrap().unwrap(),
        204
    );
    // The node exits 0, within the drain timeout.
    let status = node.wait_exit(Duration::from_secs(6)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
