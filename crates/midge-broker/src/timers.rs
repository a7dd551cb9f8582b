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
    /// Entries after the last sweep ([`Timers::sweep`]).
    swept_len: usize,
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

    /// Drops the entries nothing will come of, once the heap has grown to twice what it held
    /// after the last sweep (and by 256 more): a connection's deadline when the connection
    /// is gone or looks at another time, a parked session's time when `parked_at` (the
    /// registry) no longer has it due then (the client came back; parked again, its session
    /// has new times). Without it, every connection closed left an entry until its keep
    /// alive had passed (27 hours at most), and every session parked one until its expiry
    /// (years), however often the same client came back.
    pub fn sweep(&self, mut parked_at: impl FnMut(&ByteString) -> [Option<Instant>; 2]) {
        let entries = {
            let mut heap = self.heap.lock();
            if heap.entries.len() <= 2 * heap.swept_len + 256 {
                return;
            }
            std::mem::take(&mut heap.entries)
        };
        // Out of the lock: the registry is asked about each parked session.
        let kept: Vec<Reverse<Due>> = entries
            .into_iter()
            .filter(|Reverse(due)| match &due.target {
                Target::Connection(weak) => {
                    weak.upgrade().is_some_and(|slot| slot.watched_ms.load(Ordering::Relaxed) == due.at_ms)
                }
                Target::Parked(id) => parked_at(id).into_iter().flatten().any(|at| self.ms(at) == due.at_ms),
            })
            .collect();
        let mut heap = self.heap.lock();
        heap.entries.extend(kept);
        heap.swept_len = heap.entries.len();
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

    #[test]
    fn what_nothing_will_come_of_is_swept() {
        let timers = Timers::default();
        let t = timers.epoch;
        // One client parked and back 5,000 times (its session parked each time with a new
        // expiry), 3,000 connections closed with their keep alive still running, and one
        // connection and one parked session that are live.
        for i in 0..5_000 {
            timers.park("again".into(), t + Duration::from_secs(1_000_000 + i));
        }
        for _ in 0..3_000 {
            timers.watch(&ControlSlot::new(), Some(t + Duration::from_secs(98_000)));
        }
        let live = ControlSlot::new();
        timers.watch(&live, Some(t + Duration::from_secs(60)));
        timers.park("parked".into(), t + Duration::from_secs(3_600));
        let registry = |id: &ByteString| match id.as_ref() {
            "again" => [Some(t + Duration::from_secs(1_000_000 + 4_999)), None],
            "parked" => [None, Some(t + Duration::from_secs(3_600))],
            _ => [None, None],
        };
        assert_eq!(timers.len(), 8_002);
        timers.sweep(registry);
        assert_eq!(timers.len(), 3, "the live connection, the parked session, the last parking");
        // Not again until the heap has grown: a sweep costs a look at every entry.
        for i in 0..200 {
            timers.park("again".into(), t + Duration::from_secs(i));
        }
        timers.sweep(registry);
        assert_eq!(timers.len(), 203);
        // What was kept still comes due.
        assert_eq!(
            timers.fire(t + Duration::from_secs(3_600)).iter().filter(|id| *id == "parked").count(),
            1
        );
        assert!(matches!(live.try_recv(), Some(Control::Timeout)));
    }
}
