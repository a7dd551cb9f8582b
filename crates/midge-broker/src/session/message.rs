//! Application messages as the broker routes them: one [`Message`] per PUBLISH received,
//! shared by every subscriber through an `Arc`, its payload never copied.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, Property, PropertyId, QoS};

/// A message published to the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic name (aliases already resolved).
    pub topic: ByteString,
    /// The payload, shared with the buffer it was read from.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with RETAIN.
    pub retain: bool,
    /// The 5.0 properties forwarded unchanged to subscribers.
    pub properties: Properties,
    /// The client id of the publisher, for No Local.
    pub publisher: ByteString,
    /// When the message expires (5.0 Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
    /// When the broker received it.
    pub received_at: Instant,
    /// Its bytes, counted while it lives (`memory_limit`).
    pub held: crate::memory_limit::Held,
}

impl Message {
    /// Builds a message from a received PUBLISH's parts, keeping only the properties that are
    /// forwarded: Payload Format Indicator, Content Type, Response Topic, Correlation Data and
    /// User Properties, in order ([MQTT-3.3.2-4], [MQTT-3.3.2-18] and sections 3.3.2.3.5 to 3.3.2.3.7). Message Expiry is kept as an
    /// instant and re-written with the time left when sent [MQTT-3.3.2-6].
    pub fn from_publish(
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: Properties,
        publisher: ByteString,
        now: Instant,
    ) -> Message {
        let expires_at = properties
            .message_expiry_interval()
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        if !properties.is_empty() {
            // Topic Alias and Subscription Identifier are per connection, Will Delay Interval
            // belongs to the will, and Message Expiry is re-written when sent.
            properties.retain(|p| {
                matches!(
                    p.id(),
                    PropertyId::PayloadFormatIndicator
                        | PropertyId::ContentType
                        | PropertyId::ResponseTopic
                        | PropertyId::CorrelationData
                        | PropertyId::UserProperty
                )
            });
        }
        let (topic, payload, properties) = own_copy(topic, payload, properties);
        // The properties kept count too: user properties may hold more than the payload.
        let held = crate::memory_limit::Held::new(topic.len() + payload.len() + properties.memory_cost());
        Message { topic, payload, qos, retain, properties, publisher, expires_at, received_at: now, held }
    }

    /// What a session's queue counts of it (`max_queued_bytes`): the payload, as mosquitto
    /// counts it, and what its properties hold, which mosquitto leaves out (a message of one
    /// byte with megabytes of user properties would otherwise queue for nothing).
    pub fn queued_bytes(&self) -> usize {
        self.payload.len() + self.properties.memory_cost()
    }

    /// True once the message's expiry has passed: it is no longer delivered.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The Message Expiry Interval to send now: the time left, in whole seconds.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            // Round up so a message with time left never says 0.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// The properties for a PUBLISH carrying this message to one subscriber.
    pub fn outgoing_properties(&self, sub_ids: &[u32], now: Instant) -> Properties {
        let mut props = self.properties.clone();
        if let Some(secs) = self.remaining_expiry(now) {
            props.push(Property::MessageExpiryInterval(secs));
        }
        for &id in sub_ids {
            props.push(Property::SubscriptionIdentifier(id));
        }
        props
    }
}

/// Payloads up to this size are copied out of the read buffer they arrived in: a
/// connection reads up to 64 KiB at a time, so a smaller message may share its buffer with
/// others, which a slice of it would keep alive (2,000 retained messages of 4,100 bytes, each
/// read in a buffer of its own, held 172 MiB with copies made up to 4 KiB only). A larger
/// one was read into a buffer reserved for its packet (and at most one read beyond it).
const COPY_UP_TO: usize = 64 * 1024;

/// The topic, payload and properties in allocations of their own when the message is small:
/// a slice of the connection's read buffer would keep the whole buffer (up to 64 KiB) alive
/// for as long as the message is queued or retained. One allocation holds topic and payload;
/// large messages stay where they are (their buffer was reserved for them), so they are
/// never copied.
fn own_copy(topic: ByteString, payload: Bytes, properties: Properties) -> (ByteString, Bytes, Properties) {
    if payload.len() > COPY_UP_TO {
        return (topic, payload, properties);
    }
    let properties = properties.detached();
    let mut buf = bytes::BytesMut::with_capacity(topic.len() + payload.len());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(&payload);
    let buf = buf.freeze();
    let payload = buf.slice(topic.len()..);
    // The bytes of a valid string: this cannot fail.
    let topic = ByteString::try_from(buf.slice(..topic.len())).unwrap_or(topic);
    (topic, payload, properties)
}

/// One message on its way to one session: the shared message and what this subscriber's
/// subscriptions made of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, shared with every other subscriber.
    pub message: Arc<Message>,
    /// The QoS it is delivered with: the lower of the published and the granted QoS.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (5.0).
    pub sub_ids: Vec<u32>,
    /// The shared subscription (`$share/GROUP/filter`) it came through, if any: when this
    /// session goes away before acknowledging it, another member of the group gets it.
    pub share: Option<Arc<str>>,
    /// Its record in the store, when it was queued for a persistent session.
    pub entry: Option<StoreEntry>,
}

impl Delivery {
    /// What a session's queue counts for it (`max_queued_bytes`): the message's
    /// ([`Message::queued_bytes`]), and the subscription identifiers it carries.
    pub fn queued_bytes(&self) -> usize {
        self.message.queued_bytes() + self.sub_ids.len() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
impl Delivery {
    /// A delivery of `message` at its own QoS, not retained, from no shared subscription,
    /// with no record (tests).
    pub(crate) fn plain(message: Message) -> Delivery {
        let qos = message.qos;
        Delivery {
            message: Arc::new(message),
            qos,
            retain: false,
            sub_ids: Vec::new(),
            share: None,
            entry: None,
        }
    }
}

/// A delivery's record in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreEntry {
    /// The record's id.
    pub id: u64,
    /// The commit it belongs to (0: none): the copies of one incoming QoS 2 message are kept
    /// after a restart only if its commit record made it to disk, so that a message half
    /// written when the broker died is not delivered to some subscribers and then, resent
    /// by its publisher, again to the same ones.
    pub commit: u64,
}
