//! The broker's protocol behaviour at the session level: no sockets, no sleeps, time passed
//! in. Each test drives the same [`Link`] a connection task runs (`Broker::open`,
//! `Link::handle_packet`, `Link::poll`, `Link::on_control`, `Link::finish`), and the same
//! timers the server drives (`Broker::run_timers`), and checks the packets a client would
//! receive.
use std::sync::Arc;
use std::time::{Duration, Instant};

use midge_broker::broker::{ConnInfo, Link, Opening, PendingOpen};
use midge_broker::config::parse_str;
use midge_broker::control::ControlSlot;
use midge_broker::session::{CloseReason, Session};
use midge_broker::Broker;
use midge_codec::*;

fn broker(conf: &str) -> Arc<Broker> {
    let (mut config, _) = parse_str(conf, "test.conf").unwrap();
    if config.security.allow_anonymous.is_none() {
        config.security.allow_anonymous = Some(true);
    }
    Broker::new(config).unwrap()
}

fn default_broker() -> Arc<Broker> {
    broker("")
}

/// A client connection as the server sees it, without a socket.
struct Client {
    link: Option<Box<Link>>,
    control: Arc<ControlSlot>,
    inbox: Vec<Packet>,
}

enum Connected {
    Ok(Client, ConnAck),
    Refused(ConnAck),
    TakeOver(Client, Box<PendingOpen>),
}

fn ready(opening: Opening, control: Arc<ControlSlot>, now: Instant) -> Connected {
    let client = |link| Client { link, control, inbox: Vec::new() };
    match opening {
        Opening::Ready { link, connack, .. } => {
            let Packet::ConnAck(ack) = connack else { panic!("CONNACK expected") };
            let mut cl = client(Some(link));
            cl.flush(now);
            Connected::Ok(cl, ack)
        }
        Opening::Refused(r) => Connected::Refused(r.connack()),
        Opening::TakeOver(p) => Connected::TakeOver(client(None), p),
    }
}

fn open(broker: &Arc<Broker>, c: Connect, now: Instant) -> Connected {
    let conn_id = broker.next_conn_id();
    let control = ControlSlot::new();
    let info = ConnInfo::plain("127.0.0.1:50000".parse().unwrap());
    let auth = match broker.authenticate(&c, &info, now) {
        Ok(a) => a,
        Err(r) => return Connected::Refused(ConnAck::new(r.code)),
    };
    ready(broker.open(c, auth, conn_id, control.clone(), now), control, now)
}

fn connect(broker: &Arc<Broker>, c: Connect, now: Instant) -> (Client, ConnAck) {
    match open(broker, c, now) {
        Connected::Ok(cl, ack) => (cl, ack),
        Connected::Refused(ack) => panic!("refused: {ack:?}"),
        Connected::TakeOver(..) => panic!("takeover pending"),
    }
}

fn conn(version: ProtocolVersion, id: &str) -> Connect {
    Connect::new(version, id)
}

fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(version, id);
    c.clean_start = false;
    if version.is_v5() {
        c.properties.push(Property::SessionExpiryInterval(3600));
    }
    c
}

impl Client {
    fn link(&mut self) -> &mut Link {
        self.link.as_mut().expect("connected")
    }

    fn session(&self) -> &Session {
        self.link.as_ref().expect("connected").session()
    }

    /// What the connection task does after each event: control messages (takeovers,
    /// timeouts), then moving things along, collecting output, telling the timers the next
    /// deadline, and closing when the session says so.
    fn flush(&mut self, now: Instant) {
        let Some(link) = self.link.as_mut() else { return };
        if let Some(c) = self.control.try_recv() {
            if let Some(reply) = link.on_control(c, now) {
                link.drain_output(|p| self.inbox.push(p));
                self.inbox.extend(link.disconnect_packet());
                let link = self.link.take().unwrap();
                Link::finish(*link, Some(reply), now);
                return;
            }
        }
        link.poll(now, usize::MAX);
        link.drain_output(|p| self.inbox.push(p));
        link.watch_timers();
        if link.close_reason().is_some() {
            self.inbox.extend(link.disconnect_packet());
            let link = self.link.take().unwrap();
            Link::finish(*link, None, now);
        }
    }

    fn send(&mut self, p: Packet, now: Instant) {
        self.link().handle_packet(p, now);
        self.flush(now);
    }

    /// Takes what the client received so far.
    fn recv(&mut self, now: Instant) -> Vec<Packet> {
        self.flush(now);
        std::mem::take(&mut self.inbox)
    }

    fn publishes(&mut self, now: Instant) -> Vec<Publish> {
        self.recv(now)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => p,
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect()
    }

    fn subscribe(&mut self, filter: &str, qos: QoS, now: Instant) -> Vec<Packet> {
        self.send(Packet::Subscribe(Subscribe::new(1, filter, SubscriptionOptions::qos(qos))), now);
        self.recv(now)
    }

    fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool, id: u16, now: Instant) {
        let mut p = Publish::new(topic, Bytes::copy_from_slice(payload.as_bytes()));
        p.qos = qos;
        p.retain = retain;
        p.packet_id = if qos == QoS::AtMostOnce { 0 } else { id };
        self.send(Packet::Publish(p), now);
    }

    /// The socket goes away without DISCONNECT.
    fn lose(&mut self, now: Instant) {
        if let Some(l) = self.link.as_mut() {
            l.close(CloseReason::Closed);
        }
        self.flush(now);
    }

    fn disconnect(&mut self, now: Instant) {
        self.send(Packet::Disconnect(Disconnect::new(ReasonCode::Success)), now);
    }

    fn is_open(&self) -> bool {
        self.link.is_some()
    }

    /// Serves a takeover request, as the connection task does.
    fn serve_control(&mut self, now: Instant) {
        self.flush(now);
    }
}

fn finish_takeover(
    b: &Arc<Broker>,
    new: Client,
    pending: Box<PendingOpen>,
    now: Instant,
) -> (Client, ConnAck) {
    let mut pending = *pending;
    let old = pending.old.try_recv().ok();
    let control = new.control.clone();
    match ready(b.finish_takeover(pending, old, now), control, now) {
        Connected::Ok(cl, ack) => (cl, ack),
        _ => panic!("takeover did not complete"),
    }
}

use ProtocolVersion::{V3_1, V3_1_1, V5};

fn payloads(ps: &[Publish]) -> Vec<String> {
    ps.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect()
}

// ---- CONNECT ----------------------------------------------------------------------------

#[test]
fn empty_client_id_with_clean_start_gets_an_assigned_id() {
    let b = default_broker();
    let t = Instant::now();
    let (c, ack) = connect(&b, conn(V5, ""), t);
    let assigned = ack.properties.assigned_client_identifier().expect("Assigned Client Identifier");
    assert!(!assigned.is_empty());
    assert_eq!(&c.session().client_id, assigned);
    let (c3, ack3) = connect(&b, conn(V3_1_1, ""), t);
    assert_eq!(ack3.reason_code, ReasonCode::Success);
    assert!(ack3.properties.is_empty(), "3.1.1 has no properties");
    assert_ne!(c3.session().client_id, *assigned, "ids are unique");
}

