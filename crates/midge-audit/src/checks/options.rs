//! Options nobody knows: a typo, or an option of another broker. Informational, since the
//! broker refuses to start rather than running less secure.
use midge_broker::config::{is_known_option, parse_directives, ConfigError, Directive};

use crate::finding::{Finding, Kind, Location, Severity};

/// mosquitto 2.x options the broker's parser does not list, and audit-only knowledge.
const ALSO_KNOWN: &[&str] = &[
    "addresses",
    "auth_plugin_deny_special_chars",
    "global_max_clients",
    "global_max_connections",
    "global_plugin",
    "max_inflight_bytes",
    "notification_topic",
    "notifications_local_only",
    "plugin_load",
    "plugin_use",
];

pub(super) fn check(directives: &[Directive], out: &mut Vec<Finding>) {
    // The last `user` line is the one in force.
    if let Some(d) = directives.iter().rev().find(|d| d.name == "user") {
        if d.value == "root" {
            out.push(Finding::new(
                Severity::Medium,
                Kind::RunsAsRoot,
                Location::new(d.file.clone(), d.line),
                "user root: started as root, the broker keeps root privileges, so a flaw in it gives root; \
                 remove the line (it then runs as user mosquitto) or name an unprivileged user"
                    .to_owned(),
            ));
        }
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

/// The first line midge's broker refuses (an unreadable value, an option it does not
/// support yet), unless a finding already names that line: audit reads what the broker
/// refuses, but a configuration that does not start should not look clean.
pub(super) fn check_broker_starts(directives: &[Directive], out: &mut Vec<Finding>) {
    if let Err(ConfigError::Line { file, line, message }) = parse_directives(directives) {
        if !out.iter().any(|f| f.at.file == file && f.at.line == line) {
            out.push(Finding::new(
                Severity::Info,
                Kind::InvalidValue,
                Location::new(file, line),
                format!("midge broker refuses this line ({message}), and does not start"),
            ));
        }
    }
}
