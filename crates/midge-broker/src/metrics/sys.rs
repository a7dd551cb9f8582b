//! The `$SYS/broker/...` topics, as mosquitto 2.0 publishes them: the same names, values in
//! the same formats, retained, at QoS 2, every `sys_interval` seconds, each only when its value
//! changed (the uptime every time), so `mosquitto_sub -t '$SYS/#' -v` shows the same tree.
//!
//! [`SysTree::update`] is pure: the counts and the time go in, the messages to publish come
//! out ([`SysInput`] is read from the broker by [`SysInput::read`]); [`publish`] retains and
//! routes them like any message, so subscribers see them subject to the ACL. The load
//! averages are mosquitto's: the rate over the last interval, per minute, folded into an
//! exponentially weighted moving average over 1, 5 and 15 minutes, published with two
//! decimals when it moved by 0.01 or more.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, QoS};

use super::Snapshot;
use crate::broker::Broker;
use crate::session::Message;

/// What the tree is made of at one update.
#[derive(Debug, Clone, Default)]
pub struct SysInput {
    /// The counters.
    pub counts: Snapshot,
    /// Sessions with a connection.
    pub connected: usize,
    /// Sessions without one (persistent sessions of clients that are away).
    pub disconnected: usize,
    /// Subscriptions, shared ones included.
    pub subscriptions: usize,
    /// Shared subscriptions.
    pub shared_subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Their payload bytes.
    pub retained_bytes: usize,
    /// Resident memory now and at its peak (see [`super::resident_memory`]).
    pub memory: Option<(u64, u64)>,
    /// Bridges connected to their remote broker.
    pub bridges_connected: u64,
}

impl SysInput {
    /// Reads the counters and the gauges from the broker.
    pub fn read(broker: &Broker) -> SysInput {
        let (connected, disconnected) = broker.registry.counts();
        SysInput {
            counts: broker.metrics.snapshot(),
            connected,
            disconnected,
            subscriptions: broker.router.subscription_count(),
            shared_subscriptions: broker.router.shared_subscription_count(),
            retained: broker.router.retained_count(),
            retained_bytes: broker.router.retained_bytes(),
            memory: super::resident_memory(),
            bridges_connected: broker.metrics.bridges_connected(),
        }
    }
}

/// The load averages, in mosquitto's order: each is published for 1, 5 and 15 minutes.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];

/// The windows of the load averages, in seconds, with their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// The values the counters of [`LOADS`] have in a snapshot.
fn load_counts(s: &Snapshot) -> [u64; 9] {
    [
        s.packets_received,
        s.packets_sent,
        s.dropped_total(),
        s.publish_received_total(),
        s.publish_sent_total(),
        s.bytes_received,
        s.bytes_sent,
        s.sockets,
        s.connects,
    ]
}

/// The state of the `$SYS` tree between updates: the values last published, the load
/// averages, and the counters at the last update.
#[derive(Debug, Default)]
pub struct SysTree {
    /// The last update, and the counters then ([`load_counts`]).
    last: Option<(Instant, [u64; 9])>,
    /// Per load and window.
    loads: [[f64; 3]; 9],
    /// The value last published on each topic whose value is published when it changes.
    published: HashMap<&'static str, String>,
    /// The most sessions seen at an update.
    clients_max: usize,
}

impl SysTree {
    /// The message published once, at start.
    pub fn version() -> (String, String) {
        ("$SYS/broker/version".to_owned(), format!("midge version {}", env!("CARGO_PKG_VERSION")))
    }

    /// The messages of one update at `now`, `started` being when the broker started, in the
    /// order mosquitto publishes them: `(topic, payload)`.
    pub fn update(&mut self, input: &SysInput, started: Instant, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let uptime = now.saturating_duration_since(started).as_secs();
        out.push(("$SYS/broker/uptime".to_owned(), format!("{uptime} seconds")));

        let total = input.connected + input.disconnected;
        self.changed(&mut out, "$SYS/broker/clients/total", total.to_string());
        if total > self.clients_max {
            self.clients_max = total;
            out.push(("$SYS/broker/clients/maximum".to_owned(), total.to_string()));
        }
        // mosquitto publishes the older names (inactive, active) beside the newer ones.
        let disconnected = input.disconnected.to_string();
        self.changed(&mut out, "$SYS/broker/clients/inactive", disconnected.clone());
        self.changed(&mut out, "$SYS/broker/clients/disconnected", disconnected);
        let connected = input.connected.to_string();
        self.changed(&mut out, "$SYS/broker/clients/active", connected.clone());
        self.changed(&mut out, "$SYS/broker/clients/connected", connected);
        self.changed(&mut out, "$SYS/broker/clients/expired", input.counts.expired.to_string());

        self.loads(&mut out, &input.counts, now);

        let c = &input.counts;
        let stored = input.retained.to_string();
        self.changed(&mut out, "$SYS/broker/messages/stored", stored.clone());
        self.changed(&mut out, "$SYS/broker/store/messages/count", stored);
        self.changed(&mut out, "$SYS/broker/store/messages/bytes", input.retained_bytes.to_string());
        self.changed(&mut out, "$SYS/broker/subscriptions/count", input.subscriptions.to_string());
        self.changed(
            &mut out,
            "$SYS/broker/shared_subscriptions/count",
            input.shared_subscriptions.to_string(),
        );
        self.changed(&mut out, "$SYS/broker/retained messages/count", input.retained.to_string());
        if let Some((current, maximum)) = input.memory {
            self.changed(&mut out, "$SYS/broker/heap/current", current.to_string());
            self.changed(&mut out, "$SYS/broker/heap/maximum", maximum.to_string());
        }
        self.changed(&mut out, "$SYS/broker/messages/received", c.packets_received.to_string());
        self.changed(&mut out, "$SYS/broker/messages/sent", c.packets_sent.to_string());
        self.changed(&mut out, "$SYS/broker/publish/messages/dropped", c.dropped_total().to_string());
        self.changed(
            &mut out,
            "$SYS/broker/publish/messages/received",
            c.publish_received_total().to_string(),
        );
        self.changed(&mut out, "$SYS/broker/publish/messages/sent", c.publish_sent_total().to_string());
        self.changed(&mut out, "$SYS/broker/bytes/received", c.bytes_received.to_string());
        self.changed(&mut out, "$SYS/broker/bytes/sent", c.bytes_sent.to_string());
        self.changed(&mut out, "$SYS/broker/publish/bytes/received", c.payload_received.to_string());
        self.changed(&mut out, "$SYS/broker/publish/bytes/sent", c.payload_sent.to_string());
        out
    }

