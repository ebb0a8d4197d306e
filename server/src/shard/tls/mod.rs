//! One connection's TLS session, driven sans-io by the shard: received
//! bytes in, plaintext and TLS records out.
//!
//! Two layers, one after the other. The handshake is rustls's *unbuffered*
//! server ([`handshake`]), which leaves every buffer to us; once it is
//! done, rustls hands the traffic keys over and our own record layer
//! ([`records`]) carries the connection, keeping only two AEAD keys and
//! their sequence numbers (and, for TLS 1.3, rustls's key schedule for
//! KeyUpdates). That is what keeps an idle TLS connection under 4 KiB:
//! a rustls session alone is ~3.9 KB (docs/benchmarks.md).
//!
//! Received records are decrypted in place, in the provided buffer the
//! kernel filled, and only bytes not yet usable (a record split over
//! receives, handshake fragments rustls still refers to) are kept, in a
//! spill that is empty — no heap — the rest of the time. Outgoing, the
//! protocols keep queueing plaintext `Bytes` (a broadcast frame is still
//! one allocation shared by every subscriber); at the end of the turn
//! [`TlsConn::seal`] encrypts what is queued into records of up to 16 KiB,
//! one fresh buffer per send. Plaintext stays droppable (a lagging reader's
//! queue) until it is sealed; ciphertext is never dropped, or the record
//! sequence numbers would no longer match the peer's.

mod handshake;
pub mod records;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rustls::server::UnbufferedServerConnection;
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};

use self::handshake::{drive, handshake_alert};
use self::records::{RecordError, Records, APPLICATION_DATA, MAX_OVERHEAD, MAX_PLAIN};
use super::buffers::Buffers;

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

/// Where a session is. The record layer is inline: a `TlsConn` is boxed
/// already, and an established connection stays one allocation.
#[allow(clippy::large_enum_variant)]
enum Layer {
    /// rustls runs the handshake (boxed: ~1 KB that goes away after it).
    Handshake(Box<UnbufferedServerConnection>),
    /// Our record layer carries the established connection.
    Records(Records),
    /// Failed or taken apart: nothing is kept.
    Gone,
}

/// One connection's TLS session. See the module docs.
pub struct TlsConn {
    layer: Layer,
    /// Received bytes not yet usable; empty (no heap) otherwise.
    spill: Vec<u8>,
    /// Nothing received yet.
    fresh: bool,
    close_notify_sent: bool,
    /// The peer sent `close_notify`: what else arrives is ignored.
    peer_closed: bool,
    /// Received or sent since the last [`TlsConn::rest_if_idle`].
    busy: bool,
}

impl fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layer = match &self.layer {
            Layer::Handshake(_) => "handshake",
            Layer::Records(_) => "records",
            Layer::Gone => "gone",
        };
        f.debug_struct("TlsConn")
            .field("layer", &layer)
            .field("spill", &self.spill.len())
            .finish_non_exhaustive()
    }
}

/// Why a session failed.
#[derive(Debug)]
pub enum Failure {
    /// The handshake failed (rustls's reason).
    Handshake(rustls::Error),
    /// An established connection's records failed.
    Records(RecordError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Handshake(e) => write!(f, "handshake: {e}"),
            Failure::Records(e) => e.fmt(f),
        }
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
    /// The session failed; its fatal alert, if it has one, is in `flight`.
    Failed(Failure),
    /// More bytes kept than a valid peer can have outstanding.
    TooLarge,
}

/// What running a layer over received bytes did.
struct Progress {
    used: usize,
    peer_closed: bool,
    error: Option<Failure>,
}

