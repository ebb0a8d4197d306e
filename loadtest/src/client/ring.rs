//! The io_uring instance of one client worker, its provided-buffer pool,
//! and every submission the harness makes.
//!
//! This is the only module that pushes submission entries (the `unsafe`
//! part of io_uring: the kernel reads memory the entry points to after
//! `push` returns). Each public submit method states which memory it
//! borrows and for how long; callers keep that memory in place until the
//! operation's completion arrives.
//!
//! Rings are `SINGLE_ISSUER | DEFER_TASKRUN`: one worker thread creates,
//! submits and reaps, and completion work runs when that thread waits, in
//! batches. Each ring owns a sparse table of direct descriptors — sockets
//! created by `IORING_OP_SOCKET` straight into a slot, never entering the
//! process's file table — which is how one process holds far more
//! connections than `RLIMIT_NOFILE` allows.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, DestinationSlot, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// What an operation was for: the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `IORING_OP_SOCKET` into a slot.
    Socket = 1,
    /// A socket option (uring_cmd setsockopt).
    Opt = 2,
    /// `IORING_OP_BIND` to the chosen source address.
    Bind = 3,
    /// `IORING_OP_CONNECT`.
    Connect = 4,
    /// A send of the connection's output buffer.
    Send = 5,
    /// The multishot receive.
    Recv = 6,
    /// Cancellation of a connection's operations.
    Cancel = 7,
    /// Close of the slot.
    Close = 8,
}

/// `op:8 | slot:24 | gen:32`, echoed by every completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag(u64);

impl Tag {
    /// Packs a tag.
    pub fn new(op: Op, slot: u32, gen: u32) -> Tag {
        Tag((op as u64) << 56 | u64::from(slot & 0xFF_FFFF) << 32 | u64::from(gen))
    }
    /// The operation, `None` for values never submitted.
    pub fn op(self) -> Option<Op> {
        Some(match (self.0 >> 56) as u8 {
            1 => Op::Socket,
            2 => Op::Opt,
            3 => Op::Bind,
            4 => Op::Connect,
            5 => Op::Send,
            6 => Op::Recv,
            7 => Op::Cancel,
            8 => Op::Close,
            _ => return None,
        })
    }
    /// The slot.
    pub fn slot(self) -> u32 {
        (self.0 >> 32) as u32 & 0xFF_FFFF
    }
    /// The connection generation in that slot.
    pub fn gen(self) -> u32 {
        self.0 as u32
    }
}

/// A completion copied out of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Cqe {
    /// The operation's tag.
    pub tag: Tag,
    /// Bytes, or a negated errno.
    pub res: i32,
    /// `IORING_CQE_F_*`.
    pub flags: u32,
}

impl Cqe {
    /// A multishot operation stays armed.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
    /// The provided buffer filled, if any.
    pub fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Why a ring could not be set up, in terms the user can act on.
pub fn explain_setup_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => format!(
            "io_uring is not available to this process ({e}): check `sysctl \
             kernel.io_uring_disabled` (must be 0) and, in a container, the seccomp profile"
        ),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => format!(
            "this kernel's io_uring lacks a needed feature ({e}); Linux 6.11 or newer is \
             required (direct IORING_OP_SOCKET, IORING_OP_BIND, uring_cmd setsockopt)"
        ),
        Some(libc::ENOMEM) => format!(
            "cannot allocate io_uring memory ({e}): without CAP_IPC_LOCK ring memory counts \
             against RLIMIT_MEMLOCK (ulimit -l); use fewer connections per process"
        ),
        Some(libc::EMFILE) => format!(
            "the direct-descriptor table is larger than RLIMIT_NOFILE ({e}); lower --per-ring"
        ),
        _ => format!("io_uring setup failed: {e}"),
    }
}

/// One io_uring with a sparse direct-descriptor table.
pub struct Ring {
    uring: IoUring,
    backlog: VecDeque<squeue::Entry>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

/// `SO_LINGER {on, 0}`: close sends RST and leaves no TIME_WAIT behind, so
/// runs can follow each other without waiting a minute and source ports are
/// reusable at once.
static LINGER_RST: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};
static ONE: libc::c_int = 1;

