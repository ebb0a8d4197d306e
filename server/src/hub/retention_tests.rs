//! Retention on the owner: history bounded by count, bytes and age, and
//! inboxes that keep what their readers have not acknowledged. A virtual
//! clock (`Instant`s the tests choose) drives the age rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::ws::DataKind;
use proptest::prelude::*;

use super::{ChannelName, Cursor, Epoch, Hub, MsgId};
use crate::policy::{HistoryLimits, Namespace, Namespaces, Policy};

/// Default: 10 messages, 100 bytes, 60 s. `in:`: an inbox over 3
/// messages, no byte limit, 60 s of history and an `inbox-ttl` of 600 s
/// (hard bound 30 messages).
fn hub() -> Hub<u32> {
    let policy = |history| Policy {
        token: false,
        publish: false,
        presence: true,
        history,
        durable: false,
        owner: false,
        receipts: false,
    };
    let plain = HistoryLimits {
        max_messages: 10,
        max_age: Duration::from_secs(60),
        max_bytes: 100,
        inbox: None,
    };
    let inbox = HistoryLimits {
        max_messages: 3,
        max_age: Duration::from_secs(60),
        max_bytes: 0,
        inbox: Some(Duration::from_secs(600)),
    };
    let mut space = policy(inbox);
    space.durable = true;
    let spaces = vec![Namespace {
        prefix: "in:".into(),
        policy: space,
    }];
    let ns = Namespaces::new(policy(plain), spaces).unwrap();
    // Held until durable, so a tail can be taken back.
    Hub::new(0, 1, Epoch::from_bits(7), Arc::new(ns)).with_store(0, true)
}

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn who(sub: &str) -> Cursor {
    Cursor {
        sub: sub.into(),
        device: "".into(),
    }
}

fn send(h: &mut Hub<u32>, ch: &ChannelName, len: usize, at: Instant) -> u64 {
    let seq = send_held(h, ch, len, at);
    h.set_durable(ch, seq);
    seq
}

/// Published but not yet durable (the store has not said so).
fn send_held(h: &mut Hub<u32>, ch: &ChannelName, len: usize, at: Instant) -> u64 {
    let (m, _) = h.publish(ch, DataKind::Binary, Bytes::from(vec![b'x'; len]), at);
    m.id.seq
}

/// The seqs `ch`'s history holds.
fn kept(h: &Hub<u32>, ch: &ChannelName) -> Vec<u64> {
    // A channel with nothing left may have been collected.
    let Some(&idx) = h.index.get(ch.as_str()) else {
        return Vec::new();
    };
    let owned = h.channels[idx as usize].owned.as_ref().unwrap();
    owned.history.iter().map(|m| m.id.seq).collect()
}

fn ack(h: &mut Hub<u32>, ch: &ChannelName, sub: &str, seq: u64) {
    let id = MsgId {
        epoch: Epoch::from_bits(7),
        seq,
    };
    h.ack(ch, &who(sub), id).unwrap();
}

/// Every owned channel's `bytes` is what its history holds, and no
/// history is over its hard bound.
fn check(h: &Hub<u32>) {
    for (_, ch) in h.channels.iter() {
        if let Some(o) = ch.owned.as_ref() {
            assert_eq!(o.bytes, o.counted_bytes(), "bytes of {}", ch.name);
            assert!(o.history.len() <= o.limits.most_kept().max(1));
        }
    }
}

#[test]
fn bytes_trim_the_oldest_and_keep_the_newest() {
    let mut h = hub();
    let (ch, t) = (name("a"), Instant::now());
    for _ in 0..5 {
        send(&mut h, &ch, 30, t);
    }
    assert_eq!(kept(&h, &ch), [3, 4, 5], "90 of 100 bytes");
    assert_eq!(h.take_trims(), [(ch.clone(), 2), (ch.clone(), 3)]);
    send(&mut h, &ch, 500, t);
    assert_eq!(kept(&h, &ch), [6], "the newest stays, whatever its size");
    assert_eq!(h.take_trims(), [(ch.clone(), 6)]);
    send(&mut h, &ch, 10, t);
    assert_eq!(kept(&h, &ch), [7]);
    check(&h);
    // Taking back a tail and expiring keep the count right too.
    send_held(&mut h, &ch, 40, t);
    h.unpublish_tail(&ch, 8);
    assert_eq!(kept(&h, &ch), [7]);
    check(&h);
    h.expire(t + Duration::from_secs(61));
    assert!(kept(&h, &ch).is_empty());
    check(&h);
}

