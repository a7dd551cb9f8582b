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

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use midge_codec::SubscriptionOptions;

use super::{Broker, Owned};
use crate::auth::ClientAccess;
use crate::mailbox::SessionHandle;
use crate::registry::PendingWill;
use crate::router::QueueHook;
use crate::router::RetainSource;
use crate::session::{Awaiting, Delivery, DeliveryEvent, SessionState, StoreEntry, SubscriptionRecord};
use crate::store::records::{self, prefix, Clock, Progress, SessionRecord};
use crate::store::{Op, Records, Store};

/// The broker's side of the store.
///
/// The copies of an incoming QoS 2 message are written one by one as it is routed (each
/// before its subscriber can see it), so a crash can leave some written and not others.
/// They are tied to a *commit*, written after them: the record of the publisher's packet
/// identifier (a persistent publisher, whose resend it also recognises), or a record of its
/// own. At start, copies whose commit is not there are dropped: the publisher got no PUBREC
/// for them, and sends the message again. Exactly once holds across a crash.
///
/// A subscriber may see a copy before its commit is written (routing goes on meanwhile, on
/// another thread). The record that it was sent, which its PUBLISH waits for, is written
/// after the commit ([`Journal::delivery`]): a client never gets a QoS 2 message whose copy
/// a crash could drop, to be routed again when the publisher (or the cluster's stream)
/// sends it again.
#[derive(Debug)]
pub struct Journal {
    store: Store,
    next_entry: AtomicU64,
    /// Commits with copies still queued: how many, whether the commit has a record of its
    /// own (once the packet identifier's record is gone, or for a publisher whose session is
    /// not persistent), and whether it is written yet.
    commits: Mutex<HashMap<u64, Commit>>,
    /// Told when a commit is written (the copies' senders may wait for it).
    commit_written: Condvar,
    /// The commit of each open incoming QoS 2 flow of persistent publishers.
    open: Mutex<HashMap<(ByteString, u16), u64>>,
    /// Cluster mode: the position in the cluster's QoS stream whose copies are stored last.
    stream_position: AtomicU64,
    /// Held while the position is raised and written, so that its records are in order.
    position_order: Mutex<()>,
}

/// How long the sender of a copy waits for its commit (routing one message takes far less;
/// past this, routing failed and the copy goes unwaited, as before commits were waited for).
const COMMIT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, Copy)]
struct Commit {
    copies: usize,
    record: bool,
    /// Its copies are being queued: the commit is not written yet.
    unwritten: bool,
}

impl QueueHook for Journal {
    fn queued(&self, client_id: &str, d: &mut Delivery) {
        self.queue(client_id, d, 0);
    }
}

/// The hook for routing an incoming QoS 2 message: its copies belong to `commit`.
pub(crate) struct Committing<'a> {
    pub(crate) journal: &'a Journal,
    pub(crate) commit: u64,
}

impl QueueHook for Committing<'_> {
    fn queued(&self, client_id: &str, d: &mut Delivery) {
        self.journal.queue(client_id, d, self.commit);
    }
}

impl Journal {
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn queue(&self, client_id: &str, d: &mut Delivery, commit: u64) {
        let id = self.next_entry.fetch_add(1, Ordering::Relaxed);
        d.entry = Some(StoreEntry { id, commit });
        if commit != 0 {
            let mut commits = self.commits.lock();
            let c = commits.entry(commit).or_insert(Commit { unwritten: true, ..Commit::default() });
            c.copies += 1;
        }
        let value =
            records::queued_value(client_id, commit, d.qos, d.retain, &d.sub_ids, &d.message, &Clock::now());
        self.store.append([Op::Put(records::queue_key(id), value)]);
    }

    /// A commit for the copies of the next incoming QoS 2 message.
    pub fn next_commit(&self) -> u64 {
        self.next_entry.fetch_add(1, Ordering::Relaxed)
    }

