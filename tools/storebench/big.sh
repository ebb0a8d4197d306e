#!/bin/bash
# ~1 GB of history per engine: fill (then abort, like kill -9), reopen after the crash
# (warm and with this dir's pages dropped), last-100 reads, a clean reopen, trim to the
# newest 100 per channel + compaction. Then a bounded steady-state run with trims.
# One process at a time, each ≤ 60 s, niced (run.sh). Results: results.log.
cd "$(dirname "$0")"
D=${STOREBENCH_DATA:-$PWD/data}
echo "=== big start $(date -u +%FT%TZ)" >> results.log
for e in ${ENGINES:-fjall redb}; do
  ./run.sh fill --engine $e --dir $D/big-$e --fresh --bytes 1073741824 --secs 55 --crash
  # A fill that stopped at its time limit short of 1 GiB continues the same store.
  got=$(grep "RESULT cmd=fill engine=$e" results.log | tail -1 | sed -E 's/.*payload=([0-9.]+) MiB.*/\1/')
  left=$(awk -v g=$got 'BEGIN{l=1073741824-g*1048576; print (l>0?int(l):0)}')
  if [ "$left" -gt 33554432 ]; then
    ./run.sh fill --engine $e --dir $D/big-$e --bytes $left --secs 55 --crash
  fi
  ./run.sh reopen --engine $e --dir $D/big-$e --cold      # first open after the crash (repair/replay)
  ./run.sh reopen --engine $e --dir $D/big-$e --cold      # clean close before it
  ./run.sh reopen --engine $e --dir $D/big-$e             # warm
  ./run.sh lastn --engine $e --dir $D/big-$e --n 100 --reads 2000 --cold
  ./run.sh lastn --engine $e --dir $D/big-$e --n 100 --reads 2000
  ./run.sh trim --engine $e --dir $D/big-$e --keep 100
done
echo "=== big done $(date -u +%FT%TZ)" >> results.log
