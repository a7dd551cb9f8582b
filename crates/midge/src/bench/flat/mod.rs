//! `--flat-out`: no window. Publishers write PUBLISHes as fast as their sockets take them
//! (QoS 1 / 2: as many in flight as `--inflight` and the broker's Receive Maximum allow),
//! subscribers read as fast as the broker sends, and the run counts exactly what was lost.
//!
//! Every payload carries its publisher and a sequence number per publisher; each receiver
//! (a subscriber, or a `$share` group) keeps one bit per sequence number. At the end of the
//! load the publishers stop (after the PUBLISH they are writing), then the subscribers drain:
//! they read until nothing has arrived for a second, or everything published has arrived.
//! A message still in flight at the stop is therefore not lost; one never received after the
//! drain is. `published` counts PUBLISHes completely written to the socket, so that
//! `published x copies = delivered + lost` holds exactly.
//!
//! The published rate is per second of load; the delivered rate per second of load too, or
//! per second from the start to the last message received when deliveries went on after the
//! stop: a broker that buffers what it cannot deliver yet and sends it after the publishers
//! stopped is neither rewarded nor punished for it (the rate while publishing is reported
//! too).
//!
//! The load runs on one thread (a current-thread runtime) so that the broker keeps the other
//! cores; publishers write many packets per system call from a template encoded once,
//! subscribers read up to 256 KiB per call and scan packets without decoding them. The
//! summary says how much CPU the generator used.
mod link;
mod report;
mod tally;
mod wire;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use midge_codec::{parse_shared, topic_matches, QoS, ReasonCode, Subscribe, SubscriptionOptions};

use super::load::{count, plan};
use super::stats::Sample;
use super::verdict::{check_suback, verdict, Outcome, Refusals};
use super::{BenchArgs, BenchError};
use link::{Conn, Control, Job, Phase, Report};
use report::{Cpu, Summary};
use tally::Receiver;
use wire::Template;

/// The drain ends when nothing has arrived for this long...
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// ... or after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Runs the scenario flat out on a current-thread runtime.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BenchError::Runtime)?;
    tokio::task::LocalSet::new().block_on(&rt, drive(args))
}

/// The sum of the messages of these reports.
fn total(reports: &[Rc<Report>]) -> u64 {
    reports.iter().map(|r| r.messages.get()).sum()
}

