//! Durable subscriptions and acks (`super::super::ack`): `subscribed`
//! with the cursor, `ack` → `acked`, a reconnect without `since` resuming
//! from the cursor, two devices, `POST /ack/{ch}`, `?durable=1` on an event
//! stream, and every refusal with its own code or status. The in-memory
//! node keeps cursors in its hub and stores nothing (as `--fsync never`).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::Verifier;
use crate::config::StoreSettings;
use crate::policy::{Namespace, Namespaces};
use crate::store::Fsync;
use crate::transport::testing::{get, text, ConnId, Node, SseItem, EPOCH};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A token for `sub` (none: a token without one) reading everything.
fn token(sub: Option<&str>) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = match sub {
        Some(sub) => json!({"sub": sub, "exp": exp, "channels": ["*"]}),
        None => json!({"exp": exp, "channels": ["*"]}),
    };
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// A node that checks tokens and (says it) keeps a store.
fn node() -> Node {
    Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
        s.store = Some(StoreSettings {
            dir: "/nonexistent".into(),
            fsync: Fsync::Never,
        });
    })
}

fn id(seq: u64) -> String {
    format!("{EPOCH:012x}-{seq}")
}

fn command(node: &mut Node, c: ConnId, v: Value) {
    node.input(c, &text(&v.to_string()));
}

/// A `/ws` session authenticated as `sub`.
fn session(node: &mut Node, sub: Option<&str>) -> ConnId {
    let c = node.open_ws("/ws");
    command(node, c, json!({"type": "auth", "token": token(sub)}));
    assert_eq!(node.json(c)[0]["type"], "authed");
    c
}

