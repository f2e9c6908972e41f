#!/bin/bash
# gpu_decode_scaling.sh: how decode time scales with the bytes it reads, on the GPU machine, in one call:
# dua-bench --pass decode (batch 32, head dim 128, block 128, fp16, the default kernel, every row checked
# against the double reference) on GQA 32/8 and heads 8 at 16K, depths 0..4, and dense at n = 1024..16384
# (the same bytes as the depths' visible keys), each row next to a device copy that moves the same bytes
# (of_cp_n); the fastest plain read of those byte counts (bench/read_floor.c, dua_read_floor); then
# FlexAttention and SDPA (enable_gqa) on the same problems.
# Usage (on the GPU machine, after `source .devkit/device-env.sh`): OUT=dir bash bench/gpu_decode_scaling.sh
# Output: $OUT/{gpu.txt,decode_scaling.jsonl,decode_scaling.log,read_floor.jsonl,peers_scaling.jsonl}; a table is printed last.
set -uo pipefail
export DUA_CACHE_DIR=/tmp/dua-cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
BUILD=${BUILD:-build-rel}
export BENCH_DIR="$(cd "$(dirname "$0")" && pwd)" # bench/jsonl_rows.py for the summary
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; "$BUILD"/tools/dua-info; } \
  >"$OUT/gpu.txt" 2>&1
D="$BUILD/tools/dua-bench --pass decode --batch 32 --dim 128 --block 128 --dtype fp16 --json -"
tag() { sed "s/^{/{\"run\": \"$1\", /"; }
{
  $D --heads 32 --kv-heads 8 --n 16384 --depth 0 1 2 3 4 --check | tag "gqa 16K"
  $D --heads 32 --kv-heads 8 --n 1024 2048 4096 8192 --depth 0 --check | tag "gqa dense n"
  $D --heads 8 --n 16384 --depth 0 1 2 3 4 --check | tag "h8 16K"
  $D --heads 8 --n 1024 2048 4096 8192 --depth 0 --check | tag "h8 dense n"
} 2>"$OUT/decode_scaling.log" >"$OUT/decode_scaling.jsonl"
"$BUILD"/bench/dua_read_floor --mb 134.2 268.4 536.9 1073.7 2147.5 >"$OUT/read_floor.jsonl"
grep -E "copy b|CHECK|check.*(bad|fail)|failed|error" "$OUT/decode_scaling.log" | sort | uniq -c | head -20
{ timeout 90 python3 bench/peers_gqa_decode.py --n 16384 --depth 0 1 2 3 4
  timeout 90 python3 bench/peers_gqa_decode.py --n 1024 2048 4096 8192 --depth 0
  timeout 90 python3 .devkit/peers.py --pass decode --batch 32 --heads 8 --dim 128 --block 128 --n 16384 1024 \
    --depth 0 4 --dtype fp16; } 2>"$OUT/peers_scaling.log" | grep '^{' >"$OUT/peers_scaling.jsonl"
python3 - "$OUT/read_floor.jsonl" "$OUT/decode_scaling.jsonl" "$OUT/peers_scaling.jsonl" <<'PY'
import os, sys
sys.path.insert(0, os.environ["BENCH_DIR"])
from jsonl_rows import rows
print("plain read (dua_read_floor): MB, best read ms, ms of a copy moving the same bytes")
for r in rows(sys.argv[1:2]):
    print(f"  {r['bytes'] / 1e6:9.1f} {r['read_ms']:9.4f} {r.get('copy_same_bytes_ms') or float('nan'):9.4f}")
print(f"{'run':<14} {'peer':<22} {'n':>6} {'H/Hkv':>6} {'depth':>5} {'kv_MB':>8} {'ms':>8} {'of copy':>8} "
      f"{'copy same':>9} {'of same':>8} checked")
for r in rows(sys.argv[2:]):
    if r.get("variant", "").startswith("dua_sparse") and r.get("depth") == 0:
        continue
    heads = f"{r.get('heads', '?')}/{r.get('kv_heads', r.get('heads', '?'))}"
    cs, fs = r.get("copy_same_bytes_ms"), r.get("fraction_of_same_size_copy")
    kv = r.get("kv_bytes")
    print(f"{r.get('run', '-'):<14} {r.get('peer', r.get('variant', '?')):<22} {r.get('n', 0):>6} {heads:>6} "
          f"{r.get('depth', '?'):>5} {kv / 1e6 if kv else float('nan'):>8.1f} {r.get('ms', float('nan')):>8.4f} "
          f"{r.get('fraction_of_copy') or float('nan'):>8.3f} {cs or float('nan'):>9.4f} "
          f"{fs or float('nan'):>8.3f} {r.get('checked', '-')}")
PY
