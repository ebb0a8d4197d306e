//! One io_uring instance: setup, submission, completions, and the
//! operations that reference no user memory.
//!
//! # Setup
//! Rings are `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL`:
//! only the owning thread submits, and completion work runs when that
//! thread asks for it (batched), never as an interrupt. Each ring has a
//! sparse table of direct descriptors (`slots` entries): sockets accepted
//! or created into it never enter the process file table.
//!
//! # Backpressure
//! When the submission queue is full the ring submits to make room. If the
//! kernel refuses (`EBUSY`: its completion queue overflowed), entries wait
//! in a backlog that the next [`Ring::submit`] retries after the owner has
//! reaped completions; nothing is dropped, and a linked chain is never
//! split between two submissions.
//!
//! # Completions
//! [`Ring::reap`] copies completions out of the queue as [`Completion`]s,
//! so handling one may submit new work to the same ring. A completion that
//! filled a provided buffer carries it as a [`RecvBuf`].

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::{BufRing, RecvBuf};
use crate::eventfd::EventFd;
use crate::peer::PeerNames;
use crate::send::{ConnectChain, FinishedSend, Sends, MAX_IOV};
use crate::user_data::UserData;

/// A completion, copied out of the completion queue.
///
/// Not `Clone`: it may own the receive buffer it reports.
#[derive(Debug)]
pub struct Completion {
    user_data: UserData,
    result: i32,
    flags: u32,
    buf: Option<RecvBuf>,
}

impl Completion {
    /// The tag of the operation.
    pub fn user_data(&self) -> UserData {
        self.user_data
    }

    /// The result: bytes, a slot, or a negated errno.
    pub fn result(&self) -> i32 {
        self.result
    }

    /// More completions will follow for this multishot operation. Every
    /// multishot completion without it ends the operation: re-arm it.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any. Dropping the
    /// completion without taking it returns the buffer to the pool.
    pub fn take_buffer(&mut self) -> Option<RecvBuf> {
        self.buf.take()
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
    /// The direct-descriptor table is larger than `RLIMIT_NOFILE`.
    TableTooLarge(io::Error),
    /// Something else.
    Other(io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Unavailable(e) => write!(
                f,
                "io_uring is not available to this process ({e}): on a host, check \
                 `sysctl kernel.io_uring_disabled` (must be 0, or 1 with this user in \
                 kernel.io_uring_group); in a container, allow the io_uring_setup, \
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
                 `ulimit -l`, use fewer rings, or grant CAP_IPC_LOCK"
            ),
            SetupError::TableTooLarge(e) => write!(
                f,
                "the ring's direct-descriptor table is larger than RLIMIT_NOFILE allows ({e}); \
                 use fewer slots per ring"
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
        Some(libc::EMFILE) => SetupError::TableTooLarge(e),
        _ => SetupError::Other(e),
    }
}

/// Operations a user may check the kernel for ([`Ring::unsupported`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// `IORING_OP_ACCEPT` (multishot).
    Accept,
    /// `IORING_OP_RECV` (multishot, provided buffers).
    Recv,
    /// `IORING_OP_SEND`.
    Send,
    /// `IORING_OP_SENDMSG`.
    SendMsg,
    /// `IORING_OP_SHUTDOWN`.
    Shutdown,
    /// `IORING_OP_CLOSE`.
    Close,
    /// `IORING_OP_ASYNC_CANCEL`.
    AsyncCancel,
    /// `IORING_OP_READ`.
    Read,
    /// `IORING_OP_SOCKET` (direct).
    Socket,
    /// `IORING_OP_BIND`.
    Bind,
    /// `IORING_OP_CONNECT`.
    Connect,
    /// `IORING_OP_URING_CMD` (socket options).
    UringCmd,
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Opcode::Accept => opcode::AcceptMulti::CODE,
            Opcode::Recv => opcode::RecvMulti::CODE,
            Opcode::Send => opcode::Send::CODE,
            Opcode::SendMsg => opcode::SendMsg::CODE,
            Opcode::Shutdown => opcode::Shutdown::CODE,
            Opcode::Close => opcode::Close::CODE,
            Opcode::AsyncCancel => opcode::AsyncCancel::CODE,
            Opcode::Read => opcode::Read::CODE,
            Opcode::Socket => opcode::Socket::CODE,
            Opcode::Bind => opcode::Bind::CODE,
            Opcode::Connect => opcode::Connect::CODE,
            Opcode::UringCmd => opcode::SetSockOpt::CODE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Opcode::Accept => "ACCEPT",
            Opcode::Recv => "RECV",
            Opcode::Send => "SEND",
            Opcode::SendMsg => "SENDMSG",
            Opcode::Shutdown => "SHUTDOWN",
            Opcode::Close => "CLOSE",
            Opcode::AsyncCancel => "ASYNC_CANCEL",
            Opcode::Read => "READ",
            Opcode::Socket => "SOCKET",
            Opcode::Bind => "BIND",
            Opcode::Connect => "CONNECT",
            Opcode::UringCmd => "URING_CMD",
        }
    }
}

