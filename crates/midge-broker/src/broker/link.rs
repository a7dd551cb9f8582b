//! A session linked to the broker: what a connection task runs between its socket and the
//! shared state, without I/O of its own, so tests drive exactly this code without sockets.
//!
//! The [`Link`] feeds the client's packets to its [`Session`] and applies the effects the
//! session returns (route, subscribe, unsubscribe) to the router; it feeds the session its
//! deliveries (the mailbox, and retained messages page by page through the session's replay
//! cursors); and it applies backpressure: while a subscriber that a message went to is
//! congested, the client's publishes wait (the packets read meanwhile are deferred, and the
//! connection stops reading), so TCP slows the publisher instead of the broker dropping what
//! it cannot deliver.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::Packet;
use tokio::sync::oneshot;

use super::{Broker, Owned, Recheck};
use crate::config::LogType;
use crate::control::{Control, ControlSlot};
use crate::mailbox::SessionHandle;
use crate::router::RetainSource;
use crate::session::{CloseReason, DeliveryEvent, Effect, Session};
use crate::store::DurableWaiter;

/// Deliveries taken from the mailbox, or retained messages from the store, at a time.
const BATCH: usize = 256;

/// How much a blocked client may send before its connection stops reading: what it sends
/// after the publish that found a subscriber congested waits here, except acknowledgements of
/// its own deliveries, which are handled at once so that its own queue keeps draining.
pub const DEFER_LIMIT: usize = 64 * 1024;

/// What a connection waits for, boxed.
pub type Waiting = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Packets waiting for the store before the connection stops reading its client.
const AWAITING_LIMIT: usize = 1024;

/// A connection's session, linked to the broker.
#[derive(Debug)]
pub struct Link {
    broker: Arc<Broker>,
    session: Session,
    handle: Arc<SessionHandle>,
    control: Arc<ControlSlot>,
    conn_id: u64,
    recheck: Recheck,
    /// While this client's publishes wait for congested subscribers: those subscribers, and
    /// the packets read meanwhile (boxed: most connections are never held back).
    blocked: Option<Box<Blocked>>,
    /// What the connection's output waits for in the store (boxed: only with persistence).
    durability: Option<Box<Durability>>,
    /// The routing work its publishes cost since the connection last reset it
    /// ([`crate::router::RouteOutcome::work`]).
    routing_work: usize,
}

/// What a connection's output waits for: records in the store, and (cluster mode) the
/// cluster's acknowledgement of messages the client published.
#[derive(Debug, Default)]
struct Durability {
    /// What the next packet to the client waits for: what it tells the client (an
    /// acknowledgement, a QoS 2 step) must be durable first.
    gate: Gate,
    /// The commit of the incoming QoS 2 message routed last, for its packet identifier's
    /// record, which comes next (0: none).
    commit: u64,
    /// Packets waiting, with what each waits for.
    awaiting: VecDeque<(Gate, Packet)>,
}

/// What a packet to the client waits for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Gate {
    /// A record in the store.
    store: u64,
    /// A ticket of the cluster's outbox ([`crate::cluster::acks`]).
    cluster: u64,
}

#[derive(Debug, Default)]
struct Blocked {
    /// The congested subscribers.
    on: Vec<Arc<SessionHandle>>,
    /// Cluster mode: the outbox to NATS is full.
    cluster: bool,
    /// Packets read meanwhile, in order.
    deferred: VecDeque<Packet>,
    /// Roughly what they hold.
    bytes: usize,
}

/// Packets handled even while the client's publishes wait: acknowledgements of what the
/// broker sent it (their order against its publishes does not matter, and they free its own
/// inflight window) and PINGREQ.
fn handled_while_blocked(p: &Packet) -> bool {
    matches!(p, Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PingReq)
}

