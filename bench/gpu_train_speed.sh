#!/bin/bash
# Training speed of dua-train next to the same model in PyTorch (bench/torch_train_speed.py), on the GPU
# machine, one run after the other (NVIDIA's OpenCL time-slices concurrent processes badly). From the project
# root; BUILD (default build-rel) holds dua-train. Shape: 4 layers, width 256, 4 heads (head dim 64), MLP
# ratio 4 (dua-train's default), S = 1024, Dyck-2 vocabulary (5 tokens), fp32, AdamW, clip 1.0.
#   dua dense    dua-train --mode dense
#   dua native   dua-train --mode native --hard-frac 1 (the whole run in the soft phase: Gumbel-Sigmoid gates,
#                level bias in the attention kernels, blocks below --skip-bias skipped; at --gate-init -2
#                nothing is below it, so every causal block is visited), the phase torch's native variants do
#   torch        dense (SDPA causal), native_flex (FlexAttention + level-bias score_mod, compiled),
#                native_sdpa (materialized additive bias), each with TF32 off (fp32, like dua) and on
# dua's tokens/s: batch * seq_len / step seconds, median over the steps after the first WARM (train.csv;
# dua_trainer_step waits for the device every step); torch's: the median step in CUDA events after warm-up.
# Usage: bash bench/gpu_train_speed.sh     (env: BATCH=32 BLOCK=64 STEPS=30 WARM=5 TORCH_STEPS=20; SEQ=1024 and
#        LAYERS=4 only for a smoke test elsewhere, e.g. on PoCL: BUILD=build SEQ=128 LAYERS=1 BATCH=2 ...)
# Output under $OUT: speed.txt (everything), dua_dense.csv, dua_native.csv (train.csv of each run),
# torch.jsonl (one line per torch variant), summary.json.
set -uo pipefail
[ -f .devkit/device-env.sh ] && source .devkit/device-env.sh >/dev/null
export DUA_CACHE_DIR=${DUA_CACHE_DIR:-/tmp/dua-cache}
OUT=${OUT:-/tmp/out}
BUILD=${BUILD:-build-rel}
BATCH=${BATCH:-32}
BLOCK=${BLOCK:-64}
STEPS=${STEPS:-30}
WARM=${WARM:-5}
TORCH_STEPS=${TORCH_STEPS:-20}
SEQ=${SEQ:-1024}
LAYERS=${LAYERS:-4}
RUNS=/tmp/speed-runs
mkdir -p "$OUT" "$RUNS"
rm -f "$OUT/torch.jsonl"
SHAPE="--layers $LAYERS --width 256 --heads 4 --mlp-ratio 4 --seq-len $SEQ --batch $BATCH --block $BLOCK --arity 2"

dua_run() { # name, flags...
  local name=$1; shift
  echo "== dua $name: $SHAPE $*"
  rm -rf "$RUNS/$name"
  local smi=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$RUNS/$name.mem" &
    smi=$!
  fi
  timeout 150 "$BUILD/tools/dua-train" --task dyck --seed 1 --steps "$STEPS" --warmup "$WARM" --eval-every 0 \
    --test-size 64 --time-limit 100 $SHAPE --out "$RUNS/$name" "$@" 2>&1 | grep -v '^step' | tail -6
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  cp "$RUNS/$name/train.csv" "$OUT/dua_$name.csv" 2>/dev/null
}

{
  echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "== idle GPU memory used (MiB): $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null)"
  dua_run dense --mode dense
  dua_run native --mode native --hard-frac 1
  echo "== torch: $(python3 -c 'import torch, triton; print(torch.__version__, "triton", triton.__version__)' 2>&1)"
  timeout 330 python3 bench/torch_train_speed.py --vocab 5 --layers "$LAYERS" --seq-len "$SEQ" --batch "$BATCH" --block "$BLOCK" \
    --steps "$TORCH_STEPS" --warmup 5 --variants dense,native_flex,native_sdpa --tf32 both --json "$OUT/torch.jsonl"
  echo "== summary"
  python3 - "$RUNS" "$OUT" "$WARM" "$BATCH" "$SEQ" <<'PY'
import csv, json, os, statistics, sys
runs, out, warm, batch, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = []
for name in ("dense", "native"):
    path = os.path.join(runs, name, "train.csv")
    if not os.path.exists(path):
        rows.append({"impl": "dua", "variant": name, "error": "no train.csv"})
        continue
    steps = [r for r in csv.DictReader(open(path)) if int(r["step"]) > warm]
    tps = [float(r["tokens_per_s"]) for r in steps]
    mem = None
    if os.path.exists(os.path.join(runs, name + ".mem")):
        vals = [int(x) for x in open(os.path.join(runs, name + ".mem")).read().split() if x.isdigit()]
        mem = max(vals) if vals else None
    res = {}
    if os.path.exists(os.path.join(runs, name, "result.json")):
        res = json.load(open(os.path.join(runs, name, "result.json")))
    rows.append({"impl": "dua", "variant": name, "precision": "fp32", "timed_steps": len(tps),
                 "tokens_per_s": round(statistics.median(tps), 1) if tps else None,
                 "step_ms_median": round(1e3 * batch * seq / statistics.median(tps), 3) if tps else None,
                 "density": float(steps[-1]["density"]) if steps else None,
                 "gpu_mem_used_max_mib": mem, "mean_tokens_per_s_all_steps": res.get("tokens_per_second")})
tj = os.path.join(out, "torch.jsonl")
if os.path.exists(tj):
    for line in open(tj):
        r = json.loads(line)
        r["impl"] = "torch"
        rows.append(r)
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("%-6s %-12s %-5s %12s %10s %10s  %s" % ("impl", "variant", "prec", "tokens/s", "step ms", "mem MiB", "notes"))
for r in rows:
    note = r.get("error") or r.get("skipped") or ""
    if r.get("sdpa_backend"):
        note += "sdpa backend " + r["sdpa_backend"]
    if "flex_vs_sdpa_out_max_abs_diff" in r:
        note += "flex vs materialized: out %.1e" % r["flex_vs_sdpa_out_max_abs_diff"]
    if r.get("bias_grad_to_gates") is False:
        note += ", bias detached"
    if r["impl"] == "dua" and r.get("density") is not None:
        note += "density %.3f, mem = nvidia-smi max (whole GPU)" % r["density"]
    mem = r.get("peak_mem_mib", r.get("gpu_mem_used_max_mib"))
    print("%-6s %-12s %-5s %12s %10s %10s  %s" % (r["impl"], r["variant"], r.get("precision", ""),
                                                r.get("tokens_per_s"), r.get("step_ms_median"), mem, note[:120]))
PY
} > "$OUT/speed.txt" 2>&1
cat "$OUT/speed.txt"
