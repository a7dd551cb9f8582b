//! Malformed and invalid packets, each with the exact [`DecodeError`] and the MQTT 5.0 reason
//! code a server sends for it, worked out from the OASIS MQTT 3.1.1 and 5.0 specifications.
//! Then the incremental-decoding properties: strict prefixes, several packets in one buffer,
//! and payloads that share the read buffer.
use midge_codec::{
    decode, decode_frame, ByteString, Bytes, BytesMut, DecodeError, Packet, PacketType, Property,
    PropertyContext, PropertyId, ProtocolVersion, QoS, ReasonCode, TopicError,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

const MAX: usize = 1 << 20;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A variable byte integer (section 1.5.5), in as few bytes as it takes.
fn varint(mut x: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (x % 128) as u8;
        x /= 128;
        out.push(if x > 0 { b | 0x80 } else { b });
        if x == 0 {
            return out;
        }
    }
}

/// A whole packet: the first byte, the remaining length computed from the body, the body.
fn frame(first: u8, body: &[&[u8]]) -> Vec<u8> {
    let body = body.concat();
    cat(&[&[first], &varint(body.len()), &body])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

struct Case {
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    max: usize,
    error: DecodeError,
    reason: ReasonCode,
}

fn case(
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    error: DecodeError,
    reason: ReasonCode,
) -> Case {
    Case { name, version, bytes, max: MAX, error, reason }
}

use DecodeError as E;
use ReasonCode::{
    MalformedPacket as MALFORMED, PacketTooLarge as TOO_LARGE, ProtocolError as PROTOCOL,
    UnsupportedProtocolVersion as UNSUPPORTED,
};

fn flags(packet_type: PacketType, flags: u8) -> DecodeError {
    E::InvalidHeaderFlags { packet_type, flags }
}

fn truncated(packet_type: PacketType, field: &'static str) -> DecodeError {
    E::Truncated { packet_type, field }
}

fn trailing(packet_type: PacketType, extra: usize) -> DecodeError {
    E::TrailingBytes { packet_type, extra }
}

fn connect_flags(flags: u8, why: &'static str) -> DecodeError {
    E::InvalidConnectFlags { flags, why }
}

fn not_allowed(property: PropertyId, context: PropertyContext) -> DecodeError {
    E::PropertyNotAllowed { property, context }
}

fn bad_value(property: PropertyId, value: u32) -> DecodeError {
    E::InvalidPropertyValue { property, value }
}

fn bad_reason(packet_type: PacketType, code: u8) -> DecodeError {
    E::InvalidReasonCode { packet_type, code }
}

/// The variable header of a 3.1.1 CONNECT up to the flags: protocol name "MQTT", level 4.
const MQTT4: &[u8] = &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
/// The same for 5.0.
const MQTT5: &[u8] = &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05];
/// Keep alive 60.
const KA: &[u8] = &[0x00, 0x3c];

/// A 5.0 QoS 0 PUBLISH to "t" with this property block (length computed) and payload "p".
fn publish5(properties: &[u8]) -> Vec<u8> {
    frame(0x30, &[&[0x00, 0x01, b't'], &[properties.len() as u8], properties, b"p"])
}

/// A 5.0 SUBSCRIBE, packet id 1, with this property block and one filter and options byte.
fn subscribe5(properties: &[u8], filter: &[u8], options: u8) -> Vec<u8> {
    frame(
        0x82,
        &[
            &[0x00, 0x01],
            &[properties.len() as u8],
            properties,
            &[0x00, filter.len() as u8],
            filter,
            &[options],
        ],
    )
}

/// A 3.1.1 SUBSCRIBE, packet id 1, of one filter.
fn subscribe311(filter: &[u8], options: u8) -> Vec<u8> {
    frame(0x82, &[&[0x00, 0x01], &[0x00, filter.len() as u8], filter, &[options]])
}

/// A 5.0 CONNECT, clean start, empty client id, with this property block.
fn connect5(properties: &[u8]) -> Vec<u8> {
    frame(0x10, &[MQTT5, &[0x02], KA, &[properties.len() as u8], properties, &[0x00, 0x00]])
}

