"""Helpers for test_security.py: midge brokers with a whole configuration (several
listeners, TLS, password and ACL files), the mosquitto broker as a reference peer, paho
clients with credentials and certificates, mosquitto_pub runs with their CONNACK code, and
checks of mosquitto password hashes in pure Python (an independent implementation)."""
from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import (
    HOST,
    RUN_AS,
    TIMEOUT,
    Broker,
    PahoClient,
    free_port,
    midge_bin,
    mosquitto_broker_binary,
    require_program,
    require_tool,
)

# ---------------------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------------------

class ConfiguredBroker(Broker):
    """`midge broker -c FILE -v` with the whole configuration given as a template: `{port}`,
    `{tls}`, ... are replaced by free ports (the names listed in `ports`, the first is
    `.port`). Started once every listener is open (from the log: no probe connections,
    which would show up as failed TLS handshakes)."""

    def __init__(self, workdir: Path, template: str, ports: tuple[str, ...] = ("port",), name: str = "broker"):
        super().__init__(workdir, [], verbose=True, name=name)
        self.template = template
        self.port_names = ports
        self.ports: dict[str, int] = {}

    def _argv(self) -> list[str]:
        return [str(midge_bin()), "broker", "-c", str(self.conf_path), "-v"]

    def _ready_pattern(self, port: int) -> str:
        # "Opening ipv4 listen socket", "Opening websockets ipv4 listen socket", ...
        return rf"Opening [\w() ]*ipv4 listen socket on port {port}\b"

    def config_text(self) -> str:
        return "".join(f"{line}\n" for line in RUN_AS) + self.template.format(**self.ports)

    def start(self) -> "ConfiguredBroker":
        for attempt in range(2):
            self.ports = {n: free_port() for n in self.port_names}
            self.port = self.ports[self.port_names[0]]
            self.conf_path.write_text(self.config_text())
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_ready():
                return self
            if attempt == 0 and re.search(r"cannot listen|Address already in use", self.log()):
                continue  # a port was taken between choosing and binding it: once more
            break
        self.stop_quietly()
        pytest.fail(f"{self.name} did not start (exit code {self.proc.poll()}); configuration:\n"
                    f"{self.conf_path.read_text()}\nlog:\n{self.log()}", pytrace=False)

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            log = self.log()
            if all(re.search(self._ready_pattern(p), log) for p in self.ports.values()):
                return True
            time.sleep(0.01)  # poll interval
        return False

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def reload(self) -> None:
        """SIGHUP, and waits until the broker has reloaded (fails on a reload error)."""
        mark = self.mark()
        self.proc.send_signal(signal.SIGHUP)
        m = self.wait_for_log(r"Reloaded the password file, ACL file and TLS certificates\.|Reload failed.*", since=mark)
        assert "Reload failed" not in m.group(0), m.group(0)

    def count(self, pattern: str, since: int = 0) -> int:
        return len(re.findall(pattern, self.log()[since:]))


class MosquittoBroker(ConfiguredBroker):
    """The mosquitto broker (the reference implementation), with its log on stderr. As
    root it needs `user root` or it drops privileges and cannot read root's files."""

    def _argv(self) -> list[str]:
        return [mosquitto_broker_binary(), "-c", str(self.conf_path)]

    def config_text(self) -> str:
        head = ["log_dest stderr", "log_type all"]
        return "\n".join(head) + "\n" + super().config_text()

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if re.search(r"mosquitto version \S+ running", self.log()):
                return True
            time.sleep(0.01)  # poll interval
        return False


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------

