//! Cluster mode: a session moving between nodes ([`crate::cluster::handoff`] has the
//! encoding). The node that has it takes it out ([`Broker::take_for_handoff`]: its
//! connection, if any, closes as in a takeover [MQTT-3.1.4-3], its subscriptions leave the
//! router), and once the answer is sent forgets it ([`Broker::handed_off`]), or parks it
//! again when the answer could not go ([`Broker::park_again`]). The node the client
//! connected to puts it together ([`Broker::adopt`]) and the connection resumes it (session
//! present).
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::cluster::handoff::{self, Handoff};
use crate::registry::Released;
use crate::session::{DeliveryEvent, SubscriptionRecord};
use crate::store::records::Clock;

use super::{Broker, Owned};

/// How long a connection holding a session has to close and hand it over (the node that
/// asks waits 4 s for the whole answer).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A session taken out for another node, and its bytes.
#[derive(Debug)]
pub(crate) struct Leaving {
    pub(crate) bytes: bytes::Bytes,
    owned: Owned,
    /// The QoS stream position routed when it left the router, and the last number this
    /// node had given its own QoS 1 and 2 messages ([`crate::cluster::parked`]): the other
    /// node adds what came after.
    pub(crate) position: u64,
    pub(crate) ticket: u64,
    /// [`crate::cluster::Outbox::arrived_at`].
    pub(crate) arrived_at: u64,
}

impl Broker {
    /// Another node asks for `client_id`'s session: takes it out of the registry and the
    /// router, and returns it with its bytes, at most `max_bytes` (queued messages past that
    /// are dropped, with a warning). None when there is none to hand over (none, one that ends
    /// with its connection, or one too large even without its queue: that one stays here).
    pub(crate) async fn take_for_handoff(&self, client_id: &ByteString, max_bytes: usize) -> Option<Leaving> {
        let now = Instant::now();
        let owned = match self.registry.release(client_id, now) {
            Released::None => return None,
            Released::Parked(owned, due_will) => {
                if let Some(will) = due_will {
                    self.publish_will(will, client_id, now);
                }
                *owned
            }
            Released::Online(rx) => tokio::time::timeout(CLOSE_WAIT, rx).await.ok()?.ok()?,
        };
        if owned.state.expiry_interval == 0 {
            self.discard(owned);
            return None;
        }
        let Owned { mut state, handle } = owned;
        // Out of the router first, so that nothing reaches its mailbox once that is emptied;
        // with the stream's routing and the node's numbering held, so that what it got and
        // what it did not split at one position and one number.
        let (position, ticket, arrived_at) = {
            let outbox = self.cluster.get();
            let _numbering = outbox.map(|o| o.hold_numbering());
            let _routing = outbox.map(|o| o.routing());
            for filter in state.subscriptions.keys() {
                self.router.unsubscribe(&handle, filter);
            }
            state.outgoing.pending.extend(handle.mailbox.clear());
            (
                self.stream_read.load(std::sync::atomic::Ordering::Acquire),
                outbox.map_or(0, |o| o.last_ticket()),
                outbox.map_or(0, |o| o.arrived_at(client_id)),
            )
        };
        let clock = Clock::now();
        let h = handoff_of(&state);
        let Some((bytes, dropped)) = handoff::encode_within(&h, &state.outgoing.pending, max_bytes, &clock)
        else {
            tracing::warn!(
                "Cluster: the session of {client_id} is larger than NATS's max_payload ({max_bytes} bytes) without its queue: it stays here, and the client starts afresh on the other node."
            );
            self.park_again(client_id, Owned { state, handle });
            return None;
        };
        if dropped > 0 {
            tracing::warn!(
                "Cluster: the session of {client_id} moves to another node without {dropped} queued messages, past NATS's max_payload ({max_bytes} bytes)."
            );
        }
        Some(Leaving { bytes: bytes.into(), owned: Owned { state, handle }, position, ticket, arrived_at })
    }

    /// Cluster mode: `client_id`'s parked session (it stays parked): its state and its queue
    /// (the messages are shared), for the cluster to keep a copy. None when it is not parked
    /// here.
    pub(crate) fn parked_copy(&self, client_id: &str) -> Option<(Handoff, Vec<crate::session::Delivery>)> {
        self.registry.with_parked(client_id, |owned| {
            let mut queued: Vec<_> = owned.state.outgoing.pending.iter().cloned().collect();
            queued.extend(owned.handle.mailbox.snapshot());
            (handoff_of(&owned.state), queued)
        })
    }

    /// Cluster mode: a connection on another node took `client_id` after the one that
    /// parked its session here: the session here is out of date and ends (a will waiting
    /// for its delay is dropped: the client is back [MQTT-3.1.3-9]; one already due goes, as
    /// does the will of a session that had expired), as it stood at `at`, when that
    /// connection was opened. True when there was one.
    pub fn drop_parked(&self, client_id: &str, at: Instant) -> bool {
        match self.registry.take_parked(client_id, at) {
            Some(unparked) => {
                let now = Instant::now().max(at);
                if let Some(owned) = self.unparked(&ByteString::from(client_id), unparked, now) {
                    // What its mailbox holds from shared subscriptions is not handed on: the
                    // other node may have taken it with the session's copy.
                    self.end_session(owned, true, false);
                }
                true
            }
            None => false,
        }
    }

