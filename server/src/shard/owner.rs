//! The owner side of the channel model: what a shard does with mail about
//! the channels it owns — publishing, subscriptions, presence.
//!
//! Every channel has one owner shard (`hub::ChannelName::owner`). The
//! owner assigns ids and keeps history and presence; it answers a
//! subscription with the replay its subscriber must see first, and sends
//! each published message once to every other shard with subscribers. A
//! shard handles this mail the same way whether it came from another shard
//! or from itself (see `post`).
//!
//! The publisher is answered first: the ids go back before the message goes
//! out to other shards, and before the owner's own fan-out, which the
//! shard runs only after the turn's answers are on their way.

use std::time::Instant;

use bytes::Bytes;
use codec::ws::DataKind;

use crate::bus::{ConnHandle, Mail, ReplyTo};
use crate::hub::{
    AckError, ChannelName, Cursor, Event, Member, MsgId, PublishItem, Receipt, SubRef,
};
use crate::metrics::ShardMetrics;

use super::conns::ShardHub;
use super::durable::Durable;
use super::post::Post;

/// Publishes `items` (channels this shard owns) and answers `reply`.
///
/// With a store (`store`), stored items are first checked against it —
/// a failed or overloaded store refuses the whole request with `503`
/// before any id is used — then recorded for the turn's submission, and
/// at `--fsync always|interval` the answer and the fan-out wait until the
/// store reports them durable (`durable`). Without a store this is one
/// branch more than before.
pub fn publish(
    hub: &mut ShardHub,
    post: &mut Post,
    metrics: &ShardMetrics,
    now: Instant,
    reply: ReplyTo,
    items: Vec<PublishItem>,
    store: Option<&mut Durable>,
) {
    if let Some(store) = store {
        return publish_stored(hub, post, metrics, now, reply, items, store);
    }
    let mut ids: Vec<(u32, MsgId)> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (msg, interested) = if item.ephemeral {
            hub.publish_live(
                &item.channel,
                item.kind,
                item.payload,
                Event::Ephemeral,
                now,
            )
        } else {
            ShardMetrics::add(&metrics.published, 1);
            hub.publish(&item.channel, item.kind, item.payload, now)
        };
        ids.push((item.index, msg.id));
        out.push((msg, interested));
    }
    post.send(reply.shard, Mail::Published { reply, ids });
    for (msg, interested) in out {
        post.deliver(msg, interested);
    }
}

/// [`publish`] on a node with a store.
fn publish_stored(
    hub: &mut ShardHub,
    post: &mut Post,
    metrics: &ShardMetrics,
    now: Instant,
    reply: ReplyTo,
    items: Vec<PublishItem>,
    store: &mut Durable,
) {
    let stored = |i: &PublishItem| !i.ephemeral && hub.keeps_history(&i.channel);
    if items.iter().any(stored) {
        if let Err(refused) = store.check() {
            let reason = super::durable::refusal(&refused);
            post.send(reply.shard, Mail::PublishRefused { reply, reason });
            return;
        }
    }
    let published_ms = super::durable::unix_ms();
    let hold = store.holds();
    let mut ids: Vec<(u32, MsgId)> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    let mut held = Vec::new();
    for item in items {
        if item.ephemeral {
            // Never stored, never held (it may overtake stored messages
            // published before it that still wait for the disk).
            let (msg, interested) = hub.publish_live(
                &item.channel,
                item.kind,
                item.payload,
                Event::Ephemeral,
                now,
            );
            ids.push((item.index, msg.id));
            out.push((msg, interested));
            continue;
        }
        ShardMetrics::add(&metrics.published, 1);
        let keeps = hub.keeps_history(&item.channel);
        let (msg, interested) = hub.publish(&item.channel, item.kind, item.payload, now);
        ids.push((item.index, msg.id));
        if keeps {
            store.record(&msg, published_ms);
            if hold {
                held.push(msg);
                continue;
            }
        } else if hold {
            // Kept nowhere: nothing to wait for.
            hub.set_durable(&msg.channel, msg.id.seq);
        }
        out.push((msg, interested));
    }
    if held.is_empty() {
        post.send(reply.shard, Mail::Published { reply, ids });
    } else {
        store.hold(reply, ids, held);
    }
    for (msg, interested) in out {
        post.deliver(msg, interested);
    }
}