def run_tool(cmd: list[str], timeout: float = 15, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def mosq_pub(port: int, *args: str, version: str = "311") -> subprocess.CompletedProcess:
    """mosquitto_pub -d (its debug output shows the CONNACK code) to completion."""
    cmd = [require_tool("mosquitto_pub"), "-h", HOST, "-p", str(port), "-V", version, "-d", *args]
    return run_tool(cmd)


def connack_code(result: subprocess.CompletedProcess) -> int | None:
    """The CONNACK code that mosquitto_pub/sub -d printed ("received CONNACK (N)"), or None."""
    m = re.search(r"received CONNACK \((\d+)\)", result.stdout)
    return int(m.group(1)) if m else None


def describe(result: subprocess.CompletedProcess) -> str:
    return (f"{result.args} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")


class SecurePaho(PahoClient):
    """A PahoClient with a user name and password and/or TLS, and the reason codes of the
    PUBACKs it receives."""

    def __init__(self, broker: Any, client_id: str, version: str = "311", username: str | None = None,
                 password: str | None = None, ca: Path | None = None, cert: Path | None = None,
                 key: Path | None = None):
        super().__init__(broker, client_id, version=version)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                                keyfile=str(key) if key else None)
        self.pubacks: dict[int, int] = {}
        self._puback_cond = threading.Condition()
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._puback_cond:
            self.pubacks[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            self._puback_cond.notify_all()

    def publish_acked(self, topic: str, payload: str, qos: int = 1, timeout: float = TIMEOUT) -> int:
        """Publishes at QoS 1 and returns the PUBACK's reason code (0 for 3.1.1)."""
        info = self.client.publish(topic, payload, qos)
        with self._puback_cond:
            if not self._puback_cond.wait_for(lambda: info.mid in self.pubacks, timeout):
                raise AssertionError(f"no PUBACK for {topic} within {timeout} s")
            return self.pubacks[info.mid]


# ---------------------------------------------------------------------------------------
# Password files
# ---------------------------------------------------------------------------------------

def midge_passwd(*args: str, umask: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(midge_bin()), "passwd", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if check:
        assert r.returncode == 0, describe(r)
    return r


def parse_password_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            user, _, h = line.partition(":")
            out[user] = h
    return out


def hash_matches(stored: str, password: str) -> bool:
    """Checks a mosquitto hash ($7$ PBKDF2-HMAC-SHA512, $6$ SHA-512) with Python's hashlib."""
    pw = password.encode()
    if stored.startswith("$7$"):
        iterations, salt, digest = stored[3:].split("$")
        got = hashlib.pbkdf2_hmac("sha512", pw, base64.b64decode(salt), int(iterations), 64)
        return hmac.compare_digest(got, base64.b64decode(digest))
    if stored.startswith("$6$"):
        salt, digest = stored[3:].split("$")
        got = hashlib.sha512(pw + base64.b64decode(salt)).digest()
        return hmac.compare_digest(got, base64.b64decode(digest))
    raise AssertionError(f"not a mosquitto hash: {stored!r}")


# ---------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------

def midge_cert(directory: Path, *args: str) -> subprocess.CompletedProcess:
    r = run_tool([str(midge_bin()), "cert", "--dir", str(directory), *args], timeout=30)
    assert r.returncode == 0, describe(r)
    return r


class Pki:
    """A CA made by `midge cert` and the paths of what it issued."""

    def __init__(self, directory: Path):
        self.dir = directory

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    def server(self, name: str = "localhost") -> tuple[Path, Path]:
        return self.dir / "servers" / f"{name}.crt", self.dir / "servers" / f"{name}.key"

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / "clients" / f"{name}.crt", self.dir / "clients" / f"{name}.key"

    def client_args(self, name: str) -> list[str]:
        """mosquitto_pub/sub (and midge pub) options to connect with this client certificate."""
        cert, key = self.client(name)
        return ["--cafile", str(self.ca), "--cert", str(cert), "--key", str(key)]

    def copy(self, to: Path) -> "Pki":
        shutil.copytree(self.dir, to)
        return Pki(to)


def not_after(cert: Path) -> float:
    """A certificate's notAfter as a Unix time (openssl x509 -enddate)."""
    r = run_tool([require_program("openssl", "apt-get install openssl"), "x509", "-in", str(cert), "-noout",
                  "-enddate", "-dateopt", "iso_8601"])
    assert r.returncode == 0, describe(r)
    value = r.stdout.strip().split("=", 1)[1]
    return calendar.timegm(time.strptime(value, "%Y-%m-%d %H:%M:%SZ"))


def wait_until_expired(cert: Path, timeout: float = 10) -> None:
    """`--days 0` makes a certificate whose notAfter is the moment it was issued: wait
    (with a deadline) until the clock is safely past it."""
    end = not_after(cert)
    deadline = time.monotonic() + timeout
    while time.time() <= end + 1:
        assert time.monotonic() < deadline, f"{cert} has not expired within {timeout} s (notAfter {end})"
        time.sleep(0.05)  # waiting for the clock itself
