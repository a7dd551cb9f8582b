//! MQTT 5.0 reason codes, and the MQTT 3.1.1 CONNACK return codes.
use std::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $text:literal; )*) => {
        /// An MQTT 5.0 reason code (OASIS MQTT 5.0, section 2.4).
        ///
        /// Some values have several names in the specification, depending on the packet:
        /// 0x00 is Success, Normal disconnection and Granted QoS 0 (see the associated constants).
        ///
        /// Non-exhaustive: a later MQTT version may define more codes, and matching them
        /// elsewhere should not break when it does.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl ReasonCode {
            /// Every reason code, in numeric order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name),*];

            /// The reason code for a byte, if the specification defines one.
            pub fn from_u8(v: u8) -> Option<ReasonCode> {
                match v {
                    $( $value => Some(ReasonCode::$name), )*
                    _ => None,
                }
            }

            /// The name the specification gives the code.
            pub fn description(self) -> &'static str {
                match self {
                    $( ReasonCode::$name => $text, )*
                }
            }
        }
    };
}

reason_codes! {
    /// Success; also Normal disconnection and Granted QoS 0.
    Success = 0x00, "Success";
    /// Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01, "Granted QoS 1";
    /// Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02, "Granted QoS 2";
    /// Disconnect with Will Message (DISCONNECT from a client).
    DisconnectWithWill = 0x04, "Disconnect with Will Message";
    /// No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    /// No subscription existed (UNSUBACK).
    NoSubscriptionExisted = 0x11, "No subscription existed";
    /// Continue authentication (AUTH).
    ContinueAuthentication = 0x18, "Continue authentication";
    /// Re-authenticate (AUTH).
    ReAuthenticate = 0x19, "Re-authenticate";
    /// Unspecified error.
    UnspecifiedError = 0x80, "Unspecified error";
    /// Malformed Packet.
    MalformedPacket = 0x81, "Malformed Packet";
    /// Protocol Error.
    ProtocolError = 0x82, "Protocol Error";
    /// Implementation specific error.
    ImplementationSpecificError = 0x83, "Implementation specific error";
    /// Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    /// Client Identifier not valid.
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    /// Bad User Name or Password.
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    /// Not authorized.
    NotAuthorized = 0x87, "Not authorized";
    /// Server unavailable.
    ServerUnavailable = 0x88, "Server unavailable";
    /// Server busy.
    ServerBusy = 0x89, "Server busy";
    /// Banned.
    Banned = 0x8A, "Banned";
    /// Server shutting down.
    ServerShuttingDown = 0x8B, "Server shutting down";
    /// Bad authentication method.
    BadAuthenticationMethod = 0x8C, "Bad authentication method";
    /// Keep Alive timeout.
    KeepAliveTimeout = 0x8D, "Keep Alive timeout";
    /// Session taken over.
    SessionTakenOver = 0x8E, "Session taken over";
    /// Topic Filter invalid.
    TopicFilterInvalid = 0x8F, "Topic Filter invalid";
    /// Topic Name invalid.
    TopicNameInvalid = 0x90, "Topic Name invalid";
    /// Packet Identifier in use.
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    /// Packet Identifier not found.
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    /// Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    /// Topic Alias invalid.
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    /// Packet too large.
    PacketTooLarge = 0x95, "Packet too large";
    /// Message rate too high.
    MessageRateTooHigh = 0x96, "Message rate too high";
    /// Quota exceeded.
    QuotaExceeded = 0x97, "Quota exceeded";
    /// Administrative action.
    AdministrativeAction = 0x98, "Administrative action";
    /// Payload format invalid.
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    /// Retain not supported.
    RetainNotSupported = 0x9A, "Retain not supported";
    /// QoS not supported.
    QoSNotSupported = 0x9B, "QoS not supported";
    /// Use another server.
    UseAnotherServer = 0x9C, "Use another server";
    /// Server moved.
    ServerMoved = 0x9D, "Server moved";
    /// Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported";
    /// Connection rate exceeded.
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded";
    /// Maximum connect time.
    MaximumConnectTime = 0xA0, "Maximum connect time";
    /// Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported";
    /// Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported";
}

