#!/bin/bash
# Kernel-variant comparison on the GPU machine, one call: for each folder of kernel sources given (copies of
# cl/ with a change; DUA_CL_DIR points the library at one), dua-bench on the same fp16 forward problems
# (batch 8, heads 8, head dim 64, block 128), checked against the CPU reference at N 2048, and ptxas's
# register report of the wgmma programs that variant built (from its disk cache), then a table.
#   BUILD=build-slim bash bench/gpu_variants.sh exp-cl/a exp-cl/b ...   (ROUNDS=2 runs the list twice; NS="8192
#   32768" the sequence lengths, default 8192)
# A folder named "-" means the built-in sources; "env:VAR=VALUE" the built-in sources with VAR=VALUE set for
# that variant's runs (e.g. env:DUA_TAIL_ORDER=0). CAUSAL_ONLY=1 times the causal layouts only, NONCAUSAL_ONLY=1
# the others; BATCH the batch (default 8). PASS=bwd: the backward instead (dua-bench --pass bwd on the
# same problem set, and test_backward's tensor-core cases on the GPU for each variant before timing, unless
# TESTS=0).
set -uo pipefail
source .devkit/device-env.sh >/dev/null
export PYTHONUNBUFFERED=1 CK_DEFAULT_TIMEOUT=600
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
PASS=${PASS:-fwd}
B="$BUILD/tools/dua-bench --batch ${BATCH:-8} --heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --pass $PASS --json -"
ptxas=$(ls .devkit/bin/ptxas 2>/dev/null | head -1)
for round in $(seq "${ROUNDS:-1}"); do
  for dir in "$@"; do
    name=$(basename "$dir")
    setting=()
    case "$dir" in
    env:*) setting=("${dir#env:}"); name=$(echo "${dir#env:}" | tr -c 'A-Za-z0-9_\n' _); dir=- ;;
    esac
    export DUA_CACHE_DIR=/tmp/dua-cache-$name
    if [ "$dir" = - ]; then unset DUA_CL_DIR; else export DUA_CL_DIR=$PWD/$dir; fi
    if [ "$round" = 1 ] && [ "$PASS" = bwd ] && [ "${TESTS:-1}" = 1 ]; then
      env "${setting[@]}" DUA_TEST_ONLY=tensor_core_cases timeout 300 "$BUILD/test/test_backward" \
        >"$OUT/test_backward_$name.txt" 2>&1
      echo "$name: test_backward rc=$? $(grep -E '^[0-9]+%' "$OUT/test_backward_$name.txt" | tail -1)" |
        tee -a "$OUT/tests.txt"
    fi
    { [ "$round" = 1 ] && [ "$PASS" = fwd ] && env "${setting[@]}" $B --n 2048 --depth -1 0 --check
      for n in ${NS:-8192}; do
        [ "${CAUSAL_ONLY:-0}" = 1 ] || env "${setting[@]}" $B --n "$n" --depth -1 3 0
        [ "${NONCAUSAL_ONLY:-0}" = 1 ] || env "${setting[@]}" $B --n "$n" --depth -1 3 0 --causal
      done; } 2>>"$OUT/bench_$name.log" | grep '^{' |
      sed "s/^{/{\"cl\": \"$name\", \"round\": $round, /" >>"$OUT/variants.jsonl"
    if [ "$round" = 1 ] && [ -z "$ptxas" ]; then # no ptxas here: the driver's PTX comes back for a local one
      n=0
      for f in $(grep -l "^\.target sm_90a\|^\.maxnreg" -r "$DUA_CACHE_DIR" 2>/dev/null | head -4); do
        tail -c +89 "$f" >"$OUT/ptx_${name}_$n.ptx"; n=$((n + 1))
      done
    fi
    if [ "$round" = 1 ] && [ -n "$ptxas" ]; then
      # the sm_90a programs (wgmma, or a register cap) in the disk cache: ptxas's report per kernel
      for f in $(grep -l "^\.target sm_90a\|^\.maxnreg" -r "$DUA_CACHE_DIR" 2>/dev/null | head -4); do
        tail -c +89 "$f" | sed 's/^\.version 9\.[0-9]*$/.version 8.8/' >/tmp/v.ptx
        "$ptxas" -arch=sm_90a -v /tmp/v.ptx -o /tmp/v.cubin 2>&1 | grep -E "entry function|registers|spill|C75" |
          sed -E "s/.*entry function '([a-z_0-9]*)'.*/\1:/" | tr '\n' ' ' | sed "s/^/$name: /; s/\$/\n/"
      done >>"$OUT/ptxas.txt"
    fi
  done
done
grep -iE "check|fail|error|warn" "$OUT"/bench_*.log | head -12
cat "$OUT/ptxas.txt" 2>/dev/null
python3 - "$OUT/variants.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if 'ms' in r]
keys = sorted({(r['n'], r['causal'], r['depth']) for r in rows})
names = list(dict.fromkeys(r['cl'] for r in rows))
print('N causal depth | ' + ' | '.join(names) + '   (best ms over rounds)')
for k in keys:
    cells = []
    for nm in names:
        ms = [r['ms'] for r in rows if r['cl'] == nm and (r['n'], r['causal'], r['depth']) == k]
        cells.append(f"{min(ms):.4f}" if ms else '-')
    print(f"{k[0]} {k[1]} {k[2]} | " + ' | '.join(cells))
PY
