//! Running as a service: `midge broker -d` (a daemon, as mosquitto's `-d`) and systemd's
//! readiness protocol (`Type=notify`).
//!
//! mosquitto forks, calls setsid and sends its standard streams to /dev/null; its parent exits
//! 0 at once, so an error after the fork (a port in use, a log file its user cannot open) is
//! lost and `mosquitto -d` says it succeeded. midge forks before its runtime starts threads
//! (a process with threads cannot safely fork), then the parent waits: the daemon tells it
//! through a pipe once its listeners are open, root given up and its log and pid files open,
//! and only then does the parent exit 0 and the daemon let go of the terminal. Until then the
//! daemon's errors reach the terminal, and if it fails the parent exits with its failure.
//! The working directory stays (as mosquitto: relative paths in the configuration are read
//! again from it on SIGHUP); so does the umask.
use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;

/// The daemon's side of the pipe to the process that started it (or nothing, without `-d`).
pub struct Detach(Option<File>);

impl Detach {
    /// Without `-d`: a foreground broker.
    pub fn foreground() -> Detach {
        Detach(None)
    }

    /// Forks into a daemon (its own session, stdin from /dev/null). Returns in the daemon;
    /// the original process waits for it to be ready, then exits: with 0 once the daemon says
    /// it is, with failure when the daemon ends first. Call before any thread is started.
    pub fn daemonize() -> Result<Detach, ExitCode> {
        let (read, write) = nix::unistd::pipe().map_err(|e| {
            eprintln!("Error: cannot start in the background: pipe: {e}.");
            ExitCode::FAILURE
        })?;
        let (read, write) = (File::from(read), File::from(write));
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        // Leave the umask as it is: the crate's default would change the modes files get.
        let mask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        nix::sys::stat::umask(mask);
        let outcome = daemonize::Daemonize::new()
            .working_directory(cwd)
            .umask(mask.bits())
            .stdout(daemonize::Stdio::keep())
            .stderr(daemonize::Stdio::keep())
            .execute();
        match outcome {
            daemonize::Outcome::Parent(Ok(_)) => {
                drop(write);
                Err(wait_ready(read))
            }
            daemonize::Outcome::Parent(Err(e)) => {
                eprintln!("Error: cannot start in the background: {e}.");
                Err(ExitCode::FAILURE)
            }
            daemonize::Outcome::Child(Ok(_)) => {
                drop(read);
                Ok(Detach(Some(write)))
            }
            daemonize::Outcome::Child(Err(e)) => {
                // The first child, or the daemon, failed: its stderr is still the terminal.
                eprintln!("Error: cannot start in the background: {e}.");
                Err(ExitCode::FAILURE)
            }
        }
    }

    /// The broker serves: tell systemd (`READY=1`, when started by it) and, with `-d`, the
    /// waiting parent; then let go of the terminal (standard streams to /dev/null).
    pub fn ready(&mut self) {
        notify(&[sd_notify::NotifyState::Ready]);
        let Some(mut pipe) = self.0.take() else { return };
        let _ = pipe.write_all(b"R");
        drop(pipe);
        match std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
            Ok(null) => {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            Err(e) => tracing::warn!("Cannot open /dev/null: {e}; standard output stays open."),
        }
    }
}

/// The parent of `-d`: 0 once the daemon is ready; failure if it ended before (it said why on
/// standard error, which it shares).
fn wait_ready(mut read: File) -> ExitCode {
    let mut byte = [0u8; 1];
    match read.read(&mut byte) {
        Ok(1) if byte[0] == b'R' => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Tells systemd the broker's state when it runs under it as `Type=notify` (`NOTIFY_SOCKET`
/// set); nothing otherwise.
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("Cannot notify systemd: {e}.");
    }
}
