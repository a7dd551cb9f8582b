//! Packet descriptions for the verbose log, in mosquitto's style:
//! `Received PUBLISH from sensor-1 (d0, q1, r0, m7, 'a/b', ... (5 bytes))`.
use midge_codec::{Packet, ProtocolVersion};

/// The fields mosquitto prints for a packet, in parentheses, or nothing.
pub fn describe(packet: &Packet, version: ProtocolVersion) -> String {
    let rc = |code: midge_codec::ReasonCode| code.as_u8();
    match packet {
        Packet::Connect(c) => format!(
            " (p{}, c{}, k{}{})",
            c.protocol.level(),
            u8::from(c.clean_start),
            c.keep_alive,
            c.username.as_ref().map(|u| format!(", u'{u}'")).unwrap_or_default()
        ),
        Packet::ConnAck(c) => format!(" ({}, {})", u8::from(c.session_present), rc(c.reason_code)),
        Packet::Publish(p) => format!(
            " (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            if version.is_v5() {
                format!(" (m{}, rc{})", a.packet_id, rc(a.reason_code))
            } else {
                format!(" (Mid: {})", a.packet_id)
            }
        }
        Packet::Subscribe(s) => {
            let filters: Vec<String> =
                s.filters.iter().map(|(f, o)| format!("{f} (QoS {})", o.qos)).collect();
            format!(" (m{}: {})", s.packet_id, filters.join(", "))
        }
        Packet::SubAck(s) => {
            let codes: Vec<String> = s.reason_codes.iter().map(|c| c.as_u8().to_string()).collect();
            format!(" (m{}: {})", s.packet_id, codes.join(", "))
        }
        Packet::Unsubscribe(u) => {
            let filters: Vec<&str> = u.filters.iter().map(|f| &**f).collect();
            format!(" (m{}: {})", u.packet_id, filters.join(", "))
        }
        Packet::UnsubAck(u) => format!(" (m{})", u.packet_id),
        Packet::Disconnect(d) if version.is_v5() => format!(" (rc{})", rc(d.reason_code)),
        Packet::Auth(a) => format!(" (rc{})", rc(a.reason_code)),
        _ => String::new(),
    }
}
