//! Capture formats: every link type over IPv4 and IPv6, pcap variants, pcapng blocks, and
//! damaged captures (an error or a warning, never a panic).
mod common;

use common::*;
use midge_codec::{ConnAck, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use midge_inspect::capture::LinkType;
use midge_inspect::report::Direction;
use midge_inspect::InspectError;
use proptest::prelude::*;

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// A short 3.1.1 session: CONNECT, CONNACK, PUBLISH, DISCONNECT.
fn session(client: &str, broker: &str) -> Vec<Vec<u8>> {
    let mut c = Conv::new(client, broker);
    c.handshake()
        .client(&mqtt(Packet::Connect(Box::new(Connect::new(V311, "dev-1"))), V311))
        .server(&mqtt(Packet::ConnAck(ConnAck::new(ReasonCode::Success)), V311))
        .client(&mqtt(Packet::Publish(Publish::new("t/1", "21.5")), V311))
        .client(&mqtt(Packet::Disconnect(midge_codec::Disconnect::new(ReasonCode::Success)), V311))
        .close();
    c.frames
}

const LINKS: [LinkType; 7] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::RAW,
    LinkType::IPV4,
];

#[test]
fn every_link_type_over_ipv4_and_ipv6() {
    for link in LINKS {
        for (client, broker) in [(CLIENT, BROKER), (CLIENT6, BROKER6)] {
            let link = if link == LinkType::IPV4 && client == CLIENT6 { LinkType::IPV6 } else { link };
            let frames = timed(link, &session(client, broker));
            let c = run(pcap(link, &frames, false, false), &[]);
            assert_eq!(c.names(), ["CONNECT", "CONNACK", "PUBLISH", "DISCONNECT"], "{link} {client}");
            assert!(c.warnings.is_empty(), "{link}: {:?}", c.warnings);
            let r = &c.records[2];
            assert_eq!((r.client, r.broker), (addr(client), addr(broker)), "{link}");
            assert_eq!(r.direction, Direction::ClientToBroker);
            assert_eq!(r.client_id.as_deref(), Some("dev-1"));
            assert_eq!(field(r, "topic"), Some(&text("t/1")), "{link}");
            // Frames 1 ms apart: the PUBLISH is the sixth frame.
            assert_eq!((r.frame, r.time_ns), (6, 5_000_000), "{link}");
        }
    }
}

#[test]
fn nanosecond_and_big_endian_pcap() {
    let mut frames = timed(LinkType::ETHERNET, &session(CLIENT, BROKER));
    frames[5].0 += 123; // nanoseconds survive in a nanosecond file
    for (nanos, be) in [(true, false), (false, true), (true, true)] {
        let c = run(pcap(LinkType::ETHERNET, &frames, nanos, be), &[]);
        assert_eq!(c.names().len(), 4, "nanos {nanos} big-endian {be}");
        let expected = if nanos { 5_000_123 } else { 5_000_000 };
        assert_eq!(c.records[2].time_ns, expected);
    }
}

