//! `wss://` and `https://` targets end to end: the harness against a small
//! TLS push server (tokio-rustls) made here — WebSocket and Server-Sent
//! Events subscribers, an `https://` publisher, history and resume so that
//! `churn` works — with a CA and certificate made by rcgen for the test.
//! Every delivery is checked as in `scenarios.rs`; here the TLS figures
//! are: handshakes, how many resumed (`--tls-resume on|off`), the version
//! (`--tls-version`), and what a wrong CA or `--insecure` does.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// Runs ringcast-load with `args` plus `--json`; returns (exit code, JSON
/// or `Null`, stderr).
fn load(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(args)
        .args(["--json", "--max-time", "60s"])
        .output()
        .expect("run ringcast-load");
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        code,
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

const QUICK: [&str; 4] = ["--settle", "200ms", "--drain", "3s"];

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn make_pki(cn: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf_cert.der().clone()],
        key_der: leaf_key.serialize_der(),
    }
}

/// A PEM file in a directory of its own, removed when dropped.
struct PemFile(PathBuf);

impl std::ops::Deref for PemFile {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes `pem` to a fresh file.
fn pem_file(name: &str, pem: &str) -> PemFile {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringcast-load-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    PemFile(p)
}

/// A TLS push server: `GET /ws/{ch}` (WebSocket; `?format=json` for JSON
/// envelopes with ids, `since=ID` to resume), `GET /sse/{ch}` (events with
/// ids, `Last-Event-ID` to resume), `POST /pub/{ch}` (keep-alive). Every
/// message is kept, so any position can be resumed from.
mod server {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::ServerConfig;
    use tokio::io::{
        AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    };
    use tokio::net::TcpListener;
    use tokio::sync::broadcast;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    use super::Pki;

    /// A message: its id and data.
    type Msg = (u64, String);

    #[derive(Default)]
    struct Channel {
        history: Vec<Msg>,
        live: Option<broadcast::Sender<Msg>>,
    }

    #[derive(Default)]
    struct Hub {
        next_id: u64,
        channels: HashMap<String, Channel>,
    }

    impl Hub {
        /// What a subscriber resuming after `since` missed, and the live
        /// messages from then on: taken under one lock with publishing,
        /// so nothing falls between them.
        fn subscribe(
            &mut self,
            ch: &str,
            since: Option<u64>,
        ) -> (Vec<Msg>, broadcast::Receiver<Msg>) {
            let c = self.channels.entry(ch.to_string()).or_default();
            let rx = c
                .live
                .get_or_insert_with(|| broadcast::channel(16_384).0)
                .subscribe();
            let missed = match since {
                Some(s) => c
                    .history
                    .iter()
                    .filter(|(id, _)| *id > s)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            (missed, rx)
        }

        fn publish(&mut self, ch: &str, data: String) -> u64 {
            self.next_id += 1;
            let id = self.next_id;
            let c = self.channels.entry(ch.to_string()).or_default();
            c.history.push((id, data.clone()));
            if let Some(tx) = &c.live {
                let _ = tx.send((id, data));
            }
            id
        }
    }

    /// The server's TLS configuration: TLS 1.3 and 1.2, rustls's defaults
    /// otherwise (a session cache, two TLS 1.3 tickets per handshake).
    fn config(pki: &Pki) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(pki.key_der.clone().into());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(pki.chain.clone(), key)
                .unwrap(),
        )
    }

    /// Starts the server on a thread of its own; returns `127.0.0.1:PORT`.
    pub fn start(pki: &Pki) -> String {
        run(Some(tokio_rustls::TlsAcceptor::from(config(pki))))
    }

    /// The same server without TLS (`ws://`, `http://`), to compare with.
    pub fn start_plain() -> String {
        run(None)
    }

