//! The owner's side of the store (`--data-dir`): what this shard's
//! publishes hand the store's writer, and the publishes that wait for it.
//!
//! Per turn, the owner collects the turn's [`Record`]s (messages it
//! numbered, history it trimmed) and submits them once, at the end of the
//! turn: one queue push, and a wake-up only if the writer sleeps. The
//! submission gets the shard's next ticket, known in advance
//! ([`Intake::next_ticket`]), so the turn's publishes can be held under it
//! before it is submitted.
//!
//! At `--fsync never` a publish is answered and delivered at once, as
//! without a store. At `always` and `interval` it is **held**: not
//! answered, not delivered and not replayed (the hub's `durable_seq`)
//! until the writer reports its ticket durable ([`Durable::release`]),
//! or taken back and refused with `503` if the store failed first
//! ([`Durable::roll_back`]). Nobody saw a rolled-back message, so its
//! seq is issued again.
//!
//! Durable cursors (acks) ride the same submissions: a cursor that moved
//! is a [`Record::Cursor`] of the turn. At `always` the ack's answer is
//! held like a publish, so an `acked` the client saw survives a power
//! loss; at `interval` and `never` it is answered at once (a crash can
//! undo the last acks, and their messages are delivered again: at least
//! once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::bus::{Mail, ReplyTo};
use crate::hub::{AckError, Acked, ChannelName, Cursor, Epoch, Message, MsgId, Receipt};
use crate::store::{Fsync, Intake, Record, RecoveredChannel, RecoveredCursor, Refused};

use super::conns::ShardHub;
use super::post::Post;
use super::Shard;

/// What a shard gets of the store at start.
#[derive(Debug)]
pub struct ShardStore {
    /// Its way into the store.
    pub intake: Intake,
    /// The policy.
    pub fsync: Fsync,
    /// The highest seq the node ever stored: channels start above it.
    pub floor: u64,
    /// The recovered channels this shard owns.
    pub channels: Vec<RecoveredChannel>,
    /// The recovered cursors of those channels.
    pub cursors: Vec<RecoveredCursor>,
}

/// An answer waiting for the disk.
#[derive(Debug)]
struct Held {
    /// The submission holding its records.
    ticket: u64,
    /// Who to answer.
    reply: ReplyTo,
    /// What is answered.
    what: Waiting,
}

#[derive(Debug)]
enum Waiting {
    /// A publish.
    Publish {
        /// Every id of the request (ephemeral items' too), by position.
        ids: Vec<(u32, MsgId)>,
        /// Its stored messages, to deliver once durable.
        msgs: Vec<Arc<Message>>,
    },
    /// An ack (at `always`).
    Ack {
        channel: ChannelName,
        who: Cursor,
        acked: Acked,
        /// Published once the ack is answered (`receipts = true`).
        receipt: Option<Receipt>,
    },
}

/// A shard's store state. See the module docs.
#[derive(Debug)]
pub struct Durable {
    intake: Intake,
    fsync: Fsync,
    /// This turn's records, submitted at its end.
    records: Vec<Record>,
    /// Held publishes, oldest (lowest ticket) first.
    held: VecDeque<Held>,
    /// Set when the writer (or a refused submission) said the store
    /// failed: every later stored publish is refused.
    failed: Option<Arc<str>>,
}

impl Durable {
    /// The store state of a shard; installs the recovered channels in its
    /// hub (which must be [`ShardHub::with_store`]).
    pub fn new(store: ShardStore, hub: &mut ShardHub, now: Instant) -> Durable {
        let now_ms = unix_ms();
        let epoch: Epoch = hub.epoch();
        for ch in store.channels {
            let messages = ch
                .messages
                .into_iter()
                .map(|m| {
                    // Its age now is what it was at the restart's clock.
                    let age =
                        std::time::Duration::from_millis(now_ms.saturating_sub(m.published_ms));
                    let at = now.checked_sub(age).unwrap_or(now);
                    let id = MsgId { epoch, seq: m.seq };
                    Arc::new(Message::stored(ch.name.clone(), id, m.kind, m.payload, at))
                })
                .collect();
            hub.restore(&ch.name, ch.first_seq, ch.last_seq, messages);
        }
        for c in store.cursors {
            hub.restore_cursor(&c.channel, c.who, c.seq);
        }
        // Retention once every cursor is back: an inbox keeps what its
        // lowest cursor has not passed, so it could not be trimmed while
        // its messages were restored; the ages are those of the restart.
        hub.expire(now);
        Durable {
            intake: store.intake,
            fsync: store.fsync,
            records: Vec::new(),
            held: VecDeque::new(),
            failed: None,
        }
    }