    /// The copies of an incoming QoS 2 message are all queued: their commit is written. For
    /// a persistent publisher (`client_id`), the record of its packet identifier is the commit
    /// and recognises a resend; otherwise a record of its own, when there are copies.
    pub fn commit_incoming(
        &self,
        client_id: Option<&ByteString>,
        packet_id: u16,
        commit: u64,
    ) -> Option<u64> {
        match client_id {
            Some(c) => {
                self.open.lock().insert((c.clone(), packet_id), commit);
                let key = records::incoming_key(c, packet_id);
                let mut commits = self.commits.lock();
                let written = self.store.append([Op::Put(key, commit.to_le_bytes().to_vec())]);
                self.written(&mut commits, commit);
                Some(written)
            }
            None => {
                let mut commits = self.commits.lock();
                commits.get_mut(&commit)?.record = true;
                let written = self.store.append([Op::Put(records::commit_key(commit), Vec::new())]);
                self.written(&mut commits, commit);
                Some(written)
            }
        }
    }

    /// Commit `commit`'s record is in the store (appended under the lock of `commits`, so
    /// that a sender that found it unwritten waits for this): its copies' senders go on.
    fn written(&self, commits: &mut HashMap<u64, Commit>, commit: u64) {
        if let Some(c) = commits.get_mut(&commit).filter(|c| c.unwritten) {
            c.unwritten = false;
            self.commit_written.notify_all();
        }
    }

    /// Cluster mode: the copies of the message at `position` in the cluster's QoS stream
    /// are all queued. If there are any, one record commits them and holds the position,
    /// and a second keeps the position once the commit's copies are delivered: after a crash
    /// the message is either stored and known, or neither. Returns the record to wait for.
    pub fn commit_stream(&self, commit: u64, position: u64) -> Option<u64> {
        let mut commits = self.commits.lock();
        commits.get_mut(&commit)?.record = true;
        let _order = self.position_order.lock();
        self.stream_position.fetch_max(position, Ordering::AcqRel);
        let written = self.store.append([
            Op::Put(records::commit_key(commit), position.to_le_bytes().to_vec()),
            Op::Put(records::stream_position_key(), position.to_le_bytes().to_vec()),
        ]);
        self.written(&mut commits, commit);
        Some(written)
    }

    /// Cluster mode: the node has read the cluster's QoS stream up to `position` (a session
    /// that came from another node is recorded as starting after it, so that a restart does
    /// not route what it read before again to that session). Returns the record to wait
    /// for, if one was written.
    pub fn note_stream_position(&self, position: u64) -> Option<u64> {
        // Raised and written under the lock commit_stream takes: records of the position
        // reach the store in increasing order.
        let _order = self.position_order.lock();
        (self.stream_position.fetch_max(position, Ordering::AcqRel) < position).then(|| {
            self.store.append([Op::Put(records::stream_position_key(), position.to_le_bytes().to_vec())])
        })
    }

    /// Cluster mode: the last position in the cluster's QoS stream whose copies are stored
    /// (0: none).
    pub fn stream_position(&self) -> u64 {
        self.stream_position.load(Ordering::Acquire)
    }

    /// PUBREL released a persistent publisher's packet identifier: its commit moves to a
    /// record of its own while copies remain.
    pub fn release_incoming(&self, client_id: &ByteString, packet_id: u16) -> u64 {
        let mut ops = self.release_ops(client_id, packet_id);
        ops.push(Op::Delete(records::incoming_key(client_id, packet_id)));
        self.store.append(ops)
    }

    fn release_ops(&self, client_id: &ByteString, packet_id: u16) -> Vec<Op> {
        let Some(commit) = self.open.lock().remove(&(client_id.clone(), packet_id)) else {
            return Vec::new();
        };
        let mut commits = self.commits.lock();
        match commits.get_mut(&commit) {
            Some(c) if !c.record => {
                c.record = true;
                vec![Op::Put(records::commit_key(commit), Vec::new())]
            }
            _ => Vec::new(),
        }
    }