fn cases() -> Vec<Case> {
    use PacketType as T;
    vec![
        // ---- Fixed header ------------------------------------------------------------------
        // 5.0 section 1.5.5 / 3.1.1 section 2.2.3: at most four remaining length bytes.
        case(
            "remaining length of 5 bytes",
            V3_1_1,
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
            E::RemainingLengthTooLong,
            MALFORMED,
        ),
        case(
            "remaining length 0 written in 5 bytes",
            V5,
            vec![0xc0, 0x80, 0x80, 0x80, 0x80, 0x00],
            E::RemainingLengthTooLong,
            MALFORMED,
        ),
        Case {
            name: "packet over max_packet_size, only the header has arrived",
            version: V5,
            // PUBLISH, remaining length 128: a packet of 131 bytes; nothing of the body yet.
            bytes: vec![0x30, 0x80, 0x01],
            max: 100,
            error: E::PacketTooLarge { size: 131, max: 100 },
            reason: TOO_LARGE,
        },
        case(
            "largest remaining length, header only, refused against 1 MiB",
            V3_1_1,
            vec![0x30, 0xff, 0xff, 0xff, 0x7f],
            E::PacketTooLarge { size: 268_435_460, max: MAX },
            TOO_LARGE,
        ),
        // Table 2-1: type 0 is reserved; 15 (AUTH) exists only from 5.0 on.
        case("reserved packet type 0", V5, vec![0x00, 0x00], E::ReservedPacketType(0), MALFORMED),
        case("AUTH in 3.1.1", V3_1_1, vec![0xf0, 0x00], E::ReservedPacketType(15), MALFORMED),
        case("AUTH in 3.1", V3_1, vec![0xf0, 0x00], E::ReservedPacketType(15), MALFORMED),
        // Table 2-2 / [MQTT-2.1.3-1]: reserved flag bits must have the listed values.
        case("PUBREL flags 0000", V3_1_1, vec![0x60, 0x02, 0x00, 0x01], flags(T::PubRel, 0), MALFORMED),
        case("PUBREL flags 0011", V5, vec![0x63, 0x02, 0x00, 0x01], flags(T::PubRel, 3), MALFORMED),
        case(
            "SUBSCRIBE flags 0000",
            V3_1_1,
            frame(0x80, &[&[0x00, 0x01, 0x00, 0x01, b'a', 0x00]]),
            flags(T::Subscribe, 0),
            MALFORMED,
        ),
        case(
            "UNSUBSCRIBE flags 0011",
            V5,
            frame(0xa3, &[&[0x00, 0x01, 0x00, 0x00, 0x01, b'a']]),
            flags(T::Unsubscribe, 3),
            MALFORMED,
        ),
        case(
            "CONNECT flags 0001",
            V3_1_1,
            frame(0x11, &[MQTT4, &[0x02], KA, &[0x00, 0x00]]),
            flags(T::Connect, 1),
            MALFORMED,
        ),
        case("CONNACK flags 0001", V3_1_1, vec![0x21, 0x02, 0x00, 0x00], flags(T::ConnAck, 1), MALFORMED),
        case("PUBACK flags 0010", V5, vec![0x42, 0x02, 0x00, 0x01], flags(T::PubAck, 2), MALFORMED),
        case("PINGREQ flags 0001", V3_1_1, vec![0xc1, 0x00], flags(T::PingReq, 1), MALFORMED),
        case("PINGRESP flags 1000", V5, vec![0xd8, 0x00], flags(T::PingResp, 8), MALFORMED),
        case("DISCONNECT flags 0010", V5, vec![0xe2, 0x00], flags(T::Disconnect, 2), MALFORMED),
        case("AUTH flags 0001", V5, vec![0xf1, 0x00], flags(T::Auth, 1), MALFORMED),
        // [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet.
        case(
            "PUBLISH QoS 3",
            V5,
            frame(0x36, &[&[0x00, 0x01, b't', 0x00, 0x01, 0x00]]),
            E::InvalidQoS,
            MALFORMED,
        ),
        // [MQTT-3.3.1-2]: DUP must be 0 at QoS 0.
        case("DUP on QoS 0", V3_1_1, frame(0x38, &[&[0x00, 0x01, b't']]), E::DupWithQoS0, MALFORMED),
        // ---- Truncated fields: the remaining length ends before a field does ----------------
        case(
            "PUBACK without a whole packet identifier",
            V3_1_1,
            vec![0x40, 0x01, 0x00],
            truncated(T::PubAck, "packet identifier"),
            MALFORMED,
        ),
        case(
            "PUBLISH topic longer than the packet",
            V3_1_1,
            frame(0x30, &[&[0x00, 0x05, b'a']]),
            truncated(T::Publish, "topic name"),
            MALFORMED,
        ),
        case(
            "QoS 1 PUBLISH without packet identifier",
            V3_1_1,
            frame(0x32, &[&[0x00, 0x02, b'a', b'b']]),
            truncated(T::Publish, "packet identifier"),
            MALFORMED,
        ),
        case(
            "CONNECT cut inside the protocol name",
            V3_1_1,
            frame(0x10, &[&[0x00, 0x04, b'M', b'Q']]),
            truncated(T::Connect, "protocol name"),
            MALFORMED,
        ),
        case(
            "CONNECT without client identifier",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x02], KA]),
            truncated(T::Connect, "client identifier"),
            MALFORMED,
        ),
        case(
            "CONNECT with will flag but no will topic",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x06], KA, &[0x00, 0x00]]),
            truncated(T::Connect, "will topic"),
            MALFORMED,
        ),
        case(
            "CONNECT with user name flag but no user name",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x82], KA, &[0x00, 0x00]]),
            truncated(T::Connect, "user name"),
            MALFORMED,
        ),
        case(
            "5.0 CONNACK without property length",
            V5,
            vec![0x20, 0x02, 0x00, 0x00],
            truncated(T::ConnAck, "property length"),
            MALFORMED,
        ),
        case(
            "SUBACK without return codes",
            V3_1_1,
            vec![0x90, 0x02, 0x00, 0x01],
            truncated(T::SubAck, "return codes"),
            MALFORMED,
        ),
        case(
            "5.0 UNSUBACK without reason codes",
            V5,
            vec![0xb0, 0x03, 0x00, 0x01, 0x00],
            truncated(T::UnsubAck, "reason codes"),
            MALFORMED,
        ),
        case(
            "property value shorter than its type",
            V5,
            // Message Expiry Interval with 2 of its 4 bytes.
            frame(0x30, &[&[0x00, 0x01, b't'], &[0x03, 0x02, 0x00, 0x00]]),
            truncated(T::Publish, "property value"),
            MALFORMED,
        ),
        case(
            "property length cut off by the end of the packet",
            V5,
            frame(0x30, &[&[0x00, 0x01, b't'], &[0x80]]),
            truncated(T::Publish, "property length"),
            MALFORMED,
        ),
        // ---- Trailing bytes ------------------------------------------------------------------
        case("PINGREQ with a body", V3_1_1, vec![0xc0, 0x01, 0x00], trailing(T::PingReq, 1), MALFORMED),
        case(
            "3.1.1 PUBACK with a third byte",
            V3_1_1,
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            trailing(T::PubAck, 1),
            MALFORMED,
        ),
        case(
            "3.1.1 DISCONNECT with a body",
            V3_1_1,
            vec![0xe0, 0x01, 0x00],
            trailing(T::Disconnect, 1),
            MALFORMED,
        ),
        case(
            "3.1.1 UNSUBACK with a payload",
            V3_1_1,
            vec![0xb0, 0x03, 0x00, 0x01, 0x00],
            trailing(T::UnsubAck, 1),
            MALFORMED,
        ),
        case(
            "CONNECT with a byte after the last field",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x02], KA, &[0x00, 0x00], &[0xff]]),
            trailing(T::Connect, 1),
            MALFORMED,
        ),
        case(
            "5.0 DISCONNECT with a byte after the properties",
            V5,
            vec![0xe0, 0x03, 0x00, 0x00, 0x00],
            trailing(T::Disconnect, 1),
            MALFORMED,
        ),
        case(
            "5.0 PUBACK with a byte after the properties",
            V5,
            vec![0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            trailing(T::PubAck, 1),
            MALFORMED,
        ),
        // ---- UTF-8 (5.0 section 1.5.4 / 3.1.1 section 1.5.3) ---------------------------------
        case(
            "ill-formed UTF-8 in a topic",
            V3_1_1,
            frame(0x30, &[&[0x00, 0x02, 0xc3, 0x28]]),
            E::InvalidUtf8 { field: "topic name" },
            MALFORMED,
        ),
        case(
            "encoded surrogate U+D800 (ED A0 80) in a topic [MQTT-1.5.4-1]",
            V5,
            frame(0x30, &[&[0x00, 0x03, 0xed, 0xa0, 0x80], &[0x00]]),
            E::InvalidUtf8 { field: "topic name" },
            MALFORMED,
        ),
        case(
            "overlong encoding of '/' in a client identifier",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x02], KA, &[0x00, 0x02, 0xc0, 0xaf]]),
            E::InvalidUtf8 { field: "client identifier" },
            MALFORMED,
        ),
        case(
            "ill-formed UTF-8 in a user property name [MQTT-1.5.7-1]",
            V5,
            publish5(&[0x26, 0x00, 0x01, 0xff, 0x00, 0x01, b'v']),
            E::InvalidUtf8 { field: "User Property name" },
            MALFORMED,
        ),
        case(
            "ill-formed UTF-8 in a topic filter",
            V3_1_1,
            subscribe311(&[0x61, 0xfe], 0x00),
            E::InvalidUtf8 { field: "topic filter" },
            MALFORMED,
        ),
        case(
            "U+0000 in a topic [MQTT-1.5.4-2]",
            V3_1_1,
            frame(0x30, &[&[0x00, 0x03, b'a', 0x00, b'b']]),
            E::NullCharacter { field: "topic name" },
            MALFORMED,
        ),
        case(
            "U+0000 in a client identifier",
            V5,
            frame(0x10, &[MQTT5, &[0x02], KA, &[0x00], &[0x00, 0x01, 0x00]]),
            E::NullCharacter { field: "client identifier" },
            MALFORMED,
        ),
        case(
            "a line break U+000A in a client identifier (mosquitto: malformed UTF-8)",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x02], KA, &[0x00, 0x03, b'a', b'\n', b'b']]),
            E::DisallowedCharacter { field: "client identifier", code_point: 0x0a },
            MALFORMED,
        ),
        case(
            "DEL U+007F in a topic",
            V3_1_1,
            frame(0x30, &[&[0x00, 0x02, b'a', 0x7f]]),
            E::DisallowedCharacter { field: "topic name", code_point: 0x7f },
            MALFORMED,
        ),
        case(
            "C1 control U+0085 (C2 85) in a topic filter",
            V3_1_1,
            subscribe311(&[b'a', 0xc2, 0x85], 0x00),
            E::DisallowedCharacter { field: "topic filter", code_point: 0x85 },
            MALFORMED,
        ),
        case(
            "non-character U+FDD0 (EF B7 90) in a user property value",
            V5,
            publish5(&[0x26, 0x00, 0x01, b'k', 0x00, 0x03, 0xef, 0xb7, 0x90]),
            E::DisallowedCharacter { field: "User Property value", code_point: 0xfdd0 },
            MALFORMED,
        ),
        case(
            "non-character U+1FFFF (F0 9F BF BF) in a topic",
            V5,
            frame(0x30, &[&[0x00, 0x04, 0xf0, 0x9f, 0xbf, 0xbf], &[0x00]]),
            E::DisallowedCharacter { field: "topic name", code_point: 0x1ffff },
            MALFORMED,
        ),
        // ---- CONNECT protocol and flags (section 3.1.2) ---------------------------------------
        case(
            "unknown protocol name",
            V3_1_1,
            frame(0x10, &[&[0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02], KA, &[0x00, 0x00]]),
            E::UnsupportedProtocol { name: "MQTX".into(), level: 4 },
            UNSUPPORTED,
        ),
        case(
            "protocol level 6",
            V5,
            frame(0x10, &[&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02], KA, &[0x00, 0x00, 0x00]]),
            E::UnsupportedProtocol { name: "MQTT".into(), level: 6 },
            UNSUPPORTED,
        ),
        case(
            "MQIsdp with level 4",
            V3_1,
            frame(0x10, &[&[0x00, 0x06], b"MQIsdp", &[0x04, 0x02], KA, &[0x00, 0x01, b'c']]),
            E::UnsupportedProtocol { name: "MQIsdp".into(), level: 4 },
            UNSUPPORTED,
        ),
        case(
            "MQTT with level 3",
            V3_1_1,
            frame(0x10, &[&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02], KA, &[0x00, 0x01, b'c']]),
            E::UnsupportedProtocol { name: "MQTT".into(), level: 3 },
            UNSUPPORTED,
        ),
        case(
            "CONNECT reserved flag set [MQTT-3.1.2-3]",
            V5,
            frame(0x10, &[MQTT5, &[0x03], KA, &[0x00], &[0x00, 0x00]]),
            connect_flags(0x03, "reserved bit set"),
            MALFORMED,
        ),
        case(
            "will QoS 3 [MQTT-3.1.2-12]",
            V5,
            frame(
                0x10,
                &[MQTT5, &[0x1e], KA, &[0x00], &[0x00, 0x00], &[0x00], &[0x00, 0x01, b't'], &[0x00, 0x00]],
            ),
            connect_flags(0x1e, "will QoS 3"),
            MALFORMED,
        ),
        case(
            "will QoS 3 in 3.1.1",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x1e], KA, &[0x00, 0x00], &[0x00, 0x01, b't'], &[0x00, 0x00]]),
            connect_flags(0x1e, "will QoS 3"),
            MALFORMED,
        ),
        case(
            "will retain without will [MQTT-3.1.2-13]",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x22], KA, &[0x00, 0x00]]),
            connect_flags(0x22, "will QoS or retain set without a will"),
            MALFORMED,
        ),
        case(
            "will QoS 1 without will [MQTT-3.1.2-11]",
            V5,
            frame(0x10, &[MQTT5, &[0x0a], KA, &[0x00], &[0x00, 0x00]]),
            connect_flags(0x0a, "will QoS or retain set without a will"),
            MALFORMED,
        ),
        case(
            "3.1.1 password without user name [MQTT-3.1.2-22]",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x42], KA, &[0x00, 0x00], &[0x00, 0x02, b'p', b'w']]),
            connect_flags(0x42, "password without user name"),
            MALFORMED,
        ),
        // ---- Topic names (section 4.7, [MQTT-3.3.2-2]) ---------------------------------------
        case(
            "'+' in a PUBLISH topic",
            V3_1_1,
            frame(0x30, &[&[0x00, 0x03, b'a', b'/', b'+']]),
            E::InvalidTopicName(TopicError::WildcardInName),
            MALFORMED,
        ),
        case(
            "'#' in a 5.0 PUBLISH topic",
            V5,
            frame(0x30, &[&[0x00, 0x03, b'a', b'/', b'#'], &[0x00]]),
            E::InvalidTopicName(TopicError::WildcardInName),
            MALFORMED,
        ),
        case(
            "wildcard in a will topic",
            V3_1_1,
            frame(0x10, &[MQTT4, &[0x06], KA, &[0x00, 0x00], &[0x00, 0x01, b'#'], &[0x00, 0x00]]),
            E::InvalidTopicName(TopicError::WildcardInName),
            MALFORMED,
        ),
        case(
            "empty topic in 3.1.1 [MQTT-4.7.3-1]",
            V3_1_1,
            vec![0x30, 0x02, 0x00, 0x00],
            E::InvalidTopicName(TopicError::Empty),
            MALFORMED,
        ),
        case(
            "5.0 PUBLISH with empty topic and no Topic Alias",
            V5,
            vec![0x30, 0x03, 0x00, 0x00, 0x00],
            E::EmptyTopicWithoutAlias,
            PROTOCOL,
        ),
        // ---- Packet identifiers ([MQTT-2.2.1-3], 3.1.1 [MQTT-2.3.1-1]) -----------------------
        case(
            "QoS 1 PUBLISH with packet identifier 0",
            V3_1_1,
            frame(0x32, &[&[0x00, 0x01, b't', 0x00, 0x00]]),
            E::ZeroPacketId(T::Publish),
            PROTOCOL,
        ),
        case(
            "QoS 2 PUBLISH with packet identifier 0",
            V5,
            frame(0x34, &[&[0x00, 0x01, b't', 0x00, 0x00, 0x00]]),
            E::ZeroPacketId(T::Publish),
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE with packet identifier 0",
            V3_1_1,
            frame(0x82, &[&[0x00, 0x00, 0x00, 0x01, b'a', 0x00]]),
            E::ZeroPacketId(T::Subscribe),
            MALFORMED,
        ),
        case(
            "UNSUBSCRIBE with packet identifier 0",
            V3_1_1,
            frame(0xa2, &[&[0x00, 0x00, 0x00, 0x01, b'a']]),
            E::ZeroPacketId(T::Unsubscribe),
            MALFORMED,
        ),
        case(
            "PUBACK with packet identifier 0",
            V3_1_1,
            vec![0x40, 0x02, 0x00, 0x00],
            E::ZeroPacketId(T::PubAck),
            PROTOCOL,
        ),
        case(
            "PUBREL with packet identifier 0",
            V5,
            vec![0x62, 0x02, 0x00, 0x00],
            E::ZeroPacketId(T::PubRel),
            PROTOCOL,
        ),
        // ---- SUBSCRIBE / UNSUBSCRIBE payloads --------------------------------------------------
        case(
            "3.1.1 SUBSCRIBE without filters [MQTT-3.8.3-3]",
            V3_1_1,
            vec![0x82, 0x02, 0x00, 0x01],
            E::NoTopicFilters(T::Subscribe),
            PROTOCOL,
        ),
        case(
            "5.0 SUBSCRIBE without filters [MQTT-3.8.3-2]",
            V5,
            vec![0x82, 0x03, 0x00, 0x01, 0x00],
            E::NoTopicFilters(T::Subscribe),
            PROTOCOL,
        ),
        case(
            "3.1.1 UNSUBSCRIBE without filters [MQTT-3.10.3-2]",
            V3_1_1,
            vec![0xa2, 0x02, 0x00, 0x01],
            E::NoTopicFilters(T::Unsubscribe),
            PROTOCOL,
        ),
        case(
            "5.0 UNSUBSCRIBE with properties but no filters",
            V5,
            frame(0xa2, &[&[0x00, 0x01], &[0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']]),
            E::NoTopicFilters(T::Unsubscribe),
            PROTOCOL,
        ),
        case(
            "filter a/#/b [MQTT-4.7.1-1]",
            V5,
            subscribe5(&[], b"a/#/b", 0x00),
            E::InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard),
            MALFORMED,
        ),
        case(
            "filter a+ [MQTT-4.7.1-2]",
            V3_1_1,
            subscribe311(b"a+", 0x00),
            E::InvalidTopicFilter(TopicError::MisplacedSingleLevelWildcard),
            MALFORMED,
        ),
        case(
            "filter $share//x: empty share name [MQTT-4.8.2-1]",
            V5,
            subscribe5(&[], b"$share//x", 0x00),
            E::InvalidTopicFilter(TopicError::InvalidShareName),
            MALFORMED,
        ),
        case(
            "filter $share/g: no topic filter after the share name [MQTT-4.8.2-2]",
            V5,
            subscribe5(&[], b"$share/g", 0x00),
            E::InvalidTopicFilter(TopicError::MissingSharedFilter),
            MALFORMED,
        ),
        case(
            "filter $share/g+/x: wildcard in the share name [MQTT-4.8.2-1]",
            V5,
            subscribe5(&[], b"$share/g+/x", 0x00),
            E::InvalidTopicFilter(TopicError::InvalidShareName),
            MALFORMED,
        ),
        case(
            "empty filter in UNSUBSCRIBE",
            V3_1_1,
            frame(0xa2, &[&[0x00, 0x01, 0x00, 0x00]]),
            E::InvalidTopicFilter(TopicError::Empty),
            MALFORMED,
        ),
        case(
            "filter a/b# in UNSUBSCRIBE",
            V5,
            frame(0xa2, &[&[0x00, 0x01, 0x00], &[0x00, 0x04, b'a', b'/', b'b', b'#']]),
            E::InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard),
            MALFORMED,
        ),
        // Subscription options: 3.1.1 [MQTT-3.8.3-4] bits 7-2 reserved; 5.0 [MQTT-3.8.3-5] bits 7-6.
        case(
            "3.1.1 subscription options with bit 2 set",
            V3_1_1,
            subscribe311(b"a", 0x04),
            E::InvalidSubscriptionOptions(0x04),
            MALFORMED,
        ),
        case(
            "3.1.1 subscription options with bit 7 set",
            V3_1_1,
            subscribe311(b"a", 0x81),
            E::InvalidSubscriptionOptions(0x81),
            MALFORMED,
        ),
        case(
            "5.0 subscription options with bit 6 set",
            V5,
            subscribe5(&[], b"a", 0x40),
            E::InvalidSubscriptionOptions(0x40),
            MALFORMED,
        ),
        case(
            "retain handling 3 (section 3.8.3.1)",
            V5,
            subscribe5(&[], b"a", 0x30),
            E::InvalidRetainHandling,
            PROTOCOL,
        ),
        case(
            "maximum QoS 3 in 5.0 subscription options (section 3.8.3.1)",
            V5,
            subscribe5(&[], b"a", 0x03),
            E::InvalidSubscriptionQoS,
            PROTOCOL,
        ),
        case(
            "requested QoS 3 in 3.1.1 SUBSCRIBE",
            V3_1_1,
            subscribe311(b"a", 0x03),
            E::InvalidSubscriptionQoS,
            PROTOCOL,
        ),
        case(
            "No Local on a shared subscription [MQTT-3.8.3-4]",
            V5,
            subscribe5(&[], b"$share/g/x", 0x04),
            E::NoLocalOnSharedSubscription,
            PROTOCOL,
        ),
        // ---- Reason codes not valid for the packet ---------------------------------------------
        case("PUBACK 0x92", V5, vec![0x40, 0x03, 0x00, 0x01, 0x92], bad_reason(T::PubAck, 0x92), MALFORMED),
        case("PUBREC 0x04", V5, vec![0x50, 0x03, 0x00, 0x01, 0x04], bad_reason(T::PubRec, 0x04), MALFORMED),
        case("PUBREL 0x10", V5, vec![0x62, 0x03, 0x00, 0x01, 0x10], bad_reason(T::PubRel, 0x10), MALFORMED),
        case("PUBCOMP 0x80", V5, vec![0x70, 0x03, 0x00, 0x01, 0x80], bad_reason(T::PubComp, 0x80), MALFORMED),
        case("DISCONNECT 0x01", V5, vec![0xe0, 0x01, 0x01], bad_reason(T::Disconnect, 0x01), MALFORMED),
        case(
            "DISCONNECT 0x05 (undefined)",
            V5,
            vec![0xe0, 0x01, 0x05],
            bad_reason(T::Disconnect, 0x05),
            MALFORMED,
        ),
        case("AUTH 0x04", V5, vec![0xf0, 0x01, 0x04], bad_reason(T::Auth, 0x04), MALFORMED),
        case(
            "5.0 SUBACK 0x03",
            V5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x03],
            bad_reason(T::SubAck, 0x03),
            MALFORMED,
        ),
        case(
            "3.1.1 SUBACK 0x87",
            V3_1_1,
            vec![0x90, 0x03, 0x00, 0x01, 0x87],
            bad_reason(T::SubAck, 0x87),
            MALFORMED,
        ),
        case(
            "5.0 UNSUBACK 0x01",
            V5,
            vec![0xb0, 0x04, 0x00, 0x01, 0x00, 0x01],
            bad_reason(T::UnsubAck, 0x01),
            MALFORMED,
        ),
        case(
            "5.0 CONNACK 0x10",
            V5,
            vec![0x20, 0x03, 0x00, 0x10, 0x00],
            bad_reason(T::ConnAck, 0x10),
            MALFORMED,
        ),
        case(
            "3.1.1 CONNACK return code 6",
            V3_1_1,
            vec![0x20, 0x02, 0x00, 0x06],
            E::InvalidReturnCode(6),
            MALFORMED,
        ),
        case(
            "CONNACK reserved flag bit 1 [MQTT-3.2.2-1]",
            V3_1_1,
            vec![0x20, 0x02, 0x02, 0x00],
            E::InvalidConnAckFlags(0x02),
            MALFORMED,
        ),
        case(
            "5.0 CONNACK reserved flag bit 7",
            V5,
            vec![0x20, 0x03, 0x80, 0x00, 0x00],
            E::InvalidConnAckFlags(0x80),
            MALFORMED,
        ),
        // ---- Properties (5.0 section 2.2.2) ----------------------------------------------------
        case("unknown property 0x05", V5, publish5(&[0x05, 0x00]), E::UnknownProperty(0x05), MALFORMED),
        case("unknown property 0x00", V5, connect5(&[0x00, 0x00]), E::UnknownProperty(0x00), MALFORMED),
        case(
            "unknown property 0x2b",
            V5,
            vec![0xe0, 0x03, 0x00, 0x01, 0x2b],
            E::UnknownProperty(0x2b),
            MALFORMED,
        ),
        case(
            "Topic Alias in CONNECT (section 2.2.2.2)",
            V5,
            connect5(&[0x23, 0x00, 0x01]),
            not_allowed(PropertyId::TopicAlias, PropertyContext::Connect),
            MALFORMED,
        ),
        case(
            "Will Delay Interval in PUBLISH",
            V5,
            publish5(&[0x18, 0x00, 0x00, 0x00, 0x01]),
            not_allowed(PropertyId::WillDelayInterval, PropertyContext::Publish),
            MALFORMED,
        ),
        case(
            "Session Expiry Interval in will properties",
            V5,
            frame(
                0x10,
                &[
                    MQTT5,
                    &[0x06],
                    KA,
                    &[0x00],
                    &[0x00, 0x00],
                    &[0x05, 0x11, 0x00, 0x00, 0x00, 0x01],
                    &[0x00, 0x01, b't'],
                    &[0x00, 0x00],
                ],
            ),
            not_allowed(PropertyId::SessionExpiryInterval, PropertyContext::Will),
            MALFORMED,
        ),
        case(
            "Reason String in PUBLISH",
            V5,
            publish5(&[0x1f, 0x00, 0x01, b'r']),
            not_allowed(PropertyId::ReasonString, PropertyContext::Publish),
            MALFORMED,
        ),
        case(
            "Subscription Identifier in UNSUBSCRIBE",
            V5,
            frame(0xa2, &[&[0x00, 0x01], &[0x02, 0x0b, 0x01], &[0x00, 0x01, b'a']]),
            not_allowed(PropertyId::SubscriptionIdentifier, PropertyContext::Unsubscribe),
            MALFORMED,
        ),
        case(
            "two Message Expiry Intervals",
            V5,
            publish5(&[0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x02]),
            E::DuplicateProperty(PropertyId::MessageExpiryInterval),
            PROTOCOL,
        ),
        case(
            "two Session Expiry Intervals in DISCONNECT",
            V5,
            frame(0xe0, &[&[0x00, 0x0a], &[0x11, 0x00, 0x00, 0x00, 0x01], &[0x11, 0x00, 0x00, 0x00, 0x02]]),
            E::DuplicateProperty(PropertyId::SessionExpiryInterval),
            PROTOCOL,
        ),
        case(
            "two Reason Strings in PUBACK",
            V5,
            frame(0x40, &[&[0x00, 0x01, 0x00, 0x08], &[0x1f, 0x00, 0x01, b'a', 0x1f, 0x00, 0x01, b'b']]),
            E::DuplicateProperty(PropertyId::ReasonString),
            PROTOCOL,
        ),
        case(
            "two Subscription Identifiers in SUBSCRIBE (section 3.8.2.1.2)",
            V5,
            subscribe5(&[0x0b, 0x01, 0x0b, 0x02], b"a", 0x00),
            E::DuplicateProperty(PropertyId::SubscriptionIdentifier),
            PROTOCOL,
        ),
        case(
            "Receive Maximum 0",
            V5,
            connect5(&[0x21, 0x00, 0x00]),
            bad_value(PropertyId::ReceiveMaximum, 0),
            PROTOCOL,
        ),
        case(
            "Maximum Packet Size 0",
            V5,
            connect5(&[0x27, 0x00, 0x00, 0x00, 0x00]),
            bad_value(PropertyId::MaximumPacketSize, 0),
            PROTOCOL,
        ),
        case(
            "Request Problem Information 2",
            V5,
            connect5(&[0x17, 0x02]),
            bad_value(PropertyId::RequestProblemInformation, 2),
            PROTOCOL,
        ),
        case(
            "Maximum QoS 2 in CONNACK",
            V5,
            vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
            bad_value(PropertyId::MaximumQoS, 2),
            PROTOCOL,
        ),
        case(
            "Payload Format Indicator 2",
            V5,
            publish5(&[0x01, 0x02]),
            bad_value(PropertyId::PayloadFormatIndicator, 2),
            PROTOCOL,
        ),
        case(
            "Topic Alias 0",
            V5,
            publish5(&[0x23, 0x00, 0x00]),
            bad_value(PropertyId::TopicAlias, 0),
            ReasonCode::TopicAliasInvalid,
        ),
        case(
            "Subscription Identifier 0",
            V5,
            subscribe5(&[0x0b, 0x00], b"a", 0x00),
            bad_value(PropertyId::SubscriptionIdentifier, 0),
            PROTOCOL,
        ),
        case(
            "property length exceeding the packet",
            V5,
            frame(0x30, &[&[0x00, 0x01, b't'], &[0x0a, 0x01, 0x01]]),
            E::PropertiesTooLong,
            MALFORMED,
        ),
        case(
            "CONNACK property length exceeding the packet",
            V5,
            vec![0x20, 0x05, 0x00, 0x00, 0x7f, 0x24, 0x01],
            E::PropertiesTooLong,
            MALFORMED,
        ),
        case(
            "property identifier VBI longer than 4 bytes",
            V5,
            publish5(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            E::InvalidVarInt { field: "property identifier" },
            MALFORMED,
        ),
        case(
            "Subscription Identifier VBI longer than 4 bytes",
            V5,
            subscribe5(&[0x0b, 0xff, 0xff, 0xff, 0xff, 0x01], b"a", 0x00),
            E::InvalidVarInt { field: "Subscription Identifier" },
            MALFORMED,
        ),
        case(
            "property length VBI longer than 4 bytes",
            V5,
            frame(0x30, &[&[0x00, 0x01, b't'], &[0x80, 0x80, 0x80, 0x80, 0x01]]),
            E::InvalidVarInt { field: "property length" },
            MALFORMED,
        ),
        // [MQTT-3.3.2-14]: a Response Topic is a topic name, without wildcards.
        case(
            "Response Topic with a # wildcard",
            V5,
            publish5(&[0x08, 0x00, 0x03, b'a', b'/', b'#']),
            E::WildcardInResponseTopic,
            PROTOCOL,
        ),
        case(
            "Response Topic with a + wildcard",
            V5,
            publish5(&[0x08, 0x00, 0x03, b'+', b'/', b'a']),
            E::WildcardInResponseTopic,
            PROTOCOL,
        ),
        // [MQTT-1.5.5-1]: a Variable Byte Integer in more bytes than its value needs.
        case(
            "property length 0 written in 2 bytes",
            V5,
            frame(0x30, &[&[0x00, 0x01, b't'], &[0x80, 0x00]]),
            E::InvalidVarInt { field: "property length" },
            MALFORMED,
        ),
        case(
            "Subscription Identifier 1 written in 2 bytes",
            V5,
            subscribe5(&[0x0b, 0x81, 0x00], b"a", 0x00),
            E::InvalidVarInt { field: "Subscription Identifier" },
            MALFORMED,
        ),
        case(
            "property identifier 1 written in 2 bytes",
            V5,
            publish5(&[0x81, 0x00, 0x00]),
            E::InvalidVarInt { field: "property identifier" },
            MALFORMED,
        ),
    ]
}

