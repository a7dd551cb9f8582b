//! Orders a reload asked for by a signal (SIGHUP) before the clients that connect after the
//! signal arrived, as mosquitto's single event loop does: it handles the signal's flag before
//! the next socket event. The signal handler itself sets the flag of
//! [`ReloadGate::use_flag`] (the binary registers it with `signal-hook`), so a CONNECT read after the signal waits until the
//! reload is applied ([`ReloadGate::settled`]) instead of racing the task that applies it.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ReloadGate {
    /// Set when a reload is asked for (by the signal handler), cleared when it starts.
    requested: ArcSwap<AtomicBool>,
    /// A reload is being applied.
    running: AtomicBool,
    /// Told when a reload ends.
    done: tokio::sync::Notify,
}

/// Held while a reload is applied ([`ReloadGate::begin`]); its end lets waiting
/// connections go on.
#[derive(Debug)]
pub struct Reloading<'a>(&'a ReloadGate);

impl Drop for Reloading<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}

impl ReloadGate {
    /// Takes the flag a signal handler sets to ask for a reload (registered before the
    /// broker exists, and before the handler that wakes the reload task).
    pub fn use_flag(&self, flag: Arc<AtomicBool>) {
        self.requested.store(flag);
    }

    /// A reload starts: what was asked for so far is being applied.
    pub fn begin(&self) -> Reloading<'_> {
        self.running.store(true, Ordering::Release);
        self.requested.load().store(false, Ordering::Release);
        Reloading(self)
    }

    fn pending(&self) -> bool {
        self.requested.load().load(Ordering::Acquire) || self.running.load(Ordering::Acquire)
    }

    /// Waits (at most `max`) until no reload is asked for or running.
    pub async fn settled(&self, max: Duration) {
        if !self.pending() {
            return;
        }
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.pending() || tokio::time::timeout_at(deadline, done).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_wait_for_a_reload_asked_for() {
        let gate = Arc::new(ReloadGate::default());
        let flag = Arc::new(AtomicBool::new(false));
        gate.use_flag(flag.clone());
        gate.settled(Duration::from_secs(5)).await; // nothing asked: at once
        flag.store(true, Ordering::Release);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.settled(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "went on before the reload");
        let reloading = gate.begin();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "went on during the reload");
        drop(reloading);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        flag.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        gate.settled(Duration::from_millis(50)).await; // no reload comes: bounded wait
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