impl TlsConn {
    /// A session for a connection accepted on a TLS listener. The
    /// configuration must allow taking the keys over after the handshake
    /// (`enable_secret_extraction`).
    pub fn new(config: &Arc<ServerConfig>) -> Result<Box<TlsConn>, rustls::Error> {
        if !config.enable_secret_extraction {
            return Err(rustls::Error::General(
                "the TLS configuration must enable secret extraction".into(),
            ));
        }
        Ok(Box::new(TlsConn {
            layer: Layer::Handshake(Box::new(UnbufferedServerConnection::new(config.clone())?)),
            spill: Vec::new(),
            fresh: true,
            close_notify_sent: false,
            peer_closed: false,
            busy: true,
        }))
    }

    /// Whether the handshake has not completed.
    pub fn is_handshaking(&self) -> bool {
        !matches!(self.layer, Layer::Records(_))
    }

    /// Whether the handshake neither completed nor failed (the peer left,
    /// or was closed at `--handshake-timeout`, in the middle of it).
    pub fn is_incomplete(&self) -> bool {
        matches!(self.layer, Layer::Handshake(_))
    }

    /// Bytes kept for the next receive, and the memory holding them.
    pub fn kept(&self) -> (usize, usize) {
        (self.spill.len(), self.spill.capacity())
    }

    /// One receive: `data` (decrypted in place) after the kept bytes.
    /// Application data is appended to `plain`; records the session sends
    /// on its own (a handshake flight, tickets, a KeyUpdate, an alert) to
    /// `flight`.
    pub fn read(&mut self, data: &mut [u8], plain: &mut Vec<u8>, flight: &mut Vec<u8>) -> Read {
        if matches!(self.layer, Layer::Gone) || self.peer_closed {
            return Read::Open;
        }
        self.busy = true;
        if std::mem::take(&mut self.fresh) {
            // TLS starts with a handshake record (0x16); "GET ", "POST"…
            // start with a capital letter.
            if data.first().is_some_and(u8::is_ascii_uppercase) {
                self.layer = Layer::Gone;
                return Read::PlaintextHttp;
            }
        }
        let handshaking = self.is_handshaking();
        let progress = if self.spill.is_empty() {
            let p = run(&mut self.layer, data, plain, flight);
            if p.used < data.len() && p.error.is_none() {
                self.spill.extend_from_slice(&data[p.used..]);
            }
            p
        } else {
            let mut spill = std::mem::take(&mut self.spill);
            spill.extend_from_slice(data);
            let p = run(&mut self.layer, &mut spill, plain, flight);
            if p.used < spill.len() && p.error.is_none() {
                spill.drain(..p.used);
                self.spill = spill;
            }
            p
        };
        if let Some(e) = progress.error {
            self.fail();
            return Read::Failed(e);
        }
        let limit = if handshaking {
            MAX_SPILL_HANDSHAKE
        } else {
            MAX_SPILL
        };
        if self.spill.len() > limit {
            self.fail();
            return Read::TooLarge;
        }
        if progress.peer_closed {
            self.peer_closed = true;
            self.spill = Vec::new();
            return Read::PeerClosed;
        }
        if let Layer::Handshake(session) = &self.layer {
            if !session.is_handshaking() {
                return self.establish();
            }
        }
        Read::Open
    }

    /// Hands the connection from rustls to the record layer: everything
    /// rustls had to send is in the flight, and the kept bytes are the
    /// start of a record.
    fn establish(&mut self) -> Read {
        let Layer::Handshake(session) = std::mem::replace(&mut self.layer, Layer::Gone) else {
            return Read::Open;
        };
        let version = session
            .protocol_version()
            .unwrap_or(ProtocolVersion::TLSv1_3);
        let resumed = session.handshake_kind() == Some(HandshakeKind::Resumed);
        let records = session
            .dangerous_into_kernel_connection()
            .map_err(RecordError::Keys)
            .and_then(|(secrets, schedule)| Records::new(secrets, schedule));
        match records {
            Ok(records) => {
                self.layer = Layer::Records(records);
                Read::Established { version, resumed }
            }
            Err(e) => {
                self.fail();
                Read::Failed(Failure::Records(e))
            }
        }
    }