#[test]
fn malformed_table() {
    let cases = cases();
    assert!(cases.len() >= 45, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let what = format!("{} ({}, {})", c.name, c.version, hex(&c.bytes));
        let before = BytesMut::from(&c.bytes[..]);
        let mut buf = before.clone();
        let got = decode(&mut buf, c.version, c.max);
        if got != Err(c.error.clone()) {
            failures.push(format!("{what}:\n    decode       {got:?}\n    expected Err({:?})", c.error));
        }
        let framed = decode_frame(Bytes::copy_from_slice(&c.bytes), c.version, c.max);
        if framed != Err(c.error.clone()) {
            failures.push(format!("{what}:\n    decode_frame {framed:?}\n    expected Err({:?})", c.error));
        }
        if c.error.reason_code() != c.reason {
            failures.push(format!(
                "{what}: reason code {:?}, expected {:?}",
                c.error.reason_code(),
                c.reason
            ));
        }
        if !c.reason.is_error() {
            failures.push(format!("{what}: {:?} is not an error code", c.reason));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Packet size limit, decided from the fixed header alone
// ---------------------------------------------------------------------------------------------

#[test]
fn oversized_packet_is_refused_before_its_body_arrives() {
    // A PUBLISH announcing 16384 bytes of body: with a limit of 1000 the first four bytes
    // (header and not one byte more) are enough to refuse it.
    let header = [0x30, 0x80, 0x80, 0x01];
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(decode(&mut buf, V5, 1000), Err(E::PacketTooLarge { size: 16_388, max: 1000 }));
    assert_eq!(E::PacketTooLarge { size: 16_388, max: 1000 }.reason_code(), ReasonCode::PacketTooLarge);

    // With a limit large enough, the same bytes are only an incomplete packet.
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(decode(&mut buf, V5, 16_388), Ok(None));
    assert_eq!(&buf[..], &header[..]);
}

#[test]
fn the_first_byte_alone_names_the_packet_and_checks_its_flags() {
    use midge_codec::FixedHeader;
    // What a server needs before a client's first packet has more than one byte: a first
    // packet that is not CONNECT is refused there [MQTT-3.1.0-1].
    assert_eq!(FixedHeader::packet_type_of(0x10, V5), Ok(PacketType::Connect));
    assert_eq!(FixedHeader::packet_type_of(0x3d, V3_1_1), Ok(PacketType::Publish));
    assert_eq!(FixedHeader::packet_type_of(0x62, V3_1_1), Ok(PacketType::PubRel));
    assert_eq!(FixedHeader::packet_type_of(0xf0, V5), Ok(PacketType::Auth));
    // Table 2-2's flags, AUTH before 5.0 and type 0 are refused as the whole header is.
    assert_eq!(FixedHeader::packet_type_of(0x60, V5), Err(flags(PacketType::PubRel, 0)));
    assert_eq!(FixedHeader::packet_type_of(0x36, V5), Err(E::InvalidQoS));
    assert_eq!(FixedHeader::packet_type_of(0xf0, V3_1_1), Err(E::ReservedPacketType(15)));
    assert_eq!(FixedHeader::packet_type_of(0x00, V5), Err(E::ReservedPacketType(0)));
}

#[test]
fn packet_exactly_at_the_limit_is_accepted() {
    // PINGREQ is 2 bytes; a PUBLISH of 8 bytes: one byte over is refused, exactly is fine.
    let publish = [0x30, 0x06, 0x00, 0x01, b't', b'a', b'b', b'c'];
    let mut buf = BytesMut::from(&publish[..]);
    assert_eq!(decode(&mut buf, V3_1_1, 7), Err(E::PacketTooLarge { size: 8, max: 7 }));
    let mut buf = BytesMut::from(&publish[..]);
    assert!(matches!(decode(&mut buf, V3_1_1, 8), Ok(Some(Packet::Publish(_)))));
    assert!(buf.is_empty());
}

#[test]
fn decode_frame_reports_incomplete_and_extra_bytes() {
    // Header only.
    assert_eq!(decode_frame(Bytes::from_static(&[0x30]), V5, MAX), Err(E::IncompleteFrame));
    // Remaining length says 4, 2 present.
    assert_eq!(decode_frame(Bytes::from_static(&[0x40, 0x04, 0x00, 0x01]), V5, MAX), Err(E::IncompleteFrame));
    // A PINGREQ followed by another byte.
    assert_eq!(
        decode_frame(Bytes::from_static(&[0xc0, 0x00, 0xc0]), V5, MAX),
        Err(E::TrailingBytes { packet_type: PacketType::PingReq, extra: 1 })
    );
}

// ---------------------------------------------------------------------------------------------
// Valid inputs next to the invalid ones
// ---------------------------------------------------------------------------------------------

fn decode_one(version: ProtocolVersion, bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, MAX)
        .unwrap_or_else(|e| panic!("{} should decode in {version}: {e:?}", hex(bytes)))
        .expect("complete packet");
    assert!(buf.is_empty());
    p
}

#[test]
fn byte_order_mark_is_kept_not_stripped() {
    // [MQTT-1.5.4-3]: EF BB BF is U+FEFF wherever it appears and is never skipped or stripped.
    let bytes = [
        0x30, 0x06, // PUBLISH QoS 0; remaining length 6
        0x00, 0x04, 0xef, 0xbb, 0xbf, b'a', // topic "\u{FEFF}a"
    ];
    let Packet::Publish(p) = decode_one(V3_1_1, &bytes) else { panic!("not a PUBLISH") };
    assert_eq!(&p.topic[..], "\u{feff}a");
    assert_eq!(p.topic.len(), 4);
    assert_eq!(Packet::Publish(p).to_bytes(V3_1_1).unwrap(), &bytes[..]);
}

#[test]
fn password_without_user_name_is_allowed_in_5_0_only() {
    // 5.0 section 3.1.2.9 allows it; 3.1.1 [MQTT-3.1.2-22] does not (see the table).
    let bytes = frame(0x10, &[MQTT5, &[0x42], KA, &[0x00], &[0x00, 0x00], &[0x00, 0x02, b'p', b'w']]);
    let Packet::Connect(c) = decode_one(V5, &bytes) else { panic!("not a CONNECT") };
    assert_eq!(c.username, None);
    assert_eq!(c.password, Some(Bytes::from_static(b"pw")));
    // The same flags at level 4 are refused.
    let bytes = frame(0x10, &[MQTT4, &[0x42], KA, &[0x00, 0x00], &[0x00, 0x02, b'p', b'w']]);
    assert_eq!(
        decode(&mut BytesMut::from(&bytes[..]), V3_1_1, MAX),
        Err(E::InvalidConnectFlags { flags: 0x42, why: "password without user name" })
    );
}

#[test]
fn repeated_user_properties_are_fine_and_keep_their_order() {
    let user = |k: u8, v: u8| [0x26, 0x00, 0x01, k, 0x00, 0x01, v];
    let props = cat(&[&user(b'a', b'1'), &user(b'a', b'2'), &user(b'b', b'3')]);
    // In CONNECT...
    let Packet::Connect(c) = decode_one(V5, &connect5(&props)) else { panic!() };
    let got: Vec<_> = c.properties.user_properties().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(got, ["a=1", "a=2", "b=3"]);
    // ...and in PUBLISH.
    let Packet::Publish(p) = decode_one(V5, &publish5(&props)) else { panic!() };
    let got: Vec<_> = p.properties.user_properties().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(got, ["a=1", "a=2", "b=3"]);
}

#[test]
fn subscription_identifier_may_repeat_in_publish_only() {
    // [MQTT-3.3.4-3]: a PUBLISH to a client carries one Subscription Identifier per matching
    // subscription; in SUBSCRIBE a second one is a Protocol Error (see the table).
    let Packet::Publish(p) = decode_one(V5, &publish5(&[0x0b, 0x01, 0x0b, 0x02, 0x0b, 0x80, 0x01])) else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers().collect::<Vec<_>>(), [1, 2, 128]);
    assert_eq!(
        decode(&mut BytesMut::from(&subscribe5(&[0x0b, 0x01, 0x0b, 0x02], b"a", 0)[..]), V5, MAX),
        Err(E::DuplicateProperty(PropertyId::SubscriptionIdentifier))
    );
}

#[test]
fn auth_is_a_packet_in_5_0() {
    assert!(matches!(decode_one(V5, &[0xf0, 0x00]), Packet::Auth(_)));
}

// ---------------------------------------------------------------------------------------------
// Debatable choices: the codec's behaviour, pinned (see the report that came with these tests)
// ---------------------------------------------------------------------------------------------

#[test]
fn debatable_non_minimal_remaining_length_is_accepted() {
    // [MQTT-1.5.5-1] says the encoded value MUST use the minimum number of bytes; it binds the
    // sender and names no receiver action. As mosquitto, the codec takes a longer remaining
    // length, and refuses longer integers inside a packet (the malformed table).
    assert_eq!(decode_one(V5, &[0xc0, 0x80, 0x00]), Packet::PingReq);
    assert_eq!(decode_one(V3_1_1, &[0xc0, 0x80, 0x80, 0x00]), Packet::PingReq);
}

#[test]
fn debatable_share_syntax_is_enforced_in_3_1_1_too() {
    // 3.1.1 gives "$share" no meaning, so "$share/g" is a well-formed 3.1.1 filter; the codec
    // applies the 5.0 shared-subscription rules in every version.
    assert_eq!(
        decode(&mut BytesMut::from(&subscribe311(b"$share/g", 0)[..]), V3_1_1, MAX),
        Err(E::InvalidTopicFilter(TopicError::MissingSharedFilter))
    );
}

#[test]
fn debatable_authentication_data_without_method_is_accepted() {
    // 5.0 section 3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there
    // is no Authentication Method." The codec leaves this check to the broker.
    let Packet::Connect(c) = decode_one(V5, &connect5(&[0x16, 0x00, 0x01, 0x07])) else { panic!() };
    assert_eq!(c.properties.authentication_method(), None);
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding
// ---------------------------------------------------------------------------------------------

fn sample_packets() -> Vec<(ProtocolVersion, Vec<u8>)> {
    vec![
        // A 5.0 CONNECT with properties, a will and credentials.
        (
            V5,
            frame(
                0x10,
                &[
                    MQTT5,
                    &[0xce],
                    KA,
                    &[0x05, 0x11, 0x00, 0x00, 0x00, 0x0a],
                    &[0x00, 0x01, b'c'],
                    &[0x02, 0x01, 0x01],
                    &[0x00, 0x01, b't'],
                    &[0x00, 0x02, b'h', b'i'],
                    &[0x00, 0x01, b'u'],
                    &[0x00, 0x01, b'p'],
                ],
            ),
        ),
        // A 3.1.1 PUBLISH whose remaining length takes two bytes.
        (V3_1_1, cat(&[&[0x32, 0x80, 0x01], &[0x00, 0x01, b't'], &[0x00, 0x07], &[0x5a; 123]])),
        // A 5.0 SUBSCRIBE, a 5.0 DISCONNECT with properties, a PINGREQ.
        (V5, subscribe5(&[0x0b, 0x05], b"a/#", 0x2d)),
        (V5, vec![0xe0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00]),
        (V3_1_1, vec![0xc0, 0x00]),
    ]
}

#[test]
fn every_strict_prefix_needs_more_bytes_and_is_left_untouched() {
    for (version, bytes) in sample_packets() {
        for n in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..n]);
            let ptr = buf.as_ptr();
            assert_eq!(decode(&mut buf, version, MAX), Ok(None), "prefix {n} of {}", hex(&bytes));
            assert_eq!(&buf[..], &bytes[..n], "prefix {n} changed");
            assert_eq!(buf.as_ptr(), ptr, "prefix {n} moved");
        }
        // And the whole packet decodes.
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(decode(&mut buf, version, MAX), Ok(Some(_))), "{}", hex(&bytes));
        assert!(buf.is_empty());
    }
}

