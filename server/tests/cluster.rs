//! Several nodes sharing channels through a real `redis-server` (Debian's,
//! started per test on a free port), with independent clients on every
//! transport: tokio-tungstenite (raw `/ws/{ch}` and multiplexed `/ws`),
//! SSE (reqwest + eventsource-stream) and long polls (reqwest).
//!
//! Each test checks what docs/cluster.md promises: every message once and
//! in order on every node, resume on any node, and explicit behaviour when
//! Redis is lost, restarted, paused, or drops a Pub/Sub message.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{recv_json, recv_message, Server, Ws};
use eventsource_stream::{Event, Eventsource};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

/// Two nodes on `redis`, and a reader of `ch` on the second (raw
/// WebSocket, JSON format), given time to follow the channel.
async fn two_nodes_and_a_reader(redis: &RedisServer, ch: &str) -> (Server, Server, Ws) {
    let (a, b) = (node(&[redis]), node(&[redis]));
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let reader = ws(&b, &format!("/ws/{ch}?format=json")).await;
    // The reader's subscription waits on B until B has followed the
    // channel and read its history from Redis, and a raw /ws/{ch} is not
    // told when that is done. A second subscriber is: its `subscribed`
    // comes after the same read, so from then on what is published reaches
    // the reader. (A fixed sleep was not enough on a loaded host: a message
    // published before the read was history to the reader, not news.)
    drop(mux(&b, ch, None).await);
    (a, b, reader)
}

fn node(redis: &[&RedisServer]) -> Server {
    let urls: Vec<&str> = redis.iter().map(|r| r.url.as_str()).collect();
    Server::start(&["--redis", &urls.join(",")])
}

/// Publishes over HTTP: the status and the answer's body.
async fn try_publish(server: &Server, ch: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/pub/{ch}")))
        .header("Content-Type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn publish(server: &Server, ch: &str, body: &str) -> String {
    let (status, answer) = try_publish(server, ch, body).await;
    assert_eq!(status, 200, "publish: {answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn ws(server: &Server, path: &str) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url(path))
        .await
        .expect("upgrade")
        .0
}

/// A multiplexed `/ws` subscribed to `ch` (from `since`, if given).
async fn mux(server: &Server, ch: &str, since: Option<&str>) -> Ws {
    let mut ws = ws(server, "/ws").await;
    let mut cmd = json!({"type": "subscribe", "ch": ch, "rid": 1});
    if let Some(s) = since {
        cmd["since"] = json!(s);
    }
    ws.send(Message::text(cmd.to_string())).await.unwrap();
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    ws
}

async fn sse(
    server: &Server,
    path: &str,
    last_event_id: Option<&str>,
) -> impl Stream<Item = Event> + Unpin {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    Box::pin(resp.bytes_stream().eventsource().map(|e| e.unwrap()))
}

/// The next SSE event that carries data (not a position-only event).
async fn sse_next(s: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    loop {
        let e = tokio::time::timeout(WAIT, s.next())
            .await
            .expect("no event in time")
            .expect("stream ended");
        if !e.data.is_empty() {
            return e;
        }
    }
}

/// Reads `n` messages from a WebSocket in JSON format: (id, data).
async fn ws_take(ws: &mut Ws, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = recv_message(ws).await;
        if m["type"] == "reset" {
            panic!("unexpected reset: {m}");
        }
        got.push((
            m["id"].as_str().unwrap().to_string(),
            m["data"].as_str().unwrap().to_string(),
        ));
    }
    got
}

/// Long-polls `ch` on `server` from `since` until `n` messages came.
async fn poll_take(
    server: &Server,
    ch: &str,
    mut since: String,
    n: usize,
) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        assert!(Instant::now() < deadline, "polls got {} of {n}", got.len());
        let r = client
            .get(server.url(&format!("/poll/{ch}?since={since}&timeout=5")))
            .send()
            .await
            .unwrap();
        if r.status() == 204 {
            continue;
        }
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(
            body.get("resets").is_none() && body.get("reset").is_none(),
            "{body}"
        );
        for m in body["messages"].as_array().unwrap() {
            got.push((
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
            ));
        }
        since = body["next"].as_str().unwrap().to_string();
    }
    got
}

