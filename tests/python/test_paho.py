"""midge with paho-mqtt clients (3.1, 3.1.1 and 5.0) and, where exact bytes or timing
matter, raw-socket clients: sessions, offline queues, takeover, wills, keep alive, client
identifiers, protocol levels, QoS 2 exactly once, QoS downgrade."""
from __future__ import annotations

import re
import time

import pytest

import mqtt_raw as raw
from support import require_paho, unique_id

V_NUM = {"31": raw.V31, "311": raw.V311, "5": raw.V5}
LOG_PROTOCOL = {"31": 1, "311": 2, "5": 5}


@pytest.fixture(autouse=True)
def _paho():
    require_paho()


def persistent(paho_clients, broker, cid, version, **kw):
    """A client whose session outlives the connection: clean session 0 (3.1/3.1.1), or
    clean start 0 with a session expiry of 60 s (5.0)."""
    c = paho_clients(broker, cid, version=version, clean=False, **kw)
    return c


def connect_persistent(c, **kw):
    if c.v5:
        return c.connect(clean_start=False, session_expiry=60, **kw)
    return c.connect(**kw)


def payloads(msgs):
    return [m.payload for m in msgs]


# ---------------------------------------------------------------------------------------
# Persistent sessions and offline queues
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_persistent_session_keeps_subscriptions_and_queues_qos1_qos2(broker, paho_clients, version):
    cid = unique_id(f"ps{version}")
    c = persistent(paho_clients, broker, cid, version)
    ack = connect_persistent(c)
    assert ack["session_present"] is False, "first connection: no session yet"
    assert c.subscribe("ps/t", 2) == [2]
    c.disconnect()
    broker.wait_for_log(rf"Client {cid} disconnected\.")

    pub = paho_clients(broker, unique_id("pub"), version="311")
    pub.connect()
    # While the client is away: QoS 1 and 2 are queued for it, QoS 0 is not.
    pub.publish("ps/t", b"offline q1", 1)
    pub.publish("ps/t", b"offline q0", 0)
    pub.publish("ps/t", b"offline q2", 2)

    c2 = persistent(paho_clients, broker, cid, version)
    ack = connect_persistent(c2)
    # MQTT 3.1 has no Session Present flag (the CONNACK flags byte is reserved, 0).
    assert ack["session_present"] is (version != "31"), "reconnect with clean session 0 resumes the session"
    # The subscription survived: a live message arrives without subscribing again, after
    # the queued ones (a queued QoS 0 message would show up before it).
    pub.publish("ps/t", b"live", 1)
    got = c2.messages_until_all({b"offline q1", b"offline q2", b"live"})
    # One more, so that anything else the session held shows up before it.
    pub.publish("ps/t", b"end", 1)
    got += c2.messages_until(b"end")
    assert sorted((m.payload, m.qos) for m in got) == [
        (b"end", 1), (b"live", 1), (b"offline q1", 1), (b"offline q2", 2)
    ]
    c2.disconnect()

    # A clean session discards the stored one...
    c3 = paho_clients(broker, cid, version=version, clean=True)
    ack = c3.connect(clean_start=True) if c3.v5 else c3.connect()
    assert ack["session_present"] is False
    c3.subscribe("ps/other", 1)
    pub.publish("ps/t", b"not for the clean session", 1)
    pub.publish("ps/other", b"marker", 1)
    assert payloads(c3.messages_until(b"marker")) == [b"marker"]
    c3.disconnect()
    # ...and ends with the connection: nothing to resume afterwards.
    c4 = persistent(paho_clients, broker, cid, version)
    assert connect_persistent(c4)["session_present"] is False


def test_v5_session_expiry_zero_ends_session_at_disconnect(broker, paho_clients):
    cid = unique_id("se0")
    c = paho_clients(broker, cid, version="5")
    assert c.connect(clean_start=False)["session_present"] is False  # no Session Expiry Interval: 0
    c.subscribe("se0/t", 1)
    c.disconnect()
    c2 = paho_clients(broker, cid, version="5")
    assert c2.connect(clean_start=False)["session_present"] is False
    c2.subscribe("se0/marker", 1)
    pub = paho_clients(broker, unique_id("pub"), version="5")
    pub.connect()
    pub.publish("se0/t", b"old subscription", 1)
    pub.publish("se0/marker", b"marker", 1)
    assert payloads(c2.messages_until(b"marker")) == [b"marker"]


def test_v5_session_expires_after_its_interval(broker, paho_clients):
    cid = unique_id("se1")
    c = paho_clients(broker, cid, version="5")
    c.connect(clean_start=False, session_expiry=1)
    c.subscribe("se1/t", 1)
    mark = broker.mark()
    c.disconnect()
    broker.wait_for_log(rf"Expiring client {cid} due to timeout\.", since=mark, timeout=5)
    c2 = paho_clients(broker, cid, version="5")
    assert c2.connect(clean_start=False, session_expiry=60)["session_present"] is False


