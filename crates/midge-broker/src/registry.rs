//! Which client ids have a session, and whether a connection holds it.
//!
//! A connection owns its session state while it runs. When it ends, a persistent session is
//! parked here (offline) until the client comes back or the session expires. When a second
//! connection arrives with a client id in use, it takes the session over: the old connection
//! is told to close and hands the state over through a channel [MQTT-3.1.4-3].
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use midge_codec::Will;

use crate::session::SessionState;

/// A will waiting for its Will Delay Interval (5.0) while its session is parked.
#[derive(Debug)]
pub struct PendingWill {
    /// The will.
    pub will: Will,
    /// Whose.
    pub client_id: ByteString,
    /// When it is published: after the delay, or when the session ends, whichever is first.
    pub due: Instant,
}

/// What became of a session when its connection ended.
#[derive(Debug)]
pub enum Detached {
    /// Parked until the client comes back or it expires (with its will, if one waits).
    Parked,
    /// The session ended with the connection (expiry 0): discard it.
    Ended(SessionState),
    /// Another connection holds the client id now (a takeover): hand it the state.
    NotHolder(SessionState),
}

/// Messages to a running connection.
#[derive(Debug)]
pub enum Control {
    /// Another connection takes the client id: close, and send the session state back.
    TakeOver(oneshot::Sender<SessionState>),
    /// Nothing came from the client for 1.5 times its keep alive.
    KeepAliveTimeout,
    /// The broker is stopping.
    Shutdown,
    /// The security settings were reloaded: check the client's credentials again.
    Recheck,
}

/// Where a connection is told to give its session up: one slot and a wake-up, lighter than
/// a channel (every idle connection has one).
#[derive(Debug, Default)]
pub struct ControlSlot {
    message: Mutex<Option<Control>>,
    waker: atomic_waker::AtomicWaker,
    /// When the client last sent something (ms on the keep-alive clock).
    last_ms: std::sync::atomic::AtomicU64,
    /// 1.5 times the keep alive, in ms (0: none).
    grace_ms: std::sync::atomic::AtomicU64,
}

impl ControlSlot {
    /// A new slot for a connection.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(ControlSlot::default())
    }

    /// Leaves a message for the connection; a takeover is not replaced by a lesser one, and
    /// a recheck replaces nothing (the others close the connection anyway).
    pub fn send(&self, c: Control) {
        let mut m = self.message.lock();
        let keep = match &*m {
            Some(Control::TakeOver(_)) => true,
            Some(_) => matches!(c, Control::Recheck),
            None => false,
        };
        if !keep {
            *m = Some(c);
        }
        drop(m);
        self.waker.wake();
    }

    /// Records activity from the client (for the keep alive).
    pub fn touch(&self, now_ms: u64) {
        self.last_ms.store(now_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The keep alive watch's view: when the client last sent something, and its grace.
    pub(crate) fn keep_alive(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.last_ms.load(Relaxed), self.grace_ms.load(Relaxed))
    }

    pub(crate) fn set_grace(&self, grace_ms: u64, now_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.last_ms.store(now_ms, Relaxed);
        self.grace_ms.store(grace_ms, Relaxed);
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
}

#[derive(Debug)]
enum Entry {
    /// The slot is held weakly: a connection task that died without detaching (a panic)
    /// leaves nothing to wait for.
    Online {
        conn_id: u64,
        control: std::sync::Weak<ControlSlot>,
    },
    Offline {
        state: Box<SessionState>,
        expires_at: Option<Instant>,
        will: Option<Box<PendingWill>>,
    },
}

/// What a new connection finds for its client id.
#[derive(Debug)]
pub enum Attach {
    /// No session: start a new one.
    Fresh,
    /// A parked session.
    Parked(Box<SessionState>),
    /// A connection holds the session: it has been told to close and will send the state.
    TakeOver(oneshot::Receiver<SessionState>),
}

/// The client ids known to the broker.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<AHashMap<ByteString, Entry>>,
}

impl Registry {
    /// Registers connection `conn_id` as the holder of `client_id`'s session.
    pub fn attach(
        &self,
        client_id: &ByteString,
        conn_id: u64,
        control: std::sync::Arc<ControlSlot>,
    ) -> Attach {
        let mut clients = self.clients.lock();
        let previous = clients.insert(
            client_id.clone(),
            Entry::Online { conn_id, control: std::sync::Arc::downgrade(&control) },
        );
        match previous {
            None => Attach::Fresh,
            // A will still waiting for its delay is dropped: the client is back in time
            // [MQTT-3.1.3-9].
            Some(Entry::Offline { state, .. }) => Attach::Parked(state),
            Some(Entry::Online { control: old, .. }) => match old.upgrade() {
                // Sent while the lock is held: when the old connection ends and finds it no
                // longer holds the id, this message is already in its slot.
                Some(old) => {
                    let (tx, rx) = oneshot::channel();
                    old.send(Control::TakeOver(tx));
                    Attach::TakeOver(rx)
                }
                None => Attach::Fresh,
            },
        }
    }

    /// A connection ends. Parks the session when it persists (expiry interval above 0) and
    /// the connection still holds the id, with `will` waiting for its delay.
    pub fn detach(
        &self,
        client_id: &ByteString,
        conn_id: u64,
        state: SessionState,
        will: Option<PendingWill>,
        now: Instant,
    ) -> Detached {
        let mut clients = self.clients.lock();
        match clients.get(client_id) {
            Some(Entry::Online { conn_id: holder, .. }) if *holder == conn_id => {
                if state.expiry_interval == 0 {
                    clients.remove(client_id);
                    return Detached::Ended(state);
                }
                let expires_at = (state.expiry_interval != u32::MAX)
                    .then(|| now + Duration::from_secs(u64::from(state.expiry_interval)));
                clients.insert(
                    client_id.clone(),
                    Entry::Offline { state: Box::new(state), expires_at, will: will.map(Box::new) },
                );
                Detached::Parked
            }
            _ => Detached::NotHolder(state),
        }
    }

    /// Takes the delayed wills that are due.
    pub fn due_wills(&self, now: Instant) -> Vec<PendingWill> {
        let mut clients = self.clients.lock();
        clients
            .values_mut()
            .filter_map(|e| match e {
                Entry::Offline { will, .. } if will.as_ref().is_some_and(|w| w.due <= now) => {
                    will.take().map(|w| *w)
                }
                _ => None,
            })
            .collect()
    }

    /// Removes the parked sessions whose expiry has passed and returns them, with any will
    /// still waiting (published now: the session ended).
    pub fn expire(&self, now: Instant) -> Vec<(SessionState, Option<PendingWill>)> {
        let mut clients = self.clients.lock();
        let expired: Vec<ByteString> = clients
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Offline { expires_at: Some(t), .. } if *t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| match clients.remove(&k) {
                Some(Entry::Offline { state, will, .. }) => Some((*state, will.map(|w| *w))),
                _ => None,
            })
            .collect()
    }

    /// The control slots of the connections holding a client id (for shutdown).
    pub fn online_slots(&self) -> Vec<std::sync::Arc<ControlSlot>> {
        self.clients
            .lock()
            .values()
            .filter_map(|e| match e {
                Entry::Online { control, .. } => control.upgrade(),
                Entry::Offline { .. } => None,
            })
            .collect()
    }

    /// Client ids with a connection.
    pub fn online(&self) -> usize {
        self.clients.lock().values().filter(|e| matches!(e, Entry::Online { .. })).count()
    }

    /// Parked sessions.
    pub fn offline(&self) -> usize {
        self.clients.lock().values().filter(|e| matches!(e, Entry::Offline { .. })).count()
    }
}
