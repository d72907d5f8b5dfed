#!/usr/bin/env bash
# Compares two builds of a Google Benchmark binary on this noisy machine:
# runs them alternately ROUNDS times (A, B, A, B, ...) so the machine's
# slow spells hit both alike, and prints per benchmark the median time of
# each and B's median over A's.
#
#   bench/ab.sh ROUNDS FILTER BINARY_A BINARY_B [MIN_TIME]
#   bench/ab.sh 12 'LockCycle8Paths' /tmp/old/bench/qm_bench \
#       build-bench/bench/qm_bench 0.5
#
# FILTER is --benchmark_filter; MIN_TIME --benchmark_min_time (default
# 0.5 s). Times are the benchmark's own unit (the second column).
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
rounds=$1 filter=$2 a=$3 b=$4 min_time=${5:-0.5}
for i in $(seq "$rounds"); do
  for w in A B; do
    bin=$a
    [ "$w" = B ] && bin=$b
    "$bin" --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
      2>/dev/null | awk -v w="$w" '/^BM_/ {print w, $1, $2}'
  done
done | python3 -c '
import collections, statistics, sys
runs = collections.defaultdict(lambda: {"A": [], "B": []})
for line in sys.stdin:
    w, name, t = line.split()
    runs[name][w].append(float(t))
for name, r in runs.items():
    if not r["A"] or not r["B"]:
        continue
    a, b = statistics.median(r["A"]), statistics.median(r["B"])
    print("%-48s A %.3f  B %.3f  B/A %.3f" % (name, a, b, b / a))
    print("    A: " + " ".join("%.2f" % x for x in r["A"]))
    print("    B: " + " ".join("%.2f" % x for x in r["B"]))
'