    /// Drops everything: what else arrives is ignored.
    fn fail(&mut self) {
        self.layer = Layer::Gone;
        self.spill = Vec::new();
    }

    /// Seals queued plaintext into records appended to `b`'s ciphertext
    /// queue: small frames gathered into records of up to 16 KiB (one AEAD
    /// call per record, not per frame), at most `budget` bytes of
    /// plaintext. `Ok(false)`: nothing can be sealed (handshaking, or gone).
    pub fn seal(
        &mut self,
        b: &mut Buffers,
        gather: &mut Vec<u8>,
        budget: usize,
    ) -> Result<bool, RecordError> {
        let Layer::Records(records) = &mut self.layer else {
            return Ok(false);
        };
        self.busy = true;
        let ct = fill(records, b, gather, budget)?;
        if !ct.is_empty() {
            b.push_sealed(Bytes::from(ct));
        }
        Ok(true)
    }

    /// A session that neither received nor sent since the last call drops
    /// its expanded keys, ~1.2 KB (see `records`); the shard calls this
    /// every `--tls-rest-after`. Returns whether keys were dropped now.
    pub fn rest_if_idle(&mut self) -> bool {
        if std::mem::take(&mut self.busy) {
            return false;
        }
        match &mut self.layer {
            Layer::Records(records) => records.rest(),
            _ => false,
        }
    }

    /// Queues `close_notify` (once) after everything sealed so far.
    pub fn seal_close_notify(&mut self, b: &mut Buffers) {
        let Layer::Records(records) = &mut self.layer else {
            return;
        };
        if self.close_notify_sent {
            return;
        }
        let mut ct = Vec::with_capacity(2 + MAX_OVERHEAD);
        if records.close_notify(&mut ct).is_ok() {
            b.push_sealed(Bytes::from(ct));
            self.close_notify_sent = true;
        }
    }
}

/// Runs the current layer over `buf`.
fn run(layer: &mut Layer, buf: &mut [u8], plain: &mut Vec<u8>, flight: &mut Vec<u8>) -> Progress {
    match layer {
        // Always mid-handshake: the read that completes it hands the
        // connection to the record layer (`establish`).
        Layer::Handshake(session) => {
            let d = drive(session, buf, plain, flight);
            let error = d.error.map(|e| {
                flight.extend_from_slice(&handshake_alert(&e));
                Failure::Handshake(e)
            });
            Progress {
                used: d.used,
                peer_closed: d.peer_closed,
                error,
            }
        }
        Layer::Records(records) => {
            let o = records.open(buf, plain, flight);
            Progress {
                used: o.used,
                peer_closed: o.peer_closed,
                error: o.error.map(Failure::Records),
            }
        }
        Layer::Gone => Progress {
            used: buf.len(),
            peer_closed: false,
            error: None,
        },
    }
}

