//! Per-client protocol state, pure: a [`Session`] takes decoded packets, deliveries and the
//! current time, and gives back packets to send and [`Effect`]s for the broker to apply
//! (route this message, add or remove this subscription). It reads no clock, takes no lock
//! and touches no socket, so tests drive it directly, and what it decides is applied the
//! same way to the router, a store or a cluster.
mod close;
mod effect;
mod inbound;
mod message;
mod outbound;
mod outgoing;
mod reauth;
mod state;
mod subscriptions;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytestring::ByteString;
use midge_codec::{Packet, ProtocolVersion, QoS, ReasonCode, Will};

pub use close::CloseReason;
pub use effect::{DeliveryEvent, Effect, Ending, PendingAck, WillPlan};
pub use message::{Delivery, Message, StoreEntry};
pub use outgoing::{Awaiting, InFlight, Outgoing};
pub use state::{Replay, Replays, SessionHasher, SessionState, SubscriptionRecord};

use crate::auth::ClientAccess;
use reauth::EnhancedState;

/// How long an acknowledgement may be held for a congested subscriber: as long as a
/// subscriber may slow its publishers before it counts as a slow consumer.
pub const HOLD_LIMIT: Duration = crate::mailbox::SLOW_AFTER;

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
    /// The payload bytes of QoS 1 and 2 messages in flight to the client
    /// (`max_inflight_bytes`, saturated; 0: no limit). u32, as `max_payload`: an idle
    /// connection's size counts.
    pub max_inflight_bytes: u32,
    /// The largest payload accepted from the client (`message_size_limit`; `u32::MAX`: no
    /// limit, a payload being shorter than a packet's 268,435,455 bytes).
    pub max_payload: u32,
    /// Retained messages go out at the subscription's QoS (`upgrade_outgoing_qos`).
    pub upgrade_outgoing_qos: bool,
    /// The highest QoS the peer takes: a bridge's remote announces it in its CONNACK
    /// (Maximum QoS), and no PUBLISH goes to it above it [MQTT-3.2.2-11]. A client
    /// announces none: QoS 2.
    pub peer_max_qos: QoS,
    /// A bridge's session: only what its relay passes on reaches the peer (messages and
    /// their acknowledgements, not the answers to the bridge's own local SUBSCRIBE), and the
    /// relay holds those to the remote's Maximum Packet Size.
    pub relayed: bool,
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
            max_inflight_bytes: 0,
            max_payload: u32::MAX,
            upgrade_outgoing_qos: false,
            peer_max_qos: QoS::ExactlyOnce,
            relayed: false,
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
    /// The keep alive in force, in seconds (0: none).
    pub keep_alive: u16,
    limits: ConnectionLimits,
    last_received: Instant,
    /// The queues that fill and empty as packets come and go: allocated while in use, so
    /// that an idle connection holds none.
    busy: Option<Box<Busy>>,
    close: Option<Box<CloseReason>>,
    access: Option<Box<ClientAccess>>,
    /// What only some clients have.
    extra: Option<Box<Extra>>,
}

/// A session's queues of the moment.
#[derive(Debug, Default)]
struct Busy {
    /// Packets to send.
    out: VecDeque<Packet>,
    /// Effects for the broker to apply.
    effects: VecDeque<Effect>,
    /// Acknowledgements held while subscribers' queues are congested, in order.
    held: VecDeque<Held>,
}

/// What only some clients have: a user name, a will, topic aliases, enhanced authentication.
#[derive(Debug, Default)]
struct Extra {
    username: Option<ByteString>,
    will: Option<Will>,
    aliases: Aliases,
    enhanced: Option<EnhancedState>,
    oversized_dropped: u64,
    /// The listener's `mount_point`: put before the topics the client names, taken off
    /// those it receives.
    mount_point: Option<ByteString>,
    /// QoS 2 messages the client sent again on this connection before releasing them.
    resent_qos2: ahash::AHashSet<u16>,
    /// A 3.1 / 3.1.1 bridge announced itself (protocol level | 0x80): its subscriptions
    /// behave as No Local and Retain As Published, as mosquitto treats such a bridge.
    bridge: bool,
}

/// The topic aliases of a connection, both ways (5.0 section 3.3.2.3.4).
#[derive(Debug, Default)]
struct Aliases {
    incoming: AHashMap<u16, ByteString>,
    outgoing: AHashMap<ByteString, u16>,
}

/// A PUBACK / PUBREC waiting for room in the queues its message went into.
#[derive(Debug)]
struct Held {
    ack: Packet,
    since: Instant,
}

/// How a connection starts: what CONNECT and the broker settled.
#[derive(Debug)]
pub struct Start {
    /// The client identifier.
    pub client_id: ByteString,
    /// The protocol version.
    pub version: ProtocolVersion,
    /// The keep alive in force.
    pub keep_alive: u16,
    /// The will, if any.
    pub will: Option<Will>,
    /// The user name it authenticated as.
    pub username: Option<ByteString>,
    /// The connection's limits.
    pub limits: ConnectionLimits,
    /// The listener's `mount_point`, if any.
    pub mount_point: Option<ByteString>,
    /// A 3.1 / 3.1.1 bridge (the protocol level's top bit, mosquitto's `try_private`).
    pub bridge: bool,
}

