//! What the shard does with each completion: accepted sockets, received
//! bytes, finished sends, closed slots.
//!
//! Received bytes go to the connection's protocol in place, in the
//! provided buffer the kernel filled (no copy); a TLS connection's go
//! through its session first (decrypted in place too). Bytes the protocol cannot
//! use yet — a partial head or frame, requests pipelined behind an answer —
//! are kept in the connection's buffers and offered again, in front of the
//! next bytes.

use bytes::{Buf, Bytes, BytesMut};
use uring::Completion;

use crate::metrics::{ShardMetrics, TlsFailure};
use crate::transport::Finish;

use super::conns::{ConnKey, SendDone};
use super::op::Op;
use super::tls::{Read, PLAINTEXT_REFUSAL};
use super::Shard;

impl Shard {
    pub(super) fn on_completion(&mut self, r: usize, c: Completion) {
        match Op::of(c.user_data()) {
            Some(Op::Accept) => {
                let listener = c.user_data().index() as usize;
                let doorbell = self.shared.mail.door(self.id).eventfd();
                let accepted = self.acceptor.on_accept(
                    &mut self.conns,
                    doorbell,
                    &self.metrics,
                    r,
                    &c,
                    self.now,
                );
                if let Some(slot) = accepted {
                    self.open(r, slot, listener);
                }
            }
            Some(Op::Recv) => self.on_recv(r, c),
            Some(Op::Send) => match self.conns.on_send(r, &c) {
                SendDone::Sent => {}
                SendDone::Drained(key) => self.close_now(key),
                SendDone::Failed(key, errno) => {
                    tracing::debug!(
                        shard = self.id,
                        "send failed: {}",
                        std::io::Error::from_raw_os_error(errno)
                    );
                    self.dispatch(key, |p, ctx| p.handle_close(ctx));
                }
            },
            Some(Op::Close) => {
                let cr = &mut self.conns.rings[r];
                cr.used = cr.used.saturating_sub(1);
                if c.result() < 0 {
                    tracing::warn!(
                        shard = self.id,
                        "closing a socket failed: {}",
                        std::io::Error::from_raw_os_error(-c.result())
                    );
                }
                self.acceptor.on_closed(&mut self.conns, r);
            }
            Some(Op::SockOpt) => {
                // Only a failure posts; the connection works on, with Nagle.
                tracing::debug!(
                    shard = self.id,
                    "setting TCP_NODELAY failed: {}",
                    std::io::Error::from_raw_os_error(-c.result())
                );
            }
            Some(Op::Peer) => {
                let tag = c.user_data();
                let key = ConnKey::new(r as u8, tag.index(), tag.gen());
                if let Some(peer) = self.conns.rings[r].ring.take_peer_name(&c) {
                    self.on_peer(key, peer);
                }
            }
            Some(Op::Wake | Op::Shutdown | Op::Cancel) | None => {}
        }
    }

    fn on_recv(&mut self, r: usize, mut c: Completion) {
        let tag = c.user_data();
        let key = ConnKey::new(r as u8, tag.index(), tag.gen());
        let alive = self.conns.get(key).is_some();
        let result = c.result();
        if result > 0 {
            let Some(mut buf) = c.take_buffer() else {
                tracing::error!(shard = self.id, "receive completion without a buffer");
                return;
            };
            if alive {
                ShardMetrics::add(&self.metrics.bytes_in, result as u64);
                if self.conns.is_tls(key) {
                    self.on_tls_input(key, buf.bytes());
                } else {
                    self.on_input(key, buf.bytes());
                }
            }
            drop(buf);
            if !c.more() && self.conns.get(key).is_some() {
                self.rearm.push(key);
            }
        } else if result == 0 {
            if alive {
                // The peer closed its end.
                self.dispatch(key, |p, ctx| p.handle_close(ctx));
            }
        } else if -result == libc::ECANCELED {
            // Cancelled by a pause (`keep_input`); re-armed when the
            // connection's input is taken again (`resume_input`).
        } else if -result == libc::ENOBUFS {
            ShardMetrics::add(&self.metrics.recv_nobufs, 1);
            if alive {
                self.rearm.push(key);
            }
        } else if alive {
            tracing::debug!(
                shard = self.id,
                "receive failed: {}",
                std::io::Error::from_raw_os_error(-result)
            );
            self.dispatch(key, |p, ctx| p.handle_close(ctx));
        }
    }

