//! The network side: listeners, one task per connection, and orderly shutdown.
//!
//! `Server::bind` opens the listeners (port 0 picks a free port, so every test runs its own
//! broker) and `Server::run` serves until the shutdown future resolves, as tokio's mini-redis
//! does.
mod bridge;
pub mod cluster;
mod connection;
mod http;
mod http_dir;
pub mod tls;
pub mod ws;
mod ws_frames;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::SecurityError;
use crate::broker::{Broker, ConnInfo, LoginGate, ReloadError};
use crate::config::{Config, ListenerProtocol};
use tls::{TlsListener, TlsSetupError};

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The password or ACL file.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A TLS listener's files or settings.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// What is wrong.
        source: TlsSetupError,
    },
    /// A WebSockets listener's `http_dir` cannot be read (as mosquitto, the broker does not
    /// start).
    #[error("unable to open http_dir {}: {source}", path.display())]
    HttpDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener cannot be opened.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store cannot be opened or read (persistence on).
    #[error("persistence: {0}")]
    Store(#[from] crate::store::StoreError),
    /// mosquitto's database, found at the first start, cannot be imported.
    #[error("persistence: {0}")]
    Import(#[from] crate::store::import::ImportFailure),
    /// The node cannot join its cluster (`cluster_*` options).
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

struct Bound {
    listener: TcpListener,
    local: SocketAddr,
    /// Its index in `Config::effective_listeners` (one listener may have several sockets).
    index: usize,
    tls: Option<Arc<TlsListener>>,
    protocol: ListenerProtocol,
}

/// A broker with its listeners open.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<Bound>,
    /// The TLS listeners, by name (one listener may have several sockets).
    tls: Vec<(String, Arc<TlsListener>)>,
    /// Cluster mode: joined, then connected to NATS.
    cluster: Option<ClusterStage>,
}

/// Where a cluster node is in its start.
#[derive(Debug)]
enum ClusterStage {
    /// Messages and subscription changes go to the outbox.
    Joined(cluster::Joined),
    /// Connected to NATS, retained messages loaded: the task can start.
    Connected(Box<cluster::Connected>),
}

/// Reloads what SIGHUP reloads: the security settings of the configuration file read again
/// (allow_anonymous, password_file, acl_file), the password and ACL files, and every TLS
/// listener's certificate, key, CAs and CRL. Connections stay up, except those the new
/// security settings no longer let in and those whose client certificate the new CRL revokes.
#[derive(Clone)]
pub struct Reloader {
    broker: Arc<Broker>,
    /// Each TLS listener, with its name for messages.
    tls: Vec<(String, Arc<TlsListener>)>,
}

/// What a reload did and did not do.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// What was reloaded beyond the security settings (each TLS listener's parts), for the log.
    pub reloaded: Vec<String>,
    /// Changed options that take effect at the next start.
    pub unapplied: Vec<&'static str>,
    /// What could not be reloaded, each with what stays in force instead.
    pub problems: Vec<String>,
}

impl Reloader {
    /// What says a SIGHUP was sent and not yet taken by the reload task: clients that
    /// connect meanwhile wait for the reload ([`crate::reload_gate`]).
    pub fn use_request_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        self.broker.reload_gate.use_probe(probe);
    }

    /// A reload starts (before the configuration is read again); it ends when the value
    /// returned is dropped.
    pub fn begin(&self) -> crate::reload_gate::Reloading<'_> {
        self.broker.reload_gate.begin()
    }

    /// Writes what is pending to the store now and compacts it (SIGUSR1, as mosquitto saves
    /// its database then).
    pub fn save_now(&self) {
        match self.broker.journal() {
            Some(j) => {
                j.store().sync_now();
                j.store().compact();
                tracing::info!("Saving the store (SIGUSR1).");
            }
            None => tracing::info!("SIGUSR1: persistence is off, nothing to save."),
        }
    }

    /// Reloads everything, with the configuration `fresh` read again from its file when
    /// given. Each part goes on its own: each TLS listener's certificate and key, CAs and
    /// CRL, then the security settings with their password and ACL files (all or nothing);
    /// what fails keeps its previous state and is reported. Then every connection checks
    /// itself against what is now in force: clients the new security settings no longer let
    /// in, or whose certificate the new CRL revokes, are disconnected.
    pub fn reload(&self, fresh: Option<&Config>) -> ReloadReport {
        let mut report = ReloadReport::default();
        // TLS first: the recheck the security reload sends out must find the new CRLs.
        for (name, t) in &self.tls {
            let r = t.reload();
            if !r.reloaded.is_empty() {
                report.reloaded.push(format!("listener {name}: reloaded {}", r.reloaded.join(", ")));
            }
            report.problems.extend(r.failed.into_iter().map(|f| format!("listener {name}: {f}")));
        }
        let rechecked = match self.broker.reload_security(fresh) {
            Ok(unapplied) => {
                report.unapplied = unapplied;
                true
            }
            Err(ReloadError::NeedsRestart(what)) => {
                report.problems.push(format!(
                    "{what} changed: restart midge to apply the new configuration; until then the \
                     settings in force stay"
                ));
                match self.broker.reload_security(None) {
                    Ok(_) => true,
                    Err(e) => {
                        report
                            .problems
                            .push(format!("{e}; the previous password and ACL rules stay in force"));
                        false
                    }
                }
            }
            Err(e) => {
                report.problems.push(format!("{e}; the previous security settings stay in force"));
                false
            }
        };
        if !rechecked && !self.tls.is_empty() {
            // The security settings stay, but a CRL may have changed.
            self.broker.recheck_connections();
        }
        report
    }
}

