//! TLS listeners: rustls server configuration from mosquitto's options, client certificate
//! verification (CA, CRL), and the user name a certificate stands for.
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::auth::{ClientCertificate, Revocations, SharedRevocations};
use crate::config::{TlsSettings, TlsVersion};

/// Why a TLS listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CRL file.
    #[error(transparent)]
    File(#[from] midge_net::tls::TlsFileError),
    /// The settings do not fit together.
    #[error("{0}")]
    Settings(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// A TLS listener's acceptor, replaced on reload (SIGHUP) without touching live connections.
///
/// The files are reloaded part by part: the certificate and key, the CA certificates, the
/// CRL. A part whose files cannot be read again (a key only root can read, once the broker
/// runs as its `user`) keeps its previous version, and the others still apply: a new CRL
/// must not wait on the server's key.
pub struct TlsListener {
    settings: TlsSettings,
    /// The application protocols offered in the handshake (ALPN).
    alpn: &'static [&'static [u8]],
    acceptor: ArcSwap<TlsAcceptor>,
    /// The parts in force, for the next reload.
    parts: Mutex<Parts>,
    /// What the CRLs in force revoke: every connection's client certificate refers to it.
    revocations: SharedRevocations,
}

/// The parts a listener's configuration is built from.
struct Parts {
    identity: Arc<CertifiedKey>,
    /// `None` without cafile / capath.
    roots: Option<Arc<RootCertStore>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// What `crls` revoke.
    revoked: Arc<Revocations>,
}

/// What a reload of a TLS listener did, part by part.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsReload {
    /// The parts read again and applied, with their files.
    pub reloaded: Vec<String>,
    /// The parts that could not be, each with why; their previous version stays in force.
    pub failed: Vec<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_identity(s: &TlsSettings) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let (Some(certfile), Some(keyfile)) = (&s.certfile, &s.keyfile) else {
        return Err(TlsSetupError::Settings("a TLS listener needs both certfile and keyfile".into()));
    };
    let certs = complete_chain(midge_net::tls::load_certs(certfile)?, s);
    let key = midge_net::tls::load_key(keyfile)?;
    let (key, note) = midge_net::tls::certified_key(certs, key, &provider()).map_err(|e| {
        TlsSetupError::Rustls(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "keyfile {} does not hold the key of certfile {} (key values mismatch)",
                keyfile.display(),
                certfile.display()
            ),
            e => format!("certfile {} with keyfile {}: {e}", certfile.display(), keyfile.display()),
        })
    })?;
    if let Some(note) = note {
        tracing::warn!("{} is {note}.", certfile.display());
    }
    Ok(Arc::new(key))
}

/// The server's chain as OpenSSL (so mosquitto) sends it: a certfile that ends before a
/// root is completed with the intermediate CAs of `cafile` that issued it, so that clients
/// that trust only the root can verify it. The root itself is not sent (the client has it).
fn complete_chain(mut certs: Vec<CertificateDer<'static>>, s: &TlsSettings) -> Vec<CertificateDer<'static>> {
    let Some(cas) = s.cafile.as_deref().and_then(|f| midge_net::tls::load_certs(f).ok()) else {
        return certs;
    };
    // Subject and issuer of each CA, as DER names (compared byte for byte, as OpenSSL does
    // to find a candidate issuer).
    let names = |der: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(der.as_ref())
            .ok()
            .map(|(_, c)| (c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec()))
    };
    // A chain is short: at most a few intermediates.
    for _ in 0..8 {
        let Some((subject, issuer)) = certs.last().and_then(names) else { break };
        if subject == issuer {
            break;
        }
        let next = cas
            .iter()
            .find(|ca| names(ca).is_some_and(|(s, i)| s == issuer && s != i) && !certs.contains(ca));
        match next {
            Some(ca) => certs.push(ca.clone()),
            None => break,
        }
    }
    certs
}

fn load_roots(s: &TlsSettings) -> Result<Option<Arc<RootCertStore>>, TlsSetupError> {
    if s.cafile.is_none() && s.capath.is_none() {
        return Ok(None);
    }
    let roots = midge_net::tls::load_roots(s.cafile.as_deref(), s.capath.as_deref())?;
    if roots.is_empty() {
        return Err(TlsSetupError::Settings("cafile / capath hold no CA certificate".into()));
    }
    Ok(Some(Arc::new(roots)))
}

/// The CRLs of `crlfile`, and what they revoke.
fn load_crls(
    s: &TlsSettings,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Arc<Revocations>), TlsSetupError> {
    let Some(path) = &s.crlfile else { return Ok(Default::default()) };
    let crls = midge_net::tls::load_crls(path)?;
    let revoked = Revocations::from_crls(&crls)
        .map_err(|e| TlsSetupError::Settings(format!("{}: {e}", path.display())))?;
    Ok((crls, Arc::new(revoked)))
}

