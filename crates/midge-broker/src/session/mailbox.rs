//! The bounded queue of deliveries waiting for a session.
//!
//! Publishers push into it from any thread and never wait. QoS 0 deliveries beyond the
//! capacity are dropped and counted. QoS 1 and 2 deliveries to a session that is online may
//! go past the capacity for a while: the push reports the mailbox as congested, and the
//! publisher's connection holds its acknowledgement until there is room again, so the
//! publisher slows through MQTT flow control instead of losing messages. A mailbox that
//! stays congested longer than [`SLOW_AFTER`] belongs to a slow consumer: from then on it
//! drops, so that it never slows anyone else. An empty mailbox holds no allocation, which
//! keeps idle connections small.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use midge_codec::QoS;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::message::Delivery;

/// How long a mailbox may stay over capacity and still slow its publishers.
pub const SLOW_AFTER: Duration = Duration::from_secs(2);
/// How far past its capacity a congested mailbox may go (QoS 1 / 2 to an online session):
/// publishers stop being read once their acknowledgements are held, so this is reached only
/// with very many publishers at once.
const CONGESTION_SLACK: usize = 4_000;

/// A session's queue of deliveries.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// The session's connection, woken by each push.
    waker: AtomicWaker,
    space: Notify,
    capacity: usize,
    dropped: AtomicU64,
    warned: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    /// When the mailbox went over capacity (by the clock of the messages that took it there).
    congested_since: Option<Instant>,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Queued past the capacity: the publisher should wait for room before acknowledging.
    Congested,
    /// The mailbox was full: dropped. `first` is true for the first drop since the mailbox
    /// last had room, so the caller logs once per episode, not once per message.
    Dropped {
        /// The first drop of this episode.
        first: bool,
    },
}

impl Mailbox {
    /// A mailbox holding `capacity` deliveries.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            inner: Mutex::new(Inner::default()),
            waker: AtomicWaker::new(),
            space: Notify::new(),
            capacity,
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    fn drop_one(&self) -> Push {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let first = !self.warned.swap(true, Ordering::Relaxed);
        Push::Dropped { first }
    }

    /// Queues a delivery and wakes the session's connection; `online` says whether a
    /// connection is there to drain it (an offline session's queue is a hard limit).
    pub fn push(&self, d: Delivery, online: bool) -> Push {
        let outcome = {
            let mut inner = self.inner.lock();
            let len = inner.queue.len();
            if len < self.capacity {
                inner.queue.push_back(d);
                Push::Queued
            } else if d.qos == QoS::AtMostOnce || !online || len >= self.capacity + CONGESTION_SLACK {
                drop(inner);
                return self.drop_one();
            } else {
                let now = d.message.received_at;
                let since = *inner.congested_since.get_or_insert(now);
                if now.saturating_duration_since(since) > SLOW_AFTER {
                    // A slow consumer: it stops slowing its publishers and loses instead.
                    drop(inner);
                    return self.drop_one();
                }
                inner.queue.push_back(d);
                Push::Congested
            }
        };
        self.waker.wake();
        outcome
    }

    /// True while the mailbox is under its capacity: a held acknowledgement may go.
    pub fn has_room(&self) -> bool {
        self.inner.lock().queue.len() < self.capacity
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn drain_into(&self, out: &mut VecDeque<Delivery>, max: usize) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.queue.len().min(max);
        out.extend(inner.queue.drain(..n));
        let was_congested = inner.queue.len() < self.capacity && inner.congested_since.take().is_some();
        if inner.queue.is_empty() {
            // Give back the memory of a burst, so an idle session stays small.
            if inner.queue.capacity() > 64 {
                inner.queue = VecDeque::new();
            }
            self.warned.store(false, Ordering::Relaxed);
        }
        drop(inner);
        if was_congested {
            self.space.notify_waiters();
        }
        n
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
        shared.into()
    }

    /// How many deliveries are waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes everything (a clean start discards the old session's queue).
    pub fn clear(&self) {
        *self.inner.lock() = Inner::default();
        self.space.notify_waiters();
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

    /// Resolves when there is room again (or after `limit`), for a publisher holding an
    /// acknowledgement.
    pub async fn room(&self, limit: Duration) {
        let notified = self.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.has_room() {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}
