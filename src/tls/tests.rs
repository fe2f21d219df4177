//! Tests of certificate loading, SNI selection, ALPN and server verification.
//!
//! Handshakes are real: a tokio-rustls server on 127.0.0.1:0 with [`server_config`], a tokio-rustls
//! client with [`client_config`], so each handshake test exercises both sides. Certificates are
//! ECDSA P-256 made by rcgen and written to a per-test temporary directory. Error cases are a table
//! of file contents → the exact message an operator reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client::TlsStream, TlsAcceptor, TlsConnector};

use super::sni::{Loaded, NamePattern, SniResolver};
use super::*;

/// Bound on every handshake: loopback handshakes take milliseconds.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

// === helpers ===

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ballast-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca { cert, key }
    }

    /// A server certificate for `sans` (DNS names or IP addresses) and its key, as PEM.
    fn issue(&self, sans: &[&str]) -> Issued {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// An issued certificate.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` and returns the source for them.
    fn write(&self, dir: &TempDir, stem: &str) -> CertSource {
        CertSource {
            cert_file: dir.write(&format!("{stem}.pem"), &self.cert_pem),
            key_file: dir.write(&format!("{stem}.key"), &self.key_pem),
            server_names: Vec::new(),
        }
    }
}

/// Serves TLS handshakes on 127.0.0.1 until the test's runtime ends; each connection is dropped
/// once its handshake is done (or has failed).
async fn spawn_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

/// Connects to `addr` and handshakes, presenting `name` (a DNS name is sent as SNI; an IP address
/// sends no SNI).
async fn handshake(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(name.to_owned()).expect("valid server name");
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        HANDSHAKE_DEADLINE,
        TlsConnector::from(client).connect(server_name, tcp),
    )
    .await
    .expect("handshake finished within the deadline")
}

/// The certificate the server presented and the negotiated ALPN protocol.
fn seen(stream: &TlsStream<TcpStream>) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let (_, conn) = stream.get_ref();
    let cert = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("server presented a certificate")
        .clone()
        .into_owned();
    (cert, conn.alpn_protocol().map(<[u8]>::to_vec))
}

/// The rustls error inside a failed handshake's io::Error.
fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

// === handshakes ===

