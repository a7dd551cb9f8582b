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
use crate::cluster::handoff::Handoff;
use crate::cluster::interest::{Change, Interest};
use crate::cluster::ownership::Claim;
use crate::cluster::parked::{self, Parked};
use crate::cluster::subject::{self, filter_to_subjects, subject_to_topic, topic_to_subject};
use crate::cluster::wire::{self, Carried};
use crate::cluster::{Fetch, Held, Outbox, OutboxReceivers, Outgoing};
use crate::config::cluster::Cluster;
use crate::session::Message;

mod owners;
use owners::claim;

/// The JetStream stream of retained messages.
pub const RETAINED_STREAM: &str = "MIDGE_RETAINED";
/// The JetStream stream of QoS 1 and 2 messages between nodes.
pub const QOS_STREAM: &str = "MIDGE_QOS";
/// How long the QoS stream keeps a message (a node down for longer misses it).
const QOS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The most the QoS stream holds (the oldest go first past it).
const QOS_MAX_BYTES: i64 = 1 << 30;
/// JetStream's window for recognising a message published again (after a PubAck lost).
const QOS_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Messages of the QoS stream a node may hold unacknowledged: past this, JetStream gives
/// it no more until it catches up (the stream is the queue, not the node's memory).
const QOS_MAX_ACK_PENDING: i64 = 8192;
/// How long a reader of a stream or bucket that could not be made waits before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the reader of the retained stream is compared with the stream's end.
const RETAINED_CHECK_EVERY: Duration = Duration::from_secs(2);
/// JetStream publishes of QoS 1 and 2 messages awaiting their PubAck, at most.
const QOS_MAX_INFLIGHT: usize = 4096;
/// The first wait before a message JetStream did not take is published again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A message published to a stream again until JetStream takes it: waits [`RETRY_FIRST`],
/// doubling up to [`RETRY_MAX`], and logs the first failure and every tenth.
struct Retry {
    wait: Duration,
    failures: u32,
}

impl Retry {
    fn new() -> Retry {
        Retry { wait: RETRY_FIRST, failures: 0 }
    }

    /// An attempt failed: `warn` is called when it is worth a line, then the wait.
    async fn failed(&mut self, warn: impl FnOnce()) {
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            warn();
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(RETRY_MAX);
    }

    /// True once an attempt failed.
    fn retried(&self) -> bool {
        self.failures > 0
    }
}

/// Whether JetStream took a message published to a stream (waiting for its acknowledgement),
/// or why not.
async fn taken(
    sent: Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
) -> Result<(), String> {
    match sent {
        Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
/// The key-value bucket of which node holds each client id.
pub const SESSIONS_BUCKET: &str = "MIDGE_SESSIONS";
/// The key-value bucket of the parked sessions, for when their node is lost
/// ([`crate::cluster::parked`]).
pub const PARKED_BUCKET: &str = "MIDGE_PARKED";
/// The key-value bucket of the wills of each node's connections.
pub const WILLS_BUCKET: &str = "MIDGE_WILLS";
/// The key-value bucket of the nodes' heartbeats (key: node, value: `NODE/BOOT`), and of
/// which node published the wills of a dead node's run (key `reaped_` and the run).
pub const NODES_BUCKET: &str = "MIDGE_NODES";
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node not heard of for this long is dead: another node publishes its connections' wills.
const DEAD_AFTER: Duration = Duration::from_secs(10);
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
    messages: mpsc::UnboundedReceiver<Outgoing>,
    held: mpsc::UnboundedReceiver<Held>,
    fetches: mpsc::UnboundedReceiver<Fetch>,
    outbox: Outbox,
}

/// Makes the broker a cluster node: from now on it hands its messages and subscription
/// changes over (to a task started by [`connect`] and [`run`]).
pub(crate) fn join(broker: &Broker) -> Joined {
    let (outbox, OutboxReceivers { messages, held, fetches }) = Outbox::new();
    broker.join_cluster(outbox.clone());
    Joined { messages, held, fetches, outbox }
}

/// The node, connected to NATS, its retained messages loaded.
pub(crate) struct Connected {
    joined: Joined,
    client: async_nats::Client,
    /// Shared subscriptions' queue subscriptions: on a connection of their own, which gets
    /// what this node publishes too.
    shared_client: async_nats::Client,
    js: jetstream::Context,
    /// QoS 1 and 2 publishes: at most [`QOS_MAX_INFLIGHT`] awaiting their PubAck, more wait.
    qos_js: jetstream::Context,
    /// This node's durable consumer of the QoS stream.
    qos: QosFeed,
    /// The QoS stream (to read what the consumer skipped over), and the position the
    /// consumer had acknowledged when the node started.
    qos_stream: jetstream::stream::Stream,
    qos_floor: u64,
    retained: Pin<
        Box<dyn Stream<Item = Result<jetstream::Message, jetstream::consumer::pull::OrderedError>> + Send>,
    >,
    /// Which node holds each client id, and its changes.
    sessions: kv::Store,
    /// The parked sessions' copies.
    parked: kv::Store,
    /// How many times the node's NATS connection (re)connected.
    connects: watch::Receiver<u64>,
    /// The retained stream (its reader is made again after a reconnection), and the last
    /// position loaded.
    retained_stream: jetstream::stream::Stream,
    retained_seq: u64,
    /// The wills of the nodes' connections, and the nodes' heartbeats.
    wills: kv::Store,
    nodes: kv::Store,
    owners: OwnersWatch,
    origin: String,
    node: String,
}

/// A reader of the retained stream.
type RetainedReader =
    Pin<Box<dyn Stream<Item = Result<jetstream::Message, jetstream::consumer::pull::OrderedError>> + Send>>;
/// A watch of the sessions bucket.
type OwnersWatch = Pin<Box<dyn Stream<Item = Result<kv::Entry, kv::WatcherError>> + Send>>;
/// A watch of the sessions bucket being made.
type OwnersRemake = Pin<Box<dyn std::future::Future<Output = Result<kv::Watch, kv::WatchError>> + Send>>;

type QosFeed =
    Pin<Box<dyn Stream<Item = Result<jetstream::Message, jetstream::consumer::pull::MessagesError>> + Send>>;

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// QoS 0 messages from other nodes the NATS client dropped (the node did not keep up), and
/// when that was last logged (seconds since the Unix epoch).
static SLOW_DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SLOW_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The NATS client dropped a message for a subscription that was full: counted, and logged
/// at most once a second (there can be one such event per message).
fn slow_consumer() {
    use std::sync::atomic::Ordering;
    let dropped = SLOW_DROPS.fetch_add(1, Ordering::Relaxed) + 1;
    let now = unix_secs();
    let last = SLOW_LOGGED.load(Ordering::Relaxed);
    if now > last && SLOW_LOGGED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(
            "Cluster: this node does not keep up with the QoS 0 messages of other nodes: the NATS client drops them ({dropped} slow-consumer events so far)."
        );
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
/// `connects`, when given, counts the connection's (re)connections.
async fn options(
    c: &Cluster,
    name: String,
    connects: Option<Arc<watch::Sender<u64>>>,
) -> Result<async_nats::ConnectOptions, ClusterError> {
    let mut opts = async_nats::ConnectOptions::new()
        // A node never gets its own messages back (on its shared-subscription connection it
        // does: NATS picks among every node's members, this node's included).
        .no_echo()
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let connects = connects.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("Cluster: NATS connected.");
                        if let Some(c) = connects {
                            c.send_modify(|n| *n += 1);
                        }
                    }
                    async_nats::Event::SlowConsumer(_) => slow_consumer(),
                    other => tracing::warn!("Cluster: NATS {other}."),
                }
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
    let (connects_tx, connects) = watch::channel(0u64);
    let client = options(c, format!("midge {node}"), Some(Arc::new(connects_tx)))
        .await?
        .connect(c.urls.as_slice())
        .await
        .map_err(connect_error)?;
    let shared_client = options(c, format!("midge {node} (shared)"), None)
        .await?
        .connect(c.urls.as_slice())
        .await
        .map_err(connect_error)?;
    let js = jetstream::new(client.clone());
    let retained_config = jetstream::stream::Config {
        name: RETAINED_STREAM.to_owned(),
        subjects: vec![format!("{}.>", subject::RETAINED)],
        // The last message of each topic: its retained message, or an empty one that
        // deleted it.
        max_messages_per_subject: 1,
        num_replicas: c.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let stream = patiently(|| js.get_or_create_stream(retained_config.clone())).await?;
    // As JetStream answered just now.
    let last = stream.cached_info().state.last_sequence;
    let mut retained =
        patiently(|| retained_reader(&stream, jetstream::consumer::DeliverPolicy::LastPerSubject)).await?;
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
            Some(Err(e)) => return Err(js_error(e)),
            None => return Err(ClusterError::JetStream("the retained stream's consumer ended".into())),
        }
    }
    let sessions = bucket(&js, SESSIONS_BUCKET, c.replicas, Duration::ZERO).await?;
    let wills = bucket(&js, WILLS_BUCKET, c.replicas, Duration::ZERO).await?;
    let parked = bucket(&js, PARKED_BUCKET, c.replicas, Duration::ZERO).await?;
    // Heartbeats and reaping marks of nodes gone for good go after a day.
    let nodes = bucket(&js, NODES_BUCKET, c.replicas, Duration::from_secs(24 * 3600)).await?;
    let owners = Box::pin(patiently(|| sessions.watch_all()).await?);
    let (qos, qos_stream, qos_floor) = qos_feed(&js, c, &node).await?;
    let qos_js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(QOS_MAX_INFLIGHT)
        .backpressure_on_inflight(true)
        .build(client.clone());
    // NATS's names of the node's start: a restarted node numbers its messages anew.
    let boot = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let origin = format!("{node}/{boot:x}");
    tracing::info!(
        "Cluster: node {node} joined through NATS at {urls}; {loaded} retained message{} loaded.",
        if loaded == 1 { "" } else { "s" }
    );
    Ok(Connected {
        connects,
        retained_stream: stream,
        retained_seq: last,
        wills,
        nodes,
        joined,
        client,
        shared_client,
        js,
        qos_js,
        qos,
        qos_stream,
        qos_floor,
        retained,
        sessions,
        parked,
        owners,
        origin,
        node,
    })
}

