//! The bridge's protocol with the remote broker, without I/O: the CONNECT it sends, what the
//! CONNACK grants, what it sends first on each connection, and how packets cross between the
//! remote and the bridge's session on this broker (its [`crate::broker::Link`]).
//!
//! Packet identifiers cross unchanged. The local session numbers the messages it sends the
//! remote, and the bridge takes the identifiers of its own packets (notification, SUBSCRIBE,
//! UNSUBSCRIBE) from the same counter ([`crate::session::Session::reserve_packet_id`]), so
//! they never collide with a message in flight and are numbered as mosquitto numbers them;
//! the remote's messages keep the remote's identifiers on their way into the local session.
//! A QoS 2 flow interrupted by a lost connection is resumed by the session, under its
//! identifier, on the next connection (PUBLISH with DUP, or PUBREL).
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{
    ConnAck, Connect, Packet, Properties, Property, PropertyId, ProtocolVersion, Publish, QoS, ReasonCode,
    RetainHandling, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

use super::topics;
use crate::config::bridge::Bridge;

/// What the remote granted in its CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// A session was resumed on the remote.
    pub session_present: bool,
    /// The highest QoS the remote takes (5.0 Maximum QoS).
    pub max_qos: QoS,
    /// The remote keeps retained messages.
    pub retain_available: bool,
    /// Its Receive Maximum (5.0).
    pub receive_maximum: Option<u16>,
    /// Its Maximum Packet Size (5.0).
    pub max_packet: Option<u32>,
    /// Its Server Keep Alive (5.0), which the bridge uses instead of its own
    /// `keepalive_interval` [MQTT-3.2.2-21].
    pub server_keep_alive: Option<u16>,
}

/// What to do with a packet from the remote.
#[derive(Debug, PartialEq)]
pub enum FromRemote {
    /// Hand it to the bridge's session on this broker.
    ToLink(Packet),
    /// An answer to one of the bridge's own packets, or nothing to act on.
    Consumed,
    /// Answer the remote with this packet (PINGRESP).
    Reply(Packet),
    /// The remote broke the protocol or said goodbye: the connection ends.
    Close(String),
}

/// The relay between the remote broker and the bridge's local session.
#[derive(Debug)]
pub struct Relay<'b> {
    bridge: &'b Bridge,
    terms: Terms,
    /// Identifiers of the bridge's own packets waiting for their answer.
    own: Vec<u16>,
}

/// The CONNECT the bridge sends: `remote_clientid`, `cleansession`, `keepalive_interval`,
/// the remote credentials, the `0` notification as its will (so that the remote learns of a
/// lost connection), and with `try_private` the 3.1 / 3.1.1 protocol level with its top bit
/// set (mosquitto's bridge flag). 5.0 carries the Receive Maximum, as mosquitto's does, and
/// `bridge_session_expiry_interval` when above 0 ([`Bridge::session_expiry`]): the remote
/// then keeps the bridge's session, its subscriptions and what it queues for the bridge,
/// across a lost connection ([MQTT-3.1.2-23]: it stores the session state when the interval
/// is above 0), and the in-flight messages of both sides are resent ([MQTT-4.4.0-1]).
///
/// `remote_max_qos` is the Maximum QoS the remote announced last (QoS 2 before it has
/// answered): the will goes at QoS 1, or 0 to a remote that takes only QoS 0, which refuses
/// a CONNECT whose will is above it [MQTT-3.2.2-12] (as mosquitto's bridge, once it knows
/// the remote's Maximum QoS; midge also learns it from a refusal with 0x9B).
pub fn connect_packet(b: &Bridge, receive_maximum: u16, remote_max_qos: QoS) -> Connect {
    let mut c = Connect::new(b.protocol, b.remote_clientid());
    c.clean_start = b.clean_session;
    c.keep_alive = b.keepalive;
    c.username = b.remote_username.as_deref().map(ByteString::from);
    c.password = b.remote_password.as_ref().map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c.bridge = b.try_private && !b.protocol.is_v5();
    if b.notifications && !b.notifications_local_only {
        c.will = Some(Will {
            topic: ByteString::from(b.notification_topic()),
            payload: Bytes::from_static(b"0"),
            qos: QoS::AtLeastOnce.min(remote_max_qos),
            retain: true,
            properties: Properties::new(),
        });
    }
    if b.protocol.is_v5() {
        c.properties.push(Property::ReceiveMaximum(receive_maximum));
        // Absent means 0: the session ends with the connection (5.0 section 3.1.2.11.2).
        let expiry = b.session_expiry();
        if expiry > 0 {
            c.properties.push(Property::SessionExpiryInterval(expiry));
        }
    }
    c
}

