//! Which client ids this node holds in the cluster: the claims of its connections in the
//! sessions bucket, the wills it keeps in the wills bucket, and what becomes of both when
//! another node claims a client id. Each client id's work is done in order by one of
//! [`WORKERS`] tasks (picked by the id's hash), so a burst of connections is claimed that
//! many at a time, and never holds up the cluster task (its subscriptions, what other nodes
//! publish). A claim taken by another node is looked at before anything else waiting.
//! (Inline, one at a time in the cluster task, 77,000 connections in 15 s kept a takeover
//! from another node waiting 14.5 s, and a new subscriber's NATS subscription as long.)
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{client_id_of, session_key, TailRequest, CLAIM_ATTEMPTS};
use crate::broker::Broker;
use crate::cluster::ownership::Claim;
use crate::cluster::Held;

/// The tasks that claim client ids, each for its share of them.
const WORKERS: usize = 64;
/// Claims are looked through for client ids with no session here once there are this many
/// (then twice as many as were left): the map follows the sessions here, not every client
/// id ever seen (a node kept 230 bytes for each, for ever).
const SWEEP_FLOOR: usize = 64;

/// What the key-value buckets and the tail are for the workers.
pub(super) struct Context {
    pub broker: Arc<Broker>,
    pub sessions: kv::Store,
    pub wills: kv::Store,
    pub origin: String,
    pub tail: mpsc::UnboundedSender<TailRequest>,
}

/// Work on one client id.
enum Work {
    /// A change the broker told of (a connection opened or closed, a will, a session parked).
    Held(Held),
    /// A session the store gave back at start, claimed for this run.
    Reclaimed(String, Claim),
}

/// The workers' inboxes: each takes the client ids whose hash falls to it.
pub(super) struct Owners {
    work: Vec<mpsc::UnboundedSender<Work>>,
    taken: Vec<mpsc::UnboundedSender<(String, Claim)>>,
    hasher: RandomState,
    workers: Vec<tokio::task::JoinHandle<()>>,
    origin: String,
}

impl Owners {
    /// Starts the workers; they stop once this is dropped and their inboxes are empty.
    pub fn start(context: Context) -> Owners {
        let origin = context.origin.clone();
        let context = Arc::new(context);
        let (mut work, mut taken) = (Vec::with_capacity(WORKERS), Vec::with_capacity(WORKERS));
        let mut workers = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let (work_tx, work_rx) = mpsc::unbounded_channel();
            let (taken_tx, taken_rx) = mpsc::unbounded_channel();
            work.push(work_tx);
            taken.push(taken_tx);
            let worker = Worker {
                context: context.clone(),
                claims: HashMap::new(),
                kept_wills: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            };
            workers.push(tokio::spawn(worker.run(work_rx, taken_rx)));
        }
        Owners { work, taken, hasher: RandomState::new(), workers, origin }
    }

    /// Lets the workers finish what they were given (the wills of the connections closed at
    /// a stop leave the bucket), and waits for them.
    pub async fn finish(self) {
        let Owners { work, taken, workers, .. } = self;
        drop((work, taken));
        for w in workers {
            let _ = w.await;
        }
    }

    fn send(&self, worker: usize, work: Work) {
        if self.work[worker].send(work).is_err() {
            tracing::error!(
                "Cluster: a task for client ids is gone; claims and wills of its ids are not kept."
            );
        }
    }

    fn worker(&self, client_id: &str) -> usize {
        (self.hasher.hash_one(client_id) % WORKERS as u64) as usize
    }

    /// A change of a client id the broker told of (other changes are not for the owners).
    pub fn held(&self, held: Held) {
        let client_id = match &held {
            Held::Opened { client_id, .. }
            | Held::Will { client_id, .. }
            | Held::Parked { client_id }
            | Held::Closed { client_id, .. } => client_id,
            Held::Added(_) | Held::Removed(_) => return,
        };
        self.send(self.worker(client_id), Work::Held(held));
    }

    /// A session from the store, claimed for this run.
    pub fn reclaimed(&self, client_id: String, mine: Claim) {
        self.send(self.worker(&client_id), Work::Reclaimed(client_id, mine));
    }

    /// An entry of the sessions bucket changed: another node's claim goes to the worker of
    /// its client id (this node's own are not for anyone).
    pub fn changed(&self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let Some(other) = Claim::decode(&entry.value).filter(|o| o.origin != self.origin) else { return };
        let Some(client_id) = client_id_of(&entry.key) else { return };
        let _ = self.taken[self.worker(&client_id)].send((client_id, other));
    }
}

