//! TLS settings of each listener: the lowest version accepted, and whether client
//! certificates can be revoked.
use super::Context;
use crate::finding::{Finding, Kind, Location, Severity};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for l in cx.model.listeners() {
        // The broker refuses versions below 1.2 and keeps the line; a version it cannot
        // read at all is reported with the lines it refuses.
        if let Some(v) = l.line("tls_version") {
            let old = match v.value.as_str() {
                "tlsv1.1" => Some("TLS 1.1 and 1.0"),
                "tlsv1" => Some("TLS 1.0"),
                _ => None,
            };
            // On a listener without TLS the setting does nothing (the plain listener is
            // reported for what it is by the network checks).
            if let Some(versions) = old.filter(|_| l.tls_enabled()) {
                out.push(Finding::new(
                    Severity::Medium,
                    Kind::OldTlsVersion,
                    Location::new(v.file.clone(), v.line),
                    format!(
                        "tls_version {} on {} accepts {versions}, deprecated by RFC 8996 (SHA-1 and MD5 in the \
                         handshake, downgrade and CBC attacks); use tls_version tlsv1.2 (midge refuses lower)",
                        v.value,
                        l.name()
                    ),
                ));
            }
        }
        if l.requires_certificate() && l.listener.tls.crlfile.is_none() {
            if let Some(at) = l.setting("require_certificate") {
                out.push(Finding::new(
                    Severity::Medium,
                    Kind::NoCrl,
                    at,
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