#[test]
fn empty_client_id_without_clean_start_is_refused_in_3_1_1() {
    let b = default_broker();
    let mut c = conn(V3_1_1, "");
    c.clean_start = false;
    let Connected::Refused(ack) = open(&b, c, Instant::now()) else { panic!("accepted") };
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(!ack.session_present);
    // On the wire: 0x02 [MQTT-3.1.3-8].
    assert_eq!(Packet::ConnAck(ack).to_bytes(V3_1_1).unwrap()[3], 0x02);
    // 5.0 leaves it to the server (section 3.1.3.1): as mosquitto, an id is assigned.
    let mut c = conn(V5, "");
    c.clean_start = false;
    let (_, ack) = connect(&b, c, Instant::now());
    assert!(ack.properties.assigned_client_identifier().is_some());
    let Connected::Refused(_) = open(&b, conn(V3_1, ""), Instant::now()) else { panic!("3.1 needs an id") };
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let b = default_broker();
    let t = Instant::now();
    for v in [V3_1_1, V5] {
        let (mut c, _) = connect(&b, conn(v, "twice"), t);
        c.send(Packet::Connect(Box::new(conn(v, "twice"))), t);
        assert!(!c.is_open());
        let got = c.recv(t);
        if v.is_v5() {
            assert!(
                matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
            );
        } else {
            assert!(got.is_empty(), "3.1.1 just closes");
        }
    }
}

#[test]
fn takeover_closes_the_old_connection_and_keeps_the_session() {
    let b = default_broker();
    let t = Instant::now();
    let (mut old, _) = connect(&b, persistent(V5, "dup"), t);
    old.subscribe("t", QoS::AtLeastOnce, t);
    let Connected::TakeOver(new, pending) = open(&b, persistent(V5, "dup"), t) else {
        panic!("takeover expected")
    };
    old.serve_control(t);
    let got = old.recv(t);
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SessionTakenOver),
        "old connection is told 0x8E: {got:?}"
    );
    let (mut new, ack) = finish_takeover(&b, new, pending, t);
    assert!(ack.session_present);
    let (mut publisher, _) = connect(&b, conn(V5, "pub"), t);
    publisher.publish("t", "after", QoS::AtLeastOnce, false, 1, t);
    assert_eq!(payloads(&new.publishes(t)), ["after"], "the subscription moved with the session");
}

#[test]
fn takeover_with_clean_start_gets_a_new_session() {
    let b = default_broker();
    let t = Instant::now();
    let (mut old, _) = connect(&b, persistent(V3_1_1, "dup"), t);
    old.subscribe("t", QoS::AtLeastOnce, t);
    let Connected::TakeOver(new, pending) = open(&b, conn(V3_1_1, "dup"), t) else { panic!() };
    old.serve_control(t);
    assert!(old.recv(t).is_empty(), "3.1.1 has no DISCONNECT from the server");
    let (mut new, ack) = finish_takeover(&b, new, pending, t);
    assert!(!ack.session_present);
    let (mut p, _) = connect(&b, conn(V3_1_1, "pub"), t);
    p.publish("t", "x", QoS::AtLeastOnce, false, 1, t);
    assert!(new.recv(t).is_empty(), "old subscriptions are gone");
}

#[test]
fn takeover_of_a_session_that_ends_with_its_connection_starts_afresh() {
    let b = default_broker();
    let t = Instant::now();
    for v in [V3_1_1, V5] {
        // The first connection's session ends with it (clean session / expiry 0).
        let (mut old, _) = connect(&b, conn(v, "c"), t);
        old.subscribe("t", QoS::AtLeastOnce, t);
        let Connected::TakeOver(new, pending) = open(&b, persistent(v, "c"), t) else { panic!() };
        old.serve_control(t);
        let (mut new, ack) = finish_takeover(&b, new, pending, t);
        assert!(!ack.session_present, "{v}: the old session ended with its connection");
        let (mut p, _) = connect(&b, conn(v, "p"), t);
        p.publish("t", "x", QoS::AtLeastOnce, false, 1, t);
        assert!(new.recv(t).is_empty(), "{v}: its subscriptions are gone");
        new.disconnect(t);
    }
}

#[test]
fn max_keepalive_refuses_3_1_1_and_tells_5_0() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_keepalive 30\n");
    let t = Instant::now();
    let mut c = conn(V3_1_1, "k");
    c.keep_alive = 60;
    let Connected::Refused(ack) = open(&b, c, t) else { panic!() };
    assert_eq!(Packet::ConnAck(ack).to_bytes(V3_1_1).unwrap()[3], 0x02, "identifier rejected, as mosquitto");
    let mut c = conn(V5, "k5");
    c.keep_alive = 60;
    let (cl, ack) = connect(&b, c, t);
    assert_eq!(ack.properties.server_keep_alive(), Some(30));
    assert_eq!(cl.session().keep_alive, 30);
}

#[test]
fn anonymous_refused_when_not_allowed() {
    // A configuration with a listener and no allow_anonymous line refuses anonymous clients,
    // as mosquitto 2.0 does.
    let b = Broker::new(parse_str("listener 1883\n", "t").unwrap().0).unwrap();
    let Connected::Refused(ack) = open(&b, conn(V3_1_1, "a"), Instant::now()) else { panic!() };
    assert_eq!(Packet::ConnAck(ack).to_bytes(V3_1_1).unwrap()[3], 0x05, "not authorised");
    let Connected::Refused(ack) = open(&b, conn(V5, "a"), Instant::now()) else { panic!() };
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
}

#[test]
fn connack_announces_limits_to_5_0_clients() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_packet_size 2048\nmax_inflight_messages 10\n");
    let (_, ack) = connect(&b, conn(V5, "c"), Instant::now());
    assert_eq!(ack.properties.maximum_packet_size(), Some(2048));
    assert_eq!(ack.properties.receive_maximum(), Some(10));
    assert!(ack.properties.topic_alias_maximum().is_some());
}

// ---- sessions ---------------------------------------------------------------------------

#[test]
fn persistent_session_keeps_subscriptions_and_queues_qos_1_and_2_while_offline() {
    for v in [V3_1_1, V5] {
        let b = default_broker();
        let t = Instant::now();
        let (mut sub, ack) = connect(&b, persistent(v, "sub"), t);
        assert!(!ack.session_present);
        sub.subscribe("q/#", QoS::ExactlyOnce, t);
        sub.disconnect(t);
        let (mut p, _) = connect(&b, conn(v, "pub"), t);
        p.publish("q/0", "zero", QoS::AtMostOnce, false, 0, t);
        p.publish("q/1", "one", QoS::AtLeastOnce, false, 1, t);
        p.publish("q/2", "two", QoS::ExactlyOnce, false, 2, t);
        let (mut sub, ack) = connect(&b, persistent(v, "sub"), t);
        assert!(ack.session_present, "{v}: session present");
        let got = sub.publishes(t);
        assert_eq!(payloads(&got), ["one", "two"], "{v}: QoS 0 is not queued for an offline session");
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        assert_eq!(got[1].qos, QoS::ExactlyOnce);
    }
}

