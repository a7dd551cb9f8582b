"""Bridges (mosquitto's `connection` blocks) with real peers: midge bridged to Debian's
mosquitto broker, and mosquitto bridged to midge. Messages cross both ways at QoS 0, 1 and 2
over 3.1.1 and 5.0, with topic prefixes; nothing comes back to where it was published; a
remote that is away gets, once back, every message midge acknowledged meanwhile, in order
and once; TLS with a `midge cert` client certificate; the bridge's state on
`$SYS/broker/connection/ID/state`."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from refusing_broker import _read_packet
from security_support import ConfiguredBroker, MosquittoBroker, Pki, midge_cert
from support import HOST, TIMEOUT, MosquittoSub, PahoClient, mosquitto_pub, require_paho, require_tool, unique_id

VERSIONS = {"311": "mqttv311", "5": "mqttv50"}


@pytest.fixture(autouse=True)
def _peers():
    require_tool("mosquitto_pub")
    require_tool("mosquitto_sub")
    require_paho()


class Peers:
    """Brokers and clients of one test, stopped at the end (midge must exit 0)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.brokers: list[ConfiguredBroker] = []
        self.subs: list[MosquittoSub] = []
        self.pahos: list[PahoClient] = []

    def midge(self, template: str, ports=("port",)) -> ConfiguredBroker:
        b = ConfiguredBroker(self.workdir, template, ports, name=f"midge{len(self.brokers)}")
        self.brokers.append(b)
        return b.start()

    def mosquitto(self, template: str, ports=("port",)) -> MosquittoBroker:
        b = MosquittoBroker(self.workdir, template, ports, name=f"mosquitto{len(self.brokers)}")
        self.brokers.append(b)
        return b.start()

    def sub(self, broker, topics, *args, wait: bool = True, **kw) -> MosquittoSub:
        mark = broker.mark()
        # mosquitto's log line has no trailing space: waited for here.
        mosquitto = isinstance(broker, MosquittoBroker)
        s = MosquittoSub(broker, topics, *args, wait=wait and not mosquitto, **kw)
        self.subs.append(s)
        if wait and mosquitto:
            wait_remote_subscribed(broker, s.client_id, since=mark)
        return s

    def paho(self, broker, **kw) -> PahoClient:
        c = PahoClient(broker, unique_id("paho"), **kw)
        self.pahos.append(c)
        return c

    def close(self) -> list[str]:
        for s in self.subs:
            s.stop()
        for c in self.pahos:
            c.close()
        failures = []
        for b in self.brokers:
            rc = b.stop()
            if rc != 0 and not isinstance(b, MosquittoBroker):
                failures.append(f"{b.name} exited with {rc}; log tail:\n{b.log()[-3000:]}")
        return failures


@pytest.fixture
def peers(tmp_path):
    p = Peers(tmp_path)
    yield p
    failures = p.close()
    assert not failures, "\n".join(failures)


