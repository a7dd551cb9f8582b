//! The client's protocol state machine ([`midge_client::protocol::State`]) against the
//! broker's [`Link`], in memory: packets go from one end to the other through the codec (as
//! bytes on the wire would), with no socket and the time passed in. Both ends are the code
//! that runs in production: `State` is what the client's connection task runs, `Link` what
//! the broker's runs.
use std::sync::Arc;
use std::time::Instant;

use midge_broker::broker::{ConnInfo, Link, Opening};
use midge_broker::config::parse_str;
use midge_broker::control::ControlSlot;
use midge_broker::session::CloseReason;
use midge_broker::Broker;
use midge_client::protocol::{Incoming, State};
use midge_client::Error;
use midge_codec::*;
use tokio::sync::oneshot;

use ProtocolVersion::{V3_1_1, V5};

fn broker() -> Arc<Broker> {
    Broker::new(parse_str("allow_anonymous true\n", "test.conf").unwrap().0).unwrap()
}

/// A packet through the codec, as the other end reads it.
fn wire(p: Packet, version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(&p.to_bytes(version).unwrap()[..]);
    let back = decode(&mut buf, version, usize::MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    back
}

/// One client: its protocol state, and the broker's link for its connection.
struct End {
    version: ProtocolVersion,
    state: State,
    link: Option<Box<Link>>,
    control: Arc<ControlSlot>,
    /// Messages the state machine handed to the application.
    messages: Vec<Publish>,
    /// Packets the client sent, and the broker sent it (for the assertions).
    sent: Vec<Packet>,
    received: Vec<Packet>,
}

fn connect_with(b: &Arc<Broker>, c: Connect, state: Option<State>, now: Instant) -> (End, ConnAck) {
    let version = c.protocol;
    let c = match wire(Packet::Connect(Box::new(c)), version) {
        Packet::Connect(c) => *c,
        _ => unreachable!(),
    };
    let info = ConnInfo::plain("127.0.0.1:1".parse().unwrap());
    let auth = b.authenticate(&c, &info, now).unwrap();
    let control = ControlSlot::new();
    let Opening::Ready { link, connack, .. } = b.open(c, auth, b.next_conn_id(), control.clone(), now) else {
        panic!("not accepted")
    };
    let Packet::ConnAck(ack) = wire(connack, version) else { panic!("CONNACK expected") };
    let receive_maximum = ack.properties.receive_maximum().unwrap_or(u16::MAX);
    let end = End {
        version,
        state: state.unwrap_or_else(|| State::new(version, receive_maximum)),
        link: Some(link),
        control,
        messages: Vec::new(),
        sent: Vec::new(),
        received: Vec::new(),
    };
    (end, ack)
}

fn connect(b: &Arc<Broker>, c: Connect, now: Instant) -> End {
    connect_with(b, c, None, now).0
}

impl End {
    /// The client's packets to the broker. Returns true when some were sent.
    fn client_to_broker(&mut self, now: Instant) -> bool {
        let out: Vec<Packet> = self.state.drain_output().collect();
        let Some(link) = self.link.as_mut() else { return false };
        for p in &out {
            let p = wire(p.clone(), self.version);
            self.sent.push(p.clone());
            link.handle_packet(p, now);
        }
        !out.is_empty()
    }

    /// The broker's packets to the client, as its connection task produces them. Returns
    /// true when some were sent.
    fn broker_to_client(&mut self, now: Instant) -> bool {
        let Some(link) = self.link.as_mut() else { return false };
        if let Some(c) = self.control.try_recv() {
            link.on_control(c, now);
        }
        link.poll(now, usize::MAX);
        let out: Vec<Packet> = link.take_output();
        link.watch_timers();
        if link.close_reason().is_some() {
            Link::finish(*self.link.take().unwrap(), None, now);
        }
        for p in &out {
            self.deliver(p.clone());
        }
        !out.is_empty()
    }

    fn deliver(&mut self, p: Packet) {
        let p = wire(p, self.version);
        self.received.push(p.clone());
        match self.state.handle(p) {
            Ok(Incoming::Message(m)) => self.messages.push(m),
            Ok(Incoming::Nothing) => {}
            Ok(Incoming::Disconnect(d)) => panic!("disconnected: {d:?}"),
            Err(e) => panic!("protocol error on the client: {e}"),
        }
    }

    /// The connection is lost: what either end has not sent yet is lost with it.
    fn lose(&mut self, now: Instant) {
        self.state.drain_output().for_each(drop);
        if let Some(mut link) = self.link.take() {
            link.take_output();
            link.close(CloseReason::Closed);
            Link::finish(*link, None, now);
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) -> oneshot::Receiver<Result<SubAck, Error>> {
        let (tx, rx) = oneshot::channel();
        self.state.subscribe(Subscribe::new(0, filter, SubscriptionOptions::qos(qos)), tx);
        rx
    }

    fn publish(
        &mut self,
        topic: &str,
        payload: &str,
        qos: QoS,
    ) -> oneshot::Receiver<Result<ReasonCode, Error>> {
        let (tx, rx) = oneshot::channel();
        let mut p = Publish::new(topic, Bytes::copy_from_slice(payload.as_bytes()));
        p.qos = qos;
        assert!(qos == QoS::AtMostOnce || self.state.can_publish());
        self.state.publish(p, Some(tx));
        rx
    }

    fn payloads(&mut self) -> Vec<String> {
        self.messages.drain(..).map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect()
    }
}

/// Both ends exchange packets until neither has anything to send.
fn run(ends: &mut [&mut End], now: Instant) {
    for _ in 0..100 {
        let mut moved = false;
        for e in ends.iter_mut() {
            moved |= e.client_to_broker(now);
            moved |= e.broker_to_client(now);
        }
        if !moved {
            return;
        }
    }
    panic!("the ends never settle");
}

fn done<T: std::fmt::Debug>(rx: &mut oneshot::Receiver<Result<T, Error>>) -> T {
    rx.try_recv().expect("answered").expect("succeeded")
}

fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(version, id);
    c.clean_start = false;
    if version.is_v5() {
        c.properties.push(Property::SessionExpiryInterval(600));
    }
    c
}

fn id_of(p: &Packet) -> Option<u16> {
    match p {
        Packet::Publish(p) => Some(p.packet_id),
        Packet::PubRel(a) => Some(a.packet_id),
        _ => None,
    }
}

#[test]
fn connect_subscribe_and_publish_at_every_qos_both_ways() {
    for version in [V3_1_1, V5] {
        let b = broker();
        let t = Instant::now();
        let mut a = connect(&b, Connect::new(version, "a"), t);
        let mut z = connect(&b, Connect::new(version, "z"), t);
        let mut sa = a.subscribe("to-a/#", QoS::ExactlyOnce);
        let mut sz = z.subscribe("to-z/+", QoS::ExactlyOnce);
        run(&mut [&mut a, &mut z], t);
        assert_eq!(done(&mut sa).reason_codes, vec![ReasonCode::GrantedQoS2]);
        assert_eq!(done(&mut sz).reason_codes, vec![ReasonCode::GrantedQoS2]);
        let mut acks = Vec::new();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            acks.push(a.publish("to-z/x", &format!("a{}", qos.as_u8()), qos));
            acks.push(z.publish("to-a/x/y", &format!("z{}", qos.as_u8()), qos));
        }
        run(&mut [&mut a, &mut z], t);
        for ack in &mut acks {
            assert_eq!(done(ack), ReasonCode::Success, "{version}: acknowledged, a subscriber matched");
        }
        let qos_of = |e: &End| e.messages.iter().map(|m| m.qos).collect::<Vec<_>>();
        let all = vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        assert_eq!(qos_of(&a), all, "{version}");
        assert_eq!(qos_of(&z), all, "{version}");
        assert_eq!(a.payloads(), ["z0", "z1", "z2"], "{version}");
        assert_eq!(z.payloads(), ["a0", "a1", "a2"], "{version}");
        // The flows as the specification draws them, seen from z, which published QoS 2 and
        // received QoS 2.
        let kinds = |ps: &[Packet]| {
            let mut k: Vec<String> = ps.iter().map(|p| p.packet_type().to_string()).collect();
            k.sort();
            k
        };
        let flow = ["PUBACK", "PUBCOMP", "PUBLISH", "PUBLISH", "PUBLISH", "PUBREC", "PUBREL"];
        let with = |extra: &str| {
            let mut k: Vec<String> = flow.iter().map(|s| s.to_string()).collect();
            k.push(extra.to_owned());
            k.sort();
            k
        };
        assert_eq!(kinds(&z.sent), with("SUBSCRIBE"), "{version}: {:?}", z.sent);
        assert_eq!(kinds(&z.received), with("SUBACK"), "{version}: {:?}", z.received);
        // A message nobody subscribed to: 5.0 says so in the acknowledgement.
        let mut ack = a.publish("nobody", "x", QoS::AtLeastOnce);
        run(&mut [&mut a, &mut z], t);
        let expected = if version.is_v5() { ReasonCode::NoMatchingSubscribers } else { ReasonCode::Success };
        assert_eq!(done(&mut ack), expected);
    }
}

