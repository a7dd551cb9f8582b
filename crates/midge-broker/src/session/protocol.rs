//! The server's side of one client connection: QoS flows both ways, subscriptions, topic
//! aliases, keep alive. Packets and time in; packets out, and a reason to close.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytestring::ByteString;
use midge_codec::{
    parse_shared, Disconnect, Packet, Properties, Property, ProtocolVersion, PubAck, Publish, PublishAck,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

use super::message::{Delivery, Message};
use super::outgoing::PubRecOutcome;
use super::{SessionState, SubscriptionRecord};
use crate::auth::{AuthExchange, AuthStep, ClientAccess, Enhanced};
use crate::router::Router;

/// Limits that apply to one connection, from the configuration and what the client announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Outgoing QoS 1 and 2 messages in flight at once: the lower of max_inflight_messages
    /// and the client's Receive Maximum [MQTT-3.3.4-7].
    pub max_inflight: usize,
    /// Incoming QoS 2 messages not yet released that we accept (our Receive Maximum).
    pub receive_maximum: usize,
    /// The largest packet the client accepts (5.0 Maximum Packet Size); larger ones are not
    /// sent [MQTT-3.1.2-24].
    pub client_max_packet_size: usize,
    /// Our Topic Alias Maximum (5.0): aliases above it are a protocol error.
    pub topic_alias_maximum: u16,
    /// The client's Topic Alias Maximum (5.0): how many aliases we may use towards it.
    pub client_topic_alias_maximum: u16,
    /// The highest QoS the broker supports (`max_qos`).
    pub max_qos: QoS,
    /// Whether retained messages are supported (`retain_available`).
    pub retain_available: bool,
    /// Deliveries pulled from the mailbox at a time.
    pub batch: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_inflight: 20,
            receive_maximum: 65_535,
            client_max_packet_size: usize::MAX,
            topic_alias_maximum: 0,
            client_topic_alias_maximum: 0,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            batch: 256,
        }
    }
}

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT. `with_will` for 5.0 reason 0x04.
    Disconnect {
        /// Disconnect with Will Message.
        with_will: bool,
    },
    /// Nothing received for 1.5 times the keep alive [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]).
    KeepAliveTimeout,
    /// The client broke the protocol; 5.0 clients are told why with DISCONNECT.
    ProtocolError {
        /// The reason code sent to 5.0 clients.
        reason: ReasonCode,
        /// What happened, for the log.
        detail: String,
    },
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// A socket error.
    Io(String),
    /// Another connection took the client id over [MQTT-3.1.4-3].
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// A reload of the security settings no longer lets the client in.
    NotAuthorized,
}

impl CloseReason {
    /// Whether the will is published: on every loss but a normal DISCONNECT
    /// [MQTT-3.1.2-8] (3.1.1: [MQTT-3.1.2-10]).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::Disconnect { with_will: false })
    }

    /// The DISCONNECT a 5.0 client receives before the server closes, if any.
    pub fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseReason::ProtocolError { reason, .. } => Some(*reason),
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseReason::Shutdown => Some(ReasonCode::ServerShuttingDown),
            CloseReason::NotAuthorized => Some(ReasonCode::NotAuthorized),
            _ => None,
        }
    }

    fn protocol(reason: ReasonCode, detail: impl Into<String>) -> Self {
        CloseReason::ProtocolError { reason, detail: detail.into() }
    }

    /// The log line, in mosquitto's words.
    pub fn log_line(&self, client_id: &str) -> String {
        match self {
            CloseReason::Disconnect { .. } => format!("Client {client_id} disconnected."),
            CloseReason::KeepAliveTimeout => {
                format!("Client {client_id} has exceeded timeout, disconnecting.")
            }
            CloseReason::ProtocolError { reason: ReasonCode::MalformedPacket, detail } => {
                format!("Client {client_id} disconnected due to malformed packet: {detail}.")
            }
            CloseReason::ProtocolError { detail, .. } => {
                format!("Client {client_id} disconnected due to protocol error: {detail}.")
            }
            CloseReason::Closed => format!("Client {client_id} closed its connection."),
            CloseReason::Io(e) => format!("Socket error on client {client_id}, disconnecting: {e}."),
            CloseReason::TakenOver => {
                format!("Client {client_id} already connected, closing old connection.")
            }
            CloseReason::Shutdown => format!("Client {client_id} disconnected: broker shutting down."),
            CloseReason::NotAuthorized => {
                format!("Client {client_id} disconnected: not authorised by the reloaded security settings.")
            }
        }
    }
}

