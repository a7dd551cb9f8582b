//! An async MQTT 3.1 / 3.1.1 / 5.0 client built on midge-codec (one codec for client and
//! broker). `midge pub`, `midge sub`, `midge rr` and `midge bench` use it, and so do the tests.
//!
//! [`connect`] opens the connection and completes CONNECT / CONNACK, then a background task
//! owns the socket: it answers the QoS flows, keeps the connection alive with PINGREQ and
//! delivers incoming messages as [`Event`]s. The [`Client`] handle is cheap to clone.
//!
//! ```no_run
//! # async fn f() -> Result<(), midge_client::Error> {
//! use midge_client::{connect, Options};
//! use midge_codec::{Connect, ProtocolVersion, Publish, QoS};
//! let opts = Options::new("localhost", 1883, Connect::new(ProtocolVersion::V5, "me"));
//! let (client, mut events, _connack) = connect(opts).await?;
//! let mut p = Publish::new("greetings", "hello");
//! p.qos = QoS::AtLeastOnce;
//! client.publish(p).await?;
//! client.disconnect().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alert;
mod client;
mod error;
mod options;
mod state;
mod task;
mod tls;
mod transport;

pub use alert::TlsAlert;
pub use client::{connect, AckFuture, Client, Event, Events};
pub use error::Error;
pub use options::{Direction, MessageHook, Options, PacketHook};
pub use tls::{TlsOptions, TlsVersion};
pub use transport::{open, BoxStream, Connector, Stream};

/// The client's protocol state machine without I/O: packets in ([`protocol::State::handle`])
/// and packets out ([`protocol::State::drain_output`]). [`Client`] runs it over a socket.
pub mod protocol {
    pub use crate::state::{Incoming, Reply, State};
}
