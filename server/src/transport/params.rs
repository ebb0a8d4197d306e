//! Request parameters several transports share: `since`, a list of
//! channels (`?ch=a,b`), and the composite cursor of several channels
//! (`<epoch>;<channel>=<seq>,…`) that multi-channel event streams and polls
//! hand their clients.

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

/// Parses a composite cursor `<epoch>;<ch>=<seq>,…` into per-channel ids.
pub fn parse_cursor(s: &str) -> Result<Vec<(String, MsgId)>, String> {
    let bad = || format!("invalid stream cursor {s:?}: expected <epoch>;<channel>=<seq>,…");
    let (epoch, rest) = s.split_once(';').ok_or_else(bad)?;
    let mut out = Vec::new();
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        let (ch, seq) = part.rsplit_once('=').ok_or_else(bad)?;
        let id: MsgId = format!("{epoch}-{seq}").parse().map_err(|_| bad())?;
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

/// Writes the composite cursor of `positions` (channel and the sequence
/// number it has reached).
pub fn format_cursor<'a>(
    epoch: Epoch,
    positions: impl IntoIterator<Item = (&'a ChannelName, u64)>,
) -> String {
    let mut s = format!("{epoch};");
    for (i, (name, seq)) in positions.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{name}={seq}");
    }
    s
}
