//! TLS listeners: rustls server configuration from mosquitto's options, client certificate
//! verification (CA, CRL), and the user name a certificate stands for.
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

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
pub struct TlsListener {
    settings: TlsSettings,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl TlsListener {
    /// Builds the acceptor; fails on any unusable file.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsSetupError> {
        let acceptor = build(&settings)?;
        Ok(TlsListener { settings, acceptor: ArcSwap::from_pointee(acceptor) })
    }

    /// Reads the certificate, key, CAs and CRL again.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        self.acceptor.store(Arc::new(build(&self.settings)?));
        Ok(())
    }

    /// The acceptor in force.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }

    /// The settings.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

fn build(s: &TlsSettings) -> Result<TlsAcceptor, TlsSetupError> {
    let (Some(certfile), Some(keyfile)) = (&s.certfile, &s.keyfile) else {
        return Err(TlsSetupError::Settings("a TLS listener needs both certfile and keyfile".into()));
    };
    let certs = midge_net::tls::load_certs(certfile)?;
    let key = midge_net::tls::load_key(keyfile)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.2 at the least; `tls_version tlsv1.3` makes it 1.3 only.
    let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
        Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let has_ca = s.cafile.is_some() || s.capath.is_some();
    let builder = if has_ca {
        let roots = midge_net::tls::load_roots(s.cafile.as_deref(), s.capath.as_deref())?;
        if roots.is_empty() {
            return Err(TlsSetupError::Settings("cafile / capath hold no CA certificate".into()));
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl) = &s.crlfile {
            verifier = verifier.with_crls(midge_net::tls::load_crls(crl)?).only_check_end_entity_revocation();
        }
        if !s.require_certificate {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else if s.require_certificate || s.use_identity_as_username || s.use_subject_as_username {
        return Err(TlsSetupError::Settings(
            "require_certificate and use_identity_as_username need cafile or capath to verify client certificates".into(),
        ));
    } else {
        builder.with_no_client_auth()
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

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
        let mut parts = Vec::new();
        for rdn in subject.iter_rdn() {
            for attr in rdn.iter() {
                let name =
                    x509_parser::objects::oid2abbrev(attr.attr_type(), x509_parser::objects::oid_registry())
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                parts.push(format!("{name}={}", attr.as_str().unwrap_or("")));
            }
        }
        parts.reverse();
        return Some(parts.join(","));
    }
    let cn = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    cn
}