/// Messages in flight towards a client when its connection is lost, at each step of the
/// QoS 1 and 2 flows, resumed by the next connection with the session: QoS 1 at least once,
/// QoS 2 exactly once, when the client keeps its protocol state across the reconnect.
#[test]
fn a_persistent_session_resumes_the_messages_in_flight_to_the_client() {
    for version in [V3_1_1, V5] {
        let b = broker();
        let t = Instant::now();
        let mut sub = connect(&b, persistent(version, "sub"), t);
        let mut publisher = connect(&b, Connect::new(version, "pub"), t);
        let mut s = sub.subscribe("t", QoS::ExactlyOnce);
        run(&mut [&mut sub], t);
        done(&mut s);
        // m1 (QoS 1): the client receives it, its PUBACK is lost.
        // m2 (QoS 2): PUBREC reaches the broker, the PUBREL does not reach the client.
        // m3 (QoS 2): the client receives it, its PUBREC is lost.
        // m4 (QoS 2): PUBREC and PUBREL go through, the PUBCOMP is lost.
        for (payload, qos) in [
            ("m1", QoS::AtLeastOnce),
            ("m2", QoS::ExactlyOnce),
            ("m3", QoS::ExactlyOnce),
            ("m4", QoS::ExactlyOnce),
        ] {
            publisher.publish("t", payload, qos);
        }
        run(&mut [&mut publisher], t);
        let link = sub.link.as_mut().unwrap();
        link.poll(t, usize::MAX);
        let publishes: Vec<Packet> = link.take_output();
        assert_eq!(publishes.len(), 4, "{version}: all four in flight: {publishes:?}");
        let before: Vec<u16> = publishes.iter().filter_map(id_of).collect();
        for p in publishes {
            sub.deliver(p);
        }
        let acks: Vec<Packet> = sub.state.drain_output().collect();
        let [Packet::PubAck(_), rec2 @ Packet::PubRec(_), Packet::PubRec(_), rec4 @ Packet::PubRec(_)] =
            &acks[..]
        else {
            panic!("{version}: {acks:?}")
        };
        let link = sub.link.as_mut().unwrap();
        link.handle_packet(wire(rec2.clone(), version), t);
        link.handle_packet(wire(rec4.clone(), version), t);
        let rels: Vec<Packet> = link.take_output();
        let [_rel2, rel4 @ Packet::PubRel(_)] = &rels[..] else { panic!("{version}: {rels:?}") };
        sub.deliver(rel4.clone()); // PUBCOMP queued; m4 was delivered at its PUBLISH
        assert_eq!(sub.payloads(), ["m1", "m2", "m3", "m4"], "{version}: delivered at PUBLISH");
        sub.lose(t);

        // Meanwhile another message comes, QoS 1: it waits in the session.
        publisher.publish("t", "m5", QoS::AtLeastOnce);
        run(&mut [&mut publisher], t);

        let state = std::mem::replace(&mut sub.state, State::new(version, u16::MAX));
        let (mut again, ack) = connect_with(&b, persistent(version, "sub"), Some(state), t);
        assert!(ack.session_present, "{version}");
        run(&mut [&mut again], t);
        // What was in flight is resent first, in order, with the same identifiers: PUBLISH
        // with DUP for m1 and m3, PUBREL for m2 and m4; then m5.
        let resent: Vec<(PacketType, bool)> = again
            .received
            .iter()
            .take(5)
            .map(|p| (p.packet_type(), matches!(p, Packet::Publish(p) if p.dup)))
            .collect();
        use PacketType as P;
        assert_eq!(
            resent,
            [
                (P::Publish, true),
                (P::PubRel, false),
                (P::Publish, true),
                (P::PubRel, false),
                (P::Publish, false)
            ],
            "{version}: {:?}",
            again.received
        );
        let ids: Vec<u16> = again.received.iter().take(4).filter_map(id_of).collect();
        assert_eq!(ids, before, "{version}: original identifiers");
        // m1 again (at least once), m2, m3 and m4 not again (their identifiers are kept
        // until PUBREL), then m5.
        assert_eq!(again.payloads(), ["m1", "m5"], "{version}");
        // Nothing left in flight: a new message goes straight through.
        publisher.publish("t", "m6", QoS::ExactlyOnce);
        run(&mut [&mut publisher, &mut again], t);
        assert_eq!(again.payloads(), ["m6"], "{version}");
    }
}

