//! Receipts (`receipts = true`): an ack that moves a cursor publishes a
//! live-only `receipt` to `<ch>:receipts`; who may read that channel
//! (whoever may read `<ch>`; an inbox's only its identity), that nobody
//! may publish to it, and that a namespace without receipts publishes
//! none. The in-memory node answers acks at once (as `--fsync never`).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::Verifier;
use crate::config::StoreSettings;
use crate::policy::{Namespace, Namespaces};
use crate::store::Fsync;
use crate::transport::testing::{get, text, ConnId, Node, EPOCH};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A token for `sub` whose claims list `channels` (read and publish).
fn token(sub: &str, channels: &[&str]) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = json!({"sub": sub, "exp": exp, "channels": channels, "publish": channels});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// `room:` durable with receipts, `user:` an inbox with receipts, `chat:`
/// durable without.
fn node() -> Node {
    Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
        s.store = Some(StoreSettings {
            dir: "/nonexistent".into(),
            fsync: Fsync::Never,
        });
        let mut room = s.default_policy();
        (room.token, room.durable, room.receipts, room.publish) = (true, true, true, true);
        let mut inbox = room;
        inbox.owner = true;
        inbox.history.inbox = Some(std::time::Duration::from_secs(3600));
        let mut chat = room;
        chat.receipts = false;
        let space = |prefix: &str, policy| Namespace {
            prefix: prefix.into(),
            policy,
        };
        let spaces = vec![
            space("room:", room),
            space("user:", inbox),
            space("chat:", chat),
        ];
        s.namespaces = Arc::new(Namespaces::new(s.default_policy(), spaces).unwrap());
    })
}

fn id(seq: u64) -> String {
    format!("{EPOCH:012x}-{seq}")
}

fn command(node: &mut Node, c: ConnId, v: Value) {
    node.input(c, &text(&v.to_string()));
}

fn session(node: &mut Node, sub: &str, channels: &[&str]) -> ConnId {
    let c = node.open_ws("/ws");
    command(
        node,
        c,
        json!({"type": "auth", "token": token(sub, channels)}),
    );
    assert_eq!(node.json(c)[0]["type"], "authed");
    c
}

/// Subscribes and returns the `subscribed` answer (or the error).
fn subscribe(node: &mut Node, c: ConnId, ch: &str, device: Option<&str>) -> Value {
    let mut cmd = json!({"type": "subscribe", "ch": ch});
    if let Some(d) = device {
        cmd["device"] = json!(d);
    }
    command(node, c, cmd);
    node.json(c).remove(0)
}