impl Ring {
    /// A ring with `sq` submission entries, `cq` completion entries and a
    /// table of `slots` direct descriptors. Must be called on the thread
    /// that will use it (`SINGLE_ISSUER`).
    pub fn new(sq: u32, cq: u32, slots: u32) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cq)
            .build(sq)?;
        uring.submitter().register_files_sparse(slots)?;
        Ok(Ring {
            uring,
            backlog: VecDeque::new(),
        })
    }

    /// Checks that the kernel supports every opcode the harness uses.
    pub fn check_opcodes(&self) -> Result<(), String> {
        let mut probe = io_uring::Probe::new();
        self.uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
        let needed = [
            (opcode::Socket::CODE, "SOCKET"),
            (opcode::Bind::CODE, "BIND"),
            (opcode::Connect::CODE, "CONNECT"),
            (opcode::SetSockOpt::CODE, "URING_CMD"),
            (opcode::Send::CODE, "SEND"),
            (opcode::RecvMulti::CODE, "RECV"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
            (opcode::Close::CODE, "CLOSE"),
        ];
        let missing: Vec<&str> = needed
            .iter()
            .filter(|(c, _)| !probe.is_supported(*c))
            .map(|(_, n)| *n)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "this kernel's io_uring lacks {}: Linux 6.11 or newer is required",
                missing.join(", ")
            ))
        }
    }

    fn push(&mut self, e: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(e);
            return;
        }
        // SAFETY: every entry comes from a method of this module whose
        // contract makes the caller keep the referenced memory alive until
        // completion (or refers to statics).
        if unsafe { self.uring.submission().push(&e) }.is_err() {
            let _ = self.uring.submit();
            // SAFETY: as above.
            if unsafe { self.uring.submission().push(&e) }.is_err() {
                self.backlog.push_back(e);
            }
        }
    }

    /// Starts a connection in `slot`: one linked chain
    /// `SOCKET(direct) → SETSOCKOPT(SO_REUSEADDR) → SETSOCKOPT(SO_LINGER) →
    /// [BIND] → CONNECT → SEND(request)`. Only the `CONNECT` and `SEND`
    /// completions are posted on success; a failing link posts its error and
    /// the rest of the chain completes with `ECANCELED`. The `SEND`
    /// completion always arrives and ends the chain.
    ///
    /// # Safety
    /// `src` (if any), `dst` and `req[..]` must stay valid and unmoved until
    /// the `SEND` completion for this `gen` has been reaped.
    pub unsafe fn connect_chain(
        &mut self,
        slot: u32,
        gen: u32,
        src: Option<*const libc::sockaddr_in>,
        dst: *const libc::sockaddr_in,
        req: &[u8],
    ) {
        let link = squeue::Flags::IO_LINK;
        let quiet = link | squeue::Flags::SKIP_SUCCESS;
        let fd = Fixed(slot);
        let dest = DestinationSlot::try_from_slot_target(slot).expect("slot fits the table");
        // No SOCK_CLOEXEC: a direct IORING_OP_SOCKET refuses it (EINVAL).
        let socket = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
            .file_index(Some(dest))
            .build()
            .flags(quiet)
            .user_data(Tag::new(Op::Socket, slot, gen).0);
        self.push(socket);
        let reuse = opcode::SetSockOpt::new(
            fd,
            libc::SOL_SOCKET as u32,
            libc::SO_REUSEADDR as u32,
            (&raw const ONE).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build()
        .flags(quiet)
        .user_data(Tag::new(Op::Opt, slot, gen).0);
        self.push(reuse);
        let linger = opcode::SetSockOpt::new(
            fd,
            libc::SOL_SOCKET as u32,
            libc::SO_LINGER as u32,
            (&raw const LINGER_RST).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
        .build()
        .flags(quiet)
        .user_data(Tag::new(Op::Opt, slot, gen).0);
        self.push(linger);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if let Some(src) = src {
            let bind = opcode::Bind::new(fd, src.cast(), len)
                .build()
                .flags(quiet)
                .user_data(Tag::new(Op::Bind, slot, gen).0);
            self.push(bind);
        }
        let connect = opcode::Connect::new(fd, dst.cast(), len)
            .build()
            .flags(link)
            .user_data(Tag::new(Op::Connect, slot, gen).0);
        self.push(connect);
        let send = opcode::Send::new(fd, req.as_ptr(), req.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Tag::new(Op::Send, slot, gen).0);
        self.push(send);
    }

    /// Sends `buf` on the connection in `slot`.
    ///
    /// # Safety
    /// `buf` must stay valid and unmoved until the completion is reaped.
    pub unsafe fn send(&mut self, slot: u32, gen: u32, buf: &[u8]) {
        let e = opcode::Send::new(Fixed(slot), buf.as_ptr(), buf.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Tag::new(Op::Send, slot, gen).0);
        self.push(e);
    }

    /// Arms a multishot receive on `slot` from buffer group `bgid`.
    pub fn recv_multi(&mut self, slot: u32, gen: u32, bgid: u16) {
        let e = opcode::RecvMulti::new(Fixed(slot), bgid)
            .build()
            .user_data(Tag::new(Op::Recv, slot, gen).0);
        self.push(e);
    }

    /// Cancels the connection's receive, then closes its slot (hard link,
    /// so the close happens whether or not a receive was armed). With
    /// `SO_LINGER {1,0}` the peer sees a reset.
    pub fn cancel_and_close(&mut self, slot: u32, gen: u32) {
        let cancel = opcode::AsyncCancel::new(Tag::new(Op::Recv, slot, gen).0)
            .build()
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(Tag::new(Op::Cancel, slot, gen).0);
        self.push(cancel);
        let close = opcode::Close::new(Fixed(slot))
            .build()
            .user_data(Tag::new(Op::Close, slot, gen).0);
        self.push(close);
    }

    /// Cancels an in-flight connect (its chain then fails with `ECANCELED`).
    pub fn cancel_connect(&mut self, slot: u32, gen: u32) {
        let cancel = opcode::AsyncCancel::new(Tag::new(Op::Connect, slot, gen).0)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Tag::new(Op::Cancel, slot, gen).0);
        self.push(cancel);
    }

    /// Submits everything queued and waits up to `timeout` for at least one
    /// completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        while let Some(e) = self.backlog.pop_front() {
            // SAFETY: as in `push`.
            if unsafe { self.uring.submission().push(&e) }.is_err() {
                self.backlog.push_front(e);
                break;
            }
        }
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves up to `max` completions into `out`.
    pub fn reap(&mut self, out: &mut Vec<Cqe>, max: usize) {
        let mut cq = self.uring.completion();
        cq.sync();
        for c in cq.by_ref().take(max) {
            out.push(Cqe {
                tag: Tag(c.user_data()),
                res: c.result(),
                flags: c.flags(),
            });
        }
    }

    /// Registers `bufs` as provided-buffer group `bgid`.
    pub fn register_buffers(&self, bufs: &BufPool) -> io::Result<()> {
        // SAFETY: the pool's ring memory is page-aligned, `entries` long, and
        // outlives the io_uring (the worker drops its ring first).
        unsafe {
            self.uring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                bufs.entries,
                bufs.bgid,
                0,
            )
        }
    }
}

