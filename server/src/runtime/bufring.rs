//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): receive buffers
//! shared by every connection of one ring.
//!
//! Idle connections pin no receive buffer: their multishot receive takes a
//! buffer from this pool only when bytes arrive, and the shard hands the
//! buffer back as soon as it has processed (or copied) them. The pool is
//! `count × size` bytes per ring whatever the number of connections.
//!
//! # Ownership
//! Buffer `bid` belongs to the kernel while it is published in the ring,
//! and to the shard from the completion that names it until
//! [`BufRing::recycle`] publishes it again. [`BufRing::take`] turns that
//! hand-over into a [`RecvBuf`] token and `recycle` consumes the token, so
//! the type system keeps the one-owner rule. A token dropped without
//! recycling (a bug) only shrinks the pool; it never aliases.
//!
//! The ring itself (an array of `io_uring_buf` with the tail in the last
//! 16 bits of the first entry) is user memory the kernel reads; it must stay
//! allocated until the ring is unregistered or the io_uring is dropped.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::ring::Ring;

/// A registered provided-buffer ring and its buffers.
#[derive(Debug)]
pub struct BufRing {
    /// `entries` ring slots, page-aligned.
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// `entries × buf_size` bytes of buffers.
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail: slots published so far (wrapping).
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them as
    /// buffer group `bgid` of `ring`. `entries` must be a power of two.
    pub fn new(ring: &Ring, bgid: u16, entries: u16, buf_size: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * buf_size as usize, 64)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have non-zero size (entries ≥ 1, buf_size ≥ 1
        // enforced by the config).
        let ring_mem = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring_mem.is_null() || bufs.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut this = BufRing {
            ring: ring_mem,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size,
            tail: 0,
            bgid,
        };
        // SAFETY: `ring_mem` is page-aligned, zeroed, `entries` long, and
        // lives until `self` is dropped, which happens after the io_uring
        // that uses it (shards drop rings before their buffer rings).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            this.put(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive operations.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Takes ownership of buffer `bid`, which the kernel filled with `len`
    /// bytes. Returns `None` for an id or length the kernel cannot have
    /// produced.
    pub fn take(&mut self, bid: u16, len: usize) -> Option<RecvBuf> {
        if bid >= self.entries || len > self.buf_size as usize {
            return None;
        }
        let offset = usize::from(bid) * self.buf_size as usize;
        Some(RecvBuf {
            // SAFETY: `offset` lies inside the `bufs` allocation (bid < entries).
            ptr: unsafe { self.bufs.add(offset) },
            len,
            bid,
        })
    }

    /// Gives a buffer back to the kernel (visible after the next
    /// [`BufRing::publish`]).
    pub fn recycle(&mut self, buf: RecvBuf) {
        debug_assert!(buf.bid < self.entries);
        self.put(buf.bid);
    }

    fn put(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: `idx < entries`; the slot at the tail is not visible to the
        // kernel until the tail is advanced in `publish`.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(self.bufs as u64 + u64::from(bid) * u64::from(self.buf_size));
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: `ring` points to the first entry, whose tail field the
        // kernel reads with acquire semantics; the release store orders the
        // entry writes in `put` before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut().cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// A receive buffer the kernel filled and handed to the shard: the token of
/// ownership described in the module docs. It is not `Clone`, and
/// [`BufRing::recycle`] consumes it, so while it exists nobody else —
/// kernel or shard — reads or writes those bytes.
#[derive(Debug)]
pub struct RecvBuf {
    ptr: *mut u8,
    len: usize,
    bid: u16,
}

impl RecvBuf {
    /// The received bytes, mutable because WebSocket payloads are unmasked
    /// in place.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr+len` lies in the owning BufRing's buffer memory,
        // which outlives every RecvBuf (the shard recycles or drops all of
        // them before dropping its rings), and this token is the only
        // handle to buffer `bid` until it is recycled (see the type docs).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the io_uring that
        // referenced them has been dropped first (see `new`).
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
