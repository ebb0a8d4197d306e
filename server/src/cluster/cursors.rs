//! Durable cursors in a cluster: Redis keeps them, next to the channel's
//! history, so a client acks on one node and resumes on another.
//!
//! A channel `c`'s cursors are the hash `rc:{c}:cur` (same hash tag as its
//! other keys, so on Redis Cluster one slot holds them all and a script
//! may touch them together): field `<sub>\0<device>`, value
//! `<epoch>-<seq>`, the last message acknowledged. The hash lives as long
//! as the channel's meta ([`script::META_TTL`](super::script::META_TTL))
//! after its last use.
//!
//! Two scripts, each atomic with the channel's publishes:
//! * `cursor.lua` (a durable subscription): the cursor, created "from
//!   now" (the channel's last seq) when there is none;
//! * `ack.lua`: checks the id against the channel's epoch and last seq,
//!   moves the cursor forward (never back; a cursor of an older epoch is
//!   replaced), and says where it stands and whether it moved (a
//!   receipt is owed only then).
//!
//! The rules are those of a single node (`hub::cursor`); only the place
//! differs.
//!
//! `GET /unread` needs the channels where an identity has cursors, which
//! no channel's keys can say: the set `rc:who:{<sub>}` indexes them (a
//! key of its own, in the identity's slot, so not atomic with the
//! cursors — a channel in it may have lost its cursor, and is then
//! skipped). A channel is added when a cursor is made there, and the set
//! lives as long as the cursors after each durable subscription.
//!
//! No connection handling here: every call takes a connection.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::hub::cursor;
use crate::hub::{AckError, ChannelName, Cursor, CursorState, Epoch, MsgId};
use crate::policy::HistoryLimits;

use super::script::{bad_reply, Args, Keys, Script};

static CURSOR: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("cursor.lua")));
/// With the inbox rule first: an ack in an inbox trims what every cursor
/// has passed (`inbox.lua`).
static ACK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(concat!(include_str!("inbox.lua"), include_str!("ack.lua")))
});

/// The set of the channels where `sub` has cursors (any device).
pub fn index_key(sub: &str) -> String {
    format!("rc:who:{{{sub}}}")
}

/// Records that `sub` has a cursor on `channel`; the index lives `ttl`
/// from now, as the cursors do after their last use.
pub async fn index<C: ConnectionLike>(
    con: &mut C,
    sub: &str,
    channel: &ChannelName,
    ttl: std::time::Duration,
) -> RedisResult<()> {
    let key = index_key(sub);
    redis::pipe()
        .cmd("SADD")
        .arg(&key)
        .arg(channel.as_str())
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(ttl.as_millis().max(1) as u64)
        .ignore()
        .query_async(con)
        .await
}

/// The channels in `sub`'s index, as stored (not checked).
pub async fn indexed<C: ConnectionLike>(con: &mut C, sub: &str) -> RedisResult<Vec<String>> {
    redis::cmd("SMEMBERS")
        .arg(index_key(sub))
        .query_async(con)
        .await
}

/// Where `who`'s cursor on `channel` stands, as an ack would answer:
/// `None` when it has none there (or the channel's keys are gone). One
/// atomic read of the cursor, the meta and the oldest entry.
pub async fn standing<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    who: &Cursor,
) -> RedisResult<Option<CursorState>> {
    let keys = Keys::of(channel);
    let (cursor, (epoch, seq), first): (
        Option<String>,
        (Option<String>, Option<u64>),
        redis::streams::StreamRangeReply,
    ) = redis::pipe()
        .atomic()
        .cmd("HGET")
        .arg(Keys::cursors(channel))
        .arg(field(who))
        .cmd("HMGET")
        .arg(&keys.meta)
        .arg("epoch")
        .arg("seq")
        .cmd("XRANGE")
        .arg(&keys.log)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await?;
    let (Some(cursor), Some(epoch)) = (cursor, epoch) else {
        return Ok(None);
    };
    let cursor: MsgId = cursor.parse().map_err(|_| bad_reply("cursor", &cursor))?;
    let epoch: Epoch = epoch.parse().map_err(|_| bad_reply("epoch", &epoch))?;
    let seq = seq.unwrap_or(0);
    let oldest = match first.ids.first() {
        Some(entry) => (entry
            .id
            .split_once('-')
            .map_or(entry.id.as_str(), |(s, _)| s))
        .parse()
        .map_err(|_| bad_reply("stream id", &entry.id))?,
        None => seq + 1,
    };
    // A cursor of an older epoch has read nothing of this one.
    let at = if cursor.epoch == epoch { cursor.seq } else { 0 };
    Ok(Some(CursorState {
        cursor,
        unread: cursor::unread(seq, oldest, at),
    }))
}

/// The field of `who`'s cursor: `<sub>\0<device>` (a `sub` may hold any
/// character but NUL; a device never does).
pub fn field(who: &Cursor) -> Vec<u8> {
    let mut f = Vec::with_capacity(who.sub.len() + 1 + who.device.len());
    f.extend_from_slice(who.sub.as_bytes());
    f.push(0);
    f.extend_from_slice(who.device.as_bytes());
    f
}

