//! TLS configuration for `wss://` and `https://` targets: whom to trust
//! (`--ca`, or `--insecure`), which versions to offer (`--tls-version`),
//! whether to resume (`--tls-resume`), and the server name (the URL's
//! host, or `--tls-server-name`). The per-connection layer is
//! [`crate::transport::tls`]; the publisher uses rustls's buffered
//! connection (see [`crate::publish`]).
//!
//! Everything is built on rustls with the aws-lc-rs provider and
//! post-quantum key exchange preferred — what the node uses, so a handshake
//! measured here is the handshake a browser makes with it — and always with
//! [`ClientConfig::builder_with_provider`]: `ClientConfig::builder()`
//! panics when two providers end up in one build.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};

/// A TLS version to offer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[value(name = "1.2")]
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3.
    #[value(name = "1.3")]
    #[serde(rename = "1.3")]
    V13,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// The crypto provider: aws-lc-rs, key exchange X25519MLKEM768 first.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The versions to offer: both (the server chooses), or one.
pub fn versions(v: Option<TlsVersion>) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static V13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static V12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    match v {
        None => &BOTH,
        Some(TlsVersion::V13) => &V13,
        Some(TlsVersion::V12) => &V12,
    }
}

/// Whom to trust.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates that chain to one of these roots and name the server.
    Roots(Arc<RootCertStore>),
    /// Anything (`--insecure`).
    Anything,
}

impl Trust {
    /// The CA certificates in a PEM file (`--ca`).
    pub fn from_pem_file(path: &Path) -> Result<Trust, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--ca {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca {}: no CERTIFICATE block in the file",
                path.display()
            ));
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "--ca {}: none of its {ignored} certificate(s) could be used as a trust anchor",
                path.display()
            ));
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }
}

/// How a run's TLS is set up, for its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mode {
    /// The only version offered; `None`: 1.3 and 1.2.
    pub version: Option<TlsVersion>,
    /// Tickets and sessions are kept and offered again.
    pub resumption: bool,
    /// Certificates are verified (`--ca`); false with `--insecure`.
    pub verified: bool,
}

impl Mode {
    /// One line: `TLS 1.3/1.2, resumption on, certificates verified`.
    pub fn describe(&self) -> String {
        format!(
            "TLS {}, resumption {}, {}",
            match self.version {
                None => "1.3/1.2",
                Some(TlsVersion::V13) => "1.3 only",
                Some(TlsVersion::V12) => "1.2 only",
            },
            if self.resumption { "on" } else { "off" },
            if self.verified {
                "certificates verified against --ca"
            } else {
                "certificates NOT verified (--insecure)"
            }
        )
    }
}

/// A run's TLS client: the configuration its connections share.
#[derive(Debug)]
pub struct Client {
    /// Without a session store: each worker gets its own
    /// ([`Client::worker_config`]).
    config: ClientConfig,
    /// What the report says about it.
    pub mode: Mode,
}

impl Client {
    /// Offers `version` (or both), trusts `trust`, resumes or not.
    pub fn new(trust: Trust, version: Option<TlsVersion>, resume: bool) -> Result<Client, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(version))
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let verified = matches!(trust, Trust::Roots(_));
        let mut config = match trust {
            Trust::Roots(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
            Trust::Anything => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(
                    DangerousAcceptAnyServerCertificate::new(&provider),
                ))
                .with_no_client_auth(),
        };
        // What the transports speak; servers offering only h2 refuse.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(Client {
            config,
            mode: Mode {
                version,
                resumption: resume,
                verified,
            },
        })
    }

    /// The configuration one worker's connections share. With resumption,
    /// its own session store ([`TicketPool`]): workers never share a lock,
    /// and a worker's reconnecting connections find tickets as real
    /// clients, each holding its own, would.
    pub fn worker_config(&self, slots: u32) -> Arc<ClientConfig> {
        let mut c = self.config.clone();
        if self.mode.resumption {
            let cap = (slots as usize).clamp(64, TICKETS_PER_WORKER);
            c.resumption = Resumption::store(Arc::new(TicketPool::new(cap)));
        }
        Arc::new(c)
    }

    /// The publisher's: one long connection each, nothing to resume.
    pub fn publisher_config(&self) -> Arc<ClientConfig> {
        Arc::new(self.config.clone())
    }
}

