//! The cluster task: the node's connection to NATS. It publishes what local clients publish,
//! subscribes to the filters local sessions hold, routes what other nodes publish to local
//! subscribers, and keeps the local retained store in step with the retained stream. What
//! is decided is in [`crate::cluster`]; this is NATS, tokio and the clock.
use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use bytestring::ByteString;
use futures_core::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::cluster::dedup::{Dedup, Verdict};
use crate::cluster::interest::{Change, Interest};
use crate::cluster::ownership::Claim;
use crate::cluster::subject::{self, filter_to_subjects, subject_to_topic, topic_to_subject};
use crate::cluster::wire::{self, Carried};
use crate::cluster::{Held, Outbox};
use crate::config::cluster::Cluster;
use crate::session::Message;

/// The JetStream stream of retained messages.
pub const RETAINED_STREAM: &str = "MIDGE_RETAINED";
/// The key-value bucket of which node holds each client id.
pub const SESSIONS_BUCKET: &str = "MIDGE_SESSIONS";
/// Attempts at claiming a client id whose entry others change meanwhile.
const CLAIM_ATTEMPTS: usize = 5;
/// How long connecting to NATS and reading the retained stream may take at start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What one NATS subscription may hold before the client drops (a slow consumer): below
/// [`crate::cluster::dedup::WINDOW`], so that copies of one message arriving through
/// different subscriptions are never further apart than the window.
const SUBSCRIPTION_CAPACITY: usize = 16_384;
/// Messages from NATS waiting for the cluster task.
const INBOUND_CAPACITY: usize = 4096;

/// Why the node cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file the options name cannot be read.
    #[error("cannot read {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// NATS does not answer or refuses the connection.
    #[error("cannot connect to NATS at {urls}: {error}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        error: String,
    },
    /// JetStream refused or failed (is it enabled: `nats-server -js`?).
    #[error("JetStream: {0} (is JetStream enabled on the NATS server?)")]
    JetStream(String),
    /// Start took longer than it may.
    #[error("NATS did not answer within {} s", START_TIMEOUT.as_secs())]
    Timeout,
}

/// The cluster between [`Broker::join_cluster`] and the task: the ends of the outbox.
#[derive(Debug)]
pub(crate) struct Joined {
    messages: mpsc::Receiver<Arc<Message>>,
    held: mpsc::UnboundedReceiver<Held>,
}

/// Makes the broker a cluster node: from now on it hands its messages and subscription
/// changes over (to a task started by [`connect`] and [`run`]).
pub(crate) fn join(broker: &Broker) -> Joined {
    let (outbox, messages, held) = Outbox::new();
    broker.join_cluster(outbox);
    Joined { messages, held }
}

/// The node, connected to NATS, its retained messages loaded.
pub(crate) struct Connected {
    joined: Joined,
    client: async_nats::Client,
    /// Shared subscriptions' queue subscriptions: on a connection of their own, which gets
    /// what this node publishes too.
    shared_client: async_nats::Client,
    js: jetstream::Context,
    retained: Pin<
        Box<dyn Stream<Item = Result<jetstream::Message, jetstream::consumer::pull::OrderedError>> + Send>,
    >,
    /// Which node holds each client id, and its changes.
    sessions: kv::Store,
    owners: Pin<Box<dyn Stream<Item = Result<kv::Entry, kv::WatcherError>> + Send>>,
    origin: String,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// This node's name: `cluster_node_name`, or the host name.
fn node_name(c: &Cluster) -> String {
    c.node_name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect())
            .unwrap_or_else(|| "midge".to_owned())
    })
}

/// Connects to NATS, makes sure the retained stream exists, and loads it into the local
/// retained store (each topic's last message; an empty one deletes).
pub(crate) async fn connect(
    broker: &Arc<Broker>,
    c: &Cluster,
    joined: Joined,
) -> Result<Connected, ClusterError> {
    tokio::time::timeout(START_TIMEOUT, connect_inner(broker, c, joined))
        .await
        .map_err(|_| ClusterError::Timeout)?
}

/// The options of a connection to NATS.
async fn options(c: &Cluster, name: String) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut opts = async_nats::ConnectOptions::new()
        // A node never gets its own messages back (on its shared-subscription connection it
        // does: NATS picks among every node's members, this node's included).
        .no_echo()
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("Cluster: NATS connected."),
                other => tracing::warn!("Cluster: NATS {other}."),
            }
        });
    if let (Some(user), Some(password)) = (&c.username, &c.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(path) = &c.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|error| ClusterError::File { path: path.display().to_string(), error })?;
    }
    if let Some(ca) = &c.cafile {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(opts)
}

