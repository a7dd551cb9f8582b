//! Where deliveries wait for a session: its [`SessionHandle`] (the address the router keeps
//! for each subscription) and the bounded [`Mailbox`] behind it.
//!
//! Publishers push from any thread and never wait. A mailbox under its capacity takes every
//! delivery (QoS 0 deliveries and QoS 1 and 2 ones are counted apart, each against the
//! capacity, so that QoS 0 traffic never takes the place of QoS 1 and 2 messages). One that
//! is full and whose session is connected and reading is *congested*: the delivery still goes
//! in, and the push says so, so that the publisher's connection stops reading its client
//! (and holds its acknowledgements) until the mailbox has drained to half its capacity. TCP
//! then slows the publisher: nothing is lost while the subscriber keeps up
//! on average (backpressure, at every QoS). A mailbox that stays congested longer than
//! [`SLOW_AFTER`] belongs to a slow consumer: from then on what does not fit is dropped and
//! counted, so that one slow subscriber never holds its publishers up for long. An offline
//! session's mailbox never holds anyone up either: beyond its capacity it drops, as mosquitto
//! does. An empty mailbox holds no allocation, which keeps idle connections small.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytestring::ByteString;
use midge_codec::QoS;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::session::Delivery;

/// How long a mailbox may stay congested and still slow its publishers.
pub const SLOW_AFTER: Duration = Duration::from_secs(2);

/// How far past its capacity a congested mailbox may go: each publisher stops after the
/// delivery that found it full, so this is reached only with this many publishers feeding
/// one subscriber at once. Beyond it, deliveries are dropped (a bound on memory, whatever
/// the clients do).
const CONGESTION_SLACK: usize = 4_096;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

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
    /// The session outlives its connection (expiry interval above 0): what is queued for it
    /// is written to the store.
    persistent: AtomicBool,
    /// QoS 0 messages are queued while it is offline too (a lazy bridge's session, as
    /// mosquitto queues them for a lazy bridge: they count towards its `threshold`).
    queues_qos0_offline: AtomicBool,
}

impl SessionHandle {
    /// A new session's handle with a mailbox of `limits` (a count alone: no byte limit).
    pub fn new(client_id: ByteString, limits: impl Into<QueueLimits>) -> Arc<Self> {
        Arc::new(SessionHandle {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            client_id,
            mailbox: Mailbox::new(limits),
            online: AtomicBool::new(false),
            persistent: AtomicBool::new(false),
            queues_qos0_offline: AtomicBool::new(false),
        })
    }

    /// Whether QoS 0 messages are queued for it while it is offline.
    pub fn queues_qos0_offline(&self) -> bool {
        self.queues_qos0_offline.load(Ordering::Relaxed)
    }

    /// Queues QoS 0 messages while it is offline too, or not.
    pub fn set_queues_qos0_offline(&self, on: bool) {
        self.queues_qos0_offline.store(on, Ordering::Relaxed);
    }

    /// Whether a network connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the session as attached to a connection, or not. Offline, its mailbox holds no
    /// publisher up: those it held back go on at once, not after [`SLOW_AFTER`].
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
        if !online {
            self.mailbox.let_publishers_go(self.mailbox.inner.lock());
        }
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    /// Marks the session as outliving its connection, or not.
    pub fn set_persistent(&self, persistent: bool) {
        self.persistent.store(persistent, Ordering::Relaxed);
    }
}

/// How much a mailbox holds before it is full: `max_queued_messages` QoS 1 and 2 deliveries
/// and as many QoS 0 ones (counted apart, as mosquitto limits QoS 0 messages by the packets
/// waiting to be written, and QoS 1 and 2 by its queue: a flood of QoS 0 never takes the
/// place of a QoS 1 message), and `max_queued_bytes` bytes of their payloads and properties
/// ([`Message::queued_bytes`]; mosquitto: "until the first limit is reached"). 0: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Deliveries.
    pub messages: usize,
    /// Payload (and property) bytes.
    pub bytes: usize,
}

impl From<usize> for QueueLimits {
    fn from(messages: usize) -> Self {
        QueueLimits { messages, bytes: 0 }
    }
}

