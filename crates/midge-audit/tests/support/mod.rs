//! The fixture of the audit's table tests: a temporary directory with real files
//! (password files with `$7$` hashes made by the broker's code, certificates made with
//! rcgen with chosen validity, files with chosen modes), a configuration audited in it,
//! and findings in brief.
#![allow(dead_code)] // Each test file uses its part.

use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use midge_audit::{audit_file, AuditOptions, Finding};
use midge_broker::auth::password::Hash;
use time::{Duration, OffsetDateTime};

pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str, text: &str, mode: u32) -> &Self {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// A password file of `$7$` hashes with these iteration counts.
    pub fn passwd(&self, name: &str, users: &[(&str, u32)], mode: u32) -> &Self {
        let text: String = users
            .iter()
            .map(|(u, n)| format!("{u}:{}\n", Hash::new_pbkdf2(b"secret", NonZeroU32::new(*n).unwrap())))
            .collect();
        self.file(name, &text, mode)
    }

    /// A self-signed certificate `NAME.crt` (0644) valid from `from` to `until` days from
    /// now, and its key `NAME.key` (0600).
    pub fn cert(&self, name: &str, from: i64, until: i64) -> &Self {
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name}.example"));
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(from);
        params.not_after = now + Duration::days(until) + Duration::hours(1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        self.file(&format!("{name}.crt"), &cert.pem(), 0o644);
        self.file(&format!("{name}.key"), &key.serialize_pem(), 0o600)
    }

    /// A good server certificate and key, a CA and a CRL.
    pub fn tls(&self) -> &Self {
        self.cert("server", -1, 365).cert("ca", -1, 3650).file("crl.pem", "", 0o644)
    }

    pub fn audit(&self, config: &str, options: &AuditOptions) -> Vec<Finding> {
        self.file("broker.conf", config, 0o644);
        let options = AuditOptions { base_dir: self.path().to_owned(), ..options.clone() };
        audit_file(&self.path().join("broker.conf"), &options).unwrap()
    }
}

/// "HIGH broker.conf:3 password-without-tls", file names relative to the fixture.
pub fn brief(f: &Finding, dir: &Path) -> String {
    let file = f.at.file.strip_prefix(&format!("{}/", dir.display())).unwrap_or(&f.at.file);
    format!("{} {}:{} {}", f.severity.label(), file, f.at.line, f.kind.as_str())
}
