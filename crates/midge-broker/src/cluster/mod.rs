//! Cluster mode: several midge nodes share one MQTT space through NATS with JetStream
//! (`cluster_*` options). What is decided without I/O is here: how topics become subjects
//! ([`subject`]), what travels in headers ([`wire`]), which filters the node holds
//! ([`interest`]) and which messages it has seen ([`dedup`]). The task that talks to NATS is
//! `server/cluster.rs`; it sits beside the router as a bridge does, never inside a session:
//!
//! - out: a message a local client (or a will) publishes is handed over by
//!   [`Outbox::send`] after local routing, and published on NATS under its topic's subject;
//!   a retained one also goes to the retained stream;
//! - in: the node subscribes on NATS to the subjects of the filters its local sessions hold
//!   (counted, [`interest`]); what arrives is routed by the local router (never stored as
//!   retained, never sent back out), once however many of its subscriptions match
//!   ([`dedup`]); a node never gets its own messages back (its connection has NATS's
//!   no-echo);
//! - retained messages: a JetStream stream keeps the last message of each topic's subject;
//!   every node reads it whole at start and follows it, into its own retained store.
//!
//! With no `cluster_*` options nothing of this runs: the router's hook and the outbox are
//! never set, so a single node pays a branch on an empty `OnceLock` per publish, and none
//! per delivery.
pub mod dedup;
pub mod interest;
pub mod ownership;
pub mod subject;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::session::Message;

/// Messages waiting to be published on NATS, at most: past this, what local clients publish
/// is not carried to other nodes (counted and logged), rather than held in memory without
/// bound.
pub const OUTBOX_CAPACITY: usize = 65_536;

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
}

/// The broker's end of the channel to the cluster task.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Arc<Message>>,
    /// Subscription changes are never dropped: they are few, and a lost one would leave the
    /// node deaf to a filter for good.
    changes: mpsc::UnboundedSender<Held>,
    /// The outbox is full: messages are being dropped (logged once per episode).
    dropping: Arc<AtomicBool>,
}

impl Outbox {
    /// The outbox and the cluster task's ends of it.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Outbox, mpsc::Receiver<Arc<Message>>, mpsc::UnboundedReceiver<Held>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        (Outbox { tx, changes, dropping: Arc::default() }, rx, changes_rx)
    }

    /// Hands a message published on this node to the cluster. False when the outbox is
    /// full or the cluster task has stopped: the message reached local subscribers only.
    pub fn send(&self, message: &Arc<Message>) -> bool {
        let sent = self.tx.try_send(message.clone()).is_ok();
        // The state changes (dropping now, or no longer): one thread logs it.
        let was_dropping = self.dropping.load(Ordering::Relaxed);
        if was_dropping == sent && self.dropping.swap(!sent, Ordering::Relaxed) == was_dropping {
            if sent {
                tracing::warn!("Cluster: messages reach the other nodes again.");
            } else {
                tracing::warn!(
                    "Cluster: NATS is not keeping up ({OUTBOX_CAPACITY} messages wait): messages published \
                     here reach local subscribers only until it does."
                );
            }
        }
        sent
    }
}

impl Outbox {
    /// A connection took a client id on this node.
    pub fn opened(&self, client_id: &str, conn_id: u64) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let _ = self.changes.send(Held::Opened { client_id: client_id.to_owned(), conn_id, at });
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
