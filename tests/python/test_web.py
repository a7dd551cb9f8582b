"""WebSockets, $SYS and Prometheus, end to end with real peers:

- MQTT over WebSockets (`protocol websockets`), plain and TLS (wss) with client certificates:
  MQTT.js in headless Chromium from a page served on localhost (tests/browser, installed with
  `npm ci` from its package-lock.json at test time), paho-mqtt's websocket transport, and a
  hand-made client (ws_client.py) for what those never send: packets split across frames and
  several in one, fragmented messages, text frames, malformed and oversized handshakes. The
  security options (passwords, ACL, per_listener_settings, certificates, max_connections)
  apply there as on TCP.
- `$SYS`: the tree compared with what Debian's mosquitto 2.0.11 publishes (names, payload
  formats, retain flags), read subject to the ACL, off with sys_interval 0.
- Prometheus (`protocol http`): scraped by a real Prometheus server (Debian's), whose HTTP API
  is then asked for a midge metric; the text also read by the official Python parser
  (prometheus_client); /healthz.

Every broker runs on free ports; every wait is for an event with a deadline."""
from __future__ import annotations

import http.client
import http.server
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import mqtt_raw as raw
import ws_client
from mqtt_raw import CONNACK, PINGRESP, PUBACK, PUBLISH, SUBACK, RawClient
from security_support import ConfiguredBroker, MosquittoBroker, Pki, midge_cert, midge_passwd
from support import HOST, TIMEOUT, MosquittoSub, free_port, midge_bin, require_paho, require_program, require_tool, unique_id

BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
GRAFANA_DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "midge.json"
WS = "listener {ws} 127.0.0.1\nprotocol websockets\n"
HTTP = "listener {http} 127.0.0.1\nprotocol http\n"
ANON_TCP = "listener {port} 127.0.0.1\nallow_anonymous true\n"


