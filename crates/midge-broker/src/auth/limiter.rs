//! Slows down repeated login failures from one address, so that guessing passwords is slow:
//! after the first failure, each login from the address waits before its password is checked
//! (100 ms, then twice as long after each further failure: 200 ms, ...) up to a maximum; a
//! success or ten quiet minutes forget the address. The wait comes before the check, not
//! after it, so a flooding address costs no CPU while it waits. An IPv6 /64 is one address
//! ([`source_of`]).
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::turns::source_of;

const FORGET_AFTER: Duration = Duration::from_secs(600);
const FIRST_DELAY: Duration = Duration::from_millis(100);
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
        let doublings = n.saturating_sub(1).min(16);
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
        let delays: Vec<u128> = (0..5).map(|_| l.failed(ip, t).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        assert_eq!(l.delay(ip, t).as_millis(), 500, "what the next login waits");
        assert_eq!(l.delay(ip, t + FORGET_AFTER), Duration::ZERO, "forgotten");
        assert_eq!(l.failed(other, t).as_millis(), 100, "per address");
        l.succeeded(ip);
        assert_eq!(l.failed(ip, t).as_millis(), 100);
        assert_eq!(l.failed(ip, t + FORGET_AFTER + Duration::from_secs(1)).as_millis(), 100);
        assert_eq!(FailureLimiter::new(Duration::ZERO).failed(ip, t), Duration::ZERO);
    }
}
