//! What the broker writes to its store as things happen, and what it reads back at start.
//!
//! Only what outlives a connection is written: retained messages, and the state of
//! persistent sessions (expiry interval above 0): their subscriptions, the QoS 1 and 2
//! messages queued for them and where each delivery stands, the QoS 2 identifiers they sent
//! and have not released, their delayed wills. A message queued for a persistent session is
//! recorded before it can leave the mailbox, and the publisher's acknowledgement waits until
//! that record is durable: once PUBACK or PUBREC is sent, the message reaches that session
//! even if the broker is killed the next instant.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use midge_codec::SubscriptionOptions;

use super::{Broker, Owned};
use crate::mailbox::SessionHandle;
use crate::registry::PendingWill;
use crate::router::QueueHook;
use crate::session::{Awaiting, Delivery, DeliveryEvent, SessionState, SubscriptionRecord};
use crate::store::records::{self, prefix, Clock, Progress, SessionRecord};
use crate::store::{Op, Records, Store};

/// The broker's side of the store.
#[derive(Debug)]
pub struct Journal {
    store: Store,
    next_entry: AtomicU64,
}

impl QueueHook for Journal {
    fn queued(&self, client_id: &str, d: &mut Delivery) {
        let entry = self.next_entry.fetch_add(1, Ordering::Relaxed);
        d.entry = Some(entry);
        let value = records::queued_value(client_id, d.qos, d.retain, &d.sub_ids, &d.message, &Clock::now());
        self.store.append([Op::Put(records::queue_key(entry), value)]);
    }
}

impl Journal {
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last record appended: what an acknowledgement that depends on records appended
    /// so far waits for.
    pub fn appended(&self) -> u64 {
        self.store.appended()
    }

    /// A retained message was set or cleared.
    pub fn retain(&self, m: &crate::session::Message) -> u64 {
        let key = records::retained_key(&m.topic);
        let op = if m.payload.is_empty() {
            Op::Delete(key)
        } else {
            Op::Put(key, records::retained_value(m, &Clock::now()))
        };
        self.store.append([op])
    }

    /// A session is (or stays) persistent, online (`parked` none) or parked until it expires,
    /// with the will waiting for its delay.
    pub fn session(
        &self,
        client_id: &str,
        expiry_interval: u32,
        parked: Option<(Option<Instant>, Option<&PendingWill>)>,
    ) -> u64 {
        let clock = Clock::now();
        let (expires_at, will) = parked.unwrap_or((None, None));
        let record = SessionRecord {
            expiry_interval,
            expires_at: expires_at.map(|t| clock.to_unix(t).max(1)),
            will: will.map(|w| (w.will.clone(), clock.to_unix(w.due))),
        };
        self.store.append([Op::Put(records::session_key(client_id), records::session_value(&record))])
    }

    /// A subscription was added or replaced.
    pub fn subscribe(
        &self,
        client_id: &str,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> u64 {
        let value = records::subscription_value(options, id);
        self.store.append([Op::Put(records::subscription_key(client_id, filter), value)])
    }

    /// A subscription was removed.
    pub fn unsubscribe(&self, client_id: &str, filter: &str) -> u64 {
        self.store.append([Op::Delete(records::subscription_key(client_id, filter))])
    }

    /// A recorded delivery moved on.
    pub fn delivery(&self, event: DeliveryEvent) -> u64 {
        match event {
            DeliveryEvent::Sent { entry, packet_id } => self.store.append([Op::Put(
                records::progress_key(entry),
                records::progress_value(Progress::Sent(packet_id)),
            )]),
            DeliveryEvent::Released { entry, packet_id } => self.store.append([Op::Put(
                records::progress_key(entry),
                records::progress_value(Progress::Released(packet_id)),
            )]),
            DeliveryEvent::Done { entry } => self.store.append(done(entry)),
        }
    }

    /// A QoS 2 packet identifier is held (`true`) or released.
    pub fn incoming(&self, client_id: &str, packet_id: u16, held: bool) -> u64 {
        let key = records::incoming_key(client_id, packet_id);
        self.store.append([if held { Op::Put(key, Vec::new()) } else { Op::Delete(key) }])
    }

    /// A session ended: every record of it goes. `queued` are the deliveries it still held.
    pub fn forget(&self, client_id: &str, state: &SessionState, queued: &[Delivery]) -> u64 {
        let mut ops = vec![Op::Delete(records::session_key(client_id))];
        ops.extend(state.subscriptions.keys().map(|f| Op::Delete(records::subscription_key(client_id, f))));
        ops.extend(state.incoming_qos2.iter().map(|id| Op::Delete(records::incoming_key(client_id, *id))));
        for d in queued {
            if let Some(entry) = d.entry {
                ops.extend(done(entry));
            }
        }
        self.store.append(ops)
    }

    /// Every record of a session that was persistent, now that it is not (written when it
    /// becomes persistent again).
    pub fn persist_state(&self, client_id: &str, state: &SessionState) -> u64 {
        let mut ops: Vec<Op> = state
            .subscriptions
            .iter()
            .map(|(f, r)| {
                Op::Put(records::subscription_key(client_id, f), records::subscription_value(r.options, r.id))
            })
            .collect();
        ops.extend(
            state.incoming_qos2.iter().map(|id| Op::Put(records::incoming_key(client_id, *id), Vec::new())),
        );
        self.store.append(ops)
    }
}

fn done(entry: u64) -> [Op; 2] {
    [Op::Delete(records::queue_key(entry)), Op::Delete(records::progress_key(entry))]
}

/// What was read back from the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    /// Sessions.
    pub sessions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages queued or in flight.
    pub queued: usize,
    /// Records that could not be read (reported, skipped).
    pub unreadable: usize,
}

