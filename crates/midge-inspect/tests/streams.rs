//! Streams: TCP reassembly under reordering, retransmission and overlap; MQTT packets split
//! over segments and packed into one; every version; TLS; findings; the printed output.
mod common;

use common::*;
use midge_codec::{
    Bytes, ConnAck, Connect, Disconnect, Packet, Property, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscriptionOptions,
};
use midge_inspect::report::json::JsonPrinter;
use midge_inspect::report::text::TextPrinter;
use midge_inspect::report::{Direction, FindingKind, Protocol, Value};
use midge_inspect::Config;

const V31: ProtocolVersion = ProtocolVersion::V3_1;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect(v: ProtocolVersion, id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut c = Connect::new(v, id);
    c.username = user.map(Into::into);
    c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    mqtt(Packet::Connect(Box::new(c)), v)
}

fn publish(v: ProtocolVersion, topic: &str, payload: &[u8], qos: QoS, id: u16) -> Vec<u8> {
    let mut p = Publish::new(topic.to_string(), Bytes::copy_from_slice(payload));
    p.qos = qos;
    p.packet_id = id;
    mqtt(Packet::Publish(p), v)
}

fn connack(v: ProtocolVersion) -> Vec<u8> {
    mqtt(Packet::ConnAck(ConnAck::new(ReasonCode::Success)), v)
}

