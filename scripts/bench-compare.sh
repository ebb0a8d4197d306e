#!/usr/bin/env bash
# Two ringcast builds side by side: the same ringcast-load runs against each,
# in alternating rounds, so that both see the same (noisy) machine.
#
#   scripts/bench-compare.sh OLD_BIN NEW_BIN [OUT_DIR] [SUITE...]
#
# OLD_BIN and NEW_BIN are ringcast server binaries (e.g. a release build of
# an earlier commit copied aside, and target/release/ringcast). The harness
# is this tree's release ringcast-load. SUITE selects some of:
#   ack        publish answer latency with 10,000 subscribers on one channel
#              (100 publishes at 10/s), 3 rounds
#   broadcast  1 channel × 10,000 subscribers at 100 publishes/s (1,000,000
#              deliveries/s offered, 20 s), 3 rounds
#   channels   100 channels × 100 subscribers at 100 publishes/s, 3 rounds
#   idle1m     1,000,000 idle WebSockets, server RSS per connection, 1 round
#   small100   delivery latency of 64-byte messages, 100 subscribers of one
#              channel at 100 messages/s each (10 s), 3 rounds
#   small500   the same at 500 messages/s each
#   idle200k   200,000 idle WebSockets (hold 5 s), connect rate and
#              handshake latency, 3 rounds
#   chat       1 channel × 10,000 subscribers, JSON chat messages of
#              200–2,000 bytes (--payload chat) at 20 publishes/s (200,000
#              deliveries/s, 10 s): CPU and bytes on the wire per delivery,
#              3 rounds
# (default: ack broadcast channels idle1m). NEW_HEADER (an environment
# variable, e.g. "Authorization: Bearer <jwt>") is sent by every
# subscriber of the new build's runs (ringcast-load --header): with a
# wrapper that starts the new build with --jwt-secret, this measures what
# token checks cost. NEW_LOAD_ARGS (e.g. "--deflate") is added to every
# new-build run's ringcast-load arguments: with the same binary (or
# wrapper) twice, this compares clients with and without an option.
# To compare one build with
# itself under other flags, pass a wrapper script as OLD_BIN or NEW_BIN
# (`exec /path/ringcast "$@" --no-tcp-nodelay`: `exec` keeps the PID). Every run is bounded by `timeout`. Each run's JSON goes to
# OUT_DIR (default bench-results/compare-<date>) with its exact command in
# commands.txt; a table of medians is printed at the end.
#
# Server CPU is reported two ways. ringcast-load's figure comes from
# /proc/PID/stat, which leaves out softirq time: on loopback the receiving
# socket's processing often runs as a softirq in the sender's context, so
# that figure moves when the timing of sends changes, without the server's
# threads running any longer. With `perf` on the PATH, each run also records
# `perf stat -e task-clock` over the server's threads for the whole run
# (`perf µs/delivery` in the table).
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=$(realpath "$1")
NEW=$(realpath "$2")
shift 2
OUT=${1:-bench-results/compare-$(date -u +%Y%m%d-%H%M%S)}
shift || true
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(ack broadcast channels idle1m)
mkdir -p "$OUT"

cargo build --release -q -p ringcast-load
LOAD=target/release/ringcast-load
PORT=18300
SERVER=

stop_server() {
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill "$SERVER"
        wait "$SERVER" 2>/dev/null || true
    fi
    SERVER=
}
trap stop_server EXIT

# start_server BIN ARGS...: a fresh server on a new port; sets SERVER and BASE.
start_server() {
    stop_server
    PORT=$((PORT + 1))
    local bin=$1
    shift
    "$bin" --listen 127.0.0.1:$PORT "$@" >"$OUT/server-$PORT.log" 2>&1 &
    SERVER=$!
    BASE=127.0.0.1:$PORT
    for _ in $(seq 1 100); do
        if curl -sf "http://$BASE/healthz" >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "server $bin did not start" >&2
    exit 1
}

# run NAME TIMEOUT ringcast-load-args...
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: ringcast-load $* --server-pid PID --json" | tee -a "$OUT/commands.txt"
    local perf=
    if command -v perf >/dev/null 2>&1; then
        perf stat -e task-clock -p "$SERVER" -x, -o "$OUT/$name.perf" &
        perf=$!
    fi
    timeout "$limit" $LOAD "$@" --server-pid "$SERVER" --json >"$OUT/$name.json" 2>"$OUT/$name.err" || {
        echo "   (exit $?; see $OUT/$name.err)"
    }
    if [ -n "$perf" ]; then
        kill -INT $perf 2>/dev/null || true
        wait $perf 2>/dev/null || true
    fi
}

