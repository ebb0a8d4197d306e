//! All four transports on one channel model, with independent clients:
//! Server-Sent Events (reqwest + eventsource-stream), long and short polling
//! (reqwest), WebSocket (tokio-tungstenite) and the multiplexed protocol.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use common::{publish, recv_json, recv_message, RawWs, Server, Ws};
use eventsource_stream::{Event, Eventsource};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An SSE stream as parsed by an independent client.
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
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    Box::pin(
        resp.bytes_stream()
            .eventsource()
            .map(|e| e.expect("well-formed event stream")),
    )
}

async fn next_event(s: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("no event within 10 s")
        .expect("stream ended")
}

async fn ws_json(server: &Server, path: &str) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url(path))
        .await
        .expect("upgrade")
        .0
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// One poll: status, ETag and body.
async fn poll(
    client: &reqwest::Client,
    url: &str,
    inm: Option<&str>,
) -> (u16, String, Option<Value>) {
    let mut req = client.get(url);
    if let Some(tag) = inm {
        req = req.header("If-None-Match", tag);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    let body = (!body.is_empty()).then(|| serde_json::from_str(&body).unwrap());
    (status, etag, body)
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

#[tokio::test]
async fn every_transport_sees_the_same_messages_with_the_same_ids() {
    let server = Server::start(&[]);
    let ch = "same";
    let mut ws = ws_json(&server, &format!("/ws/{ch}?format=json")).await;
    let mut mux = ws_json(&server, "/ws").await;
    send_json(&mut mux, json!({"type": "subscribe", "ch": ch, "rid": 1})).await;
    let subscribed = recv_json(&mut mux).await;
    let me = subscribed["client"]
        .as_str()
        .expect("the client's presence id");
    let epoch = subscribed["id"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap();
    // Nothing to replay: the answer states where the subscription starts.
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "ch": ch, "client": me, "id": format!("{epoch}-0"), "rid": 1})
    );
    let mut events = sse(&server, &format!("/sse/{ch}"), None).await;
    // The first poll learns the cursor; then the test polls from it.
    let client = reqwest::Client::new();
    let (_, etag, _) = poll(&client, &server.url(&format!("/poll/{ch}?timeout=0")), None).await;
    let mut cursor = unquote(&etag).to_string();

    let mut sent: Vec<(String, String, bool)> = Vec::new(); // (id, data as text or base64, binary)
    for i in 0..20 {
        let (data, binary) = if i % 5 == 4 {
            (vec![0u8, 255, i as u8, b'\n'], true)
        } else {
            (format!("msg {i}\nsecond line\r\nthird").into_bytes(), false)
        };
        let ct = if binary {
            "application/octet-stream"
        } else {
            "text/plain"
        };
        let id = publish(&server, ch, ct, data.clone()).await;
        let shown = if binary {
            b64(&data)
        } else {
            String::from_utf8(data).unwrap()
        };
        sent.push((id, shown, binary));
    }

    let mut from_ws = Vec::new();
    let mut from_mux = Vec::new();
    let mut from_sse = Vec::new();
    for _ in 0..sent.len() {
        let m = recv_json(&mut ws).await;
        from_ws.push((
            m["id"].as_str().unwrap().to_string(),
            m["data"].as_str().unwrap().to_string(),
            m["encoding"] == "base64",
        ));
        let m = recv_message(&mut mux).await;
        assert_eq!(m["ch"], ch);
        from_mux.push((
            m["id"].as_str().unwrap().to_string(),
            m["data"].as_str().unwrap().to_string(),
            m["encoding"] == "base64",
        ));
        let e = next_event(&mut events).await;
        let e = if e.event == "message" || e.event == "binary" {
            e
        } else {
            next_event(&mut events).await
        };
        // SSE joins data lines with \n; CRLF and CR split lines too.
        from_sse.push((e.id.clone(), e.data.clone(), e.event == "binary"));
    }
    let mut from_poll = Vec::new();
    while from_poll.len() < sent.len() {
        let (status, etag, body) = poll(
            &client,
            &server.url(&format!("/poll/{ch}?since={cursor}&timeout=5")),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let body = body.unwrap();
        for m in body["messages"].as_array().unwrap() {
            from_poll.push((
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
                m["encoding"] == "base64",
            ));
        }
        cursor = body["next"].as_str().unwrap().to_string();
        assert_eq!(unquote(&etag), cursor);
    }
    // JSON carries the payload exactly; SSE splits lines on CRLF, LF and CR
    // and the client joins them with LF.
    assert_eq!(from_ws, sent);
    assert_eq!(from_mux, sent);
    assert_eq!(from_poll, sent);
    let normalized: Vec<_> = sent
        .iter()
        .map(|(id, d, b)| (id.clone(), d.replace("\r\n", "\n"), *b))
        .collect();
    assert_eq!(from_sse, normalized);
}

/// Reads a random number of messages, drops the connection, resumes from the
/// last id; the ids seen over all connections must be exactly the ids
/// published, once each, in order.
#[tokio::test]
async fn resume_after_forced_disconnects_delivers_every_message_once_on_every_transport() {
    let server = Server::start(&["--history-size", "10000"]);
    const N: usize = 150;
    for transport in ["ws", "sse", "longpoll", "mux"] {
        let ch = format!("resume-{transport}");
        // The starting point: the channel's cursor before publishing.
        let client = reqwest::Client::new();
        let (_, etag, _) = poll(&client, &server.url(&format!("/poll/{ch}?timeout=0")), None).await;
        let start = unquote(&etag).to_string();
        let url = server.url(&format!("/pub/{ch}"));
        let publisher = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            for i in 0..N {
                let r = client
                    .post(&url)
                    .header("Content-Type", "text/plain")
                    .body(i.to_string())
                    .send()
                    .await
                    .unwrap();
                ids.push(
                    r.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            ids
        });
        let mut seen: Vec<String> = Vec::new();
        let mut last = start.clone();
        let mut rng_state = 0x9E37_79B9_7F4A_7C15u64 ^ transport.len() as u64;
        let mut chunk = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            1 + (rng_state % 40) as usize
        };
        while seen.len() < N {
            let take = chunk().min(N - seen.len());
            match transport {
                "ws" => {
                    let mut ws =
                        ws_json(&server, &format!("/ws/{ch}?format=json&since={last}")).await;
                    for _ in 0..take {
                        let m = recv_json(&mut ws).await;
                        assert_eq!(m["type"], "message", "{m}");
                        last = m["id"].as_str().unwrap().to_string();
                        seen.push(last.clone());
                    }
                    drop(ws); // abrupt: no close handshake
                }
                "sse" => {
                    let mut s = sse(&server, &format!("/sse/{ch}"), Some(&last)).await;
                    let mut got = 0;
                    while got < take {
                        let e = next_event(&mut s).await;
                        if e.event == "message" {
                            last = e.id.clone();
                            seen.push(last.clone());
                            got += 1;
                        }
                    }
                }
                "longpoll" => {
                    let (status, _, body) = poll(
                        &client,
                        &server.url(&format!("/poll/{ch}?since={last}&timeout=10")),
                        None,
                    )
                    .await;
                    assert_eq!(status, 200);
                    let body = body.unwrap();
                    for m in body["messages"].as_array().unwrap() {
                        seen.push(m["id"].as_str().unwrap().to_string());
                    }
                    last = body["next"].as_str().unwrap().to_string();
                }
                _ => {
                    let mut mux = ws_json(&server, "/ws").await;
                    send_json(
                        &mut mux,
                        json!({"type": "subscribe", "ch": ch, "since": last}),
                    )
                    .await;
                    assert_eq!(recv_json(&mut mux).await["type"], "subscribed");
                    for _ in 0..take {
                        let m = recv_message(&mut mux).await;
                        assert_eq!(m["type"], "message", "{m}");
                        last = m["id"].as_str().unwrap().to_string();
                        seen.push(last.clone());
                    }
                }
            }
        }
        let published = publisher.await.unwrap();
        assert_eq!(
            seen, published,
            "{transport}: gap, duplicate or reorder across reconnects"
        );
    }
}

