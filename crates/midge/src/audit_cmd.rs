//! `midge audit -c FILE`: a mosquitto.conf checked for weaknesses. Exit 0 when there is
//! none (informational notes allowed), 1 with findings, 2 for usage errors and a
//! configuration that cannot be read.
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use midge_audit::{audit_file, report, AuditOptions, Summary};

/// Check a broker configuration (mosquitto.conf) for weaknesses.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// The findings as a JSON array (one object per line), without the summary.
    #[arg(long)]
    json: bool,
    /// Report PBKDF2 ($7$) password hashes with fewer iterations.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    min_iterations: u32,
    /// Report certificates that expire within this many days.
    #[arg(long, value_name = "N", default_value_t = 30)]
    expiry_days: u32,
    /// Take the configuration's relative paths from this directory (the broker's working
    /// directory; default: the current one).
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Whether the broker is started as root (it then runs as its `user`, mosquitto by
    /// default, and must be able to re-read its files as that user). Default: true when
    /// audited as root.
    #[arg(long, value_name = "BOOL")]
    started_as_root: Option<bool>,
}

pub fn run(args: AuditArgs) -> ExitCode {
    let options = AuditOptions {
        min_iterations: args.min_iterations,
        expiry_days: args.expiry_days,
        base_dir: args.dir.clone().unwrap_or_default(),
        ..AuditOptions::default()
    };
    let options =
        AuditOptions { started_as_root: args.started_as_root.unwrap_or(options.started_as_root), ..options };
    let findings = match audit_file(&args.config, &options) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("midge audit: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = Summary::of(&findings);
    let mut out = io::stdout().lock();
    let written = if args.json {
        out.write_all(report::json(&findings).as_bytes())
    } else {
        findings
            .iter()
            .try_for_each(|f| writeln!(out, "{f}"))
            .and_then(|()| writeln!(out, "{}", summary.line(&args.config.display().to_string())))
    };
    match written.and_then(|()| out.flush()) {
        // The reader went away (`midge audit -c f | head`): the exit code still tells.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("midge audit: {e}");
            ExitCode::from(2)
        }
        _ if summary.weaknesses() > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}
