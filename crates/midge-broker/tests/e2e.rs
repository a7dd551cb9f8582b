//! End to end over TCP: a real server on port 0, clients speaking raw MQTT through the codec,
//! so every byte the broker sends is checked.
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use midge_broker::config::parse_str;
use midge_broker::Server;
use midge_codec::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("server stops").unwrap();
    }
}

async fn start(conf: &str) -> Running {
    start_with(conf, |_| {}).await
}

async fn start_with(conf: &str, setup: impl FnOnce(&Server)) -> Running {
    let text = format!("listener 0 127.0.0.1\nallow_anonymous true\n{conf}");
    let (config, _) = parse_str(&text, "e2e.conf").unwrap();
    let server = Server::bind(config).await.unwrap();
    setup(&server);
    let addr = server.local_addrs()[0];
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), task }
}

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Raw {
    async fn open(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        Raw { stream, buf: BytesMut::new(), version }
    }

    /// Opens a connection and completes CONNECT / CONNACK.
    async fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Raw {
        let mut c = Raw::open(addr, version).await;
        c.send(&Packet::Connect(Box::new(Connect::new(version, id)))).await;
        match c.recv().await {
            Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::Success => c,
            other => panic!("CONNACK expected, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet) {
        let bytes = p.to_bytes(self.version).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    async fn send_bytes(&mut self, b: &[u8]) {
        // The broker may close first; that is what some tests expect.
        let _ = self.stream.write_all(b).await;
    }

    /// The next packet, or `None` when the broker closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, self.version, usize::MAX).unwrap() {
                return Some(p);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads until the broker closes; returns what came before.
    async fn until_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe::new(1, filter, SubscriptionOptions::qos(qos)))).await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    async fn publish(&mut self, topic: &str, payload: &'static [u8]) {
        self.send(&Packet::Publish(Publish::new(topic, Bytes::from_static(payload)))).await;
    }
}

fn payload_of(p: Option<Packet>) -> Vec<u8> {
    match p {
        Some(Packet::Publish(p)) => p.payload.to_vec(),
        other => panic!("PUBLISH expected, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_and_subscribe_in_every_version() {
    let s = start("").await;
    for v in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut sub = Raw::connect(s.addr, v, "sub").await;
        sub.subscribe("t/+", QoS::AtLeastOnce).await;
        let mut publ = Raw::connect(s.addr, v, "pub").await;
        publ.publish("t/1", b"hello").await;
        assert_eq!(payload_of(sub.recv().await), b"hello");
    }
    s.stop().await;
}

/// Each malformed-packet class closes that connection only (5.0: with DISCONNECT and the
/// right reason code), while another client goes on being served.
#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let s = start("max_packet_size 1000\n").await;
    let mut watcher = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "watcher").await;
    watcher.subscribe("alive", QoS::AtMostOnce).await;
    let mut keeper = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "keeper").await;
    let cases: Vec<(&str, Vec<u8>, Option<ReasonCode>)> = vec![
        (
            "remaining length of 5 bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            Some(ReasonCode::MalformedPacket),
        ),
        ("reserved packet type 0", vec![0x00, 0x00], Some(ReasonCode::MalformedPacket)),
        (
            "SUBSCRIBE with flags 0",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        ("PUBLISH QoS 3", vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], Some(ReasonCode::MalformedPacket)),
        (
            "invalid UTF-8 topic",
            vec![0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        (
            "U+0000 in a topic",
            vec![0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        (
            "wildcard in a topic name",
            vec![0x30, 0x05, 0x00, 0x02, b'a', b'+', 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        (
            "packet id 0",
            vec![0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00],
            Some(ReasonCode::ProtocolError),
        ),
        ("SUBSCRIBE without filters", vec![0x82, 0x02, 0x00, 0x01], Some(ReasonCode::ProtocolError)),
        (
            "invalid filter a/#/b",
            vec![0x82, 0x0b, 0x00, 0x01, 0x00, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        ("packet too large", vec![0x30, 0xe8, 0x07], Some(ReasonCode::PacketTooLarge)),
        ("AUTH in 3.1.1", vec![0xf0, 0x00], None),
    ];
    for (what, bytes, code) in cases {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            // Bytes written for 3.1.1 carry no property length; 5.0 PUBLISH / SUBSCRIBE need
            // one, so those cases are checked where they are malformed either way.
            let mut c = Raw::connect(s.addr, v, "bad").await;
            let mut bytes = bytes.clone();
            if v.is_v5() {
                patch_for_v5(&mut bytes);
            }
            c.send_bytes(&bytes).await;
            let got = c.until_closed().await;
            match (v.is_v5(), code) {
                (true, Some(code)) => assert!(
                    matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == code),
                    "{what} ({v}): DISCONNECT {code} expected, got {got:?}"
                ),
                (true, None) => {}
                (false, _) => assert!(got.is_empty(), "{what} ({v}): 3.1.1 just closes, got {got:?}"),
            }
            keeper.publish("alive", b"still").await;
            assert_eq!(payload_of(watcher.recv().await), b"still", "{what}: others are still served");
        }
    }
    s.stop().await;
}

/// Inserts an empty property block after the packet id / topic of PUBLISH and SUBSCRIBE
/// bodies written for 3.1.1, so that the 5.0 decoder reaches the same fault.
fn patch_for_v5(bytes: &mut Vec<u8>) {
    let kind = bytes[0] >> 4;
    if bytes.len() < 3 || bytes[1] & 0x80 != 0 {
        return;
    }
    let at = match kind {
        3 if bytes[0] & 0x06 == 0 => 2 + 2 + usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        3 => 2 + 2 + usize::from(u16::from_be_bytes([bytes[2], bytes[3]])) + 2,
        8 => 4,
        _ => return,
    };
    if at <= bytes.len() {
        bytes.insert(at, 0x00);
        bytes[1] += 1;
    }
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let s = start("").await;
    let mut c = Raw::open(s.addr, ProtocolVersion::V3_1_1).await;
    // CONNECT "MQTT" level 6.
    c.send_bytes(&[0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x01, b'x'])
        .await;
    let got = c.until_closed().await;
    assert_eq!(got, vec![Packet::ConnAck(ConnAck::new(ReasonCode::UnsupportedProtocolVersion))]);
    s.stop().await;
}

#[tokio::test]
async fn a_first_packet_other_than_connect_closes_the_connection() {
    let s = start("").await;
    let mut c = Raw::open(s.addr, ProtocolVersion::V3_1_1).await;
    c.send(&Packet::PingReq).await;
    assert!(c.until_closed().await.is_empty());
    let mut g = Raw::open(s.addr, ProtocolVersion::V3_1_1).await;
    g.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(g.until_closed().await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn max_connections_refuses_the_extra_client() {
    let s = start("max_connections 2\n").await;
    let _a = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "a").await;
    let _b = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "b").await;
    let mut c = Raw::open(s.addr, ProtocolVersion::V3_1_1).await;
    c.send_bytes(
        &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V3_1_1, "c")))
            .to_bytes(ProtocolVersion::V3_1_1)
            .unwrap(),
    )
    .await;
    assert!(c.until_closed().await.is_empty(), "closed without CONNACK");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_disconnects_5_0_clients_with_0x8b_and_publishes_wills() {
    let s = start("").await;
    let mut v5 = Raw::connect(s.addr, ProtocolVersion::V5, "five").await;
    let mut v3 = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "three").await;
    s.stop().await;
    let got = v5.until_closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ServerShuttingDown),
        "{got:?}"
    );
    assert!(v3.until_closed().await.is_empty());
}

