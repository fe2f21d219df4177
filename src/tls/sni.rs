//! Picking the certificate for a handshake from the client's SNI (RFC 6066 §3).
//!
//! Lookup is two hash probes, built once per config: the exact name, then the name minus its first
//! label in the wildcard table (so `*.example.com` matches one label, as RFC 6125 §6.4.3 has
//! clients check it). Anything else gets the first certificate.
//!
//! rustls's own `ResolvesServerCertUsingSni` has neither wildcards nor a default, hence this.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::DnsName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A host name a certificate is selected by, lowercased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NamePattern {
    /// `www.example.com`
    Exact(String),
    /// `*.example.com`, stored as the parent `example.com`.
    Wildcard(String),
}

impl NamePattern {
    /// Parses `www.example.com` or `*.example.com`; `None` for anything else (`*`, `a.*.com`,
    /// `*foo.com`, IP addresses, empty labels).
    pub(super) fn parse(name: &str) -> Option<NamePattern> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => {
                DnsName::try_from(parent).ok()?;
                Some(NamePattern::Wildcard(parent.to_owned()))
            }
            None => {
                DnsName::try_from(name.as_str()).ok()?;
                Some(NamePattern::Exact(name))
            }
        }
    }
}

/// One loaded certificate with the names it is selected by.
#[derive(Debug)]
pub(super) struct Loaded {
    /// Chain and signing key, checked to match.
    pub(super) key: Arc<CertifiedKey>,
    /// The names from `server_names`, or from the certificate's SAN when none were given.
    pub(super) names: Vec<NamePattern>,
    /// For the duplicate-name warning.
    pub(super) cert_file: PathBuf,
}

/// The certificate table a `ServerConfig` consults on every handshake. Immutable once built.
#[derive(Debug)]
pub(super) struct SniResolver {
    /// Certificates in configuration order; index 0 is the default. Never empty.
    keys: Vec<Arc<CertifiedKey>>,
    /// Exact name → index into `keys`.
    exact: HashMap<String, usize>,
    /// Wildcard parent (`example.com` for `*.example.com`) → index into `keys`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// Builds the table; `None` when `loaded` is empty. A name claimed twice keeps its first
    /// certificate, and a warning names both files.
    pub(super) fn new(loaded: Vec<Loaded>) -> Option<SniResolver> {
        if loaded.is_empty() {
            return None;
        }
        let mut resolver = SniResolver {
            keys: Vec::with_capacity(loaded.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        let mut files: Vec<PathBuf> = Vec::with_capacity(loaded.len());
        for (index, cert) in loaded.into_iter().enumerate() {
            for name in cert.names {
                let (table, key, shown) = match name {
                    NamePattern::Exact(n) => (&mut resolver.exact, n.clone(), n),
                    NamePattern::Wildcard(p) => {
                        (&mut resolver.wildcard, p.clone(), format!("*.{p}"))
                    }
                };
                match table.get(&key) {
                    Some(&first) if first != index => tracing::warn!(
                        name = %shown,
                        used = %files[first].display(),
                        ignored = %cert.cert_file.display(),
                        "TLS: two certificates claim the same server name; the first is used"
                    ),
                    Some(_) => {}
                    None => {
                        table.insert(key, index);
                    }
                }
            }
            resolver.keys.push(cert.key);
            files.push(cert.cert_file);
        }
        Some(resolver)
    }

    /// The index of the certificate for `sni` (as sent by the client; rustls already lowercases
    /// it, but that is not relied on).
    pub(super) fn select(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni else { return 0 };
        let name = name.strip_suffix('.').unwrap_or(name);
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if let Some(&index) = self.exact.get(name.as_ref()) {
            return index;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys
            .get(self.select(client_hello.server_name()))
            .cloned()
    }
}