def restart(b: ConfiguredBroker) -> None:
    """Starts a stopped broker again on the same ports, and waits until it listens."""
    mark = b.mark()
    with open(b.log_path, "ab") as log:
        b.proc = subprocess.Popen(b._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ready = r"mosquitto version \S+ running" if isinstance(b, MosquittoBroker) else b._ready_pattern(b.port)
    b.wait_for_log(ready, since=mark)


def kill9(b: ConfiguredBroker) -> None:
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()


def mosquitto_remote(peers: Peers, extra: str = "") -> MosquittoBroker:
    return peers.mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\n" + extra)


def bridge_to(remote: ConfiguredBroker, version: str, topics: str, extra: str = "", name: str = "b1") -> str:
    return (f"connection {name}\naddress 127.0.0.1:{remote.port}\nremote_clientid {name}-{remote.port}\n"
            f"bridge_protocol_version {VERSIONS[version]}\nrestart_timeout 1\n{topics}{extra}")


def midge_bridged(peers: Peers, remote: ConfiguredBroker, version: str, topics: str, extra: str = "") -> ConfiguredBroker:
    m = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n" + bridge_to(remote, version, topics, extra))
    m.wait_for_log(r"Bridge b1 connected")
    return m


def wait_remote_subscribed(remote: MosquittoBroker, client_id: str, count: int = 1, since: int = 0) -> None:
    deadline = time.monotonic() + TIMEOUT
    while len(re.findall(rf"Sending SUBACK to {re.escape(client_id)}$", remote.log()[since:], re.M)) < count:
        assert time.monotonic() < deadline, f"{client_id} did not subscribe on {remote.name}:\n{remote.log()[-3000:]}"
        time.sleep(0.01)  # poll interval


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_midge_bridged_to_mosquitto_in_out_with_prefixes(peers, version, qos):
    remote = mosquitto_remote(peers)
    topics = (f"topic sensors/# out {qos} site/ central/site1/\n"
              f"topic cmd/# in {qos} site/ central/to-site1/\n")
    local = midge_bridged(peers, remote, version, topics)
    wait_remote_subscribed(remote, f"b1-{remote.port}")
    at_remote = peers.sub(remote, ["central/#"], "-v", qos=qos, version=version)
    at_local = peers.sub(local, ["site/cmd/#"], "-v", qos=qos, version=version)
    mosquitto_pub(local, "-t", "site/sensors/t1", "-m", "21.5", "-q", str(qos), version=version)
    assert at_remote.read_lines(1) == ["central/site1/sensors/t1 21.5"]
    mosquitto_pub(remote, "-t", "central/to-site1/cmd/open", "-m", "now", "-q", str(qos), version=version)
    assert at_local.read_lines(1) == ["site/cmd/open now"]


@pytest.mark.parametrize("version", ["311", "5"])
def test_both_directions_never_echo(peers, version):
    """A message published on either side reaches the other once and never comes back:
    the marker published after it on the far side arrives next, with nothing in between."""
    remote = mosquitto_remote(peers)
    local = midge_bridged(peers, remote, version, "topic loop/# both 2\n")
    wait_remote_subscribed(remote, f"b1-{remote.port}")
    at_local = peers.sub(local, ["loop/#"], "-v", qos=2)
    at_remote = peers.sub(remote, ["loop/#"], "-v", qos=2)
    mosquitto_pub(local, "-t", "loop/a", "-m", "from-midge", "-q", "2")
    assert at_remote.read_lines(1) == ["loop/a from-midge"]
    mosquitto_pub(remote, "-t", "loop/b", "-m", "marker", "-q", "2")
    assert at_local.read_lines(2) == ["loop/a from-midge", "loop/b marker"]
    assert at_remote.read_lines(1) == ["loop/b marker"]
    mosquitto_pub(local, "-t", "loop/c", "-m", "end", "-q", "2")
    assert at_remote.read_lines(1) == ["loop/c end"]
    assert at_local.read_lines(1) == ["loop/c end"]


@pytest.mark.parametrize("version", ["311", "5"])
def test_mosquitto_bridged_to_midge(peers, version):
    """mosquitto as the bridge, midge as its remote: a 3.1.1 bridge (try_private) gets No
    Local from midge, a 5.0 one asks for it; messages cross both ways without echo."""
    remote = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n")
    site = peers.mosquitto("listener {port} 127.0.0.1\nallow_anonymous true\n"
                           + bridge_to(remote, version, "topic up/# out 1\ntopic down/# in 2\ntopic both/# both 1\n"))
    remote.wait_for_log(rf"New client connected .* as b1-{remote.port} \(p{'5' if version == '5' else '2'}")
    remote.wait_subscribed(f"b1-{remote.port}", count=1)
    at_remote = peers.sub(remote, ["up/#", "both/#"], "-v", qos=1)
    at_site = peers.sub(site, ["down/#", "both/#"], "-v", qos=1)
    mosquitto_pub(site, "-t", "up/x", "-m", "1", "-q", "1")
    assert at_remote.read_lines(1) == ["up/x 1"]
    mosquitto_pub(remote, "-t", "down/y", "-m", "2", "-q", "2")
    assert at_site.read_lines(1) == ["down/y 2"]
    mosquitto_pub(site, "-t", "both/z", "-m", "3", "-q", "1")
    assert at_remote.read_lines(1) == ["both/z 3"]
    mosquitto_pub(remote, "-t", "both/marker", "-m", "4", "-q", "1")
    assert at_site.read_lines(2) == ["both/z 3", "both/marker 4"]


@pytest.mark.parametrize("version,how,qos", [("311", "killed", 2), ("5", "stopped", 2), ("311", "stopped", 1),
                                             ("5", "killed", 1)])
def test_remote_away_gets_everything_acknowledged_in_order_once(peers, version, how, qos):
    """midge acknowledges QoS 1 and 2 messages for an `out` topic while its remote is down;
    once the remote is back, it gets every one of them, in order, and no QoS 2 twice."""
    remote = mosquitto_remote(peers)
    local = midge_bridged(peers, remote, version, "topic data/# out 2\n")
    bridge_id = f"b1-{remote.port}"
    at_remote = peers.sub(remote, ["data/#"], "-v", qos=2)
    mosquitto_pub(local, "-t", "data/x", "-m", "before", "-q", "2")
    assert at_remote.read_lines(1) == ["data/x before"]
    mark = local.mark()
    if how == "killed":
        kill9(remote)
    else:
        remote.proc.terminate()
        remote.proc.wait()
    local.wait_for_log(r"Bridge b1 disconnected", since=mark)
    sent = [f"m{i:02d}" for i in range(30)]
    pub = peers.paho(local, version=version)
    pub.connect()
    for payload in sent:
        pub.publish("data/x", payload, qos=qos)  # acknowledged by midge
    restart(remote)
    # The subscriber is there before the bridge comes back (restart_timeout 1 s): checked
    # in mosquitto's log below.
    at_remote2 = peers.sub(remote, ["data/#"], "-v", qos=2, wait=False)
    local.wait_for_log(r"Bridge b1 connected", since=mark)
    got = at_remote2.read_lines(len(sent))
    assert got == [f"data/x {p}" for p in sent]
    log = remote.log()
    sub_at = log.rfind(f"Sending SUBACK to {at_remote2.client_id}")
    bridge_at = log.rfind(f"as {bridge_id}")
    assert 0 <= sub_at < bridge_at, "the subscriber was not there before the bridge reconnected"
    mosquitto_pub(local, "-t", "data/x", "-m", "after", "-q", "2")
    assert at_remote2.read_lines(1) == ["data/x after"], "a message came twice"


def test_notifications_on_sys_topic(peers):
    remote = mosquitto_remote(peers)
    local = midge_bridged(peers, remote, "311", "topic t/# both 1\n")
    state = f"$SYS/broker/connection/b1-{remote.port}/state"
    at_local = peers.sub(local, [state], "-v")
    assert at_local.read_lines(1) == [f"{state} 1"]
    at_remote = peers.sub(remote, [state], "-v")
    assert at_remote.read_lines(1) == [f"{state} 1"]
    kill9(remote)
    assert at_local.read_lines(1) == [f"{state} 0"]
    restart(remote)
    assert at_local.read_lines(1) == [f"{state} 1"]
    # midge gone without a word: the remote publishes the bridge's will, 0, retained.
    watch = peers.sub(remote, [state], "-v")
    assert watch.read_lines(1) == [f"{state} 1"]
    kill9(local)
    assert watch.read_lines(1) == [f"{state} 0"]
    local.proc = None


@pytest.fixture(scope="module")
def bridge_pki(tmp_path_factory):
    """A `midge cert` CA with a server certificate for 127.0.0.1 and a client `site1`, and
    another CA with its own server certificate (which the first does not sign)."""
    p = Pki(tmp_path_factory.mktemp("bridge-pki") / "ca")
    midge_cert(p.dir, "init")
    midge_cert(p.dir, "server", "--host", "localhost", "--ip", "127.0.0.1")
    midge_cert(p.dir, "client", "site1")
    other = Pki(tmp_path_factory.mktemp("bridge-pki-other") / "ca")
    midge_cert(other.dir, "init", "--cn", "Other CA")
    midge_cert(other.dir, "server", "--host", "localhost", "--ip", "127.0.0.1")
    return p, other


def tls_remote(peers: Peers, p: Pki) -> MosquittoBroker:
    crt, key = p.server()
    return peers.mosquitto(f"listener {{port}} 127.0.0.1\ncertfile {crt}\nkeyfile {key}\ncafile {p.ca}\n"
                           "require_certificate true\nuse_identity_as_username true\n")


@pytest.mark.parametrize("version", ["311", "5"])
def test_tls_with_a_midge_cert_client_certificate(peers, bridge_pki, version):
    p, _ = bridge_pki
    remote = tls_remote(peers, p)
    crt, key = p.client("site1")
    local = midge_bridged(peers, remote, version, "topic tls/# both 1\n",
                          f"bridge_cafile {p.ca}\nbridge_certfile {crt}\nbridge_keyfile {key}\n")
    remote.wait_for_log(r"New (client|bridge) connected .* u'site1'")
    wait_remote_subscribed(remote, f"b1-{remote.port}")
    at_local = peers.sub(local, ["tls/#"], "-v", qos=1)
    # Through the remote: a client of the remote with the same certificate.
    cmd = [require_tool("mosquitto_pub"), "-h", HOST, "-p", str(remote.port), "--cafile", str(p.ca), "--cert", str(crt),
           "--key", str(key), "-t", "tls/in", "-m", "secret", "-q", "1"]
    assert subprocess.run(cmd, capture_output=True, timeout=TIMEOUT).returncode == 0
    assert at_local.read_lines(1) == ["tls/in secret"]


def test_a_remote_the_ca_does_not_sign_is_refused(peers, bridge_pki):
    p, other = bridge_pki
    remote = tls_remote(peers, other)
    crt, key = p.client("site1")
    local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n"
                        + bridge_to(remote, "311", "topic tls/# both 1\n",
                                    f"bridge_cafile {p.ca}\nbridge_certfile {crt}\nbridge_keyfile {key}\n"))
    line = local.wait_for_log(r"Bridge b1: TLS with 127\.0\.0\.1:\d+ failed, the remote is not trusted: .*")
    assert "UnknownIssuer" in line.group(0) or "unknown" in line.group(0).lower(), line.group(0)
    assert not local.find_log(r"Bridge b1 connected")


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_queued_messages_survive_a_restart_of_midge(peers, tmp_path, how):
    """With persistence on, what midge acknowledged for an away remote is in the store: after
    midge restarts (stopped, or killed), the remote still gets all of it, in order, once."""
    remote = mosquitto_remote(peers)
    data = tmp_path / "midge-data"
    data.mkdir()
    local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {data}/\npersistence_sync_interval 0\n"
                        + bridge_to(remote, "311", "topic data/# out 2\n"))
    # An `out` topic only: the bridge unsubscribes on the remote (bridge_attempt_unsubscribe).
    remote.wait_for_log(rf"Sending UNSUBACK to b1-{remote.port}")
    mark = local.mark()
    remote.proc.terminate()
    remote.proc.wait()
    local.wait_for_log(r"Bridge b1 disconnected", since=mark)
    sent = [f"p{i:02d}" for i in range(20)]
    pub = peers.paho(local)
    pub.connect()
    for payload in sent:
        pub.publish("data/x", payload, qos=2)  # acknowledged by midge, so in its store
    pub.disconnect()
    if how == "killed":
        kill9(local)
    else:
        local.proc.terminate()
        assert local.proc.wait() == 0
    restart(remote)
    at_remote = peers.sub(remote, ["data/#"], "-v", qos=2)
    mark = local.mark()
    restart(local)
    local.wait_for_log(r"Bridge b1 connected", since=mark)
    assert at_remote.read_lines(len(sent)) == [f"data/x {p}" for p in sent]
    mosquitto_pub(local, "-t", "data/x", "-m", "after", "-q", "2")
    assert at_remote.read_lines(1) == ["data/x after"], "a message came twice"


