//! Started as root, the broker gives root up once its listeners are open and its files read,
//! as mosquitto does: it runs as the `user` of the configuration, by default `mosquitto`
//! (or `nobody` when there is no such user). `user root` keeps root.
use nix::unistd::{getegid, geteuid, initgroups, setgid, setuid, User};

/// Why the privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The user named by `user` does not exist.
    #[error("Unable to drop privileges to '{0}' because this user does not exist.")]
    NoSuchUser(String),
    /// Neither `mosquitto` nor `nobody` exists.
    #[error("Unable to drop privileges to 'nobody' (no user 'mosquitto' and no user 'nobody').")]
    NoFallback,
    /// A system call failed.
    #[error("Unable to drop privileges to '{user}': {call}: {errno}.")]
    Call {
        /// The user.
        user: String,
        /// The call that failed.
        call: &'static str,
        /// Its error.
        errno: nix::errno::Errno,
    },
}

/// The default user when `user` is not given.
const DEFAULT_USER: &str = "mosquitto";

/// Drops root privileges to `user` (`None`: the default). Does nothing when not root.
/// Returns the user now running the broker, if it changed.
pub fn drop_privileges(user: Option<&str>) -> Result<Option<String>, DropError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let wanted = user.unwrap_or(DEFAULT_USER);
    if wanted == "root" {
        tracing::warn!("midge should not be run as root/administrator.");
        return Ok(None);
    }
    let lookup = |name: &str| User::from_name(name).ok().flatten();
    let account = match lookup(wanted) {
        Some(u) => u,
        // As mosquitto: only the default user falls back to nobody.
        None if wanted != DEFAULT_USER => return Err(DropError::NoSuchUser(wanted.to_owned())),
        None => {
            tracing::warn!(
                "Unable to drop privileges to '{wanted}' because this user does not exist. Trying 'nobody' instead."
            );
            lookup("nobody").ok_or(DropError::NoFallback)?
        }
    };
    let fail = |call: &'static str| {
        let user = account.name.clone();
        move |errno| DropError::Call { user, call, errno }
    };
    let name = std::ffi::CString::new(account.name.clone())
        .map_err(|_| DropError::NoSuchUser(account.name.clone()))?;
    // Groups first: once the user id is not root, they can no longer be changed.
    initgroups(&name, account.gid).map_err(fail("initgroups"))?;
    setgid(account.gid).map_err(fail("setgid"))?;
    setuid(account.uid).map_err(fail("setuid"))?;
    if geteuid().is_root() || getegid().as_raw() == 0 {
        return Err(DropError::Call { user: account.name, call: "setuid", errno: nix::errno::Errno::EPERM });
    }
    Ok(Some(account.name))
}
