"""Helpers for test_persistence.py: a midge broker with `persistence true` that is killed and
started again on the same port with the same configuration, a reader of midge's store
files (written from the format described in crates/midge-broker/src/store/log.rs, not from
its code), and load clients (raw sockets, and paho-mqtt) that count every acknowledgement and every
delivery across broker restarts.

The load clients are what a careful application does:

- `LoadPublisher` publishes messages with unique ids in their payloads ("TAG:N"), a window
  of them in flight, and counts a message acknowledged when PUBACK (QoS 1) or PUBREC (QoS 2)
  arrives. When the connection is lost it reconnects: a clean publisher gives up what was
  not acknowledged (and goes on with new ids), a persistent one (clean session off, 5.0
  session expiry) resends it as MQTT says: PUBLISH again with DUP and the same packet id
  until PUBREC, PUBREL until PUBCOMP.
- `LoadSubscriber` holds a persistent session with a QoS 2 subscription and acknowledges
  what it receives. A QoS 2 message is handed to the application when its PUBLISH first
  arrives, and its packet id is held until PUBREL (method A of section 4.3.3): a resent
  PUBLISH with that packet id is the same message, acknowledged again, not received again.
  The client's state outlives its connections, as a persistent session's should.
- `PahoLoadSubscriber` is the same with paho-mqtt (which hands a QoS 2 message over on
  PUBREL and keeps its QoS 2 state across reconnections with clean session off).
"""
from __future__ import annotations

import glob
import json
import os
import signal
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import mqtt_raw as raw
from mqtt_raw import V5, Closed, RawClient
from support import HOST, RUN_AS, TIMEOUT, Broker, free_port, midge_bin, require_paho

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:  # pragma: no cover - require_paho fails the test that needs it
    mqtt = None

# libfaketime (Debian package libfaketime): the broker started "two hours later".
FAKETIME_LIB = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))),
                    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

RESTORED = (r"Restored (?P<sessions>[\d,]+) sessions?, (?P<retained>[\d,]+) retained messages? and "
            r"(?P<queued>[\d,]+) queued messages? from (?P<dir>\S+) in (?P<secs>[\d.]+) s")


def until(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.01) -> Any:
    """Polls `predicate` until it returns something true; fails after `timeout` with `what`
    (a string, or a function giving one, for the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")
        time.sleep(poll)  # poll interval


# ---------------------------------------------------------------------------------------
# The broker, restarted
# ---------------------------------------------------------------------------------------

class StoreBroker(Broker):
    """`midge broker -c FILE` with persistence in `<workdir>/<name>-data/`, on one port for
    its whole life: `kill()` (SIGKILL) or `term()` (SIGTERM), then `start()` again with the
    same configuration. Each run logs to its own file (`<name>-runN.log`); `log()` is the
    current run's."""

    def __init__(self, workdir: Path, extra_config: list[str], verbose: bool = False, name: str = "midge",
                 data: Path | None = None):
        super().__init__(workdir, extra_config, verbose=verbose, name=name)
        self.data = data or workdir / f"{name}-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.runs = 0
        self.env: dict[str, str] = {}

    @property
    def store(self) -> Path:
        """midge's store directory (persistence_file mosquitto.db: `mosquitto.db.midge`)."""
        return self.data / "mosquitto.db.midge"

    def config_lines(self) -> list[str]:
        return [*RUN_AS, f"listener {self.port} {HOST}", "allow_anonymous true", "persistence true",
                f"persistence_location {self.data}/", *self.extra_config]

    def _spawn(self, args: list[str], env: dict[str, str] | None) -> None:
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}-run{self.runs}.log"
        self.conf_path.write_text("\n".join(self.config_lines()) + "\n")
        argv = [str(midge_bin()), "broker", "-c", str(self.conf_path), *(["-v"] if self.verbose else []), *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**os.environ, **self.env, **(env or {})})

    def start(self, *args: str, env: dict[str, str] | None = None) -> "StoreBroker":
        """Starts (the first time on a free port, then on the same one) and waits until the
        store is restored; `restored` is that log line's match."""
        for attempt in range(2):
            if self.port == 0 or (attempt == 1 and self.runs == 1):
                self.port = free_port()
            self._spawn(list(args), env)
            if self._wait_accepting():
                self.restored = self.wait_for_log(RESTORED, timeout=15)
                return self
            if attempt == 0 and self.runs == 1 and "cannot listen" in self.log():
                continue  # the port was taken between choosing and binding it
            break
        pytest.fail(f"midge did not start on port {self.port} (exit code {self.proc.poll()}); log:\n{self.log()}",
                    pytrace=False)

    def run_to_exit(self, *args: str, timeout: float = 15) -> int:
        """Starts it expecting it to refuse: returns its exit code once it has exited."""
        self._spawn(list(args), None)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"midge did not exit within {timeout} s; log:\n{self.log()[-4000:]}") from None

    def kill(self) -> None:
        """SIGKILL: no chance to write anything more."""
        assert self.alive(), f"midge already exited ({self.proc.returncode}); log:\n{self.log()[-4000:]}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def term(self) -> None:
        """SIGTERM, which must end it with exit code 0."""
        assert self.alive(), f"midge already exited ({self.proc.returncode}); log:\n{self.log()[-4000:]}"
        rc = self.stop()
        assert rc == 0, f"midge exited with {rc} after SIGTERM; log:\n{self.log()[-4000:]}"

    def restart(self, how: str = "kill", **kw: Any) -> "StoreBroker":
        self.kill() if how == "kill" else self.term()
        return self.start(**kw)

    def restored_counts(self) -> tuple[int, int, int]:
        m = self.restored
        return tuple(int(m.group(k).replace(",", "")) for k in ("sessions", "retained", "queued"))  # type: ignore

    def usr1(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)


