#!/usr/bin/env bash
# What counting costs: QoS 0 `midge bench pairs -n 4` (windowed, and --flat-out), against one
# midge binary with `$SYS` (every second) and the metrics endpoint (scraped every second) on,
# and with both off (`sys_interval 0`, no http listener); and, when given, against a BASE binary
# built without the counters. Runs alternate (on, off, base, on, off, base, ...), each with a
# fresh broker, so that the machine's drift falls on every variant alike. Prints one line per
# run and a Markdown table of the medians.
#
#   bench/metrics.sh target/release/midge [BASE_MIDGE] [ROUNDS] [SECONDS]
set -euo pipefail
new=$(realpath "$1")
base=${2:+$(realpath "$2")}
rounds=${3:-3}
seconds=${4:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run VARIANT MODE: one run; prints the delivered messages per second.
run() {
    local variant=$1 mode=$2 port http binary=$new scraper=""
    port=$(free_port)
    http=$(free_port)
    case $variant in
        on) printf 'listener %s 127.0.0.1\nallow_anonymous true\nlistener %s 127.0.0.1\nprotocol http\nsys_interval 1\n' \
                "$port" "$http" >"$work/broker.conf" ;;
        off) printf 'listener %s 127.0.0.1\nallow_anonymous true\nsys_interval 0\n' "$port" >"$work/broker.conf" ;;
        base) binary=$base
              printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$work/broker.conf" ;;
    esac
    [ "$(id -u)" -eq 0 ] && echo "user root" >>"$work/broker.conf"
    "$binary" broker -c "$work/broker.conf" 2>"$work/broker.log" &
    local broker=$!
    for _ in $(seq 100); do
        grep -q "listen socket on port $port" "$work/broker.log" && break
        sleep 0.05 # waiting for the broker to open its port
    done
    # A subscriber to the whole $SYS tree, and a scrape a second, as in production. They run
    # against every variant (where nothing answers, the scrape is refused at once), so that
    # their own processes' share of the 2 cores falls on every variant alike and the table
    # shows what the broker's counting costs.
    "$new" sub -p "$port" -t '$SYS/#' >/dev/null &
    scraper=$!
    (while sleep 1; do curl -s "http://127.0.0.1:$http/metrics" >/dev/null || true; done) &
    scraper="$scraper $!"
    local flags=(pairs -p "$port" -n 4 -d "$seconds" --json --quiet)
    local field=received_per_sec
    if [ "$mode" = flat-out ]; then
        flags+=(--flat-out)
        field=delivered_per_sec
    fi
    "$new" bench "${flags[@]}" >"$work/out.json"
    # shellcheck disable=SC2086
    [ -n "$scraper" ] && kill $scraper 2>/dev/null
    kill "$broker"
    wait "$broker" 2>/dev/null || true
    python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]]))" "$work/out.json" "$field"
}

variants=(on off)
[ -n "$base" ] && variants+=(base)
declare -A results
for mode in window flat-out; do
    for round in $(seq "$rounds"); do
        for v in "${variants[@]}"; do
            r=$(run "$v" "$mode")
            echo "$mode round $round $v: $r msg/s" >&2
            results[$mode,$v]+="$r "
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| QoS 0 pairs (4), delivered msg/s | runs: \$SYS + metrics on | runs: off | median on | median off | on / off |${base:+ runs: base | median base | on / base |}"
echo "|---|---|---|---|---|---|${base:+---|---|---|}"
for mode in window flat-out; do
    on=$(echo "${results[$mode,on]}" | median)
    off=$(echo "${results[$mode,off]}" | median)
    line="| $mode | ${results[$mode,on]% } | ${results[$mode,off]% } | $on | $off | $(python3 -c "print(f'{$on/$off:.3f}')") |"
    if [ -n "$base" ]; then
        b=$(echo "${results[$mode,base]}" | median)
        line+=" ${results[$mode,base]% } | $b | $(python3 -c "print(f'{$on/$b:.3f}')") |"
    fi
    echo "$line"
done