#[test]
fn clean_session_forgets_everything() {
    let b = default_broker();
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V3_1_1, "c"), t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    sub.disconnect(t);
    let (mut sub, ack) = connect(&b, persistent(V3_1_1, "c"), t);
    assert!(!ack.session_present);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    p.publish("t", "x", QoS::AtLeastOnce, false, 1, t);
    assert!(sub.recv(t).is_empty());
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let b = default_broker();
    let t = Instant::now();
    let (mut sub, _) = connect(&b, persistent(V3_1_1, "sub"), t);
    sub.subscribe("t", QoS::ExactlyOnce, t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    p.publish("t", "q1", QoS::AtLeastOnce, false, 1, t);
    p.publish("t", "q2", QoS::ExactlyOnce, false, 2, t);
    p.publish("t", "q2b", QoS::ExactlyOnce, false, 3, t);
    let first = sub.publishes(t);
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|p| !p.dup));
    // The client acknowledges the third one's PUBREC half, then the connection drops.
    sub.send(Packet::PubRec(PublishAck::new(first[2].packet_id)), t);
    assert_eq!(sub.recv(t), vec![Packet::PubRel(PublishAck::new(first[2].packet_id))]);
    sub.lose(t);
    let (mut sub, ack) = connect(&b, persistent(V3_1_1, "sub"), t);
    assert!(ack.session_present);
    let again = sub.recv(t);
    // [MQTT-4.4.0-1]: PUBLISH with DUP for the two unacknowledged, PUBREL for the third, in order.
    assert_eq!(again.len(), 3, "{again:?}");
    for (i, p) in again.iter().take(2).enumerate() {
        let Packet::Publish(p) = p else { panic!("{p:?}") };
        assert!(p.dup);
        assert_eq!(p.packet_id, first[i].packet_id);
        assert_eq!(p.payload, first[i].payload);
    }
    assert_eq!(again[2], Packet::PubRel(PublishAck::new(first[2].packet_id)));
}

#[test]
fn session_expiry_zero_ends_the_session_at_disconnect_and_disconnect_may_change_it() {
    let b = default_broker();
    let t = Instant::now();
    // Expiry 3600 in CONNECT, 0 in DISCONNECT: the session ends.
    let (mut c, _) = connect(&b, persistent(V5, "e"), t);
    c.subscribe("t", QoS::AtLeastOnce, t);
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.push(Property::SessionExpiryInterval(0));
    c.send(Packet::Disconnect(d), t);
    let (_, ack) = connect(&b, persistent(V5, "e"), t);
    assert!(!ack.session_present);
    // Expiry 0 in CONNECT, non-zero in DISCONNECT: a protocol error [MQTT-3.14.2-2].
    let (mut c, _) = connect(&b, conn(V5, "z"), t);
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.push(Property::SessionExpiryInterval(10));
    c.send(Packet::Disconnect(d), t);
    let got = c.recv(t);
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError),
        "{got:?}"
    );
}

/// A 5.0 client `id` with a Session Expiry Interval of 10 s, connected and gone at `t`:
/// its session is parked. Returns its CONNECT, to come back with.
fn parked_for_10_s(b: &Arc<Broker>, id: &str, t: Instant) -> Connect {
    let mut c = persistent(V5, id);
    c.properties = Properties::from(vec![Property::SessionExpiryInterval(10)]);
    let (mut cl, _) = connect(b, c.clone(), t);
    cl.disconnect(t);
    c
}

/// A parked session's time comes due in its millisecond on the timers' clock, maybe before
/// its instant: it is looked at again, not forgotten. Taken from the heap and left, 15 of
/// 5,000 sessions of this session's attack round never expired, and a few delayed wills
/// were never sent.
#[test]
fn a_time_that_comes_due_before_its_instant_is_looked_at_again() {
    let b = default_broker();
    let t = Instant::now();
    parked_for_10_s(&b, "early", t);
    let at = t + Duration::from_secs(10);
    // In the same millisecond of the timers' clock (unless `at` is on its boundary).
    assert_eq!(b.run_timers(at - Duration::from_nanos(1)), 0);
    assert_eq!(b.run_timers(at), 1, "watched again, and expired at its instant");
}

#[test]
fn parked_sessions_expire() {
    let b = default_broker();
    let t = Instant::now();
    let c = parked_for_10_s(&b, "x", t);
    assert_eq!(b.run_timers(t + Duration::from_secs(9)), 0);
    assert_eq!(b.run_timers(t + Duration::from_secs(10)), 1);
    let (_, ack) = connect(&b, c, t + Duration::from_secs(11));
    assert!(!ack.session_present);
}

#[test]
fn a_will_past_its_delay_goes_when_the_client_is_back_before_the_timers_run() {
    // Its delay passed while the session was parked: the will was due, the client's return
    // does not cancel it [MQTT-3.1.3-9]; the session is resumed.
    let b = default_broker();
    let t = Instant::now();
    let (mut watcher, _) = connect(&b, conn(V5, "watcher"), t);
    watcher.subscribe("wills/#", QoS::AtMostOnce, t);
    let (mut cl, _) = connect(&b, with_delayed_will("x", 5, 60), t);
    cl.lose(t);
    let back = |at| {
        let mut c = with_delayed_will("x", 5, 60);
        c.will = None;
        connect(&b, c, at)
    };
    let (_, ack) = back(t + Duration::from_secs(4));
    assert!(ack.session_present);
    assert!(watcher.publishes(t + Duration::from_secs(4)).is_empty(), "back within the delay: no will");
    let (mut cl, _) = connect(&b, with_delayed_will("x", 5, 60), t + Duration::from_secs(4));
    cl.lose(t + Duration::from_secs(4));
    let (_, ack) = back(t + Duration::from_secs(10));
    assert!(ack.session_present, "the session did not expire");
    assert_eq!(payloads(&watcher.publishes(t + Duration::from_secs(10))), ["gone"]);
}

#[test]
fn a_session_past_its_expiry_is_over_before_the_timers_run() {
    // As after a restart that found sessions offline longer than their expiry: a client
    // that comes back before the timers' next run finds no session, and its will (due when
    // the session ends) goes.
    let b = default_broker();
    let t = Instant::now();
    let (mut watcher, _) = connect(&b, conn(V5, "watcher"), t);
    watcher.subscribe("wills/#", QoS::AtMostOnce, t);
    let (mut cl, _) = connect(&b, with_delayed_will("x", 60, 10), t);
    cl.subscribe("a/#", QoS::AtLeastOnce, t);
    cl.lose(t);
    assert!(watcher.publishes(t).is_empty(), "the will waits for its delay");
    let mut c = with_delayed_will("x", 60, 10);
    c.will = None;
    let (mut cl, ack) = connect(&b, c, t + Duration::from_secs(10));
    assert!(!ack.session_present, "a session past its expiry was resumed");
    assert_eq!(payloads(&watcher.publishes(t + Duration::from_secs(10))), ["gone"]);
    assert_eq!(b.metrics.snapshot().expired, 1);
    let (mut other, _) = connect(&b, conn(V5, "other"), t + Duration::from_secs(10));
    other.publish("a/b", "hello", QoS::AtLeastOnce, false, 1, t + Duration::from_secs(10));
    assert!(
        cl.publishes(t + Duration::from_secs(10)).is_empty(),
        "the old subscriptions went with the session"
    );
}

