//! Publishing over HTTP: reading a publish request, its body, and the
//! messages in it. Pure functions and small types; the HTTP connection
//! state (`super::http`) drives them and answers.
//!
//! * `POST /pub/{channel}` publishes the body as one message: text when the
//!   `Content-Type` is `text/*` (the body must then be UTF-8), binary
//!   otherwise. Answer: `200 {"id":"<id>"}`.
//! * `POST /pub/{channel}` with `Content-Type: application/x-ndjson` and
//!   `POST /pub` publish a batch: one JSON value per line —
//!   `{"channel":"c","data":"text"}`, `{"channel":"c","data_base64":"…"}`
//!   (binary), `{"data":{…}}` (any JSON, published as its text), or a bare
//!   JSON string; `channel` defaults to the one in the path. Answer:
//!   `200 {"ids":["…", …]}` in line order.
//!
//! Bodies may use `Content-Length` or chunked encoding;
//! `Expect: 100-continue` is honoured.
//!
//! Errors: a body over `--max-message-size` (one message) or
//! `--max-batch-size` (a batch) → `413`; a bad channel name, non-UTF-8
//! text, or a malformed batch line → `400` naming the problem (and the
//! line).

use bytes::{Bytes, BytesMut};
use codec::http::{
    BodyFraming as HttpFraming, ChunkedDecoder, ChunkedEvent, Method, RequestHead, StatusCode,
};
use codec::ws::DataKind;

use crate::auth::{self, KeyCheck};
use crate::config::Settings;
use crate::hub::{AckError, ChannelName, Cursor, MsgId, PublishItem};
use crate::metrics::Refusal;

use super::framing;
use super::response::{Answer, Refused};

/// Most publishes one connection may have waiting for ids; beyond it the
/// connection stops reading until answers go out (TCP pushes back).
pub const MAX_PIPELINED_PUBLISHES: usize = 1024;

/// What a `POST` publishes once its body is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One message to this channel; ephemeral with `?ephemeral=1`.
    Single(ChannelName, DataKind, bool),
    /// Newline-delimited JSON, each line one message; lines name their
    /// channel unless a default is given.
    Batch(Option<ChannelName>),
    /// Not a publish: an ack (`POST /ack/{channel}`, see `super::ack`),
    /// whose small body is read the same way. `json`: its `Content-Type`
    /// says JSON.
    Ack {
        /// The channel.
        channel: ChannelName,
        /// Whose cursor.
        who: Cursor,
        /// The body is JSON by its `Content-Type`.
        json: bool,
    },
}

/// How a body is delimited.
#[derive(Debug)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
}

/// A publish request whose body is being read.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    data: BytesMut,
    target: Target,
    limit: usize,
}

/// A publish request read from its head: the body to read, and whether to
/// say `100 Continue` first.
#[derive(Debug)]
pub struct Plan {
    /// The body, empty so far.
    pub body: Body,
    /// The client sent `Expect: 100-continue` and a body follows.
    pub send_continue: bool,
}

/// Checks a publish request's credentials: a `--publish-key`, or — for
/// one message to one channel (`POST /pub/{channel}`, not a batch) — a
/// client token whose `publish` claim covers the channel, so a page not on
/// `/ws` may publish what it could publish there. `401` without
/// `Authorization: Bearer …` or with a token that is not valid, `403` with
/// anything else. Checked before anything else about the request, so that
/// callers without a key learn nothing of its limits.
pub fn authorize(head: &RequestHead<'_>, settings: &Settings) -> Result<(), Refused> {
    let check = settings.publish_keys.check(head.headers.authorization);
    if matches!(check, KeyCheck::Open | KeyCheck::Valid) {
        return Ok(());
    }
    let single = head.path.strip_prefix("/pub/").filter(|_| !is_ndjson(head));
    let token = auth::bearer_token(head.headers.authorization);
    if let (Some(verifier), Some(raw), Some(token)) = (settings.verifier.as_deref(), single, token)
    {
        // Something with two dots is meant as a token; anything else is a
        // (wrong) key.
        if token.bytes().filter(|&b| b == b'.').count() == 2 {
            let channel =
                ChannelName::from_path(raw).map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
            return match verifier.verify(token) {
                Ok(access) if access.may_publish(channel.as_str()) => Ok(()),
                Ok(_) => Err(Refused::new(
                    Refusal::Forbidden,
                    StatusCode::FORBIDDEN,
                    format!("the token does not allow publishing to {channel} (its publish claim)"),
                )),
                Err(e) => Err(Refused::new(
                    Refusal::Unauthorized,
                    StatusCode::UNAUTHORIZED,
                    e.reason(),
                )),
            };
        }
    }
    match check {
        KeyCheck::Open | KeyCheck::Valid => Ok(()),
        KeyCheck::Missing => Err(Refused::new(
            Refusal::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "publishing needs Authorization: Bearer <publish key>",
        )),
        KeyCheck::Wrong => Err(Refused::new(
            Refusal::Forbidden,
            StatusCode::FORBIDDEN,
            "publish key rejected: not one of this node's --publish-key",
        )),
    }
}

