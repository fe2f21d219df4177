//! Reading PEM files into DER items, with errors that name the file and say what was expected.
//!
//! Each file is read whole, then split into its PEM blocks by `rustls-pki-types`'s parser (through
//! rustls's re-export, so the version always matches rustls). Blocks of kinds a file does not need
//! are skipped, so a combined "chain + key" file can serve as both the certificate and the key file.

use std::path::Path;

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use super::{FileKind, TlsError};

/// Every recognised PEM block of a file, in order.
type Blocks = Vec<(SectionKind, Vec<u8>)>;

/// The certificate chain in a certificate file, server certificate first. Never empty.
pub(super) fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (_, blocks) = read_blocks(FileKind::Certificate, path)?;
    let has_key = blocks.iter().any(|(kind, _)| is_private_key(*kind));
    let chain = certificates(blocks);
    if chain.is_empty() {
        return Err(if has_key {
            TlsError::KeyInCertificateFile {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::NoCertificate {
                kind: FileKind::Certificate,
                path: path.to_path_buf(),
            }
        });
    }
    Ok(chain)
}

/// The one private key in a key file.
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (text, blocks) = read_blocks(FileKind::PrivateKey, path)?;
    let mut keys = blocks.into_iter().filter_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
        _ => None,
    });
    let path_buf = || path.to_path_buf();
    let Some(key) = keys.next() else {
        // The PEM parser skips block kinds it does not know, such as encrypted keys.
        return Err(
            if contains(&text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                TlsError::EncryptedPrivateKey { path: path_buf() }
            } else if contains(&text, b"-----BEGIN CERTIFICATE-----") {
                TlsError::CertificateInKeyFile { path: path_buf() }
            } else {
                TlsError::NoPrivateKey { path: path_buf() }
            },
        );
    };
    let others = keys.count();
    if others > 0 {
        return Err(TlsError::SeveralPrivateKeys {
            path: path_buf(),
            count: others + 1,
        });
    }
    Ok(key)
}

/// The certificates in a CA file. Never empty.
pub(super) fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (_, blocks) = read_blocks(FileKind::Ca, path)?;
    let certs = certificates(blocks);
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            kind: FileKind::Ca,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads a file and parses its PEM blocks, returning the raw text too (for hints about blocks the
/// parser skips).
fn read_blocks(kind: FileKind, path: &Path) -> Result<(Vec<u8>, Blocks), TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(TlsError::Empty {
            kind,
            path: path.to_path_buf(),
        });
    }
    let blocks = <(SectionKind, Vec<u8>)>::pem_slice_iter(&text)
        .collect::<Result<Blocks, _>>()
        .map_err(|source| TlsError::MalformedPem {
            kind,
            path: path.to_path_buf(),
            source,
        })?;
    // DER starts with an ASN.1 SEQUENCE tag (0x30) and is binary; PEM is ASCII text.
    if blocks.is_empty() && text.first() == Some(&0x30) && !text.is_ascii() {
        return Err(TlsError::NotPem {
            kind,
            path: path.to_path_buf(),
        });
    }
    Ok((text, blocks))
}

/// The `CERTIFICATE` blocks, in file order.
fn certificates(blocks: Blocks) -> Vec<CertificateDer<'static>> {
    blocks
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect()
}

/// Whether a block kind is a private key.
fn is_private_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