#[tokio::test]
async fn long_poll_holds_answers_promptly_and_times_out_with_204() {
    let server = Server::start(&["--poll-max-timeout", "2s"]);
    let client = reqwest::Client::new();
    // Timeout: 204 with the cursor. When each answer comes, to the tick, is
    // checked by `transport::tests::poll`; this checks the wiring.
    let (status, etag, body) = poll(&client, &server.url("/poll/lp?timeout=1"), None).await;
    assert_eq!((status, body), (204, None));
    assert!(etag.starts_with('"') && etag.contains('-'), "{etag}");
    // A timeout over the limit is capped, not refused.
    let (status, _, _) = poll(&client, &server.url("/poll/lp?timeout=600"), None).await;
    assert_eq!(status, 204);
    // Held, then answered by a publish.
    let cursor = unquote(&etag).to_string();
    let url = server.url(&format!("/poll/lp?since={cursor}&timeout=30"));
    let held = tokio::spawn({
        let client = client.clone();
        async move { poll(&client, &url, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server
            .metric("ringcast_connections", "transport=\"longpoll\"")
            .await,
        1
    );
    let id = publish(&server, "lp", "text/plain", "wake").await;
    let (status, etag, body) = held.await.unwrap();
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert_eq!(body["messages"][0]["data"], "wake");
    assert_eq!(body["next"], id.as_str());
    assert_eq!(unquote(&etag), id);
    // The client's connections were reused (keep-alive): few accepts for
    // all these polls.
    let accepts = server.metric("ringcast_accepts_total", "").await;
    for _ in 0..5 {
        poll(
            &client,
            &server.url(&format!("/poll/lp?since={id}&timeout=0")),
            None,
        )
        .await;
    }
    assert!(server.metric("ringcast_accepts_total", "").await <= accepts + 1);
}

#[tokio::test]
async fn short_poll_uses_etags_and_304() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let url = server.url("/poll/sp?timeout=0");
    let (status, etag, body) = poll(&client, &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap()["messages"], json!([]));
    // Nothing new: 304, no body, same ETag.
    let (status, etag2, body) = poll(&client, &url, Some(&etag)).await;
    assert_eq!((status, body), (304, None));
    assert_eq!(etag2, etag);
    // Something new: 200 with it and a new ETag.
    let id = publish(&server, "sp", "text/plain", "news").await;
    let (status, etag3, body) = poll(&client, &url, Some(&etag)).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap()["messages"][0]["id"], id.as_str());
    assert_eq!(unquote(&etag3), id);
    let (status, _, _) = poll(&client, &url, Some(&format!("W/{etag3}"))).await;
    assert_eq!(status, 304, "weak validators match too");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-cache");
}

#[tokio::test]
async fn multi_channel_sse_resumes_every_channel_from_its_cursor() {
    let server = Server::start(&[]);
    let mut s = sse(&server, "/sse?ch=red,green,blue", None).await;
    let mut last_id = String::new();
    let mut sent = Vec::new();
    for (i, ch) in ["red", "green", "red", "blue"].iter().enumerate() {
        sent.push((
            ch.to_string(),
            publish(&server, ch, "text/plain", format!("{ch}{i}")).await,
        ));
    }
    for (ch, _) in &sent {
        let e = next_event(&mut s).await;
        assert_eq!(&e.event, ch);
        assert!(e.id.contains(';'), "composite cursor: {}", e.id);
        last_id = e.id;
    }
    drop(s);
    // Missed while disconnected: two messages on two channels.
    let g = publish(&server, "green", "text/plain", "green-missed").await;
    let b = publish(&server, "blue", "text/plain", "blue-missed").await;
    let mut s = sse(&server, "/sse?ch=red,green,blue", Some(&last_id)).await;
    let mut got = HashSet::new();
    for _ in 0..2 {
        let e = next_event(&mut s).await;
        got.insert((e.event.clone(), e.data.clone()));
        let seq_of = |id: &str| id.rsplit('-').next().unwrap().to_string();
        let pos = format!(
            "{}={}",
            e.event,
            seq_of(if e.event == "green" { &g } else { &b })
        );
        assert!(e.id.contains(&pos), "{} lacks {pos}", e.id);
    }
    assert_eq!(
        got,
        HashSet::from([
            ("green".into(), "green-missed".into()),
            ("blue".into(), "blue-missed".into())
        ])
    );
    // Nothing else was replayed: the next event is a fresh one.
    publish(&server, "red", "text/plain", "fresh").await;
    assert_eq!(next_event(&mut s).await.data, "fresh");
}

#[tokio::test]
async fn sse_resets_and_heartbeats() {
    let server = Server::start(&["--history-size", "2", "--sse-heartbeat", "200ms"]);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&server, "hb", "text/plain", format!("m{i}")).await);
    }
    let mut s = sse(&server, "/sse/hb", Some(&ids[0])).await;
    let reset = next_event(&mut s).await;
    assert_eq!(reset.event, "reset");
    let data: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        (data["reason"].as_str(), data["missed"].as_u64()),
        (Some("evicted"), Some(2))
    );
    assert_eq!(next_event(&mut s).await.data, "m3");
    assert_eq!(next_event(&mut s).await.data, "m4");
    // Heartbeat comments keep arriving on the raw stream (one per
    // interval, to the tick: `transport::tests::sse`).
    let resp = reqwest::Client::new()
        .get(server.url("/sse/quiet"))
        .send()
        .await
        .unwrap();
    let mut raw = resp.bytes_stream();
    let mut text = String::new();
    while text.matches(":\n").count() < 2 {
        let chunk = tokio::time::timeout(WAIT, raw.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("retry:3000\n\n"), "{text:?}");
    assert!(text.matches(":\n").count() >= 2, "{text:?}");
}

