//! Request parameters several transports share: `since`, a list of
//! channels (`?ch=a,b`), and the composite cursor of several channels that
//! multi-channel event streams and polls hand their clients:
//! `<epoch>;<channel>=<seq>,<channel>=<epoch>-<seq>,…` — a position in the
//! prefix epoch, or one carrying its own. On one node every channel shares
//! the node's epoch, so every entry takes the short form; in a cluster
//! each channel has its own epoch (it changes when Redis lost the
//! channel), and the prefix is the one most entries share.

use std::fmt::Write;

use codec::http::RequestHead;

use crate::hub::{ChannelName, Epoch, MsgId};

/// The `since` query parameter: `Ok(None)` when absent; the error is the
/// reason to answer with.
pub fn since(head: &RequestHead<'_>) -> Result<Option<MsgId>, String> {
    match head.query_param("since") {
        Ok(None) => Ok(None),
        Ok(Some(s)) => s
            .parse::<MsgId>()
            .map(Some)
            .map_err(|e| format!("invalid since: {e}")),
        Err(e) => Err(format!("invalid since: {e}")),
    }
}

/// The channels of `?ch=a,b,c`: in request order, without duplicates, at
/// least one and at most `max`. The error is the reason to answer with
/// (`usage` tells how to name channels).
pub fn channel_list(
    head: &RequestHead<'_>,
    max: usize,
    usage: &str,
) -> Result<Vec<ChannelName>, String> {
    let list = match head.query_param("ch") {
        Ok(list) => list.unwrap_or_default(),
        Err(e) => return Err(format!("invalid ch: {e}")),
    };
    let mut channels: Vec<ChannelName> = Vec::new();
    for raw in list.split(',').filter(|c| !c.is_empty()) {
        let c = ChannelName::new(raw).map_err(|e| e.to_string())?;
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    if channels.is_empty() {
        return Err(format!("name at least one channel: {usage}"));
    }
    if channels.len() > max {
        return Err(format!("at most {max} channels per request"));
    }
    Ok(channels)
}

/// Parses a composite cursor (see the module docs) into per-channel ids.
pub fn parse_cursor(s: &str) -> Result<Vec<(String, MsgId)>, String> {
    let bad = || format!("invalid stream cursor {s:?}: expected <epoch>;<channel>=<seq>,…");
    let (epoch, rest) = s.split_once(';').ok_or_else(bad)?;
    let epoch: Epoch = epoch.parse().map_err(|_| bad())?;
    let mut out = Vec::new();
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        let (ch, position) = part.rsplit_once('=').ok_or_else(bad)?;
        let id: MsgId = if position.contains('-') {
            position.parse().map_err(|_| bad())?
        } else {
            format!("{epoch}-{position}").parse().map_err(|_| bad())?
        };
        out.push((ch.to_string(), id));
    }
    Ok(out)
}

/// Where each of `channels` resumes in a composite cursor: its id there,
/// or `None` (from now on) for a channel the cursor does not name.
pub fn positions(cursor: &[(String, MsgId)], channels: &[ChannelName]) -> Vec<Option<MsgId>> {
    (channels.iter())
        .map(|c| {
            cursor
                .iter()
                .find(|(n, _)| n == c.as_str())
                .map(|(_, id)| *id)
        })
        .collect()
}

/// Writes the composite cursor of `positions` (each channel and the id it
/// has reached); `fallback` is the prefix when there are none.
pub fn format_cursor<'a>(
    fallback: Epoch,
    positions: impl IntoIterator<Item = (&'a ChannelName, MsgId)>,
) -> String {
    let positions: Vec<(&ChannelName, MsgId)> = positions.into_iter().collect();
    let prefix = most_common_epoch(&positions).unwrap_or(fallback);
    let mut s = format!("{prefix};");
    for (i, (name, id)) in positions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if id.epoch == prefix {
            let _ = write!(s, "{name}={}", id.seq);
        } else {
            let _ = write!(s, "{name}={id}");
        }
    }
    s
}

/// The epoch most positions share (the first such, on a tie).
fn most_common_epoch(positions: &[(&ChannelName, MsgId)]) -> Option<Epoch> {
    let first = positions.first()?.1.epoch;
    if positions.iter().all(|(_, id)| id.epoch == first) {
        return Some(first); // one node: always
    }
    let count = |e: Epoch| positions.iter().filter(|(_, id)| id.epoch == e).count();
    (positions.iter()).map(|(_, id)| id.epoch).max_by_key(|&e| {
        (
            count(e),
            std::cmp::Reverse(positions.iter().position(|(_, id)| id.epoch == e)),
        )
    })
}