#[tokio::test]
async fn keep_alive_timeout_over_tcp() {
    let s = start("").await;
    let mut c = Raw::open(s.addr, ProtocolVersion::V5).await;
    let mut connect = Connect::new(ProtocolVersion::V5, "sleepy");
    connect.keep_alive = 1;
    c.send(&Packet::Connect(Box::new(connect))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    let started = std::time::Instant::now();
    let got = c.until_closed().await;
    let waited = started.elapsed();
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KeepAliveTimeout),
        "{got:?}"
    );
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4), "{waited:?}");
    s.stop().await;
}

#[tokio::test]
async fn many_packets_in_one_segment_and_one_packet_over_many() {
    let s = start("").await;
    let mut sub = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "sub").await;
    sub.subscribe("t", QoS::AtMostOnce).await;
    let mut p = Raw::connect(s.addr, ProtocolVersion::V3_1_1, "p").await;
    let mut all = Vec::new();
    for i in 0..50u8 {
        all.extend_from_slice(
            &Packet::Publish(Publish::new("t", vec![i])).to_bytes(ProtocolVersion::V3_1_1).unwrap(),
        );
    }
    p.send_bytes(&all).await;
    for i in 0..50u8 {
        assert_eq!(payload_of(sub.recv().await), vec![i]);
    }
    let one = Packet::Publish(Publish::new("t", vec![7u8; 300])).to_bytes(ProtocolVersion::V3_1_1).unwrap();
    for chunk in one.chunks(7) {
        p.send_bytes(chunk).await;
        p.stream.flush().await.unwrap();
    }
    assert_eq!(payload_of(sub.recv().await), vec![7u8; 300]);
    s.stop().await;
}

