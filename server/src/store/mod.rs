//! The store: messages and durable cursors that survive a restart
//! (issue 14).
//!
//! One fjall database (an LSM tree with a write-ahead journal) in a data
//! directory, written by **one thread**, `store-writer`, which owns it.
//! Shards never call fjall: the io_uring loops must not wait on a disk,
//! and one writer lets one fsync cover the publishes of every shard
//! (group commit).
//!
//! # Who does what
//! * [`Store::open`] (the caller's thread, before the shards start) takes
//!   the directory's lock, checks the format, decides the epoch
//!   (`recovery`), loads every channel's newest messages, writes the run
//!   marker durably and starts the writer. It hands back one [`Intake`]
//!   per shard and what it loaded ([`Recovered`]).
//! * A shard pushes its turn's [`Record`]s through its own [`Intake`] —
//!   one lock-free queue push, and a wake-up only if the writer sleeps.
//!   Each submission gets the shard's next **ticket** (1, 2, …).
//! * The writer drains every queue into **one** fjall batch per commit
//!   (up to [`Options::commit_records`] / [`Options::commit_bytes`]),
//!   commits it as the [`Fsync`] policy says, and then tells the shard, via
//!   [`Reports::durable`], the highest ticket of it that the commit holds.
//!   Tickets increase and each queue is FIFO, so "every ticket ≤ upto" is
//!   exactly what was stored.
//! * A failed commit fails the store for good (fjall poisons itself too:
//!   after a failed fsync nothing written can be trusted). Every shard with
//!   records in flight hears [`Reports::failed`] with the last ticket that
//!   *was* stored; later submissions are refused ([`Refused::Failed`]).
//! * [`Store::shutdown`] drains the queues, flushes the memtables (so the
//!   next open does not replay journals), writes the clean marker durably,
//!   and joins the writer.
//!
//! Every submitted ticket is eventually covered by exactly one of: a
//! `durable(upto ≥ ticket)` or a `failed(after < ticket)` — unless the
//! submission came after [`Store::shutdown`] began, which the caller must
//! not do (its shards stop first).
//!
//! The store knows nothing of shards' mail: [`Reports`] is the seam where
//! stage 2 plugs in the node's mailboxes.

pub mod codec;
#[cfg(any(test, feature = "testing"))]
pub mod fault;
pub mod recovery;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use self::codec::FsyncKind;
use bytes::Bytes;
use crossbeam_queue::SegQueue;

use crate::hub::{ChannelName, Cursor, Epoch};

pub use ::codec::ws::DataKind;
pub use recovery::{
    EpochChoice, Previous, Recovered, RecoveredChannel, RecoveredCursor, StoredMessage,
};

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit is fsynced (`PersistMode::SyncAll`) before it is
    /// reported: survives a power loss.
    Always,
    /// Every commit is written to the kernel (`write(2)`, fjall's
    /// `PersistMode::Buffer`) before it is reported, and the journal is
    /// fsynced once per interval when anything was written: survives a
    /// process crash, may lose the last interval on a host crash.
    Interval(Duration),
    /// Commits are written to the kernel, never fsynced by us: survives a
    /// process crash once reported; the kernel writes back on its own.
    Never,
}

/// The interval of a bare `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The longest `interval:<ms>`: a minute. Longer would make "the last
/// interval" a promise nobody could plan around.
const MAX_INTERVAL_MS: u64 = 60_000;

impl Fsync {
    /// The policy without its interval, as the run marker keeps it.
    pub fn kind(self) -> FsyncKind {
        match self {
            Fsync::Always => FsyncKind::Always,
            Fsync::Interval(_) => FsyncKind::Interval,
            Fsync::Never => FsyncKind::Never,
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            Fsync::Never => f.write_str("never"),
        }
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;

    /// `always`, `never`, `interval` (100 ms) or `interval:<ms>` with
    /// 1 ≤ ms ≤ 60000.
    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            "interval" => Ok(Fsync::Interval(DEFAULT_INTERVAL)),
            _ => match s.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if (1..=MAX_INTERVAL_MS).contains(&ms) => {
                        Ok(Fsync::Interval(Duration::from_millis(ms)))
                    }
                    _ => Err(format!(
                        "fsync interval must be a whole number of milliseconds \
                         from 1 to {MAX_INTERVAL_MS}, not {ms:?} (e.g. interval:100)"
                    )),
                },
                None => Err(format!(
                    "fsync policy must be always, interval, interval:<ms> or never, not {s:?}"
                )),
            },
        }
    }
}

