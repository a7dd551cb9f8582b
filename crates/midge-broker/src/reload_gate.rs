//! Orders a reload asked for by a signal (SIGHUP) before the clients that connect after the
//! signal arrived, as mosquitto's single event loop does: it handles the signal before the
//! next socket event. The binary gives [`ReloadGate::use_probe`] a way to see that the
//! signal was sent and not yet taken (a signalfd), so a CONNECT read after the signal waits
//! until the reload is applied ([`ReloadGate::settled`]) instead of racing the task that
//! applies it, which marks the reload as running ([`ReloadGate::begin`]) before it takes the
//! signal.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

/// See the module documentation.
#[derive(Default)]
pub struct ReloadGate {
    /// True while a reload is asked for and not begun (none: reloads are never asked for).
    requested: ArcSwapOption<Box<dyn Fn() -> bool + Send + Sync>>,
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

impl std::fmt::Debug for ReloadGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadGate").field("running", &self.running).finish_non_exhaustive()
    }
}

impl ReloadGate {
    /// Takes what says a reload was asked for and not yet begun.
    pub fn use_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        self.requested.store(Some(Arc::new(Box::new(probe))));
    }

    /// A reload starts: the caller takes what asked for it after this.
    pub fn begin(&self) -> Reloading<'_> {
        self.running.store(true, Ordering::SeqCst);
        Reloading(self)
    }

    /// The signal first, then whether a reload runs: the reload task marks itself running
    /// before it takes the signal, so one of the two is seen (the other order could miss
    /// both, reading "not running" just before `begin` and "no signal" just after it).
    fn pending(&self) -> bool {
        self.requested.load().as_ref().is_some_and(|asked| asked()) || self.running.load(Ordering::SeqCst)
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
        let asked = flag.clone();
        gate.use_probe(move || asked.load(Ordering::Acquire));
        gate.settled(Duration::from_secs(5)).await; // nothing asked: at once
        flag.store(true, Ordering::Release);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.settled(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "went on before the reload");
        let reloading = gate.begin();
        flag.store(false, Ordering::Release); // the reload takes the signal
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
