//! `midge sub`: mosquitto_sub.
//!
//! Messages are handled in the connection's task as they arrive (a message hook), so that
//! what is printed comes in the same order as `-d`'s packet lines, as with libmosquitto.
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use midge_client::{connect, Direction, Event};
use midge_codec::{
    topic_matches, ByteString, Packet, ProtocolVersion, Publish, Subscribe, SubscriptionOptions, Unsubscribe,
};
use tokio::sync::mpsc;

use super::c_numbers::{atof, atoi};
use super::common::{
    connect_failure, format, runtime, timeout, topic_filter, ArgError, Checked, CommonArgs, Failure, Target,
    Tool,
};
use super::output::{local_time_zone, write_message_in, Format, OutputOptions};

/// Subscribe and print messages, as mosquitto_sub.
#[derive(clap::Args, Debug)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic filter to subscribe to; may be repeated.
    #[arg(short = 't', long = "topic", allow_hyphen_values = true, value_parser = |s: &str| topic_filter("subscription", s))]
    topics: Vec<String>,
    /// Topic filter whose messages are not printed; may be repeated.
    #[arg(short = 'T', long = "filter-out", allow_hyphen_values = true, value_parser = |s: &str| topic_filter("filter", s))]
    filter_out: Vec<String>,
    /// Unsubscribe from this filter after subscribing; may be repeated.
    #[arg(short = 'U', long = "unsubscribe", allow_hyphen_values = true, value_parser = |s: &str| topic_filter("unsubscribe", s))]
    unsubscribe: Vec<String>,
    /// Print "topic payload".
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Do not add an end of line after each message.
    #[arg(short = 'N')]
    no_eol: bool,
    /// Output format (see mosquitto_sub(1)).
    #[arg(short = 'F', allow_hyphen_values = true, value_parser = format)]
    format: Option<Format>,
    /// Pretty-print JSON output.
    #[arg(long = "pretty")]
    pretty: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', allow_hyphen_values = true, value_parser = count)]
    count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(short = 'W', allow_hyphen_values = true, value_parser = timeout)]
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
    /// Clear every retained message received (use -T to protect some).
    #[arg(long = "remove-retained")]
    remove_retained: bool,
    /// Keep the retain flag of forwarded messages (5.0).
    #[arg(long = "retain-as-published")]
    retain_as_published: bool,
    /// Print only this percentage of messages (0.1 to 100), as a chance out of 10,000.
    #[arg(long = "random-filter", allow_hyphen_values = true, value_parser = random_filter)]
    random_filter: Option<u64>,
}

fn count(s: &str) -> Result<u64, ArgError> {
    let n = atoi(s);
    u64::try_from(n).ok().filter(|n| *n > 0).ok_or(ArgError::Count(n))
}

/// --random-filter: mosquitto_sub takes what is from 0.1 to 1000 once read by `atof` (it
/// counts in tenths of a per mille, a bug); midge reads it as the percentage it is meant to
/// be, so more than 100 prints everything.
fn random_filter(s: &str) -> Result<u64, ArgError> {
    let chance = atof(s);
    if !(1..=10_000).contains(&((10.0 * chance) as i64)) {
        return Err(ArgError::RandomFilter);
    }
    Ok(((chance * 100.0) as u64).min(10_000))
}

impl SubArgs {
    /// mosquitto_sub's checks of the whole command line.
    fn check(&mut self) -> Result<Checked, ArgError> {
        if let Some(url) = &self.common.url {
            self.topics.push(topic_filter("subscription", &url.topic)?);
        }
        let checked = self.common.check(ProtocolVersion::V3_1_1)?;
        if self.topics.is_empty() {
            return Err(ArgError::NoSubscription);
        }
        Ok(checked)
    }
}

pub fn run(args: SubArgs, tool: Tool) -> ExitCode {
    let quiet = args.common.quiet;
    match run_inner(args, tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(quiet),
    }
}

