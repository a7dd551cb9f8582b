"""midge inspect against real traffic (issue #6): captures made here with tcpdump on lo of
mosquitto_pub / mosquitto_sub talking to the midge broker and to the mosquitto broker, decoded
by `midge inspect --json` and compared packet by packet, field by field, with tshark's MQTT
dissector on the same file; the clear-text credential finding; a TLS stream reported as
encrypted with its SNI; live capture (`midge inspect --interface lo`) stopped with SIGINT; and
the errors of live capture without tcpdump or without the capability to capture.

tcpdump and tshark are required: their absence fails these tests (never a skip). tcpdump
runs with --immediate-mode (without it, packets still in the kernel's buffer are lost when
tcpdump is stopped) and as root (-Z root) so that it may write into pytest's directories. A
capture in which the kernel dropped packets (tcpdump says so when it stops) is made again:
the comparisons need every packet.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import HOST, free_port, midge_bin, mosquitto_broker_binary, require_program, require_tool

TYPES = {
    "CONNECT": 1, "CONNACK": 2, "PUBLISH": 3, "PUBACK": 4, "PUBREC": 5, "PUBREL": 6, "PUBCOMP": 7,
    "SUBSCRIBE": 8, "SUBACK": 9, "UNSUBSCRIBE": 10, "UNSUBACK": 11, "PINGREQ": 12, "PINGRESP": 13,
    "DISCONNECT": 14, "AUTH": 15,
}
LEVELS = {"3.1": 3, "3.1.1": 4, "5.0": 5}
PASSWORDS = {"alice": "s3cret-alice", "bob": "hunter2-bob"}


def require_capture_tool(name: str) -> str:
    return require_program(name, "these tests capture traffic with tcpdump and compare midge inspect with "
                                 f"tshark's dissector; Debian/Ubuntu: apt-get install {name}")


@pytest.fixture(autouse=True)
def _tools():
    require_capture_tool("tcpdump")
    require_capture_tool("tshark")
    require_tool("mosquitto_pub")
    require_tool("mosquitto_sub")


# ---------------------------------------------------------------------------------------
# Capturing
# ---------------------------------------------------------------------------------------

class Capture:
    """`tcpdump -i lo -w FILE -U --immediate-mode 'tcp port P or ...'` until stop()."""

    def __init__(self, path: Path, ports: list[int], iface: str = "lo"):
        self.path = path
        cmd = [require_capture_tool("tcpdump"), "-i", iface, "-n", "-w", str(path), "-U", "--immediate-mode"]
        if os.geteuid() == 0:
            cmd += ["-Z", "root"]
        cmd.append(" or ".join(f"tcp port {p}" for p in ports))
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.listening.wait(10):
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{cmd} did not start listening within 10 s: {self.lines}", pytrace=False)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self.listening.set()
        self.listening.set()

    def stop(self) -> int:
        """SIGINT; returns how many packets the kernel dropped."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"tcpdump did not stop on SIGINT: {self.lines}", pytrace=False)
        self._reader.join(5)
        assert rc == 0, f"tcpdump exited {rc}: {self.lines}"
        dropped = [int(m.group(1)) for line in self.lines if (m := re.match(r"(\d+) packets? dropped by kernel", line))]
        return dropped[0] if dropped else 0


def captured(tmp_path: Path, name: str, ports: list[int], scenario, attempts: int = 3) -> tuple[Path, object]:
    """Runs `scenario(attempt)` under a capture; again when the kernel dropped packets.
    Returns the capture file and what the scenario returned."""
    for attempt in range(attempts):
        path = tmp_path / f"{name}-{attempt}.pcap"
        cap = Capture(path, ports)
        try:
            result = scenario(attempt)
        finally:
            dropped = cap.stop()
        if dropped == 0:
            return path, result
    pytest.fail(f"the kernel dropped packets in {attempts} captures in a row", pytrace=False)


# ---------------------------------------------------------------------------------------
# The brokers and the clients
# ---------------------------------------------------------------------------------------

def wait_accepting(port: int, proc: subprocess.Popen, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}) before listening on {port}", pytrace=False)
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # poll interval: the listener is not open yet
    pytest.fail(f"{what} is not listening on {port} after {timeout} s", pytrace=False)