fn topics(c: &Collect) -> Vec<String> {
    c.records
        .iter()
        .filter_map(|r| match field(r, "topic") {
            Some(Value::Text(t)) if r.name == "PUBLISH" => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_whole_session_decoded_with_its_finding_and_summary() {
    let mut c = Conv::new(CLIENT, BROKER);
    let sub = Subscribe::new(1, "sensors/#", SubscriptionOptions::qos(QoS::AtLeastOnce));
    let suback =
        SubAck { packet_id: 1, properties: Default::default(), reason_codes: vec![ReasonCode::GrantedQoS1] };
    c.handshake()
        .client(&connect(V311, "sensor-1", Some("alice"), Some("s3cret")))
        .server(&connack(V311))
        .client(&mqtt(Packet::Subscribe(sub), V311))
        .server(&mqtt(Packet::SubAck(suback), V311))
        .client(&publish(V311, "sensors/kitchen", b"21.5", QoS::AtLeastOnce, 2))
        .server(&mqtt(Packet::PubAck(PubAck::new(2)), V311))
        .server(&publish(V311, "sensors/kitchen", b"21.5", QoS::AtLeastOnce, 1))
        .client(&mqtt(Packet::PingReq, V311))
        .server(&mqtt(Packet::PingResp, V311))
        .client(&mqtt(Packet::Disconnect(Disconnect::new(ReasonCode::Success)), V311))
        .close();
    let out = run(ethernet_pcap(&c.frames), &[]);
    assert_eq!(
        out.names(),
        [
            "CONNECT",
            "CONNACK",
            "SUBSCRIBE",
            "SUBACK",
            "PUBLISH",
            "PUBACK",
            "PUBLISH",
            "PINGREQ",
            "PINGRESP",
            "DISCONNECT"
        ]
    );
    let dirs: Vec<Direction> = out.records.iter().map(|r| r.direction).collect();
    assert_eq!(dirs[..2], [Direction::ClientToBroker, Direction::BrokerToClient]);
    assert!(out.records.iter().all(|r| r.client_id.as_deref() == Some("sensor-1")));
    assert!(out.records.iter().all(|r| r.protocol == Protocol::Mqtt { version: V311, assumed: false }));
    let conn = &out.records[0];
    assert_eq!(field(conn, "username"), Some(&text("alice")));
    assert_eq!(field(conn, "password"), Some(&Value::Secret(Bytes::from_static(b"s3cret"))));
    let suback = &out.records[3];
    assert_eq!(
        field(suback, "reason_codes"),
        Some(&Value::List(vec![Value::Reason { code: 1, name: "Granted QoS 1" }]))
    );

    assert_eq!(out.findings.len(), 1);
    assert_eq!(
        out.findings[0].message(),
        "password for user 'alice' sent in clear text from 10.0.0.5:51234 to 10.0.0.1:1883"
    );
    let s = out.summary();
    assert_eq!((s.tcp_connections, s.mqtt_connections, s.tls_connections), (1, 1, 0));
    assert_eq!(s.clients.len(), 1);
    assert_eq!((s.clients[0].client_id.as_str(), s.clients[0].user.as_deref()), ("sensor-1", Some("alice")));
    assert_eq!(s.topics.get("sensors/kitchen"), Some(&2));
    assert_eq!(s.packets.get(&3), Some(&("PUBLISH", 2)));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn out_of_order_retransmitted_and_overlapping_segments() {
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake();
    let base = c.cseq;
    let mut stream = connect(V311, "ooo", None, None);
    for i in 0..3u16 {
        stream.extend(publish(V311, &format!("t/{i}"), b"payload-bytes", QoS::AtLeastOnce, i + 1));
    }
    let n = stream.len() as u32;
    let at = |from: u32, to: u32| &stream[from as usize..to as usize];
    // The last third first, then the first third twice (a retransmission), then a middle
    // segment overlapping both neighbours.
    let (a, b) = (n / 3, 2 * n / 3);
    c.client_at(base, b, at(b, n)).client_at(base, 0, at(0, a)).client_at(base, 0, at(0, a)).client_at(
        base,
        a - 5,
        at(a - 5, b + 5),
    );
    let out = run(ethernet_pcap(&c.frames), &[]);
    assert_eq!(out.names(), ["CONNECT", "PUBLISH", "PUBLISH", "PUBLISH"]);
    assert_eq!(topics(&out), ["t/0", "t/1", "t/2"]);
    // Everything after the first third completes with the last frame (the seventh).
    assert!(out.records[1..].iter().all(|r| r.frame == 7));
    let s = out.summary();
    assert_eq!((s.retransmissions, s.out_of_order), (1, 1));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn a_packet_split_over_segments_and_many_packets_in_one() {
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake().client(&connect(V5, "split", None, None)).server(&connack(V5));
    // A 5000-byte PUBLISH over four segments (the first ends inside the fixed header).
    let big = publish(V5, "big/one", &[0xab; 5000], QoS::AtMostOnce, 0);
    c.client(&big[..1]).client(&big[1..2000]).client(&big[2000..4000]).client(&big[4000..]);
    // Ten packets in one segment.
    let many: Vec<u8> =
        (0..10).flat_map(|i| publish(V5, &format!("many/{i}"), b"x", QoS::AtMostOnce, 0)).collect();
    c.server(&many);
    let out = run(ethernet_pcap(&c.frames), &[]);
    assert_eq!(out.names().len(), 2 + 1 + 10);
    let big_record = &out.records[2];
    assert_eq!(big_record.frame, 9, "the frame of the last segment");
    assert_eq!(field(big_record, "payload_length"), Some(&Value::Int(5000)));
    assert!(out.records[3..].iter().all(|r| r.frame == 10 && r.direction == Direction::BrokerToClient));
    let expected: Vec<String> =
        std::iter::once("big/one".to_string()).chain((0..10).map(|i| format!("many/{i}"))).collect();
    assert_eq!(topics(&out), expected);
}

#[test]
fn every_version_comes_from_its_connect() {
    for v in [V31, V311, V5] {
        let mut c = Conv::new(CLIENT, BROKER);
        c.handshake()
            .client(&connect(v, "v", None, None))
            .server(&connack(v))
            .client(&publish(v, "a", b"1", QoS::AtLeastOnce, 1))
            .server(&mqtt(Packet::PubAck(PubAck::with_reason(1, ReasonCode::Success)), v));
        let out = run(ethernet_pcap(&c.frames), &[]);
        assert_eq!(out.names(), ["CONNECT", "CONNACK", "PUBLISH", "PUBACK"], "{v}");
        assert!(out.records.iter().all(|r| r.protocol == Protocol::Mqtt { version: v, assumed: false }));
        let connack = &out.records[1];
        let code = if v == V5 { field(connack, "reason") } else { field(connack, "return_code") };
        assert!(matches!(code, Some(Value::Reason { code: 0, .. })), "{v}: {:?}", connack.fields);
    }
}

#[test]
fn v5_properties_topic_aliases_and_assigned_client_ids() {
    let mut c = Conv::new(CLIENT, BROKER);
    let mut conn = Connect::new(V5, "");
    conn.properties.push(Property::SessionExpiryInterval(3600));
    conn.properties.push(Property::UserProperty("site".into(), "lab".into()));
    let mut ack = ConnAck::new(ReasonCode::Success);
    ack.properties.push(Property::AssignedClientIdentifier("auto-77".into()));
    let mut first = Publish::new("long/topic/name", "1");
    first.properties.push(Property::TopicAlias(4));
    let mut second = Publish::new("", "2");
    second.properties.push(Property::TopicAlias(4));
    c.handshake()
        .client(&mqtt(Packet::Connect(Box::new(conn)), V5))
        .server(&mqtt(Packet::ConnAck(ack), V5))
        .client(&mqtt(Packet::Publish(first), V5))
        .client(&mqtt(Packet::Publish(second), V5));
    let out = run(ethernet_pcap(&c.frames), &[]);
    assert_eq!(topics(&out), ["long/topic/name", "long/topic/name"]);
    assert_eq!(out.records[0].client_id.as_deref(), Some(""));
    assert_eq!(out.records[2].client_id.as_deref(), Some("auto-77"));
    assert_eq!(out.summary().clients[0].client_id, "auto-77");
    assert_eq!(out.summary().topics.get("long/topic/name"), Some(&2));
    let Some(Value::Group(props)) = field(&out.records[0], "properties") else { panic!("no properties") };
    assert!(props.iter().any(|f| f.name == "session_expiry_interval" && f.value == Value::Int(3600)));
    assert!(props.iter().any(|f| f.name == "user_properties"));
    assert!(out.findings.is_empty());
}

#[test]
fn findings_for_user_names_and_passwords() {
    let cases: [(Option<&str>, Option<&str>, Option<&str>); 4] = [
        (Some("alice"), Some("pw"), Some("password for user 'alice' sent in clear text")),
        (Some("bob"), None, Some("user name 'bob' sent in clear text")),
        (None, Some("pw"), Some("password sent in clear text")),
        (None, None, None),
    ];
    for (user, password, expected) in cases {
        let v = if user.is_none() && password.is_some() { V5 } else { V311 };
        let mut c = Conv::new(CLIENT, BROKER);
        c.handshake().client(&connect(v, "f", user, password));
        let out = run(ethernet_pcap(&c.frames), &[]);
        match expected {
            Some(m) => {
                assert_eq!(out.findings.len(), 1);
                assert_eq!(out.findings[0].message(), format!("{m} from {CLIENT} to {BROKER}"));
            }
            None => assert!(out.findings.is_empty()),
        }
    }
}

/// A TLS conversation: ClientHello, ServerHello, then records that are not handshake.
fn tls_frames(client: &str, server: &str, sni: &str, handshake: bool) -> Vec<Vec<u8>> {
    let mut c = Conv::new(client, server);
    c.handshake();
    if handshake {
        let hello = client_hello(sni);
        c.client(&hello[..40]).client(&hello[40..]);
        c.server(&server_hello_13());
    }
    // Application data that would decode as a CONNECT with a password, were it read.
    let fake = connect(V311, "hidden", Some("mallory"), Some("pw"));
    c.client(&[&[23, 3, 3, 0, fake.len() as u8][..], &fake].concat());
    c.close();
    c.frames
}

#[test]
fn tls_streams_are_reported_encrypted_with_sni_and_version() {
    for (server, ports) in
        [("10.0.0.1:8883", vec![]), ("10.0.0.1:1883", vec![]), ("10.0.0.1:4443", vec![4443])]
    {
        let out = run(ethernet_pcap(&tls_frames(CLIENT, server, "broker.example", true)), &ports);
        assert_eq!(out.names(), ["ClientHello", "ServerHello"], "{server}");
        assert_eq!(field(&out.records[0], "sni"), Some(&text("broker.example")));
        assert_eq!(field(&out.records[1], "version"), Some(&text("TLS 1.3")));
        assert_eq!(out.findings.len(), 1, "{server}: {:?}", out.findings);
        assert_eq!(
            out.findings[0].kind,
            FindingKind::Encrypted {
                sni: Some("broker.example".into()),
                version: Some(0x0304),
                handshake_seen: true
            }
        );
        assert_eq!(
            out.findings[0].message(),
            format!(
                "encrypted stream from {CLIENT} to {server} (TLS 1.3, SNI 'broker.example'): not decoded"
            )
        );
        assert_eq!(out.summary().tls_connections, 1);
        assert!(out.summary().clients.is_empty());
    }
    // On 8883 without the handshake (the capture started later): still encrypted, not decoded.
    let mut frames = tls_frames(CLIENT, "10.0.0.1:8883", "x", false);
    frames.drain(..3);
    let out = run(ethernet_pcap(&frames), &[]);
    assert!(out.records.is_empty());
    assert!(
        matches!(out.findings[..], [ref f] if f.kind == FindingKind::Encrypted { sni: None, version: None, handshake_seen: false })
    );
}

#[test]
fn connect_on_any_port_is_decoded_and_other_protocols_are_not() {
    let mut c = Conv::new(CLIENT, "10.0.0.1:5555");
    c.handshake().client(&connect(V311, "odd-port", Some("u"), Some("p"))).server(&connack(V311));
    let mut http = Conv::new("10.0.0.5:40000", "10.0.0.1:8080");
    http.handshake().client(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").server(b"HTTP/1.1 200 OK\r\n\r\n");
    let frames = [c.frames, http.frames].concat();
    let out = run(ethernet_pcap(&frames), &[]);
    assert_eq!(out.names(), ["CONNECT", "CONNACK"]);
    assert_eq!(out.findings.len(), 1);
    assert_eq!(out.summary().tcp_connections, 2);
    assert_eq!(out.summary().mqtt_connections, 1);
}

#[test]
fn extra_ports_decode_streams_caught_mid_way() {
    // No handshake, no CONNECT: on a --port, decoded as 3.1.1 (assumed).
    let mut c = Conv::new(CLIENT, "10.0.0.1:18830");
    c.client(&publish(V311, "late/1", b"x", QoS::AtMostOnce, 0)).server(&mqtt(Packet::PingResp, V311));
    let without = run(ethernet_pcap(&c.frames), &[]);
    assert!(without.records.is_empty());
    let with = run(ethernet_pcap(&c.frames), &[18830]);
    assert_eq!(with.names(), ["PUBLISH", "PINGRESP"]);
    assert_eq!(with.records[0].protocol, Protocol::Mqtt { version: V311, assumed: true });
    assert_eq!(with.records[0].client_id, None);
}

#[test]
fn missing_bytes_and_malformed_packets_are_warnings() {
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake().client(&connect(V311, "gap", None, None));
    let base = c.cseq;
    let p1 = publish(V311, "a", b"1", QoS::AtMostOnce, 0);
    // The first PUBLISH is never captured; the second is.
    c.client_at(base, p1.len() as u32, &publish(V311, "b", b"2", QoS::AtMostOnce, 0));
    // The broker sends a packet of reserved type 0.
    c.server(&[0x00, 0x00]);
    c.close();
    let out = run(ethernet_pcap(&c.frames), &[]);
    // Decoding resumes after the hole (as tshark's does); the broker's bad packet stops it.
    assert_eq!(out.names(), ["CONNECT", "PUBLISH"]);
    assert_eq!(topics(&out), ["b"]);
    assert!(out.warnings.iter().any(|w| w.contains("were not captured")), "{:?}", out.warnings);
    assert!(out.warnings.iter().any(|w| w.contains("10.0.0.1:1883 → 10.0.0.5:51234")), "{:?}", out.warnings);
    assert_eq!(out.summary().warnings as usize, out.warnings.len());
}

#[test]
fn text_output_masks_passwords_and_json_lines_parse() {
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake()
        .client(&connect(V311, "sensor-1", Some("alice"), Some("s3cret")))
        .server(&connack(V311))
        .client(&publish(V311, "sensors/kitchen", b"21.5", QoS::AtMostOnce, 0));
    let file = ethernet_pcap(&c.frames);
    let config = Config::default();

    let mut text = TextPrinter::new(Vec::new(), Vec::new(), false, false, false);
    midge_inspect::inspect(std::io::Cursor::new(file.clone()), &config, &mut text).unwrap();
    let (out, _) = text.into_inner();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "     4    0.003000 C>B 10.0.0.5:51234 → 10.0.0.1:1883 sensor-1 CONNECT version='3.1.1' \
         clean_session=1 keep_alive=60 username='alice' password='********'"
    );
    assert_eq!(
        lines[1],
        "     4    0.003000 !! password for user 'alice' sent in clear text from 10.0.0.5:51234 to 10.0.0.1:1883"
    );
    assert_eq!(
        lines[3],
        "     6    0.005000 C>B 10.0.0.5:51234 → 10.0.0.1:1883 sensor-1 PUBLISH topic='sensors/kitchen' qos=0 \
         retain=0 payload='21.5'"
    );
    assert!(!out.contains("s3cret"));
    assert!(out.contains("Topics:\n  'sensors/kitchen'  1 PUBLISH packet\n"), "{out}");

    let mut verbose = TextPrinter::new(Vec::new(), Vec::new(), true, true, false);
    midge_inspect::inspect(std::io::Cursor::new(file.clone()), &config, &mut verbose).unwrap();
    let out = String::from_utf8(verbose.into_inner().0).unwrap();
    assert!(out.contains("password='s3cret'"), "--reveal shows it");
    assert!(out.contains("                  protocol_name: 'MQTT'\n"), "{out}");

    let mut json = JsonPrinter::new(Vec::new(), false, false);
    midge_inspect::inspect(std::io::Cursor::new(file), &config, &mut json).unwrap();
    let out = String::from_utf8(json.into_inner()).unwrap();
    let objects: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let types: Vec<&str> = objects.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["packet", "finding", "packet", "packet", "summary"]);
    assert_eq!(objects[0]["fields"]["password"], "********");
    assert_eq!(objects[0]["client_id"], "sensor-1");
    assert_eq!(objects[1]["kind"], "cleartext_password");
    assert_eq!(objects[3]["fields"]["topic"], "sensors/kitchen");
    assert_eq!(objects[3]["time"], 0.005);
    assert_eq!(objects[4]["topics"][0]["messages"], 1);
    assert!(!out.contains("s3cret"));
}

/// A ClientHello record for `sni` (TLS 1.3 and 1.2 offered).
fn client_hello(sni: &str) -> Vec<u8> {
    let v16 = |d: &[u8]| [&(d.len() as u16).to_be_bytes()[..], d].concat();
    let ext = |t: u16, d: &[u8]| [&t.to_be_bytes()[..], &v16(d)].concat();
    let name = [&[0u8][..], &v16(sni.as_bytes())].concat();
    let exts = [ext(0, &v16(&name)), ext(43, &[4, 3, 4, 3, 3])].concat();
    let body = [&[3, 3][..], &[9; 32], &[0], &v16(&[0x13, 0x01]), &[1, 0], &v16(&exts)].concat();
    let hs = [&[1u8][..], &(body.len() as u32).to_be_bytes()[1..], &body].concat();
    [&[22, 3, 1][..], &(hs.len() as u16).to_be_bytes(), &hs].concat()
}

/// A ServerHello record choosing TLS 1.3.
fn server_hello_13() -> Vec<u8> {
    let exts = [&43u16.to_be_bytes()[..], &2u16.to_be_bytes(), &[3, 4]].concat();
    let body = [&[3, 3][..], &[5; 32], &[0], &[0x13, 0x01], &[0], &(exts.len() as u16).to_be_bytes(), &exts]
        .concat();
    let hs = [&[2u8][..], &(body.len() as u32).to_be_bytes()[1..], &body].concat();
    [&[22, 3, 3][..], &(hs.len() as u16).to_be_bytes(), &hs].concat()
}

fn text_of(file: Vec<u8>, ports: &[u16]) -> String {
    let mut text = TextPrinter::new(Vec::new(), Vec::new(), false, false, false);
    midge_inspect::inspect(std::io::Cursor::new(file), &Config::with_ports(ports), &mut text).unwrap();
    String::from_utf8(text.into_inner().0).unwrap()
}

/// Issue 20, item 5: `!!` marks findings only (credentials in clear text); an encrypted
/// stream is a note, marked `--` and listed under Notes, and it alone is no finding.
#[test]
fn encrypted_streams_are_notes_not_findings() {
    let file = ethernet_pcap(&tls_frames(CLIENT, "10.0.0.1:8883", "broker.example", true));
    let out = text_of(file.clone(), &[]);
    assert!(!out.contains("!!"), "{out}");
    assert!(
        out.contains(
            "-- encrypted stream from 10.0.0.5:51234 to 10.0.0.1:8883 (TLS 1.3, SNI 'broker.example'): not decoded\n"
        ),
        "{out}"
    );
    assert!(out.contains("Findings: none\nNotes:\n  info: encrypted stream from"), "{out}");
    let summary =
        midge_inspect::inspect(std::io::Cursor::new(file), &Config::default(), &mut Collect::default())
            .unwrap();
    assert!(!summary.has_problems());

    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake().client(&connect(V311, "sensor-1", Some("alice"), Some("s3cret"))).server(&connack(V311));
    let tls = tls_frames("10.0.0.7:40022", "10.0.0.1:8883", "broker.example", true);
    let file = ethernet_pcap(&[c.frames, tls].concat());
    let out = text_of(file.clone(), &[]);
    assert!(out.contains(" !! password for user 'alice' sent in clear text"), "{out}");
    assert!(out.contains("Findings:\n  warning: password for user 'alice'"), "{out}");
    assert!(out.contains("Notes:\n  info: encrypted stream from 10.0.0.7:40022"), "{out}");
    let summary =
        midge_inspect::inspect(std::io::Cursor::new(file), &Config::default(), &mut Collect::default())
            .unwrap();
    assert!(summary.has_problems());
}

/// Issue 20, item 6: an empty client id is shown as what it means; a 5.0 broker's assigned
/// one is shown once its CONNACK is in the capture.
#[test]
fn empty_client_ids_say_the_broker_assigns_one() {
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake().client(&connect(V311, "", None, None)).server(&connack(V311)).client(&publish(
        V311,
        "a",
        b"x",
        QoS::AtMostOnce,
        0,
    ));
    let out = text_of(ethernet_pcap(&c.frames), &[]);
    assert!(out.contains(" 10.0.0.1:1883 (empty: the broker assigns one) CONNECT version='3.1.1'"), "{out}");
    assert!(out.contains(" (empty: the broker assigns one) PUBLISH topic='a'"), "{out}");
    assert!(out.contains("Clients:\n  (empty: the broker assigns one)  10.0.0.5:51234"), "{out}");
    assert!(!out.contains("''"), "{out}");

    let mut ack = ConnAck::new(ReasonCode::Success);
    ack.properties.push(Property::AssignedClientIdentifier("auto-77".into()));
    let mut c = Conv::new(CLIENT, BROKER);
    c.handshake()
        .client(&connect(V5, "", None, None))
        .server(&mqtt(Packet::ConnAck(ack), V5))
        .client(&publish(V5, "a", b"x", QoS::AtMostOnce, 0));
    let out = text_of(ethernet_pcap(&c.frames), &[]);
    assert!(out.contains(" (empty: the broker assigns one) CONNECT version='5.0'"), "{out}");
    assert!(out.contains(" auto-77 CONNACK"), "{out}");
    assert!(out.contains(" auto-77 PUBLISH topic='a'"), "{out}");
    assert!(out.contains("Clients:\n  auto-77  10.0.0.5:51234"), "{out}");
}
