//! Control packets: the fixed header, the [`Packet`] enum, and decoding / encoding dispatch.
mod ack;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

pub use ack::PublishAck;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::{Auth, Disconnect};
pub use publish::Publish;
pub use subscribe::{RetainHandling, SubAck, Subscribe, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};

/// PUBACK: a [`PublishAck`].
pub type PubAck = PublishAck;
/// PUBREC: a [`PublishAck`].
pub type PubRec = PublishAck;
/// PUBREL: a [`PublishAck`].
pub type PubRel = PublishAck;
/// PUBCOMP: a [`PublishAck`].
pub type PubComp = PublishAck;

use crate::wire::{put_varint, read_varint, varint_len, Reader, VarInt, VARINT_MAX};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS};

/// The largest remaining length the four-byte field can carry.
pub const MAX_REMAINING_LENGTH: usize = VARINT_MAX as usize;

/// The most topic filters a server takes in one SUBSCRIBE or UNSUBSCRIBE
/// ([`DecodeLimits::server`]): 65,535, as many as there are packet identifiers. Each filter
/// is decoded into a list before any is handled (some 40 bytes for 4 on the wire), and a
/// SUBSCRIBE's filters are handled in one go: a million of them (a packet of 7 MB) kept a
/// worker thread for 2.4 s; the protocol's largest packet holds 38 million.
pub const MAX_TOPIC_FILTERS: usize = 65_535;

/// What one decoded packet may hold. MQTT bounds a packet's size only, and a packet of small
/// properties or filters takes many times its size once decoded: a server facing clients it
/// does not trust caps their number ([`DecodeLimits::server`]); what reads its own records,
/// a capture or a trusted peer need not ([`DecodeLimits::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest packet, header included.
    pub max_packet_size: usize,
    /// The most properties in one property block (a packet's, or a will's), but for a
    /// CONNECT's own (a server bounds a CONNECT's size, and keeps none of them).
    pub max_properties: usize,
    /// The most topic filters in a SUBSCRIBE or UNSUBSCRIBE.
    pub max_topic_filters: usize,
    /// Whether strings may hold control characters and non-characters, which MQTT lets a
    /// receiver refuse (5.0 section 1.5.4) and midge refuses, as mosquitto
    /// ([`crate::is_disallowed_char`]): only for what a broker reads back of its own, written
    /// by a version that took them ([`DecodeLimits::stored`]).
    pub control_characters: bool,
}

impl DecodeLimits {
    /// Packets of up to `max_packet_size` bytes, holding any number of properties and filters.
    pub const fn size(max_packet_size: usize) -> Self {
        DecodeLimits {
            max_packet_size,
            max_properties: usize::MAX,
            max_topic_filters: usize::MAX,
            control_characters: false,
        }
    }

    /// What a broker reads back of its own records: any size, any number of properties and
    /// filters, and the control characters older versions took.
    pub const fn stored() -> Self {
        DecodeLimits { control_characters: true, ..DecodeLimits::size(usize::MAX) }
    }

    /// Packets of up to `max_packet_size` bytes from a client: at most [`MAX_PROPERTIES`]
    /// (1,024) properties in a block and [`MAX_TOPIC_FILTERS`] (65,535) filters.
    ///
    /// [`MAX_PROPERTIES`]: crate::MAX_PROPERTIES
    pub const fn server(max_packet_size: usize) -> Self {
        DecodeLimits {
            max_packet_size,
            max_properties: crate::MAX_PROPERTIES,
            max_topic_filters: MAX_TOPIC_FILTERS,
            control_characters: false,
        }
    }
}

/// The control packet types (section 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    fn from_u8(v: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The name the specification uses, in capitals.
    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }

    /// The flag bits every packet but PUBLISH must carry (table 2-2).
    fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixed header of a packet (section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The four flag bits.
    pub flags: u8,
    /// The remaining length: the bytes after the fixed header.
    pub remaining_length: usize,
    /// The bytes of the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// The whole packet's size in bytes.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }

    /// The packet type its first byte names, with the type and flags checked against
    /// `version`: what a receiver can tell before anything else of the packet has arrived.
    pub fn packet_type_of(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
        let type_bits = first >> 4;
        let packet_type = match PacketType::from_u8(type_bits) {
            // AUTH exists only in 5.0; 15 is reserved before it.
            Some(PacketType::Auth) if !version.is_v5() => {
                return Err(DecodeError::ReservedPacketType(type_bits))
            }
            Some(t) => t,
            None => return Err(DecodeError::ReservedPacketType(type_bits)),
        };
        check_flags(packet_type, first & 0x0f, version)?;
        Ok(packet_type)
    }

    /// Reads and checks the fixed header at the start of `buf`: `Ok(None)` when `buf` ends
    /// inside it. The packet type and flags are checked against `version`, and the size
    /// against `max_packet_size`, before the body has arrived: an oversized packet is refused
    /// without buffering it.
    pub fn parse(
        buf: &[u8],
        version: ProtocolVersion,
        max_packet_size: usize,
    ) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = FixedHeader::packet_type_of(first, version)?;
        let flags = first & 0x0f;
        let (remaining_length, n) = match read_varint(&buf[1..]) {
            // A remaining length in more bytes than it needs is taken, as mosquitto takes it
            // (it refuses such integers only inside a packet).
            VarInt::Value(v, n) | VarInt::NotMinimal(v, n) => (v as usize, n),
            VarInt::Incomplete => return Ok(None),
            // Sections 1.5.5 and 2.1.4: the remaining length is a Variable Byte Integer of at most
            // four bytes.
            VarInt::TooLong => return Err(DecodeError::RemainingLengthTooLong),
        };
        let header = FixedHeader { packet_type, flags, remaining_length, header_len: 1 + n };
        if header.packet_len() > max_packet_size {
            // 5.0 sections 3.1.2.11.4 (a client's), 3.2.2.3.6 (a server's) and 4.13: a packet
            // above the receiver's Maximum Packet Size is refused with 0x95 Packet too large;
            // decided from the fixed header alone, so the body is never buffered.
            return Err(DecodeError::PacketTooLarge { size: header.packet_len(), max: max_packet_size });
        }
        Ok(Some(header))
    }
}

