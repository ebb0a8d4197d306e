//! The record layer of an established TLS connection
//! (`shard::tls::records`, our own code after rustls's handshake): a real
//! rustls client completes a handshake (TLS 1.3 or 1.2), then the input
//! drives what it sends — application data, KeyUpdates, close_notify — and
//! how the bytes arrive: split anywhere, with bits flipped, with garbage
//! spliced in.
//!
//! Checked: nothing panics; the bytes kept for the next receive stay under
//! a record and a receive; once a read fails, what follows is ignored; and
//! when the input neither flipped nor spliced anything, every byte the
//! client wrote arrives, in order, with no failure — the oracle that an
//! unauthenticated-bytes fuzzer could not have.
//!
//! Input: byte 0 picks the version (even: 1.3, odd: 1.2); then operations
//! of one opcode byte and its arguments (see `Op`).
#![no_main]

use std::io::{Read as _, Write as _};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringcast::shard::tls::{Read, TlsConn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

fn cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(include_bytes!("../fixtures/cert.pem")).unwrap()
}

/// A fixed self-signed test certificate (fixtures/), for fuzzing only.
fn server_config() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../fixtures/key.pem")).unwrap();
        let mut c = ServerConfig::builder_with_provider(ringcast::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert()], key)
            .unwrap();
        c.enable_secret_extraction = true;
        Arc::new(c)
    })
}

fn client_config(tls12: bool) -> Arc<ClientConfig> {
    static CONFIGS: OnceLock<[Arc<ClientConfig>; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let make = |version| {
            let mut roots = RootCertStore::empty();
            roots.add(cert()).unwrap();
            Arc::new(
                ClientConfig::builder_with_provider(ringcast::tls::provider())
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        };
        [make(&rustls::version::TLS13), make(&rustls::version::TLS12)]
    });
    configs[usize::from(tls12)].clone()
}

/// The server under test and its peer.
struct Session {
    server: Box<TlsConn>,
    client: ClientConnection,
    /// Client bytes not yet handed to the server.
    wire: Vec<u8>,
    plain: Vec<u8>,
    failed: bool,
    peer_closed: bool,
}

impl Session {
    /// Moves the client's bytes to the server in pieces of `piece`, and
    /// what the server answers back.
    fn deliver(&mut self, piece: usize) {
        while self.client.wants_write() {
            self.client.write_tls(&mut self.wire).unwrap();
        }
        let mut wire = std::mem::take(&mut self.wire);
        let mut flight = Vec::new();
        for chunk in wire.chunks_mut(piece.max(1)) {
            let read = self.server.read(chunk, &mut self.plain, &mut flight);
            if self.failed || self.peer_closed {
                assert!(matches!(read, Read::Open), "read after the end: {read:?}");
                continue;
            }
            match read {
                Read::Failed(_) | Read::TooLarge | Read::PlaintextHttp => self.failed = true,
                Read::PeerClosed => self.peer_closed = true,
                Read::Open | Read::Established { .. } => {}
            }
            let (kept, _) = self.server.kept();
            assert!(kept <= 18_437 + 4096 + 255, "kept {kept} bytes");
        }
        // The client reads what the server sent; after corruption it may
        // well refuse it, which is not the server's failure.
        let mut rd = &flight[..];
        while !rd.is_empty() {
            if self.client.read_tls(&mut rd).is_err() || self.client.process_new_packets().is_err()
            {
                break;
            }
        }
        let _ = self.client.reader().read_to_end(&mut Vec::new());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&version, mut ops)) = data.split_first() else {
        return;
    };
    let client = ClientConnection::new(
        client_config(version % 2 == 1),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut s = Session {
        server: TlsConn::new(server_config()).unwrap(),
        client,
        wire: Vec::new(),
        plain: Vec::new(),
        failed: false,
        peer_closed: false,
    };
    for _ in 0..8 {
        s.deliver(4096);
    }
    assert!(
        !s.server.is_handshaking() && !s.failed,
        "the handshake completes"
    );

    let mut written = Vec::new();
    let mut tampered = false;
    let mut closed = false;
    let take = |ops: &mut &[u8]| -> u8 {
        let (&b, rest) = ops.split_first().unwrap_or((&0, &[]));
        *ops = rest;
        b
    };
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 6 {
            // Application data: n bytes (one record each write).
            0 => {
                let n = usize::from(take(&mut ops)) * 67;
                let msg: Vec<u8> = (0..n).map(|i| i as u8).collect();
                if !closed {
                    // rustls takes what fits in its buffer (64 KiB).
                    let n = s.client.writer().write(&msg).unwrap_or(0);
                    written.extend_from_slice(&msg[..n]);
                }
            }
            // A KeyUpdate asking for ours (TLS 1.3; an error on 1.2).
            1 => {
                let _ = s.client.refresh_traffic_keys();
            }
            // close_notify: what follows is ignored.
            2 => {
                if !closed {
                    s.client.send_close_notify();
                    closed = true;
                }
            }
            // Garbage spliced into the wire.
            3 => {
                let n = usize::from(take(&mut ops) % 32);
                let garbage: Vec<u8> = (0..n).map(|_| take(&mut ops)).collect();
                while s.client.wants_write() {
                    s.client.write_tls(&mut s.wire).unwrap();
                }
                s.wire.extend_from_slice(&garbage);
                tampered |= n > 0;
            }
            // A bit flipped in what is pending.
            4 => {
                while s.client.wants_write() {
                    s.client.write_tls(&mut s.wire).unwrap();
                }
                let at = usize::from(u16::from_be_bytes([take(&mut ops), take(&mut ops)]));
                let bit = take(&mut ops) % 8;
                if !s.wire.is_empty() {
                    let at = at % s.wire.len();
                    s.wire[at] ^= 1 << bit;
                    tampered = true;
                }
            }
            // Delivery in pieces of any size.
            _ => {
                let piece = usize::from(take(&mut ops)) + 1;
                s.deliver(piece);
            }
        }
    }
    s.deliver(usize::MAX);
    if !tampered {
        assert!(!s.failed, "an honest peer's records fail");
        assert_eq!(s.plain.len(), written.len());
        assert!(s.plain == written, "the plaintext arrives in order");
        assert_eq!(s.peer_closed, closed);
    }
});
