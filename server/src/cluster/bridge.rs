//! The bridge: the one thread of a node that talks to Redis.
//!
//! Shards never wait on Redis. They hand the bridge commands ([`ToRedis`])
//! through two queues — a bounded one for publishes (full: the publish is
//! refused with `503`, nothing is accepted that cannot be stored) and an
//! unbounded one for follows, reads and probes, which are bounded by the
//! channels the node follows — and it answers through the node's
//! mailboxes ([`Mail`]), as one more sender next to the shards, so its
//! mail to a shard is FIFO like a shard's.
//!
//! Inside, a current-thread tokio runtime drives, per Redis server:
//! * a command connection (`ConnectionManager`: reconnects by itself, and
//!   times out a command after [`COMMAND_TIMEOUT`], so a paused Redis
//!   refuses publishes instead of hanging them). Every publish is its own
//!   task, spawned in arrival order; a current-thread runtime polls new
//!   tasks first-come first-served, so commands reach the connection in
//!   that order and many are in flight at once (pipelined);
//! * a Pub/Sub connection, watched by a supervisor task: it forwards each
//!   message to its channel's owner shard, pings every second, and when the
//!   connection is lost or stops answering marks the node unready,
//!   reconnects with jittered backoff, subscribes again to every channel
//!   followed, and tells every shard ([`FromRedis::Resubscribed`]) to read
//!   what it missed from history before going on.
//!
//! What the shards do with it is in `shard::relay`; docs/cluster.md has
//! the whole design and every failure's behaviour.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::ws::DataKind;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use tokio::sync::mpsc;

use crate::bus::{FromRedis, Mail, Mailboxes, ReplyTo};
use crate::hub::{
    AckError, ChannelName, Cursor, CursorState, Epoch, Event, Member, Message, MsgId, PublishItem,
    Receipt,
};
use crate::metrics::Histogram;
use crate::policy::Namespaces;

use super::connection::{self, Commands, Subscriptions};
use super::cursors;
use super::persistence::{self, Policy};
use super::placement::Placement;
use super::script::{self, Keys, PublishScript, Stored, META_TTL};

/// How long a Redis command may take before it counts as failed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the Pub/Sub connection is pinged, and how long a ping may
/// take before the connection counts as lost.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Publishes waiting for the bridge, past which publishes are refused.
const PUBLISH_QUEUE: usize = 65_536;

/// Reconnect backoff: from this, doubling, to [`BACKOFF_MAX`], each wait
/// with up to half of it added at random so that nodes do not reconnect in
/// step.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a shard asks of Redis.
#[derive(Debug)]
pub enum ToRedis {
    /// Store and publish these messages, in order; answer `reply` with
    /// [`Mail::Published`], or [`Mail::PublishRefused`].
    Publish {
        /// Who to answer.
        reply: ReplyTo,
        /// What to publish.
        items: Vec<PublishItem>,
    },
    /// The node's first interest in `channel`: subscribe to its topic, then
    /// read its history; answer its owner with [`FromRedis::History`].
    Follow(ChannelName),
    /// Read `channel`'s history after sequence number `after` (a gap, a
    /// new epoch, a reconnection); answer its owner.
    Read {
        /// The channel.
        channel: ChannelName,
        /// The last sequence number the owner has.
        after: u64,
    },
    /// Nobody on the node follows `channel` any more.
    Unfollow(ChannelName),
    /// The periodic check: each channel's newest id, answered to its owner
    /// as [`FromRedis::Newest`].
    Probe(Vec<ChannelName>),
    /// `member`'s first connection on this node joined `channel`'s
    /// presence: record it for every node, and announce it to all.
    PresenceJoin {
        /// The channel.
        channel: ChannelName,
        /// Who.
        member: String,
    },
    /// `member`'s last connection on this node left.
    PresenceLeave {
        /// The channel.
        channel: ChannelName,
        /// Who.
        member: String,
    },
    /// The heartbeat of this node's members of `channel` (and a sweep of
    /// dead nodes' entries).
    PresenceRefresh {
        /// The channel.
        channel: ChannelName,
        /// This node's members of it.
        members: Vec<String>,
    },
    /// Who is present on `channel` on any node: answer `reply` with
    /// [`Mail::Presence`].
    PresenceQuery {
        /// Who asked.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
    },
    /// A durable subscription: `who`'s cursor on `channel` (created "from
    /// now" if it has none); answer its owner with [`FromRedis::Cursor`].
    Cursor {
        /// The owner's number for the request.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// Whose cursor.
        who: Cursor,
    },
    /// `channel` is behind the owner's copy (`at`) in the same epoch:
    /// give it a new epoch in Redis, then read its history after 0.
    RolledBack {
        /// The channel.
        channel: ChannelName,
        /// The owner's position.
        at: MsgId,
    },
    /// `GET /unread` in a cluster: `who`'s cursors on every channel its
    /// index names ([`cursors::index_key`]); answer `reply` with
    /// [`Mail::Unread`].
    Unread {
        /// Who to answer.
        reply: ReplyTo,
        /// Whose cursors.
        who: Cursor,
    },
    /// An ack: move `who`'s cursor on `channel` to `id`; answer `reply`
    /// with [`Mail::Acked`], then, when it moved the cursor in a
    /// namespace with `receipts`, publish its receipt.
    Ack {
        /// Who to answer.
        reply: ReplyTo,
        /// The channel.
        channel: ChannelName,
        /// Whose cursor.
        who: Cursor,
        /// The id acknowledged.
        id: MsgId,
        /// The acking connection is subscribed durably as `who`: the ack
        /// may create the cursor (lost with Redis's data).
        subscribed: bool,
    },
}

