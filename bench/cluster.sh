#!/usr/bin/env bash
# Cluster mode against a single node, in one run: the same `midge bench` scenarios against
# one midge without cluster options, and against a cluster of three midge nodes on one
# nats-server with JetStream, publishers on node A and subscribers on node C (`--sub-port`).
# Node B is there, idle, as a third node is in a real cluster (it reads the QoS 1 stream
# too). Prints a table and puts it at the head of the "## Cluster" section of
# bench/RESULTS.md, in place of the previous run's (the section's "###" parts, and the rest of
# the file, are kept).
#
#   bench/cluster.sh            # about two minutes and a half
#   DURATION=3 bench/cluster.sh # shorter runs
#
# Every broker gets the limits of bench/compare.sh: QUEUE messages queued per subscriber and
# INFLIGHT QoS 1 / 2 messages in flight to each client. Everything (the NATS server, the
# brokers, the load generator) runs on this machine: compare ratios from the same run, never
# absolute figures from different runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WINDOW=${WINDOW:-200}
QUEUE=${QUEUE:-1000}
INFLIGHT=${INFLIGHT:-20}
cargo build --release -q -p midge
MIDGE="${CARGO_TARGET_DIR:-$PWD/target}/release/midge"
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS" ] || { echo "bench/cluster.sh: nats-server is not installed (apt install nats-server)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1" >&2; exit 1; }
wait_log() { # file pattern
    for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "no '$2' in $1:" >&2; tail -20 "$1" >&2; exit 1
}

nats_port=$(free_port)
mkdir -p "$work/js"
"$NATS" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_log "$work/nats.log" "Server is ready"

start_midge() { # name port [cluster]
    local name=$1 port=$2
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\nmax_inflight_messages %s\n' \
        "$port" "$QUEUE" "$INFLIGHT" > "$work/$name.conf"
    if [ -n "${3:-}" ]; then
        printf 'cluster_nats_url nats://127.0.0.1:%s\ncluster_node_name %s\n' "$nats_port" "$name" >> "$work/$name.conf"
    fi
    "$MIDGE" broker -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
    [ -z "${3:-}" ] || wait_log "$work/$name.log" "Cluster: node $name joined"
}

single=$(free_port); start_midge single "$single"
a=$(free_port); start_midge node-a "$a" cluster
b=$(free_port); start_midge node-b "$b" cluster
c=$(free_port); start_midge node-c "$c" cluster

json() { "$MIDGE" bench "$@" --json --quiet -d "$DURATION"; }
declare -A results
run() { # key args...: the same scenario against the single node, then from node A to node C
    local key=$1; shift
    echo "== $key" >&2
    results[single,$key]=$(json "$@" -p "$single")
    results[cluster,$key]=$(json "$@" -p "$a" --sub-port "$c")
}
run q0_window pairs -n 4 --inflight "$WINDOW"
run q0_flat pairs -n 4 --flat-out
run q1_window pairs -n 4 -q 1 --inflight 64
run q1_flat pairs -n 4 -q 1 --flat-out
run q0_latency pairs -n 4 -r 5000
run q1_latency pairs -n 4 -q 1 -r 1000
run q1_fanout fan-out -n 16 -q 1 --inflight 64

# Where QoS 0 messages were lost between nodes: NATS slow consumers (the server's, or the
# receiving node's client).
for f in "$work"/nats.log "$work"/node-*.log; do
    printf '%s: %s\n' "$(basename "$f")" "$(grep -i 'slow consumer' "$f" | tail -1 || true)" >&2
done

