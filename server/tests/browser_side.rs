//! What web pages need from the node, checked with independent clients
//! (reqwest, tokio-tungstenite) sending what browsers send: the `Origin`
//! check and CORS, the built-in client and demo, presence and ephemeral
//! publishes over plain HTTP.

mod common;

use std::time::Duration;

use common::{publish, recv_json, Server, Ws};
use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
const APP: &str = "http://app.test:3000";
const EVIL: &str = "http://evil.test";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// The answer may be read by a page of any origin, without credentials.
fn assert_any_origin(h: &HeaderMap) {
    assert_eq!(header(h, "access-control-allow-origin"), Some("*"));
    assert!(header(h, "access-control-allow-credentials").is_none());
}

/// `GET path` as a page of `origin` sends it.
async fn get_from(server: &Server, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .header("Origin", origin)
        .send()
        .await
        .unwrap()
}

/// A WebSocket handshake to `path` sending `Origin: origin`: the socket,
/// or the HTTP status and body of the refusal.
async fn ws_with_origin(server: &Server, path: &str, origin: &str) -> Result<Ws, (u16, String)> {
    let mut req = server.ws_url(path).into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    common::handshake_outcome(tokio_tungstenite::connect_async(req).await)
}

#[tokio::test]
async fn listed_origins_get_cors_with_credentials_and_others_403_before_anything_happens() {
    let server = Server::start(&["--allowed-origins", &format!("{APP},https://other.test")]);
    assert!(
        server
            .banner
            .contains("origins      http://app.test:3000,https://other.test"),
        "{}",
        server.banner
    );
    let http = reqwest::Client::new();

    // A short poll from a listed origin: the origin echoed, credentials
    // allowed, the cursor readable by scripts.
    let r = get_from(&server, "/poll/room?timeout=0", APP).await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(h, "vary"), Some("Origin"));
    let exposed = header(h, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("ETag"), "{exposed}");

    // The preflight of a publish with a header that is not CORS-simple.
    let r = http
        .request(reqwest::Method::OPTIONS, server.url("/pub/room"))
        .header("Origin", APP)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(APP));
    assert!(header(h, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let allowed = header(h, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert_eq!(header(h, "access-control-max-age"), Some("7200"));

    // An event stream from a listed origin carries the headers too.
    let r = get_from(&server, "/sse/room", "https://other.test").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "access-control-allow-origin"),
        Some("https://other.test")
    );
    drop(r);

    // A publish from an origin that is not listed is refused, names the
    // origin, and publishes nothing (a text/plain POST needs no preflight,
    // so the check must happen here).
    let r = http
        .post(server.url("/pub/room"))
        .header("Origin", EVIL)
        .header("Content-Type", "text/plain")
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The page may read why (and nothing else).
    assert_any_origin(r.headers());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("origin http://evil.test is not allowed"),
        "{body}"
    );
    assert_eq!(
        server.metric("ringcast_messages_published_total", "").await,
        0
    );

    // WebSocket handshakes are checked against the same list.
    let (status, body) = ws_with_origin(&server, "/ws", EVIL).await.unwrap_err();
    assert_eq!(status, 403);
    assert!(
        body.contains("origin http://evil.test is not allowed"),
        "{body}"
    );
    let mut ws = ws_with_origin(&server, "/ws/room", APP)
        .await
        .expect("a listed origin upgrades");
    // The node's own origin (its demo page) is always allowed.
    let own = format!("http://{}", server.addr);
    let mut mux = ws_with_origin(&server, "/ws", &own)
        .await
        .expect("the node's own origin upgrades");
    mux.send(Message::text(json!({"type":"ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut mux).await["type"], "pong");
    publish(&server, "room", "text/plain", "hello").await;
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("hello"));

    // The client itself is public: a page of any origin may load it.
    let r = get_from(&server, "/client.js", EVIL).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "access-control-allow-origin"),
        Some("*")
    );
    assert_eq!(
        server
            .metric("ringcast_requests_refused_total", "reason=\"origin\"")
            .await,
        2
    );
}

#[tokio::test]
async fn any_origin_by_default_without_credentials() {
    let server = Server::start(&[]);
    let r = get_from(&server, "/poll/room?timeout=0", EVIL).await;
    assert_eq!(r.status(), 200);
    assert_any_origin(r.headers());
    ws_with_origin(&server, "/ws", EVIL)
        .await
        .expect("any origin may upgrade by default");
    // Without an Origin (curl, servers) there are no CORS headers at all.
    let r = reqwest::get(server.url("/poll/room?timeout=0"))
        .await
        .unwrap();
    assert!(header(r.headers(), "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_client_and_the_demo_are_served_with_validators() {
    let server = Server::start(&[]);
    let http = reqwest::Client::new();
    let r = http.get(server.url("/client.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(header(r.headers(), "cache-control").is_some());
    let etag = header(r.headers(), "etag").unwrap().to_string();
    let js = r.text().await.unwrap();
    assert!(js.contains("export"), "an ES module");
    let r = http
        .get(server.url("/client.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(r.headers(), "etag"), Some(etag.as_str()));
    assert!(r.text().await.unwrap().is_empty());
    let r = http.get(server.url("/client.d.ts")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The demo is off unless asked for.
    assert_eq!(
        http.get(server.url("/")).send().await.unwrap().status(),
        404
    );
    drop(server);

    let server = Server::start(&["--demo"]);
    assert!(
        server.banner.contains("demo         http://"),
        "{}",
        server.banner
    );
    let r = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(r.text().await.unwrap().contains("<!doctype html>"));
}

#[tokio::test]
async fn presence_and_ephemeral_publishes_over_plain_http() {
    let server = Server::start(&["--client-publish"]);
    let http = reqwest::Client::new();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type":"subscribe","ch":"room"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    let joined = recv_json(&mut ws).await;
    assert_eq!(joined["type"], "joined");
    let me = joined["client"].as_str().unwrap().to_string();

    let r = http.get(server.url("/presence/room")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let presence: Value = r.json().await.unwrap();
    assert_eq!(presence, json!({"ch": "room", "clients": [me]}));
    let r = http
        .get(server.url("/presence/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["clients"], json!([]));
    let r = http
        .get(server.url("/presence/bad%20name"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(server.url("/presence/room"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // An ephemeral publish reaches live subscribers, has no id, and never
    // enters history.
    let r = http
        .post(server.url("/pub/room?ephemeral=1"))
        .header("Content-Type", "text/plain")
        .body("typing…")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"id": null}));
    let m = recv_json(&mut ws).await;
    assert_eq!(m["data"], "typing…");
    assert_eq!(m["ephemeral"], true);
    assert_eq!(m["id"], Value::Null);
    let id = publish(&server, "room", "text/plain", "kept").await;
    let epoch = id.split('-').next().unwrap();
    let r = http
        .get(server.url(&format!("/poll/room?timeout=0&since={epoch}-0")))
        .send()
        .await
        .unwrap();
    let polled: Value = r.json().await.unwrap();
    let datas: Vec<&str> = polled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(datas, ["kept"]);
    let r = http
        .post(server.url("/pub/room?ephemeral=maybe"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("ephemeral must be"));
}
