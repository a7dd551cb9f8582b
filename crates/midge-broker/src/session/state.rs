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
    pub replays: Replays,
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
}

/// The replays under way, in order, one per filter: starting or stopping one costs the same
/// however many there are (a SUBSCRIBE of 60,000 filters used to cost 4 s of a worker thread,
/// each filter looked for among the others). A replay replaced or stopped stays in the queue,
/// out of date, until it reaches the front or the queue is swept (when it is over twice as
/// long as the replays under way). Boxed, and only while some are under way: an idle
/// session holds a pointer.
#[derive(Debug, Default)]
pub struct Replays(Option<Box<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    /// Replays with the number they were started as; those `current` no longer names are
    /// out of date. The front is always current.
    queue: VecDeque<(u64, Replay)>,
    /// The number of each filter's replay under way.
    current: HashMap<ByteString, u64, SessionHasher>,
    started: u64,
}

impl Replays {
    /// Starts sending the retained messages of `replay`'s filter, or starts again from the
    /// beginning when a replay of it is already under way: a repeated SUBSCRIBE re-sends them
    /// [MQTT-3.8.4-3], but never multiplies what the session holds.
    pub fn start(&mut self, replay: Replay) {
        let q = self.0.get_or_insert_with(Box::default);
        q.started += 1;
        q.current.insert(replay.filter.clone(), q.started);
        q.queue.push_back((q.started, replay));
        self.tidy();
    }

    /// Stops the replay of `filter`, if one is under way (the subscription is gone).
    pub fn stop(&mut self, filter: &str) {
        if self.0.as_mut().is_some_and(|q| q.current.remove(filter).is_some()) {
            self.tidy();
        }
    }

    /// The replay to go on with.
    pub fn front(&self) -> Option<&Replay> {
        self.0.as_ref()?.queue.front().map(|(_, r)| r)
    }

    /// The replay to go on with, to move its cursor.
    pub fn front_mut(&mut self) -> Option<&mut Replay> {
        self.0.as_mut()?.queue.front_mut().map(|(_, r)| r)
    }

    /// The front replay is over.
    pub fn pop_front(&mut self) {
        let Some(q) = self.0.as_mut() else { return };
        if let Some((n, r)) = q.queue.pop_front() {
            if q.current.get(&r.filter) == Some(&n) {
                q.current.remove(&r.filter);
            }
        }
        self.tidy();
    }

    /// How many are under way.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.current.len())
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the front current and the queue at most twice as long as what is under way;
    /// lets the queue go when nothing is.
    fn tidy(&mut self) {
        let Some(q) = self.0.as_mut() else { return };
        let current = |(n, r): &(u64, Replay)| q.current.get(&r.filter) == Some(n);
        if q.queue.len() > 2 * q.current.len() + 16 {
            q.queue.retain(current);
        }
        while q.queue.front().is_some_and(|e| !current(e)) {
            q.queue.pop_front();
        }
        if q.current.is_empty() {
            self.0 = None;
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.queue.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(filter: &str) -> Replay {
        Replay { filter: filter.into(), qos: QoS::AtLeastOnce, sub_id: None, cursor: None }
    }

    fn order(r: &mut Replays) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(front) = r.front() {
            out.push(front.filter.to_string());
            r.pop_front();
        }
        out
    }

    #[test]
    fn replays_run_in_order_and_a_repeated_one_starts_again_at_the_back() {
        let mut r = Replays::default();
        for f in ["a", "b", "c"] {
            r.start(replay(f));
        }
        r.front_mut().unwrap().qos = QoS::ExactlyOnce;
        r.start(replay("a"));
        r.stop("b");
        assert_eq!(r.len(), 2);
        assert_eq!(r.front().map(|f| (f.filter.as_ref(), f.qos)), Some(("c", QoS::AtLeastOnce)));
        assert_eq!(order(&mut r), ["c", "a"]);
        assert!(r.is_empty());
    }

    #[test]
    fn replays_replaced_or_stopped_are_swept_from_the_queue() {
        let mut r = Replays::default();
        for i in 0..60_000 {
            r.start(replay(&format!("f/{i}")));
        }
        assert_eq!((r.len(), r.queued()), (60_000, 60_000));
        // One filter subscribed to again and again, or all of them stopped: what is out of
        // date never makes the queue more than twice as long as what is under way.
        for _ in 0..100_000 {
            r.start(replay("f/7"));
            assert!(r.queued() <= 2 * r.len() + 16, "{} queued for {}", r.queued(), r.len());
        }
        for i in 0..60_000 {
            r.stop(&format!("f/{i}"));
            assert!(r.queued() <= 2 * r.len() + 16, "{} queued for {}", r.queued(), r.len());
        }
        assert!(r.is_empty() && r.front().is_none());
    }
}
