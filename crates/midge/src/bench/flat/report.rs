//! The summary of a flat-out run: rates, the exact loss, and what the generator cost.
use nix::sys::resource::{getrusage, UsageWho};

use super::super::stats::Sample;
use super::tally::Count;

/// CPU time of this process (all its threads), in seconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn now() -> Cpu {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| Cpu { user: secs(u.user_time()), system: secs(u.system_time()) })
            .unwrap_or_default()
    }

    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu { user: self.user - before.user, system: self.system - before.system }
    }

    fn total(&self) -> f64 {
        self.user + self.system
    }
}

pub struct Summary {
    pub label: String,
    /// From the start of the load to the stop.
    pub seconds: f64,
    /// From the start of the load to the last message received.
    pub delivering_seconds: f64,
    /// From the stop to the end of the drain.
    pub drain_seconds: f64,
    /// PUBLISHes completely written by the publishers.
    pub published: u64,
    /// PUBLISHes read by the subscribers (duplicates and invalid ones included).
    pub read: u64,
    pub count: Count,
    /// Distinct messages received before the stop.
    pub delivered_at_stop: u64,
    /// QoS 1 / 2: acknowledged, and refused (5.0 reason codes of 0x80 or more).
    pub acked: u64,
    pub refused: u64,
    /// QoS 1 / 2: messages in flight per publisher at most.
    pub window: Option<u16>,
    /// The generator's CPU time from the start of the load to the end of the drain.
    pub cpu: Cpu,
    pub errors: Vec<String>,
}

fn round(v: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (v * m).round() / m
}

impl Summary {
    pub fn published_per_sec(&self) -> f64 {
        self.published as f64 / self.seconds.max(1e-9)
    }

    /// Messages delivered per second of load, or from the start to the last one received
    /// when deliveries went on after the publishers stopped.
    pub fn delivered_per_sec(&self) -> f64 {
        self.count.delivered as f64 / self.seconds.max(self.delivering_seconds).max(1e-9)
    }

    /// Messages delivered per second while the publishers published.
    pub fn delivered_while_publishing_per_sec(&self) -> f64 {
        self.delivered_at_stop as f64 / self.seconds.max(1e-9)
    }

    fn lost_percent(&self) -> f64 {
        100.0 * self.count.lost as f64 / self.count.expected.max(1) as f64
    }

    /// Generator CPU seconds per million messages it wrote or read.
    fn cpu_per_million(&self) -> f64 {
        self.cpu.total() * 1e6 / (self.published + self.read).max(1) as f64
    }

    /// The share of one core the generator used.
    fn core_share(&self) -> f64 {
        self.cpu.total() / (self.seconds + self.drain_seconds).max(1e-9)
    }

    pub fn text(&self) -> String {
        let c = &self.count;
        let mut out = format!(
            "{}\npublished  {} msg in {:.2} s ({:.0} msg/s)\ndelivered  {} of {} msg, the last at {:.2} s ({:.0} msg/s; {:.0} msg/s while publishing, {} after)\nlost       {} ({:.3}%), drained for {:.2} s\n",
            self.label,
            self.published,
            self.seconds,
            self.published_per_sec(),
            c.delivered,
            c.expected,
            self.delivering_seconds,
            self.delivered_per_sec(),
            self.delivered_while_publishing_per_sec(),
            c.delivered.saturating_sub(self.delivered_at_stop),
            c.lost,
            self.lost_percent(),
            self.drain_seconds,
        );
        if c.duplicates + c.out_of_order + c.invalid > 0 {
            out += &format!(
                "anomalies  {} duplicates, {} out of order, {} invalid\n",
                c.duplicates, c.out_of_order, c.invalid
            );
        }
        if self.window.is_some() {
            out += &format!("acked      {} ({} refused)\n", self.acked, self.refused);
        }
        out += &format!(
            "generator  {:.2} s CPU (user {:.2}, system {:.2}; {:.0}% of one core): {:.3} s per million messages written or read\n",
            self.cpu.total(),
            self.cpu.user,
            self.cpu.system,
            100.0 * self.core_share(),
            self.cpu_per_million()
        );
        for e in &self.errors {
            out += &format!("error      {e}\n");
        }
        out
    }

    /// One JSON object: the figures, the run's parameters and the per-second series.
    pub fn json(&self, parameters: serde_json::Value, samples: &[Sample]) -> String {
        let c = &self.count;
        let series: Vec<_> = samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "t": round(s.t, 3),
                    "published_per_sec": round(s.sent_per_sec, 1),
                    "delivered_per_sec": round(s.received_per_sec, 1),
                })
            })
            .collect();
        serde_json::json!({
            "scenario": self.label,
            "mode": "flat-out",
            "parameters": parameters,
            "seconds": round(self.seconds, 3),
            "delivering_seconds": round(self.delivering_seconds, 3),
            "drain_seconds": round(self.drain_seconds, 3),
            "published": self.published,
            "expected": c.expected,
            "delivered": c.delivered,
            "delivered_at_stop": self.delivered_at_stop,
            "lost": c.lost,
            "lost_percent": round(self.lost_percent(), 3),
            "duplicates": c.duplicates,
            "out_of_order": c.out_of_order,
            "invalid": c.invalid,
            "published_per_sec": round(self.published_per_sec(), 1),
            "delivered_per_sec": round(self.delivered_per_sec(), 1),
            "delivered_while_publishing_per_sec": round(self.delivered_while_publishing_per_sec(), 1),
            "in_flight": self.window,
            "acked": self.acked,
            "refused": self.refused,
            "generator": {
                "threads": 1,
                "cpu_seconds": round(self.cpu.total(), 3),
                "user_seconds": round(self.cpu.user, 3),
                "system_seconds": round(self.cpu.system, 3),
                "core_share": round(self.core_share(), 3),
                "messages_handled": self.published + self.read,
                "cpu_seconds_per_million": round(self.cpu_per_million(), 4),
            },
            "errors": self.errors,
            "series": series,
        })
        .to_string()
    }
}
