//! Slows down repeated login failures from one address, so that guessing passwords is slow:
//! past [`FREE_FAILURES`] failures, each login from the address waits before its password is
//! checked (100 ms, then twice as long after each further failure: 200 ms, ...) up to a
//! maximum; a success or ten quiet minutes forget the address. The first failures go
//! unslowed, as with mosquitto (which has no delay), so that a user mistyping a password or
//! a test running through wrong ones is not held up; a guesser's long-run rate is what the
//! delay bounds (at most one guess per `auth_failure_delay` per address), and 20 more guesses
//! every ten quiet minutes do not change it much. The wait comes before the check, not
//! after it, so a flooding address costs no CPU while it waits. An IPv6 /64 is one address
//! ([`source_of`]).
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::turns::source_of;

const FORGET_AFTER: Duration = Duration::from_secs(600);
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Failures from an address before its logins are slowed down.
pub const FREE_FAILURES: u32 = 20;
const MAX_TRACKED: usize = 100_000;

/// Failures by address.
#[derive(Debug)]
pub struct FailureLimiter {
    max_delay: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// A limiter whose delays grow up to `max_delay` (zero turns it off).
    pub fn new(max_delay: Duration) -> Self {
        FailureLimiter { max_delay, failures: Mutex::new(HashMap::new()) }
    }

    /// How long a login from `ip` waits before its password is checked: nothing unless its
    /// address failed recently.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.max_delay.is_zero() {
            return Duration::ZERO;
        }
        match self.failures.lock().get(&source_of(ip)) {
            Some(&(n, last)) if now.duration_since(last) < FORGET_AFTER => self.after(n),
            _ => Duration::ZERO,
        }
    }

    /// The delay owed after `n` failures.
    fn after(&self, n: u32) -> Duration {
        if n <= FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (n - FREE_FAILURES - 1).min(16);
        (FIRST_DELAY * 2u32.pow(doublings)).min(self.max_delay)
    }

    /// Records a failure from `ip`; returns how long its next login waits ([`Self::delay`]).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        if self.max_delay.is_zero() {
            return Duration::ZERO;
        }
        let ip = source_of(ip);
        let mut f = self.failures.lock();
        if f.len() >= MAX_TRACKED {
            f.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        let entry = f.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let n = entry.0;
        drop(f);
        self.after(n)
    }

    /// A successful login forgets the address's failures.
    pub fn succeeded(&self, ip: IpAddr) {
        if !self.max_delay.is_zero() {
            self.failures.lock().remove(&source_of(ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset() {
        let l = FailureLimiter::new(Duration::from_millis(500));
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let t = Instant::now();
        assert_eq!(l.delay(ip, t), Duration::ZERO, "no failure yet");
        let free = |ip| (0..FREE_FAILURES).map(|_| l.failed(ip, t).as_millis()).collect::<Vec<_>>();
        assert_eq!(free(ip), vec![0; FREE_FAILURES as usize], "the first failures are not slowed");
        let delays: Vec<u128> = (0..5).map(|_| l.failed(ip, t).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        assert_eq!(l.delay(ip, t).as_millis(), 500, "what the next login waits");
        assert_eq!(l.delay(ip, t + FORGET_AFTER), Duration::ZERO, "forgotten");
        free(other);
        assert_eq!(l.failed(other, t).as_millis(), 100, "per address");
        l.succeeded(ip);
        free(ip);
        assert_eq!(l.failed(ip, t).as_millis(), 100);
        assert_eq!(l.failed(ip, t + FORGET_AFTER + Duration::from_secs(1)).as_millis(), 0);
        assert_eq!(FailureLimiter::new(Duration::ZERO).failed(ip, t), Duration::ZERO);
    }
}
