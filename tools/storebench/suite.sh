#!/bin/bash
# The whole comparison, one run at a time (each ≤ 60 s, niced), each after a wait
# for a quieter machine (≤ 180 s). Results go to results.log (RESULT lines).
cd "$(dirname "$0")"
D=${STOREBENCH_DATA:-$PWD/data}
R() { ./waitquiet.sh 20; ./run.sh "$@"; }
R fsyncprobe --dir $D/probe --secs 5
for b in 1024; do R commit --engine fjall --dir $D/fjall --fresh --batch $b --sync always --secs 10; done
echo "=== suite start $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) fs=$(findmnt -n -o FSTYPE -T $D)" >> results.log
for e in redb; do for b in 1 16 128 1024; do R commit --engine $e --dir $D/$e --fresh --batch $b --sync always --secs 10; done; done
for e in fjall redb; do for b in 1 128 1024; do R commit --engine $e --dir $D/$e --fresh --batch $b --sync never --secs 10; done; done
for b in 1 128; do R commit --engine fjall --dir $D/fjall --fresh --batch $b --sync data --secs 10; done
for e in fjall redb; do R group --engine $e --dir $D/$e --fresh --producers 2 --window 512 --max-batch 1024 --sync always --secs 10; done
for e in fjall redb; do R group --engine $e --dir $D/$e --fresh --producers 2 --rate 10000 --window 4096 --max-batch 1024 --sync always --secs 10; done
for e in fjall redb; do R group --engine $e --dir $D/$e --fresh --producers 2 --rate 10000 --window 4096 --max-batch 1024 --sync never --secs 10; done
echo "=== suite done $(date -u +%FT%TZ)" >> results.log
