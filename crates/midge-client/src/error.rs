//! One opaque error type with predicates, as hyper does: callers ask what went wrong
//! (`is_refused`, `is_timeout`, ...) instead of matching on internals that will grow.
use std::fmt;

use midge_codec::{ConnectReturnCode, ProtocolVersion, ReasonCode};

/// An error of the MQTT client.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Io(std::io::Error),
    Timeout(&'static str),
    Refused {
        code: ReasonCode,
        version: ProtocolVersion,
    },
    Protocol(String),
    Encode(midge_codec::EncodeError),
    Decode(midge_codec::DecodeError),
    Disconnected(Option<ReasonCode>),
    Closed,
    Tls(String),
    /// The server's certificate is valid but not for the host connected to.
    TlsHostName(String),
    /// The host name did not resolve.
    Lookup(std::io::Error),
    /// The server sent, before CONNACK, a packet of a type no server sends (CONNECT,
    /// SUBSCRIBE, UNSUBSCRIBE): the value is the type's byte (16, 128, 160).
    Unrecognised(u8),
    /// The connection broke after it was opened, before CONNACK.
    Lost(std::io::Error),
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
        matches!(self.kind, Kind::Protocol(_) | Kind::Decode(_) | Kind::Unrecognised(_))
    }

    /// For a packet of a type no server sends (see [`Error::is_protocol`]): the first
    /// byte's packet type bits, as a number (16 for CONNECT).
    pub fn unrecognised_command(&self) -> Option<u8> {
        match self.kind {
            Kind::Unrecognised(c) => Some(c),
            _ => None,
        }
    }

    /// The connection was opened and then lost before the server answered CONNECT (for
    /// example a TLS alert: a client certificate the server refused).
    pub fn is_lost(&self) -> bool {
        matches!(self.kind, Kind::Lost(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Io(e) => write!(f, "{e}"),
            Kind::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Kind::Refused { code, version } if !version.is_v5() => {
                f.write_str(ConnectReturnCode::from_reason(*code).description())
            }
            Kind::Refused { code, .. } => write!(f, "{}", code.description()),
            Kind::Protocol(s) => write!(f, "protocol error: {s}"),
            Kind::Encode(e) => write!(f, "{e}"),
            Kind::Decode(e) => write!(f, "malformed packet from the server: {e}"),
            Kind::Disconnected(Some(code)) => write!(f, "disconnected by the server: {}", code.description()),
            Kind::Disconnected(None) => f.write_str("disconnected by the server"),
            Kind::Closed => f.write_str("the connection is closed"),
            Kind::Tls(s) | Kind::TlsHostName(s) => write!(f, "TLS error: {s}"),
            Kind::Lookup(e) => write!(f, "cannot resolve the host name: {e}"),
            Kind::Unrecognised(c) => {
                write!(f, "protocol error: a packet of type {} from the server", c >> 4)
            }
            Kind::Lost(e) => write!(f, "the connection was lost: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Io(e) | Kind::Lost(e) | Kind::Lookup(e) => Some(e),
            Kind::Encode(e) => Some(e),
            Kind::Decode(e) => Some(e),
            _ => None,
        }
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
