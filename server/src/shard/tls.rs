//! One connection's TLS session, driven sans-io by the shard: received
//! bytes in, plaintext and TLS records out.
//!
//! rustls's *unbuffered* API leaves every buffer to us, which is what keeps
//! an idle TLS connection small (docs/benchmarks.md): received records are
//! decrypted in place, in the provided buffer the kernel filled, and only
//! bytes rustls has not finished with (a record split over receives, or
//! handshake fragments it still refers to) are kept, in a spill that is
//! empty — no heap — the rest of the time. Outgoing, the protocols keep
//! queueing plaintext `Bytes` (a broadcast frame is still one allocation
//! shared by every subscriber); at the end of the turn [`TlsConn::seal`]
//! encrypts what is queued into records of up to 16 KiB, one fresh buffer
//! per send. Plaintext stays droppable (a lagging reader's queue) until it
//! is sealed; ciphertext is never dropped, or the record sequence numbers
//! would no longer match the peer's.
//!
//! rustls 0.23 panics when `process_tls_records` is given an empty slice
//! while it still refers to bytes it has not discarded, so every call here
//! passes the kept bytes (the spill, or the rest of the current receive).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};

use super::buffers::Buffers;

/// Largest plaintext per record (RFC 8446 §5.1; rustls's default).
const MAX_RECORD_PLAIN: usize = 16 * 1024;
/// The most a record adds to its plaintext (TLS 1.2 AES-GCM: 29 bytes).
const RECORD_OVERHEAD: usize = 32;
/// Plaintext sealed per send; the rest waits, still droppable.
pub const SEAL_BUDGET: usize = 64 * 1024;
/// Kept bytes allowed while handshaking (a ClientHello is kept whole until
/// it is complete; browsers send under 2 KB).
const MAX_SPILL_HANDSHAKE: usize = 32 * 1024;
/// Kept bytes allowed after it: one largest legal record and a receive.
const MAX_SPILL: usize = 18_437 + 4096;

/// What a client speaking plain HTTP to a TLS port is told (in plain HTTP:
/// it would not understand an alert).
pub const PLAINTEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
this port speaks TLS: use https:// or wss://\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    Fresh,
    Handshaking,
    Open,
    /// Failed: whatever else arrives is ignored while the alert goes out.
    Failed,
}

/// One connection's TLS session. See the module docs.
pub struct TlsConn {
    session: UnbufferedServerConnection,
    /// Received bytes rustls has not discarded; empty (no heap) otherwise.
    spill: Vec<u8>,
    phase: Phase,
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("phase", &self.phase)
            .field("spill", &self.spill.len())
            .finish_non_exhaustive()
    }
}

/// What one receive did.
#[derive(Debug)]
pub enum Read {
    /// Nothing to report (plaintext, if any, is in `plain`).
    Open,
    /// The handshake completed.
    Established {
        /// TLS 1.2 or 1.3.
        version: ProtocolVersion,
        /// A session resumed from a ticket.
        resumed: bool,
    },
    /// The peer sent `close_notify`: the end of its input.
    PeerClosed,
    /// The first bytes were plain HTTP: answer [`PLAINTEXT_REFUSAL`].
    PlaintextHttp,
    /// The handshake or a record failed; during the handshake its fatal
    /// alert is in `flight` (after it, the connection just closes: an
    /// alert would have to be encrypted).
    Failed(rustls::Error),
    /// More bytes kept than a valid peer can have outstanding.
    TooLarge,
}

impl TlsConn {
    /// A session for a connection accepted on a TLS listener.
    pub fn new(config: &Arc<ServerConfig>) -> Result<Box<TlsConn>, rustls::Error> {
        Ok(Box::new(TlsConn {
            session: UnbufferedServerConnection::new(config.clone())?,
            spill: Vec::new(),
            phase: Phase::Fresh,
            close_notify_sent: false,
        }))
    }

    /// Whether the handshake has not completed.
    pub fn is_handshaking(&self) -> bool {
        self.phase != Phase::Open
    }