#[test]
fn restore_and_load_count_bytes_and_trim_to_the_limits() {
    let mut h = hub();
    let (ch, t) = (name("a"), Instant::now());
    let msg = |seq| {
        Arc::new(super::Message::stored(
            ch.clone(),
            MsgId {
                epoch: Epoch::from_bits(7),
                seq,
            },
            DataKind::Binary,
            Bytes::from(vec![b'x'; 40]),
            t,
        ))
    };
    h.restore(&ch, 1, 5, (1..=5).map(msg).collect());
    assert_eq!(kept(&h, &ch), [4, 5], "80 of 100 bytes");
    assert_eq!(
        h.take_trims(),
        [(ch.clone(), 4)],
        "the store drops the rest"
    );
    check(&h);
    // The store loaded only the newest (a tighter history-size than
    // what it holds, seqs 1..=5): it drops the older ones too.
    let other = name("b");
    let msg = |seq| {
        Arc::new(super::Message::stored(
            other.clone(),
            MsgId {
                epoch: Epoch::from_bits(7),
                seq,
            },
            DataKind::Binary,
            Bytes::from_static(b"m"),
            t,
        ))
    };
    h.restore(&other, 1, 5, (4..=5).map(msg).collect());
    assert_eq!(h.take_trims(), [(other.clone(), 4)]);
    h.restore(&other, 4, 5, (4..=5).map(msg).collect());
    assert!(h.take_trims().is_empty(), "nothing more stored than kept");
}

#[test]
fn an_inbox_keeps_what_is_not_acked_past_its_size() {
    let mut h = hub();
    let (ch, t) = (name("in:bob"), Instant::now());
    // Nobody read it yet: everything waits (a channel without cursors).
    for _ in 0..8 {
        send(&mut h, &ch, 10, t);
    }
    assert_eq!(kept(&h, &ch), (1..=8).collect::<Vec<_>>());
    // Its reader's first cursor starts below what waited.
    let (r, created) = h.owner_subscribe_durable(&ch, 0, None, &who("bob"), usize::MAX);
    assert_eq!(created, Some(0));
    assert_eq!(r.messages.len(), 8);
    ack(&mut h, &ch, "bob", 2);
    assert_eq!(
        kept(&h, &ch),
        [3, 4, 5, 6, 7, 8],
        "history-size 3, but 3..8 are unacked"
    );
    assert_eq!(h.take_trims(), [(ch.clone(), 3)]);
    ack(&mut h, &ch, "bob", 8);
    assert_eq!(kept(&h, &ch), [6, 7, 8], "acked: back to history-size");
    // Over history-ttl but not acked: kept; acked: dropped.
    for _ in 0..2 {
        send(&mut h, &ch, 10, t);
    }
    h.expire(t + Duration::from_secs(61));
    assert_eq!(kept(&h, &ch), [9, 10], "acked ones expire, unacked stay");
    // Past inbox-ttl even unacked messages go.
    h.expire(t + Duration::from_secs(601));
    assert!(kept(&h, &ch).is_empty());
    check(&h);
}

#[test]
fn the_lowest_cursor_holds_an_inbox() {
    let mut h = hub();
    let (ch, t) = (name("in:bob"), Instant::now());
    h.owner_subscribe_durable(&ch, 0, None, &who("bob"), usize::MAX);
    let phone = Cursor {
        sub: "bob".into(),
        device: "phone".into(),
    };
    h.owner_subscribe_durable(&ch, 0, None, &phone, usize::MAX);
    for _ in 0..6 {
        send(&mut h, &ch, 10, t);
    }
    ack(&mut h, &ch, "bob", 6);
    assert_eq!(kept(&h, &ch).len(), 6, "the phone has read nothing");
    h.ack(
        &ch,
        &phone,
        MsgId {
            epoch: Epoch::from_bits(7),
            seq: 5,
        },
    )
    .unwrap();
    assert_eq!(kept(&h, &ch), [4, 5, 6]);
}

#[test]
fn an_inbox_has_a_hard_bound() {
    let mut h = hub();
    let (ch, t) = (name("in:bob"), Instant::now());
    for _ in 0..40 {
        send(&mut h, &ch, 1, t);
    }
    assert_eq!(
        kept(&h, &ch),
        (11..=40).collect::<Vec<_>>(),
        "10 × history-size"
    );
    check(&h);
}