/// Roughly what a deferred packet holds in memory.
fn weight(p: &Packet) -> usize {
    // A filter's place in its list, beside its bytes.
    const PER_FILTER: usize = 48;
    64 + match p {
        Packet::Publish(p) => p.topic.len() + p.payload.len() + p.properties.memory_cost(),
        Packet::Subscribe(s) => {
            s.filters.iter().map(|(f, _)| f.len() + PER_FILTER).sum::<usize>() + s.properties.memory_cost()
        }
        Packet::Unsubscribe(u) => {
            u.filters.iter().map(|f| f.len() + PER_FILTER).sum::<usize>() + u.properties.memory_cost()
        }
        Packet::PubRel(r) => r.properties.memory_cost(),
        Packet::Disconnect(d) => d.properties.memory_cost(),
        Packet::Auth(a) => a.properties.memory_cost(),
        _ => 0,
    }
}

impl Link {
    pub(crate) fn new(
        broker: Arc<Broker>,
        session: Session,
        handle: Arc<SessionHandle>,
        control: Arc<ControlSlot>,
        conn_id: u64,
        recheck: Recheck,
    ) -> Link {
        Link {
            broker,
            session,
            handle,
            control,
            conn_id,
            recheck,
            blocked: None,
            durability: None,
            routing_work: 0,
        }
    }

    /// Who this client is, kept with the retained messages it publishes when
    /// `check_retain_source` is on.
    fn retain_source(&self) -> Option<Arc<RetainSource>> {
        self.broker.config.check_retain_source.then(|| {
            Arc::new(RetainSource {
                client_id: self.session.client_id.clone(),
                username: self.session.username().cloned(),
                listener: self.recheck.listener,
            })
        })
    }

    /// The routing work this client's publishes cost since [`Link::reset_routing_work`]:
    /// what its connection's task counts against its turn.
    pub fn routing_work(&self) -> usize {
        self.routing_work
    }

    /// Starts counting [`Link::routing_work`] again.
    pub fn reset_routing_work(&mut self) {
        self.routing_work = 0;
    }