/// `midge_client::connect` starts every connection with a new protocol state, so a client
/// that resumes its session (clean start 0) has forgotten the QoS 2 messages it received
/// and acknowledged with PUBREC but that were not released yet: the broker resends PUBREL,
/// and the new state answers PUBCOMP. The client delivers a QoS 2 message when its PUBLISH
/// arrives (keeping the identifier until PUBREL), so it is not lost (found by this test).
#[test]
fn a_new_client_state_on_a_resumed_session_keeps_qos_2_messages_delivered_before_pubrel() {
    let b = broker();
    let t = Instant::now();
    let mut sub = connect(&b, persistent(V5, "sub"), t);
    let mut publisher = connect(&b, Connect::new(V5, "pub"), t);
    let mut s = sub.subscribe("t", QoS::ExactlyOnce);
    run(&mut [&mut sub], t);
    done(&mut s);
    publisher.publish("t", "once", QoS::ExactlyOnce);
    run(&mut [&mut publisher], t);
    // The client receives the PUBLISH and sends PUBREC; the PUBREL is lost with the connection.
    sub.broker_to_client(t);
    sub.client_to_broker(t);
    sub.lose(t);
    // As `connect` does: a new state.
    assert_eq!(sub.payloads(), ["once"], "delivered at its PUBLISH");
    let (mut again, _) = connect_with(&b, persistent(V5, "sub"), None, t);
    run(&mut [&mut again], t);
    assert_eq!(again.payloads(), Vec::<String>::new(), "not again: {:?}", again.received);
}