/// A TCP socket option [`Ring::set_tcp_option`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption {
    /// `TCP_NODELAY`: small writes go out at once, not held back until the
    /// previous segment is acknowledged (Nagle's algorithm).
    NoDelay,
    /// `TCP_NOTSENT_LOWAT` of this many bytes: the socket takes no more
    /// writes while that much is waiting for the peer's receive window.
    /// Bytes in flight are not limited; a peer that stops reading holds
    /// its window plus this much in the kernel, instead of a send buffer
    /// grown to `tcp_wmem`'s maximum.
    NotSentLowat(u32),
}

/// Sizes of a ring's queues, file table and receive buffers.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Submission queue entries.
    pub sq: u32,
    /// Completion queue entries.
    pub cq: u32,
    /// Direct-descriptor slots (at most `RLIMIT_NOFILE`).
    pub slots: u32,
    /// Provided receive buffers: `(count, bytes each)`; `count` a power of
    /// two. `None`: no buffer ring (then no multishot receive either).
    pub buffers: Option<(u16, u32)>,
}

/// `IORING_ENTER_GETEVENTS` (not re-exported by the io-uring crate).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Submissions that could not be queued yet; a linked chain stays whole.
#[derive(Debug)]
enum Backlogged {
    One(squeue::Entry),
    Chain(Vec<squeue::Entry>),
}

/// An io_uring instance owned by one thread. See the module docs.
///
/// Field order matters: the io_uring is dropped first, then the memory it
/// referenced (sends in flight, receive buffers, the wake-up target).
pub struct Ring {
    uring: IoUring,
    /// Targets of peer-address lookups in flight ([`Ring::peer_name`]).
    peer_names: PeerNames,
    backlog: VecDeque<Backlogged>,
    sends: Sends,
    bufs: Option<BufRing>,
    /// Where the eventfd read of [`Ring::arm_wake_read`] lands; the kernel
    /// writes it while the read is pending, so it is only ever touched
    /// through a raw pointer.
    wake_target: Box<UnsafeCell<u64>>,
    /// The tag of the pending eventfd read, if one is armed.
    wake_pending: Option<UserData>,
    /// Values of socket options set through the ring
    /// ([`Ring::set_tcp_option`]), which the kernel reads when it runs the
    /// entry: boxed (so a value stays put when the vector grows), and kept
    /// for the ring's life.
    #[allow(clippy::vec_box)]
    option_values: Vec<Box<libc::c_int>>,
    slots: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("slots", &self.slots)
            .field("backlog", &self.backlog.len())
            .field("sends_in_flight", &self.sends.len())
            .finish()
    }
}

impl Ring {
    /// Creates a ring, its sparse direct-descriptor table and (if asked)
    /// its provided-buffer ring, as buffer group 0. Call it on the thread
    /// that will use the ring.
    pub fn new(config: RingConfig) -> Result<Ring, SetupError> {
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(config.cq)
            .setup_submit_all()
            .build(config.sq)
            .map_err(classify)?;
        if !uring.params().is_feature_nodrop() {
            return Err(SetupError::Unsupported(io::Error::other(
                "IORING_FEAT_NODROP missing",
            )));
        }
        uring
            .submitter()
            .register_files_sparse(config.slots)
            .map_err(classify)?;
        let bufs = match config.buffers {
            Some((count, size)) => Some(BufRing::new(&uring.submitter(), 0, count, size).map_err(
                |e| match e.kind() {
                    io::ErrorKind::InvalidInput => SetupError::Other(e),
                    _ => classify(e),
                },
            )?),
            None => None,
        };
        Ok(Ring {
            uring,
            peer_names: PeerNames::new(),
            backlog: VecDeque::new(),
            sends: Sends::default(),
            bufs,
            wake_target: Box::new(UnsafeCell::new(0)),
            wake_pending: None,
            option_values: Vec::new(),
            slots: config.slots,
        })
    }