/// The remote's answer to CONNECT: its terms, or the reason it refused.
pub fn on_connack(ack: &ConnAck) -> Result<Terms, ReasonCode> {
    if ack.reason_code != ReasonCode::Success {
        return Err(ack.reason_code);
    }
    let p = &ack.properties;
    Ok(Terms {
        session_present: ack.session_present,
        max_qos: p.maximum_qos().and_then(QoS::from_u8).unwrap_or(QoS::ExactlyOnce),
        retain_available: p.retain_available() != Some(0),
        receive_maximum: p.receive_maximum(),
        max_packet: p.maximum_packet_size(),
        server_keep_alive: p.server_keep_alive(),
    })
}

impl<'b> Relay<'b> {
    /// A relay for a connection on these terms.
    pub fn new(bridge: &'b Bridge, terms: Terms) -> Self {
        Relay { bridge, terms, own: Vec::new() }
    }

    /// The terms of the connection.
    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    /// The QoS of a topic line, within what the remote takes.
    fn qos(&self, q: QoS) -> QoS {
        q.min(self.terms.max_qos)
    }

    /// What the bridge sends first, in mosquitto's order: the `1` notification (retained,
    /// QoS 1 unless the remote takes only 0), a SUBSCRIBE per `in`/`both` topic (5.0: No
    /// Local and Retain As Published), and with `bridge_attempt_unsubscribe` an UNSUBSCRIBE
    /// per `out` topic, which an earlier configuration may have subscribed to. `next_id`
    /// gives packet identifiers.
    pub fn greeting(&mut self, mut next_id: impl FnMut() -> u16) -> Vec<Packet> {
        let b = self.bridge;
        let mut out = Vec::new();
        if b.notifications && !b.notifications_local_only {
            let mut p = Publish::new(b.notification_topic(), Bytes::from_static(b"1"));
            p.qos = if self.terms.max_qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            p.retain = self.terms.retain_available;
            if p.qos > QoS::AtMostOnce {
                p.packet_id = next_id();
                self.own.push(p.packet_id);
            }
            out.push(Packet::Publish(p));
        }
        for t in &b.topics {
            if t.direction.incoming() {
                let id = next_id();
                let mut options = SubscriptionOptions::qos(self.qos(t.qos));
                if b.protocol.is_v5() {
                    // What the bridge publishes on the remote does not come back to it.
                    options.no_local = true;
                    options.retain_as_published = true;
                    options.retain_handling = RetainHandling::SendAtSubscribe;
                }
                self.own.push(id);
                out.push(Packet::Subscribe(Subscribe::new(id, t.remote_topic(), options)));
            } else if b.attempt_unsubscribe {
                let id = next_id();
                self.own.push(id);
                out.push(Packet::Unsubscribe(Unsubscribe {
                    packet_id: id,
                    properties: Properties::new(),
                    filters: vec![ByteString::from(t.remote_topic())],
                }));
            }
        }
        out
    }

