//! Abuse that must cost only its sender, over real sockets on loopback,
//! bounded in count and time.

mod common;

use std::time::{Duration, Instant};

use common::{publish, Server};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Slowloris: 10,000 sockets trickle request heads. 1,000 well-behaved
/// WebSocket clients still connect and get a message, and every slow
/// socket is cut at the head timeout with `408`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_trickling_heads_cost_the_well_behaved_nothing() {
    const SLOW: usize = 10_000;
    const GOOD: usize = 1_000;
    let server = Server::start(&["--handshake-timeout", "3s"]);
    let addr = server.addr;

    // The slow ones: a request line and half a header, then nothing more
    // than a byte now and then.
    let started = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr)
            .await
            .expect("connect a slow socket");
        s.write_all(b"GET /ws/abuse HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickle = tokio::spawn(async move {
        // One more byte per socket, a second in; the head is never done.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in slow.iter_mut() {
            let _ = s.write_all(b"a").await;
        }
        slow
    });

    // The well-behaved ones connect meanwhile, well inside the timeout.
    let mut good = Vec::with_capacity(GOOD);
    for _ in 0..GOOD {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(server.ws_url("/ws/abuse")),
        )
        .await
        .expect("a well-behaved client connects in time")
        .expect("upgrade");
        good.push(ws);
    }
    let connected_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&server, "abuse", "text/plain", "still served").await;
    for ws in good.iter_mut() {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a well-behaved client gets the message")
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text("still served"));
    }

    // Every slow socket is answered 408 and closed, at the head timeout.
    let mut slow = trickle.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut cut = 0;
    for s in slow.iter_mut() {
        let mut buf = Vec::new();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read_to_end(&mut buf)).await {
            Ok(_) if buf.starts_with(b"HTTP/1.1 408") => cut += 1,
            Ok(_) => panic!("a slow socket got {:?}", String::from_utf8_lossy(&buf)),
            Err(_) => panic!("a slow socket still open 15 s later ({cut} cut so far)"),
        }
    }
    assert_eq!(cut, SLOW);
    let timeouts = server
        .metric("ringcast_requests_refused_total", "reason=\"timeout\"")
        .await;
    assert!(timeouts >= SLOW as u64, "{timeouts} timeouts counted");
    eprintln!(
        "{GOOD} clients connected among {SLOW} slow sockets in {connected_in:?}; all {SLOW} cut"
    );
    // The well-behaved clients are still connected.
    publish(&server, "abuse", "text/plain", "after").await;
    let m = tokio::time::timeout(Duration::from_secs(5), good[0].next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("after"));
}
