//! Cluster mode: a session moving between nodes ([`crate::cluster::handoff`] has the
//! encoding). The node that has it takes it apart ([`Broker::hand_off`]: its connection, if
//! any, closes as in a takeover [MQTT-3.1.4-3], its subscriptions leave the router and its
//! records the store); the node the client connected to puts it together
//! ([`Broker::adopt`]) and the connection resumes it (session present).
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

use crate::cluster::handoff::{self, Handoff};
use crate::registry::Released;
use crate::session::SubscriptionRecord;
use crate::store::records::Clock;

use super::{Broker, Owned};

/// How long a connection holding a session has to close and hand it over.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

impl Broker {
    /// Another node takes `client_id`'s session: returns it as bytes, at most `max_bytes`
    /// (queued messages past that are dropped, with a warning), and forgets it here. None
    /// when there is no session to hand over (none, or one that ends with its connection).
    pub(crate) async fn hand_off(&self, client_id: &ByteString, max_bytes: usize) -> Option<Vec<u8>> {
        let owned = match self.registry.release(client_id) {
            Released::None => return None,
            Released::Parked(owned) => *owned,
            Released::Online(rx) => tokio::time::timeout(CLOSE_WAIT, rx).await.ok()?.ok()?,
        };
        if owned.state.expiry_interval == 0 {
            self.discard(owned);
            return None;
        }
        let Owned { state, handle } = owned;
        let clock = Clock::now();
        let mut h = Handoff {
            expiry_interval: state.expiry_interval,
            last_packet_id: state.outgoing.last_id(),
            incoming_qos2: state.incoming_qos2.iter().copied().collect(),
            subscriptions: state.subscriptions.iter().map(|(f, r)| (f.clone(), r.options, r.id)).collect(),
            inflight: state.outgoing.inflight().map(|f| (f.packet_id, f.state, f.delivery.clone())).collect(),
            queued: Vec::new(),
        };
        // What waits in the mailbox comes after what the session already took from it.
        let mailbox = handle.mailbox.clear();
        let mut all: Vec<_> = state.outgoing.pending.iter().cloned().collect();
        all.extend(mailbox.iter().cloned());
        let mut size = handoff::encode(&h, &clock).len();
        let mut dropped = 0usize;
        for d in all {
            let len = handoff::queued_len(&d, &clock);
            if size + len > max_bytes {
                dropped += 1;
                continue;
            }
            size += len;
            h.queued.push(d);
        }
        if dropped > 0 {
            tracing::warn!(
                "Cluster: client {client_id} moved to another node: {dropped} queued messages past NATS's max_payload ({max_bytes} bytes) are dropped."
            );
        }
        // Forgotten here: its subscriptions, its records, the messages it held.
        if let Some(j) = self.journal().filter(|_| handle.is_persistent()) {
            for d in mailbox {
                if let Some(entry) = d.entry {
                    j.delivery(crate::session::DeliveryEvent::Done { entry });
                }
            }
        }
        self.discard(Owned { state, handle });
        Some(handoff::encode(&h, &clock))
    }

    /// A session handed over by another node, as this node's: its subscriptions in the
    /// router, its messages in its queue (and in the store, with persistence).
    pub(crate) fn adopt(&self, client_id: &ByteString, h: Handoff) -> Owned {
        let handle = self.session_handle(client_id);
        let mut state = crate::session::SessionState::new();
        for (filter, options, id) in h.subscriptions {
            self.router.subscribe(&handle, &filter, options, id);
            state.subscriptions.insert(filter, SubscriptionRecord { options, id });
        }
        // Recorded as the router records a message for a persistent session: QoS 1 and 2.
        let hook = self.queue_hook().filter(|_| h.expiry_interval > 0);
        let keep = |d: &crate::session::Delivery| hook.filter(|_| d.qos != midge_codec::QoS::AtMostOnce);
        for (packet_id, awaiting, mut d) in h.inflight {
            if let Some(hook) = keep(&d) {
                hook.queued(client_id, &mut d);
                if let (Some(j), Some(entry)) = (self.journal(), d.entry) {
                    use crate::session::{Awaiting, DeliveryEvent};
                    j.delivery(match awaiting {
                        Awaiting::PubComp => DeliveryEvent::Released { entry, packet_id },
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
        state.outgoing.set_last_id(h.last_packet_id);
        state.incoming_qos2.extend(h.incoming_qos2);
        state.expiry_interval = h.expiry_interval;
        Owned { state, handle: Arc::clone(&handle) }
    }
}