/// What the message handler tells the main task.
enum Note {
    /// Publish an empty retained message to this topic (--remove-retained).
    Clear(ByteString),
    /// Enough: -C reached, or --retained-only met a fresh message.
    Done,
}

/// The per-message logic of mosquitto_sub, run in the connection's task.
struct Printer {
    output: OutputOptions,
    version: ProtocolVersion,
    filter_out: Vec<String>,
    no_retained: bool,
    retained_only: bool,
    remove_retained: bool,
    /// Chance out of 10,000 of printing a message (--random-filter).
    chance: u64,
    count: Option<u64>,
    received: u64,
    done: bool,
    quiet: bool,
    rng: u64,
    tz: jiff::tz::TimeZone,
    notes: mpsc::UnboundedSender<Note>,
}

impl Printer {
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 10_000
    }

    fn on_message(&mut self, msg: &Publish) {
        if self.done {
            return;
        }
        if self.filter_out.iter().any(|f| topic_matches(f, &msg.topic)) {
            return;
        }
        if self.remove_retained && msg.retain && !msg.payload.is_empty() {
            let _ = self.notes.send(Note::Clear(msg.topic.clone()));
        }
        if self.retained_only && !msg.retain {
            self.done = true;
            let _ = self.notes.send(Note::Done);
            return;
        }
        if self.no_retained && msg.retain {
            return;
        }
        if self.chance >= 10_000 || self.next_random() < self.chance {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            write_message_in(
                &self.output,
                msg,
                self.version,
                SystemTime::now(),
                &self.tz,
                &mut out,
                &mut err,
            );
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&out).and_then(|_| stdout.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    // Its reader is gone (`midge sub ... | head -n 1`): as mosquitto_sub, it
                    // ends there (it ran on for ever), and exits 0.
                    self.done = true;
                    let _ = self.notes.send(Note::Done);
                    return;
                }
            }
            if !self.quiet && !err.is_empty() {
                let _ = std::io::stderr().write_all(&err);
            }
        }
        // -C counts messages received, printed or not (as mosquitto_sub does).
        self.received += 1;
        if self.count.is_some_and(|c| self.received >= c) {
            self.done = true;
            let _ = self.notes.send(Note::Done);
        }
    }
}

