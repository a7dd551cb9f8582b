//! Routing: the subscription tree and the retained messages.
//!
//! The tree is read on every PUBLISH and written only on SUBSCRIBE and UNSUBSCRIBE, so it is
//! split into shards by the first topic level, each behind its own read-write lock, plus one
//! shard for filters that start with a wildcard (read only while it holds any). A PUBLISH
//! read-locks two shards at most; there is no global lock on the publish path.
mod retained;
mod tree;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use midge_codec::{parse_shared, QoS, SubscriptionOptions};
use parking_lot::RwLock;
use smallvec::SmallVec;

pub use retained::{AdmitSource, RetainSource, RetainedCursor, RetainedPage, RetainedStore};
pub use tree::Subscription;

use crate::mailbox::{Push, SessionHandle};
use crate::memory_limit::Held;
use crate::session::{Delivery, Message};
use tree::{Node, Subscribers};

/// The most `/` separators a topic name or filter may have (201 levels), as mosquitto's
/// TOPIC_HIERARCHY_LIMIT: deeper ones are refused where they arrive, so no part of the broker
/// ever walks a deeper path.
pub const TOPIC_HIERARCHY_LIMIT: usize = 200;

/// True when `topic` (a name or a filter) has more levels than the broker accepts.
pub fn too_deep(topic: &str) -> bool {
    topic.bytes().filter(|&b| b == b'/').nth(TOPIC_HIERARCHY_LIMIT).is_some()
}

const SHARDS: usize = 16;

/// Told of each delivery queued for a persistent session, before anyone can take it from the
/// mailbox (the store records it).
pub trait QueueHook: Sync {
    /// `d` is being queued for `client_id`; the hook may set its `entry`.
    fn queued(&self, client_id: &str, d: &mut Delivery);
}

/// Told when a session's subscription is added (not replaced) or removed: the cluster
/// counts the filters local sessions hold ([`crate::cluster::interest`]). Called after the
/// tree's lock is released; never on the publish path.
pub trait InterestHook: Send + Sync + std::fmt::Debug {
    /// A session subscribed to `filter` (as written, `$share/GROUP/` included).
    fn subscribed(&self, filter: &str);
    /// A session's subscription to `filter` went.
    fn unsubscribed(&self, filter: &str);
}

/// What happened to a routed message.
#[derive(Debug, Default, Clone)]
pub struct RouteOutcome {
    /// Some subscription matched the topic, whether or not it took the message (No Local).
    pub matched: bool,
    /// Deliveries that went to the hook (to be durable before the publisher is acknowledged).
    pub recorded: usize,
    /// Sessions the message was queued for.
    pub delivered: usize,
    /// Sessions whose mailbox was full, so the message was dropped for them.
    pub dropped: usize,
    /// Of those, sessions that were offline.
    pub dropped_offline: usize,
    /// Clients whose mailbox just became full (to be logged once).
    pub first_drops: usize,
    /// Sessions whose mailbox took the message past its capacity: the publisher should hold
    /// its acknowledgement until they have room.
    pub congested: Vec<Arc<SessionHandle>>,
    /// What routing it cost: the subscriber lists the topic matched and the subscriptions
    /// they reached (one client's 65,536 overlapping filters make one PUBLISH cost 131,072).
    pub work: usize,
}

/// The subscription tree and the retained store, shared by every connection.
#[derive(Debug)]
pub struct Router {
    shards: Box<[RwLock<Node>]>,
    wildcard: RwLock<Node>,
    /// Subscriptions in the wildcard shard: a publish skips its lock while there are none.
    wildcard_count: AtomicUsize,
    /// Subscriptions, and shared ones among them (for `$SYS` and the metrics).
    counts: [AtomicUsize; 2],
    retained: RetainedStore,
    hasher: ahash::RandomState,
    /// `upgrade_outgoing_qos`: deliveries at the subscription's QoS.
    upgrade_qos: bool,
    /// Cluster mode: told of each subscription added and removed (never set on a single
    /// node).
    interest: std::sync::OnceLock<Arc<dyn InterestHook>>,
    /// Cluster mode: a shared subscription's group spans the nodes, and NATS picks the one
    /// member node of a message (a queue group): [`Router::route`] leaves shared
    /// subscriptions out, and [`Router::route_to_share`] delivers what NATS picked this node
    /// for.
    shares_through_cluster: bool,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

/// The sessions one message goes to: up to 4 without an allocation (most topics have few
/// subscribers; this is made once per PUBLISH routed).
type Targets<'a> = SmallVec<[Target<'a>; 4]>;