# ---------------------------------------------------------------------------------------
# The store's files (the format of crates/midge-broker/src/store/log.rs)
# ---------------------------------------------------------------------------------------

SEGMENT_MAGIC = b"MIDGELG1"


@dataclass
class Record:
    """One record of a segment: where it is and what it says."""

    offset: int
    size: int
    seq: int
    kind: int  # 1 put, 2 delete
    key: bytes
    value: bytes


def manifest_segments(store: Path) -> list[str]:
    """The segment file names the MANIFEST lists, in order."""
    lines = (store / "MANIFEST").read_text().splitlines()
    assert lines[0] == "midge-store 1", lines
    return [line for line in lines[1:] if line.startswith("seg-")]


def read_segment(path: Path) -> list[Record]:
    """Every record of an undamaged segment (fails on anything that does not check out)."""
    data = path.read_bytes()
    assert data[:8] == SEGMENT_MAGIC, f"{path} does not start as a segment: {data[:8]!r}"
    out, pos = [], 8
    while pos < len(data):
        body_len, crc = struct.unpack_from("<II", data, pos)
        body = data[pos + 8:pos + 8 + body_len]
        assert len(body) == body_len and zlib.crc32(body) == crc, f"{path}: bad record at {pos}"
        seq, kind, key_len = struct.unpack_from("<QBH", body, 0)
        key = body[11:11 + key_len]
        out.append(Record(pos, 8 + body_len, seq, kind, key, body[11 + key_len:]))
        pos += 8 + body_len
    return out


def store_records(store: Path) -> list[tuple[str, Record]]:
    """(segment name, record) for every record of every segment the MANIFEST names."""
    return [(name, r) for name in manifest_segments(store) for r in read_segment(store / name)]


def store_bytes(store: Path) -> int:
    """Bytes in the store's segment files."""
    return sum(p.stat().st_size for p in store.glob("seg-*.log"))


# ---------------------------------------------------------------------------------------
# Raw connections that come back
# ---------------------------------------------------------------------------------------

CONNECTION_ERRORS = (Closed, OSError)


