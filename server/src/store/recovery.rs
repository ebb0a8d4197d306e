//! Opening the store: the lock, the format check, the epoch rule, loading
//! what a restart keeps, and the run marker.
//!
//! Runs on the caller's thread before the writer exists, so nothing else
//! touches the database meanwhile. Every failure has its own
//! [`StoreError`], and nothing of ours is written unless every check
//! passed and everything loaded.
//!
//! # The epoch rule
//! Ids are `<epoch>-<seq>`. A restart keeps the epoch — so clients resume
//! across it without `reset` — unless the last run may have shown clients
//! a message the store no longer has: then those seqs will be issued again
//! for different messages, and only a new epoch keeps "an id never names
//! two messages" true. [`choose_epoch`] is the rule; its table is in its
//! docs and in the tests.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::codec::{self, BootId, ChanRow, FsyncKind, Malformed, RunMarker};
use super::{DataKind, Fsync, StoreError};
use crate::hub::{ChannelName, Cursor, Epoch};

/// Total size of fjall's journals before it flushes memtables to retire
/// the oldest. Bounds both the disk's sawtooth and how much a crash
/// restart replays (fjall's default is 512 MiB, its minimum 64 MiB; at
/// 64 MiB journals and 16 MiB memtables a 45 s churn run stayed within
/// 106–321 MiB of disk).
const MAX_JOURNALS: u64 = 128 << 20;

/// Memtable of `msgs`: where every message goes first.
const MSGS_MEMTABLE: u64 = 32 << 20;

/// Memtables of `chans` and `meta`: a row per channel, a few keys.
const SMALL_MEMTABLE: u64 = 8 << 20;

/// fjall's block cache. Reads happen only at start (stages 1–5), so a
/// small one does.
const CACHE: u64 = 16 << 20;

/// How the previous run of this directory ended, from its run marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// No run before: a new store.
    None,
    /// It shut down gracefully, with this policy.
    Clean(FsyncKind),
    /// It crashed or was killed, with this policy.
    Unclean(FsyncKind),
    /// There is an epoch but no run marker (not something this build
    /// writes: the two go in one batch).
    Unknown,
}

/// Which epoch this run uses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochChoice {
    /// The stored one: nothing a client saw can be missing.
    Kept,
    /// A new one: the store had none.
    Fresh,
    /// A new one: the last run ended uncleanly at `--fsync never`, so
    /// messages it delivered may never have reached the disk.
    UncleanNever,
    /// A new one: the last run ended uncleanly at `--fsync interval` and
    /// the machine rebooted since (or the boot id is unknown), so the last
    /// interval's writes may be lost.
    UncleanIntervalAcrossReboot,
    /// A new one: the store has an epoch but no record of how its last
    /// run ended.
    NoRunMarker,
}

impl EpochChoice {
    /// Whether the epoch changes.
    pub fn is_new(self) -> bool {
        self != EpochChoice::Kept
    }
}

impl fmt::Display for EpochChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EpochChoice::Kept => "kept: nothing delivered can be missing",
            EpochChoice::Fresh => "new store",
            EpochChoice::UncleanNever => {
                "previous run ended uncleanly at --fsync never: \
                 messages it delivered may be lost"
            }
            EpochChoice::UncleanIntervalAcrossReboot => {
                "previous run ended uncleanly at --fsync interval and the machine \
                 rebooted since: its last interval's messages may be lost"
            }
            EpochChoice::NoRunMarker => "the store does not say how its last run ended",
        })
    }
}

/// The epoch rule (design §4), a pure function.
///
/// | stored epoch | previous run | boot | epoch |
/// |---|---|---|---|
/// | none | any | any | new (`Fresh`) |
/// | some | no marker | any | new (`NoRunMarker`) |
/// | some | clean, any policy | any | kept |
/// | some | unclean, `always` | any | kept: everything reported was fsynced |
/// | some | unclean, `interval` | same boot | kept: the kernel had every write |
/// | some | unclean, `interval` | other or unknown boot | new |
/// | some | unclean, `never` | any | new: even a process crash can lose what was delivered (the writer's queue) |
pub fn choose_epoch(
    stored: Option<Epoch>,
    previous: Option<RunMarker>,
    boot: BootId,
) -> EpochChoice {
    if stored.is_none() {
        return EpochChoice::Fresh;
    }
    let Some(prev) = previous else {
        return EpochChoice::NoRunMarker;
    };
    if prev.clean {
        return EpochChoice::Kept;
    }
    match prev.policy {
        FsyncKind::Always => EpochChoice::Kept,
        FsyncKind::Interval if prev.boot.same_boot(boot) => EpochChoice::Kept,
        FsyncKind::Interval => EpochChoice::UncleanIntervalAcrossReboot,
        FsyncKind::Never => EpochChoice::UncleanNever,
    }
}