#[test]
fn packets_in_one_buffer_decode_one_after_the_other() {
    let publish = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let pingreq = [0xc0, 0x00];
    let puback = [0x40, 0x02, 0x00, 0x07];
    let mut buf = BytesMut::from(&cat(&[&publish, &pingreq, &puback, &[0x82, 0x06, 0x00]])[..]);

    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V3_1_1, MAX) else { panic!("first packet") };
    assert_eq!((&p.topic[..], &p.payload[..]), ("a/b", &b"hi"[..]));
    assert_eq!(decode(&mut buf, V3_1_1, MAX), Ok(Some(Packet::PingReq)));
    let Ok(Some(Packet::PubAck(a))) = decode(&mut buf, V3_1_1, MAX) else { panic!("third packet") };
    assert_eq!(a.packet_id, 7);
    // The start of a SUBSCRIBE remains, waiting for the rest.
    assert_eq!(decode(&mut buf, V3_1_1, MAX), Ok(None));
    assert_eq!(&buf[..], &[0x82, 0x06, 0x00]);
    buf.extend_from_slice(&[0x01, 0x00, 0x01, b'x', 0x01]);
    let Ok(Some(Packet::Subscribe(s))) = decode(&mut buf, V3_1_1, MAX) else { panic!("fourth packet") };
    assert_eq!(
        s.filters,
        vec![(ByteString::from_static("x"), midge_codec::SubscriptionOptions::qos(QoS::AtLeastOnce))]
    );
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, V3_1_1, MAX), Ok(None));
}