fn check_flags(packet_type: PacketType, flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    if packet_type == PacketType::Publish {
        let qos = (flags >> 1) & 0b11;
        if qos == 3 {
            // [MQTT-3.3.1-4] a PUBLISH packet MUST NOT have both QoS bits set to 1.
            return Err(DecodeError::InvalidQoS);
        }
        if qos == 0 && flags & 0b1000 != 0 {
            // [MQTT-3.3.1-2] the DUP flag MUST be set to 0 for all QoS 0 messages.
            return Err(DecodeError::DupWithQoS0);
        }
        return Ok(());
    }
    let required = packet_type.required_flags();
    if version == ProtocolVersion::V3_1 && required == 0b0010 && flags == 0b1010 {
        // MQTT 3.1 (section 2.1): PUBREL, SUBSCRIBE and UNSUBSCRIBE have QoS 1 and may have
        // DUP set when sent again.
        return Ok(());
    }
    if flags != required {
        // [MQTT-2.1.3-1] (5.0), [MQTT-2.2.2-1] and [MQTT-2.2.2-2] (3.1.1): reserved flag bits
        // MUST have the listed values; invalid flags close the connection.
        return Err(DecodeError::InvalidHeaderFlags { packet_type, flags });
    }
    Ok(())
}

/// An MQTT control packet of any version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// Decodes the first complete packet in `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet; nothing is consumed and
/// nothing is copied. On success the packet's bytes are split off the front of `buf` without a
/// copy, and payloads and strings in the packet share them.
///
/// `version` is the connection's protocol version (a CONNECT carries its own and is decoded
/// whatever `version` says). `max_packet_size` bounds the whole packet, header included.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    decode_within(buf, version, DecodeLimits::size(max_packet_size))
}

/// [`decode`], within `limits`.
pub fn decode_within(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    limits: DecodeLimits,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, version, limits.max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.packet_len() {
        return Ok(None);
    }
    let frame = buf.split_to(header.packet_len()).freeze();
    decode_body(header, frame.slice(header.header_len..), version, limits).map(Some)
}

