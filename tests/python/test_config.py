"""The broker's configuration as a mosquitto user writes it: include_dir files are read in
place (Debian's mosquitto.conf keeps its settings in conf.d), and options midge does not
have that would let more in than the configuration says stop the broker with the file,
the line and why, instead of being ignored."""
from __future__ import annotations

import subprocess

import pytest

from support import TIMEOUT, free_port, midge_bin, mosquitto_pub, MosquittoSub, unique_id


def test_include_dir_files_are_read_and_their_acl_enforced(tmp_path, broker_factory):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (tmp_path / "acl").write_text("topic read public/#\ntopic write public/#\n")
    (conf_d / "20-acl.conf").write_text(f"acl_file {tmp_path / 'acl'}\n")
    # Only *.conf files are read: this one would stop the broker.
    (conf_d / "notes.txt").write_text("this is not a configuration file\n")
    b = broker_factory(f"include_dir {conf_d}")

    # The ACL from conf.d: anonymous clients may read public/# and nothing else.
    denied = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.port), "-V", "5", "-t", "secret/#", "-W", "5"],
        capture_output=True, timeout=TIMEOUT,
    )
    assert denied.stderr.decode().strip() == "All subscription requests were denied.", denied
    sub = MosquittoSub(b, ["public/#", "secret/#"], "-v", version="5", client_id=unique_id("inc"))
    b.wait_subscribed(sub.client_id)
    mosquitto_pub(b, "-t", "secret/x", "-m", "leaked", version="5")
    mosquitto_pub(b, "-t", "public/x", "-m", "hello", version="5")
    assert sub.read_lines(1) == ["public/x hello"]
    sub.stop()
    assert "leaked" not in "\n".join(sub.output())


@pytest.mark.parametrize(
    "line, why",
    [
        ("use_username_as_clientid true", "use_username_as_clientid true is not supported by midge yet"),
        ("clientid_prefixes sensor-", "option 'clientid_prefixes' is not supported by midge yet"),
        ("mount_point tenant-a/", "option 'mount_point' is not supported by midge yet"),
        ("protocol websockets", "protocol websockets is not supported by midge yet"),
        ("bind_interface eth0", "option 'bind_interface' is not supported by midge yet"),
        ("allow_zero_length_clientid false", "allow_zero_length_clientid false is not supported by midge yet"),
        ("max_keepalive 70000", "invalid value '70000' for max_keepalive: expected a number from 0 to 65535"),
    ],
)
def test_options_that_would_loosen_security_stop_the_broker(tmp_path, line, why):
    conf = tmp_path / "broker.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\n{line}\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 3, r
    assert f"Error: {conf}:2: {why}" in r.stderr.decode(), r.stderr.decode()


def test_a_missing_include_dir_names_the_line(tmp_path):
    conf = tmp_path / "broker.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\ninclude_dir {tmp_path / 'nowhere'}\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 3, r
    assert f"Error: {conf}:2: cannot read include_dir {tmp_path / 'nowhere'}" in r.stderr.decode(), r.stderr
