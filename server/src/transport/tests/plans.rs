//! Reading requests, with no connection at all: what `sse::plan`,
//! `poll::plan`, `ws::subscribe_plan` and `publish::plan` make of a request
//! head, and what they refuse with which status.

use std::time::Duration;

use codec::http::{parse_request, Limits, RequestHead, StatusCode};
use codec::ws::DataKind;
use codec::Status;

use crate::config::Settings;
use crate::hub::{ChannelName, Epoch, MsgId};
use crate::metrics::Refusal;
use crate::transport::framing::Format;
use crate::transport::response::Refused;
use crate::transport::testing::{default_settings, EPOCH};
use crate::transport::{poll, publish, sse, ws};

/// The head of a request given as its lines, without the blank line.
fn head(lines: &str) -> RequestHead<'_> {
    match parse_request(lines.as_bytes(), &Limits::default()) {
        Ok(Status::Complete((head, _))) => head,
        other => panic!("not a whole request head: {other:?}"),
    }
}

fn req(line: &str, headers: &str) -> String {
    format!("{line}\r\nHost: t\r\n{headers}\r\n")
}

fn id(seq: u64) -> MsgId {
    MsgId {
        epoch: Epoch::from_bits(EPOCH),
        seq,
    }
}

fn name(n: &str) -> ChannelName {
    ChannelName::new(n).unwrap()
}