/// A key-value bucket, its stream made as JetStream's key-value convention has it (ADR-8):
/// async-nats's create_key_value reads the account's limits in a form nats-server 2.9 does
/// not answer with. `max_age` zero: kept for ever.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    patiently(|| js.get_or_create_stream(config.clone())).await?;
    patiently(|| js.get_key_value(name)).await
}

/// The name of a node's durable consumer of the QoS stream (NATS allows letters, digits,
/// `-` and `_` in it).
fn consumer_name(node: &str) -> String {
    let safe: String =
        node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("midge-{safe}")
}

/// Makes sure the QoS stream exists, and this node's durable consumer of it, and follows it;
/// returns also the stream and the consumer's acknowledged position. One consumer per node,
/// of every subject: nats-server 2.9 gives a consumer one filter, and a node's filters change
/// with its clients' subscriptions.
async fn qos_feed(
    js: &jetstream::Context,
    c: &Cluster,
    node: &str,
) -> Result<(QosFeed, jetstream::stream::Stream, u64), ClusterError> {
    let config = jetstream::stream::Config {
        name: QOS_STREAM.to_owned(),
        subjects: vec![format!("{}.>", subject::QOS)],
        // Kept up to the limits, not only until every node's consumer has it: a parked
        // session's copy is completed from what came after it (`from_parked`), for a node
        // lost after it acknowledged that.
        retention: jetstream::stream::RetentionPolicy::Limits,
        max_age: QOS_MAX_AGE,
        max_bytes: QOS_MAX_BYTES,
        discard: jetstream::stream::DiscardPolicy::Old,
        duplicate_window: QOS_DUPLICATE_WINDOW,
        num_replicas: c.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let stream = patiently(|| js.get_or_create_stream(config.clone())).await?;
    if stream.cached_info().config.retention != jetstream::stream::RetentionPolicy::Limits {
        tracing::warn!("Cluster: the stream {QOS_STREAM} was made by an earlier midge with interest retention (nats-server cannot change it): a parked session taken from the cluster after its node is lost may miss the messages every node had acknowledged.");
    }
    let name = consumer_name(node);
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: format!("{}.>", subject::QOS),
        // A node that joins gets what is published from then on; one that comes back goes on
        // where it stopped.
        deliver_policy: jetstream::consumer::DeliverPolicy::New,
        // Acknowledging a message acknowledges those before it: the node acknowledges what its
        // store has, in batches.
        ack_policy: jetstream::consumer::AckPolicy::All,
        max_ack_pending: QOS_MAX_ACK_PENDING,
        ..Default::default()
    };
    let consumer: jetstream::consumer::PullConsumer =
        patiently(|| stream.get_or_create_consumer(&name, config.clone())).await?;
    // Where the node goes on: after what the consumer delivered when nothing of it waits for
    // an acknowledgement (a new consumer: the stream's end), else after its ack floor (what
    // was delivered to the last run and not acknowledged is read again). As JetStream
    // answered just now.
    let info = consumer.cached_info();
    let floor = if info.num_ack_pending == 0 {
        info.delivered.stream_sequence.max(info.ack_floor.stream_sequence)
    } else {
        info.ack_floor.stream_sequence
    };
    let feed = Box::pin(patiently(|| consumer.messages()).await?);
    Ok((feed, stream, floor))
}

/// A JetStream error at start, as the broker reports it.
fn js_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::JetStream(e.to_string())
}

/// A JetStream request at start, asked again while it goes unanswered in time: a loaded
/// machine, or a cluster of NATS servers still placing a replicated stream, answers late,
/// and each of these requests may be made twice (they make or read what is there). Any
/// other error is the answer. [`START_TIMEOUT`] bounds the whole start.
async fn patiently<T, E, F>(mut ask: impl FnMut() -> F) -> Result<T, ClusterError>
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match ask().await {
            Ok(answer) => return Ok(answer),
            // async-nats's errors say so, whichever request it was ("timed out", "jetstream
            // request timed out"), in kinds of their own.
            Err(e) if e.to_string().contains("timed out") => {
                tracing::warn!("Cluster: JetStream did not answer in time ({e}); asking again.");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(js_error(e)),
        }
    }
}

