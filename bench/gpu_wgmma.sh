#!/bin/bash
# Development loop of the wgmma forward (cl/nv_wgmma_ops.cl, DUA_WGMMA in cl/attn_fwd_mma.cl) on the GPU
# machine, one call: the layout probe (dua_wgmma_probe), dua-info, the tensor-core forward tests with wgmma
# (where the runtime probe passes) and with DUA_NO_WGMMA=1, the PTX's ptxas report, then dua-bench fp16 forward
# on the issue-5 problems with wgmma and with mma.sync (DUA_NO_WGMMA=1), and peers.py on the same problems.
#   BUILD=build-rel bash bench/gpu_wgmma.sh [probe] [tests] [ptx] [bench] [peers]   (default: all)
# LAYOUT_PROBE=0 skips dua_wgmma_probe; BENCH_MODES (default "wgmma mma") may add wgmma1 (one m-tile of 64
# rows per work-group everywhere, DUA_MMA_MT=1; the compiled rule takes two except on causal-short layouts). The bisect of 2026-11-27 (bench/NOTES-mma.md) ran from copies of cl/ with development
# switches that are gone since.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 DUA_CACHE_DIR=/tmp/dua-cache CK_DEFAULT_TIMEOUT=600
BUILD=${BUILD:-build-rel}
parts=${*:-probe tests ptx bench peers}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
summary=()
for p in $parts; do
  case $p in
  probe)
    if [ "${LAYOUT_PROBE:-1}" = 1 ]; then
      timeout 120 $BUILD/bench/dua_wgmma_probe >"$OUT/wgmma_probe.jsonl" 2>"$OUT/wgmma_probe.err"
      summary+=("layout probe rc=$? $(tail -1 "$OUT/wgmma_probe.err")")
      summary+=("$(grep '"max_error": 0,' "$OUT/wgmma_probe.jsonl" | cut -c1-160)")
    fi
    $BUILD/tools/dua-info >"$OUT/dua_info.txt" 2>&1
    summary+=("$(grep -E 'probe|attention path' "$OUT/dua_info.txt")") ;;
  tests)
    for mode in wgmma mma; do
      env=(); [ $mode = mma ] && env=(DUA_NO_WGMMA=1)
      env "${env[@]}" timeout 300 $BUILD/test/test_forward_mma >"$OUT/test_forward_mma_$mode.txt" 2>&1
      summary+=("test_forward_mma ($mode) rc=$? $(grep -E '^[0-9]+%' "$OUT/test_forward_mma_$mode.txt" | tail -1) \
$(grep -m1 -o 'nv_wgmma [01]' "$OUT/test_forward_mma_$mode.txt")")
      grep -E ":[EF]:" "$OUT/test_forward_mma_$mode.txt" | head -6
    done ;;
  ptx)
    ptxas=$(ls .devkit/bin/ptxas 2>/dev/null | head -1)
    n=0
    for f in $(grep -l "wgmma.mma_async" -r "$DUA_CACHE_DIR" 2>/dev/null | head -4); do
      tail -c +89 "$f" | sed 's/^\.version 9\.[0-9]*$/.version 8.8/' >"/tmp/wgmma_$n.ptx"
      [ -n "$ptxas" ] && "$ptxas" -arch=sm_90a -v "/tmp/wgmma_$n.ptx" -o /tmp/k.cubin 2>&1 |
        grep -E "entry function|registers|spill|warn" | tee -a "$OUT/ptxas.txt"
      n=$((n + 1))
    done
    tar czf "$OUT/wgmma_ptx.tar.gz" -C /tmp $(cd /tmp && ls wgmma_*.ptx)
    summary+=("ptx: $n wgmma programs; $(grep -c registers "$OUT/ptxas.txt" 2>/dev/null) ptxas reports") ;;
  bench)
    B="$BUILD/tools/dua-bench --batch 8 --heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --json -"
    for mode in ${BENCH_MODES:-wgmma mma}; do
      env=(); [ $mode = mma ] && env=(DUA_NO_WGMMA=1); [ $mode = wgmma1 ] && env=(DUA_MMA_MT=1)
      { env "${env[@]}" $B --n 2048 --depth -1 0 --check
        env "${env[@]}" $B --n 8192 --depth -1 3 0
        env "${env[@]}" $B --n 8192 --depth -1 3 0 --causal
        env "${env[@]}" $B --n 32768 --depth 8 3 0; } 2>>"$OUT/bench.log" | grep '^{' | sed "s/^{/{\"path\": \"$mode\", /"
    done >"$OUT/dua_fwd.jsonl"
    grep -iE "check|fail|error" "$OUT/bench.log" | head -8 ;;
  peers)
    P="timeout 200 python3 .devkit/peers.py --batch 8 --heads 8 --dim 64 --dtype fp16"
    { $P --n 8192 --depth -1 3 0; $P --n 8192 --depth -1 3 0 --causal; $P --n 32768 --depth 8 3 0; } 2>/dev/null |
      grep '^{' >"$OUT/peers_fwd.jsonl" ;;
  esac
done
[ -f "$OUT/dua_fwd.jsonl" ] && summary+=("$(python3 - "$OUT/dua_fwd.jsonl" "$OUT/peers_fwd.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ms"' in l]
rows = [r for r in rows if 'ms' in r]
peers = [json.loads(l) for l in open(sys.argv[2])] if os.path.exists(sys.argv[2]) else []
def peer(r, name):
    key = (r['n'], r['causal'], r['depth'])
    m = [p['ms'] for p in peers if (p['n'], p['causal'], p['depth']) == key and p['peer'] == name]
    return m[0] if m else None
for r in rows:
    f, s = peer(r, 'flex_blockmask'), peer(r, 'sdpa_dense')
    print(f"{r['path']:5s} N={r['n']} causal={r['causal']} depth={r['depth']} dens={r['density']:.4f}: {r['ms']:.4f} ms "
          f"{r['tflops']:.1f} TF/s {r.get('gbps', 0):.0f} GB/s; flex {f} sdpa {s}" + (f" flex/dua {f / r['ms']:.2f}" if f else ''))
PY
)")
echo "==== summary ($(cat "$OUT/gpu.txt"))"
printf '%s\n' "${summary[@]}"
