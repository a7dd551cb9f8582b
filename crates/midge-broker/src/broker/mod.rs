//! The broker's shared state, and the decisions made when a client connects and leaves.
mod bridge;
mod connect;
mod handoff;
mod link;
mod login;
mod persist;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytestring::ByteString;
use midge_codec::{ProtocolVersion, QoS, Will};

pub use bridge::BridgeSide;
pub use connect::{ConnectPlan, Opening, PendingOpen};
pub use link::{Link, DEFER_LIMIT};
pub(crate) use login::auth_packet;
pub use login::{
    Authenticated, ConnInfo, Credentials, EnhancedLogin, LoginGate, LoginStep, Recheck, Refusal, Withdrawn,
};
pub use persist::{Journal, Restored};

use crate::auth::{AuthMethod, FailureLimiter, HashPool, Security, SecurityError, SharedSecurity, Turns};
use crate::config::{Config, SecuritySettings};
use crate::mailbox::SessionHandle;
use crate::metrics::{DropReason, Metrics};
use crate::registry::{ParkedDue, Registry, Unparked};
use crate::router::{RetainSource, Router};
use crate::session::{Delivery, Message, SessionState};
use crate::timers::Timers;

/// A session and its mailbox, as one owner holds them: a connection, the registry while it
/// is parked, or a takeover in transit.
#[derive(Debug)]
pub struct Owned {
    /// The state that outlives connections.
    pub state: SessionState,
    /// Its identity and mailbox, as the router knows them.
    pub handle: Arc<SessionHandle>,
}

/// What a listener decides for the clients that come in on it, beside its security scope.
#[derive(Debug)]
pub struct ListenerOptions {
    /// The Topic Alias Maximum announced to its 5.0 clients (`max_topic_alias`).
    pub max_topic_alias: u16,
    /// The prefix of its clients' topics (`mount_point`).
    pub mount_point: Option<ByteString>,
    /// The highest QoS its clients may use (`max_qos`).
    pub max_qos: QoS,
    /// Its clients at most (`max_connections`; `usize::MAX`: no limit).
    pub max_connections: usize,
    /// The protocol levels its clients may speak (`accept_protocol_versions`; `None`: all).
    pub accept_protocol_versions: Option<Vec<u8>>,
    /// `http_dir`: a WebSockets listener serves its files to plain HTTP requests.
    pub http_dir: Option<Arc<std::path::Path>>,
    /// Its network connections now, counted against `max_connections`.
    connections: AtomicUsize,
}

impl ListenerOptions {
    fn of(l: &crate::config::Listener) -> Self {
        ListenerOptions {
            max_topic_alias: l.max_topic_alias,
            mount_point: l.mount_point.as_deref().map(ByteString::from),
            max_qos: l.max_qos,
            max_connections: l.max_connections.unwrap_or(usize::MAX),
            accept_protocol_versions: l.accept_protocol_versions.clone(),
            // Resolved once, at start: a relative path is the start's working directory's.
            http_dir: l
                .http_dir
                .as_deref()
                .map(|p| Arc::from(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))),
            connections: AtomicUsize::new(0),
        }
    }

    /// True when its clients may speak `version`.
    pub fn accepts(&self, version: ProtocolVersion) -> bool {
        self.accept_protocol_versions.as_ref().is_none_or(|v| v.contains(&version.level()))
    }

    /// True while it is below `max_connections`.
    fn has_room(&self) -> bool {
        self.connections.load(Ordering::Acquire) < self.max_connections
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions::of(&crate::config::Listener::new(0, None))
    }
}

/// Enhanced authentication methods by name.
#[derive(Default)]
struct AuthMethods(parking_lot::RwLock<std::collections::HashMap<String, Arc<dyn AuthMethod>>>);

impl std::fmt::Debug for AuthMethods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.read().keys()).finish()
    }
}

/// The security settings of some listeners, with their files as loaded. Both are swapped
/// on reload (SIGHUP); connections keep the scope and see the new rules.
#[derive(Debug)]
pub struct Scope {
    configured: ArcSwap<Configured>,
    /// Password file and ACL, swapped whole on reload.
    pub security: SharedSecurity,
}

