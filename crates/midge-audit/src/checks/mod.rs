//! The checks, one file each; each reads the model and appends findings.
mod certs;
mod files;
mod network;
mod options;
mod passwords;
mod tls;
mod writable;

use std::path::{Path, PathBuf};

use midge_broker::config::Directive;

use crate::finding::Finding;
use crate::model::Model;
use crate::AuditOptions;

/// What every check gets.
pub(crate) struct Context<'a> {
    pub model: &'a Model,
    pub options: &'a AuditOptions,
}

impl Context<'_> {
    /// A path of the configuration, taken from the base directory if relative.
    pub fn path(&self, written: &Path) -> PathBuf {
        self.options.base_dir.join(written)
    }
}

/// Every check, findings sorted by severity (highest first), then file and line.
pub(crate) fn run(directives: &[Directive], model: &Model, options: &AuditOptions) -> Vec<Finding> {
    let cx = Context { model, options };
    let mut out = Vec::new();
    options::unreadable(model, &mut out);
    options::check(directives, model, &mut out);
    network::check(&cx, &mut out);
    tls::check(&cx, &mut out);
    files::check(&cx, &mut out);
    writable::check(&cx, &mut out);
    passwords::check(&cx, &mut out);
    certs::check(&cx, &mut out);
    options::refused(model, &mut out);
    out.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| a.at.file.cmp(&b.at.file)).then(a.at.line.cmp(&b.at.line))
    });
    out
}
