//! Who may publish: publish keys on `POST /pub…`, with reqwest.

mod common;

use common::Server;
use serde_json::Value;

const KEY: &str = "k1-0123456789abcdef";
const NEXT_KEY: &str = "k2-fedcba9876543210";

async fn publish_with(server: &Server, auth: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(server.url("/pub/orders"))
        .header("Content-Type", "text/plain")
        .body(body.to_string());
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    req.send().await.unwrap()
}

/// What the channel's history holds, oldest first.
async fn history(server: &Server, epoch: &str) -> Vec<String> {
    let r = reqwest::get(server.url(&format!("/poll/orders?timeout=0&since={epoch}-0")))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    (body["messages"].as_array().unwrap().iter())
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn publishing_needs_one_of_the_keys_and_says_why_not() {
    let server = Server::start(&[
        "--publish-key",
        KEY,
        "--publish-key",
        NEXT_KEY,
        "--log",
        "ringcast=debug",
    ]);

    let r = publish_with(&server, None, "anonymous").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ringcast\"");
    assert_eq!(
        r.text().await.unwrap(),
        "publishing needs Authorization: Bearer <publish key>\n"
    );
    for wrong in [
        "Bearer k1-0123456789abcdeX".to_string(),
        format!("Bearer {KEY}x"),
        format!("Basic {KEY}"),
        "Bearer".to_string(),
    ] {
        let r = publish_with(&server, Some(&wrong), "forged").await;
        assert_eq!(r.status(), 403, "{wrong}");
        assert_eq!(
            r.text().await.unwrap(),
            "publish key rejected: not one of this node's --publish-key\n"
        );
    }

    // Either key publishes (rotation: both are valid at once).
    let r = publish_with(&server, Some(&format!("Bearer {KEY}")), "first").await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = publish_with(&server, Some(&format!("bearer {NEXT_KEY}")), "second").await;
    assert_eq!(r.status(), 200);
    // Only what was published with a key is in history.
    let epoch = id.split('-').next().unwrap();
    assert_eq!(history(&server, epoch).await, ["first", "second"]);

    let refused = |reason: &'static str| {
        let server = &server;
        async move {
            server
                .metric(
                    "ringcast_requests_refused_total",
                    &format!("reason=\"{reason}\""),
                )
                .await
        }
    };
    assert_eq!(refused("unauthorized").await, 1);
    assert_eq!(refused("forbidden").await, 4);
    // Each refusal is logged (at debug) with its cause, never the key.
    let log = server.log();
    assert!(
        log.contains("refused request: 403 publish key rejected"),
        "{log}"
    );
    assert!(
        log.contains("refused request: 401 publishing needs"),
        "{log}"
    );
    assert!(!log.contains("0123456789abcdeX"), "{log}");
    // Subscribing needs no key.
    let r = reqwest::get(server.url("/poll/orders?timeout=0"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn keys_can_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("ringcast-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("publish-keys");
    std::fs::write(&file, format!("# the backend's key\n{KEY}\n")).unwrap();
    let server = Server::start(&["--publish-key-file", file.to_str().unwrap()]);
    let r = publish_with(&server, Some(&format!("Bearer {KEY}")), "from a file").await;
    assert_eq!(r.status(), 200);
    let r = publish_with(&server, Some(&format!("Bearer {NEXT_KEY}")), "no").await;
    assert_eq!(r.status(), 403);
    std::fs::remove_dir_all(&dir).unwrap();
}