    /// Whether publishes are held until durable (`always`, `interval`).
    pub fn holds(&self) -> bool {
        self.fsync != Fsync::Never
    }

    /// Whether a stored publish may be accepted now: refused when the
    /// store failed, shuts down, or has too much queued for the disk.
    /// Checked before any id is assigned, so a refusal uses no seq.
    pub fn check(&self) -> Result<(), Refused> {
        if let Some(reason) = &self.failed {
            return Err(Refused::Failed(reason.clone()));
        }
        self.intake.check()
    }

    /// Queues `msg` (just numbered by the owner) for this turn's
    /// submission.
    pub fn record(&mut self, msg: &Message, published_ms: u64) {
        self.records.push(Record::Message {
            channel: msg.channel.clone(),
            seq: msg.id.seq,
            kind: msg.kind,
            published_ms,
            payload: msg.payload.clone(),
        });
    }

    /// Holds a publish under this turn's ticket until it is durable.
    pub fn hold(&mut self, reply: ReplyTo, ids: Vec<(u32, MsgId)>, msgs: Vec<Arc<Message>>) {
        self.held.push_back(Held {
            ticket: self.intake.next_ticket(),
            reply,
            what: Waiting::Publish { ids, msgs },
        });
    }

    /// Queues `who`'s cursor on `channel` (at `cursor`) for this turn's
    /// submission: an ack moved it, or a durable subscription created it.
    pub fn record_cursor(&mut self, channel: &ChannelName, who: &Cursor, cursor: MsgId) {
        self.records.push(Record::Cursor {
            channel: channel.clone(),
            who: who.clone(),
            seq: cursor.seq,
            epoch: cursor.epoch,
            updated_ms: unix_ms(),
        });
    }

    /// Answers an accepted ack: at once, or at `always` once its cursor is
    /// durable. An ack that moved nothing waits behind the last held
    /// answer, if any (the cursor it reports may be that one's), and else
    /// is answered at once. Its `receipt` (only an ack that moved a
    /// cursor has one) goes out with the answer, never before: a receipt
    /// at `always` names a durable cursor, and an ack taken back by a
    /// store failure publishes none.
    pub fn answer_ack(
        &mut self,
        post: &mut Post,
        reply: ReplyTo,
        channel: ChannelName,
        who: Cursor,
        acked: Acked,
        receipt: Option<Receipt>,
    ) {
        let ticket = match (self.fsync, acked.moved) {
            (Fsync::Always, true) => Some(self.intake.next_ticket()),
            (Fsync::Always, false) => self.held.back().map(|h| h.ticket),
            _ => None,
        };
        match ticket {
            Some(ticket) => self.held.push_back(Held {
                ticket,
                reply,
                what: Waiting::Ack {
                    channel,
                    who,
                    acked,
                    receipt,
                },
            }),
            None => {
                post.send(
                    reply.shard,
                    Mail::Acked {
                        reply,
                        channel,
                        result: Ok(acked.state),
                    },
                );
                if let Some(receipt) = receipt {
                    post.send_receipt(receipt);
                }
            }
        }
    }

    /// The end of a turn: submits what the turn recorded, with the hub's
    /// trims. A refused submission (the store failed or closes) takes back
    /// what was held under it.
    pub fn submit(&mut self, hub: &mut ShardHub, post: &mut Post) {
        for (channel, below_seq) in hub.take_trims() {
            self.records.push(Record::Trim { channel, below_seq });
        }
        if self.records.is_empty() {
            return;
        }
        let ticket = self.intake.next_ticket();
        let records = std::mem::take(&mut self.records);
        if let Err(refused) = self.intake.submit(records) {
            let reason: Arc<str> = match refused {
                Refused::Failed(r) => r,
                other => other.to_string().into(),
            };
            tracing::error!(shard = post.me(), "store refused a submission: {reason}");
            self.roll_back(ticket.saturating_sub(1), reason, hub, post);
        }
    }

