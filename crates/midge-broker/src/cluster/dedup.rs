//! One delivery per message per node. NATS delivers a message once per matching
//! subscription of a connection, and a node's MQTT filters overlap (`a/#` and `a/b`), so a
//! message can arrive several times; each subscription has its own queue in the client, so
//! the copies (and messages of one origin) can arrive out of order. Each message carries its
//! origin and a number that origin gives in order; a node remembers, per origin, the numbers
//! seen in a window below the highest, and drops what it has seen.

use std::collections::HashMap;

/// How many numbers below the highest are remembered per origin: more than the messages one
/// subscription's queue can hold ahead of another's (see the client's subscription capacity).
pub const WINDOW: u64 = 1 << 16;

const WORDS: usize = (WINDOW / 64) as usize;

/// What was seen of one origin.
#[derive(Debug)]
struct Seen {
    highest: u64,
    /// Bit `n % WINDOW` is set when `n`, within the window, was seen.
    bits: Box<[u64; WORDS]>,
}

impl Seen {
    fn bit(n: u64) -> (usize, u64) {
        let i = n % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }
}

/// The numbers seen of each origin.
#[derive(Debug, Default)]
pub struct Dedup {
    origins: HashMap<String, Seen>,
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time: deliver it.
    New,
    /// Seen already: drop it.
    Duplicate,
    /// Older than the window: it cannot be told from a copy, and is dropped.
    TooOld,
}

impl Dedup {
    /// Records message `seq` of `origin`, and says whether it is new.
    pub fn check(&mut self, origin: &str, seq: u64) -> Verdict {
        let seen = match self.origins.get_mut(origin) {
            Some(s) => s,
            None => {
                let mut s = Seen { highest: seq, bits: Box::new([0; WORDS]) };
                let (w, m) = Seen::bit(seq);
                s.bits[w] |= m;
                self.origins.insert(origin.to_owned(), s);
                return Verdict::New;
            }
        };
        if seq > seen.highest {
            // Forget the numbers that leave the window (at most all of it).
            let mut n = seen.highest + 1;
            let end = seq.min(seen.highest + WINDOW);
            while n <= end {
                let (w, m) = Seen::bit(n);
                if m == 1 && n + 63 <= end {
                    seen.bits[w] = 0;
                    n += 64;
                    continue;
                }
                seen.bits[w] &= !m;
                n += 1;
            }
            seen.highest = seq;
        } else if seen.highest - seq >= WINDOW {
            return Verdict::TooOld;
        }
        let (w, m) = Seen::bit(seq);
        if seen.bits[w] & m != 0 {
            return Verdict::Duplicate;
        }
        seen.bits[w] |= m;
        Verdict::New
    }

    /// Forgets an origin (a node that restarted has a new one).
    pub fn forget(&mut self, origin: &str) {
        self.origins.remove(origin);
    }

    /// How many origins are remembered.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn copies_are_dropped_in_any_order() {
        let mut d = Dedup::default();
        assert_eq!(d.check("a/1", 1), Verdict::New);
        assert_eq!(d.check("a/1", 3), Verdict::New);
        assert_eq!(d.check("a/1", 2), Verdict::New);
        assert_eq!(d.check("a/1", 1), Verdict::Duplicate);
        assert_eq!(d.check("a/1", 3), Verdict::Duplicate);
        assert_eq!(d.check("b/1", 3), Verdict::New);
        assert_eq!(d.check("a/1", 3 + WINDOW), Verdict::New);
        assert_eq!(d.check("a/1", 3), Verdict::TooOld);
        assert_eq!(d.check("a/1", 4), Verdict::New);
        assert_eq!(d.check("a/1", 4), Verdict::Duplicate);
        assert_eq!(d.check("a/1", 10 * WINDOW), Verdict::New);
        assert_eq!(d.check("a/1", 10 * WINDOW - 1), Verdict::New);
    }

    proptest! {
        /// Messages numbered in order, each delivered one to three times, shuffled within a
        /// distance smaller than the window: each is new exactly once.
        #[test]
        fn each_message_once(copies in prop::collection::vec(1usize..4, 1..300), seed in any::<u64>()) {
            let mut arrivals: Vec<u64> = copies.iter().enumerate()
                .flat_map(|(i, &c)| std::iter::repeat_n(i as u64 + 1, c)).collect();
            // A deterministic shuffle of neighbours.
            let mut x = seed | 1;
            for i in (1..arrivals.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let j = i - (x as usize % 8).min(i);
                arrivals.swap(i, j);
            }
            let mut d = Dedup::default();
            let mut new = 0;
            for n in arrivals {
                match d.check("o", n) {
                    Verdict::New => new += 1,
                    Verdict::Duplicate => {}
                    Verdict::TooOld => prop_assert!(false, "too old"),
                }
            }
            prop_assert_eq!(new, copies.len());
        }
    }
}
