//! The files the configuration names: that they exist and can be read, and that secrets
//! (password file, private keys, pre-shared keys) are not readable by other users, and
//! nothing that decides who gets in is writable by them.
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::Context;
use crate::finding::{Finding, Kind, Severity};
use crate::model::FileSetting;

/// What a file holds, which decides how open it may be.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Readable by the broker only; `why` says what a reader gets.
    Secret { why: &'static str },
    /// The ACL: not secret, but it names every user and topic.
    Acl,
    /// Certificates and CRLs: public.
    Public,
    /// A directory of CA certificates.
    Directory,
}

const PASSWORDS: Role =
    Role::Secret { why: "anyone who can read it can copy the password hashes (or passwords not hashed yet) and guess them offline" };
const KEY: Role = Role::Secret {
    why: "anyone who can read it can copy the server's private key and impersonate the broker",
};
const PSK: Role = Role::Secret { why: "it holds the pre-shared keys in clear text" };

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut files: Vec<(FileSetting, Role)> = Vec::new();
    for s in cx.model.scopes() {
        files.extend(s.file("password_file").map(|f| (f, PASSWORDS)));
        files.extend(s.file("psk_file").map(|f| (f, PSK)));
        files.extend(s.file("acl_file").map(|f| (f, Role::Acl)));
    }
    for l in cx.model.listeners() {
        files.extend(l.tls_files().into_iter().map(|f| {
            let role = match f.option {
                "keyfile" => KEY,
                "capath" => Role::Directory,
                _ => Role::Public,
            };
            (f, role)
        }));
    }
    let user = broker_user(cx, out);
    let broker_gid = user.as_ref().map(|u| u.gid.as_raw());
    for (setting, role) in &files {
        check_file(cx, setting, *role, broker_gid, out);
        if let (Some(u), false) = (&user, matches!(role, Role::Directory)) {
            check_broker_user_reads(setting.option, &cx.path(&setting.path), &setting.at, u, out);
        }
    }
    // SIGHUP reads the configuration again too.
    if let Some(u) = &user {
        for file in &cx.model.config_files {
            let at = crate::finding::Location::new(file.clone(), 1);
            check_broker_user_reads("the configuration file", std::path::Path::new(file), &at, u, out);
        }
    }
}

/// The user the broker runs as once started, when it drops root: started as root, the
/// broker runs as `user` (default mosquitto, else nobody), as mosquitto does.
fn broker_user(cx: &Context<'_>, out: &mut Vec<Finding>) -> Option<nix::unistd::User> {
    if !cx.options.started_as_root {
        return None;
    }
    let configured = cx.model.user();
    let user = match midge_broker::config::run_as(configured.as_ref().map(|(name, _)| *name)) {
        Ok(midge_broker::config::RunAs::User { account, .. }) => account,
        Ok(midge_broker::config::RunAs::Root) => return None,
        Err(e) => {
            if let Some((_, at)) = configured {
                out.push(Finding::new(
                    Severity::Info,
                    Kind::InvalidValue,
                    at,
                    format!("started as root, the broker refuses to start: {e}"),
                ));
            }
            return None;
        }
    };
    Some(user)
}

/// A file the broker reads again on SIGHUP must be readable by the user it runs as then.
fn check_broker_user_reads(
    option: &str,
    written: &std::path::Path,
    at: &crate::finding::Location,
    user: &nix::unistd::User,
    out: &mut Vec<Finding>,
) {
    if std::fs::canonicalize(written).is_err() {
        return;
    }
    if !midge_broker::config::can_read(user, written) {
        out.push(Finding::new(
            Severity::Medium,
            Kind::UnreadableByBrokerUser,
            at.clone(),
            format!(
                "{option} {} cannot be read by user '{name}', which the broker runs as once started as root: \
                 it starts (root reads the file first) but SIGHUP cannot reload it; chown {name} it (or set \
                 `user` to the user that owns it)",
                written.display(),
                name = user.name
            ),
        ));
    }
}

/// `broker_gid`: the group of the user the broker runs as, when started as root: a secret
/// readable by that group is how that user reads it (what `midge passwd` run as root makes).
fn check_file(
    cx: &Context<'_>,
    s: &FileSetting,
    role: Role,
    broker_gid: Option<u32>,
    out: &mut Vec<Finding>,
) {
    let option = s.option;
    let path = cx.path(&s.path);
    let shown = path.display();
    let mut finding = |severity, kind, message: String| {
        out.push(Finding::new(severity, kind, s.at.clone(), message));
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return finding(
                Severity::Medium,
                Kind::FileMissing,
                format!("{option} {shown} does not exist: the broker will not start"),
            );
        }
        Err(e) => {
            return finding(
                Severity::Medium,
                Kind::FileUnreadable,
                format!("{option} {shown} cannot be read: {e}"),
            );
        }
    };
    if let Role::Directory = role {
        if !meta.is_dir() {
            finding(Severity::Medium, Kind::FileUnreadable, format!("{option} {shown} is not a directory"));
        }
        return;
    }
    if meta.is_dir() {
        return finding(
            Severity::Medium,
            Kind::FileUnreadable,
            format!("{option} {shown} is a directory, not a file: the broker will not start"),
        );
    }
    if let Err(e) = File::open(&path) {
        return finding(
            Severity::Medium,
            Kind::FileUnreadable,
            format!(
                "{option} {shown} cannot be read by this user ({e}): the broker will not start if it runs as \
                 this user; otherwise audit as the broker's user"
            ),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    // Whoever can write a password file, ACL, key or certificate decides who gets in.
    if !matches!(role, Role::Directory) && mode & 0o022 != 0 {
        let (severity, kind, who) = if mode & 0o002 != 0 {
            (Severity::High, Kind::FileWorldWritable, "every local user")
        } else {
            (Severity::Medium, Kind::FileGroupWritable, "its group")
        };
        finding(
            severity,
            kind,
            format!(
                "{option} {shown} is writable by {who} (mode {mode:04o}): whoever can write it decides who \
                 gets in; chmod go-w it"
            ),
        );
    }
    match role {
        Role::Secret { why } if mode & 0o004 != 0 => finding(
            Severity::High,
            Kind::FileWorldReadable,
            format!(
                "{option} {shown} is readable by every local user (mode {mode:04o}): {why}; chmod 600 it \
                 (640 with the broker's own group)"
            ),
        ),
        Role::Secret { why } if mode & 0o040 != 0 && broker_gid != Some(meta.gid()) => finding(
            Severity::Low,
            Kind::FileGroupReadable,
            format!(
                "{option} {shown} is readable by its group (mode {mode:04o}): for every member, {why}; chmod \
                 600 it unless the group is the broker's own"
            ),
        ),
        // mosquitto 2.0 warns about a world-readable ACL file too: it maps every user to
        // the topics it may use, which tells an attacker whose credentials are worth having.
        Role::Acl if mode & 0o004 != 0 => finding(
            Severity::Low,
            Kind::FileWorldReadable,
            format!(
                "{option} {shown} is readable by every local user (mode {mode:04o}): it names every user and \
                 the topics each may use; chmod 640 or 600 it"
            ),
        ),
        _ => {}
    }
}