#[test]
fn decoded_publish_shares_memory_with_the_read_buffer() {
    let bytes = publish5(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']);
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&bytes);
    buf.extend_from_slice(&[0xc0, 0x00]); // a PINGREQ after it
    let start = buf.as_ptr() as usize;
    let end = start + buf.capacity();
    let within = |p: *const u8, len: usize| {
        let p = p as usize;
        p >= start && p + len <= end
    };

    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V5, MAX) else { panic!("PUBLISH") };
    assert_eq!(&p.payload[..], b"p");
    assert!(within(p.payload.as_ptr(), p.payload.len()), "payload was copied");
    assert!(within(p.topic.as_ptr(), p.topic.len()), "topic was copied");
    let Some(Property::UserProperty(k, v)) = p.properties.iter().next() else { panic!() };
    assert!(within(k.as_ptr(), 1) && within(v.as_ptr(), 1), "user property was copied");
    // The payload is the byte just before the PINGREQ, at its place in the buffer.
    assert_eq!(p.payload.as_ptr() as usize, start + bytes.len() - 1);

    // decode_frame shares the frame it is given in the same way.
    let frame = Bytes::from(bytes.clone());
    let Ok(Packet::Publish(q)) = decode_frame(frame.clone(), V5, MAX) else { panic!() };
    assert_eq!(q.payload.as_ptr() as usize, frame.as_ptr() as usize + frame.len() - 1);
}

