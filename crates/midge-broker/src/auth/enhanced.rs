//! MQTT 5.0 enhanced authentication (section 4.12): a pluggable method exchanges AUTH
//! packets with the client, at CONNECT and again whenever the client re-authenticates.
use std::sync::Arc;

use bytes::Bytes;
use midge_codec::ReasonCode;

/// What an authentication method says after each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this data in AUTH (0x18 Continue authentication) and wait for the client's.
    Continue(Bytes),
    /// Authenticated, as this user name (`None`: none), with data for the final packet.
    Success {
        /// The user name the client is known by (for the ACL).
        username: Option<String>,
        /// Authentication Data for CONNACK (or the final AUTH of a re-authentication).
        data: Option<Bytes>,
    },
    /// Refused with this reason code (0x87 Not authorized, 0x86, ...).
    Failure(ReasonCode),
}

/// One exchange with one client.
pub trait AuthExchange: Send {
    /// Takes the client's Authentication Data (from CONNECT, or AUTH) and says what next.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

impl std::fmt::Debug for dyn AuthExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthExchange")
    }
}

/// An authentication method (SCRAM, a token check, ...), registered with
/// [`crate::Broker::add_auth_method`] under its name, the Authentication Method property.
pub trait AuthMethod: Send + Sync {
    /// The method's name, as clients send it in Authentication Method.
    fn name(&self) -> &str;
    /// Starts an exchange for a client (at CONNECT, or on re-authentication).
    fn start(&self, client_id: &str) -> Box<dyn AuthExchange>;
}

/// The method a client authenticated with, kept for re-authentication.
#[derive(Clone)]
pub struct Enhanced {
    /// The method.
    pub method: Arc<dyn AuthMethod>,
}

impl std::fmt::Debug for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enhanced").field("method", &self.method.name()).finish()
    }
}
