//! Client tokens (JWT) on every transport, with independent clients:
//! reqwest for event streams, polls and presence, tokio-tungstenite for
//! WebSockets. Tokens are made here with jsonwebtoken, as a backend would.

mod common;

use std::time::Duration;

use common::{publish, recv_json, Server, Ws};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = common::JWT_SECRET;
const WAIT: Duration = Duration::from_secs(10);

fn token(claims: Value) -> String {
    common::hs256(&claims)
}

/// A token for `sub` reading `room:*`, valid for `secs`.
fn reader(sub: &str, secs: u64) -> String {
    token(json!({"sub": sub, "exp": get_current_timestamp() + secs, "channels": ["room:*"]}))
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn get(server: &Server, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(t) = auth {
        req = req.header("Authorization", bearer(t));
    }
    req.send().await.unwrap()
}

/// Status and body of a refused request.
async fn refused(r: reqwest::Response) -> (u16, String) {
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn ws(server: &Server, path: &str, auth: Option<&str>) -> Result<Ws, (u16, String)> {
    let mut req = server.ws_url(path).into_client_request().unwrap();
    if let Some(t) = auth {
        req.headers_mut()
            .insert("Authorization", bearer(t).parse().unwrap());
    }
    common::handshake_outcome(tokio_tungstenite::connect_async(req).await)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON text frame, skipping presence events; `Err` with the
/// close frame if the connection closes.
async fn recv(ws: &mut Ws) -> Result<Value, (CloseCode, String)> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within 10 s")
            .expect("the connection ended without a close frame")
            .unwrap();
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "joined" && v["type"] != "left" {
                    return Ok(v);
                }
            }
            Message::Close(Some(f)) => return Err((f.code, f.reason.to_string())),
            Message::Close(None) => panic!("closed without a code"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn every_transport_needs_a_token_for_the_channel() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    assert!(
        server.banner.contains("tokens       verified (HS256)"),
        "{}",
        server.banner
    );
    let ann = reader("ann", 60);

    // Event streams: none, then the wrong channel, then the right one.
    let (status, body) = refused(get(&server, "/sse/room:1", None).await).await;
    assert_eq!(
        (status, body.as_str()),
        (401, "token required: send Authorization: Bearer <token>\n")
    );
    let r = get(&server, "/sse/room:1", None).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ringcast\"");
    for path in ["/sse/secret", "/sse?ch=room:1,secret"] {
        let (status, body) = refused(get(&server, path, Some(&ann)).await).await;
        assert_eq!(
            (status, body.as_str()),
            (403, "the token does not allow channel secret\n"),
            "{path}"
        );
    }
    let stream = get(&server, "/sse/room:1", Some(&ann)).await;
    assert_eq!(stream.status(), 200);
    drop(stream);

    // Polls and presence, the same.
    for path in [
        "/poll/room:1?timeout=0",
        "/poll?ch=room:1,room:2&timeout=0",
        "/presence/room:1",
    ] {
        assert_eq!(get(&server, path, None).await.status(), 401, "{path}");
        assert_eq!(get(&server, path, Some(&ann)).await.status(), 200, "{path}");
    }
    for path in [
        "/poll/secret?timeout=0",
        "/poll?ch=room:1,secret",
        "/presence/secret",
    ] {
        assert_eq!(get(&server, path, Some(&ann)).await.status(), 403, "{path}");
    }

    // A WebSocket subscriber: refused at the handshake, or served.
    assert_eq!(ws(&server, "/ws/room:1", None).await.unwrap_err().0, 401);
    let (status, body) = ws(&server, "/ws/secret", Some(&ann)).await.unwrap_err();
    assert_eq!(
        (status, body.trim()),
        (403, "the token does not allow channel secret")
    );
    let mut sub = ws(&server, "/ws/room:1", Some(&ann)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&server, "room:1", "text/plain", "hello ann").await;
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("hello ann"));

    // The multiplexed protocol: commands before `auth` are refused
    // without closing; then the token decides channel by channel.
    let mut mux = ws(&server, "/ws", None).await.unwrap();
    send(
        &mut mux,
        json!({"type": "subscribe", "ch": "room:1", "rid": 1}),
    )
    .await;
    let e = recv(&mut mux).await.unwrap();
    assert_eq!(
        (e["code"].as_str(), e["rid"].as_i64()),
        (Some("unauthorized"), Some(1))
    );
    send(&mut mux, json!({"type": "auth", "token": ann, "rid": 2})).await;
    let authed = recv(&mut mux).await.unwrap();
    assert_eq!(authed["type"], "authed");
    assert_eq!(authed["sub"], "ann");
    assert!(authed["exp"].as_u64().unwrap() > get_current_timestamp());
    send(
        &mut mux,
        json!({"type": "subscribe", "ch": "room:1", "rid": 3}),
    )
    .await;
    assert_eq!(recv(&mut mux).await.unwrap()["type"], "subscribed");
    send(
        &mut mux,
        json!({"type": "subscribe", "ch": "secret", "rid": 4}),
    )
    .await;
    let e = recv(&mut mux).await.unwrap();
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["reason"], "the token does not allow channel secret");
    // Reading does not imply publishing.
    send(
        &mut mux,
        json!({"type": "publish", "ch": "room:1", "data": "x", "rid": 5}),
    )
    .await;
    let e = recv(&mut mux).await.unwrap();
    assert_eq!(e["code"], "forbidden");
    assert!(
        e["reason"].as_str().unwrap().contains("publish claim"),
        "{e}"
    );
    // A token handed over in the handshake works as `auth` does.
    let mut mux2 = ws(&server, "/ws", Some(&ann)).await.unwrap();
    send(&mut mux2, json!({"type": "subscribe", "ch": "room:2"})).await;
    assert_eq!(recv(&mut mux2).await.unwrap()["type"], "subscribed");

    let count = |reason: &'static str| {
        let server = &server;
        async move {
            (server)
                .metric(
                    "ringcast_requests_refused_total",
                    &format!("reason=\"{reason}\""),
                )
                .await
        }
    };
    // Refused requests and handshakes (commands on /ws are answered, not counted).
    assert_eq!(count("unauthorized").await, 6);
    assert_eq!(count("forbidden").await, 6);
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_own_reason() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let now = get_current_timestamp();
    let expired = token(json!({"exp": now - 1, "channels": ["*"]}));
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now + 60, "channels": ["*"]}),
        &EncodingKey::from_secret(b"somebody else's secret, 32+ bytes"),
    )
    .unwrap();
    let good = reader("bob", 60);
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"sub": "bob", "exp": now + 60, "channels": ["*"]}).to_string(),
    );
    let tampered = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none","typ":"JWT"}"#
        ),
        parts[1]
    );
    let cases = [
        (expired.as_str(), "token expired"),
        (other_key.as_str(), "token signature invalid"),
        (tampered.as_str(), "token signature invalid"),
        (alg_none.as_str(), "token algorithm not accepted"),
        ("garbage", "token malformed"),
    ];
    for (t, reason) in cases {
        for path in ["/sse/room:1", "/poll/room:1?timeout=0"] {
            let (status, body) = refused(get(&server, path, Some(t)).await).await;
            assert_eq!(status, 401, "{path} {reason}");
            assert!(body.starts_with(reason), "{path}: {body}");
        }
        let (status, body) = ws(&server, "/ws/room:1", Some(t)).await.unwrap_err();
        assert_eq!(status, 401);
        assert!(body.starts_with(reason), "{body}");
        // `auth` on /ws: an error naming why, then the close code.
        let mut mux = ws(&server, "/ws", None).await.unwrap();
        send(&mut mux, json!({"type": "auth", "token": t})).await;
        let e = recv(&mut mux).await.unwrap();
        assert_eq!(e["code"], "token_rejected");
        assert!(e["reason"].as_str().unwrap().starts_with(reason), "{e}");
        let (code, why) = recv(&mut mux).await.unwrap_err();
        if reason == "token expired" {
            assert_eq!((u16::from(code), why.as_str()), (4001, "token expired"));
        } else {
            assert_eq!(u16::from(code), 4003);
            assert!(
                why.starts_with(&format!("token rejected: {reason}")),
                "{why}"
            );
        }
    }
    // `?token=` only where the operator allows it.
    let path = format!("/poll/room:1?timeout=0&token={good}");
    assert_eq!(get(&server, &path, None).await.status(), 401);
    let open = Server::start(&["--jwt-secret", SECRET, "--allow-token-in-query"]);
    assert_eq!(get(&open, &path, None).await.status(), 200);
}

