//! A client connects and leaves: the CONNECT decisions, the CONNACK, and the session's
//! life across connections (new, resumed, taken over, parked, discarded).
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{ConnAck, Connect, Packet, Properties, Property, ProtocolVersion, QoS, ReasonCode};
use tokio::sync::oneshot;

use super::login::{Authenticated, Recheck, Refusal};
use super::{Broker, Link, Owned};
use crate::auth::{ClientAccess, Enhanced};
use crate::control::{Control, ControlSlot};
use crate::mailbox::{QueueLimits, SessionHandle};
use crate::registry::{Attach, Detached, PendingWill};
use crate::router::too_deep;
use crate::session::{ConnectionLimits, Ending, Session, SessionState, Start, WillPlan};

/// The outcome of [`Broker::open`].
#[derive(Debug)]
pub enum Opening {
    /// Connected: send the CONNACK first, then serve the link.
    Ready {
        /// The session, linked to the broker, with anything to resend already queued.
        link: Box<Link>,
        /// The CONNACK.
        connack: Packet,
        /// The client's clean start flag (for the log).
        clean_start: bool,
    },
    /// Refused: send the CONNACK (it carries the reason) and close.
    Refused(Refusal),
    /// Another connection holds the client id and has been told to hand the session over.
    TakeOver(Box<PendingOpen>),
}

/// What a session starts from once its client id is free.
#[derive(Debug)]
struct StartParams {
    connect: Connect,
    plan: ConnectPlan,
    username: Option<ByteString>,
    access: Option<ClientAccess>,
    enhanced: Option<(Enhanced, Option<Bytes>)>,
    recheck: Recheck,
    conn_id: u64,
    control: Arc<ControlSlot>,
}

/// A CONNECT waiting for the old connection of its client id to hand the session over.
#[derive(Debug)]
pub struct PendingOpen {
    start: StartParams,
    /// Resolves with the old session.
    pub old: oneshot::Receiver<Owned>,
    /// Cluster mode: the session is asked of another node, which may have none; the flag the
    /// connection sets when it stops waiting ([`crate::cluster::Fetch::gave_up`]).
    pub remote: Option<crate::cluster::GaveUp>,
}

impl PendingOpen {
    /// The client id being taken over.
    pub fn client_id(&self) -> &ByteString {
        &self.start.plan.client_id
    }
}

/// What the broker decided about a CONNECT it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPlan {
    /// The client id, as sent or as assigned.
    pub client_id: ByteString,
    /// True when the broker assigned the id.
    pub assigned: bool,
    /// The keep alive in force.
    pub keep_alive: u16,
    /// The Server Keep Alive to announce (5.0), when it differs from the client's.
    pub server_keep_alive: Option<u16>,
    /// The Session Expiry Interval.
    pub expiry_interval: u32,
    /// The connection's limits.
    pub limits: ConnectionLimits,
    /// The Response Information to announce (5.0), if the client asked and one is set.
    pub response_information: Option<ByteString>,
    /// The listener's mount point, if any.
    pub mount_point: Option<ByteString>,
}

impl Broker {
    /// `accept_protocol_versions`: checked first, before any password, as mosquitto 2.1
    /// does (5.0 0x84, 3.1.1 0x01 unacceptable protocol version).
    pub fn check_protocol_version(&self, c: &Connect, listener: usize) -> Result<(), Refusal> {
        if self.listener_options(listener).accepts(c.protocol) {
            Ok(())
        } else {
            Err(Refusal::new(
                ReasonCode::UnsupportedProtocolVersion,
                "its protocol version is not in the listener's accept_protocol_versions",
            ))
        }
    }

