//! Issue 14, stage 8: "messages that survive" in a cluster, where Redis
//! is the store. Real `redis-server`s (Debian's, one per test on a free
//! port), real nodes, tokio-tungstenite and reqwest clients:
//!
//! * a durable subscriber acks on node A and resumes on node B from its
//!   cursor, which Redis keeps (the 100 / ack 60 / +20 → exactly
//!   61–120), `POST /ack` on another node, and the refusals;
//! * `--fsync` with `--redis`: a Redis that cannot keep the promise stops
//!   the node at start with the reason; at `always` every publish answered
//!   `200` is in Redis after it is killed (`SIGKILL`) and restarted from
//!   its append-only file;
//! * Redis losing its data: a new epoch per channel, cursors gone; clients
//!   are told `reset` (epoch) and old ids are `stale_id`;
//! * receipts: an ack on either node sends one receipt per cursor move to
//!   the watchers of `<ch>:receipts` on every node, none for an ack that
//!   moves nothing.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::get_current_timestamp;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::events::{stream, take};
use common::redis_server::RedisServer;
use common::{recv_message, Server, Ws, JWT_SECRET};

/// A node of the cluster on `redis`, checking tokens, with `extra`
/// flags; ready (its Pub/Sub connected: publishes are refused before).
async fn node(redis: &RedisServer, extra: &[&str]) -> Server {
    let mut args = vec![
        "--redis",
        redis.url.as_str(),
        "--jwt-secret",
        JWT_SECRET,
        // Larger than any test publishes (the kill test sends at most
        // 8,000): a message trimmed from Redis's history is not a lost one.
        "--history-size",
        "10000",
    ];
    args.extend_from_slice(extra);
    let node = Server::start(&args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(node.url("/readyz")).await.unwrap();
        if r.status() == 200 {
            return node;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node's exit status and standard error, when it must not start.
fn refused_start(redis: &RedisServer, fsync: &str) -> (Option<i32>, String) {
    exits(&["--redis", &redis.url, "--fsync", fsync])
}

/// Runs the node with `args`, which must make it exit within 10 s: its
/// exit status and standard error (a node that starts is killed, and the
/// test fails).
fn exits(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started with {args:?}; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A token for `sub` reading every channel.
fn token(sub: &str) -> String {
    let exp = get_current_timestamp() + 3600;
    common::hs256(&json!({"sub": sub, "exp": exp, "channels": ["*"]}))
}

/// A `/ws` session presenting `token`.
async fn session(node: &Server, token: &str) -> Ws {
    let mut req = node.ws_url("/ws").into_client_request().unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    req.headers_mut().insert("Authorization", bearer);
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Sends `v` and returns the next frame that is not a message.
async fn ask(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::text(v.to_string())).await.unwrap();
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

/// No message arrives for a while (no duplicate, no extra one);
/// presence events (the session's own `joined`) may.
async fn nothing_more(ws: &mut Ws) {
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
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

/// Publishes over HTTP: the status and the body.
async fn try_publish(node: &Server, ch: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(node.url(&format!("/pub/{ch}")))
        .header("Content-Type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Publishes `m<from>` ..= `m<to>`; their ids in order.
async fn publish_range(node: &Server, ch: &str, from: usize, to: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..=to {
        let (status, body) = try_publish(node, ch, &format!("m{i}")).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    ids
}

fn expected(ids: &[String], from: usize) -> Vec<(String, String)> {
    (ids.iter().enumerate())
        .map(|(i, id)| (id.clone(), format!("m{}", from + i)))
        .collect()
}

/// `POST /ack/{ch}` on `node`: status and body.
async fn http_ack(node: &Server, ch: &str, token: &str, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(node.url(&format!("/ack/{ch}")))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "text/plain")
        .body(id.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_cursor_acked_on_one_node_resumes_on_another_with_exactly_61_to_120() {
    let redis = RedisServer::start_with_aof("everysec");
    let (a, b) = (node(&redis, &[]).await, node(&redis, &[]).await);
    let ann = token("ann");

    let mut ws = session(&a, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "inbox", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(
        (&subscribed["durable"], &subscribed["unread"]),
        (&json!(true), &json!(0)),
        "{subscribed}"
    );
    // Published on B, delivered on A through Redis.
    let mut ids = publish_range(&b, "inbox", 1, 100).await;
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
    // An older ack changes nothing (cumulative).
    let acked = ask(&mut ws, json!({"type": "ack", "ch": "inbox", "id": ids[9]})).await;
    assert_eq!(acked["cursor"], json!(ids[59]), "{acked}");
    ws.close(None).await.unwrap();

    ids.extend(publish_range(&a, "inbox", 101, 120).await);
    // Node B has never seen ann: the cursor comes from Redis.
    let mut ws = session(&b, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "inbox", "durable": true}),
    )
    .await;
    assert_eq!(
        (&subscribed["cursor"], &subscribed["unread"]),
        (&json!(ids[59]), &json!(60)),
        "{subscribed}"
    );
    assert_eq!(messages(&mut ws, 60).await, expected(&ids[60..], 61));
    nothing_more(&mut ws).await;

    // Acked over HTTP on A, seen on B's next subscription.
    let (status, body) = http_ack(&a, "inbox", &ann, &ids[109]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["cursor"], &body["unread"]),
        (&json!(ids[109]), &json!(10))
    );
    let mut again = session(&b, &ann).await;
    let subscribed = ask(
        &mut again,
        json!({"type": "subscribe", "ch": "inbox", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["cursor"], json!(ids[109]), "{subscribed}");
    assert_eq!(messages(&mut again, 10).await, expected(&ids[110..], 111));

    // Refusals, as on one node: an id not issued, another epoch, a
    // channel ann never subscribed to durably.
    let epoch = ids[0].split('-').next().unwrap();
    let (status, body) = http_ack(&b, "inbox", &ann, &format!("{epoch}-500")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_ack(&b, "inbox", &ann, "0000000000ff-3").await;
    assert_eq!(status, 409, "{body}");
    publish_range(&a, "plain", 1, 1).await;
    let (status, body) = http_ack(&b, "plain", &ann, &format!("{epoch}-1")).await;
    assert!(status == 409 || status == 404, "{status} {body}");
    // A second device keeps its own cursor, from now.
    let mut phone = session(&a, &ann).await;
    let subscribed = ask(
        &mut phone,
        json!({"type": "subscribe", "ch": "inbox", "durable": true, "device": "phone"}),
    )
    .await;
    assert_eq!(
        (&subscribed["cursor"], &subscribed["unread"]),
        (&json!(ids[119]), &json!(0)),
        "{subscribed}"
    );
    // GET /unread, from Redis: ann's own cursor is 10 behind.
    assert_eq!(
        unread(&b, &ann, "").await,
        (200, json!({"unread": {"inbox": 10}, "total": 10}))
    );

    // The cursors are where docs/durability.md says.
    let mut con = redis.connection().await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg("rc:{inbox}:cur")
        .arg(b"ann\0".as_slice())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(ids[109].as_str()));
}

#[tokio::test]
async fn fsync_in_a_cluster_is_checked_against_redis_at_start() {
    // No append-only file: neither `always` nor `interval` can be kept.
    let plain = RedisServer::start();
    for policy in ["always", "interval"] {
        let (code, err) = refused_start(&plain, policy);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("--fsync {policy} in a cluster"))
                && err.contains("appendonly no")
                && err.contains("--appendonly yes"),
            "{err}"
        );
    }
    // `never` asks nothing of Redis.
    let n = node(&plain, &["--fsync", "never"]).await;
    assert_eq!(try_publish(&n, "c", "x").await.0, 200);
    drop(n);
    // An AOF fsynced every second by a Redis older than 7.2 (no WAITAOF)
    // cannot keep `always`; it keeps `interval`.
    let everysec = RedisServer::start_with_aof("everysec");
    let version: String = {
        let mut con = everysec.connection().await;
        redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await
            .unwrap()
    };
    if version.contains("redis_version:7.0") || version.contains("redis_version:6.") {
        let (code, err) = refused_start(&everysec, "always");
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("7.2") && err.contains("appendfsync everysec"),
            "{err}"
        );
    }
    let n = node(&everysec, &["--fsync", "interval"]).await;
    assert_eq!(try_publish(&n, "c", "x").await.0, 200);
    assert!(n.log().contains("--fsync interval"), "{}", n.log());
    // --data-dir stays refused with --redis: Redis is the store.
    let (code, err) = exits(&[
        "--redis",
        &everysec.url,
        "--data-dir",
        "/tmp/ringcast-never-made",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("Redis is the store"), "{err}");
}

#[tokio::test]
async fn fsync_always_answers_only_what_survives_redis_being_killed() {
    let mut redis = RedisServer::start_with_aof("always");
    let a = node(&redis, &["--fsync", "always"]).await;
    let log = a.log();
    assert!(log.contains("--fsync always"), "{log}");
    // Publishes at full speed from several tasks while Redis is killed:
    // every one answered 200 must be there after the restart.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let url = a.url("/pub/kept");
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..2000 {
                let r = client
                    .post(&url)
                    .header("Content-Type", "text/plain")
                    .body(format!("t{t}-{i}"))
                    .send()
                    .await;
                let Ok(r) = r else { break };
                if r.status() != 200 {
                    continue;
                }
                let v: Value = r.json().await.unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                answered.lock().unwrap().push(id);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in tasks {
        t.abort();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 10, "only {} answered", answered.len());
    redis.restart();
    let mut con = redis.connection().await;
    let (epoch, seq): (Option<String>, Option<u64>) = redis::cmd("HMGET")
        .arg("rc:{kept}:meta")
        .arg("epoch")
        .arg("seq")
        .query_async(&mut con)
        .await
        .unwrap();
    let (epoch, seq) = (epoch.unwrap_or_default(), seq.unwrap_or(0));
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg("rc:{kept}:log")
        .arg("-")
        .arg("+")
        .query_async::<redis::streams::StreamRangeReply>(&mut con)
        .await
        .unwrap()
        .ids
        .into_iter()
        .map(|e| format!("{epoch}-{}", e.id.trim_end_matches("-0")))
        .collect();
    for id in &answered {
        assert!(
            ids.contains(id),
            "{id} was answered 200 and is gone (Redis at {epoch}-{seq})"
        );
    }
}

#[tokio::test]
async fn redis_losing_its_data_is_a_new_epoch_and_old_cursors_are_stale() {
    let mut redis = RedisServer::start();
    let a = node(&redis, &[]).await;
    let ann = token("ann");
    let mut ws = session(&a, &ann).await;
    ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "lost", "durable": true}),
    )
    .await;
    let ids = publish_range(&a, "lost", 1, 5).await;
    assert_eq!(messages(&mut ws, 5).await, expected(&ids, 1));
    let acked = ask(&mut ws, json!({"type": "ack", "ch": "lost", "id": ids[2]})).await;
    assert_eq!(acked["type"], "acked", "{acked}");

    redis.restart(); // no persistence: everything is gone
                     // Wait for the node to be back in step (its Pub/Sub reconnects).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        let (status, body) = try_publish(&a, "lost", "after").await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            break v["id"].as_str().unwrap().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(first.ends_with("-1"), "{first}");
    assert_ne!(first.split('-').next(), ids[0].split('-').next());
    // The live subscriber is told: reset (epoch), then the new message.
    let mut saw_reset = false;
    loop {
        let m = recv_message(&mut ws).await;
        if m["type"] == "reset" {
            assert_eq!(m["reason"], "epoch", "{m}");
            saw_reset = true;
        } else if m["type"] == "message" {
            assert_eq!(m["id"], json!(first), "{m}");
            break;
        }
    }
    assert!(saw_reset);
    // An ack of the old epoch is stale. The cursor went with the rest;
    // the durable subscriber's next ack makes it again, in the new epoch
    // (an identity not subscribed durably gets `not_durable` over HTTP).
    let stale = ask(&mut ws, json!({"type": "ack", "ch": "lost", "id": ids[4]})).await;
    assert_eq!(stale["code"], "stale_id", "{stale}");
    let (status, body) = http_ack(&a, "lost", &ann, &first).await;
    assert_eq!(status, 409, "{body}");
    let acked = ask(&mut ws, json!({"type": "ack", "ch": "lost", "id": first})).await;
    assert_eq!(
        (&acked["cursor"], &acked["unread"]),
        (&json!(first), &json!(0)),
        "{acked}"
    );
    let mut again = session(&a, &ann).await;
    let subscribed = ask(
        &mut again,
        json!({"type": "subscribe", "ch": "lost", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["cursor"], json!(first), "{subscribed}");
    // A client resuming with an old id is told reset (epoch), then gets
    // what the new epoch holds.
    let mut other = session(&a, &token("bob")).await;
    let subscribed = ask(
        &mut other,
        json!({"type": "subscribe", "ch": "lost", "since": ids[4]}),
    )
    .await;
    let frames = [subscribed, recv_message(&mut other).await];
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "reset" && f["reason"] == "epoch"),
        "{frames:?}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A Redis host crash that cuts the tail of the append-only file, made
/// by restarting Redis from a copy of its files taken 5 messages earlier:
/// Redis would number messages 6.. again under the same epoch. The node
/// that had them notices (its copy is ahead of Redis in the same epoch),
/// gives the channel a new epoch, and its subscribers are told `reset`
/// (epoch) — no id names two messages, nothing is dropped as a duplicate.
#[tokio::test]
async fn redis_rolled_back_under_the_same_epoch_gets_a_new_epoch() {
    let mut redis = RedisServer::start_with_aof("always");
    let a = node(&redis, &[]).await;
    let mut ws = session(&a, &token("ann")).await;
    ask(&mut ws, json!({"type": "subscribe", "ch": "rb"})).await;
    let ids = publish_range(&a, "rb", 1, 5).await;
    let dir = redis.data_dir().unwrap().to_path_buf();
    let saved = dir.with_extension("saved");
    let _ = std::fs::remove_dir_all(&saved);
    copy_dir(&dir, &saved);
    let later = publish_range(&a, "rb", 6, 10).await;
    let mut all = ids.clone();
    all.extend(later);
    assert_eq!(messages(&mut ws, 10).await, expected(&all, 1));

    redis.kill();
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&saved, &dir);
    std::fs::remove_dir_all(&saved).unwrap();
    redis.restart();

    // Until the node is back: publishes get 503.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        let (status, body) = try_publish(&a, "rb", "after").await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            break v["id"].as_str().unwrap().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let old_epoch = ids[0].split('-').next().unwrap();
    assert_ne!(after.split('-').next().unwrap(), old_epoch, "{after}");
    // The subscriber: reset (epoch), then (history again under the new
    // epoch and) the new message — which is not taken for a duplicate.
    let mut saw_reset = false;
    loop {
        let m = recv_message(&mut ws).await;
        if m["type"] == "reset" {
            assert_eq!(m["reason"], "epoch", "{m}");
            saw_reset = true;
        } else if m["type"] == "message" {
            let id = m["id"].as_str().unwrap();
            assert!(!id.starts_with(old_epoch), "an old-epoch id again: {m}");
            if m["data"] == "after" {
                assert_eq!(id, after);
                break;
            }
        }
    }
    assert!(saw_reset);
    assert!(a.log().contains("asking for a new epoch"), "{}", a.log());
}

/// The same over HTTP: a durable poll makes the cursor on A, an event
/// stream on A reads 100, `POST /ack` on B (which follows nothing: the
/// ack is checked in Redis) acks 60, and a durable stream on B gets
/// exactly 61–120.
#[tokio::test]
async fn an_event_stream_acked_on_another_node_resumes_with_exactly_61_to_120() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]).await, node(&redis, &[]).await);
    let ann = token("ann");
    let poll = reqwest::Client::new()
        .get(a.url("/poll/news?durable=1&timeout=0"))
        .header("Authorization", format!("Bearer {ann}"))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    let mut sse = Box::pin(stream(&a, "/sse/news?durable=1", &ann).await);
    let mut ids = publish_range(&b, "news", 1, 100).await;
    assert_eq!(take(&mut sse, 100).await, expected(&ids, 1));
    let (status, body) = http_ack(&b, "news", &ann, &ids[59]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ch": "news", "cursor": ids[59], "unread": 40}));
    drop(sse);

    ids.extend(publish_range(&a, "news", 101, 120).await);
    let mut sse = Box::pin(stream(&b, "/sse/news?durable=1", &ann).await);
    assert_eq!(take(&mut sse, 60).await, expected(&ids[60..], 61));
    let more = tokio::time::timeout(Duration::from_millis(400), sse.next()).await;
    assert!(more.is_err(), "nothing more: {more:?}");
}

/// A Redis Cluster: `--fsync` is checked on every master. `always` needs
/// an AOF fsynced before each answer (`appendfsync always`) on each; one
/// master without makes the node refuse to start, naming it. With all of
/// them set, publishes work and durable cursors too (every key of a
/// channel shares its slot).
#[tokio::test]
async fn a_redis_cluster_is_checked_master_by_master() {
    let rc = common::redis_server::RedisCluster::start(3);
    let urls = rc.urls();
    let start = |fsync: &str| exits(&["--redis", &urls, "--fsync", fsync]);
    let (code, err) = start("always");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("master") && err.contains("appendonly no"),
        "{err}"
    );
    for (i, &port) in rc.ports.iter().enumerate() {
        rc.cli(port, &["config", "set", "appendonly", "yes"]);
        if i > 0 {
            rc.cli(port, &["config", "set", "appendfsync", "always"]);
        }
    }
    // AOF everywhere, but the first master fsyncs every second only.
    let (code, err) = start("always");
    assert_eq!(code, Some(1), "{err}");
    let first = format!("127.0.0.1:{}", rc.ports[0]);
    assert!(
        err.contains(&first) && err.contains("appendfsync everysec"),
        "{err}"
    );
    rc.cli(rc.ports[0], &["config", "set", "appendfsync", "always"]);
    let node = Server::start(&[
        "--redis",
        &urls,
        "--jwt-secret",
        JWT_SECRET,
        "--fsync",
        "always",
    ]);
    let ann = token("ann");
    let mut ws = session(&node, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "spread", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["durable"], json!(true), "{subscribed}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ids = loop {
        let (status, body) = try_publish(&node, "spread", "m1").await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            break vec![v["id"].as_str().unwrap().to_string()];
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(messages(&mut ws, 1).await, expected(&ids, 1));
    let acked = ask(
        &mut ws,
        json!({"type": "ack", "ch": "spread", "id": ids[0]}),
    )
    .await;
    assert_eq!(acked["cursor"], json!(ids[0]), "{acked}");
}

/// `GET /unread{query}` on `node` with `token`: status and body.
async fn unread(node: &Server, token: &str, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(node.url(&format!("/unread{query}")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn unread_counts_in_a_cluster_come_from_redis_per_device() {
    let redis = RedisServer::start();
    let config = ConfigFile::inbox("unread");
    let extra = ["--config", config.path()];
    let (a, b) = (node(&redis, &extra).await, node(&redis, &extra).await);
    let ann = token("ann");
    // Cursors "from now" on two channels (node A), and a phone's on one
    // (node B); then everyone goes offline.
    let mut ws = session(&a, &ann).await;
    for ch in ["room:1", "room:2"] {
        let s = ask(
            &mut ws,
            json!({"type": "subscribe", "ch": ch, "durable": true}),
        )
        .await;
        assert_eq!(s["unread"], json!(0), "{s}");
    }
    ws.close(None).await.unwrap();
    let mut phone = session(&b, &ann).await;
    let s = ask(
        &mut phone,
        json!({"type": "subscribe", "ch": "room:1", "durable": true, "device": "phone"}),
    )
    .await;
    assert_eq!(s["unread"], json!(0), "{s}");
    phone.close(None).await.unwrap();
    assert_eq!(
        unread(&b, &ann, "").await,
        (
            200,
            json!({"unread": {"room:1": 0, "room:2": 0}, "total": 0})
        )
    );

    let one = publish_range(&b, "room:1", 1, 5).await;
    publish_range(&a, "room:2", 1, 3).await;
    publish_range(&a, "room:3", 1, 2).await; // no cursor of ann: not counted
    for n in [&a, &b] {
        assert_eq!(
            unread(n, &ann, "").await,
            (
                200,
                json!({"unread": {"room:1": 5, "room:2": 3}, "total": 8})
            )
        );
    }
    // An ack on A moves only the default device's count.
    let (status, body) = http_ack(&a, "room:1", &ann, &one[2]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        unread(&b, &ann, "").await,
        (
            200,
            json!({"unread": {"room:1": 2, "room:2": 3}, "total": 5})
        )
    );
    assert_eq!(
        unread(&a, &ann, "?device=phone").await,
        (200, json!({"unread": {"room:1": 5}, "total": 5}))
    );
    // The same over /ws, on either node.
    for n in [&a, &b] {
        let mut ws = session(n, &ann).await;
        let answer = ask(&mut ws, json!({"type": "unread", "device": "phone"})).await;
        assert_eq!(
            answer,
            json!({"type": "unread", "unread": {"room:1": 5}, "total": 5})
        );
    }
    // In a durable namespace (an inbox) an ack makes the cursor, and
    // the channel is counted from then on.
    let inbox = publish_range(&b, "user:ann", 1, 4).await;
    let (status, body) = http_ack(&b, "user:ann", &ann, &inbox[0]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        unread(&a, &ann, "").await,
        (
            200,
            json!({"unread": {"room:1": 2, "room:2": 3, "user:ann": 3}, "total": 8})
        )
    );
    // An identity without cursors; a request without one.
    assert_eq!(
        unread(&a, &token("bob"), "").await,
        (200, json!({"unread": {}, "total": 0}))
    );
    let r = reqwest::get(a.url("/unread")).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The index is where docs/cluster.md says.
    let mut con = redis.connection().await;
    let mut indexed: Vec<String> = redis::cmd("SMEMBERS")
        .arg("rc:who:{ann}")
        .query_async(&mut con)
        .await
        .unwrap();
    indexed.sort();
    assert_eq!(indexed, ["room:1", "room:2", "user:ann"]);

    // Redis gone: 503 with the reason, as for acks.
    redis.pause(true);
    let (status, body) = unread(&a, &ann, "").await;
    redis.pause(false);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.as_str().unwrap().contains("redis unavailable"),
        "{body}"
    );
}

/// A config file, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    /// A file holding `toml`; `name` keeps tests' files apart.
    fn new(name: &str, toml: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "ringcast-cluster-{name}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, toml).unwrap();
        ConfigFile(path)
    }

    /// The inbox namespace `user:` (`owner = "user:{sub}"`, history-size
    /// 5, so at most 50 waiting messages).
    fn inbox(name: &str) -> ConfigFile {
        ConfigFile::new(
            &format!("inbox-{name}"),
            "[[namespace]]\nprefix = \"user:\"\nowner = \"user:{sub}\"\n\
             inbox-ttl = \"1h\"\nhistory-size = 5\n",
        )
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The length of `ch`'s history stream in Redis.
async fn log_len(redis: &RedisServer, ch: &str) -> u64 {
    let mut con = redis.connection().await;
    redis::cmd("XLEN")
        .arg(format!("rc:{{{ch}}}:log"))
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_inbox_in_a_cluster_keeps_what_its_owner_has_not_acked() {
    let redis = RedisServer::start();
    let config = ConfigFile::inbox("keeps");
    let extra = ["--config", config.path()];
    let (a, b) = (node(&redis, &extra).await, node(&redis, &extra).await);
    let ann = token("ann");

    // 30 messages while ann is offline: six times the history size.
    let ids = publish_range(&a, "user:ann", 1, 30).await;
    assert_eq!(log_len(&redis, "user:ann").await, 30, "all wait in Redis");

    // Ann, on the other node, gets every one of them.
    let mut ws = session(&b, &ann).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "user:ann", "durable": true}),
    )
    .await;
    assert_eq!(
        (&subscribed["durable"], &subscribed["unread"]),
        (&json!(true), &json!(30)),
        "{subscribed}"
    );
    assert_eq!(messages(&mut ws, 30).await, expected(&ids, 1));
    nothing_more(&mut ws).await;
    let acked = ask(
        &mut ws,
        json!({"type": "ack", "ch": "user:ann", "id": ids[19]}),
    )
    .await;
    assert_eq!(
        acked,
        json!({"type": "acked", "ch": "user:ann", "cursor": ids[19], "unread": 10})
    );
    // The ack freed 1–20 at once: 21–30 wait (more than history-size).
    assert_eq!(log_len(&redis, "user:ann").await, 10);
    ws.close(None).await.unwrap();

    // Reconnected (on either node): exactly 21–30.
    for n in [&a, &b] {
        let mut ws = session(n, &ann).await;
        let subscribed = ask(
            &mut ws,
            json!({"type": "subscribe", "ch": "user:ann", "durable": true}),
        )
        .await;
        assert_eq!(
            (&subscribed["cursor"], &subscribed["unread"]),
            (&json!(ids[19]), &json!(10)),
            "{subscribed}"
        );
        assert_eq!(messages(&mut ws, 10).await, expected(&ids[20..], 21));
        nothing_more(&mut ws).await;
    }

    // All read: the inbox holds what any channel holds, history-size.
    let (status, body) = http_ack(&a, "user:ann", &ann, &ids[29]).await;
    assert_eq!((status, &body["unread"]), (200, &json!(0)), "{body}");
    assert_eq!(log_len(&redis, "user:ann").await, 5);
    publish_range(&b, "user:ann", 31, 33).await;
    assert_eq!(log_len(&redis, "user:ann").await, 5);

    // Nobody reads cat's inbox: it keeps 10 × history-size, no more.
    publish_range(&a, "user:cat", 1, 60).await;
    assert_eq!(log_len(&redis, "user:cat").await, 50);
    let mut ws = session(&a, &token("cat")).await;
    let subscribed = ask(
        &mut ws,
        json!({"type": "subscribe", "ch": "user:cat", "durable": true}),
    )
    .await;
    assert_eq!(subscribed["unread"], json!(50), "{subscribed}");
    let got = messages(&mut ws, 50).await;
    assert_eq!((got[0].1.as_str(), got[49].1.as_str()), ("m11", "m60"));

    // Another identity: forbidden, on both nodes, over /ws and HTTP.
    let reason = "channel user:ann belongs to another identity";
    let bob = token("bob");
    for n in [&a, &b] {
        let mut ws = session(n, &bob).await;
        let e = ask(&mut ws, json!({"type": "subscribe", "ch": "user:ann"})).await;
        assert_eq!(
            (&e["code"], &e["reason"]),
            (&json!("forbidden"), &json!(reason)),
            "{e}"
        );
        let (status, body) = http_ack(n, "user:ann", &bob, &ids[29]).await;
        let text = body.as_str().map(str::trim_end);
        assert_eq!((status, text), (403, Some(reason)), "{body}");
    }
}

/// The next frame of `ws`, which must be a receipt on `ch`: what it
/// carries. Live-only, as on a single node: no id, ephemeral.
async fn receipt(ws: &mut Ws, ch: &str) -> Value {
    let m = recv_message(ws).await;
    assert_eq!(
        (&m["type"], &m["ch"], &m["ephemeral"], &m["id"]),
        (&json!("message"), &json!(ch), &json!(true), &Value::Null),
        "a live-only message on the receipts channel: {m}"
    );
    serde_json::from_str(m["data"].as_str().unwrap()).unwrap()
}

/// Receipts in a cluster: an ack on either node (`/ws` on A, `POST /ack`
/// on B), which Redis applies, sends exactly one receipt per cursor move
/// to the watchers of `room:1:receipts` on every node; an ack that moves
/// nothing and a refused ack send none, and nobody publishes to the
/// receipts channel on any node.
#[tokio::test]
async fn receipts_in_a_cluster_reach_every_node_once_per_cursor_move() {
    let redis = RedisServer::start();
    let config = ConfigFile::new(
        "receipts",
        "[[namespace]]\nprefix = \"room:\"\ndurable = true\nreceipts = true\n",
    );
    let extra = ["--config", config.path()];
    let (a, b) = (node(&redis, &extra).await, node(&redis, &extra).await);
    let receipts = "room:1:receipts";

    // A watcher on each node: B's sees an ack made on A, A's one made on
    // B, through Redis.
    let mut watchers = Vec::new();
    for n in [&b, &a] {
        let mut ws = session(n, &token("cat")).await;
        let s = ask(&mut ws, json!({"type": "subscribe", "ch": receipts})).await;
        assert_eq!(s["type"], "subscribed", "{s}");
        assert!(s.get("durable").is_none(), "no cursor on receipts: {s}");
        watchers.push(ws);
    }

    let mut ann = session(&a, &token("ann")).await;
    let s = ask(
        &mut ann,
        json!({"type": "subscribe", "ch": "room:1", "durable": true, "device": "phone"}),
    )
    .await;
    assert_eq!(s["durable"], true, "{s}");
    let ids = publish_range(&b, "room:1", 1, 3).await;
    assert_eq!(messages(&mut ann, 3).await, expected(&ids, 1));

    // Ann's ack on A moves her phone's cursor: one receipt on each node.
    let acked = ask(
        &mut ann,
        json!({"type": "ack", "ch": "room:1", "id": ids[1]}),
    )
    .await;
    assert_eq!(
        (&acked["type"], &acked["cursor"]),
        (&json!("acked"), &json!(ids[1])),
        "{acked}"
    );
    for ws in &mut watchers {
        assert_eq!(
            receipt(ws, receipts).await,
            json!({"type": "receipt", "ch": "room:1", "id": ids[1], "by": "ann", "device": "phone"})
        );
    }
    // An older id, and the same again, move nothing; an id past the
    // newest is refused: no receipt.
    for id in [&ids[0], &ids[1]] {
        let acked = ask(&mut ann, json!({"type": "ack", "ch": "room:1", "id": id})).await;
        assert_eq!(acked["cursor"], json!(ids[1]), "{acked}");
    }
    let (epoch, _) = ids[2].split_once('-').unwrap();
    let refused = ask(
        &mut ann,
        json!({"type": "ack", "ch": "room:1", "id": format!("{epoch}-99")}),
    )
    .await;
    assert_eq!(refused["type"], "error", "{refused}");
    for ws in &mut watchers {
        nothing_more(ws).await;
    }

    // Bob's POST /ack on B makes his own cursor (no device): a receipt
    // without a device; the same ack again moves nothing.
    let bob = token("bob");
    let (status, body) = http_ack(&b, "room:1", &bob, &ids[2]).await;
    assert_eq!((status, &body["cursor"]), (200, &json!(ids[2])), "{body}");
    for ws in &mut watchers {
        assert_eq!(
            receipt(ws, receipts).await,
            json!({"type": "receipt", "ch": "room:1", "id": ids[2], "by": "bob"})
        );
    }
    for id in [&ids[2], &ids[0]] {
        let (status, body) = http_ack(&b, "room:1", &bob, id).await;
        assert_eq!((status, &body["cursor"]), (200, &json!(ids[2])), "{body}");
    }
    for ws in &mut watchers {
        nothing_more(ws).await;
    }

    // Nobody publishes to the receipts channel, on any node.
    for n in [&a, &b] {
        let (status, body) = try_publish(n, receipts, "{\"type\":\"receipt\"}").await;
        assert_eq!(status, 403, "{body}");
    }
    for ws in &mut watchers {
        nothing_more(ws).await;
    }
}
