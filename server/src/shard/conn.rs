//! Per-connection state.
//!
//! A connection lives in one slot of one ring's direct-descriptor table;
//! [`ConnKey`] names it from anywhere in the node (hub subscriber lists,
//! cross-shard replies, timers) and carries a generation so that a key
//! outliving its connection never reaches the slot's next occupant.
//!
//! [`Conn`] is what every connection pays for, idle or not, so it is kept
//! small (see `size_of` in the tests and in docs/benchmarks.md): state that
//! only a busy connection needs (partial input, a frame decoder in the
//! middle of a frame, a request body, an outbound queue) lives in boxes that
//! exist only while busy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use codec::http::ChunkedDecoder;
use codec::ws::{Assembler, DataKind, FrameDecoder};

use crate::hub::{ChannelName, MsgId};

/// `ring:8 | slot:24 | gen:32`, unique within a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey(u64);

impl ConnKey {
    /// Packs a key.
    pub fn new(ring: u8, slot: u32, gen: u32) -> Self {
        debug_assert!(slot < 1 << 24);
        ConnKey(u64::from(ring) << 56 | u64::from(slot & 0xFF_FFFF) << 32 | u64::from(gen))
    }

    /// The ring (within its shard).
    pub fn ring(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The slot in that ring's table.
    pub fn slot(self) -> u32 {
        (self.0 >> 32) as u32 & 0xFF_FFFF
    }

    /// The slot's generation when the key was made.
    pub fn gen(self) -> u32 {
        self.0 as u32
    }

    /// The packed value.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The slot holds no connection (or one whose close is in progress).
    Free,
    /// Reading a request head: a new connection, or keep-alive between
    /// requests.
    Http,
    /// Reading the body of a `POST /pub`.
    Body,
    /// A WebSocket subscribed to one channel (`/ws/{channel}`).
    WsSub,
    /// The WebSocket echo endpoint.
    WsEcho,
    /// The multiplexed WebSocket protocol (`/ws`); its subscriptions live
    /// in the shard's session table.
    WsMux,
    /// A Server-Sent Events stream.
    Sse,
    /// A long poll waiting for a message or its timeout.
    Poll,
    /// We sent a close frame and wait for the peer's (or the timeout).
    Closing,
    /// Flushing what is queued; the socket closes when the queue is empty.
    Draining,
}

impl Phase {
    /// Whether the connection speaks WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(
            self,
            Phase::WsSub | Phase::WsEcho | Phase::WsMux | Phase::Closing
        )
    }

    /// The transport gauge this phase counts under (none while closing).
    pub fn transport(self) -> Option<crate::metrics::Transport> {
        use crate::metrics::Transport;
        match self {
            Phase::Http | Phase::Body => Some(Transport::Http),
            Phase::WsSub => Some(Transport::WebSocket),
            Phase::WsEcho => Some(Transport::Echo),
            Phase::WsMux => Some(Transport::Multiplexed),
            Phase::Sse => Some(Transport::Sse),
            Phase::Poll => Some(Transport::LongPoll),
            Phase::Closing | Phase::Draining | Phase::Free => None,
        }
    }
}

/// Bit flags of [`Conn::flags`].
pub mod flags {
    /// A send is in flight.
    pub const SENDING: u8 = 1;
    /// Queued on the shard's list of connections to flush.
    pub const DIRTY: u8 = 2;
    /// `/ws/{channel}?format=json`: frames are JSON envelopes.
    pub const JSON: u8 = 4;
    /// The client asked to keep the HTTP connection open.
    pub const KEEP_ALIVE: u8 = 8;
    /// The current request is `HEAD`.
    pub const HEAD: u8 = 16;
    /// At least one request was received (idle vs. handshake timeout).
    pub const SERVED: u8 = 32;
    /// The current poll is a short poll (`timeout=0`).
    pub const SHORT_POLL: u8 = 64;
    /// The current poll's cursor came from `If-None-Match` (a 304 is
    /// possible).
    pub const IF_NONE_MATCH: u8 = 128;
}

