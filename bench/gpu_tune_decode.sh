#!/bin/bash
# dua-tune --kernel decode on the GPU machine, now that the warp kernel (the NVIDIA default) is in the decode
# tuning space, then dua-bench --pass decode with the compiled defaults against the tuned database, to check
# "tuned is never slower than the default". Problems: fp16 KV cache, head dim 128, batch 32, 16K-token
# contexts, pages of 16, block 128, depths 0 (dense) and 4; heads 8 ("decode": one query row per work-group)
# and GQA 32/8 ("decode_gqa": several rows per work-group). Each tuning run writes two entries (the plan, then
# the split-KV thresholds "decode_split"); since one "decode_split" entry per dtype and head dim serves both
# plan kinds, the two runs write two databases (tuning-mha.json, tuning-gqa.json) and each problem is
# benchmarked with its own. Bench: default (no database) and tuned alternately, 3 rounds, checked once
# (round 1, both configurations) against the double reference (a failed check ends that dua-bench call and is
# listed in the summary).
#
# Run from the project root after sourcing the device environment:
#   source .devkit/device-env.sh && BUILD=build-rel OUT=/tmp/out bash bench/gpu_tune_decode.sh
# Needs dua-tune, dua-bench and dua-info in $BUILD/tools. Time: under 8 minutes (TOTAL_S = 420 s for all but
# the closing dua-info calls, at most 2 x 20 s, and the summary; every step is cut to what is left; each
# dua-tune run searches MHA_MIN / GQA_MIN = 1.6 minutes, 3/4 of it on the plan, then re-times, under a guard of
# the search + 60 s; the benchmarks reuse the first call's measured copy bandwidth). A smoke run on a small
# device: DEV=cpu (dua-info's device) and smaller COMMON, MHA, GQA, BENCH_COMMON strings.
# Output in $OUT: tuning-mha.json, tuning-gqa.json (the databases), tune.log (both dua-tune runs' output and
# wall times), bench.jsonl (dua-bench JSON lines with "config": "default"|"tuned" and "round"), device.txt
# (dua-info before, and the parameters in use with each database after) and summary.txt (also printed last:
# the entries, dua-tune's own overall figures, default vs tuned per problem with a verdict).
set -uo pipefail
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
DEV=${DEV:-gpu}
TOTAL_S=${TOTAL_S:-420}
MHA_MIN=${MHA_MIN:-1.6} # search minutes per dua-tune run
GQA_MIN=${GQA_MIN:-1.6}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
export DUA_CACHE_DIR=${DUA_CACHE_DIR:-/tmp/dua-cache}
unset DUA_FWD_TILE DUA_DECODE_KERNEL DUA_DECODE_TILE DUA_DECODE_SPLITS DUA_DECODE_WARP_VPL DUA_DECODE_HALF \
  DUA_TUNING_FILE DUA_TUNING_EMULATED_WARP DUA_NO_MMA
TUNE=$BUILD/tools/dua-tune
BENCH=$BUILD/tools/dua-bench
INFO=$BUILD/tools/dua-info
NODB=/nonexistent/dua/tuning.json
DB_MHA=$OUT/tuning-mha.json
DB_GQA=$OUT/tuning-gqa.json
rm -f "$DB_MHA" "$DB_GQA" "$OUT/tune.log" "$OUT/bench.jsonl" "$OUT/bench.err"
t_start=$(date +%s)
deadline=$((t_start + TOTAL_S))
left() { echo $((deadline - $(date +%s))); }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{ echo "commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ)"; timeout 30 "$INFO" --device "$DEV"; } >"$OUT/device.txt" 2>&1

# problems (overridable for a smoke run)
COMMON=${COMMON:-"--dtype fp16 --dim 128 --n 16384 --batch 32 --block 128 --page 16 --depth 0 4 --reps 5 --warmup 1"}
MHA=${MHA:-"--heads 8"}
GQA=${GQA:-"--heads 32 --kv-heads 8"}
BENCH_COMMON=${BENCH_COMMON:-"--dtype fp16 --dim 128 --n 16384 --batch 32 --block 128 --page 16 --depth 0 4 --reps 10 --warmup 3"}

# One dua-tune run: search minutes, database, then its arguments. Wall-clock guard: the search plus 60 s
# (set-up, compiling, re-timing), never past the deadline (less 60 s kept for the benchmarks).
tune() {
  local minutes=$1 db=$2
  shift 2
  local guard budget t0
  guard=$(awk -v m="$minutes" 'BEGIN { printf "%d", 60 * m + 60 }')
  budget=$(($(left) - 60))
  [ "$budget" -lt "$guard" ] && guard=$budget
  if [ "$guard" -lt 30 ]; then
    echo "== skipped dua-tune $* (${guard} s left)"
    return
  fi
  t0=$(date +%s)
  echo "== dua-tune --kernel decode $* --max-minutes $minutes --out $db (guard $guard s)"
  timeout "$guard" "$TUNE" --kernel decode "$@" --max-minutes "$minutes" --out "$db" 2>&1 | tr '\r' '\n' |
    grep -v '^[a-z_]* \[[#.]*\] '
  echo "== wall $(($(date +%s) - t0)) s (rc ${PIPESTATUS[0]})"
}

