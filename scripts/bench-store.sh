#!/usr/bin/env bash
# Persistent history (--data-dir) at each --fsync policy, side by side with
# no store, on one ringcast build (what docs/benchmarks.md reports under
# "Persistent history in the node"):
#
#   scripts/bench-store.sh [SUITE...]        (default: rate saturate restart)
#
#   rate      1,000 channels × 1 WebSocket subscriber, 20,000 publishes/s of
#             64 B for 8 s: publish answer latency (what durability adds),
#             delivery latency, loss, server CPU. Policies none, never,
#             interval:100 and always alternate, 3 rounds.
#   saturate  the same 1,000 channels; `ringcast-load throughput` raises
#             the publish rate ×1.5 per 4 s step from 5,000/s until p99
#             delivery latency passes 100 ms or a message is lost: the
#             highest sustained publishes/s per policy, 2 rounds.
#   broadcast 1 channel × 10,000 subscribers at 100 publishes/s (1,000,000
#             deliveries/s offered, 10 s), no store and always alternating,
#             3 rounds: deliveries/s and CPU per delivery with a store.
#   restart   writes ~1 GB of history (1,000 channels × 1,000 messages of
#             1,000 B, --fsync never), then restarts the node after SIGTERM
#             and after kill -9, timing each start until /readyz answers;
#             2 rounds.
#
# Each round first probes the disk: 2 s of 600-byte appends with
# fdatasync (p50/p99 µs in OUT/fsyncprobe.txt), since this host's fsync
# latency changes by 10× within minutes and `always` depends on it.
#
# Environment: BIN (the node, default target/release/ringcast), OUT (default
# bench-results/store-<date>), DATA (the data directories' parent, default
# OUT/data; they are removed after each run). Each run's JSON, perf
# task-clock and the exact command go to OUT. Every run is bounded by
# `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringcast -p ringcast-load
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BIN:-$TARGET/release/ringcast}
LOAD=$TARGET/release/ringcast-load
OUT=${OUT:-bench-results/store-$(date -u +%Y%m%d-%H%M%S)}
DATA=${DATA:-$OUT/data}
mkdir -p "$OUT" "$DATA"
PORT=19300
SERVER=
stop() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null
        wait "$SERVER" 2>/dev/null
    fi
    SERVER=
}
trap stop EXIT
# start POLICY [FLAGS...]: a fresh node; POLICY `none` runs without a store.
start() {
    stop
    local policy=$1
    shift
    PORT=$((PORT + 1))
    local store=()
    if [ "$policy" != none ]; then
        rm -rf "$DATA/run"
        store=(--data-dir "$DATA/run" --fsync "$policy")
    fi
    "$BIN" --listen 127.0.0.1:$PORT --shards 2 "${store[@]}" "$@" >"$OUT/server-$PORT.log" 2>&1 &
    SERVER=$!
    wait_ready || exit 1
}
wait_ready() {
    for _ in $(seq 1200); do
        curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.05
    done
    echo "the node did not start (see $OUT/server-$PORT.log)" >&2
    return 1
}
probe() {
    python3 - "$DATA" "$1" >>"$OUT/fsyncprobe.txt" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsyncprobe.dat")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
lat, end = [], time.monotonic() + 2
while time.monotonic() < end:
    t = time.monotonic()
    os.write(fd, b"x" * 600)
    os.fdatasync(fd)
    lat.append((time.monotonic() - t) * 1e6)
os.close(fd)
os.unlink(path)
lat.sort()
print(f"{sys.argv[2]}: {len(lat)} fdatasyncs in 2 s, p50 {lat[len(lat)//2]:.0f} us, p99 {lat[int(len(lat)*0.99)]:.0f} us")
EOF
    tail -1 "$OUT/fsyncprobe.txt"
}
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: ringcast-load $* --server-pid PID --json" | tee -a "$OUT/commands.txt"
    local perf=
    if command -v perf >/dev/null 2>&1; then
        perf stat -e task-clock -p "$SERVER" -x, -o "$OUT/$name.perf" &
        perf=$!
    fi
    timeout "$limit" "$LOAD" "$@" --server-pid "$SERVER" --json >"$OUT/$name.json" 2>"$OUT/$name.err" ||
        echo "   (exit $?; see $OUT/$name.err)"
    if [ -n "$perf" ]; then
        kill -INT "$perf" 2>/dev/null
        wait "$perf" 2>/dev/null
    fi
}
POLICIES=(none never interval:100 always)
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(rate saturate restart)
for suite in "${SUITES[@]}"; do
    case $suite in
    rate)
        for r in 1 2 3; do
            probe "rate-r$r"
            for p in "${POLICIES[@]}"; do
                start "$p"
                run "rate-${p%%:*}-r$r" 120 fanout --transport ws --sub-url "ws://127.0.0.1:$PORT/ws/{ch}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 1000 --channels 1000 --msgs 160000 --rate 20000
            done
        done
        ;;
    saturate)
        for r in 1 2; do
            probe "saturate-r$r"
            for p in "${POLICIES[@]}"; do
                start "$p"
                run "saturate-${p%%:*}-r$r" 300 throughput --transport ws --sub-url "ws://127.0.0.1:$PORT/ws/{ch}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 1000 --channels 1000 --start-rate 5000 --step 1.5 --max-rate 400000 --step-time 4s --max-p99 100ms
            done
        done
        ;;
    broadcast)
        for r in 1 2 3; do
            probe "broadcast-r$r"
            for p in none always; do
                start "$p"
                run "broadcast-$p-r$r" 120 fanout --transport ws --sub-url "ws://127.0.0.1:$PORT/ws/{ch}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 10000 --channels 1 --msgs 1000 --rate 100
            done
        done
        ;;
    restart)
        for r in 1 2; do
            probe "restart-r$r"
            hist=(--history-size 1000 --history-ttl 1h)
            start never "${hist[@]}"
            run "restart-fill-r$r" 300 fanout --transport ws --sub-url "ws://127.0.0.1:$PORT/ws/{ch}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 1000 --channels 1000 --msgs 1000000 --rate 40000 --size 1000
            for how in TERM KILL; do
                kill -"$how" "$SERVER"
                wait "$SERVER" 2>/dev/null
                SERVER=
                du=$(du -sb "$DATA/run" | cut -f1)
                PORT=$((PORT + 1))
                t0=$(date +%s.%N)
                "$BIN" --listen 127.0.0.1:$PORT --shards 2 --data-dir "$DATA/run" --fsync never "${hist[@]}" >"$OUT/server-$PORT.log" 2>&1 &
                SERVER=$!
                wait_ready || exit 1
                t1=$(date +%s.%N)
                rss=$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)
                opened=$(grep -o 'opened at .*' "$OUT/server-$PORT.log" | head -1)
                printf 'restart-r%s after SIG%s: %s bytes on disk; ready in %.2f s; RSS %s kB; %s\n' \
                    "$r" "$how" "$du" "$(echo "$t1 - $t0" | bc)" "$rss" "$opened" | tee -a "$OUT/restart.txt"
            done
            stop
        done
        ;;
    *)
        echo "unknown suite $suite" >&2
        exit 2
        ;;
    esac
done
rm -rf "$DATA/run"
echo "results in $OUT"