    /// Whether the handshake neither completed nor failed (the peer left,
    /// or was closed at `--handshake-timeout`, in the middle of it).
    pub fn is_incomplete(&self) -> bool {
        matches!(self.phase, Phase::Fresh | Phase::Handshaking)
    }

    /// Bytes kept for the next receive, and the memory holding them.
    pub fn kept(&self) -> (usize, usize) {
        (self.spill.len(), self.spill.capacity())
    }

    /// One receive: `data` (decrypted in place) after the kept bytes.
    /// Application data is appended to `plain`; records rustls sends (a
    /// handshake flight, tickets, an alert) to `flight`.
    pub fn read(&mut self, data: &mut [u8], plain: &mut Vec<u8>, flight: &mut Vec<u8>) -> Read {
        if self.phase == Phase::Failed {
            return Read::Open;
        }
        if self.phase == Phase::Fresh {
            self.phase = Phase::Handshaking;
            // TLS starts with a handshake record (0x16); "GET ", "POST"…
            // start with a capital letter.
            if data.first().is_some_and(u8::is_ascii_uppercase) {
                self.phase = Phase::Failed;
                return Read::PlaintextHttp;
            }
        }
        let outcome = if self.spill.is_empty() {
            let r = drive(&mut self.session, data, plain, flight);
            if r.used < data.len() && r.error.is_none() {
                self.spill.extend_from_slice(&data[r.used..]);
            }
            r
        } else {
            let mut spill = std::mem::take(&mut self.spill);
            spill.extend_from_slice(data);
            let r = drive(&mut self.session, &mut spill, plain, flight);
            if r.used < spill.len() && r.error.is_none() {
                spill.drain(..r.used);
                self.spill = spill;
            }
            r
        };
        if let Some(e) = outcome.error {
            if self.phase == Phase::Handshaking {
                flight.extend_from_slice(&handshake_alert(&e));
            }
            self.phase = Phase::Failed;
            self.spill = Vec::new();
            return Read::Failed(e);
        }
        let limit = match self.phase {
            Phase::Handshaking => MAX_SPILL_HANDSHAKE,
            _ => MAX_SPILL,
        };
        if self.spill.len() > limit {
            self.phase = Phase::Failed;
            self.spill = Vec::new();
            return Read::TooLarge;
        }
        if outcome.peer_closed {
            return Read::PeerClosed;
        }
        if self.phase == Phase::Handshaking && !self.session.is_handshaking() {
            self.phase = Phase::Open;
            return Read::Established {
                version: (self.session.protocol_version()).unwrap_or(ProtocolVersion::TLSv1_3),
                resumed: self.session.handshake_kind() == Some(HandshakeKind::Resumed),
            };
        }
        Read::Open
    }

