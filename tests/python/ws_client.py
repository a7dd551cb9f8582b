"""A WebSocket client small enough to control every byte (RFC 6455): the upgrade request as
the test writes it, frames split and joined as the test wants, for what MQTT.js and paho
never send (packets split across frames, several in one frame, fragmented messages, text
frames, malformed and oversized handshakes). `WsSocket` looks like a socket to
`mqtt_raw.RawClient`, so the raw MQTT helpers run over it unchanged."""
from __future__ import annotations

import base64
import os
import socket
import struct
import time

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def upgrade_request(path: str = "/mqtt", protocols: str | None = "mqtt", extra: str = "",
                    key: str | None = None) -> bytes:
    """A client's upgrade request; `protocols=None` leaves out Sec-WebSocket-Protocol."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_response_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The HTTP response head (up to the blank line), or what came before the server closed."""
    sock.settimeout(timeout)
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            chunk = sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        head += chunk
    return head


def frame(payload: bytes, opcode: int = BINARY, fin: bool = True) -> bytes:
    """One client frame (masked, as clients must)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WsSocket:
    """A WebSocket connection with a socket's interface: `sendall` sends one binary frame,
    `recv` returns the payloads of the server's binary frames (b"" once it closed)."""

    def __init__(self, port: int, path: str = "/mqtt", protocols: str = "mqtt", host: str = "127.0.0.1",
                 timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(upgrade_request(path, protocols))
        self.head = read_response_head(self.sock, timeout)
        assert self.head.startswith(b"HTTP/1.1 101"), f"handshake refused: {self.head!r}"
        self.protocol = next((line.split(b":", 1)[1].strip().decode() for line in self.head.split(b"\r\n")
                              if line.lower().startswith(b"sec-websocket-protocol:")), None)
        self.buf = b""
        self.closed = False
        self.close_payload: bytes | None = None

    # -- what RawClient uses --------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(frame(data))

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)

    def getsockname(self):
        return self.sock.getsockname()

    def recv(self, _n: int) -> bytes:
        while True:
            if self.closed:
                return b""
            opcode, payload = self.read_frame()
            if opcode in (BINARY, CONTINUATION):
                if payload:
                    return payload
            elif opcode == CLOSE:
                self.closed = True
                self.close_payload = payload
                try:
                    self.sock.sendall(frame(payload[:2], CLOSE))
                except OSError:
                    pass
                return b""
            elif opcode == PING:
                self.sock.sendall(frame(payload, PONG))

    def close(self) -> None:
        self.sock.close()

    # -- frames -----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                raise ConnectionResetError("the server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload). Server frames are not masked."""
        try:
            b0, b1 = self._exact(2)
        except ConnectionResetError:
            return CLOSE, b""
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exact(8))[0]
        return b0 & 0x0F, self._exact(n)


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Reads until the server closes the connection; returns what it sent. Fails if it stays open."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except socket.timeout:
            break
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"the server did not close the connection within {timeout} s (sent {got[:200]!r})")
