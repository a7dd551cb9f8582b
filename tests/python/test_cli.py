"""midge pub / midge sub / midge rr as drop-ins for mosquitto_pub / mosquitto_sub /
mosquitto_rr 2.0.11 (issue #4).

Most tests run the same command line with midge's tool and with mosquitto's and compare
what a script would see: standard output byte for byte, standard error, the exit code.
They run against the midge broker and, where the broker could matter, against a mosquitto
broker too (/usr/sbin/mosquitto, started here on a free port).

    1. output bytes: -v, -N, -F (message, 5.0 property, JSON and time specifiers), --pretty
    2. interop: TCP, TLS and mutual TLS (certificates from `midge cert`), QoS 0/1/2,
       3.1.1 and 5.0, retained, -n, -f, -s, -l, --repeat, rr against a responder
    3. flags: -C -W -E -R --retained-only --remove-retained -T -U --random-filter -q -c -k
       -x --will-* -L -u/-P -A -D
    4. errors and exit codes
    5. -d output
    6. argv0: links named mosquitto_pub / _sub / _rr

Waits are for events (a broker log line such as "Sending SUBACK to ID", a process's
output or exit), never fixed sleeps; every wait has a deadline. mosquitto's tools, its
broker and paho-mqtt are required: their absence fails the tests that need them.

midge's tools are run as `midge pub` etc., except where messages name the program
("Use 'mosquitto_pub --help' to see usage."): there they are run through a link named
mosquitto_pub (which is how a script written for mosquitto would run them).
"""
from __future__ import annotations

import difflib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from refusing_broker import RefusingBroker
from support import (
    HOST,
    RUN_AS,
    TIMEOUT,
    Broker,
    free_port,
    midge_bin,
    mosquitto_broker_binary,
    require_paho,
    require_tool,
    unique_id,
)

TOOLS = ("midge", "mosquitto")


# =======================================================================================
# Peers: the mosquitto broker, mosquitto's tools
# =======================================================================================

@pytest.fixture(autouse=True)
def _peers():
    for tool in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"):
        require_tool(tool)


# =======================================================================================
# Brokers: midge or mosquitto, with a plain, a TLS and a mutual-TLS listener
# =======================================================================================

