//! Server-Sent Events: resuming one channel from `Last-Event-ID` or
//! `?since=` (which wins), resuming several from the stream's composite
//! cursor, `event:reset` when history no longer has the position, and
//! heartbeat comments on the timer.

use std::time::Duration;

use serde_json::{json, Value};

use crate::hub::MsgId;
use crate::transport::testing::{get, ConnId, Node, SseEvent, SseItem, EPOCH};

/// Opens a stream and checks its head and its `retry:` hint; returns what
/// followed them.
fn open(node: &mut Node, target: &str, headers: &[(&str, &str)]) -> (ConnId, Vec<SseItem>) {
    let c = node.connect();
    node.input(c, &get(target, headers));
    let r = node.response(c);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    let mut items = node.sse(c);
    let retry = items.remove(0);
    assert_eq!(
        retry,
        SseItem::Event(SseEvent {
            retry: Some(3000),
            ..SseEvent::default()
        })
    );
    (c, items)
}

/// Plain message events, as (id, data).
fn plain(items: &[SseItem]) -> Vec<(Option<String>, String)> {
    items
        .iter()
        .map(|item| {
            let e = item.event().expect("an event, not a comment");
            assert_eq!(e.event, None, "a plain message event: {e:?}");
            (e.id.clone(), e.data.clone().unwrap_or_default())
        })
        .collect()
}

fn event(id: MsgId, data: &str) -> (Option<String>, String) {
    (Some(id.to_string()), data.to_string())
}

/// Publishes `m0`… on `channel`.
fn publish_n(node: &mut Node, channel: &str, n: usize) -> Vec<MsgId> {
    (0..n)
        .map(|i| node.publish_text(channel, &format!("m{i}")))
        .collect()
}

#[test]
fn one_channel_resumes_after_last_event_id() {
    let mut node = Node::new();
    let ids = publish_n(&mut node, "news", 5);
    let last = ids[1].to_string();
    let (c, replay) = open(&mut node, "/sse/news", &[("Last-Event-ID", &last)]);
    assert_eq!(
        plain(&replay),
        [
            event(ids[2], "m2"),
            event(ids[3], "m3"),
            event(ids[4], "m4")
        ]
    );
    let live = node.publish_text("news", "m5");
    assert_eq!(plain(&node.sse(c)), [event(live, "m5")]);
}

#[test]
fn one_channel_resumes_after_since_which_wins_over_last_event_id() {
    let mut node = Node::new();
    let ids = publish_n(&mut node, "news", 5);
    let (_, replay) = open(&mut node, &format!("/sse/news?since={}", ids[2]), &[]);
    assert_eq!(plain(&replay), [event(ids[3], "m3"), event(ids[4], "m4")]);
    let older = ids[0].to_string();
    let target = format!("/sse/news?since={}", ids[3]);
    let (_, replay) = open(&mut node, &target, &[("Last-Event-ID", &older)]);
    assert_eq!(plain(&replay), [event(ids[4], "m4")]);
}

#[test]
fn several_channels_resume_from_the_composite_cursor() {
    let mut node = Node::new();
    let a1 = node.publish_text("a", "a1");
    let b1 = node.publish_text("b", "b1");
    let a2 = node.publish_text("a", "a2");
    let b2 = node.publish_text("b", "b2");
    let cursor = |a: MsgId, b: MsgId| format!("{EPOCH:012x};a={},b={}", a.seq, b.seq);
    let multi = |items: &[SseItem]| -> Vec<(String, String, String)> {
        (items.iter())
            .map(|item| item.event().expect("an event").clone())
            // (Position-only events are the subject of their own test.)
            .filter(|e| e.data.is_some())
            .map(|e| (e.id.unwrap(), e.event.unwrap(), e.data.unwrap()))
            .collect()
    };

    let resume = cursor(a1, b1);
    let (c, replay) = open(&mut node, "/sse?ch=a,b", &[("Last-Event-ID", &resume)]);
    // Each event's id is the position in every channel after it.
    assert_eq!(
        multi(&replay),
        [
            (cursor(a2, b1), "a".into(), "a2".into()),
            (cursor(a2, b2), "b".into(), "b2".into()),
        ]
    );
    let a3 = node.publish_text("a", "a3");
    assert_eq!(
        multi(&node.sse(c)),
        [(cursor(a3, b2), "a".into(), "a3".into())]
    );
    node.hang_up(c);

    // Resuming from the last cursor replays nothing and misses nothing.
    let b3 = node.publish_text("b", "b3");
    let resume = cursor(a3, b2);
    let (_, replay) = open(&mut node, "/sse?ch=a,b", &[("Last-Event-ID", &resume)]);
    assert_eq!(multi(&replay), [(cursor(a3, b3), "b".into(), "b3".into())]);
}

/// The `event:reset` at the head of a stream: its id and its data.
fn reset(item: &SseItem) -> (Option<String>, Value) {
    let e = item.event().expect("an event");
    assert_eq!(e.event.as_deref(), Some("reset"));
    let data = serde_json::from_str(e.data.as_deref().unwrap()).unwrap();
    (e.id.clone(), data)
}

