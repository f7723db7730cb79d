//! TLS and mTLS for the gRPC servers (and, if asked, the metrics port): a
//! certificate and key from files, re-read when they change on disk.
//!
//! - [`ServerTls`]: loaded once at start-up from `--tls-cert`, `--tls-key`
//!   and optionally `--tls-client-ca`; a bad file is a start-up error that
//!   names it.
//! - `reload`: the certificate resolver every handshake asks, and the loop
//!   that looks at the files every [`RELOAD_EVERY`] (Kubernetes swaps a
//!   symlink: the paths are opened again each time and their content compared).
//! - `incoming` ([`Incoming`]): the accept loop; each handshake runs on a task of its own,
//!   so a slow or failing client holds up nobody, and a failure only counts.
//! - [`client_identity`]: who a verified client certificate names, for handlers.

mod incoming;
mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::metrics::names as n;

pub use incoming::{Incoming, NoDelay, TlsIncoming};
use reload::{Loaded, ReloadingCert, Watcher};

/// How often the certificate and key files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why TLS settings cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path} holds no PEM CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM PRIVATE KEY block")]
    NoKey { path: PathBuf },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Config(String),
}

/// What a served certificate says, for logs and the expiry gauge.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// The subject's distinguished name, e.g. `CN=api.example.com`.
    pub subject: String,
    pub serial: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    pub not_after_unix: i64,
}

impl CertInfo {
    fn parse(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let not_after_unix = cert.validity().not_after.timestamp();
        Some(Self {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
            not_after: chrono::DateTime::from_timestamp(not_after_unix, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| not_after_unix.to_string()),
            not_after_unix,
        })
    }
}

/// A server's TLS: the certificate it serves (reloaded on change) and,
/// for mTLS, the verifier of client certificates. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca: Option<PathBuf>,
    resolver: Arc<ReloadingCert>,
    /// ALPN h2: gRPC clients (grpc-go above all) insist on it.
    grpc: Arc<ServerConfig>,
    /// ALPN http/1.1, for the metrics port.
    http: Arc<ServerConfig>,
    /// The files' content at start-up: the watcher compares against it.
    initial: (Vec<u8>, Vec<u8>),
    metrics: TlsMetrics,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.inner.cert_path)
            .field("key", &self.inner.key_path)
            .field("client_ca", &self.inner.client_ca)
            .finish()
    }
}

/// Handshake failures, reloads and the served certificate's expiry.
#[derive(Clone, Default)]
struct TlsMetrics {
    handshake_failures: Counter,
    reloads: Family<n::Outcome, Counter>,
    not_after: Gauge,
}

impl ServerTls {
    /// Reads and checks the files (start-up: blocking reads are fine here).
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let loaded = parse_pair(cert, &cert_pem, key, &key_pem)?;
        let verifier = client_ca.map(load_client_ca).transpose()?;
        let metrics = TlsMetrics::default();
        metrics.not_after.set(loaded.info.not_after_unix);
        let resolver = Arc::new(ReloadingCert::new(loaded));
        let config = |alpn: &[u8]| -> Result<Arc<ServerConfig>, TlsError> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                grpc: config(b"h2")?,
                http: config(b"http/1.1")?,
                cert_path: cert.to_owned(),
                key_path: key.to_owned(),
                client_ca: client_ca.map(Path::to_owned),
                resolver,
                initial: (cert_pem, key_pem),
                metrics,
            }),
        })
    }

    /// `tls`, or `mtls` when client certificates are required.
    pub fn mode(&self) -> &'static str {
        if self.inner.client_ca.is_some() {
            "mtls"
        } else {
            "tls"
        }
    }

    /// The certificate served to new handshakes now.
    pub fn current(&self) -> CertInfo {
        self.inner.resolver.current().info.clone()
    }

    /// Registers the TLS metrics of this server in `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            n::TLS_HANDSHAKE_FAILURES,
            "TLS handshakes that failed or timed out (bad or missing client certificate, untrusted server certificate, plaintext callers)",
            m.handshake_failures.clone(),
        );
        registry.register(
            n::TLS_CERT_RELOADS,
            "Certificate and key files that changed on disk, by result (error: the one in use is kept)",
            m.reloads.clone(),
        );
        registry.register(
            n::TLS_CERT_EXPIRY,
            "When the served certificate expires, in Unix seconds",
            m.not_after.clone(),
        );
    }

    /// Re-reads the certificate and key every [`RELOAD_EVERY`] until `stop`.
    pub async fn watch(self, stop: CancellationToken) {
        self.watch_every(RELOAD_EVERY, stop).await;
    }

    async fn watch_every(self, every: Duration, stop: CancellationToken) {
        let inner = &self.inner;
        let watcher = Watcher::new(
            inner.cert_path.clone(),
            inner.key_path.clone(),
            inner.initial.clone(),
        );
        reload::watch(
            inner.resolver.clone(),
            watcher,
            every,
            inner.metrics.clone(),
            stop,
        )
        .await;
    }

    pub(crate) fn grpc_config(&self) -> Arc<ServerConfig> {
        self.inner.grpc.clone()
    }

    pub(crate) fn http_config(&self) -> Arc<ServerConfig> {
        self.inner.http.clone()
    }

    fn handshake_failures(&self) -> Counter {
        self.inner.metrics.handshake_failures.clone()
    }
}