def _accepting(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class CliBroker(Broker):
    """A midge or mosquitto broker (verbose log in a file) with a plain listener and, with
    `pki`, a TLS listener (`tls_port`) and a TLS listener requiring client certificates
    (`mtls_port`). Reuses support.Broker's log helpers (mark, wait_for_log, ...)."""

    def __init__(self, kind: str, workdir: Path, extra_config: list[str], pki: dict | None = None,
                 anonymous: bool = True, name: str = "broker"):
        super().__init__(workdir, extra_config, verbose=True, name=name)
        self.kind = kind
        self.pki = pki
        self.anonymous = anonymous
        self.tls_port = 0
        self.mtls_port = 0

    def _config(self) -> str:
        lines = list(RUN_AS)
        lines += [f"listener {self.port} {HOST}", f"allow_anonymous {'true' if self.anonymous else 'false'}"]
        lines += self.extra_config
        if self.pki:
            tls = [f"cafile {self.pki['ca']}", f"certfile {self.pki['server_cert']}",
                   f"keyfile {self.pki['server_key']}"]
            lines += [f"listener {self.tls_port} {HOST}", *tls]
            lines += [f"listener {self.mtls_port} {HOST}", *tls, "require_certificate true"]
        return "\n".join(lines) + "\n"

    def start(self) -> "CliBroker":
        for _attempt in range(3):
            ports: set[int] = set()
            while len(ports) < 3:
                ports.add(free_port())
            self.port, self.tls_port, self.mtls_port = sorted(ports)
            self.conf_path.write_text(self._config())
            if self.kind == "midge":
                args = [str(midge_bin()), "broker", "-c", str(self.conf_path), "-v"]
            else:
                args = [mosquitto_broker_binary(), "-c", str(self.conf_path), "-v"]
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            wanted = [self.port] + ([self.tls_port, self.mtls_port] if self.pki else [])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if all(_accepting(p) for p in wanted):
                    return self
                time.sleep(0.01)  # poll interval: the listeners are not open yet
            # A port taken between choosing and binding it: try other ports.
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if not re.search(r"cannot listen|Address already in use", self.log()):
                break
        pytest.fail(f"{self.kind} broker did not start (exit code {self.proc.poll()}); log:\n{self.log()}",
                    pytrace=False)


def _start_broker(kind: str, workdir: Path, **kw) -> CliBroker:
    return CliBroker(kind, workdir, **kw).start()


def _stop_broker(b: CliBroker) -> None:
    rc = b.stop()
    assert rc == 0, f"{b.kind} broker exited with {rc} after SIGTERM; log tail:\n{b.log()[-3000:]}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate for
    alice, all made with `midge cert`."""
    d = tmp_path_factory.mktemp("pki")
    m = str(midge_bin())
    for args in (["init"], ["server", "--host", "localhost", "--ip", "127.0.0.1"], ["client", "alice"]):
        r = subprocess.run([m, "cert", "--dir", str(d), *args], capture_output=True, timeout=30)
        assert r.returncode == 0, f"midge cert {args} failed: {r.stderr.decode(errors='replace')}"
    pki = {
        "ca": d / "ca.crt",
        "server_cert": d / "servers" / "localhost.crt",
        "server_key": d / "servers" / "localhost.key",
        "client_cert": d / "clients" / "alice.crt",
        "client_key": d / "clients" / "alice.key",
    }
    for name, path in pki.items():
        assert path.is_file(), f"midge cert did not make {name} at {path}"
    return pki


@pytest.fixture(scope="session")
def password_file(tmp_path_factory) -> Path:
    """alice:secret, made with `midge passwd` (1000 iterations: fast to check)."""
    f = tmp_path_factory.mktemp("auth") / "passwd"
    r = subprocess.run([str(midge_bin()), "passwd", "-c", "-b", str(f), "alice", "secret", "-I", "1000"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, f"midge passwd failed: {r.stderr.decode(errors='replace')}"
    return f


@pytest.fixture(scope="module")
def midge_broker(tmp_path_factory, pki):
    b = _start_broker("midge", tmp_path_factory.mktemp("midge-broker"), extra_config=[], pki=pki, name="midge")
    yield b
    _stop_broker(b)


@pytest.fixture(scope="module")
def mosq_broker(tmp_path_factory, pki):
    b = _start_broker("mosquitto", tmp_path_factory.mktemp("mosq-broker"), extra_config=[], pki=pki,
                      name="mosquitto")
    yield b
    _stop_broker(b)


@pytest.fixture(scope="module", params=["midge_broker", "mosq_broker"], ids=["midge-broker", "mosquitto-broker"])
def any_broker(request) -> CliBroker:
    """Each test that uses it runs against the midge broker and against mosquitto."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["midge", "mosquitto"], ids=["midge-broker", "mosquitto-broker"])
def auth_broker(request, tmp_path_factory, password_file):
    """A broker refusing anonymous clients, with alice:secret in its password file."""
    b = _start_broker(request.param, tmp_path_factory.mktemp(f"auth-{request.param}"),
                      extra_config=[f"password_file {password_file}"], anonymous=False,
                      name=f"auth-{request.param}")
    yield b
    _stop_broker(b)


# =======================================================================================
# Client processes
# =======================================================================================

_RUNNING: list["Proc"] = []


@pytest.fixture(autouse=True)
def _reap():
    """Kills what a test left running (a failed wait, say)."""
    yield
    while _RUNNING:
        _RUNNING.pop().kill()


class Proc:
    """A client process; its stdout and stderr are read as they come (bytes), so that a
    test can wait for output and still compare it byte for byte."""

    def __init__(self, cmd: list, stdin: bytes | None = None):
        self.cmd = [str(c) for c in cmd]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = bytearray()
        self.err = bytearray()
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()
        if stdin is not None:
            threading.Thread(target=self._feed, args=(stdin,), daemon=True).start()
        self.client_id = ""
        _RUNNING.append(self)

    def _feed(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except OSError:
            pass

    def _pump(self, f, buf: bytearray) -> None:
        fd = f.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with self._cond:
                buf += chunk
                self._cond.notify_all()

    def describe(self) -> str:
        return (f"{' '.join(self.cmd)}\n  exit code: {self.proc.poll()}\n  stdout: {bytes(self.out)!r}\n"
                f"  stderr: {bytes(self.err)!r}")

    def wait_output(self, pattern: bytes, timeout: float = TIMEOUT) -> None:
        """Waits until stdout matches the regular expression `pattern`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not re.search(pattern, bytes(self.out)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no output /{pattern!r}/ within {timeout} s from:\n{self.describe()}")
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    raise AssertionError(f"exited without printing /{pattern!r}/:\n{self.describe()}")
                self._cond.wait(min(left, 0.05))

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Waits for the exit; the exit code (the process is killed past the deadline)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit within {timeout} s:\n{self.describe()}") from None
        for t in self._threads:
            t.join(timeout)
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(2)

    @property
    def stdout(self) -> bytes:
        return bytes(self.out)

    @property
    def stderr(self) -> bytes:
        return bytes(self.err)


class Result:
    def __init__(self, cmd: list, rc: int, stdout: bytes, stderr: bytes):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr

    def __repr__(self) -> str:
        return f"{' '.join(map(str, self.cmd))} -> exit {self.rc}, stdout {self.stdout!r}, stderr {self.stderr!r}"


def run(cmd: list, stdin: bytes | None = None, timeout: float = 10) -> Result:
    cmd = [str(c) for c in cmd]
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                           stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not exit within {timeout} s; stdout {e.stdout!r}, "
                             f"stderr {e.stderr!r}") from None
    return Result(cmd, r.returncode, r.stdout, r.stderr)


@pytest.fixture(scope="session")
def links(tmp_path_factory) -> Path:
    """A directory of links to the midge binary named as mosquitto's tools."""
    d = tmp_path_factory.mktemp("links")
    for kind in ("pub", "sub", "rr", "passwd"):
        (d / f"mosquitto_{kind}").symlink_to(midge_bin())
    return d


class Tools:
    def __init__(self, links: Path):
        self.links = links

    def cmd(self, tool: str, kind: str) -> list[str]:
        """`midge KIND`, mosquitto's `mosquitto_KIND`, or midge through a link named
        mosquitto_KIND ("link")."""
        if tool == "midge":
            return [str(midge_bin()), kind]
        if tool == "link":
            return [str(self.links / f"mosquitto_{kind}")]
        return [require_tool(f"mosquitto_{kind}")]


@pytest.fixture(scope="session")
def tools(links) -> Tools:
    return Tools(links)


def conn(broker: CliBroker, transport: str = "tcp") -> list[str]:
    """Connection options for a broker's plain, TLS or mutual-TLS listener."""
    if transport == "tcp":
        return ["-h", HOST, "-p", str(broker.port)]
    args = ["-h", HOST, "--cafile", str(broker.pki["ca"])]
    if transport == "tls":
        return args + ["-p", str(broker.tls_port)]
    return args + ["-p", str(broker.mtls_port), "--cert", str(broker.pki["client_cert"]),
                   "--key", str(broker.pki["client_key"])]


def wait_log_count(broker: CliBroker, pattern: str, count: int, since: int, procs: list[Proc] = (),
                   timeout: float = TIMEOUT) -> None:
    """Waits until `pattern` is in the broker log `count` times after `since`; fails early
    if one of `procs` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, broker.log()[since:], re.MULTILINE)) < count:
        for p in procs:
            if p.proc.poll() is not None:
                p.finish()
                raise AssertionError(f"client exited while waiting for /{pattern}/ in the broker log:\n"
                                     f"{p.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"/{pattern}/ not {count} times in the {broker.kind} broker log within "
                                 f"{timeout} s; log since mark:\n{broker.log()[since:][-4000:]}\n" +
                                 "\n".join(p.describe() for p in procs))
        time.sleep(0.01)  # poll interval


def start_sub(tools: Tools, broker: CliBroker, tool: str, *args: str, transport: str = "tcp",
              client_id: str | None = None, wait: bool = True, kind: str = "sub") -> Proc:
    """Starts `midge sub` / mosquitto_sub with its own client id and, unless `wait` is
    False, waits until the broker has sent its SUBACK."""
    cid = client_id or unique_id("cli")
    mark = broker.mark()
    p = Proc([*tools.cmd(tool, kind), *conn(broker, transport), "-i", cid, *args])
    p.client_id = cid
    if wait:
        wait_log_count(broker, rf"Sending SUBACK to {re.escape(cid)}\b", 1, mark, [p])
    return p


def pub(tools: Tools, broker: CliBroker, tool: str, *args: str, transport: str = "tcp",
        stdin: bytes | None = None, check: bool = True) -> Result:
    r = run([*tools.cmd(tool, "pub"), *conn(broker, transport), *args], stdin=stdin)
    if check:
        assert r.rc == 0, f"publisher failed: {r}"
    return r


_tags = iter(range(1, 1_000_000))


def tag(prefix: str) -> str:
    """A topic prefix of its own for each test (the module's brokers are shared)."""
    return f"cli/{prefix}/{os.getpid()}-{next(_tags)}"


def lines_of(b: bytes) -> list[bytes]:
    return b.splitlines()


def assert_same_bytes(what: str, midge: bytes, mosquitto: bytes) -> None:
    if midge == mosquitto:
        return
    i = next((k for k in range(min(len(midge), len(mosquitto))) if midge[k] != mosquitto[k]),
             min(len(midge), len(mosquitto)))
    diff = "\n".join(difflib.unified_diff([repr(x) for x in mosquitto.splitlines(keepends=True)],
                                          [repr(x) for x in midge.splitlines(keepends=True)],
                                          "mosquitto", "midge", lineterm="", n=1))
    raise AssertionError(f"{what}: midge differs from mosquitto from byte {i}:\n"
                         f"  mosquitto: {mosquitto!r}\n  midge:     {midge!r}\n{diff}")


def norm_time(b: bytes) -> bytes:
    """The JSON timestamp of %j / %J ("tst") is the time of printing: not comparable."""
    return re.sub(rb'"tst":(\s*)"[^"]*"', rb'"tst":\1"<tst>"', b)


def norm_ids(b: bytes) -> bytes:
    """Client ids that differ from run to run: ids the broker assigns (5.0; midge's and
    mosquitto's have different shapes) and libmosquitto's random mosq-... (3.1)."""
    b = re.sub(rb"auto-[0-9A-Za-z-]+", b"<assigned-id>", b)
    return re.sub(rb"mosq-[0-9A-Za-z]{18}", b"<random-id>", b)


def compare_runs(what: str, midge: Result | Proc, mosquitto: Result | Proc, normalise=lambda b: b,
                 stderr: bool = True) -> None:
    """Same exit code, same stdout (normalised), same stderr."""
    def rc(x):
        return x.rc if isinstance(x, Result) else x.proc.returncode
    assert rc(midge) == rc(mosquitto), (
        f"{what}: exit code {rc(midge)} for midge, {rc(mosquitto)} for mosquitto\n"
        f"  midge:     {midge.stdout!r} / stderr {midge.stderr!r}\n"
        f"  mosquitto: {mosquitto.stdout!r} / stderr {mosquitto.stderr!r}")
    assert_same_bytes(f"{what} (stdout)", normalise(midge.stdout), normalise(mosquitto.stdout))
    if stderr:
        assert_same_bytes(f"{what} (stderr)", midge.stderr, mosquitto.stderr)


# =======================================================================================
# 1. Output bytes: -v, -N, -F, --pretty, midge sub vs mosquitto_sub, on both brokers
# =======================================================================================

BINARY = b'bin\x00\x01\xff\xfe"q\\\n\ttab\x1b[0m \xc3\xa9 end'
JSON = b'{"temp": 21.5, "tags": ["a", "b"], "nested": {"x": null, "ok": true}, "s": "\\u00e9\\n"}'
V5_PROPS = ["-D", "publish", "content-type", "application/json",
            "-D", "publish", "correlation-data", "corr-42",
            "-D", "publish", "message-expiry-interval", "3600",
            "-D", "publish", "payload-format-indicator", "1",
            "-D", "publish", "response-topic", "reply/here",
            "-D", "publish", "user-property", "k1", "v1",
            "-D", "publish", "user-property", "key two", "value two"]


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("data")
    (d / "binary").write_bytes(BINARY)
    (d / "utf8").write_bytes("h\u00e9llo \u20ac\tx\x01 \U0001F600".encode())
    return {"binary": d / "binary", "utf8": d / "utf8"}


def publish_retained_first(tools, broker, t: str) -> None:
    pub(tools, broker, "mosquitto", "-V", "5", "-t", f"{t}/retained", "-m", "retained value", "-r", "-q", "1")


def publish_message_set(tools, broker, t: str, files: dict) -> int:
    """Publishes (with mosquitto_pub, 5.0) messages covering what a format can show; the
    QoS 2 one last (a subscriber shows a QoS 2 message when PUBREL comes: a later message
    could overtake it). Returns how many messages a subscriber to t/# gets, the retained
    one included."""
    p = ("-V", "5")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/a", "-m", "hello world", "-q", "0")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/b/c", "-f", str(files["binary"]), "-q", "1")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/null", "-n", "-q", "1")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/utf8", "-f", str(files["utf8"]), "-q", "1",
        "-D", "publish", "content-type", "text/plain; charset=utf-8",
        "-D", "publish", "user-property", "only", "one")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/array", "-m", '[1, 2.5e3, "x", false]', "-q", "0")
    pub(tools, broker, "mosquitto", *p, "-t", f"{t}/json", "-m", JSON.decode(), "-q", "2", *V5_PROPS)
    return 7


FORMAT_CASES = [
    pytest.param("311", [], id="payload-only"),
    pytest.param("311", ["-v"], id="v"),
    pytest.param("311", ["-N"], id="N"),
    pytest.param("311", ["-v", "-N"], id="v-N"),
    pytest.param("311", ["-F", r"%t|%p|%x|%X|%q|%r|%l|%m|%%|\t|\\|\0|\e[1m|@@|\a|\v|\r"], id="F-message"),
    pytest.param("311", ["-F", "[%20t][%-20t][%5.3t][%08l][%-8l][%3m][%03m][%-3m][%30x][%-4X]"], id="F-widths"),
    pytest.param("311", ["-F", "%t %p", "-N"], id="F-N"),
    pytest.param("311", ["-F", "%j"], id="F-j"),
    pytest.param("311", ["-F", "%J"], id="F-J"),
    pytest.param("311", ["-F", "%j", "--pretty"], id="F-j-pretty"),
    pytest.param("311", ["-F", "%J", "--pretty"], id="F-J-pretty"),
    pytest.param("311", ["-F", "before %j after"], id="F-j-in-text"),
    pytest.param("5", ["-v"], id="v5-v"),
    pytest.param("5", ["-F", "%C|%D|%E|%F|%P|%R|%S|%A|%t|%p", "-D", "subscribe", "subscription-identifier", "7"],
                 id="v5-F-properties"),
    pytest.param("5", ["-F", "[%12C][%-12R][%06E][%3F][%-4S][%.4C][%4.2R]",
                       "-D", "subscribe", "subscription-identifier", "42"], id="v5-F-widths"),
    pytest.param("5", ["-F", "%j", "-D", "subscribe", "subscription-identifier", "7"], id="v5-F-j"),
    pytest.param("5", ["-F", "%J"], id="v5-F-J"),
    pytest.param("5", ["-F", "%j", "--pretty"], id="v5-F-j-pretty"),
    pytest.param("5", ["-F", "%J", "--pretty", "-D", "subscribe", "subscription-identifier", "3"],
                 id="v5-F-J-pretty"),
]


@pytest.mark.parametrize("version,args", FORMAT_CASES)
def test_output_bytes_match_mosquitto_sub(tools, any_broker, data_files, version, args):
    """The same messages through midge sub and mosquitto_sub with the same options: the
    same bytes on stdout (JSON timestamps aside) and on stderr (%J's errors)."""
    b = any_broker
    t = tag("fmt")
    publish_retained_first(tools, b, t)
    expected = 7
    subs = {tool: start_sub(tools, b, tool, "-V", version, "-q", "2", "-t", f"{t}/#", "-C", str(expected), *args)
            for tool in TOOLS}
    assert publish_message_set(tools, b, t, data_files) == expected
    for p in subs.values():
        p.finish()
    assert subs["mosquitto"].proc.returncode == 0, subs["mosquitto"].describe()
    compare_runs(f"sub {' '.join(args)} (-V {version}, {b.kind} broker)", subs["midge"], subs["mosquitto"],
                 normalise=norm_time)


def test_time_specifiers_have_mosquittos_shape(tools, midge_broker):
    """%I, %U, @... and the "tst" of %j print the time of printing: compared with every
    digit masked (the same shape: fields, widths, separators, time zone)."""
    b = midge_broker
    t = tag("time")
    fmt = "%I|%U|@Y-@m-@dT@H:@M|@s|@N|@@|%j"
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "-C", "1", "-F", fmt) for tool in TOOLS}
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-m", "tick")
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    mask = lambda s: re.sub(rb"[0-9]", b"9", s)  # noqa: E731
    compare_runs("sub -F " + fmt, subs["midge"], subs["mosquitto"], normalise=mask)


# =======================================================================================
# 2. Interop: midge <-> mosquitto tools over TCP, TLS, mutual TLS; publishing sources; rr
# =======================================================================================

@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("transport", ["tcp", "tls", "mtls"])
def test_interop_qos_transports(tools, any_broker, transport, version):
    """midge sub and mosquitto_sub both receive what midge pub and mosquitto_pub send at
    QoS 0, 1 and 2, over TCP, TLS (--cafile) and mutual TLS (--cert/--key)."""
    b = any_broker
    t = tag(f"interop-{transport}")
    mark = b.mark()
    subs = {tool: start_sub(tools, b, tool, "-V", version, "-q", "2", "-t", f"{t}/#", "-C", "6",
                            "-F", "%q %t %p", transport=transport) for tool in TOOLS}
    expected = []
    for ptool in TOOLS:
        for q in (0, 1, 2):
            topic = f"{t}/{ptool}/q{q}"
            pub(tools, b, ptool, "-V", version, "-q", str(q), "-t", topic, "-m", f"from {ptool} at {q}",
                transport=transport)
            expected.append(f"{q} {topic} from {ptool} at {q}".encode())
    for tool, p in subs.items():
        assert p.finish() == 0, p.describe()
        # (QoS 2 messages are shown at PUBREL: compare as sets.)
        assert sorted(lines_of(p.stdout)) == sorted(expected), f"{tool} sub:\n{p.describe()}"
        assert p.stderr == b""
    if transport != "tcp":
        assert not b.find_log(r"(?i)(tls|ssl|handshake).*(error|fail)", since=mark), b.log()[mark:][-3000:]


PAIRS = [pytest.param("midge", "mosquitto", id="midge_pub-to-mosquitto_sub"),
         pytest.param("mosquitto", "midge", id="mosquitto_pub-to-midge_sub")]


