//! "Any byte string decodes to packets or an error, never a panic", in every version, and
//! the same for bytes that start as a valid packet and are then corrupted.
use bytes::BytesMut;
use midge_codec::{decode, Connect, Packet, ProtocolVersion, Publish, QoS};
use proptest::prelude::*;

fn drain(bytes: &[u8], version: ProtocolVersion, max: usize) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max) {
            Ok(Some(_)) => assert!(buf.len() < before, "a decoded packet consumes bytes"),
            Ok(None) => {
                assert_eq!(buf.len(), before, "needing more bytes consumes nothing");
                break;
            }
            Err(e) => {
                // Every error maps to a reason code a broker can send.
                assert!(e.reason_code().is_error());
                break;
            }
        }
    }
}

fn versions() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V3_1), Just(ProtocolVersion::V3_1_1), Just(ProtocolVersion::V5)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), version in versions(), max in 0usize..400) {
        drain(&bytes, version, max);
    }

    /// Bytes that start out as a valid packet and have a few bytes changed: these reach far
    /// deeper into the decoder than random noise does.
    #[test]
    fn corrupted_packets_never_panic(
        version in versions(),
        which in 0usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut c = Connect::new(version, "client");
        c.will = Some(midge_codec::Will {
            topic: "will/t".into(), payload: "bye".into(), qos: QoS::AtLeastOnce, retain: true,
            properties: Default::default(),
        });
        c.username = Some("user".into());
        c.password = Some("pw".into());
        let mut p = Publish::new("a/b", "payload");
        p.qos = QoS::ExactlyOnce;
        p.packet_id = 7;
        let sub = midge_codec::Subscribe::new(3, "a/+/#", midge_codec::SubscriptionOptions::qos(QoS::AtLeastOnce));
        let packet = [Packet::Connect(Box::new(c)), Packet::Publish(p), Packet::Subscribe(sub)][which].clone();
        let mut bytes = packet.to_bytes(version).unwrap().to_vec();
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let keep = truncate.index(bytes.len() + 1);
        drain(&bytes[..keep.max(1)], version, usize::MAX);
    }
}
