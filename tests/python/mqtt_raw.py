"""MQTT packets encoded and decoded by hand, and a blocking raw-socket client.

Enough of MQTT 3.1, 3.1.1 and 5.0 to drive a broker byte by byte: valid packets for the
normal flows, and the building blocks (varint, strings, fixed headers) to write malformed
ones. Nothing here validates what it encodes: that is the point.
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

# Protocol levels.
V31, V311, V5 = 3, 4, 5

# Packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

PACKET_NAMES = {
    0: "RESERVED", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
    6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}

# MQTT 5.0 properties: identifier -> (name, wire type).
PROPERTIES = {
    0x01: ("PayloadFormatIndicator", "byte"),
    0x02: ("MessageExpiryInterval", "u32"),
    0x03: ("ContentType", "str"),
    0x08: ("ResponseTopic", "str"),
    0x09: ("CorrelationData", "bin"),
    0x0B: ("SubscriptionIdentifier", "varint"),
    0x11: ("SessionExpiryInterval", "u32"),
    0x12: ("AssignedClientIdentifier", "str"),
    0x13: ("ServerKeepAlive", "u16"),
    0x15: ("AuthenticationMethod", "str"),
    0x16: ("AuthenticationData", "bin"),
    0x17: ("RequestProblemInformation", "byte"),
    0x18: ("WillDelayInterval", "u32"),
    0x19: ("RequestResponseInformation", "byte"),
    0x1A: ("ResponseInformation", "str"),
    0x1C: ("ServerReference", "str"),
    0x1F: ("ReasonString", "str"),
    0x21: ("ReceiveMaximum", "u16"),
    0x22: ("TopicAliasMaximum", "u16"),
    0x23: ("TopicAlias", "u16"),
    0x24: ("MaximumQoS", "byte"),
    0x25: ("RetainAvailable", "byte"),
    0x26: ("UserProperty", "pair"),
    0x27: ("MaximumPacketSize", "u32"),
    0x28: ("WildcardSubscriptionAvailable", "byte"),
    0x29: ("SubscriptionIdentifierAvailable", "byte"),
    0x2A: ("SharedSubscriptionAvailable", "byte"),
}
PROPERTY_IDS = {name: pid for pid, (name, _) in PROPERTIES.items()}


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    """A Variable Byte Integer (section 1.5.5)."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def mqtt_str(s: str | bytes) -> bytes:
    """A length-prefixed string; bytes are sent as they are (to send invalid UTF-8)."""
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return u16(len(raw)) + raw


def binary(b: bytes) -> bytes:
    return u16(len(b)) + b