def open_session(port: int, client_id: str, version: int, persistent: bool, give_up: Callable[[], bool],
                 deadline: float) -> tuple[RawClient, raw.Packet] | None:
    """Connects (retrying while the broker is down) with clean session off (5.0: clean
    start 0, session expiry 1 h) or a clean session; returns the client and its CONNACK, or
    None if `give_up()` says so first. Fails after `deadline` (time.monotonic())."""
    props = {"SessionExpiryInterval": 3600} if version == V5 and persistent else None
    last: Exception | None = None
    while not give_up():
        if time.monotonic() > deadline:
            raise AssertionError(f"{client_id} could not connect to port {port}: {last!r}")
        c = None
        try:
            c = RawClient(port, version=version, timeout=2.0)
            c.send(raw.connect(client_id, version=version, clean=not persistent, keepalive=30, props=props))
            ack = c.recv(timeout=2.0)
            if ack.type == raw.CONNACK and ack.reason == 0:
                return c, ack
            last = AssertionError(f"answer to CONNECT: {ack!r}")
        except (TimeoutError, *CONNECTION_ERRORS) as e:
            last = e
        if c is not None:
            c.close()
        time.sleep(0.02)  # retry interval while the broker restarts
    return None


class LoadClient(threading.Thread):
    """A raw client that reconnects whenever its connection is lost, until stopped."""

    def __init__(self, port: int, client_id: str, version: int, persistent: bool):
        super().__init__(daemon=True)
        self.port, self.client_id, self.version, self.persistent = port, client_id, version, persistent
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connects = 0
        self.sessions_lost = 0  # reconnections that found no session where one should be
        self.anomalies: list[str] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set() or self.needs_connection():
                opened = open_session(self.port, self.client_id, self.version, self.persistent,
                                      self._give_up, time.monotonic() + 30)
                if opened is None:
                    break
                c, ack = opened
                with self.lock:
                    if self.connects and self.persistent and not ack.session_present:
                        self.sessions_lost += 1
                        self.anomalies.append(f"connection {self.connects + 1}: CONNACK without session present")
                    self.connects += 1
                try:
                    self.on_connect(c, ack)
                    if self.serve(c):
                        break
                except (TimeoutError, *CONNECTION_ERRORS):
                    pass  # the broker went away: connect again
                finally:
                    c.close()
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.error = e
        finally:
            self.finished.set()

    def _give_up(self) -> bool:
        """Connecting is pointless: stopping, with nothing left to finish."""
        return self.stopping.is_set() and not self.needs_connection()

    def needs_connection(self) -> bool:
        return False

    def on_connect(self, c: RawClient, ack: raw.Packet) -> None:
        pass

    def serve(self, c: RawClient) -> bool:
        """Runs one connection; True once finished for good."""
        raise NotImplementedError

    def stop(self, timeout: float = 20) -> None:
        self.stopping.set()
        if not self.finished.wait(timeout):
            raise AssertionError(f"{self.client_id} did not finish within {timeout} s: {self.describe()}")
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.client_id} failed: {self.error!r}") from self.error

    def describe(self) -> str:
        return self.client_id


