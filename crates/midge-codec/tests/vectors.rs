//! Byte-exact vectors for every control packet of MQTT 3.1, 3.1.1 and 5.0, written by hand
//! from the OASIS specifications (MQTT 3.1.1 chapters 2 and 3, MQTT 5.0 chapters 2 and 3).
//!
//! Each vector is checked both ways: the bytes decode to the packet (with [`decode`] and
//! [`decode_frame`]), and the packet encodes to exactly those bytes.
use midge_codec::{
    decode, decode_frame, Auth, ByteString, Bytes, BytesMut, ConnAck, Connect, Disconnect, Packet,
    Properties, Property, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Concatenates hand-written fields into one packet.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

fn props(v: Vec<Property>) -> Properties {
    Properties::from(v)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Checks one vector in `version`: decode(bytes) == packet, and encode(packet) == bytes.
#[track_caller]
fn check(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    // Incremental decoding consumes exactly the packet.
    let mut buf = BytesMut::from(bytes);
    let decoded = decode(&mut buf, version, usize::MAX);
    assert_eq!(decoded, Ok(Some(packet.clone())), "decode in {version} of {}", hex(bytes));
    assert!(buf.is_empty(), "decode left {} bytes behind", buf.len());

    // Whole-frame decoding agrees.
    let framed = decode_frame(Bytes::copy_from_slice(bytes), version, usize::MAX);
    assert_eq!(framed, Ok(packet.clone()), "decode_frame in {version}");

    // Encoding gives the same bytes, appended after whatever the buffer already held.
    let mut out = BytesMut::from(&b"prefix"[..]);
    packet.encode(version, &mut out).expect("encode");
    assert!(&out[6..] == bytes, "encode in {version}:\n  got  {}\n  want {}", hex(&out[6..]), hex(bytes));
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(packet.to_bytes(version).expect("to_bytes"), bytes);
    assert_eq!(packet.encoded_len(version), bytes.len(), "encoded_len in {version}");
}

/// Checks one vector in each of `versions` (packets whose layout did not change).
#[track_caller]
fn check_each(versions: &[ProtocolVersion], bytes: &[u8], packet: Packet) {
    for &v in versions {
        check(v, bytes, packet.clone());
    }
}

/// Checks bytes that decode to `packet` but are not the form the encoder chooses (the
/// specification lets a sender omit a 0x00 reason code and an empty property block).
#[track_caller]
fn check_decode_only(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(decode(&mut buf, version, usize::MAX), Ok(Some(packet)), "decode of {}", hex(bytes));
    assert!(buf.is_empty());
}

fn connect(protocol: ProtocolVersion, client_id: &'static str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::new(),
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        bridge: false,
    }
}

fn publish(qos: QoS, topic: &'static str, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s(topic),
        packet_id,
        properties: Properties::new(),
        payload: b(payload),
    }
}

fn options(qos: QoS, no_local: bool, rap: bool, rh: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions { qos, no_local, retain_as_published: rap, retain_handling: rh }
}

// ---------------------------------------------------------------------------------------------
// CONNECT (3.1.1 section 3.1, 5.0 section 3.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_3_1_minimal() {
    let bytes = cat(&[
        &[0x10, 0x10],             // CONNECT, flags 0000; remaining length 16
        &[0x00, 0x06],             // protocol name length 6
        b"MQIsdp",                 // protocol name of MQTT 3.1
        &[0x03],                   // protocol level 3
        &[0x02],                   // connect flags: clean session
        &[0x00, 0x3c],             // keep alive 60 s
        &[0x00, 0x02, b'c', b'1'], // client identifier "c1"
    ]);
    check(V3_1, &bytes, Packet::Connect(Box::new(connect(V3_1, "c1"))));
}

