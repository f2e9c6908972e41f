#!/bin/sh
# The README's main job, on the default OpenCL device (first GPU, else PoCL on the CPU): installs what dua
# needs (Debian 12, as root), builds a release, lists the devices, shows a learned-style layout, and runs the
# block-sparse forward against dua dense and the naive baseline, each checked against the CPU reference.
# The trainer (train -> extract -> sparse inference) is not written yet; this demo will grow into it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release >/dev/null
meson compile -C build-release >/dev/null
build-release/tools/dua-info
echo
echo "== block-sparse forward: depth 3 of a binary tree (density 1/8), block-diagonal (1/16), dense"
build-release/tools/dua-bench --n 2048 --batch 1 --heads 4 --dim 64 --block 128 --depth 3 -1 0 --dtype fp32 \
  --check --show-mask --min-time 0.2 --warmup 1
echo
echo "== causal, with a 64-token window and 16 sink tokens, fp16 storage"
build-release/tools/dua-bench --n 2048 --batch 1 --heads 4 --dim 64 --block 128 --depth 2 --window 64 --sink 16 \
  --causal --dtype fp16 --check --show-mask --min-time 0.2 --warmup 1
