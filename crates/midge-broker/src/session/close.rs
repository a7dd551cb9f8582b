//! Why a connection ends, what the client is told, and what the log says.
use midge_codec::ReasonCode;

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT. `with_will` for 5.0 reason 0x04.
    Disconnect {
        /// Disconnect with Will Message.
        with_will: bool,
    },
    /// Nothing received for 1.5 times the keep alive [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]).
    KeepAliveTimeout,
    /// The client broke the protocol; 5.0 clients are told why with DISCONNECT.
    ProtocolError {
        /// The reason code sent to 5.0 clients.
        reason: ReasonCode,
        /// What happened, for the log.
        detail: String,
    },
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// A socket error.
    Io(String),
    /// Another connection took the client id over [MQTT-3.1.4-3].
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// A reload of the security settings no longer lets the client in.
    NotAuthorized,
    /// It published while the broker was over its `memory_limit`: the message is dropped.
    MemoryLimit,
    /// Its CONNACK (`len` bytes) is larger than the Maximum Packet Size it announced (`max`):
    /// nothing is sent [MQTT-3.1.2-24], not even a DISCONNECT, which may not come before
    /// CONNACK; as mosquitto, which closes the connection.
    ConnAckTooLarge {
        /// The CONNACK's size.
        len: usize,
        /// The client's Maximum Packet Size.
        max: usize,
    },
}

impl CloseReason {
    /// Whether the will is published: on every loss but a normal DISCONNECT
    /// [MQTT-3.1.2-8] (3.1.1: [MQTT-3.1.2-10]), and but a reload that no longer lets the
    /// client in (a client that may not be here publishes nothing, as with mosquitto).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::Disconnect { with_will: false } | CloseReason::NotAuthorized)
    }

    /// The DISCONNECT a 5.0 client receives before the server closes, if any.
    pub fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseReason::ProtocolError { reason, .. } => Some(*reason),
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseReason::Shutdown => Some(ReasonCode::ServerShuttingDown),
            CloseReason::NotAuthorized => Some(ReasonCode::NotAuthorized),
            CloseReason::MemoryLimit => Some(ReasonCode::QuotaExceeded),
            _ => None,
        }
    }

    /// A packet that does not decode: the reason code the codec determined, but one that
    /// only CONNACK carries (an undecodable second CONNECT: 0x84) is a Protocol Error in a
    /// DISCONNECT (section 3.14.2.1, section 4.13.1).
    pub fn malformed(e: &midge_codec::DecodeError) -> Self {
        let reason =
            Some(e.reason_code()).filter(|r| r.is_disconnect_code()).unwrap_or(ReasonCode::ProtocolError);
        CloseReason::ProtocolError { reason, detail: e.to_string() }
    }

    pub(crate) fn protocol(reason: ReasonCode, detail: impl Into<String>) -> Self {
        CloseReason::ProtocolError { reason, detail: detail.into() }
    }

    /// The log line, in mosquitto's words.
    pub fn log_line(&self, client_id: &str) -> String {
        match self {
            CloseReason::Disconnect { .. } => format!("Client {client_id} disconnected."),
            CloseReason::KeepAliveTimeout => {
                format!("Client {client_id} has exceeded timeout, disconnecting.")
            }
            CloseReason::ProtocolError { reason: ReasonCode::MalformedPacket, detail } => {
                format!("Client {client_id} disconnected due to malformed packet: {detail}.")
            }
            CloseReason::ProtocolError { reason: ReasonCode::QuotaExceeded, detail } => {
                format!("Client {client_id} disconnected: {detail}.")
            }
            CloseReason::ProtocolError { detail, .. } => {
                format!("Client {client_id} disconnected due to protocol error: {detail}.")
            }
            CloseReason::Closed => format!("Client {client_id} closed its connection."),
            CloseReason::Io(e) => format!("Socket error on client {client_id}, disconnecting: {e}."),
            CloseReason::TakenOver => {
                format!("Client {client_id} already connected, closing old connection.")
            }
            CloseReason::Shutdown => format!("Client {client_id} disconnected: broker shutting down."),
            CloseReason::NotAuthorized => {
                format!("Client {client_id} disconnected: not authorised by the reloaded security settings.")
            }
            CloseReason::MemoryLimit => {
                format!("Client {client_id} disconnected: the broker is over its memory_limit; its message is dropped.")
            }
            CloseReason::ConnAckTooLarge { len, max } => format!(
                "Client {client_id} disconnected due to oversize packet: its CONNACK of {len} bytes is larger \
                 than its Maximum Packet Size ({max} bytes)."
            ),
        }
    }
}
