//! TLS settings of each listener: the lowest version accepted, and whether client
//! certificates can be revoked.
use super::Context;
use crate::finding::{Finding, Kind, Severity};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for l in &cx.model.listeners {
        if let Some(v) = &l.tls.tls_version {
            let old = match v.value.as_str() {
                "tlsv1.3" | "tlsv1.2" => None,
                "tlsv1.1" => Some("TLS 1.1 and 1.0"),
                "tlsv1" | "tlsv1.0" => Some("TLS 1.0"),
                other => {
                    out.push(Finding::new(
                        Severity::Info,
                        Kind::InvalidValue,
                        v.at.clone(),
                        format!(
                            "invalid tls_version '{other}': expected tlsv1.3, tlsv1.2 or tlsv1.1; the broker \
                             refuses to start with this line"
                        ),
                    ));
                    None
                }
            };
            // On a listener without TLS the setting does nothing (the plain listener is
            // reported for what it is by the network checks).
            if let Some(versions) = old.filter(|_| l.tls.enabled()) {
                out.push(Finding::new(
                    Severity::Medium,
                    Kind::OldTlsVersion,
                    v.at.clone(),
                    format!(
                        "tls_version {} on {} accepts {versions}, deprecated by RFC 8996 (SHA-1 and MD5 in the \
                         handshake, downgrade and CBC attacks); use tls_version tlsv1.2 (midge refuses lower)",
                        v.value,
                        l.name()
                    ),
                ));
            }
        }
        if let Some(req) = l.tls.require_certificate.as_ref().filter(|r| r.value) {
            if l.tls.crlfile.is_none() {
                out.push(Finding::new(
                    Severity::Medium,
                    Kind::NoCrl,
                    req.at.clone(),
                    format!(
                        "{} requires client certificates but has no crlfile: the certificate of a lost or \
                         stolen device cannot be revoked before it expires; add a crlfile (midge cert init \
                         makes one, midge cert revoke adds to it)",
                        l.name()
                    ),
                ));
            }
        }
    }
}
