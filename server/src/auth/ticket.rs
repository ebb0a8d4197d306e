//! Single-use tickets: what a client that cannot set headers (a browser's
//! `EventSource`, a `<script>` that opens a WebSocket) puts in its URL
//! instead of its token, so that no long-lived credential lands in proxy
//! and access logs.
//!
//! `POST /ticket` with `Authorization: Bearer <jwt>` exchanges a valid
//! token for an opaque ticket — 128 random bits, base64url — valid for
//! `--ticket-ttl` (30 s by default) and for one request: the first
//! `?ticket=` that presents it takes it out of the store. It grants what
//! the token granted, until the token's own `exp`.
//!
//! One store for the node, behind a mutex: a ticket issued on one shard is
//! redeemed on whichever shard accepts the next connection. It is touched
//! only by `POST /ticket` and by requests that carry `?ticket=`, never on
//! the delivery path. It holds at most `--max-tickets`; expired tickets are
//! swept when it fills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rand::Rng;

use super::Access;

/// Bytes of randomness in a ticket.
const TICKET_BYTES: usize = 16;

/// Ticket → what it grants and when it expires (Unix seconds).
type Outstanding = HashMap<[u8; TICKET_BYTES], (Arc<Access>, u64)>;

/// The node's outstanding tickets.
#[derive(Debug)]
pub struct Tickets {
    ttl: Duration,
    max: usize,
    outstanding: Mutex<Outstanding>,
}

/// Why no ticket was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueError {
    /// `--max-tickets` are outstanding and none has expired.
    Full,
}

impl Tickets {
    /// A store whose tickets live `ttl`, holding at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Tickets {
        Tickets {
            ttl,
            max,
            outstanding: Mutex::new(HashMap::new()),
        }
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket for `access`, issued at `now` (Unix seconds). It
    /// expires after the ticket lifetime or with the token, whichever is
    /// first.
    pub fn issue(&self, access: Arc<Access>, now: u64) -> Result<String, IssueError> {
        let expires = (now + self.ttl.as_secs().max(1)).min(access.exp);
        let mut ticket = [0u8; TICKET_BYTES];
        rand::rng().fill(&mut ticket);
        let mut outstanding = self.lock();
        if outstanding.len() >= self.max {
            outstanding.retain(|_, (_, exp)| *exp > now);
            if outstanding.len() >= self.max {
                return Err(IssueError::Full);
            }
        }
        outstanding.insert(ticket, (access, expires));
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ticket))
    }

    /// Takes `ticket` out of the store: what it grants if it was issued
    /// and has not expired at `now`; `None` if it is unknown, used or
    /// expired (which the client is not told apart: all mean "get a new
    /// one").
    pub fn redeem(&self, ticket: &str, now: u64) -> Option<Arc<Access>> {
        let mut key = [0u8; TICKET_BYTES];
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ticket.as_bytes())
            .ok()?;
        if decoded.len() != TICKET_BYTES {
            return None;
        }
        key.copy_from_slice(&decoded);
        let (access, expires) = self.lock().remove(&key)?;
        (expires > now).then_some(access)
    }

    /// Tickets issued and not yet redeemed or swept.
    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        // A panic while holding the lock leaves a map that is still
        // consistent (every operation is a single insert, remove or
        // retain), so a poisoned lock is used as it is.
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    fn access(exp: u64) -> Arc<Access> {
        let secret = "0123456789abcdef0123456789abcdef";
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "ann", "exp": exp, "channels": ["a"]}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let v = Verifier::load(Some(secret), None, None).unwrap().unwrap();
        v.verify(&token).unwrap()
    }

    #[test]
    fn a_ticket_is_good_once_and_only_until_it_expires() {
        let now = jsonwebtoken::get_current_timestamp();
        let t = Tickets::new(Duration::from_secs(30), 10);
        let ticket = t.issue(access(now + 600), now).unwrap();
        assert_eq!(ticket.len(), 22);
        let got = t.redeem(&ticket, now + 1).expect("first use");
        assert_eq!(got.sub.as_deref(), Some("ann"));
        assert!(t.redeem(&ticket, now + 1).is_none(), "second use");
        let late = t.issue(access(now + 600), now).unwrap();
        assert!(t.redeem(&late, now + 30).is_none(), "expired");
        // Never beyond the token's own expiry.
        let short = t.issue(access(now + 5), now).unwrap();
        assert!(t.redeem(&short, now + 5).is_none());
        for bad in ["", "not base64!", "AAAA", &"A".repeat(22)] {
            assert!(t.redeem(bad, now).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_full_store_sweeps_expired_tickets_then_refuses() {
        let now = jsonwebtoken::get_current_timestamp();
        let t = Tickets::new(Duration::from_secs(10), 2);
        t.issue(access(now + 600), now).unwrap();
        t.issue(access(now + 600), now).unwrap();
        assert_eq!(t.issue(access(now + 600), now + 1), Err(IssueError::Full));
        assert!(
            t.issue(access(now + 600), now + 10).is_ok(),
            "both expired and swept"
        );
        assert_eq!(t.outstanding(), 1);
    }
}