/// Short-polls `ch` on `server` (`timeout=0`, the cursor in
/// `If-None-Match`) from `since` until `n` messages came; a poll with
/// nothing new must be `304` with the same `ETag`.
async fn short_poll_take(
    server: &Server,
    ch: &str,
    since: String,
    n: usize,
) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut got = Vec::new();
    let mut etag = format!("\"{since}\"");
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "short polls got {} of {n}",
            got.len()
        );
        let r = client
            .get(server.url(&format!("/poll/{ch}?timeout=0")))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        if r.status() == 304 {
            assert_eq!(tag, etag, "unchanged");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        for m in body["messages"].as_array().unwrap() {
            got.push((
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
            ));
        }
        etag = tag;
    }
    // Nothing more: 304.
    let r = client
        .get(server.url(&format!("/poll/{ch}?timeout=0")))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    got
}

/// The position a fresh subscription starts from, as a mux `subscribed`
/// answer names it.
async fn position(server: &Server, ch: &str) -> String {
    let mut ws = ws(server, "/ws").await;
    let cmd = json!({"type": "subscribe", "ch": ch});
    ws.send(Message::text(cmd.to_string())).await.unwrap();
    let answer = recv_json(&mut ws).await;
    answer["id"]
        .as_str()
        .expect("an empty channel's position")
        .to_string()
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `/readyz` answers `status`.
async fn wait_ready(server: &Server, status: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        if get(server, "/readyz").await.0 == status {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn seqs(got: &[(String, String)]) -> Vec<u64> {
    got.iter()
        .map(|(id, _)| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn three_nodes_every_transport_every_message_once_in_order() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&[&redis]), node(&[&redis]), node(&[&redis]));
    let ch = "room";
    let start = position(&b, ch).await;
    // Subscribers on B and C over every transport, and one on A: a node
    // never delivers its own publish twice.
    // B's mux is answered once B follows the channel: from then on every
    // message reaches B through Pub/Sub (counted below).
    let _mux_b = mux(&b, ch, None).await;
    let mut raw_b = ws(&b, &format!("/ws/{ch}?format=json")).await;
    let mut mux_c = mux(&c, ch, None).await;
    let mut sse_c = sse(&c, &format!("/sse/{ch}"), None).await;
    let mut raw_a = ws(&a, &format!("/ws/{ch}?format=json")).await;
    // Wait until every node follows the channel (its subscription is
    // answered): published now, it reaches everyone live.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let n = 60;
    let mut sent = Vec::new();
    for i in 0..n {
        // Publish on every node in turn: one order for all.
        let on = [&a, &b, &c][i % 3];
        let body = format!("m{i}");
        sent.push((publish(on, ch, &body).await, body));
    }
    assert_eq!(seqs(&sent), (1..=n as u64).collect::<Vec<_>>());
    let from_poll = poll_take(&b, ch, start.clone(), n).await;
    let from_short_polls = short_poll_take(&c, ch, start.clone(), n).await;

    let got_raw_b = ws_take(&mut raw_b, n).await;
    let got_mux_c = ws_take(&mut mux_c, n).await;
    let got_raw_a = ws_take(&mut raw_a, n).await;
    let mut got_sse = Vec::new();
    while got_sse.len() < n {
        let e = sse_next(&mut sse_c).await;
        assert_ne!(e.event, "reset", "{e:?}");
        got_sse.push((e.id, e.data));
    }
    for (name, got) in [
        ("raw ws on B", &got_raw_b),
        ("mux on C", &got_mux_c),
        ("raw ws on A", &got_raw_a),
        ("sse on C", &got_sse),
        ("long poll on B", &from_poll),
        ("short polls on C", &from_short_polls),
    ] {
        assert_eq!(got, &sent, "{name}");
    }
    // Nothing more: no duplicate arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for ws in [&mut raw_b, &mut mux_c, &mut raw_a] {
        let more = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
        if let Ok(Some(Ok(Message::Text(t)))) = more {
            panic!("extra message: {t}");
        }
    }
    assert_eq!(start.rsplit_once('-').unwrap().1, "0");
    // Latency histograms: B published a third of the messages itself.
    let count = "ringcast_cluster_delivery_seconds_count";
    assert_eq!(b.metric(count, "origin=\"local\"").await, n as u64 / 3);
    assert_eq!(b.metric(count, "origin=\"remote\"").await, 2 * n as u64 / 3);
    let round_trips = a.metric("ringcast_redis_publish_seconds_count", "").await;
    assert_eq!(round_trips, n as u64 / 3, "A's own publishes");
}

#[tokio::test]
async fn resume_on_any_node_with_an_id_from_another() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&[&redis]), node(&[&redis]), node(&[&redis]));
    let ch = "resume";
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(publish(&a, ch, &format!("r{i}")).await);
    }
    // Neither B nor C follows the channel yet: their answers come from
    // Redis history.
    let mut s = sse(&b, &format!("/sse/{ch}"), Some(&ids[3])).await;
    for want in 5..=10 {
        let e = sse_next(&mut s).await;
        assert_eq!(
            (e.id.as_str(), e.data),
            (ids[want - 1].as_str(), format!("r{want}"))
        );
    }
    let got = poll_take(&c, ch, ids[6].clone(), 3).await;
    assert_eq!(seqs(&got), [8, 9, 10]);
    let mut m = mux(&c, ch, Some(&ids[8])).await;
    assert_eq!(ws_take(&mut m, 1).await[0].1, "r10");
    let mut raw = ws(&b, &format!("/ws/{ch}?format=json&since={}", ids[0])).await;
    assert_eq!(
        seqs(&ws_take(&mut raw, 9).await),
        (2..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn redis_restarted_with_persistence_loses_nothing() {
    let mut redis = RedisServer::start_persistent();
    let ch = "durable";
    let (a, b, mut raw) = two_nodes_and_a_reader(&redis, ch).await;
    let first = publish(&a, ch, "before").await;
    redis.restart();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let second = publish(&a, ch, "after").await;
    let got = ws_take(&mut raw, 2).await;
    assert_eq!(
        got,
        [
            (first.clone(), "before".into()),
            (second.clone(), "after".into())
        ]
    );
    assert_eq!(seqs(&got), [1, 2], "same epoch, numbering goes on");
    // A client resuming on another node from the first id: no reset.
    let c = node(&[&redis]);
    let resumed = poll_take(&c, ch, first, 1).await;
    assert_eq!(resumed, [(second, "after".into())]);
}

#[tokio::test]
async fn redis_restarted_without_persistence_is_an_explicit_epoch_reset() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&[&redis]), node(&[&redis]));
    let ch = "volatile";
    let mut raw = ws(&b, &format!("/ws/{ch}?format=json")).await;
    let mut m = mux(&b, ch, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = publish(&a, ch, "old").await;
    assert_eq!(ws_take(&mut raw, 1).await[0].0, old);
    assert_eq!(ws_take(&mut m, 1).await[0].0, old);
    redis.restart();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let new = publish(&a, ch, "new").await;
    let (old_epoch, new_epoch) = (
        old.split_once('-').unwrap().0,
        new.split_once('-').unwrap().0,
    );
    assert_ne!(old_epoch, new_epoch);
    // Live subscribers: `reset` (epoch) from where they were, then the
    // new epoch's first message.
    for ws in [&mut raw, &mut m] {
        let reset = recv_message(ws).await;
        assert_eq!(reset["type"], "reset", "{reset}");
        assert_eq!(reset["reason"], "epoch");
        assert_eq!(reset["since"], old.as_str());
        assert_eq!(reset["epoch"], new_epoch);
        let next = recv_message(ws).await;
        assert_eq!(
            (next["id"].as_str(), next["data"].as_str()),
            (Some(new.as_str()), Some("new"))
        );
    }
    // A client resuming with the old id, on a node that never saw it.
    let c = node(&[&redis]);
    let r = reqwest::get(c.url(&format!("/poll/{ch}?since={old}&timeout=0")))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reset"]["reason"], "epoch", "{body}");
    assert_eq!(body["messages"][0]["id"], new.as_str());
    let metric = b.metric("ringcast_redis_epoch_changes_total", "").await;
    assert!(metric >= 1, "{metric}");
}