impl Server {
    /// Opens every listener of `config`, after reading its password, ACL and TLS files.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let broker = Broker::new(config.clone())?;
        let mut listeners = Vec::new();
        let mut tls_names = Vec::new();
        for (index, l) in config.effective_listeners().into_iter().enumerate() {
            let tls = if l.tls.enabled() {
                let alpn = if l.protocol == ListenerProtocol::Mqtt { tls::ALPN_MQTT } else { tls::ALPN_HTTP };
                let t = TlsListener::with_alpn(l.tls.clone(), alpn)
                    .map_err(|source| ServerError::Tls { listener: l.describe(), source })?;
                let t = Arc::new(t);
                tls_names.push((l.describe(), t.clone()));
                Some(t)
            } else {
                // Not on loopback: capturing loopback traffic takes root.
                if l.is_mqtt() && config.security_of(&l).password_file.is_some() && !l.is_local() {
                    tracing::warn!(
                        "Listener on {} accepts passwords over plain TCP: they cross the network in clear text. \
                         Use a TLS listener (certfile and keyfile) for clients on the network.",
                        l.describe()
                    );
                }
                None
            };
            if let Some(dir) = &l.http_dir {
                if l.protocol == ListenerProtocol::WebSockets {
                    std::fs::read_dir(dir)
                        .map_err(|source| ServerError::HttpDir { path: dir.clone(), source })?;
                } else {
                    tracing::warn!(
                        "http_dir on {} does nothing: it is not a websockets listener.",
                        l.describe()
                    );
                }
            }
            let addresses = l.addresses();
            if addresses.is_empty() {
                return Err(ServerError::Bind {
                    address: format!("{}:{}", l.bind.as_deref().unwrap_or("*"), l.port),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "address does not resolve"),
                });
            }
            for (listener, local) in listen_all(&addresses, l.ipv6_optional())? {
                tracing::info!(
                    "Opening {} listen socket on port {}{}.",
                    match (l.protocol, local.is_ipv4()) {
                        (ListenerProtocol::Mqtt, true) => "ipv4",
                        (ListenerProtocol::Mqtt, false) => "ipv6",
                        (ListenerProtocol::WebSockets, true) => "websockets ipv4",
                        (ListenerProtocol::WebSockets, false) => "websockets ipv6",
                        (ListenerProtocol::Http, true) => "metrics (http) ipv4",
                        (ListenerProtocol::Http, false) => "metrics (http) ipv6",
                    },
                    local.port(),
                    if tls.is_some() { " (TLS)" } else { "" }
                );
                listeners.push(Bound { listener, local, index, tls: tls.clone(), protocol: l.protocol });
            }
        }
        // Before any session is restored or opened: the cluster hears of every subscription.
        let cluster = broker.config.cluster.is_some().then(|| ClusterStage::Joined(cluster::join(&broker)));
        Ok(Server { broker, listeners, tls: tls_names, cluster })
    }

    /// With `persistence true`: opens the store (importing mosquitto's database at first
    /// start), reports what it found, and puts back what it holds. Call once before
    /// [`Server::run`], as the user the broker runs as (the store's files are that user's).
    /// `set_aside_unreadable`: a store that cannot be read at all is moved aside and a new one
    /// started, and a mosquitto database that cannot be imported is moved aside, instead of
    /// refusing to start.
    pub fn restore(&self, set_aside_unreadable: bool) -> Result<(), ServerError> {
        let p = &self.broker.config.persistence;
        if !p.enabled {
            return Ok(());
        }
        let dir = p.store_dir();
        let database = p.mosquitto_file();
        // mosquitto's users reset a broker by removing its database file while it is stopped.
        // midge keeps an empty mosquitto database there (see below) and notes in its store
        // that it did; that file gone means the same reset. A store from before the note is
        // kept as it is.
        let noted = dir.join(DATABASE_NOTE);
        let reset = noted.exists() && !database.exists();
        let options = crate::store::StoreOptions {
            dir: dir.clone(),
            sync: match p.sync_interval_ms {
                0 => crate::store::SyncPolicy::EveryAck,
                ms => crate::store::SyncPolicy::Interval(Duration::from_millis(ms)),
            },
            set_aside_unreadable,
            reset,
        };
        let first_start = !dir.join("MANIFEST").exists();
        // mosquitto's database is read before the store is made: refused, the next start
        // tries again.
        let found = if first_start {
            match crate::store::import::load(&database) {
                Ok(found) => found,
                Err(e) if set_aside_unreadable => {
                    let aside = crate::store::aside_path(&database);
                    std::fs::rename(&database, &aside).map_err(|error| {
                        ServerError::Store(crate::store::StoreError::Io { path: database.clone(), error })
                    })?;
                    tracing::warn!("{e}: moved to {}; nothing was imported.", aside.display());
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let (store, mut records, report) = crate::store::Store::open(options)?;
        if let Some((aside, why)) = &report.set_aside {
            tracing::warn!(
                "The store {} could not be read ({why}): moved to {}; starting with an empty store.",
                dir.display(),
                aside.display()
            );
        }
        if let Some(aside) = &report.reset_to {
            tracing::warn!(
                "{} was removed: starting with an empty store; what the store held is in {} until the next reset.",
                database.display(),
                aside.display()
            );
        }
        for (path, damage) in &report.damage {
            tracing::warn!("Store {}: {}", path.display(), describe_damage(damage));
        }
        if let Some(found) = found {
            crate::store::import::import_into(found, &database, &store, &mut records);
        }
        if !database.exists() {
            write_new(&database, &crate::store::import::empty_database()).map_err(|error| {
                ServerError::Store(crate::store::StoreError::Io { path: database.clone(), error })
            })?;
        }
        if !noted.exists() {
            let text = format!(
                "midge keeps its store in this directory and an empty mosquitto database in {}:\n\
                 removing that file while the broker is stopped starts it with an empty store.\n",
                database.display()
            );
            write_new(&noted, text.as_bytes()).map_err(|error| {
                ServerError::Store(crate::store::StoreError::Io { path: noted.clone(), error })
            })?;
        }
        let started = Instant::now();
        let restored = self.broker.restore(store, records);
        tracing::info!(
            "Restored {}, {} and {} from {} in {:.2} s{}.",
            count(restored.sessions, "session"),
            count(restored.retained, "retained message"),
            count(restored.queued, "queued message"),
            dir.display(),
            (report.elapsed + started.elapsed()).as_secs_f64(),
            if restored.unreadable > 0 {
                format!(" ({} unreadable records skipped)", restored.unreadable)
            } else {
                String::new()
            }
        );
        Ok(())
    }

    /// Cluster mode: connects to NATS and loads the retained messages of the cluster (over
    /// those the store restored). Call after [`Server::restore`] and before
    /// [`Server::run`] (which does it otherwise). Nothing to do without `cluster_*` options.
    pub async fn connect_cluster(&mut self) -> Result<(), ServerError> {
        if let Some(ClusterStage::Joined(_)) = &self.cluster {
            let Some(ClusterStage::Joined(joined)) = self.cluster.take() else { return Ok(()) };
            let Some(c) = &self.broker.config.cluster else { return Ok(()) };
            let connected = cluster::connect(&self.broker, c, joined).await?;
            self.cluster = Some(ClusterStage::Connected(Box::new(connected)));
        }
        Ok(())
    }

    /// The addresses the listeners are bound to (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|b| b.local).collect()
    }

    /// A handle that reloads the security files and TLS certificates (for SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader { broker: self.broker.clone(), tls: self.tls.clone() }
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves clients until `shutdown` resolves; then stops accepting, closes every
    /// connection (publishing wills) and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        if let Err(e) = self.connect_cluster().await {
            tracing::error!("{e}");
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        // Stopped last, so that what the closing connections publish (wills) still goes out.
        let (cluster_stop, cluster_stop_rx) = watch::channel(false);
        let cluster_task = match self.cluster.take() {
            Some(ClusterStage::Connected(c)) => {
                Some(tokio::spawn(cluster::run(self.broker.clone(), *c, cluster_stop_rx)))
            }
            _ => None,
        };
        let mut accept_tasks = JoinSet::new();
        for bound in self.listeners {
            let broker = self.broker.clone();
            let stop = stop_rx.clone();
            accept_tasks.spawn(accept_loop(bound, broker, stop));
        }
        let mut bridges = JoinSet::new();
        for b in &self.broker.config.bridges {
            bridges.spawn(bridge::run(self.broker.clone(), b.clone(), stop_rx.clone()));
        }
        let timers = tokio::spawn(timer_loop(self.broker.clone(), stop_rx.clone()));
        let sys = tokio::spawn(sys_loop(self.broker.clone()));
        shutdown.await;
        tracing::info!("midge broker is shutting down.");
        let _ = stop_tx.send(true);
        while accept_tasks.join_next().await.is_some() {}
        timers.abort();
        sys.abort();
        self.broker.shutdown();
        // Each connection task ends by closing its socket; give them time to say goodbye.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.broker.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The bridges park their local sessions (what the remote did not acknowledge stays).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while bridges.join_next().await.is_some() {}
        })
        .await;
        if let Some(t) = cluster_task {
            // The wills and last messages of the closing connections go to the other nodes.
            let _ = cluster_stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        if let Some(j) = self.broker.journal() {
            // What the sessions wrote as they closed, synced before the process ends.
            j.store().close();
        }
    }
}

