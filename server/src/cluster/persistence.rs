//! `--fsync` in a cluster: Redis is the store, so the policy is a demand
//! on Redis's persistence (its AOF), checked at start against what each
//! server reports, and at `always` kept publish by publish.
//!
//! | `--fsync` | needs | a `200` / `acked` means |
//! |---|---|---|
//! | `always` | `appendonly yes`, and `appendfsync always` or Redis ≥ 7.2 (`WAITAOF`) | Redis's AOF holding it was fsynced |
//! | `interval` | `appendonly yes`, `appendfsync` not `no` | Redis wrote it to its AOF (the kernel has it); Redis fsyncs it within about a second (`everysec`) |
//! | `never` / none | nothing | Redis ran the script; whatever its persistence keeps |
//!
//! `CONFIG GET` is often disabled on managed Redis; `INFO` is not. So
//! `appendonly` comes from `INFO persistence` (`aof_enabled`) and the
//! version from `INFO server`, and only `appendfsync` needs `CONFIG GET`:
//! when it is refused, `always` relies on `WAITAOF` (Redis ≥ 7.2) and
//! `interval` is taken on trust, with a warning.
//!
//! [`decide`] is the decision, pure and tested on its own;
//! [`check_server`] and [`check_cluster`] ask Redis what it decides on.

use std::collections::HashMap;
use std::fmt;

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};

use super::connection::Commands;

/// `--fsync` as a cluster node applies it (the interval's length is
/// Redis's `appendfsync`, not the node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Answer once the AOF holding the write is fsynced.
    Always,
    /// Answer once Redis has written the AOF; it fsyncs every second.
    Interval,
    /// Answer once the script ran.
    Never,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Always => "always",
            Policy::Interval => "interval",
            Policy::Never => "never",
        })
    }
}

/// What one Redis server says of its persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `redis_version` from `INFO server`, e.g. `7.0.15`.
    pub version: String,
    /// `aof_enabled:1` in `INFO persistence` (`None`: not reported).
    pub aof: Option<bool>,
    /// `CONFIG GET appendfsync`, or why it could not be read.
    pub appendfsync: Result<String, String>,
}

impl Report {
    /// A report from the texts of `INFO server` and `INFO persistence`.
    fn from_info(server: &str, persistence: &str, appendfsync: Result<String, String>) -> Report {
        Report {
            version: info_field(server, "redis_version")
                .unwrap_or("unknown")
                .to_string(),
            aof: info_field(persistence, "aof_enabled").map(|v| v == "1"),
            appendfsync,
        }
    }
}

/// How the bridge writes to a server that passed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Send `WAITAOF 1 0 <timeout>` after each write and answer only when
    /// it reports the local AOF fsynced.
    pub waitaof: bool,
}

/// The first version with `WAITAOF`.
const WAITAOF_SINCE: (u32, u32) = (7, 2);

fn version_at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
}

/// Whether `policy` can be kept by the server at `url` that reports
/// `report`: how to write to it, and a line for the log; or why the node
/// must not start.
pub fn decide(
    policy: Option<Policy>,
    url: &str,
    report: &Report,
) -> Result<(Mode, String), String> {
    let waitaof = version_at_least(&report.version, WAITAOF_SINCE);
    let fsync = match &report.appendfsync {
        Ok(f) => f.clone(),
        Err(why) => format!("unknown (CONFIG GET appendfsync refused: {why})"),
    };
    let aof = match report.aof {
        Some(true) => format!("appendonly yes, appendfsync {fsync}"),
        Some(false) => "appendonly no".to_string(),
        None => "appendonly unknown".to_string(),
    };
    let said = format!("redis {url} (Redis {}; {aof})", report.version);
    let Some(policy) = policy else {
        let what = match report.aof {
            Some(true) => "what it keeps follows its appendfsync",
            _ => "a Redis restart loses what it did not snapshot (new epochs)",
        };
        return Ok((
            Mode { waitaof: false },
            format!("{said}: no --fsync; {what}"),
        ));
    };
    if report.aof != Some(true) && policy != Policy::Never {
        return Err(format!(
            "--fsync {policy} in a cluster needs Redis to keep an append-only file, and {said} does not \
             (start it with --appendonly yes, or CONFIG SET appendonly yes; or use --fsync never)"
        ));
    }
    let appendfsync = report.appendfsync.as_deref().ok();
    match policy {
        Policy::Never => Ok((
            Mode { waitaof: false },
            format!("{said}: --fsync never: publishes are answered once Redis ran the script"),
        )),
        Policy::Interval => match appendfsync {
            Some("no") => Err(format!(
                "--fsync interval in a cluster needs Redis to fsync its append-only file (appendfsync everysec or always), and {said} never does \
                 (CONFIG SET appendfsync everysec; or use --fsync never)"
            )),
            Some(_) => Ok((
                Mode { waitaof: false },
                format!("{said}: --fsync interval: publishes are answered once Redis wrote them to its AOF, which it fsyncs per its appendfsync"),
            )),
            None => Ok((
                Mode { waitaof: false },
                format!("{said}: --fsync interval: WARNING: Redis's appendfsync cannot be read; if it is `no`, a host crash loses what the kernel had not written back"),
            )),
        },
        Policy::Always => match (appendfsync, waitaof) {
            (Some("no"), _) => Err(format!(
                "--fsync always in a cluster needs Redis to fsync its append-only file, and {said} never does \
                 (CONFIG SET appendfsync always; or use --fsync never)"
            )),
            (_, true) => Ok((
                Mode { waitaof: true },
                format!("{said}: --fsync always: each publish and ack is answered after WAITAOF reports it fsynced"),
            )),
            (Some("always"), false) => Ok((
                Mode { waitaof: false },
                format!("{said}: --fsync always: Redis fsyncs its AOF before it answers (appendfsync always)"),
            )),
            (_, false) => Err(format!(
                "--fsync always in a cluster needs Redis ≥ 7.2 (WAITAOF) or appendfsync always, and {said} has neither \
                 (CONFIG SET appendfsync always, or upgrade Redis; or use --fsync interval)"
            )),
        },
    }
}

