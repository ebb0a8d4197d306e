//! Durable cursors: how far an identity (one of its devices) has
//! acknowledged a channel.
//!
//! A cursor lives on the channel's **owner**, next to the history it
//! points into, so an ack is checked against the same `epoch` and
//! `durable_seq` the replays use, without asking anyone. It is a seq, not
//! an id: the channel's epoch is the owner's, and a restart that changes
//! the epoch keeps the seqs of the stored messages (`store::recovery`).
//!
//! # Rules
//! * Acks are **cumulative** and only move a cursor forward: an ack of an
//!   older id is answered with the current cursor and changes nothing.
//! * An ack may name only what a client could have been shown: an id of
//!   the channel's epoch with `seq ≤ durable_seq`.
//! * A cursor created by a durable subscription starts at `durable_seq`
//!   ("from now"): a first-time subscriber is not flooded with the past.
//! * `unread` is the number of retained messages after the cursor:
//!   `durable_seq − max(cursor, oldest − 1)`, O(1) because seqs are
//!   contiguous and trims only ever drop the oldest.
//!
//! Pure values and functions; the hub keeps the map, the shard stores it.

use std::fmt;
use std::sync::Arc;

use crate::policy::Namespaces;

use super::{ChannelName, Epoch, MsgId};

/// Names a cursor: an identity (a token's `sub`) and one of its devices
/// (`""` when the client names none: one cursor per identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    /// The token's `sub`.
    pub sub: Arc<str>,
    /// The device, 0–64 bytes of `A–Z a–z 0–9 _ - .` (checked by the
    /// transports, `transport::ack::device`).
    pub device: Box<str>,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.device.is_empty() {
            write!(f, "{}", self.sub)
        } else {
            write!(f, "{} (device {})", self.sub, self.device)
        }
    }
}

/// One answer to an unread query (`GET /unread`): each channel with a
/// cursor of the identity and where it stands, or why they could not be
/// read (`AckError::Unavailable`: Redis, in a cluster).
pub type UnreadCounts = Result<Vec<(ChannelName, CursorState)>, AckError>;

/// Where a cursor stands, as the client is told (`subscribed`, `acked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorState {
    /// The last acknowledged message (`<epoch>-<seq>`).
    pub cursor: MsgId,
    /// Retained messages after it.
    pub unread: u64,
}

/// Why an ack was refused. Each has its own `/ws` code and HTTP status
/// (`transport::ack`), and its own reason text ([`fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// The connection has no token naming a `sub`.
    NoIdentity,
    /// Not a message id.
    BadId(String),
    /// An id of another epoch (the node lost messages and started a new
    /// one since the client saw it).
    Stale {
        /// The channel.
        channel: ChannelName,
        /// The id acked.
        id: MsgId,
        /// The channel's epoch now.
        epoch: Epoch,
    },
    /// An id past the newest message the channel has shown.
    Unknown {
        /// The channel.
        channel: ChannelName,
        /// The id acked.
        id: MsgId,
        /// The newest id shown (durable).
        newest: MsgId,
    },
    /// The channel keeps no cursor for this identity: no `--data-dir`, or
    /// its namespace is not durable and it was not subscribed durably.
    NotDurable {
        /// The channel.
        channel: ChannelName,
        /// Why, e.g. "namespace chat: has durable = false".
        why: String,
    },
    /// The store refused (failed, or too much waiting for the disk).
    Unavailable(String),
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::NoIdentity => f.write_str("ack needs a token that names a user (sub)"),
            AckError::BadId(why) => f.write_str(why),
            AckError::Stale { channel, id, epoch } => write!(
                f,
                "id {id} is from epoch {}; channel {channel} is at epoch {epoch}",
                id.epoch
            ),
            AckError::Unknown {
                channel,
                id,
                newest,
            } => write!(f, "channel {channel} has no message {id} (newest {newest})"),
            AckError::NotDurable { channel, why } => {
                write!(f, "channel {channel} keeps no cursors ({why})")
            }
            AckError::Unavailable(reason) => f.write_str(reason),
        }
    }
}

