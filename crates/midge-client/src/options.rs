//! How to connect: where, with which CONNECT, and hooks.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use midge_codec::{Connect, Packet};

use crate::transport::Connector;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To the server.
    Sent,
    /// From the server.
    Received,
}

/// Called with every packet sent and received (`-d` in the command-line clients).
pub type PacketHook = Arc<dyn Fn(Direction, &Packet) + Send + Sync>;

/// Called with every message delivered, in the connection's task, in order with the packet
/// hook; with it set, messages are not queued as [`crate::Event`]s.
pub type MessageHook = Arc<dyn Fn(&midge_codec::Publish) + Send + Sync>;

/// Connection options.
#[derive(Clone)]
pub struct Options {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Local address to bind before connecting (`-A`).
    pub bind_address: Option<IpAddr>,
    /// The CONNECT to send: version, client id, clean start, keep alive, will, credentials
    /// and 5.0 properties.
    pub connect: Connect,
    /// Limit for TCP connect, TLS handshake and CONNACK together.
    pub connect_timeout: Duration,
    /// Turns the TCP stream into the stream MQTT runs on (TLS, for example).
    pub connector: Option<Arc<dyn Connector>>,
    /// Called with every packet.
    pub on_packet: Option<PacketHook>,
    /// Takes every message instead of the event queue.
    pub on_message: Option<MessageHook>,
    /// Incoming messages buffered before the client stops reading from the socket.
    pub event_capacity: usize,
    /// QoS 1 and 2 messages in flight at once (also bounded by the server's Receive
    /// Maximum); 20 by default, as libmosquitto.
    pub max_inflight: u16,
}

impl Options {
    /// Options for `host:port` with this CONNECT.
    pub fn new(host: impl Into<String>, port: u16, connect: Connect) -> Self {
        Options {
            host: host.into(),
            port,
            bind_address: None,
            connect,
            connect_timeout: Duration::from_secs(10),
            connector: None,
            on_packet: None,
            on_message: None,
            event_capacity: 1024,
            max_inflight: 20,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.connect.client_id)
            .field("version", &self.connect.protocol)
            .field("tls", &self.connector.is_some())
            .finish()
    }
}
