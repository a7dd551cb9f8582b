//! The TLS options of mosquitto's clients.
use std::path::PathBuf;
use std::sync::Arc;

use midge_client::{Connector, TlsOptions, TlsVersion};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM file of trusted CA certificates (enables TLS).
    #[arg(long = "cafile")]
    pub cafile: Option<PathBuf>,
    /// Directory of PEM CA certificates (enables TLS).
    #[arg(long = "capath")]
    pub capath: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long = "cert")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long = "key")]
    pub key: Option<PathBuf>,
    /// Trust the operating system's CA certificates (enables TLS).
    #[arg(long = "tls-use-os-certs")]
    pub os_certs: bool,
    /// Do not check that the server certificate names the host.
    #[arg(long = "insecure")]
    pub insecure: bool,
    /// tlsv1.3 or tlsv1.2.
    #[arg(long = "tls-version")]
    pub tls_version: Option<String>,
    /// ALPN protocol.
    #[arg(long = "tls-alpn")]
    pub alpn: Option<String>,
    /// OpenSSL cipher list: not applicable to rustls, accepted and ignored.
    #[arg(long = "ciphers")]
    pub ciphers: Option<String>,
}

impl TlsArgs {
    /// True when any option asks for TLS.
    pub fn wanted(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some() || self.cert.is_some() || self.os_certs
    }

    pub fn connector(&self) -> Result<Arc<dyn Connector>, String> {
        let version = match self.tls_version.as_deref() {
            None => None,
            Some("tlsv1.2") => Some(TlsVersion::V1_2),
            Some("tlsv1.3") => Some(TlsVersion::V1_3),
            Some("tlsv1.1" | "tlsv1") => {
                return Err("TLS versions below 1.2 are not supported (they are insecure).".into())
            }
            Some(other) => return Err(format!("Unsupported tls_version \"{other}\".")),
        };
        let opts = TlsOptions {
            cafile: self.cafile.clone(),
            capath: self.capath.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            os_certs: self.os_certs,
            insecure: self.insecure,
            version,
            alpn: self.alpn.clone(),
        };
        opts.connector().map_err(|e| e.to_string())
    }
}