/// A session's queue of deliveries.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// The session's connection, woken by each push.
    waker: AtomicWaker,
    capacity: usize,
    /// The payload bytes it holds when full.
    byte_capacity: usize,
    dropped: AtomicU64,
    warned: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    /// The payload bytes of `queue`.
    bytes: usize,
    /// The QoS 0 deliveries in `queue` (the rest are QoS 1 and 2).
    qos0: usize,
    /// When the mailbox last went over capacity without draining to half of it since (by the
    /// clock of the deliveries that took it there).
    congested_since: Option<Instant>,
    /// Publishers waiting for this mailbox to drain (made when the first one waits: an idle
    /// mailbox has none).
    space: Option<Arc<Notify>>,
    /// `memory_limit`'s count of the queue's places (the messages count on their own).
    tally: crate::memory_limit::Tally,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Queued past the capacity: the publisher should wait for room.
    Congested,
    /// Not queued: the mailbox is full and its session is offline or a slow consumer.
    /// `first` is true for the first drop since the mailbox last had room, so the caller logs
    /// once per episode, not once per message.
    Dropped {
        /// The first drop of this episode.
        first: bool,
    },
}

impl Inner {
    fn push(&mut self, d: Delivery) {
        self.bytes += d.queued_bytes();
        self.qos0 += usize::from(d.qos == QoS::AtMostOnce);
        self.queue.push_back(d);
        self.count_places();
    }

    fn recount(&mut self) {
        self.bytes = self.queue.iter().map(Delivery::queued_bytes).sum();
        self.qos0 = self.queue.iter().filter(|d| d.qos == QoS::AtMostOnce).count();
        self.count_places();
    }

    /// What the queue's deliveries take in `memory_limit`'s count: their places in it.
    fn count_places(&mut self) {
        self.tally.set(self.queue.len() * std::mem::size_of::<Delivery>());
    }

    /// The deliveries queued of `qos`'s class: QoS 0, or QoS 1 and 2.
    fn count_of(&self, qos: QoS) -> usize {
        match qos {
            QoS::AtMostOnce => self.qos0,
            _ => self.queue.len() - self.qos0,
        }
    }

    /// The larger of the two classes.
    fn fullest(&self) -> usize {
        self.qos0.max(self.queue.len() - self.qos0)
    }
}