#[test]
fn a_session_taken_on_another_node_before_the_timers_run_does_what_was_due() {
    // Cluster mode: a connection elsewhere took the client id, and the session parked here
    // ends. Past its expiry, it ends as the timers would have ended it: its will goes and
    // it counts as expired. Before, a will waiting for its delay is dropped (the client is
    // back [MQTT-3.1.3-9]), and one whose delay passed goes.
    let b = default_broker();
    let t = Instant::now();
    let mut w = conn(V5, "watcher");
    w.keep_alive = 0; // it waits past every timer
    let (mut watcher, _) = connect(&b, w, t);
    watcher.subscribe("wills/#", QoS::AtMostOnce, t);
    for (id, delay, expiry, later, will, expired) in
        [("x", 60, 10, 10, true, 1), ("y", 60, 100, 10, false, 1), ("z", 5, 100, 10, true, 1)]
    {
        let (mut cl, _) = connect(&b, with_delayed_will(id, delay, expiry), t);
        cl.lose(t);
        assert!(b.drop_parked(id, t + Duration::from_secs(later)), "{id} was parked here");
        let wills = if will { vec!["gone"] } else { vec![] };
        assert_eq!(payloads(&watcher.publishes(t + Duration::from_secs(later))), wills, "{id}");
        assert_eq!(b.metrics.snapshot().expired, expired, "{id}");
        assert!(!b.drop_parked(id, t + Duration::from_secs(later)), "{id} is gone");
    }
    // Their timers find nothing left to do.
    b.run_timers(t + Duration::from_secs(200));
    assert!(watcher.publishes(t + Duration::from_secs(200)).is_empty(), "a will went twice");
    assert_eq!(b.metrics.snapshot().expired, 1);
}

// ---- QoS flows --------------------------------------------------------------------------

#[test]
fn qos_1_and_2_flows_from_the_client() {
    let b = default_broker();
    let t = Instant::now();
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    p.publish("t", "a", QoS::AtLeastOnce, false, 7, t);
    assert_eq!(p.recv(t), vec![Packet::PubAck(PublishAck::new(7))]);
    p.publish("t", "b", QoS::ExactlyOnce, false, 8, t);
    assert_eq!(p.recv(t), vec![Packet::PubRec(PublishAck::new(8))]);
    p.send(Packet::PubRel(PublishAck::new(8)), t);
    assert_eq!(p.recv(t), vec![Packet::PubComp(PublishAck::new(8))]);
}

#[test]
fn qos_2_is_delivered_exactly_once_when_the_publish_is_resent_before_pubrel() {
    let b = default_broker();
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V3_1_1, "s"), t);
    sub.subscribe("t", QoS::AtMostOnce, t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    p.publish("t", "once", QoS::ExactlyOnce, false, 5, t);
    let mut again = Publish::new("t", "once");
    again.qos = QoS::ExactlyOnce;
    again.packet_id = 5;
    again.dup = true;
    p.send(Packet::Publish(again), t);
    assert_eq!(p.recv(t), vec![Packet::PubRec(PublishAck::new(5)), Packet::PubRec(PublishAck::new(5))]);
    p.send(Packet::PubRel(PublishAck::new(5)), t);
    assert_eq!(payloads(&sub.publishes(t)), ["once"]);
    // After PUBREL the identifier is free: a new message with it is a new message.
    p.publish("t", "next", QoS::ExactlyOnce, false, 5, t);
    assert_eq!(payloads(&sub.publishes(t)), ["next"]);
}

#[test]
fn qos_1_and_2_flows_to_the_client() {
    let b = default_broker();
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V5, "s"), t);
    sub.subscribe("t", QoS::ExactlyOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("t", "one", QoS::AtLeastOnce, false, 1, t);
    p.publish("t", "two", QoS::ExactlyOnce, false, 2, t);
    let got = sub.publishes(t);
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].packet_id, got[1].packet_id, "packet ids per message");
    sub.send(Packet::PubAck(PublishAck::new(got[0].packet_id)), t);
    sub.send(Packet::PubRec(PublishAck::new(got[1].packet_id)), t);
    assert_eq!(sub.recv(t), vec![Packet::PubRel(PublishAck::new(got[1].packet_id))]);
    sub.send(Packet::PubComp(PublishAck::new(got[1].packet_id)), t);
    assert!(sub.recv(t).is_empty());
    assert_eq!(sub.session().state.outgoing.inflight_len(), 0);
}

#[test]
fn the_inflight_window_holds_back_the_rest_until_acknowledged() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_inflight_messages 2\n");
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V3_1_1, "s"), t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    for i in 0..5 {
        p.publish("t", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1, t);
    }
    let first = sub.publishes(t);
    assert_eq!(payloads(&first), ["m0", "m1"]);
    sub.send(Packet::PubAck(PublishAck::new(first[0].packet_id)), t);
    assert_eq!(payloads(&sub.publishes(t)), ["m2"]);
}

#[test]
fn the_client_receive_maximum_bounds_the_window() {
    let b = default_broker();
    let t = Instant::now();
    let mut c = conn(V5, "s");
    c.properties.push(Property::ReceiveMaximum(1));
    let (mut sub, _) = connect(&b, c, t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("t", "a", QoS::AtLeastOnce, false, 1, t);
    p.publish("t", "b", QoS::AtLeastOnce, false, 2, t);
    assert_eq!(sub.publishes(t).len(), 1);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_queued_messages 3\nmax_inflight_messages 1\n");
    let t = Instant::now();
    let (mut sub, _) = connect(&b, persistent(V3_1_1, "s"), t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    sub.disconnect(t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    for i in 0..10 {
        p.publish("t", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1, t);
    }
    let (mut sub, _) = connect(&b, persistent(V3_1_1, "s"), t);
    assert_eq!(sub.link().handle().mailbox.dropped(), 7);
    let first = sub.publishes(t);
    assert_eq!(payloads(&first), ["m0"], "one in flight");
}

#[test]
fn receive_maximum_exceeded_is_0x93() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_inflight_messages 2\n");
    let t = Instant::now();
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for id in 1..=3 {
        p.publish("t", "x", QoS::ExactlyOnce, false, id, t);
    }
    let got = p.recv(t);
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{got:?}"
    );
    // A 3.1.1 client was told no Receive Maximum: it is bounded by its packet identifiers
    // (mosquitto holds its PUBRECs back instead; midge sends them).
    let (mut p, _) = connect(&b, conn(V3_1_1, "p3"), t);
    for id in 1..=30 {
        p.publish("t", "x", QoS::ExactlyOnce, false, id, t);
    }
    assert_eq!(p.recv(t).len(), 30, "30 PUBRECs");
    assert!(p.is_open());
}

#[test]
fn a_packet_larger_than_the_client_accepts_is_not_sent() {
    let b = default_broker();
    let t = Instant::now();
    let mut c = conn(V5, "small");
    c.properties.push(Property::MaximumPacketSize(64));
    let (mut sub, _) = connect(&b, c, t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("t", &"x".repeat(100), QoS::AtLeastOnce, false, 1, t);
    p.publish("t", "small", QoS::AtLeastOnce, false, 2, t);
    let got = sub.publishes(t);
    assert_eq!(payloads(&got), ["small"], "[MQTT-3.1.2-24] the large one is skipped, the session goes on");
    assert_eq!(sub.session().state.outgoing.inflight_len(), 1, "[MQTT-3.1.2-25] as if sent and completed");
}

// ---- subscriptions ----------------------------------------------------------------------

#[test]
fn suback_grants_each_filter_in_order() {
    let b = default_broker();
    let t = Instant::now();
    for v in [V3_1_1, V5] {
        let (mut c, _) = connect(&b, conn(v, "c"), t);
        let mut s = Subscribe::new(9, "a", SubscriptionOptions::qos(QoS::ExactlyOnce));
        s.filters.push(("b/+".into(), SubscriptionOptions::qos(QoS::AtMostOnce)));
        s.filters.push(("c/#".into(), SubscriptionOptions::qos(QoS::AtLeastOnce)));
        c.send(Packet::Subscribe(s), t);
        let got = c.recv(t);
        let [Packet::SubAck(ack)] = &got[..] else { panic!("{got:?}") };
        assert_eq!(ack.packet_id, 9);
        assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::GrantedQoS2, ReasonCode::Success, ReasonCode::GrantedQoS1]
        );
    }
}

