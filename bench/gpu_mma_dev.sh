#!/bin/bash
# Development loop of the NVIDIA tensor-core forward (cl/attn_fwd_mma.cl) on the GPU machine, one call:
# the mma test program and test_forward on the GPU, the kernel's PTX and ptxas resource report, then
# dua-bench on the issue-5 problem set with the mma path and with DUA_NO_MMA=1 (portable), same card.
#   bash bench/gpu_mma_dev.sh [tests] [ptx] [bench] [bench128] [benchmt1] [peers]   (default: tests ptx bench)
# benchmt1: head dim 64 with DUA_MMA_MT=1 (16 query rows per warp instead of the default 32), for comparison.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 DUA_CACHE_DIR=/tmp/dua-cache
parts=${*:-tests ptx bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
summary=()
for p in $parts; do
  case $p in
  tests)
    for t in forward_mma forward; do
      echo "== test_$t on the GPU"
      timeout 400 build-rel/test/test_$t >"$OUT/test_$t.txt" 2>&1
      rc=$?
      grep -E "^[0-9]+%|Checks|device " "$OUT/test_$t.txt" | sort | uniq -c | head -8
      grep -E ":[EF]:" "$OUT/test_$t.txt" | head -12
      summary+=("test_$t rc=$rc $(grep -E '^[0-9]+%' "$OUT/test_$t.txt" | tail -1)")
    done ;;
  ptx)
    # the program cache holds the PTX (88-byte header, then the payload)
    n=0
    for f in $(grep -l "dua_attn_fwd_mma" -r "$DUA_CACHE_DIR" 2>/dev/null | head -2); do
      tail -c +89 "$f" > "$OUT/mma_$n.ptx"; n=$((n + 1))
    done
    ptxas=$(ls /usr/local/lib/python3*/dist-packages/triton/backends/nvidia/bin/ptxas \
      /usr/lib/python3/dist-packages/triton/backends/nvidia/bin/ptxas $(python3 -c 'import triton,os;print(os.path.dirname(triton.__file__))' 2>/dev/null)/backends/nvidia/bin/ptxas 2>/dev/null | head -1)
    for f in "$OUT"/mma_*.ptx; do
      [ -f "$f" ] || continue
      echo "== $f: $(grep -c 'mma.sync' "$f") mma.sync, $(grep -c ldmatrix "$f") ldmatrix, $(grep -c 'cp.async.cg' "$f") cp.async, $(grep -c 'ld.local\|st.local' "$f") ld/st.local, $(grep -c 'ex2.approx' "$f") ex2, $(grep -m1 -o '.reg .f32[^;]*' "$f")"
      [ -n "$ptxas" ] && sed 's/^\.target sm_90$/.target sm_90/' "$f" > /tmp/k.ptx && "$ptxas" -arch=sm_90 -v /tmp/k.ptx -o /tmp/k.cubin 2>&1 | grep -E "registers|spill" | tee -a "$OUT/ptxas.txt"
    done ;;
  bench | bench128 | benchmt1)
    dim=64; [ $p = bench128 ] && dim=128
    modes="mma portable"; [ $p = benchmt1 ] && modes=mt1
    for mode in $modes; do
      env=(); [ $mode = portable ] && env=(DUA_NO_MMA=1); [ $mode = mt1 ] && env=(DUA_MMA_MT=1)
      env "${env[@]}" build-rel/tools/dua-bench --n 8192 --batch 8 --heads 8 --dim $dim --depth -1 3 0 --dtype fp16 \
        --no-naive --no-dense --json "$OUT/bench_${dim}_$mode.jsonl" >"/tmp/bench_${dim}_$mode.txt" 2>&1
      summary+=("$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$OUT/bench_${dim}_$mode.jsonl') if '\"ms\"' in l]
print('Dh=$dim $mode: ' + '  '.join(f'depth {r[\"depth\"]}: {r[\"ms\"]:.4f} ms {r[\"tflops\"]:.1f} TF/s {r[\"gbps\"]:.0f} GB/s' for r in rows))
" 2>&1)")
    done ;;
  peers)
    python3 .devkit/peers.py --n 8192 --depth -1 3 0 --dtype fp16 >"$OUT/peers.txt" 2>&1
    summary+=("peers: $(grep -E 'flex|sdpa' "$OUT/peers.txt" | tr -s ' ' | head -8 | tr '\n' ';')") ;;
  esac
done
echo "==== summary ($(cat "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
