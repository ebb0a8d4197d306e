//! Server-Sent Events: `GET /sse/{channel}` and `GET /sse?ch=a,b,c`.
//!
//! The response is `200` with `Content-Type: text/event-stream`,
//! `Cache-Control: no-cache` and `X-Accel-Buffering: no` (so nginx does not
//! buffer it), has no length, and lasts until either side closes. It starts
//! with a `retry:` hint (`--sse-retry`); idle streams get a `:` comment line
//! every `--sse-heartbeat`.
//!
//! # Events
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
//!
//! Resume comes from `Last-Event-ID` or `?since=` (same syntax).

use bytes::{Bytes, BytesMut};
use codec::http::{query, Method, RequestHead, ResponseHead, StatusCode};
use codec::sse::Event as SseEvent;
use codec::ws::DataKind;
use std::fmt::Write as _;

use crate::hub::{ChannelName, Epoch, Format, Message, MsgId, Replay, Reset, PENDING};
use crate::metrics::Refusal;
use crate::shard::conn::{ConnKey, Phase};
use crate::shard::{Session, Shard, Shared};

/// A multi-channel stream's subscriptions and positions.
#[derive(Debug)]
pub struct MultiStream {
    /// One entry per channel, in request order.
    pub channels: Vec<StreamChannel>,
}

/// One channel of a multi-channel stream.
#[derive(Debug)]
pub struct StreamChannel {
    /// The channel.
    pub name: ChannelName,
    /// Hub channel.
    pub chan: u32,
    /// Hub subscription.
    pub sub: u32,
    /// Sequence number of the last message the stream sent, or of the
    /// position it resumed from; [`PENDING`] until known.
    pub seq: u64,
}

/// A message as an event of a one-channel stream.
pub fn single_event(msg: &Message) -> Bytes {
    let id = msg.is_stored().then(|| msg.id.to_string());
    let event = SseEvent {
        id: id.as_deref(),
        event: (msg.kind == DataKind::Binary).then_some("binary"),
        data: &super::payload_text(msg),
        retry: None,
    };
    event
        .to_bytes()
        .expect("ids and event names never contain line breaks")
}

/// A message as the shared part of a multi-channel event (no `id:`).
pub fn multi_event_body(msg: &Message) -> Bytes {
    let name = match msg.kind {
        DataKind::Text => msg.channel.as_str().to_owned(),
        DataKind::Binary => format!("{};binary", msg.channel),
    };
    let event = SseEvent {
        id: None,
        event: Some(&name),
        data: &super::payload_text(msg),
        retry: None,
    };
    event
        .to_bytes()
        .expect("channel names never contain line breaks")
}

/// The `event:reset` of a lost position. `id` sets the stream's position
/// when no history follows to do it.
pub fn reset_event(
    channel: &ChannelName,
    reset: &Reset,
    epoch: Epoch,
    last_seq: Option<u64>,
) -> Bytes {
    let id = last_seq.map(|seq| MsgId { epoch, seq }.to_string());
    reset_event_with_id(channel, reset, epoch, id.as_deref())
}

fn reset_event_with_id(
    channel: &ChannelName,
    reset: &Reset,
    epoch: Epoch,
    id: Option<&str>,
) -> Bytes {
    let data = serde_json::json!({
        "ch": channel.as_str(),
        "reason": reset.reason.as_str(),
        "since": reset.since.to_string(),
        "missed": reset.missed,
        "epoch": epoch.to_string(),
    })
    .to_string();
    SseEvent {
        id,
        event: Some("reset"),
        data: &data,
        retry: None,
    }
    .to_bytes()
    .expect("ids never contain line breaks")
}

/// Parses a composite cursor `<epoch>;<ch>=<seq>,…` into per-channel ids.
pub fn parse_cursor(s: &str) -> Result<Vec<(String, MsgId)>, String> {
    let bad = || format!("invalid stream cursor {s:?}: expected <epoch>;<channel>=<seq>,…");
    let (epoch, rest) = s.split_once(';').ok_or_else(bad)?;
    let mut out = Vec::new();
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        let (ch, seq) = part.rsplit_once('=').ok_or_else(bad)?;
        let id: MsgId = format!("{epoch}-{seq}").parse().map_err(|_| bad())?;
        out.push((ch.to_string(), id));
    }
    Ok(out)
}

impl MultiStream {
    /// The composite cursor of the stream.
    fn cursor(&self, epoch: Epoch) -> String {
        let mut s = format!("{epoch};");
        let mut first = true;
        for c in self.channels.iter().filter(|c| c.seq != PENDING) {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "{}={}", c.name, c.seq);
        }
        s
    }
}

