"""Helpers for test_hostile.py: the memory bound the README states (section "Limits"), the
broker's resident memory read from /proc, and the checks every hostile test ends with: the
broker is alive, a fresh client is served within a second, and the broker never held more
memory than the bound allows.

The bound, per connection, whatever the client does:

    the packet being read (up to max_packet_size; before login nothing of a first packet
    that is not CONNECT, and a CONNECT or AUTH of at most 100,000 bytes after its header)
  + 1 MiB of read and write buffers
  + the session's queue: max_queued_messages (+ 4,096 while publishers are slowed), about
    200 B each plus the message (shared between subscribers)
  + 5.0 topic aliases: at most 64, each up to 65,535 B

Subscriptions and retained messages are stored state and grow with what clients store; a
test that stores some adds what they cost. The process itself gets a fixed allowance.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import mqtt_raw as raw
from mqtt_raw import V5
from support import Broker, unique_id

KIB = 1024
MIB = 1024 * 1024

# The README's figures.
BUFFERS = 1 * MIB
QUEUE_ENTRY = 200
DEFAULT_MAX_QUEUED = 1000
CONGESTION_SLACK = 4096
MAX_ALIASES = 64
MAX_ALIAS_TOPIC = 65_535
DEFAULT_MAX_PACKET = 268_435_455
# The process: code, runtime, tables (the debug binary maps ~14 MiB of code alone).
PROCESS_ALLOWANCE = 30 * MIB

# What a fresh client may take to be served after an attack.
SERVED_WITHIN = 1.0


def connection_bound(packet: int = 0, queued: int = 0, message: int = 0, aliases: bool = False) -> int:
    """The most one connection may make the broker hold, by the README's formula, for what a
    test does with it: `packet` is the largest packet the client sends, `queued` the most
    deliveries its session can have waiting (max_queued_messages, + CONGESTION_SLACK where
    publishers can be slowed by it), `message` the largest of them, `aliases` whether it
    sets 5.0 topic aliases."""
    return (packet + BUFFERS + queued * (QUEUE_ENTRY + message)
            + (MAX_ALIASES * MAX_ALIAS_TOPIC if aliases else 0))


@dataclass
class Memory:
    """VmRSS and VmHWM (the peak resident size since the process started) of a process."""

    rss: int
    hwm: int

    @staticmethod
    def of(pid: int) -> "Memory":
        fields: dict[str, int] = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * KIB
        return Memory(fields["VmRSS"], fields["VmHWM"])


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


@dataclass
class MemoryBudget:
    """The bound for one test: the process allowance, what the test's clients store, and
    each connection's bound. `check` compares the broker's peak resident size with it."""

    label: str
    parts: list[tuple[str, int]] = field(default_factory=lambda: [("process", PROCESS_ALLOWANCE)])

    def add(self, what: str, nbytes: int, count: int = 1) -> "MemoryBudget":
        self.parts.append((f"{count} x {what}" if count != 1 else what, nbytes * count))
        return self

    @property
    def bound(self) -> int:
        return sum(n for _, n in self.parts)

    def describe(self) -> str:
        return " + ".join(f"{what} {mib(n)}" for what, n in self.parts) + f" = {mib(self.bound)}"

    def check(self, broker: Broker, **figures: int) -> Memory:
        """Fails when the broker's peak resident memory went over the bound. Every figure
        is recorded (see record_memory)."""
        m = Memory.of(broker.proc.pid)
        record_memory(self.label, peak=m.hwm, now=m.rss, bound=self.bound, **figures)
        assert m.hwm <= self.bound, (
            f"{self.label}: the broker's peak resident memory (VmHWM) was {mib(m.hwm)} "
            f"(now {mib(m.rss)}), over the bound {self.describe()}"
        )
        return m


def record_memory(label: str, **figures: int) -> None:
    """Prints the memory figures of a test (pytest -s shows them) and appends them as a JSON
    line to $HOSTILE_MEMORY_LOG when it is set (for the report)."""
    shown = ", ".join(f"{k} {v}" if k.endswith(("_ms", "_count", "_bytes")) else f"{k} {mib(v)}"
                      for k, v in figures.items())
    print(f"[memory] {label}: {shown}")
    path = os.environ.get("HOSTILE_MEMORY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": label, **figures}) + "\n")


# ---------------------------------------------------------------------------------------
# Served, alive
# ---------------------------------------------------------------------------------------

def assert_served(broker: Broker, version: int, within: float = SERVED_WITHIN) -> float:
    """A fresh subscriber and a fresh publisher: CONNECT, SUBSCRIBE, PUBLISH QoS 1, the
    message delivered, all within `within` seconds. Returns the time it took."""
    assert broker.alive(), f"the broker died (exit code {broker.proc.returncode}); log:\n{broker.log()[-4000:]}"
    start = time.monotonic()
    topic = f"fresh/{unique_id('t')}"
    payload = f"served {time.time()}".encode()
    with raw.RawClient(broker.port, version=version, timeout=within) as sub, \
            raw.RawClient(broker.port, version=version, timeout=within) as pub:
        sub.connect(unique_id("fresh-sub"))
        assert sub.subscribe(1, [(topic, 1)]).codes == [1]
        pub.connect(unique_id("fresh-pub"))
        pub.publish(topic, payload, qos=1)
        m = sub.expect(raw.PUBLISH, timeout=max(0.01, within - (time.monotonic() - start)))
        assert (m.topic, m.payload) == (topic, payload), m
        sub.send(raw.puback(m.packet_id, version))
    took = time.monotonic() - start
    assert took <= within, f"a fresh client took {took:.2f} s to be served (at most {within} s)"
    return took


def after_attack(broker: Broker, version: int, budget: MemoryBudget, **figures: int) -> Memory:
    """What every hostile test checks at its end: (i) the broker is alive, (ii) a fresh client
    is served within a second, (iii) its peak resident memory stayed within the bound."""
    took = assert_served(broker, version)
    budget.add("fresh client", connection_bound(packet=KIB, queued=1, message=KIB), 2)
    m = budget.check(broker, **figures)
    assert broker.alive(), "the broker died after serving the fresh client"
    print(f"[served] {budget.label}: fresh round trip in {took * 1000:.0f} ms")
    return m


# ---------------------------------------------------------------------------------------
# Raw connections that misbehave
# ---------------------------------------------------------------------------------------

def open_raw(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    """A plain TCP connection (optionally from another loopback address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def adopt(sock: socket.socket, version: int, received: bytes = b"") -> raw.RawClient:
    """A RawClient on a socket already open (with the bytes already read from it)."""
    c = raw.RawClient.__new__(raw.RawClient)
    c.sock, c.version, c.buf, c.eof, c.reset = sock, version, received, False, False
    return c


def split_packets(data: bytes, version: int) -> list[raw.Packet]:
    """The packets in bytes received from the broker (which must end at a packet's end)."""
    c = adopt(None, version, data)
    out = []
    while (frame := c._frame()) is not None:
        out.append(raw.decode(*frame, version))
    assert not c.buf, f"{len(c.buf)} bytes of a partial packet at the end: {c.buf[:16]!r}"
    return out


class Background:
    """Runs functions in threads and re-raises the first failure on join."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def run(self, fn, *args) -> None:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported by join
                self.errors.append(e)

        t = threading.Thread(target=body, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), f"a background task did not finish within {timeout} s"
        if self.errors:
            raise self.errors[0]


def version_id(v: int) -> str:
    return "v5" if v == V5 else "v311"


class Witness:
    """A subscriber and a publisher (raw 3.1.1 clients) that keep making QoS 1 round trips in
    a thread while an attack runs: each must complete within `limit` seconds; `latencies`
    records them."""

    def __init__(self, broker: Broker, limit: float, topic: str | None = None, interval: float = 0.2):
        self.limit = limit
        self.interval = interval
        self.topic = topic or f"witness/{unique_id('w')}"
        self.sub = raw.RawClient(broker.port, timeout=limit)
        self.sub.connect(unique_id("wsub"))
        assert self.sub.subscribe(1, [(self.topic, 1)]).codes == [1]
        self.pub = raw.RawClient(broker.port, timeout=limit)
        self.pub.connect(unique_id("wpub"))
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def round_trip(self) -> float:
        self._n += 1
        payload = f"witness {self._n}".encode()
        start = time.monotonic()
        self.pub.publish(self.topic, payload, qos=1, packet_id=self._n % 65535 + 1)
        m = self.sub.expect(raw.PUBLISH, timeout=self.limit)
        took = time.monotonic() - start
        assert m.payload == payload, f"witness received {m.payload!r}, expected {payload!r}"
        self.sub.send(raw.puback(m.packet_id))
        self.latencies.append(took)
        assert took <= self.limit, f"a witness round trip took {took:.2f} s (limit {self.limit} s)"
        return took

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.round_trip()
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def start(self) -> "Witness":
        self.round_trip()
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stops the thread; fails if a round trip failed. Returns the slowest round trip."""
        self._stop.set()
        self._thread.join(self.limit + 5)
        assert not self._thread.is_alive(), "the witness is stuck"
        if self.error is not None:
            raise AssertionError(f"a witness round trip failed during the attack: {self.error}") from self.error
        self.round_trip()
        self.sub.close()
        self.pub.close()
        return max(self.latencies)
