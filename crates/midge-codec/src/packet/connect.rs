//! CONNECT (section 3.1).
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::properties::{Properties, PropertyContext};
use crate::topic::validate_topic_name;
use crate::wire::{binary_len, put_binary, Reader};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS};

/// A CONNECT packet: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks (from protocol name and level).
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns keep alive off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0).
    pub properties: Properties,
    /// The client identifier; may be empty.
    pub client_id: ByteString,
    /// The will message, if any.
    pub will: Option<Will>,
    /// The user name, if any.
    pub username: Option<ByteString>,
    /// The password, if any: binary data.
    pub password: Option<Bytes>,
    /// A bridge connecting (3.1 and 3.1.1: the protocol level with its top bit set, which
    /// mosquitto's bridges send with `try_private`): the server sends such a client nothing
    /// it published itself, so two brokers bridged both ways do not echo messages.
    pub bridge: bool,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where the will is published.
    pub topic: ByteString,
    /// The will payload.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

impl Connect {
    /// A CONNECT with the given version and client id, clean start, keep alive 60 seconds.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<ByteString>) -> Self {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::new(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            bridge: false,
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
        let name = r.binary("protocol name")?;
        let level = r.u8("protocol level")?;
        let bridge = level & 0x80 != 0;
        let protocol = match (&name[..], level & 0x7F) {
            (b"MQTT", 4) => ProtocolVersion::V3_1_1,
            (b"MQTT", 5) if !bridge => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V3_1,
            _ => {
                // [MQTT-3.1.2-1] (5.0: the Server MAY send CONNACK 0x84, then MUST close),
                // [MQTT-3.1.2-2] (3.1.1: CONNACK 0x01, then disconnect).
                return Err(DecodeError::UnsupportedProtocol {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    level,
                });
            }
        };
        let flags = r.u8("connect flags")?;
        let bad = |why| Err(DecodeError::InvalidConnectFlags { flags, why });
        if flags & RESERVED != 0 {
            // [MQTT-3.1.2-3] the reserved flag MUST be 0.
            return bad("reserved bit set");
        }
        let will_qos_bits = (flags >> 3) & 0b11;
        if flags & WILL == 0 {
            // [MQTT-3.1.2-11], [MQTT-3.1.2-13] (5.0; 3.1.1: [MQTT-3.1.2-11], [MQTT-3.1.2-13]):
            // without a will, Will QoS and Will Retain are 0.
            if will_qos_bits != 0 || flags & WILL_RETAIN != 0 {
                return bad("will QoS or retain set without a will");
            }
        } else if will_qos_bits == 3 {
            // [MQTT-3.1.2-12] (5.0; 3.1.1: [MQTT-3.1.2-14]) Will QoS MUST NOT be 3.
            return bad("will QoS 3");
        }
        if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            // [MQTT-3.1.2-22] (3.1.1): without a user name there MUST NOT be a password.
            return bad("password without user name");
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if protocol.is_v5() {
            Properties::decode(r, PropertyContext::Connect)?
        } else {
            Properties::new()
        };
        // [MQTT-3.1.3-1] the payload fields appear in this order when present.
        let client_id = r.string("client identifier")?;
        let will = if flags & WILL != 0 {
            let properties = if protocol.is_v5() {
                Properties::decode(r, PropertyContext::Will)?
            } else {
                Properties::new()
            };
            let topic = r.string("will topic")?;
            validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
            let payload = r.binary("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: crate::packet::qos_from_bits(will_qos_bits)?,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 { Some(r.string("user name")?) } else { None };
        let password = if flags & PASSWORD != 0 { Some(r.binary("password")?) } else { None };
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
            bridge,
        })
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= CLEAN_START;
        }
        if let Some(w) = &self.will {
            f |= WILL | (w.qos.as_u8() << 3);
            if w.retain {
                f |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            f |= USERNAME;
        }
        if self.password.is_some() {
            f |= PASSWORD;
        }
        f
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut n = binary_len(self.protocol.protocol_name().as_bytes()) + 1 + 1 + 2;
        if v5 {
            n += self.properties.encoded_len();
        }
        n += binary_len(self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                n += w.properties.encoded_len();
            }
            n += binary_len(w.topic.as_bytes()) + binary_len(&w.payload);
        }
        n += self.username.as_ref().map_or(0, |u| binary_len(u.as_bytes()));
        n += self.password.as_ref().map_or(0, |p| binary_len(p));
        n
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::Invalid("a 3.1.1 password needs a user name"));
        }
        put_binary(out, self.protocol.protocol_name().as_bytes(), "protocol name")?;
        let bridge = if self.bridge && !v5 { 0x80 } else { 0 };
        out.put_u8(self.protocol.level() | bridge);
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(out, PropertyContext::Connect)?;
        }
        put_binary(out, self.client_id.as_bytes(), "client identifier")?;
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(out, PropertyContext::Will)?;
            }
            put_binary(out, w.topic.as_bytes(), "will topic")?;
            put_binary(out, &w.payload, "will payload")?;
        }
        if let Some(u) = &self.username {
            put_binary(out, u.as_bytes(), "user name")?;
        }
        if let Some(p) = &self.password {
            put_binary(out, p, "password")?;
        }
        Ok(())
    }
}