#[tokio::test]
async fn redis_killed_refuses_publishes_goes_unready_and_recovers() {
    let mut redis = RedisServer::start();
    let ch = "outage";
    let (a, b, mut raw) = two_nodes_and_a_reader(&redis, ch).await;
    publish(&a, ch, "one").await;
    assert_eq!(ws_take(&mut raw, 1).await[0].1, "one");
    // A node whose /ws clients may publish, to see their refusal.
    let c = Server::start(&["--redis", &redis.url, "--client-publish"]);
    let mut pubber = ws(&c, "/ws").await;

    redis.kill();
    wait_ready(&a, 503).await;
    wait_ready(&c, 503).await;
    let (status, reason) = try_publish(&a, ch, "lost").await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("redis"), "{reason}");
    let r = reqwest::Client::new()
        .post(a.url(&format!("/pub/{ch}")))
        .body("x")
        .header("Content-Type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, health) = get(&a, "/healthz").await;
    assert_eq!(status, 200);
    assert!(health.starts_with("degraded"), "{health}");
    // `/ws` publishes are refused too, with a reason the client can act on.
    let cmd = json!({"type": "publish", "ch": ch, "data": "no", "rid": 9});
    pubber.send(Message::text(cmd.to_string())).await.unwrap();
    let refused = recv_json(&mut pubber).await;
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["code"].as_str(),
            refused["rid"].as_i64()
        ),
        (Some("error"), Some("unavailable"), Some(9)),
        "{refused}"
    );
    assert_eq!(refused["retry_after"], 1, "{refused}");
    let unavailable = "reason=\"unavailable\"";
    assert_eq!(
        c.metric("ringcast_requests_refused_total", unavailable)
            .await,
        1
    );
    assert!(a.metric("ringcast_redis_publish_failures_total", "").await >= 1);

    redis.restart();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    assert_eq!(get(&a, "/healthz").await.1, "ok\n");
    // The subscriber stayed connected; what is published now reaches it.
    let two = publish(&a, ch, "two").await;
    // Redis lost everything (no persistence): the subscriber is told
    // (`reset`, epoch), "lost" never arrives, and "two" does.
    let reset = recv_message(&mut raw).await;
    assert_eq!(
        (reset["type"].as_str(), reset["reason"].as_str()),
        (Some("reset"), Some("epoch"))
    );
    let next = recv_message(&mut raw).await;
    assert_eq!(
        (next["id"].as_str(), next["data"].as_str()),
        (Some(two.as_str()), Some("two"))
    );
    assert!(b.metric("ringcast_redis_reconnects_total", "").await >= 1);
}

