//! The counters in Prometheus's text exposition format (version 0.0.4), named by its
//! conventions: a `midge_` prefix, base units (`_bytes`, `_seconds`), `_total` on counters,
//! labels for what varies (QoS, drop reason, listener). Served at `/metrics` by the `http`
//! listener (`server/http.rs`).
use std::fmt::Write;

use super::sys::SysInput;
use super::{DropReason, LATENCY_BUCKETS};
use crate::broker::Broker;
use crate::config::{Listener, ListenerProtocol};

/// The Content-Type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `broker` now.
pub fn render(broker: &Broker) -> String {
    let input = SysInput::read(broker);
    let listeners = broker.config.effective_listeners();
    render_input(&input, &listeners, broker.metrics.started.elapsed().as_secs_f64(), start_time(broker))
}

fn start_time(broker: &Broker) -> f64 {
    broker.metrics.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A metric's header: its help text and type.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric without labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value, escaped as the format says (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// How a listener is named in labels: its port, and its address when it has one.
fn listener_label(l: &Listener) -> String {
    match &l.bind {
        Some(b) => format!("{b}:{}", l.port),
        None => l.port.to_string(),
    }
}

fn protocol_label(l: &Listener) -> &'static str {
    match (l.protocol, l.tls.enabled()) {
        (ListenerProtocol::Mqtt, false) => "mqtt",
        (ListenerProtocol::Mqtt, true) => "mqtts",
        (ListenerProtocol::WebSockets, false) => "ws",
        (ListenerProtocol::WebSockets, true) => "wss",
        (ListenerProtocol::Http, false) => "http",
        (ListenerProtocol::Http, true) => "https",
    }
}

