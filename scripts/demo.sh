#!/bin/sh
# The README's main job, on the default OpenCL device (first GPU, else PoCL on the CPU): installs what dua
# needs (Debian 12, as root), builds a release, then
#   1. trains a small Dyck-2 model whose heads learn routing depths (dua-train, native mode with a density
#      budget), printing progress, the learned depth map and the held-out accuracy;
#   2. extracts the routing (runs/demo/routing.json) and evaluates the same checkpoint with the hard sparse
#      routing next to dense attention (dua-run eval: accuracy, density, time per batch);
#   3. generates through the block-sparse prefill and the sparse paged-KV decode (dua-run generate);
#   4. times the block-sparse attention kernel alone against dua dense and the naive baseline (dua-bench).
# Sized to finish in a few minutes on a 2-core CPU; on a GPU use the full setup of bench/RESULTS.md.
# DEMO_STEPS overrides the number of training steps.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release >/dev/null
meson compile -C build-release >/dev/null
bin=build-release/tools
$bin/dua-info | sed -n '1,12p'
steps=${DEMO_STEPS:-1500}
out=runs/demo
rm -rf "$out"
echo
echo "== 1. train: Dyck-2 (S=64, block 16: a 2-level tree), 2 layers x 2 heads, native routing with a density budget, $steps steps"
$bin/dua-train --task dyck --seq-len 64 --mode native --steps "$steps" --warmup 50 --eval-every 500 --width 64 \
  --heads 2 --batch 32 --lr 3e-3 --density-weight 1 --density-target 0.6 --test-size 1000 --seed 1 --out "$out"
echo
echo "== 2. the extracted routing ($out/routing.json) and the same checkpoint, sparse vs dense"
cat "$out/routing.json"
$bin/dua-run eval "$out" --reps 3
echo
echo "== 3. generation: block-sparse prefill, then the sparse paged-KV decode, one token at a time"
$bin/dua-run generate "$out" --prompt-test 11 --new 8
echo
echo "== 4. the block-sparse forward kernel alone: depth 3 of a binary tree (density 1/8), block-diagonal, dense"
$bin/dua-bench --n 2048 --batch 1 --heads 4 --dim 64 --block 128 --depth 3 -1 0 --dtype fp32 \
  --check --min-time 0.2 --warmup 1
echo
echo "plots: $out/loss.svg (loss, accuracy, density) and $out/depths.svg (learned depth map)"
