//! One opaque error type with predicates, as hyper does: callers ask what went wrong
//! (`is_refused`, `is_timeout`, ...) instead of matching on internals that will grow.
use midge_codec::{ConnectReturnCode, ProtocolVersion, ReasonCode};
use thiserror::Error;

use crate::alert::TlsAlert;

/// An error of the MQTT client.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct Error {
    kind: Kind,
}

/// The wrapped errors are both in the message and the `source()`: callers print the message
/// alone (the CLI does), and the chain is there for those who walk it.
#[derive(Debug, Error)]
pub(crate) enum Kind {
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{}", refused(*.code, *.version))]
    Refused { code: ReasonCode, version: ProtocolVersion },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Encode(#[source] midge_codec::EncodeError),
    #[error("malformed packet from the server: {0}")]
    Decode(#[source] midge_codec::DecodeError),
    #[error("disconnected by the server{}", reason_suffix(*.0))]
    Disconnected(Option<ReasonCode>),
    #[error("the connection is closed")]
    Closed,
    #[error("TLS error: {0}")]
    Tls(String),
    /// The server's certificate is valid but not for the host connected to.
    #[error("TLS error: {0}")]
    TlsHostName(String),
    /// The host name did not resolve.
    #[error("cannot resolve the host name: {0}")]
    Lookup(#[source] std::io::Error),
    /// The server sent, before CONNACK, a packet of a type no server sends (CONNECT,
    /// SUBSCRIBE, UNSUBSCRIBE): the value is the type's byte (16, 128, 160).
    /// `tls_record`: the bytes were a TLS record (a TLS listener's alert to a plain client).
    #[error("protocol error: a packet of type {} from the server", .command >> 4)]
    Unrecognised { command: u8, tls_record: bool },
    /// A request larger than the server's Maximum Packet Size, not sent [MQTT-3.1.2-25].
    #[error("the packet ({size} bytes) exceeds the server's maximum packet size ({maximum} bytes)")]
    TooLarge { size: usize, maximum: usize },
    /// The connection broke after it was opened, before CONNACK.
    #[error("the connection was lost: {0}")]
    Lost(#[source] std::io::Error),
}

/// ": reason" after "disconnected by the server", when the server gave one (5.0).
fn reason_suffix(code: Option<ReasonCode>) -> String {
    code.map(|c| format!(": {}", c.description())).unwrap_or_default()
}

/// A refusal in the words of the protocol version spoken: 3.1.1 has return codes.
fn refused(code: ReasonCode, version: ProtocolVersion) -> &'static str {
    if version.is_v5() {
        code.description()
    } else {
        ConnectReturnCode::from_reason(code).description()
    }
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error { kind }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Error::new(Kind::Protocol(what.into()))
    }

    /// A TLS set-up or handshake error.
    pub fn tls(what: impl Into<String>) -> Self {
        Error::new(Kind::Tls(what.into()))
    }

    /// A TLS handshake that failed because the server's certificate is not for the host.
    pub fn tls_host_name(what: impl Into<String>) -> Self {
        Error::new(Kind::TlsHostName(what.into()))
    }

    /// The server refused the connection; [`Error::refused_code`] says why.
    pub fn is_refused(&self) -> bool {
        matches!(self.kind, Kind::Refused { .. })
    }

    /// The reason code of a refused connection (3.1.1 return codes as their 5.0 equivalent).
    pub fn refused_code(&self) -> Option<ReasonCode> {
        match self.kind {
            Kind::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Something took too long (connecting, CONNACK, an acknowledgement, PINGRESP).
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// A socket error.
    pub fn is_io(&self) -> bool {
        matches!(self.kind, Kind::Io(_))
    }

    /// The connection is closed (by either side).
    pub fn is_closed(&self) -> bool {
        matches!(self.kind, Kind::Closed | Kind::Disconnected(_))
    }

    /// The server sent DISCONNECT with this reason (5.0).
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self.kind {
            Kind::Disconnected(code) => code,
            _ => None,
        }
    }

    /// A request larger than the server's Maximum Packet Size (or with a topic longer than
    /// the protocol's strings), refused without being sent; the connection goes on.
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge { .. } | Kind::Encode(_))
    }

    /// A TLS error.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls(_) | Kind::TlsHostName(_))
    }