/// The bridge's health and counters, read by `/readyz`, `/healthz` and
/// `/metrics`; written by the bridge and the shards' relays (relaxed: each
/// is a count or a flag on its own).
#[derive(Debug, Default)]
pub struct Health {
    /// Per Redis server: the Pub/Sub connection is up and subscribed.
    pubsub_up: Vec<AtomicBool>,
    /// Publishes Redis did not take (unreachable, timed out, queue full).
    pub publish_failures: AtomicU64,
    /// Publishes stored.
    pub publishes: AtomicU64,
    /// Gaps in a channel's ids filled from history.
    pub gaps_repaired: AtomicU64,
    /// Channels found behind Redis by the periodic check (a stalled
    /// Pub/Sub), then caught up.
    pub stalls_repaired: AtomicU64,
    /// Channels whose epoch changed (their keys were lost in Redis).
    pub epoch_changes: AtomicU64,
    /// Pub/Sub reconnections.
    pub reconnects: AtomicU64,
    /// Publish round trips to Redis (the script's, as the bridge sees it).
    pub publish_seconds: Histogram,
    /// From publish (on any node's clock) to the owner shard handing the
    /// message to the fan-out, for messages published on this node and on
    /// others.
    pub delivery_seconds: [Histogram; 2],
}

/// Index of [`Health::delivery_seconds`]: published on this node, or on
/// another.
pub fn origin(local: bool) -> usize {
    usize::from(!local)
}

impl Health {
    fn new(servers: usize) -> Health {
        Health {
            pubsub_up: (0..servers).map(|_| AtomicBool::new(false)).collect(),
            ..Health::default()
        }
    }

    /// Whether every Pub/Sub connection is up: the node can be trusted to
    /// deliver what is published anywhere.
    pub fn is_up(&self) -> bool {
        self.pubsub_up.iter().all(|u| u.load(Ordering::Relaxed))
    }

    /// Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ringcast_redis_pubsub_up Whether the Pub/Sub connection to each Redis server is up.\n# TYPE ringcast_redis_pubsub_up gauge"
        );
        for (i, up) in self.pubsub_up.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringcast_redis_pubsub_up{{server=\"{i}\"}} {}",
                u8::from(up.load(Ordering::Relaxed))
            );
        }
        let counters = [
            (
                "publishes_total",
                "Publishes stored in Redis.",
                &self.publishes,
            ),
            (
                "publish_failures_total",
                "Publishes refused because Redis did not take them.",
                &self.publish_failures,
            ),
            (
                "gaps_repaired_total",
                "Gaps in a channel's ids filled from Redis history.",
                &self.gaps_repaired,
            ),
            (
                "stalls_repaired_total",
                "Channels found behind Redis by the periodic check, then caught up.",
                &self.stalls_repaired,
            ),
            (
                "epoch_changes_total",
                "Channels whose keys were lost in Redis (new epoch).",
                &self.epoch_changes,
            ),
            (
                "reconnects_total",
                "Pub/Sub reconnections.",
                &self.reconnects,
            ),
        ];
        for (name, help, value) in counters {
            let value = get(value);
            let _ = writeln!(out, "# HELP ringcast_redis_{name} {help}\n# TYPE ringcast_redis_{name} counter\nringcast_redis_{name} {value}");
        }
        let name = "ringcast_redis_publish_seconds";
        let _ = writeln!(out, "# HELP {name} Publish round trips to Redis (the publish script).\n# TYPE {name} histogram");
        self.publish_seconds.render(out, name, "");
        let name = "ringcast_cluster_delivery_seconds";
        let _ = writeln!(out, "# HELP {name} From publish (the publishing node's clock) to this node's fan-out, by where it was published.\n# TYPE {name} histogram");
        self.delivery_seconds[origin(true)].render(out, name, "origin=\"local\"");
        self.delivery_seconds[origin(false)].render(out, name, "origin=\"remote\"");
    }
}

/// What the shards hold of the bridge: its queues and its health.
#[derive(Debug, Clone)]
pub struct Bridge {
    publishes: mpsc::Sender<ToRedis>,
    control: mpsc::UnboundedSender<ToRedis>,
    health: Arc<Health>,
}