#[tokio::test]
async fn a_token_that_expires_ends_the_connection_and_a_refresh_keeps_it() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let short = reader("cy", 2);

    // A WebSocket subscriber is closed with 4001.
    let mut sub = ws(&server, "/ws/room:1", Some(&short)).await.unwrap();
    let closed = loop {
        match tokio::time::timeout(WAIT, sub.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (u16::from(closed.code), closed.reason.as_str()),
        (4001, "token expired")
    );

    // An event stream says so, then ends.
    let stream = get(&server, "/sse/room:1", Some(&reader("cy", 2))).await;
    assert_eq!(stream.status(), 200);
    let text = tokio::time::timeout(WAIT, stream.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.ends_with("event:error\ndata:{\"type\":\"error\",\"code\":\"token_expired\",\"reason\":\"token expired\"}\n\n"),
        "{text}"
    );

    // On /ws a refresh before expiry keeps the connection; without one it
    // closes with 4001.
    let mut kept = ws(&server, "/ws", None).await.unwrap();
    send(&mut kept, json!({"type": "auth", "token": reader("cy", 2)})).await;
    assert_eq!(recv(&mut kept).await.unwrap()["type"], "authed");
    let mut lapsed = ws(&server, "/ws", None).await.unwrap();
    send(
        &mut lapsed,
        json!({"type": "auth", "token": reader("cy", 2)}),
    )
    .await;
    assert_eq!(recv(&mut lapsed).await.unwrap()["type"], "authed");
    send(
        &mut kept,
        json!({"type": "refresh", "token": reader("cy", 60), "rid": 1}),
    )
    .await;
    assert_eq!(recv(&mut kept).await.unwrap()["type"], "authed");
    // A refresh for somebody else is refused.
    send(
        &mut kept,
        json!({"type": "refresh", "token": reader("dee", 60), "rid": 2}),
    )
    .await;
    assert_eq!(recv(&mut kept).await.unwrap()["code"], "token_rejected");
    let (code, why) = recv(&mut lapsed).await.unwrap_err();
    assert_eq!((u16::from(code), why.as_str()), (4001, "token expired"));
    // The refreshed one is still there and serves. A refresh with a bad
    // token is refused, and the token in place stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(
        &mut kept,
        json!({"type": "refresh", "token": "garbage", "rid": 3}),
    )
    .await;
    assert_eq!(recv(&mut kept).await.unwrap()["code"], "token_rejected");
    send(&mut kept, json!({"type": "ping", "rid": 4})).await;
    assert_eq!(recv(&mut kept).await.unwrap()["type"], "pong");
    // A newer token that allows less ends what it no longer allows.
    for ch in ["room:1", "room:2"] {
        send(&mut kept, json!({"type": "subscribe", "ch": ch})).await;
        assert_eq!(recv(&mut kept).await.unwrap()["type"], "subscribed");
    }
    let narrower =
        token(json!({"sub": "cy", "exp": get_current_timestamp() + 60, "channels": ["room:2"]}));
    send(&mut kept, json!({"type": "refresh", "token": narrower})).await;
    assert_eq!(recv(&mut kept).await.unwrap()["type"], "authed");
    let dropped = recv(&mut kept).await.unwrap();
    assert_eq!(
        dropped,
        json!({"type": "unsubscribed", "ch": "room:1", "reason": "the token does not allow channel room:1"})
    );
    publish(&server, "room:1", "text/plain", "not for cy").await;
    publish(&server, "room:2", "text/plain", "for cy").await;
    assert_eq!(recv(&mut kept).await.unwrap()["data"], "for cy");
}