/// A message loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its seq.
    pub seq: u64,
    /// Text or binary.
    pub kind: DataKind,
    /// When it was published, Unix milliseconds.
    pub published_ms: u64,
    /// The payload.
    pub payload: Bytes,
}

/// A channel the store knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredChannel {
    /// Its name.
    pub name: ChannelName,
    /// The oldest seq stored (`> last_seq` when every message was
    /// trimmed; the channel still continues after `last_seq`).
    pub first_seq: u64,
    /// The newest seq stored.
    pub last_seq: u64,
    /// Its newest messages, oldest first, at most `limit_for(name)`.
    pub messages: Vec<StoredMessage>,
}

/// A durable cursor loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredCursor {
    /// Its channel.
    pub channel: ChannelName,
    /// Whose.
    pub who: Cursor,
    /// The last seq acknowledged, at most the channel's last stored seq
    /// (an ack of a message a lossy restart lost must not hide the next
    /// message issued under that number).
    pub seq: u64,
}

/// What the directory held.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// This run's epoch.
    pub epoch: Epoch,
    /// Why it is that one (log a warning when [`EpochChoice::is_new`] on a
    /// store that had data: clients will get `reset: epoch`).
    pub choice: EpochChoice,
    /// How the previous run ended.
    pub previous: Previous,
    /// The highest seq ever stored on the node: a channel the store does
    /// not know starts above it, so an old id never names a new message.
    pub floor: u64,
    /// Every channel with a row, by name.
    pub channels: Vec<RecoveredChannel>,
    /// Every durable cursor, by identity.
    pub cursors: Vec<RecoveredCursor>,
}

/// The open database and its keyspaces, for the writer.
pub(super) struct Handles {
    pub db: Database,
    pub msgs: Keyspace,
    pub chans: Keyspace,
    pub cursors: Keyspace,
    pub meta: Keyspace,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handles")
    }
}

/// What the writer continues from.
#[derive(Debug)]
pub(super) struct WriterState {
    pub handles: Handles,
    /// Every channel's row.
    pub rows: HashMap<ChannelName, ChanRow>,
    /// `meta.floor`.
    pub floor: u64,
    /// This run's marker (written clean at shutdown).
    pub run: RunMarker,
}

