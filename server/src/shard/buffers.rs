//! A busy connection's buffers: the bytes queued for it, what the kernel
//! is sending, and received bytes its protocol could not use yet.
//!
//! Each queued buffer carries the sequence number of the message it holds
//! (0 for anything else: a response, a ping, an id line), so that when the
//! queue is dropped — a reader closed for lagging — the shard can tell the
//! first message the peer may not have received whole.
//!
//! An idle connection has none of this (the box is returned to a per-shard
//! pool), which is what keeps an idle slot small.
//!
//! A TLS connection queues plaintext in `out` like any other and, when it
//! sends, seals it into ciphertext in `sealed` (`shard::tls`): what is
//! sealed must all go out, in order, so a discard drops only `out`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use uring::MAX_IOV;

/// See the module docs.
///
/// `repr(C)`, hot fields first: a delivery reads `queued`, `inflight` and
/// `sealed_len` (the window check) and appends to `out`, all in the first
/// cache line; a TLS connection's records live behind one pointer.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Buffers {
    /// Bytes queued in `out`.
    pub queued: usize,
    /// Bytes of the send in flight.
    pub inflight: usize,
    /// TLS: bytes of records not yet handed to the kernel.
    sealed_len: usize,
    /// Buffers not yet handed to the kernel, in order.
    pub out: VecDeque<Bytes>,
    /// The message sequence number (0: not a message) and length of each
    /// buffer in `out`.
    seqs: VecDeque<(u64, usize)>,
    /// The sequence numbers and lengths of the buffers in the send in
    /// flight, in order.
    inflight_seqs: Vec<(u64, usize)>,
    /// Received bytes not consumed yet (a partial head, frame or body, or
    /// requests pipelined behind an answer).
    pub input: BytesMut,
    /// The first buffer of `out` is the rest of one the kernel took part
    /// of: it must go out before anything else can, discard or not.
    front_partial: bool,
    /// TLS: sealed records and what they carry (boxed: plaintext
    /// connections never have any).
    tls: Option<Box<Sealed>>,
}

/// A TLS connection's records not yet handed to the kernel, in order,
/// never discarded (the peer's record sequence numbers must match), and
/// the sequence numbers of the messages in them or in the send in flight
/// (what a discard reports as maybe not delivered).
#[derive(Debug, Default)]
struct Sealed {
    records: VecDeque<Bytes>,
    seqs: Vec<u64>,
}

impl Buffers {
    /// Queues `bytes` (message `seq`, or 0) after everything queued before.
    pub fn push(&mut self, bytes: Bytes, seq: u64) {
        self.queued += bytes.len();
        self.seqs.push_back((seq, bytes.len()));
        self.out.push_back(bytes);
    }

    /// Records that the first `n` queued buffers were handed to the kernel
    /// as one send of `len` bytes (they have left `out` already).
    pub fn sent(&mut self, n: usize, len: usize) {
        self.queued -= len;
        self.inflight = len;
        self.inflight_seqs.clear();
        self.inflight_seqs.extend(self.seqs.drain(..n));
        self.front_partial = false;
    }

    /// The send in flight completed; `unsent` are the bytes the kernel did
    /// not take (after a short write), which go back in front of anything
    /// queued since, in order.
    pub fn completed(&mut self, unsent: Vec<Bytes>) {
        self.inflight = 0;
        let n = unsent.len();
        let from = self.inflight_seqs.len() - n.min(self.inflight_seqs.len());
        if let (Some(first), Some(&(_, len))) = (unsent.first(), self.inflight_seqs.get(from)) {
            self.front_partial = first.len() < len;
        }
        for (b, &(seq, _)) in unsent.into_iter().zip(&self.inflight_seqs[from..]).rev() {
            self.queued += b.len();
            self.seqs.push_front((seq, b.len()));
            self.out.push_front(b);
        }
        self.inflight_seqs.clear();
    }

    /// Drops what is queued but not in flight — all but the rest of a
    /// buffer the kernel took part of, which the peer needs to see its
    /// frame end. Returns the lowest sequence number of a message the peer
    /// may not have received whole: dropped, or in the send still in
    /// flight.
    pub fn discard_queued(&mut self) -> Option<u64> {
        let first = (self.inflight_seqs.iter().chain(&self.seqs))
            .map(|&(seq, _)| seq)
            .chain(self.tls.iter().flat_map(|t| t.seqs.iter().copied()))
            .filter(|&seq| seq != 0)
            .min();
        let keep = usize::from(self.front_partial).min(self.out.len());
        self.out.truncate(keep);
        self.seqs.truncate(keep);
        self.queued = self.out.iter().map(Bytes::len).sum();
        first
    }

    /// TLS: takes the first queued plaintext buffer to seal it.
    pub fn pop_plain(&mut self) -> Option<Bytes> {
        let b = self.out.pop_front()?;
        self.queued -= b.len();
        if let Some((seq, _)) = self.seqs.pop_front() {
            if seq != 0 {
                self.tls.get_or_insert_with(Box::default).seqs.push(seq);
            }
        }
        Some(b)
    }

    /// TLS: queues records to send after those queued before.
    pub fn push_sealed(&mut self, b: Bytes) {
        self.sealed_len += b.len();
        self.sealed().push_back(b);
    }

