//! The TLS layer of a connection (`shard::tls::TlsConn`): arbitrary bytes,
//! in pieces of any size, from a peer on a TLS listener. Nothing may
//! panic (rustls included: driving it again after an error tripped one of
//! its debug assertions in the unit tests), the bytes kept for the next
//! receive stay bounded, and once a read reports a failure the connection
//! ignores what follows.
//!
//! Input: byte 0 is the piece size (0: everything at once); the rest is
//! what the peer sends. `seeds/tls/` holds real ClientHellos (TLS 1.3 and
//! 1.2, from Python's ssl) to start from.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringcast::shard::tls::{Read, TlsConn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// A fixed self-signed test certificate (fixtures/), for fuzzing only.
fn config() -> &'static Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let cert = CertificateDer::from_pem_slice(include_bytes!("../fixtures/cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../fixtures/key.pem")).unwrap();
        let mut c = ServerConfig::builder_with_provider(ringcast::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        c.enable_secret_extraction = true;
        Arc::new(c)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = if piece == 0 {
        rest.len().max(1)
    } else {
        usize::from(piece)
    };
    let mut conn = TlsConn::new(config()).unwrap();
    let (mut plain, mut flight) = (Vec::new(), Vec::new());
    let mut bytes = rest.to_vec();
    let mut failed = false;
    for chunk in bytes.chunks_mut(piece) {
        let read = conn.read(chunk, &mut plain, &mut flight);
        if failed {
            assert!(matches!(read, Read::Open), "read after a failure: {read:?}");
            continue;
        }
        failed = matches!(read, Read::Failed(_) | Read::TooLarge | Read::PlaintextHttp);
        let (kept, _) = conn.kept();
        assert!(kept <= 32 * 1024 + 255, "kept {kept} bytes");
    }
    // Before any key exchange completes, no application data can appear.
    if conn.is_handshaking() {
        assert!(plain.is_empty());
    }
});