/// One connected client: its session and the state of this network connection.
#[derive(Debug)]
pub struct Session {
    /// The session, which outlives the connection when it is persistent.
    pub state: SessionState,
    /// The protocol version of the connection.
    pub version: ProtocolVersion,
    /// The client identifier.
    pub client_id: ByteString,
    /// The user name it authenticated as.
    pub username: Option<ByteString>,
    /// The keep alive in force, in seconds (0: none).
    pub keep_alive: u16,
    /// The will, until it is published or discarded (boxed: most clients have none).
    pub will: Option<Box<Will>>,
    limits: ConnectionLimits,
    last_received: Instant,
    /// Topic aliases, allocated on first use (most clients never use them).
    aliases: Option<Box<Aliases>>,
    out: VecDeque<Packet>,
    close: Option<Box<CloseReason>>,
    oversized_dropped: u64,
    access: Option<Box<ClientAccess>>,
    /// The enhanced authentication method, and a re-authentication in progress.
    enhanced: Option<Box<EnhancedState>>,
    /// Acknowledgements held while subscribers' queues are over capacity, in order.
    held: VecDeque<HeldAck>,
}

/// The enhanced authentication method a client connected with, and a re-authentication in
/// progress.
#[derive(Debug)]
struct EnhancedState {
    method: Enhanced,
    reauth: Option<Box<dyn AuthExchange>>,
}

/// The topic aliases of a connection, both ways (5.0 section 3.3.2.3.4).
#[derive(Debug, Default)]
struct Aliases {
    incoming: AHashMap<u16, ByteString>,
    outgoing: AHashMap<ByteString, u16>,
}

/// A PUBACK / PUBREC waiting for room in the queues its message went into.
#[derive(Debug)]
struct HeldAck {
    ack: Packet,
    waiting: Vec<Arc<super::SessionHandle>>,
    since: Instant,
}

impl Session {
    /// A session attached to a new connection.
    pub fn new(
        state: SessionState,
        version: ProtocolVersion,
        keep_alive: u16,
        will: Option<Will>,
        username: Option<ByteString>,
        limits: ConnectionLimits,
        now: Instant,
    ) -> Self {
        let client_id = state.handle.client_id.clone();
        Session {
            state,
            version,
            client_id,
            username,
            keep_alive,
            will: will.map(Box::new),
            limits,
            last_received: now,
            aliases: None,
            out: VecDeque::new(),
            close: None,
            oversized_dropped: 0,
            access: None,
            enhanced: None,
            held: VecDeque::new(),
        }
    }

    /// False while the client has as many acknowledgements held as we allow in flight: its
    /// connection is not read until some go, which slows a 3.1.1 publisher (that has no
    /// Receive Maximum to respect) through TCP.
    pub fn wants_input(&self) -> bool {
        self.held.len() < self.limits.receive_maximum
    }

    /// True while acknowledgements are held for congested subscribers.
    pub fn has_held_acks(&self) -> bool {
        !self.held.is_empty()
    }

    /// A session whose queue the first held acknowledgement waits for.
    pub fn held_waiter(&self) -> Option<Arc<super::SessionHandle>> {
        self.held.front()?.waiting.iter().find(|h| !h.mailbox.has_room()).cloned()
    }

    /// Sends the held acknowledgements whose subscribers have room again, in order
    /// ([MQTT-4.6.0-2], [MQTT-4.6.0-3]); one held longer than a slow consumer may slow its
    /// publishers goes anyway.
    pub fn release_held_acks(&mut self, now: Instant) {
        while let Some(front) = self.held.front() {
            let free = front.waiting.iter().all(|h| h.mailbox.has_room());
            if !free && now < front.since + super::mailbox::SLOW_AFTER {
                return;
            }
            if let Some(h) = self.held.pop_front() {
                self.out.push_back(h.ack);
            }
        }
    }