async fn connect_inner(broker: &Arc<Broker>, c: &Cluster, joined: Joined) -> Result<Connected, ClusterError> {
    let node = node_name(c);
    let urls = c.urls.join(", ");
    let connect_error =
        |e: async_nats::ConnectError| ClusterError::Connect { urls: urls.clone(), error: e.to_string() };
    let client =
        options(c, format!("midge {node}")).await?.connect(c.urls.as_slice()).await.map_err(connect_error)?;
    let shared_client = options(c, format!("midge {node} (shared)"))
        .await?
        .connect(c.urls.as_slice())
        .await
        .map_err(connect_error)?;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: RETAINED_STREAM.to_owned(),
            subjects: vec![format!("{}.>", subject::RETAINED)],
            // The last message of each topic: its retained message, or an empty one that
            // deleted it.
            max_messages_per_subject: 1,
            num_replicas: c.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let last = stream.info().await.map_err(|e| ClusterError::JetStream(e.to_string()))?.state.last_sequence;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.>", subject::RETAINED),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let mut retained: Pin<Box<dyn Stream<Item = _> + Send>> =
        Box::pin(consumer.messages().await.map_err(|e| ClusterError::JetStream(e.to_string()))?);
    // Every topic's last message is at or below the stream's last sequence, and the last
    // message of the stream is the last of its topic: read until it.
    let mut loaded = 0usize;
    let mut seen = 0;
    while seen < last {
        match poll_fn(|cx| retained.as_mut().poll_next(cx)).await {
            Some(Ok(m)) => {
                // Caught up also when nothing is pending (the last message was purged).
                let (sequence, pending) = m.info().map_or((seen, 1), |i| (i.stream_sequence, i.pending));
                seen = if pending == 0 { last } else { sequence };
                loaded += usize::from(apply_retained(broker, &m));
            }
            Some(Err(e)) => return Err(ClusterError::JetStream(e.to_string())),
            None => return Err(ClusterError::JetStream("the retained stream's consumer ended".into())),
        }
    }
    // The bucket's stream as JetStream's key-value convention has it (ADR-8), made here:
    // async-nats's create_key_value reads the account's limits in a form nats-server 2.9 does
    // not answer with.
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{SESSIONS_BUCKET}"),
        subjects: vec![format!("$KV.{SESSIONS_BUCKET}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: c.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let sessions =
        js.get_key_value(SESSIONS_BUCKET).await.map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let owners = Box::pin(sessions.watch_all().await.map_err(|e| ClusterError::JetStream(e.to_string()))?);
    // NATS's names of the node's start: a restarted node numbers its messages anew.
    let boot = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let origin = format!("{node}/{boot:x}");
    tracing::info!(
        "Cluster: node {node} joined through NATS at {urls}; {loaded} retained message{} loaded.",
        if loaded == 1 { "" } else { "s" }
    );
    Ok(Connected { joined, client, shared_client, js, retained, sessions, owners, origin })
}

/// Applies one message of the retained stream to the local store; true when it is a
/// retained message (not a deletion, not expired).
fn apply_retained(broker: &Broker, m: &jetstream::Message) -> bool {
    let Ok(topic) = subject_to_topic(subject::RETAINED, &m.subject) else {
        tracing::warn!("Cluster: ignoring retained stream subject {}.", m.subject);
        return false;
    };
    let Some(mut carried) = read_headers(m.headers.as_ref()) else { return false };
    // The expiry counts from when the message entered the stream.
    if let (Some(left), Ok(info)) = (carried.properties.message_expiry_interval(), m.info()) {
        let now =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let age = u64::try_from((now - info.published.unix_timestamp_nanos()) / 1_000_000_000).unwrap_or(0);
        if age >= u64::from(left) {
            carried.properties.remove(midge_codec::PropertyId::MessageExpiryInterval);
            let empty = message(topic, Bytes::new(), carried);
            broker.router.retain(&Arc::new(empty));
            return false;
        }
        carried.properties.set(midge_codec::Property::MessageExpiryInterval(left - age as u32));
    }
    let payload = m.payload.clone();
    let kept = !payload.is_empty();
    broker.router.retain(&Arc::new(message(topic, payload, carried)));
    kept
}

fn read_headers(h: Option<&async_nats::HeaderMap>) -> Option<Carried> {
    let empty = async_nats::HeaderMap::new();
    let h = h.unwrap_or(&empty);
    match wire::read(|name| h.get_all(name).map(|v| v.as_str())) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("Cluster: ignoring a message: {e}.");
            None
        }
    }
}

fn message(topic: String, payload: Bytes, c: Carried) -> Message {
    Message::from_publish(
        ByteString::from(topic),
        payload,
        c.qos,
        c.retain,
        c.properties,
        c.publisher,
        Instant::now(),
    )
}

/// The node's NATS subscriptions, by MQTT filter: a forwarding task per subject.
#[derive(Default)]
struct Subscriptions {
    interest: Interest,
    tasks: HashMap<String, Vec<JoinHandle<()>>>,
}