    /// The names of the `needed` operations this kernel lacks (empty when
    /// it has them all).
    pub fn unsupported(&self, needed: &[Opcode]) -> Result<Vec<&'static str>, SetupError> {
        let mut probe = io_uring::Probe::new();
        self.uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(classify)?;
        Ok(needed
            .iter()
            .filter(|op| !probe.is_supported(op.code()))
            .map(|op| op.name())
            .collect())
    }

    /// The size of the direct-descriptor table.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The provided-buffer ring, if the ring has one.
    pub fn buffers(&self) -> Option<&BufRing> {
        self.bufs.as_ref()
    }

    /// Gives every dropped [`RecvBuf`] back to the kernel; returns how many.
    /// [`Ring::reap`] does this too, before it reaps.
    pub fn recycle_buffers(&mut self) -> usize {
        self.bufs.as_mut().map_or(0, BufRing::recycle)
    }

    /// Registers `efd` to be signalled whenever this ring gains completion
    /// work, so a thread sleeping on another ring learns about it.
    pub fn register_eventfd(&self, efd: &EventFd) -> io::Result<()> {
        self.uring.submitter().register_eventfd(efd.fd())
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
        self.uring.submission().len()
            + self
                .backlog
                .iter()
                .map(|b| match b {
                    Backlogged::One(_) => 1,
                    Backlogged::Chain(c) => c.len(),
                })
                .sum::<usize>()
    }

    /// Queues one entry (or backlogs it).
    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(Backlogged::One(entry));
            return;
        }
        // SAFETY: every entry reaching here was built by this crate, and
        // the memory it references (if any) is owned by this ring until the
        // entry's completion is reaped (see `send.rs` and `arm_wake_read`).
        if unsafe { self.uring.submission().push(&entry) }.is_ok() {
            return;
        }
        if matches!(self.submit_queue(), Ok(true)) {
            // SAFETY: as above.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(Backlogged::One(entry));
    }

    /// Queues a linked chain, all in one submission.
    fn push_chain(&mut self, chain: Vec<squeue::Entry>) {
        if self.backlog.is_empty() && (self.sq_free() >= chain.len() || self.make_room(chain.len()))
        {
            // SAFETY: as in `push`, for each entry; there is room for all
            // of them, so the chain is not split.
            unsafe { self.uring.submission().push_multiple(&chain) }.expect("room was checked");
            return;
        }
        self.backlog.push_back(Backlogged::Chain(chain));
    }

    fn sq_free(&mut self) -> usize {
        let sq = self.uring.submission();
        sq.capacity() - sq.len()
    }

    /// Submits to make room for `n` entries; `false` if the kernel refused.
    fn make_room(&mut self, n: usize) -> bool {
        matches!(self.submit_queue(), Ok(true)) && self.sq_free() >= n
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

    /// Moves backlogged entries into the submission queue while they fit.
    fn refill_from_backlog(&mut self) {
        while let Some(b) = self.backlog.pop_front() {
            let need = match &b {
                Backlogged::One(_) => 1,
                Backlogged::Chain(c) => c.len(),
            };
            if self.sq_free() < need {
                self.backlog.push_front(b);
                return;
            }
            // SAFETY: as in `push`; room for the whole item was checked.
            unsafe {
                match &b {
                    Backlogged::One(e) => self.uring.submission().push(e),
                    Backlogged::Chain(c) => self.uring.submission().push_multiple(c),
                }
            }
            .expect("room was checked");
        }
    }

    /// Submits everything queued, backlog included.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            if !self.submit_queue()? {
                return Ok(());
            }
            if self.backlog.is_empty() {
                return Ok(());
            }
            self.refill_from_backlog();
        }
    }

    /// Submits and runs deferred completion work even when nothing is
    /// queued (an enter with `GETEVENTS`), so completions become visible.
    pub fn flush_completions(&mut self) -> io::Result<()> {
        let to_submit = self.uring.submission().len() as u32;
        loop {
            // SAFETY: `enter` without an argument struct; the flags are valid.
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
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.refill_from_backlog();
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

    /// Moves up to `max` completions into `out`, first giving dropped
    /// receive buffers back to the kernel.
    pub fn reap(&mut self, out: &mut Vec<Completion>, max: usize) {
        self.recycle_buffers();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in cq.by_ref().take(max) {
            let user_data = UserData::from_raw(cqe.user_data());
            let (result, flags) = (cqe.result(), cqe.flags());
            if self.wake_pending == Some(user_data) {
                self.wake_pending = None;
            }
            let buf = cqueue::buffer_select(flags).and_then(|bid| {
                self.bufs
                    .as_ref()
                    .and_then(|b| b.claim(bid, result.max(0) as usize))
            });
            out.push(Completion {
                user_data,
                result,
                flags,
                buf,
            });
        }
    }

    // ---- sends: the ring owns their bytes until `finish_send` ---------------

    /// Hands up to [`MAX_IOV`] buffers from the front of `queue` to the
    /// kernel as one send on the socket in `slot`: `SEND` for one buffer,
    /// `SENDMSG` for several. The completion is tagged `op` with the send's
    /// own index; pass it to [`Ring::finish_send`], which returns `owner`
    /// and the buffers. Returns the bytes handed over (0 when `queue` was
    /// empty: nothing is submitted).
    pub fn send_from(
        &mut self,
        slot: u32,
        op: u8,
        owner: u64,
        queue: &mut VecDeque<Bytes>,
    ) -> usize {
        let n = queue.len().min(MAX_IOV);
        let Some(first) = queue.pop_front() else {
            return 0;
        };
        let rest: Vec<Bytes> = queue.drain(..n - 1).collect();
        let (sqe, len) = self.sends.start(slot, op, owner, first, rest);
        self.push(sqe);
        len
    }

    /// Sends one buffer on the socket in `slot` (see [`Ring::send_from`]).
    pub fn send(&mut self, slot: u32, op: u8, owner: u64, bytes: Bytes) -> usize {
        let (sqe, len) = self.sends.start(slot, op, owner, bytes, Vec::new());
        self.push(sqe);
        len
    }

    /// Opens a client connection in one linked chain:
    /// `SOCKET(direct, into slot) → SETSOCKOPT(SO_REUSEADDR) →
    /// SETSOCKOPT(SO_LINGER {1,0}) → [BIND] → CONNECT → SEND(request)`.
    /// Links before the connect post a completion only when they fail (then
    /// the rest complete with `-ECANCELED`); the connect posts its own; the
    /// send's completion always arrives and ends the chain — pass it to
    /// [`Ring::finish_send`]. A closed connection resets (`SO_LINGER 0`) and
    /// leaves no TIME_WAIT behind.
    ///
    /// With `DEFER_TASKRUN`, links after the first run as deferred task
    /// work, i.e. only while this thread enters the kernel to wait or reap.
    pub fn connect_chain(&mut self, chain: ConnectChain) {
        let sqes = self.sends.start_chain(chain);
        self.push_chain(sqes);
    }

    /// Ends the send `c` reports, returning its owner and buffers. `None`
    /// if `c` is not the completion of a send in flight on this ring (a
    /// completion can finish its send only once).
    pub fn finish_send(&mut self, c: &Completion) -> Option<FinishedSend> {
        self.sends.finish(c.user_data(), c.result())
    }

    /// Sends whose completion has not been finished yet.
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len()
    }

    // ---- operations that reference no user memory -------------------------

    /// Arms a multishot accept on `listener` that places each new socket in
    /// a free slot of this ring's table (`result` is the slot).
    pub fn accept_multi(&mut self, listener: RawFd, tag: UserData) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .flags(libc::SOCK_NONBLOCK)
            .build()
            .user_data(tag.raw());
        self.push(e);
    }

    /// Cancels the operation tagged `target` (its completion then reports
    /// `-ECANCELED`); the cancel's own success posts nothing.
    pub fn cancel(&mut self, target: UserData, tag: UserData) {
        let e = opcode::AsyncCancel::new(target.raw())
            .build()
            .user_data(tag.raw())
            .flags(squeue::Flags::SKIP_SUCCESS);
        self.push(e);
    }

    /// Arms a multishot receive on the socket in `slot`, taking buffers
    /// from this ring's provided-buffer ring.
    ///
    /// # Panics
    /// If the ring was created without buffers.
    pub fn recv_multi(&mut self, slot: u32, tag: UserData) {
        let bgid = self
            .bufs
            .as_ref()
            .expect("recv_multi needs a ring created with buffers")
            .bgid();
        let e = opcode::RecvMulti::new(types::Fixed(slot), bgid)
            .build()
            .user_data(tag.raw());
        self.push(e);
    }

    /// Shuts the socket in `slot` down (ending its pending receive and
    /// sends) and closes its direct descriptor, freeing the slot. The two
    /// are hard-linked so the close happens even if the shutdown fails
    /// (e.g. the peer already reset the connection); only the close posts
    /// a completion on success.
    pub fn shutdown_and_close(&mut self, slot: u32, shutdown: UserData, close: UserData) {
        let s = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(shutdown.raw())
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS);
        let c = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(close.raw());
        self.push_chain(vec![s, c]);
    }

    /// Cancels the operation tagged `target` and then closes the slot
    /// (hard-linked, so the close happens whether or not `target` was still
    /// armed).
    pub fn cancel_and_close(
        &mut self,
        target: UserData,
        slot: u32,
        cancel: UserData,
        close: UserData,
    ) {
        let c = opcode::AsyncCancel::new(target.raw())
            .build()
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(cancel.raw());
        let cl = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(close.raw());
        self.push_chain(vec![c, cl]);
    }

    /// Sets a TCP option on the socket in `slot` (through io_uring,
    /// `IORING_OP_URING_CMD`; Linux 6.7 or newer). Its success posts
    /// nothing; a failure posts `-errno` tagged `tag`.
    pub fn set_tcp_option(&mut self, slot: u32, option: TcpOption, tag: UserData) {
        let (name, value) = match option {
            TcpOption::NoDelay => (libc::TCP_NODELAY, 1),
            TcpOption::NotSentLowat(bytes) => (
                libc::TCP_NOTSENT_LOWAT,
                libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
            ),
        };
        // The kernel reads the value when it runs the entry, so it lives
        // in a box the ring keeps (one per distinct value).
        let at = match self.option_values.iter().position(|v| **v == value) {
            Some(i) => i,
            None => {
                self.option_values.push(Box::new(value));
                self.option_values.len() - 1
            }
        };
        let ptr: *const libc::c_int = &*self.option_values[at];
        let e = opcode::SetSockOpt::new(
            types::Fixed(slot),
            libc::IPPROTO_TCP as u32,
            name as u32,
            ptr.cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build()
        .flags(squeue::Flags::SKIP_SUCCESS)
        .user_data(tag.raw());
        self.push(e);
    }

    /// Asks for the peer address of the socket in `slot` (`ipv6`: its
    /// family), tagged `tag`; read it with [`Ring::take_peer_name`] from
    /// the completion. `false`, and nothing submitted, while
    /// [`PEER_LOOKUPS`](crate::PEER_LOOKUPS) lookups are in flight.
    pub fn peer_name(&mut self, slot: u32, ipv6: bool, tag: UserData) -> bool {
        match self.peer_names.request(slot, ipv6, tag) {
            Some(e) => {
                self.push(e);
                true
            }
            None => false,
        }
    }

    /// The peer address a completion of [`Ring::peer_name`] reports
    /// (`Err(errno)` if the lookup failed); `None` for any other
    /// completion.
    pub fn take_peer_name(&mut self, c: &Completion) -> Option<Result<SocketAddr, i32>> {
        self.peer_names.complete(c.user_data(), c.result())
    }

    /// Arms a read of `efd` whose completion is tagged `tag`. Returns
    /// `false` (and arms nothing) while an earlier read is still pending:
    /// the ring owns one read target.
    pub fn arm_wake_read(&mut self, efd: &EventFd, tag: UserData) -> bool {
        if self.wake_pending.is_some() {
            return false;
        }
        let e = opcode::Read::new(types::Fd(efd.fd()), self.wake_target.get().cast(), 8)
            .build()
            .user_data(tag.raw());
        self.wake_pending = Some(tag);
        // The target lives in `self.wake_target` until the ring is dropped
        // (after the io_uring), and no second read shares it while this one
        // is pending.
        self.push(e);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        Ring::new(RingConfig {
            sq: 64,
            cq: 256,
            slots: 64,
            buffers: Some((16, 256)),
        })
        .expect("io_uring is available")
    }

    #[test]
    fn probes_and_wakes() {
        let mut r = ring();
        assert_eq!(
            r.unsupported(&[Opcode::Accept, Opcode::Recv, Opcode::Read])
                .unwrap(),
            Vec::<&str>::new()
        );
        let efd = EventFd::new().unwrap();
        let tag = UserData::new(9, 0, 0);
        assert!(r.arm_wake_read(&efd, tag));
        assert!(!r.arm_wake_read(&efd, tag), "one read target per ring");
        r.submit().unwrap();
        efd.signal();
        let mut out = Vec::new();
        for _ in 0..100 {
            r.flush_completions().unwrap();
            r.reap(&mut out, 8);
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].user_data(), out[0].result()), (tag, 8));
        assert!(r.arm_wake_read(&efd, tag), "re-armable once completed");
    }
}