    /// Seals queued plaintext into records appended to `b`'s ciphertext
    /// queue: small frames gathered into records of up to 16 KiB (one AEAD
    /// call per record, not per frame), at most `budget` bytes of
    /// plaintext. `Ok(false)`: nothing can be sealed yet (handshaking).
    pub fn seal(
        &mut self,
        b: &mut Buffers,
        gather: &mut Vec<u8>,
        budget: usize,
    ) -> Result<bool, EncryptError> {
        if self.phase != Phase::Open {
            return Ok(false);
        }
        for _ in 0..8 {
            let UnbufferedStatus { state, .. } = self.session.process_tls_records(&mut self.spill);
            match state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let ct = fill(&mut w, b, gather, budget)?;
                    if !ct.is_empty() {
                        b.push_sealed(ct);
                    }
                    return Ok(true);
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    let mut v = Vec::new();
                    encode_into(&mut v, |buf| e.encode(buf));
                    b.push_sealed(Bytes::from(v));
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Queues `close_notify` (once) after everything sealed so far.
    pub fn seal_close_notify(&mut self, b: &mut Buffers) {
        if self.close_notify_sent || self.phase != Phase::Open {
            return;
        }
        if let Ok(ConnectionState::WriteTraffic(mut w)) =
            self.session.process_tls_records(&mut self.spill).state
        {
            let mut ct = BytesMut::zeroed(64);
            if let Ok(n) = w.queue_close_notify(&mut ct) {
                ct.truncate(n);
                b.push_sealed(ct.freeze());
                self.close_notify_sent = true;
            }
        }
    }
}

/// What [`drive`] did.
struct Drive {
    /// Bytes rustls discarded: the rest is offered again, in front of the
    /// next receive.
    used: usize,
    peer_closed: bool,
    error: Option<rustls::Error>,
}

/// Runs rustls over `buf` until it needs more input.
fn drive(
    tls: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    plain: &mut Vec<u8>,
    flight: &mut Vec<u8>,
) -> Drive {
    let mut start = 0;
    let mut peer_closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } = tls.process_tls_records(&mut buf[start..]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                start += discard;
                return Drive {
                    used: start,
                    peer_closed,
                    error: Some(e),
                };
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            return Drive {
                                used: start + discard,
                                peer_closed,
                                error: Some(e),
                            }
                        }
                    }
                }
                false
            }
            ConnectionState::EncodeTlsData(mut e) => {
                encode_into(flight, |b| e.encode(b));
                false
            }
            // The caller queues `flight`.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                false
            }
            ConnectionState::PeerClosed => {
                peer_closed = true;
                false
            }
            ConnectionState::Closed
            | ConnectionState::BlockedHandshake
            | ConnectionState::WriteTraffic(_) => true,
            // Early data is off; anything else is a state this code does
            // not know.
            _ => {
                return Drive {
                    used: start + discard,
                    peer_closed,
                    error: Some(rustls::Error::General("unexpected TLS state".into())),
                }
            }
        };
        start += discard;
        if stop {
            return Drive {
                used: start,
                peer_closed,
                error: None,
            };
        }
    }
}

/// The fatal alert (RFC 8446 §6) for a handshake that failed with `e`, as
/// a plaintext record: the handshake never reached encryption. Made here
/// rather than taken from rustls, which would have to be driven again over
/// the bad bytes after its error to hand its own alert over.
fn handshake_alert(e: &rustls::Error) -> [u8; 7] {
    let description = match e {
        rustls::Error::InvalidMessage(_) => 50,      // decode_error
        rustls::Error::NoApplicationProtocol => 120, // no_application_protocol
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => 10, // unexpected_message
        rustls::Error::PeerMisbehaved(_) => 47,      // illegal_parameter
        _ => 40,                                     // handshake_failure
    };
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Appends what `encode` writes to `out`, growing it as rustls asks.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let at = out.len();
    out.resize(at + 4096, 0);
    let n = match encode(&mut out[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(at + required_size, 0);
            encode(&mut out[at..]).unwrap_or(0)
        }
        Err(EncodeError::AlreadyEncoded) => 0,
    };
    out.truncate(at + n);
}

/// Encrypts queued plaintext into one new buffer (see [`TlsConn::seal`]).
fn fill(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    b: &mut Buffers,
    gather: &mut Vec<u8>,
    budget: usize,
) -> Result<Bytes, EncryptError> {
    let take = b
        .queued
        .min(budget)
        .max(b.out.front().map_or(0, Bytes::len));
    let mut ct = BytesMut::zeroed(take + (take / MAX_RECORD_PLAIN + 2) * RECORD_OVERHEAD);
    let mut pos = 0;
    let mut sealed = 0;
    while sealed < budget {
        let Some(front_len) = b.out.front().map(Bytes::len) else {
            break;
        };
        if front_len >= MAX_RECORD_PLAIN / 2 || b.out.len() == 1 {
            // A large frame, or the only one: encrypted straight from the
            // shared frame (rustls cuts it into 16 KiB records).
            let frame = b.pop_plain().expect("a front buffer");
            pos += encrypt_at(w, &frame, &mut ct, pos)?;
            sealed += frame.len();
        } else {
            gather.clear();
            while let Some(len) = b.out.front().map(Bytes::len) {
                if !gather.is_empty() && gather.len() + len > MAX_RECORD_PLAIN {
                    break;
                }
                gather.extend_from_slice(&b.pop_plain().expect("a front buffer"));
            }
            pos += encrypt_at(w, gather, &mut ct, pos)?;
            sealed += gather.len();
        }
    }
    ct.truncate(pos);
    Ok(ct.freeze())
}

