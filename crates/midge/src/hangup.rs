//! SIGHUP as mosquitto's single loop sees it: a client that connects after the signal was
//! sent finds the reload applied. SIGHUP is blocked in every thread (from the start, before
//! any other thread exists, so they all inherit the mask) and read from a signalfd: from the
//! moment `kill` returns, the signal is pending and the signalfd readable, which any thread
//! can ask without a race ([`Hangup::pending`], a `poll` with no wait, for each CONNECT). A
//! handler would leave a window: the kernel runs it when the thread it picked is next
//! scheduled, and meanwhile another thread may read the CONNECT (mosquitto's
//! 09-acl-change and 04-retain-check-source lost that race under load). The reload task
//! marks the reload as running before it takes the signal ([`Hangup::take`]).
use std::os::fd::AsFd;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// SIGHUP's signalfd.
#[derive(Clone)]
pub struct Hangup(Arc<SignalFd>);

impl Hangup {
    /// Blocks SIGHUP in this thread, and so in every thread started from it, and opens its
    /// signalfd. Call before any other thread starts.
    pub fn block() -> nix::Result<Hangup> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGHUP);
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Hangup(Arc::new(fd)))
    }

    /// True while a SIGHUP was sent and not yet taken.
    pub fn pending(&self) -> bool {
        self.wait(PollTimeout::ZERO)
    }

    fn wait(&self, timeout: PollTimeout) -> bool {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, timeout).is_ok_and(|n| n > 0)
    }

    /// Takes every SIGHUP pending (several sent during one reload ask for one more reload).
    pub fn take(&self) {
        while let Ok(Some(_)) = self.0.read_signal() {}
    }

    /// Watches for SIGHUP on a thread of its own (registering the signalfd with tokio takes
    /// unsafe code): [`Watch::asked`] resolves when one is pending, and the thread waits for
    /// the next once [`Watch::taken`] says the reload took it.
    pub fn watch(&self) -> std::io::Result<Watch> {
        let (asked_tx, asked) = tokio::sync::mpsc::channel(1);
        let (taken, taken_rx) = std::sync::mpsc::channel::<()>();
        let hup = self.clone();
        std::thread::Builder::new().name("midge-sighup".into()).spawn(move || loop {
            if !hup.wait(PollTimeout::NONE) {
                continue;
            }
            if asked_tx.blocking_send(()).is_err() || taken_rx.recv().is_err() {
                return;
            }
        })?;
        Ok(Watch { asked, taken })
    }
}

/// The reload task's end of [`Hangup::watch`].
pub struct Watch {
    asked: tokio::sync::mpsc::Receiver<()>,
    taken: std::sync::mpsc::Sender<()>,
}

impl Watch {
    /// Resolves when a SIGHUP is pending (none: the watching thread is gone).
    pub async fn asked(&mut self) -> Option<()> {
        self.asked.recv().await
    }

    /// The reload took the signal: watch for the next.
    pub fn taken(&self) {
        let _ = self.taken.send(());
    }
}
