//! What a channel carries: a published message, shared by reference by
//! every shard and connection that delivers it, and the events announced
//! with it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use codec::ws::DataKind;

use super::channel::ChannelName;
use super::id::MsgId;

/// A published message, shared by every shard that delivers it.
#[derive(Debug)]
pub struct Message {
    /// Its channel.
    pub channel: ChannelName,
    /// Its id.
    pub id: MsgId,
    /// Text (UTF-8, checked at publish) or binary.
    pub kind: DataKind,
    /// The payload as published.
    pub payload: Bytes,
    /// The payload as one WebSocket frame, encoded once by the owner.
    pub ws_frame: Bytes,
    /// When the owner accepted it (for history expiry).
    pub published_at: Instant,
    /// What kind of event it is.
    pub event: Event,
}

/// What a [`Message`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A published message: it has an id and lives in history.
    Stored,
    /// A live-only message (typing indicators…): delivered to subscribers
    /// that are live now, never stored, no id (`seq` 0).
    Ephemeral,
    /// A member joined the channel's presence (its first multiplexed
    /// WebSocket subscribed). The payload is its identity ([`Member`]).
    Joined,
    /// A member left it (its last one unsubscribed or went away). The
    /// payload is its identity.
    Left,
}

impl Message {
    /// A stored message numbered `id`, framed once for every subscriber.
    pub fn stored(
        channel: ChannelName,
        id: MsgId,
        kind: DataKind,
        payload: Bytes,
        published_at: Instant,
    ) -> Message {
        let ws_frame = codec::ws::encode::message(kind, &payload);
        Message {
            channel,
            id,
            kind,
            payload,
            ws_frame,
            published_at,
            event: Event::Stored,
        }
    }

    /// A live-only message (no id, never stored): an ephemeral one, framed
    /// once, or a presence event (whose payload is the member).
    pub fn live(
        channel: ChannelName,
        kind: DataKind,
        payload: Bytes,
        event: Event,
        published_at: Instant,
    ) -> Message {
        debug_assert_ne!(event, Event::Stored);
        let ws_frame = if event == Event::Ephemeral {
            codec::ws::encode::message(kind, &payload)
        } else {
            Bytes::new()
        };
        Message {
            channel,
            id: MsgId {
                epoch: super::Epoch::NONE,
                seq: 0,
            },
            kind,
            payload,
            ws_frame,
            published_at,
            event,
        }
    }

    /// Whether it has an id and can be resumed from.
    pub fn is_stored(&self) -> bool {
        self.event == Event::Stored
    }
}

/// Identifies a client in presence lists and events, printed as 16 hex
/// digits. Unique among the node's live connections (the shard derives it
/// from its connection key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Who appears in a channel's presence: the `sub` of the connection's
/// token when it names one — one member however many connections that
/// user has open — and otherwise the anonymous connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Member {
    /// A connection without an identity.
    Client(ClientId),
    /// A user, by its token's `sub`.
    User(Arc<str>),
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::Client(c) => c.fmt(f),
            Member::User(sub) => f.write_str(sub),
        }
    }
}