/// One session as it is read back.
#[derive(Default)]
struct Building {
    record: Option<SessionRecord>,
    state: SessionState,
    queued: Vec<(u64, Delivery, Option<Progress>)>,
}

impl Broker {
    /// The journal, when persistence is on.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    /// The store's hook for queued deliveries, when persistence is on.
    pub(crate) fn queue_hook(&self) -> Option<&dyn QueueHook> {
        self.journal.get().map(|j| j as &dyn QueueHook)
    }

    /// Takes the store opened at start and puts back what it holds: retained messages, and
    /// persistent sessions, parked, with their subscriptions, queued and in-flight messages,
    /// QoS 2 state and delayed wills. Sessions that were online when the broker stopped are
    /// parked from now. Call once, before serving.
    pub fn restore(&self, store: Store, records: Records) -> Restored {
        let clock = Clock::now();
        let mut restored = Restored::default();
        let mut sessions: HashMap<ByteString, Building> = HashMap::new();
        let mut progress: HashMap<u64, Progress> = HashMap::new();
        let mut max_entry = 0;
        let mut stale = Vec::new();
        let mut forward = Vec::new();
        for (key, value) in &records {
            let Some((&kind, rest)) = key.split_first() else { continue };
            let ok = match kind {
                prefix::RETAINED => records::read_retained(value, &clock).map(|m| {
                    if !m.is_expired(clock.now) {
                        self.router.retain(&Arc::new(m));
                        restored.retained += 1;
                    }
                }),
                prefix::SESSION => match ByteString::try_from(bytes::Bytes::copy_from_slice(rest)) {
                    Ok(id) => records::read_session(value).map(|r| {
                        sessions.entry(id).or_default().record = Some(r);
                    }),
                    Err(_) => Err(records::RecordError { what: "session" }),
                },
                prefix::SUBSCRIPTION => match records::split_client(rest) {
                    Some((id, filter)) => records::read_subscription(value).and_then(|(options, sub_id)| {
                        let filter = std::str::from_utf8(filter)
                            .map_err(|_| records::RecordError { what: "subscription" })?;
                        sessions
                            .entry(id)
                            .or_default()
                            .state
                            .subscriptions
                            .insert(filter.into(), SubscriptionRecord { options, id: sub_id });
                        Ok(())
                    }),
                    None => Err(records::RecordError { what: "subscription" }),
                },
                prefix::INCOMING => match records::split_client(rest) {
                    Some((id, &[a, b])) => {
                        sessions
                            .entry(id)
                            .or_default()
                            .state
                            .incoming_qos2
                            .insert(u16::from_be_bytes([a, b]));
                        Ok(())
                    }
                    _ => Err(records::RecordError { what: "QoS 2 identifier" }),
                },
                prefix::QUEUED | prefix::PROGRESS => {
                    let entry = rest.try_into().map(u64::from_be_bytes).unwrap_or(0);
                    max_entry = max_entry.max(entry);
                    if kind == prefix::PROGRESS {
                        records::read_progress(value).map(|p| {
                            progress.insert(entry, p);
                        })
                    } else {
                        records::read_queued(value, &clock).map(|q| {
                            let d = Delivery {
                                message: Arc::new(q.message),
                                qos: q.qos,
                                retain: q.retain,
                                sub_ids: q.sub_ids,
                                share: None,
                                entry: Some(entry),
                            };
                            sessions.entry(q.client_id).or_default().queued.push((entry, d, None));
                        })
                    }
                }
                prefix::FORWARD => records::read_retained(value, &clock).map(|m| {
                    forward.push(Arc::new(m));
                    stale.push(Op::Delete(key.to_vec()));
                }),
                _ => Err(records::RecordError { what: "record" }),
            };
            if let Err(e) = ok {
                tracing::warn!("Store: {e} (key {:?}): skipped.", String::from_utf8_lossy(key));
                restored.unreadable += 1;
                stale.push(Op::Delete(key.to_vec()));
            }
        }
        for (client_id, mut b) in sessions {
            let Some(record) = b.record.take() else {
                // Parts of a session whose session record is gone (it ended): remove them.
                for (entry, ..) in &b.queued {
                    stale.extend(done(*entry));
                }
                stale.extend(
                    b.state
                        .subscriptions
                        .keys()
                        .map(|f| Op::Delete(records::subscription_key(&client_id, f))),
                );
                stale.extend(
                    b.state.incoming_qos2.iter().map(|i| Op::Delete(records::incoming_key(&client_id, *i))),
                );
                continue;
            };
            self.restore_session(&client_id, record, b, &progress, &clock, &mut restored);
            restored.sessions += 1;
        }
        if !stale.is_empty() {
            store.append(stale);
        }
        let journal = Journal { store, next_entry: AtomicU64::new(max_entry + 1) };
        if self.journal.set(journal).is_err() {
            tracing::error!("The store was restored twice: the second is ignored.");
        }
        for m in forward {
            self.router.route(&m, self.queue_hook());
        }
        restored
    }

