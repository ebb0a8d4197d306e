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
//! starts from the cursor. Requests pipelined behind a held poll wait for
//! its answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codec::http::{Method, RequestHead, StatusCode};
use serde_json::json;

use crate::config::Settings;
use crate::hub::{ChannelName, Message, MsgId, Replay, SubRef};
use crate::metrics::{Refusal, ShardMetrics};

use super::context::{ticks, Context, Subscribe};
use super::framing::{self, Format};
use super::response::{self, Answer, Refused};

/// What a valid poll request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The channel.
    pub channel: ChannelName,
    /// How long to hold the request; zero for a short poll.
    pub timeout: Duration,
    /// The cursor (`None`: from now on).
    pub since: Option<MsgId>,
    /// The cursor came from `If-None-Match`, so "nothing new" is a `304`.
    pub if_none_match: bool,
}

/// Reads a poll request (`raw_channel` is the path's last segment,
/// percent-encoded). `?since=` wins over `If-None-Match`.
pub fn plan(
    head: &RequestHead<'_>,
    raw_channel: &str,
    settings: &Settings,
) -> Result<Plan, Refused> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return Err(Refused::new(
            Refusal::BadRequest,
            StatusCode::METHOD_NOT_ALLOWED,
            "poll with GET",
        ));
    }
    let channel =
        ChannelName::from_path(raw_channel).map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
    let timeout = match head.query_param("timeout") {
        Ok(None) => settings.poll_timeout,
        Ok(Some(t)) => match t.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs).min(settings.poll_max_timeout),
            Err(_) => {
                return Err(Refused::bad(
                    Refusal::BadRequest,
                    "timeout must be a whole number of seconds",
                ))
            }
        },
        Err(e) => {
            return Err(Refused::bad(
                Refusal::BadRequest,
                format!("invalid timeout: {e}"),
            ))
        }
    };
    let inm = if_none_match(head);
    let since = super::params::since(head)
        .map_err(|r| Refused::bad(Refusal::BadSince, r))?
        .or(inm);
    Ok(Plan {
        channel,
        timeout,
        since,
        if_none_match: inm.is_some() && inm == since,
    })
}

/// The cursor in an `If-None-Match` header: the first entity tag, quotes
/// and weakness marker removed.
fn if_none_match(head: &RequestHead<'_>) -> Option<MsgId> {
    let tag = head.headers.if_none_match.items().next()?;
    let tag = std::str::from_utf8(tag).ok()?;
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').parse().ok()
}

/// What became of a poll after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Still held.
    Held,
    /// Answered: the connection serves its next request (or closes, if the
    /// request did not keep it alive).
    Answered(Answer),
}

/// A poll in progress: subscribed, waiting for its replay or a message.
#[derive(Debug)]
pub struct Poll {
    sub: SubRef,
    short: bool,
    if_none_match: bool,
    answer: Answer,
}

impl Poll {
    /// Subscribes (the replay decides: answer at once, or hold until a
    /// message or the timeout).
    pub fn start(ctx: &mut impl Context, plan: Plan, answer: Answer) -> Poll {
        let short = plan.timeout.is_zero();
        ctx.set_timer((!short).then(|| ctx.now() + ticks(plan.timeout)));
        let sub = ctx.subscribe(Subscribe {
            channel: plan.channel,
            format: Format::Poll,
            since: plan.since,
            presence: false,
        });
        Poll {
            sub,
            short,
            if_none_match: plan.if_none_match,
            answer,
        }
    }

    /// The owner's answer: respond with what it found, or hold.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) -> Outcome {
        if at != self.sub {
            return Outcome::Held;
        }
        let epoch = ctx.epoch();
        if replay.messages.is_empty() && replay.reset.is_none() {
            let cursor = MsgId {
                epoch,
                seq: replay.last_seq,
            };
            if !self.short {
                // Hold: the next delivery answers it.
                ctx.accept_replay(at, &replay);
                return Outcome::Held;
            }
            if self.if_none_match {
                return self.answer(ctx, StatusCode::NOT_MODIFIED, cursor, None);
            }
            let body = framing::json_body(&json!({"messages": [], "next": cursor.to_string()}));
            return self.answer(ctx, StatusCode::OK, cursor, Some(&body));
        }
        let batch = ctx.settings().poll_batch;
        let shown = &replay.messages[..batch.min(replay.messages.len())];
        let next = shown.last().map_or(
            MsgId {
                epoch,
                seq: replay.last_seq,
            },
            |m| m.id,
        );
        let body = framing::poll_answer(shown, next, replay.reset.as_ref());
        self.answer(ctx, StatusCode::OK, next, Some(&body))
    }

    /// A message for the held poll; `body` is [`framing::poll_body`] of it,
    /// shared by every poll of the channel on the shard.
    pub fn handle_delivery(
        &mut self,
        ctx: &mut impl Context,
        msg: &Arc<Message>,
        body: &Bytes,
    ) -> Outcome {
        if !msg.is_stored() {
            return Outcome::Held;
        }
        ShardMetrics::add(&ctx.metrics().deliveries, 1);
        self.answer(ctx, StatusCode::OK, msg.id, Some(body))
    }

    /// The poll's time is up: `204` with the unchanged cursor.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Outcome {
        let Some(seq) = ctx.position(self.sub) else {
            // The owner has not answered yet (it always does, promptly);
            // look again on the next tick.
            ctx.set_timer(Some(ctx.now() + 1));
            return Outcome::Held;
        };
        let cursor = MsgId {
            epoch: ctx.epoch(),
            seq,
        };
        self.answer(ctx, StatusCode::NO_CONTENT, cursor, None)
    }

    /// Leaves the channel and answers.
    fn answer(
        &mut self,
        ctx: &mut impl Context,
        status: StatusCode,
        cursor: MsgId,
        body: Option<&[u8]>,
    ) -> Outcome {
        self.release(ctx);
        // A draining node answers and closes.
        let answer = Answer {
            keep_alive: self.answer.keep_alive && !ctx.draining(),
            ..self.answer
        };
        let etag = format!("\"{cursor}\"");
        let extra = [("ETag", etag.as_str()), ("Cache-Control", "no-cache")];
        let (content_type, body) = match body {
            Some(body) => ("application/json", body),
            None => ("", &b""[..]),
        };
        response::respond(ctx, answer, status, content_type, body, &extra, false);
        Outcome::Answered(answer)
    }

    /// Leaves the channel (once).
    pub fn release(&mut self, ctx: &mut impl Context) {
        let sub = std::mem::replace(&mut self.sub, SubRef::NONE);
        if sub != SubRef::NONE {
            ctx.unsubscribe(sub, false);
        }
        ctx.set_timer(None);
    }
}