/// Opens `dir` (see the module docs).
pub(super) fn open(
    dir: &Path,
    fsync: Fsync,
    limit_for: &dyn Fn(&ChannelName) -> usize,
) -> Result<(Recovered, WriterState), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::CannotOpen {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let db = Database::builder(dir)
        .worker_threads(1)
        .max_journaling_size(MAX_JOURNALS)
        .cache_size(CACHE)
        .open()
        .map_err(|e| open_error(dir, &e))?;
    let keyspace = |name: &str, memtable: u64| {
        db.keyspace(name, || {
            KeyspaceCreateOptions::default().max_memtable_size(memtable)
        })
        .map_err(|e| open_error(dir, &e))
    };
    let handles = Handles {
        msgs: keyspace("msgs", MSGS_MEMTABLE)?,
        chans: keyspace("chans", SMALL_MEMTABLE)?,
        cursors: keyspace("cursors", SMALL_MEMTABLE)?,
        meta: keyspace("meta", SMALL_MEMTABLE)?,
        db: db.clone(),
    };
    let h = &handles;
    let read = |e: fjall::Error| StoreError::CannotOpen {
        dir: dir.to_path_buf(),
        reason: describe(&e),
    };
    let corrupt = |keyspace: &'static str, key: &[u8], why: Malformed| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        keyspace,
        key: codec::show_key(key),
        why: why.0,
    };

    match h.meta.get(codec::META_FORMAT).map_err(read)? {
        Some(v) => {
            let format =
                codec::parse_u32(&v).map_err(|m| corrupt("meta", codec::META_FORMAT, m))?;
            if format > codec::FORMAT {
                return Err(StoreError::NewerFormat {
                    dir: dir.to_path_buf(),
                    found: format,
                });
            }
            if format == 0 {
                return Err(corrupt(
                    "meta",
                    codec::META_FORMAT,
                    Malformed("store format 0 does not exist".into()),
                ));
            }
        }
        None => {
            let holds_data = !h.msgs.is_empty().map_err(read)?
                || !h.chans.is_empty().map_err(read)?
                || !h.cursors.is_empty().map_err(read)?
                || !h.meta.is_empty().map_err(read)?;
            if holds_data {
                return Err(corrupt(
                    "meta",
                    codec::META_FORMAT,
                    Malformed("missing, but the store holds data".into()),
                ));
            }
        }
    }

    let stored_epoch = match h.meta.get(codec::META_EPOCH).map_err(read)? {
        Some(v) => {
            let bits = codec::parse_u64(&v).map_err(|m| corrupt("meta", codec::META_EPOCH, m))?;
            if bits >> 48 != 0 {
                return Err(corrupt(
                    "meta",
                    codec::META_EPOCH,
                    Malformed(format!("epoch {bits:#x} is wider than 48 bits")),
                ));
            }
            Some(Epoch::from_bits(bits))
        }
        None => None,
    };
    let mut floor = match h.meta.get(codec::META_FLOOR).map_err(read)? {
        Some(v) => codec::parse_u64(&v).map_err(|m| corrupt("meta", codec::META_FLOOR, m))?,
        None => 0,
    };
    let previous_run = match h.meta.get(codec::META_RUN).map_err(read)? {
        Some(v) => {
            Some(codec::parse_run_value(&v).map_err(|m| corrupt("meta", codec::META_RUN, m))?)
        }
        None => None,
    };
    let previous = match (stored_epoch, previous_run) {
        (_, Some(m)) if m.clean => Previous::Clean(m.policy),
        (_, Some(m)) => Previous::Unclean(m.policy),
        (Some(_), None) => Previous::Unknown,
        (None, None) => Previous::None,
    };

    let boot = current_boot();
    let choice = choose_epoch(stored_epoch, previous_run, boot);
    let epoch = match stored_epoch {
        Some(e) if !choice.is_new() => e,
        _ => Epoch::random(),
    };

    let mut rows = HashMap::new();
    let mut channels = Vec::new();
    for guard in h.chans.iter() {
        let (key, value) = guard.into_inner().map_err(read)?;
        let name = std::str::from_utf8(&key)
            .ok()
            .and_then(|n| ChannelName::new(n).ok())
            .ok_or_else(|| corrupt("chans", &key, Malformed("not a valid channel name".into())))?;
        let row = codec::parse_chan_value(&value).map_err(|m| corrupt("chans", &key, m))?;
        floor = floor.max(row.last_seq);
        let limit = limit_for(&name);
        let mut messages = Vec::new();
        if limit > 0 {
            for guard in h.msgs.prefix(codec::msg_prefix(name.as_str())).rev() {
                if messages.len() == limit {
                    break;
                }
                let (key, value) = guard.into_inner().map_err(read)?;
                let (_, seq) = codec::parse_msg_key(&key).map_err(|m| corrupt("msgs", &key, m))?;
                if row.is_empty() || seq < row.first_seq || seq > row.last_seq {
                    return Err(corrupt(
                        "msgs",
                        &key,
                        Malformed(format!(
                            "seq {seq} is outside the channel's stored range {}..={}",
                            row.first_seq, row.last_seq
                        )),
                    ));
                }
                let v = codec::parse_msg_value(&value).map_err(|m| corrupt("msgs", &key, m))?;
                messages.push(StoredMessage {
                    seq,
                    kind: v.kind,
                    published_ms: v.published_ms,
                    payload: Bytes::copy_from_slice(v.payload),
                });
            }
            messages.reverse();
        }
        rows.insert(name.clone(), row);
        channels.push(RecoveredChannel {
            name,
            first_seq: row.first_seq,
            last_seq: row.last_seq,
            messages,
        });
    }

    let mut cursors = Vec::new();
    for guard in h.cursors.iter() {
        let (key, value) = guard.into_inner().map_err(read)?;
        let k = codec::parse_cursor_key(&key).map_err(|m| corrupt("cursors", &key, m))?;
        let v = codec::parse_cursor_value(&value).map_err(|m| corrupt("cursors", &key, m))?;
        let channel = ChannelName::new(k.channel).map_err(|_| {
            corrupt(
                "cursors",
                &key,
                Malformed("not a valid channel name".into()),
            )
        })?;
        // Never past what the store holds of the channel: after a lossy
        // restart the seqs above it are issued again for new messages.
        let last = rows.get(&channel).map_or(floor, |r: &ChanRow| r.last_seq);
        cursors.push(RecoveredCursor {
            channel,
            who: Cursor {
                sub: k.sub.into(),
                device: k.device.into(),
            },
            seq: v.seq.min(last),
        });
    }

    if choice.is_new() && previous != Previous::None {
        tracing::warn!(
            "store {}: new epoch {epoch} ({choice}); clients resume with reset: epoch",
            dir.display()
        );
    }

    // This run's marker, unclean until a graceful shutdown says otherwise,
    // fsynced before anything is served: if this run crashes, the next
    // start must know which policy it ran with.
    let run = RunMarker {
        clean: false,
        policy: fsync.kind(),
        boot,
    };
    let mut batch = h.db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(
        &h.meta,
        codec::META_FORMAT,
        &codec::FORMAT.to_be_bytes()[..],
    );
    batch.insert(&h.meta, codec::META_EPOCH, &epoch.bits().to_be_bytes()[..]);
    batch.insert(&h.meta, codec::META_FLOOR, &floor.to_be_bytes()[..]);
    batch.insert(&h.meta, codec::META_RUN, &codec::run_value(run)[..]);
    batch.commit().map_err(|e| StoreError::Write {
        dir: dir.to_path_buf(),
        reason: describe(&e),
    })?;

    Ok((
        Recovered {
            epoch,
            choice,
            previous,
            floor,
            channels,
            cursors,
        },
        WriterState {
            handles,
            rows,
            floor,
            run,
        },
    ))
}

