//! Receipts through the real binary (issue 14, stage 7): in a namespace
//! with `receipts = true`, a sender watching `<ch>:receipts` gets exactly
//! one live `receipt` per ack that moves a reader's cursor — from a `/ws`
//! `ack` (with the reader's device) and from `POST /ack/{ch}` (without) —
//! at `--fsync always`, on a node of two shards where the channel and its
//! receipts channel have different owners; none for an ack that moves
//! nothing, none in a namespace without receipts, and nobody may publish
//! to a receipts channel.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::{publish, recv_message, Server, Ws, JWT_SECRET};

/// A fresh directory (data and config), removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("ringcast-receipts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().into()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `room:` keeps cursors and publishes receipts; `chat:` keeps cursors
/// only. `--fsync always`, two shards (`common::Server`).
fn start(dir: &Dir) -> Server {
    let config = dir.path("ringcast.toml");
    std::fs::write(
        &config,
        "[[namespace]]\nprefix = \"room:\"\ndurable = true\nreceipts = true\n\
         [[namespace]]\nprefix = \"chat:\"\ndurable = true\n",
    )
    .unwrap();
    let data = dir.path("data");
    Server::start(&[
        "--jwt-secret",
        JWT_SECRET,
        "--data-dir",
        &data,
        "--fsync",
        "always",
        "--history-size",
        "100",
        "--config",
        &config,
    ])
}

/// A token for `sub` reading `channels`.
fn token(sub: &str, channels: &[&str]) -> String {
    let exp = get_current_timestamp() + 3600;
    common::hs256(&json!({"sub": sub, "exp": exp, "channels": channels}))
}

async fn session(node: &Server, token: &str) -> Ws {
    let mut req = node.ws_url("/ws").into_client_request().unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    req.headers_mut().insert("Authorization", bearer);
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Sends `v` and returns the next frame that is not a presence event.
async fn ask(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::text(v.to_string())).await.unwrap();
    recv_message(ws).await
}

/// The next frame, which must be a receipt: what it carries.
async fn receipt(ws: &mut Ws, ch: &str) -> Value {
    let m = recv_message(ws).await;
    assert_eq!(
        (&m["type"], &m["ch"], &m["ephemeral"], &m["id"]),
        (&json!("message"), &json!(ch), &json!(true), &Value::Null),
        "a live-only message on the receipts channel: {m}"
    );
    serde_json::from_str(m["data"].as_str().unwrap()).unwrap()
}

/// No frame but presence events for a while.
async fn nothing_more(ws: &mut Ws) {
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(frame) = tokio::time::timeout_at(until, ws.next()).await {
        let Some(Ok(Message::Text(t))) = frame else {
            panic!("unexpected: {frame:?}");
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert!(
            v["type"] == "joined" || v["type"] == "left",
            "unexpected: {v}"
        );
    }
}

/// A room whose receipts channel another shard owns (of two): the
/// receipt crosses shards.
fn room() -> String {
    use ringcast::hub::channel::owner_of;
    (0..)
        .map(|i| format!("room:{i}"))
        .find(|r| owner_of(r, 2) != owner_of(&format!("{r}:receipts"), 2))
        .unwrap()
}

#[tokio::test]
async fn a_sender_gets_exactly_the_receipts_of_the_acks_that_moved_a_cursor() {
    let dir = Dir::new("room");
    let node = start(&dir);
    let room = room();
    let receipts = format!("{room}:receipts");

    // The sender's token lists the room; it watches the receipts.
    let mut ann = session(&node, &token("ann", &[&room, "chat:*"])).await;
    let s = ask(&mut ann, json!({"type": "subscribe", "ch": receipts})).await;
    assert_eq!(s["type"], "subscribed", "{s}");
    assert!(s.get("durable").is_none(), "no cursor on receipts: {s}");
    let s = ask(
        &mut ann,
        json!({"type": "subscribe", "ch": "chat:1:receipts"}),
    )
    .await;
    assert_eq!(s["type"], "subscribed", "{s}");

    let bob_token = token("bob", &["room:*", "chat:*"]);
    let mut bob = session(&node, &bob_token).await;
    let s = ask(
        &mut bob,
        json!({"type": "subscribe", "ch": room, "device": "phone"}),
    )
    .await;
    assert_eq!(s["durable"], true, "{s}");
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(publish(&node, &room, "text/plain", format!("m{i}")).await);
    }
    for id in &ids {
        assert_eq!(recv_message(&mut bob).await["id"], json!(id));
    }

    // An ack that moves the cursor: one receipt, naming bob's phone.
    let a = ask(&mut bob, json!({"type": "ack", "ch": room, "id": ids[1]})).await;
    assert_eq!(
        (&a["type"], &a["cursor"]),
        (&json!("acked"), &json!(ids[1])),
        "{a}"
    );
    assert_eq!(
        receipt(&mut ann, &receipts).await,
        json!({"type": "receipt", "ch": room, "id": ids[1], "by": "bob", "device": "phone"})
    );
    // An older id, and the same again, move nothing: no receipt.
    for id in [&ids[0], &ids[1]] {
        let a = ask(&mut bob, json!({"type": "ack", "ch": room, "id": id})).await;
        assert_eq!(a["cursor"], json!(ids[1]), "{a}");
    }
    nothing_more(&mut ann).await;

    // POST /ack without a device: bob's own cursor, a receipt without one.
    let resp = reqwest::Client::new()
        .post(node.url(&format!("/ack/{room}")))
        .header("Authorization", format!("Bearer {bob_token}"))
        .header("Content-Type", "text/plain")
        .body(ids[2].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        receipt(&mut ann, &receipts).await,
        json!({"type": "receipt", "ch": room, "id": ids[2], "by": "bob"})
    );

    // chat: keeps cursors but publishes no receipts.
    let s = ask(&mut bob, json!({"type": "subscribe", "ch": "chat:1"})).await;
    assert_eq!(s["durable"], true, "{s}");
    let id = publish(&node, "chat:1", "text/plain", "hi".to_string()).await;
    assert_eq!(recv_message(&mut bob).await["id"], json!(id));
    let a = ask(&mut bob, json!({"type": "ack", "ch": "chat:1", "id": id})).await;
    assert_eq!(a["type"], "acked", "{a}");
    nothing_more(&mut ann).await;

    // Nobody publishes to a receipts channel: not a client, not a key.
    let resp = reqwest::Client::new()
        .post(node.url(&format!("/pub/{receipts}")))
        .header("Content-Type", "text/plain")
        .body("{\"type\":\"receipt\",\"by\":\"mallory\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await.unwrap().contains("only the node"));
    nothing_more(&mut ann).await;
}
