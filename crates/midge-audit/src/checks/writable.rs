//! What the broker writes (its log file, its pid file, its store) must be writable by the
//! user it runs as: started as root, that is `user` (mosquitto), which opens them after root
//! is given up; otherwise whoever starts it (audited as that user). A log file under a
//! directory only root may write stops the broker at start.
use std::path::{Path, PathBuf};

use midge_broker::config::{LogDest, Section};

use super::Context;
use crate::finding::{Finding, Kind, Location, Severity};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(user) = writer(cx) else { return };
    let config = &cx.model.config;
    let mut places: Vec<(&str, PathBuf, Location)> = Vec::new();
    let line = |option: &str, wanted: &dyn Fn(&str) -> bool| {
        cx.model
            .sources
            .iter()
            .filter(|(s, d)| *s == Section::General && d.name == option && wanted(&d.value))
            .last()
            .map(|(_, d)| Location::new(d.file.clone(), d.line))
    };
    for dest in &config.log_dest {
        if let LogDest::File(path) = dest {
            let written = path.to_string_lossy().into_owned();
            if let Some(at) = line("log_dest", &|v: &str| v.trim_start_matches("file").trim() == written) {
                places.push(("log_dest file", path.clone(), at));
            }
        }
    }
    if let (Some(path), Some(at)) = (&config.pid_file, line("pid_file", &|_: &str| true)) {
        places.push(("pid_file", path.clone(), at));
    }
    if config.persistence.enabled {
        let dir = config.persistence.location.clone().unwrap_or_else(|| PathBuf::from("."));
        let at = line("persistence_location", &|_: &str| true)
            .or_else(|| line("persistence", &|_: &str| true))
            .or_else(|| line("retained_persistence", &|_: &str| true));
        if let Some(at) = at {
            places.push(("persistence_location", dir, at));
        }
    }
    for (option, written, at) in places {
        let path = cx.path(&written);
        // A file that is not there yet is created in its directory; the store is a directory.
        let (target, what) = if option == "persistence_location" || path.exists() {
            (path.clone(), "it")
        } else {
            (path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")), "its directory")
        };
        if !target.exists() {
            out.push(Finding::new(
                Severity::Medium,
                Kind::NotWritableByBrokerUser,
                at,
                format!(
                    "{option} {}: {} {} does not exist: the broker will not start; create it, owned by user '{}'",
                    path.display(),
                    if what == "it" { "the directory" } else { "its directory" },
                    target.display(),
                    user.name
                ),
            ));
            continue;
        }
        if !midge_broker::config::can_write(&user, &target) {
            out.push(Finding::new(
                Severity::Medium,
                Kind::NotWritableByBrokerUser,
                at,
                format!(
                    "{option} {}: user '{name}', which the broker runs as, cannot write {what} ({}): the broker \
                     will not start; chown {name} {}",
                    path.display(),
                    target.display(),
                    target.display(),
                    name = user.name
                ),
            ));
        }
    }
}

/// Who writes the broker's files: its `user` when started as root (none with `user root`:
/// root writes anywhere), else the user auditing.
fn writer(cx: &Context<'_>) -> Option<nix::unistd::User> {
    if cx.options.started_as_root {
        let configured = cx.model.user().map(|(name, _)| name.to_owned());
        match midge_broker::config::run_as(configured.as_deref()) {
            Ok(midge_broker::config::RunAs::User { account, .. }) => Some(account),
            _ => None,
        }
    } else {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            return None;
        }
        nix::unistd::User::from_uid(uid).ok().flatten()
    }
}