/// One thing to store, pushed by a channel's owner shard.
#[derive(Debug, Clone)]
pub enum Record {
    /// A published message. The payload is shared with the in-memory
    /// message (`Bytes`), so building a record copies nothing.
    Message {
        /// Its channel.
        channel: ChannelName,
        /// Its seq in the channel.
        seq: u64,
        /// Text or binary.
        kind: DataKind,
        /// When the owner accepted it, Unix milliseconds.
        published_ms: u64,
        /// The payload as published.
        payload: Bytes,
    },
    /// The owner dropped the channel's history below `below_seq` (count,
    /// age or bytes). The writer deletes the stored seqs below it with
    /// point tombstones and advances the channel's `first_seq`.
    Trim {
        /// The channel.
        channel: ChannelName,
        /// The oldest seq that stays.
        below_seq: u64,
    },
    /// A durable cursor moved (an ack) or was created (a first durable
    /// subscription). The last one per key in a commit wins.
    Cursor {
        /// The channel.
        channel: ChannelName,
        /// Whose.
        who: Cursor,
        /// The last seq acknowledged.
        seq: u64,
        /// The channel's epoch then.
        epoch: Epoch,
        /// When, Unix milliseconds.
        updated_ms: u64,
    },
}

impl Record {
    /// What it counts against the queue's byte limit: the payload and the
    /// name, plus a rough fixed cost for the key, header and bookkeeping.
    fn cost(&self) -> usize {
        match self {
            Record::Message {
                channel, payload, ..
            } => channel.as_str().len() + payload.len() + 32,
            Record::Trim { channel, .. } => channel.as_str().len() + 32,
            Record::Cursor { channel, who, .. } => {
                channel.as_str().len() + who.sub.len() + who.device.len() + 32
            }
        }
    }
}

/// How the writer tells a shard what became of its tickets. Called only on
/// the writer thread, once per shard per commit, in ticket order.
///
/// Stage 2 implements this with the node's mailboxes (`Mail::Durable`,
/// `Mail::StoreFailed`); the tests with a channel.
pub trait Reports: Send + 'static {
    /// Every record `shard` submitted with a ticket ≤ `upto` is stored as
    /// the policy promises (fsynced at `always`, written to the kernel
    /// otherwise).
    fn durable(&self, shard: usize, upto: u64);

    /// Records `shard` submitted with a ticket > `after` were **not**
    /// stored, and the store is failed for good. `reason` names the cause
    /// and the directory, e.g. "writing to data directory /x failed: No
    /// space left on device (os error 28)".
    fn failed(&self, shard: usize, after: u64, reason: &Arc<str>);
}

/// Sizes and limits of the store. [`Options::new`] has the design's
/// defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The fsync policy.
    pub fsync: Fsync,
    /// How many shards submit (one [`Intake`] each).
    pub shards: usize,
    /// Records queued but not yet committed, past which
    /// [`Intake::try_submit`] and [`Intake::check`] refuse.
    pub queue_records: usize,
    /// Bytes queued (see `Record::cost`), past which they refuse.
    pub queue_bytes: usize,
    /// A commit stops taking submissions once it has this many records…
    pub commit_records: usize,
    /// …or this many bytes. A single submission is never split, so a
    /// commit can exceed either by one submission.
    pub commit_bytes: usize,
}

impl Options {
    /// The defaults: 65,536 records or 64 MiB queued (like the Redis
    /// bridge's publish queue), commits of up to 4,096 records or 4 MiB
    /// (saturated, fjall measured 125–130k publishes/s with batches of
    /// ~550 at `always`; bigger commits only add latency).
    pub fn new(fsync: Fsync, shards: usize) -> Options {
        Options {
            fsync,
            shards,
            queue_records: 65_536,
            queue_bytes: 64 << 20,
            commit_records: 4_096,
            commit_bytes: 4 << 20,
        }
    }
}