/// Only the `message`s of a session's output, as (id, data).
fn messages(node: &mut Node, c: ConnId) -> Vec<(String, String)> {
    (node.json(c).into_iter())
        .filter(|v| v["type"] == "message")
        .map(|v| {
            (
                v["id"].as_str().unwrap().into(),
                v["data"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_durable_session_acks_and_resumes_from_its_cursor() {
    let mut node = node();
    node.publish_text("c", "before");
    let c = session(&mut node, Some("ann"));
    command(
        &mut node,
        c,
        json!({"type": "subscribe", "ch": "c", "durable": true, "rid": 1}),
    );
    let subscribed = node.json(c).remove(0);
    assert_eq!(subscribed["durable"], true, "{subscribed}");
    assert_eq!(
        subscribed["cursor"],
        id(1),
        "a first cursor starts from now"
    );
    assert_eq!(
        (subscribed["unread"].clone(), subscribed["rid"].clone()),
        (json!(0), json!(1))
    );
    for i in 2..=6 {
        node.publish_text("c", &format!("m{i}"));
    }
    assert_eq!(messages(&mut node, c).len(), 5);
    command(
        &mut node,
        c,
        json!({"type": "ack", "ch": "c", "id": id(4), "rid": "a"}),
    );
    assert_eq!(
        node.json(c),
        [json!({"type": "acked", "ch": "c", "cursor": id(4), "unread": 2, "rid": "a"})]
    );
    // Cumulative: an older ack changes nothing and says where it stands.
    command(&mut node, c, json!({"type": "ack", "ch": "c", "id": id(3)}));
    assert_eq!(node.json(c)[0]["cursor"], id(4));
    node.hang_up(c);

    node.publish_text("c", "m7");
    let again = session(&mut node, Some("ann"));
    command(
        &mut node,
        again,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    );
    let out = node.json(again);
    assert_eq!(
        (out[0]["cursor"].clone(), out[0]["unread"].clone()),
        (json!(id(4)), json!(3))
    );
    let got: Vec<&str> = (out.iter())
        .filter(|v| v["type"] == "message")
        .map(|v| v["data"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["m5", "m6", "m7"], "delivered, not acked: again");
}

#[test]
fn two_devices_of_one_identity_keep_separate_cursors() {
    let mut node = node();
    let phone = session(&mut node, Some("ann"));
    let laptop = session(&mut node, Some("ann"));
    for (c, device) in [(phone, "phone"), (laptop, "laptop")] {
        let sub = json!({"type": "subscribe", "ch": "c", "durable": true, "device": device});
        command(&mut node, c, sub);
    }
    for i in 1..=5 {
        node.publish_text("c", &format!("m{i}"));
    }
    node.json(phone);
    node.json(laptop);
    // Without "device", an ack is for the subscription's device.
    command(
        &mut node,
        phone,
        json!({"type": "ack", "ch": "c", "id": id(4)}),
    );
    command(
        &mut node,
        laptop,
        json!({"type": "ack", "ch": "c", "id": id(2)}),
    );
    assert_eq!(node.json(phone)[0]["cursor"], id(4));
    assert_eq!(node.json(laptop)[0]["cursor"], id(2));
    node.hang_up(phone);
    node.hang_up(laptop);
    let resume = |node: &mut Node, device: &str| {
        let c = session(node, Some("ann"));
        let sub = json!({"type": "subscribe", "ch": "c", "durable": true, "device": device});
        command(node, c, sub);
        messages(node, c)
            .into_iter()
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    assert_eq!(resume(&mut node, "phone"), ["m5"]);
    assert_eq!(resume(&mut node, "laptop"), ["m3", "m4", "m5"]);
}

#[test]
fn every_bad_ack_gets_its_own_error_and_the_session_goes_on() {
    let mut node = node();
    node.publish_text("c", "one");
    let c = session(&mut node, Some("ann"));
    command(
        &mut node,
        c,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    );
    node.json(c);
    let code = |node: &mut Node, v: Value| {
        command(node, c, v);
        let out = node.json(c);
        assert_eq!(out.len(), 1, "{out:?}");
        (
            out[0]["code"].as_str().unwrap_or("").to_string(),
            out[0].clone(),
        )
    };
    let ack = |ch: &str, id: &str| json!({"type": "ack", "ch": ch, "id": id});
    assert_eq!(code(&mut node, ack("c", "nope")).0, "bad_id");
    assert_eq!(
        code(&mut node, json!({"type": "ack", "ch": "c"})).0,
        "bad_id"
    );
    assert_eq!(code(&mut node, ack("c", "000000000001-1")).0, "stale_id");
    let (unknown, e) = code(&mut node, ack("c", &id(99)));
    assert_eq!(unknown, "unknown_id");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("newest {}", id(1))),
        "{e}"
    );
    assert_eq!(code(&mut node, ack("other", &id(1))).0, "not_durable");
    let bad_device = json!({"type": "ack", "ch": "c", "id": id(1), "device": "a b"});
    assert_eq!(code(&mut node, bad_device).0, "bad_request");
    // The session still works: a good ack.
    command(&mut node, c, ack("c", &id(1)));
    assert_eq!(node.json(c)[0]["type"], "acked");

    // No identity: a token without a sub, or none at all.
    let anon = session(&mut node, None);
    command(&mut node, anon, ack("c", &id(1)));
    assert_eq!(node.json(anon)[0]["code"], "no_identity");
    let sub = json!({"type": "subscribe", "ch": "c", "durable": true});
    command(&mut node, anon, sub);
    assert_eq!(node.json(anon)[0]["code"], "no_identity");

    // The store failed: unavailable, with a retry hint.
    node.fail_store("disk on fire");
    let (unavailable, e) = code(&mut node, ack("c", &id(1)));
    assert_eq!(unavailable, "unavailable");
    assert_eq!(e["retry_after"], 1, "{e}");
    assert!(
        e["reason"].as_str().unwrap().contains("disk on fire"),
        "{e}"
    );
}

#[test]
fn without_a_store_nothing_is_durable() {
    let mut plain = Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
    });
    let c = session(&mut plain, Some("ann"));
    command(
        &mut plain,
        c,
        json!({"type": "subscribe", "ch": "c", "durable": true}),
    );
    let e = plain.json(c).remove(0);
    assert_eq!(e["code"], "not_durable");
    assert!(
        e["reason"].as_str().unwrap().contains("no --data-dir"),
        "{e}"
    );
    command(
        &mut plain,
        c,
        json!({"type": "ack", "ch": "c", "id": id(1)}),
    );
    assert_eq!(plain.json(c)[0]["code"], "not_durable");
    // A plain subscription says nothing of cursors.
    command(&mut plain, c, json!({"type": "subscribe", "ch": "c"}));
    let s = plain.json(c).remove(0);
    assert_eq!(s["type"], "subscribed");
    assert!(s.get("durable").is_none(), "{s}");
}

#[test]
fn a_durable_namespace_keeps_cursors_for_identities_without_being_asked() {
    let mut node = Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
        s.store = Some(StoreSettings {
            dir: "/nonexistent".into(),
            fsync: Fsync::Never,
        });
        let mut durable = s.default_policy();
        durable.durable = true;
        let spaces = vec![Namespace {
            prefix: "inbox:".into(),
            policy: durable,
        }];
        s.namespaces = Arc::new(Namespaces::new(s.default_policy(), spaces).unwrap());
    });
    let c = session(&mut node, Some("ann"));
    command(
        &mut node,
        c,
        json!({"type": "subscribe", "ch": "inbox:ann"}),
    );
    assert_eq!(node.json(c)[0]["durable"], true);
    command(&mut node, c, json!({"type": "subscribe", "ch": "news"}));
    assert!(node.json(c)[0].get("durable").is_none());
    // An anonymous client subscribes plainly.
    let anon = session(&mut node, None);
    command(
        &mut node,
        anon,
        json!({"type": "subscribe", "ch": "inbox:ann"}),
    );
    assert!(node.json(anon)[0].get("durable").is_none());
}

/// `POST /ack/{target}` with `auth` and `body`.
fn post_ack(target: &str, auth: Option<&str>, content_type: &str, body: &str) -> Vec<u8> {
    let mut req = format!(
        "POST /ack/{target} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = auth {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

#[test]
fn an_event_stream_resumes_from_the_cursor_that_post_ack_moved() {
    let mut node = node();
    let ann = token(Some("ann"));
    let auth = format!("Bearer {ann}");
    let stream = |node: &mut Node| {
        let c = node.connect();
        node.input(
            c,
            &get("/sse/c?durable=1&device=tab", &[("Authorization", &auth)]),
        );
        assert_eq!(node.response(c).status, 200);
        c
    };
    let s = stream(&mut node);
    for i in 1..=4 {
        node.publish_text("c", &format!("m{i}"));
    }
    let data: Vec<String> = (node.sse(s).into_iter())
        .filter_map(|i| match i {
            SseItem::Event(e) => e.data,
            SseItem::Comment(_) => None,
        })
        .collect();
    assert_eq!(data, ["m1", "m2", "m3", "m4"]);
    node.hang_up(s);

    let c = node.connect();
    let body = format!("{{\"id\":\"{}\"}}", id(2));
    node.input(
        c,
        &post_ack("c?device=tab", Some(&ann), "application/json", &body),
    );
    let r = node.response(c);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"ch": "c", "cursor": id(2), "unread": 2}));
    // text/plain, kept alive: the next request on the same connection.
    node.input(
        c,
        &post_ack("c?device=tab", Some(&ann), "text/plain", &id(3)),
    );
    let r = node.response(c);
    assert_eq!((r.status, r.json()["unread"].clone()), (200, json!(1)));

    let s = stream(&mut node);
    let data: Vec<String> = (node.sse(s).into_iter())
        .filter_map(|i| match i {
            SseItem::Event(e) => e.data,
            SseItem::Comment(_) => None,
        })
        .collect();
    assert_eq!(data, ["m4"]);
}

