"""Issue 20, "What a new user tripped on": the classic MQTT security workflow end to end, with
the messages that explain and the docs that run as written.

1. `midge bench` against a broker whose ACL denies its topics (midge and mosquitto): the
   refusal or the silence explained on the spot, and a non-zero exit code.
2. A revoked (or missing) client certificate: every client tool names the TLS alert with -d,
   in the line mosquitto's tools print, byte for byte; `midge bench` names it too.
4. The README's secure example, run as written on one machine (its commands, `broker.conf`
   and `acl`, with free ports for 1883 and 8883), midge found on PATH.

(Item 3, a plain client on a TLS port, is in test_cli.py; items 5 and 6, `midge inspect`,
in test_inspect.py.)"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from security_support import ConfiguredBroker, MosquittoBroker, Pki, describe, midge_cert, run_tool
from support import TIMEOUT, free_port, midge_bin, require_tool

# ---------------------------------------------------------------------------------------
# 1. bench against an ACL that denies its topics
# ---------------------------------------------------------------------------------------

ACL_TEMPLATE = "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"


@pytest.fixture(params=["midge", "mosquitto"])
def acl_broker(request, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    cls = MosquittoBroker if request.param == "mosquitto" else ConfiguredBroker
    template = ACL_TEMPLATE.replace("{acl}", str(acl))
    b = cls(tmp_path, template, name=request.param).start()
    yield b
    b.stop()


def bench(port: int, *args: str) -> subprocess.CompletedProcess:
    return run_tool([str(midge_bin()), "bench", *args, "-p", str(port), "--quiet"], timeout=60)


@pytest.mark.parametrize("mode", [["-r", "50"], ["--flat-out"]], ids=["windowed", "flat-out"])
def test_bench_explains_what_the_acl_refused(acl_broker, mode):
    b = acl_broker
    # 3.1.1, QoS 0: the broker says nothing; the run says what that means, and fails.
    r = bench(b.port, "pairs", "-n", "2", "-d", "1", *mode)
    assert r.returncode == 1, describe(r)
    assert re.search(r"^Error: nothing arrived: 0 of \d+ messages published under 'bench/' were delivered\. ",
                     r.stderr, re.M), describe(r)
    assert "MQTT 3.1.1 has no way to refuse a PUBLISH" in r.stderr and "--prefix" in r.stderr, describe(r)
    assert "-V 5 -q 1" in r.stderr, describe(r)
    # 5.0, QoS 1: the broker's reason code, with the topic.
    r = bench(b.port, "pairs", "-n", "2", "-d", "1", "-V", "5", "-q", "1", *mode)
    assert r.returncode == 1, describe(r)
    assert re.search(r"^Error: the broker refused \d+ of \d+ messages, the first one published to "
                     r"'bench/[0-9a-f]+/p/[01]': Not authorized; choose topics it allows with --prefix$",
                     r.stderr, re.M), describe(r)
    # The summary is still printed, before the error.
    assert "pairs: 2 publishers, 2 subscribers" in r.stdout, describe(r)
    # Topics the ACL allows: a run that delivers, exit code 0.
    r = bench(b.port, "pairs", "-n", "2", "-d", "1", "--prefix", "allowed", *mode)
    assert r.returncode == 0 and "Error" not in r.stderr, describe(r)


def test_bench_json_run_that_delivers_nothing_fails(acl_broker):
    r = bench(acl_broker.port, "fan-out", "-n", "2", "-r", "20", "-d", "1", "--json")
    assert r.returncode == 1, describe(r)
    out = json.loads(r.stdout)
    assert out["received"] == 0 and out["lost"] == out["expected"] > 0, out
    assert "Error: nothing arrived" in r.stderr, describe(r)


# ---------------------------------------------------------------------------------------
# 2. TLS alerts: a revoked or missing client certificate
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def revoking_broker(tmp_path_factory):
    """midge with mutual TLS and a CRL that revokes sensor-2."""
    d = tmp_path_factory.mktemp("alerts")
    p = Pki(d / "pki")
    midge_cert(p.dir, "init")
    midge_cert(p.dir, "server", "--host", "localhost", "--ip", "127.0.0.1", "--user", "root")
    for name in ("sensor-1", "sensor-2"):
        midge_cert(p.dir, "client", name)
    midge_cert(p.dir, "revoke", "sensor-2")
    crt, key = p.server()
    template = (f"listener {{port}} 127.0.0.1\ncertfile {crt}\nkeyfile {key}\ncafile {p.ca}\ncrlfile {p.crl}\n"
                "require_certificate true\nuse_identity_as_username true\n")
    b = ConfiguredBroker(d, template, name="midge-crl").start()
    b.pki = p
    yield b
    b.stop()


TOOL_ARGS = {"pub": ["-t", "x", "-m", "y"], "sub": ["-t", "x", "-C", "1", "-W", "5"],
             "rr": ["-t", "x", "-e", "y", "-m", "z", "-W", "5"]}
# What mosquitto's tools print (OpenSSL 3's error line) for the alerts midge's broker sends.
ALERT_LINES = {
    "revoked": "OpenSSL Error[0]: error:0A000414:SSL routines::sslv3 alert certificate revoked",
    "missing": "OpenSSL Error[0]: error:0A00045C:SSL routines::tlsv13 alert certificate required",
}


def client_args(p: Pki, case: str) -> list[str]:
    if case == "missing":
        return ["--cafile", str(p.ca)]
    return p.client_args("sensor-2")


@pytest.mark.parametrize("tls_version", ["tlsv1.3", "tlsv1.2"])
@pytest.mark.parametrize("case", ["revoked", "missing"])
@pytest.mark.parametrize("kind", ["pub", "sub", "rr"])
def test_client_tools_name_the_tls_alert_like_mosquitto(revoking_broker, kind, case, tls_version):
    """mosquitto's tools print OpenSSL's line for the alert under -d; midge's the same line
    (byte for byte, stdout and stderr, and the exit code). (TLS 1.2 without a certificate:
    rustls's broker sends another alert than in 1.3; compared all the same.)"""
    b = revoking_broker
    args = ["-h", "localhost", "-p", str(b.port), "-d", "--tls-version", tls_version,
            *client_args(b.pki, case), *TOOL_ARGS[kind]]
    mosq = run_tool([require_tool(f"mosquitto_{kind}"), *args])
    ours = run_tool([str(midge_bin()), kind, *args])
    if tls_version == "tlsv1.3" or case == "revoked":
        assert ALERT_LINES[case] + "\n" in mosq.stdout, describe(mosq)
    assert re.search(r"^OpenSSL Error\[0\]: error:0A000[0-9A-F]{3}:SSL routines::\S.*alert", mosq.stdout, re.M), \
        describe(mosq)
    assert (ours.returncode, ours.stdout, ours.stderr) == (mosq.returncode, mosq.stdout, mosq.stderr), (
        f"midge:\n{describe(ours)}\nmosquitto:\n{describe(mosq)}")
    # Without -d, neither says more than "Error: The connection was lost." (exit code 7).
    quiet = [a for a in args if a != "-d"]
    ours = run_tool([str(midge_bin()), kind, *quiet])
    assert (ours.returncode, ours.stdout, ours.stderr) == (7, "", "Error: The connection was lost.\n"), describe(ours)


@pytest.mark.parametrize("scenario", [["pairs", "-r", "10"], ["pairs", "--flat-out"], ["conn"]],
                         ids=["windowed", "flat-out", "conn"])
def test_bench_names_the_tls_alert(revoking_broker, scenario):
    b = revoking_broker
    for case, alert in (("revoked", "certificate revoked"), ("missing", "certificate required")):
        r = run_tool([str(midge_bin()), "bench", *scenario, "--host", "localhost", "-p", str(b.port), "-n", "1",
                      "-d", "1", "--quiet", *client_args(b.pki, case)], timeout=60)
        assert r.returncode == 1, describe(r)
        assert f"the broker refused the TLS connection with the alert '{alert}'" in r.stderr, describe(r)
    # The certificate that is not revoked gets in.
    r = run_tool([str(midge_bin()), "bench", *scenario, "--host", "localhost", "-p", str(b.port), "-n", "1",
                  "-d", "1", "--quiet", "--prefix", "ok", *b.pki.client_args("sensor-1")], timeout=60)
    assert r.returncode == 0, describe(r)


# ---------------------------------------------------------------------------------------
# 4. The README's secure example, as written
# ---------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_security_blocks() -> list[tuple[str, str]]:
    """The fenced blocks of the README's security walk-through, as (language, text)."""
    text = README.read_text()
    section = text.split("## Security: a secure configuration in a few commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w*)\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments kept (the shell drops them)."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_readme_secure_example_names_only_this_machine():
    blocks = readme_security_blocks()
    assert len(blocks) >= 4, blocks
    body = "".join(b for _, b in blocks)
    for unresolvable in ("broker.example", "192.0.2."):
        assert unresolvable not in body, f"the README's secure example uses {unresolvable}, which does not resolve"
    quick = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "cargo install --path crates/midge" in quick and "mosquitto_pub" in quick and "ln -sf" in quick, quick


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk-through runs as root (chown mosquitto, the broker drops to it)")
def test_readme_secure_example_runs_as_written(tmp_path):
    """Each command of the README, in a fresh directory user mosquitto can reach, with midge on
    PATH; only the ports change (free ones for 1883 and 8883). Background commands are started
    and waited for (the broker listening, the subscriber receiving)."""
    require_tool("mosquitto_pub")
    (setup_lang, setup), (_, conf), (_, acl), (run_lang, run_block) = readme_security_blocks()[:4]
    assert setup_lang == run_lang == "sh"
    work = Path(tempfile.mkdtemp(prefix="midge-readme-"))
    work.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "midge").symlink_to(midge_bin())
    ports = {"1883": str(free_port()), "8883": str(free_port())}

    def ported(s: str) -> str:
        return re.sub(r"\b(1883|8883)\b", lambda m: ports[m.group(1)], s)

    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "password": "dash-pw"}
    procs: list[subprocess.Popen] = []
    done: list[str] = []

    def sh(cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, input=stdin, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, f"README command failed: {cmd}\n{describe(r)}"
        return r

    try:
        for cmd in commands(setup):
            if cmd.startswith("read "):
                continue  # the password is in the environment
            sh(cmd, stdin="dash-pw\ndash-pw\n" if "midge passwd" in cmd else None)
        (work / "broker.conf").write_text(ported(conf))
        (work / "acl").write_text(acl)
        broker_log = work / "broker.log"
        sub_out = work / "sub.out"
        for cmd in commands(ported(run_block)):
            if cmd.startswith("midge broker"):
                with open(broker_log, "w") as log:
                    procs.append(subprocess.Popen(["bash", "-c", cmd.split("&")[0]], cwd=work, env=env,
                                                  stdout=log, stderr=log, start_new_session=True))
                wait_for(lambda: all(f"listen socket on port {p}" in broker_log.read_text() for p in ports.values()),
                         "the broker listening", log=broker_log)
                broker_pid = procs[-1].pid
                env["broker"] = str(broker_pid)
            elif cmd.startswith("midge sub"):
                # On the default port (1883) in the README: the free port here.
                cmd = cmd.replace("midge sub", f"midge sub -p {ports['1883']}", 1)
                with open(sub_out, "w") as out:
                    procs.append(subprocess.Popen(["bash", "-c", cmd.rsplit("&", 1)[0]], cwd=work, env=env,
                                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            elif cmd.startswith("midge pub") and "sensor-1" in cmd:
                # Until the dashboard, subscribing in the background, receives it.
                deadline = time.monotonic() + TIMEOUT
                while "sensors/sensor-1/temp 21.5" not in sub_out.read_text():
                    assert time.monotonic() < deadline, f"the dashboard got nothing: {sub_out.read_text()}"
                    sh(cmd)
            elif cmd.startswith("midge cert revoke"):
                mark = len(broker_log.read_text())
                r = sh(cmd.replace("$broker", env["broker"]))
                assert "Revoked client certificate sensor-2" in r.stdout, describe(r)
                wait_for(lambda: "Reloaded" in broker_log.read_text()[mark:], "the broker reloading", log=broker_log)
            elif cmd.startswith("midge pub") and "sensor-2" in cmd:
                r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=30)
                assert r.returncode == 7, describe(r)
                assert r.stderr == "Error: The connection was lost.\n", describe(r)
                assert ALERT_LINES["revoked"] in r.stdout, describe(r)
                done.append("revoked device refused")
            elif cmd.startswith("midge audit"):
                r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=30)
                assert r.returncode == 0, describe(r)  # "no weaknesses"
            else:
                sh(cmd)
        assert done == ["revoked device refused"], "the walk-through ends with the revoked device refused"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


def wait_for(condition, what: str, timeout: float = 10, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f"; log:\n{log.read_text()}" if log else ""),
                        pytrace=False)
        time.sleep(0.02)  # poll interval
