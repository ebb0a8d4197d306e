//! Where a shard's mail goes.
//!
//! Mail for another shard is queued on the `from → to` queue at once and
//! that shard's doorbell is rung at the end of the turn (if it sleeps).
//! Mail a shard addresses to itself — it owns the channel a local client
//! subscribes or publishes to — goes through the same [`Mail`] types but a
//! local queue, handled right after the event that sent it, so there is one
//! code path whether the owner is this shard or another.
//!
//! Deliveries are held back: a published message's fan-out to local
//! subscribers runs after the turn's answers (a publisher's `200`, a
//! subscription's replay) have been handed to the kernel, so the publisher
//! never waits behind a fan-out to thousands of subscribers.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::{Mail, Mailboxes};
use crate::hub::{Message, Receipt, ShardSet};

/// A message to deliver to this shard's subscribers.
#[derive(Debug)]
pub struct Fanout {
    /// The message.
    pub msg: Arc<Message>,
    /// It came from another shard (copy its frame before sharing it, so
    /// the reference counts local subscribers touch stay on this core).
    pub remote: bool,
}

/// A shard's outgoing mail and held deliveries. See the module docs.
#[derive(Debug)]
pub struct Post {
    me: usize,
    mail: Arc<Mailboxes>,
    /// Mail to itself, in order.
    local: VecDeque<Mail>,
    /// Deliveries for the fan-out phase, in order.
    fanouts: Vec<Fanout>,
    /// Peers sent mail this turn (bit per shard).
    to_wake: u64,
    /// Of those, peers sent an answer someone waits for (a publish's ids,
    /// a replay, a presence list): woken before the fan-out, not after.
    answered: u64,
}

impl Post {
    /// Shard `me`'s post.
    pub fn new(me: usize, mail: Arc<Mailboxes>) -> Post {
        Post {
            me,
            mail,
            local: VecDeque::new(),
            fanouts: Vec::new(),
            to_wake: 0,
            answered: 0,
        }
    }

    /// This shard's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Every sender of mail: the shards, then the Redis bridge.
    pub fn senders(&self) -> std::ops::Range<usize> {
        self.mail.senders()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.mail.shards()
    }

    /// Sends `mail` to shard `to` (this one included).
    pub fn send(&mut self, to: usize, mail: Mail) {
        if to == self.me {
            self.local.push_back(mail);
        } else {
            if !matches!(mail, Mail::Deliver(_)) {
                self.answered |= 1 << to;
            }
            self.mail.send(self.me, to, mail);
            self.to_wake |= 1 << to;
        }
    }

    /// Mail this shard sent itself, oldest first.
    pub fn next_local(&mut self) -> Option<Mail> {
        self.local.pop_front()
    }

    /// Holds a delivery for the fan-out phase.
    pub fn fan_out(&mut self, msg: Arc<Message>, remote: bool) {
        self.fanouts.push(Fanout { msg, remote });
    }

    /// On a channel's owner: sends `msg` to every interested shard and
    /// holds it for this shard's fan-out.
    pub fn deliver(&mut self, msg: Arc<Message>, interested: ShardSet) {
        for shard in interested.iter() {
            self.send(shard, Mail::Deliver(msg.clone()));
        }
        self.fan_out(msg, false);
    }

    /// Sends `receipt` to the owner of its receipts channel, which
    /// publishes it (`owner::receipt`). Called where the ack is answered:
    /// at `--fsync always` once the cursor is durable.
    pub fn send_receipt(&mut self, receipt: Receipt) {
        let owner = receipt.to.owner(self.shards());
        self.send(owner, Mail::Receipt(Box::new(receipt)));
    }

    /// Whether deliveries are held.
    pub fn has_fanouts(&self) -> bool {
        !self.fanouts.is_empty()
    }

    /// Takes the held deliveries (hand the vector back with
    /// [`Post::return_fanouts`] to keep its allocation).
    pub fn take_fanouts(&mut self) -> Vec<Fanout> {
        std::mem::take(&mut self.fanouts)
    }

    /// Gives back an emptied vector from [`Post::take_fanouts`].
    pub fn return_fanouts(&mut self, mut v: Vec<Fanout>) {
        v.clear();
        if self.fanouts.is_empty() {
            self.fanouts = v;
        }
    }

    /// Takes the next mail from shard `from`.
    pub fn recv(&self, from: usize) -> Option<Mail> {
        self.mail.recv(self.me, from)
    }

    /// Rings the doorbell of every peer sent mail since the last call.
    pub fn wake_peers(&mut self) {
        self.wake(self.to_wake);
    }

    /// Rings the doorbell of the peers sent anything but deliveries since
    /// the last call (the rest are woken by [`Post::wake_peers`] at the end
    /// of the turn, after this shard's own fan-out, as a delivery is not
    /// more urgent there than here).
    pub fn wake_answered(&mut self) {
        self.wake(self.answered);
    }

    fn wake(&mut self, mut peers: u64) {
        self.to_wake &= !peers;
        self.answered &= !peers;
        while peers != 0 {
            let to = peers.trailing_zeros() as usize;
            peers &= peers - 1;
            self.mail.wake(to);
        }
    }
}
