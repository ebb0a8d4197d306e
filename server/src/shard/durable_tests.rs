//! Tests of the owner's side of the store (`durable.rs`) with a real
//! store in a temporary directory: publishes and acks go through
//! `owner::publish` and `owner::ack` as the shard's mail does, so these
//! tests sit beside both modules rather than inside `durable.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::ws::DataKind;

use crate::bus::{ConnHandle, Mail, Mailboxes, ReplyTo, StoreReports};
use crate::hub::{AckError, ChannelName, Cursor, Hub, MsgId, PublishItem};
use crate::metrics::ShardMetrics;
use crate::policy::{HistoryLimits, Namespaces, Policy};
use crate::store::{Fsync, Options, Store};

use super::conns::ShardHub;
use super::durable::*;
use super::owner;
use super::post::Post;

const ENOSPC: i32 = 28;

struct Node {
    dir: std::path::PathBuf,
    mail: Arc<Mailboxes>,
    store: Option<Store>,
    hub: ShardHub,
    post: Post,
    durable: Durable,
    metrics: ShardMetrics,
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node(tag: &str, fsync: Fsync) -> Node {
    node_with(tag, Options::new(fsync, 1))
}

fn node_with(tag: &str, options: Options) -> Node {
    node_ns(tag, options, false)
}

/// A node whose channels are durable and, with `receipts`, publish
/// receipts (`c`'s to `c:receipts`).
fn node_ns(tag: &str, options: Options, receipts: bool) -> Node {
    let fsync = options.fsync;
    let dir = std::env::temp_dir().join(format!("ringcast-durable-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mail = Mailboxes::new(1).unwrap();
    let opened = Store::open(&dir, options, Box::new(StoreReports(mail.clone())), &|_| {
        100
    })
    .unwrap();
    let namespaces = Arc::new(Namespaces::uniform(Policy {
        token: false,
        publish: false,
        presence: true,
        history: HistoryLimits {
            max_messages: 100,
            max_age: Duration::from_secs(60),
            max_bytes: 0,
            inbox: None,
        },
        durable: receipts,
        owner: false,
        receipts,
    }));
    let mut hub = Hub::new(0, 1, opened.recovered.epoch, namespaces)
        .with_store(opened.recovered.floor, fsync != Fsync::Never);
    let mut intakes = opened.intakes;
    let store = ShardStore {
        intake: intakes.remove(0),
        fsync,
        floor: opened.recovered.floor,
        channels: opened.recovered.channels,
        cursors: opened.recovered.cursors,
    };
    let durable = Durable::new(store, &mut hub, Instant::now());
    Node {
        dir,
        post: Post::new(0, mail.clone()),
        mail,
        store: Some(opened.store),
        hub,
        durable,
        metrics: ShardMetrics::default(),
    }
}

const REPLY: ReplyTo = ReplyTo {
    shard: 0,
    conn: ConnHandle(1),
    token: 1,
};

impl Node {
    fn publish(&mut self, payload: &'static str) {
        let item = PublishItem {
            index: 0,
            channel: ChannelName::new("c").unwrap(),
            kind: DataKind::Text,
            payload: Bytes::from_static(payload.as_bytes()),
            ephemeral: false,
        };
        owner::publish(
            &mut self.hub,
            &mut self.post,
            &self.metrics,
            Instant::now(),
            REPLY,
            vec![item],
            Some(&mut self.durable),
        );
    }

    /// The next report from the writer, handled as the shard would.
    fn handle_report(&mut self) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = self.mail.recv(0, self.mail.store()) {
                match &m {
                    Mail::Durable { upto } => {
                        self.durable.release(*upto, &mut self.hub, &mut self.post)
                    }
                    Mail::StoreFailed { after, reason } => self.durable.roll_back(
                        *after,
                        reason.clone(),
                        &mut self.hub,
                        &mut self.post,
                    ),
                    _ => {}
                }
                return m;
            }
            assert!(Instant::now() < deadline, "no report from the writer");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn replayable(&mut self) -> Vec<u64> {
        let ch = ChannelName::new("c").unwrap();
        let since = MsgId {
            epoch: self.hub.epoch(),
            seq: 0,
        };
        let r = self.hub.owner_subscribe(&ch, 0, Some(since), usize::MAX);
        r.messages.iter().map(|m| m.id.seq).collect()
    }
}

#[test]
fn at_always_a_publish_is_answered_and_delivered_only_once_durable() {
    let mut n = node("always", Fsync::Always);
    n.publish("a");
    n.publish("b");
    assert!(n.post.next_local().is_none(), "not answered yet");
    assert!(!n.post.has_fanouts(), "not delivered yet");
    assert!(n.replayable().is_empty(), "not replayed yet");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { upto: 1 }));
    for seq in [1, 2] {
        match n.post.next_local() {
            Some(Mail::Published { ids, .. }) => assert_eq!(ids[0].1.seq, seq),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n.post.take_fanouts().len(), 2);
    assert_eq!(n.replayable(), [1, 2]);
}

#[test]
fn at_never_a_publish_is_answered_at_once_and_still_stored() {
    let mut n = node("never", Fsync::Never);
    n.publish("a");
    assert!(matches!(n.post.next_local(), Some(Mail::Published { .. })));
    assert!(n.post.has_fanouts());
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { upto: 1 }));
    let store = n.store.take().unwrap();
    assert_eq!(store.stats().records, 1, "stored");
    store.shutdown().unwrap();
}

