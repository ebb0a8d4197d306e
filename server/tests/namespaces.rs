//! Channel policy by namespace (`[[namespace]]` in the TOML config),
//! exercised with independent clients: reqwest for event streams, polls,
//! presence and publishing, tokio-tungstenite for `/ws`.

mod common;

use std::time::Duration;

use common::{publish, recv_json, recv_message, Server, Ws};
use futures_util::SinkExt;
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The config file, after a `jwt-secret` line with [`common::JWT_SECRET`].
const CONFIG: &str = r#"
history-size = 50

[[namespace]]
prefix = "public:"
token = false
publish = true
history-size = 2

[[namespace]]
prefix = "quiet:"
presence = false
history-ttl = "1s"
"#;

/// A server with [`CONFIG`], written to a file of its own.
fn server() -> Server {
    // A file per server: tests run in parallel, and a node reading a file
    // another test is rewriting (truncated) started with the defaults.
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ringcast-ns-{}-{n}.toml", std::process::id()));
    let secret = common::JWT_SECRET;
    std::fs::write(&path, format!("jwt-secret = \"{secret}\"\n{CONFIG}")).unwrap();
    Server::start(&["--config", path.to_str().unwrap()])
}

fn token(claims: Value) -> String {
    common::hs256(&claims)
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn mux(server: &Server, token: Option<&str>) -> Ws {
    let mut req = server.ws_url("/ws").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[tokio::test]
async fn the_banner_prints_every_namespace_and_the_defaults() {
    let server = server();
    for line in [
        "policy       channels by default: token required, clients may not publish (but by a token's publish claim), presence visible, history 50 messages for 5m",
        "policy       namespace \"public:\": no token needed, clients may publish, presence visible, history 2 messages for 5m",
        "policy       namespace \"quiet:\": token required, clients may not publish (but by a token's publish claim), presence hidden, history 50 messages for 1s",
    ] {
        assert!(server.banner.contains(line), "{line}\nnot in\n{}", server.banner);
    }
}

#[tokio::test]
async fn an_open_namespace_needs_no_token_on_any_transport() {
    let server = server();
    // Open: event streams, polls (one channel and several), presence.
    for path in [
        "/poll/public:a?timeout=0",
        "/poll?ch=public:a,public:b&timeout=0",
        "/presence/public:a",
    ] {
        assert_eq!(get(&server, path, None).await.0, 200, "{path}");
    }
    let sse = reqwest::get(server.url("/sse/public:a")).await.unwrap();
    assert_eq!(sse.status(), 200);
    drop(sse);
    // Mixing in a guarded channel needs the token again.
    let (status, body) = get(&server, "/poll?ch=public:a,room:1&timeout=0", None).await;
    assert_eq!(
        (status, body.trim()),
        (401, "token required: send Authorization: Bearer <token>")
    );
    let (status, body) = get(&server, "/sse?ch=public:a,room:1", None).await;
    assert_eq!(status, 401, "{body}");

    // /ws: subscribe and publish without `auth`; guarded channels still
    // want it.
    let mut ws = mux(&server, None).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "ch": "public:a", "rid": 1}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        json!({"type": "publish", "ch": "public:a", "data": "hi", "rid": 2}),
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(recv_message(&mut ws).await);
    }
    assert!(
        got.iter()
            .any(|m| m["type"] == "published" && m["rid"] == 2),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m["type"] == "message" && m["data"] == "hi"),
        "{got:?}"
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "ch": "room:1", "rid": 3}),
    )
    .await;
    let e = recv_message(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("unauthorized"), Some(3))
    );
}

