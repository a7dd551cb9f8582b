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
use tokio::sync::{mpsc, oneshot};

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
}

#[derive(Debug)]
enum Entry {
    Online { conn_id: u64, control: mpsc::UnboundedSender<Control> },
    Offline { state: Box<SessionState>, expires_at: Option<Instant>, will: Option<PendingWill> },
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
        control: mpsc::UnboundedSender<Control>,
    ) -> Attach {
        let mut clients = self.clients.lock();
        let previous = clients.insert(client_id.clone(), Entry::Online { conn_id, control });
        match previous {
            None => Attach::Fresh,
            // A will still waiting for its delay is dropped: the client is back in time
            // [MQTT-3.1.3-9].
            Some(Entry::Offline { state, .. }) => Attach::Parked(state),
            Some(Entry::Online { control: old, .. }) => {
                // Sent while the lock is held: when the old connection ends and finds it no
                // longer holds the id, this message is already in its channel.
                let (tx, rx) = oneshot::channel();
                if old.send(Control::TakeOver(tx)).is_err() {
                    return Attach::Fresh;
                }
                Attach::TakeOver(rx)
            }
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
                clients
                    .insert(client_id.clone(), Entry::Offline { state: Box::new(state), expires_at, will });
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
                Entry::Offline { will, .. } if will.as_ref().is_some_and(|w| w.due <= now) => will.take(),
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
                Some(Entry::Offline { state, will, .. }) => Some((*state, will)),
                _ => None,
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