/// The file in the store's directory that says midge wrote the empty mosquitto database
/// beside it (so that the database's removal is a reset).
const DATABASE_NOTE: &str = "DATABASE_FILE";

/// Writes a new file readable by its owner alone (as mosquitto's database), synced.
fn write_new(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::File::options().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// What a kind of damage to the store means, for the log.
fn describe_damage(d: &crate::store::Damage) -> String {
    use crate::store::Damage;
    match d {
        Damage::NotASegment => "not a store segment".to_owned(),
        Damage::TornTail { offset, bytes } => format!(
            "the last write was cut short ({bytes} bytes at offset {offset}, as when the broker is killed or the \
             power fails while writing): the incomplete record is dropped, nothing acknowledged was in it (bytes \
             damaged since would read so too: what follows them is not read)"
        ),
        Damage::Truncated { offset, bytes } => format!(
            "the file ends in the middle of a record ({bytes} bytes at offset {offset}), though it is not the \
             newest segment, the only one a crash can cut short: it was truncated or damaged since it was \
             written, and the records that followed offset {offset} are lost"
        ),
    }
}

/// "1 session", "12,345 sessions".
fn count(n: usize, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// 12345 as "12,345".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Opens one listening socket per address of a listener. When the port is 0, the port the
/// first socket gets is used for the others, so that a listener is one port on IPv4 and IPv6
/// alike (tried again a few times if another program holds it on the other family). For a
/// listener on every address or on localhost (`ipv6_optional`), an IPv6 socket the system cannot open (no IPv6)
/// is skipped with a warning, as long as the IPv4 one opened.
fn listen_all(
    addresses: &[SocketAddr],
    ipv6_optional: bool,
) -> Result<Vec<(TcpListener, SocketAddr)>, ServerError> {
    let wants_free_port = addresses.first().is_some_and(|a| a.port() == 0);
    let mut attempt = 0;
    'again: loop {
        attempt += 1;
        let mut opened: Vec<(TcpListener, SocketAddr)> = Vec::new();
        for &addr in addresses {
            let mut addr = addr;
            if let Some((_, first)) = opened.first() {
                if wants_free_port {
                    addr.set_port(first.port());
                }
            }
            let bound = listen(addr).and_then(|l| {
                let local = l.local_addr()?;
                Ok((l, local))
            });
            match bound {
                Ok(pair) => opened.push(pair),
                Err(e) if ipv6_optional && addr.is_ipv6() && !opened.is_empty() && ipv6_unavailable(&e) => {
                    tracing::warn!("Not listening on IPv6 port {}: {e}.", addr.port());
                }
                Err(e)
                    if wants_free_port
                        && !opened.is_empty()
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < 5 =>
                {
                    continue 'again;
                }
                Err(source) => return Err(ServerError::Bind { address: addr.to_string(), source }),
            }
        }
        return Ok(opened);
    }
}

/// True when an IPv6 socket fails because the system has no IPv6.
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    // No IPv6 in the kernel (EAFNOSUPPORT), or ::1 where IPv6 is disabled (EADDRNOTAVAIL).
    const EAFNOSUPPORT: i32 = 97;
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

/// Opens a listening socket with SO_REUSEADDR, as servers do, and a deep backlog for
/// reconnect storms. An IPv6 socket takes IPv6 only (IPV6_V6ONLY), as mosquitto's do: the
/// IPv4 addresses have their own socket.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// How often a listener that cannot accept connections says so.
const ACCEPT_ERROR_EVERY: Duration = Duration::from_secs(10);

async fn accept_loop(bound: Bound, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let Bound { listener, local, index, tls, protocol } = bound;
    // A metrics listener's connections open now ([`http::MAX_CONNECTIONS`]).
    let scrapes = Arc::new(http::Scrapes::default());
    // Failed accepts since the last line about them, and when that line was logged: out of
    // file descriptors, accept fails as fast as clients knock, and the log says so once
    // every ten seconds, not each time.
    let (mut failed, mut said_at) = (0u64, None::<Instant>);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                if said_at.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_EVERY) {
                    let more = match failed {
                        0 => String::new(),
                        n => format!(" ({n} more since the last such line)"),
                    };
                    tracing::warn!("Error accepting a connection on port {}: {e}{more}.", local.port());
                    (failed, said_at) = (0, Some(Instant::now()));
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (broker, tls) = (broker.clone(), tls.clone());
        if protocol == ListenerProtocol::Http {
            // A scrape: not an MQTT client, not counted against max_connections, but a
            // metrics listener takes only so many at once.
            let Some(open) = http::Open::new(&scrapes, peer.ip()) else {
                tracing::debug!(
                    "Metrics connection from {peer} refused: {} open, or {} from its address.",
                    http::MAX_CONNECTIONS,
                    http::MAX_PER_ADDRESS
                );
                continue;
            };
            tokio::spawn(async move {
                let _open = open;
                match tls {
                    None => http::serve(broker, stream, peer).await,
                    Some(tls) => {
                        if let Some((stream, _)) = tls_handshake(&broker, &tls, stream, peer, index).await {
                            http::serve(broker, stream, peer).await;
                        }
                    }
                }
            });
            continue;
        }
        if !broker.try_add_connection(index) {
            // A notice in mosquitto, and one of its connection messages.
            if broker.config.connection_messages {
                tracing::info!("Client connection from {peer} denied: max_connections reached.");
            }
            drop(stream);
            continue;
        }
        if broker.config.connection_messages {
            tracing::info!("New connection from {peer} on port {}.", local.port());
        }
        // Plain and TLS connections are separate tasks: a plain one does not carry the TLS
        // machinery in its (long-lived) task.
        match (protocol, tls) {
            (ListenerProtocol::WebSockets, tls) => {
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let info = ConnInfo { listener: index, ..ConnInfo::plain(peer) };
                            Box::pin(serve_ws(&broker, stream, info)).await;
                        }
                        Some(tls) => {
                            if let Some((stream, info)) =
                                tls_handshake(&broker, &tls, stream, peer, index).await
                            {
                                Box::pin(serve_ws(&broker, stream, info)).await;
                            }
                        }
                    }
                    broker.remove_connection(index);
                });
            }
            (_, None) => {
                let info = ConnInfo { listener: index, ..ConnInfo::plain(peer) };
                tokio::spawn(connection::serve(broker, stream, info, true));
            }
            (_, Some(tls)) => {
                tokio::spawn(async move {
                    if let Some((stream, info)) = tls_handshake(&broker, &tls, stream, peer, index).await {
                        connection::serve(broker.clone(), stream, info, false).await;
                    }
                    broker.remove_connection(index);
                });
            }
        }
    }
}

