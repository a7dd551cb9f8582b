//! `memory_limit`: past this many bytes of memory, the broker takes no more messages. As
//! mosquitto: "if an incoming message is being processed, then the message will be dropped
//! and the publishing client will be disconnected" (5.0 clients get DISCONNECT 0x97 Quota
//! exceeded). mosquitto counts the bytes its own allocator hands out; midge has no allocator
//! of its own (`forbid(unsafe_code)`), so it counts what the system does: the process's
//! resident memory (`VmRSS`), sampled every [`SAMPLE_EVERY`] by the server, so that a
//! publish only reads a flag.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the resident memory is read while a limit is set.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The limit and whether the last sample was over it.
#[derive(Debug, Default)]
pub struct MemoryLimit {
    /// Bytes; 0: no limit.
    limit: usize,
    over: AtomicBool,
}

impl MemoryLimit {
    /// A limit of `limit` bytes (0: none).
    pub fn new(limit: usize) -> Self {
        MemoryLimit { limit, over: AtomicBool::new(false) }
    }

    /// True when a limit is set (and [`MemoryLimit::sample`] should run).
    pub fn is_set(&self) -> bool {
        self.limit > 0
    }

    /// True when the last sample found the broker over its limit.
    pub fn reached(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Reads the resident memory and records whether it is over the limit; returns the
    /// change, if any (`Some(true)`: it just went over).
    pub fn sample(&self) -> Option<bool> {
        let over = self.is_set() && resident_bytes().is_some_and(|n| n > self.limit);
        (self.over.swap(over, Ordering::Relaxed) != over).then_some(over)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The process's resident memory in bytes (`VmRSS` of /proc/self/status).
pub fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_what_the_process_holds_is_reached_and_none_is_never() {
        assert!(resident_bytes().is_some_and(|n| n > 1024 * 1024), "a test process holds over 1 MiB");
        let tight = MemoryLimit::new(1);
        assert_eq!(tight.sample(), Some(true));
        assert!(tight.reached());
        assert_eq!(tight.sample(), None, "no change");
        let none = MemoryLimit::new(0);
        assert_eq!(none.sample(), None);
        assert!(!none.reached());
        let roomy = MemoryLimit::new(usize::MAX);
        assert_eq!(roomy.sample(), None);
        assert!(!roomy.reached());
    }
}
