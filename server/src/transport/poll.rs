//! HTTP polling: `GET /poll/{channel}?since=ID&timeout=S`.
//!
//! * **Long poll** (`timeout` > 0; default `--poll-timeout`, capped at
//!   `--poll-max-timeout`): if messages after the cursor exist, the answer
//!   comes at once; otherwise the request is held — as a hub subscription
//!   with a deadline, no receive buffer, no polling — until a message
//!   arrives (answered within the turn of its delivery) or the timeout
//!   passes (`204 No Content`).
//! * **Short poll** (`timeout=0`): always answers at once; when nothing is
//!   new and the request's `If-None-Match` names the current cursor, the
//!   answer is `304 Not Modified` with no body.
//!
//! The cursor is a message id: `since=`, or else the request's
//! `If-None-Match`. Without one the poll starts "now". Every answer carries
//! the cursor to send next as `ETag: "<id>"` (on `200`, `204` and `304`) and
//! as `next` in the `200` body:
//!
//! ```json
//! {"messages":[{"id":"…","ch":"…","data":"…"}],"next":"…"}
//! ```
//!
//! (binary payloads base64 with `"encoding":"base64"`; a lost position adds
//! `"reset":{"reason":…,"since":…,"missed":…}`). At most `--poll-batch`
//! messages per answer; a client that gets a full batch polls again at once.
//! Ephemeral messages are not delivered to polls (they have no cursor).
//! A message published between two polls is never lost: the next poll
//! starts from the cursor.

use bytes::Bytes;
use codec::http::{Method, RequestHead, StatusCode};
use serde_json::{json, Value};

use crate::hub::{ChannelName, Format, Message, MsgId, Replay};
use crate::metrics::Refusal;
use crate::shard::conn::{flags, ConnKey, Phase};
use crate::shard::{Shard, Shared};

fn message_json(m: &Message) -> Value {
    let mut v = json!({"id": m.id.to_string(), "ch": m.channel.as_str()});
    super::set_payload(&mut v, m);
    v
}

/// The `200` body answering held polls with one message: the same for every
/// poll of the channel, so a shard serializes it once per message.
pub fn single_message_body(msg: &Message) -> Bytes {
    body_bytes(&json!({"messages": [message_json(msg)], "next": msg.id.to_string()}))
}

fn body_bytes(v: &Value) -> Bytes {
    let mut text = serde_json::to_vec(v).expect("JSON values serialize");
    text.push(b'\n');
    Bytes::from(text)
}

/// The cursor in an `If-None-Match` header: the first entity tag, quotes
/// and weakness marker removed.
fn if_none_match(head: &RequestHead<'_>) -> Option<MsgId> {
    let tag = head.headers.if_none_match.items().next()?;
    let tag = std::str::from_utf8(tag).ok()?;
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').parse().ok()
}

impl Shard {
    /// `GET /poll/{channel}`.
    pub(crate) fn start_poll(&mut self, key: ConnKey, head: &RequestHead<'_>, raw_channel: &str) {
        if !matches!(head.method, Method::Get | Method::Head) {
            return self.refuse(
                key,
                Refusal::BadRequest,
                StatusCode::METHOD_NOT_ALLOWED,
                "poll with GET",
            );
        }
        let channel = match ChannelName::from_path(raw_channel) {
            Ok(c) => c,
            Err(reason) => {
                return self.refuse(key, Refusal::BadChannel, StatusCode::BAD_REQUEST, &reason)
            }
        };
        let max = self.settings().poll_max_timeout;
        let timeout = match head.query_param("timeout") {
            Ok(None) => self.settings().poll_timeout,
            Ok(Some(t)) => match t.parse::<u64>() {
                Ok(secs) => std::time::Duration::from_secs(secs).min(max),
                Err(_) => {
                    return self.refuse(
                        key,
                        Refusal::BadRequest,
                        StatusCode::BAD_REQUEST,
                        "timeout must be a whole number of seconds",
                    )
                }
            },
            Err(e) => {
                return self.refuse(
                    key,
                    Refusal::BadRequest,
                    StatusCode::BAD_REQUEST,
                    &format!("invalid timeout: {e}"),
                )
            }
        };
        let inm = if_none_match(head);
        let since = match super::since_param(head) {
            Ok(since) => since.or(inm),
            Err(reason) => {
                return self.refuse(key, Refusal::BadSince, StatusCode::BAD_REQUEST, &reason)
            }
        };
        let short = timeout.is_zero();
        let Some(conn) = self.io.conn_mut(key) else {
            return;
        };
        conn.flags &= !(flags::SHORT_POLL | flags::IF_NONE_MATCH);
        if short {
            conn.flags |= flags::SHORT_POLL;
        }
        if inm.is_some() && inm == since {
            conn.flags |= flags::IF_NONE_MATCH;
        }
        self.set_phase(key, Phase::Poll);
        if !short {
            let deadline = self.tick + Shared::ticks(timeout);
            self.set_deadline(key, deadline);
        } else if let Some(conn) = self.io.conn_mut(key) {
            conn.deadline = 0;
        }
        let (chan, sub) = self.hub.add_sub(&channel, key, Format::Poll);
        if let Some(conn) = self.io.conn_mut(key) {
            conn.chan = chan;
            conn.sub = sub;
        }
        self.request_replay(key, channel, chan, sub, since, None);
    }

