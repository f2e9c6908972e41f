#!/bin/bash
# Development loop of the NVIDIA tensor-core forward (cl/attn_fwd_mma.cl) on the GPU machine, one call:
# the mma test program and test_forward on the GPU, the kernel's PTX and ptxas resource report, then
# dua-bench on the issue-5 problem set with the mma path and with DUA_NO_MMA=1 (portable), same card.
#   bash bench/gpu_mma_dev.sh [tests] [ptx] [bench] [bench128] [benchmt1] [peers] [tf32]   (default: tests ptx bench)
# benchmt1: head dim 64 with DUA_MMA_MT=1 (16 query rows per warp instead of the default 32), for comparison.
# tf32: fp32 storage through tf32 (dua-bench --tf32; MT 2 (default) and 1 at N 8192, and with the kernels of
# exp-cl/ (DUA_CL_DIR) when that folder exists (an experiment); head dim 128; exact fp32 portable at
# N 8192), then peers.py --tf32 (FlexAttention and SDPA with tf32 allowed) on the same problems, same call.
# ptxas: .devkit/bin/ptxas (from the nvidia-cuda-nvcc-cu12 wheel) if present, else triton's.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 DUA_CACHE_DIR=/tmp/dua-cache
BUILD=${BUILD:-build-rel}
parts=${*:-tests ptx bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/gpu.txt"
summary=()
for p in $parts; do
  case $p in
  tests)
    for t in forward_mma forward tuning decode; do
      echo "== test_$t on the GPU"
      timeout 200 $BUILD/test/test_$t >"$OUT/test_$t.txt" 2>&1
      rc=$?
      grep -E "^[0-9]+%|Checks|device " "$OUT/test_$t.txt" | sort | uniq -c | head -8
      grep -E ":[EF]:" "$OUT/test_$t.txt" | head -12
      summary+=("test_$t rc=$rc $(grep -E '^[0-9]+%' "$OUT/test_$t.txt" | tail -1)")
    done ;;
  ptx)
    # the program cache holds the PTX (88-byte header, then the payload)
    n=0
    for f in $(grep -l "dua_attn_fwd_mma\|dua_attn_bwd_dq_mma" -r "$DUA_CACHE_DIR" 2>/dev/null | head -8); do
      tail -c +89 "$f" > "$OUT/mma_$n.ptx"; n=$((n + 1))
    done
    ptxas=$(ls .devkit/bin/ptxas /usr/local/lib/python3*/dist-packages/triton/backends/nvidia/bin/ptxas \
      /usr/lib/python3/dist-packages/triton/backends/nvidia/bin/ptxas $(python3 -c 'import triton,os;print(os.path.dirname(triton.__file__))' 2>/dev/null)/backends/nvidia/bin/ptxas 2>/dev/null | head -1)
    for f in "$OUT"/mma_*.ptx; do
      [ -f "$f" ] || continue
      echo "== $f: $(grep -c 'mma.sync' "$f") mma.sync, $(grep -c ldmatrix "$f") ldmatrix, $(grep -c 'cp.async.cg' "$f") cp.async, $(grep -c 'ld.local\|st.local' "$f") ld/st.local, $(grep -c 'ex2.approx' "$f") ex2, $(grep -m1 -o '.reg .f32[^;]*' "$f")"
      [ -n "$ptxas" ] && sed 's/^\.version 9\.[0-9]*$/.version 8.8/' "$f" > /tmp/k.ptx && "$ptxas" -arch=sm_90 -v /tmp/k.ptx -o /tmp/k.cubin 2>&1 | grep -E "entry function|registers|spill" | tee -a "$OUT/ptxas.txt"
    done ;;
  bench | bench128 | benchmt1)
    dim=64; [ $p = bench128 ] && dim=128
    modes="mma portable"; [ $p = benchmt1 ] && modes=mt1
    for mode in $modes; do
      env=(); [ $mode = portable ] && env=(DUA_NO_MMA=1); [ $mode = mt1 ] && env=(DUA_MMA_MT=1)
      env "${env[@]}" $BUILD/tools/dua-bench --n 8192 --batch 8 --heads 8 --dim $dim --depth -1 3 0 --dtype fp16 \
        --no-naive --no-dense --json "$OUT/bench_${dim}_$mode.jsonl" >"/tmp/bench_${dim}_$mode.txt" 2>&1
      summary+=("$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$OUT/bench_${dim}_$mode.jsonl') if '\"ms\"' in l]
print('Dh=$dim $mode: ' + '  '.join(f'depth {r[\"depth\"]}: {r[\"ms\"]:.4f} ms {r[\"tflops\"]:.1f} TF/s {r[\"gbps\"]:.0f} GB/s' for r in rows))
" 2>&1)")
    done ;;
  tf32)
    B="$BUILD/tools/dua-bench --batch 8 --heads 8 --dtype fp32 --no-naive --json -"
    { $B --dim 64 --n 2048 --depth -1 3 0 --tf32 --check --no-dense
      $B --dim 64 --n 8192 --depth -1 3 0 --tf32 --no-dense
      DUA_MMA_MT=1 $B --dim 64 --n 8192 --depth -1 3 0 --tf32 --no-dense | sed 's/^{/{"mt": 1, /'
      [ -d exp-cl ] && DUA_CL_DIR=exp-cl $B --dim 64 --n 8192 --depth -1 3 0 --tf32 --no-dense | sed 's/^{/{"mt": "exp", /'
      $B --dim 64 --n 8192 --depth -1 3 --tf32 --causal --no-dense
      $B --dim 64 --n 32768 --depth -1 3 --tf32 --no-dense
      $B --dim 128 --n 8192 --depth -1 3 0 --tf32 --check --no-dense
      $B --dim 64 --n 8192 --depth -1 3 --no-dense; } 2>"$OUT/tf32.log" | grep '^{' > "$OUT/dua_tf32.jsonl"
    grep -iE "check|fail|error" "$OUT/tf32.log" | head -12
    P="timeout 150 python3 .devkit/peers.py --batch 8 --heads 8 --dtype fp32 --tf32"
    { $P --dim 64 --n 2048 8192 --depth -1 3 0; $P --dim 64 --n 8192 --depth -1 3 --causal
      $P --dim 64 --n 32768 --depth -1 3; $P --dim 128 --n 8192 --depth -1 3 0; } 2>/dev/null | grep '^{' \
      > "$OUT/peers_tf32.jsonl"
    summary+=("$(python3 - "$OUT/dua_tf32.jsonl" "$OUT/peers_tf32.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ms"' in l]
peers = [json.loads(l) for l in open(sys.argv[2]) if l.startswith('{')]
for r in rows:
    key = (r['n'], r['dim'], r['depth'], r['causal'])
    flex = [p for p in peers if (p.get('n'), p.get('dim'), p.get('depth'), p.get('causal')) == key and 'flex' in str(p.get('peer'))]
    f = flex[0].get('ms') if flex else None
    print(f"N={r['n']} Dh={r['dim']} depth={r['depth']} causal={r['causal']} tf32={r.get('tf32')} mt={r.get('mt', '-')}: "
          f"{r['ms']:.4f} ms {r['tflops']:.1f} TF/s; flex tf32 {f} ms" + (f" -> flex/dua {f / r['ms']:.2f}" if f else ''))
PY
)") ;;
  bwd)
    # the tensor-core backward: test_backward on the GPU (default: both passes on wgmma on Hopper; the
    # tensor-core cases again with both on mma.sync), then the backward alone and fp16 forward + backward,
    # default and DUA_NO_WGMMA=1, next to the peers
    timeout 300 $BUILD/test/test_backward >"$OUT/test_backward.txt" 2>&1
    summary+=("test_backward rc=$? $(grep -E '^[0-9]+%' "$OUT/test_backward.txt" | tail -1)")
    for v in DUA_NO_WGMMA; do
      env $v=1 DUA_TEST_ONLY=tensor_core_cases timeout 200 $BUILD/test/test_backward >"$OUT/test_backward_$v.txt" 2>&1
      summary+=("test_backward $v=1 rc=$? $(grep -E '^[0-9]+%' "$OUT/test_backward_$v.txt" | tail -1)")
    done
    grep -E ":[EF]:" "$OUT"/test_backward*.txt | head -8
    B="$BUILD/tools/dua-bench --batch 8 --heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --json -"
    for mode in default mma; do
      env=(); [ $mode = mma ] && env=(DUA_NO_WGMMA=1 DUA_CACHE_DIR=/tmp/dua-cache-mma)
      { env "${env[@]}" $B --pass fwdbwd --n 2048 --depth -1 3 0 --check
        env "${env[@]}" $B --pass bwd --n 8192 --depth -1 3 0
        env "${env[@]}" $B --pass fwdbwd --n 8192 --depth -1 3 0
        env "${env[@]}" $B --pass fwdbwd --n 8192 --depth -1 3 --causal; } 2>>"$OUT/bwd.log" | grep '^{' |
        sed "s/^{/{\"mode\": \"$mode\", /"
    done >"$OUT/dua_bwd.jsonl"
    grep -iE "check|fail|error" "$OUT/bwd.log" | head -8
    P="timeout 150 python3 .devkit/peers.py --batch 8 --heads 8 --dim 64 --dtype fp16 --pass fwdbwd"
    { $P --n 2048 8192 --depth -1 3 0; $P --n 8192 --depth -1 3 --causal; } 2>/dev/null | grep '^{' \
      > "$OUT/peers_bwd.jsonl"
    summary+=("$(python3 - "$OUT/dua_bwd.jsonl" "$OUT/peers_bwd.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ms"' in l]
peers = [json.loads(l) for l in open(sys.argv[2]) if l.startswith('{')]
for r in rows:
    key = (r['n'], r['causal'], round(r['density'], 4), r['pass_'])
    f = [p['ms'] for p in peers if (p['n'], p['causal'], round(p['density'], 4), p['pass_']) == key and p['peer'] == 'flex_blockmask']
    print(f"{r['mode']:7} {r['pass_']:6} N={r['n']} causal={r['causal']} dens={r['density']:.4f}: "
          f"{r['ms']:.3f} ms {r['tflops']:.1f} TF/s" + (f"; flex {f[0]:.3f} flex/dua {f[0] / r['ms']:.2f}" if f else ''))
PY
)") ;;
  causal)
    # query rows per warp (DUA_MMA_MT 1 or 2) on causal layouts, fp16 and fp32 through tf32, then the peers
    B="$BUILD/tools/dua-bench --batch 8 --heads 8 --dim 64 --n 8192 --causal --no-naive --no-dense --json -"
    for mt in 1 2; do
      DUA_MMA_MT=$mt $B --depth -1 3 0 --dtype fp16 | sed "s/^{/{\"mt\": $mt, /"
      DUA_MMA_MT=$mt $B --depth -1 3 0 --dtype fp32 --tf32 | sed "s/^{/{\"mt\": $mt, /"
    done 2>/dev/null | grep '^{' > "$OUT/dua_causal.jsonl"
    { timeout 100 python3 .devkit/peers.py --batch 8 --heads 8 --dim 64 --n 8192 --causal --depth -1 3 0 --dtype fp16
      timeout 100 python3 .devkit/peers.py --batch 8 --heads 8 --dim 64 --n 8192 --causal --depth -1 3 0 --dtype fp32 \
        --tf32; } 2>/dev/null | grep '^{' > "$OUT/peers_causal.jsonl"
    summary+=("$(python3 -c "
import json
for l in open('$OUT/dua_causal.jsonl'):
    r = json.loads(l)
    print(f\"causal mt={r['mt']} {r['dtype']} tf32={r['tf32']} depth={r['depth']}: {r['ms']:.4f} ms\")
for l in open('$OUT/peers_causal.jsonl'):
    r = json.loads(l)
    print(f\"peer {r['peer']} {r.get('dtype')} depth={r.get('depth')}: {r['ms']:.4f} ms\")
")") ;;
  peers)
    python3 .devkit/peers.py --n 8192 --depth -1 3 0 --dtype fp16 >"$OUT/peers.txt" 2>&1
    summary+=("peers: $(grep -E 'flex|sdpa' "$OUT/peers.txt" | tr -s ' ' | head -8 | tr '\n' ';')") ;;
  esac
done
echo "==== summary ($(cat "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