/// The body is newline-delimited JSON (a batch).
fn is_ndjson(head: &RequestHead<'_>) -> bool {
    head.headers.content_type.is_some_and(|ct| {
        let ct = ct.split(|&b| b == b';').next().unwrap_or_default();
        let ct = ct.trim_ascii();
        ct.eq_ignore_ascii_case(b"application/x-ndjson")
            || ct.eq_ignore_ascii_case(b"application/jsonl")
    })
}

/// Reads a publish request's head (`POST /pub/{channel}` or `POST /pub`).
pub fn plan(head: &RequestHead<'_>, settings: &Settings) -> Result<Plan, Refused> {
    if head.method != Method::Post {
        return Err(Refused::new(
            Refusal::BadRequest,
            StatusCode::METHOD_NOT_ALLOWED,
            "publish with POST",
        ));
    }
    let ndjson = is_ndjson(head);
    let target = match head.path.strip_prefix("/pub/") {
        None => Target::Batch(None),
        Some(raw) => {
            let channel =
                ChannelName::from_path(raw).map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
            if ndjson {
                Target::Batch(Some(channel))
            } else {
                let text = head
                    .headers
                    .content_type
                    .is_some_and(|ct| ct.len() >= 5 && ct[..5].eq_ignore_ascii_case(b"text/"));
                let kind = if text {
                    DataKind::Text
                } else {
                    DataKind::Binary
                };
                let ephemeral = match head.query_param("ephemeral") {
                    Ok(None) => false,
                    Ok(Some(v)) if v == "1" || v == "true" => true,
                    Ok(Some(v)) if v == "0" || v == "false" => false,
                    _ => {
                        return Err(Refused::bad(
                            Refusal::BadRequest,
                            "ephemeral must be 1, true, 0 or false",
                        ))
                    }
                };
                Target::Single(channel, kind, ephemeral)
            }
        }
    };
    let limit = match target {
        Target::Single(..) => settings.max_message_size,
        Target::Batch(_) | Target::Ack { .. } => settings.max_batch_size,
    };
    framed(head, target, limit)
}

/// Reads an ack request's head (`POST /ack/{channel}`, checked by the
/// caller): its body, at most [`ack::MAX_BODY`](super::ack::MAX_BODY)
/// bytes, names the id.
pub fn ack_plan(
    head: &RequestHead<'_>,
    channel: ChannelName,
    who: Cursor,
) -> Result<Plan, Refused> {
    let json = head.headers.content_type.is_some_and(|ct| {
        let ct = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        ct.eq_ignore_ascii_case(b"application/json")
    });
    framed(
        head,
        Target::Ack { channel, who, json },
        super::ack::MAX_BODY,
    )
}

/// The body of a request for `target`, at most `limit` bytes.
fn framed(head: &RequestHead<'_>, target: Target, limit: usize) -> Result<Plan, Refused> {
    let framing = match head.body() {
        HttpFraming::None => Framing::Length(0),
        HttpFraming::Length(n) if n > limit as u64 => {
            return Err(Refused::new(
                Refusal::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body of {n} bytes is over the limit of {limit} bytes"),
            ))
        }
        HttpFraming::Length(n) => Framing::Length(n),
        HttpFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
    };
    let expects_body = !matches!(framing, Framing::Length(0));
    let send_continue = match head.headers.expect {
        None => false,
        Some(e) if e.eq_ignore_ascii_case(b"100-continue") => expects_body,
        Some(_) => {
            return Err(Refused::new(
                Refusal::BadRequest,
                StatusCode::EXPECTATION_FAILED,
                "only Expect: 100-continue is supported",
            ))
        }
    };
    let capacity = match &framing {
        Framing::Length(n) => (*n as usize).min(64 * 1024),
        Framing::Chunked(_) => 4096,
    };
    Ok(Plan {
        body: Body {
            framing,
            data: BytesMut::with_capacity(capacity),
            target,
            limit,
        },
        send_continue,
    })
}

