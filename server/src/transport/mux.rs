//! The multiplexed WebSocket protocol on `GET /ws`: one JSON object per
//! text frame, many channels per connection. docs/protocol.md is the
//! reference; in short:
//!
//! | Client sends | Server answers |
//! |---|---|
//! | `{"type":"subscribe","ch":"c","since":"<id>"?,"durable":true?,"device":"…"?}` | `subscribed` (with `durable`, `cursor`, `unread` when durable), then `reset`? and history, then live `message`s |
//! | `{"type":"ack","ch":"c","id":"<id>","device":"…"?}` | `acked` with the cursor and `unread` (see `super::ack`) |
//! | `{"type":"unread","device":"…"?}` | `unread`: the identity's unread count per channel, and the total |
//! | `{"type":"unsubscribe","ch":"c"}` | `unsubscribed` |
//! | `{"type":"publish","ch":"c","data":"…"` or `"data_base64":"…"`, `"ephemeral":true?}` | `published` with the id (`null` if ephemeral) |
//! | `{"type":"presence","ch":"c"}` | `presence` with the clients subscribed on every shard |
//! | `{"type":"ping"}` | `pong` |
//!
//! Every request may carry `"rid"` (any JSON value), echoed in its answer.
//! The server also sends `message`, `reset`, `joined` and `left` events.
//!
//! Problems get `{"type":"error","code":…,"reason":…,"rid":…}` and the
//! connection stays open; after [`MAX_CONSECUTIVE_ERRORS`] invalid commands
//! in a row the session asks its WebSocket to close with 1008.
//!
//! [`Session`] is the application half of a `/ws` connection: the
//! WebSocket state (`super::ws`) hands it whole messages and the owners'
//! answers, and it acts through the [`Context`].

use std::sync::Arc;

use codec::ws::{CloseCode, DataKind};
use hashbrown::HashMap;
use serde_json::{json, Value};

use crate::auth::{Access, TokenError};
use crate::hub::{
    AckError, ChannelName, Cursor, CursorState, Member, MsgId, PublishItem, Replay, ResetReason,
    SubRef, UnreadCounts,
};
use crate::metrics::{Refusal, ShardMetrics};

use super::ack;
use super::context::{Context, Subscribe, Tick, RETRY_AFTER_SECS, TICK};
use super::deflate::Deflate;
use super::framing::{self, Format};

/// The error code of a publish refused because readers that are behind
/// pin more than `--max-pinned`; it carries `"retry_after"` (seconds).
const OVERLOADED: &str = "overloaded";

/// The error code of a publish over `--max-publish-rate`; it carries
/// `"retry_after"` (seconds).
const RATE_LIMITED: &str = "rate_limited";

/// Invalid commands in a row after which the connection is closed.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 10;

/// What a multiplexed connection keeps between commands.
#[derive(Debug, Default)]
pub struct Session {
    /// Subscriptions by channel, with the `rid` of the `subscribe` until
    /// it is answered.
    subs: HashMap<ChannelName, MuxSub>,
    /// Answers awaited from channel owners, by token.
    pending: HashMap<u32, Pending>,
    /// Replays still on their way for subscriptions that were dropped
    /// before theirs arrived, by channel. A channel's owner answers in
    /// order, so the next replay for such a channel is a stale one — even
    /// when a new subscription reuses the old one's `SubRef`.
    stale: HashMap<ChannelName, u32>,
    errors: u32,
    /// What the client's token grants (from the handshake's
    /// `Authorization`, or an `auth` command); `None` until one is
    /// presented. Only read when the node checks tokens.
    access: Option<Arc<Access>>,
    /// A command decided the connection ends (a rejected token).
    closing: Option<(CloseCode, String)>,
    /// Publishes allowed now (`--max-publish-rate`), as of `refilled`.
    bucket: Option<(f32, Tick)>,
    /// What the connection agreed for permessage-deflate: live messages
    /// of its subscriptions reach it compressed.
    deflate: Option<Deflate>,
}

/// Close code for a token that expired (at `auth`, or during the
/// connection).
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);
/// Close code for a token that is not valid.
pub const TOKEN_REJECTED: CloseCode = CloseCode(4003);

