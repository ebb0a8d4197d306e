//! Receipts through the real binary (issue 14, stage 7): in a namespace
//! with `receipts = true`, a sender watching `<ch>:receipts` gets exactly
//! one live `receipt` per ack that moves a reader's cursor — from a `/ws`
//! `ack` (with the reader's device) and from `POST /ack/{ch}` (without) —
//! at `--fsync always`, on a node of two shards where the channel and its
//! receipts channel have different owners; none for an ack that moves
//! nothing, none in a namespace without receipts, and nobody may publish
//! to a receipts channel. An inbox's receipts reach its identity's other
//! devices (over an event stream) and are refused to a sender.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{no_more_messages, publish, recv_message, session, Server, Ws, JWT_SECRET};

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
    start_with(
        dir,
        "[[namespace]]\nprefix = \"room:\"\ndurable = true\nreceipts = true\n\
         [[namespace]]\nprefix = \"chat:\"\ndurable = true\n",
    )
}

/// A node with the namespaces of `toml`, at `--fsync always`.
fn start_with(dir: &Dir, toml: &str) -> Server {
    let config = dir.path("ringcast.toml");
    std::fs::write(&config, toml).unwrap();
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
    no_more_messages(&mut ann).await;

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
    no_more_messages(&mut ann).await;

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
    no_more_messages(&mut ann).await;
}

/// An event stream, read block by block (`\n\n`-separated), raw: the
/// stream's first block after `retry:` is the position the node sends once the owner's
/// replay arrived (`id:…`, no data: an EventSource dispatches nothing),
/// which tells the test the subscription is in place.
struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>>>,
    buf: String,
}

impl Sse {
    async fn open(node: &Server, path: &str, token: &str) -> Sse {
        let resp = reqwest::Client::new()
            .get(node.url(path))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut sse = Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        };
        // `retry:` first, then the position.
        loop {
            let b = sse
                .block(Duration::from_secs(10))
                .await
                .expect("a position");
            if b.starts_with("id:") {
                return sse;
            }
            assert!(b.starts_with("retry:"), "{b:?}");
        }
    }

    /// The next block that is not a comment, within `wait`.
    async fn block(&mut self, wait: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(until, self.body.next())
                .await
                .ok()?;
            let chunk = chunk.expect("open").unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The data of the next event with some, within `wait`.
    async fn data(&mut self, wait: Duration) -> Option<String> {
        loop {
            let block = self.block(wait).await?;
            let data: Vec<&str> = (block.lines())
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                return Some(data.join("\n"));
            }
        }
    }
}

#[tokio::test]
async fn an_inboxs_receipts_reach_its_identitys_other_devices_and_nobody_else() {
    let dir = Dir::new("inbox");
    let node = start_with(
        &dir,
        "[[namespace]]\nprefix = \"user:\"\nowner = \"user:{sub}\"\ninbox-ttl = \"1h\"\nreceipts = true\n",
    );
    let id = publish(&node, "user:bob", "text/plain", "for bob".to_string()).await;

    // A sender whose token lists everything may not watch bob's reading.
    let ann = token("ann", &["*"]);
    let resp = reqwest::Client::new()
        .get(node.url("/sse/user:bob:receipts"))
        .header("Authorization", format!("Bearer {ann}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.text().await.unwrap().trim_end(),
        "channel user:bob:receipts belongs to another identity"
    );

    // Bob's laptop watches over an event stream; his phone reads on /ws.
    let bob = token("bob", &[]);
    let mut laptop = Sse::open(&node, "/sse/user:bob:receipts", &bob).await;
    let mut phone = session(&node, &bob).await;
    let s = ask(
        &mut phone,
        json!({"type": "subscribe", "ch": "user:bob", "device": "phone"}),
    )
    .await;
    assert_eq!(
        (&s["durable"], &s["unread"]),
        (&json!(true), &json!(1)),
        "{s}"
    );
    assert_eq!(recv_message(&mut phone).await["id"], json!(id));
    let a = ask(
        &mut phone,
        json!({"type": "ack", "ch": "user:bob", "id": id}),
    )
    .await;
    assert_eq!(
        (&a["type"], &a["unread"]),
        (&json!("acked"), &json!(0)),
        "{a}"
    );
    let data = laptop
        .data(Duration::from_secs(10))
        .await
        .expect("a receipt");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap(),
        json!({"type": "receipt", "ch": "user:bob", "id": id, "by": "bob", "device": "phone"})
    );
    let more = laptop.data(Duration::from_millis(400)).await;
    assert_eq!(more, None, "exactly one receipt");
}
