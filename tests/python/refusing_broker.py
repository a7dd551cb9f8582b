"""A scripted MQTT server that refuses every subscription, for testing what clients do then.

mosquitto 2.0 (and midge, which does as it does) grants every subscription and applies the
ACL when delivering, so no real broker of the tests refuses one. This one accepts any
CONNECT, answers every SUBSCRIBE with a SUBACK refusing each filter (0x80 for 3.1/3.1.1,
0x87 Not authorized for 5.0), PINGREQ with PINGRESP, acknowledges QoS 1/2 publishes, and
records what each client sent.
"""
from __future__ import annotations

import socket
import threading

import mqtt_raw as raw


def _read_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_packet(s: socket.socket) -> tuple[int, int, bytes]:
    first = _read_exact(s, 1)[0]
    length, shift = 0, 0
    while True:
        b = _read_exact(s, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first >> 4, first & 0x0F, _read_exact(s, length)


class RefusingBroker:
    """Listens on a free port of 127.0.0.1 until `close`. `events` lists (client id,
    packet name) in arrival order, and (client id, "closed") when a connection ends."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        threading.Thread(target=self._accept, daemon=True).start()

    def _record(self, cid: str, what: str):
        with self.cond:
            self.events.append((cid, what))
            self.cond.notify_all()

    def wait_for(self, event: tuple[str, str], count: int = 1, timeout: float = 10.0) -> bool:
        """Waits until `event` was recorded `count` times."""
        with self.cond:
            return self.cond.wait_for(lambda: self.events.count(event) >= count, timeout)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        cid, version = "?", raw.V311
        try:
            with conn:
                ptype, _, body = _read_packet(conn)
                if ptype != raw.CONNECT:
                    return
                r = raw.Reader(body)
                r.str()  # protocol name
                version = r.byte()
                r.take(3)  # flags, keep alive
                if version == raw.V5:
                    r.properties()
                cid = r.str()
                self._record(cid, "CONNECT")
                connack = bytes([0, 0]) + (b"\x00" if version == raw.V5 else b"")
                conn.sendall(raw.packet(raw.CONNACK, 0, connack))
                while True:
                    ptype, flags, body = _read_packet(conn)
                    self._record(cid, raw.PACKET_NAMES[ptype])
                    if ptype == raw.SUBSCRIBE:
                        r = raw.Reader(body)
                        r.u16()  # packet identifier
                        if version == raw.V5:
                            r.properties()
                        n = 0
                        while r.left():
                            r.str()
                            r.byte()  # options
                            n += 1
                        code = 0x87 if version == raw.V5 else 0x80
                        props = b"\x00" if version == raw.V5 else b""
                        conn.sendall(raw.packet(raw.SUBACK, 0, body[0:2] + props + bytes([code] * n)))
                    elif ptype == raw.PINGREQ:
                        conn.sendall(raw.packet(raw.PINGRESP, 0, b""))
                    elif ptype == raw.PUBLISH and (flags >> 1) & 3:
                        r = raw.Reader(body)
                        r.str()  # topic
                        pid = r.u16()
                        kind = raw.PUBACK if (flags >> 1) & 3 == 1 else raw.PUBREC
                        conn.sendall(raw.ack(kind, pid))
                    elif ptype == raw.PUBREL:
                        conn.sendall(raw.ack(raw.PUBCOMP, int.from_bytes(body[0:2], "big")))
                    elif ptype == raw.DISCONNECT:
                        return
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self._record(cid, "closed")

    def close(self):
        self.sock.close()