#[derive(Debug, Clone)]
enum Op {
    Publish {
        inbox: bool,
        len: usize,
        durable: bool,
    },
    Expire {
        secs: u64,
    },
    Ack {
        back: u64,
    },
    Unpublish {
        back: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0usize..80, any::<bool>())
            .prop_map(|(inbox, len, durable)| Op::Publish { inbox, len, durable }),
        1 => (0u64..700).prop_map(|secs| Op::Expire { secs }),
        2 => (0u64..10).prop_map(|back| Op::Ack { back }),
        1 => (0u64..4).prop_map(|back| Op::Unpublish { back }),
    ]
}

proptest! {
    /// `bytes` is the sum of the retained payloads after any mix of
    /// publishes, expiry, acks (which trim inboxes) and taken-back tails;
    /// a plain channel never holds more than its limits (bar the newest),
    /// an inbox never more than its hard bound, and an inbox drops
    /// nothing its cursor has not passed unless past inbox-ttl or the
    /// hard bound.
    #[test]
    fn bytes_always_match_what_history_holds(ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = hub();
        let (plain, inbox) = (name("a"), name("in:bob"));
        let t0 = Instant::now();
        let mut clock = t0;
        h.owner_subscribe_durable(&inbox, 0, None, &who("bob"), usize::MAX);
        let mut acked = 0;
        for op in ops {
            match op {
                Op::Publish { inbox: true, len, .. } => {
                    send(&mut h, &inbox, len, clock);
                }
                Op::Publish { inbox: false, len, durable } => {
                    if durable {
                        send(&mut h, &plain, len, clock);
                    } else {
                        send_held(&mut h, &plain, len, clock);
                    }
                }
                Op::Expire { secs } => {
                    clock += Duration::from_secs(secs / 10);
                    h.expire(clock);
                }
                Op::Ack { back } => {
                    let last = h.owner_position(&inbox).map_or(0, |p| p.seq);
                    let seq = last.saturating_sub(back);
                    if seq > acked {
                        ack(&mut h, &inbox, "bob", seq);
                        acked = seq;
                    }
                }
                Op::Unpublish { back } => {
                    let last = h.owner_position(&plain).map_or(0, |p| p.seq);
                    h.unpublish_tail(&plain, last.saturating_sub(back).max(1));
                }
            }
            check(&h);
            if let Some(&idx) = h.index.get(plain.as_str()) {
                let o = h.channels[idx as usize].owned.as_ref().unwrap();
                prop_assert!(o.history.len() <= 10);
                prop_assert!(o.bytes <= 100 || o.history.len() == 1);
            }
            let held = kept(&h, &inbox);
            let last = h.owner_position(&inbox).map_or(0, |p| p.seq);
            // Unacked messages not past inbox-ttl (a clock under 600 s
            // since the first) and under the hard bound are all there.
            if clock.duration_since(t0) <= Duration::from_secs(600) && last - acked <= 30 {
                let want: Vec<u64> = (acked + 1..=last).collect();
                prop_assert!(held.ends_with(&want), "held {held:?}, acked {acked}, last {last}");
            }
        }
    }
}

#[test]
fn a_restored_inbox_is_trimmed_once_its_cursors_are_back() {
    // What `shard::durable::Durable::new` does at start: messages, then
    // every cursor, then one `expire`.
    let mut h = hub();
    let (ch, t) = (name("in:bob"), Instant::now());
    let msg = |seq| {
        Arc::new(super::Message::stored(
            ch.clone(),
            MsgId {
                epoch: Epoch::from_bits(7),
                seq,
            },
            DataKind::Binary,
            Bytes::from_static(b"m"),
            t,
        ))
    };
    h.restore(&ch, 1, 8, (1..=8).map(msg).collect());
    assert_eq!(kept(&h, &ch).len(), 8, "no cursors yet: everything waits");
    let phone = Cursor {
        sub: "bob".into(),
        device: "phone".into(),
    };
    h.restore_cursor(&ch, who("bob"), 6);
    h.restore_cursor(&ch, phone, 4);
    h.expire(t);
    assert_eq!(
        kept(&h, &ch),
        [5, 6, 7, 8],
        "the phone's cursor holds 5 and 6"
    );
    assert_eq!(h.take_trims(), [(ch.clone(), 5)]);
    check(&h);
}