    /// TLS: the records not yet handed to the kernel. Whoever takes some
    /// says how many bytes with [`Buffers::sent_sealed`].
    pub fn sealed(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.tls.get_or_insert_with(Box::default).records
    }

    /// TLS: whether records wait to be sent.
    pub fn has_sealed(&self) -> bool {
        self.sealed_len > 0
    }

    /// TLS: records of `len` bytes in all left `sealed` as one send.
    pub fn sent_sealed(&mut self, len: usize) {
        self.sealed_len -= len;
        self.inflight = len;
    }

    /// TLS: the send in flight completed; `unsent` (after a short write)
    /// goes back in front of `sealed`.
    pub fn completed_sealed(&mut self, unsent: Vec<Bytes>) {
        self.inflight = 0;
        for b in unsent.into_iter().rev() {
            self.sealed_len += b.len();
            self.sealed().push_front(b);
        }
        if self.sealed_len == 0 {
            if let Some(tls) = self.tls.as_mut() {
                tls.seqs.clear();
            }
        }
    }

    /// TLS: drops queued plaintext that can never be sealed (a connection
    /// ending before its handshake completed).
    pub fn drop_plain(&mut self) {
        self.out.clear();
        self.seqs.clear();
        self.queued = 0;
    }

    /// Bytes queued, sealed or in flight.
    pub fn outbound(&self) -> usize {
        self.queued + self.sealed_len + self.inflight
    }

    /// Whether nothing is queued, in flight or kept: the box can go back
    /// to the pool.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty() && self.sealed_len == 0 && self.inflight == 0 && self.input.is_empty()
    }

    /// Empties the box for reuse; `false` if it grew too large to keep.
    pub fn reset(&mut self) -> bool {
        self.out.clear();
        self.seqs.clear();
        self.queued = 0;
        self.inflight = 0;
        self.inflight_seqs.clear();
        self.front_partial = false;
        self.input = BytesMut::new();
        self.sealed_len = 0;
        self.tls = None;
        self.out.capacity() <= MAX_IOV && self.seqs.capacity() <= MAX_IOV
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_discard_names_the_first_message_not_surely_delivered() {
        let mut q = Buffers::default();
        q.push(b("head"), 0);
        q.push(b("m5"), 5);
        q.push(b("m6"), 6);
        assert_eq!(q.outbound(), 8);
        // Two buffers leave in one send; m6 waits.
        let first: Vec<Bytes> = q.out.drain(..2).collect();
        q.sent(first.len(), 6);
        assert_eq!((q.queued, q.inflight), (2, 6));
        // The send in flight may not complete: m5 is the first at risk.
        let mut copy = Buffers {
            inflight_seqs: q.inflight_seqs.clone(),
            seqs: q.seqs.clone(),
            ..Default::default()
        };
        assert_eq!(copy.discard_queued(), Some(5));
        // It completes short: "m5" was not taken and goes back in front.
        q.completed(vec![b("m5")]);
        assert_eq!(q.out, [b("m5"), b("m6")]);
        assert_eq!(q.discard_queued(), Some(5));
        assert_eq!(q.outbound(), 0);
        // The kernel takes half of a frame: its other half stays through a
        // discard, or the peer would read a torn frame.
        q.push(b("m7m7"), 7);
        q.push(b("m8"), 8);
        let two: Vec<Bytes> = q.out.drain(..2).collect();
        q.sent(two.len(), 6);
        q.completed(vec![b("m7"), b("m8")]);
        assert_eq!(q.discard_queued(), Some(7));
        assert_eq!((q.out.len(), q.outbound()), (1, 2));
        q.out.clear();
        q.seqs.clear();
        q.queued = 0;
        // Nothing but responses queued: no message at risk.
        q.push(b("pong"), 0);
        assert_eq!(q.discard_queued(), None);
    }

    #[test]
    fn tls_records_are_never_discarded_and_their_messages_count() {
        let mut q = Buffers::default();
        q.push(b("m1"), 1);
        q.push(b("m2"), 2);
        q.push(b("m3"), 3);
        // m1 and m2 are sealed into one record; m3 waits as plaintext.
        let sealed: Vec<Bytes> = [q.pop_plain(), q.pop_plain()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(sealed, [b("m1"), b("m2")]);
        q.push_sealed(b("RECORD(m1m2)"));
        assert_eq!(q.outbound(), 12 + 2);
        // A discard drops m3 but keeps the record, and names m1.
        assert_eq!(q.discard_queued(), Some(1));
        assert_eq!((q.sealed().len(), q.out.len(), q.outbound()), (1, 0, 12));
        // The record goes out short: its rest goes back in front.
        let all: Vec<Bytes> = q.sealed().drain(..).collect();
        q.sent_sealed(12);
        assert_eq!((q.outbound(), q.inflight), (12, 12));
        q.completed_sealed(vec![all[0].slice(7..)]);
        assert_eq!(*q.sealed(), [b("m1m2)")]);
        assert_eq!(q.discard_queued(), Some(1), "m1 may still not have arrived");
        q.sealed().clear();
        q.sent_sealed(5);
        q.completed_sealed(Vec::new());
        assert!(q.is_idle());
        assert_eq!(q.discard_queued(), None);
    }
}