impl Session {
    /// A session attached to a new connection; what was in flight when the previous
    /// connection ended is queued to be sent again ([`Session::resume`]).
    pub fn new(state: SessionState, start: Start, now: Instant) -> Self {
        let extra =
            (start.username.is_some() || start.will.is_some() || start.mount_point.is_some() || start.bridge)
                .then(|| {
                    Box::new(Extra {
                        username: start.username,
                        will: start.will,
                        mount_point: start.mount_point,
                        bridge: start.bridge,
                        ..Extra::default()
                    })
                });
        let mut s = Session {
            state,
            version: start.version,
            client_id: start.client_id,
            keep_alive: start.keep_alive,
            limits: start.limits,
            last_received: now,
            busy: None,
            close: None,
            access: None,
            extra,
        };
        s.resume(now);
        s
    }

    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Default::default)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Gives back the memory of queues that are empty again (the broker calls it when a
    /// round of work is done), so that an idle connection holds none.
    pub fn shrink(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.out.is_empty() && b.effects.is_empty() && b.held.is_empty()) {
            self.busy = None;
        }
    }

    /// The user name the client authenticated as.
    pub fn username(&self) -> Option<&ByteString> {
        self.extra.as_ref()?.username.as_ref()
    }

    /// True for a 3.1 / 3.1.1 client that announced itself as a bridge.
    pub fn is_bridge(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.bridge)
    }

    /// A packet identifier for a packet of the connection's own (a bridge's SUBSCRIBE to its
    /// remote), from the counter of the session's deliveries and not in flight, so that one
    /// counter numbers everything sent on the connection, as mosquitto's does.
    pub fn reserve_packet_id(&mut self) -> u16 {
        self.state.outgoing.reserve_id()
    }

    /// The listener's mount point, if it has one.
    fn mount_point(&self) -> Option<&ByteString> {
        self.extra.as_ref()?.mount_point.as_ref()
    }

    /// A topic or filter the client named, as the broker knows it: under the listener's
    /// mount point (a shared subscription's filter after its `$share/GROUP/`).
    fn mounted(&self, name: ByteString) -> ByteString {
        let Some(mount) = self.mount_point() else { return name };
        if let Ok(Some(midge_codec::SharedFilter { group, filter })) = midge_codec::parse_shared(&name) {
            return ByteString::from(format!("$share/{group}/{mount}{filter}"));
        }
        ByteString::from(format!("{mount}{name}"))
    }

    /// A topic as the client sees it: without the mount point. `None` for a topic outside
    /// it (as mosquitto, such a message is not sent).
    fn unmounted(&self, topic: &ByteString) -> Option<ByteString> {
        let Some(mount) = self.mount_point() else { return Some(topic.clone()) };
        let rest = topic.strip_prefix(&**mount).filter(|r| !r.is_empty())?;
        Some(topic.slice_ref(rest))
    }

    /// Sets what the client may publish, subscribe to and receive (`None`: everything).
    pub fn set_access(&mut self, access: Option<ClientAccess>) {
        self.access = access.map(Box::new);
    }

    /// Whether the ACL in force lets the client publish to `topic` (no ACL: yes).
    fn may_publish(&self, topic: &str) -> bool {
        self.access.as_ref().is_none_or(|a| a.can_publish(topic))
    }

    /// The connection's limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// A packet arrived that the broker holds back for now (backpressure): it counts for the
    /// keep alive at once [MQTT-3.1.2-22], though it is handled later.
    pub fn touch(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// Handles one packet from the client, just received. Its effects wait in
    /// [`Session::poll_effect`].
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) {
        self.touch(now);
        self.handle_deferred(packet, now);
    }

    /// [`Session::handle_deferred`] for a SUBSCRIBE, when the broker has `room` bytes left
    /// under its `memory_limit` (None: no limit): the subscriptions it would add beyond that
    /// are refused in the SUBACK.
    pub fn handle_subscribe_within(&mut self, s: midge_codec::Subscribe, room: Option<usize>) {
        if self.close.is_none() {
            self.on_subscribe(s, room);
        }
    }

    /// Handles one packet that was received earlier (and [`Session::touch`]ed then): the
    /// keep alive counts from its arrival.
    pub fn handle_deferred(&mut self, packet: Packet, now: Instant) {
        if self.close.is_some() {
            return;
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p, now),
            Packet::PubAck(a) => self.on_puback(a.packet_id),
            Packet::PubRec(a) => self.on_pubrec(a.packet_id, a.reason_code),
            Packet::PubComp(a) => self.on_pubcomp(a.packet_id),
            Packet::PubRel(a) => self.on_pubrel(a.packet_id),
            Packet::Subscribe(s) => self.on_subscribe(s, None),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            // [MQTT-3.12.4-1] the Server MUST send a PINGRESP in response to a PINGREQ.
            Packet::PingReq => self.busy().out.push_back(Packet::PingResp),
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

    /// The next effect for the broker to apply, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.busy.as_mut()?.effects.pop_front()
    }

    /// The packets to send, in order.
    pub fn drain_output(&mut self) -> std::collections::vec_deque::Drain<'_, Packet> {
        self.hold_to_client_max_packet_size();
        self.busy().out.drain(..)
    }

    /// [MQTT-3.1.2-24]: nothing larger than the client's Maximum Packet Size is sent. A
    /// PUBLISH too large is dropped where it is made ([MQTT-3.1.2-25], `send_publish`); any
    /// other packet (a SUBACK of many codes, a PUBREL to a client that allows 3 bytes) cannot
    /// be: the connection closes before it, as mosquitto closes it, with DISCONNECT 0x95
    /// Packet too large when that fits.
    fn hold_to_client_max_packet_size(&mut self) {
        let max = self.limits.client_max_packet_size;
        let version = self.version;
        let Some(busy) = self.busy.as_mut().filter(|_| max != usize::MAX && !self.limits.relayed) else {
            return;
        };
        let too_large = busy
            .out
            .iter()
            .enumerate()
            .filter(|(_, p)| !matches!(p, Packet::Publish(_)))
            .map(|(i, p)| (i, p.packet_type(), p.encoded_len(version)))
            .find(|&(_, _, len)| len > max);
        if let Some((i, kind, len)) = too_large {
            busy.out.truncate(i);
            let detail =
                format!("a {kind} of {len} bytes is larger than its Maximum Packet Size ({max} bytes)");
            self.close(CloseReason::protocol(ReasonCode::PacketTooLarge, detail));
        }
    }

    /// True when packets wait to be sent.
    pub fn has_output(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| !b.out.is_empty())
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

    /// When the session next needs the time: the keep alive running out, or the oldest held
    /// acknowledgement reaching [`HOLD_LIMIT`]. One place in the server watches every
    /// session's deadline and calls [`Session::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keep_alive =
            (self.keep_alive > 0).then(|| self.last_received + keep_alive_grace(self.keep_alive));
        let held = self.busy.as_ref().and_then(|b| b.held.front()).map(|h| h.since + HOLD_LIMIT);
        match (keep_alive, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The time has come for something [`Session::poll_timeout`] announced: the keep alive
    /// closes the connection after 1.5 times its value without a packet [MQTT-3.1.2-22]
    /// (3.1.1: [MQTT-3.1.2-24]); acknowledgements held too long go.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.keep_alive > 0 && now >= self.last_received + keep_alive_grace(self.keep_alive) {
            self.close(CloseReason::KeepAliveTimeout);
        }
        self.release_held(now, false);
    }

    /// The DISCONNECT to send a 5.0 client before closing, if the reason calls for one. As
    /// mosquitto, it carries the reason code alone: the details go to the log.
    pub fn disconnect_packet(&self) -> Option<Packet> {
        if !self.version.is_v5() {
            return None;
        }
        let reason = self.close.as_ref()?.server_disconnect()?;
        Some(Packet::Disconnect(midge_codec::Disconnect::new(reason)))
            .filter(|p| p.encoded_len(self.version) <= self.limits.client_max_packet_size)
    }

    /// How many messages were not sent because they exceeded the client's Maximum Packet Size.
    pub fn oversized_dropped(&self) -> u64 {
        self.extra.as_ref().map_or(0, |e| e.oversized_dropped)
    }

    /// Ends the connection: the state that persists, and what becomes of the will. The will
    /// goes on every loss but a normal DISCONNECT [MQTT-3.1.2-8] (3.1.1: [MQTT-3.1.2-10]);
    /// a delayed one waits while the session lives [MQTT-3.1.3-9]. `taken_over`: another
    /// connection has the client id now, so the client is back and a delayed will is dropped,
    /// while an immediate one still goes (the connection was lost without DISCONNECT).
    pub fn end(mut self, taken_over: bool, now: Instant) -> Ending {
        let reason = self.close.take().map_or(CloseReason::Closed, |r| *r);
        let will =
            if reason.publishes_will() { self.extra.as_mut().and_then(|e| e.will.take()) } else { None };
        // Published for the client, the will is checked as its own publish would be, against
        // the ACL in force when it goes, as mosquitto checks it when it sends it: now, and a
        // delayed one again when it is due (`PendingWill::into_will`). One a reload since
        // CONNECT took the topic from goes nowhere.
        let will = will.filter(|w| self.may_publish(&w.topic));
        let delay = will.as_ref().and_then(|w| w.properties.will_delay_interval()).unwrap_or(0);
        let will = match will {
            None => WillPlan::None,
            Some(_) if taken_over && delay > 0 => WillPlan::None,
            Some(will) if delay > 0 && self.state.expiry_interval > 0 && !taken_over => {
                let wait = delay.min(self.state.expiry_interval);
                let due = now + Duration::from_secs(u64::from(wait));
                WillPlan::Delayed { will, due, access: self.access.take() }
            }
            Some(will) => WillPlan::Now(will),
        };
        Ending { client_id: self.client_id, reason, state: self.state, will }
    }
}

/// One and a half times the keep alive.
pub fn keep_alive_grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}
