#!/bin/bash
# Small launches of the fp16 forward on the GPU machine, one call: dua-bench (heads 8, head dim 64, block 128)
# on each case of CASES ("B:N:depth", depth 0 = dense; "B:N:depth:c" causal) under each variant given, ROUNDS rounds
# (default 2, best in the table). A variant is "name:VAR=VALUE VAR2=VALUE2 ..." (host switches such as
# DUA_SPLIT_TAIL=count,parts or DUA_MMA_MT=1; "build=DIR" runs that build's dua-bench, e.g. of an earlier commit,
# instead of BUILD's) or "-" for the build as it is. PEERS=1 adds FlexAttention and
# SDPA on every case; FWDBWD=1 adds dua's forward + backward (and the backward alone) of the build as it is,
# next to the peers' forward + backward.
#   CASES="1:8192:3 1:8192:0" BUILD=build-slim bash bench/gpu_small_batch.sh - "nosplit:DUA_SPLIT_TAIL=0" \
#     "old:build=build-old"
set -uo pipefail
source .devkit/device-env.sh >/dev/null
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
CASES=${CASES:-"1:8192:3 1:8192:0 2:8192:3 1:32768:3"}
: >"$OUT/small.jsonl"
: >"$OUT/peers.jsonl"
B="--heads 8 --dim 64 --dtype fp16 --no-naive --no-dense --json -"
for round in $(seq "${ROUNDS:-2}"); do
  for c in $CASES; do
    IFS=: read -r b n d causal <<<"$c"
    flags=()
    [ "${causal:-}" = c ] && flags=(--causal)
    for v in "$@"; do
      [ "$v" = - ] || [ "${v#*:}" != "$v" ] || { echo "variant \"$v\": want name:VAR=VALUE ... or -" >&2; exit 2; }
      name=${v%%:*} setting=() build=$BUILD
      [ "$v" = - ] || read -r -a setting <<<"${v#*:}"
      for i in "${!setting[@]}"; do
        case "${setting[$i]}" in build=*) build=${setting[$i]#build=}; unset "setting[$i]" ;; esac
      done
      env DUA_CACHE_DIR="/tmp/dua-cache-small-$name" "${setting[@]}" "$build/tools/dua-bench" $B --batch "$b" \
        --n "$n" --depth "$d" "${flags[@]}" 2>/dev/null | grep '^{' |
        sed "s/^{/{\"v\": \"$name\", /" >>"$OUT/small.jsonl"
      if [ "$round" = 1 ] && [ "$v" = - ] && [ "${FWDBWD:-0}" = 1 ]; then
        for p in fwdbwd bwd; do
          DUA_CACHE_DIR=/tmp/dua-cache-small-- "$BUILD/tools/dua-bench" $B --batch "$b" --n "$n" --depth "$d" "${flags[@]}" --pass $p 2>/dev/null | grep '^{' |
            sed "s/^{/{\"v\": \"$p\", /" >>"$OUT/small.jsonl"
        done
      fi
    done
  done
done
if [ "${PEERS:-0}" = 1 ]; then
  for c in $CASES; do
    IFS=: read -r b n d causal <<<"$c"
    flags=()
    [ "${causal:-}" = c ] && flags=(--causal)
    passes=fwd
    [ "${FWDBWD:-0}" = 1 ] && passes="fwd fwdbwd"
    for p in $passes; do
      timeout 240 python3 .devkit/peers.py --batch "$b" --n "$n" --heads 8 --dim 64 --dtype fp16 --depth "$d" \
        "${flags[@]}" --pass $p 2>/dev/null | grep '^{' >>"$OUT/peers.jsonl"
    done
  done
fi
python3 - "$OUT/small.jsonl" "$OUT/peers.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if 'ms' in r]
peers = [r for r in map(json.loads, open(sys.argv[2])) if 'ms' in r]
def peer(k, name, p='fwd'):
    m = [q['ms'] for q in peers if q['peer'] == name and q['batch'] == k[0] and q['n'] == k[1] and q['causal'] == k[4]
         and round(q['density'], 4) == round(k[3], 4) and q.get('pass_', 'fwd') == p]
    return f"{m[0]:.4f}" if m else '-'
names = list(dict.fromkeys(r['v'] for r in rows))
keys = list(dict.fromkeys((r['batch'], r['n'], r['depth'], r['density'], r['causal']) for r in rows))
print('B N depth causal | ' + ' | '.join(names) + ' | flex | sdpa | flex fwdbwd | sdpa fwdbwd   (best ms)')
for k in keys:
    best = [min([r['ms'] for r in rows if r['v'] == nm and (r['batch'], r['n'], r['depth'], r['density'], r['causal']) == k]
                or [float('nan')]) for nm in names]
    print(f"{k[0]} {k[1]} {k[2]} {'c' if k[4] else '-'} | " + ' | '.join(f"{x:.4f}" for x in best) + f" | {peer(k, 'flex_blockmask')}"
          f" | {peer(k, 'sdpa_dense')} | {peer(k, 'flex_blockmask', 'fwdbwd')} | {peer(k, 'sdpa_dense', 'fwdbwd')}")
PY
