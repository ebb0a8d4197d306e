//! The multiplexed WebSocket protocol on `GET /ws`: one JSON object per
//! text frame, many channels per connection. docs/protocol.md is the
//! reference; in short:
//!
//! | Client sends | Server answers |
//! |---|---|
//! | `{"type":"subscribe","ch":"c","since":"<id>"?}` | `subscribed`, then `reset`? and history, then live `message`s |
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
//! in a row it is closed with 1008.

use bytes::Bytes;
use codec::http::RequestHead;
use codec::ws::{encode, CloseCode, DataKind};
use hashbrown::HashMap;
use serde_json::{json, Value};

use crate::hub::mail::{Mail, PublishItem, ReplyTo};
use crate::hub::{ChannelName, ClientId, Event, Format, Message, MsgId};
use crate::shard::conn::{ConnKey, Phase};
use crate::shard::{Session, Shard};

/// Invalid commands in a row after which the connection is closed.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 10;

/// What a multiplexed connection keeps between commands.
#[derive(Debug)]
pub struct MuxSession {
    client: ClientId,
    /// Subscriptions by channel: hub indices and the `rid` of the
    /// `subscribe` until it is answered.
    subs: HashMap<ChannelName, MuxSub>,
    /// Answers awaited from other shards, by token.
    pending: HashMap<u32, Pending>,
    errors: u32,
}

#[derive(Debug)]
struct MuxSub {
    chan: u32,
    sub: u32,
    rid: Option<Value>,
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
}

/// A message as the JSON envelope shared by `/ws` and `/ws/{ch}?format=json`.
pub fn message_frame(msg: &Message) -> Bytes {
    let ch = msg.channel.as_str();
    let v = match msg.event {
        Event::Joined(c) => json!({"type": "joined", "ch": ch, "client": c.to_string()}),
        Event::Left(c) => json!({"type": "left", "ch": ch, "client": c.to_string()}),
        Event::Stored | Event::Ephemeral => {
            let id = msg.is_stored().then(|| msg.id.to_string());
            let mut v = json!({"type": "message", "ch": ch, "id": id});
            super::set_payload(&mut v, msg);
            if !msg.is_stored() {
                v["ephemeral"] = Value::Bool(true);
            }
            v
        }
    };
    text_frame(&v)
}

/// A JSON value as one text frame.
pub(crate) fn text_frame(v: &Value) -> Bytes {
    let text = serde_json::to_vec(v).expect("JSON values serialize");
    encode::message(DataKind::Text, &text)
}

fn with_rid(mut v: Value, rid: Option<Value>) -> Value {
    if let Some(rid) = rid {
        v["rid"] = rid;
    }
    v
}