impl Bridge {
    /// Hands a publish to the bridge; `Err` with the reason when its queue
    /// is full (answer `503`).
    pub fn publish(&self, reply: ReplyTo, items: Vec<PublishItem>) -> Result<(), &'static str> {
        self.write(ToRedis::Publish { reply, items })
    }

    /// Hands an ack to the bridge (the publishes' queue: an ack is a
    /// write); `Err` with the reason when it cannot take it.
    pub fn ack(
        &self,
        reply: ReplyTo,
        channel: ChannelName,
        who: Cursor,
        id: MsgId,
        subscribed: bool,
    ) -> Result<(), &'static str> {
        self.write(ToRedis::Ack {
            reply,
            channel,
            who,
            id,
            subscribed,
        })
    }

    fn write(&self, command: ToRedis) -> Result<(), &'static str> {
        if !self.health.is_up() {
            self.health.publish_failures.fetch_add(1, Ordering::Relaxed);
            return Err("redis unavailable (its Pub/Sub connection is down)");
        }
        match self.publishes.try_send(command) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.health.publish_failures.fetch_add(1, Ordering::Relaxed);
                Err("redis: too many publishes waiting; try again")
            }
        }
    }

    /// Sends a follow, read, unfollow or probe.
    pub fn ask(&self, command: ToRedis) {
        debug_assert!(!matches!(
            command,
            ToRedis::Publish { .. } | ToRedis::Ack { .. }
        ));
        let _ = self.control.send(command);
    }

    /// Health and counters.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// What the bridge needs to know of the node.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Redis URLs; channels are spread over them ([`Placement`]).
    pub servers: Vec<String>,
    /// Keep trying at start instead of failing when Redis is unreachable.
    pub wait: bool,
    /// Proposed to channels that have no epoch yet.
    pub epoch: Epoch,
    /// History limits per channel.
    pub namespaces: Arc<Namespaces>,
    /// How long a node's presence entries live unrefreshed: a node that
    /// dies stops counting after this (it refreshes every third of it).
    pub presence_ttl: Duration,
    /// `--fsync` in the cluster: what Redis's persistence must give
    /// (`None`: nothing asked; see [`persistence`]).
    pub fsync: Option<Policy>,
}

