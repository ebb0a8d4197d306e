//! Backpressure over real sockets on loopback: a burst never closes a
//! reader that reads; readers that stop are closed for lagging within
//! `--max-lag`, told where to resume, without holding up the others; and
//! the server's memory stays bounded throughout (sampled from `/proc`).
//!
//! Each test is bounded in messages and time.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Got, RawWs, Server};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Every message's size.
const MESSAGE: usize = 16 * 1024;

/// The server's RSS bound in these tests: what it needs idle (~10 MB),
/// its receive buffers, history (128 messages of a channel) and what
/// readers that are behind may pin (`--max-pinned`, 64 MiB here), with
/// room to spare. docs/benchmarks.md records the peaks measured.
const RSS_BOUND: u64 = 160 << 20;

/// The highest RSS of a process, sampled every 10 ms until dropped.
struct RssPeak {
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

impl RssPeak {
    fn start(server: &Server) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/proc/{}/status", server.pid());
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = std::fs::read_to_string(&path).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().strip_suffix("kB"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                }) {
                    peak = peak.max(kib * 1024);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        RssPeak {
            stop,
            sampler: Some(sampler),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.take().unwrap().join().unwrap()
    }
}

/// Message `n` (its number in the first 8 bytes, then when it was sent,
/// in µs since `t0`), padded to [`MESSAGE`].
fn message(n: u64, t0: Instant) -> Vec<u8> {
    let mut m = vec![b'.'; MESSAGE];
    m[..8].copy_from_slice(&n.to_be_bytes());
    m[8..16].copy_from_slice(&(t0.elapsed().as_micros() as u64).to_be_bytes());
    m
}

fn number(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[..8].try_into().unwrap())
}

fn sent_at(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[8..16].try_into().unwrap())
}

/// A publish request for message `m` on `channel`.
fn publish_request(channel: &str, m: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        m.len()
    )
    .into_bytes();
    r.extend_from_slice(m);
    r
}