/// A matched subscriber before duplicates are merged.
struct Target<'a> {
    handle: &'a Arc<SessionHandle>,
    qos: QoS,
    retain_as_published: bool,
    sub_id: Option<u32>,
    /// Identifiers of further matching subscriptions of the same session.
    extra_ids: Vec<u32>,
    /// The shared subscription it came through, if any.
    share: Option<&'a Arc<str>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router {
            shards: (0..SHARDS).map(|_| RwLock::new(Node::default())).collect(),
            wildcard: RwLock::new(Node::default()),
            wildcard_count: AtomicUsize::new(0),
            counts: Default::default(),
            retained: RetainedStore::default(),
            hasher: ahash::RandomState::new(),
            upgrade_qos: false,
            interest: std::sync::OnceLock::new(),
            shares_through_cluster: false,
        }
    }

    /// With `upgrade_outgoing_qos`: messages go to each subscriber at its subscription's
    /// QoS, not the lower of that and the message's [MQTT-3.8.4-8], as mosquitto does with
    /// the option. The user's choice, against the spec.
    pub fn upgrading_qos(mut self, upgrade: bool) -> Self {
        self.upgrade_qos = upgrade;
        self
    }

    /// In cluster mode: shared subscriptions get their messages from the cluster only
    /// ([`Router::route_to_share`]), so that a group spanning nodes gets each message once.
    pub fn sharing_through_cluster(mut self, on: bool) -> Self {
        self.shares_through_cluster = on;
        self
    }

    /// Sets the hook told of subscription changes (once: the cluster's). False if one was
    /// set already.
    pub fn set_interest_hook(&self, hook: Arc<dyn InterestHook>) -> bool {
        self.interest.set(hook).is_ok()
    }

    fn shard_of(&self, first_level: &str) -> &RwLock<Node> {
        &self.shards[(self.hasher.hash_one(first_level) as usize) % SHARDS]
    }

    fn is_wildcard_shard(filter: &str) -> bool {
        filter.starts_with(['+', '#'])
    }

    /// The shard holding `filter` (already stripped of any `$share/GROUP/`).
    fn shard_for_filter(&self, filter: &str) -> &RwLock<Node> {
        if Self::is_wildcard_shard(filter) {
            &self.wildcard
        } else {
            self.shard_of(tree::split_level(filter).0)
        }
    }

    /// Adds (or replaces) a subscription. Returns true when the session already had a
    /// subscription with this filter. `filter` must be valid (the codec checked it).
    pub fn subscribe(
        &self,
        handle: &Arc<SessionHandle>,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let (group, plain) = split_shared(filter);
        let held = Held::new(subscription_cost(filter));
        let sub = Subscription { handle: handle.clone(), options, id, held };
        let existed = self.shard_for_filter(plain).write().insert(plain, group.map(|g| (g, filter)), sub);
        if !existed && Self::is_wildcard_shard(plain) {
            self.wildcard_count.fetch_add(1, Ordering::Relaxed);
        }
        if !existed {
            self.counts[usize::from(group.is_some())].fetch_add(1, Ordering::Relaxed);
            if let Some(h) = self.interest.get() {
                h.subscribed(filter);
            }
        }
        existed
    }

    /// Removes a subscription; true when it existed.
    pub fn unsubscribe(&self, handle: &SessionHandle, filter: &str) -> bool {
        let (group, plain) = split_shared(filter);
        let removed = self.shard_for_filter(plain).write().remove(plain, group, handle.id);
        if removed && Self::is_wildcard_shard(plain) {
            self.wildcard_count.fetch_sub(1, Ordering::Relaxed);
        }
        if removed {
            self.counts[usize::from(group.is_some())].fetch_sub(1, Ordering::Relaxed);
            if let Some(h) = self.interest.get() {
                h.unsubscribed(filter);
            }
        }
        removed
    }

    /// True with `upgrade_outgoing_qos`: a subscriber gets its subscription's QoS.
    pub fn upgrades_qos(&self) -> bool {
        self.upgrade_qos
    }

    /// Queues `message` for every session with a matching subscription: once per session,
    /// with the highest QoS of its matching subscriptions and all their identifiers
    /// ([MQTT-3.3.4-2], [MQTT-3.3.4-3]; 3.1.1: [MQTT-3.3.5-1]), and once per shared group.
    pub fn route(&self, message: &Arc<Message>, hook: Option<&dyn QueueHook>) -> RouteOutcome {
        self.route_where(message, hook, None)
    }

    /// [`Router::route`] to the session of `client_id` only (shared subscriptions left out):
    /// cluster mode, a message that session missed while it came from another node.
    pub fn route_to_client(
        &self,
        message: &Arc<Message>,
        client_id: &str,
        hook: Option<&dyn QueueHook>,
    ) -> RouteOutcome {
        self.route_where(message, hook, Some(client_id))
    }

    fn route_where(
        &self,
        message: &Arc<Message>,
        hook: Option<&dyn QueueHook>,
        only: Option<&str>,
    ) -> RouteOutcome {
        let topic: &str = &message.topic;
        let dollar = topic.starts_with('$');
        let first = tree::split_level(topic).0;
        // The guards live until the deliveries are queued, so targets borrow the subscribers
        // instead of cloning an Arc per subscriber.
        let shard = self.shard_of(first).read();
        let wild = (!dollar && self.wildcard_count.load(Ordering::Relaxed) > 0).then(|| self.wildcard.read());
        let mut targets = Targets::new();
        let mut lists = 0usize;
        let upgrade = self.upgrade_qos;
        let shares_through_cluster = self.shares_through_cluster;
        {
            let mut visit = visitor(|subs| {
                if subs.is_empty() {
                    return;
                }
                lists += 1;
                for s in subs.direct.values() {
                    if only.is_none_or(|id| *s.handle.client_id == *id) {
                        push_target(&mut targets, s, message, upgrade);
                    }
                }
                for group in subs.groups().filter(|_| !shares_through_cluster && only.is_none()) {
                    if let Some(s) = group.pick() {
                        push_target(&mut targets, s, message, upgrade);
                        if let Some(t) = targets.last_mut() {
                            t.share = Some(&group.key);
                        }
                    }
                }
            });
            shard.walk(topic, dollar, &mut visit);
            if let Some(w) = &wild {
                w.walk(topic, dollar, &mut visit);
            }
        }
        let work = lists + targets.len();
        if lists > 1 {
            merge_duplicates(&mut targets);
        }
        let mut outcome = RouteOutcome { matched: lists > 0, work, ..RouteOutcome::default() };
        for t in targets {
            let mut sub_ids = t.extra_ids;
            sub_ids.extend(t.sub_id);
            if sub_ids.len() > 1 {
                // Each identifier once [MQTT-3.3.4-4]: the filters of one SUBSCRIBE share
                // theirs, and one client's 65,536 overlapping filters made each message it
                // was queued carry 65,536 copies of it (256 KB).
                sub_ids.sort_unstable();
                sub_ids.dedup();
                sub_ids.shrink_to_fit();
            }
            let delivery = Delivery {
                message: message.clone(),
                qos: t.qos,
                // [MQTT-3.3.1-12] (3.1.1: [MQTT-3.3.1-9]): forwarded with RETAIN 0 unless
                // Retain As Published [MQTT-3.3.1-13].
                retain: t.retain_as_published && message.retain,
                sub_ids,
                share: t.share.cloned(),
                entry: None,
            };
            deliver(t.handle, delivery, &mut outcome, hook);
        }
        outcome
    }

    /// Cluster mode: delivers a message NATS gave this node for the shared subscription
    /// `share` (`$share/GROUP/FILTER`) to one member of the group here. Its QoS is the lower
    /// of the message's and the member's subscription's [MQTT-3.8.4-8]; RETAIN as
    /// [`Router::route`] sets it. Nothing happens when the group has no member here any more.
    pub fn route_to_share(
        &self,
        message: &Arc<Message>,
        share: &str,
        hook: Option<&dyn QueueHook>,
    ) -> RouteOutcome {
        let mut outcome = RouteOutcome::default();
        let (Some(group), plain) = split_shared(share) else { return outcome };
        let shard = self.shard_for_filter(plain).read();
        let Some(g) = shard.find(plain).and_then(|s| s.group(group)) else { return outcome };
        outcome.matched = true;
        let mut targets = Targets::new();
        if let Some(s) = g.pick() {
            push_target(&mut targets, s, message, self.upgrade_qos);
        }
        for t in targets {
            let delivery = Delivery {
                message: message.clone(),
                qos: t.qos,
                // [MQTT-3.3.1-12], [MQTT-3.3.1-13] as in `route`.
                retain: t.retain_as_published && message.retain,
                sub_ids: t.sub_id.into_iter().collect(),
                share: Some(g.key.clone()),
                entry: None,
            };
            deliver(t.handle, delivery, &mut outcome, hook);
        }
        outcome
    }

    /// Gives a delivery that came through a shared subscription to another online member of
    /// its group, when the member it went to has gone away without acknowledging it. Returns
    /// the delivery, as it was, when no other member is online, or none has room in its
    /// queue and the session it leaves is not `ending` (a parked session keeps it).
    pub fn reroute_shared(
        &self,
        mut delivery: Delivery,
        exclude: u64,
        hook: Option<&dyn QueueHook>,
        ending: bool,
    ) -> Result<(), Delivery> {
        let Some(key) = delivery.share.clone() else { return Err(delivery) };
        let (Some(group), plain) = split_shared(&key) else { return Err(delivery) };
        let shard = self.shard_for_filter(plain).read();
        let Some(members) = shard.find(plain).and_then(|s| s.group(group)) else { return Err(delivery) };
        // As the first member's with room in its queue; as it was if none has.
        let was = (delivery.qos, std::mem::take(&mut delivery.sub_ids), delivery.entry.take());
        // What the delivery becomes for `member`: its QoS and subscription identifier.
        let as_members = |delivery: &mut Delivery, member: &Subscription| {
            delivery.qos = member.options.qos.min(delivery.message.qos);
            delivery.sub_ids = member.id.into_iter().collect();
        };
        let mut first = None;
        for member in members.others_online(exclude) {
            first.get_or_insert(member);
            as_members(&mut delivery, member);
            let handle = &member.handle;
            let pushed = handle.mailbox.push_if_room(delivery, |d| {
                record(hook, handle, d);
            });
            match pushed {
                Ok(()) => return Ok(()),
                Err(d) => delivery = d,
            }
        }
        if let Some(member) = first.filter(|_| ending) {
            // The session ends, and what it holds with it: the first member takes it over
            // its queue's limit, as a publisher's message would be taken (the queue's
            // slack), unless that member no longer keeps up (then it is dropped, and logged).
            as_members(&mut delivery, member);
            let handle = &member.handle;
            let pushed = handle.mailbox.push_at(delivery, true, Instant::now(), |d| {
                record(hook, handle, d);
            });
            if let Push::Dropped { first: true } = pushed {
                tracing::warn!("Outgoing messages are being dropped for client {}.", handle.client_id);
            }
            return Ok(());
        }
        (delivery.qos, delivery.sub_ids, delivery.entry) = was;
        Err(delivery)
    }

    /// Stores or clears the retained message of a topic: an empty payload clears it
    /// [MQTT-3.3.1-6], [MQTT-3.3.1-7] (3.1.1: [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
    pub fn retain(&self, message: &Arc<Message>) {
        self.retained.set(message, None);
    }

    /// As [`Router::retain`], keeping who published it (`check_retain_source`).
    pub fn retain_from(&self, message: &Arc<Message>, source: Option<Arc<RetainSource>>) {
        self.retained.set(message, source);
    }

    /// Drops the retained messages that expired, calling `gone` with each topic (see
    /// [`RetainedStore::drop_expired`]); returns how many.
    pub fn drop_expired_retained(
        &self,
        now: Instant,
        gone: &mut dyn FnMut(&bytestring::ByteString),
    ) -> usize {
        self.retained.drop_expired(now, gone)
    }

    /// The next page of retained messages matching a (non-shared) filter, from `cursor`
    /// (see [`RetainedStore::page`]).
    pub fn retained_page(
        &self,
        filter: &str,
        cursor: Option<&RetainedCursor>,
        max: usize,
        now: Instant,
        admit: AdmitSource<'_>,
    ) -> RetainedPage {
        self.retained.page(filter, cursor, max, now, admit)
    }

    /// Every retained message matching a (non-shared) filter, read page by page.
    pub fn retained_for(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.retained.page(filter, cursor.as_ref(), 1024, now, &|_, _| true);
            out.extend(page.messages);
            match page.next {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    /// How many topics have a retained message.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// The payload bytes of the retained messages (read by walking the store: for `$SYS`).
    pub fn retained_bytes(&self) -> usize {
        self.retained.payload_bytes()
    }

    /// How many subscriptions there are, shared ones included.
    pub fn subscription_count(&self) -> usize {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// How many shared subscriptions there are.
    pub fn shared_subscription_count(&self) -> usize {
        self.counts[1].load(Ordering::Relaxed)
    }
}

/// Pins the closure's argument to one lifetime, the guards' borrow.
fn visitor<'a, F: FnMut(&'a Subscribers)>(f: F) -> F {
    f
}

/// The QoS a subscription with `options`, held by `subscriber`, gets `message` with: the
/// lower of the published and the granted QoS (the granted one with `upgrade_outgoing_qos`);
/// None for the publisher itself under No Local [MQTT-3.8.3-3].
pub(crate) fn granted_qos(
    options: &midge_codec::SubscriptionOptions,
    subscriber: &str,
    message: &Message,
    upgrade: bool,
) -> Option<midge_codec::QoS> {
    if options.no_local && *subscriber == *message.publisher {
        return None;
    }
    Some(if upgrade { options.qos } else { options.qos.min(message.qos) })
}

fn push_target<'a>(targets: &mut Targets<'a>, s: &'a Subscription, message: &Message, upgrade: bool) {
    let Some(qos) = granted_qos(&s.options, &s.handle.client_id, message, upgrade) else { return };
    targets.push(Target {
        handle: &s.handle,
        qos,
        retain_as_published: s.options.retain_as_published,
        sub_id: s.id,
        extra_ids: Vec::new(),
        share: None,
    });
}