/// Encrypts `pt` into `ct` at `pos`; returns the bytes written.
fn encrypt_at(
    w: &mut WriteTraffic<'_, ServerConnectionData>,
    pt: &[u8],
    ct: &mut BytesMut,
    pos: usize,
) -> Result<usize, EncryptError> {
    let need = pos + pt.len() + (pt.len() / MAX_RECORD_PLAIN + 1) * RECORD_OVERHEAD;
    if ct.len() < need {
        ct.resize(need, 0);
    }
    match w.encrypt(pt, &mut ct[pos..]) {
        // A KeyUpdate rustls put in front takes room too.
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            ct.resize(pos + required_size, 0);
            w.encrypt(pt, &mut ct[pos..])
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

    use super::*;

    /// A server configuration with a fresh self-signed certificate for
    /// `localhost`, and a client configuration trusting it, speaking
    /// `version`.
    fn configs(
        version: &'static SupportedProtocolVersion,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let provider = crate::tls::provider();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Takes the records sealed so far, as a send would.
    fn take_sealed(b: &mut Buffers) -> Vec<u8> {
        let records: Vec<u8> = b.sealed().drain(..).flat_map(|r| r.to_vec()).collect();
        b.sent_sealed(records.len());
        b.completed_sealed(Vec::new());
        records
    }

    /// A server session and a buffered rustls client, and what the server
    /// decrypted so far.
    struct Pair {
        server: Box<TlsConn>,
        client: ClientConnection,
        plain: Vec<u8>,
        reads: Vec<String>,
    }

    impl Pair {
        fn new(version: &'static SupportedProtocolVersion) -> Pair {
            let (server, client) = configs(version);
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                server: TlsConn::new(&server).unwrap(),
                client: ClientConnection::new(client, name).unwrap(),
                plain: Vec::new(),
                reads: Vec::new(),
            }
        }

        /// Moves the client's pending bytes to the server in pieces of
        /// `chunk`, and the server's answers back; `true` if anything moved.
        fn exchange(&mut self, chunk: usize, b: &mut Buffers) -> bool {
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            let mut flight = Vec::new();
            for piece in wire.chunks_mut(chunk) {
                let read = self.server.read(piece, &mut self.plain, &mut flight);
                self.reads.push(format!("{read:?}"));
            }
            let mut back = flight;
            self.server.seal(b, &mut Vec::new(), SEAL_BUDGET).unwrap();
            back.extend(take_sealed(b));
            let moved = !wire.is_empty() || !back.is_empty();
            let mut rd = &back[..];
            while !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
                self.client.process_new_packets().unwrap();
            }
            moved
        }

        fn client_reads(&mut self) -> Vec<u8> {
            let mut got = Vec::new();
            let _ = self.client.reader().read_to_end(&mut got);
            got
        }
    }

    #[test]
    fn handshakes_and_data_in_pieces_of_any_size() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            for chunk in [1, 7, 100, 512, 5000] {
                let mut p = Pair::new(version);
                let mut b = Buffers::default();
                while p.exchange(chunk, &mut b) {}
                assert!(!p.server.is_handshaking(), "{chunk}: {:?}", p.reads);
                assert!(p.reads.iter().any(|r| r.starts_with("Established")));
                p.client
                    .writer()
                    .write_all(b"GET / HTTP/1.1\r\n\r\n")
                    .unwrap();
                p.exchange(chunk, &mut b);
                assert_eq!(p.plain, b"GET / HTTP/1.1\r\n\r\n", "{chunk}");
                assert_eq!(p.server.kept(), (0, 0), "an idle session keeps no memory");
                // Frames queued as plaintext reach the client, in order.
                b.push(Bytes::from_static(b"hello "), 1);
                b.push(Bytes::from_static(b"world"), 2);
                p.exchange(chunk, &mut b);
                assert_eq!(p.client_reads(), b"hello world");
                assert!(b.out.is_empty() && !b.has_sealed());
            }
        }
    }

    #[test]
    fn small_frames_are_gathered_into_one_record_and_large_ones_split() {
        let mut p = Pair::new(&rustls::version::TLS13);
        let mut b = Buffers::default();
        while p.exchange(512, &mut b) {}
        for _ in 0..100 {
            b.push(Bytes::from(vec![b'x'; 100]), 0);
        }
        p.server.seal(&mut b, &mut Vec::new(), SEAL_BUDGET).unwrap();
        let sealed = take_sealed(&mut b);
        // One record: a 5-byte header, 10,000 bytes, the inner type and a
        // 16-byte tag.
        assert_eq!(sealed.len(), 10_000 + 22);
        let mut rd = &sealed[..];
        while !rd.is_empty() {
            p.client.read_tls(&mut rd).unwrap();
            p.client.process_new_packets().unwrap();
        }
        assert!(p.client_reads() == vec![b'x'; 10_000]);
        // A 40 KiB frame: three records; past the budget the rest waits.
        b.push(Bytes::from(vec![b'y'; 40 * 1024]), 0);
        p.server.seal(&mut b, &mut Vec::new(), SEAL_BUDGET).unwrap();
        assert_eq!(take_sealed(&mut b).len(), 40 * 1024 + 3 * 22);
        for _ in 0..3 {
            b.push(Bytes::from(vec![b'z'; 40 * 1024]), 0);
        }
        p.server.seal(&mut b, &mut Vec::new(), 64 * 1024).unwrap();
        assert_eq!(b.out.len(), 1, "the third frame waits, still droppable");
    }

    #[test]
    fn plain_http_and_garbage_fail_cleanly() {
        let (server, _) = configs(&rustls::version::TLS13);
        let (mut plain, mut flight) = (Vec::new(), Vec::new());
        let mut s = TlsConn::new(&server).unwrap();
        let read = s.read(
            &mut b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            &mut plain,
            &mut flight,
        );
        assert!(matches!(read, Read::PlaintextHttp));
        assert!(flight.is_empty());
        // Input after a failure is ignored.
        assert!(matches!(
            s.read(&mut [0x16; 10], &mut plain, &mut flight),
            Read::Open
        ));
        for garbage in [
            &b"\x16\x03\x01\x00\x05\x01\x02\x03\x04\x05"[..],
            &b"\x16\x03\x01\x48\x01"[..],
            &b"\x80\x2e\x01\x00\x02"[..],
            &[0u8; 600][..],
        ] {
            let mut s = TlsConn::new(&server).unwrap();
            let mut flight = Vec::new();
            let mut data = garbage.to_vec();
            match s.read(&mut data, &mut plain, &mut flight) {
                Read::Failed(e) => assert!(
                    flight.starts_with(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02]),
                    "{:?}: {e} {flight:?}",
                    &garbage[..5]
                ),
                // A header announcing more than it sent yet waits for it.
                Read::Open => assert_eq!(garbage.len(), 5),
                other => panic!("{garbage:?}: {other:?}"),
            }
            assert!(plain.is_empty());
        }
    }

    #[test]
    fn close_notify_both_ways() {
        let mut p = Pair::new(&rustls::version::TLS13);
        let mut b = Buffers::default();
        while p.exchange(512, &mut b) {}
        p.server.seal_close_notify(&mut b);
        p.server.seal_close_notify(&mut b);
        assert_eq!(b.sealed().len(), 1, "once");
        p.exchange(512, &mut b);
        assert!(p.client.process_new_packets().unwrap().peer_has_closed());
        p.client.send_close_notify();
        p.exchange(512, &mut b);
        assert!(
            p.reads.last().unwrap().starts_with("PeerClosed"),
            "{:?}",
            p.reads
        );
    }
}