def test_v5_session_expiry_in_disconnect(broker, raw_clients):
    """A 5.0 client may change a non-zero Session Expiry Interval in DISCONNECT; setting one
    after 0 in CONNECT is a Protocol Error [MQTT-3.14.2-2]."""
    cid = unique_id("sed")
    c = raw_clients(broker.port, version=raw.V5)
    c.connect(cid, clean=False, props={"SessionExpiryInterval": 10})
    c.subscribe(1, [("sed/t", 1)])
    c.send(raw.disconnect(raw.V5, 0, {"SessionExpiryInterval": 120}))
    assert c.wait_closed() == []
    c2 = raw_clients(broker.port, version=raw.V5)
    assert c2.connect(cid, clean=False, props={"SessionExpiryInterval": 10}).session_present is True

    cid0 = unique_id("sed0")
    z = raw_clients(broker.port, version=raw.V5)
    z.connect(cid0)  # Session Expiry Interval 0
    z.send(raw.disconnect(raw.V5, 0, {"SessionExpiryInterval": 120}))
    got = z.wait_closed()
    assert [(p.type, p.reason) for p in got] == [(raw.DISCONNECT, 0x82)]
    broker.wait_for_log(rf"Client {cid0} disconnected due to protocol error: session expiry")


# ---------------------------------------------------------------------------------------
# Takeover
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["311", "5"])
def test_takeover_disconnects_the_first_and_keeps_the_session(broker, paho_clients, version):
    cid = unique_id(f"to{version}")
    first = persistent(paho_clients, broker, cid, version)
    connect_persistent(first)
    first.subscribe("to/t", 1)
    mark = broker.mark()
    second = persistent(paho_clients, broker, cid, version)
    ack = connect_persistent(second)
    assert ack["session_present"] is True, "the second connection takes the session over"
    reason = first.wait_disconnected()
    if version == "5":
        # [MQTT-3.1.4-3]: DISCONNECT with 0x8E Session taken over to the old connection.
        assert reason.value == 0x8E, f"first client got {reason!r}"
    broker.wait_for_log(rf"Client {cid} already connected, closing old connection\.", since=mark)
    # The second keeps the subscription and stays connected.
    pub = paho_clients(broker, unique_id("pub"), version="311")
    pub.connect()
    pub.publish("to/t", b"after takeover", 1)
    m = second.next_message()
    assert (m.topic, m.payload) == ("to/t", b"after takeover")
    assert second.is_connected()
    assert first.messages.empty()


def test_takeover_with_clean_start_gets_a_new_session(broker, paho_clients):
    cid = unique_id("toc")
    first = paho_clients(broker, cid, version="5")
    first.connect(clean_start=False, session_expiry=60)
    first.subscribe("toc/t", 1)
    second = paho_clients(broker, cid, version="5")
    assert second.connect(clean_start=True)["session_present"] is False
    assert first.wait_disconnected().value == 0x8E
    second.subscribe("toc/marker", 1)
    pub = paho_clients(broker, unique_id("pub"), version="5")
    pub.connect()
    pub.publish("toc/t", b"old subscription", 1)
    pub.publish("toc/marker", b"marker", 1)
    assert payloads(second.messages_until(b"marker")) == [b"marker"]


@pytest.mark.parametrize("version", ["311", "5"])
def test_takeover_of_a_session_that_ends_with_its_connection(broker, paho_clients, version):
    """The first connection's session lasts as long as its network connection (3.1.1 clean
    session 1 [MQTT-3.1.2-6]; 5.0 Session Expiry Interval 0, section 3.1.2.11.2). The takeover
    closes that connection, so a second connection with clean session 0 finds no session:
    Session Present 0 [MQTT-3.2.2-2] and none of the old subscriptions (mosquitto resumes a
    taken-over session only when its expiry interval is above 0)."""
    cid = unique_id(f"tc{version}")
    first = paho_clients(broker, cid, version=version, clean=True)
    first.connect()
    first.subscribe("tc/t", 1)
    second = persistent(paho_clients, broker, cid, version)
    ack = connect_persistent(second)
    first.wait_disconnected()
    second.subscribe("tc/marker", 1)
    pub = paho_clients(broker, unique_id("pub"), version="311")
    pub.connect()
    pub.publish("tc/t", b"for the old clean session", 1)
    pub.publish("tc/marker", b"marker", 1)
    got = payloads(second.messages_until(b"marker"))
    assert ack["session_present"] is False, f"the taken-over session ended with its connection (received {got})"
    assert got == [b"marker"], "the old clean session's subscription was carried over"