    fn restore_session(
        &self,
        client_id: &ByteString,
        record: SessionRecord,
        mut b: Building,
        progress: &HashMap<u64, Progress>,
        clock: &Clock,
        restored: &mut Restored,
    ) {
        let handle = SessionHandle::new(client_id.clone(), self.config.max_queued_messages);
        handle.set_persistent(true);
        for (filter, r) in &b.state.subscriptions {
            self.router.subscribe(&handle, filter, r.options, r.id);
        }
        b.queued.sort_by_key(|(entry, ..)| *entry);
        for (entry, d, _) in b.queued {
            restored.queued += 1;
            match progress.get(&entry) {
                Some(Progress::Sent(id)) => b.state.outgoing.restore(*id, Awaiting::PubRec, d),
                Some(Progress::Released(id)) => b.state.outgoing.restore(*id, Awaiting::PubComp, d),
                None => b.state.outgoing.pending.push_back(d),
            }
        }
        b.state.expiry_interval = record.expiry_interval;
        // Online when the broker stopped: parked from now, for its expiry interval.
        let expires_at = match record.expires_at {
            Some(ms) => Some(clock.to_instant(ms)),
            None => self.expiry_from(clock.now, record.expiry_interval),
        };
        let will = record.will.map(|(will, due)| PendingWill { will, due: clock.to_instant(due) });
        let wake: Vec<Instant> = expires_at.into_iter().chain(will.as_ref().map(|w| w.due)).collect();
        self.registry.restore(client_id.clone(), Owned { state: b.state, handle }, expires_at, will);
        for at in wake {
            self.timers.park(client_id.clone(), at);
        }
    }

    /// When a session parked at `now` ends: after its expiry interval, or for sessions that
    /// never expire by themselves, after `persistent_client_expiration` if set.
    pub(crate) fn expiry_from(&self, now: Instant, expiry_interval: u32) -> Option<Instant> {
        match expiry_interval {
            u32::MAX => self.config.persistent_client_expiration.map(|d| now + d),
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        }
    }

    /// Records that a session's subscriptions, QoS 2 state and session record are to be kept:
    /// it is persistent from now (`was_persistent`: its records already exist).
    pub(crate) fn persist_session(
        &self,
        client_id: &str,
        state: &SessionState,
        was_persistent: bool,
    ) -> Option<u64> {
        let j = self.journal()?;
        if !was_persistent {
            j.persist_state(client_id, state);
        }
        Some(j.session(client_id, state.expiry_interval, None))
    }

    /// Writes what a subscription change means for the store, for a persistent session.
    pub(crate) fn journal_subscription(
        &self,
        handle: &SessionHandle,
        filter: &str,
        change: Option<(SubscriptionOptions, Option<u32>)>,
    ) -> Option<u64> {
        let j = self.journal().filter(|_| handle.is_persistent())?;
        Some(match change {
            Some((options, id)) => j.subscribe(&handle.client_id, filter, options, id),
            None => j.unsubscribe(&handle.client_id, filter),
        })
    }
}
