//! TLS (and optional mutual TLS) on the broker's listeners, with
//! certificates that follow their files.
//!
//! [`TlsFiles`] names the PEM files; [`Credentials`] is what they hold,
//! parsed and checked (the key matches the certificate, the CA is usable),
//! as one rustls `ServerConfig` per listener. [`TlsStore`] keeps the
//! credentials in force and [`watch`] replaces them when a file's content
//! changes (cert-manager rotates certificates in place): new handshakes use
//! the new credentials, established connections keep theirs, and files that
//! do not form a valid set are logged and ignored. `conn` accepts
//! connections (plain or TLS) for both listeners; `identity` reads the
//! names of a verified client certificate.
//!
//! The whole `ServerConfig` is swapped, not just the certificate through a
//! custom `ResolvesServerCert`: the client CA lives in the config's verifier,
//! so swapping the config reloads all three files the same way.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};

mod conn;
mod identity;
mod peers;

pub use conn::{Acceptor, Conn, ConnectionLimits, HANDSHAKE_TIMEOUT, Peer, incoming};
pub use identity::ClientIdentity;

/// How often the files are checked for changes (as often as `reload` checks
/// the policy file).
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// ALPN of the gRPC listener: HTTP/2 only.
const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// ALPN of the HTTP listener: HTTP/1.1 only (see `http`: hyper's HTTP/1
/// header timeout is what bounds slow clients there).
const HTTP_ALPN: &[&[u8]] = &[b"http/1.1"];

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The server's private key: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
    /// CAs whose client certificates are verified (`--tls-client-ca`);
    /// `None`: clients are not asked for certificates.
    pub client_ca: Option<PathBuf>,
}

/// Why a set of TLS files cannot be used; names the flag and file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {problem}", path.display())]
pub struct TlsError {
    flag: &'static str,
    path: PathBuf,
    problem: String,
}

impl TlsError {
    fn new(flag: &'static str, path: &Path, problem: impl Into<String>) -> Self {
        Self {
            flag,
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Parsed, mutually consistent TLS material, as one config per listener.
#[derive(Debug)]
pub struct Credentials {
    /// For the gRPC listener (ALPN `h2`).
    grpc: Arc<ServerConfig>,
    /// For the HTTP listener (ALPN `http/1.1`).
    http: Arc<ServerConfig>,
    /// Whether clients are asked for a certificate.
    mutual: bool,
}

/// The file contents one load read, and their digest (to notice changes).
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    digest: [u8; 32],
}

impl TlsFiles {
    /// Reads and checks the files.
    pub fn load(&self) -> Result<Credentials, TlsError> {
        Credentials::parse(self, &self.read()?)
    }

    fn read(&self) -> Result<Contents, TlsError> {
        let read = |flag: &'static str, path: &Path| {
            std::fs::read(path).map_err(|error| TlsError::new(flag, path, error.to_string()))
        };
        let cert = read("--tls-cert", &self.cert)?;
        let key = read("--tls-key", &self.key)?;
        let client_ca = match &self.client_ca {
            Some(path) => Some(read("--tls-client-ca", path)?),
            None => None,
        };
        let mut hasher = Sha256::new();
        for part in [Some(&cert), Some(&key), client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Ok(Contents {
            digest: hasher.finalize().into(),
            cert,
            key,
            client_ca,
        })
    }
}

impl Credentials {
    fn parse(files: &TlsFiles, contents: &Contents) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&contents.cert)
            .collect::<Result<_, _>>()
            .map_err(|error| TlsError::new("--tls-cert", &files.cert, error.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::new(
                "--tls-cert",
                &files.cert,
                "no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks, leaf first)",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|_| {
            TlsError::new(
                "--tls-key",
                &files.key,
                "no private key in the file (expected PEM \"BEGIN PRIVATE KEY\", \
                 \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
            )
        })?;
        let verifier = match (&files.client_ca, &contents.client_ca) {
            (Some(path), Some(pem)) => Some(client_verifier(path, pem, &provider)?),
            _ => None,
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::new("--tls-cert", &files.cert, error.to_string()))?;
        let builder = match &verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut grpc = builder.with_single_cert(chain, key).map_err(|error| {
            TlsError::new(
                "--tls-key",
                &files.key,
                format!("does not fit the certificate in --tls-cert: {error}"),
            )
        })?;
        let mut http = grpc.clone();
        grpc.alpn_protocols = GRPC_ALPN.iter().map(|p| p.to_vec()).collect();
        http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            grpc: Arc::new(grpc),
            http: Arc::new(http),
            mutual: verifier.is_some(),
        })
    }

    /// Whether clients are asked for (and may present) a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

/// Client certificates are verified against the CAs in `pem`, but are
/// optional: a client without one may still call with a bearer token.
fn client_verifier(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let fail = |problem: String| TlsError::new("--tls-client-ca", path, problem);
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|error| fail(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| fail(format!("not a usable CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(fail(
            "no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks)".into(),
        ));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|error| fail(error.to_string()))
}

/// Which listener a connection arrives on (each has its own ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The gRPC listener.
    Grpc,
    /// The HTTP listener (webhooks, metrics).
    Http,
}

