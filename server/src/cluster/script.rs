//! The channel model in Redis: each channel's keys, the publish script,
//! history reads, and the Pub/Sub message format. docs/cluster.md says why
//! it is laid out this way.
//!
//! A channel `c` owns three names, all with the hash tag `{c}` so that on
//! Redis Cluster they share a slot (a script may touch them together, and
//! a sharded publish goes to that slot's node only):
//!
//! | name | what |
//! |---|---|
//! | `rc:{c}:meta` | hash: `epoch`, `seq` (the last sequence number issued) |
//! | `rc:{c}:log` | stream: the history, one entry per message with id `<seq>-0` and fields `k` (kind), `t` (publish time, ms), `d` (payload) |
//! | `rc:{c}` | the Pub/Sub topic: `<epoch>:<seq>:<kind>:<publish ms>:<node>:<payload>` |
//!
//! One script per publish takes the next sequence number, appends to the
//! history (trimmed to the history size), refreshes both keys' TTL, and
//! publishes — atomically, so a channel's order is Redis's order, the same
//! for every subscriber on every node. A channel whose keys were lost
//! (Redis restarted without persistence, or they expired) starts again
//! with the epoch the publishing node proposes: a client resuming with the
//! old one is told `reset` with reason `epoch`.
//!
//! No connection handling here: every call takes a connection.

use bytes::Bytes;
use codec::ws::DataKind;
use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use redis::RedisResult;

use crate::hub::{ChannelName, Epoch, Event, MsgId};
use crate::policy::HistoryLimits;

/// A channel's Redis names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Epoch and last sequence number.
    pub meta: String,
    /// The history stream.
    pub log: String,
    /// The Pub/Sub topic.
    pub topic: String,
}

impl Keys {
    /// The hash of `channel`'s durable cursors (`cluster::cursors`): not
    /// in [`Keys::of`], which every publish builds, since only the
    /// scripts of acks, durable subscriptions and inboxes touch it.
    pub fn cursors(channel: &ChannelName) -> String {
        format!("rc:{{{}}}:cur", channel.as_str())
    }

    /// The names of `channel`'s keys.
    pub fn of(channel: &ChannelName) -> Keys {
        let c = channel.as_str();
        Keys {
            meta: format!("rc:{{{c}}}:meta"),
            log: format!("rc:{{{c}}}:log"),
            topic: format!("rc:{{{c}}}"),
        }
    }
}

/// A message from a channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence number.
    pub seq: u64,
    /// Text or binary.
    pub kind: DataKind,
    /// The payload as published.
    pub payload: Bytes,
    /// When it was published, ms since the Unix epoch.
    pub published_ms: u64,
}

/// What a channel's history holds after a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The channel's epoch and last sequence number; `None` if Redis
    /// knows nothing of the channel.
    pub last: Option<MsgId>,
    /// The messages after the position asked for, oldest first.
    pub messages: Vec<Stored>,
}

/// A message as a channel's Pub/Sub topic carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its id.
    pub id: MsgId,
    /// When it was published, ms since the Unix epoch (the publishing
    /// node's clock).
    pub published_ms: u64,
    /// The publishing node, by its own epoch.
    pub node: Epoch,
    /// A stored message, or a live-only event (ephemeral, joined, left:
    /// sequence number 0).
    pub event: Event,
    /// Text or binary.
    pub kind: DataKind,
    /// The payload.
    pub payload: Bytes,
}

/// How long a channel's meta (epoch and last sequence number) outlives its
/// last publish or follow by default: 30 days. Longer than any history,
/// so that a channel keeps its epoch while its messages expire — a client
/// resuming after them is told `evicted` with what it missed, not `epoch`.
pub const META_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The source of the publish script of an inbox channel: the inbox rule,
/// then the publish script, which calls it when given the cursors' key.
pub const PUBLISH_INBOX_LUA: &str = concat!(include_str!("inbox.lua"), include_str!("publish.lua"));

/// The publish script, loaded once per connection by its hash.
#[derive(Debug)]
pub struct PublishScript {
    script: Script,
    /// The same with the inbox rule (`inbox.lua`): a separate script, so
    /// that every other channel's publish is exactly what it was.
    inbox: Script,
    meta_ttl_ms: u64,
    /// The publishing node, named in every message it publishes.
    node: Epoch,
}

