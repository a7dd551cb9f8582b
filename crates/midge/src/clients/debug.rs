//! `-d`: every packet sent and received, printed to standard output in libmosquitto's words
//! (`Client mosq-x sending PUBLISH (d0, q1, r0, m1, 'a/b', ... (2 bytes))`).
use std::io::Write;
use std::sync::{Arc, Mutex};

use midge_client::{Direction, PacketHook};
use midge_codec::{Packet, ProtocolVersion};

/// A hook that prints each packet; the client id shown follows an id the server assigns
/// (5.0), as libmosquitto does; until then an empty id shows as `(null)`.
pub fn hook(client_id: &str, version: ProtocolVersion) -> PacketHook {
    let id =
        Arc::new(Mutex::new(if client_id.is_empty() { "(null)".to_owned() } else { client_id.to_owned() }));
    Arc::new(move |dir: Direction, p: &Packet| {
        let mut id = id.lock().unwrap_or_else(|e| e.into_inner());
        if let (Direction::Received, Packet::ConnAck(a)) = (dir, p) {
            if let Some(assigned) = a.properties.assigned_client_identifier() {
                *id = assigned.to_string();
            }
        }
        let mut out = std::io::stdout().lock();
        for line in lines(&id, dir, p, version) {
            let _ = writeln!(out, "{line}");
        }
    })
}

fn lines(id: &str, dir: Direction, p: &Packet, version: ProtocolVersion) -> Vec<String> {
    let verb = match dir {
        Direction::Sent => "sending",
        Direction::Received => "received",
    };
    let head = format!("Client {id} {verb} {}", p.packet_type());
    let line = match (dir, p) {
        (_, Packet::ConnAck(a)) => {
            let code = if version.is_v5() {
                a.reason_code.as_u8()
            } else {
                midge_codec::ConnectReturnCode::from_reason(a.reason_code) as u8
            };
            format!("{head} ({code})")
        }
        (_, Packet::Publish(m)) => format!(
            "{head} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(m.dup),
            m.qos.as_u8(),
            u8::from(m.retain),
            // Sent QoS 0 messages carry the number the client gave them (as libmosquitto
            // numbers them); received ones have none on the wire: 0.
            m.packet_id,
            m.topic,
            m.payload.len()
        ),
        (Direction::Received, Packet::PubAck(a) | Packet::PubComp(a)) => {
            format!("{head} (Mid: {}, RC:{})", a.packet_id, a.reason_code.as_u8())
        }
        (Direction::Received, Packet::PubRec(a) | Packet::PubRel(a)) => {
            format!("{head} (Mid: {})", a.packet_id)
        }
        (Direction::Sent, Packet::PubAck(a) | Packet::PubRec(a)) => {
            format!("{head} (m{}, rc{})", a.packet_id, a.reason_code.as_u8())
        }
        (Direction::Sent, Packet::PubRel(a) | Packet::PubComp(a)) => format!("{head} (m{})", a.packet_id),
        (Direction::Sent, Packet::Subscribe(s)) => {
            return s
                .filters
                .iter()
                .map(|(f, o)| {
                    let options = o.qos.as_u8()
                        | u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                    format!(
                        "{head} (Mid: {}, Topic: {f}, QoS: {}, Options: 0x{:02x})",
                        s.packet_id,
                        o.qos.as_u8(),
                        options & 0xfc
                    )
                })
                .collect();
        }
        (Direction::Sent, Packet::Unsubscribe(u)) => {
            return u.filters.iter().map(|f| format!("{head} (Mid: {}, Topic: {f})", u.packet_id)).collect();
        }
        (Direction::Received, Packet::Disconnect(d)) if version.is_v5() => {
            format!("{head} ({})", d.reason_code.as_u8())
        }
        _ => head,
    };
    vec![line]
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::*;

    #[test]
    fn lines_match_libmosquitto() {
        let v = ProtocolVersion::V3_1_1;
        let mut p = Publish::new("a/b", "hi");
        p.qos = QoS::AtLeastOnce;
        p.packet_id = 1;
        let cases: Vec<(Direction, Packet, &str)> = vec![
            (Direction::Sent, Packet::Connect(Box::new(Connect::new(v, ""))), "Client pubid sending CONNECT"),
            (
                Direction::Received,
                Packet::ConnAck(ConnAck::new(ReasonCode::Success)),
                "Client pubid received CONNACK (0)",
            ),
            (
                Direction::Sent,
                Packet::Publish(p),
                "Client pubid sending PUBLISH (d0, q1, r0, m1, 'a/b', ... (2 bytes))",
            ),
            (
                Direction::Received,
                Packet::PubAck(PublishAck::new(1)),
                "Client pubid received PUBACK (Mid: 1, RC:0)",
            ),
            (
                Direction::Received,
                Packet::PubRec(PublishAck::new(1)),
                "Client pubid received PUBREC (Mid: 1)",
            ),
            (Direction::Sent, Packet::PubRel(PublishAck::new(1)), "Client pubid sending PUBREL (m1)"),
            (
                Direction::Received,
                Packet::PubComp(PublishAck::new(1)),
                "Client pubid received PUBCOMP (Mid: 1, RC:0)",
            ),
            (Direction::Sent, Packet::PubRec(PublishAck::new(1)), "Client pubid sending PUBREC (m1, rc0)"),
            (
                Direction::Received,
                Packet::PubRel(PublishAck::new(1)),
                "Client pubid received PUBREL (Mid: 1)",
            ),
            (Direction::Sent, Packet::PubComp(PublishAck::new(1)), "Client pubid sending PUBCOMP (m1)"),
            (Direction::Sent, Packet::PubAck(PublishAck::new(2)), "Client pubid sending PUBACK (m2, rc0)"),
            (
                Direction::Sent,
                Packet::Subscribe(Subscribe::new(1, "a/#", SubscriptionOptions::qos(QoS::ExactlyOnce))),
                "Client pubid sending SUBSCRIBE (Mid: 1, Topic: a/#, QoS: 2, Options: 0x00)",
            ),
            (
                Direction::Sent,
                Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
                "Client pubid sending DISCONNECT",
            ),
            (Direction::Sent, Packet::PingReq, "Client pubid sending PINGREQ"),
        ];
        for (dir, p, want) in cases {
            assert_eq!(lines("pubid", dir, &p, v), vec![want.to_owned()]);
        }
    }
}
