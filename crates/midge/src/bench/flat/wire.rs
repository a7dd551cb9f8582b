//! The bytes of the flat-out mode: PUBLISHes stamped from a template, acknowledgements, and a
//! scan of what the broker sends that reaches each PUBLISH's payload without decoding it.
//!
//! The template is encoded once by midge-codec (one codec, not two); the hot path copies it and
//! patches the sequence number and the packet identifier. Incoming packets are not decoded:
//! the fixed header, the topic length, the packet identifier and (5.0) the property length
//! lead to the payload, and the payload's publisher and sequence number are all a count needs.
use bytes::BytesMut;
use midge_codec::{EncodeError, Packet, ProtocolVersion, Publish, QoS};
use thiserror::Error;

/// Where the publisher's index sits in the payload (u32, big endian), after 8 bytes that the
/// windowed mode uses for the send time.
pub const PUBLISHER_AT: usize = 8;
/// Where the publisher's sequence number sits in the payload (u32, big endian).
pub const SEQ_AT: usize = 12;

/// Packet types (the high nibble of the first byte).
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// What the scan found wrong in the broker's bytes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("a remaining length longer than 4 bytes")]
    RemainingLength,
    #[error("a malformed {0}")]
    Malformed(&'static str),
}

/// One publisher's PUBLISH, encoded once.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    seq_at: usize,
    packet_id_at: Option<usize>,
}

impl Template {
    /// The PUBLISH of `publisher` to `topic` with a `size`-byte payload (at least 16): 8 zero
    /// bytes, the publisher's index, the sequence number, then filler.
    pub fn new(
        topic: &str,
        publisher: u32,
        size: usize,
        qos: QoS,
        version: ProtocolVersion,
    ) -> Result<Template, EncodeError> {
        let mut payload = vec![0x2a; size.max(SEQ_AT + 4)];
        payload[..PUBLISHER_AT].fill(0);
        payload[PUBLISHER_AT..SEQ_AT].copy_from_slice(&publisher.to_be_bytes());
        payload[SEQ_AT..SEQ_AT + 4].fill(0);
        let size = payload.len();
        let mut p = Publish::new(topic.to_owned(), payload);
        p.qos = qos;
        if qos != QoS::AtMostOnce {
            p.packet_id = 1;
        }
        let mut out = BytesMut::new();
        Packet::Publish(p).encode(version, &mut out)?;
        let payload_at = out.len() - size;
        // Before the payload: the packet identifier, then (5.0) the empty properties' length.
        let packet_id_at = (qos != QoS::AtMostOnce).then(|| payload_at - 2 - usize::from(version.is_v5()));
        Ok(Template { bytes: out.to_vec(), seq_at: payload_at + SEQ_AT, packet_id_at })
    }

    /// The length of each PUBLISH.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the PUBLISH with sequence number `seq` (and packet identifier `id` at QoS 1 / 2).
    #[inline]
    pub fn append(&self, out: &mut Vec<u8>, seq: u32, id: u16) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        out[at + self.seq_at..at + self.seq_at + 4].copy_from_slice(&seq.to_be_bytes());
        if let Some(i) = self.packet_id_at {
            out[at + i..at + i + 2].copy_from_slice(&id.to_be_bytes());
        }
    }
}

/// Appends PUBACK, PUBREC, PUBREL or PUBCOMP (`kind`) for packet `id`: 4 bytes, valid in 3.1.1
/// and in 5.0 (where no reason code means success).
#[inline]
pub fn append_ack(out: &mut Vec<u8>, kind: u8, id: u16) {
    let first = (kind << 4) | if kind == PUBREL { 0x02 } else { 0 };
    let [hi, lo] = id.to_be_bytes();
    out.extend_from_slice(&[first, 2, hi, lo]);
}

/// DISCONNECT, normal disconnection, in 3.1.1 and in 5.0.
pub const DISCONNECT_BYTES: [u8; 2] = [0xE0, 0x00];