/// Reads `INFO`'s `field:value` line.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v)
}

// Asking Redis.

/// A Redis Cluster: asks every master what it keeps, as
/// [`check_server`] asks a server. `WAITAOF` is not used here (it
/// would have to reach the master of each write on the connection that
/// wrote), so `always` needs `appendfsync always` on every master.
pub async fn check_cluster(
    policy: Option<Policy>,
    label: &str,
    commands: &Commands,
) -> Result<(), String> {
    let Commands::Cluster(con) = commands.clone() else {
        return Ok(());
    };
    // Every master's answer, by address (a refusal is that master's
    // `Err`).
    let ask = |cmd: redis::Cmd| {
        let mut con = con.clone();
        async move {
            let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let answer = con
                .route_command(cmd, all)
                .await
                .map_err(|e| format!("redis cluster {label}: {e}"))?;
            let redis::Value::Map(pairs) = answer else {
                return Err(format!(
                    "redis cluster {label}: unexpected answer {answer:?}"
                ));
            };
            let mut by_node = Vec::with_capacity(pairs.len());
            for (addr, value) in pairs {
                let addr: String = redis::from_redis_value(addr).map_err(|e| e.to_string())?;
                by_node.push((addr, value));
            }
            by_node.sort_by(|a, b| a.0.cmp(&b.0));
            Ok::<_, String>(by_node)
        }
    };
    let text = |v: &redis::Value| -> Result<String, String> {
        match v {
            redis::Value::ServerError(e) => Err(format!("{e:?}")),
            v => redis::from_redis_value::<String>(v.clone()).map_err(|e| e.to_string()),
        }
    };
    let mut info_server = redis::cmd("INFO");
    info_server.arg("server");
    let mut info_persistence = redis::cmd("INFO");
    info_persistence.arg("persistence");
    let mut config = redis::cmd("CONFIG");
    config.arg("GET").arg("appendfsync");
    let servers = ask(info_server).await?;
    let persistence = ask(info_persistence).await?;
    let configs = ask(config).await?;
    for (addr, info) in &servers {
        let url = format!("redis cluster {label}, master {addr},");
        let info = text(info).map_err(|e| format!("{url} INFO server failed: {e}"))?;
        let persisted = (persistence.iter().find(|(a, _)| a == addr))
            .map(|(_, v)| text(v).unwrap_or_default())
            .unwrap_or_default();
        let appendfsync = match configs.iter().find(|(a, _)| a == addr) {
            Some((_, redis::Value::ServerError(e))) => Err(format!("{e:?}")),
            Some((_, v)) => redis::from_redis_value::<HashMap<String, String>>(v.clone())
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    m.get("appendfsync")
                        .cloned()
                        .ok_or_else(|| "no value".to_string())
                }),
            None => Err("no answer".to_string()),
        };
        let report = Report::from_info(&info, &persisted, appendfsync);
        let mode = judge(policy, &url, &report)?;
        if mode.waitaof && report.appendfsync.as_deref() != Ok("always") {
            return Err(format!(
                "--fsync always with a Redis Cluster needs appendfsync always on every master \
                 (WAITAOF is not used with a Redis Cluster), and {url} has appendfsync {} \
                 (CONFIG SET appendfsync always on each master)",
                report
                    .appendfsync
                    .unwrap_or_else(|e| format!("unknown ({e})"))
            ));
        }
    }
    Ok(())
}