#[derive(Debug)]
struct MuxSub {
    at: SubRef,
    /// A replay (the first, or a catch-up) is on its way.
    replay_in_flight: bool,
    /// `subscribed` has been answered.
    answered: bool,
    rid: Option<Value>,
    /// Who it joined the channel's presence as (kept: a token that comes
    /// later must not change whom it leaves as).
    member: Option<Member>,
    /// A durable subscription: whose cursor (an `ack` without `device`
    /// acks this one's).
    durable: Option<Cursor>,
}

#[derive(Debug)]
enum Pending {
    Publish {
        channel: ChannelName,
        rid: Option<Value>,
        ephemeral: bool,
    },
    Presence {
        rid: Option<Value>,
    },
    Ack {
        rid: Option<Value>,
    },
    /// Answers still to come from this many shards, and the counts so far.
    Unread {
        rid: Option<Value>,
        left: usize,
        counts: Vec<(ChannelName, u64)>,
    },
}

/// What the WebSocket must do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Carry on.
    Continue,
    /// Close with this code and reason: too many invalid commands in a row
    /// (1008), a token that expired (4001) or was rejected (4003).
    Close(CloseCode, String),
}

/// A command refused, with the code and reason sent back.
struct Refused(&'static str, String);

fn refused(code: &'static str, reason: impl Into<String>) -> Refused {
    Refused(code, reason.into())
}

fn with_rid(mut v: Value, rid: Option<Value>) -> Value {
    if let Some(rid) = rid {
        v["rid"] = rid;
    }
    v
}

fn send(ctx: &mut impl Context, v: Value) {
    ctx.send(framing::text_frame(&v));
}

impl Session {
    /// A session whose handshake presented `access` (a valid token) and
    /// agreed on `deflate`.
    pub fn new(access: Option<Arc<Access>>, deflate: Option<Deflate>) -> Session {
        Session {
            access,
            deflate,
            ..Session::default()
        }
    }

    /// When the client's token expires (seconds since the epoch), if the
    /// node checks tokens and one was presented.
    pub fn token_expiry(&self) -> Option<u64> {
        self.access.as_ref().map(|a| a.exp)
    }

    /// A complete data message from the client.
    pub fn handle_message(
        &mut self,
        ctx: &mut impl Context,
        kind: DataKind,
        payload: &[u8],
    ) -> Verdict {
        let (rid, result) = if kind == DataKind::Binary {
            (
                None,
                Err(refused(
                    "bad_request",
                    "binary frames are not part of the protocol; send JSON text frames",
                )),
            )
        } else {
            match serde_json::from_slice::<Value>(payload) {
                Err(e) => (None, Err(refused("bad_json", format!("not JSON: {e}")))),
                Ok(Value::Object(mut cmd)) => {
                    let rid = cmd.remove("rid");
                    let r = self.command(ctx, &mut cmd, rid.clone());
                    (rid, r)
                }
                Ok(_) => (
                    None,
                    Err(refused("bad_request", "a command is a JSON object")),
                ),
            }
        };
        match result {
            Ok(()) => {
                self.errors = 0;
                match self.closing.take() {
                    Some((code, reason)) => Verdict::Close(code, reason),
                    None => Verdict::Continue,
                }
            }
            Err(Refused(code, reason)) => {
                // Refusing a publish for the node's load, or for its pace,
                // is not a protocol error: it does not count toward a close.
                if code != OVERLOADED && code != RATE_LIMITED {
                    self.errors += 1;
                }
                tracing::debug!(code, "multiplexed command refused: {reason}");
                let mut answer = json!({"type": "error", "code": code, "reason": reason});
                if code == OVERLOADED || code == RATE_LIMITED {
                    answer["retry_after"] = json!(RETRY_AFTER_SECS);
                }
                send(ctx, with_rid(answer, rid));
                if self.errors >= MAX_CONSECUTIVE_ERRORS {
                    let reason = "too many invalid commands".to_string();
                    Verdict::Close(CloseCode::POLICY_VIOLATION, reason)
                } else {
                    Verdict::Continue
                }
            }
        }
    }

    fn command(
        &mut self,
        ctx: &mut impl Context,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let kind = match cmd.remove("type") {
            Some(Value::String(t)) => t,
            Some(_) => return Err(refused("bad_request", "\"type\" must be a string")),
            None => return Err(refused("bad_request", "missing \"type\"")),
        };
        match kind.as_str() {
            "ping" => {
                send(ctx, with_rid(json!({"type": "pong"}), rid));
                Ok(())
            }
            "auth" | "refresh" => self.authenticate(ctx, cmd, rid),
            "subscribe" => {
                let channel = channel_of(cmd)?;
                self.may_read(ctx, &channel)?;
                let since = match cmd.remove("since") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(
                        s.parse::<MsgId>()
                            .map_err(|e| refused("bad_since", format!("invalid since: {e}")))?,
                    ),
                    Some(_) => {
                        return Err(refused("bad_since", "since must be a message id string"))
                    }
                };
                let asked = match cmd.remove("durable") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => b,
                    Some(_) => return Err(refused("bad_request", "durable must be true or false")),
                };
                let device = device_of(cmd)?.unwrap_or_default();
                let access = self.access.as_deref();
                let durable = ack::durable_for(ctx.settings(), access, &channel, asked, device)
                    .map_err(|e| refused(ack::code(&e), e.to_string()))?;
                self.subscribe(ctx, channel, since, durable, rid)
            }
            "ack" => self.ack(ctx, cmd, rid),
            "unread" => self.unread(ctx, cmd, rid),
            "unsubscribe" => {
                let channel = channel_of(cmd)?;
                if !self.drop_sub(ctx, &channel) {
                    return Err(refused(
                        "not_subscribed",
                        format!("not subscribed to {channel}"),
                    ));
                }
                send(
                    ctx,
                    with_rid(json!({"type": "unsubscribed", "ch": channel.as_str()}), rid),
                );
                Ok(())
            }
            "publish" => self.publish(ctx, cmd, rid),
            "presence" => {
                let channel = channel_of(cmd)?;
                self.may_read(ctx, &channel)?;
                presence_visible(ctx, &channel)?;
                let token = ctx.query_presence(channel);
                self.pending.insert(token, Pending::Presence { rid });
                Ok(())
            }
            other => Err(refused(
                "unknown_type",
                format!("unknown command type {other:?}"),
            )),
        }
    }

    /// `auth` / `refresh`: a token for this connection (again: a newer
    /// one before the old expires). A token that is not valid gets an
    /// error naming why; it closes the connection (4001 expired, 4003
    /// otherwise) unless a valid token is already in place, which then
    /// stays until it expires. A newer token that allows fewer channels
    /// ends the subscriptions it no longer allows (`unsubscribed` with the
    /// reason).
    fn authenticate(
        &mut self,
        ctx: &mut impl Context,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let Some(verifier) = ctx.settings().verifier.clone() else {
            return Err(refused(
                "bad_request",
                "this node does not check tokens (no --jwt-secret or --jwt-public-key)",
            ));
        };
        let Some(Value::String(token)) = cmd.remove("token") else {
            return Err(refused("bad_request", "missing \"token\" (a string)"));
        };
        match verifier.verify(&token) {
            Ok(access) => {
                if let Some(old) = &self.access {
                    if old.sub != access.sub {
                        return Err(refused(
                            "token_rejected",
                            "a refreshed token must name the same sub",
                        ));
                    }
                }
                let answer =
                    json!({"type": "authed", "sub": access.sub.as_deref(), "exp": access.exp});
                // An `owner` channel stays its identity's (the sub is the same).
                let dropped: Vec<(ChannelName, String)> = (self.subs.keys())
                    .filter_map(|ch| {
                        Some((ch.clone(), ack::read_denied(ctx.settings(), &access, ch)?))
                    })
                    .collect();
                self.access = Some(access);
                send(ctx, with_rid(answer, rid));
                for (channel, reason) in dropped {
                    self.drop_sub(ctx, &channel);
                    send(
                        ctx,
                        json!({"type": "unsubscribed", "ch": channel.as_str(), "reason": reason}),
                    );
                }
                Ok(())
            }
            Err(e) => {
                ctx.metrics().refuse(Refusal::Unauthorized);
                tracing::debug!("/ws token rejected: {}", e.reason());
                let answer =
                    json!({"type": "error", "code": "token_rejected", "reason": e.reason()});
                send(ctx, with_rid(answer, rid));
                let still_valid =
                    (self.access.as_ref()).is_some_and(|a| !a.expired_at(ctx.unix_time()));
                if still_valid {
                    return Ok(()); // the token in place stays, until it expires
                }
                self.closing = Some(match e {
                    TokenError::Expired => (TOKEN_EXPIRED, "token expired".into()),
                    e => (TOKEN_REJECTED, format!("token rejected: {}", e.reason())),
                });
                Ok(())
            }
        }
    }

    /// Takes one publish from the connection's bucket, refilled at
    /// `--max-publish-rate` per second up to that many; `false` if empty.
    fn take_publish_token(&mut self, ctx: &impl Context) -> bool {
        let rate = ctx.settings().max_publish_rate as f32;
        let now = ctx.now();
        let (tokens, then) = self.bucket.unwrap_or((rate, now));
        let elapsed = now.saturating_sub(then) as f32 * TICK.as_secs_f32();
        let tokens = (tokens + elapsed * rate).min(rate);
        if tokens < 1.0 {
            self.bucket = Some((tokens, now));
            return false;
        }
        self.bucket = Some((tokens - 1.0, now));
        true
    }

    /// Ends the subscription to `channel`; `false` if there was none.
    fn drop_sub(&mut self, ctx: &mut impl Context, channel: &ChannelName) -> bool {
        let Some(sub) = self.subs.remove(channel) else {
            return false;
        };
        if sub.replay_in_flight {
            *self.stale.entry(channel.clone()).or_default() += 1;
        }
        ctx.unsubscribe(sub.at, sub.member);
        true
    }

    /// Who the connection is in `channel`'s presence: its token's `sub`,
    /// else its anonymous id; `None` where the namespace hides presence.
    fn presence_as(&self, ctx: &impl Context, channel: &ChannelName) -> Option<Member> {
        if !ctx.settings().namespaces.of(channel.as_str()).presence {
            return None;
        }
        Some(match self.access.as_ref().and_then(|a| a.sub.as_deref()) {
            Some(sub) => Member::User(sub.into()),
            None => Member::Client(ctx.client_id()),
        })
    }

    /// Whether the client may read `channel`: always when its namespace
    /// needs no token; otherwise once a token allows it.
    fn may_read(&self, ctx: &impl Context, channel: &ChannelName) -> Result<(), Refused> {
        if !ctx.settings().namespaces.of(channel.as_str()).token {
            return Ok(());
        }
        match &self.access {
            None => Err(refused(
                "unauthorized",
                "authenticate first: send {\"type\":\"auth\",\"token\":…}",
            )),
            Some(a) => match ack::read_denied(ctx.settings(), a, channel) {
                Some(reason) => Err(refused("forbidden", reason)),
                None => Ok(()),
            },
        }
    }

    /// `ack`: checks what the connection can (an identity, the id, a
    /// store), then asks the channel's owner, which answers `acked` or
    /// the refusal (`handle_acked`).
    fn ack(
        &mut self,
        ctx: &mut impl Context,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let channel = channel_of(cmd)?;
        let device = match device_of(cmd)? {
            Some(d) => d,
            // The device of this connection's durable subscription.
            None => (self.subs.get(&channel))
                .and_then(|s| s.durable.as_ref())
                .map_or_else(Box::default, |c| c.device.clone()),
        };
        let refuse = |e: AckError| refused(ack::code(&e), e.to_string());
        let who = ack::identity(self.access.as_deref(), device).map_err(refuse)?;
        self.may_read(ctx, &channel)?;
        let id = match cmd.remove("id") {
            Some(Value::String(id)) => ack::parse_id(&id).map_err(refuse)?,
            Some(_) => return Err(refused("bad_id", "\"id\" must be a message id string")),
            None => return Err(refused("bad_id", "missing \"id\"")),
        };
        ack::store_kept(ctx.settings(), &channel).map_err(refuse)?;
        let subscribed = (self.subs.get(&channel))
            .and_then(|s| s.durable.as_ref())
            .is_some_and(|c| *c == who);
        let token = ctx.ack(channel, who, id, subscribed);
        self.pending.insert(token, Pending::Ack { rid });
        Ok(())
    }

    /// `unread`: asks every shard where this identity's cursors (of
    /// `device`, else the identity's own) stand (in a cluster the
    /// bridge answers for this shard, from Redis); answered once all did,
    /// or at once when Redis could not be read.
    fn unread(
        &mut self,
        ctx: &mut impl Context,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let device = device_of(cmd)?.unwrap_or_default();
        let who = ack::identity(self.access.as_deref(), device)
            .map_err(|e| refused(ack::code(&e), e.to_string()))?;
        if let Some(why) = ack::no_unread(ctx.settings()) {
            return Err(refused("not_durable", why));
        }
        let (token, left) = ctx.query_unread(who);
        let counts = Vec::new();
        self.pending
            .insert(token, Pending::Unread { rid, left, counts });
        Ok(())
    }

    fn subscribe(
        &mut self,
        ctx: &mut impl Context,
        channel: ChannelName,
        since: Option<MsgId>,
        durable: Option<Cursor>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let max = ctx.settings().max_subscriptions;
        if self.subs.contains_key(&channel) {
            return Err(refused(
                "already_subscribed",
                format!("already subscribed to {channel}"),
            ));
        }
        if self.subs.len() >= max {
            return Err(refused(
                "too_many_subscriptions",
                format!("at most {max} subscriptions per connection"),
            ));
        }
        admit(ctx, &channel)?;
        let member = self.presence_as(ctx, &channel);
        let at = ctx.subscribe(Subscribe {
            channel: channel.clone(),
            format: Format::Mux,
            since,
            presence: member.clone(),
            deflate: self.deflate,
            durable: durable.clone(),
        });
        self.subs.insert(
            channel,
            MuxSub {
                at,
                replay_in_flight: true,
                answered: false,
                rid,
                member,
                durable,
            },
        );
        Ok(())
    }

    fn publish(
        &mut self,
        ctx: &mut impl Context,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let channel = channel_of(cmd)?;
        if let Some(reason) = ack::receipts_only(ctx.settings(), &channel) {
            return Err(refused("forbidden", reason));
        }
        let by_token = (self.access.as_ref()).is_some_and(|a| a.may_publish(channel.as_str()));
        let namespaces = &ctx.settings().namespaces;
        if !namespaces.of(channel.as_str()).publish && !by_token {
            let reason = if ctx.settings().verifier.is_some() {
                format!("the token does not allow publishing to {channel} (its publish claim)")
            } else if namespaces.spaces().is_empty() {
                "clients may not publish on this server (--client-publish)".into()
            } else {
                let space = namespaces.name_of(channel.as_str());
                format!("clients may not publish to {channel} (namespace {space})")
            };
            return Err(refused("forbidden", reason));
        }
        if namespaces.of(channel.as_str()).publish {
            self.may_read(ctx, &channel)?;
        }
        let ephemeral = match cmd.remove("ephemeral") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(refused("bad_request", "ephemeral must be true or false")),
        };
        let (kind, payload) =
            framing::payload_of(cmd).map_err(|reason| refused("bad_request", reason))?;
        let max = ctx.settings().max_message_size;
        if payload.len() > max {
            return Err(refused(
                "too_large",
                format!(
                    "message of {} bytes is over the limit of {max} bytes",
                    payload.len()
                ),
            ));
        }
        if !self.take_publish_token(ctx) {
            ctx.metrics().refuse(Refusal::RateLimited);
            let rate = ctx.settings().max_publish_rate;
            return Err(refused(
                RATE_LIMITED,
                format!("over {rate} publishes per second on this connection (--max-publish-rate)"),
            ));
        }
        if ctx.overloaded() {
            ctx.metrics().refuse(Refusal::Overloaded);
            return Err(refused(
                OVERLOADED,
                format!("readers that are behind hold more than --max-pinned; retry in {RETRY_AFTER_SECS} s"),
            ));
        }
        admit(ctx, &channel)?;
        let token = ctx.publish(vec![PublishItem {
            index: 0,
            channel: channel.clone(),
            kind,
            payload,
            ephemeral,
        }]);
        self.pending.insert(
            token,
            Pending::Publish {
                channel,
                rid,
                ephemeral,
            },
        );
        Ok(())
    }

    /// The owner's answer to a `subscribe`: `subscribed`, the reset signal
    /// and history, then live.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) {
        if let Some(n) = self.stale.get_mut(&replay.channel) {
            *n -= 1;
            if *n == 0 {
                self.stale.remove(&replay.channel);
            }
            return;
        }
        // Besides the answers it asked for, a subscription is sent one
        // unasked: in a cluster, when its channel starts a new epoch.
        let new_epoch = (replay.reset).is_some_and(|r| r.reason == ResetReason::Epoch);
        let Some(sub) = self
            .subs
            .get_mut(&replay.channel)
            .filter(|s| s.at == at && (s.replay_in_flight || new_epoch))
        else {
            return;
        };
        if !ctx.accept_replay(at, &replay) {
            return;
        }
        sub.replay_in_flight = false;
        if !sub.answered {
            sub.answered = true;
            let rid = sub.rid.take();
            let ch = replay.channel.as_str();
            let client = (sub.member.as_ref())
                .map_or_else(|| ctx.client_id().to_string(), Member::to_string);
            let mut answer = json!({"type": "subscribed", "ch": ch, "client": client});
            if replay.reset.is_none() && replay.messages.is_empty() {
                // Nothing to replay: the position the subscription starts
                // from, so a client that reconnects before the first
                // message resumes from here, not from a later "now".
                answer["id"] = json!(replay.end().to_string());
            }
            if let Some(d) = replay.durable {
                answer["durable"] = json!(true);
                answer["cursor"] = json!(d.cursor.to_string());
                answer["unread"] = json!(d.unread);
            }
            send(ctx, with_rid(answer, rid));
        }
        if let Some(reset) = replay.reset {
            ctx.send(framing::reset_frame(&replay.channel, &reset, replay.epoch));
        }
        for m in &replay.messages {
            ctx.send_message(framing::message_frame(m), m.id.seq);
        }
        ShardMetrics::add(&ctx.metrics().deliveries, replay.messages.len() as u64);
    }

    /// The connection's output drained: subscriptions that fell behind
    /// catch up.
    pub fn handle_drained(&mut self, ctx: &mut impl Context) {
        for sub in self.subs.values_mut() {
            if !sub.replay_in_flight && ctx.needs_catch_up(sub.at) {
                ctx.catch_up(sub.at);
                sub.replay_in_flight = true;
            }
        }
    }

    /// An owner assigned the id of a `publish`.
    pub fn handle_published(&mut self, ctx: &mut impl Context, token: u32, ids: &[(u32, MsgId)]) {
        let Some(Pending::Publish {
            channel,
            rid,
            ephemeral,
        }) = self.pending.remove(&token)
        else {
            return;
        };
        if let Some(&(_, id)) = ids.first() {
            let id = (!ephemeral).then(|| id.to_string());
            send(
                ctx,
                with_rid(
                    json!({"type": "published", "ch": channel.as_str(), "id": id}),
                    rid,
                ),
            );
        }
    }

    /// A `publish` could not be stored (in a cluster, Redis did not take
    /// it): an `unavailable` error the client may retry.
    pub fn handle_publish_refused(&mut self, ctx: &mut impl Context, token: u32, reason: &str) {
        let Some(Pending::Publish { rid, .. }) = self.pending.remove(&token) else {
            return;
        };
        ctx.metrics().refuse(Refusal::Unavailable);
        let answer = json!({
            "type": "error",
            "code": "unavailable",
            "reason": reason,
            "retry_after": RETRY_AFTER_SECS,
        });
        send(ctx, with_rid(answer, rid));
    }

    /// The channel's owner answered an `ack`: `acked` with where the
    /// cursor stands, or the refusal (`stale_id`, `unknown_id`,
    /// `not_durable`, `unavailable` with `retry_after`).
    pub fn handle_acked(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        result: Result<CursorState, AckError>,
    ) {
        let Some(Pending::Ack { rid }) = self.pending.remove(&token) else {
            return;
        };
        let answer = match result {
            Ok(state) => json!({
                "type": "acked",
                "ch": channel.as_str(),
                "cursor": state.cursor.to_string(),
                "unread": state.unread,
            }),
            Err(e) => {
                let code = ack::code(&e);
                let reason = ack::reason(&e);
                tracing::debug!(code, "ack refused: {reason}");
                if matches!(e, AckError::Unavailable(_)) {
                    ctx.metrics().refuse(Refusal::Unavailable);
                }
                let mut answer = json!({"type": "error", "code": code, "reason": reason});
                if matches!(e, AckError::Unavailable(_)) {
                    answer["retry_after"] = json!(RETRY_AFTER_SECS);
                }
                answer
            }
        };
        send(ctx, with_rid(answer, rid));
    }

    /// One shard answered an `unread` query; the last one completes it:
    /// `{"type":"unread","unread":{…},"total":N}`.
    pub fn handle_unread(&mut self, ctx: &mut impl Context, token: u32, counts: UnreadCounts) {
        let Some(Pending::Unread {
            left, counts: all, ..
        }) = self.pending.get_mut(&token)
        else {
            return;
        };
        let counts = match counts {
            Ok(counts) => counts,
            Err(e) => {
                // Redis could not be read (a cluster): answered now; the
                // other shards' answers find nothing pending.
                let Some(Pending::Unread { rid, .. }) = self.pending.remove(&token) else {
                    return;
                };
                let (code, reason) = (ack::code(&e), ack::reason(&e));
                tracing::debug!(code, "unread refused: {reason}");
                ctx.metrics().refuse(Refusal::Unavailable);
                let answer = json!({
                    "type": "error", "code": code, "reason": reason,
                    "retry_after": RETRY_AFTER_SECS,
                });
                return send(ctx, with_rid(answer, rid));
            }
        };
        all.extend(counts.into_iter().map(|(c, s)| (c, s.unread)));
        *left = left.saturating_sub(1);
        if *left > 0 {
            return;
        }
        if let Some(Pending::Unread { rid, counts, .. }) = self.pending.remove(&token) {
            let mut answer = ack::unread_answer(&counts);
            answer["type"] = json!("unread");
            send(ctx, with_rid(answer, rid));
        }
    }

    /// An owner answered a `presence` query.
    pub fn handle_presence(
        &mut self,
        ctx: &mut impl Context,
        token: u32,
        channel: &ChannelName,
        clients: &[Member],
    ) {
        if let Some(Pending::Presence { rid }) = self.pending.remove(&token) {
            let clients: Vec<String> = clients.iter().map(Member::to_string).collect();
            send(
                ctx,
                with_rid(
                    json!({"type": "presence", "ch": channel.as_str(), "clients": clients}),
                    rid,
                ),
            );
        }
    }

    /// The connection is going away: leave every channel.
    pub fn release(&mut self, ctx: &mut impl Context) {
        for (_, sub) in self.subs.drain() {
            ctx.unsubscribe(sub.at, sub.member);
        }
        self.pending.clear();
    }
}

