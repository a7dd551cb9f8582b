//! `midge broker`: mosquitto's command line, midge's broker.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use midge_broker::config::{parse_file, Config, ConfigError, Listener};
use midge_broker::Server;

use crate::logging::{LogFile, LogSettings};

/// Run the MQTT broker.
#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Read the configuration from FILE (mosquitto.conf format).
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on PORT (in addition to the listeners of the configuration file). Without a
    /// configuration, midge listens on localhost only and allows anonymous clients.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Vec<u16>,
    /// Log every packet (type, client and key fields).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Run in the background (a daemon), as mosquitto -d: once the broker listens, this
    /// command exits 0 (or with failure and the reason, if the broker could not start).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// With persistence on, a store that cannot be read at all (a damaged manifest, a missing
    /// or foreign segment) is moved aside (renamed with `.bad-TIME`) and the broker starts
    /// with an empty one, instead of refusing to start; so is a mosquitto database found at
    /// the first start that cannot be imported.
    #[arg(long = "set-aside-bad-store")]
    set_aside_bad_store: bool,
}

/// The configuration: the file of `-c` (or none), with the listeners of `-p`.
fn read_config(args: &BrokerArgs) -> Result<(Config, Vec<String>), ConfigError> {
    let (mut config, warnings) = match &args.config {
        Some(path) => parse_file(path)?,
        None => (Config::default(), Vec::new()),
    };
    let local_only = config.local_only();
    for port in &args.port {
        // As mosquitto 2.0: -p adds a listener; without a configuration it stays on localhost.
        let bind = if local_only { Some("localhost") } else { None };
        let mut l = Listener::new(*port, bind);
        if config.per_listener_settings {
            // A listener of its own, with no security settings written for it: closed to
            // anonymous clients, as any listener without allow_anonymous.
            l.security = Some(Default::default());
        }
        config.listeners.push(l);
    }
    if local_only && config.security.allow_anonymous.is_none() {
        config.security.allow_anonymous = Some(true);
    }
    // -v is mosquitto's `log_type all`, whatever the file says (subscriptions' lines too).
    if args.verbose {
        config.log_types = Some(midge_broker::config::LogTypes::ALL);
    }
    Ok((config, warnings))
}

pub fn run(args: BrokerArgs) -> ExitCode {
    let (config, warnings) = match read_config(&args) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(3);
        }
    };
    // -d: into the background now, while the process has one thread; the original process
    // returns once the daemon listens (or failed, with its code).
    let mut detach = if args.daemon {
        match crate::daemon::Detach::daemonize() {
            Ok(d) => d,
            Err(code) => return code,
        }
    } else {
        crate::daemon::Detach::foreground()
    };
    // Before the runtime's threads start, so that every thread blocks SIGHUP (its default
    // action ends the process): it is read from a signalfd ([`crate::hangup`]).
    let hup = crate::hangup::Hangup::block();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_files = crate::logging::init(&LogSettings {
        types: config.log_types(),
        dest: &config.log_dest,
        timestamp: config.log_timestamp,
        timestamp_format: config.log_timestamp_format.as_deref(),
        facility: config.log_facility,
    });
    for w in warnings {
        tracing::warn!("{w}");
    }
    // Servers raise their open-file limit to the hard limit: each client is a file.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("Open file limit: {n}."),
        Err(e) => tracing::warn!("Cannot raise the open file limit: {e}."),
    }
    runtime.block_on(async move {
        tracing::info!("midge version {} starting", env!("CARGO_PKG_VERSION"));
        if let Some(path) = &config.source {
            tracing::info!("Config loaded from {}.", path.display());
        } else {
            tracing::info!("Starting in local only mode. Connections will only be possible from clients running on this machine.");
        }
        let Started { server, dropped_to, pid_file } =
            match start(config, &log_files, args.set_aside_bad_store).await {
                Ok(started) => started,
                Err(code) => return code,
            };
        let reloader = server.reloader();
        if let Some(lines) = crate::logging::topic_lines() {
            tokio::spawn(midge_broker::log_topic::run(server.broker().clone(), lines));
        }
        tokio::spawn(save_on_sigusr1(reloader.clone()));
        tokio::spawn(reload_on_sighup(hup, reloader, log_files, args, dropped_to));
        // Listening, running as its user, log and pid files open: said as mosquitto says it
        // (what scripts wait for), and systemd (Type=notify) and the parent of -d are told.
        tracing::info!("midge version {} running", env!("CARGO_PKG_VERSION"));
        detach.ready();
        server
            .run(async {
                shutdown_signal().await;
                crate::daemon::notify(&[sd_notify::NotifyState::Stopping]);
            })
            .await;
        drop(pid_file);
        tracing::info!("midge version {} terminating", env!("CARGO_PKG_VERSION"));
        ExitCode::SUCCESS
    })
}

/// A broker ready to serve.
struct Started {
    server: Server,
    /// The user it runs as, if it gave root up.
    dropped_to: Option<String>,
    /// Removed when dropped.
    pid_file: Option<PidFile>,
}

