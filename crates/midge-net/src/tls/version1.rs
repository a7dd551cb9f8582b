//! X.509 version 1 end-entity certificates: what `openssl x509 -req` makes without an
//! extensions file, as mosquitto's manual (mosquitto-tls(7)) shows. OpenSSL, so mosquitto and
//! its clients, takes them; webpki, so rustls, refuses any certificate but version 3. midge
//! takes one where OpenSSL would, issued directly by a trusted CA, and checks what OpenSSL
//! checks: the CA's signature (with the algorithms rustls accepts, nothing weaker) and the
//! validity period. A version 1 certificate has no extensions: no key usage, no CA flag, no
//! names but its subject, so there is nothing more to check. The handshake's signature is
//! then checked with its public key as rustls checks a raw public key (RFC 7250).
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, Error, PeerMisbehaved, RootCertStore};
use rustls_pki_types::{SubjectPublicKeyInfoDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Any, FromDer};
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Version;

fn invalid(e: CertificateError) -> Error {
    Error::InvalidCertificate(e)
}

/// The certificate in `der` when it is version 1 (and nothing follows it).
fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((rest, cert)) if rest.is_empty() && cert.version() == X509Version::V1 => Some(cert),
        _ => None,
    }
}

/// The contents of a DER element (its value, without tag and length): how webpki holds names,
/// public keys and algorithm identifiers.
fn contents(der: &[u8]) -> Option<&[u8]> {
    Any::from_der(der).ok().map(|(_, any)| any.data)
}

/// A SEQUENCE of these contents, in DER.
fn sequence(contents: &[u8]) -> Vec<u8> {
    let n = contents.len();
    let mut out = vec![0x30];
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = n.to_be_bytes();
        let skip = len.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// The certificate's outer signatureAlgorithm (the contents of its AlgorithmIdentifier, as
/// webpki compares it with an algorithm's identifier) and its signature.
fn signature_parts<'a>(der: &'a [u8], cert: &X509Certificate<'a>) -> Option<(&'a [u8], &'a [u8])> {
    let certificate = contents(der)?;
    let (after_tbs, _) = Any::from_der(certificate).ok()?;
    let (_, algorithm) = Any::from_der(after_tbs).ok()?;
    // [RFC 5280 4.1.1.2] the outer algorithm MUST be the one inside the signed part.
    if cert.signature_algorithm != cert.tbs_certificate.signature || cert.signature_value.unused_bits != 0 {
        return None;
    }
    let signature: &'a [u8] = match &cert.signature_value.data {
        std::borrow::Cow::Borrowed(b) => b,
        std::borrow::Cow::Owned(_) => return None,
    };
    Some((algorithm.data, signature))
}

/// Verifies a version 1 end-entity certificate (DER) as OpenSSL does: signed by one of
/// `roots` (a CA whose subject is its issuer) and valid at `now`. Returns it parsed, for
/// what the caller checks next (revocation, a server's name). Any other certificate, and a
/// version 1 certificate issued by an intermediate CA, gets an error.
pub fn verify<'a>(
    der: &'a [u8],
    roots: &RootCertStore,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<X509Certificate<'a>, Error> {
    let cert = parse(der).ok_or(invalid(CertificateError::BadEncoding))?;
    let (algorithm, signature) = signature_parts(der, &cert).ok_or(invalid(CertificateError::BadEncoding))?;
    let issuer = contents(cert.issuer().as_raw()).ok_or(invalid(CertificateError::BadEncoding))?;
    let mut error = CertificateError::UnknownIssuer;
    for anchor in roots.roots.iter().filter(|a| a.subject.as_ref() == issuer) {
        let spki = sequence(anchor.subject_public_key_info.as_ref());
        let spki = SubjectPublicKeyInfoDer::from(spki.as_slice());
        let Ok(key) = webpki::RawPublicKeyEntity::try_from(&spki) else { continue };
        let signed = algorithms
            .all
            .iter()
            .filter(|alg| alg.signature_alg_id().as_ref() == algorithm)
            .any(|alg| key.verify_signature(*alg, cert.tbs_certificate.as_ref(), signature).is_ok());
        if !signed {
            error = CertificateError::BadSignature;
            continue;
        }
        let now = ASN1Time::from_timestamp(now.as_secs() as i64)
            .map_err(|_| invalid(CertificateError::BadEncoding))?;
        let validity = cert.validity();
        if now < validity.not_before {
            return Err(invalid(CertificateError::NotValidYet));
        }
        if now > validity.not_after {
            return Err(invalid(CertificateError::Expired));
        }
        return Ok(cert);
    }
    Err(invalid(error))
}

