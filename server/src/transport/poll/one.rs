//! A poll of one channel, `GET /poll/{channel}`: its cursor is a message
//! id, and its answers are those of docs/protocol.md § Polling.

use std::sync::Arc;

use bytes::Bytes;
use codec::http::StatusCode;
use serde_json::json;

use crate::hub::{Message, MsgId, Replay, SubRef};
use crate::metrics::ShardMetrics;

use crate::transport::context::{ticks, Context, Subscribe};
use crate::transport::framing::{self, Format};
use crate::transport::response::Answer;

use super::answer::{self, Outcome};
use super::plan::Plan;

/// A poll of one channel in progress: subscribed, waiting for its replay
/// or a message.
#[derive(Debug)]
pub struct OnePoll {
    sub: SubRef,
    short: bool,
    if_none_match: bool,
    answer: Answer,
}

impl OnePoll {
    /// Subscribes (the replay decides: answer at once, or hold until a
    /// message or the timeout).
    pub fn start(ctx: &mut impl Context, plan: Plan, answer: Answer) -> OnePoll {
        let short = plan.timeout.is_zero();
        ctx.set_timer((!short).then(|| ctx.now() + ticks(plan.timeout)));
        let sub = ctx.subscribe(Subscribe {
            channel: plan.channel,
            format: Format::Poll,
            since: plan.since,
            presence: None,
            deflate: None,
            durable: plan.durable,
        });
        OnePoll {
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
        if replay.messages.is_empty() && replay.reset.is_none() {
            let cursor = replay.end();
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
        let next = shown.last().map_or(replay.end(), |m| m.id);
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
            epoch: ctx.channel_epoch(self.sub),
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
        answer::respond(ctx, self.answer, status, &cursor.to_string(), body)
    }

    /// Leaves the channel (once).
    pub fn release(&mut self, ctx: &mut impl Context) {
        let sub = std::mem::replace(&mut self.sub, SubRef::NONE);
        if sub != SubRef::NONE {
            ctx.unsubscribe(sub, None);
        }
        ctx.set_timer(None);
    }
}
