//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): receive buffers
//! shared by every connection of one ring.
//!
//! Idle connections pin no receive buffer: a multishot receive takes a
//! buffer from this pool only when bytes arrive. The pool is `count × size`
//! bytes per ring whatever the number of connections.
//!
//! # Ownership
//! Buffer `bid` belongs to the kernel while it is published in the ring.
//! The completion that names it hands it to user space: [`crate::Ring::reap`]
//! wraps it in a [`RecvBuf`], the only handle to those bytes. Dropping the
//! `RecvBuf` queues the buffer for return, and [`BufRing::recycle`]
//! publishes returned buffers to the kernel again. So at any moment a
//! buffer has exactly one owner — the kernel or one `RecvBuf` — and the
//! type system keeps it that way: a `RecvBuf` cannot be cloned, and nothing
//! but a completion creates one.
//!
//! The memory (the ring of `io_uring_buf` entries and the buffers) lives in
//! a reference-counted block shared by the `BufRing` and every `RecvBuf`,
//! so it outlives both the io_uring that reads it and any token still held.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The memory of one buffer ring and the buffers waiting to go back.
#[derive(Debug)]
struct Memory {
    /// `entries` ring slots, page-aligned; the kernel reads them.
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// `entries × buf_size` bytes of buffers.
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    /// Buffers whose `RecvBuf` was dropped, to be published again.
    returned: RefCell<Vec<u16>>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: both blocks were allocated in `BufRing::new` with these
        // layouts. The last reference is going away, so no `RecvBuf` points
        // into them any more, and the io_uring that read them was dropped
        // before its `BufRing` (field order of `Ring`).
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

/// A registered provided-buffer ring and its buffers.
#[derive(Debug)]
pub struct BufRing {
    mem: Rc<Memory>,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail: slots published so far (wrapping).
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them as
    /// buffer group `bgid` of the ring `submitter` belongs to. `entries`
    /// must be a power of two, `buf_size` at least 1.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        bgid: u16,
        entries: u16,
        buf_size: u32,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two and buffers at least 1 byte",
            ));
        }
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * buf_size as usize, 64)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries ≥ 1, buf_size ≥ 1).
        let ring = NonNull::new(unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>());
        // SAFETY: as above.
        let bufs = NonNull::new(unsafe { alloc_zeroed(bufs_layout) });
        let (ring, bufs) = match (ring, bufs) {
            (Some(r), Some(b)) => (r, b),
            (r, b) => {
                // SAFETY: whichever allocation succeeded was made just above
                // with its layout and is referenced by nothing else.
                unsafe {
                    if let Some(r) = r {
                        dealloc(r.as_ptr().cast(), ring_layout);
                    }
                    if let Some(b) = b {
                        dealloc(b.as_ptr(), bufs_layout);
                    }
                }
                return Err(io::Error::from(io::ErrorKind::OutOfMemory));
            }
        };
        let mem = Rc::new(Memory {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            returned: RefCell::new(Vec::with_capacity(usize::from(entries))),
        });
        // SAFETY: the ring memory is page-aligned, zeroed, `entries` long,
        // and stays allocated until `mem`'s last reference is dropped, which
        // happens after the io_uring is dropped (the `Ring` owning this
        // `BufRing` declares its io_uring first).
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, entries, bgid, 0)? };
        let mut this = BufRing {
            mem,
            entries,
            buf_size,
            tail: 0,
            bgid,
        };
        for bid in 0..entries {
            this.put(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id receives name.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Buffers in the pool.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Wraps buffer `bid`, which a completion reported filled with `len`
    /// bytes, in its ownership token. `None` for an id or length the
    /// kernel cannot have produced.
    ///
    /// Called only by [`crate::Ring::reap`], once per completion that names
    /// a buffer: that is what makes the token the buffer's only owner.
    pub(crate) fn claim(&self, bid: u16, len: usize) -> Option<RecvBuf> {
        if bid >= self.entries || len > self.buf_size as usize {
            return None;
        }
        Some(RecvBuf {
            mem: self.mem.clone(),
            offset: usize::from(bid) * self.buf_size as usize,
            len,
            bid,
        })
    }

    /// Gives every buffer whose [`RecvBuf`] was dropped back to the kernel.
    /// Returns how many.
    pub fn recycle(&mut self) -> usize {
        let returned = std::mem::take(&mut *self.mem.returned.borrow_mut());
        let n = returned.len();
        if n == 0 {
            return 0;
        }
        for &bid in &returned {
            self.put(bid);
        }
        // Keep the allocation for the next batch.
        let mut slot = self.mem.returned.borrow_mut();
        if slot.is_empty() {
            *slot = returned;
            slot.clear();
        }
        drop(slot);
        self.publish();
        n
    }

    fn put(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: `idx < entries`, so the entry lies inside the ring
        // allocation; the slot at the tail is not visible to the kernel
        // until `publish` advances the shared tail, so writing it races
        // with nothing.
        let entry = unsafe { &mut *self.mem.ring.as_ptr().add(idx) };
        entry.set_addr(self.mem.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_size));
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written by `put` visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail is a u16 inside the first ring entry, which is
        // valid for the life of `mem`; the kernel reads it with acquire
        // ordering, and this release store orders the entry writes of `put`
        // before it.
        unsafe {
            let tail = BufRingEntry::tail(self.mem.ring.as_ptr())
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// One received buffer: the bytes the kernel wrote, owned by this token
/// until it is dropped (see the module docs). Not `Clone`, not `Send`.
#[derive(Debug)]
pub struct RecvBuf {
    mem: Rc<Memory>,
    offset: usize,
    len: usize,
    bid: u16,
}

impl RecvBuf {
    /// The received bytes, mutable because WebSocket payloads are unmasked
    /// in place.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `offset + len` lies inside the buffer allocation (checked
        // in `claim`), which `mem` keeps alive. Buffer `bid` was handed to
        // user space by the completion this token was made from, and goes
        // back to the kernel only after this token is dropped (`Drop`
        // queues it, `recycle` publishes it), so nothing else reads or
        // writes these bytes while the slice exists; `&mut self` rules out
        // a second slice from this token.
        unsafe { std::slice::from_raw_parts_mut(self.mem.bufs.as_ptr().add(self.offset), self.len) }
    }

    /// Bytes received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes were received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.mem.returned.borrow_mut().push(self.bid);
    }
}
