//! Counters that cost the hot path almost nothing: each thread adds to a shard of its own
//! (a block of atomics on cache lines no other thread writes), and a reader sums the shards.
//!
//! A shard has one writer, its thread, so an addition is a plain load and store (no locked
//! read-modify-write, no cache line bouncing between cores); readers see each counter whole
//! (64-bit atomics) and at most a few additions late. A thread takes a shard the first time
//! it counts and gives it back when it exits; the next new thread takes it over with its
//! counts, so totals never go backwards and the number of shards stays that of the threads
//! alive at once.
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// How many counters a shard holds (see [`super::Counter`]).
pub(crate) const COUNTERS: usize = super::Counter::COUNT;

/// One thread's counters, on cache lines of their own.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Shard {
    counters: [AtomicU64; COUNTERS],
}

impl Default for Shard {
    fn default() -> Self {
        Shard { counters: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Shard {
    /// Adds `n` to counter `i`. Only the shard's own thread calls this.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        let c = &self.counters[i];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// Every shard of one set of counters.
#[derive(Debug)]
pub(crate) struct Shards {
    id: u64,
    all: Mutex<Vec<Arc<Shard>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's shard of each set of counters it counted in (one, but for tests that run
    /// several brokers in one process).
    static MINE: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

impl Default for Shards {
    fn default() -> Self {
        Shards { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), all: Mutex::new(Vec::new()) }
    }
}

impl Shards {
    /// Runs `f` with this thread's shard.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Shard) -> R) -> R {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if let Some((_, s)) = mine.iter().find(|(id, _)| *id == self.id) {
                return f(s);
            }
            // Shards of counters that are gone (only this thread holds them) go first.
            mine.retain(|(_, s)| Arc::strong_count(s) > 1);
            let shard = self.claim();
            let r = f(&shard);
            mine.push((self.id, shard));
            r
        })
    }

    /// A shard no live thread holds (its counts go on), or a new one.
    fn claim(&self) -> Arc<Shard> {
        let mut all = self.all.lock();
        // Under the lock: a shard whose thread has exited is held by this list only, and no
        // one else can take it meanwhile.
        if let Some(free) = all.iter().find(|s| Arc::strong_count(s) == 1) {
            // Pairs with the release of the exited thread's Arc: its last additions are seen.
            std::sync::atomic::fence(Ordering::Acquire);
            return free.clone();
        }
        let s = Arc::new(Shard::default());
        all.push(s.clone());
        s
    }

    /// Every counter summed over the shards.
    pub(crate) fn sum(&self) -> [u64; COUNTERS] {
        let mut out = [0u64; COUNTERS];
        for s in self.all.lock().iter() {
            for (o, c) in out.iter_mut().zip(&s.counters) {
                *o = o.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_apart_and_the_sum_is_exact() {
        let shards = Arc::new(Shards::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = shards.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        s.with(|sh| sh.add(0, 1));
                    }
                    s.with(|sh| sh.add(1, 5));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let sum = shards.sum();
        assert_eq!(sum[0], 80_000);
        assert_eq!(sum[1], 40);
        // Threads that exited gave their shards back: a new one takes one over, counts kept.
        let before = shards.all.lock().len();
        let s = shards.clone();
        std::thread::spawn(move || s.with(|sh| sh.add(0, 1))).join().unwrap();
        assert_eq!(shards.all.lock().len(), before);
        assert_eq!(shards.sum()[0], 80_001);
    }
}