    fn run(acceptor: Option<tokio_rustls::TlsAcceptor>) -> String {
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx_addr.send(listener.local_addr().unwrap()).unwrap();
                let hub = Arc::new(Mutex::new(Hub::default()));
                // Runs until the test process ends.
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        // Out of descriptors, say: wait, do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        let Some(acceptor) = acceptor else {
                            return serve(tcp, hub).await;
                        };
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        else {
                            return;
                        };
                        serve(tls, hub).await;
                    });
                }
            });
        });
        rx_addr
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .to_string()
    }

    /// A request head: method, target, headers (names lower-cased).
    async fn head<R: AsyncRead + Unpin>(
        r: &mut BufReader<R>,
    ) -> Option<(String, String, HashMap<String, String>)> {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.ok()? == 0 {
                return None;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        Some((method, target, headers))
    }

    fn param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
        let (_, q) = target.split_once('?')?;
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// `/ws/lt0?format=json` → `lt0`.
    fn channel(target: &str, prefix: &str) -> String {
        let path = target.split('?').next().unwrap_or_default();
        path.strip_prefix(prefix).unwrap_or_default().to_string()
    }

    async fn serve<S>(stream: S, hub: Arc<Mutex<Hub>>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        while let Some((method, target, headers)) = head(&mut r).await {
            if method == "POST" && target.starts_with("/pub/") {
                let len = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0usize);
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                let data = String::from_utf8_lossy(&body).into_owned();
                let id = hub
                    .lock()
                    .unwrap()
                    .publish(&channel(&target, "/pub/"), data);
                let body = format!("{{\"id\":\"{id}\"}}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            if method == "GET" && target.starts_with("/sse/") {
                let since = headers.get("last-event-id").and_then(|v| v.parse().ok());
                let (missed, mut rx) = hub
                    .lock()
                    .unwrap()
                    .subscribe(&channel(&target, "/sse/"), since);
                let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
                if w.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                let mut last = since.unwrap_or(0);
                for (id, data) in missed {
                    last = id;
                    let ev = format!("id: {id}\ndata: {data}\n\n");
                    if w.write_all(ev.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Until the client goes away: the harness resets connections
                // it is done with, and a server that only writes would hold
                // them until the next message.
                let mut probe = [0u8; 64];
                loop {
                    tokio::select! {
                        m = rx.recv() => {
                            let Ok((id, data)) = m else { return };
                            if id <= last {
                                continue;
                            }
                            let ev = format!("id: {id}\ndata: {data}\n\n");
                            if w.write_all(ev.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        n = r.read(&mut probe) => {
                            if !matches!(n, Ok(k) if k > 0) {
                                return;
                            }
                        }
                    }
                }
            }
            if method == "GET" && target.starts_with("/ws/") {
                let json = param(&target, "format") == Some("json");
                let since = param(&target, "since").and_then(|v| v.parse().ok());
                let ch = channel(&target, "/ws/");
                let (missed, mut rx) = hub.lock().unwrap().subscribe(&ch, since);
                // The harness does not check Sec-WebSocket-Accept.
                let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
                if w.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                let stream = r.into_inner().unsplit(w);
                // Small buffers: the memory test holds thousands of these.
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
                let (mut tx, mut incoming) = ws.split();
                let frame = |id: u64, data: String| {
                    if json {
                        serde_json::json!({"type": "message", "channel": ch, "id": id.to_string(), "data": data})
                            .to_string()
                    } else {
                        data
                    }
                };
                let mut last = since.unwrap_or(0);
                for (id, data) in missed {
                    last = id;
                    if tx.send(Message::text(frame(id, data))).await.is_err() {
                        return;
                    }
                }
                // Until the client goes away (see above).
                loop {
                    tokio::select! {
                        m = rx.recv() => {
                            let Ok((id, data)) = m else { return };
                            if id <= last {
                                continue;
                            }
                            if tx.send(Message::text(frame(id, data))).await.is_err() {
                                return;
                            }
                        }
                        m = incoming.next() => {
                            if !matches!(m, Some(Ok(_))) {
                                return;
                            }
                        }
                    }
                }
            }
            let _ = w
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

/// WebSocket subscribers over `wss://`, an `https://` publisher: every
/// delivery arrives, every connection made one TLS 1.3 handshake (the host
/// an IP address: verified against the certificate's IP entry), and the
/// handshake time is reported beside the connect time.
#[test]
fn fanout_over_wss_with_an_https_publisher() {
    let pki = make_pki("fanout CA");
    let addr = server::start(&pki);
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let sub = format!("wss://{addr}/ws/{{ch}}");
    let publ = format!("https://{addr}/pub/{{ch}}");
    let mut args = vec![
        "fanout",
        "--sub-url",
        &sub,
        "--pub-url",
        &publ,
        "--ca",
        ca.to_str().unwrap(),
        "--subs",
        "40",
        "--channels",
        "2",
        "--msgs",
        "40",
        "--rate",
        "200",
    ];
    args.extend(QUICK);
    let (code, j, err) = load(&args);
    assert_eq!(code, 0, "{j:#}\n{err}");
    assert_eq!(n(&j, "connected"), 40, "{j:#}");
    assert_eq!(n(&j, "expected"), 40 * 20);
    assert_eq!(n(&j, "received"), 40 * 20, "{j:#}");
    assert_eq!(n(&j, "lost"), 0);
    assert_eq!(n(&j, "duplicates"), 0);
    assert_eq!(n(&j["publish"], "ok"), 40, "{j:#}");
    let tls = &j["tls"];
    assert_eq!(tls["enabled"], true);
    assert_eq!(tls["verified"], true);
    assert_eq!(n(tls, "handshakes"), 40, "{tls:#}");
    assert_eq!(n(tls, "tls13"), 40);
    assert_eq!(tls["version"], "1.3");
    assert_eq!(n(tls, "failed"), 0);
    assert_eq!(n(&tls["handshake_time"], "count"), 40);
    let hs = tls["handshake_p50_ms"].as_f64().unwrap();
    let conn = j["connect_time"]["p50_ms"].as_f64().unwrap();
    assert!(
        hs > 0.0 && hs <= conn,
        "handshake {hs} ms, connect {conn} ms"
    );
}

/// Server-Sent Events over `https://` with only TLS 1.2 offered, to a
/// host named `localhost` (verified against the DNS entry, sent as SNI).
#[test]
fn sse_over_tls_1_2() {
    let pki = make_pki("sse CA");
    let addr = server::start(&pki);
    let port = addr.rsplit(':').next().unwrap();
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let sub = format!("https://localhost:{port}/sse/{{ch}}");
    let publ = format!("https://localhost:{port}/pub/{{ch}}");
    let mut args = vec![
        "fanout",
        "--transport",
        "sse",
        "--sub-url",
        &sub,
        "--pub-url",
        &publ,
        "--ca",
        ca.to_str().unwrap(),
        "--tls-version",
        "1.2",
        "--subs",
        "20",
        "--msgs",
        "30",
        "--rate",
        "300",
    ];
    args.extend(QUICK);
    let (code, j, err) = load(&args);
    assert_eq!(code, 0, "{j:#}\n{err}");
    assert_eq!(n(&j, "received"), 20 * 30, "{j:#}");
    assert_eq!(n(&j, "lost"), 0);
    let tls = &j["tls"];
    assert_eq!(n(tls, "tls12"), 20, "{tls:#}");
    assert_eq!(tls["version"], "1.2");
    assert_eq!(tls["version_offered"], serde_json::json!(["1.2"]));
}

/// One connection at a time: with `--tls-resume on` every connection after
/// the first resumes the session of one before it; with `off`, none does.
#[test]
fn resumption_on_and_off() {
    let pki = make_pki("resume CA");
    let addr = server::start(&pki);
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let url = format!("wss://{addr}/ws/{{ch}}");
    for (resume, version) in [("on", "1.3"), ("off", "1.3"), ("on", "1.2"), ("off", "1.2")] {
        let (code, j, err) = load(&[
            "idle",
            "--url",
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--tls-resume",
            resume,
            "--tls-version",
            version,
            "--conns",
            "30",
            "--inflight",
            "1",
            "--hold",
            "0",
        ]);
        assert_eq!(code, 0, "{j:#}\n{err}");
        assert_eq!(n(&j, "connected"), 30, "{j:#}");
        let tls = &j["tls"];
        assert_eq!(n(tls, "handshakes"), 30, "{tls:#}");
        assert_eq!(tls["resumption"], resume == "on");
        assert_eq!(tls["version"], version);
        let resumed = n(tls, "resumed");
        if resume == "on" {
            assert_eq!(resumed, 29, "{resume} {version}: {tls:#}");
        } else {
            assert_eq!(resumed, 0, "{resume} {version}: {tls:#}");
        }
        assert_eq!(n(tls, "full"), 30 - resumed);
        assert!(tls["during"]["handshakes_per_s"].as_f64().unwrap() > 0.0);
    }
}

/// Subscribers drop and come back while messages flow, each resuming its
/// stream (SSE: `Last-Event-ID`; WebSocket: `since=`) and, with
/// resumption on, its TLS session: nothing lost or duplicated, and the
/// reconnects show up as handshakes per second, mostly resumed.
#[test]
fn churn_over_tls_resumes_streams_and_sessions() {
    let pki = make_pki("churn CA");
    let addr = server::start(&pki);
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let publ = format!("https://{addr}/pub/{{ch}}");
    let sse = format!("https://{addr}/sse/{{ch}}");
    let ws = format!("wss://{addr}/ws/{{ch}}?format=json");
    for (transport, url, resume) in [("sse", &sse, "on"), ("ws", &ws, "on"), ("sse", &sse, "off")] {
        let mut args = vec![
            "churn",
            "--transport",
            transport,
            "--sub-url",
            url,
            "--pub-url",
            &publ,
            "--ca",
            ca.to_str().unwrap(),
            "--tls-resume",
            resume,
            "--subs",
            "60",
            "--channels",
            "2",
            "--rate",
            "100",
            "--duration",
            "1500ms",
            "--churn-rate",
            "40",
        ];
        args.extend(QUICK);
        let (code, j, err) = load(&args);
        let what = format!("{transport}, resumption {resume}");
        assert_eq!(code, 0, "{what}: {j:#}\n{err}");
        let reconnects = n(&j, "reconnects");
        assert!(reconnects > 20, "{what}: {j:#}");
        assert_eq!(n(&j, "lost"), 0, "{what}: {j:#}");
        assert_eq!(n(&j, "duplicates"), 0, "{what}");
        assert_eq!(n(&j, "out_of_order"), 0, "{what}");
        let during = &j["tls"]["during"];
        let handshakes = n(during, "handshakes");
        // Every reconnect that came back handshook during the phase.
        assert!(handshakes + 5 >= reconnects, "{what}: {during:#}");
        assert!(j["tls_handshakes_per_s"].as_f64().unwrap() > 10.0, "{what}");
        let resumed = n(during, "resumed");
        if resume == "on" {
            assert!(resumed * 10 >= handshakes * 9, "{what}: {during:#}");
        } else {
            assert_eq!(resumed, 0, "{what}: {during:#}");
        }
    }
}

/// A CA that did not sign the server's certificate: not one connection
/// succeeds, and the error table says why. `--insecure` accepts the same
/// certificate, and the run says certificates were not verified. No CA at
/// all is refused before anything starts.
#[test]
fn the_certificate_is_verified_unless_insecure() {
    let pki = make_pki("server CA");
    let stranger = make_pki("another CA");
    let addr = server::start(&pki);
    let wrong = pem_file("wrong.pem", &stranger.ca_pem);
    let url = format!("wss://{addr}/ws/{{ch}}");
    let base = ["idle", "--url", &url, "--conns", "5", "--hold", "0"];

    let mut args = base.to_vec();
    args.extend(["--ca", wrong.to_str().unwrap()]);
    let (code, _, err) = load(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tls_certificate_unknown_issuer"), "{err}");

    let mut args = base.to_vec();
    args.push("--insecure");
    let (code, j, err) = load(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&j, "connected"), 5, "{j:#}");
    assert_eq!(j["tls"]["verified"], false);
    assert!(j["warnings"].to_string().contains("NOT verified"), "{j:#}");

    let (code, _, err) = load(&base);
    assert_eq!(code, 1);
    assert!(err.contains("--ca"), "{err}");

    // A wss:// URL to a port that speaks TLS to a name the certificate
    // does not carry.
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let mut args = base.to_vec();
    args.extend([
        "--ca",
        ca.to_str().unwrap(),
        "--tls-server-name",
        "push.example",
    ]);
    let (code, _, err) = load(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tls_certificate_not_valid_for_name"), "{err}");
}

/// What an idle connection costs the harness, with TLS and without: the
/// harness's RSS growth per connection while N WebSockets are held, over
/// `wss://` (resumption off, so no tickets are kept; then on) and over
/// `ws://` against the same server. A measurement, not a check: run with
/// `cargo test --release -p ringcast-load --test tls -- --ignored --nocapture`
/// (`RINGCAST_LOAD_CONNS` sets N, 15,000 by default: the test server holds
/// one descriptor per connection).
#[test]
#[ignore = "a measurement; takes the whole machine for a while"]
fn harness_memory_per_idle_tls_connection() {
    let conns: u64 = std::env::var("RINGCAST_LOAD_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let conns_arg = conns.to_string();
    let pki = make_pki("memory CA");
    let tls_addr = server::start(&pki);
    let plain_addr = server::start_plain();
    let ca = pem_file("ca.pem", &pki.ca_pem);
    let wss = format!("wss://{tls_addr}/ws/{{ch}}");
    let ws = format!("ws://{plain_addr}/ws/{{ch}}");
    let pid = std::process::id().to_string();
    let mut per_conn = Vec::new();
    for (what, url, resume) in [
        ("ws://", &ws, "on"),
        ("wss:// resumption off", &wss, "off"),
        ("wss:// resumption on", &wss, "on"),
    ] {
        let (code, j, err) = load(&[
            "idle",
            "--url",
            url,
            "--ca",
            ca.to_str().unwrap(),
            "--tls-resume",
            resume,
            "--conns",
            &conns_arg,
            "--hold",
            "3s",
            "--channels",
            "10",
            // This process is the server: its CPU over the run.
            "--server-pid",
            &pid,
        ]);
        assert_eq!(code, 0, "{what}: {j:#}\n{err}");
        assert_eq!(n(&j, "connected"), conns, "{what}: {j:#}");
        let m = &j["memory"];
        let pc = m["harness_rss_per_conn_bytes"].as_f64().unwrap();
        let samples = j["samples"].as_array().unwrap();
        let (first, last) = (&samples[0], &samples[samples.len() - 1]);
        let cpu = |s: &Value, who: &str| s[who]["cpu_s"].as_f64().unwrap_or(0.0);
        eprintln!(
            "{what}: {conns} idle connections in {:.1} s, harness RSS {} B (+{pc:.0} B per \
             connection); connect p50 {:.1} ms p99 {:.1} ms; CPU over the run: harness {:.2} s, \
             server {:.2} s; warnings {}; tls {}",
            j["ramp_s"].as_f64().unwrap_or(0.0),
            m["harness_rss_bytes"],
            j["connect_time"]["p50_ms"].as_f64().unwrap_or(0.0),
            j["connect_time"]["p99_ms"].as_f64().unwrap_or(0.0),
            cpu(last, "harness") - cpu(first, "harness"),
            cpu(last, "server") - cpu(first, "server"),
            j["warnings"],
            j["tls"],
        );
        per_conn.push(pc);
    }
    eprintln!(
        "TLS adds {:.0} B per idle connection to the harness (resumption off), {:.0} B (on)",
        per_conn[1] - per_conn[0],
        per_conn[2] - per_conn[0]
    );
}