/// Starts the bridge thread: connects to every Redis server (failing, or
/// with `wait` retrying, when one is unreachable), then serves the shards.
pub fn start(config: BridgeConfig, mail: Arc<Mailboxes>) -> Result<Bridge, String> {
    let seeds = connection::cluster_seeds(&config.servers)?;
    let (placement, clients) = match &seeds {
        // A Redis Cluster places channels itself, by slot.
        Some(_) => (Placement::new(&config.servers[..1])?, Vec::new()),
        None => {
            let clients = (config.servers.iter())
                .map(|url| {
                    redis::Client::open(url.as_str()).map_err(|e| format!("--redis {url}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (Placement::new(&config.servers)?, clients)
        }
    };
    let health = Arc::new(Health::new(placement.servers().len()));
    let (publishes, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (control, control_rx) = mpsc::unbounded_channel();
    let bridge = Bridge {
        publishes,
        control,
        health: health.clone(),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("redis-bridge".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the Redis bridge: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let (mut servers, pushes) = match &seeds {
                    Some(seeds) => match connect_cluster(&config, seeds).await {
                        Ok((server, pushes)) => (vec![server], Some(pushes)),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    },
                    None => match connect_all(&config, &clients).await {
                        Ok(s) => (s, None),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    },
                };
                let checked = match seeds {
                    None => check_servers(config.fsync, &mut servers).await,
                    Some(_) => {
                        let cluster = &servers[0];
                        persistence::check_cluster(config.fsync, &cluster.url, &cluster.commands)
                            .await
                    }
                };
                if let Err(e) = checked {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let script = PublishScript::for_node(config.epoch);
                let state = Arc::new(State {
                    config,
                    placement,
                    servers,
                    mail,
                    health,
                    script,
                    sharded: pushes.is_some(),
                });
                match pushes {
                    Some(pushes) => {
                        tokio::spawn(supervise_cluster(state.clone(), pushes));
                    }
                    None => {
                        for (i, client) in clients.into_iter().enumerate() {
                            tokio::spawn(supervise_pubsub(state.clone(), client, i));
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                serve(state, publish_rx, control_rx).await;
            });
        })
        .map_err(|e| format!("cannot start the Redis bridge thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the Redis bridge thread died at start".to_string())??;
    Ok(bridge)
}

/// One Redis server, or a Redis Cluster, as the bridge holds it.
struct Server {
    url: String,
    commands: Commands,
    /// The channels followed on this server, subscribed again on every
    /// reconnection.
    followed: Mutex<HashSet<ChannelName>>,
    /// Where topics are subscribed, while Pub/Sub is up.
    sink: Mutex<Option<Subscriptions>>,
    /// `--fsync always` on a server that needs `WAITAOF` for it.
    waitaof: bool,
}

/// How long `WAITAOF` may wait for Redis's fsync: within the command
/// timeout, and past `appendfsync everysec`'s second.
const WAITAOF_TIMEOUT: Duration = Duration::from_millis(1500);

impl Server {
    /// With `--fsync always` (where Redis needs it): how long to wait for
    /// the AOF's fsync after a write.
    fn waitaof(&self) -> Option<Duration> {
        self.waitaof.then_some(WAITAOF_TIMEOUT)
    }
}

/// Checks each server's persistence against `--fsync` (see
/// [`persistence::check_server`]) and notes which need `WAITAOF`.
async fn check_servers(policy: Option<Policy>, servers: &mut [Server]) -> Result<(), String> {
    for server in servers {
        let mode = persistence::check_server(policy, &server.url, &server.commands).await?;
        server.waitaof = mode.waitaof;
    }
    Ok(())
}

struct State {
    config: BridgeConfig,
    placement: Placement,
    servers: Vec<Server>,
    mail: Arc<Mailboxes>,
    health: Arc<Health>,
    script: PublishScript,
    /// A Redis Cluster: sharded Pub/Sub (`SPUBLISH`, `SSUBSCRIBE`).
    sharded: bool,
}

impl State {
    /// This node's presence entries in `channel`.
    fn entries<'a>(&self, channel: &'a ChannelName) -> script::presence::Entries<'a> {
        script::presence::Entries {
            channel,
            node: self.config.epoch,
            sharded: self.sharded,
        }
    }

    /// The command that publishes on a topic.
    fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn server_of(&self, channel: &ChannelName) -> &Server {
        &self.servers[self.placement.server_of(channel.as_str())]
    }

    /// The server of a key that is no channel's (an identity's index),
    /// placed by its name as channels are.
    fn server_of_key(&self, key: &str) -> &Server {
        &self.servers[self.placement.server_of(key)]
    }

    /// How many messages `channel` keeps in history (its namespace's).
    /// The most messages a read of `channel`'s history asks for: what
    /// Redis may keep of it — for an inbox its hard bound, since Redis
    /// keeps there what its cursors have not passed, and the owner's copy
    /// must reach back as far (see `shard::relay`).
    fn history_size(&self, channel: &ChannelName) -> usize {
        let policy = self.config.namespaces.of(channel.as_str());
        policy.history.most_kept()
    }

    fn shards(&self) -> usize {
        self.mail.shards()
    }

    /// Mails `mail` to shard `to` and wakes it.
    fn send(&self, to: usize, mail: Mail) {
        self.mail.send(self.mail.bridge(), to, mail);
        self.mail.wake(to);
    }

    /// Mails a channel's owner shard.
    fn tell_owner(&self, channel: &ChannelName, what: FromRedis) {
        self.send(channel.owner(self.shards()), Mail::Redis(what));
    }
}

async fn connect_all(
    config: &BridgeConfig,
    clients: &[redis::Client],
) -> Result<Vec<Server>, String> {
    let mut servers = Vec::with_capacity(clients.len());
    for (url, client) in config.servers.iter().zip(clients) {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(BACKOFF_MAX);
        let mut delay = BACKOFF_MIN;
        let commands = loop {
            // One plain attempt first, so that an unreachable server is
            // reported at once rather than after the manager's retries.
            let probe =
                tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "connection timed out"))
                    })
                    .and_then(|r| r);
            let attempt = match probe {
                Ok(_) => {
                    ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(c) => break c,
                Err(e) if config.wait => {
                    tracing::warn!("redis {url} unreachable ({e}); waiting (--redis-wait)");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
                Err(e) => {
                    return Err(format!(
                    "redis {url} unreachable: {e} (start it, or pass --redis-wait to wait for it)"
                ))
                }
            }
        };
        servers.push(Server {
            url: url.clone(),
            commands: Commands::Server(commands),
            followed: Mutex::new(HashSet::new()),
            sink: Mutex::new(None),
            waitaof: false,
        });
    }
    Ok(servers)
}

/// Connects to a Redis Cluster (RESP3, so that sharded Pub/Sub messages
/// arrive as pushes on the returned queue).
async fn connect_cluster(
    config: &BridgeConfig,
    seeds: &[String],
) -> Result<(Server, mpsc::UnboundedReceiver<redis::PushInfo>), String> {
    let label = config.servers.join(",");
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_tx)
        .connection_timeout(COMMAND_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .build()
        .map_err(|e| format!("--redis {label}: {e}"))?;
    let mut delay = BACKOFF_MIN;
    let con = loop {
        let attempt =
            tokio::time::timeout(COMMAND_TIMEOUT * 2, client.get_async_connection()).await;
        match attempt {
            Ok(Ok(c)) => break c,
            failed if config.wait => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!("redis cluster {label} unreachable ({why}); waiting (--redis-wait)");
                tokio::time::sleep(jittered(delay)).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "redis cluster {label} unreachable: {e} (start it, or pass --redis-wait to wait for it)"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "redis cluster {label} unreachable: timed out (start it, or pass --redis-wait to wait for it)"
                ))
            }
        }
    };
    let server = Server {
        url: label,
        commands: Commands::Cluster(con.clone()),
        followed: Mutex::new(HashSet::new()),
        sink: Mutex::new(Some(Subscriptions::Cluster(con))),
        waitaof: false,
    };
    Ok((server, push_rx))
}

/// Takes the shards' commands until the node exits.
async fn serve(
    state: Arc<State>,
    mut publishes: mpsc::Receiver<ToRedis>,
    mut control: mpsc::UnboundedReceiver<ToRedis>,
) {
    loop {
        let command = tokio::select! {
            biased;
            Some(c) = control.recv() => c,
            Some(c) = publishes.recv() => c,
            else => return,
        };
        let state = state.clone();
        match command {
            ToRedis::Publish { reply, items } => {
                tokio::spawn(publish(state, reply, items));
            }
            ToRedis::Follow(channel) => {
                tokio::spawn(follow(state, channel));
            }
            ToRedis::Read { channel, after } => {
                tokio::spawn(read(state, channel, after));
            }
            ToRedis::Unfollow(channel) => {
                tokio::spawn(unfollow(state, channel));
            }
            ToRedis::Probe(channels) => {
                tokio::spawn(probe(state, channels));
            }
            ToRedis::PresenceJoin { channel, member } => {
                tokio::spawn(presence_join(state, channel, member));
            }
            ToRedis::PresenceLeave { channel, member } => {
                tokio::spawn(presence_leave(state, channel, member));
            }
            ToRedis::PresenceRefresh { channel, members } => {
                tokio::spawn(presence_refresh(state, channel, members));
            }
            ToRedis::PresenceQuery { reply, channel } => {
                tokio::spawn(presence_query(state, reply, channel));
            }
            ToRedis::Unread { reply, who } => {
                tokio::spawn(unread(state, reply, who));
            }
            ToRedis::RolledBack { channel, at } => {
                tokio::spawn(rolled_back(state, channel, at));
            }
            ToRedis::Cursor {
                token,
                channel,
                who,
            } => {
                tokio::spawn(cursor(state, token, channel, who));
            }
            ToRedis::Ack {
                reply,
                channel,
                who,
                id,
                subscribed,
            } => {
                tokio::spawn(ack(state, reply, channel, who, id, subscribed));
            }
        }
    }
}

async fn publish(state: Arc<State>, reply: ReplyTo, items: Vec<PublishItem>) {
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let server = state.server_of(&item.channel);
        let mut con = server.commands.clone();
        let started = Instant::now();
        let result = if item.ephemeral {
            publish_live(&state, &mut con, &item.channel, item.kind, &item.payload)
                .await
                .map(|()| MsgId {
                    epoch: state.config.epoch,
                    seq: 0,
                })
        } else {
            let history = state.config.namespaces.of(item.channel.as_str()).history;
            (state.script)
                .publish(
                    &mut con,
                    &item.channel,
                    item.kind,
                    &item.payload,
                    history,
                    unix_ms(),
                    Epoch::random(),
                    state.sharded,
                    server.waitaof(),
                )
                .await
        };
        match result {
            Ok(id) => {
                state.health.publish_seconds.observe(started.elapsed());
                state.health.publishes.fetch_add(1, Ordering::Relaxed);
                ids.push((item.index, id));
            }
            Err(e) => {
                state
                    .health
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "publish to {} refused: redis {} failed: {e}",
                    item.channel,
                    server.url
                );
                // What was stored before the failure keeps its id; the
                // request as a whole is refused, and the client retries.
                let reason = format!("redis unavailable ({})", e.category());
                state.send(reply.shard, Mail::PublishRefused { reply, reason });
                return;
            }
        }
    }
    state.send(reply.shard, Mail::Published { reply, ids });
}

