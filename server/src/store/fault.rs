//! Fault injection, for tests only (`cfg(test)` or the `testing` feature).
//!
//! Two hooks into the writer, both checked where it would act:
//! * **fail the next commit** with an OS error (`ENOSPC`, `EIO`, …): the
//!   writer takes the failure path exactly as if fjall had returned that
//!   error — the store fails, shards get `failed` reports — without
//!   writing anything. (A real full disk needs a tiny filesystem, which a
//!   unit test cannot mount.)
//! * **pause** the writer, so that a test can queue several submissions
//!   and know they will all be taken together: the one way to make group
//!   commit deterministic.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::Store;

/// The hooks' state, in `Shared`.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// An errno for the next commit to fail with; 0: none.
    fail_next: AtomicI32,
    paused: AtomicBool,
    /// The writer saw `paused` and takes nothing until it is cleared.
    holding: AtomicBool,
}

impl Faults {
    /// The writer's side: the injected failure for this commit, if any.
    pub(super) fn take_commit_failure(&self) -> Option<i32> {
        match self.fail_next.swap(0, Ordering::SeqCst) {
            0 => None,
            errno => Some(errno),
        }
    }

    /// The writer's side, at the top of its loop: whether to take nothing
    /// now.
    pub(super) fn holding(&self) -> bool {
        let paused = self.paused.load(Ordering::SeqCst);
        if paused {
            self.holding.store(true, Ordering::SeqCst);
        }
        paused
    }
}

impl Store {
    /// The next commit fails with OS error `errno` (e.g. `libc::ENOSPC`).
    pub fn fail_next_commit(&self, errno: i32) {
        self.shared.faults.fail_next.store(errno, Ordering::SeqCst);
    }

    /// Stops the writer from taking submissions, and returns once it has
    /// (`false` if it did not within 10 s). Shutdown overrides the pause.
    pub fn pause_writer(&self) -> bool {
        let faults = &self.shared.faults;
        faults.holding.store(false, Ordering::SeqCst);
        faults.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !faults.holding.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return false;
            }
            if let Some(t) = self.shared.writer.get() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Lets the writer go on.
    pub fn resume_writer(&self) {
        let faults = &self.shared.faults;
        faults.paused.store(false, Ordering::SeqCst);
        faults.holding.store(false, Ordering::SeqCst);
        if let Some(t) = self.shared.writer.get() {
            t.unpark();
        }
    }
}