/// A TLS connection, after its handshake: the stream, and what the connection knows of its
/// client (its certificate).
type Tls = (tokio_rustls::server::TlsStream<tokio::net::TcpStream>, ConnInfo);

/// The TLS handshake (within the time a client has to connect).
async fn tls_handshake(
    broker: &Arc<Broker>,
    tls: &TlsListener,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: usize,
) -> Option<Tls> {
    let timeout = Duration::from_secs(broker.config.connect_timeout_secs);
    match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let cert_username = tls::certificate_username(tls.settings(), stream.get_ref().1);
            let certificate = tls.client_certificate(stream.get_ref().1);
            let settings = tls.settings();
            let cert_identity_required =
                settings.use_identity_as_username || settings.use_subject_as_username;
            let info = ConnInfo {
                peer,
                tls: true,
                cert_username,
                cert_identity_required,
                listener,
                certificate,
                login_gate: None,
            };
            Some((stream, info))
        }
        Ok(Err(e)) => {
            tracing::info!("Client connection from {peer} failed: TLS handshake: {e}.");
            None
        }
        Err(_) => {
            tracing::info!("Client connection from {peer} failed: TLS handshake timed out.");
            None
        }
    }
}

/// The WebSocket handshake (within the time a client has to connect), then the connection.
async fn serve_ws<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    broker: &Arc<Broker>,
    stream: S,
    mut info: ConnInfo,
) {
    let timeout = Duration::from_secs(broker.config.connect_timeout_secs);
    let login_gate = Arc::new(LoginGate::default());
    info.login_gate = Some(login_gate.clone());
    let settings = ws::WsSettings {
        http_dir: broker.listener_options(info.listener).http_dir.clone(),
        headers_limit: broker.config.websockets_headers_limit(),
        // A WebSocket message may hold several MQTT packets [MQTT-6.0.0-2]: its bound is not
        // the packet's, which the MQTT decoder checks (DISCONNECT 0x95), but that and 1 MiB.
        max_message: broker.config.max_packet_bytes().max(ws::MIN_MESSAGE),
        login_gate,
    };
    let peer = info.peer;
    match tokio::time::timeout(timeout, ws::accept(stream, settings)).await {
        Ok(Ok(ws::Accepted::WebSocket(stream, path))) => {
            tracing::debug!("WebSocket connection from {peer} on path {path}.");
            connection::serve(broker.clone(), stream, info, false).await;
        }
        Ok(Ok(ws::Accepted::Http(mut stream, head))) => {
            // The answer has a time of its own: a large file takes longer than a CONNECT.
            let Some(dir) = broker.listener_options(info.listener).http_dir.clone() else { return };
            let answer = http_dir::answer(&mut stream, &head, &dir);
            let status = tokio::time::timeout(http_dir::ANSWER_TIMEOUT, answer).await;
            if broker.config.connection_messages {
                let status = status.map_or_else(|_| "timed out".to_owned(), |s| s.to_string());
                tracing::info!("HTTP {} {} from {peer}: {status}.", head.method, head.target);
            }
        }
        Ok(Err(e)) => tracing::info!("Client connection from {peer} failed: WebSocket handshake: {e}."),
        Err(_) => tracing::info!("Client connection from {peer} failed: WebSocket handshake timed out."),
    }
}

