#!/usr/bin/env bash
# The server benchmark suite behind docs/benchmarks.md (issues 3 and 5).
#
#   scripts/bench-server.sh [OUT_DIR] [SUITE...]
#
# Runs each benchmark against a freshly started release build of ringcast
# (and, where a comparison is part of the benchmark, the tokio baseline in
# the same run), with client and server on this host over loopback, and
# writes one JSON file per benchmark (ringcast-load --json) to OUT_DIR
# (default bench-results/<date>). SUITE selects some of: idle transports
# broadcast throughput compare shards (default: all). Every run is bounded
# by `timeout`; the whole suite takes about 20 minutes on 2 vCPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench-results/$(date -u +%Y%m%d-%H%M%S)}
shift || true
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(idle transports broadcast throughput compare shards)
mkdir -p "$OUT"

cargo build --release -q -p ringcast -p ringcast-load
BIN=target/release
LOAD=$BIN/ringcast-load
PORT=18200
SERVER=

stop_server() {
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill "$SERVER"
        wait "$SERVER" 2>/dev/null || true
    fi
    SERVER=
}
trap stop_server EXIT

# start_server NAME ARGS...: a fresh server on a new port; sets SERVER and BASE.
start_server() {
    stop_server
    PORT=$((PORT + 1))
    local name=$1
    shift
    case $name in
        ringcast) $BIN/ringcast --listen 127.0.0.1:$PORT "$@" >"$OUT/server-$PORT.log" 2>&1 & ;;
        baseline) $BIN/ringcast-baseline --listen 127.0.0.1:$PORT "$@" >"$OUT/server-$PORT.log" 2>&1 & ;;
    esac
    SERVER=$!
    BASE=127.0.0.1:$PORT
    for _ in $(seq 1 100); do
        if curl -sf "http://$BASE/healthz" >/dev/null 2>&1 || (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "server did not start" >&2
    exit 1
}

# run NAME TIMEOUT ringcast-load-args...
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: ringcast-load $*" | tee -a "$OUT/commands.txt"
    timeout "$limit" $LOAD "$@" --server-pid "$SERVER" --json >"$OUT/$name.json" 2>"$OUT/$name.err" || {
        echo "   (exit $?; see $OUT/$name.err)"
    }
    python3 - "$OUT/$name.json" <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
keep = ("connected", "failed", "ramp_s", "deliveries_per_s", "lost", "duplicates", "out_of_order", "p50_ms", "p99_ms", "max_ms")
print("   ", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items() if k in keep})
m = d.get("memory") or {}
if m:
    print("    server RSS/conn:", round(m.get("server_rss_per_conn_bytes") or 0), "B; kernel slab/conn (both ends):", round(m.get("kernel_slab_per_conn_bytes") or 0), "B")
c = d.get("cpu") or {}
if c:
    print("    server CPU-s per 1k deliveries:", c.get("server_cpu_s_per_1000_deliveries"), "host busy:", round(c.get("host_busy_ratio") or 0, 2))
EOF
}

for suite in "${SUITES[@]}"; do
    case $suite in
    idle)
        # Issue 3: 200,000 idle WebSockets; RSS and kernel memory per connection.
        start_server ringcast --shards 2
        run idle-ws-200k 300 idle --transport ws --url "ws://$BASE/ws/{ch}" --conns 200000 --hold 40 --channels 100 --metrics-url "http://$BASE/metrics"
        # The same 15,000 idle connections on ringcast and on the tokio baseline
        # (which cannot go past the 20,000-descriptor limit).
        start_server ringcast --shards 2
        run idle-ws-15k-ringcast 120 idle --transport ws --url "ws://$BASE/ws/{ch}" --conns 15000 --hold 20 --channels 100
        start_server baseline
        run idle-ws-15k-baseline 120 idle --transport ws --url "ws://$BASE/ws/{ch}" --conns 15000 --hold 20 --channels 100
        ;;
    transports)
        # Issue 5: idle cost per transport (100,000 each, fresh server each).
        for t in ws sse longpoll; do
            case $t in ws) url="ws://BASE/ws/{ch}" ;; sse) url="http://BASE/sse/{ch}" ;; longpoll) url="http://BASE/poll/{ch}" ;; esac
            start_server ringcast --shards 2 --poll-timeout 120s
            run idle-$t-100k 300 idle --transport $t --url "${url/BASE/$BASE}" --conns 100000 --hold 40 --channels 100 --poll-timeout 100s
        done
        ;;
    broadcast)
        # Issue 3: one publish to 10,000 and to 100,000 subscribers of one channel;
        # the 10,000 case side by side with the tokio baseline.
        start_server ringcast --shards 2
        run broadcast-10k-ringcast 180 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 100 --rate 10
        start_server baseline
        run broadcast-10k-baseline 180 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 100 --rate 10
        start_server ringcast --shards 2
        run broadcast-100k-ringcast 300 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 100000 --channels 1 --msgs 20 --rate 1
        ;;
    throughput)
        # Issue 3: deliveries per second to one channel (1M/s offered).
        start_server ringcast --shards 2
        run throughput-1m 180 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 2000 --rate 100
        start_server baseline
        run throughput-1m-baseline 180 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 10000 --channels 1 --msgs 2000 --rate 100
        ;;
    compare)
        # Issue 5: "which transport for an IM system": 10,000 clients, one
        # message per second each for 60 s (100 channels × 100 clients, one
        # message per channel per second).
        start_server ringcast --shards 2
        run compare-im-10k 900 compare --base-url "http://$BASE" --subs 10000 --channels 100 --msgs 6000 --rate 100 --shortpoll-intervals 1s,5s --drain 12s
        ;;
    shards)
        # Issue 3: several rings per core thread (2 shards) against one ring
        # per thread (14 shards on 2 cores) for the same 200,000 connections
        # and a broadcast to 100,000 of them.
        for s in 2 14; do
            start_server ringcast --shards $s
            run shards-$s-idle-200k 300 idle --transport ws --url "ws://$BASE/ws/{ch}" --conns 200000 --hold 20 --channels 100
            start_server ringcast --shards $s
            run shards-$s-broadcast-100k 300 fanout --transport ws --sub-url "ws://$BASE/ws/{ch}" --pub-url "http://$BASE/pub/{ch}" --subs 100000 --channels 1 --msgs 20 --rate 1
        done
        ;;
    *)
        echo "unknown suite $suite" >&2
        exit 2
        ;;
    esac
done
echo "results in $OUT"