/// The status and counter of a refusal.
fn refusal<T: std::fmt::Debug>(r: Result<T, Refused>) -> (StatusCode, Refusal) {
    let refused = r.expect_err("a refusal");
    assert!(!refused.reason.is_empty());
    (refused.status, refused.why)
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

// ---- sse::plan ------------------------------------------------------------------

fn sse_plan(line: &str, headers: &str, max: usize) -> Result<sse::Plan, Refused> {
    let r = req(line, headers);
    let h = head(&r);
    let raw = h.path.strip_prefix("/sse/");
    let raw = raw.map(str::to_owned);
    sse::plan(&h, raw.as_deref(), max)
}

#[test]
fn sse_resumes_from_since_else_last_event_id() {
    let lei = format!("Last-Event-ID: {}\r\n", id(2));
    let plan = sse_plan("GET /sse/news HTTP/1.1", &lei, 4).unwrap();
    assert_eq!(plan.channels, [name("news")]);
    assert_eq!(plan.positions, [Some(id(2))]);
    assert!(!plan.head_only);
    // `since` wins when both are given.
    let line = format!("GET /sse/news?since={} HTTP/1.1", id(5));
    let plan = sse_plan(&line, &lei, 4).unwrap();
    assert_eq!(plan.positions, [Some(id(5))]);
    // Neither, or an empty Last-Event-ID: from now on.
    let plan = sse_plan("GET /sse/news HTTP/1.1", "Last-Event-ID: \r\n", 4).unwrap();
    assert_eq!(plan.positions, [None]);
    // HEAD asks for the head only.
    assert!(
        sse_plan("HEAD /sse/news HTTP/1.1", "", 4)
            .unwrap()
            .head_only
    );
}

#[test]
fn sse_reads_a_composite_cursor_per_channel() {
    let cursor = format!("Last-Event-ID: {EPOCH:012x};a=1,c=3\r\n");
    let plan = sse_plan("GET /sse?ch=a,b,c HTTP/1.1", &cursor, 4).unwrap();
    assert_eq!(plan.channels, [name("a"), name("b"), name("c")]);
    assert_eq!(plan.positions, [Some(id(1)), None, Some(id(3))]);
    // A channel named twice counts once.
    let plan = sse_plan("GET /sse?ch=a,b,a HTTP/1.1", "", 2).unwrap();
    assert_eq!(plan.channels, [name("a"), name("b")]);
}

#[test]
fn sse_refuses_bad_cursors_and_too_many_channels() {
    let bad_since = (BAD, Refusal::BadSince);
    for (line, headers) in [
        ("GET /sse/news HTTP/1.1", "Last-Event-ID: nope\r\n"),
        ("GET /sse/news?since=12 HTTP/1.1", ""),
        // Several channels resume from a cursor, not from one id.
        (
            "GET /sse?ch=a,b HTTP/1.1",
            "Last-Event-ID: 000000000abc-2\r\n",
        ),
        (
            "GET /sse?ch=a,b HTTP/1.1",
            "Last-Event-ID: 000000000abc;a\r\n",
        ),
        ("GET /sse?ch=a,b&since=000000000abc;a=x HTTP/1.1", ""),
    ] {
        assert_eq!(
            refusal(sse_plan(line, headers, 4)),
            bad_since,
            "{line} {headers}"
        );
    }
    let bad_channel = (BAD, Refusal::BadChannel);
    assert_eq!(
        refusal(sse_plan("GET /sse?ch=a,b,c HTTP/1.1", "", 2)),
        bad_channel
    );
    assert_eq!(refusal(sse_plan("GET /sse HTTP/1.1", "", 2)), bad_channel);
    assert_eq!(
        refusal(sse_plan("GET /sse/a%20b HTTP/1.1", "", 2)),
        bad_channel
    );
    assert_eq!(
        refusal(sse_plan("POST /sse/news HTTP/1.1", "", 2)),
        (StatusCode::METHOD_NOT_ALLOWED, Refusal::BadRequest)
    );
    // In a shared stream a channel named `reset` would read as resets; on
    // its own stream it is an ordinary channel.
    assert_eq!(
        refusal(sse_plan("GET /sse?ch=a,reset HTTP/1.1", "", 4)),
        bad_channel
    );
    assert_eq!(
        refusal(sse_plan("GET /sse?ch=error,a HTTP/1.1", "", 4)),
        bad_channel
    );
    assert!(sse_plan("GET /sse/reset HTTP/1.1", "", 4).is_ok());
    assert!(sse_plan("GET /sse?ch=reset HTTP/1.1", "", 4).is_ok());
}

// ---- poll::plan -----------------------------------------------------------------

fn poll_plan(line: &str, headers: &str, settings: &Settings) -> Result<poll::Plan, Refused> {
    let r = req(line, headers);
    let h = head(&r);
    let raw = h
        .path
        .strip_prefix("/poll/")
        .expect("a poll path")
        .to_owned();
    poll::plan(&h, &raw, settings)
}

#[test]
fn poll_timeouts_default_parse_and_are_capped() {
    let mut s = default_settings();
    s.poll_timeout = Duration::from_secs(7);
    s.poll_max_timeout = Duration::from_secs(20);
    let timeout = |q: &str| poll_plan(&format!("GET /poll/c{q} HTTP/1.1"), "", &s);
    assert_eq!(timeout("").unwrap().timeout, Duration::from_secs(7));
    assert_eq!(
        timeout("?timeout=5").unwrap().timeout,
        Duration::from_secs(5)
    );
    assert_eq!(timeout("?timeout=0").unwrap().timeout, Duration::ZERO);
    assert_eq!(
        timeout("?timeout=600").unwrap().timeout,
        Duration::from_secs(20)
    );
    for bad in [
        "?timeout=soon",
        "?timeout=-1",
        "?timeout=1.5",
        "?timeout=%zz",
    ] {
        assert_eq!(refusal(timeout(bad)), (BAD, Refusal::BadRequest), "{bad}");
    }
}

#[test]
fn poll_takes_its_cursor_from_since_else_if_none_match() {
    let s = default_settings();
    let plan = poll_plan("GET /poll/c HTTP/1.1", "", &s).unwrap();
    assert_eq!(
        (plan.channel, plan.since, plan.if_none_match),
        (name("c"), None, false)
    );
    for inm in [format!("\"{}\"", id(4)), format!("W/\"{}\"", id(4))] {
        let h = format!("If-None-Match: {inm}\r\n");
        let plan = poll_plan("GET /poll/c HTTP/1.1", &h, &s).unwrap();
        assert_eq!(
            (plan.since, plan.if_none_match),
            (Some(id(4)), true),
            "{inm}"
        );
    }
    // `since` wins; the answer is then never a 304.
    let h = format!("If-None-Match: \"{}\"\r\n", id(4));
    let line = format!("GET /poll/c?since={} HTTP/1.1", id(2));
    let plan = poll_plan(&line, &h, &s).unwrap();
    assert_eq!((plan.since, plan.if_none_match), (Some(id(2)), false));
    // A tag that is not a cursor is no cursor.
    let plan = poll_plan("GET /poll/c HTTP/1.1", "If-None-Match: \"v1\"\r\n", &s).unwrap();
    assert_eq!((plan.since, plan.if_none_match), (None, false));
    assert_eq!(
        refusal(poll_plan("GET /poll/c?since=x HTTP/1.1", "", &s)),
        (BAD, Refusal::BadSince)
    );
    assert_eq!(
        refusal(poll_plan("POST /poll/c HTTP/1.1", "", &s)),
        (StatusCode::METHOD_NOT_ALLOWED, Refusal::BadRequest)
    );
}

// ---- ws::subscribe_plan -----------------------------------------------------------

fn ws_plan(target: &str) -> Result<ws::SubscribePlan, Refused> {
    let r = req(&format!("GET {target} HTTP/1.1"), "");
    let h = head(&r);
    let raw = h.path.strip_prefix("/ws/").expect("a /ws/ path").to_owned();
    ws::subscribe_plan(&h, &raw)
}

#[test]
fn ws_subscriptions_read_format_and_since() {
    let plan = ws_plan("/ws/news").unwrap();
    assert_eq!(
        (plan.channel, plan.format, plan.since),
        (name("news"), Format::WsRaw, None)
    );
    assert_eq!(
        ws_plan("/ws/news?format=raw").unwrap().format,
        Format::WsRaw
    );
    assert_eq!(
        ws_plan("/ws/news?format=json").unwrap().format,
        Format::WsJson
    );
    let plan = ws_plan(&format!("/ws/a%3Ab?since={}", id(9))).unwrap();
    assert_eq!((plan.channel, plan.since), (name("a:b"), Some(id(9))));
    assert_eq!(
        refusal(ws_plan("/ws/news?format=xml")),
        (BAD, Refusal::BadRequest)
    );
    assert_eq!(
        refusal(ws_plan("/ws/news?since=9")),
        (BAD, Refusal::BadSince)
    );
    assert_eq!(refusal(ws_plan("/ws/a%20b")), (BAD, Refusal::BadChannel));
}

// ---- publish::plan ------------------------------------------------------------------

/// Published messages as channel, kind and payload.
type Items = Vec<(String, DataKind, Vec<u8>)>;

/// Plans a publish and reads `body` into it: its messages, and whether it
/// was a batch.
fn publish(line: &str, headers: &str, body: &[u8], s: &Settings) -> Result<(Items, bool), Refused> {
    let headers = format!("{headers}Content-Length: {}\r\n", body.len());
    let r = req(line, &headers);
    let mut plan = publish::plan(&head(&r), s)?;
    assert_eq!(plan.body.feed(body)?, body.len());
    assert!(plan.body.is_complete());
    let (items, batch) = plan.body.into_items(s.max_message_size)?;
    let items = (items.into_iter())
        .map(|i| (i.channel.to_string(), i.kind, i.payload.to_vec()))
        .collect();
    Ok((items, batch))
}

#[test]
fn publishes_are_single_or_ndjson_batches() {
    let s = default_settings();
    let text = "Content-Type: text/plain; charset=utf-8\r\n";
    assert_eq!(
        publish("POST /pub/a HTTP/1.1", text, b"hi", &s).unwrap(),
        (vec![("a".into(), DataKind::Text, b"hi".to_vec())], false)
    );
    assert_eq!(
        publish("POST /pub/a HTTP/1.1", "", &[0xff], &s).unwrap(),
        (vec![("a".into(), DataKind::Binary, vec![0xff])], false)
    );
    let ndjson = "Content-Type: application/x-ndjson\r\n";
    let body = b"\"x\"\n{\"channel\":\"b\",\"data\":\"y\"}\n";
    assert_eq!(
        publish("POST /pub/a HTTP/1.1", ndjson, body, &s).unwrap(),
        (
            vec![
                ("a".into(), DataKind::Text, b"x".to_vec()),
                ("b".into(), DataKind::Text, b"y".to_vec()),
            ],
            true
        )
    );
    // `POST /pub` is always a batch, whatever its type.
    let (_, batch) = publish("POST /pub HTTP/1.1", "", b"{\"ch\":\"c\",\"data\":1}", &s).unwrap();
    assert!(batch);
    assert_eq!(
        refusal(publish("POST /pub/a HTTP/1.1", text, &[0xff], &s)),
        (BAD, Refusal::BadRequest),
        "text must be UTF-8"
    );
}

#[test]
fn publish_limits_and_expectations() {
    let mut s = default_settings();
    s.max_message_size = 10;
    s.max_batch_size = 40;
    let plan = |line: &str, headers: &str| {
        let r = req(line, headers);
        publish::plan(&head(&r), &s).map(|p| (p.body.is_complete(), p.send_continue))
    };
    let too_large = (StatusCode::PAYLOAD_TOO_LARGE, Refusal::TooLarge);
    assert!(plan("POST /pub/a HTTP/1.1", "Content-Length: 10\r\n").is_ok());
    assert_eq!(
        refusal(plan("POST /pub/a HTTP/1.1", "Content-Length: 11\r\n")),
        too_large
    );
    // A batch may be as large as --max-batch-size.
    let ndjson = "Content-Type: application/x-ndjson\r\n";
    assert!(plan(
        "POST /pub/a HTTP/1.1",
        &format!("{ndjson}Content-Length: 40\r\n")
    )
    .is_ok());
    assert_eq!(
        refusal(plan(
            "POST /pub/a HTTP/1.1",
            &format!("{ndjson}Content-Length: 41\r\n")
        )),
        too_large
    );
    // 100-continue only when a body is to follow.
    let expect = "Expect: 100-continue\r\n";
    assert_eq!(
        plan(
            "POST /pub/a HTTP/1.1",
            &format!("{expect}Content-Length: 3\r\n")
        )
        .unwrap(),
        (false, true)
    );
    assert_eq!(plan("POST /pub/a HTTP/1.1", expect).unwrap(), (true, false));
    assert_eq!(
        refusal(plan(
            "POST /pub/a HTTP/1.1",
            "Expect: coffee\r\nContent-Length: 3\r\n"
        )),
        (StatusCode::EXPECTATION_FAILED, Refusal::BadRequest)
    );
    assert_eq!(
        refusal(plan("GET /pub/a HTTP/1.1", "")),
        (StatusCode::METHOD_NOT_ALLOWED, Refusal::BadRequest)
    );
    assert_eq!(
        refusal(plan("POST /pub/a%20b HTTP/1.1", "")),
        (BAD, Refusal::BadChannel)
    );
}
