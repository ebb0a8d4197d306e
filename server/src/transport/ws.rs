//! WebSocket: `/ws/{channel}` subscribers and the `/echo` endpoint.
//!
//! # `/ws/{channel}`
//! Query parameters:
//! * `since=ID` — resume: first every message after `ID` still in history,
//!   then live, with no gap and no duplicate at the seam.
//! * `format=raw` (default) — each message is one frame holding exactly the
//!   published payload: a text frame for text, a binary frame otherwise.
//! * `format=json` — each message is a text frame
//!   `{"type":"message","channel":…,"id":…,"data":…}` (binary payloads as
//!   base64 with `"encoding":"base64"`), so the client learns the ids it
//!   needs to resume.
//!
//! When `since` can no longer be honoured (evicted from history, another
//! epoch, unknown) the first frame, in either format, is a JSON text frame
//! `{"type":"reset","channel":…,"reason":"evicted"|"epoch"|"unknown",
//! "since":…,"missed":N|null,"epoch":…}`, followed by everything history
//! still has, then live messages.
//!
//! Messages sent by a subscriber are validated (a protocol violation closes
//! the connection with its code) and otherwise ignored: this endpoint is
//! subscribe-only.
//!
//! # Heartbeats and closing
//! A ping goes out every `--ping-interval`; a connection from which nothing
//! (pong or otherwise) arrived for two intervals is closed without a close
//! frame — the peer is gone, and clients observe 1006. The server's own
//! closes carry a code: 1001 on shutdown, 1008 for a slow consumer, the
//! protocol error's code (1002, 1007, 1009) for a violation. A peer's close
//! is answered with its own code, then the server closes TCP.

use bytes::{Bytes, BytesMut};
use codec::http::{RequestHead, StatusCode};
use codec::ws::{
    encode, handshake, CloseHandshake, Frame, FrameDecoder, PeerClosed, ProtocolError,
};
use codec::Status;

use crate::hub::mail::Mail;
use crate::hub::{ChannelName, ClientId, Epoch, Format, MsgId, Reset};
use crate::metrics::{Refusal, ShardMetrics};
use crate::shard::conn::{flags, ConnKey, Phase};
use crate::shard::{Shard, Shared, Step};

impl Shard {
    /// `GET /ws/{channel}`.
    pub(crate) fn upgrade_subscribe(
        &mut self,
        key: ConnKey,
        head: &RequestHead<'_>,
        raw_channel: &str,
    ) {
        let channel = match ChannelName::from_path(raw_channel) {
            Ok(c) => c,
            Err(reason) => {
                return self.refuse(key, Refusal::BadChannel, StatusCode::BAD_REQUEST, &reason)
            }
        };
        let format = match head.query_param("format") {
            Ok(None) => Format::WsRaw,
            Ok(Some(f)) if f == "raw" => Format::WsRaw,
            Ok(Some(f)) if f == "json" => Format::WsJson,
            _ => {
                return self.refuse(
                    key,
                    Refusal::BadRequest,
                    StatusCode::BAD_REQUEST,
                    "format must be raw or json",
                )
            }
        };
        let since = match super::since_param(head) {
            Ok(since) => since,
            Err(reason) => {
                return self.refuse(key, Refusal::BadSince, StatusCode::BAD_REQUEST, &reason)
            }
        };
        if !self.accept_upgrade(key, head) {
            return;
        }
        self.set_phase(key, Phase::WsSub);
        if let Some(conn) = self.io.conn_mut(key) {
            if format == Format::WsJson {
                conn.flags |= flags::JSON;
            }
        }
        let (chan, sub) = self.hub.add_sub(&channel, key, format);
        if let Some(conn) = self.io.conn_mut(key) {
            conn.chan = chan;
            conn.sub = sub;
        }
        self.request_replay(key, channel, chan, sub, since, None);
    }

    /// `GET /echo`.
    pub(crate) fn upgrade_echo(&mut self, key: ConnKey, head: &RequestHead<'_>) {
        if !self.accept_upgrade(key, head) {
            return;
        }
        self.set_phase(key, Phase::WsEcho);
    }

    /// Validates the handshake and sends the `101`, or the error response.
    pub(crate) fn accept_upgrade(&mut self, key: ConnKey, head: &RequestHead<'_>) -> bool {
        match handshake::validate(head, &[]) {
            Ok(accepted) => {
                let mut out = BytesMut::with_capacity(160);
                accepted.write_response(&mut out);
                self.send(key, out.freeze());
                ShardMetrics::add(&self.metrics().upgrades, 1);
                let interval = Shared::ticks(self.settings().ping_interval);
                self.set_deadline(key, self.tick + interval);
                true
            }
            Err(e) => {
                self.metrics().refuse(Refusal::Handshake);
                tracing::debug!(shard = self.id, "refused WebSocket handshake: {e}");
                let mut out = BytesMut::new();
                e.write_response(&mut out);
                self.send(key, out.freeze());
                self.close_after_flush(key);
                false
            }
        }
    }