impl Body {
    /// Whether the whole body has been read.
    pub fn is_complete(&self) -> bool {
        match &self.framing {
            Framing::Length(n) => *n == 0,
            Framing::Chunked(dec) => dec.is_done(),
        }
    }

    /// Takes body bytes from `buf`; returns how many it used.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, Refused> {
        match &mut self.framing {
            Framing::Length(remaining) => {
                let n = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                self.data.extend_from_slice(&buf[..n]);
                *remaining -= n as u64;
                Ok(n)
            }
            Framing::Chunked(dec) => {
                let mut pos = 0;
                while pos < buf.len() && !dec.is_done() {
                    let (n, event) = dec
                        .decode(&buf[pos..])
                        .map_err(|e| Refused::bad(Refusal::BadRequest, e.reason()))?;
                    pos += n;
                    if let Some(ChunkedEvent::Data(d)) = event {
                        if self.data.len() + d.len() > self.limit {
                            return Err(Refused::new(
                                Refusal::TooLarge,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!("body is over the limit of {} bytes", self.limit),
                            ));
                        }
                        self.data.extend_from_slice(d);
                    }
                }
                Ok(pos)
            }
        }
    }

    /// A complete ack body: the channel, whose cursor, and the id it
    /// names (or `bad_id`). `Err(self)` when it is a publish.
    pub fn into_ack(self) -> Result<(ChannelName, Cursor, Result<MsgId, AckError>), Body> {
        match self.target {
            Target::Ack { channel, who, json } => {
                let ct = json.then_some(&b"application/json"[..]);
                let id = super::ack::body_id(ct, &self.data);
                Ok((channel, who, id))
            }
            _ => Err(self),
        }
    }

    /// The messages of a complete body, and whether they were a batch.
    pub fn into_items(self, max_message: usize) -> Result<(Vec<PublishItem>, bool), Refused> {
        let payload = self.data.freeze();
        match self.target {
            Target::Ack { .. } => Err(Refused::bad(
                Refusal::BadRequest,
                "an ack body publishes nothing",
            )),
            Target::Single(channel, kind, ephemeral) => {
                if kind == DataKind::Text && std::str::from_utf8(&payload).is_err() {
                    return Err(Refused::bad(
                        Refusal::BadRequest,
                        "text/* body is not valid UTF-8 (send another Content-Type to publish binary)",
                    ));
                }
                let item = PublishItem {
                    index: 0,
                    channel,
                    kind,
                    payload,
                    ephemeral,
                };
                Ok((vec![item], false))
            }
            Target::Batch(default) => match parse_batch(&payload, default.as_ref(), max_message) {
                Ok(items) => Ok((items, true)),
                Err(BatchError::TooLarge(reason)) => Err(Refused::new(
                    Refusal::TooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    reason,
                )),
                Err(BatchError::Bad(reason)) => Err(Refused::bad(Refusal::BadRequest, reason)),
            },
        }
    }
}

/// A publish waiting for ids from channel owners.
#[derive(Debug)]
pub struct Pending {
    /// Matches the owners' answers to this request.
    pub token: u32,
    /// Ids by position in the request.
    pub ids: Vec<Option<MsgId>>,
    /// Answer with `{"ids": [...]}` rather than `{"id": ...}`.
    pub batch: bool,
    /// How the request wants its answer.
    pub answer: Answer,
    /// Ephemeral messages: answered with a `null` id.
    pub ephemeral: bool,
    /// Refused, with this reason, because readers that are behind pin
    /// more than `--max-pinned` or the node holds `--max-channels`:
    /// answered `503` with `Retry-After`, in its turn.
    pub unavailable: Option<String>,
}

impl Pending {
    /// Whether every id has arrived.
    pub fn is_complete(&self) -> bool {
        self.unavailable.is_some() || self.ids.iter().all(Option::is_some)
    }

    /// Records the ids an owner assigned.
    pub fn fill(&mut self, ids: &[(u32, MsgId)]) {
        for &(i, id) in ids {
            if let Some(slot) = self.ids.get_mut(i as usize) {
                *slot = Some(id);
            }
        }
    }

