//! How the rest of the broker speaks to a running connection: one slot for a message and a
//! wake-up, lighter than a channel (every idle connection has one), and the connection's next
//! deadline, which [`crate::timers`] watches.
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::broker::Owned;

/// Messages to a running connection.
#[derive(Debug)]
pub enum Control {
    /// Another connection takes the client id: close, and send the session back.
    TakeOver(oneshot::Sender<Owned>),
    /// The deadline the session announced has come (keep alive, held acknowledgements).
    Timeout,
    /// The broker is stopping.
    Shutdown,
    /// The security settings were reloaded: check the client's credentials again.
    Recheck,
    /// Cluster mode: the client id connected to another node, which holds it now: close
    /// (5.0: DISCONNECT 0x8E), the session is not sent anywhere.
    TakenOverElsewhere,
}

/// Where a connection is told things, and where it leaves its next deadline.
#[derive(Debug)]
pub struct ControlSlot {
    message: Mutex<Option<Control>>,
    waker: atomic_waker::AtomicWaker,
    /// The session's next deadline, in ms on the timers' clock (`u64::MAX`: none).
    deadline_ms: AtomicU64,
    /// The earliest time the timers will look at this slot (`u64::MAX`: they will not).
    pub(crate) watched_ms: AtomicU64,
}

impl Default for ControlSlot {
    fn default() -> Self {
        ControlSlot {
            message: Mutex::new(None),
            waker: atomic_waker::AtomicWaker::new(),
            deadline_ms: AtomicU64::new(u64::MAX),
            watched_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl ControlSlot {
    /// A new slot for a connection.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(ControlSlot::default())
    }

    /// Leaves a message for the connection; a takeover is not replaced by a lesser one, and
    /// a recheck or a timeout replaces nothing (the others close the connection anyway).
    pub fn send(&self, c: Control) {
        let mut m = self.message.lock();
        let keep = match &*m {
            Some(Control::TakeOver(_)) => true,
            Some(_) => matches!(c, Control::Recheck | Control::Timeout),
            None => false,
        };
        if !keep {
            *m = Some(c);
        }
        drop(m);
        self.waker.wake();
    }

    /// The message, if one was sent.
    pub fn try_recv(&self) -> Option<Control> {
        self.message.lock().take()
    }

    /// Ready when a message waits; otherwise the task is woken when one is sent.
    pub fn poll_message(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.message.lock().is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// The connection's next deadline (ms on the timers' clock), as it last said.
    pub(crate) fn deadline_ms(&self) -> u64 {
        self.deadline_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_deadline_ms(&self, ms: u64) {
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }
}
