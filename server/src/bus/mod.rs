//! Cross-shard mail: what shards tell each other, and the queues and
//! doorbells that carry it.
//!
//! Shards share no mutable state on the data path; they send each other
//! [`Mail`] through one lock-free queue per ordered pair of shards
//! (`from → to`), so the items one shard sends another arrive in the order
//! they were sent — the resume protocol depends on it (see the hub docs).
//! [`mailbox`] holds the queues and the doorbells that wake a sleeping
//! shard.
//!
//! Mail names connections of the shard it is addressed to (or answers) by a
//! [`ConnHandle`]: an opaque value only that shard interprets.

pub mod mailbox;

use std::sync::Arc;

use crate::hub::{
    AckError, ChannelName, Cursor, CursorState, Member, Message, MsgId, PublishItem, Receipt,
    Replay, SubRef, UnreadCounts,
};

pub use mailbox::Mailboxes;

/// A connection as its own shard names it; opaque to everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnHandle(pub u64);

/// Where a shard wants an answer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The asking shard.
    pub shard: usize,
    /// The asking connection.
    pub conn: ConnHandle,
    /// Distinguishes requests of the same connection.
    pub token: u32,
}

/// An item sent from one shard to another.
#[derive(Debug)]
pub enum Mail {
    /// Publish these messages (all owned by the receiving shard), then
    /// answer with [`Mail::Published`].
    Publish {
        /// Who to answer.
        reply: ReplyTo,
        /// What to publish.
        items: Vec<PublishItem>,
    },
    /// The ids assigned to a [`Mail::Publish`], by request position.
    Published {
        /// The request.
        reply: ReplyTo,
        /// (position, id) pairs.
        ids: Vec<(u32, MsgId)>,
    },
    /// A connection on shard `from` subscribes; answer with
    /// [`Mail::Replayed`].
    Subscribe {
        /// The subscriber's shard.
        from: usize,
        /// The subscriber.
        conn: ConnHandle,
        /// The subscription in the subscriber shard's hub.
        at: SubRef,
        /// The channel.
        channel: ChannelName,
        /// Resume point.
        since: Option<MsgId>,
        /// Who joins the channel's presence, if the subscription takes
        /// part in it.
        member: Option<Member>,
        /// A durable subscription: whose cursor it resumes from (without
        /// `since`) and reports. Boxed: mail stays as small as it was for
        /// every other kind (deliveries above all).
        durable: Option<Box<Cursor>>,
    },
    /// The owner's answer to [`Mail::Subscribe`].
    Replayed {
        /// The subscriber.
        conn: ConnHandle,
        /// Its subscription.
        at: SubRef,
        /// History to send first, and the live starting point. Boxed:
        /// the largest payload of any mail, it would set the size of
        /// every queue slot, deliveries' included.
        replay: Box<Replay>,
    },
    /// A subscription of this shard that fell behind catches up (a shard
    /// sends this to itself): from the shard's backlog, or else from the
    /// owner's history, as a [`Mail::Subscribe`] from its cursor.
    CatchUp {
        /// The subscriber.
        conn: ConnHandle,
        /// Its subscription.
        at: SubRef,
    },
    /// Shard `from` has no subscribers of `channel` left.
    Unsubscribe {
        /// The shard.
        from: usize,
        /// The channel.
        channel: ChannelName,
    },
    /// A client left a channel's presence (the owner updates it and tells
    /// the channel).
    Left {
        /// The channel.
        channel: ChannelName,
        /// Who.
        member: Member,
    },
    /// Who is present on a channel? Answer with [`Mail::Presence`].
    PresenceQuery {
        /// Who to answer.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
    },
    /// The answer to [`Mail::PresenceQuery`].
    Presence {
        /// The request.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
        /// The clients present.
        clients: Vec<Member>,
    },
    /// A published message for the receiving shard's subscribers.
    Deliver(Arc<Message>),
    /// In a cluster, from the bridge: a [`Mail::Publish`] that could not
    /// be stored in Redis. The publisher answers `503`.
    PublishRefused {
        /// The request.
        reply: ReplyTo,
        /// Why, for the client and the log.
        reason: String,
    },
    /// In a cluster, from the bridge to a channel's owner shard: what
    /// Redis said about a channel this node follows.
    Redis(FromRedis),
    /// `who` acknowledges every message of `channel` up to `id`; answer
    /// with [`Mail::Acked`] (at `--fsync always` once the new cursor is
    /// durable).
    Ack {
        /// Who to answer.
        reply: ReplyTo,
        /// The channel (owned by the receiving shard).
        channel: ChannelName,
        /// Whose cursor.
        who: Cursor,
        /// The id acknowledged.
        id: MsgId,
        /// The acking connection is subscribed durably as `who` (in a
        /// cluster the ack may then create the cursor, lost with Redis's
        /// data).
        subscribed: bool,
    },
    /// Where `who`'s cursors stand on the channels the receiving shard
    /// owns (`GET /unread`); answer with [`Mail::Unread`]. Sent to every
    /// shard.
    UnreadQuery {
        /// Who to answer.
        reply: ReplyTo,
        /// Whose cursors.
        who: Cursor,
    },
    /// One shard's answer to [`Mail::UnreadQuery`], by channel. In a
    /// cluster the bridge answers for the asking connection's shard
    /// (Redis has the cursors), the other shards with nothing.
    Unread {
        /// The request.
        reply: ReplyTo,
        /// Each channel with a cursor of `who`, and where it stands; or
        /// why they could not be read (`AckError::Unavailable`: Redis).
        counts: UnreadCounts,
    },
    /// A receipt to publish live-only on its receipts channel (owned by
    /// the receiving shard): an ack moved a cursor on another channel,
    /// maybe of another shard.
    Receipt(Box<Receipt>),
    /// The answer to [`Mail::Ack`].
    Acked {
        /// The request.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
        /// Where the cursor stands, or why the ack was refused.
        result: Result<CursorState, AckError>,
    },
    /// From the store's writer: every record this shard submitted with a
    /// ticket ≤ `upto` is stored as `--fsync` promises. The owner releases
    /// the publishes it held for them (answer, then fan-out).
    Durable {
        /// The highest ticket stored.
        upto: u64,
    },
    /// From the store's writer: records this shard submitted with a
    /// ticket > `after` were **not** stored, and the store is failed until
    /// a restart. The owner rolls back the publishes it held for them and
    /// refuses them (`503`).
    StoreFailed {
        /// The last ticket that was stored.
        after: u64,
        /// Why, naming the data directory and the OS error.
        reason: Arc<str>,
    },
}

