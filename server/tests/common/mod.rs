//! Test support: start the real `ringcast` binary on an ephemeral loopback
//! port, and talk to it with independent clients.
#![allow(dead_code)] // each test file uses a different subset

pub mod events;
pub mod redis_server;
pub mod store;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codec::ws::{encode, DecoderConfig, Frame, FrameDecoder, OpCode};
use codec::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running server process; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The first `--listen-tls` address, if any.
    pub tls_addr: Option<SocketAddr>,
    pub banner: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `ringcast --listen 127.0.0.1:0 --shards 2` plus `args`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, None)
    }

    /// Like [`Server::start`], with the server's `RLIMIT_NOFILE` (soft and
    /// hard) set to `nofile`: each ring then holds fewer connections, so a
    /// test can make shards create several rings.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Server {
        Self::start_with(args, Some(nofile))
    }

    fn start_with(args: &[&str], nofile: Option<u64>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
        if let Some(n) = nofile {
            uring::child::limit_open_files(&mut cmd, n);
        }
        cmd.args(["--listen", "127.0.0.1:0", "--shards", "2"])
            .args(args)
            .env("RINGCAST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ringcast");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let mut addr = None;
        let mut tls_addr = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        // The banner ends with the "health" line.
        while Instant::now() < deadline {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            banner.push_str(&line);
            if let Some(a) = line.trim().strip_prefix("ringcast listening on http://") {
                addr.get_or_insert_with(|| a.parse().expect("listen address"));
            }
            if let Some(a) = line.trim().strip_prefix("ringcast listening on https://") {
                tls_addr.get_or_insert_with(|| a.parse().expect("TLS listen address"));
            }
            if line.starts_with("  health") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut rest = String::new();
            while stdout.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        let addr =
            addr.unwrap_or_else(|| panic!("server did not start; log:\n{}", log.lock().unwrap()));
        Server {
            child: Some(child),
            addr,
            tls_addr,
            banner,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.send_sigterm();
        self.wait_exit(within)
    }

    /// Sends SIGTERM: the node starts draining.
    pub fn send_sigterm(&self) {
        let child = self.child.as_ref().unwrap();
        // std has no way to send SIGTERM; the `kill` command keeps the tests
        // free of unsafe code.
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits (up to `within`) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Polls a metric (summed as [`Server::metric`]) every 50 ms until it
    /// reaches `at_least` or `within` has passed; returns its last value.
    pub async fn wait_metric(
        &self,
        name: &str,
        filter: &str,
        at_least: u64,
        within: Duration,
    ) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name, filter).await;
            if v >= at_least || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's resident set size now, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server is running");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// A metric's value summed over its label sets.
    pub async fn metric(&self, name: &str, label_filter: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// Publishes `body` to `channel` and returns the id.
pub async fn publish(
    server: &Server,
    channel: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> String {
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/pub/{channel}")))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(resp.status(), 200, "publish failed");
    let v: serde_json::Value = resp.json().await.unwrap();
    v["id"].as_str().expect("id in answer").to_string()
}

/// A WebSocket client that sends exactly the frames a test builds,
/// including invalid ones, and decodes what the server sends with the
/// client-role decoder.
pub struct RawWs {
    stream: TcpStream,
    buf: BytesMut,
    dec: FrameDecoder,
}

/// A frame received by [`RawWs`], owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    /// The server closed TCP.
    Eof,
}

impl RawWs {
    /// Opens a TCP connection and performs the opening handshake on `path`.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut ws = RawWs::tcp(addr).await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.stream.write_all(req.as_bytes()).await.unwrap();
        let head = ws.read_head().await;
        assert!(
            head.starts_with("HTTP/1.1 101 "),
            "handshake failed: {head}"
        );
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        ws
    }

    /// A plain TCP connection (to send arbitrary bytes).
    pub async fn tcp(addr: SocketAddr) -> RawWs {
        RawWs {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            dec: FrameDecoder::new(DecoderConfig::client()),
        }
    }

    /// Reads an HTTP response head (and leaves any following bytes).
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buf.split_to(end + 4);
                return String::from_utf8(head.to_vec()).unwrap();
            }
            let n = self.read_more().await;
            assert!(n > 0, "connection closed before a response head");
        }
    }

    /// Reads a whole HTTP response (head + Content-Length body).
    pub async fn read_response(&mut self) -> (String, String) {
        let head = self.read_head().await;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while self.buf.len() < len {
            assert!(self.read_more().await > 0, "connection closed mid-body");
        }
        let body = self.buf.split_to(len);
        (head, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn read_more(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode::masked_frame(&mut out, opcode, fin, payload, [0x12, 0x34, 0x56, 0x78]);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Sends a masked frame with a raw first byte (RSV bits, reserved opcodes).
    pub async fn send_first_byte(&mut self, first: u8, payload: &[u8]) {
        let mut out = Vec::new();
        encode::masked_frame_raw(&mut out, first, payload, [1, 2, 3, 4]);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Receives the next whole message or control frame (reassembling
    /// fragments).
    pub async fn recv(&mut self) -> Got {
        let mut message: Option<(bool, Vec<u8>)> = None;
        loop {
            let mut progress = true;
            while progress {
                progress = false;
                let decoded = self
                    .dec
                    .decode(&mut self.buf[..])
                    .expect("server sent a valid frame");
                if let Status::Complete((n, frame)) = decoded {
                    let got = match frame {
                        Frame::Data {
                            kind,
                            payload,
                            last,
                            ..
                        } => {
                            let m = message
                                .get_or_insert((kind == codec::ws::DataKind::Text, Vec::new()));
                            m.1.extend_from_slice(payload);
                            if last {
                                let (text, data) = message.take().unwrap();
                                Some(if text {
                                    Got::Text(String::from_utf8(data).unwrap())
                                } else {
                                    Got::Binary(data)
                                })
                            } else {
                                None
                            }
                        }
                        Frame::Ping(p) => Some(Got::Ping(p.to_vec())),
                        Frame::Pong(p) => Some(Got::Pong(p.to_vec())),
                        Frame::Close(c) => Some(Got::Close(
                            c.map(|c| c.code.0),
                            c.map(|c| c.reason.to_string()).unwrap_or_default(),
                        )),
                    };
                    let _ = self.buf.split_to(n);
                    if let Some(g) = got {
                        return g;
                    }
                    progress = true;
                }
            }
            if self.read_more().await == 0 {
                return Got::Eof;
            }
        }
    }

    /// Receives, skipping pings.
    pub async fn recv_skip_pings(&mut self) -> Got {
        loop {
            match self.recv().await {
                Got::Ping(_) => continue,
                other => return other,
            }
        }
    }

    /// Expects a close frame with `code`, then EOF.
    pub async fn expect_close(&mut self, code: u16) -> String {
        let reason = match self.recv_skip_pings().await {
            Got::Close(Some(c), reason) if c == code => reason,
            other => panic!("expected close {code}, got {other:?}"),
        };
        assert_eq!(
            self.recv().await,
            Got::Eof,
            "server must close TCP after the close frame"
        );
        reason
    }
}

/// A WebSocket client connection (tokio-tungstenite).
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame (within 10 s); a close frame fails the test.
/// Any stream: plain, or TLS (`tests/tls.rs`).
pub async fn recv_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
        assert!(!m.is_close(), "closed: {m:?}");
    }
}

/// The next JSON text frame that is not a presence event (`joined`,
/// `left`).
pub async fn recv_message(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = recv_json(ws).await;
        if m["type"] != "joined" && m["type"] != "left" {
            return m;
        }
    }
}

/// A multiplexed `/ws` session presenting `token` as a bearer token.
pub async fn session(node: &Server, token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = node.ws_url("/ws").into_client_request().unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    req.headers_mut().insert("Authorization", bearer);
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// No frame but presence events (`joined`, `left`) arrives for 400 ms: no
/// duplicate, no message too many.
pub async fn no_more_messages(ws: &mut Ws) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(frame) = tokio::time::timeout_at(until, ws.next()).await {
        let Some(Ok(Message::Text(t))) = frame else {
            panic!("unexpected: {frame:?}");
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert!(
            v["type"] == "joined" || v["type"] == "left",
            "unexpected: {v}"
        );
    }
}

/// What a WebSocket handshake came to: the socket, or the HTTP status and
/// body of the refusal. Any other failure fails the test.
pub fn handshake_outcome<R>(
    result: Result<(Ws, R), tokio_tungstenite::tungstenite::Error>,
) -> Result<Ws, (u16, String)> {
    match result {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).into(),
            ))
        }
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

/// The HS256 secret the token tests start nodes with.
pub const JWT_SECRET: &str = "a-secret-of-at-least-32-bytes-long!";

/// A client token with `claims`, signed with [`JWT_SECRET`] as a backend
/// would sign it.
pub fn hs256(claims: &serde_json::Value) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}
