//! `/ws/{channel}` subscribers, with real clients: handshakes, delivery
//! across shards, resume, reset, heartbeats, slow consumers, shutdown.

mod common;

use std::time::Duration;

use common::{publish, Got, RawWs, Server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(server: &Server, path: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(server.ws_url(path))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next data message, skipping pings (which tungstenite answers).
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        if m.is_text() || m.is_binary() || m.is_close() {
            return m;
        }
    }
}

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match next_data(ws).await {
        Message::Text(t) => serde_json::from_str(&t).expect("JSON frame"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// Subscribes until connections exist on both shards (the kernel spreads
/// them with SO_REUSEPORT), so delivery crosses shards.
async fn subscribers_on_both_shards(server: &Server, path: &str) -> Vec<Ws> {
    let mut subs = Vec::new();
    for _ in 0..64 {
        subs.push(subscribe(server, path).await);
        if subs.len() >= 4
            && server
                .metric(
                    "ringcast_connections",
                    "shard=\"0\",transport=\"websocket\"",
                )
                .await
                > 0
            && server
                .metric(
                    "ringcast_connections",
                    "shard=\"1\",transport=\"websocket\"",
                )
                .await
                > 0
        {
            return subs;
        }
    }
    panic!("64 connections all landed on one shard");
}

#[tokio::test]
async fn every_subscriber_on_every_shard_gets_every_message_in_order() {
    let server = Server::start(&[]);
    // Channels owned by shard 0 and by shard 1 (owner = FNV-1a % 2).
    for channel in ["news", "sport", "weather", "stocks"] {
        let mut subs = subscribers_on_both_shards(&server, &format!("/ws/{channel}")).await;
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(publish(&server, channel, "text/plain", format!("{channel} {i}")).await);
        }
        publish(
            &server,
            channel,
            "application/octet-stream",
            vec![0u8, 1, 2, 255],
        )
        .await;
        for ws in &mut subs {
            for i in 0..20 {
                assert_eq!(next_data(ws).await, Message::text(format!("{channel} {i}")));
            }
            assert_eq!(next_data(ws).await, Message::binary(vec![0u8, 1, 2, 255]));
        }
        // Ids are epoch-qualified and consecutive.
        let seqs: Vec<u64> = ids
            .iter()
            .map(|id| id.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
        let epoch = ids[0].split('-').next().unwrap();
        assert_eq!(epoch.len(), 12);
        assert!(server.banner.contains(epoch));
    }
    assert!(server.metric("ringcast_deliveries_total", "").await >= 4 * 4 * 21);
}

/// With RLIMIT_NOFILE at 1024 a ring holds 640 connections, so 1,500
/// subscribers make each shard create more rings: accepting moves between
/// rings, and completions on rings other than the home ring must wake the
/// shard (through the eventfd registered on them).
#[tokio::test]
async fn subscribers_spread_over_several_rings_per_shard_get_every_message() {
    let server = Server::start_with_nofile(&[], 1024);
    assert!(
        server.banner.contains("× 640 connections"),
        "{}",
        server.banner
    );
    let mut subs = Vec::new();
    for _ in 0..1500 {
        subs.push(subscribe(&server, "/ws/rings").await);
    }
    for shard in ["0", "1"] {
        let rings = server
            .metric("ringcast_rings", &format!("shard=\"{shard}\""))
            .await;
        assert!(rings >= 2, "shard {shard} has {rings} ring(s)");
    }
    for i in 0..3 {
        publish(&server, "rings", "text/plain", format!("m{i}")).await;
    }
    for ws in &mut subs {
        for i in 0..3 {
            assert_eq!(next_data(ws).await, Message::text(format!("m{i}")));
        }
    }
    assert_eq!(server.metric("ringcast_accept_errors_total", "").await, 0);
}

#[tokio::test]
async fn json_format_carries_ids_and_base64_for_binary() {
    let server = Server::start(&[]);
    let mut ws = subscribe(&server, "/ws/room?format=json").await;
    let id = publish(
        &server,
        "room",
        "text/plain; charset=utf-8",
        "héllo \"quoted\"\nline",
    )
    .await;
    let bin = publish(
        &server,
        "room",
        "application/octet-stream",
        vec![0u8, 159, 146, 150],
    )
    .await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["ch"], "room");
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["data"], "héllo \"quoted\"\nline");
    let m = next_json(&mut ws).await;
    assert_eq!(m["id"], bin.as_str());
    assert_eq!(m["encoding"], "base64");
    assert_eq!(m["data"], "AJ+Slg==");
}