impl TlsListener {
    /// Builds the acceptor of an MQTT listener (ALPN `mqtt`); fails on any unusable file.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsSetupError> {
        Self::with_alpn(settings, ALPN_MQTT)
    }

    /// Builds the acceptor, offering `alpn`: [`ALPN_MQTT`] for MQTT, [`ALPN_HTTP`] for
    /// WebSockets and the metrics endpoint, whose clients (browsers, Prometheus) offer HTTP
    /// and would be refused a handshake that offers only `mqtt`.
    pub fn with_alpn(settings: TlsSettings, alpn: &'static [&'static [u8]]) -> Result<Self, TlsSetupError> {
        let identity = load_identity(&settings)?;
        let roots = load_roots(&settings)?;
        let (crls, revoked) = load_crls(&settings)?;
        let parts = Parts { identity, roots, crls, revoked: revoked.clone() };
        let acceptor = build(&settings, &parts, alpn)?;
        Ok(TlsListener {
            settings,
            alpn,
            acceptor: ArcSwap::from_pointee(acceptor),
            parts: Mutex::new(parts),
            revocations: Arc::new(ArcSwap::new(revoked)),
        })
    }

    /// Reads the certificate and key, the CAs and the CRL again, each on its own: what
    /// cannot be read or used keeps its previous version, and the rest applies. Connections
    /// already up keep their session; the caller has them check their client certificates
    /// against the new CRL ([`crate::Broker::recheck_connections`]).
    pub fn reload(&self) -> TlsReload {
        let s = &self.settings;
        let mut report = TlsReload::default();
        let mut parts = self.parts.lock();
        let names = |files: &[&Option<std::path::PathBuf>]| {
            files
                .iter()
                .filter_map(|f| f.as_ref())
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Each part as read now, or None where it stays as it is (with why).
        let mut identity = match load_identity(s) {
            Ok(i) => Some(i),
            Err(e) => {
                report.failed.push(format!("the certificate and key: {e}; the previous ones stay in force"));
                None
            }
        };
        let mut roots = match load_roots(s) {
            Ok(r) if r.is_some() => Some(r),
            Ok(_) => None,
            Err(e) => {
                report.failed.push(format!("the CA certificates: {e}; the previous ones stay in force"));
                None
            }
        };
        let mut crls = match load_crls(s) {
            Ok(c) if s.crlfile.is_some() => Some(c),
            Ok(_) => None,
            Err(e) => {
                report.failed.push(format!("the CRL: {e}; the previous one stays in force"));
                None
            }
        };
        // The verifier: the new CAs and CRL, else (if rustls refuses them) the previous CRL,
        // else the previous CAs too.
        let verifier = loop {
            let candidate = Parts {
                identity: parts.identity.clone(),
                roots: roots.clone().unwrap_or_else(|| parts.roots.clone()),
                crls: crls.as_ref().map_or_else(|| parts.crls.clone(), |(c, _)| c.clone()),
                revoked: crls.as_ref().map_or_else(|| parts.revoked.clone(), |(_, r)| r.clone()),
            };
            match client_verifier(s, &candidate) {
                Ok(v) => break v,
                Err(e) if crls.is_some() => {
                    report.failed.push(format!("the CRL: {e}; the previous one stays in force"));
                    crls = None;
                }
                Err(e) if roots.is_some() => {
                    report.failed.push(format!("the CA certificates: {e}; the previous ones stay in force"));
                    roots = None;
                }
                // The previous parts built before; only a bug gets here.
                Err(e) => {
                    report
                        .failed
                        .push(format!("the TLS configuration: {e}; the previous one stays in force"));
                    return report;
                }
            }
        };
        let config = loop {
            let key = identity.clone().unwrap_or_else(|| parts.identity.clone());
            match server_config(s, verifier.clone(), key, self.alpn) {
                Ok(c) => break c,
                Err(e) if identity.is_some() => {
                    report
                        .failed
                        .push(format!("the certificate and key: {e}; the previous ones stay in force"));
                    identity = None;
                }
                Err(e) => {
                    report
                        .failed
                        .push(format!("the TLS configuration: {e}; the previous one stays in force"));
                    return report;
                }
            }
        };
        self.acceptor.store(Arc::new(TlsAcceptor::from(Arc::new(config))));
        if let Some(i) = identity {
            parts.identity = i;
            report.reloaded.push(format!("the certificate and key ({})", names(&[&s.certfile, &s.keyfile])));
        }
        if let Some(r) = roots {
            parts.roots = r;
            report.reloaded.push(format!("the CA certificates ({})", names(&[&s.cafile, &s.capath])));
        }
        if let Some((c, revoked)) = crls {
            parts.crls = c;
            parts.revoked = revoked.clone();
            let n = revoked.len();
            self.revocations.store(revoked);
            report.reloaded.push(format!(
                "the CRL ({}: {n} revoked certificate{})",
                names(&[&s.crlfile]),
                if n == 1 { "" } else { "s" }
            ));
        }
        report
    }

    /// The acceptor in force.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }

    /// The settings.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// The client certificate a connection's handshake verified, to check it again when the
    /// CRL is reloaded.
    pub fn client_certificate(&self, conn: &rustls::ServerConnection) -> Option<Arc<ClientCertificate>> {
        let der = conn.peer_certificates()?.first()?;
        ClientCertificate::parse(der.as_ref(), self.revocations.clone()).map(Arc::new)
    }
}