/// Publishes a live-only message on `channel`'s topic: no number, no
/// history, no key written; every node following `channel` hands it to
/// its subscribers live (an ephemeral publish, or a receipt).
async fn publish_live(
    state: &State,
    con: &mut Commands,
    channel: &ChannelName,
    kind: DataKind,
    payload: &[u8],
) -> redis::RedisResult<()> {
    let message = script::live_message(
        Event::Ephemeral,
        kind,
        payload,
        state.config.epoch,
        unix_ms(),
    );
    redis::cmd(state.publish_command())
        .arg(Keys::of(channel).topic)
        .arg(message)
        .query_async::<()>(con)
        .await
}

/// Publishes a receipt on its receipts channel, after the ack it reports
/// was answered: live-only, as on a single node (`id: null`, ephemeral,
/// nothing stored in Redis — not through the publish script, which would
/// number it and make it a stored message with an id), on the receipts
/// channel's own server, so that every node following it delivers it. A
/// failure costs only the receipt (the cursor is stored, the ack answered):
/// it is logged, not passed on.
async fn publish_receipt(state: &State, receipt: Receipt) {
    let Receipt { to, payload } = receipt;
    let server = state.server_of(&to);
    let mut con = server.commands.clone();
    if let Err(e) = publish_live(state, &mut con, &to, DataKind::Text, &payload).await {
        tracing::warn!(
            "receipt on {to} not published: redis {} failed: {e}",
            server.url
        );
    }
}

async fn rolled_back(state: Arc<State>, channel: ChannelName, at: MsgId) {
    let server = state.server_of(&channel);
    let mut con = server.commands.clone();
    match script::new_epoch_after_rollback(&mut con, &channel, at, Epoch::random()).await {
        Ok(changed) => {
            if changed {
                tracing::warn!(
                    "redis {}: {channel} went back behind {at} (Redis lost data in the same epoch); it takes a new epoch",
                    server.url
                );
            }
            read(state, channel, 0).await;
        }
        Err(e) => {
            tracing::warn!(
                "redis {}: cannot renew the epoch of {channel}: {e}",
                server.url
            );
            state.tell_owner(
                &channel,
                FromRedis::ReadFailed {
                    channel: channel.clone(),
                },
            );
        }
    }
}

async fn cursor(state: Arc<State>, token: u64, channel: ChannelName, who: Cursor) {
    let server = state.server_of(&channel);
    let mut con = server.commands.clone();
    let inbox = (state.config.namespaces.of(channel.as_str()).history.inbox).is_some();
    let found =
        cursors::subscribe(&mut con, &channel, &who, Epoch::random(), META_TTL, inbox).await;
    let found = match found {
        Ok(f) => {
            // The identity's index of channels (for `GET /unread`): a
            // separate key, written after the cursor (before the answer,
            // so an unread query right after counts the channel); each
            // durable subscription refreshes it, as the cursors.
            index(&state, &who, &channel).await;
            Some((f.state, f.created))
        }
        Err(e) => {
            tracing::warn!(
                "redis {}: cannot read the cursor of {who} on {channel}: {e}",
                server.url
            );
            None
        }
    };
    state.tell_owner(&channel, FromRedis::Cursor { token, found });
}

