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

    def __init__(self, workdir: Path, name: str = "nats", port: int = 0, extra: list[str] | None = None):
        self.workdir = workdir
        self.name = name
        self.port = port
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{name}.log"

    def start(self) -> "NatsServer":
        binary = require_program(NATS_SERVER if os.path.exists(NATS_SERVER) else "nats-server",
                                 "on Debian/Ubuntu: apt-get install nats-server")
        store = self.workdir / ("jetstream" if self.name == "nats" else f"{self.name}-jetstream")
        store.mkdir(exist_ok=True)
        fixed = self.port != 0
        for _ in range(1 if fixed else 2):
            self.port = self.port if fixed else free_port()
            self.monitor = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "-js", "-a", HOST, "-p", str(self.port), "-sd", str(store),
                     "-m", str(self.monitor), *self.extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_ready():
                return self
            self.stop()
        pytest.fail(f"nats-server did not start; log:\n{self.log()}", pytrace=False)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)

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

    def wait_consumer_acknowledged_all(self, stream: str, consumer: str, timeout: float = TIMEOUT) -> None:
        """Waits until `consumer` of `stream` has acknowledged every message the stream has
        (its ack floor at the stream's last sequence), read from the monitoring endpoint."""
        import json
        import urllib.request
        url = f"http://{HOST}:{self.monitor}/jsz?consumers=true"
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=2) as r:
                jsz = json.load(r)
            for account in jsz.get("account_details") or []:
                for st in account.get("stream_detail") or []:
                    if st.get("name") != stream:
                        continue
                    last = st["state"]["last_seq"]
                    for c in st.get("consumer_detail") or []:
                        if c.get("name") == consumer:
                            seen = (c["ack_floor"]["stream_seq"], last)
                            if seen[0] >= last:
                                return
            time.sleep(0.05)  # poll interval over the monitoring endpoint
        raise AssertionError(f"{consumer} of {stream} did not acknowledge everything in {timeout} s "
                             f"(ack floor, last: {seen})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NatsCluster:
    """Three nats-server with JetStream in one NATS cluster (routes between them), each with
    its own store and a monitoring port; started once JetStream has a metadata leader."""

    def __init__(self, workdir: Path, size: int = 3):
        self.workdir = workdir
        self.size = size
        self._plan()

    def _plan(self) -> None:
        """Free ports for each server: client, route, monitoring."""
        ports = [(free_port(), free_port(), free_port()) for _ in range(self.size)]
        routes = ",".join(f"nats://{HOST}:{r}" for _, r, _ in ports)
        self.servers = [
            NatsServer(self.workdir, f"nats{i}", client, [
                "-n", f"nats{i}", "--cluster_name", "midge-test", "--cluster", f"nats://{HOST}:{route}",
                "--routes", routes, "-m", str(monitor)])
            for i, (client, route, monitor) in enumerate(ports)]
        self.monitors = [m for _, _, m in ports]

    def start(self) -> "NatsCluster":
        import threading
        errors: list[BaseException] = []

        def start_one(s: NatsServer) -> None:
            try:
                s.start()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        # Together: each waits for the others' routes before it says it is ready. A port
        # taken meanwhile by another program (free_port's race): once more, on other ports.
        for attempt in range(2):
            errors.clear()
            threads = [threading.Thread(target=start_one, args=(s,)) for s in self.servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if not errors:
                break
            self.stop()
            if attempt == 1:
                raise errors[0]
            self._plan()
        deadline = time.monotonic() + 30
        while not self._jetstream_ready():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("the NATS cluster's JetStream did not agree on a leader within 30 s; logs:\n"
                            + "\n".join(s.log()[-2000:] for s in self.servers), pytrace=False)
            time.sleep(0.05)  # poll interval over the servers' monitoring endpoints
        return self

    def _jetstream_ready(self) -> bool:
        """Every server names the same JetStream metadata leader, and the leader has every
        other server current (a leader seen by some servers only is not enough: streams made
        then may wait for seconds)."""
        import json
        import urllib.request
        metas = []
        for m in self.monitors:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{m}/jsz", timeout=2) as r:
                    metas.append(json.load(r).get("meta_cluster") or {})
            except OSError:
                return False
        leaders = {meta.get("leader") for meta in metas}
        if len(leaders) != 1 or not next(iter(leaders)):
            return False
        on_leader = [meta for meta in metas if meta.get("replicas")]
        return len(on_leader) == 1 and len(on_leader[0]["replicas"]) == len(self.servers) - 1 and all(
            r.get("current") for r in on_leader[0]["replicas"])

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def serving(self, connection_name: str) -> int:
        """The index of the server a client connection of that name is connected to."""
        import json
        import urllib.request
        for i, (s, m) in enumerate(zip(self.servers, self.monitors)):
            if s.proc is None or s.proc.poll() is not None:
                continue
            with urllib.request.urlopen(f"http://{HOST}:{m}/connz?limit=1024", timeout=5) as r:
                conns = json.load(r).get("connections") or []
            if any(c.get("name") == connection_name for c in conns):
                return i
        raise AssertionError(f"no NATS server has a connection named {connection_name!r}")

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


class Node(Broker):
    """A midge broker joined to the cluster, started once it says it joined."""

    def __init__(self, workdir: Path, nats, name: str, extra: list[str] | None = None):
        urls = nats.urls if isinstance(nats, NatsCluster) else [nats.url]
        super().__init__(workdir, [*(f"cluster_nats_url {u}" for u in urls), f"cluster_node_name {name}",
                                   *(extra or [])], verbose=True, name=name)
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

    def wait_retained_from_stream(self, topic: str, since: int = 0, timeout: float = TIMEOUT) -> None:
        import re
        self.wait_for_log(rf"Cluster: retained message of {re.escape(topic)} from the stream\.$", since=since,
                          timeout=timeout)


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