/// Why the store cannot be opened or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The directory cannot be created or opened, or fjall failed to open
    /// its files there.
    CannotOpen {
        /// The data directory.
        dir: PathBuf,
        /// The OS error, or fjall's.
        reason: String,
    },
    /// Another process (or another `Store` in this one) holds the lock.
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// A newer build wrote it.
    NewerFormat {
        /// The data directory.
        dir: PathBuf,
        /// The format found.
        found: u32,
    },
    /// fjall does not recognise its own files there (another fjall major,
    /// or not a store at all).
    ForeignFormat {
        /// The data directory.
        dir: PathBuf,
        /// What fjall reported.
        reason: String,
    },
    /// A key or value that does not decode.
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// Its keyspace (`msgs`, `chans`, `meta`).
        keyspace: &'static str,
        /// The key, printable (`codec::show_key`).
        key: String,
        /// What is wrong.
        why: String,
    },
    /// A write (commit, fsync, flush, marker) failed. After this the
    /// store is failed.
    Write {
        /// The data directory.
        dir: PathBuf,
        /// The OS error (e.g. "No space left on device (os error 28)").
        reason: String,
    },
    /// The writer thread could not be started.
    Spawn(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CannotOpen { dir, reason } => {
                write!(f, "cannot open data directory {}: {reason}", dir.display())
            }
            StoreError::InUse { dir } => write!(
                f,
                "data directory {} is in use by another process (lock held)",
                dir.display()
            ),
            StoreError::NewerFormat { dir, found } => write!(
                f,
                "data directory {} was written by a newer ringcast \
                 (store format {found}; this build reads {})",
                dir.display(),
                self::codec::FORMAT
            ),
            StoreError::ForeignFormat { dir, reason } => write!(
                f,
                "data directory {} holds files this build cannot read ({reason})",
                dir.display()
            ),
            StoreError::Corrupt {
                dir,
                keyspace,
                key,
                why,
            } => write!(
                f,
                "data directory {} is corrupt: {keyspace} key {key}: {why}",
                dir.display()
            ),
            StoreError::Write { dir, reason } => write!(
                f,
                "writing to data directory {} failed: {reason}",
                dir.display()
            ),
            StoreError::Spawn(e) => write!(f, "cannot start the store's writer thread: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a submission was refused (the caller answers `503`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The store failed earlier; nothing more is stored until a restart.
    Failed(Arc<str>),
    /// Too much waits for the disk.
    Busy {
        /// Records queued.
        records: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// [`Store::shutdown`] has begun.
    Closed,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Failed(reason) => write!(f, "store unavailable: {reason}; retry later"),
            Refused::Busy { records, bytes } => write!(
                f,
                "store: too many publishes waiting for the disk \
                 ({records} records, {bytes} bytes); retry later"
            ),
            Refused::Closed => f.write_str("store: shutting down"),
        }
    }
}

impl std::error::Error for Refused {}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// fjall batches committed.
    pub commits: u64,
    /// Records in them.
    pub records: u64,
    /// Interval fsyncs done.
    pub syncs: u64,
    /// Records queued, not yet committed.
    pub queued_records: usize,
    /// Their bytes (`Record::cost`).
    pub queued_bytes: usize,
    /// The store's size on disk (tables and journals) when the writer
    /// last measured it (about once a second).
    pub disk_bytes: u64,
}

/// One shard's submission.
#[derive(Debug)]
struct Submission {
    shard: usize,
    ticket: u64,
    records: Vec<Record>,
    bytes: usize,
}

/// What the store's handles share with the writer.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    fsync: Fsync,
    queues: Box<[SegQueue<Submission>]>,
    /// The writer is (about to be) asleep: a submitter must unpark it.
    parked: AtomicBool,
    /// Shutdown asked: drain, flush, mark clean, exit.
    stop: AtomicBool,
    /// The writer's thread, to unpark; set once, right after the spawn.
    writer: OnceLock<Thread>,
    /// Set once, by the writer, when the store fails.
    failed: OnceLock<Arc<str>>,
    queued_records: AtomicUsize,
    queued_bytes: AtomicUsize,
    limit_records: usize,
    limit_bytes: usize,
    commits: AtomicU64,
    committed_records: AtomicU64,
    syncs: AtomicU64,
    /// Measured by the writer (see [`Stats::disk_bytes`]).
    disk_bytes: AtomicU64,
    #[cfg(any(test, feature = "testing"))]
    faults: fault::Faults,
}

