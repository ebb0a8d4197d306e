//! ringcast's own thread-per-core runtime on io_uring.
//!
//! * [`ring`] — one io_uring: setup, the operations ringcast submits, typed
//!   `user_data`. The only module that builds submission entries.
//! * [`bufring`] — provided receive buffers shared by a ring's connections.
//! * [`wheel`] — the per-shard timing wheel.
//! * [`sys`] — the few raw system calls outside io_uring.
//!
//! `unsafe` lives here (submission entries that reference memory, buffer
//! ownership hand-over with the kernel, raw system calls) and in the send
//! path of `shard::io`; each block states the invariant it relies on.

pub mod bufring;
pub mod ring;
pub mod sys;
pub mod wheel;