/// Opens the listeners and reads the files (as root, if started so), gives root up, then
/// opens the log and pid files as the user the broker runs as, as mosquitto does: root
/// never writes to a path that user controls. On failure the reason is logged (on standard
/// error too if the log file never opened) and the exit code returned.
async fn start(
    config: Config,
    log_files: &[Arc<LogFile>],
    set_aside_bad_store: bool,
) -> Result<Started, ExitCode> {
    let user = config.user.clone();
    let pid_path = config.pid_file.clone();
    let reread = reread_on_reload(&config);
    let server = Server::bind(config).await.map_err(|e| {
        tracing::error!("{e}");
        // mosquitto has given root up by then, and logs the error to its log file: so does
        // midge, opening the log files as the user it would run as.
        let as_user = crate::privileges::drop_privileges(user.as_deref()).is_ok();
        crate::logging::failed_before_open(log_files, as_user);
        start_failure_code(&e)
    })?;
    let dropped_to = crate::privileges::drop_privileges(user.as_deref()).map_err(|e| {
        tracing::error!("{e}");
        crate::logging::failed_before_open(log_files, false);
        ExitCode::FAILURE
    })?;
    if let Some(name) = &dropped_to {
        tracing::info!("Running as user '{name}'.");
        warn_unreadable(&reread, name);
    }
    // Who opens the files from here on, for the errors: the user the broker runs as.
    let running_as = crate::privileges::current_user_name();
    for f in log_files {
        f.open().map_err(|e| {
            // On standard error: the log file is what failed.
            let message = crate::logging::open_error(f, &e);
            eprintln!("{} (midge runs as user '{running_as}').", message.trim_end_matches('.'));
            crate::logging::failed_before_open(log_files, false);
            ExitCode::FAILURE
        })?;
    }
    let pid_file = pid_path.as_deref().map(PidFile::write).transpose().map_err(|(path, e)| {
        crate::logging::error_to_log_and_stderr(&format!(
            "Error: Unable to write pid file {}: {e} (midge runs as user '{running_as}').",
            path.display()
        ));
        ExitCode::FAILURE
    })?;
    // The store is the broker's user's: opened (and created) after root is given up, as the
    // log files are, so that its new segments can be written by that user.
    server.restore(set_aside_bad_store).map_err(|e| {
        use midge_broker::store::{import::ImportFailure, StoreError};
        use midge_broker::ServerError;
        // Who could not open a file (the user is no help when a file's content is wrong).
        let who = match &e {
            ServerError::Store(StoreError::Io { .. }) | ServerError::Import(ImportFailure::Read { .. }) => {
                format!(" (midge runs as user '{running_as}')")
            }
            _ => String::new(),
        };
        crate::logging::error_to_log_and_stderr(&format!("Error: {e}{who}."));
        match &e {
            ServerError::Store(StoreError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                if let Some(user) = &dropped_to {
                    tracing::error!(
                        "midge runs as user '{user}': that user must be able to write persistence_location \
                         (for example chown {user} DIRECTORY), or run with `user root`."
                    );
                }
            }
            ServerError::Store(
                StoreError::Manifest(_) | StoreError::MissingSegment { .. } | StoreError::NotASegment { .. },
            ) => tracing::error!(
                "The broker does not start over a store it cannot read. To start anyway with an empty \
                 store, keeping the unreadable one aside for inspection: midge broker --set-aside-bad-store"
            ),
            ServerError::Import(_) => tracing::error!(
                "The broker does not start over a mosquitto database it cannot import (as mosquitto does \
                 not); it tries again at the next start. To start without it, moving it aside: \
                 midge broker --set-aside-bad-store"
            ),
            _ => {}
        }
        ExitCode::FAILURE
    })?;
    // Cluster mode: NATS, and the cluster's retained messages, before clients come in.
    let mut server = server;
    server.connect_cluster().await.map_err(|e| {
        crate::logging::error_to_log_and_stderr(&format!("Error: {e}."));
        ExitCode::FAILURE
    })?;
    Ok(Started { server, dropped_to, pid_file })
}

/// The files read at start and again on SIGHUP: the configuration file, password and ACL
/// files, and the listeners' certificates, keys, CA files and directories, and CRLs.
fn reread_on_reload(config: &Config) -> Vec<PathBuf> {
    let security =
        std::iter::once(&config.security).chain(config.listeners.iter().filter_map(|l| l.security.as_ref()));
    let mut files: Vec<PathBuf> =
        security.flat_map(|s| [&s.password_file, &s.acl_file]).flatten().cloned().collect();
    for l in &config.listeners {
        files.extend(l.tls.files().into_iter().filter_map(|(_, path)| path.cloned()));
    }
    files.extend(config.source.clone());
    files.sort();
    files.dedup();
    files
}

