//! Per-client protocol state, kept apart from I/O: a [`Session`] takes decoded packets,
//! deliveries and the current time, and produces packets to send and a reason to close.
//! Nothing here reads a clock or touches a socket, so tests drive it directly.
mod mailbox;
mod message;
mod outgoing;
mod protocol;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use midge_codec::SubscriptionOptions;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

pub use mailbox::{Mailbox, Push};
pub use message::{Delivery, Message};
pub use outgoing::Outgoing;
pub use protocol::{CloseReason, ConnectionLimits, Session};

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// The hasher of a session's own maps: zero-sized, so an idle session's empty maps cost
/// nothing. Its keys are the client's own (filters, packet ids): a client that collides them
/// only slows itself.
pub type SessionHasher = BuildHasherDefault<ahash::AHasher>;

/// What the rest of the broker holds of a session: its identity and its mailbox. The router
/// keeps one per subscription; publishers push into the mailbox from any thread.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique for the life of the process (a new session for the same client id gets a new one).
    pub id: u64,
    /// The client identifier.
    pub client_id: ByteString,
    /// Deliveries waiting for the session.
    pub mailbox: Mailbox,
    online: AtomicBool,
}

impl SessionHandle {
    /// A new session's handle with a mailbox of `capacity` deliveries.
    pub fn new(client_id: ByteString, capacity: usize) -> Arc<Self> {
        Arc::new(SessionHandle {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            client_id,
            mailbox: Mailbox::new(capacity),
            online: AtomicBool::new(false),
        })
    }

    /// Whether a network connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the session as attached to a connection, or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }
}

/// A subscription as the session remembers it (the router holds the routing copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The options granted.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier (5.0).
    pub id: Option<u32>,
}

/// The part of a session that outlives a network connection (section 4.1): subscriptions,
/// messages in flight and queued, and the QoS 2 packet identifiers received but not released.
#[derive(Debug)]
pub struct SessionState {
    /// The handle shared with the router.
    pub handle: Arc<SessionHandle>,
    /// The session's subscriptions, by filter.
    pub subscriptions: HashMap<ByteString, SubscriptionRecord, SessionHasher>,
    /// Messages to the client: in flight, and waiting for a slot.
    pub outgoing: Outgoing,
    /// QoS 2 packet identifiers received and not yet released by PUBREL: a PUBLISH resent with
    /// one of them is not delivered again (section 4.3.3, exactly once).
    pub incoming_qos2: HashSet<u16, SessionHasher>,
    /// Session Expiry Interval in seconds: 0 ends the session with the connection,
    /// `u32::MAX` never expires (a 3.1.1 session without clean session).
    pub expiry_interval: u32,
}

impl SessionState {
    /// A fresh, empty session.
    pub fn new(handle: Arc<SessionHandle>) -> Self {
        SessionState {
            handle,
            subscriptions: HashMap::default(),
            outgoing: Outgoing::default(),
            incoming_qos2: HashSet::default(),
            expiry_interval: 0,
        }
    }
}