def test_takeover_raw_v5_receives_disconnect_0x8e_then_close(broker, raw_clients):
    cid = unique_id("tor")
    first = raw_clients(broker.port, version=raw.V5)
    first.connect(cid)
    second = raw_clients(broker.port, version=raw.V5)
    second.connect(cid)
    got = first.wait_closed()
    assert [(p.type, p.reason) for p in got] == [(raw.DISCONNECT, 0x8E)]
    second.send(raw.pingreq())
    second.expect(raw.PINGRESP)


def test_what_a_client_sent_before_it_was_taken_over_takes_effect_first(broker, raw_clients):
    """Packets take effect in the order they arrived, across connections, as in mosquitto's
    single event loop (mosquitto's 04-retain-check-source and 05-session-expiry-v5 rely on
    it): a client publishes a retained message and closes its socket, or (5.0) sends
    DISCONNECT with Session Expiry Interval 0, and reconnects at once with the same client
    id. The old connection handles what its socket holds before it hands the session over:
    the new connection's subscription gets the retained message, and it finds no session.
    Twenty rounds each, since the order is a race when it is not enforced."""
    for i in range(20):
        cid = unique_id("order")
        first = raw_clients(broker.port, version=raw.V311)
        first.connect(cid)
        first.send(raw.publish(f"order/{cid}", f"retained {i}", 0, True))
        first.close()
        second = raw_clients(broker.port, version=raw.V311)
        second.connect(cid)
        second.subscribe(1, [(f"order/{cid}", 0)])
        m = second.expect(raw.PUBLISH)
        assert (m.payload, m.retain) == (f"retained {i}".encode(), True), f"round {i}: {m}"
        second.close()
    for i in range(20):
        cid = unique_id("ended")
        first = raw_clients(broker.port, version=raw.V5)
        first.connect(cid, clean=False, props={"SessionExpiryInterval": 60})
        first.send(raw.disconnect(raw.V5, 0, {"SessionExpiryInterval": 0}))
        second = raw_clients(broker.port, version=raw.V5)
        ack = second.connect(cid, clean=False, props={"SessionExpiryInterval": 60})
        assert not ack.session_present, f"round {i}: the session ended with the DISCONNECT before"
        second.close()


@pytest.mark.parametrize("queue_qos0", [True, False])
def test_queue_qos0_messages_keeps_qos0_for_an_offline_persistent_session(broker_factory, raw_clients, queue_qos0):
    """mosquitto's `queue_qos0_messages true`: QoS 0 messages published while a persistent
    session's client is away are queued for it (3.1.1 section 3.1.2.4: they MAY be stored),
    and delivered when it comes back; without it (the default) they are not."""
    b = broker_factory(f"queue_qos0_messages {'true' if queue_qos0 else 'false'}")
    cid = unique_id("q0")
    sub = raw_clients(b.port, version=raw.V311)
    sub.connect(cid, clean=False)
    sub.subscribe(1, [("q0/#", 1)])
    sub.send(raw.disconnect())
    sub.wait_closed()
    pub = raw_clients(b.port, version=raw.V311)
    pub.connect(unique_id("q0pub"))
    pub.publish("q0/a", "away, qos 0", qos=0)
    pub.publish("q0/b", "away, qos 1", qos=1)
    back = raw_clients(b.port, version=raw.V311)
    assert back.connect(cid, clean=False).session_present
    got = []
    while len(got) < (2 if queue_qos0 else 1):
        m = back.expect(raw.PUBLISH)
        got.append((m.topic, m.qos))
        if m.qos:
            back.send(raw.puback(m.packet_id))
    back.send(raw.pingreq())
    assert back.expect(raw.PINGRESP)
    expected = [("q0/a", 0), ("q0/b", 1)] if queue_qos0 else [("q0/b", 1)]
    assert got == expected