/// A provided-buffer ring: `entries` receive buffers shared by all
/// connections of one worker. Idle connections hold none; a buffer is
/// taken by the kernel when bytes arrive and given back as soon as the
/// worker has parsed them.
#[derive(Debug)]
pub struct BufPool {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    size: u32,
    tail: u16,
    bgid: u16,
}

impl BufPool {
    /// Allocates `entries` (a power of two) buffers of `size` bytes.
    pub fn new(bgid: u16, entries: u16, size: u32) -> io::Result<BufPool> {
        assert!(entries.is_power_of_two() && size > 0);
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(usize::from(entries) * size as usize, 64)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have non-zero size (asserted above).
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring.is_null() || bufs.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut pool = BufPool {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
            bgid,
        };
        for bid in 0..entries {
            pool.put(bid);
        }
        pool.publish();
        Ok(pool)
    }

    /// The buffer group id.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The bytes the kernel wrote into buffer `bid`. The buffer belongs to
    /// the worker from the completion naming it until [`BufPool::give_back`].
    pub fn bytes(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid >= self.entries || len > self.size as usize {
            return None;
        }
        let off = usize::from(bid) * self.size as usize;
        // SAFETY: `off + len` lies inside the buffer allocation; buffer `bid`
        // was handed to us by the completion and is not republished until
        // `give_back`, and `&mut self` keeps a second view from existing.
        Some(unsafe { std::slice::from_raw_parts_mut(self.bufs.add(off), len) })
    }

    /// Returns buffer `bid` to the kernel (visible after [`BufPool::publish`]).
    pub fn give_back(&mut self, bid: u16) {
        if bid < self.entries {
            self.put(bid);
        }
    }

    fn put(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `idx < entries`; the slot at the tail is invisible to the
        // kernel until `publish` advances the tail.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.bufs as u64 + u64::from(bid) * u64::from(self.size));
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes returned buffers visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the tail lives in the first entry, which the kernel reads
        // with acquire ordering; the release store publishes `put`'s writes.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut().cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring that used
        // them was dropped first.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

/// The symbolic name of an errno, for error tables.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EPIPE => "EPIPE",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "errno",
    }
}