impl Mailbox {
    /// A mailbox holding up to `limits`.
    pub fn new(limits: impl Into<QueueLimits>) -> Self {
        let limits = limits.into();
        let or_none = |n: usize| if n == 0 { usize::MAX / 4 } else { n };
        Mailbox {
            inner: Mutex::new(Inner::default()),
            waker: AtomicWaker::new(),
            capacity: or_none(limits.messages),
            byte_capacity: or_none(limits.bytes),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    fn drop_one(&self) -> Push {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let first = !self.warned.swap(true, Ordering::Relaxed);
        Push::Dropped { first }
    }

    /// True when a congested mailbox has room again: at half its capacity (and half its
    /// bytes), so that a publisher let go has room for many messages, not one.
    fn at_low_water(&self, inner: &Inner) -> bool {
        inner.fullest() <= self.capacity / 2 && inner.bytes <= self.byte_capacity / 2
    }

    /// After deliveries were taken out, and releasing the lock: an empty queue gives back the
    /// memory of a burst, so an idle session stays small, and a congested mailbox back at its
    /// low water lets its publishers go (notified once the lock is released).
    fn relieve(&self, mut inner: MutexGuard<'_, Inner>) {
        if inner.queue.is_empty() {
            if inner.queue.capacity() > 64 {
                inner.queue = VecDeque::new();
            }
            self.warned.store(false, Ordering::Relaxed);
        }
        if inner.congested_since.is_some() && self.at_low_water(&inner) {
            self.let_publishers_go(inner);
        }
    }

    /// Ends congestion: the publishers waiting for room are notified once the lock is
    /// released.
    fn let_publishers_go(&self, mut inner: MutexGuard<'_, Inner>) {
        inner.congested_since = None;
        let space = inner.space.take();
        drop(inner);
        if let Some(space) = space {
            space.notify_waiters();
        }
    }

    /// Queues a delivery and wakes the session's connection; `online` says whether a
    /// connection is there to drain it (an offline session's queue is a hard limit).
    pub fn push(&self, d: Delivery, online: bool) -> Push {
        self.push_with(d, online, |_| {})
    }

    /// [`Mailbox::push`], calling `queuing` on the delivery when it is queued, before anyone
    /// can take it (the store records it there: its record always comes before the record
    /// of its acknowledgement).
    pub fn push_with(&self, d: Delivery, online: bool, queuing: impl FnOnce(&mut Delivery)) -> Push {
        let now = d.message.received_at;
        self.push_at(d, online, now, queuing)
    }

    /// [`Mailbox::push_with`], congestion measured from `now` rather than from when the
    /// message was received (a message handed on from a session that ended may be old:
    /// counted from then, it would make this session a slow consumer at once).
    pub fn push_at(
        &self,
        mut d: Delivery,
        online: bool,
        now: Instant,
        queuing: impl FnOnce(&mut Delivery),
    ) -> Push {
        let outcome = {
            let mut inner = self.inner.lock();
            let len = inner.count_of(d.qos);
            if self.has_space(&inner, d.qos) {
                queuing(&mut d);
                inner.push(d);
                Push::Queued
            } else if !online
                || len >= self.capacity.saturating_add(CONGESTION_SLACK)
                || inner.bytes >= self.byte_capacity.saturating_mul(2)
            {
                drop(inner);
                return self.drop_one();
            } else {
                let since = *inner.congested_since.get_or_insert(now);
                if now.saturating_duration_since(since) > SLOW_AFTER {
                    // A slow consumer: it stops slowing its publishers and loses instead.
                    drop(inner);
                    return self.drop_one();
                }
                queuing(&mut d);
                inner.push(d);
                Push::Congested
            }
        };
        self.waker.wake();
        outcome
    }

    /// [`Mailbox::push_with`] only while the mailbox is below its capacity: never congested
    /// by this delivery, nor dropping it; handed back otherwise.
    pub fn push_if_room(&self, mut d: Delivery, queuing: impl FnOnce(&mut Delivery)) -> Result<(), Delivery> {
        {
            let mut inner = self.inner.lock();
            if !self.has_space(&inner, d.qos) {
                return Err(d);
            }
            queuing(&mut d);
            inner.push(d);
        }
        self.waker.wake();
        Ok(())
    }

    /// Puts back a delivery read from the store at start, whatever the limits (it was
    /// acknowledged to its publisher): counted, so that what comes after it finds the queue
    /// as full as it was. (Kept apart from the queue, restored messages gave every restart a
    /// fresh `max_queued_messages` on top of them.)
    pub fn restore(&self, d: Delivery) {
        self.inner.lock().push(d);
    }

    /// True while a delivery of either class would be queued without congesting the mailbox.
    pub fn has_space_now(&self) -> bool {
        let inner = self.inner.lock();
        inner.fullest() < self.capacity && inner.bytes < self.byte_capacity
    }

    fn has_space(&self, inner: &Inner, qos: QoS) -> bool {
        inner.count_of(qos) < self.capacity && inner.bytes < self.byte_capacity
    }

    /// True when the mailbox has been congested longer than [`SLOW_AFTER`]: its session is a
    /// slow consumer, and what it cannot take is dropped.
    pub fn is_slow(&self, now: Instant) -> bool {
        self.inner
            .lock()
            .congested_since
            .is_some_and(|since| now.saturating_duration_since(since) > SLOW_AFTER)
    }

    /// True unless the mailbox is congested (over capacity and not yet drained to half of it)
    /// and still slowing its publishers: a publisher waiting on it may go on.
    pub fn has_room(&self, now: Instant) -> bool {
        let inner = self.inner.lock();
        match inner.congested_since {
            None => true,
            Some(since) => self.at_low_water(&inner) || now.saturating_duration_since(since) > SLOW_AFTER,
        }
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn drain_into(&self, out: &mut VecDeque<Delivery>, max: usize) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.queue.len().min(max);
        let (bytes, qos0) = inner
            .queue
            .iter()
            .take(n)
            .fold((0, 0), |(b, q), d| (b + d.queued_bytes(), q + usize::from(d.qos == QoS::AtMostOnce)));
        inner.bytes -= bytes;
        inner.qos0 -= qos0;
        out.extend(inner.queue.drain(..n));
        inner.count_places();
        self.relieve(inner);
        n
    }

    /// A copy of what waits, oldest first (the queue stays as it is).
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.inner.lock().queue.iter().cloned().collect()
    }

    /// Takes out the deliveries that came through a shared subscription.
    pub fn take_shared(&self) -> Vec<Delivery> {
        let mut inner = self.inner.lock();
        if !inner.queue.iter().any(|d| d.share.is_some()) {
            return Vec::new();
        }
        let (shared, rest): (VecDeque<Delivery>, VecDeque<Delivery>) =
            inner.queue.drain(..).partition(|d| d.share.is_some());
        inner.queue = rest;
        inner.recount();
        shared.into()
    }

    /// Drops the QoS 0 deliveries waiting (their connection went: mosquitto does not keep
    /// them for a session that is offline); returns how many.
    pub fn drop_qos0(&self) -> usize {
        let mut inner = self.inner.lock();
        let before = inner.queue.len();
        inner.queue.retain(|d| d.qos != QoS::AtMostOnce);
        let dropped = before - inner.queue.len();
        if dropped == 0 {
            return 0;
        }
        inner.recount();
        self.relieve(inner);
        dropped
    }

    /// How many deliveries are waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes everything (a clean start discards the old session's queue); returns it.
    pub fn clear(&self) -> VecDeque<Delivery> {
        let Inner { queue, space, .. } = std::mem::take(&mut *self.inner.lock());
        if let Some(space) = space {
            space.notify_waiters();
        }
        queue
    }

    /// Deliveries dropped because the mailbox was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ready when deliveries wait; otherwise the task is woken by the next push.
    pub fn poll_mail(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }

    /// Ready once at least `n` deliveries wait; otherwise the task is woken by the next push
    /// and looks again (a lazy bridge waiting for its `threshold`: no polling).
    pub fn poll_len(&self, cx: &mut std::task::Context<'_>, n: usize) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.len() >= n {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Resolves when there is room again, or after `limit` (the caller looks again: the
    /// mailbox may have become a slow consumer's meanwhile).
    pub async fn room(&self, limit: Duration) {
        let space = self.inner.lock().space.get_or_insert_with(Default::default).clone();
        let notified = space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.has_room(Instant::now()) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Message;
    use bytes::Bytes;
    use midge_codec::QoS;

    fn delivery(qos: QoS, at: Instant) -> Delivery {
        delivery_with(qos, at, Default::default())
    }

    fn delivery_with(qos: QoS, at: Instant, properties: midge_codec::Properties) -> Delivery {
        let m = Message::from_publish(
            "t".into(),
            Bytes::from_static(b"x"),
            qos,
            false,
            properties,
            "p".into(),
            at,
        );
        Delivery::plain(m)
    }

    #[test]
    fn a_full_mailbox_congests_at_every_qos_until_half_drained() {
        let t = Instant::now();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let m = Mailbox::new(4);
            for _ in 0..4 {
                assert_eq!(m.push(delivery(qos, t), true), Push::Queued);
            }
            assert_eq!(m.push(delivery(qos, t), true), Push::Congested);
            assert_eq!(m.push(delivery(qos, t), true), Push::Congested);
            assert!(!m.has_room(t));
            let mut out = VecDeque::new();
            m.drain_into(&mut out, 3);
            assert!(!m.has_room(t), "3 left, more than half of 4");
            m.drain_into(&mut out, 1);
            assert!(m.has_room(t), "half drained");
            assert_eq!(m.dropped(), 0);
        }
    }

    #[test]
    fn dropping_qos0_keeps_the_rest_in_order_and_lets_publishers_go() {
        let t = Instant::now();
        let m = Mailbox::new(4);
        let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
        for qos in [q0, q1, q0, q2, q0, q0, q0] {
            m.push(delivery(qos, t), true);
        }
        assert!(!m.has_room(t), "congested by its fifth QoS 0 delivery");
        assert_eq!(m.drop_qos0(), 5);
        assert!(m.has_room(t), "2 left of 4: publishers go on");
        let kept: Vec<QoS> = m.snapshot().iter().map(|d| d.qos).collect();
        assert_eq!(kept, [QoS::AtLeastOnce, QoS::ExactlyOnce]);
        assert_eq!(m.drop_qos0(), 0);
        assert_eq!(m.dropped(), 0, "not counted as overflow");
    }

    #[test]
    fn qos0_and_qos1_or_2_deliveries_each_have_the_capacity() {
        let t = Instant::now();
        let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
        let m = Mailbox::new(2);
        for qos in [q0, q0, q1, q2] {
            assert_eq!(m.push(delivery(qos, t), false), Push::Queued, "{qos:?}");
        }
        assert!(!m.has_space_now());
        assert_eq!(m.push(delivery(q0, t), false), Push::Dropped { first: true });
        assert_eq!(m.push(delivery(q1, t), false), Push::Dropped { first: false });
        // Online: a QoS 0 flood congests the mailbox, and what it holds of QoS 1 and 2 is
        // counted apart.
        let m = Mailbox::new(2);
        for _ in 0..2 {
            assert_eq!(m.push(delivery(q0, t), true), Push::Queued);
        }
        assert_eq!(m.push(delivery(q0, t), true), Push::Congested);
        assert_eq!(m.push(delivery(q1, t), true), Push::Queued, "QoS 1 has room of its own");
        let mut out = VecDeque::new();
        m.drain_into(&mut out, 2);
        assert!(m.has_room(t), "one of each left: at half of 2");
        assert_eq!(m.push(delivery(q0, t), true), Push::Queued);
        assert_eq!(m.push(delivery(q2, t), true), Push::Queued);
        assert_eq!(m.push(delivery(q2, t), true), Push::Congested);
    }

    #[test]
    fn an_offline_mailbox_drops_beyond_its_capacity() {
        let t = Instant::now();
        let m = Mailbox::new(2);
        m.push(delivery(QoS::AtLeastOnce, t), false);
        m.push(delivery(QoS::AtLeastOnce, t), false);
        assert_eq!(m.push(delivery(QoS::ExactlyOnce, t), false), Push::Dropped { first: true });
        assert_eq!(m.push(delivery(QoS::ExactlyOnce, t), false), Push::Dropped { first: false });
        assert!(m.has_room(t), "an offline mailbox never holds a publisher");
        assert_eq!(m.dropped(), 2);
    }

    #[test]
    fn a_session_going_offline_lets_its_publishers_go() {
        let t = Instant::now();
        let h = SessionHandle::new("s".into(), 2);
        h.set_online(true);
        for _ in 0..3 {
            h.mailbox.push(delivery(QoS::AtLeastOnce, t), true);
        }
        assert!(!h.mailbox.has_room(t), "congested");
        let waiter = h.mailbox.inner.lock().space.get_or_insert_with(Default::default).clone();
        let notified = waiter.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        h.set_online(false);
        assert!(h.mailbox.has_room(t), "offline: it holds no publisher up");
        assert_eq!(h.mailbox.len(), 3, "what it holds stays for the session");
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            std::future::Future::poll(notified.as_mut(), &mut cx).is_ready(),
            "the waiting publisher is woken"
        );
    }

    #[test]
    fn a_slow_consumer_drops_instead_of_holding_publishers() {
        let t = Instant::now();
        let m = Mailbox::new(1);
        m.push(delivery(QoS::AtLeastOnce, t), true);
        assert_eq!(m.push(delivery(QoS::AtLeastOnce, t), true), Push::Congested);
        let later = t + SLOW_AFTER + Duration::from_millis(1);
        assert!(m.has_room(later), "no longer slows its publishers");
        assert!(matches!(m.push(delivery(QoS::AtLeastOnce, later), true), Push::Dropped { .. }));
    }

    #[test]
    fn max_queued_bytes_fills_a_mailbox_before_its_count_does() {
        // Payloads of 1 byte: 3 bytes of room, 100 deliveries.
        let t = Instant::now();
        let m = Mailbox::new(QueueLimits { messages: 100, bytes: 3 });
        for _ in 0..3 {
            assert_eq!(m.push(delivery(QoS::AtLeastOnce, t), false), Push::Queued);
        }
        assert_eq!(
            m.push(delivery(QoS::AtLeastOnce, t), false),
            Push::Dropped { first: true },
            "offline: dropped"
        );
        assert_eq!(
            m.push(delivery(QoS::AtLeastOnce, t), true),
            Push::Congested,
            "online: the publisher waits"
        );
        let mut out = VecDeque::new();
        m.drain_into(&mut out, 2);
        assert!(!m.has_room(t), "2 bytes left, more than half of 3");
        m.drain_into(&mut out, 1);
        assert!(m.has_room(t));
        assert_eq!(m.push(delivery(QoS::AtLeastOnce, t), false), Push::Queued, "its bytes were given back");
    }

    #[test]
    fn max_queued_bytes_counts_what_properties_hold() {
        // A payload of 1 byte with 1,000 user properties is not a message of 1 byte.
        let t = Instant::now();
        let mut props = midge_codec::Properties::new();
        for _ in 0..1000 {
            props.push(midge_codec::Property::UserProperty("a".into(), "b".into()));
        }
        let heavy = || {
            let d = delivery_with(QoS::AtLeastOnce, t, props.clone());
            assert!(d.message.queued_bytes() > 100_000, "{}", d.message.queued_bytes());
            d
        };
        let m = Mailbox::new(QueueLimits { messages: 100, bytes: 200_000 });
        assert_eq!(m.push(heavy(), false), Push::Queued);
        assert_eq!(m.push(heavy(), false), Push::Queued);
        assert!(matches!(m.push(heavy(), false), Push::Dropped { .. }), "200,000 bytes reached");
        let mut out = VecDeque::new();
        m.drain_into(&mut out, 2);
        assert_eq!(m.push(heavy(), false), Push::Queued, "what is taken is given back, as counted");
    }
}
