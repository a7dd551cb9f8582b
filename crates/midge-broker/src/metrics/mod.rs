//! What the broker counts, and the two ways it is read: the `$SYS/broker/...` topics
//! mosquitto publishes ([`sys`]) and the Prometheus text format ([`exposition`]).
//!
//! Counting must not slow the hot path, where one connection reads and writes hundreds of
//! thousands of packets a second: per-message counts go to the counting thread's own shard
//! ([`shards`]), added up in a [`Tally`] on the stack over a round of packets first, and are
//! summed only when someone reads them (every `sys_interval` seconds, or a scrape). Events at
//! the rate of connections (accepted sockets, CONNECTs, expired sessions) are plain atomics.
//! Gauges (connected clients, subscriptions, retained messages) are not counted at all: they
//! are read from the registry and the router when asked for.
pub mod exposition;
mod shards;
pub mod sys;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use midge_codec::Packet;

use shards::Shards;

/// The upper bounds of the delivery latency histogram's buckets, in seconds (the last bucket,
/// +Inf, is implicit): from 50 µs, a message passed on between two busy sockets, to 10 s, a
/// subscriber that was held up.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The same bounds in nanoseconds, for the hot path.
const LATENCY_BOUNDS_NS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// The index of each counter in a shard.
pub(crate) struct Counter;

impl Counter {
    const PACKETS_RECEIVED: usize = 0;
    const PACKETS_SENT: usize = 1;
    const BYTES_RECEIVED: usize = 2;
    const BYTES_SENT: usize = 3;
    /// Three: one per QoS.
    const PUBLISH_RECEIVED: usize = 4;
    const PUBLISH_SENT: usize = 7;
    const PAYLOAD_RECEIVED: usize = 10;
    const PAYLOAD_SENT: usize = 11;
    /// One per [`DropReason`].
    const DROPPED: usize = 12;
    const LATENCY_SUM_NS: usize = 14;
    /// One per bucket, and the +Inf one.
    const LATENCY: usize = 15;
    pub(crate) const COUNT: usize = Self::LATENCY + LATENCY_BUCKETS.len() + 1;
}

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber is connected but a slow consumer: its queue stayed full past the time
    /// it may hold its publishers up (`max_queued_messages`).
    SlowConsumer,
    /// The subscriber's session is offline and its queue is full.
    OfflineQueueFull,
}

impl DropReason {
    /// Every reason, in the order of their counters.
    pub const ALL: [DropReason; 2] = [DropReason::SlowConsumer, DropReason::OfflineQueueFull];

    /// Its label in Prometheus.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::OfflineQueueFull => "offline_queue_full",
        }
    }
}

/// Packets one way over a round of a connection's work, counted on the stack and added to
/// the shared counters once ([`Metrics::received`], [`Metrics::sent`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    packets: u64,
    bytes: u64,
    publish: [u64; 3],
    payload: u64,
}

impl Tally {
    /// Counts a packet.
    #[inline]
    pub fn packet(&mut self, p: &Packet) {
        self.packets += 1;
        if let Packet::Publish(p) = p {
            self.publish[p.qos as usize] += 1;
            self.payload += p.payload.len() as u64;
        }
    }

    /// Counts bytes on the wire.
    #[inline]
    pub fn bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    fn is_empty(&self) -> bool {
        self.packets == 0 && self.bytes == 0
    }
}

/// The counts of one listener (by its index in `Config::effective_listeners`).
#[derive(Debug, Default)]
struct ListenerCounts {
    /// Network connections open now.
    open: AtomicI64,
    /// Connections accepted since the start.
    accepted: AtomicU64,
}

/// Everything counted, summed ([`Metrics::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// MQTT packets received, of every type (mosquitto's messages/received).
    pub packets_received: u64,
    /// MQTT packets sent, of every type.
    pub packets_sent: u64,
    /// Bytes received, every packet whole (mosquitto's bytes/received).
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// PUBLISH packets received, by QoS.
    pub publish_received: [u64; 3],
    /// PUBLISH packets sent, by QoS.
    pub publish_sent: [u64; 3],
    /// Payload bytes of the PUBLISH packets received.
    pub payload_received: u64,
    /// Payload bytes of the PUBLISH packets sent.
    pub payload_sent: u64,
    /// Messages not delivered to a subscriber, by [`DropReason::ALL`].
    pub dropped: [u64; 2],
    /// Deliveries by latency bucket ([`LATENCY_BUCKETS`], then +Inf), not cumulative.
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of the latencies, in nanoseconds.
    pub latency_sum_ns: u64,
    /// Network connections accepted (mosquitto's sockets).
    pub sockets: u64,
    /// CONNECT packets received (mosquitto's connections).
    pub connects: u64,
    /// Sessions that expired.
    pub expired: u64,
    /// Per listener: connections open now, and accepted since the start.
    pub listeners: Vec<(i64, u64)>,
}