/// A reader of the retained stream (an ordered consumer): at start every topic's last
/// message, later from a position on.
async fn retained_reader(
    stream: &jetstream::stream::Stream,
    deliver_policy: jetstream::consumer::DeliverPolicy,
) -> Result<RetainedReader, String> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.>", subject::RETAINED),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::pin(consumer.messages().await.map_err(|e| e.to_string())?))
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
        let age = age_secs(info.published.unix_timestamp_nanos());
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
    let Connected {
        joined,
        client,
        shared_client,
        js,
        qos_js,
        qos,
        qos_stream,
        qos_floor,
        retained,
        sessions,
        parked: parked_bucket,
        wills,
        nodes,
        mut owners,
        origin,
        node,
        mut connects,
        retained_stream,
        retained_seq,
    } = connected;
    connects.borrow_and_update();
    let following = tokio::spawn(follow_retained_stream(
        broker.clone(),
        (retained, retained_stream, retained_seq),
        connects.clone(),
        stop.clone(),
    ));
    // Where the watch of the owners' bucket is, to make it again from there (without holding
    // up the loop: NATS may take seconds to answer while it fails over).
    let mut owners_rev = 0;
    let mut owners_remake: Option<OwnersRemake> = None;
    let remake_owners = |rev: u64, after: Duration| -> OwnersRemake {
        let sessions = sessions.clone();
        Box::pin(async move {
            tokio::time::sleep(after).await;
            sessions.watch_all_from_revision(rev + 1).await
        })
    };
    let watching = tokio::spawn(watch_nodes(
        broker.clone(),
        Reaper { nodes, wills: wills.clone(), sessions: sessions.clone() },
        node.clone(),
        origin.clone(),
        stop.clone(),
    ));
    let mut owners_open = true;
    let Joined { messages, mut held, mut fetches, outbox } = joined;
    // Other nodes ask this one for the sessions it has.
    let mut handoffs = match client.subscribe(topic_to_subject(subject::HANDOFF, &origin)).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!("Cluster: cannot answer other nodes' requests for sessions ({e}): clients moving to another node start afresh.");
            None
        }
    };
    let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(INBOUND_CAPACITY);
    let mut subs = Subscriptions::default();
    let mut dedup = Dedup::default();
    let out = Out {
        client: client.clone(),
        js: js.clone(),
        qos_js,
        outbox: outbox.clone(),
        origin: origin.clone(),
        unstored: Arc::default(),
    };
    let sending = tokio::spawn(out.run(messages, stop.clone()));
    // Where the tail starts (what the store has), before any session is handed over. A
    // stored position past the stream's end is of a stream made again since: not this one's.
    let stored = broker.journal().map_or(0, |j| j.stream_position());
    let end = qos_stream.cached_info().state.last_sequence;
    let start = if stored > end {
        tracing::warn!("Cluster: the store's position in {QOS_STREAM} ({stored}) is past the stream's end ({end}): the stream was made again; reading it from {qos_floor}.");
        qos_floor
    } else {
        stored.max(qos_floor)
    };
    broker.stream_routed_from(start);
    let (tail_tx, tail_rx) = mpsc::unbounded_channel::<TailRequest>();
    let (parked_tx, parked_rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let writing = tokio::spawn(keep_parked(parked_bucket.clone(), parked_rx));
    // A parked session's copy, in what NATS takes in one message.
    let snapshot_max = client.server_info().max_payload.saturating_sub(2048);
    let tailing = tokio::spawn(tail(
        broker.clone(),
        (qos, qos_stream.clone(), start),
        Snapshots {
            requests: tail_rx,
            out: parked_tx,
            max: snapshot_max,
            origin: origin.clone(),
            outbox: outbox.clone(),
        },
        node,
        stop.clone(),
    ));
    let replay = Replay { bucket: parked_bucket, stream: qos_stream, tail: tail_tx.clone() };
    let holders = owners::Owners::start(owners::Context {
        broker: broker.clone(),
        sessions: sessions.clone(),
        wills: wills.clone(),
        origin: origin.clone(),
        tail: tail_tx.clone(),
    });
    // The sessions the store gave back: claimed for this run (found here), or ended when a
    // connection elsewhere took their client id since.
    let (reclaimed_tx, mut reclaimed) = mpsc::unbounded_channel::<(String, Claim)>();
    tokio::spawn(reclaim(broker.clone(), sessions.clone(), origin.clone(), reclaimed_tx));
    loop {
        // Not biased: a node publishing without pause must not starve what comes from the
        // others (or the retained stream, or the owners' bucket).
        tokio::select! {
            _ = stop.changed() => break,
            Some(change) = held.recv() => {
                let change = match change {
                    Held::Added(f) => subs.interest.add(&f),
                    Held::Removed(f) => subs.interest.remove(&f),
                    held => {
                        holders.held(held);
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
            Some(m) = inbound.recv() => deliver(&broker, &m, &origin, &mut dedup),
            Some((client_id, mine)) = reclaimed.recv() => holders.reclaimed(client_id, mine),
            Some(fetch) = fetches.recv() => {
                tokio::spawn(fetch_session(broker.clone(), client.clone(), sessions.clone(), origin.clone(), replay.clone(), fetch));
            }
            Some(request) = poll_fn(|cx| match handoffs.as_mut() { Some(h) => Pin::new(h).poll_next(cx), None => std::task::Poll::Ready(None) }), if handoffs.is_some() => {
                tokio::spawn(hand_off(broker.clone(), client.clone(), origin.clone(), request));
            }
            Ok(()) = connects.changed() => {
                // Reconnected: the watch (an ordered consumer, one copy) may have been on a
                // server that is gone; JetStream would make it again only once its heartbeats
                // are missed. Made again now, from where it was.
                owners_remake = Some(remake_owners(owners_rev, Duration::ZERO));
            }
            r = async { owners_remake.as_mut().expect("checked").await }, if owners_remake.is_some() => {
                owners_remake = None;
                match r {
                    Ok(w) => {
                        owners = Box::pin(w);
                        owners_open = true;
                    }
                    Err(e) => {
                        tracing::warn!("Cluster: the sessions bucket cannot be watched ({e}); trying again.");
                        owners_remake = Some(remake_owners(owners_rev, RETRY_AFTER));
                    }
                }
            }
            r = poll_fn(|cx| owners.as_mut().poll_next(cx)), if owners_open => match r {
                Some(Ok(entry)) => {
                    owners_rev = owners_rev.max(entry.revision);
                    holders.changed(entry);
                }
                Some(Err(e)) => {
                    // Its reader (one copy) may have been on a NATS server that is gone: made
                    // again from where it was.
                    tracing::warn!("Cluster: the sessions bucket: {e}; reading it again.");
                    owners_remake = Some(remake_owners(owners_rev, Duration::ZERO));
                }
                None => {
                    tracing::error!("Cluster: the sessions bucket's watch ended; clients connecting to other nodes no longer close their connection here.");
                    owners_open = false;
                }
            },
        }
    }
    for t in subs.tasks.into_values().flatten() {
        t.abort();
    }
    // What local clients published before the stop (wills of the closed connections) goes
    // out, and what the store has of the stream is acknowledged.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        holders.finish().await;
        let _ = sending.await;
        let _ = tailing.await;
        let _ = watching.await;
        let _ = following.await;
        let _ = writing.await;
    })
    .await;
}

/// Follows the retained stream from after `seq`, into the local retained store. The reader
/// (an ordered consumer, one copy) is made again from where it was after a reconnection to
/// NATS and on an error; and it is watched: JetStream's own check (two missed heartbeats of
/// 15 s) finds one that was on a NATS server now gone only a minute later, so when the
/// stream is ahead of the reader at two checks running, the reader is made again (once for
/// each end of the stream seen: a message the stream's limits removed is never delivered).
async fn follow_retained_stream(
    broker: Arc<Broker>,
    (mut retained, stream, mut seq): (RetainedReader, jetstream::stream::Stream, u64),
    mut connects: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut check = tokio::time::interval(RETAINED_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut behind_at: Option<u64> = None;
    let mut remade_for = 0u64;
    let mut remake = false;
    let mut failing = false;
    // A reader that failed is made again after a pause, not in a tight loop.
    let mut pause = false;
    loop {
        if std::mem::take(&mut pause) {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
        if std::mem::take(&mut remake) {
            let from = jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: seq + 1 };
            match retained_reader(&stream, from).await {
                Ok(r) => {
                    retained = r;
                    failing = false;
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("Cluster: the retained stream cannot be read ({e}); trying again.");
                    }
                    remake = true;
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(RETRY_AFTER) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            Ok(()) = connects.changed() => remake = true,
            _ = check.tick() => {
                let Ok(Ok(info)) = tokio::time::timeout(RETAINED_CHECK_EVERY, stream.get_info()).await else { continue };
                let end = info.state.last_sequence;
                if end <= seq {
                    behind_at = None;
                } else if behind_at != Some(seq) {
                    behind_at = Some(seq);
                } else if remade_for != end {
                    remade_for = end;
                    tracing::warn!("Cluster: the reader of the retained stream is stuck at {seq} of {end}; reading it again.");
                    remake = true;
                }
            }
            r = poll_fn(|cx| retained.as_mut().poll_next(cx)) => match r {
                Some(Ok(m)) => {
                    if let Ok(info) = m.info() {
                        seq = seq.max(info.stream_sequence);
                    }
                    apply_retained(&broker, &m);
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let topic = subject_to_topic(subject::RETAINED, &m.subject).unwrap_or_default();
                        tracing::debug!("Cluster: retained message of {topic} from the stream.");
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("Cluster: the retained stream: {e}; reading it again.");
                    remake = true;
                    pause = true;
                }
                None => {
                    tracing::warn!("Cluster: the retained stream's reader ended; reading it again.");
                    remake = true;
                    pause = true;
                }
            },
        }
    }
}

/// How long a node waits for another to hand a session over, all told (reading the owner,
/// asking, the answer): less than a connection waits for its session (5 s).
const FETCH_WAIT: Duration = Duration::from_secs(4);

/// A client id without a session here connected without clean start: the node that holds
/// its claim in the sessions bucket, if another, is asked for the session (on its handoff
/// subject), which is put together here and handed to the connection. Nothing is asked
/// while NATS is away (the client starts afresh at once).
///
/// The client id is claimed for this node before the connection goes on (its CONNACK): a
/// client that leaves at once for another node, which reads the claim to find its session,
/// would otherwise find the node it came from (or nobody) there, and start afresh while its
/// session stays here. The claim has the time the connection asked: the claim of every
/// connection, made after ([`Held::Opened`]), is later and replaces it, and a connection
/// opened elsewhere after it still wins. Best effort, within [`EARLY_CLAIM_WAIT`]: the
/// connection's own claim follows anyway.
async fn fetch_session(
    broker: Arc<Broker>,
    client: async_nats::Client,
    sessions: kv::Store,
    origin: String,
    replay: Replay,
    Fetch { client_id, reply, gave_up, at }: Fetch,
) {
    if client.connection_state() != async_nats::connection::State::Connected {
        return;
    }
    let deadline = tokio::time::Instant::now() + FETCH_WAIT;
    let found =
        find_session(&client, &sessions, &origin, &replay, &client_id, &reply, &gave_up, deadline).await;
    // Not for a connection that stopped waiting: it made its own claim (and a session that
    // came for it is dropped, with a word, by `hand_over`).
    let waiting = !(reply.is_closed() || *gave_up.lock());
    if waiting && !matches!(found, Found::Done) {
        let mine = Claim { origin, at };
        let wait = deadline.min(tokio::time::Instant::now() + EARLY_CLAIM_WAIT);
        if tokio::time::timeout_at(wait, claim(&sessions, &client_id, &mine)).await.is_err() {
            tracing::debug!(
                "Cluster: client id {client_id} not claimed before its CONNACK (no answer in time)."
            );
        }
    }
    if let Found::Session(taken) = found {
        let (p, h) = *taken;
        complete(
            &broker,
            &replay,
            Adoption { client_id, handoff: h, parked: p, upto: 0, reply, gave_up },
            deadline,
        )
        .await;
    }
}

/// How long the claim made before a connection's CONNACK may take of the time for its
/// session ([`FETCH_WAIT`]).
const EARLY_CLAIM_WAIT: Duration = Duration::from_millis(500);

/// What [`find_session`] found.
enum Found {
    /// Nothing to do: the claim is this node's already, or the connection stopped waiting.
    Done,
    /// No session to move: the client starts afresh here.
    Nothing,
    /// The session, from its node or from the cluster's copy.
    Session(Box<(Parked, Handoff)>),
}

/// The session of `client_id` from the node that holds its claim, if another.
#[allow(clippy::too_many_arguments)]
async fn find_session(
    client: &async_nats::Client,
    sessions: &kv::Store,
    origin: &str,
    replay: &Replay,
    client_id: &ByteString,
    reply: &tokio::sync::oneshot::Sender<crate::broker::Owned>,
    gave_up: &crate::cluster::GaveUp,
    deadline: tokio::time::Instant,
) -> Found {
    let owner = match tokio::time::timeout_at(deadline, sessions.get(session_key(client_id))).await {
        Ok(Ok(Some(value))) => Claim::decode(&value),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::warn!("Cluster: cannot read the owner of client id {client_id} ({e}): it starts without its session.");
            None
        }
        Err(_) => {
            tracing::warn!("Cluster: the owner of client id {client_id} was not read in time: it starts without its session.");
            None
        }
    };
    let Some(owner) = owner else { return Found::Nothing };
    if owner.origin == origin {
        return Found::Done;
    }
    if reply.is_closed() || *gave_up.lock() {
        // The connection stopped waiting meanwhile: nothing is moved for it.
        return Found::Done;
    }
    let subject = topic_to_subject(subject::HANDOFF, &owner.origin);
    let request = client.request(subject, Bytes::copy_from_slice(client_id.as_bytes()));
    let answer = tokio::time::timeout_at(deadline, request).await;
    let taken = match answer {
        Ok(Ok(m)) if m.payload.is_empty() => return Found::Nothing,
        Ok(Ok(m)) => match read_parked(&m.payload) {
            Ok(taken) => taken,
            Err(why) => {
                tracing::warn!(
                    "Cluster: the session of {client_id} from {} is lost ({why}): it starts afresh.",
                    owner.origin
                );
                return Found::Nothing;
            }
        },
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            // No responders: that run of the node is gone. Its copy of the session, if it
            // parked it, is in the cluster (its store has it too, for when it comes back).
            match from_parked(replay, client_id, &owner, deadline).await {
                Ok(taken) => taken,
                Err(why) => {
                    tracing::info!("Cluster: the session of {client_id} was on {}, which does not answer ({e}); {why}: it starts afresh.", owner.origin);
                    return Found::Nothing;
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "Cluster: {} did not hand the session of {client_id} over ({e}): it starts afresh.",
                owner.origin
            );
            return Found::Nothing;
        }
        Err(_) => {
            tracing::warn!(
                "Cluster: {} did not hand the session of {client_id} over in time: it starts afresh.",
                owner.origin
            );
            return Found::Nothing;
        }
    };
    Found::Session(Box::new(taken))
}

/// What a node needs to take a parked session from the cluster.
#[derive(Clone)]
struct Replay {
    bucket: kv::Store,
    stream: jetstream::stream::Stream,
    tail: mpsc::UnboundedSender<TailRequest>,
}

/// A session as another node sends it or keeps it, and the session itself.
fn read_parked(bytes: &[u8]) -> Result<(Parked, Handoff), String> {
    let p = Parked::decode(bytes).map_err(|e| e.to_string())?;
    let h = crate::cluster::handoff::decode(&p.session, &crate::store::records::Clock::now())
        .map_err(|e| e.to_string())?;
    Ok((p, h))
}

/// The session `owner` parked, from the cluster's copy ([`crate::cluster::parked`]), if the
/// copy is of the client id's last connection and not expired (it is purged: used once);
/// [`complete`] adds what the QoS stream got for it since. Err says why not.
async fn from_parked(
    r: &Replay,
    client_id: &ByteString,
    owner: &Claim,
    deadline: tokio::time::Instant,
) -> Result<(Parked, Handoff), String> {
    let within = |what: &'static str| move |_| format!("{what} took too long");
    let entry = tokio::time::timeout_at(deadline, r.bucket.entry(session_key(client_id)))
        .await
        .map_err(within("reading its copy"))?
        .map_err(|e| format!("its copy cannot be read ({e})"))?
        .filter(|e| e.operation == kv::Operation::Put)
        .ok_or("no copy of it is in the cluster")?;
    let (p, h) = read_parked(&entry.value)?;
    if parked::node_of(&p.origin) != parked::node_of(&owner.origin) || p.at != owner.at {
        return Err("the cluster's copy is of an earlier connection".into());
    }
    let now = unix_secs();
    if h.expiry_interval != u32::MAX && now.saturating_sub(p.parked_at) >= u64::from(h.expiry_interval) {
        return Err("it has expired".into());
    }
    // Used once: another node the client goes to asks this one.
    let bucket = r.bucket.clone();
    let key = session_key(client_id);
    tokio::spawn(async move {
        if let Err(e) = bucket.purge_expect_revision(&key, Some(entry.revision)).await {
            tracing::debug!("Cluster: a used copy of a parked session stays in the cluster ({e}).");
        }
    });
    Ok((p, h))
}

/// A session from another node (its answer, or its copy in the cluster), completed with what
/// the QoS stream got for it after `p.position` ([`Parked::replays`]: read here up to where
/// the tail is, by the tail from there), adopted by the tail and handed to the connection
/// waiting for it (`a.reply`). When the stream cannot be read in time (or the tail has
/// stopped) it is adopted as it came, and what crossed the cluster while it moved may be
/// missing or come twice (logged).
async fn complete(broker: &Broker, r: &Replay, mut a: Adoption, deadline: tokio::time::Instant) {
    let as_it_came = a.handoff.clone();
    let read = read_missed(broker, r, &a.client_id, &a.parked, &mut a.handoff);
    let why = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(upto)) => {
            a.upto = upto;
            match r.tail.send(TailRequest::Adopt(Box::new(a))) {
                Ok(()) => return,
                Err(mpsc::error::SendError(request)) => {
                    let TailRequest::Adopt(back) = request else { unreachable!("an adoption was sent") };
                    // What was read stays: the stopped tail reads nothing more.
                    a = *back;
                    "the cluster task stopped".to_owned()
                }
            }
        }
        Ok(Err(why)) => {
            a.handoff = as_it_came;
            why
        }
        Err(_) => {
            a.handoff = as_it_came;
            "reading the QoS stream took too long".to_owned()
        }
    };
    tracing::warn!("Cluster: the session of {} is taken as it came ({why}): a QoS 1 or 2 message that crossed the cluster while it moved may be missing or come twice.", a.client_id);
    if let Some(outbox) = broker.cluster_outbox() {
        hand_over(broker, outbox, a);
    }
}

