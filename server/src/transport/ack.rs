//! Acknowledgements and durable subscriptions on the wire: reading what a
//! client sends to subscribe durably or to ack, deciding what the
//! connection can decide alone, and how each refusal reads. Pure
//! functions; `mux` (`/ws`) and `http` (`POST /ack/{ch}`, `?durable=1`)
//! call them. The model is `hub::cursor`.
//!
//! * `/ws`: `{"type":"subscribe","ch":…,"durable":true,"device":"phone"}`
//!   (`subscribed` then carries `"durable":true,"cursor":…,"unread":N`),
//!   and `{"type":"ack","ch":…,"id":…,"device"?:…}` → `{"type":"acked",
//!   "ch":…,"cursor":…,"unread":N}`.
//! * HTTP: `?durable=1` and `?device=` on `/ws/{ch}`, `/sse…` and
//!   `/poll…`; `POST /ack/{ch}?device=…` with `{"id":"<id>"}` or a
//!   `text/plain` id → `200 {"ch":…,"cursor":…,"unread":N}`.
//!
//! A subscription is durable when the client asks (`durable`), or when the
//! channel's namespace says `durable = true` and the client has an
//! identity (a token's `sub`). The device defaults to `""`: one cursor per
//! identity.
//!
//! | Refusal | `/ws` code | HTTP | decided by |
//! |---|---|---|---|
//! | no identity | `no_identity` | `401` | the connection |
//! | not a message id | `bad_id` | `400` | the connection |
//! | no `--data-dir` | `not_durable` | `409` | the connection |
//! | another epoch | `stale_id` | `409` | the owner |
//! | past the newest shown | `unknown_id` | `404` | the owner |
//! | no cursor kept (not durable) | `not_durable` | `409` | the owner |
//! | store failed or full | `unavailable` + `retry_after` | `503` + `Retry-After` | the owner |
//!
//! `GET /unread?device=` (HTTP) and `{"type":"unread","device"?:…}`
//! (`/ws`) gather an identity's unread counts from every shard (in a
//! cluster from Redis, through the asking shard's bridge):
//! `{"unread":{"<channel>":N,…},"total":N}`.
//!
//! A namespace owned by one identity per channel (`owner = "user:{sub}"`,
//! an inbox) lets only that identity subscribe or ack: anyone else gets
//! `forbidden` / `403 channel user:bob belongs to another identity`
//! ([`read_denied`]), whatever the token's `channels` claim lists.

use codec::http::{RequestHead, StatusCode};
use serde_json::{json, Value};

use crate::auth::Access;
use crate::config::Settings;
use crate::hub::{AckError, ChannelName, Cursor, CursorState, MsgId};
use crate::metrics::Refusal;

use super::response::Refused;

/// The longest device name.
pub const MAX_DEVICE: usize = 64;

/// The longest `sub` a durable cursor takes (a longer one is not an
/// identity the store keys cursors by; real `sub`s are far shorter).
pub const MAX_SUB: usize = 1024;

/// The largest `POST /ack` body: an id, or a small JSON object with one.
pub const MAX_BODY: usize = 1024;

/// Checks a device name: 1–64 bytes of `A–Z a–z 0–9 _ - .`.
pub fn device(s: &str) -> Result<Box<str>, String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if s.is_empty() || s.len() > MAX_DEVICE || !s.bytes().all(ok) {
        return Err(format!(
            "device must be 1 to {MAX_DEVICE} characters of A-Z a-z 0-9 _ - . (not {s:?})"
        ));
    }
    Ok(s.into())
}

/// Whose cursor a connection with `access` names for `device`:
/// `NoIdentity` without a token naming a `sub` (or one too long to key).
pub fn identity(access: Option<&Access>, device: Box<str>) -> Result<Cursor, AckError> {
    match access.and_then(|a| a.sub.as_deref()) {
        Some(sub) if !sub.is_empty() && sub.len() <= MAX_SUB => Ok(Cursor {
            sub: sub.into(),
            device,
        }),
        _ => Err(AckError::NoIdentity),
    }
}

