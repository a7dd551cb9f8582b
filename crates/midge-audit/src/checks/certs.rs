//! Certificate validity: every certificate in each certfile and cafile, expired, not yet
//! valid, or expiring within `expiry_days`.
use midge_net::tls::load_certs;
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use super::Context;
use crate::finding::{Finding, Kind, Severity};
use crate::model::FileSetting;

const DAY: i64 = 86_400;

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for l in cx.model.listeners() {
        for f in l.tls_files() {
            match f.option {
                "certfile" => check_file(cx, &f, "clients refuse to connect", out),
                "cafile" => check_file(cx, &f, "client certificates issued under it are refused", out),
                _ => {}
            }
        }
    }
}

fn check_file(cx: &Context<'_>, s: &FileSetting, effect: &str, out: &mut Vec<Finding>) {
    let option = s.option;
    let path = cx.path(&s.path);
    if !path.is_file() || std::fs::File::open(&path).is_err() {
        // Missing or unreadable: the file check says so.
        return;
    }
    let shown = path.display();
    let mut finding = |severity, kind, message: String| {
        out.push(Finding::new(severity, kind, s.at.clone(), message));
    };
    let certs = match load_certs(&path) {
        Ok(c) => c,
        Err(e) => {
            return finding(
                Severity::Medium,
                Kind::CertificateInvalid,
                format!("{option}: {e}: the broker will not start"),
            );
        }
    };
    for (i, der) in certs.iter().enumerate() {
        let cert = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, c)) => c,
            Err(e) => {
                finding(
                    Severity::Medium,
                    Kind::CertificateInvalid,
                    format!("{option} {shown}: certificate {} cannot be read: {e}", i + 1),
                );
                continue;
            }
        };
        let name = subject(&cert);
        let validity = cert.validity();
        let (from, until) = (validity.not_before.timestamp(), validity.not_after.timestamp());
        let now = cx.options.now;
        if until < now {
            finding(
                Severity::High,
                Kind::CertificateExpired,
                format!(
                    "{option} {shown}: certificate '{name}' expired on {} ({} ago): {effect}; renew it",
                    date(&validity.not_after),
                    days((now - until) / DAY)
                ),
            );
        } else if from > now {
            finding(
                Severity::Medium,
                Kind::CertificateNotYetValid,
                format!(
                    "{option} {shown}: certificate '{name}' is not valid before {}: {effect} until then (is \
                     the clock right?)",
                    date(&validity.not_before)
                ),
            );
        } else if until - now < i64::from(cx.options.expiry_days) * DAY {
            finding(
                Severity::Medium,
                Kind::CertificateExpiring,
                format!(
                    "{option} {shown}: certificate '{name}' expires on {}, in {}: after that {effect}; renew \
                     it in time",
                    date(&validity.not_after),
                    days((until - now) / DAY)
                ),
            );
        }
    }
}

fn subject(cert: &X509Certificate<'_>) -> String {
    let s = cert.subject().to_string();
    if s.is_empty() {
        "(no subject)".to_owned()
    } else {
        s
    }
}

fn date(t: &ASN1Time) -> String {
    t.to_datetime().date().to_string()
}

fn days(n: i64) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}