struct Worker {
    context: Arc<Context>,
    /// The client ids this worker claimed: the connection, and the claim.
    claims: HashMap<String, (u64, Claim)>,
    /// The wills this worker keeps in the bucket: the connection of each client id's, and
    /// the revision of its record.
    kept_wills: HashMap<String, (u64, u64)>,
    sweep_at: usize,
}

impl Worker {
    async fn run(
        mut self,
        mut work: mpsc::UnboundedReceiver<Work>,
        mut taken: mpsc::UnboundedReceiver<(String, Claim)>,
    ) {
        loop {
            tokio::select! {
                biased;
                Some((client_id, other)) = taken.recv() => self.taken_over_by(&client_id, &other),
                Some(w) = work.recv() => match w {
                    Work::Held(held) => self.held(held).await,
                    Work::Reclaimed(client_id, mine) => {
                        let at = mine.at;
                        if !self.claims.contains_key(&client_id) {
                            self.remember(client_id.clone(), (0, mine));
                        }
                        // Another node's later claim, looked at before this came in (it had
                        // no claim to take then), is in the bucket.
                        if let Some(other) = self.bucket_claim(&client_id).await {
                            if other.origin != self.context.origin {
                                self.taken_over_by(&client_id, &other);
                            }
                        }
                        if self.claims.contains_key(&client_id) {
                            let _ = self.context.tail.send(TailRequest::Snapshot { client_id, at });
                        }
                    }
                },
                else => break,
            }
        }
    }

    async fn held(&mut self, held: Held) {
        let c = self.context.clone();
        match held {
            Held::Opened { client_id, conn_id, at } => {
                let mine = Claim { origin: c.origin.clone(), at };
                match claim(&c.sessions, &client_id, &mine).await {
                    Claimed::Held => {
                        tracing::debug!("Cluster: client id {client_id} claimed here.");
                        self.remember(client_id, (conn_id, mine));
                    }
                    Claimed::Newer(other) => {
                        // A later connection on another node claimed it first.
                        self.claims.remove(&client_id);
                        if c.broker.taken_over_elsewhere(&client_id, conn_id) {
                            tracing::debug!("Cluster: client id {client_id} claimed by {}.", other.origin);
                        }
                    }
                    Claimed::Unknown => {}
                }
            }
            Held::Will { client_id, conn_id, will, delay } => {
                let record = crate::cluster::wills::encode(&c.origin, conn_id, delay, &client_id, &will);
                match c.wills.put(session_key(&client_id), Bytes::from(record)).await {
                    Ok(revision) => {
                        tracing::debug!("Cluster: the will of {client_id} is kept in the cluster.");
                        self.kept_wills.insert(client_id, (conn_id, revision));
                    }
                    Err(e) => tracing::warn!("Cluster: the will of {client_id} is not kept in the cluster ({e}): if this node dies, it is not published."),
                }
            }
            Held::Parked { client_id } => {
                if !self.claims.contains_key(&client_id) {
                    // Parked again after it was out for another node (a handoff that failed):
                    // its claim may have been swept meanwhile; the bucket's, if it is still
                    // this node's, is.
                    if let Some(mine) = self.bucket_claim(&client_id).await.filter(|m| m.origin == c.origin) {
                        self.remember(client_id.clone(), (0, mine));
                    }
                }
                if let Some((_, claim)) = self.claims.get(&client_id) {
                    let _ = c.tail.send(TailRequest::Snapshot { client_id, at: claim.at });
                }
            }
            Held::Closed { client_id, conn_id } => {
                let Some(&(kept_for, revision)) = self.kept_wills.get(&client_id) else { return };
                if kept_for != conn_id {
                    return;
                }
                self.kept_wills.remove(&client_id);
                // Only this record: the client may have connected to another node since,
                // which put its will under the same key.
                match c.wills.purge_expect_revision(session_key(&client_id), Some(revision)).await {
                    Ok(()) => tracing::debug!("Cluster: the will of {client_id} left the cluster."),
                    Err(e) if e.kind() == kv::PurgeErrorKind::WrongLastRevision => {
                        tracing::debug!("Cluster: the will of {client_id} was replaced by another node's.")
                    }
                    Err(e) => tracing::warn!("Cluster: the will of {client_id} stays in the cluster ({e})."),
                }
            }
            Held::Added(_) | Held::Removed(_) => {}
        }
    }

