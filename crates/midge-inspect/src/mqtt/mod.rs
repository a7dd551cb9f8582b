//! MQTT streams: the two byte streams of a connection decoded into packets with the codec
//! (the same one the broker and client use). The protocol version comes from the stream's
//! CONNECT; topic aliases (5.0) are resolved per direction.
pub mod describe;

use std::collections::HashMap;

use bytes::BytesMut;
use midge_codec::{decode_frame, ByteString, DecodeError, FixedHeader, Packet, PacketType, ProtocolVersion};

/// No limit beyond the protocol's: a capture is read, not defended against.
const MAX_PACKET: usize = midge_codec::MAX_REMAINING_LENGTH + 5;

/// A packet decoded from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Sent by the client.
    pub from_client: bool,
    /// The packet.
    pub packet: Packet,
    /// The version it was decoded as.
    pub version: ProtocolVersion,
    /// No CONNECT was seen: 3.1.1 was assumed.
    pub version_assumed: bool,
    /// A PUBLISH's topic, with a 5.0 topic alias resolved.
    pub topic: Option<String>,
}

/// What decoding a stream gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttOutput {
    /// A packet.
    Packet(Decoded),
    /// Bytes that are not MQTT (the reason in words).
    Malformed {
        /// Sent by the client.
        from_client: bool,
        /// Why.
        reason: String,
    },
}

/// One direction.
#[derive(Debug, Default)]
struct Half {
    buf: BytesMut,
    /// Decoding stopped (bad header, or bytes missing).
    lost: bool,
    /// Topic aliases set by this sender (MQTT 5.0, section 3.3.2.3.4).
    aliases: HashMap<u16, ByteString>,
}

/// Both directions of one MQTT connection.
#[derive(Debug, Default)]
pub struct MqttStream {
    version: Option<ProtocolVersion>,
    client_id: Option<String>,
    halves: [Half; 2],
}

impl MqttStream {
    /// The client identifier, once known (from CONNECT, or a 5.0 CONNACK's Assigned Client
    /// Identifier when the CONNECT's was empty).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Decodes what `data` completes in one direction.
    pub fn push(&mut self, from_client: bool, data: &[u8], out: &mut Vec<MqttOutput>) {
        let i = usize::from(!from_client);
        if self.halves[i].lost {
            return;
        }
        self.halves[i].buf.extend_from_slice(data);
        loop {
            let version = self.version.unwrap_or(ProtocolVersion::V3_1_1);
            let half = &mut self.halves[i];
            let header = match FixedHeader::parse(&half.buf, version, MAX_PACKET) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    half.lost = true;
                    half.buf.clear();
                    let reason = format!("{e}; the rest of this direction is not decoded");
                    out.push(MqttOutput::Malformed { from_client, reason });
                    return;
                }
            };
            if half.buf.len() < header.packet_len() {
                return;
            }
            let frame = half.buf.split_to(header.packet_len()).freeze();
            let decoded = decode_frame(frame.clone(), version, MAX_PACKET).or_else(|e| {
                // A server that does not speak 5.0 may answer a 5.0 CONNECT with a 3.1.1
                // CONNACK, return code 0x01 (MQTT 5.0, section 3.1.2.2).
                if !from_client && version.is_v5() && header.packet_type == PacketType::ConnAck {
                    decode_frame(frame, ProtocolVersion::V3_1_1, MAX_PACKET)
                } else {
                    Err(e)
                }
            });
            match decoded {
                Ok(packet) => out.push(MqttOutput::Packet(self.accept(from_client, packet))),
                Err(e) => out.push(MqttOutput::Malformed { from_client, reason: malformed(&e, &header) }),
            }
        }
    }

    /// Bytes of one direction were not captured. The partial packet before the hole is
    /// dropped and decoding resumes with the bytes after it, taken to start a packet (as they
    /// do when whole segments are lost: MQTT senders write whole packets), as tshark does; a
    /// bad header there stops decoding this direction.
    pub fn gap(&mut self, from_client: bool) {
        let half = &mut self.halves[usize::from(!from_client)];
        half.buf.clear();
    }

    /// Bytes left at the end of each direction: (from client, from server).
    pub fn leftover(&self) -> (usize, usize) {
        (self.halves[0].buf.len(), self.halves[1].buf.len())
    }

    fn accept(&mut self, from_client: bool, packet: Packet) -> Decoded {
        match &packet {
            Packet::Connect(c) if from_client => {
                self.version = Some(c.protocol);
                self.client_id = Some(c.client_id.to_string());
            }
            Packet::ConnAck(ack) if !from_client => {
                if let Some(assigned) = ack.properties.assigned_client_identifier() {
                    if self.client_id.as_deref().unwrap_or("").is_empty() {
                        self.client_id = Some(assigned.to_string());
                    }
                }
            }
            _ => {}
        }
        let version = self.version.unwrap_or(ProtocolVersion::V3_1_1);
        let topic = match &packet {
            Packet::Publish(p) => {
                let aliases = &mut self.halves[usize::from(!from_client)].aliases;
                let alias = p.properties.topic_alias();
                match (p.topic.is_empty(), alias) {
                    (false, Some(a)) => {
                        aliases.insert(a, p.topic.clone());
                        Some(p.topic.to_string())
                    }
                    (true, Some(a)) => aliases.get(&a).map(|t| t.to_string()),
                    _ => Some(p.topic.to_string()),
                }
            }
            _ => None,
        };
        Decoded { from_client, packet, version, version_assumed: self.version.is_none(), topic }
    }
}

fn malformed(e: &DecodeError, h: &FixedHeader) -> String {
    format!("malformed {} ({} bytes): {e}", h.packet_type, h.packet_len())
}
