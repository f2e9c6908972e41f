#!/bin/bash
# dua-tune --kernel fwd_mma on the GPU machine: the NVIDIA tensor-core forward's m-tiles per warp (mt for most
# calls, mt_cs for causal layouts visiting <= 8 blocks per row), fp16 and fp32 (the tf32 variant,
# allow_tf32 = 1), head dim 64, N 8192, batch 8, heads 8, block 128, depths -1 3 0 (1, 8 and 64 blocks per
# row), non-causal and causal: 6 shapes per run (causal depths -1 and 3 exercise mt_cs, the rest mt), into one
# database; then dua-bench --pass fwd on the same problems with the compiled defaults (no database) against
# the tuned database, alternating default / tuned, ROUNDS rounds (round 1 checked against the CPU reference),
# fp16 and fp32 with --tf32, non-causal and causal. Reports the entries and, per problem, default vs tuned
# with a verdict (tuned / default <= 1.02: ok).
#
# Run from the project root after sourcing the device environment:
#   source .devkit/device-env.sh && BUILD=build-rel OUT=/tmp/out bash bench/gpu_tune_mma.sh
# Needs dua-tune, dua-bench and dua-info in $BUILD/tools. Time: under 7 minutes on an H100 (TOTAL_S = 380 s for
# all but the closing dua-info calls, at most 2 x 20 s, and the summary; every step is cut to what is left;
# each dua-tune run searches at most TUNE_MIN = 1.5 minutes (its 3 candidates take seconds) under a guard of
# the search + 60 s). A smoke run on a small device: DEV=cpu and smaller COMMON, BENCH_COMMON strings (the
# kernel only runs on NVIDIA: elsewhere dua-tune exits saying why, unless DUA_TUNING_EMULATED_MMA=1).
# Output in $OUT: tuning.json (the database: one fwd_mma entry per dtype), tune.log (both dua-tune runs'
# output and wall times), bench.jsonl (dua-bench JSON lines with "config": "default"|"tuned" and "round"),
# bench.err (dua-bench's stderr: the checks), device.txt (dua-info before, and the fwd_mma parameters in use
# with the database after) and summary.txt (also printed last).
set -uo pipefail
BUILD=${BUILD:-build-rel}
OUT=${OUT:-/tmp/out}
DEV=${DEV:-gpu}
TOTAL_S=${TOTAL_S:-380}
TUNE_MIN=${TUNE_MIN:-1.5} # search minutes per dua-tune run
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
export DUA_CACHE_DIR=${DUA_CACHE_DIR:-/tmp/dua-cache}
unset DUA_FWD_TILE DUA_DECODE_KERNEL DUA_DECODE_TILE DUA_DECODE_SPLITS DUA_MMA_MT DUA_TUNING_FILE DUA_NO_MMA
TUNE=$BUILD/tools/dua-tune
BENCH=$BUILD/tools/dua-bench
INFO=$BUILD/tools/dua-info
NODB=/nonexistent/dua/tuning.json
DB=$OUT/tuning.json
rm -f "$DB" "$OUT/tune.log" "$OUT/bench.jsonl" "$OUT/bench.err"
t_start=$(date +%s)
deadline=$((t_start + TOTAL_S))
left() { echo $((deadline - $(date +%s))); }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{ echo "commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ)"; timeout 30 "$INFO" --device "$DEV"; } >"$OUT/device.txt" 2>&1

# problems (overridable for a smoke run)
COMMON=${COMMON:-"--dim 64 --n 8192 --batch 8 --heads 8 --block 128 --depth -1 3 0 --causal 0 1 --reps 10 --warmup 2"}
BENCH_COMMON=${BENCH_COMMON:-"--n 8192 --batch 8 --heads 8 --dim 64 --block 128 --depth -1 3 0 --reps 10 --warmup 3"}

# One dua-tune run: its dtype. Wall-clock guard: the search plus 60 s (set-up, compiling, re-timing), never past
# the deadline (less 120 s kept for the benchmarks).
tune() {
  local dtype=$1
  local guard budget t0
  guard=$(awk -v m="$TUNE_MIN" 'BEGIN { printf "%d", 60 * m + 60 }')
  budget=$(($(left) - 120))
  [ "$budget" -lt "$guard" ] && guard=$budget
  if [ "$guard" -lt 30 ]; then
    echo "== skipped dua-tune $dtype (${guard} s left)"
    return
  fi
  t0=$(date +%s)
  echo "== dua-tune --kernel fwd_mma --dtype $dtype $COMMON --max-minutes $TUNE_MIN --out $DB (guard $guard s)"
  # shellcheck disable=SC2086 # the problem string is a word list
  timeout "$guard" "$TUNE" --kernel fwd_mma --dtype "$dtype" $COMMON --max-minutes "$TUNE_MIN" --out "$DB" 2>&1 |
    tr '\r' '\n' | grep -v '^[a-z_]* \[[#.]*\] '
  echo "== wall $(($(date +%s) - t0)) s (rc ${PIPESTATUS[0]})"
}