/// A receipt (namespaces with `receipts = true`): an ack moved `who`'s
/// cursor on a channel to `id`, told live-only to the channel's receipts
/// channel (`<channel>:receipts`) as
/// `{"type":"receipt","ch":…,"id":…,"by":<sub>,"device":…}` (`device`
/// left out for the identity's default cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Where it goes: the receipts channel.
    pub to: ChannelName,
    /// The JSON text.
    pub payload: bytes::Bytes,
}

impl Receipt {
    /// The receipt an accepted ack that moved `who`'s cursor on `channel`
    /// to `at` owes: only in a namespace with `receipts`, and when
    /// `<channel>:receipts` is a valid name (not over the length limit).
    /// One rule for a node's hub and a cluster's bridge.
    pub fn owed(
        namespaces: &Namespaces,
        channel: &ChannelName,
        who: &Cursor,
        at: MsgId,
    ) -> Option<Receipt> {
        let to = namespaces.receipts_channel(channel.as_str())?;
        let to = ChannelName::new(&to).ok()?;
        Some(Receipt::new(to, channel, who, at))
    }

    /// The receipt of `who`'s cursor on `channel` now at `id`, sent to
    /// `to`.
    pub fn new(to: ChannelName, channel: &ChannelName, who: &Cursor, id: MsgId) -> Receipt {
        let mut v = serde_json::json!({
            "type": "receipt",
            "ch": channel.as_str(),
            "id": id.to_string(),
            "by": &*who.sub,
        });
        if !who.device.is_empty() {
            v["device"] = serde_json::Value::from(&*who.device);
        }
        Receipt {
            to,
            payload: v.to_string().into(),
        }
    }
}

/// `unread` for a cursor at `cursor` on a channel whose oldest retained
/// message is `oldest` (`durable_seq + 1` when none) and whose newest
/// shown is `durable_seq`.
pub fn unread(durable_seq: u64, oldest: u64, cursor: u64) -> u64 {
    durable_seq.saturating_sub(cursor.max(oldest.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_counts_retained_messages_after_the_cursor() {
        // History 11..=20, cursor 15: 16..=20.
        assert_eq!(unread(20, 11, 15), 5);
        // Cursor before the oldest retained: only what is retained.
        assert_eq!(unread(20, 11, 3), 10);
        // Cursor at the end, or past it (never negative).
        assert_eq!(unread(20, 11, 20), 0);
        assert_eq!(unread(20, 11, 25), 0);
        // No history: oldest is durable_seq + 1.
        assert_eq!(unread(20, 21, 0), 0);
    }

    #[test]
    fn a_receipt_names_the_channel_cursor_identity_and_device() {
        let ch = ChannelName::new("room:7").unwrap();
        let to = ChannelName::new("room:7:receipts").unwrap();
        let id = MsgId {
            epoch: Epoch::from_bits(0x7a),
            seq: 3,
        };
        let who = |device: &str| Cursor {
            sub: "bob".into(),
            device: device.into(),
        };
        let r = Receipt::new(to.clone(), &ch, &who("phone"), id);
        assert_eq!(r.to, to);
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"receipt","ch":"room:7","id":"00000000007a-3","by":"bob","device":"phone"})
        );
        let r = Receipt::new(to, &ch, &who(""), id);
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert!(v.get("device").is_none(), "{v}");
    }

    #[test]
    fn refusals_name_their_cause() {
        let ch = ChannelName::new("c").unwrap();
        let id = |e, seq| MsgId {
            epoch: Epoch::from_bits(e),
            seq,
        };
        assert_eq!(
            AckError::Stale {
                channel: ch.clone(),
                id: id(0x5f, 3),
                epoch: Epoch::from_bits(0x7a),
            }
            .to_string(),
            "id 00000000005f-3 is from epoch 00000000005f; channel c is at epoch 00000000007a"
        );
        assert_eq!(
            AckError::Unknown {
                channel: ch.clone(),
                id: id(0x7a, 900),
                newest: id(0x7a, 120),
            }
            .to_string(),
            "channel c has no message 00000000007a-900 (newest 00000000007a-120)"
        );
        let who = Cursor {
            sub: "bob".into(),
            device: "phone".into(),
        };
        assert_eq!(who.to_string(), "bob (device phone)");
    }
}