@pytest.fixture
def brokers(tmp_path):
    """Starts midge (or mosquitto) brokers from configuration templates; stops them at the end
    (midge must exit 0 on SIGTERM)."""
    started: list[ConfiguredBroker] = []

    def start(template: str, ports: tuple[str, ...] = ("port",), mosquitto: bool = False) -> ConfiguredBroker:
        cls = MosquittoBroker if mosquitto else ConfiguredBroker
        b = cls(tmp_path, template, ports, name=f"{'mosquitto' if mosquitto else 'midge'}{len(started)}")
        started.append(b)
        return b.start()

    yield start
    failures = []
    for b in started:
        rc = b.stop()
        if rc != 0 and not isinstance(b, MosquittoBroker):
            failures.append(f"{b.name} exited with {rc}; log tail:\n{b.log()[-3000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A CA made by `midge cert`, a server certificate for 127.0.0.1, client certificate alice."""
    p = Pki(tmp_path_factory.mktemp("pki") / "ca")
    midge_cert(p.dir, "init")
    midge_cert(p.dir, "server", "--host", "localhost", "--ip", "127.0.0.1")
    midge_cert(p.dir, "client", "alice")
    return p


def wss_listener(p: Pki, port: str = "wss", mutual: bool = False) -> str:
    crt, key = p.server()
    text = f"listener {{{port}}} 127.0.0.1\nprotocol websockets\ncertfile {crt}\nkeyfile {key}\n"
    if mutual:
        text += f"cafile {p.ca}\nrequire_certificate true\nuse_identity_as_username true\n"
    return text


# ---------------------------------------------------------------------------------------
# paho over WebSockets
# ---------------------------------------------------------------------------------------

class WsPaho:
    """A paho client over WebSockets (transport="websockets"), its messages in a list."""

    def __init__(self, port: int, client_id: str, version: int = 4, path: str = "/mqtt", tls: dict | None = None,
                 username: str | None = None, password: str | None = None):
        require_paho()
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                                  transport="websockets")
        self.client.ws_set_options(path=path)
        if tls is not None:
            self.client.tls_set(**tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.messages: list = []
        self.cond = threading.Condition()
        self.connack: object = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: self._note()
        self.subacks = 0

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.cond:
            self.connack = reason_code
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.qos, msg.retain))
            self.cond.notify_all()

    def _note(self) -> None:
        with self.cond:
            self.subacks += 1
            self.cond.notify_all()

    def _wait(self, pred, what: str, timeout: float = TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"{what} not within {timeout} s (messages {self.messages})")

    def connect(self):
        self.client.connect(HOST, self.port, 30)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        return self.connack

    def subscribe(self, topic: str, qos: int = 2) -> None:
        before = self.subacks
        self.client.subscribe(topic, qos)
        self._wait(lambda: self.subacks > before, "SUBACK")

    def wait_messages(self, n: int, timeout: float = TIMEOUT) -> list:
        self._wait(lambda: len(self.messages) >= n, f"{n} messages", timeout)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mosq_pub(port: int, *args: str) -> None:
    r = subprocess.run([require_tool("mosquitto_pub"), "-h", HOST, "-p", str(port), *args],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r


@pytest.mark.parametrize("version", [4, 5])
def test_paho_over_websockets_at_every_qos_with_tcp_clients(brokers, version):
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    ws = WsPaho(b.ports["ws"], unique_id("ws"), version=version)
    ws.connect()
    ws.subscribe("t/#", qos=2)
    tcp_sub = MosquittoSub(b, ["t/#"], "-v", qos=2)
    # TCP to WebSockets, at every QoS.
    for q in (0, 1, 2):
        mosq_pub(b.port, "-t", f"t/tcp/{q}", "-m", f"tcp {q}", "-q", str(q))
    got = ws.wait_messages(3)
    assert sorted((t, p, q) for t, p, q, _ in got) == [(f"t/tcp/{q}", f"tcp {q}".encode(), q) for q in (0, 1, 2)]
    assert tcp_sub.read_lines(3) == [f"t/tcp/{q} tcp {q}" for q in (0, 1, 2)]
    # WebSockets to TCP (and back to itself), a payload larger than a TCP segment too.
    big = b"x" * 200_000
    for q in (0, 1, 2):
        ws.client.publish(f"t/ws/{q}", f"ws {q}", qos=q)
    ws.client.publish("t/ws/big", big, qos=1)
    # (In any order: a QoS 2 message is routed once its flow allows.)
    assert sorted(tcp_sub.read_lines(4)) == [f"t/ws/{q} ws {q}" for q in (0, 1, 2)] + [f"t/ws/big {big.decode()}"]
    got = ws.wait_messages(7)
    assert (("t/ws/big", big, 1, False)) in got
    ws.close()
    tcp_sub.stop()


def test_wss_with_client_certificates_names_the_acl_user(brokers, pki, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    b = brokers(ANON_TCP + wss_listener(pki, mutual=True) + f"acl_file {acl}\n", ports=("port", "wss"))
    cert, key = pki.client("alice")
    alice = WsPaho(b.ports["wss"], unique_id("alice"), tls={"ca_certs": str(pki.ca), "certfile": str(cert),
                                                             "keyfile": str(key)})
    assert alice.connect() == 0
    alice.subscribe("alice/#", qos=1)
    alice.client.publish("bob/x", "not alice's", qos=1)
    b.wait_for_log(r"Denied PUBLISH from alice-\S+ to 'bob/x' \(ACL\)")  # as user alice, her CN
    alice.client.publish("alice/x", "hello", qos=1)
    got = alice.wait_messages(1)
    assert got == [("alice/x", b"hello", 1, False)]
    alice.close()
    # Without a client certificate the TLS handshake is refused.
    nocert = WsPaho(b.ports["wss"], unique_id("nocert"), tls={"ca_certs": str(pki.ca)})
    with pytest.raises((ssl.SSLError, OSError)):
        nocert.client.connect(HOST, b.ports["wss"], 30)
        # TLS 1.3 reports a refused client certificate on the first read.
        nocert.client.loop_forever(timeout=1.0, retry_first_connection=False)
        raise OSError("the connection closed")
    b.wait_for_log(r"TLS handshake")


def test_passwords_anonymous_access_and_per_listener_settings_on_websockets(brokers, tmp_path):
    passwd = tmp_path / "passwd"
    midge_passwd("-c", "-b", "-I", "1000", str(passwd), "dana", "s3cret")
    acl = tmp_path / "acl"
    acl.write_text("user dana\ntopic readwrite dana/#\n")
    b = brokers("per_listener_settings true\n" + ANON_TCP + WS
                + f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n", ports=("port", "ws"))
    anonymous = WsPaho(b.ports["ws"], unique_id("anon"), version=5)
    assert anonymous.connect() == 135  # 0x87 Not authorized
    anonymous.client.loop_stop()
    wrong = WsPaho(b.ports["ws"], unique_id("wrong"), version=5, username="dana", password="nope")
    assert wrong.connect() == 135  # 0x87 Not authorized, as mosquitto 2.0 answers a bad password
    wrong.client.loop_stop()
    dana = WsPaho(b.ports["ws"], unique_id("dana"), version=5, username="dana", password="s3cret")
    assert dana.connect() == 0
    dana.subscribe("dana/#", qos=1)
    dana.subscribe("other/#", qos=1)  # refused by the ACL (SUBACK 0x87)
    # The TCP listener's anonymous clients publish; dana reads only what the ACL gives her.
    mosq_pub(b.port, "-t", "other/x", "-m", "hidden", "-q", "1")
    mosq_pub(b.port, "-t", "dana/x", "-m", "visible", "-q", "1")
    assert dana.wait_messages(1) == [("dana/x", b"visible", 1, False)]
    dana.close()


def test_max_connections_counts_websocket_clients_per_listener_and_healthz_says_so(brokers):
    # As mosquitto: max_connections belongs to the listener above it.
    b = brokers(
        ANON_TCP + "max_connections 1\n" + WS + "max_connections 1\n" + HTTP, ports=("port", "ws", "http")
    )
    status, body = http_get(b.ports["http"], "/healthz")
    assert (status, body) == (200, "ok\n")
    first = WsPaho(b.ports["ws"], unique_id("first"))
    assert first.connect() == 0
    mark = b.mark()
    s = socket.create_connection((HOST, b.ports["ws"]), timeout=TIMEOUT)
    s.sendall(ws_client.upgrade_request())
    assert ws_client.read_response_head(s) == b"", "a connection past max_connections is closed at once"
    s.close()
    b.wait_for_log(r"denied: max_connections reached", since=mark)
    status, body = http_get(b.ports["http"], "/healthz")
    assert (status, body) == (200, "ok\n"), "the TCP listener still takes clients"
    tcp = RawClient(b.ports["port"], raw.V311)
    tcp.connect("tcp-one")
    status, body = http_get(b.ports["http"], "/healthz")
    assert (status, body) == (503, "max_connections reached\n")
    tcp.close()
    first.close()


# ---------------------------------------------------------------------------------------
# Frames, by hand
# ---------------------------------------------------------------------------------------

def ws_raw(port: int, version: int = raw.V311, protocols: str = "mqtt") -> RawClient:
    """A RawClient whose socket is a WebSocket."""
    c = RawClient.__new__(RawClient)
    c.version, c.buf, c.eof, c.reset = version, b"", False, False
    c.sock = ws_client.WsSocket(port, protocols=protocols)
    return c


def test_packets_split_across_frames_and_several_in_one_frame(brokers):
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"])
    assert c.sock.protocol == "mqtt"
    # CONNECT in three messages [MQTT-6.0.0-2].
    connect = raw.connect(unique_id("frames"))
    for part in (connect[:3], connect[3:10], connect[10:]):
        c.sock.send_raw(ws_client.frame(part))
    c.expect(CONNACK)
    # SUBSCRIBE, PUBLISH at QoS 1 and PINGREQ in one frame.
    c.sock.send_raw(ws_client.frame(raw.subscribe(1, [("f/#", 1)]) + raw.publish("f/one", b"1", qos=1, packet_id=7)
                                    + raw.pingreq()))
    got = [c.recv() for _ in range(4)]
    assert sorted(p.type for p in got) == sorted([SUBACK, PUBLISH, PUBACK, PINGRESP]), got
    own = next(p for p in got if p.type == PUBLISH)
    c.send(raw.puback(own.packet_id))
    # A PUBLISH in a fragmented message (a binary frame and a continuation frame), and one
    # packet's end and the next one's start in the same frame.
    p2 = raw.publish("f/two", b"2" * 300)
    p3 = raw.publish("f/three", b"3")
    c.sock.send_raw(ws_client.frame(p2[:100], ws_client.BINARY, fin=False))
    c.sock.send_raw(ws_client.frame(p2[100:] + p3[:4], ws_client.CONTINUATION, fin=True))
    c.sock.send_raw(ws_client.frame(p3[4:]))
    two, three = c.expect(PUBLISH), c.expect(PUBLISH)
    assert (two.topic, two.payload, three.topic, three.payload) == ("f/two", b"2" * 300, "f/three", b"3")
    c.send(raw.disconnect())
    c.wait_closed()


def test_a_large_publish_sent_right_after_connect_waits_for_the_login(brokers):
    """Before the login the broker reads a WebSocket client only so far (128 KiB past the
    handshake): a client that sends a PUBLISH of 1 MB right after its CONNECT, before the
    CONNACK, is read on once it has logged in; both come through."""
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"])
    big = b"b" * 1_000_000
    c.sock.send_raw(ws_client.frame(raw.connect(unique_id("eager"))))
    c.sock.send_raw(ws_client.frame(raw.publish("eager/t", big, qos=1, packet_id=3)))
    c.expect(CONNACK)
    assert c.expect(PUBACK).packet_id == 3
    c.send(raw.disconnect())
    c.wait_closed()


def test_a_text_frame_closes_the_connection(brokers):
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"])
    c.connect(unique_id("text"))
    mark = b.mark()
    c.sock.send_raw(ws_client.frame(b"PINGREQ", ws_client.TEXT))
    c.wait_closed()  # [MQTT-6.0.0-1]
    b.wait_for_log(r"text frame", since=mark)


def test_the_mqttv31_subprotocol_serves_mqtt_3_1_clients(brokers):
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"], version=raw.V31, protocols="mqttv3.1")
    assert c.sock.protocol == "mqttv3.1"
    c.connect(unique_id("old"))
    c.subscribe(1, [("old/#", 0)])
    c.publish("old/x", b"hi")
    assert c.expect(PUBLISH).payload == b"hi"


def test_malformed_and_oversized_handshakes_are_refused_and_the_broker_goes_on(brokers):
    b = brokers("websockets_headers_size 1024\n" + ANON_TCP + WS, ports=("port", "ws"))
    port = b.ports["ws"]

    def attempt(request: bytes) -> bytes:
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        try:
            s.sendall(request)
            head = ws_client.read_response_head(s)
            ws_client.wait_closed(s)
            return head
        finally:
            s.close()

    cases = {
        "garbage": b"\x10\x00\x00\x00 this is not HTTP\r\n\r\n",
        "not an upgrade": b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "no key": ws_client.upgrade_request().replace(b"Sec-WebSocket-Key", b"X-Nothing"),
        "bad version": ws_client.upgrade_request().replace(b"Version: 13", b"Version: 8"),
        "oversized": ws_client.upgrade_request(extra="Cookie: " + "c" * 2000 + "\r\n"),
    }
    for name, request in cases.items():
        mark = b.mark()
        head = attempt(request)
        assert not head.startswith(b"HTTP/1.1 101"), f"{name}: {head!r}"
        b.wait_for_log(r"failed: WebSocket handshake", since=mark)
        if name == "oversized":
            b.wait_for_log(r"larger than 1024 bytes \(websockets_headers_size\)", since=mark)
    # Without the mqtt subprotocol: 400 and why.
    mark = b.mark()
    head = attempt(ws_client.upgrade_request(protocols="chat"))
    assert head.startswith(b"HTTP/1.1 400"), head
    b.wait_for_log(r"did not ask for the mqtt subprotocol \(Sec-WebSocket-Protocol: chat\)", since=mark)
    head = attempt(ws_client.upgrade_request(protocols=None))
    assert head.startswith(b"HTTP/1.1 400"), head
    # A handshake just under the limit, from a path of its own, still works.
    request = ws_client.upgrade_request(path="/any/path", extra="X-Pad: " + "p" * 700 + "\r\n")
    assert len(request) < 1024
    s = socket.create_connection((HOST, port), timeout=TIMEOUT)
    s.sendall(request)
    assert ws_client.read_response_head(s).startswith(b"HTTP/1.1 101")
    s.close()
    c = ws_raw(port)
    c.connect(unique_id("after"))


# ---------------------------------------------------------------------------------------
# MQTT.js in Chromium
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_deps() -> Path:
    """tests/browser's npm packages (MQTT.js and playwright-core), installed from its lock file
    when missing; Debian's chromium."""
    require_program("/usr/bin/chromium", "apt-get install chromium chromium-driver")
    node = require_program("node", "install Node.js and npm")
    if not (BROWSER_DIR / "node_modules" / "mqtt" / "dist" / "mqtt.min.js").exists():
        npm = require_program("npm", "install Node.js and npm")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    return Path(node)


@pytest.fixture
def page_server():
    """tests/browser served over HTTP on a free localhost port."""
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(BROWSER_DIR), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_browser(node: Path, page_port: int, url: str, client_id: str, version: int) -> dict:
    page = f"http://{HOST}:{page_port}/mqttjs.html?url={url}&id={client_id}&version={version}"
    r = subprocess.run([str(node), str(BROWSER_DIR / "run.mjs"), page, "20000"], capture_output=True, text=True,
                       timeout=60, cwd=BROWSER_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mqttjs_in_chromium_over_ws_and_wss(brokers, pki, browser_deps, page_server):
    b = brokers(ANON_TCP + WS + wss_listener(pki), ports=("port", "ws", "wss"))
    mosq_pub(b.port, "-t", "web/retained", "-m", "from-tcp", "-r", "-q", "1")
    tcp_sub = MosquittoSub(b, ["web/browser/#"], "-v", qos=2)
    for scheme, port, version in (("ws", b.ports["ws"], 4), ("wss", b.ports["wss"], 5)):
        outcome = run_browser(browser_deps, page_server, f"{scheme}://127.0.0.1:{port}/mqtt", unique_id(scheme), version)
        assert outcome["error"] is None, outcome
        assert outcome["granted"] == [2]
        got = {m["topic"]: (m["payload"], m["qos"], m["retain"]) for m in outcome["received"]}
        assert got == {
            "web/retained": ("from-tcp", 1, True),
            **{f"web/browser/{q}": (f"from the browser at qos {q}", q, False) for q in (0, 1, 2)},
        }, outcome
        # The TCP client saw what the browser published.
        assert sorted(tcp_sub.read_lines(3)) == [f"web/browser/{q} from the browser at qos {q}" for q in (0, 1, 2)]
    tcp_sub.stop()


# ---------------------------------------------------------------------------------------
# $SYS
# ---------------------------------------------------------------------------------------

# Each topic's payload as mosquitto 2.0.11 writes it.
SYS_FORMATS = [
    (r"\$SYS/broker/version", r"(mosquitto|midge) version \S+"),
    (r"\$SYS/broker/uptime", r"\d+ seconds"),
    (r"\$SYS/broker/load/.*", r"\d+\.\d\d"),
    (r"\$SYS/broker/.*", r"\d+"),
]


def sys_snapshot(port: int, tool: str = "mosquitto_sub") -> dict[str, tuple[str, str]]:
    """The retained $SYS tree: {topic: (retain flag, payload)}, read once the broker has updated
    it at least once after this client connected (so it counts itself)."""
    # The next update after connecting: the retained uptime, then a fresh one.
    r = subprocess.run([require_tool("mosquitto_sub"), "-h", HOST, "-p", str(port), "-t", "$SYS/broker/uptime",
                        "-C", "2", "-W", "10"], capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r
    binary = require_tool("mosquitto_sub") if tool == "mosquitto_sub" else str(midge_bin())
    args = [binary] + ([] if tool == "mosquitto_sub" else ["sub"])
    r = subprocess.run(args + ["-h", HOST, "-p", str(port), "-t", "$SYS/#", "-F", "%r %t %p", "--retained-only",
                               "-W", "10"], capture_output=True, text=True, timeout=15)
    assert r.returncode in (0, 27), r
    out = {}
    for line in r.stdout.splitlines():
        flag, topic_and_payload = line.split(" ", 1)
        # Topics have no space but one: "retained messages/count".
        m = re.match(r"(\$SYS/broker/retained messages/count|\S+) (.*)", topic_and_payload)
        out[m.group(1)] = (flag, m.group(2))
    return out


def test_sys_tree_matches_mosquitto(brokers):
    ours = brokers(ANON_TCP + "sys_interval 1\n")
    theirs = brokers("listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n", mosquitto=True)
    for b in (ours, theirs):
        mosq_pub(b.port, "-t", "some/topic", "-m", "x", "-q", "1", "-r")
    midge_tree, mosquitto_tree = sys_snapshot(ours.port), sys_snapshot(theirs.port)
    assert set(midge_tree) == set(mosquitto_tree), (
        f"only in midge: {set(midge_tree) - set(mosquitto_tree)}; only in mosquitto: "
        f"{set(mosquitto_tree) - set(midge_tree)}")
    for tree in (midge_tree, mosquitto_tree):
        for topic, (flag, payload) in tree.items():
            assert flag == "1", f"{topic} is not retained"
            fmt = next(f for t, f in SYS_FORMATS if re.fullmatch(t, topic))
            assert re.fullmatch(fmt, payload), f"{topic} {payload!r} is not /{fmt}/"
    assert midge_tree["$SYS/broker/version"][1].startswith("midge version ")
    # midge sub shows the same tree as mosquitto_sub does.
    assert set(sys_snapshot(ours.port, tool="midge")) == set(midge_tree)
    # The counts move: the publish above, and this client.
    assert int(midge_tree["$SYS/broker/publish/messages/received"][1]) >= 1
    assert int(midge_tree["$SYS/broker/clients/connected"][1]) >= 1
    assert int(midge_tree["$SYS/broker/retained messages/count"][1]) >= 1


def test_sys_topics_follow_the_acl_and_sys_interval_0_turns_them_off(brokers, tmp_path):
    passwd = tmp_path / "passwd"
    midge_passwd("-c", "-b", "-I", "1000", str(passwd), "ops", "pw")
    midge_passwd("-b", "-I", "1000", str(passwd), "app", "pw")
    acl = tmp_path / "acl"
    acl.write_text("user ops\ntopic read $SYS/#\ntopic readwrite end/#\nuser app\ntopic readwrite end/#\n")
    b = brokers(f"listener {{port}} 127.0.0.1\npassword_file {passwd}\nacl_file {acl}\nsys_interval 1\n")
    for user, sees_sys in (("ops", True), ("app", False)):
        sub = MosquittoSub(b, ["$SYS/broker/version", "end/#"], "-v", "-u", user, "-P", "pw")
        mosq_pub(b.port, "-t", "end/x", "-m", "end", "-u", user, "-P", "pw")
        first = sub.read_lines(1)[0]
        assert first.startswith("$SYS/broker/version midge version") == sees_sys, (user, first)
        sub.stop()
    off = brokers(ANON_TCP + "sys_interval 0\n")
    sub = MosquittoSub(off, ["$SYS/#", "end/#"], "-v")
    mosq_pub(off.port, "-t", "end/x", "-m", "end")
    assert sub.read_lines(1) == ["end/x end"], "no $SYS topic with sys_interval 0"
    sub.stop()


# ---------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=TIMEOUT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def offline_overflow(b: ConfiguredBroker, queued: int, extra: int) -> None:
    """A persistent session that goes away, then `queued + extra` QoS 1 messages for it."""
    sub = MosquittoSub(b, ["over/#"], "-c", client_id="sleeper", qos=1)
    sub.stop()
    b.wait_for_log(r"Client sleeper (closed its connection|disconnected)")
    for i in range(queued + extra):
        mosq_pub(b.port, "-t", "over/x", "-m", str(i), "-q", "1")


def test_metrics_read_by_the_official_parser_and_healthz(brokers):
    parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus-client")
    b = brokers(ANON_TCP + WS + HTTP + "max_queued_messages 3\n", ports=("port", "ws", "http"))
    offline_overflow(b, 3, 2)
    sub = MosquittoSub(b, ["lat/#"], "-v", qos=1)
    for q in (0, 1, 2):
        mosq_pub(b.port, "-t", "lat/x", "-m", "m", "-q", str(q))
    sub.read_lines(3)
    status, text = http_get(b.ports["http"], "/metrics")
    assert status == 200
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}

    def sample(family: str, name: str | None = None, **labels) -> float:
        f = families[family]
        for s in f.samples:
            if s.name == (name or f.name) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no sample {name or family} {labels} in {f.samples}")

    assert families["midge_messages_received"].type == "counter"
    # 5 for the sleeper, one at each QoS for lat/#.
    assert sample("midge_messages_received", "midge_messages_received_total", qos="1") == 6
    assert sample("midge_messages_received", "midge_messages_received_total", qos="2") == 1
    assert sample("midge_messages_dropped", "midge_messages_dropped_total", reason="offline_queue_full") == 2
    assert sample("midge_messages_dropped", "midge_messages_dropped_total", reason="slow_consumer") == 0
    assert sample("midge_connections", listener=f"127.0.0.1:{b.ports['ws']}", protocol="ws") == 0
    assert sample("midge_connections", listener=f"127.0.0.1:{b.port}", protocol="mqtt") == 1
    assert sample("midge_subscriptions") == 2
    assert families["midge_delivery_latency_seconds"].type == "histogram"
    assert sample("midge_delivery_latency_seconds", "midge_delivery_latency_seconds_count") >= 3
    assert sample("midge_bytes_received", "midge_bytes_received_total") > 0
    assert http_get(b.ports["http"], "/healthz") == (200, "ok\n")
    assert http_get(b.ports["http"], "/nothing")[0] == 404
    sub.stop()


def test_a_real_prometheus_scrapes_midge(brokers, tmp_path):
    prometheus = require_program("prometheus", "apt-get install prometheus")
    b = brokers(ANON_TCP + HTTP, ports=("port", "http"))
    mosq_pub(b.port, "-t", "p/x", "-m", "1", "-q", "1")
    with socket.socket() as s:
        s.bind((HOST, 0))
        prom_port = s.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: midge\n    static_configs:\n      - targets: ['{HOST}:{b.ports['http']}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={HOST}:{prom_port}"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        query = urllib.parse.quote('midge_messages_received_total{qos="1"}')
        value = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                status, body = http_get(prom_port, f"/api/v1/query?query={query}")
            except OSError:
                status, body = 0, ""
            if status == 200:
                result = json.loads(body)["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    break
            time.sleep(0.2)  # Prometheus scrapes every second; poll its API until it has
        assert value == 1, (tmp_path / "prometheus.log").read_text()[-3000:]
        status, body = http_get(prom_port, "/api/v1/targets")
        target = json.loads(body)["data"]["activeTargets"][0]
        assert (target["health"], target["lastError"]) == ("up", ""), target
        # Every query of the sample Grafana dashboard is one Prometheus evaluates.
        dashboard = json.loads((GRAFANA_DASHBOARD).read_text())
        for panel in dashboard["panels"]:
            for t in panel["targets"]:
                expr = t["expr"].replace("$instance", ".*").replace("$__rate_interval", "1m")
                status, body = http_get(prom_port, f"/api/v1/query?query={urllib.parse.quote(expr)}")
                assert status == 200 and json.loads(body)["status"] == "success", (panel["title"], expr, body)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()



def test_http_dir_serves_its_files_beside_mqtt_over_websockets(brokers, tmp_path):
    """http_dir on a WebSockets listener, as mosquitto: plain HTTP requests get the files of
    that directory (a directory its index.html), never a file outside it; WebSocket clients
    on the same port are served as before."""
    site = tmp_path / "site"
    (site / "js").mkdir(parents=True)
    (site / "index.html").write_text("<h1>dashboard</h1>\n")
    (site / "js" / "app.js").write_text("connect('mqtt')\n")
    (tmp_path / "secret.txt").write_text("not for the web\n")
    (site / "leak").symlink_to(tmp_path / "secret.txt")
    b = brokers(ANON_TCP + WS + f"http_dir {site}\n", ports=("port", "ws"))
    ws = b.ports["ws"]
    assert http_get(ws, "/") == (200, "<h1>dashboard</h1>\n")
    assert http_get(ws, "/js/app.js?v=2") == (200, "connect('mqtt')\n")
    with urllib.request.urlopen(f"http://{HOST}:{ws}/js/app.js", timeout=TIMEOUT) as r:
        assert r.headers["Content-Type"] == "text/javascript"
    for outside in ("/../secret.txt", "/%2e%2e/secret.txt", "/leak", "/missing.html"):
        assert http_get(ws, outside)[0] == 404, outside
    request = urllib.request.Request(f"http://{HOST}:{ws}/", data=b"x", method="POST")
    try:
        urllib.request.urlopen(request, timeout=TIMEOUT)
        raise AssertionError("POST answered")
    except urllib.error.HTTPError as e:
        assert e.code == 405
    # A directory named without its slash: sent to it with one, as mosquitto does.
    c = http.client.HTTPConnection(HOST, ws, timeout=TIMEOUT)
    c.request("GET", "/js")
    r = c.getresponse()
    assert (r.status, r.getheader("Location")) == (301, "/js/")
    c.close()
    b.wait_for_log(r"HTTP GET /js/app.js\?v=2 from .*: 200\.")
    client = WsPaho(ws, unique_id("beside-files"))
    assert client.connect() == 0, "MQTT over WebSockets on the same port"
    client.close()
    # An upgrade request of 3,000 bytes (a browser's cookies), under websockets_headers_size
    # (4,096): read once to see what it asks for, it counts once against the limit.
    request = ws_client.upgrade_request(extra="Cookie: " + "c" * 2800 + "\r\n")
    assert 2900 < len(request) < 4096
    with socket.create_connection((HOST, ws), timeout=TIMEOUT) as s:
        s.sendall(request)
        assert ws_client.read_response_head(s).startswith(b"HTTP/1.1 101"), "a 3,000-byte handshake"


def test_an_http_dir_that_cannot_be_read_stops_the_broker(tmp_path):
    conf = tmp_path / "broker.conf"
    missing = tmp_path / "no-such-site"
    conf.write_text(f"listener {free_port()} 127.0.0.1\nprotocol websockets\nhttp_dir {missing}\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert f"unable to open http_dir {missing}" in r.stderr.decode(), r.stderr.decode()


def next_publish_with(c: raw.RawClient, needle: bytes, timeout: float = TIMEOUT) -> raw.Packet:
    """The next PUBLISH `c` receives whose payload has `needle` (others are passed over)."""
    deadline = time.monotonic() + timeout
    while True:
        p = c.expect(PUBLISH)
        if needle in p.payload:
            return p
        assert time.monotonic() < deadline, f"no PUBLISH with {needle!r} within {timeout} s"


def test_log_type_subscribe_and_unsubscribe_log_each_as_mosquitto(brokers):
    """log_type subscribe and unsubscribe, as mosquitto: a line per subscription (CLIENT QOS
    FILTER) and per unsubscription (CLIENT FILTER); with log_dest topic, on
    $SYS/broker/log/M/subscribe and M/unsubscribe."""
    b = brokers(ANON_TCP + "log_dest stderr\nlog_dest topic\nlog_type subscribe\nlog_type unsubscribe\n")
    watcher = raw.RawClient(b.port, raw.V5)
    watcher.connect("m-watcher")
    watcher.subscribe(1, [("$SYS/broker/log/M/#", 2)])
    c = raw.RawClient(b.port, raw.V311)
    c.connect("m-client")
    c.subscribe(1, [("a/+/b", 1)])
    c.send(raw.unsubscribe(2, ["a/+/b"], raw.V311))
    c.expect(raw.UNSUBACK)
    b.wait_for_log(r"\d+: m-client 1 a/\+/b$")
    b.wait_for_log(r"\d+: m-client a/\+/b$")
    lines = [next_publish_with(watcher, b"m-client") for _ in range(2)]
    got = [(p.topic, re.sub(rb"^\d+: ", b"", p.payload), p.qos) for p in lines]
    assert got == [("$SYS/broker/log/M/subscribe", b"m-client 1 a/+/b", 2),
                   ("$SYS/broker/log/M/unsubscribe", b"m-client a/+/b", 2)], got


def test_log_dest_topic_publishes_log_lines_on_sys_broker_log(brokers):
    """log_dest topic, as mosquitto: each line (not the debug ones) a QoS 2 message on
    $SYS/broker/log/N (clients coming and going), I, W or E, not retained, expiring after 20 s."""
    b = brokers(ANON_TCP + "log_dest stderr\nlog_dest topic\n")
    watcher = raw.RawClient(b.port, raw.V5)
    watcher.connect("log-watcher")
    watcher.subscribe(1, [("$SYS/broker/log/#", 2)])
    other = raw.RawClient(b.port, raw.V311)
    other.connect("log-visitor")
    p = next_publish_with(watcher, b"as log-visitor")
    assert p.topic == "$SYS/broker/log/N" and p.qos == 2 and not p.retain, p
    assert 0 < p.props.get("MessageExpiryInterval", 0) <= 20, p
    assert re.match(rb"\d+: New client connected from 127\.0\.0\.1:\d+ as log-visitor", p.payload), p.payload


def test_max_packet_size_bounds_each_packet_of_a_websocket_message_not_the_message(brokers):
    """With max_packet_size 1000, three PUBLISH packets of 600 bytes in one WebSocket frame
    (allowed: [MQTT-6.0.0-2]) are each acknowledged, as by mosquitto (midge bounded the frame
    by max_packet_size and closed the connection); one packet of 1,500 bytes in a frame gets
    DISCONNECT 0x95 Packet too large (5.0), as over TCP."""
    b = brokers(ANON_TCP + "max_packet_size 1000\n" + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"], version=raw.V5)
    c.connect(unique_id("batch"))
    body = b"p" * 580
    c.sock.send_raw(ws_client.frame(b"".join(raw.publish("batch/t", body, qos=1, packet_id=i, version=raw.V5)
                                             for i in (1, 2, 3))))
    assert [c.expect(PUBACK).packet_id for _ in range(3)] == [1, 2, 3]
    c.sock.send_raw(ws_client.frame(raw.publish("batch/t", b"q" * 1500, qos=1, packet_id=4, version=raw.V5)))
    d = c.expect(raw.DISCONNECT)
    assert d.reason == 0x95, d


def test_a_scraper_that_never_reads_its_answers_is_let_go(brokers):
    """16 connections (the cap for one address) that pipeline GET /metrics and never read
    the answers are closed once an answer has waited 10 s to be read (hyper's timer is for
    reading only: they held their places for good, and /healthz from that address failed
    for as long); /healthz from the address answers again."""
    b = brokers(ANON_TCP + HTTP, ports=("port", "http"))
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 64
    hogs = []
    for _ in range(16):
        s = socket.create_connection((HOST, b.ports["http"]))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(1)
        hogs.append(s)
    closed, deadline = set(), time.monotonic() + 40
    while len(closed) < len(hogs):
        assert time.monotonic() < deadline, f"{len(hogs) - len(closed)} connections still held after 40 s"
        for i, s in enumerate(hogs):
            if i in closed:
                continue
            try:
                s.send(request)
            except (BrokenPipeError, ConnectionResetError):
                closed.add(i)
            except socket.timeout:
                pass
        time.sleep(0.2)  # poll interval: sending until the broker lets the connection go
    for s in hogs:
        s.close()
    assert http_get(b.ports["http"], "/healthz")[0] == 200


def test_a_connection_that_ends_before_connect_says_why_in_the_log(brokers):
    """A CONNECT in a text frame ([MQTT-6.0.0-1]) closes the connection with a log line
    naming it, and so does a client that goes before sending CONNECT (mosquitto: "Client
    <unknown> closed its connection."); midge logged only the new connection."""
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    c = ws_raw(b.ports["ws"])
    mark = b.mark()
    c.sock.send_raw(ws_client.frame(raw.connect(unique_id("text")), ws_client.TEXT))
    c.wait_closed()
    b.wait_for_log(r"Socket error on client \S+ before CONNECT: .*text frame.*, closing\.", since=mark)
    mark = b.mark()
    with socket.create_connection((HOST, b.port)):
        pass
    b.wait_for_log(r"Client \S+ closed its connection before CONNECT\.", since=mark)


def vm_size_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))


def test_a_frame_costs_what_arrives_of_it_not_what_its_header_announces(brokers):
    """tungstenite reserves a frame's announced length from its header: 20 logged-in clients
    that each sent the 14-byte header of a 250 MB frame (under the default max_packet_size)
    took 4.8 GB of address space, and under `ulimit -v` 2 GiB, 8 of them aborted the broker.
    midge hands a large frame on in pieces of 64 KiB: the address space barely moves. A
    large message in one frame, and one in two fragments, still come through whole."""
    b = brokers(ANON_TCP + WS, ports=("port", "ws"))
    before = vm_size_kb(b.proc.pid)
    announcing = []
    for i in range(20):
        c = ws_raw(b.ports["ws"])
        c.connect(unique_id(f"announce{i}"))
        c.sock.send_raw(bytes([0x82, 0x80 | 127]) + (250_000_000).to_bytes(8, "big") + b"\0\0\0\0" + b"\x30")
        announcing.append(c)
    sub = ws_raw(b.ports["ws"])
    sub.connect(unique_id("whole"))
    sub.subscribe(1, [("whole/#", 0)])
    # An event that must not happen: watched for 1.5 s (the reservation took milliseconds).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        grown = vm_size_kb(b.proc.pid) - before
        assert grown < 1_000_000, f"address space grew by {grown} kB for 20 frame headers"
        time.sleep(0.05)
    big = bytes(range(256)) * 12_000  # 3 MB, through pieces of 64 KiB
    pub = ws_raw(b.ports["ws"])
    pub.connect(unique_id("bigpub"))
    pub.sock.send_raw(ws_client.frame(raw.publish("whole/one", big)))
    two = raw.publish("whole/two", big[:500_000])
    pub.sock.send_raw(ws_client.frame(two[:300_000], ws_client.BINARY, fin=False))
    pub.sock.send_raw(ws_client.frame(two[300_000:], ws_client.CONTINUATION, fin=True))
    one, second = sub.expect(PUBLISH, timeout=20), sub.expect(PUBLISH, timeout=20)
    assert (one.topic, one.payload == big) == ("whole/one", True)
    assert (second.topic, second.payload == big[:500_000]) == ("whole/two", True)