#[tokio::test]
async fn resume_with_since_has_no_gap_and_no_duplicate() {
    let server = Server::start(&[]);
    for channel in ["resume-a", "resume-b", "resume-c"] {
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(publish(&server, channel, "text/plain", format!("m{i}")).await);
        }
        // Resume after m4: get m5..m9 from history, then live messages.
        let mut ws = subscribe(
            &server,
            &format!("/ws/{channel}?format=json&since={}", ids[4]),
        )
        .await;
        for (i, id) in ids.iter().enumerate().skip(5) {
            let m = next_json(&mut ws).await;
            assert_eq!(
                (m["id"].as_str().unwrap(), m["data"].as_str().unwrap()),
                (id.as_str(), format!("m{i}").as_str())
            );
        }
        let live = publish(&server, channel, "text/plain", "live").await;
        let m = next_json(&mut ws).await;
        assert_eq!(m["id"], live.as_str());
        // Resuming from the newest id gives only live messages.
        let mut ws = subscribe(&server, &format!("/ws/{channel}?since={live}")).await;
        publish(&server, channel, "text/plain", "after").await;
        assert_eq!(next_data(&mut ws).await, Message::text("after"));
    }
}

/// Publishes continuously while subscribers resume at random points: each
/// must see a contiguous run of sequence numbers across the seam between
/// history and live delivery.
#[tokio::test]
async fn resume_under_concurrent_publishing_is_exact() {
    let server = Server::start(&["--history-size", "100000"]);
    let addr = server.url("/pub/race");
    let publisher = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..600u32 {
            let r = client
                .post(&addr)
                .header("Content-Type", "text/plain")
                .body(i.to_string())
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        ids
    });
    // Wait for a few messages, then resume from them while publishing goes on.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = publish(&server, "race", "text/plain", "marker").await;
    let mut resumers = Vec::new();
    for _ in 0..6 {
        resumers.push(subscribe(&server, &format!("/ws/race?format=json&since={first}")).await);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let ids = publisher.await.unwrap();
    let last_seq: u64 = ids
        .last()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let first_seq: u64 = first.rsplit('-').next().unwrap().parse().unwrap();
    for ws in &mut resumers {
        let mut expect = first_seq + 1;
        while expect <= last_seq {
            let m = next_json(ws).await;
            let seq: u64 = m["id"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(seq, expect, "gap or duplicate at the seam");
            expect += 1;
        }
    }
}

#[tokio::test]
async fn lost_positions_get_a_reset_signal() {
    let server = Server::start(&["--history-size", "3"]);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(publish(&server, "small", "text/plain", format!("m{i}")).await);
    }
    // History holds m3..m5; resuming after m0 lost m1 and m2.
    let mut ws = subscribe(&server, &format!("/ws/small?since={}", ids[0])).await;
    let reset = next_json(&mut ws).await;
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["reason"], "evicted");
    assert_eq!(reset["missed"], 2);
    assert_eq!(reset["ch"], "small");
    assert_eq!(reset["since"], ids[0].as_str());
    for i in 3..6 {
        assert_eq!(next_data(&mut ws).await, Message::text(format!("m{i}")));
    }
    // An id from another epoch (a restart): reset, then all of history.
    let epoch = ids[0].split('-').next().unwrap();
    let other = if epoch == "000000000001" {
        "000000000002"
    } else {
        "000000000001"
    };
    let mut ws = subscribe(&server, &format!("/ws/small?format=json&since={other}-4")).await;
    let reset = next_json(&mut ws).await;
    assert_eq!(
        (reset["type"].as_str(), reset["reason"].as_str()),
        (Some("reset"), Some("epoch"))
    );
    assert_eq!(reset["epoch"], epoch);
    assert_eq!(next_json(&mut ws).await["id"], ids[3].as_str());
    // An id this channel never issued.
    let mut ws = subscribe(&server, &format!("/ws/small?since={epoch}-999")).await;
    assert_eq!(next_json(&mut ws).await["reason"], "unknown");
}