#[tokio::test]
async fn a_token_with_a_publish_claim_may_publish_over_http_too() {
    let key = "backend-key-0123456789";
    let server = Server::start(&["--jwt-secret", SECRET, "--publish-key", key]);
    let writer =
        token(json!({"sub": "eve", "exp": get_current_timestamp() + 60, "publish": ["room:1"]}));
    let post = |path: &'static str, auth: String, ct: &'static str| {
        let server = &server;
        async move {
            reqwest::Client::new()
                .post(server.url(path))
                .header("Authorization", auth)
                .header("Content-Type", ct)
                .body("{\"ch\":\"room:1\",\"data\":\"x\"}")
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post("/pub/room:1", bearer(&writer), "text/plain")
            .await
            .status(),
        200
    );
    assert_eq!(
        post("/pub/room:1", bearer(key), "text/plain")
            .await
            .status(),
        200
    );
    let (status, body) = refused(post("/pub/room:2", bearer(&writer), "text/plain").await).await;
    assert_eq!(status, 403);
    assert!(
        body.starts_with("the token does not allow publishing to room:2"),
        "{body}"
    );
    // Batches need a key: their lines may name any channel.
    let r = post("/pub/room:1", bearer(&writer), "application/x-ndjson").await;
    assert_eq!(r.status(), 403);
    let expired = token(json!({"exp": get_current_timestamp() - 1, "publish": ["room:1"]}));
    let (status, body) = refused(post("/pub/room:1", bearer(&expired), "text/plain").await).await;
    assert_eq!((status, body.as_str()), (401, "token expired\n"));
}

#[tokio::test]
async fn the_publish_claim_lets_a_client_publish_over_ws() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let writer = token(json!({
        "sub": "dee",
        "exp": get_current_timestamp() + 60,
        "channels": ["room:*"],
        "publish": ["room:1"],
    }));
    let mut mux = ws(&server, "/ws", Some(&writer)).await.unwrap();
    send(&mut mux, json!({"type": "subscribe", "ch": "room:1"})).await;
    assert_eq!(recv(&mut mux).await.unwrap()["type"], "subscribed");
    send(
        &mut mux,
        json!({"type": "publish", "ch": "room:1", "data": "mine", "rid": 1}),
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            recv(&mut mux).await.unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    got.sort();
    assert_eq!(got, ["message", "published"]);
    send(
        &mut mux,
        json!({"type": "publish", "ch": "room:2", "data": "not mine"}),
    )
    .await;
    assert_eq!(recv(&mut mux).await.unwrap()["code"], "forbidden");
}

/// `POST /ticket` trades a token for a single-use ticket that a client
/// which cannot set headers puts in its URL.
#[tokio::test]
async fn a_ticket_stands_in_for_the_token_once() {
    let server = Server::start(&["--jwt-secret", SECRET, "--ticket-ttl", "2s"]);
    let ann = reader("ann", 60);
    let http = reqwest::Client::new();
    let ticket = |auth: Option<String>| {
        let mut req = http.post(server.url("/ticket"));
        if let Some(t) = auth {
            req = req.header("Authorization", bearer(&t));
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let no_store = r.headers().get("cache-control").cloned();
            (status, r.text().await.unwrap(), no_store)
        }
    };
    let take = |(status, body, no_store): (u16, String, Option<reqwest::header::HeaderValue>)| {
        assert_eq!(status, 200, "{body}");
        assert_eq!(no_store.unwrap(), "no-store");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["expires_in"], 2);
        v["ticket"].as_str().unwrap().to_string()
    };

    // An event stream, once.
    let t = take(ticket(Some(ann.clone())).await);
    assert_eq!(t.len(), 22, "128 bits, base64url");
    let stream = get(&server, &format!("/sse/room:1?ticket={t}"), None).await;
    assert_eq!(stream.status(), 200);
    drop(stream);
    let (status, body) =
        refused(get(&server, &format!("/sse/room:1?ticket={t}"), None).await).await;
    assert_eq!(
        (status, body.trim()),
        (
            401,
            "ticket unknown, already used or expired: get a new one with POST /ticket"
        )
    );
    // It grants what the token grants, and no more.
    let t = take(ticket(Some(ann.clone())).await);
    let (status, _) =
        refused(get(&server, &format!("/poll/secret?timeout=0&ticket={t}"), None).await).await;
    assert_eq!(status, 403);
    // A WebSocket, once.
    let t = take(ticket(Some(ann.clone())).await);
    let mut mux = ws(&server, &format!("/ws?ticket={t}"), None).await.unwrap();
    send(&mut mux, json!({"type": "subscribe", "ch": "room:1"})).await;
    assert_eq!(recv(&mut mux).await.unwrap()["type"], "subscribed");
    assert_eq!(
        ws(&server, &format!("/ws/room:1?ticket={t}"), None)
            .await
            .unwrap_err()
            .0,
        401
    );
    // It expires.
    let t = take(ticket(Some(ann.clone())).await);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        get(&server, &format!("/presence/room:1?ticket={t}"), None)
            .await
            .status(),
        401
    );

    // Getting one needs a valid token in the header, a POST, no body.
    let (status, body, _) = ticket(None).await;
    assert_eq!(
        (status, body.trim()),
        (401, "token required: send Authorization: Bearer <token>")
    );
    let expired =
        token(json!({"sub": "ann", "exp": get_current_timestamp() - 10, "channels": ["room:*"]}));
    let (status, body, _) = ticket(Some(expired)).await;
    assert_eq!((status, body.trim()), (401, "token expired"));
    let r = http.get(server.url("/ticket")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    let r = (http.post(server.url("/ticket")))
        .header("Authorization", bearer(&ann))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap().trim()),
        (400, "POST /ticket takes no body")
    );
    // Tickets never reach the log.
    assert!(!server.log().contains(&t), "a ticket was logged");
}