#[tokio::test]
async fn multiplexed_protocol_commands_and_errors() {
    let server = Server::start(&["--client-publish"]);
    let mut ws = ws_json(&server, "/ws").await;
    send_json(&mut ws, json!({"type": "ping", "rid": "p1"})).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "pong", "rid": "p1"})
    );
    send_json(&mut ws, json!({"type": "subscribe", "ch": "m", "rid": 7})).await;
    let subscribed = recv_json(&mut ws).await;
    assert_eq!(subscribed["rid"], 7);
    assert_eq!(subscribed["ch"], "m");
    assert_eq!(subscribed["client"].as_str().map(str::len), Some(16));
    let joined = recv_json(&mut ws).await;
    assert_eq!(joined["type"], "joined");
    send_json(
        &mut ws,
        json!({"type": "publish", "ch": "m", "data": "hi", "rid": 8}),
    )
    .await;
    let mut answers = [recv_json(&mut ws).await, recv_json(&mut ws).await];
    answers.sort_by_key(|v| v["type"].as_str().unwrap().to_string());
    assert_eq!(answers[0]["type"], "message");
    assert_eq!(answers[0]["data"], "hi");
    assert_eq!(answers[1]["type"], "published");
    assert_eq!(answers[1]["rid"], 8);
    assert_eq!(answers[0]["id"], answers[1]["id"]);
    // Errors name the problem and keep the connection.
    let cases = [
        (
            json!({"type": "subscribe", "ch": "m"}),
            "already_subscribed",
        ),
        (json!({"type": "subscribe", "ch": "a b"}), "bad_channel"),
        (
            json!({"type": "subscribe", "ch": "x", "since": "nope"}),
            "bad_since",
        ),
        (
            json!({"type": "unsubscribe", "ch": "never"}),
            "not_subscribed",
        ),
        (json!({"type": "dance"}), "unknown_type"),
        (json!({"ch": "m"}), "bad_request"),
        (json!({"type": "publish", "ch": "m"}), "bad_request"),
    ];
    for (cmd, code) in cases {
        send_json(&mut ws, {
            let mut c = cmd.clone();
            c["rid"] = json!(code);
            c
        })
        .await;
        let e = recv_json(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str(), e["rid"].as_str()),
            (Some("error"), Some(code), Some(code)),
            "{cmd} → {e}"
        );
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["code"], "bad_json");
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["code"], "bad_request");
    send_json(&mut ws, json!({"type": "unsubscribe", "ch": "m", "rid": 9})).await;
    let mut got = recv_json(&mut ws).await;
    if got["type"] == "left" {
        got = recv_json(&mut ws).await;
    }
    assert_eq!(got, json!({"type": "unsubscribed", "ch": "m", "rid": 9}));
    // Garbage past the threshold closes the connection with 1008.
    for _ in 0..10 {
        ws.send(Message::text("garbage")).await.unwrap();
    }
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1008);
                assert_eq!(f.reason, "too many invalid commands");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected close 1008, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_publishing_is_off_by_default() {
    let server = Server::start(&[]);
    let mut ws = ws_json(&server, "/ws").await;
    send_json(
        &mut ws,
        json!({"type": "publish", "ch": "m", "data": "x", "rid": 1}),
    )
    .await;
    let e = recv_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
}

