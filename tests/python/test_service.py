"""midge as a service: `midge broker -d` (a daemon, as mosquitto -d), the systemd unit in
contrib/systemd (checked by systemd-analyze, its ExecStart and ExecReload lines run with a
readiness socket as systemd gives one), midge started under the name `mosquitto` by
Debian's own mosquitto unit line, and start-up errors that never go unseen."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from service_support import UNIT, NotifySocket, exec_line, round_trip, unit_settings, wait_gone
from support import HOST, RUN_AS, TIMEOUT, free_port, midge_bin, require_program

ROOT = os.geteuid() == 0


def wait_for_file_text(path: Path, text: str, timeout: float = TIMEOUT) -> str:
    """The file's content once it contains `text` (the broker writes its log as it goes)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}:\n{content}"
        time.sleep(0.02)  # poll interval for a file another process appends to


def proc_stat(pid: int) -> tuple[int, int]:
    """(parent pid, session id) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def test_daemon_mode_returns_once_listening_and_detaches(tmp_path):
    """-d: the command returns 0 once the broker listens (a client connects at once), and the
    broker goes on alone: another session, standard streams on /dev/null, its pid in
    pid_file, its working directory kept (relative paths stay valid for SIGHUP)."""
    port = free_port()
    conf = tmp_path / "broker.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true",
                               "pid_file midge.pid", "log_dest file midge.log"]) + "\n")
    r = subprocess.run([str(midge_bin()), "broker", "-d", "-c", "broker.conf"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r
    assert r.stdout == "" and r.stderr == "", r
    pid = int((tmp_path / "midge.pid").read_text())
    try:
        ppid, sid = proc_stat(pid)
        assert ppid != os.getpid() and sid != os.getsid(0), (ppid, sid)
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
        round_trip(port)
        os.kill(pid, signal.SIGHUP)
        wait_for_file_text(tmp_path / "midge.log", "Reloaded the password file")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
    assert "midge version" in wait_for_file_text(tmp_path / "midge.log", "terminating")
    assert not (tmp_path / "midge.pid").exists(), "the pid file is removed at exit"


def test_daemon_mode_failure_reaches_the_terminal(tmp_path):
    """-d with a port another program holds: the error is on the terminal (the command's
    stderr), the exit code is 1, and no broker is left running."""
    held = socket.socket()
    held.bind((HOST, 0))
    held.listen()
    port = held.getsockname()[1]
    conf = tmp_path / "broker.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "pid_file midge.pid",
                               "log_dest file midge.log"]) + "\n")
    try:
        r = subprocess.run([str(midge_bin()), "broker", "-d", "-c", "broker.conf"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        held.close()
    assert r.returncode == 1, r
    assert str(port) in r.stderr and "Address already in use" in r.stderr, r
    assert not (tmp_path / "midge.pid").exists()
    # The log file says it too, as mosquitto's does (it is where a service's users look).
    log = (tmp_path / "midge.log").read_text()
    assert "midge version" in log and "Address already in use" in log, log


@pytest.mark.parametrize("case", ["password-missing", "acl-missing", "acl-bad-line"])
def test_security_files_that_stop_the_start_give_mosquittos_exit_code_and_reach_the_log(case):
    """A password or ACL file that cannot be read stops the start with mosquitto's exit code
    13, an ACL line it cannot take (here a misspelt access word, which must not become a
    rule of another meaning) with 3, the configuration error code. Both brokers are run on
    the same files: the codes are compared, not assumed. The error names the file (and the
    line) on stderr and in the log file, which started as root is opened as the broker's
    user, as mosquitto opens it."""
    mosquitto = require_program("mosquitto", "apt-get install mosquitto")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        d.chmod(0o755)  # the broker's user (mosquitto reads its files as that user) may look in
        line, says = {
            "password-missing": (f"password_file {d}/nowhere.pw", f"cannot read password file {d}/nowhere.pw"),
            "acl-missing": (f"acl_file {d}/nowhere.acl", f"cannot read ACL file {d}/nowhere.acl"),
            "acl-bad-line": (f"acl_file {d}/bad.acl", f"{d}/bad.acl:3: invalid access type 'dney'"),
        }[case]
        (d / "bad.acl").write_text("user alice\ntopic read a/#\ntopic dney secret/#\n")
        logs = d / "logs"
        logs.mkdir()
        if ROOT:
            shutil.chown(logs, "mosquitto")
        codes = {}
        for name, argv in (("midge", [str(midge_bin()), "broker"]), ("mosquitto", [mosquitto])):
            conf = d / f"{name}.conf"
            conf.write_text("\n".join([f"listener {free_port()} {HOST}", line,
                                       f"log_dest file {logs}/{name}.log", "log_dest stderr"]) + "\n")
            r = subprocess.run([*argv, "-c", str(conf)], capture_output=True, text=True, timeout=TIMEOUT)
            codes[name] = r.returncode
            if name == "midge":
                assert says in r.stderr, r.stderr
                log = (logs / "midge.log").read_text()
                assert says in log and "midge version" in log, log
                if ROOT:
                    assert (logs / "midge.log").stat().st_uid == pwd.getpwnam("mosquitto").pw_uid, \
                        "the log file is the broker's user's, not root's"
        assert codes["midge"] == codes["mosquitto"] == (3 if case == "acl-bad-line" else 13), codes


def test_a_file_only_root_can_read_is_named_at_start(tmp_path):
    """Started as root, midge reads its password file as root, then runs as mosquitto, which
    cannot read a file of mode 600 owned by root again at SIGHUP: the start says so, naming
    the file and the user, instead of leaving it to the first reload. (mosquitto reads the
    file after giving root up, and refuses to start.)"""
    if not ROOT:
        pytest.skip("needs root: the file is root's")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        d.chmod(0o755)
        pw = d / "passwd"
        r = subprocess.run([str(midge_bin()), "passwd", "-b", "-c", str(pw), "alice", "secret"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r
        pw.chmod(0o600)
        port = free_port()
        conf = d / "broker.conf"
        conf.write_text(f"user mosquitto\nlistener {port} {HOST}\npassword_file {pw}\n")
        proc = subprocess.Popen([str(midge_bin()), "broker", "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if " running" in line:
                    break
            log = "".join(lines)
            assert (f"{pw} was read as root at start, but user 'mosquitto' cannot read it: a reload (SIGHUP) "
                    "will keep its present version") in log, log
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
@pytest.mark.parametrize("what", ["log", "pid", "persistence"])
def test_a_file_the_brokers_user_cannot_write_stops_it_loudly(daemon, what):
    """Started as root, the broker runs as `user` (mosquitto) before it opens its log and pid
    files and its store: under a directory only root may write, it cannot. It says so on
    stderr, naming the file and the user, and exits 1 (in the foreground and with -d)."""
    if not ROOT:
        pytest.skip("needs root: the failure follows the privilege drop")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        d.chmod(0o755)  # root's, readable by all, writable by root only (as /var/log)
        port = free_port()
        target = {"log": d / "midge.log", "pid": d / "midge.pid", "persistence": d / "store"}[what]
        line = {"log": f"log_dest file {target}", "pid": f"pid_file {target}",
                "persistence": f"persistence true\npersistence_location {target}/"}[what]
        if what == "persistence":
            target.mkdir(mode=0o755)
        conf = d / "broker.conf"
        conf.write_text(f"user mosquitto\nlistener {port} {HOST}\n{line}\n")
        r = subprocess.run([str(midge_bin()), "broker", *(["-d"] if daemon else []), "-c", str(conf)],
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 1, r
        assert str(target) in r.stderr, r.stderr
        assert "user 'mosquitto'" in r.stderr, r.stderr
        assert "Permission denied" in r.stderr, r.stderr
        with socket.socket() as s:
            assert s.connect_ex((HOST, port)) != 0, "nothing is left listening"


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    """contrib/systemd/midge.service as systemd reads it; only the binary's path is this
    build's (the package's test verifies the installed unit as it is)."""
    analyze = require_program("systemd-analyze", "apt-get install systemd")
    unit = tmp_path / "midge.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/midge", str(midge_bin())))
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r
    assert "midge.service" not in r.stderr, r.stderr  # no warning about the unit itself


def test_the_units_exec_start_notifies_readiness_and_reloads(tmp_path):
    """The unit's ExecStart line, run as systemd runs a Type=notify service: READY=1 once the
    broker serves; ExecReload (SIGHUP) answers RELOADING=1 then READY=1; SIGTERM (systemctl
    stop) STOPPING=1 and exit 0. The unit names its user and the directories systemd makes."""
    settings = unit_settings(UNIT)
    assert settings["Type"] == ["notify"]
    assert settings["User"] == ["midge"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for key in ("RuntimeDirectory", "StateDirectory", "LogsDirectory"):
        assert settings[key] == ["midge"], key
    port = free_port()
    conf = tmp_path / "midge.conf"
    # The package's configuration with this test's port and directories (systemd's
    # RuntimeDirectory, StateDirectory, LogsDirectory).
    packaged = (UNIT.parents[1] / "debian" / "midge.conf").read_text()
    packaged = (packaged.replace("listener 1883 localhost", f"listener {port} {HOST}")
                .replace("/var/lib/midge/", f"{tmp_path}/")
                .replace("/var/log/midge/", f"{tmp_path}/")
                .replace("include_dir /etc/midge/conf.d", f"include_dir {tmp_path / 'conf.d'}")
                .replace("user midge", "\n".join(RUN_AS)))
    (tmp_path / "conf.d").mkdir()
    conf.write_text(packaged + f"pid_file {tmp_path}/midge.pid\n")
    argv = exec_line(settings["ExecStart"][0], {"/usr/bin/midge": str(midge_bin()),
                                               "/etc/midge/midge.conf": str(conf)})
    notify = NotifySocket(tmp_path)
    proc = subprocess.Popen(argv, env=notify.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        notify.wait_for("READY=1", proc=proc)
        round_trip(port)
        reload = exec_line(settings["ExecReload"][0].replace("$MAINPID", str(proc.pid)), {})
        assert subprocess.run(reload, timeout=TIMEOUT).returncode == 0
        seen = notify.wait_for("READY=1")
        assert any("RELOADING=1" in m.split("\n") for m in seen), seen
        assert "Reloaded the password file" in (tmp_path / "midge.log").read_text()
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


# Debian's mosquitto.service, as mosquitto 2.0.11's package installs it.
DEBIAN_UNIT = Path("/lib/systemd/system/mosquitto.service")


def test_started_as_mosquitto_it_runs_debians_unit_and_init_lines(tmp_path):
    """A link named mosquitto to midge is the broker and takes mosquitto's options: Debian's
    own unit line (`mosquitto -c /etc/mosquitto/mosquitto.conf`, Type=notify) starts it and
    its reload line reloads it; `mosquitto -d -c FILE` daemonizes; `mosquitto -p PORT -v`
    serves on localhost."""
    link = tmp_path / "mosquitto"
    link.symlink_to(midge_bin())
    if DEBIAN_UNIT.exists():
        settings = unit_settings(DEBIAN_UNIT)
    else:  # what Debian's mosquitto package ships (scripts/test installs it)
        pytest.fail(f"{DEBIAN_UNIT} is missing: install Debian's mosquitto package", pytrace=False)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true",
                               f"log_dest file {tmp_path}/mosquitto.log"]) + "\n")
    argv = exec_line(settings["ExecStart"][0], {"/usr/sbin/mosquitto": str(link),
                                               "/etc/mosquitto/mosquitto.conf": str(conf)})
    assert argv[0] == str(link), argv
    notify = NotifySocket(tmp_path)
    proc = subprocess.Popen(argv, env=notify.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        notify.wait_for("READY=1", proc=proc)
        round_trip(port)
        reload = exec_line(settings["ExecReload"][0].replace("$MAINPID", str(proc.pid)), {})
        assert subprocess.run(reload, timeout=TIMEOUT).returncode == 0
        notify.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()

    # mosquitto -d -c FILE, as an init script starts it.
    port = free_port()
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true",
                               f"pid_file {tmp_path}/mosquitto.pid"]) + "\n")
    r = subprocess.run([str(link), "-d", "-c", str(conf)], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r
    pid = int((tmp_path / "mosquitto.pid").read_text())
    try:
        round_trip(port)
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)

    # mosquitto -p PORT -v: no configuration, localhost only, every packet logged.
    port = free_port()
    proc = subprocess.Popen([str(link), "-p", str(port), "-v"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if f"listen socket on port {port}" in line:
                break
        round_trip(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Received SUBSCRIBE" in err, err


def test_a_missing_setup_for_the_user_is_named_by_user(tmp_path):
    """The errors name the user the broker runs as also when it never dropped root (not
    started as root, or `user root`): here, the current user."""
    port = free_port()
    missing = tmp_path / "no-such-dir" / "midge.pid"
    conf = tmp_path / "broker.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", f"pid_file {missing}"]) + "\n")
    r = subprocess.run([str(midge_bin()), "broker", "-c", str(conf)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 1, r
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert f"Unable to write pid file {missing}" in r.stderr and f"user '{me}'" in r.stderr, r.stderr
    assert shutil.which("mosquitto_pub"), "mosquitto-clients"


DEBIAN_INIT = Path("/etc/init.d/mosquitto")


def test_debians_init_script_lines_start_reload_and_stop_midge_as_mosquitto(tmp_path):
    """The start, reload and stop lines of Debian's /etc/init.d/mosquitto (start-stop-daemon
    with --background and a pid file it makes), with a link named mosquitto to midge for
    /usr/sbin/mosquitto and this test's configuration and pid file."""
    import re
    if not DEBIAN_INIT.exists():
        pytest.fail(f"{DEBIAN_INIT} is missing: install Debian's mosquitto package", pytrace=False)
    script = DEBIAN_INIT.read_text()
    lines = {what: re.search(rf"if (start-stop-daemon [^;\n]*{flag}[^;\n]*?)\s*;\s*then", script).group(1)
             for what, flag in (("start", "--start"), ("reload", "--signal HUP"), ("stop", r"--stop --quiet"))}
    link = tmp_path / "mosquitto"
    link.symlink_to(midge_bin())
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true",
                               f"log_dest file {tmp_path}/mosquitto.log"]) + "\n")
    pidfile = tmp_path / "mosquitto.pid"
    swap = {"${DAEMON}": str(link), "${PIDFILE}": str(pidfile), "$PIDFILE": str(pidfile),
            "/etc/mosquitto/mosquitto.conf": str(conf)}

    def line(what: str) -> list[str]:
        text = lines[what]
        for old, new in swap.items():
            text = text.replace(old, new)
        return exec_line(text, {})

    assert subprocess.run(line("start"), timeout=TIMEOUT).returncode == 0
    deadline = time.monotonic() + TIMEOUT
    while not (pidfile.exists() and pidfile.read_text().strip()):  # start-stop-daemon writes it
        assert time.monotonic() < deadline, "no pid file"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    try:
        # --background returns at once: a client may come before the listener is open.
        log = wait_for_file_text(tmp_path / "mosquitto.log", f"listen socket on port {port}")
        assert "midge version" in log
        round_trip(port)
        assert subprocess.run(line("reload"), timeout=TIMEOUT).returncode == 0
        wait_for_file_text(tmp_path / "mosquitto.log", "Reloaded the password file")
        assert subprocess.run(line("stop"), timeout=TIMEOUT).returncode == 0
        wait_gone(pid)
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    assert "terminating" in (tmp_path / "mosquitto.log").read_text()