#[test]
fn at_most_max_properties_in_one_packet() {
    // Empty user properties, 5 bytes each on the wire: a block of MAX_PROPERTIES decodes, one
    // more is refused as a quota (0x97), not as a malformed packet.
    let publish = |n: usize| {
        let block: Vec<u8> = [0x26, 0, 0, 0, 0].repeat(n);
        frame(0x30, &[&[0x00, 0x01, b't'], &varint(block.len()), &block, b"p"])
    };
    let server = midge_codec::DecodeLimits::server(MAX);
    let max = midge_codec::MAX_PROPERTIES;
    let mut buf = BytesMut::from(&publish(max)[..]);
    let Ok(Some(Packet::Publish(p))) = midge_codec::decode_within(&mut buf, V5, server) else { panic!() };
    assert_eq!(p.properties.len(), max);
    let mut buf = BytesMut::from(&publish(max + 1)[..]);
    let e = midge_codec::decode_within(&mut buf, V5, server).unwrap_err();
    assert_eq!(e, DecodeError::TooManyProperties(max));
    assert_eq!(e.reason_code(), ReasonCode::QuotaExceeded);
    // Without the server's limits (a client, the store, a capture): any number.
    let Packet::Publish(p) = decode_one(V5, &publish(max + 1)) else { panic!() };
    assert_eq!(p.properties.len(), max + 1);
}