#[test]
fn every_bad_post_ack_gets_its_own_status() {
    let mut node = node();
    let ann = token(Some("ann"));
    node.publish_text("c", "one");
    // A cursor for ann on c (a durable poll subscribes).
    let p = node.connect();
    let auth = format!("Bearer {ann}");
    node.input(
        p,
        &get("/poll/c?durable=1&timeout=0", &[("Authorization", &auth)]),
    );
    assert_eq!(node.response(p).status, 200);

    let status = |node: &mut Node, req: Vec<u8>| {
        let c = node.connect();
        node.input(c, &req);
        let r = node.response(c);
        (
            r.status,
            r.text().to_string(),
            r.header("Retry-After").map(str::to_string),
        )
    };
    let json_id = |id: &str| format!("{{\"id\":\"{id}\"}}");
    let ct = "application/json";
    let ok = status(&mut node, post_ack("c", Some(&ann), ct, &json_id(&id(1))));
    assert_eq!(ok.0, 200, "{ok:?}");
    let (s, why, _) = status(&mut node, post_ack("c", None, ct, &json_id(&id(1))));
    assert_eq!(
        (s, why.as_str()),
        (401, "ack needs a token that names a user (sub)\n")
    );
    let anon = token(None);
    assert_eq!(
        status(&mut node, post_ack("c", Some(&anon), ct, &json_id(&id(1)))).0,
        401
    );
    let (s, why, _) = status(&mut node, post_ack("c", Some(&ann), ct, &json_id("nope")));
    assert_eq!(s, 400);
    assert!(why.contains("12 hex digits"), "{why}");
    assert_eq!(
        status(&mut node, post_ack("c", Some(&ann), ct, "{}")).0,
        400
    );
    let (s, why, _) = status(
        &mut node,
        post_ack("c", Some(&ann), ct, &json_id("000000000001-1")),
    );
    assert_eq!(s, 409);
    assert!(why.contains("is from epoch 000000000001"), "{why}");
    let (s, why, _) = status(&mut node, post_ack("c", Some(&ann), ct, &json_id(&id(9))));
    assert_eq!(s, 404);
    assert!(why.contains(&format!("has no message {}", id(9))), "{why}");
    let (s, why, _) = status(
        &mut node,
        post_ack("other", Some(&ann), ct, &json_id(&id(1))),
    );
    assert_eq!(s, 409);
    assert!(why.contains("keeps no cursors"), "{why}");
    assert_eq!(
        status(&mut node, post_ack("c?device=a%20b", Some(&ann), ct, "x")).0,
        400
    );
    assert_eq!(
        status(&mut node, post_ack("bad%20name", Some(&ann), ct, "x")).0,
        400
    );
    let c = node.connect();
    node.input(c, &get("/ack/c", &[]));
    assert_eq!(node.response(c).status, 405);
    node.fail_store("disk on fire");
    let (s, why, retry) = status(&mut node, post_ack("c", Some(&ann), ct, &json_id(&id(1))));
    assert_eq!((s, retry.as_deref()), (503, Some("1")));
    assert!(
        why.contains("disk on fire") && why.contains("retry later"),
        "{why}"
    );
}