/// A packet from the broker, as far as the count needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Publish {
        qos: u8,
        id: u16,
        payload: &'a [u8],
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP (`kind`), with its 5.0 reason code (0 when absent).
    Ack {
        kind: u8,
        id: u16,
        reason: u8,
    },
    PingResp,
    /// DISCONNECT, with its 5.0 reason code (0 when absent).
    Disconnect {
        reason: u8,
    },
    /// Any other packet type.
    Other {
        kind: u8,
    },
}

/// The whole length of the packet at the start of `b`, once its fixed header is there.
pub fn packet_len(b: &[u8]) -> Result<Option<usize>, ScanError> {
    let mut len = 0usize;
    for i in 1..5 {
        let Some(&byte) = b.get(i) else { return Ok(None) };
        len |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Ok(Some(i + 1 + len));
        }
    }
    Err(ScanError::RemainingLength)
}

/// Calls `on` with each complete packet at the start of `buf` and returns the bytes they take;
/// a packet cut short at the end is left for the next read.
#[inline]
pub fn scan(buf: &[u8], v5: bool, mut on: impl FnMut(Frame<'_>)) -> Result<usize, ScanError> {
    let mut at = 0;
    while let Some(len) = packet_len(&buf[at..])? {
        let Some(packet) = buf.get(at..at + len) else { break };
        on(frame(packet, v5)?);
        at += len;
    }
    Ok(at)
}

/// The variable byte integer at the start of `b`: (its length, its value).
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &byte) in b.iter().take(4).enumerate() {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((i + 1, v));
        }
    }
    None
}

#[inline]
fn frame(packet: &[u8], v5: bool) -> Result<Frame<'_>, ScanError> {
    let first = packet[0];
    // `packet_len` has read the remaining length: `packet` is exactly one packet.
    let header = 1 + varint(&packet[1..]).map_or(0, |(n, _)| n);
    let body = &packet[header..];
    let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    Ok(match first >> 4 {
        PUBLISH => {
            let qos = (first >> 1) & 3;
            let topic = u16_at(0).ok_or(ScanError::Malformed("PUBLISH"))?;
            let mut i = 2 + usize::from(topic);
            let mut id = 0;
            if qos > 0 {
                id = u16_at(i).ok_or(ScanError::Malformed("PUBLISH"))?;
                i += 2;
            }
            if v5 {
                let (n, props) = body.get(i..).and_then(varint).ok_or(ScanError::Malformed("PUBLISH"))?;
                i += n + props;
            }
            let payload = body.get(i..).ok_or(ScanError::Malformed("PUBLISH"))?;
            Frame::Publish { qos, id, payload }
        }
        kind @ PUBACK..=PUBCOMP => {
            let id = u16_at(0).ok_or(ScanError::Malformed("acknowledgement"))?;
            Frame::Ack { kind, id, reason: body.get(2).copied().unwrap_or(0) }
        }
        PINGRESP => Frame::PingResp,
        DISCONNECT => Frame::Disconnect { reason: body.first().copied().unwrap_or(0) },
        kind => Frame::Other { kind },
    })
}

/// The publisher's index and sequence number in a payload of the expected size.
#[inline]
pub fn stamp(payload: &[u8]) -> Option<(u32, u32)> {
    let p = payload.get(PUBLISHER_AT..SEQ_AT + 4)?;
    Some((u32::from_be_bytes([p[0], p[1], p[2], p[3]]), u32::from_be_bytes([p[4], p[5], p[6], p[7]])))
}

#[cfg(test)]
mod tests {
    use midge_codec::{decode, PubAck, ReasonCode};

    use super::*;

    fn frames(buf: &[u8], v5: bool) -> (usize, Vec<String>) {
        let mut seen = Vec::new();
        let used = scan(buf, v5, |f| seen.push(format!("{f:?}"))).unwrap();
        (used, seen)
    }

