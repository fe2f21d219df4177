//! TLS: certificates and the rustls configurations built from them, for both sides of the proxy.
//!
//! This module owns:
//! - **certificate loading**: PEM chain and key files, checked at `ballast check` time (the key must
//!   match its certificate, names must be usable), with errors that name the file ([`TlsError`]);
//! - **SNI selection**: exact names and `*.example.com` wildcards (one label), with the first
//!   certificate as the default when SNI is absent or matches nothing (`sni.rs`);
//! - **ALPN**: the protocol list each side offers;
//! - **server verification** on the client side: operator CA files, the Mozilla roots from
//!   `webpki-roots`, or no verification at all ([`ServerVerification`]).
//!
//! It does not own sockets or protocols: listeners and the proxy wrap their `TcpStream`s with
//! `tokio_rustls::{TlsAcceptor, TlsConnector}` built from the configs returned here, and HTTP lives
//! elsewhere. Config keys are mapped onto [`CertSource`] and [`ServerVerification`] by the config
//! module.
//!
//! ```text
//! CertSource (paths) --load.rs--> chain + key + names --CertifiedKey::keys_match--> SniResolver
//!                    --server_config--> Arc<rustls::ServerConfig>  (TLS 1.2/1.3, ALPN)
//! ServerVerification --client_config--> Arc<rustls::ClientConfig>  (roots or no verification)
//! ```
//!
//! Why rustls with the `ring` provider: rustls is memory-safe and its defaults are the safe ones
//! (TLS 1.2 and 1.3 only, AEAD suites with forward secrecy), so there is no cipher string to get
//! wrong. `ring` instead of rustls's default `aws-lc-rs` keeps the build free of cmake and a C
//! toolchain. Every config is built with an explicit provider
//! (`builder_with_provider(ring::default_provider())`), so nothing depends on a process-wide default
//! provider having been installed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

mod load;
mod sni;

#[cfg(test)]
mod tests;

use sni::{Loaded, NamePattern, SniResolver};

/// One certificate as configured: a PEM chain file and a PEM key file, optionally the host names it
/// serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// PEM file holding the certificate chain: the server's certificate first, then any
    /// intermediates. Other PEM blocks (a private key, EC parameters) are ignored, so a combined
    /// HAProxy-style file works here and as [`key_file`](Self::key_file).
    pub cert_file: PathBuf,
    /// PEM file holding exactly one unencrypted private key (PKCS#8 `PRIVATE KEY`, PKCS#1
    /// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`): RSA, ECDSA P-256/P-384 or Ed25519.
    pub key_file: PathBuf,
    /// Host names this certificate is served for: exact names (`www.example.com`) or wildcards
    /// matching one label (`*.example.com`). Empty (the default) = the DNS names in the
    /// certificate's subjectAltName.
    pub server_names: Vec<String>,
}

/// How the client side (ballast connecting to servers) checks the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerVerification {
    /// Verify the chain and the server name against the CA certificates in these PEM files. An empty
    /// list means the Mozilla root set compiled in from the `webpki-roots` crate (the same roots
    /// browsers trust, independent of the host's `/etc/ssl`).
    CaFiles(Vec<PathBuf>),
    /// No verification at all: any certificate for any name is accepted, so anyone on the path to
    /// the server can read and change the traffic. [`client_config`] logs a warning each time it
    /// builds such a config. Handshake signatures are still checked, which costs nothing and keeps
    /// a broken server from looking healthy.
    Insecure,
}

/// Which file a [`TlsError`] is about; displayed as the words an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A [`CertSource::cert_file`].
    Certificate,
    /// A [`CertSource::key_file`].
    PrivateKey,
    /// One of the [`ServerVerification::CaFiles`].
    Ca,
}

impl FileKind {
    /// The PEM block this kind of file must contain, quoted for messages.
    fn expected(self) -> &'static str {
        match self {
            FileKind::Certificate | FileKind::Ca => r#"a PEM block "-----BEGIN CERTIFICATE-----""#,
            FileKind::PrivateKey => {
                r#"a PEM block "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----""#
            }
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Certificate => "certificate file",
            FileKind::PrivateKey => "private key file",
            FileKind::Ca => "CA file",
        })
    }
}