async fn ack(
    state: Arc<State>,
    reply: ReplyTo,
    channel: ChannelName,
    who: Cursor,
    id: MsgId,
    subscribed: bool,
) {
    let server = state.server_of(&channel);
    let mut con = server.commands.clone();
    // A cursor may be made by the ack in a durable namespace, or for a
    // connection subscribed durably (its cursor was lost with Redis's data).
    let policy = state.config.namespaces.of(channel.as_str());
    let durable_ns = subscribed || policy.durable;
    let waitaof = server.waitaof();
    let done = cursors::ack(
        &mut con,
        &channel,
        &who,
        id,
        durable_ns,
        META_TTL,
        policy.history,
        unix_ms(),
        waitaof,
    )
    .await;
    // Owed only by an ack that moved the cursor, in a namespace with
    // `receipts`; built here, sent once the ack is answered.
    let mut receipt = None;
    let result = match done {
        Ok(Ok(acked)) => {
            if acked.created {
                index(&state, &who, &channel).await;
            }
            if acked.moved {
                receipt =
                    Receipt::owed(&state.config.namespaces, &channel, &who, acked.state.cursor);
            }
            Ok(acked.state)
        }
        Ok(Err(refused)) => Err(refused),
        Err(e) => {
            tracing::warn!(
                "ack of {id} on {channel} by {who} refused: redis {} failed: {e}",
                server.url
            );
            Err(AckError::Unavailable(format!(
                "redis unavailable ({})",
                e.category()
            )))
        }
    };
    state.send(
        reply.shard,
        Mail::Acked {
            reply,
            channel,
            result,
        },
    );
    if let Some(receipt) = receipt {
        publish_receipt(&state, receipt).await;
    }
}

/// Adds `channel` to `who`'s index of channels with cursors.
/// A failure is logged, not passed on: the cursor is stored, and only
/// `GET /unread` misses the channel.
async fn index(state: &State, who: &Cursor, channel: &ChannelName) {
    let key = cursors::index_key(&who.sub);
    let server = state.server_of_key(&key);
    let mut con = server.commands.clone();
    if let Err(e) = cursors::index(&mut con, &who.sub, channel, META_TTL).await {
        tracing::warn!(
            "redis {}: cannot add {channel} to {key} (GET /unread of {who} misses it until the next durable subscription): {e}",
            server.url
        );
    }
}

/// `GET /unread` in a cluster: the channels `who`'s index names, each
/// read where it lives; those without a cursor of `who` (another device,
/// or gone) are skipped.
async fn unread(state: Arc<State>, reply: ReplyTo, who: Cursor) {
    let counts = read_unread(&state, &who).await.map_err(|e| {
        tracing::warn!("unread counts of {who} refused: redis failed: {e}");
        AckError::Unavailable(format!("redis unavailable ({})", e.category()))
    });
    state.send(reply.shard, Mail::Unread { reply, counts });
}

async fn read_unread(
    state: &State,
    who: &Cursor,
) -> redis::RedisResult<Vec<(ChannelName, CursorState)>> {
    let key = cursors::index_key(&who.sub);
    let mut con = state.server_of_key(&key).commands.clone();
    let names = cursors::indexed(&mut con, &who.sub).await?;
    // All at once: the connections pipeline them.
    let reads = names.iter().filter_map(|name| {
        // Only this code writes the index; a name that is no channel's
        // is skipped, not trusted.
        let channel = ChannelName::new(name).ok()?;
        let mut con = state.server_of(&channel).commands.clone();
        Some(async move {
            let standing = cursors::standing(&mut con, &channel, who).await?;
            Ok::<_, redis::RedisError>(standing.map(|s| (channel, s)))
        })
    });
    let found = futures_util::future::try_join_all(reads).await?;
    Ok(found.into_iter().flatten().collect())
}

async fn follow(state: Arc<State>, channel: ChannelName) {
    let server = state.server_of(&channel);
    server
        .followed
        .lock()
        .expect("not poisoned")
        .insert(channel.clone());
    let sink = server.sink.lock().expect("not poisoned").clone();
    let Some(mut sink) = sink else {
        // Pub/Sub is down: the supervisor subscribes to every followed
        // channel when it is back, and the owner reads history then.
        state.tell_owner(
            &channel,
            FromRedis::ReadFailed {
                channel: channel.clone(),
            },
        );
        return;
    };
    let topic = Keys::of(&channel).topic;
    let topics = std::slice::from_ref(&topic);
    match tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(topics)).await {
        Ok(Ok(())) => {}
        failed => {
            tracing::warn!(
                "redis {}: cannot subscribe to {topic}: {failed:?}",
                server.url
            );
            state.tell_owner(
                &channel,
                FromRedis::ReadFailed {
                    channel: channel.clone(),
                },
            );
            return;
        }
    }
    // Subscribed first, read second: whatever is published from now on
    // comes through Pub/Sub, and the read covers everything before.
    let max = state.history_size(&channel);
    let mut con = server.commands.clone();
    // A fresh epoch, taken only if the channel has none.
    let read = script::follow(&mut con, &channel, Epoch::random(), META_TTL, max).await;
    answer_read(&state, channel, read);
}

async fn read(state: Arc<State>, channel: ChannelName, after: u64) {
    let server = state.server_of(&channel);
    let max = state.history_size(&channel);
    let mut con = server.commands.clone();
    let read = script::history_after(&mut con, &channel, after, max.max(1)).await;
    answer_read(&state, channel, read);
}

fn answer_read(state: &State, channel: ChannelName, read: redis::RedisResult<script::History>) {
    match read {
        Ok(history) => {
            let epoch = history.last.map(|l| l.epoch);
            let messages = match epoch {
                Some(epoch) => (history.messages.into_iter())
                    .map(|m| Arc::new(stored_message(&channel, epoch, m)))
                    .collect(),
                None => Vec::new(),
            };
            state.tell_owner(
                &channel,
                FromRedis::History {
                    channel: channel.clone(),
                    newest: history.last,
                    messages,
                },
            );
        }
        Err(e) => {
            tracing::warn!("redis: cannot read the history of {channel}: {e}");
            state.tell_owner(
                &channel,
                FromRedis::ReadFailed {
                    channel: channel.clone(),
                },
            );
        }
    }
}