#[test]
fn unsubscribe_stops_delivery_and_reports_in_5_0() {
    let b = default_broker();
    let t = Instant::now();
    let (mut c, _) = connect(&b, conn(V5, "c"), t);
    c.subscribe("t", QoS::AtMostOnce, t);
    let u =
        Unsubscribe { packet_id: 4, properties: Properties::new(), filters: vec!["t".into(), "nope".into()] };
    c.send(Packet::Unsubscribe(u), t);
    let got = c.recv(t);
    let [Packet::UnsubAck(ack)] = &got[..] else { panic!("{got:?}") };
    assert_eq!(ack.reason_codes, vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("t", "x", QoS::AtMostOnce, false, 0, t);
    assert!(c.recv(t).is_empty());
}

#[test]
fn puback_says_no_matching_subscribers_in_5_0() {
    let b = default_broker();
    let t = Instant::now();
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("nobody", "x", QoS::AtLeastOnce, false, 1, t);
    assert_eq!(
        p.recv(t),
        vec![Packet::PubAck(PublishAck::with_reason(1, ReasonCode::NoMatchingSubscribers))]
    );
}

// ---- retained ---------------------------------------------------------------------------

#[test]
fn retained_messages_go_to_new_subscriptions_with_the_retain_flag() {
    let b = default_broker();
    let t = Instant::now();
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    p.publish("r/a", "old", QoS::AtLeastOnce, true, 1, t);
    p.publish("r/a", "new", QoS::AtLeastOnce, true, 2, t);
    p.publish("r/b", "b", QoS::AtMostOnce, true, 0, t);
    let (mut live, _) = connect(&b, conn(V3_1_1, "live"), t);
    let got = live.subscribe("r/#", QoS::AtLeastOnce, t);
    assert!(matches!(got[0], Packet::SubAck(_)), "SUBACK comes first");
    let mut retained: Vec<(String, bool, QoS)> = got[1..]
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (String::from_utf8_lossy(&p.payload).into_owned(), p.retain, p.qos),
            other => panic!("{other:?}"),
        })
        .collect();
    retained.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(retained, vec![("b".into(), true, QoS::AtMostOnce), ("new".into(), true, QoS::AtLeastOnce)]);
    // A live subscriber gets a retained publish with RETAIN 0 [MQTT-3.3.1-9].
    p.publish("r/c", "live", QoS::AtMostOnce, true, 0, t);
    let got = live.publishes(t);
    assert!(!got[0].retain);
    // An empty retained payload removes it.
    p.publish("r/a", "", QoS::AtMostOnce, true, 0, t);
    let (mut late, _) = connect(&b, conn(V3_1_1, "late"), t);
    let got = late.subscribe("r/a", QoS::AtLeastOnce, t);
    assert_eq!(got.len(), 1, "only the SUBACK: {got:?}");
}

#[test]
fn retain_handling_in_5_0() {
    let b = default_broker();
    let t = Instant::now();
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("r", "kept", QoS::AtMostOnce, true, 0, t);
    let (mut c, _) = connect(&b, conn(V5, "c"), t);
    let sub = |rh| {
        Packet::Subscribe(Subscribe::new(
            1,
            "r",
            SubscriptionOptions { retain_handling: rh, ..SubscriptionOptions::qos(QoS::AtMostOnce) },
        ))
    };
    c.send(sub(RetainHandling::DoNotSend), t);
    assert_eq!(c.recv(t).len(), 1, "2: not sent");
    c.send(sub(RetainHandling::SendIfNew), t);
    assert_eq!(c.recv(t).len(), 1, "1: not sent, the subscription exists");
    c.send(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            properties: Properties::new(),
            filters: vec!["r".into()],
        }),
        t,
    );
    c.recv(t);
    c.send(sub(RetainHandling::SendIfNew), t);
    assert_eq!(c.recv(t).len(), 2, "1: sent for a new subscription");
    c.send(sub(RetainHandling::SendAtSubscribe), t);
    assert_eq!(c.recv(t).len(), 2, "0: always sent");
}

// ---- wills and keep alive ---------------------------------------------------------------

fn with_will(v: ProtocolVersion, id: &str, retain: bool) -> Connect {
    let mut c = conn(v, id);
    c.keep_alive = 10;
    c.will = Some(Will {
        topic: "wills/x".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Properties::new(),
    });
    c
}

#[test]
fn will_is_published_on_abnormal_loss_and_not_after_disconnect() {
    let b = default_broker();
    let t = Instant::now();
    let (mut w, _) = connect(&b, conn(V3_1_1, "watcher"), t);
    w.subscribe("wills/#", QoS::AtLeastOnce, t);
    // Socket lost.
    let (mut a, _) = connect(&b, with_will(V3_1_1, "a", false), t);
    a.lose(t);
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
    // Normal DISCONNECT: no will.
    let (mut c, _) = connect(&b, with_will(V3_1_1, "c", false), t);
    c.disconnect(t);
    assert!(w.recv(t).is_empty());
    // Keep alive timeout: will.
    let (mut k, _) = connect(&b, with_will(V3_1_1, "k", false), t);
    b.run_timers(t + Duration::from_millis(14_999));
    k.flush(t + Duration::from_millis(14_999));
    assert!(k.is_open(), "still within 1.5 x keep alive");
    b.run_timers(t + Duration::from_secs(15));
    k.flush(t + Duration::from_secs(15));
    assert!(!k.is_open());
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
    // Protocol error: will.
    let (mut e, _) = connect(&b, with_will(V5, "e", false), t);
    e.send(Packet::Connect(Box::new(conn(V5, "e"))), t);
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
    // 5.0 DISCONNECT with 0x04: will.
    let (mut d, _) = connect(&b, with_will(V5, "d", false), t);
    d.send(Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)), t);
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
}