#[tokio::test]
async fn handshake_failures_have_their_status_and_reason() {
    let server = Server::start(&[]);
    let ok = "GET /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let cases = [
        (
            ok.replace("GET /ws/a", "GET /ws/bad%20name"),
            "400",
            "channel name may only contain",
        ),
        (
            ok.replace("GET /ws/a", "GET /ws/a?since=nope"),
            "400",
            "invalid since",
        ),
        (
            ok.replace("GET /ws/a", "GET /ws/a?format=xml"),
            "400",
            "format must be raw or json",
        ),
        (
            ok.replace("Upgrade: websocket\r\n", ""),
            "426",
            "requires a websocket upgrade",
        ),
        (
            ok.replace("Upgrade: websocket", "Upgrade: h2c"),
            "400",
            "Upgrade header does not name websocket",
        ),
        (
            ok.replace("Connection: Upgrade", "Connection: keep-alive"),
            "400",
            "Connection header does not contain Upgrade",
        ),
        (
            ok.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "426",
            "unsupported Sec-WebSocket-Version",
        ),
        (
            ok.replace("Sec-WebSocket-Version: 13\r\n", ""),
            "400",
            "missing Sec-WebSocket-Version",
        ),
        (
            ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            "400",
            "missing Sec-WebSocket-Key",
        ),
        (
            ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400",
            "must be base64 of 16 bytes",
        ),
        (
            ok.replace(
                "GET /ws/a HTTP/1.1\r\nHost: x",
                "GET /ws/a HTTP/1.0\r\nHost: x",
            ),
            "505",
            "requires HTTP/1.1",
        ),
        (ok.replace("GET /ws/a", "POST /ws/a"), "405", "must use GET"),
    ];
    for (request, status, reason) in cases {
        let mut c = RawWs::tcp(server.addr).await;
        c.send_raw(request.as_bytes()).await;
        let (head, body) = c.read_response().await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request}\n→ {head}"
        );
        assert!(body.contains(reason), "{request}\n→ {body}");
        if status == "426" && reason.contains("Version") {
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"));
        }
    }
    assert!(
        server
            .metric("ringcast_requests_refused_total", "reason=\"handshake\"")
            .await
            >= 8
    );
}

#[tokio::test]
async fn pings_are_sent_and_silent_peers_are_closed() {
    let server = Server::start(&["--ping-interval", "300ms"]);
    // A peer that answers stays connected. tungstenite answers pings while
    // the stream is read, so a task keeps reading it.
    let live = subscribe(&server, "/ws/hb").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut live = live;
        while let Some(Ok(m)) = live.next().await {
            if m.is_text() {
                let _ = tx.send(m);
            }
        }
    });
    // A peer that never sends anything is dropped (after two intervals:
    // the tick-exact rule is `transport::tests::heartbeat`).
    let mut dead = RawWs::connect(server.addr, "/ws/hb").await;
    assert_eq!(dead.recv().await, Got::Ping(vec![]));
    loop {
        match dead.recv().await {
            Got::Ping(_) => continue,
            Got::Eof => break,
            other => panic!("expected the connection to drop, got {other:?}"),
        }
    }
    assert_eq!(server.metric("ringcast_ping_timeouts_total", "").await, 1);
    // Meanwhile the answering peer is still served.
    tokio::time::sleep(Duration::from_millis(700)).await;
    publish(&server, "hb", "text/plain", "still here").await;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(Message::text("still here")));
}