@pytest.mark.parametrize("queue_qos0", [True, False])
@pytest.mark.parametrize("back_how", ["after-disconnect", "takeover"])
def test_qos0_messages_left_unsent_when_the_client_goes_are_dropped(broker_factory, raw_clients, queue_qos0,
                                                                    back_how):
    """QoS 0 messages queued for a connected client and not yet written when it goes are
    dropped with the connection, as mosquitto drops them (it keeps no QoS 0 message for a
    client that is not connected): the client back gets its QoS 1 message and what is
    published from then on, not what its last connection left unread; so does a connection
    that takes the session over from one still open. With `queue_qos0_messages true` they
    stay queued and come first."""
    b = broker_factory(f"queue_qos0_messages {'true' if queue_qos0 else 'false'}")
    cid = unique_id("q0u")
    sub = raw_clients(b.port, version=raw.V311)
    sub.connect(cid, clean=False)
    sub.subscribe(1, [("q0u/#", 1)])
    pub = raw_clients(b.port, version=raw.V311)
    pub.connect(unique_id("q0upub"))
    # The subscriber never reads: 20 MB of QoS 0 messages fill the sockets' buffers, and
    # the rest waits in the broker (its queue holds 1000).
    for _ in range(300):
        pub.publish("q0u/old", b"x" * 65536, qos=0)
    pub.publish("q0u/last", "qos 1", qos=1)  # acknowledged once queued behind them
    if back_how == "after-disconnect":
        mark = b.mark()
        sub.send(raw.disconnect())
        sub.close()
        # Closed with unread data, the socket resets: the broker may see either first.
        b.wait_for_log(rf"Client {cid} disconnected\.|on client {cid}, disconnecting", since=mark)
    back = raw_clients(b.port, version=raw.V311)
    assert back.connect(cid, clean=False).session_present
    first = back.expect(raw.PUBLISH, timeout=10)
    if queue_qos0:
        assert (first.topic, first.qos) == ("q0u/old", 0)
        return
    assert (first.topic, first.payload, first.qos) == ("q0u/last", b"qos 1", 1)
    back.send(raw.puback(first.packet_id))
    pub.publish("q0u/new", "fresh", qos=0)
    m = back.expect(raw.PUBLISH)
    assert (m.topic, m.payload, m.qos) == ("q0u/new", b"fresh", 0)


# ---------------------------------------------------------------------------------------
# Wills
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_will_published_on_abnormal_loss(broker, paho_clients, raw_clients, version):
    watcher = paho_clients(broker, unique_id("w"), version="5")
    watcher.connect()
    watcher.subscribe("will/#", 1)
    cid = unique_id(f"wl{version}")
    c = raw_clients(broker.port, version=V_NUM[version])
    c.connect(cid, will={"topic": "will/lost", "payload": b"gone " + cid.encode(), "qos": 1})
    mark = broker.mark()
    c.close()  # no DISCONNECT
    m = watcher.next_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/lost", b"gone " + cid.encode(), 1, False)
    broker.wait_for_log(rf"Client {cid} closed its connection\.", since=mark)


@pytest.mark.parametrize("version", ["311", "5"])
def test_will_not_published_after_normal_disconnect(broker, paho_clients, raw_clients, version):
    watcher = paho_clients(broker, unique_id("w"), version="311")
    watcher.connect()
    watcher.subscribe("will/#", 1)
    cid = unique_id("wn")
    c = raw_clients(broker.port, version=V_NUM[version])
    c.connect(cid, will={"topic": "will/normal", "payload": b"should not appear", "qos": 1})
    c.send(raw.disconnect(V_NUM[version]))
    assert c.wait_closed() == []
    broker.wait_for_log(rf"Client {cid} disconnected\.")
    watcher_pub = paho_clients(broker, unique_id("p"), version="311")
    watcher_pub.connect()
    watcher_pub.publish("will/marker", b"marker", 1)
    assert payloads(watcher.messages_until(b"marker")) == [b"marker"]


def test_v5_disconnect_with_will_message_publishes_the_will(broker, paho_clients, raw_clients):
    watcher = paho_clients(broker, unique_id("w"), version="5")
    watcher.connect()
    watcher.subscribe("will/#", 1)
    c = raw_clients(broker.port, version=raw.V5)
    c.connect(unique_id("w04"), will={"topic": "will/04", "payload": b"asked for", "qos": 0})
    c.send(raw.disconnect(raw.V5, 0x04))
    assert c.wait_closed() == []
    m = watcher.next_message()
    assert (m.topic, m.payload) == ("will/04", b"asked for")


def test_retained_will(broker, paho_clients, raw_clients):
    c = raw_clients(broker.port, version=raw.V311)
    c.connect(unique_id("wr"), will={"topic": "will/retained", "payload": b"offline", "qos": 1, "retain": True})
    watcher = paho_clients(broker, unique_id("w"), version="311")
    watcher.connect()
    watcher.subscribe("will/#", 1)
    c.close()
    live = watcher.next_message()
    assert (live.topic, live.payload) == ("will/retained", b"offline")
    # A later subscriber gets it as a retained message.
    late = paho_clients(broker, unique_id("late"), version="5")
    late.connect()
    late.subscribe("will/retained", 1)
    m = late.next_message()
    assert (m.topic, m.payload, m.retain, m.qos) == ("will/retained", b"offline", True, 1)


