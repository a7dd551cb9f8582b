#!/usr/bin/env bash
# Runs the same `midge bench` scenarios against midge and the Debian mosquitto broker (and
# rumqttd when it is installed), one broker after the other in one run, and prints a table
# of ratios; writes it to bench/RESULTS.md with the machine it ran on.
#
#   bench/compare.sh            # about six minutes
#   DURATION=5 bench/compare.sh # shorter runs
#
# Every broker gets the same limits: at most QUEUE messages queued per subscriber and INFLIGHT
# QoS 1 / 2 messages in flight to each client (midge and mosquitto: max_queued_messages and
# max_inflight_messages; rumqttd: max_inflight_count). mosquitto keeps Nagle on (its default,
# faster for throughput) except in the latency runs, where it gets set_tcp_nodelay true
# (midge always sets TCP_NODELAY; rumqttd never, and has no option).
#
# The flat-out runs (`midge bench --flat-out`) have no window: publishers write as fast as the
# broker takes it, and the loss is counted exactly after a drain. Each runs on a freshly
# started broker. rumqttd has no queue per subscriber: what waits for subscribers is its
# commit log per topic filter, so in the flat-out runs that log is sized to about QUEUE
# messages (SEGMENT). The other runs keep the log of its shipped configuration (10 segments
# of 100 MiB), as before, and the flat-out runs are repeated with it: a line of their own.
#
# These machines are noisy: compare ratios from the same run, never absolute figures from
# different runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
IDLE=${IDLE:-19000}
WINDOW=${WINDOW:-200}
QUEUE=${QUEUE:-1000}
INFLIGHT=${INFLIGHT:-20}
# rumqttd's commit log flat out: one segment of SEGMENT bytes plus the active one. rumqttd
# counts 4 + topic + payload bytes per message: 100 KiB hold about 1,190 messages of 64 bytes
# on these topics, so the log keeps 1,190 to 2,380 of them.
SEGMENT=${SEGMENT:-102400}
cargo build --release -q -p midge
MIDGE="${CARGO_TARGET_DIR:-$PWD/target}/release/midge"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
    echo "bench/compare.sh: mosquitto is not installed (apt install mosquitto)" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no broker on $1" >&2; exit 1; }

start_broker() { # name port [latency|flat]; sets broker_pid (a child of this shell, so that wait works)
    local name=$1 port=$2 nodelay=false
    [ "${3:-}" = latency ] && nodelay=true
    case $name in
        midge)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\nmax_inflight_messages %s\n' \
                "$port" "$QUEUE" "$INFLIGHT" > "$work/midge.conf"
            "$MIDGE" broker -c "$work/midge.conf" >"$work/midge.log" 2>&1 & ;;
        mosquitto)
            printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages %s\nmax_inflight_messages %s\nset_tcp_nodelay %s\n' \
                "$port" "$QUEUE" "$INFLIGHT" "$nodelay" > "$work/mosquitto.conf"
            ulimit -n 20000 2>/dev/null || true
            "$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & ;;
        rumqttd|rumqttd-1g)
            # The shipped commit log, or (flat out) one the size of QUEUE messages.
            local size=104857600 count=10
            [ "$name" = rumqttd ] && [ "${3:-}" = flat ] && { size=$SEGMENT; count=1; }
            printf 'id = 0\n[router]\nid = 0\nmax_connections = 30010\nmax_outgoing_packet_count = 200\nmax_segment_size = %s\nmax_segment_count = %s\n[v4.1]\nname = "v4-1"\nlisten = "127.0.0.1:%s"\nnext_connection_delay_ms = 0\n[v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 20480\nmax_inflight_count = %s\ndynamic_filters = true\n' \
                "$size" "$count" "$port" "$INFLIGHT" > "$work/rumqttd.toml"
            ulimit -n 20000 2>/dev/null || true
            rumqttd -q -c "$work/rumqttd.toml" >"$work/rumqttd.log" 2>&1 & ;;
    esac
    broker_pid=$!
    pids+=("$broker_pid")
    wait_port "$port"
}

stop_broker() { # pid name
    kill "$1" 2>/dev/null || echo "warning: $2 had exited before the end of its runs" >&2
    wait "$1" 2>/dev/null || true
}

json() { "$MIDGE" bench "$@" --json --quiet; }