#[test]
fn polls_and_raw_websockets_resume_from_the_cursor_too() {
    let mut node = node();
    let ann = token(Some("ann"));
    let auth = format!("Bearer {ann}");
    // A durable short poll creates the cursor from now.
    let poll = |node: &mut Node, target: &str| {
        let c = node.connect();
        node.input(c, &get(target, &[("Authorization", &auth)]));
        node.response(c)
    };
    assert_eq!(poll(&mut node, "/poll/c?durable=1&timeout=0").status, 200);
    for i in 1..=3 {
        node.publish_text("c", &format!("c{i}"));
        node.publish_text("d", &format!("d{i}"));
    }
    let c = node.connect();
    // c's seqs are 1..=3 (d's interleave above them on this shard).
    node.input(c, &post_ack("c", Some(&ann), "text/plain", &id(1)));
    assert_eq!(node.response(c).json()["unread"], 2);
    let data = |v: Value| -> Vec<String> {
        (v["messages"].as_array().unwrap().iter())
            .map(|m| m["data"].as_str().unwrap().to_string())
            .collect()
    };
    let r = poll(&mut node, "/poll/c?durable=1&timeout=0");
    assert_eq!(data(r.json()), ["c2", "c3"]);
    // Without durable=1 it is a poll from now, as ever.
    let r = poll(&mut node, "/poll/c?timeout=0");
    assert!(data(r.json()).is_empty());
    // Several channels: each has its own cursor (d's starts from now).
    let r = poll(&mut node, "/poll?ch=c,d&durable=1&timeout=0");
    assert_eq!(data(r.json()), ["c2", "c3"]);
    // A raw WebSocket.
    let ws = node.connect();
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Authorization", auth.as_str()),
    ];
    node.input(ws, &get("/ws/c?durable=1&format=json", &upgrade));
    assert_eq!(node.response(ws).status, 101);
    let got: Vec<String> = (node.json(ws).into_iter())
        .filter(|v| v["type"] == "message")
        .map(|v| v["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["c2", "c3"]);
    // durable=1 without an identity: 401, naming why.
    let anon = format!("Bearer {}", token(None));
    let c = node.connect();
    node.input(c, &get("/sse/c?durable=1", &[("Authorization", &anon)]));
    let r = node.response(c);
    assert_eq!(
        (r.status, r.text()),
        (401, "ack needs a token that names a user (sub)\n")
    );
    let c = node.connect();
    node.input(c, &get("/sse/c?durable=maybe", &[("Authorization", &auth)]));
    assert_eq!(node.response(c).status, 400);
}

#[test]
fn unread_counts_come_from_every_cursor_of_the_identity() {
    let mut node = node();
    let c = session(&mut node, Some("ann"));
    for ch in ["b", "a"] {
        command(
            &mut node,
            c,
            json!({"type": "subscribe", "ch": ch, "durable": true}),
        );
    }
    command(&mut node, c, json!({"type": "subscribe", "ch": "plain"}));
    for ch in ["a", "a", "b", "plain"] {
        node.publish_text(ch, "x");
    }
    node.json(c);
    command(&mut node, c, json!({"type": "unread", "rid": 7}));
    assert_eq!(
        node.json(c),
        [json!({"type": "unread", "unread": {"a": 2, "b": 1}, "total": 3, "rid": 7})]
    );
    // Each channel numbers from 1 here: acking a's first leaves one.
    command(&mut node, c, json!({"type": "ack", "ch": "a", "id": id(1)}));
    node.json(c);
    let ann = format!("Bearer {}", token(Some("ann")));
    let h = node.connect();
    node.input(h, &get("/unread", &[("Authorization", &ann)]));
    let r = node.response(h);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"unread": {"a": 1, "b": 1}, "total": 2}));
    // Another device has none; no identity, no store: refused.
    node.input(h, &get("/unread?device=phone", &[("Authorization", &ann)]));
    assert_eq!(node.response(h).json(), json!({"unread": {}, "total": 0}));
    let anon = session(&mut node, None);
    command(&mut node, anon, json!({"type": "unread"}));
    assert_eq!(node.json(anon)[0]["code"], "no_identity");
    let h = node.connect();
    node.input(h, &get("/unread", &[]));
    assert_eq!(node.response(h).status, 401);
    let mut plain = Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
    });
    let p = session(&mut plain, Some("ann"));
    command(&mut plain, p, json!({"type": "unread"}));
    assert_eq!(plain.json(p)[0]["code"], "not_durable");
    let h = plain.connect();
    plain.input(h, &get("/unread", &[("Authorization", &ann)]));
    assert_eq!(plain.response(h).status, 409);
}

