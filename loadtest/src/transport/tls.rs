//! TLS under a client connection (`wss://`, `https://`), sans-io, between
//! the socket's bytes and the transport's state ([`super::Proto`]).
//!
//! ```text
//! receive (provided buffer) ─▶ TlsConn::read ─┬─ plaintext ─▶ Proto::on_bytes
//!                                             └─ handshake records, alerts ─▶ send queue
//! Proto's requests, pongs ─▶ TlsConn::seal ─▶ records ─▶ send queue
//! ```
//!
//! It runs rustls's *unbuffered* client: rustls keeps no buffer of TLS
//! bytes received or to send, decrypts in the bytes it is given, and
//! encrypts into ours. What it has not consumed of a receive — a record cut by the
//! receive's end, or handshake fragments it still points into — waits in
//! the connection's spill, which is empty (no heap) whenever nothing is
//! pending, so an idle connection holds its session state and nothing
//! else. The loop is the one the node's TLS design studied
//! (`process_tls_records` until it needs more input), with its rule:
//! **never call `process_tls_records(&mut [])` while rustls retains
//! bytes** (rustls 0.23.46 panics); always pass the retained bytes.
//!
//! The connect chain sends the ClientHello ([`TlsConn::new`] makes it); the
//! subscription's first request is sealed once the handshake completes.

use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion};

/// Largest plaintext per record (RFC 8446 §5.1; rustls's default fragment size).
const MAX_RECORD_PLAIN: usize = 16 * 1024;
/// Most a record adds to its plaintext (TLS 1.2 AES-GCM: 29 B).
const RECORD_OVERHEAD: usize = 32;
/// Kept bytes allowed while handshaking: the server's flight is kept until
/// each handshake message is whole (rustls allows one of up to 64 KiB).
const MAX_SPILL_HANDSHAKE: usize = 64 * 1024 + 18_437;
/// After the handshake: one largest legal record (2^14 + 2048 + 5 B) and
/// the receive that completes it.
const MAX_SPILL: usize = 18_437 + 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    Fresh,
    Handshaking,
    Open,
    /// An error ended it; input is ignored.
    Failed,
}

/// One connection's TLS session. Boxed, in the worker's side table, and
/// only while the connection exists.
pub struct TlsConn {
    session: UnbufferedClientConnection,
    /// Received bytes rustls has not discarded. Empty — no heap — otherwise.
    spill: Vec<u8>,
    phase: Phase,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("phase", &self.phase)
            .field("spill", &self.spill.len())
            .finish_non_exhaustive()
    }
}

/// The handshake's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    /// TLS 1.2 or 1.3.
    pub version: ProtocolVersion,
    /// The server accepted a ticket or session from an earlier connection.
    pub resumed: bool,
}

/// Why a TLS connection ended.
#[derive(Debug)]
pub enum End {
    /// The server sent `close_notify`: end of input.
    PeerClosed,
    /// A TLS error; its alert, if any, is in the flight. Close after sending it.
    Failed(rustls::Error),
    /// The server answered in plaintext HTTP: the URL names a plaintext port.
    PlaintextHttp,
    /// More kept bytes than a valid server can have outstanding.
    TooLarge,
}

/// What one receive did. Decrypted bytes are in the caller's `plain`,
/// records to send in its `flight`; handle `established` first (it lets the
/// request go), then the plaintext, then `end`.
#[derive(Debug, Default)]
pub struct Read {
    /// The handshake completed during this receive.
    pub established: Option<Established>,
    /// The connection is over.
    pub end: Option<End>,
}