def test_will_of_a_killed_paho_client(broker, paho_clients):
    watcher = paho_clients(broker, unique_id("w"), version="5")
    watcher.connect()
    watcher.subscribe("will/#", 2)
    cid = unique_id("wk")
    victim = paho_clients(broker, cid, version="5",
                          will={"topic": "will/paho", "payload": "paho gone", "qos": 2,
                                "props": {"ContentType": "text/plain"}})
    victim.connect()
    victim.kill()
    m = watcher.next_message()
    assert (m.topic, m.payload, m.qos) == ("will/paho", b"paho gone", 2)
    assert m.properties.ContentType == "text/plain"


# ---------------------------------------------------------------------------------------
# Keep alive
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["311", "5"])
def test_silent_client_is_disconnected_after_one_and_a_half_keepalives(broker, paho_clients, raw_clients, version):
    watcher = paho_clients(broker, unique_id("w"), version="311")
    watcher.connect()
    watcher.subscribe("ka/#", 1)
    cid = unique_id(f"ka{version}")
    c = raw_clients(broker.port, version=V_NUM[version])
    c.connect(cid, keepalive=1, will={"topic": "ka/will", "payload": b"timed out", "qos": 1})
    start = time.monotonic()
    got = c.wait_closed(timeout=5)
    elapsed = time.monotonic() - start
    assert 1.4 <= elapsed <= 2.5, f"closed after {elapsed:.2f} s, expected about 1.5 s"
    if version == "5":
        assert [(p.type, p.reason) for p in got] == [(raw.DISCONNECT, 0x8D)], got
    else:
        assert got == []
    broker.wait_for_log(rf"Client {cid} has exceeded timeout, disconnecting\.")
    m = watcher.next_message()
    assert (m.topic, m.payload) == ("ka/will", b"timed out")


def test_pingreq_gets_pingresp_and_keeps_the_connection(broker, raw_clients):
    c = raw_clients(broker.port, version=raw.V311)
    c.connect(unique_id("ping"), keepalive=1)
    start = time.monotonic()
    # The client's own ping schedule (the clock is what is tested): every 0.5 s for 2.5 s,
    # past the 1.5 s the broker allows a silent client.
    for _ in range(5):
        time.sleep(0.5)
        c.send(raw.pingreq())
        c.expect(raw.PINGRESP, timeout=1)
    assert time.monotonic() - start > 2.0
    assert c.subscribe(1, [("ping/t", 0)]).codes == [0]


def test_max_keepalive_v311_longer_keepalive_refused(broker_factory, raw_clients):
    b = broker_factory("max_keepalive 10")
    c = raw_clients(b.port, version=raw.V311)
    cid = unique_id("mk")
    ack = c.connect(cid, keepalive=20, expect_reason=None)
    assert (ack.session_present, ack.reason) == (False, 0x02), "CONNACK 0x02 identifier rejected"
    assert c.wait_closed() == []
    b.wait_for_log(rf"Client {cid} from 127\.0\.0\.1:\d+ refused: Client Identifier not valid "
        rf"\(the keep alive is above max_keepalive\)\.")
    for ka in (10, 5):
        ok = raw_clients(b.port, version=raw.V311)
        assert ok.connect(unique_id("mk"), keepalive=ka).reason == 0


@pytest.mark.parametrize("keepalive", [20, 0])
def test_max_keepalive_v5_gets_server_keep_alive(broker_factory, raw_clients, keepalive):
    b = broker_factory("max_keepalive 10")
    c = raw_clients(b.port, version=raw.V5)
    cid = unique_id("mk5")
    ack = c.connect(cid, keepalive=keepalive)
    assert ack.props.get("ServerKeepAlive") == 10, ack
    b.wait_for_log(rf"New client connected from 127\.0\.0\.1:\d+ as {cid} \(p5, c1, k10\)\.")
    within = raw_clients(b.port, version=raw.V5)
    assert "ServerKeepAlive" not in within.connect(unique_id("mk5"), keepalive=5).props


def test_max_keepalive_v5_paho_sees_server_keep_alive(broker_factory, paho_clients):
    b = broker_factory("max_keepalive 10")
    c = paho_clients(b, unique_id("mkp"), version="5")
    ack = c.connect(keepalive=30)
    assert ack["properties"].ServerKeepAlive == 10


def test_server_keep_alive_is_enforced(broker_factory, raw_clients):
    b = broker_factory("max_keepalive 1")
    c = raw_clients(b.port, version=raw.V5)
    ack = c.connect(unique_id("ska"), keepalive=60)
    assert ack.props.get("ServerKeepAlive") == 1
    start = time.monotonic()
    got = c.wait_closed(timeout=5)
    elapsed = time.monotonic() - start
    assert 1.4 <= elapsed <= 2.5, f"closed after {elapsed:.2f} s"
    assert [(p.type, p.reason) for p in got] == [(raw.DISCONNECT, 0x8D)]


# ---------------------------------------------------------------------------------------
# Client identifiers and protocol levels
# ---------------------------------------------------------------------------------------