#[test]
fn connect_3_1_will_username_password() {
    let bytes = cat(&[
        &[0x10, 0x1e],                   // CONNECT; remaining length 30
        &[0x00, 0x06],                   // protocol name length
        b"MQIsdp",                       // protocol name
        &[0x03],                         // level 3
        &[0xd6],                         // user name | password | will QoS 2 | will | clean session
        &[0x00, 0x3c],                   // keep alive 60
        &[0x00, 0x02, b'c', b'1'],       // client identifier "c1"
        &[0x00, 0x03, b'a', b'/', b'b'], // will topic "a/b"
        &[0x00, 0x01, b'x'],             // will message "x"
        &[0x00, 0x01, b'u'],             // user name "u"
        &[0x00, 0x01, b'p'],             // password "p"
    ]);
    let mut c = connect(V3_1, "c1");
    c.will = Some(Will {
        topic: s("a/b"),
        payload: b(b"x"),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Properties::new(),
    });
    c.username = Some(s("u"));
    c.password = Some(b(b"p"));
    check(V3_1, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_3_1_1_minimal() {
    let bytes = cat(&[
        &[0x10, 0x0c], // CONNECT; remaining length 12
        &[0x00, 0x04], // protocol name length
        b"MQTT",       // protocol name
        &[0x04],       // protocol level 4
        &[0x02],       // clean session
        &[0x00, 0x00], // keep alive off
        &[0x00, 0x00], // zero-length client identifier [MQTT-3.1.3-6]
    ]);
    let mut c = connect(V3_1_1, "");
    c.keep_alive = 0;
    check(V3_1_1, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_3_1_1_spec_example_flags_with_everything() {
    // The variable header of 3.1.1 figure 3.6 (flags 0xCE, keep alive 10), completed with a
    // payload: client id, will topic, will message, user name, password.
    let bytes = cat(&[
        &[0x10, 0x28],                   // CONNECT; remaining length 40
        &[0x00, 0x04],                   // protocol name length
        b"MQTT",                         // protocol name
        &[0x04],                         // level 4
        &[0xce],                         // user name | password | will QoS 1 | will | clean
        &[0x00, 0x0a],                   // keep alive 10
        &[0x00, 0x06],                   // client identifier length
        b"client",                       // client identifier
        &[0x00, 0x03, b'w', b'/', b't'], // will topic "w/t"
        &[0x00, 0x04],                   // will message length
        b"gone",                         // will message
        &[0x00, 0x04],                   // user name length
        b"user",                         // user name
        &[0x00, 0x03, 0x01, 0x02, 0x03], // password: binary data
    ]);
    let mut c = connect(V3_1_1, "client");
    c.keep_alive = 10;
    c.will = Some(Will {
        topic: s("w/t"),
        payload: b(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
    });
    c.username = Some(s("user"));
    c.password = Some(b(&[1, 2, 3]));
    check(V3_1_1, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_3_1_1_retained_will_and_user_name_only() {
    let bytes = cat(&[
        &[0x10, 0x18],                   // CONNECT; remaining length 24
        &[0x00, 0x04],                   // protocol name length
        b"MQTT",                         // protocol name
        &[0x04],                         // level 4
        &[0xa4],                         // user name | will retain | will QoS 0 | will; no clean
        &[0x01, 0x2c],                   // keep alive 300
        &[0x00, 0x02, b'i', b'd'],       // client identifier "id"
        &[0x00, 0x01, b't'],             // will topic "t"
        &[0x00, 0x00],                   // empty will message
        &[0x00, 0x03, b'b', b'o', b'b'], // user name "bob"
    ]);
    let mut c = connect(V3_1_1, "id");
    c.clean_start = false;
    c.keep_alive = 300;
    c.will = Some(Will {
        topic: s("t"),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::new(),
    });
    c.username = Some(s("bob"));
    check(V3_1_1, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_5_minimal() {
    let bytes = cat(&[
        &[0x10, 0x0d], // CONNECT; remaining length 13
        &[0x00, 0x04], // protocol name length
        b"MQTT",       // protocol name
        &[0x05],       // protocol version 5
        &[0x02],       // clean start
        &[0x00, 0x3c], // keep alive 60
        &[0x00],       // property length 0 [MQTT-2.2.2-1]
        &[0x00, 0x00], // empty client identifier
    ]);
    check(V5, &bytes, Packet::Connect(Box::new(connect(V5, ""))));
}

#[test]
fn connect_5_spec_example_variable_header() {
    // 5.0 figure 3-6: flags 0xCE, keep alive 10, Session Expiry Interval 10; completed with a
    // payload whose every field is present.
    let bytes = cat(&[
        &[0x10, 0x1e],                   // CONNECT; remaining length 30
        &[0x00, 0x04],                   // protocol name length
        b"MQTT",                         // protocol name
        &[0x05],                         // version 5
        &[0xce],                         // user name | password | will QoS 1 | will | clean start
        &[0x00, 0x0a],                   // keep alive 10
        &[0x05],                         // property length 5
        &[0x11, 0x00, 0x00, 0x00, 0x0a], // Session Expiry Interval 10
        &[0x00, 0x01, b'c'],             // client identifier "c"
        &[0x00],                         // will property length 0
        &[0x00, 0x01, b't'],             // will topic "t"
        &[0x00, 0x00],                   // empty will payload
        &[0x00, 0x01, b'u'],             // user name "u"
        &[0x00, 0x00],                   // empty password
    ]);
    let mut c = connect(V5, "c");
    c.keep_alive = 10;
    c.properties = props(vec![Property::SessionExpiryInterval(10)]);
    c.will = Some(Will {
        topic: s("t"),
        payload: Bytes::new(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
    });
    c.username = Some(s("u"));
    c.password = Some(Bytes::new());
    check(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_5_with_properties_and_will_properties() {
    let bytes = cat(&[
        &[0x10, 0x71],                               // CONNECT; remaining length 113
        &[0x00, 0x04],                               // protocol name length
        b"MQTT",                                     // protocol name
        &[0x05],                                     // version 5
        &[0xce],                                     // user name | password | will QoS 1 | will | clean
        &[0x00, 0x1e],                               // keep alive 30
        &[0x1b],                                     // property length 27
        &[0x11, 0x00, 0x00, 0x00, 0x78],             //   Session Expiry Interval 120
        &[0x21, 0x00, 0x14],                         //   Receive Maximum 20
        &[0x27, 0x00, 0x00, 0x04, 0x00],             //   Maximum Packet Size 1024
        &[0x22, 0x00, 0x0a],                         //   Topic Alias Maximum 10
        &[0x19, 0x01],                               //   Request Response Information 1
        &[0x17, 0x00],                               //   Request Problem Information 0
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'], // User Property k=v
        &[0x00, 0x03],                               // client identifier length
        b"cid",                                      // client identifier
        &[0x2b],                                     // will property length 43
        &[0x18, 0x00, 0x00, 0x00, 0x05],             //   Will Delay Interval 5
        &[0x01, 0x01],                               //   Payload Format Indicator: UTF-8
        &[0x02, 0x00, 0x00, 0x00, 0x3c],             //   Message Expiry Interval 60
        &[0x03, 0x00, 0x0a],                         //   Content Type, length 10
        b"text/plain",                               //     "text/plain"
        &[0x08, 0x00, 0x03, b'r', b'/', b't'],       //   Response Topic "r/t"
        &[0x09, 0x00, 0x02, 0x01, 0x02],             //   Correlation Data 01 02
        &[0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'], // User Property a=b
        &[0x00, 0x04],                               // will topic length
        b"will",                                     // will topic
        &[0x00, 0x03],                               // will payload length
        b"bye",                                      // will payload
        &[0x00, 0x05],                               // user name length
        b"alice",                                    // user name
        &[0x00, 0x06],                               // password length
        b"secret",                                   // password
    ]);
    let mut c = connect(V5, "cid");
    c.keep_alive = 30;
    c.properties = props(vec![
        Property::SessionExpiryInterval(120),
        Property::ReceiveMaximum(20),
        Property::MaximumPacketSize(1024),
        Property::TopicAliasMaximum(10),
        Property::RequestResponseInformation(1),
        Property::RequestProblemInformation(0),
        Property::UserProperty(s("k"), s("v")),
    ]);
    c.will = Some(Will {
        topic: s("will"),
        payload: b(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: props(vec![
            Property::WillDelayInterval(5),
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(60),
            Property::ContentType(s("text/plain")),
            Property::ResponseTopic(s("r/t")),
            Property::CorrelationData(b(&[1, 2])),
            Property::UserProperty(s("a"), s("b")),
        ]),
    });
    c.username = Some(s("alice"));
    c.password = Some(b(b"secret"));
    check(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_5_password_without_user_name_and_extended_auth() {
    // 5.0 section 3.1.2.9: a password without a user name is allowed (3.1.1 forbade it).
    let bytes = cat(&[
        &[0x10, 0x1e],                   // CONNECT; remaining length 30
        &[0x00, 0x04],                   // protocol name length
        b"MQTT",                         // protocol name
        &[0x05],                         // version 5
        &[0x40],                         // password only; clean start 0
        &[0x00, 0x00],                   // keep alive off
        &[0x0d],                         // property length 13
        &[0x15, 0x00, 0x05],             //   Authentication Method, length 5
        b"SCRAM",                        //     "SCRAM"
        &[0x16, 0x00, 0x02, 0xaa, 0xbb], // Authentication Data aa bb
        &[0x00, 0x00],                   // empty client identifier
        &[0x00, 0x02, b'p', b'w'],       // password "pw"
    ]);
    let mut c = connect(V5, "");
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties = props(vec![
        Property::AuthenticationMethod(s("SCRAM")),
        Property::AuthenticationData(b(&[0xaa, 0xbb])),
    ]);
    c.password = Some(b(b"pw"));
    check(V5, &bytes, Packet::Connect(Box::new(c)));
}

// ---------------------------------------------------------------------------------------------
// CONNACK (3.1.1 section 3.2, 5.0 section 3.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn connack_3_1_and_3_1_1_accepted() {
    let bytes = [
        0x20, 0x02, // CONNACK; remaining length 2
        0x00, // acknowledge flags: no session present
        0x00, // return code 0: connection accepted
    ];
    check_each(&[V3_1, V3_1_1], &bytes, Packet::ConnAck(ConnAck::new(ReasonCode::Success)));
}

#[test]
fn connack_3_1_1_session_present() {
    let bytes = [
        0x20, 0x02, // CONNACK; remaining length 2
        0x01, // Session Present
        0x00, // accepted
    ];
    let mut ack = ConnAck::new(ReasonCode::Success);
    ack.session_present = true;
    check(V3_1_1, &bytes, Packet::ConnAck(ack));
}

#[test]
fn connack_3_1_1_every_refusal_return_code() {
    // 3.1.1 table 3.1: return codes 1 to 5, each the same meaning as a 5.0 reason code.
    let codes = [
        (0x01, ReasonCode::UnsupportedProtocolVersion),
        (0x02, ReasonCode::ClientIdentifierNotValid),
        (0x03, ReasonCode::ServerUnavailable),
        (0x04, ReasonCode::BadUserNameOrPassword),
        (0x05, ReasonCode::NotAuthorized),
    ];
    for (code, reason) in codes {
        let bytes = [
            0x20, 0x02, // CONNACK; remaining length 2
            0x00, // no session
            code, // return code
        ];
        check(V3_1_1, &bytes, Packet::ConnAck(ConnAck::new(reason)));
    }
}

#[test]
fn connack_5_success_without_properties() {
    let bytes = [
        0x20, 0x03, // CONNACK; remaining length 3
        0x00, // no session
        0x00, // reason code Success
        0x00, // property length 0
    ];
    check(V5, &bytes, Packet::ConnAck(ConnAck::new(ReasonCode::Success)));
}

#[test]
fn connack_5_not_authorized() {
    let bytes = [
        0x20, 0x03, // CONNACK; remaining length 3
        0x00, // no session
        0x87, // Not authorized
        0x00, // property length 0
    ];
    check(V5, &bytes, Packet::ConnAck(ConnAck::new(ReasonCode::NotAuthorized)));
}

#[test]
fn connack_5_with_every_server_property() {
    let bytes = cat(&[
        &[0x20, 0x48],                               // CONNACK; remaining length 72
        &[0x01],                                     // Session Present
        &[0x00],                                     // Success
        &[0x45],                                     // property length 69
        &[0x11, 0x00, 0x00, 0x0e, 0x10],             //   Session Expiry Interval 3600
        &[0x21, 0x00, 0x64],                         //   Receive Maximum 100
        &[0x24, 0x01],                               //   Maximum QoS 1
        &[0x25, 0x00],                               //   Retain Available 0
        &[0x27, 0x00, 0x01, 0x00, 0x00],             //   Maximum Packet Size 65536
        &[0x12, 0x00, 0x06],                         //   Assigned Client Identifier, length 6
        b"auto-1",                                   //     "auto-1"
        &[0x22, 0x00, 0x05],                         //   Topic Alias Maximum 5
        &[0x1f, 0x00, 0x02, b'o', b'k'],             //   Reason String "ok"
        &[0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y'], //  User Property x=y
        &[0x28, 0x01],                               //   Wildcard Subscription Available 1
        &[0x29, 0x01],                               //   Subscription Identifiers Available 1
        &[0x2a, 0x00],                               //   Shared Subscription Available 0
        &[0x13, 0x00, 0x1e],                         //   Server Keep Alive 30
        &[0x1a, 0x00, 0x04],                         //   Response Information, length 4
        b"resp",                                     //     "resp"
        &[0x15, 0x00, 0x05],                         //   Authentication Method, length 5
        b"SCRAM",                                    //     "SCRAM"
        &[0x16, 0x00, 0x01, 0x07],                   //   Authentication Data 07
    ]);
    let ack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: props(vec![
            Property::SessionExpiryInterval(3600),
            Property::ReceiveMaximum(100),
            Property::MaximumQoS(1),
            Property::RetainAvailable(0),
            Property::MaximumPacketSize(65536),
            Property::AssignedClientIdentifier(s("auto-1")),
            Property::TopicAliasMaximum(5),
            Property::ReasonString(s("ok")),
            Property::UserProperty(s("x"), s("y")),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(0),
            Property::ServerKeepAlive(30),
            Property::ResponseInformation(s("resp")),
            Property::AuthenticationMethod(s("SCRAM")),
            Property::AuthenticationData(b(&[7])),
        ]),
    };
    check(V5, &bytes, Packet::ConnAck(ack));
}

#[test]
fn connack_5_use_another_server() {
    let bytes = cat(&[
        &[0x20, 0x10],       // CONNACK; remaining length 16
        &[0x00],             // no session
        &[0x9c],             // Use another server
        &[0x0d],             // property length 13
        &[0x1c, 0x00, 0x0a], //   Server Reference, length 10
        b"other:1883",       //     "other:1883"
    ]);
    let mut ack = ConnAck::new(ReasonCode::UseAnotherServer);
    ack.properties = props(vec![Property::ServerReference(s("other:1883"))]);
    check(V5, &bytes, Packet::ConnAck(ack));
}

// ---------------------------------------------------------------------------------------------
// PUBLISH (3.1.1 section 3.3, 5.0 section 3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_qos0_3_1_and_3_1_1() {
    let bytes = cat(&[
        &[0x30, 0x0a],                   // PUBLISH, DUP 0, QoS 0, RETAIN 0; remaining length 10
        &[0x00, 0x03, b'a', b'/', b'b'], // topic name "a/b"; no packet identifier at QoS 0
        b"hello",                        // payload
    ]);
    check_each(&[V3_1, V3_1_1], &bytes, Packet::Publish(publish(QoS::AtMostOnce, "a/b", 0, b"hello")));
}

#[test]
fn publish_qos1_retain_3_1_1_spec_example() {
    // 3.1.1 figure 3.11: topic "a/b", packet identifier 10.
    let bytes = cat(&[
        &[0x33, 0x08],                   // PUBLISH, QoS 1, RETAIN; remaining length 8
        &[0x00, 0x03, b'a', b'/', b'b'], // topic name "a/b"
        &[0x00, 0x0a],                   // packet identifier 10
        b"x",                            // payload
    ]);
    let mut p = publish(QoS::AtLeastOnce, "a/b", 10, b"x");
    p.retain = true;
    check(V3_1_1, &bytes, Packet::Publish(p));
}

#[test]
fn publish_qos2_dup_empty_payload_3_1_1() {
    let bytes = cat(&[
        &[0x3c, 0x05],       // PUBLISH, DUP, QoS 2; remaining length 5
        &[0x00, 0x01, b't'], // topic name "t"
        &[0x12, 0x34],       // packet identifier 0x1234
        &[],                 // zero-length payload
    ]);
    let mut p = publish(QoS::ExactlyOnce, "t", 0x1234, b"");
    p.dup = true;
    check(V3_1_1, &bytes, Packet::Publish(p));
}

#[test]
fn publish_qos1_dup_retain_3_1_1() {
    let bytes = [
        0x3b, 0x07, // PUBLISH, DUP, QoS 1, RETAIN; remaining length 7
        0x00, 0x01, b't', // topic name "t"
        0x00, 0x01, // packet identifier 1
        b'o', b'k', // payload
    ];
    let mut p = publish(QoS::AtLeastOnce, "t", 1, b"ok");
    p.dup = true;
    p.retain = true;
    check(V3_1_1, &bytes, Packet::Publish(p));
}

#[test]
fn publish_qos0_5_without_properties() {
    let bytes = cat(&[
        &[0x30, 0x08],                   // PUBLISH, QoS 0; remaining length 8
        &[0x00, 0x03, b'a', b'/', b'b'], // topic name "a/b"
        &[0x00],                         // property length 0
        b"hi",                           // payload
    ]);
    check(V5, &bytes, Packet::Publish(publish(QoS::AtMostOnce, "a/b", 0, b"hi")));
}

#[test]
fn publish_qos1_5_with_every_publish_property() {
    let bytes = cat(&[
        &[0x32, 0x50],                               // PUBLISH, QoS 1; remaining length 80
        &[0x00, 0x03, b's', b'/', b't'],             // topic name "s/t"
        &[0x00, 0x01],                               // packet identifier 1
        &[0x46],                                     // property length 70
        &[0x01, 0x01],                               //   Payload Format Indicator: UTF-8
        &[0x02, 0x00, 0x00, 0x00, 0x1e],             //   Message Expiry Interval 30
        &[0x23, 0x00, 0x03],                         //   Topic Alias 3
        &[0x08, 0x00, 0x06],                         //   Response Topic, length 6
        b"resp/t",                                   //     "resp/t"
        &[0x09, 0x00, 0x03, 0xc0, 0xff, 0xee],       //   Correlation Data c0 ff ee
        &[0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1'], //   User Property a=1
        &[0x26, 0x00, 0x01, b'b', 0x00, 0x01, b'2'], //   User Property b=2
        &[0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'3'], //   User Property a=3 (same name again)
        &[0x0b, 0x01],                               //   Subscription Identifier 1
        &[0x0b, 0xc8, 0x01],                         //   Subscription Identifier 200 (2-byte VBI)
        &[0x03, 0x00, 0x10],                         //   Content Type, length 16
        b"application/json",                         //     "application/json"
        b"{}",                                       // payload
    ]);
    let mut p = publish(QoS::AtLeastOnce, "s/t", 1, b"{}");
    p.properties = props(vec![
        Property::PayloadFormatIndicator(1),
        Property::MessageExpiryInterval(30),
        Property::TopicAlias(3),
        Property::ResponseTopic(s("resp/t")),
        Property::CorrelationData(b(&[0xc0, 0xff, 0xee])),
        Property::UserProperty(s("a"), s("1")),
        Property::UserProperty(s("b"), s("2")),
        Property::UserProperty(s("a"), s("3")),
        Property::SubscriptionIdentifier(1),
        Property::SubscriptionIdentifier(200),
        Property::ContentType(s("application/json")),
    ]);
    check(V5, &bytes, Packet::Publish(p.clone()));

    // User properties keep their order, repeated names included [MQTT-3.3.2-18].
    let Ok(Some(Packet::Publish(d))) = decode(&mut BytesMut::from(&bytes[..]), V5, usize::MAX) else {
        panic!("not a PUBLISH")
    };
    let users: Vec<(&str, &str)> = d.properties.user_properties().map(|(k, v)| (&k[..], &v[..])).collect();
    assert_eq!(users, [("a", "1"), ("b", "2"), ("a", "3")]);
    assert_eq!(d.properties.subscription_identifiers().collect::<Vec<_>>(), [1, 200]);
}

#[test]
fn publish_5_empty_topic_with_topic_alias() {
    // 5.0 section 3.3.2.3.4: a zero-length topic name stands for the topic of the alias.
    let bytes = [
        0x30, 0x07, // PUBLISH, QoS 0; remaining length 7
        0x00, 0x00, // zero-length topic name
        0x03, // property length 3
        0x23, 0x00, 0x05, //   Topic Alias 5
        b'p', // payload
    ];
    let mut p = publish(QoS::AtMostOnce, "", 0, b"p");
    p.properties = props(vec![Property::TopicAlias(5)]);
    check(V5, &bytes, Packet::Publish(p));
}

#[test]
fn publish_5_qos2_dup_retain_largest_subscription_identifier() {
    let bytes = cat(&[
        &[0x3d, 0x0b],                   // PUBLISH, DUP, QoS 2, RETAIN; remaining length 11
        &[0x00, 0x01, b'x'],             // topic name "x"
        &[0xff, 0xff],                   // packet identifier 65535
        &[0x05],                         // property length 5
        &[0x0b, 0xff, 0xff, 0xff, 0x7f], //   Subscription Identifier 268,435,455 (4-byte VBI)
        &[],                             // zero-length payload
    ]);
    let mut p = publish(QoS::ExactlyOnce, "x", 0xffff, b"");
    p.dup = true;
    p.retain = true;
    p.properties = props(vec![Property::SubscriptionIdentifier(268_435_455)]);
    check(V5, &bytes, Packet::Publish(p));
}

/// A QoS 0 PUBLISH to topic "t" whose remaining length is `remaining`, with the remaining
/// length bytes written out by hand (1.5.5 table 1-1 / 3.1.1 table 2.4).
fn check_remaining_length(remaining: usize, length_bytes: &[u8]) {
    let payload = vec![0xab; remaining - 3];
    let bytes = cat(&[
        &[0x30],             // PUBLISH, QoS 0
        length_bytes,        // remaining length
        &[0x00, 0x01, b't'], // topic name "t"
        &payload,            // payload
    ]);
    let p = Publish::new("t", Bytes::from(payload.clone()));
    check(V3_1_1, &bytes, Packet::Publish(p));
}

#[test]
fn remaining_length_127_takes_one_byte() {
    check_remaining_length(127, &[0x7f]);
}

#[test]
fn remaining_length_128_takes_two_bytes() {
    check_remaining_length(128, &[0x80, 0x01]);
}

#[test]
fn remaining_length_16383_takes_two_bytes() {
    check_remaining_length(16_383, &[0xff, 0x7f]);
}

#[test]
fn remaining_length_16384_takes_three_bytes() {
    check_remaining_length(16_384, &[0x80, 0x80, 0x01]);
}

#[test]
fn remaining_length_2097151_takes_three_bytes() {
    check_remaining_length(2_097_151, &[0xff, 0xff, 0x7f]);
}

#[test]
fn remaining_length_2097152_takes_four_bytes() {
    check_remaining_length(2_097_152, &[0x80, 0x80, 0x80, 0x01]);
}

// ---------------------------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 to 3.7)
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_acks_3_1_and_3_1_1() {
    let v3 = [V3_1, V3_1_1];
    // PUBACK: type 4, flags 0000; packet identifier 1.
    check_each(&v3, &[0x40, 0x02, 0x00, 0x01], Packet::PubAck(PubAck::new(1)));
    // PUBREC: type 5, flags 0000; packet identifier 2.
    check_each(&v3, &[0x50, 0x02, 0x00, 0x02], Packet::PubRec(PubRec::new(2)));
    // PUBREL: type 6, flags 0010 [MQTT-3.6.1-1]; packet identifier 3.
    check_each(&v3, &[0x62, 0x02, 0x00, 0x03], Packet::PubRel(PubRel::new(3)));
    // PUBCOMP: type 7, flags 0000; packet identifier 4.
    check_each(&v3, &[0x70, 0x02, 0x00, 0x04], Packet::PubComp(PubComp::new(4)));
}

#[test]
fn puback_5_short_form() {
    // Section 3.4.2.1: remaining length 2 means Success and no properties.
    check(V5, &[0x40, 0x02, 0x12, 0x34], Packet::PubAck(PubAck::new(0x1234)));
}

#[test]
fn puback_5_reason_code_only() {
    let bytes = [
        0x40, 0x03, // PUBACK; remaining length 3
        0x00, 0x05, // packet identifier 5
        0x10, // No matching subscribers; no property length (remaining length < 4)
    ];
    check(V5, &bytes, Packet::PubAck(PubAck::with_reason(5, ReasonCode::NoMatchingSubscribers)));
}

#[test]
fn puback_5_reason_code_and_properties() {
    let bytes = [
        0x40, 0x11, // PUBACK; remaining length 17
        0x00, 0x06, // packet identifier 6
        0x80, // Unspecified error
        0x0d, // property length 13
        0x1f, 0x00, 0x03, b'b', b'a', b'd', //   Reason String "bad"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
    ];
    let mut ack = PubAck::with_reason(6, ReasonCode::UnspecifiedError);
    ack.properties = props(vec![Property::ReasonString(s("bad")), Property::UserProperty(s("k"), s("v"))]);
    check(V5, &bytes, Packet::PubAck(ack));
}

#[test]
fn pubrec_5_short_form() {
    check(V5, &[0x50, 0x02, 0x00, 0x07], Packet::PubRec(PubRec::new(7)));
}

#[test]
fn pubrec_5_reason_code_only() {
    let bytes = [
        0x50, 0x03, // PUBREC; remaining length 3
        0x00, 0x07, // packet identifier 7
        0x91, // Packet Identifier in use
    ];
    check(V5, &bytes, Packet::PubRec(PubRec::with_reason(7, ReasonCode::PacketIdentifierInUse)));
}

#[test]
fn pubrec_5_success_with_properties() {
    // With properties, the 0x00 reason code must be written out.
    let bytes = [
        0x50, 0x08, // PUBREC; remaining length 8
        0x00, 0x08, // packet identifier 8
        0x00, // Success
        0x04, // property length 4
        0x1f, 0x00, 0x01, b'r', // Reason String "r"
    ];
    let mut ack = PubRec::new(8);
    ack.properties = props(vec![Property::ReasonString(s("r"))]);
    check(V5, &bytes, Packet::PubRec(ack));
}

#[test]
fn pubrel_5_short_form() {
    check(V5, &[0x62, 0x02, 0x00, 0x09], Packet::PubRel(PubRel::new(9)));
}

#[test]
fn pubrel_5_reason_code_only() {
    let bytes = [
        0x62, 0x03, // PUBREL, flags 0010; remaining length 3
        0x00, 0x0a, // packet identifier 10
        0x92, // Packet Identifier not found
    ];
    check(V5, &bytes, Packet::PubRel(PubRel::with_reason(10, ReasonCode::PacketIdentifierNotFound)));
}

#[test]
fn pubrel_5_reason_code_and_properties() {
    let bytes = [
        0x62, 0x0a, // PUBREL; remaining length 10
        0x00, 0x0b, // packet identifier 11
        0x92, // Packet Identifier not found
        0x06, // property length 6
        0x1f, 0x00, 0x03, b'g', b'o', b'n', // Reason String "gon"
    ];
    let mut ack = PubRel::with_reason(11, ReasonCode::PacketIdentifierNotFound);
    ack.properties = props(vec![Property::ReasonString(s("gon"))]);
    check(V5, &bytes, Packet::PubRel(ack));
}

#[test]
fn pubcomp_5_short_form() {
    check(V5, &[0x70, 0x02, 0x00, 0x0c], Packet::PubComp(PubComp::new(12)));
}

#[test]
fn pubcomp_5_reason_code_only() {
    let bytes = [
        0x70, 0x03, // PUBCOMP; remaining length 3
        0x00, 0x0d, // packet identifier 13
        0x92, // Packet Identifier not found
    ];
    check(V5, &bytes, Packet::PubComp(PubComp::with_reason(13, ReasonCode::PacketIdentifierNotFound)));
}

#[test]
fn pubcomp_5_success_with_user_property() {
    let bytes = [
        0x70, 0x0b, // PUBCOMP; remaining length 11
        0x00, 0x0e, // packet identifier 14
        0x00, // Success
        0x07, // property length 7
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // User Property a=b
    ];
    let mut ack = PubComp::new(14);
    ack.properties = props(vec![Property::UserProperty(s("a"), s("b"))]);
    check(V5, &bytes, Packet::PubComp(ack));
}

#[test]
fn acks_5_equivalent_longer_forms_decode_to_the_short_form() {
    // Sections 3.4.2.1 / 3.4.2.2.1: a 0x00 reason code and an empty property block may be
    // written out; the packet is the same, and the encoder chooses the short form.
    check_decode_only(V5, &[0x40, 0x03, 0x00, 0x01, 0x00], Packet::PubAck(PubAck::new(1)));
    check_decode_only(V5, &[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], Packet::PubAck(PubAck::new(1)));
    check_decode_only(V5, &[0x62, 0x04, 0x00, 0x02, 0x00, 0x00], Packet::PubRel(PubRel::new(2)));
    // DISCONNECT and AUTH (sections 3.14.2.1 and 3.15.2.1) likewise.
    check_decode_only(V5, &[0xe0, 0x01, 0x00], Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
    check_decode_only(
        V5,
        &[0xe0, 0x02, 0x00, 0x00],
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
    );
    check_decode_only(
        V5,
        &[0xf0, 0x02, 0x00, 0x00],
        Packet::Auth(Auth { reason_code: ReasonCode::Success, properties: Properties::new() }),
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE (3.1.1 section 3.8, 5.0 section 3.8)
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_3_1_and_3_1_1_spec_example() {
    // 3.1.1 figure 3.22 / 5.0 figure 3-21: "a/b" at QoS 1 and "c/d" at QoS 2, packet id 10.
    let bytes = [
        0x82, 0x0e, // SUBSCRIBE, flags 0010 [MQTT-3.8.1-1]; remaining length 14
        0x00, 0x0a, // packet identifier 10
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b"
        0x01, //   requested QoS 1
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d"
        0x02, //   requested QoS 2
    ];
    let sub = Subscribe {
        packet_id: 10,
        properties: Properties::new(),
        filters: vec![
            (s("a/b"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (s("c/d"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    check_each(&[V3_1, V3_1_1], &bytes, Packet::Subscribe(sub));
}

#[test]
fn subscribe_3_1_1_wildcards_and_qos0() {
    let bytes = [
        0x82, 0x14, // SUBSCRIBE; remaining length 20
        0x00, 0x0a, // packet identifier 10
        0x00, 0x03, b'a', b'/', b'b', 0x00, // "a/b", QoS 0
        0x00, 0x03, b'c', b'/', b'#', 0x01, // "c/#", QoS 1
        0x00, 0x03, b'+', b'/', b'd', 0x02, // "+/d", QoS 2
    ];
    let sub = Subscribe {
        packet_id: 10,
        properties: Properties::new(),
        filters: vec![
            (s("a/b"), SubscriptionOptions::qos(QoS::AtMostOnce)),
            (s("c/#"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (s("+/d"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    check(V3_1_1, &bytes, Packet::Subscribe(sub));
}

#[test]
fn subscribe_5_spec_example() {
    let bytes = [
        0x82, 0x0f, // SUBSCRIBE; remaining length 15
        0x00, 0x0a, // packet identifier 10 (figure 3-19)
        0x00, // property length 0
        0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b", Maximum QoS 1
        0x00, 0x03, b'c', b'/', b'd', 0x02, // "c/d", Maximum QoS 2
    ];
    let sub = Subscribe {
        packet_id: 10,
        properties: Properties::new(),
        filters: vec![
            (s("a/b"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            (s("c/d"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    };
    check(V5, &bytes, Packet::Subscribe(sub));
}

#[test]
fn subscribe_5_with_options_and_subscription_identifier() {
    let bytes = cat(&[
        &[0x82, 0x2a],                               // SUBSCRIBE; remaining length 42
        &[0x00, 0x0b],                               // packet identifier 11
        &[0x0a],                                     // property length 10
        &[0x0b, 0xac, 0x02],                         //   Subscription Identifier 300 (VBI ac 02)
        &[0x26, 0x00, 0x01, b'u', 0x00, 0x01, b'1'], //   User Property u=1
        &[0x00, 0x03, b'a', b'/', b'+'],             // "a/+"
        &[0x05],                                     //   QoS 1 | No Local
        &[0x00, 0x03, b'b', b'/', b'#'],             // "b/#"
        &[0x1a],                                     //   QoS 2 | Retain As Published | Retain Handling 1
        &[0x00, 0x0a],                               // filter length 10
        b"$share/g/c",                               // shared subscription, group "g", filter "c"
        &[0x20],                                     //   QoS 0 | Retain Handling 2
        &[0x00, 0x01, b'd'],                         // "d"
        &[0x2d],                                     //   QoS 1 | No Local | RAP | Retain Handling 2
    ]);
    let sub = Subscribe {
        packet_id: 11,
        properties: props(vec![
            Property::SubscriptionIdentifier(300),
            Property::UserProperty(s("u"), s("1")),
        ]),
        filters: vec![
            (s("a/+"), options(QoS::AtLeastOnce, true, false, RetainHandling::SendAtSubscribe)),
            (s("b/#"), options(QoS::ExactlyOnce, false, true, RetainHandling::SendIfNew)),
            (s("$share/g/c"), options(QoS::AtMostOnce, false, false, RetainHandling::DoNotSend)),
            (s("d"), options(QoS::AtLeastOnce, true, true, RetainHandling::DoNotSend)),
        ],
    };
    check(V5, &bytes, Packet::Subscribe(sub));
}

// ---------------------------------------------------------------------------------------------
// SUBACK (3.1.1 section 3.9, 5.0 section 3.9)
// ---------------------------------------------------------------------------------------------

#[test]
fn suback_3_1_1_granted_and_failure() {
    let bytes = [
        0x90, 0x06, // SUBACK; remaining length 6
        0x00, 0x0a, // packet identifier 10
        0x00, // Success - Maximum QoS 0
        0x01, // Success - Maximum QoS 1
        0x02, // Success - Maximum QoS 2
        0x80, // Failure
    ];
    let ack = SubAck {
        packet_id: 10,
        properties: Properties::new(),
        reason_codes: vec![
            ReasonCode::GRANTED_QOS0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    };
    check(V3_1_1, &bytes, Packet::SubAck(ack));
}

#[test]
fn suback_5_without_properties() {
    let bytes = [
        0x90, 0x04, // SUBACK; remaining length 4
        0x00, 0x01, // packet identifier 1
        0x00, // property length 0
        0x01, // Granted QoS 1
    ];
    let ack =
        SubAck { packet_id: 1, properties: Properties::new(), reason_codes: vec![ReasonCode::GrantedQoS1] };
    check(V5, &bytes, Packet::SubAck(ack));
}

#[test]
fn suback_5_every_reason_code_with_reason_string() {
    let bytes = [
        0x90, 0x14, // SUBACK; remaining length 20
        0x00, 0x0b, // packet identifier 11
        0x05, // property length 5
        0x1f, 0x00, 0x02, b'n', b'o', // Reason String "no"
        0x01, 0x02, 0x00, // Granted QoS 1, 2, 0
        0x87, // Not authorized
        0x8f, // Topic Filter invalid
        0x9e, // Shared Subscriptions not supported
        0xa1, // Subscription Identifiers not supported
        0xa2, // Wildcard Subscriptions not supported
        0x91, // Packet Identifier in use
        0x97, // Quota exceeded
        0x83, // Implementation specific error
        0x80, // Unspecified error
    ];
    let ack = SubAck {
        packet_id: 11,
        properties: props(vec![Property::ReasonString(s("no"))]),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::GRANTED_QOS0,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::SharedSubscriptionsNotSupported,
            ReasonCode::SubscriptionIdentifiersNotSupported,
            ReasonCode::WildcardSubscriptionsNotSupported,
            ReasonCode::PacketIdentifierInUse,
            ReasonCode::QuotaExceeded,
            ReasonCode::ImplementationSpecificError,
            ReasonCode::UnspecifiedError,
        ],
    };
    check(V5, &bytes, Packet::SubAck(ack));
}

// ---------------------------------------------------------------------------------------------
// UNSUBSCRIBE and UNSUBACK (sections 3.10 and 3.11)
// ---------------------------------------------------------------------------------------------

#[test]
fn unsubscribe_3_1_and_3_1_1() {
    let bytes = [
        0xa2, 0x0c, // UNSUBSCRIBE, flags 0010; remaining length 12
        0x00, 0x0c, // packet identifier 12
        0x00, 0x03, b'a', b'/', b'b', // "a/b"
        0x00, 0x03, b'c', b'/', b'#', // "c/#"
    ];
    let u = Unsubscribe { packet_id: 12, properties: Properties::new(), filters: vec![s("a/b"), s("c/#")] };
    check_each(&[V3_1, V3_1_1], &bytes, Packet::Unsubscribe(u));
}

#[test]
fn unsubscribe_5_with_user_property_and_shared_filter() {
    let bytes = cat(&[
        &[0xa2, 0x1b],                               // UNSUBSCRIBE; remaining length 27
        &[0x00, 0x0d],                               // packet identifier 13
        &[0x07],                                     // property length 7
        &[0x26, 0x00, 0x01, b'r', 0x00, 0x01, b's'], //   User Property r=s
        &[0x00, 0x03, b'a', b'/', b'b'],             // "a/b"
        &[0x00, 0x0a],                               // filter length 10
        b"$share/g/x",                               // shared subscription filter
    ]);
    let u = Unsubscribe {
        packet_id: 13,
        properties: props(vec![Property::UserProperty(s("r"), s("s"))]),
        filters: vec![s("a/b"), s("$share/g/x")],
    };
    check(V5, &bytes, Packet::Unsubscribe(u));
}

#[test]
fn unsuback_3_1_and_3_1_1_has_no_payload() {
    let bytes = [
        0xb0, 0x02, // UNSUBACK; remaining length 2
        0x00, 0x0c, // packet identifier 12
    ];
    let ack = UnsubAck { packet_id: 12, properties: Properties::new(), reason_codes: vec![] };
    check_each(&[V3_1, V3_1_1], &bytes, Packet::UnsubAck(ack));
}

#[test]
fn unsuback_5_every_reason_code() {
    let bytes = [
        0xb0, 0x0a, // UNSUBACK; remaining length 10
        0x00, 0x0d, // packet identifier 13
        0x00, // property length 0
        0x00, // Success
        0x11, // No subscription existed
        0x80, // Unspecified error
        0x83, // Implementation specific error
        0x87, // Not authorized
        0x8f, // Topic Filter invalid
        0x91, // Packet Identifier in use
    ];
    let ack = UnsubAck {
        packet_id: 13,
        properties: Properties::new(),
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::UnspecifiedError,
            ReasonCode::ImplementationSpecificError,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::PacketIdentifierInUse,
        ],
    };
    check(V5, &bytes, Packet::UnsubAck(ack));
}

#[test]
fn unsuback_5_with_reason_string() {
    let bytes = [
        0xb0, 0x08, // UNSUBACK; remaining length 8
        0x00, 0x0e, // packet identifier 14
        0x04, // property length 4
        0x1f, 0x00, 0x01, b'x', // Reason String "x"
        0x00, // Success
    ];
    let ack = UnsubAck {
        packet_id: 14,
        properties: props(vec![Property::ReasonString(s("x"))]),
        reason_codes: vec![ReasonCode::Success],
    };
    check(V5, &bytes, Packet::UnsubAck(ack));
}

// ---------------------------------------------------------------------------------------------
// PINGREQ, PINGRESP (sections 3.12, 3.13)
// ---------------------------------------------------------------------------------------------

#[test]
fn pingreq_every_version() {
    // Type 12, flags 0000, remaining length 0.
    check_each(&[V3_1, V3_1_1, V5], &[0xc0, 0x00], Packet::PingReq);
}

#[test]
fn pingresp_every_version() {
    // Type 13, flags 0000, remaining length 0.
    check_each(&[V3_1, V3_1_1, V5], &[0xd0, 0x00], Packet::PingResp);
}

// ---------------------------------------------------------------------------------------------
// DISCONNECT (3.1.1 section 3.14, 5.0 section 3.14)
// ---------------------------------------------------------------------------------------------

#[test]
fn disconnect_3_1_and_3_1_1() {
    // Type 14, flags 0000, no variable header, no payload.
    check_each(&[V3_1, V3_1_1], &[0xe0, 0x00], Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
}

#[test]
fn disconnect_5_empty_is_normal_disconnection() {
    // Section 3.14.2.1: remaining length 0 means 0x00 Normal disconnection, no properties.
    check(V5, &[0xe0, 0x00], Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION)));
}

#[test]
fn disconnect_5_reason_code_only() {
    let bytes = [
        0xe0, 0x01, // DISCONNECT; remaining length 1
        0x04, // Disconnect with Will Message; property length omitted
    ];
    check(V5, &bytes, Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)));
}

#[test]
fn disconnect_5_session_taken_over() {
    let bytes = [
        0xe0, 0x01, // DISCONNECT; remaining length 1
        0x8e, // Session taken over
    ];
    check(V5, &bytes, Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)));
}

#[test]
fn disconnect_5_session_expiry_and_reason_string() {
    let bytes = cat(&[
        &[0xe0, 0x0e],                   // DISCONNECT; remaining length 14
        &[0x00],                         // Normal disconnection
        &[0x0c],                         // property length 12
        &[0x11, 0x00, 0x00, 0x00, 0x3c], //   Session Expiry Interval 60
        &[0x1f, 0x00, 0x04],             //   Reason String, length 4
        b"done",                         //     "done"
    ]);
    let d = Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: props(vec![Property::SessionExpiryInterval(60), Property::ReasonString(s("done"))]),
    };
    check(V5, &bytes, Packet::Disconnect(d));
}

#[test]
fn disconnect_5_server_moved_with_server_reference() {
    let bytes = cat(&[
        &[0xe0, 0x0c],       // DISCONNECT; remaining length 12
        &[0x9d],             // Server moved
        &[0x0a],             // property length 10
        &[0x1c, 0x00, 0x07], //   Server Reference, length 7
        b"host:99",          //     "host:99"
    ]);
    let d = Disconnect {
        reason_code: ReasonCode::ServerMoved,
        properties: props(vec![Property::ServerReference(s("host:99"))]),
    };
    check(V5, &bytes, Packet::Disconnect(d));
}

// ---------------------------------------------------------------------------------------------
// AUTH (5.0 section 3.15)
// ---------------------------------------------------------------------------------------------

#[test]
fn auth_5_empty_is_success() {
    // Section 3.15.2.1: remaining length 0 means Success and no properties.
    check(
        V5,
        &[0xf0, 0x00],
        Packet::Auth(Auth { reason_code: ReasonCode::Success, properties: Properties::new() }),
    );
}

#[test]
fn auth_5_continue_with_method_and_data() {
    let bytes = cat(&[
        &[0xf0, 0x11],                               // AUTH; remaining length 17
        &[0x18],                                     // Continue authentication
        &[0x0f],                                     // property length 15
        &[0x15, 0x00, 0x05],                         //   Authentication Method, length 5
        b"SCRAM",                                    //     "SCRAM"
        &[0x16, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04], // Authentication Data 01 02 03 04
    ]);
    let a = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: props(vec![
            Property::AuthenticationMethod(s("SCRAM")),
            Property::AuthenticationData(b(&[1, 2, 3, 4])),
        ]),
    };
    check(V5, &bytes, Packet::Auth(a));
}

#[test]
fn auth_5_reauthenticate_with_reason_string_and_user_property() {
    let bytes = cat(&[
        &[0xf0, 0x16],                               // AUTH; remaining length 22
        &[0x19],                                     // Re-authenticate
        &[0x14],                                     // property length 20
        &[0x15, 0x00, 0x05],                         //   Authentication Method, length 5
        b"SCRAM",                                    //     "SCRAM"
        &[0x1f, 0x00, 0x02, b'h', b'i'],             //   Reason String "hi"
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'], //   User Property k=v
    ]);
    let a = Auth {
        reason_code: ReasonCode::ReAuthenticate,
        properties: props(vec![
            Property::AuthenticationMethod(s("SCRAM")),
            Property::ReasonString(s("hi")),
            Property::UserProperty(s("k"), s("v")),
        ]),
    };
    check(V5, &bytes, Packet::Auth(a));
}

#[test]
fn auth_5_success_with_method() {
    let bytes = cat(&[
        &[0xf0, 0x0a],       // AUTH; remaining length 10
        &[0x00],             // Success
        &[0x08],             // property length 8
        &[0x15, 0x00, 0x05], //   Authentication Method, length 5
        b"SCRAM",            //     "SCRAM"
    ]);
    let a = Auth {
        reason_code: ReasonCode::Success,
        properties: props(vec![Property::AuthenticationMethod(s("SCRAM"))]),
    };
    check(V5, &bytes, Packet::Auth(a));
}