async fn unfollow(state: Arc<State>, channel: ChannelName) {
    let server = state.server_of(&channel);
    server
        .followed
        .lock()
        .expect("not poisoned")
        .remove(&channel);
    let sink = server.sink.lock().expect("not poisoned").clone();
    if let Some(mut sink) = sink {
        let topic = Keys::of(&channel).topic;
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&topic)).await;
    }
}

async fn probe(state: Arc<State>, channels: Vec<ChannelName>) {
    for channel in channels {
        let mut con = state.server_of(&channel).commands.clone();
        if let Ok(newest) = script::newest(&mut con, &channel).await {
            let owner = channel.clone();
            state.tell_owner(&owner, FromRedis::Newest { channel, newest });
        }
    }
}

async fn presence_join(state: Arc<State>, channel: ChannelName, member: String) {
    let mut con = state.server_of(&channel).commands.clone();
    let expires = unix_ms() + state.config.presence_ttl.as_millis() as u64;
    let done = script::presence::join(
        &mut con,
        state.entries(&channel),
        &member,
        expires,
        unix_ms(),
    )
    .await;
    if let Err(e) = done {
        // The next heartbeat records it; only the announcement is lost.
        tracing::warn!("redis: cannot record {member} joining {channel}: {e}");
    }
}

async fn presence_leave(state: Arc<State>, channel: ChannelName, member: String) {
    let mut con = state.server_of(&channel).commands.clone();
    if let Err(e) =
        script::presence::leave(&mut con, state.entries(&channel), &member, unix_ms()).await
    {
        // Its entry expires unrefreshed, and a sweep announces it.
        tracing::warn!("redis: cannot record {member} leaving {channel}: {e}");
    }
}

async fn presence_refresh(state: Arc<State>, channel: ChannelName, members: Vec<String>) {
    let mut con = state.server_of(&channel).commands.clone();
    let expires = unix_ms() + state.config.presence_ttl.as_millis() as u64;
    let swept = script::presence::refresh(
        &mut con,
        state.entries(&channel),
        &members,
        expires,
        unix_ms(),
    )
    .await;
    match swept {
        Ok(0) => {}
        Ok(n) => tracing::info!("{channel}: {n} presence entries of nodes gone quiet expired"),
        Err(e) => tracing::warn!("redis: presence heartbeat of {channel} failed: {e}"),
    }
}

async fn presence_query(state: Arc<State>, reply: ReplyTo, channel: ChannelName) {
    let mut con = state.server_of(&channel).commands.clone();
    let clients = match script::presence::members(&mut con, &channel, unix_ms()).await {
        Ok(members) => members
            .into_iter()
            .map(|m| Member::User(m.into()))
            .collect(),
        Err(e) => {
            tracing::warn!("redis: cannot read the presence of {channel}: {e}");
            Vec::new()
        }
    };
    let answer = Mail::Presence {
        reply,
        channel,
        clients,
    };
    state.send(reply.shard, answer);
}

