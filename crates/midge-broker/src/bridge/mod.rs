//! Bridges: connections from this broker to other brokers (mosquitto's `connection`
//! blocks). The decisions live here, without I/O: topic renaming ([`topics`]), the protocol
//! with the remote ([`relay`]), the waits between attempts ([`backoff`]). The task that runs
//! a bridge, with its sockets and clock, is `server/bridge.rs`; the bridge's session on this
//! broker is a [`crate::broker::Link`] opened by [`crate::Broker::open_bridge`].
pub mod backoff;
pub mod relay;
pub mod topics;
