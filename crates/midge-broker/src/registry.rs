//! Which client ids have a session, and whether a connection holds it.
//!
//! A connection owns its session while it runs. When it ends, a persistent session is parked
//! here (offline) until the client comes back or the session expires. When a second
//! connection arrives with a client id in use, it takes the session over: the old connection
//! is told to close and hands the session over through a channel [MQTT-3.1.4-3].
use std::sync::{Arc, Weak};
use std::time::Instant;

use ahash::AHashMap;
use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use midge_codec::Will;

use crate::auth::ClientAccess;
use crate::broker::Owned;
use crate::control::{Control, ControlSlot};
use crate::memory_limit::Held;

/// A will waiting for its Will Delay Interval (5.0) while its session is parked.
#[derive(Debug)]
pub struct PendingWill {
    /// The will.
    pub will: Will,
    /// When it is published: after the delay, or when the session ends, whichever is first.
    pub due: Instant,
    /// The client's rights, asked when the will is due (none: there was no ACL when the
    /// client connected, or restored from a store of a version that did not keep them).
    access: Option<Box<ClientAccess>>,
    /// Its bytes, in `memory_limit`'s count while it waits.
    _held: Held,
}

impl PendingWill {
    /// `will`, due at `due`, published for a client with `access`.
    pub fn new(will: Will, due: Instant, access: Option<Box<ClientAccess>>) -> PendingWill {
        let bytes = will.topic.len() + will.payload.len() + will.properties.memory_cost();
        PendingWill { will, due, access, _held: Held::new(bytes) }
    }

    /// Whose will it is, if known: the user name and the listener's index.
    pub fn owner(&self) -> Option<(Option<&str>, usize)> {
        self.access.as_deref().map(ClientAccess::owner)
    }

    /// The will, to publish now, unless the ACL in force no longer lets its client publish
    /// to its topic (a reload during the delay): mosquitto checks a will when it sends it.
    pub fn into_will(self) -> Option<Will> {
        let allowed = self.access.as_ref().is_none_or(|a| a.can_publish(&self.will.topic));
        allowed.then_some(self.will)
    }
}

/// What became of a session when its connection ended.
#[derive(Debug)]
pub enum Detached {
    /// Parked until the client comes back or it expires; the times to look at it again
    /// (its expiry, its will).
    Parked(Vec<Instant>),
    /// The session ended with the connection (expiry 0): discard it.
    Ended(Owned),
    /// Another connection holds the client id now (a takeover): hand it the session.
    NotHolder(Owned),
}

/// What is due for a parked session.
#[derive(Debug, Default)]
pub struct ParkedDue {
    /// Its delayed will, to publish now.
    pub will: Option<Will>,
    /// The session itself, expired: to discard.
    pub expired: Option<Owned>,
    /// When the will went and the session stays parked: its expiry interval, its end and its
    /// last packet identifier (for its record).
    pub still_parked: Option<(u32, Option<Instant>, u16)>,
}

#[derive(Debug)]
enum Entry {
    /// The slot is held weakly: a connection task that died without detaching (a panic)
    /// leaves nothing to wait for.
    Online {
        conn_id: u64,
        control: Weak<ControlSlot>,
        /// The connection's clean start: whether the session it takes over ends.
        clean_start: bool,
    },
    Offline(Box<Parked>),
}

#[derive(Debug)]
struct Parked {
    owned: Owned,
    expires_at: Option<Instant>,
    will: Option<PendingWill>,
}

/// What a new connection finds for its client id.
#[derive(Debug)]
pub enum Attach {
    /// No session: start a new one.
    Fresh,
    /// A parked session, taken out for the connection.
    Parked(Unparked),
    /// A connection holds the session: it has been told to close and will send it.
    TakeOver(oneshot::Receiver<Owned>),
}

/// A parked session taken out of the registry because its client is back (here, or on
/// another node in cluster mode), before the timers did what was due for it.
#[derive(Debug)]
pub enum Unparked {
    /// The session, and its delayed will if the delay passed before the timers published
    /// it (to publish now: it was due before the client came back).
    Back(Box<Owned>, Option<Will>),
    /// Its expiry passed before its timer ended it: it is over (MQTT 5.0 section
    /// 3.1.2.11.2), to discard with its will if one still waited.
    Expired(Box<ParkedDue>),
}

impl Unparked {
    /// A will still waiting for its delay is dropped: "a new Network Connection for the
    /// ClientID is opened before the Will Delay Interval has elapsed" [MQTT-3.1.2-8],
    /// [MQTT-3.1.3-9], with a clean start too (as mosquitto: its 07-will-delay-recover
    /// test). One whose delay has passed was due: it goes.
    fn at(parked: Box<Parked>, now: Instant) -> Unparked {
        let Parked { owned, will, expires_at } = *parked;
        if expires_at.is_some_and(|t| t <= now) {
            let due = ParkedDue {
                will: will.and_then(PendingWill::into_will),
                expired: Some(owned),
                still_parked: None,
            };
            return Unparked::Expired(Box::new(due));
        }
        Unparked::Back(Box::new(owned), due(will, now))
    }
}

