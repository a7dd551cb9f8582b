"""Malformed and forbidden input: each class of bad packet closes the connection that sent
it (an MQTT 5.0 client first gets DISCONNECT with the reason code), the log says why, and
the other clients go on being served: a witness subscriber receives messages published
before and after, and new clients can still connect."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

import mqtt_raw as raw
from mqtt_raw import V311, V5, mqtt_str, packet, properties, u16
from support import require_paho, unique_id

MAX_PACKET_SIZE = 1024

MALFORMED, PROTOCOL_ERROR, TOPIC_FILTER_INVALID = 0x81, 0x82, 0x8F
TOPIC_NAME_INVALID, TOPIC_ALIAS_INVALID, PACKET_TOO_LARGE = 0x90, 0x94, 0x95


def props_if_v5(version: int) -> bytes:
    return properties(None) if version == V5 else b""


@dataclass
class Bad:
    """One class of bad input sent after a valid CONNECT."""

    name: str
    data: Callable[[int], bytes]  # the bytes, for a protocol version
    reason: int | None  # the 5.0 DISCONNECT reason code (None: closed without one)
    log: str  # what the log line says after "disconnected due to "
    versions: tuple = (V311, V5)


CASES = [
    Bad("remaining length of 5 bytes", lambda v: b"\x30\xff\xff\xff\xff\x01",
        MALFORMED, r"malformed packet: malformed remaining length"),
    Bad("reserved packet type 0", lambda v: b"\x00\x00", MALFORMED, r"malformed packet: reserved packet type 0"),
    Bad("packet type 15 before 5.0", lambda v: b"\xf0\x00", None, r"malformed packet: reserved packet type 15",
        versions=(V311,)),
    Bad("AUTH without authentication method", lambda v: b"\xf0\x00", PROTOCOL_ERROR,
        r"protocol error: AUTH without an authentication method", versions=(V5,)),
    Bad("SUBSCRIBE with header flags 0",
        lambda v: packet(raw.SUBSCRIBE, 0x00, u16(1) + props_if_v5(v) + mqtt_str("a") + b"\x00"),
        MALFORMED, r"malformed packet: invalid fixed header flags 0x0 for SUBSCRIBE"),
    Bad("PUBREL with header flags 0", lambda v: packet(raw.PUBREL, 0x00, u16(1)),
        MALFORMED, r"malformed packet: invalid fixed header flags 0x0 for PUBREL"),
    Bad("PINGREQ with header flags 1", lambda v: b"\xc1\x00",
        MALFORMED, r"malformed packet: invalid fixed header flags 0x1 for PINGREQ"),
    Bad("PUBLISH QoS 3", lambda v: packet(raw.PUBLISH, 0b0110, mqtt_str("a/b") + u16(1) + props_if_v5(v) + b"x"),
        MALFORMED, r"malformed packet: QoS 3"),
    Bad("PUBLISH QoS 0 with DUP", lambda v: packet(raw.PUBLISH, 0b1000, mqtt_str("a/b") + props_if_v5(v) + b"x"),
        MALFORMED, r"malformed packet: DUP flag set on a QoS 0 PUBLISH"),
    Bad("invalid UTF-8 in topic", lambda v: raw.publish(b"bad/\xff\xfe", b"x", version=v),
        MALFORMED, r"malformed packet: topic name is not valid UTF-8"),
    Bad("UTF-16 surrogate in topic", lambda v: raw.publish(b"bad/\xed\xa0\x80", b"x", version=v),
        MALFORMED, r"malformed packet: topic name is not valid UTF-8"),
    Bad("U+0000 in topic", lambda v: raw.publish(b"bad/\x00/x", b"x", version=v),
        MALFORMED, r"malformed packet: topic name contains the null character"),
    Bad("U+0000 in topic filter", lambda v: raw.subscribe(1, [(b"bad/\x00", 0)], v),
        MALFORMED, r"malformed packet: topic filter contains the null character"),
    # Control characters and non-characters: the specification lets a receiver call them
    # malformed (5.0 section 1.5.4), and mosquitto does (mosquitto_validate_utf8).
    Bad("line break in topic", lambda v: raw.publish(b"bad/\n/x", b"x", version=v),
        MALFORMED, r"malformed packet: topic name contains the disallowed character U\+000A"),
    Bad("escape in topic filter", lambda v: raw.subscribe(1, [(b"bad/\x1b[2J", 0)], v),
        MALFORMED, r"malformed packet: topic filter contains the disallowed character U\+001B"),
    Bad("C1 control in unsubscribe filter", lambda v: raw.unsubscribe(1, ["bad/\x85"], v),
        MALFORMED, r"malformed packet: topic filter contains the disallowed character U\+0085"),
    Bad("non-character in user property", lambda v: raw.publish("a/b", b"x", version=v,
                                                                  props=[("UserProperty", ("k", "\ufffe"))]),
        MALFORMED, r"malformed packet: User Property value contains the disallowed character U\+FFFE",
        versions=(V5,)),
    Bad("wildcard + in topic name", lambda v: raw.publish("a/+/b", b"x", version=v),
        MALFORMED, r"malformed packet: invalid topic name: wildcard character in a topic name"),
    Bad("wildcard # in topic name", lambda v: raw.publish("a/#", b"x", qos=1, packet_id=3, version=v),
        MALFORMED, r"malformed packet: invalid topic name: wildcard character in a topic name"),
    Bad("PUBLISH QoS 1 with packet id 0", lambda v: raw.publish("a/b", b"x", qos=1, packet_id=0, version=v),
        PROTOCOL_ERROR, r"protocol error: PUBLISH with packet identifier 0"),
    Bad("SUBSCRIBE with packet id 0", lambda v: raw.subscribe(0, [("a/b", 0)], v),
        MALFORMED, r"malformed packet: SUBSCRIBE with packet identifier 0"),
    Bad("UNSUBSCRIBE with packet id 0", lambda v: raw.unsubscribe(0, ["a/b"], v),
        MALFORMED, r"malformed packet: UNSUBSCRIBE with packet identifier 0"),
    Bad("SUBSCRIBE with no filters", lambda v: packet(raw.SUBSCRIBE, 0x02, u16(1) + props_if_v5(v)),
        PROTOCOL_ERROR, r"protocol error: SUBSCRIBE without any topic filter"),
    Bad("UNSUBSCRIBE with no filters", lambda v: packet(raw.UNSUBSCRIBE, 0x02, u16(1) + props_if_v5(v)),
        PROTOCOL_ERROR, r"protocol error: UNSUBSCRIBE without any topic filter"),
    Bad("filter a/#/b", lambda v: raw.subscribe(1, [("a/#/b", 0)], v),
        MALFORMED, r"malformed packet: invalid topic filter: '#' must be the last level"),
    Bad("filter a/b+", lambda v: raw.subscribe(1, [("ok/#", 0), ("a/b+", 0)], v),
        MALFORMED, r"malformed packet: invalid topic filter: '\+' must occupy a whole level"),
    # 3.1.1 calls it malformed [MQTT-3.8.3-4], 5.0 a Protocol Error (section 3.8.3.1).
    Bad("subscription options QoS 3", lambda v: raw.subscribe(1, [("a/b", 3)], v),
        PROTOCOL_ERROR, r"protocol error: maximum QoS 3 in subscription options"),
    Bad("subscription options reserved bits", lambda v: raw.subscribe(1, [("a/b", 0xC1)], v),
        MALFORMED, r"malformed packet: invalid subscription options"),
    Bad("truncated PUBLISH", lambda v: packet(raw.PUBLISH, 0, u16(100) + b"short"),
        MALFORMED, r"malformed packet: PUBLISH too short"),
    Bad("packet larger than max_packet_size",
        lambda v: raw.publish("big/t", b"x" * (MAX_PACKET_SIZE + 200), version=v),
        PACKET_TOO_LARGE, rf"protocol error: packet of \d+ bytes exceeds the maximum packet size of {MAX_PACKET_SIZE} bytes"),
    Bad("second CONNECT", lambda v: raw.connect(unique_id("again"), version=v),
        PROTOCOL_ERROR, r"protocol error: second CONNECT"),
    Bad("CONNACK from a client", lambda v: packet(raw.CONNACK, 0, b"\x00\x00" + props_if_v5(v)),
        PROTOCOL_ERROR, r"protocol error: CONNACK is sent by servers only"),
    Bad("topic alias 0", lambda v: raw.publish("a/b", b"x", version=v, props={"TopicAlias": 0}),
        TOPIC_ALIAS_INVALID, r"protocol error: invalid value 0 for property TopicAlias", versions=(V5,)),
    Bad("topic alias above the maximum", lambda v: raw.publish("a/b", b"x", version=v, props={"TopicAlias": 60000}),
        TOPIC_ALIAS_INVALID, r"protocol error: topic alias 60000 above the maximum", versions=(V5,)),
    Bad("unknown topic alias", lambda v: raw.publish("", b"x", version=v, props={"TopicAlias": 5}),
        PROTOCOL_ERROR, r"protocol error: unknown topic alias 5", versions=(V5,)),
    Bad("PUBLISH with a subscription identifier",
        lambda v: raw.publish("a/b", b"x", version=v, props={"SubscriptionIdentifier": 1}),
        PROTOCOL_ERROR, r"protocol error: PUBLISH with a subscription identifier", versions=(V5,)),
    Bad("unknown property", lambda v: packet(raw.PUBLISH, 0, mqtt_str("a/b") + b"\x02\x7f\x00" + b"x"),
        MALFORMED, r"malformed packet: unknown property identifier 0x7f", versions=(V5,)),
]

PARAMS = [
    pytest.param(case, v, id=f"{case.name.replace(' ', '_')}-v{'5' if v == V5 else '311'}")
    for case in CASES
    for v in case.versions
]


class Witness:
    """A subscriber and a publisher that must be served throughout."""

    def __init__(self, broker, paho_clients):
        require_paho()
        self.sub = paho_clients(broker, unique_id("witness"), version="311")
        self.sub.connect()
        self.sub.subscribe("live/#", 1)
        self.pub = paho_clients(broker, unique_id("wpub"), version="5")
        self.pub.connect()
        self.n = 0

    def check(self, label: str) -> None:
        self.n += 1
        payload = f"{label} {self.n}".encode()
        self.pub.publish("live/t", payload, 1)
        m = self.sub.next_message()
        assert m.payload == payload, f"witness got {m.payload!r}, expected {payload!r}"
        assert self.sub.is_connected() and self.pub.is_connected(), "a witness client was disconnected"


@pytest.fixture
def bad_broker(broker_factory):
    return broker_factory(f"max_packet_size {MAX_PACKET_SIZE}")


@pytest.fixture
def witness(bad_broker, paho_clients):
    return Witness(bad_broker, paho_clients)


def send_ignoring_close(c: raw.RawClient, data: bytes) -> None:
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the broker may close before it has read everything


def assert_still_serving(broker, raw_clients, version: int) -> None:
    fresh = raw_clients(broker.port, version=version)
    fresh.connect(unique_id("fresh"))
    fresh.send(raw.pingreq())
    fresh.expect(raw.PINGRESP)


@pytest.mark.parametrize("case,version", PARAMS)
def test_bad_packet_closes_only_that_connection(bad_broker, witness, raw_clients, case, version):
    witness.check("before")
    cid = unique_id("bad")
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=version)
    c.connect(cid)
    send_ignoring_close(c, case.data(version))
    got = c.wait_closed()
    received = [(p.name, f"0x{p.reason:02x}") for p in got]
    if version == V5 and case.reason is not None:
        assert received == [("DISCONNECT", f"0x{case.reason:02x}")], f"{case.name}: received {got}"
    else:
        # MQTT 3.1.1 has no DISCONNECT from the server: the connection is just closed.
        assert received == [], f"{case.name}: received {got}"
    bad_broker.wait_for_log(rf"Client {cid} disconnected due to {case.log}", since=mark)
    witness.check("after")
    assert_still_serving(bad_broker, raw_clients, version)


def test_v5_disconnect_says_why_in_the_log(bad_broker, raw_clients):
    """The DISCONNECT is byte for byte mosquitto's (no Reason String: mosquitto's own tests
    compare the bytes); the log line says why."""
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=V5)
    cid = unique_id("rs")
    c.connect(cid)
    c.send(raw.publish("a/+", b"x", version=V5))
    [d] = c.wait_closed()
    assert d.type == raw.DISCONNECT and d.reason == MALFORMED and d.props == {}, d
    bad_broker.wait_for_log(rf"Client {cid} disconnected due to malformed packet: .*wildcard", since=mark)


def test_packet_too_large_header_alone_is_refused(bad_broker, witness, raw_clients):
    """The size is judged from the fixed header: the broker does not wait for (or buffer)
    a body it will refuse."""
    witness.check("before")
    cid = unique_id("big")
    c = raw_clients(bad_broker.port, version=V5)
    c.connect(cid)
    c.send(bytes([0x30]) + raw.varint(50_000_000))  # a 50 MB PUBLISH announced, nothing sent
    assert [(p.type, p.reason) for p in c.wait_closed()] == [(raw.DISCONNECT, PACKET_TOO_LARGE)]
    size = 1 + 4 + 50_000_000
    bad_broker.wait_for_log(rf"Client {cid} disconnected due to protocol error: packet of {size} bytes exceeds")
    witness.check("after")


def test_packet_at_max_packet_size_is_accepted(bad_broker, witness, raw_clients):
    c = raw_clients(bad_broker.port, version=V311)
    c.connect(unique_id("fit"))
    # Whole packet, fixed header included, exactly max_packet_size bytes.
    payload = b"y" * (MAX_PACKET_SIZE - len(raw.publish("live/t", b"", qos=1, packet_id=1)) - 1)
    data = raw.publish("live/t", payload, qos=1, packet_id=1)
    assert len(data) == MAX_PACKET_SIZE
    c.send(data)
    assert c.expect(raw.PUBACK).packet_id == 1
    assert witness.sub.next_message().payload == payload
    # One byte more is refused.
    over = raw_clients(bad_broker.port, version=V5)
    over.connect(unique_id("over"))
    overhead = len(raw.publish("live/t", b"", qos=1, packet_id=1, version=V5)) + 1  # 2-byte length
    data = raw.publish("live/t", b"z" * (MAX_PACKET_SIZE + 1 - overhead), qos=1, packet_id=1, version=V5)
    assert len(data) == MAX_PACKET_SIZE + 1
    over.send(data)
    assert [(p.type, p.reason) for p in over.wait_closed()] == [(raw.DISCONNECT, PACKET_TOO_LARGE)]


def test_bad_packet_after_good_ones_in_the_same_segment(bad_broker, witness, raw_clients):
    """Packets before the bad one in the same read are handled; the connection closes at the
    bad one."""
    cid = unique_id("mixed")
    c = raw_clients(bad_broker.port, version=V311)
    c.connect(cid)
    c.send(raw.publish("live/t", b"good one", qos=1, packet_id=1) + raw.publish("a/+", b"bad"))
    got = c.wait_closed()
    assert [(p.type, p.packet_id) for p in got] == [(raw.PUBACK, 1)]
    assert witness.sub.next_message().payload == b"good one"
    witness.check("after")


# ---------------------------------------------------------------------------------------
# Before CONNECT
# ---------------------------------------------------------------------------------------

GARBAGE = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", r"invalid fixed header flags 0x7 for PUBACK", id="http"),
    pytest.param(bytes.fromhex("160301020001000100"), r"invalid fixed header flags 0x6 for CONNECT", id="tls-client-hello"),
    pytest.param(b"\x00" * 16, r"reserved packet type 0", id="zeros"),
    pytest.param(b"\x10\xff\xff\xff\xff\x01", r"malformed remaining length", id="remaining-length-5-bytes"),
    pytest.param(raw.connect("x")[:10], None, id="truncated-connect-then-close"),
]


@pytest.mark.parametrize("data,reason", GARBAGE)
def test_garbage_before_connect_closes_the_connection(bad_broker, witness, raw_clients, data, reason):
    witness.check("before")
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=V311)
    port = c.local_port
    if reason is None:
        # A CONNECT that never completes: the client gives up and closes; nothing is logged
        # as an error and nothing is sent.
        c.send(data)
        c.sock.shutdown(1)
        assert c.wait_closed() == []
    else:
        send_ignoring_close(c, data)
        assert c.wait_closed() == [], "no CONNACK for bytes that are not a 5.0 CONNECT"
        bad_broker.wait_for_log(rf"Bad CONNECT from 127\.0\.0\.1:{port}: {reason}.*, closing\.", since=mark)
    witness.check("after")
    assert_still_serving(bad_broker, raw_clients, V311)


def test_packet_other_than_connect_first(bad_broker, witness, raw_clients):
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=V311)
    port = c.local_port
    c.send(raw.pingreq())
    assert c.wait_closed() == []
    bad_broker.wait_for_log(rf"Client 127\.0\.0\.1:{port} sent PINGREQ before CONNECT, closing\.", since=mark)
    witness.check("after")


@pytest.mark.parametrize(
    "flags,why",
    [(0x03, "reserved"), (0x1E, "will QoS 3"), (0x20, "will retain without will flag")],
    ids=["reserved-bit", "will-qos-3", "will-retain-without-will"],
)
@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_malformed_connect_flags(bad_broker, witness, raw_clients, flags, why, version):
    """[MQTT-3.1.2-3] reserved flag, [MQTT-3.1.2-12]/[MQTT-3.1.2-13] will QoS and retain: the
    connection is closed without CONNACK, as mosquitto closes it (5.0 section 4.13.1 allows a
    CONNACK 0x81 first, and does not require it); the log says why."""
    body = mqtt_str("MQTT") + bytes([version, flags]) + u16(60) + props_if_v5(version) + mqtt_str(unique_id("cf"))
    if flags & 0x04:
        body += props_if_v5(version) + mqtt_str("w/t") + mqtt_str("x")
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=version)
    port = c.local_port
    c.send(packet(raw.CONNECT, 0, body))
    assert c.wait_closed() == []
    bad_broker.wait_for_log(rf"Bad CONNECT from 127\.0\.0\.1:{port}: invalid CONNECT flags", since=mark)
    witness.check("after")


@pytest.mark.parametrize("field", ["client id", "user name", "will topic"])
@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_connect_with_a_control_character_is_refused(bad_broker, witness, raw_clients, field, version):
    """A client id, user name or will topic with a control character: malformed, as
    mosquitto's mosquitto_validate_utf8 has it (5.0 section 1.5.4 lets a receiver refuse):
    closed without CONNACK, as mosquitto closes it, and the log names the field and the
    character, never the raw string."""
    kw = {"client_id": unique_id("cc")}
    if field == "client id":
        kw["client_id"] = "evil\r\n1796680000: forged line"
    elif field == "user name":
        kw["username"] = "eve\x07"
    else:
        kw["will"] = {"topic": "w/\x1b", "payload": b"x"}
    mark = bad_broker.mark()
    c = raw_clients(bad_broker.port, version=version)
    port = c.local_port
    c.send(raw.connect(version=version, **kw))
    assert c.wait_closed() == []
    what = {"client id": r"client identifier .* U\+000D", "user name": r"user name .* U\+0007",
            "will topic": r"will topic .* U\+001B"}[field]
    bad_broker.wait_for_log(rf"Bad CONNECT from 127\.0\.0\.1:{port}: {what}, closing\.", since=mark)
    assert "forged line" not in bad_broker.log()[mark:]
    witness.check("after")