    /// The records that end a delivery's entry: the entry, its progress, and its commit once
    /// no copy is left.
    fn done_ops(&self, entry: StoreEntry) -> Vec<Op> {
        let mut ops =
            vec![Op::Delete(records::queue_key(entry.id)), Op::Delete(records::progress_key(entry.id))];
        if entry.commit != 0 {
            let mut commits = self.commits.lock();
            if let Some(c) = commits.get_mut(&entry.commit) {
                c.copies = c.copies.saturating_sub(1);
                if c.copies == 0 {
                    let record = c.record;
                    commits.remove(&entry.commit);
                    if record {
                        ops.push(Op::Delete(records::commit_key(entry.commit)));
                    }
                }
            }
        }
        ops
    }

    /// The last record appended: what an acknowledgement that depends on records appended
    /// so far waits for.
    pub fn appended(&self) -> u64 {
        self.store.appended()
    }

    /// A retained message was set or cleared.
    pub fn retain(&self, m: &crate::session::Message) -> u64 {
        self.retain_from(m, None)
    }

    /// As [`Journal::retain`], with the publisher kept for `check_retain_source`.
    pub fn retain_from(&self, m: &crate::session::Message, source: Option<&RetainSource>) -> u64 {
        let key = records::retained_key(&m.topic);
        let op = if m.payload.is_empty() {
            Op::Delete(key)
        } else {
            Op::Put(
                key,
                match source {
                    Some(s) => records::retained_value_from(m, s, &Clock::now()),
                    None => records::retained_value(m, &Clock::now()),
                },
            )
        };
        self.store.append([op])
    }

    /// A retained message expired and was dropped ([`crate::router::Router::drop_expired_retained`]).
    pub fn forget_retained(&self, topic: &str) -> u64 {
        self.store.append([Op::Delete(records::retained_key(topic))])
    }