fn run_inner(mut args: SubArgs, tool: Tool) -> Result<(), Failure> {
    let checked = args.check().map_err(|e| Failure::usage(tool, &e))?;
    if args.no_retained && args.retained_only {
        // mosquitto_sub says it after a blank line, without the usage hint.
        return Err(Failure::loud(vec![
            String::new(),
            "Error: Combining '-R' and '--retained-only' makes no sense.".into(),
        ]));
    }
    if args.common.invalid_id() {
        return Err(Failure::new("Error: Invalid id and/or clean_session.", 1));
    }
    if args.common.malformed_id() {
        return Err(Failure::lines(Vec::new(), 1));
    }
    let mut setup = args.common.setup(checked, args.common.url.as_ref())?;
    let (count, timeout, format) = (args.count, args.timeout, args.format.take());
    let chance = args.random_filter.unwrap_or(10_000);
    let version = setup.version;
    let target = Target::of(&setup);
    let options = SubscriptionOptions {
        qos: setup.qos,
        retain_as_published: args.retain_as_published && version.is_v5(),
        ..SubscriptionOptions::default()
    };
    let properties = if version.is_v5() { setup.properties.subscribe.clone() } else { Default::default() };
    let subscribe = Subscribe {
        packet_id: 0,
        properties,
        filters: args.topics.iter().map(|t| (ByteString::from(t.clone()), options)).collect(),
    };
    let unsubscribe = (!args.unsubscribe.is_empty()).then(|| Unsubscribe {
        packet_id: 0,
        properties: if version.is_v5() { setup.properties.unsubscribe.clone() } else { Default::default() },
        filters: args.unsubscribe.iter().map(|t| ByteString::from(t.clone())).collect(),
    });
    let quiet = args.common.quiet;
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let printer = Arc::new(Mutex::new(Printer {
        output: OutputOptions { verbose: args.verbose, eol: !args.no_eol, pretty: args.pretty, format },
        version,
        filter_out: args.filter_out.clone(),
        no_retained: args.no_retained,
        retained_only: args.retained_only,
        remove_retained: args.remove_retained,
        chance,
        count,
        received: 0,
        // With -E nothing is printed: the client leaves at SUBACK.
        done: args.exit_after_subscribe,
        quiet,
        rng: u64::from(std::process::id()) << 32 | 0x9E37_79B9,
        tz: local_time_zone(),
        notes: notes_tx,
    }));
    // midge-client delivers a QoS 2 message at its PUBLISH (so that it is not lost if the
    // connection ends before PUBREL); mosquitto_sub prints it once it has sent PUBCOMP. The
    // output is mosquitto_sub's: the message waits here for its PUBCOMP, or the end of the
    // connection.
    let held: Arc<Mutex<Vec<Publish>>> = Arc::default();
    let (hook_printer, hook_held) = (printer.clone(), held.clone());
    setup.options.on_message = Some(Arc::new(move |m: &Publish| {
        if m.qos == midge_codec::QoS::ExactlyOnce {
            hook_held.lock().unwrap_or_else(|e| e.into_inner()).push(m.clone());
        } else {
            hook_printer.lock().unwrap_or_else(|e| e.into_inner()).on_message(m);
        }
    }));
    let debug = setup.options.on_packet.take();
    let (hook_printer, hook_held) = (printer.clone(), held.clone());
    setup.options.on_packet = Some(Arc::new(move |dir: Direction, p: &Packet| {
        if let Some(debug) = &debug {
            debug(dir, p);
        }
        if let (Direction::Sent, Packet::PubComp(a)) = (dir, p) {
            let mut held = hook_held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = held.iter().position(|m| m.packet_id == a.packet_id) {
                let m = held.remove(i);
                hook_printer.lock().unwrap_or_else(|e| e.into_inner()).on_message(&m);
            }
        }
        if debug.is_some() {
            // mosquitto_sub -d also says which QoS each subscription was granted, at SUBACK.
            if let (Direction::Received, Packet::SubAck(a)) = (dir, p) {
                let codes: Vec<String> =
                    a.reason_codes
                        .iter()
                        .map(|c| {
                            if version.is_v5() || !c.is_error() {
                                c.as_u8().to_string()
                            } else {
                                "128".into()
                            }
                        })
                        .collect();
                println!("Subscribed (mid: {}): {}", a.packet_id, codes.join(", "));
            }
        }
    }));
    let disconnect_props = setup.properties.disconnect.clone();
    let exit_after_subscribe = args.exit_after_subscribe;
    let debug = args.common.debug;
    runtime()?.block_on(async move {
        // As mosquitto_sub: SIGINT and SIGTERM end it as a normal exit (DISCONNECT once
        // connected, so no will, and exit code 0), from the start, even when it was started
        // with SIGINT ignored.
        let signal =
            |kind| tokio::signal::unix::signal(kind).map_err(|e| Failure::new(format!("Error: {e}"), 1));
        let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
        let stopped = async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        };
        tokio::pin!(stopped);
        let options = setup.options;
        let (client, events, _) = tokio::select! {
            c = connect(options.clone()) => c.map_err(|e| connect_failure(&e, &target, false, debug))?,
            _ = &mut stopped => return Ok(()),
        };
        // The connection in use: another one after each reconnection.
        let current = std::cell::RefCell::new(client);
        let work = async {
            let mut events = events;
            // The clearing messages sent: each acknowledged before the client leaves (with -C,
            // the last one was lost to the DISCONNECT 3 times in 4).
            let mut clears = Vec::new();
            let mut uncleared = Vec::new();
            loop {
                let client = current.borrow().clone();
                for topic in uncleared.drain(..) {
                    clears.extend(client.start_publish(clear_retained(topic)).await.ok());
                }
                let ack = client
                    .start_subscribe(subscribe.clone())
                    .await
                    .map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
                if let Some(u) = &unsubscribe {
                    let _ = client.start_unsubscribe(u.clone()).await;
                }
                let ack = ack.await.map_err(|e| Failure::new(format!("Error: {e}"), 1))?;
                if !ack.reason_codes.is_empty() && ack.reason_codes.iter().all(|c| c.is_error()) {
                    // As mosquitto_sub: nothing to wait for; it disconnects and exits 0.
                    if !quiet {
                        eprintln!("All subscription requests were denied.");
                    }
                    return Ok(());
                }
                if exit_after_subscribe {
                    return Ok(());
                }
                loop {
                    tokio::select! {
                        note = notes.recv() => match note {
                            Some(Note::Clear(topic)) => {
                                clears.extend(client.start_publish(clear_retained(topic)).await.ok());
                            }
                            Some(Note::Done) | None => {
                                let acked = async {
                                    for clear in clears.drain(..) {
                                        let _ = clear.await;
                                    }
                                };
                                let _ = tokio::time::timeout(Duration::from_secs(5), acked).await;
                                return Ok(());
                            }
                        },
                        ev = events.recv() => match ev {
                            // Lost, or ended by the broker: as mosquitto_sub (libmosquitto's
                            // loop_forever), connected again, and subscribed again.
                            Some(Event::Disconnected(_) | Event::Closed(Some(_))) => break,
                            Some(Event::Closed(None)) | None => return Ok(()),
                            Some(Event::Message(_)) => {}
                        },
                    }
                }
                // QoS 2 messages whose PUBREL did not come: delivered all the same (not lost).
                print_unreleased(&held, &printer);
                events = loop {
                    // Every second, as libmosquitto's default reconnect delay, silently but
                    // for a refusal, which ends it as the first connection's would. Done
                    // meanwhile (-C reached as the connection went): over.
                    // A retained message to clear (--remove-retained) waits for the connection.
                    let done = async {
                        while let Some(Note::Clear(topic)) = notes.recv().await {
                            uncleared.push(topic);
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = done => return Ok(()),
                    }
                    match connect(options.clone()).await {
                        Ok((client, events, _)) => {
                            *current.borrow_mut() = client;
                            break events;
                        }
                        Err(e) if e.is_refused() => return Err(connect_failure(&e, &target, false, debug)),
                        Err(_) => {}
                    }
                };
            }
        };
        let work = async {
            match timeout {
                Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::new("Timed out", 27)),
                },
                None => work.await,
            }
        };
        let result = tokio::select! {
            r = work => r,
            _ = &mut stopped => Ok(()),
        };
        let mut d = midge_codec::Disconnect::new(midge_codec::ReasonCode::Success);
        d.properties = disconnect_props;
        let client = current.borrow().clone();
        let _ = client.disconnect_with(d).await;
        print_unreleased(&held, &printer);
        result
    })
}

/// The retained, empty QoS 1 message that clears `topic`'s retained message.
fn clear_retained(topic: ByteString) -> Publish {
    let mut clear = Publish::new(topic, midge_codec::Bytes::new());
    clear.retain = true;
    clear.qos = midge_codec::QoS::AtLeastOnce;
    clear
}

/// Prints the QoS 2 messages whose PUBREL did not come before the connection ended: they
/// were delivered all the same (not lost).
fn print_unreleased(held: &Mutex<Vec<Publish>>, printer: &Mutex<Printer>) {
    let unreleased = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    let mut printer = printer.lock().unwrap_or_else(|e| e.into_inner());
    for m in &unreleased {
        printer.on_message(m);
    }
}