/// Why `access` may not read `channel` (subscribe, ack), if it may not:
/// in an `owner` namespace the token's `sub` must be the identity the
/// channel names; elsewhere the token's `channels` claim must list it.
/// Only asked where the namespace needs a token (an `owner` namespace
/// always does). A receipts channel (`<ch>:receipts`) may be read by
/// whoever may read `<ch>` (or whose claim lists it by name); in an
/// `owner` namespace only by `<ch>`'s identity.
pub fn read_denied(settings: &Settings, access: &Access, channel: &ChannelName) -> Option<String> {
    let base = settings.namespaces.receipts_of(channel.as_str());
    match settings.namespaces.owner_of(channel.as_str()) {
        Some(owner) if access.sub.as_deref() == Some(owner) => None,
        Some(_) => Some(format!("channel {channel} belongs to another identity")),
        None if access.may_read(channel.as_str()) => None,
        None if base.is_some_and(|b| access.may_read(b)) => None,
        None => Some(format!("the token does not allow channel {channel}")),
    }
}

/// Why nobody may publish to `channel`, if it is a receipts channel
/// (`<ch>:receipts` in a namespace with `receipts = true`): only the node
/// publishes there, so a receipt can be trusted. One flag's test on a
/// node without receipts.
pub fn receipts_only(settings: &Settings, channel: &ChannelName) -> Option<String> {
    let of = settings.namespaces.receipts_of(channel.as_str())?;
    Some(format!(
        "channel {channel} carries the receipts of {of}: only the node publishes to it"
    ))
}

/// Refuses a cursor on a node that keeps none (no `--data-dir`, not in a
/// cluster).
pub fn store_kept(settings: &Settings, channel: &ChannelName) -> Result<(), AckError> {
    if settings.keeps_cursors() {
        return Ok(());
    }
    Err(AckError::NotDurable {
        channel: channel.clone(),
        why: "the node has no --data-dir and no --redis".into(),
    })
}

/// Whether a subscription to `channel` is durable, and whose cursor it
/// follows: `asked` (the client said `durable`) needs an identity and a
/// store; otherwise it is durable when the namespace says so and the
/// client has an identity, and plain when not.
pub fn durable_for(
    settings: &Settings,
    access: Option<&Access>,
    channel: &ChannelName,
    asked: bool,
    device: Box<str>,
) -> Result<Option<Cursor>, AckError> {
    if asked {
        let who = identity(access, device)?;
        store_kept(settings, channel)?;
        // A receipts channel is live-only (no ids to ack): plain, not
        // refused — an event stream or poll asks for every channel it
        // names, and may name a channel and its receipts together.
        let receipts = settings.namespaces.receipts_of(channel.as_str()).is_some();
        return Ok((!receipts).then_some(who));
    }
    if !settings.namespaces.of(channel.as_str()).durable || !settings.keeps_cursors() {
        return Ok(None);
    }
    Ok(identity(access, device).ok())
}

/// A message id, or `bad_id`.
pub fn parse_id(s: &str) -> Result<MsgId, AckError> {
    s.trim()
        .parse::<MsgId>()
        .map_err(|e| AckError::BadId(e.to_string()))
}

/// The id a `POST /ack` body names: `{"id":"<id>"}` when it is JSON (by
/// its `Content-Type`, or because it starts with `{`), else the body
/// itself as text.
pub fn body_id(content_type: Option<&[u8]>, body: &[u8]) -> Result<MsgId, AckError> {
    let json = content_type.is_some_and(|ct| {
        let ct = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        ct.eq_ignore_ascii_case(b"application/json")
    }) || body.trim_ascii_start().starts_with(b"{");
    let bad = |why: &str| {
        AckError::BadId(format!(
            "{why}; send {{\"id\":\"<id>\"}} or the id as text/plain"
        ))
    };
    if json {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| bad(&format!("body is not JSON ({e})")))?;
        return match value.get("id") {
            Some(Value::String(id)) => parse_id(id),
            Some(_) => Err(bad("\"id\" must be a string")),
            None => Err(bad("missing \"id\"")),
        };
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(bad("no id in the body"));
    }
    parse_id(text)
}

/// `?durable=` (`1`/`true`/`0`/`false`) and `?device=` of an HTTP
/// subscription: whether the client asked for a durable one, and the
/// device (`""` without one).
pub fn durable_query(head: &RequestHead<'_>) -> Result<(bool, Box<str>), Refused> {
    let asked = match head.query_param("durable") {
        Ok(None) => false,
        Ok(Some(v)) if v == "1" || v == "true" => true,
        Ok(Some(v)) if v == "0" || v == "false" => false,
        _ => {
            return Err(Refused::bad(
                Refusal::BadRequest,
                "durable must be 1, true, 0 or false",
            ))
        }
    };
    let device = device_query(head)?;
    Ok((asked, device))
}

