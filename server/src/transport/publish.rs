//! Publishing over HTTP.
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
//! The answer goes out as soon as every message has its id — assigned by
//! the channels' owner shards, usually in microseconds — never after the
//! fan-out. The connection stays open for the next request. Pipelined
//! publishes overlap: each is forwarded to its owner as soon as its body is
//! read, and the answers go out in request order as the ids arrive (up to
//! [`MAX_PIPELINED_PUBLISHES`] outstanding per connection). Any other
//! request waits until the publishes before it are answered. Bodies may use `Content-Length` or chunked encoding;
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

use crate::hub::mail::{Mail, PublishItem, ReplyTo};
use crate::hub::ChannelName;
use crate::metrics::Refusal;
use crate::shard::conn::{flags, Body, BodyFraming, ConnKey, PendingPublish, Phase, PublishTarget};
use crate::shard::{Shard, Shared, Step};

impl Shard {
    /// `POST /pub/{channel}` or `POST /pub`: checks the head and starts
    /// reading the body.
    pub(crate) fn start_publish(&mut self, key: ConnKey, head: &RequestHead<'_>) {
        if head.method != Method::Post {
            self.metrics().refuse(Refusal::BadRequest);
            let allow = [("Allow", "POST, OPTIONS")];
            return self.respond_error(
                key,
                StatusCode::METHOD_NOT_ALLOWED,
                "publish with POST",
                &allow,
                true,
            );
        }
        let ndjson = head.headers.content_type.is_some_and(|ct| {
            let ct = ct.split(|&b| b == b';').next().unwrap_or_default();
            let ct = ct.trim_ascii();
            ct.eq_ignore_ascii_case(b"application/x-ndjson")
                || ct.eq_ignore_ascii_case(b"application/jsonl")
        });
        let target = match head.path.strip_prefix("/pub/") {
            None => PublishTarget::Batch(None),
            Some(raw) => {
                let channel = match ChannelName::from_path(raw) {
                    Ok(c) => c,
                    Err(reason) => {
                        return self.refuse(
                            key,
                            Refusal::BadChannel,
                            StatusCode::BAD_REQUEST,
                            &reason,
                        )
                    }
                };
                if ndjson {
                    PublishTarget::Batch(Some(channel))
                } else {
                    let text = head
                        .headers
                        .content_type
                        .is_some_and(|ct| ct.len() >= 5 && ct[..5].eq_ignore_ascii_case(b"text/"));
                    PublishTarget::Single(
                        channel,
                        if text {
                            DataKind::Text
                        } else {
                            DataKind::Binary
                        },
                    )
                }
            }
        };
        let limit = self.body_limit(&target);
        let framing = match head.body() {
            HttpFraming::None => BodyFraming::Length(0),
            HttpFraming::Length(n) if n > limit as u64 => {
                let reason = format!("body of {n} bytes is over the limit of {limit} bytes");
                return self.refuse(
                    key,
                    Refusal::TooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &reason,
                );
            }
            HttpFraming::Length(n) => BodyFraming::Length(n),
            HttpFraming::Chunked => BodyFraming::Chunked(ChunkedDecoder::new()),
        };
        let expects_body = !matches!(framing, BodyFraming::Length(0));
        match head.headers.expect {
            None => {}
            Some(e) if e.eq_ignore_ascii_case(b"100-continue") && expects_body => {
                self.send_raw(key, b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            Some(e) if e.eq_ignore_ascii_case(b"100-continue") => {}
            Some(_) => {
                return self.refuse(
                    key,
                    Refusal::BadRequest,
                    StatusCode::EXPECTATION_FAILED,
                    "only Expect: 100-continue is supported",
                )
            }
        }
        let capacity = match &framing {
            BodyFraming::Length(n) => (*n as usize).min(64 * 1024),
            BodyFraming::Chunked(_) => 4096,
        };
        self.set_phase(key, Phase::Body);
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        conn.ext().body = Some(Body {
            framing,
            data: BytesMut::with_capacity(capacity),
            target,
        });
        if expects_body {
            let deadline = self.tick + Shared::ticks(self.settings().handshake_timeout);
            self.set_deadline(key, deadline);
        } else {
            self.finish_body(key);
        }
    }

    fn body_limit(&self, target: &PublishTarget) -> usize {
        match target {
            PublishTarget::Single(..) => self.settings().max_message_size,
            PublishTarget::Batch(_) => self.settings().max_batch_size,
        }
    }

    /// Bytes of a body.
    pub(crate) fn on_body_input(&mut self, key: ConnKey, buf: &mut [u8]) -> Step {
        let Some(mut body) = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .and_then(|e| e.body.take())
        else {
            return Step::Discard;
        };
        let limit = self.body_limit(&body.target);
        let (used, done) = match &mut body.framing {
            BodyFraming::Length(remaining) => {
                let n = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                body.data.extend_from_slice(&buf[..n]);
                *remaining -= n as u64;
                (n, *remaining == 0)
            }
            BodyFraming::Chunked(dec) => {
                let mut pos = 0;
                let mut done = false;
                while pos < buf.len() && !done {
                    match dec.decode(&buf[pos..]) {
                        Ok((n, event)) => {
                            pos += n;
                            match event {
                                Some(ChunkedEvent::Data(d)) => {
                                    if body.data.len() + d.len() > limit {
                                        let reason =
                                            format!("body is over the limit of {limit} bytes");
                                        self.refuse(
                                            key,
                                            Refusal::TooLarge,
                                            StatusCode::PAYLOAD_TOO_LARGE,
                                            &reason,
                                        );
                                        return Step::Discard;
                                    }
                                    body.data.extend_from_slice(d);
                                }
                                Some(ChunkedEvent::End) => done = true,
                                None => {}
                            }
                        }
                        Err(e) => {
                            self.refuse(
                                key,
                                Refusal::BadRequest,
                                StatusCode::BAD_REQUEST,
                                e.reason(),
                            );
                            return Step::Discard;
                        }
                    }
                }
                (pos, done)
            }
        };
        let Some(conn) = self.io.conn_mut(key) else {
            return Step::Discard;
        };
        conn.ext().body = Some(body);
        if done {
            self.finish_body(key);
            Step::Continue(used)
        } else {
            // Progress pushes the body deadline back.
            let deadline = self.tick + Shared::ticks(self.settings().handshake_timeout);
            self.set_deadline(key, deadline);
            Step::Wait(used)
        }
    }

    /// The body is complete: publish it.
    fn finish_body(&mut self, key: ConnKey) {
        let Some(body) = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .and_then(|e| e.body.take())
        else {
            return;
        };
        let payload = body.data.freeze();
        let (items, batch) = match body.target {
            PublishTarget::Single(channel, kind) => {
                if kind == DataKind::Text && std::str::from_utf8(&payload).is_err() {
                    return self.refuse(
                        key,
                        Refusal::BadRequest,
                        StatusCode::BAD_REQUEST,
                        "text/* body is not valid UTF-8 (send another Content-Type to publish binary)",
                    );
                }
                let item = PublishItem {
                    index: 0,
                    channel,
                    kind,
                    payload,
                    ephemeral: false,
                };
                (vec![item], false)
            }
            PublishTarget::Batch(default) => {
                match parse_batch(&payload, default.as_ref(), self.settings().max_message_size) {
                    Ok(items) => (items, true),
                    Err(BatchError::TooLarge(reason)) => {
                        return self.refuse(
                            key,
                            Refusal::TooLarge,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &reason,
                        )
                    }
                    Err(BatchError::Bad(reason)) => {
                        return self.refuse(
                            key,
                            Refusal::BadRequest,
                            StatusCode::BAD_REQUEST,
                            &reason,
                        )
                    }
                }
            }
        };
        self.publish(key, items, batch);
    }

    /// Sends each item to its owner shard (publishing locally owned ones at
    /// once) and answers when every id is known.
    fn publish(&mut self, key: ConnKey, items: Vec<PublishItem>, batch: bool) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let mut ids = vec![None; items.len()];
        let mut remote: Vec<Vec<PublishItem>> = vec![Vec::new(); self.shared.mail.shards()];
        for item in items {
            let owner = self.hub.owner(&item.channel);
            if owner == self.id {
                ids[item.index as usize] =
                    Some(self.publish_owned(&item.channel, item.kind, item.payload));
            } else {
                remote[owner].push(item);
            }
        }
        let mut outstanding = 0;
        for (owner, items) in remote.into_iter().enumerate() {
            if !items.is_empty() {
                outstanding += 1;
                let reply = ReplyTo {
                    shard: self.id,
                    conn: key,
                    token,
                };
                self.mail_to(owner, Mail::Publish { reply, items });
            }
        }
        // The connection goes on reading: a pipelined publish behind this
        // one is forwarded at once, and answers go out in request order.
        self.set_phase(key, Phase::Http);
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        let keep_alive = conn.has(flags::KEEP_ALIVE);
        conn.deadline = 0;
        conn.ext().publishes.push_back(PendingPublish {
            token,
            ids,
            outstanding,
            batch,
            keep_alive,
        });
        self.answer_publishes(key);
    }

    /// Answers the publishes at the head of the connection's queue whose
    /// ids are all known, in request order; once none is left, continues
    /// with requests that waited behind them.
    pub(crate) fn answer_publishes(&mut self, key: ConnKey) {
        while let Some(pending) = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .and_then(|e| {
                let ready = e.publishes.front().is_some_and(|p| p.outstanding == 0);
                ready.then(|| e.publishes.pop_front()).flatten()
            })
        {
            let ids: Vec<String> = pending
                .ids
                .iter()
                .map(|id| id.map(|id| id.to_string()).unwrap_or_default())
                .collect();
            let body = if pending.batch {
                serde_json::json!({ "ids": ids })
            } else {
                serde_json::json!({ "id": ids.first().cloned().unwrap_or_default() })
            };
            let mut text = serde_json::to_vec(&body).expect("JSON values serialize");
            text.push(b'\n');
            self.respond_as(
                key,
                StatusCode::OK,
                "application/json",
                &text,
                &[],
                true,
                pending.keep_alive,
            );
            if !pending.keep_alive {
                return;
            }
        }
        let idle = self
            .io
            .conn(key)
            .is_some_and(|c| c.ext.as_ref().is_none_or(|e| e.publishes.is_empty()));
        if idle {
            self.resume_input(key);
        }
    }
}

/// Most publishes one connection may have waiting for ids; beyond it the
/// connection stops reading until answers go out (TCP pushes back).
pub const MAX_PIPELINED_PUBLISHES: usize = 1024;

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
                let (kind, payload) = super::payload_of(&mut o).map_err(|reason| bad(&reason))?;
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
