//! Durable cursors and acks through the real binary (issue 14, stage 4): a
//! subscriber with an identity acks, goes away, and a reconnect without
//! `since` resumes from its cursor — on `/ws` (tokio-tungstenite) and on
//! an event stream acked with `POST /ack/{ch}` (reqwest); two devices
//! keep two cursors; bad acks get their own errors and nothing else is
//! affected; cursors survive `kill -9` at `--fsync always`.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::events::{stream, take};
use common::store::{kill_9, DataDir};
use common::{no_more_messages, publish, recv_message, session, Server, Ws, JWT_SECRET};

/// A node that checks tokens and keeps a store in `dir`.
fn start(dir: &DataDir, fsync: &str) -> Server {
    Server::start(&[
        "--jwt-secret",
        JWT_SECRET,
        "--data-dir",
        dir.arg(),
        "--fsync",
        fsync,
        "--history-size",
        "1000",
    ])
}

/// A token for `sub` (none: a token without one) reading every channel.
fn token(sub: Option<&str>) -> String {
    let exp = get_current_timestamp() + 3600;
    let claims = match sub {
        Some(sub) => json!({"sub": sub, "exp": exp, "channels": ["*"]}),
        None => json!({"exp": exp, "channels": ["*"]}),
    };
    common::hs256(&claims)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Sends `v` and returns the next frame that is not a presence event
/// (a message there would be one too many: callers took every one).
async fn ask(ws: &mut Ws, v: Value) -> Value {
    send(ws, v).await;
    let answer = recv_message(ws).await;
    assert_ne!(answer["type"], "message", "{answer}");
    answer
}

/// The next `n` messages of a session: (id, data).
async fn messages(ws: &mut Ws, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = recv_message(ws).await;
        assert_eq!(m["type"], "message", "{m}");
        got.push((
            m["id"].as_str().unwrap().into(),
            m["data"].as_str().unwrap().into(),
        ));
    }
    got
}

/// Publishes `m<from>` ..= `m<to>` to `ch`; their ids in order.
async fn publish_range(node: &Server, ch: &str, from: usize, to: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..=to {
        ids.push(publish(node, ch, "text/plain", format!("m{i}")).await);
    }
    ids
}

fn expected(ids: &[String], from: usize) -> Vec<(String, String)> {
    (ids.iter().enumerate())
        .map(|(i, id)| (id.clone(), format!("m{}", from + i)))
        .collect()
}

#[tokio::test]
async fn a_ws_subscriber_acks_60_of_100_and_resumes_with_exactly_61_to_120() {
    let dir = DataDir::new("ws");
    let node = start(&dir, "interval");
    let ann = token(Some("ann"));
    let mut ws = session(&node, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "inbox", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(
        (&subscribed["durable"], &subscribed["unread"]),
        (&json!(true), &json!(0))
    );

    let mut ids = publish_range(&node, "inbox", 1, 100).await;
    assert_eq!(messages(&mut ws, 100).await, expected(&ids, 1));
    let acked = ask(
        &mut ws,
        json!({"type": "ack", "ch": "inbox", "id": ids[59]}),
    )
    .await;
    assert_eq!(
        acked,
        json!({"type": "acked", "ch": "inbox", "cursor": ids[59], "unread": 40})
    );
    ws.close(None).await.unwrap();

    ids.extend(publish_range(&node, "inbox", 101, 120).await);
    let mut ws = session(&node, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "inbox", "durable": true}),
    )
    .await;
    assert_eq!(
        (&subscribed["cursor"], &subscribed["unread"]),
        (&json!(ids[59]), &json!(60))
    );
    assert_eq!(messages(&mut ws, 60).await, expected(&ids[60..], 61));
    no_more_messages(&mut ws).await;
}

