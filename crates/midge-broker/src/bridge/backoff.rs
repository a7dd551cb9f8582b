//! When a bridge tries again (`restart_timeout`): a constant wait, or with a cap mosquitto's
//! "decorrelated jitter" backoff: each wait is drawn between the base and three times the
//! last one, never above the cap, and a connection that succeeds starts it over.
use std::time::Duration;

/// The waits between a bridge's connection attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: u64,
    cap: Option<u64>,
    current: u64,
}

impl Backoff {
    /// `restart_timeout BASE [CAP]`, in seconds.
    pub fn new(base: u64, cap: Option<u64>) -> Backoff {
        let base = base.max(1);
        Backoff { base, cap, current: base }
    }

    /// The next wait; `random` is any random number (the caller draws it).
    pub fn next(&mut self, random: u64) -> Duration {
        let wait = self.current;
        if let Some(cap) = self.cap {
            let high = self.current.saturating_mul(3).max(self.base);
            let span = high - self.base + 1;
            self.current = (self.base + random % span).min(cap);
        }
        Duration::from_secs(wait)
    }

    /// A connection succeeded: the next loss waits the base again.
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_value_is_a_constant_wait() {
        let mut b = Backoff::new(5, None);
        for r in [0, 7, u64::MAX] {
            assert_eq!(b.next(r), Duration::from_secs(5));
        }
    }

    #[test]
    fn with_a_cap_the_waits_grow_within_bounds_and_reset() {
        let mut b = Backoff::new(2, Some(30));
        let mut last = 2;
        for r in [u64::MAX, 123_456, 99, u64::MAX - 5, 42, 7] {
            let w = b.next(r).as_secs();
            assert!((2..=30).contains(&w) && w <= last.max(2) * 3, "{w} after {last}");
            last = w;
        }
        // Always the highest draw: reaches the cap and stays there.
        for _ in 0..10 {
            b.next(u64::MAX - 1);
        }
        assert!(b.next(0).as_secs() <= 30);
        b.reset();
        assert_eq!(b.next(0), Duration::from_secs(2));
    }
}
