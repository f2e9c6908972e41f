#!/bin/bash
# The fp16 tensor-core forward and forward + backward of the built-in kernels against earlier kernel sources
# (a copy of cl/ in BASE, read through DUA_CL_DIR), next to FlexAttention and SDPA, in one call on the GPU
# machine: test_forward_mma and test_forward on the GPU first, then gpu_variants.sh (forward, N 8192 and 32768,
# block-diagonal, depth 3, dense, causal and not, best of two rounds), dua-bench --pass fwdbwd for both
# sources, and peers.py on every problem. From the project root; BUILD (default build-rel) holds the tools.
#   BASE=exp-cl/base BUILD=build-slim bash bench/gpu_fwd_compare.sh
# BASE=env:VAR=VALUE: the built-in sources with VAR=VALUE set instead of earlier sources (a host-side switch).
# FWD=0: forward + backward only (test_backward on the GPU instead of the forward tests, no forward variants
# and no forward peers), for a change to the backward kernels. TESTS: the test programs to run first instead.
# Output ($OUT): test_*.txt, variants.jsonl (forward), fwdbwd.jsonl ("v": new or base), peers.jsonl.
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 CK_DEFAULT_TIMEOUT=600 DUA_CACHE_DIR=/tmp/dua-cache-cmp
BUILD=${BUILD:-build-rel}
BASE=${BASE:?BASE: a folder with the earlier kernel sources}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
FWD=${FWD:-1}
tests="forward_mma forward"
[ "$FWD" = 1 ] || tests=backward
tests=${TESTS:-$tests} # e.g. TESTS="forward_mma backward"
for t in $tests; do
  timeout 300 "$BUILD/test/test_$t" >"$OUT/test_$t.txt" 2>&1
  echo "test_$t rc=$? $(grep -E '^[0-9]+%' "$OUT/test_$t.txt" | tail -1)"
done
[ "$FWD" = 1 ] &&
  NS="8192 32768" ROUNDS=2 PASS=fwd BUILD=$BUILD bash bench/gpu_variants.sh - "$BASE" 2>&1 | grep -A40 '^N causal'
touch "$OUT/variants.jsonl"
B="$BUILD/tools/dua-bench --batch 8 --heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --pass fwdbwd --json -"
for v in new base new base; do # two rounds, alternating (the table takes the best)
  setting=()
  if [ $v = base ] && [ "${BASE#env:}" != "$BASE" ]; then
    unset DUA_CL_DIR; export DUA_CACHE_DIR=/tmp/dua-cache-cmp; setting=("${BASE#env:}")
  elif [ $v = base ]; then export DUA_CL_DIR=$PWD/$BASE DUA_CACHE_DIR=/tmp/dua-cache-cmp-base
  else unset DUA_CL_DIR; export DUA_CACHE_DIR=/tmp/dua-cache-cmp; fi
  { env "${setting[@]}" $B --n 8192 --depth -1 3 0
    env "${setting[@]}" $B --n 8192 --depth -1 3 0 --causal
    env "${setting[@]}" $B --n 32768 --depth -1 3
    env "${setting[@]}" $B --n 32768 --depth -1 3 --causal; } 2>/dev/null | grep '^{' | sed "s/^{/{\"v\": \"$v\", /" >>"$OUT/fwdbwd.jsonl"
done
unset DUA_CL_DIR
P="timeout 240 python3 .devkit/peers.py --batch 8 --heads 8 --dim 64 --dtype fp16"
{ [ "$FWD" = 1 ] && $P --n 8192 32768 --depth -1 3 0 && $P --n 8192 32768 --depth -1 3 0 --causal
  $P --pass fwdbwd --n 8192 --depth -1 3 0
  $P --pass fwdbwd --n 8192 --depth -1 3 0 --causal
  $P --pass fwdbwd --n 32768 --depth -1 3
  $P --pass fwdbwd --n 32768 --depth -1 3 --causal; } 2>/dev/null | grep '^{' >"$OUT/peers.jsonl"
rm -f "$OUT"/ptx_*.ptx "$OUT"/bench_*.log
python3 - "$OUT/variants.jsonl" "$OUT/fwdbwd.jsonl" "$OUT/peers.jsonl" <<'PY'
import json, sys
fwd = [json.loads(l) for l in open(sys.argv[1]) if '"ms"' in l]
fb = [json.loads(l) for l in open(sys.argv[2]) if '"ms"' in l]
peers = [json.loads(l) for l in open(sys.argv[3]) if l.startswith('{')]
def peer(p, n, causal, dens, name):
    m = [q['ms'] for q in peers if q.get('pass_', 'fwd') == p and q['n'] == n and q['causal'] == causal
         and round(q['density'], 4) == round(dens, 4) and q['peer'] == name]
    return m[0] if m else float('nan')
print('pass N causal density | new ms | base ms | flex ms | sdpa ms | flex/new | flex/base')
for p, rows, key in (('fwd', fwd, 'cl'), ('fwdbwd', fb, 'v')):
    for k in sorted({(r['n'], r['causal'], round(r['density'], 4)) for r in rows}):
        if p == 'fwd' and k[0] == 2048:
            continue
        best = {}
        for r in rows:
            if (r['n'], r['causal'], round(r['density'], 4)) == k:
                v = 'new' if r[key] in ('-', 'new') else 'base'
                best[v] = min(best.get(v, 1e9), r['ms'])
        f, s = peer(p, k[0], k[1], k[2], 'flex_blockmask'), peer(p, k[0], k[1], k[2], 'sdpa_dense')
        print(f"{p} {k[0]} {k[1]} {k[2]} | {best.get('new', float('nan')):.4f} | {best.get('base', float('nan')):.4f}"
              f" | {f:.4f} | {s:.4f} | {f / best.get('new', 1e9):.3f} | {f / best.get('base', 1e9):.3f}")
PY
