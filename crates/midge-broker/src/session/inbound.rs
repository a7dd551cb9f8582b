//! Messages from the client: PUBLISH at each QoS, topic aliases, the QoS 2 release, and the
//! acknowledgements held while the subscribers a message went to are congested.
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{Disconnect, Packet, PubAck, Publish, PublishAck, QoS, ReasonCode};

use super::close::CloseReason;
use super::effect::{Effect, PendingAck};
use super::message::Message;
use super::{Held, Session, HOLD_LIMIT};
use crate::router::too_deep;

/// Topics no client publishes to, as mosquitto: `$SYS`, the broker's own (but a bridge's
/// connection state, `$SYS/broker/connection/+/state`), and `$share/...`, which names
/// shared subscriptions, not topics. Refused as the ACL refuses.
pub(crate) fn reserved_topic(topic: &str) -> bool {
    if let Some(rest) = topic.strip_prefix("$SYS") {
        let levels: Vec<&str> = rest.split('/').collect();
        return !matches!(levels.as_slice(), ["", "broker", "connection", _, "state"]);
    }
    topic.starts_with("$share")
}

impl Session {
    pub(super) fn on_publish(&mut self, p: Publish, now: Instant) {
        if p.properties.subscription_identifiers().next().is_some() {
            // [MQTT-3.3.4-6] a PUBLISH from a Client MUST NOT contain a Subscription Identifier.
            return self.close(CloseReason::protocol(
                ReasonCode::ProtocolError,
                "PUBLISH with a subscription identifier",
            ));
        }
        let Some(topic) = self.resolve_topic(&p) else {
            return;
        };
        let topic = self.mounted(topic);
        if too_deep(&topic) {
            // More levels than the broker walks (mosquitto's TOPIC_HIERARCHY_LIMIT): the topic
            // is not accepted and the connection closes, 5.0 with 0x90 Topic Name invalid
            // ("not malformed, but not accepted", section 3.14.2.1), where mosquitto says 0x81
            // Malformed Packet, which a well-formed packet is not (section 4.13).
            return self.close(CloseReason::protocol(
                ReasonCode::TopicNameInvalid,
                "topic with more than 200 levels",
            ));
        }
        if p.qos > self.limits.max_qos {
            // [MQTT-3.2.2-11]: above the Maximum QoS the broker announced (0x9B).
            return self.close(CloseReason::protocol(
                ReasonCode::QoSNotSupported,
                format!("QoS {} above max_qos", p.qos),
            ));
        }
        if p.retain && !self.limits.retain_available {
            // [MQTT-3.2.2-14]: RETAIN when Retain Available is 0 (0x9A).
            return self.close(CloseReason::protocol(
                ReasonCode::RetainNotSupported,
                "retained messages are not available",
            ));
        }
        let qos = p.qos;
        let packet_id = p.packet_id;
        if reserved_topic(&topic) || !self.may_publish(&topic) {
            // Denied by the ACL: 3.1.1 has no way to say so, so the message is acknowledged
            // and dropped; 5.0 gets 0x87 in the acknowledgement.
            tracing::info!("Denied PUBLISH from {} to '{}' (ACL).", self.client_id, topic);
            return self.drop_publish(qos, packet_id, ReasonCode::NotAuthorized);
        }
        if p.payload.len() > self.limits.max_payload as usize {
            // message_size_limit: as mosquitto, dropped. mosquitto tells a 5.0 client 0x95
            // Packet too large, which an acknowledgement may not carry (section 3.4.2.1):
            // midge says 0x97 Quota exceeded, an administrative limit.
            tracing::debug!(
                "Dropped too large PUBLISH from {} (q{}, '{}', ... ({} bytes)).",
                self.client_id,
                qos.as_u8(),
                topic,
                p.payload.len()
            );
            return self.drop_publish(qos, packet_id, ReasonCode::QuotaExceeded);
        }
        if qos == QoS::ExactlyOnce {
            if self.state.incoming_qos2.contains(&packet_id) {
                // A resend before PUBREL: acknowledged again, not delivered twice (4.3.3).
                // Once: as mosquitto, a second resend on one connection is a Protocol Error
                // (5.0 allows none but after a reconnect [MQTT-4.4.0-1]).
                if !self.extra().resent_qos2.insert(packet_id) {
                    return self.close(CloseReason::protocol(
                        ReasonCode::ProtocolError,
                        format!("QoS 2 PUBLISH {packet_id} sent a third time"),
                    ));
                }
                return self.send_ack(Packet::PubRec(PublishAck::new(packet_id)));
            }
            if self.version.is_v5() && self.state.incoming_qos2.len() >= self.limits.receive_maximum {
                // [MQTT-3.3.4-9] more unacknowledged QoS 2 PUBLISH than our Receive Maximum
                // (5.0; a 3.1.1 client was told none: it is bounded by its packet identifiers).
                return self.close(CloseReason::protocol(
                    ReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                ));
            }
            // [MQTT-4.3.3-9]: the identifier stays until PUBREL.
            self.state.incoming_qos2.insert(packet_id);
        }
        let message =
            Message::from_publish(topic, p.payload, qos, p.retain, p.properties, self.client_id.clone(), now);
        let ack = (qos != QoS::AtMostOnce).then_some(PendingAck { packet_id, qos });
        self.busy().effects.push_back(Effect::Publish { message: Arc::new(message), ack });
        if qos == QoS::ExactlyOnce {
            // After the message's effect: its identifier's record commits its copies.
            self.busy().effects.push_back(Effect::Qos2Received(packet_id));
        }
    }

