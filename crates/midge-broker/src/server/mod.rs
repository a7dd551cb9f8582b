//! The network side: listeners, one task per connection, and orderly shutdown.
//!
//! `Server::bind` opens the listeners (port 0 picks a free port, so every test runs its own
//! broker) and `Server::run` serves until the shutdown future resolves, as tokio's mini-redis
//! does.
mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::Config;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener cannot be opened.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A broker with its listeners open.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<(TcpListener, SocketAddr)>,
}

impl Server {
    /// Opens every listener of `config`.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let mut listeners = Vec::new();
        for l in config.effective_listeners() {
            let addresses = l.addresses();
            if addresses.is_empty() {
                return Err(ServerError::Bind {
                    address: format!("{}:{}", l.bind.as_deref().unwrap_or("*"), l.port),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "address does not resolve"),
                });
            }
            for addr in addresses {
                let listener =
                    listen(addr).map_err(|source| ServerError::Bind { address: addr.to_string(), source })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| ServerError::Bind { address: addr.to_string(), source })?;
                tracing::info!(
                    "Opening ipv{} listen socket on port {}.",
                    if local.is_ipv4() { 4 } else { 6 },
                    local.port()
                );
                listeners.push((listener, local));
            }
        }
        Ok(Server { broker: Broker::new(config), listeners })
    }

    /// The addresses the listeners are bound to (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a)| *a).collect()
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves clients until `shutdown` resolves; then stops accepting, closes every
    /// connection (publishing wills) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_tasks = JoinSet::new();
        for (listener, local) in self.listeners {
            let broker = self.broker.clone();
            let stop = stop_rx.clone();
            accept_tasks.spawn(accept_loop(listener, local, broker, stop));
        }
        let expiry = tokio::spawn(expiry_loop(self.broker.clone(), stop_rx.clone()));
        shutdown.await;
        tracing::info!("midge broker is shutting down.");
        let _ = stop_tx.send(true);
        while accept_tasks.join_next().await.is_some() {}
        expiry.abort();
        // Each connection task ends by closing its socket; give them time to say goodbye.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.broker.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Opens a listening socket with SO_REUSEADDR, as servers do, and a deep backlog for
/// reconnect storms.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) {
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
                tracing::warn!("Error accepting a connection on port {}: {e}.", local.port());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !broker.try_add_connection() {
            tracing::warn!("Client connection from {peer} denied: max_connections reached.");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tracing::info!("New connection from {} on port {}.", peer.ip(), local.port());
        let broker = broker.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection::serve(broker.clone(), stream, peer, stop).await;
            broker.remove_connection();
        });
    }
}

async fn expiry_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => { broker.expire_sessions(Instant::now()); }
        }
    }
}
