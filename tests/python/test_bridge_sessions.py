"""Bridges across lost connections, with real peers (Debian's mosquitto as the remote): a
bridge with `cleansession false` keeps its session on the remote in 5.0 as in 3.1.1 (with
`bridge_session_expiry_interval`), so a link cut in the middle of QoS 2 flows both ways loses and repeats
nothing; what waited at QoS 2 goes at the remote's Maximum QoS; a lazy bridge connects once
`threshold` messages wait and disconnects after `idle_timeout`, with and without
`local_cleansession`."""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter

import pytest

from security_support import ConfiguredBroker
from support import HOST, TIMEOUT, mosquitto_pub
from test_bridge import VERSIONS, _peers, mosquitto_remote, peers, wait_remote_subscribed  # noqa: F401 (fixtures)


class CutLink:
    """A TCP relay between a bridge and its remote that the test cuts: both connections
    are reset, with what was on its way lost, and while it is held down a new connection
    is reset at once."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(s: socket.socket) -> None:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RDWR)  # wakes the relay thread blocked in recv
        except OSError:
            pass
        s.close()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                self._reset(c)
                continue
            try:
                r = socket.create_connection((HOST, self.target), timeout=TIMEOUT)
                r.settimeout(None)
            except OSError:
                self._reset(c)
                continue
            with self.lock:
                self.pairs.append((c, r))
                self.connections += 1
            for a, b in ((c, r), (r, c)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket) -> None:
        while True:
            try:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
            except OSError:
                break
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, hold: bool = False) -> None:
        if hold:
            self.up.clear()
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, r in pairs:
            self._reset(c)
            self._reset(r)

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut(hold=True)
        self.listener.close()


@pytest.fixture
def cut_links():
    links: list[CutLink] = []
    yield lambda port: links.append(CutLink(port)) or links[-1]
    for link in links:
        link.close()


def bridge_conf(link: CutLink, remote_id: str, version: str, topics: str, extra: str = "") -> str:
    return ("listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"connection b1\naddress 127.0.0.1:{link.port}\nremote_clientid {remote_id}\n"
            f"bridge_protocol_version {VERSIONS[version]}\nrestart_timeout 1\n{topics}{extra}")


def wait_until(what: str, cond, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)  # poll interval


def received(client) -> list[bytes]:
    """Every payload a PahoClient got so far (its queue is emptied into `client.got`)."""
    got = client.__dict__.setdefault("got", [])
    while not client.messages.empty():
        got.append(client.messages.get_nowait().payload)
    return got


@pytest.mark.parametrize("version", ["311", "5"])
def test_a_persistent_bridge_loses_and_repeats_nothing_when_its_link_is_cut_mid_flow(peers, cut_links, version):
    """QoS 2 both ways through a link cut twice in the middle of the flows, and held down
    while both sides go on publishing: every message arrives once. In 5.0 the remote keeps
    the bridge's session (and what it queued for it meanwhile) only because the bridge asks
    for a Session Expiry Interval (`bridge_session_expiry_interval`: without it, as with
    mosquitto, messages are lost here); the unacknowledged flows are resumed both ways
    [MQTT-4.4.0-1]."""
    remote = mosquitto_remote(peers)
    link = cut_links(remote.port)
    rid = f"b1-{remote.port}"
    local = peers.midge(bridge_conf(link, rid, version, "topic up/# out 2\ntopic down/# in 2\n",
                                    "bridge_session_expiry_interval 0xFFFFFFFF\n"))
    local.wait_for_log(r"Bridge b1 connected")
    wait_remote_subscribed(remote, rid)
    at_remote = peers.paho(remote, version=version)
    at_remote.connect()
    at_remote.subscribe("up/#", qos=2)
    at_local = peers.paho(local, version=version)
    at_local.connect()
    at_local.subscribe("down/#", qos=2)
    pub_local = peers.paho(local, version=version)
    pub_local.connect()
    pub_remote = peers.paho(remote, version=version)
    pub_remote.connect()
    infos = []
    n = 0

    def burst(count: int) -> None:
        nonlocal n
        for _ in range(count):
            payload = f"m{n:04d}"
            infos.append(pub_local.client.publish("up/x", payload, qos=2))
            infos.append(pub_remote.client.publish("down/x", payload, qos=2))
            n += 1

    # 1: cut while the flows run, held down while both sides publish more.
    burst(150)
    wait_until("messages crossing", lambda: len(received(at_remote)) >= 20 and len(received(at_local)) >= 20)
    mark = local.mark()
    link.cut(hold=True)
    local.wait_for_log(r"Bridge b1 disconnected", since=mark)
    burst(50)  # acknowledged by each side while the link is down
    wait_until("the publishers' flows", lambda: all(i.is_published() for i in infos))
    link.restore()
    local.wait_for_log(r"Bridge b1 connected", since=mark)
    # 2: cut again in the middle of a burst, back at once.
    before = (len(received(at_remote)), len(received(at_local)))
    burst(150)
    wait_until("messages crossing again",
               lambda: len(received(at_remote)) >= before[0] + 20 and len(received(at_local)) >= before[1] + 20)
    mark = local.mark()
    link.cut()
    local.wait_for_log(r"Bridge b1 connected", since=mark)
    wait_until("the publishers' flows", lambda: all(i.is_published() for i in infos))
    expected = Counter(f"m{i:04d}".encode() for i in range(n))
    for side, client in (("remote", at_remote), ("midge", at_local)):
        wait_until(f"every message at the {side}", lambda c=client: set(received(c)) >= set(expected), timeout=30)
    # A marker each way after everything: a late duplicate would come before it.
    pub_local.publish("up/x", "end", qos=2)
    pub_remote.publish("down/x", "end", qos=2)
    for side, client in (("remote", at_remote), ("midge", at_local)):
        wait_until(f"the marker at the {side}", lambda c=client: b"end" in received(c))
        got = Counter(p for p in received(client) if p != b"end")
        twice = sorted(p.decode() for p, k in got.items() if k > 1)
        assert got == expected, f"at the {side}: twice {twice[:10]}, missing {sorted(set(expected) - set(got))[:10]}"
    assert link.connections >= 3, "the link was not cut twice"


def test_what_waited_at_qos_2_goes_at_the_remotes_maximum_qos(peers, cut_links):
    """A 5.0 remote with Maximum QoS 1: what midge queued at QoS 2 before the remote
    answered goes at QoS 1 [MQTT-3.2.2-11], instead of the remote disconnecting the bridge
    (QoS not supported) at each attempt."""
    remote = peers.mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\nmax_qos 1\n")
    link = cut_links(remote.port)
    link.cut(hold=True)  # the remote is unreachable at first
    rid = f"b1-{remote.port}"
    local = peers.midge(bridge_conf(link, rid, "5", "topic data/# out 2\n"))
    local.wait_for_log(r"Error creating bridge b1")
    # cleansession false in 5.0 without bridge_session_expiry_interval: said at start.
    assert "mqttv50 with cleansession false but no bridge_session_expiry_interval" in local.log()
    sent = [f"q{i}" for i in range(10)]
    for payload in sent:
        mosquitto_pub(local, "-t", "data/x", "-m", payload, "-q", "2", version="5")
    at_remote = peers.sub(remote, ["data/#"], "-v", qos=2, version="5")
    mark = local.mark()
    link.restore()
    local.wait_for_log(r"Bridge b1 connected", since=mark)
    assert at_remote.read_lines(len(sent)) == [f"data/x {p}" for p in sent]
    mosquitto_pub(local, "-t", "data/x", "-m", "after", "-q", "2", version="5")
    assert at_remote.read_lines(1) == ["data/x after"]
    assert "Bridge b1 disconnected" not in local.log()[mark:], local.log()[mark:]
    assert "QoS" not in remote.log().split("Sending CONNACK to " + rid)[-1].split("\n", 1)[0]


@pytest.mark.parametrize("local_clean,qos", [("false", 1), ("true", 1), ("true", 0)])
def test_a_lazy_bridge_connects_at_its_threshold_and_leaves_when_idle(peers, local_clean, qos):
    """start_type lazy: no connection until `threshold` messages wait for the remote (QoS 0
    ones count, as mosquitto queues them for a lazy bridge); they all go, in order, once it
    is connected; after `idle_timeout` without messages it disconnects, and the next
    `threshold` messages bring it back, with `local_cleansession` too."""
    remote = mosquitto_remote(peers)
    rid = f"b1-{remote.port}"
    at_remote = peers.sub(remote, ["data/#"], "-v", qos=qos)
    local = peers.midge(
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"connection b1\naddress 127.0.0.1:{remote.port}\nremote_clientid {rid}\nrestart_timeout 1\n"
        f"start_type lazy\nthreshold 3\nidle_timeout 2\nlocal_cleansession {local_clean}\n"
        f"topic data/# out {qos}\n")
    for round_ in range(2):
        mark = local.mark()
        for i in range(2):
            mosquitto_pub(local, "-t", "data/x", "-m", f"r{round_}-{i}", "-q", str(qos))
        assert "Connecting bridge b1" not in local.log()[mark:], "connected below the threshold"
        mosquitto_pub(local, "-t", "data/x", "-m", f"r{round_}-2", "-q", str(qos))
        local.wait_for_log(r"Bridge b1 connected", since=mark)
        assert at_remote.read_lines(3) == [f"data/x r{round_}-{i}" for i in range(3)]
        local.wait_for_log(r"Bridge b1 disconnected: idle for 2 s", since=mark)


def test_a_remote_that_takes_only_qos_0_gets_the_bridges_will_at_qos_0(peers):
    """A 5.0 remote with Maximum QoS 0 refuses the first CONNECT, whose will (the `0`
    notification) is at QoS 1 [MQTT-3.2.2-12]; the bridge sends it at QoS 0 from then on, and
    its QoS 2 topic goes at QoS 0."""
    remote = peers.mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\nmax_qos 0\n")
    rid = f"b1-{remote.port}"
    local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n"
                        f"connection b1\naddress 127.0.0.1:{remote.port}\nremote_clientid {rid}\n"
                        "bridge_protocol_version mqttv50\nrestart_timeout 1\ntopic data/# out 2\n")
    local.wait_for_log(r"the remote takes only QoS 0; its will goes at QoS 0")
    local.wait_for_log(r"Bridge b1 connected")
    at_remote = peers.sub(remote, ["data/#"], "-v", version="5")
    mosquitto_pub(local, "-t", "data/x", "-m", "zero", "-q", "2", version="5")
    assert at_remote.read_lines(1) == ["data/x zero"]


class FloodingRemote:
    """A remote broker that answers the bridge's CONNECT with `connack`, then sends `packet`
    over and over for `seconds` and never reads again (what a wedged or hostile broker does);
    with no packet, it stays silent for `seconds`."""

    def __init__(self, connack: bytes, packet: bytes, seconds: float):
        self.sock = socket.socket()
        # A small receive window: the bridge's answers wait in its own buffer, not the kernel's.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind((HOST, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.chunk = packet * (65536 // max(len(packet), 1))
        self.connack, self.seconds = connack, seconds
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(0.5)
        conn.recv(65536)  # the CONNECT (the bridge's first packets may follow: never read)
        conn.sendall(self.connack)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if not self.chunk:
                time.sleep(0.1)
                continue
            try:
                self.sent += conn.send(self.chunk)
            except socket.timeout:
                continue  # the bridge no longer reads
            except OSError:
                break
        conn.close()

    def close(self) -> None:
        self.sock.close()


class QuietBroker(ConfiguredBroker):
    """midge without -v: no log line per packet, which would slow a flood of them down."""

    def _argv(self) -> list[str]:
        return [a for a in super()._argv() if a != "-v"]


def test_a_remote_that_never_reads_cannot_grow_the_bridges_memory(peers):
    """A remote that sends PINGREQ flat out and never reads the PINGRESPs: the bridge stops
    reading once 256 KiB of answers wait to be written, and the keep alive (2 s) closes the
    connection, which stays silent for it. Before, every answer was kept: 30 MB a second, as
    much memory as the remote sent, for as long as it kept sending (mosquitto drops them)."""
    from hostile_support import MIB, Memory

    remote = FloodingRemote(b"\x20\x02\x00\x00", b"\xc0\x00", seconds=30)
    local = QuietBroker(peers.workdir, "listener {port} 127.0.0.1\nallow_anonymous true\n"
                        f"connection b1\naddress 127.0.0.1:{remote.port}\nkeepalive_interval 2\n"
                        "restart_timeout 60\ntopic data/# out 0\n", name="midge-quiet")
    peers.brokers.append(local)
    local.start()
    try:
        local.wait_for_log(r"Bridge b1 connected")
        before = Memory.of(local.proc.pid)
        local.wait_for_log(r"Bridge b1 disconnected: the remote did not answer within the keep alive",
                           timeout=20)
        after = Memory.of(local.proc.pid)
        assert after.hwm - before.rss < 32 * MIB, (
            f"peak {after.hwm / MIB:.0f} MiB from {before.rss / MIB:.0f} MiB, "
            f"the remote sent {remote.sent / MIB:.0f} MiB")
    finally:
        remote.close()


def test_the_remotes_maximum_packet_size_is_not_applied_to_the_bridges_own_suback(peers):
    """A 5.0 remote that accepts packets of 1 byte (Maximum Packet Size 1): the SUBACK the
    bridge's own local SUBSCRIBE gets on this broker is not sent there, so the bridge stays
    connected (it was closed for "a SUBACK of 6 bytes is larger than its Maximum Packet
    Size"); its notification and a message, too large for the remote, are dropped
    [MQTT-3.1.2-25]. A SUBSCRIBE for the remote cannot be dropped: the bridge closes before it,
    and says why [MQTT-3.1.2-24]."""
    connack = b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x01"  # properties: Maximum Packet Size 1
    for topic, closed in (("data/# out 1", None), ("data/# in 1", "a SUBSCRIBE of 14 bytes")):
        remote = FloodingRemote(connack, b"", seconds=30)
        local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n"
                            f"connection b1\naddress 127.0.0.1:{remote.port}\nbridge_protocol_version mqttv50\n"
                            "bridge_attempt_unsubscribe false\nkeepalive_interval 60\nrestart_timeout 60\n"
                            f"topic {topic}\n")
        try:
            local.wait_for_log(r"Bridge b1 connected")
            if closed:
                local.wait_for_log(rf"Bridge b1 disconnected: {closed} is larger than the remote's "
                                   r"Maximum Packet Size \(1 bytes\)")
                continue
            # The close came in the same round as "connected", before this round trip.
            mosquitto_pub(local, "-t", "data/x", "-m", "m", "-q", "1")
            assert "Bridge b1 disconnected" not in local.log(), local.log()
        finally:
            remote.close()