    /// Keeps a claim; past [`Worker::sweep_at`] claims, those of client ids with no session
    /// here any more (connection closed, session over) go.
    fn remember(&mut self, client_id: String, claim: (u64, Claim)) {
        self.claims.insert(client_id, claim);
        if self.claims.len() >= self.sweep_at {
            let broker = &self.context.broker;
            self.claims.retain(|client_id, _| broker.has_session(client_id));
            self.sweep_at = (self.claims.len() * 2).max(SWEEP_FLOOR);
        }
    }

    /// The claim the sessions bucket has for `client_id`, if it can be read.
    async fn bucket_claim(&self, client_id: &str) -> Option<Claim> {
        let entry = self.context.sessions.entry(session_key(client_id)).await.ok()??;
        (entry.operation == kv::Operation::Put).then(|| Claim::decode(&entry.value)).flatten()
    }

    /// Another node claimed a client id for a later connection than this node's: the
    /// connection here closes, or the session parked here ends.
    fn taken_over_by(&mut self, client_id: &str, other: &Claim) {
        let c = &self.context;
        let Some((conn_id, mine)) = self.claims.get(client_id) else { return };
        // An older claim, seen late, takes nothing from a newer one.
        if !other.supersedes(mine) {
            return;
        }
        let conn_id = *conn_id;
        self.claims.remove(client_id);
        if c.broker.taken_over_elsewhere(client_id, conn_id) {
            tracing::debug!("Cluster: client id {client_id} claimed by {}.", other.origin);
        } else if c.broker.drop_parked(client_id, other.instant()) {
            // A connection elsewhere took the client id without this session (clean start, or
            // this node did not answer in time): it is out of date.
            tracing::info!(
                "Cluster: the session of {client_id} parked here ends: its client id was taken on {}.",
                other.origin
            );
        }
    }
}

/// What became of a claim.
pub(super) enum Claimed {
    /// This node holds the client id.
    Held,
    /// A later connection on another node holds it.
    Newer(Claim),
    /// The bucket could not be read or written.
    Unknown,
}

/// Claims a client id for this node in the sessions bucket, over an older claim only, with
/// compare-and-set on the revision read (create when there is none): a claim that lost the
/// race reads again ([`crate::cluster::ownership`]).
pub(super) async fn claim(sessions: &kv::Store, client_id: &str, mine: &Claim) -> Claimed {
    let key = session_key(client_id);
    let value = Bytes::from(mine.encode());
    for _ in 0..CLAIM_ATTEMPTS {
        let current = match sessions.entry(key.clone()).await {
            Ok(e) => e.filter(|e| e.operation == kv::Operation::Put),
            Err(e) => {
                tracing::warn!("Cluster: cannot read the owner of client id {client_id}: {e}.");
                return Claimed::Unknown;
            }
        };
        let lost = match current {
            Some(e) => {
                if let Some(other) = Claim::decode(&e.value).filter(|o| o.supersedes(mine)) {
                    return Claimed::Newer(other);
                }
                match sessions.update(&key, value.clone(), e.revision).await {
                    Ok(_) => return Claimed::Held,
                    Err(e) => e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                }
            }
            None => match sessions.create(&key, value.clone()).await {
                Ok(_) => return Claimed::Held,
                Err(e) => e.kind() == kv::CreateErrorKind::AlreadyExists,
            },
        };
        if !lost {
            break;
        }
    }
    tracing::warn!(
        "Cluster: could not claim client id {client_id}; another node's connection with it may stay open."
    );
    Claimed::Unknown
}