/// Encrypts queued plaintext into one new buffer (see [`TlsConn::seal`]).
fn fill(
    records: &mut Records,
    b: &mut Buffers,
    gather: &mut Vec<u8>,
    budget: usize,
) -> Result<Vec<u8>, RecordError> {
    let take = b
        .queued
        .min(budget)
        .max(b.out.front().map_or(0, Bytes::len));
    let mut ct = Vec::with_capacity(take + (take / MAX_PLAIN + 2) * MAX_OVERHEAD);
    let mut sealed = 0;
    while sealed < budget {
        let Some(front_len) = b.out.front().map(Bytes::len) else {
            break;
        };
        if front_len >= MAX_PLAIN / 2 || b.out.len() == 1 {
            // A large frame, or the only one: encrypted straight from the
            // shared frame, cut into 16 KiB records.
            let frame = b.pop_plain().expect("a front buffer");
            for piece in frame.chunks(MAX_PLAIN) {
                records.seal(APPLICATION_DATA, piece, &mut ct)?;
            }
            sealed += frame.len();
        } else {
            gather.clear();
            while let Some(len) = b.out.front().map(Bytes::len) {
                if !gather.is_empty() && gather.len() + len > MAX_PLAIN {
                    break;
                }
                gather.extend_from_slice(&b.pop_plain().expect("a front buffer"));
            }
            records.seal(APPLICATION_DATA, gather, &mut ct)?;
            sealed += gather.len();
        }
    }
    Ok(ct)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{
        ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite,
        SupportedProtocolVersion,
    };

    use super::*;

    /// A server configuration with a fresh self-signed certificate for
    /// `localhost`, and a client configuration trusting it, speaking
    /// `version` with the given cipher suites (all if empty).
    fn configs_with(
        version: &'static SupportedProtocolVersion,
        suites: &[SupportedCipherSuite],
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
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client_provider = (*provider).clone();
        if !suites.is_empty() {
            client_provider.cipher_suites = suites.to_vec();
        }
        let client = ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    fn configs(
        version: &'static SupportedProtocolVersion,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        configs_with(version, &[])
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
        received: Vec<u8>,
    }

    impl Pair {
        fn new(version: &'static SupportedProtocolVersion) -> Pair {
            Pair::with_suite(version, &[])
        }

        fn with_suite(
            version: &'static SupportedProtocolVersion,
            suites: &[SupportedCipherSuite],
        ) -> Pair {
            let (server, client) = configs_with(version, suites);
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                server: TlsConn::new(&server).unwrap(),
                client: ClientConnection::new(client, name).unwrap(),
                plain: Vec::new(),
                reads: Vec::new(),
                received: Vec::new(),
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
            self.deliver(&back);
            moved
        }

        /// Hands server records to the client.
        fn deliver(&mut self, mut records: &[u8]) {
            while !records.is_empty() {
                self.client.read_tls(&mut records).unwrap();
                self.client.process_new_packets().unwrap();
                let _ = self.client.reader().read_to_end(&mut self.received);
            }
        }

        /// Completes the handshake, moving bytes in pieces of `chunk`.
        fn establish(chunk: usize, version: &'static SupportedProtocolVersion) -> (Pair, Buffers) {
            let mut p = Pair::new(version);
            let mut b = Buffers::default();
            while p.exchange(chunk, &mut b) {}
            assert!(!p.server.is_handshaking(), "{:?}", p.reads);
            (p, b)
        }

        /// What the client has queued for the server, as bytes.
        fn client_wire(&mut self) -> Vec<u8> {
            let mut wire = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut wire).unwrap();
            }
            wire
        }

        /// What the client decrypted since the last call.
        fn client_reads(&mut self) -> Vec<u8> {
            let _ = self.client.reader().read_to_end(&mut self.received);
            std::mem::take(&mut self.received)
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
        // What follows close_notify is ignored, garbage included.
        let (mut plain, mut flight) = (Vec::new(), Vec::new());
        let read = p
            .server
            .read(&mut [23, 3, 3, 0, 1, 0], &mut plain, &mut flight);
        assert!(matches!(read, Read::Open), "{read:?}");
        assert!(plain.is_empty() && flight.is_empty());
    }

    #[test]
    fn every_cipher_suite_carries_many_records_both_ways() {
        // Many records each way: a nonce built wrong, or an AEAD that
        // assumes the first record it seals is number 0, fails past the
        // first few (the handshake already used some sequence numbers).
        let cases = [
            (&rustls::version::TLS13, suite::TLS13_AES_128_GCM_SHA256),
            (&rustls::version::TLS13, suite::TLS13_AES_256_GCM_SHA384),
            (
                &rustls::version::TLS13,
                suite::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                &rustls::version::TLS12,
                suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS12,
                suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                &rustls::version::TLS12,
                suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ];
        for (version, cipher) in cases {
            let name = format!("{:?}", cipher.suite());
            let mut p = Pair::with_suite(version, &[cipher]);
            let mut b = Buffers::default();
            while p.exchange(700, &mut b) {}
            assert_eq!(p.client.negotiated_cipher_suite(), Some(cipher), "{name}");
            let mut sent = Vec::new();
            for i in 0..40u32 {
                let msg = format!("client record {i};").repeat(i as usize % 7 + 1);
                p.client.writer().write_all(msg.as_bytes()).unwrap();
                sent.extend_from_slice(msg.as_bytes());
                b.push(Bytes::from(format!("server {i};")), 0);
                // One send per frame: a record each.
                p.exchange(97, &mut b);
            }
            assert_eq!(p.plain, sent, "{name}: the client's records, in order");
            let expected: String = (0..40).map(|i| format!("server {i};")).collect();
            assert_eq!(p.client_reads(), expected.as_bytes(), "{name}");
            // One 40 KiB frame: three records.
            b.push(Bytes::from(vec![b'y'; 40 * 1024]), 0);
            p.exchange(4096, &mut b);
            assert_eq!(p.client_reads(), vec![b'y'; 40 * 1024], "{name}");
            assert_eq!(p.server.kept(), (0, 0), "{name}");
        }
    }

    #[test]
    fn records_split_at_every_position_after_the_handshake() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let sends = |p: &mut Pair| {
                for i in 0..3 {
                    p.client
                        .writer()
                        .write_all(format!("message {i}").as_bytes())
                        .unwrap();
                }
                p.client_wire()
            };
            let len = sends(&mut Pair::establish(5000, version).0).len();
            for cut in 0..=len {
                let mut q = Pair::establish(5000, version);
                let mut wire = sends(&mut q.0);
                assert_eq!(wire.len(), len);
                let (a, b) = wire.split_at_mut(cut);
                let mut flight = Vec::new();
                let mut plain = Vec::new();
                assert!(matches!(
                    q.0.server.read(a, &mut plain, &mut flight),
                    Read::Open
                ));
                assert!(matches!(
                    q.0.server.read(b, &mut plain, &mut flight),
                    Read::Open
                ));
                assert_eq!(plain, b"message 0message 1message 2", "cut at {cut}");
                assert!(flight.is_empty());
                assert_eq!(q.0.server.kept(), (0, 0));
            }
        }
    }

    #[test]
    fn data_right_behind_the_client_finished_is_read() {
        // The client writes before the handshake is done: its request
        // follows its Finished in the same receive, and is read by rustls
        // or by the record layer, whichever has the connection then.
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut p = Pair::new(version);
            let mut b = Buffers::default();
            p.client
                .writer()
                .write_all(b"GET /early HTTP/1.1\r\n\r\n")
                .unwrap();
            while p.exchange(100_000, &mut b) {}
            assert_eq!(p.plain, b"GET /early HTTP/1.1\r\n\r\n", "{version:?}");
        }
    }

    #[test]
    fn key_updates_both_ways() {
        let (mut p, mut b) = Pair::establish(512, &rustls::version::TLS13);
        // The client updates its keys and asks for ours: the server
        // answers with its own KeyUpdate, and data flows on.
        p.client.refresh_traffic_keys().unwrap();
        p.client
            .writer()
            .write_all(b"after the client's update")
            .unwrap();
        b.push(Bytes::from_static(b"answer"), 0);
        p.exchange(512, &mut b);
        assert_eq!(p.plain, b"after the client's update");
        p.exchange(512, &mut b);
        assert_eq!(p.client_reads(), b"answer");
        p.client.writer().write_all(b"; again").unwrap();
        p.exchange(512, &mut b);
        assert_eq!(p.plain, b"after the client's update; again");
        // The server's key wears out after two more records: it updates
        // on its own, and the client follows.
        let Layer::Records(records) = &mut p.server.layer else {
            panic!("established");
        };
        records.wear_tx_key(2);
        for i in 0..5 {
            b.push(Bytes::from(format!("[{i}]")), 0);
            p.exchange(512, &mut b);
        }
        assert_eq!(p.client_reads(), b"[0][1][2][3][4]");
        // TLS 1.2 cannot update: a worn key ends the connection.
        let (mut p, mut b) = Pair::establish(512, &rustls::version::TLS12);
        let Layer::Records(records) = &mut p.server.layer else {
            panic!("established");
        };
        records.wear_tx_key(1);
        b.push(Bytes::from_static(b"one"), 0);
        assert!(p.server.seal(&mut b, &mut Vec::new(), SEAL_BUDGET).is_ok());
        b.push(Bytes::from_static(b"two"), 0);
        assert!(matches!(
            p.server.seal(&mut b, &mut Vec::new(), SEAL_BUDGET),
            Err(RecordError::Exhausted)
        ));
    }

    #[test]
    fn bad_records_fail_with_their_alert() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // A flipped bit: bad_record_mac, told to the client encrypted.
            let (mut p, _) = Pair::establish(512, version);
            p.client.writer().write_all(b"hello").unwrap();
            let mut wire = p.client_wire();
            let last = wire.len() - 1;
            wire[last] ^= 1;
            let (mut plain, mut flight) = (Vec::new(), Vec::new());
            let read = p.server.read(&mut wire, &mut plain, &mut flight);
            assert!(
                matches!(
                    read,
                    Read::Failed(Failure::Records(RecordError::BadRecordMac))
                ),
                "{read:?}"
            );
            assert!(plain.is_empty());
            p.client.read_tls(&mut &flight[..]).unwrap();
            let e = p.client.process_new_packets().unwrap_err();
            assert_eq!(
                e,
                rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
                "{version:?}"
            );
            // Anything after a failure is ignored, and nothing is kept.
            assert!(matches!(
                p.server
                    .read(&mut [23, 3, 3, 0, 1, 0], &mut plain, &mut flight),
                Read::Open
            ));
            assert_eq!(p.server.kept(), (0, 0));
            // Records a server cannot get after the handshake.
            for (bytes, what) in [
                (&[20u8, 3, 3, 0, 1, 1][..], "change_cipher_spec"),
                (&[21, 3, 3, 0, 2, 2, 40][..], "a plaintext alert"),
                (&[23, 3, 3, 0x48, 0x01][..], "a record too long"),
                (&[23, 2, 0, 0, 20][..], "an SSL 2 header"),
                (&[23, 3, 3, 0, 3, 1, 2, 3][..], "a record too short"),
            ] {
                let (mut p, _) = Pair::establish(512, version);
                let mut flight = Vec::new();
                let read = p.server.read(&mut bytes.to_vec(), &mut plain, &mut flight);
                assert!(matches!(read, Read::Failed(_)), "{what}: {read:?}");
                assert!(!flight.is_empty(), "{what}: an alert goes back");
            }
        }
    }

    #[test]
    fn an_idle_session_rests_its_keys_and_wakes_on_traffic() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (mut p, mut b) = Pair::establish(512, version);
            let awake = |p: &Pair| match &p.server.layer {
                Layer::Records(r) => r.is_awake(),
                _ => panic!("established"),
            };
            // Busy since the handshake: the first pass only notes it.
            p.server.rest_if_idle();
            assert!(awake(&p));
            p.server.rest_if_idle();
            assert!(!awake(&p), "idle for a whole pass: rested");
            // Traffic either way wakes it, and records still line up.
            p.client.writer().write_all(b"ping").unwrap();
            b.push(Bytes::from_static(b"pong"), 0);
            p.exchange(512, &mut b);
            assert!(awake(&p));
            assert_eq!(p.plain, b"ping");
            assert_eq!(p.client_reads(), b"pong");
            p.server.rest_if_idle();
            assert!(awake(&p), "it was busy in this pass");
            p.server.rest_if_idle();
            b.push(Bytes::from_static(b"after a rest"), 0);
            p.exchange(512, &mut b);
            assert_eq!(p.client_reads(), b"after a rest");
        }
    }
}