impl TlsConn {
    /// A session to `name`; its ClientHello is appended to `hello`.
    pub fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        hello: &mut Vec<u8>,
    ) -> Result<Box<TlsConn>, rustls::Error> {
        let mut conn = Box::new(TlsConn {
            session: UnbufferedClientConnection::new(config, name)?,
            spill: Vec::new(),
            phase: Phase::Fresh,
        });
        // Nothing is retained before the first byte arrives: the one place
        // an empty input is allowed. It yields the ClientHello.
        let d = drive(&mut conn.session, &mut [], &mut Vec::new(), hello);
        match d.error {
            Some(e) => Err(e),
            None => Ok(conn),
        }
    }

    /// Still before the end of the handshake.
    pub fn is_handshaking(&self) -> bool {
        self.phase != Phase::Open
    }

    /// One receive (`data`: the received bytes, decrypted in place).
    pub fn read(&mut self, data: &mut [u8], plain: &mut Vec<u8>, flight: &mut Vec<u8>) -> Read {
        let mut read = Read::default();
        match self.phase {
            Phase::Failed => return read,
            Phase::Fresh => {
                self.phase = Phase::Handshaking;
                // A TLS server answers with a handshake record (0x16) or an
                // alert (0x15), never with "HTTP/1.1 400 …".
                if data.starts_with(b"HTTP/") {
                    self.phase = Phase::Failed;
                    read.end = Some(End::PlaintextHttp);
                    return read;
                }
            }
            Phase::Handshaking | Phase::Open => {}
        }
        let outcome = if self.spill.is_empty() {
            let d = drive(&mut self.session, data, plain, flight);
            if d.used < data.len() {
                self.spill.extend_from_slice(&data[d.used..]);
            }
            d
        } else {
            let mut spill = std::mem::take(&mut self.spill);
            spill.extend_from_slice(data);
            let d = drive(&mut self.session, &mut spill, plain, flight);
            if d.used < spill.len() {
                spill.drain(..d.used);
                self.spill = spill;
            }
            // else dropped: an idle connection keeps no receive memory.
            d
        };
        if self.phase == Phase::Handshaking && !self.session.is_handshaking() {
            self.phase = Phase::Open;
            read.established = Some(Established {
                version: self
                    .session
                    .protocol_version()
                    .unwrap_or(ProtocolVersion::TLSv1_3),
                resumed: self.session.handshake_kind() == Some(HandshakeKind::Resumed),
            });
        }
        if let Some(e) = outcome.error {
            self.phase = Phase::Failed;
            self.spill = Vec::new();
            read.end = Some(End::Failed(e));
            return read;
        }
        let limit = match self.phase {
            Phase::Open => MAX_SPILL,
            _ => MAX_SPILL_HANDSHAKE,
        };
        if self.spill.len() > limit {
            self.phase = Phase::Failed;
            self.spill = Vec::new();
            read.end = Some(End::TooLarge);
        } else if outcome.peer_closed {
            read.end = Some(End::PeerClosed);
        }
        read
    }

    /// Encrypts `plain` (a request, a pong) and appends its records to
    /// `out`, behind anything rustls has queued to go first (a KeyUpdate).
    /// `Ok(false)`: nothing can be sent yet (handshaking) or any more.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<bool, EncryptError> {
        if self.phase != Phase::Open {
            return Ok(false);
        }
        loop {
            // The retained bytes, never `&mut []` (see the module docs).
            // Every complete record was processed by `read`, so rustls finds
            // nothing new in them and discards nothing; a discard is honoured
            // all the same.
            let UnbufferedStatus { discard, state } =
                self.session.process_tls_records(&mut self.spill);
            let done = match state {
                Ok(ConnectionState::WriteTraffic(mut w)) => Some(encrypt_into(&mut w, plain, out)),
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(out, |b| e.encode(b));
                    None
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    None
                }
                _ => Some(Ok(false)),
            };
            self.spill.drain(..discard.min(self.spill.len()));
            if self.spill.is_empty() {
                self.spill = Vec::new();
            }
            if let Some(r) = done {
                return r;
            }
        }
    }

    /// Bytes waiting in the spill (tests: nothing may stay behind).
    #[cfg(test)]
    fn spill_capacity(&self) -> usize {
        self.spill.capacity()
    }
}

/// What [`drive`] did.
struct Drive {
    /// Bytes rustls discarded; the rest must come again, in front of the
    /// next receive.
    used: usize,
    peer_closed: bool,
    error: Option<rustls::Error>,
}

