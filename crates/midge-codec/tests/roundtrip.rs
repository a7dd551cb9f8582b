//! Property tests: every packet type in every version encodes and decodes back to itself, and
//! `encoded_len` is exact.
use bytes::BytesMut;
use midge_codec::*;
use proptest::prelude::*;

const VERSIONS: [ProtocolVersion; 3] = [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// Only the characters a string may hold: no control characters, no non-characters.
fn allowed(s: String) -> ByteString {
    ByteString::from(s.chars().filter(|&c| !midge_codec::is_disallowed_char(c)).collect::<String>())
}

fn mqtt_string() -> impl Strategy<Value = ByteString> {
    // Any Unicode but the disallowed, including U+FEFF and characters outside the BMP.
    "[^\u{0}]{0,12}".prop_map(allowed)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[^\u{0}-\u{1f}+#]{1,20}".prop_map(allowed).prop_filter("a topic name is not empty", |s| !s.is_empty())
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    let level = prop_oneof![Just("+".to_string()), "[a-z$/]{0,4}".prop_map(|s| s.replace('/', ""))];
    (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str(if f.is_empty() { "#" } else { "/#" });
        }
        if f.is_empty() {
            f.push('x');
        }
        ByteString::from(f)
    })
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn property_value(id: PropertyId) -> BoxedStrategy<Property> {
    use Property as P;
    use PropertyId as I;
    let flag = || 0u8..=1;
    match id {
        I::PayloadFormatIndicator => flag().prop_map(P::PayloadFormatIndicator).boxed(),
        I::MessageExpiryInterval => any::<u32>().prop_map(P::MessageExpiryInterval).boxed(),
        I::ContentType => mqtt_string().prop_map(P::ContentType).boxed(),
        I::ResponseTopic => topic_name().prop_map(P::ResponseTopic).boxed(),
        I::CorrelationData => binary().prop_map(P::CorrelationData).boxed(),
        I::SubscriptionIdentifier => (1u32..=268_435_455).prop_map(P::SubscriptionIdentifier).boxed(),
        I::SessionExpiryInterval => any::<u32>().prop_map(P::SessionExpiryInterval).boxed(),
        I::AssignedClientIdentifier => mqtt_string().prop_map(P::AssignedClientIdentifier).boxed(),
        I::ServerKeepAlive => any::<u16>().prop_map(P::ServerKeepAlive).boxed(),
        I::AuthenticationMethod => mqtt_string().prop_map(P::AuthenticationMethod).boxed(),
        I::AuthenticationData => binary().prop_map(P::AuthenticationData).boxed(),
        I::RequestProblemInformation => flag().prop_map(P::RequestProblemInformation).boxed(),
        I::WillDelayInterval => any::<u32>().prop_map(P::WillDelayInterval).boxed(),
        I::RequestResponseInformation => flag().prop_map(P::RequestResponseInformation).boxed(),
        I::ResponseInformation => mqtt_string().prop_map(P::ResponseInformation).boxed(),
        I::ServerReference => mqtt_string().prop_map(P::ServerReference).boxed(),
        I::ReasonString => mqtt_string().prop_map(P::ReasonString).boxed(),
        I::ReceiveMaximum => (1u16..).prop_map(P::ReceiveMaximum).boxed(),
        I::TopicAliasMaximum => any::<u16>().prop_map(P::TopicAliasMaximum).boxed(),
        I::TopicAlias => (1u16..).prop_map(P::TopicAlias).boxed(),
        I::MaximumQoS => flag().prop_map(P::MaximumQoS).boxed(),
        I::RetainAvailable => flag().prop_map(P::RetainAvailable).boxed(),
        I::UserProperty => (mqtt_string(), mqtt_string()).prop_map(|(k, v)| P::UserProperty(k, v)).boxed(),
        I::MaximumPacketSize => (1u32..).prop_map(P::MaximumPacketSize).boxed(),
        I::WildcardSubscriptionAvailable => flag().prop_map(P::WildcardSubscriptionAvailable).boxed(),
        I::SubscriptionIdentifierAvailable => flag().prop_map(P::SubscriptionIdentifierAvailable).boxed(),
        I::SharedSubscriptionAvailable => flag().prop_map(P::SharedSubscriptionAvailable).boxed(),
    }
}

/// Properties valid in `ctx`: only allowed identifiers, repeated only where the spec allows.
fn properties(ctx: PropertyContext) -> BoxedStrategy<Properties> {
    let ids: Vec<PropertyId> = PropertyId::ALL.into_iter().filter(|id| id.allowed_in(ctx)).collect();
    let one = prop::sample::select(ids).prop_flat_map(property_value);
    prop::collection::vec(one, 0..6)
        .prop_map(move |v| {
            let mut seen = Vec::new();
            v.into_iter()
                .filter(|p| {
                    let id = p.id();
                    if id.repeatable_in(ctx) {
                        return true;
                    }
                    if seen.contains(&id) {
                        return false;
                    }
                    seen.push(id);
                    true
                })
                .collect()
        })
        .boxed()
}

fn props_for(version: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        properties(ctx)
    } else {
        Just(Properties::new()).boxed()
    }
}

