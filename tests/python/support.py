"""The broker process under test, and the clients that talk to it: mosquitto_pub /
mosquitto_sub processes and paho-mqtt clients, each with ways to wait for events (never
fixed sleeps)."""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

try:  # paho is required: its absence fails the tests that use it (see require_paho).
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover
    mqtt = None
    PAHO_IMPORT_ERROR: Exception | None = e
else:
    PAHO_IMPORT_ERROR = None

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Generous deadlines: they bound waits for events, they are not how long tests take.
TIMEOUT = 5.0


def midge_bin() -> Path:
    path = Path(os.environ.get("MIDGE_BIN") or REPO / "target" / "debug" / "midge")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"midge binary not found or not executable at {path}: build it with "
            f"`cargo build -p midge` in {REPO}, or point MIDGE_BIN at it",
            pytrace=False,
        )
    return path


def require_program(path_or_name: str, hint: str) -> str:
    """A program by absolute path or on PATH; a missing one fails the test, never skips it.
    `hint` says how to install it."""
    path = shutil.which(path_or_name)
    if path is None:
        pytest.fail(f"{path_or_name} is not installed ({hint}); these tests need it", pytrace=False)
    return path


def require_tool(name: str) -> str:
    """One of mosquitto's client tools."""
    return require_program(name, "on Debian/Ubuntu: apt-get install mosquitto-clients")


MOSQUITTO_BROKER = "/usr/sbin/mosquitto"


def mosquitto_broker_binary() -> str:
    """The mosquitto broker, the reference peer (Debian's, or one on PATH)."""
    return require_program(MOSQUITTO_BROKER if os.path.exists(MOSQUITTO_BROKER) else "mosquitto",
                           "on Debian/Ubuntu: apt-get install mosquitto")


def require_paho() -> None:
    if mqtt is None:
        pytest.fail(
            f"paho-mqtt is not importable ({PAHO_IMPORT_ERROR}): "
            f"pip install -r tests/python/requirements.txt",
            pytrace=False,
        )


# Started as root, a broker (midge or mosquitto) runs as user mosquitto once its listeners
# are open, and could no longer read the tests' files (in root's 0700 temporary directories):
# configurations the tests write keep root with this line.
RUN_AS = ["user root"] if os.geteuid() == 0 else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------

class Broker:
    """A `midge broker -c FILE` process on a free port, its stderr in a file."""

    def __init__(self, workdir: Path, extra_config: list[str], verbose: bool = True, name: str = "broker"):
        self.workdir = workdir
        self.extra_config = list(extra_config)
        self.verbose = verbose
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = workdir / f"{name}.log"
        self.conf_path = workdir / f"{name}.conf"

    def start(self) -> "Broker":
        binary = midge_bin()
        for attempt in range(2):
            self.port = free_port()
            self.conf_path.write_text(
                "\n".join([*RUN_AS, f"listener {self.port} {HOST}", "allow_anonymous true", *self.extra_config])
                + "\n"
            )
            args = [str(binary), "broker", "-c", str(self.conf_path)] + (["-v"] if self.verbose else [])
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_accepting():
                return self
            # The port was taken between choosing it and binding it (or the broker failed):
            # try once more on another port.
            if attempt == 0 and "cannot listen" in self.log():
                continue
            break
        pytest.fail(
            f"midge broker did not start on port {self.port} (exit code {self.proc.poll()}); "
            f"log:\n{self.log()}",
            pytrace=False,
        )

    def _wait_accepting(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.01)  # poll interval: the listener is not open yet
        return False

    def stop(self) -> int:
        """SIGTERM, and the exit code (the caller asserts it)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"midge did not stop within 15 s of SIGTERM; log:\n{self.log()[-4000:]}", pytrace=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the log ---------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """A position in the log: wait_for_log(..., since=mark) looks only after it."""
        return len(self.log())

    def find_log(self, pattern: str, since: int = 0) -> re.Match | None:
        return re.search(pattern, self.log()[since:], re.MULTILINE)

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = TIMEOUT) -> re.Match:
        """Polls the log for a regular expression until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.find_log(pattern, since)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"log line /{pattern}/ not found within {timeout} s; log since mark:\n"
                    f"{self.log()[since:][-6000:]}"
                )
            if not self.alive():
                raise AssertionError(f"midge exited ({self.proc.returncode}) while waiting for /{pattern}/; log:\n{self.log()[-6000:]}")
            time.sleep(0.01)  # poll interval

    def wait_subscribed(self, client_id: str, since: int = 0, count: int = 1, timeout: float = TIMEOUT) -> None:
        """Waits until the broker has acknowledged `count` SUBSCRIBE of `client_id` (needs -v)."""
        assert self.verbose, "wait_subscribed reads the verbose log"
        pattern = rf"Sending SUBACK to {re.escape(client_id)} "
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log()[since:])) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{client_id} not subscribed within {timeout} s; log:\n{self.log()[since:][-4000:]}")
            time.sleep(0.01)


