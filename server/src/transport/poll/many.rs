//! A poll of several channels, `GET /poll?ch=a,b&since=<cursor>`, so that
//! a page polling many channels needs one request (browsers allow six
//! HTTP/1.1 connections per origin).
//!
//! Its cursor is the composite `<epoch>;<channel>=<seq>,…` of the
//! multi-channel event stream, sent as `ETag` and `next`. The poll
//! subscribes to every channel and waits for every owner's replay; then it
//! answers with what they found (each message carries its `ch`; at most
//! `--poll-batch` in all; a lost position adds its channel to `resets`),
//! or, with nothing new, answers at once (short poll: `304` when
//! `If-None-Match` named the cursor) or holds until the first message on
//! any of them, or the timeout (`204`).

use std::sync::Arc;

use codec::http::StatusCode;
use serde_json::{json, Value};

use crate::hub::{ChannelName, Message, MsgId, Replay, SubRef};
use crate::metrics::ShardMetrics;

use crate::transport::context::{ticks, Context, Subscribe};
use crate::transport::framing::{self, Format};
use crate::transport::params;
use crate::transport::response::Answer;

use super::answer::{self, Outcome};
use super::plan::ManyPlan;

/// One channel of the poll.
#[derive(Debug)]
struct PollChannel {
    name: ChannelName,
    sub: SubRef,
    /// The position the poll resumed from, then the one it reached
    /// (`None`: from now on).
    since: Option<MsgId>,
    /// The owner's replay, until the poll answers or holds.
    replay: Option<Replay>,
}

/// A poll of several channels in progress.
#[derive(Debug)]
pub struct ManyPoll {
    channels: Vec<PollChannel>,
    short: bool,
    if_none_match: bool,
    answer: Answer,
    /// Every replay arrived and was empty: held for the first message.
    held: bool,
}

impl ManyPoll {
    /// Subscribes to every channel; the replays decide.
    pub fn start(ctx: &mut impl Context, plan: ManyPlan, answer: Answer) -> ManyPoll {
        let short = plan.timeout.is_zero();
        ctx.set_timer((!short).then(|| ctx.now() + ticks(plan.timeout)));
        let mut durable = plan.durable.into_iter();
        let channels = (plan.channels.into_iter().zip(plan.positions))
            .map(|(name, since)| PollChannel {
                sub: ctx.subscribe(Subscribe {
                    channel: name.clone(),
                    format: Format::PollMany,
                    since,
                    presence: None,
                    deflate: None,
                    durable: durable.next().flatten(),
                }),
                name,
                since,
                replay: None,
            })
            .collect();
        ManyPoll {
            channels,
            short,
            if_none_match: plan.if_none_match,
            answer,
            held: false,
        }
    }

