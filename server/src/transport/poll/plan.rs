//! Reading a poll request: one channel (`GET /poll/{channel}`) or several
//! (`GET /poll?ch=a,b`), its timeout and its cursor. Pure functions of the
//! request head and the settings.

use std::time::Duration;

use codec::http::{Method, RequestHead, StatusCode};

use crate::config::Settings;
use crate::hub::{ChannelName, Cursor, MsgId};
use crate::metrics::Refusal;

use crate::transport::params;
use crate::transport::response::Refused;

/// What a valid one-channel poll request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The channel.
    pub channel: ChannelName,
    /// How long to hold the request; zero for a short poll.
    pub timeout: Duration,
    /// The cursor (`None`: from now on).
    pub since: Option<MsgId>,
    /// The cursor came from `If-None-Match`, so "nothing new" is a `304`.
    pub if_none_match: bool,
    /// A durable subscription (set by the router): whose cursor; without
    /// a `since` the poll resumes from it.
    pub durable: Option<Cursor>,
}

/// What a valid poll of several channels asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManyPlan {
    /// The channels, in request order, without duplicates.
    pub channels: Vec<ChannelName>,
    /// Where each channel resumes (`None`: from now on).
    pub positions: Vec<Option<MsgId>>,
    /// How long to hold the request; zero for a short poll.
    pub timeout: Duration,
    /// The cursor came from `If-None-Match`, so "nothing new" is a `304`.
    pub if_none_match: bool,
    /// Per channel, a durable subscription (set by the router): whose
    /// cursor. Empty when none is durable.
    pub durable: Vec<Option<Cursor>>,
}

/// Reads a one-channel poll request (`raw_channel` is the path's last
/// segment, percent-encoded). `?since=` wins over `If-None-Match`.
pub fn plan(
    head: &RequestHead<'_>,
    raw_channel: &str,
    settings: &Settings,
) -> Result<Plan, Refused> {
    check_method(head)?;
    let channel =
        ChannelName::from_path(raw_channel).map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
    let timeout = timeout(head, settings)?;
    let inm = if_none_match(head).and_then(|tag| tag.parse::<MsgId>().ok());
    let since = params::since(head)
        .map_err(|r| Refused::bad(Refusal::BadSince, r))?
        .or(inm);
    Ok(Plan {
        channel,
        timeout,
        since,
        if_none_match: inm.is_some() && inm == since,
        durable: None,
    })
}

/// Reads a poll of several channels, `GET /poll?ch=a,b`: its cursor is the
/// composite `<epoch>;<channel>=<seq>,…` of an earlier answer, from
/// `?since=` or else `If-None-Match`; a channel it does not name starts
/// from now on.
pub fn plan_many(head: &RequestHead<'_>, settings: &Settings) -> Result<ManyPlan, Refused> {
    check_method(head)?;
    let channels = params::channel_list(head, settings.max_stream_channels, "/poll?ch=a,b")
        .map_err(|r| Refused::bad(Refusal::BadChannel, r))?;
    let timeout = timeout(head, settings)?;
    let since = match head.query_param("since") {
        Ok(s) => s.map(|s| s.into_owned()),
        Err(e) => {
            return Err(Refused::bad(
                Refusal::BadSince,
                format!("invalid since: {e}"),
            ))
        }
    };
    let inm = if_none_match(head).filter(|tag| tag.contains(';'));
    let (cursor, if_none_match) = match (since, inm) {
        (Some(s), _) => (Some(s), false),
        (None, Some(tag)) => (Some(tag.to_string()), true),
        (None, None) => (None, false),
    };
    let positions = match cursor {
        Some(c) => {
            let list = params::parse_cursor(&c).map_err(|r| Refused::bad(Refusal::BadSince, r))?;
            params::positions(&list, &channels)
        }
        None => vec![None; channels.len()],
    };
    Ok(ManyPlan {
        channels,
        positions,
        timeout,
        if_none_match,
        durable: Vec::new(),
    })
}

fn check_method(head: &RequestHead<'_>) -> Result<(), Refused> {
    if matches!(head.method, Method::Get | Method::Head) {
        Ok(())
    } else {
        Err(Refused::new(
            Refusal::BadRequest,
            StatusCode::METHOD_NOT_ALLOWED,
            "poll with GET",
        ))
    }
}

/// `?timeout=S` in whole seconds (default `--poll-timeout`, capped at
/// `--poll-max-timeout`).
fn timeout(head: &RequestHead<'_>, settings: &Settings) -> Result<Duration, Refused> {
    match head.query_param("timeout") {
        Ok(None) => Ok(settings.poll_timeout),
        Ok(Some(t)) => match t.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs).min(settings.poll_max_timeout)),
            Err(_) => Err(Refused::bad(
                Refusal::BadRequest,
                "timeout must be a whole number of seconds",
            )),
        },
        Err(e) => Err(Refused::bad(
            Refusal::BadRequest,
            format!("invalid timeout: {e}"),
        )),
    }
}

/// The first entity tag of `If-None-Match`, quotes and weakness marker
/// removed. A tag is read whole, commas included (a composite cursor has
/// them), so the header's list is split by the quotes, not the commas.
fn if_none_match<'h>(head: &RequestHead<'h>) -> Option<&'h str> {
    let line = *head.headers.if_none_match.lines().first()?;
    let line = std::str::from_utf8(line).ok()?.trim_start();
    let line = line.strip_prefix("W/").unwrap_or(line);
    let rest = line.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}