/// A node with an inbox namespace `user:` (`owner = "user:{sub}"`).
fn inbox_node() -> Node {
    Node::with(|s| {
        s.verifier = Some(Arc::new(
            Verifier::load(Some(SECRET), None, None).unwrap().unwrap(),
        ));
        s.store = Some(StoreSettings {
            dir: "/nonexistent".into(),
            fsync: Fsync::Never,
        });
        let mut inbox = s.default_policy();
        (inbox.owner, inbox.token, inbox.durable) = (true, true, true);
        inbox.history.inbox = Some(std::time::Duration::from_secs(3600));
        let spaces = vec![Namespace {
            prefix: "user:".into(),
            policy: inbox,
        }];
        s.namespaces = Arc::new(Namespaces::new(s.default_policy(), spaces).unwrap());
    })
}

#[test]
fn another_identitys_inbox_is_forbidden_on_every_transport() {
    let mut node = inbox_node();
    node.publish_text("user:bob", "for bob");
    let reason = "channel user:bob belongs to another identity";
    // Alice's claim lists every channel; the owner rule still decides.
    let alice = session(&mut node, Some("alice"));
    for cmd in [
        json!({"type": "subscribe", "ch": "user:bob"}),
        json!({"type": "ack", "ch": "user:bob", "id": id(1)}),
    ] {
        command(&mut node, alice, cmd.clone());
        let e = &node.json(alice)[0];
        assert_eq!(
            (&e["code"], &e["reason"]),
            (&json!("forbidden"), &json!(reason)),
            "{cmd}"
        );
    }
    let bearer = format!("Bearer {}", token(Some("alice")));
    for path in ["/sse/user:bob", "/poll/user:bob?timeout=0", "/ws/user:bob"] {
        let c = node.connect();
        node.input(c, &get(path, &[("Authorization", &bearer)]));
        let r = node.response(c);
        assert_eq!((r.status, r.text().trim_end()), (403, reason), "{path}");
    }
    let body = format!("{{\"id\":\"{}\"}}", id(1));
    let c = node.connect();
    let alice_token = token(Some("alice"));
    node.input(
        c,
        &post_ack("user:bob", Some(&alice_token), "application/json", &body),
    );
    let r = node.response(c);
    assert_eq!((r.status, r.text().trim_end()), (403, reason));
    // Bob reads his own: durable, with what waited for him.
    let bob = session(&mut node, Some("bob"));
    command(
        &mut node,
        bob,
        json!({"type": "subscribe", "ch": "user:bob"}),
    );
    let out = node.json(bob);
    assert_eq!(
        (&out[0]["type"], &out[0]["durable"], &out[0]["unread"]),
        (&json!("subscribed"), &json!(true), &json!(1)),
        "{out:?}"
    );
    assert_eq!(messages_of(&out), ["for bob"]);
    // A refreshed token whose claim does not list the inbox keeps it.
    let narrow = {
        use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
        let exp = jsonwebtoken::get_current_timestamp() + 3600;
        let claims = json!({"sub": "bob", "exp": exp, "channels": ["news"]});
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    command(&mut node, bob, json!({"type": "refresh", "token": narrow}));
    let out = node.json(bob);
    assert_eq!(out.len(), 1, "authed, and no unsubscribed: {out:?}");
    assert_eq!(out[0]["type"], "authed");
}

fn messages_of(out: &[Value]) -> Vec<String> {
    (out.iter())
        .filter(|v| v["type"] == "message")
        .map(|v| v["data"].as_str().unwrap().into())
        .collect()
}
