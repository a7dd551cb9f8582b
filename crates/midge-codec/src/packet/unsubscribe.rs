//! UNSUBSCRIBE and UNSUBACK (sections 3.10 and 3.11).
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use crate::packet::{check_packet_id, read_packet_id, read_reason, PacketType};
use crate::properties::{Properties, PropertyContext};
use crate::reason::UNSUBACK_CODES;
use crate::topic::validate_topic_filter;
use crate::wire::{binary_len, put_binary, Reader};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// UNSUBSCRIBE properties (5.0): User Property only.
    pub properties: Properties,
    /// The topic filters, at least one.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Unsubscribe)?
        } else {
            Properties::new()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let max = r.limits().max_topic_filters;
            if filters.len() == max {
                return Err(DecodeError::TooManyTopicFilters { packet_type: PacketType::Unsubscribe, max });
            }
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            // [MQTT-3.10.3-2] the payload MUST contain at least one Topic Filter.
            return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
        }
        Ok(Unsubscribe { packet_id, properties, filters })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() { self.properties.encoded_len() } else { 0 }
            + self.filters.iter().map(|f| binary_len(f.as_bytes())).sum::<usize>()
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        check_packet_id(self.packet_id, PacketType::Unsubscribe)?;
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid("UNSUBSCRIBE without a topic filter"));
        }
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out, PropertyContext::Unsubscribe)?;
        }
        for f in &self.filters {
            put_binary(out, f.as_bytes(), "topic filter")?;
        }
        Ok(())
    }
}

/// An UNSUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// UNSUBACK properties (5.0).
    pub properties: Properties,
    /// One code per filter (5.0); empty in 3.1.1, whose UNSUBACK carries none.
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let mut ack = UnsubAck { packet_id, properties: Properties::new(), reason_codes: Vec::new() };
        if version.is_v5() {
            ack.properties = Properties::decode(r, PropertyContext::UnsubAck)?;
            while r.remaining() > 0 {
                ack.reason_codes.push(read_reason(r, UNSUBACK_CODES)?);
            }
            if ack.reason_codes.is_empty() {
                return Err(DecodeError::Truncated {
                    packet_type: PacketType::UnsubAck,
                    field: "reason codes",
                });
            }
        }
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() { self.properties.encoded_len() + self.reason_codes.len() } else { 0 }
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        check_packet_id(self.packet_id, PacketType::UnsubAck)?;
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out, PropertyContext::UnsubAck)?;
            for &code in &self.reason_codes {
                if !UNSUBACK_CODES.contains(&code) {
                    return Err(EncodeError::Invalid("reason code not allowed in UNSUBACK"));
                }
                out.put_u8(code.as_u8());
            }
        }
        Ok(())
    }
}
