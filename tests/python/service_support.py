"""What a service manager does to midge, done by hand: systemd's readiness socket
(NOTIFY_SOCKET), a unit file's lines, waiting for a process that is not our child to end."""
from __future__ import annotations

import os
import select
import shlex
import socket
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from support import HOST, REPO, TIMEOUT

UNIT = REPO / "contrib" / "systemd" / "midge.service"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """A unit file's `Key=value` lines, every value of each key, in order."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


class NotifySocket:
    """The datagram socket systemd gives a Type=notify service in NOTIFY_SOCKET."""

    def __init__(self, directory: Path | None = None):
        # A directory of its own that every user can reach (pytest's are root's, 0700): a
        # service running as another user writes to the socket too.
        self.dir = Path(tempfile.mkdtemp(prefix="notify-"))
        self.dir.chmod(0o755)
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o777)

    def env(self) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": str(self.path)}

    def wait_for(self, state: str, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> list[str]:
        """The notifications up to one carrying `state` (such as READY=1), each as its lines;
        fails at once, with its output, if `proc` (the service) ends first."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, min(left, 0.2)))
            if not ready and proc is not None and proc.poll() is not None:
                out = proc.communicate()[0] if proc.stdout else ""
                raise AssertionError(f"the service exited with {proc.returncode} before {state}: {out}")
            if not ready:
                assert left > 0, f"no {state} from midge within {timeout} s; got {seen}"
                continue
            message = self.sock.recv(4096).decode()
            seen.append(message)
            if state in message.split("\n"):
                return seen

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    """Waits for a process that is not our child (a daemon) to end: its pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still runs {timeout} s later"
    finally:
        os.close(fd)


def exec_line(value: str, substitutions: dict[str, str]) -> list[str]:
    """A unit's ExecStart/ExecReload value as an argument list, with paths swapped (the
    binary built here for /usr/bin/midge, a test configuration for /etc/midge/midge.conf)."""
    args = shlex.split(value.lstrip("-@:+!"))
    return [substitutions.get(a, a) for a in args]


def round_trip(port: int, topic: str = "service/check") -> None:
    """mosquitto_sub receives what mosquitto_pub sends through the broker on `port`."""
    # Line-buffered (stdbuf), so that its SUBACK line comes as it happens.
    sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", HOST, "-p", str(port), "-t", topic, "-C", "1", "-W", "10",
                            "-d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Publish once the subscription is acknowledged (mosquitto_sub -d prints SUBACK).
        lines = []
        for line in sub.stdout:
            lines.append(line)
            if "received SUBACK" in line:
                break
        else:
            raise AssertionError(f"mosquitto_sub never subscribed: {lines}")
        pub = subprocess.run(["mosquitto_pub", "-h", HOST, "-p", str(port), "-t", topic, "-m", "hello"],
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert pub.returncode == 0, pub
        out, _ = sub.communicate(timeout=TIMEOUT)
        assert "hello" in out.splitlines(), lines + [out]
        assert sub.returncode == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