/// Renders the metrics of `input`; `listeners` name the per-listener counts.
pub fn render_input(input: &SysInput, listeners: &[Listener], uptime: f64, start_time: f64) -> String {
    let c = &input.counts;
    let mut out = String::with_capacity(8 * 1024);
    header(&mut out, "midge_build_info", "gauge", "The midge version running (always 1).");
    let _ = writeln!(out, "midge_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    single(
        &mut out,
        "midge_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        format!("{uptime:.3}"),
    );
    single(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        format!("{start_time:.3}"),
    );
    if let Some((rss, _)) = input.memory {
        single(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    }

    header(&mut out, "midge_connections", "gauge", "Network connections open, per listener.");
    for (l, (open, _)) in listeners.iter().zip(&c.listeners).filter(|(l, _)| l.is_mqtt()) {
        let _ = writeln!(
            out,
            "midge_connections{{listener=\"{}\",protocol=\"{}\"}} {open}",
            escape(&listener_label(l)),
            protocol_label(l)
        );
    }
    header(
        &mut out,
        "midge_connections_accepted_total",
        "counter",
        "Network connections accepted, per listener.",
    );
    for (l, (_, accepted)) in listeners.iter().zip(&c.listeners).filter(|(l, _)| l.is_mqtt()) {
        let _ = writeln!(
            out,
            "midge_connections_accepted_total{{listener=\"{}\",protocol=\"{}\"}} {accepted}",
            escape(&listener_label(l)),
            protocol_label(l)
        );
    }
    single(
        &mut out,
        "midge_connects_total",
        "counter",
        "CONNECT packets received, accepted or not.",
        c.connects,
    );
    single(
        &mut out,
        "midge_clients_connected",
        "gauge",
        "Sessions with a connected client.",
        input.connected,
    );
    single(
        &mut out,
        "midge_clients_disconnected",
        "gauge",
        "Persistent sessions whose client is away.",
        input.disconnected,
    );
    single(&mut out, "midge_sessions_expired_total", "counter", "Sessions that expired.", c.expired);
    single(
        &mut out,
        "midge_bridges_connected",
        "gauge",
        "Bridges connected to their remote broker.",
        input.bridges_connected,
    );

    header(
        &mut out,
        "midge_messages_received_total",
        "counter",
        "PUBLISH packets received from clients, by QoS.",
    );
    for (q, n) in c.publish_received.iter().enumerate() {
        let _ = writeln!(out, "midge_messages_received_total{{qos=\"{q}\"}} {n}");
    }
    header(&mut out, "midge_messages_sent_total", "counter", "PUBLISH packets sent to clients, by QoS.");
    for (q, n) in c.publish_sent.iter().enumerate() {
        let _ = writeln!(out, "midge_messages_sent_total{{qos=\"{q}\"}} {n}");
    }
    header(
        &mut out,
        "midge_messages_dropped_total",
        "counter",
        "Messages not delivered to a subscriber, by reason.",
    );
    for (reason, n) in DropReason::ALL.iter().zip(&c.dropped) {
        let _ = writeln!(out, "midge_messages_dropped_total{{reason=\"{}\"}} {n}", reason.label());
    }
    single(
        &mut out,
        "midge_packets_received_total",
        "counter",
        "MQTT packets received, of every type.",
        c.packets_received,
    );
    single(
        &mut out,
        "midge_packets_sent_total",
        "counter",
        "MQTT packets sent, of every type.",
        c.packets_sent,
    );
    single(
        &mut out,
        "midge_bytes_received_total",
        "counter",
        "Bytes of MQTT packets received.",
        c.bytes_received,
    );
    single(&mut out, "midge_bytes_sent_total", "counter", "Bytes of MQTT packets sent.", c.bytes_sent);
    single(
        &mut out,
        "midge_payload_bytes_received_total",
        "counter",
        "Payload bytes of the PUBLISH packets received.",
        c.payload_received,
    );
    single(
        &mut out,
        "midge_payload_bytes_sent_total",
        "counter",
        "Payload bytes of the PUBLISH packets sent.",
        c.payload_sent,
    );
    single(
        &mut out,
        "midge_subscriptions",
        "gauge",
        "Subscriptions, shared ones included.",
        input.subscriptions,
    );
    single(
        &mut out,
        "midge_shared_subscriptions",
        "gauge",
        "Shared subscriptions.",
        input.shared_subscriptions,
    );
    single(&mut out, "midge_retained_messages", "gauge", "Retained messages.", input.retained);
    single(
        &mut out,
        "midge_retained_bytes",
        "gauge",
        "Payload bytes of the retained messages.",
        input.retained_bytes,
    );

    header(
        &mut out,
        "midge_delivery_latency_seconds",
        "histogram",
        "Time from receiving a message to its subscriber's connection taking it to send.",
    );
    let mut cumulative = 0u64;
    for (bound, n) in LATENCY_BUCKETS.iter().zip(&c.latency) {
        cumulative += n;
        let _ = writeln!(out, "midge_delivery_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += c.latency[LATENCY_BUCKETS.len()];
    let _ = writeln!(out, "midge_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "midge_delivery_latency_seconds_sum {}", c.latency_sum_ns as f64 / 1e9);
    let _ = writeln!(out, "midge_delivery_latency_seconds_count {cumulative}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_names_a_declared_metric() {
        let mut input = SysInput::default();
        input.counts.listeners = vec![(2, 5), (0, 0)];
        input.counts.publish_received = [3, 2, 1];
        input.counts.latency[0] = 4;
        input.counts.latency[LATENCY_BUCKETS.len()] = 1;
        let mut http = Listener::new(9234, Some("127.0.0.1"));
        http.protocol = ListenerProtocol::Http;
        let text = render_input(&input, &[Listener::new(1883, None), http], 1.5, 1e9);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base =
                    ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(declared.contains(name) || declared.contains(base), "{line}");
            }
        }
        assert!(text.contains("midge_connections{listener=\"1883\",protocol=\"mqtt\"} 2\n"));
        assert!(!text.contains("9234"), "the metrics listener is not an MQTT listener");
        assert!(text.contains("midge_messages_received_total{qos=\"1\"} 2\n"));
        assert!(text.contains("midge_delivery_latency_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("midge_delivery_latency_seconds_count 5\n"));
    }
}
