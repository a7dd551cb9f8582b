//! Cluster mode: several midge nodes share one MQTT space through NATS with JetStream
//! (`cluster_*` options). What is decided without I/O is here: how topics become subjects
//! ([`subject`]), what travels in headers ([`wire`]), which filters the node holds
//! ([`interest`]) and which messages it has seen ([`dedup`]). The task that talks to NATS is
//! `server/cluster.rs`; it sits beside the router as a bridge does, never inside a session:
//!
//! - out: a message a local client (or a will) publishes is handed over by
//!   [`Outbox::send`] after local routing. QoS 0 is published on core NATS under its
//!   topic's subject (at most once). QoS 1 and 2 go to the JetStream stream `MIDGE_QOS`,
//!   and the publisher's PUBACK or PUBREC waits for JetStream's acknowledgement
//!   ([`acks`]); every node tails that stream with one durable consumer and routes what
//!   other nodes published, acknowledging it once the local store has it (at least once
//!   across nodes, and no QoS 2 duplicate: the stream position is stored with the copies).
//!   A retained message also goes to the retained stream. A node whose NATS link is behind
//!   holds its publishers back ([`OUTBOX_CAPACITY`]) rather than dropping what they send;
//! - in: the node subscribes on NATS to the subjects of the filters its local sessions hold
//!   (counted, [`interest`]); what arrives is routed by the local router (never stored as
//!   retained, never sent back out), once however many of its subscriptions match
//!   ([`dedup`]); a node never gets its own messages back (its connection has NATS's
//!   no-echo);
//! - retained messages: a JetStream stream keeps the last message of each topic's subject;
//!   every node reads it whole at start and follows it, into its own retained store;
//! - wills: the wills of a node's connections are kept in a key-value bucket ([`wills`]) and
//!   published by another node when the node stops saying it is alive.
//!
//! With no `cluster_*` options nothing of this runs: the router's hook and the outbox are
//! never set, so a single node pays a branch on an empty `OnceLock` per publish, and none
//! per delivery.
pub mod acks;
pub mod dedup;
pub mod handoff;
pub mod interest;
pub mod ownership;
pub mod parked;
pub mod subject;
pub mod wills;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::session::Message;

/// Messages handed to the cluster and not yet done with (published on NATS for QoS 0,
/// acknowledged by JetStream for QoS 1 and 2), past which the connections that publish
/// more wait (their client's publishes are not read) until [`OUTBOX_RESUME`]: a node whose
/// NATS link is behind slows its publishers down instead of dropping their messages.
pub const OUTBOX_CAPACITY: usize = 65_536;
/// Where publishers held back by a full outbox go on.
pub const OUTBOX_RESUME: usize = OUTBOX_CAPACITY * 3 / 4;

/// A message for the cluster, and its ticket: 0 for QoS 0 (published on core NATS, at most
/// once), else its number among the node's QoS 1 and 2 messages ([`acks`]), which the
/// publisher's acknowledgement waits for.
#[derive(Debug)]
pub struct Outgoing {
    /// The message.
    pub message: Arc<Message>,
    /// Its ticket (0: QoS 0).
    pub ticket: u64,
}

/// A change of the subscriptions local sessions hold, as the router tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A local session subscribed to a filter it did not hold.
    Added(String),
    /// A local session's subscription went.
    Removed(String),
    /// A connection took the client id on this node (the cluster claims it).
    Opened {
        /// The client id.
        client_id: String,
        /// The connection.
        conn_id: u64,
        /// When it was opened, in nanoseconds since the Unix epoch (the latest wins).
        at: u64,
    },
    /// A connection with a will opened here: the cluster keeps the will, for another node
    /// to publish if this one dies.
    Will {
        /// The client id.
        client_id: String,
        /// The connection.
        conn_id: u64,
        /// The will.
        will: Box<midge_codec::Will>,
        /// Seconds after this node's death it is due: the lower of the will delay and the
        /// session expiry.
        delay: u32,
    },
    /// A persistent session parked here (its connection ended): the cluster keeps a copy, for
    /// another node to take if this one is lost.
    Parked {
        /// The client id.
        client_id: String,
    },
    /// A connection with a will ended here (its will is this node's business).
    Closed {
        /// The client id.
        client_id: String,
        /// The connection.
        conn_id: u64,
    },
}

/// What the broker and the cluster task share of the outbox.
#[derive(Debug, Default)]
struct Shared {
    /// Messages handed over and not yet done with.
    waiting: AtomicUsize,
    /// The last ticket handed out.
    tickets: AtomicU64,
    /// The acknowledged tickets, and their floor (read without the lock).
    acks: Mutex<acks::Acks>,
    floor: AtomicU64,
    /// The floor moved.
    acked: Notify,
    /// `waiting` went below [`OUTBOX_RESUME`].
    room: Notify,
    /// QoS 0 messages are being dropped while NATS is away (logged once per episode).
    dropping: AtomicBool,
    /// Held (shared) by a publisher from routing a message to numbering it, and (alone)
    /// while a session's copy is taken or a session is adopted: a message is then either
    /// routed and numbered before, or both after ([`parked`]).
    numbering: parking_lot::RwLock<()>,
    /// Held by the tail while it routes a message of the QoS stream, and while a session is
    /// taken out for another node: the stream position read then is exact.
    routing: parking_lot::Mutex<()>,
    /// Sessions that came from other nodes lately ([`Arrival`]), oldest first (so in the
    /// order of their numbers too), and the highest of their numbers.
    arrivals: parking_lot::Mutex<std::collections::VecDeque<Arrival>>,
    latest_arrival: AtomicU64,
}

