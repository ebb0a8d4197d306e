#!/bin/bash
# One benchmark at a time, niced, bounded; appends command + result to results.log.
# usage: ./run.sh <storebench args...>
cd "$(dirname "$0")"
LOG=results.log
echo "### $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg) :: nice -n 19 storebench $*" >> $LOG
nice -n 19 timeout 75 ./target/release/storebench "$@" 2>&1 | tee -a $LOG | grep -E "RESULT|rror|panick"
echo "exit=${PIPESTATUS[0]}" >> $LOG
