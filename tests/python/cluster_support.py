"""Cluster mode: a nats-server with JetStream on a free port (its store in the test's
directory) and midge nodes joined to it, each waited for by its log (never by sleeping)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from persistence_support import StoreBroker
from support import HOST, TIMEOUT, Broker, free_port, require_program

NATS_SERVER = "/usr/sbin/nats-server"


class NatsServer:
    """`nats-server -js` on a free port, its store under `workdir`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "nats.log"

    def start(self) -> "NatsServer":
        binary = require_program(NATS_SERVER if os.path.exists(NATS_SERVER) else "nats-server",
                                 "on Debian/Ubuntu: apt-get install nats-server")
        store = self.workdir / "jetstream"
        store.mkdir(exist_ok=True)
        for _ in range(2):
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "-js", "-a", HOST, "-p", str(self.port), "-sd", str(store)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_ready():
                return self
            self.stop()
        pytest.fail(f"nats-server did not start; log:\n{self.log()}", pytrace=False)

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            # Ready once it logs so (JetStream is started before it).
            if "Server is ready" in self.log():
                try:
                    with socket.create_connection((HOST, self.port), timeout=0.5):
                        return True
                except OSError:
                    pass
            time.sleep(0.01)  # poll interval
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Node(Broker):
    """A midge broker joined to the cluster, started once it says it joined."""

    def __init__(self, workdir: Path, nats: NatsServer, name: str, extra: list[str] | None = None):
        super().__init__(workdir, [f"cluster_nats_url {nats.url}", f"cluster_node_name {name}", *(extra or [])],
                         verbose=True, name=name)
        self.node = name

    def start(self) -> "Node":
        super().start()
        # The listener opens before the node has joined: it serves clients once it has. (The
        # log file starts anew with each start.)
        try:
            self.wait_for_log(rf"Cluster: node {self.node} joined", timeout=30)
        except AssertionError:
            # Not left running by a test that fails here.
            self.proc.kill()
            self.proc.wait()
            raise
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)

    def wait_nats_subscribed(self, filter_: str, since: int = 0) -> None:
        """Waits until the node has subscribed on NATS for `filter_` (NATS has it)."""
        import re
        self.wait_for_log(rf"Cluster: subscribed on NATS for {re.escape(filter_)}\.$", since=since)

    def wait_retained_from_stream(self, topic: str, since: int = 0) -> None:
        import re
        self.wait_for_log(rf"Cluster: retained message of {re.escape(topic)} from the stream\.$", since=since)


class StoreNode(StoreBroker):
    """A cluster node with persistence, on one port and one store for its whole life: kill()
    (SIGKILL) or term(), then start() again; started once it has restored its store and
    joined the cluster. `nats` is a NatsServer or a list of NATS URLs."""

    def __init__(self, workdir: Path, nats, name: str, extra: list[str] | None = None):
        urls = [nats.url] if isinstance(nats, NatsServer) else list(nats)
        super().__init__(workdir, [*(f"cluster_nats_url {u}" for u in urls), f"cluster_node_name {name}",
                                   *(extra or [])], verbose=True, name=name)
        self.node = name

    def start(self, *args: str, env: dict[str, str] | None = None) -> "StoreNode":
        super().start(*args, env=env)
        self.wait_for_log(rf"Cluster: node {self.node} joined", timeout=30)
        return self

    def kill9(self) -> None:
        self.kill()

    def wait_nats_subscribed(self, filter_: str, since: int = 0) -> None:
        import re
        self.wait_for_log(rf"Cluster: subscribed on NATS for {re.escape(filter_)}\.$", since=since)
