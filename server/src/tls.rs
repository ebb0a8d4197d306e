//! TLS for the node (`--listen-tls`, `--tls-cert`, `--tls-key`): the
//! rustls configuration every shard's sessions start from, and the
//! certificate it serves, reloaded on SIGHUP.
//!
//! The sessions themselves are driven by the shards (`shard::tls`); this
//! module is what they share, read-only but for the certificate, which a
//! reload swaps atomically: a handshake reads the current one once
//! (`CertStore::resolve`), so connections already open keep theirs and new
//! handshakes get the new one, and no shard ever waits for the file I/O.
//!
//! The crypto provider is aws-lc-rs (rustls's default) because it offers
//! the post-quantum hybrid key exchange browsers now use (X25519MLKEM768),
//! which ring does not: traffic recorded today stays safe from a future
//! quantum computer. Measured: with the same key exchange its handshakes
//! cost 20–40 % less CPU than ring's (in memory, in the TLS design study
//! behind docs/benchmarks.md's TLS section); end to end the hybrid
//! exchange costs more than ring's X25519 alone (0.27 against 0.22–0.25
//! ms of node CPU per full handshake), and an idle session
//! holds about 100 bytes more (4.3 against 4.2 KB). Switching is a change
//! of feature and of [`provider`].

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::TlsFiles;

/// Why the certificate could not be loaded, naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider of every TLS session (see the module docs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What every shard's TLS sessions share.
#[derive(Debug, Clone)]
pub struct TlsContext {
    /// TLS 1.3 and 1.2, ALPN `http/1.1`, no client certificates, no early
    /// data; session tickets if asked.
    pub config: Arc<ServerConfig>,
    /// The certificate handshakes get, and its reloads.
    pub certs: Arc<CertStore>,
}

impl TlsContext {
    /// Loads the certificate and builds the configuration; fails with a
    /// message naming the file and the problem.
    pub fn load(files: &TlsFiles, tickets: bool) -> Result<TlsContext, TlsError> {
        let provider = provider();
        let certs = Arc::new(CertStore::load(files, provider.clone())?);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // After the handshake the shard's own record layer takes the keys
        // over (`shard::tls::records`): what keeps idle connections small.
        config.enable_secret_extraction = true;
        config.max_early_data_size = 0;
        // No per-session state on the node: resumption is by ticket only.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        if tickets {
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| TlsError(format!("TLS session tickets: {e}")))?;
            config.send_tls13_tickets = 1;
        } else {
            config.send_tls13_tickets = 0;
        }
        Ok(TlsContext {
            config: Arc::new(config),
            certs,
        })
    }
}

/// The certificate new handshakes get; swapped by [`CertStore::reload`].
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// Reloads that worked.
    pub reloads: AtomicU64,
    /// Reloads that failed (the old certificate stayed).
    pub reload_failures: AtomicU64,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Reads `files`.
    pub fn load(files: &TlsFiles, provider: Arc<CryptoProvider>) -> Result<CertStore, TlsError> {
        let key = load_certified_key(files, &provider)?;
        Ok(CertStore {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Re-reads the files: on success new handshakes get the new
    /// certificate (returned: a line for the log); on error the current one
    /// stays. Counted either way.
    pub fn reload(&self) -> Result<String, TlsError> {
        match load_certified_key(&self.files, &self.provider) {
            Ok(key) => {
                let line = describe(&key);
                self.current.store(Arc::new(key));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(line)
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The certificate handshakes get now, described for the banner.
    pub fn describe(&self) -> String {
        describe(&self.current.load())
    }

    /// Reloads that worked and that failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reload_failures.load(Ordering::Relaxed),
        )
    }
}

/// "a chain of 2 certificates (12345 bytes)".
fn describe(key: &CertifiedKey) -> String {
    let bytes: usize = key.cert.iter().map(|c| c.len()).sum();
    let n = key.cert.len();
    let s = if n == 1 { "" } else { "s" };
    format!("a chain of {n} certificate{s}, {bytes} bytes")
}

/// Reads a PEM chain and its key, and checks the key belongs to the leaf.
pub fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let named = |path: &Path, e: &dyn fmt::Display| TlsError(format!("{}: {e}", path.display()));
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| named(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(named(&files.cert, &"no CERTIFICATE in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| named(&files.key, &e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError(format!(
            "the key in {} does not belong to the certificate in {}",
            files.key.display(),
            files.cert.display()
        )),
        e => named(&files.key, &e),
    })
}