/// After root is given up: names the files read as root that the broker's user cannot
/// read again. mosquitto, which reads them after giving root up, refuses to start; midge
/// started with them, and a reload will keep their previous version: better said now than
/// at the first SIGHUP.
fn warn_unreadable(files: &[PathBuf], user: &str) {
    for f in files {
        if nix::unistd::access(f.as_path(), nix::unistd::AccessFlags::R_OK).is_err() {
            tracing::warn!(
                "{} was read as root at start, but user '{user}' cannot read it: a reload (SIGHUP) will \
                 keep its present version. For example chown {user} {}, or run with `user root`.",
                f.display(),
                f.display()
            );
        }
    }
}

/// mosquitto's exit code for what stops the start: 13 when the password or ACL file cannot
/// be read, 3 (its code for a bad configuration) for an ACL line it cannot take, 1 otherwise.
fn start_failure_code(e: &midge_broker::ServerError) -> ExitCode {
    use midge_broker::auth::{AclError, PasswordFileError, SecurityError};
    use midge_broker::ServerError;
    match e {
        ServerError::Security(
            SecurityError::Password(PasswordFileError::Read { .. })
            | SecurityError::Acl(AclError::Read { .. }),
        ) => ExitCode::from(13),
        ServerError::Security(SecurityError::Acl(AclError::Line { .. })) => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// SIGUSR1 writes what is pending to the store now, as mosquitto saves its database then.
async fn save_on_sigusr1(reloader: midge_broker::server::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else { return };
    while usr1.recv().await.is_some() {
        reloader.save_now();
    }
}

/// SIGHUP reads the configuration file again and applies its security settings, reloads the
/// password file, the ACL file, certificates and CRLs, and reopens log files; connections
/// stay, but those the new security settings would not let in are closed (as mosquitto).
async fn reload_on_sighup(
    hup: nix::Result<crate::hangup::Hangup>,
    reloader: midge_broker::server::Reloader,
    log_files: Vec<Arc<LogFile>>,
    args: BrokerArgs,
    dropped_to: Option<String>,
) {
    // After dropping root, files only root may read can no longer be reloaded: say so. The
    // errors carry the OS's message (they are Clone + Eq), where EACCES reads "os error 13".
    let hint = |e: &str| match &dropped_to {
        Some(user) if e.contains("os error 13") => format!(
            " (midge runs as user '{user}' since it started: that user must be able to read the file, \
             for example chown {user} FILE; or run with `user root`)"
        ),
        _ => String::new(),
    };
    let (hup, mut watch) = match hup.map_err(std::io::Error::from).and_then(|h| Ok((h.clone(), h.watch()?))) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("Cannot listen for SIGHUP ({e}): reloading is off.");
            return;
        }
    };
    // Only once the signal is watched for: a pending signal that nothing takes would hold
    // every CONNECT for the gate's longest wait.
    let pending = hup.clone();
    reloader.use_request_probe(move || pending.pending());
    while watch.asked().await.is_some() {
        // Running before the signal is taken: a client connecting now waits either way.
        let _reloading = reloader.begin();
        hup.take();
        watch.taken();
        for f in &log_files {
            // After log rotation: write to the new file of that name.
            if let Err(e) = f.reopen() {
                eprintln!("{}", crate::logging::open_error(f, &e));
            }
        }
        tracing::info!("Reloading config.");
        let reloading = sd_notify::NotifyState::monotonic_usec_now();
        match &reloading {
            Ok(now) => crate::daemon::notify(&[sd_notify::NotifyState::Reloading, now.clone()]),
            Err(_) => crate::daemon::notify(&[sd_notify::NotifyState::Reloading]),
        }
        // The configuration file again; if it cannot be read, the files are still reloaded
        // under the settings in force.
        let mut unreadable = false;
        let fresh = match args.config.as_ref().map(|_| read_config(&args)) {
            Some(Ok((config, warnings))) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(config)
            }
            Some(Err(e)) => {
                unreadable = true;
                let e = e.to_string();
                tracing::error!(
                    "Reload failed: cannot read the configuration again: {e}{}; the settings in force stay",
                    hint(&e)
                );
                None
            }
            None => None,
        };
        let report = reloader.reload(fresh.as_ref());
        for r in &report.reloaded {
            // Capitalised as a log line: "Listener port 8883 on ...: reloaded the CRL (...)."
            let mut line = r.clone();
            line[..1].make_ascii_uppercase();
            tracing::info!("{line}.");
        }
        for p in &report.problems {
            tracing::error!("Reload failed: {p}{}", hint(p));
        }
        if report.problems.is_empty() && !unreadable {
            tracing::info!("Reloaded the password file, ACL file and TLS certificates.");
        } else {
            tracing::info!("Reloaded the rest: what failed is named above.");
        }
        if !report.unapplied.is_empty() {
            tracing::warn!("Changes to {} take effect when midge restarts.", report.unapplied.join(", "));
        }
        crate::daemon::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// The `pid_file`: the process id, written at start and removed when the broker exits.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile, (PathBuf, std::io::Error)> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| (path.to_owned(), e))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                // Typically: its directory is root's, and the broker runs as its `user`.
                tracing::warn!("Cannot remove the pid file {}: {e}.", self.0.display());
            }
            _ => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("Cannot listen for SIGTERM: {e}.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
