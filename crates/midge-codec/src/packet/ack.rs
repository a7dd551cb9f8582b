//! PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4 to 3.7): one shape, four packets.
use bytes::{BufMut, BytesMut};

use crate::packet::{check_packet_id, read_packet_id, read_reason, PacketType};
use crate::properties::{Properties, PropertyContext};
use crate::reason::{PUBACK_CODES, PUBREL_CODES};
use crate::wire::Reader;
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The packet identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: u16,
    /// The outcome (5.0; always Success in 3.1.1).
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties,
}

fn codes_for(t: PacketType) -> &'static [ReasonCode] {
    match t {
        PacketType::PubAck | PacketType::PubRec => PUBACK_CODES,
        _ => PUBREL_CODES,
    }
}

fn context_for(t: PacketType) -> PropertyContext {
    match t {
        PacketType::PubAck => PropertyContext::PubAck,
        PacketType::PubRec => PropertyContext::PubRec,
        PacketType::PubRel => PropertyContext::PubRel,
        _ => PropertyContext::PubComp,
    }
}

impl PublishAck {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        PublishAck { packet_id, reason_code: ReasonCode::Success, properties: Properties::new() }
    }

    /// An acknowledgement with a reason code.
    pub fn with_reason(packet_id: u16, reason_code: ReasonCode) -> Self {
        PublishAck { packet_id, reason_code, properties: Properties::new() }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<PublishAck, DecodeError> {
        let t = r.packet_type();
        let packet_id = read_packet_id(r)?;
        let mut ack = PublishAck::new(packet_id);
        if version.is_v5() {
            // Sections 3.4.2.1 and 3.4.2.2.1: the reason code and the property length may be
            // omitted; a remaining length of 2 means Success and no properties.
            if r.remaining() > 0 {
                ack.reason_code = read_reason(r, codes_for(t))?;
            }
            if r.remaining() > 0 {
                ack.properties = Properties::decode(r, context_for(t))?;
            }
        }
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            2
        } else if !self.properties.is_empty() {
            3 + self.properties.encoded_len()
        } else if self.reason_code != ReasonCode::Success {
            3
        } else {
            2
        }
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        t: PacketType,
        ctx: PropertyContext,
    ) -> Result<(), EncodeError> {
        check_packet_id(self.packet_id, t)?;
        out.put_u16(self.packet_id);
        let len = self.body_len(version);
        if len > 2 {
            if !codes_for(t).contains(&self.reason_code) {
                return Err(EncodeError::Invalid("reason code not allowed in this acknowledgement"));
            }
            out.put_u8(self.reason_code.as_u8());
        }
        if len > 3 {
            self.properties.encode(out, ctx)?;
        }
        Ok(())
    }
}
