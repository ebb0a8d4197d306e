//! Channel policy by namespace: what the node allows on a channel, decided
//! by the longest configured prefix its name starts with.
//!
//! Each namespace (`[[namespace]]` in the TOML config) says whether a
//! token is required to read, whether clients may publish over `/ws`,
//! whether presence is visible, and how much history is kept. A channel
//! that matches no namespace gets the defaults, which come from the
//! top-level options (`--history-size`, `--history-ttl`,
//! `--client-publish`, and a token whenever the node has JWT keys) and
//! which the banner prints.
//!
//! Looked up when a request or command names a channel, and once when the
//! owner creates a channel (for its history) — never per delivery.
//!
//! A leaf: it knows nothing of connections or the hub.

use std::time::Duration;

/// How long a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept per channel (0 disables history and resume).
    pub max_messages: usize,
    /// Oldest message kept.
    pub max_age: Duration,
    /// Most payload bytes kept per channel (0: no byte limit). The newest
    /// message is kept whatever its size, so a resume from it still works.
    pub max_bytes: usize,
    /// An offline inbox (`inbox-ttl`): messages stay until every cursor of
    /// the channel acknowledged them, past the limits above, or until they
    /// are this old; at most [`INBOX_SLACK`] times the limits (see
    /// [`HistoryLimits::most_kept`]).
    pub inbox: Option<Duration>,
}

/// How far past its limits an inbox may hold unacknowledged messages:
/// `INBOX_SLACK × history-size` messages (and `× history-bytes` bytes when
/// set). The hard bound on an inbox's memory, whatever its readers do.
pub const INBOX_SLACK: usize = 10;

impl HistoryLimits {
    /// The most messages a channel may hold: its count limit, or for an
    /// inbox the hard bound. What a restart loads from the store.
    pub fn most_kept(&self) -> usize {
        match self.inbox {
            Some(_) => self.max_messages.saturating_mul(INBOX_SLACK),
            None => self.max_messages,
        }
    }

    /// The most payload bytes, as [`HistoryLimits::most_kept`] (0: none).
    pub fn most_bytes(&self) -> usize {
        match self.inbox {
            Some(_) => self.max_bytes.saturating_mul(INBOX_SLACK),
            None => self.max_bytes,
        }
    }
}

/// What the node allows on the channels of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Reading needs a token that lists the channel (`channels` claim).
    pub token: bool,
    /// Any client that may read the channel may also publish to it over
    /// `/ws`. Without it, only a token whose `publish` claim lists the
    /// channel may.
    pub publish: bool,
    /// Subscribers appear in presence, and presence may be queried.
    pub presence: bool,
    /// History kept for resume.
    pub history: HistoryLimits,
    /// Subscriptions of clients with an identity (a token's `sub`) are
    /// durable: the node keeps a cursor per identity and device, advanced
    /// by acks, and a reconnect without `since` resumes from it. Needs
    /// `--data-dir`.
    pub durable: bool,
    /// `owner = "<prefix>{sub}"`: a channel belongs to the identity its
    /// name ends with (`user:bob` to `sub` `bob`), and only that identity
    /// may subscribe or acknowledge — whatever a token's `channels` claim
    /// says. Implies `token`.
    pub owner: bool,
    /// `receipts = true` (needs `durable`): an ack that moves a cursor
    /// publishes a live-only receipt to `<channel>:receipts`, which only
    /// the node publishes to and which whoever may read the channel may
    /// read (see [`Namespaces::receipts_of`]).
    pub receipts: bool,
}

/// The suffix of the channel that carries a channel's receipts.
pub const RECEIPTS_SUFFIX: &str = ":receipts";

/// One configured namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Channels whose names start with this belong to it (`chat:`).
    pub prefix: Box<str>,
    /// What they allow.
    pub policy: Policy,
}

impl Policy {
    /// What the receipts channel (`<ch>:receipts`) of a channel with this
    /// policy allows: reading as the channel (a token when it needs one;
    /// only its identity in an `owner` namespace), publishing by nobody
    /// (the transports refuse it whatever a token says: receipts would be
    /// forged), no presence, no history and no cursors (receipts are
    /// live-only and have no ids).
    fn of_receipts(&self) -> Policy {
        Policy {
            token: self.token,
            publish: false,
            presence: false,
            history: HistoryLimits {
                max_messages: 0,
                max_age: std::time::Duration::ZERO,
                max_bytes: 0,
                inbox: None,
            },
            durable: false,
            owner: self.owner,
            receipts: false,
        }
    }
}

/// The node's namespaces and the defaults for channels in none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    default: Policy,
    /// Longest prefix first, so the first match is the most specific.
    spaces: Vec<Namespace>,
    /// The policy of each namespace's receipts channels, by position in
    /// `spaces`, then the defaults' (see [`Policy::of_receipts`]).
    receipts: Vec<Policy>,
    /// Whether any namespace sets `receipts`: without one no name is
    /// looked at twice.
    any_receipts: bool,
}

