"""`midge bench` as a user runs it, against midge and against mosquitto: the summary adds
up (what was sent arrived, nothing lost at QoS 1 and 2), --json carries the parameters and
the per-second series, --plot writes an SVG, conn reports the broker's memory. Rates are
kept low: these tests check the tool, not the speed (that is bench/compare.sh's job)."""
from __future__ import annotations

import json
import subprocess

import pytest

from security_support import ConfiguredBroker, MosquittoBroker
from support import midge_bin


def bench(port: int, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(midge_bin()), "bench", *args, "-p", str(port), "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"midge bench {args} exited {r.returncode}: {r.stderr}"
    return r


@pytest.fixture(params=["midge", "mosquitto"])
def target(request, tmp_path):
    cls = MosquittoBroker if request.param == "mosquitto" else ConfiguredBroker
    b = cls(tmp_path, "listener {port} 127.0.0.1\nallow_anonymous true\n", name=request.param).start()
    yield b
    b.stop()


def test_pairs_json_adds_up(target):
    out = json.loads(bench(target.port, "pairs", "-n", "2", "-q", "1", "-r", "100", "-d", "2", "--json").stdout)
    assert out["sent"] > 0 and out["received"] == out["expected"] == out["sent"], out
    assert out["lost"] == 0
    assert out["parameters"] == {
        "scenario": "pairs", "publishers": 2, "subscribers": 2, "qos": 1, "size": 64, "rate": 100,
        "inflight": 64, "duration": 2, "mqtt_version": "3.1.1", "tls": False,
    }, out["parameters"]
    assert len(out["series"]) >= 1 and all(s["received_per_sec"] >= 0 for s in out["series"]), out["series"]
    assert 0 < out["latency_us"]["p50"] <= out["latency_us"]["p99"] <= out["latency_us"]["max"], out["latency_us"]


def test_fan_out_qos2_text_and_plot(target, tmp_path):
    svg = tmp_path / "run.svg"
    text = bench(target.port, "fan-out", "-n", "3", "-q", "2", "-r", "50", "-d", "1", "-V", "5",
                 "--plot", str(svg)).stdout
    sent = int(text.split("sent")[1].split()[0])
    assert f"received  {3 * sent} msg" in text and "lost      0 of" in text, text
    assert svg.read_text().lstrip().startswith("<svg") and "</svg>" in svg.read_text()


def test_conn_reports_the_brokers_memory(target):
    out = json.loads(bench(target.port, "conn", "-n", "50", "--pid", str(target.proc.pid), "--json").stdout)
    assert out["connections"] == 50 and out["failed"] == 0, out
    assert out["broker_rss_after"] >= out["broker_rss_before"] > 0, out


# --flat-out: no window, exact loss. Short runs: the figures must add up, whatever the speed.

COPIES = {"fan-in": 1, "pairs": 1, "fan-out": 3, "shared": 1}


def flat(port: int, scenario: str, *args: str) -> dict:
    out = json.loads(bench(port, scenario, "--flat-out", "-d", "1", "--json", *args).stdout)
    assert out["mode"] == "flat-out" and out["errors"] == [], out
    assert out["published"] > 0 and out["delivered"] > 0, out
    # Every message published is delivered or lost, once per subscriber it reaches.
    n = int(args[args.index("-n") + 1]) if "-n" in args else 4
    copies = n if scenario == "fan-out" else COPIES[scenario]
    assert out["expected"] == copies * out["published"], out
    assert out["delivered"] + out["lost"] == out["expected"], out
    assert out["duplicates"] == 0 and out["invalid"] == 0, out
    assert out["delivered_at_stop"] <= out["delivered"], out
    assert out["lost_percent"] == round(100 * out["lost"] / out["expected"], 3), out
    assert out["published_per_sec"] > 0 and out["delivered_per_sec"] > 0, out
    assert 0.9 <= out["seconds"] <= 2 and out["delivering_seconds"] > 0, out
    # The drain ends a second after the last delivery, or at once when everything arrived.
    assert out["drain_seconds"] < 5, out
    g = out["generator"]
    assert g["threads"] == 1 and g["cpu_seconds"] > 0 and g["cpu_seconds_per_million"] > 0, g
    assert g["messages_handled"] >= out["published"] + out["delivered"], g
    assert len(out["series"]) >= 1 and {"t", "published_per_sec", "delivered_per_sec"} <= set(out["series"][0]), out
    return out


@pytest.mark.parametrize("scenario, args", [
    ("fan-in", ("-n", "3")),
    ("pairs", ("-n", "2")),
    ("fan-out", ("-n", "3")),
])
def test_flat_out_qos0_adds_up(target, scenario, args):
    out = flat(target.port, scenario, *args)
    assert out["parameters"]["scenario"] == scenario and out["parameters"]["qos"] == 0, out
    assert out["in_flight"] is None and out["acked"] == 0, out
    if target.name == "mosquitto":
        # mosquitto 2.0 never drops QoS 0 for a connected subscriber (its queue limit is for
        # QoS 1 and 2): after the drain, nothing is missing.
        assert out["lost"] == 0, out


@pytest.mark.parametrize("scenario, args", [
    ("pairs", ("-n", "2", "-q", "1")),
    ("fan-out", ("-n", "2", "-q", "2", "-V", "5")),
    ("shared", ("-n", "2", "-m", "2", "-q", "1", "-V", "5")),
])
def test_flat_out_qos1_qos2_acknowledged_and_counted(target, scenario, args):
    out = flat(target.port, scenario, *args, "--inflight", "10")
    # Everything written was acknowledged by the end of the drain; at most 10 in flight
    # (5.0: also bounded by the broker's Receive Maximum).
    assert out["acked"] == out["published"] and out["refused"] == 0, out
    assert 1 <= out["in_flight"] <= 10, out


def test_flat_out_counts_what_mosquitto_drops(tmp_path):
    """mosquitto with a queue of 5 messages per client drops QoS 1 messages for a subscriber
    that is behind: the loss is counted exactly, published = delivered + lost."""
    b = MosquittoBroker(tmp_path, "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 5\n",
                        name="mosquitto").start()
    try:
        out = flat(b.port, "fan-in", "-n", "4", "-q", "1", "--inflight", "20")
    finally:
        b.stop()
    assert out["lost"] > 0 and out["published"] == out["delivered"] + out["lost"], out
    assert out["acked"] == out["published"], out


def test_flat_out_text(target, tmp_path):
    svg = tmp_path / "flat.svg"
    text = bench(target.port, "pairs", "-n", "2", "--flat-out", "-d", "1", "--plot", str(svg)).stdout
    lines = text.splitlines()
    assert lines[0] == "pairs: 2 publishers, 2 subscribers, QoS 0, 64 B, flat out, MQTT 3.1.1", text
    published = int(lines[1].split()[1])
    delivered, expected = int(lines[2].split()[1]), int(lines[2].split()[3])
    lost = int(lines[3].split()[1])
    assert expected == published and delivered + lost == published, text
    assert lines[-1].startswith("generator ") and "per million messages written or read" in lines[-1], text
    # No latency is measured flat out: the plot has the throughput chart only.
    assert "throughput" in svg.read_text() and "latency" not in svg.read_text()


@pytest.mark.parametrize("args, message", [
    (("pairs", "-r", "100"), "not with --rate"),
    (("conn",), "not conn"),
    (("pairs", "-s", "8"), "at least 16 bytes"),
])
def test_flat_out_refuses(args, message):
    r = subprocess.run([str(midge_bin()), "bench", *args, "--flat-out", "-p", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and message in r.stderr, r.stderr
