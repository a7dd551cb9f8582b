//! `midge rr`: mosquitto_rr, request / response.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use midge_client::{connect, Event};
use midge_codec::{Bytes, Property, ProtocolVersion, Publish, Subscribe, SubscriptionOptions};

use super::common::{connect_failure, runtime, CommonArgs, Failure, Target, Tool};
use super::output::{local_time_zone, write_message_in, Format, OutputOptions};

/// Publish a request and print the response, as mosquitto_rr.
#[derive(clap::Args, Debug)]
pub struct RrArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to send the request to.
    #[arg(short = 't', long = "topic")]
    topic: Option<String>,
    /// Topic the response comes on.
    #[arg(short = 'e', long = "response-topic")]
    response_topic: Option<String>,
    /// Request payload.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Send the contents of a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Send all of standard input.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Send a zero-length request.
    #[arg(short = 'n', long = "null-message")]
    null: bool,
    /// Print "topic payload".
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Do not add an end of line.
    #[arg(short = 'N')]
    no_eol: bool,
    /// Output format.
    #[arg(short = 'F')]
    format: Option<String>,
    /// Pretty-print JSON output.
    #[arg(long = "pretty")]
    pretty: bool,
    /// Give up after this many seconds.
    #[arg(short = 'W')]
    timeout: Option<u64>,
    /// Do not print stale (retained) responses.
    #[arg(short = 'R')]
    no_retained: bool,
}

pub fn run(args: RrArgs, tool: Tool) -> ExitCode {
    let quiet = args.common.quiet;
    match run_inner(args, tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(quiet),
    }
}

fn run_inner(args: RrArgs, tool: Tool) -> Result<(), Failure> {
    let setup = args.common.setup(tool, ProtocolVersion::V5)?;
    // mosquitto_rr checks both topics as it reads its options, before it connects.
    for (what, t) in [("publish", &args.topic), ("response", &args.response_topic)] {
        if let Some(t) = t.as_deref().filter(|t| midge_codec::validate_topic_name(t).is_err()) {
            return Err(Failure::usage(
                tool,
                format!("Error: Invalid {what} topic '{t}', does it contain '+' or '#'?"),
            ));
        }
    }
    let topic = args.topic.clone().or(setup.url_topic.clone());
    let (Some(topic), Some(response)) = (topic, args.response_topic.clone()) else {
        return Err(Failure::usage(
            tool,
            "Error: All of topic, message, and response topic must be supplied.",
        ));
    };
    let payload = if let Some(m) = &args.message {
        Bytes::from(m.clone().into_bytes())
    } else if let Some(f) = &args.file {
        Bytes::from(std::fs::read(f).map_err(|_| super::pub_cmd::file_failure(f))?)
    } else if args.stdin_file {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
        Bytes::from(data)
    } else if args.null {
        Bytes::new()
    } else {
        return Err(Failure::usage(
            tool,
            "Error: All of topic, message, and response topic must be supplied.",
        ));
    };
    let format = args
        .format
        .as_deref()
        .map(Format::parse)
        .transpose()
        .map_err(|e| Failure::usage(tool, format!("Error: {e}")))?;
    let output = OutputOptions { verbose: args.verbose, eol: !args.no_eol, pretty: args.pretty, format };
    let version = setup.version;
    let target = Target::of(&setup);
    let qos = setup.qos;
    let (debug, quiet) = (args.common.debug, args.common.quiet);
    let mut request = Publish::new(topic, payload);
    request.qos = qos;
    if version.is_v5() {
        request.properties = setup.properties.publish.clone();
        request.properties.set(Property::ResponseTopic(response.clone().into()));
    }
    runtime()?.block_on(async move {
        let (client, mut events, _) =
            connect(setup.options).await.map_err(|e| connect_failure(&e, &target, false, debug))?;
        let work = async {
            let sub = Subscribe::new(0, response.clone(), SubscriptionOptions::qos(qos));
            let ack = client.subscribe(sub).await.map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
            if let Some(refused) = ack.reason_codes.first().filter(|c| c.is_error()) {
                // As mosquitto_rr: the reason on standard error, no request, exit code 0.
                if !quiet {
                    eprintln!("{}", refused.description());
                }
                return Ok(());
            }
            client.publish(request).await.map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Message(m) => {
                        if args.no_retained && m.retain {
                            continue;
                        }
                        let (mut out, mut err) = (Vec::new(), Vec::new());
                        write_message_in(
                            &output,
                            &m,
                            version,
                            SystemTime::now(),
                            &local_time_zone(),
                            &mut out,
                            &mut err,
                        );
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout.write_all(&out).and_then(|_| stdout.flush());
                        if !quiet && !err.is_empty() {
                            let _ = std::io::stderr().write_all(&err);
                        }
                        return Ok(());
                    }
                    Event::Disconnected(d) => {
                        return Err(Failure::new(
                            format!("Error: disconnected by the broker: {}", d.reason_code.description()),
                            1,
                        ))
                    }
                    Event::Closed(e) => {
                        return Err(Failure::new(
                            format!("Error: {}", e.unwrap_or_else(|| "connection closed".into())),
                            1,
                        ))
                    }
                }
            }
            Ok(())
        };
        let result = match args.timeout {
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs), work)
                .await
                .unwrap_or_else(|_| Err(Failure::new("Timed out", 27))),
            None => work.await,
        };
        let _ = client.disconnect().await;
        result
    })
}