async fn drive(args: &BenchArgs) -> Result<(), BenchError> {
    let version = args.mqtt_version()?;
    if args.size < 16 {
        return Err(BenchError::PayloadTooSmall);
    }
    if args.rate > 0 {
        return Err(BenchError::FlatOutRate);
    }
    let run = format!("{:x}", std::process::id() ^ Instant::now().elapsed().subsec_nanos());
    let plan = plan(args, &run)?;
    let tls = args.tls()?;
    let qos = args.qos();
    let sub_args = args.subscriber_side();
    let options_of = |args: &BenchArgs, id: String, index: usize| {
        let mut o = args.client_options(&tls, version, id, index, 60);
        o.max_inflight = u16::try_from(args.inflight.max(1)).unwrap_or(u16::MAX);
        o
    };
    let options = |id: String, index: usize| options_of(args, id, index);

    // Subscribers, and the receivers that count for them: one per subscriber, one per
    // $share group.
    let mut groups: Vec<(String, Rc<RefCell<Receiver>>)> = Vec::new();
    let mut subscribers = Vec::new();
    for (i, filter) in plan.filters.iter().enumerate() {
        let o = options_of(&sub_args, format!("bench-sub-{run}-{i}"), i);
        let (mut conn, _) = Conn::connect(&o).await.map_err(|reason| BenchError::Handshake {
            role: "subscriber",
            index: i,
            reason,
        })?;
        let sub = Subscribe::new(1, filter.clone(), SubscriptionOptions::qos(qos));
        let ack = conn
            .subscribe(sub)
            .await
            .map_err(|reason| BenchError::Refused { filter: filter.clone(), reason })?;
        check_suback(filter, &ack, version)?;
        let (key, plain, shared) = match parse_shared(filter) {
            Ok(Some(s)) => (format!("$share/{}/{}", s.group, s.filter), s.filter.to_owned(), true),
            _ => (format!("{i}"), filter.clone(), false),
        };
        let receiver = match groups.iter().find(|(k, _)| *k == key) {
            Some((_, r)) => r.clone(),
            None => {
                let expects = plan.publish_topics.iter().map(|t| topic_matches(&plain, t));
                let mut r = Receiver::new(expects, args.size);
                if shared {
                    r = r.unordered();
                }
                let r = Rc::new(RefCell::new(r));
                groups.push((key, r.clone()));
                r
            }
        };
        subscribers.push((conn, receiver));
    }
    tokio::time::sleep(args.settle()).await;
    let mut publishers = Vec::new();
    let mut window = u16::MAX;
    for (i, topic) in plan.publish_topics.iter().enumerate() {
        let o = options(format!("bench-pub-{run}-{i}"), plan.filters.len() + i);
        let (conn, connack) = Conn::connect(&o).await.map_err(|reason| BenchError::Handshake {
            role: "publisher",
            index: i,
            reason,
        })?;
        let w = connack.properties.receive_maximum().unwrap_or(u16::MAX).min(o.max_inflight).max(1);
        window = window.min(w);
        let template = Template::new(topic, i as u32, args.size, qos, version).map_err(BenchError::Encode)?;
        publishers.push((conn, Job { template, qos: args.qos, window: w }));
    }
    let label = format!(
        "{}: {}, {}, QoS {}, {} B, flat out{}, MQTT {}",
        args.scenario,
        count(publishers.len(), "publisher"),
        count(subscribers.len(), "subscriber"),
        args.qos,
        args.size,
        if qos == QoS::AtMostOnce { String::new() } else { format!(", {window} in flight") },
        version
    );

    let ctl = Control::new(subscribers.len() + publishers.len());
    let mut tasks = Vec::new();
    let mut received = Vec::new();
    let mut sent = Vec::new();
    let cpu_before = Cpu::now();
    let started = Instant::now();
    for (slot, (conn, receiver)) in subscribers.into_iter().enumerate() {
        let report = Rc::new(Report::default());
        received.push(report.clone());
        tasks.push(tokio::task::spawn_local(link::subscriber(conn, receiver, ctl.clone(), slot, report)));
    }
    let first = received.len();
    for (slot, (conn, job)) in publishers.into_iter().enumerate() {
        let report = Rc::new(Report::default());
        sent.push(report.clone());
        tasks.push(tokio::task::spawn_local(link::publisher(conn, job, ctl.clone(), first + slot, report)));
    }

    // The load, with a progress line each second.
    let until = started + Duration::from_secs(args.duration);
    let quiet = args.quiet || args.json;
    let mut samples = Vec::new();
    let mut tick =
        tokio::time::interval_at((started + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let (mut last_sent, mut last_recv, mut last_t) = (0, 0, started);
    while Instant::now() < until {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
        let (s, r) = (total(&sent), total(&received));
        let sample = Sample {
            t: now.duration_since(started).as_secs_f64(),
            sent_per_sec: (s - last_sent) as f64 / dt,
            received_per_sec: (r - last_recv) as f64 / dt,
            p50_us: 0,
            p99_us: 0,
        };
        (last_sent, last_recv, last_t) = (s, r, now);
        if !quiet {
            eprintln!(
                "{:>5.0}s {} flat out  published {:>9.0}/s  delivered {:>9.0}/s",
                sample.t, args.scenario, sample.sent_per_sec, sample.received_per_sec
            );
        }
        samples.push(sample);
    }

    // Stop the publishers, then drain: until nothing has arrived for a second, or all that
    // was published has arrived (and, QoS 1 / 2, was acknowledged).
    ctl.set(Phase::Stop);
    let stopped = Instant::now();
    let delivered_at_stop: u64 = groups.iter().map(|(_, r)| r.borrow().distinct()).sum();
    let copies = |published: &[u64]| -> u64 {
        groups.iter().map(|(_, r)| tally::count([&*r.borrow()], published).expected).sum()
    };
    let mut last = total(&received);
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = total(&received);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        let flushed = sent.iter().all(|r| r.flushed.get() || r.error.borrow().is_some());
        let published: Vec<u64> = sent.iter().map(|r| r.messages.get()).collect();
        let delivered: u64 = groups.iter().map(|(_, r)| r.borrow().distinct()).sum();
        if (flushed && delivered >= copies(&published))
            || last_change.elapsed() >= DRAIN_IDLE
            || stopped.elapsed() >= DRAIN_MAX
        {
            break;
        }
    }
    let drained = Instant::now();
    let cpu = Cpu::now().since(&cpu_before);
    ctl.set(Phase::End);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }

    let published: Vec<u64> = sent.iter().map(|r| r.messages.get()).collect();
    let receivers: Vec<_> = groups.iter().map(|(_, r)| r.borrow().clone()).collect();
    let errors: Vec<String> = sent
        .iter()
        .enumerate()
        .map(|(i, r)| ("publisher", i, r))
        .chain(received.iter().enumerate().map(|(i, r)| ("subscriber", i, r)))
        .filter_map(|(role, i, r)| r.error.borrow().as_ref().map(|e| format!("{role} {i}: {e}")))
        .collect();
    let last_read = received.iter().filter_map(|r| r.last_read.get()).max().unwrap_or(started);
    let summary = Summary {
        label: label.clone(),
        seconds: stopped.duration_since(started).as_secs_f64(),
        delivering_seconds: last_read.duration_since(started).as_secs_f64(),
        drain_seconds: drained.duration_since(stopped).as_secs_f64(),
        published: published.iter().sum(),
        read: total(&received),
        count: tally::count(&receivers, &published),
        delivered_at_stop,
        acked: sent.iter().map(|r| r.acked.get()).sum(),
        refused: sent.iter().map(|r| r.refused.get()).sum(),
        window: (qos != QoS::AtMostOnce).then_some(window),
        cpu,
        errors,
    };
    if args.json {
        let parameters = serde_json::json!({
            "scenario": args.scenario,
            "publishers": sent.len(),
            "subscribers": received.len(),
            "qos": args.qos,
            "size": args.size,
            "inflight": args.inflight,
            "duration": args.duration,
            "mqtt_version": version.to_string(),
            "tls": args.cafile.is_some() || args.cert.is_some(),
        });
        println!("{}", summary.json(parameters, &samples));
    } else {
        print!("{}", summary.text());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, super::plot::svg(&label, &samples))
            .map_err(|source| BenchError::Plot { path: path.clone(), source })?;
    }
    let mut refusals = None;
    for (report, topic) in sent.iter().zip(&plan.publish_topics) {
        if let Some(code) = report.refused_reason.get() {
            let reason = ReasonCode::from_u8(code).unwrap_or(ReasonCode::UnspecifiedError);
            Refusals::add(&mut refusals, topic, reason, report.refused.get());
        }
    }
    let outcome = Outcome {
        version,
        qos,
        prefix: &args.prefix,
        published: summary.published,
        delivered: summary.count.delivered,
        refusals,
    };
    verdict(&outcome).map_or(Ok(()), Err)
}