/// The credentials in force, replaced whole when the files change.
#[derive(Debug)]
pub struct TlsStore {
    files: TlsFiles,
    current: RwLock<Arc<Credentials>>,
    /// Digest of the file contents last tried (applied or rejected).
    last_seen: RwLock<[u8; 32]>,
    /// Reloads applied.
    applied: AtomicU64,
    /// Changed files rejected (the previous credentials stayed).
    rejected: AtomicU64,
}

impl TlsStore {
    /// Loads `files`; fails if they do not form a valid set.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let contents = files.read()?;
        let credentials = Credentials::parse(&files, &contents)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(credentials)),
            last_seen: RwLock::new(contents.digest),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The server config new handshakes on `listener` use.
    pub fn config(&self, listener: Listener) -> Arc<ServerConfig> {
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match listener {
            Listener::Grpc => current.grpc.clone(),
            Listener::Http => current.http.clone(),
        }
    }

    /// Whether clients may present certificates (a client CA is configured).
    pub fn is_mutual(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_mutual()
    }

    /// Reloads applied so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Changed file sets rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Re-reads the files; if their content changed since the last check,
    /// puts them in force, or logs why not and keeps the current ones.
    pub fn check(&self) {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(error) => {
                // A file missing for a moment (a rotation in progress) is
                // retried on the next check; only a changed set is counted.
                tracing::debug!(%error, "TLS files unreadable; keeping the current certificate");
                return;
            }
        };
        {
            let mut last = self
                .last_seen
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if *last == contents.digest {
                return;
            }
            *last = contents.digest;
        }
        match Credentials::parse(&self.files, &contents) {
            Ok(credentials) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Arc::new(credentials);
                self.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    %error,
                    "TLS files rejected; new connections keep the previous certificate"
                );
            }
        }
    }
}

/// Checks the files every [`POLL_INTERVAL`] until the task is dropped.
pub async fn watch(store: Arc<TlsStore>) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        store.check();
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn self_signed() -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn files(name: &str) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!(
            "clerk-broker-tls-unit-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: None,
        }
    }

    fn write(files: &TlsFiles, cert: &str, key: &str) {
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    }

    #[test]
    fn a_broken_set_is_rejected_once_and_the_current_one_stays() {
        let files = files("reload");
        let (first, second) = (self_signed(), self_signed());
        write(&files, &first.cert, &first.key);
        let store = TlsStore::load(files.clone()).unwrap();
        let initial = store.config(Listener::Grpc);
        store.check();
        assert!(Arc::ptr_eq(&initial, &store.config(Listener::Grpc)));
        assert_eq!((store.applied(), store.rejected()), (0, 0));

        // The new certificate with the old key: rejected, counted once.
        write(&files, &second.cert, &first.key);
        store.check();
        store.check();
        assert!(Arc::ptr_eq(&initial, &store.config(Listener::Grpc)));
        assert_eq!((store.applied(), store.rejected()), (0, 1));

        // The whole new pair: in force for new handshakes.
        write(&files, &second.cert, &second.key);
        store.check();
        assert!(!Arc::ptr_eq(&initial, &store.config(Listener::Grpc)));
        assert_eq!((store.applied(), store.rejected()), (1, 1));
        assert_eq!(
            store.config(Listener::Grpc).alpn_protocols,
            [b"h2".to_vec()]
        );
        assert_eq!(
            store.config(Listener::Http).alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        let _ = std::fs::remove_dir_all(files.cert.parent().unwrap());
    }

    #[test]
    fn bad_files_are_explained_with_their_flag() {
        let files = files("bad");
        let pair = self_signed();
        let other = self_signed();
        let cases = [
            (
                "not a certificate",
                pair.key.as_str(),
                "--tls-cert",
                "no certificate",
            ),
            (
                pair.cert.as_str(),
                "not a key",
                "--tls-key",
                "no private key",
            ),
            (
                pair.cert.as_str(),
                other.key.as_str(),
                "--tls-key",
                "does not fit",
            ),
        ];
        for (cert, key, flag, problem) in cases {
            write(&files, cert, key);
            let error = files.load().unwrap_err().to_string();
            assert!(
                error.starts_with(flag) && error.contains(problem),
                "{error}"
            );
            assert!(!error.contains("PRIVATE KEY-----"), "{error}");
        }
        write(&files, &pair.cert, &pair.key);
        let with_ca = TlsFiles {
            client_ca: Some(files.key.clone()),
            ..files.clone()
        };
        let error = with_ca.load().unwrap_err().to_string();
        assert!(error.starts_with("--tls-client-ca"), "{error}");
        let _ = std::fs::remove_dir_all(files.cert.parent().unwrap());
    }
}