/// Runs rustls over `buf` until it needs more input: decrypted data goes
/// to `plain`, records to send to `flight`.
fn drive(
    tls: &mut UnbufferedClientConnection,
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
                // rustls has usually queued a fatal alert: send it. With the
                // retained bytes, not an empty slice (that panics).
                drain_alert(tls, &mut buf[start..], flight);
                return Drive {
                    used: start,
                    peer_closed,
                    error: Some(e),
                };
            }
        };
        let stop = match state {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    match rec {
                        Ok(rec) => {
                            discard += rec.discard;
                            plain.extend_from_slice(rec.payload);
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
            // What was encoded is in `flight`: the caller sends it.
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
            // ReadEarlyData (servers only) or a state of a later rustls.
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

/// After an error: encodes the alert rustls queued, if any.
fn drain_alert(tls: &mut UnbufferedClientConnection, rest: &mut [u8], flight: &mut Vec<u8>) {
    for _ in 0..4 {
        match tls.process_tls_records(rest).state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => encode_into(flight, |b| e.encode(b)),
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            _ => return,
        }
    }
}

/// Appends what `f` encodes to `out`, growing it when rustls asks for more.
fn encode_into(out: &mut Vec<u8>, mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let at = out.len();
    out.resize(at + 4096, 0);
    let n = match f(&mut out[at..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(at + required_size, 0);
            f(&mut out[at..]).unwrap_or(0)
        }
        Err(EncodeError::AlreadyEncoded) => 0,
    };
    out.truncate(at + n);
}

/// Appends the records of `plain` to `out`. There is no public
/// "encrypted length": size with a bound, and grow to what rustls asks
/// when it put something in front (a KeyUpdate).
fn encrypt_into(
    w: &mut WriteTraffic<'_, ClientConnectionData>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, EncryptError> {
    let at = out.len();
    out.resize(
        at + plain.len() + (plain.len() / MAX_RECORD_PLAIN + 1) * RECORD_OVERHEAD,
        0,
    );
    let r = match w.encrypt(plain, &mut out[at..]) {
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(at + required_size, 0);
            w.encrypt(plain, &mut out[at..])
        }
        r => r,
    };
    match r {
        Ok(n) => {
            out.truncate(at + n);
            Ok(true)
        }
        Err(e) => {
            out.truncate(at);
            Err(e)
        }
    }
}

/// The name a TLS failure is counted under in the error table.
pub fn error_label(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let s = match e {
        E::InvalidCertificate(C::UnknownIssuer) => "certificate_unknown_issuer",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "certificate_not_valid_for_name"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "certificate_expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate_not_valid_yet"
        }
        E::InvalidCertificate(_) => "bad_certificate",
        E::AlertReceived(a) => return format!("tls_alert_{}", snake(&format!("{a:?}"))),
        E::InvalidMessage(_) => "invalid_message",
        E::PeerIncompatible(_) => "peer_incompatible",
        E::PeerMisbehaved(_) => "peer_misbehaved",
        E::DecryptError => "decrypt_error",
        E::NoApplicationProtocol => "no_application_protocol",
        E::PeerSentOversizedRecord => "oversized_record",
        E::HandshakeNotComplete => "handshake_not_complete",
        _ => "error",
    };
    format!("tls_{s}")
}

/// The name an encryption failure is counted under.
pub fn encrypt_label(e: &EncryptError) -> &'static str {
    match e {
        EncryptError::EncryptExhausted => "tls_encrypt_exhausted",
        _ => "tls_encrypt_failed",
    }
}