/// The `$SYS/broker/...` topics: the version once, then the tree every `sys_interval`
/// seconds, the first update at once (as mosquitto). Off with `sys_interval 0`.
async fn sys_loop(broker: Arc<Broker>) {
    let interval = broker.config.sys_interval;
    if interval == 0 {
        return;
    }
    let mut tree = crate::metrics::sys::SysTree::default();
    crate::metrics::sys::publish(&broker, vec![crate::metrics::sys::SysTree::version()], Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let input = crate::metrics::sys::SysInput::read(&broker);
        let messages = tree.update(&input, broker.metrics.started, now);
        crate::metrics::sys::publish(&broker, messages, now);
    }
}

/// Every session's timers, from one place, four times a second (keep alive, held
/// acknowledgements, session expiry, delayed wills); retained messages that expired, every
/// second; and the store's compaction every `autosave_interval` seconds (or changes, with
/// `autosave_on_changes`).
async fn timer_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let p = broker.config.persistence.clone();
    let mut last_save = (Instant::now(), broker.journal().map_or(0, |j| j.appended()));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let now = Instant::now();
                broker.run_timers(now);
                ticks += 1;
                if ticks.is_multiple_of(4) {
                    let journal = broker.journal();
                    broker.router.drop_expired_retained(now, &mut |topic| {
                        if let Some(j) = journal {
                            j.forget_retained(topic);
                        }
                    });
                }
                let Some(j) = broker.journal().filter(|_| p.autosave_interval > 0) else { continue };
                let due = if p.autosave_on_changes {
                    j.appended().saturating_sub(last_save.1) >= p.autosave_interval
                } else {
                    now.duration_since(last_save.0).as_secs() >= p.autosave_interval
                };
                if due {
                    j.store().compact();
                    last_save = (now, j.appended());
                }
            }
        }
    }
}
