//! `ringcast-uring`: the io_uring machinery the ringcast node and its load
//! harness are built on, and the only crate of the workspace that contains
//! `unsafe` code.
//!
//! # Brief overview
//! * [`Ring`] — one io_uring owned by one thread, with a sparse table of
//!   *direct descriptors* (sockets that never enter the process file table,
//!   which is how one process holds far more sockets than `RLIMIT_NOFILE`),
//!   a submission backlog that never drops an entry, and typed
//!   [`UserData`] on every operation.
//! * [`BufRing`] and [`RecvBuf`] — the provided-buffer ring a ring's
//!   multishot receives take their buffers from, and the token that owns one
//!   filled buffer until it is dropped.
//! * Owned sends — every byte handed to the kernel stays owned by the ring
//!   until the send's completion is reaped ([`Ring::send_from`],
//!   [`Ring::finish_send`]), whatever happens to the connection meanwhile.
//! * [`EventFd`] — the doorbell a sleeping ring is woken with; the ring
//!   owns the buffer its read lands in.
//! * [`sys`] — the few raw system calls outside io_uring (resource limits,
//!   listening sockets, `TCP_INFO`, process memory), and [`child`] — the
//!   limits a harness applies to a ringcast it starts (open files, a
//!   seccomp filter that denies io_uring).
//!
//! # Safety
//! The kernel reads and writes user memory after a submission returns:
//! send buffers, `msghdr`s, socket addresses, option values, receive
//! buffers, the eventfd read target. Every such piece of memory is owned by
//! this crate until the completion that releases it has been reaped, so
//! every public function is safe. Each `unsafe` block states the invariant
//! it relies on (`clippy::undocumented_unsafe_blocks` is denied for the
//! workspace).
//!
//! # Threads
//! Rings are set up `SINGLE_ISSUER | DEFER_TASKRUN`: the thread that
//! creates a ring is the only one that may submit to it, and completion
//! work runs only when that thread enters the kernel. [`Ring`] and
//! [`RecvBuf`] are not `Send`.

mod bufring;
pub mod child;
mod eventfd;
mod peer;
mod ring;
mod send;
pub mod sys;
mod user_data;

pub use bufring::{BufRing, RecvBuf};
pub use eventfd::EventFd;
pub use peer::PEER_LOOKUPS;
pub use ring::{Completion, Opcode, Ring, RingConfig, SetupError, TcpOption};
pub use send::{ConnectChain, FinishedSend, MAX_IOV};
pub use user_data::UserData;
