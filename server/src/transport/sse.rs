//! Server-Sent Events: `GET /sse/{channel}` and `GET /sse?ch=a,b,c`.
//!
//! * One-channel stream: `id:<epoch>-<seq>` and `data:` lines; a binary
//!   payload is base64 under `event:binary`. These bytes are the same for
//!   every stream of the channel and are encoded once per message per shard.
//! * Multi-channel stream: `event:<channel>` (`event:<channel>;binary` for
//!   base64), and as `id:` the stream's **composite cursor**
//!   `<epoch>;<channel>=<seq>,<channel>=<seq>…` — the position in every
//!   channel of the stream, so that the `Last-Event-ID` a browser sends on
//!   reconnect resumes all of them. Only that id line is per stream; the rest
//!   of the event is shared.
//! * Ephemeral messages carry no `id:` (the stream's position is unchanged).
//! * A lost position gives `event:reset` with a JSON `data:` line
//!   (`{"ch":…,"reason":…,"since":…,"missed":…,"epoch":…}`) before the
//!   history that is still available.
//! * A comment line (`:`) every `--sse-heartbeat` keeps proxies from
//!   timing the stream out.
//!
//! Resume comes from `?since=` or else `Last-Event-ID` (same syntax).
//! [`plan`] reads a request into what the stream needs, or a refusal;
//! [`Sse`] and [`SseMulti`] are the two stream states.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use codec::http::{Method, RequestHead, ResponseHead, StatusCode};

use crate::hub::{
    ChannelName, Cursor, Epoch, Message, MsgId, Replay, Reset, ResetReason, SubRef, PENDING,
};
use crate::metrics::{Refusal, ShardMetrics};

use super::context::{compact_expiry, sooner_of, Context, Finish, Subscribe};
use super::cors::{self, Grant};
use super::framing::{self, Format};
use super::params;
use super::response::Refused;

/// What a valid SSE request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The channels, in request order, without duplicates.
    pub channels: Vec<ChannelName>,
    /// Where each channel resumes (`None`: from now on).
    pub positions: Vec<Option<MsgId>>,
    /// A `HEAD` request: the response head only.
    pub head_only: bool,
    /// What the request's origin is granted (set by the router).
    pub cors: Grant,
    /// When the client's token expires, seconds since the epoch (set by
    /// the router when the node checks tokens).
    pub expires: Option<u64>,
    /// Per channel, a durable subscription (`?durable=1`, or a durable
    /// namespace, with a token naming a `sub`; set by the router): whose
    /// cursor. A channel without a position then resumes from its cursor.
    /// Empty when none is durable.
    pub durable: Vec<Option<Cursor>>,
}

/// Reads an SSE request: `GET /sse/{channel}` (`raw_channel`, the path's
/// last segment, percent-encoded) or `GET /sse?ch=a,b` (`None`).
///
/// The resume position is `?since=`, or else `Last-Event-ID`: an id for a
/// one-channel stream, the composite cursor for several.
pub fn plan(
    head: &RequestHead<'_>,
    raw_channel: Option<&str>,
    max_channels: usize,
) -> Result<Plan, Refused> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return Err(Refused::new(
            Refusal::BadRequest,
            StatusCode::METHOD_NOT_ALLOWED,
            "event streams use GET",
        ));
    }
    let channels = match raw_channel {
        Some(raw) => {
            vec![ChannelName::from_path(raw).map_err(|r| Refused::bad(Refusal::BadChannel, r))?]
        }
        None => params::channel_list(head, max_channels, "/sse/{channel} or /sse?ch=a,b")
            .map_err(|r| Refused::bad(Refusal::BadChannel, r))?,
    };
    // A multi-channel stream names each event after its channel, and
    // `event:reset` is the reset signal: a channel of that name would be
    // read as one.
    if let Some(reserved) = (channels.len() > 1)
        .then(|| {
            channels
                .iter()
                .find(|c| matches!(c.as_str(), "reset" | "error"))
        })
        .flatten()
    {
        return Err(Refused::bad(
            Refusal::BadChannel,
            format!("a channel named {reserved} cannot share a stream (its events would read as the stream's own {reserved} events); use /sse/{reserved}"),
        ));
    }
    // ?since= wins over Last-Event-ID.
    let since = match head.query_param("since") {
        Ok(Some(s)) => Some(s.into_owned()),
        Ok(None) => head
            .headers
            .last_event_id
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        Err(e) => {
            return Err(Refused::bad(
                Refusal::BadSince,
                format!("invalid since: {e}"),
            ))
        }
    };
    let positions = match since {
        None => vec![None; channels.len()],
        Some(s) if s.contains(';') => {
            let list = params::parse_cursor(&s).map_err(|r| Refused::bad(Refusal::BadSince, r))?;
            params::positions(&list, &channels)
        }
        Some(s) if channels.len() == 1 => {
            vec![Some(s.parse::<MsgId>().map_err(|e| {
                Refused::bad(Refusal::BadSince, format!("invalid since: {e}"))
            })?)]
        }
        Some(_) => {
            return Err(Refused::bad(
                Refusal::BadSince,
                "a multi-channel stream resumes from its cursor <epoch>;<channel>=<seq>,…",
            ))
        }
    };
    Ok(Plan {
        channels,
        positions,
        head_only: head.method == Method::Head,
        cors: Grant::Plain,
        expires: None,
        durable: Vec::new(),
    })
}