    #[test]
    fn the_template_decodes_with_the_codec_at_every_qos_and_version() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let t = Template::new("bench/x/p/3", 3, 64, qos, version).unwrap();
                let mut out = Vec::new();
                t.append(&mut out, 7, 9);
                t.append(&mut out, 70_000, 10);
                assert_eq!(out.len(), 2 * t.len());
                let mut buf = BytesMut::from(&out[..]);
                for (seq, id) in [(7u32, 9u16), (70_000, 10)] {
                    let Some(Packet::Publish(p)) = decode(&mut buf, version, usize::MAX).unwrap() else {
                        panic!("not a PUBLISH")
                    };
                    assert_eq!((p.qos, &p.topic[..], p.payload.len()), (qos, "bench/x/p/3", 64));
                    assert_eq!(p.packet_id, if qos == QoS::AtMostOnce { 0 } else { id });
                    assert_eq!(stamp(&p.payload), Some((3, seq)));
                }
                // The scan finds the same payloads.
                let mut got = Vec::new();
                let used = scan(&out, version.is_v5(), |f| {
                    if let Frame::Publish { qos: q, id, payload } = f {
                        got.push((q, id, stamp(payload), payload.len()));
                    }
                })
                .unwrap();
                assert_eq!(used, out.len());
                let q = qos as u8;
                let id = |i| if q == 0 { 0 } else { i };
                assert_eq!(got, vec![(q, id(9), Some((3, 7)), 64), (q, id(10), Some((3, 70_000)), 64)]);
            }
        }
    }

    #[test]
    fn a_packet_cut_short_waits_for_more_bytes() {
        let t = Template::new("t", 0, 200, QoS::AtMostOnce, ProtocolVersion::V3_1_1).unwrap();
        let mut out = Vec::new();
        t.append(&mut out, 1, 0);
        t.append(&mut out, 2, 0);
        for cut in [0, 1, 2, t.len() - 1] {
            assert_eq!(frames(&out[..cut], false).0, 0, "cut at {cut}");
        }
        for cut in [t.len(), t.len() + 1, t.len() + 2, 2 * t.len() - 1] {
            assert_eq!(frames(&out[..cut], false).0, t.len(), "cut at {cut}");
        }
        assert_eq!(packet_len(&out).unwrap(), Some(t.len()));
        assert!(t.len() > 128, "a two-byte remaining length");
    }

    #[test]
    fn acks_match_the_codec_and_scan_back() {
        for (kind, first) in [(PUBACK, 0x40), (PUBREC, 0x50), (PUBREL, 0x62), (PUBCOMP, 0x70)] {
            let mut out = Vec::new();
            append_ack(&mut out, kind, 0x1234);
            assert_eq!(out, [first, 2, 0x12, 0x34]);
            let (_, seen) = frames(&out, true);
            assert_eq!(seen, [format!("{:?}", Frame::Ack { kind, id: 0x1234, reason: 0 })]);
        }
        let mut ack = PubAck::new(5);
        ack.reason_code = ReasonCode::QuotaExceeded;
        let bytes = Packet::PubAck(ack).to_bytes(ProtocolVersion::V5).unwrap();
        let (_, seen) = frames(&bytes, true);
        assert_eq!(seen, [format!("{:?}", Frame::Ack { kind: PUBACK, id: 5, reason: 0x97 })]);
        let (_, seen) = frames(&[0xD0, 0, 0xE0, 1, 0x8B, 0x90, 0], true);
        assert_eq!(seen, ["PingResp", "Disconnect { reason: 139 }", "Other { kind: 9 }"]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(
            scan(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], false, |_| {}),
            Err(ScanError::RemainingLength)
        );
        assert_eq!(scan(&[0x30, 1, 0], false, |_| {}), Err(ScanError::Malformed("PUBLISH")));
        assert_eq!(scan(&[0x30, 2, 0, 5], false, |_| {}), Err(ScanError::Malformed("PUBLISH")));
        assert_eq!(scan(&[0x32, 3, 0, 0, 1], false, |_| {}), Err(ScanError::Malformed("PUBLISH")));
        assert_eq!(scan(&[0x30, 2, 0, 0], true, |_| {}), Err(ScanError::Malformed("PUBLISH")));
        assert_eq!(scan(&[0x40, 1, 0], false, |_| {}), Err(ScanError::Malformed("acknowledgement")));
        assert_eq!(frames(&[0x30, 2, 0, 0], false).1, ["Publish { qos: 0, id: 0, payload: [] }"]);
        assert_eq!(stamp(&[0; 15]), None);
    }
}