@pytest.mark.parametrize("ptool,stool", PAIRS)
def test_retained_then_cleared(tools, midge_broker, ptool, stool):
    """-r: a later subscriber gets the message with the retain flag; -r -n clears it."""
    b = midge_broker
    t = tag("retain")
    pub(tools, b, ptool, "-t", f"{t}/r", "-m", "kept", "-r", "-q", "1")
    s = start_sub(tools, b, stool, "-t", f"{t}/#", "-C", "1", "-F", "%r|%q|%t|%p", "-q", "1", wait=False)
    assert s.finish() == 0, s.describe()
    assert s.stdout == f"1|1|{t}/r|kept\n".encode()
    pub(tools, b, ptool, "-t", f"{t}/r", "-n", "-r", "-q", "1")
    s = start_sub(tools, b, stool, "-t", f"{t}/#", "-C", "1", "-F", "%r|%t|%p")
    pub(tools, b, ptool, "-t", f"{t}/marker", "-m", "marker")
    assert s.finish() == 0, s.describe()
    assert s.stdout == f"0|{t}/marker|marker\n".encode(), "the retained message was not cleared"


SOURCES = {
    # name: (publisher options, stdin, what a %l:%x subscriber sees, or None: as mosquitto_pub)
    "null": (["-n"], None, [b"0:"]),
    "file": (["-f", "{binary}"], None, [f"{len(BINARY)}:{BINARY.hex()}".encode()]),
    "stdin": (["-s"], BINARY, [f"{len(BINARY)}:{BINARY.hex()}".encode()]),
    "lines": (["-l"], b"alpha\nbeta\n\ngamma\r\nlast without newline", None),
    "lines-qos1": (["-l", "-q", "1"], b"one\ntwo\nthree\n", [b"3:" + b"one".hex().encode(),
                                                          b"3:" + b"two".hex().encode(),
                                                          b"5:" + b"three".hex().encode()]),
    "repeat": (["-m", "again", "--repeat", "3"], None, [b"5:" + b"again".hex().encode()] * 3),
    "repeat-delay": (["-m", "x", "--repeat", "2", "--repeat-delay", "0.1", "-q", "1"], None, [b"1:78"] * 2),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_publish_sources(tools, midge_broker, data_files, source):
    """-n, -f, -s, -l and --repeat send what mosquitto_pub sends: midge pub into
    mosquitto_sub, mosquitto_pub into midge sub, and both must see the same messages."""
    b = midge_broker
    args, stdin, expected = SOURCES[source]
    args = [a.format(binary=data_files["binary"]) for a in args]
    seen = {}
    for ptool, stool in (("midge", "mosquitto"), ("mosquitto", "midge")):
        t = tag(f"src-{source}")
        s = start_sub(tools, b, stool, "-t", f"{t}/#", "-F", "%l:%x", "-q", "1")
        pid = unique_id("src")
        mark = b.mark()
        pub(tools, b, ptool, "-t", f"{t}/data", "-i", pid, *args, stdin=stdin)
        # The end marker goes once the broker has read all the publisher sent.
        b.wait_for_log(rf"Client {re.escape(pid)} disconnected", since=mark)
        pub(tools, b, "mosquitto", "-t", f"{t}/end", "-m", "END", "-q", "1")
        s.wait_output(rb"(?m)^3:454e44$")
        s.kill(signal.SIGTERM)
        seen[ptool] = lines_of(s.stdout)[:-1]
    assert seen["midge"] == seen["mosquitto"], (
        f"{source}: midge pub sent {seen['midge']}, mosquitto_pub sent {seen['mosquitto']}")
    if expected is not None:
        assert seen["midge"] == expected


@pytest.mark.parametrize("mode", ["-s", "-l"])
def test_pub_empty_stdin_like_mosquitto(tools, midge_broker, mode):
    """-s with nothing on stdin: mosquitto_pub refuses ("Error: Zero length input.");
    -l with nothing: nothing is sent. Compared: exit code, stdout, stderr."""
    b = midge_broker
    t = tag("empty")
    r = {tool: pub(tools, b, tool, "-t", f"{t}/x", mode, stdin=b"", check=False) for tool in TOOLS}
    compare_runs(f"pub {mode} < /dev/null", r["midge"], r["mosquitto"])


class Responder:
    """A paho 5.0 client that answers each request on its Response Topic, with the
    request's Correlation Data and a Content Type."""

    def __init__(self, broker: CliBroker, topic: str):
        require_paho()
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self._Properties, self._PacketTypes = Properties, PacketTypes
        self.requests: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("resp"),
                                  protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(HOST, broker.port)
        self.client.loop_start()
        if not subscribed.wait(TIMEOUT):
            self.close()
            raise AssertionError("the paho responder did not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        self.requests.append(msg)
        rt = getattr(msg.properties, "ResponseTopic", None)
        if not rt:
            return
        props = self._Properties(self._PacketTypes.PUBLISH)
        props.ContentType = "text/reply"
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr:
            props.CorrelationData = corr
        client.publish(rt, b"reply to " + msg.payload, qos=1, properties=props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def responder(midge_broker):
    t = tag("rr")
    r = Responder(midge_broker, f"{t}/request")
    r.topic = t
    yield r
    r.close()


RR_CASES = [
    pytest.param([], id="payload"),
    pytest.param(["-v"], id="v"),
    pytest.param(["-F", "%t|%p|%C|%D|%q", "-D", "publish", "correlation-data", "id-1"], id="F-properties"),
    pytest.param(["-N", "-q", "1"], id="N-q1"),
    pytest.param(["-F", "%j", "--pretty", "-q", "2"], id="j-pretty-q2"),
]


@pytest.mark.parametrize("args", RR_CASES)
def test_rr_prints_the_response_like_mosquitto_rr(tools, midge_broker, responder, args):
    b = midge_broker
    t = responder.topic
    results = {}
    for tool in TOOLS:
        results[tool] = run([*tools.cmd(tool, "rr"), *conn(b), "-t", f"{t}/request", "-e", f"{t}/response",
                             "-m", "question", *args])
    assert results["mosquitto"].rc == 0, results["mosquitto"]
    assert [m.payload for m in responder.requests] == [b"question", b"question"]
    compare_runs(f"rr {' '.join(args)}", results["midge"], results["mosquitto"], normalise=norm_time)
    assert b"reply to question" in results["midge"].stdout


def test_rr_timeout(tools, midge_broker):
    """-W with nobody answering: exit code and message as mosquitto_rr's."""
    t = tag("rr-timeout")
    procs = {tool: Proc([*tools.cmd(tool, "rr"), *conn(midge_broker), "-t", f"{t}/request", "-e", f"{t}/response",
                         "-m", "anyone?", "-W", "1"]) for tool in TOOLS}
    for p in procs.values():
        p.finish(timeout=10)
    compare_runs("rr -W 1", procs["midge"], procs["mosquitto"])


# =======================================================================================
# 3. Flags
# =======================================================================================

def test_C_exits_after_count(tools, midge_broker):
    b = midge_broker
    t = tag("C")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "-C", "2", "-v") for tool in TOOLS}
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-l", stdin=b"one\ntwo\nthree\n")
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs("sub -C 2", subs["midge"], subs["mosquitto"])
    assert subs["midge"].stdout == f"{t}/x one\n{t}/x two\n".encode()


def test_W_times_out_with_code_27(tools, midge_broker):
    t = tag("W")
    subs = {tool: start_sub(tools, midge_broker, tool, "-t", f"{t}/#", "-W", "1") for tool in TOOLS}
    for p in subs.values():
        p.finish(timeout=10)
    assert subs["mosquitto"].proc.returncode == 27
    compare_runs("sub -W 1", subs["midge"], subs["mosquitto"])
    assert subs["midge"].stderr == b"Timed out\n"


def test_E_exits_once_subscribed(tools, midge_broker):
    b = midge_broker
    t = tag("E")
    pub(tools, b, "mosquitto", "-t", f"{t}/r", "-m", "retained", "-r")
    res = {}
    for tool in TOOLS:
        mark = b.mark()
        p = start_sub(tools, b, tool, "-t", f"{t}/#", "-E", "-v", wait=False)
        p.finish()
        b.wait_for_log(rf"Sending SUBACK to {re.escape(p.client_id)}\b", since=mark)
        res[tool] = p
    compare_runs("sub -E", res["midge"], res["mosquitto"])
    assert res["midge"].proc.returncode == 0


def test_R_skips_retained(tools, midge_broker):
    b = midge_broker
    t = tag("R")
    pub(tools, b, "mosquitto", "-t", f"{t}/old", "-m", "stale", "-r")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "-R", "-C", "1", "-v") for tool in TOOLS}
    pub(tools, b, "mosquitto", "-t", f"{t}/new", "-m", "fresh")
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs("sub -R", subs["midge"], subs["mosquitto"])
    assert subs["midge"].stdout == f"{t}/new fresh\n".encode()


def test_retained_only(tools, midge_broker):
    """--retained-only prints the retained messages and exits at the first live one."""
    b = midge_broker
    t = tag("retonly")
    pub(tools, b, "mosquitto", "-t", f"{t}/a", "-m", "ra", "-r")
    pub(tools, b, "mosquitto", "-t", f"{t}/b", "-m", "rb", "-r")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "--retained-only", "-v") for tool in TOOLS}
    pub(tools, b, "mosquitto", "-t", f"{t}/live", "-m", "live")
    for tool, p in subs.items():
        assert p.finish() == 0, p.describe()
        # (The broker may send retained messages in any order.)
        assert sorted(lines_of(p.stdout)) == [f"{t}/a ra".encode(), f"{t}/b rb".encode()], f"{tool}: {p.describe()}"
        assert p.stderr == b""


@pytest.mark.parametrize("tool", TOOLS)
def test_remove_retained(tools, midge_broker, tool):
    """--remove-retained clears the retained messages it receives, but not the ones -T
    filters out (mosquitto_sub(1): "Use -T to filter out messages you do not want to be
    cleared"): a later subscriber gets only those.

    (No -C: mosquitto_sub 2.0.11 with --remove-retained and -C sends DISCONNECT and then
    does not exit. The test waits for the clearing PUBLISHes in the broker log instead.)"""
    b = midge_broker
    t = tag("rmret")
    for name in ("a", "b", "keep"):
        pub(tools, b, "mosquitto", "-t", f"{t}/{name}", "-m", name, "-r", "-q", "1")
    mark = b.mark()
    p = start_sub(tools, b, tool, "-t", f"{t}/#", "--remove-retained", "-T", f"{t}/keep", "-v", wait=False)
    wait_log_count(b, rf"Received PUBLISH from {re.escape(p.client_id)} \(d0, q1, r1, m\d+, '{re.escape(t)}/[ab]', "
                      rf"\.\.\. \(0 bytes\)\)", 2, mark, [p])
    p.wait_output(rb"(?s)^(?=.*/a a\n)(?=.*/b b\n)")
    p.kill(signal.SIGTERM)
    assert sorted(lines_of(p.stdout)[:2]) == [f"{t}/a a".encode(), f"{t}/b b".encode()], p.describe()
    later = start_sub(tools, b, "mosquitto", "-t", f"{t}/#", "-C", "2", "-v")
    pub(tools, b, "mosquitto", "-t", f"{t}/marker", "-m", "marker")
    assert later.finish() == 0, (f"after {tool} sub --remove-retained -T {t}/keep, a new subscriber expected "
                                 f"the retained {t}/keep and a marker:\n{later.describe()}")
    assert lines_of(later.stdout) == [f"{t}/keep keep".encode(), f"{t}/marker marker".encode()], later.describe()