/// A stream that started: one channel, several, or none (`HEAD`).
#[derive(Debug)]
pub enum Started {
    /// A one-channel stream.
    One(Sse),
    /// A multi-channel stream.
    Multi(Box<SseMulti>),
    /// A `HEAD` request, answered: finish after the flush.
    HeadOnly,
}

/// Answers the request with the stream's head and subscribes.
pub fn start(ctx: &mut impl Context, plan: Plan) -> Started {
    let mut out = BytesMut::with_capacity(256);
    let head = ResponseHead::new(&mut out, StatusCode::OK)
        .header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no");
    let head_ok = cors::headers(plan.cors, &ctx.settings().allowed_origins, head)
        .finish()
        .is_ok();
    debug_assert!(head_ok, "static header values");
    if plan.head_only {
        ctx.send(out.freeze());
        return Started::HeadOnly;
    }
    let retry = ctx
        .settings()
        .sse_retry
        .as_millis()
        .min(u128::from(u32::MAX)) as u32;
    codec::sse::retry(&mut out, retry);
    ctx.send(out.freeze());
    let expires = compact_expiry(plan.expires);
    set_timer(ctx, expires);
    if plan.channels.len() == 1 {
        let channel = plan.channels.into_iter().next().expect("one channel");
        let sub = ctx.subscribe(Subscribe {
            channel,
            format: Format::Sse,
            since: plan.positions[0],
            presence: None,
            deflate: None,
            durable: plan.durable.into_iter().next().flatten(),
        });
        return Started::One(Sse { sub, expires });
    }
    let mut stream = SseMulti {
        channels: Vec::with_capacity(plan.channels.len()),
        expires,
    };
    let mut durable = plan.durable.into_iter();
    for (channel, since) in plan.channels.into_iter().zip(plan.positions) {
        let sub = ctx.subscribe(Subscribe {
            channel: channel.clone(),
            format: Format::SseMulti,
            since,
            presence: None,
            deflate: None,
            durable: durable.next().flatten(),
        });
        stream.channels.push(StreamChannel {
            name: channel,
            sub,
            seq: since.map_or(PENDING, |id| id.seq),
            epoch: since.map_or_else(|| ctx.node_epoch(), |id| id.epoch),
        });
    }
    Started::Multi(Box::new(stream))
}

/// The event that ends a stream whose token expired (browsers' EventSource
/// fires it as an `error` event with this data; then the stream ends).
const TOKEN_EXPIRED: &[u8] =
    b"event:error\ndata:{\"type\":\"error\",\"code\":\"token_expired\",\"reason\":\"token expired\"}\n\n";

/// The next heartbeat, or the token's expiry if that comes first.
fn set_timer(ctx: &mut impl Context, expires: u32) {
    let expires = (expires != 0).then_some(u64::from(expires));
    let at = sooner_of(ctx, ctx.settings().sse_heartbeat, expires);
    ctx.set_timer(Some(at));
}

/// The timer: the token expired (say so; the stream ends), or a heartbeat
/// comment is due.
fn heartbeat(ctx: &mut impl Context, expires: u32) -> Option<Finish> {
    if expires != 0 && ctx.unix_time() >= u64::from(expires) {
        tracing::debug!("event stream ends: its token expired");
        ctx.send(Bytes::from_static(TOKEN_EXPIRED));
        return Some(Finish::AfterFlush);
    }
    ctx.send(Bytes::from_static(codec::sse::HEARTBEAT));
    set_timer(ctx, expires);
    None
}

