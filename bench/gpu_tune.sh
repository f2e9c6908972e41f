#!/bin/bash
# dua-tune on the GPU machine: tunes the portable forward and backward tiles (head dim 64, N 8192, batch 8,
# heads 8, depth 3 = density 1/8, fp16 and fp32) and the paged-KV decode (batch 32, heads 8, head dim 128,
# 16K contexts, pages of 16, depths 0 and 4, fp16 and fp32 cache: the plan, then the split-KV thresholds)
# into one tuning database, each run within its own time budget, then times the default against the tuned
# configuration with dua-bench (alternating default, tuned, default, tuned; forward and backward with
# DUA_NO_MMA=1 so both sides run the portable kernels that were tuned; forward and backward at depths 0 and
# 3, decode at depths 0 and 4). The whole script stays under about 8 minutes (the budgets below: 6 tuning
# runs of at most 0.75-0.9 min of search each, plus set-up, re-timing and dua-bench).
#
# Run from the project root after sourcing the device environment (the caller does that):
#   source .devkit/device-env.sh && BUILD=build-rel OUT=/tmp/out bash bench/gpu_tune.sh [fwd] [bwd] [decode] [bench]
# (no arguments: all four parts). Needs dua-tune, dua-bench and dua-info in $BUILD/tools.
# Output in $OUT: tuning.json (the database: one entry per kernel, dtype and head dim, with device, driver,
# date, shapes, default and best times and tuning seconds), tune.log (every dua-tune run's output and its wall
# time), bench.jsonl (dua-bench JSON lines, each with "config": "default" or "tuned" and "round"),
# device.txt (dua-info: the device and, after tuning, the parameters in use with their sources) and
# summary.txt (default vs tuned per problem, tuning time per run), also printed last.
set -uo pipefail
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
FWD_MIN=${FWD_MIN:-0.75} # search minutes per dua-tune run
BWD_MIN=${BWD_MIN:-0.9}
DEC_MIN=${DEC_MIN:-0.8}
mkdir -p "$OUT"
export DUA_CACHE_DIR=${DUA_CACHE_DIR:-/tmp/dua-cache}
unset DUA_FWD_TILE DUA_DECODE_KERNEL DUA_DECODE_TILE DUA_DECODE_SPLITS DUA_TUNING_FILE
DB=$OUT/tuning.json
TUNE=$BUILD/tools/dua-tune
BENCH=$BUILD/tools/dua-bench
NODB=/nonexistent/dua/tuning.json
t_start=$(date +%s)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{ echo "commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ)"; "$BUILD/tools/dua-info" --device gpu; } >"$OUT/device.txt" 2>&1

# One dua-tune run: its search budget in minutes, then its arguments. A hard wall-clock guard of twice the
# budget plus 60 s covers set-up (filling caches, compiling) and the final re-timing.
tune() {
  local minutes=$1
  shift
  local guard
  guard=$(awk -v m="$minutes" 'BEGIN { printf "%d", 120 * m + 60 }')
  local t0
  t0=$(date +%s)
  echo "== dua-tune $* --max-minutes $minutes"
  timeout "$guard" "$TUNE" "$@" --max-minutes "$minutes" --out "$DB" 2>&1 | tr '\r' '\n' |
    grep -v '^[a-z_]* \[[#.]*\] '
  echo "== wall $(($(date +%s) - t0)) s (rc ${PIPESTATUS[0]})"
}

