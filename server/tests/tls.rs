//! TLS on the node (`--listen-tls`): real TLS clients — tokio-rustls with
//! tokio-tungstenite, curl — against the binary, with a test CA made here
//! (rcgen). Every endpoint over TLS 1.3 and 1.2, certificate reload on
//! SIGHUP, and what bad input gets: plain HTTP on the TLS port, a garbage
//! ClientHello, a handshake that never ends, bad certificate files.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A test CA and a leaf it signed for `localhost` and 127.0.0.1, in a
/// directory of their own: `ca.pem`, `cert.pem` (leaf then CA), `key.pem`.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringcast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringcast test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca, ca_key };
        pki.issue("cert.pem", "key.pem");
        pki
    }

    /// Issues a new leaf into `cert` and `key`; returns its DER.
    fn issue(&self, cert: &str, key: &str) -> Vec<u8> {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join(cert), leaf.pem() + &self.ca.pem()).unwrap();
        std::fs::write(self.dir.join(key), leaf_key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A node with a plaintext and a TLS listener.
    fn node(&self, extra: &[&str]) -> Server {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let mut args = vec![
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        args.extend(extra);
        Server::start(&args)
    }

    /// A client trusting the CA, speaking `versions`.
    fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

async fn tls_connect(server: &Server, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.tls_addr.expect("a TLS listener"))
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake timed out")
    .expect("TLS handshake")
}

/// curl over TLS against the node, trusting the test CA.
fn curl(pki: &Pki, server: &Server, args: &[&str]) -> std::process::Output {
    let port = server.tls_addr.unwrap().port();
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &pki.path("ca.pem")])
        .args(["-H", "Content-Type: text/plain"])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(args)
        .output()
        .expect("run curl")
}

#[tokio::test]
async fn websockets_over_tls_1_3_and_1_2_with_alpn() {
    let pki = Pki::new("ws");
    let server = pki.node(&[]);
    assert!(server
        .banner
        .contains("ringcast listening on https://127.0.0.1:"));
    assert!(
        server.banner.contains("TLS 1.3 and 1.2"),
        "{}",
        server.banner
    );
    for (version, label) in [
        (&rustls::version::TLS13, "1.3"),
        (&rustls::version::TLS12, "1.2"),
    ] {
        let tls = tls_connect(&server, pki.client(&[version])).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let port = server.tls_addr.unwrap().port();
        let url = format!("wss://localhost:{port}/ws/room-{label}?format=json");
        let (mut ws, response) = tokio_tungstenite::client_async(url, tls).await.unwrap();
        assert_eq!(response.status(), 101);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Published over plain HTTP, delivered over TLS; one large message
        // spans several records.
        let big = "x".repeat(100_000);
        let id = common::publish(&server, &format!("room-{label}"), "text/plain", "hello").await;
        common::publish(&server, &format!("room-{label}"), "text/plain", big.clone()).await;
        let first = common::recv_json(&mut ws).await;
        assert_eq!(
            (first["id"].as_str(), first["data"].as_str()),
            (Some(&id[..]), Some("hello"))
        );
        assert_eq!(
            common::recv_json(&mut ws).await["data"].as_str(),
            Some(&big[..])
        );
        ws.close(None).await.unwrap();
    }
    assert_eq!(
        server
            .metric("ringcast_tls_handshakes_total", "version=\"1.3\"")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("ringcast_tls_handshakes_total", "version=\"1.2\"")
            .await,
        1
    );
}