    /// A session is (or stays) persistent, online (`parked` none) or parked until it expires,
    /// with the will waiting for its delay.
    pub fn session(
        &self,
        client_id: &str,
        expiry_interval: u32,
        last_packet_id: u16,
        parked: Option<(Option<Instant>, Option<&PendingWill>)>,
    ) -> u64 {
        let clock = Clock::now();
        let (expires_at, will) = parked.unwrap_or((None, None));
        let record = SessionRecord {
            expiry_interval,
            expires_at: expires_at.map(|t| clock.to_unix(t).max(1)),
            will: will.map(|w| (w.will.clone(), clock.to_unix(w.due))),
            will_owner: will
                .and_then(PendingWill::owner)
                .map(|(u, listener)| (u.map(ByteString::from), listener)),
            last_packet_id,
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
    ///
    /// The record that a copy was sent comes after its commit's: when routing is still
    /// queueing the other copies (on another thread, for as long as one message takes to
    /// route), the sender waits for it.
    pub fn delivery(&self, event: DeliveryEvent) -> u64 {
        match event {
            DeliveryEvent::Sent { entry, packet_id } => {
                if entry.commit != 0 {
                    let mut commits = self.commits.lock();
                    let deadline = Instant::now() + COMMIT_WAIT;
                    while commits.get(&entry.commit).is_some_and(|c| c.unwritten) {
                        if self.commit_written.wait_until(&mut commits, deadline).timed_out() {
                            tracing::error!("The commit of a QoS 2 message was not written within {} s (its routing failed?): a copy is sent before it, and a crash now could deliver that message twice.", COMMIT_WAIT.as_secs());
                            break;
                        }
                    }
                }
                self.store.append([Op::Put(
                    records::progress_key(entry.id),
                    records::progress_value(Progress::Sent(packet_id)),
                )])
            }
            DeliveryEvent::Released { entry, packet_id } => self.store.append([Op::Put(
                records::progress_key(entry.id),
                records::progress_value(Progress::Released(packet_id)),
            )]),
            DeliveryEvent::Done { entry } => self.store.append(self.done_ops(entry)),
        }
    }

    /// A session ended: every record of it goes. `queued` are the deliveries it still held.
    pub fn forget(&self, client_id: &ByteString, state: &SessionState, queued: &[Delivery]) -> u64 {
        let mut ops = vec![Op::Delete(records::session_key(client_id))];
        ops.extend(state.subscriptions.keys().map(|f| Op::Delete(records::subscription_key(client_id, f))));
        for id in &state.incoming_qos2 {
            // The copies of what it published outlive its session: their commit stays.
            ops.extend(self.release_ops(client_id, *id));
            ops.push(Op::Delete(records::incoming_key(client_id, *id)));
        }
        ops.extend(self.messages_ops(queued));
        self.store.append(ops)
    }

    /// The records of deliveries a session held go, and nothing else of it (its other
    /// records belong to another session of its client id now).
    pub fn forget_messages(&self, queued: &[Delivery]) -> u64 {
        self.store.append(self.messages_ops(queued).collect::<Vec<_>>())
    }

    fn messages_ops<'a>(&'a self, queued: &'a [Delivery]) -> impl Iterator<Item = Op> + 'a {
        queued.iter().filter_map(|d| d.entry).flat_map(|entry| self.done_ops(entry))
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
        // Commits found (keys sort 'i' and 'n' before 'q': known before the copies), and the
        // open flows of persistent publishers.
        let mut committed: HashMap<u64, Commit> = HashMap::new();
        let mut open: HashMap<(ByteString, u16), u64> = HashMap::new();
        let mut stream_position = 0;
        for (key, value) in &records {
            let Some((&kind, rest)) = key.split_first() else { continue };
            let ok = match kind {
                prefix::RETAINED => records::read_retained(value, &clock).map(|(m, source)| {
                    if !m.is_expired(clock.now) {
                        self.router.retain_from(&Arc::new(m), source.map(Arc::new));
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
                        let packet_id = u16::from_be_bytes([a, b]);
                        if let Ok(commit) = <[u8; 8]>::try_from(&value[..]).map(u64::from_le_bytes) {
                            max_entry = max_entry.max(commit);
                            committed.entry(commit).or_default();
                            open.insert((id.clone(), packet_id), commit);
                        }
                        sessions.entry(id).or_default().state.incoming_qos2.insert(packet_id);
                        Ok(())
                    }
                    _ => Err(records::RecordError { what: "QoS 2 identifier" }),
                },
                prefix::COMMIT => match <[u8; 8]>::try_from(rest).map(u64::from_be_bytes) {
                    Ok(commit) => {
                        if let Ok(p) = <[u8; 8]>::try_from(&value[..]) {
                            stream_position = stream_position.max(u64::from_le_bytes(p));
                        }
                        max_entry = max_entry.max(commit);
                        committed.entry(commit).or_default().record = true;
                        Ok(())
                    }
                    Err(_) => Err(records::RecordError { what: "commit" }),
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
                            if q.commit != 0 && !committed.contains_key(&q.commit) {
                                // A copy of a QoS 2 message whose commit never made it: its
                                // publisher got no PUBREC, and sends it again.
                                stale.extend(done(entry));
                                return;
                            }
                            if let Some(c) = committed.get_mut(&q.commit) {
                                c.copies += 1;
                            }
                            let d = Delivery {
                                message: Arc::new(q.message),
                                qos: q.qos,
                                retain: q.retain,
                                sub_ids: q.sub_ids,
                                share: None,
                                entry: Some(StoreEntry { id: entry, commit: q.commit }),
                            };
                            sessions.entry(q.client_id).or_default().queued.push((entry, d, None));
                        })
                    }
                }
                prefix::STREAM_POSITION => match <[u8; 8]>::try_from(&value[..]) {
                    Ok(p) => {
                        stream_position = stream_position.max(u64::from_le_bytes(p));
                        Ok(())
                    }
                    Err(_) => Err(records::RecordError { what: "cluster stream position" }),
                },
                prefix::FORWARD => records::read_retained(value, &clock).map(|(m, _)| {
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
                for (entry, d, _) in &b.queued {
                    stale.extend(done(*entry));
                    if let Some(c) = d.entry.and_then(|e| committed.get_mut(&e.commit)) {
                        c.copies = c.copies.saturating_sub(1);
                    }
                }
                for i in &b.state.incoming_qos2 {
                    // Its commit outlives its packet identifier's record while copies remain.
                    let commit = open.remove(&(client_id.clone(), *i));
                    if let Some(c) = commit.and_then(|n| committed.get_mut(&n).map(|c| (n, c))) {
                        if c.1.copies > 0 && !c.1.record {
                            c.1.record = true;
                            stale.push(Op::Put(records::commit_key(c.0), Vec::new()));
                        }
                    }
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
        // Commit records without copies left are done with.
        committed.retain(|commit, c| {
            if c.copies == 0 && c.record {
                stale.push(Op::Delete(records::commit_key(*commit)));
            }
            c.copies > 0
        });
        if !stale.is_empty() {
            store.append(std::mem::take(&mut stale));
        }
        let journal = Journal {
            store,
            next_entry: AtomicU64::new(max_entry + 1),
            commits: Mutex::new(committed),
            commit_written: Condvar::new(),
            open: Mutex::new(open),
            stream_position: AtomicU64::new(stream_position),
            position_order: Mutex::new(()),
        };
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
        let handle = self.session_handle(client_id);
        handle.set_persistent(true);
        for (filter, r) in &b.state.subscriptions {
            self.router.subscribe(&handle, filter, r.options, r.id);
        }
        b.queued.sort_by_key(|(entry, ..)| *entry);
        for (entry, d, _) in b.queued {
            restored.queued += 1;
            match progress.get(&entry) {
                Some(Progress::Sent(id)) if d.qos == midge_codec::QoS::AtLeastOnce => {
                    b.state.outgoing.restore(*id, Awaiting::PubAck, d)
                }
                Some(Progress::Sent(id)) => b.state.outgoing.restore(*id, Awaiting::PubRec, d),
                Some(Progress::Released(id)) => b.state.outgoing.restore(*id, Awaiting::PubComp, d),
                // Queued, as it was: in the mailbox, where the limits count it.
                None => handle.mailbox.restore(d),
            }
        }
        b.state.expiry_interval = record.expiry_interval;
        b.state.outgoing.set_last_id(record.last_packet_id);
        // Online when the broker stopped: parked from now, for its expiry interval.
        let expires_at = match record.expires_at {
            Some(ms) => Some(clock.to_instant(ms)),
            None => self.expiry_from(clock.now, record.expiry_interval),
        };
        // Checked when due against its client's rights, as it would have been had the broker
        // not stopped (`PendingWill::into_will`).
        let access = record.will_owner.map(|(username, listener)| {
            let security = self.scope(listener).security.clone();
            Box::new(ClientAccess::new(security, username.map(String::from), client_id.to_string(), listener))
        });
        let will = record.will.map(|(will, due)| PendingWill::new(will, clock.to_instant(due), access));
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
        Some(j.session(client_id, state.expiry_interval, state.outgoing.last_id(), None))
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

#[cfg(test)]
mod stream_position_tests {
    //! Cluster mode: the copies of a message read from the cluster's QoS stream and its
    //! position are durable together or not at all; a session's record follows it when it
    //! comes back from a handoff that failed.
    use super::*;
    use crate::session::Message;
    use crate::store::{StoreOptions, SyncPolicy};
    use bytes::Bytes;
    use midge_codec::{Properties, QoS};

    fn open(dir: &std::path::Path) -> (Arc<Broker>, Restored) {
        let config = crate::config::parse_str("listener 1883\n", "t").unwrap().0;
        let broker = Broker::new(config).unwrap();
        let options = StoreOptions {
            dir: dir.to_owned(),
            sync: SyncPolicy::EveryAck,
            set_aside_unreadable: false,
            reset: false,
        };
        let (store, records, _) = Store::open(options).unwrap();
        let restored = broker.restore(store, records);
        (broker, restored)
    }

    /// Queues a copy of a message for `client` tied to a new commit; returns the commit.
    fn queue_copy(j: &Journal, client: &str, payload: &'static str) -> u64 {
        let commit = j.next_commit();
        let message = Message::from_publish(
            "t".into(),
            Bytes::from_static(payload.as_bytes()),
            QoS::AtLeastOnce,
            false,
            Properties::default(),
            "publisher".into(),
            Instant::now(),
        );
        let mut d = Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Vec::new(),
            share: None,
            entry: None,
        };
        Committing { journal: j, commit }.queued(client, &mut d);
        commit
    }

    fn close(broker: Arc<Broker>) {
        let j = broker.journal().unwrap();
        let last = j.store().appended();
        block_on(j.store().durable(last));
        j.store().close();
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn copies_and_position_survive_together_and_uncommitted_copies_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = open(dir.path());
        let j = broker.journal().unwrap();
        assert_eq!(j.stream_position(), 0);
        j.session("sub", 300, 0, Some((None, None)));
        let commit = queue_copy(j, "sub", "from the stream");
        assert!(j.commit_stream(commit, 41).is_some());
        // The next message's copy is written, its commit never (the node was killed).
        queue_copy(j, "sub", "never committed");
        // A message without copies here records nothing.
        assert_eq!(j.commit_stream(j.next_commit(), 43), None);
        assert_eq!(j.stream_position(), 41);
        close(broker);

        let (broker, restored) = open(dir.path());
        let j = broker.journal().unwrap();
        assert_eq!(j.stream_position(), 41);
        assert_eq!((restored.sessions, restored.queued), (1, 1), "only the committed copy is back");
        close(broker);
        let (broker, _) = open(dir.path());
        assert_eq!(broker.journal().unwrap().stream_position(), 41);
    }

    #[test]
    fn a_session_parked_again_after_a_failed_handoff_keeps_no_will_across_a_restart() {
        // Taken out for another node, its will dropped (the client is back there), then
        // parked again here when the handoff failed: a restart does not bring the will back.
        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = open(dir.path());
        let j = broker.journal().unwrap();
        let will = midge_codec::Will {
            topic: "wills/c".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        };
        let pending = PendingWill::new(will, Instant::now() + Duration::from_secs(60), None);
        j.session("c", 300, 0, Some((None, Some(&pending))));
        close(broker);
        let (broker, restored) = open(dir.path());
        assert_eq!(restored.sessions, 1);
        let id = ByteString::from("c");
        let later = Instant::now() + Duration::from_secs(1000);
        let crate::registry::Released::Parked(owned, due) = broker.registry.release(&id, Instant::now())
        else {
            panic!("not parked")
        };
        assert!(due.is_none(), "the will was not due yet");
        broker.park_again(&id, *owned);
        close(broker);
        let (broker, _) = open(dir.path());
        let due = broker.registry.parked_due(&id, later);
        assert!(due.expired.is_some(), "the session is back");
        assert!(due.will.is_none(), "its will came back with it");
        close(broker);
    }

    #[test]
    fn a_copy_is_recorded_sent_only_after_its_commit() {
        // Its subscriber takes the copy while routing still queues others: the record that
        // it was sent (its PUBLISH waits for that record) must not come before the commit,
        // or a crash in between drops the copy of a message the client has.
        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = open(dir.path());
        let j = broker.journal().unwrap();
        j.session("sub", 300, 0, Some((None, None)));
        for commit_by_stream in [true, false] {
            let commit = queue_copy(j, "sub", "taken early");
            let entry = StoreEntry { id: j.next_entry.load(Ordering::Relaxed) - 1, commit };
            let (sent, committed) = std::thread::scope(|s| {
                let sender = s.spawn(|| j.delivery(DeliveryEvent::Sent { entry, packet_id: 7 }));
                // The sender's head start: it waits for the commit.
                std::thread::sleep(Duration::from_millis(100));
                assert!(!sender.is_finished(), "the copy was recorded sent before its commit");
                let committed = match commit_by_stream {
                    true => j.commit_stream(commit, 9),
                    false => j.commit_incoming(None, 1, commit),
                };
                (sender.join().unwrap(), committed.unwrap())
            });
            assert!(sent > committed, "sent recorded at {sent}, before its commit at {committed}");
        }
        close(broker);
    }
}
