#!/bin/bash
# Interleaved A/B: the shared disk's fsync latency drifts by 10x within minutes
# (other work on the host), so each batch size runs fjall and redb alternately,
# REPS times, 5 s each, with a plain-file fdatasync probe before each pair.
# One process at a time, niced (run.sh). Results: results.log.
cd "$(dirname "$0")"
D=${STOREBENCH_DATA:-$PWD/data}
REPS=${REPS:-3}
SYNC=${SYNC:-always}
echo "=== ab start $(date -u +%FT%TZ) sync=$SYNC reps=$REPS" >> results.log
for b in ${BATCHES:-1 16 128 1024}; do
  for r in $(seq $REPS); do
    ./run.sh fsyncprobe --dir $D/probe --secs 2
    for e in fjall redb; do
      ./run.sh commit --engine $e --dir $D/$e --fresh --batch $b --sync $SYNC --secs 5
    done
  done
done
echo "=== ab done $(date -u +%FT%TZ)" >> results.log