    /// A PUBLISH the broker does not take: acknowledged with `code` (5.0; 3.1.1 has no way
    /// to say so, and gets a plain acknowledgement), and dropped.
    fn drop_publish(&mut self, qos: QoS, packet_id: u16, code: ReasonCode) {
        let code = if self.version.is_v5() { code } else { ReasonCode::Success };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_ack(Packet::PubAck(PubAck::with_reason(packet_id, code))),
            QoS::ExactlyOnce => {
                if !self.version.is_v5() {
                    // 3.1.1 completes the flow: PUBREL will follow.
                    self.state.incoming_qos2.insert(packet_id);
                }
                self.send_ack(Packet::PubRec(PublishAck::with_reason(packet_id, code)));
            }
        }
    }

    /// The broker routed a message that waits for its acknowledgement: `matched` when some
    /// subscription matched it, `hold` while a subscriber it went to is congested (the
    /// acknowledgement then waits for [`Session::release_held`], and the publisher, whose
    /// window fills, slows down: flow control, section 4.9).
    pub fn acknowledge(&mut self, ack: PendingAck, matched: bool, hold: bool, now: Instant) {
        // 5.0: tell a QoS 1 publisher when no subscription matched (0x10). As mosquitto, not
        // a QoS 2 one: its PUBREC says the message is received, whoever takes it.
        let code = if self.version.is_v5() && !matched && ack.qos == QoS::AtLeastOnce {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let packet = match ack.qos {
            // [MQTT-4.3.2-2]: PUBACK for a QoS 1 PUBLISH.
            QoS::AtLeastOnce => Packet::PubAck(PubAck::with_reason(ack.packet_id, code)),
            // [MQTT-4.3.3-9]: PUBREC for a QoS 2 PUBLISH.
            QoS::ExactlyOnce | QoS::AtMostOnce => {
                Packet::PubRec(PublishAck::with_reason(ack.packet_id, code))
            }
        };
        if !hold && !self.has_held_acks() {
            return self.busy().out.push_back(packet);
        }
        // A 5.0 client may not have more unacknowledged than our Receive Maximum
        // [MQTT-3.3.4-9]; a 3.1.1 client is bounded by its packet identifiers.
        let limit = if self.version.is_v5() { self.limits.receive_maximum } else { usize::from(u16::MAX) };
        if self.busy().held.len() >= limit {
            return self.close(CloseReason::protocol(
                ReasonCode::ReceiveMaximumExceeded,
                "receive maximum exceeded",
            ));
        }
        self.busy().held.push_back(Held { ack: packet, since: now });
    }

    /// An acknowledgement that is not held for routing (ACL refusals, duplicates): it still
    /// waits behind those held, keeping their order ([MQTT-4.6.0-2], [MQTT-4.6.0-3]).
    fn send_ack(&mut self, packet: Packet) {
        let busy = self.busy();
        match busy.held.back() {
            Some(last) => {
                let since = last.since;
                busy.held.push_back(Held { ack: packet, since });
            }
            None => busy.out.push_back(packet),
        }
    }

    /// True while acknowledgements are held for congested subscribers.
    pub fn has_held_acks(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| !b.held.is_empty())
    }

    /// Sends the held acknowledgements, in order: all of them when the subscribers they
    /// waited for have `room`, else those held longer than [`HOLD_LIMIT`] (a subscriber
    /// congested that long is a slow consumer and holds no one up any more).
    pub fn release_held(&mut self, now: Instant, room: bool) {
        let Some(busy) = self.busy.as_mut() else { return };
        while let Some(front) = busy.held.front() {
            if !room && now < front.since + HOLD_LIMIT {
                return;
            }
            if let Some(h) = busy.held.pop_front() {
                busy.out.push_back(h.ack);
            }
        }
    }

    /// The topic of a PUBLISH, resolving a 5.0 Topic Alias (section 3.3.2.3.4).
    fn resolve_topic(&mut self, p: &Publish) -> Option<ByteString> {
        let Some(alias) = p.properties.topic_alias() else {
            return Some(p.topic.clone());
        };
        if alias == 0 || alias > self.limits.topic_alias_maximum {
            // [MQTT-3.3.2-9]/[MQTT-3.3.2-10]: an alias above our Topic Alias Maximum (or 0).
            self.close(CloseReason::protocol(
                ReasonCode::TopicAliasInvalid,
                format!("topic alias {alias} above the maximum of {}", self.limits.topic_alias_maximum),
            ));
            return None;
        }
        let aliases = &mut self.extra().aliases;
        if p.topic.is_empty() {
            match aliases.incoming.get(&alias) {
                Some(t) => Some(t.clone()),
                None => {
                    // Section 3.3.2.3.4: an unknown alias with an empty topic is a Protocol Error.
                    self.close(CloseReason::protocol(
                        ReasonCode::ProtocolError,
                        format!("unknown topic alias {alias}"),
                    ));
                    None
                }
            }
        } else {
            // A copy, not a slice of the read buffer: an alias lives as long as the connection.
            let topic = ByteString::from(&*p.topic);
            aliases.incoming.insert(alias, topic.clone());
            Some(topic)
        }
    }

    /// PUBREL: release the identifier (the message went onwards when the PUBLISH arrived)
    /// and answer PUBCOMP. An unknown identifier gets a plain PUBCOMP too, as mosquitto
    /// sends it: most often a PUBREL sent again after a reconnect, whose first copy released
    /// the message (0x92 is the spec's suggestion, not a requirement: section 3.7.2.1).
    pub(super) fn on_pubrel(&mut self, packet_id: u16) {
        let known = self.state.incoming_qos2.remove(&packet_id);
        if let Some(e) = self.extra.as_mut() {
            e.resent_qos2.remove(&packet_id);
        }
        if known {
            self.busy().effects.push_back(Effect::Qos2Released(packet_id));
        }
        self.busy().out.push_back(Packet::PubComp(PublishAck::new(packet_id)));
    }

    pub(super) fn on_disconnect(&mut self, d: Disconnect) {
        if let Some(expiry) = d.properties.session_expiry_interval() {
            if self.state.expiry_interval == 0 && expiry != 0 {
                // [MQTT-3.14.2-2]: a session that expired at disconnect cannot be extended.
                return self.close(CloseReason::protocol(
                    ReasonCode::ProtocolError,
                    "session expiry set in DISCONNECT after 0 in CONNECT",
                ));
            }
            self.state.expiry_interval = expiry;
        }
        let with_will = d.reason_code == ReasonCode::DisconnectWithWill;
        if !with_will {
            // [MQTT-3.14.4-3] (3.1.1: [MQTT-3.14.4-3]): a normal DISCONNECT discards the will.
            if let Some(e) = self.extra.as_mut() {
                e.will = None;
            }
        }
        self.close(CloseReason::Disconnect { with_will });
    }
}
