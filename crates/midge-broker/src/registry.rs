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

use crate::session::SessionState;

/// Messages to a running connection.
#[derive(Debug)]
pub enum Control {
    /// Another connection takes the client id: close, and send the session state back.
    TakeOver(oneshot::Sender<SessionState>),
}

#[derive(Debug)]
enum Entry {
    Online { conn_id: u64, control: mpsc::UnboundedSender<Control> },
    Offline { state: Box<SessionState>, expires_at: Option<Instant> },
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
    /// the connection still holds the id. Returns the state when the connection no longer
    /// holds the id (it was taken over) or the session ended, for the caller to hand over or
    /// discard.
    pub fn detach(
        &self,
        client_id: &ByteString,
        conn_id: u64,
        state: SessionState,
        now: Instant,
    ) -> Option<SessionState> {
        let mut clients = self.clients.lock();
        match clients.get(client_id) {
            Some(Entry::Online { conn_id: holder, .. }) if *holder == conn_id => {
                if state.expiry_interval == 0 {
                    clients.remove(client_id);
                    return Some(state);
                }
                let expires_at = (state.expiry_interval != u32::MAX)
                    .then(|| now + Duration::from_secs(u64::from(state.expiry_interval)));
                clients.insert(client_id.clone(), Entry::Offline { state: Box::new(state), expires_at });
                None
            }
            _ => Some(state),
        }
    }

    /// Removes the parked sessions whose expiry has passed and returns them.
    pub fn expire(&self, now: Instant) -> Vec<SessionState> {
        let mut clients = self.clients.lock();
        let expired: Vec<ByteString> = clients
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Offline { expires_at: Some(t), .. } if *t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| match clients.remove(&k) {
                Some(Entry::Offline { state, .. }) => Some(*state),
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
