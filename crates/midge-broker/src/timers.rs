//! Every session's timers in one place: a heap of deadlines swept a few times a second,
//! instead of a timer in each connection's task (which would cost each idle connection a
//! timer's memory).
//!
//! A connection leaves its session's next deadline ([`crate::session::Session::poll_timeout`])
//! in its [`ControlSlot`]; the heap holds the earliest time to look at it. A deadline that
//! comes due for a session whose deadline moved on meanwhile (a client that sent a packet) is
//! pushed back; one that has really passed is sent to the connection as
//! [`Control::Timeout`], and the session decides what it means. Parked sessions (no
//! connection) are here too: their expiry and their delayed wills.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytestring::ByteString;
use parking_lot::Mutex;

use crate::control::{Control, ControlSlot};

#[derive(Debug)]
enum Target {
    Connection(Weak<ControlSlot>),
    /// Boxed: the heap holds one entry per connection, which stays small.
    Parked(Box<ByteString>),
}

#[derive(Debug)]
struct Due {
    at_ms: u64,
    seq: u64,
    target: Target,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

#[derive(Debug, Default)]
struct Heap {
    entries: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Heap {
    fn push(&mut self, at_ms: u64, target: Target) {
        self.seq += 1;
        let seq = self.seq;
        self.entries.push(Reverse(Due { at_ms, seq, target }));
    }
}

/// The deadlines of every session.
#[derive(Debug)]
pub struct Timers {
    epoch: Instant,
    heap: Mutex<Heap>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { epoch: Instant::now(), heap: Mutex::new(Heap::default()) }
    }
}

impl Timers {
    /// Milliseconds on the timers' clock.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A connection's session says when it next needs the time (`None`: not until something
    /// happens). Later deadlines cost an atomic store: the heap is only touched when the new
    /// deadline comes before the time it will look at this slot anyway.
    pub fn watch(&self, slot: &Arc<ControlSlot>, deadline: Option<Instant>) {
        let ms = deadline.map_or(u64::MAX, |d| self.ms(d));
        slot.set_deadline_ms(ms);
        if ms >= slot.watched_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut heap = self.heap.lock();
        if ms < slot.watched_ms.load(Ordering::Relaxed) {
            slot.watched_ms.store(ms, Ordering::Relaxed);
            heap.push(ms, Target::Connection(Arc::downgrade(slot)));
        }
    }

    /// A parked session has something due at `at`: its expiry or its delayed will.
    pub fn park(&self, client_id: ByteString, at: Instant) {
        let ms = self.ms(at);
        self.heap.lock().push(ms, Target::Parked(Box::new(client_id)));
    }

    /// Tells every connection whose deadline has passed ([`Control::Timeout`]); returns the
    /// client ids of parked sessions with something due, for the broker to look at.
    pub fn fire(&self, now: Instant) -> Vec<ByteString> {
        let now_ms = self.ms(now);
        let mut parked = Vec::new();
        let mut heap = self.heap.lock();
        while heap.entries.peek().is_some_and(|Reverse(d)| d.at_ms <= now_ms) {
            let Some(Reverse(due)) = heap.entries.pop() else { break };
            match due.target {
                Target::Parked(id) => parked.push(*id),
                Target::Connection(weak) => {
                    let Some(slot) = weak.upgrade() else { continue };
                    let deadline = slot.deadline_ms();
                    if deadline <= now_ms {
                        // The connection says again when it next needs the time.
                        slot.watched_ms.store(u64::MAX, Ordering::Relaxed);
                        slot.send(Control::Timeout);
                    } else {
                        slot.watched_ms.store(deadline, Ordering::Relaxed);
                        if deadline != u64::MAX {
                            heap.push(deadline, Target::Connection(weak));
                        }
                    }
                }
            }
        }
        parked
    }

    /// Entries in the heap (for tests and metrics).
    pub fn len(&self) -> usize {
        self.heap.lock().entries.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_that_moved_on_is_looked_at_again_later() {
        let timers = Timers::default();
        let t = timers.epoch;
        let quiet = ControlSlot::new();
        let busy = ControlSlot::new();
        timers.watch(&quiet, Some(t + Duration::from_millis(3000)));
        timers.watch(&busy, Some(t + Duration::from_millis(3000)));
        // The busy client sent a packet: its deadline moved, the heap was not touched.
        timers.watch(&busy, Some(t + Duration::from_millis(5500)));
        assert_eq!(timers.len(), 2);
        assert!(timers.fire(t + Duration::from_millis(2999)).is_empty());
        timers.fire(t + Duration::from_millis(3000));
        assert!(matches!(quiet.try_recv(), Some(Control::Timeout)));
        assert!(busy.try_recv().is_none(), "its deadline moved to 5.5 s");
        timers.fire(t + Duration::from_millis(5500));
        assert!(matches!(busy.try_recv(), Some(Control::Timeout)));
        // An earlier deadline than the one watched is pushed at once.
        timers.watch(&busy, Some(t + Duration::from_millis(9000)));
        timers.watch(&busy, Some(t + Duration::from_millis(6000)));
        timers.fire(t + Duration::from_millis(6000));
        assert!(matches!(busy.try_recv(), Some(Control::Timeout)));
    }

    #[test]
    fn parked_sessions_come_due() {
        let timers = Timers::default();
        let t = timers.epoch;
        timers.park("a".into(), t + Duration::from_secs(5));
        assert!(timers.fire(t + Duration::from_secs(4)).is_empty());
        assert_eq!(timers.fire(t + Duration::from_secs(5)), vec![ByteString::from("a")]);
    }
}
