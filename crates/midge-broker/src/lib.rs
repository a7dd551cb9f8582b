//! The midge MQTT broker.
//!
//! The protocol logic ([`session`], [`router`], [`broker`]) is kept apart from I/O
//! ([`server`]): sessions take packets and time as input, so they are tested without sockets.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod control;
pub mod log_topic;
pub mod logging;
pub mod mailbox;
pub mod memory_limit;
pub mod metrics;
pub mod registry;
pub mod reload_gate;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod timers;

pub use broker::Broker;
pub use config::Config;
pub use server::{Server, ServerError};