# problems (overridable for a smoke run on a small device)
FB=${FB:-"--dim 64 --n 8192 --batch 8 --heads 8 --block 128 --depth 3 --reps 3 --warmup 1"}
DEC=${DEC:-"--dim 128 --n 16384 --batch 32 --heads 8 --block 128 --page 16 --depth 0 4 --reps 5 --warmup 1"}
BENCH_FB=${BENCH_FB:-"--n 8192 --batch 8 --heads 8 --dim 64 --depth 0 3 --reps 5 --warmup 2"}
BENCH_DEC=${BENCH_DEC:-"--n 16384 --batch 32 --heads 8 --dim 128 --block 128 --page 16 --depth 0 4 --reps 10 --warmup 3"}
parts=${*:-fwd bwd decode bench}
for part in $parts; do
  case $part in
  fwd)
    for dt in fp16 fp32; do tune "$FWD_MIN" --kernel fwd --dtype $dt $FB; done >>"$OUT/tune.log" ;;
  bwd)
    for dt in fp16 fp32; do tune "$BWD_MIN" --kernel bwd --dtype $dt $FB; done >>"$OUT/tune.log" ;;
  decode)
    for dt in fp16 fp32; do tune "$DEC_MIN" --kernel decode --dtype $dt $DEC; done >>"$OUT/tune.log" ;;
  bench)
    # default (no database) and tuned (the database) alternately, two rounds each
    for round in 1 2; do
      for cfg in default tuned; do
        file=$NODB
        [ $cfg = tuned ] && file=$DB
        tag="s/^{/{\"config\": \"$cfg\", \"round\": $round, /"
        for pass in fwd bwd; do
          DUA_NO_MMA=1 DUA_TUNING_FILE=$file timeout 120 "$BENCH" --pass $pass $BENCH_FB --dtype fp16 fp32 \
            --no-naive --no-dense --json - 2>/dev/null | grep '^{' | sed "$tag"
        done
        DUA_TUNING_FILE=$file timeout 120 "$BENCH" --pass decode $BENCH_DEC --dtype fp16 fp32 --no-dense \
          --json - 2>/dev/null | grep '^{' | sed "$tag"
      done
    done >>"$OUT/bench.jsonl" ;;
  *) echo "unknown part $part (fwd bwd decode bench)" ;;
  esac
done
DUA_TUNING_FILE=$DB "$BUILD/tools/dua-info" --device gpu >>"$OUT/device.txt" 2>&1

python3 - "$DB" "$OUT/bench.jsonl" "$OUT/tune.log" <<'PY' | tee "$OUT/summary.txt"
import json, os, re, sys
db, bench, log = sys.argv[1:4]
if os.path.exists(db):
    print("tuning database entries (device, driver, tuned params, search time, default -> best ms on the tuned shapes):")
    for e in json.load(open(db))["entries"]:
        print(f"  {e['kernel']:12s} {e['dtype']} d{e['head_dim']:<4d} {e['device']} / {e['driver']}: {e['params']} "
              f"{e['tuning_s']:.0f} s, {e['candidates']} timed, {e['default_ms']:.3f} -> {e['best_ms']:.3f} ms "
              f"({e['default_ms'] / e['best_ms']:.2f}x)")
if os.path.exists(log):
    print("dua-tune wall time per run:", ", ".join(re.findall(r"== wall (\d+ s)", open(log).read())))
rows = {}
if os.path.exists(bench):
    for line in open(bench):
        r = json.loads(line)
        if "ms" not in r:
            continue
        key = (r["pass_"], r["dtype"], r["depth"])
        rows.setdefault(key, {}).setdefault(r["config"], []).append(r["ms"])
if rows:
    print("dua-bench median device ms per call, mean of 2 alternating rounds (fwd/bwd: portable kernels, "
          "DUA_NO_MMA=1):")
    print(f"  {'pass':6s} {'dtype':5s} {'depth':>5s} {'default':>10s} {'tuned':>10s} {'speedup':>8s}")
    for key in sorted(rows):
        d, t = rows[key].get("default", []), rows[key].get("tuned", [])
        if d and t:
            md, mt = sum(d) / len(d), sum(t) / len(t)
            print(f"  {key[0]:6s} {key[1]:5s} {key[2]:5d} {md:10.3f} {mt:10.3f} {md / mt:7.2f}x")
PY
echo "total $(($(date +%s) - t_start)) s"