# both NAME TIMEOUT SERVER-ARGS -- LOAD-ARGS: one round on each build, old first.
both() {
    local name=$1 limit=$2
    shift 2
    local sargs=()
    while [ "$1" != "--" ]; do
        sargs+=("$1")
        shift
    done
    shift
    for which in old new; do
        local bin=$OLD
        [ $which = new ] && bin=$NEW
        start_server "$bin" "${sargs[@]}"
        local extra=()
        if [ $which = new ] && [ -n "${NEW_HEADER:-}" ]; then
            extra=(--header "$NEW_HEADER")
        fi
        if [ $which = new ] && [ -n "${NEW_LOAD_ARGS:-}" ]; then
            read -r -a more <<<"$NEW_LOAD_ARGS"
            extra+=("${more[@]}")
        fi
        run "$name-$which" "$limit" "${@//BASE/$BASE}" "${extra[@]}"
        stop_server
        sleep 2
    done
}

for suite in "${SUITES[@]}"; do
    case $suite in
    ack)
        for r in 1 2 3; do
            both ack-r$r 120 --shards 2 -- fanout --transport ws --sub-url "ws://BASE/ws/{ch}" --pub-url "http://BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 100 --rate 10
        done
        ;;
    broadcast)
        for r in 1 2 3; do
            both broadcast-r$r 180 --shards 2 -- fanout --transport ws --sub-url "ws://BASE/ws/{ch}" --pub-url "http://BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 2000 --rate 100
        done
        ;;
    channels)
        for r in 1 2 3; do
            both channels-r$r 180 --shards 2 -- fanout --transport ws --sub-url "ws://BASE/ws/{ch}" --pub-url "http://BASE/pub/{ch}" --subs 10000 --channels 100 --msgs 2000 --rate 100
        done
        ;;
    small100 | small500)
        rate=${suite#small}
        for r in 1 2 3; do
            both $suite-r$r 120 --shards 2 -- fanout --transport ws --sub-url "ws://BASE/ws/{ch}" --pub-url "http://BASE/pub/{ch}" --subs 100 --channels 1 --msgs $((rate * 10)) --rate "$rate" --size 64
        done
        ;;
    chat)
        for r in 1 2 3; do
            both chat-r$r 120 --shards 2 -- fanout --transport ws --sub-url "ws://BASE/ws/{ch}" --pub-url "http://BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 200 --rate 20 --payload chat
        done
        ;;
    idle200k)
        for r in 1 2 3; do
            both idle200k-r$r 120 --shards 2 -- idle --transport ws --url "ws://BASE/ws/{ch}" --conns 200000 --hold 5 --channels 1000 --metrics-url "http://BASE/metrics"
        done
        ;;
    idle1m)
        both idle1m 400 --shards 2 -- idle --transport ws --url "ws://BASE/ws/{ch}" --conns 1000000 --hold 20 --channels 1000 --metrics-url "http://BASE/metrics"
        ;;
    *)
        echo "unknown suite $suite" >&2
        exit 2
        ;;
    esac
done

python3 - "$OUT" <<'EOF'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(f)[:-5]
    try:
        d = json.load(open(f))
    except Exception:
        continue
    base, which = name.rsplit("-", 1)
    suite = base.split("-r")[0]
    d["perf_task_clock_ms"] = None
    try:
        for line in open(os.path.join(out, name + ".perf")):
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2] == "task-clock":
                d["perf_task_clock_ms"] = float(parts[0])
    except (OSError, ValueError):
        pass
    rows.setdefault((suite, which), []).append(d)

def med(ds, get):
    vals = [v for v in (get(d) for d in ds) if v is not None]
    return statistics.median(vals) if vals else None

def g(*path):
    def f(d):
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d
    return f

cpu_per_delivery_us = lambda d: (g("cpu", "server_cpu_s_per_1000_deliveries")(d) or 0) * 1e3 or None
fields = [
    ("runs", lambda d: 1),
    ("deliveries/s", g("deliveries_per_s")),
    ("lost", g("lost")),
    ("p50 ms", g("latency", "p50_ms")),
    ("p99 ms", g("latency", "p99_ms")),
    ("answer p50 ms", g("publish", "ack", "p50_ms")),
    ("answer p99 ms", g("publish", "ack", "p99_ms")),
    ("server µs/delivery", cpu_per_delivery_us),
    ("perf µs/delivery", lambda d: d["perf_task_clock_ms"] * 1e3 / d["received"] if d.get("perf_task_clock_ms") and d.get("received") else None),
    ("wire B/delivery", g("bytes_in_per_delivery")),
    ("message B/delivery", g("message_bytes_per_delivery")),
    ("compressed", g("compressed_deliveries")),
    ("connected", g("connected")),
    ("connects/s", g("connect_rate_per_s")),
    ("connect p50 ms", g("connect_time", "p50_ms")),
    ("connect p99 ms", g("connect_time", "p99_ms")),
    ("RSS B/conn", g("memory", "server_rss_per_conn_bytes")),
]
print("\nmedians over rounds (old = first binary, new = second)")
for (suite, which), ds in sorted(rows.items()):
    parts = []
    for label, get in fields:
        v = len(ds) if label == "runs" else med(ds, get)
        if v is None:
            continue
        parts.append(f"{label} {v:,.3f}" if isinstance(v, float) else f"{label} {v:,}")
    print(f"{suite:10} {which:4} " + " | ".join(parts))
EOF
echo "results in $OUT"
