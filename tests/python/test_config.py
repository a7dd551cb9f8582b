"""The broker's configuration as a mosquitto user writes it: include_dir files are read in
place (Debian's mosquitto.conf keeps its settings in conf.d), and options midge does not
have that would let more in than the configuration says stop the broker with the file,
the line and why, instead of being ignored."""
from __future__ import annotations

import os
import pwd
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import mqtt_raw as raw

from support import RUN_AS, TIMEOUT, free_port, midge_bin, mosquitto_pub, MosquittoSub, unique_id


def test_include_dir_files_are_read_and_their_acl_enforced(tmp_path, broker_factory):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (tmp_path / "acl").write_text("topic read public/#\ntopic write public/#\n")
    (conf_d / "20-acl.conf").write_text(f"acl_file {tmp_path / 'acl'}\n")
    # Only *.conf files are read: this one would stop the broker.
    (conf_d / "notes.txt").write_text("this is not a configuration file\n")
    b = broker_factory(f"include_dir {conf_d}")

    # The ACL from conf.d: anonymous clients may read public/# and nothing else (as
    # mosquitto 2.0, both subscriptions are granted; the ACL applies to each message).
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
        ("protocol mqtts", "invalid protocol 'mqtts': expected mqtt, websockets or http"),
        ("psk_file /etc/mosquitto/psk", "option 'psk_file' is not supported by midge yet"),
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


def test_log_dest_file_pid_file_and_log_rotation(tmp_path, broker_factory):
    """Debian's mosquitto.conf logs to a file and writes a pid file; logrotate moves the log
    away and sends SIGHUP. midge writes each line to every log_dest, reopens the file on
    SIGHUP, and removes its pid file when it stops."""
    log = tmp_path / "midge.log"
    pid = tmp_path / "midge.pid"
    b = broker_factory(f"log_dest file {log}", "log_dest stderr", f"pid_file {pid}", "log_timestamp false")
    cid = unique_id("logged")
    mosquitto_pub(b, "-i", cid, "-t", "t", "-m", "x")
    # Written to the file before stderr: once stderr has it, the file has it too.
    stderr_line = b.wait_for_log(rf"^New client connected from 127\.0\.0\.1:\d+ as {cid} .*$").group(0)
    # Serving, so past writing its pid file (the log and pid files are written as the
    # broker's user, once its listeners are open).
    assert pid.read_text() == f"{b.proc.pid}\n"
    assert stderr_line in log.read_text().splitlines(), "log_timestamp false: the same line, no time"
    rotated = tmp_path / "midge.log.1"
    log.rename(rotated)
    mark = b.mark()
    b.proc.send_signal(signal.SIGHUP)
    b.wait_for_log(r"Reloaded the password file", since=mark)
    assert "Reloading config." in log.read_text(), "after SIGHUP the log goes to a new file of that name"
    assert "Reloading config." not in rotated.read_text()
    assert b.stop() == 0
    assert not pid.exists(), "the pid file is removed at exit"


