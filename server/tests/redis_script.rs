//! The channel model in Redis (`cluster::script`) against a real
//! `redis-server` (Debian's; `scripts/cluster-deps.sh` installs it), started
//! on a free port for each test.

mod common;

use std::time::Duration;

use codec::ws::DataKind;
use futures_util::StreamExt;
use ringcast::cluster::script::{history_after, parse_message, Keys, PublishScript};
use ringcast::hub::{ChannelName, Epoch};
use ringcast::policy::HistoryLimits;

use common::redis_server::RedisServer as Redis;

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

fn limits(max_messages: usize, secs: u64) -> HistoryLimits {
    HistoryLimits {
        max_messages,
        max_age: Duration::from_secs(secs),
        max_bytes: 0,
        inbox: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn publishes_are_numbered_kept_trimmed_and_read_back() {
    let redis = Redis::start();
    let mut con = redis.connection().await;
    let script = PublishScript::default();
    let ch = channel("room:1");
    let epoch = Epoch::random();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let payload = [b'm', i, b':', 0xff];
        let id = (script.publish(
            &mut con,
            &ch,
            DataKind::Binary,
            &payload,
            limits(3, 60),
            now_ms(),
            epoch,
            false,
            None,
        ))
        .await
        .unwrap();
        ids.push(id);
    }
    assert!(ids.iter().all(|id| id.epoch == epoch), "{ids:?}");
    assert_eq!(
        ids.iter().map(|id| id.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Another node proposing another epoch does not change it.
    let other = script
        .publish(
            &mut con,
            &ch,
            DataKind::Text,
            "κόσμε".as_bytes(),
            limits(3, 60),
            now_ms(),
            Epoch::random(),
            false,
            None,
        )
        .await
        .unwrap();
    assert_eq!((other.epoch, other.seq), (epoch, 6));

    // History: the last three, oldest first, bytes as published.
    let h = history_after(&mut con, &ch, 0, 100).await.unwrap();
    assert_eq!(h.last, Some(other));
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(&h.messages[0].payload[..], [b'm', 3, b':', 0xff]);
    assert_eq!(h.messages[0].kind, DataKind::Binary);
    assert_eq!(
        (h.messages[2].kind, &h.messages[2].payload[..]),
        (DataKind::Text, "κόσμε".as_bytes())
    );
    assert!(h.messages[2].published_ms.abs_diff(now_ms()) < 10_000);
    let after5 = history_after(&mut con, &ch, 5, 100).await.unwrap();
    assert_eq!(
        after5.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [6]
    );
    let capped = history_after(&mut con, &ch, 0, 2).await.unwrap();
    assert_eq!(capped.messages.len(), 2);
    // An unknown channel: nothing.
    let none = history_after(&mut con, &channel("nobody"), 0, 10)
        .await
        .unwrap();
    assert_eq!((none.last, none.messages.len()), (None, 0));
}

#[tokio::test]
async fn subscribers_get_each_message_once_in_order() {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let ch = channel("news");
    pubsub.subscribe(Keys::of(&ch).topic).await.unwrap();
    let con = redis.connection().await;
    let script = PublishScript::default();
    let epoch = Epoch::random();
    // Two publishers at once: Redis orders them.
    let second = redis.connection().await;
    // Each publisher sends `<name><i>` for i in 0..200 on its own connection.
    let publisher = |name: char, mut con: redis::aio::MultiplexedConnection| {
        let (script, ch) = (&script, &ch);
        async move {
            for i in 0..200 {
                let body = format!("{name}{i}");
                script
                    .publish(
                        &mut con,
                        ch,
                        DataKind::Text,
                        body.as_bytes(),
                        limits(500, 60),
                        now_ms(),
                        epoch,
                        false,
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let (a, b) = (publisher('a', con), publisher('b', second));
    tokio::join!(a, b);
    let mut messages = pubsub.on_message();
    let mut got = Vec::new();
    while got.len() < 400 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        got.push(parse_message(m.get_payload_bytes()).expect("the script's format"));
    }
    let seqs: Vec<u64> = got.iter().map(|m| m.id.seq).collect();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "consecutive, once each"
    );
    // Each publisher's own messages in its order, interleaved as Redis ran them.
    let mine: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .filter(|p| p.starts_with('a'))
        .collect();
    assert_eq!(mine, (0..200).map(|i| format!("a{i}")).collect::<Vec<_>>());
    // History agrees with what Pub/Sub carried.
    let h = history_after(&mut redis.connection().await, &ch, 0, 1000)
        .await
        .unwrap();
    let from_history: Vec<_> = h
        .messages
        .iter()
        .map(|m| (m.seq, m.payload.clone()))
        .collect();
    let from_pubsub: Vec<_> = got.iter().map(|m| (m.id.seq, m.payload.clone())).collect();
    assert_eq!(from_history, from_pubsub);
}

#[tokio::test]
async fn a_channel_whose_keys_are_lost_starts_a_new_epoch_and_idle_history_expires() {
    let redis = Redis::start();
    let mut con = redis.connection().await;
    let script = PublishScript::default();
    let ch = channel("volatile");
    let first = Epoch::random();
    let before = script
        .publish(
            &mut con,
            &ch,
            DataKind::Text,
            b"x",
            limits(10, 60),
            now_ms(),
            first,
            false,
            None,
        )
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    let second = Epoch::random();
    let after = script
        .publish(
            &mut con,
            &ch,
            DataKind::Text,
            b"y",
            limits(10, 60),
            now_ms(),
            second,
            false,
            None,
        )
        .await
        .unwrap();
    assert_eq!((before.epoch, before.seq), (first, 1));
    assert_eq!(
        (after.epoch, after.seq),
        (second, 1),
        "a new epoch, never a silent restart of the old one"
    );

    // Keys live one history age past the last publish.
    let short = channel("short");
    script
        .publish(
            &mut con,
            &short,
            DataKind::Text,
            b"z",
            limits(10, 1),
            now_ms(),
            first,
            false,
            None,
        )
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(Keys::of(&short).log)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!((1..=1000).contains(&ttl), "{ttl}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The messages expired; the channel keeps its epoch and numbering, so
    // a client resuming is told what it missed (`evicted`), not `epoch`.
    let gone = history_after(&mut con, &short, 0, 10).await.unwrap();
    assert_eq!(gone.messages.len(), 0);
    assert_eq!(gone.last.map(|l| (l.epoch, l.seq)), Some((first, 1)));
    let meta_ttl: i64 = redis::cmd("PTTL")
        .arg(Keys::of(&short).meta)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        meta_ttl > 24 * 3600 * 1000,
        "the meta outlives the messages: {meta_ttl}"
    );

    // With a short meta TTL, an idle channel is forgotten altogether and
    // its next publish starts a new epoch.
    let brief = PublishScript::with_meta_ttl(Duration::from_millis(300));
    let idle = channel("idle");
    let one = brief
        .publish(
            &mut con,
            &idle,
            DataKind::Text,
            b"1",
            limits(10, 0),
            now_ms(),
            first,
            false,
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let two = brief
        .publish(
            &mut con,
            &idle,
            DataKind::Text,
            b"2",
            limits(10, 0),
            now_ms(),
            second,
            false,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (one.epoch, one.seq, two.epoch, two.seq),
        (first, 1, second, 1)
    );
}

/// `--fsync always` on Redis ≥ 7.2: the script goes with `WAITAOF 1 0` in
/// one pipeline, and the publish counts only when Redis reports its AOF
/// fsynced. On an older Redis (Debian 12 ships 7.0) `WAITAOF` is an
/// unknown command: the publish fails (the node refuses such a server
/// at start; see `cluster::persistence`), though the script ran.
#[tokio::test]
async fn a_publish_waiting_for_the_aof_is_answered_only_when_redis_fsynced_it() {
    let redis = Redis::start_with_aof("everysec");
    let mut con = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .unwrap();
    let modern = !(info.contains("redis_version:7.0.") || info.contains("redis_version:6."));
    let script = PublishScript::default();
    let ch = channel("waited");
    let epoch = Epoch::random();
    let wait = Some(Duration::from_millis(1500));
    let published = script
        .publish(
            &mut con,
            &ch,
            DataKind::Text,
            b"x",
            limits(10, 60),
            now_ms(),
            epoch,
            false,
            wait,
        )
        .await;
    match (modern, published) {
        (true, Ok(id)) => assert_eq!((id.epoch, id.seq), (epoch, 1)),
        (false, Err(e)) => assert!(e.to_string().contains("WAITAOF"), "{e}"),
        (_, other) => panic!("Redis {modern}: {other:?}"),
    }
    // Either way the script ran, in the same pipeline.
    let history = history_after(&mut con, &ch, 0, 10).await.unwrap();
    assert_eq!(history.messages.len(), 1);
}

/// The inbox rule in Redis (`inbox.lua`, run by an inbox's publish and by
/// `ack.lua`): nothing trimmed without cursors (up to 10 × history-size),
/// acked messages down to history-size, unacked past `inbox-ttl` gone.
#[tokio::test]
async fn an_inbox_keeps_what_its_lowest_cursor_has_not_passed() {
    use ringcast::cluster::cursors;
    use ringcast::hub::{Cursor, MsgId};

    let redis = Redis::start();
    let mut con = redis.connection().await;
    let script = PublishScript::default();
    let ch = channel("user:ann");
    let inbox = HistoryLimits {
        inbox: Some(Duration::from_secs(3600)),
        ..limits(2, 60)
    };
    let epoch = Epoch::random();
    let t0 = now_ms();
    let publish = |con: &mut redis::aio::MultiplexedConnection, at_ms: u64| {
        let script = &script;
        let ch = &ch;
        let mut con = con.clone();
        async move {
            (script.publish(
                &mut con,
                ch,
                DataKind::Text,
                b"m",
                inbox,
                at_ms,
                epoch,
                false,
                None,
            ))
            .await
            .unwrap()
        }
    };
    let kept = |con: &mut redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        let ch = ch.clone();
        async move {
            let h = history_after(&mut con, &ch, 0, 1000).await.unwrap();
            h.messages.iter().map(|m| m.seq).collect::<Vec<u64>>()
        }
    };
    // No cursor: everything waits, up to the hard bound of 20.
    for _ in 0..12 {
        publish(&mut con, t0).await;
    }
    assert_eq!(kept(&mut con).await, (1..=12).collect::<Vec<_>>());
    for _ in 0..13 {
        publish(&mut con, t0).await;
    }
    assert_eq!(kept(&mut con).await, (6..=25).collect::<Vec<_>>());

    // A first cursor starts below the oldest kept: what waited is unread.
    let ann = Cursor {
        sub: "ann".into(),
        device: "".into(),
    };
    let ttl = Duration::from_secs(60);
    let found = cursors::subscribe(&mut con, &ch, &ann, epoch, ttl, true)
        .await
        .unwrap();
    assert_eq!(
        (found.state.cursor.seq, found.state.unread, found.created),
        (5, 20, true)
    );
    // A cursor of another epoch has read nothing: it keeps everything.
    let mut raw = redis.connection().await;
    let stale = format!("{}-24", Epoch::random());
    redis::cmd("HSET")
        .arg(Keys::cursors(&ch))
        .arg(b"ann\0old".as_slice())
        .arg(&stale)
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    // `GET /unread` counts it as having read nothing of this epoch.
    let old = Cursor {
        sub: "ann".into(),
        device: "old".into(),
    };
    let standing = cursors::standing(&mut con, &ch, &old).await.unwrap();
    assert_eq!(
        standing.map(|s| (s.cursor.to_string(), s.unread)),
        Some((stale.clone(), 20))
    );
    let none = Cursor {
        sub: "ann".into(),
        device: "none".into(),
    };
    assert_eq!(cursors::standing(&mut con, &ch, &none).await.unwrap(), None);
    let ack = |con: &mut redis::aio::MultiplexedConnection, who: Cursor, seq: u64| {
        let mut con = con.clone();
        let ch = ch.clone();
        async move {
            let id = MsgId { epoch, seq };
            cursors::ack(&mut con, &ch, &who, id, true, ttl, inbox, t0, None)
                .await
                .unwrap()
                .unwrap()
                .state
        }
    };
    ack(&mut con, ann.clone(), 15).await;
    assert_eq!(kept(&mut con).await, (6..=25).collect::<Vec<_>>());
    // Without it, the ack frees 6–15 at once.
    redis::cmd("HDEL")
        .arg(Keys::cursors(&ch))
        .arg(b"ann\0old".as_slice())
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    let state = ack(&mut con, ann.clone(), 15).await;
    assert_eq!((state.cursor.seq, state.unread), (15, 10));
    assert_eq!(kept(&mut con).await, (16..=25).collect::<Vec<_>>());
    // A second device holds the inbox back to its own cursor.
    let phone = Cursor {
        sub: "ann".into(),
        device: "phone".into(),
    };
    ack(&mut con, phone.clone(), 18).await;
    ack(&mut con, ann.clone(), 25).await;
    assert_eq!(kept(&mut con).await, (19..=25).collect::<Vec<_>>());
    // All read: history-size stays, as in any channel.
    ack(&mut con, phone, 25).await;
    assert_eq!(kept(&mut con).await, [24, 25]);
    publish(&mut con, t0).await;
    assert_eq!(kept(&mut con).await, [25, 26]);

    // Unread past inbox-ttl: gone, whatever the cursors.
    for _ in 0..3 {
        publish(&mut con, t0).await;
    }
    assert_eq!(kept(&mut con).await, [26, 27, 28, 29]);
    let later = t0 + 3_600_001;
    publish(&mut con, later).await;
    assert_eq!(kept(&mut con).await, [30]);
    // The keys live at least inbox-ttl, not history-ttl (60 s).
    let pttl: i64 = redis::cmd("PTTL")
        .arg(Keys::of(&ch).log)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(pttl > 3_000_000, "{pttl}");
}
