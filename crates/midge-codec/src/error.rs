//! Typed decode and encode errors. Each decode error knows the reason code a broker sends
//! back before it closes the connection.
use crate::{PacketType, PropertyId, ReasonCode, TopicError};

/// Why bytes from the network are not a valid MQTT packet.
///
/// [`DecodeError::reason_code`] gives the MQTT 5.0 reason code for the CONNACK or DISCONNECT
/// a server sends before it closes the connection (3.1.1 servers just close it).
///
/// Non-exhaustive: each new check the decoder learns is a new variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length field runs past four bytes (sections 1.5.5 and 2.1.4).
    #[error("malformed remaining length: more than 4 bytes")]
    RemainingLengthTooLong,
    /// The whole packet is larger than the receiver accepts (5.0 sections 3.1.2.11.4, 3.2.2.3.6, 4.13).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The size announced by the fixed header, in bytes.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// Packet type 0 (reserved), or AUTH (15) before MQTT 5.0.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The low four bits of the first byte are not those the packet type requires [MQTT-2.2.2-2].
    #[error("invalid fixed header flags 0x{flags:x} for {packet_type}")]
    InvalidHeaderFlags {
        /// The packet.
        packet_type: PacketType,
        /// The four flag bits received.
        flags: u8,
    },
    /// A PUBLISH or will with both QoS bits set [MQTT-3.3.1-4].
    #[error("QoS 3 is not a valid quality of service")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// The body ends before a field it must contain.
    #[error("{packet_type} too short: {field} missing or truncated")]
    Truncated {
        /// The packet.
        packet_type: PacketType,
        /// The field that did not fit.
        field: &'static str,
    },
    /// A frame given to [`crate::decode_frame`] that ends before the packet does.
    #[error("incomplete packet")]
    IncompleteFrame,
    /// Bytes left over after the last field of a packet.
    #[error("{packet_type} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The packet.
        packet_type: PacketType,
        /// How many bytes were left.
        extra: usize,
    },
    /// A string that is not well-formed UTF-8 (surrogates included) [MQTT-1.5.4-1].
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A string containing U+0000 [MQTT-1.5.4-2].
    #[error("{field} contains the null character U+0000")]
    NullCharacter {
        /// The field.
        field: &'static str,
    },
    /// A string containing a control character (U+0001..U+001F, U+007F..U+009F) or a
    /// non-character (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), which mosquitto refuses as
    /// malformed UTF-8 (MQTT 5.0 section 1.5.4 lets a receiver do so).
    #[error("{field} contains the disallowed character U+{code_point:04X}")]
    DisallowedCharacter {
        /// The field.
        field: &'static str,
        /// The character.
        code_point: u32,
    },
    /// A variable byte integer in a packet's body longer than four bytes (section 1.5.5),
    /// or longer than its value needs [MQTT-1.5.5-1] (as mosquitto, which takes such a
    /// remaining length but no such integer inside a packet).
    #[error("malformed variable byte integer in {field}")]
    InvalidVarInt {
        /// The field.
        field: &'static str,
    },
    /// CONNECT with a protocol name or level this server does not speak [MQTT-3.1.2-1], [MQTT-3.1.2-2].
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// The protocol name received (lossy).
        name: String,
        /// The protocol level received.
        level: u8,
    },
    /// CONNECT flags break a rule of section 3.1.2.
    #[error("invalid CONNECT flags 0x{flags:02x}: {why}")]
    InvalidConnectFlags {
        /// The flags byte.
        flags: u8,
        /// The rule broken.
        why: &'static str,
    },
    /// CONNACK acknowledge flags with reserved bits set [MQTT-3.2.2-1].
    #[error("invalid CONNACK flags 0x{0:02x}")]
    InvalidConnAckFlags(u8),
    /// A packet identifier of 0 [MQTT-2.2.1-3].
    #[error("{0} with packet identifier 0")]
    ZeroPacketId(PacketType),
    /// A topic name that breaks a rule of section 4.7.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A topic filter that breaks a rule of sections 4.7 or 4.8.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter [MQTT-3.8.3-2], [MQTT-3.10.3-2].
    #[error("{0} without any topic filter")]
    NoTopicFilters(PacketType),
    /// Subscription options with reserved bits set [MQTT-3.8.3-5].
    #[error("invalid subscription options 0x{0:02x}")]
    InvalidSubscriptionOptions(u8),
    /// Subscription options with a Maximum QoS of 3: a Protocol Error in 5.0 (section 3.8.3.1).
    #[error("maximum QoS 3 in subscription options")]
    InvalidSubscriptionQoS,
    /// Retain Handling of 3 [MQTT-3.8.3-4 note].
    #[error("retain handling 3 is not valid")]
    InvalidRetainHandling,
    /// A reason code this packet may not carry.
    #[error("reason code 0x{code:02x} is not valid in {packet_type}")]
    InvalidReasonCode {
        /// The packet.
        packet_type: PacketType,
        /// The code received.
        code: u8,
    },
    /// A 3.1.1 CONNACK return code above 5.
    #[error("invalid CONNACK return code {0}")]
    InvalidReturnCode(u8),
    /// A property identifier MQTT 5.0 does not define.
    #[error("unknown property identifier 0x{0:02x}")]
    UnknownProperty(u8),
    /// A property in a packet that may not carry it: a Malformed Packet (section 2.2.2.2).
    #[error("property {property:?} is not allowed in {context}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Where it appeared.
        context: crate::PropertyContext,
    },
    /// A property repeated where the specification allows it once.
    #[error("property {0:?} included more than once")]
    DuplicateProperty(PropertyId),
    /// A property value outside its range (for example Receive Maximum 0).
    #[error("invalid value {value} for property {property:?}")]
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// The value received.
        value: u32,
    },
    /// The property length runs past the packet.
    #[error("property length exceeds the packet")]
    PropertiesTooLong,
    /// More properties in one block than the decoder's limit ([`crate::DecodeLimits`]): well
    /// formed, but refused, since each takes some 140 bytes once decoded for 5 on the wire.
    #[error("more than {0} properties in one packet")]
    TooManyProperties(usize),
    /// More topic filters in a SUBSCRIBE or UNSUBSCRIBE than the decoder's limit: well
    /// formed, but refused.
    #[error("more than {max} topic filters in one {packet_type}")]
    TooManyTopicFilters {
        /// SUBSCRIBE or UNSUBSCRIBE.
        packet_type: PacketType,
        /// The limit.
        max: usize,
    },
    /// No Local set on a shared subscription [MQTT-3.8.3-4].
    #[error("No Local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A Response Topic with a wildcard character [MQTT-3.3.2-14]: a Protocol Error, as
    /// mosquitto has it.
    #[error("Response Topic with a wildcard character")]
    WildcardInResponseTopic,
    /// A 5.0 PUBLISH with an empty topic name and no Topic Alias [MQTT-3.3.2-1].
    #[error("PUBLISH with an empty topic and no topic alias")]
    EmptyTopicWithoutAlias,
}

