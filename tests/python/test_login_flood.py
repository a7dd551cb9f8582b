"""Logins cannot be used to burn the broker's CPU or to probe for user names (issue "Hostile
clients", item 3), measured end to end over TCP with raw MQTT clients:

- a flood of bad logins from one address (many concurrent connections, a known user with
  wrong passwords and unknown users) does not delay good logins from another address: their
  CONNACK latency is compared with the unloaded case, for logins answered from the
  credential cache and for logins that need a hash, with the failure delay on (the default)
  and off (then only the per-address turn and the bounded pool protect them);
- the flood costs few hashes: one address has one password check at a time, and waits out
  its failure delay before its password is hashed;
- a login as an unknown user takes as long as one as a known user with a wrong password.

On loopback, clients bind to 127.0.0.2 (the good address) and 127.0.0.3 (the flood) to be
other addresses. The figures are printed (pytest -s shows them); the bounds asserted are
generous, for a shared, noisy machine."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

import mqtt_raw as raw
from security_support import ConfiguredBroker
from support import HOST, unique_id

GOOD, FLOOD = "127.0.0.2", "127.0.0.3"
# Extra CONNACK latency allowed under the flood, on the median (the issue asks for "a few
# milliseconds"; the bound leaves room for a shared machine's noise).
EXTRA_ALLOWED = 0.050


def pbkdf2_entry(user: str, password: str, iterations: int) -> str:
    """A mosquitto $7$ line, computed with Python's hashlib (not by midge)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


def password_file(path: Path, users: dict[str, str], iterations: int) -> Path:
    path.write_text("".join(pbkdf2_entry(u, p, iterations) for u, p in users.items()))
    path.chmod(0o600)
    return path