class LoadPublisher(LoadClient):
    """Publishes "TAG:N" to `topic` at `qos`, `window` messages in flight, until stopped;
    then completes what is in flight and disconnects."""

    def __init__(self, port: int, client_id: str, version: int, qos: int, persistent: bool, topic: str,
                 tag: str, window: int = 8):
        super().__init__(port, client_id, version, persistent)
        self.qos, self.topic, self.tag, self.window = qos, topic, tag, window
        self.next_n = 0
        self.next_pid = 0
        self.inflight: dict[int, list] = {}  # packet id -> [message id, "ack" | "comp"], in order
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.refused: list[str] = []  # acknowledgements with an error reason code
        self.abandoned = 0  # unacknowledged when a clean publisher's connection was lost
        self.resent = 0
        self.unknown_pubrel = 0  # PUBREL resent after a restart, answered 0x92 (already complete)
        self.just_sent = threading.Event()  # set whenever new messages were written to the socket
        # message id -> [(connection number, what happened)], for the report of a lost message.
        self.trace: dict[str, list[tuple[int, str]]] = {}

    def needs_connection(self) -> bool:
        with self.lock:
            return bool(self.inflight)

    def _pid(self) -> int:
        while True:
            self.next_pid = self.next_pid % 65535 + 1
            if self.next_pid not in self.inflight:
                return self.next_pid

    def on_connect(self, c: RawClient, ack: raw.Packet) -> None:
        with self.lock:
            if not self.persistent:
                self.abandoned += len(self.inflight)
                self.inflight.clear()
                return
            resend = list(self.inflight.items())
        for pid, (mid, state) in resend:
            self.resent += 1
            self.trace.setdefault(mid, []).append(
                (self.connects, f"PUBLISH m{pid} DUP again" if state == "ack" else f"PUBREL m{pid} again"))
            if state == "ack":
                c.send(raw.publish(self.topic, mid, qos=self.qos, dup=True, packet_id=pid, version=self.version))
            else:
                c.send(raw.pubrel(pid, self.version))

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def serve(self, c: RawClient) -> bool:
        v = self.version
        while True:
            with self.lock:
                if self.stopping.is_set() and not self.inflight:
                    c.send(raw.disconnect(v))
                    return True
                new = []
                while not self.stopping.is_set() and len(self.inflight) < self.window:
                    mid = f"{self.tag}:{self.next_n}"
                    self.next_n += 1
                    pid = self._pid()
                    self.inflight[pid] = [mid, "ack"]
                    self.sent.add(mid)
                    self.trace[mid] = [(self.connects, f"PUBLISH m{pid}")]
                    new.append((pid, mid))
            for pid, mid in new:
                c.send(raw.publish(self.topic, mid, qos=self.qos, packet_id=pid, version=v))
            if new:
                self.just_sent.set()
            try:
                p = c.recv(timeout=0.05)
            except TimeoutError:
                continue
            self._handle(c, p)

    def _handle(self, c: RawClient, p: raw.Packet) -> None:
        with self.lock:
            entry = self.inflight.get(p.packet_id)
            if p.type == raw.DISCONNECT:
                raise Closed(f"DISCONNECT {p!r}")
            if p.type not in (raw.PUBACK, raw.PUBREC, raw.PUBCOMP) or entry is None:
                self.anomalies.append(f"unexpected {p!r} (in flight: {entry})")
                return
            mid, state = entry
            self.trace.setdefault(mid, []).append((self.connects, f"{raw.PACKET_NAMES[p.type]} reason 0x{p.reason:02x}"))
            if p.type == raw.PUBCOMP and state == "comp" and p.reason == 0x92:
                # Packet Identifier not found: the broker had completed the flow (and forgot the
                # identifier) before it was stopped, and PUBREL was sent again.
                self.unknown_pubrel += 1
                del self.inflight[p.packet_id]
                return
            if p.reason >= 0x80:
                self.refused.append(f"{mid}: {p!r}")
                del self.inflight[p.packet_id]
                return
            if p.type == raw.PUBACK and self.qos == 1 and state == "ack":
                self.acked.add(mid)
                del self.inflight[p.packet_id]
            elif p.type == raw.PUBREC and self.qos == 2:
                # Acknowledged: the broker has the message (again, after a resend).
                self.acked.add(mid)
                entry[1] = "comp"
                c.send(raw.pubrel(p.packet_id, self.version))
            elif p.type == raw.PUBCOMP and self.qos == 2 and state == "comp":
                del self.inflight[p.packet_id]
            else:
                self.anomalies.append(f"unexpected {p!r} for {mid} in state {state}")

    def describe(self) -> str:
        with self.lock:
            return (f"{self.client_id}: {len(self.sent)} sent, {len(self.acked)} acknowledged, "
                    f"{len(self.inflight)} in flight, {self.connects} connections")