#[test]
fn a_failed_commit_refuses_the_held_publishes_and_every_later_one() {
    let mut n = node("failed", Fsync::Always);
    n.publish("kept");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { upto: 1 }));
    assert!(matches!(n.post.next_local(), Some(Mail::Published { .. })));
    n.post.take_fanouts();

    n.store.as_ref().unwrap().fail_next_commit(ENOSPC);
    n.publish("lost");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(
        n.handle_report(),
        Mail::StoreFailed { after: 1, .. }
    ));
    match n.post.next_local() {
        Some(Mail::PublishRefused { reason, .. }) => {
            assert!(reason.starts_with("store unavailable: "), "{reason}");
            assert!(reason.contains("os error 28"), "{reason}");
            assert!(
                !reason.contains("retry later"),
                "the transports add it: {reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!n.post.has_fanouts(), "never delivered");
    assert_eq!(n.replayable(), [1], "taken back out of history");

    // Later publishes are refused before an id is used.
    n.publish("refused");
    assert!(matches!(
        n.post.next_local(),
        Some(Mail::PublishRefused { .. })
    ));
    let ch = ChannelName::new("c").unwrap();
    assert_eq!(n.hub.owner_position(&ch).unwrap().seq, 1, "no seq used");
}

#[test]
fn a_full_queue_refuses_before_an_id_is_used_and_recovers() {
    let mut options = Options::new(Fsync::Always, 1);
    options.queue_records = 1;
    let mut n = node_with("busy", options);
    assert!(n.store.as_ref().unwrap().pause_writer());
    n.publish("queued");
    n.durable.submit(&mut n.hub, &mut n.post);
    n.publish("refused");
    match n.post.next_local() {
        Some(Mail::PublishRefused { reason, .. }) => assert!(
            reason.starts_with("store: too many publishes waiting for the disk (1 records"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    let ch = ChannelName::new("c").unwrap();
    assert_eq!(n.hub.owner_position(&ch).unwrap().seq, 1, "no seq used");
    n.store.as_ref().unwrap().resume_writer();
    assert!(matches!(n.handle_report(), Mail::Durable { upto: 1 }));
    assert!(matches!(n.post.next_local(), Some(Mail::Published { .. })));
    n.publish("accepted again");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { upto: 2 }));
    assert_eq!(n.replayable(), [1, 2]);
}

fn ann() -> Cursor {
    Cursor {
        sub: "ann".into(),
        device: "phone".into(),
    }
}

impl Node {
    /// A durable subscription of ann's phone, as `owner::subscribe` does.
    fn subscribe_durably(&mut self) -> crate::hub::Replay {
        let ch = ChannelName::new("c").unwrap();
        let (replay, created) = self
            .hub
            .owner_subscribe_durable(&ch, 0, None, &ann(), usize::MAX);
        if let Some(seq) = created {
            let cursor = MsgId {
                epoch: replay.epoch,
                seq,
            };
            self.durable.record_cursor(&ch, &ann(), cursor);
        }
        replay
    }

    fn ack(&mut self, seq: u64) {
        let id = MsgId {
            epoch: self.hub.epoch(),
            seq,
        };
        let ch = ChannelName::new("c").unwrap();
        owner::ack(
            &mut self.hub,
            &mut self.post,
            REPLY,
            ch,
            ann(),
            id,
            Some(&mut self.durable),
        );
    }

    fn acked(&mut self) -> Result<crate::hub::CursorState, AckError> {
        match self.post.next_local() {
            Some(Mail::Acked { result, .. }) => result,
            other => panic!("{other:?}"),
        }
    }

    /// Publishes `n` messages and lets them become durable.
    fn publish_durable(&mut self, n: usize) {
        for _ in 0..n {
            self.publish("m");
        }
        self.durable.submit(&mut self.hub, &mut self.post);
        assert!(matches!(self.handle_report(), Mail::Durable { .. }));
        while self.post.next_local().is_some() {}
        self.post.take_fanouts();
    }
}

#[test]
fn at_always_an_ack_is_answered_once_its_cursor_is_durable_and_survives_a_restart() {
    let mut n = node("ack-always", Fsync::Always);
    n.subscribe_durably();
    n.publish_durable(5);
    n.ack(3);
    assert!(n.post.next_local().is_none(), "held until durable");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { .. }));
    let state = n.acked().unwrap();
    assert_eq!((state.cursor.seq, state.unread), (3, 2));
    // An older ack moves nothing and is answered at once (nothing held).
    n.ack(2);
    assert_eq!(n.acked().unwrap().cursor.seq, 3);

    let store = n.store.take().unwrap();
    store.shutdown().unwrap();
    let mail = Mailboxes::new(1).unwrap();
    let reopened = Store::open(
        &n.dir,
        Options::new(Fsync::Always, 1),
        Box::new(StoreReports(mail)),
        &|_| 100,
    )
    .unwrap();
    let c = &reopened.recovered.cursors;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].channel.as_str(), &c[0].who, c[0].seq),
        ("c", &ann(), 3)
    );
}

