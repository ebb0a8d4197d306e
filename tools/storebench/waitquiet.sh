#!/bin/bash
# Waits (at most $1 seconds, default 180) until the 1-minute load average is under 1.0.
max=${1:-90}; t=0
while [ $t -lt $max ]; do
  l=$(cut -d' ' -f1 /proc/loadavg)
  awk -v l=$l 'BEGIN{exit !(l<1.0)}' && exit 0
  sleep 5; t=$((t+5))
done
exit 0