/// Runs the cluster task until `stop` says the broker stops.
pub(crate) async fn run(broker: Arc<Broker>, connected: Connected, mut stop: watch::Receiver<bool>) {
    let Connected { joined, client, shared_client, js, mut retained, sessions, mut owners, origin } =
        connected;
    // The client ids this node claimed: the connection, and the claim.
    let mut claims: HashMap<String, (u64, Claim)> = HashMap::new();
    let mut owners_open = true;
    let Joined { mut messages, mut held } = joined;
    let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(INBOUND_CAPACITY);
    let mut subs = Subscriptions::default();
    let mut dedup = Dedup::default();
    let mut seq: u64 = 0;
    let mut retained_open = true;
    loop {
        // Not biased: a node publishing without pause must not starve what comes from the
        // others (or the retained stream, or the owners' bucket).
        tokio::select! {
            _ = stop.changed() => break,
            Some(change) = held.recv() => {
                let change = match change {
                    Held::Added(f) => subs.interest.add(&f),
                    Held::Removed(f) => subs.interest.remove(&f),
                    Held::Opened { client_id, conn_id, at } => {
                        let mine = Claim { origin: origin.clone(), at };
                        match claim(&sessions, &client_id, &mine).await {
                            Claimed::Held => {
                                claims.insert(client_id, (conn_id, mine));
                            }
                            Claimed::Newer(other) => {
                                // A later connection on another node claimed it first.
                                claims.remove(&client_id);
                                if broker.taken_over_elsewhere(&client_id, conn_id) {
                                    tracing::debug!("Cluster: client id {client_id} claimed by {}.", other.origin);
                                }
                            }
                            Claimed::Unknown => {}
                        }
                        None
                    }
                };
                match change {
                    Some(Change::Subscribe(filter)) => {
                        let shared = midge_codec::parse_shared(&filter).ok().flatten().is_some();
                        let client = if shared { &shared_client } else { &client };
                        let tasks = subscribe(client, &filter, &inbound_tx).await;
                        subs.tasks.insert(filter.clone(), tasks);
                        // Logged once NATS has the subscription (a PING answered after it).
                        let client = client.clone();
                        tokio::spawn(async move {
                            if client.flush().await.is_ok() {
                                tracing::debug!("Cluster: subscribed on NATS for {filter}.");
                            }
                        });
                    }
                    Some(Change::Unsubscribe(filter)) => {
                        // Dropping a subscriber unsubscribes it.
                        for t in subs.tasks.remove(&filter).unwrap_or_default() {
                            t.abort();
                        }
                        tracing::debug!("Cluster: unsubscribed on NATS for {filter}.");
                    }
                    None => {}
                }
            }
            Some(m) = messages.recv() => {
                seq += 1;
                publish(&client, &js, &m, (&origin, seq)).await;
            }
            Some(m) = inbound.recv() => deliver(&broker, &m, &origin, &mut dedup),
            r = poll_fn(|cx| owners.as_mut().poll_next(cx)), if owners_open => match r {
                Some(Ok(entry)) => taken_over(&broker, &entry, &origin, &mut claims),
                Some(Err(e)) => tracing::warn!("Cluster: the sessions bucket: {e}."),
                None => {
                    tracing::error!("Cluster: the sessions bucket's watch ended; clients connecting to other nodes no longer close their connection here.");
                    owners_open = false;
                }
            },
            r = poll_fn(|cx| retained.as_mut().poll_next(cx)), if retained_open => match r {
                Some(Ok(m)) => {
                    apply_retained(&broker, &m);
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let topic = subject_to_topic(subject::RETAINED, &m.subject).unwrap_or_default();
                        tracing::debug!("Cluster: retained message of {topic} from the stream.");
                    }
                }
                Some(Err(e)) => tracing::warn!("Cluster: the retained stream: {e}."),
                None => {
                    tracing::error!("Cluster: the retained stream's consumer ended; retained messages of other nodes are no longer followed.");
                    retained_open = false;
                }
            },
        }
    }
    // What local clients published before the stop (wills of the closed connections).
    while let Ok(m) = messages.try_recv() {
        seq += 1;
        publish(&client, &js, &m, (&origin, seq)).await;
    }
    for t in subs.tasks.into_values().flatten() {
        t.abort();
    }
    // What was handed to the client goes out before the process ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
}

/// The key of a client id in the sessions bucket: base64url, which keeps every client id a
/// valid key.
fn session_key(client_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client_id)
}

fn client_id_of(key: &str) -> Option<String> {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).ok()?).ok()
}