#[tokio::test]
async fn a_pubsub_blip_loses_nothing_and_duplicates_nothing() {
    let redis = RedisServer::start();
    let ch = "blip";
    let (a, b, mut raw) = two_nodes_and_a_reader(&redis, ch).await;
    let mut s = sse(&b, &format!("/sse/{ch}"), None).await;
    let mut con = redis.connection().await;
    let mut sent = Vec::new();
    for i in 0..40 {
        if i == 10 || i == 25 {
            // Drop every Pub/Sub connection (B's and A's): what is
            // published until they are back arrives through history.
            let _: () = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut con)
                .await
                .unwrap();
        }
        // Some publishes fail while A itself is unready: retried, as a
        // client would after a 503.
        let body = format!("b{i}");
        loop {
            match try_publish(&a, ch, &body).await {
                (200, answer) => {
                    let v: Value = serde_json::from_str(&answer).unwrap();
                    sent.push((v["id"].as_str().unwrap().to_string(), body));
                    break;
                }
                (503, _) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(ws_take(&mut raw, 40).await, sent);
    let mut got_sse = Vec::new();
    while got_sse.len() < 40 {
        let e = sse_next(&mut s).await;
        got_sse.push((e.id, e.data));
    }
    assert_eq!(got_sse, sent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = tokio::time::timeout(Duration::from_millis(100), raw.next()).await;
    assert!(
        !matches!(more, Ok(Some(Ok(Message::Text(_))))),
        "duplicate: {more:?}"
    );
    assert!(b.metric("ringcast_redis_reconnects_total", "").await >= 1);
}

/// Publishes to `ch` the way the script does, but announces the message
/// on another topic: Redis has it, Pub/Sub never brings it.
async fn publish_unannounced(con: &mut redis::aio::MultiplexedConnection, ch: &str, body: &str) {
    let script = redis::Script::new(include_str!("../src/cluster/publish.lua"));
    let meta = format!("rc:{{{ch}}}:meta");
    let log = format!("rc:{{{ch}}}:log");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: (String, u64) = script
        .key(meta)
        .key(log)
        .arg(body)
        .arg("t")
        .arg(100)
        .arg(60_000)
        .arg(now)
        .arg("0000000000aa")
        .arg("nowhere")
        .arg("0")
        .arg(60_000)
        .arg("0000000000bb")
        .invoke_async(con)
        .await
        .unwrap();
}

#[tokio::test]
async fn gaps_and_silent_stalls_are_repaired_from_history() {
    let redis = RedisServer::start();
    let ch = "gappy";
    let (a, b, mut raw) = two_nodes_and_a_reader(&redis, ch).await;
    let mut con = redis.connection().await;
    publish(&a, ch, "1").await;
    publish_unannounced(&mut con, ch, "2").await;
    publish(&a, ch, "3").await;
    let got = ws_take(&mut raw, 3).await;
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(seqs(&got), [1, 2, 3]);
    assert_eq!(b.metric("ringcast_redis_gaps_repaired_total", "").await, 1);
    // The last message lost, with nothing after it to show the gap: the
    // periodic check (every 5 s) finds the channel behind.
    publish_unannounced(&mut con, ch, "4").await;
    let got = ws_take(&mut raw, 1).await;
    assert_eq!((seqs(&got)[0], got[0].1.as_str()), (4, "4"));
    assert!(b.metric("ringcast_redis_stalls_repaired_total", "").await >= 1);
}

#[tokio::test]
async fn redis_paused_past_the_timeouts_then_resumed() {
    let redis = RedisServer::start();
    let ch = "paused";
    let (a, b, mut raw) = two_nodes_and_a_reader(&redis, ch).await;
    let first = publish(&a, ch, "before").await;
    redis.pause(true);
    wait_ready(&b, 503).await;
    wait_ready(&a, 503).await;
    let (status, _) = try_publish(&a, ch, "during").await;
    assert_eq!(status, 503);
    // Longer than the command timeout (2 s) and the ping timeout (1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.pause(false);
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let after = publish(&a, ch, "after").await;
    let got = ws_take(&mut raw, 2).await;
    assert_eq!(got, [(first, "before".into()), (after, "after".into())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = tokio::time::timeout(Duration::from_millis(100), raw.next()).await;
    assert!(
        !matches!(more, Ok(Some(Ok(Message::Text(_))))),
        "duplicate: {more:?}"
    );
}

#[tokio::test]
async fn two_redis_servers_share_the_channels() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let (a, b) = (node(&[&r1, &r2]), node(&[&r2, &r1]));
    let channels: Vec<String> = (0..16).map(|i| format!("spread{i}")).collect();
    let mut subs = Vec::new();
    for ch in &channels {
        subs.push(mux(&b, ch, None).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::new();
    for (ch, sub) in channels.iter().zip(&mut subs) {
        let id = publish(&a, ch, ch).await;
        assert_eq!(ws_take(sub, 1).await, [(id.clone(), ch.clone())]);
        ids.push(id);
    }
    for r in [&r1, &r2] {
        let mut con = r.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("rc:*:meta")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(
            !keys.is_empty() && keys.len() < 16,
            "{} holds {keys:?}",
            r.url
        );
    }
    // Resume on the other node from each channel's start: its message.
    for (ch, id) in channels.iter().zip(&ids) {
        let from_start = format!("{}-0", id.split_once('-').unwrap().0);
        assert_eq!(
            poll_take(&a, ch, from_start, 1).await,
            [(id.clone(), ch.clone())]
        );
    }
    // One of the two servers killed and restarted (no persistence): the
    // nodes go unready and come back; every channel reaches its subscriber
    // again, those of the restarted server after a `reset` (epoch).
    let mut r2 = r2;
    r2.kill();
    wait_ready(&a, 503).await;
    r2.restart();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    for (ch, sub) in channels.iter().zip(&mut subs) {
        let id = publish(&a, ch, "again").await;
        let mut m = recv_message(sub).await;
        if m["type"] == "reset" {
            assert_eq!(m["reason"], "epoch", "{m}");
            m = recv_message(sub).await;
        }
        assert_eq!(
            (m["id"].as_str(), m["data"].as_str()),
            (Some(id.as_str()), Some("again"))
        );
    }
}

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error_unless_waiting() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}/");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--listen", "127.0.0.1:0", "--redis", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("--redis-wait"),
        "{err}"
    );

    // With --redis-wait the node starts once Redis does.
    let redis = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        RedisServer::start_on_port(port)
    });
    let node = Server::start(&["--redis", &url, "--redis-wait"]);
    let redis = redis.join().unwrap();
    wait_ready(&node, 200).await;
    let id = publish(&node, "waited", "x").await;
    assert!(id.ends_with("-1"), "{id}");
    assert!(
        node.log().contains("waiting (--redis-wait)"),
        "{}",
        node.log()
    );
    drop(redis);
}

/// The members `GET /presence/{ch}` lists on `server`.
async fn presence_of(server: &Server, ch: &str) -> Vec<String> {
    let (status, body) = get(server, &format!("/presence/{ch}")).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut clients: Vec<String> = (v["clients"].as_array().unwrap().iter())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    clients.sort();
    clients
}

/// Waits until `pred` holds of `server`'s presence list of `ch`.
async fn wait_presence(server: &Server, ch: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = presence_of(server, ch).await;
        if pred(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "presence stayed {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next `joined` or `left` event on a multiplexed WebSocket.
async fn presence_event(ws: &mut Ws) -> (String, String) {
    loop {
        let m = recv_json(ws).await;
        if m["type"] == "joined" || m["type"] == "left" {
            return (
                m["type"].as_str().unwrap().into(),
                m["client"].as_str().unwrap().into(),
            );
        }
    }
}

#[tokio::test]
async fn presence_spans_the_nodes_and_a_dead_node_stops_counting() {
    let redis = RedisServer::start();
    let args = |url: &str| {
        vec![
            "--redis".to_string(),
            url.to_string(),
            "--presence-ttl".into(),
            "3s".into(),
        ]
    };
    let a = Server::start(
        &args(&redis.url)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut b = Server::start(
        &args(&redis.url)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let ch = "lobby";
    // A watcher on A; a member joins on B: A's watcher hears it, and both
    // nodes list both.
    let mut watcher = ws(&a, "/ws").await;
    let cmd = json!({"type": "subscribe", "ch": ch, "rid": 1});
    watcher.send(Message::text(cmd.to_string())).await.unwrap();
    let me = recv_json(&mut watcher).await["client"]
        .as_str()
        .unwrap()
        .to_string();
    let mut member = ws(&b, "/ws").await;
    member.send(Message::text(cmd.to_string())).await.unwrap();
    let them = recv_json(&mut member).await["client"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = presence_event(&mut watcher).await;
    if seen.1 == me {
        seen = presence_event(&mut watcher).await; // its own join first
    }
    assert_eq!(seen, ("joined".into(), them.clone()));
    let mut both = vec![me.clone(), them.clone()];
    both.sort();
    assert_eq!(wait_presence(&a, ch, |p| p.len() == 2).await, both);
    assert_eq!(presence_of(&b, ch).await, both);
    // The mux presence command answers for the whole cluster too.
    let q = json!({"type": "presence", "ch": ch, "rid": 2});
    watcher.send(Message::text(q.to_string())).await.unwrap();
    let answer = loop {
        let m = recv_json(&mut watcher).await;
        if m["type"] == "presence" {
            break m;
        }
    };
    let mut listed: Vec<String> = (answer["clients"].as_array().unwrap().iter())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, both);

    // Node B dies without a word: its member stops counting once its
    // entry expires (3 s), and A's watcher is told it left.
    let pid = b.pid();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = b.wait_exit(Duration::from_secs(5));
    assert_eq!(presence_event(&mut watcher).await, ("left".into(), them));
    assert_eq!(wait_presence(&a, ch, |p| p.len() == 1).await, [me]);
}

#[tokio::test]
async fn a_redis_cluster_with_sharded_pubsub() {
    let rc = common::redis_server::RedisCluster::start(3);
    let (a, b) = (
        Server::start(&["--redis", &rc.urls()]),
        Server::start(&["--redis", &rc.urls()]),
    );
    let channels: Vec<String> = (0..12).map(|i| format!("slot{i}")).collect();
    let mut subs = Vec::new();
    for ch in &channels {
        subs.push(mux(&b, ch, None).await);
    }
    let mut first_ids = Vec::new();
    for (ch, sub) in channels.iter().zip(&mut subs) {
        let one = publish(&a, ch, "one").await;
        let two = publish(&b, ch, "two").await;
        assert_eq!(
            ws_take(sub, 2).await,
            [(one.clone(), "one".into()), (two, "two".into())]
        );
        first_ids.push(one);
    }
    // Resume on A, from an id B's subscriber got.
    let got = poll_take(&a, &channels[0], first_ids[0].clone(), 1).await;
    assert_eq!(got[0].1, "two");
    // The channels' keys are spread over the masters, and their topics are
    // sharded (SSUBSCRIBE): no node has a plain Pub/Sub channel.
    let mut masters_with_keys = 0;
    let mut shard_channels = 0;
    for &port in &rc.ports {
        let keys = rc.cli(port, &["--scan", "--pattern", "rc:*:meta"]);
        masters_with_keys += usize::from(!keys.trim().is_empty());
        shard_channels += rc
            .cli(port, &["pubsub", "shardchannels"])
            .lines()
            .filter(|l| l.starts_with("rc:{"))
            .count();
        assert_eq!(
            rc.cli(port, &["pubsub", "channels"]).trim(),
            "",
            "plain Pub/Sub on {port}"
        );
    }
    assert!(
        masters_with_keys >= 2,
        "keys on {masters_with_keys} masters"
    );
    assert_eq!(
        shard_channels, 12,
        "every channel B follows, as a sharded channel"
    );

    // A master paused: unready (publishes refused) until it answers again;
    // then every channel goes on, nothing lost or repeated.
    let paused = rc.pid(1);
    let signal = |s: &str| {
        std::process::Command::new("kill")
            .args([s, &paused.to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    wait_ready(&b, 503).await;
    assert_eq!(try_publish(&a, &channels[0], "no").await.0, 503);
    signal("-CONT");
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    for (ch, sub) in channels.iter().zip(&mut subs) {
        let three = publish(&a, ch, "three").await;
        assert_eq!(ws_take(sub, 1).await, [(three, "three".into())]);
    }
}