use ReasonCode as R;

/// The reason codes each packet may carry (MQTT 5.0, table 2-6 and each packet's section).
pub(crate) const CONNACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::UnsupportedProtocolVersion,
    R::ClientIdentifierNotValid,
    R::BadUserNameOrPassword,
    R::NotAuthorized,
    R::ServerUnavailable,
    R::ServerBusy,
    R::Banned,
    R::BadAuthenticationMethod,
    R::TopicNameInvalid,
    R::PacketTooLarge,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::ConnectionRateExceeded,
];
/// PUBACK and PUBREC (sections 3.4.2.1 and 3.5.2.1).
pub(crate) const PUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoMatchingSubscribers,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicNameInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
];
/// PUBREL and PUBCOMP (sections 3.6.2.1 and 3.7.2.1).
pub(crate) const PUBREL_CODES: &[ReasonCode] = &[R::Success, R::PacketIdentifierNotFound];
/// SUBACK (section 3.9.3).
pub(crate) const SUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::GrantedQoS1,
    R::GrantedQoS2,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::SharedSubscriptionsNotSupported,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
/// UNSUBACK (section 3.11.3).
pub(crate) const UNSUBACK_CODES: &[ReasonCode] = &[
    R::Success,
    R::NoSubscriptionExisted,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
];
/// DISCONNECT (section 3.14.2.1), plus 0x8C Bad authentication method, which table 2-6 lists for
/// DISCONNECT (a failed re-authentication, section 4.12.1) although table 3-10 leaves it out.
pub(crate) const DISCONNECT_CODES: &[ReasonCode] = &[
    R::Success,
    R::DisconnectWithWill,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::ServerBusy,
    R::ServerShuttingDown,
    R::BadAuthenticationMethod,
    R::KeepAliveTimeout,
    R::SessionTakenOver,
    R::TopicFilterInvalid,
    R::TopicNameInvalid,
    R::ReceiveMaximumExceeded,
    R::TopicAliasInvalid,
    R::PacketTooLarge,
    R::MessageRateTooHigh,
    R::QuotaExceeded,
    R::AdministrativeAction,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::SharedSubscriptionsNotSupported,
    R::ConnectionRateExceeded,
    R::MaximumConnectTime,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];
/// AUTH (section 3.15.2.1).
pub(crate) const AUTH_CODES: &[ReasonCode] = &[R::Success, R::ContinueAuthentication, R::ReAuthenticate];

impl ReasonCode {
    /// Normal disconnection (DISCONNECT), the same value as [`ReasonCode::Success`].
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// Granted QoS 0 (SUBACK), the same value as [`ReasonCode::Success`].
    pub const GRANTED_QOS0: ReasonCode = ReasonCode::Success;

    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for codes of 0x80 and above, which report a failure [MQTT-2.4].
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// True for the codes a DISCONNECT may carry (5.0 section 3.14.2.1).
    pub fn is_disconnect_code(self) -> bool {
        DISCONNECT_CODES.contains(&self)
    }

    /// True for the codes a CONNACK may carry (5.0 section 3.2.2.2).
    pub fn is_connack_code(self) -> bool {
        CONNACK_CODES.contains(&self)
    }

    /// The SUBACK code granting a QoS.
    pub fn granted(qos: crate::QoS) -> ReasonCode {
        match qos {
            crate::QoS::AtMostOnce => ReasonCode::Success,
            crate::QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            crate::QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.description(), self.as_u8())
    }
}

