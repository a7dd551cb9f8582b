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
