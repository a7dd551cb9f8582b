//! `midge`: the broker and the tools around it, one binary.
#![forbid(unsafe_code)]

mod broker_cmd;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Publish a message, as mosquitto_pub (not built yet).
    #[command(disable_help_flag = true)]
    Pub(NotYet),
    /// Subscribe and print messages, as mosquitto_sub (not built yet).
    #[command(disable_help_flag = true)]
    Sub(NotYet),
    /// Request / response, as mosquitto_rr (not built yet).
    #[command(disable_help_flag = true)]
    Rr(NotYet),
    /// Manage password files, as mosquitto_passwd (not built yet).
    Passwd(NotYet),
    /// Run a certificate authority for brokers and devices (not built yet).
    Cert(NotYet),
    /// Decode MQTT from packet captures and show what an eavesdropper sees (not built yet).
    Inspect(NotYet),
    /// Check a broker configuration for weaknesses (not built yet).
    Audit(NotYet),
    /// Measure a broker's throughput and latency (not built yet).
    Bench(NotYet),
}

/// Arguments of a subcommand that is not built yet: accepted and ignored.
#[derive(clap::Args, Debug)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn not_built(name: &str) -> ExitCode {
    eprintln!("midge {name}: not built yet.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker_cmd::run(args),
        Command::Pub(_) => not_built("pub"),
        Command::Sub(_) => not_built("sub"),
        Command::Rr(_) => not_built("rr"),
        Command::Passwd(_) => not_built("passwd"),
        Command::Cert(_) => not_built("cert"),
        Command::Inspect(_) => not_built("inspect"),
        Command::Audit(_) => not_built("audit"),
        Command::Bench(_) => not_built("bench"),
    }
}