    /// The owner's answer: respond with what it found, or hold.
    pub(crate) fn poll_replayed(&mut self, key: ConnKey, chan: u32, sub: u32, replay: Replay) {
        let Some(conn) = self.io.conn(key) else {
            return;
        };
        let (short, inm) = (conn.has(flags::SHORT_POLL), conn.has(flags::IF_NONE_MATCH));
        let epoch = self.hub.epoch();
        if replay.messages.is_empty() && replay.reset.is_none() {
            let cursor = MsgId {
                epoch,
                seq: replay.last_seq,
            };
            if short {
                if inm {
                    self.poll_answer(key, StatusCode::NOT_MODIFIED, cursor, None);
                } else {
                    let body = body_bytes(&json!({"messages": [], "next": cursor.to_string()}));
                    self.poll_answer(key, StatusCode::OK, cursor, Some(&body));
                }
            } else {
                // Hold: the next delivery answers it.
                self.hub.set_live(chan, sub, key, replay.last_seq);
            }
            return;
        }
        let batch = self.settings().poll_batch;
        let shown = &replay.messages[..batch.min(replay.messages.len())];
        let messages: Vec<Value> = shown.iter().map(|m| message_json(m)).collect();
        let next = shown.last().map_or(
            MsgId {
                epoch,
                seq: replay.last_seq,
            },
            |m| m.id,
        );
        let mut body = json!({"messages": messages, "next": next.to_string()});
        if let Some(reset) = replay.reset {
            body["reset"] = json!({
                "reason": reset.reason.as_str(),
                "since": reset.since.to_string(),
                "missed": reset.missed,
            });
        }
        self.poll_answer(key, StatusCode::OK, next, Some(&body_bytes(&body)));
    }

    /// A message for a held poll; `body` is [`single_message_body`] of it.
    pub(crate) fn poll_deliver(&mut self, key: ConnKey, msg: &Message, body: &[u8]) {
        if !msg.is_stored() || self.io.conn(key).is_none_or(|c| c.phase != Phase::Poll) {
            return;
        }
        crate::metrics::ShardMetrics::add(&self.io.metrics.deliveries, 1);
        self.poll_answer(key, StatusCode::OK, msg.id, Some(body));
    }

    /// The poll's time is up: `204` with the unchanged cursor.
    pub(crate) fn poll_timed_out(&mut self, key: ConnKey) {
        let Some(conn) = self.io.conn(key) else {
            return;
        };
        let seq = self
            .hub
            .sub(conn.chan, conn.sub)
            .map(|s| s.live_after)
            .filter(|&s| s != crate::hub::PENDING);
        let Some(seq) = seq else {
            // The owner has not answered yet (it always does, promptly);
            // check again on the next tick.
            self.set_deadline(key, self.tick + 1);
            return;
        };
        let cursor = MsgId {
            epoch: self.hub.epoch(),
            seq,
        };
        self.poll_answer(key, StatusCode::NO_CONTENT, cursor, None);
    }

    /// Leaves the channel and answers; the connection then serves its next
    /// request.
    fn poll_answer(
        &mut self,
        key: ConnKey,
        status: StatusCode,
        cursor: MsgId,
        body: Option<&[u8]>,
    ) {
        let Some(keep_alive) = self.io.conn(key).map(|c| c.has(flags::KEEP_ALIVE)) else {
            return;
        };
        self.detach(key);
        self.set_phase(key, Phase::Http);
        let etag = format!("\"{cursor}\"");
        let extra = [("ETag", etag.as_str()), ("Cache-Control", "no-cache")];
        let (content_type, body) = match body {
            Some(body) => ("application/json", body),
            None => ("", &b""[..]),
        };
        self.respond_as(key, status, content_type, body, &extra, false, keep_alive);
        self.resume_input(key);
    }
}