/// A scope's settings as the configuration writes them.
#[derive(Debug)]
struct Configured {
    settings: SecuritySettings,
    anonymous_allowed: bool,
}

impl Configured {
    fn new(config: &Config, settings: &SecuritySettings) -> Configured {
        Configured { settings: settings.clone(), anonymous_allowed: config.anonymous_allowed(settings) }
    }
}

impl Scope {
    fn load(config: &Config, settings: &SecuritySettings) -> Result<Scope, SecurityError> {
        Ok(Scope {
            configured: ArcSwap::from_pointee(Configured::new(config, settings)),
            security: Arc::new(ArcSwap::from_pointee(Security::load(settings)?)),
        })
    }

    /// The security settings as the configuration writes them (those in force).
    pub fn settings(&self) -> SecuritySettings {
        self.configured.load().settings.clone()
    }

    /// Clients without a user name may connect.
    pub fn anonymous_allowed(&self) -> bool {
        self.configured.load().anonymous_allowed
    }
}

/// Why a reload was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// A password or ACL file cannot be read.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The configuration changed what only a restart can change.
    #[error("{0} changed: restart midge to apply the new configuration")]
    NeedsRestart(String),
}

/// Everything the connections share.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it was started with.
    pub config: Config,
    /// Subscriptions and retained messages.
    pub router: Router,
    /// Sessions by client id.
    pub registry: Registry,
    /// Password files and ACLs: one scope for every listener, or with
    /// `per_listener_settings true` one per listener.
    scopes: Vec<Scope>,
    /// The scope of each listener, by its index in [`Config::effective_listeners`].
    listener_scope: Vec<usize>,
    /// No password file, no anonymous clients: for a listener index that has no scope.
    closed: Scope,
    /// The options of each listener, by its index in [`Config::effective_listeners`].
    listener_options: Vec<ListenerOptions>,
    /// For a listener index of no listener (tests): mosquitto's defaults.
    default_options: ListenerOptions,
    limiter: FailureLimiter,
    /// The threads that compute password hashes (one per core, a bounded queue).
    hash_pool: HashPool,
    /// One password check per source address at a time.
    login_turns: Turns,
    auth_methods: AuthMethods,
    /// The deadlines of every session: keep alive, held acknowledgements, expiry, wills.
    pub timers: Timers,
    /// What is counted, for `$SYS` and the metrics endpoint.
    pub metrics: Metrics,
    /// The store, once restored (persistence on).
    journal: std::sync::OnceLock<Journal>,
    /// Cluster mode: where messages published here go to reach the other nodes (never set
    /// on a single node).
    cluster: std::sync::OnceLock<crate::cluster::Outbox>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Counts reloads of the security settings: a client authenticated under older ones is
    /// checked again ([`Broker::security_generation`]).
    security_generation: AtomicU64,
    /// Clients that connect after a reload was asked for wait for it.
    pub reload_gate: crate::reload_gate::ReloadGate,
    /// `memory_limit`: over it, publishers are disconnected.
    pub memory: crate::memory_limit::MemoryLimit,
    /// Cluster mode: the last position of the cluster's QoS stream the tail has passed, its
    /// message routed here or not to be (a session that comes from another node starts
    /// after it).
    stream_read: AtomicU64,
    connections: AtomicUsize,
    next_conn_id: AtomicU64,
    assigned_ids: AtomicU64,
    id_seed: u64,
}