#[tokio::test]
async fn presence_spans_shards_and_announces_joins_and_leaves() {
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    // Connect until both shards have multiplexed clients.
    for _ in 0..64 {
        clients.push(ws_json(&server, "/ws").await);
        if clients.len() >= 3
            && server
                .metric(
                    "ringcast_connections",
                    "shard=\"0\",transport=\"websocket_mux\"",
                )
                .await
                > 0
            && server
                .metric(
                    "ringcast_connections",
                    "shard=\"1\",transport=\"websocket_mux\"",
                )
                .await
                > 0
        {
            break;
        }
    }
    for c in &mut clients {
        send_json(c, json!({"type": "subscribe", "ch": "lobby"})).await;
        loop {
            if recv_json(c).await["type"] == "subscribed" {
                break;
            }
        }
    }
    let n = clients.len();
    // Everyone is present, whichever shard holds them.
    send_json(
        &mut clients[0],
        json!({"type": "presence", "ch": "lobby", "rid": "who"}),
    )
    .await;
    let answer = loop {
        let m = recv_json(&mut clients[0]).await;
        if m["type"] == "presence" {
            break m;
        }
    };
    assert_eq!(answer["rid"], "who");
    let present: HashSet<String> = answer["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(present.len(), n);
    // The last one leaves; the first hears about it.
    let leaver = clients.pop().unwrap();
    drop(leaver);
    let left = loop {
        let m = recv_json(&mut clients[0]).await;
        if m["type"] == "left" {
            break m;
        }
    };
    assert!(present.contains(left["client"].as_str().unwrap()));
    send_json(&mut clients[0], json!({"type": "presence", "ch": "lobby"})).await;
    let answer = loop {
        let m = recv_json(&mut clients[0]).await;
        if m["type"] == "presence" {
            break m;
        }
    };
    assert_eq!(answer["clients"].as_array().unwrap().len(), n - 1);
}

#[tokio::test]
async fn ephemeral_messages_are_live_only() {
    let server = Server::start(&["--client-publish"]);
    let mut listener = ws_json(&server, "/ws").await;
    send_json(&mut listener, json!({"type": "subscribe", "ch": "typing"})).await;
    assert_eq!(recv_json(&mut listener).await["type"], "subscribed");
    let mut sse_stream = sse(&server, "/sse/typing", None).await;
    let mut talker = ws_json(&server, "/ws").await;
    let stored = publish(&server, "typing", "text/plain", "stored").await;
    send_json(
        &mut talker,
        json!({"type": "publish", "ch": "typing", "data": "…typing", "ephemeral": true, "rid": 1}),
    )
    .await;
    let ack = recv_json(&mut talker).await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].is_null()),
        (Some("published"), true)
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = recv_json(&mut listener).await;
        if m["type"] == "message" {
            got.push(m);
        }
    }
    assert_eq!(got[0]["id"], stored.as_str());
    assert_eq!(
        (
            got[1]["data"].as_str(),
            got[1]["id"].is_null(),
            got[1]["ephemeral"].as_bool()
        ),
        (Some("…typing"), true, Some(true))
    );
    // SSE gets it live, without an id.
    assert_eq!(next_event(&mut sse_stream).await.id, stored);
    let e = next_event(&mut sse_stream).await;
    assert_eq!(
        (e.data.as_str(), e.id.as_str()),
        ("…typing", stored.as_str()),
        "the id is unchanged by an ephemeral event"
    );
    // History holds only the stored message.
    let epoch = stored.split('-').next().unwrap();
    let (_, _, body) = poll(
        &reqwest::Client::new(),
        &server.url(&format!("/poll/typing?since={epoch}-0&timeout=0")),
        None,
    )
    .await;
    let messages = body.unwrap()["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["data"], "stored");
}