/// A session that came from another node: this node's own QoS 1 and 2 messages numbered up
/// to `ticket` were routed here before it was in the router. Those still on their way to
/// the stream reach it from there (the tail routes them to it) for [`ARRIVAL_WINDOW`], and a
/// node it moves on to within that time takes them by stream position
/// ([`parked::Parked::arrived_at`]).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Its client id.
    pub client_id: bytestring::ByteString,
    /// This node's last number when it came.
    pub ticket: u64,
    until: std::time::Instant,
}

/// How long a session that came from another node gets this node's own messages numbered
/// before it came from the stream.
pub const ARRIVAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The broker's end of the channel to the cluster task.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Never full: what bounds it is that publishers wait while [`Outbox::is_full`].
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Subscription changes are never dropped: they are few, and a lost one would leave the
    /// node deaf to a filter for good.
    changes: mpsc::UnboundedSender<Held>,
    /// Sessions asked of the node that has them.
    fetches: mpsc::UnboundedSender<Fetch>,
    shared: Arc<Shared>,
}

/// A connection without clean start whose client id has no session here: the node that
/// had it last hands it over, if there is one ([`handoff`]).
#[derive(Debug)]
pub struct Fetch {
    /// The client id.
    pub client_id: bytestring::ByteString,
    /// Where the session goes; dropped when there is none.
    pub reply: tokio::sync::oneshot::Sender<crate::broker::Owned>,
    /// Set by the connection when it stops waiting (its client gets a new session); the
    /// session is adopted and sent with it held, so that it is either sent in time or not
    /// adopted at all.
    pub gave_up: GaveUp,
    /// When the connection asked ([`ownership::unix_nanos`]): the time of the claim made for
    /// it before its CONNACK (earlier than its own claim's, made after).
    pub at: u64,
}

/// The flag of [`Fetch::gave_up`].
pub type GaveUp = std::sync::Arc<parking_lot::Mutex<bool>>;

/// The cluster task's ends of the outbox.
#[derive(Debug)]
pub struct OutboxReceivers {
    /// Messages to publish.
    pub messages: mpsc::UnboundedReceiver<Outgoing>,
    /// Subscription and connection changes.
    pub held: mpsc::UnboundedReceiver<Held>,
    /// Sessions to ask other nodes for.
    pub fetches: mpsc::UnboundedReceiver<Fetch>,
}

