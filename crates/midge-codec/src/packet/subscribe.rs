//! SUBSCRIBE and SUBACK (sections 3.8 and 3.9).
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use crate::packet::{check_packet_id, read_packet_id, read_reason, PacketType};
use crate::properties::{Properties, PropertyContext};
use crate::reason::SUBACK_CODES;
use crate::topic::{parse_shared, validate_topic_filter};
use crate::wire::{binary_len, put_binary, Reader};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, ReasonCode};

/// When retained messages are sent for a new subscription (5.0 section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe (0).
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not already exist (1).
    SendIfNew = 1,
    /// Do not send them (2).
    DoNotSend = 2,
}

/// The options of one topic filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0): do not deliver the client's own messages back to it.
    pub no_local: bool,
    /// Retain As Published (5.0): keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and the defaults of 3.1.1 for the rest.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions { qos, ..Default::default() }
    }

    fn to_byte(self) -> u8 {
        self.qos.as_u8()
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling as u8) << 4
    }

    fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() { 0xc0 } else { 0xfc };
        if b & reserved != 0 {
            // [MQTT-3.8.3-5] (5.0) / [MQTT-3.8.3-4] (3.1.1): reserved bits MUST be 0.
            return Err(DecodeError::InvalidSubscriptionOptions(b));
        }
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            // Section 3.8.3.1: it is a Protocol Error to send a Retain Handling value of 3.
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            // Section 3.8.3.1: it is a Protocol Error if the Maximum QoS field has the value 3.
            qos: QoS::from_u8(b & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// SUBSCRIBE properties (5.0): Subscription Identifier, User Property.
    pub properties: Properties,
    /// Topic filters with their options, at least one.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    /// A SUBSCRIBE of one filter.
    pub fn new(packet_id: u16, filter: impl Into<ByteString>, options: SubscriptionOptions) -> Self {
        Subscribe { packet_id, properties: Properties::new(), filters: vec![(filter.into(), options)] }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Subscribe)?
        } else {
            Properties::new()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let max = r.limits().max_topic_filters;
            if filters.len() == max {
                return Err(DecodeError::TooManyTopicFilters { packet_type: PacketType::Subscribe, max });
            }
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            let options = SubscriptionOptions::from_byte(r.u8("subscription options")?, version)?;
            if options.no_local && matches!(parse_shared(&filter), Ok(Some(_))) {
                // [MQTT-3.8.3-4] it is a Protocol Error to set No Local on a shared subscription.
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            // [MQTT-3.8.3-2] (5.0) / [MQTT-3.8.3-3] (3.1.1): at least one filter.
            return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Subscribe { packet_id, properties, filters })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() { self.properties.encoded_len() } else { 0 }
            + self.filters.iter().map(|(f, _)| binary_len(f.as_bytes()) + 1).sum::<usize>()
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        check_packet_id(self.packet_id, PacketType::Subscribe)?;
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid("SUBSCRIBE without a topic filter"));
        }
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out, PropertyContext::Subscribe)?;
        }
        for (filter, options) in &self.filters {
            put_binary(out, filter.as_bytes(), "topic filter")?;
            let mut b = options.to_byte();
            if !version.is_v5() {
                b &= 0b11;
            }
            out.put_u8(b);
        }
        Ok(())
    }
}

/// A SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// SUBACK properties (5.0).
    pub properties: Properties,
    /// One code per filter, in order: granted QoS or a failure. 3.1.1 knows only 0, 1, 2 and
    /// 0x80; any failure is encoded as 0x80 and decoded as [`ReasonCode::UnspecifiedError`].
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties =
            if version.is_v5() { Properties::decode(r, PropertyContext::SubAck)? } else { Properties::new() };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = if version.is_v5() {
                read_reason(r, SUBACK_CODES)?
            } else {
                // 3.1.1 section 3.9.3: 0x00, 0x01, 0x02 and 0x80 only.
                match r.u8("return code")? {
                    0 => ReasonCode::Success,
                    1 => ReasonCode::GrantedQoS1,
                    2 => ReasonCode::GrantedQoS2,
                    0x80 => ReasonCode::UnspecifiedError,
                    code => {
                        return Err(DecodeError::InvalidReasonCode { packet_type: PacketType::SubAck, code })
                    }
                }
            };
            reason_codes.push(code);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::Truncated { packet_type: PacketType::SubAck, field: "return codes" });
        }
        Ok(SubAck { packet_id, properties, reason_codes })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() { self.properties.encoded_len() } else { 0 } + self.reason_codes.len()
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        check_packet_id(self.packet_id, PacketType::SubAck)?;
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out, PropertyContext::SubAck)?;
        }
        for &code in &self.reason_codes {
            let byte = if version.is_v5() {
                if !SUBACK_CODES.contains(&code) {
                    return Err(EncodeError::Invalid("reason code not allowed in SUBACK"));
                }
                code.as_u8()
            } else if code.is_error() {
                0x80
            } else {
                code.as_u8()
            };
            out.put_u8(byte);
        }
        Ok(())
    }
}
