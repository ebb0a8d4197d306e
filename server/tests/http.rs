//! Plain HTTP: health, metrics, publishing (single, batch, chunked,
//! pipelined), and every refusal with its status and reason.

mod common;

use std::time::Duration;

use common::{RawWs, Server};

#[tokio::test]
async fn healthz_and_metrics() {
    let server = Server::start(&[]);
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let head = reqwest::Client::new()
        .head(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ringcast_connections{shard=\"0\",transport=\"websocket\"}",
        "ringcast_accepts_total{shard=\"1\"}",
        "ringcast_deliveries_total",
        "ringcast_slow_consumer_closes_total",
        "ringcast_history_evictions_total",
        "ringcast_mailbox_depth{shard=\"0\"}",
        "ringcast_requests_refused_total{shard=\"0\",reason=\"handshake\"}",
        "ringcast_capacity_connections",
        "# TYPE ringcast_bytes_out_total counter",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    // The banner states the capacity and why.
    assert!(
        server.banner.contains("capacity: 2 shards × "),
        "{}",
        server.banner
    );
    assert!(
        server.banner.contains("RLIMIT_NOFILE="),
        "{}",
        server.banner
    );
}

#[tokio::test]
async fn publish_answers_ids_and_keeps_the_connection() {
    let server = Server::start(&[]);
    let mut c = RawWs::tcp(server.addr).await;
    // Two pipelined publishes on one connection, then a health check.
    c.send_raw(
        b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhelloPOST /pub/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\x00\x01\x02GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for _ in 0..2 {
        let (head, body) = c.read_response().await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Content-Type: application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["id"].as_str().unwrap().contains('-'), "{body}");
    }
    let (head, body) = c.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(body, "ok\n");
}

/// Pipelined publishes to channels owned by different shards overlap (each
/// is forwarded to its owner at once) and are answered in request order;
/// a request behind them waits its turn.
#[tokio::test]
async fn pipelined_publishes_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut c = RawWs::tcp(server.addr).await;
    let channels = ["pa", "pb", "pc", "pd"];
    let mut wire = Vec::new();
    const N: usize = 3000;
    for i in 0..N {
        let ch = channels[i % channels.len()];
        let body = format!("{i}");
        wire.extend_from_slice(
            format!("POST /pub/{ch} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .as_bytes(),
        );
    }
    wire.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let writer = tokio::spawn(async move {
        c.send_raw(&wire).await;
        c
    });
    let mut c = writer.await.unwrap();
    let mut last_seq = std::collections::HashMap::new();
    for i in 0..N {
        let (head, body) = c.read_response().await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{i}: {head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let seq: u64 = v["id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ch = channels[i % channels.len()];
        if let Some(prev) = last_seq.insert(ch, seq) {
            assert_eq!(seq, prev + 1, "answer {i} out of order for {ch}");
        }
    }
    let (head, body) = c.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(
        body, "ok\n",
        "the health check is answered after every publish"
    );
    // Both shards owned some of the channels, so answers waited on the
    // other shard for part of the stream.
    assert!(
        server
            .metric("ringcast_messages_published_total", "shard=\"0\"")
            .await
            > 0
    );
    assert!(
        server
            .metric("ringcast_messages_published_total", "shard=\"1\"")
            .await
            > 0
    );
}

/// A client that pipelines megabytes behind a request the node cannot
/// answer yet (here 4,000 publishes of 1 KiB, about 4 MiB, behind a long
/// poll, with `--max-message-size 1KiB`, so one request's worth is about
/// 73 KiB) is held back by TCP, not closed: the node stops reading it,
/// and once the poll is answered it reads again and answers every
/// publish, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_far_ahead_of_its_answers_is_paused_not_closed() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    const N: usize = 4000;
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let body = "x".repeat(1000);
    let mut wire = b"GET /poll/held?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    for _ in 0..N {
        wire.extend_from_slice(
            format!("POST /pub/ahead HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .as_bytes(),
        );
    }
    let writer = tokio::spawn(async move {
        wr.write_all(&wire).await.unwrap();
        wr
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.metric("ringcast_reads_paused_total", "").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading never paused behind the poll"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!writer.is_finished(), "TCP holds the rest back");
    let released = reqwest::Client::new()
        .post(server.url("/pub/held"))
        .header("Content-Type", "text/plain")
        .body("go")
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let mut rd = BufReader::new(rd);
    let mut answer = async || {
        let mut status = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), rd.read_line(&mut status))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(read > 0, "the node closed the connection");
        let mut length = 0;
        loop {
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        rd.read_exact(&mut body).await.unwrap();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };
    let (status, poll) = answer().await;
    assert!(status.starts_with("HTTP/1.1 200 OK"), "{status}");
    assert_eq!(poll["messages"][0]["data"], "go", "{poll}");
    let mut last = 0;
    for i in 0..N {
        let (status, v) = answer().await;
        assert!(status.starts_with("HTTP/1.1 200 OK"), "{i}: {status}");
        let seq: u64 = v["id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(last == 0 || seq == last + 1, "answer {i} out of order");
        last = seq;
    }
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn batch_publish_answers_ids_in_order() {
    let server = Server::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws/b1"))
        .await
        .unwrap();
    let body =
        "{\"channel\":\"b1\",\"data\":\"one\"}\n{\"channel\":\"b2\",\"data\":\"two\"}\n\"three\"\n";
    let r = reqwest::Client::new()
        .post(server.url("/pub/b1"))
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    use futures_util::StreamExt;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = ws.next().await.unwrap().unwrap();
        if m.is_text() {
            got.push(m.into_text().unwrap().to_string());
        }
    }
    assert_eq!(got, ["one", "three"]);
    // Multi-channel batches on /pub.
    let r = reqwest::Client::new()
        .post(server.url("/pub"))
        .body("{\"channel\":\"x\",\"data\":\"1\"}\n{\"channel\":\"y\",\"data_base64\":\"AAE=\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn chunked_bodies_and_expect_continue() {
    let server = Server::start(&[]);
    let mut c = RawWs::tcp(server.addr).await;
    c.send_raw(b"POST /pub/c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").await;
    let interim = c.read_head().await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send_raw(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").await;
    let (head, body) = c.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(body.contains("\"id\""));
    // A streaming body through a real client.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>("par"), Ok("ts")]);
    let r = reqwest::Client::new()
        .post(server.url("/pub/c"))
        .header("Content-Type", "text/plain")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn refused(server: &Server, request: &[u8]) -> (String, String) {
    let mut c = RawWs::tcp(server.addr).await;
    c.send_raw(request).await;
    c.read_response().await
}

#[tokio::test]
async fn refusals_name_their_cause() {
    let server = Server::start(&["--max-message-size", "100", "--max-batch-size", "200"]);
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n".to_vec(), "413", "over the limit of 100 bytes"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n".iter().copied().chain(vec![b'x'; 101]).collect(), "413", "over the limit of 100 bytes"),
        (b"POST /pub/a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), "400", "channel name may only contain"),
        (b"POST /pub/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), "400", "channel name is empty"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n\xff".to_vec(), "400", "not valid UTF-8"),
        (b"POST /pub HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\":1}\n\n".to_vec(), "400", "line 1: missing data"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: magic\r\n\r\nx".to_vec(), "417", "only Expect: 100-continue"),
        (b"GET /pub/a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "405", "publish with POST"),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "404", "not found"),
        (b"DELETE /pub/a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "405", "method not allowed"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), "505", "only HTTP/1.0 and HTTP/1.1"),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400", "without Host"),
        (b"GET /a b c HTTP/1.1\r\n\r\n".to_vec(), "400", "malformed request line"),
        (b"0 \x07\x01\x02".to_vec(), "400", "malformed request line"),
        (b"G3T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400", "malformed request line"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), "501", "only chunked"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), "400", "conflicting message framing"),
        (b"POST /pub/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), "400", "chunk size is not hexadecimal"),
    ];
    for (request, status, reason) in cases {
        let (head, body) = refused(&server, &request).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{}\n→ {head}{body}",
            String::from_utf8_lossy(&request)
        );
        assert!(
            body.contains(reason),
            "{}\n→ {body}",
            String::from_utf8_lossy(&request)
        );
    }
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    big.resize(9000, b'a');
    let (head, body) = refused(&server, &big).await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    assert_eq!(body, "request head too large\n");
    // The server is unharmed.
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn slow_heads_time_out_with_408() {
    let server = Server::start(&["--handshake-timeout", "300ms", "--idle-timeout", "300ms"]);
    // A partial head that never completes (answered at the handshake
    // timeout: the tick-exact rule is `transport::tests::http`).
    let mut c = RawWs::tcp(server.addr).await;
    c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let (head, body) = c.read_response().await;
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert_eq!(body, "request timeout\n");
    // A connection that sends nothing is closed quietly.
    let mut silent = RawWs::tcp(server.addr).await;
    assert_eq!(silent.recv().await, common::Got::Eof);
    // An idle keep-alive connection is closed after --idle-timeout.
    let mut idle = RawWs::tcp(server.addr).await;
    idle.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (head, _) = idle.read_response().await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(idle.recv().await, common::Got::Eof);
    assert!(
        server
            .metric("ringcast_requests_refused_total", "reason=\"timeout\"")
            .await
            >= 2
    );
}

#[tokio::test]
async fn options_answers_allow() {
    let server = Server::start(&[]);
    let (head, _) = refused(&server, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
    assert!(head.contains("Allow: GET, HEAD, POST, OPTIONS"));
}

#[tokio::test]
async fn while_draining_healthz_says_draining_and_new_connections_get_503() {
    // A WebSocket that never answers the 1001 keeps the node draining for
    // --close-timeout.
    let mut server = Server::start(&["--close-timeout", "3s", "--drain-timeout", "5s"]);
    let _deaf = RawWs::connect(server.addr, "/ws/a").await;
    server.send_sigterm();
    // A new connection per request: a pooled one may be an idle
    // connection the drain closes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut health = None;
    for _ in 0..100 {
        let r = client.get(server.url("/healthz")).send().await.unwrap();
        if r.status() != 200 {
            health = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = health.expect("/healthz never stopped answering 200");
    assert_eq!(health.status(), 503);
    assert_eq!(health.headers()["connection"], "close");
    assert_eq!(health.text().await.unwrap(), "draining\n");
    // A new WebSocket is refused, with why and when to retry.
    let mut ws = RawWs::tcp(server.addr).await;
    ws.send_raw(b"GET /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    let (head, body) = ws.read_response().await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(ws.recv().await, common::Got::Eof);
    // So is a publish; the metrics still answer, and count the refusals.
    let publish = client
        .post(server.url("/pub/a"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), 503);
    assert!(
        server
            .metric("ringcast_requests_refused_total", "reason=\"draining\"")
            .await
            >= 3
    );
    let status = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
