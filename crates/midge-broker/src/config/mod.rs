//! Broker configuration: a mosquitto.conf-style file read into a typed [`Config`].
mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use parse::{parse_file, parse_str, ConfigError};

/// One listener: a port and the address to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// TCP port (0 picks a free one).
    pub port: u16,
    /// The address to bind; `None` binds every interface, as mosquitto does.
    pub bind: Option<String>,
    /// Where it was declared, for messages ("file:line"), if from a file.
    pub origin: Option<String>,
}

impl Listener {
    /// A listener on `address:port`.
    pub fn new(port: u16, bind: Option<&str>) -> Self {
        Listener { port, bind: bind.map(str::to_owned), origin: None }
    }

    /// The socket addresses to bind.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match &self.bind {
            Some(host) => {
                use std::net::ToSocketAddrs;
                (host.as_str(), self.port).to_socket_addrs().map(Iterator::collect).unwrap_or_default()
            }
            None => vec![SocketAddr::from(([0, 0, 0, 0], self.port))],
        }
    }
}

/// Everything the broker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listeners; empty means the default: 127.0.0.1:1883 ("local only mode").
    pub listeners: Vec<Listener>,
    /// `allow_anonymous`; when unset, anonymous clients are allowed only in local only mode,
    /// as mosquitto 2.0 does.
    pub allow_anonymous: Option<bool>,
    /// `max_keepalive`: the longest keep alive a client may ask for, in seconds.
    pub max_keepalive: u16,
    /// `max_packet_size`: the largest packet accepted, in bytes (0: the protocol's maximum).
    pub max_packet_size: u32,
    /// `max_inflight_messages`: QoS 1 and 2 messages in flight to each client (0: 65535).
    pub max_inflight_messages: u16,
    /// `max_queued_messages`: deliveries queued per session beyond those in flight.
    pub max_queued_messages: usize,
    /// `max_connections`: clients at once (`None`: no limit).
    pub max_connections: Option<usize>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// The file it was read from.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            allow_anonymous: None,
            max_keepalive: 65_535,
            max_packet_size: 0,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_connections: None,
            connect_timeout_secs: 10,
            source: None,
        }
    }
}

impl Config {
    /// True when no listener is configured: the broker listens on localhost only and allows
    /// anonymous clients, as mosquitto 2.0 does without a configuration.
    pub fn local_only(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The listeners to open.
    pub fn effective_listeners(&self) -> Vec<Listener> {
        if self.listeners.is_empty() {
            vec![Listener::new(1883, Some("127.0.0.1"))]
        } else {
            self.listeners.clone()
        }
    }

    /// Whether clients without a user name may connect.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or_else(|| self.local_only())
    }

    /// The largest packet accepted, in bytes.
    pub fn max_packet_bytes(&self) -> usize {
        match self.max_packet_size {
            0 => midge_codec::MAX_REMAINING_LENGTH + 5,
            n => n as usize,
        }
    }

    /// The outgoing inflight window.
    pub fn inflight_window(&self) -> u16 {
        match self.max_inflight_messages {
            0 => u16::MAX,
            n => n,
        }
    }
}
