//! Reading certificates, keys and CRLs from PEM files, for the broker's listeners and the
//! clients alike. Every error names the file.
use std::path::{Path, PathBuf};

pub mod version1;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// A certificate, key or CRL file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// Unreadable or not PEM.
    #[error("cannot read {what} from {path}: {message}")]
    Read {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Readable, but holding nothing of the kind.
    #[error("no {what} found in {path}")]
    Empty {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

fn read_err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsFileError {
    TlsFileError::Read { what, path: path.to_owned(), message: e.to_string() }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("certificates", path, e))?;
    if certs.is_empty() {
        return Err(TlsFileError::Empty { what: "certificate", path: path.to_owned() });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsFileError::Empty { what: "private key", path: path.to_owned() }
        }
        e => read_err("a private key", path, e),
    })
}

/// Every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsFileError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| read_err("CRLs", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("CRLs", path, e))
}

/// Trust anchors from a CA file and / or every PEM file of a directory (mosquitto's
/// `cafile` and `capath`).
pub fn load_roots(cafile: Option<&Path>, capath: Option<&Path>) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    let mut add = |path: &Path| -> Result<(), TlsFileError> {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| read_err("a CA certificate", path, e))?;
        }
        Ok(())
    };
    if let Some(f) = cafile {
        add(f)?;
    }
    if let Some(dir) = capath {
        let entries = std::fs::read_dir(dir).map_err(|e| read_err("CA certificates", dir, e))?;
        let mut files: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        files.sort();
        for f in files {
            // A CA directory holds other files too (hash links to the same, READMEs): take
            // what parses as certificates.
            if let Ok(certs) = load_certs(&f) {
                for cert in certs {
                    let _ = roots.add(cert);
                }
            }
        }
    }
    Ok(roots)
}

/// What [`certified_key`] found out about a certificate that works but is worth a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateNote {
    /// An X.509 version 1 certificate: what `openssl x509 -req` makes without an extensions
    /// file, as mosquitto's manual shows. OpenSSL peers (mosquitto and its clients) take it,
    /// and midge's ([`version1`]); other peers built on rustls, or on webpki, refuse it.
    Version1,
}

impl std::fmt::Display for CertificateNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "an X.509 version 1 certificate (made without extensions): mosquitto's clients and \
             midge's take it, some others (those built on rustls or webpki) refuse it; `midge \
             cert`, or `openssl x509 -req` with `-extfile`, makes version 3",
        )
    }
}

/// True for an X.509 version 1 certificate (DER) ([`CertificateNote::Version1`]).
pub fn is_version_1(der: &[u8]) -> bool {
    version_1_public_key(der).is_some()
}

/// The public key (its SubjectPublicKeyInfo) of an X.509 version 1 certificate; `None` for
/// any other or an unreadable one.
fn version_1_public_key(der: &[u8]) -> Option<&[u8]> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    // The field, not `public_key()`: its bytes borrow `der`, not `cert`.
    let key = cert.tbs_certificate.subject_pki.raw;
    (cert.version() == x509_parser::x509::X509Version::V1).then_some(key)
}

/// A certificate chain and the private key of its first certificate, checked to belong
/// together. rustls's own check parses the certificate with webpki, which refuses X.509
/// version 1: such a certificate is taken here (its public key compared as the check does)
/// with [`CertificateNote::Version1`], since OpenSSL peers accept it.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(rustls::sign::CertifiedKey, Option<CertificateNote>), rustls::Error> {
    use rustls::{Error, InconsistentKeys};
    let signing_key = provider.key_provider.load_private_key(key)?;
    let public_key = signing_key.public_key().map(|k| k.into_owned());
    let certified = rustls::sign::CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok((certified, None)),
        Err(Error::InvalidCertificate(e)) => {
            let der = certified.end_entity_cert()?;
            let Some(cert_key) = version_1_public_key(der.as_ref()) else {
                return Err(Error::InvalidCertificate(e));
            };
            match public_key {
                Some(spki) if spki.as_ref() != cert_key => Err(InconsistentKeys::KeyMismatch.into()),
                _ => Ok((certified, Some(CertificateNote::Version1))),
            }
        }
        Err(e) => Err(e),
    }
}
