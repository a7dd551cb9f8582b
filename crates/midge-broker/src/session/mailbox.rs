//! The bounded queue of deliveries waiting for a session.
//!
//! Publishers push into it from any thread and never wait: when it is full the delivery is
//! dropped and counted, so a slow or offline subscriber never slows anyone else and its memory
//! stays bounded. An empty mailbox holds no allocation, which keeps idle connections small.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::message::Delivery;

/// A session's queue of deliveries.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Delivery>>,
    notify: Notify,
    capacity: usize,
    dropped: AtomicU64,
    warned: AtomicBool,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The mailbox was full: dropped. `first` is true for the first drop since the mailbox
    /// last had room, so the caller logs once per episode, not once per message.
    Dropped {
        /// The first drop of this episode.
        first: bool,
    },
}

impl Mailbox {
    /// A mailbox holding at most `capacity` deliveries.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity,
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// Queues a delivery unless the mailbox is full, and wakes the session's connection.
    pub fn push(&self, d: Delivery) -> Push {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let first = !self.warned.swap(true, Ordering::Relaxed);
                return Push::Dropped { first };
            }
            q.push_back(d);
        }
        self.notify.notify_one();
        Push::Queued
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn drain_into(&self, out: &mut VecDeque<Delivery>, max: usize) -> usize {
        let mut q = self.queue.lock();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        if q.is_empty() {
            // Give back the memory of a burst, so an idle session stays small.
            if q.capacity() > 64 {
                *q = VecDeque::new();
            }
            self.warned.store(false, Ordering::Relaxed);
        }
        n
    }

    /// Takes out the deliveries that came through a shared subscription.
    pub fn take_shared(&self) -> Vec<Delivery> {
        let mut q = self.queue.lock();
        if !q.iter().any(|d| d.share.is_some()) {
            return Vec::new();
        }
        let (shared, rest): (VecDeque<Delivery>, VecDeque<Delivery>) =
            q.drain(..).partition(|d| d.share.is_some());
        *q = rest;
        shared.into()
    }

    /// How many deliveries are waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes everything (a clean start discards the old session's queue).
    pub fn clear(&self) {
        *self.queue.lock() = VecDeque::new();
    }

    /// Deliveries dropped because the mailbox was full, since it was created.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves when a delivery may have arrived since the last drain.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}
