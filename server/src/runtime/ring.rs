//! One io_uring instance and the operations ringcast submits to it.
//!
//! This is the only module that builds and pushes submission queue entries.
//! Every entry carries a typed [`UserData`] naming what it is for, so the
//! shard can route its completion without a lookup table.
//!
//! # Setup
//! Rings are `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: only the owning
//! shard thread submits, and completion work runs when that thread asks for
//! it (batched), never as an interrupt. Each ring has a sparse table of
//! direct descriptors (`slots` entries): sockets accepted into it never enter
//! the process file table, which is how one process holds far more sockets
//! than `RLIMIT_NOFILE`.
//!
//! # Backpressure
//! When the submission queue is full the ring submits to make room. If the
//! kernel refuses (`EBUSY`: its completion queue overflowed), entries wait
//! in a backlog that the next [`Ring::submit`] retries after the shard has
//! reaped completions; nothing is dropped.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What an operation is for; the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept; index = listener number.
    Accept = 1,
    /// Multishot receive; index = slot, gen = connection generation.
    Recv = 2,
    /// A send or sendmsg; index = in-flight send entry, gen = its generation.
    Send = 3,
    /// Shutdown of a connection's socket; index = slot.
    Shutdown = 4,
    /// Close of a connection's direct descriptor; index = slot.
    Close = 5,
    /// Read of the shard's eventfd (home ring only).
    Wake = 6,
    /// Cancellation request; its own completion is ignored.
    Cancel = 7,
}

/// The 64-bit tag attached to every submission and echoed by its completion:
/// `op:8 | index:24 | gen:32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData(u64);

impl UserData {
    /// Largest index representable (24 bits).
    pub const MAX_INDEX: u32 = (1 << 24) - 1;

    /// Packs an operation tag.
    pub fn new(op: Op, index: u32, gen: u32) -> Self {
        debug_assert!(index <= Self::MAX_INDEX);
        UserData((op as u64) << 56 | u64::from(index & Self::MAX_INDEX) << 32 | u64::from(gen))
    }

    /// Unpacks a completion's tag; `None` for values ringcast never submits.
    pub fn op(self) -> Option<Op> {
        Some(match (self.0 >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Close,
            6 => Op::Wake,
            7 => Op::Cancel,
            _ => return None,
        })
    }

    /// The index field.
    pub fn index(self) -> u32 {
        (self.0 >> 32) as u32 & Self::MAX_INDEX
    }

    /// The generation field.
    pub fn gen(self) -> u32 {
        self.0 as u32
    }

    /// The raw value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// From a completion.
    pub fn from_raw(raw: u64) -> Self {
        UserData(raw)
    }
}

/// A completion, copied out of the completion queue so that handling it may
/// submit new work to the same ring.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The tag of the operation.
    pub user_data: UserData,
    /// The result: bytes, a slot, or a negated errno.
    pub result: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

