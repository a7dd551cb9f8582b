//! A bridge's session on this broker: opened from inside the broker, as a trusted client of
//! its own (no password; the ACL of `local_username` when one is given), on terms the bridge
//! sets (no keep alive: the bridge task drives it; the remote's inflight window).
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{Connect, ProtocolVersion, QoS};

use super::login::{Authenticated, Credentials};
use super::{Broker, ConnectPlan, Opening};
use crate::control::ControlSlot;
use crate::session::ConnectionLimits;

/// The bridge's client on this broker, as its configuration and the remote's CONNACK set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSide {
    /// `local_clientid` (default `local.REMOTE_CLIENTID`).
    pub client_id: String,
    /// `local_username`: the ACL applies to it. Without one the bridge is trusted.
    pub username: Option<String>,
    /// Clean start: a new session, whatever was kept (`local_cleansession`).
    pub clean: bool,
    /// The session outlives the connection: what the remote is to get waits for it while
    /// it is away. Without `local_cleansession`; with it, only while a lazy bridge waits for
    /// its `threshold` (the session then ends with the connection it waited for).
    pub keep: bool,
    /// What the remote takes in flight at once (its Receive Maximum; 3.1.1: the window).
    pub max_inflight: u16,
    /// The largest packet the remote takes (`bridge_max_packet_size`, its Maximum Packet Size).
    pub max_packet: usize,
    /// The highest QoS the remote takes (its CONNACK's Maximum QoS; QoS 2 before it answers).
    pub max_qos: QoS,
}

impl Broker {
    /// Opens (or resumes) a bridge's session, as [`Broker::open`] does for a client.
    pub fn open_bridge(
        self: &Arc<Self>,
        side: &BridgeSide,
        conn_id: u64,
        control: Arc<ControlSlot>,
        now: Instant,
    ) -> Opening {
        let client_id = ByteString::from(side.client_id.as_str());
        let mut connect = Connect::new(ProtocolVersion::V5, client_id.clone());
        connect.clean_start = side.clean;
        connect.keep_alive = 0;
        connect.username = side.username.as_deref().map(ByteString::from);
        let config = &self.config;
        let plan = ConnectPlan {
            client_id,
            assigned: false,
            keep_alive: 0,
            server_keep_alive: None,
            // Kept while the remote is away, as mosquitto keeps its bridges' sessions.
            expiry_interval: if side.keep { u32::MAX } else { 0 },
            limits: ConnectionLimits {
                max_inflight: usize::from(config.inflight_window())
                    .min(usize::from(side.max_inflight.max(1))),
                // The remote's flows are bounded by its own window: the bridge refuses none.
                receive_maximum: usize::from(u16::MAX),
                client_max_packet_size: side.max_packet,
                topic_alias_maximum: 0,
                client_topic_alias_maximum: 0,
                // As mosquitto: a bridge is on no listener, so no listener's max_qos applies.
                max_qos: QoS::ExactlyOnce,
                retain_available: config.retain_available,
                max_inflight_bytes: u32::try_from(config.max_inflight_bytes).unwrap_or(u32::MAX),
                max_payload: match config.message_size_limit {
                    0 => u32::MAX,
                    n => n,
                },
                upgrade_outgoing_qos: config.upgrade_outgoing_qos,
                // What is queued at a higher QoS goes at the remote's maximum [MQTT-3.2.2-11].
                peer_max_qos: side.max_qos,
                relayed: true,
            },
            response_information: None,
            mount_point: None,
        };
        // Trusted: no password check; the ACL only for a `local_username` (the closed scope
        // has no ACL file).
        let security = match &side.username {
            Some(_) => self.scope(0).security.clone(),
            None => self.closed.security.clone(),
        };
        let auth = Authenticated {
            username: connect.username.clone(),
            credentials: Credentials::Verified,
            security,
            enhanced: None,
            listener: 0,
            certificate: None,
        };
        self.open_planned(connect, plan, auth, conn_id, control, now, false)
    }
}