async fn post_ack(node: &Server, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(node.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn an_event_stream_acked_by_post_ack_resumes_with_exactly_61_to_120() {
    let dir = DataDir::new("sse");
    let node = start(&dir, "interval");
    let ann = token(Some("ann"));
    // A durable short poll creates the cursor ("from now") and answers
    // only once it exists, so nothing published after it can be missed.
    let poll = reqwest::Client::new()
        .get(node.url("/poll/inbox?durable=1&timeout=0"))
        .header("Authorization", format!("Bearer {ann}"))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    let mut sse = Box::pin(stream(&node, "/sse/inbox?durable=1", &ann).await);
    let mut ids = publish_range(&node, "inbox", 1, 100).await;
    assert_eq!(take(&mut sse, 100).await, expected(&ids, 1));
    let body = json!({"id": ids[59]}).to_string();
    let (status, answer) = post_ack(&node, "/ack/inbox", Some(&ann), &body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        json!({"ch": "inbox", "cursor": ids[59], "unread": 40})
    );
    drop(sse);

    ids.extend(publish_range(&node, "inbox", 101, 120).await);
    let mut sse = Box::pin(stream(&node, "/sse/inbox?durable=1", &ann).await);
    assert_eq!(take(&mut sse, 60).await, expected(&ids[60..], 61));
    let more = tokio::time::timeout(Duration::from_millis(300), sse.next()).await;
    assert!(more.is_err(), "nothing more: {more:?}");
}

#[tokio::test]
async fn two_devices_of_one_identity_keep_separate_cursors() {
    let dir = DataDir::new("devices");
    let node = start(&dir, "never");
    let ann = token(Some("ann"));
    let subscribe =
        |device: &str| json!({"type": "subscribe", "ch": "c", "durable": true, "device": device});
    let mut phone = session(&node, &ann).await;
    let mut laptop = session(&node, &ann).await;
    ask(&mut phone, subscribe("phone")).await;
    ask(&mut laptop, subscribe("laptop")).await;
    let ids = publish_range(&node, "c", 1, 10).await;
    messages(&mut phone, 10).await;
    messages(&mut laptop, 10).await;
    let a = ask(&mut phone, json!({"type": "ack", "ch": "c", "id": ids[7]})).await;
    assert_eq!((&a["cursor"], &a["unread"]), (&json!(ids[7]), &json!(2)));
    let a = ask(&mut laptop, json!({"type": "ack", "ch": "c", "id": ids[2]})).await;
    assert_eq!((&a["cursor"], &a["unread"]), (&json!(ids[2]), &json!(7)));
    phone.close(None).await.unwrap();
    laptop.close(None).await.unwrap();

    let mut phone = session(&node, &ann).await;
    let s = ask(&mut phone, subscribe("phone")).await;
    assert_eq!(s["cursor"], json!(ids[7]));
    assert_eq!(messages(&mut phone, 2).await, expected(&ids[8..], 9));
    no_more_messages(&mut phone).await;
    let mut laptop = session(&node, &ann).await;
    ask(&mut laptop, subscribe("laptop")).await;
    assert_eq!(messages(&mut laptop, 7).await, expected(&ids[3..], 4));
    no_more_messages(&mut laptop).await;
    // The HTTP side names the device with ?device=.
    let body = json!({"id": ids[9]}).to_string();
    let (status, answer) = post_ack(&node, "/ack/c?device=laptop", Some(&ann), &body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_ack(
        &node,
        "/ack/c?device=phone",
        Some(&ann),
        &json!({"id": ids[8]}).to_string(),
    )
    .await;
    assert_eq!(
        (
            status,
            answer.contains(&format!("\"cursor\":\"{}\"", ids[8]))
        ),
        (200, true),
        "{answer}"
    );
}

#[tokio::test]
async fn bad_acks_get_their_own_errors_and_nothing_else_is_affected() {
    let dir = DataDir::new("bad");
    let node = start(&dir, "never");
    let ann = token(Some("ann"));
    let mut ws = session(&node, &ann).await;
    ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    )
    .await;
    let ids = publish_range(&node, "c", 1, 3).await;
    messages(&mut ws, 3).await;
    let epoch = ids[0].split('-').next().unwrap().to_string();
    let code = |v: &Value| v["code"].as_str().unwrap_or_default().to_string();
    let ack = |ch: &str, id: &str| json!({"type": "ack", "ch": ch, "id": id});

    assert_eq!(code(&ask(&mut ws, ack("c", "nope")).await), "bad_id");
    assert_eq!(
        code(&ask(&mut ws, ack("c", "000000000001-2")).await),
        "stale_id"
    );
    let e = ask(&mut ws, ack("c", &format!("{epoch}-999"))).await;
    assert_eq!(code(&e), "unknown_id", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("newest {}", ids[2])),
        "{e}"
    );
    assert_eq!(
        code(&ask(&mut ws, ack("other", &ids[0])).await),
        "not_durable"
    );
    let mut anon = session(&node, &token(None)).await;
    assert_eq!(
        code(&ask(&mut anon, ack("c", &ids[0])).await),
        "no_identity"
    );

    let json_id = |id: &str| json!({"id": id}).to_string();
    let (s, why) = post_ack(&node, "/ack/c", None, &json_id(&ids[0])).await;
    assert_eq!(
        (s, why.as_str()),
        (401, "ack needs a token that names a user (sub)\n")
    );
    assert_eq!(
        post_ack(&node, "/ack/c", Some(&ann), &json_id("nope"))
            .await
            .0,
        400
    );
    assert_eq!(
        post_ack(&node, "/ack/c", Some(&ann), &json_id("000000000001-2"))
            .await
            .0,
        409
    );
    let (s, why) = post_ack(
        &node,
        "/ack/c",
        Some(&ann),
        &json_id(&format!("{epoch}-999")),
    )
    .await;
    assert_eq!(s, 404, "{why}");
    let (s, why) = post_ack(&node, "/ack/other", Some(&ann), &json_id(&ids[0])).await;
    assert_eq!(s, 409, "{why}");
    assert!(why.contains("keeps no cursors"), "{why}");

    // Each refusal named its cause in the log; the node goes on.
    for cause in [
        "bad_id",
        "stale_id",
        "unknown_id",
        "not_durable",
        "no_identity",
    ] {
        assert!(
            node.log().contains(cause),
            "no {cause} in the log:\n{}",
            node.log()
        );
    }
    let next = publish(&node, "c", "text/plain", "after").await;
    assert_eq!(
        messages(&mut ws, 1).await,
        [(next.clone(), "after".to_string())]
    );
    let a = ask(&mut ws, ack("c", &next)).await;
    assert_eq!((&a["type"], &a["unread"]), (&json!("acked"), &json!(0)));

    // A node without --data-dir keeps no cursors.
    let plain = Server::start(&["--jwt-secret", JWT_SECRET]);
    let mut ws = session(&plain, &ann).await;
    let e = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    )
    .await;
    assert_eq!(code(&e), "not_durable", "{e}");
    let (s, why) = post_ack(&plain, "/ack/c", Some(&ann), &json_id(&ids[0])).await;
    assert_eq!(s, 409, "{why}");
    assert!(why.contains("no --data-dir"), "{why}");
}