/// What became of a claim.
enum Claimed {
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
async fn claim(sessions: &kv::Store, client_id: &str, mine: &Claim) -> Claimed {
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

/// Another node claimed a client id for a later connection than this node's: the
/// connection here closes.
fn taken_over(broker: &Broker, entry: &kv::Entry, origin: &str, claims: &mut HashMap<String, (u64, Claim)>) {
    if entry.operation != kv::Operation::Put {
        return;
    }
    let Some(other) = Claim::decode(&entry.value) else { return };
    if other.origin == origin {
        return;
    }
    let Some(client_id) = client_id_of(&entry.key) else { return };
    let Some((conn_id, mine)) = claims.get(&client_id) else { return };
    // An older claim, seen late, takes nothing from a newer one.
    if !other.supersedes(mine) {
        return;
    }
    let conn_id = *conn_id;
    claims.remove(&client_id);
    if broker.taken_over_elsewhere(&client_id, conn_id) {
        tracing::debug!("Cluster: client id {client_id} claimed by {}.", other.origin);
    }
}

/// A message from NATS, and the shared subscription it came for (`$share/G/F`), if any.
type Inbound = (Option<Arc<str>>, async_nats::Message);

/// The NATS queue group of a shared subscription: one per MQTT group and filter, named the
/// same on every node (a digest: the filter may hold anything, the name may not).
fn queue_group(share: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, share.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("midge-{hex}")
}

/// Subscribes to a filter's subjects, each forwarded into `inbound` by a task of its own;
/// a shared subscription (`$share/G/F`) as a queue subscription on F's subjects, so that
/// NATS gives each message to one node of the group.
async fn subscribe(
    client: &async_nats::Client,
    filter: &str,
    inbound: &mpsc::Sender<Inbound>,
) -> Vec<JoinHandle<()>> {
    let (plain, share) = match midge_codec::parse_shared(filter) {
        Ok(Some(s)) => (s.filter, Some(Arc::<str>::from(filter))),
        _ => (filter, None),
    };
    let mut tasks = Vec::new();
    for subject in filter_to_subjects(subject::MESSAGES, plain) {
        let sub = match &share {
            Some(_) => client.queue_subscribe(subject.clone(), queue_group(filter)).await,
            None => client.subscribe(subject.clone()).await,
        };
        match sub {
            Ok(mut sub) => {
                let tx = inbound.clone();
                let share = share.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(m) = poll_fn(|cx| Pin::new(&mut sub).poll_next(cx)).await {
                        if tx.send((share.clone(), m)).await.is_err() {
                            break;
                        }
                    }
                }));
            }
            Err(e) => tracing::error!("Cluster: cannot subscribe to {subject} (filter {filter}): {e}."),
        }
    }
    tasks
}

/// Publishes a message of this node on NATS, and a retained one to the stream as well.
async fn publish(client: &async_nats::Client, js: &jetstream::Context, m: &Message, origin: (&str, u64)) {
    let now = Instant::now();
    if m.is_expired(now) {
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in
        wire::headers(m.qos, m.retain, &m.publisher, &m.properties, m.remaining_expiry(now), origin)
    {
        headers.append(name, value);
    }
    let subject = topic_to_subject(subject::MESSAGES, &m.topic);
    if let Err(e) = client.publish_with_headers(subject, headers.clone(), m.payload.clone()).await {
        tracing::warn!("Cluster: cannot publish on {}: {e}.", m.topic);
    }
    if m.retain {
        let subject = topic_to_subject(subject::RETAINED, &m.topic);
        match js.publish_with_headers(subject, headers, m.payload.clone()).await {
            Ok(ack) => {
                let topic = m.topic.clone();
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        tracing::warn!("Cluster: the retained message of {topic} was not stored: {e}.");
                    }
                });
            }
            Err(e) => tracing::warn!("Cluster: cannot store the retained message of {}: {e}.", m.topic),
        }
    }
}

/// Routes a message from another node to the local subscribers, once; or, NATS having
/// picked this node for a shared subscription, to one member of its group here.
fn deliver(broker: &Broker, (share, m): &Inbound, own: &str, dedup: &mut Dedup) {
    let Ok(topic) = subject_to_topic(subject::MESSAGES, &m.subject) else {
        tracing::warn!("Cluster: ignoring subject {}.", m.subject);
        return;
    };
    let Some(carried) = read_headers(m.headers.as_ref()) else { return };
    if let Some(share) = share {
        // One copy per queue group: the subjects of one filter do not overlap.
        broker.route_share_from_cluster(&Arc::new(message(topic, m.payload.clone(), carried)), share);
        return;
    }
    if let Some((origin, seq)) = &carried.origin {
        if origin == own {
            return;
        }
        match dedup.check(origin, *seq) {
            Verdict::New => {}
            Verdict::Duplicate => return,
            Verdict::TooOld => {
                tracing::warn!(
                    "Cluster: a message of {origin} arrived too late to be told from a copy: dropped."
                );
                return;
            }
        }
    }
    broker.route_from_cluster(&Arc::new(message(topic, m.payload.clone(), carried)));
}
