#!/bin/bash
# Runs several dua-train configurations at once on the GPU machine (the trainer's small kernels leave the
# GPU mostly idle, so concurrent runs barely slow each other). From the project root.
# Usage: bash bench/gpu_train_many.sh RUNS_FILE [seconds_per_run]
#   RUNS_FILE: one run per line, "name flags..." (lines starting with # are skipped).
# Output: $OUT/many.txt (each run's eval and final lines, in file order) and $OUT/many_runs.tar.gz.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export DUA_CACHE_DIR=/tmp/dua-cache
OUT=${OUT:-/tmp/out}
LIMIT=${2:-120}
RUNS=/tmp/many-runs
mkdir -p "$OUT" "$RUNS"
build-rel/tools/dua-train --task dyck --steps 2 --warmup 1 --out /tmp/warm --quiet >/dev/null 2>&1 # fill the cache
names=()
while read -r name flags; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  names+=("$name")
  build-rel/tools/dua-train --time-limit "$LIMIT" --out "$RUNS/$name" $flags > "$RUNS/$name.log" 2>&1 &
done < "$1"
wait
for name in "${names[@]}"; do
  echo "== $name: $(grep -m1 '^dua-train' "$RUNS/$name.log")"
  grep -v '^step' "$RUNS/$name.log" | grep -v '^dua-train' | tail -8
done > "$OUT/many.txt"
cat "$OUT/many.txt"
tar czf "$OUT/many_runs.tar.gz" -C "$RUNS" --exclude='*.ckpt' .
