#!/usr/bin/env bash
# Runs the same `midge bench` scenarios against midge and the Debian mosquitto broker (and
# rumqttd when it is installed), one broker after the other in one run, and prints a table
# of ratios; writes it to bench/RESULTS.md with the machine it ran on.
#
#   bench/compare.sh            # about three minutes
#   DURATION=5 bench/compare.sh # shorter runs
#
# These machines are noisy: compare ratios from the same run, never absolute figures from
# different runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
IDLE=${IDLE:-19000}
WINDOW=${WINDOW:-200}
cargo build --release -q -p midge
MIDGE="$PWD/target/release/midge"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
    echo "bench/compare.sh: mosquitto is not installed (apt install mosquitto)" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no broker on $1" >&2; exit 1; }

start_broker() { # name port; sets broker_pid (a child of this shell, so that wait works)
    local name=$1 port=$2
    case $name in
        midge)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/midge.conf"
            "$MIDGE" broker -c "$work/midge.conf" >"$work/midge.log" 2>&1 & ;;
        mosquitto)
            printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
            ulimit -n 20000 2>/dev/null || true
            "$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & ;;
        rumqttd)
            printf 'id = 0\n[router]\nid = 0\nmax_connections = 30010\nmax_outgoing_packet_count = 200\nmax_segment_size = 104857600\nmax_segment_count = 10\n[v4.1]\nname = "v4-1"\nlisten = "127.0.0.1:%s"\nnext_connection_delay_ms = 0\n[v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 20480\nmax_inflight_count = 20\ndynamic_filters = true\n' "$port" > "$work/rumqttd.toml"
            ulimit -n 20000 2>/dev/null || true
            rumqttd -q -c "$work/rumqttd.toml" >"$work/rumqttd.log" 2>&1 & ;;
    esac
    broker_pid=$!
}

json() { "$MIDGE" bench "$@" --json --quiet; }

brokers=(midge mosquitto)
command -v rumqttd >/dev/null 2>&1 && brokers+=(rumqttd)
declare -A results
for b in "${brokers[@]}"; do
    port=$(free_port)
    start_broker "$b" "$port"; pid=$broker_pid; pids+=("$pid")
    wait_port "$port"
    echo "== $b (pid $pid, port $port)" >&2
    results[$b,pairs]=$(json pairs -p "$port" -n 4 -d "$DURATION" --inflight "$WINDOW")
    results[$b,fanin]=$(json fan-in -p "$port" -n 4 -d "$DURATION" --inflight "$WINDOW")
    results[$b,fanout]=$(json fan-out -p "$port" -n 16 -d "$DURATION" --inflight "$WINDOW")
    results[$b,qos1]=$(json fan-in -p "$port" -n 4 -q 1 --inflight 64 -d "$DURATION")
    results[$b,latency]=$(json pairs -p "$port" -n 4 -r 5000 -d "$DURATION")
    results[$b,conn]=$(json conn -p "$port" -n 10000 --pid "$pid")
    # The same latency run with idle connections held open beside it.
    "$MIDGE" bench conn -p "$port" -n "$IDLE" --hold $((DURATION + 15)) --quiet --source 127.0.0.2,127.0.0.3 > "$work/idle.txt" 2>&1 &
    idle=$!
    for _ in $(seq 1 300); do grep -q "connections open" "$work/idle.txt" 2>/dev/null && break; sleep 0.1; done
    grep -q "connections open" "$work/idle.txt" || echo "warning: $b: the idle connections were not all open after 30 s" >&2
    results[$b,idle]=$(grep -m1 "connections open" "$work/idle.txt" || true)
    results[$b,latency_idle]=$(json pairs -p "$port" -n 4 -r 5000 -d "$DURATION")
    kill "$idle" 2>/dev/null || true; wait "$idle" 2>/dev/null || true
    kill "$pid" 2>/dev/null || echo "warning: $b had exited before the end of its runs" >&2
    wait "$pid" 2>/dev/null || true
done

export RESULTS_JSON
RESULTS_JSON=$(for k in "${!results[@]}"; do printf '%s\t%s\n' "$k" "${results[$k]}"; done)
python3 - "$DURATION" "$WINDOW" "$IDLE" <<'PY'
import json, os, platform, subprocess, sys, datetime
duration, window, idle = sys.argv[1:4]
res = {}
for line in os.environ["RESULTS_JSON"].splitlines():
    key, _, value = line.partition("\t")
    broker, scenario = key.split(",")
    try:
        res[(broker, scenario)] = json.loads(value)
    except json.JSONDecodeError:
        res[(broker, scenario)] = {"text": value}
brokers = [b for b in ("midge", "mosquitto", "rumqttd") if (b, "pairs") in res]
rows = [
    ("QoS 0 pairs (4), delivered msg/s", "pairs", "received_per_sec", True),
    ("QoS 0 fan-in (4 → 1), delivered msg/s", "fanin", "received_per_sec", True),
    ("QoS 0 fan-out (1 → 16), delivered msg/s", "fanout", "received_per_sec", True),
    ("QoS 1 fan-in, window 64, delivered msg/s", "qos1", "received_per_sec", True),
    ("QoS 1 fan-in, window 64, lost", "qos1", "lost", False),
    ("p99 latency at 20,000 msg/s (4 pairs), µs", "latency", ("latency_us", "p99"), False),
    (f"p99 latency at 20,000 msg/s with {idle} idle connections, µs", "latency_idle", ("latency_us", "p99"), False),
    ("memory per idle connection, bytes", "conn", "bytes_per_connection", False),
    (f"idle connections held (of {idle})", "idle", "open", True),
]
def get(b, s, f):
    d = res.get((b, s), {})
    if f == "open":  # the text line of `bench conn --hold`: "conn: N connections open, F failed, ..."
        import re
        m = re.search(r"(\d+) connections open", d.get("text", ""))
        return int(m.group(1)) if m else None
    if isinstance(f, tuple):
        d = d.get(f[0], {}); f = f[1]
    return d.get(f)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
head = ["measure"] + brokers + [f"midge / {b}" for b in brokers[1:]]
out = [f"# midge bench results\n",
       f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
       f"load generator on the same machine; {duration} s per run, QoS 0 flat out with an end-to-end window of {window}, 64-byte payloads.\n",
       "Produced by `bench/compare.sh`; ratios are from the same run. Each broker runs with its defaults "
       "(mosquitto: Debian package, `set_tcp_nodelay false`, `max_queued_messages 1000`; rumqttd: its "
       "generated configuration, with 20 messages in flight per client as mosquitto and midge); the idle connections come from 127.0.0.2 and 127.0.0.3.\n",
       "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for label, s, f, higher_better in rows:
    vals = [get(b, s, f) for b in brokers]
    cells = [label] + [("%.0f" % v if isinstance(v, (int, float)) else "n/a") for v in vals]
    for v in vals[1:]:
        m = vals[0]
        if isinstance(m, (int, float)) and isinstance(v, (int, float)) and m and v:
            cells.append("%.2fx" % (m / v if higher_better else v / m) + ("" if higher_better else " better" if v >= m else " worse"))
        else:
            cells.append("n/a")
    out.append("| " + " | ".join(cells) + " |")
out.append("\nLatency and memory ratios read as how many times lower midge's figure is.")
text = "\n".join(out) + "\n"
print(text)
open("bench/RESULTS.md", "w").write(text)
PY