# The flat-out scenarios, each on a fresh broker: results[$b,flat_$s].
flat_out() { # broker
    local b=$1 s args
    for s in fanin pairs fanout; do
        case $s in
            fanin) args=(fan-in -n 4) ;;
            pairs) args=(pairs -n 4) ;;
            fanout) args=(fan-out -n 16) ;;
        esac
        port=$(free_port)
        start_broker "$b" "$port" flat; pid=$broker_pid
        results[$b,flat_$s]=$(json "${args[@]}" -p "$port" -d "$DURATION" --flat-out)
        stop_broker "$pid" "$b"
    done
}

brokers=(midge mosquitto)
command -v rumqttd >/dev/null 2>&1 && brokers+=(rumqttd)
declare -A results
for b in "${brokers[@]}"; do
    port=$(free_port)
    start_broker "$b" "$port"; pid=$broker_pid
    echo "== $b (pid $pid, port $port)" >&2
    results[$b,pairs]=$(json pairs -p "$port" -n 4 -d "$DURATION" --inflight "$WINDOW")
    results[$b,fanin]=$(json fan-in -p "$port" -n 4 -d "$DURATION" --inflight "$WINDOW")
    results[$b,fanout]=$(json fan-out -p "$port" -n 16 -d "$DURATION" --inflight "$WINDOW")
    results[$b,qos1]=$(json fan-in -p "$port" -n 4 -q 1 --inflight 64 -d "$DURATION")
    if [ "$b" = mosquitto ]; then
        # The latency runs: mosquitto at its best there is without Nagle.
        stop_broker "$pid" "$b"
        port=$(free_port)
        start_broker "$b" "$port" latency; pid=$broker_pid
        echo "== $b with set_tcp_nodelay true (pid $pid, port $port)" >&2
    fi
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
    stop_broker "$pid" "$b"
    echo "== $b flat out" >&2
    flat_out "$b"
done
if command -v rumqttd >/dev/null 2>&1; then
    echo "== rumqttd with its shipped commit log, flat out" >&2
    flat_out rumqttd-1g
fi

export RESULTS_JSON
RESULTS_JSON=$(for k in "${!results[@]}"; do printf '%s\t%s\n' "$k" "${results[$k]}"; done)
python3 - "$DURATION" "$WINDOW" "$IDLE" "$QUEUE" "$INFLIGHT" "$SEGMENT" <<'PY'
import json, os, platform, re, subprocess, sys, datetime
duration, window, idle, queue, inflight, segment = sys.argv[1:7]
res = {}
for line in os.environ["RESULTS_JSON"].splitlines():
    key, _, value = line.partition("\t")
    broker, scenario = key.split(",")
    try:
        res[(broker, scenario)] = json.loads(value)
    except json.JSONDecodeError:
        res[(broker, scenario)] = {"text": value}
brokers = [b for b in ("midge", "mosquitto", "rumqttd") if (b, "pairs") in res]
flat = [("fan-in (4 → 1)", "flat_fanin"), ("pairs (4)", "flat_pairs"), ("fan-out (1 → 16)", "flat_fanout")]
rows = [
    ("QoS 0 pairs (4), window, delivered msg/s", "pairs", "received_per_sec", True),
    ("QoS 0 fan-in (4 → 1), window, delivered msg/s", "fanin", "received_per_sec", True),
    ("QoS 0 fan-out (1 → 16), window, delivered msg/s", "fanout", "received_per_sec", True),
]
for label, s in flat:
    rows.append((f"QoS 0 {label}, flat out, delivered msg/s", s, "delivered_per_sec", True))
    rows.append((f"QoS 0 {label}, flat out, lost %", s, "lost_percent", None))
rows += [
    ("QoS 1 fan-in, window 64, delivered msg/s", "qos1", "received_per_sec", True),
    ("QoS 1 fan-in, window 64, lost", "qos1", "lost", None),
    ("p99 latency at 20,000 msg/s (4 pairs), µs", "latency", ("latency_us", "p99"), False),
    (f"p99 latency at 20,000 msg/s with {idle} idle connections, µs", "latency_idle", ("latency_us", "p99"), False),
    ("memory per idle connection, bytes", "conn", "bytes_per_connection", False),
    (f"idle connections held (of {idle})", "idle", "open", True),
]
def get(b, s, f):
    d = res.get((b, s), {})
    if f == "open":  # the text line of `bench conn --hold`: "conn: N connections open, F failed, ..."
        m = re.search(r"(\d+) connections open", d.get("text", ""))
        return int(m.group(1)) if m else None
    if isinstance(f, tuple):
        d = d.get(f[0], {}); f = f[1]
    return d.get(f)