class LoadSubscriber(LoadClient):
    """A persistent session subscribed to `filter` at QoS 2: counts every delivery.
    `deliveries` is [(message id, QoS, DUP flag)] in the order the application got them.
    With `pubrec_delay`, it answers a QoS 2 PUBLISH that long after it arrived (an
    application that acknowledges once it has stored the message): at any moment some
    QoS 2 messages it has received wait for its PUBREC."""

    def __init__(self, port: int, client_id: str, version: int, filter: str, pubrec_delay: float = 0.0,
                 qos_levels: tuple[int, ...] = (1, 2)):
        super().__init__(port, client_id, version, persistent=True)
        self.filter = filter
        self.qos_levels = qos_levels  # the publishers' QoS whose messages the filter matches
        self.pubrec_delay = pubrec_delay
        self.deliveries: list[tuple[str, int, bool]] = []
        self.pending_rel: dict[int, str] = {}  # QoS 2 packet ids received, not yet released
        self.changed = threading.Condition(self.lock)
        # (connection number, packet, packet id, message id, DUP) of every PUBLISH and PUBREL.
        self.trace: list[tuple[int, str, int, str, bool]] = []
        # Broken QoS 2 flows seen: a packet id reused while held, a resend without DUP.
        self.qos2_violations: list[str] = []

    def subscribe_once(self) -> None:
        """Connects, subscribes and disconnects (DISCONNECT): the session stays."""
        opened = open_session(self.port, self.client_id, self.version, True, lambda: False,
                              time.monotonic() + TIMEOUT)
        assert opened is not None
        c, ack = opened
        try:
            self.connects += 1
            props = {"SubscriptionIdentifier": 1} if self.version == V5 else None
            suback = c.subscribe(1, [(self.filter, 2)], props=props)
            assert suback.codes == [2], f"SUBACK {suback!r}"
            c.send(raw.disconnect(self.version))
            # Wait for the broker to close (it read DISCONNECT) so that the session is parked.
            c.wait_closed()
        finally:
            c.close()

    def serve(self, c: RawClient) -> bool:
        v = self.version
        held: list[tuple[float, int]] = []  # PUBREC to send: (when, packet id)
        while True:
            now = time.monotonic()
            while held and (held[0][0] <= now or self.stopping.is_set()):
                c.send(raw.pubrec(held.pop(0)[1], v))
            if self.stopping.is_set():
                c.send(raw.disconnect(v))
                c.wait_closed()
                return True
            try:
                p = c.recv(timeout=min(0.05, max(0.001, held[0][0] - now)) if held else 0.05)
            except TimeoutError:
                continue
            with self.changed:
                if p.type == raw.PUBLISH:
                    self._publish(p)
                    if p.qos == 1:
                        c.send(raw.puback(p.packet_id, v))
                    elif p.qos == 2 and self.pubrec_delay:
                        held.append((time.monotonic() + self.pubrec_delay, p.packet_id))
                    elif p.qos == 2:
                        c.send(raw.pubrec(p.packet_id, v))
                elif p.type == raw.PUBREL:
                    self.trace.append((self.connects, "PUBREL", p.packet_id, self.pending_rel.get(p.packet_id, "?"),
                                       False))
                    self.pending_rel.pop(p.packet_id, None)
                    c.send(raw.pubcomp(p.packet_id, v))
                elif p.type == raw.DISCONNECT:
                    raise Closed(f"DISCONNECT {p!r}")
                else:
                    self.anomalies.append(f"unexpected {p!r}")
                self.changed.notify_all()

    def _publish(self, p: raw.Packet) -> None:
        mid = p.payload.decode()
        self.trace.append((self.connects, f"PUBLISH q{p.qos}", p.packet_id, mid, p.dup))
        held = self.pending_rel.get(p.packet_id)
        if held == mid and p.qos == 2:
            # The same message resent: acknowledged again, not received again. A resend
            # carries DUP [MQTT-3.3.1-1]: without it, the broker did not know it had sent it.
            if not p.dup:
                self.qos2_violations.append(f"{mid} sent again with packet id {p.packet_id} and DUP 0 while the "
                                       f"client held it for PUBREL")
            return
        if held is not None:
            # MQTT forbids it (the identifier is in use until PUBCOMP); a client would take
            # it for the held message and lose this one: counted as received here, so that
            # the report tells the two apart.
            self.qos2_violations.append(f"packet id {p.packet_id} reused for {mid} (QoS {p.qos}) while {held} "
                                   f"waits for PUBREL")
        self.deliveries.append((mid, p.qos, p.dup))
        if p.qos == 2:
            self.pending_rel[p.packet_id] = mid

    def received(self) -> set[str]:
        with self.lock:
            return {m for m, _, _ in self.deliveries}

    def settled(self, wanted: set[str]) -> bool:
        with self.lock:
            return wanted <= {m for m, _, _ in self.deliveries} and not self.pending_rel

    def wanted(self, publishers: list["LoadPublisher"]) -> set[str]:
        """The acknowledged messages its subscription matches."""
        return set().union(*(p.acked for p in publishers if p.qos in self.qos_levels))

    def history(self, mids: set[str]) -> list[tuple[int, str, int, str, bool]]:
        """What the trace says about these messages (and their packet ids)."""
        with self.lock:
            pids = {pid for _, _, pid, m, _ in self.trace if m in mids}
            return [t for t in self.trace if t[3] in mids or (t[1] == "PUBREL" and t[2] in pids)]

    def describe(self) -> str:
        with self.lock:
            return (f"{self.client_id}: {len(self.deliveries)} deliveries, waiting for PUBREL "
                    f"{dict(sorted(self.pending_rel.items()))}, {self.connects} connections")


