//! Node-wide limits, each with its own refusal and counter, exercised
//! with independent clients (reqwest, tokio-tungstenite) against a
//! two-shard node.

mod common;

use std::time::Duration;

use common::{recv_json, Server};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn max_channels_holds_across_shards() {
    let server = Server::start(&["--max-channels", "4"]);
    let http = reqwest::Client::new();
    let publish = |ch: String| {
        let req = http.post(server.url(&format!("/pub/{ch}"))).body("x");
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Channel names spread over both shards; each shard learns the other's
    // count within a turn.
    let mut served = 0;
    for i in 0..4 {
        let (status, body) = publish(format!("ch{i}")).await;
        assert_eq!(status, 200, "{body}");
        served += 1;
    }
    assert_eq!(served, 4);
    let owned = server
        .wait_metric("ringcast_owned_channels", "", 4, Duration::from_secs(5))
        .await;
    assert_eq!(owned, 4);
    for i in 4..8 {
        let (status, body) = publish(format!("ch{i}")).await;
        assert_eq!(
            (status, body.trim()),
            (
                503,
                "the node holds its limit of 4 channels (--max-channels); retry later"
            ),
            "ch{i}"
        );
    }
    // A multiplexed client hears the same reason.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "ch": "ch9"}).to_string(),
    ))
    .await
    .unwrap();
    let e = recv_json(&mut ws).await;
    assert_eq!(e["code"], "channel_limit", "{e}");
    assert_eq!(
        server
            .metric(
                "ringcast_requests_refused_total",
                "reason=\"channel_limit\""
            )
            .await,
        5
    );
}

/// A WebSocket handshake from source address `from`: the socket, or the
/// refusal's status and body.
async fn ws_from(server: &Server, from: &str, path: &str) -> Result<common::Ws, (u16, String)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    common::handshake_outcome(tokio_tungstenite::client_async(server.ws_url(path), stream).await)
}

#[tokio::test]
async fn an_address_holds_at_most_its_connections() {
    let server = Server::start(&["--limit-loopback", "--max-connections-per-ip", "5"]);
    assert!(
        server.banner.contains("per address  at most 5 connections and 500 new a second (IPv4 address or IPv6 /64), loopback included"),
        "{}",
        server.banner
    );
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(ws_from(&server, "127.0.0.5", "/ws/room").await.unwrap());
    }
    let (status, body) = ws_from(&server, "127.0.0.5", "/ws/room").await.unwrap_err();
    assert_eq!(
        (status, body.trim()),
        (
            429,
            "too many connections from 127.0.0.5: at most 5 per address (--max-connections-per-ip)"
        )
    );
    // Another address is not affected; plain HTTP is limited the same way.
    let mut other = ws_from(&server, "127.0.0.6", "/ws/room").await.unwrap();
    let http = reqwest::Client::builder()
        .local_address(Some("127.0.0.5".parse().unwrap()))
        .build()
        .unwrap();
    let r = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // The held ones still get messages.
    common::publish(&server, "room", "text/plain", "still here").await;
    for ws in held.iter_mut().chain([&mut other]) {
        let m = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(ws))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text("still here"));
    }
    // A closed one makes room.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        match ws_from(&server, "127.0.0.5", "/ws/room").await {
            Ok(ws) => break ws,
            Err((429, _)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    drop(again);
    assert!(
        server
            .metric(
                "ringcast_requests_refused_total",
                "reason=\"ip_connections\""
            )
            .await
            >= 2
    );
}

#[tokio::test]
async fn a_reconnect_storm_is_slowed_to_the_rate() {
    let server = Server::start(&["--limit-loopback", "--max-connection-rate-per-ip", "10"]);
    let http = reqwest::Client::builder()
        .local_address(Some("127.0.0.7".parse().unwrap()))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..30 {
        let r = http.get(server.url("/healthz")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && refusal.is_none() {
            let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
            refusal = Some((retry, r.text().await.unwrap()));
        }
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        (10..=13).contains(&ok),
        "the burst of 10 and what refilled meanwhile: {statuses:?}"
    );
    let (retry, body) = refusal.expect("some were refused");
    assert_eq!(retry, "1");
    assert_eq!(
        body.trim(),
        "too many new connections from 127.0.0.7: at most 10 a second per address (--max-connection-rate-per-ip)"
    );
    // Others are not slowed; and after a second, neither is it.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.8".parse().unwrap()))
        .build()
        .unwrap();
    assert_eq!(
        other
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = server
        .metric("ringcast_requests_refused_total", "reason=\"ip_rate\"")
        .await;
    assert_eq!(refused as usize, 30 - ok);
}

#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let server = Server::start(&["--max-connections-per-ip", "2"]);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(ws_from(&server, "127.0.0.9", "/ws/room").await.unwrap());
    }
    assert_eq!(held.len(), 5);
}

#[tokio::test]
async fn a_refused_address_that_sends_nothing_is_closed_within_a_second() {
    use tokio::io::AsyncReadExt;
    let server = Server::start(&["--limit-loopback", "--max-connections-per-ip", "1"]);
    let _held = ws_from(&server, "127.0.0.10", "/ws/room").await.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.10:0".parse().unwrap()).unwrap();
    let mut silent = socket.connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing to answer: {}", String::from_utf8_lossy(&buf));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}