/// Merges the targets of one session into one delivery: highest QoS, Retain As Published if
/// any subscription asks for it, every subscription identifier.
fn merge_duplicates(targets: &mut Targets<'_>) {
    targets.sort_by_key(|t| t.handle.id);
    targets.dedup_by(|t, kept| {
        if t.handle.id != kept.handle.id {
            return false;
        }
        kept.qos = kept.qos.max(t.qos);
        kept.retain_as_published |= t.retain_as_published;
        kept.extra_ids.extend(t.sub_id);
        kept.extra_ids.append(&mut t.extra_ids);
        true
    });
}

/// Has `hook` record `d`, about to be queued for `handle`, when the store keeps it: a
/// persistent session's QoS 1 and 2 copies. True when it did.
fn record(hook: Option<&dyn QueueHook>, handle: &SessionHandle, d: &mut Delivery) -> bool {
    match hook {
        Some(h) if d.qos != QoS::AtMostOnce && handle.is_persistent() => {
            h.queued(&handle.client_id, d);
            true
        }
        _ => false,
    }
}

fn deliver(
    handle: &Arc<SessionHandle>,
    delivery: Delivery,
    outcome: &mut RouteOutcome,
    hook: Option<&dyn QueueHook>,
) {
    // QoS 0 messages are not queued for a session that is offline (3.1.1 section 3.1.2.4:
    // they MAY be stored; mosquitto does not by default, but does for a lazy bridge).
    let online = handle.is_online();
    if delivery.qos == QoS::AtMostOnce && !online && !handle.queues_qos0_offline() {
        return;
    }
    let mut recorded = false;
    let push = handle.mailbox.push_with(delivery, online, |d| recorded = record(hook, handle, d));
    outcome.recorded += usize::from(recorded);
    match push {
        Push::Queued => outcome.delivered += 1,
        Push::Congested => {
            outcome.delivered += 1;
            outcome.congested.push(handle.clone());
        }
        Push::Dropped { first } => {
            outcome.dropped += 1;
            outcome.dropped_offline += usize::from(!online);
            if first {
                outcome.first_drops += 1;
                tracing::warn!("Outgoing messages are being dropped for client {}.", handle.client_id);
            }
        }
    }
}

/// What a subscription to `filter` is counted for in `memory_limit`.
pub fn subscription_cost(filter: &str) -> usize {
    let levels = filter.bytes().filter(|&b| b == b'/').count();
    tree::SUBSCRIPTION_COST + filter.len() + levels * tree::LEVEL_COST
}

fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Ok(Some(s)) => (Some(s.group), s.filter),
        _ => (None, filter),
    }
}

#[cfg(test)]
mod tests;