/// The will, if its delay has passed by `now`.
fn due(will: Option<PendingWill>, now: Instant) -> Option<Will> {
    will.filter(|w| w.due <= now).and_then(PendingWill::into_will)
}

/// What [`Registry::release`] found.
#[derive(Debug)]
pub enum Released {
    /// No session.
    None,
    /// A parked session, and its delayed will if the delay passed before the timers
    /// published it (to publish now).
    Parked(Box<Owned>, Option<Will>),
    /// A connection held it: it has been told to close and will send it.
    Online(oneshot::Receiver<Owned>),
}

/// The client ids known to the broker.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<AHashMap<ByteString, Entry>>,
}

impl Registry {
    /// Registers connection `conn_id` as the holder of `client_id`'s session.
    /// `clean_start`: the connection's, which ends any session it finds.
    pub fn attach(
        &self,
        client_id: &ByteString,
        conn_id: u64,
        control: &Arc<ControlSlot>,
        clean_start: bool,
        now: Instant,
    ) -> Attach {
        let mut clients = self.clients.lock();
        let previous = clients.insert(
            client_id.clone(),
            Entry::Online { conn_id, control: Arc::downgrade(control), clean_start },
        );
        match previous {
            None => Attach::Fresh,
            // The timers (a few times a second; at start, for what the store gave back)
            // may not have done what is due for it yet.
            Some(Entry::Offline(parked)) => Attach::Parked(Unparked::at(parked, now)),
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

    /// Cluster mode: another node takes `client_id`'s session. A parked one is handed over at
    /// once (a will waiting for its delay is dropped: the client is back [MQTT-3.1.3-9]; one
    /// whose delay passed comes out with it); a
    /// connection holding it is told to close and will send it. Either way the client id is
    /// no longer known here.
    /// A parked session whose expiry has passed stays (its timer ends it, and publishes its
    /// will): there is nothing to hand over.
    pub fn release(&self, client_id: &ByteString, now: Instant) -> Released {
        let mut clients = self.clients.lock();
        if let Some(Entry::Offline(parked)) = clients.get(client_id) {
            if parked.expires_at.is_some_and(|t| t <= now) {
                return Released::None;
            }
        }
        match clients.remove(client_id) {
            None => Released::None,
            Some(Entry::Offline(parked)) => {
                let Parked { owned, will, .. } = *parked;
                Released::Parked(Box::new(owned), due(will, now))
            }
            Some(Entry::Online { control, .. }) => match control.upgrade() {
                Some(slot) => {
                    let (tx, rx) = oneshot::channel();
                    slot.send(Control::TakeOver(tx));
                    Released::Online(rx)
                }
                None => Released::None,
            },
        }
    }

    /// True when the connection holding `client_id` now started clean: the session it took
    /// over ends.
    pub fn holder_starts_clean(&self, client_id: &ByteString) -> bool {
        matches!(self.clients.lock().get(client_id), Some(Entry::Online { clean_start: true, .. }))
    }

    /// A connection ends. Parks the session when it persists (expiry interval above 0) and
    /// the connection still holds the id, until `expires_at` (none: never), with `will`
    /// waiting for its delay.
    pub fn detach(
        &self,
        client_id: &ByteString,
        conn_id: u64,
        owned: Owned,
        will: Option<PendingWill>,
        expires_at: Option<Instant>,
    ) -> Detached {
        let mut clients = self.clients.lock();
        match clients.get(client_id) {
            Some(Entry::Online { conn_id: holder, .. }) if *holder == conn_id => {
                let expiry = owned.state.expiry_interval;
                if expiry == 0 {
                    clients.remove(client_id);
                    return Detached::Ended(owned);
                }
                let wake = expires_at.into_iter().chain(will.as_ref().map(|w| w.due)).collect();
                clients
                    .insert(client_id.clone(), Entry::Offline(Box::new(Parked { owned, expires_at, will })));
                Detached::Parked(wake)
            }
            _ => Detached::NotHolder(owned),
        }
    }

    /// Takes `client_id`'s session out if it is parked here, as [`Registry::attach`] does for
    /// a client back; a connection holding it keeps it.
    pub fn take_parked(&self, client_id: &str, now: Instant) -> Option<Unparked> {
        let mut clients = self.clients.lock();
        match clients.get(client_id) {
            Some(Entry::Offline(_)) => match clients.remove(client_id) {
                Some(Entry::Offline(parked)) => Some(Unparked::at(parked, now)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The client ids of the sessions parked here.
    pub fn parked_ids(&self) -> Vec<ByteString> {
        let clients = self.clients.lock();
        clients.iter().filter(|(_, e)| matches!(e, Entry::Offline(_))).map(|(id, _)| id.clone()).collect()
    }

    /// What `f` makes of `client_id`'s parked session, if it is parked here (it stays).
    pub fn with_parked<R>(&self, client_id: &str, f: impl FnOnce(&Owned) -> R) -> Option<R> {
        match self.clients.lock().get(client_id) {
            Some(Entry::Offline(parked)) => Some(f(&parked.owned)),
            _ => None,
        }
    }

    /// True when the client id has a session here (online or parked).
    pub fn knows(&self, client_id: &str) -> bool {
        self.clients.lock().contains_key(client_id)
    }

    /// Parks a session that came back (a handover that did not happen), unless a connection
    /// or another session has the client id now: then it is returned.
    pub fn park_if_free(
        &self,
        client_id: &ByteString,
        owned: Owned,
        expires_at: Option<Instant>,
    ) -> Result<(), Box<Owned>> {
        let mut clients = self.clients.lock();
        if clients.contains_key(client_id) {
            return Err(Box::new(owned));
        }
        clients.insert(client_id.clone(), Entry::Offline(Box::new(Parked { owned, expires_at, will: None })));
        Ok(())
    }

    /// Parks a session read back from the store.
    pub fn restore(
        &self,
        client_id: ByteString,
        owned: Owned,
        expires_at: Option<Instant>,
        will: Option<PendingWill>,
    ) {
        self.clients.lock().insert(client_id, Entry::Offline(Box::new(Parked { owned, expires_at, will })));
    }

    /// What is due for the parked session of `client_id` at `now`: its delayed will, and its
    /// end once its expiry has passed (with the will, if it still waits: the session ended).
    pub fn parked_due(&self, client_id: &ByteString, now: Instant) -> ParkedDue {
        let mut clients = self.clients.lock();
        let Some(Entry::Offline(parked)) = clients.get_mut(client_id) else {
            return ParkedDue::default();
        };
        let mut due = ParkedDue::default();
        if parked.expires_at.is_some_and(|t| t <= now) {
            if let Some(Entry::Offline(parked)) = clients.remove(client_id) {
                let Parked { owned, will, .. } = *parked;
                due.will = will.and_then(PendingWill::into_will);
                due.expired = Some(owned);
            }
            return due;
        }
        if parked.will.as_ref().is_some_and(|w| w.due <= now) {
            due.will = parked.will.take().and_then(PendingWill::into_will);
            due.still_parked = Some((
                parked.owned.state.expiry_interval,
                parked.expires_at,
                parked.owned.state.outgoing.last_id(),
            ));
        }
        due
    }

    /// The times something is due for the parked session of `client_id` (its expiry, its
    /// delayed will); none when it is not parked. The timers are told of them after the
    /// registry has the session parked ([`crate::timers::Timers::sweep`] relies on it).
    pub fn parked_at(&self, client_id: &str) -> [Option<Instant>; 2] {
        match self.clients.lock().get(client_id) {
            Some(Entry::Offline(parked)) => [parked.expires_at, parked.will.as_ref().map(|w| w.due)],
            _ => [None, None],
        }
    }

    /// The control slot of connection `conn_id` if it still holds `client_id`.
    pub fn holder(&self, client_id: &str, conn_id: u64) -> Option<Arc<ControlSlot>> {
        match self.clients.lock().get(client_id) {
            Some(Entry::Online { conn_id: c, control, .. }) if *c == conn_id => control.upgrade(),
            _ => None,
        }
    }

    /// The control slots of the connections holding a client id (for shutdown).
    pub fn online_slots(&self) -> Vec<Arc<ControlSlot>> {
        self.clients
            .lock()
            .values()
            .filter_map(|e| match e {
                Entry::Online { control, .. } => control.upgrade(),
                Entry::Offline(_) => None,
            })
            .collect()
    }

    /// Client ids with a connection.
    pub fn online(&self) -> usize {
        self.clients.lock().values().filter(|e| matches!(e, Entry::Online { .. })).count()
    }

    /// Sessions with a connection and parked sessions, counted at once.
    pub fn counts(&self) -> (usize, usize) {
        let clients = self.clients.lock();
        let online = clients.values().filter(|e| matches!(e, Entry::Online { .. })).count();
        (online, clients.len() - online)
    }

    /// Parked sessions.
    pub fn offline(&self) -> usize {
        self.clients.lock().values().filter(|e| matches!(e, Entry::Offline(_))).count()
    }
}