def run_logging(tmp_path, log_types):
    """Runs a broker with these log_type lines, logging to a file and to standard output;
    a subscriber (client id `watcher`, on t/#) then a publisher come and go. Returns the
    file's text, standard output and standard error."""
    tmp_path = tmp_path / "-".join(log_types)
    tmp_path.mkdir()
    log = tmp_path / "midge.log"
    conf = tmp_path / "broker.conf"
    port = free_port()
    conf.write_text("".join(f"{line}\n" for line in RUN_AS)
                    + f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest file {log}\nlog_dest stdout\n"
                    + "".join(f"log_type {t}\n" for t in log_types))
    proc = subprocess.Popen([str(midge_bin()), "broker", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # The broker is up once it answers: mosquitto_sub connects and subscribes.
        deadline = time.monotonic() + TIMEOUT
        while True:
            sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", "watcher",
                                    "-t", "t/#", "-C", "1", "-W", str(TIMEOUT)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
            try:
                sub.wait(timeout=0.3)  # gone at once: refused, the listener is not open yet
            except subprocess.TimeoutExpired:
                break
            assert time.monotonic() < deadline, sub.communicate()
        # The subscriber gets a message once its subscription is in: publish until it has.
        while sub.poll() is None:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t/x", "-m", "x"],
                           capture_output=True, timeout=TIMEOUT)
            assert time.monotonic() < deadline
            time.sleep(0.05)  # poll interval: the subscription may not be in yet
        assert sub.communicate()[0] == b"x\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    return log.read_text(), out.decode(), err.decode()


def test_log_type_error_logs_no_connections(tmp_path):
    log, out, err = run_logging(tmp_path, ["error"])
    # Only errors: no start-up, connection or shutdown lines anywhere.
    assert log == "" and out == "" and err == "", (log, out, err)


def test_log_type_lines_are_the_kinds_given_as_mosquittos_mask(tmp_path):
    """mosquitto's log_type is a set: notice and subscribe log clients coming and going and
    their subscriptions, and neither the broker's information lines (start, listeners) nor
    the packets (debug)."""
    log, out, err = run_logging(tmp_path, ["notice", "subscribe"])
    assert log == out and err == "", (log, out, err)
    assert re.search(r"^\d+: New client connected from 127\.0\.0\.1:\d+ as watcher ", log, re.M), log
    assert re.search(r"^\d+: watcher 0 t/#$", log, re.M), log
    assert re.search(r"^\d+: Client watcher disconnected\.$", log, re.M), log
    for information in ["starting", "Opening ipv4 listen socket", "Config loaded", "terminating", "PUBLISH"]:
        assert information not in log, (information, log)
    # And the other way: information without notice has the start, not the clients.
    log, _, _ = run_logging(tmp_path, ["information"])
    assert "Opening ipv4 listen socket" in log and "watcher" not in log, log
    # As mosquitto's "mosquitto version 2.0.11 running", once it serves.
    assert re.search(r"^\d+: midge version \S+ running$", log, re.M), log


def test_a_log_file_that_cannot_be_opened_stops_the_broker(tmp_path):
    conf = tmp_path / "broker.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\nlog_dest file {tmp_path / 'no' / 'such' / 'dir.log'}\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 1, r
    assert f"Error: Unable to open log file {tmp_path / 'no' / 'such' / 'dir.log'} for writing" in r.stderr.decode()


def _lines_until(proc: subprocess.Popen, wanted, timeout: float = TIMEOUT) -> list[str]:
    """The process's output lines up to the first for which `wanted(line)` is true; fails
    when it exits or `timeout` passes first."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
            if wanted(line):
                return
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no such line within {timeout} s; output: {seen}") from None
        if line is None:
            raise AssertionError(f"the process ended (exit {proc.poll()}); output: {seen}")
        seen.append(line)
        if wanted(line):
            return seen


def _status_ids(status: Path) -> tuple[list[int], list[int], list[int]]:
    """The real, effective, saved and file-system user and group ids, and the
    supplementary groups, from a /proc status file."""
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return ([int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()],
            [int(x) for x in fields["Groups"].split()])


def test_started_as_root_the_broker_runs_as_user_mosquitto():
    """As mosquitto: root opens the listeners and reads the files, then the broker runs as
    `user` (default mosquitto), which opens the log file (so it owns it, and can reopen it
    after rotation). Not root, it keeps its user."""
    root = os.geteuid() == 0
    port = free_port()
    # A directory the dropped user owns, as Debian's /var/log/mosquitto (pytest's are root's,
    # mode 0700).
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        d.chmod(0o755)
        if root:
            os.chown(d, pwd.getpwnam("mosquitto").pw_uid, -1)
        log = d / "midge.log"
        conf = d / "broker.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest file {log}\nlog_dest stdout\n")
        proc = subprocess.Popen([str(midge_bin()), "broker", "-c", str(conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            # The start-up lines, up to the drop (or the listener).
            lines = _lines_until(proc, lambda line: "Running as user" in line
                                 or (not root and "listen socket" in line))
            if root:
                account = pwd.getpwnam("mosquitto")
                assert lines[-1].endswith("Running as user 'mosquitto'.\n"), lines
                # Every thread, with mosquitto's groups only.
                groups = sorted(os.getgrouplist("mosquitto", account.pw_gid))
                for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
                    uids, gids, supplementary = _status_ids(status)
                    assert uids == [account.pw_uid] * 4 and gids == [account.pw_gid] * 4, (status, uids, gids)
                    assert sorted(supplementary) == groups, (status, supplementary)
            else:
                assert _status_ids(Path(f"/proc/{proc.pid}/status"))[0][1] == os.geteuid()
            # Answered once the broker serves: its log file is open by then.
            r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t", "-m", "x"],
                               capture_output=True, timeout=TIMEOUT)
            assert r.returncode == 0, r
            if root:
                assert log.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid, "created by the user, not root"
            # Log rotation after the drop: the new file is created by the broker's user.
            log.rename(d / "midge.log.1")
            proc.send_signal(signal.SIGHUP)
            _lines_until(proc, lambda line: "Reloaded the password file" in line)
            assert "Reloading config." in log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0


def test_a_user_that_does_not_exist_stops_the_broker(tmp_path, broker_factory):
    if os.geteuid() != 0:
        # Not root: nothing to drop, so `user` is not looked at (as mosquitto).
        b = broker_factory("user no-such-user-here")
        assert b.alive()
        pytest.skip("the refusal itself needs root: checked what a non-root start does instead")
    conf = tmp_path / "broker.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\nuser no-such-user-here\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 1, r
    assert "Unable to drop privileges to 'no-such-user-here' because this user does not exist." in r.stderr.decode()


def test_a_port_from_the_command_line_is_closed_with_per_listener_settings(tmp_path):
    """`-p` adds a listener; with per_listener_settings true it has no security settings of
    its own, so anonymous clients are refused there (they are allowed on the configured one)."""
    for _attempt in range(3):
        port, extra = free_port(), free_port()
        conf = tmp_path / "broker.conf"
        conf.write_text(f"per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\n")
        proc = subprocess.Popen([str(midge_bin()), "broker", "-c", str(conf), "-p", str(extra)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        opened, seen = set(), []

        def both_open(line: str) -> bool:
            seen.append(line)
            m = re.search(r"Opening ipv4 listen socket on port (\d+)\.", line)
            if m:
                opened.add(int(m.group(1)))
            return opened == {port, extra}

        try:
            _lines_until(proc, both_open)
            break
        except AssertionError:
            # A free port taken by another process between choosing and binding it.
            proc.wait(timeout=TIMEOUT)
            if not any("Address already in use" in line for line in seen):
                raise
    try:
        pub = ["mosquitto_pub", "-h", "127.0.0.1", "-t", "t", "-m", "x", "-p"]
        ok = subprocess.run(pub + [str(port)], capture_output=True, timeout=TIMEOUT)
        assert ok.returncode == 0, ok
        refused = subprocess.run(pub + [str(extra)], capture_output=True, timeout=TIMEOUT)
        assert refused.returncode != 0 and b"not authorised" in refused.stderr, refused
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0


def test_root_never_writes_through_a_link_the_brokers_user_planted():
    """The log and pid files are opened as the user the broker runs as: a link the user
    planted in its own log directory cannot make root write to (or give away) a root file."""
    if os.geteuid() != 0:
        pytest.skip("needs root: without a privilege drop the broker writes as the user who started it")
    account = pwd.getpwnam("mosquitto")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        d.chmod(0o755)
        secret = d / "root-only"
        secret.write_text("root's\n")
        secret.chmod(0o600)
        logs = d / "logs"
        logs.mkdir()
        os.chown(logs, account.pw_uid, account.pw_gid)
        (logs / "midge.log").symlink_to(secret)
        (logs / "midge.pid").symlink_to(secret)
        conf = d / "broker.conf"
        conf.write_text(f"listener {free_port()} 127.0.0.1\nlog_dest file {logs / 'midge.log'}\n")
        r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 1 and b"Unable to open log file" in r.stderr, r
        conf.write_text(f"listener {free_port()} 127.0.0.1\npid_file {logs / 'midge.pid'}\n")
        r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 1 and b"Unable to write pid file" in r.stderr, r
        assert secret.read_text() == "root's\n" and secret.stat().st_uid == 0


def test_a_start_up_error_reaches_stderr_when_the_log_is_a_file(tmp_path):
    """With `log_dest file` only, the log file is opened once the broker runs as its user:
    an error before that (here, a port another program holds) is written to stderr instead
    of being lost."""
    import socket
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    conf = tmp_path / "broker.conf"
    conf.write_text("".join(f"{line}\n" for line in RUN_AS)
                    + f"listener {port} 127.0.0.1\nlog_dest file {tmp_path / 'midge.log'}\n")
    try:
        r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, timeout=TIMEOUT)
    finally:
        held.close()
    assert r.returncode == 1, r
    assert re.search(rb"cannot listen on 127\.0\.0\.1:\d+: Address already in use", r.stderr), r.stderr


def test_connection_messages_false_leaves_connections_out_of_the_log(broker_factory):
    """connection_messages false, as mosquitto: no "New connection", "New client connected"
    or disconnection lines; the rest of the log stays."""
    import mqtt_raw as raw

    b = broker_factory("connection_messages false")
    c = raw.RawClient(b.port, raw.V311)
    c.connect("quiet-client")
    c.subscribe(1, [("quiet/#", 0)])
    c.send(raw.disconnect())
    c.wait_closed()
    b.wait_for_log(r"Received SUBSCRIBE from quiet-client")
    last = raw.RawClient(b.port, raw.V311)
    last.connect("quiet-last")
    last.subscribe(1, [("quiet/#", 0)])
    b.wait_for_log(r"Received SUBSCRIBE from quiet-last")
    log = b.log()
    for line in ("New connection from", "New client connected", "quiet-client disconnected"):
        assert line not in log, line


def test_log_timestamp_format_writes_the_local_time_as_strftime_does(broker_factory):
    """log_timestamp_format, as mosquitto: strftime's format (local time) instead of the Unix
    time at the start of each line; a format may have spaces."""
    b = broker_factory("log_timestamp_format %Y-%m-%d %H:%M:%S")
    c = raw.RawClient(b.port, raw.V311)
    c.connect("stamped")
    line = b.wait_for_log(r"^.*New client connected from .* as stamped.*$").group(0)
    stamp = time.strftime("%Y-%m-%d")
    assert re.match(rf"{stamp} \d\d:\d\d:\d\d: New client connected", line), line
