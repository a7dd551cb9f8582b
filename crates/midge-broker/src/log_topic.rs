//! The kinds of log line mosquitto has (`log_type`), and `log_dest topic`: log lines as
//! messages, as mosquitto publishes them: on `$SYS/broker/log/E` (errors), `W` (warnings),
//! `N` (notices: clients coming and going) and `I` (the rest), with `log_type subscribe` and
//! `unsubscribe` their lines on `$SYS/broker/log/M/subscribe` and `M/unsubscribe`, at QoS 2,
//! not retained, expiring after 20 seconds; never the debug lines. The logger hands lines
//! over a bounded channel (a full one drops them: logging never waits for subscribers), and
//! [`run`] publishes them.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, Property, QoS};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::config::LogType;
use crate::session::Message;

/// Lines waiting to be published, at most.
pub const BACKLOG: usize = 1024;

/// How long a log message lives (mosquitto's 20 seconds).
const EXPIRY_SECS: u32 = 20;

/// The tracing target of `log_type subscribe`'s lines.
pub const SUBSCRIBE_TARGET: &str = "midge::subscribe";
/// The tracing target of `log_type unsubscribe`'s lines.
pub const UNSUBSCRIBE_TARGET: &str = "midge::unsubscribe";

/// The kind of a line of `target` at tracing's `level`: [`LogType::Information`] stands for
/// notices too until [`sorted`] has read the line.
pub fn kind_of(target: &str, level: tracing::Level) -> LogType {
    match (target, level) {
        (SUBSCRIBE_TARGET, _) => LogType::Subscribe,
        (UNSUBSCRIBE_TARGET, _) => LogType::Unsubscribe,
        (_, tracing::Level::ERROR) => LogType::Error,
        (_, tracing::Level::WARN) => LogType::Warning,
        (_, tracing::Level::INFO) => LogType::Information,
        _ => LogType::Debug,
    }
}

/// The kind of `line`, of [`kind_of`]'s `kind`: mosquitto's notices are its lines about
/// clients coming and going.
pub fn sorted(kind: LogType, line: &str) -> LogType {
    match kind {
        LogType::Information if about_clients(line) => LogType::Notice,
        kind => kind,
    }
}

/// Whether a line is about a client coming or going.
fn about_clients(line: &str) -> bool {
    // The line may begin with its time, in any log_timestamp_format, then ": ". Read for
    // every line written: no allocation.
    let starts =
        |s: &str| ["New connection from", "New client connected", "Client "].iter().any(|p| s.starts_with(p));
    starts(line) || line.match_indices(": ").any(|(i, _)| starts(&line[i + 2..]))
}

/// The topic of a line of `kind` (none: it is not published).
pub fn topic(kind: LogType) -> Option<&'static str> {
    match kind {
        LogType::Error => Some("$SYS/broker/log/E"),
        LogType::Warning => Some("$SYS/broker/log/W"),
        LogType::Notice => Some("$SYS/broker/log/N"),
        LogType::Information => Some("$SYS/broker/log/I"),
        LogType::Subscribe => Some("$SYS/broker/log/M/subscribe"),
        LogType::Unsubscribe => Some("$SYS/broker/log/M/unsubscribe"),
        LogType::Websockets | LogType::Debug => None,
    }
}

/// Publishes the lines that come in, until the logger goes.
pub async fn run(broker: Arc<Broker>, mut lines: mpsc::Receiver<(&'static str, String)>) {
    while let Some((topic, line)) = lines.recv().await {
        let mut properties = Properties::default();
        properties.push(Property::MessageExpiryInterval(EXPIRY_SECS));
        let message = Arc::new(Message::from_publish(
            ByteString::from_static(topic),
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
        use tracing::Level;
        let topic_of = |target, level, line| topic(sorted(kind_of(target, level), line));
        assert_eq!(topic_of("midge", Level::ERROR, "1700000000: Error: x"), Some("$SYS/broker/log/E"));
        assert_eq!(topic_of("midge", Level::WARN, "warn: y"), Some("$SYS/broker/log/W"));
        let connection = "1700000000: New connection from 1.2.3.4:5 on port 1883.";
        assert_eq!(topic_of("midge", Level::INFO, connection), Some("$SYS/broker/log/N"));
        assert_eq!(topic_of("midge", Level::INFO, "Client c1 disconnected."), Some("$SYS/broker/log/N"));
        let stamped = "2026-12-06 11:40:00: Client c1 disconnected.";
        assert_eq!(topic_of("midge", Level::INFO, stamped), Some("$SYS/broker/log/N"));
        let listener = "1700000000: Opening ipv4 listen socket on port 1883.";
        assert_eq!(topic_of("midge", Level::INFO, listener), Some("$SYS/broker/log/I"));
        assert_eq!(topic_of(SUBSCRIBE_TARGET, Level::INFO, "c 1 a/#"), Some("$SYS/broker/log/M/subscribe"));
        assert_eq!(topic_of(UNSUBSCRIBE_TARGET, Level::INFO, "c a/#"), Some("$SYS/broker/log/M/unsubscribe"));
        assert_eq!(kind_of("midge", Level::DEBUG), LogType::Debug);
        assert_eq!(topic(LogType::Debug), None);
    }
}