/// A one-channel stream. Live deliveries are the shared encoding
/// ([`Format::Sse`]), queued by the fan-out.
#[derive(Debug)]
pub struct Sse {
    sub: SubRef,
    /// The token's expiry, seconds since the epoch (0: none).
    expires: u32,
}

impl Sse {
    /// The heartbeat is due, or the token's expiry.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Option<Finish> {
        heartbeat(ctx, self.expires)
    }

    /// The owner's answer: the reset signal and history, then live.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) {
        if at != self.sub || !ctx.accept_replay(at, &replay) {
            return;
        }
        let epoch = replay.epoch;
        if let Some(reset) = replay.reset {
            // When no history follows to move the stream's position, the
            // reset carries it.
            let id = replay.messages.is_empty().then(|| replay.end().to_string());
            ctx.send(framing::sse_reset(
                &replay.channel,
                &reset,
                epoch,
                id.as_deref(),
            ));
        }
        for m in &replay.messages {
            ctx.send_message(framing::sse_event(m), m.id.seq);
        }
        if replay.reset.is_none() && replay.messages.is_empty() {
            ctx.send(framing::sse_position(&replay.end().to_string()));
        }
        ShardMetrics::add(&ctx.metrics().deliveries, replay.messages.len() as u64);
    }

    /// The connection's output drained: catch up if behind.
    pub fn handle_drained(&mut self, ctx: &mut impl Context) {
        if self.sub != SubRef::NONE && ctx.needs_catch_up(self.sub) {
            ctx.catch_up(self.sub);
        }
    }

    /// The stream fell behind by more than `--max-lag`: drop what is
    /// queued, say so, and end (see [`lagging`]).
    pub fn handle_lagging(&mut self, ctx: &mut impl Context, at: SubRef) -> Finish {
        let undelivered = ctx.discard_output();
        let since = undelivered.map(|seq| seq - 1).or_else(|| ctx.cursor(at));
        lagging(ctx, at, since);
        Finish::AfterFlush
    }

    /// The connection is going away: leave the channel (once).
    pub fn release(&mut self, ctx: &mut impl Context) {
        let sub = std::mem::replace(&mut self.sub, SubRef::NONE);
        if sub != SubRef::NONE {
            ctx.unsubscribe(sub, None);
        }
    }
}

/// The end of a stream that fell behind by more than `--max-lag`:
/// `event: reset` with reason `lagging` and, as `since`, the last message
/// of channel `at` known delivered. It carries no `id:` line: the client's
/// own `Last-Event-ID` — what it really received — is where it resumes.
fn lagging(ctx: &mut impl Context, at: SubRef, since: Option<u64>) {
    let Some(channel) = ctx.channel(at) else {
        return;
    };
    let epoch = ctx.channel_epoch(at);
    let reset = Reset {
        reason: ResetReason::Lagging,
        since: MsgId {
            epoch,
            seq: since.unwrap_or(0),
        },
        missed: None,
    };
    ctx.send(framing::sse_reset(&channel, &reset, epoch, None));
}

/// One channel of a multi-channel stream.
#[derive(Debug)]
struct StreamChannel {
    name: ChannelName,
    sub: SubRef,
    /// Sequence number of the last message the stream sent, or of the
    /// position it resumed from; [`PENDING`] until known.
    seq: u64,
    /// The epoch `seq` is in.
    epoch: Epoch,
}

/// A stream of several channels, with its composite cursor.
#[derive(Debug)]
pub struct SseMulti {
    channels: Vec<StreamChannel>,
    /// The token's expiry, seconds since the epoch (0: none).
    expires: u32,
}

impl SseMulti {
    /// The composite cursor of the stream.
    fn cursor(&self, fallback: Epoch) -> String {
        let known = self.channels.iter().filter(|c| c.seq != PENDING);
        let position = |c: &StreamChannel| MsgId {
            epoch: c.epoch,
            seq: c.seq,
        };
        params::format_cursor(fallback, known.map(|c| (&c.name, position(c))))
    }

    /// The heartbeat is due, or the token's expiry.
    pub fn handle_timer(&mut self, ctx: &mut impl Context) -> Option<Finish> {
        heartbeat(ctx, self.expires)
    }

