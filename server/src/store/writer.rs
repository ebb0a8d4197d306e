//! The writer thread: the only code that writes to the database.
//!
//! Its loop: take whatever the shards queued (round-robin across shards,
//! up to the commit caps), build **one** fjall batch from it, commit it as
//! the policy says, then report per shard the highest ticket the commit
//! held. There is no artificial wait for a batch to fill: while one fsync
//! runs, the next batch queues up, so at low load a commit holds a few
//! records and under load it grows by itself (group commit).
//!
//! It owns, besides the database: every channel's row (`first..=last`
//! stored seqs, so a trim knows which keys to delete without reading), the
//! node's floor, and per shard the last ticket reported durable (the
//! `after` of a failure report). Nothing else touches them.
//!
//! A failure — a commit, an interval fsync — fails the store for good
//! (`Shared::failed`). The writer keeps draining the queues after that, so
//! every submission still gets its `failed` report and the queue counters
//! fall back to zero, but it never writes again: after a failed fsync the
//! kernel may have dropped the dirty pages, so nothing written since the
//! last good fsync can be trusted (fjall poisons itself for the same
//! reason).

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::PersistMode;

use super::codec::{self, ChanRow, RunMarker};
use super::recovery::{describe, with_free_space, Handles, WriterState};
use super::{Fsync, Record, Reports, Shared, StoreError, Submission};
use crate::hub::ChannelName;

/// How long the writer sleeps with nothing to do and nothing to fsync
/// (a submission or shutdown wakes it at once anyway).
const IDLE: Duration = Duration::from_secs(1);

/// How often the writer measures the store's disk use for
/// `ringcast_store_disk_bytes` (fjall sums its tables' and journals' sizes
/// from memory; the shards only read the number).
const MEASURE_DISK: Duration = Duration::from_secs(1);

/// How long shutdown waits for fjall to flush the memtables. Past it the
/// clean marker is written anyway (the journal holds everything, the
/// next open just replays it), so a stuck flush cannot hang shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(30);