/// Refuses a command that would create a channel while the node holds
/// `--max-channels`.
fn admit(ctx: &impl Context, channel: &ChannelName) -> Result<(), Refused> {
    if ctx.admits_channel(channel) {
        return Ok(());
    }
    ctx.metrics().refuse(Refusal::ChannelLimit);
    Err(refused(
        "channel_limit",
        super::response::channel_limit_reason(ctx),
    ))
}

/// Refuses a presence query on a channel whose namespace hides presence.
fn presence_visible(ctx: &impl Context, channel: &ChannelName) -> Result<(), Refused> {
    match super::response::presence_hidden(ctx, channel) {
        None => Ok(()),
        Some(reason) => Err(refused("forbidden", reason)),
    }
}

/// The command's `"device"`, checked (`None` without one).
fn device_of(cmd: &mut serde_json::Map<String, Value>) -> Result<Option<Box<str>>, Refused> {
    match cmd.remove("device") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(d)) => ack::device(&d)
            .map(Some)
            .map_err(|r| refused("bad_request", r)),
        Some(_) => Err(refused("bad_request", "device must be a string")),
    }
}

fn channel_of(cmd: &mut serde_json::Map<String, Value>) -> Result<ChannelName, Refused> {
    match cmd.remove("ch") {
        Some(Value::String(c)) => {
            ChannelName::new(&c).map_err(|e| refused("bad_channel", e.to_string()))
        }
        Some(_) => Err(refused("bad_channel", "\"ch\" must be a string")),
        None => Err(refused("bad_channel", "missing \"ch\"")),
    }
}