/// Adopts a session that came from another node and hands it to the connection waiting for
/// it, holding publishers between routing and numbering, and notes its arrival
/// ([`crate::cluster::Arrival`]). Adopted and sent with the connection's flag held: once the connection
/// stopped waiting (its client was told it has no session, and has a new one) it is not
/// adopted at all, as its records would land on the new session's.
fn hand_over(broker: &Broker, outbox: &Outbox, a: Adoption) {
    let gave_up = a.gave_up.lock();
    if *gave_up || a.reply.is_closed() {
        tracing::warn!(
            "Cluster: the session of {} came from {} after its connection stopped waiting (its client has a new session): it is dropped.",
            a.client_id,
            a.parked.origin
        );
        return;
    }
    let owned = {
        let _held = outbox.hold_numbering();
        outbox.arrived(&a.client_id, outbox.last_ticket());
        broker.adopt(&a.client_id, a.handoff)
    };
    tracing::info!("Cluster: the session of {} came from {}.", a.client_id, a.parked.origin);
    if let Err(owned) = a.reply.send(owned) {
        // The connection task is gone (the broker stops): the session ends here.
        broker.discard(owned);
    }
    drop(gave_up);
}

/// How far behind the tail [`read_missed`] may stop (the tail reads the rest one by one).
const CHASE_SLACK: u64 = 64;

/// Reads the QoS stream after `p.position`, into `h`'s queue as [`replay_into`] says, up to
/// where the tail is (it goes on from there); returns the last position read.
async fn read_missed(
    broker: &Broker,
    r: &Replay,
    client_id: &ByteString,
    p: &Parked,
    h: &mut Handoff,
) -> Result<u64, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("the QoS stream cannot be read ({e})");
    let mut stream = r.stream.clone();
    let state = stream.info().await.map_err(|e| unreadable(&e))?.state.clone();
    if p.position > state.last_sequence {
        return Err("the position it came with is past the QoS stream's end".into());
    }
    let start = (p.position + 1).max(state.first_sequence);
    if start > p.position + 1 {
        tracing::warn!(
            "Cluster: the QoS stream no longer has messages {} to {} (its limits): the session of {client_id} misses those that were for it.",
            p.position + 1,
            start - 1
        );
    }
    // Up to the stream's end now, and on to where the tail is if it is further.
    let mut upto = start - 1;
    if start > state.last_sequence.max(broker.stream_routed()) {
        return Ok(upto.max(p.position));
    }
    let reader = r
        .stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.>", subject::QOS),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        })
        .await
        .map_err(|e| unreadable(&e))?;
    let mut messages = reader.messages().await.map_err(|e| unreadable(&e))?;
    let upgrade = broker.router.upgrades_qos();
    loop {
        // Close enough behind the tail for it to read the rest one by one.
        if upto >= state.last_sequence && upto + CHASE_SLACK >= broker.stream_routed() {
            return Ok(upto);
        }
        let m = match poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(unreadable(&e)),
            None => return Err("the QoS stream's reader ended".to_owned()),
        };
        let Ok(info) = m.info() else { continue };
        replay_into(h, p, client_id, &Read::delivered(&m, info.published.unix_timestamp_nanos()), upgrade);
        upto = info.stream_sequence;
        // The stream's end (its last message may be gone: its limits).
        if info.pending == 0 {
            return Ok(upto);
        }
    }
}