impl Default for PublishScript {
    fn default() -> Self {
        PublishScript::with_meta_ttl(META_TTL)
    }
}

impl PublishScript {
    /// The script, with channels' meta kept `meta_ttl` after their last
    /// publish (see [`META_TTL`]).
    pub fn with_meta_ttl(meta_ttl: std::time::Duration) -> PublishScript {
        PublishScript {
            script: Script::new(include_str!("publish.lua")),
            inbox: Script::new(PUBLISH_INBOX_LUA),
            meta_ttl_ms: meta_ttl.as_millis().max(1) as u64,
            node: Epoch::NONE,
        }
    }

    /// The script as node `node` (its own epoch) runs it: its messages
    /// name it, so that it tells its own from others'.
    pub fn for_node(node: Epoch) -> PublishScript {
        PublishScript {
            node,
            ..PublishScript::default()
        }
    }

    /// Publishes to `channel` and returns the id Redis gave it. `epoch`
    /// is taken only by a channel that has none — make it fresh
    /// ([`Epoch::random`]) for each call, so that a channel whose keys were
    /// lost never starts again in an epoch it had; `sharded` publishes
    /// with `SPUBLISH` (Redis Cluster). With `waitaof`, answers only once
    /// Redis reports the write fsynced to its AOF ([`Script::run`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn publish<C: ConnectionLike>(
        &self,
        con: &mut C,
        channel: &ChannelName,
        kind: DataKind,
        payload: &[u8],
        history: HistoryLimits,
        now_ms: u64,
        epoch: Epoch,
        sharded: bool,
        waitaof: Option<std::time::Duration>,
    ) -> RedisResult<MsgId> {
        let keys = Keys::of(channel);
        // The keys outlive the last message by its age limit (at least a
        // second): an idle channel's history expires with its messages.
        // An inbox's live at least as long as its messages may wait.
        let ttl = match history.inbox {
            Some(inbox) => history.max_age.max(inbox),
            None => history.max_age,
        };
        let ttl_ms = ttl.as_millis().max(1000) as u64;
        // The same arguments for `EVALSHA` (the usual path, unchanged by
        // stage 8) and for `EVAL` + `WAITAOF` (`--fsync always`).
        macro_rules! args {
            ($c:expr) => {
                $c.arg(payload)
                    .arg(kind_tag(kind))
                    .arg(history.max_messages)
                    .arg(ttl_ms)
                    .arg(now_ms)
                    .arg(epoch.to_string())
                    .arg(&keys.topic)
                    .arg(if sharded { "1" } else { "0" })
                    .arg(self.meta_ttl_ms)
                    .arg(self.node.to_string())
            };
        }
        let (epoch, seq): (String, u64) = match (history.inbox, waitaof) {
            (None, None) => {
                let mut invocation = self.script.script.prepare_invoke();
                invocation.key(&keys.meta).key(&keys.log);
                args!(invocation);
                invocation.invoke_async(con).await?
            }
            (None, Some(timeout)) => {
                let mut pipe = self.script.eval(&[&keys.meta, &keys.log]);
                args!(pipe);
                Script::waiting(con, pipe, timeout).await?
            }
            (Some(inbox), waitaof) => {
                // The cursors decide what the inbox keeps (`inbox.lua`).
                let cursors = Keys::cursors(channel);
                let mut args = Args::default();
                args!(args)
                    .push(history.most_kept())
                    .push(inbox.as_millis().max(1) as u64);
                (self.inbox)
                    .run(con, &[&keys.meta, &keys.log, &cursors], &args, waitaof)
                    .await?
            }
        };
        Ok(MsgId {
            epoch: epoch.parse().map_err(|_| bad_reply("epoch", &epoch))?,
            seq,
        })
    }
}