def test_empty_client_id_v311_gets_an_id(broker, raw_clients):
    mark = broker.mark()
    c = raw_clients(broker.port, version=raw.V311)
    assert c.connect("", clean=True).reason == 0
    m = broker.wait_for_log(r"New client connected from 127\.0\.0\.1:\d+ as (\S+) \(p2, c1, k60\)\.", since=mark)
    assert m.group(1)
    # It is a working session.
    c.subscribe(1, [("eid/t", 1)])
    c.publish("eid/t", b"to myself", qos=1)
    p = c.expect(raw.PUBLISH)
    assert (p.topic, p.payload) == ("eid/t", b"to myself")


def test_empty_client_id_v5_gets_assigned_client_identifier(broker, raw_clients, paho_clients):
    ids = []
    for _ in range(2):
        mark = broker.mark()
        c = raw_clients(broker.port, version=raw.V5)
        ack = c.connect("", clean=True)
        assigned = ack.props.get("AssignedClientIdentifier")
        assert assigned, f"no Assigned Client Identifier in {ack}"
        broker.wait_for_log(rf"New client connected from 127\.0\.0\.1:\d+ as {re.escape(assigned)} \(p5, c1, k60\)\.", since=mark)
        ids.append(assigned)
    assert ids[0] != ids[1]
    p = paho_clients(broker, "", version="5")
    assert p.connect()["properties"].AssignedClientIdentifier


@pytest.mark.parametrize("version,code", [("311", 0x02), ("31", 0x02)])
def test_empty_client_id_without_clean_session_is_refused(broker, raw_clients, version, code):
    """[MQTT-3.1.3-8] (3.1.1); 3.1 needs 1 to 23 characters even with clean session."""
    c = raw_clients(broker.port, version=V_NUM[version])
    ack = c.connect("", clean=(version == "31"), expect_reason=None)
    assert (ack.session_present, ack.reason) == (False, code)
    assert c.wait_closed() == []
    broker.wait_for_log(r"Client <unknown> from 127\.0\.0\.1:\d+ refused: Client Identifier not valid "
                        r"\(an empty client id needs clean session\)\.")


def test_v5_empty_client_id_without_clean_start_gets_an_id(broker, raw_clients):
    """5.0 leaves it to the server (section 3.1.3.1): as mosquitto, an id is assigned."""
    c = raw_clients(broker.port, version=V_NUM["5"])
    ack = c.connect("", clean=False)
    assert ack.reason == 0 and ack.props.get("AssignedClientIdentifier"), ack


@pytest.mark.parametrize("level", [6, 2])
def test_unsupported_protocol_level(broker, raw_clients, level):
    c = raw_clients(broker.port, version=raw.V311)
    c.send(raw.connect(unique_id("lvl"), version=raw.V311, level=level))
    # CONNACK 0x01 unacceptable protocol version, in the 3.1.1 format, then close
    # [MQTT-3.1.2-2].
    got = c.wait_closed()
    assert len(got) == 1 and got[0].type == raw.CONNACK, got
    assert got[0].body == b"\x00\x01"
    broker.wait_for_log(rf"Bad CONNECT from 127\.0\.0\.1:{c.local_port}: unsupported protocol")


# ---------------------------------------------------------------------------------------
# QoS
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["311", "5"])
def test_qos2_resent_publish_is_delivered_once(broker, paho_clients, raw_clients, version):
    v = V_NUM[version]
    sub = paho_clients(broker, unique_id("s"), version="311")
    sub.connect()
    # Granted QoS 1, so that paho hands messages over in the order they arrive.
    sub.subscribe("once/#", 1)
    c = raw_clients(broker.port, version=v)
    c.connect(unique_id("q2"))
    c.send(raw.publish("once/t", b"exactly once", qos=2, packet_id=7, version=v))
    assert c.expect(raw.PUBREC).packet_id == 7
    # The client did not see PUBREC (say) and sends the PUBLISH again, with DUP.
    c.send(raw.publish("once/t", b"exactly once", qos=2, packet_id=7, dup=True, version=v))
    assert c.expect(raw.PUBREC).packet_id == 7
    c.send(raw.pubrel(7, v))
    comp = c.expect(raw.PUBCOMP)
    assert (comp.packet_id, comp.reason) == (7, 0)
    # After PUBCOMP the identifier is free: the same id is a new message.
    c.publish("once/t", b"new message, same id", qos=2, packet_id=7)
    c.publish("once/t", b"marker", qos=1, packet_id=8)
    got = sub.messages_until(b"marker")
    assert payloads(got) == [b"exactly once", b"new message, same id", b"marker"]