    /// An owner's answer for one channel: once every channel has its own,
    /// respond with what they found, or hold.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) -> Outcome {
        let Some(c) = self.channels.iter_mut().find(|c| c.sub == at) else {
            return Outcome::Held;
        };
        if c.replay.is_some() || self.held {
            return Outcome::Held;
        }
        c.replay = Some(replay);
        if self.channels.iter().any(|c| c.replay.is_none()) {
            return Outcome::Held;
        }
        let found = (self.channels.iter())
            .filter_map(|c| c.replay.as_ref())
            .any(|r| !r.messages.is_empty() || r.reset.is_some());
        if found {
            return self.answer_replays(ctx);
        }
        let cursor = self.cursor(ctx, |c| c.replay.as_ref().map(Replay::end));
        if !self.short {
            // Hold: live on every channel; the first delivery answers.
            for c in &mut self.channels {
                if let Some(r) = c.replay.take() {
                    c.since = Some(r.end());
                    ctx.accept_replay(c.sub, &r);
                }
            }
            self.held = true;
            return Outcome::Held;
        }
        if self.if_none_match {
            return self.finish(ctx, StatusCode::NOT_MODIFIED, &cursor, None);
        }
        let body = framing::json_body(&json!({"messages": [], "next": cursor}));
        self.finish(ctx, StatusCode::OK, &cursor, Some(&body))
    }

    /// A message on one of the channels of a held poll: answer with it.
    pub fn handle_delivery(&mut self, ctx: &mut impl Context, msg: &Arc<Message>) -> Outcome {
        if !msg.is_stored() || !self.held {
            return Outcome::Held;
        }
        let Some(i) = self.channels.iter().position(|c| c.name == msg.channel) else {
            return Outcome::Held;
        };
        self.channels[i].since = Some(msg.id);
        ShardMetrics::add(&ctx.metrics().deliveries, 1);
        let cursor = self.cursor(ctx, |c| c.since);
        let body = json!({"messages": [framing::poll_message(msg)], "next": cursor});
        self.finish(
            ctx,
            StatusCode::OK,
            &cursor,
            Some(&framing::json_body(&body)),
        )
    }

    /// The poll's time is up (or the node drains): `204` with the cursor.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Outcome {
        if !self.held {
            // Some owner has not answered yet (they do, promptly): look
            // again on the next tick.
            ctx.set_timer(Some(ctx.now() + 1));
            return Outcome::Held;
        }
        let cursor = self.cursor(ctx, |c| c.since);
        self.finish(ctx, StatusCode::NO_CONTENT, &cursor, None)
    }

    /// Leaves every channel.
    pub fn release(&mut self, ctx: &mut impl Context) {
        for c in &mut self.channels {
            let sub = std::mem::replace(&mut c.sub, SubRef::NONE);
            if sub != SubRef::NONE {
                ctx.unsubscribe(sub, None);
            }
        }
        ctx.set_timer(None);
    }

    /// Answers with the replays' messages (at most `--poll-batch`, channel
    /// by channel) and resets; each channel's position moves to the last
    /// message shown of it.
    fn answer_replays(&mut self, ctx: &mut impl Context) -> Outcome {
        let mut room = ctx.settings().poll_batch;
        let mut messages: Vec<Value> = Vec::new();
        let mut resets: Vec<Value> = Vec::new();
        for c in &mut self.channels {
            let Some(r) = c.replay.take() else {
                continue;
            };
            if let Some(reset) = &r.reset {
                resets.push(json!({
                    "ch": c.name.as_str(),
                    "reason": reset.reason.as_str(),
                    "since": reset.since.to_string(),
                    "missed": reset.missed,
                    "epoch": r.epoch.to_string(),
                }));
                // Its old position means nothing now: from the start of
                // what history has, unless messages below move it on.
                c.since = Some(MsgId {
                    epoch: r.epoch,
                    seq: 0,
                });
            }
            let shown = &r.messages[..room.min(r.messages.len())];
            room -= shown.len();
            messages.extend(shown.iter().map(|m| framing::poll_message(m)));
            c.since = match shown.last() {
                Some(m) => Some(m.id),
                // Nothing after it: where the channel is now.
                None if r.messages.is_empty() && r.reset.is_none() => Some(r.end()),
                None => c.since,
            };
        }
        let cursor = self.cursor(ctx, |c| c.since);
        let mut body = json!({"messages": messages, "next": cursor});
        if !resets.is_empty() {
            body["resets"] = Value::Array(resets);
        }
        self.finish(
            ctx,
            StatusCode::OK,
            &cursor,
            Some(&framing::json_body(&body)),
        )
    }

    /// The composite cursor, each channel at `position(channel)` (channels
    /// without one are left out: they start from now on next time).
    fn cursor(
        &self,
        ctx: &impl Context,
        position: impl Fn(&PollChannel) -> Option<MsgId>,
    ) -> String {
        let known = self
            .channels
            .iter()
            .filter_map(|c| Some((&c.name, position(c)?)));
        params::format_cursor(ctx.node_epoch(), known)
    }

    /// Leaves every channel and answers.
    fn finish(
        &mut self,
        ctx: &mut impl Context,
        status: StatusCode,
        cursor: &str,
        body: Option<&[u8]>,
    ) -> Outcome {
        self.release(ctx);
        answer::respond(ctx, self.answer, status, cursor, body)
    }
}
