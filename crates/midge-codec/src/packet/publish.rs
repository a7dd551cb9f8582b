//! PUBLISH (section 3.3).
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::packet::{check_packet_id, qos_from_bits, read_packet_id, PacketType};
use crate::properties::{Properties, PropertyContext};
use crate::topic::{validate_topic_name, TopicError};
use crate::wire::{binary_len, put_binary, Reader};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS};

/// A PUBLISH packet: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a redelivery.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// The topic name; empty in 5.0 when a Topic Alias stands for it.
    pub topic: ByteString,
    /// The packet identifier; 0 for QoS 0, never 0 otherwise.
    pub packet_id: u16,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
    /// The application message, shared with the buffer it was read from.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message without properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: 0,
            properties: Properties::new(),
            payload: payload.into(),
        }
    }

    pub(crate) fn flags(&self) -> u8 {
        u8::from(self.dup) << 3 | self.qos.as_u8() << 1 | u8::from(self.retain)
    }

    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        // The fixed header checks already refused QoS 3 and DUP on QoS 0.
        let qos = qos_from_bits((flags >> 1) & 0b11)?;
        let topic = r.string("topic name")?;
        // [MQTT-2.2.1-2] a QoS 0 PUBLISH has no packet identifier.
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { read_packet_id(r)? };
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Publish)?
        } else {
            Properties::new()
        };
        if topic.is_empty() {
            if !version.is_v5() {
                // [MQTT-4.7.3-1] topic names are at least one character long.
                return Err(DecodeError::InvalidTopicName(TopicError::Empty));
            }
            if properties.topic_alias().is_none() {
                // [MQTT-3.3.2-1]: the Topic Name MUST be present unless a Topic Alias is used.
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else {
            // [MQTT-3.3.2-2] the Topic Name MUST NOT contain wildcard characters.
            validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        }
        Ok(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 1 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        binary_len(self.topic.as_bytes())
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + if version.is_v5() { self.properties.encoded_len() } else { 0 }
            + self.payload.len()
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_head(version, out)?;
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Everything of the body but the payload.
    pub(crate) fn encode_head(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.qos == QoS::AtMostOnce && self.dup {
            return Err(EncodeError::Invalid("DUP on a QoS 0 PUBLISH"));
        }
        put_binary(out, self.topic.as_bytes(), "topic name")?;
        if self.qos != QoS::AtMostOnce {
            check_packet_id(self.packet_id, PacketType::Publish)?;
            out.put_u16(self.packet_id);
        }
        if version.is_v5() {
            self.properties.encode(out, PropertyContext::Publish)?;
        }
        Ok(())
    }
}
