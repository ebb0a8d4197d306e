//! Fan-out: from a published message (or an owner's replay) to the bytes
//! each local subscriber receives, in its transport's format.
//!
//! Per message and shard, each shared format is encoded at most once — the
//! WebSocket frame, the JSON envelope, the one-channel SSE event, the body
//! of a multi-channel SSE event — and every subscriber's queue gets a
//! reference to the same bytes. Only two formats need per-connection work:
//! a multi-channel SSE stream's id line (its composite cursor) and a held
//! long poll's response head (its body is shared too); the poll then leaves
//! the channel.

use std::sync::Arc;

use bytes::Bytes;

use super::conn::ConnKey;
use super::Shard;
use crate::hub::{Format, Message, Replay};
use crate::metrics::ShardMetrics;
use crate::shard::io::Queued;
use crate::transport::{mux, poll, sse, ws};

/// Encodings of one message, made on first use.
#[derive(Default)]
struct Encoded {
    raw: Option<Bytes>,
    json: Option<Bytes>,
    sse: Option<Bytes>,
    sse_body: Option<Bytes>,
    poll_body: Option<Bytes>,
}

impl Shard {
    /// Sends a message to this shard's subscribers of its channel. `local`
    /// is true on the owner, whose frame is used as is; other shards copy it
    /// once so that the reference counts every subscriber touches stay on
    /// this core.
    pub(crate) fn deliver(&mut self, msg: &Arc<Message>, local: bool) {
        let Some(chan) = self.hub.local_channel(&msg.channel) else {
            return;
        };
        let mut enc = Encoded::default();
        let mut later: Vec<(ConnKey, Format)> = Vec::new();
        let mut overflow = Vec::new();
        let mut delivered = 0u64;
        for s in self.hub.subs(chan) {
            if !s.format.wants(msg.event) || s.live_after == crate::hub::PENDING {
                continue;
            }
            if msg.is_stored() && s.live_after >= msg.id.seq {
                continue; // already covered by the subscriber's replay
            }
            let bytes = match s.format {
                Format::WsRaw => enc
                    .raw
                    .get_or_insert_with(|| {
                        if local {
                            msg.ws_frame.clone()
                        } else {
                            Bytes::copy_from_slice(&msg.ws_frame)
                        }
                    })
                    .clone(),
                Format::WsJson | Format::Mux => enc
                    .json
                    .get_or_insert_with(|| mux::message_frame(msg))
                    .clone(),
                Format::Sse => enc
                    .sse
                    .get_or_insert_with(|| sse::single_event(msg))
                    .clone(),
                Format::SseMulti | Format::Poll => {
                    later.push((s.conn, s.format));
                    continue;
                }
            };
            match self.io.queue(s.conn, bytes) {
                Queued::Ok => delivered += 1,
                Queued::Overflow => overflow.push(s.conn),
                Queued::Gone => {}
            }
        }
        ShardMetrics::add(&self.io.metrics.deliveries, delivered);
        for (key, format) in later {
            match format {
                Format::SseMulti => {
                    let body = enc
                        .sse_body
                        .get_or_insert_with(|| sse::multi_event_body(msg))
                        .clone();
                    self.sse_multi_deliver(key, msg, body);
                }
                _ => {
                    let body = enc
                        .poll_body
                        .get_or_insert_with(|| poll::single_message_body(msg))
                        .clone();
                    self.poll_deliver(key, msg, &body);
                }
            }
        }
        for key in overflow {
            self.slow_consumer(key);
        }
    }

    /// The owner's answer to a subscription: the reset signal and history a
    /// new subscriber must see first; then it goes live.
    pub(crate) fn apply_replay(&mut self, key: ConnKey, chan: u32, sub: u32, replay: Replay) {
        let Some(format) = self
            .hub
            .sub(chan, sub)
            .filter(|s| s.conn == key)
            .map(|s| s.format)
        else {
            return;
        };
        if self.io.conn(key).is_none() {
            return;
        }
        if format == Format::Poll {
            // A poll answers with what it found, or waits for the next message.
            self.poll_replayed(key, chan, sub, replay);
            return;
        }
        if !self.hub.set_live(chan, sub, key, replay.last_seq) {
            return;
        }
        let channel = self
            .hub
            .channel_name(chan)
            .expect("the subscription's channel exists");
        if format == Format::Mux {
            self.mux_subscribed(key, &channel);
        }
        if format == Format::SseMulti {
            self.sse_multi_replay(key, &channel, replay);
            return;
        }
        if let Some(reset) = replay.reset {
            let bytes = match format {
                Format::Sse => sse::reset_event(
                    &channel,
                    &reset,
                    self.hub.epoch(),
                    replay.messages.is_empty().then_some(replay.last_seq),
                ),
                _ => ws::reset_frame(&channel, &reset, self.hub.epoch()),
            };
            self.send(key, bytes);
        }
        let n = replay.messages.len() as u64;
        for m in &replay.messages {
            let bytes = match format {
                Format::WsRaw => m.ws_frame.clone(),
                Format::Sse => sse::single_event(m),
                _ => mux::message_frame(m),
            };
            self.send(key, bytes);
        }
        ShardMetrics::add(&self.io.metrics.deliveries, n);
    }
}
