//! HTTP polling: `GET /poll/{channel}?since=ID&timeout=S`, and several
//! channels in one request, `GET /poll?ch=a,b&since=CURSOR&timeout=S`.
//!
//! * **Long poll** (`timeout` > 0; default `--poll-timeout`, capped at
//!   `--poll-max-timeout`): if messages after the cursor exist, the answer
//!   comes at once; otherwise the request is held — as hub subscriptions
//!   with a deadline, no receive buffer, no polling — until a message
//!   arrives (answered within the turn of its delivery) or the timeout
//!   passes (`204 No Content`).
//! * **Short poll** (`timeout=0`): always answers at once; when nothing is
//!   new and the request's `If-None-Match` names the current cursor, the
//!   answer is `304 Not Modified` with no body.
//!
//! The cursor is `since=`, or else the request's `If-None-Match`: a message
//! id for one channel ([`one`]), the composite `<epoch>;<ch>=<seq>,…` for
//! several ([`many`]). Without one the poll starts "now". Every answer
//! carries the cursor to send next as `ETag: "<cursor>"` (on `200`, `204`
//! and `304`) and as `next` in the `200` body:
//!
//! ```json
//! {"messages":[{"id":"…","ch":"…","data":"…"}],"next":"…"}
//! ```
//!
//! (binary payloads base64 with `"encoding":"base64"`; a lost position adds
//! `"reset"`, or for several channels `"resets"` naming theirs). At most
//! `--poll-batch` messages per answer; a client that gets a full batch polls
//! again at once. Ephemeral messages are not delivered to polls (they have
//! no cursor). A message published between two polls is never lost: the
//! next poll starts from the cursor. Requests pipelined behind a held poll
//! wait for its answer.

pub mod answer;
pub mod many;
pub mod one;
pub mod plan;

use std::sync::Arc;

use bytes::Bytes;

use crate::hub::{Message, Replay, SubRef};

use super::context::Context;
use super::response::Answer;

pub use answer::Outcome;
pub use many::ManyPoll;
pub use one::OnePoll;
pub use plan::{plan, plan_many, ManyPlan, Plan};

/// A poll in progress, of one channel or several.
#[derive(Debug)]
pub enum Poll {
    /// `GET /poll/{channel}`.
    One(OnePoll),
    /// `GET /poll?ch=a,b`.
    Many(Box<ManyPoll>),
}

impl Poll {
    /// Starts a poll of one channel.
    pub fn start(ctx: &mut impl Context, plan: Plan, answer: Answer) -> Poll {
        Poll::One(OnePoll::start(ctx, plan, answer))
    }

    /// Starts a poll of several channels.
    pub fn start_many(ctx: &mut impl Context, plan: ManyPlan, answer: Answer) -> Poll {
        Poll::Many(Box::new(ManyPoll::start(ctx, plan, answer)))
    }

    /// An owner's answer to one of its subscriptions.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) -> Outcome {
        match self {
            Poll::One(p) => p.handle_replay(ctx, at, replay),
            Poll::Many(p) => p.handle_replay(ctx, at, replay),
        }
    }

    /// A message for a held poll; `body` is [`super::framing::poll_body`]
    /// of it for a poll of one channel (shared by every such poll on the
    /// shard).
    pub fn handle_delivery(
        &mut self,
        ctx: &mut impl Context,
        msg: &Arc<Message>,
        body: &Bytes,
    ) -> Outcome {
        match self {
            Poll::One(p) => p.handle_delivery(ctx, msg, body),
            Poll::Many(p) => p.handle_delivery(ctx, msg),
        }
    }

    /// The poll's time is up, or the node drains.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Outcome {
        match self {
            Poll::One(p) => p.handle_timer(ctx),
            Poll::Many(p) => p.handle_timer(ctx),
        }
    }

    /// Leaves its channels.
    pub fn release(&mut self, ctx: &mut impl Context) {
        match self {
            Poll::One(p) => p.release(ctx),
            Poll::Many(p) => p.release(ctx),
        }
    }
}
