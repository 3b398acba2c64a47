//! A throwaway PKI for TLS tests: a CA, server and client certificates as
//! PEM files in a temporary directory, and rustls clients that trust the CA.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use clerk_broker::tls::TlsFiles;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// A CA that issues certificates.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Pair {
    /// The leaf certificate in DER, to compare with what a server sends.
    pub(crate) fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()
    }
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub(crate) fn server(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate naming `uri` as its URI SAN.
    pub(crate) fn client(&self, uri: &str) -> Pair {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.distinguished_name.push(DnType::CommonName, "client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A temporary directory of PEM files, removed on drop.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "clerk-broker-tls-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` atomically (as cert-manager's volume does).
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let staging = self.path(&format!(".{name}.tmp"));
        fs::write(&staging, text).unwrap();
        fs::rename(&staging, self.path(name)).unwrap();
        self.path(name)
    }

    /// Writes the server pair (and the client CA) and names the files.
    pub(crate) fn server_files(&self, server: &Pair, client_ca: Option<&Ca>) -> TlsFiles {
        TlsFiles {
            cert: self.write("tls.crt", &server.cert),
            key: self.write("tls.key", &server.key),
            client_ca: client_ca.map(|ca| self.write("client-ca.crt", &ca.pem())),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A rustls client trusting `ca`, presenting `identity` if any, with `alpn`.
pub(crate) fn client_config(ca: &Ca, identity: Option<&Pair>, alpn: &[u8]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![pair.der()],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// Opens one TLS connection to `addr` as `localhost`; returns the leaf
/// certificate the server sent, or the error.
pub(crate) async fn served_leaf(
    addr: std::net::SocketAddr,
    config: ClientConfig,
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

/// What a TLS channel's connector saw: each connection's server leaf.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<(AtomicUsize, Mutex<Vec<CertificateDer<'static>>>)>);

impl Seen {
    /// Connections made so far.
    pub(crate) fn connections(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }

    /// The leaf certificates the server sent, one per connection.
    pub(crate) fn leaves(&self) -> Vec<CertificateDer<'static>> {
        self.0.1.lock().unwrap().clone()
    }
}

/// A gRPC channel to `addr` over TLS with `config` (ALPN h2), recording
/// every connection it makes in `seen`.
pub(crate) async fn tls_channel(
    addr: std::net::SocketAddr,
    config: ClientConfig,
    seen: Seen,
) -> Result<Channel, tonic::transport::Error> {
    let connector = TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let seen = seen.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                seen.0.0.fetch_add(1, Ordering::SeqCst);
                let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                seen.0.1.lock().unwrap().push(leaf);
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// Where the test's PEM files live, for grpcurl.
pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}
