//! `memory_limit`: past this many bytes, the broker takes no more messages (nor
//! subscriptions). As mosquitto:
//! "if an incoming message is being processed, then the message will be dropped and the
//! publishing client will be disconnected" (5.0 clients get DISCONNECT 0x97 Quota exceeded;
//! mosquitto's failed allocation gives 0x80). mosquitto counts what its allocator hands out;
//! midge has no allocator of its own (`forbid(unsafe_code)`), and the process's resident
//! memory does not go down when messages go (the C allocator keeps freed memory), so a
//! burst would shut publishers out for good. midge counts what grows with the traffic: the
//! bytes of every message it holds (topic, payload and properties; queued, in flight, retained, being
//! routed), each counted once however many sessions share it, from when it is made
//! ([`Held::new`]) until its last holder drops it, and every subscription (about 512 bytes
//! in the router and the session, 512 per level after the first, and its filter), from
//! its making to its removal: the subscriptions a SUBSCRIBE would add beyond the limit are
//! refused in its SUBACK (one SUBSCRIBE of 10 MB makes a million subscriptions, 516 MB),
//! every will waiting for its delay with its parked session
//! ([`crate::registry::PendingWill`]): a CONNECT with a will is refused past the limit, and
//! every delivery waiting in a session's queue (its place there, [`Tally`]: 10,000 offline
//! sessions of 1,000 queued messages each held 800 MB under a limit of 100 MB). A
//! broker without the option does not count (one relaxed load per message).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counting is on (some broker of this process has a limit).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// The bytes of the messages alive.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A message's share of what is counted: its bytes, until it is dropped.
#[derive(Debug)]
pub struct Held(usize);

impl Held {
    /// Counts `bytes` while this lives (when counting is on).
    pub fn new(bytes: usize) -> Held {
        if COUNTING.load(Ordering::Relaxed) && bytes > 0 {
            HELD.fetch_add(bytes, Ordering::Relaxed);
            Held(bytes)
        } else {
            Held(0)
        }
    }
}

impl Clone for Held {
    fn clone(&self) -> Held {
        if self.0 > 0 {
            HELD.fetch_add(self.0, Ordering::Relaxed);
        }
        Held(self.0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0 > 0 {
            HELD.fetch_sub(self.0, Ordering::Relaxed);
        }
    }
}

/// A share of the count that changes size with what it stands for: a queue's entries
/// ([`crate::mailbox::Mailbox`]), given back when it is dropped.
#[derive(Debug, Default)]
pub struct Tally(usize);

impl Tally {
    /// Makes this share `bytes` (when counting is on; otherwise one relaxed load).
    pub fn set(&mut self, bytes: usize) {
        if !COUNTING.load(Ordering::Relaxed) || bytes == self.0 {
            return;
        }
        if bytes > self.0 {
            HELD.fetch_add(bytes - self.0, Ordering::Relaxed);
        } else {
            HELD.fetch_sub(self.0 - bytes, Ordering::Relaxed);
        }
        self.0 = bytes;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if self.0 > 0 {
            HELD.fetch_sub(self.0, Ordering::Relaxed);
        }
    }
}

/// The bytes of the messages alive (0 unless some broker counts).
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// A broker's limit.
#[derive(Debug, Default)]
pub struct MemoryLimit {
    /// Bytes; 0: no limit.
    limit: usize,
}

impl MemoryLimit {
    /// A limit of `limit` bytes (0: none); with one, messages are counted from now on.
    pub fn new(limit: usize) -> Self {
        if limit > 0 {
            COUNTING.store(true, Ordering::Relaxed);
        }
        MemoryLimit { limit }
    }

    /// True when what is held (messages, subscriptions) is over the limit.
    pub fn reached(&self) -> bool {
        self.limit > 0 && held() > self.limit
    }

    /// The bytes left under the limit (None: no limit).
    pub fn room(&self) -> Option<usize> {
        (self.limit > 0).then(|| self.limit.saturating_sub(held()))
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_count_while_they_live_and_the_limit_follows_them() {
        // Other tests of this process may hold messages meanwhile: far fewer bytes than these.
        let limit = MemoryLimit::new(held() + 100_000_000);
        let a = Held::new(60_000_000);
        let b = a.clone();
        assert!(limit.reached(), "120 MB held, 100 MB allowed");
        drop(a);
        assert!(!limit.reached(), "60 MB held");
        drop(b);
        assert!(!MemoryLimit::new(0).reached(), "no limit");
    }

    #[test]
    fn a_tally_follows_what_it_stands_for_and_gives_it_back() {
        let limit = MemoryLimit::new(held() + 100_000_000);
        let mut t = Tally::default();
        t.set(150_000_000);
        assert!(limit.reached());
        t.set(50_000_000);
        assert!(!limit.reached());
        t.set(150_000_000);
        drop(t);
        assert!(!limit.reached());
    }
}