def connack_time(port: int, source: str, user: str, password: str, timeout: float = 15) -> tuple[int, float]:
    """A 3.1.1 CONNECT from `source`: the CONNACK's return code and the seconds from sending
    CONNECT to receiving CONNACK (the TCP handshake is not counted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        packet = raw.connect(unique_id("login"), username=user, password=password.encode())
        t0 = time.perf_counter()
        s.sendall(packet)
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                raise AssertionError(f"connection closed before CONNACK (got {got!r})")
            got += chunk
        elapsed = time.perf_counter() - t0
        assert got[0] == 0x20, got
        if got[3] == 0:
            s.sendall(raw.disconnect())
        return got[3], elapsed


class Flood:
    """Bad logins from one address (or several, taken in turn): `width` connections at a time, each sending a CONNECT with
    a wrong password for `victim` or an unknown user name, and opened again as soon as the
    broker answers or closes it."""

    def __init__(self, port: int, source: str | list[str], victim: str, width: int):
        self.port, self.victim, self.width = port, victim, width
        self.sources = [source] if isinstance(source, str) else source
        self.attempts = self.refused = self.dropped = 0
        self.errors: list[str] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def start(self) -> "Flood":
        self._thread.start()
        assert self._started.wait(5), "the flood did not start"
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        assert not self._thread.is_alive(), "the flood did not stop"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        workers = [asyncio.create_task(self._worker(i)) for i in range(self.width)]
        await self._stop.wait()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            user = self.victim if n % 2 else f"intruder-{i}-{n}"
            try:
                source = self.sources[i % len(self.sources)]
                reader, writer = await asyncio.open_connection(HOST, self.port, local_addr=(source, 0))
            except OSError as e:
                self.errors.append(str(e))
                await asyncio.sleep(0.05)  # out of ports or descriptors: breathe, then go on
                continue
            try:
                self.attempts += 1
                writer.write(raw.connect(f"flood-{i}-{n}", username=user, password=secrets.token_bytes(8)))
                await writer.drain()
                answer = await reader.read(4)
                if len(answer) == 4 and answer[3] != 0:
                    self.refused += 1
                elif len(answer) == 4:
                    self.errors.append(f"a bad login was accepted: {answer!r}")
                else:
                    self.dropped += 1  # closed unanswered (the broker's connect timeout)
            except OSError:
                self.dropped += 1
            finally:
                writer.close()


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def figures(name: str, xs: list[float]) -> str:
    return f"{name}: median {median_ms(xs):.1f} ms, max {max(xs) * 1000:.1f} ms (n={len(xs)})"


HASHING = re.compile(r"Computing the password hash of user '([^']*)'")


@pytest.mark.parametrize("failure_delay", ["5", "0"])
def test_a_flood_of_bad_logins_does_not_delay_good_logins_from_another_address(tmp_path, failure_delay):
    fresh = [f"device-{i}" for i in range(60)]
    users = {"alice": secrets.token_hex(8), "dashboard": secrets.token_hex(8)}
    users.update({u: secrets.token_hex(8) for u in fresh})
    # 10,000 iterations: tens of ms per hash in a debug build, so a hash is visible in the figures.
    pw = password_file(tmp_path / "passwd", users, 10_000)
    b = ConfiguredBroker(tmp_path, f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                                   f"auth_failure_delay {failure_delay}\n")
    b.start()
    flood = None
    try:
        def good_logins(names: list[str]) -> list[float]:
            out = []
            for name in names:
                code, t = connack_time(b.port, GOOD, name, users[name])
                assert code == 0, f"{name} refused ({code})"
                out.append(t)
            return out

        good_logins(["dashboard"])  # into the cache
        unloaded_cached = good_logins(["dashboard"] * 50)
        unloaded_hashed = good_logins(fresh[:20])

        mark = b.mark()
        flood = Flood(b.port, FLOOD, "alice", width=100).start()
        # Under way: the flood's first refusals are out, and its address is failing.
        deadline = time.monotonic() + 10
        while flood.refused < 3:
            assert time.monotonic() < deadline, f"the flood got no refusal: {flood.errors[:3]}\n{b.log()[mark:][-2000:]}"
            time.sleep(0.01)  # poll interval
        flood_start = time.monotonic()
        loaded_cached, loaded_hashed = [], []
        for i in range(20, 60):  # interleaved, over the whole flood
            loaded_hashed += good_logins([fresh[i]])
            loaded_cached += good_logins(["dashboard"] * 3)
        flood_seconds = time.monotonic() - flood_start
        flood.stop()
        hashed_for_flood = sum(1 for u in HASHING.findall(b.log()[mark:]) if u == "alice" or u.startswith("intruder-"))

        report = "\n".join([
            f"auth_failure_delay {failure_delay}; flood from {FLOOD}: 100 concurrent connections, "
            f"{flood.attempts} CONNECTs, {flood.refused} refused, {flood.dropped} closed unanswered, "
            f"{hashed_for_flood} hashes computed for them",
            figures("cached login, unloaded", unloaded_cached),
            figures("cached login, flood   ", loaded_cached),
            figures("hashed login, unloaded", unloaded_hashed),
            figures("hashed login, flood   ", loaded_hashed),
            f"(good logins under the flood took {flood_seconds:.1f} s)",
        ])
        print("\n" + report)
        assert not [e for e in flood.errors if "accepted" in e], report
        assert flood.dropped == 0, f"flood connections closed without an answer\n{report}"
        for unloaded, loaded in ((unloaded_cached, loaded_cached), (unloaded_hashed, loaded_hashed)):
            extra = statistics.median(loaded) - statistics.median(unloaded)
            assert extra < EXTRA_ALLOWED, f"good logins {extra * 1000:.1f} ms slower under the flood\n{report}"
        if failure_delay != "0":
            # One check at a time for the address, each after its failure delay: the flood's
            # hundreds of connections cost a handful of hashes (the 20 failures an address has
            # before it is slowed, then 0.1 + 0.2 + 0.4 + ... s apart).
            assert hashed_for_flood <= 20 + 10 + flood_seconds / 2, report
    finally:
        if flood is not None and flood._thread.is_alive():
            flood.stop()
        rc = b.stop()
    assert rc == 0, b.log()[-3000:]


def test_logins_from_many_addresses_at_once_are_all_answered_before_the_connect_timeout(tmp_path):
    """200 bad logins at a time, each from an address of its own: one turn each, so all of
    them get into the hashing pool's queue (100,000 iterations, a second of work for the
    machine every few logins), and a good login that needs a hash comes after them. Every
    login is answered before the 10 s a CONNECT has: checked, or refused with 0x89 Server
    busy (3.1.1: 3, server unavailable) when its check cannot begin in time, as a login
    waiting for its address's turn is. Before, the good login, and the flood's, waited for
    the pool past that time, and were closed unanswered."""
    users = {"alice": secrets.token_hex(8), "late": secrets.token_hex(8)}
    pw = password_file(tmp_path / "passwd", users, 100_000)
    b = ConfiguredBroker(tmp_path, f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                                   "auth_failure_delay 0\n")
    b.start()
    flood = None
    try:
        mark = b.mark()
        flood = Flood(b.port, [f"127.0.1.{i}" for i in range(1, 201)], "alice", width=200).start()
        deadline = time.monotonic() + 10
        while flood.attempts < 200 or len(HASHING.findall(b.log()[mark:])) < 2:
            assert time.monotonic() < deadline, f"the flood did not start: {flood.errors[:3]}"
            time.sleep(0.01)  # poll interval
        code, took = connack_time(b.port, GOOD, "late", users["late"], timeout=15)
        flood.stop()
        print(f"\nthe good login: code {code} after {took:.2f} s; the flood: {flood.attempts} CONNECTs, "
              f"{flood.refused} refused, {flood.dropped} closed unanswered")
        assert code in (0, 3), f"code {code}"
        assert took < 10
        assert flood.dropped == 0, f"{flood.dropped} of the flood's logins were closed unanswered"
        if code == 3:
            b.wait_for_log(r"too many logins at once: try again later", since=mark)
    finally:
        if flood is not None and flood._thread.is_alive():
            flood.stop()
        rc = b.stop()
    assert rc == 0, b.log()[-3000:]


def test_unknown_and_known_users_take_the_same_time_to_refuse(tmp_path):
    """Without a decoy hash an unknown user is refused at once, and the time tells which
    names exist; with it, both cost one hash of the file's kind."""
    pw = password_file(tmp_path / "passwd", {"alice": secrets.token_hex(8), "bob": secrets.token_hex(8)}, 20_000)
    b = ConfiguredBroker(tmp_path, f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
                                   "auth_failure_delay 0\n")
    b.start()
    try:
        known, unknown = [], []
        for i in range(30):  # interleaved, so that drift in the machine's load hits both alike
            for name, out in (("alice", known), (f"nobody-{i}", unknown)):
                code, t = connack_time(b.port, HOST, name, "wrong-" + secrets.token_hex(4))
                assert code == 0x05, f"{name}: CONNACK {code}, expected 5 (not authorised, as mosquitto 2.0 answers a bad password)"
                out.append(t)
        k, u = statistics.median(known), statistics.median(unknown)
        report = f"{figures('known user, wrong password', known)}\n{figures('unknown user', unknown)}"
        print("\n" + report)
        assert u > k * 0.5, f"an unknown user is refused faster than a known one: no hash?\n{report}"
        assert abs(u - k) < max(0.2 * k, 0.010), f"the refusal time tells known users from unknown ones\n{report}"
    finally:
        rc = b.stop()
    assert rc == 0, b.log()[-3000:]
