"""Revocation takes effect (issue "Hostile clients", item 5), as a real installation runs:
midge started as root with `user mosquitto`, so it reads its files as root, drops to user
mosquitto, and reads them again on SIGHUP as that user; the certificates are made by
`midge cert` run as root. A device is revoked with `midge cert revoke`, the broker gets
SIGHUP, and then: the device's live connections are closed (5.0 clients are told 0x87 Not
authorized), it cannot connect again, other devices stay connected and still connect, and
the log says what was reloaded.

Both ways the server key can be: given to user mosquitto by `midge cert` (the default when
run as root), or left root's (`--user root`, as files made by hand often are), where the key
cannot be read again but the CA and the CRL still apply.

The files live in a directory user mosquitto can reach (pytest's tmp_path is root's, 0700)."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import pytest

from security_support import (ConfiguredBroker, Pki, SecurePaho, connack_code, describe, midge_cert, mosq_pub,
                               run_tool)
from support import TIMEOUT, MosquittoSub, midge_bin, require_paho, require_tool, unique_id

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the broker starts as root and drops to mosquitto")

NOT_AUTHORIZED_V5 = 0x87


class DroppingBroker(ConfiguredBroker):
    """midge started as root that runs as user mosquitto once its listeners are open."""

    def config_text(self) -> str:
        return "user mosquitto\n" + self.template.format(**self.ports)

    def start(self) -> "DroppingBroker":
        super().start()
        self.wait_for_log(r"Running as user 'mosquitto'\.")
        return self

    def reload_and_wait(self) -> str:
        """SIGHUP; returns the log of the reload (up to its last line)."""
        mark = self.mark()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for_log(r"Reloaded (the password file, ACL file and TLS certificates|the rest: what failed is named above)\.",
                          since=mark)
        return self.log()[mark:]


@pytest.fixture
def shared_dir():
    """A directory user mosquitto can reach, removed afterwards."""
    require_tool("mosquitto_sub")
    require_paho()
    pwd.getpwnam("mosquitto")  # installed with Debian's mosquitto package
    d = Path(tempfile.mkdtemp(prefix="midge-revocation-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_pki(d: Path, key_user: str | None) -> Pki:
    p = Pki(d / "pki")
    midge_cert(p.dir, "init")
    midge_cert(p.dir, "server", "--host", "localhost", "--ip", "127.0.0.1",
               *(["--user", key_user] if key_user else []))
    for name in ("sensor-1", "sensor-2"):
        midge_cert(p.dir, "client", name)
    return p


def mtls(p: Pki) -> str:
    crt, key = p.server()
    return (f"listener {{port}} 127.0.0.1\ncertfile {crt}\nkeyfile {key}\ncafile {p.ca}\ncrlfile {p.crl}\n"
            "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n")


def device(broker, p: Pki, name: str, version: str = "5") -> SecurePaho:
    cert, key = p.client(name)
    c = SecurePaho(broker, unique_id(name), version=version, ca=p.ca, cert=cert, key=key)
    c.connect()
    return c


@pytest.mark.parametrize("key_owner", ["mosquitto", "root"])
def test_revoked_device_is_disconnected_and_refused_after_sighup(shared_dir, key_owner):
    p = make_pki(shared_dir, None if key_owner == "mosquitto" else "root")
    key = p.server()[1]
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert pwd.getpwuid(st.st_uid).pw_name == key_owner, "midge cert run as root gives the key to the broker's user"
    for public in (p.ca, p.crl, p.server()[0]):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644, public

    b = DroppingBroker(shared_dir, mtls(p), name=f"midge-{key_owner}")
    subs: list[MosquittoSub] = []
    try:
        b.start()
        b.conf_path.chmod(0o644)  # SIGHUP reads it again as mosquitto
        good = device(b, p, "sensor-1")
        assert good.subscribe("sensors/#", qos=1) == [1]
        revoked_v5 = device(b, p, "sensor-2", "5")
        revoked_311 = device(b, p, "sensor-2", "311")
        subs += [MosquittoSub(b, ["sensors/sensor-2/commands"], "-d", *p.client_args("sensor-2"), version=v)
                for v in ("5", "311")]

        out = midge_cert(p.dir, "revoke", "sensor-2").stdout
        assert "disconnects the clients connected with it" in out and "SIGHUP" in out, out
        assert "Warning" not in out, out
        reload_log = b.reload_and_wait()

        # The log says what was reloaded, and what was not.
        listener = r"Listener port \d+ on 127\.0\.0\.1 \([^)]*\): reloaded "
        if key_owner == "mosquitto":
            assert re.search(listener + r"the certificate and key \(.*\), the CA certificates \(.*ca\.crt\), "
                             r"the CRL \(.*crl\.pem: 1 revoked certificate\)\.", reload_log), reload_log
            assert "Reload failed" not in reload_log, reload_log
        else:
            assert re.search(listener + r"the CA certificates \(.*ca\.crt\), the CRL \(.*crl\.pem: 1 revoked "
                             r"certificate\)\.", reload_log), reload_log
            m = re.search(r"Reload failed: listener port \d+ .*: the certificate and key: .*localhost\.key.*"
                          r"os error 13.*; the previous ones stay in force \(midge runs as user 'mosquitto'.*",
                          reload_log)
            assert m, reload_log

        # The revoked device's connections are closed: 5.0 clients are told why.
        reason = revoked_v5.wait_disconnected()
        assert getattr(reason, "value", reason) == NOT_AUTHORIZED_V5, reason
        revoked_311.wait_disconnected()
        for s in subs:
            s.wait_exit()
        assert "Received DISCONNECT (135)" in "\n".join(subs[0].output()), subs[0].output()
        for c in (revoked_v5, revoked_311, *subs):
            cid = re.escape(c.client_id if isinstance(c, MosquittoSub) else c.client._client_id.decode())
            b.wait_for_log(rf"Client {cid} is no longer allowed: its certificate CN=sensor-2 \(serial [0-9a-f]+\) is "
                           r"revoked by the reloaded CRL\.")
            b.wait_for_log(rf"Client {cid} disconnected: not authorised by the reloaded security settings\.")

        # It cannot come back, by any client.
        mark = b.mark()
        r = mosq_pub(b.port, *p.client_args("sensor-2"), "-t", "sensors/sensor-2/t", "-m", "again", version="5")
        assert r.returncode != 0 and connack_code(r) is None, describe(r)
        b.wait_for_log(r"failed: TLS handshake: invalid peer certificate: Revoked", since=mark)
        cert, key_path = p.client("sensor-2")
        again = SecurePaho(b, unique_id("sensor-2"), version="5", ca=p.ca, cert=cert, key=key_path)
        with pytest.raises((AssertionError, OSError)):
            again.connect(timeout=3)
        again.close()

        # The other device stayed connected, and devices still connect.
        assert good.is_connected()
        r = mosq_pub(b.port, *p.client_args("sensor-1"), "-t", "sensors/sensor-1/t", "-m", "after", version="5")
        assert r.returncode == 0 and connack_code(r) == 0, describe(r)
        assert good.next_message(TIMEOUT).payload == b"after"
        assert not b.find_log(re.escape(good.client._client_id.decode()) + r" (is no longer allowed|disconnected)")
        for c in (good, revoked_v5, revoked_311):
            c.close()
    finally:
        for s in subs:
            s.stop()
        rc = b.stop()
    assert rc == 0, b.log()[-3000:]


def test_midge_cert_says_when_the_broker_user_cannot_reach_its_files(tmp_path):
    """pytest's tmp_path is root's (0700): a broker running as mosquitto could not read the
    files again, and `midge cert` says so instead of leaving it to the first SIGHUP."""
    pwd.getpwnam("mosquitto")
    p = Pki(tmp_path / "pki")
    midge_cert(p.dir, "init")
    out = midge_cert(p.dir, "server", "--host", "localhost").stdout
    assert re.search(r"owned by user mosquitto", out), out
    for f in ("localhost.crt", "localhost.key", "ca.crt", "crl.pem"):
        assert re.search(rf"Warning: user mosquitto cannot read \S*{re.escape(f)} ", out), out
    midge_cert(p.dir, "client", "sensor-1")
    out = midge_cert(p.dir, "revoke", "sensor-1").stdout
    assert re.search(r"Warning: user mosquitto cannot read \S*crl\.pem .*cannot read it again on SIGHUP", out), out
    # --user names another broker user; a user that does not exist is an error.
    r = run_tool([str(midge_bin()), "cert", "--dir", str(p.dir), "server", "--host", "other",
                  "--user", "no-such-user-here"])
    assert r.returncode != 0 and "no user 'no-such-user-here'" in r.stderr, r