{
  tune fp16
  tune fp32
} >>"$OUT/tune.log" 2>&1
cat "$OUT/tune.log"

# default (no database) and tuned alternately; fp16 and fp32 through tf32 in one call, non-causal and causal
for round in $(seq 1 "$ROUNDS"); do
  for causal in 0 1; do
    for cfg in default tuned; do
      file=$NODB
      [ $cfg = tuned ] && file=$DB
      check=""
      [ "$round" = 1 ] && check="--check"
      limit=$(($(left) - 5))
      [ "$limit" -gt 90 ] && limit=90
      if [ "$limit" -lt 10 ]; then
        echo "skipped round $round causal $causal $cfg: $(left) s left" >&2
        continue
      fi
      flag=""
      [ "$causal" = 1 ] && flag="--causal"
      tag="s/^{/{\"config\": \"$cfg\", \"round\": $round, /"
      echo "== round $round causal $causal $cfg" >>"$OUT/bench.err"
      # shellcheck disable=SC2086
      DUA_TUNING_FILE=$file timeout "$limit" "$BENCH" --pass fwd $BENCH_COMMON $flag --dtype fp16 fp32 --tf32 \
        --no-naive --no-dense $check --json - 2>>"$OUT/bench.err" | grep '^{' | sed "$tag" >>"$OUT/bench.jsonl"
    done
  done
done
echo "== dua-info with DUA_TUNING_FILE=$DB" >>"$OUT/device.txt"
DUA_TUNING_FILE=$DB timeout 20 "$INFO" --device "$DEV" 2>&1 | grep -E '^    fwd_mma|tuning database' >>"$OUT/device.txt"

python3 - "$DB" "$OUT/bench.jsonl" "$OUT/tune.log" "$OUT/bench.err" "$OUT/device.txt" <<'PY' | tee "$OUT/summary.txt"
import json, os, re, statistics, sys
db, bench, log, err, device = sys.argv[1:6]
if os.path.exists(device):
    after = False  # the fwd_mma lines of dua-info with the database
    for line in open(device):
        after = after or line.startswith("== dua-info with")
        if line.startswith("device ") or line.startswith("  driver version") or (after and "fwd_mma" in line):
            print(line.rstrip())
if os.path.exists(db):
    print(f"database {db}:")
    for e in json.load(open(db))["entries"]:
        print(f"  {e['kernel']} {e['dtype']} d{e['head_dim']} {e['device']} / {e['driver']}: {e['params']} "
              f"{e['tuning_s']:.0f} s, {e['candidates']} timed, {e['default_ms']:.3f} -> {e['best_ms']:.3f} ms "
              f"({e['default_ms'] / e['best_ms']:.3f}x)")
        for s in e["shapes"]:
            print(f"    depth {s['depth']:2d} {'causal' if s.get('causal') else 'dense '}: default "
                  f"{s['default_ms']:.4f} ms, best {s['best_ms']:.4f} ms ({s['default_ms'] / s['best_ms']:.3f}x)")
else:
    print(f"no tuning database written ({db})")
if os.path.exists(log):
    text = open(log).read()
    print("dua-tune wall time per run:", ", ".join(re.findall(r"== wall (\d+ s \(rc \d+\))", text)))
    for line in re.findall(r"^(?:dua-tune: .*nothing to tune.*|default  .*|best  .*|candidates .*)$", text, re.M):
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
        key = (r["dtype"] + (" tf32" if r.get("tf32") else ""), r["causal"], r["depth"])
        rows.setdefault(key, {}).setdefault(r["config"], []).append(r["ms"])
if os.path.exists(err):
    errs = open(err).read()
    print(f"dua-bench checks (round 1, against the CPU reference): {errs.count(' ok: ')} ok")
    for line in errs.splitlines():
        if "FAILED" in line or "error" in line.lower():
            print("  " + line)
if rows:
    print("dua-bench --pass fwd (tensor-core forward), median device ms per call over the alternating rounds "
          "(tuned / default <= 1.02: ok):")
    print(f"  {'dtype':9s} {'causal':6s} {'depth':>5s} {'default':>9s} {'tuned':>9s} {'speedup':>8s} rounds verdict")
    worst = 0.0
    for key in sorted(rows, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        d, t = rows[key].get("default", []), rows[key].get("tuned", [])
        if d and t:
            md, mt = statistics.median(d), statistics.median(t)
            worst = max(worst, mt / md)
            print(f"  {key[0]:9s} {'yes' if key[1] else 'no':6s} {str(key[2]):>5s} {md:9.4f} {mt:9.4f} {md / mt:7.3f}x "
                  f"{min(len(d), len(t)):6d} {'ok' if mt <= 1.02 * md else 'SLOWER'}")
    print(f"worst tuned / default: {worst:.3f} ({'tuned never slower' if worst <= 1.02 else 'tuned SLOWER somewhere'})")
else:
    print("no dua-bench rows (see bench.err)")
PY
echo "total $(($(date +%s) - t_start)) s"