/// Decodes one whole packet held in `frame` (header and body, nothing more).
pub fn decode_frame(
    frame: Bytes,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Packet, DecodeError> {
    let header = FixedHeader::parse(&frame, version, max_packet_size)?.ok_or(DecodeError::IncompleteFrame)?;
    if frame.len() < header.packet_len() {
        return Err(DecodeError::IncompleteFrame);
    }
    if frame.len() > header.packet_len() {
        return Err(DecodeError::TrailingBytes {
            packet_type: header.packet_type,
            extra: frame.len() - header.packet_len(),
        });
    }
    decode_body(header, frame.slice(header.header_len..), version, DecodeLimits::size(max_packet_size))
}

fn decode_body(
    header: FixedHeader,
    body: Bytes,
    version: ProtocolVersion,
    limits: DecodeLimits,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body, header.packet_type, limits);
    use PacketType as T;
    let packet = match header.packet_type {
        T::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        T::ConnAck => Packet::ConnAck(ConnAck::decode(&mut r, version)?),
        T::Publish => Packet::Publish(Publish::decode(&mut r, header.flags, version)?),
        T::PubAck => Packet::PubAck(PublishAck::decode(&mut r, version)?),
        T::PubRec => Packet::PubRec(PublishAck::decode(&mut r, version)?),
        T::PubRel => Packet::PubRel(PublishAck::decode(&mut r, version)?),
        T::PubComp => Packet::PubComp(PublishAck::decode(&mut r, version)?),
        T::Subscribe => Packet::Subscribe(Subscribe::decode(&mut r, version)?),
        T::SubAck => Packet::SubAck(SubAck::decode(&mut r, version)?),
        T::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
        T::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, version)?),
        T::PingReq => Packet::PingReq,
        T::PingResp => Packet::PingResp,
        T::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, version)?),
        T::Auth => Packet::Auth(Auth::decode(&mut r)?),
    };
    r.finish()?;
    Ok(packet)
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        use PacketType as T;
        match self {
            Packet::Connect(_) => T::Connect,
            Packet::ConnAck(_) => T::ConnAck,
            Packet::Publish(_) => T::Publish,
            Packet::PubAck(_) => T::PubAck,
            Packet::PubRec(_) => T::PubRec,
            Packet::PubRel(_) => T::PubRel,
            Packet::PubComp(_) => T::PubComp,
            Packet::Subscribe(_) => T::Subscribe,
            Packet::SubAck(_) => T::SubAck,
            Packet::Unsubscribe(_) => T::Unsubscribe,
            Packet::UnsubAck(_) => T::UnsubAck,
            Packet::PingReq => T::PingReq,
            Packet::PingResp => T::PingResp,
            Packet::Disconnect(_) => T::Disconnect,
            Packet::Auth(_) => T::Auth,
        }
    }

    /// The first byte: type and flags.
    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            other => other.packet_type().required_flags(),
        };
        (self.packet_type() as u8) << 4 | flags
    }

    /// The remaining length this packet encodes to in `version`.
    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(version)
            }
            Packet::Subscribe(s) => s.body_len(version),
            Packet::SubAck(s) => s.body_len(version),
            Packet::Unsubscribe(u) => u.body_len(version),
            Packet::UnsubAck(u) => u.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len(version),
            Packet::Auth(a) => a.body_len(),
        }
    }

    /// The size in bytes of the encoded packet, header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + varint_len(body) + body
    }

    /// Appends the encoded packet to `out`, which the caller owns and may reuse.
    /// On error, `out` is left as it was.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_inner(version, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        use crate::PropertyContext as C;
        let body = self.body_len(version);
        if body > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(body));
        }
        out.reserve(1 + varint_len(body) + body);
        out.put_u8(self.first_byte());
        put_varint(out, body)?;
        match self {
            Packet::Connect(c) => c.encode(out),
            Packet::ConnAck(c) => c.encode(version, out),
            Packet::Publish(p) => p.encode(version, out),
            Packet::PubAck(a) => a.encode(version, out, PacketType::PubAck, C::PubAck),
            Packet::PubRec(a) => a.encode(version, out, PacketType::PubRec, C::PubRec),
            Packet::PubRel(a) => a.encode(version, out, PacketType::PubRel, C::PubRel),
            Packet::PubComp(a) => a.encode(version, out, PacketType::PubComp, C::PubComp),
            Packet::Subscribe(s) => s.encode(version, out),
            Packet::SubAck(s) => s.encode(version, out),
            Packet::Unsubscribe(u) => u.encode(version, out),
            Packet::UnsubAck(u) => u.encode(version, out),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => d.encode(version, out),
            Packet::Auth(a) => {
                if !version.is_v5() {
                    return Err(EncodeError::WrongVersion { packet_type: PacketType::Auth, version });
                }
                a.encode(out)
            }
        }
    }

    /// Appends the packet to `out`, like [`Packet::encode`], except the payload of a PUBLISH
    /// longer than `inline_up_to` bytes: that is returned, to be written right after what
    /// `out` holds, so that a large payload is shared instead of copied into every
    /// subscriber's buffer. On error, `out` is left as it was.
    pub fn encode_sharing(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        inline_up_to: usize,
    ) -> Result<Option<Bytes>, EncodeError> {
        let Packet::Publish(p) = self else {
            return self.encode(version, out).map(|()| None);
        };
        if p.payload.len() <= inline_up_to {
            return self.encode(version, out).map(|()| None);
        }
        let body = self.body_len(version);
        if body > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(body));
        }
        let start = out.len();
        out.put_u8(self.first_byte());
        let result = put_varint(out, body).and_then(|()| p.encode_head(version, out));
        if result.is_err() {
            out.truncate(start);
        }
        result.map(|()| Some(p.payload.clone()))
    }

    /// The packet encoded into a new buffer.
    pub fn to_bytes(&self, version: ProtocolVersion) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(self.encoded_len(version));
        self.encode(version, &mut out)?;
        Ok(out.freeze())
    }
}

/// Reads a packet identifier that must not be 0 [MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]).
pub(crate) fn read_packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    let id = r.u16("packet identifier")?;
    if id == 0 {
        return Err(DecodeError::ZeroPacketId(r.packet_type()));
    }
    Ok(id)
}

pub(crate) fn check_packet_id(id: u16, t: PacketType) -> Result<(), EncodeError> {
    if id == 0 {
        Err(EncodeError::ZeroPacketId(t))
    } else {
        Ok(())
    }
}

/// Reads one reason code and checks that `packet_type` may carry it.
pub(crate) fn read_reason(
    r: &mut Reader,
    allowed: &[crate::ReasonCode],
) -> Result<crate::ReasonCode, DecodeError> {
    let code = r.u8("reason code")?;
    crate::ReasonCode::from_u8(code)
        .filter(|c| allowed.contains(c))
        .ok_or(DecodeError::InvalidReasonCode { packet_type: r.packet_type(), code })
}

pub(crate) fn qos_from_bits(bits: u8) -> Result<QoS, DecodeError> {
    QoS::from_u8(bits).ok_or(DecodeError::InvalidQoS)
}