#[test]
fn at_most_max_topic_filters_in_one_subscribe_or_unsubscribe() {
    // Filters of one byte: MAX_TOPIC_FILTERS decode; one more is refused as a quota (0x97).
    let packet = |first: u8, each: &[u8], n: usize| frame(first, &[&[0x00, 0x01], &each.repeat(n)]);
    let (sub, unsub): (&[u8], &[u8]) = (&[0x00, 0x01, b'a', 0x00], &[0x00, 0x01, b'a']);
    let max = midge_codec::MAX_TOPIC_FILTERS;
    let server = midge_codec::DecodeLimits::server(MAX);
    let within = |bytes: Vec<u8>| midge_codec::decode_within(&mut BytesMut::from(&bytes[..]), V3_1_1, server);
    let Ok(Some(Packet::Subscribe(s))) = within(packet(0x82, sub, max)) else { panic!() };
    assert_eq!(s.filters.len(), max);
    let Ok(Some(Packet::Unsubscribe(u))) = within(packet(0xa2, unsub, max)) else { panic!() };
    assert_eq!(u.filters.len(), max);
    for (first, each, packet_type) in
        [(0x82, sub, PacketType::Subscribe), (0xa2, unsub, PacketType::Unsubscribe)]
    {
        let e = within(packet(first, each, max + 1)).unwrap_err();
        assert_eq!(e, DecodeError::TooManyTopicFilters { packet_type, max });
        assert_eq!(e.reason_code(), ReasonCode::QuotaExceeded);
        let (Packet::Subscribe(_) | Packet::Unsubscribe(_)) =
            decode_one(V3_1_1, &packet(first, each, max + 1))
        else {
            panic!("without the server's limits, any number")
        };
    }
}