def test_remove_retained_with_a_count_clears_the_last_one_too(tools, any_broker):
    """`midge sub -C 2 --remove-retained`: both retained messages it counted are cleared
    before it leaves; its last clearing PUBLISH went after its DISCONNECT 3 times in 4, and
    that message stayed retained. (mosquitto_sub 2.0.11 does not exit in this case, so midge
    alone, three times.)"""
    b = any_broker
    for run in range(3):
        t = tag(f"rmretC{run}")
        for name in ("a", "b"):
            pub(tools, b, "mosquitto", "-t", f"{t}/{name}", "-m", name, "-r", "-q", "1")
        p = start_sub(tools, b, "midge", "-t", f"{t}/#", "--remove-retained", "-C", "2", "-v", wait=False)
        assert p.finish() == 0, p.describe()
        later = start_sub(tools, b, "mosquitto", "-t", f"{t}/#", "-C", "1", "-v")
        pub(tools, b, "mosquitto", "-t", f"{t}/marker", "-m", "marker")
        assert later.finish() == 0, later.describe()
        assert lines_of(later.stdout) == [f"{t}/marker marker".encode()], later.describe()


@pytest.mark.parametrize("tool", TOOLS)
def test_sub_ends_when_its_reader_goes(tools, midge_broker, tool):
    """`sub ... | head -n 1`: once head has its line and is gone, the next message finds the
    pipe closed and the subscriber exits 0, as mosquitto_sub does (midge sub ran on for ever,
    and the pipeline with it)."""
    import shlex
    b = midge_broker
    t = tag("pipe")
    cid = unique_id("cli")
    sub = " ".join(shlex.quote(a) for a in [*tools.cmd(tool, "sub"), *conn(b), "-i", cid, "-t", t])
    mark = b.mark()
    shell = subprocess.Popen(["bash", "-c", f'{sub} | head -n 1; echo "sub exited ${{PIPESTATUS[0]}}"'],
                             stdout=subprocess.PIPE)
    try:
        wait_log_count(b, rf"Sending SUBACK to {re.escape(cid)}\b", 1, mark)
        for i in range(20):
            if shell.poll() is not None:
                break
            pub(tools, b, "mosquitto", "-t", t, "-m", f"m{i}")
        out, _ = shell.communicate(timeout=TIMEOUT)
    finally:
        shell.kill()
    assert out == b"m0\nsub exited 0\n"


@pytest.mark.parametrize("tool", TOOLS)
def test_the_options_file_comes_before_the_command_line(tools, midge_broker, tool, tmp_path):
    """mosquitto's clients read their options from $XDG_CONFIG_HOME/mosquitto_pub (and _sub),
    else ~/.config/mosquitto_pub, before the command line's: the broker's port and the QoS
    there are used, and a -q on the command line wins over the file's. (midge ignored the
    file: the clients went to port 1883.)"""
    b = midge_broker
    t = tag("optfile")
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "mosquitto_pub").write_text(f"# the broker\n-h {HOST}\n-p {b.port}\n-q 1\n")
    (home / ".config" / "mosquitto_sub").write_text(f"-h {HOST}\n-p {b.port}\n-v\n")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(home)}
    cid = unique_id("cli")
    mark = b.mark()
    sub = subprocess.Popen([*tools.cmd(tool, "sub"), "-i", cid, "-t", f"{t}/#", "-C", "2"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_log_count(b, rf"Sending SUBACK to {re.escape(cid)}\b", 1, mark)
        for qos in ("", "2"):
            r = subprocess.run([*tools.cmd(tool, "pub"), "-t", f"{t}/q{qos or 'file'}", "-m", "x",
                                *(["-q", qos] if qos else [])], env=env, capture_output=True, timeout=TIMEOUT)
            assert r.returncode == 0, r
        out, err = sub.communicate(timeout=TIMEOUT)
    finally:
        sub.kill()
    assert out == f"{t}/qfile x\n{t}/q2 x\n".encode(), (out, err)
    assert re.search(rf"Received PUBLISH from \S+ \(d0, q1, r0, m\d+, '{re.escape(t)}/qfile'", b.log()[mark:])
    assert re.search(rf"Received PUBLISH from \S+ \(d0, q2, r0, m\d+, '{re.escape(t)}/q2'", b.log()[mark:])
    # With XDG_CONFIG_HOME set, the file is read there (and ~/.config is not).
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "mosquitto_pub").write_text(f"-p {b.port}\n-h {HOST}\n")
    r = subprocess.run([*tools.cmd(tool, "pub"), "-t", f"{t}/xdg", "-m", "x"],
                       env=env | {"XDG_CONFIG_HOME": str(xdg)}, capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r


def test_T_filters_out(tools, midge_broker):
    b = midge_broker
    t = tag("T")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "-T", f"{t}/skip/#", "-T", f"{t}/+/hidden",
                            "-C", "1", "-v") for tool in TOOLS}
    for topic in ("skip", "skip/deeper", "x/hidden", "shown"):
        pub(tools, b, "mosquitto", "-t", f"{t}/{topic}", "-m", topic)
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs("sub -T", subs["midge"], subs["mosquitto"])
    assert subs["midge"].stdout == f"{t}/shown shown\n".encode()


def test_U_unsubscribes(tools, midge_broker):
    b = midge_broker
    t = tag("U")
    subs = {}
    for tool in TOOLS:
        mark = b.mark()
        p = start_sub(tools, b, tool, "-t", f"{t}/a/#", "-t", f"{t}/b/#", "-U", f"{t}/a/#", "-C", "1", "-v")
        wait_log_count(b, rf"Sending UNSUBACK to {re.escape(p.client_id)}\b", 1, mark, [p])
        subs[tool] = p
    pub(tools, b, "mosquitto", "-t", f"{t}/a/x", "-m", "unsubscribed")
    pub(tools, b, "mosquitto", "-t", f"{t}/b/x", "-m", "subscribed")
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs("sub -U", subs["midge"], subs["mosquitto"])
    assert subs["midge"].stdout == f"{t}/b/x subscribed\n".encode()


def test_random_filter_100_prints_everything(tools, midge_broker):
    """--random-filter 100: every message is printed (mosquitto_sub(1)). Not compared with
    mosquitto_sub 2.0.11, which takes the percentage ten times too low (client_shared.c:
    random_filter = 10*atof(arg), compared with random()%10000) and prints about 10%."""
    b = midge_broker
    t = tag("rf")
    p = start_sub(tools, b, "midge", "-t", f"{t}/#", "--random-filter", "100", "-C", "5", "-v")
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-l", stdin=b"1\n2\n3\n4\n5\n")
    assert p.finish() == 0, p.describe()
    assert lines_of(p.stdout) == [f"{t}/x {i}".encode() for i in range(1, 6)]


def test_random_filter_C_counts_received_messages(tools, midge_broker):
    """mosquitto_sub filters at printing time: -C counts the messages received, printed
    or not. With --random-filter 0.1 and 3 messages, -C 3 exits (0) after the third."""
    b = midge_broker
    t = tag("rfc")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "--random-filter", "0.1", "-C", "3", "-W", "2", "-v")
            for tool in TOOLS}
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-l", stdin=b"1\n2\n3\n")
    for p in subs.values():
        p.finish(timeout=10)
    assert subs["mosquitto"].proc.returncode == 0, subs["mosquitto"].describe()
    assert subs["midge"].proc.returncode == 0, (
        f"midge sub --random-filter 0.1 -C 3 did not exit after 3 messages:\n{subs['midge'].describe()}")