    /// Refuses a request with a plain-text reason and closes after it.
    pub(crate) fn refuse(&mut self, key: ConnKey, why: Refusal, status: StatusCode, reason: &str) {
        self.metrics().refuse(why);
        tracing::debug!(
            shard = self.id,
            "refused request: {} {reason}",
            status.code()
        );
        self.respond_error(key, status, reason, &[], true);
    }

    /// Asks the channel's owner for a new subscription's replay (answered
    /// by `apply_replay`), registering `client` in its presence.
    pub(crate) fn request_replay(
        &mut self,
        key: ConnKey,
        channel: ChannelName,
        chan: u32,
        sub: u32,
        since: Option<MsgId>,
        client: Option<ClientId>,
    ) {
        let owner = self.hub.owner(&channel);
        if owner == self.id {
            let replay = self.hub.owner_subscribe(&channel, self.id, since);
            self.apply_replay(key, chan, sub, replay);
            if let Some(client) = client {
                self.presence_joined(&channel, client);
            }
        } else {
            self.mail_to(
                owner,
                Mail::Subscribe {
                    from: self.id,
                    conn: key,
                    chan,
                    sub,
                    channel,
                    since,
                    client,
                },
            );
        }
    }

    /// Bytes arriving on a WebSocket.
    pub(crate) fn on_ws_input(&mut self, key: ConnKey, buf: &mut [u8]) -> Step {
        let config = self.decoder;
        let mut dec = self
            .io
            .conn_mut(key)
            .and_then(|c| c.ext.as_mut())
            .and_then(|e| e.decoder.take())
            .unwrap_or_else(|| FrameDecoder::new(config));
        let mut pos = 0;
        loop {
            match dec.decode(&mut buf[pos..]) {
                Ok(Status::Partial) => break,
                Ok(Status::Complete((n, frame))) => {
                    pos += n;
                    if !self.on_frame(key, frame) {
                        return Step::Discard;
                    }
                }
                Err(e) => {
                    self.ws_protocol_error(key, e);
                    return Step::Discard;
                }
            }
        }
        if !dec.is_idle() {
            if let Some(conn) = self.io.conn_mut(key) {
                conn.ext().decoder = Some(dec);
            }
        }
        Step::Wait(pos)
    }

    /// Handles one frame; `false` when the connection stops reading.
    fn on_frame(&mut self, key: ConnKey, frame: Frame<'_>) -> bool {
        let Some(phase) = self.io.conn(key).map(|c| c.phase) else {
            return false;
        };
        match frame {
            Frame::Data {
                kind,
                payload,
                last,
                ..
            } => {
                if matches!(phase, Phase::WsEcho | Phase::WsMux) {
                    let message = self
                        .io
                        .conn_mut(key)
                        .and_then(|c| c.ext().assembler.push(kind, payload, last));
                    if let Some(m) = message {
                        if phase == Phase::WsEcho {
                            self.send(key, encode::message(m.kind, &m.payload));
                        } else {
                            self.on_mux_message(key, m.kind, &m.payload);
                        }
                    }
                }
                true
            }
            Frame::Ping(payload) => {
                if phase != Phase::Closing {
                    let mut out = BytesMut::with_capacity(2 + payload.len());
                    if encode::pong(&mut out, payload).is_ok() {
                        self.send(key, out.freeze());
                    }
                }
                true
            }
            Frame::Pong(_) => true,
            Frame::Close(close) => {
                let mut hs = CloseHandshake::new();
                if phase == Phase::Closing {
                    let _ = hs.initiate();
                }
                match hs.receive(close) {
                    PeerClosed::Reply(code) => {
                        self.detach(key);
                        let mut out = BytesMut::with_capacity(4);
                        let _ = encode::close(&mut out, code, "");
                        self.send(key, out.freeze());
                        self.close_after_flush(key);
                    }
                    PeerClosed::Complete => self.close_after_flush(key),
                    PeerClosed::Ignore => {}
                }
                false
            }
        }
    }

    fn ws_protocol_error(&mut self, key: ConnKey, e: ProtocolError) {
        ShardMetrics::add(&self.metrics().protocol_errors, 1);
        tracing::debug!(
            shard = self.id,
            "closing WebSocket after a protocol violation: {e}"
        );
        let Some(phase) = self.io.conn(key).map(|c| c.phase) else {
            return;
        };
        self.detach(key);
        if phase != Phase::Closing {
            let mut out = BytesMut::with_capacity(4 + e.reason().len());
            let _ = encode::close(&mut out, Some(e.close_code()), e.reason());
            self.send(key, out.freeze());
        }
        self.close_after_flush(key);
    }
}

/// The reset signal as a JSON text frame.
pub fn reset_frame(channel: &ChannelName, reset: &Reset, epoch: Epoch) -> Bytes {
    let v = serde_json::json!({
        "type": "reset",
        "ch": channel.as_str(),
        "reason": reset.reason.as_str(),
        "since": reset.since.to_string(),
        "missed": reset.missed,
        "epoch": epoch.to_string(),
    });
    super::mux::text_frame(&v)
}
