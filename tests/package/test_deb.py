"""The Debian package (cargo deb -p midge), installed with dpkg -i as a user would, the broker
started as the package starts it, then the package removed and purged. Run by scripts/test-deb
with MIDGE_DEB=path/to/midge_VERSION_ARCH.deb, as root (dpkg)."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from service_support import NotifySocket, exec_line, round_trip, unit_settings  # noqa: E402

UNITS = [Path("/usr/lib/systemd/system/midge.service"), Path("/lib/systemd/system/midge.service")]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)
    assert r.returncode == 0, r
    return r


@pytest.fixture(scope="module")
def installed():
    deb = os.environ.get("MIDGE_DEB")
    if not deb:
        pytest.fail("MIDGE_DEB is not set: run scripts/test-deb, which builds the package", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("installing a package takes root", pytrace=False)
    subprocess.run(["dpkg", "--purge", "midge"], capture_output=True)
    run("dpkg", "-i", deb)
    yield deb
    run("dpkg", "--purge", "midge")


def test_the_package_installs_its_files_user_and_directories(installed):
    assert os.access("/usr/bin/midge", os.X_OK)
    assert "/etc/midge/midge.conf" in run("dpkg-query", "-W", "-f=${Conffiles}", "midge").stdout
    account = pwd.getpwnam("midge")
    assert account.pw_uid < 1000, "a system user"
    for d in ("/var/lib/midge", "/var/log/midge"):
        st = os.stat(d)
        assert (st.st_uid, st.st_gid) == (account.pw_uid, account.pw_gid), d
    unit = next((u for u in UNITS if u.exists()), None)
    assert unit is not None, "the systemd unit is installed"
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "midge.service" not in r.stderr, r
    # The installed configuration passes the audit as the broker's user sees it.
    r = subprocess.run(["midge", "audit", "-c", "/etc/midge/midge.conf", "--json"], capture_output=True,
                       text=True, timeout=60)
    assert "unwritable-by-broker-user" not in r.stdout, r.stdout


def test_the_package_starts_as_systemd_would_and_serves(installed, tmp_path):
    """systemd as PID 1: `systemctl start midge`. Without it (a container): the unit's
    ExecStart line as its User=, with its RuntimeDirectory made as systemd makes it and a
    readiness socket; READY=1, then mosquitto_sub gets what mosquitto_pub sends on 1883."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 1883)) == 0:
            pytest.fail("port 1883 is taken: the packaged configuration listens there", pytrace=False)
    if Path("/run/systemd/system").is_dir():
        run("systemctl", "start", "midge")
        try:
            assert run("systemctl", "is-active", "midge").stdout.strip() == "active"
            round_trip(1883)
            run("systemctl", "reload", "midge")
            round_trip(1883)
        finally:
            run("systemctl", "stop", "midge")
        return
    unit = unit_settings(next(u for u in UNITS if u.exists()))
    user = unit["User"][0]
    account = pwd.getpwnam(user)
    runtime = Path("/run") / unit["RuntimeDirectory"][0]
    for key, base in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log")):
        d = Path(base) / unit[key][0]
        d.mkdir(exist_ok=True)
        os.chown(d, account.pw_uid, account.pw_gid)
    notify = NotifySocket()
    argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + exec_line(unit["ExecStart"][0], {})
    proc = subprocess.Popen(argv, env=notify.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd="/")
    try:
        notify.wait_for("READY=1", proc=proc)
        round_trip(1883)
        log = Path("/var/log/midge/midge.log")
        assert log.stat().st_uid == account.pw_uid and "New client connected" in log.read_text()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
        notify.close()
        shutil.rmtree(runtime, ignore_errors=True)  # systemd removes it when the service stops
    assert proc.returncode == 0, out
