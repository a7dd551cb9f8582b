//! `midge`: the broker and the tools around it, one binary.
#![forbid(unsafe_code)]

mod audit_cmd;
mod bench;
mod broker_cmd;
mod cert;
mod clients;
mod daemon;
mod hangup;
mod inspect_cmd;
mod logging;
mod passwd_cmd;
mod privileges;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clients::common::{Failure, Tool};

/// midge: an MQTT broker and toolkit, a drop-in for mosquitto.
#[derive(Parser, Debug)]
#[command(name = "midge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the MQTT broker (MQTT 3.1, 3.1.1 and 5.0).
    Broker(broker_cmd::BrokerArgs),
    /// Publish a message, as mosquitto_pub.
    #[command(disable_help_flag = true)]
    Pub(NotYet),
    /// Subscribe and print messages, as mosquitto_sub.
    #[command(disable_help_flag = true)]
    Sub(NotYet),
    /// Send a request and print the response, as mosquitto_rr.
    #[command(disable_help_flag = true)]
    Rr(NotYet),
    /// Manage password files, as mosquitto_passwd.
    Passwd(passwd_cmd::PasswdArgs),
    /// Run a certificate authority for brokers and devices.
    Cert(cert::CertArgs),
    /// Decode MQTT from packet captures and show what an eavesdropper sees.
    Inspect(inspect_cmd::InspectArgs),
    /// Check a broker configuration for weaknesses.
    Audit(audit_cmd::AuditArgs),
    /// Measure a broker's throughput, latency and memory per connection.
    Bench(Box<bench::BenchArgs>),
}

/// Arguments of a client tool (pub, sub, rr), which its own parser reads again: accepted here.
#[derive(clap::Args, Debug)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// A client tool's own parser, so that `midge pub ...` and `mosquitto_pub ...` (a link to
/// midge) parse the same way and report errors as mosquitto does: its words, exit code 1,
/// `--help` printing usage and exiting 1, a repeated option taking its last value.
macro_rules! client_tool {
    ($parser:ident, $args:ty, $run:path, $help:path, $options_file:literal) => {
        #[derive(Parser, Debug)]
        #[command(disable_help_flag = true, disable_version_flag = true, args_override_self = true)]
        struct $parser {
            #[command(flatten)]
            args: $args,
        }

        impl $parser {
            fn main(name: &'static str, mut argv: Vec<OsString>) -> ExitCode {
                let tool = Tool { name };
                // As mosquitto's clients: the options in the user's options file come first.
                let from_file = clients::common::options_file_args($options_file);
                let after_name = argv.len().min(1);
                argv.splice(after_name..after_name, from_file);
                let cmd = <$parser as clap::CommandFactory>::command().name(name).bin_name(name);
                let parsed = cmd.try_get_matches_from(argv).and_then(|m| {
                    let mut p = <$parser as clap::FromArgMatches>::from_arg_matches(&m)?;
                    p.args.common.note_order(&m);
                    Ok(p)
                });
                match parsed {
                    Ok(p) if p.args.common.help => {
                        print!("{}", $help(name));
                        ExitCode::from(1)
                    }
                    Ok(p) if p.args.common.version_asked => {
                        println!("{name} version {} (midge).", env!("CARGO_PKG_VERSION"));
                        ExitCode::from(1)
                    }
                    Ok(p) => $run(p.args, tool),
                    Err(e) => Failure::usage(tool, &clients::common::clap_error(&e)).report(false),
                }
            }
        }
    };
}

/// `mosquitto_passwd` (a link to midge) parses as `midge passwd`.
#[derive(Parser, Debug)]
#[command(name = "mosquitto_passwd")]
struct PasswdCli {
    #[command(flatten)]
    args: passwd_cmd::PasswdArgs,
}

/// `mosquitto` (a link to midge) parses as `midge broker`.
#[derive(Parser, Debug)]
#[command(name = "mosquitto", version, about = "midge's MQTT broker, started as mosquitto")]
struct MosquittoCli {
    #[command(flatten)]
    args: broker_cmd::BrokerArgs,
}

client_tool!(
    PubCli,
    clients::pub_cmd::PubArgs,
    clients::pub_cmd::run,
    clients::help::pub_help,
    "mosquitto_pub"
);
client_tool!(
    SubCli,
    clients::sub_cmd::SubArgs,
    clients::sub_cmd::run,
    clients::help::sub_help,
    "mosquitto_sub"
);
client_tool!(RrCli, clients::rr_cmd::RrArgs, clients::rr_cmd::run, clients::help::rr_help, "mosquitto_rr");

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Installed as mosquitto_pub, mosquitto_sub or mosquitto_rr (a link to midge), midge
    // behaves as that program, so scripts written for mosquitto run unchanged.
    let invoked = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match invoked.as_str() {
        "mosquitto_pub" => return PubCli::main("mosquitto_pub", argv),
        "mosquitto_sub" => return SubCli::main("mosquitto_sub", argv),
        "mosquitto_rr" => return RrCli::main("mosquitto_rr", argv),
        // Installed as mosquitto (a link to midge): the broker, with mosquitto's options (-c,
        // -d, -p, -v), so that init scripts and units written for mosquitto start midge.
        "mosquitto" => {
            let cli = MosquittoCli::parse_from(argv);
            return broker_cmd::run(cli.args);
        }
        "mosquitto_passwd" => {
            let cli = PasswdCli::parse_from(argv);
            return passwd_cmd::run(cli.args);
        }
        _ => {}
    }
    let sub = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let rest =
        || std::iter::once(OsString::from(format!("midge {sub}"))).chain(argv[2..].iter().cloned()).collect();
    match sub {
        "pub" => return PubCli::main("midge pub", rest()),
        "sub" => return SubCli::main("midge sub", rest()),
        "rr" => return RrCli::main("midge rr", rest()),
        _ => {}
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
        Command::Pub(_) => PubCli::main("midge pub", rest()),
        Command::Sub(_) => SubCli::main("midge sub", rest()),
        Command::Rr(_) => RrCli::main("midge rr", rest()),
        Command::Passwd(args) => passwd_cmd::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Inspect(args) => inspect_cmd::run(args),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}
