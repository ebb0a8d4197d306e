#!/usr/bin/env bash
# Publishes through Redis: two nodes, one Redis, at each --fsync policy,
# side by side with a build from before (what docs/benchmarks.md reports
# under "Durability in a cluster"):
#
#   BEFORE=path/to/old/ringcast scripts/bench-cluster.sh [ROUNDS]   (default 3)
#
# Each round runs, in turn (so that the host's drift falls on all alike):
#
#   before     BEFORE's node, Redis without persistence, no --fsync
#   none       this build, the same
#   interval   this build, --fsync interval, Redis appendonly yes,
#              appendfsync everysec
#   always     this build, --fsync always, Redis appendonly yes,
#              appendfsync always (Redis 7.0 has no WAITAOF: the node
#              refuses anything less)
#
# Every run: a fresh Redis and two fresh nodes (A and B, `--shards 2`
# each); 1,000 channels with one WebSocket subscriber each, spread over
# both nodes; 20,000 publishes/s of 64 B for 8 s, all made on A, so half
# the messages cross to B through Pub/Sub and every one goes through the
# publish script. ringcast-load measures answers, deliveries and the
# nodes' CPU; Redis's CPU comes from /proc.
#
# Environment: BIN (this build's node, default target/release/ringcast),
# BEFORE (required), OUT (default bench-results/cluster-<date>). Each run's
# JSON and the exact command go to OUT. Every run is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringcast -p ringcast-load
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BIN:-$TARGET/release/ringcast}
LOAD=$TARGET/release/ringcast-load
BEFORE=${BEFORE:?set BEFORE to the node binary to compare with}
ROUNDS=${1:-3}
OUT=${OUT:-bench-results/cluster-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REDIS_PORT=19600
NODE_PORT=19610
PIDS=()
stop() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    PIDS=()
}
trap stop EXIT
wait_url() {
    for _ in $(seq 400); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not answer (logs in $OUT)" >&2
    return 1
}
# start NAME: a fresh Redis and nodes A and B for configuration NAME.
start() {
    stop
    local name=$1 bin=$BIN fsync=() persistence=(--save '' --appendonly no)
    case $name in
    before) bin=$BEFORE ;;
    none) ;;
    interval)
        fsync=(--fsync interval)
        persistence=(--save '' --appendonly yes --appendfsync everysec)
        ;;
    always)
        fsync=(--fsync always)
        persistence=(--save '' --appendonly yes --appendfsync always)
        ;;
    esac
    REDIS_PORT=$((REDIS_PORT + 1))
    rm -rf "$OUT/redis"
    mkdir -p "$OUT/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT/redis" "${persistence[@]}" \
        >"$OUT/redis-$REDIS_PORT.log" 2>&1 &
    REDIS=$!
    PIDS+=("$REDIS")
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    A=$((NODE_PORT += 1))
    B=$((NODE_PORT += 1))
    for port in $A $B; do
        "$bin" --listen 127.0.0.1:$port --shards 2 --redis "redis://127.0.0.1:$REDIS_PORT/" \
            "${fsync[@]}" >"$OUT/node-$port.log" 2>&1 &
        PIDS+=($!)
    done
    NODE_A=${PIDS[1]}
    NODE_B=${PIDS[2]}
    wait_url "http://127.0.0.1:$A/readyz" && wait_url "http://127.0.0.1:$B/readyz"
}
redis_cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$REDIS/stat"
}
for r in $(seq "$ROUNDS"); do
    for name in before none interval always; do
        start "$name" || exit 1
        args=(fanout --transport ws --sub-url "ws://127.0.0.1:$A/ws/{ch}" --pub-url "http://127.0.0.1:$A/pub/{ch}"
            --subs 1000 --channels 1000 --msgs 160000 --rate 20000 --nodes "127.0.0.1:$A,127.0.0.1:$B")
        echo "== $name-r$r: ringcast-load ${args[*]} --server-pid A --server-pid B --json" | tee -a "$OUT/commands.txt"
        t0=$(redis_cpu_ticks)
        timeout 120 "$LOAD" "${args[@]}" --server-pid "$NODE_A" --server-pid "$NODE_B" --json \
            >"$OUT/$name-r$r.json" 2>"$OUT/$name-r$r.err" || echo "   (exit $?; see $OUT/$name-r$r.err)"
        t1=$(redis_cpu_ticks)
        echo "$name-r$r redis_cpu_ms $(((t1 - t0) * 1000 / $(getconf CLK_TCK)))" | tee -a "$OUT/redis-cpu.txt"
    done
done
stop
rm -rf "$OUT/redis"
echo "results in $OUT"
