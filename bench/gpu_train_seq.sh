#!/bin/bash
# Like gpu_train_many.sh, but one run after the other (NVIDIA's OpenCL time-slices concurrent processes, so
# concurrent runs are ~20x slower each). From the project root; BUILD (default build-rel) holds dua-train.
# Usage: bash bench/gpu_train_seq.sh RUNS_FILE [seconds_per_run]
# Output: $OUT/seq.txt and $OUT/seq_runs.tar.gz.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export DUA_CACHE_DIR=/tmp/dua-cache
OUT=${OUT:-/tmp/out}
LIMIT=${2:-120}
BUILD=${BUILD:-build-rel}
RUNS=/tmp/seq-runs
mkdir -p "$OUT" "$RUNS"
while read -r name flags; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  echo "== $name: $flags"
  $BUILD/tools/dua-train --time-limit "$LIMIT" --out "$RUNS/$name" $flags 2>&1 | grep -v '^step' | tail -10
done < "$1" > "$OUT/seq.txt" 2>&1
cat "$OUT/seq.txt"
tar czf "$OUT/seq_runs.tar.gz" -C "$RUNS" --exclude='*.ckpt' .