def test_without_round_robin_the_bridge_goes_back_to_its_main_address(peers):
    """The main address is down at start: the bridge uses the second, and moves back to the
    main one once it answers again (mosquitto looks every 5 s)."""
    main = mosquitto_remote(peers)
    backup = mosquitto_remote(peers)
    main.proc.terminate()
    main.proc.wait()
    local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n"
                        f"connection b1\naddresses 127.0.0.1:{main.port} 127.0.0.1:{backup.port}\n"
                        "remote_clientid b1-main\nrestart_timeout 1\ntopic t/# out 1\n")
    local.wait_for_log(rf"Connecting bridge b1 \(127\.0\.0\.1:{backup.port}\)")
    local.wait_for_log(r"Bridge b1 connected")
    restart(main)
    mark = local.mark()
    local.wait_for_log(r"Bridge b1 disconnected: its main address answers again", since=mark, timeout=15)
    local.wait_for_log(rf"Connecting bridge b1 \(127\.0\.0\.1:{main.port}\)", since=mark)
    main.wait_for_log(r"as b1-main", timeout=10)


def test_a_5_0_bridge_keeps_alive_at_the_remotes_server_keep_alive(peers):
    """A mosquitto remote with max_keepalive 10 (its least) answers the 5.0 bridge's keep
    alive of 60 s with a Server Keep Alive of 10: the bridge pings within 10 s
    [MQTT-3.2.2-21] (it kept its 60 s, sent no PINGREQ, and the remote closed it after 15 s,
    every time)."""
    remote = mosquitto_remote(peers, "max_keepalive 10\n")
    mark = remote.mark()
    local = midge_bridged(peers, remote, "5", "topic t/# both 1\n")
    connected = time.monotonic()
    remote.wait_for_log(rf"Received PINGREQ from {re.escape(f'b1-{remote.port}')}$", since=mark, timeout=20)
    assert time.monotonic() - connected < 12
    assert "Bridge b1 disconnected" not in local.log(), local.log()[-3000:]