    /// A TLS error where the server's certificate is not for the host name (or address)
    /// connected to.
    pub fn is_tls_host_name(&self) -> bool {
        matches!(self.kind, Kind::TlsHostName(_))
    }

    /// The host name could not be resolved.
    pub fn is_lookup(&self) -> bool {
        matches!(self.kind, Kind::Lookup(_))
    }

    /// The server broke the protocol: a malformed packet, or one it should not send.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol(_) | Kind::Decode(_) | Kind::Unrecognised { .. })
    }

    /// For a packet of a type no server sends (see [`Error::is_protocol`]): the first
    /// byte's packet type bits, as a number (16 for CONNECT).
    pub fn unrecognised_command(&self) -> Option<u8> {
        match self.kind {
            Kind::Unrecognised { command, .. } => Some(command),
            _ => None,
        }
    }

    /// The server answered CONNECT with a TLS record: a TLS listener, reached without TLS.
    pub fn answered_in_tls(&self) -> bool {
        matches!(self.kind, Kind::Unrecognised { tls_record: true, .. })
    }

    /// The TLS alert the server ended the connection with (a client certificate it refused:
    /// revoked, from another CA, missing), if it sent one.
    pub fn tls_alert(&self) -> Option<TlsAlert> {
        match &self.kind {
            Kind::Lost(e) | Kind::Io(e) => TlsAlert::from_io(e),
            _ => None,
        }
    }

    /// The connection was opened and then lost before the server answered CONNECT (for
    /// example a TLS alert: a client certificate the server refused, see
    /// [`Error::tls_alert`]).
    pub fn is_lost(&self) -> bool {
        matches!(self.kind, Kind::Lost(_))
    }

    /// The connection was lost before CONNACK (a TLS alert from the server in the handshake).
    pub(crate) fn lost(e: std::io::Error) -> Self {
        Error::new(Kind::Lost(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(Kind::Io(e))
    }
}

impl From<midge_codec::EncodeError> for Error {
    fn from(e: midge_codec::EncodeError) -> Self {
        Error::new(Kind::Encode(e))
    }
}

impl From<midge_codec::DecodeError> for Error {
    fn from(e: midge_codec::DecodeError) -> Self {
        Error::new(Kind::Decode(e))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::*;

    /// The messages are what the hand-written Display printed before thiserror did it: the
    /// command-line tools print some of them as they are.
    #[test]
    fn messages_and_sources() {
        let io = || io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let cases: Vec<(Kind, &str, bool)> = vec![
            (Kind::Io(io()), "refused", true),
            (Kind::Timeout("CONNACK"), "timed out waiting for CONNACK", false),
            (
                Kind::Refused { code: ReasonCode::NotAuthorized, version: ProtocolVersion::V3_1_1 },
                "Connection Refused: not authorised.",
                false,
            ),
            (
                Kind::Refused { code: ReasonCode::NotAuthorized, version: ProtocolVersion::V5 },
                "Not authorized",
                false,
            ),
            (Kind::Protocol("x".into()), "protocol error: x", false),
            (Kind::Encode(midge_codec::EncodeError::Invalid("y")), "cannot encode: y", true),
            (
                Kind::Decode(midge_codec::DecodeError::InvalidQoS),
                "malformed packet from the server: QoS 3 is not a valid quality of service",
                true,
            ),
            (
                Kind::Disconnected(Some(ReasonCode::ServerBusy)),
                "disconnected by the server: Server busy",
                false,
            ),
            (Kind::Disconnected(None), "disconnected by the server", false),
            (Kind::Closed, "the connection is closed", false),
            (Kind::Tls("bad".into()), "TLS error: bad", false),
            (Kind::TlsHostName("name".into()), "TLS error: name", false),
            (Kind::Lookup(io()), "cannot resolve the host name: refused", true),
            (
                Kind::Unrecognised { command: 0x80, tls_record: false },
                "protocol error: a packet of type 8 from the server",
                false,
            ),
            (Kind::Lost(io()), "the connection was lost: refused", true),
        ];
        for (kind, message, has_source) in cases {
            let e = Error::new(kind);
            assert_eq!(e.to_string(), message);
            assert_eq!(e.source().is_some(), has_source, "{message}");
        }
    }
}