impl Shared {
    fn failed(&self) -> Option<Arc<str>> {
        self.failed.get().cloned()
    }

    /// Refuses when failed, closed or over the queue limits.
    fn check(&self) -> Result<(), Refused> {
        if let Some(reason) = self.failed() {
            return Err(Refused::Failed(reason));
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        let records = self.queued_records.load(Ordering::Relaxed);
        let bytes = self.queued_bytes.load(Ordering::Relaxed);
        if records >= self.limit_records || bytes >= self.limit_bytes {
            return Err(Refused::Busy { records, bytes });
        }
        Ok(())
    }

    /// Wakes the writer if it sleeps (the handshake of `bus::mailbox`:
    /// push → fence → load `parked`, against store `parked` → fence →
    /// check queues; one side always sees the other). A busy writer costs
    /// a submitter no system call.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.committed_records.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            queued_records: self.queued_records.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
        }
    }
}

/// What [`Store::open`] returns.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: Store,
    /// One per shard, in shard order: the only way to submit.
    pub intakes: Vec<Intake>,
    /// What the directory held.
    pub recovered: Recovered,
}

/// The open store: its writer thread, and its state for health checks.
/// Keep it on the thread that started the node; the shards hold
/// [`Intake`]s.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its writer.
    /// `limit_for` says how many of a channel's newest messages to load
    /// (its namespace's history size). `reports` receives the writer's
    /// answers. Fails with a specific [`StoreError`]; the store's own keys
    /// are written only once every check passed and everything loaded
    /// (fjall creates its files in a new directory before that).
    pub fn open(
        dir: &Path,
        options: Options,
        reports: Box<dyn Reports>,
        limit_for: &dyn Fn(&ChannelName) -> usize,
    ) -> Result<Opened, StoreError> {
        let (recovered, state) = recovery::open(dir, options.fsync, limit_for)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            fsync: options.fsync,
            queues: (0..options.shards).map(|_| SegQueue::new()).collect(),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: OnceLock::new(),
            failed: OnceLock::new(),
            queued_records: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            limit_records: options.queue_records,
            limit_bytes: options.queue_bytes,
            commits: AtomicU64::new(0),
            committed_records: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            #[cfg(any(test, feature = "testing"))]
            faults: fault::Faults::default(),
        });
        let writer = writer::Writer::new(
            shared.clone(),
            state,
            reports,
            options.commit_records.max(1),
            options.commit_bytes.max(1),
        );
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Spawn(e.to_string()))?;
        // Before any intake exists, so every submitter can wake it.
        let _ = shared.writer.set(handle.thread().clone());
        let intakes = (0..options.shards)
            .map(|shard| Intake {
                shard,
                next_ticket: 1,
                shared: shared.clone(),
            })
            .collect();
        Ok(Opened {
            store: Store {
                shared,
                writer: Some(handle),
            },
            intakes,
            recovered,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.shared.fsync
    }

    /// Why the store failed, if it did (for `/readyz`).
    pub fn failed(&self) -> Option<Arc<str>> {
        self.shared.failed()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// A handle on the store's state for `/readyz`, `/healthz` and
    /// `/metrics`, which the shards read while this thread owns the store.
    pub fn health(&self) -> Health {
        Health(self.shared.clone())
    }

    /// Graceful shutdown: the writer commits everything queued, flushes
    /// the memtables, writes the clean marker durably and exits. Call it
    /// after every shard stopped submitting. `Err` if the store failed
    /// (then no clean marker is written, and the next open applies the
    /// epoch rule to an unclean end).
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), StoreError> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        handle.thread().unpark();
        match handle.join() {
            Ok(result) => result,
            Err(_) => Err(StoreError::Write {
                dir: self.shared.dir.clone(),
                reason: "the store's writer thread panicked".into(),
            }),
        }
    }
}