/// The store's [`crate::store::Reports`] through the node's mailboxes: the
/// writer is one more sender ([`Mailboxes::store`]), and each report rings
/// the shard's doorbell like any mail, so a sleeping shard wakes to
/// release its held publishes.
#[derive(Debug)]
pub struct StoreReports(pub Arc<Mailboxes>);

impl crate::store::Reports for StoreReports {
    fn durable(&self, shard: usize, upto: u64) {
        self.0.send(self.0.store(), shard, Mail::Durable { upto });
        self.0.wake(shard);
    }

    fn failed(&self, shard: usize, after: u64, reason: &Arc<str>) {
        let reason = reason.clone();
        self.0
            .send(self.0.store(), shard, Mail::StoreFailed { after, reason });
        self.0.wake(shard);
    }
}

/// What the Redis bridge tells a channel's owner shard (see
/// `cluster::bridge` and `shard::relay`).
#[derive(Debug)]
pub enum FromRedis {
    /// A message of a followed channel, as Pub/Sub delivered it (live-only
    /// ones have sequence number 0).
    Message {
        /// The message; `published_at` is its publish time.
        msg: Arc<Message>,
        /// Published on this node.
        local: bool,
    },
    /// The channel's history after the position the owner asked from, with
    /// its newest id (`None`: Redis knows nothing of the channel).
    History {
        /// The channel.
        channel: ChannelName,
        /// Its epoch and last sequence number.
        newest: Option<MsgId>,
        /// The messages after the position asked for, oldest first.
        messages: Vec<Arc<Message>>,
    },
    /// A history read failed (Redis unreachable); the owner asks again.
    ReadFailed {
        /// The channel.
        channel: ChannelName,
    },
    /// The channel's newest id, for the periodic check that Pub/Sub has
    /// not silently stalled.
    Newest {
        /// The channel.
        channel: ChannelName,
        /// Its epoch and last sequence number (`None`: no keys).
        newest: Option<MsgId>,
    },
    /// The Pub/Sub connection is back and subscribed again: every channel
    /// followed reads what it missed from history before going on.
    Resubscribed,
    /// A durable subscription's cursor, as Redis keeps it (and whether
    /// this read created it, "from now"); `None`: Redis could not be read.
    Cursor {
        /// The owner's number for the request.
        token: u64,
        /// The cursor and its unread count, and whether it was created.
        found: Option<(CursorState, bool)>,
    },
}

// Every queue slot is one `Mail`: keep the kinds a delivery shares its
// queue with from growing it.
const _: () = assert!(std::mem::size_of::<Mail>() <= 104);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Reports;

    #[test]
    fn store_reports_arrive_from_the_store_sender_in_order() {
        let mail = Mailboxes::new(2).unwrap();
        assert_eq!((mail.bridge(), mail.store()), (2, 3));
        assert_eq!(mail.senders(), 0..4);
        let reports = StoreReports(mail.clone());
        assert!(mail.park(1), "nothing queued yet");
        reports.durable(1, 5);
        reports.failed(1, 5, &Arc::from("disk on fire"));
        assert!(mail.has_mail(1) && !mail.has_mail(0));
        assert!(!mail.park(1), "a shard about to sleep sees the report");
        assert!(matches!(
            mail.recv(1, mail.store()),
            Some(Mail::Durable { upto: 5 })
        ));
        match mail.recv(1, mail.store()) {
            Some(Mail::StoreFailed { after: 5, reason }) => assert_eq!(&*reason, "disk on fire"),
            other => panic!("{other:?}"),
        }
        assert!(mail.recv(1, mail.store()).is_none());
    }
}
