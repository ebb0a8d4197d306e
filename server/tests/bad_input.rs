//! The bad-input corpus (`tests/corpus/bad-input.json`): malformed
//! requests and frames, each replayed on its own connection against one
//! node, each answered with its documented status or close code; then the
//! node is checked healthy — it serves, delivers, counted what it refused,
//! and logged no panic.

mod common;

use std::time::Duration;

use common::{publish, Got, RawWs, Server};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Deserialize)]
struct Corpus {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    /// Bytes to send, hex.
    send: String,
    /// A WebSocket path to open first (the bytes are then frames).
    upgrade: Option<String>,
    expect_status: Option<u16>,
    expect_close: Option<u16>,
    why: String,
}

fn corpus() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/bad-input.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Corpus>(&text).unwrap().cases
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The status line of what the server answers `bytes` with (within 5 s).
async fn status_of(server: &Server, bytes: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn every_malformed_input_gets_its_documented_answer_and_the_node_stays_healthy() {
    let server = Server::start(&["--max-stream-channels", "32"]);
    let cases = corpus();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    // A subscriber that must keep getting messages throughout.
    let (mut watcher, _) = tokio_tungstenite::connect_async(server.ws_url("/ws/watch"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut failures = Vec::new();
    for case in &cases {
        let bytes = unhex(&case.send);
        match (&case.upgrade, case.expect_status, case.expect_close) {
            (None, Some(want), None) => {
                let (status, text) = status_of(&server, &bytes).await;
                if status != want {
                    failures.push(format!(
                        "{}: want {want}, got {status}: {text:?}",
                        case.name
                    ));
                }
            }
            (Some(path), None, Some(want)) => {
                let mut ws = RawWs::connect(server.addr, path).await;
                ws.send_raw(&bytes).await;
                let got = loop {
                    match ws.recv().await {
                        Got::Text(_) | Got::Ping(_) | Got::Pong(_) | Got::Binary(_) => continue,
                        other => break other,
                    }
                };
                match got {
                    Got::Close(Some(code), _) if code == want => {}
                    other => {
                        failures.push(format!("{}: want close {want}, got {other:?}", case.name))
                    }
                }
            }
            _ => panic!(
                "{}: a case expects a status or (after an upgrade) a close",
                case.name
            ),
        }
        // The watcher still gets messages after each.
        publish(&server, "watch", "text/plain", case.name.clone()).await;
        let m = tokio::time::timeout(Duration::from_secs(5), watcher.next())
            .await
            .unwrap_or_else(|_| panic!("no delivery after {} ({})", case.name, case.why))
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text(case.name.clone()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Healthy: serves, counted the refusals, nothing left behind.
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let refused = server.metric("ringcast_requests_refused_total", "").await;
    let http_cases = cases.iter().filter(|c| c.upgrade.is_none()).count() as u64;
    assert!(
        refused >= http_cases,
        "{refused} refusals counted for {http_cases} bad requests"
    );
    let errors = server.metric("ringcast_protocol_errors_total", "").await;
    assert!(errors >= 10, "{errors} WebSocket protocol errors counted");
    let open = server
        .wait_metric("ringcast_connections", "", 0, Duration::ZERO)
        .await;
    assert!(
        open <= 3,
        "{open} connections still open: the watcher, and at most the last two closing"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}