/// The receipts a session got, as the JSON they carry.
fn receipts(node: &mut Node, c: ConnId) -> Vec<Value> {
    (node.json(c).into_iter())
        .filter(|v| v["type"] == "message")
        .map(|v| {
            assert!(
                v["id"].is_null() && v["ephemeral"] == true,
                "live-only: {v}"
            );
            let data = v["data"].as_str().expect("text");
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn ack(node: &mut Node, c: ConnId, ch: &str, seq: u64) -> Value {
    command(node, c, json!({"type": "ack", "ch": ch, "id": id(seq)}));
    node.json(c).remove(0)
}

fn post_ack(target: &str, auth: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /ack/{target} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn an_ack_that_moves_a_cursor_tells_the_receipts_channel_once() {
    let mut node = node();
    for i in 1..=3 {
        node.publish_text("room:7", &format!("m{i}"));
    }
    // The sender's token lists the room only: its receipts come with it.
    let sender = session(&mut node, "ann", &["room:7"]);
    let s = subscribe(&mut node, sender, "room:7:receipts", None);
    assert_eq!(s["type"], "subscribed", "{s}");
    assert!(s.get("durable").is_none(), "receipts keep no cursor: {s}");
    let reader = session(&mut node, "bob", &["room:*"]);
    let s = subscribe(&mut node, reader, "room:7", Some("phone"));
    assert_eq!(
        (&s["durable"], &s["unread"]),
        (&json!(true), &json!(0)),
        "{s}"
    );
    for i in 4..=6 {
        node.publish_text("room:7", &format!("m{i}"));
    }
    node.json(reader);
    assert_eq!(ack(&mut node, reader, "room:7", 5)["type"], "acked");
    assert_eq!(
        receipts(&mut node, sender),
        [json!({"type":"receipt","ch":"room:7","id":id(5),"by":"bob","device":"phone"})]
    );
    // Nothing moves: no receipt (an older id, the same id, a refused one).
    for seq in [4, 5, 99] {
        ack(&mut node, reader, "room:7", seq);
        assert_eq!(
            receipts(&mut node, sender),
            Vec::<Value>::new(),
            "ack of {seq}"
        );
    }
    // POST /ack, without a device: the identity's own cursor.
    let h = node.connect();
    node.input(h, &post_ack("room:7", &token("bob", &["room:*"]), &id(6)));
    assert_eq!(node.response(h).status, 200);
    assert_eq!(
        receipts(&mut node, sender),
        [json!({"type":"receipt","ch":"room:7","id":id(6),"by":"bob"})]
    );
    // The reader sees no receipt of its own on room:7.
    assert!(node.json(reader).iter().all(|v| v["type"] != "message"));
}

#[test]
fn nobody_publishes_to_a_receipts_channel_and_only_readers_of_the_channel_read_it() {
    let mut node = node();
    let ann = session(&mut node, "ann", &["room:*"]);
    command(
        &mut node,
        ann,
        json!({"type": "publish", "ch": "room:7:receipts", "data": "{\"type\":\"receipt\"}"}),
    );
    let e = node.json(ann).remove(0);
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        e["reason"].as_str().unwrap().contains("only the node"),
        "{e}"
    );
    // Nor over HTTP, with a key or a token.
    let body = "forged";
    let h = node.connect();
    let req = format!(
        "POST /pub/room:7:receipts HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    node.input(h, req.as_bytes());
    assert_eq!(node.response(h).status, 403);
    // Receipts have no ids: asked to be durable, a subscription is plain
    // (no cursor) — on /ws, and on a stream naming a room and its
    // receipts with ?durable=1.
    command(
        &mut node,
        ann,
        json!({"type": "subscribe", "ch": "room:7:receipts", "durable": true}),
    );
    let s = node.json(ann).remove(0);
    assert_eq!(s["type"], "subscribed", "{s}");
    assert!(s.get("durable").is_none(), "{s}");
    let sse = node.connect();
    let bearer = format!("Bearer {}", token("ann", &["room:*"]));
    node.input(
        sse,
        &get(
            "/sse?ch=room:7,room:7:receipts&durable=1",
            &[("Authorization", &bearer)],
        ),
    );
    assert_eq!(node.response(sse).status, 200);
    let bob = session(&mut node, "bob", &["room:*"]);
    node.publish_text("room:7", "m1");
    assert_eq!(ack(&mut node, bob, "room:7", 1)["type"], "acked");
    let data: Vec<Value> = (node.sse(sse).iter())
        .filter_map(|i| i.event()?.data.clone())
        .filter(|d| d.contains("receipt"))
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect();
    assert_eq!(
        data,
        [json!({"type":"receipt","ch":"room:7","id":id(1),"by":"bob"})]
    );
    // A token for another room may not read room:7's receipts.
    let eve = session(&mut node, "eve", &["room:8"]);
    let e = subscribe(&mut node, eve, "room:7:receipts", None);
    assert_eq!(e["code"], "forbidden", "{e}");
}

#[test]
fn an_inboxs_receipts_are_its_identitys_own() {
    let mut node = node();
    node.publish_text("user:bob", "for bob");
    // A sender may not watch bob's reading, whatever its claim says.
    let ann = session(&mut node, "ann", &["*"]);
    let e = subscribe(&mut node, ann, "user:bob:receipts", None);
    assert_eq!(
        (&e["code"], &e["reason"]),
        (
            &json!("forbidden"),
            &json!("channel user:bob:receipts belongs to another identity")
        )
    );
    // Nor may an identity named `bob:receipts`.
    let odd = session(&mut node, "bob:receipts", &["*"]);
    let e = subscribe(&mut node, odd, "user:bob:receipts", None);
    assert_eq!(e["code"], "forbidden", "{e}");
    // Bob's other devices may: a read on the phone clears the laptop.
    let laptop = session(&mut node, "bob", &[]);
    let s = subscribe(&mut node, laptop, "user:bob:receipts", None);
    assert_eq!(s["type"], "subscribed", "{s}");
    let phone = session(&mut node, "bob", &[]);
    let s = subscribe(&mut node, phone, "user:bob", Some("phone"));
    assert_eq!(s["unread"], 1, "{s}");
    node.json(phone);
    assert_eq!(ack(&mut node, phone, "user:bob", 1)["type"], "acked");
    assert_eq!(
        receipts(&mut node, laptop),
        [json!({"type":"receipt","ch":"user:bob","id":id(1),"by":"bob","device":"phone"})]
    );
}

#[test]
fn a_namespace_without_receipts_publishes_none() {
    let mut node = node();
    let watcher = session(&mut node, "ann", &["chat:*"]);
    // An ordinary channel there, whatever its name says.
    let s = subscribe(&mut node, watcher, "chat:1:receipts", None);
    assert_eq!(s["type"], "subscribed", "{s}");
    let bob = session(&mut node, "bob", &["chat:*"]);
    subscribe(&mut node, bob, "chat:1", None);
    node.publish_text("chat:1", "hi");
    node.json(bob);
    assert_eq!(ack(&mut node, bob, "chat:1", 1)["type"], "acked");
    assert!(
        node.json(watcher).is_empty(),
        "no receipt where the namespace has none"
    );
}
