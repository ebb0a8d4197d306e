#!/usr/bin/env bash
# TLS against plaintext on one ringcast build, side by side (what
# docs/benchmarks.md reports under "TLS on the node"):
#
#   scripts/bench-tls.sh [SUITE...]        (default: broadcast idle churn)
#
#   broadcast  1 channel × 10,000 WebSocket subscribers, 50 publishes/s of
#              64 B (500,000 deliveries/s), ws:// and wss:// alternating, 3 rounds
#   idle       100,000 idle WebSockets, 2 rounds of: ws://; wss:// with every
#              session's keys expanded (--tls-rest-after 1h, held 15 s); wss://
#              rested (the default --tls-rest-after 2s, held 30 s: the
#              node's pings every 30 s wake each connection briefly)
#   idle-rested  only the rested wss:// runs of `idle`
#   churn      5,000 subscribers reconnecting at up to 3,000/s for 15 s:
#              wss:// with session resumption on, off, and ws://, 2 rounds
#
# Environment: BIN (the node, default target/release/ringcast), OUT (default
# bench-results/tls-<date>). A test CA and an ECDSA P-256 certificate for
# localhost are made with openssl in OUT/pki. Each run starts a fresh node
# with both listeners; each run's JSON, perf task-clock and the exact
# command go to OUT. Every run is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringcast -p ringcast-load
BIN=${BIN:-$PWD/target/release/ringcast}
LOAD=$PWD/target/release/ringcast-load
OUT=${OUT:-bench-results/tls-$(date -u +%Y%m%d-%H%M%S)}
PKI=$OUT/pki
mkdir -p "$PKI"
if [ ! -f "$PKI/chain.pem" ]; then
    (
        cd "$PKI"
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 -subj "/CN=bench CA" 2>/dev/null
        openssl req "${ec[@]}" -keyout key.pem -out leaf.csr -subj /CN=localhost 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 30 -extfile san.ext 2>/dev/null
        cat leaf.pem ca.pem >chain.pem
    )
fi
PORT=19100
SERVER=
stop() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null
        wait "$SERVER" 2>/dev/null
    fi
    SERVER=
}
trap stop EXIT
start() {
    stop
    PORT=$((PORT + 2))
    TPORT=$((PORT + 1))
    "$BIN" --listen 127.0.0.1:$PORT --listen-tls 127.0.0.1:$TPORT --tls-cert "$PKI/chain.pem" \
        --tls-key "$PKI/key.pem" --shards 2 "$@" >"$OUT/server-$PORT.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return
        sleep 0.1
    done
    echo "the node did not start (see $OUT/server-$PORT.log)" >&2
    exit 1
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
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(broadcast idle churn)
CA=(--ca "$PKI/ca.pem")
for suite in "${SUITES[@]}"; do
    case $suite in
    broadcast)
        for r in 1 2 3; do
            start
            run bcast-plain-r$r 180 fanout --transport ws --sub-url "ws://127.0.0.1:$PORT/ws/{ch}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 10000 --channels 1 --msgs 1000 --rate 50
            start
            run bcast-tls-r$r 180 fanout --transport ws --sub-url "wss://localhost:$TPORT/ws/{ch}" "${CA[@]}" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --subs 10000 --channels 1 --msgs 1000 --rate 50
        done
        ;;
    idle)
        for r in 1 2; do
            start
            run idle-plain-r$r 300 idle --transport ws --url "ws://127.0.0.1:$PORT/ws/{ch}" --conns 100000 --hold 15 --channels 1000 --metrics-url "http://127.0.0.1:$PORT/metrics"
            start --tls-rest-after 1h
            run idle-tls-awake-r$r 400 idle --transport ws --url "wss://localhost:$TPORT/ws/{ch}" "${CA[@]}" --conns 100000 --hold 15 --channels 1000 --metrics-url "http://127.0.0.1:$PORT/metrics"
            start
            run idle-tls-rested-r$r 400 idle --transport ws --url "wss://localhost:$TPORT/ws/{ch}" "${CA[@]}" --conns 100000 --hold 30 --channels 1000 --metrics-url "http://127.0.0.1:$PORT/metrics"
        done
        ;;
    idle-rested)
        for r in 1 2; do
            start
            run idle-tls-rested-r$r 400 idle --transport ws --url "wss://localhost:$TPORT/ws/{ch}" "${CA[@]}" --conns 100000 --hold 30 --channels 1000 --metrics-url "http://127.0.0.1:$PORT/metrics"
        done
        ;;
    churn)
        for r in 1 2; do
            for resume in on off; do
                start
                run churn-$resume-r$r 120 churn --transport ws --subs 5000 --sub-url "wss://localhost:$TPORT/ws/{ch}?format=json" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" "${CA[@]}" --rate 1 --churn-rate 3000 --duration 15s --tls-resume $resume
            done
            start
            run churn-plain-r$r 120 churn --transport ws --subs 5000 --sub-url "ws://127.0.0.1:$PORT/ws/{ch}?format=json" --pub-url "http://127.0.0.1:$PORT/pub/{ch}" --rate 1 --churn-rate 3000 --duration 15s
        done
        ;;
    *)
        echo "unknown suite $suite" >&2
        exit 2
        ;;
    esac
done
echo "results in $OUT"
