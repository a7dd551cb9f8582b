//! TLS for the client: rustls, with mosquitto's options (CA file or directory, client
//! certificate, `--insecure`, TLS version, ALPN).
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::transport::{BoxStream, Connector};
use crate::Error;

/// The TLS versions a client may insist on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// How to set up TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of trusted CA certificates.
    pub cafile: Option<PathBuf>,
    /// Directory of PEM CA certificates.
    pub capath: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Trust the operating system's CA certificates too (`--tls-use-os-certs`).
    pub os_certs: bool,
    /// Do not check that the certificate names the host (the chain is still verified).
    pub insecure: bool,
    /// Only this TLS version (default: 1.2 and 1.3).
    pub version: Option<TlsVersion>,
    /// ALPN protocol to offer.
    pub alpn: Option<String>,
}

impl TlsOptions {
    /// Builds a connector from these options.
    pub fn connector(&self) -> Result<Arc<dyn Connector>, Error> {
        let mut roots = midge_net::tls::load_roots(self.cafile.as_deref(), self.capath.as_deref())
            .map_err(|e| Error::tls(e.to_string()))?;
        if self.os_certs {
            // What the system has (Debian: /etc/ssl/certs); a certificate it cannot parse is
            // left out, as OpenSSL leaves it out.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        // The system's may be none at all: then no broker is trusted, as with OpenSSL.
        if roots.is_empty() && !self.os_certs {
            return Err(Error::tls("no CA certificate: give --cafile, --capath or --tls-use-os-certs"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.version {
            Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
            Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
            None => rustls::ALL_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::tls(e.to_string()))?;
        let roots = Arc::new(roots);
        let builder = if roots.is_empty() {
            // The system's are none: every broker is refused at the handshake (webpki's
            // verifier cannot be built without a root).
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| Error::tls(e.to_string()))?;
            let algorithms = provider.signature_verification_algorithms;
            let verifier = Verifier { inner, roots, algorithms, any_name: self.insecure };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        };
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = midge_net::tls::load_certs(cert).map_err(|e| Error::tls(e.to_string()))?;
                let key = midge_net::tls::load_key(key).map_err(|e| Error::tls(e.to_string()))?;
                // A version 1 certificate too: an OpenSSL broker (mosquitto) takes it.
                let (key, _) = midge_net::tls::certified_key(certs, key, &provider)
                    .map_err(|e| Error::tls(e.to_string()))?;
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(Error::tls("a client certificate needs both --cert and --key")),
        };
        if let Some(alpn) = &self.alpn {
            config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        }
        Ok(Arc::new(TlsConnector(tokio_rustls::TlsConnector::from(Arc::new(config)))))
    }
}

struct TlsConnector(tokio_rustls::TlsConnector);

impl Connector for TlsConnector {
    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, Error>> + Send>> {
        let connector = self.0.clone();
        let name = ServerName::try_from(host.to_owned());
        Box::pin(async move {
            let name = name.map_err(|e| Error::tls(format!("invalid server name: {e}")))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| handshake_error(&e))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// A failed handshake: a certificate for another name is told apart from other failures
/// (mosquitto's clients say "host name verification failed" for it, with -d).
fn handshake_error(e: &std::io::Error) -> Error {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => Error::tls_host_name(e.to_string()),
        // The server refused us (TLS 1.2 refuses a client certificate in the handshake): the
        // connection is lost, with the alert, as TLS 1.3's refusal after the handshake is.
        Some(rustls::Error::AlertReceived(_)) => Error::lost(std::io::Error::new(
            e.kind(),
            rustls_error.cloned().unwrap_or(rustls::Error::HandshakeNotComplete),
        )),
        _ => Error::tls(e.to_string()),
    }
}

/// webpki's verification, with what OpenSSL clients (mosquitto's) also take: a certificate
/// that names the host only in its Common Name, and an X.509 version 1 certificate issued
/// directly by a trusted CA ([`midge_net::tls::version1`]). With `--insecure` (`any_name`),
/// the chain is verified but a certificate for another name is accepted.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    any_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use midge_net::tls::version1;
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        use rustls::Error::InvalidCertificate;
        let names_host = || {
            let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
            self.any_name
                || (!version1::constrains_names(end_entity, &chain, &self.roots)
                    && version1::common_name_names(end_entity, &server_name.to_str()))
        };
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // Only the name is wrong: the chain is verified again (rather than taken from the
            // order of webpki's checks), then the name as OpenSSL checks it.
            Err(InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) if names_host() => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
            Err(InvalidCertificate(_)) if midge_net::tls::is_version_1(end_entity) => {
                version1::verify(end_entity, &self.roots, now, &self.algorithms)?;
                match names_host() {
                    true => Ok(ServerCertVerified::assertion()),
                    false => Err(InvalidCertificate(NotValidForName)),
                }
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
        let webpki = self.inner.verify_tls12_signature(message, cert, dss);
        midge_net::tls::version1::handshake_signature(webpki, message, cert, dss, &self.algorithms, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let webpki = self.inner.verify_tls13_signature(message, cert, dss);
        midge_net::tls::version1::handshake_signature(webpki, message, cert, dss, &self.algorithms, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn a_certificate_for_another_name_is_told_apart() {
        let e = handshake_error(&io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        )));
        assert!(e.is_tls() && e.is_tls_host_name());
        let e =
            handshake_error(&io(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)));
        assert!(e.is_tls() && !e.is_tls_host_name());
        let e = handshake_error(&std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(e.is_tls() && !e.is_tls_host_name());
        let e =
            handshake_error(&io(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)));
        assert!(e.is_lost() && !e.is_tls());
        assert_eq!(e.tls_alert().map(|a| a.to_string()).as_deref(), Some("certificate revoked"));
    }
}
