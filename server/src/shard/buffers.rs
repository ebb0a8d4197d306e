//! A busy connection's buffers: the bytes queued for it, what the kernel
//! is sending, and received bytes its protocol could not use yet.
//!
//! An idle connection has none of this (the box is returned to a per-shard
//! pool), which is what keeps an idle slot small.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Buffers not yet handed to the kernel, in order.
    pub out: VecDeque<Bytes>,
    /// Their total length.
    pub queued: usize,
    /// Bytes of the send in flight.
    pub inflight: usize,
    /// Received bytes not consumed yet (a partial head, frame or body, or
    /// requests pipelined behind an answer).
    pub input: BytesMut,
}

impl Buffers {
    /// Queues `bytes` after everything queued before.
    pub fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.out.push_back(bytes);
    }

    /// Puts bytes the kernel did not take back at the head of the queue,
    /// in order.
    pub fn push_front_all(&mut self, unsent: impl DoubleEndedIterator<Item = Bytes>) {
        for b in unsent.rev() {
            self.queued += b.len();
            self.out.push_front(b);
        }
    }

    /// Drops what is queued but not in flight.
    pub fn discard_queued(&mut self) {
        self.out.clear();
        self.queued = 0;
    }

    /// Bytes queued or in flight.
    pub fn outbound(&self) -> usize {
        self.queued + self.inflight
    }

    /// Whether nothing is queued, in flight or kept: the box can go back
    /// to the pool.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && self.inflight == 0 && self.input.is_empty()
    }

    /// Empties the box for reuse; `false` if it grew too large to keep.
    pub fn reset(&mut self, max_queue: usize) -> bool {
        self.out.clear();
        self.queued = 0;
        self.inflight = 0;
        self.input = BytesMut::new();
        self.out.capacity() <= max_queue
    }
}
