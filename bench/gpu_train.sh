#!/bin/bash
# Trainer runs on the GPU machine, from the project root (see shared/devkit/README.md). Runs the trainer's
# GPU tests, then dua-train on Dyck-2 (S=32) and ListOps (S=128): dense, native (gates unconstrained) and
# native with a density budget, same seed and schedule, each with a training time limit.
# Usage: bash bench/gpu_train.sh [dyck_steps] [listops_steps] [seconds_per_run]
# Output: $OUT/train.txt (tests, eval lines, final lines) and $OUT/train_runs.tar.gz (every run's
# train.csv, eval.csv, result.json, routing.json, loss.svg, depths.svg; checkpoints left out).
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export DUA_CACHE_DIR=/tmp/dua-cache
OUT=${OUT:-/tmp/out}
DYCK_STEPS=${1:-3000}
LISTOPS_STEPS=${2:-5000}
LIMIT=${3:-60}
RUNS=/tmp/train-runs
mkdir -p "$OUT" "$RUNS"
T="build-rel/tools/dua-train --seed 1 --time-limit $LIMIT"
run() { # name, flags...
  local name=$1; shift
  echo "== $name: $*"
  $T --out "$RUNS/$name" "$@" 2>&1 | grep -v '^step' | tail -9
}
{
  for t in train_ops model; do
    echo "== test_$t"; CK_FORK=no build-rel/test/test_$t 2>&1 | tail -2
  done
  D="--task dyck --steps $DYCK_STEPS --warmup 100 --eval-every 500"
  run dyck-dense $D --mode dense
  run dyck-native $D --mode native
  run dyck-budget $D --mode native --density-weight 2 --density-target 0.6
  L="--task listops --seq-len 128 --steps $LISTOPS_STEPS --warmup 200 --eval-every 1000"
  run listops-dense $L --mode dense
  run listops-native $L --mode native
  run listops-budget $L --mode native --density-weight 2 --density-target 0.3
} > "$OUT/train.txt" 2>&1
cat "$OUT/train.txt"
tar czf "$OUT/train_runs.tar.gz" -C "$RUNS" --exclude='*.ckpt' .