impl Completion {
    /// More completions will follow for this multishot operation.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Why a ring could not be created, in terms an operator can act on.
#[derive(Debug)]
pub enum SetupError {
    /// io_uring_setup is not permitted or not implemented.
    Unavailable(io::Error),
    /// The kernel lacks a needed feature (too old).
    Unsupported(io::Error),
    /// Ring memory exceeds RLIMIT_MEMLOCK (processes without CAP_IPC_LOCK).
    Memlock(io::Error),
    /// Something else.
    Other(io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Unavailable(e) => write!(
                f,
                "io_uring is not available to this process ({e}). ringcast needs io_uring: \
                 on a host, check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with this \
                 user in kernel.io_uring_group); in a container, allow the io_uring_setup, \
                 io_uring_enter and io_uring_register system calls in its seccomp profile \
                 (e.g. docker run --security-opt seccomp=unconfined)"
            ),
            SetupError::Unsupported(e) => write!(
                f,
                "this kernel's io_uring lacks a feature ringcast needs ({e}): Linux 6.1 or \
                 newer is required (multishot accept and receive, provided buffer rings, \
                 direct descriptors, DEFER_TASKRUN)"
            ),
            SetupError::Memlock(e) => write!(
                f,
                "cannot allocate io_uring memory ({e}): without CAP_IPC_LOCK, ring memory \
                 counts against RLIMIT_MEMLOCK (shared by all processes of this user); raise \
                 `ulimit -l`, lower --max-connections, or grant CAP_IPC_LOCK"
            ),
            SetupError::Other(e) => write!(f, "io_uring setup failed: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

fn classify(e: io::Error) -> SetupError {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => SetupError::Unavailable(e),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => SetupError::Unsupported(e),
        Some(libc::ENOMEM) => SetupError::Memlock(e),
        _ => SetupError::Other(e),
    }
}

/// `IORING_ENTER_GETEVENTS` (not re-exported by the io-uring crate).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Sizes of a ring's queues and file table.
#[derive(Debug, Clone, Copy)]
pub struct RingSize {
    /// Submission queue entries.
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
    /// Direct descriptor slots.
    pub slots: u32,
}

/// An io_uring instance owned by one shard thread.
pub struct Ring {
    uring: IoUring,
    slots: u32,
    backlog: VecDeque<squeue::Entry>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("slots", &self.slots)
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

impl Ring {
    /// Creates a ring with a sparse direct-descriptor table of `size.slots`.
    pub fn new(size: RingSize) -> Result<Ring, SetupError> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(size.cq)
            .setup_submit_all()
            .build(size.sq)
            .map_err(classify)?;
        if !uring.params().is_feature_nodrop() {
            return Err(SetupError::Unsupported(io::Error::other(
                "IORING_FEAT_NODROP missing",
            )));
        }
        uring
            .submitter()
            .register_files_sparse(size.slots)
            .map_err(classify)?;
        Ok(Ring {
            uring,
            slots: size.slots,
            backlog: VecDeque::new(),
        })
    }

    /// Checks that the kernel supports every opcode ringcast uses.
    pub fn probe(&self) -> Result<(), SetupError> {
        let mut probe = io_uring::Probe::new();
        self.uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(classify)?;
        for (code, name) in [
            (opcode::AcceptMulti::CODE, "ACCEPT"),
            (opcode::RecvMulti::CODE, "RECV"),
            (opcode::Send::CODE, "SEND"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::Shutdown::CODE, "SHUTDOWN"),
            (opcode::Close::CODE, "CLOSE"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
            (opcode::Read::CODE, "READ"),
        ] {
            if !probe.is_supported(code) {
                return Err(SetupError::Unsupported(io::Error::other(format!(
                    "opcode IORING_OP_{name} not supported"
                ))));
            }
        }
        Ok(())
    }

    /// The ring's own file descriptor (for registering buffer rings).
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// Registers `fd` to be signalled whenever this ring gains completion
    /// work, so a thread sleeping elsewhere learns about it.
    pub fn register_eventfd(&self, fd: RawFd) -> io::Result<()> {
        self.uring.submitter().register_eventfd(fd)
    }

    /// Whether the kernel holds completion work for this ring (deferred task
    /// work, overflowed completions) or completions wait in the queue.
    pub fn has_work(&mut self) -> bool {
        let sq = self.uring.submission();
        if sq.taskrun() || sq.cq_overflow() {
            return true;
        }
        drop(sq);
        !self.uring.completion().is_empty()
    }

    /// Entries queued but not yet submitted.
    pub fn pending(&mut self) -> usize {
        self.uring.submission().len() + self.backlog.len()
    }

    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(entry);
            return;
        }
        // SAFETY: every entry reaching here was built by this module, whose
        // unsafe constructors require callers to keep referenced memory
        // alive until the completion arrives.
        if unsafe { self.uring.submission().push(&entry) }.is_ok() {
            return;
        }
        if self.submit_queue().is_ok() {
            // SAFETY: as above.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    /// Submits the submission queue once; `Ok(false)` when the kernel asked
    /// to retry later.
    fn submit_queue(&mut self) -> io::Result<bool> {
        loop {
            match self.uring.submit() {
                Ok(_) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits everything queued, backlog included, and runs deferred
    /// completion work so that [`Ring::reap`] sees it.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            if !self.submit_queue()? {
                return Ok(());
            }
            if self.backlog.is_empty() {
                return Ok(());
            }
            while let Some(entry) = self.backlog.pop_front() {
                // SAFETY: as in `push`.
                if unsafe { self.uring.submission().push(&entry) }.is_err() {
                    self.backlog.push_front(entry);
                    break;
                }
            }
        }
    }

    /// Submits and runs deferred work even when nothing is queued (an enter
    /// with `GETEVENTS`), so completions become visible.
    pub fn flush_completions(&mut self) -> io::Result<()> {
        let to_submit = self.uring.submission().len() as u32;
        loop {
            // SAFETY: `enter` with no argument struct; flags are valid.
            let r = unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            };
            match r {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => break,
                Err(e) => return Err(e),
            }
        }
        if !self.backlog.is_empty() {
            self.submit()?;
        }
        Ok(())
    }

    /// Submits and sleeps until a completion arrives or `timeout` passes.
    pub fn submit_and_wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        if !self.backlog.is_empty() {
            self.submit()?;
        }
        Ok(())
    }

    /// Moves up to `max` completions into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>, max: usize) {
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in cq.by_ref().take(max) {
            out.push(Completion {
                user_data: UserData::from_raw(cqe.user_data()),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    // ---- operations -------------------------------------------------------

    /// Arms a multishot accept on `listener` that places each new socket in
    /// a free slot of this ring's table.
    pub fn accept_multi(&mut self, listener: RawFd, listener_index: u32) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .flags(libc::SOCK_NONBLOCK)
            .build()
            .user_data(UserData::new(Op::Accept, listener_index, 0).raw());
        self.push(e);
    }

    /// Cancels a multishot accept armed by [`Ring::accept_multi`].
    pub fn cancel_accept(&mut self, listener_index: u32) {
        let target = UserData::new(Op::Accept, listener_index, 0).raw();
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(UserData::new(Op::Cancel, 0, 0).raw())
            .flags(squeue::Flags::SKIP_SUCCESS);
        self.push(e);
    }

    /// Arms a multishot receive on the socket in `slot`, taking buffers from
    /// provided-buffer group `bgid`.
    pub fn recv_multi(&mut self, slot: u32, gen: u32, bgid: u16) {
        let e = opcode::RecvMulti::new(types::Fixed(slot), bgid)
            .build()
            .user_data(UserData::new(Op::Recv, slot, gen).raw());
        self.push(e);
    }

    /// Sends `len` bytes at `ptr` on the socket in `slot`.
    ///
    /// # Safety
    /// The `len` bytes at `ptr` must stay valid and unmodified until the
    /// completion tagged `Op::Send, send_index, send_gen` has been reaped.
    pub unsafe fn send(
        &mut self,
        slot: u32,
        ptr: *const u8,
        len: u32,
        send_index: u32,
        send_gen: u32,
    ) {
        let e = opcode::Send::new(types::Fixed(slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(UserData::new(Op::Send, send_index, send_gen).raw());
        self.push(e);
    }

    /// Sends the buffers described by `msg` on the socket in `slot`.
    ///
    /// # Safety
    /// `msg`, its iovec array and every buffer it points to must stay valid
    /// and unmodified until the completion tagged `Op::Send, send_index,
    /// send_gen` has been reaped.
    pub unsafe fn sendmsg(
        &mut self,
        slot: u32,
        msg: *const libc::msghdr,
        send_index: u32,
        send_gen: u32,
    ) {
        let e = opcode::SendMsg::new(types::Fixed(slot), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(UserData::new(Op::Send, send_index, send_gen).raw());
        self.push(e);
    }

    /// Shuts the socket in `slot` down (ending its pending receive and
    /// sends) and closes its direct descriptor, freeing the slot. The two
    /// are hard-linked so the close happens even if the shutdown fails
    /// (e.g. the peer already reset the connection).
    pub fn shutdown_and_close(&mut self, slot: u32, gen: u32) {
        let shutdown = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(UserData::new(Op::Shutdown, slot, gen).raw())
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS);
        let close = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(UserData::new(Op::Close, slot, gen).raw());
        // Both must land in the same submission for the link to hold.
        let free = {
            let sq = self.uring.submission();
            sq.capacity() - sq.len()
        };
        if free < 2 {
            let _ = self.submit_queue();
        }
        self.push(shutdown);
        self.push(close);
    }

    /// Reads the shard's eventfd counter into `buf`.
    ///
    /// # Safety
    /// `buf` must stay valid until the `Op::Wake` completion is reaped.
    pub unsafe fn read_eventfd(&mut self, fd: RawFd, buf: *mut u64) {
        let e = opcode::Read::new(types::Fd(fd), buf.cast(), 8)
            .build()
            .user_data(UserData::new(Op::Wake, 0, 0).raw());
        self.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let ud = UserData::new(Op::Send, UserData::MAX_INDEX, u32::MAX);
        assert_eq!(ud.op(), Some(Op::Send));
        assert_eq!(ud.index(), UserData::MAX_INDEX);
        assert_eq!(ud.gen(), u32::MAX);
        let ud = UserData::from_raw(UserData::new(Op::Recv, 19_999, 7).raw());
        assert_eq!((ud.op(), ud.index(), ud.gen()), (Some(Op::Recv), 19_999, 7));
        assert_eq!(UserData::from_raw(0).op(), None);
    }
}