#[tokio::test]
async fn echo_and_the_multiplexed_protocol_over_tls() {
    let pki = Pki::new("echo");
    let server = pki.node(&["--client-publish"]);
    let port = server.tls_addr.unwrap().port();
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    let (mut echo, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
            .await
            .unwrap();
    for size in [1, 1000, 16 * 1024, 200_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        echo.send(Message::binary(payload.clone())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(&b[..], &payload[..], "{size}"),
            other => panic!("{size}: {other:?}"),
        }
    }
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    let (mut mux, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .unwrap();
    mux.send(Message::text(
        r#"{"type":"subscribe","ch":"lobby","rid":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(common::recv_json(&mut mux).await["type"], "subscribed");
    mux.send(Message::text(
        r#"{"type":"publish","ch":"lobby","data":"over tls","rid":2}"#,
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = common::recv_json(&mut mux).await;
        let kind = m["type"].as_str().unwrap().to_string();
        if kind != "joined" {
            seen.push(kind);
        }
    }
    seen.sort();
    assert_eq!(seen, ["message", "published"]);
}

#[tokio::test]
async fn sse_polling_and_publishing_over_https_with_curl() {
    let pki = Pki::new("curl");
    let server = pki.node(&[]);
    let port = server.tls_addr.unwrap().port();
    let base = format!("https://localhost:{port}");
    // Publish over HTTPS.
    let out = curl(&pki, &server, &["-d", "first", &format!("{base}/pub/news")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = answer["id"].as_str().unwrap().to_string();
    // A short poll from the start, TLS 1.2 only.
    let epoch = id.split('-').next().unwrap();
    let out = curl(
        &pki,
        &server,
        &[
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            &format!("{base}/poll/news?since={epoch}-0&timeout=0"),
        ],
    );
    let poll: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(poll["messages"][0]["data"], "first");
    // An event stream resumed from the first message, TLS 1.3, held while
    // a second message is published.
    let stream = {
        let pki_ca = pki.path("ca.pem");
        let url = format!("{base}/sse/news");
        std::thread::spawn(move || {
            Command::new("curl")
                .args(["-sSN", "--max-time", "3", "--tlsv1.3", "--cacert", &pki_ca])
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-H", &format!("Last-Event-ID: {id}"), &url])
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = curl(
        &pki,
        &server,
        &["-d", "second", &format!("{base}/pub/news")],
    );
    assert!(out.status.success());
    let sse = stream.join().unwrap();
    let text = String::from_utf8_lossy(&sse.stdout);
    assert!(text.contains("data:second"), "{text}");
    assert!(
        !text.contains("data:first"),
        "resumed after the first: {text}"
    );
    // Health and metrics too.
    let out = curl(&pki, &server, &[&format!("{base}/healthz")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_and_garbage_an_alert() {
    let pki = Pki::new("bad");
    let server = pki.node(&[]);
    let tls_addr = server.tls_addr.unwrap();
    // Plain HTTP: told in plain HTTP, then closed.
    let mut s = TcpStream::connect(tls_addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("this port speaks TLS: use https:// or wss://\n"),
        "{answer}"
    );
    // A record that is not a ClientHello: a fatal alert, then closed.
    let mut s = TcpStream::connect(tls_addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x00\x05\x01\x02\x03\x04\x05")
        .await
        .unwrap();
    let mut alert = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut alert))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&alert[..5], b"\x15\x03\x03\x00\x02", "{alert:?}");
    assert_eq!(alert[5], 2, "fatal");
    // Random bytes: closed the same way.
    let mut s = TcpStream::connect(tls_addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x03, 0xff, 0xff, 0xab, 0xcd])
        .await
        .unwrap();
    s.write_all(&[0x42; 2000]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        server
            .wait_metric(
                "ringcast_tls_failures_total",
                "reason=\"plain_http\"",
                1,
                Duration::from_secs(5)
            )
            .await
            >= 1
    );
    assert!(
        server
            .wait_metric(
                "ringcast_tls_failures_total",
                "reason=\"alert\"",
                1,
                Duration::from_secs(5)
            )
            .await
            >= 1
    );
    // Each failure is counted once, under its own reason.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .metric("ringcast_tls_failures_total", "reason=\"plain_http\"")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("ringcast_tls_failures_total", "reason=\"alert\"")
            .await,
        2
    );
    assert_eq!(
        server
            .metric("ringcast_tls_failures_total", "reason=\"incomplete\"")
            .await,
        0
    );
    // The node is fine: a real client still gets through.
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    let port = tls_addr.port();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
        .await
        .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    assert!(!server.log().contains("panicked"));
}

#[tokio::test]
async fn a_handshake_that_never_ends_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("slow");
    let server = pki.node(&["--handshake-timeout", "1s"]);
    // The first 100 bytes of a real ClientHello, then nothing.
    let mut hello = Vec::new();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(pki.client(BOTH), name).unwrap();
    client.write_tls(&mut hello).unwrap();
    let mut s = TcpStream::connect(server.tls_addr.unwrap()).await.unwrap();
    s.write_all(&hello[..100]).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "closed within the timeout");
    assert!(rest.is_empty(), "nothing sent to a half ClientHello");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server
            .wait_metric(
                "ringcast_tls_failures_total",
                "reason=\"incomplete\"",
                1,
                Duration::from_secs(5)
            )
            .await
            >= 1
    );
}

/// The leaf certificate the node presented.
fn presented(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let pki = Pki::new("reload");
    let server = pki.node(&[]);
    let port = server.tls_addr.unwrap().port();
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    let first = presented(&tls);
    let (mut open, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
            .await
            .unwrap();
    // A new certificate in the files, then SIGHUP.
    let second = pki.issue("cert.pem", "key.pem");
    assert_ne!(first, second);
    hup(&server);
    wait_log(&server, "TLS certificate reloaded").await;
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    assert_eq!(
        presented(&tls),
        second,
        "new handshakes get the new certificate"
    );
    // The connection opened before the reload goes on.
    open.send(Message::text("after the reload")).await.unwrap();
    assert_eq!(
        open.next().await.unwrap().unwrap(),
        Message::text("after the reload")
    );
    // A key that does not belong to the certificate: refused, the current
    // certificate stays.
    pki.issue("other.pem", "other-key.pem");
    std::fs::copy(pki.dir.join("other-key.pem"), pki.dir.join("key.pem")).unwrap();
    hup(&server);
    wait_log(&server, "TLS certificate NOT reloaded").await;
    assert!(
        server.log().contains("does not belong to the certificate"),
        "{}",
        server.log()
    );
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    assert_eq!(presented(&tls), second);
    // A missing file: likewise.
    std::fs::remove_file(pki.dir.join("key.pem")).unwrap();
    hup(&server);
    assert!(
        server
            .wait_metric(
                "ringcast_tls_cert_reloads_total",
                "result=\"error\"",
                2,
                Duration::from_secs(5)
            )
            .await
            >= 2
    );
    assert_eq!(
        server
            .metric("ringcast_tls_cert_reloads_total", "result=\"ok\"")
            .await,
        1
    );
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    assert_eq!(presented(&tls), second);
}

fn hup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_log(server: &Server, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--listen", "127.0.0.1:0", "--shards", "1"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_certificate_files_fail_start_up_naming_the_file() {
    let pki = Pki::new("startup");
    let (cert, key) = (pki.path("cert.pem"), pki.path("key.pem"));
    let tls = ["--listen-tls", "127.0.0.1:0"];
    let err = refused(&tls);
    assert!(
        err.contains("--listen-tls needs --tls-cert and --tls-key"),
        "{err}"
    );
    let err = refused(&[&tls[..], &["--tls-cert", &cert]].concat());
    assert!(err.contains("--tls-cert needs --tls-key"), "{err}");
    let missing = pki.path("missing.pem");
    let err = refused(&[&tls[..], &["--tls-cert", &missing, "--tls-key", &key]].concat());
    assert!(
        err.contains("cannot load the TLS certificate") && err.contains("missing.pem"),
        "{err}"
    );
    pki.issue("other.pem", "other-key.pem");
    let other_key = pki.path("other-key.pem");
    let err = refused(&[&tls[..], &["--tls-cert", &cert, "--tls-key", &other_key]].concat());
    assert!(err.contains("does not belong to the certificate"), "{err}");
    // A key file holding a certificate: no key in it.
    let err = refused(&[&tls[..], &["--tls-cert", &cert, "--tls-key", &cert]].concat());
    assert!(err.contains("cert.pem"), "{err}");
    let err = refused(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(err.contains("need --listen-tls"), "{err}");
}

#[tokio::test]
async fn idle_connections_rest_their_keys_and_carry_on() {
    let pki = Pki::new("rest");
    let server = pki.node(&["--tls-rest-after", "200ms"]);
    let port = server.tls_addr.unwrap().port();
    let mut echoes = Vec::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let tls = tls_connect(&server, pki.client(&[version])).await;
        let (echo, _) =
            tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
                .await
                .unwrap();
        echoes.push(echo);
    }
    let tls = tls_connect(&server, pki.client(BOTH)).await;
    let (mut sub, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws/resting"), tls)
            .await
            .unwrap();
    // Idle for two passes: all three drop their expanded keys.
    wait_rests(&server, 3).await;
    // Each wakes on its next record, either way.
    common::publish(&server, "resting", "text/plain", "after a rest").await;
    assert_eq!(next_text(&mut sub).await, "after a rest");
    for echo in &mut echoes {
        echo.send(Message::text("awake")).await.unwrap();
        assert_eq!(next_text(echo).await, "awake");
    }
    // Woken, they rest again.
    wait_rests(&server, 6).await;
}

/// Waits until at least `n` TLS sessions have rested their keys.
async fn wait_rests(server: &Server, n: u64) {
    let rested = server
        .wait_metric(
            "ringcast_tls_key_rests_total",
            "",
            n,
            Duration::from_secs(10),
        )
        .await;
    assert!(rested >= n, "rested: {rested}, expected {n}");
}

/// The next frame, which must be text.
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("{other:?}"),
    }
}