/// How long a node answering for a session waits for JetStream to have its own messages
/// routed to it (the asking node waits 4 s for all).
const OWN_IN_STREAM_WAIT: Duration = Duration::from_secs(1);

/// Another node asks for a session this one has: it is taken out here (its connection, if
/// any, closes as in a takeover) and sent, and forgotten once sent; parked again if it
/// cannot be. An empty answer when there is none.
async fn hand_off(
    broker: Arc<Broker>,
    client: async_nats::Client,
    origin: String,
    request: async_nats::Message,
) {
    let Some(reply) = request.reply else { return };
    let Ok(client_id) = ByteString::try_from(request.payload) else { return };
    // What NATS takes in one message, less room for the protocol's own bytes.
    let max = client.server_info().max_payload.saturating_sub(1024);
    let Some(leaving) = broker.take_for_handoff(&client_id, max).await else {
        let _ = client.publish(reply, Bytes::new()).await;
        return;
    };
    // This node's own messages routed to it are in the stream before the answer goes, so
    // that the other node finds them below the end it reads (and leaves them out).
    if let Some(outbox) = broker.cluster_outbox() {
        if tokio::time::timeout(OWN_IN_STREAM_WAIT, outbox.acked(leaving.ticket)).await.is_err() {
            tracing::warn!("Cluster: the session of {client_id} moves to another node before JetStream took every message this node published for it: one of those may reach it twice.");
        }
    }
    let parked_at = unix_secs();
    let answer = Parked {
        origin,
        at: 0,
        position: leaving.position,
        ticket: leaving.ticket,
        arrived_at: leaving.arrived_at,
        parked_at,
        session: leaving.bytes.to_vec(),
    };
    match client.publish(reply, Bytes::from(answer.encode())).await {
        Ok(()) => {
            tracing::info!("Cluster: the session of {client_id} moved to another node.");
            broker.handed_off(leaving);
        }
        Err(e) => {
            tracing::warn!("Cluster: the session of {client_id} could not be sent to the node that asked ({e}): it stays here.");
            broker.park_again_leaving(&client_id, leaving);
        }
    }
}

/// What publishes the wills of a dead node's run.
#[derive(Clone)]
struct Reaper {
    nodes: kv::Store,
    wills: kv::Store,
    sessions: kv::Store,
}

/// Says this node is alive every [`HEARTBEAT`], and watches the others: a node not heard of
/// for [`DEAD_AFTER`], or heard of with another run (`NODE/BOOT`: it was restarted), has a
/// run that ended without publishing its connections' wills. One node (the one that creates
/// the run's `reaped_` key first) publishes them, each after its delay, unless its client
/// id was claimed since by another connection. A node cut off from NATS for longer than
/// [`DEAD_AFTER`] is taken for dead too.
async fn watch_nodes(
    broker: Arc<Broker>,
    reaper: Reaper,
    node: String,
    origin: String,
    mut stop: watch::Receiver<bool>,
) {
    // The run of this node's name before this one, if it did not end cleanly.
    if let Ok(Some(e)) = reaper.nodes.entry(node_key(&node)).await {
        if e.operation == kv::Operation::Put {
            let previous = String::from_utf8_lossy(&e.value).into_owned();
            if previous != origin {
                reap(&broker, &reaper, &previous).await;
            }
        }
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    // The run last heard of each other node, and when.
    let mut seen: HashMap<String, (String, Instant)> = HashMap::new();
    // The last heartbeat of every node first (a node that died before this one started
    // included), then the new ones.
    let mut watch = match reaper.nodes.watch_with_history(">").await {
        Ok(w) => Some(Box::pin(w)),
        Err(e) => {
            tracing::error!("Cluster: cannot watch the nodes' heartbeats ({e}): the wills of a dead node's clients are not published.");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = heartbeat.tick() => {
                // Never holding the watch up: a put that takes long is the next one's business.
                let (nodes, key, value) = (reaper.nodes.clone(), node_key(&node), Bytes::from(origin.clone()));
                tokio::spawn(async move {
                    match tokio::time::timeout(HEARTBEAT, nodes.put(key, value)).await {
                        Ok(Ok(_)) => tracing::trace!("Cluster: heartbeat sent."),
                        Ok(Err(e)) => tracing::debug!("Cluster: heartbeat: {e}."),
                        Err(_) => tracing::debug!("Cluster: heartbeat: no answer."),
                    }
                });
                let now = Instant::now();
                let dead: Vec<String> = seen
                    .iter()
                    .filter(|(_, (_, at))| now.duration_since(*at) > DEAD_AFTER)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in dead {
                    if let Some((run, _)) = seen.remove(&n) {
                        tracing::info!("Cluster: node {n} is not heard of for {} s.", DEAD_AFTER.as_secs());
                        reap(&broker, &reaper, &run).await;
                    }
                }
            }
            r = async { match watch.as_mut() { Some(w) => poll_fn(|cx| w.as_mut().poll_next(cx)).await, None => std::future::pending().await } } => match r {
                Some(Ok(e)) if e.operation == kv::Operation::Put => {
                    let Some(other) = e.key.strip_prefix("node_").and_then(client_id_of) else { continue };
                    if other == node {
                        continue;
                    }
                    let run = String::from_utf8_lossy(&e.value).into_owned();
                    tracing::trace!("Cluster: node {other} is alive ({run}).");
                    if let Some((before, _)) = seen.insert(other, (run.clone(), Instant::now())) {
                        if before != run {
                            reap(&broker, &reaper, &before).await;
                        }
                    }
                }
                Some(Ok(e)) => {
                    tracing::trace!("Cluster: nodes bucket: {:?} {}.", e.operation, e.key);
                    // A node that stopped cleanly: no wills of its to publish.
                    if let Some(other) = e.key.strip_prefix("node_").and_then(client_id_of) {
                        seen.remove(&other);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("Cluster: the nodes' heartbeats: {e}; reading them again.");
                    if let Ok(w) = reaper.nodes.watch_with_history(">").await {
                        watch = Some(Box::pin(w));
                    }
                }
                None => {
                    tracing::debug!("Cluster: the nodes' watch ended.");
                    watch = None;
                }
            },
        }
    }
    tracing::debug!("Cluster: heartbeats stop.");
    // A clean stop: this run's wills are published (or not) by this node.
    let _ = reaper.nodes.purge(node_key(&node)).await;
}

/// The key of a node in the nodes bucket.
fn node_key(node: &str) -> String {
    format!("node_{}", session_key(node))
}

/// Publishes the wills kept for connections of the node run `run`, if this node is the first
/// to take that on.
async fn reap(broker: &Arc<Broker>, r: &Reaper, run: &str) {
    let mark = format!("reaped_{}", session_key(run));
    if r.nodes.create(&mark, Bytes::new()).await.is_err() {
        return;
    }
    let mut keys = match r.wills.keys().await {
        Ok(k) => Box::pin(k),
        Err(e) => {
            tracing::warn!("Cluster: cannot read the wills of {run} ({e}).");
            return;
        }
    };
    let mut due = 0usize;
    while let Some(Ok(key)) = poll_fn(|cx| keys.as_mut().poll_next(cx)).await {
        let Ok(Some(entry)) = r.wills.entry(key.clone()).await else { continue };
        let Some(record) = crate::cluster::wills::decode(&entry.value).filter(|w| w.origin == run) else {
            continue;
        };
        let Some(client_id) = client_id_of(&key) else { continue };
        due += 1;
        let (broker, r, run) = (broker.clone(), r.clone(), run.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(record.delay))).await;
            // Claimed meanwhile by a connection of another run: the client is back [MQTT-3.1.3-9].
            let owner = r.sessions.entry(session_key(&client_id)).await.ok().flatten();
            let back = owner.and_then(|e| Claim::decode(&e.value)).is_some_and(|c| c.origin != run);
            // Still this record (not one a connection elsewhere put since): purged here. A
            // purge that fails otherwise (NATS away) still publishes it: one node reaps a run
            // (the `reaped_` mark), so it goes once, and a will is not lost to an outage.
            let still = match r.wills.purge_expect_revision(&key, Some(entry.revision)).await {
                Ok(()) => true,
                Err(e) => e.kind() != kv::PurgeErrorKind::WrongLastRevision,
            };
            if back || !still {
                return;
            }
            tracing::info!("Cluster: publishing the will of {client_id}, a client of {run}, which is gone.");
            broker.publish_will(record.will(), &ByteString::from(client_id), Instant::now());
        });
    }
    if due > 0 {
        tracing::info!(
            "Cluster: {due} will{} of clients of {run}, which is gone, to publish.",
            if due == 1 { "" } else { "s" }
        );
    }
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

