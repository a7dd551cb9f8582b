//! The message scenarios: pairs, fan-in, fan-out and shared.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use midge_client::{connect, Client, Event, Events, Options};
use midge_codec::{ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions};

use super::stats::{histogram, sample, Recorder, Sample, Stats};
use super::verdict::{check_suback, verdict, Outcome};
use super::{BenchArgs, BenchError};

/// Who publishes where, who subscribes to what, and how many copies each message makes.
pub(super) struct Plan {
    pub publish_topics: Vec<String>,
    pub filters: Vec<String>,
    pub copies: u64,
}

pub(super) fn plan(args: &BenchArgs, run: &str) -> Result<Plan, BenchError> {
    let base = format!("{}/{run}", args.prefix);
    let n = args.clients.max(1);
    let topics = |k: usize| (0..k).map(|i| format!("{base}/p/{i}")).collect::<Vec<_>>();
    Ok(match args.scenario.as_str() {
        "pairs" => Plan { publish_topics: topics(n), filters: topics(n), copies: 1 },
        "fan-in" => Plan { publish_topics: topics(n), filters: vec![format!("{base}/p/+")], copies: 1 },
        "fan-out" => Plan {
            publish_topics: vec![format!("{base}/t")],
            filters: vec![format!("{base}/t"); n],
            copies: n as u64,
        },
        "shared" => Plan {
            publish_topics: topics(n),
            filters: vec![format!("$share/bench/{base}/p/+"); args.members.max(1)],
            copies: 1,
        },
        other => return Err(BenchError::UnknownScenario(other.to_owned())),
    })
}

fn options(
    args: &BenchArgs,
    tls: &Option<super::Tls>,
    version: ProtocolVersion,
    id: String,
    index: usize,
) -> Options {
    let mut o = args.client_options(tls, version, id, index, 60);
    o.event_capacity = 4096;
    o.max_inflight = u16::try_from(args.inflight.max(1)).unwrap_or(u16::MAX);
    o
}

/// The payload: the send time (ns since the run started), the publisher's number, its
/// sequence number, then filler up to the size.
fn payload(stats: &Stats, publisher: u32, seq: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(stats.now_ns());
    b.put_u32(publisher);
    b.put_u32(seq as u32);
    b.resize(size, 0x2a);
    b.freeze()
}