#[test]
fn a_retained_will_is_retained() {
    let b = default_broker();
    let t = Instant::now();
    let (mut a, _) = connect(&b, with_will(V3_1_1, "a", true), t);
    a.lose(t);
    let (mut late, _) = connect(&b, conn(V3_1_1, "late"), t);
    let got = late.subscribe("wills/x", QoS::AtLeastOnce, t);
    assert!(matches!(&got[1], Packet::Publish(p) if p.retain && &p.payload[..] == b"gone"), "{got:?}");
}

#[test]
fn activity_resets_the_keep_alive_and_pingreq_gets_pingresp() {
    let b = default_broker();
    let t = Instant::now();
    let mut c = conn(V3_1_1, "k");
    c.keep_alive = 2;
    let (mut k, _) = connect(&b, c, t);
    let t1 = t + Duration::from_secs(2);
    k.send(Packet::PingReq, t1);
    assert_eq!(k.recv(t1), vec![Packet::PingResp]);
    b.run_timers(t + Duration::from_millis(4_999));
    k.flush(t + Duration::from_millis(4_999));
    assert!(k.is_open(), "deadline moved to t1 + 3 s");
    b.run_timers(t + Duration::from_secs(5));
    k.link().on_control(midge_broker::control::Control::Timeout, t + Duration::from_secs(5));
    assert_eq!(k.session().close_reason(), Some(&CloseReason::KeepAliveTimeout));
}

// ---- 5.0 topic aliases from the client --------------------------------------------------

