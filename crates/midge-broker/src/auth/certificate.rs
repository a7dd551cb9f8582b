//! Client certificates of live connections, and the certificates a listener's CRLs revoke.
//!
//! The TLS handshake checks a certificate once. A CRL reloaded later (SIGHUP after `midge
//! cert revoke`) must also reach the devices already connected, or revoking a stolen key
//! would wait for the thief to reconnect: each connection keeps its certificate's issuer and
//! serial number, and a reload checks them against the listener's new revocations.
use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateRevocationListDer;

/// A CRL that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CRL: {0}")]
pub struct CrlError(String);

/// The certificates some CRLs revoke, by issuer and serial number.
#[derive(Debug, Default)]
pub struct Revocations {
    /// (issuer name as DER, serial number without leading zero bytes).
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
    /// The issuers (names as DER) the CRLs are of.
    issuers: HashSet<Vec<u8>>,
}

/// A serial number as compared: the integer's bytes without leading zeros, so that an
/// encoding with a sign byte and one without are the same number.
fn serial_key(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

impl Revocations {
    /// What these CRLs (DER, as read from `crlfile`) revoke.
    pub fn from_crls(crls: &[CertificateRevocationListDer<'_>]) -> Result<Revocations, CrlError> {
        let (mut revoked, mut issuers) = (HashSet::new(), HashSet::new());
        for der in crls {
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| CrlError(e.to_string()))?;
            let issuer = crl.issuer().as_raw();
            issuers.insert(issuer.to_vec());
            revoked.extend(
                crl.iter_revoked_certificates().map(|r| (issuer.to_vec(), serial_key(r.raw_serial()))),
            );
        }
        Ok(Revocations { revoked, issuers })
    }

    /// How many certificates they revoke.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// True when they revoke none.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Whether they revoke the certificate of `issuer` (its name as DER) with this serial
    /// number (as the certificate encodes it); `None` when none of them is `issuer`'s, so
    /// that the certificate's status is unknown.
    pub fn revokes(&self, issuer: &[u8], raw_serial: &[u8]) -> Option<bool> {
        self.issuers.contains(issuer).then(|| self.contains(issuer, &serial_key(raw_serial)))
    }

    fn contains(&self, issuer: &[u8], serial: &[u8]) -> bool {
        // Allocation-free would need a borrowed key type; this runs once per connection per reload.
        self.revoked.contains(&(issuer.to_vec(), serial.to_vec()))
    }
}

/// A listener's revocations in force, swapped whole on reload; every connection with a
/// client certificate holds the listener's.
pub type SharedRevocations = Arc<ArcSwap<Revocations>>;

/// A verified client certificate: what a reload needs to check it again, and to name it.
#[derive(Debug)]
pub struct ClientCertificate {
    issuer: Vec<u8>,
    serial: Vec<u8>,
    subject: String,
    revocations: SharedRevocations,
}

impl ClientCertificate {
    /// The certificate (DER) a client presented on a listener with these revocations;
    /// `None` if it cannot be parsed (the handshake verified it, so it can).
    pub fn parse(der: &[u8], revocations: SharedRevocations) -> Option<ClientCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(ClientCertificate {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: serial_key(cert.raw_serial()),
            subject: cert.subject().to_string(),
            revocations,
        })
    }

    /// True when the CRLs in force on its listener revoke it.
    pub fn is_revoked(&self) -> bool {
        self.revocations.load().contains(&self.issuer, &self.serial)
    }

    /// The serial number in hex, as `midge cert list` and `openssl x509 -serial` show it.
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The subject, as text (`CN=sensor-1`).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl std::fmt::Display for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "certificate {} (serial {})", self.subject, self.serial_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_as_numbers() {
        assert_eq!(serial_key(&[0x00, 0x9f, 0x01]), vec![0x9f, 0x01]);
        assert_eq!(serial_key(&[0x7f]), vec![0x7f]);
        assert_eq!(serial_key(&[0x00]), Vec::<u8>::new());
    }

    #[test]
    fn a_certificate_is_revoked_once_the_shared_revocations_list_it() {
        let revocations: SharedRevocations = Default::default();
        let cert = ClientCertificate {
            issuer: b"issuer".to_vec(),
            serial: vec![1, 2],
            subject: "CN=sensor-1".into(),
            revocations: revocations.clone(),
        };
        assert!(!cert.is_revoked());
        let mut listed = Revocations::default();
        listed.revoked.insert((b"other issuer".to_vec(), vec![1, 2]));
        revocations.store(Arc::new(listed));
        assert!(!cert.is_revoked(), "the same serial from another issuer is another certificate");
        let mut listed = Revocations::default();
        listed.revoked.insert((b"issuer".to_vec(), vec![1, 2]));
        revocations.store(Arc::new(listed));
        assert!(cert.is_revoked());
        assert_eq!(cert.to_string(), "certificate CN=sensor-1 (serial 0102)");
    }
}