/// A command refused, with the code and reason sent back.
struct Refused(&'static str, String);

fn refused(code: &'static str, reason: impl Into<String>) -> Refused {
    Refused(code, reason.into())
}

impl Shard {
    /// `GET /ws`.
    pub(crate) fn upgrade_mux(&mut self, key: ConnKey, head: &RequestHead<'_>) {
        if !self.accept_upgrade(key, head) {
            return;
        }
        self.set_phase(key, Phase::WsMux);
        let session = MuxSession {
            client: ClientId::of(self.id, key),
            subs: HashMap::new(),
            pending: HashMap::new(),
            errors: 0,
        };
        self.sessions.insert(key, Session::Mux(session));
    }

    fn mux(&mut self, key: ConnKey) -> Option<&mut MuxSession> {
        match self.sessions.get_mut(&key) {
            Some(Session::Mux(m)) => Some(m),
            _ => None,
        }
    }

    fn mux_send(&mut self, key: ConnKey, v: Value) {
        self.send(key, text_frame(&v));
    }

    /// A complete data message from a multiplexed client.
    pub(crate) fn on_mux_message(&mut self, key: ConnKey, kind: DataKind, payload: &[u8]) {
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
                    let r = self.mux_command(key, &mut cmd, rid.clone());
                    (rid, r)
                }
                Ok(_) => (
                    None,
                    Err(refused("bad_request", "a command is a JSON object")),
                ),
            }
        };
        let Some(session) = self.mux(key) else {
            return;
        };
        match result {
            Ok(()) => session.errors = 0,
            Err(Refused(code, reason)) => {
                session.errors += 1;
                let too_many = session.errors >= MAX_CONSECUTIVE_ERRORS;
                tracing::debug!(
                    shard = self.id,
                    code,
                    "multiplexed command refused: {reason}"
                );
                self.mux_send(
                    key,
                    with_rid(
                        json!({"type": "error", "code": code, "reason": reason}),
                        rid,
                    ),
                );
                if too_many {
                    self.initiate_close(
                        key,
                        CloseCode::POLICY_VIOLATION,
                        "too many invalid commands",
                    );
                }
            }
        }
    }

    fn mux_command(
        &mut self,
        key: ConnKey,
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
                self.mux_send(key, with_rid(json!({"type": "pong"}), rid));
                Ok(())
            }
            "subscribe" => {
                let channel = channel_of(cmd)?;
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
                self.mux_subscribe(key, channel, since, rid)
            }
            "unsubscribe" => {
                let channel = channel_of(cmd)?;
                self.mux_unsubscribe(key, &channel)?;
                self.mux_send(
                    key,
                    with_rid(json!({"type": "unsubscribed", "ch": channel.as_str()}), rid),
                );
                Ok(())
            }
            "publish" => self.mux_publish(key, cmd, rid),
            "presence" => {
                let channel = channel_of(cmd)?;
                let owner = self.hub.owner(&channel);
                if owner == self.id {
                    let clients = self.hub.presence(&channel);
                    self.mux_send(key, presence_answer(&channel, &clients, rid));
                } else {
                    let token = self.token();
                    if let Some(s) = self.mux(key) {
                        s.pending.insert(token, Pending::Presence { rid });
                    }
                    let reply = ReplyTo {
                        shard: self.id,
                        conn: key,
                        token,
                    };
                    self.mail_to(owner, Mail::PresenceQuery { reply, channel });
                }
                Ok(())
            }
            other => Err(refused(
                "unknown_type",
                format!("unknown command type {other:?}"),
            )),
        }
    }

    pub(crate) fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        t
    }

    fn mux_subscribe(
        &mut self,
        key: ConnKey,
        channel: ChannelName,
        since: Option<MsgId>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        let max = self.settings().max_subscriptions;
        let session = self
            .mux(key)
            .ok_or_else(|| refused("bad_request", "not a multiplexed connection"))?;
        if session.subs.contains_key(&channel) {
            return Err(refused(
                "already_subscribed",
                format!("already subscribed to {channel}"),
            ));
        }
        if session.subs.len() >= max {
            return Err(refused(
                "too_many_subscriptions",
                format!("at most {max} subscriptions per connection"),
            ));
        }
        let client = session.client;
        // Registered before the owner answers, so the `subscribed` reply
        // finds its rid.
        let (chan, sub) = self.hub.add_sub(&channel, key, Format::Mux);
        if let Some(s) = self.mux(key) {
            s.subs.insert(channel.clone(), MuxSub { chan, sub, rid });
        }
        self.request_replay(key, channel, chan, sub, since, Some(client));
        Ok(())
    }

    /// Called before a subscription's replay: answers its `subscribe`.
    pub(crate) fn mux_subscribed(&mut self, key: ConnKey, channel: &ChannelName) {
        let rid = self
            .mux(key)
            .and_then(|s| s.subs.get_mut(channel))
            .and_then(|s| s.rid.take());
        self.mux_send(
            key,
            with_rid(json!({"type": "subscribed", "ch": channel.as_str()}), rid),
        );
    }

    fn mux_unsubscribe(&mut self, key: ConnKey, channel: &ChannelName) -> Result<(), Refused> {
        let session = self
            .mux(key)
            .ok_or_else(|| refused("bad_request", "not a multiplexed connection"))?;
        let client = session.client;
        let sub = session
            .subs
            .remove(channel)
            .ok_or_else(|| refused("not_subscribed", format!("not subscribed to {channel}")))?;
        self.unsubscribe(key, sub.chan, sub.sub);
        self.left(channel, client);
        Ok(())
    }

    /// The connection is going away: leave every channel.
    pub(crate) fn mux_leave_all(&mut self, key: ConnKey, session: MuxSession) {
        for (channel, sub) in session.subs {
            self.unsubscribe(key, sub.chan, sub.sub);
            self.left(&channel, session.client);
        }
    }

    fn left(&mut self, channel: &ChannelName, client: ClientId) {
        let owner = self.hub.owner(channel);
        if owner == self.id {
            self.presence_left(channel, client);
        } else {
            self.mail_to(
                owner,
                Mail::Left {
                    channel: channel.clone(),
                    client,
                },
            );
        }
    }

    fn mux_publish(
        &mut self,
        key: ConnKey,
        cmd: &mut serde_json::Map<String, Value>,
        rid: Option<Value>,
    ) -> Result<(), Refused> {
        if !self.settings().client_publish {
            return Err(refused(
                "forbidden",
                "clients may not publish on this server (--client-publish)",
            ));
        }
        let channel = channel_of(cmd)?;
        let ephemeral = match cmd.remove("ephemeral") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(refused("bad_request", "ephemeral must be true or false")),
        };
        let (kind, payload) =
            super::payload_of(cmd).map_err(|reason| refused("bad_request", reason))?;
        let max = self.settings().max_message_size;
        if payload.len() > max {
            return Err(refused(
                "too_large",
                format!(
                    "message of {} bytes is over the limit of {max} bytes",
                    payload.len()
                ),
            ));
        }
        let owner = self.hub.owner(&channel);
        if owner == self.id {
            let id = if ephemeral {
                self.publish_ephemeral(&channel, kind, payload)
            } else {
                self.publish_owned(&channel, kind, payload)
            };
            self.mux_send(key, published_answer(&channel, id, ephemeral, rid));
        } else {
            let token = self.token();
            if let Some(s) = self.mux(key) {
                s.pending.insert(
                    token,
                    Pending::Publish {
                        channel: channel.clone(),
                        rid,
                        ephemeral,
                    },
                );
            }
            let item = PublishItem {
                index: 0,
                channel,
                kind,
                payload,
                ephemeral,
            };
            let reply = ReplyTo {
                shard: self.id,
                conn: key,
                token,
            };
            self.mail_to(
                owner,
                Mail::Publish {
                    reply,
                    items: vec![item],
                },
            );
        }
        Ok(())
    }

    /// An owner shard assigned the id of a client's publish.
    pub(crate) fn mux_published(&mut self, reply: ReplyTo, ids: Vec<(u32, MsgId)>) {
        let key = reply.conn;
        let Some(Pending::Publish {
            channel,
            rid,
            ephemeral,
        }) = self.mux(key).and_then(|s| s.pending.remove(&reply.token))
        else {
            return;
        };
        if let Some(&(_, id)) = ids.first() {
            self.mux_send(key, published_answer(&channel, id, ephemeral, rid));
        }
    }

    /// An owner shard answered a presence query.
    pub(crate) fn mux_presence_answer(
        &mut self,
        reply: ReplyTo,
        channel: &ChannelName,
        clients: &[ClientId],
    ) {
        let key = reply.conn;
        if let Some(Pending::Presence { rid }) =
            self.mux(key).and_then(|s| s.pending.remove(&reply.token))
        {
            self.mux_send(key, presence_answer(channel, clients, rid));
        }
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

fn published_answer(
    channel: &ChannelName,
    id: MsgId,
    ephemeral: bool,
    rid: Option<Value>,
) -> Value {
    let id = (!ephemeral).then(|| id.to_string());
    with_rid(
        json!({"type": "published", "ch": channel.as_str(), "id": id}),
        rid,
    )
}

fn presence_answer(channel: &ChannelName, clients: &[ClientId], rid: Option<Value>) -> Value {
    let clients: Vec<String> = clients.iter().map(ClientId::to_string).collect();
    with_rid(
        json!({"type": "presence", "ch": channel.as_str(), "clients": clients}),
        rid,
    )
}