def fmt(v, f):
    if not isinstance(v, (int, float)):
        return "n/a"
    return "%.2f" % v if f == "lost_percent" else "%.0f" % v
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
head = ["measure"] + brokers + [f"midge / {b}" for b in brokers[1:]]
out = [f"# midge bench results\n",
       f"{datetime.date.today()}: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
       f"load generator on the same machine; {duration} s per run, 64-byte payloads. QoS 0 \"window\": flat out with an "
       f"end-to-end window of {window} messages per publisher; \"flat out\": no window (`midge bench --flat-out`): "
       "publishers write as fast as the broker takes it, then a drain until nothing arrives for 1 s; delivered msg/s is "
       "per second of load, or up to the last message received when deliveries went on after the publishers stopped.\n",
       f"Produced by `bench/compare.sh`; ratios are from the same run. The same limits for every broker: {queue} messages "
       f"queued per subscriber, {inflight} QoS 1 / 2 messages in flight per client (midge and mosquitto: "
       f"`max_queued_messages {queue}`, `max_inflight_messages {inflight}`; rumqttd: `max_inflight_count = {inflight}`). "
       "rumqttd has no queue per subscriber: what waits for subscribers is a commit log per topic filter; in the "
       f"flat-out runs it is sized like the queue (`max_segment_size = {segment}`, `max_segment_count = 1`: 1,190 to "
       "2,380 such messages), in the others it is the shipped 10 × 100 MiB, as the detail table also shows flat out. "
       "mosquitto 2.0.11 applies `max_queued_messages` to QoS 1 / 2 only: what waits for a connected QoS 0 subscriber "
       "is unbounded. mosquitto keeps Nagle on "
       "(`set_tcp_nodelay false`, its default, faster for throughput) except in the latency runs (`set_tcp_nodelay "
       "true`); midge sets TCP_NODELAY always, rumqttd never (it has no option). Each flat-out run starts a fresh broker. "
       "The idle connections come from 127.0.0.2 and 127.0.0.3.\n",
       "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for label, s, f, higher_better in rows:
    vals = [get(b, s, f) for b in brokers]
    cells = [label] + [fmt(v, f) for v in vals]
    for v in vals[1:]:
        m = vals[0]
        if higher_better is not None and isinstance(m, (int, float)) and isinstance(v, (int, float)) and m and v:
            cells.append("%.2fx" % (m / v if higher_better else v / m) + ("" if higher_better else " better" if v >= m else " worse"))
        else:
            cells.append("n/a")
    out.append("| " + " | ".join(cells) + " |")
out.append("\nLatency and memory ratios read as how many times lower midge's figure is.")
# The flat-out runs in detail, with what the load generator cost.
out += ["\n## Flat out in detail\n",
        "Published: PUBLISHes completely written by the publishers, per second of load. Lost: published (times the "
        "subscribers each reaches) and never received, counted by sequence number per publisher after the drain. "
        "Generator: `midge bench` on one thread, CPU seconds per million messages it wrote or read, and its share "
        "of one core over the run and drain.\n",
        "| broker | scenario | published msg/s | delivered msg/s | delivered while publishing, msg/s | lost % | drain s | generator CPU s per million msgs | generator % of a core | errors |",
        "|---|---|---|---|---|---|---|---|---|---|"]
names = {"rumqttd": "rumqttd, log of the queue's size", "rumqttd-1g": "rumqttd, shipped log (10 × 100 MiB)"}
for b in brokers + (["rumqttd-1g"] if ("rumqttd-1g", "flat_fanin") in res else []):
    for label, s in flat:
        d = res.get((b, s), {})
        g = d.get("generator", {})
        num = lambda v, p=0: ("%.*f" % (p, v)) if isinstance(v, (int, float)) else "n/a"
        out.append(f"| {names.get(b, b)} | {label} | {num(d.get('published_per_sec'))} | {num(d.get('delivered_per_sec'))} | "
                   f"{num(d.get('delivered_while_publishing_per_sec'))} | {num(d.get('lost_percent'), 2)} | "
                   f"{num(d.get('drain_seconds'), 2)} | {num(g.get('cpu_seconds_per_million'), 3)} | "
                   f"{num(100 * g['core_share'] if isinstance(g.get('core_share'), (int, float)) else None)} | "
                   f"{'; '.join(d.get('errors', [])) or ('none' if d else 'no result')} |")
text = "\n".join(out) + "\n"
print(text)
open("bench/RESULTS.md", "w").write(text)
PY