#[tokio::test]
async fn a_node_without_keys_issues_no_tickets() {
    let server = Server::start(&[]);
    let r = reqwest::Client::new()
        .post(server.url("/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("issues no tickets"));
}

/// Presence names a token holder by its `sub`, once however many
/// connections it has; anonymous connections by their client id.
#[tokio::test]
async fn presence_shows_the_sub_once_per_user() {
    let server = Server::start(&[
        "--jwt-secret",
        SECRET,
        "--config",
        &open_namespace_config("lobby:"),
    ]);
    let ann = token(json!({"sub": "ann", "exp": get_current_timestamp() + 60, "channels": ["*"]}));
    let mut watcher = ws(&server, "/ws", None).await.unwrap();
    send(&mut watcher, json!({"type": "subscribe", "ch": "lobby:1"})).await;
    let me = recv(&mut watcher).await.unwrap();
    assert_eq!(me["type"], "subscribed");
    let anon = me["client"].as_str().unwrap().to_string();
    assert_eq!(anon.len(), 16, "an anonymous client id: {me}");

    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut tab = ws(&server, "/ws", Some(&ann)).await.unwrap();
        send(&mut tab, json!({"type": "subscribe", "ch": "lobby:1"})).await;
        let answer = recv(&mut tab).await.unwrap();
        assert_eq!(
            (answer["type"].as_str(), answer["client"].as_str()),
            (Some("subscribed"), Some("ann"))
        );
        tabs.push(tab);
    }
    send(
        &mut watcher,
        json!({"type": "presence", "ch": "lobby:1", "rid": 1}),
    )
    .await;
    let mut events = Vec::new();
    let list = loop {
        let m = recv_json(&mut watcher).await;
        if m["type"] == "presence" {
            break m;
        }
        events.push(m);
    };
    assert_eq!(list["clients"], json!([anon, "ann"]), "{list}");
    events.retain(|e| e["client"] != anon.as_str()); // its own arrival
    assert_eq!(
        events,
        [json!({"type": "joined", "ch": "lobby:1", "client": "ann"})],
        "one joined for two tabs"
    );
    let r = reqwest::get(server.url("/presence/lobby:1")).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["clients"], json!([anon, "ann"]));

    // Closing one tab leaves ann present; closing the other, not.
    drop(tabs.pop());
    send(
        &mut watcher,
        json!({"type": "presence", "ch": "lobby:1", "rid": 2}),
    )
    .await;
    let m = recv_json(&mut watcher).await;
    assert_eq!(
        (m["type"].as_str(), &m["clients"]),
        (Some("presence"), &json!([anon, "ann"])),
        "{m}"
    );
    drop(tabs.pop());
    let m = recv_json(&mut watcher).await;
    assert_eq!(m, json!({"type": "left", "ch": "lobby:1", "client": "ann"}));
}