impl Shard {
    /// `GET /sse/{channel}` (`raw_channel` is the path's last segment) or
    /// `GET /sse?ch=a,b,c` (`None`).
    pub(crate) fn start_sse(
        &mut self,
        key: ConnKey,
        head: &RequestHead<'_>,
        raw_channel: Option<&str>,
    ) {
        if !matches!(head.method, Method::Get | Method::Head) {
            return self.refuse(
                key,
                Refusal::BadRequest,
                StatusCode::METHOD_NOT_ALLOWED,
                "event streams use GET",
            );
        }
        let names: Vec<String> = match raw_channel {
            Some(raw) => vec![raw.to_string()],
            None => match head.query_param("ch") {
                Ok(Some(list)) => list
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                Ok(None) => Vec::new(),
                Err(e) => {
                    return self.refuse(
                        key,
                        Refusal::BadChannel,
                        StatusCode::BAD_REQUEST,
                        &format!("invalid ch: {e}"),
                    )
                }
            },
        };
        let mut channels: Vec<ChannelName> = Vec::new();
        for raw in &names {
            let decoded = if raw_channel.is_some() {
                query::percent_decode(raw).map(|c| c.into_owned())
            } else {
                Ok(raw.clone())
            };
            match decoded
                .map_err(|e| e.to_string())
                .and_then(|n| ChannelName::new(&n).map_err(|e| e.to_string()))
            {
                Ok(c) if !channels.contains(&c) => channels.push(c),
                Ok(_) => {}
                Err(reason) => {
                    return self.refuse(key, Refusal::BadChannel, StatusCode::BAD_REQUEST, &reason)
                }
            }
        }
        let max = self.settings().max_stream_channels;
        if channels.is_empty() {
            return self.refuse(
                key,
                Refusal::BadChannel,
                StatusCode::BAD_REQUEST,
                "name at least one channel: /sse/{channel} or /sse?ch=a,b",
            );
        }
        if channels.len() > max {
            let reason = format!("at most {max} channels per stream");
            return self.refuse(key, Refusal::BadChannel, StatusCode::BAD_REQUEST, &reason);
        }
        // Resume position: ?since= wins over Last-Event-ID.
        let since_raw = match head.query_param("since") {
            Ok(Some(s)) => Some(s.into_owned()),
            Ok(None) => head
                .headers
                .last_event_id
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            Err(e) => {
                return self.refuse(
                    key,
                    Refusal::BadSince,
                    StatusCode::BAD_REQUEST,
                    &format!("invalid since: {e}"),
                )
            }
        };
        let positions: Vec<Option<MsgId>> = match since_raw {
            None => vec![None; channels.len()],
            Some(s) if s.contains(';') => match parse_cursor(&s) {
                Ok(list) => channels
                    .iter()
                    .map(|c| {
                        list.iter()
                            .find(|(n, _)| n == c.as_str())
                            .map(|(_, id)| *id)
                    })
                    .collect(),
                Err(reason) => {
                    return self.refuse(key, Refusal::BadSince, StatusCode::BAD_REQUEST, &reason)
                }
            },
            Some(s) if channels.len() == 1 => match s.parse::<MsgId>() {
                Ok(id) => vec![Some(id)],
                Err(e) => {
                    return self.refuse(
                        key,
                        Refusal::BadSince,
                        StatusCode::BAD_REQUEST,
                        &format!("invalid since: {e}"),
                    )
                }
            },
            Some(_) => {
                return self.refuse(
                    key,
                    Refusal::BadSince,
                    StatusCode::BAD_REQUEST,
                    "a multi-channel stream resumes from its cursor <epoch>;<channel>=<seq>,…",
                )
            }
        };

        let mut out = BytesMut::with_capacity(256);
        let head_ok = ResponseHead::new(&mut out, StatusCode::OK)
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Accel-Buffering", "no")
            .finish()
            .is_ok();
        debug_assert!(head_ok);
        if head.method == Method::Head {
            self.send(key, out.freeze());
            self.close_after_flush(key);
            return;
        }
        let retry = self
            .settings()
            .sse_retry
            .as_millis()
            .min(u128::from(u32::MAX)) as u32;
        codec::sse::retry(&mut out, retry);
        self.send(key, out.freeze());
        self.set_phase(key, Phase::Sse);
        let heartbeat = Shared::ticks(self.settings().sse_heartbeat);
        self.set_deadline(key, self.tick + heartbeat);

        if channels.len() == 1 {
            let channel = channels.pop().expect("one channel");
            let (chan, sub) = self.hub.add_sub(&channel, key, Format::Sse);
            if let Some(conn) = self.io.conn_mut(key) {
                conn.chan = chan;
                conn.sub = sub;
            }
            self.request_replay(key, channel, chan, sub, positions[0], None);
            return;
        }
        let mut stream = MultiStream {
            channels: Vec::with_capacity(channels.len()),
        };
        for (channel, since) in channels.iter().zip(&positions) {
            let (chan, sub) = self.hub.add_sub(channel, key, Format::SseMulti);
            stream.channels.push(StreamChannel {
                name: channel.clone(),
                chan,
                sub,
                seq: since.map_or(PENDING, |id| id.seq),
            });
        }
        self.sessions.insert(key, Session::SseMulti(stream));
        for ((channel, since), c) in channels.into_iter().zip(positions).zip(0..) {
            let (chan, sub) = match self.sessions.get(&key) {
                Some(Session::SseMulti(s)) => (s.channels[c].chan, s.channels[c].sub),
                _ => return,
            };
            self.request_replay(key, channel, chan, sub, since, None);
        }
    }