    /// The enhanced authentication method the client connected with (5.0), which it may
    /// use again to re-authenticate.
    pub fn set_enhanced(&mut self, enhanced: Option<Enhanced>) {
        self.enhanced = enhanced.map(|method| Box::new(EnhancedState { method, reauth: None }));
    }

    /// Sets what the client may publish, subscribe to and receive (`None`: everything).
    pub fn set_access(&mut self, access: Option<ClientAccess>) {
        self.access = access.map(Box::new);
    }

    /// Resends what was in flight when the previous connection ended: PUBLISH with DUP for
    /// messages not yet acknowledged, PUBREL for those received, in the original order
    /// [MQTT-4.4.0-1], [MQTT-4.6.0-1].
    pub fn resume(&mut self, now: Instant) {
        let resend: Vec<_> = self.state.outgoing.inflight().cloned().collect();
        for f in resend {
            match f.state {
                super::outgoing::Awaiting::PubComp => {
                    self.out.push_back(Packet::PubRel(PublishAck::new(f.packet_id)));
                }
                _ => {
                    let p = self.publish_packet(&f.delivery, f.packet_id, true, now);
                    self.send_publish(p);
                }
            }
        }
    }

    /// Why the connection must close, once it must.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close.as_deref()
    }

    /// Ends the connection for a reason found outside the session (socket closed, takeover,
    /// shutdown, an undecodable packet). The first reason stays.
    pub fn close(&mut self, reason: CloseReason) {
        if self.close.is_none() {
            self.close = Some(Box::new(reason));
        }
    }

    /// The packets to send, in order.
    pub fn drain_output(&mut self) -> std::collections::vec_deque::Drain<'_, Packet> {
        self.out.drain(..)
    }

    /// True when packets wait to be sent.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// When the keep alive runs out, if it can.
    pub fn next_timeout(&self) -> Option<Instant> {
        (self.keep_alive > 0).then(|| self.last_received + keep_alive_grace(self.keep_alive))
    }

    /// Checks the keep alive: closes after 1.5 times the keep alive without a packet
    /// [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.next_timeout() {
            if now >= deadline {
                self.close(CloseReason::KeepAliveTimeout);
            }
        }
    }

    /// True when the session can take more deliveries from its mailbox now.
    pub fn wants_deliveries(&self) -> bool {
        self.close.is_none()
            && self.state.outgoing.pending.is_empty()
            && self.state.outgoing.inflight_len() < self.limits.max_inflight
    }

    /// Turns queued deliveries into PUBLISH packets, first those pending then those in the
    /// mailbox, as far as the inflight window allows and at most `budget` of them. Returns
    /// how many were produced. The caller decides when (it stops while its socket is slow, so
    /// the mailbox, which is bounded, absorbs the backlog).
    pub fn pump(&mut self, now: Instant, budget: usize) -> usize {
        let mut sent = 0;
        loop {
            if self.close.is_some() || sent >= budget {
                return sent;
            }
            if self.state.outgoing.pending.is_empty() {
                let batch = self.limits.batch;
                if self.state.handle.mailbox.drain_into(&mut self.state.outgoing.pending, batch) == 0 {
                    return sent;
                }
            }
            while sent < budget {
                let Some(d) = self.state.outgoing.pending.pop_front() else { break };
                if d.message.is_expired(now) {
                    // [MQTT-3.3.2-5] an expired message is not delivered.
                    continue;
                }
                if self.access.as_ref().is_some_and(|a| !a.can_read(&d.message.topic)) {
                    // The ACL is checked on delivery too: a client never receives what it may
                    // not read, whatever its subscription matched.
                    continue;
                }
                if d.qos == QoS::AtMostOnce {
                    let p = self.publish_packet(&d, 0, false, now);
                    self.send_publish(p);
                    sent += 1;
                    continue;
                }
                if self.state.outgoing.inflight_len() >= self.limits.max_inflight {
                    self.state.outgoing.pending.push_front(d);
                    return sent;
                }
                let p = self.publish_packet(&d, 0, false, now);
                let id = self.state.outgoing.start(d);
                self.send_publish(Publish { packet_id: id, ..p });
                sent += 1;
            }
        }
    }

    fn publish_packet(&self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let m = &d.message;
        let properties =
            if self.version.is_v5() { m.outgoing_properties(&d.sub_ids, now) } else { Properties::new() };
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: m.topic.clone(),
            packet_id,
            properties,
            payload: m.payload.clone(),
        }
    }

    fn send_publish(&mut self, mut p: Publish) {
        self.apply_alias(&mut p);
        let packet = Packet::Publish(p);
        if self.limits.client_max_packet_size != usize::MAX
            && packet.encoded_len(self.version) > self.limits.client_max_packet_size
        {
            // [MQTT-3.1.2-24] not sent to a client whose Maximum Packet Size it exceeds;
            // [MQTT-3.1.2-25] discarded as if it had been sent. A message in flight is
            // completed here, since the client will never acknowledge it.
            if let Packet::Publish(p) = &packet {
                if p.qos == QoS::AtLeastOnce {
                    self.state.outgoing.puback(p.packet_id);
                } else if p.qos == QoS::ExactlyOnce {
                    self.state.outgoing.pubrec(p.packet_id, true);
                }
            }
            self.oversized_dropped += 1;
            tracing::debug!("Dropped a message too large for client {}.", self.client_id);
            return;
        }
        self.out.push_back(packet);
    }

    /// Topic aliases towards a 5.0 client that announced a Topic Alias Maximum: the first
    /// PUBLISH of a topic carries the topic and a new alias, later ones the alias alone
    /// (section 3.3.2.3.4). Once every alias is taken, other topics go in full.
    fn apply_alias(&mut self, p: &mut Publish) {
        let max = self.limits.client_topic_alias_maximum;
        if max == 0 || !self.version.is_v5() {
            return;
        }
        let aliases = self.aliases.get_or_insert_with(Default::default);
        if let Some(&alias) = aliases.outgoing.get(&p.topic) {
            p.properties.push(Property::TopicAlias(alias));
            p.topic = ByteString::new();
            return;
        }
        let next = aliases.outgoing.len() + 1;
        if next <= usize::from(max) {
            let alias = next as u16;
            aliases.outgoing.insert(p.topic.clone(), alias);
            p.properties.push(Property::TopicAlias(alias));
        }
    }

    /// Handles one packet from the client.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant, router: &Router) {
        if self.close.is_some() {
            return;
        }
        self.last_received = now;
        match packet {
            Packet::Publish(p) => self.on_publish(p, now, router),
            Packet::PubAck(a) => {
                if !self.state.outgoing.puback(a.packet_id) {
                    tracing::debug!("Client {} sent PUBACK for unknown id {}.", self.client_id, a.packet_id);
                }
            }
            Packet::PubRec(a) => {
                let refused = self.version.is_v5() && a.reason_code.is_error();
                match self.state.outgoing.pubrec(a.packet_id, refused) {
                    PubRecOutcome::Release => {
                        self.out.push_back(Packet::PubRel(PublishAck::new(a.packet_id)))
                    }
                    PubRecOutcome::Refused => {}
                    PubRecOutcome::Unknown => self.out.push_back(Packet::PubRel(PublishAck::with_reason(
                        a.packet_id,
                        ReasonCode::PacketIdentifierNotFound,
                    ))),
                }
            }
            Packet::PubComp(a) => {
                if !self.state.outgoing.pubcomp(a.packet_id) {
                    tracing::debug!("Client {} sent PUBCOMP for unknown id {}.", self.client_id, a.packet_id);
                }
            }
            Packet::PubRel(a) => {
                // Section 4.3.3: release the identifier (the message went onwards when the
                // PUBLISH arrived) and answer PUBCOMP; 5.0 says 0x92 for an unknown one.
                let known = self.state.incoming_qos2.remove(&a.packet_id);
                let code = if known { ReasonCode::Success } else { ReasonCode::PacketIdentifierNotFound };
                self.out.push_back(Packet::PubComp(PublishAck::with_reason(a.packet_id, code)));
            }
            Packet::Subscribe(s) => self.on_subscribe(s, now, router),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, router),
            // [MQTT-3.12.4-1] the Server MUST send a PINGRESP in response to a PINGREQ.
            Packet::PingReq => self.out.push_back(Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(d),
            // [MQTT-3.1.0-2] a second CONNECT is a Protocol Error.
            Packet::Connect(_) => {
                self.close(CloseReason::protocol(ReasonCode::ProtocolError, "second CONNECT"))
            }
            Packet::Auth(a) => self.on_auth(a),
            other @ (Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp) => self
                .close(CloseReason::protocol(
                    ReasonCode::ProtocolError,
                    format!("{} is sent by servers only", other.packet_type()),
                )),
        }
    }

    fn on_publish(&mut self, p: Publish, now: Instant, router: &Router) {
        if p.properties.subscription_identifiers().next().is_some() {
            // [MQTT-3.3.4-6] a PUBLISH from a Client MUST NOT contain a Subscription Identifier.
            self.close(CloseReason::protocol(
                ReasonCode::ProtocolError,
                "PUBLISH with a subscription identifier",
            ));
            return;
        }
        let Some(topic) = self.resolve_topic(&p) else {
            return;
        };
        if p.qos > self.limits.max_qos {
            // [MQTT-3.2.2-11]: above the Maximum QoS the broker announced (0x9B).
            self.close(CloseReason::protocol(
                ReasonCode::QoSNotSupported,
                format!("QoS {} above max_qos", p.qos),
            ));
            return;
        }
        if p.retain && !self.limits.retain_available {
            // [MQTT-3.2.2-14]: RETAIN when Retain Available is 0 (0x9A).
            self.close(CloseReason::protocol(
                ReasonCode::RetainNotSupported,
                "retained messages are not available",
            ));
            return;
        }
        let qos = p.qos;
        let packet_id = p.packet_id;
        if self.access.as_ref().is_some_and(|a| !a.can_publish(&topic)) {
            // Denied by the ACL: 3.1.1 has no way to say so, so the message is acknowledged
            // and dropped; 5.0 gets 0x87 in the acknowledgement.
            tracing::info!("Denied PUBLISH from {} to '{}' (ACL).", self.client_id, topic);
            let code = if self.version.is_v5() { ReasonCode::NotAuthorized } else { ReasonCode::Success };
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.out.push_back(Packet::PubAck(PubAck::with_reason(packet_id, code))),
                QoS::ExactlyOnce => {
                    if !self.version.is_v5() {
                        // 3.1.1 completes the flow: PUBREL will follow.
                        self.state.incoming_qos2.insert(packet_id);
                    }
                    self.out.push_back(Packet::PubRec(PublishAck::with_reason(packet_id, code)));
                }
            }
            return;
        }
        if qos == QoS::ExactlyOnce {
            if self.state.incoming_qos2.contains(&packet_id) {
                // A resend before PUBREL: acknowledged again, not delivered twice (4.3.3).
                self.out.push_back(Packet::PubRec(PublishAck::new(packet_id)));
                return;
            }
            if self.state.incoming_qos2.len() >= self.limits.receive_maximum {
                // [MQTT-3.3.4-9] more unacknowledged QoS 2 PUBLISH than our Receive Maximum.
                self.close(CloseReason::protocol(
                    ReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                ));
                return;
            }
        }
        let message = Arc::new(Message::from_publish(
            topic,
            p.payload,
            qos,
            p.retain,
            p.properties,
            self.client_id.clone(),
            now,
        ));
        if message.retain {
            router.retain(&message);
        }
        let outcome = router.route(&message);
        // 5.0: tell a QoS 1 / 2 publisher when nobody was subscribed (0x10).
        let code = if self.version.is_v5() && outcome.delivered == 0 && outcome.dropped == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let ack = match qos {
            QoS::AtMostOnce => return,
            // [MQTT-4.3.2-2]: PUBACK for a QoS 1 PUBLISH.
            QoS::AtLeastOnce => Packet::PubAck(PubAck::with_reason(packet_id, code)),
            QoS::ExactlyOnce => {
                // [MQTT-4.3.3-9]: PUBREC, and the identifier stays until PUBREL.
                self.state.incoming_qos2.insert(packet_id);
                Packet::PubRec(PublishAck::with_reason(packet_id, code))
            }
        };
        if outcome.congested.is_empty() && self.held.is_empty() {
            self.out.push_back(ack);
            return;
        }
        // A subscriber's queue is over capacity: the acknowledgement waits for room, and the
        // publisher, whose window fills, slows down (flow control, section 4.9). Later
        // acknowledgements wait behind it, keeping their order.
        // A 5.0 client may not have more unacknowledged than our Receive Maximum
        // [MQTT-3.3.4-9]; a 3.1.1 client is bounded by its packet identifiers.
        let limit = if self.version.is_v5() { self.limits.receive_maximum } else { usize::from(u16::MAX) };
        if self.held.len() >= limit {
            self.close(CloseReason::protocol(ReasonCode::ReceiveMaximumExceeded, "receive maximum exceeded"));
            return;
        }
        self.held.push_back(HeldAck { ack, waiting: outcome.congested, since: now });
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
        let aliases = self.aliases.get_or_insert_with(Default::default);
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
            aliases.incoming.insert(alias, p.topic.clone());
            Some(p.topic.clone())
        }
    }

    fn on_subscribe(&mut self, s: Subscribe, now: Instant, router: &Router) {
        let sub_id = s.properties.subscription_identifiers().next();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (filter, requested) in s.filters {
            if self.access.as_ref().is_some_and(|a| !a.can_subscribe(&filter)) {
                // Denied by the ACL: 0x80 in 3.1.1, 0x87 in 5.0.
                tracing::info!("Denied SUBSCRIBE from {} to '{}' (ACL).", self.client_id, filter);
                codes.push(if self.version.is_v5() {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            // Granted as requested, up to max_qos; any requested QoS is accepted [MQTT-3.2.2-10].
            let options = SubscriptionOptions { qos: requested.qos.min(self.limits.max_qos), ..requested };
            let existed = router.subscribe(&self.state.handle, &filter, options, sub_id);
            let shared = matches!(parse_shared(&filter), Ok(Some(_)));
            // Retained messages for the new subscription [MQTT-3.8.4-4]; per Retain Handling in
            // 5.0 [MQTT-3.3.1-9] to [MQTT-3.3.1-11]; none for shared subscriptions (4.8.2).
            let send_retained = !shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                for m in router.retained_for(&filter, now) {
                    retained.push(Delivery {
                        qos: m.qos.min(options.qos),
                        // [MQTT-3.3.1-8] retained messages sent for a new subscription keep RETAIN.
                        retain: true,
                        sub_ids: sub_id.into_iter().collect(),
                        message: m,
                        share: None,
                    });
                }
            }
            self.state.subscriptions.insert(filter, SubscriptionRecord { options, id: sub_id });
            codes.push(ReasonCode::granted(options.qos));
        }
        // [MQTT-3.8.4-1] SUBACK with the same packet identifier, one code per filter in order
        // [MQTT-3.8.4-5], [MQTT-3.8.4-6]; then the retained messages.
        self.out.push_back(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::new(),
            reason_codes: codes,
        }));
        self.state.outgoing.pending.extend(retained);
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, router: &Router) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            let existed = router.unsubscribe(&self.state.handle, &filter);
            self.state.subscriptions.remove(&filter);
            codes.push(if existed { ReasonCode::Success } else { ReasonCode::NoSubscriptionExisted });
        }
        // [MQTT-3.10.4-4] UNSUBACK with the same packet identifier (5.0: a code per filter).
        let codes = if self.version.is_v5() { codes } else { Vec::new() };
        self.out.push_back(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::new(),
            reason_codes: codes,
        }));
    }

    /// Re-authentication (section 4.12.1): the client sends AUTH 0x19 with the method it
    /// connected with, then the exchange runs as at CONNECT; it ends with AUTH 0x00, or with
    /// DISCONNECT when it fails [MQTT-4.12.1-2].
    fn on_auth(&mut self, a: midge_codec::Auth) {
        let Some(enhanced) = self.enhanced.as_ref().map(|e| e.method.clone()) else {
            return self.close(CloseReason::protocol(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method in CONNECT",
            ));
        };
        let name = enhanced.method.name();
        if a.properties.authentication_method().map(|m| &**m) != Some(name) {
            // [MQTT-4.12.1-1]: the same Authentication Method as in CONNECT.
            return self.close(CloseReason::protocol(ReasonCode::ProtocolError, "AUTH with another method"));
        }
        match a.reason_code {
            ReasonCode::ReAuthenticate if self.reauth().is_none() => {
                let exchange = enhanced.method.start(&self.client_id);
                if let Some(e) = self.enhanced.as_mut() {
                    e.reauth = Some(exchange);
                }
            }
            ReasonCode::ContinueAuthentication if self.reauth().is_some() => {}
            _ => return self.close(CloseReason::protocol(ReasonCode::ProtocolError, "unexpected AUTH")),
        }
        let data = a.properties.authentication_data().map(|d| &d[..]);
        let Some(exchange) = self.enhanced.as_mut().and_then(|e| e.reauth.as_mut()) else { return };
        match exchange.step(data) {
            AuthStep::Continue(d) => self.out.push_back(crate::broker::auth_packet(
                name,
                ReasonCode::ContinueAuthentication,
                Some(d),
            )),
            AuthStep::Success { data, .. } => {
                self.end_reauth();
                self.out.push_back(crate::broker::auth_packet(name, ReasonCode::Success, data));
            }
            AuthStep::Failure(code) => {
                self.end_reauth();
                self.close(CloseReason::protocol(code, "re-authentication failed"));
            }
        }
    }

    fn reauth(&self) -> Option<&dyn AuthExchange> {
        self.enhanced.as_ref().and_then(|e| e.reauth.as_deref())
    }

    fn end_reauth(&mut self) {
        if let Some(e) = self.enhanced.as_mut() {
            e.reauth = None;
        }
    }

    fn on_disconnect(&mut self, d: Disconnect) {
        if let Some(expiry) = d.properties.session_expiry_interval() {
            if self.state.expiry_interval == 0 && expiry != 0 {
                // [MQTT-3.14.2-2]: a session that expired at disconnect cannot be extended.
                self.close(CloseReason::protocol(
                    ReasonCode::ProtocolError,
                    "session expiry set in DISCONNECT after 0 in CONNECT",
                ));
                return;
            }
            self.state.expiry_interval = expiry;
        }
        let with_will = d.reason_code == ReasonCode::DisconnectWithWill;
        if !with_will {
            // [MQTT-3.14.4-3] (3.1.1: [MQTT-3.14.4-3]): a normal DISCONNECT discards the will.
            self.will = None;
        }
        self.close(CloseReason::Disconnect { with_will });
    }

    /// The DISCONNECT to send a 5.0 client before closing, if the reason calls for one.
    pub fn disconnect_packet(&self) -> Option<Packet> {
        if !self.version.is_v5() {
            return None;
        }
        let reason = self.close.as_ref()?.server_disconnect()?;
        let mut properties = Properties::new();
        if let Some(CloseReason::ProtocolError { detail, .. }) = self.close.as_deref() {
            properties.push(Property::ReasonString(detail.as_str().into()));
        }
        Some(Packet::Disconnect(Disconnect { reason_code: reason, properties }))
    }

    /// How many messages were not sent because they exceeded the client's Maximum Packet Size.
    pub fn oversized_dropped(&self) -> u64 {
        self.oversized_dropped
    }
}

/// One and a half times the keep alive.
pub fn keep_alive_grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}