    /// The session went to the other node: forgotten here (its records, its messages).
    pub(crate) fn handed_off(&self, leaving: Leaving) {
        self.forget_taken(leaving.owned);
    }

    /// Forgets a session taken out of the registry: its messages' records go, and its
    /// session, subscription and QoS 2 records too, unless the client id has a session here
    /// again (a client back meanwhile): those records are that session's now.
    fn forget_taken(&self, owned: Owned) {
        let own_records = !self.registry.knows(&owned.handle.client_id);
        self.end_session(owned, own_records, false);
    }

    /// The answer could not be sent: the session is parked here again, as it was.
    pub(crate) fn park_again_leaving(&self, client_id: &ByteString, leaving: Leaving) {
        self.park_again(client_id, leaving.owned);
    }

    /// Parks a session that was taken out (or came from another node and found no
    /// connection): back in the router and the registry, unless a connection holds the
    /// client id now (then it ends).
    pub(crate) fn park_again(&self, client_id: &ByteString, owned: Owned) {
        for (filter, r) in &owned.state.subscriptions {
            self.router.subscribe(&owned.handle, filter, r.options, r.id);
        }
        owned.handle.set_online(false);
        let (expiry, last_id) = (owned.state.expiry_interval, owned.state.outgoing.last_id());
        let expires_at = self.expiry_from(Instant::now(), expiry);
        match self.registry.park_if_free(client_id, owned, expires_at) {
            Ok(()) => {
                // Parked without a will (taken out with the session, it was published or
                // dropped), and with its new end: so is its record, or a restart would bring
                // the will back.
                if let (Some(j), true) = (self.journal(), expiry > 0) {
                    j.session(client_id, expiry, last_id, Some((expires_at, None)));
                }
                if let Some(at) = expires_at {
                    self.timers.park(client_id.clone(), at);
                }
                // Its claim and its copy in the cluster are this node's again.
                self.cluster_parked(client_id);
            }
            Err(owned) => self.forget_taken(*owned),
        }
    }

    /// A session handed over by another node, as this node's: its subscriptions in the
    /// router, its messages in its queue, and with persistence its records in the store.
    pub(crate) fn adopt(&self, client_id: &ByteString, h: Handoff) -> Owned {
        let handle = self.session_handle(client_id);
        let mut state = crate::session::SessionState::new();
        for (filter, options, id) in &h.subscriptions {
            state.subscriptions.insert(filter.clone(), SubscriptionRecord { options: *options, id: *id });
        }
        state.outgoing.set_last_id(h.last_packet_id);
        state.incoming_qos2.extend(h.incoming_qos2);
        state.expiry_interval = h.expiry_interval;
        // Recorded as for a session that was persistent here all along, before it is in the
        // router (a message routed to it from then on is recorded as its copy): the
        // connection that resumes it finds its records (and removes them if it ends with
        // the connection).
        let journal = self.journal().filter(|_| h.expiry_interval > 0);
        if let Some(j) = journal {
            // What this node read of the stream before the session came is not routed to it
            // again after a restart: the other node had it. Read before it subscribes, so
            // that a restart repeats a message rather than misses one.
            j.note_stream_position(self.stream_read.load(std::sync::atomic::Ordering::Acquire));
            j.persist_state(client_id, &state);
            j.session(client_id, state.expiry_interval, state.outgoing.last_id(), None);
            handle.set_persistent(true);
        }
        for (filter, options, id) in h.subscriptions {
            self.router.subscribe(&handle, &filter, options, id);
        }
        // QoS 1 and 2 copies are recorded, as the router records them for a persistent session.
        let hook = journal.and_then(|_| self.queue_hook());
        let keep = |d: &crate::session::Delivery| hook.filter(|_| d.qos != midge_codec::QoS::AtMostOnce);
        for (packet_id, awaiting, mut d) in h.inflight {
            if let Some(hook) = keep(&d) {
                hook.queued(client_id, &mut d);
                if let (Some(j), Some(entry)) = (journal, d.entry) {
                    j.delivery(match awaiting {
                        crate::session::Awaiting::PubComp => DeliveryEvent::Released { entry, packet_id },
                        _ => DeliveryEvent::Sent { entry, packet_id },
                    });
                }
            }
            state.outgoing.restore(packet_id, awaiting, d);
        }
        for mut d in h.queued {
            if let Some(hook) = keep(&d) {
                hook.queued(client_id, &mut d);
            }
            state.outgoing.pending.push_back(d);
        }
        Owned { state, handle: Arc::clone(&handle) }
    }
}

/// A session's state as a [`Handoff`], without its queue (written from the session's queue,
/// as much of it as fits).
fn handoff_of(state: &crate::session::SessionState) -> Handoff {
    Handoff {
        expiry_interval: state.expiry_interval,
        last_packet_id: state.outgoing.last_id(),
        incoming_qos2: state.incoming_qos2.iter().copied().collect(),
        subscriptions: state.subscriptions.iter().map(|(f, r)| (f.clone(), r.options, r.id)).collect(),
        inflight: state.outgoing.inflight().map(|f| (f.packet_id, f.state, f.delivery.clone())).collect(),
        queued: Vec::new(),
    }
}
