//! What a session asks the broker to do: the effects of the client's packets on the shared
//! state. The session decides and the broker applies, to the router and the registry today,
//! to a store and to a cluster next, so the session never reaches into any of them.
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::{QoS, SubscriptionOptions, Will};

use super::close::CloseReason;
use super::message::{Message, StoreEntry};
use super::state::SessionState;

/// One effect, in the order the client's packets caused them.
#[derive(Debug)]
pub enum Effect {
    /// Route a message the client published, storing it first when it is retained. When
    /// `ack` is set, tell the session how routing went with [`super::Session::acknowledge`].
    Publish {
        /// The message.
        message: Arc<Message>,
        /// The acknowledgement waiting for the outcome (QoS 1 and 2).
        ack: Option<PendingAck>,
    },
    /// Add or replace a subscription.
    Subscribe {
        /// The filter, `$share/GROUP/` included.
        filter: ByteString,
        /// The options granted.
        options: SubscriptionOptions,
        /// Its Subscription Identifier (5.0).
        id: Option<u32>,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// The filter.
        filter: ByteString,
    },
    /// A message recorded in the store for this (persistent) session moved on.
    Delivery(DeliveryEvent),
    /// A QoS 2 message was received: its packet identifier is held until PUBREL (exactly
    /// once, section 4.3.3).
    Qos2Received(u16),
    /// PUBREL released a QoS 2 packet identifier.
    Qos2Released(u16),
}

/// Where a message recorded in the store (its `entry`) stands for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// Sent (QoS 1 or 2) with this packet identifier: a resend after a restart uses the same
    /// one (at QoS 2 it must, or the client could take it for a new message).
    Sent {
        /// The store entry.
        entry: StoreEntry,
        /// The packet identifier.
        packet_id: u16,
    },
    /// PUBREC received: PUBREL goes next, and after a restart PUBREL again, never the PUBLISH.
    Released {
        /// The store entry.
        entry: StoreEntry,
        /// The packet identifier.
        packet_id: u16,
    },
    /// Delivered (acknowledged, refused, expired or not allowed): the entry goes.
    Done {
        /// The store entry.
        entry: StoreEntry,
    },
}

/// The PUBACK or PUBREC a routed message waits for: the session's to send, once the broker
/// says how routing went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingAck {
    pub(super) packet_id: u16,
    pub(super) qos: QoS,
}

/// What becomes of the will when a connection ends.
#[derive(Debug)]
pub enum WillPlan {
    /// No will is published.
    None,
    /// Publish it now.
    Now(Will),
    /// Publish it at `due` unless the client is back first (5.0 Will Delay Interval):
    /// after the delay, or when the session ends if that is sooner [MQTT-3.1.3-9].
    Delayed {
        /// The will.
        will: Will,
        /// When.
        due: Instant,
        /// The client's rights, asked again when it is due.
        access: Option<Box<crate::auth::ClientAccess>>,
    },
}

/// A session at the end of its connection: what the broker parks, hands over or discards.
#[derive(Debug)]
pub struct Ending {
    /// The client identifier.
    pub client_id: ByteString,
    /// Why it ended.
    pub reason: CloseReason,
    /// The state that persists (when its expiry interval is above 0).
    pub state: SessionState,
    /// The will.
    pub will: WillPlan,
}
