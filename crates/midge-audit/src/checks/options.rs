//! Options nobody knows: a typo, or an option of another broker. Informational, since the
//! broker refuses to start rather than running less secure.
use midge_broker::config::{is_known_option, Directive};

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