/// The sessions the store gave back at start, parked here, were claimed by the node's
/// previous run: each is claimed for this one (the claim's time kept, so that a later
/// connection still wins), so that other nodes ask this run for it, and sent on `found`
/// (its copy is taken again). One without a claim is claimed as older than any connection;
/// one claimed by another node is left as it is.
async fn reclaim(
    broker: Arc<Broker>,
    sessions: kv::Store,
    origin: String,
    found: mpsc::UnboundedSender<(String, Claim)>,
) {
    let node = parked::node_of(&origin);
    for client_id in broker.parked_ids() {
        let key = session_key(&client_id);
        let entry = match sessions.entry(key.clone()).await {
            Ok(e) => e.filter(|e| e.operation == kv::Operation::Put),
            Err(e) => {
                tracing::warn!("Cluster: cannot read the owner of client id {client_id} ({e}): other nodes do not find its session here.");
                continue;
            }
        };
        let claimed = entry.as_ref().and_then(|e| Claim::decode(&e.value));
        let at = match &claimed {
            // Another node's: it may be older than this session (a claim of this node's
            // connection that did not reach the bucket before the node died), so it stays.
            Some(c) if parked::node_of(&c.origin) != node => continue,
            // A connection here took it already.
            Some(c) if c.origin == origin => continue,
            Some(c) => c.at,
            None => 0,
        };
        let mine = Claim { origin: origin.clone(), at };
        let value = Bytes::from(mine.encode());
        let written = match entry {
            Some(e) => sessions.update(&key, value, e.revision).await.is_ok(),
            None => sessions.create(&key, value).await.is_ok(),
        };
        if written {
            tracing::debug!("Cluster: client id {client_id} claimed here for its session from the store.");
            let _ = found.send((client_id.to_string(), mine));
        }
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
    // A shared subscription takes QoS 1 and 2 messages from their stream's subjects too (as
    // a core NATS subscriber: one member of the group gets each, at most once); the node's
    // other subscriptions get those from the stream.
    let mut subjects = filter_to_subjects(subject::MESSAGES, plain);
    if share.is_some() {
        subjects.extend(filter_to_subjects(subject::QOS, plain));
    }
    for subject in subjects {
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

/// The sending side of the cluster task: what local clients publish, to NATS.
struct Out {
    client: async_nats::Client,
    /// Retained messages' stream.
    js: jetstream::Context,
    /// QoS 1 and 2 messages' stream.
    qos_js: jetstream::Context,
    outbox: Outbox,
    origin: String,
    /// The retained messages JetStream has not taken yet: each topic's latest, the only one
    /// sent (again) to the stream.
    unstored: Unstored,
}

impl Out {
    /// Publishes what the outbox hands over, in order, until the broker stops; then what is
    /// left (the wills of the connections closed at the stop), and gives JetStream a moment
    /// to acknowledge it.
    async fn run(self, mut messages: mpsc::UnboundedReceiver<Outgoing>, mut stop: watch::Receiver<bool>) {
        let mut seq = 0;
        loop {
            let next = tokio::select! {
                _ = stop.changed() => None,
                m = messages.recv() => m,
            };
            let Some(o) = next else { break };
            self.send(o, &mut seq).await;
        }
        while let Ok(o) = messages.try_recv() {
            self.send(o, &mut seq).await;
        }
        let last = self.outbox.last_ticket();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.outbox.acked(last)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }

    /// Publishes one message: QoS 0 on core NATS under its topic's subject (dropped while
    /// NATS is away), QoS 1 and 2 to the QoS stream until JetStream acknowledges it, and a
    /// retained one to the retained stream as well.
    async fn send(&self, Outgoing { message: m, ticket }: Outgoing, seq: &mut u64) {
        let now = Instant::now();
        if m.is_expired(now) {
            self.outbox.done(ticket);
            return;
        }
        let number = if ticket == 0 {
            *seq += 1;
            *seq
        } else {
            ticket
        };
        let mut headers = async_nats::HeaderMap::new();
        // What the headers take on the wire, roughly (`NAME: VALUE\r\n`, the version line,
        // Nats-Msg-Id).
        let mut header_bytes = 64 + self.origin.len();
        for (name, value) in wire::headers(
            m.qos,
            m.retain,
            &m.publisher,
            &m.properties,
            m.remaining_expiry(now),
            (&self.origin, number),
        ) {
            header_bytes += name.len() + value.len() + 4;
            headers.append(name, value);
        }
        if m.retain {
            self.retain(&m, headers.clone(), header_bytes);
        }
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        if ticket == 0 {
            if self.outbox.dropping(!connected) {
                if connected {
                    tracing::warn!(
                        "Cluster: NATS is back: QoS 0 messages published here reach the other nodes again."
                    );
                } else {
                    tracing::warn!(
                        "Cluster: NATS is away: QoS 0 messages published here reach local subscribers only until it is back."
                    );
                }
            }
            if connected {
                let subject = topic_to_subject(subject::MESSAGES, &m.topic);
                if let Err(e) = self.client.publish_with_headers(subject, headers, m.payload.clone()).await {
                    tracing::warn!("Cluster: cannot publish on {}: {e}.", m.topic);
                }
            }
            self.outbox.done(0);
            return;
        }
        headers.insert("Nats-Msg-Id", format!("{}-{ticket}", self.origin));
        let subject = topic_to_subject(subject::QOS, &m.topic);
        // NATS refuses (and closes the connection for) a message past its max_payload: such
        // a message reaches local subscribers only, as with QoS 0, rather than waiting for ever.
        let size = m.payload.len() + header_bytes;
        let limit = self.client.server_info().max_payload;
        if (limit > 0 && size > limit) || subject.len() > MAX_SUBJECT {
            tracing::warn!(
                "Cluster: a QoS {} message of {} ({size} bytes with its headers) is larger than NATS's max_payload ({limit}) or its subject longer than {MAX_SUBJECT} bytes: it reaches local subscribers only.",
                m.qos as u8,
                m.topic
            );
            self.outbox.done(ticket);
            return;
        }
        let publish = jetstream::message::PublishMessage::build().headers(headers).payload(m.payload.clone());
        // In order while NATS is there; what it does not take is sent again later.
        let first = if connected {
            Some(self.qos_js.send_publish(subject.clone(), publish.clone()).await)
        } else {
            None
        };
        let (js, outbox) = (self.qos_js.clone(), self.outbox.clone());
        tokio::spawn(async move {
            let mut attempt = first;
            let mut retry = Retry::new();
            loop {
                let error = match attempt {
                    Some(sent) => match taken(sent).await {
                        Ok(()) => break,
                        Err(e) => e,
                    },
                    None => "NATS is away".to_owned(),
                };
                retry
                    .failed(|| {
                        tracing::warn!(
                            "Cluster: JetStream has not taken a QoS {} message of {} ({error}): its publisher waits, it is sent again.",
                            m.qos as u8,
                            m.topic
                        )
                    })
                    .await;
                attempt = Some(js.send_publish(subject.clone(), publish.clone()).await);
            }
            if retry.retried() {
                tracing::info!(
                    "Cluster: JetStream took the QoS {} message of {} after all.",
                    m.qos as u8,
                    m.topic
                );
            }
            outbox.done(ticket);
        });
    }

    /// Publishes a retained message to the retained stream, again and again until JetStream
    /// takes it (a stream without a leader for a few seconds, while NATS fails over, answers
    /// "no stream"), unless a later retained message of its topic came meanwhile: that one
    /// goes instead, never after it. One NATS would refuse (past its `max_payload`, or a
    /// subject past [`MAX_SUBJECT`]) stays on this node, with a warning. A topic has one
    /// sender at a time and one message waiting for it, the latest: while NATS is away, a
    /// client that retains flat out replaces that message instead of adding one (a task and
    /// a copy per message grew a node by 392 MiB in 5 s).
    fn retain(&self, m: &Message, headers: async_nats::HeaderMap, header_bytes: usize) {
        let subject = topic_to_subject(subject::RETAINED, &m.topic);
        let limit = self.client.server_info().max_payload;
        if subject.len() > MAX_SUBJECT || m.payload.len() + header_bytes > limit {
            tracing::warn!(
                "Cluster: the retained message of {} is larger than NATS's max_payload ({limit}) or its subject longer than {MAX_SUBJECT} bytes: it is kept on this node only.",
                m.topic
            );
            // An older one of the topic, waiting or being sent again, is not sent after it.
            if let Some(slot) = self.unstored.lock().get_mut(&m.topic) {
                slot.next = None;
                slot.superseded = true;
            }
            return;
        }
        let next = RetainedOut { subject, headers, payload: m.payload.clone() };
        let start = {
            let mut unstored = self.unstored.lock();
            let slot = unstored.entry(m.topic.clone()).or_default();
            slot.next = Some(next);
            !std::mem::replace(&mut slot.sending, true)
        };
        if start {
            tokio::spawn(send_retained(self.js.clone(), self.unstored.clone(), m.topic.clone()));
        }
    }
}

/// The retained messages on their way to the stream, by topic.
type Unstored = Arc<parking_lot::Mutex<HashMap<ByteString, TopicSlot>>>;

/// A topic whose retained message is on its way to the stream: the next one to send (the
/// latest), whether a sender is at work, and whether a later message that stays on this
/// node came since it began the one it sends (which is then given up at its next attempt).
#[derive(Debug, Default)]
struct TopicSlot {
    next: Option<RetainedOut>,
    sending: bool,
    superseded: bool,
}

/// A retained message for the stream.
#[derive(Debug)]
struct RetainedOut {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
}

/// The sender of a topic's retained messages: sends the next one until JetStream takes it
/// (the latest, when another came meanwhile), then the next, until none waits.
async fn send_retained(js: jetstream::Context, unstored: Unstored, topic: ByteString) {
    let next = || {
        let mut unstored = unstored.lock();
        let slot = unstored.get_mut(&topic)?;
        slot.superseded = false;
        let next = slot.next.take();
        if next.is_none() {
            unstored.remove(&topic);
        }
        next
    };
    'messages: while let Some(mut out) = next() {
        let mut retry = Retry::new();
        loop {
            let sent =
                js.publish_with_headers(out.subject.clone(), out.headers.clone(), out.payload.clone()).await;
            let Err(error) = taken(sent).await else { break };
            retry
                .failed(|| {
                    tracing::warn!(
                        "Cluster: the retained message of {topic} is not stored yet ({error}): sent again."
                    )
                })
                .await;
            let mut unstored = unstored.lock();
            let Some(slot) = unstored.get_mut(&topic) else { continue };
            if let Some(later) = slot.next.take() {
                slot.superseded = false;
                out = later;
            } else if std::mem::take(&mut slot.superseded) {
                continue 'messages;
            }
        }
        if retry.retried() {
            tracing::info!("Cluster: the retained message of {topic} is stored after all.");
        }
    }
}

/// The longest subject a QoS 1 or 2 message is published to the stream with: NATS closes
/// the connection of a client whose protocol line (subject, reply inbox, sizes) is longer
/// than its `max_control_line`, 4 KiB by default.
const MAX_SUBJECT: usize = 3900;

/// How long the stream's acknowledgements may wait to be sent together.
const ACK_EVERY: Duration = Duration::from_millis(20);
/// How many may wait.
const ACK_BATCH: usize = 512;
/// How long to wait for room in a congested subscriber's queue before looking again.
const ROOM_RECHECK: Duration = Duration::from_millis(50);

/// Follows the QoS stream with this node's durable consumer: routes what other nodes
/// published to local subscribers, and acknowledges it (acknowledging one acknowledges
/// those before it) once the store has what was queued for persistent sessions. A message
/// of this node (routed when it was published) or at or below the stored position (routed
/// before a restart) is only acknowledged. The stream is read without a gap: what the
/// consumer delivered to an earlier run of the node, or that NATS lost on the way, is read
/// from the stream by its sequence before what comes after it (JetStream would give it
/// again only after its acknowledgement wait, and after a later one is acknowledged, not
/// at all). While a local subscriber's queue is full, no more is read: JetStream holds the
/// rest.
async fn tail(
    broker: Arc<Broker>,
    (mut feed, stream, start): (QosFeed, jetstream::stream::Stream, u64),
    mut snapshots: Snapshots,
    node: String,
    mut stop: watch::Receiver<bool>,
) {
    // The next position to route.
    let mut next = start + 1;
    // The store record each message read waits for, in order.
    let mut gate = 0;
    let mut pending: std::collections::VecDeque<(u64, jetstream::Message)> = Default::default();
    // The last message whose acknowledgement may be sent, and how many it covers.
    let mut ready: Option<jetstream::Message> = None;
    let mut covers = 0usize;
    let mut congested: Vec<Arc<crate::mailbox::SessionHandle>> = Vec::new();
    let durable = |t: u64| broker.journal().is_none_or(|j| j.store().is_durable(t));
    // Parked sessions taken from the cluster, waiting for the tail to reach where their
    // reading of the stream stopped.
    let mut adoptions: Vec<Adoption> = Vec::new();
    loop {
        // Every position passed counts, its message routed or not (this node's own, expired).
        broker.stream_routed_from(next - 1);
        // Not adopted once its connection stopped waiting (its client has a new session).
        adoptions.retain(|a| !(a.reply.is_closed() || *a.gave_up.lock()));
        if adoptions.iter().any(|a| a.upto < next) {
            let (ready, waiting): (Vec<_>, Vec<_>) = adoptions.into_iter().partition(|a| a.upto < next);
            adoptions = waiting;
            for a in ready {
                adopt_caught_up(&broker, &stream, &snapshots.outbox, a, next).await;
            }
        }
        while pending.front().is_some_and(|(t, _)| durable(*t)) {
            ready = pending.pop_front().map(|(_, m)| m);
            covers += 1;
        }
        if covers >= ACK_BATCH {
            acknowledge(ready.take()).await;
            covers = 0;
        }
        let now = Instant::now();
        congested.retain(|h| !h.mailbox.has_room(now));
        let waiting_for = pending.front().map(|(t, _)| *t);
        let room_of = congested.first().cloned();
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(ACK_EVERY), if ready.is_some() => {
                acknowledge(ready.take()).await;
                covers = 0;
            }
            _ = async {
                if let (Some(j), Some(t)) = (broker.journal(), waiting_for) {
                    j.store().durable(t).await;
                }
            }, if waiting_for.is_some() => {}
            _ = async { if let Some(h) = room_of { h.mailbox.room(ROOM_RECHECK).await } }, if !congested.is_empty() => {}
            Some(request) = snapshots.requests.recv() => match request {
                TailRequest::Snapshot { client_id, at } => snapshots.take(&broker, &client_id, at, next - 1),
                TailRequest::Adopt(a) => adoptions.push(*a),
            },
            r = poll_fn(|cx| feed.as_mut().poll_next(cx)), if congested.is_empty() => match r {
                Some(Ok(m)) => {
                    let Ok(info) = m.info() else { continue };
                    let sequence = info.stream_sequence;
                    let published = info.published.unix_timestamp_nanos();
                    // What came before it and never arrived, from the stream. A gap larger
                    // than the consumer can have had outstanding may be of messages the stream
                    // no longer has (its limits): those are skipped, not asked for one by one.
                    if sequence.saturating_sub(next) > 2 * QOS_MAX_ACK_PENDING as u64 {
                        if let Ok(info) = stream.get_info().await {
                            let first = info.state.first_sequence.min(sequence);
                            if first > next {
                                tracing::warn!("Cluster: messages {next} to {} of the QoS stream are gone (its limits): skipped.", first - 1);
                                next = first;
                            }
                        }
                    }
                    while next < sequence {
                        match stream.get_raw_message(next).await {
                            Ok(got) => {
                                route_read(&broker, &Read::stored(&got), (&node, &snapshots.origin, &snapshots.outbox), next, &mut gate, &mut congested);
                            }
                            Err(e) => tracing::warn!("Cluster: message {next} of the QoS stream cannot be read ({e}): skipped."),
                        }
                        next += 1;
                    }
                    if sequence >= next {
                        route_read(&broker, &Read::delivered(&m, published), (&node, &snapshots.origin, &snapshots.outbox), sequence, &mut gate, &mut congested);
                        next = sequence + 1;
                    }
                    pending.push_back((gate, m));
                }
                Some(Err(e)) => tracing::debug!("Cluster: the QoS stream: {e}."),
                None => {
                    tracing::error!("Cluster: the QoS stream's consumer ended; QoS 1 and 2 messages of other nodes no longer arrive.");
                    break;
                }
            },
        }
    }
    while pending.front().is_some_and(|(t, _)| durable(*t)) {
        ready = pending.pop_front().map(|(_, m)| m);
    }
    acknowledge(ready).await;
    // Sessions still on their way in: adopted as they are (the old node has forgotten them).
    snapshots.requests.close();
    while let Ok(request) = snapshots.requests.try_recv() {
        if let TailRequest::Adopt(a) = request {
            adoptions.push(*a);
        }
    }
    for a in adoptions {
        tracing::warn!("Cluster: the session of {} is taken as it came (the QoS stream is no longer read): a QoS 1 or 2 message that crossed the cluster while it moved may be missing or come twice.", a.client_id);
        hand_over(&broker, &snapshots.outbox, a);
    }
}

/// What the tail is asked besides following the stream.
enum TailRequest {
    /// A persistent session parked: its copy, taken between two messages of the stream.
    Snapshot { client_id: String, at: u64 },
    /// A session from another node, read from the stream up to a position.
    Adopt(Box<Adoption>),
}

/// A parked session taken from the cluster's copy, with what the stream got for it up to
/// `upto`; the tail adds what it routed after that and adopts it.
struct Adoption {
    client_id: ByteString,
    handoff: Handoff,
    parked: Parked,
    upto: u64,
    /// The connection waiting for it, and the flag it sets when it stops waiting.
    reply: tokio::sync::oneshot::Sender<crate::broker::Owned>,
    gave_up: crate::cluster::GaveUp,
}

/// The tail's side of the parked sessions' copies.
struct Snapshots {
    requests: mpsc::UnboundedReceiver<TailRequest>,
    /// To the task that writes them in the bucket, in order.
    out: mpsc::UnboundedSender<(String, Vec<u8>)>,
    max: usize,
    origin: String,
    outbox: Outbox,
}

impl Snapshots {
    /// The copy of `client_id`'s parked session, if it still is parked here, with the
    /// stream position the tail has routed (`position`) and the node's message numbers
    /// around it ([`crate::cluster::parked`]).
    fn take(&self, broker: &Broker, client_id: &str, at: u64, position: u64) {
        let (ticket, arrived_at, copy) = {
            let _held = self.outbox.hold_numbering();
            (self.outbox.last_ticket(), self.outbox.arrived_at(client_id), broker.parked_copy(client_id))
        };
        let Some((h, queued)) = copy else { return };
        let clock = crate::store::records::Clock::now();
        let Some((session, left_out)) = crate::cluster::handoff::encode_within(&h, &queued, self.max, &clock)
        else {
            tracing::warn!("Cluster: the parked session of {client_id} is larger than NATS's max_payload without its queue: no copy of it is kept in the cluster.");
            return;
        };
        if left_out > 0 {
            tracing::warn!("Cluster: the copy of the parked session of {client_id} kept in the cluster leaves {left_out} queued messages out (past NATS's max_payload).");
        }
        let parked_at = unix_secs();
        let p = Parked { origin: self.origin.clone(), at, position, ticket, arrived_at, parked_at, session };
        let _ = self.out.send((client_id.to_owned(), p.encode()));
    }
}

/// Writes the parked sessions' copies in the bucket: of a client id's copies waiting, the
/// last one only.
async fn keep_parked(bucket: kv::Store, mut copies: mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut waiting: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(first) = copies.recv().await {
        waiting.push(first);
        while let Ok(more) = copies.try_recv() {
            waiting.push(more);
        }
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, (client_id, _)) in waiting.iter().enumerate() {
            last.insert(client_id, i);
        }
        let mut indexes: Vec<usize> = last.into_values().collect();
        indexes.sort_unstable();
        for i in indexes {
            let (client_id, value) = std::mem::take(&mut waiting[i]);
            match bucket.put(session_key(&client_id), Bytes::from(value)).await {
                Ok(_) => tracing::debug!("Cluster: a copy of the parked session of {client_id} is kept in the cluster."),
                Err(e) => tracing::warn!("Cluster: the copy of the parked session of {client_id} is not kept in the cluster ({e}): if this node is lost, its client starts afresh on another."),
            }
        }
        waiting.clear();
    }
}