pub(super) struct Writer {
    shared: Arc<Shared>,
    h: Handles,
    rows: HashMap<ChannelName, ChanRow>,
    floor: u64,
    run: RunMarker,
    reports: Box<dyn Reports>,
    commit_records: usize,
    commit_bytes: usize,
    /// Per shard: the highest ticket reported durable.
    durable: Vec<u64>,
    /// `interval`: when the oldest commit not yet fsynced was written.
    unsynced_since: Option<Instant>,
    /// Where the next round-robin take starts.
    next_shard: usize,
    /// The OS error that failed the store, without the directory.
    cause: Option<String>,
    /// When [`Writer::measure_disk`] last ran.
    disk_measured: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        state: WriterState,
        reports: Box<dyn Reports>,
        commit_records: usize,
        commit_bytes: usize,
    ) -> Writer {
        let shards = shared.queues.len();
        Writer {
            shared,
            h: state.handles,
            rows: state.rows,
            floor: state.floor,
            run: state.run,
            reports,
            commit_records,
            commit_bytes,
            durable: vec![0; shards],
            unsynced_since: None,
            next_shard: 0,
            cause: None,
            disk_measured: None,
        }
    }

    /// The thread's body; returns when shutdown was asked and every queue
    /// is empty.
    pub(super) fn run(mut self) -> Result<(), StoreError> {
        loop {
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            #[cfg(any(test, feature = "testing"))]
            if !stopping && self.shared.faults.holding() {
                std::thread::park_timeout(Duration::from_millis(10));
                continue;
            }
            self.measure_disk();
            let taken = self.take();
            if !taken.is_empty() {
                self.commit(taken);
                self.sync_if_due();
                continue;
            }
            self.sync_if_due();
            if stopping {
                break;
            }
            self.park();
        }
        self.finish()
    }

    /// Takes submissions round-robin across shards until the caps. A
    /// submission is never split: its ticket is reported whole.
    fn take(&mut self) -> Vec<Submission> {
        let queues = &self.shared.queues;
        let n = queues.len();
        let mut taken = Vec::new();
        if n == 0 {
            return taken;
        }
        let (mut records, mut bytes) = (0, 0);
        'rounds: loop {
            let mut progressed = false;
            for i in 0..n {
                if records >= self.commit_records || bytes >= self.commit_bytes {
                    break 'rounds;
                }
                if let Some(sub) = queues[(self.next_shard + i) % n].pop() {
                    records += sub.records.len();
                    bytes += sub.bytes;
                    taken.push(sub);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        self.next_shard = (self.next_shard + 1) % n;
        taken
    }

    /// Commits `taken` (or, once failed, only reports it) and reports.
    fn commit(&mut self, taken: Vec<Submission>) {
        let result = match self.shared.failed() {
            Some(reason) => Err(reason),
            None => self.write(&taken).map_err(|cause| self.fail(cause)),
        };
        // Queued until now: what is being committed still waits for the disk.
        let records: usize = taken.iter().map(|s| s.records.len()).sum();
        let bytes: usize = taken.iter().map(|s| s.bytes).sum();
        self.shared
            .queued_records
            .fetch_sub(records, Ordering::Relaxed);
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);

        // Each shard's highest ticket here: its queue is FIFO, so the last.
        let mut last: Vec<(usize, u64)> = Vec::new();
        for sub in &taken {
            match last.iter_mut().find(|(shard, _)| *shard == sub.shard) {
                Some(entry) => entry.1 = entry.1.max(sub.ticket),
                None => last.push((sub.shard, sub.ticket)),
            }
        }
        match result {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .committed_records
                    .fetch_add(records as u64, Ordering::Relaxed);
                if matches!(self.shared.fsync, Fsync::Interval(_)) {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
                for (shard, upto) in last {
                    self.durable[shard] = upto;
                    self.reports.durable(shard, upto);
                }
            }
            Err(reason) => {
                for (shard, _) in last {
                    self.reports.failed(shard, self.durable[shard], &reason);
                }
            }
        }
    }

    /// One fjall batch for every record taken; `Err` is the OS error.
    fn write(&mut self, taken: &[Submission]) -> Result<(), String> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(errno) = self.shared.faults.take_commit_failure() {
            return Err(std::io::Error::from_raw_os_error(errno).to_string());
        }
        let mode = match self.shared.fsync {
            Fsync::Always => PersistMode::SyncAll,
            // Never `None`: fjall's journal buffers 8 KiB in user space,
            // which a process crash would lose.
            Fsync::Interval(_) | Fsync::Never => PersistMode::Buffer,
        };
        let h = &self.h;
        let mut batch = h.db.batch().durability(Some(mode));
        let mut touched: Vec<ChannelName> = Vec::new();
        let mut cursors: HashMap<Vec<u8>, codec::CursorValue> = HashMap::new();
        let floor_before = self.floor;
        for record in taken.iter().flat_map(|s| &s.records) {
            match record {
                Record::Message {
                    channel,
                    seq,
                    kind,
                    published_ms,
                    payload,
                } => {
                    let seq = *seq;
                    batch.insert(
                        &h.msgs,
                        codec::msg_key(channel.as_str(), seq),
                        codec::msg_value(*kind, *published_ms, payload),
                    );
                    let row = self.rows.entry(channel.clone()).or_insert(ChanRow {
                        first_seq: seq,
                        last_seq: seq,
                    });
                    if row.is_empty() {
                        // Everything before was trimmed: the channel starts again here.
                        *row = ChanRow {
                            first_seq: seq,
                            last_seq: seq,
                        };
                    } else {
                        row.first_seq = row.first_seq.min(seq);
                        row.last_seq = row.last_seq.max(seq);
                    }
                    touched.push(channel.clone());
                    self.floor = self.floor.max(seq);
                }
                Record::Cursor {
                    channel,
                    who,
                    seq,
                    epoch,
                    updated_ms,
                } => {
                    let value = codec::CursorValue {
                        seq: *seq,
                        epoch: epoch.bits(),
                        updated_ms: *updated_ms,
                    };
                    // The last one per key wins: a batch must not hold a
                    // key twice (its items share one seqno).
                    let key = codec::cursor_key(&who.sub, &who.device, channel.as_str());
                    cursors.insert(key, value);
                }
                Record::Trim { channel, below_seq } => {
                    // Nothing stored, nothing to trim.
                    let Some(row) = self.rows.get_mut(channel) else {
                        continue;
                    };
                    if !row.is_empty() {
                        // Point tombstones: fjall 3 has no public range delete.
                        let end = (*below_seq).min(row.last_seq.saturating_add(1));
                        for seq in row.first_seq..end {
                            batch.remove(&h.msgs, codec::msg_key(channel.as_str(), seq));
                        }
                    }
                    row.first_seq = row.first_seq.max(*below_seq);
                    touched.push(channel.clone());
                }
            }
        }
        for (key, value) in cursors {
            batch.insert(&h.cursors, key, &codec::cursor_value(value)[..]);
        }
        touched.sort_unstable();
        touched.dedup();
        for channel in &touched {
            if let Some(row) = self.rows.get(channel) {
                batch.insert(&h.chans, channel.as_str(), &codec::chan_value(*row)[..]);
            }
        }
        if self.floor != floor_before {
            batch.insert(&h.meta, codec::META_FLOOR, &self.floor.to_be_bytes()[..]);
        }
        batch.commit().map_err(|e| describe(&e))
    }

    /// `interval`: fsyncs the journal once the oldest unsynced commit is an
    /// interval old.
    fn sync_if_due(&mut self) {
        let (Fsync::Interval(every), Some(since)) = (self.shared.fsync, self.unsynced_since) else {
            return;
        };
        if since.elapsed() < every || self.shared.failed().is_some() {
            return;
        }
        match self.h.db.persist(PersistMode::SyncAll) {
            Ok(()) => {
                self.unsynced_since = None;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.fail(describe(&e));
            }
        }
    }

    /// Fails the store (once; later causes are dropped) and returns the
    /// reason the shards are given.
    fn fail(&mut self, cause: String) -> Arc<str> {
        let cause = with_free_space(cause, &self.shared.dir);
        let reason: Arc<str> = format!(
            "writing to data directory {} failed: {cause}",
            self.shared.dir.display()
        )
        .into();
        if self.shared.failed.set(reason.clone()).is_ok() {
            tracing::error!("store: {reason}; the store is failed until a restart");
            self.cause = Some(cause);
        }
        // Nothing will be fsynced any more; without this an `interval`
        // writer would park for zero time, again and again.
        self.unsynced_since = None;
        self.shared.failed().unwrap_or(reason)
    }

    /// About once a second: the bytes the store holds on disk (tables and
    /// journals), for `ringcast_store_disk_bytes`. Here, not at render
    /// time, because `/metrics` is rendered on a shard.
    fn measure_disk(&mut self) {
        if self
            .disk_measured
            .is_some_and(|at| at.elapsed() < MEASURE_DISK)
        {
            return;
        }
        self.disk_measured = Some(Instant::now());
        if let Ok(bytes) = self.h.db.disk_space() {
            self.shared.disk_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// Sleeps until a submission, shutdown, or the next interval fsync.
    fn park(&self) {
        let timeout = match (self.shared.fsync, self.unsynced_since) {
            (Fsync::Interval(every), Some(since)) => every.saturating_sub(since.elapsed()),
            _ => IDLE,
        };
        self.shared.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let work = self.shared.queues.iter().any(|q| !q.is_empty());
        if !work && !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(timeout);
        }
        self.shared.parked.store(false, Ordering::SeqCst);
    }

    /// Graceful end: flush the memtables (so the next open does not replay
    /// the journals: measured 1.2–2.1 s at 1 GiB without this, 6 ms with
    /// it), then the clean marker, fsynced. Nothing of this on a failed
    /// store: the next open sees an unclean end.
    fn finish(self) -> Result<(), StoreError> {
        let dir = self.shared.dir.clone();
        if let Some(reason) = self.shared.failed() {
            return Err(StoreError::Write {
                dir,
                reason: self.cause.unwrap_or_else(|| reason.to_string()),
            });
        }
        let write_error = |e: fjall::Error| StoreError::Write {
            dir: dir.clone(),
            reason: describe(&e),
        };
        let h = &self.h;
        // fjall's `rotate_memtable_and_wait` would do this, but it waits
        // without a bound (a flush that fails leaves a sealed memtable
        // forever); so rotate, then wait with one.
        for keyspace in [&h.msgs, &h.chans, &h.cursors, &h.meta] {
            keyspace.rotate_memtable().map_err(write_error)?;
        }
        let deadline = Instant::now() + FLUSH_WAIT;
        while [&h.msgs, &h.chans, &h.cursors, &h.meta]
            .iter()
            .any(|k| k.sealed_memtable_count() > 0)
        {
            if Instant::now() > deadline {
                tracing::warn!(
                    "store {}: memtables not flushed after {FLUSH_WAIT:?}; the next start \
                     replays the journal instead",
                    dir.display()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let clean = RunMarker {
            clean: true,
            ..self.run
        };
        let mut batch = h.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&h.meta, codec::META_RUN, &codec::run_value(clean)[..]);
        batch.commit().map_err(write_error)?;
        Ok(())
    }
}