def test_v5_pubrel_for_unknown_id_gets_a_plain_pubcomp(broker, raw_clients):
    """As mosquitto: PUBCOMP 0x00 (0x92 Packet Identifier not found is allowed, not
    required, section 3.7.2.1)."""
    c = raw_clients(broker.port, version=raw.V5)
    c.connect(unique_id("rel"))
    c.send(raw.pubrel(99, raw.V5))
    comp = c.expect(raw.PUBCOMP)
    assert (comp.packet_id, comp.reason) == (99, 0)


@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_delivery_is_resent_with_dup_on_reconnect(broker, paho_clients, raw_clients, qos):
    cid = unique_id(f"dup{qos}")
    c = raw_clients(broker.port, version=raw.V311)
    c.connect(cid, clean=False)
    c.subscribe(1, [("dup/t", qos)])
    pub = paho_clients(broker, unique_id("p"), version="311")
    pub.connect()
    pub.publish("dup/t", b"ack me", qos)
    first = c.expect(raw.PUBLISH)
    assert (first.qos, first.dup, first.payload) == (qos, False, b"ack me")
    c.close()  # no acknowledgement
    c2 = raw_clients(broker.port, version=raw.V311)
    assert c2.connect(cid, clean=False).session_present is True
    again = c2.expect(raw.PUBLISH)
    # [MQTT-4.4.0-1]: resent with DUP 1 and the same packet identifier.
    assert (again.qos, again.dup, again.packet_id, again.payload) == (qos, True, first.packet_id, b"ack me")
    if qos == 1:
        c2.send(raw.puback(again.packet_id))
    else:
        c2.send(raw.pubrec(again.packet_id))
        assert c2.expect(raw.PUBREL).packet_id == again.packet_id
        c2.send(raw.pubcomp(again.packet_id))
    c2.send(raw.pingreq())
    c2.expect(raw.PINGRESP)  # nothing else was pending


def test_pubrel_resent_on_reconnect(broker, paho_clients, raw_clients):
    cid = unique_id("rr")
    c = raw_clients(broker.port, version=raw.V311)
    c.connect(cid, clean=False)
    c.subscribe(1, [("rr/t", 2)])
    pub = paho_clients(broker, unique_id("p"), version="311")
    pub.connect()
    pub.publish("rr/t", b"q2", 2)
    p = c.expect(raw.PUBLISH)
    c.send(raw.pubrec(p.packet_id))
    assert c.expect(raw.PUBREL).packet_id == p.packet_id
    c.close()  # no PUBCOMP
    c2 = raw_clients(broker.port, version=raw.V311)
    assert c2.connect(cid, clean=False).session_present is True
    rel = c2.expect(raw.PUBREL)
    assert rel.packet_id == p.packet_id
    c2.send(raw.pubcomp(rel.packet_id))
    c2.send(raw.pingreq())
    c2.expect(raw.PINGRESP)


@pytest.mark.parametrize("version", ["311", "5"])
def test_delivered_qos_is_min_of_published_and_granted(broker, paho_clients, version):
    subs = {}
    for granted in (0, 1, 2):
        s = paho_clients(broker, unique_id(f"g{granted}"), version=version)
        s.connect()
        assert s.subscribe("mq/t", granted) == [granted]
        subs[granted] = s
    pub = paho_clients(broker, unique_id("p"), version=version)
    pub.connect()
    for q in (0, 1, 2):
        pub.publish("mq/t", f"q{q}".encode(), q)
    for granted, s in subs.items():
        got = [s.next_message() for _ in range(3)]
        assert [(m.payload, m.qos) for m in got] == [(f"q{q}".encode(), min(q, granted)) for q in (0, 1, 2)], (
            f"subscriber granted QoS {granted}"
        )


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker, paho_clients):
    s = paho_clients(broker, unique_id("ov"), version="311")
    s.connect()
    s.subscribe("ov/#", 0)
    s.subscribe("ov/+", 2)
    pub = paho_clients(broker, unique_id("p"), version="311")
    pub.connect()
    pub.publish("ov/t", b"once", 2)
    pub.publish("ov/t", b"marker", 1)
    got = s.messages_until_all({b"once", b"marker"})
    pub.publish("ov/t", b"end", 1)
    got += s.messages_until(b"end")
    assert sorted((m.payload, m.qos) for m in got) == [(b"end", 1), (b"marker", 1), (b"once", 2)]


def test_unsubscribe_stops_delivery(broker, paho_clients):
    s = paho_clients(broker, unique_id("un"), version="311")
    s.connect()
    s.subscribe("un/a", 1)
    s.subscribe("un/b", 1)
    pub = paho_clients(broker, unique_id("p"), version="311")
    pub.connect()
    pub.publish("un/a", b"before", 1)
    assert s.next_message().payload == b"before"
    s.unsubscribe("un/a")
    pub.publish("un/a", b"after", 1)
    pub.publish("un/b", b"marker", 1)
    assert payloads(s.messages_until(b"marker")) == [b"marker"]