impl Outbox {
    /// The outbox and the cluster task's ends of it.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Outbox, OutboxReceivers) {
        let (tx, messages) = mpsc::unbounded_channel();
        let (changes, held) = mpsc::unbounded_channel();
        let (fetches, fetches_rx) = mpsc::unbounded_channel();
        (
            Outbox { tx, changes, fetches, shared: Arc::default() },
            OutboxReceivers { messages, held, fetches: fetches_rx },
        )
    }

    /// Asks the node that had `client_id`'s session last for it: the receiver gets it, or
    /// is dropped when there is none (or its node does not answer).
    pub fn fetch_session(
        &self,
        client_id: &bytestring::ByteString,
    ) -> (tokio::sync::oneshot::Receiver<crate::broker::Owned>, GaveUp) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let gave_up = GaveUp::default();
        let at = ownership::unix_nanos();
        let _ =
            self.fetches.send(Fetch { client_id: client_id.clone(), reply, gave_up: gave_up.clone(), at });
        (rx, gave_up)
    }

    /// Hands a message published on this node to the cluster; never drops it. Returns its
    /// ticket (0 for QoS 0): the publisher's acknowledgement waits for
    /// [`Outbox::is_acked`] of it.
    pub fn send(&self, message: &Arc<Message>) -> u64 {
        let ticket = if message.qos == midge_codec::QoS::AtMostOnce {
            0
        } else {
            self.shared.tickets.fetch_add(1, Ordering::AcqRel) + 1
        };
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Outgoing { message: message.clone(), ticket }).is_err() {
            // The cluster task is gone (the broker stops): nothing will acknowledge it.
            self.done(ticket);
        }
        ticket
    }

    /// True while so many messages wait that their publishers should wait too.
    pub fn is_full(&self) -> bool {
        self.shared.waiting.load(Ordering::Acquire) >= OUTBOX_CAPACITY
    }

    /// True once the publishers held back by a full outbox may go on.
    pub fn has_room(&self) -> bool {
        self.shared.waiting.load(Ordering::Acquire) < OUTBOX_RESUME
    }

    /// Resolves once [`Outbox::has_room`].
    pub async fn room(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    /// True once JetStream has acknowledged ticket `t` and every one before it.
    pub fn is_acked(&self, t: u64) -> bool {
        self.shared.floor.load(Ordering::Acquire) >= t
    }

    /// Resolves once [`Outbox::is_acked`] of `t`.
    pub async fn acked(&self, t: u64) {
        loop {
            let notified = self.shared.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_acked(t) {
                return;
            }
            notified.await;
        }
    }

    /// The cluster task is done with a message: published (QoS 0, ticket 0), dropped (QoS 0
    /// while NATS is away, or expired) or acknowledged by JetStream (`ticket`).
    pub fn done(&self, ticket: u64) {
        if ticket != 0 {
            let floor = self.shared.acks.lock().ack(ticket);
            // Two threads may finish in either order: the floor only rises.
            if self.shared.floor.fetch_max(floor, Ordering::AcqRel) < floor {
                self.shared.acked.notify_waiters();
            }
        }
        if self.shared.waiting.fetch_sub(1, Ordering::AcqRel) == OUTBOX_RESUME {
            self.shared.room.notify_waiters();
        }
    }

    /// The last ticket handed out.
    pub fn last_ticket(&self) -> u64 {
        self.shared.tickets.load(Ordering::Acquire)
    }

    /// Held by a publisher from routing a message until [`Outbox::send`] numbers it.
    pub fn numbering(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.shared.numbering.read()
    }

    /// A session came from another node when this node's last number was `ticket`.
    pub fn arrived(&self, client_id: &bytestring::ByteString, ticket: u64) {
        let now = std::time::Instant::now();
        let mut arrivals = self.shared.arrivals.lock();
        while arrivals.front().is_some_and(|a| a.until <= now) {
            arrivals.pop_front();
        }
        // An earlier arrival of the same client id stays for its minute too (the list stays in
        // the order of the numbers); `arrived_after` names each session once.
        arrivals.push_back(Arrival { client_id: client_id.clone(), ticket, until: now + ARRIVAL_WINDOW });
        self.shared.latest_arrival.fetch_max(ticket, Ordering::AcqRel);
    }

    /// The number of `client_id`'s arrival here, if within [`ARRIVAL_WINDOW`]; 0 otherwise.
    pub fn arrived_at(&self, client_id: &str) -> u64 {
        let now = std::time::Instant::now();
        let arrivals = self.shared.arrivals.lock();
        arrivals.iter().rev().find(|a| a.until > now && *a.client_id == *client_id).map_or(0, |a| a.ticket)
    }

    /// The sessions that came here after this node numbered `ticket` (within the window):
    /// a message of this node's with that number missed them.
    pub fn arrived_after(&self, ticket: u64) -> Vec<bytestring::ByteString> {
        // Usually nothing came after it: no lock.
        if ticket > self.shared.latest_arrival.load(Ordering::Acquire) {
            return Vec::new();
        }
        let now = std::time::Instant::now();
        let arrivals = self.shared.arrivals.lock();
        let mut missed: Vec<bytestring::ByteString> = arrivals
            .iter()
            .rev()
            .take_while(|a| ticket <= a.ticket)
            .filter(|a| a.until > now)
            .map(|a| a.client_id.clone())
            .collect();
        // One routing per session.
        missed.sort_unstable();
        missed.dedup();
        missed
    }

    /// Held while a message of the QoS stream is routed, or a session is taken out of the
    /// router for another node.
    pub fn routing(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.shared.routing.lock()
    }

    /// Holds every publisher between routing and numbering off: what was routed is numbered
    /// (at or below [`Outbox::last_ticket`]), and what is not numbered is not routed yet.
    pub fn hold_numbering(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.shared.numbering.write()
    }

    /// Whether QoS 0 messages are dropped now (NATS is away); true when that changed, so
    /// that it is logged once per episode.
    pub fn dropping(&self, now: bool) -> bool {
        self.shared.dropping.swap(now, Ordering::AcqRel) != now
    }
}

impl Outbox {
    /// A connection took a client id on this node.
    pub fn opened(&self, client_id: &str, conn_id: u64) {
        let at = ownership::unix_nanos();
        let _ = self.changes.send(Held::Opened { client_id: client_id.to_owned(), conn_id, at });
    }
}

impl Outbox {
    /// A connection with a will opened on this node.
    pub fn will(&self, client_id: &str, conn_id: u64, will: &midge_codec::Will, delay: u32) {
        let _ = self.changes.send(Held::Will {
            client_id: client_id.to_owned(),
            conn_id,
            will: Box::new(will.clone()),
            delay,
        });
    }

    /// A persistent session parked on this node.
    pub fn parked(&self, client_id: &str) {
        let _ = self.changes.send(Held::Parked { client_id: client_id.to_owned() });
    }

    /// A connection with a will ended on this node.
    pub fn closed(&self, client_id: &str, conn_id: u64) {
        let _ = self.changes.send(Held::Closed { client_id: client_id.to_owned(), conn_id });
    }
}

impl crate::router::InterestHook for Outbox {
    fn subscribed(&self, filter: &str) {
        let _ = self.changes.send(Held::Added(filter.to_owned()));
    }

    fn unsubscribed(&self, filter: &str) {
        let _ = self.changes.send(Held::Removed(filter.to_owned()));
    }
}
