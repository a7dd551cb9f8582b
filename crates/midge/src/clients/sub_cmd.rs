//! `midge sub`: mosquitto_sub.
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use midge_client::{connect, Event};
use midge_codec::{
    topic_matches, ByteString, Bytes, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
    Unsubscribe,
};

use super::common::{connect_failure, runtime, CommonArgs, Failure, Tool};
use super::output::{local_time_zone, write_message_in, Format, OutputOptions};

/// Subscribe and print messages, as mosquitto_sub.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Topic filter to subscribe to; may be repeated.
    #[arg(short = 't', long = "topic")]
    topics: Vec<String>,
    /// Topic filter whose messages are not printed; may be repeated.
    #[arg(short = 'T', long = "filter-out")]
    filter_out: Vec<String>,
    /// Unsubscribe from this filter after subscribing; may be repeated.
    #[arg(short = 'U', long = "unsubscribe")]
    unsubscribe: Vec<String>,
    /// Print "topic payload".
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Do not add an end of line after each message.
    #[arg(short = 'N')]
    no_eol: bool,
    /// Output format (see mosquitto_sub(1)).
    #[arg(short = 'F')]
    format: Option<String>,
    /// Pretty-print JSON output.
    #[arg(long = "pretty")]
    pretty: bool,
    /// Exit after this many messages.
    #[arg(short = 'C')]
    count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(short = 'W')]
    timeout: Option<u64>,
    /// Exit once the subscriptions are acknowledged.
    #[arg(short = 'E')]
    exit_after_subscribe: bool,
    /// Do not print stale (retained) messages.
    #[arg(short = 'R')]
    no_retained: bool,
    /// Only handle retained messages; exit at the first one that is not.
    #[arg(long = "retained-only")]
    retained_only: bool,
    /// Clear every retained message received.
    #[arg(long = "remove-retained")]
    remove_retained: bool,
    /// Keep the retain flag of forwarded messages (5.0).
    #[arg(long = "retain-as-published")]
    retain_as_published: bool,
    /// Print only this percentage of messages.
    #[arg(long = "random-filter")]
    random_filter: Option<f64>,
}

pub fn run(args: SubArgs, tool: Tool) -> ExitCode {
    let quiet = args.common.quiet;
    match run_inner(args, tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(quiet),
    }
}

/// A cheap random number in [0, 100) for --random-filter.
fn percent(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % 10_000) as f64 / 100.0
}

fn run_inner(mut args: SubArgs, tool: Tool) -> Result<(), Failure> {
    let setup = args.common.setup(tool, ProtocolVersion::V3_1_1)?;
    if let Some(t) = &setup.url_topic {
        args.topics.push(t.clone());
    }
    if args.topics.is_empty() {
        return Err(Failure::usage(tool, "Error: You must specify a topic to subscribe to."));
    }
    for t in args.topics.iter().chain(&args.filter_out).chain(&args.unsubscribe) {
        if midge_codec::validate_topic_filter(t).is_err() {
            return Err(Failure::usage(
                tool,
                format!("Error: Invalid subscription topic '{t}', are all '+' and '#' wildcards correct?"),
            ));
        }
    }
    let format = args
        .format
        .as_deref()
        .map(Format::parse)
        .transpose()
        .map_err(|e| Failure::usage(tool, format!("Error: {e}")))?;
    let output = OutputOptions { verbose: args.verbose, eol: !args.no_eol, pretty: args.pretty, format };
    let version = setup.version;
    let options = SubscriptionOptions {
        qos: setup.qos,
        retain_as_published: args.retain_as_published && version.is_v5(),
        ..SubscriptionOptions::default()
    };
    let mut subscribe = Subscribe {
        packet_id: 0,
        properties: setup.properties.subscribe.clone(),
        filters: args.topics.iter().map(|t| (ByteString::from(t.clone()), options)).collect(),
    };
    if !version.is_v5() {
        subscribe.properties = Default::default();
    }
    let unsubscribe = (!args.unsubscribe.is_empty()).then(|| Unsubscribe {
        packet_id: 0,
        properties: if version.is_v5() { setup.properties.unsubscribe.clone() } else { Default::default() },
        filters: args.unsubscribe.iter().map(|t| ByteString::from(t.clone())).collect(),
    });
    let debug = args.common.debug;
    let quiet = args.common.quiet;
    let disconnect_props = setup.properties.disconnect.clone();
    runtime()?.block_on(async move {
        let (client, mut events, _) =
            connect(setup.options).await.map_err(|e| connect_failure(&e, version, false))?;
        let work = async {
            let ack =
                client.subscribe(subscribe).await.map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
            if debug {
                let codes: Vec<String> =
                    ack.reason_codes
                        .iter()
                        .map(|c| {
                            if version.is_v5() || !c.is_error() {
                                c.as_u8().to_string()
                            } else {
                                "128".into()
                            }
                        })
                        .collect();
                println!("Subscribed (mid: {}): {}", ack.packet_id, codes.join(", "));
            }
            if let Some(u) = unsubscribe {
                let _ = client.start_unsubscribe(u).await;
            }
            if args.exit_after_subscribe {
                return Ok(());
            }
            let mut printed = 0u64;
            let mut rng = (std::process::id() as u64) << 32 | 0x9E37_79B9;
            let mut out = Vec::with_capacity(4096);
            let mut err = Vec::new();
            let tz = local_time_zone();
            let stdout = std::io::stdout();
            while let Some(ev) = events.recv().await {
                let msg = match ev {
                    Event::Message(m) => m,
                    Event::Disconnected(d) => {
                        return Err(Failure::new(
                            format!("Error: disconnected by the broker: {}", d.reason_code.description()),
                            1,
                        ))
                    }
                    Event::Closed(Some(e)) => return Err(Failure::new(format!("Error: {e}"), 1)),
                    Event::Closed(None) => return Ok(()),
                };
                if args.retained_only && !msg.retain {
                    return Ok(());
                }
                if args.remove_retained && msg.retain && !msg.payload.is_empty() {
                    let mut clear = Publish::new(msg.topic.clone(), Bytes::new());
                    clear.retain = true;
                    clear.qos = QoS::AtLeastOnce;
                    let _ = client.start_publish(clear).await;
                }
                if args.filter_out.iter().any(|f| topic_matches(f, &msg.topic)) {
                    continue;
                }
                if args.no_retained && msg.retain {
                    continue;
                }
                if let Some(p) = args.random_filter {
                    if percent(&mut rng) >= p {
                        continue;
                    }
                }
                out.clear();
                err.clear();
                write_message_in(&output, &msg, version, SystemTime::now(), &tz, &mut out, &mut err);
                let mut lock = stdout.lock();
                let _ = lock.write_all(&out).and_then(|_| lock.flush());
                if !quiet && !err.is_empty() {
                    let _ = std::io::stderr().write_all(&err);
                }
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    return Ok(());
                }
            }
            Ok(())
        };
        let result = match args.timeout {
            Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new("Timed out", 27)),
            },
            None => work.await,
        };
        let mut d = midge_codec::Disconnect::new(midge_codec::ReasonCode::Success);
        d.properties = disconnect_props;
        let _ = client.disconnect_with(d).await;
        result
    })
}