impl Namespaces {
    /// Namespaces over `default`; `Err` names a prefix given twice or
    /// empty.
    pub fn new(default: Policy, mut spaces: Vec<Namespace>) -> Result<Namespaces, String> {
        spaces.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.prefix.cmp(&b.prefix))
        });
        if spaces.iter().any(|n| n.prefix.is_empty()) {
            return Err(
                "a namespace needs a non-empty prefix (the defaults cover every other channel)"
                    .into(),
            );
        }
        if let Some(pair) = spaces.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(format!(
                "namespace {:?} is configured twice",
                pair[0].prefix
            ));
        }
        Ok(Namespaces::with(default, spaces))
    }

    fn with(default: Policy, spaces: Vec<Namespace>) -> Namespaces {
        let receipts = (spaces.iter().map(|n| n.policy.of_receipts()))
            .chain([default.of_receipts()])
            .collect();
        let any_receipts = default.receipts || spaces.iter().any(|n| n.policy.receipts);
        Namespaces {
            default,
            spaces,
            receipts,
            any_receipts,
        }
    }

    /// Only the defaults: every channel is treated alike.
    pub fn uniform(default: Policy) -> Namespaces {
        Namespaces::with(default, Vec::new())
    }

    /// The policy of `channel`. A receipts channel (`<ch>:receipts` of a
    /// channel whose namespace sets `receipts`) has its own, derived from
    /// its channel's ([`Policy::of_receipts`]).
    pub fn of(&self, channel: &str) -> &Policy {
        if self.any_receipts {
            if let Some(base) = self.receipts_of(channel) {
                let i = (self
                    .spaces
                    .iter()
                    .position(|n| base.starts_with(&*n.prefix)))
                .unwrap_or(self.spaces.len());
                return &self.receipts[i];
            }
        }
        self.space_of(channel).map_or(&self.default, |n| &n.policy)
    }

    /// The channel whose receipts `channel` carries, when it is a receipts
    /// channel: its name less `:receipts`, in a namespace that sets
    /// `receipts` (and not itself a receipts channel). Elsewhere a name
    /// ending in `:receipts` is an ordinary channel.
    pub fn receipts_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        if !self.any_receipts {
            return None;
        }
        let base = channel.strip_suffix(RECEIPTS_SUFFIX)?;
        if base.is_empty() || base.ends_with(RECEIPTS_SUFFIX) {
            return None;
        }
        let policy = self.space_of(base).map_or(&self.default, |n| &n.policy);
        policy.receipts.then_some(base)
    }

    /// Where `channel`'s receipts go (`<channel>:receipts`), when its
    /// namespace sets `receipts` (the caller checks the name's length).
    pub fn receipts_channel(&self, channel: &str) -> Option<String> {
        if !self.any_receipts || !self.of(channel).receipts {
            return None;
        }
        Some(format!("{channel}{RECEIPTS_SUFFIX}"))
    }

    /// The namespace `channel` belongs to, as refusals name it.
    pub fn name_of(&self, channel: &str) -> &str {
        self.space_of(channel).map_or("(default)", |n| &n.prefix)
    }

    /// The most specific namespace `channel` is in, if any.
    fn space_of(&self, channel: &str) -> Option<&Namespace> {
        self.spaces.iter().find(|n| channel.starts_with(&*n.prefix))
    }

    /// The identity `channel` belongs to, when its namespace sets `owner`:
    /// the rest of its name after the namespace's prefix.
    /// A receipts channel belongs to its channel's identity
    /// (`user:bob:receipts` to `bob`, never to a `sub` `bob:receipts`).
    pub fn owner_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        let channel = self.receipts_of(channel).unwrap_or(channel);
        let space = self.space_of(channel).filter(|n| n.policy.owner)?;
        channel.strip_prefix(&*space.prefix)
    }

    /// The defaults.
    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    /// The configured namespaces, longest prefix first.
    pub fn spaces(&self) -> &[Namespace] {
        &self.spaces
    }

    /// Whether any channel may need a token.
    pub fn any_token(&self) -> bool {
        self.default.token || self.spaces.iter().any(|n| n.policy.token)
    }

    /// One line per namespace and one for the defaults, for the banner.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("channels by default: {}", self.default)];
        for n in &self.spaces {
            lines.push(format!("namespace {:?}: {}", n.prefix, n.policy));
        }
        lines
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}, presence {}, history {} messages{} for {}{}{}{}{}",
            if self.token {
                "token required"
            } else {
                "no token needed"
            },
            if self.publish {
                "clients may publish"
            } else {
                "clients may not publish (but by a token's publish claim)"
            },
            if self.presence { "visible" } else { "hidden" },
            self.history.max_messages,
            match self.history.max_bytes {
                0 => String::new(),
                b => format!(" / {b} bytes"),
            },
            humantime::format_duration(self.history.max_age),
            if self.durable {
                ", durable cursors"
            } else {
                ""
            },
            match self.history.inbox {
                Some(ttl) => format!(
                    ", an inbox (kept until acked, for at most {})",
                    humantime::format_duration(ttl)
                ),
                None => String::new(),
            },
            if self.owner {
                ", each channel its identity's own"
            } else {
                ""
            },
            if self.receipts {
                ", receipts to <channel>:receipts"
            } else {
                ""
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(token: bool, history: usize) -> Policy {
        Policy {
            token,
            publish: false,
            presence: true,
            history: HistoryLimits {
                max_messages: history,
                max_age: Duration::from_secs(60),
                max_bytes: 0,
                inbox: None,
            },
            durable: false,
            owner: false,
            receipts: false,
        }
    }

    fn space(prefix: &str, p: Policy) -> Namespace {
        Namespace {
            prefix: prefix.into(),
            policy: p,
        }
    }

    #[test]
    fn the_longest_prefix_decides() {
        let ns = Namespaces::new(
            policy(true, 10),
            vec![
                space("chat:", policy(false, 20)),
                space("chat:vip:", policy(true, 30)),
            ],
        )
        .unwrap();
        assert_eq!(ns.of("chat:room").history.max_messages, 20);
        assert_eq!(ns.of("chat:vip:room").history.max_messages, 30);
        assert_eq!(ns.of("news").history.max_messages, 10);
        assert_eq!(
            ns.of("chat").history.max_messages,
            10,
            "a prefix is not a name"
        );
        assert_eq!(ns.name_of("chat:vip:x"), "chat:vip:");
        assert_eq!(ns.name_of("other"), "(default)");
        assert!(ns.any_token());
    }

    #[test]
    fn duplicate_and_empty_prefixes_are_refused() {
        let dup = Namespaces::new(
            policy(false, 1),
            vec![space("a:", policy(false, 1)), space("a:", policy(true, 1))],
        );
        assert!(dup.unwrap_err().contains("twice"));
        let empty = Namespaces::new(policy(false, 1), vec![space("", policy(false, 1))]);
        assert!(empty.unwrap_err().contains("non-empty"));
    }

    #[test]
    fn an_owner_namespace_names_the_identity_after_its_prefix() {
        let mut inbox = policy(true, 10);
        inbox.owner = true;
        let ns = Namespaces::new(
            policy(false, 1),
            vec![space("user:", inbox), space("room:", policy(false, 1))],
        )
        .unwrap();
        assert_eq!(ns.owner_of("user:bob"), Some("bob"));
        assert_eq!(ns.owner_of("room:bob"), None);
        assert_eq!(ns.owner_of("bob"), None);
    }

    #[test]
    fn a_receipts_channel_reads_as_its_channel_and_keeps_nothing() {
        let mut room = policy(true, 10);
        room.durable = true;
        room.receipts = true;
        let mut inbox = room;
        inbox.owner = true;
        let mut plain = policy(false, 10);
        plain.durable = true;
        let ns = Namespaces::new(
            policy(false, 1),
            vec![
                space("room:", room),
                space("user:", inbox),
                space("chat:", plain),
            ],
        )
        .unwrap();
        assert_eq!(ns.receipts_of("room:7:receipts"), Some("room:7"));
        assert_eq!(
            ns.receipts_channel("room:7").as_deref(),
            Some("room:7:receipts")
        );
        let r = ns.of("room:7:receipts");
        assert!(r.token && !r.publish && !r.presence && !r.durable && !r.receipts);
        assert_eq!(r.history.max_messages, 0, "live-only");
        assert_eq!(
            ns.receipts_channel("room:7:receipts"),
            None,
            "no receipts of receipts"
        );
        assert_eq!(ns.receipts_of("room:7:receipts:receipts"), None);
        assert_eq!(ns.receipts_of("room::receipts"), Some("room:"));
        // An inbox's receipts are its identity's, not those of a `sub`
        // that happens to end in `:receipts`.
        assert_eq!(ns.owner_of("user:bob:receipts"), Some("bob"));
        assert!(ns.of("user:bob:receipts").owner);
        // Without `receipts` the name is an ordinary channel.
        assert_eq!(ns.receipts_of("chat:7:receipts"), None);
        assert_eq!(ns.receipts_channel("chat:7"), None);
        assert_eq!(ns.of("chat:7:receipts").history.max_messages, 10);
        assert_eq!(ns.receipts_of("news:receipts"), None);
        let none = Namespaces::new(policy(false, 1), vec![space("chat:", plain)]).unwrap();
        assert_eq!(none.receipts_of("chat:7:receipts"), None);
    }
}