/// A node starts following `channel`: gives it `epoch` if it has none (so
/// that every node agrees on the epoch from its first subscriber, before
/// any publish), keeps its meta `meta_ttl` longer, and reads its history
/// after sequence number 0, at most `max` messages — all in one round
/// trip.
pub async fn follow<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    epoch: Epoch,
    meta_ttl: std::time::Duration,
    max: usize,
) -> RedisResult<History> {
    let keys = Keys::of(channel);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HSETNX")
        .arg(&keys.meta)
        .arg("epoch")
        .arg(epoch.to_string())
        .ignore()
        .cmd("PEXPIRE")
        .arg(&keys.meta)
        .arg(meta_ttl.as_millis().max(1) as u64)
        .ignore();
    read_history(con, pipe, &keys, 0, max).await
}

/// The channel's history after sequence number `after`, at most `max`
/// messages, oldest first, with the channel's current epoch and last
/// sequence number.
pub async fn history_after<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    after: u64,
    max: usize,
) -> RedisResult<History> {
    let keys = Keys::of(channel);
    let mut pipe = redis::pipe();
    pipe.atomic();
    read_history(con, pipe, &keys, after, max).await
}

/// The channel's epoch and last sequence number (`None`: no keys).
pub async fn newest<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
) -> RedisResult<Option<MsgId>> {
    let (epoch, seq): (Option<String>, Option<u64>) = redis::cmd("HMGET")
        .arg(Keys::of(channel).meta)
        .arg("epoch")
        .arg("seq")
        .query_async(con)
        .await?;
    position(epoch, seq)
}

/// The position a channel's meta holds. A channel followed before its
/// first publish has an epoch and no sequence number yet: at 0.
fn position(epoch: Option<String>, seq: Option<u64>) -> RedisResult<Option<MsgId>> {
    match epoch {
        Some(e) => Ok(Some(MsgId {
            epoch: e.parse().map_err(|_| bad_reply("epoch", &e))?,
            seq: seq.unwrap_or(0),
        })),
        None => Ok(None),
    }
}

/// Runs `pipe` with the history read appended; its own commands must be
/// `ignore`d. The pipeline must be atomic (`MULTI`/`EXEC`): a publish
/// between reading the meta and the stream would leave the two out of
/// step — a message in the history past the last sequence number, or one
/// missing from it.
async fn read_history<C: ConnectionLike>(
    con: &mut C,
    mut pipe: redis::Pipeline,
    keys: &Keys,
    after: u64,
    max: usize,
) -> RedisResult<History> {
    pipe.cmd("HMGET")
        .arg(&keys.meta)
        .arg("epoch")
        .arg("seq")
        .cmd("XRANGE")
        .arg(&keys.log)
        .arg(format!("{}-0", after + 1))
        .arg("+")
        .arg("COUNT")
        .arg(max);
    let ((epoch, seq), range): ((Option<String>, Option<u64>), StreamRangeReply) =
        pipe.query_async(con).await?;
    let last = position(epoch, seq)?;
    let mut messages = Vec::with_capacity(range.ids.len());
    for entry in range.ids {
        let seq = (entry
            .id
            .split_once('-')
            .map_or(entry.id.as_str(), |(s, _)| s))
        .parse()
        .map_err(|_| bad_reply("stream id", &entry.id))?;
        let field = |name: &str| -> RedisResult<Vec<u8>> {
            match entry.map.get(name) {
                Some(v) => redis::from_redis_value(v.clone()).map_err(Into::into),
                None => Err(bad_reply("stream entry without", name)),
            }
        };
        let kind = parse_kind(&field("k")?).ok_or_else(|| bad_reply("kind", "k"))?;
        let published_ms = std::str::from_utf8(&field("t")?)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad_reply("publish time", "t"))?;
        messages.push(Stored {
            seq,
            kind,
            payload: Bytes::from(field("d")?),
            published_ms,
        });
    }
    Ok(History { last, messages })
}