/// How client certificates are verified: against the CAs and the CRL, or not asked for.
fn client_verifier(
    s: &TlsSettings,
    parts: &Parts,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsSetupError> {
    let Some(roots) = &parts.roots else {
        if s.require_certificate || s.use_identity_as_username || s.use_subject_as_username {
            return Err(TlsSetupError::Settings(
                "require_certificate and use_identity_as_username need cafile or capath to verify client certificates".into(),
            ));
        }
        return Ok(None);
    };
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
    let mut crl = None;
    if s.crlfile.is_some() {
        verifier = verifier.with_crls(parts.crls.iter().cloned()).only_check_end_entity_revocation();
        crl = Some(parts.revoked.clone());
    }
    if !s.require_certificate {
        verifier = verifier.allow_unauthenticated();
    }
    let webpki = verifier.build().map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let algorithms = provider().signature_verification_algorithms;
    Ok(Some(Arc::new(ClientVerifier { webpki, roots: roots.clone(), crl, algorithms })))
}

/// webpki's verification of client certificates and, where webpki refuses an X.509 version 1
/// certificate that OpenSSL (so mosquitto) takes, [`midge_net::tls::version1`]'s: issued
/// directly by one of the CAs, and checked against the CRL as webpki checks the others (a
/// certificate whose issuer has no CRL in `crlfile` is refused).
#[derive(Debug)]
struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
    /// With `crlfile`: what its CRLs revoke.
    crl: Option<Arc<Revocations>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    fn version_1(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use rustls::CertificateError::{Revoked, UnknownRevocationStatus};
        let cert = midge_net::tls::version1::verify(end_entity.as_ref(), &self.roots, now, &self.algorithms)?;
        match self.crl.as_ref().map(|crl| crl.revokes(cert.issuer().as_raw(), cert.raw_serial())) {
            None | Some(Some(false)) => Ok(ClientCertVerified::assertion()),
            Some(Some(true)) => Err(rustls::Error::InvalidCertificate(Revoked)),
            Some(None) => Err(rustls::Error::InvalidCertificate(UnknownRevocationStatus)),
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.webpki.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(_)) if midge_net::tls::is_version_1(end_entity) => {
                self.version_1(end_entity, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let webpki = self.webpki.verify_tls12_signature(message, cert, dss);
        midge_net::tls::version1::handshake_signature(webpki, message, cert, dss, &self.algorithms, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let webpki = self.webpki.verify_tls13_signature(message, cert, dss);
        midge_net::tls::version1::handshake_signature(webpki, message, cert, dss, &self.algorithms, true)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn server_config(
    s: &TlsSettings,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    identity: Arc<CertifiedKey>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsSetupError> {
    // TLS 1.2 at the least; `tls_version tlsv1.3` makes it 1.3 only.
    let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
        Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn build(s: &TlsSettings, parts: &Parts, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsSetupError> {
    let verifier = client_verifier(s, parts)?;
    Ok(TlsAcceptor::from(Arc::new(server_config(s, verifier, parts.identity.clone(), alpn)?)))
}

/// ALPN of an MQTT listener.
pub const ALPN_MQTT: &[&[u8]] = &[b"mqtt"];
/// ALPN of a listener that speaks HTTP first (WebSockets, metrics): HTTP/1.1, what its
/// server (tungstenite, hyper's http1) speaks.
pub const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

/// The user name a verified client certificate stands for, per the listener's settings:
/// its Common Name (`use_identity_as_username`) or its whole subject in RFC 2253 form
/// (`use_subject_as_username`).
pub fn certificate_username(settings: &TlsSettings, conn: &rustls::ServerConnection) -> Option<String> {
    if !settings.use_identity_as_username && !settings.use_subject_as_username {
        return None;
    }
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    if settings.use_subject_as_username {
        return Some(crate::auth::subject::rfc2253(subject));
    }
    crate::auth::subject::common_name(subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer, KeyIdMethod,
        KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    use std::path::PathBuf;

    /// A CA that issues certificates and CRLs into a directory.
    struct Ca {
        dir: PathBuf,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn new(tag: &str) -> Ca {
            let dir = std::env::temp_dir().join(format!("midge-tls-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
            Ca { dir, issuer: Issuer::new(params, key) }
        }

        /// Issues a certificate with this serial; writes NAME.crt and NAME.key; returns its DER.
        fn issue(&self, name: &str, serial: u8) -> Vec<u8> {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.serial_number = Some(SerialNumber::from_slice(&[serial]));
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            std::fs::write(self.dir.join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
            cert.der().to_vec()
        }

        /// Writes crl.pem revoking these serials.
        fn crl(&self, revoked: &[u8], number: u8) {
            let now = time::OffsetDateTime::now_utc();
            let params = CertificateRevocationListParams {
                this_update: now - time::Duration::minutes(1),
                next_update: now + time::Duration::days(1),
                crl_number: SerialNumber::from_slice(&[number]),
                issuing_distribution_point: None,
                revoked_certs: revoked
                    .iter()
                    .map(|s| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&[*s]),
                        revocation_time: now,
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            std::fs::write(self.dir.join("crl.pem"), params.signed_by(&self.issuer).unwrap().pem().unwrap())
                .unwrap();
        }

        fn path(&self, name: &str) -> Option<PathBuf> {
            Some(self.dir.join(name))
        }
    }

    fn settings(ca: &Ca) -> TlsSettings {
        TlsSettings {
            certfile: ca.path("server.crt"),
            keyfile: ca.path("server.key"),
            cafile: ca.path("ca.crt"),
            crlfile: ca.path("crl.pem"),
            require_certificate: true,
            ..TlsSettings::default()
        }
    }

    fn has(lines: &[String], text: &str) -> bool {
        lines.iter().any(|l| l.contains(text))
    }

    #[test]
    fn a_key_that_cannot_be_read_again_does_not_stop_the_crl() {
        let ca = Ca::new("key");
        ca.issue("server", 1);
        let device = ca.issue("device", 7);
        ca.crl(&[], 1);
        let listener = TlsListener::new(settings(&ca)).unwrap();
        let cert = ClientCertificate::parse(&device, listener.revocations.clone()).unwrap();
        assert!(!cert.is_revoked());
        // The key is gone (as unreadable as root's key to the user the broker runs as), and
        // the device is revoked.
        std::fs::remove_file(ca.dir.join("server.key")).unwrap();
        ca.crl(&[7], 2);
        let r = listener.reload();
        assert!(has(&r.failed, "the certificate and key: ") && has(&r.failed, "server.key"), "{r:?}");
        assert!(has(&r.failed, "the previous ones stay in force"), "{r:?}");
        assert!(
            has(&r.reloaded, "the CRL (") && has(&r.reloaded, "crl.pem: 1 revoked certificate)"),
            "{r:?}"
        );
        assert!(has(&r.reloaded, "the CA certificates ("), "{r:?}");
        assert!(cert.is_revoked(), "the connection's certificate is revoked by the new CRL");
        let _ = std::fs::remove_dir_all(&ca.dir);
    }

    #[test]
    fn a_bad_crl_keeps_the_previous_one_and_the_rest_applies() {
        let ca = Ca::new("crl");
        ca.issue("server", 1);
        let device = ca.issue("device", 7);
        ca.crl(&[7], 1);
        let listener = TlsListener::new(settings(&ca)).unwrap();
        let cert = ClientCertificate::parse(&device, listener.revocations.clone()).unwrap();
        assert!(cert.is_revoked());
        std::fs::write(ca.dir.join("crl.pem"), "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
            .unwrap();
        ca.issue("server", 2); // a renewed server certificate
        let r = listener.reload();
        assert!(has(&r.failed, "the CRL: ") && has(&r.failed, "the previous one stays in force"), "{r:?}");
        assert!(has(&r.reloaded, "the certificate and key ("), "{r:?}");
        assert!(!has(&r.reloaded, "the CRL"), "{r:?}");
        assert!(cert.is_revoked(), "the previous CRL stays in force");
        let _ = std::fs::remove_dir_all(&ca.dir);
    }

    #[test]
    fn everything_reloads_when_everything_can_be_read() {
        let ca = Ca::new("all");
        ca.issue("server", 1);
        ca.crl(&[], 1);
        let listener = TlsListener::new(settings(&ca)).unwrap();
        let r = listener.reload();
        assert!(r.failed.is_empty(), "{r:?}");
        assert_eq!(r.reloaded.len(), 3, "{r:?}");
        assert!(has(&r.reloaded, "crl.pem: 0 revoked certificates)"), "{r:?}");
        let _ = std::fs::remove_dir_all(&ca.dir);
    }
}