/// Logs once how `server` serves gRPC on `addr`; warns when bearer tokens
/// would cross a network in plaintext.
pub fn log_mode(server: &str, addr: Option<SocketAddr>, tls: Option<&ServerTls>, tokens: bool) {
    let Some(tls) = tls else {
        tracing::info!(server, mode = "plaintext h2c", "grpc transport");
        if tokens && addr.is_some_and(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                server,
                addr = %addr.map(|a| a.to_string()).unwrap_or_default(),
                "bearer tokens cross the network in plaintext: serve TLS (--tls-cert, --tls-key) or put a TLS proxy in front"
            );
        }
        return;
    };
    let cert = tls.current();
    tracing::info!(
        server,
        mode = tls.mode(),
        subject = %cert.subject,
        serial = %cert.serial,
        not_after = %cert.not_after,
        cert_file = %tls.inner.cert_path.display(),
        client_ca = tls.inner.client_ca.as_ref().map(|p| p.display().to_string()).as_deref(),
        "grpc transport"
    );
    if cert.not_after_unix <= chrono::Utc::now().timestamp() {
        tracing::warn!(server, not_after = %cert.not_after, "the served tls certificate has expired");
    }
}

/// Who the caller's verified client certificate names (mTLS): its subject
/// CN, or else its first DNS or URI SAN. `None` without a client certificate.
///
/// `ext` is a request's extensions (`request.extensions()` of a tonic or
/// http request), where tonic records the connection's TLS details.
pub fn client_identity(ext: &http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(axum::extract::ConnectInfo(PeerIdentity(id))) =
        ext.get::<axum::extract::ConnectInfo<PeerIdentity>>()
    {
        return id.clone();
    }
    let certs = ext.get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    identity_of(certs.first()?)
}

/// An axum server's view of who is connected (its connect info): the
/// verified client certificate's identity, as [`client_identity`] reads it.
/// Serve with `router.into_make_service_with_connect_info::<PeerIdentity>()`.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<String>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsIncoming>>
    for PeerIdentity
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsIncoming>) -> Self {
        let (_, conn) = stream.io().get_ref();
        Self(
            conn.peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity_of),
        )
    }
}

/// Plain TCP: no certificate.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelay>>
    for PeerIdentity
{
    fn connect_info(_: axum::serve::IncomingStream<'_, NoDelay>) -> Self {
        Self(None)
    }
}

/// A served connection's [`PeerIdentity`], for servers that run their own
/// accept loop (the HTTP door) rather than `axum::serve`.
pub trait Identified {
    fn peer_identity(&self) -> PeerIdentity;
}

impl Identified for tokio::net::TcpStream {
    fn peer_identity(&self) -> PeerIdentity {
        PeerIdentity(None)
    }
}

impl Identified for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn peer_identity(&self) -> PeerIdentity {
        let (_, conn) = self.get_ref();
        PeerIdentity(
            conn.peer_certificates()
                .and_then(|c| c.first())
                .and_then(identity_of),
        )
    }
}

/// Records [`client_identity`] in the `client` field of `span` (declared
/// `client = tracing::field::Empty` by the server's `trace_fn`).
pub fn record_client(span: &tracing::Span, ext: &http::Extensions) {
    if let Some(client) = client_identity(ext) {
        span.record("client", client);
    }
}

/// The CN of `cert`'s subject, or else its first DNS or URI SAN.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) => Some((*s).to_owned()),
        _ => None,
    })
}

/// The one crypto provider of the servers' TLS: ring, like the rest of Switchyard.
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    // Config parsing, once at start-up; the reload loop uses tokio::fs.
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a certificate chain and its private key, checking they belong together.
fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<Loaded, TlsError> {
    let pem_err = |path: &Path, what, e: &dyn std::fmt::Display| TlsError::Pem {
        path: path.to_owned(),
        what,
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_path, "certificate", &e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let info = CertInfo::parse(leaf)
        .ok_or_else(|| pem_err(cert_path, "certificate", &"not an X.509 certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_owned(),
        },
        e => pem_err(key_path, "private key", &e),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_err(key_path, "private key", &e))?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        // Unknown: the key cannot say its public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(e) => return Err(pem_err(cert_path, "certificate", &e)),
    }
    Ok(Loaded {
        key: Arc::new(key),
        info,
    })
}

/// The verifier of client certificates: signed by a CA in `path`.
fn load_client_ca(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let pem = read(path)?;
    let err = |reason: String| TlsError::ClientCa {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("not a usable PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("holds no PEM CERTIFICATE block".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests;