/// Messages in flight from a client when its connection is lost, resumed by the next
/// connection: the broker routed them when they arrived, acknowledges a resent QoS 1 PUBLISH
/// again and completes a resent PUBREL with the identifier it kept. (`State` keeps what it
/// awaits but not the packets: the resends are the application's here.)
#[test]
fn a_persistent_session_completes_the_flows_from_the_client_after_a_reconnect() {
    for version in [V3_1_1, V5] {
        let b = broker();
        let t = Instant::now();
        let mut sub = connect(&b, Connect::new(version, "sub"), t);
        let mut s = sub.subscribe("t", QoS::ExactlyOnce);
        run(&mut [&mut sub], t);
        done(&mut s);
        let mut publisher = connect(&b, persistent(version, "pub"), t);
        let mut ack1 = publisher.publish("t", "p1", QoS::AtLeastOnce);
        let mut ack2 = publisher.publish("t", "p2", QoS::ExactlyOnce);
        // Both reach the broker; its PUBACK is lost, its PUBREC arrives, the PUBREL is lost.
        publisher.client_to_broker(t);
        let link = publisher.link.as_mut().unwrap();
        let answers: Vec<Packet> = link.take_output();
        let [Packet::PubAck(a1), rec @ Packet::PubRec(_)] = &answers[..] else {
            panic!("{version}: {answers:?}")
        };
        publisher.deliver(rec.clone());
        let rel: Vec<Packet> = publisher.state.drain_output().collect();
        assert!(matches!(&rel[..], [Packet::PubRel(_)]), "{version}: {rel:?}");
        publisher.lose(t);
        run(&mut [&mut sub], t);
        assert_eq!(sub.payloads(), ["p1", "p2"], "{version}: routed when they arrived");

        let state = std::mem::replace(&mut publisher.state, State::new(version, u16::MAX));
        let (mut again, ack) = connect_with(&b, persistent(version, "pub"), Some(state), t);
        assert!(ack.session_present, "{version}");
        let mut p1 = Publish::new("t", "p1");
        p1.qos = QoS::AtLeastOnce;
        p1.packet_id = a1.packet_id;
        p1.dup = true;
        let link = again.link.as_mut().unwrap();
        link.handle_packet(wire(Packet::Publish(p1), version), t);
        link.handle_packet(wire(rel[0].clone(), version), t);
        run(&mut [&mut again, &mut sub], t);
        let kinds: Vec<PacketType> = again.received.iter().map(|p| p.packet_type()).collect();
        assert_eq!(kinds, [PacketType::PubAck, PacketType::PubComp], "{version}");
        if let Packet::PubComp(c) = &again.received[1] {
            assert_eq!(c.reason_code, ReasonCode::Success, "{version}: the broker kept the identifier");
        }
        assert_eq!(done(&mut ack1), ReasonCode::Success);
        assert_eq!(done(&mut ack2), ReasonCode::Success);
        // p1 again (QoS 1: at least once), p2 not again (QoS 2: exactly once).
        assert_eq!(sub.payloads(), ["p1"], "{version}");
    }
}