#[test]
fn at_never_an_ack_is_answered_at_once_and_still_stored() {
    let mut n = node("ack-never", Fsync::Never);
    n.subscribe_durably();
    n.publish_durable(2);
    n.ack(2);
    assert_eq!(n.acked().unwrap().cursor.seq, 2, "answered at once");
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { .. }));
}

#[test]
fn a_failed_commit_refuses_a_held_ack_and_takes_its_cursor_back() {
    let mut n = node("ack-failed", Fsync::Always);
    n.subscribe_durably();
    n.publish_durable(4);
    n.ack(1);
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { .. }));
    assert_eq!(n.acked().unwrap().cursor.seq, 1);

    n.store.as_ref().unwrap().fail_next_commit(ENOSPC);
    n.ack(2);
    n.ack(3);
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::StoreFailed { .. }));
    for _ in 0..2 {
        match n.acked() {
            Err(AckError::Unavailable(why)) => assert!(why.contains("os error 28"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    let ch = ChannelName::new("c").unwrap();
    let state = n.hub.cursor(&ch, &ann()).unwrap();
    assert_eq!(state.cursor.seq, 1, "back where the durable ack left it");
    // Later acks are refused before anything moves.
    n.ack(4);
    assert!(matches!(n.acked(), Err(AckError::Unavailable(_))));
    assert_eq!(n.hub.cursor(&ch, &ann()).unwrap().cursor.seq, 1);
}

impl Node {
    /// The next mail the shard sent itself: a receipt, published as the
    /// receipts channel's owner does (`Mail::Receipt`); its payload.
    fn receipt(&mut self) -> serde_json::Value {
        let r = match self.post.next_local() {
            Some(Mail::Receipt(r)) => *r,
            other => panic!("no receipt: {other:?}"),
        };
        assert_eq!(r.to.as_str(), "c:receipts");
        owner::receipt(&mut self.hub, &mut self.post, Instant::now(), r);
        let out = self.post.take_fanouts();
        assert_eq!(out.len(), 1);
        let msg = &out[0].msg;
        assert_eq!(msg.channel.as_str(), "c:receipts");
        assert_eq!(msg.event, crate::hub::Event::Ephemeral, "live-only");
        assert_eq!(msg.id.seq, 0, "no id");
        assert!(!self.hub.keeps_history(&msg.channel), "no history");
        serde_json::from_slice(&msg.payload).unwrap()
    }

    fn no_receipt(&mut self) {
        assert!(self.post.next_local().is_none(), "no receipt expected");
    }
}

fn receipt_of(n: &Node, seq: u64) -> serde_json::Value {
    let id = MsgId {
        epoch: n.hub.epoch(),
        seq,
    };
    serde_json::json!({"type":"receipt","ch":"c","id":id.to_string(),"by":"ann","device":"phone"})
}

#[test]
fn at_always_a_receipt_goes_out_once_the_cursor_is_durable_and_only_when_it_moved() {
    let mut n = node_ns("receipt-always", Options::new(Fsync::Always, 1), true);
    n.subscribe_durably();
    n.publish_durable(5);
    n.ack(3);
    assert!(
        n.post.next_local().is_none(),
        "neither answer nor receipt yet"
    );
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { .. }));
    assert_eq!(n.acked().unwrap().cursor.seq, 3);
    assert_eq!(n.receipt(), receipt_of(&n, 3));
    n.no_receipt();
    // An older ack, or the same again, moves nothing: no receipt.
    n.ack(2);
    assert_eq!(n.acked().unwrap().cursor.seq, 3);
    n.no_receipt();
    n.ack(3);
    assert_eq!(n.acked().unwrap().cursor.seq, 3);
    n.no_receipt();
    // A refused ack: none either.
    n.ack(99);
    assert!(matches!(n.acked(), Err(AckError::Unknown { .. })));
    n.no_receipt();
    // Cumulative: one ack, one receipt naming the new cursor.
    n.ack(5);
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::Durable { .. }));
    assert_eq!(n.acked().unwrap().cursor.seq, 5);
    assert_eq!(n.receipt(), receipt_of(&n, 5));
    n.no_receipt();
}