/// Adds to a session from another node what the tail routed after its reading stopped
/// (`a.upto`, up to `next`), then adopts it (publishers held between routing and
/// numbering, so the node's own messages split at one number) and hands it to its
/// connection (not adopted if that stopped waiting: `hand_over`).
async fn adopt_caught_up(
    broker: &Broker,
    stream: &jetstream::stream::Stream,
    outbox: &Outbox,
    mut a: Adoption,
    next: u64,
) {
    let upgrade = broker.router.upgrades_qos();
    for sequence in a.upto + 1..next {
        if a.reply.is_closed() || *a.gave_up.lock() {
            // Its client has a new session: it is not adopted (`hand_over`).
            break;
        }
        match stream.get_raw_message(sequence).await {
            Ok(got) => replay_into(&mut a.handoff, &a.parked, &a.client_id, &Read::stored(&got), upgrade),
            Err(e) => tracing::debug!("Cluster: message {sequence} of the QoS stream cannot be read ({e})."),
        }
    }
    hand_over(broker, outbox, a)
}

async fn acknowledge(m: Option<jetstream::Message>) {
    if let Some(m) = m {
        if let Err(e) = m.ack().await {
            tracing::debug!("Cluster: cannot acknowledge the QoS stream: {e}.");
        }
    }
}