@pytest.fixture
def mosquitto_broker(tmp_path):
    """Starts /usr/sbin/mosquitto on a free port (anonymous clients allowed); returns the port."""
    procs: list[subprocess.Popen] = []

    def start() -> int:
        broker = mosquitto_broker_binary()
        port = free_port()
        conf = tmp_path / f"mosquitto-{port}.conf"
        lines = [f"listener {port} {HOST}", "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        log = open(tmp_path / f"mosquitto-{port}.log", "wb")
        proc = subprocess.Popen([broker, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        procs.append(proc)
        wait_accepting(port, proc, "mosquitto")
        return port

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pub(port: int, version: str, *args: str, tls: list[str] | None = None) -> None:
    cmd = [require_tool("mosquitto_pub"), "-p", str(port), "-V", version, *(tls or ["-h", HOST]), *args]
    r = subprocess.run(cmd, capture_output=True, timeout=15)
    assert r.returncode == 0, f"{cmd}: {r.stderr.decode(errors='replace')}"


def pub_sub_scenario(port: int, version: str, prefix: str) -> dict:
    """A retained message, a subscriber (QoS 2, user bob) that gets it and three more (QoS 0,
    1, 2 from user alice), then the retained message cleared. Returns the client ids."""
    ids = {"retain": f"{prefix}-r", "sub": f"{prefix}-s", "pub": f"{prefix}-p", "clear": f"{prefix}-c"}
    v5_props = ["-D", "publish", "user-property", "site", "lab"] if version == "5" else []
    pub(port, version, "-i", ids["retain"], "-u", "alice", "-P", PASSWORDS["alice"], "-t", f"{prefix}/retained",
        "-m", "r0", "-r", "-q", "1")
    sub_cmd = [require_tool("mosquitto_sub"), "-h", HOST, "-p", str(port), "-V", version, "-i", ids["sub"],
               "-u", "bob", "-P", PASSWORDS["bob"], "-t", f"{prefix}/#", "-q", "2", "-C", "4", "-v"]
    if version == "5":
        sub_cmd += ["-D", "connect", "session-expiry-interval", "30"]
    sub = subprocess.Popen(sub_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert sub.stdout is not None
        first = sub.stdout.readline().decode()  # the retained message: the subscription is in place
        assert first.startswith(f"{prefix}/retained"), f"subscriber printed {first!r}: {sub.stderr.read()}"
        for qos in (0, 1, 2):
            pub(port, version, "-i", f"{ids['pub']}{qos}", "-u", "alice", "-P", PASSWORDS["alice"],
                "-t", f"{prefix}/q{qos}", "-m", f"message at QoS {qos}", "-q", str(qos), *v5_props)
        rest = sub.communicate(timeout=15)[0].decode().splitlines()
        assert len(rest) == 3, rest
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    pub(port, version, "-i", ids["clear"], "-t", f"{prefix}/retained", "-n", "-r")
    return ids


# ---------------------------------------------------------------------------------------
# midge inspect and tshark, normalised to the same fields
# ---------------------------------------------------------------------------------------

def inspect(path: Path, ports: list[int], *extra: str) -> list[dict]:
    cmd = [str(midge_bin()), "inspect", "--json", *[a for p in ports for a in ("--port", str(p))], *extra, str(path)]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    objects = [json.loads(line) for line in r.stdout.decode().splitlines()]
    # Exit code 1 when a finding (credentials in clear text) was reported, 0 with notes only.
    found = any(o["type"] == "finding" and o["severity"] == "warning" for o in objects)
    assert r.returncode == (1 if found else 0), f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return objects


def hexcolon(data) -> str:
    if isinstance(data, dict):
        raw = bytes.fromhex(data["hex"])
    else:
        raw = data.encode()
    return ":".join(f"{b:02x}" for b in raw)


def norm_midge(p: dict) -> dict:
    f, name = p["fields"], p["packet"]
    d = {"frame": p["frame"], "time": f"{p['time']:.6f}", "type": TYPES[name]}
    if name == "PUBLISH":
        d.update(topic=f["topic"], qos=f["qos"], retain=int(f["retain"]), dup=int(f["dup"]),
                 payload=hexcolon(f["payload"]))
        if f["qos"] > 0:
            d["msgid"] = f["packet_id"]
    elif name == "CONNECT":
        d.update(clientid=f["client_id"], level=LEVELS[f["version"]],
                 clean=int(f.get("clean_session", f.get("clean_start"))), keepalive=f["keep_alive"],
                 username=f.get("username"), password=f.get("password"))
    elif name == "CONNACK":
        d.update(code=(f.get("reason") or f.get("return_code"))["code"], sp=int(f["session_present"]))
    elif name == "SUBSCRIBE":
        d.update(msgid=f["packet_id"], topics=[s["filter"] for s in f["subscriptions"]],
                 qos=[s["qos"] for s in f["subscriptions"]])
    elif name in ("SUBACK", "UNSUBACK"):
        d.update(msgid=f["packet_id"], codes=[c["code"] for c in f.get("reason_codes", [])])
    elif name == "UNSUBSCRIBE":
        d.update(msgid=f["packet_id"], topics=f["filters"])
    elif name in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP"):
        d["msgid"] = f["packet_id"]
    return d


def tshark_mqtt(path: Path, ports: list[int]) -> list[dict]:
    cmd = [require_capture_tool("tshark"), "-r", str(path), "-Y", "mqtt", "-T", "pdml"]
    for p in ports:
        cmd += ["-d", f"tcp.port=={p},mqtt"]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, f"{cmd}: {r.stderr.decode(errors='replace')}"
    out = []
    for packet in ET.fromstring(r.stdout).iter("packet"):
        frame_fields = {f.get("name"): f.get("show") for f in packet.iter("field") if f.get("name", "").startswith("frame.")}
        for proto in packet.findall("proto"):
            if proto.get("name") != "mqtt":
                continue
            fields: dict[str, list[str]] = {}
            for f in proto.iter("field"):
                if f.get("name"):
                    fields.setdefault(f.get("name"), []).append(f.get("show"))
            out.append(norm_tshark(int(frame_fields["frame.number"]), float(frame_fields["frame.time_relative"]), fields))
    return out


def norm_tshark(frame: int, time_rel: float, f: dict[str, list[str]]) -> dict:
    one = lambda name, default=None: f[name][0] if name in f else default  # noqa: E731
    ints = lambda name: [int(x, 0) for x in f.get(name, [])]  # noqa: E731
    t = int(one("mqtt.msgtype"))
    d = {"frame": frame, "time": f"{time_rel:.6f}", "type": t}
    if t == 3:
        d.update(topic=one("mqtt.topic"), qos=int(one("mqtt.qos")), retain=int(one("mqtt.retain")),
                 dup=int(one("mqtt.dupflag")), payload=one("mqtt.msg", ""))
        if d["qos"] > 0:
            d["msgid"] = int(one("mqtt.msgid"))
    elif t == 1:
        d.update(clientid=one("mqtt.clientid"), level=int(one("mqtt.ver")), clean=int(one("mqtt.conflag.cleansess")),
                 keepalive=int(one("mqtt.kalive")), username=one("mqtt.username"), password=one("mqtt.passwd"))
    elif t == 2:
        d.update(code=int(one("mqtt.connack.reason_code", one("mqtt.conack.val"))), sp=int(one("mqtt.conack.flags.sp", "0")))  # 3.1 has no flag
    elif t == 8:
        d.update(msgid=int(one("mqtt.msgid")), topics=f.get("mqtt.topic", []),
                 qos=ints("mqtt.sub.qos") or ints("mqtt.subscription_options_qos"))
    elif t == 9:
        d.update(msgid=int(one("mqtt.msgid")), codes=ints("mqtt.suback.qos") or ints("mqtt.suback.reason_code"))
    elif t == 11:
        d.update(msgid=int(one("mqtt.msgid")), codes=ints("mqtt.unsuback.reason_code"))
    elif t == 10:
        d.update(msgid=int(one("mqtt.msgid")), topics=f.get("mqtt.topic", []))
    elif t in (4, 5, 6, 7):
        d["msgid"] = int(one("mqtt.msgid"))
    return d


def compare_with_tshark(path: Path, ports: list[int]) -> list[dict]:
    """midge inspect --reveal and tshark on the same file: the same packets, field by field.
    Returns midge's JSON objects (passwords revealed)."""
    objects = inspect(path, ports, "--reveal")
    ours = [norm_midge(o) for o in objects if o["type"] == "packet" and o["protocol"] == "MQTT"]
    theirs = tshark_mqtt(path, ports)
    assert len(ours) == len(theirs), (
        f"midge decoded {len(ours)} MQTT packets, tshark {len(theirs)}:\n"
        + "\n".join(f"{a}\n{b}\n" for a, b in zip(ours, theirs))
    )
    for a, b in zip(ours, theirs):
        assert a == b, f"\nmidge:  {a}\ntshark: {b}"
    assert ours, "no MQTT packet in the capture"
    return objects


def by_type(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["type"] == kind]


def connects(objects: list[dict]) -> list[dict]:
    return [o for o in by_type(objects, "packet") if o["packet"] == "CONNECT"]


# ---------------------------------------------------------------------------------------
# Decoding compared with tshark
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_decoded_like_tshark_midge_broker(broker, tmp_path, version):
    path, ids = captured(tmp_path, f"midge-{version}", [broker.port],
                         lambda a: pub_sub_scenario(broker.port, version, f"in{version}-{a}"))
    objects = compare_with_tshark(path, [broker.port])
    check_session(objects, ids, broker.port, version)


@pytest.mark.parametrize("version", ["311", "5"])
def test_decoded_like_tshark_mosquitto_broker(mosquitto_broker, tmp_path, version):
    port = mosquitto_broker()
    path, ids = captured(tmp_path, f"mosquitto-{version}", [port],
                         lambda a: pub_sub_scenario(port, version, f"mq{version}-{a}"))
    objects = compare_with_tshark(path, [port])
    check_session(objects, ids, port, version)


def check_session(objects: list[dict], ids: dict, port: int, version: str) -> None:
    """What the scenario must show, beyond agreeing with tshark."""
    packets = by_type(objects, "packet")
    expected_version = {"31": "3.1", "311": "3.1.1", "5": "5.0"}[version]
    assert {p["version"] for p in packets} == {expected_version}
    sub_id = ids["sub"]
    sub_packets = [p for p in packets if p["client_id"] == sub_id]
    names = [p["packet"] for p in sub_packets]
    assert names[:4] == ["CONNECT", "CONNACK", "SUBSCRIBE", "SUBACK"], names
    delivered = [p["fields"]["topic"] for p in sub_packets if p["packet"] == "PUBLISH"]
    prefix = ids["sub"][:-2]
    assert sorted(delivered) == sorted(f"{prefix}/{t}" for t in ("retained", "q0", "q1", "q2")), delivered
    # Every CONNECT with a password is a finding, in the words, from the client's
    # address to the broker's.
    findings = by_type(objects, "finding")
    with_password = [c for c in connects(objects) if "password" in c["fields"]]
    assert len(with_password) == 5  # the retained message, the subscriber, three publishers
    messages = {f["message"] for f in findings}
    for c in with_password:
        user = c["fields"]["username"]
        assert c["fields"]["password"] == PASSWORDS[user]  # --reveal
        assert f"password for user '{user}' sent in clear text from {c['src']} to 127.0.0.1:{port}" in messages
    assert all(f["password"] in PASSWORDS.values() for f in findings)
    summary = by_type(objects, "summary")[-1]
    assert {c["client_id"] for c in summary["clients"]} >= {sub_id, ids["retain"], ids["clear"]}
    topics = {t["topic"]: t["messages"] for t in summary["topics"]}
    # Published once and delivered once, except the retained message: published twice
    # (set and cleared) and delivered once.
    assert topics[f"{prefix}/q1"] == 2 and topics[f"{prefix}/retained"] == 3, topics
    assert summary["packets"]["CONNECT"] == 6


def test_passwords_are_masked_unless_revealed(broker, tmp_path):
    path, _ = captured(tmp_path, "mask", [broker.port],
                       lambda a: pub(broker.port, "311", "-u", "alice", "-P", PASSWORDS["alice"], "-t", "m/1",
                                     "-m", "x", "-i", f"mask-{a}"))
    text = subprocess.run([str(midge_bin()), "inspect", "--port", str(broker.port), str(path)],
                          capture_output=True, timeout=60)
    assert text.returncode == 1, text.stderr  # a finding: the exit code says so
    out = text.stdout.decode()
    assert PASSWORDS["alice"] not in out
    assert "password='********'" in out
    assert re.search(rf"!! password for user 'alice' sent in clear text from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:{broker.port}\n", out), out
    assert "Findings:\n  warning: password for user 'alice' sent in clear text" in out
    assert PASSWORDS["alice"] not in json.dumps(inspect(path, [broker.port]))
    revealed = subprocess.run([str(midge_bin()), "inspect", "-v", "--reveal", "--port", str(broker.port), str(path)],
                              capture_output=True, timeout=60).stdout.decode()
    assert f"password='{PASSWORDS['alice']}'" in revealed
    assert "                  protocol_name: 'MQTT'" in revealed  # -v: every field


def test_default_port_1883_needs_no_port_option(broker_factory, tmp_path):
    """Port 1883 is decoded without --port (this test needs 1883 free on 127.0.0.1)."""
    try:
        with socket.socket() as s:
            s.bind((HOST, 1883))
    except OSError as e:
        pytest.fail(f"port 1883 on {HOST} is in use ({e}): this test runs a broker there", pytrace=False)
    b = broker_factory(f"listener 1883 {HOST}")  # a second listener, on 1883
    wait_accepting(1883, b.proc, "midge (listener on 1883)")
    path, _ = captured(tmp_path, "p1883", [1883],
                       lambda a: pub(1883, "5", "-u", "carol", "-P", "pw", "-t", "d/1", "-m", "x", "-i", f"d1883-{a}"))
    objects = compare_with_tshark(path, [])
    finding = by_type(objects, "finding")
    assert len(finding) == 1 and re.fullmatch(
        r"password for user 'carol' sent in clear text from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:1883", finding[0]["message"])
    # A user name alone is a finding too.
    path, _ = captured(tmp_path, "user1883", [1883],
                       lambda a: pub(1883, "311", "-u", "dave", "-t", "d/2", "-m", "x", "-i", f"u1883-{a}"))
    finding = by_type(inspect(path, []), "finding")
    assert len(finding) == 1 and finding[0]["message"].startswith("user name 'dave' sent in clear text from 127.0.0.1:")


def test_tls_stream_is_reported_encrypted(broker_factory, tmp_path):
    pki = tmp_path / "pki"
    for args in (["init"], ["server", "--host", "localhost", "--ip", "127.0.0.1"]):
        r = subprocess.run([str(midge_bin()), "cert", "--dir", str(pki), *args], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    tls_port = free_port()
    b = broker_factory(f"listener {tls_port} {HOST}", f"certfile {pki / 'servers' / 'localhost.crt'}",
                       f"keyfile {pki / 'servers' / 'localhost.key'}")
    wait_accepting(tls_port, b.proc, "midge (TLS listener)")
    tls_args = ["-h", "localhost", "--cafile", str(pki / "ca.crt")]

    def scenario(a: int) -> None:
        pub(tls_port, "311", "-u", "alice", "-P", PASSWORDS["alice"], "-t", "tls/1", "-m", "secret payload",
            "-i", f"tls-{a}", tls=tls_args)
        pub(b.port, "311", "-u", "alice", "-P", PASSWORDS["alice"], "-t", "plain/1", "-m", "x", "-i", f"plain-{a}")

    # Both ports given as MQTT ports: TLS is recognised by its handshake all the same.
    path, _ = captured(tmp_path, "tls", [tls_port, b.port], scenario)
    objects = inspect(path, [tls_port, b.port])
    packets = by_type(objects, "packet")
    tls = [p for p in packets if p["protocol"] == "TLS"]
    assert [p["packet"] for p in tls][:2] == ["ClientHello", "ServerHello"], tls
    assert tls[0]["fields"]["sni"] == "localhost"
    # Nothing inside the TLS stream is decoded: the MQTT packets are the plain client's.
    mqtt = [p for p in packets if p["protocol"] == "MQTT"]
    assert mqtt and all(p["broker"] == f"127.0.0.1:{b.port}" for p in mqtt)
    findings = by_type(objects, "finding")
    encrypted = [f for f in findings if f["kind"] == "encrypted"]
    clear = [f for f in findings if f["kind"] == "cleartext_password"]
    assert len(encrypted) == 1 and encrypted[0]["broker"] == f"127.0.0.1:{tls_port}"
    assert encrypted[0]["sni"] == "localhost"
    assert re.fullmatch(rf"encrypted stream from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:{tls_port} "
                        rf"\(TLS 1\.[23], SNI 'localhost'\): not decoded", encrypted[0]["message"])
    assert len(clear) == 1 and clear[0]["broker"] == f"127.0.0.1:{b.port}"
    # tshark reads the same server name and version from the hellos.
    fields = subprocess.run(
        [require_capture_tool("tshark"), "-r", str(path), "-Y", "tls.handshake.type == 1 || tls.handshake.type == 2",
         "-T", "fields", "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.extensions.supported_version"],
        capture_output=True, timeout=60).stdout.decode().splitlines()
    assert fields[0].split("\t")[0] == "localhost", fields
    chosen = int(fields[1].split("\t")[1], 16)
    assert encrypted[0]["tls_version"] == {0x0304: "TLS 1.3", 0x0303: "TLS 1.2"}[chosen]
    # The same capture as pcapng (editcap, from tshark's package) reads the same.
    ng = tmp_path / "tls.pcapng"
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.fail("editcap is not installed (it comes with tshark: apt-get install tshark)", pytrace=False)
    subprocess.run([editcap, "-F", "pcapng", str(path), str(ng)], check=True, timeout=60)
    assert inspect(ng, [tls_port, b.port]) == objects

    # Issue 20, item 5: in text, `!!` marks the password in clear only; the encrypted stream
    # is a note (`--`, under Notes). A capture of TLS alone has no finding: exit code 0.
    text = subprocess.run([str(midge_bin()), "inspect", "--port", str(tls_port), "--port", str(b.port), str(path)],
                          capture_output=True, timeout=60)
    out = text.stdout.decode()
    assert text.returncode == 1, out
    marks = sorted(line.split()[2] for line in out.splitlines() if re.match(r"\s*\d+\s+\d+\.\d+ (!!|--) ", line))
    assert marks == ["!!", "--"], out
    assert re.search(rf" -- encrypted stream from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:{tls_port} ", out), out
    assert re.search(rf" !! password for user 'alice' sent in clear text from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:{b.port}\n",
                     out), out
    assert re.search(r"\nFindings:\n  warning: password for user 'alice'.*\nNotes:\n  info: encrypted stream", out), out
    only_tls, _ = captured(tmp_path, "tls-only", [tls_port], lambda a: pub(
        tls_port, "311", "-u", "alice", "-P", PASSWORDS["alice"], "-t", "tls/2", "-m", "x", "-i", f"tls-only-{a}",
        tls=tls_args))
    text = subprocess.run([str(midge_bin()), "inspect", "--port", str(tls_port), str(only_tls)],
                          capture_output=True, timeout=60)
    out = text.stdout.decode()
    assert text.returncode == 0, out
    assert "!!" not in out and "\nFindings: none\nNotes:\n  info: encrypted stream" in out, out


def test_inspect_help_tells_the_marks_and_the_exit_codes():
    out = subprocess.run([str(midge_bin()), "inspect", "--help"], capture_output=True, timeout=30).stdout.decode()
    text = " ".join(out.split())
    assert "Findings (credentials sent in clear text) are marked !!" in text, out
    assert "Exit status: 0 when nothing was found (notes allowed); 1 when a finding was reported" in text, out


def test_empty_client_ids_are_shown_as_what_they_mean(broker, tmp_path):
    """Issue 20, item 6: mosquitto_pub 2.0 sends an empty client id (3.1.1 and 5.0); inspect
    shows what it means, and for 5.0 the id the broker assigned, from its CONNACK on."""
    def scenario(a: int) -> None:
        pub(broker.port, "311", "-t", "e/311", "-m", "x")
        pub(broker.port, "5", "-t", "e/5", "-m", "x")

    path, _ = captured(tmp_path, "empty-ids", [broker.port], scenario)
    r = subprocess.run([str(midge_bin()), "inspect", "--port", str(broker.port), str(path)],
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "''" not in out.split("\nSummary:")[0].replace("client_id=''", ""), out
    lines = out.splitlines()
    v311 = [line for line in lines if "version='3.1.1'" in line]
    assert len(v311) == 1 and " (empty: the broker assigns one) CONNECT " in v311[0], out
    publish_311 = next(line for line in lines if "topic='e/311'" in line)
    assert " (empty: the broker assigns one) PUBLISH " in publish_311, out
    publish_5 = next(line for line in lines if "topic='e/5'" in line)
    assigned = re.search(r"→ \S+ (\S+) PUBLISH", publish_5).group(1)
    assert assigned.startswith("auto-"), publish_5  # midge's assigned ids
    assert re.search(rf"\nClients:\n  \(empty: the broker assigns one\)\s+127\.0\.0\.1:\d+ → .*MQTT 3\.1\.1\n"
                     rf"  {re.escape(assigned)}\s+127\.0\.0\.1:\d+ → .*MQTT 5\.0\n", out), out


# ---------------------------------------------------------------------------------------
# Live capture
# ---------------------------------------------------------------------------------------

def test_live_capture_prints_packets_as_they_come(broker, tmp_path):
    cmd = [str(midge_bin()), "inspect", "--interface", "lo", "--port", str(broker.port)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_lines: list[str] = []
    err_lines: list[str] = []
    started = threading.Event()
    seen = threading.Event()

    def read(stream, sink, event, pattern):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            sink.append(line)
            if re.search(pattern, line):
                event.set()

    threads = [
        threading.Thread(target=read, args=(proc.stderr, err_lines, started, r"capturing on lo"), daemon=True),
        threading.Thread(target=read, args=(proc.stdout, out_lines, seen, r"PUBLISH topic='live/1'"), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        assert started.wait(15), f"midge inspect did not start capturing: {err_lines}"
        deadline = time.monotonic() + 15
        # The first publish may come before tcpdump's socket sees traffic: publish until seen.
        while not seen.is_set() and time.monotonic() < deadline:
            pub(broker.port, "311", "-u", "erin", "-P", "pw-erin", "-t", "live/1", "-m", "hello", "-i", "live-pub")
            seen.wait(1)
        assert seen.is_set(), f"no PUBLISH line within 15 s; stdout {out_lines}, stderr {err_lines}"
        line = next(l for l in out_lines if "PUBLISH topic='live/1'" in l)
        assert re.match(rf"\s+\d+\s+\d+\.\d{{6}} C>B 127\.0\.0\.1:\d+ → 127\.0\.0\.1:{broker.port} live-pub PUBLISH", line), line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"midge inspect did not stop on SIGINT; stderr {err_lines}", pytrace=False)
    for t in threads:
        t.join(5)
    assert rc == 1, f"exit {rc} (1: a finding); stderr {err_lines}"
    text = "\n".join(out_lines)
    assert "!! password for user 'erin' sent in clear text from 127.0.0.1:" in text
    assert "pw-erin" not in text
    assert "\nSummary: " in text and "live-pub" in text.split("\nSummary: ")[1], text


def test_live_capture_without_tcpdump_says_how_to_install_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    r = subprocess.run([str(midge_bin()), "inspect", "--interface", "lo"], capture_output=True, timeout=30,
                       env={**os.environ, "PATH": str(empty)})
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "tcpdump is not installed" in err and "apt install tcpdump" in err, err


def test_live_capture_without_the_capability_says_how_to_fix_it():
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv is not installed (util-linux): this test drops CAP_NET_RAW with it", pytrace=False)
    # Without CAP_NET_RAW and CAP_NET_ADMIN in the bounding set, even root's tcpdump may not
    # capture: what an unprivileged user sees.
    cmd = [setpriv, "--bounding-set", "-net_raw,-net_admin", "--inh-caps", "-net_raw,-net_admin",
           str(midge_bin()), "inspect", "--interface", "lo"]
    r = subprocess.run(cmd, capture_output=True, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "tcpdump may not capture on lo" in err, err
    assert "sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)" in err, err


def test_files_that_are_not_captures(tmp_path):
    missing = subprocess.run([str(midge_bin()), "inspect", str(tmp_path / "nope.pcap")], capture_output=True, timeout=30)
    assert missing.returncode == 2 and "nope.pcap" in missing.stderr.decode()
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a capture\n")
    r = subprocess.run([str(midge_bin()), "inspect", str(text)], capture_output=True, timeout=30)
    assert r.returncode == 2
    assert "not a pcap or pcapng capture" in r.stderr.decode()