#[tokio::test]
async fn a_reader_that_stops_lags_out_with_where_to_resume_and_the_fast_one_keeps_up() {
    let server = Server::start(&[
        "--max-outbound",
        "256KiB",
        "--max-lag",
        "1s",
        "--history-size",
        "1000",
    ]);
    let mut fast = subscribe(&server, "/ws/firehose").await;
    // The slow one never reads after the handshake, until the end.
    let mut slow = RawWs::connect(server.addr, "/ws/firehose").await;
    let payload = vec![b'x'; 64 * 1024];
    let body = |i: usize| {
        let mut body = payload.clone();
        body[..8].copy_from_slice(format!("{i:08}").as_bytes());
        body
    };
    for i in 0..200 {
        publish(&server, "firehose", "application/octet-stream", body(i)).await;
        match next_data(&mut fast).await {
            Message::Binary(b) => assert_eq!(&b[..8], format!("{i:08}").as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    // Within --max-lag and the once-a-second check, the slow one is closed
    // for lagging; nothing is closed as a slow consumer.
    let lagging = (server)
        .wait_metric(
            "ringcast_lagging_closes_total",
            "",
            1,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(lagging, 1);
    assert_eq!(
        server
            .metric("ringcast_slow_consumer_closes_total", "")
            .await,
        0
    );
    // What its socket took arrives in order, then the close with where to
    // resume: at or before the last message it got.
    let mut got = 0usize;
    let resume = loop {
        match slow.recv_skip_pings().await {
            Got::Binary(b) => {
                assert_eq!(&b[..8], format!("{got:08}").as_bytes());
                got += 1;
            }
            Got::Close(Some(1008), reason) => break reason,
            other => panic!("expected messages then 1008, got {other:?}"),
        }
    };
    assert!(got < 200, "a window, not everything: {got}");
    let id = resume
        .strip_prefix("lagging: resume from ")
        .unwrap_or_else(|| panic!("{resume:?}"));
    let seq: usize = id.rsplit('-').next().unwrap().parse().unwrap();
    assert!(seq <= got, "resume from {seq} after receiving {got}");
    // Resuming from it loses nothing: the rest comes in order.
    let mut again = subscribe(&server, &format!("/ws/firehose?since={id}")).await;
    for i in seq..200 {
        match next_data(&mut again).await {
            Message::Binary(b) => assert_eq!(&b[..8], format!("{i:08}").as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    drop(slow);
    assert_eq!(
        server
            .metric("ringcast_connections", "transport=\"websocket\"")
            .await,
        2
    );
}

#[tokio::test]
async fn subscriber_messages_are_validated_and_ignored() {
    let server = Server::start(&[]);
    let mut ws = subscribe(&server, "/ws/quiet").await;
    ws.send(Message::text("client chatter")).await.unwrap();
    publish(&server, "quiet", "text/plain", "from server").await;
    assert_eq!(next_data(&mut ws).await, Message::text("from server"));
    let mut raw = RawWs::connect(server.addr, "/ws/quiet").await;
    raw.send_first_byte(0x81, b"\xff").await;
    assert_eq!(
        raw.expect_close(1007).await,
        "text message is not valid UTF-8"
    );
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--drain-timeout", "3s"]);
    let mut subs = vec![
        subscribe(&server, "/ws/a").await,
        subscribe(&server, "/ws/b").await,
        subscribe(&server, "/ws/a?format=json").await,
    ];
    let mut raw = RawWs::connect(server.addr, "/ws/c").await;
    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate(Duration::from_secs(10));
        (s, server)
    });
    for ws in &mut subs {
        match next_data(ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1001);
                assert_eq!(frame.reason, "server shutting down");
            }
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    // A client that answers the close completes the handshake.
    assert_eq!(
        raw.recv_skip_pings().await,
        Got::Close(Some(1001), "server shutting down".into())
    );
    raw.send(codec::ws::OpCode::Close, true, &1001u16.to_be_bytes())
        .await;
    assert_eq!(raw.recv().await, Got::Eof);
    let (status, _server) = status.await.unwrap();
    let status = status.expect("server exited within 10 s");
    assert!(status.success(), "{status:?}");
}
