//! `log_dest topic`: log lines as messages, as mosquitto publishes them: on
//! `$SYS/broker/log/E` (errors), `W` (warnings), `N` (notices: clients coming and going)
//! and `I` (the rest), with `log_type subscribe` and `unsubscribe` their lines on
//! `$SYS/broker/log/M/subscribe` and `M/unsubscribe`, at QoS 2, not retained, expiring after 20 seconds; never the debug
//! lines. The logger hands lines over a bounded channel (a full one drops them: logging never
//! waits for subscribers), and [`run`] publishes them.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, Property, QoS};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::session::Message;

/// Lines waiting to be published, at most.
pub const BACKLOG: usize = 1024;

/// How long a log message lives (mosquitto's 20 seconds).
const EXPIRY_SECS: u32 = 20;

/// The tracing target of `log_type subscribe`'s lines.
pub const SUBSCRIBE_TARGET: &str = "midge::subscribe";
/// The tracing target of `log_type unsubscribe`'s lines.
pub const UNSUBSCRIBE_TARGET: &str = "midge::unsubscribe";

/// The level of a line, as the logger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An error.
    Error,
    /// A warning.
    Warning,
    /// Anything else but debug lines.
    Information,
    /// A subscription (`log_type subscribe`).
    Subscribe,
    /// An unsubscription (`log_type unsubscribe`).
    Unsubscribe,
}

impl Level {
    /// The level of a line of `target` at tracing's `level` (none: a debug line, which is
    /// not published).
    pub fn of(target: &str, level: tracing::Level) -> Option<Level> {
        match (target, level) {
            (SUBSCRIBE_TARGET, _) => Some(Level::Subscribe),
            (UNSUBSCRIBE_TARGET, _) => Some(Level::Unsubscribe),
            (_, tracing::Level::ERROR) => Some(Level::Error),
            (_, tracing::Level::WARN) => Some(Level::Warning),
            (_, tracing::Level::INFO) => Some(Level::Information),
            _ => None,
        }
    }
}

/// The topic of a line: mosquitto's notices are its lines about clients.
pub fn topic(level: Level, line: &str) -> &'static str {
    // The line may begin with its time, in any log_timestamp_format, then ": ".
    let about_clients = ["New connection from", "New client connected", "Client "]
        .iter()
        .any(|p| line.starts_with(p) || line.contains(&format!(": {p}")));
    match level {
        Level::Error => "$SYS/broker/log/E",
        Level::Warning => "$SYS/broker/log/W",
        Level::Information if about_clients => "$SYS/broker/log/N",
        Level::Information => "$SYS/broker/log/I",
        Level::Subscribe => "$SYS/broker/log/M/subscribe",
        Level::Unsubscribe => "$SYS/broker/log/M/unsubscribe",
    }
}

/// Publishes the lines that come in, until the logger goes.
pub async fn run(broker: Arc<Broker>, mut lines: mpsc::Receiver<(Level, String)>) {
    while let Some((level, line)) = lines.recv().await {
        let mut properties = Properties::default();
        properties.push(Property::MessageExpiryInterval(EXPIRY_SECS));
        let message = Arc::new(Message::from_publish(
            ByteString::from_static(topic(level, &line)),
            Bytes::from(line),
            QoS::ExactlyOnce,
            false,
            properties,
            ByteString::new(),
            Instant::now(),
        ));
        broker.router.route(&message, broker.queue_hook());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_mosquittos_topics() {
        assert_eq!(topic(Level::Error, "1700000000: Error: x"), "$SYS/broker/log/E");
        assert_eq!(topic(Level::Warning, "warn: y"), "$SYS/broker/log/W");
        assert_eq!(
            topic(Level::Information, "1700000000: New connection from 1.2.3.4:5 on port 1883."),
            "$SYS/broker/log/N"
        );
        assert_eq!(topic(Level::Information, "Client c1 disconnected."), "$SYS/broker/log/N");
        assert_eq!(
            topic(Level::Information, "2026-12-06 11:40:00: Client c1 disconnected."),
            "$SYS/broker/log/N"
        );
        assert_eq!(
            topic(Level::Information, "1700000000: Opening ipv4 listen socket on port 1883."),
            "$SYS/broker/log/I"
        );
    }
}
