#!/bin/bash
# gpu_decode_mma.sh: the tensor-core decode kernel ("mma", cl/attn_decode_warp.cl DUA_DECODE_MMA) against the
# warp kernel on the GPU machine, in one call: test_decode (every kernel, the mma cases native), then
# dua-bench --pass decode on GQA 32/8, batch 32, head dim 128, block 128, fp16, N 8192 and 16384, depths
# 0..4 (the default plan and the warp kernel's), heads 8 (default mma and warp), each checked against
# the double reference, and a work-group sweep of the mma kernel at one split; then FlexAttention and SDPA
# with enable_gqa (bench/peers_gqa_decode.py) and peers.py's 8-head decode, contiguous KV, when time is left.
# Usage (on the GPU machine, after `source .devkit/device-env.sh`): OUT=dir bash bench/gpu_decode_mma.sh
# Output: $OUT/{gpu.txt,decode_mma_test.txt,decode_mma.jsonl,decode_mma.log,peers_decode_mma.jsonl}; a
# summary table is printed last.
set -uo pipefail
export DUA_CACHE_DIR=/tmp/dua-cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
BUILD=${BUILD:-build-rel}
export BENCH_DIR="$(cd "$(dirname "$0")" && pwd)" # bench/jsonl_rows.py for the summary
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; "$BUILD"/tools/dua-info; } \
  >"$OUT/gpu.txt" 2>&1
{ echo "== test_decode"; CK_FORK=no "$BUILD"/test/test_decode 2>&1 | tail -4; } >"$OUT/decode_mma_test.txt"
cat "$OUT/decode_mma_test.txt"

D="$BUILD/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --dtype fp16 --json -"
tag() { sed "s/^{/{\"run\": \"$1\", /"; }
{
  # GQA 32/8: the library's default (mma), then the warp kernel at its GQA plan
  $D --heads 32 --kv-heads 8 --n 8192 16384 --depth 0 1 2 3 4 --check | tag "default"
  DUA_DECODE_KERNEL=warp DUA_DECODE_TILE=8,128,4 $D --heads 32 --kv-heads 8 --n 16384 --depth 0 2 4 --check \
    | tag "warp 8,128,4"
  # heads 8 (one row per work-group): the default (mma with one row) and the warp kernel at its one-row plan
  $D --heads 8 --n 16384 --depth 0 1 2 3 4 --check | tag "h8 default"
  DUA_DECODE_KERNEL=warp $D --heads 8 --n 16384 --depth 0 1 2 3 4 --check | tag "h8 warp"
  # the mma kernel, one split: work-group sizes
  for tile in 16,64,8 16,256,8 16,512,8; do
    [ $SECONDS -gt 400 ] && { echo "sweep stopped at $tile (time)" >&2; break; }
    DUA_DECODE_SPLITS=1 DUA_DECODE_KERNEL=mma DUA_DECODE_TILE=$tile $D --heads 32 --kv-heads 8 --n 16384 \
      --depth 0 2 4 --no-dense | tag "mma s1 t$tile"
  done
} 2>"$OUT/decode_mma.log" >"$OUT/decode_mma.jsonl"
grep -E "copy b|CHECK|check.*(bad|fail)|failed|error" "$OUT/decode_mma.log" | sort | uniq -c | head -20
if [ $SECONDS -lt 470 ]; then
  { timeout 60 python3 bench/peers_gqa_decode.py --n 16384 --depth 0 1 2 3 4
    timeout 60 python3 .devkit/peers.py --pass decode --batch 32 --heads 8 --dim 128 --block 128 --n 16384 \
      --depth 0 1 2 3 4 --dtype fp16; } 2>"$OUT/peers_decode_mma.log" | grep '^{' >"$OUT/peers_decode_mma.jsonl"
fi
python3 - "$OUT/decode_mma.jsonl" "$OUT/peers_decode_mma.jsonl" <<'PY'
import os, sys
sys.path.insert(0, os.environ["BENCH_DIR"])
from jsonl_rows import rows
print(f"{'run':<22} {'n':>6} {'H/Hkv':>6} {'depth':>5} {'ms':>8} {'of copy':>8} {'x dense':>8} checked")
for r in rows(sys.argv[1:]):
    if r.get("variant", "").startswith("dua_dense") and r.get("depth") != 0:
        continue
    run = r.get("run", r.get("peer", r.get("variant", "?")))
    foc, sp = r.get("fraction_of_copy"), r.get("speedup_vs_dense")
    heads = "%s/%s" % (r.get("heads"), r.get("kv_heads", r.get("heads")))
    print("%-22s %6s %6s %5s %8.4f %8s %8s %s" % (run[:22], r.get("n", 0), heads, r.get("depth", ""),
          r.get("ms", 0), "%.1f%%" % (100 * foc) if foc else "-", "%.2f" % sp if sp else "-",
          r.get("checked", "")))
PY