/// Asks one server what it keeps (`INFO`, `CONFIG GET appendfsync`),
/// logs it, and says how to write to it, or why the node must not start
/// (it cannot keep `--fsync`'s promise).
pub async fn check_server(
    policy: Option<Policy>,
    url: &str,
    commands: &Commands,
) -> Result<Mode, String> {
    let mut con = commands.clone();
    let info = |section: &'static str| {
        let mut con = con.clone();
        async move {
            redis::cmd("INFO")
                .arg(section)
                .query_async::<String>(&mut con)
                .await
        }
    };
    let server_info = info("server")
        .await
        .map_err(|e| format!("redis {url}: INFO server failed: {e}"))?;
    let persistence_info = info("persistence")
        .await
        .map_err(|e| format!("redis {url}: INFO persistence failed: {e}"))?;
    let appendfsync = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async::<Vec<String>>(&mut con)
        .await
        .map_err(|e| e.to_string())
        .and_then(|v| v.get(1).cloned().ok_or_else(|| "no value".to_string()));
    let report = Report::from_info(&server_info, &persistence_info, appendfsync);
    judge(policy, url, &report)
}

/// [`decide`], with its line logged (as a warning when it warns).
fn judge(policy: Option<Policy>, url: &str, report: &Report) -> Result<Mode, String> {
    let (mode, line) = decide(policy, url, report)?;
    if line.contains("WARNING") {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(version: &str, aof: bool, fsync: Result<&str, &str>) -> Report {
        Report {
            version: version.into(),
            aof: Some(aof),
            appendfsync: fsync.map(str::to_string).map_err(str::to_string),
        }
    }

    #[test]
    fn always_needs_an_aof_and_waitaof_or_appendfsync_always() {
        let url = "redis://r";
        let d = |p, r: &Report| decide(Some(p), url, r);
        // No AOF: refused, with the reason and the way out.
        let e = d(Policy::Always, &report("7.2.4", false, Ok("everysec"))).unwrap_err();
        assert!(
            e.contains("append-only file") && e.contains("appendonly no"),
            "{e}"
        );
        // 7.2+: WAITAOF, whatever appendfsync is, readable or not.
        for fsync in [Ok("everysec"), Ok("always"), Err("unknown command")] {
            let (mode, _) = d(Policy::Always, &report("7.2.0", true, fsync)).unwrap();
            assert!(mode.waitaof);
        }
        assert!(d(Policy::Always, &report("8.0.1", true, Ok("no"))).is_err());
        // Older: only appendfsync always will do, and it must be readable.
        let (mode, line) = d(Policy::Always, &report("7.0.15", true, Ok("always"))).unwrap();
        assert!(
            !mode.waitaof && line.contains("appendfsync always"),
            "{line}"
        );
        let e = d(Policy::Always, &report("7.0.15", true, Ok("everysec"))).unwrap_err();
        assert!(e.contains("7.2") && e.contains("Redis 7.0.15"), "{e}");
        let e = d(
            Policy::Always,
            &report("6.2.1", true, Err("CONFIG disabled")),
        )
        .unwrap_err();
        assert!(
            e.contains("CONFIG GET appendfsync refused: CONFIG disabled"),
            "{e}"
        );
    }

    #[test]
    fn interval_needs_an_aof_that_is_fsynced_never_needs_nothing() {
        let url = "redis://r";
        let d = |p, r: &Report| decide(Some(p), url, r);
        assert!(d(Policy::Interval, &report("7.0.15", false, Ok("everysec"))).is_err());
        assert!(d(Policy::Interval, &report("7.0.15", true, Ok("no"))).is_err());
        assert!(d(Policy::Interval, &report("7.0.15", true, Ok("everysec"))).is_ok());
        let (_, line) = d(Policy::Interval, &report("7.0.15", true, Err("no perm"))).unwrap();
        assert!(line.contains("WARNING"), "{line}");
        assert!(d(Policy::Never, &report("5.0.0", false, Err("no perm"))).is_ok());
        // No --fsync: a report, never a refusal.
        let (mode, line) = decide(None, url, &report("7.0.15", false, Ok("everysec"))).unwrap();
        assert!(!mode.waitaof && line.contains("new epochs"), "{line}");
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "aof_enabled"), None);
        assert!(version_at_least("7.2.0", (7, 2)) && !version_at_least("7.0.15", (7, 2)));
        assert!(version_at_least("10.0", (7, 2)));
    }
}
