//! The lines the broker refuses, and options nobody knows (a typo, or an option of another
//! broker). Informational, since the broker refuses to start rather than running less
//! secure; `user root` is a weakness.
use midge_broker::config::{is_known_option, ConfigError, Directive, LineError};

use crate::finding::{Finding, Kind, Location, Severity};
use crate::model::Model;

/// mosquitto 2.x options the broker's parser does not list, and audit-only knowledge.
const ALSO_KNOWN: &[&str] = &[
    "addresses",
    "global_max_clients",
    "global_max_connections",
    "max_inflight_bytes",
    "notification_topic",
    "notifications_local_only",
    "plugin_load",
    "plugin_use",
];

pub(super) fn check(directives: &[Directive], model: &Model, out: &mut Vec<Finding>) {
    if let Some(("root", at)) = model.user() {
        out.push(Finding::new(
            Severity::Medium,
            Kind::RunsAsRoot,
            at,
            "user root: started as root, the broker keeps root privileges, so a flaw in it gives root; \
             remove the line (it then runs as user mosquitto) or name an unprivileged user",
        ));
    }
    for d in directives {
        if !is_known_option(&d.name) && !ALSO_KNOWN.contains(&d.name.as_str()) {
            out.push(Finding::new(
                Severity::Info,
                Kind::UnknownOption,
                Location::new(d.file.clone(), d.line),
                format!("unknown option '{}': mosquitto and midge refuse to start with it", d.name),
            ));
        }
    }
}

/// The broker's errors, with their lines.
fn errors(model: &Model) -> impl Iterator<Item = (Location, &LineError)> {
    model.errors.iter().filter_map(|e| match e {
        ConfigError::Line { file, line, problem } => Some((Location::new(file.clone(), *line), problem)),
        _ => None,
    })
}

/// True for a line the broker reads but refuses: an option or a value midge does not have,
/// or an option it does not know. Other checks may say more about such a line.
fn read_but_refused(problem: &LineError) -> bool {
    problem.is_unsupported() || matches!(problem, LineError::Unknown(_))
}

/// The lines whose value the broker cannot read (or that are in the wrong place): each
/// set nothing, so no other check sees them.
pub(super) fn unreadable(model: &Model, out: &mut Vec<Finding>) {
    for (at, problem) in errors(model).filter(|(_, p)| !read_but_refused(p)) {
        out.push(Finding::new(
            Severity::Info,
            Kind::InvalidValue,
            at,
            format!("{problem}; the broker refuses to start with this line"),
        ));
    }
}

/// The lines the broker reads but refuses (an option it does not support yet, one it does
/// not know), unless a finding already names the line: audit reads what the broker
/// refuses, but a configuration that does not start should not look clean. Run last.
pub(super) fn refused(model: &Model, out: &mut Vec<Finding>) {
    for (at, problem) in errors(model).filter(|(_, p)| read_but_refused(p)) {
        if !out.iter().any(|f| f.at == at) {
            out.push(Finding::new(
                Severity::Info,
                Kind::InvalidValue,
                at,
                format!("midge broker refuses this line ({problem}), and does not start"),
            ));
        }
    }
}