/// A message read from the QoS stream.
struct Read<'a> {
    subject: &'a str,
    headers: Option<&'a async_nats::HeaderMap>,
    payload: &'a Bytes,
    /// When it entered the stream, in nanoseconds since the Unix epoch.
    published: i128,
}

impl<'a> Read<'a> {
    /// A message a consumer delivered, and when it entered the stream (nanoseconds since
    /// the Unix epoch).
    fn delivered(m: &'a jetstream::Message, published: i128) -> Read<'a> {
        Read { subject: &m.subject, headers: m.headers.as_ref(), payload: &m.payload, published }
    }

    /// A message read from the stream by its position.
    fn stored(m: &'a jetstream::message::StreamMessage) -> Read<'a> {
        Read {
            subject: &m.subject,
            headers: Some(&m.headers),
            payload: &m.payload,
            published: m.time.unix_timestamp_nanos(),
        }
    }
}

/// Routes the message at `sequence` of the QoS stream, unless it is this node's (but to a
/// session that came here after it was routed, [`crate::cluster::Arrival`]) or has expired; raises `gate` to the store record its acknowledgement waits for, and adds the
/// subscribers whose queue it filled to `congested`.
fn route_read(
    broker: &Broker,
    m: &Read<'_>,
    (node, origin, outbox): (&str, &str, &Outbox),
    sequence: u64,
    gate: &mut u64,
    congested: &mut Vec<Arc<crate::mailbox::SessionHandle>>,
) {
    // This node's own message, to the sessions that came here since it was routed.
    let mut missed_by: Vec<ByteString> = Vec::new();
    let mut own = false;
    let wanted = |from: Option<&(String, u64)>| match from {
        Some((from, ticket)) if parked::node_of(from) == node => {
            own = true;
            if from == origin {
                missed_by = outbox.arrived_after(*ticket);
            }
            !missed_by.is_empty()
        }
        _ => true,
    };
    let Some(message) = stream_message(m, wanted) else { return };
    // Held across every route of the message: a session taken out for another node is taken
    // before it or after it.
    let _routing = broker.cluster_outbox().map(|o| o.routing());
    let mut route = |only: Option<&str>| {
        let (t, full) = broker.route_from_stream(&message, sequence, only);
        *gate = (*gate).max(t);
        congested.extend(full);
    };
    if !own {
        route(None);
    }
    for client_id in &missed_by {
        route(Some(client_id));
    }
}

/// The message read from the QoS stream: None when it cannot be read, has
/// expired (the time it spent in the stream counts), or `wanted` (given its origin) says no.
fn stream_message(m: &Read<'_>, wanted: impl FnOnce(Option<&(String, u64)>) -> bool) -> Option<Arc<Message>> {
    let Ok(topic) = subject_to_topic(subject::QOS, m.subject) else {
        tracing::warn!("Cluster: ignoring subject {}.", m.subject);
        return None;
    };
    let mut carried = read_headers(m.headers)?;
    if !wanted(carried.origin.as_ref()) {
        return None;
    }
    if let Some(left) = carried.properties.message_expiry_interval() {
        let age = age_secs(m.published);
        if age >= u64::from(left) {
            return None;
        }
        carried.properties.set(midge_codec::Property::MessageExpiryInterval(left - age as u32));
    }
    Some(Arc::new(message(topic, m.payload.clone(), carried)))
}

/// Adds a message of the QoS stream, read after a parked session's copy was taken, to that
/// session's queue if the copy misses it ([`Parked::replays`]) and it matches the session's
/// subscriptions (at QoS 1 or 2: QoS 0 is not queued for a session that is offline).
fn replay_into(h: &mut Handoff, p: &Parked, client_id: &str, m: &Read<'_>, upgrade: bool) {
    let wanted = |origin: Option<&(String, u64)>| p.replays(origin.map(|(o, t)| (o.as_str(), *t)));
    let Some(message) = stream_message(m, wanted) else { return };
    if let Some(d) = parked::delivery_for(&h.subscriptions, client_id, &message, upgrade) {
        if d.qos != midge_codec::QoS::AtMostOnce {
            h.queued.push(d);
        }
    }
}

/// Seconds since the Unix epoch, now.
fn unix_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whole seconds since `published` (nanoseconds since the Unix epoch).
fn age_secs(published: i128) -> u64 {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    u64::try_from((now - published) / 1_000_000_000).unwrap_or(0)
}

/// Routes a message from another node to the local subscribers, once; or, NATS having
/// picked this node for a shared subscription, to one member of its group here.
fn deliver(broker: &Broker, (share, m): &Inbound, own: &str, dedup: &mut Dedup) {
    let topic = match subject_to_topic(subject::MESSAGES, &m.subject) {
        Ok(t) => Some(t),
        // QoS 1 and 2 messages come on their stream's subjects to shared subscriptions only.
        Err(_) if share.is_some() => subject_to_topic(subject::QOS, &m.subject).ok(),
        Err(_) => None,
    };
    let Some(topic) = topic else {
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