@pytest.mark.parametrize("facility, base", [(None, 3 << 3), (2, (16 + 2) << 3)], ids=["daemon", "local2"])
def test_log_dest_syslog_sends_each_line_to_the_system_log(tmp_path, facility, base):
    """log_dest syslog: each line is a datagram to the system log's socket as syslog(3) sends
    it, `<PRIORITY>midge[PID]: message`, facility daemon or local0-7 (log_facility), the
    severity from the line's level; the message begins with its time, as mosquitto's."""
    sock_path = tmp_path / "log.sock"
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(sock_path))
    syslog.settimeout(TIMEOUT)
    port = free_port()
    conf = tmp_path / "broker.conf"
    lines = [*RUN_AS, f"listener {port} {HOST}", "allow_anonymous true", "log_dest syslog",
             "dhparamfile /etc/dh.pem"]
    if facility is not None:
        lines.append(f"log_facility {facility}")
    conf.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, MIDGE_SYSLOG_SOCKET=str(sock_path))
    proc = subprocess.Popen([str(midge_bin()), "broker", "-c", str(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        got: list[str] = []
        while not any(f"Opening ipv4 listen socket on port {port}." in g for g in got):
            got.append(syslog.recv(4096).decode())
        pid = proc.pid
        text = "\n".join(got)
        assert re.search(rf"<{base | 4}>midge\[{pid}\]: \d+: warn: {conf}:5: option 'dhparamfile' is not", text), got
        assert re.search(rf"<{base | 6}>midge\[{pid}\]: \d+: Opening ipv4 listen socket on port {port}\.", text), got
        round_trip(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
        syslog.close()
    assert proc.returncode == 0
    assert out == b"" and err == b"", "nothing on the terminal: every line went to the system log"