/// A connection of shard `from` subscribes, or one of its subscriptions
/// catches up: answer with the replay (at most `budget` bytes of
/// messages), and announce the client to the channel if it joins the
/// presence. A durable subscription (`durable`, with a store) resumes
/// from its cursor when it names no `since`; a cursor it creates is
/// stored with the turn's records (its `subscribed` is not held for it:
/// lost in a crash, the cursor is created again "from now").
#[allow(clippy::too_many_arguments)]
pub fn subscribe(
    hub: &mut ShardHub,
    post: &mut Post,
    now: Instant,
    budget: usize,
    from: usize,
    conn: ConnHandle,
    at: SubRef,
    channel: ChannelName,
    since: Option<MsgId>,
    member: Option<Member>,
    durable: Option<(Cursor, &mut Durable)>,
) {
    let replay = match durable {
        Some((who, store)) => {
            let (replay, created) =
                hub.owner_subscribe_durable(&channel, from, since, &who, budget);
            if let Some(seq) = created {
                let cursor = MsgId {
                    epoch: replay.epoch,
                    seq,
                };
                store.record_cursor(&channel, &who, cursor);
            }
            replay
        }
        None => hub.owner_subscribe(&channel, from, since, budget),
    };
    let replay = Box::new(replay);
    post.send(from, Mail::Replayed { conn, at, replay });
    if let Some(member) = member {
        let identity = Bytes::from(member.to_string());
        if hub.presence_join(&channel, member) {
            announce(hub, post, now, &channel, Event::Joined, identity);
        }
    }
}

/// `who` acknowledges `channel` up to `id` (see `hub::cursor`): the
/// cursor moves and is stored, and the answer goes back — at
/// `--fsync always` once the new cursor is durable. Refused with the
/// specific [`AckError`] otherwise: no store, the store failed or is
/// full, another epoch, an id not shown yet, no cursor kept.
#[allow(clippy::too_many_arguments)]
pub fn ack(
    hub: &mut ShardHub,
    post: &mut Post,
    reply: ReplyTo,
    channel: ChannelName,
    who: Cursor,
    id: MsgId,
    store: Option<&mut Durable>,
) {
    let refuse = |post: &mut Post, channel, e: AckError| {
        tracing::debug!(%who, "ack refused: {e}");
        let result = Err(e);
        post.send(
            reply.shard,
            Mail::Acked {
                reply,
                channel,
                result,
            },
        );
    };
    let Some(store) = store else {
        // The connection checks this before it asks; answered all the same.
        let why = "the node has no --data-dir".to_string();
        let e = AckError::NotDurable {
            channel: channel.clone(),
            why,
        };
        return refuse(post, channel, e);
    };
    if let Err(refused) = store.check() {
        let e = AckError::Unavailable(super::durable::refusal(&refused));
        return refuse(post, channel, e);
    }
    match hub.ack(&channel, &who, id) {
        Err(e) => refuse(post, channel, e),
        Ok(acked) => {
            if acked.moved {
                store.record_cursor(&channel, &who, acked.state.cursor);
            }
            let receipt = hub.receipt(&channel, &who, &acked);
            store.answer_ack(post, reply, channel, who, acked, receipt);
        }
    }
}

/// `Mail::Receipt`: publishes a receipt on its receipts channel, which
/// this shard owns — live-only, like an ephemeral publish (no id, no
/// history, nothing stored), to the subscribers of every shard.
pub fn receipt(hub: &mut ShardHub, post: &mut Post, now: Instant, receipt: Receipt) {
    let Receipt { to, payload } = receipt;
    let (msg, interested) = hub.publish_live(&to, DataKind::Text, payload, Event::Ephemeral, now);
    post.deliver(msg, interested);
}

/// A connection of `member` left a channel's presence.
pub fn left(
    hub: &mut ShardHub,
    post: &mut Post,
    now: Instant,
    channel: &ChannelName,
    member: &Member,
) {
    if hub.presence_leave(channel, member) {
        let identity = Bytes::from(member.to_string());
        announce(hub, post, now, channel, Event::Left, identity);
    }
}

/// Answers who is present on a channel.
pub fn presence(hub: &ShardHub, post: &mut Post, reply: ReplyTo, channel: ChannelName) {
    let clients = hub.presence(&channel);
    post.send(
        reply.shard,
        Mail::Presence {
            reply,
            channel,
            clients,
        },
    );
}

/// Tells the channel's subscribers about a presence change of the member
/// `identity` names.
fn announce(
    hub: &mut ShardHub,
    post: &mut Post,
    now: Instant,
    channel: &ChannelName,
    event: Event,
    identity: Bytes,
) {
    let (msg, interested) = hub.publish_live(channel, DataKind::Text, identity, event, now);
    post.deliver(msg, interested);
}