/// Keeps server `i`'s Pub/Sub connection up for as long as the node runs.
async fn supervise_pubsub(state: Arc<State>, client: redis::Client, i: usize) {
    let server = &state.servers[i];
    let mut delay = BACKOFF_MIN;
    let mut first = true;
    loop {
        match connect_pubsub(&state, &client, i).await {
            Ok(stream) => {
                delay = BACKOFF_MIN;
                // The command connection reconnects on its first failed
                // command: let that be a ping, not a client's publish.
                let mut commands = server.commands.clone();
                let ping = redis::cmd("PING").query_async::<()>(&mut commands).await;
                if ping.is_err() {
                    let _ = redis::cmd("PING").query_async::<()>(&mut commands).await;
                }
                state.health.pubsub_up[i].store(true, Ordering::Relaxed);
                if first {
                    tracing::info!("redis {}: Pub/Sub connected", server.url);
                } else {
                    state.health.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "redis {}: Pub/Sub back; channels catch up from history",
                        server.url
                    );
                    for shard in 0..state.shards() {
                        state.send(shard, Mail::Redis(FromRedis::Resubscribed));
                    }
                }
                first = false;
                let why = pump(&state, i, stream).await;
                state.health.pubsub_up[i].store(false, Ordering::Relaxed);
                *server.sink.lock().expect("not poisoned") = None;
                tracing::warn!(
                    "redis {}: Pub/Sub lost ({why}); the node is unready and publishes are refused until it is back",
                    server.url
                );
            }
            Err(e) => {
                tracing::warn!("redis {}: Pub/Sub connection failed: {e}", server.url);
            }
        }
        tokio::time::sleep(jittered(delay)).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Watches a Redis Cluster: forwards the sharded Pub/Sub messages its
/// connection pushes, and pings it every second. The connection follows
/// slot moves and resubscribes by itself; when a ping fails the node is
/// unready, and when pings answer again every followed channel is
/// subscribed again (a follow may have failed meanwhile) and read from
/// history.
async fn supervise_cluster(
    state: Arc<State>,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
) {
    let server = &state.servers[0];
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    state.health.pubsub_up[0].store(true, Ordering::Relaxed);
    tracing::info!("redis cluster {}: connected (sharded Pub/Sub)", server.url);
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if push.kind == redis::PushKind::SMessage {
                    if let [topic, payload] = &push.data[..] {
                        let topic: Result<String, _> = redis::from_redis_value(topic.clone());
                        let payload: Result<Vec<u8>, _> = redis::from_redis_value(payload.clone());
                        if let (Ok(topic), Ok(payload)) = (topic, payload) {
                            forward(&state, &topic, &payload);
                        }
                    }
                }
            }
            _ = ping.tick() => {
                // Every master: one that does not answer holds slots whose
                // channels would go quiet.
                let Commands::Cluster(mut con) = server.commands.clone() else { return };
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                let pinged = tokio::time::timeout(PING_EVERY, con.route_command(redis::cmd("PING"), all))
                    .await
                    .map(|r| r.map(drop));
                let up = state.health.pubsub_up[0].load(Ordering::Relaxed);
                match (pinged, up) {
                    (Ok(Ok(())), true) => {}
                    (Ok(Ok(())), false) => {
                        let topics: Vec<String> = (server.followed.lock().expect("not poisoned").iter())
                            .map(|c| Keys::of(c).topic)
                            .collect();
                        let sink = server.sink.lock().expect("not poisoned").clone();
                        if let Some(mut sink) = sink {
                            if let Err(e) = sink.subscribe(&topics).await {
                                tracing::warn!("redis cluster {}: cannot subscribe again: {e}", server.url);
                                continue;
                            }
                        }
                        state.health.pubsub_up[0].store(true, Ordering::Relaxed);
                        state.health.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("redis cluster {}: back; channels catch up from history", server.url);
                        for shard in 0..state.shards() {
                            state.send(shard, Mail::Redis(FromRedis::Resubscribed));
                        }
                    }
                    (failed, true) => {
                        state.health.pubsub_up[0].store(false, Ordering::Relaxed);
                        tracing::warn!(
                            "redis cluster {}: lost ({failed:?}); the node is unready and publishes are refused until it is back",
                            server.url
                        );
                    }
                    (_, false) => {}
                }
            }
        }
    }
}

/// Connects Pub/Sub and subscribes to every followed channel.
async fn connect_pubsub(
    state: &State,
    client: &redis::Client,
    i: usize,
) -> Result<redis::aio::PubSubStream, String> {
    let server = &state.servers[i];
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, stream) = pubsub.split();
    let topics: Vec<String> = (server.followed.lock().expect("not poisoned").iter())
        .map(|c| Keys::of(c).topic)
        .collect();
    for chunk in topics.chunks(1024) {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(chunk))
            .await
            .map_err(|_| "subscribing timed out".to_string())?
            .map_err(|e| format!("cannot subscribe: {e}"))?;
    }
    *server.sink.lock().expect("not poisoned") = Some(Subscriptions::Server(sink));
    Ok(stream)
}

/// Forwards Pub/Sub messages to their owners until the connection is lost
/// or stops answering pings; returns why.
async fn pump(state: &State, i: usize, mut stream: redis::aio::PubSubStream) -> String {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "connection closed".into();
                };
                forward(state, message.get_channel_name(), message.get_payload_bytes());
            }
            _ = ping.tick() => {
                let sink = state.servers[i].sink.lock().expect("not poisoned").clone();
                let Some(mut sink) = sink else {
                    return "no sink".into();
                };
                match tokio::time::timeout(PING_EVERY, sink.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return format!("no answer to a ping within {PING_EVERY:?}"),
                }
            }
        }
    }
}

/// Sends one Pub/Sub message to its channel's owner shard.
fn forward(state: &State, topic: &str, raw: &[u8]) {
    let Some(name) = topic.strip_prefix("rc:{").and_then(|t| t.strip_suffix('}')) else {
        return;
    };
    let (Ok(channel), Some(published)) = (ChannelName::new(name), script::parse_message(raw))
    else {
        tracing::warn!("redis: ignoring a malformed message on {topic}");
        return;
    };
    // For history expiry, and the delivery latency the owner records.
    let published_at = instant_of(published.published_ms);
    let (kind, payload) = (published.kind, published.payload);
    let message = if published.event == Event::Stored {
        Message::stored(channel, published.id, kind, payload, published_at)
    } else {
        Message::live(channel, kind, payload, published.event, published_at)
    };
    let owner = message.channel.owner(state.shards());
    let what = FromRedis::Message {
        msg: Arc::new(message),
        local: published.node == state.config.epoch,
    };
    state.send(owner, Mail::Redis(what));
}

/// A history entry as a hub message: its publish time is mapped from
/// Redis's wall clock onto this process's monotonic clock, for expiry.
fn stored_message(channel: &ChannelName, epoch: Epoch, m: Stored) -> Message {
    let published_at = instant_of(m.published_ms);
    Message::stored(
        channel.clone(),
        MsgId { epoch, seq: m.seq },
        m.kind,
        m.payload,
        published_at,
    )
}

/// A wall-clock time (ms since the Unix epoch, a publishing node's) on
/// this process's monotonic clock; now if it lies in the future.
fn instant_of(unix_ms_then: u64) -> Instant {
    let age = Duration::from_millis(unix_ms().saturating_sub(unix_ms_then));
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn jittered(delay: Duration) -> Duration {
    delay + delay.mul_f64(rand::random::<f64>() / 2.0)
}