/// A config file whose namespace `prefix` needs no token, so anonymous
/// and token holders meet in it.
fn open_namespace_config(prefix: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "ringcast-tokens-{}-{prefix}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!("[[namespace]]\nprefix = \"{prefix}\"\ntoken = false\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A node with a JWKS file verifies tokens by the key their `kid` names.
#[tokio::test]
async fn jwks_keys_verify_tokens_by_kid() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let server = Server::start(&["--jwt-jwks", &format!("{fixtures}/jwks.json")]);
    assert!(
        server
            .banner
            .contains("tokens       verified (ES256; 1 JWKS keys by kid)"),
        "{}",
        server.banner
    );
    let pem = std::fs::read(format!("{fixtures}/ec-p256-private.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let signed = |kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let claims =
            json!({"sub": "ann", "exp": get_current_timestamp() + 60, "channels": ["room:*"]});
        encode(&header, &claims, &key).unwrap()
    };
    let stream = get(&server, "/sse/room:1", Some(&signed("ec-2026"))).await;
    assert_eq!(stream.status(), 200);
    drop(stream);
    let (status, body) = refused(get(&server, "/sse/room:1", Some(&signed("ec-2025"))).await).await;
    assert_eq!(
        (status, body.trim()),
        (401, "token signed with an unknown key (kid \"ec-2025\")")
    );
    let mut mux = ws(&server, "/ws", None).await.unwrap();
    send(
        &mut mux,
        json!({"type": "auth", "token": signed("ec-2026")}),
    )
    .await;
    assert_eq!(recv(&mut mux).await.unwrap()["sub"], "ann");
}

/// A connection that subscribed anonymously and authenticated later
/// leaves presence as whom it joined as.
#[tokio::test]
async fn a_token_that_comes_later_does_not_strand_a_presence_entry() {
    let server = Server::start(&[
        "--jwt-secret",
        SECRET,
        "--config",
        &open_namespace_config("hall:"),
    ]);
    let ann = token(json!({"sub": "ann", "exp": get_current_timestamp() + 60, "channels": ["*"]}));
    let mut mux = ws(&server, "/ws", None).await.unwrap();
    send(&mut mux, json!({"type": "subscribe", "ch": "hall:1"})).await;
    let joined_as = recv(&mut mux).await.unwrap()["client"]
        .as_str()
        .unwrap()
        .to_string();
    send(&mut mux, json!({"type": "auth", "token": ann})).await;
    loop {
        if recv(&mut mux).await.unwrap()["type"] == "authed" {
            break;
        }
    }
    let members = |server: &Server| {
        let url = server.url("/presence/hall:1");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["clients"]
                .clone()
        }
    };
    assert_eq!(members(&server).await, json!([joined_as]));
    send(&mut mux, json!({"type": "unsubscribe", "ch": "hall:1"})).await;
    loop {
        if recv(&mut mux).await.unwrap()["type"] == "unsubscribed" {
            break;
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    while members(&server).await != json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "still present: {}",
            members(&server).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
