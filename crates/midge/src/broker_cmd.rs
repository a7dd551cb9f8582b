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
    let log_files = match crate::logging::init(&LogSettings {
        verbose: args.verbose,
        level: config.log_level,
        dest: &config.log_dest,
        timestamp: config.log_timestamp,
    }) {
        Ok(files) => files,
        Err((path, e)) => {
            eprintln!("Error: Unable to open log file {} for writing: {e}.", path.display());
            return ExitCode::FAILURE;
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    let _pid_file = match config.pid_file.as_deref().map(PidFile::write).transpose() {
        Ok(p) => p,
        Err((path, e)) => {
            eprintln!("Error: Unable to write pid file {}: {e}.", path.display());
            return ExitCode::FAILURE;
        }
    };
    // Servers raise their open-file limit to the hard limit: each client is a file.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("Open file limit: {n}."),
        Err(e) => tracing::warn!("Cannot raise the open file limit: {e}."),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        tracing::info!("midge version {} starting", env!("CARGO_PKG_VERSION"));
        if let Some(path) = &config.source {
            tracing::info!("Config loaded from {}.", path.display());
        } else {
            tracing::info!("Starting in local only mode. Connections will only be possible from clients running on this machine.");
        }
        let user = config.user.clone();
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Listeners open, files read: root is no longer needed.
        let log_paths: Vec<&Path> = log_files.iter().map(|f| f.path()).collect();
        let dropped_to = match crate::privileges::drop_privileges(user.as_deref(), &log_paths) {
            Ok(Some(name)) => {
                tracing::info!("Running as user '{name}'.");
                Some(name)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("Error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let reloader = server.reloader();
        tokio::spawn(reload_on_sighup(reloader, log_files, args, dropped_to));
        server.run(shutdown_signal()).await;
        tracing::info!("midge version {} terminating", env!("CARGO_PKG_VERSION"));
        ExitCode::SUCCESS
    })
}

/// SIGHUP reads the configuration file again and applies its security settings, reloads the
/// password file, the ACL file, certificates and CRLs, and reopens log files; connections
/// stay.
async fn reload_on_sighup(
    reloader: midge_broker::server::Reloader,
    log_files: Vec<Arc<LogFile>>,
    args: BrokerArgs,
    dropped_to: Option<String>,
) {
    // After dropping root, files only root may read can no longer be reloaded: say so.
    let hint = |e: &dyn std::fmt::Display| match &dropped_to {
        Some(user) if e.to_string().contains("os error 13") => format!(
            " (midge runs as user '{user}' since it started: that user must be able to read the file, \
             for example chown {user} FILE; or run with `user root`)"
        ),
        _ => String::new(),
    };
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot listen for SIGHUP: reloading is off.");
        return;
    };
    while hup.recv().await.is_some() {
        for f in &log_files {
            // After log rotation: write to the new file of that name.
            if let Err(e) = f.reopen() {
                eprintln!("Error: Unable to open log file {} for writing: {e}.", f.path().display());
            }
        }
        tracing::info!("Reloading config.");
        let fresh = match read_config(&args) {
            Ok((config, _)) => config,
            Err(e) => {
                tracing::error!("Reload failed, the previous settings stay in force: {e}{}", hint(&e));
                continue;
            }
        };
        match reloader.reload(args.config.is_some().then_some(&fresh)) {
            Ok(unapplied) => {
                tracing::info!("Reloaded the password file, ACL file and TLS certificates.");
                if !unapplied.is_empty() {
                    tracing::warn!("Changes to {} take effect when midge restarts.", unapplied.join(", "));
                }
            }
            Err(e) => tracing::error!("Reload failed, the previous settings stay in force: {e}{}", hint(&e)),
        }
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
