//! CONNACK (section 3.2).
use bytes::{BufMut, BytesMut};

use crate::properties::{Properties, PropertyContext};
use crate::reason::CONNACK_CODES;
use crate::wire::Reader;
use crate::{ConnectReturnCode, DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// A CONNACK packet.
///
/// The outcome is a 5.0 [`ReasonCode`] in every version: for 3.1 and 3.1.1 it is encoded as
/// the nearest [`ConnectReturnCode`], and decoded from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The outcome.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

impl ConnAck {
    /// A CONNACK with this outcome, no session, no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        ConnAck { session_present: false, reason_code, properties: Properties::new() }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xfe != 0 {
            // [MQTT-3.2.2-1] bits 7-1 of the Connect Acknowledge Flags are reserved, set to 0.
            return Err(DecodeError::InvalidConnAckFlags(flags));
        }
        let reason_code = if version.is_v5() {
            crate::packet::read_reason(r, CONNACK_CODES)?
        } else {
            let code = r.u8("return code")?;
            ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidReturnCode(code))?.to_reason()
        };
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::ConnAck)?
        } else {
            Properties::new()
        };
        // 3.1 has no Session Present flag.
        let session_present = flags & 1 != 0 && version != ProtocolVersion::V3_1;
        Ok(ConnAck { session_present, reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() { self.properties.encoded_len() } else { 0 }
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        // 3.1 has no Session Present flag: the byte is reserved.
        out.put_u8(u8::from(self.session_present && version != ProtocolVersion::V3_1));
        if version.is_v5() {
            if !CONNACK_CODES.contains(&self.reason_code) {
                return Err(EncodeError::Invalid("reason code not allowed in CONNACK"));
            }
            out.put_u8(self.reason_code.as_u8());
            self.properties.encode(out, PropertyContext::ConnAck)
        } else {
            out.put_u8(ConnectReturnCode::from_reason(self.reason_code) as u8);
            Ok(())
        }
    }
}