impl DecodeError {
    /// The MQTT 5.0 reason code to send in CONNACK or DISCONNECT for this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
            // A topic that breaks the syntax of section 4.7 is not "correctly formed": 0x90 and
            // 0x8F are for names and filters that are, but are refused (MQTT 5.0 sections
            // 3.14.2.1, 3.9.3). Malformed, as mosquitto says too.
            InvalidTopicName(_) | InvalidTopicFilter(_) => ReasonCode::MalformedPacket,
            // [MQTT-2.2.1-3] names no code: mosquitto's, Malformed Packet for SUBSCRIBE and
            // UNSUBSCRIBE, Protocol Error for PUBLISH.
            ZeroPacketId(PacketType::Subscribe | PacketType::Unsubscribe) => ReasonCode::MalformedPacket,
            // [MQTT-3.3.2-8]: Topic Alias 0 is a Topic Alias invalid (0x94), as mosquitto says.
            InvalidPropertyValue { property: crate::PropertyId::TopicAlias, .. } => {
                ReasonCode::TopicAliasInvalid
            }
            ZeroPacketId(_)
            | NoTopicFilters(_)
            | InvalidRetainHandling
            | InvalidSubscriptionQoS
            | DuplicateProperty(_)
            | InvalidPropertyValue { .. }
            | NoLocalOnSharedSubscription
            | WildcardInResponseTopic
            | EmptyTopicWithoutAlias => ReasonCode::ProtocolError,
            // "An implementation or administrative imposed limit has been exceeded".
            TooManyProperties(_) | TooManyTopicFilters { .. } => ReasonCode::QuotaExceeded,
            RemainingLengthTooLong
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | InvalidQoS
            | DupWithQoS0
            | Truncated { .. }
            | IncompleteFrame
            | TrailingBytes { .. }
            | InvalidUtf8 { .. }
            | NullCharacter { .. }
            | DisallowedCharacter { .. }
            | InvalidVarInt { .. }
            | InvalidConnectFlags { .. }
            | InvalidConnAckFlags(_)
            | InvalidSubscriptionOptions(_)
            | InvalidReasonCode { .. }
            | InvalidReturnCode(_)
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | PropertiesTooLong => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be encoded.
///
/// Non-exhaustive, as [`DecodeError`] is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet needs a remaining length above 268,435,455 bytes.
    #[error("packet too large to encode: remaining length {0}")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes.
    #[error("{0} longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// A property the packet may not carry.
    #[error("property {property:?} is not allowed in {context}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// The packet or will.
        context: crate::PropertyContext,
    },
    /// QoS 1 or 2 with packet identifier 0, or a SUBSCRIBE/UNSUBSCRIBE with identifier 0.
    #[error("{0} needs a non-zero packet identifier")]
    ZeroPacketId(PacketType),
    /// A packet that does not exist in the version requested (AUTH before 5.0).
    #[error("{packet_type} does not exist in MQTT {version}")]
    WrongVersion {
        /// The packet.
        packet_type: PacketType,
        /// The version asked for.
        version: crate::ProtocolVersion,
    },
    /// A field combination or value the packet cannot carry (the message says which).
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
}