    /// Decides whether a CONNECT is accepted, and on what terms. `Err` is the reason code of
    /// the refusal (sent as the nearest 3.1.1 return code to 3.1.1 clients).
    /// `listener`: the index of the listener it came in on.
    pub fn plan_connect(&self, c: &Connect, listener: usize) -> Result<ConnectPlan, Refusal> {
        let v5 = c.protocol.is_v5();
        let props = &c.properties;
        let options = self.listener_options(listener);
        if v5 && props.authentication_data().is_some() && props.authentication_method().is_none() {
            // 3.1.2.11.10: Authentication Data without a method is a Protocol Error.
            return Err(Refusal::new(ReasonCode::ProtocolError, "authentication data without a method"));
        }
        let (client_id, assigned) = if c.client_id.is_empty() {
            let scope = self.scope(listener).settings();
            if c.protocol == ProtocolVersion::V3_1 || (!c.clean_start && !v5) {
                // 3.1 needs 1 to 23 characters; [MQTT-3.1.3-8] (3.1.1): an empty id needs
                // clean session, else 0x02.
                return Err(Refusal::new(
                    ReasonCode::ClientIdentifierNotValid,
                    "an empty client id needs clean session",
                ));
            }
            if !scope.zero_length_clientid_allowed() {
                // allow_zero_length_clientid false: as mosquitto, 3.1.1 0x02, 5.0 0x80.
                let code =
                    if v5 { ReasonCode::UnspecifiedError } else { ReasonCode::ClientIdentifierNotValid };
                return Err(Refusal::new(
                    code,
                    "empty client ids are not allowed (allow_zero_length_clientid)",
                ));
            }
            // [MQTT-3.1.3-6] (5.0: [MQTT-3.1.3-6] too, whatever Clean Start says): the Server
            // assigns a unique ClientID.
            (self.assign_client_id(scope.id_prefix()), true)
        } else {
            // A copy: a slice of the CONNECT would keep the whole read buffer under it alive
            // for the life of the session.
            (ByteString::from(c.client_id.to_string()), false)
        };
        if let Some(w) = &c.will {
            if too_deep(&w.topic) {
                // More levels than the broker walks: 0x90 Topic Name invalid for 5.0 (the
                // topic is well formed but not accepted, section 3.2.2.2); 3.1.1 has no code
                // for it, and the connection closes without CONNACK, as mosquitto closes it.
                let why = "will topic with more than 200 levels";
                return Err(if c.protocol.is_v5() {
                    Refusal::new(ReasonCode::TopicNameInvalid, why)
                } else {
                    Refusal::silent(why)
                });
            }
            if self.memory.reached() {
                // A will is kept until it is published (with its session, parked, for its
                // delay): none is taken past memory_limit, as mosquitto refuses a client when
                // it is out of memory. 5.0: 0x97 Quota exceeded; 3.1.1: server unavailable.
                let code = if v5 { ReasonCode::QuotaExceeded } else { ReasonCode::ServerUnavailable };
                return Err(Refusal::new(code, "the broker is at its memory_limit"));
            }
            if w.topic.starts_with("$CONTROL/") {
                // mosquitto's topics for commands to the broker (its plugins): a will there is
                // refused as mosquitto refuses it, by closing the connection.
                return Err(Refusal::silent("will topic under $CONTROL/"));
            }
            let limit = self.config.message_size_limit;
            if limit > 0 && w.payload.len() > limit as usize {
                // As mosquitto: a will larger than message_size_limit is refused, 5.0 0x95,
                // 3.1.1 0x05 Not authorized.
                let code = if v5 { ReasonCode::PacketTooLarge } else { ReasonCode::NotAuthorized };
                return Err(Refusal::new(code, "the will payload is above message_size_limit"));
            }
            // 5.0: a will the server cannot honour is refused: [MQTT-3.2.2-12] (QoS, 0x9B) and
            // [MQTT-3.2.2-13] (retain, 0x9A). 3.1.1 has no code for it: connect() downgrades such a will.
            if v5 && w.qos > options.max_qos {
                return Err(Refusal::new(ReasonCode::QoSNotSupported, "the will QoS is above max_qos"));
            }
            if v5 && w.retain && !self.config.retain_available {
                return Err(Refusal::new(
                    ReasonCode::RetainNotSupported,
                    "retained messages are not available",
                ));
            }
        }
        // As mosquitto 2.0.20: with max_keepalive set, a keep alive above it, or none (0),
        // is replaced by it. A 5.0 client is told so with Server Keep Alive
        // [MQTT-3.2.2-21]/[MQTT-3.1.2-21]; 3.1.1 cannot be told to use another keep alive, so
        // such a client is refused with "identifier rejected".
        let (keep_alive, server_keep_alive) = match self.config.max_keepalive {
            Some(max) if c.keep_alive > max || c.keep_alive == 0 => {
                if !v5 {
                    let why = if c.keep_alive == 0 {
                        "no keep alive, and max_keepalive is set"
                    } else {
                        "the keep alive is above max_keepalive"
                    };
                    return Err(Refusal::new(ReasonCode::ClientIdentifierNotValid, why));
                }
                (max, Some(max))
            }
            _ => (c.keep_alive, None),
        };
        let expiry_interval = if v5 {
            props.session_expiry_interval().unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let window = usize::from(self.config.inflight_window());
        let limits = ConnectionLimits {
            max_inflight: window.min(usize::from(props.receive_maximum().unwrap_or(u16::MAX))),
            receive_maximum: window,
            client_max_packet_size: props.maximum_packet_size().map_or(usize::MAX, |n| n as usize),
            topic_alias_maximum: if v5 { options.max_topic_alias } else { 0 },
            client_topic_alias_maximum: if v5 { props.topic_alias_maximum().unwrap_or(0) } else { 0 },
            max_qos: options.max_qos,
            retain_available: self.config.retain_available,
            max_inflight_bytes: u32::try_from(self.config.max_inflight_bytes).unwrap_or(u32::MAX),
            max_payload: match self.config.message_size_limit {
                0 => u32::MAX,
                n => n,
            },
            upgrade_outgoing_qos: self.config.upgrade_outgoing_qos,
            peer_max_qos: midge_codec::QoS::ExactlyOnce,
            relayed: false,
        };
        // Request / response (4.10): a client that asks gets a topic prefix of its own.
        let response_information = (v5 && props.request_response_information() == Some(1))
            .then(|| {
                self.config
                    .response_information
                    .as_ref()
                    .map(|p| ByteString::from(format!("{p}{client_id}/")))
            })
            .flatten();
        Ok(ConnectPlan {
            client_id,
            assigned,
            keep_alive,
            server_keep_alive,
            expiry_interval,
            limits,
            response_information,
            mount_point: options.mount_point.clone(),
        })
    }

    /// The CONNACK accepting a connection. Its 5.0 properties are those mosquitto sends, in
    /// its order (clients and tests compare the bytes): Server Keep Alive, Topic Alias
    /// Maximum, Assigned Client Identifier, the authentication method and its data, then
    /// what differs from the defaults (Retain Available, Maximum Packet Size, Receive
    /// Maximum, Maximum QoS), and last midge's Response Information.
    pub fn connack(
        &self,
        version: ProtocolVersion,
        plan: &ConnectPlan,
        session_present: bool,
        enhanced: Option<&(Enhanced, Option<Bytes>)>,
    ) -> ConnAck {
        let mut properties = Properties::new();
        if version.is_v5() {
            if let Some(k) = plan.server_keep_alive {
                properties.push(Property::ServerKeepAlive(k));
            }
            if plan.limits.topic_alias_maximum > 0 {
                properties.push(Property::TopicAliasMaximum(plan.limits.topic_alias_maximum));
            }
            if plan.assigned {
                // [MQTT-3.2.2-16]: the identifier the broker assigned.
                properties.push(Property::AssignedClientIdentifier(plan.client_id.clone()));
            }
            if let Some((e, data)) = enhanced {
                // The method, and its last data, in CONNACK (section 4.12).
                properties.push(Property::AuthenticationMethod(e.method.name().to_owned().into()));
                if let Some(d) = data.as_ref().filter(|d| !d.is_empty()) {
                    properties.push(Property::AuthenticationData(d.clone()));
                }
            }
            if !self.config.retain_available {
                properties.push(Property::RetainAvailable(0));
            }
            if self.config.max_packet_size > 0 {
                properties.push(Property::MaximumPacketSize(self.config.max_packet_size));
            }
            if plan.limits.receive_maximum < usize::from(u16::MAX) {
                properties.push(Property::ReceiveMaximum(plan.limits.receive_maximum as u16));
            }
            push_maximum_qos(&mut properties, plan.limits.max_qos);
            if let Some(info) = &plan.response_information {
                properties.push(Property::ResponseInformation(info.clone()));
            }
        }
        // [MQTT-3.2.2-2]/[MQTT-3.2.2-3]: Session Present tells whether a session was resumed.
        ConnAck { session_present, reason_code: ReasonCode::Success, properties }
    }

    /// The CONNACK refusing a connection on `listener`, if the client gets one
    /// ([`Refusal::connack_for`]). As mosquitto, a 5.0 refusal carries no Reason String (the
    /// log says why), only the Maximum QoS when it is below 2.
    pub fn refusal_connack(
        &self,
        refusal: &Refusal,
        version: ProtocolVersion,
        listener: usize,
    ) -> Option<ConnAck> {
        let mut ack = refusal.connack_for(version)?;
        if version.is_v5() {
            push_maximum_qos(&mut ack.properties, self.listener_options(listener).max_qos);
        }
        Some(ack)
    }

    /// Opens a session for an accepted or refused CONNECT. `control` is the slot through
    /// which this connection will be told to give its session up. When another connection
    /// holds the client id, the result is [`Opening::TakeOver`]: await the old session, then
    /// call [`Broker::finish_takeover`].
    pub fn open(
        self: &Arc<Self>,
        connect: Connect,
        auth: Authenticated,
        conn_id: u64,
        control: Arc<ControlSlot>,
        now: Instant,
    ) -> Opening {
        match self.plan_connect(&connect, auth.listener).and_then(|plan| self.identify(plan, &auth)) {
            Ok(plan) => self.open_planned(connect, plan, auth, conn_id, control, now, true),
            // [MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]): a refusal has Session Present 0.
            Err(r) => Opening::Refused(r),
        }
    }

    /// The client id options of the client's listener, once it is authenticated:
    /// `use_username_as_clientid` (the id is the user name) and `clientid_prefixes`, as
    /// mosquitto applies them (a refusal is Not authorized).
    fn identify(&self, mut plan: ConnectPlan, auth: &Authenticated) -> Result<ConnectPlan, Refusal> {
        let configured = self.scope(auth.listener).configured.load();
        let settings = &configured.settings;
        if settings.use_username_as_clientid {
            let Some(user) = auth.username() else {
                return Err(Refusal::new(
                    ReasonCode::NotAuthorized,
                    "use_username_as_clientid: a client without a user name",
                ));
            };
            // A copy, as any client id: not a slice of the CONNECT.
            plan.client_id = ByteString::from(&**user);
            plan.assigned = false;
        }
        if let Some(prefix) = &settings.clientid_prefixes {
            if !plan.client_id.starts_with(prefix.as_str()) {
                return Err(Refusal::new(
                    ReasonCode::NotAuthorized,
                    "the client id does not begin with clientid_prefixes",
                ));
            }
        }
        Ok(plan)
    }

    /// [`Broker::open`] on terms already decided (a bridge's session decides its own).
    /// `roaming`: in cluster mode, a session of the client id may be on another node (not
    /// for a bridge: each node's bridge is its own).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_planned(
        self: &Arc<Self>,
        connect: Connect,
        plan: ConnectPlan,
        auth: Authenticated,
        conn_id: u64,
        control: Arc<ControlSlot>,
        now: Instant,
        roaming: bool,
    ) -> Opening {
        let mut connect = connect;
        if let (Some(mount), Some(w)) = (&plan.mount_point, &mut connect.will) {
            // The will is published under the listener's mount point, as the client's messages.
            w.topic = ByteString::from(format!("{mount}{}", w.topic));
        }
        if connect.protocol.is_v5()
            && connect.properties.authentication_method().is_some()
            && auth.enhanced.is_none()
        {
            // A method asked for but not gone through (Broker::begin_enhanced).
            return Opening::Refused(Refusal::new(
                ReasonCode::BadAuthenticationMethod,
                "unsupported authentication method",
            ));
        }
        let access = auth.security.load().acl().is_some().then(|| {
            ClientAccess::new(
                auth.security.clone(),
                auth.username.as_ref().map(|u| u.to_string()),
                plan.client_id.to_string(),
                auth.listener,
            )
        });
        // A will on a topic the client may not publish to is accepted, as mosquitto 2.0
        // accepts it, and checked against the ACL in force when it goes (`Session::end`,
        // `PendingWill::into_will`): nowhere, unless a reload gave the client that topic. The
        // cluster does not keep it (`Broker::start`).
        let recheck = auth.recheck();
        let start = StartParams {
            connect,
            plan,
            username: auth.username,
            access,
            enhanced: auth.enhanced,
            recheck,
            conn_id,
            control,
        };
        let attached = self.registry.attach(
            &start.plan.client_id,
            conn_id,
            &start.control,
            start.connect.clean_start,
            now,
        );
        match attached {
            Attach::Fresh => self.start_without_session(start, roaming, now),
            Attach::Parked(unparked) => match self.unparked(&start.plan.client_id, unparked, now) {
                Some(owned) => self.start(start, Some(owned), now),
                // Over: as if there were none here.
                None => self.start_without_session(start, roaming, now),
            },
            Attach::TakeOver(rx) => Opening::TakeOver(Box::new(PendingOpen { start, old: rx, remote: None })),
        }
    }

