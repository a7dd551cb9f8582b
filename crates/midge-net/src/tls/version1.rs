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

/// The certificate in `der` when it is version 1 (and nothing follows it). One that carries
/// what only later versions may (extensions, unique identifiers: RFC 5280 4.1.2.8, 4.1.2.9)
/// is not taken: its extensions would go unchecked.
fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((rest, cert))
            if rest.is_empty()
                && cert.version() == X509Version::V1
                && cert.extensions().is_empty()
                && cert.tbs_certificate.issuer_uid.is_none()
                && cert.tbs_certificate.subject_uid.is_none() =>
        {
            Some(cert)
        }
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
/// what the caller checks next (revocation, a server's name). Any other certificate, a
/// version 1 certificate issued by an intermediate CA, and one issued by a CA with name
/// constraints (which its subject's names would have to meet) get an error.
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
    for anchor in roots.roots.iter().filter(|a| a.subject.as_ref() == issuer && a.name_constraints.is_none())
    {
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

/// A handshake signature (TLS 1.2 `tls13` false, TLS 1.3 true) as webpki checked it
/// (`webpki`), or, where webpki refused the key of a version 1 certificate that [`verify`]
/// accepted, as checked with that key: what both a client's and a server's verifier do.
pub fn handshake_signature(
    webpki: Result<HandshakeSignatureValid, Error>,
    message: &[u8],
    der: &[u8],
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    let Err(refused) = webpki else { return webpki };
    let Some(cert) = parse(der) else { return Err(refused) };
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
/// it, case aside. An IP address must be the Common Name exactly; a host name may match
/// `*.` and at least two labels (`*.example.com`, not `*.com`), the `*` standing for one
/// leftmost label. False for a certificate with subjectAltName DNS or IP entries: then only
/// those count, as webpki checks them. The caller makes sure no CA of the chain constrains
/// names ([`constrains_names`]): those constraints are not checked here.
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
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let named = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).any(|cn| {
        let cn = cn.to_ascii_lowercase();
        match cn.strip_prefix("*.") {
            Some(domain)
                if !is_ip
                    && !domain.contains('*')
                    && domain.split('.').filter(|l| !l.is_empty()).count() >= 2 =>
            {
                host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == domain)
            }
            _ => cn == host,
        }
    });
    named
}

/// True when a CA of this chain may constrain the names its certificates hold: one of the
/// `intermediates` has a nameConstraints extension, or a trust anchor that issued one of the
/// chain's certificates has name constraints. A Common Name is then not taken for the host
/// ([`common_name_names`] does not check constraints).
pub fn constrains_names(end_entity: &[u8], intermediates: &[&[u8]], roots: &RootCertStore) -> bool {
    use x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS;
    let mut issuers = Vec::new();
    for (i, der) in std::iter::once(end_entity).chain(intermediates.iter().copied()).enumerate() {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return true };
        if i > 0 && cert.extensions().iter().any(|e| e.oid == OID_X509_EXT_NAME_CONSTRAINTS) {
            return true;
        }
        match contents(cert.issuer().as_raw()) {
            Some(issuer) => issuers.push(issuer.to_vec()),
            None => return true,
        }
    }
    roots
        .roots
        .iter()
        .any(|a| a.name_constraints.is_some() && issuers.iter().any(|i| i.as_slice() == a.subject.as_ref()))
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
        // As OpenSSL and webpki: not for a top-level domain, nor for an IP address.
        assert!(!common_name_names(&cert("*.com", &[]), "example.com"));
        assert!(!common_name_names(&cert("*.0.0.1", &[]), "127.0.0.1"));
        assert!(!common_name_names(&cert("*", &[]), "localhost"));
    }

    /// A CA (with name constraints or not) as a root and as DER, and a certificate for `cn`
    /// it issued.
    fn issued(constrained: bool, cn: &str) -> (RootCertStore, Vec<u8>, Vec<u8>) {
        use rcgen::{BasicConstraints, GeneralSubtree, IsCa, Issuer, NameConstraints};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        if constrained {
            ca.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
                excluded_subtrees: vec![],
            });
        }
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_der = ca_cert.der().to_vec();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, cn);
        let issuer = Issuer::new(ca, ca_key);
        let leaf = leaf.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
        (roots, ca_der, leaf.der().to_vec())
    }

    #[test]
    fn a_ca_that_constrains_names_keeps_the_common_name_out() {
        let (roots, _, leaf) = issued(false, "127.0.0.1");
        assert!(!constrains_names(&leaf, &[], &roots));
        let (constrained_roots, constrained_ca, leaf) = issued(true, "127.0.0.1");
        assert!(constrains_names(&leaf, &[], &constrained_roots));
        // A CA with name constraints sent as an intermediate, whatever the roots.
        assert!(constrains_names(&leaf, &[&constrained_ca], &roots));
    }

    #[test]
    fn a_version_3_certificate_is_not_taken_here() {
        let (roots, _, v3) = issued(false, "broker.example");
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        assert_eq!(
            verify(&v3, &roots, UnixTime::now(), &algorithms).err(),
            Some(invalid(CertificateError::BadEncoding))
        );
    }
}