#[tokio::test]
async fn publishing_follows_the_namespace_or_the_publish_claim() {
    let server = server();
    let reader =
        token(json!({"sub": "ann", "exp": get_current_timestamp() + 60, "channels": ["*"]}));
    let mut ws = mux(&server, Some(&reader)).await;
    send(
        &mut ws,
        json!({"type": "publish", "ch": "room:1", "data": "x", "rid": 1}),
    )
    .await;
    let e = recv_json(&mut ws).await;
    assert_eq!(e["code"], "forbidden");
    assert_eq!(
        e["reason"],
        "the token does not allow publishing to room:1 (its publish claim)"
    );
    send(
        &mut ws,
        json!({"type": "publish", "ch": "public:x", "data": "x", "rid": 2}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "published");
}

#[tokio::test]
async fn history_size_and_ttl_are_per_namespace() {
    let server = server();
    let reader = token(json!({"exp": get_current_timestamp() + 60, "channels": ["*"]}));
    let mut first = String::new();
    for ch in ["public:h", "room:h", "quiet:h"] {
        for i in 0..5 {
            let id = publish(&server, ch, "text/plain", format!("m{i}")).await;
            if i == 0 {
                first = id;
            }
        }
    }
    let kept = |body: String| -> (usize, Value) {
        let v: Value = serde_json::from_str(&body).unwrap();
        (v["messages"].as_array().unwrap().len(), v["reset"].clone())
    };
    let epoch = first.split('-').next().unwrap();
    let since = format!("{epoch}-0");
    let (_, body) = get(
        &server,
        &format!("/poll/public:h?timeout=0&since={since}"),
        None,
    )
    .await;
    let (n, reset) = kept(body);
    assert_eq!(
        (n, reset["reason"].as_str(), reset["missed"].as_u64()),
        (2, Some("evicted"), Some(3))
    );
    let (_, body) = get(
        &server,
        &format!("/poll/room:h?timeout=0&since={since}"),
        Some(&reader),
    )
    .await;
    assert_eq!(kept(body).0, 5);
    // quiet: keeps messages for a second only: the position of its first
    // message (`first`) is lost after that.
    let (_, body) = get(
        &server,
        &format!("/poll/quiet:h?timeout=0&since={first}"),
        Some(&reader),
    )
    .await;
    assert_eq!(kept(body).0, 4);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, body) = get(
        &server,
        &format!("/poll/quiet:h?timeout=0&since={first}"),
        Some(&reader),
    )
    .await;
    let (n, reset) = kept(body);
    assert_eq!(
        (n, reset["reason"].as_str()),
        (0, Some("evicted")),
        "{reset}"
    );
    let (_, body) = get(
        &server,
        &format!("/poll/room:h?timeout=0&since={since}"),
        Some(&reader),
    )
    .await;
    assert_eq!(kept(body).0, 5);
}

#[tokio::test]
async fn hidden_presence_is_refused_and_not_announced() {
    let server = server();
    let reader =
        token(json!({"sub": "ann", "exp": get_current_timestamp() + 60, "channels": ["*"]}));
    let (status, body) = get(&server, "/presence/quiet:p", Some(&reader)).await;
    assert_eq!(
        (status, body.trim()),
        (403, "presence is not visible on quiet:p (namespace quiet:)")
    );
    let mut ws = mux(&server, Some(&reader)).await;
    send(
        &mut ws,
        json!({"type": "presence", "ch": "quiet:p", "rid": 1}),
    )
    .await;
    let e = recv_json(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    // A subscriber to a quiet channel is in nobody's presence list.
    send(
        &mut ws,
        json!({"type": "subscribe", "ch": "quiet:p", "rid": 2}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    let mut other = mux(&server, Some(&reader)).await;
    send(
        &mut other,
        json!({"type": "subscribe", "ch": "quiet:p", "rid": 3}),
    )
    .await;
    let answer = recv_json(&mut other).await;
    assert_eq!(answer["type"], "subscribed");
    publish(&server, "quiet:p", "text/plain", "after").await;
    // The next frame on the first socket is the message, not `joined`.
    let next = recv_json(&mut ws).await;
    assert_eq!(
        (next["type"].as_str(), next["data"].as_str()),
        (Some("message"), Some("after")),
        "{next}"
    );
}

#[test]
fn a_namespace_that_needs_a_token_needs_jwt_keys() {
    let path = std::env::temp_dir().join(format!("ringcast-ns-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[[namespace]]\nprefix = \"a:\"\ntoken = true\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("namespace \"a:\" requires a token, but the node has no JWT keys"),
        "{err}"
    );
}
