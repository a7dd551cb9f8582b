//! DISCONNECT and AUTH (sections 3.14 and 3.15): a reason code and properties, both optional.
use bytes::{BufMut, BytesMut};

use crate::packet::read_reason;
use crate::properties::{Properties, PropertyContext};
use crate::reason::{AUTH_CODES, DISCONNECT_CODES};
use crate::wire::Reader;
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// A DISCONNECT packet. In 3.1 and 3.1.1 it has no body; the fields are 5.0's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why (5.0); [`ReasonCode::NORMAL_DISCONNECTION`] otherwise.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: Properties,
}

/// An AUTH packet (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties: Authentication Method and Data, Reason String, User Property.
    pub properties: Properties,
}

/// Sections 3.14.2.1 / 3.15.2.1: the reason code (and the property length) may be left out
/// when the code is 0x00 and there are no properties.
fn decode_reason_and_properties(
    r: &mut Reader,
    allowed: &[ReasonCode],
    ctx: PropertyContext,
) -> Result<(ReasonCode, Properties), DecodeError> {
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::new();
    if r.remaining() > 0 {
        reason = read_reason(r, allowed)?;
    }
    if r.remaining() > 0 {
        properties = Properties::decode(r, ctx)?;
    }
    Ok((reason, properties))
}

fn body_len(reason: ReasonCode, properties: &Properties) -> usize {
    if !properties.is_empty() {
        1 + properties.encoded_len()
    } else if reason != ReasonCode::Success {
        1
    } else {
        0
    }
}

fn encode_reason_and_properties(
    reason: ReasonCode,
    properties: &Properties,
    allowed: &[ReasonCode],
    ctx: PropertyContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let len = body_len(reason, properties);
    if len > 0 {
        if !allowed.contains(&reason) {
            return Err(EncodeError::Invalid("reason code not allowed in this packet"));
        }
        out.put_u8(reason.as_u8());
    }
    if len > 1 {
        properties.encode(out, ctx)?;
    }
    Ok(())
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Disconnect { reason_code, properties: Properties::new() }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
        if !version.is_v5() {
            // 3.1.1 section 3.14: no variable header, no payload; finish() checks the length.
            return Ok(Disconnect::new(ReasonCode::Success));
        }
        let (reason_code, properties) =
            decode_reason_and_properties(r, DISCONNECT_CODES, PropertyContext::Disconnect)?;
        Ok(Disconnect { reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            body_len(self.reason_code, &self.properties)
        } else {
            0
        }
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Ok(());
        }
        encode_reason_and_properties(
            self.reason_code,
            &self.properties,
            DISCONNECT_CODES,
            PropertyContext::Disconnect,
            out,
        )
    }
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
        let (reason_code, properties) = decode_reason_and_properties(r, AUTH_CODES, PropertyContext::Auth)?;
        Ok(Auth { reason_code, properties })
    }

    pub(crate) fn body_len(&self) -> usize {
        body_len(self.reason_code, &self.properties)
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_reason_and_properties(
            self.reason_code,
            &self.properties,
            AUTH_CODES,
            PropertyContext::Auth,
            out,
        )
    }
}