/// Verifies a handshake signature (TLS 1.2 `tls13` false, TLS 1.3 true) made with the key of a
/// version 1 certificate that [`verify`] accepted.
pub fn verify_handshake_signature(
    message: &[u8],
    der: &[u8],
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    let cert = parse(der).ok_or(invalid(CertificateError::BadEncoding))?;
    let spki = SubjectPublicKeyInfoDer::from(cert.tbs_certificate.subject_pki.raw);
    if tls13 {
        return rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms);
    }
    // As rustls's TLS 1.2 check: the scheme names several algorithms; one must verify.
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| *algs)
        .ok_or(Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme))?;
    let key =
        webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| invalid(CertificateError::BadEncoding))?;
    if candidates.iter().any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok()) {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(invalid(CertificateError::BadSignature))
    }
}

/// OpenSSL's fallback when a certificate names no host in a subjectAltName (a version 1
/// certificate cannot): the host in its subject's Common Name, as mosquitto's clients check
/// it (case aside, `*.` standing for one leftmost label). False for a certificate with
/// subjectAltName DNS or IP entries: then only those count, as webpki checks them.
pub fn common_name_names(der: &[u8], host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let names_a_host = |n: &GeneralName<'_>| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_));
    match cert.subject_alternative_name() {
        Ok(None) => {}
        Ok(Some(san)) if !san.value.general_names.iter().any(names_a_host) => {}
        _ => return false,
    }
    let host = host.to_ascii_lowercase();
    let named = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).any(|cn| {
        let cn = cn.to_ascii_lowercase();
        match cn.strip_prefix("*.") {
            Some(domain) => {
                host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == domain)
            }
            None => cn == host,
        }
    });
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A self-signed version 3 certificate with this Common Name and these subjectAltNames.
    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_names_the_host_only_without_subject_alt_names() {
        let cn_only = cert("Broker.Example", &[]);
        assert!(common_name_names(&cn_only, "broker.example"));
        assert!(common_name_names(&cn_only, "BROKER.example"));
        assert!(!common_name_names(&cn_only, "other.example"));
        assert!(!common_name_names(&cn_only, "broker.example.evil"));
        // With a subjectAltName for a host, only those count, as webpki checks them.
        let with_san = cert("broker.example", &["other.example"]);
        assert!(!common_name_names(&with_san, "broker.example"));
        let with_ip = cert("127.0.0.1", &["10.0.0.1"]);
        assert!(!common_name_names(&with_ip, "127.0.0.1"));
        assert!(common_name_names(&cert("127.0.0.1", &[]), "127.0.0.1"));
    }

    #[test]
    fn a_wildcard_common_name_stands_for_one_leftmost_label() {
        let wildcard = cert("*.example.com", &[]);
        assert!(common_name_names(&wildcard, "a.example.com"));
        assert!(!common_name_names(&wildcard, "example.com"));
        assert!(!common_name_names(&wildcard, "a.b.example.com"));
        assert!(!common_name_names(&wildcard, ".example.com"));
    }

    #[test]
    fn a_version_3_certificate_is_not_taken_here() {
        let v3 = cert("broker.example", &[]);
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let roots = RootCertStore::empty();
        assert_eq!(
            verify(&v3, &roots, UnixTime::now(), &algorithms).err(),
            Some(invalid(CertificateError::BadEncoding))
        );
    }
}