export RESULTS_JSON
RESULTS_JSON=$(for k in "${!results[@]}"; do printf '%s\t%s\n' "$k" "${results[$k]}"; done)
python3 - "$DURATION" "$WINDOW" "$QUEUE" "$INFLIGHT" "$("$NATS" --version)" <<'PY'
import datetime, json, os, platform, re, subprocess, sys
duration, window, queue, inflight, nats_version = sys.argv[1:6]
res = {}
for line in os.environ["RESULTS_JSON"].splitlines():
    key, _, value = line.partition("\t")
    variant, scenario = key.split(",")
    try:
        res[(variant, scenario)] = json.loads(value)
    except json.JSONDecodeError:
        res[(variant, scenario)] = {}
rows = [
    (f"QoS 0 pairs (4), window {window}, delivered msg/s", "q0_window", "received_per_sec", True),
    (f"QoS 0 pairs (4), window {window}, lost", "q0_window", "lost", None),
    ("QoS 0 pairs (4), flat out, delivered msg/s", "q0_flat", "delivered_per_sec", True),
    ("QoS 0 pairs (4), flat out, lost %", "q0_flat", "lost_percent", None),
    ("QoS 1 pairs (4), window 64, delivered msg/s", "q1_window", "received_per_sec", True),
    ("QoS 1 pairs (4), window 64, lost", "q1_window", "lost", None),
    ("QoS 1 pairs (4), flat out, delivered msg/s", "q1_flat", "delivered_per_sec", True),
    ("QoS 1 pairs (4), flat out, lost %", "q1_flat", "lost_percent", None),
    ("QoS 1 fan-out (1 → 16), window 64, delivered msg/s", "q1_fanout", "received_per_sec", True),
    ("QoS 0 p99 latency at 20,000 msg/s (4 pairs), µs", "q0_latency", ("latency_us", "p99"), False),
    ("QoS 0 median latency at 20,000 msg/s (4 pairs), µs", "q0_latency", ("latency_us", "p50"), False),
    ("QoS 1 p99 latency at 4,000 msg/s (4 pairs), µs", "q1_latency", ("latency_us", "p99"), False),
    ("QoS 1 median latency at 4,000 msg/s (4 pairs), µs", "q1_latency", ("latency_us", "p50"), False),
]
def get(v, s, f):
    d = res.get((v, s), {})
    if isinstance(f, tuple):
        d = d.get(f[0], {}) or {}; f = f[1]
    return d.get(f)
def fmt(x, f):
    if not isinstance(x, (int, float)):
        return "n/a"
    return "%.2f" % x if f == "lost_percent" else "%.0f" % x
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
out = ["## Cluster\n",
       f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, {nats_version}; "
       f"everything on this machine (one nats-server with JetStream, four midge processes, the load generator); "
       f"{duration} s per run, 64-byte payloads. \"single\": one midge without cluster options; \"A → C\": three "
       "midge nodes on that nats-server, publishers connected to node A, subscribers to node C (`midge bench "
       "--sub-port`), node B idle. The same limits everywhere: "
       f"`max_queued_messages {queue}`, `max_inflight_messages {inflight}`. Produced by `bench/cluster.sh`; "
       "ratios are from the same run.\n",
       "| measure | single | A → C | A → C / single |", "|---|---|---|---|"]
for label, s, f, higher in rows:
    one, two = get("single", s, f), get("cluster", s, f)
    ratio = "%.2f" % (two / one) if isinstance(one, (int, float)) and isinstance(two, (int, float)) and one else "n/a"
    out.append(f"| {label} | {fmt(one, f)} | {fmt(two, f)} | {ratio} |")
table = "\n".join(out) + "\n"
print(table)
path = "bench/RESULTS.md"
text = open(path).read() if os.path.exists(path) else ""
# Replace this script's own figures (from "## Cluster" to the next heading: the section's
# "### " parts, written by hand, stay), keep everything else.
m = re.search(r"^## Cluster\n.*?(?=^### |^## |\Z)", text, re.S | re.M)
if m:
    rest = text[m.end():]
    text = text[:m.start()] + table + ("\n" + rest if rest.strip() else "")
else:
    text = text.rstrip("\n") + "\n\n" + table
open(path, "w").write(text)
PY