#[test]
fn pcapng_interfaces_resolutions_and_sections() {
    let ip = session(CLIENT, BROKER);
    let mut ng = PcapNg::default();
    ng.section().interface(LinkType::ETHERNET, None).interface(LinkType::LINUX_SLL2, Some(9)).unknown();
    // Interface 0 counts microseconds (the default), interface 1 nanoseconds: both streams'
    // frames interleave and the times must agree.
    let base_us: u64 = 1_700_000_000_000_000;
    for (i, f) in ip.iter().enumerate() {
        let us = base_us + i as u64 * 1000;
        if i % 2 == 0 {
            ng.packet(0, us, &wrap(LinkType::ETHERNET, f));
        } else {
            ng.packet(1, us * 1000 + 7, &wrap(LinkType::LINUX_SLL2, f));
        }
    }
    let c = run(ng.0.clone(), &[]);
    assert_eq!(c.names(), ["CONNECT", "CONNACK", "PUBLISH", "DISCONNECT"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // The CONNACK is frame 5 (index 4, interface 0), the PUBLISH frame 6 (interface 1, +7 ns).
    assert_eq!(c.records[1].time_ns, 4_000_000);
    assert_eq!(c.records[2].time_ns, 5_000_007);

    // A second section starts its interfaces again; a simple packet block has no time.
    let mut ng2 = PcapNg::default();
    ng2.section().interface(LinkType::RAW, Some(6));
    for f in &ip[..4] {
        ng2.simple(f);
    }
    ng2.section().interface(LinkType::NULL, None);
    for (i, f) in ip[4..].iter().enumerate() {
        ng2.packet(0, base_us + i as u64, &wrap(LinkType::NULL, f));
    }
    let c = run(ng2.0, &[]);
    assert_eq!(c.names(), ["CONNECT", "CONNACK", "PUBLISH", "DISCONNECT"]);
}

#[test]
fn pcapng_packet_of_an_undescribed_interface_is_skipped_with_a_warning() {
    let ip = session(CLIENT, BROKER);
    let mut ng = PcapNg::default();
    ng.section().interface(LinkType::ETHERNET, None);
    ng.packet(3, 1, &wrap(LinkType::ETHERNET, &ip[0]));
    let c = run(ng.0, &[]);
    assert!(c.warnings.iter().any(|w| w.contains("interface 3")), "{:?}", c.warnings);
}

#[test]
fn not_a_capture_empty_and_truncated_headers_are_errors() {
    match try_run(b"GET / HTTP/1.1\r\n\r\n".to_vec(), &[]) {
        Err(InspectError::NotACapture { magic }) => assert_eq!(magic, "47 45 54 20"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(try_run(Vec::new(), &[]), Err(InspectError::TruncatedHeader { got: 0 })));
    let header = pcap(LinkType::ETHERNET, &[], false, false);
    assert!(matches!(try_run(header[..10].to_vec(), &[]), Err(InspectError::TruncatedHeader { got: 10 })));
    let mut ng = PcapNg::default();
    ng.section();
    assert!(matches!(try_run(ng.0[..20].to_vec(), &[]), Err(InspectError::TruncatedHeader { .. })));
    // Only a header: no frames, an empty summary.
    let c = run(header, &[]);
    assert_eq!(c.summary().frames, 0);
}

#[test]
fn a_capture_cut_short_keeps_what_came_before() {
    let file = ethernet_pcap(&session(CLIENT, BROKER));
    let whole = run(file.clone(), &[]);
    let c = run(file[..file.len() - 30].to_vec(), &[]);
    assert_eq!(c.names(), ["CONNECT", "CONNACK", "PUBLISH", "DISCONNECT"]);
    assert!(c.warnings.iter().any(|w| w.contains("cut short")), "{:?}", c.warnings);
    assert_eq!(c.summary().frames, whole.summary().frames - 1);
}

#[test]
fn a_corrupt_record_length_stops_reading_with_a_warning() {
    let frames = session(CLIENT, BROKER);
    let mut file = ethernet_pcap(&frames[..4]);
    let keep = file.len();
    file.extend(ethernet_pcap(&frames[4..])[24..].iter());
    // The fifth record's captured length becomes 3 GB.
    file[keep + 8..keep + 12].copy_from_slice(&0xc000_0000u32.to_le_bytes());
    let c = run(file, &[]);
    assert_eq!(c.summary().frames, 4);
    assert_eq!(c.names(), ["CONNECT"]);
    assert!(c.warnings.iter().any(|w| w.contains("at byte")), "{:?}", c.warnings);
}

#[test]
fn frames_cut_by_the_snapshot_length_are_reported_once() {
    let ip = session(CLIENT, BROKER);
    let mut file = pcap(LinkType::ETHERNET, &[], false, false);
    for (i, f) in ip.iter().enumerate() {
        let whole = wrap(LinkType::ETHERNET, f);
        let cut = &whole[..whole.len().min(60)];
        file.extend((1_700_000_000u32 + i as u32).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend((cut.len() as u32).to_le_bytes());
        file.extend((whole.len() as u32).to_le_bytes());
        file.extend_from_slice(cut);
    }
    let c = run(file, &[]);
    let cut: Vec<&String> = c.warnings.iter().filter(|w| w.contains("tcpdump -s 0")).collect();
    assert_eq!(cut.len(), 1, "{:?}", c.warnings);
    // Only the packets short enough to fit whole are decoded.
    assert_eq!(c.names(), ["CONNACK", "DISCONNECT"]);
}

#[test]
fn unsupported_link_types_and_non_tcp_frames_are_skipped() {
    let frames = timed(LinkType::ETHERNET, &session(CLIENT, BROKER));
    let c = run(pcap(LinkType(147), &frames, false, false), &[]);
    assert!(c.records.is_empty());
    assert_eq!(c.warnings.len(), 1, "one warning per link type: {:?}", c.warnings);
    // A UDP datagram and an ARP frame among TCP ones.
    let udp = {
        let b = etherparse::PacketBuilder::ipv4([10, 0, 0, 5], [10, 0, 0, 1], 64).udp(5000, 1883);
        let mut v = Vec::new();
        b.write(&mut v, b"\x10\x00").unwrap();
        v
    };
    let mut ip = session(CLIENT, BROKER);
    ip.insert(3, udp);
    let c = run(ethernet_pcap(&ip), &[]);
    assert_eq!(c.names().len(), 4);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Damage anywhere (flipped bytes, a cut) gives an error or warnings, never a panic.
    #[test]
    fn damaged_captures_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        ng in any::<bool>(),
    ) {
        let ip = session(CLIENT, BROKER);
        let mut file = if ng {
            let mut w = PcapNg::default();
            w.section().interface(LinkType::LINUX_SLL, Some(6));
            for (i, f) in ip.iter().enumerate() {
                w.packet(0, i as u64, &wrap(LinkType::LINUX_SLL, f));
            }
            w.0
        } else {
            ethernet_pcap(&ip)
        };
        for (at, x) in flips {
            let n = file.len();
            file[at % n] ^= x;
        }
        let n = file.len();
        file.truncate(cut % (n + 1));
        let _ = try_run(file, &[]);
    }

    /// Any bytes after a valid header: never a panic.
    #[test]
    fn garbage_records_never_panic(garbage in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut file = pcap(LinkType::ETHERNET, &[], false, false);
        file.extend(garbage);
        let _ = try_run(file, &[]);
    }
}

#[test]
fn qos_and_retain_survive_every_link_layer() {
    let mut p = Publish::new("a/b", "x");
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 9;
    p.retain = true;
    let mut c = Conv::new(CLIENT6, BROKER6);
    c.handshake()
        .client(&mqtt(Packet::Connect(Box::new(Connect::new(V311, "q"))), V311))
        .client(&mqtt(Packet::Publish(p), V311));
    let out = run(pcap(LinkType::LINUX_SLL, &timed(LinkType::LINUX_SLL, &c.frames), false, false), &[]);
    let r = &out.records[1];
    assert_eq!(field(r, "qos"), Some(&midge_inspect::report::Value::Int(2)));
    assert_eq!(field(r, "retain"), Some(&midge_inspect::report::Value::Bool(true)));
    assert_eq!(field(r, "packet_id"), Some(&midge_inspect::report::Value::Int(9)));
}