    /// A packet of the local session, as the remote gets it (`None`: not for the remote).
    /// A message is renamed to its remote topic, keeps RETAIN only with
    /// `bridge_outgoing_retain`, and loses what only meant something locally.
    pub fn to_remote(&self, p: Packet) -> Option<Packet> {
        match p {
            Packet::Publish(mut p) => {
                p.topic = ByteString::from(topics::to_remote(&self.bridge.topics, &p.topic));
                p.retain &= self.bridge.outgoing_retain && self.terms.retain_available;
                p.properties.retain(|prop| {
                    !matches!(prop.id(), PropertyId::SubscriptionIdentifier | PropertyId::TopicAlias)
                });
                Some(Packet::Publish(p))
            }
            // A PUBREC for an identifier the session does not have in flight: a plain PUBREL,
            // as mosquitto's bridges answer (the remote's state is ahead of ours).
            Packet::PubRel(a) if a.reason_code == ReasonCode::PacketIdentifierNotFound => {
                Some(Packet::PubRel(midge_codec::PublishAck::new(a.packet_id)))
            }
            p @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_)) => Some(p),
            // Answers to the bridge's own local SUBSCRIBE, PINGRESP, the session's DISCONNECT.
            _ => None,
        }
    }

    /// A packet from the remote.
    pub fn from_remote(&mut self, p: Packet) -> FromRemote {
        match p {
            // The bridge's CONNECT allows no topic alias (Topic Alias Maximum 0): the remote
            // may send none [MQTT-3.3.2-11]. Passed on, an alias-only PUBLISH would reach
            // local subscribers with an empty topic.
            Packet::Publish(p) if p.properties.get(PropertyId::TopicAlias).is_some() => FromRemote::Close(
                "the remote sent a Topic Alias, which the bridge does not allow (Topic Alias Maximum 0) \
                 [MQTT-3.3.2-11]"
                    .into(),
            ),
            Packet::Publish(mut p) => {
                p.topic = ByteString::from(topics::to_local(&self.bridge.topics, &p.topic));
                p.properties.retain(|prop| {
                    !matches!(prop.id(), PropertyId::SubscriptionIdentifier | PropertyId::TopicAlias)
                });
                FromRemote::ToLink(Packet::Publish(p))
            }
            Packet::PubAck(a) if self.answered(a.packet_id) => FromRemote::Consumed,
            p @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_)) => {
                FromRemote::ToLink(p)
            }
            Packet::SubAck(a) => {
                self.answered(a.packet_id);
                if let Some(code) = a.reason_codes.iter().find(|c| c.is_error()) {
                    tracing::warn!(
                        "Bridge {}: the remote refused a subscription ({}).",
                        self.bridge.name,
                        code.description()
                    );
                }
                FromRemote::Consumed
            }
            Packet::UnsubAck(a) => {
                self.answered(a.packet_id);
                FromRemote::Consumed
            }
            Packet::PingResp => FromRemote::Consumed,
            // mosquitto answers a remote's PINGREQ too.
            Packet::PingReq => FromRemote::Reply(Packet::PingResp),
            Packet::Disconnect(d) => {
                FromRemote::Close(format!("the remote disconnected ({})", d.reason_code.description()))
            }
            other => FromRemote::Close(format!(
                "the remote sent {}, which a server never sends",
                other.packet_type()
            )),
        }
    }

    /// Forgets an identifier of the bridge's own once answered; true if it was one.
    fn answered(&mut self, id: u16) -> bool {
        match self.own.iter().position(|&x| x == id) {
            Some(i) => {
                self.own.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// The version the bridge speaks to its remote.
pub fn version(b: &Bridge) -> ProtocolVersion {
    b.protocol
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn bridge(extra: &str) -> Bridge {
        // A bridge needs a topic line (as mosquitto's); one unless the test gives its own.
        let topic = if extra.contains("topic ") { "" } else { "topic t/# out\n" };
        let text = format!("connection b1\naddress 127.0.0.1:1884\nremote_clientid r1\n{topic}{extra}");
        parse_str(&text, "test.conf").unwrap().0.bridges.remove(0)
    }

    fn terms() -> Terms {
        Terms {
            session_present: false,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            receive_maximum: None,
            max_packet: None,
            server_keep_alive: None,
        }
    }

    #[test]
    fn a_311_bridge_sets_the_private_bit_and_its_will() {
        let c = connect_packet(&bridge("topic a/# both 2\n"), 20, QoS::ExactlyOnce);
        assert!(c.bridge && !c.clean_start && c.keep_alive == 60);
        assert_eq!(&*c.client_id, "r1");
        let w = c.will.unwrap();
        assert_eq!(
            (&*w.topic, &w.payload[..], w.retain),
            ("$SYS/broker/connection/r1/state", &b"0"[..], true)
        );
        let c = connect_packet(&bridge("try_private false\nnotifications false\n"), 20, QoS::ExactlyOnce);
        assert!(!c.bridge && c.will.is_none());
        // A remote that takes only QoS 0 gets the will at QoS 0 [MQTT-3.2.2-12].
        let c = connect_packet(&bridge("bridge_protocol_version mqttv50\n"), 20, QoS::AtMostOnce);
        assert_eq!(c.will.unwrap().qos, QoS::AtMostOnce);
        let c = connect_packet(&bridge("bridge_protocol_version mqttv50\n"), 20, QoS::ExactlyOnce);
        assert!(!c.bridge && c.properties.receive_maximum() == Some(20));
    }

    #[test]
    fn a_50_bridge_asks_the_remote_to_keep_its_session_with_bridge_session_expiry_interval() {
        let expiry = |extra: &str| {
            let c = connect_packet(
                &bridge(&format!("bridge_protocol_version mqttv50\n{extra}")),
                20,
                QoS::ExactlyOnce,
            );
            c.properties.iter().find_map(|p| match p {
                Property::SessionExpiryInterval(e) => Some(*e),
                _ => None,
            })
        };
        // As mosquitto 2.0 (none) and 2.1 (its option, default 0).
        assert_eq!(expiry(""), None);
        assert!(bridge("bridge_protocol_version mqttv50\n").loses_its_remote_session());
        assert_eq!(expiry("bridge_session_expiry_interval 4294967295\n"), Some(u32::MAX));
        assert!(!bridge("bridge_protocol_version mqttv50\nbridge_session_expiry_interval 1\n")
            .loses_its_remote_session());
        assert_eq!(expiry("bridge_session_expiry_interval 600\n"), Some(600));
        assert_eq!(expiry("cleansession true\nbridge_session_expiry_interval 0xFFFFFFFF\n"), Some(u32::MAX));
        assert_eq!(expiry("bridge_session_expiry_interval 0\n"), None);
        // 3.1.1 has no properties: cleansession false keeps the session there.
        assert!(connect_packet(&bridge("bridge_session_expiry_interval 600\n"), 20, QoS::ExactlyOnce)
            .properties
            .is_empty());
        assert!(!bridge("").loses_its_remote_session());
    }

    #[test]
    fn the_greeting_is_numbered_from_one_counter_in_mosquittos_order() {
        let b = bridge("topic in/# in 1\ntopic out/# out 2\ntopic both/# both 2 l/ r/\n");
        let mut relay = Relay::new(&b, terms());
        let mut n = 0;
        let out = relay.greeting(|| {
            n += 1;
            n
        });
        let kinds: Vec<_> = out.iter().map(|p| p.packet_type()).collect();
        use midge_codec::PacketType::*;
        assert_eq!(kinds, vec![Publish, Subscribe, Unsubscribe, Subscribe]);
        let Packet::Subscribe(s) = &out[3] else { panic!() };
        assert_eq!((s.packet_id, &*s.filters[0].0), (4, "r/both/#"));
        // The answers are the bridge's own: not for the local session.
        assert_eq!(relay.from_remote(Packet::PubAck(midge_codec::PubAck::new(1))), FromRemote::Consumed);
        assert!(matches!(
            relay.from_remote(Packet::PubAck(midge_codec::PubAck::new(1))),
            FromRemote::ToLink(_)
        ));
    }

    #[test]
    fn messages_are_renamed_and_retain_follows_bridge_outgoing_retain() {
        let b = bridge("topic t/# both 1 l/ r/\nbridge_outgoing_retain false\n");
        let mut relay = Relay::new(&b, terms());
        let mut p = Publish::new("l/t/x", "v");
        p.retain = true;
        let Some(Packet::Publish(out)) = relay.to_remote(Packet::Publish(p.clone())) else { panic!() };
        assert_eq!((&*out.topic, out.retain), ("r/t/x", false));
        p.topic = "r/t/y".into();
        let FromRemote::ToLink(Packet::Publish(inc)) = relay.from_remote(Packet::Publish(p)) else {
            panic!()
        };
        assert_eq!((&*inc.topic, inc.retain), ("l/t/y", true));
    }

    #[test]
    fn a_topic_alias_from_the_remote_ends_the_connection() {
        // The bridge allows none: an alias-only PUBLISH (empty topic) never reaches local
        // subscribers.
        let b = bridge("topic b/# both 1\n");
        let mut relay = Relay::new(&b, terms());
        let mut p = Publish::new("", "v");
        p.properties.push(midge_codec::Property::TopicAlias(3));
        assert!(
            matches!(relay.from_remote(Packet::Publish(p)), FromRemote::Close(why) if why.contains("Topic Alias"))
        );
    }
}