#[test]
fn a_position_history_lost_gets_a_reset_then_what_is_left() {
    let mut node = Node::with(|s| s.history_size = 2);
    let ids = publish_n(&mut node, "news", 5);
    let (_, items) = open(
        &mut node,
        "/sse/news",
        &[("Last-Event-ID", &ids[0].to_string())],
    );
    let (id, data) = reset(&items[0]);
    assert_eq!(id, None, "the history that follows sets the position");
    assert_eq!(
        data,
        json!({"type": "reset", "ch": "news", "reason": "evicted", "since": ids[0].to_string(),
               "missed": 2, "epoch": format!("{EPOCH:012x}")})
    );
    let rest: Vec<_> = items[1..]
        .iter()
        .map(|i| i.event().unwrap().clone())
        .collect();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].id, Some(ids[3].to_string()));
    assert_eq!(rest[1].id, Some(ids[4].to_string()));
}

#[test]
fn a_reset_with_no_history_left_carries_the_streams_position() {
    let mut node = Node::with(|s| s.history_size = 0);
    let ids = publish_n(&mut node, "news", 3);
    let (_, items) = open(
        &mut node,
        "/sse/news",
        &[("Last-Event-ID", &ids[0].to_string())],
    );
    assert_eq!(items.len(), 1, "{items:?}");
    let (id, data) = reset(&items[0]);
    assert_eq!(id, Some(ids[2].to_string()), "resume from here next time");
    assert_eq!(
        (data["reason"].as_str(), data["missed"].as_u64()),
        (Some("evicted"), Some(2))
    );

    // The same on a stream of several channels: the composite cursor (of
    // the channels whose position is known: `other`, answered first).
    let (_, items) = open(
        &mut node,
        "/sse?ch=other,news",
        &[(
            "Last-Event-ID",
            &format!("{EPOCH:012x};news={}", ids[0].seq),
        )],
    );
    assert_eq!(items.len(), 2, "{items:?}");
    // `other` had nothing to replay: its position alone, first.
    let position = items[0].event().unwrap();
    assert_eq!(
        (position.event.as_deref(), position.data.as_deref()),
        (None, None)
    );
    let (id, _) = reset(&items[1]);
    assert_eq!(
        id,
        Some(format!("{EPOCH:012x};other=3,news={}", ids[2].seq))
    );
}

#[test]
fn a_stream_from_now_states_its_position_before_any_message() {
    // Without it, a stream that reconnects before its first message would
    // resume from a later "now" and miss what was published in between.
    let mut node = Node::new();
    let ids = publish_n(&mut node, "news", 2);
    let (c, items) = open(&mut node, "/sse/news", &[]);
    let position = items.iter().find_map(SseItem::event).expect("an event");
    assert_eq!(position.id, Some(ids[1].to_string()));
    assert_eq!(
        (position.event.as_deref(), position.data.as_deref()),
        (None, None)
    );
    node.hang_up(c);

    let (_, items) = open(&mut node, "/sse?ch=news,quiet", &[]);
    let ids_seen: Vec<String> = (items.iter())
        .filter_map(SseItem::event)
        .map(|e| e.id.clone().unwrap())
        .collect();
    // One per channel as its replay arrives; the last holds both.
    assert_eq!(ids_seen.len(), 2, "{items:?}");
    let last = params_of(&ids_seen[1]);
    assert_eq!(last[0], ("news".to_string(), ids[1].seq));
    // A new channel starts above every seq its owner issued.
    assert_eq!(last[1].0, "quiet");
}

/// The channels and positions of a composite cursor.
fn params_of(cursor: &str) -> Vec<(String, u64)> {
    let (_, list) = cursor.split_once(';').unwrap();
    (list.split(','))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn heartbeat_comments_come_on_the_timer() {
    let mut node = Node::with(|s| s.sse_heartbeat = Duration::from_secs(1));
    let (c, _) = open(&mut node, "/sse/quiet", &[]);
    for round in 1..=3 {
        node.advance(9);
        assert_eq!(node.sse(c), [], "round {round}: early");
        node.advance(1);
        assert_eq!(
            node.sse(c),
            [SseItem::Comment(String::new())],
            "round {round}"
        );
    }
    assert_eq!(node.take_output(c), b"");
}

#[test]
fn a_shutdown_ends_a_stream_with_a_spread_retry_hint() {
    let mut node = Node::with(|s| s.sse_retry = Duration::from_secs(3));
    let (one, _) = open(&mut node, "/sse/news", &[]);
    let (two, _) = open(&mut node, "/sse?ch=a,b", &[]);
    node.shutdown();
    let mut hints = Vec::new();
    for c in [one, two] {
        let text = String::from_utf8(node.output(c).to_vec()).unwrap();
        let ms: u64 = (text
            .strip_prefix("retry:")
            .and_then(|t| t.strip_suffix("\n\n")))
        .unwrap_or_else(|| panic!("not a lone retry hint: {text:?}"))
        .parse()
        .unwrap();
        assert!((3000..=6000).contains(&ms), "{ms}");
        hints.push(ms);
        assert!(node.is_closed(c), "closed once the hint is flushed");
    }
    assert_ne!(hints[0], hints[1], "spread by connection");
}
