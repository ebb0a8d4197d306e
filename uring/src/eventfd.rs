//! The doorbell a sleeping ring is woken with.
//!
//! A thread that owns several rings sleeps in `io_uring_enter` on one of
//! them, which keeps a read of an eventfd armed ([`crate::Ring::arm_wake_read`]).
//! Its other rings signal the eventfd whenever they gain completion work
//! ([`crate::Ring::register_eventfd`]), and other threads write it to
//! deliver cross-thread mail.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::cvt;

/// A non-blocking eventfd. (A blocking one read by io_uring would be
/// punted to a kernel worker thread.)
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A fresh eventfd with a zero counter.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2) call; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, waking whoever reads it. A full counter
    /// (`EAGAIN`) already means "wake up", so it is not an error.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