/// Why a certificate, key or CA file cannot be used. Each message names the file and says what was
/// expected; causes (the OS error, the PEM or X.509 parser's complaint) are kept in `source()`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `server_config` was given no certificate at all.
    #[error("TLS needs at least one certificate; none is configured")]
    NoCertificates,
    /// The file could not be read (missing, permissions, a directory …).
    #[error("{kind} {}: cannot read", path.display())]
    Read {
        /// Which file this is.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or holds only whitespace.
    #[error("{kind} {}: the file is empty (expected {})", path.display(), kind.expected())]
    Empty {
        /// Which file this is.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
    },
    /// A PEM block is broken: bad base64 between BEGIN and END, a missing END line, a bad BEGIN line.
    #[error("{kind} {}: malformed PEM", path.display())]
    MalformedPem {
        /// Which file this is.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
        /// The PEM parser's complaint.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file looks like binary DER, not PEM.
    #[error("{kind} {}: looks like binary DER; ballast reads PEM (expected {}; convert it with openssl)", path.display(), kind.expected())]
    NotPem {
        /// Which file this is.
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
    },
    /// A certificate or CA file holds no `CERTIFICATE` block.
    #[error("{kind} {}: no certificate found (expected {})", path.display(), kind.expected())]
    NoCertificate {
        /// [`FileKind::Certificate`] or [`FileKind::Ca`].
        kind: FileKind,
        /// The path as configured.
        path: PathBuf,
    },
    /// The certificate file holds a private key but no certificate: the two files are probably
    /// swapped.
    #[error("certificate file {}: no certificate found, only a private key (are the certificate and key files swapped?)", path.display())]
    KeyInCertificateFile {
        /// The path as configured.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("private key file {}: no private key found (expected {})", path.display(), FileKind::PrivateKey.expected())]
    NoPrivateKey {
        /// The path as configured.
        path: PathBuf,
    },
    /// The key file holds a certificate but no private key: the two files are probably swapped.
    #[error("private key file {}: no private key found, only a certificate (are the certificate and key files swapped?)", path.display())]
    CertificateInKeyFile {
        /// The path as configured.
        path: PathBuf,
    },
    /// The key is encrypted with a passphrase, which ballast cannot prompt for.
    #[error("private key file {}: the key is encrypted; ballast needs an unencrypted key (e.g. `openssl pkey -in ENCRYPTED -out PLAIN`, then restrict the file's permissions)", path.display())]
    EncryptedPrivateKey {
        /// The path as configured.
        path: PathBuf,
    },
    /// The key file holds more than one private key, so which one to use is ambiguous.
    #[error("private key file {}: holds {count} private keys; expected exactly one", path.display())]
    SeveralPrivateKeys {
        /// The path as configured.
        path: PathBuf,
        /// How many private keys were found.
        count: usize,
    },
    /// The key decodes as PEM but ring cannot use it (an unsupported algorithm or curve, or broken
    /// DER inside the block).
    #[error("private key file {}: unsupported or unreadable private key (supported: RSA, ECDSA P-256 or P-384, Ed25519)", path.display())]
    UnsupportedKey {
        /// The path as configured.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the key of the first certificate in the chain file.
    #[error("private key file {} does not match the certificate in {} (the first certificate in the file must be the one issued for this key)", key_file.display(), cert_file.display())]
    KeyMismatch {
        /// The certificate file as configured.
        cert_file: PathBuf,
        /// The key file as configured.
        key_file: PathBuf,
    },
    /// The first certificate in the file is not valid X.509 (the base64 decoded, the DER did not).
    #[error("certificate file {}: the first certificate cannot be parsed as X.509", path.display())]
    BadCertificate {
        /// The path as configured.
        path: PathBuf,
        /// The X.509 parser's complaint.
        #[source]
        source: webpki::Error,
    },
    /// No host names to select the certificate by: none configured and none in the certificate.
    #[error("certificate file {}: the certificate has no DNS name in its subjectAltName and no server_names are given; list the host names it serves in server_names", path.display())]
    NoServerName {
        /// The path as configured.
        path: PathBuf,
    },
    /// A configured server name is neither a DNS name nor a one-label wildcard.
    #[error("certificate file {}: server name \"{name}\" is not a DNS name or a wildcard of the form *.example.com", path.display())]
    InvalidServerName {
        /// The certificate file the name was given for.
        path: PathBuf,
        /// The name as configured.
        name: String,
    },
    /// A CA file holds certificates, but none can be used as a trust anchor.
    #[error("CA file {}: none of its {count} certificate(s) can be used as a trust anchor", path.display())]
    NoUsableCaCertificate {
        /// The path as configured.
        path: PathBuf,
        /// How many certificates were found (and rejected).
        count: usize,
    },
    /// rustls refused the ring provider's protocol versions. Cannot happen with this build's
    /// features (ring, tls12); kept as an error rather than a panic.
    #[error("the TLS library rejected the ring crypto provider (a ballast build problem)")]
    Provider {
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

// === server side ===

/// Loads every certificate, checks each key matches its certificate, and builds a rustls
/// `ServerConfig` that picks the certificate by SNI.
///
/// Selection: an exact name wins over a wildcard; `*.example.com` matches exactly one label
/// (`a.example.com`, not `example.com` nor `a.b.example.com`). When SNI is absent (a client dialling
/// an IP address) or matches nothing, the first certificate is served, like nginx's
/// `default_server`. When two certificates claim the same name the first wins and a warning is
/// logged. The certificate's validity dates are not checked: an expired certificate is served as
/// is.
///
/// `alpn` is offered in preference order, e.g. `&[b"h2", b"http/1.1"]`; empty = no ALPN. Protocol
/// versions are TLS 1.2 and 1.3 with rustls's safe default cipher suites. There is no client
/// certificate authentication. Resumption uses rustls's default in-memory session cache, one per
/// config (no stateless ticket key, so nothing to rotate or share between processes).
///
/// # Errors
/// The first problem found, in `certs` order: [`TlsError::NoCertificates`], or a [`TlsError`]
/// naming the file that cannot be read, parsed, matched or named.
pub fn server_config(certs: &[CertSource], alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loaded = certs
        .iter()
        .map(|source| load_certified(source, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let resolver = SniResolver::new(loaded).ok_or(TlsError::NoCertificates)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Provider { source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Checks that every certificate loads, matches its key and has names: what `ballast check` runs.
/// As cheap as building the config, which it does and drops.
///
/// # Errors
/// As [`server_config`].
pub fn check(certs: &[CertSource]) -> Result<(), TlsError> {
    server_config(certs, &[]).map(|_| ())
}

/// Loads one [`CertSource`]: chain, key (checked against the chain's first certificate) and the
/// names it is selected by.
fn load_certified(source: &CertSource, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let chain = load::certificate_chain(&source.cert_file)?;
    let names = names_for(source, &chain)?;
    let key_der = load::private_key(&source.key_file)?;
    let key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source_err| TlsError::UnsupportedKey {
            path: source.key_file.clone(),
            source: source_err,
        })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // `Unknown`: the key cannot report its public half, so there is nothing to compare. ring's
        // keys always can; rustls's own `CertifiedKey::from_der` accepts this case too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::KeyMismatch {
                cert_file: source.cert_file.clone(),
                key_file: source.key_file.clone(),
            })
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        cert_file: source.cert_file.clone(),
    })
}

/// The names a certificate is selected by: `server_names` when given, else its SAN DNS names.
fn names_for(
    source: &CertSource,
    chain: &[CertificateDer<'static>],
) -> Result<Vec<NamePattern>, TlsError> {
    let path = &source.cert_file;
    if !source.server_names.is_empty() {
        return source
            .server_names
            .iter()
            .map(|name| {
                NamePattern::parse(name).ok_or_else(|| TlsError::InvalidServerName {
                    path: path.clone(),
                    name: name.clone(),
                })
            })
            .collect();
    }
    // `certificate_chain` never returns an empty chain.
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            kind: FileKind::Certificate,
            path: path.clone(),
        });
    };
    let parsed =
        webpki::EndEntityCert::try_from(leaf).map_err(|source| TlsError::BadCertificate {
            path: path.clone(),
            source,
        })?;
    // `valid_dns_names` is documented as unfit for *verification*; here it only decides which
    // certificate to offer, and the client still verifies the name itself.
    let names: Vec<NamePattern> = parsed
        .valid_dns_names()
        .filter_map(NamePattern::parse)
        .collect();
    if names.is_empty() {
        return Err(TlsError::NoServerName { path: path.clone() });
    }
    Ok(names)
}

// === client side ===

/// Builds the rustls `ClientConfig` ballast uses to speak TLS to servers: TLS 1.2 and 1.3, rustls's
/// safe default cipher suites, SNI sent (taken from the `ServerName` the connector is given), no
/// client certificate, and `alpn` offered in preference order (empty = no ALPN).
///
/// With [`ServerVerification::Insecure`] a warning is logged on every call.
///
/// # Errors
/// A [`TlsError`] naming a CA file that cannot be read or holds no usable certificate.
pub fn client_config(
    verify: &ServerVerification,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Provider { source })?;
    let mut config = match verify {
        ServerVerification::CaFiles(files) => builder
            .with_root_certificates(root_store(files)?)
            .with_no_client_auth(),
        ServerVerification::Insecure => {
            tracing::warn!(
                "TLS to servers WITHOUT certificate verification: any certificate is accepted, \
                 so anyone on the network path can read and change this traffic"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification { algorithms }))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The trust anchors from `files`, or the compiled-in Mozilla roots when `files` is empty.
fn root_store(files: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    if files.is_empty() {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    }
    let mut store = RootCertStore::empty();
    for path in files {
        add_ca_file(&mut store, path)?;
    }
    Ok(store)
}

/// Adds every usable certificate of one CA file. Unparsable ones are skipped with a warning (system
/// bundles sometimes carry a few), but a file none of whose certificates is usable is an error.
fn add_ca_file(store: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let certs = load::ca_certificates(path)?;
    let count = certs.len();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoUsableCaCertificate {
            path: path.to_path_buf(),
            count,
        });
    }
    if ignored > 0 {
        tracing::warn!(
            file = %path.display(),
            ignored,
            added,
            "CA file: skipped certificates that cannot be used as trust anchors"
        );
    }
    Ok(())
}

/// The verifier behind [`ServerVerification::Insecure`]: accepts every certificate for every name,
/// but still checks the handshake signature against the presented certificate's key.
#[derive(Debug)]
struct NoVerification {
    /// The provider's signature algorithms, for the handshake signature checks.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
