#!/bin/bash
# The forward's split tail on the GPU machine, one call: dua-bench's fp16 forward (heads 8, head dim 64, block
# 128, non-causal depth 3 and dense) at several batches and lengths, each timed with the split tail as planned
# (built-in rule), with it off (DUA_SPLIT_TAIL=0), and, where OLD names the build of an earlier commit, with
# that build; ROUNDS rounds (default 2), best of them in the table.
# With PEERS=1, peers.py (FlexAttention with the same block mask, SDPA) on each case in the same call.
#   OLD=build-old BUILD=build-slim bash bench/gpu_split_tail.sh   ("B:N" pairs in CASES, default below)
set -uo pipefail
source .devkit/device-env.sh >/dev/null
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
CASES=${CASES:-"8:8192 4:8192 1:8192 8:32768 2:2048"}
variants=(split nosplit)
[ -n "${OLD:-}" ] && variants+=(old)
for round in $(seq "${ROUNDS:-2}"); do
  for c in $CASES; do
    for v in "${variants[@]}"; do
      build=$BUILD split=""
      [ "$v" = nosplit ] && split=0
      [ "$v" = old ] && build=$OLD
      DUA_SPLIT_TAIL=$split DUA_CACHE_DIR=/tmp/dua-cache-$v "$build/tools/dua-bench" --batch "${c%%:*}" \
        --n "${c##*:}" --heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --depth 3 0 --json - 2>/dev/null |
        grep '^{' | sed "s/^{/{\"v\": \"$v\", /" >>"$OUT/split.jsonl"
    done
  done
done
touch "$OUT/peers.jsonl"
if [ "${PEERS:-0}" = 1 ]; then
  for c in $CASES; do
    timeout 240 python3 .devkit/peers.py --batch "${c%%:*}" --n "${c##*:}" --heads 8 --dim 64 --dtype fp16 \
      --depth 3 0 2>/dev/null | grep '^{' >>"$OUT/peers.jsonl"
  done
fi
python3 - "$OUT/split.jsonl" "$OUT/peers.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if 'ms' in r]
peers = [r for r in map(json.loads, open(sys.argv[2])) if 'ms' in r]
def peer(r, name):
    m = [q['ms'] for q in peers if q['peer'] == name and q['batch'] == r[0] and q['n'] == r[1]
         and round(q['density'], 4) == round(r[3], 4)]
    return f"{m[0]:.4f}" if m else '-'
names = list(dict.fromkeys(r['v'] for r in rows))
keys = list(dict.fromkeys((r['batch'], r['n'], r['depth'], r['density']) for r in rows))
print('B N depth | ' + ' | '.join(names) + ' | split vs nosplit | flex | sdpa   (best ms over rounds)')
for k in keys:
    best = {nm: min([r['ms'] for r in rows if r['v'] == nm and (r['batch'], r['n'], r['depth'], r['density']) == k] or [0])
            for nm in names}
    gain = f"{100 * (1 - best['split'] / best['nosplit']):+.1f}%" if best.get('nosplit') else '-'
    print(f"{k[0]} {k[1]} {k[2]} | " + ' | '.join(f"{best[nm]:.4f}" for nm in names) + f" | {gain} | "
          f"{peer(k, 'flex_blockmask')} | {peer(k, 'sdpa_dense')}")
PY
