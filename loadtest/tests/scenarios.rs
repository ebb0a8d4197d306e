//! Every scenario at small scale against the real `ringcast` binary,
//! `fanout` against a deliberately lossy server whose losses and duplicates
//! are known exactly, and against a small permessage-deflate server that
//! accepts or declines the offer.
//!
//! `ringcast` is another package's binary, so it is built here with the
//! same cargo, profile and target directory as this test (once per test
//! process; concurrent builds from parallel test processes wait on cargo's
//! own lock), then started on an ephemeral loopback port.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `<target>/<profile>`, derived from this test's own path
/// (`<target>/<profile>/deps/scenarios-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

fn ringcast_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target dir").to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ringcast", "--bin", "ringcast"])
            .arg("--target-dir")
            .arg(&target);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p ringcast");
        assert!(status.success(), "cargo build -p ringcast failed");
        dir.join("ringcast")
    })
    .clone()
}

/// A running ringcast; killed on drop.
struct Ringcast {
    child: Child,
    addr: String,
    /// The `--listen-tls` address, when one was asked for.
    tls_addr: Option<String>,
}

impl Ringcast {
    fn start(args: &[&str]) -> Ringcast {
        Self::start_with(args, None)
    }

    /// Like [`Ringcast::start`], with the server's `RLIMIT_NOFILE` set to
    /// `nofile`: each ring's socket table is capped by it, so a small limit
    /// makes a shard create (and move accepting between) many rings.
    fn start_with(args: &[&str], nofile: Option<u64>) -> Ringcast {
        let mut cmd = Command::new(ringcast_binary());
        if let Some(n) = nofile {
            ringcast_uring::child::limit_open_files(&mut cmd, n);
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--shards", "2", "--log", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringcast");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let want_tls = args.contains(&"--listen-tls");
        let (mut addr, mut tls_addr) = (None, None);
        while (addr.is_none() || (want_tls && tls_addr.is_none())) && Instant::now() < deadline {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(a) = line.trim().strip_prefix("ringcast listening on http://") {
                addr = Some(a.to_string());
            }
            if let Some(a) = line.trim().strip_prefix("ringcast listening on https://") {
                tls_addr = Some(a.to_string());
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        assert!(
            !want_tls || tls_addr.is_some(),
            "ringcast printed its TLS address"
        );
        Ringcast {
            addr: addr.expect("ringcast printed its address"),
            tls_addr,
            child,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The sum over shards of a counter from `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect for /metrics");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("bad metric line {l:?}"))
            })
            .sum()
    }
}

impl Drop for Ringcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs ringcast-load with `args` plus `--json`; returns (exit code, JSON).
fn load(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(args)
        .args(["--json", "--max-time", "60s"])
        .output()
        .expect("run ringcast-load");
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ringcast-load {args:?} exited {code} without JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

const QUICK: [&str; 4] = ["--settle", "200ms", "--drain", "3s"];

#[test]
fn idle_holds_every_connection_and_answers_pings() {
    let rc = Ringcast::start(&["--ping-interval", "1s"]);
    let url = format!("ws://{}/ws/{{ch}}", rc.addr);
    let pid = rc.pid();
    let metrics = format!("http://{}/metrics", rc.addr);
    let (code, j) = load(&[
        "idle",
        "--transport",
        "ws",
        "--url",
        &url,
        "--conns",
        "300",
        "--hold",
        "3s",
        "--channels",
        "3",
        "--server-pid",
        &pid,
        "--metrics-url",
        &metrics,
    ]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j, "connected"), 300);
    assert_eq!(n(&j, "failed"), 0);
    // The server pings every second and closes peers silent for two
    // intervals: all 300 still open after 3 s means pongs went back.
    assert_eq!(n(&j, "open_at_end_of_hold"), 300, "{j:#}");
    assert_eq!(n(&j, "dropped"), 0);
    assert!(j["connect_time"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(j["memory"]["server_rss_bytes"].as_u64().unwrap() > 0);
    assert!(j["memory"]["kernel_slab_per_conn_bytes"].is_number());

    // A mix of transports by percentage, one fleet each.
    let base = format!("http://{}", rc.addr);
    let (code, j) = load(&[
        "idle",
        "--mix",
        "ws=50,sse=30,longpoll=10,shortpoll=10",
        "--base-url",
        &base,
        "--conns",
        "200",
        "--hold",
        "500ms",
    ]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j, "connected"), 200, "{j:#}");
    let mix = j["mix"].as_array().unwrap();
    let counts: Vec<u64> = mix.iter().map(|m| n(m, "open_at_end_of_hold")).collect();
    assert_eq!(counts, vec![100, 60, 20, 20], "{j:#}");
}

/// Accepting moves to another ring every 640 connections here (the open
/// files limit of 1,024 caps each ring's socket table): a fast ramp of
/// 40,000 crosses some 60 ring changes. Every connection must be accepted
/// by the accept the shard armed, without the once-a-second listener
/// self-check ever having to re-arm one (`ringcast_accept_rearms_total`),
/// and without a connection lost to a full table (`accept_errors`).
#[test]
fn a_ramp_across_many_ring_changes_never_needs_the_accept_self_check() {
    let rc = Ringcast::start_with(&[], Some(1024));
    let url = format!("ws://{}/ws/{{ch}}", rc.addr);
    let (code, j) = load(&[
        "idle",
        "--transport",
        "ws",
        "--url",
        &url,
        "--conns",
        "40000",
        "--hold",
        "1500ms",
        "--channels",
        "10",
    ]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j, "connected"), 40_000, "{j:#}");
    assert_eq!(n(&j, "failed"), 0, "{j:#}");
    assert!(
        rc.metric("ringcast_rings") >= 40,
        "the ramp crossed many rings: {}",
        rc.metric("ringcast_rings")
    );
    assert_eq!(rc.metric("ringcast_accept_rearms_total"), 0);
    assert_eq!(rc.metric("ringcast_accept_errors_total"), 0);
}

#[test]
fn fanout_checks_every_delivery_on_every_transport() {
    let rc = Ringcast::start(&[]);
    let pub_url = format!("http://{}/pub/{{ch}}", rc.addr);
    let pid = rc.pid();
    for (transport, path) in [
        ("ws", format!("ws://{}/ws/{{ch}}", rc.addr)),
        ("sse", format!("http://{}/sse/{{ch}}", rc.addr)),
        ("longpoll", format!("http://{}/poll/{{ch}}", rc.addr)),
        ("shortpoll", format!("http://{}/poll/{{ch}}", rc.addr)),
    ] {
        let mut args = vec![
            "fanout",
            "--transport",
            transport,
            "--sub-url",
            &path,
            "--pub-url",
            &pub_url,
            "--subs",
            "200",
            "--channels",
            "4",
            "--msgs",
            "40",
            "--rate",
            "200",
            "--server-pid",
            &pid,
            "--poll-interval",
            "200ms",
        ];
        args.extend(QUICK);
        let (code, j) = load(&args);
        assert_eq!(code, 0, "{transport}: {j:#}");
        // 200 subscribers, 50 per channel; 40 messages, 10 per channel.
        assert_eq!(n(&j, "connected"), 200, "{transport}");
        assert_eq!(n(&j, "expected"), 2000, "{transport}");
        assert_eq!(n(&j, "received"), 2000, "{transport}: {j:#}");
        assert_eq!(n(&j, "lost"), 0, "{transport}");
        assert_eq!(n(&j, "duplicates"), 0, "{transport}");
        assert_eq!(n(&j, "out_of_order"), 0, "{transport}");
        assert_eq!(n(&j["publish"], "ok"), 40, "{transport}");
        let lat = &j["latency"];
        assert_eq!(n(lat, "count"), 2000);
        assert!(lat["p50_ms"].as_f64().unwrap() > 0.0);
        assert!(lat["max_ms"].as_f64().unwrap() >= lat["p99_ms"].as_f64().unwrap());
        assert!(j["cpu"]["server_cpu_s"].is_number(), "{transport}");
    }
}

#[test]
fn throughput_finds_a_sustainable_rate() {
    let rc = Ringcast::start(&[]);
    let pub_url = format!("http://{}/pub/{{ch}}", rc.addr);
    let ws = format!("ws://{}/ws/{{ch}}", rc.addr);
    let mut args = vec![
        "throughput",
        "--sub-url",
        &ws,
        "--pub-url",
        &pub_url,
        "--subs",
        "50",
        "--channels",
        "2",
        "--start-rate",
        "50",
        "--max-rate",
        "200",
        "--step",
        "2",
        "--step-time",
        "500ms",
        "--max-p99",
        "1s",
    ];
    args.extend(QUICK);
    let (code, j) = load(&args);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(j["steps"].as_array().unwrap().len(), 3, "{j:#}");
    assert!(j["sustainable_deliveries_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn churn_resumes_without_loss_or_duplicates() {
    let rc = Ringcast::start(&[]);
    let pub_url = format!("http://{}/pub/{{ch}}", rc.addr);
    // Churn over WebSocket needs ids: ringcast's JSON envelope carries them.
    let ws_json = format!("ws://{}/ws/{{ch}}?format=json", rc.addr);
    let sse = format!("http://{}/sse/{{ch}}", rc.addr);
    for (transport, url) in [("ws", &ws_json), ("sse", &sse)] {
        let mut args = vec![
            "churn",
            "--transport",
            transport,
            "--sub-url",
            url,
            "--pub-url",
            &pub_url,
            "--subs",
            "100",
            "--channels",
            "2",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--churn-rate",
            "50",
        ];
        args.extend(QUICK);
        let (code, j) = load(&args);
        assert_eq!(code, 0, "{transport}: {j:#}");
        assert!(n(&j, "reconnects") > 20, "{transport}: {j:#}");
        assert_eq!(n(&j, "lost"), 0, "{transport}: {j:#}");
        assert_eq!(n(&j, "duplicates"), 0, "{transport}: {j:#}");
        assert_eq!(n(&j, "expected"), 100 * 50, "{transport}");
    }
}

#[test]
fn churn_refuses_a_stream_without_ids() {
    let rc = Ringcast::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(["churn", "--sub-url", &format!("ws://{}/ws/{{ch}}", rc.addr)])
        .args(["--pub-url", &format!("http://{}/pub/{{ch}}", rc.addr)])
        .args(["--subs", "20", "--settle", "100ms", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("format=json"));
}

#[test]
fn compare_runs_every_transport() {
    let rc = Ringcast::start(&[]);

    let base = format!("http://{}", rc.addr);
    let pid = rc.pid();
    let (code, j) = load(&[
        "compare",
        "--base-url",
        &base,
        "--subs",
        "50",
        "--channels",
        "2",
        "--msgs",
        "20",
        "--rate",
        "50",
        "--shortpoll-intervals",
        "300ms",
        "--drain",
        "2s",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(code, 0, "{j:#}");
    let rows = j["transports"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(n(r, "lost"), 0, "{r:#}");
        assert_eq!(n(r, "received"), 50 * 10, "{r:#}");
    }
    assert!(j["table_markdown"]
        .as_str()
        .unwrap()
        .contains("shortpoll@0.3s"));
}

#[test]
fn refuses_clearly_and_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "idle",
            "--url",
            "ws://127.0.0.1:9/ws/{ch}",
            "--conns",
            "200000",
            "--source-ips",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--source-ips"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "fanout",
            "--sub-url",
            "wss://127.0.0.1:9/ws",
            "--pub-url",
            "http://127.0.0.1:9/p",
            "--subs",
            "1",
            "--msgs",
            "1",
            "--rate",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A TLS target needs a CA to verify the server with (or --insecure).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca") && err.contains("--insecure"), "{err}");
    // Nothing listens on port 9: the run fails and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "idle",
            "--url",
            "ws://127.0.0.1:9/ws/{ch}",
            "--conns",
            "10",
            "--hold",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ECONNREFUSED"), "{err}");
}

/// A broadcast server that drops every publish whose number is 9 mod 10
/// and delivers every one that is 6 mod 7 twice.
mod lossy {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::broadcast;
    use tokio_tungstenite::tungstenite::Message;

    pub fn start() -> String {
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx_addr.send(listener.local_addr().unwrap()).unwrap();
                let (bus, _) = broadcast::channel::<String>(4096);
                let count = Arc::new(AtomicU64::new(0));
                // Bounded: the test ends long before; the thread dies with the process.
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        continue;
                    };
                    let bus = bus.clone();
                    let count = count.clone();
                    tokio::spawn(async move {
                        let mut peek = [0u8; 8];
                        let Ok(k) = s.peek(&mut peek).await else {
                            return;
                        };
                        if peek[..k].starts_with(b"GET") {
                            let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                                return;
                            };
                            let (mut w, _r) = ws.split();
                            let mut rx = bus.subscribe();
                            while let Ok(m) = rx.recv().await {
                                if w.send(Message::text(m)).await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        let (r, mut w) = s.into_split();
                        let mut r = BufReader::new(r);
                        loop {
                            let mut len = 0usize;
                            let mut line = String::new();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            loop {
                                let mut h = String::new();
                                if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if h.trim().is_empty() {
                                    break;
                                }
                                if let Some(v) =
                                    h.to_ascii_lowercase().strip_prefix("content-length:")
                                {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                            let mut body = vec![0u8; len];
                            if r.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            let i = count.fetch_add(1, Ordering::SeqCst);
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if i % 10 != 9 {
                                let _ = bus.send(text.clone());
                                if i % 7 == 6 {
                                    let _ = bus.send(text);
                                }
                            }
                            let body = format!("{{\"id\":\"{i}\"}}");
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if w.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        rx_addr
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .to_string()
    }
}

#[test]
fn fanout_reports_the_exact_losses_and_duplicates_of_a_lossy_server() {
    let addr = lossy::start();
    let sub = format!("ws://{addr}/ws/{{ch}}");
    let publ = format!("http://{addr}/pub/{{ch}}");
    let mut args = vec![
        "fanout",
        "--sub-url",
        &sub,
        "--pub-url",
        &publ,
        "--subs",
        "10",
        "--channels",
        "1",
        "--msgs",
        "50",
        "--rate",
        "500",
        "--fail-if",
        "loss>0",
        "--drain",
        "1s",
        "--settle",
        "200ms",
    ];
    let (code, j) = load(&args);
    // Messages 9, 19, 29, 39, 49 dropped; 6, 13, 20, 27, 34, 41, 48 twice.
    assert_eq!(n(&j, "lost"), 10 * 5, "{j:#}");
    assert_eq!(n(&j, "duplicates"), 10 * 7, "{j:#}");
    assert_eq!(n(&j, "received"), 10 * (45 + 7));
    assert_eq!(n(&j, "out_of_order"), 0);
    assert!((j["loss_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    assert_eq!(code, 3, "--fail-if loss>0 must fail the run");
    assert_eq!(j["thresholds_crossed"].as_array().unwrap().len(), 1);
    // Without the threshold the same run succeeds: losses are results, not harness failures.
    args.truncate(args.len() - 6);
    args.extend(["--drain", "1s", "--settle", "200ms"]);
    let (code, _) = load(&args);
    assert_eq!(code, 0);
}

#[test]
fn nodes_share_the_subscribers() {
    let (a, b) = (Ringcast::start(&[]), Ringcast::start(&[]));
    let url = format!("ws://{}/ws/{{ch}}", a.addr);
    let nodes = format!("{},{}", a.addr, b.addr);
    let (code, j) = load(&[
        "idle",
        "--transport",
        "ws",
        "--url",
        &url,
        "--nodes",
        &nodes,
        "--conns",
        "400",
        "--hold",
        "1s",
        "--channels",
        "4",
    ]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j, "connected"), 400);
    assert_eq!(
        (
            a.metric("ringcast_upgrades_total"),
            b.metric("ringcast_upgrades_total")
        ),
        (200, 200)
    );
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

/// The same chat messages with and without `--deflate`: every delivery
/// arrives either way, compressed only when offered and accepted, and the
/// bytes on the wire per delivery show what compression saved. A server
/// that declines is measured uncompressed, and says so.
#[test]
fn fanout_with_deflate_inflates_every_delivery_and_shows_the_bytes_saved() {
    let node = Ringcast::start(&["--deflate"]);
    let addr = &node.addr;
    let sub = format!("ws://{addr}/ws/{{ch}}");
    let publ = format!("http://{addr}/pub/{{ch}}");
    let run = |addr_sub: &str, addr_pub: &str, extra: &[&str]| {
        let mut args = vec![
            "fanout",
            "--sub-url",
            addr_sub,
            "--pub-url",
            addr_pub,
            "--subs",
            "20",
            "--msgs",
            "50",
            "--rate",
            "500",
            "--payload",
            "chat",
        ];
        args.extend(QUICK);
        args.extend(extra);
        load(&args)
    };
    let (code, on) = run(&sub, &publ, &["--deflate"]);
    assert_eq!(code, 0, "{on:#}");
    assert_eq!(n(&on, "received"), 1000, "{on:#}");
    assert_eq!(n(&on, "lost"), 0);
    assert_eq!(n(&on, "compressed_deliveries"), 1000, "{on:#}");
    assert_eq!(on["deflate"]["offered"], true);
    assert_eq!(n(&on["deflate"], "agreed"), 20);
    assert_eq!(n(&on["deflate"], "declined"), 0);
    assert_eq!(on["payload"], "chat");

    let (code, off) = run(&sub, &publ, &[]);
    assert_eq!(code, 0, "{off:#}");
    assert_eq!(n(&off, "received"), 1000, "{off:#}");
    assert_eq!(n(&off, "compressed_deliveries"), 0);
    assert_eq!(off["deflate"]["offered"], false);
    assert_eq!(
        n(&off["deflate"], "agreed") + n(&off["deflate"], "declined"),
        0
    );
    // The same messages (one seed), inflated to the same size.
    let (msg_on, msg_off) = (
        f(&on, "message_bytes_per_delivery"),
        f(&off, "message_bytes_per_delivery"),
    );
    assert!(
        (msg_on - msg_off).abs() < msg_off * 0.01,
        "{msg_on} vs {msg_off}"
    );
    assert!((200.0..=2000.0).contains(&msg_off), "{msg_off}");
    // On the wire: frames add a few bytes; compression (the node's
    // default, zlib level 1) takes a fifth or more away.
    let (wire_on, wire_off) = (
        f(&on, "bytes_in_per_delivery"),
        f(&off, "bytes_in_per_delivery"),
    );
    assert!(wire_off > msg_off, "{wire_off} vs {msg_off}");
    assert!(wire_on < wire_off * 0.8, "{wire_on} vs {wire_off}");

    // The node compressed each message once per shard, not per
    // subscriber (20 subscribers, 2 shards, 50 messages).
    let made = node.metric("ringcast_deflate_messages_total");
    assert!((50..=100).contains(&made), "{made}");

    // A server that declines (ringcast without --deflate): measured
    // uncompressed, counted, and a threshold can insist on compression.
    let plain = Ringcast::start(&[]);
    let addr = &plain.addr;
    let sub = format!("ws://{addr}/ws/{{ch}}");
    let publ = format!("http://{addr}/pub/{{ch}}");
    let (code, declined) = run(
        &sub,
        &publ,
        &["--deflate", "--fail-if", "deflate_declined>0"],
    );
    assert_eq!(code, 3, "{declined:#}");
    assert_eq!(n(&declined, "received"), 1000, "{declined:#}");
    assert_eq!(n(&declined, "compressed_deliveries"), 0);
    assert_eq!(n(&declined["deflate"], "agreed"), 0);
    assert_eq!(n(&declined["deflate"], "declined"), 20);
    assert!(
        declined["warnings"]
            .to_string()
            .contains("declined permessage-deflate"),
        "{declined:#}"
    );
}

/// A CA, and a certificate with its key it signed for `localhost` and
/// `127.0.0.1`, as PEM files in a directory removed when dropped.
struct TlsFiles {
    dir: PathBuf,
    ca: String,
    chain: String,
    key: String,
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_files(dir_name: &str) -> TlsFiles {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "ringcast-load test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let dir = std::env::temp_dir().join(format!("{dir_name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_string()
    };
    TlsFiles {
        ca: write("ca.pem", ca_cert.pem()),
        chain: write("chain.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        dir,
    }
}

/// The node's own TLS listener (`--listen-tls`): WebSocket subscribers
/// over `wss://` with an `https://` publisher, every delivery checked and
/// every connection one TLS 1.3 handshake; churn over `wss://` resumes
/// both the streams and — with `--tls-resume on` and the node's tickets —
/// the TLS sessions; with the node's tickets off (`--no-tls-tickets`),
/// nothing resumes.
#[test]
fn over_the_nodes_tls_listener() {
    let files = tls_files("ringcast-load-node-tls");
    let (ca, chain, key) = (files.ca.as_str(), files.chain.as_str(), files.key.as_str());
    let tls_args = [
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        chain,
        "--tls-key",
        key,
    ];
    let rc = Ringcast::start(&tls_args);
    let port = rc.tls_addr.as_deref().unwrap().rsplit(':').next().unwrap();
    let wss = format!("wss://localhost:{port}/ws/{{ch}}");
    let https_pub = format!("https://localhost:{port}/pub/{{ch}}");
    let pid = rc.pid();
    let mut args = vec![
        "fanout",
        "--sub-url",
        &wss,
        "--pub-url",
        &https_pub,
        "--ca",
        ca,
        "--subs",
        "200",
        "--channels",
        "4",
        "--msgs",
        "40",
        "--rate",
        "200",
        "--server-pid",
        &pid,
    ];
    args.extend(QUICK);
    let (code, j) = load(&args);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j, "received"), 2000, "{j:#}");
    assert_eq!(n(&j, "lost"), 0);
    assert_eq!(n(&j["publish"], "ok"), 40);
    let tls = &j["tls"];
    assert_eq!(n(tls, "handshakes"), 200, "{tls:#}");
    assert_eq!(tls["version"], "1.3");
    assert!(j["cpu"]["server_cpu_s"].is_number());

    // Every transport over https:// (long and short polling keep their
    // connection, and its TLS session, from poll to poll).
    let base = format!("https://localhost:{port}");
    let (code, j) = load(&[
        "compare",
        "--base-url",
        &base,
        "--ca",
        ca,
        "--subs",
        "50",
        "--channels",
        "2",
        "--msgs",
        "20",
        "--rate",
        "50",
        "--shortpoll-intervals",
        "300ms",
        "--drain",
        "2s",
    ]);
    assert_eq!(code, 0, "{j:#}");
    let rows = j["transports"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(n(r, "lost"), 0, "{r:#}");
        assert_eq!(n(r, "received"), 50 * 10, "{r:#}");
        assert_eq!(n(&r["tls"], "handshakes"), 50, "{r:#}");
    }

    // Churn: each reconnect is a handshake, resumed with the node's ticket.
    let wss_json = format!("wss://localhost:{port}/ws/{{ch}}?format=json");
    let churn = |url: &str, resume: &str| {
        let mut args = vec![
            "churn",
            "--sub-url",
            url,
            "--pub-url",
            &https_pub,
            "--ca",
            ca,
            "--tls-resume",
            resume,
            "--subs",
            "100",
            "--channels",
            "2",
            "--rate",
            "100",
            "--duration",
            "1500ms",
            "--churn-rate",
            "50",
        ];
        args.extend(QUICK);
        load(&args)
    };
    for resume in ["on", "off"] {
        let (code, j) = churn(&wss_json, resume);
        assert_eq!(code, 0, "{resume}: {j:#}");
        assert_eq!(n(&j, "lost"), 0, "{resume}: {j:#}");
        assert_eq!(n(&j, "duplicates"), 0, "{resume}");
        let during = &j["tls"]["during"];
        let (handshakes, resumed) = (n(during, "handshakes"), n(during, "resumed"));
        assert!(handshakes > 20, "{resume}: {during:#}");
        if resume == "on" {
            assert!(resumed * 10 >= handshakes * 9, "{during:#}");
        } else {
            assert_eq!(resumed, 0, "{during:#}");
        }
    }

    // A node that issues no tickets: nothing to resume with.
    let mut no_tickets = tls_args.to_vec();
    no_tickets.push("--no-tls-tickets");
    let rc = Ringcast::start(&no_tickets);
    let port = rc.tls_addr.as_deref().unwrap().rsplit(':').next().unwrap();
    let url = format!("wss://127.0.0.1:{port}/ws/{{ch}}");
    let (code, j) = load(&[
        "idle",
        "--url",
        &url,
        "--ca",
        ca,
        "--conns",
        "20",
        "--inflight",
        "1",
        "--hold",
        "0",
    ]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(n(&j["tls"], "handshakes"), 20, "{j:#}");
    assert_eq!(n(&j["tls"], "resumed"), 0, "{j:#}");
}