impl Snapshot {
    /// PUBLISH packets received, every QoS.
    pub fn publish_received_total(&self) -> u64 {
        self.publish_received.iter().sum()
    }

    /// PUBLISH packets sent, every QoS.
    pub fn publish_sent_total(&self) -> u64 {
        self.publish_sent.iter().sum()
    }

    /// Messages dropped, every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// The broker's counters.
#[derive(Debug)]
pub struct Metrics {
    shards: Shards,
    listeners: Box<[ListenerCounts]>,
    sockets: AtomicU64,
    connects: AtomicU64,
    expired: AtomicU64,
    /// Bridges connected to their remote broker now (a gauge the bridges keep).
    bridges: AtomicU64,
    /// When the broker started: uptime.
    pub started: Instant,
    /// The same, as wall-clock time (Prometheus's process_start_time_seconds).
    pub started_at: SystemTime,
}

impl Metrics {
    /// Counters for a broker with `listeners` listeners.
    pub fn new(listeners: usize) -> Metrics {
        Metrics {
            shards: Shards::default(),
            listeners: (0..listeners).map(|_| ListenerCounts::default()).collect(),
            sockets: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            bridges: AtomicU64::new(0),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// Adds what a connection received over a round.
    #[inline]
    pub fn received(&self, t: &Tally) {
        if !t.is_empty() {
            self.shards.with(|s| {
                s.add(Counter::PACKETS_RECEIVED, t.packets);
                s.add(Counter::BYTES_RECEIVED, t.bytes);
                if t.payload > 0 || t.publish != [0; 3] {
                    for (q, n) in t.publish.iter().enumerate().filter(|(_, n)| **n > 0) {
                        s.add(Counter::PUBLISH_RECEIVED + q, *n);
                    }
                    s.add(Counter::PAYLOAD_RECEIVED, t.payload);
                }
            });
        }
    }

    /// Adds what a connection sent over a round.
    #[inline]
    pub fn sent(&self, t: &Tally) {
        if !t.is_empty() {
            self.shards.with(|s| {
                s.add(Counter::PACKETS_SENT, t.packets);
                s.add(Counter::BYTES_SENT, t.bytes);
                if t.payload > 0 || t.publish != [0; 3] {
                    for (q, n) in t.publish.iter().enumerate().filter(|(_, n)| **n > 0) {
                        s.add(Counter::PUBLISH_SENT + q, *n);
                    }
                    s.add(Counter::PAYLOAD_SENT, t.payload);
                }
            });
        }
    }

    /// Adds bytes read from a connection.
    #[inline]
    pub fn bytes_received(&self, n: usize) {
        self.received(&Tally { bytes: n as u64, ..Tally::default() });
    }

    /// Counts messages not delivered.
    pub fn dropped(&self, reason: DropReason, n: usize) {
        if n > 0 {
            let i = Counter::DROPPED + reason as usize;
            self.shards.with(|s| s.add(i, n as u64));
        }
    }

    /// Records the latency of deliveries, from when the broker received each message (the
    /// instants given) to `now`, when its subscriber's connection took it to send.
    pub fn deliveries(&self, received_at: impl Iterator<Item = Instant>, now: Instant) {
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0u64;
        let mut any = false;
        for t in received_at {
            let ns = u64::try_from(now.saturating_duration_since(t).as_nanos()).unwrap_or(u64::MAX);
            sum = sum.saturating_add(ns);
            buckets[LATENCY_BOUNDS_NS.partition_point(|&b| b < ns)] += 1;
            any = true;
        }
        if any {
            self.shards.with(|s| {
                s.add(Counter::LATENCY_SUM_NS, sum);
                for (i, n) in buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
                    s.add(Counter::LATENCY + i, *n);
                }
            });
        }
    }

    /// A network connection was accepted on `listener`.
    pub fn socket_opened(&self, listener: usize) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.listeners.get(listener) {
            l.open.fetch_add(1, Ordering::Relaxed);
            l.accepted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A network connection on `listener` closed.
    pub fn socket_closed(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            l.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A CONNECT was received (accepted or not).
    pub fn connect_received(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// A bridge connected to its remote broker (`true`) or lost it.
    pub fn bridge_connected(&self, up: bool) {
        if up {
            self.bridges.fetch_add(1, Ordering::Relaxed);
        } else {
            self.bridges.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Bridges connected to their remote broker now.
    pub fn bridges_connected(&self) -> u64 {
        self.bridges.load(Ordering::Relaxed)
    }

    /// Sessions expired.
    pub fn sessions_expired(&self, n: usize) {
        self.expired.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Everything counted so far, summed.
    pub fn snapshot(&self) -> Snapshot {
        let c = self.shards.sum();
        let three = |i: usize| [c[i], c[i + 1], c[i + 2]];
        Snapshot {
            packets_received: c[Counter::PACKETS_RECEIVED],
            packets_sent: c[Counter::PACKETS_SENT],
            bytes_received: c[Counter::BYTES_RECEIVED],
            bytes_sent: c[Counter::BYTES_SENT],
            publish_received: three(Counter::PUBLISH_RECEIVED),
            publish_sent: three(Counter::PUBLISH_SENT),
            payload_received: c[Counter::PAYLOAD_RECEIVED],
            payload_sent: c[Counter::PAYLOAD_SENT],
            dropped: [c[Counter::DROPPED], c[Counter::DROPPED + 1]],
            latency: std::array::from_fn(|i| c[Counter::LATENCY + i]),
            latency_sum_ns: c[Counter::LATENCY_SUM_NS],
            sockets: self.sockets.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            listeners: self
                .listeners
                .iter()
                .map(|l| (l.open.load(Ordering::Relaxed), l.accepted.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// The process's resident memory now and at its peak, in bytes (Linux: /proc/self/status's
/// VmRSS and VmHWM). What `$SYS/broker/heap/...` and Prometheus report: midge does not wrap
/// its allocator to count heap bytes (that would cost every allocation), and resident memory
/// is what an operator watches.
pub fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tallies_add_up_by_qos_and_payload() {
        let m = Metrics::new(1);
        let mut t = Tally::default();
        let mut p = midge_codec::Publish::new("a/b", &b"12345"[..]);
        t.packet(&Packet::Publish(p.clone()));
        p.qos = midge_codec::QoS::ExactlyOnce;
        t.packet(&Packet::Publish(p));
        t.packet(&Packet::PingReq);
        t.bytes(30);
        m.received(&t);
        m.sent(&t);
        let s = m.snapshot();
        assert_eq!((s.packets_received, s.bytes_received, s.payload_received), (3, 30, 10));
        assert_eq!(s.publish_received, [1, 0, 1]);
        assert_eq!(s.publish_sent, [1, 0, 1]);
    }

    #[test]
    fn latencies_land_in_their_buckets() {
        let m = Metrics::new(0);
        let now = Instant::now();
        let ago = |us: u64| now - Duration::from_micros(us);
        m.deliveries([ago(10), ago(50), ago(51), ago(2_000), ago(60_000_000)].into_iter(), now);
        let s = m.snapshot();
        // <= 50 µs: two (a bound is inclusive, as Prometheus's `le`); <= 100 µs: one; <= 2.5 ms:
        // one; over 10 s: one.
        assert_eq!(s.latency[0], 2);
        assert_eq!(s.latency[1], 1);
        assert_eq!(s.latency[5], 1);
        assert_eq!(s.latency[LATENCY_BUCKETS.len()], 1);
        assert_eq!(s.latency.iter().sum::<u64>(), 5);
    }

    #[test]
    fn listeners_count_open_and_accepted_connections() {
        let m = Metrics::new(2);
        m.socket_opened(1);
        m.socket_opened(1);
        m.socket_closed(1);
        m.socket_opened(7); // no such listener: counted as a socket only
        let s = m.snapshot();
        assert_eq!(s.listeners, vec![(0, 0), (1, 2)]);
        assert_eq!(s.sockets, 3);
    }
}