#[test]
fn at_never_a_receipt_goes_out_with_the_answer() {
    let mut n = node_ns("receipt-never", Options::new(Fsync::Never, 1), true);
    n.subscribe_durably();
    n.publish_durable(2);
    n.ack(2);
    assert_eq!(n.acked().unwrap().cursor.seq, 2, "answered at once");
    assert_eq!(n.receipt(), receipt_of(&n, 2));
    n.no_receipt();
}

#[test]
fn an_ack_the_store_failed_publishes_no_receipt() {
    let mut n = node_ns("receipt-failed", Options::new(Fsync::Always, 1), true);
    n.subscribe_durably();
    n.publish_durable(4);
    n.store.as_ref().unwrap().fail_next_commit(ENOSPC);
    n.ack(2);
    n.durable.submit(&mut n.hub, &mut n.post);
    assert!(matches!(n.handle_report(), Mail::StoreFailed { .. }));
    assert!(matches!(n.acked(), Err(AckError::Unavailable(_))));
    n.no_receipt();
}

#[test]
fn without_receipts_an_ack_that_moves_a_cursor_publishes_nothing() {
    let mut n = node("receipt-off", Fsync::Never);
    n.subscribe_durably();
    n.publish_durable(2);
    n.ack(2);
    assert_eq!(n.acked().unwrap().cursor.seq, 2);
    n.no_receipt();
    assert!(!n.post.has_fanouts());
}