#[tokio::test]
async fn bad_input_gets_its_documented_error() {
    let server = Server::start(&["--max-stream-channels", "3"]);
    let client = reqwest::Client::new();
    let cases = [
        ("/sse/bad%20name", 400, "channel name may only contain"),
        ("/sse", 400, "name at least one channel"),
        ("/sse?ch=a,b,c,d", 400, "at most 3 channels"),
        ("/sse/a?since=zzz", 400, "invalid since"),
        (
            "/sse?ch=a,b&since=000000000001-5",
            400,
            "resumes from its cursor",
        ),
        ("/sse?ch=a,b&since=x;y", 400, "invalid stream cursor"),
        (
            "/poll/a?timeout=soon",
            400,
            "timeout must be a whole number",
        ),
        ("/poll/a?since=1", 400, "invalid since"),
        ("/poll/a%2Fb", 400, "channel name may only contain"),
    ];
    for (path, status, reason) in cases {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(reason), "{path} → {body}");
    }
    let r = client
        .get(server.url("/sse/a"))
        .header("Last-Event-ID", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client.post(server.url("/sse/a")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn transports_turned_off_answer_501_and_the_rest_work() {
    let server = Server::start(&["--transports", "sse,poll"]);
    // A WebSocket client sees the handshake refused, with the reason.
    match tokio_tungstenite::connect_async(server.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 501);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert_eq!(
                body,
                "the ws transport is off on this node; it offers sse,poll\n"
            );
        }
        other => panic!("expected 501, got {other:?}"),
    }
    // … and closed, as every refused handshake is.
    let mut raw = RawWs::tcp(server.addr).await;
    raw.send_raw(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await;
    let (head, _) = raw.read_response().await;
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    let long = reqwest::get(server.url("/poll/a?timeout=5")).await.unwrap();
    assert_eq!(long.status(), 501);
    assert!(long
        .text()
        .await
        .unwrap()
        .contains("the longpoll transport is off"));
    let short = reqwest::get(server.url("/poll/a?timeout=0")).await.unwrap();
    assert_eq!(short.status(), 200);
    let mut events = sse(&server, "/sse/a", None).await;
    publish(&server, "a", "text/plain", "still here").await;
    assert_eq!(next_event(&mut events).await.data, "still here");
    assert_eq!(
        server
            .metric(
                "ringcast_requests_refused_total",
                "reason=\"transport_off\""
            )
            .await,
        3
    );
    assert!(
        server.banner.contains("transports   sse,poll"),
        "{}",
        server.banner
    );
}

#[tokio::test]
async fn one_poll_follows_several_channels_with_a_composite_cursor() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let a1 = publish(&server, "pa", "text/plain", "a1").await;
    let epoch = a1.split('-').next().unwrap().to_string();
    // Short poll from the start of both: what each has, and the cursor.
    let since = format!("{epoch};pa=0,pb=0");
    let r = client
        .get(server.url(&format!("/poll?ch=pa,pb&since={since}&timeout=0")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["messages"][0]["id"], a1.as_str());
    assert_eq!(body["messages"][0]["ch"], "pa");
    let next = body["next"].as_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{next}\""));
    // Nothing new: 304 for the same cursor as If-None-Match.
    let r = client
        .get(server.url("/poll?ch=pa,pb&timeout=0"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // A long poll held on both is answered by a message on the second.
    let held = tokio::spawn({
        let url = server.url(&format!("/poll?ch=pa,pb&since={next}&timeout=20"));
        async move { reqwest::get(url).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b1 = publish(&server, "pb", "text/plain", "b1").await;
    let r = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["messages"][0]["id"], b1.as_str());
    assert_eq!(body["messages"][0]["ch"], "pb");
    let b_seq = b1.rsplit('-').next().unwrap();
    let a_seq = a1.rsplit('-').next().unwrap();
    assert_eq!(
        body["next"],
        format!("{epoch};pa={a_seq},pb={b_seq}").as_str()
    );
}

#[tokio::test]
async fn ws_publishes_over_the_rate_get_rate_limited_and_the_connection_stays() {
    let server = Server::start(&["--client-publish", "--max-publish-rate", "3"]);
    let mut ws = ws_json(&server, "/ws").await;
    for i in 0..10 {
        send_json(
            &mut ws,
            json!({"type": "publish", "ch": "busy", "data": "x", "rid": i}),
        )
        .await;
    }
    let (mut published, mut limited) = (0, 0);
    for _ in 0..10 {
        let answer = recv_json(&mut ws).await;
        match answer["type"].as_str() {
            Some("published") => published += 1,
            Some("error") => {
                assert_eq!(answer["code"], "rate_limited", "{answer}");
                assert_eq!(answer["retry_after"], 1);
                limited += 1;
            }
            _ => panic!("unexpected {answer}"),
        }
    }
    // The burst allowance (3), give or take what refilled meanwhile.
    assert!((3..=4).contains(&published), "{published} published");
    assert_eq!(published + limited, 10);
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    assert_eq!(
        server
            .metric("ringcast_requests_refused_total", "reason=\"rate_limited\"")
            .await,
        limited
    );
}
