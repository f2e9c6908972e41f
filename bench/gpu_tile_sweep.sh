#!/bin/bash
# Sweeps the portable forward kernel's tile parameters (DUA_FWD_TILE) on the GPU machine for the N=8192
# block-diagonal and dense problems of bench/RESULTS.md; prints one line per tile and problem.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export DUA_CACHE_DIR=/tmp/dua-cache
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for t in ${TILES:-64,32,16,16 64,32,8,16 32,64,8,16 64,32,16,8 64,32,8,8 32,32,8,16 128,32,16,16}; do
  DUA_FWD_TILE=$t build-rel/tools/dua-bench --n 8192 --batch 8 --heads 8 --dim 64 --depth -1 3 0 --dtype fp32 \
    --no-naive --no-dense --json - 2>/dev/null | python3 -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if 'ms' not in r: continue
    print(f'tile $t  depth {r[\"depth\"]:2d} {r[\"dtype\"]}  {r[\"ms\"]:9.4f} ms  {r[\"tflops\"]:6.2f} TFLOP/s')
" || echo "tile $t failed"
done | tee "$OUT/tile_sweep.txt"