# shellcheck disable=SC2086 # the problem strings are word lists
{
  tune "$MHA_MIN" "$DB_MHA" $COMMON $MHA
  tune "$GQA_MIN" "$DB_GQA" $COMMON $GQA
} >>"$OUT/tune.log" 2>&1
cat "$OUT/tune.log"

# default (no database) and tuned (the run's database) alternately; the first call measures the copy
# bandwidth, the others reuse it
copy=""
for round in $(seq 1 "$ROUNDS"); do
  for prob in mha gqa; do
    for cfg in default tuned; do
      file=$NODB
      args=$MHA
      [ $prob = gqa ] && args=$GQA
      if [ $cfg = tuned ]; then
        file=$DB_MHA
        [ $prob = gqa ] && file=$DB_GQA
      fi
      check=""
      [ "$round" = 1 ] && check="--check"
      limit=$(($(left) - 5))
      [ "$limit" -gt 90 ] && limit=90
      if [ "$limit" -lt 10 ]; then
        echo "skipped round $round $prob $cfg: $(left) s left" >&2
        continue
      fi
      tag="s/^{/{\"config\": \"$cfg\", \"problem\": \"$prob\", \"round\": $round, /"
      # shellcheck disable=SC2086
      line=$(DUA_TUNING_FILE=$file timeout "$limit" "$BENCH" --pass decode $BENCH_COMMON $args --no-dense \
        $check ${copy:+--copy-gbs $copy} --json - 2>>"$OUT/bench.err" | grep '^{' | sed "$tag")
      echo "$line" >>"$OUT/bench.jsonl"
      if [ -z "$copy" ]; then
        copy=$(echo "$line" | head -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["copy_gbps"])' 2>/dev/null || true)
      fi
    done
  done
done
for db in "$DB_MHA" "$DB_GQA"; do
  echo "== dua-info with DUA_TUNING_FILE=$db"
  DUA_TUNING_FILE=$db timeout 20 "$INFO" --device "$DEV" | grep -E '^    decode|tuning database'
done >>"$OUT/device.txt" 2>&1

python3 - "$DB_MHA" "$DB_GQA" "$OUT/bench.jsonl" "$OUT/tune.log" "$OUT/bench.err" <<'PY' | tee "$OUT/summary.txt"
import json, os, re, statistics, sys
db_mha, db_gqa, bench, log, err = sys.argv[1:6]
for name, db in (("mha", db_mha), ("gqa", db_gqa)):
    if not os.path.exists(db):
        print(f"{name}: no tuning database written ({db})")
        continue
    print(f"{name}: {db}")
    for e in json.load(open(db))["entries"]:
        print(f"  {e['kernel']:12s} {e['dtype']} d{e['head_dim']:<4d} {e['device']} / {e['driver']}: {e['params']} "
              f"{e['tuning_s']:.0f} s, {e['candidates']} timed, {e['default_ms']:.3f} -> {e['best_ms']:.3f} ms "
              f"({e['default_ms'] / e['best_ms']:.2f}x)")
if os.path.exists(log):
    text = open(log).read()
    print("dua-tune wall time per run:", ", ".join(re.findall(r"== wall (\d+ s \(rc \d+\))", text)))
    for line in re.findall(r"^(?:default|best|overall|candidates) .*$", text, re.M):
        print("  " + line)
rows = {}
if os.path.exists(bench):
    for line in open(bench):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "ms" not in r:
            continue
        key = (r["problem"], r["heads"], r["kv_heads"], r["dtype"], r["depth"])
        rows.setdefault(key, {}).setdefault(r["config"], []).append(r["ms"])
if os.path.exists(err):
    errs = open(err).read()
    print(f"dua-bench checks (round 1, against the double reference): {errs.count(' ok: ')} ok")
    for line in errs.splitlines():
        if "FAILED" in line or "error" in line.lower():
            print("  " + line)
if rows:
    print("dua-bench --pass decode, median device ms per call over the alternating rounds "
          "(tuned / default <= 1.02: ok):")
    print(f"  {'problem':7s} {'H/Hkv':6s} {'dtype':5s} {'depth':>5s} {'default':>9s} {'tuned':>9s} "
          f"{'speedup':>8s} rounds verdict")
    worst = 0.0
    for key in sorted(rows):
        d, t = rows[key].get("default", []), rows[key].get("tuned", [])
        if d and t:
            md, mt = statistics.median(d), statistics.median(t)
            worst = max(worst, mt / md)
            print(f"  {key[0]:7s} {key[1]:>2d}/{key[2]:<3d} {key[3]:5s} {key[4]:5d} {md:9.4f} {mt:9.4f} "
                  f"{md / mt:7.3f}x {min(len(d), len(t)):6d} {'ok' if mt <= 1.02 * md else 'SLOWER'}")
    print(f"worst tuned / default: {worst:.3f} ({'tuned never slower' if worst <= 1.02 else 'tuned SLOWER somewhere'})")
else:
    print("no dua-bench rows (see bench.err)")
PY
echo "total $(($(date +%s) - t_start)) s"
