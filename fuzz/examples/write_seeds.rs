//! Writes the seed corpus: `cargo run --example write_seeds` in fuzz/ (the `broker` target's
//! scenarios, and packets in every version for the `decode` target).
use std::path::Path;

use midge_codec::*;
use midge_fuzz::broker::{ops, seeds};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let broker = root.join("broker");
    std::fs::create_dir_all(&broker).unwrap();
    for (name, input) in seeds::all() {
        std::fs::write(broker.join(name), ops::encode(&input)).unwrap();
    }
    let decode = root.join("decode");
    std::fs::create_dir_all(&decode).unwrap();
    let mut connect = Connect::new(ProtocolVersion::V5, "c");
    connect.properties.push(Property::SessionExpiryInterval(60));
    connect.will = Some(Will {
        topic: "w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::new(),
    });
    connect.username = Some("u".into());
    connect.password = Some(Bytes::from_static(b"p"));
    let mut publish = Publish::new("a/b", "x");
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = 7;
    let mut v5_publish = publish.clone();
    v5_publish.properties.push(Property::TopicAlias(1));
    v5_publish.properties.push(Property::UserProperty("k".into(), "v".into()));
    let subscribe = Subscribe::new(3, "$share/g/a/#", SubscriptionOptions::qos(QoS::AtLeastOnce));
    let packets: Vec<(&str, ProtocolVersion, Packet)> = vec![
        ("connect_v5", ProtocolVersion::V5, Packet::Connect(Box::new(connect.clone()))),
        (
            "connect_v311",
            ProtocolVersion::V3_1_1,
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V3_1_1,
                properties: Properties::new(),
                ..connect
            })),
        ),
        ("publish_v311", ProtocolVersion::V3_1_1, Packet::Publish(publish)),
        ("publish_v5", ProtocolVersion::V5, Packet::Publish(v5_publish)),
        ("subscribe_v5", ProtocolVersion::V5, Packet::Subscribe(subscribe)),
        (
            "puback_v5",
            ProtocolVersion::V5,
            Packet::PubAck(PublishAck::with_reason(7, ReasonCode::NoMatchingSubscribers)),
        ),
        (
            "disconnect_v5",
            ProtocolVersion::V5,
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
        ),
    ];
    for (name, version, p) in packets {
        // The decode target's first byte selects the version: 0 3.1, 1 3.1.1, 2 5.0.
        let selector = match version {
            ProtocolVersion::V3_1 => 0,
            ProtocolVersion::V3_1_1 => 1,
            ProtocolVersion::V5 => 2,
        };
        let mut bytes = vec![selector];
        bytes.extend_from_slice(&p.to_bytes(version).unwrap());
        std::fs::write(decode.join(name), bytes).unwrap();
    }
}
