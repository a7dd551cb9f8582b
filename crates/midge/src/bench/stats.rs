//! Counters, latency histograms and the time series of a run.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::verdict::Refusals;

/// A fresh latency histogram: 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One subscriber's latencies since the last sample.
pub type Recorder = Arc<Mutex<Histogram<u64>>>;

/// What every task of a run reports into.
pub struct Stats {
    pub start: Instant,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    /// PUBLISHes the broker refused (5.0 reason codes of 0x80 or more).
    pub refusals: Mutex<Option<Refusals>>,
    recorders: Mutex<Vec<Recorder>>,
}

/// One second of the run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: f64,
    pub sent_per_sec: f64,
    pub received_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refusals: Mutex::new(None),
            recorders: Mutex::new(Vec::new()),
        })
    }

    /// Nanoseconds since the run started: what publishers put in payloads.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The broker's answer to a QoS 1 / 2 PUBLISH to `topic`: a refusal is counted.
    pub fn acknowledged(&self, topic: &str, answer: Result<midge_codec::ReasonCode, midge_client::Error>) {
        match answer {
            Ok(code) if code.is_error() => Refusals::add(&mut self.refusals.lock(), topic, code, 1),
            Ok(_) => {}
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A recorder for one subscriber.
    pub fn recorder(&self) -> Recorder {
        let r = Arc::new(Mutex::new(histogram()));
        self.recorders.lock().push(r.clone());
        r
    }

    /// Moves every recorder's latencies into `total` and returns this interval's.
    pub fn drain(&self, total: &mut Histogram<u64>) -> Histogram<u64> {
        let mut interval = histogram();
        for r in self.recorders.lock().iter() {
            let mut h = r.lock();
            let _ = interval.add(&*h);
            h.reset();
        }
        let _ = total.add(&interval);
        interval
    }
}

/// Samples once per second until `until`, printing progress unless quiet.
pub async fn sample(
    stats: &Stats,
    until: Instant,
    quiet: bool,
    label: &str,
    total: &mut Histogram<u64>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_recv) = (0u64, 0u64);
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64().max(1e-9);
        last = now;
        let sent = stats.sent.load(Ordering::Relaxed);
        let recv = stats.received.load(Ordering::Relaxed);
        let h = stats.drain(total);
        let s = Sample {
            t: stats.start.elapsed().as_secs_f64(),
            sent_per_sec: (sent - last_sent) as f64 / dt,
            received_per_sec: (recv - last_recv) as f64 / dt,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
        };
        (last_sent, last_recv) = (sent, recv);
        if !quiet {
            eprintln!(
                "{:>5.0}s {label}  sent {:>9.0}/s  recv {:>9.0}/s  p50 {:>6} µs  p99 {:>6} µs",
                s.t, s.sent_per_sec, s.received_per_sec, s.p50_us, s.p99_us
            );
        }
        samples.push(s);
        if now >= until {
            return samples;
        }
    }
}