impl Broker {
    /// A broker with this configuration; reads the password and ACL files it names.
    pub fn new(config: Config) -> Result<Arc<Self>, SecurityError> {
        // Scope 0: the global settings; with per_listener_settings, one more per listener
        // that has its own.
        let mut scopes = vec![Scope::load(&config, &config.security)?];
        let mut listener_scope = Vec::new();
        let listener_options = config.effective_listeners().iter().map(ListenerOptions::of).collect();
        let memory = crate::memory_limit::MemoryLimit::new(config.memory_limit);
        for l in config.effective_listeners() {
            match &l.security {
                Some(own) if config.per_listener_settings => {
                    scopes.push(Scope::load(&config, own)?);
                    listener_scope.push(scopes.len() - 1);
                }
                _ => listener_scope.push(0),
            }
        }
        let id_seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        let limiter = FailureLimiter::new(Duration::from_millis(config.auth_failure_delay_ms));
        let router = Router::new()
            .upgrading_qos(config.upgrade_outgoing_qos)
            .sharing_through_cluster(config.cluster.is_some());
        let metrics = Metrics::new(listener_scope.len());
        Ok(Arc::new(Broker {
            config,
            scopes,
            listener_scope,
            closed: Scope {
                configured: ArcSwap::from_pointee(Configured {
                    settings: SecuritySettings::default(),
                    anonymous_allowed: false,
                }),
                security: Arc::new(ArcSwap::from_pointee(Security::load(&SecuritySettings::default())?)),
            },
            listener_options,
            default_options: ListenerOptions::default(),
            limiter,
            hash_pool: HashPool::per_core(),
            login_turns: Turns::default(),
            auth_methods: AuthMethods::default(),
            timers: Timers::default(),
            metrics,
            journal: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            shutting_down: Default::default(),
            security_generation: AtomicU64::new(0),
            reload_gate: Default::default(),
            memory,
            router,
            registry: Registry::default(),
            stream_read: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            assigned_ids: AtomicU64::new(0),
            id_seed,
        }))
    }

