//! `midge audit`: a mosquitto.conf read as mosquitto 2.0 reads it, and checked for
//! weaknesses, each reported with a severity and the line to change.
//!
//! The configuration is read by the broker's own parser in its lenient mode
//! ([`midge_broker::config::parse_lenient`]), which goes on past the lines the broker
//! refuses and keeps those that say what the user meant (`tls_version tlsv1.1`, `psk_file`,
//! `plugin`), so that audit and broker cannot read a configuration differently ([`model`]);
//! then the checks run (one file each in `checks/`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checks;
pub mod finding;
pub mod model;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use midge_broker::config::{lex_file_including, Directive, LexError};

pub use finding::{Finding, Kind, Location, Severity};
pub use model::Model;
pub use report::Summary;

/// The thresholds and the clock of an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// PBKDF2 hashes with fewer iterations are reported (`--min-iterations`).
    pub min_iterations: u32,
    /// Certificates expiring within this many days are reported (`--expiry-days`).
    pub expiry_days: u32,
    /// Now, in seconds since 1970 (UTC).
    pub now: i64,
    /// Relative paths of the configuration (files, `include_dir`) are taken from here: the
    /// broker's working directory. Empty: the current directory.
    pub base_dir: PathBuf,
    /// The broker is started as root, so it runs as its `user` (default mosquitto) once its
    /// files are read: those it re-reads on SIGHUP must be that user's to read. Default:
    /// when the audit runs as root (`--started-as-root true|false`).
    pub started_as_root: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        AuditOptions {
            min_iterations: 10_000,
            expiry_days: 30,
            now: i64::try_from(now).unwrap_or(i64::MAX),
            base_dir: PathBuf::new(),
            started_as_root: nix::unistd::geteuid().is_root(),
        }
    }
}

/// The configuration cannot be audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The file, or a directory it includes, cannot be read.
    #[error(transparent)]
    Config(#[from] LexError),
}

/// Audits a configuration file (with its `include_dir` files).
pub fn audit_file(config: &Path, options: &AuditOptions) -> Result<Vec<Finding>, AuditError> {
    let directives = lex_file_including(config, &options.base_dir)?;
    Ok(audit_directives(&directives, options))
}

/// Audits directives; findings sorted by severity (highest first), then file and line.
pub fn audit_directives(directives: &[Directive], options: &AuditOptions) -> Vec<Finding> {
    let model = Model::read(directives);
    checks::run(directives, &model, options)
}
