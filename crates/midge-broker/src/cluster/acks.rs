//! Which of the node's QoS 1 and 2 messages JetStream has acknowledged. Each such message
//! gets a ticket (1, 2, 3, … in the order the outbox hands them out); JetStream's PubAcks
//! come back in any order (a publish that failed is sent again later); a publisher's
//! PUBACK or PUBREC waits until its message's ticket, and every ticket before it, is
//! acknowledged: the *floor*. What is acknowledged above the floor is remembered until the
//! floor reaches it.
use std::collections::BTreeSet;

/// Acknowledged tickets.
#[derive(Debug, Default)]
pub struct Acks {
    /// Every ticket up to this one is acknowledged.
    floor: u64,
    /// Acknowledged tickets above `floor + 1`.
    above: BTreeSet<u64>,
}

impl Acks {
    /// Every ticket up to this one is acknowledged.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Ticket `t` is acknowledged; returns the floor, moved or not.
    pub fn ack(&mut self, t: u64) -> u64 {
        if t <= self.floor {
            return self.floor;
        }
        if t != self.floor + 1 {
            self.above.insert(t);
            return self.floor;
        }
        self.floor = t;
        while self.above.first() == Some(&(self.floor + 1)) {
            self.above.pop_first();
            self.floor += 1;
        }
        self.floor
    }

    /// Tickets acknowledged above the floor (held while an earlier one waits).
    pub fn held(&self) -> usize {
        self.above.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_moves_the_floor() {
        let mut a = Acks::default();
        assert_eq!(a.ack(1), 1);
        assert_eq!(a.ack(2), 2);
        assert_eq!(a.ack(2), 2);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn a_gap_holds_the_floor() {
        let mut a = Acks::default();
        assert_eq!(a.ack(2), 0);
        assert_eq!(a.ack(3), 0);
        assert_eq!(a.held(), 2);
        assert_eq!(a.ack(1), 3);
        assert_eq!(a.held(), 0);
    }

    proptest! {
        #[test]
        fn any_order_ends_at_the_last(order in Just((1..=200u64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut a = Acks::default();
            let mut floor = 0;
            for t in order {
                let f = a.ack(t);
                prop_assert!(f >= floor);
                floor = f;
            }
            prop_assert_eq!(floor, 200);
            prop_assert_eq!(a.held(), 0);
        }
    }
}