/// `HandshakeFailure` → `handshake_failure`.
fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    //! The client layer against rustls's buffered *server*, in memory: the
    //! server's bytes reach the client split at every position, one byte
    //! at a time, and in large records; resumption on and off; TLS 1.2 and
    //! 1.3; and what a wrong certificate, a plaintext port or garbage does.

    use super::*;
    use crate::tls::{Client, TlsVersion, Trust};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{RootCertStore, ServerConfig, ServerConnection};
    use std::io::{Read as _, Write as _};
    use std::sync::OnceLock;

    /// A test CA and a leaf for `localhost` and `127.0.0.1` it signed.
    pub(crate) struct Pki {
        pub ca: CertificateDer<'static>,
        pub ca_pem: String,
        pub chain: Vec<CertificateDer<'static>>,
        pub key_der: Vec<u8>,
    }

    /// Made once per test process (key generation is the slow part).
    pub(crate) fn pki() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| make_pki("ringcast-load test CA"))
    }

    pub(crate) fn make_pki(cn: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        Pki {
            ca: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().clone()],
            key_der: leaf_key.serialize_der(),
        }
    }

    fn server_config(pki: &Pki, version: Option<TlsVersion>) -> Arc<ServerConfig> {
        let versions = crate::tls::versions(version);
        let key = PrivateKeyDer::Pkcs8(pki.key_der.clone().into());
        Arc::new(
            ServerConfig::builder_with_provider(crate::tls::provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(pki.chain.clone(), key)
                .unwrap(),
        )
    }

    fn trusting(ca: &CertificateDer<'static>) -> Trust {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        Trust::Roots(Arc::new(roots))
    }

    fn client(version: Option<TlsVersion>, resume: bool) -> Client {
        Client::new(trusting(&pki().ca), version, resume).unwrap()
    }

    fn localhost() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    const REQUEST: &[u8] = b"GET /ws/c HTTP/1.1\r\nHost: localhost\r\n\r\n";

    /// What the server answers: a head and frames over several records.
    fn response() -> Vec<u8> {
        let mut r = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        for i in 0..3u8 {
            r.extend([0x81, 5, b'h', b'e', b'l', b'l', b'0' + i]);
        }
        r
    }

    /// One conversation's result.
    #[derive(Debug, Default)]
    struct Talk {
        established: Vec<Established>,
        plain: Vec<u8>,
        peer_closed: bool,
        failed: Option<String>,
        /// Server → client bytes in all.
        stream_len: usize,
        spill_after: usize,
    }

    /// Where the server's byte stream is cut before it reaches the client
    /// (besides where the conversation's turns cut it anyway).
    #[derive(Debug, Clone, Copy)]
    enum Cut {
        /// Nowhere.
        No,
        /// At this absolute position.
        At(usize),
        /// At every multiple of this.
        Every(usize),
    }

    impl Cut {
        /// The end of the next piece from `fed`, with `len` bytes there.
        fn next(self, fed: usize, len: usize) -> usize {
            let k = match self {
                Cut::No => len,
                Cut::At(k) if k > fed => k,
                Cut::At(_) => len,
                Cut::Every(p) => (fed / p + 1) * p,
            };
            k.min(len)
        }
    }

    /// A conversation in memory: handshake, the client's request, the
    /// server's `answer` (written in pieces of `write_sizes`, each its own
    /// records), `close_notify`. The server's bytes reach the client cut
    /// as `cut` says, and otherwise as they come.
    fn talk(
        client_cfg: Arc<ClientConfig>,
        server_cfg: Arc<ServerConfig>,
        answer: &[u8],
        write_sizes: usize,
        cut: Cut,
    ) -> Talk {
        let mut hello = Vec::new();
        let mut c = TlsConn::new(client_cfg, localhost(), &mut hello).unwrap();
        let mut s = ServerConnection::new(server_cfg).unwrap();
        s.set_buffer_limit(None);
        let mut t = Talk::default();
        let mut c2s = hello;
        let mut s2c: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut request = Vec::new();
        let mut answered = false;
        for _round in 0..100_000 {
            // The server takes everything the client sent.
            let mut rd = &c2s[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                if let Err(e) = s.process_new_packets() {
                    t.failed = Some(format!("server: {e}"));
                    break;
                }
            }
            c2s.clear();
            let mut buf = [0u8; 4096];
            loop {
                match s.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if !answered && request.ends_with(b"\r\n\r\n") {
                assert_eq!(request, REQUEST);
                answered = true;
                for piece in answer.chunks(write_sizes.max(1)) {
                    s.writer().write_all(piece).unwrap();
                }
                s.send_close_notify();
            }
            while s.wants_write() {
                s.write_tls(&mut s2c).unwrap();
            }
            if fed == s2c.len() {
                break;
            }
            let end = cut.next(fed, s2c.len());
            let mut piece = s2c[fed..end].to_vec();
            fed = end;
            let mut plain = Vec::new();
            let mut flight = Vec::new();
            let r = c.read(&mut piece, &mut plain, &mut flight);
            c2s.extend_from_slice(&flight);
            if let Some(e) = r.established {
                t.established.push(e);
                assert!(c.seal(REQUEST, &mut c2s).unwrap());
            }
            t.plain.extend_from_slice(&plain);
            match r.end {
                None => {}
                Some(End::PeerClosed) => t.peer_closed = true,
                Some(e) => {
                    t.failed = Some(format!("{e:?}"));
                    break;
                }
            }
        }
        t.stream_len = s2c.len();
        t.spill_after = c.spill_capacity();
        t
    }

    fn check(t: &Talk, answer: &[u8], resumed: bool, version: ProtocolVersion, what: &str) {
        assert_eq!(t.failed, None, "{what}");
        assert_eq!(t.established, [Established { version, resumed }], "{what}");
        assert!(t.plain == answer, "{what}: plaintext differs");
        assert!(t.peer_closed, "{what}: no close_notify seen");
        assert_eq!(t.spill_after, 0, "{what}: bytes left in the spill");
    }

    /// The server's bytes split at every position, and fed a byte at a
    /// time: the same handshake, the same plaintext, the spill empty at
    /// the end. TLS 1.3 (X25519MLKEM768: the flight spans several
    /// receives anyway) and TLS 1.2.
    #[test]
    fn a_conversation_split_anywhere_gives_the_same_plaintext() {
        let answer = response();
        for (version, want) in [
            (Some(TlsVersion::V13), ProtocolVersion::TLSv1_3),
            (Some(TlsVersion::V12), ProtocolVersion::TLSv1_2),
        ] {
            let cfg = client(version, false).worker_config(16);
            let scfg = server_config(pki(), version);
            let whole = talk(cfg.clone(), scfg.clone(), &answer, 1 << 20, Cut::No);
            check(&whole, &answer, false, want, "whole");
            if want == ProtocolVersion::TLSv1_3 {
                // X25519MLKEM768: the ServerHello alone carries 1,120 bytes of
                // key share, so the flight spans several receives.
                assert!(whole.stream_len > 1_500, "{}", whole.stream_len);
            }
            for k in 1..whole.stream_len {
                let t = talk(cfg.clone(), scfg.clone(), &answer, 1 << 20, Cut::At(k));
                check(&t, &answer, false, want, &format!("{version:?} split {k}"));
            }
            let t = talk(cfg.clone(), scfg.clone(), &answer, 1 << 20, Cut::Every(1));
            check(
                &t,
                &answer,
                false,
                want,
                &format!("{version:?} byte by byte"),
            );
        }
    }

    /// Records of 16 KiB arriving in receive-sized pieces (and odd ones):
    /// the spill holds a record until it is whole, and lets it go.
    #[test]
    fn large_records_in_small_pieces() {
        let mut answer = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        answer.extend((0..70_000u32).map(|i| (i % 251) as u8));
        let cfg = client(None, false).worker_config(16);
        let scfg = server_config(pki(), None);
        for piece in [4096usize, 1000, 512, 17] {
            // Written at once (16 KiB records) and in odd sizes.
            for writes in [1 << 20, 5_000] {
                let t = talk(
                    cfg.clone(),
                    scfg.clone(),
                    &answer,
                    writes,
                    Cut::Every(piece),
                );
                check(
                    &t,
                    &answer,
                    false,
                    ProtocolVersion::TLSv1_3,
                    &format!("pieces of {piece}, writes of {writes}"),
                );
            }
        }
    }

    /// With resumption on, the second connection of a worker resumes
    /// (TLS 1.3 ticket, TLS 1.2 session); off, it handshakes in full.
    #[test]
    fn resumption_on_and_off() {
        let answer = response();
        for version in [None, Some(TlsVersion::V12)] {
            let want = match version {
                Some(TlsVersion::V12) => ProtocolVersion::TLSv1_2,
                _ => ProtocolVersion::TLSv1_3,
            };
            let scfg = server_config(pki(), version);
            for resume in [true, false] {
                let cfg = client(version, resume).worker_config(16);
                let first = talk(cfg.clone(), scfg.clone(), &answer, 1 << 20, Cut::No);
                check(&first, &answer, false, want, "first");
                for i in 0..3 {
                    let again = talk(cfg.clone(), scfg.clone(), &answer, 1 << 20, Cut::No);
                    check(
                        &again,
                        &answer,
                        resume,
                        want,
                        &format!("again {i}, {version:?}"),
                    );
                }
            }
        }
    }

    /// A certificate from another CA, or for another name, fails the
    /// handshake with its own label and an alert to the server; with
    /// `--insecure` the same certificate is accepted.
    #[test]
    fn certificates_are_checked_unless_insecure() {
        let other = make_pki("another CA");
        let scfg = server_config(&other, None);
        let answer = response();
        let strict = client(None, false).worker_config(16);
        let t = talk(strict, scfg.clone(), &answer, 1 << 20, Cut::No);
        let failed = t.failed.unwrap();
        assert!(failed.contains("UnknownIssuer"), "{failed}");
        let insecure = Client::new(Trust::Anything, None, false).unwrap();
        let t = talk(insecure.worker_config(16), scfg, &answer, 1 << 20, Cut::No);
        check(&t, &answer, false, ProtocolVersion::TLSv1_3, "insecure");

        // Another name: the handshake fails where the name is checked.
        let mut hello = Vec::new();
        let name = ServerName::try_from("push.example").unwrap();
        let cfg = client(None, false).worker_config(16);
        let mut c = TlsConn::new(cfg, name, &mut hello).unwrap();
        let mut s = ServerConnection::new(server_config(pki(), None)).unwrap();
        s.read_tls(&mut &hello[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut flight_in = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut flight_in).unwrap();
        }
        let (mut plain, mut flight) = (Vec::new(), Vec::new());
        let r = c.read(&mut flight_in, &mut plain, &mut flight);
        let Some(End::Failed(e)) = r.end else {
            panic!("{r:?}")
        };
        assert_eq!(error_label(&e), "tls_certificate_not_valid_for_name");
        // (Encrypted with the handshake keys in TLS 1.3: an opaque record.)
        assert!(!flight.is_empty(), "the client tells the server why");
        // Ignored from now on.
        let r = c.read(&mut [0x17, 3, 3, 0, 1, 0], &mut plain, &mut flight);
        assert!(r.end.is_none() && r.established.is_none());
    }

    /// A plaintext port, garbage, and garbage after a partial record
    /// (rustls then retains bytes: draining its alert must pass them, not
    /// an empty slice, which panics in rustls 0.23.46).
    #[test]
    fn what_is_not_tls_fails_cleanly() {
        let cfg = client(None, false).worker_config(16);
        let fresh = || TlsConn::new(cfg.clone(), localhost(), &mut Vec::new()).unwrap();
        let (mut plain, mut flight) = (Vec::new(), Vec::new());

        let mut c = fresh();
        let r = c.read(
            &mut b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            &mut plain,
            &mut flight,
        );
        assert!(matches!(r.end, Some(End::PlaintextHttp)), "{r:?}");

        let mut c = fresh();
        let mut garbage = vec![0x16, 3, 3, 0, 5, 1, 2, 3, 4, 5];
        let r = c.read(&mut garbage, &mut plain, &mut flight);
        assert!(matches!(r.end, Some(End::Failed(_))), "{r:?}");

        // A whole record holding the start of a ServerHello (rustls keeps
        // it, and points into it), then a record that ends the message in
        // junk: the error comes while rustls retains bytes.
        let mut bytes = vec![0x16, 3, 3, 0, 46, 2, 0, 0, 44, 3, 3];
        bytes.extend([0xee; 40]);
        bytes.extend([0x16, 3, 3, 0, 2, 0xee, 0xee]);
        for split in 1..bytes.len() {
            let mut c = fresh();
            let mut data = bytes.clone();
            flight.clear();
            let (a, b) = data.split_at_mut(split);
            let r1 = c.read(a, &mut plain, &mut flight);
            assert!(r1.end.is_none(), "{split}: {r1:?}");
            let r2 = c.read(b, &mut plain, &mut flight);
            assert!(matches!(r2.end, Some(End::Failed(_))), "{split}: {r2:?}");
            assert!(c.seal(b"x", &mut Vec::new()).is_ok_and(|sent| !sent));
        }
        assert!(plain.is_empty());
    }

    /// Nothing can be sealed before the handshake completes.
    #[test]
    fn nothing_is_sealed_while_handshaking() {
        let cfg = client(None, true).worker_config(16);
        let mut hello = Vec::new();
        let mut c = TlsConn::new(cfg, localhost(), &mut hello).unwrap();
        assert_eq!(hello[0], 0x16, "a handshake record");
        // X25519MLKEM768 and X25519 key shares: well over one small receive.
        assert!(hello.len() > 1_000, "{}", hello.len());
        let mut out = Vec::new();
        assert!(matches!(c.seal(REQUEST, &mut out), Ok(false)));
        assert!(out.is_empty());
        assert!(c.is_handshaking());
    }

    /// A plaintext connection pays one pointer in the worker's side table
    /// (and only in TLS fleets); the session itself is boxed.
    #[test]
    fn the_side_table_holds_a_pointer() {
        assert_eq!(std::mem::size_of::<Option<Box<TlsConn>>>(), 8);
        eprintln!("size_of::<TlsConn>() = {}", std::mem::size_of::<TlsConn>());
    }

    #[test]
    fn labels() {
        assert_eq!(snake("HandshakeFailure"), "handshake_failure");
        assert_eq!(
            error_label(&rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            "tls_alert_handshake_failure"
        );
        assert_eq!(
            error_label(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            "tls_certificate_unknown_issuer"
        );
    }
}