    /// The owner's answer for one channel of the stream.
    pub fn handle_replay(&mut self, ctx: &mut impl Context, at: SubRef, replay: Replay) {
        let Some(i) = self.channels.iter().position(|c| c.sub == at) else {
            return;
        };
        if !ctx.accept_replay(at, &replay) {
            return;
        }
        let epoch = ctx.node_epoch();
        self.channels[i].epoch = replay.epoch;
        if let Some(reset) = replay.reset {
            if replay.messages.is_empty() {
                self.channels[i].seq = replay.last_seq;
            }
            let id = replay.messages.is_empty().then(|| self.cursor(epoch));
            ctx.send(framing::sse_reset(
                &replay.channel,
                &reset,
                replay.epoch,
                id.as_deref(),
            ));
        }
        for m in &replay.messages {
            self.channels[i].seq = m.id.seq;
            ctx.send(Bytes::from(format!("id:{}\n", self.cursor(epoch))));
            ctx.send_message(framing::sse_multi_body(m), m.id.seq);
        }
        if replay.is_complete() {
            self.channels[i].seq = replay.last_seq;
        }
        if replay.reset.is_none() && replay.messages.is_empty() {
            ctx.send(framing::sse_position(&self.cursor(epoch)));
        }
        ShardMetrics::add(&ctx.metrics().deliveries, replay.messages.len() as u64);
    }

    /// A live message; `body` is [`framing::sse_multi_body`] of it, shared
    /// by every stream on the shard.
    pub fn handle_delivery(&mut self, ctx: &mut impl Context, msg: &Arc<Message>, body: Bytes) {
        if msg.is_stored() {
            let epoch = ctx.node_epoch();
            let Some(c) = self.channels.iter_mut().find(|c| c.name == msg.channel) else {
                return;
            };
            c.seq = msg.id.seq;
            c.epoch = msg.id.epoch;
            ctx.send(Bytes::from(format!("id:{}\n", self.cursor(epoch))));
        }
        ctx.send(body);
        ShardMetrics::add(&ctx.metrics().deliveries, 1);
    }

    /// The connection's output drained: channels that fell behind catch up.
    pub fn handle_drained(&mut self, ctx: &mut impl Context) {
        for c in &self.channels {
            if ctx.needs_catch_up(c.sub) {
                ctx.catch_up(c.sub);
            }
        }
    }

    /// Channel `at` fell behind by more than `--max-lag`: drop what is
    /// queued, say so, and end. Which events of each channel the client
    /// received is not known here; its `Last-Event-ID` (the composite
    /// cursor of the last event it got) resumes every channel exactly.
    pub fn handle_lagging(&mut self, ctx: &mut impl Context, at: SubRef) -> Finish {
        ctx.discard_output();
        let since = self
            .channels
            .iter()
            .find(|c| c.sub == at)
            .map(|c| c.seq)
            .filter(|&seq| seq != PENDING);
        lagging(ctx, at, since);
        Finish::AfterFlush
    }

    /// The connection is going away: leave every channel.
    pub fn release(&mut self, ctx: &mut impl Context) {
        for c in self.channels.drain(..) {
            ctx.unsubscribe(c.sub, None);
        }
    }
}

/// The node shuts down: the stream ends with a `retry:` hint — come back
/// after `--sse-retry` plus up to as much again, spread by connection, so
/// that a node's readers do not all reconnect to the next node in the same
/// instant — once it is flushed (within `--close-timeout`).
pub fn shutdown(ctx: &mut impl Context) -> Finish {
    let base = ctx
        .settings()
        .sse_retry
        .as_millis()
        .min(u128::from(u32::MAX / 2)) as u64;
    let spread = (ctx.client_id().0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % (base + 1);
    let mut out = BytesMut::with_capacity(24);
    codec::sse::retry(&mut out, (base + spread) as u32);
    ctx.send(out.freeze());
    Finish::AfterFlush
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let epoch = Epoch::from_bits(0xabc);
        let ch = |n: &str, seq| StreamChannel {
            name: ChannelName::new(n).unwrap(),
            sub: SubRef { chan: 0, sub: 0 },
            seq,
            epoch,
        };
        let stream = SseMulti {
            channels: vec![ch("a", 5), ch("b:c", PENDING), ch("x@y.z", 9)],
            expires: 0,
        };
        let c = stream.cursor(epoch);
        assert_eq!(c, "000000000abc;a=5,x@y.z=9");
        let parsed = params::parse_cursor(&c).unwrap();
        assert_eq!(parsed[0], ("a".into(), MsgId { epoch, seq: 5 }));
        assert_eq!(parsed[1], ("x@y.z".into(), MsgId { epoch, seq: 9 }));
        assert!(params::parse_cursor("nope").is_err());
        assert!(params::parse_cursor("000000000abc;a").is_err());
        assert!(params::parse_cursor("000000000abc;a=x").is_err());
        assert_eq!(params::parse_cursor("000000000abc;").unwrap(), []);
    }
}