def stop_all(brokers, allowed: tuple[int, ...] = (0,)) -> None:
    """Stops each broker with SIGTERM (None entries are skipped) and fails naming every one
    whose exit code is not in `allowed` (-9: one the test killed), with its log's tail."""
    failures = []
    for b in brokers:
        if b is None:
            continue
        rc = b.stop()
        if rc not in allowed:
            failures.append(f"{b.name} exited with {rc} after SIGTERM; log tail:\n{b.log()[-3000:]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub
# ---------------------------------------------------------------------------------------

_ids = iter(range(1, 1_000_000))


def unique_id(prefix: str) -> str:
    """A client id unique in the test run (at most 23 characters, for MQTT 3.1)."""
    return f"{prefix}-{os.getpid() % 1000}-{next(_ids)}"[:23]


def mosquitto_pub(broker: Broker, *args: str, version: str = "311", check: bool = True,
                  stdin: bytes | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    """Runs mosquitto_pub to completion."""
    cmd = [require_tool("mosquitto_pub"), "-h", HOST, "-p", str(broker.port), "-V", version, *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


class MosquittoSub:
    """A running mosquitto_sub, its output lines read into a queue."""

    def __init__(self, broker: Broker, topics: list[str], *args: str, version: str = "311", qos: int = 0,
                 client_id: str | None = None, wait: bool = True):
        self.broker = broker
        self.client_id = client_id or unique_id("sub")
        mark = broker.mark()
        cmd = [require_tool("mosquitto_sub"), "-h", HOST, "-p", str(broker.port), "-V", version,
               "-i", self.client_id, "-q", str(qos)]
        for t in topics:
            cmd += ["-t", t]
        cmd += list(args)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.all_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait and "-E" not in args:
            broker.wait_subscribed(self.client_id, since=mark)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.all_lines.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def read_lines(self, n: int, timeout: float = TIMEOUT) -> list[str]:
        """The next `n` output lines; fails if they do not all come within `timeout`."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub printed {out}, expected {n} lines within {timeout} s") from None
            if line is None:
                raise AssertionError(
                    f"mosquitto_sub exited ({self.proc.poll()}) after {out}, expected {n} lines; "
                    f"stderr: {self.stderr()}"
                )
            out.append(line)
        return out

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mosquitto_sub did not exit within {timeout} s; printed {self.all_lines}") from None
        self._reader.join(timeout)
        return rc

    def output(self) -> list[str]:
        """Every line printed (complete once the process has exited)."""
        return list(self.all_lines)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------
# paho-mqtt
# ---------------------------------------------------------------------------------------

PAHO_VERSIONS = {"31": 3, "311": 4, "5": 5}


class PahoClient:
    """A paho client with its own network thread (no automatic reconnection) and events
    for CONNACK, SUBACK, messages and disconnection."""

    def __init__(self, broker: Broker, client_id: str = "", version: str = "311", clean: bool = True,
                 will: dict | None = None):
        require_paho()
        self.broker = broker
        self.version = version
        self.v5 = version == "5"
        self.clean = clean
        proto = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311, "5": mqtt.MQTTv5}[version]
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": proto}
        if not self.v5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        if will:
            wprops = None
            if self.v5 and will.get("props"):
                wprops = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will["props"].items():
                    setattr(wprops, k, v)
            self.client.will_set(will["topic"], will.get("payload", ""), will.get("qos", 0), will.get("retain", False),
                                 properties=wprops)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: dict[str, Any] = {}
        self.disconnect_reason: Any = None
        self.messages: queue.Queue = queue.Queue()
        self._subacks: dict[int, list] = {}
        self._suback_event = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_subscribe

    # -- callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = {
            "session_present": bool(flags.session_present),
            "reason": reason_code.value if hasattr(reason_code, "value") else int(reason_code),
            "properties": properties,
        }
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def _on_message(self, client, userdata, msg) -> None:
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        with self._suback_event:
            self._subacks[mid] = list(reason_codes) if isinstance(reason_codes, list) else [reason_codes]
            self._suback_event.notify_all()

    # -- actions ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            rc = self.client.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break

    def connect(self, keepalive: int = 60, clean_start: bool | None = None, session_expiry: int | None = None,
                expect_reason: int | None = 0, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Connects and waits for CONNACK; returns {session_present, reason, properties}."""
        kwargs: dict[str, Any] = {}
        if self.v5:
            kwargs["clean_start"] = self.clean if clean_start is None else clean_start
            if session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry
                kwargs["properties"] = props
        self.connected.clear()
        self.disconnected.clear()
        self.client.connect(HOST, self.broker.port, keepalive, **kwargs)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        if not self.connected.wait(timeout):
            raise AssertionError(f"no CONNACK within {timeout} s")
        if expect_reason is not None:
            assert self.connack["reason"] == expect_reason, f"CONNACK {self.connack}"
        return self.connack

    def subscribe(self, topic: str, qos: int = 0, timeout: float = TIMEOUT, **options: Any) -> list:
        """Subscribes and waits for SUBACK; returns its reason codes (granted QoS)."""
        if self.v5:
            opts = mqtt.SubscribeOptions(qos=qos, **options)
            rc, mid = self.client.subscribe(topic, options=opts)
        else:
            rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed: {rc}"
        with self._suback_event:
            if not self._suback_event.wait_for(lambda: mid in self._subacks, timeout):
                raise AssertionError(f"no SUBACK for {topic} within {timeout} s")
            codes = self._subacks.pop(mid)
        return [c.value if hasattr(c, "value") else c for c in codes]

    def unsubscribe(self, topic: str, timeout: float = TIMEOUT) -> None:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        with self._suback_event:
            if not self._suback_event.wait_for(lambda: mid in self._subacks, timeout):
                raise AssertionError(f"no UNSUBACK for {topic} within {timeout} s")
            self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT) -> None:
        """Publishes and waits until the QoS flow is complete (written, for QoS 0)."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} (QoS {qos}) not completed within {timeout} s"

    def next_message(self, timeout: float = TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def messages_until(self, payload: bytes, timeout: float = TIMEOUT) -> list:
        """Messages received up to and including the first with `payload`."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no message with payload {payload!r} within {timeout} s; got {[(x.topic, x.payload) for x in out]}"
                ) from None
            out.append(m)
            if m.payload == payload:
                return out

    def messages_until_all(self, wanted: set[bytes] | list[bytes], timeout: float = TIMEOUT) -> list:
        """Messages received until every payload of `wanted` has been seen. (paho hands a
        QoS 2 message to on_message when PUBREL arrives, so QoS 2 messages can come after
        messages the broker sent later: wait for a set, not for a marker.)"""
        wanted = set(wanted)
        out = []
        deadline = time.monotonic() + timeout
        while not wanted <= {m.payload for m in out}:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"missing {wanted - {m.payload for m in out}} after {timeout} s; got {[(x.topic, x.payload) for x in out]}"
                ) from None
        return out

    def wait_disconnected(self, timeout: float = TIMEOUT) -> Any:
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"not disconnected within {timeout} s")
        return self.disconnect_reason

    def is_connected(self) -> bool:
        return self.client.is_connected() and not self.disconnected.is_set()

    def disconnect(self, timeout: float = TIMEOUT) -> None:
        """A normal DISCONNECT; waits for the network thread to end and for the broker to
        log the disconnection (paho reports it as soon as DISCONNECT is written, before the
        broker has read it)."""
        mark = self.broker.mark()
        self.client.disconnect()
        self.wait_disconnected(timeout)
        self._join()
        cid = self.client._client_id.decode()
        if cid:
            self.broker.wait_for_log(rf"Client {re.escape(cid)} disconnected\.", since=mark, timeout=timeout)

    def kill(self) -> None:
        """Loses the connection abnormally: stops the network thread and closes the socket
        without DISCONNECT."""
        self._join()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT)
            self._thread = None

    def close(self) -> None:
        """Teardown: disconnects if still connected."""
        if self._thread is not None and self.client.is_connected():
            try:
                self.client.disconnect()
            except Exception:
                pass
        self._join()