fn reason(codes: &'static [ReasonCode]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes)
}

fn connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let will =
        (topic_name(), binary(), qos(), any::<bool>(), props_for(version, PropertyContext::Will)).prop_map(
            |(topic, payload, qos, retain, properties)| Will { topic, payload, qos, retain, properties },
        );
    (
        any::<bool>(),
        any::<u16>(),
        props_for(version, PropertyContext::Connect),
        mqtt_string(),
        prop::option::of(will),
        prop::option::of(mqtt_string()),
        prop::option::of(binary()),
    )
        .prop_map(move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
            // 3.1 and 3.1.1 allow a password only with a user name [MQTT-3.1.2-22].
            let password = if version.is_v5() || username.is_some() { password } else { None };
            Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start,
                keep_alive,
                properties,
                client_id,
                will,
                username,
                password,
                bridge: false,
            }))
        })
        .boxed()
}

const CONNACK_V5: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::UnspecifiedError,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::NotAuthorized,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::ServerMoved,
];
const CONNACK_V3: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::ServerUnavailable,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
];

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = if version.is_v5() { CONNACK_V5 } else { CONNACK_V3 };
    (any::<bool>(), reason(codes), props_for(version, PropertyContext::ConnAck))
        .prop_map(move |(sp, reason_code, properties)| {
            let session_present = sp && version != ProtocolVersion::V3_1;
            Packet::ConnAck(ConnAck { session_present, reason_code, properties })
        })
        .boxed()
}

fn publish(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        1u16..,
        props_for(version, PropertyContext::Publish),
        binary(),
    )
        .prop_map(|(dup, qos, retain, topic, pid, properties, payload)| {
            let q0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !q0,
                qos,
                retain,
                topic,
                packet_id: if q0 { 0 } else { pid },
                properties,
                payload,
            })
        })
        .boxed()
}

fn pub_ack(version: ProtocolVersion, kind: PacketType) -> BoxedStrategy<Packet> {
    use ReasonCode as R;
    let (codes, ctx): (&'static [ReasonCode], _) = match kind {
        PacketType::PubAck => (
            &[R::Success, R::NoMatchingSubscribers, R::NotAuthorized, R::QuotaExceeded],
            PropertyContext::PubAck,
        ),
        PacketType::PubRec => {
            (&[R::Success, R::NoMatchingSubscribers, R::PacketIdentifierInUse], PropertyContext::PubRec)
        }
        PacketType::PubRel => (&[R::Success, R::PacketIdentifierNotFound], PropertyContext::PubRel),
        _ => (&[R::Success, R::PacketIdentifierNotFound], PropertyContext::PubComp),
    };
    let codes: &'static [ReasonCode] = if version.is_v5() { codes } else { &[R::Success] };
    (1u16.., reason(codes), props_for(version, ctx))
        .prop_map(move |(packet_id, reason_code, properties)| {
            let a = PublishAck { packet_id, reason_code, properties };
            match kind {
                PacketType::PubAck => Packet::PubAck(a),
                PacketType::PubRec => Packet::PubRec(a),
                PacketType::PubRel => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        })
        .boxed()
}

fn subscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        if !version.is_v5() {
            return SubscriptionOptions::qos(qos);
        }
        SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: [
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ][rh as usize],
        }
    });
    (
        1u16..,
        props_for(version, PropertyContext::Subscribe),
        prop::collection::vec((topic_filter(), options), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe { packet_id, properties, filters })
        })
        .boxed()
}

