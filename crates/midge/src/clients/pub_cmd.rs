//! `midge pub`: mosquitto_pub.
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use midge_client::{connect, Direction, PacketHook};
use midge_codec::{Bytes, Packet, ProtocolVersion, Publish};

use super::c_numbers::{atof, atoi};
use super::common::{
    connect_failure, runtime, topic_name, ArgError, Checked, CommonArgs, Failure, Target, Tool,
};

/// Publish messages, as mosquitto_pub.
#[derive(clap::Args, Debug)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to publish to.
    #[arg(short = 't', long = "topic", allow_hyphen_values = true, value_parser = |s: &str| topic_name("publish", s))]
    topic: Option<String>,
    /// Message payload.
    #[arg(short = 'm', long = "message", allow_hyphen_values = true)]
    message: Option<String>,
    /// Send the contents of a file.
    #[arg(short = 'f', long = "file", allow_hyphen_values = true)]
    file: Option<PathBuf>,
    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Send each line of standard input as a message.
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Send a zero-length message.
    #[arg(short = 'n', long = "null-message")]
    null: bool,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// Publish N times (with -m, -f, -s or -n).
    #[arg(long = "repeat", default_value_t = 1, allow_hyphen_values = true, value_parser = repeat)]
    repeat: u32,
    /// Seconds between repeats.
    #[arg(long = "repeat-delay", default_value_t = 0.0, allow_hyphen_values = true, value_parser = repeat_delay)]
    repeat_delay: f64,
}

fn repeat(s: &str) -> Result<u32, ArgError> {
    u32::try_from(atoi(s)).ok().filter(|n| *n > 0).ok_or(ArgError::Repeat)
}

fn repeat_delay(s: &str) -> Result<f64, ArgError> {
    Some(atof(s)).filter(|d| *d >= 0.0).ok_or(ArgError::RepeatDelay)
}

impl PubArgs {
    /// mosquitto_pub's checks of the whole command line, before it reads a message.
    fn check(&self) -> Result<Checked, ArgError> {
        let modes =
            [self.message.is_some(), self.file.is_some(), self.stdin_file, self.stdin_line, self.null];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ArgError::MessageTypes);
        }
        if let Some(url) = &self.common.url {
            topic_name("publish", &url.topic)?;
        }
        self.common.check(ProtocolVersion::V3_1_1)
    }
}

enum Source {
    Once(Bytes),
    Lines,
}

/// An unreadable -f file, in mosquitto's words.
pub fn file_failure(f: &std::path::Path) -> Failure {
    Failure::lines(
        vec![
            format!("Error: Unable to open file \"{}\".", f.display()),
            format!("Error loading input file \"{}\".", f.display()),
        ],
        1,
    )
}

/// A packet hook (after `debug`'s, if any) that warns of each publish the server refused,
/// as mosquitto_pub does when a 5.0 PUBACK, PUBREC or PUBCOMP carries an error reason
/// code: "Warning: Publish 1 failed: Not authorized." The exit code stays 0.
fn warn_failed_publishes(debug: Option<PacketHook>) -> PacketHook {
    Arc::new(move |dir: Direction, p: &Packet| {
        if let Some(d) = &debug {
            d(dir, p);
        }
        if dir != Direction::Received {
            return;
        }
        if let Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) = p {
            if a.reason_code.is_error() {
                eprintln!("Warning: Publish {} failed: {}.", a.packet_id, a.reason_code.description());
            }
        }
    })
}

pub fn run(args: PubArgs, tool: Tool) -> ExitCode {
    let quiet = args.common.quiet;
    match run_inner(args, tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(quiet),
    }
}

/// The message to send, read as mosquitto_pub reads it: before it checks that there is a
/// topic and a message. `None`: no message given.
fn read_source(args: &PubArgs) -> Result<Option<Source>, Failure> {
    Ok(Some(if let Some(m) = &args.message {
        Source::Once(Bytes::from(m.clone().into_bytes()))
    } else if let Some(f) = &args.file {
        Source::Once(Bytes::from(std::fs::read(f).map_err(|_| file_failure(f))?))
    } else if args.stdin_file {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
        if data.is_empty() {
            return Err(Failure::lines(
                vec!["Error: Zero length input.".into(), "Error loading input from stdin.".into()],
                1,
            ));
        }
        Source::Once(Bytes::from(data))
    } else if args.stdin_line {
        Source::Lines
    } else if args.null {
        Source::Once(Bytes::new())
    } else {
        return Ok(None);
    }))
}