    /// Publishes `value` on `topic` unless it is what was published there last.
    fn changed(&mut self, out: &mut Vec<(String, String)>, topic: &'static str, value: String) {
        if self.published.get(topic) != Some(&value) {
            out.push((topic.to_owned(), value.clone()));
            self.published.insert(topic, value);
        }
    }

    /// mosquitto's load averages: the first update publishes them all (0.00); each later one
    /// folds the rate per minute since the previous update into each average, and publishes
    /// those that moved by 0.01 or more.
    fn loads(&mut self, out: &mut Vec<(String, String)>, counts: &Snapshot, now: Instant) {
        let current = load_counts(counts);
        let Some((then, before)) = self.last.replace((now, current)) else {
            for (_, window) in WINDOWS {
                for name in LOADS {
                    out.push((format!("$SYS/broker/load/{name}/{window}"), "0.00".to_owned()));
                }
            }
            return;
        };
        let elapsed = now.saturating_duration_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        for (w, (window_secs, window)) in WINDOWS.iter().enumerate() {
            let exponent = (-elapsed / window_secs).exp();
            for (i, name) in LOADS.iter().enumerate() {
                let rate = current[i].wrapping_sub(before[i]) as f64 * 60.0 / elapsed;
                let average = &mut self.loads[i][w];
                let next = rate + exponent * (*average - rate);
                if (next - *average).abs() >= 0.01 {
                    out.push((format!("$SYS/broker/load/{name}/{window}"), format!("{next:.2}")));
                }
                *average = next;
            }
        }
    }
}

/// Retains and routes `(topic, payload)` messages as the broker's own: QoS 2 and retained, as
/// mosquitto's `$SYS` messages, without an expiry. Delivered like any message, so the ACL
/// decides who reads them. Not written to the store: they are made again at start.
pub fn publish(broker: &Broker, messages: Vec<(String, String)>, now: Instant) {
    for (topic, payload) in messages {
        let message = Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from(payload),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties::default(),
            publisher: ByteString::new(),
            expires_at: None,
            received_at: now,
            held: crate::memory_limit::Held::new(0),
        });
        broker.router.retain(&message);
        broker.router.route(&message, broker.queue_hook());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn topics(out: &[(String, String)]) -> Vec<&str> {
        out.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn the_first_update_publishes_the_whole_tree_then_only_changes() {
        let mut tree = SysTree::default();
        let start = Instant::now();
        let input = SysInput { memory: Some((1000, 2000)), ..Default::default() };
        let first = tree.update(&input, start, start);
        assert_eq!(first[0], ("$SYS/broker/uptime".to_owned(), "0 seconds".to_owned()));
        let names = topics(&first);
        for t in [
            "$SYS/broker/clients/total",
            "$SYS/broker/clients/connected",
            "$SYS/broker/clients/disconnected",
            "$SYS/broker/clients/expired",
            "$SYS/broker/load/messages/received/1min",
            "$SYS/broker/load/sockets/15min",
            "$SYS/broker/load/connections/5min",
            "$SYS/broker/messages/stored",
            "$SYS/broker/store/messages/bytes",
            "$SYS/broker/retained messages/count",
            "$SYS/broker/heap/maximum",
            "$SYS/broker/publish/bytes/sent",
        ] {
            assert!(names.contains(&t), "{t} missing from {names:?}");
        }
        // No client yet: no maximum, as mosquitto.
        assert!(!names.contains(&"$SYS/broker/clients/maximum"));
        assert!(first.iter().filter(|(t, _)| t.contains("/load/")).all(|(_, v)| v == "0.00"));

        let mut input = input.clone();
        input.connected = 2;
        input.counts.packets_received = 120;
        let second = tree.update(&input, start, start + Duration::from_secs(10));
        let names = topics(&second);
        assert_eq!(second[0].1, "10 seconds");
        assert!(names.contains(&"$SYS/broker/clients/maximum"));
        assert!(names.contains(&"$SYS/broker/messages/received"));
        assert!(!names.contains(&"$SYS/broker/bytes/sent"), "unchanged values are not published again");
        // 120 packets in 10 s: 720 a minute; the 1-minute average moves a sixth of the way
        // (1 - e^(-10/60)) from 0.
        let load = second.iter().find(|(t, _)| t == "$SYS/broker/load/messages/received/1min").unwrap();
        let expected = 720.0 * (1.0 - (-10.0f64 / 60.0).exp());
        assert_eq!(load.1, format!("{expected:.2}"));
        assert!(!names.contains(&"$SYS/broker/load/bytes/sent/1min"), "a load that did not move");
    }

    #[test]
    fn version_names_midge() {
        let (topic, payload) = SysTree::version();
        assert_eq!(topic, "$SYS/broker/version");
        assert!(payload.starts_with("midge version "));
    }
}
