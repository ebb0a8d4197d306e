//! Messages kept on a subscriber's shard for its subscriptions that fell
//! behind.
//!
//! A subscription whose connection's window is full *falls behind* (see
//! `shard/fanout.rs`): deliveries skip it, and from then on every stored
//! message of its channel that reaches this shard is kept here until no
//! subscription of the channel on this shard is behind at or before it.
//! Catch-ups are served from here, at the socket's pace, so a reader that
//! falls behind by more than the owner's history (a burst of more than
//! `--history-size` messages) still gets every message, in order, without
//! asking the owner.
//!
//! What is kept are the owner's `Arc<Message>`s: keeping one costs a
//! pointer. [`Backlogs::pinned`] counts the bytes they keep alive (payload
//! and frame) — an upper bound on what they add to the owner's history,
//! which may hold the same messages. It is bounded per subscription by
//! time (a subscription behind for `--max-lag` is closed) and node-wide by
//! `--max-pinned`, over which publishers are refused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashMap;

use super::message::Message;

/// The messages kept for one channel's subscriptions that are behind.
#[derive(Debug, Default)]
struct Backlog {
    /// Subscriptions of the channel on this shard that are behind.
    behind: u32,
    /// Stored messages since the oldest cursor that needs them, in
    /// sequence order without gaps.
    messages: VecDeque<Arc<Message>>,
}

/// What a catch-up from a backlog sends.
#[derive(Debug)]
pub struct CatchUp {
    /// The messages after the cursor, at most the budget.
    pub messages: Vec<Arc<Message>>,
    /// The last message this shard has of the channel.
    pub last_seq: u64,
    /// When the first message left out was published (`None`: the
    /// messages reach `last_seq`).
    pub rest_since: Option<Instant>,
}

/// The backlogs of one shard's channels, by local channel index.
#[derive(Debug, Default)]
pub struct Backlogs {
    by_chan: HashMap<u32, Backlog>,
    pinned: usize,
}

/// The bytes a kept message holds alive.
fn cost(m: &Message) -> usize {
    m.payload.len() + m.ws_frame.len()
}

impl Backlogs {
    /// A subscription of channel `chan` fell behind.
    pub fn fell_behind(&mut self, chan: u32) {
        self.by_chan.entry(chan).or_default().behind += 1;
    }

    /// A subscription of channel `chan` that was behind caught up or left.
    /// Once none is behind, the channel's backlog is dropped.
    pub fn caught_up(&mut self, chan: u32) {
        let Some(b) = self.by_chan.get_mut(&chan) else {
            return;
        };
        b.behind = b.behind.saturating_sub(1);
        if b.behind == 0 {
            let freed: usize = b.messages.iter().map(|m| cost(m)).sum();
            self.pinned -= freed;
            self.by_chan.remove(&chan);
        }
    }

    /// A stored message of channel `chan` reached this shard: kept if a
    /// subscription of the channel is behind.
    pub fn keep(&mut self, chan: u32, msg: &Arc<Message>) {
        if let Some(b) = self.by_chan.get_mut(&chan) {
            if b.messages.back().is_some_and(|m| m.id.seq >= msg.id.seq) {
                return; // already kept (delivered twice to this shard)
            }
            self.pinned += cost(msg);
            b.messages.push_back(msg.clone());
        }
    }

    /// The messages after `cursor`, at most `budget` bytes of frames (and
    /// always at least one); `None` when the backlog does not reach back to
    /// the message after `cursor` (the subscription fell behind in a
    /// replay, not here: its owner's history has what follows).
    pub fn catch_up(&self, chan: u32, cursor: u64, budget: usize) -> Option<CatchUp> {
        let b = self.by_chan.get(&chan)?;
        let first = b.messages.front()?.id.seq;
        let last_seq = b.messages.back()?.id.seq;
        if first > cursor + 1 {
            return None;
        }
        let skip = (cursor + 1 - first) as usize;
        let mut up = CatchUp {
            messages: Vec::new(),
            last_seq: last_seq.max(cursor),
            rest_since: None,
        };
        let mut bytes = 0;
        for m in b.messages.iter().skip(skip) {
            if !up.messages.is_empty() && bytes + m.ws_frame.len() > budget {
                up.rest_since = Some(m.published_at);
                break;
            }
            bytes += m.ws_frame.len();
            up.messages.push(m.clone());
        }
        Some(up)
    }

    /// Drops the messages of channel `chan` up to `cursor`, the oldest
    /// cursor of its subscriptions that are behind.
    pub fn trim(&mut self, chan: u32, cursor: u64) {
        let Some(b) = self.by_chan.get_mut(&chan) else {
            return;
        };
        while b.messages.front().is_some_and(|m| m.id.seq <= cursor) {
            let m = b.messages.pop_front().expect("a front message");
            self.pinned -= cost(&m);
        }
    }

    /// The bytes every backlog of this shard keeps alive.
    pub fn pinned(&self) -> usize {
        self.pinned
    }

    /// Channels with a subscription behind.
    pub fn channels(&self) -> usize {
        self.by_chan.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::channel::ChannelName;
    use crate::hub::id::{Epoch, MsgId};
    use crate::hub::message::Event;
    use bytes::Bytes;
    use codec::ws::DataKind;

    fn msg(seq: u64) -> Arc<Message> {
        Arc::new(Message {
            channel: ChannelName::new("c").unwrap(),
            id: MsgId {
                epoch: Epoch::from_bits(1),
                seq,
            },
            kind: DataKind::Binary,
            payload: Bytes::from(vec![0u8; 8]),
            ws_frame: Bytes::from(vec![0u8; 10]),
            published_at: Instant::now(),
            event: Event::Stored,
        })
    }

    fn seqs(up: &CatchUp) -> Vec<u64> {
        up.messages.iter().map(|m| m.id.seq).collect()
    }

    #[test]
    fn kept_while_behind_served_by_budget_and_freed_when_caught_up() {
        let mut b = Backlogs::default();
        b.keep(0, &msg(1));
        assert_eq!(b.pinned(), 0, "nobody behind: nothing kept");
        b.fell_behind(0);
        for seq in 2..=6 {
            b.keep(0, &msg(seq));
        }
        b.keep(0, &msg(6));
        assert_eq!(b.pinned(), 5 * 18);
        // Behind at 3: 4, 5, then the rest is left for the next catch-up.
        let up = b.catch_up(0, 3, 20).unwrap();
        assert_eq!((seqs(&up), up.last_seq), (vec![4, 5], 6));
        assert!(up.rest_since.is_some());
        let up = b.catch_up(0, 5, 20).unwrap();
        assert_eq!((seqs(&up), up.rest_since), (vec![6], None));
        // A budget under one frame still moves on by one.
        assert_eq!(seqs(&b.catch_up(0, 1, 1).unwrap()), [2]);
        // Before what is kept: not here.
        assert!(b.catch_up(0, 0, 100).is_none());
        assert!(b.catch_up(1, 3, 100).is_none());
        // Nothing after the cursor: live at it.
        let up = b.catch_up(0, 6, 100).unwrap();
        assert_eq!((up.messages.len(), up.last_seq), (0, 6));
        b.trim(0, 4);
        assert_eq!(b.pinned(), 2 * 18);
        assert!(b.catch_up(0, 3, 100).is_none());
        b.fell_behind(0);
        b.caught_up(0);
        assert_eq!((b.pinned(), b.channels()), (2 * 18, 1));
        b.caught_up(0);
        assert_eq!((b.pinned(), b.channels()), (0, 0));
    }
}