    /// The answer's body.
    pub fn answer_body(&self) -> Bytes {
        let ids: Vec<String> = self
            .ids
            .iter()
            .map(|id| id.map(|id| id.to_string()).unwrap_or_default())
            .collect();
        let body = if self.ephemeral {
            serde_json::json!({ "id": null })
        } else if self.batch {
            serde_json::json!({ "ids": ids })
        } else {
            serde_json::json!({ "id": ids.first().cloned().unwrap_or_default() })
        };
        framing::json_body(&body)
    }
}

/// Why a batch was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchError {
    /// A line is malformed (`400`).
    Bad(String),
    /// A message is over the size limit (`413`).
    TooLarge(String),
}

/// Parses a newline-delimited JSON batch (see the module docs).
pub fn parse_batch(
    body: &Bytes,
    default: Option<&ChannelName>,
    max_message: usize,
) -> Result<Vec<PublishItem>, BatchError> {
    let mut items = Vec::new();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let lineno = n + 1;
        let bad = |why: &str| BatchError::Bad(format!("line {lineno}: {why}"));
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let (channel, kind, payload) = match value {
            serde_json::Value::String(s) => (None, DataKind::Text, Bytes::from(s.into_bytes())),
            serde_json::Value::Object(mut o) => {
                let channel = match o.remove("channel").or_else(|| o.remove("ch")) {
                    None => None,
                    Some(serde_json::Value::String(c)) => {
                        Some(ChannelName::new(&c).map_err(|e| bad(&e.to_string()))?)
                    }
                    Some(_) => return Err(bad("channel must be a string")),
                };
                let (kind, payload) = framing::payload_of(&mut o).map_err(|reason| bad(&reason))?;
                (channel, kind, payload)
            }
            _ => return Err(bad("expected an object or a string")),
        };
        let channel = channel
            .or_else(|| default.cloned())
            .ok_or_else(|| bad("missing channel"))?;
        if payload.len() > max_message {
            return Err(BatchError::TooLarge(format!(
                "line {lineno}: message of {} bytes is over the limit of {max_message} bytes",
                payload.len()
            )));
        }
        items.push(PublishItem {
            index: items.len() as u32,
            channel,
            kind,
            payload,
            ephemeral: false,
        });
    }
    if items.is_empty() {
        return Err(BatchError::Bad("empty batch: no messages".into()));
    }
    Ok(items)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        s: &str,
        default: Option<&str>,
    ) -> Result<Vec<(String, DataKind, Vec<u8>)>, BatchError> {
        let default = default.map(|d| ChannelName::new(d).unwrap());
        parse_batch(&Bytes::from(s.to_string()), default.as_ref(), 100).map(|items| {
            items
                .into_iter()
                .map(|i| (i.channel.to_string(), i.kind, i.payload.to_vec()))
                .collect()
        })
    }

    #[test]
    fn batch_lines() {
        let got = parse(
            "{\"channel\":\"a\",\"data\":\"hi\"}\n\n\"plain\"\r\n{\"data_base64\":\"AAE=\"}\n{\"data\":{\"x\":1}}\n",
            Some("d"),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("a".into(), DataKind::Text, b"hi".to_vec()),
                ("d".into(), DataKind::Text, b"plain".to_vec()),
                ("d".into(), DataKind::Binary, vec![0, 1]),
                ("d".into(), DataKind::Text, b"{\"x\":1}".to_vec()),
            ]
        );
    }

    #[test]
    fn batch_errors_name_the_line() {
        let err = |s: &str, d| match parse(s, d) {
            Err(BatchError::Bad(m)) | Err(BatchError::TooLarge(m)) => m,
            Ok(_) => panic!("accepted {s:?}"),
        };
        assert_eq!(err("{\"data\":\"x\"}", None), "line 1: missing channel");
        assert!(err("\"ok\"\n{nope", Some("a")).starts_with("line 2: not JSON"));
        assert_eq!(
            err("{\"channel\":\"a b\",\"data\":\"x\"}", None),
            "line 1: channel name may only contain A-Z a-z 0-9 _ - . : @"
        );
        assert_eq!(err("{\"channel\":\"a\"}", None), "line 1: missing data");
        assert_eq!(
            err("5", Some("a")),
            "line 1: expected an object or a string"
        );
        assert_eq!(err("\n\n", Some("a")), "empty batch: no messages");
        assert!(matches!(
            parse(&format!("\"{}\"", "x".repeat(101)), Some("a")),
            Err(BatchError::TooLarge(_))
        ));
    }
}
