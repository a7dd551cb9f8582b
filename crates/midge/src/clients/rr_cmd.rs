//! `midge rr`: mosquitto_rr, request / response.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use midge_client::{connect, Event};
use midge_codec::{Bytes, Property, ProtocolVersion, Publish, Subscribe, SubscriptionOptions};

use super::common::{
    connect_failure, format, runtime, timeout, topic_name, ArgError, Checked, CommonArgs, Failure, Target,
    Tool,
};
use super::output::{local_time_zone, write_message_in, Format, OutputOptions};

/// Publish a request and print the response, as mosquitto_rr.
#[derive(clap::Args, Debug)]
pub struct RrArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic to send the request to.
    #[arg(short = 't', long = "topic", allow_hyphen_values = true, value_parser = |s: &str| topic_name("publish", s))]
    topic: Option<String>,
    /// Topic the response comes on.
    #[arg(short = 'e', long = "response-topic", allow_hyphen_values = true, value_parser = |s: &str| topic_name("response", s))]
    response_topic: Option<String>,
    /// Request payload.
    #[arg(short = 'm', long = "message", allow_hyphen_values = true)]
    message: Option<String>,
    /// Send the contents of a file.
    #[arg(short = 'f', long = "file", allow_hyphen_values = true)]
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
    #[arg(short = 'F', allow_hyphen_values = true, value_parser = format)]
    format: Option<Format>,
    /// Pretty-print JSON output.
    #[arg(long = "pretty")]
    pretty: bool,
    /// Give up after this many seconds.
    #[arg(short = 'W', allow_hyphen_values = true, value_parser = timeout)]
    timeout: Option<u64>,
    /// Do not print stale (retained) responses.
    #[arg(short = 'R')]
    no_retained: bool,
}

impl RrArgs {
    /// mosquitto_rr's checks of the whole command line.
    fn check(&self) -> Result<Checked, ArgError> {
        let modes = [self.message.is_some(), self.file.is_some(), self.stdin_file, self.null];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ArgError::MessageTypes);
        }
        if let Some(url) = &self.common.url {
            topic_name("publish", &url.topic)?;
        }
        let checked = self.common.check(ProtocolVersion::V5)?;
        let topic = self.topic.is_some() || self.common.url.is_some();
        let message = modes.iter().any(|m| *m);
        if !(topic && message && self.response_topic.is_some()) {
            return Err(ArgError::Incomplete);
        }
        Ok(checked)
    }
}

pub fn run(args: RrArgs, tool: Tool) -> ExitCode {
    let quiet = args.common.quiet;
    match run_inner(args, tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(quiet),
    }
}

fn run_inner(mut args: RrArgs, tool: Tool) -> Result<(), Failure> {
    let checked = args.check().map_err(|e| Failure::usage(tool, &e))?;
    if checked.properties.publish.get(midge_codec::PropertyId::ResponseTopic).is_some() {
        return Err(Failure::new("Error in PUBLISH properties: Duplicate response topic.", 1));
    }
    if args.common.invalid_id() {
        return Err(Failure::new("Error: Invalid id and/or clean_session.", 1));
    }
    if args.common.malformed_id() {
        return Err(Failure::lines(Vec::new(), 1));
    }
    let url = args.common.url.as_ref();
    let topic = args.topic.clone().or(url.map(|u| u.topic.clone())).unwrap_or_default();
    let response = args.response_topic.clone().unwrap_or_default();
    let payload = if let Some(m) = &args.message {
        Bytes::from(m.clone().into_bytes())
    } else if let Some(f) = &args.file {
        Bytes::from(std::fs::read(f).map_err(|_| super::pub_cmd::file_failure(f))?)
    } else if args.stdin_file {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
        Bytes::from(data)
    } else {
        Bytes::new()
    };
    let setup = args.common.setup(checked, url)?;
    let format = args.format.take();
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