/// Parses a Pub/Sub message of a channel's topic; `None` if it is not one
/// the publish script wrote.
pub fn parse_message(raw: &[u8]) -> Option<Published> {
    let mut parts = raw.splitn(6, |&b| b == b':');
    let epoch: Epoch = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let tag = parts.next()?;
    let published_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let node = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let payload = Bytes::copy_from_slice(parts.next()?);
    let (kind, event) = match (tag, seq) {
        (b"j", 0) => (DataKind::Text, Event::Joined),
        (b"l", 0) => (DataKind::Text, Event::Left),
        (_, 0) => (parse_kind(tag)?, Event::Ephemeral),
        _ => (parse_kind(tag)?, Event::Stored),
    };
    if kind == DataKind::Text && std::str::from_utf8(&payload).is_err() {
        return None;
    }
    Some(Published {
        id: MsgId { epoch, seq },
        published_ms,
        node,
        kind,
        payload,
        event,
    })
}

/// The Pub/Sub message of a live-only event (an ephemeral message, a
/// member joining or leaving): no id (sequence number 0), never stored.
pub fn live_message(
    event: Event,
    kind: DataKind,
    payload: &[u8],
    node: Epoch,
    now_ms: u64,
) -> Vec<u8> {
    let tag = match event {
        Event::Joined => "j",
        Event::Left => "l",
        _ => kind_tag(kind),
    };
    let mut v = format!("000000000000:0:{tag}:{now_ms}:{node}:").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Presence across nodes: one sorted set per channel, `rc:{c}:presence`,
/// whose elements are `<node>|<member>` scored by when the entry expires
/// (ms since the Unix epoch). Each node adds its members when they join,
/// removes them when they leave, and refreshes them all every heartbeat;
/// the entries of a node that died expire, and whichever node sweeps
/// them first announces them gone.
pub mod presence {
    use super::*;

    fn key(channel: &ChannelName) -> String {
        format!("rc:{{{}}}:presence", channel.as_str())
    }

    /// The set lives as long as its longest-lived entry: `GT` pushes an
    /// expiry out, `NX` gives one to a set that has none (just created).
    fn expire_at(channel: &ChannelName, at_ms: u64, condition: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("PEXPIREAT");
        cmd.arg(key(channel)).arg(at_ms).arg(condition);
        cmd
    }

    fn element(node: Epoch, member: &str) -> String {
        format!("{node}|{member}")
    }

    /// One node's entries in one channel's presence.
    #[derive(Debug, Clone, Copy)]
    pub struct Entries<'a> {
        /// The channel.
        pub channel: &'a ChannelName,
        /// The node, by its own epoch.
        pub node: Epoch,
        /// A Redis Cluster: announce with `SPUBLISH`.
        pub sharded: bool,
    }

    impl Entries<'_> {
        /// Announces `event` for `member` on the channel's topic.
        fn announce(&self, event: Event, member: &str, now_ms: u64) -> redis::Cmd {
            let publish = if self.sharded { "SPUBLISH" } else { "PUBLISH" };
            let text = member.as_bytes();
            let mut cmd = redis::cmd(publish);
            cmd.arg(Keys::of(self.channel).topic).arg(live_message(
                event,
                DataKind::Text,
                text,
                self.node,
                now_ms,
            ));
            cmd
        }
    }

    /// `member` joined on `node`: adds its entry and announces it on the
    /// channel's topic, atomically.
    pub async fn join<C: ConnectionLike>(
        con: &mut C,
        at: Entries<'_>,
        member: &str,
        expires_ms: u64,
        now_ms: u64,
    ) -> RedisResult<()> {
        let Entries { channel, node, .. } = at;
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(key(channel))
            .arg(expires_ms)
            .arg(element(node, member))
            .ignore()
            .add_command(expire_at(channel, expires_ms, "GT"))
            .ignore()
            .add_command(expire_at(channel, expires_ms, "NX"))
            .ignore()
            .add_command(at.announce(Event::Joined, member, now_ms))
            .ignore()
            .query_async(con)
            .await
    }

    /// `member` left `node`: removes its entry and announces it.
    pub async fn leave<C: ConnectionLike>(
        con: &mut C,
        at: Entries<'_>,
        member: &str,
        now_ms: u64,
    ) -> RedisResult<()> {
        redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(key(at.channel))
            .arg(element(at.node, member))
            .ignore()
            .add_command(at.announce(Event::Left, member, now_ms))
            .ignore()
            .query_async(con)
            .await
    }

    /// The heartbeat: `node`'s members of `channel` live until
    /// `expires_ms`; entries already expired (a dead node's) are removed
    /// and announced as left, by whichever node sweeps first.
    pub async fn refresh<C: ConnectionLike>(
        con: &mut C,
        at: Entries<'_>,
        members: &[String],
        expires_ms: u64,
        now_ms: u64,
    ) -> RedisResult<u64> {
        let Entries { channel, node, .. } = at;
        if !members.is_empty() {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(key(channel));
            for m in members {
                zadd.arg(expires_ms).arg(element(node, m));
            }
            let mut pipe = redis::pipe();
            pipe.add_command(zadd)
                .ignore()
                .add_command(expire_at(channel, expires_ms, "GT"))
                .ignore()
                .add_command(expire_at(channel, expires_ms, "NX"))
                .ignore();
            pipe.query_async::<()>(con).await?;
        }
        redis::Script::new(include_str!("presence_sweep.lua"))
            .key(key(channel))
            .arg(now_ms)
            .arg(Keys::of(channel).topic)
            .arg(if at.sharded { "1" } else { "0" })
            .invoke_async(con)
            .await
    }

    /// The members present on `channel` on any node whose entry has not
    /// expired, each once, sorted.
    pub async fn members<C: ConnectionLike>(
        con: &mut C,
        channel: &ChannelName,
        now_ms: u64,
    ) -> RedisResult<Vec<String>> {
        let elements: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(key(channel))
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async(con)
            .await?;
        let mut members: Vec<String> = (elements.into_iter())
            .filter_map(|e| e.split_once('|').map(|(_, m)| m.to_string()))
            .collect();
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }
}

