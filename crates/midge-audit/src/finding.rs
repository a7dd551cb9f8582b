//! What the audit reports: a weakness, how bad it is, and the line to change.
use std::fmt;

/// How bad a finding is. Ordered: `Info < Low < Medium < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; not a weakness (does not make the audit fail).
    Info,
    /// A weakness that needs local access or other mistakes to matter.
    Low,
    /// A weakness to fix.
    Medium,
    /// Open to anyone on the network, or secrets open to every local user.
    High,
}

impl Severity {
    /// "high", "medium", "low", "info" (JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// "HIGH", "MEDIUM", "LOW", "INFO" (text).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }
}

/// What kind of weakness, for scripts (`kind` in JSON) and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A listener without TLS accepts passwords.
    PasswordWithoutTls,
    /// Anonymous clients accepted on a listener open to the network.
    AnonymousNetwork,
    /// No ACL, and clients can connect from the network.
    NoAcl,
    /// The ACL grants by user name, and a listener lets clients name themselves.
    UnverifiedUserNames,
    /// A secret file (or ACL) readable by every local user.
    FileWorldReadable,
    /// A secret file readable by its group.
    FileGroupReadable,
    /// A file that decides who gets in, writable by every local user.
    FileWorldWritable,
    /// A file that decides who gets in, writable by its group.
    FileGroupWritable,
    /// A file the configuration names does not exist.
    FileMissing,
    /// A file the configuration names cannot be read.
    FileUnreadable,
    /// A password file line the broker cannot read.
    PasswordFileInvalid,
    /// A `$6$` (one round of salted SHA-512) password hash.
    WeakHash,
    /// A `$7$` (PBKDF2) hash with fewer iterations than the threshold.
    LowIterations,
    /// `tls_version` below TLS 1.2.
    OldTlsVersion,
    /// A certificate that has expired.
    CertificateExpired,
    /// A certificate that expires soon.
    CertificateExpiring,
    /// A certificate that is not valid yet.
    CertificateNotYetValid,
    /// A certificate file that holds no readable certificate.
    CertificateInvalid,
    /// `require_certificate` without a `crlfile`: certificates cannot be revoked.
    NoCrl,
    /// `user root`: the broker keeps root privileges.
    RunsAsRoot,
    /// A file the broker re-reads on SIGHUP that its user (after dropping root) cannot read.
    UnreadableByBrokerUser,
    /// A log file, pid file or store directory the broker's user cannot write.
    NotWritableByBrokerUser,
    /// An option neither mosquitto nor midge knows.
    UnknownOption,
    /// A value the audit (and the broker) cannot read.
    InvalidValue,
}

impl Kind {
    /// The kind's name in JSON: "password-without-tls", ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PasswordWithoutTls => "password-without-tls",
            Kind::AnonymousNetwork => "anonymous-network",
            Kind::NoAcl => "no-acl",
            Kind::UnverifiedUserNames => "unverified-user-names",
            Kind::FileWorldReadable => "file-world-readable",
            Kind::FileGroupReadable => "file-group-readable",
            Kind::FileWorldWritable => "file-world-writable",
            Kind::FileGroupWritable => "file-group-writable",
            Kind::FileMissing => "file-missing",
            Kind::FileUnreadable => "file-unreadable",
            Kind::PasswordFileInvalid => "password-file-invalid",
            Kind::WeakHash => "weak-hash",
            Kind::LowIterations => "low-iterations",
            Kind::OldTlsVersion => "old-tls-version",
            Kind::CertificateExpired => "certificate-expired",
            Kind::CertificateExpiring => "certificate-expiring",
            Kind::CertificateNotYetValid => "certificate-not-yet-valid",
            Kind::CertificateInvalid => "certificate-invalid",
            Kind::NoCrl => "no-crl",
            Kind::RunsAsRoot => "runs-as-root",
            Kind::UnreadableByBrokerUser => "unreadable-by-broker-user",
            Kind::NotWritableByBrokerUser => "unwritable-by-broker-user",
            Kind::UnknownOption => "unknown-option",
            Kind::InvalidValue => "invalid-value",
        }
    }
}

/// A place in a file: the configuration line, or a line of the password file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, as the configuration names it.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
}

impl Location {
    /// `file:line`.
    pub fn new(file: impl Into<String>, line: usize) -> Self {
        Location { file: file.into(), line }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One weakness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What kind.
    pub kind: Kind,
    /// The line to change.
    pub at: Location,
    /// What is wrong, why it matters and what to do, in one sentence.
    pub message: String,
}

impl Finding {
    /// A finding.
    pub fn new(severity: Severity, kind: Kind, at: Location, message: impl Into<String>) -> Self {
        Finding { severity, kind, at, message: message.into() }
    }
}

/// `HIGH broker.conf:12: passwords accepted on ...`
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages quote certificate subjects and user names from files: a control
        // character there must not reach the terminal as one.
        write!(f, "{} {}: ", self.severity.label(), self.at)?;
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}
