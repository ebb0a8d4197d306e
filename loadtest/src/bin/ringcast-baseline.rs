//! `ringcast-baseline`: what a typical Rust user would write instead of
//! ringcast — a plain tokio + tokio-tungstenite broadcast server — so that
//! `ringcast-load` can measure both with the same workload.
//!
//! * `GET /ws/{channel}` → WebSocket; every message published to the
//!   channel arrives as one text frame holding the payload.
//! * `POST /pub/{channel}` (keep-alive, pipelining works) → `200
//!   {"id":"<n>"}`; the body is broadcast with `tokio::sync::broadcast`.
//!
//! It uses ordinary file descriptors (one per connection), so it can hold
//! at most `RLIMIT_NOFILE` connections (20,000 on the reference host);
//! beyond that `accept` fails with `EMFILE` and it logs and backs off. A
//! subscriber that lags more than `--buffer` messages misses them
//! (`RecvError::Lagged`), which the harness then reports as lost.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>;

struct State {
    channels: Channels,
    next_id: AtomicU64,
    buffer: usize,
}

fn usage() -> ! {
    eprintln!("usage: ringcast-baseline [--listen ADDR] [--buffer N]");
    std::process::exit(2)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:8090".parse().expect("static address");
    let mut buffer = 1024usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--buffer" => {
                buffer = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    // Best effort: without it the server just holds fewer connections.
    let _ = ringcast_uring::sys::raise_nofile_to_hard();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringcast-baseline: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ringcast-baseline: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        let addr = listener.local_addr().unwrap_or(listen);
        println!("ringcast-baseline listening on http://{addr}");
        let state = Arc::new(State {
            channels: Arc::default(),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
        });
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s, state.clone()));
                }
                Err(e) => {
                    // EMFILE at the open-files limit: back off and retry.
                    eprintln!("ringcast-baseline: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

fn sender(state: &State, channel: &str) -> broadcast::Sender<Arc<str>> {
    let mut map = state.channels.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(channel.to_string())
        .or_insert_with(|| broadcast::channel(state.buffer).0)
        .clone()
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let mut peek = [0u8; 512];
    let n = match stream.peek(&mut peek).await {
        Ok(n) => n,
        Err(_) => return,
    };
    let head = String::from_utf8_lossy(&peek[..n]);
    if let Some(rest) = head.strip_prefix("GET /ws/") {
        let channel: String = rest
            .chars()
            .take_while(|c| !matches!(c, ' ' | '?'))
            .collect();
        subscribe(stream, &state, &channel).await;
    } else {
        publish_loop(stream, &state).await;
    }
}

async fn subscribe(stream: TcpStream, state: &State, channel: &str) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut rx = sender(state, channel).subscribe();
    let (mut tx, mut incoming) = ws.split();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(text) => {
                    if tx.send(Message::text(text.to_string())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            m = incoming.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

async fn publish_loop(stream: TcpStream, state: &State) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len.min(1 << 20)];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let response = match (method, path.strip_prefix("/pub/")) {
            ("POST", Some(channel)) => {
                let id = state.next_id.fetch_add(1, Ordering::Relaxed);
                let text: Arc<str> = Arc::from(String::from_utf8_lossy(&body).as_ref());
                let _ = sender(state, channel).send(text);
                let b = format!("{{\"id\":\"{id}\"}}");
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        if w.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