    /// Reads the password and ACL files again (SIGHUP), with the security settings of
    /// `fresh` (the configuration file read again) when given: allow_anonymous,
    /// password_file and acl_file, globally or per listener. Connections use the new rules
    /// from their next action; those the new settings no longer let in are closed. On error
    /// nothing changes. Returns the other options that changed, which take effect at the
    /// next start.
    pub fn reload_security(&self, fresh: Option<&Config>) -> Result<Vec<&'static str>, ReloadError> {
        let (settings, unapplied) = match fresh {
            Some(new) => (self.scope_settings(new)?, self.config.restart_only_changes(new)),
            None => (self.scopes.iter().map(|s| s.configured.load().settings.clone()).collect(), Vec::new()),
        };
        // Every file is read before any is swapped in: an error changes nothing.
        let loaded = settings.iter().map(Security::load).collect::<Result<Vec<_>, _>>()?;
        let config = fresh.unwrap_or(&self.config);
        for ((scope, security), settings) in self.scopes.iter().zip(loaded).zip(&settings) {
            scope.configured.store(Arc::new(Configured::new(config, settings)));
            scope.security.store(Arc::new(security));
        }
        // Connected clients the new settings would not let in are disconnected, as mosquitto
        // does.
        self.recheck_connections();
        Ok(unapplied)
    }

    /// Tells every connection to check its credentials and client certificate again
    /// ([`Broker::still_allowed`]), after the security settings or a listener's CRL were
    /// reloaded: each connection checks its own. One authenticated before this and
    /// registered after sees the new generation ([`Broker::security_generation`]).
    pub fn recheck_connections(&self) {
        self.security_generation.fetch_add(1, Ordering::SeqCst);
        for slot in self.registry.online_slots() {
            slot.send(crate::control::Control::Recheck);
        }
    }

    /// The security settings of each scope in a configuration read again, which must have
    /// the same listeners (and per_listener_settings) as the running one.
    fn scope_settings(&self, new: &Config) -> Result<Vec<SecuritySettings>, ReloadError> {
        if new.per_listener_settings != self.config.per_listener_settings {
            return Err(ReloadError::NeedsRestart("per_listener_settings".into()));
        }
        let (old_listeners, new_listeners) = (self.config.effective_listeners(), new.effective_listeners());
        let same = |a: &crate::config::Listener, b: &crate::config::Listener| {
            (a.port, &a.bind, a.domain, &a.tls, a.security.is_some(), a.protocol)
                == (b.port, &b.bind, b.domain, &b.tls, b.security.is_some(), b.protocol)
        };
        if old_listeners.len() != new_listeners.len()
            || old_listeners.iter().zip(&new_listeners).any(|(a, b)| !same(a, b))
        {
            return Err(ReloadError::NeedsRestart("the listeners or their TLS settings".into()));
        }
        let mut settings = vec![new.security.clone(); self.scopes.len()];
        for (l, &scope) in new_listeners.iter().zip(&self.listener_scope) {
            settings[scope] = new.security_of(l).clone();
        }
        Ok(settings)
    }

    /// How many times the security settings were reloaded. A connection reads it before it
    /// authenticates and again once its session is registered: if it changed, its
    /// credentials are checked again (a reload in between did not see it).
    pub fn security_generation(&self) -> u64 {
        self.security_generation.load(Ordering::SeqCst)
    }

    /// The security scope of a listener (by its index in [`Config::effective_listeners`]).
    /// An index of no listener gets a scope that lets no one in.
    pub fn scope(&self, listener: usize) -> &Scope {
        match self.listener_scope.get(listener) {
            Some(&i) => &self.scopes[i],
            None => &self.closed,
        }
    }

    /// With `check_retain_source`: may the publisher of a retained message still publish on
    /// `topic`, by the ACL in force for its listener (mosquitto asks the same question of the
    /// message's source each time it is sent to a new subscription)?
    pub fn source_may_publish(&self, source: &RetainSource, topic: &str) -> bool {
        match self.scope(source.listener).security.load().acl() {
            Some(acl) => acl.can_publish(source.username.as_deref(), &source.client_id, topic),
            None => true,
        }
    }

    /// The options of a listener (by its index in [`Config::effective_listeners`]); an index
    /// of no listener gets mosquitto's defaults.
    pub fn listener_options(&self, listener: usize) -> &ListenerOptions {
        self.listener_options.get(listener).unwrap_or(&self.default_options)
    }

    /// Tells every connection to close (5.0 clients get DISCONNECT 0x8B), and those that
    /// finish CONNECT from now on too.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for slot in self.registry.online_slots() {
            slot.send(crate::control::Control::Shutdown);
        }
    }

    /// True once [`Broker::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Registers an enhanced authentication method (5.0 AUTH) under its name.
    pub fn add_auth_method(&self, method: Arc<dyn AuthMethod>) {
        self.auth_methods.0.write().insert(method.name().to_owned(), method);
    }

    /// The method registered under `name`.
    pub fn auth_method(&self, name: &str) -> Option<Arc<dyn AuthMethod>> {
        self.auth_methods.0.read().get(name).cloned()
    }

    /// A number unique to each network connection.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a new connection on `listener` (its index in `Config::effective_listeners`)
    /// unless its `max_connections` is reached.
    pub fn try_add_connection(&self, listener: usize) -> bool {
        let options = self.listener_options(listener);
        let max = options.max_connections;
        let added = options
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok();
        if added {
            self.connections.fetch_add(1, Ordering::AcqRel);
            self.metrics.socket_opened(listener);
        }
        added
    }

    /// Uncounts a connection on `listener`.
    pub fn remove_connection(&self, listener: usize) {
        self.listener_options(listener).connections.fetch_sub(1, Ordering::AcqRel);
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.metrics.socket_closed(listener);
    }

    /// True while the broker takes new clients: it is not stopping, and some MQTT listener
    /// is below its `max_connections` (`/healthz`).
    pub fn accepts_connections(&self) -> bool {
        !self.is_shutting_down()
            && self
                .config
                .effective_listeners()
                .iter()
                .enumerate()
                .any(|(i, l)| l.is_mqtt() && self.listener_options(i).has_room())
    }

    /// Counts what routing dropped.
    pub(crate) fn count_drops(&self, outcome: &crate::router::RouteOutcome) {
        if outcome.dropped > 0 {
            self.metrics.dropped(DropReason::OfflineQueueFull, outcome.dropped_offline);
            self.metrics.dropped(DropReason::SlowConsumer, outcome.dropped - outcome.dropped_offline);
        }
    }

    /// Open network connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// A client id for a client that sent none: `prefix` (`auto_id_prefix`) and 32 hex
    /// digits in a UUID's groups, as mosquitto writes them (clients and tests expect that
    /// length). Unique in this process (a counter in the last group) and unlikely to meet
    /// another process's (a per-process seed in the others).
    pub(crate) fn assign_client_id(&self, prefix: &str) -> ByteString {
        let n = self.assigned_ids.fetch_add(1, Ordering::Relaxed);
        let mix = (self.id_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17);
        ByteString::from(format!(
            "{prefix}{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            mix >> 32,
            (mix >> 16) & 0xFFFF,
            mix & 0xFFFF,
            (n >> 48) & 0xFFFF,
            n & 0xFFFF_FFFF_FFFF
        ))
    }

    /// Ends a session: its subscriptions leave the router, its queue is emptied, and its
    /// records leave the store.
    pub fn discard(&self, owned: Owned) {
        self.end_session(owned, true, true);
    }

    /// [`Broker::discard`]; `own_records` false when the client id has another session here
    /// whose records its session, subscription and QoS 2 records now are: only the records
    /// of the messages it held go. `hand_on_shared`: what its mailbox holds from shared
    /// subscriptions goes to another member.
    pub(crate) fn end_session(&self, owned: Owned, own_records: bool, hand_on_shared: bool) {
        for filter in owned.state.subscriptions.keys() {
            self.router.unsubscribe(&owned.handle, filter);
        }
        // Out of the router, the mailbox gets nothing more. What a publisher put in it through
        // a shared subscription after `redistribute_shared` looked (it saw the member online a
        // moment before its connection went) goes to another member now, rather than out with
        // the session (5.0 section 4.8.2): 1 to 5 QoS 1 messages in 100,000 were lost that way
        // when members left abruptly under load. Only the mailbox's: in flight, they were
        // offered before.
        let Owned { mut state, handle } = owned;
        let mut queued = state.outgoing.drain_all();
        let late = if hand_on_shared { handle.mailbox.take_shared() } else { Vec::new() };
        for d in late {
            if let Err(d) = self.give_shared(d, handle.id, true) {
                queued.push(d);
            }
        }
        queued.extend(handle.mailbox.clear());
        if let Some(j) = self.journal().filter(|_| handle.is_persistent()) {
            if own_records {
                j.forget(&handle.client_id, &state, &queued);
            } else {
                j.forget_messages(&queued);
            }
        }
        state.subscriptions.clear();
        handle.set_online(false);
        handle.set_persistent(false);
    }

    /// Publishes a will message on behalf of a client that is gone.
    pub fn publish_will(&self, will: Will, client_id: &ByteString, now: Instant) {
        let message = Arc::new(Message::from_publish(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.properties,
            client_id.clone(),
            now,
        ));
        if message.retain {
            self.router.retain(&message);
            if let Some(j) = self.journal() {
                j.retain(&message);
            }
        }
        let numbering = self.cluster_numbering();
        let outcome = self.router.route(&message, self.queue_hook());
        self.count_drops(&outcome);
        // A will waits for nobody's acknowledgement.
        self.to_cluster(&message);
        drop(numbering);
    }

    /// Joins a cluster: messages published here from now on go to `outbox` too, and the
    /// router tells it of every subscription added and removed. Called before any session
    /// is restored or opened, so that the cluster hears of every subscription. False (and
    /// nothing changes) if the broker is in a cluster already.
    pub fn join_cluster(&self, outbox: crate::cluster::Outbox) -> bool {
        let hook: Arc<dyn crate::router::InterestHook> = Arc::new(outbox.clone());
        if self.cluster.set(outbox).is_err() {
            return false;
        }
        self.router.set_interest_hook(hook)
    }

    /// Hands a message published on this node (by a client, a bridge or a will) to the
    /// cluster, in cluster mode. Returns its ticket (0: none, QoS 0 or no cluster): an acknowledgement
    /// to its publisher waits until the cluster has it ([`Broker::cluster_outbox`]).
    pub(crate) fn to_cluster(&self, message: &Arc<Message>) -> u64 {
        self.cluster.get().map_or(0, |outbox| outbox.send(message))
    }

    /// The outbox to the cluster, in cluster mode.
    pub(crate) fn cluster_outbox(&self) -> Option<&crate::cluster::Outbox> {
        self.cluster.get()
    }

    /// True while `client_id` has a session here (connected or parked).
    pub(crate) fn has_session(&self, client_id: &str) -> bool {
        self.registry.knows(client_id)
    }

    /// Cluster mode: a connection took `client_id` here; the other nodes are told (their
    /// connection with it closes).
    pub(crate) fn cluster_opened(&self, client_id: &str, conn_id: u64) {
        if let Some(outbox) = self.cluster.get() {
            outbox.opened(client_id, conn_id);
        }
    }

    /// Cluster mode: `client_id`'s session parked here; the cluster keeps a copy of it.
    pub(crate) fn cluster_parked(&self, client_id: &str) {
        if let Some(outbox) = self.cluster.get() {
            outbox.parked(client_id);
        }
    }

    /// The client ids of the sessions parked here.
    pub(crate) fn parked_ids(&self) -> Vec<ByteString> {
        self.registry.parked_ids()
    }

    /// Cluster mode: the QoS stream's position from which the tail goes on at start (what
    /// the store has): every position up to it counts as routed.
    pub(crate) fn stream_routed_from(&self, position: u64) {
        self.stream_read.fetch_max(position, Ordering::AcqRel);
    }

    /// Cluster mode: the QoS stream position the tail has passed.
    pub(crate) fn stream_routed(&self) -> u64 {
        self.stream_read.load(Ordering::Acquire)
    }

    /// Cluster mode: held from routing a message this node publishes until the cluster
    /// numbers it ([`crate::cluster::Outbox::numbering`]).
    pub(crate) fn cluster_numbering(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        self.cluster.get().map(|outbox| outbox.numbering())
    }

    /// Cluster mode: another node holds `client_id` now; connection `conn_id`, which held it
    /// here, closes. False when that connection no longer holds it.
    pub fn taken_over_elsewhere(&self, client_id: &str, conn_id: u64) -> bool {
        match self.registry.holder(client_id, conn_id) {
            Some(slot) => {
                slot.send(crate::control::Control::TakenOverElsewhere);
                true
            }
            None => false,
        }
    }

    /// Routes a message that came from another node to the local subscribers: never stored
    /// as retained here (the retained stream is), never sent back to the cluster.
    pub fn route_from_cluster(&self, message: &Arc<Message>) {
        let outcome = self.router.route(message, self.queue_hook());
        self.count_drops(&outcome);
    }

    /// Routes a QoS 1 or 2 message that another node published, read from the cluster's
    /// stream at `position`, to the local subscribers. With persistence, its copies for
    /// persistent sessions are tied to a commit that records the position in the same
    /// record: after a crash, either the copies and the position are both there (the stream
    /// gives the message again and it is skipped) or neither (it is routed again). Returns
    /// the store record the stream's acknowledgement waits for (0: none), and the sessions
    /// whose queue it filled (the stream waits for their room). `only`: to that client id's
    /// session alone.
    pub(crate) fn route_from_stream(
        &self,
        message: &Arc<Message>,
        position: u64,
        only: Option<&str>,
    ) -> (u64, Vec<Arc<crate::mailbox::SessionHandle>>) {
        let route = |hook: Option<&dyn crate::router::QueueHook>| match only {
            Some(client_id) => self.router.route_to_client(message, client_id, hook),
            None => self.router.route(message, hook),
        };
        let routed = match self.journal() {
            Some(j) => {
                let c = persist::Committing { journal: j, commit: j.next_commit() };
                let outcome = route(Some(&c));
                self.count_drops(&outcome);
                (j.commit_stream(c.commit, position).unwrap_or(0), outcome.congested)
            }
            None => {
                let outcome = route(None);
                self.count_drops(&outcome);
                (0, outcome.congested)
            }
        };
        // After its copies' records: a position noted from this is never ahead of them.
        self.stream_read.fetch_max(position, Ordering::AcqRel);
        routed
    }

    /// Delivers a message that NATS gave this node for a shared subscription (`$share/G/F`)
    /// to one member of that group here.
    pub fn route_share_from_cluster(&self, message: &Arc<Message>, share: &str) {
        let outcome = self.router.route_to_share(message, share, self.queue_hook());
        self.count_drops(&outcome);
    }

    /// Runs what the timers say is due (a few times a second, from the server): connections
    /// past their deadline are told, delayed wills are published, and parked sessions whose
    /// expiry has passed end (publishing their wills). Returns how many sessions expired.
    pub fn run_timers(&self, now: Instant) -> usize {
        let mut expired = 0;
        for client_id in self.timers.fire(now) {
            let due = self.registry.parked_due(&client_id, now);
            if due.will.is_none() && due.expired.is_none() && due.still_parked.is_none() {
                // The timers count whole milliseconds: a time comes due in its millisecond,
                // maybe before its instant, which the registry compares. It is watched again
                // (taken from the heap and left, it was never looked at again: a session that
                // never expired, a delayed will never sent).
                let (now_ms, timers) = (self.timers.ms(now), &self.timers);
                for at in self.registry.parked_at(&client_id).into_iter().flatten() {
                    if at > now && timers.ms(at) <= now_ms {
                        timers.park(client_id.clone(), at);
                    }
                }
                continue;
            }
            expired += usize::from(self.settle_parked(&client_id, due, now));
        }
        self.timers.sweep(|client_id| self.registry.parked_at(client_id));
        expired
    }

    /// Does what is due for a parked session (from the timers, or found by a connection
    /// before them): its will is published, and an expired session is discarded (returns
    /// whether it was).
    pub(crate) fn settle_parked(&self, client_id: &ByteString, due: ParkedDue, now: Instant) -> bool {
        if let Some(will) = due.will {
            self.publish_will(will, client_id, now);
        }
        if let (Some(j), Some(expiry)) = (self.journal(), due.still_parked) {
            // The session stays parked without its will (published, or refused by the ACL).
            j.session(client_id, expiry.0, expiry.2, Some((expiry.1, None)));
        }
        let Some(mut owned) = due.expired else { return false };
        tracing::info!("Expiring client {client_id} due to timeout.");
        // What it kept from shared subscriptions goes to a member online now: "If the
        // Client's Session terminates before the Client reconnects, the Server SHOULD send
        // the Application Message to another Client" (5.0 section 4.8.2; never a QoS 2
        // message it had begun to send [MQTT-4.8.2-5]).
        self.redistribute_shared(&mut owned, true);
        self.discard(owned);
        self.metrics.sessions_expired(1);
        true
    }

    /// Does what was due for a parked session its client came back to (here, or on another
    /// node): a will whose delay passed is published, an expired session settled. Returns
    /// the session unless it was over.
    pub(crate) fn unparked(&self, client_id: &ByteString, unparked: Unparked, now: Instant) -> Option<Owned> {
        match unparked {
            Unparked::Back(owned, due_will) => {
                if let Some(will) = due_will {
                    self.publish_will(will, client_id, now);
                }
                Some(*owned)
            }
            Unparked::Expired(due) => {
                self.settle_parked(client_id, *due, now);
                None
            }
        }
    }

    /// Gives a delivery that came through a shared subscription to a member other than the
    /// session `from` ([`crate::router::Router::reroute_shared`]); its record in `from`'s queue is done.
    fn give_shared(&self, d: Delivery, from: u64, ending: bool) -> Result<(), Delivery> {
        let entry = d.entry;
        self.router.reroute_shared(d, from, self.queue_hook(), ending)?;
        // Another member has it now (recorded anew if its session is persistent).
        if let (Some(j), Some(entry)) = (self.journal(), entry) {
            j.delivery(crate::session::DeliveryEvent::Done { entry });
        }
        Ok(())
    }

    /// A session goes away: what it holds from shared subscriptions and has not delivered
    /// goes to another member of each group (5.0 section 4.8.2); what no member has room for
    /// stays as it was (in flight with its packet identifier, or waiting), unless the
    /// session is `ending`: then a member takes it over its queue's limit.
    pub(crate) fn redistribute_shared(&self, owned: &mut Owned, ending: bool) {
        let from = owned.handle.id;
        let give = |d: Delivery| self.give_shared(d, from, ending);
        owned.state.outgoing.give_shared(&give);
        // Those still in the mailbox wait behind the session's own if no member takes them.
        for d in owned.handle.mailbox.take_shared() {
            if let Err(d) = give(d) {
                owned.state.outgoing.pending.push_back(d);
            }
        }
    }
}