def test_random_filter_0_is_refused_like_mosquitto(tools):
    """mosquitto_sub takes chances from 0.1 to 100: 0 is a usage error (exit 1)."""
    port = free_port()
    args = ["-h", HOST, "-p", str(port), "-t", "x", "--random-filter", "0", "-E"]
    r = {tool: run([*tools.cmd(tool, "sub"), *args]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc == 1
    assert (r["link"].rc, first_line(r["link"].stderr)) == (r["mosquitto"].rc, first_line(r["mosquitto"].stderr)), (
        f"midge: {r['link']}\nmosquitto: {r['mosquitto']}")


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_q_subscription_qos(tools, midge_broker, sub_qos):
    """-q: the subscription's QoS caps the delivery QoS; pub -q sets the message's."""
    b = midge_broker
    t = tag("q")
    subs = {tool: start_sub(tools, b, tool, "-t", f"{t}/#", "-q", str(sub_qos), "-C", "6", "-F", "%q %p")
            for tool in TOOLS}
    expected = []
    for ptool in TOOLS:
        for q in (0, 1, 2):
            pub(tools, b, ptool, "-t", f"{t}/x", "-q", str(q), "-m", f"{ptool}{q}")
            expected.append(f"{min(q, sub_qos)} {ptool}{q}".encode())
    for tool, p in subs.items():
        assert p.finish() == 0, p.describe()
        assert sorted(lines_of(p.stdout)) == sorted(expected), f"{tool}: {p.describe()}"


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("tool", TOOLS)
def test_c_persistent_session(tools, midge_broker, tool, version):
    """-c -i: the session outlives the connection; QoS 1 messages published while the
    client is away come when it is back."""
    b = midge_broker
    t = tag("c")
    cid = unique_id("persist")
    first = start_sub(tools, b, tool, "-V", version, "-c", "-q", "1", "-t", f"{t}/#", "-E", client_id=cid, wait=False)
    assert first.finish() == 0, first.describe()
    b.wait_for_log(rf"Client {re.escape(cid)} disconnected")
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-m", "queued 1", "-q", "1")
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-m", "queued 2", "-q", "1")
    again = start_sub(tools, b, tool, "-V", version, "-c", "-q", "1", "-t", f"{t}/#", "-C", "2", client_id=cid,
                      wait=False)
    assert again.finish() == 0, again.describe()
    assert again.stdout == b"queued 1\nqueued 2\n"


@pytest.mark.parametrize("expiry,expected", [("0", [b"online"]), ("60", [b"offline", b"online"])])
@pytest.mark.parametrize("tool", TOOLS)
def test_x_session_expiry(tools, midge_broker, tool, expiry, expected):
    """-x (5.0) with -c: a session with expiry 0 ends with the connection; with 60 it
    keeps what came meanwhile."""
    b = midge_broker
    t = tag("x")
    cid = unique_id("expiry")
    first = start_sub(tools, b, tool, "-V", "5", "-c", "-x", expiry, "-q", "1", "-t", f"{t}/#", "-E",
                      client_id=cid, wait=False)
    assert first.finish() == 0, first.describe()
    b.wait_for_log(rf"Client {re.escape(cid)} disconnected")
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-m", "offline", "-q", "1")
    again = start_sub(tools, b, tool, "-V", "5", "-c", "-q", "1", "-t", f"{t}/#", "-C", str(len(expected)),
                      client_id=cid)
    pub(tools, b, "mosquitto", "-t", f"{t}/x", "-m", "online", "-q", "1")
    assert again.finish() == 0, again.describe()
    assert lines_of(again.stdout) == expected


def test_k_keepalive_in_connect(tools, midge_broker):
    b = midge_broker
    t = tag("k")
    for tool in TOOLS:
        mark = b.mark()
        p = start_sub(tools, b, tool, "-t", f"{t}/#", "-k", "17", "-E", wait=False)
        assert p.finish() == 0, p.describe()
        b.wait_for_log(rf"as {re.escape(p.client_id)} \(p2, c1, k17\)", since=mark)
        mark = b.mark()
        pub(tools, b, tool, "-t", f"{t}/x", "-m", "x", "-k", "33", "-i", unique_id("kp"))
        b.wait_for_log(r"\(p2, c1, k33\)", since=mark)


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("tool", TOOLS)
def test_will_published_when_killed(tools, midge_broker, tool, version):
    """--will-*: killed with SIGKILL, the client's will goes out (QoS, retain, and the 5.0
    will properties given with -D will)."""
    b = midge_broker
    t = tag("will")
    observer = start_sub(tools, b, "mosquitto", "-V", "5", "-t", f"{t}/will", "-q", "1", "-C", "1",
                         "-F", "%r|%q|%C|%P|%p")
    extra = ["-D", "will", "content-type", "text/will", "-D", "will", "user-property", "who", tool] if version == "5" else []
    victim = start_sub(tools, b, tool, "-V", version, "-t", f"{t}/x", "--will-topic", f"{t}/will",
                       "--will-payload", "gone", "--will-qos", "1", "--will-retain", *extra)
    victim.kill(signal.SIGKILL)
    assert observer.finish() == 0, observer.describe()
    props = f"text/will|who:{tool}" if version == "5" else "|"
    assert observer.stdout == f"0|1|{props}|gone\n".encode()
    later = start_sub(tools, b, "mosquitto", "-t", f"{t}/will", "-C", "1", "-F", "%r|%p", wait=False)
    assert later.finish() == 0, later.describe()
    assert later.stdout == b"1|gone\n", "--will-retain: the will is retained"


@pytest.mark.parametrize("tool", TOOLS)
def test_no_will_after_a_normal_exit(tools, midge_broker, tool):
    b = midge_broker
    t = tag("nowill")
    observer = start_sub(tools, b, "mosquitto", "-t", f"{t}/#", "-C", "1", "-v")
    p = start_sub(tools, b, tool, "-t", f"{t}/x", "--will-topic", f"{t}/will", "--will-payload", "gone", "-E",
                  wait=False)
    assert p.finish() == 0, p.describe()
    b.wait_for_log(rf"Client {re.escape(p.client_id)} disconnected")
    pub(tools, b, "mosquitto", "-t", f"{t}/marker", "-m", "marker")
    assert observer.finish() == 0, observer.describe()
    assert observer.stdout == f"{t}/marker marker\n".encode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("tool", TOOLS)
def test_sub_stopped_by_a_signal_disconnects_and_exits_0(tools, midge_broker, tool, sig):
    """Ctrl-C (or SIGTERM) on a subscriber, as mosquitto_sub: it sends DISCONNECT, so its
    will is not published, and exits 0."""
    b = midge_broker
    t = tag("sig")
    observer = start_sub(tools, b, "mosquitto", "-t", f"{t}/#", "-C", "1", "-v")
    p = start_sub(tools, b, tool, "-t", f"{t}/x", "--will-topic", f"{t}/will", "--will-payload", "gone")
    mark = b.mark()
    p.proc.send_signal(sig)
    assert p.finish() == 0, p.describe()
    b.wait_for_log(rf"Client {re.escape(p.client_id)} disconnected\.", since=mark)
    pub(tools, b, "mosquitto", "-t", f"{t}/marker", "-m", "marker")
    assert observer.finish() == 0, observer.describe()
    assert observer.stdout == f"{t}/marker marker\n".encode(), "no will: the marker comes first"


@pytest.mark.parametrize("tool", TOOLS)
def test_L_url(tools, any_broker, tool):
    """-L mqtt://user@host:port/topic: host, port, user name and topic from the URL."""
    b = any_broker
    t = tag("L")
    url = f"mqtt://someuser@{HOST}:{b.port}/{t}/via-url"
    cid = unique_id("url")
    mark = b.mark()
    s = Proc([*tools.cmd(tool, "sub"), "-L", url, "-i", cid, "-C", "1", "-v"])
    wait_log_count(b, rf"Sending SUBACK to {re.escape(cid)}\b", 1, mark, [s])
    b.wait_for_log(rf"as {re.escape(cid)} \(p2, c1, k60, u'someuser'\)", since=mark)
    pub_cid = unique_id("urlp")
    r = run([*tools.cmd(tool, "pub"), "-L", url, "-m", "hello", "-i", pub_cid])
    assert r.rc == 0, r
    b.wait_for_log(rf"as {re.escape(pub_cid)} \(p2, c1, k60, u'someuser'\)", since=mark)
    assert s.finish() == 0, s.describe()
    assert s.stdout == f"{t}/via-url hello\n".encode()


@pytest.mark.parametrize("tool", TOOLS)
def test_u_P_and_L_with_password(tools, auth_broker, tool):
    """-u/-P (and user:password in -L) against a password file made by midge passwd."""
    b = auth_broker
    t = tag("auth")
    cid = unique_id("authsub")
    mark = b.mark()
    s = Proc([*tools.cmd(tool, "sub"), *conn(b), "-u", "alice", "-P", "secret", "-i", cid, "-t", f"{t}/#",
              "-C", "2", "-v"])
    wait_log_count(b, rf"Sending SUBACK to {re.escape(cid)}\b", 1, mark, [s])
    r = run([*tools.cmd(tool, "pub"), *conn(b), "-u", "alice", "-P", "secret", "-t", f"{t}/a", "-m", "with -u -P"])
    assert r.rc == 0, r
    r = run([*tools.cmd(tool, "pub"), "-L", f"mqtt://alice:secret@{HOST}:{b.port}/{t}/b", "-m", "with -L"])
    assert r.rc == 0, r
    assert s.finish() == 0, s.describe()
    assert s.stdout == f"{t}/a with -u -P\n{t}/b with -L\n".encode()


@pytest.mark.parametrize("version", ["311", "5"])
def test_wrong_password_like_mosquitto(tools, auth_broker, version):
    b = auth_broker
    r = {tool: run([*tools.cmd(tool, "pub"), *conn(b), "-V", version, "-u", "alice", "-P", "wrong", "-t", "x",
                    "-m", "y"]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc != 0
    compare_runs(f"pub -u alice -P wrong -V {version} ({b.kind} broker)", r["link"], r["mosquitto"])


def test_A_bind_address(tools, midge_broker):
    b = midge_broker
    t = tag("A")
    subs = {tool: start_sub(tools, b, tool, "-A", "127.0.0.1", "-t", f"{t}/#", "-C", "2", "-v") for tool in TOOLS}
    for tool in TOOLS:
        pub(tools, b, tool, "-A", "127.0.0.1", "-t", f"{t}/{tool}", "-m", "bound")
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs("sub -A 127.0.0.1", subs["midge"], subs["mosquitto"])


def test_A_unusable_address_like_mosquitto(tools, midge_broker):
    r = {tool: run([*tools.cmd(tool, "pub"), *conn(midge_broker), "-A", "192.0.2.1", "-t", "x", "-m", "y"])
         for tool in TOOLS}
    compare_runs("pub -A 192.0.2.1", r["midge"], r["mosquitto"])


def test_D_publish_properties_reach_subscribers(tools, midge_broker):
    """midge pub -D publish ...: a mosquitto_sub -V 5 subscriber prints what it prints for
    mosquitto_pub with the same options, and paho sees each property."""
    require_paho()
    import paho.mqtt.client as mqtt
    b = midge_broker
    t = tag("D")
    got = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique_id("pahoD"), protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(m)
    c.on_subscribe = lambda *a, **k: ready.set()
    c.on_connect = lambda cl, *a: cl.subscribe(f"{t}/#", qos=1)
    c.connect(HOST, b.port)
    c.loop_start()
    try:
        assert ready.wait(TIMEOUT), "paho did not subscribe"
        fmt = "%t|%C|%D|%E|%F|%P|%R|%p"
        out = {}
        for tool in TOOLS:
            s = start_sub(tools, b, "mosquitto", "-V", "5", "-t", f"{t}/#", "-C", "1", "-F", fmt)
            pub(tools, b, tool, "-V", "5", "-t", f"{t}/{tool}", "-m", "payload", "-q", "1", *V5_PROPS)
            assert s.finish() == 0, s.describe()
            out[tool] = s.stdout.replace(f"{t}/{tool}".encode(), b"<topic>")
        assert_same_bytes("mosquitto_sub -V 5 -F " + fmt, out["midge"], out["mosquitto"])
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # poll: paho's thread delivers
        assert len(got) == 2, [m.topic for m in got]
        m = next(m for m in got if m.topic == f"{t}/midge")
        p = m.properties
        assert p.ContentType == "application/json"
        assert p.CorrelationData == b"corr-42"
        assert 3590 <= p.MessageExpiryInterval <= 3600
        assert p.PayloadFormatIndicator == 1
        assert p.ResponseTopic == "reply/here"
        assert p.UserProperty == [("k1", "v1"), ("key two", "value two")]
    finally:
        c.disconnect()
        c.loop_stop()


# =======================================================================================
# 4. Errors and exit codes
# =======================================================================================

def first_line(b: bytes) -> bytes:
    return b.split(b"\n", 1)[0]


REFUSED_ARGS = {"pub": ["-t", "x", "-m", "y"], "sub": ["-t", "x"], "rr": ["-t", "x", "-e", "y", "-m", "z"]}


@pytest.mark.parametrize("version,code", [("311", 5), ("5", 135)])
@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_not_authorised(tools, auth_broker, kind, version, code):
    """Anonymous client, allow_anonymous false: the same message and exit code (3.1.1:
    "Connection error: Connection Refused: not authorised." and 5; 5.0: 135)."""
    args = [*conn(auth_broker), "-V", version, *REFUSED_ARGS[kind]]
    r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc == code, r["mosquitto"]
    if kind == "rr" and version == "311":
        # mosquitto_rr 2.0.11 says "Connection error: Unknown reason" here (it reads the 3.1.1
        # return code as a 5.0 reason code); midge says what the code means.
        assert r["mosquitto"].stderr == b"Connection error: Unknown reason\n", r["mosquitto"]
        assert (r["link"].rc, r["link"].stderr) == (code, b"Connection error: Connection Refused: not authorised.\n"), r["link"]
        return
    compare_runs(f"{kind} -V {version} refused ({auth_broker.kind} broker)", r["link"], r["mosquitto"])


@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_connection_refused(tools, kind):
    """Nothing listening on the port: "Error: Connection refused", exit code 1."""
    args = ["-h", HOST, "-p", str(free_port()), *REFUSED_ARGS[kind]]
    r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in ("link", "mosquitto")}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (1, b"Error: Connection refused\n"), r["mosquitto"]
    compare_runs(f"{kind} to a closed port", r["link"], r["mosquitto"])


USAGE_ERRORS = [
    pytest.param("pub", ["-t", "x"], id="pub-no-message"),
    pytest.param("pub", ["-m", "x"], id="pub-no-topic"),
    pytest.param("pub", [], id="pub-nothing"),
    pytest.param("sub", [], id="sub-no-topic"),
    pytest.param("rr", ["-t", "x", "-m", "y"], id="rr-no-response-topic"),
    pytest.param("rr", ["-t", "x", "-e", "y"], id="rr-no-message"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-q", "3"], id="pub-qos-3"),
    pytest.param("sub", ["-t", "x", "-q", "3"], id="sub-qos-3"),
    pytest.param("rr", ["-t", "x", "-e", "y", "-m", "z", "-q", "3"], id="rr-qos-3"),
    pytest.param("pub", ["-t", "x", "-m", "y", "--will-topic", "w", "--will-qos", "3"], id="pub-will-qos-3"),
]

MORE_USAGE_ERRORS = [
    pytest.param("pub", ["-t", "x", "-m", "y", "-k", "3"], id="keepalive-below-5"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-V", "4"], id="bad-protocol-version"),
    pytest.param("pub", ["-t", "x", "-m", "y", "--no-such-option"], id="unknown-option"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-p", "70000"], id="port-out-of-range"),
    pytest.param("pub", ["-t", "x/#", "-m", "y"], id="pub-wildcard-topic"),
    pytest.param("sub", ["-t", "x/#/y"], id="sub-bad-filter"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-f", "/nonexistent/file"], id="two-message-sources"),
    pytest.param("pub", ["-t", "x", "-f", "/nonexistent/file"], id="missing-file"),
    pytest.param("pub", ["-t", "x", "-m", "y", "--will-payload", "p"], id="will-payload-without-topic"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-P", "pw"], id="password-without-user"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-c"], id="c-without-id"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-V", "5", "-D", "publish", "bogus", "1"], id="D-unknown-property"),
    pytest.param("pub", ["-t", "x", "-m", "y", "-V", "5", "-D", "connect", "content-type", "1"],
                 id="D-property-not-for-command"),
    pytest.param("sub", ["-t", "x", "-C", "0"], id="sub-C-0"),
    pytest.param("sub", ["-t", "x", "-W", "0"], id="sub-W-0"),
    pytest.param("sub", ["-t", "x", "-F", "%Z"], id="sub-F-unknown"),
    pytest.param("sub", ["-t", "x", "-R", "--retained-only"], id="sub-R-and-retained-only"),
    pytest.param("pub", ["-L", "http://h/t", "-m", "y"], id="bad-url"),
]


def _usage_error(tools, kind, args):
    # A closed port: if a tool accepts the options, it fails to connect instead of hanging.
    full = ["-h", HOST, *([] if "-p" in args else ["-p", str(free_port())]), *args]
    r = {tool: run([*tools.cmd(tool, kind), *full]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc != 0, r["mosquitto"]
    assert (r["link"].rc, first_line(r["link"].stderr)) == (r["mosquitto"].rc, first_line(r["mosquitto"].stderr)), (
        f"{kind} {' '.join(args)}:\n  midge:     {r['link']}\n  mosquitto: {r['mosquitto']}")
    return r


@pytest.mark.parametrize("kind,args", USAGE_ERRORS)
def test_usage_errors(tools, kind, args):
    """Missing topic / message, invalid QoS: the first line of stderr and the exit code."""
    _usage_error(tools, kind, args)


@pytest.mark.parametrize("kind,args", MORE_USAGE_ERRORS)
def test_more_usage_errors(tools, kind, args):
    _usage_error(tools, kind, args)


# Command lines mosquitto's clients refuse as they read them, each checked byte for byte
# (standard error, exit code, whether anything goes to standard output): a value that is
# the next word whatever it is (-k -1), the missing value's name, the blank lines, and the
# order of the checks (an option's value before a missing topic or message).
ARGV_PARITY = [
    ("pub", ["-A"]), ("sub", ["-M"]), ("rr", ["-x"]), ("pub", ["-V"]), ("sub", ["--will-qos"]),
    ("pub", ["--proxy"]), ("rr", ["--unix"]), ("pub", ["--repeat-delay"]), ("sub", ["--random-filter"]),
    ("sub", ["-T"]), ("rr", ["-e"]), ("pub", ["--unknown"]),
    ("pub", ["-k", "-1"]), ("sub", ["-q", "-1"]), ("rr", ["-p", "-1"]), ("pub", ["--will-qos", "-1"]),
    ("pub", ["-M", "0"]), ("rr", ["-M", "0"]), ("sub", ["-x", "A"]), ("pub", ["-x", "-2"]),
    ("pub", ["--repeat", "0"]), ("pub", ["--repeat-delay", "-1"]), ("pub", ["-t", "topic/+"]),
    ("pub", ["-m", "message", "-f", "file"]), ("rr", ["-m", "message", "-f", "file"]), ("pub", ["-l", "-n"]),
    ("pub", ["-i", "id", "-I", "id-prefix"]), ("sub", ["--will-topic", "a/#"]), ("rr", ["-V", "5", "-x", "-1"]),
    ("pub", ["-V", "mqttv311", "-c"]), ("sub", ["-L", "mqtt://localhost"]), ("pub", ["-L", "ws://localhost"]),
    ("pub", ["-V", "5", "-D", "connect", "receive-maximum"]),
    ("sub", ["-V", "5", "-D", "connect", "receive-maximum", "-1"]),
    ("rr", ["-V", "5", "-D", "subscribe", "subscription-identifier", "4294967296"]),
    ("pub", ["-V", "5", "-D", "publish", "subscription-identifier", "1"]),
    ("pub", ["-V", "5", "-D", "auth", "authentication-method", "1"]),
    ("pub", []), ("pub", ["-i", ""]), ("pub", ["-t", "a", "-m", "x", "-i", ""]),
    ("sub", []), ("sub", ["-F", "%."]), ("sub", ["-F", "\\Z"]), ("sub", ["-C", "0"]), ("sub", ["-U", "++"]),
    ("rr", []), ("rr", ["-F", "%Z"]), ("rr", ["-W", "0"]), ("rr", ["-e", "topic/+"]),
    # LONG: a topic of 70,000 bytes, longer than an MQTT string (midge pub sent nothing and
    # exited 0).
    ("pub", ["-t", "a", "-m", "x", "-c", "-V", "5", "-x", "10"]), ("sub", ["-t", "a", "-c", "-V", "5", "-x", "10"]),
    ("pub", ["-t", "LONG", "-m", "x"]), ("sub", ["-t", "a", "-U", "LONG"]),
    ("pub", ["-t", "a", "-m", "x", "--will-topic", "LONG"]), ("rr", ["-t", "a", "-m", "x", "-e", "LONG"]),
    # Control characters and non-characters, which mosquitto_validate_utf8 (and a broker)
    # refuses.
    ("pub", ["-t", "a\x01b", "-m", "x"]), ("sub", ["-t", "a\x7fb"]), ("sub", ["-t", "a", "-T", "\x1b"]),
    ("sub", ["-t", "a", "-U", "\ufdd0"]), ("pub", ["-t", "a", "-m", "x", "--will-topic", "w\n"]),
    ("rr", ["-t", "a", "-m", "x", "-e", "r\x85"]), ("sub", ["-t", "a", "-u", "u\x01"]),
    ("pub", ["-t", "a", "-m", "x", "-i", "a\x01"]), ("sub", ["-t", "a", "-i", "\ufdd0"]),
]


@pytest.mark.parametrize("kind,args", [pytest.param(k, a, id=f"{k} {' '.join(a)}") for k, a in ARGV_PARITY])
def test_refused_command_lines_read_as_mosquittos_byte_for_byte(tools, kind, args, tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "missing"))  # no options file
    args = ["a" * 70_000 if a == "LONG" else a for a in args]
    r = {tool: subprocess.run([*tools.cmd(tool, kind), *args], capture_output=True, timeout=10, env=env,
                              stdin=subprocess.DEVNULL) for tool in ("link", "mosquitto")}
    seen = {tool: (p.returncode, p.stderr, bool(p.stdout)) for tool, p in r.items()}
    assert seen["mosquitto"][0] != 0, seen["mosquitto"]
    assert seen["link"] == seen["mosquitto"], f"midge: {seen['link']}\nmosquitto: {seen['mosquitto']}"


def test_repeated_option_last_wins(tools, midge_broker):
    """mosquitto's tools take an option given twice (a wrapper script adding its own -p,
    say): the last one counts."""
    t = tag("twice")
    args = ["-h", HOST, "-p", str(free_port()), "-p", str(midge_broker.port), "-t", f"{t}/x", "-m", "y"]
    r = {tool: run([*tools.cmd(tool, "pub"), *args]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc == 0, r["mosquitto"]
    compare_runs("pub -p CLOSED -p OPEN", r["link"], r["mosquitto"])


def test_tls_unknown_ca_like_mosquitto(tools, midge_broker, tmp_path):
    """A server certificate from another CA."""
    other = tmp_path / "other-ca"
    r = run([midge_bin(), "cert", "--dir", other, "init"])
    assert r.rc == 0, r
    args = ["-h", HOST, "-p", str(midge_broker.tls_port), "--cafile", other / "ca.crt", "-t", "x", "-m", "y"]
    r = {tool: run([*tools.cmd(tool, "pub"), *args]) for tool in TOOLS}
    # mosquitto_pub 2.0.11 gives one of two answers, depending on whether the handshake
    # fails inside its connect call or in its network loop; midge gives the first.
    answers = {(8, b"Error: A TLS error occurred.\n"), (1, b"Unable to connect (A TLS error occurred.).\n")}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) in answers, r["mosquitto"]
    assert (r["midge"].rc, r["midge"].stderr) == (8, b"Error: A TLS error occurred.\n"), r["midge"]


def test_tls_certificate_required_like_mosquitto(tools, midge_broker):
    """A listener with require_certificate, a client without a certificate."""
    args = ["-h", HOST, "-p", str(midge_broker.mtls_port), "--cafile", midge_broker.pki["ca"], "-t", "x", "-m", "y"]
    r = {tool: run([*tools.cmd(tool, "pub"), *args]) for tool in TOOLS}
    compare_runs("pub without a client certificate", r["midge"], r["mosquitto"])


def test_unknown_host_like_mosquitto(tools, pki):
    """A host name that does not resolve: libmosquitto's connect call fails at once
    (MOSQ_ERR_EAI), and each tool says "Unable to connect (Lookup error.)." and exits 1."""
    for kind in ("pub", "sub", "rr"):
        for extra in ([], ["-d"], ["-V", "5", "--cafile", str(pki["ca"])]):
            args = ["-h", "no-such-host.invalid", *REFUSED_ARGS[kind], *extra]
            r = {tool: run([*tools.cmd(tool, kind), *args], timeout=30) for tool in TOOLS}
            assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (1, b"Unable to connect (Lookup error.).\n"), r
            compare_runs(f"{kind} {' '.join(args)}", r["midge"], r["mosquitto"])


@pytest.mark.parametrize("version", ["311", "5"])
@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_plain_client_to_midge_tls_listener_like_mosquitto(tools, midge_broker, kind, version):
    """A client without TLS options on midge's TLS port: the listener answers the CONNECT
    with a TLS alert, whose first byte (0x15) reads as an MQTT CONNECT. libmosquitto calls
    it a protocol error: "Error: A network protocol error occurred when communicating with
    the broker.", exit code 2; with -d its log line "Error: Unrecognised command 16" (and
    an empty line: the line has a newline of its own) comes after "sending CONNECT".

    (Issue 20, item 3 said mosquitto_pub prints "Error: A TLS error occurred." (8) here:
    mosquitto_pub 2.0.11 does not, as this test shows; midge keeps mosquitto's answer.) With
    -d, midge adds one line of its own after libmosquitto's: the --cafile hint."""
    b = midge_broker
    for debug in ([], ["-d"]):
        args = ["-h", HOST, "-p", str(b.tls_port), "-V", version, *REFUSED_ARGS[kind], *debug]
        r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in TOOLS}
        assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (
            2, b"Error: A network protocol error occurred when communicating with the broker.\n"), r["mosquitto"]
        if debug:
            assert r["mosquitto"].stdout.endswith(b" sending CONNECT\nError: Unrecognised command 16\n\n"), r
            hint = (f"Hint: port {b.tls_port} expects TLS: give the CA's certificate with --cafile (or --capath), "
                    "and --cert and --key if the broker requires a client certificate.\n").encode()
            assert r["midge"].stdout.endswith(hint), r["midge"]
            r["midge"].stdout = r["midge"].stdout[:-len(hint)]
        compare_runs(f"{kind} {' '.join(args)}", r["midge"], r["mosquitto"], normalise=norm_ids)


@pytest.mark.parametrize("kind", ["pub", "rr"])
def test_plain_client_to_mosquitto_tls_listener_like_mosquitto(tools, mosq_broker, kind):
    """The same on mosquitto's TLS port: its listener (OpenSSL) closes the connection, and
    pub and rr say "Error: The connection was lost." (exit 7). (mosquitto_sub is not
    compared: it reconnects and tries again, forever; midge sub, which connects again once it
    has been connected, exits at a first connection that fails, as pub does.)"""
    args = ["-h", HOST, "-p", str(mosq_broker.tls_port), *REFUSED_ARGS[kind]]
    r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in TOOLS}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (7, b"Error: The connection was lost.\n"), r["mosquitto"]
    compare_runs(f"{kind} to mosquitto's TLS port without TLS", r["midge"], r["mosquitto"])


@pytest.fixture(scope="module")
def other_name_pki(tmp_path_factory) -> dict:
    """A CA and a server certificate for other.example only (no IP address)."""
    d = tmp_path_factory.mktemp("pki-other-name")
    for args in (["init"], ["server", "--host", "other.example"]):
        r = run([midge_bin(), "cert", "--dir", d, *args], timeout=30)
        assert r.rc == 0, r
    return {"ca": d / "ca.crt", "server_cert": d / "servers" / "other.example.crt",
            "server_key": d / "servers" / "other.example.key"}


@pytest.fixture(scope="module", params=["midge", "mosquitto"], ids=["midge-broker", "mosquitto-broker"])
def other_name_broker(request, tmp_path_factory, other_name_pki):
    b = _start_broker(request.param, tmp_path_factory.mktemp(f"other-name-{request.param}"), extra_config=[],
                      pki=other_name_pki, name=f"other-name-{request.param}")
    yield b
    _stop_broker(b)


# What mosquitto's tools print for a failed TLS handshake: pub "Error: A TLS error
# occurred." (8) when the handshake fails in its network loop, "Unable to connect (A TLS
# error occurred.)." (1) when it fails in the connect call; which one depends on timing.
# midge gives the first for pub, the second for sub and rr.
TLS_FAILURES = {(8, b"Error: A TLS error occurred.\n"), (1, b"Unable to connect (A TLS error occurred.).\n")}
MIDGE_TLS_FAILURE = {"pub": (8, b"Error: A TLS error occurred.\n"),
                     "sub": (1, b"Unable to connect (A TLS error occurred.).\n"),
                     "rr": (1, b"Unable to connect (A TLS error occurred.).\n")}


@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_tls_host_name_mismatch_like_mosquitto(tools, other_name_broker, kind):
    """A server certificate for other.example, a client connecting to 127.0.0.1 (--cafile,
    no --insecure). mosquitto's tools report it on standard error as any TLS failure; only
    -d shows why, on standard output: libmosquitto's log line "Error: host name
    verification failed.", which midge prints too. (libmosquitto's -d output goes on with
    OpenSSL's own error line, "OpenSSL Error[0]: error:0A000086:SSL routines::certificate
    verify failed", and, when the handshake fails in its loop, a "sending CONNECT" line
    before; midge, on rustls, prints neither.) With --insecure both connect."""
    b = other_name_broker
    for debug in ([], ["-d"]):
        args = ["-h", HOST, "-p", str(b.tls_port), "--cafile", b.pki["ca"], *REFUSED_ARGS[kind], *debug]
        r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in TOOLS}
        assert (r["mosquitto"].rc, r["mosquitto"].stderr) in TLS_FAILURES, r["mosquitto"]
        assert (r["midge"].rc, r["midge"].stderr) == MIDGE_TLS_FAILURE[kind], r["midge"]
        if debug:
            assert b"\nError: host name verification failed.\n" in b"\n" + r["mosquitto"].stdout, r["mosquitto"]
            assert r["midge"].stdout == b"Error: host name verification failed.\n", r["midge"]
        else:
            assert r["mosquitto"].stdout == r["midge"].stdout == b"", r
    if kind == "pub":
        args = ["-h", HOST, "-p", str(b.tls_port), "--cafile", b.pki["ca"], "--insecure", "-t", "x", "-m", "y"]
        r = {tool: run([*tools.cmd(tool, kind), *args]) for tool in TOOLS}
        assert r["mosquitto"].rc == 0, r["mosquitto"]
        compare_runs("pub --insecure to a certificate for another name", r["midge"], r["mosquitto"])


def test_tls_unknown_ca_is_not_a_host_name_failure(tools, other_name_broker, pki):
    """A certificate from another CA (and for another name): the chain fails first, and
    neither mosquitto's tools nor midge's say "host name verification failed" with -d."""
    b = other_name_broker
    args = ["-h", HOST, "-p", str(b.tls_port), "--cafile", pki["ca"], "-t", "x", "-m", "y", "-d"]
    r = {tool: run([*tools.cmd(tool, "pub"), *args]) for tool in TOOLS}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) in TLS_FAILURES, r["mosquitto"]
    assert (r["midge"].rc, r["midge"].stderr) == MIDGE_TLS_FAILURE["pub"], r["midge"]
    assert b"host name" not in r["mosquitto"].stdout and r["midge"].stdout == b"", r


# ---------------------------------------------------------------------------------------
# ACL refusals: subscriptions and publishes the broker denies
# ---------------------------------------------------------------------------------------

def _acl_broker(kind: str, tmp_path_factory) -> CliBroker:
    """Anonymous clients may use allowed/# only."""
    d = tmp_path_factory.mktemp(f"acl-{kind}")
    acl = d / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    return _start_broker(kind, d, extra_config=[f"acl_file {acl}"], name=f"acl-{kind}")


@pytest.fixture(scope="module")
def midge_acl_broker(tmp_path_factory):
    b = _acl_broker("midge", tmp_path_factory)
    yield b
    _stop_broker(b)


@pytest.fixture(scope="module")
def mosq_acl_broker(tmp_path_factory):
    b = _acl_broker("mosquitto", tmp_path_factory)
    yield b
    _stop_broker(b)


@pytest.fixture(scope="module", params=["midge_acl_broker", "mosq_acl_broker"],
                ids=["midge-broker", "mosquitto-broker"])
def acl_broker(request) -> CliBroker:
    return request.getfixturevalue(request.param)


def test_brokers_grant_subscriptions_their_acl_denies(tools, acl_broker):
    """mosquitto 2.0.11 with an acl_file grants every subscription (SUBACK 0) and applies
    the ACL when delivering; midge does as mosquitto. So the next tests, about clients
    meeting refused subscriptions, use a scripted server that refuses them."""
    r = run([*tools.cmd("mosquitto", "sub"), *conn(acl_broker), "-V", "5", "-t", "x/#", "-E", "-d"])
    assert r.rc == 0 and b"Subscribed (mid: 1): 0\n" in r.stdout and r.stderr == b"", r


@pytest.fixture(scope="module")
def refusing():
    b = RefusingBroker()
    yield b
    b.close()


SUB_DENIED_OPTIONS = [pytest.param([], id="plain"), pytest.param(["-E"], id="E"), pytest.param(["-d"], id="d"),
                      pytest.param(["--quiet"], id="quiet"), pytest.param(["-C", "1", "-W", "5"], id="C-W")]


@pytest.mark.parametrize("options", SUB_DENIED_OPTIONS)
@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_sub_all_subscriptions_denied_like_mosquitto(tools, refusing, version, options):
    """Every filter refused in the SUBACK: mosquitto_sub says "All subscription requests
    were denied." on standard error, disconnects and exits 0 (-d: "Subscribed (mid: 1):
    128, 128" in 3.1/3.1.1, "135, 135" in 5.0, then DISCONNECT)."""
    cid = unique_id("deny")
    args = ["-h", HOST, "-p", str(refusing.port), "-V", version, "-i", cid, "-t", "x/#", "-t", "y/+", *options]
    r = {tool: run([*tools.cmd(tool, "sub"), *args]) for tool in TOOLS}
    expected = b"" if "--quiet" in options else b"All subscription requests were denied.\n"
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (0, expected), r["mosquitto"]
    compare_runs(f"sub {' '.join(args)}", r["midge"], r["mosquitto"])


def test_sub_some_subscriptions_denied_keeps_running(tools, midge_acl_broker):
    """One filter granted: no message, the subscriber stays (here until -W)."""
    cid = unique_id("somedeny")
    args = [*conn(midge_acl_broker), "-i", cid, "-t", "x/#", "-t", "allowed/x", "-W", "1", "-d"]
    r = {tool: run([*tools.cmd(tool, "sub"), *args]) for tool in TOOLS}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (27, b"Timed out\n"), r["mosquitto"]
    compare_runs("sub with one of two filters denied", r["midge"], r["mosquitto"])


@pytest.mark.parametrize("version,reason", [("31", b"Unspecified error"), ("311", b"Unspecified error"),
                                            ("5", b"Not authorized")])
def test_rr_response_subscription_denied_like_mosquitto_rr(tools, refusing, version, reason):
    """The response topic refused: mosquitto_rr prints the SUBACK code's reason string
    (3.1.1's 0x80 is "Unspecified error"), sends no request, disconnects and exits 0."""
    cid = unique_id("rrdeny")
    args = ["-h", HOST, "-p", str(refusing.port), "-V", version, "-i", cid, "-t", "allowed/request",
            "-e", "x/response", "-m", "hi", "-d"]
    r = {tool: run([*tools.cmd(tool, "rr"), *args]) for tool in TOOLS}
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (0, reason + b"\n"), r["mosquitto"]
    compare_runs(f"rr -V {version}, response topic denied", r["midge"], r["mosquitto"])
    # Both connections ended, neither sent the request.
    assert refusing.wait_for((cid, "closed"), count=2)
    with refusing.lock:
        sent = [what for c, what in refusing.events if c == cid]
    assert sent.count("closed") == 2 and "PUBLISH" not in sent, sent


@pytest.mark.parametrize("topic", ["x/#", "x/+/y", "#"])
def test_rr_wildcard_response_topic_is_a_usage_error(tools, topic):
    """mosquitto_rr checks -e as a topic to publish to (the responder publishes there)."""
    args = ["-h", HOST, "-p", str(free_port()), "-t", "allowed/x", "-e", topic, "-m", "hi"]
    r = {tool: run([*tools.cmd(tool, "rr"), *args]) for tool in ("link", "mosquitto")}
    assert r["mosquitto"].rc == 1, r["mosquitto"]
    compare_runs(f"rr -e {topic}", r["link"], r["mosquitto"])


PUB_REFUSED = [
    pytest.param(["-q", "1", "-m", "hi", "-d"], id="q1-d"),
    pytest.param(["-q", "2", "-m", "hi", "-d"], id="q2-d"),
    pytest.param(["-q", "2", "-m", "hi", "--repeat", "3", "-d"], id="q2-repeat-d"),
    pytest.param(["-q", "1", "-l"], id="q1-lines"),
    pytest.param(["-q", "2", "-l"], id="q2-lines"),
    pytest.param(["-q", "1", "-m", "hi", "--quiet"], id="q1-quiet"),
]


@pytest.mark.parametrize("args", PUB_REFUSED)
def test_pub_refused_publish_warns_like_mosquitto(tools, acl_broker, args):
    """-V 5 to a topic the ACL denies: the broker answers PUBACK / PUBREC with 0x87, and
    mosquitto_pub warns for each message, "Warning: Publish 1 failed: Not authorized." (the
    message id, the reason string), and still exits 0."""
    cid = unique_id("pubdeny")
    full = [*conn(acl_broker), "-V", "5", "-i", cid, "-t", "x/denied", *args]
    stdin = b"one\ntwo\nthree\n" if "-l" in args else None
    r = {tool: run([*tools.cmd(tool, "pub"), *full], stdin=stdin) for tool in TOOLS}
    count = 3 if ("-l" in args or "--repeat" in args) else 1
    expected = b"".join(b"Warning: Publish %d failed: Not authorized.\n" % i for i in range(1, count + 1))
    assert (r["mosquitto"].rc, r["mosquitto"].stderr) == (0, b"" if "--quiet" in args else expected), r["mosquitto"]
    compare_runs(f"pub {' '.join(full)} ({acl_broker.kind} broker)", r["midge"], r["mosquitto"])


# =======================================================================================
# 5. -d
# =======================================================================================

@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_d_pub(tools, any_broker, version, qos):
    """pub -d: the same lines as mosquitto_pub -d (client ids aside: (null) until an id is
    known, the broker's auto-... in 5.0, a random mosq-... in 3.1)."""
    b = any_broker
    t = tag("dpub")
    args = ["-d", "-V", version, "-q", str(qos), "-t", f"{t}/x", "-m", "debug me"]
    r = {tool: pub(tools, b, tool, *args) for tool in TOOLS}
    compare_runs(f"pub -d -V {version} -q {qos} ({b.kind} broker)", r["midge"], r["mosquitto"], normalise=norm_ids)


@pytest.mark.parametrize("version", ["31", "311", "5"])
def test_d_sub(tools, any_broker, version):
    """sub -d: the packets, "Subscribed (mid: 1): 2", and messages at QoS 0, 1 and 2."""
    b = any_broker
    t = tag("dsub")
    mark = b.mark()
    # No -i: the client id shown is (null), the assigned id, or a random one.
    subs = {tool: Proc([*tools.cmd(tool, "sub"), *conn(b), "-d", "-V", version, "-q", "2", "-t", f"{t}/#",
                        "-C", "3", "-v"]) for tool in TOOLS}
    wait_log_count(b, r"Sending SUBACK to ", 2, mark, list(subs.values()))
    for q in (0, 1, 2):
        pub(tools, b, "mosquitto", "-t", f"{t}/q{q}", "-m", f"at qos {q}", "-q", str(q))
    for p in subs.values():
        assert p.finish() == 0, p.describe()
    compare_runs(f"sub -d -V {version} ({b.kind} broker)", subs["midge"], subs["mosquitto"], normalise=norm_ids)


def test_d_rr(tools, midge_broker, responder):
    b = midge_broker
    t = responder.topic
    r = {tool: run([*tools.cmd(tool, "rr"), *conn(b), "-d", "-t", f"{t}/request", "-e", f"{t}/response",
                    "-m", "question", "-q", "1"]) for tool in TOOLS}
    # mosquitto_rr 2.0.11 closes the socket without DISCONNECT (the broker logs "closed its
    # connection", and would publish a will); midge disconnects properly, and -d shows it.
    disconnect = re.compile(rb"Client \S+ sending DISCONNECT\n$")
    assert disconnect.search(r["midge"].stdout), r["midge"]
    r["midge"].stdout = disconnect.sub(b"", r["midge"].stdout)
    compare_runs("rr -d", r["midge"], r["mosquitto"], normalise=norm_ids)


# =======================================================================================
# 6. argv0: links named mosquitto_pub / mosquitto_sub / mosquitto_rr
# =======================================================================================

@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_link_help_is_the_tools(tools, kind):
    """Through a link named mosquitto_KIND, --help is that tool's help, in its name."""
    link = run(tools.cmd("link", kind) + ["--help"])
    own = run(tools.cmd("midge", kind) + ["--help"])
    # The same text, each in its own name.
    assert first_line(link.stdout) == first_line(own.stdout).replace(f"midge {kind}".encode(), f"mosquitto_{kind}".encode()), (link, own)
    assert f"mosquitto_{kind}".encode() in link.stdout, link
    assert b"midge " + kind.encode() not in link.stdout, link


@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_link_help_like_mosquitto(tools, kind):
    """--help: mosquitto's first line and exit code."""
    r = {tool: run(tools.cmd(tool, kind) + ["--help"]) for tool in ("link", "mosquitto")}
    assert (r["link"].rc, first_line(r["link"].stdout)) == (r["mosquitto"].rc, first_line(r["mosquitto"].stdout)), (
        f"mosquitto_{kind} --help\n  midge:     exit {r['link'].rc}, {first_line(r['link'].stdout)!r}\n"
        f"  mosquitto: exit {r['mosquitto'].rc}, {first_line(r['mosquitto'].stdout)!r}")


def test_link_usage_error_names_the_link(tools):
    """A usage error through the link reads exactly as mosquitto_sub's."""
    r = {tool: run(tools.cmd(tool, "sub")) for tool in ("link", "mosquitto")}
    compare_runs("mosquitto_sub without a topic", r["link"], r["mosquitto"])


def test_link_passwd_help_like_mosquitto_passwd(tools):
    """mosquitto_passwd --help, or no argument: the usage on standard output, exit code 1.
    Through a link named mosquitto_passwd, midge prints its usage in that name (the same
    first line and layout); `midge passwd --help` in its own."""
    for args in (["--help"], []):
        r = {tool: run(tools.cmd(tool, "passwd") + args) for tool in ("link", "mosquitto")}
        assert r["mosquitto"].rc == 1 and r["mosquitto"].stderr == b"", r["mosquitto"]
        assert (r["link"].rc, r["link"].stderr) == (1, b""), r["link"]
        assert first_line(r["link"].stdout) == first_line(r["mosquitto"].stdout), r
        for out in (r["link"].stdout, r["mosquitto"].stdout):
            lines = out.decode().splitlines()
            assert lines[1] == "" and lines[2].startswith("Usage: mosquitto_passwd [-H "), out
            assert "       mosquitto_passwd -U passwordfile" in lines, out
            assert all(re.match(r" -[bcDHIU] : \S", l) for l in lines if l.startswith(" -")), out
        assert b"midge passwd" not in r["link"].stdout, r["link"]
    own = run(tools.cmd("midge", "passwd") + ["--help"])
    assert own.rc == 1 and own.stdout.startswith(
        b"midge passwd is a tool for managing password files for mosquitto.\n\nUsage: midge passwd "), own
    assert b"mosquitto_passwd" not in own.stdout, own


def _help_listing(out: bytes) -> list[str]:
    """The option lines of a tool's --help: after the usage (which ends with a line
    "NAME --help" and an empty line), up to the next empty line."""
    text = out.decode()
    start = text.index(" --help\n\n") + len(" --help\n\n")
    return text[start:].split("\n\n", 1)[0].splitlines()


@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_help_lists_options_in_mosquittos_layout(tools, kind):
    """mosquitto's layout, checked on its own --help and on midge's: each option is
    " -x : text" or " --name : text", its description goes on aligned under its first
    character, the short options come first (in alphabetical order, for midge)."""
    for tool in ("mosquitto", "link"):
        out = run(tools.cmd(tool, kind) + ["--help"]).stdout
        listing = _help_listing(out)
        assert len(listing) > 20, out
        indent, shorts, longs_started = None, [], False
        for line in listing:
            m = re.match(r" (-\w|--[\w-]+) : \S", line)
            if m:
                indent = len(m.group(0)) - 1
                if m.group(1).startswith("--"):
                    longs_started = True
                else:
                    assert not longs_started, f"{tool}: {line!r} after the long options"
                    shorts.append(m.group(1)[1])
            else:
                assert indent is not None and re.match(r" {%d}\S" % indent, line), (
                    f"{tool} {kind} --help: {line!r} is neither an option nor aligned under one")
        if tool == "link":  # (mosquitto_pub lists -d before -c)
            assert [c.lower() for c in shorts] == sorted(c.lower() for c in shorts), shorts


def test_links_publish_subscribe_request(tools, midge_broker, responder):
    """mosquitto_sub and mosquitto_pub links carry a message; the mosquitto_rr link gets
    a response."""
    b = midge_broker
    t = tag("link")
    s = start_sub(tools, b, "link", "-t", f"{t}/#", "-C", "1", "-v")
    pub(tools, b, "link", "-t", f"{t}/x", "-m", "through links", "-q", "1")
    assert s.finish() == 0, s.describe()
    assert s.stdout == f"{t}/x through links\n".encode()
    rt = responder.topic
    r = run([*tools.cmd("link", "rr"), *conn(b), "-t", f"{rt}/request", "-e", f"{rt}/response", "-m", "hi"])
    assert (r.rc, r.stdout) == (0, b"reply to hi\n"), r


@pytest.mark.parametrize("kind", ["midge", "mosquitto"])
def test_pub_sends_nothing_larger_than_the_brokers_maximum_packet_size(tools, tmp_path, kind):
    """A 5.0 broker announcing Maximum Packet Size 200 (max_packet_size) gets no larger
    packet from midge pub [MQTT-3.1.2-25]: the line that does not fit is refused with an
    error, the lines around it go, and the exit code is 1 (midge sent it, the broker closed
    the connection, "Packet too large", and the later lines were lost with exit 0)."""
    b = _start_broker(kind, tmp_path, extra_config=["max_packet_size 200"], name=f"mps-{kind}")
    try:
        t = tag("mps")
        sub = start_sub(tools, b, "mosquitto", "-t", t, "-C", "3", "-V", "5")
        big = b"x" * 300
        r = pub(tools, b, "midge", "-V", "5", "-t", t, "-l", stdin=b"first\n" + big + b"\nlast\n", check=False)
        assert r.rc == 1, r
        assert re.fullmatch(rb"Error: the packet \(3\d\d bytes\) exceeds the server's maximum packet size "
                            rb"\(200 bytes\)\n", r.stderr), r
        pub(tools, b, "midge", "-V", "5", "-t", t, "-m", "after", "-q", "1")
        assert sub.finish() == 0, sub.describe()
        assert lines_of(sub.stdout) == [b"first", b"last", b"after"], sub.describe()
    finally:
        _stop_broker(b)


@pytest.mark.parametrize("tool", ["link", "mosquitto"])
def test_bind_address_may_be_a_host_name(tools, midge_broker, tool):
    """`-A localhost` binds the client's socket to what the name resolves to, as
    mosquitto_pub does (midge took an IP address only)."""
    t = tag("bind")
    sub = start_sub(tools, midge_broker, "mosquitto", "-t", t, "-C", "1")
    pub(tools, midge_broker, tool, "-A", "localhost", "-t", t, "-m", "bound")
    assert sub.finish() == 0, sub.describe()
    assert lines_of(sub.stdout) == [b"bound"], sub.describe()


@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_version_prints_the_version_and_exits_1(tools, kind):
    """`--version`, as mosquitto's clients: one line on standard output, exit code 1 (midge
    called it an unknown option)."""
    r = {tool: run([*tools.cmd(tool, kind), "--version"]) for tool in ("link", "mosquitto")}
    for tool, res in r.items():
        assert res.rc == 1 and res.stderr == b"", res
        assert re.fullmatch(rb"mosquitto_%s version \S+ .*\n" % kind.encode(), res.stdout), res


def test_sub_carries_on_across_a_broker_restart_as_mosquitto_sub(tools, tmp_path):
    """mosquitto_sub (libmosquitto's loop_forever) connects again when its connection is
    lost, every second, and subscribes again: a pipeline reading it survives the broker's
    restart. midge sub exited with "Error: The connection was lost." (7). Both print a
    message published before the restart and one after, and exit 0 at SIGINT."""
    port = free_port()
    conf = tmp_path / "restart.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true"]) + "\n")

    def start_broker() -> subprocess.Popen:
        p = subprocess.Popen([mosquitto_broker_binary(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _accepting(port):
            assert time.monotonic() < deadline and p.poll() is None, "mosquitto did not start"
            time.sleep(0.01)  # poll interval: the listener is not open yet
        return p

    def publish(topic: str, message: str) -> None:
        # Retained: a subscriber that comes back after it still gets it.
        run([require_tool("mosquitto_pub"), "-h", HOST, "-p", str(port), "-t", topic, "-m", message, "-r"])

    broker = start_broker()
    try:
        publish("restart/before", "1")
        subs = {tool: Proc([*tools.cmd(tool, "sub"), "-h", HOST, "-p", str(port), "-t", "restart/#", "-v"])
                for tool in ("link", "mosquitto")}
        for p in subs.values():
            p.wait_output(b"restart/before 1\n")
        broker.kill()
        broker.wait()
        broker = start_broker()
        publish("restart/after", "2")
        for p in subs.values():
            p.wait_output(b"restart/after 2\n")
        for p in subs.values():
            p.kill(signal.SIGINT)
        seen = {tool: (p.proc.returncode, p.stdout, p.stderr) for tool, p in subs.items()}
        assert seen["link"] == seen["mosquitto"] == (0, b"restart/before 1\nrestart/after 2\n", b""), seen
    finally:
        broker.kill()
        broker.wait()