/// The CONNACK return codes of MQTT 3.1 and 3.1.1 (3.1.1 section 3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0x00 Connection Accepted.
    Accepted = 0,
    /// 0x01 Connection Refused, unacceptable protocol version.
    UnacceptableProtocolVersion = 1,
    /// 0x02 Connection Refused, identifier rejected.
    IdentifierRejected = 2,
    /// 0x03 Connection Refused, Server unavailable.
    ServerUnavailable = 3,
    /// 0x04 Connection Refused, bad user name or password.
    BadUserNameOrPassword = 4,
    /// 0x05 Connection Refused, not authorized.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code for a byte, if 3.1.1 defines one.
    pub fn from_u8(v: u8) -> Option<Self> {
        use ConnectReturnCode::*;
        [
            Accepted,
            UnacceptableProtocolVersion,
            IdentifierRejected,
            ServerUnavailable,
            BadUserNameOrPassword,
            NotAuthorized,
        ]
        .into_iter()
        .find(|c| *c as u8 == v)
    }

    /// The 3.1.1 return code closest to a 5.0 reason code: the broker decides in 5.0 terms
    /// and a 3.1.1 client is told the nearest thing its protocol can say.
    pub fn from_reason(code: ReasonCode) -> Self {
        use ConnectReturnCode::*;
        use ReasonCode as R;
        // Every code by name, no wildcard: a code added to ReasonCode must be placed here.
        match code {
            R::Success => Accepted,
            R::UnsupportedProtocolVersion => UnacceptableProtocolVersion,
            R::ClientIdentifierNotValid => IdentifierRejected,
            R::BadUserNameOrPassword | R::BadAuthenticationMethod => BadUserNameOrPassword,
            R::NotAuthorized | R::Banned => NotAuthorized,
            R::GrantedQoS1
            | R::GrantedQoS2
            | R::DisconnectWithWill
            | R::NoMatchingSubscribers
            | R::NoSubscriptionExisted
            | R::ContinueAuthentication
            | R::ReAuthenticate
            | R::UnspecifiedError
            | R::MalformedPacket
            | R::ProtocolError
            | R::ImplementationSpecificError
            | R::ServerUnavailable
            | R::ServerBusy
            | R::ServerShuttingDown
            | R::KeepAliveTimeout
            | R::SessionTakenOver
            | R::TopicFilterInvalid
            | R::TopicNameInvalid
            | R::PacketIdentifierInUse
            | R::PacketIdentifierNotFound
            | R::ReceiveMaximumExceeded
            | R::TopicAliasInvalid
            | R::PacketTooLarge
            | R::MessageRateTooHigh
            | R::QuotaExceeded
            | R::AdministrativeAction
            | R::PayloadFormatInvalid
            | R::RetainNotSupported
            | R::QoSNotSupported
            | R::UseAnotherServer
            | R::ServerMoved
            | R::SharedSubscriptionsNotSupported
            | R::ConnectionRateExceeded
            | R::MaximumConnectTime
            | R::SubscriptionIdentifiersNotSupported
            | R::WildcardSubscriptionsNotSupported => ServerUnavailable,
        }
    }

    /// The 5.0 reason code with the same meaning.
    pub fn to_reason(self) -> ReasonCode {
        match self {
            ConnectReturnCode::Accepted => ReasonCode::Success,
            ConnectReturnCode::UnacceptableProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
            ConnectReturnCode::IdentifierRejected => ReasonCode::ClientIdentifierNotValid,
            ConnectReturnCode::ServerUnavailable => ReasonCode::ServerUnavailable,
            ConnectReturnCode::BadUserNameOrPassword => ReasonCode::BadUserNameOrPassword,
            ConnectReturnCode::NotAuthorized => ReasonCode::NotAuthorized,
        }
    }

    /// The wording mosquitto's clients print for this code.
    pub fn description(self) -> &'static str {
        match self {
            ConnectReturnCode::Accepted => "Connection Accepted.",
            ConnectReturnCode::UnacceptableProtocolVersion => {
                "Connection Refused: unacceptable protocol version."
            }
            ConnectReturnCode::IdentifierRejected => "Connection Refused: identifier rejected.",
            ConnectReturnCode::ServerUnavailable => "Connection Refused: broker unavailable.",
            ConnectReturnCode::BadUserNameOrPassword => "Connection Refused: bad user name or password.",
            ConnectReturnCode::NotAuthorized => "Connection Refused: not authorised.",
        }
    }
}
