//! The connections the bridge holds to one Redis deployment: a server of
//! its own (`redis://…`), or a Redis Cluster (`redis+cluster://…`).
//!
//! A server gets a command connection (`ConnectionManager`) and a Pub/Sub
//! connection of its own, reconnected by the bridge. A Redis Cluster gets
//! one cluster connection (RESP3) for both: commands are routed by slot —
//! every key of a channel carries its hash tag, so a channel's script,
//! reads and presence stay on one slot — and the channel's topic is
//! subscribed with `SSUBSCRIBE` (sharded Pub/Sub: a publish goes to that
//! slot's node only, not to every node), its messages arriving as RESP3
//! pushes. The cluster connection follows slot moves and resubscribes by
//! itself; the bridge pings it and re-reads history when it comes back.

use redis::aio::{ConnectionLike, ConnectionManager, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The scheme that names a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where the bridge sends commands.
#[derive(Clone)]
pub enum Commands {
    /// A server of its own.
    Server(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Commands::Server(_) => "Commands::Server",
            Commands::Cluster(_) => "Commands::Cluster",
        })
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Server(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Server(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the bridge subscribes to topics.
#[derive(Clone)]
pub enum Subscriptions {
    /// A server's Pub/Sub connection.
    Server(PubSubSink),
    /// A Redis Cluster's connection: sharded Pub/Sub.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subscriptions::Server(_) => "Subscriptions::Server",
            Subscriptions::Cluster(_) => "Subscriptions::Cluster",
        })
    }
}

impl Subscriptions {
    /// Subscribes to `topics` (confirmed when this returns).
    pub async fn subscribe(&mut self, topics: &[String]) -> redis::RedisResult<()> {
        match self {
            Subscriptions::Server(s) => s.subscribe(topics).await,
            Subscriptions::Cluster(c) => {
                // One by one: a cluster routes a command to one slot.
                for t in topics {
                    c.ssubscribe(t).await?;
                }
                Ok(())
            }
        }
    }

    /// Pings the connection that brings the messages.
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Subscriptions::Server(s) => s.ping::<Value>().await.map(drop),
            Subscriptions::Cluster(c) => redis::cmd("PING").query_async::<()>(c).await,
        }
    }

    /// Ends the subscription to `topic`.
    pub async fn unsubscribe(&mut self, topic: &str) -> redis::RedisResult<()> {
        match self {
            Subscriptions::Server(s) => s.unsubscribe(topic).await,
            Subscriptions::Cluster(c) => c.sunsubscribe(topic).await,
        }
    }
}

/// Whether `urls` name a Redis Cluster (every one `redis+cluster://`),
/// and the seed URLs to give the cluster client; an error for a mix.
pub fn cluster_seeds(urls: &[String]) -> Result<Option<Vec<String>>, String> {
    let cluster = urls
        .iter()
        .filter(|u| u.starts_with(CLUSTER_SCHEME))
        .count();
    match cluster {
        0 => Ok(None),
        n if n == urls.len() => Ok(Some(
            (urls.iter())
                .map(|u| format!("redis://{}", &u[CLUSTER_SCHEME.len()..]))
                .collect(),
        )),
        _ => Err(format!(
            "--redis: either Redis servers (redis://…) or the nodes of one Redis Cluster ({CLUSTER_SCHEME}…), not both"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_all_or_nothing() {
        let s = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(cluster_seeds(&s(&["redis://a:1"])), Ok(None));
        assert_eq!(
            cluster_seeds(&s(&["redis+cluster://a:1", "redis+cluster://b:2/"])),
            Ok(Some(s(&["redis://a:1", "redis://b:2/"])))
        );
        assert!(cluster_seeds(&s(&["redis+cluster://a:1", "redis://b:2"]))
            .unwrap_err()
            .contains("not both"));
    }
}