fn run_inner(args: PubArgs, tool: Tool) -> Result<(), Failure> {
    let checked = args.check().map_err(|e| Failure::usage(tool, &e))?;
    let source = read_source(&args)?;
    let url = args.common.url.as_ref();
    let (Some(topic), Some(source)) = (args.topic.clone().or(url.map(|u| u.topic.clone())), source) else {
        // mosquitto_pub prints its usage on standard output, and no hint.
        print!("{}", super::help::pub_help(tool.name));
        return Err(Failure::loud(vec!["Error: Both topic and message must be supplied.".into()]));
    };
    if args.common.invalid_id() {
        return Err(Failure::new("Error: Invalid id.", 1));
    }
    if args.common.malformed_id() {
        return Err(Failure::lines(Vec::new(), 1));
    }
    let setup = args.common.setup(checked, url)?;
    let version = setup.version;
    let target = Target::of(&setup);
    let qos = setup.qos;
    let properties = setup.properties.publish.clone();
    let disconnect_props = setup.properties.disconnect.clone();
    let (debug, quiet) = (args.common.debug, args.common.quiet);
    let mut options = setup.options;
    options.event_capacity = 16;
    if version.is_v5() && !quiet {
        options.on_packet = Some(warn_failed_publishes(options.on_packet.take()));
    }
    let make = move |payload: Bytes| {
        let mut p = Publish::new(topic.clone(), payload);
        p.qos = qos;
        p.retain = args.retain;
        p.properties = properties.clone();
        p
    };
    runtime()?.block_on(async move {
        let (client, _events, _) =
            connect(options).await.map_err(|e| connect_failure(&e, &target, true, debug))?;
        let publish_error = |e: midge_client::Error| Failure::new(format!("Error: {e}"), 1);
        // Lines refused as larger than the broker's Maximum Packet Size (reported, the others
        // go on; the exit code says it).
        let mut refused = false;
        match source {
            Source::Once(payload) => {
                for i in 0..args.repeat.max(1) {
                    if i > 0 && args.repeat_delay > 0.0 {
                        tokio::time::sleep(Duration::from_secs_f64(args.repeat_delay)).await;
                    }
                    // QoS 1 / 2: wait for the acknowledgement before going on (and exiting).
                    client.publish(make(payload.clone())).await.map_err(publish_error)?;
                }
            }
            Source::Lines => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
                std::thread::spawn(move || {
                    let stdin = std::io::stdin();
                    let mut lock = stdin.lock();
                    loop {
                        let mut line = Vec::new();
                        match lock.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                if line.last() == Some(&b'\n') {
                                    line.pop();
                                }
                                if tx.blocking_send(line).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
                // Each line's outcome (QoS 0: taken by the connection, or refused as too
                // large; QoS 1 / 2: acknowledged), looked at as it comes in without waiting
                // for it, so that lines go out in batches.
                let mut look = |outcome: Result<_, midge_client::Error>| match outcome {
                    Err(e) if e.is_too_large() => {
                        if !quiet {
                            eprintln!("Error: {e}");
                        }
                        refused = true;
                        Ok(())
                    }
                    other => other.map(drop).map_err(publish_error),
                };
                let mut acks = std::collections::VecDeque::new();
                while let Some(line) = rx.recv().await {
                    acks.push_back(
                        client.start_publish(make(Bytes::from(line))).await.map_err(publish_error)?,
                    );
                    while let Some(outcome) = acks.front_mut().and_then(|a| a.try_take()) {
                        acks.pop_front();
                        look(outcome)?;
                    }
                }
                for a in acks {
                    look(a.await)?;
                }
            }
        }
        let mut d = midge_codec::Disconnect::new(midge_codec::ReasonCode::Success);
        d.properties = disconnect_props;
        client.disconnect_with(d).await.map_err(publish_error)?;
        if refused {
            return Err(Failure::lines(Vec::new(), 1));
        }
        Ok(())
    })
}