/// The state of one connection.
#[derive(Debug)]
pub struct Conn {
    /// Generation of the slot's current occupant.
    pub gen: u32,
    /// What it is doing.
    pub phase: Phase,
    /// See [`flags`].
    pub flags: u8,
    /// Tick at which its timer work is due (0: none).
    pub deadline: u32,
    /// Tick of its live timer-wheel entry (0: none).
    pub scheduled: u32,
    /// Tick of the last bytes received.
    pub last_rx: u32,
    /// Hub channel of a `/ws/{channel}` subscription.
    pub chan: u32,
    /// Hub subscription of a `/ws/{channel}` subscription.
    pub sub: u32,
    /// Outbound bytes, while any are queued or in flight.
    pub out: Option<Box<Outbox>>,
    /// State that only a busy connection needs.
    pub ext: Option<Box<ConnExt>>,
}

impl Conn {
    /// An empty slot.
    pub const fn free() -> Conn {
        Conn {
            gen: 0,
            phase: Phase::Free,
            flags: 0,
            deadline: 0,
            scheduled: 0,
            last_rx: 0,
            chan: u32::MAX,
            sub: u32::MAX,
            out: None,
            ext: None,
        }
    }

    /// Whether a flag is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The busy-state box, created on first use.
    pub fn ext(&mut self) -> &mut ConnExt {
        self.ext.get_or_insert_with(Default::default)
    }

    /// Drops the busy-state box when nothing in it is needed any more.
    pub fn shrink(&mut self) {
        if self.ext.as_ref().is_some_and(|e| e.is_idle()) {
            self.ext = None;
        }
    }

    /// Bytes queued or in flight.
    pub fn outbound_bytes(&self) -> usize {
        self.out
            .as_ref()
            .map_or(0, |o| o.queued_bytes + o.inflight_bytes)
    }
}

/// Outbound data of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Buffers not yet handed to the kernel, in order.
    pub queue: VecDeque<Bytes>,
    /// Their total length.
    pub queued_bytes: usize,
    /// Bytes of the send in flight.
    pub inflight_bytes: usize,
}

/// How a `POST` body is delimited.
#[derive(Debug)]
pub enum BodyFraming {
    /// This many bytes remain.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
}

/// What a `POST` publishes once its body is complete.
#[derive(Debug, Clone)]
pub enum PublishTarget {
    /// One message to this channel.
    Single(ChannelName, DataKind),
    /// Newline-delimited JSON, each line one message; lines name their
    /// channel unless a default is given.
    Batch(Option<ChannelName>),
}

/// A `POST` body being read.
#[derive(Debug)]
pub struct Body {
    /// Remaining framing.
    pub framing: BodyFraming,
    /// The body so far.
    pub data: BytesMut,
    /// What to do with it.
    pub target: PublishTarget,
}

/// A publish waiting for ids from owner shards.
#[derive(Debug)]
pub struct PendingPublish {
    /// Matches replies to this request.
    pub token: u32,
    /// Ids by position in the request.
    pub ids: Vec<Option<MsgId>>,
    /// Owner shards that have not answered yet.
    pub outstanding: u32,
    /// Answer with `{"ids": [...]}` rather than `{"id": ...}`.
    pub batch: bool,
    /// The request asked to keep the connection open.
    pub keep_alive: bool,
}

/// State of a busy connection.
#[derive(Debug, Default)]
pub struct ConnExt {
    /// Received bytes not consumed yet (a partial head, frame or body).
    pub inbuf: BytesMut,
    /// A frame decoder in the middle of a frame or fragmented message.
    pub decoder: Option<FrameDecoder>,
    /// Reassembly of a fragmented message (echo).
    pub assembler: Assembler,
    /// A body being read.
    pub body: Option<Body>,
    /// Publishes waiting for ids, in request order; answered in that order
    /// as their ids arrive (pipelined publishes overlap).
    pub publishes: VecDeque<PendingPublish>,
}

impl ConnExt {
    fn is_idle(&self) -> bool {
        self.inbuf.is_empty()
            && self.decoder.is_none()
            && self.assembler.is_empty()
            && self.body.is_none()
            && self.publishes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = ConnKey::new(255, (1 << 24) - 1, u32::MAX);
        assert_eq!(
            (k.ring(), k.slot(), k.gen()),
            (255, (1 << 24) - 1, u32::MAX)
        );
        let k = ConnKey::new(3, 19_999, 7);
        assert_eq!((k.ring(), k.slot(), k.gen()), (3, 19_999, 7));
    }

    #[test]
    fn an_idle_connection_is_small() {
        // Reported in docs/benchmarks.md; raising it costs memory on every
        // idle connection.
        assert!(
            std::mem::size_of::<Conn>() <= 48,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