/// Where a durable subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The cursor and its unread count.
    pub state: CursorState,
    /// The cursor was made by this call ("from now").
    pub created: bool,
}

/// `who`'s cursor on `channel`, created at the channel's last seq when
/// it has none — in an `inbox`, just below its oldest message, so that
/// its reader gets what waited for it, as on a single node (a channel
/// without keys gets `epoch`, as a follow gives it). `ttl`: how long the
/// cursors outlive this use.
pub async fn subscribe<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    who: &Cursor,
    epoch: Epoch,
    ttl: std::time::Duration,
    inbox: bool,
) -> RedisResult<Found> {
    let keys = Keys::of(channel);
    let mut args = Args::default();
    args.push(field(who))
        .push(epoch.to_string())
        .push(ttl.as_millis().max(1) as u64)
        .push(if inbox { "1" } else { "0" });
    let (cursor, epoch, seq, oldest, created): (String, String, u64, u64, u8) = CURSOR
        .run(
            con,
            &[&keys.meta, &keys.log, &Keys::cursors(channel)],
            &args,
            None,
        )
        .await?;
    let cursor: MsgId = cursor.parse().map_err(|_| bad_reply("cursor", &cursor))?;
    let epoch: Epoch = epoch.parse().map_err(|_| bad_reply("epoch", &epoch))?;
    // A cursor of an older epoch (the channel's keys were lost since):
    // everything retained is unread, and the subscription resumes from
    // it, so its client is told `reset` (epoch).
    let at = if cursor.epoch == epoch { cursor.seq } else { 0 };
    Ok(Found {
        state: CursorState {
            cursor,
            unread: cursor::unread(seq, oldest, at),
        },
        created: created == 1,
    })
}

/// What an accepted ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Where the cursor stands now, and its unread count.
    pub state: CursorState,
    /// The ack made the cursor (the identity's index then gains the
    /// channel).
    pub created: bool,
    /// The cursor stands elsewhere than before (made, moved forward, or
    /// replaced from an older epoch): what a receipt is owed for, as on a
    /// single node (`hub::Acked::moved`). `false` for an ack of an id the
    /// cursor had passed.
    pub moved: bool,
}

/// `who` acknowledges `channel` up to `id`: the cursor moves forward, and
/// the answer says where it stands, or why the ack is refused.
/// `durable_ns`: the channel's namespace has `durable = true` (an ack may
/// create a cursor there; elsewhere only a durable subscription does).
/// With `waitaof`, answered once Redis reports the cursor fsynced. In an
/// inbox (`history.inbox`), what every cursor has now passed leaves the
/// history at once (`inbox.lua`; `now_ms` judges the inbox TTL). With
/// the state, whether the ack made the cursor (for the index) and whether
/// it moved it (for a receipt).
#[allow(clippy::too_many_arguments)]
pub async fn ack<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    who: &Cursor,
    id: MsgId,
    durable_ns: bool,
    ttl: std::time::Duration,
    history: HistoryLimits,
    now_ms: u64,
    waitaof: Option<std::time::Duration>,
) -> RedisResult<Result<Acked, AckError>> {
    let keys = Keys::of(channel);
    let mut args = Args::default();
    args.push(field(who))
        .push(id.epoch.to_string())
        .push(id.seq)
        .push(ttl.as_millis().max(1) as u64)
        .push(if durable_ns { "1" } else { "0" });
    if let Some(inbox) = history.inbox {
        args.push(history.max_messages)
            .push(now_ms)
            .push(inbox.as_millis().max(1) as u64);
    }
    let (verdict, epoch, seq, at, oldest, created, moved): (String, String, u64, u64, u64, u8, u8) =
        ACK.run(
            con,
            &[&keys.meta, &keys.log, &Keys::cursors(channel)],
            &args,
            waitaof,
        )
        .await?;
    let epoch = match epoch.as_str() {
        // Redis knows nothing of the channel: nothing was shown.
        "" => id.epoch,
        e => e.parse().map_err(|_| bad_reply("epoch", e))?,
    };
    let channel = channel.clone();
    Ok(match verdict.as_str() {
        "ok" => Ok(Acked {
            state: CursorState {
                cursor: MsgId { epoch, seq: at },
                unread: cursor::unread(seq, oldest, at),
            },
            created: created == 1,
            moved: moved == 1,
        }),
        "stale" => Err(AckError::Stale { channel, id, epoch }),
        "unknown" => Err(AckError::Unknown {
            channel,
            id,
            newest: MsgId { epoch, seq },
        }),
        "not_durable" => Err(AckError::NotDurable {
            channel,
            why: format!("its namespace has durable = false and {who} did not subscribe durably"),
        }),
        other => return Err(bad_reply("ack verdict", other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_channels_hash_tag() {
        let c = ChannelName::new("room:7").unwrap();
        assert_eq!(Keys::cursors(&c), "rc:{room:7}:cur");
        assert!(Keys::of(&c).meta.starts_with("rc:{room:7}"));
        let who = Cursor {
            sub: "bob".into(),
            device: "phone".into(),
        };
        assert_eq!(field(&who), b"bob\0phone");
        let plain = Cursor {
            sub: "bob".into(),
            device: "".into(),
        };
        assert_eq!(field(&plain), b"bob\0");
    }
}