/// The name to send (SNI) and verify the certificate against: a DNS name,
/// or an IP address (`ServerName::IpAddress`: no SNI is sent, the
/// certificate must carry the address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be a TLS server name: {e}"))
}

/// Most TLS 1.3 tickets a worker keeps.
const TICKETS_PER_WORKER: usize = 1024;

/// One worker's TLS session store. rustls's `ClientSessionMemoryCache`
/// keeps 8 TLS 1.3 tickets per server: right for a browser, which opens a
/// connection or two to a server, but a worker opens hundreds to one
/// server at once and would make all but 8 of them handshake in full,
/// although each real client would hold a ticket of its own. So tickets
/// are pooled, up to `cap` per server (newest first; each is used once,
/// as TLS 1.3 requires); TLS 1.2 keeps one session per server, which every
/// connection may resume.
pub struct TicketPool {
    cap: usize,
    /// By server name: a fleet talks to one (or a few, with --nodes and
    /// --tls-server-name), so a list is all the map needed.
    servers: Mutex<Vec<(ServerName<'static>, Server)>>,
}

#[derive(Default)]
struct Server {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl std::fmt::Debug for TicketPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tickets: usize = self
            .servers
            .lock()
            .map(|s| s.iter().map(|(_, v)| v.tls13.len()).sum())
            .unwrap_or(0);
        f.debug_struct("TicketPool")
            .field("cap", &self.cap)
            .field("tickets", &tickets)
            .finish()
    }
}

impl TicketPool {
    /// Keeps up to `cap` TLS 1.3 tickets per server.
    pub fn new(cap: usize) -> TicketPool {
        TicketPool {
            cap,
            servers: Mutex::new(Vec::new()),
        }
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Vec<(ServerName<'static>, Server)>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<R>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Server) -> R) -> Option<R> {
        let mut servers = self.servers();
        servers
            .iter_mut()
            .find(|e| e.0 == *name)
            .map(|e| f(&mut e.1))
    }

    fn with_new<R>(&self, name: ServerName<'static>, f: impl FnOnce(&mut Server) -> R) -> R {
        let mut servers = self.servers();
        let i = match servers.iter().position(|e| e.0 == name) {
            Some(i) => i,
            None => {
                servers.push((name, Server::default()));
                servers.len() - 1
            }
        };
        f(&mut servers[i].1)
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with_new(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_new(name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(name, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let cap = self.cap;
        self.with_new(name, |s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(name, |s| s.tls13.pop_back()).flatten()
    }
}

/// `--insecure`: accepts **any** certificate for **any** name. Dangerous
/// outside a test: whoever sits between the harness and the server can
/// read and change everything. The handshake's signature is still checked
/// against the certificate presented: the server proves it holds the key
/// of the certificate it sent, and does all the work of a verified
/// handshake (the client skips the chain: one signature check less).
#[derive(Debug)]
struct DangerousAcceptAnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl DangerousAcceptAnyServerCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for DangerousAcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn ca_files() {
        let dir = std::env::temp_dir().join(format!("ringcast-load-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, &crate::transport::tls::tests::pki().ca_pem).unwrap();
        assert!(matches!(Trust::from_pem_file(&good), Ok(Trust::Roots(_))));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = Trust::from_pem_file(&empty).unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = Trust::from_pem_file(&dir.join("missing.pem")).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// (Tickets come only from a handshake: the resumption tests of
    /// `transport::tls` use them.)
    #[test]
    fn the_pool_remembers_key_exchange_hints() {
        let pool = TicketPool::new(64);
        let name = server_name("localhost").unwrap();
        assert!(pool.take_tls13_ticket(&name).is_none());
        assert!(pool.kx_hint(&name).is_none());
        pool.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(pool.kx_hint(&name), Some(NamedGroup::X25519));
    }
}
