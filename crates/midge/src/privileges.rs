//! Started as root, the broker gives root up once its listeners are open and its files read,
//! as mosquitto does: it runs as the `user` of the configuration, by default `mosquitto`
//! (or `nobody` when there is no such user). `user root` keeps root.
use midge_broker::config::{run_as, RunAs, RunAsError, DEFAULT_USER};
use nix::unistd::{getegid, geteuid, initgroups, setgid, setuid};

/// Why the privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// There is no such user.
    #[error(transparent)]
    User(#[from] RunAsError),
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

/// Drops root privileges to `user` (`None`: the default). Does nothing when not root.
/// Returns the user now running the broker, if it changed.
pub fn drop_privileges(user: Option<&str>) -> Result<Option<String>, DropError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let account = match run_as(user)? {
        RunAs::Root => {
            tracing::warn!("midge should not be run as root/administrator.");
            return Ok(None);
        }
        RunAs::User { account, fell_back } => {
            if fell_back {
                tracing::warn!(
                    "Unable to drop privileges to '{DEFAULT_USER}' because this user does not exist. Trying \
                     'nobody' instead."
                );
            }
            account
        }
    };
    let fail = |call: &'static str| {
        let user = account.name.clone();
        move |errno| DropError::Call { user, call, errno }
    };
    let name = std::ffi::CString::new(account.name.clone())
        .map_err(|_| RunAsError::NoSuchUser(account.name.clone()))?;
    // Groups first: once the user id is not root, they can no longer be changed.
    initgroups(&name, account.gid).map_err(fail("initgroups"))?;
    setgid(account.gid).map_err(fail("setgid"))?;
    setuid(account.uid).map_err(fail("setuid"))?;
    if geteuid().is_root() || getegid().as_raw() == 0 {
        return Err(DropError::Call { user: account.name, call: "setuid", errno: nix::errno::Errno::EPERM });
    }
    Ok(Some(account.name))
}

/// The name of the user the process runs as (its effective user id), or the id itself.
pub fn current_user_name() -> String {
    let uid = geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}