class PahoLoadSubscriber(threading.Thread):
    """LoadSubscriber's job done by paho-mqtt (5.0 or 3.1.1, clean session off), reconnecting
    with the same client object, so that its QoS 2 state carries over."""

    def __init__(self, port: int, client_id: str, version: int, filter: str):
        super().__init__(daemon=True)
        require_paho()
        self.port, self.client_id, self.version, self.filter = port, client_id, version, filter
        self.v5 = version == V5
        self.qos_levels = (1, 2)
        kw: dict[str, Any] = {"client_id": client_id, "protocol": mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311}
        if not self.v5:
            kw["clean_session"] = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.deliveries: list[tuple[str, int, bool]] = []
        self.connects = 0
        self.sessions_lost = 0
        self.anomalies: list[str] = []
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.lock:
            if self.connects and not flags.session_present:
                self.sessions_lost += 1
                self.anomalies.append(f"connection {self.connects + 1}: CONNACK without session present")
            self.connects += 1
            first = self.connects == 1
        if first:
            if self.v5:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = 2
                client.subscribe(self.filter, options=mqtt.SubscribeOptions(qos=2), properties=props)
            else:
                client.subscribe(self.filter, 2)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self.changed:
            self.deliveries.append((msg.payload.decode(), msg.qos, bool(msg.dup)))
            self.changed.notify_all()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    kw: dict[str, Any] = {}
                    if self.v5:
                        props = Properties(PacketTypes.CONNECT)
                        props.SessionExpiryInterval = 3600
                        kw = {"clean_start": self.connects == 0, "properties": props}
                    self.client.connect(HOST, self.port, 30, **kw)
                except OSError:
                    time.sleep(0.02)  # retry interval while the broker restarts
                    continue
                while not self.stopping.is_set():
                    if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                        break
            if self.client.is_connected():
                self.client.disconnect()
                for _ in range(20):
                    if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                        break
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e
        finally:
            self.finished.set()

    def received(self) -> set[str]:
        with self.lock:
            return {m for m, _, _ in self.deliveries}

    def settled(self, wanted: set[str]) -> bool:
        with self.lock:
            return wanted <= {m for m, _, _ in self.deliveries} and not self.client._in_messages

    def wanted(self, publishers: list["LoadPublisher"]) -> set[str]:
        return set().union(*(p.acked for p in publishers if p.qos in self.qos_levels))

    def stop(self, timeout: float = 20) -> None:
        self.stopping.set()
        if not self.finished.wait(timeout):
            raise AssertionError(f"{self.client_id} did not finish within {timeout} s")
        if self.error is not None:
            raise AssertionError(f"{self.client_id} failed: {self.error!r}") from self.error

    def describe(self) -> str:
        with self.lock:
            waiting = {mid: m.payload for mid, m in list(self.client._in_messages.items())}
            return (f"{self.client_id} (paho): {len(self.deliveries)} deliveries, waiting for PUBREL {waiting}, "
                    f"{self.connects} connections")


# ---------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What one subscriber got of what the publishers of one QoS had acknowledged."""

    subscriber: str
    qos: int
    acknowledged: int
    delivered: int  # distinct message ids received
    deliveries: int  # every delivery, duplicates included
    duplicates: int  # deliveries beyond the first of an id
    missing: list[str] = field(default_factory=list)  # acknowledged, never received
    unacknowledged_delivered: int = 0  # sent, never acknowledged, received all the same
    duplicated: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.subscriber} QoS {self.qos}: acknowledged {self.acknowledged}, delivered "
                f"{self.delivered} (+{self.unacknowledged_delivered} never acknowledged), duplicates "
                f"{self.duplicates}, missing {len(self.missing)}")


