//! Certificates made at test time: a CA and a server certificate for
//! 127.0.0.1 and localhost that it signed; more server and client
//! certificates from the same CA on demand.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEMs of a fresh CA and of a server certificate it signed.
pub struct TestCerts {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCerts {
    pub fn generate() -> Self {
        Self::generate_named("Switchyard test CA")
    }

    /// A CA whose subject CN is `ca_name` (two CAs for "trusts another CA" tests).
    pub fn generate_named(ca_name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let mut certs = Self {
            ca_pem: ca_cert.pem(),
            server_pem: String::new(),
            server_key_pem: String::new(),
            ca_params,
            ca_key,
        };
        let server = certs.server("127.0.0.1");
        certs.server_pem = server.cert_pem;
        certs.server_key_pem = server.key_pem;
        certs
    }

    /// A new server certificate (new key, new serial) for 127.0.0.1 and
    /// localhost, with subject CN `cn`.
    pub fn server(&self, cn: &str) -> CertPair {
        // `new` turns "127.0.0.1" into an IP SAN and "localhost" into a DNS SAN.
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with subject CN `cn`, for mTLS.
    pub fn client(&self, cn: &str) -> CertPair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> CertPair {
        let key = KeyPair::generate().expect("generate key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign certificate");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The DER bytes of the first certificate in `pem`.
pub fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// The certificate (DER) a TLS server on `addr` presents to a new client
/// that trusts `ca_pem` and asks for `localhost` (ALPN h2, as gRPC does);
/// the handshake's error when it fails. Bounded to 5 s.
pub async fn presented_certificate(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> Result<Vec<u8>, String> {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    let tls = tokio::time::timeout(std::time::Duration::from_secs(5), handshake)
        .await
        .map_err(|_| "tls handshake timed out".to_owned())??;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate presented".to_owned())
}

/// A gRPC channel over TLS to `addr` (as `localhost`), trusting `ca_pem`
/// and presenting `identity` if given; the error as text.
pub async fn tls_channel(
    addr: &str,
    ca_pem: &str,
    identity: Option<&CertPair>,
) -> Result<tonic::transport::Channel, String> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .map_err(|e| format!("{e:?}"))?
        .tls_config(tls)
        .map_err(|e| format!("{e:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A server's certificate files (and client CA) in a directory of their
/// own, as the TLS flags take them.
pub struct CertFiles {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub client_ca: std::path::PathBuf,
}

impl CertFiles {
    /// `certs`' server pair and CA, written.
    pub fn new(certs: &TestCerts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let files = Self {
            cert: path("tls.crt"),
            key: path("tls.key"),
            client_ca: path("client-ca.crt"),
            _dir: dir,
        };
        files.write(&CertPair {
            cert_pem: certs.server_pem.clone(),
            key_pem: certs.server_key_pem.clone(),
        });
        std::fs::write(&files.client_ca, &certs.ca_pem).expect("write client CA");
        files
    }

    /// Replaces the pair on disk (a rotation).
    pub fn write(&self, pair: &CertPair) {
        std::fs::write(&self.cert, &pair.cert_pem).expect("write cert");
        std::fs::write(&self.key, &pair.key_pem).expect("write key");
    }

    /// `SWITCHYARD_TLS_*` for a server using these files (mTLS: the client CA too).
    pub fn env(&self, mtls: bool) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SWITCHYARD_TLS_CERT", self.cert.display().to_string()),
            ("SWITCHYARD_TLS_KEY", self.key.display().to_string()),
        ];
        if mtls {
            env.push((
                "SWITCHYARD_TLS_CLIENT_CA",
                self.client_ca.display().to_string(),
            ));
        }
        env
    }
}