/// A Lua script: its source, and the `redis::Script` that runs it by
/// hash (`EVALSHA`, loading it when Redis has not).
#[derive(Debug)]
pub struct Script {
    source: &'static str,
    script: redis::Script,
}

/// A script's arguments, as bytes.
#[derive(Debug, Default)]
pub struct Args(Vec<Vec<u8>>);

impl Args {
    /// Appends one argument.
    pub fn push<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Args {
        self.0.extend(arg.to_redis_args());
        self
    }

    /// Appends one argument, as `redis::Cmd::arg` does (so that the
    /// publish's argument list is written once for a command and for
    /// `Args`).
    pub fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Args {
        self.push(arg)
    }
}

impl Script {
    /// The script with this source.
    pub fn new(source: &'static str) -> Script {
        Script {
            source,
            script: redis::Script::new(source),
        }
    }

    /// Runs the script. With `waitaof`, the script goes as `EVAL` in one
    /// pipeline with `WAITAOF 1 0 <waitaof>` — on the same connection,
    /// so `WAITAOF` waits for this write (a reconnection in between
    /// would otherwise make it wait for nothing) — and the call fails
    /// unless Redis reports its AOF fsynced in time.
    pub async fn run<C: ConnectionLike, T: redis::FromRedisValue>(
        &self,
        con: &mut C,
        keys: &[&str],
        args: &Args,
        waitaof: Option<std::time::Duration>,
    ) -> RedisResult<T> {
        let Some(timeout) = waitaof else {
            let mut invocation = self.script.prepare_invoke();
            for k in keys {
                invocation.key(*k);
            }
            for a in &args.0 {
                invocation.arg(a.as_slice());
            }
            return invocation.invoke_async(con).await;
        };
        let mut pipe = self.eval(keys);
        for a in &args.0 {
            pipe.arg(a.as_slice());
        }
        Script::waiting(con, pipe, timeout).await
    }

    /// A pipeline whose one command, so far, is `EVAL <source> <keys>`:
    /// the caller appends the arguments.
    fn eval(&self, keys: &[&str]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let eval = pipe.cmd("EVAL").arg(self.source).arg(keys.len());
        for k in keys {
            eval.arg(*k);
        }
        pipe
    }