def properties(props: dict[str, Any] | Iterable[tuple[Any, Any]] | None) -> bytes:
    """An MQTT 5.0 property list with its length. Keys are names ("SessionExpiryInterval")
    or identifiers; UserProperty values are (key, value) pairs."""
    if props is None:
        return varint(0)
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    for key, value in items:
        pid = PROPERTY_IDS[key] if isinstance(key, str) else key
        kind = PROPERTIES[pid][1]
        body += varint(pid)
        if kind == "byte":
            body.append(value)
        elif kind == "u16":
            body += u16(value)
        elif kind == "u32":
            body += u32(value)
        elif kind == "varint":
            body += varint(value)
        elif kind == "str":
            body += mqtt_str(value)
        elif kind == "bin":
            body += binary(value)
        elif kind == "pair":
            body += mqtt_str(value[0]) + mqtt_str(value[1])
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    """A whole packet: fixed header (type, flags, remaining length) and body."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


def connect(
    client_id: str | bytes = "",
    version: int = V311,
    clean: bool = True,
    keepalive: int = 60,
    will: dict | None = None,
    username: str | None = None,
    password: bytes | None = None,
    props: dict | None = None,
    protocol_name: str | bytes | None = None,
    level: int | None = None,
) -> bytes:
    """CONNECT. `will` is a dict with topic, payload, qos (0), retain (False), props (5.0)."""
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == V31 else "MQTT"
    flags = 0
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = mqtt_str(protocol_name) + bytes([level if level is not None else version, flags]) + u16(keepalive)
    if version == V5:
        body += properties(props)
    body += mqtt_str(client_id)
    if will is not None:
        if version == V5:
            body += properties(will.get("props"))
        payload = will.get("payload", b"")
        body += mqtt_str(will["topic"]) + binary(payload.encode() if isinstance(payload, str) else payload)
    if username is not None:
        body += mqtt_str(username)
    if password is not None:
        body += binary(password)
    return packet(CONNECT, 0, body)


def publish(
    topic: str | bytes,
    payload: bytes | str = b"",
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    version: int = V311,
    props: dict | None = None,
) -> bytes:
    """PUBLISH. QoS 1 and 2 need a packet_id (0 is sent if given as 0)."""
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos > 0 or packet_id is not None:
        body += u16(packet_id if packet_id is not None else 1)
    if version == V5:
        body += properties(props)
    return packet(PUBLISH, flags, body + payload)


def subscribe(
    packet_id: int,
    filters: Iterable[tuple[str | bytes, int]],
    version: int = V311,
    props: dict | None = None,
) -> bytes:
    """SUBSCRIBE: (filter, options byte) pairs; the options byte is the QoS in 3.1.1."""
    body = u16(packet_id)
    if version == V5:
        body += properties(props)
    for f, opts in filters:
        body += mqtt_str(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def unsubscribe(packet_id: int, filters: Iterable[str | bytes], version: int = V311) -> bytes:
    body = u16(packet_id)
    if version == V5:
        body += properties(None)
    for f in filters:
        body += mqtt_str(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def ack(ptype: int, packet_id: int, version: int = V311, reason: int | None = None) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""
    flags = 0x02 if ptype == PUBREL else 0
    body = u16(packet_id)
    if version == V5 and reason is not None:
        body += bytes([reason])
    return packet(ptype, flags, body)


def puback(packet_id: int, version: int = V311) -> bytes:
    return ack(PUBACK, packet_id, version)


def pubrec(packet_id: int, version: int = V311) -> bytes:
    return ack(PUBREC, packet_id, version)


def pubrel(packet_id: int, version: int = V311) -> bytes:
    return ack(PUBREL, packet_id, version)


def pubcomp(packet_id: int, version: int = V311) -> bytes:
    return ack(PUBCOMP, packet_id, version)


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect(version: int = V311, reason: int = 0, props: dict | None = None) -> bytes:
    if version == V5 and (reason or props):
        return packet(DISCONNECT, 0, bytes([reason]) + properties(props))
    return packet(DISCONNECT, 0, b"")


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"truncated: want {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def varint(self) -> int:
        n, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            n += (b & 0x7F) * mult
            if not b & 0x80:
                return n
            mult *= 128
        raise ValueError("varint longer than 4 bytes")

    def str(self) -> str:
        return self.take(self.u16()).decode("utf-8")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def rest(self) -> bytes:
        return self.take(self.left())

    def properties(self) -> dict[str, Any]:
        length = self.varint()
        sub = Reader(self.take(length))
        out: dict[str, Any] = {}
        while sub.left():
            pid = sub.varint()
            name, kind = PROPERTIES[pid]
            if kind == "byte":
                v: Any = sub.byte()
            elif kind == "u16":
                v = sub.u16()
            elif kind == "u32":
                v = sub.u32()
            elif kind == "varint":
                v = sub.varint()
            elif kind == "str":
                v = sub.str()
            elif kind == "bin":
                v = sub.bin()
            else:
                v = (sub.str(), sub.str())
            if name in ("UserProperty", "SubscriptionIdentifier"):
                out.setdefault(name, []).append(v)
            else:
                out[name] = v
        return out


@dataclass
class Packet:
    """A packet received, decoded as far as the tests need."""

    type: int
    flags: int
    body: bytes
    version: int
    # Decoded fields (which ones depends on the type).
    session_present: bool = False
    reason: int = 0
    props: dict = field(default_factory=dict)
    packet_id: int = 0
    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    dup: bool = False
    retain: bool = False
    codes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES[self.type]

    def __repr__(self) -> str:
        extra = ""
        if self.type == PUBLISH:
            extra = f" topic={self.topic!r} q{self.qos} d{int(self.dup)} r{int(self.retain)} m{self.packet_id} payload={self.payload[:40]!r}"
        elif self.type in (CONNACK, DISCONNECT):
            extra = f" reason=0x{self.reason:02x} props={self.props}"
        elif self.type in (SUBACK, UNSUBACK):
            extra = f" m{self.packet_id} codes={self.codes}"
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            extra = f" m{self.packet_id} reason=0x{self.reason:02x}"
        return f"<{self.name}{extra}>"


def decode(ptype: int, flags: int, body: bytes, version: int) -> Packet:
    p = Packet(ptype, flags, body, version)
    r = Reader(body)
    v5 = version == V5
    if ptype == CONNACK:
        p.session_present = bool(r.byte() & 0x01)
        p.reason = r.byte()
        if v5 and r.left():
            p.props = r.properties()
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 0x03
        p.dup = bool(flags & 0x08)
        p.retain = bool(flags & 0x01)
        p.topic = r.str()
        if p.qos:
            p.packet_id = r.u16()
        if v5:
            p.props = r.properties()
        p.payload = r.rest()
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.packet_id = r.u16()
        if v5 and r.left():
            p.reason = r.byte()
            if r.left():
                p.props = r.properties()
    elif ptype in (SUBACK, UNSUBACK):
        p.packet_id = r.u16()
        if v5:
            p.props = r.properties()
        p.codes = list(r.rest())
    elif ptype == DISCONNECT:
        if r.left():
            p.reason = r.byte()
            if r.left():
                p.props = r.properties()
    return p


# ---------------------------------------------------------------------------------------
# A blocking client on a raw socket
# ---------------------------------------------------------------------------------------

class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """One TCP connection to the broker, driven packet by packet."""

    def __init__(self, port: int, version: int = V311, host: str = "127.0.0.1", timeout: float = 5.0):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.reset = False

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _frame(self) -> tuple[int, int, bytes] | None:
        """A whole packet from the buffer, if one is there."""
        if len(self.buf) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError(f"malformed remaining length from the broker: {self.buf[:8]!r}")
        if len(self.buf) < i + n:
            return None
        first = self.buf[0]
        body = self.buf[i:i + n]
        self.buf = self.buf[i + n:]
        return first >> 4, first & 0x0F, body

    def recv(self, timeout: float = 5.0) -> Packet:
        """The next packet. Raises Closed at EOF (or reset), TimeoutError when nothing
        arrives in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                return decode(*frame, self.version)
            if self.eof:
                raise Closed(f"connection closed (reset={self.reset}), {len(self.buf)} bytes left over")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no packet within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no packet within {timeout} s") from None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
                self.reset = True
            if not data:
                self.eof = True
            self.buf += data

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        """The next packet, which must be of type `ptype`."""
        try:
            p = self.recv(timeout)
        except Closed as e:
            raise AssertionError(f"expected {PACKET_NAMES[ptype]}, but the broker closed the connection ({e})") from None
        except TimeoutError:
            raise AssertionError(f"expected {PACKET_NAMES[ptype]}, nothing received within {timeout} s") from None
        assert p.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {p!r}"
        return p

    def connect(self, client_id: str = "", expect_reason: int | None = 0, **kw: Any) -> Packet:
        """Sends CONNECT and returns the CONNACK (checking its reason code unless None)."""
        kw.setdefault("version", self.version)
        self.send(connect(client_id, **kw))
        ack = self.expect(CONNACK)
        if expect_reason is not None:
            assert ack.reason == expect_reason, f"CONNACK {ack!r}, expected reason 0x{expect_reason:02x}"
        return ack

    def subscribe(self, packet_id: int, filters: Iterable[tuple[str, int]], props: dict | None = None) -> Packet:
        self.send(subscribe(packet_id, list(filters), self.version, props))
        ack = self.expect(SUBACK)
        assert ack.packet_id == packet_id
        return ack

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                packet_id: int = 1, **kw: Any) -> None:
        """Publishes and completes the QoS flow."""
        self.send(publish(topic, payload, qos, retain, packet_id=packet_id if qos else None,
                          version=self.version, **kw))
        if qos == 1:
            assert self.expect(PUBACK).packet_id == packet_id
        elif qos == 2:
            assert self.expect(PUBREC).packet_id == packet_id
            self.send(pubrel(packet_id, self.version))
            assert self.expect(PUBCOMP).packet_id == packet_id

    def wait_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Waits for the broker to close the connection; returns the packets received
        before it did. Fails if the connection stays open."""
        got: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"the broker did not close the connection within {timeout} s (received {got})"
                ) from None

    def close(self) -> None:
        """Closes the socket without DISCONNECT."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