#[tokio::test]
async fn an_acked_cursor_survives_kill_9_at_fsync_always() {
    let dir = DataDir::new("kill");
    let mut node = start(&dir, "always");
    let ann = token(Some("ann"));
    let mut ws = session(&node, &ann).await;
    ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    )
    .await;
    let ids = publish_range(&node, "c", 1, 10).await;
    messages(&mut ws, 10).await;
    let a = ask(&mut ws, json!({"type": "ack", "ch": "c", "id": ids[6]})).await;
    assert_eq!(a["type"], "acked", "{a}");
    kill_9(&mut node);

    let node = start(&dir, "always");
    let mut ws = session(&node, &ann).await;
    let s = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    )
    .await;
    assert_eq!(
        (&s["cursor"], &s["unread"]),
        (&json!(ids[6]), &json!(3)),
        "{s}"
    );
    assert_eq!(messages(&mut ws, 3).await, expected(&ids[7..], 8));
    no_more_messages(&mut ws).await;
    assert!(node.log().contains("1 cursors"), "{}", node.log());
}

#[tokio::test]
async fn unread_counts_gather_every_shards_cursors() {
    let dir = DataDir::new("unread");
    let node = start(&dir, "never");
    let ann = token(Some("ann"));
    let mut ws = session(&node, &ann).await;
    // Six channels: on a node of two shards, both own some.
    let channels: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    for ch in &channels {
        ask(
            &mut ws,
            json!({"type": "subscribe", "ch": ch, "durable": true}),
        )
        .await;
    }
    let mut expected = serde_json::Map::new();
    for (i, ch) in channels.iter().enumerate() {
        let ids = publish_range(&node, ch, 1, i + 1).await;
        messages(&mut ws, i + 1).await;
        // Ack the first of each: i left unread.
        let a = ask(&mut ws, json!({"type": "ack", "ch": ch, "id": ids[0]})).await;
        assert_eq!(a["unread"], json!(i), "{a}");
        expected.insert(ch.clone(), json!(i));
    }
    let total: usize = (0..6).sum();
    let want = json!({"unread": expected, "total": total});
    let resp = reqwest::Client::new()
        .get(node.url("/unread"))
        .header("Authorization", format!("Bearer {ann}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), want);
    let mut over_ws = want.clone();
    over_ws["type"] = json!("unread");
    assert_eq!(ask(&mut ws, json!({"type": "unread"})).await, over_ws);
    let none = reqwest::get(node.url("/unread")).await.unwrap();
    assert_eq!(none.status(), 401);
}