    /// The broker it is linked to.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ByteString {
        &self.session.client_id
    }

    /// The slot the rest of the broker reaches this connection through.
    pub fn control(&self) -> &Arc<ControlSlot> {
        &self.control
    }

    /// A packet identifier for a packet of the connection's own (a bridge's SUBSCRIBE to its
    /// remote), from the counter of the session's deliveries.
    pub fn reserve_packet_id(&mut self) -> u16 {
        self.session.reserve_packet_id()
    }

    /// The session's mailbox.
    pub fn handle(&self) -> &Arc<SessionHandle> {
        &self.handle
    }

    /// Handles one packet from the client, and applies its effects.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) {
        if let Some(b) = self.blocked.as_mut().filter(|_| !handled_while_blocked(&packet)) {
            b.bytes += weight(&packet);
            b.deferred.push_back(packet);
            self.session.touch(now);
            return;
        }
        self.session.touch(now);
        self.hand_to_session(packet, now);
        self.apply_effects(now);
    }

    /// Hands a packet to the session (touched when it arrived); a SUBSCRIBE with the room
    /// left under `memory_limit`.
    fn hand_to_session(&mut self, packet: Packet, now: Instant) {
        match packet {
            Packet::Subscribe(s) => self.session.handle_subscribe_within(s, self.broker.memory.room()),
            p => self.session.handle_deferred(p, now),
        }
    }

    fn apply_effects(&mut self, now: Instant) {
        let broker = &*self.broker;
        let journal = broker.journal();
        let persistent = journal.is_some() && self.handle.is_persistent();
        while let Some(effect) = self.session.poll_effect() {
            let ticket = match effect {
                Effect::Publish { message, ack } => {
                    let router = &broker.router;
                    let mut ticket = None;
                    if message.retain {
                        let source = self.retain_source();
                        router.retain_from(&message, source.clone());
                        ticket = journal.map(|j| j.retain_from(&message, source.as_deref()));
                    }
                    // The copies of a QoS 2 message are tied to a commit (see persist.rs).
                    let committing = journal
                        .filter(|_| message.qos == midge_codec::QoS::ExactlyOnce)
                        .map(|j| super::persist::Committing { journal: j, commit: j.next_commit() });
                    if let Some(c) = &committing {
                        self.durability.get_or_insert_with(Default::default).commit = c.commit;
                    }
                    let hook: Option<&dyn crate::router::QueueHook> = match &committing {
                        Some(c) => Some(c),
                        None => broker.queue_hook(),
                    };
                    // QoS 0 is not numbered (it never goes through the QoS stream).
                    let numbering = (message.qos != midge_codec::QoS::AtMostOnce)
                        .then(|| broker.cluster_numbering())
                        .flatten();
                    let outcome = router.route(&message, hook);
                    self.routing_work += outcome.work;
                    let sent = broker.to_cluster(&message);
                    drop(numbering);
                    broker.count_drops(&outcome);
                    if sent != 0 {
                        let d = self.durability.get_or_insert_with(Default::default);
                        d.gate.cluster = d.gate.cluster.max(sent);
                    }
                    if outcome.recorded > 0 {
                        ticket = journal.map(|j| j.appended());
                    }
                    let outbox_full = broker.cluster_outbox().is_some_and(|o| o.is_full());
                    if !outcome.congested.is_empty() || outbox_full {
                        let b = self.blocked.get_or_insert_with(Default::default);
                        b.cluster |= outbox_full;
                        for h in outcome.congested {
                            if !b.on.iter().any(|x| x.id == h.id) {
                                b.on.push(h);
                            }
                        }
                    }
                    if let Some(ack) = ack {
                        let matched = outcome.matched;
                        self.session.acknowledge(ack, matched, self.blocked.is_some(), now);
                    }
                    ticket
                }
                Effect::Subscribe { filter, options, id } => {
                    if broker.config.log_types().has(LogType::Subscribe) {
                        // mosquitto's line, and with log_dest topic its topic (log/M/subscribe).
                        let (client, qos) = (&self.session.client_id, options.qos.as_u8());
                        tracing::info!(target: crate::log_topic::SUBSCRIBE_TARGET, "{client} {qos} {filter}");
                    }
                    broker.router.subscribe(&self.handle, &filter, options, id);
                    broker.journal_subscription(&self.handle, &filter, Some((options, id)))
                }
                Effect::Unsubscribe { filter } => {
                    if broker.config.log_types().has(LogType::Unsubscribe) {
                        let client = &self.session.client_id;
                        tracing::info!(target: crate::log_topic::UNSUBSCRIBE_TARGET, "{client} {filter}");
                    }
                    broker.router.unsubscribe(&self.handle, &filter);
                    broker.journal_subscription(&self.handle, &filter, None)
                }
                Effect::Delivery(event) => match (journal, event) {
                    // A QoS 1 completion need not be durable before anything: lost, the
                    // message is sent again after a restart, as QoS 1 allows.
                    (Some(j), DeliveryEvent::Done { .. }) => {
                        j.delivery(event);
                        None
                    }
                    (Some(j), _) => Some(j.delivery(event)),
                    (None, _) => None,
                },
                Effect::Qos2Received(id) => journal.and_then(|j| {
                    let commit = self.durability.as_mut().map_or(0, |d| std::mem::take(&mut d.commit));
                    j.commit_incoming(persistent.then_some(&self.handle.client_id), id, commit)
                }),
                Effect::Qos2Released(id) if persistent => {
                    journal.map(|j| j.release_incoming(&self.handle.client_id, id))
                }
                Effect::Qos2Released(_) => None,
            };
            if let Some(t) = ticket {
                let d = self.durability.get_or_insert_with(Default::default);
                d.gate.store = d.gate.store.max(t);
            }
        }
    }

    /// Moves things along: the subscribers this client waited for that have room let it go
    /// on (its held acknowledgements and deferred packets first), then deliveries become
    /// PUBLISH packets: retained messages of new subscriptions and the mailbox, as far as the
    /// inflight window allows and within `budget` ([`Session::pump`]'s cost). Returns what
    /// was produced (0: nothing).
    pub fn poll(&mut self, now: Instant, budget: usize) -> usize {
        if let Some(b) = self.blocked.as_mut() {
            b.on.retain(|h| !h.mailbox.has_room(now));
            b.cluster &= !self.broker.cluster_outbox().is_none_or(|o| o.has_room());
        }
        let unblocked = self.blocked.as_ref().is_none_or(|b| b.on.is_empty() && !b.cluster);
        self.session.release_held(now, unblocked);
        if unblocked {
            // Handled in order; one may find a subscriber congested again, and the rest wait.
            if let Some(mut b) = self.blocked.take() {
                while let Some(packet) = b.deferred.pop_front() {
                    if self.blocked.is_some() {
                        b.deferred.push_front(packet);
                        let again = self.blocked.get_or_insert_with(Default::default);
                        again.bytes = b.deferred.iter().map(weight).sum();
                        again.deferred = std::mem::take(&mut b.deferred);
                        break;
                    }
                    self.hand_to_session(packet, now);
                    self.apply_effects(now);
                }
            }
        }
        let mut sent = 0;
        loop {
            sent += self.session.pump(now, budget - sent);
            // What sending did to the store (a QoS 2 packet identifier must be durable before
            // its PUBLISH goes) is applied before the output is taken.
            self.apply_effects(now);
            if sent >= budget || !self.session.wants_deliveries() {
                self.session.shrink();
                return sent;
            }
            let mut fed = false;
            if let Some(r) = self.session.next_replay() {
                let broker = &self.broker;
                let admit =
                    |s: &RetainSource, m: &crate::session::Message| broker.source_may_publish(s, &m.topic);
                let page = broker.router.retained_page(&r.filter, r.cursor.as_ref(), BATCH, now, &admit);
                self.session.replayed(page);
                fed = true;
            }
            let taken = self.handle.mailbox.drain_into(self.session.pending_mut(), BATCH);
            if taken > 0 {
                let pending = self.session.pending_mut().iter().rev().take(taken);
                self.broker.metrics.deliveries(pending.map(|d| d.message.received_at), now);
                fed = true;
            }
            if !fed {
                self.session.shrink();
                return sent;
            }
        }
    }

    /// True while the connection should read from the client: not while its publishes wait
    /// for congested subscribers and it has already sent [`DEFER_LIMIT`] bytes more, nor
    /// while many answers wait for the store.
    pub fn wants_input(&self) -> bool {
        self.session.close_reason().is_none()
            && self.blocked.as_ref().is_none_or(|b| b.bytes < DEFER_LIMIT)
            && self.durability.as_ref().is_none_or(|d| d.awaiting.len() < AWAITING_LIMIT)
            && self.store_backlog_wait().is_none()
    }

    /// While the store's writer is far behind ([`crate::store::Store::backlogged`]) and a
    /// record this client's packets made is not durable yet: that record.
    fn store_backlog_wait(&self) -> Option<u64> {
        let seq = self.durability.as_ref()?.gate.store;
        let store = self.broker.journal()?.store();
        (store.backlogged() && !store.is_durable(seq)).then_some(seq)
    }

    /// True when the session can take deliveries now (the connection then listens for mail).
    pub fn wants_deliveries(&self) -> bool {
        self.session.wants_deliveries()
    }

    /// A subscriber this client waits for, that has no room yet.
    pub fn blocked_on(&self, now: Instant) -> Option<Arc<SessionHandle>> {
        self.blocked.as_ref()?.on.iter().find(|h| !h.mailbox.has_room(now)).cloned()
    }

    /// Cluster mode: while this client's publishes wait for room in the outbox to NATS, what
    /// resolves when there is.
    pub fn blocked_on_cluster(&self) -> Option<Waiting> {
        let outbox = self.broker.cluster_outbox()?.clone();
        (self.blocked.as_ref()?.cluster && !outbox.has_room())
            .then(|| Box::pin(async move { outbox.room().await }) as Waiting)
    }

    /// True while the client's publishes wait for congested subscribers.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Hands the packets that may be sent now to `send`, in order: what depends on records
    /// not yet durable waits for them (and everything after it, keeping the order).
    pub fn drain_output(&mut self, mut send: impl FnMut(Packet)) {
        let journal = self.broker.journal();
        let outbox = self.broker.cluster_outbox();
        let durable = |g: Gate| {
            journal.is_none_or(|j| j.store().is_durable(g.store))
                && outbox.is_none_or(|o| o.is_acked(g.cluster))
        };
        let Some(d) = self.durability.as_mut() else {
            if self.session.has_output() {
                self.session.drain_output().for_each(send);
            }
            self.session.shrink();
            return;
        };
        if d.awaiting.is_empty() && durable(d.gate) {
            if self.session.has_output() {
                self.session.drain_output().for_each(send);
            }
        } else {
            let gate = d.gate;
            d.awaiting.extend(self.session.drain_output().map(|p| (gate, p)));
            while d.awaiting.front().is_some_and(|(t, _)| durable(*t)) {
                if let Some((_, p)) = d.awaiting.pop_front() {
                    send(p);
                }
            }
        }
        if d.awaiting.is_empty() && d.commit == 0 && durable(d.gate) {
            // Nothing waits: an idle connection keeps nothing of this.
            self.durability = None;
        }
        self.session.shrink();
    }

    /// [`Link::drain_output`] into a vector (tests and tools).
    pub fn take_output(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        self.drain_output(|p| out.push(p));
        out
    }

    /// While packets wait for the store or the cluster: what resolves when the first of them
    /// may have become ready (the caller looks again).
    pub fn awaiting_store(&self) -> Option<Waiting> {
        if let Some(seq) = self.store_backlog_wait() {
            let waiter: DurableWaiter = self.broker.journal()?.store().waiter();
            return Some(Box::pin(waiter.wait(seq)));
        }
        let (g, _) = self.durability.as_ref()?.awaiting.front()?;
        let g = *g;
        if let Some(j) = self.broker.journal().filter(|j| !j.store().is_durable(g.store)) {
            let waiter: DurableWaiter = j.store().waiter();
            return Some(Box::pin(waiter.wait(g.store)));
        }
        if let Some(outbox) = self.broker.cluster_outbox().filter(|o| !o.is_acked(g.cluster)).cloned() {
            return Some(Box::pin(async move { outbox.acked(g.cluster).await }));
        }
        // Ready since the output was last drained: another round sends it.
        Some(Box::pin(std::future::ready(())))
    }

    /// Why the connection must close, once it must.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.session.close_reason()
    }

    /// Ends the connection for a reason found outside the session.
    pub fn close(&mut self, reason: CloseReason) {
        self.session.close(reason);
    }

    /// A message from the rest of the broker. A takeover returns where to send the session.
    pub fn on_control(&mut self, c: Control, now: Instant) -> Option<oneshot::Sender<Owned>> {
        match c {
            Control::TakeOver(reply) => {
                self.session.close(CloseReason::TakenOver);
                return Some(reply);
            }
            Control::Timeout => self.session.handle_timeout(now),
            // [MQTT-3.1.4-3]: the existing connection is closed, 5.0 with 0x8E.
            Control::TakenOverElsewhere => {
                tracing::info!("Client {} connected to another node of the cluster.", self.session.client_id);
                self.session.close(CloseReason::TakenOver);
            }
            Control::Shutdown => self.session.close(CloseReason::Shutdown),
            Control::Recheck => {
                if let Err(why) =
                    self.broker.still_allowed(&self.recheck, self.session.username().map(|u| &**u))
                {
                    tracing::info!("Client {} is no longer allowed: {why}.", self.session.client_id);
                    self.session.close(CloseReason::NotAuthorized);
                }
            }
        }
        None
    }

    /// Tells the broker's timers when the session next needs the time.
    pub fn watch_timers(&self) {
        self.broker.timers.watch(&self.control, self.session.poll_timeout());
    }

    /// The DISCONNECT to send a 5.0 client before closing, if the reason calls for one.
    pub fn disconnect_packet(&self) -> Option<Packet> {
        self.session.disconnect_packet()
    }

    /// Ends the connection's hold on its session: the will is published now, after its
    /// delay, or not at all; the session is parked, handed to the connection that took the
    /// client id over (`handover`), or discarded.
    pub fn finish(self, handover: Option<oneshot::Sender<Owned>>, now: Instant) {
        let Link { broker, session, handle, control, conn_id, .. } = self;
        handle.set_online(false);
        let ending = session.end(handover.is_some(), now);
        broker.end_connection(ending, handle, conn_id, handover, &control, now);
    }
}