#[tokio::test]
async fn sni_picks_exact_wildcard_or_default_certificate_and_alpn_is_negotiated() {
    let dir = TempDir::new();
    let ca = Ca::new("ballast test CA");
    let ca_file = dir.write("ca.pem", ca.cert.pem());
    // The default certificate also carries 127.0.0.1, so the no-SNI client can verify it.
    let a = ca.issue(&["a.test", "127.0.0.1"]);
    let b = ca.issue(&["*.b.test"]);
    let server = server_config(&[a.write(&dir, "a"), b.write(&dir, "b")], &[H2, HTTP11])
        .expect("server config");
    let addr = spawn_server(server).await;

    let verified = ServerVerification::CaFiles(vec![ca_file]);
    let both = client_config(&verified, &[H2, HTTP11]).expect("client config");
    let http11 = client_config(&verified, &[HTTP11]).expect("client config");
    // For names no certificate is valid for, only an unverifying client gets to see what was sent.
    let insecure = client_config(&ServerVerification::Insecure, &[H2]).expect("client config");

    let cases: [(&str, &Arc<rustls::ClientConfig>, &CertificateDer<'_>, &[u8]); 7] = [
        ("a.test", &both, &a.der, H2),
        ("a.test", &http11, &a.der, HTTP11),
        ("x.b.test", &both, &b.der, H2),
        ("x.b.test", &http11, &b.der, HTTP11),
        ("127.0.0.1", &both, &a.der, H2),
        ("nomatch.test", &insecure, &a.der, H2),
        // A wildcard covers one label only.
        ("y.x.b.test", &insecure, &a.der, H2),
    ];
    for (name, client, want_cert, want_alpn) in cases {
        let stream = handshake(addr, Arc::clone(client), name)
            .await
            .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        let (cert, alpn) = seen(&stream);
        assert!(&cert == want_cert, "{name}: wrong certificate served");
        assert_eq!(alpn.as_deref(), Some(want_alpn), "{name}: ALPN");
    }
}

#[tokio::test]
async fn unknown_ca_fails_verification_and_insecure_accepts_it() {
    let dir = TempDir::new();
    let trusted = Ca::new("trusted CA");
    let unknown = Ca::new("unknown CA");
    let trusted_file = dir.write("trusted.pem", trusted.cert.pem());
    let server =
        server_config(&[unknown.issue(&["s.test"]).write(&dir, "s")], &[]).expect("server config");
    let addr = spawn_server(server).await;

    // Operator CA file, then the compiled-in Mozilla roots: neither knows the issuer.
    for verify in [
        ServerVerification::CaFiles(vec![trusted_file]),
        ServerVerification::CaFiles(Vec::new()),
    ] {
        let client = client_config(&verify, &[]).expect("client config");
        let err = handshake(addr, client, "s.test")
            .await
            .expect_err("an unknown issuer must fail the handshake");
        assert_eq!(
            rustls_error(&err),
            Some(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            "{verify:?}: {err}"
        );
    }

    let client = client_config(&ServerVerification::Insecure, &[]).expect("client config");
    handshake(addr, client, "s.test")
        .await
        .expect("Insecure accepts any certificate");
}

#[tokio::test]
async fn server_speaks_tls13_by_default_and_tls12_to_older_clients() {
    let dir = TempDir::new();
    let ca = Ca::new("versions CA");
    let ca_file = dir.write("ca.pem", ca.cert.pem());
    let server =
        server_config(&[ca.issue(&["v.test"]).write(&dir, "v")], &[]).expect("server config");
    let addr = spawn_server(server).await;

    let modern = client_config(&ServerVerification::CaFiles(vec![ca_file.clone()]), &[])
        .expect("client config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(super::load::ca_certificates(&ca_file).expect("CA file"));
    let tls12_only = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2")
    .with_root_certificates(roots)
    .with_no_client_auth();

    for (client, want) in [
        (modern, rustls::ProtocolVersion::TLSv1_3),
        (Arc::new(tls12_only), rustls::ProtocolVersion::TLSv1_2),
    ] {
        let stream = handshake(addr, client, "v.test").await.expect("handshake");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(want));
    }
}

// === errors ===

/// What a case feeds `server_config` or `client_config`.
enum Input {
    Server(Vec<CertSource>),
    Client(Vec<PathBuf>),
}

fn source(cert_file: PathBuf, key_file: PathBuf) -> CertSource {
    CertSource {
        cert_file,
        key_file,
        server_names: Vec::new(),
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn unusable_files_are_reported_with_the_file_and_what_was_expected() {
    let dir = TempDir::new();
    let ca = Ca::new("errors CA");
    let good = ca.issue(&["good.test"]);
    let other = ca.issue(&["other.test"]);
    let cert = dir.write("good.pem", &good.cert_pem);
    let key = dir.write("good.key", &good.key_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let ip_only = ca.issue(&["192.0.2.1"]).write(&dir, "ip-only");
    let missing = dir.path("missing.pem");
    let empty = dir.write("empty.pem", "\n \n");
    let text = dir.write("text.key", "this is not a key\n");
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    );
    let not_x509 = dir.write(
        "not-x509.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let not_a_key = dir.write(
        "not-a-key.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let encrypted = dir.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let two_keys = dir.write("two.key", format!("{}{}", good.key_pem, other.key_pem));
    let der = dir.write("good.der", good.der.as_ref());

    let cert_block = r#"a PEM block "-----BEGIN CERTIFICATE-----""#;
    let key_block = r#"a PEM block "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----""#;
    let cases: Vec<(&str, Input, String)> = vec![
        (
            "no certificate configured",
            Input::Server(vec![]),
            "TLS needs at least one certificate; none is configured".into(),
        ),
        (
            "missing certificate file",
            Input::Server(vec![source(missing.clone(), key.clone())]),
            format!("certificate file {}: cannot read", show(&missing)),
        ),
        (
            "missing key file",
            Input::Server(vec![source(cert.clone(), missing.clone())]),
            format!("private key file {}: cannot read", show(&missing)),
        ),
        (
            "empty certificate file",
            Input::Server(vec![source(empty.clone(), key.clone())]),
            format!(
                "certificate file {}: the file is empty (expected {cert_block})",
                show(&empty)
            ),
        ),
        (
            "certificate file with text only",
            Input::Server(vec![source(text.clone(), key.clone())]),
            format!(
                "certificate file {}: no certificate found (expected {cert_block})",
                show(&text)
            ),
        ),
        (
            "key file with no key",
            Input::Server(vec![source(cert.clone(), text.clone())]),
            format!(
                "private key file {}: no private key found (expected {key_block})",
                show(&text)
            ),
        ),
        (
            "certificate file holding only a key",
            Input::Server(vec![source(key.clone(), key.clone())]),
            format!(
                "certificate file {}: no certificate found, only a private key \
                 (are the certificate and key files swapped?)",
                show(&key)
            ),
        ),
        (
            "key file holding only a certificate",
            Input::Server(vec![source(cert.clone(), cert.clone())]),
            format!(
                "private key file {}: no private key found, only a certificate \
                 (are the certificate and key files swapped?)",
                show(&cert)
            ),
        ),
        (
            "key that does not match the certificate",
            Input::Server(vec![source(cert.clone(), other_key.clone())]),
            format!(
                "private key file {} does not match the certificate in {} \
                 (the first certificate in the file must be the one issued for this key)",
                show(&other_key),
                show(&cert)
            ),
        ),
        (
            "malformed PEM",
            Input::Server(vec![source(garbage.clone(), key.clone())]),
            format!("certificate file {}: malformed PEM", show(&garbage)),
        ),
        (
            "binary DER instead of PEM",
            Input::Server(vec![source(der.clone(), key.clone())]),
            format!(
                "certificate file {}: looks like binary DER; ballast reads PEM \
                 (expected {cert_block}; convert it with openssl)",
                show(&der)
            ),
        ),
        (
            "certificate block that is not X.509",
            Input::Server(vec![source(not_x509.clone(), key.clone())]),
            format!(
                "certificate file {}: the first certificate cannot be parsed as X.509",
                show(&not_x509)
            ),
        ),
        (
            "key block ring cannot use",
            Input::Server(vec![source(cert.clone(), not_a_key.clone())]),
            format!(
                "private key file {}: unsupported or unreadable private key \
                 (supported: RSA, ECDSA P-256 or P-384, Ed25519)",
                show(&not_a_key)
            ),
        ),
        (
            "encrypted key",
            Input::Server(vec![source(cert.clone(), encrypted.clone())]),
            format!(
                "private key file {}: the key is encrypted; ballast needs an unencrypted key \
                 (e.g. `openssl pkey -in ENCRYPTED -out PLAIN`, then restrict the file's permissions)",
                show(&encrypted)
            ),
        ),
        (
            "two keys in the key file",
            Input::Server(vec![source(cert.clone(), two_keys.clone())]),
            format!(
                "private key file {}: holds 2 private keys; expected exactly one",
                show(&two_keys)
            ),
        ),
        (
            "no DNS name and no server_names",
            Input::Server(vec![ip_only.clone()]),
            format!(
                "certificate file {}: the certificate has no DNS name in its subjectAltName and \
                 no server_names are given; list the host names it serves in server_names",
                show(&ip_only.cert_file)
            ),
        ),
        (
            "bad server name",
            Input::Server(vec![CertSource {
                server_names: vec!["ok.test".into(), "a.*.test".into()],
                ..source(cert.clone(), key.clone())
            }]),
            format!(
                "certificate file {}: server name \"a.*.test\" is not a DNS name or a wildcard \
                 of the form *.example.com",
                show(&cert)
            ),
        ),
        (
            "missing CA file",
            Input::Client(vec![missing.clone()]),
            format!("CA file {}: cannot read", show(&missing)),
        ),
        (
            "CA file with no certificate",
            Input::Client(vec![key.clone()]),
            format!(
                "CA file {}: no certificate found (expected {cert_block})",
                show(&key)
            ),
        ),
    ];

    for (what, input, want) in cases {
        let err = match input {
            Input::Server(certs) => server_config(&certs, &[]).expect_err(what),
            Input::Client(files) => {
                client_config(&ServerVerification::CaFiles(files), &[]).expect_err(what)
            }
        };
        assert_eq!(err.to_string(), want, "{what}");
    }
}

#[test]
fn read_and_parse_errors_keep_their_cause() {
    let dir = TempDir::new();
    let missing = dir.path("missing.pem");
    let err = check(&[source(missing.clone(), missing)]).expect_err("missing file");
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("io error kept as source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    );
    let err = check(&[source(garbage.clone(), garbage)]).expect_err("malformed PEM");
    assert!(matches!(
        std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<rustls::pki_types::pem::Error>()),
        Some(rustls::pki_types::pem::Error::Base64Decode(_))
    ));
}

#[test]
fn valid_sources_pass_check_including_a_combined_file_and_explicit_names() {
    let dir = TempDir::new();
    let ca = Ca::new("check CA");
    let issued = ca.issue(&["c.test"]);
    let combined = dir.write(
        "combined.pem",
        format!("{}{}", issued.cert_pem, issued.key_pem),
    );
    let ip_only = ca.issue(&["192.0.2.1"]);
    check(&[
        source(combined.clone(), combined),
        CertSource {
            server_names: vec!["*.ip.test".into(), "IP.test.".into()],
            ..ip_only.write(&dir, "ip")
        },
    ])
    .expect("valid sources");
}

// === SNI table ===

#[test]
fn name_patterns_accept_dns_names_and_one_label_wildcards() {
    let exact = |s: &str| Some(NamePattern::Exact(s.into()));
    let wild = |s: &str| Some(NamePattern::Wildcard(s.into()));
    assert_eq!(
        NamePattern::parse("www.example.com"),
        exact("www.example.com")
    );
    assert_eq!(
        NamePattern::parse("WWW.Example.COM."),
        exact("www.example.com")
    );
    assert_eq!(NamePattern::parse("localhost"), exact("localhost"));
    assert_eq!(NamePattern::parse("*.example.com"), wild("example.com"));
    for bad in [
        "",
        "*",
        "*.",
        "a.*.com",
        "*foo.com",
        "**.com",
        "a..b",
        "a b.com",
        "192.0.2.1",
    ] {
        assert_eq!(NamePattern::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn select_prefers_exact_then_wildcard_then_the_first_certificate() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).expect("signing key");
    let certified = Arc::new(CertifiedKey::new(Vec::new(), signing));
    let loaded = |names: &[&str]| Loaded {
        key: Arc::clone(&certified),
        names: names
            .iter()
            .map(|n| NamePattern::parse(n).expect("valid name"))
            .collect(),
        cert_file: PathBuf::from("test.pem"),
    };
    let resolver = SniResolver::new(vec![
        loaded(&["default.test"]),
        loaded(&["*.example.com"]),
        loaded(&["www.example.com", "example.com"]),
        // Claimed by index 1 already: the first claim wins.
        loaded(&["*.example.com", "only.test"]),
    ])
    .expect("non-empty");
    let cases = [
        (None, 0),
        (Some("default.test"), 0),
        (Some("nomatch.test"), 0),
        (Some("a.example.com"), 1),
        (Some("A.Example.Com."), 1),
        (Some("www.example.com"), 2),
        (Some("example.com"), 2),
        (Some("a.b.example.com"), 0),
        (Some("only.test"), 3),
        (Some("test"), 0),
    ];
    for (sni, want) in cases {
        assert_eq!(resolver.select(sni), want, "{sni:?}");
    }
    assert!(SniResolver::new(Vec::new()).is_none());
}