#[test]
fn topic_aliases_from_the_client() {
    let b = default_broker();
    let t = Instant::now();
    let (mut s, _) = connect(&b, conn(V5, "s"), t);
    s.subscribe("alias/t", QoS::AtMostOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    let mut first = Publish::new("alias/t", "1");
    first.properties.push(Property::TopicAlias(3));
    p.send(Packet::Publish(first), t);
    let mut second = Publish::new("", "2");
    second.properties.push(Property::TopicAlias(3));
    p.send(Packet::Publish(second), t);
    let got = s.publishes(t);
    assert_eq!(payloads(&got), ["1", "2"]);
    assert!(got.iter().all(|p| &*p.topic == "alias/t" && p.properties.topic_alias().is_none()));
    // An unknown alias with an empty topic is a protocol error.
    let mut unknown = Publish::new("", "3");
    unknown.properties.push(Property::TopicAlias(4));
    p.send(Packet::Publish(unknown), t);
    assert!(
        matches!(p.recv(t).last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ProtocolError)
    );
    // An alias above the maximum is 0x94.
    let (mut q, _) = connect(&b, conn(V5, "q"), t);
    let mut big = Publish::new("x", "4");
    big.properties.push(Property::TopicAlias(u16::MAX));
    q.send(Packet::Publish(big), t);
    assert!(
        matches!(q.recv(t).last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::TopicAliasInvalid)
    );
}

#[test]
fn forwarded_properties_keep_user_properties_in_order() {
    let b = default_broker();
    let t = Instant::now();
    let (mut s, _) = connect(&b, conn(V5, "s"), t);
    s.subscribe("t", QoS::AtMostOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    let mut m = Publish::new("t", "x");
    m.properties = Properties::from(vec![
        Property::UserProperty("k".into(), "2".into()),
        Property::ContentType("text/plain".into()),
        Property::UserProperty("k".into(), "1".into()),
        Property::ResponseTopic("reply/here".into()),
        Property::CorrelationData(Bytes::from_static(b"\x01\x02")),
        Property::PayloadFormatIndicator(1),
    ]);
    p.send(Packet::Publish(m.clone()), t);
    let got = s.publishes(t);
    assert_eq!(got[0].properties, m.properties);
}

#[test]
fn message_expiry_drops_expired_and_forwards_the_time_left() {
    let b = default_broker();
    let t = Instant::now();
    let (mut s, _) = connect(&b, persistent(V5, "s"), t);
    s.subscribe("t", QoS::AtLeastOnce, t);
    s.disconnect(t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for (payload, secs) in [("short", 5), ("long", 60)] {
        let mut m = Publish::new("t", payload);
        m.qos = QoS::AtLeastOnce;
        m.packet_id = secs as u16;
        m.properties.push(Property::MessageExpiryInterval(secs));
        p.send(Packet::Publish(m), t);
    }
    let later = t + Duration::from_secs(10);
    let (mut s, _) = connect(&b, persistent(V5, "s"), later);
    let got = s.publishes(later);
    assert_eq!(payloads(&got), ["long"]);
    assert_eq!(got[0].properties.message_expiry_interval(), Some(50));
}

// ---- 5.0 features -----------------------------------------------------------------------

fn with_delayed_will(id: &str, delay: u32, expiry: u32) -> Connect {
    let mut c = with_will(V5, id, false);
    c.clean_start = false;
    c.properties = Properties::from(vec![Property::SessionExpiryInterval(expiry)]);
    if let Some(w) = c.will.as_mut() {
        w.properties.push(Property::WillDelayInterval(delay));
    }
    c
}

#[test]
fn will_delay_publishes_after_the_delay_or_at_session_end_and_not_if_back_in_time() {
    let b = default_broker();
    let t = Instant::now();
    let (mut w, _) = connect(&b, conn(V5, "watcher"), t);
    w.subscribe("wills/#", QoS::AtLeastOnce, t);
    // Lost, delay 10 s, session 100 s: nothing at 9 s, the will at 10 s.
    let (mut a, _) = connect(&b, with_delayed_will("a", 10, 100), t);
    a.lose(t);
    b.run_timers(t + Duration::from_secs(9));
    assert!(w.recv(t).is_empty(), "not before the delay");
    b.run_timers(t + Duration::from_secs(10));
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
    // Lost, delay 10 s, back after 5 s: never.
    let (mut c, _) = connect(&b, with_delayed_will("c", 10, 100), t);
    c.lose(t);
    let (_c2, ack) = connect(&b, with_delayed_will("c", 10, 100), t + Duration::from_secs(5));
    assert!(ack.session_present);
    b.run_timers(t + Duration::from_secs(60));
    assert!(w.recv(t).is_empty(), "the client came back in time");
    // Lost, delay 60 s, session 5 s: at the session's end.
    let (mut e, _) = connect(&b, with_delayed_will("e", 60, 5), t);
    e.lose(t);
    b.run_timers(t + Duration::from_secs(5));
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
    // A session that ends with the connection: at once.
    let (mut z, _) = connect(&b, with_delayed_will("z", 60, 0), t);
    z.lose(t);
    assert_eq!(payloads(&w.publishes(t)), ["gone"]);
}

/// A persistent 5.0 session of `id`, subscribed to `$share/g/jobs/#` at `qos`.
fn shared_member(b: &Arc<Broker>, id: &str, qos: QoS, t: Instant) -> Client {
    let (mut c, _) = connect(b, persistent(V5, id), t);
    c.subscribe("$share/g/jobs/#", qos, t);
    c
}

#[test]
fn unacknowledged_shared_messages_go_to_another_member_when_one_leaves() {
    let b = default_broker();
    let t = Instant::now();
    let sub = |id: &str| shared_member(&b, id, QoS::AtLeastOnce, t);
    let mut m1 = sub("m1");
    let mut m2 = sub("m2");
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for i in 0..4 {
        p.publish("jobs/x", &format!("j{i}"), QoS::AtLeastOnce, false, i + 1, t);
    }
    let got1 = payloads(&m1.publishes(t));
    let got2 = payloads(&m2.publishes(t));
    assert_eq!(got1.len() + got2.len(), 4, "one delivery per message to the group");
    assert_eq!((got1.len(), got2.len()), (2, 2), "spread over the members");
    // m1 goes away without acknowledging: its two go to m2.
    m1.lose(t);
    let mut again = payloads(&m2.publishes(t));
    again.sort();
    let mut want = got1.clone();
    want.sort();
    assert_eq!(again, want);
}

#[test]
fn a_shared_message_no_other_member_takes_stays_in_flight_with_its_identifier() {
    // The only member loses its connection with a QoS 1 message unacknowledged: it may have
    // it, so it gets it again as the same message (same identifier, DUP), not as a new one.
    let b = default_broker();
    let t = Instant::now();
    let (mut m, _) = connect(&b, persistent(V5, "m"), t);
    m.subscribe("$share/g/jobs/#", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("jobs/x", "j", QoS::AtLeastOnce, false, 1, t);
    let first = m.publishes(t);
    assert_eq!(payloads(&first), ["j"]);
    m.lose(t);
    let (mut m, ack) = connect(&b, persistent(V5, "m"), t);
    assert!(ack.session_present);
    let again = m.publishes(t);
    assert_eq!(payloads(&again), ["j"]);
    assert_eq!((again[0].packet_id, again[0].dup), (first[0].packet_id, true));
}

#[test]
fn a_shared_message_kept_by_a_session_that_expires_goes_to_a_member_online_then() {
    // m1 goes away with m2 offline: it keeps its messages. m2 comes back, m1's session
    // expires: they go to m2 (5.0 section 4.8.2), and not twice.
    let b = default_broker();
    let t = Instant::now();
    let member = |id: &str, expiry: u32| {
        let mut c = persistent(V5, id);
        c.properties = Properties::from(vec![Property::SessionExpiryInterval(expiry)]);
        c
    };
    let (mut m1, _) = connect(&b, member("m1", 10), t);
    m1.subscribe("$share/g/jobs/#", QoS::AtLeastOnce, t);
    let (mut m2, _) = connect(&b, member("m2", 3600), t);
    m2.subscribe("$share/g/jobs/#", QoS::AtLeastOnce, t);
    m2.lose(t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("jobs/x", "j1", QoS::AtLeastOnce, false, 1, t);
    assert_eq!(payloads(&m1.publishes(t)), ["j1"]);
    m1.lose(t);
    let (mut m2, _) = connect(&b, member("m2", 3600), t);
    assert!(m2.recv(t).is_empty(), "m1's message went before its session ended");
    b.run_timers(t + Duration::from_secs(11));
    assert_eq!(payloads(&m2.publishes(t + Duration::from_secs(11))), ["j1"]);
    assert_eq!(b.metrics.snapshot().expired, 1);
}

#[test]
fn a_shared_message_in_the_mailbox_of_a_session_that_ends_goes_to_another_member() {
    // A publisher that saw a member online can put a message in its mailbox just after the
    // member's leaving connection handed on what the session held. Here the messages wait in
    // m1's mailbox (its connection has not read them) when its session ends without that
    // hand-on: a takeover whose new connection is gone before the session reaches it.
    let b = default_broker();
    let t = Instant::now();
    let sub = |id: &str| shared_member(&b, id, QoS::AtLeastOnce, t);
    let (mut m1, mut m2) = (sub("m1"), sub("m2"));
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for i in 0..4 {
        p.publish("jobs/x", &format!("j{i}"), QoS::AtLeastOnce, false, i + 1, t);
    }
    assert_eq!(payloads(&m2.publishes(t)).len(), 2, "two for each member");
    let Connected::TakeOver(new, pending) = open(&b, persistent(V5, "m1"), t) else {
        panic!("takeover expected")
    };
    drop((new, pending));
    m1.serve_control(t);
    assert!(!m1.is_open());
    assert_eq!(payloads(&m2.publishes(t)).len(), 2, "m1's two went to m2");
}

#[test]
fn a_shared_qos_2_message_in_flight_waits_for_its_member() {
    // "the Server MUST complete the delivery of the message to that Client when it
    // reconnects" [MQTT-4.8.2-4]: not given to the other member.
    let b = default_broker();
    let t = Instant::now();
    let sub = |id: &str| shared_member(&b, id, QoS::ExactlyOnce, t);
    let (mut m1, mut m2) = (sub("m1"), sub("m2"));
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for (i, job) in ["j1", "j2"].into_iter().enumerate() {
        p.publish("jobs/x", job, QoS::ExactlyOnce, false, i as u16 + 1, t);
        p.send(Packet::PubRel(PublishAck::new(i as u16 + 1)), t);
    }
    let first = m1.publishes(t);
    assert_eq!((first.len(), m2.publishes(t).len()), (1, 1), "one each");
    m1.lose(t);
    assert!(m2.recv(t).is_empty(), "m2 got m1's QoS 2 message");
    let (mut m1, _) = connect(&b, persistent(V5, "m1"), t);
    let again = m1.publishes(t);
    assert_eq!(payloads(&again), payloads(&first));
    assert_eq!((again[0].packet_id, again[0].dup), (first[0].packet_id, true));
    m1.send(Packet::PubRec(PublishAck::new(first[0].packet_id)), t);
    assert_eq!(m1.recv(t), vec![Packet::PubRel(PublishAck::new(first[0].packet_id))]);
}

#[test]
fn topic_aliases_towards_a_client_that_allows_them() {
    let b = default_broker();
    let t = Instant::now();
    let mut c = conn(V5, "s");
    c.properties.push(Property::TopicAliasMaximum(2));
    let (mut s, _) = connect(&b, c, t);
    s.subscribe("a/#", QoS::AtMostOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    for topic in ["a/1", "a/1", "a/2", "a/3", "a/2", "a/3"] {
        p.publish(topic, "x", QoS::AtMostOnce, false, 0, t);
    }
    let got: Vec<(String, Option<u16>)> =
        s.publishes(t).iter().map(|p| (p.topic.to_string(), p.properties.topic_alias())).collect();
    assert_eq!(
        got,
        vec![
            ("a/1".into(), Some(1)),
            ("".into(), Some(1)),
            ("a/2".into(), Some(2)),
            ("a/3".into(), None),
            ("".into(), Some(2)),
            ("a/3".into(), None),
        ]
    );
    // A client that did not announce a maximum gets no aliases.
    let (mut plain, _) = connect(&b, conn(V5, "plain"), t);
    plain.subscribe("a/#", QoS::AtMostOnce, t);
    p.publish("a/1", "x", QoS::AtMostOnce, false, 0, t);
    assert_eq!(plain.publishes(t)[0].properties.topic_alias(), None);
}

#[test]
fn max_qos_and_retain_available_are_announced_and_enforced() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_qos 1\nretain_available false\n");
    let t = Instant::now();
    let (mut c, ack) = connect(&b, conn(V5, "c"), t);
    assert_eq!(ack.properties.maximum_qos(), Some(1));
    assert_eq!(ack.properties.retain_available(), Some(0));
    let got = c.subscribe("t", QoS::ExactlyOnce, t);
    assert!(matches!(&got[..], [Packet::SubAck(a)] if a.reason_codes == vec![ReasonCode::GrantedQoS1]));
    c.publish("t", "x", QoS::ExactlyOnce, false, 1, t);
    assert!(
        matches!(c.recv(t).last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::QoSNotSupported)
    );
    let (mut r, _) = connect(&b, conn(V5, "r"), t);
    r.publish("t", "x", QoS::AtMostOnce, true, 0, t);
    assert!(
        matches!(r.recv(t).last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::RetainNotSupported)
    );
    let mut w = with_will(V5, "w", true);
    w.will.as_mut().unwrap().qos = QoS::AtMostOnce;
    let Connected::Refused(ack) = open(&b, w, t) else { panic!("retained will accepted") };
    assert_eq!(ack.reason_code, ReasonCode::RetainNotSupported);
    let mut w2 = with_will(V5, "w2", false);
    w2.will.as_mut().unwrap().qos = QoS::ExactlyOnce;
    let Connected::Refused(ack) = open(&b, w2, t) else {
        panic!("a QoS 2 will above max_qos 1 was accepted")
    };
    assert_eq!(ack.reason_code, ReasonCode::QoSNotSupported);
}

#[test]
fn response_information_when_asked_and_configured() {
    let b = broker("listener 1883\nallow_anonymous true\nresponse_information replies/\n");
    let t = Instant::now();
    let mut c = conn(V5, "asker");
    c.properties.push(Property::RequestResponseInformation(1));
    let (_, ack) = connect(&b, c, t);
    assert_eq!(ack.properties.response_information().map(|s| &**s), Some("replies/asker/"));
    let (_, ack) = connect(&b, conn(V5, "other"), t);
    assert_eq!(ack.properties.response_information(), None, "only when asked");
}

#[test]
fn a_congested_subscriber_holds_publisher_acks_instead_of_dropping() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_queued_messages 3\n");
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V3_1_1, "sub"), t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    for i in 0..6 {
        p.publish("t", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1, t);
    }
    // Three fit the queue and are acknowledged; the fourth goes past it and its
    // acknowledgement waits, and what the publisher sent after it waits too (its connection
    // would stop reading): the subscriber has not read.
    assert_eq!(p.recv(t), (1..=3).map(|i| Packet::PubAck(PublishAck::new(i))).collect::<Vec<_>>());
    // The subscriber reads: room again, the held acknowledgement goes, the waiting publishes
    // are routed, in order; nothing lost.
    assert_eq!(payloads(&sub.publishes(t)), ["m0", "m1", "m2", "m3"]);
    assert_eq!(p.recv(t), (4..=6).map(|i| Packet::PubAck(PublishAck::new(i))).collect::<Vec<_>>());
    assert_eq!(payloads(&sub.publishes(t)), ["m4", "m5"]);
    assert_eq!(sub.link().handle().mailbox.dropped(), 0);
}

#[test]
fn a_slow_consumer_stops_holding_its_publishers_back() {
    let b = broker("listener 1883\nallow_anonymous true\nmax_queued_messages 2\n");
    let t = Instant::now();
    let (mut sub, _) = connect(&b, conn(V3_1_1, "slow"), t);
    sub.subscribe("t", QoS::AtLeastOnce, t);
    let (mut p, _) = connect(&b, conn(V3_1_1, "p"), t);
    for i in 0..3 {
        p.publish("t", "x", QoS::AtLeastOnce, false, i + 1, t);
    }
    assert_eq!(p.recv(t).len(), 2, "the third is held");
    // Past the slow-consumer limit the held acknowledgement goes anyway.
    let later = t + Duration::from_secs(3);
    assert_eq!(p.recv(later), vec![Packet::PubAck(PublishAck::new(3))]);
    // And further messages to the slow subscriber are dropped, not held.
    p.publish("t", "y", QoS::AtLeastOnce, false, 4, later);
    assert_eq!(p.recv(later), vec![Packet::PubAck(PublishAck::new(4))]);
    assert!(sub.link().handle().mailbox.dropped() >= 1);
}

// ---- Bridges: the remote's Maximum QoS ---------------------------------------------------

fn open_bridge(b: &Arc<Broker>, max_qos: QoS, now: Instant) -> Client {
    let side = midge_broker::broker::BridgeSide {
        client_id: "local.bridge".into(),
        username: None,
        clean: false,
        keep: true,
        max_inflight: 20,
        max_packet: usize::MAX,
        max_qos,
    };
    let control = ControlSlot::new();
    match ready(b.open_bridge(&side, b.next_conn_id(), control.clone(), now), control, now) {
        Connected::Ok(cl, _) => cl,
        _ => panic!("the bridge's session did not open"),
    }
}

#[test]
fn a_bridge_sends_what_it_queued_at_qos_2_within_the_remotes_maximum_qos() {
    let b = default_broker();
    let t = Instant::now();
    // The bridge's session subscribed at QoS 2, then its remote went away.
    let mut bridge = open_bridge(&b, QoS::ExactlyOnce, t);
    bridge.subscribe("q/#", QoS::ExactlyOnce, t);
    let (mut p, _) = connect(&b, conn(V5, "p"), t);
    p.publish("q/1", "in-flight", QoS::ExactlyOnce, false, 1, t);
    let first = bridge.publishes(t);
    assert_eq!((first.len(), first[0].qos), (1, QoS::ExactlyOnce));
    bridge.lose(t);
    p.publish("q/2", "queued", QoS::ExactlyOnce, false, 2, t);
    // The remote is back and says Maximum QoS 1: both go at QoS 1 [MQTT-3.2.2-11], the one
    // in flight again under its identifier with DUP.
    let mut bridge = open_bridge(&b, QoS::AtLeastOnce, t);
    let again = bridge.publishes(t);
    assert_eq!(payloads(&again), ["in-flight", "queued"]);
    assert!(again.iter().all(|p| p.qos == QoS::AtLeastOnce));
    assert!(again[0].dup && again[0].packet_id == first[0].packet_id);
    for p in &again {
        bridge.send(Packet::PubAck(PubAck::new(p.packet_id)), t);
    }
    assert!(bridge.session().state.outgoing.inflight_len() == 0);
    // Maximum QoS 0: at QoS 0, and nothing stays in flight.
    bridge.lose(t);
    p.publish("q/3", "zero", QoS::ExactlyOnce, false, 3, t);
    let mut bridge = open_bridge(&b, QoS::AtMostOnce, t);
    let last = bridge.publishes(t);
    assert_eq!(payloads(&last), ["zero"]);
    assert_eq!((last[0].qos, last[0].packet_id), (QoS::AtMostOnce, 0));
    assert!(bridge.session().state.outgoing.inflight_len() == 0);
}