/// Reads `n` answers on a publisher's connection; every one must be 200.
async fn read_answers(mut rd: tokio::net::tcp::OwnedReadHalf, n: usize) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut seen = 0;
    let mut scanned = 0;
    while seen < n {
        let got = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut chunk))
            .await
            .expect("answers stopped")
            .unwrap();
        assert!(
            got > 0,
            "the publisher's connection closed after {seen} answers"
        );
        buf.extend_from_slice(&chunk[..got]);
        while let Some(at) = buf[scanned..].windows(9).position(|w| w == b"HTTP/1.1 ") {
            let start = scanned + at;
            if buf.len() < start + 12 {
                break;
            }
            assert_eq!(
                &buf[start..start + 12],
                b"HTTP/1.1 200",
                "answer {seen}: {}",
                String::from_utf8_lossy(&buf[start..buf.len().min(start + 300)])
            );
            seen += 1;
            scanned = start + 12;
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket subscribed to `path`.
async fn reader(server: &Server, path: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(server.ws_url(path))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// Takes `n` messages, checking that they come numbered 0, 1, 2…;
/// returns each one's latency in µs (and the socket, still open).
async fn read_all(mut ws: Ws, n: u64, t0: Instant) -> (Vec<u64>, Ws) {
    let mut latencies = Vec::with_capacity(n as usize);
    let mut next = 0;
    while next < n {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message {next} within 30 s"))
            .expect("stream ended")
            .expect("websocket error");
        match m {
            Message::Binary(b) => {
                assert_eq!(number(&b), next, "out of order");
                latencies.push((t0.elapsed().as_micros() as u64).saturating_sub(sent_at(&b)));
                next += 1;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("after {next} messages: {other:?}"),
        }
    }
    (latencies, ws)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// 20 readers, no slow subscriber, and one publisher pipelining 2,000
/// messages of 16 KiB on one keep-alive connection: every reader gets all
/// of them in order and none is closed. Returns how often a reader fell
/// behind (and caught up from the backlog).
async fn burst(args: &[&str]) -> u64 {
    const READERS: usize = 20;
    const MESSAGES: u64 = 2000;
    let server = Server::start(args);
    let peak = RssPeak::start(&server);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..READERS {
        let ws = reader(&server, "/ws/burst").await;
        tasks.push(tokio::spawn(read_all(ws, MESSAGES, t0)));
    }
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let answers = tokio::spawn(read_answers(rd, MESSAGES as usize));
    for n in 0..MESSAGES {
        wr.write_all(&publish_request("burst", &message(n, t0)))
            .await
            .unwrap();
    }
    answers.await.unwrap();
    let mut open = Vec::new();
    for t in tasks {
        let (latencies, ws) = t.await.unwrap();
        assert_eq!(latencies.len(), MESSAGES as usize);
        open.push(ws);
    }
    let peak = peak.finish();
    let fell_behind = server.metric("ringcast_fell_behind_total", "").await;
    eprintln!(
        "burst {args:?}: peak RSS {:.1} MiB, readers fell behind {fell_behind} times",
        peak as f64 / 1048576.0
    );
    assert_eq!(server.metric("ringcast_lagging_closes_total", "").await, 0);
    assert_eq!(
        server
            .metric("ringcast_slow_consumer_closes_total", "")
            .await,
        0
    );
    assert_eq!(
        server
            .metric("ringcast_connections", "transport=\"websocket\"")
            .await,
        READERS as u64
    );
    assert!(peak < RSS_BOUND, "peak RSS {peak} B");
    fell_behind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_reaches_every_reader_in_order_and_closes_none() {
    burst(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_a_small_window_is_caught_up_from_the_backlog() {
    // Two messages' worth of window: readers fall behind all the time, and
    // every message after the first two of each window comes from the
    // shard's backlog.
    let fell_behind = burst(&["--max-outbound", "32KiB"]).await;
    assert!(fell_behind > 0, "the window never filled");
}

/// Publishes `n` messages on `channel` at `rate` per second on one
/// keep-alive connection.
async fn publish_at(server: &Server, channel: &str, n: u64, rate: u64, t0: Instant) {
    let (rd, mut wr) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let answers = tokio::spawn(read_answers(rd, n as usize));
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate)).await;
        wr.write_all(&publish_request(channel, &message(i, t0)))
            .await
            .unwrap();
    }
    answers.await.unwrap();
}

/// Latencies of a run, sorted: all of them, and those after its first
/// second (the steady state).
struct Latencies {
    all: Vec<u64>,
    steady: Vec<u64>,
}

/// Runs `readers` readers of `channel` through `n` messages at `rate`.
async fn readers_through(
    server: &Server,
    channel: &str,
    readers: usize,
    n: u64,
    rate: u64,
) -> Latencies {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let ws = reader(server, &format!("/ws/{channel}")).await;
        tasks.push(tokio::spawn(read_all(ws, n, t0)));
    }
    publish_at(server, channel, n, rate, t0).await;
    let (mut all, mut steady) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, _) = t.await.unwrap();
        assert_eq!(l.len(), n as usize);
        steady.extend_from_slice(&l[(rate as usize).min(l.len())..]);
        all.extend(l);
    }
    all.sort_unstable();
    steady.sort_unstable();
    Latencies { all, steady }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_are_closed_for_lagging_without_holding_up_the_others() {
    const READERS: usize = 20;
    const NON_READERS: usize = 1000;
    const RATE: u64 = 500;
    let server = Server::start(&[
        "--max-lag",
        "2s",
        "--max-outbound",
        "64KiB",
        "--close-timeout",
        "3s",
    ]);
    let peak = RssPeak::start(&server);
    // Without non-readers first, for the latency to compare with.
    let alone = readers_through(&server, "alone", READERS, 2 * RATE, RATE).await;

    // 1,000 connections that subscribe and never read, then the readers on
    // the same channel, for 5 s of messages.
    let mut non_readers = Vec::new();
    for _ in 0..NON_READERS {
        non_readers.push(RawWs::connect(server.addr, "/ws/crowd").await);
    }
    let started = Instant::now();
    let crowded = readers_through(&server, "crowd", READERS, 5 * RATE, RATE).await;
    // Every non-reader is closed for lagging, within --max-lag of falling
    // behind (plus the once-a-second check).
    let within = Duration::from_secs(15).saturating_sub(started.elapsed());
    let closed = (server)
        .wait_metric(
            "ringcast_lagging_closes_total",
            "",
            NON_READERS as u64,
            within,
        )
        .await;
    assert_eq!(closed, NON_READERS as u64);
    assert_eq!(
        server
            .metric("ringcast_slow_consumer_closes_total", "")
            .await,
        0
    );
    let peak = peak.finish();

    // They read at last: what their sockets took, in order, then 1008
    // saying where to resume — if their buffers had room for it. A
    // non-reader's socket is fed catch-ups for as long as the kernel takes
    // them, so many are full to the brim when they lag out; the node
    // counts the close frames the kernel took (the rest it could not
    // send), and those must arrive.
    let mut told = 0;
    for mut ws in non_readers {
        let mut next = 0u64;
        loop {
            match ws.recv_skip_pings().await {
                Got::Binary(b) => {
                    assert_eq!(number(&b), next);
                    next += 1;
                }
                Got::Close(Some(1008), reason) => {
                    assert!(reason.starts_with("lagging: resume from "), "{reason}");
                    told += 1;
                    break;
                }
                Got::Eof => break,
                other => panic!("{other:?}"),
            }
        }
    }
    let sent = server.metric("ringcast_close_notices_sent_total", "").await;
    let p99_alone = percentile(&alone.steady, 0.99);
    let p99_crowded = percentile(&crowded.steady, 0.99);
    let max_crowded = *crowded.all.last().unwrap();
    eprintln!(
        "crowd: readers' p50/p99 {}/{} µs alone, {}/{} µs with {NON_READERS} non-readers \
         (after the first second; over the whole run p99 {} µs, max {max_crowded} µs); \
         {told} of {NON_READERS} non-readers saw 1008 ({sent} notices sent); peak RSS {:.1} MiB",
        percentile(&alone.steady, 0.5),
        p99_alone,
        percentile(&crowded.steady, 0.5),
        p99_crowded,
        percentile(&crowded.all, 0.99),
        peak as f64 / 1048576.0
    );
    let lost = server.metric("ringcast_close_notices_lost_total", "").await;
    assert_eq!(sent + lost, NON_READERS as u64, "every close is counted");
    assert!(
        told * 100 >= 95 * sent,
        "{told} saw the close, {sent} were sent"
    );
    assert!(peak < RSS_BOUND, "peak RSS {peak} B");
    // In the steady state, within 3× of the run without them. Client and
    // server share the two cores here: a reader that waits a scheduler
    // slice is noise a sub-millisecond p99 cannot resolve, so the
    // comparison starts at 10 ms. The first second is the transient of
    // filling 1,000 windows (64 MiB into socket buffers, ~30 ms):
    // bounded, not compared.
    assert!(
        p99_crowded <= 3 * p99_alone.max(10_000),
        "steady p99 {p99_crowded} µs with non-readers, {p99_alone} µs without"
    );
    assert!(max_crowded < 500_000, "a reader waited {max_crowded} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_event_stream_lags_out_with_a_reset_and_resumes_without_loss() {
    use eventsource_stream::Eventsource;
    // 9.6 MB: more than the socket's buffers take (the sender's grows to
    // 4 MiB here), so the stream really falls behind.
    const MESSAGES: usize = 600;
    let server = Server::start(&[
        "--max-lag",
        "1s",
        "--max-outbound",
        "64KiB",
        "--history-size",
        "1000",
    ]);
    let text = |i: usize| format!("{i:08}{}", ".".repeat(MESSAGE - 8));
    let open = |last: Option<String>| {
        let mut req = reqwest::Client::new().get(server.url("/sse/paused"));
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes_stream().eventsource()
        }
    };
    // The stream is opened, then not read while the messages go by: the
    // client's buffers and the socket's fill, and it lags out.
    let mut stream = open(None).await;
    for i in 0..MESSAGES {
        common::publish(&server, "paused", "text/plain", text(i)).await;
    }
    let closed = (server)
        .wait_metric(
            "ringcast_lagging_closes_total",
            "",
            1,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(closed, 1);
    // Reading again: messages in order, then the reset, then the end.
    let mut got = 0;
    let mut last_id = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream stalled");
        let Some(event) = event else {
            panic!("the stream ended without a reset after {got} messages");
        };
        let event = event.expect("a valid event stream");
        if event.event == "reset" {
            let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["reason"], "lagging");
            assert_eq!(event.id, last_id.clone().unwrap_or_default());
            break;
        }
        assert_eq!(&event.data[..8], format!("{got:08}"));
        last_id = Some(event.id.clone());
        got += 1;
    }
    assert!(got < MESSAGES, "a window, not everything: {got}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the reset"
    );
    // Reconnecting as a browser does, with the last id it received: the
    // rest, in order, exactly once. A debug-built reader parses ~10 MB/s,
    // so catching up from far back can itself take over --max-lag (1 s):
    // then it is told so again, and resumes again, losing nothing.
    let mut resumes = 0;
    while got < MESSAGES {
        resumes += 1;
        assert!(
            resumes <= 20,
            "{resumes} resumes and still {got} of {MESSAGES}"
        );
        let mut again = open(last_id.clone()).await;
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .expect("the resumed stream stalled")
        {
            let event = event.expect("a valid event stream");
            if event.event == "reset" {
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(data["reason"], "lagging", "{data}");
                assert_eq!(Some(event.id), last_id, "the reset names the last id sent");
                continue;
            }
            assert_eq!(&event.data[..8], format!("{got:08}"), "{}", event.event);
            last_id = Some(event.id.clone());
            got += 1;
            if got == MESSAGES {
                break;
            }
        }
    }
}