    /// `Mail::Durable`: releases every publish held under a ticket ≤
    /// `upto`, in order — visible to replays first, then answered, then
    /// delivered to the shards interested *now* (a subscriber that joined
    /// while it was held was replayed only up to `durable_seq`, so it
    /// must get it as a delivery; the owner → shard FIFO keeps that free
    /// of gaps and duplicates).
    pub fn release(&mut self, upto: u64, hub: &mut ShardHub, post: &mut Post) {
        while self.held.front().is_some_and(|h| h.ticket <= upto) {
            let h = self.held.pop_front().expect("checked");
            let (ids, msgs) = match h.what {
                Waiting::Publish { ids, msgs } => (ids, msgs),
                Waiting::Ack {
                    channel,
                    acked,
                    receipt,
                    ..
                } => {
                    let result = Ok(acked.state);
                    let reply = h.reply;
                    post.send(
                        reply.shard,
                        Mail::Acked {
                            reply,
                            channel,
                            result,
                        },
                    );
                    if let Some(receipt) = receipt {
                        post.send_receipt(receipt);
                    }
                    continue;
                }
            };
            for m in &msgs {
                hub.set_durable(&m.channel, m.id.seq);
            }
            post.send(
                h.reply.shard,
                Mail::Published {
                    reply: h.reply,
                    ids,
                },
            );
            for m in msgs {
                let interested = hub.interest(&m.channel);
                post.deliver(m, interested);
            }
        }
    }

    /// `Mail::StoreFailed` (or a refused submission): the store failed
    /// for good. Every publish held under a ticket > `after` is taken
    /// back out of history and refused; later stored publishes are
    /// refused at once.
    pub fn roll_back(&mut self, after: u64, reason: Arc<str>, hub: &mut ShardHub, post: &mut Post) {
        if self.failed.is_none() {
            tracing::error!(
                shard = post.me(),
                "store failed; stored publishes are refused until a restart: {reason}"
            );
        }
        self.failed = Some(reason.clone());
        let why = refusal(&Refused::Failed(reason));
        let keep = self.held.iter().take_while(|h| h.ticket <= after).count();
        let lost: Vec<Held> = self.held.drain(keep..).collect();
        // Acks are taken back newest first, so each cursor returns to
        // where the oldest lost ack found it.
        for h in lost.iter().rev() {
            if let Waiting::Ack {
                channel,
                who,
                acked,
                ..
            } = &h.what
            {
                if acked.moved {
                    hub.unwind_cursor(channel, who, acked.before, acked.state.cursor.seq);
                }
            }
        }
        for h in lost {
            let reply = h.reply;
            match h.what {
                Waiting::Publish { msgs, .. } => {
                    for m in &msgs {
                        hub.unpublish_tail(&m.channel, m.id.seq);
                    }
                    let reason = why.clone();
                    post.send(reply.shard, Mail::PublishRefused { reply, reason });
                }
                Waiting::Ack { channel, .. } => {
                    let result = Err(AckError::Unavailable(why.clone()));
                    post.send(
                        reply.shard,
                        Mail::Acked {
                            reply,
                            channel,
                            result,
                        },
                    );
                }
            }
        }
    }
}

/// Why a stored publish was refused, as `Mail::PublishRefused` carries it:
/// the transports add "; retry later" (HTTP `503`, `/ws` `unavailable`
/// with `retry_after`), so it is left out here.
pub fn refusal(r: &Refused) -> String {
    match r {
        Refused::Failed(reason) => format!("store unavailable: {reason}"),
        Refused::Busy { records, bytes } => format!(
            "store: too many publishes waiting for the disk ({records} records, {bytes} bytes)"
        ),
        Refused::Closed => "store: shutting down".into(),
    }
}

/// Now, in Unix milliseconds (what the store keeps of a publish time).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shard {
    /// `Mail::Durable` from the store's writer.
    pub(super) fn store_durable(&mut self, upto: u64) {
        match self.durable.as_mut() {
            Some(d) => d.release(upto, &mut self.hub, &mut self.post),
            None => tracing::error!(shard = self.id, "store report without a store (a bug)"),
        }
    }

    /// `Mail::StoreFailed` from the store's writer.
    pub(super) fn store_failed(&mut self, after: u64, reason: Arc<str>) {
        match self.durable.as_mut() {
            Some(d) => d.roll_back(after, reason, &mut self.hub, &mut self.post),
            None => tracing::error!(shard = self.id, "store report without a store (a bug)"),
        }
    }
}