/// `?device=`, checked (`""` without one).
pub fn device_query(head: &RequestHead<'_>) -> Result<Box<str>, Refused> {
    match head.query_param("device") {
        Ok(None) => Ok("".into()),
        Ok(Some(d)) => device(&d).map_err(|r| Refused::bad(Refusal::BadRequest, r)),
        Err(e) => Err(Refused::bad(
            Refusal::BadRequest,
            format!("invalid device: {e}"),
        )),
    }
}

/// The `/ws` error code of a refusal.
pub fn code(e: &AckError) -> &'static str {
    match e {
        AckError::NoIdentity => "no_identity",
        AckError::BadId(_) => "bad_id",
        AckError::Stale { .. } => "stale_id",
        AckError::Unknown { .. } => "unknown_id",
        AckError::NotDurable { .. } => "not_durable",
        AckError::Unavailable(_) => "unavailable",
    }
}

/// The HTTP status of a refusal.
pub fn status(e: &AckError) -> StatusCode {
    match e {
        AckError::NoIdentity => StatusCode::UNAUTHORIZED,
        AckError::BadId(_) => StatusCode::BAD_REQUEST,
        AckError::Stale { .. } | AckError::NotDurable { .. } => StatusCode::CONFLICT,
        AckError::Unknown { .. } => StatusCode::NOT_FOUND,
        AckError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A refusal as an HTTP refusal (counted under the closest counter).
/// `unavailable` tells the client to retry.
pub fn refused(e: &AckError) -> Refused {
    let why = match e {
        AckError::NoIdentity => Refusal::Unauthorized,
        AckError::Unknown { .. } => Refusal::NotFound,
        AckError::Unavailable(_) => Refusal::Unavailable,
        AckError::BadId(_) | AckError::Stale { .. } | AckError::NotDurable { .. } => {
            Refusal::BadRequest
        }
    };
    let r = Refused::new(why, status(e), reason(e));
    if matches!(e, AckError::Unavailable(_)) {
        r.retry_later()
    } else {
        r
    }
}

/// The one-line reason of a refusal, as sent (`unavailable` says to retry).
pub fn reason(e: &AckError) -> String {
    match e {
        AckError::Unavailable(why) => format!("{why}; retry later"),
        e => e.to_string(),
    }
}

/// Why `GET /unread` and `{"type":"unread"}` are refused without a store
/// (`409` / `not_durable`).
pub const NO_STORE: &str = "the node has no --data-dir, so it keeps no cursors";

/// Why `GET /unread` / `{"type":"unread"}` cannot be answered, if so: a
/// node without cursors (no `--data-dir`, no `--redis`). In a cluster
/// Redis answers (`cluster::cursors`, the identity's index).
pub fn no_unread(settings: &Settings) -> Option<&'static str> {
    match (&settings.store, settings.redis.is_empty()) {
        (None, true) => Some(NO_STORE),
        _ => None,
    }
}

/// The unread counts of an identity, gathered from every shard:
/// `{"unread":{"<channel>":N,…},"total":N}` (channels sorted).
pub fn unread_answer(counts: &[(ChannelName, u64)]) -> Value {
    let mut by_channel = serde_json::Map::new();
    for (channel, n) in counts {
        by_channel.insert(channel.as_str().to_string(), json!(n));
    }
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    json!({"unread": by_channel, "total": total})
}

/// The body of an accepted ack (HTTP): `{"ch":…,"cursor":…,"unread":N}`.
pub fn answer(channel: &ChannelName, state: CursorState) -> Value {
    json!({
        "ch": channel.as_str(),
        "cursor": state.cursor.to_string(),
        "unread": state.unread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Epoch;

    #[test]
    fn devices_are_short_and_plain() {
        assert_eq!(device("phone-2.a_b").as_deref(), Ok("phone-2.a_b"));
        assert!(device("").is_err());
        assert!(device("a b").unwrap_err().contains("A-Z a-z 0-9 _ - ."));
        assert!(device("ü").is_err());
        assert!(device(&"x".repeat(64)).is_ok());
        assert!(device(&"x".repeat(65)).is_err());
    }

    #[test]
    fn ack_bodies_name_one_id() {
        let id = MsgId {
            epoch: Epoch::from_bits(0xabc),
            seq: 60,
        };
        let json = Some(&b"application/json; charset=utf-8"[..]);
        assert_eq!(body_id(json, br#"{"id":"000000000abc-60"}"#), Ok(id));
        assert_eq!(body_id(None, br#" {"id":"000000000abc-60"}"#), Ok(id));
        assert_eq!(body_id(Some(b"text/plain"), b"000000000abc-60\n"), Ok(id));
        assert_eq!(body_id(None, b"000000000abc-60"), Ok(id));
        let why = |r: Result<MsgId, AckError>| match r {
            Err(AckError::BadId(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(body_id(json, b"{}")).contains("missing \"id\""));
        assert!(why(body_id(json, br#"{"id":60}"#)).contains("must be a string"));
        assert!(why(body_id(json, b"{not json")).contains("not JSON"));
        assert!(why(body_id(None, b"")).contains("no id"));
        assert!(why(body_id(None, b"\xff")).contains("UTF-8"));
        assert!(why(body_id(None, b"abc-1")).contains("12 hex digits"));
        assert!(why(body_id(None, b"000000000abc-x")).contains("12 hex digits"));
    }

    #[test]
    fn every_refusal_has_its_own_code_and_status() {
        let ch = ChannelName::new("c").unwrap();
        let id = MsgId {
            epoch: Epoch::from_bits(1),
            seq: 1,
        };
        let all = [
            (AckError::NoIdentity, "no_identity", 401),
            (AckError::BadId("x".into()), "bad_id", 400),
            (
                AckError::Stale {
                    channel: ch.clone(),
                    id,
                    epoch: Epoch::from_bits(2),
                },
                "stale_id",
                409,
            ),
            (
                AckError::Unknown {
                    channel: ch.clone(),
                    id,
                    newest: id,
                },
                "unknown_id",
                404,
            ),
            (
                AckError::NotDurable {
                    channel: ch.clone(),
                    why: "w".into(),
                },
                "not_durable",
                409,
            ),
            (
                AckError::Unavailable("store unavailable: x".into()),
                "unavailable",
                503,
            ),
        ];
        for (e, c, s) in &all {
            assert_eq!((code(e), status(e).code()), (*c, *s), "{e:?}");
        }
        let unavailable = refused(&all[5].0);
        assert!(unavailable.retry_later);
        assert_eq!(unavailable.reason, "store unavailable: x; retry later");
        assert!(!refused(&all[0].0).retry_later);
        assert_eq!(
            refused(&all[0].0).reason,
            "ack needs a token that names a user (sub)"
        );
    }

    #[test]
    fn durable_needs_an_identity_and_a_store() {
        use crate::config::StoreSettings;
        use crate::policy::{Namespace, Namespaces};
        use crate::store::Fsync;
        let mut settings = super::super::testing::default_settings();
        let ch = ChannelName::new("d:x").unwrap();
        let plain = ChannelName::new("x").unwrap();
        let bob = crate::auth::Access::for_tests(Some("bob"));
        // Asked for, without an identity or without a store.
        assert_eq!(
            durable_for(&settings, None, &ch, true, "".into()),
            Err(AckError::NoIdentity)
        );
        assert!(matches!(
            durable_for(&settings, Some(&bob), &ch, true, "".into()),
            Err(AckError::NotDurable { .. })
        ));
        settings.store = Some(StoreSettings {
            dir: "/nonexistent".into(),
            fsync: Fsync::Never,
        });
        let who = durable_for(&settings, Some(&bob), &ch, true, "p".into()).unwrap();
        assert_eq!(
            who.map(|w| (w.sub, w.device)),
            Some(("bob".into(), "p".into()))
        );
        // Not asked: durable by namespace, with an identity only.
        let mut policy = settings.default_policy();
        assert_eq!(
            durable_for(&settings, Some(&bob), &ch, false, "".into()),
            Ok(None)
        );
        policy.durable = true;
        let spaces = vec![Namespace {
            prefix: "d:".into(),
            policy,
        }];
        settings.namespaces =
            std::sync::Arc::new(Namespaces::new(settings.default_policy(), spaces).unwrap());
        assert!(durable_for(&settings, Some(&bob), &ch, false, "".into())
            .unwrap()
            .is_some());
        assert_eq!(
            durable_for(&settings, None, &ch, false, "".into()),
            Ok(None)
        );
        assert_eq!(
            durable_for(&settings, Some(&bob), &plain, false, "".into()),
            Ok(None)
        );
        // A token without a sub is no identity.
        let anon = crate::auth::Access::for_tests(None);
        assert_eq!(identity(Some(&anon), "".into()), Err(AckError::NoIdentity));
    }
}
