#!/usr/bin/env bash
# The cluster's publish script (server/src/cluster/publish.lua) at REV
# against this tree's, side by side on one Redis (what docs/benchmarks.md
# reports under "The publish script before and after inboxes"):
#
#   scripts/bench-publish-script.sh REV [ROUNDS]      (default 3 rounds)
#
# Each round runs REV's script and this tree's (which goes first
# alternates), then this tree's
# inbox publish (inbox.lua + publish.lua, no cursor: it keeps up to its
# bound of 1,000). Each is `redis-benchmark` EVALSHA, 8 clients × 16
# pipelined, 200,000 publishes of 64 B to one channel keeping 100; the
# rate and Redis's CPU (from /proc) are printed. A fresh Redis on port
# 19700 without persistence; stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: $0 REV [ROUNDS]}
ROUNDS=${2:-3}
WORK=$(mktemp -d)
git show "$REV:server/src/cluster/publish.lua" >"$WORK/before.lua"
cp server/src/cluster/publish.lua "$WORK/after.lua"
cat server/src/cluster/inbox.lua server/src/cluster/publish.lua >"$WORK/inbox.lua"
PORT=19700
redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
REDIS=$!
trap 'kill $REDIS; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
    redis-cli -p $PORT ping >/dev/null 2>&1 && break
    sleep 0.05
done
load() { redis-cli -p $PORT SCRIPT LOAD "$(cat "$1")"; }
BEFORE=$(load "$WORK/before.lua")
AFTER=$(load "$WORK/after.lua")
INBOX=$(load "$WORK/inbox.lua")
PAYLOAD=$(head -c 64 /dev/zero | tr '\0' x)
ticks() { awk '{print $14 + $15}' "/proc/$REDIS/stat"; }
run() {
    local name=$1 t0 t1 rate
    shift
    t0=$(ticks)
    rate=$(timeout 120 redis-benchmark -p $PORT -c 8 -P 16 -n 200000 -q "$@" |
        grep -o '[0-9.]* requests per second' | cut -d' ' -f1 | tail -1)
    t1=$(ticks)
    echo "$name: $rate publishes/s, Redis CPU $(((t1 - t0) * 1000 / $(getconf CLK_TCK))) ms"
}
# payload kind history-size ttl-ms now-ms epoch topic spublish meta-ttl-ms node
ARGS=(t 100 60000 1764547200000 0000000000aa topic 0 2592000000 0000000000bb)
before() { run "round $r, $REV" EVALSHA "$BEFORE" 2 'rc:{b}:meta' 'rc:{b}:log' "$PAYLOAD" "${ARGS[@]}"; }
after() { run "round $r, this tree" EVALSHA "$AFTER" 2 'rc:{a}:meta' 'rc:{a}:log' "$PAYLOAD" "${ARGS[@]}"; }
for r in $(seq "$ROUNDS"); do
    # Which goes first alternates, so that order does not favour either.
    if [ $((r % 2)) -eq 1 ]; then
        before
        after
    else
        after
        before
    fi
    run "round $r, this tree, an inbox" EVALSHA "$INBOX" 3 'rc:{i}:meta' 'rc:{i}:log' 'rc:{i}:cur' \
        "$PAYLOAD" "${ARGS[@]}" 1000 2592000000
done