    /// No session of the client id here: a new one, or in cluster mode (without clean start)
    /// the one another node may have.
    fn start_without_session(self: &Arc<Self>, start: StartParams, roaming: bool, now: Instant) -> Opening {
        if roaming && !start.connect.clean_start {
            if let Some(outbox) = self.cluster_outbox() {
                let (old, gave_up) = outbox.fetch_session(&start.plan.client_id);
                return Opening::TakeOver(Box::new(PendingOpen { start, old, remote: Some(gave_up) }));
            }
        }
        self.start(start, None, now)
    }

    /// Completes an [`Opening::TakeOver`] once the old connection has handed its session
    /// over (`None` if it never did).
    pub fn finish_takeover(
        self: &Arc<Self>,
        pending: PendingOpen,
        old: Option<Owned>,
        now: Instant,
    ) -> Opening {
        self.start(pending.start, old, now)
    }

    fn start(self: &Arc<Self>, params: StartParams, found: Option<Owned>, now: Instant) -> Opening {
        let StartParams { mut connect, plan, username, access, enhanced, recheck, conn_id, control } = params;
        // What the session keeps of the CONNECT is its own: a slice would keep the whole packet
        // (up to 100 kB, user properties and all) alive with the session, and after it while
        // its will waits.
        let username = username.map(|u| ByteString::from(&*u));
        if let Some(w) = &mut connect.will {
            // 3.1.1 cannot be told a will QoS or retain is unsupported (5.0 was refused in
            // plan_connect): the will is kept at what the broker supports.
            w.qos = w.qos.min(plan.limits.max_qos);
            w.retain &= self.config.retain_available;
            w.topic = ByteString::from(&*w.topic);
            w.payload = Bytes::copy_from_slice(&w.payload);
            w.properties = w.properties.detached();
        }
        let (owned, session_present) = match found {
            // [MQTT-3.1.2-4] (3.1.1: [MQTT-3.1.2-6]): clean start discards any existing session.
            // A session taken over from a connection whose session ends with it (clean
            // session, or expiry 0) is not resumed either: it ended with that connection.
            Some(mut old) if connect.clean_start || old.state.expiry_interval == 0 => {
                // What it held from shared subscriptions goes to another member (5.0
                // section 4.8.2), as when a session ends with its connection.
                self.redistribute_shared(&mut old, true);
                self.discard(old);
                (self.new_session(&plan.client_id), false)
            }
            // Resumed: what its last connection left unsent at QoS 0 is not (a takeover
            // brings it here, and a publisher that saw the session online may have queued one
            // after it was parked).
            Some(mut old) => {
                drop_unsent_qos0(&mut old);
                (old, true)
            }
            None => (self.new_session(&plan.client_id), false),
        };
        let Owned { mut state, handle } = owned;
        state.expiry_interval = plan.expiry_interval;
        handle.set_online(true);
        let was_persistent = handle.is_persistent();
        handle.set_persistent(state.expiry_interval > 0);
        if state.expiry_interval > 0 {
            self.persist_session(&plan.client_id, &state, was_persistent);
        } else if let Some(j) = self.journal().filter(|_| was_persistent) {
            // Resumed, but to end with this connection (5.0 expiry 0): its records go now.
            let held: Vec<_> = state.outgoing.inflight().map(|f| f.delivery.clone()).collect();
            let mut all = held;
            all.extend(state.outgoing.pending.iter().cloned());
            j.forget(&plan.client_id, &state, &all);
            for d in state.outgoing.pending.iter_mut() {
                d.entry = None;
            }
        }
        let connack = self.connack(connect.protocol, &plan, session_present, enhanced.as_ref());
        self.cluster_opened(&plan.client_id, conn_id);
        let kept_will = connect.will.as_ref().filter(|w| {
            let allowed = access.as_ref().is_none_or(|a| a.can_publish(&w.topic));
            if !allowed && self.cluster_outbox().is_some() {
                tracing::debug!(
                    "Cluster: the will of {} is not kept in the cluster: the ACL does not let it publish to {}.",
                    plan.client_id,
                    w.topic
                );
            }
            allowed
        });
        if let (Some(outbox), Some(w)) = (self.cluster_outbox(), kept_will) {
            // Kept in the cluster only when the ACL lets the client publish it: the node that
            // publishes it if this one dies cannot ask (it has not the client's rights), so
            // it goes there on the rights of the CONNECT. Due when the will delay or the
            // session expiry ends, whichever is first.
            let delay = w.properties.will_delay_interval().unwrap_or(0).min(plan.expiry_interval);
            outbox.will(&plan.client_id, conn_id, w, delay);
        }
        let start = Start {
            client_id: plan.client_id,
            version: connect.protocol,
            keep_alive: plan.keep_alive,
            will: connect.will,
            username,
            limits: plan.limits,
            mount_point: plan.mount_point,
            bridge: connect.bridge && !connect.protocol.is_v5(),
        };
        let mut session = Session::new(state, start, now);
        session.set_access(access);
        session.set_enhanced(enhanced.map(|(e, _)| e));
        let link = Link::new(self.clone(), session, handle, control, conn_id, recheck);
        link.watch_timers();
        Opening::Ready {
            link: Box::new(link),
            connack: Packet::ConnAck(connack),
            clean_start: connect.clean_start,
        }
    }