def test_a_remote_that_refuses_the_bridge_flag_gets_a_plain_connect(peers):
    """try_private sets the top bit of the protocol level (mosquitto's bridge flag); a remote
    that does not know it refuses the CONNECT as an unacceptable protocol version. As
    mosquitto's, the bridge then connects as a plain 3.1.1 client (it tried the flag again
    for ever)."""
    levels: list[int] = []
    srv = socket.create_server((HOST, 0))
    port = srv.getsockname()[1]

    def remote() -> None:
        with srv:
            while True:
                conn, _ = srv.accept()
                with conn:
                    body = _read_packet(conn)[2]
                    levels.append(body[6])  # after the protocol name, 00 04 MQTT
                    if body[6] & 0x80:
                        conn.sendall(b"\x20\x02\x00\x01")  # unacceptable protocol version
                        continue
                    conn.sendall(b"\x20\x02\x00\x00")
                    while conn.recv(4096):
                        pass
                    return

    threading.Thread(target=remote, daemon=True).start()
    local = peers.midge("listener {port} 127.0.0.1\nallow_anonymous true\n"
                        f"connection b1\naddress {HOST}:{port}\nremote_clientid b1\nrestart_timeout 1\n"
                        "topic t/# both 1\n")
    local.wait_for_log(r"Bridge b1: \S+ refused the bridge flag in the protocol version \(try_private\); "
                       r"trying again without it\.")
    local.wait_for_log(r"Bridge b1 connected")
    assert levels == [0x84, 0x04], levels