/// A challenge-response method for the tests: the client proves it knows "secret" by
/// answering the challenge "nonce" with "nonce:secret".
struct Challenge;

struct ChallengeExchange {
    sent: bool,
}

impl midge_broker::auth::AuthMethod for Challenge {
    fn name(&self) -> &str {
        "TEST-CHALLENGE"
    }
    fn start(&self, _client_id: &str) -> Box<dyn midge_broker::auth::AuthExchange> {
        Box::new(ChallengeExchange { sent: false })
    }
}

impl midge_broker::auth::AuthExchange for ChallengeExchange {
    fn step(&mut self, data: Option<&[u8]>) -> midge_broker::auth::AuthStep {
        use midge_broker::auth::AuthStep;
        if !self.sent {
            self.sent = true;
            return AuthStep::Continue(Bytes::from_static(b"nonce"));
        }
        if data == Some(b"nonce:secret") {
            AuthStep::Success { username: Some("prover".into()), data: Some(Bytes::from_static(b"welcome")) }
        } else {
            AuthStep::Failure(ReasonCode::NotAuthorized)
        }
    }
}

fn auth_packet(reason: ReasonCode, data: Option<&'static [u8]>) -> Packet {
    let mut properties = Properties::new();
    properties.push(Property::AuthenticationMethod("TEST-CHALLENGE".into()));
    if let Some(d) = data {
        properties.push(Property::AuthenticationData(Bytes::from_static(d)));
    }
    Packet::Auth(Auth { reason_code: reason, properties })
}

fn data_of(p: &Packet) -> Option<&[u8]> {
    match p {
        Packet::Auth(a) => a.properties.authentication_data().map(|d| &d[..]),
        Packet::ConnAck(a) => a.properties.authentication_data().map(|d| &d[..]),
        _ => None,
    }
}