    /// A new session's handle, with the broker's queue settings.
    pub(crate) fn session_handle(&self, client_id: &ByteString) -> Arc<SessionHandle> {
        let limits =
            QueueLimits { messages: self.config.max_queued_messages, bytes: self.config.max_queued_bytes };
        let handle = SessionHandle::new(client_id.clone(), limits);
        // queue_qos0_messages (3.1.1 section 3.1.2.4: QoS 0 messages MAY be stored).
        handle.set_queues_qos0_offline(self.config.queue_qos0_messages);
        handle
    }

    fn new_session(&self, client_id: &ByteString) -> Owned {
        Owned { state: SessionState::new(), handle: self.session_handle(client_id) }
    }

    /// Ends a connection's hold on its session ([`Link::finish`]). The will is published
    /// now, after its delay (while the session is parked), or not at all when the client
    /// reconnects first. The session is parked (persistent), handed to the connection that
    /// took the client id over (`handover`, or a request found in `control`), or discarded.
    pub(crate) fn end_connection(
        &self,
        ending: Ending,
        handle: Arc<SessionHandle>,
        conn_id: u64,
        mut handover: Option<oneshot::Sender<Owned>>,
        control: &ControlSlot,
        now: Instant,
    ) {
        let Ending { client_id, state, will, .. } = ending;
        if let Some(outbox) = self.cluster_outbox() {
            // Whatever becomes of the will now is this node's doing.
            outbox.closed(&client_id, conn_id);
        }
        let mut owned = Owned { state, handle };
        let (pending, will_now) = match will {
            WillPlan::None => (None, None),
            WillPlan::Now(w) => (None, Some(w)),
            WillPlan::Delayed { will, due, access } => (Some(PendingWill::new(will, due, access)), None),
        };
        if handover.is_none() {
            let expiry = owned.state.expiry_interval;
            self.redistribute_shared(&mut owned, expiry == 0);
            drop_unsent_qos0(&mut owned);
            let expires_at = self.expiry_from(now, expiry);
            if expiry > 0 {
                if let Some(j) = self.journal() {
                    j.session(
                        &client_id,
                        expiry,
                        owned.state.outgoing.last_id(),
                        Some((expires_at, pending.as_ref())),
                    );
                }
            }
            match self.registry.detach(&client_id, conn_id, owned, pending, expires_at) {
                Detached::Parked(wake) => {
                    for at in wake {
                        self.timers.park(client_id.clone(), at);
                    }
                    self.cluster_parked(&client_id);
                    if let Some(w) = will_now {
                        self.publish_will(w, &client_id, now);
                    }
                    return;
                }
                Detached::Ended(o) => {
                    if let Some(w) = will_now {
                        self.publish_will(w, &client_id, now);
                    }
                    self.discard(o);
                    return;
                }
                // Taken over meanwhile: the client is back, so a delayed will is dropped
                // [MQTT-3.1.3-9]. The new connection's request is already in the control
                // slot (sent under the registry lock).
                Detached::NotHolder(o) => owned = o,
            }
            if let Some(Control::TakeOver(reply)) = control.try_recv() {
                handover = Some(reply);
            }
        }
        // Taken over: the will goes only when the session ends (it ended with this
        // connection, or the new one starts clean), as mosquitto does. A session that goes on
        // has its client back before the will was due [MQTT-3.1.2-8].
        if let Some(w) = will_now {
            if owned.state.expiry_interval == 0 || self.registry.holder_starts_clean(&client_id) {
                self.publish_will(w, &client_id, now);
            }
        }
        match handover {
            Some(reply) => {
                if let Err(owned) = reply.send(owned) {
                    self.discard(owned);
                }
            }
            None => self.discard(owned),
        }
    }
}

/// Drops the QoS 0 messages not yet written to the connection that went, as mosquitto does
/// (with `queue_qos0_messages` false, the default, it keeps none for a client that is not
/// connected; 3.1.1 section 3.1.2.4: QoS 0 messages pending are kept "optionally"): the client
/// back gets what was published since, not what its last connection left unread. Those of a
/// shared subscription went to another member first, when one had room. Kept with
/// `queue_qos0_messages` and for a lazy bridge.
fn drop_unsent_qos0(owned: &mut Owned) {
    if !owned.handle.queues_qos0_offline() {
        owned.handle.mailbox.drop_qos0();
        owned.state.outgoing.drop_pending_qos0();
    }
}

/// Maximum QoS, said only when below 2 (the default) [MQTT-3.2.2-9].
fn push_maximum_qos(properties: &mut Properties, max_qos: QoS) {
    if max_qos < QoS::ExactlyOnce {
        properties.push(Property::MaximumQoS(max_qos.as_u8()));
    }
}