# ---------------------------------------------------------------------------------------
# MQTT 5.0 features real clients rely on
# ---------------------------------------------------------------------------------------

def test_v5_puback_no_matching_subscribers(broker, raw_clients, paho_clients):
    c = raw_clients(broker.port, version=raw.V5)
    c.connect(unique_id("nm"))
    c.send(raw.publish("nobody/here", b"x", qos=1, packet_id=1, version=raw.V5))
    ack = c.expect(raw.PUBACK)
    assert (ack.packet_id, ack.reason) == (1, 0x10)
    s = paho_clients(broker, unique_id("s"), version="5")
    s.connect()
    s.subscribe("nobody/here", 0)
    c.send(raw.publish("nobody/here", b"x", qos=1, packet_id=2, version=raw.V5))
    ack = c.expect(raw.PUBACK)
    assert (ack.packet_id, ack.reason) == (2, 0x00)


def test_v5_no_local(broker, paho_clients):
    c = paho_clients(broker, unique_id("nl"), version="5")
    c.connect()
    c.subscribe("nl/t", 1, noLocal=True)
    c.publish("nl/t", b"mine", 1)
    other = paho_clients(broker, unique_id("p"), version="5")
    other.connect()
    other.publish("nl/t", b"theirs", 1)
    assert payloads(c.messages_until(b"theirs")) == [b"theirs"]


def test_v5_retain_handling(broker, paho_clients):
    pub = paho_clients(broker, unique_id("p"), version="5")
    pub.connect()
    pub.publish("rh/t", b"retained", 1, retain=True)
    # 2: do not send retained messages at subscribe.
    s2 = paho_clients(broker, unique_id("rh2"), version="5")
    s2.connect()
    s2.subscribe("rh/t", 1, retainHandling=2)
    # 1: send only if the subscription is new.
    s1 = paho_clients(broker, unique_id("rh1"), version="5")
    s1.connect()
    s1.subscribe("rh/t", 1, retainHandling=1)
    assert s1.next_message().payload == b"retained"
    s1.subscribe("rh/t", 1, retainHandling=1)
    pub.publish("rh/t", b"marker", 1)
    assert payloads(s1.messages_until(b"marker")) == [b"marker"]
    assert payloads(s2.messages_until(b"marker")) == [b"marker"]


def test_v5_subscription_identifier(broker, raw_clients, paho_clients):
    c = raw_clients(broker.port, version=raw.V5)
    c.connect(unique_id("sid"))
    c.subscribe(1, [("sid/+", 1)], props={"SubscriptionIdentifier": 7})
    pub = paho_clients(broker, unique_id("p"), version="5")
    pub.connect()
    pub.publish("sid/a", b"x", 0)
    p = c.expect(raw.PUBLISH)
    assert p.props.get("SubscriptionIdentifier") == [7]


def test_v5_topic_alias_from_client(broker, raw_clients, paho_clients):
    s = paho_clients(broker, unique_id("s"), version="311")
    s.connect()
    s.subscribe("alias/#", 1)
    c = raw_clients(broker.port, version=raw.V5)
    ack = c.connect(unique_id("ta"))
    assert ack.props.get("TopicAliasMaximum", 0) >= 1
    c.send(raw.publish("alias/long/topic", b"first", qos=1, packet_id=1, version=raw.V5, props={"TopicAlias": 1}))
    c.expect(raw.PUBACK)
    c.send(raw.publish("", b"second", qos=1, packet_id=2, version=raw.V5, props={"TopicAlias": 1}))
    c.expect(raw.PUBACK)
    got = [s.next_message() for _ in range(2)]
    assert [(m.topic, m.payload) for m in got] == [("alias/long/topic", b"first"), ("alias/long/topic", b"second")]


# ---------------------------------------------------------------------------------------
# Stopping the broker
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_stops_the_broker_with_exit_code_0(broker, raw_clients, sig):
    import signal

    v5 = raw_clients(broker.port, version=raw.V5)
    v5.connect(unique_id("sd5"))
    v311 = raw_clients(broker.port, version=raw.V311)
    v311.connect(unique_id("sd3"))
    broker.proc.send_signal(getattr(signal, sig))
    # 5.0 clients are told: DISCONNECT 0x8B Server shutting down; 3.1.1 ones are closed.
    assert [(p.type, p.reason) for p in v5.wait_closed()] == [(raw.DISCONNECT, 0x8B)]
    assert v311.wait_closed() == []
    assert broker.proc.wait(timeout=10) == 0
    log = broker.log()
    assert "midge broker is shutting down." in log
    assert re.search(r"midge version \S+ terminating", log)