/// The boot id, or [`BootId::UNKNOWN`] when the kernel does not say.
fn current_boot() -> BootId {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| BootId::parse(&s))
        .unwrap_or(BootId::UNKNOWN)
}

fn open_error(dir: &Path, e: &fjall::Error) -> StoreError {
    let dir = dir.to_path_buf();
    match e {
        fjall::Error::Locked => StoreError::InUse { dir },
        fjall::Error::InvalidVersion(v) => StoreError::ForeignFormat {
            dir,
            reason: match v {
                Some(v) => format!("fjall format {v:?}; this build reads V3"),
                None => "no readable fjall version marker".into(),
            },
        },
        _ => StoreError::CannotOpen {
            dir,
            reason: describe(e),
        },
    }
}

/// fjall poisons the database when one of its background flushes or
/// compactions fails, and logs that error itself; the next commit only says
/// `Poisoned`. A full disk is the usual cause, so the reason the shards pass
/// on says how much room the data directory's filesystem has left.
pub(super) fn with_free_space(cause: String, dir: &std::path::Path) -> String {
    if !cause.contains("fjall: poisoned") {
        return cause;
    }
    match rustix::fs::statvfs(dir) {
        Ok(fs) => {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free < 16 << 20 {
                format!("No space left on device ({free} bytes free; {cause})")
            } else {
                format!("{cause}; {free} bytes free, see the error fjall logged before this")
            }
        }
        Err(_) => cause,
    }
}

/// fjall's errors print as `FjallError: Io(Os { … })`; this digs out the OS
/// error ("No space left on device (os error 28)") where there is one.
pub(super) fn describe(e: &fjall::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        source = s.source();
    }
    match e {
        fjall::Error::Poisoned => {
            "the store refuses writes after an earlier write failed (fjall: poisoned)".into()
        }
        fjall::Error::Locked => "locked by another process".into(),
        other => format!("fjall: {other:?}"),
    }
}
