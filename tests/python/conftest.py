"""Fixtures: a midge broker per test (on a free port, with its own configuration and log),
and factories for the clients that talk to it.

    python3 -m pytest -q tests/python           # uses target/debug/midge
    MIDGE_BIN=target/release/midge python3 -m pytest -q tests/python
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Broker, MosquittoSub, PahoClient, midge_bin, stop_all  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries what its brokers' logs say about the cluster, and
    their warnings and errors (each a file NAME.log in the test's tmp_path): the race that
    failed once on a loaded machine can be read after the fact."""
    outcome = yield
    report = outcome.get_result()
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if not report.failed or tmp is None:
        return
    for log in sorted(Path(tmp).glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        kept = [line for line in lines if any(w in line for w in ("Cluster:", ": warn", ": error"))]
        title = f"{log.name} ({report.when}): cluster lines, warnings and errors"
        report.sections.append((title, "\n".join(kept[-80:])))


@pytest.fixture(scope="session")
def midge_binary() -> Path:
    """The broker binary (MIDGE_BIN, or target/debug/midge); fails, never skips, when missing."""
    return midge_bin()


@pytest.fixture
def broker_factory(tmp_path, midge_binary):
    """Starts brokers with extra configuration lines: `broker_factory("max_keepalive 10")`.
    Each is stopped with SIGTERM at the end of the test, which must exit 0."""
    brokers: list[Broker] = []

    def start(*extra_config: str, verbose: bool = True) -> Broker:
        b = Broker(tmp_path, list(extra_config), verbose=verbose, name=f"broker{len(brokers)}")
        brokers.append(b)
        return b.start()

    yield start
    stop_all(brokers)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A broker with the default configuration (anonymous clients, verbose log)."""
    return broker_factory()


@pytest.fixture
def mosquitto_subs():
    """Starts mosquitto_sub processes (`mosquitto_subs(broker, ["a/#"], "-v")`), stopped at the end."""
    subs: list[MosquittoSub] = []

    def start(broker: Broker, topics: list[str], *args: str, **kw) -> MosquittoSub:
        s = MosquittoSub(broker, topics, *args, **kw)
        subs.append(s)
        return s

    yield start
    for s in subs:
        s.stop()


@pytest.fixture
def paho_clients():
    """Makes paho clients (`paho_clients(broker, "id", version="5")`), closed at the end."""
    clients: list[PahoClient] = []

    def make(broker: Broker, client_id: str = "", **kw) -> PahoClient:
        c = PahoClient(broker, client_id, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def raw_clients():
    """Opens raw-socket clients (`raw_clients(broker.port, version=5)`), closed at the end."""
    from mqtt_raw import RawClient

    clients: list[RawClient] = []

    def make(port: int, **kw) -> RawClient:
        c = RawClient(port, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