#[tokio::test]
async fn enhanced_authentication_and_re_authentication() {
    let s = start_with("", |server| server.broker().add_auth_method(std::sync::Arc::new(Challenge))).await;
    let connect_with = |method: &str| {
        let mut c = Connect::new(ProtocolVersion::V5, "auth-client");
        c.properties.push(Property::AuthenticationMethod(method.to_owned().into()));
        Packet::Connect(Box::new(c))
    };
    // The whole exchange at CONNECT.
    let mut c = Raw::open(s.addr, ProtocolVersion::V5).await;
    c.send(&connect_with("TEST-CHALLENGE")).await;
    let challenge = c.recv().await.unwrap();
    assert!(matches!(&challenge, Packet::Auth(a) if a.reason_code == ReasonCode::ContinueAuthentication));
    assert_eq!(data_of(&challenge), Some(&b"nonce"[..]));
    c.send(&auth_packet(ReasonCode::ContinueAuthentication, Some(b"nonce:secret"))).await;
    let ack = c.recv().await.unwrap();
    assert!(matches!(&ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success), "{ack:?}");
    assert_eq!(data_of(&ack), Some(&b"welcome"[..]));
    // Re-authentication on the live connection.
    c.send(&auth_packet(ReasonCode::ReAuthenticate, None)).await;
    assert_eq!(data_of(&c.recv().await.unwrap()), Some(&b"nonce"[..]));
    c.send(&auth_packet(ReasonCode::ContinueAuthentication, Some(b"nonce:secret"))).await;
    let done = c.recv().await.unwrap();
    assert!(matches!(&done, Packet::Auth(a) if a.reason_code == ReasonCode::Success), "{done:?}");
    // A failed re-authentication ends the connection with DISCONNECT.
    c.send(&auth_packet(ReasonCode::ReAuthenticate, None)).await;
    c.recv().await.unwrap();
    c.send(&auth_packet(ReasonCode::ContinueAuthentication, Some(b"wrong"))).await;
    let got = c.until_closed().await;
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::NotAuthorized),
        "{got:?}"
    );
    // A wrong answer at CONNECT: CONNACK 0x87.
    let mut w = Raw::open(s.addr, ProtocolVersion::V5).await;
    w.send(&connect_with("TEST-CHALLENGE")).await;
    w.recv().await.unwrap();
    w.send(&auth_packet(ReasonCode::ContinueAuthentication, Some(b"guess"))).await;
    let got = w.until_closed().await;
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::NotAuthorized),
        "{got:?}"
    );
    // An unknown method: CONNACK 0x8C.
    let mut u = Raw::open(s.addr, ProtocolVersion::V5).await;
    u.send(&connect_with("SCRAM-SHA-512")).await;
    let got = u.until_closed().await;
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::BadAuthenticationMethod),
        "{got:?}"
    );
    s.stop().await;
}

/// A listener without an address serves IPv4 and IPv6 on one port, as mosquitto's does (one
/// socket per family); `socket_domain` keeps it to one family.
#[tokio::test]
async fn a_listener_without_address_serves_ipv4_and_ipv6_on_one_port() {
    // What the broker binds: the IPv6 wildcard address (loopback is reached through it).
    let ipv6 = std::net::TcpListener::bind("[::]:0").is_ok();
    let (config, _) = parse_str("listener 0\nallow_anonymous true\n", "e2e.conf").unwrap();
    let server = Server::bind(config).await.unwrap();
    let addrs = server.local_addrs();
    let port = addrs[0].port();
    assert!(addrs[0].is_ipv4(), "{addrs:?}");
    if ipv6 {
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        assert!(addrs[1].is_ipv6() && addrs[1].port() == port, "{addrs:?}");
    } else {
        assert_eq!(addrs.len(), 1, "this machine has no IPv6: {addrs:?}");
    }
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    let running = Running { addr: addrs[0], stop: Some(tx), task };
    let mut targets = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    if ipv6 {
        targets.push(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
    }
    for (n, addr) in targets.into_iter().enumerate() {
        let mut c = Raw::connect(addr, ProtocolVersion::V3_1_1, &format!("family-{n}")).await;
        c.send(&Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp), "over {addr}");
    }
    running.stop().await;

    let (config, _) = parse_str("listener 0\nsocket_domain ipv4\n", "e2e.conf").unwrap();
    let server = Server::bind(config).await.unwrap();
    assert!(server.local_addrs().iter().all(SocketAddr::is_ipv4), "{:?}", server.local_addrs());
    if ipv6 {
        let (config, _) = parse_str("listener 0\nsocket_domain ipv6\n", "e2e.conf").unwrap();
        let server = Server::bind(config).await.unwrap();
        assert!(server.local_addrs().iter().all(SocketAddr::is_ipv6), "{:?}", server.local_addrs());
    }
}
