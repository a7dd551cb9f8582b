//! One password check per source address at a time: the fairness rule in front of the
//! hashing pool ([`super::pool`]).
//!
//! The pool's queue is FIFO, so whoever sends the most CONNECTs would own it. Instead each
//! address takes turns with itself: its logins wait here, in arrival order, while one of
//! them is checked (the failure delay, the cache, the hash). A flooding address then has at
//! most one job in the shared queue, and a login from any other address waits behind at most
//! one job per busy address, not behind the flood. The waiting connections are the tasks that
//! exist anyway; each costs no CPU while it waits.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

/// The address a login counts against: an IPv4 address, or the /64 of an IPv6 one (what a
/// single host or customer is usually given, so cycling through it is one address).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The addresses with a login being checked or waiting.
#[derive(Debug, Default)]
pub struct Turns {
    /// A fair (FIFO) lock per address; an entry lives while someone holds or waits for it.
    addresses: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// An address's turn: its other logins wait until this is dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    turns: &'a Turns,
    source: IpAddr,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for the turn of `ip`'s address (its earlier logins go first).
    pub async fn take(&self, ip: IpAddr) -> Turn<'_> {
        let source = source_of(ip);
        let lock = self.addresses.lock().entry(source).or_default().clone();
        // Made before the wait: if this future is dropped while waiting, the entry is still
        // removed once no one else uses it.
        let mut turn = Turn { turns: self, source, guard: None };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    /// How many addresses have a login checked or waiting.
    pub fn len(&self) -> usize {
        self.addresses.lock().len()
    }

    /// True when no login is checked or waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut addresses = self.turns.addresses.lock();
        self.guard = None;
        // Under the map's lock: nobody can take a new reference meanwhile. One left (the
        // map's) means no holder and no waiter.
        if addresses.get(&self.source).is_some_and(|l| Arc::strong_count(l) == 1) {
            addresses.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::pool::HashPool;
    use std::time::{Duration, Instant};

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        assert_eq!(source_of("::ffff:10.0.0.5".parse().unwrap()), "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(source_of("10.0.0.5".parse().unwrap()), "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_turn_per_address_and_entries_go_away() {
        let turns = Turns::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = turns.take(a).await;
        // Another address is not held up.
        let other = tokio::time::timeout(Duration::from_secs(1), turns.take(b)).await.expect("b's turn");
        // The same address waits...
        let mut second = Box::pin(turns.take(a));
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut second).await.is_err());
        drop(first);
        // ...until the first is done.
        let second = tokio::time::timeout(Duration::from_secs(1), second).await.expect("a's second turn");
        assert_eq!(turns.len(), 2);
        drop((second, other));
        assert!(turns.is_empty(), "no entry outlives its logins");
        // A waiter that gives up leaves nothing behind either.
        let held = turns.take(a).await;
        assert!(tokio::time::timeout(Duration::from_millis(5), turns.take(a)).await.is_err());
        drop(held);
        assert!(turns.is_empty());
    }

    /// The fairness rule with the pool: one address submits 20 slow jobs at once, another
    /// one job a moment later; with one worker, the other address's job waits for at most
    /// the job running and the one queued, not for the flood.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flooding_address_does_not_hold_up_another() {
        let pool = Arc::new(HashPool::new(1, 4));
        let turns = Arc::new(Turns::default());
        let job = Duration::from_millis(25);
        let check = |ip: IpAddr| {
            let (pool, turns) = (pool.clone(), turns.clone());
            async move {
                let _turn = turns.take(ip).await;
                pool.run(move || std::thread::sleep(job)).await.unwrap(); // stands for a hash
                Instant::now()
            }
        };
        let flooder: IpAddr = "10.0.0.66".parse().unwrap();
        let flood: Vec<_> = (0..20).map(|_| tokio::spawn(check(flooder))).collect();
        while pool.running().0 == 0 {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        let good = check("10.0.0.7".parse().unwrap()).await;
        let waited = good - start;
        // At most the running job, one queued flood job, and its own.
        assert!(waited < job * 3 + Duration::from_millis(40), "waited {waited:?} behind the flood");
        let mut flood_done = Vec::new();
        for f in flood {
            flood_done.push(f.await.unwrap());
        }
        let later = flood_done.iter().filter(|t| **t > good).count();
        assert!(later >= 17, "only {later} of the flood's jobs ran after the other address's");
    }
}
