//! Keep alive for every connection from one place: a heap of deadlines swept a few times
//! a second, instead of a timer in each connection's task (which would cost each idle
//! connection a timer's memory). A deadline that comes due for a client that has been active
//! since is pushed back; one that has really passed closes the connection (1.5 times the
//! keep alive without a packet [MQTT-3.1.2-22], 3.1.1: [MQTT-3.1.2-24]).
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use crate::registry::{Control, ControlSlot};

#[derive(Debug)]
struct Due {
    at_ms: u64,
    seq: u64,
    slot: Weak<ControlSlot>,
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

/// The keep-alive deadlines of all connections.
#[derive(Debug)]
pub struct KeepAlive {
    epoch: Instant,
    heap: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive { epoch: Instant::now(), heap: Mutex::new((BinaryHeap::new(), 0)) }
    }
}

impl KeepAlive {
    /// Milliseconds on the keep-alive clock.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Starts watching a connection whose client asked for `keep_alive` seconds (0: none).
    pub fn watch(&self, slot: &Arc<ControlSlot>, keep_alive: u16, now: Instant) {
        if keep_alive == 0 {
            return;
        }
        let grace = u64::from(keep_alive) * 1500;
        let now_ms = self.ms(now);
        slot.set_grace(grace, now_ms);
        let mut h = self.heap.lock();
        h.1 += 1;
        let seq = h.1;
        h.0.push(Reverse(Due { at_ms: now_ms + grace, seq, slot: Arc::downgrade(slot) }));
    }

    /// Closes the connections whose keep alive has run out; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let now_ms = self.ms(now);
        let mut closed = 0;
        let mut h = self.heap.lock();
        while h.0.peek().is_some_and(|Reverse(d)| d.at_ms <= now_ms) {
            let Some(Reverse(due)) = h.0.pop() else { break };
            let Some(slot) = due.slot.upgrade() else { continue };
            let (last, grace) = slot.keep_alive();
            let deadline = last + grace;
            if now_ms >= deadline {
                slot.send(Control::KeepAliveTimeout);
                closed += 1;
            } else {
                h.1 += 1;
                let seq = h.1;
                h.0.push(Reverse(Due { at_ms: deadline, seq, slot: due.slot }));
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn closes_after_one_and_a_half_keep_alives_of_silence() {
        let k = KeepAlive::default();
        let t = k.epoch;
        let quiet = ControlSlot::new();
        let busy = ControlSlot::new();
        k.watch(&quiet, 2, t);
        k.watch(&busy, 2, t);
        busy.touch(k.ms(t + Duration::from_millis(2500)));
        assert_eq!(k.sweep(t + Duration::from_millis(2999)), 0);
        assert_eq!(k.sweep(t + Duration::from_millis(3000)), 1);
        assert!(matches!(quiet.try_recv(), Some(Control::KeepAliveTimeout)));
        assert!(busy.try_recv().is_none(), "its deadline moved to 5.5 s");
        assert_eq!(k.sweep(t + Duration::from_millis(5500)), 1);
        assert!(matches!(busy.try_recv(), Some(Control::KeepAliveTimeout)));
    }
}
