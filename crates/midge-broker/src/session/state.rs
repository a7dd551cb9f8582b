//! The part of a session that outlives a network connection (section 4.1): subscriptions,
//! messages in flight and queued, retained messages still to send, and the QoS 2 packet
//! identifiers received but not released. Plain data: what persistence stores.
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use bytestring::ByteString;
use midge_codec::{QoS, SubscriptionOptions};

use super::outgoing::Outgoing;
use crate::router::RetainedCursor;

/// The hasher of a session's own maps: zero-sized, so an idle session's empty maps cost
/// nothing. Its keys are the client's own (filters, packet ids): a client that collides them
/// only slows itself.
pub type SessionHasher = BuildHasherDefault<ahash::AHasher>;

/// A subscription as the session remembers it (the router holds the routing copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The options granted.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier (5.0).
    pub id: Option<u32>,
}

/// Retained messages still to send for a subscription: a cursor over the retained store,
/// advanced as the client takes them, never a copy of the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The subscription's filter (not shared: shared subscriptions get no retained messages).
    pub filter: ByteString,
    /// The QoS granted: each message goes at the lower of it and its own.
    pub qos: QoS,
    /// The Subscription Identifier to send with them (5.0).
    pub sub_id: Option<u32>,
    /// Where the replay stands (`None`: at the start).
    pub cursor: Option<RetainedCursor>,
}

/// A session's state between connections.
#[derive(Debug, Default)]
pub struct SessionState {
    /// The session's subscriptions, by filter.
    pub subscriptions: HashMap<ByteString, SubscriptionRecord, SessionHasher>,
    /// Messages to the client: in flight, and waiting for a slot.
    pub outgoing: Outgoing,
    /// Retained messages to send for new subscriptions, one replay per filter.
    pub replays: VecDeque<Replay>,
    /// QoS 2 packet identifiers received and not yet released by PUBREL: a PUBLISH resent with
    /// one of them is not delivered again (section 4.3.3, exactly once).
    pub incoming_qos2: HashSet<u16, SessionHasher>,
    /// Session Expiry Interval in seconds: 0 ends the session with the connection,
    /// `u32::MAX` never expires (a 3.1.1 session without clean session).
    pub expiry_interval: u32,
}

impl SessionState {
    /// A fresh, empty session.
    pub fn new() -> Self {
        SessionState::default()
    }

    /// Starts sending the retained messages of `filter`, or starts again from the beginning
    /// when a replay of it is already under way: a repeated SUBSCRIBE re-sends them
    /// [MQTT-3.8.4-3], but never multiplies what the session holds.
    pub fn replay(&mut self, replay: Replay) {
        match self.replays.iter_mut().find(|r| r.filter == replay.filter) {
            Some(r) => *r = replay,
            None => self.replays.push_back(replay),
        }
    }
}
