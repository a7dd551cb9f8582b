//! Who the broker runs as once started as root (`user`), as mosquitto decides it: the
//! configured user, by default `mosquitto`, and `nobody` when there is no user mosquitto
//! (only then); `user root` keeps root. One answer for the broker that drops to it and for
//! `midge audit`, which checks that this user can read what the broker reloads.
use nix::unistd::User;

/// The default `user`.
pub const DEFAULT_USER: &str = "mosquitto";

/// Who the broker runs as after starting as root.
#[derive(Debug, Clone)]
pub enum RunAs {
    /// `user root`: it keeps root.
    Root,
    /// This account; `fell_back` when it is nobody because there is no user mosquitto.
    User {
        /// The account.
        account: User,
        /// The default user does not exist, so this is nobody.
        fell_back: bool,
    },
}

/// Why the broker cannot run as its `user`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunAsError {
    /// The user named by `user` does not exist.
    #[error("Unable to drop privileges to '{0}' because this user does not exist.")]
    NoSuchUser(String),
    /// Neither `mosquitto` nor `nobody` exists.
    #[error("Unable to drop privileges to 'nobody' (no user 'mosquitto' and no user 'nobody').")]
    NoFallback,
}

/// The account for `user` (`None`: the default).
pub fn run_as(user: Option<&str>) -> Result<RunAs, RunAsError> {
    let wanted = user.unwrap_or(DEFAULT_USER);
    if wanted == "root" {
        return Ok(RunAs::Root);
    }
    let lookup = |name: &str| User::from_name(name).ok().flatten();
    match lookup(wanted) {
        Some(account) => Ok(RunAs::User { account, fell_back: false }),
        // As mosquitto: only the default user falls back to nobody.
        None if wanted != DEFAULT_USER => Err(RunAsError::NoSuchUser(wanted.to_owned())),
        None => lookup("nobody")
            .map(|account| RunAs::User { account, fell_back: true })
            .ok_or(RunAsError::NoFallback),
    }
}

/// Whether `account` can read the file at `path` by its mode bits: the file readable, and
/// every directory above it searchable, as owner, group member or other. What the broker
/// needs of the files it reads again on SIGHUP once it runs as that user (`midge audit`
/// checks it, `midge cert` arranges it). Access control lists are not looked at.
pub fn can_read(account: &User, path: &std::path::Path) -> bool {
    can_access(account, path, 0o4)
}

/// Whether `account` can write at `path` by its mode bits: the file (or directory) itself
/// writable, and every directory above it searchable. For a file that does not exist yet,
/// ask about its directory (where it is created: writable, and searchable, `0o3`).
pub fn can_write(account: &User, path: &std::path::Path) -> bool {
    let bits = if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) { 0o3 } else { 0o2 };
    can_access(account, path, bits)
}

/// `bits` (4 read, 2 write, 1 search) all allowed on `path`, and search on every directory
/// above it, as owner, group member or other.
fn can_access(account: &User, path: &std::path::Path, bits: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    let groups = std::ffi::CString::new(account.name.clone())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, account.gid).ok())
        .unwrap_or_else(|| vec![account.gid]);
    let uid = account.uid.as_raw();
    // The owner's, the group's or the others' bits apply.
    let allows = |meta: &std::fs::Metadata, bit: u32| {
        let mode = meta.mode();
        if uid == 0 {
            true
        } else if meta.uid() == uid {
            mode >> 6 & bit == bit
        } else if groups.iter().any(|g| g.as_raw() == meta.gid()) {
            mode >> 3 & bit == bit
        } else {
            mode & bit == bit
        }
    };
    std::fs::metadata(&path).is_ok_and(|m| allows(&m, bits))
        && path.ancestors().skip(1).all(|dir| std::fs::metadata(dir).is_ok_and(|m| allows(&m, 0o1)))
}