    fn multi_stream(&mut self, key: ConnKey) -> Option<&mut MultiStream> {
        match self.sessions.get_mut(&key) {
            Some(Session::SseMulti(s)) => Some(s),
            _ => None,
        }
    }

    /// A live message for a multi-channel stream.
    pub(crate) fn sse_multi_deliver(&mut self, key: ConnKey, msg: &Message, body: Bytes) {
        let epoch = self.hub.epoch();
        let Some(stream) = self.multi_stream(key) else {
            return;
        };
        if msg.is_stored() {
            let Some(c) = stream.channels.iter_mut().find(|c| c.name == msg.channel) else {
                return;
            };
            c.seq = msg.id.seq;
            let id_line = Bytes::from(format!("id:{}\n", stream.cursor(epoch)));
            self.send(key, id_line);
        }
        self.send(key, body);
        crate::metrics::ShardMetrics::add(&self.io.metrics.deliveries, 1);
    }

    /// The owner's answer for one channel of a multi-channel stream.
    pub(crate) fn sse_multi_replay(&mut self, key: ConnKey, channel: &ChannelName, replay: Replay) {
        let epoch = self.hub.epoch();
        let Some(stream) = self.multi_stream(key) else {
            return;
        };
        let Some(i) = stream.channels.iter().position(|c| &c.name == channel) else {
            return;
        };
        let mut out: Vec<Bytes> = Vec::new();
        if let Some(reset) = replay.reset {
            if replay.messages.is_empty() {
                stream.channels[i].seq = replay.last_seq;
            }
            let id = replay.messages.is_empty().then(|| stream.cursor(epoch));
            out.push(reset_event_with_id(channel, &reset, epoch, id.as_deref()));
        }
        for m in &replay.messages {
            stream.channels[i].seq = m.id.seq;
            out.push(Bytes::from(format!("id:{}\n", stream.cursor(epoch))));
            out.push(multi_event_body(m));
        }
        stream.channels[i].seq = replay.last_seq;
        let n = replay.messages.len() as u64;
        for b in out {
            self.send(key, b);
        }
        crate::metrics::ShardMetrics::add(&self.io.metrics.deliveries, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let epoch = Epoch::from_bits(0xabc);
        let stream = MultiStream {
            channels: vec![
                StreamChannel {
                    name: ChannelName::new("a").unwrap(),
                    chan: 0,
                    sub: 0,
                    seq: 5,
                },
                StreamChannel {
                    name: ChannelName::new("b:c").unwrap(),
                    chan: 1,
                    sub: 0,
                    seq: PENDING,
                },
                StreamChannel {
                    name: ChannelName::new("x@y.z").unwrap(),
                    chan: 2,
                    sub: 0,
                    seq: 9,
                },
            ],
        };
        let c = stream.cursor(epoch);
        assert_eq!(c, "000000000abc;a=5,x@y.z=9");
        let parsed = parse_cursor(&c).unwrap();
        assert_eq!(parsed[0], ("a".into(), MsgId { epoch, seq: 5 }));
        assert_eq!(parsed[1], ("x@y.z".into(), MsgId { epoch, seq: 9 }));
        assert!(parse_cursor("nope").is_err());
        assert!(parse_cursor("000000000abc;a").is_err());
        assert!(parse_cursor("000000000abc;a=x").is_err());
        assert_eq!(parse_cursor("000000000abc;").unwrap(), []);
    }
}