    /// Sends `pipe` (an `EVAL`) followed by `WAITAOF 1 0 <timeout>`: the
    /// script's answer, once Redis reports its AOF fsynced.
    async fn waiting<C: ConnectionLike, T: redis::FromRedisValue>(
        con: &mut C,
        mut pipe: redis::Pipeline,
        timeout: std::time::Duration,
    ) -> RedisResult<T> {
        pipe.cmd("WAITAOF")
            .arg(1)
            .arg(0)
            .arg(timeout.as_millis().max(1) as u64);
        let (answer, (local, _replicas)): (T, (u64, u64)) = pipe.query_async(con).await?;
        if local < 1 {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "WAITAOF",
                format!(
                    "the append-only file was not fsynced within {} ms",
                    timeout.as_millis()
                ),
            )));
        }
        Ok(answer)
    }
}

/// `channel` was found behind a node's copy in the same epoch (`at`):
/// Redis lost the tail of its data and would number those messages again.
/// Gives it the fresh `epoch` unless another node already did, or Redis is
/// no longer behind; true if this call changed it (`rollback.lua`).
pub async fn new_epoch_after_rollback<C: ConnectionLike>(
    con: &mut C,
    channel: &ChannelName,
    at: MsgId,
    epoch: Epoch,
) -> RedisResult<bool> {
    static ROLLBACK: std::sync::LazyLock<Script> =
        std::sync::LazyLock::new(|| Script::new(include_str!("rollback.lua")));
    let mut args = Args::default();
    args.push(at.epoch.to_string())
        .push(at.seq)
        .push(epoch.to_string());
    let changed: u8 = ROLLBACK
        .run(con, &[&Keys::of(channel).meta], &args, None)
        .await?;
    Ok(changed == 1)
}

fn kind_tag(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Text => "t",
        DataKind::Binary => "b",
    }
}

fn parse_kind(tag: &[u8]) -> Option<DataKind> {
    match tag {
        b"t" => Some(DataKind::Text),
        b"b" => Some(DataKind::Binary),
        _ => None,
    }
}

/// A reply from Redis that is not what the script returns.
pub(super) fn bad_reply(what: &str, got: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply from Redis",
        format!("{what}: {got:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let k = Keys::of(&ChannelName::new("chat:room-1").unwrap());
        assert_eq!(k.meta, "rc:{chat:room-1}:meta");
        assert_eq!(k.log, "rc:{chat:room-1}:log");
        assert_eq!(k.topic, "rc:{chat:room-1}");
    }

    #[test]
    fn messages_parse_whatever_their_payload() {
        let m = parse_message(b"000000000abc:7:b:1700000000000:0000000000ff:\x00:\xff:").unwrap();
        assert_eq!(m.id.to_string(), "000000000abc-7");
        assert_eq!(
            (m.published_ms, m.node.to_string().as_str()),
            (1_700_000_000_000, "0000000000ff")
        );
        assert_eq!(
            (m.kind, &m.payload[..], m.event),
            (DataKind::Binary, &b"\x00:\xff:"[..], Event::Stored)
        );
        let t = parse_message("000000000abc:8:t:1:0000000000ff:κόσμε:".as_bytes()).unwrap();
        assert_eq!(&t.payload[..], "κόσμε:".as_bytes());
        let node = "0000000000ff".parse().unwrap();
        for (event, kind, payload) in [
            (Event::Ephemeral, DataKind::Binary, &b"typing"[..]),
            (Event::Joined, DataKind::Text, b"ann|x:y"),
            (Event::Left, DataKind::Text, b"0100000005000001"),
        ] {
            let raw = live_message(event, kind, payload, node, 5);
            let p = parse_message(&raw).unwrap();
            assert_eq!(
                (p.event, p.kind, &p.payload[..], p.id.seq, p.node),
                (event, kind, payload, 0, node)
            );
        }
        for bad in [
            &b"000000000abc:8:t:1:0000000000ff:\xff"[..],
            b"xyz:1:t:1:0000000000ff:a",
            b"000000000abc:x:t:1:0000000000ff:a",
            b"000000000abc:1:q:1:0000000000ff:a",
            b"000000000abc:1:j:1:0000000000ff:a",
            b"000000000abc:1:t:x:0000000000ff:a",
            b"000000000abc:1:t:1:node:a",
            b"000000000abc:1",
        ] {
            assert!(parse_message(bad).is_none(), "{bad:?}");
        }
    }
}