fn suback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    use ReasonCode as R;
    let codes: &'static [ReasonCode] = if version.is_v5() {
        &[
            R::Success,
            R::GrantedQoS1,
            R::GrantedQoS2,
            R::NotAuthorized,
            R::TopicFilterInvalid,
            R::QuotaExceeded,
        ]
    } else {
        &[R::Success, R::GrantedQoS1, R::GrantedQoS2, R::UnspecifiedError]
    };
    (1u16.., props_for(version, PropertyContext::SubAck), prop::collection::vec(reason(codes), 1..6))
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck { packet_id, properties, reason_codes })
        })
        .boxed()
}

fn unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (1u16.., props_for(version, PropertyContext::Unsubscribe), prop::collection::vec(topic_filter(), 1..5))
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, properties, filters })
        })
        .boxed()
}

fn unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    use ReasonCode as R;
    let codes = if version.is_v5() { 1..6 } else { 0..1 };
    (
        1u16..,
        props_for(version, PropertyContext::UnsubAck),
        prop::collection::vec(reason(&[R::Success, R::NoSubscriptionExisted, R::NotAuthorized]), codes),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    use ReasonCode as R;
    let codes: &'static [ReasonCode] = if version.is_v5() {
        &[R::Success, R::DisconnectWithWill, R::ProtocolError, R::SessionTakenOver, R::ServerShuttingDown]
    } else {
        &[R::Success]
    };
    (reason(codes), props_for(version, PropertyContext::Disconnect))
        .prop_map(|(reason_code, properties)| Packet::Disconnect(Disconnect { reason_code, properties }))
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    use ReasonCode as R;
    (reason(&[R::Success, R::ContinueAuthentication, R::ReAuthenticate]), properties(PropertyContext::Auth))
        .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }))
        .boxed()
}

fn any_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(version),
        connack(version),
        publish(version),
        pub_ack(version, PacketType::PubAck),
        pub_ack(version, PacketType::PubRec),
        pub_ack(version, PacketType::PubRel),
        pub_ack(version, PacketType::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version),
    ];
    if version.is_v5() {
        all.push(auth());
    }
    prop::strategy::Union::new(all).boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop::sample::select(VERSIONS.to_vec()).prop_flat_map(|v| any_packet(v).prop_map(move |p| (v, p)))
}

fn round_trip(version: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(buf.len(), packet.encoded_len(version));
    let decoded =
        decode(&mut buf, version, usize::MAX).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    prop_assert!(buf.is_empty(), "the decoder consumed exactly one packet");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_round_trips((version, packet) in versioned_packet()) {
        round_trip(version, &packet)?;
    }

    /// Several packets in one buffer, read as they would arrive from a socket in chunks.
    #[test]
    fn a_stream_of_packets_decodes_in_any_chunking(
        (version, packets) in prop::sample::select(VERSIONS.to_vec())
            .prop_flat_map(|v| prop::collection::vec(any_packet(v), 1..8).prop_map(move |p| (v, p))),
        chunk in 1usize..64,
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            p.encode(version, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = decode(&mut buf, version, usize::MAX).unwrap() {
                out.push(p);
            }
        }
        prop_assert_eq!(out, packets);
        prop_assert!(buf.is_empty());
    }
}

/// Each generator really produces its packet type (so the union above covers all of them).
#[test]
fn every_packet_type_is_generated() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    for version in VERSIONS {
        let mut runner = TestRunner::deterministic();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let p = any_packet(version).new_tree(&mut runner).unwrap().current();
            seen.insert(p.packet_type());
        }
        let expected = if version.is_v5() { 15 } else { 14 };
        assert_eq!(seen.len(), expected, "{version}: {seen:?}");
    }
}