    /// Received bytes of a TLS connection: rustls runs over them in place;
    /// what it sends (a handshake flight, an alert) is queued as records,
    /// and the plaintext goes to the protocol as any connection's input.
    fn on_tls_input(&mut self, key: ConnKey, data: &mut [u8]) {
        let mut plain = std::mem::take(&mut self.tls_plain);
        let mut flight = std::mem::take(&mut self.tls_flight);
        let read = self.conns.tls_read(key, data, &mut plain, &mut flight);
        if !flight.is_empty() {
            self.conns
                .queue_sealed(key, Bytes::copy_from_slice(&flight));
            flight.clear();
        }
        let mut peer_closed = false;
        match read {
            None | Some(Read::Open) => {}
            Some(Read::Established { version, resumed }) => {
                self.metrics
                    .tls_handshake(version == rustls::ProtocolVersion::TLSv1_2, resumed);
                // Anything queued while the handshake ran can be sealed now.
                self.conns.wake_output(key);
            }
            Some(Read::PeerClosed) => peer_closed = true,
            Some(Read::PlaintextHttp) => {
                tracing::debug!(shard = self.id, "plain HTTP on a TLS port: answered 400");
                ShardMetrics::add(
                    &self.metrics.tls_failures[TlsFailure::PlainHttp as usize],
                    1,
                );
                self.conns
                    .queue_sealed(key, Bytes::from_static(PLAINTEXT_REFUSAL));
                self.dispatch(key, |p, ctx| p.finish(ctx, Finish::AfterFlush));
            }
            Some(Read::Failed(e)) => {
                tracing::debug!(shard = self.id, "TLS failed: {e}");
                ShardMetrics::add(&self.metrics.tls_failures[TlsFailure::Alert as usize], 1);
                // The alert, if rustls made one, goes out first.
                self.dispatch(key, |p, ctx| p.finish(ctx, Finish::AfterFlush));
            }
            Some(Read::TooLarge) => {
                tracing::debug!(
                    shard = self.id,
                    "TLS peer sent more than a record ahead: closed"
                );
                ShardMetrics::add(&self.metrics.tls_failures[TlsFailure::TooLarge as usize], 1);
                self.dispatch(key, |p, ctx| p.handle_close(ctx));
            }
        }
        if !plain.is_empty() && self.conns.get(key).is_some() {
            self.on_input(key, &mut plain);
        }
        plain.clear();
        self.tls_plain = plain;
        self.tls_flight = flight;
        if peer_closed {
            self.dispatch(key, |p, ctx| p.handle_close(ctx));
        }
    }

    /// Feeds received bytes to the connection's protocol, after any it kept.
    fn on_input(&mut self, key: ConnKey, data: &mut [u8]) {
        if !self.refused_peers.is_empty() {
            if let Some(refused) = self.refused_peers.remove(&key) {
                // Its request came: answer it with the refusal.
                self.dispatch(key, |p, ctx| p.refuse_peer(ctx, &refused));
                return;
            }
        }
        match self.conns.take_input(key) {
            Some(mut kept) => {
                kept.extend_from_slice(data);
                let used = self.feed(key, &mut kept);
                kept.advance(used);
                self.keep_input(key, kept);
            }
            None => {
                let used = self.feed(key, data);
                if used < data.len() {
                    self.keep_input(key, BytesMut::from(&data[used..]));
                }
            }
        }
    }

    /// Offers kept input again (after an answer the requests behind it
    /// waited for).
    pub(super) fn resume_input(&mut self, key: ConnKey) {
        let mut left = 0;
        if let Some(mut kept) = self.conns.take_input(key) {
            let used = self.feed(key, &mut kept);
            kept.advance(used);
            left = kept.len();
            self.keep_input(key, kept);
        }
        // A paused reader reads again once what it sent ahead is down to
        // half of what pauses it (so one answer does not flip it back).
        if left <= self.input_limits().pause_above / 2 && self.conns.unpause_recv(key) {
            self.conns.rearm_recv(key);
        }
    }

    fn feed(&mut self, key: ConnKey, buf: &mut [u8]) -> usize {
        self.dispatch(key, |p, ctx| p.handle_input(ctx, buf))
            .unwrap_or(buf.len())
    }

    /// How much input a connection may have waiting for its protocol.
    fn input_limits(&self) -> InputLimits {
        let s = &self.shared.settings;
        // One whole request (head and largest body) and some slack: what
        // a peer may have sent while the protocol waits for the rest of a
        // request. Beyond it the peer is pipelining ahead of its answers.
        let pause_above = s.max_message_size + s.max_head_size + 64 * 1024;
        InputLimits {
            pause_above,
            // What may still arrive after a pause: the receives already
            // completed in this batch. Past it the peer ignores flow
            // control, which TCP does not allow, or a bug lets it through.
            close_above: 2 * pause_above + 1024 * 1024,
        }
    }

    /// Keeps bytes the protocol could not use yet. A peer that pipelines
    /// requests faster than they are answered (an HTTP publisher at full
    /// speed while the store or a busy shard delays answers) is paused,
    /// not closed: its receive is cancelled and TCP holds the rest back
    /// until `resume_input` has worked the kept bytes down.
    fn keep_input(&mut self, key: ConnKey, rest: BytesMut) {
        let limits = self.input_limits();
        if rest.len() > limits.close_above {
            tracing::info!(
                shard = self.id,
                "peer sent {} bytes ahead after its reading was paused; closing",
                rest.len()
            );
            self.dispatch(key, |p, ctx| p.handle_close(ctx));
            return;
        }
        if rest.len() > limits.pause_above && self.conns.pause_recv(key) {
            tracing::debug!(
                shard = self.id,
                "peer sent {} bytes ahead of its answers; reading paused",
                rest.len()
            );
            ShardMetrics::add(&self.metrics.reads_paused, 1);
        }
        self.conns.keep_input(key, rest);
    }
}

/// See [`Shard::input_limits`].
struct InputLimits {
    /// Kept input above which the connection's reading pauses.
    pause_above: usize,
    /// Kept input above which the connection is closed.
    close_above: usize,
}