def tally(subscriber_name: str, deliveries: list[tuple[str, int, bool]], publishers: list[LoadPublisher],
          qos: int) -> Tally:
    pubs = [p for p in publishers if p.qos == qos]
    acked = set().union(*(p.acked for p in pubs))
    sent = set().union(*(p.sent for p in pubs))
    tags = {p.tag for p in pubs}
    mine = [m for m, _, _ in deliveries if m.split(":")[0] in tags]
    counts: dict[str, int] = {}
    for m in mine:
        counts[m] = counts.get(m, 0) + 1
    return Tally(
        subscriber=subscriber_name,
        qos=qos,
        acknowledged=len(acked),
        delivered=len(counts),
        deliveries=len(mine),
        duplicates=len(mine) - len(counts),
        missing=sorted(acked - counts.keys(), key=lambda m: (m.split(":")[0], int(m.split(":")[1]))),
        unacknowledged_delivered=len((counts.keys() & sent) - acked),
        duplicated=sorted(m for m, n in counts.items() if n > 1),
    )


def record(label: str, **figures: Any) -> None:
    """Prints a test's figures (pytest -s shows them) and appends them as a JSON line to
    $PERSIST_REPORT when it is set."""
    print(f"[persistence] {label}: {json.dumps(figures)}")
    path = os.environ.get("PERSIST_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": label, **figures}) + "\n")


# ---------------------------------------------------------------------------------------
# Small raw helpers
# ---------------------------------------------------------------------------------------

def collect(c: RawClient, quiet: float = 0.5, ack: bool = True) -> list[raw.Packet]:
    """Every packet that arrives until `quiet` seconds pass without one, acknowledging
    PUBLISH (PUBACK / PUBREC) and PUBREL (PUBCOMP) as a client does."""
    got = []
    while True:
        try:
            p = c.recv(timeout=quiet)
        except TimeoutError:
            return got
        got.append(p)
        if ack:
            acknowledge(c, p)


def acknowledge(c: RawClient, p: raw.Packet) -> None:
    if p.type == raw.PUBLISH and p.qos == 1:
        c.send(raw.puback(p.packet_id, c.version))
    elif p.type == raw.PUBLISH and p.qos == 2:
        c.send(raw.pubrec(p.packet_id, c.version))
    elif p.type == raw.PUBREL:
        c.send(raw.pubcomp(p.packet_id, c.version))


def messages_until(c: RawClient, marker: bytes, timeout: float = TIMEOUT) -> list[raw.Packet]:
    """PUBLISH packets received up to and including the one with payload `marker`,
    acknowledged as they come (QoS 2 flows completed)."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            p = c.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no {marker!r} within {timeout} s; received {got}") from None
        acknowledge(c, p)
        if p.type == raw.PUBLISH:
            got.append(p)
            if p.payload == marker:
                return got


def connect(port: int, client_id: str, version: int, clean: bool = False, expiry: int | None = 300,
            timeout: float = TIMEOUT, **kw: Any) -> tuple[RawClient, raw.Packet]:
    """A raw client connected with clean session/start `clean` (5.0: session expiry
    `expiry` seconds); returns it with its CONNACK. Close it (or use `with`)."""
    c = RawClient(port, version=version, timeout=timeout)
    props = dict(kw.pop("props", None) or {})
    if version == V5 and expiry is not None:
        props["SessionExpiryInterval"] = expiry
    ack = c.connect(client_id, clean=clean, props=props or None, **kw)
    return c, ack


def park(c: RawClient) -> None:
    """Sends DISCONNECT and waits until the broker has closed the connection: the session is
    parked."""
    c.send(raw.disconnect(c.version))
    c.wait_closed()
    c.close()


def nothing_more(c: RawClient, quiet: float = 0.5) -> list[raw.Packet]:
    """What arrives within `quiet` seconds (acknowledged as a client does): usually []."""
    return collect(c, quiet)