impl Drop for Store {
    /// A store dropped without [`Store::shutdown`] still drains and closes
    /// (so its lock is released and nothing queued is silently dropped).
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::error!("store: {e}");
        }
    }
}

/// The store's state, readable from any thread (atomics only).
#[derive(Debug, Clone)]
pub struct Health(Arc<Shared>);

impl Health {
    /// Why the store failed, if it did.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.0.failed()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }

    /// The store's metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.stats();
        let up = u8::from(self.failed().is_none());
        let _ = write!(
            out,
            "# HELP ringcast_store_up 1 while the store (--data-dir) takes writes; 0 once a write failed (until a restart).\n\
             # TYPE ringcast_store_up gauge\nringcast_store_up {up}\n\
             # HELP ringcast_store_commits_total Group commits written.\n\
             # TYPE ringcast_store_commits_total counter\nringcast_store_commits_total {}\n\
             # HELP ringcast_store_records_total Records (messages, trims) committed.\n\
             # TYPE ringcast_store_records_total counter\nringcast_store_records_total {}\n\
             # HELP ringcast_store_syncs_total Interval fsyncs (--fsync interval).\n\
             # TYPE ringcast_store_syncs_total counter\nringcast_store_syncs_total {}\n\
             # HELP ringcast_store_queued_records Records waiting for the writer.\n\
             # TYPE ringcast_store_queued_records gauge\nringcast_store_queued_records {}\n\
             # HELP ringcast_store_queued_bytes Bytes waiting for the writer.\n\
             # TYPE ringcast_store_queued_bytes gauge\nringcast_store_queued_bytes {}\n\
             # HELP ringcast_store_disk_bytes The store's size on disk (tables and journals), measured about once a second.\n\
             # TYPE ringcast_store_disk_bytes gauge\nringcast_store_disk_bytes {}\n",
            s.commits, s.records, s.syncs, s.queued_records, s.queued_bytes, s.disk_bytes
        );
    }
}

/// A shard's way into the store: one per shard, not `Clone`, so one
/// thread submits per queue and tickets reach the writer in order.
#[derive(Debug)]
pub struct Intake {
    shard: usize,
    next_ticket: u64,
    shared: Arc<Shared>,
}

impl Intake {
    /// Its shard.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The ticket the next non-empty submission will get (the owner holds
    /// this turn's publishes under it before it submits them).
    pub fn next_ticket(&self) -> u64 {
        self.next_ticket
    }

    /// Whether a submission now would be accepted: refuses when the store
    /// failed, is shutting down, or has too much queued. Cheap (atomic
    /// loads): the owner calls it before it assigns ids, so a refused
    /// publish uses no seq.
    pub fn check(&self) -> Result<(), Refused> {
        self.shared.check()
    }

    /// Queues `records` under the next ticket and returns it (`None` for
    /// an empty list: nothing is queued, no ticket used). Ignores the
    /// queue limits — the owner checked them before assigning ids — but
    /// refuses a failed or closing store.
    pub fn submit(&mut self, records: Vec<Record>) -> Result<Option<u64>, Refused> {
        if let Some(reason) = self.shared.failed() {
            return Err(Refused::Failed(reason));
        }
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        Ok(self.push(records))
    }

    /// [`Intake::submit`], refused also when over the queue limits.
    pub fn try_submit(&mut self, records: Vec<Record>) -> Result<Option<u64>, Refused> {
        self.shared.check()?;
        Ok(self.push(records))
    }

    fn push(&mut self, records: Vec<Record>) -> Option<u64> {
        if records.is_empty() {
            return None;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let bytes = records.iter().map(Record::cost).sum();
        // Counted before the push, so the writer's subtraction after the
        // commit never goes below zero.
        self.shared
            .queued_records
            .fetch_add(records.len(), Ordering::Relaxed);
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.shared.queues[self.shard].push(Submission {
            shard: self.shard,
            ticket,
            records,
            bytes,
        });
        self.shared.wake();
        Some(ticket)
    }
}