async fn subscriber(mut events: Events, stats: Arc<Stats>, rec: Recorder, delivered: Arc<Vec<AtomicU64>>) {
    while let Some(ev) = events.recv().await {
        let Event::Message(m) = ev else { break };
        if m.payload.len() >= 12 {
            let sent = u64::from_be_bytes(m.payload[..8].try_into().unwrap_or_default());
            let latency_us = (stats.now_ns().saturating_sub(sent) / 1000).max(1);
            let _ = rec.lock().record(latency_us);
            let publisher = u32::from_be_bytes(m.payload[8..12].try_into().unwrap_or_default()) as usize;
            if let Some(d) = delivered.get(publisher) {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one publisher needs to know of the run.
struct PublisherCtx {
    index: u32,
    topic: String,
    args: BenchArgs,
    stats: Arc<Stats>,
    until: Instant,
    /// Messages from each publisher that reached a subscriber (all copies).
    delivered: Arc<Vec<AtomicU64>>,
    /// Copies each message makes (subscribers it reaches).
    copies: u64,
}

async fn publisher(client: Client, ctx: PublisherCtx) {
    let PublisherCtx { index, topic, args, stats, until, delivered, copies } = ctx;
    let qos = args.qos();
    let mut seq = 0u64;
    let make = |seq: u64| {
        let mut p = Publish::new(topic.clone(), payload(&stats, index, seq, args.size));
        p.qos = qos;
        p
    };
    let window_size = args.inflight.max(1) as u64;
    let mut window: VecDeque<midge_client::AckFuture> = VecDeque::new();
    if args.rate == 0 {
        while Instant::now() < until {
            if qos == QoS::AtMostOnce {
                // Flat out with a window end to end: at most `inflight` messages sent and not
                // yet received, so the run measures what the broker sustains, not how much it
                // can drop.
                let mut spins = 0u32;
                while seq.saturating_sub(delivered[index as usize].load(Ordering::Relaxed) / copies)
                    >= window_size
                {
                    if Instant::now() >= until {
                        break;
                    }
                    spins += 1;
                    if spins < 64 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
            }
            let Ok(ack) = client.start_publish(make(seq)).await else { break };
            seq += 1;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if qos != QoS::AtMostOnce {
                window.push_back(ack);
                if window.len() >= args.inflight.max(1) {
                    if let Some(a) = window.pop_front() {
                        stats.acknowledged(&topic, a.await);
                    }
                }
            }
        }
    } else {
        // Open loop at a fixed rate: the timer ticks every millisecond, each tick sends what
        // is due so far, so rates above 1,000 msg/s stay exact.
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while Instant::now() < until {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
            while seq < due {
                let Ok(ack) = client.start_publish(make(seq)).await else { return };
                seq += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if qos != QoS::AtMostOnce {
                    window.push_back(ack);
                }
            }
            while window.front().is_some() && window.len() > args.inflight.max(1) * 4 {
                if let Some(a) = window.pop_front() {
                    stats.acknowledged(&topic, a.await);
                }
            }
        }
    }
    for a in window {
        stats.acknowledged(&topic, a.await);
    }
}

/// The summary of a run.
pub struct Summary {
    pub label: String,
    pub seconds: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub latency: hdrhistogram::Histogram<u64>,
}

impl Summary {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    pub fn text(&self) -> String {
        let q = |p: f64| self.latency.value_at_quantile(p);
        format!(
            "{}\nsent      {} msg ({:.0} msg/s)\nreceived  {} msg ({:.0} msg/s)\nlost      {} of {} ({:.3}%)\nlatency   p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs\n",
            self.label,
            self.sent,
            self.sent as f64 / self.seconds,
            self.received,
            self.received as f64 / self.seconds,
            self.lost(),
            self.expected,
            100.0 * self.lost() as f64 / self.expected.max(1) as f64,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.latency.max()
        )
    }

    /// One JSON object: the summary, the run's parameters and the per-second series.
    pub fn json(&self, parameters: serde_json::Value, samples: &[Sample]) -> String {
        let q = |p: f64| self.latency.value_at_quantile(p);
        let series: Vec<_> = samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "t": s.t,
                    "sent_per_sec": s.sent_per_sec,
                    "received_per_sec": s.received_per_sec,
                    "p50_us": s.p50_us,
                    "p99_us": s.p99_us,
                })
            })
            .collect();
        serde_json::json!({
            "scenario": self.label,
            "parameters": parameters,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "sent": self.sent,
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost(),
            "sent_per_sec": (self.sent as f64 / self.seconds * 10.0).round() / 10.0,
            "received_per_sec": (self.received as f64 / self.seconds * 10.0).round() / 10.0,
            "latency_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999), "max": self.latency.max()},
            "series": series,
        })
        .to_string()
    }
}

pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let version = args.mqtt_version()?;
    if args.size < 16 {
        return Err(BenchError::PayloadTooSmall);
    }
    let run = format!("{:x}", std::process::id() ^ (Instant::now().elapsed().subsec_nanos()));
    let plan = plan(args, &run)?;
    let tls = args.tls()?;
    let stats = Stats::new();
    let delivered: Arc<Vec<AtomicU64>> =
        Arc::new((0..plan.publish_topics.len()).map(|_| AtomicU64::new(0)).collect());
    let mut subscribers = Vec::new();
    let sub_args = args.subscriber_side();
    for (i, filter) in plan.filters.iter().enumerate() {
        let o = options(&sub_args, &tls, version, format!("bench-sub-{run}-{i}"), i);
        let (client, events, _) = connect(o).await.map_err(|source| BenchError::Connect {
            role: "subscriber",
            index: i,
            source,
        })?;
        let sub = Subscribe::new(0, filter.clone(), SubscriptionOptions::qos(args.qos()));
        let ack = client
            .subscribe(sub)
            .await
            .map_err(|source| BenchError::Subscribe { filter: filter.clone(), source })?;
        check_suback(filter, &ack, version)?;
        tokio::spawn(subscriber(events, stats.clone(), stats.recorder(), delivered.clone()));
        subscribers.push(client);
    }
    tokio::time::sleep(args.settle()).await;
    let mut publishers = Vec::new();
    for (i, _) in plan.publish_topics.iter().enumerate() {
        let o = options(args, &tls, version, format!("bench-pub-{run}-{i}"), plan.filters.len() + i);
        let (client, _events, _) =
            connect(o).await.map_err(|source| BenchError::Connect { role: "publisher", index: i, source })?;
        publishers.push(client);
    }
    let label = format!(
        "{}: {}, {}, QoS {}, {} B, {}, MQTT {}",
        args.scenario,
        count(publishers.len(), "publisher"),
        count(subscribers.len(), "subscriber"),
        args.qos,
        args.size,
        if args.rate == 0 {
            format!("flat out, window {}", args.inflight)
        } else {
            format!("{} msg/s each", args.rate)
        },
        version
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration);
    let tasks: Vec<_> = publishers
        .iter()
        .zip(plan.publish_topics.iter())
        .enumerate()
        .map(|(i, (c, t))| {
            let ctx = PublisherCtx {
                index: i as u32,
                topic: t.clone(),
                args: args.clone(),
                stats: stats.clone(),
                until,
                delivered: delivered.clone(),
                copies: plan.copies,
            };
            tokio::spawn(publisher(c.clone(), ctx))
        })
        .collect();
    let mut total = histogram();
    let samples = sample(&stats, until, args.quiet || args.json, &args.scenario, &mut total).await;
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = stats.sent.load(Ordering::Relaxed);
    let expected = sent * plan.copies;
    // Let what is in flight arrive: until all expected are in or nothing moved for a second.
    let mut last = stats.received.load(Ordering::Relaxed);
    let mut still = Instant::now();
    while last < expected && still.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stats.received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    stats.drain(&mut total);
    let summary = Summary { label: label.clone(), seconds, sent, expected, received: last, latency: total };
    if args.json {
        let parameters = serde_json::json!({
            "scenario": args.scenario,
            "publishers": publishers.len(),
            "subscribers": subscribers.len(),
            "qos": args.qos,
            "size": args.size,
            "rate": args.rate,
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
    for c in publishers.iter().chain(subscribers.iter()) {
        let _ = c.disconnect().await;
    }
    let outcome = Outcome {
        version,
        qos: args.qos(),
        prefix: &args.prefix,
        published: sent,
        delivered: last,
        refusals: stats.refusals.lock().take(),
    };
    verdict(&outcome).map_or(Ok(()), Err)
}

/// "1 publisher", "4 publishers".
pub(super) fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
